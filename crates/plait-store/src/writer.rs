//! The writer thread: the only code that writes to fjall.
//!
//! It takes every command waiting in the queue (up to a bound), applies them to one
//! `OwnedWriteBatch` with an overlay of what the batch already holds (fjall does not
//! show a batch's writes to reads before commit), commits, fsyncs once, and only then
//! answers. Local writes to the same log within one group share one entry, so signing,
//! hashing and fsync are paid per group rather than per op. A failed commit or fsync
//! poisons the store: nothing more is acknowledged, ever.

use std::collections::{BTreeMap, HashMap, HashSet};
use std::sync::Arc;
use std::time::Instant;

use fjall::{OwnedWriteBatch, PersistMode};
use plait_core::limits::{ENTRY_BYTES_MAX, NEXT_MAX, OPS_PER_ENTRY_MAX};
use plait_core::{EntryDraft, EntryHash, LogId, Op, SignedManifest, VerifiedEntry, WriterKey};
use tokio::sync::{mpsc, oneshot};

use crate::error::{StoreError, StoreResult};
use crate::keys;
use crate::store::{Cursor, IngestSource, LogSummary, Members, RestoreMark, Shared, SubmitOutcome, WriteAck};

/// Most commands folded into one batch.
const GROUP_COMMANDS_MAX: usize = 1024;
/// Most op bytes folded into one batch before it is committed.
const GROUP_BYTES_MAX: usize = 64 * 1024 * 1024;
/// Bytes of ops one locally made entry carries at most, leaving room for the envelope.
const LOCAL_ENTRY_OP_BYTES_MAX: usize = ENTRY_BYTES_MAX - 64 * 1024;

pub(crate) enum Command {
    CreateLog {
        manifest: SignedManifest,
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
    Shutdown,
}

impl Command {
    fn weight(&self) -> usize {
        match self {
            Command::Write { ops, .. } => ops.iter().map(|(_, op)| op.size_hint()).sum(),
            Command::Ingest { entries, .. } => entries.iter().map(|e| e.bytes().len()).sum(),
            _ => 0,
        }
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
}

/// The writer's authoritative state of one log.
struct LogState {
    manifest: SignedManifest,
    /// The seq the next stored entry gets.
    next_seq: u64,
    /// Heads with their clock times.
    heads: BTreeMap<EntryHash, u64>,
    pending: u64,
    ops: u64,
}

impl LogState {
    fn summary(&self) -> LogSummary {
        LogSummary {
            log_id: self.manifest.log_id(),
            manifest: self.manifest.clone(),
            seq: self.next_seq - 1,
            heads: self.heads.len() as u32,
            pending: self.pending,
            ops: self.ops,
        }
    }
}

pub(crate) struct Writer {
    shared: Arc<Shared>,
    key: WriterKey,
    pending_per_log_max: u64,
    logs: HashMap<LogId, LogState>,
}

/// A last-writer-wins register row of a view: which keyspace, its key, and for graph
/// edges the `graph_in` key that mirrors the `graph_out` one.
struct ViewRow {
    keyspace: &'static str,
    key: Vec<u8>,
    mirror: Option<Vec<u8>>,
}

impl ViewRow {
    fn kv(log: &LogId, key: &[u8]) -> ViewRow {
        ViewRow { keyspace: "kv", key: keys::kv_key(log, key), mirror: None }
    }

    fn edge(log: &LogId, src: &[u8], label: &str, dst: &[u8]) -> ViewRow {
        ViewRow {
            keyspace: "graph_out",
            key: keys::edge_key(log, src, label, dst),
            mirror: Some(keys::edge_key(log, dst, label, src)),
        }
    }
}

/// Where an applied entry was made, which decides whether its ops can lose.
#[derive(Clone, Copy, PartialEq, Eq)]
enum Origin {
    /// Signed here just now, on top of every head.
    Local,
    /// Submitted, pulled or completed from pending: may be older than what is stored.
    Elsewhere,
}

/// An answer that waits for the batch to become durable.
enum Reply {
    CreateLog(oneshot::Sender<StoreResult<(LogSummary, bool)>>, LogId, bool),
    Write(oneshot::Sender<StoreResult<Vec<WriteAck>>>, Vec<(LogId, usize)>),
    Ingest(oneshot::Sender<StoreResult<Vec<StoreResult<SubmitOutcome>>>>, Vec<StoreResult<SubmitOutcome>>),
    Done(oneshot::Sender<StoreResult<()>>),
}

impl Reply {
    fn fail(self, error: impl Fn() -> StoreError) {
        match self {
            Reply::CreateLog(tx, ..) => drop(tx.send(Err(error()))),
            Reply::Write(tx, _) => drop(tx.send(Err(error()))),
            Reply::Ingest(tx, _) => drop(tx.send(Err(error()))),
            Reply::Done(tx) => drop(tx.send(Err(error()))),
        }
    }
}

/// One group's batch and what it already holds.
struct Group {
    batch: OwnedWriteBatch,
    replies: Vec<Reply>,
    /// Entries stored in this batch: hash → (log, seq, time).
    entries: HashMap<EntryHash, (LogId, u64, u64)>,
    /// View rows written in this batch, by keyspace name and key.
    rows: HashMap<(&'static str, Vec<u8>), Vec<u8>>,
    /// Pending entries added and removed in this batch.
    pending_added: HashMap<EntryHash, VerifiedEntry>,
    pending_removed: HashSet<EntryHash>,
    /// `missing` rows added (parent → children) and removed in this batch.
    missing_added: HashMap<EntryHash, Vec<EntryHash>>,
    missing_removed: HashSet<[u8; 64]>,
    /// Local ops waiting to become entries, per log in first-seen order.
    local: Vec<(LogId, Vec<Op>)>,
    /// Acks of local ops, per log and position, filled when the entries are made.
    local_acks: HashMap<LogId, Vec<WriteAck>>,
    changed: HashSet<LogId>,
    /// A member list set in this batch, so two updates in one batch compare correctly.
    members: Option<Members>,
    entries_stored: u64,
    ops_stored: u64,
}

impl Writer {
    /// Loads every log's state: seq by a reverse seek on its seq prefix, heads and
    /// pending by prefix scans (both bounded), counters by a point read.
    pub(crate) fn recover(
        shared: Arc<Shared>,
        key: WriterKey,
        pending_per_log_max: u64,
    ) -> StoreResult<Writer> {
        let ks = &shared.ks;
        let mut logs = HashMap::new();
        for row in ks.logs.iter() {
            let (id, bytes) = row.into_inner()?;
            let manifest = SignedManifest::decode_and_verify(&bytes)
                .map_err(|e| StoreError::Corrupt(format!("stored manifest does not verify: {e}")))?;
            let log = manifest.log_id();
            if log.0.as_slice() != id.as_ref() {
                return Err(StoreError::Corrupt(format!("manifest of log {log} stored under another id")));
            }
            let last_seq = match ks.seq.prefix(log.0).next_back() {
                Some(row) => {
                    let k = row.key()?;
                    keys::u64_at(&k, keys::LOG).ok_or_else(|| StoreError::Corrupt("short seq key".into()))?
                }
                None => 0,
            };
            let mut heads = BTreeMap::new();
            for row in ks.heads.prefix(log.0) {
                let (k, v) = row.into_inner()?;
                let hash = EntryHash::from_slice(&k[keys::LOG..])
                    .ok_or_else(|| StoreError::Corrupt("short heads key".into()))?;
                heads.insert(
                    hash,
                    keys::u64_at(&v, 0).ok_or_else(|| StoreError::Corrupt("short heads value".into()))?,
                );
            }
            let pending = ks.pending.prefix(log.0).count() as u64;
            let ops = ks.counters.get(log.0)?.and_then(|v| keys::u64_at(&v, 0)).unwrap_or(0);
            let state = LogState { manifest, next_seq: last_seq + 1, heads, pending, ops };
            shared.publish(state.summary());
            logs.insert(log, state);
        }
        Ok(Writer { shared, key, pending_per_log_max, logs })
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

    /// Returns false when the writer must stop (shutdown or poison).
    fn run_group(&mut self, commands: Vec<Command>) -> bool {
        let mut group = self.new_group();
        let mut keep_running = true;
        for command in commands {
            if !keep_running || self.poisoned() {
                reject(command, &StoreError::poisoned);
                continue;
            }
            match command {
                Command::CreateLog { manifest, reply } => match self.create_log(&mut group, manifest) {
                    Ok((log, created)) => group.replies.push(Reply::CreateLog(reply, log, created)),
                    Err(e) => drop(reply.send(Err(e))),
                },
                Command::Write { ops, reply } => match self.stage_local(&mut group, ops) {
                    Ok(positions) => group.replies.push(Reply::Write(reply, positions)),
                    Err(e) => drop(reply.send(Err(e))),
                },
                Command::Ingest { entries, source, cursor, restore, reply } => {
                    let outcomes = entries.into_iter().map(|e| self.ingest_one(&mut group, e)).collect();
                    let _ = source;
                    if let Some(m) = restore {
                        group.batch.insert(
                            &self.shared.ks.restores,
                            m.log.0,
                            keys::cursor_value(&m.epoch, m.seq).to_vec(),
                        );
                    }
                    if let Some(c) = cursor {
                        group.batch.insert(
                            &self.shared.ks.peers,
                            keys::peer_log(&c.peer, &c.log).to_vec(),
                            keys::cursor_value(&c.epoch, c.seq).to_vec(),
                        );
                    }
                    group.replies.push(Reply::Ingest(reply, outcomes));
                }
                Command::SetMembers { members, reply } => match self.set_members(&mut group, members) {
                    Ok(()) => group.replies.push(Reply::Done(reply)),
                    Err(e) => drop(reply.send(Err(e))),
                },
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
                    let key = keys::log_seq(&checkpoint.log, checkpoint.seq);
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
            batch: self.shared.db.batch(),
            replies: Vec::new(),
            entries: HashMap::new(),
            rows: HashMap::new(),
            pending_added: HashMap::new(),
            pending_removed: HashSet::new(),
            missing_added: HashMap::new(),
            missing_removed: HashSet::new(),
            local: Vec::new(),
            local_acks: HashMap::new(),
            changed: HashSet::new(),
            members: None,
            entries_stored: 0,
            ops_stored: 0,
        }
    }

    /// Makes the group's local entries, commits, fsyncs, and answers. Returns false if
    /// the store is now poisoned.
    fn commit(&mut self, mut group: Group) -> bool {
        if let Err(e) = self.make_local_entries(&mut group) {
            // Signing our own validated ops cannot fail; if it does, refuse the writes.
            tracing::error!(error = %e, "could not make local entries");
            for reply in group.replies.drain(..) {
                if let Reply::Write(tx, _) = reply {
                    drop(tx.send(Err(StoreError::Invalid(e.to_string()))));
                }
            }
            return true;
        }
        for log in &group.changed {
            if let Some(state) = self.logs.get(log) {
                group.batch.insert(&self.shared.ks.counters, log.0, state.ops.to_be_bytes().to_vec());
            }
        }
        if self.poisoned() {
            for reply in group.replies {
                reply.fail(StoreError::poisoned);
            }
            return false;
        }
        let started = Instant::now();
        let durable = if group.batch.is_empty() {
            Ok(())
        } else {
            let span = tracing::debug_span!("commit", entries = group.entries_stored, ops = group.ops_stored);
            let _enter = span.enter();
            group.batch.commit().and_then(|()| self.shared.db.persist(PersistMode::SyncData))
        };
        if let Err(e) = durable {
            tracing::error!(error = %e, "write to disk failed; the store is poisoned and acknowledges nothing more");
            self.shared.poison();
            for reply in group.replies {
                reply.fail(StoreError::poisoned);
            }
            return false;
        }
        if group.entries_stored > 0 {
            self.shared.observer.batch_committed(group.entries_stored, group.ops_stored, started.elapsed());
        }
        for log in &group.changed {
            if let Some(state) = self.logs.get(log) {
                self.shared.publish(state.summary());
            }
        }
        if !group.changed.is_empty() {
            self.shared.observer.pending_changed(self.logs.values().map(|s| s.pending).sum());
        }
        for reply in group.replies {
            match reply {
                Reply::CreateLog(tx, log, created) => {
                    let summary = self.logs[&log].summary();
                    if created {
                        self.shared.publish(summary.clone());
                    }
                    drop(tx.send(Ok((summary, created))));
                }
                Reply::Write(tx, positions) => {
                    let acks =
                        positions.iter().map(|(log, pos)| group.local_acks[log][*pos].clone()).collect();
                    drop(tx.send(Ok(acks)));
                }
                Reply::Ingest(tx, outcomes) => drop(tx.send(Ok(outcomes))),
                Reply::Done(tx) => drop(tx.send(Ok(()))),
            }
        }
        true
    }

    fn create_log(&mut self, group: &mut Group, manifest: SignedManifest) -> StoreResult<(LogId, bool)> {
        let log = manifest.log_id();
        if self.logs.contains_key(&log) {
            return Ok((log, false));
        }
        let name = &manifest.manifest().name;
        if let Some(other) = self.logs.values().find(|s| &s.manifest.manifest().name == name) {
            return Err(StoreError::AlreadyExists(format!(
                "a different log named {name:?} exists on this replica ({}); choose another name",
                other.manifest.log_id()
            )));
        }
        let ks = &self.shared.ks;
        group.batch.insert(&ks.logs, log.0, manifest.bytes().to_vec());
        group.batch.insert(&ks.names, name.as_bytes().to_vec(), log.0.to_vec());
        group.batch.insert(&ks.counters, log.0, 0u64.to_be_bytes().to_vec());
        self.logs.insert(log, LogState { manifest, next_seq: 1, heads: BTreeMap::new(), pending: 0, ops: 0 });
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
        })
    }

    fn set_members(&mut self, group: &mut Group, members: Members) -> StoreResult<()> {
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

    fn drop_log(&mut self, log: LogId) -> StoreResult<()> {
        let Some(state) = self.logs.get(&log) else {
            return Err(StoreError::NotFound(format!("no log {log} on this replica")));
        };
        let ks = &self.shared.ks;
        let mut batch = self.shared.db.batch();
        for row in ks.seq.prefix(log.0) {
            let (k, hash) = row.into_inner()?;
            batch.remove(&ks.seq, k);
            batch.remove(&ks.entries, hash.clone());
            batch.remove(&ks.by_hash, hash);
        }
        for row in ks.pending.prefix(log.0) {
            let (k, v) = row.into_inner()?;
            let hash = EntryHash::from_slice(&k[keys::LOG..])
                .ok_or_else(|| StoreError::Corrupt("short pending key".into()))?;
            if let Ok(entry) = plait_core::DecodedEntry::decode(&v) {
                for parent in &entry.entry().next {
                    batch.remove(&ks.missing, keys::hash_hash(parent, &hash).to_vec());
                }
            }
            batch.remove(&ks.pending, k);
        }
        for keyspace in [&ks.heads, &ks.kv, &ks.feed, &ks.graph_out, &ks.graph_in] {
            for row in keyspace.prefix(log.0) {
                batch.remove(keyspace, row.key()?);
            }
        }
        for row in ks.peers.iter() {
            let k = row.key()?;
            if k.get(32..) == Some(log.0.as_slice()) {
                batch.remove(&ks.peers, k);
            }
        }
        batch.remove(&ks.logs, log.0);
        batch.remove(&ks.counters, log.0);
        batch.remove(&ks.names, state.manifest.manifest().name.as_bytes().to_vec());
        if let Err(e) = batch.commit().and_then(|()| self.shared.db.persist(PersistMode::SyncData)) {
            self.shared.poison();
            tracing::error!(error = %e, "write to disk failed while dropping a log; the store is poisoned");
            return Err(StoreError::poisoned());
        }
        self.logs.remove(&log);
        self.shared.forget(&log);
        Ok(())
    }

    /// Validates a local write as a whole and queues its ops; returns each op's place.
    fn stage_local(&mut self, group: &mut Group, ops: Vec<(LogId, Op)>) -> StoreResult<Vec<(LogId, usize)>> {
        let writer = self.key.public();
        for (log, op) in &ops {
            let state = self
                .logs
                .get(log)
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
        let mut positions = Vec::with_capacity(ops.len());
        for (log, op) in ops {
            let slot = match group.local.iter().position(|(l, _)| *l == log) {
                Some(i) => i,
                None => {
                    group.local.push((log, Vec::new()));
                    group.local.len() - 1
                }
            };
            positions.push((log, group.local[slot].1.len()));
            group.local[slot].1.push(op);
        }
        Ok(positions)
    }

    fn make_local_entries(&mut self, group: &mut Group) -> Result<(), plait_core::DecodeError> {
        for (log, ops) in std::mem::take(&mut group.local) {
            let mut acks = Vec::with_capacity(ops.len());
            let mut chunk: Vec<Op> = Vec::new();
            let mut chunk_bytes = 0;
            let total = ops.len();
            for (i, op) in ops.into_iter().enumerate() {
                chunk_bytes += op.size_hint();
                chunk.push(op);
                let full = chunk.len() == OPS_PER_ENTRY_MAX || chunk_bytes >= LOCAL_ENTRY_OP_BYTES_MAX;
                if full || i + 1 == total {
                    let entry = self.sign_local(log, std::mem::take(&mut chunk))?;
                    chunk_bytes = 0;
                    let seq = self.apply(group, &entry, Origin::Local);
                    for (index, _) in entry.entry().ops.iter().enumerate() {
                        acks.push(WriteAck {
                            log,
                            hash: entry.hash(),
                            seq,
                            index: index as u32,
                            clock: entry.clock(),
                        });
                    }
                    self.resolve_children(group, entry.hash());
                }
            }
            group.local_acks.insert(log, acks);
        }
        Ok(())
    }

    fn sign_local(&self, log: LogId, ops: Vec<Op>) -> Result<VerifiedEntry, plait_core::DecodeError> {
        let state = &self.logs[&log];
        let time = 1 + state.heads.values().copied().max().unwrap_or(0);
        // Name every head we know, up to the format's limit; any left over stay heads and
        // are merged by a later entry.
        let next = state.heads.keys().take(NEXT_MAX).copied().collect();
        EntryDraft { log, time, next, refs: Vec::new(), ops }.sign(&self.key)
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

    fn is_pending(&self, group: &Group, log: &LogId, hash: &EntryHash) -> StoreResult<bool> {
        if group.pending_added.contains_key(hash) {
            return Ok(true);
        }
        if group.pending_removed.contains(hash) {
            return Ok(false);
        }
        Ok(self.shared.ks.pending.contains_key(keys::log_hash(log, hash))?)
    }

    fn ingest_one(&mut self, group: &mut Group, entry: VerifiedEntry) -> StoreResult<SubmitOutcome> {
        let log = entry.log();
        let hash = entry.hash();
        let Some(state) = self.logs.get(&log) else {
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
        if self.is_pending(group, &log, &hash)? {
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
            let ks = &self.shared.ks;
            group.batch.insert(&ks.pending, keys::log_hash(&log, &hash).to_vec(), entry.bytes().to_vec());
            for parent in &missing {
                group.batch.insert(&ks.missing, keys::hash_hash(parent, &hash).to_vec(), log.0.to_vec());
                group.missing_added.entry(*parent).or_default().push(hash);
            }
            group.pending_removed.remove(&hash);
            group.pending_added.insert(hash, entry);
            self.logs.get_mut(&log).expect("checked above").pending += 1;
            group.changed.insert(log);
            return Ok(SubmitOutcome::Pending);
        }
        if entry.clock().time <= parents_time {
            return Err(StoreError::Invalid(format!(
                "entry {hash} has clock time {} but a parent has {parents_time}; a child's time must be greater",
                entry.clock().time
            )));
        }
        let seq = self.apply(group, &entry, Origin::Elsewhere);
        self.resolve_children(group, hash);
        Ok(SubmitOutcome::Stored { seq })
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
        match self.shared.ks.pending.get(keys::log_hash(log, hash))? {
            Some(bytes) => VerifiedEntry::reverify(&bytes, *hash)
                .map(Some)
                .map_err(|e| StoreError::Corrupt(format!("pending entry {hash} does not verify: {e}"))),
            None => Ok(None),
        }
    }

    /// Applies every pending entry that `parent` completes, transitively.
    fn resolve_children(&mut self, group: &mut Group, parent: EntryHash) {
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
                let mut complete = true;
                let mut parents_time = 0;
                for p in &entry.entry().next {
                    match self.stored(group, p) {
                        Ok(Some((_, _, time))) => parents_time = parents_time.max(time),
                        _ => complete = false,
                    }
                }
                if !complete {
                    continue;
                }
                group.batch.remove(&self.shared.ks.pending, keys::log_hash(&log, &child).to_vec());
                group.pending_added.remove(&child);
                group.pending_removed.insert(child);
                if let Some(state) = self.logs.get_mut(&log) {
                    state.pending = state.pending.saturating_sub(1);
                }
                group.changed.insert(log);
                if entry.clock().time <= parents_time {
                    tracing::warn!(entry = %child, "dropping a pending entry whose clock does not exceed its parents'");
                    continue;
                }
                self.apply(group, &entry, Origin::Elsewhere);
                ready.push(child);
            }
        }
    }

    /// Stages everything one entry changes: the entry, its seq, heads, counters, view.
    /// The caller has checked parents, ACL, op types and clock.
    fn apply(&mut self, group: &mut Group, entry: &VerifiedEntry, origin: Origin) -> u64 {
        let ks = &self.shared.ks;
        let log = entry.log();
        let hash = entry.hash();
        let time = entry.clock().time;
        let state = self.logs.get_mut(&log).expect("apply is only called for hosted logs");
        let seq = state.next_seq;
        state.next_seq += 1;
        state.ops += entry.entry().ops.len() as u64;
        group.batch.insert(&ks.entries, hash.0, entry.bytes().to_vec());
        group.batch.insert(&ks.seq, keys::log_seq(&log, seq), hash.0);
        group.batch.insert(&ks.by_hash, hash.0, keys::location(&log, seq, time));
        for parent in &entry.entry().next {
            if state.heads.remove(parent).is_some() {
                group.batch.remove(&ks.heads, keys::log_hash(&log, parent).to_vec());
            }
        }
        state.heads.insert(hash, time);
        group.batch.insert(&ks.heads, keys::log_hash(&log, &hash), time.to_be_bytes());
        group.entries.insert(hash, (log, seq, time));
        group.changed.insert(log);
        group.entries_stored += 1;
        group.ops_stored += entry.entry().ops.len() as u64;
        for (id, op) in entry.op_ids() {
            match op {
                Op::Append { value } => {
                    group.batch.insert(&ks.feed, keys::feed_key(&log, &id), value.clone())
                }
                Op::Put { key, value } => {
                    self.merge_register(group, origin, ViewRow::kv(&log, key), &id, Some(value))
                }
                Op::Delete { key } => self.merge_register(group, origin, ViewRow::kv(&log, key), &id, None),
                Op::Link { src, label, dst, props } => {
                    self.merge_register(group, origin, ViewRow::edge(&log, src, label, dst), &id, Some(props))
                }
                Op::Unlink { src, label, dst } => {
                    self.merge_register(group, origin, ViewRow::edge(&log, src, label, dst), &id, None)
                }
            }
        }
        seq
    }

    /// Last-writer-wins: writes the register only if `id` is greater than the stored op's.
    /// For graph edges `mirror` is the `graph_in` key, written with the same value.
    fn merge_register(
        &self,
        group: &mut Group,
        origin: Origin,
        row: ViewRow,
        id: &plait_core::OpId,
        payload: Option<&[u8]>,
    ) {
        let ViewRow { keyspace, key, mirror } = row;
        let ks = &self.shared.ks;
        let target = if keyspace == "kv" { &ks.kv } else { &ks.graph_out };
        let row = (keyspace, key);
        let current = match (origin, group.rows.get(&row)) {
            // A local entry's time is one past every head's, so it is greater than every
            // op stored so far, and within the entry later ops come later: it always
            // wins, and reading the stored register first would be wasted work.
            (Origin::Local, _) => None,
            (_, Some(v)) => Some(v.clone()),
            (_, None) => match target.get(&row.1) {
                Ok(v) => v.map(|v| v.to_vec()),
                Err(e) => {
                    // A failed read here means the engine is failing; refusing to guess
                    // keeps the view exact, and the commit will fail and poison.
                    tracing::error!(error = %e, "cannot read a view row");
                    self.shared.poison();
                    return;
                }
            },
        };
        if let Some(current) = current.as_deref().and_then(keys::parse_register)
            && current.id >= *id
        {
            return;
        }
        let value = keys::register_value(id, payload);
        group.batch.insert(target, row.1.clone(), value.clone());
        if let Some(mirror) = mirror {
            group.batch.insert(&ks.graph_in, mirror, value.clone());
        }
        group.rows.insert(row, value);
    }
}

fn reject(command: Command, error: &dyn Fn() -> StoreError) {
    match command {
        Command::CreateLog { reply, .. } => drop(reply.send(Err(error()))),
        Command::DropLog { reply, .. } => drop(reply.send(Err(error()))),
        Command::Write { reply, .. } => drop(reply.send(Err(error()))),
        Command::Ingest { reply, .. } => drop(reply.send(Err(error()))),
        Command::SetMembers { reply, .. } => drop(reply.send(Err(error()))),
        Command::Cut { reply, .. } => drop(reply.send(Err(error()))),
        Command::PutCheckpoint { reply, .. } => drop(reply.send(Err(error()))),
        Command::Shutdown => {}
    }
}
