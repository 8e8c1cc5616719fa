//! The `Store` handle: opening a data directory, recovering per-log state, and the async
//! entry points that hand writes to the writer thread.

use std::collections::{HashMap, VecDeque};
use std::path::PathBuf;
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::sync::{Arc, Mutex, RwLock};
use std::thread::JoinHandle;
use std::time::Duration;

use fjall::{Database, Keyspace, KeyspaceCreateOptions, PersistMode};
use plait_core::{Clock, EntryHash, LogId, Op, PublicKey, SignedManifest, VerifiedEntry, WriterKey};
use rand::RngCore;
use tokio::sync::{broadcast, mpsc, oneshot, watch};

use crate::disk::DiskGuard;
use crate::error::{StoreError, StoreResult};
use crate::writer::{Command, Writer};

/// The on-disk layout version, kept in the `meta` keyspace. Versions 1 (log ids at the
/// start of every key) and 2 (no `versions` keyspace) are migrated in place when they
/// open; any other version is refused rather than misread.
pub const FORMAT_VERSION: u32 = 3;
/// Commands waiting for the writer thread. Senders wait when it is full (backpressure).
const COMMAND_QUEUE_MAX: usize = 4096;
/// Change notices buffered per listener; a listener that falls further behind is told it
/// lagged and re-reads every log's summary.
const CHANGES_BUFFER: usize = 4096;

/// Settings of a store.
#[derive(Clone, Debug)]
pub struct StoreConfig {
    pub path: PathBuf,
    /// The key this replica signs entries with on behalf of clients.
    pub writer_key: WriterKey,
    /// Entries one log may hold waiting for missing parents.
    pub pending_per_log_max: u64,
    /// fjall block cache size.
    pub cache_bytes: u64,
    /// Journal size past which memtables are flushed so the journal can be dropped. It
    /// bounds what a restart after a crash replays.
    pub journal_bytes: u64,
    /// Free space on the data directory's file system under which writes are refused
    /// with `ResourceExhausted`; 0 turns the floor off.
    pub disk_free_min_bytes: u64,
    /// Bound on the engine's memtables (active and sealed, every keyspace together):
    /// above it, with flushes outstanding, the writer waits for them before its next
    /// group, so memory does not grow when flushing falls behind. 0: no bound. Keep it
    /// above [`MEMTABLES_BYTES_MAX`], what the active memtables alone may hold.
    pub write_buffer_bytes: u64,
    /// Background threads of the engine (memtable flushes and compactions), at least 1.
    /// See [`ENGINE_THREADS_DEFAULT`].
    pub engine_threads: usize,
    /// Faults to inject into the writer, for tests.
    pub faults: Option<Arc<dyn FaultInjector>>,
}

/// The engine's background threads by default: one. fjall 3.1.13's pool, with more
/// than one thread, has its first thread hand every compaction back to the queue and
/// take it again while the others are busy, so it spins a core for as long as a
/// compaction runs; on the 2-core machine of docs/benchmarks.md one thread restored a
/// snapshot 13% faster with less CPU. More threads only pay on machines with cores to
/// spare and a compaction backlog.
pub const ENGINE_THREADS_DEFAULT: usize = 1;

/// The default free-space floor. It leaves room for what the engine writes besides the
/// batches: a full journal (128 MiB by default) flushed into tables, and compactions.
pub const DISK_FREE_MIN_BYTES: u64 = 256 * 1024 * 1024;

/// How long closing waits for memtables to reach tables. The data is already durable in
/// the journal; the flush only spares the next start a replay, so a flush that cannot
/// finish (a full disk) must not hold a shutdown.
const CLOSE_FLUSH_WAIT: Duration = Duration::from_secs(20);

/// A hook the writer calls just before it hands a group's batch to the engine, so tests
/// can make a commit fail the way a failing disk would. An error is treated as a failed
/// commit: the group is refused and the store poisoned.
pub trait FaultInjector: Send + Sync {
    fn before_commit(&self) -> StoreResult<()>;
}

impl std::fmt::Debug for dyn FaultInjector {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str("FaultInjector")
    }
}

impl StoreConfig {
    pub fn new(path: impl Into<PathBuf>, writer_key: WriterKey) -> StoreConfig {
        StoreConfig {
            path: path.into(),
            writer_key,
            pending_per_log_max: 100_000,
            cache_bytes: 64 * 1024 * 1024,
            journal_bytes: 128 * 1024 * 1024,
            disk_free_min_bytes: DISK_FREE_MIN_BYTES,
            write_buffer_bytes: WRITE_BUFFER_BYTES_DEFAULT,
            engine_threads: ENGINE_THREADS_DEFAULT,
            faults: None,
        }
    }

    /// The same configuration with the free-space floor off: for a store whose disk is
    /// shared with unrelated work (a test on a build machine), where the disk's free
    /// space says nothing about what the store needs.
    pub fn without_disk_floor(mut self) -> StoreConfig {
        self.disk_free_min_bytes = 0;
        self
    }
}

/// Told about every durable batch, for metrics.
pub trait StoreObserver: Send + Sync {
    fn batch_committed(&self, entries: u64, ops: u64, fsync: Duration);
    fn pending_changed(&self, pending: u64);
    /// The writer waited this long for flushes, its memtables over their bound.
    fn write_stalled(&self, _waited: Duration) {}
}

/// An observer that ignores everything.
#[derive(Debug, Default)]
pub struct NoopObserver;

impl StoreObserver for NoopObserver {
    fn batch_committed(&self, _: u64, _: u64, _: Duration) {}
    fn pending_changed(&self, _: u64) {}
}

/// What a replica knows of one log.
#[derive(Clone, Debug)]
pub struct LogSummary {
    pub log_id: LogId,
    pub manifest: SignedManifest,
    /// The highest seq stored (entries stored, since seq is gap-free from 1).
    pub seq: u64,
    pub heads: u32,
    pub pending: u64,
    pub ops: u64,
    /// Who created the log on this replica (`token:app`, `certificate:alice`, ...); none
    /// for logs learned from peers or restored from snapshots.
    pub creator: Option<Arc<str>>,
    /// The digest of the log's stored entries (pending ones not included): equal on two
    /// replicas that hold the same entries, whatever order they arrived in.
    pub digest: plait_core::SetDigest,
    /// The log's number on this replica (the prefix of its hot keys).
    pub(crate) no: crate::keys::LogNo,
}

/// Who asks for a log to be created, and how many logs created here they may hold at
/// most (`None`: no limit).
#[derive(Clone, Debug)]
pub struct Creator {
    pub identity: Arc<str>,
    pub quota: Option<usize>,
}

/// The acknowledgement of one written op, sent after its batch is durable.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct WriteAck {
    pub log: LogId,
    pub hash: EntryHash,
    pub seq: u64,
    pub index: u32,
    pub clock: Clock,
}

/// What happened to one submitted entry.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum SubmitOutcome {
    Stored { seq: u64 },
    Duplicate { seq: u64 },
    Pending,
}

/// How far this replica has pulled one log from one peer: the peer's epoch and the last
/// seq (in the peer's numbering) whose entries are all held here. Written in the same
/// batch as the entries it covers.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct Cursor {
    pub peer: PublicKey,
    pub log: LogId,
    pub epoch: [u8; 16],
    pub seq: u64,
}

/// How far a node restored from snapshots holds a source's log: the source's epoch and
/// the last source seq applied. Written in the same batch as the entries it covers.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct RestoreMark {
    pub log: LogId,
    pub epoch: [u8; 16],
    pub seq: u64,
}

/// The replica's dynamic member list and the generation that set it.
#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub struct Members {
    pub generation: u64,
    pub addresses: Vec<String>,
}

/// Where ingested entries came from, for metrics and limits.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum IngestSource {
    Submit,
    Sync,
}

impl IngestSource {
    pub fn name(self) -> &'static str {
        match self {
            IngestSource::Submit => "submit",
            IngestSource::Sync => "sync",
        }
    }
}

pub(crate) struct Keyspaces {
    pub(crate) meta: Keyspace,
    pub(crate) logs: Keyspace,
    pub(crate) names: Keyspace,
    pub(crate) counters: Keyspace,
    pub(crate) entries: Keyspace,
    pub(crate) seq: Keyspace,
    pub(crate) by_hash: Keyspace,
    pub(crate) heads: Keyspace,
    pub(crate) pending: Keyspace,
    pub(crate) missing: Keyspace,
    pub(crate) kv: Keyspace,
    pub(crate) feed: Keyspace,
    pub(crate) graph_out: Keyspace,
    pub(crate) graph_in: Keyspace,
    pub(crate) peers: Keyspace,
    pub(crate) checkpoints: Keyspace,
    pub(crate) restores: Keyspace,
    /// The principal that created each log here (log id -> identity), for per-principal
    /// quotas. Local to this replica: never replicated, snapshotted or backed up.
    pub(crate) creators: Keyspace,
    /// Each log's number on this replica (log id -> 4-byte number), the prefix of its
    /// keys in the keyspaces with a row per entry or op. Local, like `creators`.
    pub(crate) log_nos: Keyspace,
    /// Where each stored entry came from, as runs of seqs (see `origins.rs`). Local, like
    /// `creators`.
    pub(crate) origins: Keyspace,
    /// Every kv and graph op with the seq of its entry, by key or edge in total order
    /// (see `keys::kv_version_key`): what time-travel reads and History read.
    pub(crate) versions: Keyspace,
    /// Durable consumers' committed seqs (log id ‖ name -> seq; see `consumers.rs`).
    /// Local, like `creators`.
    pub(crate) consumers: Keyspace,
}

/// The smallest journal limit fjall accepts.
const JOURNAL_BYTES_MIN: u64 = 64 * 1024 * 1024;

/// Memtable size of the keyspaces that take a row per entry or op, and of the small
/// ones. fjall's default (64 MiB each, fourteen keyspaces) would let memtables alone take
/// most of a replica's memory budget.
const MEMTABLE_BYTES_LARGE: u64 = 8 * 1024 * 1024;
const MEMTABLE_BYTES_SMALL: u64 = 2 * 1024 * 1024;
/// The keyspaces with [`MEMTABLE_BYTES_LARGE`] memtables.
const LARGE_MEMTABLE_KEYSPACES: [&str; 8] =
    ["entries", "seq", "by_hash", "kv", "feed", "graph_out", "graph_in", "versions"];
/// What the active memtables alone may hold: eight large ones, fourteen small ones.
pub const MEMTABLES_BYTES_MAX: u64 = 8 * MEMTABLE_BYTES_LARGE + 14 * MEMTABLE_BYTES_SMALL;
/// The default bound on active and sealed memtables together (the store's
/// `write_buffer_bytes`): room for the active ones and 50 MiB waiting for flushes.
pub const WRITE_BUFFER_BYTES_DEFAULT: u64 = 128 * 1024 * 1024;

impl Keyspaces {
    pub(crate) fn open(db: &Database) -> StoreResult<Keyspaces> {
        let ks = |name: &str| {
            let large = LARGE_MEMTABLE_KEYSPACES.contains(&name);
            let bytes = if large { MEMTABLE_BYTES_LARGE } else { MEMTABLE_BYTES_SMALL };
            let separate = name == "entries";
            db.keyspace(name, move || {
                let options = KeyspaceCreateOptions::default().max_memtable_size(bytes);
                if separate {
                    options.with_kv_separation(Some(
                        fjall::KvSeparationOptions::default().compression(fjall::CompressionType::None),
                    ))
                } else {
                    options
                }
            })
        };
        Ok(Keyspaces {
            meta: ks("meta")?,
            logs: ks("logs")?,
            names: ks("names")?,
            counters: ks("counters")?,
            entries: ks("entries")?,
            seq: ks("seq")?,
            by_hash: ks("by_hash")?,
            heads: ks("heads")?,
            pending: ks("pending")?,
            missing: ks("missing")?,
            kv: ks("kv")?,
            feed: ks("feed")?,
            graph_out: ks("graph_out")?,
            graph_in: ks("graph_in")?,
            peers: ks("peers")?,
            checkpoints: ks("checkpoints")?,
            restores: ks("restores")?,
            creators: ks("creators")?,
            log_nos: ks("log_nos")?,
            origins: ks("origins")?,
            versions: ks("versions")?,
            consumers: ks("consumers")?,
        })
    }
}

impl Keyspaces {
    fn all(&self) -> [&Keyspace; 22] {
        [
            &self.meta,
            &self.logs,
            &self.names,
            &self.counters,
            &self.entries,
            &self.seq,
            &self.by_hash,
            &self.heads,
            &self.pending,
            &self.missing,
            &self.kv,
            &self.feed,
            &self.graph_out,
            &self.graph_in,
            &self.peers,
            &self.checkpoints,
            &self.restores,
            &self.creators,
            &self.log_nos,
            &self.origins,
            &self.versions,
            &self.consumers,
        ]
    }

    /// Whether any keyspace has a sealed memtable waiting to be flushed.
    pub(crate) fn flush_outstanding(&self) -> bool {
        self.all().iter().any(|k| k.sealed_memtable_count() > 0)
    }

    fn flush_all(&self) -> StoreResult<()> {
        for keyspace in self.all() {
            keyspace.rotate_memtable_and_wait()?;
        }
        Ok(())
    }
}

/// State shared by the writer thread and readers.
pub(crate) struct Shared {
    pub(crate) db: Database,
    pub(crate) ks: Keyspaces,
    pub(crate) epoch: [u8; 16],
    /// Summaries readers see; the writer replaces a log's summary after each commit.
    pub(crate) logs: RwLock<HashMap<LogId, LogSummary>>,
    /// The durable seq of each log, for subscribers waiting on new entries.
    pub(crate) seq_watch: Mutex<HashMap<LogId, watch::Sender<u64>>>,
    pub(crate) poisoned: AtomicBool,
    pub(crate) poison_watch: watch::Sender<bool>,
    pub(crate) observer: Arc<dyn StoreObserver>,
    /// See [`StoreConfig::write_buffer_bytes`].
    pub(crate) write_buffer_bytes: u64,
    /// Every durable change of a log's seq, and every new log.
    pub(crate) changes: broadcast::Sender<Change>,
    /// Which peer recent seqs of each log were pulled from. In memory only: after a
    /// restart nothing is known, and pages are served whole.
    pub(crate) provenance: Mutex<HashMap<LogId, VecDeque<PulledRange>>>,
    /// Bytes of entries and ops the writer has taken in since the store opened (as
    /// [`Command`](crate::writer::Command)s weigh them), counted after each durable commit. Long
    /// scans compare it with its value at their cut to bound what they keep in memory.
    pub(crate) taken_in: AtomicU64,
    /// Every log's durable consumers as of the last durable batch; only the writer
    /// changes it, after the batch that stores the change.
    pub(crate) consumers: RwLock<crate::consumers::ConsumerMap>,
}

/// A durable change of a log's seq (or a new log).
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct Change {
    pub log: LogId,
    pub seq: u64,
    /// The log's seq before the change.
    pub prev: u64,
    /// The peer every entry the change stored was pulled from, when they all came from
    /// one peer's pulls; `None` when any was written here, submitted, pushed, restored
    /// or completed from pending, or when nothing was stored.
    pub from: Option<PublicKey>,
    /// A pull cursor of this log the change's batch wrote: how far this replica now
    /// durably holds the log from that peer. A change that only moved a cursor has
    /// `seq == prev`.
    pub held: Option<Cursor>,
}

/// Seqs `first..=last` of one log, all stored from pulls from `peer`.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct PulledRange {
    pub first: u64,
    pub last: u64,
    pub peer: PublicKey,
}

/// Ranges of pulled seqs remembered per log; older ones are forgotten (their entries are
/// then served whole, which is correct, only not as cheap).
pub const PROVENANCE_RANGES_MAX: usize = 1024;

impl Shared {
    /// Bytes the writer has taken in since [`Shared::taken_in`] read `then`.
    pub(crate) fn taken_in_since(&self, then: u64) -> u64 {
        self.taken_in.load(Ordering::Acquire).saturating_sub(then)
    }

    pub(crate) fn publish(
        &self,
        summary: LogSummary,
        prev: u64,
        from: Option<PublicKey>,
        held: Option<Cursor>,
    ) {
        let (log, seq) = (summary.log_id, summary.seq);
        debug_assert!(held.is_none_or(|c| c.log == log), "a change carries a cursor of another log");
        self.logs.write().expect("log summaries lock poisoned").insert(log, summary);
        let mut watches = self.seq_watch.lock().expect("seq watch lock poisoned");
        watches.entry(log).or_insert_with(|| watch::channel(0).0).send_replace(seq);
        // Nobody listening is fine.
        let _ = self.changes.send(Change { log, seq, prev, from, held });
    }

    /// A durable cursor move that came without new entries in its log (`seq`, the log's
    /// seq, is unchanged).
    pub(crate) fn publish_cursor(&self, cursor: Cursor, seq: u64) {
        let _ = self.changes.send(Change { log: cursor.log, seq, prev: seq, from: None, held: Some(cursor) });
    }

    /// Remembers which peer each of `stored` (log, seq, pulled from) came from, merging
    /// runs of one peer into ranges, at most [`PROVENANCE_RANGES_MAX`] per log.
    pub(crate) fn record_provenance(&self, stored: &[(LogId, u64, Option<PublicKey>)]) {
        if stored.iter().all(|(_, _, from)| from.is_none()) {
            return;
        }
        let mut all = self.provenance.lock().expect("provenance lock poisoned");
        for &(log, seq, from) in stored {
            let Some(peer) = from else { continue };
            let ranges = all.entry(log).or_default();
            match ranges.back_mut() {
                Some(r) if r.peer == peer && r.last + 1 == seq => r.last = seq,
                _ => ranges.push_back(PulledRange { first: seq, last: seq, peer }),
            }
            while ranges.len() > PROVENANCE_RANGES_MAX {
                ranges.pop_front();
            }
        }
    }

    /// The number of a hosted log, the prefix of its hot keys; `None` for a log this
    /// replica does not host (it has no rows to read).
    pub(crate) fn log_no(&self, log: &LogId) -> Option<crate::keys::LogNo> {
        self.logs.read().expect("log summaries lock poisoned").get(log).map(|s| s.no)
    }

    pub(crate) fn forget_provenance(&self, log: &LogId) {
        self.provenance.lock().expect("provenance lock poisoned").remove(log);
    }

    /// The committed seq of a consumer, as of the last durable batch.
    pub(crate) fn consumer_seq(&self, log: &LogId, name: &str) -> Option<u64> {
        let all = self.consumers.read().expect("consumers lock poisoned");
        all.get(log).and_then(|c| c.get(name)).copied()
    }

    /// How many consumers `log` has once `staged` (changes of that log in a batch not yet
    /// durable, in order) are applied.
    pub(crate) fn consumer_count<'a>(
        &self,
        log: &LogId,
        staged: impl Iterator<Item = &'a (LogId, Arc<str>, Option<u64>)>,
    ) -> usize {
        let all = self.consumers.read().expect("consumers lock poisoned");
        let durable = all.get(log);
        let mut last: HashMap<&str, bool> = HashMap::new();
        for (_, name, seq) in staged {
            last.insert(name, seq.is_some());
        }
        let base = durable.map_or(0, |c| c.len());
        last.iter().fold(base, |n, (name, exists)| {
            match (durable.is_some_and(|c| c.contains_key(*name)), exists) {
                (false, true) => n + 1,
                (true, false) => n - 1,
                _ => n,
            }
        })
    }

    /// Takes a durable batch's consumer changes into the map readers use.
    pub(crate) fn adopt_consumers(&self, changes: Vec<(LogId, Arc<str>, Option<u64>)>) {
        if changes.is_empty() {
            return;
        }
        let mut all = self.consumers.write().expect("consumers lock poisoned");
        for (log, name, seq) in changes {
            match seq {
                Some(seq) => {
                    debug_assert!(
                        self.logs
                            .read()
                            .expect("log summaries lock poisoned")
                            .get(&log)
                            .is_some_and(|s| seq <= s.seq),
                        "consumer {name} of log {log} committed seq {seq}, past the log's durable end"
                    );
                    all.entry(log).or_default().insert(name, seq);
                }
                None => {
                    if let Some(c) = all.get_mut(&log) {
                        c.remove(&name);
                        if c.is_empty() {
                            all.remove(&log);
                        }
                    }
                }
            }
        }
    }

    pub(crate) fn forget(&self, log: &LogId) {
        self.consumers.write().expect("consumers lock poisoned").remove(log);
        self.logs.write().expect("log summaries lock poisoned").remove(log);
        // Dropping the sender ends every subscriber of the dropped log.
        self.seq_watch.lock().expect("seq watch lock poisoned").remove(log);
    }

    pub(crate) fn poison(&self) {
        self.poisoned.store(true, Ordering::SeqCst);
        self.poison_watch.send_replace(true);
    }
}

/// A replica's store. Cheap to clone; the writer thread stops when the last clone is
/// closed or dropped.
#[derive(Clone)]
pub struct Store {
    pub(crate) shared: Arc<Shared>,
    tx: mpsc::Sender<Command>,
    writer_thread: Arc<Mutex<Option<JoinHandle<()>>>>,
    writer_key: WriterKey,
    disk: Arc<DiskGuard>,
}

impl Store {
    /// Opens or initializes a data directory. `rng` draws the epoch of a new directory.
    /// Per-log seq is recovered by a reverse seek on each log's seq prefix, never a scan.
    pub fn open(
        config: StoreConfig,
        rng: &mut impl RngCore,
        observer: Arc<dyn StoreObserver>,
    ) -> StoreResult<Store> {
        std::fs::create_dir_all(&config.path).map_err(|e| {
            StoreError::Unavailable(format!("cannot create data directory {}: {e}", config.path.display()))
        })?;
        let db = Database::builder(&config.path)
            .worker_threads(config.engine_threads.max(1))
            .cache_size(config.cache_bytes)
            // fjall refuses a journal limit under 64 MiB.
            .max_journaling_size(config.journal_bytes.max(JOURNAL_BYTES_MIN))
            // Large journal records are entries: signatures, hashes and the application's
            // bytes, which lz4 (the default) spends the writer's time on for little gain.
            // Each record says how it is stored, so journals written before still replay.
            .journal_compression(fjall::CompressionType::None)
            .open()?;
        let ks = Keyspaces::open(&db)?;
        let epoch = init_meta(&db, &ks, rng)?;

        let (tx, rx) = mpsc::channel(COMMAND_QUEUE_MAX);
        let shared = Arc::new(Shared {
            db,
            ks,
            epoch,
            logs: RwLock::new(HashMap::new()),
            seq_watch: Mutex::new(HashMap::new()),
            poisoned: AtomicBool::new(false),
            poison_watch: watch::channel(false).0,
            observer,
            write_buffer_bytes: config.write_buffer_bytes,
            changes: broadcast::channel(CHANGES_BUFFER).0,
            provenance: Mutex::new(HashMap::new()),
            taken_in: AtomicU64::new(0),
            consumers: RwLock::new(Default::default()),
        });
        let disk = DiskGuard::new(config.path.clone(), config.disk_free_min_bytes);
        let writer = Writer::recover(
            shared.clone(),
            config.writer_key.clone(),
            config.pending_per_log_max,
            disk,
            config.faults.clone(),
        )?;
        // After recovery, which publishes the hosted logs.
        let consumers = crate::consumers::load(&shared.ks.consumers, |log| shared.log_no(log).is_some())?;
        *shared.consumers.write().expect("consumers lock poisoned") = consumers;
        let thread = std::thread::Builder::new()
            .name("plait-writer".into())
            .spawn(move || writer.run(rx))
            .map_err(|e| StoreError::Unavailable(format!("cannot start the writer thread: {e}")))?;
        Ok(Store {
            shared,
            tx,
            writer_thread: Arc::new(Mutex::new(Some(thread))),
            writer_key: config.writer_key,
            disk: Arc::new(DiskGuard::new(config.path.clone(), config.disk_free_min_bytes)),
        })
    }

    /// The data directory's incarnation.
    pub fn epoch(&self) -> [u8; 16] {
        self.shared.epoch
    }

    pub fn writer_key(&self) -> &WriterKey {
        &self.writer_key
    }

    /// False once a failed write to disk poisoned the store.
    pub fn is_writable(&self) -> bool {
        !self.shared.poisoned.load(Ordering::SeqCst)
    }

    /// Resolves when the store is poisoned.
    pub fn poisoned(&self) -> watch::Receiver<bool> {
        self.shared.poison_watch.subscribe()
    }

    pub(crate) async fn call<T>(
        &self,
        make: impl FnOnce(oneshot::Sender<StoreResult<T>>) -> Command,
    ) -> StoreResult<T> {
        if !self.is_writable() {
            return Err(StoreError::poisoned());
        }
        let (reply, rx) = oneshot::channel();
        self.tx
            .send(make(reply))
            .await
            .map_err(|_| StoreError::Unavailable("the store is shutting down".into()))?;
        rx.await.map_err(|_| StoreError::Unavailable("the store stopped before answering".into()))?
    }

    /// Registers a log. Registering the same manifest again returns the existing log
    /// with `false`; a different log under a taken name is `AlreadyExists`.
    pub async fn create_log(&self, manifest: SignedManifest) -> StoreResult<(LogSummary, bool)> {
        self.call(|reply| Command::CreateLog { manifest, creator: None, reply }).await
    }

    /// Registers a log on behalf of `creator`, recorded with it. When the log is new and
    /// `creator` already holds `quota` logs created here, nothing is stored and the call
    /// is `ResourceExhausted`; the count and the record are in the writer, so concurrent
    /// creations cannot pass the quota together.
    pub async fn create_log_as(
        &self,
        manifest: SignedManifest,
        creator: Creator,
    ) -> StoreResult<(LogSummary, bool)> {
        self.call(|reply| Command::CreateLog { manifest, creator: Some(creator), reply }).await
    }

    /// How many hosted logs `identity` created here.
    pub fn logs_created_by(&self, identity: &str) -> usize {
        self.shared
            .logs
            .read()
            .expect("log summaries lock poisoned")
            .values()
            .filter(|s| s.creator.as_deref() == Some(identity))
            .count()
    }

    /// Removes a log and everything stored for it.
    pub async fn drop_log(&self, log: LogId) -> StoreResult<()> {
        self.call(|reply| Command::DropLog { log, reply }).await
    }

    /// Writes ops signed by this replica's writer key, all or nothing. Ops for one log
    /// become one entry (or several, past the entry limits); concurrent writes to the
    /// same log share entries and every batch shares one fsync.
    pub async fn write(&self, ops: Vec<(LogId, Op)>) -> StoreResult<Vec<WriteAck>> {
        if ops.is_empty() {
            return Err(StoreError::Invalid("a write needs at least one op".into()));
        }
        self.call(|reply| Command::Write { ops, reply }).await
    }

    /// Stores verified entries signed elsewhere. Each entry gets its own outcome; the
    /// call fails as a whole only when the store cannot write at all.
    pub async fn ingest(
        &self,
        entries: Vec<VerifiedEntry>,
        source: IngestSource,
    ) -> StoreResult<Vec<StoreResult<SubmitOutcome>>> {
        let origin = crate::Origin::Submitted;
        self.call(|reply| Command::Ingest { entries, source, origin, cursor: None, restore: None, reply })
            .await
    }

    /// Stores entries a peer replica sent outside a pull with a cursor (reconciled or
    /// fetched), recorded as that peer's.
    pub async fn ingest_from_peer(
        &self,
        entries: Vec<VerifiedEntry>,
        peer: PublicKey,
    ) -> StoreResult<Vec<StoreResult<SubmitOutcome>>> {
        self.call(|reply| Command::Ingest {
            entries,
            source: IngestSource::Sync,
            origin: crate::Origin::Peer(peer),
            cursor: None,
            restore: None,
            reply,
        })
        .await
    }

    /// Stores entries pulled from a peer and, in the same atomic batch, the cursor that
    /// says how far this replica now holds that peer's log.
    /// Stores entries read from a verified snapshot and, in the same batch, how far this
    /// node now holds the source's log (the restore watermark).
    pub async fn ingest_restored(
        &self,
        entries: Vec<VerifiedEntry>,
        mark: RestoreMark,
    ) -> StoreResult<Vec<StoreResult<SubmitOutcome>>> {
        self.call(|reply| Command::Ingest {
            entries,
            source: IngestSource::Sync,
            origin: crate::Origin::Restored,
            cursor: None,
            restore: Some(mark),
            reply,
        })
        .await
    }

    pub async fn ingest_pulled(
        &self,
        entries: Vec<VerifiedEntry>,
        cursor: Cursor,
    ) -> StoreResult<Vec<StoreResult<SubmitOutcome>>> {
        self.call(|reply| Command::Ingest {
            entries,
            source: IngestSource::Sync,
            origin: crate::Origin::Peer(cursor.peer),
            cursor: Some(cursor),
            restore: None,
            reply,
        })
        .await
    }

    /// Replaces the dynamic member list if `generation` is newer than the stored one;
    /// otherwise `FailedPrecondition`, so a stale update loses.
    pub async fn set_members(&self, members: Members) -> StoreResult<()> {
        self.call(|reply| Command::SetMembers { members, reply }).await
    }

    /// The stored member list (generation 0 and no addresses if never set).
    pub fn members(&self) -> StoreResult<Members> {
        let Some(v) = self.shared.ks.meta.get("members")? else { return Ok(Members::default()) };
        crate::keys::parse_members(&v).ok_or_else(|| StoreError::Corrupt("meta/members is unreadable".into()))
    }

    /// The cursor of `log` pulled from `peer`, if any.
    pub fn cursor(&self, peer: &PublicKey, log: &LogId) -> StoreResult<Option<Cursor>> {
        let Some(v) = self.shared.ks.peers.get(crate::keys::peer_log(peer, log))? else { return Ok(None) };
        let (epoch, seq) =
            crate::keys::parse_cursor(&v).ok_or_else(|| StoreError::Corrupt("unreadable cursor".into()))?;
        Ok(Some(Cursor { peer: *peer, log: *log, epoch, seq }))
    }

    /// The cursors of every log pulled from `peer` (a bounded prefix scan: one row per
    /// log shared with that peer).
    pub fn cursors_from(&self, peer: &PublicKey) -> StoreResult<Vec<Cursor>> {
        let mut out = Vec::new();
        for row in self.shared.ks.peers.prefix(peer.0) {
            let (k, v) = row.into_inner()?;
            let log = LogId::from_slice(&k[32..])
                .ok_or_else(|| StoreError::Corrupt("unreadable cursor key".into()))?;
            let (epoch, seq) = crate::keys::parse_cursor(&v)
                .ok_or_else(|| StoreError::Corrupt("unreadable cursor".into()))?;
            out.push(Cursor { peer: *peer, log, epoch, seq });
        }
        Ok(out)
    }

    /// Every durable change of a log's seq, every new log, and every durable move of a
    /// pull cursor, as they happen.
    pub fn changes(&self) -> broadcast::Receiver<Change> {
        self.shared.changes.subscribe()
    }

    /// The ranges of `log`'s seqs in `(after, until]` that this replica stored from pulls
    /// from a peer, as far as it remembers (since it started, the newest
    /// [`PROVENANCE_RANGES_MAX`] ranges), in seq order.
    pub fn pulled_ranges(&self, log: &LogId, after: u64, until: u64) -> Vec<PulledRange> {
        let all = self.shared.provenance.lock().expect("provenance lock poisoned");
        all.get(log).into_iter().flatten().filter(|r| r.last > after && r.first <= until).copied().collect()
    }

    /// Stops the writer thread after the commands already queued, and syncs everything.
    /// Later calls on any clone fail with `Unavailable`. Everything acknowledged is
    /// already durable; flushing memtables at the end only spares the next start a
    /// journal replay, so it is skipped on a nearly full disk and waited for at most
    /// `CLOSE_FLUSH_WAIT`.
    pub async fn close(&self) -> StoreResult<()> {
        let thread = self.writer_thread.lock().expect("writer thread lock poisoned").take();
        if let Some(thread) = thread {
            // Queued after everything sent before it, so those commands finish first.
            let _ = self.tx.send(Command::Shutdown).await;
            let _ = tokio::task::spawn_blocking(move || thread.join()).await;
        }
        if self.shared.poisoned.load(Ordering::SeqCst) {
            return Ok(());
        }
        self.run_blocking(|store| Ok(store.shared.db.persist(PersistMode::SyncAll)?)).await?;
        if self.disk_low() {
            tracing::warn!(
                "the disk is nearly full: closing without flushing memtables; the next start replays the journal"
            );
            return Ok(());
        }
        let flush = self.run_blocking(|store| store.shared.ks.flush_all());
        match tokio::time::timeout(CLOSE_FLUSH_WAIT, flush).await {
            Ok(result) => result,
            Err(_) => {
                tracing::warn!(
                    wait_s = CLOSE_FLUSH_WAIT.as_secs(),
                    "memtables did not reach disk in time; closing anyway, the next start replays the journal"
                );
                Ok(())
            }
        }
    }

    /// Whether free space is under the store's floor.
    pub fn disk_low(&self) -> bool {
        self.disk.low().is_some()
    }

    /// Why free space is under the store's floor, for a caller about to spool to disk.
    pub fn disk_low_reason(&self) -> Option<String> {
        self.disk.low()
    }

    /// Runs blocking store work (fjall reads, fsync) on a blocking thread, so async
    /// callers never block their worker thread on the storage engine.
    pub async fn run_blocking<T: Send + 'static>(
        &self,
        f: impl FnOnce(&Store) -> StoreResult<T> + Send + 'static,
    ) -> StoreResult<T> {
        let store = self.clone();
        tokio::task::spawn_blocking(move || f(&store))
            .await
            .map_err(|e| StoreError::Unavailable(format!("a blocking store task failed: {e}")))?
    }

    /// How many logs this replica hosts, without copying their summaries.
    pub fn log_count(&self) -> usize {
        self.shared.logs.read().expect("log summaries lock poisoned").len()
    }

    /// Every log's summary, sorted by name.
    pub fn logs(&self) -> Vec<LogSummary> {
        let mut logs: Vec<_> =
            self.shared.logs.read().expect("log summaries lock poisoned").values().cloned().collect();
        logs.sort_by(|a, b| a.manifest.manifest().name.cmp(&b.manifest.manifest().name));
        logs
    }

    pub fn log(&self, log: &LogId) -> Option<LogSummary> {
        self.shared.logs.read().expect("log summaries lock poisoned").get(log).cloned()
    }

    /// Finds a log by 64-hex id or by name.
    pub fn resolve(&self, log_ref: &str) -> StoreResult<LogSummary> {
        if log_ref.is_empty() {
            return Err(StoreError::Invalid("log must be given, by name or 64-hex id".into()));
        }
        let logs = self.shared.logs.read().expect("log summaries lock poisoned");
        if let Ok(id) = LogId::from_hex(log_ref)
            && let Some(summary) = logs.get(&id)
        {
            return Ok(summary.clone());
        }
        logs.values()
            .find(|s| s.manifest.manifest().name == log_ref)
            .cloned()
            .ok_or_else(|| StoreError::NotFound(format!("no log named {log_ref:?} on this replica")))
    }

    /// A receiver of the log's durable seq, for subscriptions. Ends when the log is dropped.
    pub fn watch_seq(&self, log: &LogId) -> StoreResult<watch::Receiver<u64>> {
        self.shared
            .seq_watch
            .lock()
            .expect("seq watch lock poisoned")
            .get(log)
            .map(watch::Sender::subscribe)
            .ok_or_else(|| StoreError::NotFound(format!("no log {log} on this replica")))
    }

    /// Bytes the data directory takes on disk.
    pub fn disk_bytes(&self) -> u64 {
        self.shared.db.disk_space().unwrap_or(0)
    }

    /// Bytes the history (the `versions` keyspace) takes in flushed tables on disk.
    pub fn history_disk_bytes(&self) -> u64 {
        self.shared.ks.versions.disk_space()
    }
}

fn init_meta(db: &Database, ks: &Keyspaces, rng: &mut impl RngCore) -> StoreResult<[u8; 16]> {
    match ks.meta.get("format")? {
        Some(v) => {
            let version = <[u8; 4]>::try_from(v.as_ref())
                .map(u32::from_be_bytes)
                .map_err(|_| StoreError::Corrupt("meta/format is not a 4-byte version".into()))?;
            if version == 1 {
                crate::migrate::v1_to_v2(db, ks, None)?;
            }
            if version == 1 || version == 2 {
                crate::migrate::v2_to_v3(db, ks, None)?;
            } else if version != FORMAT_VERSION {
                return Err(StoreError::FailedPrecondition(format!(
                    "data directory has format version {version}; this plaitd reads versions 1 and 2 \
                     (migrated when they open) and {FORMAT_VERSION}"
                )));
            }
            let epoch =
                ks.meta.get("epoch")?.ok_or_else(|| StoreError::Corrupt("meta/epoch is missing".into()))?;
            <[u8; 16]>::try_from(epoch.as_ref())
                .map_err(|_| StoreError::Corrupt("meta/epoch is not 16 bytes".into()))
        }
        None => {
            let mut epoch = [0u8; 16];
            rng.fill_bytes(&mut epoch);
            let mut batch = db.batch().durability(Some(PersistMode::SyncAll));
            batch.insert(&ks.meta, "format", FORMAT_VERSION.to_be_bytes().to_vec());
            batch.insert(&ks.meta, "epoch", epoch.to_vec());
            batch.insert(&ks.meta, crate::migrate::NEXT_LOG_NO, 1u32.to_be_bytes().to_vec());
            batch.commit()?;
            Ok(epoch)
        }
    }
}
