//! The Plait operator: reconciles `PlaitCluster` resources into StatefulSets of `plaitd`
//! replicas wired together through `Admin.SetMembers`, scales them without losing data,
//! and runs `PlaitBackup`s on demand and on a schedule.

mod crd;

pub use crd::{
    BackupCheckpoint, BackupKind, BackupSpec, BootstrapSpec, GROUP, MemberStatus, PlaitBackup,
    PlaitBackupSpec, PlaitBackupStatus, PlaitCluster, PlaitClusterSpec, PlaitClusterStatus, PullPolicy,
    REPLICAS_MAX, RetentionSpec, S3Spec, SchedulingSpec, StorageSpec, TelemetrySpec, VERSION, crds_yaml,
};
