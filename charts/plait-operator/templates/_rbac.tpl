{{/*
The operator's permissions: one list, rendered into the ClusterRole (all namespaces) or
the Role (watchNamespace), so both forms always grant exactly the same thing.

Exactly the calls the operator makes (crates/plait-operator/src/rbac.rs lists them, and
a test compares this list with it), and why each is there:
- its own resources: PlaitClusters are listed, watched and read; PlaitBackups also
  created (scheduled runs) and deleted (retention); status written by server-side
  apply; finalizers of a cluster updated (owner references with blockOwnerDeletion);
- what a PlaitCluster is made of, applied by server-side apply (`patch`, and `create`
  for the apply that makes the object): the StatefulSet (also read and watched), the client and headless Services
  (watched), the ConfigMap, the PodDisruptionBudget;
- Secrets: read by name (writer keys, the cluster CA, certificates, the client token),
  created (a generated writer key, the CA) and patched (certificates, the token and
  auth file, by server-side apply); never listed or watched, never updated whole or
  deleted: a lost writer key would leave the logs signed with it unable to accept
  writes through a restored cluster;
- NetworkPolicies: applied per cluster, deleted when a cluster turns its policy off;
- cert-manager Certificates: applied per replica with `tls: CertManager`;
- Pods are only listed, by a cluster's selector, for the template revision each runs;
- PersistentVolumeClaims are read and patched by name, to grow a replica's volume when
  spec.storage.size grows; never created, listed or deleted (the StatefulSet owns them);
- Events (events.k8s.io), to say what it did.
*/}}
{{- define "plait-operator.rules" -}}
- apiGroups: ["plait.dev"]
  resources: ["plaitclusters"]
  verbs: ["get", "list", "watch"]
- apiGroups: ["plait.dev"]
  resources: ["plaitbackups"]
  verbs: ["get", "list", "watch", "create", "delete"]
- apiGroups: ["plait.dev"]
  resources: ["plaitclusters/status", "plaitbackups/status"]
  verbs: ["patch"]
- apiGroups: ["plait.dev"]
  resources: ["plaitclusters/finalizers"]
  verbs: ["update"]
- apiGroups: ["apps"]
  resources: ["statefulsets"]
  verbs: ["get", "list", "watch", "create", "patch"]
- apiGroups: [""]
  resources: ["services"]
  verbs: ["list", "watch", "create", "patch"]
- apiGroups: [""]
  resources: ["configmaps"]
  verbs: ["create", "patch"]
- apiGroups: ["policy"]
  resources: ["poddisruptionbudgets"]
  verbs: ["create", "patch"]
- apiGroups: [""]
  resources: ["secrets"]
  verbs: ["get", "create", "patch"]
- apiGroups: ["networking.k8s.io"]
  resources: ["networkpolicies"]
  verbs: ["create", "patch", "delete"]
- apiGroups: ["cert-manager.io"]
  resources: ["certificates"]
  verbs: ["create", "patch"]
- apiGroups: [""]
  resources: ["pods"]
  verbs: ["list"]
- apiGroups: [""]
  resources: ["persistentvolumeclaims"]
  verbs: ["get", "patch"]
- apiGroups: ["events.k8s.io"]
  resources: ["events"]
  verbs: ["create", "patch"]
{{- end }}
