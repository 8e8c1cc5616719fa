{{/*
The operator's permissions: one list, rendered into the ClusterRole (all namespaces) or
the Role (watchNamespace), so both forms always grant exactly the same thing.

Least privilege, and why each rule is there:
- its own resources, their status and their finalizers (owner references with
  blockOwnerDeletion need update on finalizers);
- what a PlaitCluster is made of: the StatefulSet, the client and headless Services, the
  ConfigMap, the PodDisruptionBudget;
- Secrets: read (writer keys, S3 credentials), created (a generated writer key) and
  patched, never updated whole or deleted: a lost writer key would leave the logs
  signed with it unable to accept writes through a restored cluster;
- Pods are only read, to see which replicas are ready and what they report;
- Events, in both APIs, to say what it did.
*/}}
{{- define "plait-operator.rules" -}}
- apiGroups: ["plait.dev"]
  resources: ["plaitclusters", "plaitbackups"]
  verbs: ["get", "list", "watch", "create", "delete", "patch", "update"]
- apiGroups: ["plait.dev"]
  resources: ["plaitclusters/status", "plaitbackups/status"]
  verbs: ["get", "patch", "update"]
- apiGroups: ["plait.dev"]
  resources: ["plaitclusters/finalizers", "plaitbackups/finalizers"]
  verbs: ["update"]
- apiGroups: ["apps"]
  resources: ["statefulsets"]
  verbs: ["get", "list", "watch", "create", "patch", "update", "delete"]
- apiGroups: [""]
  resources: ["services", "configmaps"]
  verbs: ["get", "list", "watch", "create", "patch", "update", "delete"]
- apiGroups: [""]
  resources: ["secrets"]
  verbs: ["get", "list", "watch", "create", "patch"]
- apiGroups: [""]
  resources: ["pods"]
  verbs: ["get", "list", "watch"]
- apiGroups: ["policy"]
  resources: ["poddisruptionbudgets"]
  verbs: ["get", "list", "watch", "create", "patch", "update", "delete"]
- apiGroups: ["events.k8s.io"]
  resources: ["events"]
  verbs: ["create", "patch"]
- apiGroups: [""]
  resources: ["events"]
  verbs: ["create", "patch"]
{{- end }}
