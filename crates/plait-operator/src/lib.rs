//! The Plait operator: reconciles `PlaitCluster` resources into StatefulSets of `plaitd`
//! replicas wired together through `Admin.SetMembers`, scales them without losing data,
//! and runs `PlaitBackup`s on demand and on a schedule.
//!
//! `plan` decides (pure functions); `cluster` and `backup` carry the decisions out;
//! `replicas` is the seam to the replicas' gRPC API; `operator` runs the controllers,
//! under `leader` election when more than one operator runs.

mod backup;
mod cluster;
mod context;
mod crd;
pub mod leader;
mod operator;
mod plan;
pub mod rbac;
mod replicas;
mod schedule;
mod security;
mod storage;
#[cfg(test)]
mod tests;

pub use backup::ATTEMPTS_MAX;
pub use backup::reconcile as reconcile_backup;
pub use cluster::{CLUSTER_LABEL, Error, FIELD_MANAGER, SCHEDULED_LABEL, reconcile as reconcile_cluster};
pub use context::{Clock, ClusterGauges, Context, Metrics, SystemClock};
pub use crd::{
    BackupCheckpoint, BackupKind, BackupSpec, BootstrapSpec, DisruptionSpec, GROUP, IssuerRef, MemberStatus,
    NamedDestination, PlaitBackup, PlaitBackupSpec, PlaitBackupStatus, PlaitCluster, PlaitClusterSpec,
    PlaitClusterStatus, PullPolicy, REPLICAS_MAX, RetentionSpec, S3Spec, SchedulingSpec, SecuritySpec,
    StorageSpec, TelemetrySpec, TlsMode, VERSION, VolumeStatus, crds_yaml,
};
pub use leader::LeaseSettings;
pub use operator::{Scope, run, run_leading};
pub use plan::PlanContext;
pub use replicas::{
    ADMIN_PORT, BackupJob, BackupObject, BackupOutcome, BackupRequest, DnsResolver, GRPC_PORT, GrpcAdmin,
    METRICS_PORT, ReplicaAdmin, ReplicaStatus, Resolve, StaticResolver, Target,
};
pub use schedule::Schedule;
pub use security::Credentials;

/// Selects rustls' crypto provider (ring) for the process, once. Needed when a build
/// enables more than one provider (feature unification across a workspace), where rustls
/// cannot pick one itself; harmless otherwise. Call it before making a `kube::Client`.
pub fn install_crypto_provider() {
    // An error only means a provider is already installed, which is what we want.
    let _ = rustls::crypto::ring::default_provider().install_default();
}
