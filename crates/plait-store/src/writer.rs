//! The writer thread: the only code that writes to fjall.
//!
//! It takes every command waiting in the queue (up to a bound) and stages them as one
//! group: one `OwnedWriteBatch`, an overlay of what the batch already holds (fjall does
//! not show a batch's writes to reads before commit), and copies of the state of every log
//! the group touches. The batch is committed with `SyncData` durability, so fjall makes
//! it visible to readers only after the fsync, and only then does the group's staged state
//! become the writer's state and are the commands answered. A group that fails is
//! dropped whole: the writer's state is still that of the last durable batch. A failed
//! commit or fsync also poisons the store: nothing more is acknowledged, ever.
//!
//! Local writes to the same log within one group share entries, so signing, hashing and
//! fsync are paid per group rather than per op; they are split by the exact encoded size
//! of their ops, so no entry can exceed the format's limits. Each command is checked in
//! full before anything of it is staged, so one caller's invalid command is refused alone
//! and never fails another caller's command in the same group.

use std::collections::{BTreeMap, HashMap, HashSet};
use std::sync::Arc;
use std::sync::atomic::Ordering;
use std::time::{Duration, Instant};

use fjall::{OwnedWriteBatch, PersistMode};
use plait_core::limits::{
    CLOCK_LEAD_MAX, ENTRY_BYTES_MAX, ENTRY_ENVELOPE_BYTES_MAX, NEXT_MAX, OPS_PER_ENTRY_MAX, TIME_MAX,
};
use plait_core::{
    EntryDraft, EntryHash, LogId, Op, OpId, SetDigest, SignedManifest, VerifiedEntry, WriterKey,
};
use tokio::sync::{mpsc, oneshot};

use crate::consumers::{self, ConsumerChange};
use crate::disk::DiskGuard;
use crate::error::{StoreError, StoreResult};
use crate::keys::{self, LogNo};
use crate::origins::{self, Origin, OriginRun};
use crate::store::{
    Creator, Cursor, FaultInjector, IngestSource, LogSummary, Members, RestoreMark, Shared, SubmitOutcome,
    WriteAck,
};

/// The longest the writer waits for flushes when memtables are over their bound.
const WRITE_STALL_MAX: Duration = Duration::from_secs(10);
/// How often it looks again while it waits.
const WRITE_STALL_POLL: Duration = Duration::from_millis(2);
/// Most commands folded into one batch.
const GROUP_COMMANDS_MAX: usize = 1024;
/// Most op bytes folded into one batch before it is committed.
pub(crate) const GROUP_BYTES_MAX: usize = 64 * 1024 * 1024;
/// Bytes of op encodings one locally made entry carries at most: whatever the envelope
/// leaves of the entry bound.
const LOCAL_ENTRY_OP_BYTES_MAX: usize = ENTRY_BYTES_MAX - ENTRY_ENVELOPE_BYTES_MAX;

// Any single valid op fits in a local entry on its own, so splitting always succeeds.
const _: () = assert!(plait_core::limits::ENTRY_ENVELOPE_BYTES_MAX < ENTRY_BYTES_MAX);
const _: () = assert!(GROUP_BYTES_MAX >= ENTRY_BYTES_MAX);

pub(crate) enum Command {
    CreateLog {
        manifest: SignedManifest,
        creator: Option<Creator>,
        reply: oneshot::Sender<StoreResult<(LogSummary, bool)>>,
    },
    DropLog {
        log: LogId,
        reply: oneshot::Sender<StoreResult<()>>,
    },
    Write {
        ops: Vec<(LogId, Op)>,
        reply: oneshot::Sender<StoreResult<Vec<WriteAck>>>,
    },
    Ingest {
        entries: Vec<VerifiedEntry>,
        source: IngestSource,
        /// Where the entries come from, recorded with them.
        origin: Origin,
        /// Written in the same batch as the entries, for pulls.
        cursor: Option<Cursor>,
        /// Written in the same batch as the entries, for restores.
        restore: Option<RestoreMark>,
        reply: oneshot::Sender<StoreResult<Vec<StoreResult<SubmitOutcome>>>>,
    },
    /// A consistent, durable cut of one log: taken between groups, when everything
    /// committed is also fsynced.
    Cut {
        log: LogId,
        reply: oneshot::Sender<StoreResult<Cut>>,
    },
    PutCheckpoint {
        checkpoint: plait_core::Checkpoint,
        reply: oneshot::Sender<StoreResult<()>>,
    },
    SetMembers {
        members: Members,
        reply: oneshot::Sender<StoreResult<()>>,
    },
    /// Puts entries the log lost from its entry store back at their seqs (`repair.rs`).
    RestoreLost {
        log: LogId,
        entries: Vec<VerifiedEntry>,
        gaps: Vec<u64>,
        reply: oneshot::Sender<StoreResult<Vec<(EntryHash, u64)>>>,
    },
    /// Commits or deletes a durable consumer; answers whether a commit created it.
    Consumer {
        log: LogId,
        name: Arc<str>,
        change: ConsumerChange,
        reply: oneshot::Sender<StoreResult<bool>>,
    },
    Shutdown,
}

impl Command {
    fn weight(&self) -> usize {
        match self {
            Command::Write { ops, .. } => ops.iter().map(|(_, op)| op.size_hint()).sum(),
            Command::Ingest { entries, .. } | Command::RestoreLost { entries, .. } => {
                entries.iter().map(|e| e.bytes().len()).sum()
            }
            _ => 0,
        }
    }

    /// Whether the command makes the data directory grow, and so is refused when the
    /// disk is nearly full.
    fn grows_store(&self) -> bool {
        matches!(
            self,
            Command::CreateLog { .. }
                | Command::Write { .. }
                | Command::Ingest { .. }
                | Command::RestoreLost { .. }
                | Command::PutCheckpoint { .. }
        )
    }
}

/// A durable, consistent view of one log at a moment: a fjall snapshot plus the
/// writer's state of the log at that same moment.
pub(crate) struct Cut {
    pub(crate) snapshot: fjall::Snapshot,
    pub(crate) seq: u64,
    pub(crate) heads: Vec<EntryHash>,
    pub(crate) ops: u64,
    pub(crate) manifest: SignedManifest,
    /// The log's number, the prefix of its rows in the snapshot.
    pub(crate) no: LogNo,
    /// The store's `taken_in` counter at the cut.
    pub(crate) taken_in: u64,
}

/// The state of one log: in `Writer::logs` as of the last durable batch, in
/// `Group::staged` as the group being built would leave it.
#[derive(Clone)]
struct LogState {
    manifest: SignedManifest,
    /// The log's number on this replica, the prefix of its per-entry and per-op keys.
    no: LogNo,
    /// The seq the next stored entry gets.
    next_seq: u64,
    /// Heads with their clock times.
    heads: BTreeMap<EntryHash, u64>,
    pending: u64,
    ops: u64,
    /// Who created the log here, when a client did.
    creator: Option<Arc<str>>,
    /// The origin run of the log's last entries, which the next entry of the same origin
    /// extends.
    origin_run: Option<OriginRun>,
    /// The digest of the stored entries, kept in the log's `counters` row after the op
    /// count.
    digest: SetDigest,
}

impl LogState {
    fn new(manifest: SignedManifest, no: LogNo, creator: Option<Arc<str>>) -> LogState {
        LogState {
            manifest,
            no,
            next_seq: 1,
            heads: BTreeMap::new(),
            pending: 0,
            ops: 0,
            creator,
            origin_run: None,
            digest: SetDigest::default(),
        }
    }

    fn summary(&self) -> LogSummary {
        LogSummary {
            log_id: self.manifest.log_id(),
            manifest: self.manifest.clone(),
            seq: self.next_seq - 1,
            heads: self.heads.len() as u32,
            pending: self.pending,
            ops: self.ops,
            creator: self.creator.clone(),
            digest: self.digest,
            no: self.no,
        }
    }

    /// The highest clock time the log holds: every stored entry is an ancestor of a head
    /// and times grow along parent links, so it is the highest head's.
    fn time_max(&self) -> u64 {
        self.heads.values().copied().max().unwrap_or(0)
    }
}

pub(crate) struct Writer {
    shared: Arc<Shared>,
    key: WriterKey,
    pending_per_log_max: u64,
    disk: DiskGuard,
    faults: Option<Arc<dyn FaultInjector>>,
    /// Every log's state as of the last durable batch. Only `adopt` and `drop_log`
    /// change it, and only after the disk holds the change.
    logs: HashMap<LogId, LogState>,
    /// The number the next log created here gets. Numbers staged in a group that then
    /// fails are skipped, never reused.
    next_no: u32,
    /// Which view rows the logs this writer saw empty have ever had (`filter.rs`).
    filters: std::cell::RefCell<crate::filter::RowFilters>,
}

/// A last-writer-wins register row of a view: which keyspace, its key, and for graph
/// edges the `graph_in` key that mirrors the `graph_out` one.
struct ViewRow {
    keyspace: &'static str,
    key: Vec<u8>,
    mirror: Option<Vec<u8>>,
}

impl ViewRow {
    fn kv(no: LogNo, key: &[u8]) -> ViewRow {
        ViewRow { keyspace: "kv", key: keys::kv_key(no, key), mirror: None }
    }

    fn edge(no: LogNo, src: &[u8], label: &str, dst: &[u8]) -> ViewRow {
        ViewRow {
            keyspace: "graph_out",
            key: keys::edge_key(no, src, label, dst),
            mirror: Some(keys::edge_key(no, dst, label, src)),
        }
    }
}

/// An answer that waits for the batch to become durable.
enum Reply {
    CreateLog(oneshot::Sender<StoreResult<(LogSummary, bool)>>, LogId, bool),
    Ingest(oneshot::Sender<StoreResult<Vec<StoreResult<SubmitOutcome>>>>, Vec<StoreResult<SubmitOutcome>>),
    Done(oneshot::Sender<StoreResult<()>>),
    Consumer(oneshot::Sender<StoreResult<bool>>, bool),
    Restored(oneshot::Sender<StoreResult<Vec<(EntryHash, u64)>>>, Vec<(EntryHash, u64)>),
}

impl Reply {
    fn fail(self, error: &dyn Fn() -> StoreError) {
        match self {
            Reply::CreateLog(tx, ..) => drop(tx.send(Err(error()))),
            Reply::Ingest(tx, _) => drop(tx.send(Err(error()))),
            Reply::Done(tx) => drop(tx.send(Err(error()))),
            Reply::Consumer(tx, _) => drop(tx.send(Err(error()))),
            Reply::Restored(tx, _) => drop(tx.send(Err(error()))),
        }
    }
}

/// One local write command of a group: its ops until they are put into entries, then
/// the acknowledgement of each, in the command's op order.
struct LocalWrite {
    ops: Vec<(LogId, Op)>,
    acks: Vec<Option<WriteAck>>,
    /// Set when the write is refused at commit time (its log's clock is exhausted); its
    /// ops are then in no entry.
    refused: Option<StoreError>,
    reply: oneshot::Sender<StoreResult<Vec<WriteAck>>>,
}

/// One op of a local write on its way into an entry: which write, which op of it.
struct LocalOp {
    write: usize,
    index: usize,
    op: Op,
}

/// What a group applied to one log, to check the staged state against.
#[derive(Default)]
struct Applied {
    entries: u64,
    ops: u64,
}

/// One group's batch and what it already holds.
struct Group {
    batch: OwnedWriteBatch,
    replies: Vec<Reply>,
    writes: Vec<LocalWrite>,
    /// The state every touched log will have once the batch is durable; logs created in
    /// this group are here too. Adopted by the writer only after the fsync.
    staged: HashMap<LogId, LogState>,
    /// What was applied per log, for the assertions before commit.
    applied: HashMap<LogId, Applied>,
    /// Entries stored in this batch: hash → (log, seq, time).
    entries: HashMap<EntryHash, (LogId, u64, u64)>,
    /// Seqs of stored entries read for the history in this batch (the ops an entry's ops
    /// replace mostly come from a few entries).
    seqs_read: HashMap<EntryHash, u64>,
    /// View rows this batch writes, by keyspace name and key: each row's last value
    /// only, put into the batch in key order at commit (fewer and cheaper memtable
    /// inserts than one per op in arrival order).
    rows: RowMap<(&'static str, Vec<u8>), RowWrite>,
    /// Pending entries added and removed in this batch.
    pending_added: HashMap<EntryHash, VerifiedEntry>,
    pending_removed: HashSet<EntryHash>,
    /// `missing` rows added (parent → children) and removed in this batch.
    missing_added: HashMap<EntryHash, Vec<EntryHash>>,
    missing_removed: HashSet<[u8; 64]>,
    /// A member list set in this batch, so two updates in one batch compare correctly.
    members: Option<Members>,
    /// Consumer rows this batch writes (`None`: deleted), in order; the in-memory map
    /// takes them once the batch is durable.
    consumers: Vec<(LogId, Arc<str>, Option<u64>)>,
    /// The peer the entries being ingested now were pulled from (`None` for anything
    /// else, and for children completed from pending, whoever sent them).
    source: Option<plait_core::PublicKey>,
    /// The origin of the entries being ingested now.
    origin: Origin,
    /// Origin runs this batch closed (a new origin followed them), to write at commit;
    /// the open run of each log it applied entries to is written from its staged state.
    origin_rows: Vec<(LogNo, OriginRun)>,
    /// The arrival origin of entries parked in this batch.
    pending_origins: HashMap<EntryHash, Origin>,
    /// Every entry stored in this batch: log, seq, and the peer it was pulled from.
    provenance: Vec<(LogId, u64, Option<plait_core::PublicKey>)>,
    /// Pull cursors this batch writes, in order, for the change notices: a peer watching
    /// this replica learns from them how far it is held here.
    cursors: Vec<crate::Cursor>,
    entries_stored: u64,
    ops_stored: u64,
    /// What the commands staged in this group weigh, added to the store's `taken_in`
    /// once the batch is durable: a cut, which commits what came before it in its group
    /// first, then counts exactly what its scan must not let pile up.
    weight: u64,
}

/// A hash map for keys that clients and peers choose (view rows): a fast hasher,
/// seeded per process like the standard one, so chosen keys cannot collide on purpose.
type RowMap<K, V> = HashMap<K, V, foldhash::fast::RandomState>;

/// The value a group writes to one view row, and for graph edges the `graph_in` key
/// that mirrors it with the same value.
struct RowWrite {
    value: Vec<u8>,
    mirror: Option<Vec<u8>>,
}

/// The staged state of `log`, copied from the durable state on first touch.
fn stage<'g>(
    durable: &HashMap<LogId, LogState>,
    staged: &'g mut HashMap<LogId, LogState>,
    log: &LogId,
) -> Option<&'g mut LogState> {
    if !staged.contains_key(log) {
        staged.insert(*log, durable.get(log)?.clone());
    }
    staged.get_mut(log)
}

impl Writer {
    /// Loads every log's state: seq by a reverse seek on its seq prefix, heads and
    /// pending by prefix scans (both bounded), counters by a point read.
    pub(crate) fn recover(
        shared: Arc<Shared>,
        key: WriterKey,
        pending_per_log_max: u64,
        disk: DiskGuard,
        faults: Option<Arc<dyn FaultInjector>>,
    ) -> StoreResult<Writer> {
        let ks = &shared.ks;
        let next_no = crate::migrate::next_log_no(ks)?;
        let mut logs = HashMap::new();
        let mut numbered: HashMap<LogNo, LogId> = HashMap::new();
        let mut summed = Vec::new();
        for row in ks.logs.iter() {
            let (id, bytes) = row.into_inner()?;
            let manifest = SignedManifest::decode_and_verify(&bytes)
                .map_err(|e| StoreError::Corrupt(format!("stored manifest does not verify: {e}")))?;
            let log = manifest.log_id();
            if log.0.as_slice() != id.as_ref() {
                return Err(StoreError::Corrupt(format!("manifest of log {log} stored under another id")));
            }
            let no = ks
                .log_nos
                .get(log.0)?
                .and_then(|v| LogNo::parse(&v))
                .ok_or_else(|| StoreError::Corrupt(format!("log {log} has no log number")))?;
            if let Some(other) = numbered.insert(no, log) {
                return Err(StoreError::Corrupt(format!(
                    "logs {other} and {log} both have log number {}; their rows cannot be told apart",
                    no.0
                )));
            }
            if no.0 >= next_no {
                return Err(StoreError::Corrupt(format!(
                    "log {log} has number {} but meta/next_log_no is {next_no}",
                    no.0
                )));
            }
            let last_seq = match ks.seq.prefix(no.bytes()).next_back() {
                Some(row) => {
                    let k = row.key()?;
                    keys::u64_at(&k, keys::NO).ok_or_else(|| StoreError::Corrupt("short seq key".into()))?
                }
                None => 0,
            };
            let mut heads = BTreeMap::new();
            for row in ks.heads.prefix(no.bytes()) {
                let (k, v) = row.into_inner()?;
                let hash = EntryHash::from_slice(&k[keys::NO..])
                    .ok_or_else(|| StoreError::Corrupt("short heads key".into()))?;
                heads.insert(
                    hash,
                    keys::u64_at(&v, 0).ok_or_else(|| StoreError::Corrupt("short heads value".into()))?,
                );
            }
            let pending = ks.pending.prefix(no.bytes()).count() as u64;
            let counters = ks.counters.get(log.0)?;
            let ops = counters.as_deref().and_then(|v| keys::u64_at(v, 0)).unwrap_or(0);
            let digest = match counters.as_deref().and_then(keys::counters_digest) {
                Some(digest) => digest,
                // Written by a replica that did not keep digests (or none yet): summed
                // from the log's seq rows once, and stored below.
                None => {
                    let mut digest = SetDigest::default();
                    for row in ks.seq.prefix(no.bytes()) {
                        let v = row.value()?;
                        let hash = EntryHash::from_slice(&v)
                            .ok_or_else(|| StoreError::Corrupt("short seq value".into()))?;
                        digest.add(&hash);
                    }
                    summed.push((log, ops, digest));
                    digest
                }
            };
            let creator = match ks.creators.get(log.0)? {
                Some(v) => Some(Arc::from(
                    std::str::from_utf8(&v)
                        .map_err(|_| StoreError::Corrupt(format!("creator of log {log} is not UTF-8")))?,
                )),
                None => None,
            };
            let origin_run = match ks.origins.prefix(origins::run_prefix(no)).next_back() {
                Some(row) => {
                    let (k, v) = row.into_inner()?;
                    Some(origins::parse_run(&k, &v).ok_or_else(|| {
                        StoreError::Corrupt(format!("log {log} has an unreadable origin row"))
                    })?)
                }
                None => None,
            };
            let state = LogState {
                manifest,
                no,
                next_seq: last_seq + 1,
                heads,
                pending,
                ops,
                creator,
                origin_run,
                digest,
            };
            shared.publish(state.summary(), state.next_seq - 1, None, None);
            logs.insert(log, state);
        }
        if !summed.is_empty() {
            tracing::info!(logs = summed.len(), "stored the digests of logs written without them");
            let mut batch = shared.db.batch().durability(Some(PersistMode::SyncData));
            for (log, ops, digest) in &summed {
                batch.insert(&ks.counters, log.0, keys::counters_value(*ops, digest));
            }
            batch.commit()?;
        }
        let mut filters = crate::filter::RowFilters::default();
        for state in logs.values() {
            if state.next_seq == 1 && state.pending == 0 {
                filters.seen_empty(state.no);
            }
        }
        let filters = std::cell::RefCell::new(filters);
        Ok(Writer { shared, key, pending_per_log_max, disk, faults, logs, next_no, filters })
    }

    pub(crate) fn run(mut self, mut rx: mpsc::Receiver<Command>) {
        while let Some(first) = rx.blocking_recv() {
            let mut commands = vec![first];
            let mut bytes = commands[0].weight();
            while commands.len() < GROUP_COMMANDS_MAX && bytes < GROUP_BYTES_MAX {
                match rx.try_recv() {
                    Ok(c) => {
                        bytes += c.weight();
                        commands.push(c);
                    }
                    Err(_) => break,
                }
            }
            if !self.run_group(commands) {
                break;
            }
        }
        // Answer whatever is still queued so no caller waits forever.
        rx.close();
        while let Ok(c) = rx.try_recv() {
            reject(c, &|| StoreError::Unavailable("the store is shutting down".into()));
        }
    }

    /// Backpressure on memory: while the engine's memtables hold more than the bound
    /// and some wait for a flush, waits for the flushes (at most [`WRITE_STALL_MAX`],
    /// then goes on with a warning: a stuck flush must not stop every write). Without
    /// sealed memtables there is nothing to wait for, so this never waits on itself.
    fn wait_for_flushes(&self) {
        let bound = self.shared.write_buffer_bytes;
        if bound == 0 {
            return;
        }
        let over = || self.shared.db.write_buffer_size() > bound && self.shared.ks.flush_outstanding();
        if !over() {
            return;
        }
        let started = Instant::now();
        while over() {
            if started.elapsed() >= WRITE_STALL_MAX {
                tracing::warn!(
                    buffered = self.shared.db.write_buffer_size(),
                    bound,
                    "memtables stay over their bound; flushes are slow, writing on"
                );
                break;
            }
            std::thread::sleep(WRITE_STALL_POLL);
        }
        self.shared.observer.write_stalled(started.elapsed());
    }

    /// Stages, commits and answers one group of commands. Returns false when the writer
    /// must stop (shutdown or poison).
    fn run_group(&mut self, commands: Vec<Command>) -> bool {
        self.wait_for_flushes();
        let mut group = self.new_group();
        let mut keep_running = true;
        // One look at the free space per group: a group adds at most GROUP_BYTES_MAX,
        // which the floor leaves room for.
        let disk_low = if commands.iter().any(Command::grows_store) { self.disk.low() } else { None };
        for command in commands {
            if !keep_running || self.poisoned() {
                reject(command, &StoreError::poisoned);
                continue;
            }
            if let Some(message) = &disk_low
                && command.grows_store()
            {
                reject(command, &|| StoreError::ResourceExhausted(message.clone()));
                continue;
            }
            group.weight += command.weight() as u64;
            match command {
                Command::CreateLog { manifest, creator, reply } => {
                    match self.create_log(&mut group, manifest, creator) {
                        Ok((log, created)) => group.replies.push(Reply::CreateLog(reply, log, created)),
                        Err(e) => drop(reply.send(Err(e))),
                    }
                }
                Command::Write { ops, reply } => match self.check_local(&group, &ops) {
                    Ok(()) => {
                        let acks = vec![None; ops.len()];
                        group.writes.push(LocalWrite { ops, acks, refused: None, reply });
                    }
                    Err(e) => drop(reply.send(Err(e))),
                },
                Command::Ingest { entries, source, origin, cursor, restore, reply } => {
                    // Callers count by source; the writer treats every source alike.
                    let _ = source;
                    group.source = cursor.as_ref().map(|c| c.peer);
                    group.origin = origin;
                    let outcomes = entries.into_iter().map(|e| self.ingest_one(&mut group, e)).collect();
                    group.source = None;
                    group.origin = Origin::Unknown;
                    let ks = &self.shared.ks;
                    if let Some(m) = restore {
                        group.batch.insert(
                            &ks.restores,
                            m.log.0,
                            keys::cursor_value(&m.epoch, m.seq).to_vec(),
                        );
                    }
                    if let Some(c) = cursor {
                        group.batch.insert(
                            &ks.peers,
                            keys::peer_log(&c.peer, &c.log).to_vec(),
                            keys::cursor_value(&c.epoch, c.seq).to_vec(),
                        );
                        group.cursors.push(c);
                    }
                    group.replies.push(Reply::Ingest(reply, outcomes));
                }
                Command::SetMembers { members, reply } => match self.set_members(&mut group, members) {
                    Ok(()) => group.replies.push(Reply::Done(reply)),
                    Err(e) => drop(reply.send(Err(e))),
                },
                Command::RestoreLost { log, entries, gaps, reply } => {
                    match self.restore_lost(&mut group, log, entries, gaps) {
                        Ok(restored) => group.replies.push(Reply::Restored(reply, restored)),
                        Err(e) => drop(reply.send(Err(e))),
                    }
                }
                Command::Consumer { log, name, change, reply } => {
                    match self.change_consumer(&mut group, log, name, change) {
                        Ok(created) => group.replies.push(Reply::Consumer(reply, created)),
                        Err(e) => drop(reply.send(Err(e))),
                    }
                }
                Command::DropLog { log, reply } => {
                    // Dropping rewrites a whole log: commit what came before, on its own.
                    let earlier = std::mem::replace(&mut group, self.new_group());
                    if !self.commit(earlier) {
                        drop(reply.send(Err(StoreError::poisoned())));
                        keep_running = false;
                        continue;
                    }
                    let result = self.drop_log(log);
                    if result.is_err() && self.poisoned() {
                        keep_running = false;
                    }
                    drop(reply.send(result));
                }
                Command::Cut { log, reply } => {
                    let earlier = std::mem::replace(&mut group, self.new_group());
                    if !self.commit(earlier) {
                        drop(reply.send(Err(StoreError::poisoned())));
                        keep_running = false;
                        continue;
                    }
                    drop(reply.send(self.cut(log)));
                }
                Command::PutCheckpoint { checkpoint, reply } => {
                    let key = keys::checkpoint_key(&checkpoint.log, checkpoint.seq);
                    group.batch.insert(&self.shared.ks.checkpoints, key.to_vec(), checkpoint.encode());
                    group.replies.push(Reply::Done(reply));
                }
                Command::Shutdown => keep_running = false,
            }
        }
        self.commit(group) && keep_running
    }

    fn poisoned(&self) -> bool {
        self.shared.poisoned.load(std::sync::atomic::Ordering::SeqCst)
    }

    fn new_group(&self) -> Group {
        Group {
            // Durability on the batch: fjall fsyncs the journal before it applies the
            // batch to the memtables, so readers never see what a crash could take back.
            batch: self.shared.db.batch().durability(Some(PersistMode::SyncData)),
            replies: Vec::new(),
            writes: Vec::new(),
            staged: HashMap::new(),
            applied: HashMap::new(),
            entries: HashMap::new(),
            seqs_read: HashMap::new(),
            rows: RowMap::default(),
            pending_added: HashMap::new(),
            pending_removed: HashSet::new(),
            missing_added: HashMap::new(),
            missing_removed: HashSet::new(),
            members: None,
            consumers: Vec::new(),
            source: None,
            provenance: Vec::new(),
            origin: Origin::Unknown,
            origin_rows: Vec::new(),
            pending_origins: HashMap::new(),
            cursors: Vec::new(),
            entries_stored: 0,
            ops_stored: 0,
            weight: 0,
        }
    }

    /// The state of `log` as this group leaves it so far.
    fn state<'a>(&'a self, group: &'a Group, log: &LogId) -> Option<&'a LogState> {
        group.staged.get(log).or_else(|| self.logs.get(log))
    }

    /// Makes the group's local entries, commits with one fsync, and only then adopts the
    /// staged state and answers. Returns false if the store is now poisoned.
    fn commit(&mut self, mut group: Group) -> bool {
        if let Err(e) = self.make_local_entries(&mut group) {
            // Every op was checked and the split keeps each entry within the format's
            // bounds, so this is a bug. Nothing of the group has reached the disk and the
            // writer's state is untouched: dropping the group rolls everything back.
            debug_assert!(false, "a checked local entry could not be signed: {e}");
            tracing::error!(error = %e, "could not make local entries; the group is refused");
            fail_group(group, &|| StoreError::Internal(format!("could not make a local entry: {e}")));
            return true;
        }
        for (log, state) in &group.staged {
            group.batch.insert(
                &self.shared.ks.counters,
                log.0,
                keys::counters_value(state.ops, &state.digest),
            );
        }
        self.put_origins(&mut group);
        self.put_rows(&mut group);
        self.assert_staged(&group);
        if self.poisoned() {
            fail_group(group, &StoreError::poisoned);
            return false;
        }
        let started = Instant::now();
        let Group {
            batch,
            replies,
            writes,
            staged,
            entries_stored,
            ops_stored,
            provenance,
            cursors,
            weight,
            consumers,
            ..
        } = group;
        let durable = match self.faults.as_ref().map(|f| f.before_commit()) {
            Some(Err(e)) => Err(e),
            _ => {
                let span = tracing::debug_span!("commit", entries = entries_stored, ops = ops_stored);
                let _enter = span.enter();
                batch.commit().map_err(StoreError::from)
            }
        };
        if let Err(e) = durable {
            tracing::error!(error = %e, "write to disk failed; the store is poisoned and acknowledges nothing more");
            self.shared.poison();
            fail_replies(replies, writes, &StoreError::poisoned);
            return false;
        }
        self.shared.taken_in.fetch_add(weight, Ordering::Release);
        if entries_stored > 0 {
            self.shared.observer.batch_committed(entries_stored, ops_stored, started.elapsed());
        }
        let pending_changed = !staged.is_empty();
        self.shared.record_provenance(&provenance);
        self.adopt(staged, &provenance, &cursors);
        self.shared.adopt_consumers(consumers);
        if pending_changed {
            self.shared.observer.pending_changed(self.logs.values().map(|s| s.pending).sum());
        }
        self.answer(replies, writes);
        true
    }

    /// Puts the origin runs the group closed and the open run of every log it stored
    /// entries in into its batch, each row once.
    fn put_origins(&self, group: &mut Group) {
        let ks = &self.shared.ks;
        for (no, run) in group.origin_rows.drain(..) {
            group.batch.insert(
                &ks.origins,
                origins::run_key(no, run.first).to_vec(),
                origins::run_value(&run),
            );
        }
        for log in group.applied.keys() {
            let Some(state) = group.staged.get(log) else { continue };
            if let Some(run) = &state.origin_run {
                debug_assert_eq!(run.last, state.next_seq - 1, "the open origin run ends at the last seq");
                group.batch.insert(
                    &ks.origins,
                    origins::run_key(state.no, run.first).to_vec(),
                    origins::run_value(run),
                );
            }
        }
    }

    /// Puts the group's view rows into its batch, sorted by keyspace and key: inserting
    /// into a memtable's skiplist in key order walks paths the previous insert left in
    /// the cache, where arrival order misses at almost every level.
    fn put_rows(&self, group: &mut Group) {
        let ks = &self.shared.ks;
        let mut rows: Vec<_> = group.rows.drain().collect();
        rows.sort_unstable_by(|a, b| a.0.cmp(&b.0));
        let mut mirrors = Vec::new();
        for ((keyspace, key), RowWrite { value, mirror }) in rows {
            let target = if keyspace == "kv" { &ks.kv } else { &ks.graph_out };
            if let Some(mirror) = mirror {
                mirrors.push((mirror, value.clone()));
            }
            group.batch.insert(target, key, value);
        }
        mirrors.sort_unstable_by(|a, b| a.0.cmp(&b.0));
        for (key, value) in mirrors {
            group.batch.insert(&ks.graph_in, key, value);
        }
    }

    /// Makes a durable group's staged state the writer's and shows it to readers.
    /// `stored` (what the batch stored, with where each entry was pulled from) says per
    /// log whether every new entry came from one peer, which the change notice carries.
    /// `cursors` (the pull cursors the batch wrote) ride on the changes too: on the
    /// change of the cursor's log, or on a change of their own (seq unchanged) when the
    /// batch stored nothing new in that log or wrote two cursors of it.
    fn adopt(
        &mut self,
        staged: HashMap<LogId, LogState>,
        stored: &[(LogId, u64, Option<plait_core::PublicKey>)],
        cursors: &[crate::Cursor],
    ) {
        let mut from: HashMap<LogId, Option<plait_core::PublicKey>> = HashMap::new();
        for &(log, _, source) in stored {
            from.entry(log)
                .and_modify(|f| {
                    if *f != source {
                        *f = None
                    }
                })
                .or_insert(source);
        }
        let mut cursors: Vec<Option<crate::Cursor>> = cursors.iter().copied().map(Some).collect();
        for (log, state) in staged {
            let prev = self.logs.get(&log).map_or(0, |s| s.next_seq - 1);
            // The last cursor of this log in the batch is the furthest one.
            let held =
                cursors.iter_mut().rev().find(|c| c.is_some_and(|c| c.log == log)).and_then(Option::take);
            self.shared.publish(state.summary(), prev, from.get(&log).copied().flatten(), held);
            self.logs.insert(log, state);
        }
        for cursor in cursors.into_iter().flatten() {
            let seq = self.logs.get(&cursor.log).map_or(0, |s| s.next_seq - 1);
            self.shared.publish_cursor(cursor, seq);
        }
    }

    fn answer(&self, replies: Vec<Reply>, writes: Vec<LocalWrite>) {
        for reply in replies {
            match reply {
                Reply::CreateLog(tx, log, created) => {
                    drop(tx.send(Ok((self.logs[&log].summary(), created))));
                }
                Reply::Ingest(tx, outcomes) => drop(tx.send(Ok(outcomes))),
                Reply::Done(tx) => drop(tx.send(Ok(()))),
                Reply::Consumer(tx, created) => drop(tx.send(Ok(created))),
                Reply::Restored(tx, restored) => drop(tx.send(Ok(restored))),
            }
        }
        for write in writes {
            let answer = match write.refused {
                Some(e) => Err(e),
                None => Ok(write
                    .acks
                    .into_iter()
                    .map(|a| a.expect("every op of a kept write is in an entry"))
                    .collect()),
            };
            drop(write.reply.send(answer));
        }
    }

    /// Checks, before commit, that each staged log moved exactly as far as what the
    /// group applied to it: seq by the entries, the op counter by their ops.
    fn assert_staged(&self, group: &Group) {
        if !cfg!(debug_assertions) {
            return;
        }
        for (log, state) in &group.staged {
            let (next_seq, ops) = self.logs.get(log).map_or((1, 0), |s| (s.next_seq, s.ops));
            let applied = group.applied.get(log).map_or((0, 0), |a| (a.entries, a.ops));
            assert_eq!(
                state.next_seq,
                next_seq + applied.0,
                "log {log}: staged seq does not follow the batch"
            );
            assert_eq!(state.ops, ops + applied.1, "log {log}: staged op counter does not follow the batch");
            assert_eq!(state.heads.is_empty(), state.next_seq == 1, "log {log}: heads without entries");
        }
    }

    fn create_log(
        &mut self,
        group: &mut Group,
        manifest: SignedManifest,
        creator: Option<Creator>,
    ) -> StoreResult<(LogId, bool)> {
        let log = manifest.log_id();
        if self.state(group, &log).is_some() {
            return Ok((log, false));
        }
        if let Some(Creator { identity, quota: Some(quota) }) = &creator {
            // A log the group touched is counted once, as staged.
            let held = self
                .logs
                .iter()
                .filter(|(id, _)| !group.staged.contains_key(*id))
                .map(|(_, s)| s)
                .chain(group.staged.values())
                .filter(|s| s.creator.as_deref() == Some(&**identity))
                .count();
            if held >= *quota {
                return Err(StoreError::ResourceExhausted(format!(
                    "{identity} has created {held} of the {quota} logs it may create on this replica; \
                     drop one of them or ask for a larger quota"
                )));
            }
        }
        let name = &manifest.manifest().name;
        if let Some(other) =
            self.logs.values().chain(group.staged.values()).find(|s| &s.manifest.manifest().name == name)
        {
            return Err(StoreError::AlreadyExists(format!(
                "a different log named {name:?} exists on this replica ({}); choose another name",
                other.manifest.log_id()
            )));
        }
        if self.next_no == u32::MAX {
            return Err(StoreError::ResourceExhausted(
                "this replica has given out every log number (2^32 - 1 logs created); \
                 no more logs can be created in this data directory"
                    .into(),
            ));
        }
        let no = LogNo(self.next_no);
        debug_assert!(
            self.logs.values().chain(group.staged.values()).all(|s| s.no != no),
            "log number {} is already given",
            no.0
        );
        self.next_no += 1;
        let ks = &self.shared.ks;
        group.batch.insert(&ks.logs, log.0, manifest.bytes().to_vec());
        group.batch.insert(&ks.names, name.as_bytes().to_vec(), log.0.to_vec());
        group.batch.insert(&ks.log_nos, log.0, no.bytes().to_vec());
        group.batch.insert(&ks.meta, crate::migrate::NEXT_LOG_NO, self.next_no.to_be_bytes().to_vec());
        let creator = creator.map(|c| c.identity);
        if let Some(identity) = &creator {
            group.batch.insert(&ks.creators, log.0, identity.as_bytes().to_vec());
        }
        group.staged.insert(log, LogState::new(manifest, no, creator));
        self.filters.borrow_mut().seen_empty(no);
        Ok((log, true))
    }

    fn cut(&self, log: LogId) -> StoreResult<Cut> {
        let state = self
            .logs
            .get(&log)
            .ok_or_else(|| StoreError::NotFound(format!("no log {log} on this replica")))?;
        Ok(Cut {
            snapshot: self.shared.db.snapshot(),
            seq: state.next_seq - 1,
            heads: state.heads.keys().copied().collect(),
            ops: state.ops,
            manifest: state.manifest.clone(),
            no: state.no,
            taken_in: self.shared.taken_in.load(Ordering::Acquire),
        })
    }

    fn set_members(&self, group: &mut Group, members: Members) -> StoreResult<()> {
        let current = match self.shared.ks.meta.get("members")? {
            Some(v) => keys::parse_members(&v)
                .ok_or_else(|| StoreError::Corrupt("meta/members is unreadable".into()))?,
            None => Members::default(),
        };
        let pending = group.members.as_ref().map_or(current.generation, |m| m.generation);
        if members.generation <= pending {
            return Err(StoreError::FailedPrecondition(format!(
                "stale membership: generation {} is not newer than the current {pending}",
                members.generation
            )));
        }
        group.batch.insert(&self.shared.ks.meta, "members", keys::members_value(&members));
        group.members = Some(members);
        Ok(())
    }

    /// Stages the entries `log` lost from its entry store back at free seqs of `gaps`:
    /// only entries it does not hold whose first op is applied here, each at the lowest
    /// free seq above its parents'. Their `entries`, `by_hash` and `seq` rows and their
    /// hashes in the digest; nothing else, since the rest of the store still counts them.
    fn restore_lost(
        &self,
        group: &mut Group,
        log: LogId,
        entries: Vec<VerifiedEntry>,
        gaps: Vec<u64>,
    ) -> StoreResult<Vec<(EntryHash, u64)>> {
        let state = self
            .state(group, &log)
            .ok_or_else(|| StoreError::NotFound(format!("no log {log} on this replica")))?;
        let (no, log_type, end) = (state.no, state.manifest.manifest().log_type, state.next_seq - 1);
        let ks = &self.shared.ks;
        let mut free: std::collections::BTreeSet<u64> =
            gaps.into_iter().filter(|g| (1..=end).contains(g)).collect();
        let mut restored = Vec::new();
        for entry in entries {
            let hash = entry.hash();
            if entry.log() != log || free.is_empty() || self.stored(group, &hash)?.is_some() {
                continue;
            }
            let mut floor = Some(0);
            for parent in &entry.entry().next {
                floor = match (floor, self.stored(group, parent)?) {
                    (Some(f), Some((l, seq, time))) if l == log && time < entry.clock().time => {
                        Some(f.max(seq))
                    }
                    _ => None,
                };
            }
            let Some(floor) = floor else { continue };
            if !crate::repair::first_op_applied(&self.shared, no, log_type, &entry)? {
                continue; // Never stored here: the ordinary ingest takes it.
            }
            let Some(seq) = crate::repair::take_gap(&mut free, floor) else { continue };
            if ks.seq.contains_key(keys::seq_key(no, seq))? {
                continue; // Not free after all; the gaps were read before a restore.
            }
            debug_assert!(
                seq > floor && seq <= end,
                "a restored entry goes between its parents and the log's end"
            );
            let time = entry.clock().time;
            group.batch.insert(&ks.entries, hash.0, entry.bytes().to_vec());
            group.batch.insert(&ks.seq, keys::seq_key(no, seq), hash.0);
            group.batch.insert(&ks.by_hash, hash.0, keys::location(&log, seq, time));
            group.entries.insert(hash, (log, seq, time));
            stage(&self.logs, &mut group.staged, &log).expect("a hosted log").digest.add(&hash);
            tracing::warn!(%log, seq, entry = %hash, "restored an entry lost from the entry store");
            restored.push((hash, seq));
        }
        Ok(restored)
    }

    /// Stages a consumer's commit or deletion in the group's batch. A commit names a seq
    /// the log holds (as this group leaves it); a new consumer counts against `limit`.
    fn change_consumer(
        &self,
        group: &mut Group,
        log: LogId,
        name: Arc<str>,
        change: ConsumerChange,
    ) -> StoreResult<bool> {
        let state = self
            .state(group, &log)
            .ok_or_else(|| StoreError::NotFound(format!("no log {log} on this replica")))?;
        let log_name = &state.manifest.manifest().name;
        let staged =
            |n: &str| group.consumers.iter().rev().find(|(l, c, _)| *l == log && &**c == n).map(|c| c.2);
        let current = staged(&name).unwrap_or_else(|| self.shared.consumer_seq(&log, &name));
        let key = consumers::key(&log, &name);
        match change {
            ConsumerChange::Commit { seq, limit } => {
                let end = state.next_seq - 1;
                if seq > end {
                    return Err(StoreError::Invalid(format!(
                        "consumer {name:?} cannot commit seq {seq}: log {log_name} holds seqs 0 to {end} on this replica"
                    )));
                }
                let created = current.is_none();
                if created {
                    let count =
                        self.shared.consumer_count(&log, group.consumers.iter().filter(|c| c.0 == log));
                    if count >= limit {
                        return Err(StoreError::ResourceExhausted(format!(
                            "log {log_name} has {count} consumers, the most this replica keeps per log; delete one first"
                        )));
                    }
                }
                group.batch.insert(&self.shared.ks.consumers, key, seq.to_be_bytes().to_vec());
                group.consumers.push((log, name, Some(seq)));
                Ok(created)
            }
            ConsumerChange::Delete => {
                if current.is_none() {
                    return Err(StoreError::NotFound(format!("log {log_name} has no consumer {name:?}")));
                }
                group.batch.remove(&self.shared.ks.consumers, key);
                group.consumers.push((log, name, None));
                Ok(false)
            }
        }
    }

    fn drop_log(&mut self, log: LogId) -> StoreResult<()> {
        let Some(state) = self.logs.get(&log) else {
            return Err(StoreError::NotFound(format!("no log {log} on this replica")));
        };
        let ks = &self.shared.ks;
        let state_no = state.no;
        let no = state.no.bytes();
        let mut batch = self.shared.db.batch().durability(Some(PersistMode::SyncData));
        for row in ks.seq.prefix(no) {
            let (k, hash) = row.into_inner()?;
            batch.remove(&ks.seq, k);
            batch.remove(&ks.entries, hash.clone());
            batch.remove(&ks.by_hash, hash);
        }
        for row in ks.pending.prefix(no) {
            let (k, v) = row.into_inner()?;
            let hash = EntryHash::from_slice(&k[keys::NO..])
                .ok_or_else(|| StoreError::Corrupt("short pending key".into()))?;
            if let Ok(entry) = plait_core::DecodedEntry::decode(&v) {
                for parent in &entry.entry().next {
                    batch.remove(&ks.missing, keys::hash_hash(parent, &hash).to_vec());
                }
            }
            batch.remove(&ks.pending, k);
        }
        for keyspace in [&ks.heads, &ks.kv, &ks.feed, &ks.graph_out, &ks.graph_in, &ks.origins, &ks.versions]
        {
            for row in keyspace.prefix(no) {
                batch.remove(keyspace, row.key()?);
            }
        }
        for row in ks.peers.iter() {
            let k = row.key()?;
            if k.get(32..) == Some(log.0.as_slice()) {
                batch.remove(&ks.peers, k);
            }
        }
        for row in ks.checkpoints.prefix(log.0) {
            batch.remove(&ks.checkpoints, row.key()?);
        }
        for row in ks.consumers.prefix(log.0) {
            batch.remove(&ks.consumers, row.key()?);
        }
        batch.remove(&ks.restores, log.0);
        batch.remove(&ks.logs, log.0);
        batch.remove(&ks.counters, log.0);
        batch.remove(&ks.creators, log.0);
        batch.remove(&ks.log_nos, log.0);
        batch.remove(&ks.names, state.manifest.manifest().name.as_bytes().to_vec());
        let durable = match self.faults.as_ref().map(|f| f.before_commit()) {
            Some(Err(e)) => Err(e),
            _ => batch.commit().map_err(StoreError::from),
        };
        if let Err(e) = durable {
            self.shared.poison();
            tracing::error!(error = %e, "write to disk failed while dropping a log; the store is poisoned");
            return Err(StoreError::poisoned());
        }
        self.logs.remove(&log);
        self.filters.borrow_mut().forget(state_no);
        self.shared.forget(&log);
        self.shared.forget_provenance(&log);
        Ok(())
    }

    /// Checks a local write as a whole before anything of it is staged: every log is
    /// hosted and lets this replica's key write, every op is within bounds and of the
    /// log's type.
    fn check_local(&self, group: &Group, ops: &[(LogId, Op)]) -> StoreResult<()> {
        let writer = self.key.public();
        for (log, op) in ops {
            let state = self
                .state(group, log)
                .ok_or_else(|| StoreError::NotFound(format!("no log {log} on this replica")))?;
            let manifest = state.manifest.manifest();
            if !manifest.writers.allows(&writer) {
                return Err(StoreError::PermissionDenied(format!(
                    "this replica's writer key is not on the ACL of log {:?}; submit entries signed by a listed key instead",
                    manifest.name
                )));
            }
            op.validate().map_err(|e| StoreError::Invalid(e.to_string()))?;
            op.check_type(manifest.log_type)
                .map_err(|e| StoreError::Invalid(format!("log {:?}: {e}", manifest.name)))?;
        }
        Ok(())
    }

    /// Puts the group's local ops into entries: per log in first-seen order, split by
    /// count and exact encoded size, each signed on top of the log's heads and applied.
    /// Writes to a log whose clock cannot take the entries are refused whole first.
    fn make_local_entries(&self, group: &mut Group) -> Result<(), plait_core::DecodeError> {
        let mut per_log: Vec<(LogId, Vec<LocalOp>)> = Vec::new();
        for (write, local) in group.writes.iter_mut().enumerate() {
            for (index, (log, op)) in std::mem::take(&mut local.ops).into_iter().enumerate() {
                let slot = match per_log.iter().position(|(l, _)| *l == log) {
                    Some(i) => i,
                    None => {
                        per_log.push((log, Vec::new()));
                        per_log.len() - 1
                    }
                };
                per_log[slot].1.push(LocalOp { write, index, op });
            }
        }
        let mut planned: Vec<(LogId, Vec<Vec<LocalOp>>)> =
            per_log.into_iter().map(|(log, ops)| (log, split_local(ops))).collect();
        while let Some(log) = planned.iter().find_map(|(log, chunks)| {
            let time_max = self.state(group, log).map_or(0, LogState::time_max);
            (time_max + chunks.len() as u64 > TIME_MAX).then_some(*log)
        }) {
            let name =
                self.state(group, &log).map(|s| s.manifest.manifest().name.clone()).unwrap_or_default();
            let refused: HashSet<usize> = planned
                .iter()
                .filter(|(l, _)| *l == log)
                .flat_map(|(_, chunks)| chunks.iter().flatten().map(|o| o.write))
                .collect();
            for write in &refused {
                group.writes[*write].refused = Some(StoreError::FailedPrecondition(format!(
                    "log {name:?} has reached the highest clock time ({TIME_MAX}) and accepts no more writes"
                )));
            }
            // A refused write is all or nothing: its ops leave every log's plan.
            planned = planned
                .into_iter()
                .filter_map(|(l, chunks)| {
                    let ops: Vec<LocalOp> =
                        chunks.into_iter().flatten().filter(|o| !refused.contains(&o.write)).collect();
                    (!ops.is_empty()).then(|| (l, split_local(ops)))
                })
                .collect();
        }
        for (log, chunks) in planned {
            for chunk in chunks {
                let (places, ops): (Vec<_>, Vec<_>) =
                    chunk.into_iter().map(|o| ((o.write, o.index), o.op)).unzip();
                let entry = self.sign_local(group, log, ops)?;
                // No pending entry can wait for a hash that did not exist until now, so
                // there are no children to resolve.
                let seq = self.apply(group, &entry, Origin::Local);
                for (position, (write, index)) in places.into_iter().enumerate() {
                    group.writes[write].acks[index] = Some(WriteAck {
                        log,
                        hash: entry.hash(),
                        seq,
                        index: position as u32,
                        clock: entry.clock(),
                    });
                }
            }
        }
        Ok(())
    }

    fn sign_local(
        &self,
        group: &Group,
        log: LogId,
        ops: Vec<Op>,
    ) -> Result<VerifiedEntry, plait_core::DecodeError> {
        let state = self.state(group, &log).expect("local writes are checked against hosted logs");
        let time = 1 + state.time_max();
        // Name every head we know, up to the format's limit; any left over stay heads and
        // are merged by a later entry.
        let next = state.heads.keys().take(NEXT_MAX).copied().collect();
        let entry = EntryDraft { log, time, next, refs: Vec::new(), ops }.sign(&self.key)?;
        debug_assert!(entry.bytes().len() <= ENTRY_BYTES_MAX);
        Ok(entry)
    }

    /// Where an entry is stored, looking at this batch first.
    fn stored(&self, group: &Group, hash: &EntryHash) -> StoreResult<Option<(LogId, u64, u64)>> {
        if let Some(found) = group.entries.get(hash) {
            return Ok(Some(*found));
        }
        Ok(self
            .shared
            .ks
            .by_hash
            .get(hash.0)?
            .and_then(|v| keys::parse_location(&v))
            .map(|l| (l.log, l.seq, l.time)))
    }

    fn is_pending(&self, group: &Group, no: LogNo, hash: &EntryHash) -> StoreResult<bool> {
        if group.pending_added.contains_key(hash) {
            return Ok(true);
        }
        if group.pending_removed.contains(hash) {
            return Ok(false);
        }
        Ok(self.shared.ks.pending.contains_key(keys::entry_key(no, hash))?)
    }

    /// Checks one entry signed elsewhere and stages it: stored if its parents are here,
    /// parked in pending if not. A refusal stages nothing.
    fn ingest_one(&self, group: &mut Group, entry: VerifiedEntry) -> StoreResult<SubmitOutcome> {
        let log = entry.log();
        let hash = entry.hash();
        let Some(state) = self.state(group, &log) else {
            return Err(StoreError::NotFound(format!(
                "entry {hash} belongs to log {log}, which this replica does not host"
            )));
        };
        if let Some((_, seq, _)) = self.stored(group, &hash)? {
            return Ok(SubmitOutcome::Duplicate { seq });
        }
        let manifest = state.manifest.manifest();
        if !manifest.writers.allows(&entry.clock().writer) {
            return Err(StoreError::PermissionDenied(format!(
                "writer {} is not on the ACL of log {:?}",
                entry.clock().writer,
                manifest.name
            )));
        }
        for op in &entry.entry().ops {
            op.check_type(manifest.log_type)
                .map_err(|e| StoreError::Invalid(format!("entry {hash}: {e}")))?;
        }
        if self.is_pending(group, state.no, &hash)? {
            return Ok(SubmitOutcome::Pending);
        }
        let mut missing = Vec::new();
        let mut parents_time = 0;
        for parent in &entry.entry().next {
            match self.stored(group, parent)? {
                Some((parent_log, _, _)) if parent_log != log => {
                    return Err(StoreError::Invalid(format!(
                        "entry {hash} names parent {parent} from another log"
                    )));
                }
                Some((_, _, time)) => parents_time = parents_time.max(time),
                None => missing.push(*parent),
            }
        }
        if !missing.is_empty() {
            if state.pending >= self.pending_per_log_max {
                return Err(StoreError::ResourceExhausted(format!(
                    "log {:?} already holds {} entries waiting for parents; send the parents first",
                    manifest.name, state.pending
                )));
            }
            let no = state.no;
            self.park(group, no, entry, &missing);
            return Ok(SubmitOutcome::Pending);
        }
        check_clock(state, &entry, parents_time)?;
        let origin = group.origin;
        let seq = self.apply(group, &entry, origin);
        self.resolve_children(group, hash);
        Ok(SubmitOutcome::Stored { seq })
    }

    /// Stages an entry whose parents `missing` are not here yet into `pending`.
    fn park(&self, group: &mut Group, no: LogNo, entry: VerifiedEntry, missing: &[EntryHash]) {
        let (log, hash) = (entry.log(), entry.hash());
        let ks = &self.shared.ks;
        group.batch.insert(&ks.pending, keys::entry_key(no, &hash).to_vec(), entry.bytes().to_vec());
        group.batch.insert(
            &ks.origins,
            origins::pending_key(no, &hash).to_vec(),
            origins::pending_value(group.origin),
        );
        group.pending_origins.insert(hash, group.origin);
        for parent in missing {
            group.batch.insert(&ks.missing, keys::hash_hash(parent, &hash).to_vec(), log.0.to_vec());
            group.missing_added.entry(*parent).or_default().push(hash);
        }
        group.pending_removed.remove(&hash);
        group.pending_added.insert(hash, entry);
        stage(&self.logs, &mut group.staged, &log).expect("parked entries belong to hosted logs").pending +=
            1;
    }

    /// Children waiting for `parent`, from this batch and from disk, not yet resolved.
    fn waiting_children(&self, group: &Group, parent: &EntryHash) -> StoreResult<Vec<(EntryHash, LogId)>> {
        let mut out = Vec::new();
        for row in self.shared.ks.missing.prefix(parent.0) {
            let (k, v) = row.into_inner()?;
            let key: [u8; 64] =
                k.as_ref().try_into().map_err(|_| StoreError::Corrupt("missing key length".into()))?;
            if group.missing_removed.contains(&key) {
                continue;
            }
            let child = EntryHash::from_slice(&k[keys::HASH..]).expect("64-byte key");
            let log =
                LogId::from_slice(&v).ok_or_else(|| StoreError::Corrupt("missing value length".into()))?;
            out.push((child, log));
        }
        for child in group.missing_added.get(parent).into_iter().flatten() {
            if !group.missing_removed.contains(&keys::hash_hash(parent, child))
                && let Some(entry) = group.pending_added.get(child)
            {
                out.push((*child, entry.log()));
            }
        }
        Ok(out)
    }

    fn load_pending(
        &self,
        group: &Group,
        log: &LogId,
        hash: &EntryHash,
    ) -> StoreResult<Option<VerifiedEntry>> {
        if let Some(entry) = group.pending_added.get(hash) {
            return Ok(Some(entry.clone()));
        }
        if group.pending_removed.contains(hash) {
            return Ok(None);
        }
        let Some(no) = self.state(group, log).map(|s| s.no) else { return Ok(None) };
        match self.shared.ks.pending.get(keys::entry_key(no, hash))? {
            Some(bytes) => VerifiedEntry::reverify(&bytes, *hash)
                .map(Some)
                .map_err(|e| StoreError::Corrupt(format!("pending entry {hash} does not verify: {e}"))),
            None => Ok(None),
        }
    }

    /// Applies every pending entry that `parent` completes, transitively. A completed
    /// child is checked again as if it had just arrived: every parent of its own log and
    /// a clock past theirs. One that fails is dropped from pending, never stored.
    fn resolve_children(&self, group: &mut Group, parent: EntryHash) {
        // A completed child was sent by whoever sent it, not necessarily this page's peer.
        let source = group.source.take();
        self.resolve_children_of(group, parent);
        group.source = source;
    }

    fn resolve_children_of(&self, group: &mut Group, parent: EntryHash) {
        let mut ready = vec![parent];
        while let Some(parent) = ready.pop() {
            let children = match self.waiting_children(group, &parent) {
                Ok(c) => c,
                Err(e) => {
                    tracing::error!(error = %e, "cannot read pending children");
                    return;
                }
            };
            for (child, log) in children {
                let row = keys::hash_hash(&parent, &child);
                group.batch.remove(&self.shared.ks.missing, row.to_vec());
                group.missing_removed.insert(row);
                let Ok(Some(entry)) = self.load_pending(group, &log, &child) else { continue };
                let parents = match self.parents_of(group, &entry) {
                    Ok(Some(parents)) => parents,
                    // Still waiting for another parent (or it cannot be read now).
                    Ok(None) | Err(_) => continue,
                };
                let origin = self.pending_origin(group, &log, &child);
                self.unpark(group, &log, &child);
                let checked = match parents {
                    ParentCheck::Ours { time } => match self.state(group, &log) {
                        Some(state) => check_clock(state, &entry, time),
                        None => Err(StoreError::NotFound(format!("log {log} is not hosted"))),
                    },
                    ParentCheck::OtherLog(parent) => Err(StoreError::Invalid(format!(
                        "entry {child} names parent {parent} from another log"
                    ))),
                };
                if let Err(e) = checked {
                    tracing::warn!(entry = %child, error = %e, "dropping a pending entry that its parents refuse");
                    continue;
                }
                self.apply(group, &entry, origin);
                ready.push(child);
            }
        }
    }

    /// Whether every parent of `entry` is stored: `None` while one is missing.
    fn parents_of(&self, group: &Group, entry: &VerifiedEntry) -> StoreResult<Option<ParentCheck>> {
        let mut time = 0;
        for parent in &entry.entry().next {
            match self.stored(group, parent)? {
                None => return Ok(None),
                Some((parent_log, _, _)) if parent_log != entry.log() => {
                    return Ok(Some(ParentCheck::OtherLog(*parent)));
                }
                Some((_, _, parent_time)) => time = time.max(parent_time),
            }
        }
        Ok(Some(ParentCheck::Ours { time }))
    }

    /// The origin a pending entry arrived with: from this batch, or from its row. An
    /// unreadable row says nothing about the entry itself, which is applied as unknown.
    fn pending_origin(&self, group: &Group, log: &LogId, hash: &EntryHash) -> Origin {
        if let Some(origin) = group.pending_origins.get(hash) {
            return *origin;
        }
        let Some(no) = self.state(group, log).map(|s| s.no) else { return Origin::Unknown };
        match self.shared.ks.origins.get(origins::pending_key(no, hash)) {
            Ok(Some(v)) => origins::parse_pending(&v).unwrap_or(Origin::Unknown),
            Ok(None) => Origin::Unknown,
            Err(e) => {
                tracing::warn!(entry = %hash, error = %e, "cannot read a pending entry's origin");
                Origin::Unknown
            }
        }
    }

    /// Takes an entry out of pending, in the batch and in the staged count.
    fn unpark(&self, group: &mut Group, log: &LogId, hash: &EntryHash) {
        group.pending_added.remove(hash);
        group.pending_removed.insert(*hash);
        group.pending_origins.remove(hash);
        if let Some(state) = stage(&self.logs, &mut group.staged, log) {
            state.pending = state.pending.saturating_sub(1);
            group.batch.remove(&self.shared.ks.pending, keys::entry_key(state.no, hash).to_vec());
            group.batch.remove(&self.shared.ks.origins, origins::pending_key(state.no, hash).to_vec());
        }
    }

    /// Stages everything one entry changes: the entry, its seq, heads, counters, view.
    /// The caller has checked parents, ACL, op types and clock.
    fn apply(&self, group: &mut Group, entry: &VerifiedEntry, origin: Origin) -> u64 {
        let log = entry.log();
        let hash = entry.hash();
        let time = entry.clock().time;
        let op_count = entry.entry().ops.len() as u64;
        if cfg!(debug_assertions) {
            for parent in &entry.entry().next {
                let found = self.stored(group, parent).ok().flatten();
                assert!(
                    matches!(found, Some((l, _, t)) if l == log && t < time),
                    "entry {hash} applied before its parent {parent} is stored in its log with a smaller time"
                );
            }
        }
        let durable_next = self.logs.get(&log).map_or(1, |s| s.next_seq);
        let state = stage(&self.logs, &mut group.staged, &log).expect("apply is only called for hosted logs");
        let seq = state.next_seq;
        let no = state.no;
        // Every stored op has a time of at most the highest head's (times grow along
        // parent links), and the total order compares time first: an entry past that
        // wins against everything stored. Its ops still read the registers (what they
        // replace goes to the history), but none of them can lose.
        let newest = time > state.time_max();
        let applied = group.applied.entry(log).or_default();
        debug_assert_eq!(seq, durable_next + applied.entries, "seq must be the last seq plus one");
        applied.entries += 1;
        applied.ops += op_count;
        state.next_seq += 1;
        state.ops += op_count;
        state.digest.add(&hash);
        match &mut state.origin_run {
            Some(run) if run.last + 1 == seq && run.origin == origin => run.last = seq,
            run => {
                debug_assert!(run.is_none_or(|r| r.last < seq), "origin runs must follow the seqs");
                if let Some(closed) = run.replace(OriginRun { first: seq, last: seq, origin }) {
                    group.origin_rows.push((no, closed));
                }
            }
        }
        let replaced: Vec<EntryHash> =
            entry.entry().next.iter().filter(|p| state.heads.remove(p).is_some()).copied().collect();
        state.heads.insert(hash, time);
        let ks = &self.shared.ks;
        for parent in &replaced {
            group.batch.remove(&ks.heads, keys::entry_key(no, parent).to_vec());
        }
        group.batch.insert(&ks.entries, hash.0, entry.bytes().to_vec());
        group.batch.insert(&ks.seq, keys::seq_key(no, seq), hash.0);
        group.batch.insert(&ks.by_hash, hash.0, keys::location(&log, seq, time));
        group.batch.insert(&ks.heads, keys::entry_key(no, &hash), time.to_be_bytes());
        group.entries.insert(hash, (log, seq, time));
        group.provenance.push((log, seq, group.source));
        group.entries_stored += 1;
        group.ops_stored += op_count;
        for (id, op) in entry.op_ids() {
            let loser = match op {
                Op::Append { value } => {
                    group.batch.insert(&ks.feed, keys::feed_key(no, &id), value.clone());
                    continue;
                }
                Op::Put { key, value } => self.merge_register(group, ViewRow::kv(no, key), &id, Some(value)),
                Op::Delete { key } => self.merge_register(group, ViewRow::kv(no, key), &id, None),
                Op::Link { src, label, dst, props } => {
                    self.merge_register(group, ViewRow::edge(no, src, label, dst), &id, Some(props))
                }
                Op::Unlink { src, label, dst } => {
                    self.merge_register(group, ViewRow::edge(no, src, label, dst), &id, None)
                }
            };
            debug_assert!(!(newest && matches!(loser, Loser::This)), "an op of the newest entry must win");
            // History keeps every op of a key or edge but the one its view row holds: the
            // op that lost, which is this one or the winner it replaced.
            let rows = match loser {
                Loser::None => continue,
                Loser::This => keys::version_rows(no, seq, &id, op),
                Loser::Replaced(old, payload) => {
                    let Some(old_seq) = self.seq_of(group, &old.entry) else { continue };
                    keys::version_rows(no, old_seq, &old, &keys::register_op(op, payload))
                }
            };
            for (key, value) in rows {
                debug_assert!(
                    keys::parse_version_key(&key).is_some()
                        && keys::parse_version_value(&value).is_some_and(|(at, _)| at <= seq),
                    "a versions row parses back and names a stored seq"
                );
                group.batch.insert(&ks.versions, key, value);
            }
        }
        seq
    }

    /// Last-writer-wins: writes the register if `id` is greater than the op it holds, and
    /// says which op lost. The current row is always read (from the group's writes, else
    /// the view): when the new op wins, the one it replaces goes to the history.
    fn merge_register(&self, group: &mut Group, row: ViewRow, id: &OpId, payload: Option<&[u8]>) -> Loser {
        let ViewRow { keyspace, key, mirror } = row;
        let row = (keyspace, key);
        let ks = &self.shared.ks;
        let target = if keyspace == "kv" { &ks.kv } else { &ks.graph_out };
        let stored;
        let no = LogNo::parse(&row.1[..keys::NO]).expect("a view key starts with its log number");
        let slot = self.filters.borrow().slot(keyspace, &row.1);
        let current = match group.rows.get(&row) {
            Some(w) => Some(w.value.as_slice()),
            // A row the log never had: nothing to read.
            None if self.filters.borrow().surely_absent(no, slot) => {
                debug_assert!(
                    target.get(&row.1).is_ok_and(|v| v.is_none()),
                    "the row filter called a stored row absent"
                );
                None
            }
            None => match target.get(&row.1) {
                Ok(v) => {
                    stored = v;
                    stored.as_deref()
                }
                Err(e) => {
                    // A failed read here means the engine is failing; refusing to guess
                    // keeps the view exact, and the commit will fail and poison.
                    tracing::error!(error = %e, "cannot read a view row");
                    self.shared.poison();
                    return Loser::None;
                }
            },
        };
        // The payload is copied only when it goes to the history.
        let loser = match current.and_then(keys::parse_register) {
            Some(current) if current.id >= *id => return Loser::This,
            Some(current) => Loser::Replaced(current.id, current.payload.map(<[u8]>::to_vec)),
            None => Loser::None,
        };
        self.filters.borrow_mut().insert(no, slot);
        group.rows.insert(row, RowWrite { value: keys::register_value(id, payload), mirror });
        loser
    }

    /// The seq of a stored entry: from this group, else from its `by_hash` row. A view row
    /// always names a stored entry; a failure to read it poisons the store.
    fn seq_of(&self, group: &mut Group, entry: &EntryHash) -> Option<u64> {
        if let Some((_, seq, _)) = group.entries.get(entry) {
            return Some(*seq);
        }
        if let Some(seq) = group.seqs_read.get(entry) {
            return Some(*seq);
        }
        let seq = match self.shared.ks.by_hash.get(entry.0) {
            Ok(Some(v)) => keys::parse_location(&v).map(|l| l.seq),
            Ok(None) | Err(_) => None,
        };
        match seq {
            Some(seq) => {
                group.seqs_read.insert(*entry, seq);
                Some(seq)
            }
            None => {
                tracing::error!(%entry, "the entry of a view's op is not stored or not readable");
                self.shared.poison();
                None
            }
        }
    }
}

/// Which op a register merge left out of the view.
enum Loser {
    /// None: the key or edge had no op before.
    None,
    /// The new op: the view holds a greater one.
    This,
    /// The op the view held, with its payload: the new op replaced it.
    Replaced(OpId, Option<Vec<u8>>),
}

/// What the parents of a completed pending entry say about it.
enum ParentCheck {
    /// All in its log; the highest parent time.
    Ours { time: u64 },
    /// One parent is stored, but in another log: the entry can never be stored.
    OtherLog(EntryHash),
}

/// An entry's clock must pass its parents' and may run ahead of the log's highest time
/// by at most `CLOCK_LEAD_MAX`, so no writer can exhaust a log's clock for everyone.
fn check_clock(state: &LogState, entry: &VerifiedEntry, parents_time: u64) -> StoreResult<()> {
    let (hash, time) = (entry.hash(), entry.clock().time);
    if time <= parents_time {
        return Err(StoreError::Invalid(format!(
            "entry {hash} has clock time {time} but a parent has {parents_time}; a child's time must be greater"
        )));
    }
    let highest = state.time_max().max(parents_time);
    if time.saturating_sub(highest) > CLOCK_LEAD_MAX {
        return Err(StoreError::Invalid(format!(
            "entry {hash} has clock time {time}, more than {CLOCK_LEAD_MAX} beyond the log's highest time {highest}; a writer's time is one past its parents'"
        )));
    }
    Ok(())
}

/// Splits a log's local ops into entries: a new entry starts when the current one holds
/// `OPS_PER_ENTRY_MAX` ops or the next op's encoding would not fit in it.
fn split_local(ops: Vec<LocalOp>) -> Vec<Vec<LocalOp>> {
    let mut chunks = Vec::new();
    let mut chunk: Vec<LocalOp> = Vec::new();
    let mut bytes = 0;
    for op in ops {
        let len = op.op.encoded_len();
        debug_assert!(len <= LOCAL_ENTRY_OP_BYTES_MAX, "a valid op always fits in an entry of its own");
        if !chunk.is_empty() && (chunk.len() == OPS_PER_ENTRY_MAX || bytes + len > LOCAL_ENTRY_OP_BYTES_MAX) {
            chunks.push(std::mem::take(&mut chunk));
            bytes = 0;
        }
        bytes += len;
        chunk.push(op);
    }
    if !chunk.is_empty() {
        chunks.push(chunk);
    }
    chunks
}

/// Answers every command of a group that will not be committed with `error`.
fn fail_group(group: Group, error: &dyn Fn() -> StoreError) {
    fail_replies(group.replies, group.writes, error);
}

fn fail_replies(replies: Vec<Reply>, writes: Vec<LocalWrite>, error: &dyn Fn() -> StoreError) {
    for reply in replies {
        reply.fail(error);
    }
    for write in writes {
        drop(write.reply.send(Err(error())));
    }
}

fn reject(command: Command, error: &dyn Fn() -> StoreError) {
    match command {
        Command::CreateLog { reply, .. } => drop(reply.send(Err(error()))),
        Command::DropLog { reply, .. } => drop(reply.send(Err(error()))),
        Command::Write { reply, .. } => drop(reply.send(Err(error()))),
        Command::Ingest { reply, .. } => drop(reply.send(Err(error()))),
        Command::SetMembers { reply, .. } => drop(reply.send(Err(error()))),
        Command::Consumer { reply, .. } => drop(reply.send(Err(error()))),
        Command::RestoreLost { reply, .. } => drop(reply.send(Err(error()))),
        Command::Cut { reply, .. } => drop(reply.send(Err(error()))),
        Command::PutCheckpoint { reply, .. } => drop(reply.send(Err(error()))),
        Command::Shutdown => {}
    }
}

#[cfg(test)]
mod tests {
    /// Every batch the store makes carries fjall durability, so the engine fsyncs its
    /// journal before applying the batch to the memtables readers see: nothing a read
    /// serves can be taken back by a crash. Fails when a batch is made without it.
    #[test]
    fn every_batch_is_durable_before_it_is_visible() {
        let dir = std::path::Path::new(env!("CARGO_MANIFEST_DIR")).join("src");
        let mut batches = 0;
        for file in std::fs::read_dir(&dir).unwrap() {
            let path = file.unwrap().path();
            let text = std::fs::read_to_string(&path).unwrap();
            // The code, not its tests (this one names the call it looks for).
            let text = text.split("#[cfg(test)]").next().unwrap();
            for (at, _) in text.match_indices(".batch()") {
                batches += 1;
                let rest = &text[at + ".batch()".len()..];
                assert!(
                    rest.starts_with(".durability(Some(PersistMode::SyncData))")
                        || rest.starts_with(".durability(Some(PersistMode::SyncAll))"),
                    "{}: a batch without durability would be visible before its fsync",
                    path.display()
                );
            }
        }
        assert!(batches >= 3, "the scan found the store's batches");
    }

    /// Two logs with one number would read each other's rows, so opening refuses such a
    /// directory, naming both, rather than serve mixed views.
    #[tokio::test]
    async fn two_logs_with_one_number_are_refused() {
        use std::sync::Arc;

        use plait_core::WriterKey;
        use rand::SeedableRng;
        use rand::rngs::StdRng;

        use crate::store::Keyspaces;
        use crate::{NoopObserver, Store, StoreConfig, StoreError};

        let dir = tempfile::tempdir().unwrap();
        let key = WriterKey::from_secret([3; 32]);
        let open = || {
            Store::open(
                StoreConfig::new(dir.path(), key.clone()).without_disk_floor(),
                &mut StdRng::seed_from_u64(1),
                Arc::new(NoopObserver),
            )
        };
        let store = open().unwrap();
        let mut ids = Vec::new();
        for name in ["a", "b"] {
            let manifest = crate::test_support::kv_manifest(name, &key);
            ids.push(store.create_log(manifest).await.unwrap().0.log_id);
        }
        store.close().await.unwrap();
        drop(store);
        assert!(open().unwrap().check_integrity().unwrap().is_clean());
        {
            let db = fjall::Database::builder(dir.path()).open().unwrap();
            let ks = Keyspaces::open(&db).unwrap();
            let a = ks.log_nos.get(ids[0].0).unwrap().unwrap();
            ks.log_nos.insert(ids[1].0, a).unwrap();
            db.persist(fjall::PersistMode::SyncAll).unwrap();
        }
        match open() {
            Err(StoreError::Corrupt(message)) => {
                assert!(message.contains("both have log number"), "{message}");
                assert!(message.contains(&ids[0].to_string()) && message.contains(&ids[1].to_string()));
            }
            Err(e) => panic!("refused for another reason: {e}"),
            Ok(_) => panic!("a directory with two logs on one number opened"),
        }
    }

    /// A log whose `counters` row has no digest (written by a replica that did not keep
    /// digests) gets it summed from its entries at open, and stored: the digest is then
    /// the one the writer kept, and the check compares it with the entries.
    #[tokio::test]
    async fn a_digest_missing_from_counters_is_summed_at_open() {
        use std::sync::Arc;

        use plait_core::{Op, SetDigest, WriterKey};
        use rand::SeedableRng;
        use rand::rngs::StdRng;

        use crate::store::Keyspaces;
        use crate::{NoopObserver, Store, StoreConfig};

        let dir = tempfile::tempdir().unwrap();
        let key = WriterKey::from_secret([4; 32]);
        let open = || {
            Store::open(
                StoreConfig::new(dir.path(), key.clone()).without_disk_floor(),
                &mut StdRng::seed_from_u64(1),
                Arc::new(NoopObserver),
            )
            .unwrap()
        };
        let store = open();
        let log = store.create_log(crate::test_support::kv_manifest("a", &key)).await.unwrap().0.log_id;
        for k in [b"x", b"y", b"z"] {
            store.write(vec![(log, Op::Put { key: k.to_vec(), value: b"v".to_vec() })]).await.unwrap();
        }
        let kept = store.log(&log).unwrap().digest;
        let hashes: Vec<_> =
            store.entries_after(&log, 0, 10, usize::MAX).unwrap().iter().map(|e| e.entry.hash()).collect();
        assert_eq!(kept, SetDigest::of(&hashes), "the writer's digest is the set's");
        store.close().await.unwrap();
        drop(store);
        let ops = {
            let db = fjall::Database::builder(dir.path()).open().unwrap();
            let ks = Keyspaces::open(&db).unwrap();
            let row = ks.counters.get(log.0).unwrap().unwrap();
            assert_eq!(row.len(), 40, "op count and digest");
            ks.counters.insert(log.0, row[..8].to_vec()).unwrap();
            db.persist(fjall::PersistMode::SyncAll).unwrap();
            u64::from_be_bytes(row[..8].try_into().unwrap())
        };
        let store = open();
        assert_eq!(store.log(&log).unwrap().digest, kept);
        assert_eq!(store.log(&log).unwrap().ops, ops);
        let report = store.check_integrity().unwrap();
        assert!(report.is_clean(), "{:?}", report.problems);
        store.close().await.unwrap();
        drop(store);
        // A stored digest that disagrees with the entries is what the check reports.
        {
            let db = fjall::Database::builder(dir.path()).open().unwrap();
            let ks = Keyspaces::open(&db).unwrap();
            let mut row = ks.counters.get(log.0).unwrap().unwrap().to_vec();
            row[20] ^= 1;
            ks.counters.insert(log.0, row).unwrap();
            db.persist(fjall::PersistMode::SyncAll).unwrap();
        }
        let report = open().check_integrity().unwrap();
        assert!(report.problems.iter().any(|p| p.contains("digest")), "{:?}", report.problems);
    }
}
