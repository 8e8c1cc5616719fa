//! The gRPC services of a replica and what they share.

mod admin;
mod data;
mod logs;
mod sync;

use std::sync::Arc;
use std::time::Instant;

use plait_core::{LogType, WriterKey};
use plait_store::{LogSummary, Store};
use tokio::sync::{Semaphore, watch};
use tonic::Status;

pub(crate) use admin::AdminService;
pub(crate) use data::DataService;
pub(crate) use logs::LogsService;
pub(crate) use sync::SyncService;

use crate::replication::{Holds, Membership, SharedState};
use crate::status;
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
    /// Turns true when the server begins shutting down; long streams end then.
    pub(crate) shutdown: watch::Receiver<bool>,
    /// What peers hold of this replica's logs.
    pub(crate) holds: Arc<Holds>,
    pub(crate) membership: Membership,
    pub(crate) state: SharedState,
    /// The data directory, for temporary files of imports and backups.
    pub(crate) data_dir: std::path::PathBuf,
    pub(crate) s3: crate::backup::S3Options,
    pub(crate) logs_max: usize,
}

impl Ctx {
    /// Runs a blocking store call off the async worker threads.
    pub(crate) async fn blocking<T: Send + 'static>(
        &self,
        f: impl FnOnce(&Store) -> Result<T, Status> + Send + 'static,
    ) -> Result<T, Status> {
        let store = self.store.clone();
        tokio::task::spawn_blocking(move || f(&store)).await.map_err(status::from_join)?
    }

    /// Refuses local writes once the replica is draining.
    pub(crate) fn check_writable(&self) -> Result<(), Status> {
        if self.state.draining.load(std::sync::atomic::Ordering::SeqCst) {
            return Err(Status::unavailable(
                "this replica is draining before removal; write through another replica",
            ));
        }
        Ok(())
    }

    pub(crate) fn resolve(&self, log: &str) -> Result<LogSummary, Status> {
        self.store.resolve(log).map_err(status::from_store)
    }

    /// Resolves a log and checks that it is of the type a read or write needs.
    pub(crate) fn resolve_typed(
        &self,
        log: &str,
        log_type: LogType,
        call: &str,
    ) -> Result<LogSummary, Status> {
        let summary = self.resolve(log)?;
        let actual = summary.manifest.manifest().log_type;
        if actual != log_type {
            return Err(Status::invalid_argument(format!(
                "log {:?} is a {actual} log; {call} works on {log_type} logs",
                summary.manifest.manifest().name
            )));
        }
        Ok(summary)
    }
}

/// Page sizes: 0 asks for the default; above the maximum is refused.
pub(crate) fn page_limit(limit: u32) -> Result<usize, Status> {
    const DEFAULT: usize = 1000;
    const MAX: u32 = 10_000;
    match limit {
        0 => Ok(DEFAULT),
        l if l > MAX => Err(Status::invalid_argument(format!("limit {l} is over the maximum of {MAX}"))),
        l => Ok(l as usize),
    }
}

pub(crate) fn checkpoint_info(c: &plait_core::Checkpoint) -> plait_proto::pb::CheckpointInfo {
    plait_proto::pb::CheckpointInfo {
        log_id: c.log.0.to_vec(),
        epoch: c.epoch.to_vec(),
        seq: c.seq,
        heads: c.heads.iter().map(|h| h.0.to_vec()).collect(),
        state_root: c.state_root.to_vec(),
        n_entries: c.n_entries,
        n_ops: c.n_ops,
    }
}

pub(crate) fn log_info(summary: &LogSummary) -> plait_proto::pb::LogInfo {
    let manifest = summary.manifest.manifest();
    let (open, writers) = match &manifest.writers {
        plait_core::Writers::Open => (true, Vec::new()),
        plait_core::Writers::Keys(keys) => (false, keys.iter().map(|k| k.0.to_vec()).collect()),
    };
    plait_proto::pb::LogInfo {
        log_id: summary.log_id.0.to_vec(),
        name: manifest.name.clone(),
        r#type: plait_proto::pb::LogType::from(manifest.log_type) as i32,
        open,
        writers,
        created_by: manifest.created_by.0.to_vec(),
        manifest: summary.manifest.bytes().to_vec(),
        seq: summary.seq,
        heads: summary.heads,
        pending: summary.pending,
        ops: summary.ops,
    }
}
