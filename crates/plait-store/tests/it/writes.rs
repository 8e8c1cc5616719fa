//! Local writes: views, acknowledgements, group commit, reopen and bad input.

use plait_core::{LogType, Op};
use plait_store::{Direction, PageLimit, StoreError};

use crate::support::{key, manifest, open};

fn put(k: &str, v: &str) -> Op {
    Op::Put { key: k.as_bytes().to_vec(), value: v.as_bytes().to_vec() }
}

/// Writes to each log type land in its view and are read back through the indexes.
#[tokio::test]
async fn typed_writes_are_readable() {
    let dir = tempfile::tempdir().unwrap();
    let writer = key(1);
    let store = open(dir.path(), &writer);
    let (kv, created) = store.create_log(manifest("settings", LogType::Kv, &[&writer])).await.unwrap();
    assert!(created);
    let (feed, _) = store.create_log(manifest("chat", LogType::Feed, &[&writer])).await.unwrap();
    let (graph, _) = store.create_log(manifest("people", LogType::Graph, &[&writer])).await.unwrap();
    let (kv, feed, graph) = (kv.log_id, feed.log_id, graph.log_id);

    let acks = store
        .write(vec![
            (kv, put("a", "1")),
            (kv, put("b", "2")),
            (feed, Op::Append { value: b"hello".to_vec() }),
            (
                graph,
                Op::Link { src: b"ann".to_vec(), label: "knows".into(), dst: b"bob".to_vec(), props: vec![] },
            ),
        ])
        .await
        .unwrap();
    assert_eq!(acks.len(), 4);
    assert_eq!(acks[0].hash, acks[1].hash, "ops for one log share one entry");
    assert_eq!((acks[0].index, acks[1].index), (0, 1));
    assert_eq!(acks[0].seq, 1);

    store.write(vec![(kv, Op::Delete { key: b"a".to_vec() })]).await.unwrap();
    assert!(store.get_kv(&kv, b"a").unwrap().is_none());
    assert_eq!(store.get_kv(&kv, b"b").unwrap().unwrap().value, b"2");
    let (rows, next) = store.scan_kv(&kv, b"", b"", b"", PageLimit::rows(10)).unwrap();
    assert_eq!(rows.iter().map(|r| r.key.clone()).collect::<Vec<_>>(), vec![b"b".to_vec()]);
    assert!(next.is_none());

    let items = store.read_feed(&feed, None, PageLimit::rows(10), false).unwrap().items;
    assert_eq!(items[0].value, b"hello");
    let out = store.edges(&graph, b"ann", Direction::Out, None, None, PageLimit::rows(10)).unwrap().edges;
    let inn =
        store.edges(&graph, b"bob", Direction::In, Some("knows"), None, PageLimit::rows(10)).unwrap().edges;
    assert_eq!(out, inn);
    assert_eq!(out[0].dst, b"bob");
    assert!(store.check_integrity().unwrap().is_clean());
    store.close().await.unwrap();
}

/// Concurrent writers share entries and fsyncs, every op is acknowledged exactly once,
/// and after reopening seq continues without a gap and the integrity check is clean.
#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn concurrent_writes_group_commit_and_survive_reopen() {
    let dir = tempfile::tempdir().unwrap();
    let writer = key(1);
    let store = open(dir.path(), &writer);
    let (log, _) = store.create_log(manifest("counters", LogType::Kv, &[&writer])).await.unwrap();
    let log = log.log_id;
    let mut tasks = Vec::new();
    for client in 0..32 {
        let store = store.clone();
        tasks.push(tokio::spawn(async move {
            let mut acks = Vec::new();
            for i in 0..50 {
                let ack = store.write(vec![(log, put(&format!("c{client}-{i}"), "x"))]).await.unwrap();
                acks.push(ack[0].clone());
            }
            acks
        }));
    }
    let mut acks = Vec::new();
    for t in tasks {
        acks.extend(t.await.unwrap());
    }
    let summary = store.log(&log).unwrap();
    assert_eq!(summary.ops, 1600);
    assert!(
        summary.seq < 1600,
        "concurrent single-op writes were coalesced into fewer entries ({})",
        summary.seq
    );
    let mut seqs: Vec<_> = acks.iter().map(|a| a.seq).collect();
    seqs.sort();
    seqs.dedup();
    assert_eq!(*seqs.last().unwrap(), summary.seq);
    let heads_before = store.heads(&log).unwrap().len();
    store.close().await.unwrap();
    drop(store);

    let store = open(dir.path(), &writer);
    let summary2 = store.log(&log).unwrap();
    assert_eq!(summary2.seq, summary.seq);
    assert_eq!(summary2.ops, 1600);
    assert_eq!(store.heads(&log).unwrap().len(), heads_before);
    let ack = store.write(vec![(log, put("after", "reopen"))]).await.unwrap();
    assert_eq!(ack[0].seq, summary.seq + 1, "seq continues after reopen");
    let report = store.check_integrity().unwrap();
    assert!(report.is_clean(), "{:?}", report.problems);
    assert_eq!(report.ops, 1601);
    store.close().await.unwrap();
}

/// Bad writes are refused whole with the right kind of error and store nothing.
#[tokio::test]
async fn bad_writes_are_refused_and_store_nothing() {
    let dir = tempfile::tempdir().unwrap();
    let writer = key(1);
    let store = open(dir.path(), &writer);
    let (kv, _) = store.create_log(manifest("kv", LogType::Kv, &[&writer])).await.unwrap();
    let (foreign, _) = store.create_log(manifest("foreign", LogType::Kv, &[&key(2)])).await.unwrap();
    let kv = kv.log_id;

    let wrong_type = store.write(vec![(kv, put("ok", "1")), (kv, Op::Append { value: b"x".to_vec() })]).await;
    assert!(matches!(wrong_type, Err(StoreError::Invalid(m)) if m.contains("does not accept")));
    let empty_key = store.write(vec![(kv, Op::Put { key: vec![], value: b"v".to_vec() })]).await;
    assert!(matches!(empty_key, Err(StoreError::Invalid(_))));
    let huge = store.write(vec![(kv, Op::Put { key: vec![1; 2000], value: b"v".to_vec() })]).await;
    assert!(matches!(huge, Err(StoreError::Invalid(m)) if m.contains("limit")));
    let acl = store.write(vec![(foreign.log_id, put("k", "v"))]).await;
    assert!(matches!(acl, Err(StoreError::PermissionDenied(_))));
    let unknown = store.write(vec![(plait_core::LogId([9; 32]), put("k", "v"))]).await;
    assert!(matches!(unknown, Err(StoreError::NotFound(_))));
    let taken = store.create_log(manifest("kv", LogType::Feed, &[&writer])).await;
    assert!(matches!(taken, Err(StoreError::AlreadyExists(_))));

    assert_eq!(store.log(&kv).unwrap().seq, 0);
    assert!(store.get_kv(&kv, b"ok").unwrap().is_none());
    store.write(vec![(kv, put("ok", "1"))]).await.unwrap();
    assert_eq!(store.log(&kv).unwrap().seq, 1);
    store.close().await.unwrap();
}

/// Dropping a log removes its rows; its name can be used again.
#[tokio::test]
async fn drop_log_removes_everything() {
    let dir = tempfile::tempdir().unwrap();
    let writer = key(1);
    let store = open(dir.path(), &writer);
    let (log, _) = store.create_log(manifest("tmp", LogType::Kv, &[&writer])).await.unwrap();
    let acks = store.write(vec![(log.log_id, put("a", "1"))]).await.unwrap();
    store.drop_log(log.log_id).await.unwrap();
    assert!(store.log(&log.log_id).is_none());
    assert!(store.get_entry(&acks[0].hash).unwrap().is_none());
    assert!(store.get_kv(&log.log_id, b"a").unwrap().is_none());
    let (again, created) = store.create_log(manifest("tmp", LogType::Feed, &[&writer])).await.unwrap();
    assert!(created);
    assert_eq!(again.seq, 0);
    assert!(store.check_integrity().unwrap().is_clean());
    store.close().await.unwrap();
}

/// Range reads stop at the page's byte bound as well as its row count (always taking one
/// row, however large), and each kind of read continues exactly where the page stopped:
/// every row once, none skipped.
#[tokio::test]
async fn pages_are_bounded_by_bytes_and_continue() {
    let dir = tempfile::tempdir().unwrap();
    let writer = key(1);
    let store = open(dir.path(), &writer);
    let (kv, _) = store.create_log(manifest("kv", LogType::Kv, &[&writer])).await.unwrap();
    let (feed, _) = store.create_log(manifest("feed", LogType::Feed, &[&writer])).await.unwrap();
    let (graph, _) = store.create_log(manifest("graph", LogType::Graph, &[&writer])).await.unwrap();
    let (kv, feed, graph) = (kv.log_id, feed.log_id, graph.log_id);
    let big = vec![7u8; 100 * 1024];
    for i in 0..20u32 {
        let edge = Op::Link {
            src: b"hub".to_vec(),
            label: "to".into(),
            dst: format!("n{i:02}").into_bytes(),
            props: big[..60 * 1024].to_vec(),
        };
        store
            .write(vec![
                (kv, Op::Put { key: format!("k{i:02}").into_bytes(), value: big.clone() }),
                (feed, Op::Append { value: big.clone() }),
                (graph, edge),
            ])
            .await
            .unwrap();
    }
    // 100 KiB kv and feed rows, 60 KiB edges: a 350 KiB page holds 3 of the first, 5 of
    // the edges.
    let page = PageLimit { rows: 1000, bytes: 350 * 1024 };

    let (mut keys, mut start, mut pages) = (Vec::new(), Vec::new(), 0);
    loop {
        let (rows, next) = store.scan_kv(&kv, b"", &start, b"", page).unwrap();
        assert!(rows.len() <= 3, "a page of {} rows", rows.len());
        keys.extend(rows.into_iter().map(|r| r.key));
        pages += 1;
        match next {
            Some(next) => start = next,
            None => break,
        }
    }
    assert_eq!(keys, (0..20).map(|i| format!("k{i:02}").into_bytes()).collect::<Vec<_>>());
    assert_eq!(pages, 7);

    let (mut items, mut after) = (0, None::<Vec<u8>>);
    loop {
        let got = store.read_feed(&feed, after.as_deref(), page, false).unwrap();
        assert!(got.items.len() <= 3);
        items += got.items.len();
        after = got.items.last().map(|i| i.id.to_sort_key().to_vec());
        if !got.more {
            break;
        }
    }
    assert_eq!(items, 20);
    // A tail read takes the newest rows that fit.
    let tail = store.read_feed(&feed, None, page, true).unwrap();
    assert_eq!(tail.items.len(), 3);

    let (mut dsts, mut after) = (Vec::new(), None::<Vec<u8>>);
    loop {
        let got = store.edges(&graph, b"hub", Direction::Out, None, after.as_deref(), page).unwrap();
        assert!(got.edges.len() <= 5);
        dsts.extend(got.edges.into_iter().map(|e| e.dst));
        match got.next_after {
            Some(next) => after = Some(next),
            None => break,
        }
    }
    assert_eq!(dsts, (0..20).map(|i| format!("n{i:02}").into_bytes()).collect::<Vec<_>>());
    // A continuation from another node is refused, not followed.
    let got =
        store.edges(&graph, b"hub", Direction::Out, None, None, PageLimit { rows: 1, bytes: usize::MAX });
    let next = got.unwrap().next_after.unwrap();
    assert!(store.edges(&graph, b"other", Direction::Out, None, Some(&next), page).is_err());

    // One row larger than the byte bound still reads, alone.
    let tiny = PageLimit { rows: 1000, bytes: 1 };
    assert_eq!(store.scan_kv(&kv, b"", b"", b"", tiny).unwrap().0.len(), 1);
    assert_eq!(store.read_feed(&feed, None, tiny, false).unwrap().items.len(), 1);
}

/// A creator's quota counts the logs it created here, in the writer: concurrent
/// creations cannot pass it together, a refused creation stores nothing, an existing
/// log's manifest again costs nothing, dropping a log frees its slot, logs without a
/// creator never count, and the records survive a reopen.
#[tokio::test]
async fn creation_quota_is_per_creator_and_durable() {
    use plait_store::Creator;
    let dir = tempfile::tempdir().unwrap();
    let writer = key(1);
    let as_app = |quota| Creator { identity: "token:app".into(), quota: Some(quota) };
    let store = open(dir.path(), &writer);
    store.create_log(manifest("peer-learned", LogType::Kv, &[&writer])).await.unwrap();
    let mut creations = tokio::task::JoinSet::new();
    for i in 0..6 {
        let store = store.clone();
        let manifest = manifest(&format!("app-{i}"), LogType::Kv, &[&writer]);
        creations.spawn(async move { store.create_log_as(manifest, as_app(3)).await });
    }
    let results = creations.join_all().await;
    let created: Vec<_> = results.iter().filter_map(|r| r.as_ref().ok()).collect();
    assert_eq!(created.len(), 3, "exactly the quota is created: {results:?}");
    for refused in results.iter().filter_map(|r| r.as_ref().err()) {
        assert!(matches!(refused, StoreError::ResourceExhausted(m) if m.contains("token:app")), "{refused}");
    }
    assert_eq!(store.log_count(), 4);
    assert_eq!(store.logs_created_by("token:app"), 3);
    assert!(created.iter().all(|(s, _)| s.creator.as_deref() == Some("token:app")));
    let again = store.create_log_as(created[0].0.manifest.clone(), as_app(3)).await.unwrap();
    assert!(!again.1, "an existing log is returned, not counted again");
    let other = Creator { identity: "certificate:alice".into(), quota: Some(1) };
    store.create_log_as(manifest("alice", LogType::Kv, &[&writer]), other).await.unwrap();
    store.close().await.unwrap();
    drop(store);

    let store = open(dir.path(), &writer);
    assert_eq!(store.logs_created_by("token:app"), 3, "the records are durable");
    let refused = store.create_log_as(manifest("app-9", LogType::Kv, &[&writer]), as_app(3)).await;
    assert!(matches!(refused, Err(StoreError::ResourceExhausted(_))));
    let first = store.logs().into_iter().find(|s| s.creator.as_deref() == Some("token:app")).unwrap();
    store.drop_log(first.log_id).await.unwrap();
    store.create_log_as(manifest("app-9", LogType::Kv, &[&writer]), as_app(3)).await.unwrap();
    assert!(store.check_integrity().unwrap().is_clean());
    store.close().await.unwrap();
}

/// Counts the writer's waits for flushes.
#[derive(Default)]
struct Stalls(std::sync::atomic::AtomicU64);

impl plait_store::StoreObserver for Stalls {
    fn batch_committed(&self, _: u64, _: u64, _: std::time::Duration) {}
    fn pending_changed(&self, _: u64) {}
    fn write_stalled(&self, _: std::time::Duration) {
        self.0.fetch_add(1, std::sync::atomic::Ordering::Relaxed);
    }
}

/// With memtables bounded, the writer waits for the engine's flushes whenever the bound
/// is exceeded with flushes outstanding, and every write still completes (the wait ends
/// when the flushes do); the data reads back whole after a reopen.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_write_buffer_bound_holds_writes_for_flushes_and_loses_nothing() {
    let dir = tempfile::tempdir().unwrap();
    let writer = key(1);
    let mut config = plait_store::StoreConfig::new(dir.path(), writer.clone()).without_disk_floor();
    // Below what the active memtables hold: every group after a memtable is sealed waits.
    config.write_buffer_bytes = 1024 * 1024;
    let stalls = std::sync::Arc::new(Stalls::default());
    let store = plait_store::Store::open(config, &mut rand::rngs::OsRng, stalls.clone()).unwrap();
    let m = manifest("kv", LogType::Kv, &[&writer]);
    let kv = m.log_id();
    store.create_log(m).await.unwrap();
    let value = vec![7u8; 60_000];
    // 40 MiB of values: several memtables of the kv and entries keyspaces get sealed.
    for round in 0..700u32 {
        let ops = vec![(kv, Op::Put { key: format!("k{round:04}").into_bytes(), value: value.clone() })];
        store.write(ops).await.unwrap();
    }
    assert!(stalls.0.load(std::sync::atomic::Ordering::Relaxed) > 0, "the writer never waited for a flush");
    store.close().await.unwrap();
    drop(store);
    let store = open(dir.path(), &writer);
    assert_eq!(store.log(&kv).unwrap().seq, 700);
    let last = store.get_kv(&kv, b"k0699").unwrap().expect("the last write is there");
    assert_eq!(last.value, value);
    store.close().await.unwrap();
}
