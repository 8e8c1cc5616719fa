//! The gRPC services of a replica and what they share.

mod admin;
mod data;
mod logs;
mod sync;

use std::sync::Arc;
use std::time::Instant;

use plait_core::{LogType, WriterKey};
use plait_store::{LogSummary, PageLimit, Store};
use tokio::sync::{Semaphore, watch};

pub(crate) use admin::AdminService;
pub(crate) use data::DataService;
pub(crate) use logs::LogsService;
pub(crate) use sync::SyncService;

use crate::error::{ReplicaError, ReplicaResult};
use crate::replication::{Holds, Membership, SharedState};
use crate::telemetry::Metrics;

/// Everything the services share.
#[derive(Clone)]
pub(crate) struct Ctx {
    pub(crate) store: Store,
    pub(crate) metrics: Metrics,
    pub(crate) node_key: WriterKey,
    pub(crate) started: Instant,
    /// One permit per open `Subscribe` stream.
    pub(crate) subscriptions: Arc<Semaphore>,
    /// Open `Watch` streams of peers: apart from clients' subscriptions.
    pub(crate) peer_streams: Arc<Semaphore>,
    /// Imports served at once, and the bytes they may stage.
    pub(crate) imports: Arc<Semaphore>,
    pub(crate) import_staging: Arc<StagingQuota>,
    pub(crate) import_bytes_max: u64,
    /// Turns true when the server begins shutting down; long streams end then.
    pub(crate) shutdown: watch::Receiver<bool>,
    /// What peers hold of this replica's logs.
    pub(crate) holds: Arc<Holds>,
    /// Peers told this replica's holds of their logs through their Watch streams.
    pub(crate) listeners: Arc<crate::replication::Listeners>,
    pub(crate) membership: Membership,
    pub(crate) state: SharedState,
    /// The data directory, for temporary files of imports and backups.
    pub(crate) data_dir: std::path::PathBuf,
    /// The backup destinations `Backup` may name (`--backup-destination`).
    pub(crate) backups: Arc<crate::backup::Destinations>,
    /// Keeps backup ids unique when backups start in the same millisecond.
    pub(crate) backup_clock: Arc<crate::backup::BackupClock>,
    /// Backups running in the background (`StartBackup`), and the last ones that ended.
    pub(crate) backup_jobs: Arc<crate::backup_jobs::BackupJobs>,
    pub(crate) logs_max: usize,
    /// Logs an authenticated principal may create here, unless the auth file says.
    pub(crate) logs_per_principal: usize,
    /// Durable consumers one log may have here (`--consumers-per-log-max`).
    pub(crate) consumers_per_log: usize,
    /// Checks the node proofs peers attach to their calls.
    pub(crate) proofs: Arc<crate::auth::ProofVerifier>,
}

impl Ctx {
    /// Runs a blocking store call off the async worker threads.
    pub(crate) async fn blocking<T: Send + 'static, E: Into<ReplicaError>>(
        &self,
        f: impl FnOnce(&Store) -> Result<T, E> + Send + 'static,
    ) -> ReplicaResult<T> {
        let store = self.store.clone();
        tokio::task::spawn_blocking(move || f(&store).map_err(Into::into)).await?
    }

    /// Refuses local writes once the replica is draining.
    pub(crate) fn check_writable(&self) -> ReplicaResult<()> {
        if self.state.draining.load(std::sync::atomic::Ordering::SeqCst) {
            return Err(ReplicaError::Unavailable(
                "this replica is draining before removal; write through another replica".into(),
            ));
        }
        Ok(())
    }

    /// Refuses a write to a log the caller holds no write grant for. Writes through this
    /// replica are signed with its writer key, which every log of the cluster trusts, so
    /// this grant is what stands between a caller and a log.
    pub(crate) fn check_may_write(
        &self,
        principal: &crate::auth::Principal,
        summary: &LogSummary,
    ) -> ReplicaResult<()> {
        let name = &summary.manifest.manifest().name;
        if principal.may_write(name) {
            return Ok(());
        }
        self.metrics.record_auth_denied("/plait.v1.Data/write", "log_not_granted");
        tracing::warn!(principal = %principal.name, log = %name, "write refused: no write grant for the log");
        Err(ReplicaError::PermissionDenied(format!("{} may not write to log {name:?}", principal.name)))
    }

    pub(crate) fn resolve(&self, log: &str) -> ReplicaResult<LogSummary> {
        Ok(self.store.resolve(log)?)
    }

    /// Resolves a log and checks that it is of the type a read or write needs.
    pub(crate) fn resolve_typed(
        &self,
        log: &str,
        log_type: LogType,
        call: &str,
    ) -> ReplicaResult<LogSummary> {
        let summary = self.resolve(log)?;
        let actual = summary.manifest.manifest().log_type;
        if actual != log_type {
            return Err(ReplicaError::Invalid(format!(
                "log {:?} is a {actual} log; {call} works on {log_type} logs",
                summary.manifest.manifest().name
            )));
        }
        Ok(summary)
    }
}

/// Page sizes: 0 asks for the default; above the maximum is refused.
pub(crate) fn page_limit(limit: u32) -> ReplicaResult<PageLimit> {
    const DEFAULT: usize = 1000;
    const MAX: u32 = 10_000;
    match limit {
        0 => Ok(PageLimit { rows: DEFAULT, bytes: READ_PAGE_BYTES }),
        l if l > MAX => Err(ReplicaError::Invalid(format!("limit {l} is over the maximum of {MAX}"))),
        l => Ok(PageLimit { rows: l as usize, bytes: READ_PAGE_BYTES }),
    }
}

/// Bytes staged on disk by imports in flight, against a quota.
#[derive(Debug)]
pub(crate) struct StagingQuota {
    used: std::sync::atomic::AtomicU64,
    max: u64,
}

impl StagingQuota {
    pub(crate) fn new(max: u64) -> StagingQuota {
        StagingQuota { used: std::sync::atomic::AtomicU64::new(0), max }
    }

    /// Takes `bytes` more, or refuses if that would pass the quota.
    pub(crate) fn take(&self, bytes: u64) -> Result<(), u64> {
        use std::sync::atomic::Ordering;
        self.used
            .fetch_update(Ordering::SeqCst, Ordering::SeqCst, |used| {
                used.checked_add(bytes).filter(|total| *total <= self.max)
            })
            .map(|_| ())
            .map_err(|_| self.max)
    }

    /// Gives `bytes` back.
    pub(crate) fn give(&self, bytes: u64) {
        let previous = self.used.fetch_sub(bytes, std::sync::atomic::Ordering::SeqCst);
        debug_assert!(previous >= bytes, "staging quota: gave back {bytes} of {previous}");
    }
}

/// About how many bytes of keys and values one page of `Scan`, `ReadFeed` or `Edges`
/// carries: a page of the default limit of large values would be far over any message
/// limit, and would be built in memory before it failed.
pub(crate) const READ_PAGE_BYTES: usize = 4 * 1024 * 1024;
// A page may pass the bound by one row (a key and a value, or an edge, with framing);
// it still fits the default message limit.
const _: () = assert!(
    READ_PAGE_BYTES + plait_core::limits::VALUE_BYTES_MAX + plait_core::limits::KEY_BYTES_MAX + 64 * 1024
        <= crate::config::MESSAGE_BYTES_DEFAULT
);

/// A hosted log as the API shows it: the manifest's part from `plait-proto`, the counts
/// from this replica's store.
pub(crate) fn log_info(store: &Store, summary: &LogSummary) -> plait_proto::pb::LogInfo {
    plait_proto::pb::LogInfo {
        consumers: consumer_infos(store, summary),
        seq: summary.seq,
        heads: summary.heads,
        pending: summary.pending,
        ops: summary.ops,
        creator: summary.creator.as_deref().unwrap_or_default().to_owned(),
        digest: summary.digest.0.to_vec(),
        ..plait_proto::convert::log_info(&summary.manifest)
    }
}

/// A log's durable consumers with their lag behind the log's seq in `summary`.
pub(crate) fn consumer_infos(store: &Store, summary: &LogSummary) -> Vec<plait_proto::pb::ConsumerInfo> {
    store
        .consumers(&summary.log_id)
        .into_iter()
        .map(|c| plait_proto::pb::ConsumerInfo {
            name: c.name.to_string(),
            committed_seq: c.seq,
            lag: summary.seq.saturating_sub(c.seq),
        })
        .collect()
}
