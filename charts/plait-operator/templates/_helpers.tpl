{{/*
Names, labels and images shared by every template.
*/}}

{{/* The chart name, or nameOverride. */}}
{{- define "plait-operator.name" -}}
{{- default .Chart.Name .Values.nameOverride | trunc 63 | trimSuffix "-" }}
{{- end }}

{{/*
The name of every resource: fullnameOverride, or the release name followed by the chart
name unless the release name already contains it. Truncated to 63 characters because
some Kubernetes name fields are limited to a DNS label.
*/}}
{{- define "plait-operator.fullname" -}}
{{- if .Values.fullnameOverride }}
{{- .Values.fullnameOverride | trunc 63 | trimSuffix "-" }}
{{- else }}
{{- $name := default .Chart.Name .Values.nameOverride }}
{{- if contains $name .Release.Name }}
{{- .Release.Name | trunc 63 | trimSuffix "-" }}
{{- else }}
{{- printf "%s-%s" .Release.Name $name | trunc 63 | trimSuffix "-" }}
{{- end }}
{{- end }}
{{- end }}

{{/* Chart name and version, as the helm.sh/chart label. */}}
{{- define "plait-operator.chart" -}}
{{- printf "%s-%s" .Chart.Name .Chart.Version | replace "+" "_" | trunc 63 | trimSuffix "-" }}
{{- end }}

{{/* The labels every resource carries. */}}
{{- define "plait-operator.labels" -}}
helm.sh/chart: {{ include "plait-operator.chart" . }}
{{ include "plait-operator.selectorLabels" . }}
app.kubernetes.io/version: {{ .Chart.AppVersion | quote }}
app.kubernetes.io/component: operator
app.kubernetes.io/part-of: plait
app.kubernetes.io/managed-by: {{ .Release.Service }}
{{- end }}

{{/* The labels that select the operator's pod; they never change across upgrades. */}}
{{- define "plait-operator.selectorLabels" -}}
app.kubernetes.io/name: {{ include "plait-operator.name" . }}
app.kubernetes.io/instance: {{ .Release.Name }}
{{- end }}

{{/* The ServiceAccount the operator runs as. */}}
{{- define "plait-operator.serviceAccountName" -}}
{{- if .Values.serviceAccount.create }}
{{- default (include "plait-operator.fullname" .) .Values.serviceAccount.name }}
{{- else }}
{{- required "serviceAccount.name is required when serviceAccount.create is false" .Values.serviceAccount.name }}
{{- end }}
{{- end }}

{{/*
An image reference from a repository and a tag that may be a digest: "v1" gives
repo:v1, "sha256:<hex>" and "@sha256:<hex>" give repo@sha256:<hex>.
*/}}
{{- define "plait-operator.imageRef" -}}
{{- $repository := index . 0 }}
{{- $tag := index . 1 }}
{{- if hasPrefix "@" $tag }}
{{- printf "%s%s" $repository $tag }}
{{- else if hasPrefix "sha256:" $tag }}
{{- printf "%s@%s" $repository $tag }}
{{- else }}
{{- printf "%s:%s" $repository $tag }}
{{- end }}
{{- end }}

{{/* The operator's image; the tag (or digest) defaults to the chart's appVersion. */}}
{{- define "plait-operator.image" -}}
{{- include "plait-operator.imageRef" (list .Values.operator.image.repository (default .Chart.AppVersion .Values.operator.image.tag)) }}
{{- end }}

{{/* The plaitd image replicas run; the tag (or digest) defaults to the chart's appVersion. */}}
{{- define "plait-operator.replicaImage" -}}
{{- include "plait-operator.imageRef" (list .Values.replicaImage.repository (default .Chart.AppVersion .Values.replicaImage.tag)) }}
{{- end }}
