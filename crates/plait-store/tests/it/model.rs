//! A model-based test of the writer against a real fjall database.
//!
//! Random steps, each a batch of commands sent together so the writer folds them into
//! one or a few groups: valid local writes (some large enough to need several entries),
//! invalid ones (wrong op type, over the bounds, a log that does not exist, a log whose
//! ACL leaves this replica out), ingests of entries signed elsewhere (parents missing,
//! duplicates, clocks that do not advance, clocks far ahead), creates and drops, and
//! injected commit failures. After every step each command got the answer the model
//! predicts, the store's summaries, heads, pending counts and views equal the model's,
//! and the integrity check is clean; after a failed commit the store is poisoned and its
//! in-memory state still equals the model (memory never ran ahead of the disk); after a
//! reopen all of it holds again.

use std::collections::{BTreeSet, HashMap};
use std::future::Future;
use std::path::Path;
use std::pin::Pin;
use std::sync::Arc;
use std::sync::atomic::{AtomicBool, Ordering};
use std::task::Poll;

use plait_core::limits::{CLOCK_LEAD_MAX, VALUE_BYTES_MAX};
use plait_core::{
    EntryDraft, EntryHash, IngestOutcome, LogType, LogView, Manifest, MemoryLog, Op, SignedManifest,
    VerifiedEntry, WriterKey, Writers,
};
use plait_store::{
    Direction, FaultInjector, IngestSource, NoopObserver, PageLimit, Store, StoreConfig, StoreError,
    StoreResult, SubmitOutcome, WriteAck,
};
use rand::rngs::StdRng;
use rand::{Rng, SeedableRng};

use crate::support::key;

/// Fails the next commit when armed, the way a failing disk would.
#[derive(Default)]
struct FailNextCommit(AtomicBool);

impl FaultInjector for FailNextCommit {
    fn before_commit(&self) -> StoreResult<()> {
        if self.0.swap(false, Ordering::SeqCst) {
            Err(StoreError::Unavailable("injected commit failure".into()))
        } else {
            Ok(())
        }
    }
}

/// The logs a step can name: three the replica may write to, one it may not.
struct Logs {
    manifests: Vec<SignedManifest>,
}

const READ_ONLY: usize = 3;

impl Logs {
    fn new(replica: &WriterKey, others: &[WriterKey]) -> Logs {
        let all: Vec<_> =
            std::iter::once(replica.public()).chain(others.iter().map(|k| k.public())).collect();
        let make = |name: &str, log_type, writers: Vec<plait_core::PublicKey>| {
            Manifest {
                name: name.into(),
                log_type,
                writers: Writers::keys(writers),
                created_by: others[0].public(),
                created_at_lamport: 0,
                options: vec![],
            }
            .sign(&others[0])
            .unwrap()
        };
        Logs {
            manifests: vec![
                make("kv", LogType::Kv, all.clone()),
                make("feed", LogType::Feed, all.clone()),
                make("graph", LogType::Graph, all),
                make("others-only", LogType::Kv, others.iter().map(|k| k.public()).collect()),
            ],
        }
    }
}

/// One command of a step, with what the model expects of it.
enum Command {
    Create(usize),
    Drop(usize),
    Write(Vec<(usize, Op)>),
    Ingest(Vec<VerifiedEntry>),
}

enum Answer {
    Create(StoreResult<bool>),
    Drop(StoreResult<()>),
    Write(StoreResult<Vec<WriteAck>>),
    Ingest(StoreResult<Vec<StoreResult<SubmitOutcome>>>),
}

/// What a step's commands may fail with, by kind.
#[derive(Debug, PartialEq, Eq, Clone, Copy)]
enum Kind {
    NotFound,
    PermissionDenied,
    Invalid,
}

fn kind(e: &StoreError) -> Option<Kind> {
    match e {
        StoreError::NotFound(_) => Some(Kind::NotFound),
        StoreError::PermissionDenied(_) => Some(Kind::PermissionDenied),
        StoreError::Invalid(_) => Some(Kind::Invalid),
        _ => None,
    }
}

fn valid_op(log_type: LogType, rng: &mut StdRng) -> Op {
    let key = vec![b'a' + rng.gen_range(0..4u8)];
    // Now and then a value large enough that a few of them need more than one entry.
    let len =
        if rng.gen_ratio(1, 12) { rng.gen_range(300_000..VALUE_BYTES_MAX) } else { rng.gen_range(1..8) };
    let value = vec![rng.r#gen::<u8>(); len];
    match (log_type, rng.gen_ratio(1, 4)) {
        (LogType::Kv, false) => Op::Put { key, value },
        (LogType::Kv, true) => Op::Delete { key },
        (LogType::Feed, _) => Op::Append { value },
        (LogType::Graph, false) => {
            Op::Link { src: key, label: "l".into(), dst: vec![b'x' + rng.gen_range(0..2u8)], props: vec![1] }
        }
        (LogType::Graph, true) => {
            Op::Unlink { src: key, label: "l".into(), dst: vec![b'x' + rng.gen_range(0..2u8)] }
        }
    }
}

fn log_type(i: usize) -> LogType {
    [LogType::Kv, LogType::Feed, LogType::Graph, LogType::Kv][i]
}

struct Model {
    logs: Logs,
    others: Vec<WriterKey>,
    /// The model of each hosted log, by index.
    hosted: HashMap<usize, MemoryLog>,
    /// Entries signed elsewhere, per log: every one made so far, sent or not.
    made: HashMap<usize, Vec<VerifiedEntry>>,
    /// Local entries acknowledged in this step, by log and seq. The writer makes local
    /// entries when it commits a group, on top of every entry the group ingested, so the
    /// model takes them after the rest of the group: before a drop (which commits what
    /// came before it) and at the end of the step.
    local: std::collections::BTreeMap<(usize, u64), VerifiedEntry>,
}

impl Model {
    /// An entry signed by one of the other writers on top of some entries made so far.
    /// Its parents may not have been sent (it then waits in pending).
    fn external_entry(&mut self, log: usize, rng: &mut StdRng, bad_clock: bool) -> VerifiedEntry {
        let made = self.made.entry(log).or_default();
        let mut next: Vec<EntryHash> = Vec::new();
        let mut parents_time = 0;
        for _ in 0..rng.gen_range(0..3) {
            if made.is_empty() {
                break;
            }
            let parent = &made[rng.gen_range(0..made.len())];
            next.push(parent.hash());
            parents_time = parents_time.max(parent.clock().time);
        }
        next.sort();
        next.dedup();
        let time = if bad_clock && !next.is_empty() { parents_time } else { parents_time + 1 };
        let ops = (0..rng.gen_range(1..4)).map(|_| valid_op(log_type(log), rng)).collect();
        let writer = &self.others[rng.gen_range(0..self.others.len())];
        let log_id = self.logs.manifests[log].log_id();
        let entry = EntryDraft { log: log_id, time, next, refs: vec![], ops }.sign(writer).unwrap();
        made.push(entry.clone());
        entry
    }

    /// An entry whose clock is beyond what the store lets a log's clock jump, on top of
    /// entries the model holds (so it is not parked in pending).
    fn far_entry(&self, log: usize, rng: &mut StdRng) -> Option<VerifiedEntry> {
        let held = self.hosted.get(&log)?;
        // Well past the bound: the writer may hold a few local entries the model takes
        // only at the end of the step, each one tick later.
        let time = held.max_time() + CLOCK_LEAD_MAX + 1000;
        let next = held.heads().iter().copied().collect();
        let ops = vec![valid_op(log_type(log), rng)];
        Some(
            EntryDraft { log: self.logs.manifests[log].log_id(), time, next, refs: vec![], ops }
                .sign(&self.others[0])
                .unwrap(),
        )
    }

    fn random_command(&mut self, rng: &mut StdRng) -> Command {
        let log = rng.gen_range(0..4);
        match rng.gen_range(0..20) {
            0 | 1 => Command::Create(log),
            2 => Command::Drop(log),
            3..=9 => {
                let ops = (0..rng.gen_range(1..5))
                    .map(|_| {
                        let target = if rng.gen_ratio(3, 4) { log } else { rng.gen_range(0..4) };
                        let op = match rng.gen_range(0..12) {
                            // The wrong type for the log.
                            0 => valid_op(log_type((target + 1) % 3), rng),
                            // Over the value bound.
                            1 => Op::Append { value: vec![0; VALUE_BYTES_MAX + 1] },
                            _ => valid_op(log_type(target), rng),
                        };
                        (target, op)
                    })
                    .collect();
                Command::Write(ops)
            }
            _ => {
                let mut entries = Vec::new();
                for _ in 0..rng.gen_range(1..4) {
                    let entry = match rng.gen_range(0..10) {
                        // A duplicate or a parent that was held back.
                        0 | 1 if !self.made.get(&log).is_none_or(Vec::is_empty) => {
                            let made = &self.made[&log];
                            made[rng.gen_range(0..made.len())].clone()
                        }
                        2 => self.external_entry(log, rng, true),
                        3 => match self.far_entry(log, rng) {
                            Some(e) => e,
                            None => self.external_entry(log, rng, false),
                        },
                        // Made but not sent: its children wait in pending for it.
                        4 => {
                            self.external_entry(log, rng, false);
                            self.external_entry(log, rng, false)
                        }
                        _ => self.external_entry(log, rng, false),
                    };
                    entries.push(entry);
                }
                Command::Ingest(entries)
            }
        }
    }

    /// Checks one answer against the model and moves the model on, in queue order.
    /// `later` are the step's commands after this one.
    fn check_answer(&mut self, store: &Store, command: &Command, later: &[Command], answer: Answer) {
        match (command, answer) {
            (Command::Create(i), Answer::Create(got)) => {
                let created = !self.hosted.contains_key(i);
                assert_eq!(got.unwrap(), created, "create of log {i}");
                self.hosted.entry(*i).or_insert_with(|| MemoryLog::new(self.logs.manifests[*i].clone()));
            }
            (Command::Drop(i), Answer::Drop(got)) => {
                self.take_local();
                match self.hosted.remove(i) {
                    Some(_) => got.unwrap(),
                    None => assert_eq!(kind(&got.unwrap_err()), Some(Kind::NotFound)),
                }
            }
            (Command::Write(ops), Answer::Write(got)) => {
                let expected = ops.iter().find_map(|(i, op)| {
                    if !self.hosted.contains_key(i) {
                        Some(Kind::NotFound)
                    } else if *i == READ_ONLY {
                        Some(Kind::PermissionDenied)
                    } else if op.validate().is_err() || op.check_type(log_type(*i)).is_err() {
                        Some(Kind::Invalid)
                    } else {
                        None
                    }
                });
                match (expected, got) {
                    (None, Ok(acks)) => self.note_local(store, ops, &acks, later),
                    (Some(kind_expected), Err(e)) => assert_eq!(kind(&e), Some(kind_expected), "{e}"),
                    (expected, got) => {
                        panic!("write of {} ops: expected {expected:?}, got {:?}", ops.len(), got.err())
                    }
                }
            }
            (Command::Ingest(entries), Answer::Ingest(got)) => {
                let outcomes = got.unwrap();
                assert_eq!(outcomes.len(), entries.len());
                for (entry, outcome) in entries.iter().zip(outcomes) {
                    let index = self.logs.manifests.iter().position(|m| m.log_id() == entry.log()).unwrap();
                    let Some(model) = self.hosted.get_mut(&index) else {
                        assert_eq!(kind(&outcome.unwrap_err()), Some(Kind::NotFound));
                        continue;
                    };
                    let parents_here = entry.entry().next.iter().all(|p| model.get(p).is_some());
                    if parents_here
                        && model.get(&entry.hash()).is_none()
                        && entry.clock().time > model.max_time() + CLOCK_LEAD_MAX + 500
                    {
                        assert_eq!(kind(&outcome.unwrap_err()), Some(Kind::Invalid), "a clock too far ahead");
                        continue;
                    }
                    match (model.ingest(entry.clone()), outcome) {
                        (IngestOutcome::Stored(_), Ok(SubmitOutcome::Stored { .. }))
                        | (IngestOutcome::Duplicate, Ok(SubmitOutcome::Duplicate { .. }))
                        | (IngestOutcome::Pending, Ok(SubmitOutcome::Pending))
                        | (IngestOutcome::Rejected(_), Err(_)) => {}
                        (want, got) => panic!("ingest of {}: model {want:?}, store {got:?}", entry.hash()),
                    }
                }
            }
            _ => unreachable!("answers follow their commands"),
        }
    }

    /// Notes the entries a successful local write made, after checking that they carry
    /// the written ops in order.
    /// A log dropped later in the step has lost these entries already.
    fn note_local(&mut self, store: &Store, ops: &[(usize, Op)], acks: &[WriteAck], later: &[Command]) {
        assert_eq!(acks.len(), ops.len());
        for ((i, op), ack) in ops.iter().zip(acks) {
            if later.iter().any(|c| matches!(c, Command::Drop(d) if d == i)) {
                continue;
            }
            let entry = store.get_entry(&ack.hash).unwrap().expect("an acknowledged entry is stored").entry;
            assert_eq!(&entry.entry().ops[ack.index as usize], op);
            assert_eq!(entry.log(), self.logs.manifests[*i].log_id());
            self.local.insert((*i, ack.seq), entry);
        }
    }

    /// Feeds the noted local entries to the model, in seq order: each builds on heads the
    /// model holds.
    fn take_local(&mut self) {
        for ((i, _), entry) in std::mem::take(&mut self.local) {
            let model = self.hosted.get_mut(&i).expect("a written log is hosted until it is dropped");
            assert!(
                matches!(model.ingest(entry), IngestOutcome::Stored(_)),
                "a local entry builds on stored heads"
            );
        }
    }

    /// The store holds exactly what the model holds.
    fn check_store(&self, store: &Store) {
        for (i, manifest) in self.logs.manifests.iter().enumerate() {
            let log = manifest.log_id();
            let Some(model) = self.hosted.get(&i) else {
                assert!(store.log(&log).is_none(), "log {i} is dropped in the model");
                continue;
            };
            let summary = store.log(&log).expect("hosted log has a summary");
            assert_eq!(summary.seq as usize, model.len(), "log {i}: seq");
            assert_eq!(summary.pending as usize, model.pending_len(), "log {i}: pending");
            assert_eq!(summary.heads as usize, model.heads().len(), "log {i}: head count");
            let ops: usize = model.in_seq_order().map(|e| e.entry().ops.len()).sum();
            assert_eq!(summary.ops as usize, ops, "log {i}: op counter");
            let heads: BTreeSet<_> = store.heads(&log).unwrap().iter().map(|e| e.entry.hash()).collect();
            assert_eq!(&heads, model.heads(), "log {i}: heads");
            check_view(store, &log, model.view());
        }
        let report = store.check_integrity().unwrap();
        assert!(report.is_clean(), "{:?}", report.problems);
    }
}

fn check_view(store: &Store, log: &plait_core::LogId, view: &LogView) {
    match view {
        LogView::Kv(_) => {
            let (rows, _) = store.scan_kv(log, b"", b"", b"", PageLimit::rows(100)).unwrap();
            let got: Vec<_> = rows.iter().map(|r| (r.key.as_slice(), r.value.as_slice())).collect();
            assert_eq!(got, view.kv_live());
        }
        LogView::Feed(items) => {
            let rows = store.read_feed(log, None, PageLimit::rows(100_000), false).unwrap().items;
            assert_eq!(rows.len(), items.len());
            assert!(rows.iter().zip(items).all(|(r, (id, v))| r.id == *id && &r.value == v));
        }
        LogView::Graph(map) => {
            for node in [b"a", b"b", b"c", b"d"] {
                let got =
                    store.edges(log, node, Direction::Out, None, None, PageLimit::rows(100)).unwrap().edges;
                let want: Vec<_> = map
                    .iter()
                    .filter(|(e, r)| e.src == node && r.value.is_some())
                    .map(|(e, _)| e.dst.clone())
                    .collect();
                assert_eq!(got.iter().map(|r| r.dst.clone()).collect::<Vec<_>>(), want);
            }
        }
    }
}

fn open(path: &Path, key: &WriterKey, faults: Arc<FailNextCommit>) -> Store {
    let mut config = StoreConfig::new(path, key.clone()).without_disk_floor();
    config.faults = Some(faults);
    Store::open(config, &mut StdRng::seed_from_u64(7), Arc::new(NoopObserver)).unwrap()
}

type Pending<'a> = Pin<Box<dyn Future<Output = Answer> + 'a>>;

/// Sends every command of a step before waiting for any answer: polls the calls in
/// order, so they reach the writer's queue in the order the model replays them.
async fn run_step<'a>(store: &'a Store, logs: &Logs, commands: &[Command]) -> Vec<Answer> {
    let mut calls: Vec<Pending<'a>> = commands
        .iter()
        .map(|command| -> Pending<'a> {
            match command {
                Command::Create(i) => {
                    let manifest = logs.manifests[*i].clone();
                    Box::pin(async move { Answer::Create(store.create_log(manifest).await.map(|(_, c)| c)) })
                }
                Command::Drop(i) => {
                    let log = logs.manifests[*i].log_id();
                    Box::pin(async move { Answer::Drop(store.drop_log(log).await) })
                }
                Command::Write(ops) => {
                    let ops = ops.iter().map(|(i, op)| (logs.manifests[*i].log_id(), op.clone())).collect();
                    Box::pin(async move { Answer::Write(store.write(ops).await) })
                }
                Command::Ingest(entries) => {
                    let entries = entries.clone();
                    Box::pin(async move { Answer::Ingest(store.ingest(entries, IngestSource::Sync).await) })
                }
            }
        })
        .collect();
    let mut answers: Vec<Option<Answer>> = (0..calls.len()).map(|_| None).collect();
    std::future::poll_fn(|cx| {
        for (call, answer) in calls.iter_mut().zip(answers.iter_mut()) {
            if answer.is_none()
                && let Poll::Ready(a) = call.as_mut().poll(cx)
            {
                *answer = Some(a);
            }
        }
        if answers.iter().all(Option::is_some) { Poll::Ready(()) } else { Poll::Pending }
    })
    .await;
    answers.into_iter().map(|a| a.unwrap()).collect()
}

fn failed(answer: &Answer) -> bool {
    match answer {
        Answer::Create(r) => r.is_err(),
        Answer::Drop(r) => r.is_err(),
        Answer::Write(r) => r.is_err(),
        Answer::Ingest(r) => r.is_err(),
    }
}

/// Runs `steps` random steps from `seed`; see the module documentation.
fn run_model(seed: u64, steps: usize) {
    let rt = tokio::runtime::Builder::new_current_thread().enable_all().build().unwrap();
    let dir = tempfile::tempdir().unwrap();
    let replica = key(100);
    let others = vec![key(101), key(102)];
    let mut rng = StdRng::seed_from_u64(seed);
    let mut model = Model {
        logs: Logs::new(&replica, &others),
        others,
        hosted: HashMap::new(),
        made: HashMap::new(),
        local: Default::default(),
    };
    let faults = Arc::new(FailNextCommit::default());
    rt.block_on(async {
        let mut store = open(dir.path(), &replica, faults.clone());
        for step in 0..steps {
            let commands: Vec<Command> =
                (0..rng.gen_range(1..8)).map(|_| model.random_command(&mut rng)).collect();
            let inject = rng.gen_ratio(1, 10);
            faults.0.store(inject, Ordering::SeqCst);
            let answers = run_step(&store, &model.logs, &commands).await;
            if inject {
                // The first group failed: the store is poisoned and refuses everything
                // after it, so no command of the step took effect.
                assert!(
                    answers.iter().all(failed),
                    "seed {seed} step {step}: a command passed a failed commit"
                );
                // Commands refused while being staged are answered before their group
                // commits, so the poisoning may come a moment after the last answer.
                let mut poisoned = store.poisoned();
                tokio::time::timeout(std::time::Duration::from_secs(10), poisoned.wait_for(|p| *p))
                    .await
                    .expect("the failed commit poisons the store")
                    .unwrap();
                assert!(!store.is_writable());
                model.check_store(&store);
            } else {
                for (at, answer) in answers.into_iter().enumerate() {
                    model.check_answer(&store, &commands[at], &commands[at + 1..], answer);
                }
                model.take_local();
                model.check_store(&store);
            }
            if inject || rng.gen_ratio(1, 8) {
                store.close().await.unwrap();
                drop(store);
                store = open(dir.path(), &replica, faults.clone());
                model.check_store(&store);
            }
        }
        store.close().await.unwrap();
    });
}

/// The writer equals the model over random steps from several seeds (more with
/// `PLAIT_MODEL_SEEDS=N`, to explore further).
#[test]
fn writer_equals_model() {
    let seeds = std::env::var("PLAIT_MODEL_SEEDS").ok().and_then(|n| n.parse().ok()).unwrap_or(6);
    for seed in 0..seeds {
        run_model(seed, 40);
    }
}

/// A pending entry is checked again when its parent arrives: a parent that turns up in
/// another log leaves the child out of both logs (and out of pending), and the
/// integrity check stays clean.
#[test]
fn a_parent_from_another_log_never_completes_a_pending_entry() {
    let rt = tokio::runtime::Builder::new_current_thread().enable_all().build().unwrap();
    let dir = tempfile::tempdir().unwrap();
    let replica = key(100);
    let other = key(101);
    let logs = Logs::new(&replica, std::slice::from_ref(&other));
    rt.block_on(async {
        let store = open(dir.path(), &replica, Arc::default());
        let kv = logs.manifests[0].clone();
        let feed = logs.manifests[1].clone();
        store.create_log(kv.clone()).await.unwrap();
        store.create_log(feed.clone()).await.unwrap();
        let parent = EntryDraft {
            log: feed.log_id(),
            time: 1,
            next: vec![],
            refs: vec![],
            ops: vec![Op::Append { value: vec![1] }],
        }
        .sign(&other)
        .unwrap();
        let child = EntryDraft {
            log: kv.log_id(),
            time: 2,
            next: vec![parent.hash()],
            refs: vec![],
            ops: vec![Op::Put { key: b"k".to_vec(), value: b"v".to_vec() }],
        }
        .sign(&other)
        .unwrap();
        let first = store.ingest(vec![child.clone()], IngestSource::Sync).await.unwrap();
        assert!(matches!(first[0], Ok(SubmitOutcome::Pending)));
        assert_eq!(store.log(&kv.log_id()).unwrap().pending, 1);
        let second = store.ingest(vec![parent], IngestSource::Sync).await.unwrap();
        assert!(matches!(second[0], Ok(SubmitOutcome::Stored { seq: 1 })));
        let summary = store.log(&kv.log_id()).unwrap();
        assert_eq!((summary.seq, summary.pending), (0, 0), "the child is neither stored nor still pending");
        assert!(store.get_entry(&child.hash()).unwrap().is_none());
        let report = store.check_integrity().unwrap();
        assert!(report.is_clean(), "{:?}", report.problems);
        store.close().await.unwrap();
    });
}

/// The call that once corrupted a log: one write with a small put to one log and three
/// 400 KiB puts to another, within every bound, succeeds as several entries; the next
/// write continues the first log's seq and the integrity check stays clean.
#[test]
fn mixed_write_over_one_entry_splits() {
    let rt = tokio::runtime::Builder::new_current_thread().enable_all().build().unwrap();
    let dir = tempfile::tempdir().unwrap();
    let replica = key(100);
    let logs = Logs::new(&replica, &[key(101)]);
    rt.block_on(async {
        let store = open(dir.path(), &replica, Arc::default());
        let kv = logs.manifests[0].log_id();
        let other = Logs::new(&replica, &[key(102)]).manifests[0].clone();
        let (b, _) = store.create_log(logs.manifests[0].clone()).await.unwrap();
        let b_id = b.log_id;
        let (a, _) = store.create_log(renamed(&other, "a", &key(102))).await.unwrap();
        let mut ops = vec![(a.log_id, Op::Put { key: b"small".to_vec(), value: b"1".to_vec() })];
        for i in 0..3u8 {
            ops.push((b_id, Op::Put { key: vec![b'k', i], value: vec![i; 400 * 1024] }));
        }
        let acks = store.write(ops).await.unwrap();
        let b_entries: BTreeSet<_> = acks[1..].iter().map(|a| a.hash).collect();
        assert!(b_entries.len() >= 2, "three 400 KiB puts need two entries");
        assert_eq!(acks[0].seq, 1);
        let next = store
            .write(vec![(a.log_id, Op::Put { key: b"x".to_vec(), value: b"2".to_vec() })])
            .await
            .unwrap();
        assert_eq!(next[0].seq, 2, "the next write continues the log");
        assert_eq!(kv, b_id);
        let report = store.check_integrity().unwrap();
        assert!(report.is_clean(), "{:?}", report.problems);
        store.close().await.unwrap();
    });
}

fn renamed(like: &SignedManifest, name: &str, creator: &WriterKey) -> SignedManifest {
    let mut manifest = like.manifest().clone();
    manifest.name = name.into();
    manifest.created_by = creator.public();
    manifest.sign(creator).unwrap()
}
