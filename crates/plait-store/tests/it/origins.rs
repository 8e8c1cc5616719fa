//! Where each stored entry came from: recorded in the batch that stores it, as runs of
//! seqs, kept across restarts, and for an entry that waited for its parents, the origin
//! of its arrival rather than of the batch that completed it.

use plait_core::{LogType, Op, PublicKey};
use plait_store::{Cursor, IngestSource, Origin, OriginRun, SubmitOutcome};

use crate::support::{entry, key, manifest, open};

fn run(first: u64, last: u64, origin: Origin) -> OriginRun {
    OriginRun { first, last, origin }
}

/// Local writes, submitted entries, pulled entries and completed pending entries each
/// get their origin; consecutive entries of one origin share one run, also across
/// batches and restarts; `origins` answers any seq range with the runs covering it.
#[tokio::test]
async fn every_stored_entry_has_the_origin_it_arrived_with() {
    let dir = tempfile::tempdir().unwrap();
    let (replica, client) = (key(1), key(2));
    let (peer_a, peer_b) = (PublicKey([0xa; 32]), PublicKey([0xb; 32]));
    let m = manifest("kv", LogType::Kv, &[&replica, &client]);
    let log = m.log_id();
    let put = |k: &str| vec![(log, Op::Put { key: k.as_bytes().to_vec(), value: b"v".to_vec() })];
    let (e3, e4);
    {
        let store = open(dir.path(), &replica);
        store.create_log(m.clone()).await.unwrap();
        // Two local writes in two batches: one run.
        store.write(put("a")).await.unwrap();
        store.write(put("b")).await.unwrap();
        assert_eq!(store.origins(&log, 1, 2).unwrap(), vec![run(1, 2, Origin::Local)]);
        // Seq 3 from a client, seq 4 pulled from peer A.
        e3 =
            entry(&client, log, 3, store.heads(&log).unwrap().iter().map(|h| h.entry.hash()).collect(), "e3");
        let out = store.ingest(vec![e3.clone()], IngestSource::Submit).await.unwrap();
        assert_eq!(out[0].as_ref().unwrap(), &SubmitOutcome::Stored { seq: 3 });
        e4 = entry(&client, log, 4, vec![e3.hash()], "e4");
        let cursor = Cursor { peer: peer_a, log, epoch: [1; 16], seq: 1 };
        store.ingest_pulled(vec![e4.clone()], cursor).await.unwrap();
        store.close().await.unwrap();
    }
    let e5 = entry(&client, log, 5, vec![e4.hash()], "e5");
    let e6 = entry(&client, log, 6, vec![e5.hash()], "e6");
    // A child from peer B before its parent, which then comes from a client: the child
    // waits in pending across a restart.
    {
        let store = open(dir.path(), &replica);
        let out = store.ingest_from_peer(vec![e6.clone()], peer_b).await.unwrap();
        assert_eq!(out[0].as_ref().unwrap(), &SubmitOutcome::Pending);
        store.close().await.unwrap();
    }
    let store = open(dir.path(), &replica);
    let out = store.ingest(vec![e5.clone()], IngestSource::Submit).await.unwrap();
    assert_eq!(out[0].as_ref().unwrap(), &SubmitOutcome::Stored { seq: 5 });
    assert_eq!(store.log(&log).unwrap().seq, 6, "the child was completed");
    // After the restart a local write starts a new run; another one extends it.
    store.write(put("c")).await.unwrap();
    store.write(put("d")).await.unwrap();
    let all = vec![
        run(1, 2, Origin::Local),
        run(3, 3, Origin::Submitted),
        run(4, 4, Origin::Peer(peer_a)),
        run(5, 5, Origin::Submitted),
        run(6, 6, Origin::Peer(peer_b)),
        run(7, 8, Origin::Local),
    ];
    assert_eq!(store.origins(&log, 1, 8).unwrap(), all);
    assert_eq!(store.origins(&log, 2, 4).unwrap(), all[..3].to_vec(), "from inside a run");
    assert_eq!(store.origins(&log, 8, 8).unwrap(), all[5..].to_vec());
    assert_eq!(store.origins(&log, 9, 20).unwrap(), vec![], "past the end");
    let report = store.check_integrity().unwrap();
    assert!(report.is_clean(), "{:?}", report.problems);
}

/// Restored entries say so, and dropping a log removes its origin rows (a new log that
/// is given the same name starts with none).
#[tokio::test]
async fn restored_entries_are_restored_and_dropped_logs_leave_no_origins() {
    let dir = tempfile::tempdir().unwrap();
    let replica = key(1);
    let m = manifest("kv", LogType::Kv, &[&replica]);
    let log = m.log_id();
    let source = open(&dir.path().join("source"), &replica);
    source.create_log(m.clone()).await.unwrap();
    for k in ["a", "b", "c"] {
        source
            .write(vec![(log, Op::Put { key: k.as_bytes().to_vec(), value: b"v".to_vec() })])
            .await
            .unwrap();
    }
    let buf = std::sync::Arc::new(std::sync::Mutex::new(Vec::new()));
    let sink = buf.clone();
    source
        .export(log, None, move |chunk| {
            sink.lock().unwrap().extend(chunk);
            Ok(())
        })
        .await
        .unwrap();
    let snap = dir.path().join("kv.snap");
    std::fs::write(&snap, buf.lock().unwrap().as_slice()).unwrap();
    let target = open(&dir.path().join("target"), &key(3));
    target.import_file(snap).await.unwrap();
    assert_eq!(target.origins(&log, 1, 3).unwrap(), vec![run(1, 3, Origin::Restored)]);
    assert!(target.check_integrity().unwrap().is_clean());
    target.drop_log(log).await.unwrap();
    target.create_log(m.clone()).await.unwrap();
    assert_eq!(target.origins(&log, 1, 3).unwrap(), vec![], "a dropped log's runs are gone");
    let report = target.check_integrity().unwrap();
    assert!(report.is_clean(), "{:?}", report.problems);
}
