{{/*
The operator's permissions: one list, rendered into the ClusterRole (all namespaces) or
the Role (watchNamespace), so both forms always grant exactly the same thing.

Least privilege, and why each rule is there:
- its own resources, their status and their finalizers (owner references with
  blockOwnerDeletion need update on finalizers);
- what a PlaitCluster is made of: the StatefulSet, the client and headless Services, the
  ConfigMap, the PodDisruptionBudget;
- Secrets: read by name (writer keys, the cluster CA, certificates, the client token),
  created (a generated writer key, the CA) and patched (certificates, the token and
  auth file, by server-side apply); never listed or watched, never updated whole or
  deleted: a lost writer key would leave the logs signed with it unable to accept
  writes through a restored cluster;
- NetworkPolicies: applied per cluster, deleted when a cluster turns its policy off;
- cert-manager Certificates: applied per replica with `tls: CertManager`;
- Pods are only read, to see which replicas are ready and what they report;
- PersistentVolumeClaims are read and patched by name, to grow a replica's volume when
  spec.storage.size grows; never created, listed or deleted (the StatefulSet owns them);
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
  verbs: ["get", "create", "patch"]
- apiGroups: ["networking.k8s.io"]
  resources: ["networkpolicies"]
  verbs: ["get", "create", "patch", "delete"]
- apiGroups: ["cert-manager.io"]
  resources: ["certificates"]
  verbs: ["get", "create", "patch"]
- apiGroups: [""]
  resources: ["pods"]
  verbs: ["get", "list", "watch"]
- apiGroups: [""]
  resources: ["persistentvolumeclaims"]
  verbs: ["get", "patch"]
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
