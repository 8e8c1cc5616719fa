//! Replication: pulling every hosted log from every peer by cursor, serving pulls, and
//! knowing what peers hold of ours (for write concern and drain).

mod client;
mod holds;
mod membership;
mod session;

use std::sync::Arc;
use std::sync::atomic::AtomicBool;
use std::time::Duration;

pub(crate) use client::PeerClientConfig;
pub(crate) use holds::{Holds, Listeners};
pub(crate) use membership::{DigestCheck, EngineCtx, Membership, PeerInfo, PeerTable};

/// Settings of the replication engine.
#[derive(Clone, Debug)]
pub(crate) struct ReplicationConfig {
    pub(crate) static_peers: Vec<String>,
    /// Edge mode: replicas this one pulls from and also pushes its own writes to, since
    /// they do not pull from it.
    pub(crate) upstreams: Vec<String>,
    pub(crate) discover_dns: Option<String>,
    pub(crate) discover_interval: Duration,
    pub(crate) anti_entropy: Duration,
    pub(crate) peer_pending_max: u64,
    /// Logs this replica hosts at most, whoever asks.
    pub(crate) logs_max: usize,
}

/// Entries per pull page and the page's byte bound. A page is one ingest batch on the
/// receiver, so this also sets how many entries share one fsync there.
pub(crate) const PULL_PAGE_ENTRIES: usize = 1024;
pub(crate) const PULL_PAGE_ENTRIES_MAX: u32 = 4096;
pub(crate) const PULL_PAGE_BYTES: usize = 4 * 1024 * 1024;
/// The page size a replica asks its peers for (`PullRequest.page_bytes`). Each pulled
/// page becomes one writer commit here, and a commit holds its rows in memory until it
/// lands: a 4 MiB page of large entries is about 35,000 ops and 28 MiB of rows, a
/// 512 KiB page about 6,000 ops (docs/benchmarks.md, "Smaller pulled pages").
pub(crate) const PULL_ASK_PAGE_BYTES: usize = 512 * 1024;
const _: () = assert!(PULL_ASK_PAGE_BYTES <= PULL_PAGE_BYTES);
/// Pages buffered per pull stream on the sending side.
pub(crate) const PULL_PAGES_BUFFERED: usize = 4;
/// Pages this small are read, served and verified on the async worker that has them,
/// without the hand-off to the blocking pool, which costs more than the work at this size
/// (two thread wake-ups each way; see docs/benchmarks.md): the one-entry pages of steady
/// replication. Bounded by count (served pages, whose bytes are not known before they are
/// read) and by bytes (received pages).
pub(crate) const INLINE_PAGE_ENTRIES_MAX: u64 = 4;
pub(crate) const INLINE_PAGE_BYTES_MAX: usize = 64 * 1024;
/// Hashes one Fetch may ask for.
pub(crate) const FETCH_HASHES_MAX: usize = 1024;
/// Entries one Push message may carry.
pub(crate) const PUSH_ENTRIES_MAX: usize = 1024;
/// Entries a Reconcile will mark as already held before it gives up marking and sends
/// everything (the receiver drops duplicates).
pub(crate) const RECONCILE_PAST_MAX: usize = 1_000_000;

/// Flags shared by the services and the engine.
#[derive(Default)]
pub(crate) struct ReplicaState {
    /// Set by Admin.Drain: local writes are refused from then on.
    pub(crate) draining: AtomicBool,
    /// The last readiness evaluation (see `crate::readiness`).
    pub(crate) readiness: crate::readiness::ReadinessCell,
}

pub(crate) type SharedState = Arc<ReplicaState>;
