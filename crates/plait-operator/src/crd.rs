//! The custom resources: `PlaitCluster` (a replicated database) and `PlaitBackup` (one
//! backup run). The Rust types are the source of truth; the CRD YAML under `manifests/`
//! and the chart is generated from them (`plait-operator crd`) and checked for drift.
//!
//! What the API server can check, it checks: ranges, patterns and CEL rules for what must
//! never change after creation (storage, the bootstrap source, the writer key, a backup's
//! spec). What it cannot (a cron expression's meaning) is checked by the operator and
//! reported as a condition and an event.

// The KubeSchema derive emits a shadow copy of each type that the unreachable_pub lint
// flags even though the types are re-exported from the crate root.
#![allow(unreachable_pub)]
// Several `printcolumn(...)` share keys such as `type_`, which clippy takes for repeats.
#![allow(clippy::duplicated_attributes)]

use std::collections::BTreeMap;

use k8s_openapi::api::core::v1::{Affinity, ResourceRequirements, Toleration, TopologySpreadConstraint};
use k8s_openapi::apimachinery::pkg::apis::meta::v1::{Condition, Time};
use kube::{CustomResource, KubeSchema};
use serde::{Deserialize, Serialize};

/// The API group of every Plait resource.
pub const GROUP: &str = "plait.dev";
/// The served and stored version.
pub const VERSION: &str = "v1alpha1";

/// Replicas one cluster may have: membership is all-to-all, so every replica pulls from
/// every other; beyond this, use more clusters.
pub const REPLICAS_MAX: i32 = 15;

/// A replicated Plait database: a StatefulSet of `plaitd` replicas that replicate every
/// log to each other, with membership, scaling and backups run by the operator.
#[derive(CustomResource, KubeSchema, Serialize, Deserialize, Clone, Debug, PartialEq)]
#[kube(
    group = "plait.dev",
    version = "v1alpha1",
    kind = "PlaitCluster",
    plural = "plaitclusters",
    shortname = "plait",
    category = "plait",
    namespaced,
    status = "PlaitClusterStatus",
    derive = "PartialEq",
    doc = "A replicated Plait database: plaitd replicas in a StatefulSet, wired together by the operator.",
    scale(
        spec_replicas_path = ".spec.replicas",
        status_replicas_path = ".status.replicas",
        label_selector_path = ".status.selector"
    ),
    printcolumn(name = "Replicas", type_ = "integer", json_path = ".spec.replicas"),
    printcolumn(name = "Ready", type_ = "integer", json_path = ".status.readyReplicas"),
    printcolumn(name = "Phase", type_ = "string", json_path = ".status.phase"),
    printcolumn(
        name = "Members",
        type_ = "string",
        json_path = ".status.membersReady",
        description = "Members ready (caught up) of the replicas wanted"
    ),
    printcolumn(name = "Last Backup", type_ = "date", json_path = ".status.lastBackupTime"),
    printcolumn(name = "Age", type_ = "date", json_path = ".metadata.creationTimestamp"),
    // The name becomes a Service's (a DNS-1035 label) and, with a suffix, pods', PVCs',
    // Secrets' and the StatefulSet's controller-revision label (at most 63 characters).
    validation = Rule::new("self.metadata.name.matches('^[a-z]([-a-z0-9]*[a-z0-9])?$')").message(
        "a PlaitCluster's name must be a DNS-1035 label (lowercase letters, digits and '-', starting with a letter): it names the cluster's Services"
    ),
    validation = Rule::new("self.metadata.name.size() <= 45").message(
        "a PlaitCluster's name is at most 45 characters: its pods, volumes, Secrets and Services add suffixes to it"
    )
)]
#[x_kube(validation = Rule::new("has(self.bootstrap) == has(oldSelf.bootstrap)")
    .message("bootstrap is chosen at creation: it cannot be added or removed later"))]
#[x_kube(validation = Rule::new("has(self.writerKeySecret) == has(oldSelf.writerKeySecret)")
    .message("writerKeySecret is chosen at creation: it cannot be added or removed later"))]
#[serde(rename_all = "camelCase")]
pub struct PlaitClusterSpec {
    /// Number of replicas. Scaling down removes the highest ordinal first, one at a time,
    /// each only after its entries are held by another replica.
    #[serde(default = "default_replicas")]
    #[schemars(range(min = 1, max = 15))]
    pub replicas: i32,

    /// The plaitd image. Defaults to the image the operator had when the cluster was
    /// created (kept in `status.image`). A change rolls the replicas one at a time,
    /// highest ordinal first, each once the one before it is ready and caught up.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    #[schemars(length(min = 1))]
    pub image: Option<String>,

    /// Image pull policy of the replicas.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub image_pull_policy: Option<PullPolicy>,

    /// Persistent storage of each replica. The size may grow (the operator grows each
    /// replica's claim), never shrink; the class is fixed at creation.
    #[serde(default)]
    pub storage: StorageSpec,

    /// CPU and memory of each replica.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub resources: Option<ResourceRequirements>,

    /// Where replicas may run.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub scheduling: Option<SchedulingSpec>,

    /// Logs, traces and metrics.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub telemetry: Option<TelemetrySpec>,

    /// Backups on a schedule, and the destination on-demand `PlaitBackup`s default to.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub backup: Option<BackupSpec>,

    /// Start a new cluster from a backup instead of empty. Fixed at creation.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    #[x_kube(validation = Rule::new("self == oldSelf").message("bootstrap cannot change after creation"))]
    pub bootstrap: Option<BootstrapSpec>,

    /// A Secret (key `writer.key`, 64 hex characters) holding the key replicas sign client
    /// writes with. Reuse the key of the cluster a backup came from so restored logs keep
    /// accepting writes. When not set, the operator generates one. Fixed at creation.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    #[schemars(length(min = 1, max = 253))]
    #[x_kube(validation = Rule::new("self == oldSelf").message("writerKeySecret cannot change after creation"))]
    pub writer_key_secret: Option<String>,

    /// TLS, authentication and the NetworkPolicy. By default the operator runs a cluster
    /// CA, gives every replica its own certificate, creates a client token Secret for
    /// applications and admits only members, the operator and labelled clients.
    #[serde(default)]
    pub security: SecuritySpec,

    /// The PodDisruptionBudget: how many replicas voluntary disruptions (node drains,
    /// evictions) may take down at once.
    #[serde(default)]
    pub pod_disruption_budget: DisruptionSpec,

    /// Extra plaitd settings as environment variables (`PLAIT_*`, see `plaitd --help`).
    /// Settings the operator manages itself (listen address, data directory, keys,
    /// TLS and authentication) are refused.
    #[serde(default, skip_serializing_if = "BTreeMap::is_empty")]
    #[schemars(extend("maxProperties" = 64))]
    #[x_kube(validation = Rule::new("self.all(k, k.startsWith('PLAIT_') && !(k in ['PLAIT_LISTEN', 'PLAIT_DATA_DIR', 'PLAIT_NODE_KEY_FILE', 'PLAIT_WRITER_KEY_FILE', 'PLAIT_METRICS_LISTEN', 'PLAIT_PEERS', 'PLAIT_DISCOVER_DNS', 'PLAIT_UPSTREAMS', 'PLAIT_RESTORE_FROM', 'PLAIT_TLS_CERT', 'PLAIT_TLS_KEY', 'PLAIT_TLS_CLIENT_CA', 'PLAIT_PEER_TLS_CA', 'PLAIT_AUTH_FILE', 'PLAIT_PEER_TOKEN_FILE', 'PLAIT_INSECURE', 'PLAIT_BACKUP_DESTINATIONS', 'PLAIT_BACKUP_OWNER']))")
        .message("settings must be PLAIT_* variables the operator does not manage itself"))]
    pub settings: BTreeMap<String, String>,
}

fn default_replicas() -> i32 {
    3
}

impl PlaitClusterSpec {
    /// A spec with `replicas` replicas and every other field at its default.
    pub fn with_replicas(replicas: i32) -> PlaitClusterSpec {
        PlaitClusterSpec {
            replicas,
            image: None,
            image_pull_policy: None,
            storage: StorageSpec::default(),
            resources: None,
            scheduling: None,
            telemetry: None,
            backup: None,
            bootstrap: None,
            writer_key_secret: None,
            security: SecuritySpec::default(),
            pod_disruption_budget: DisruptionSpec::default(),
            settings: BTreeMap::new(),
        }
    }
}

/// The cluster's PodDisruptionBudget.
#[derive(Serialize, Deserialize, Clone, Debug, PartialEq, KubeSchema)]
#[serde(rename_all = "camelCase")]
pub struct DisruptionSpec {
    /// Replicas voluntary disruptions may take down at once (default 1; 0 forbids
    /// them). Never more than all but one: the only pod of a one-replica cluster is never
    /// evicted, so draining its node waits until you scale up or delete the pod yourself.
    #[serde(default = "default_max_unavailable")]
    #[schemars(range(min = 0, max = 14))]
    pub max_unavailable: i32,
}

fn default_max_unavailable() -> i32 {
    1
}

impl Default for DisruptionSpec {
    fn default() -> Self {
        DisruptionSpec { max_unavailable: default_max_unavailable() }
    }
}

/// How a cluster is secured.
#[derive(Serialize, Deserialize, Clone, Debug, PartialEq, KubeSchema)]
#[serde(rename_all = "camelCase")]
#[x_kube(validation = Rule::new("self.tls != 'CertManager' || has(self.issuerRef)")
    .message("tls: CertManager needs an issuerRef"))]
pub struct SecuritySpec {
    /// Where replica certificates come from: `Operator` (the default: a cluster CA the
    /// operator keeps in Secret `<cluster>-ca`, certificates renewed before a third of
    /// their lifetime is left), `CertManager` (cert-manager `Certificate`s from
    /// `issuerRef`), or `Disabled` (plaintext and no authentication: only for networks
    /// where every pod is trusted).
    #[serde(default)]
    pub tls: TlsMode,

    /// The cert-manager issuer of replica and operator certificates, with `tls: CertManager`.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub issuer_ref: Option<IssuerRef>,

    /// Roles of the application token the operator puts in Secret `<cluster>-client`
    /// (see docs/security.md for the role names).
    #[serde(default = "default_client_roles")]
    #[schemars(length(min = 1, max = 16))]
    #[x_kube(validation = Rule::new("self.all(r, r in ['read', 'write', 'log-admin', 'cluster-admin', 'admin'] || r.startsWith('write:'))")
        .message("roles are read, write, write:<pattern>, log-admin, cluster-admin or admin"))]
    pub client_roles: Vec<String>,

    /// A NetworkPolicy that admits to the gRPC port only the cluster's replicas, the
    /// operator and pods labelled `plait.dev/client: <cluster>` (in any namespace), to
    /// the admin port (7072: membership, drains, checkpoints, snapshots, backups) only
    /// the operator, and the metrics port from anywhere.
    #[serde(default = "default_true")]
    pub network_policy: bool,
}

fn default_client_roles() -> Vec<String> {
    vec!["read".into(), "write".into(), "log-admin".into()]
}

fn default_true() -> bool {
    true
}

impl Default for SecuritySpec {
    fn default() -> Self {
        SecuritySpec {
            tls: TlsMode::default(),
            issuer_ref: None,
            client_roles: default_client_roles(),
            network_policy: true,
        }
    }
}

/// Where replica certificates come from.
#[derive(Serialize, Deserialize, Clone, Copy, Debug, Default, PartialEq, Eq, schemars::JsonSchema)]
pub enum TlsMode {
    #[default]
    Operator,
    CertManager,
    Disabled,
}

/// A cert-manager issuer.
#[derive(Serialize, Deserialize, Clone, Debug, PartialEq, KubeSchema)]
#[serde(rename_all = "camelCase")]
pub struct IssuerRef {
    #[schemars(length(min = 1, max = 253))]
    pub name: String,
    /// `Issuer` (the default, in the cluster's namespace) or `ClusterIssuer`.
    #[serde(default = "default_issuer_kind")]
    pub kind: String,
    #[serde(default = "default_issuer_group")]
    pub group: String,
}

fn default_issuer_kind() -> String {
    "Issuer".into()
}

fn default_issuer_group() -> String {
    "cert-manager.io".into()
}

/// Image pull policy.
#[derive(Serialize, Deserialize, Clone, Copy, Debug, PartialEq, Eq, schemars::JsonSchema)]
pub enum PullPolicy {
    Always,
    IfNotPresent,
    Never,
}

impl PullPolicy {
    pub fn as_str(self) -> &'static str {
        match self {
            PullPolicy::Always => "Always",
            PullPolicy::IfNotPresent => "IfNotPresent",
            PullPolicy::Never => "Never",
        }
    }
}

/// A persistent volume per replica.
#[derive(Serialize, Deserialize, Clone, Debug, PartialEq, KubeSchema)]
#[x_kube(validation = Rule::new(
    "has(self.storageClassName) == has(oldSelf.storageClassName) && (!has(self.storageClassName) || self.storageClassName == oldSelf.storageClassName)"
).message("storage.storageClassName cannot change after creation"))]
#[serde(rename_all = "camelCase")]
pub struct StorageSpec {
    /// Size of each replica's volume, as a Kubernetes quantity. May grow, never shrink:
    /// the operator then grows each replica's PersistentVolumeClaim, which needs a storage
    /// class with `allowVolumeExpansion: true`.
    #[serde(default = "default_storage_size")]
    #[schemars(regex(pattern = r"^[0-9]+(\.[0-9]+)?(Ki|Mi|Gi|Ti|Pi|k|M|G|T|P)?$"))]
    #[x_kube(validation = Rule::new(
        "!isQuantity(self) || !isQuantity(oldSelf) || quantity(self).compareTo(quantity(oldSelf)) >= 0"
    ).message("storage.size may grow but never shrink"))]
    pub size: String,

    /// Storage class of the volumes; the cluster's default class when not set.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub storage_class_name: Option<String>,
}

fn default_storage_size() -> String {
    "10Gi".to_owned()
}

impl Default for StorageSpec {
    fn default() -> Self {
        StorageSpec { size: default_storage_size(), storage_class_name: None }
    }
}

/// Node placement of the replicas.
#[derive(Serialize, Deserialize, Clone, Debug, Default, PartialEq, KubeSchema)]
#[serde(rename_all = "camelCase")]
pub struct SchedulingSpec {
    #[serde(default, skip_serializing_if = "BTreeMap::is_empty")]
    pub node_selector: BTreeMap<String, String>,
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub tolerations: Vec<Toleration>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub affinity: Option<Affinity>,
    /// When empty, replicas are spread over nodes (preferred, not required).
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub topology_spread_constraints: Vec<TopologySpreadConstraint>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub priority_class_name: Option<String>,
}

/// Observability of the replicas.
#[derive(Serialize, Deserialize, Clone, Debug, Default, PartialEq, KubeSchema)]
#[serde(rename_all = "camelCase")]
pub struct TelemetrySpec {
    /// Log filter in `RUST_LOG` syntax.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub log_level: Option<String>,
    /// Write logs as JSON lines.
    #[serde(default)]
    pub log_json: bool,
    /// OTLP gRPC endpoint for traces and metrics (`OTEL_EXPORTER_OTLP_ENDPOINT`).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    #[schemars(regex(pattern = r"^https?://"))]
    pub otlp_endpoint: Option<String>,
}

/// Where and when backups go.
#[derive(Serialize, Deserialize, Clone, Debug, PartialEq, KubeSchema)]
#[serde(rename_all = "camelCase")]
pub struct BackupSpec {
    /// `s3://bucket/prefix` or `file:///dir` (a path inside the replica's container).
    /// The operator starts every replica with it as backup destination `default`
    /// (`--backup-destination default=<url>`): replicas write backups only to
    /// destinations configured this way, never to one a caller names.
    #[schemars(regex(pattern = r"^(s3://[a-z0-9][a-z0-9.-]{1,61}[a-z0-9](/[^,]*)?|file:///[^,]+)$"))]
    pub destination: String,

    /// Further destinations the replicas are started with, which a `PlaitBackup` may
    /// name in its `spec.destination`. Retention applies to `destination` only.
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    #[schemars(length(max = 16))]
    pub extra_destinations: Vec<NamedDestination>,

    /// Cron schedule (five fields, UTC) of backups; none when not set. Each run creates a
    /// `PlaitBackup` named `<cluster>-<yyyymmddhhmmss>`.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    #[schemars(length(min = 9, max = 128))]
    pub schedule: Option<String>,

    /// Scheduled runs take a delta since the last backup, with a full backup every
    /// `fullEvery` runs. 0 or 1: every run is full.
    #[serde(default)]
    #[schemars(range(min = 0, max = 1000))]
    pub full_every: i32,

    /// What to keep.
    #[serde(default)]
    pub retention: RetentionSpec,

    /// How replicas reach an S3-compatible store.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub s3: Option<S3Spec>,
}

/// A backup destination with the name `PlaitBackup`s use for it.
#[derive(Serialize, Deserialize, Clone, Debug, PartialEq, KubeSchema)]
#[serde(rename_all = "camelCase")]
pub struct NamedDestination {
    /// 1 to 63 lower-case letters, digits and '-'; not `default`, which is
    /// `spec.backup.destination`.
    #[schemars(regex(pattern = r"^[a-z0-9][a-z0-9-]{0,62}$"))]
    pub name: String,
    /// `s3://bucket/prefix` or `file:///dir` (a path inside the replica's container).
    #[schemars(regex(pattern = r"^(s3://[a-z0-9][a-z0-9.-]{1,61}[a-z0-9](/[^,]*)?|file:///[^,]+)$"))]
    pub url: String,
}

/// Retention of backups.
#[derive(Serialize, Deserialize, Clone, Debug, PartialEq, KubeSchema)]
#[serde(rename_all = "camelCase")]
pub struct RetentionSpec {
    /// Full backup chains (a full backup and its deltas) kept per log in the destination;
    /// older chains are deleted. 0: keep all.
    #[serde(default = "default_retain_full")]
    #[schemars(range(min = 0, max = 10000))]
    pub full_chains: i32,

    /// Scheduled `PlaitBackup` records kept; older ones are deleted. 0: keep all.
    #[serde(default = "default_keep_records")]
    #[schemars(range(min = 0, max = 10000))]
    pub records: i32,
}

fn default_retain_full() -> i32 {
    7
}

fn default_keep_records() -> i32 {
    30
}

impl Default for RetentionSpec {
    fn default() -> Self {
        RetentionSpec { full_chains: default_retain_full(), records: default_keep_records() }
    }
}

/// How to reach an S3-compatible object store.
#[derive(Serialize, Deserialize, Clone, Debug, Default, PartialEq, KubeSchema)]
#[serde(rename_all = "camelCase")]
pub struct S3Spec {
    /// Endpoint of an S3-compatible store; AWS when not set.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    #[schemars(regex(pattern = r"^https?://"))]
    pub endpoint: Option<String>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub region: Option<String>,
    /// Allow a plain http:// endpoint.
    #[serde(default)]
    pub allow_http: bool,
    /// A Secret with `AWS_ACCESS_KEY_ID` and `AWS_SECRET_ACCESS_KEY`, given to the replicas
    /// as environment.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub credentials_secret: Option<String>,
}

/// The source a new cluster starts from.
#[derive(Serialize, Deserialize, Clone, Debug, PartialEq, KubeSchema)]
#[serde(rename_all = "camelCase")]
pub struct BootstrapSpec {
    /// A backup destination (`s3://...` or `file:///...`): every replica restores the
    /// latest backup chain of each log from it before serving for the first time.
    #[schemars(regex(pattern = r"^(s3://[a-z0-9][a-z0-9.-]{1,61}[a-z0-9](/.*)?|file:///.+)$"))]
    pub from: String,

    /// Restore only these logs (names or ids); all when empty.
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub logs: Vec<String>,

    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub s3: Option<S3Spec>,
}

/// What the operator observed and did.
#[derive(Serialize, Deserialize, Clone, Debug, Default, PartialEq, KubeSchema)]
#[serde(rename_all = "camelCase")]
pub struct PlaitClusterStatus {
    /// `Pending`, `Running`, `Scaling`, `Degraded` or `Failed`.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub phase: Option<String>,
    /// Replicas the StatefulSet has now (the scale subresource reads this).
    #[serde(default)]
    pub replicas: i32,
    #[serde(default)]
    pub ready_replicas: i32,
    /// Label selector of the replica pods (for the scale subresource).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub selector: Option<String>,
    /// Each replica, by pod name.
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    #[schemars(extend("x-kubernetes-list-type" = "map", "x-kubernetes-list-map-keys" = ["name"]))]
    pub members: Vec<MemberStatus>,
    /// Ready members of the replicas wanted, as `ready/total` (the Members column).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub members_ready: Option<String>,
    /// Generation of the member set last sent with `Admin.SetMembers`.
    #[serde(default)]
    pub members_generation: i64,
    /// The addresses that generation carried.
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub member_addresses: Vec<String>,
    /// `Available`, `Ready`, `Progressing`, `Degraded`, `MembershipConsistent`,
    /// `Converged`, `Paused`, `BackupReady`, by type.
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    #[schemars(extend("x-kubernetes-list-type" = "map", "x-kubernetes-list-map-keys" = ["type"]))]
    pub conditions: Vec<Condition>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub observed_generation: Option<i64>,
    /// When the schedule last created a backup.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub last_schedule_time: Option<Time>,
    /// Scheduled runs since the last full one (for `fullEvery`).
    #[serde(default)]
    pub runs_since_full: i32,
    /// The last backup that completed, and when.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub last_backup: Option<String>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub last_backup_time: Option<Time>,
    /// Volumes whose capacity has not reached what their claim asks for yet.
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub resizing_volumes: Vec<VolumeStatus>,
    /// The plaitd image the replicas run, or are rolling to. Recorded when the cluster is
    /// created (from `spec.image`, else the operator's default), so upgrading the operator
    /// does not roll existing clusters: name an image in `spec.image` to move one.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub image: Option<String>,
    /// Replicas that run the StatefulSet's newest pod template, while a roll is under way.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub updated_replicas: Option<i32>,
}

/// A PersistentVolumeClaim that is growing.
#[derive(Serialize, Deserialize, Clone, Debug, Default, PartialEq, Eq, KubeSchema)]
#[serde(rename_all = "camelCase")]
pub struct VolumeStatus {
    /// The claim's name (`data-<cluster>-<ordinal>`).
    pub name: String,
    /// The size the claim asks for.
    pub requested: String,
    /// The size the volume has now.
    pub capacity: String,
    /// The claim's condition (`Resizing`, `FileSystemResizePending`, ...), or `Pending`
    /// while the storage system has not started.
    pub state: String,
}

/// One replica as the operator last saw it.
#[derive(Serialize, Deserialize, Clone, Debug, Default, PartialEq, Eq, KubeSchema)]
#[serde(rename_all = "camelCase")]
pub struct MemberStatus {
    /// Pod name.
    pub name: String,
    /// gRPC address the other replicas reach it at.
    pub address: String,
    /// Its data directory's incarnation (hex); a wiped or restored replica has a new one.
    #[serde(default, skip_serializing_if = "String::is_empty")]
    pub epoch: String,
    /// Its node id (hex).
    #[serde(default, skip_serializing_if = "String::is_empty")]
    pub node_id: String,
    /// Answering, writable, not draining and caught up with the other members.
    pub ready: bool,
    /// Entries its peers hold that it has not pulled yet, summed over logs.
    #[serde(default)]
    pub lag: i64,
    /// Members generation it reported.
    #[serde(default)]
    pub members_generation: i64,
    #[serde(default)]
    pub draining: bool,
    /// Why it is not ready.
    #[serde(default, skip_serializing_if = "String::is_empty")]
    pub message: String,
}

/// One backup run of a cluster: on demand, or created by the cluster's schedule. The
/// spec is fixed at creation; the status records the outcome.
#[derive(CustomResource, KubeSchema, Serialize, Deserialize, Clone, Debug, PartialEq)]
#[kube(
    group = "plait.dev",
    version = "v1alpha1",
    kind = "PlaitBackup",
    plural = "plaitbackups",
    shortname = "plaitbk",
    category = "plait",
    namespaced,
    status = "PlaitBackupStatus",
    derive = "PartialEq",
    doc = "One backup of a PlaitCluster, taken through one of its ready replicas.",
    printcolumn(name = "Cluster", type_ = "string", json_path = ".spec.cluster"),
    printcolumn(name = "Kind", type_ = "string", json_path = ".spec.kind"),
    printcolumn(name = "Phase", type_ = "string", json_path = ".status.phase"),
    printcolumn(name = "Progress", type_ = "string", json_path = ".status.progress"),
    printcolumn(name = "Bytes", type_ = "integer", json_path = ".status.sizeBytes"),
    printcolumn(name = "Age", type_ = "date", json_path = ".metadata.creationTimestamp")
)]
#[x_kube(validation = Rule::new("self == oldSelf").message("a backup's spec cannot change after creation"))]
#[serde(rename_all = "camelCase")]
pub struct PlaitBackupSpec {
    /// The `PlaitCluster` (same namespace) to back up.
    #[schemars(length(min = 1, max = 63))]
    pub cluster: String,

    /// `Full`, or `Delta` since the last backup of each log (full where there is none).
    #[serde(default)]
    pub kind: BackupKind,

    /// Logs to back up (names or ids); all when empty.
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub logs: Vec<String>,

    /// The name of one of the cluster's backup destinations: `default` (the cluster's
    /// `spec.backup.destination`, also when not set) or one of its
    /// `spec.backup.extraDestinations`. Never a URL: where backups may go is the
    /// cluster's configuration.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    #[schemars(regex(pattern = r"^[a-z0-9][a-z0-9-]{0,62}$"))]
    pub destination: Option<String>,
}

/// Full or delta.
#[derive(Serialize, Deserialize, Clone, Copy, Debug, Default, PartialEq, Eq, schemars::JsonSchema)]
pub enum BackupKind {
    #[default]
    Full,
    Delta,
}

/// The outcome of a backup run.
#[derive(Serialize, Deserialize, Clone, Debug, Default, PartialEq, KubeSchema)]
#[serde(rename_all = "camelCase")]
pub struct PlaitBackupStatus {
    /// `Pending`, `Running`, `Completed` or `Failed`. A failed attempt is retried with
    /// backoff (phase stays `Pending` with `error` set) until `attempts` reaches the limit.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub phase: Option<String>,
    #[serde(default)]
    pub attempts: i32,
    /// The replica (pod) that takes or took it.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub replica: Option<String>,
    /// The backup job running it on that replica (`Admin.StartBackup`), polled until it
    /// ends; named after this backup's uid and the attempt.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub job: Option<String>,
    /// While running: logs written of those it backs up, e.g. `2/5 logs`.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub progress: Option<String>,
    /// The destination written to.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub location: Option<String>,
    /// The id the destination's catalog knows it by.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub backup_id: Option<String>,
    /// Bytes written, over all logs.
    #[serde(default)]
    pub size_bytes: i64,
    /// The checkpoint each log was cut at.
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub checkpoints: Vec<BackupCheckpoint>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub started_at: Option<Time>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub completed_at: Option<Time>,
    /// The last failure.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub error: Option<String>,
    /// After a failed attempt: when the next one may start (exponential backoff).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub next_attempt_at: Option<Time>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub observed_generation: Option<i64>,
}

/// One log's part of a backup.
#[derive(Serialize, Deserialize, Clone, Debug, Default, PartialEq, Eq, KubeSchema)]
#[serde(rename_all = "camelCase")]
pub struct BackupCheckpoint {
    pub log: String,
    /// `full` or `delta`.
    pub kind: String,
    pub seq: i64,
    /// Merkle root of the log's view at the cut (hex).
    pub state_root: String,
    pub bytes: i64,
    /// The object's key under the destination.
    pub key: String,
}

/// Both CRDs as one multi-document YAML file: what `plait-operator crd` prints and what
/// `manifests/crds.yaml` and the chart hold.
pub fn crds_yaml() -> String {
    use kube::CustomResourceExt;
    let mut out =
        String::from("# Generated by `plait-operator crd`; do not edit. A test fails when this drifts.\n");
    for crd in [PlaitCluster::crd(), PlaitBackup::crd()] {
        out.push_str("---\n");
        out.push_str(&serde_yaml::to_string(&crd).expect("a CRD always serializes"));
    }
    out
}
