//! Ingest of entries signed elsewhere: pending parents, duplicates, bad clocks, ACL.

use plait_core::{EntryDraft, LogType, Op, VerifiedEntry};
use plait_store::{IngestSource, StoreError, SubmitOutcome};

use crate::support::{entry, key, manifest, open};

/// A child that arrives before its parents waits in pending, survives a restart there,
/// and is applied together with its ancestry when the parents arrive.
#[tokio::test]
async fn children_before_parents_wait_then_apply() {
    let dir = tempfile::tempdir().unwrap();
    let (replica, client) = (key(1), key(2));
    let m = manifest("kv", LogType::Kv, &[&replica, &client]);
    let log = m.log_id();
    let a = entry(&client, log, 1, vec![], "a");
    let b = entry(&client, log, 2, vec![a.hash()], "b");
    let c = entry(&client, log, 3, vec![b.hash()], "c");
    {
        let store = open(dir.path(), &replica);
        store.create_log(m.clone()).await.unwrap();
        let out = store.ingest(vec![c.clone(), b.clone()], IngestSource::Submit).await.unwrap();
        assert_eq!(out[0].as_ref().unwrap(), &SubmitOutcome::Pending);
        assert_eq!(out[1].as_ref().unwrap(), &SubmitOutcome::Pending);
        let summary = store.log(&log).unwrap();
        assert_eq!((summary.seq, summary.pending), (0, 2));
        store.close().await.unwrap();
    }
    let store = open(dir.path(), &replica);
    assert_eq!(store.log(&log).unwrap().pending, 2, "pending survives a restart");
    let out = store.ingest(vec![a.clone()], IngestSource::Sync).await.unwrap();
    assert_eq!(out[0].as_ref().unwrap(), &SubmitOutcome::Stored { seq: 1 });
    let summary = store.log(&log).unwrap();
    assert_eq!((summary.seq, summary.pending, summary.heads), (3, 0, 1));
    assert_eq!(store.heads(&log).unwrap()[0].entry.hash(), c.hash());
    // Parents always have lower seq than children.
    let seqs: Vec<_> =
        store.entries_after(&log, 0, 10, usize::MAX).unwrap().iter().map(|e| e.entry.hash()).collect();
    assert_eq!(seqs, vec![a.hash(), b.hash(), c.hash()]);
    let dup = store.ingest(vec![b.clone()], IngestSource::Sync).await.unwrap();
    assert_eq!(dup[0].as_ref().unwrap(), &SubmitOutcome::Duplicate { seq: 2 });
    let report = store.check_integrity().unwrap();
    assert!(report.is_clean(), "{:?}", report.problems);
    store.close().await.unwrap();
}

/// Entries that break a rule are refused one by one; good entries in the same call land.
#[tokio::test]
async fn bad_entries_are_refused_individually() {
    let dir = tempfile::tempdir().unwrap();
    let (replica, client, outsider) = (key(1), key(2), key(3));
    let m = manifest("kv", LogType::Kv, &[&replica, &client]);
    let log = m.log_id();
    let store = open(dir.path(), &replica);
    store.create_log(m).await.unwrap();
    let root = entry(&client, log, 5, vec![], "root");
    let stale_clock = entry(&client, log, 5, vec![root.hash()], "stale");
    let not_on_acl = entry(&outsider, log, 1, vec![], "x");
    let other_log = entry(&client, plait_core::LogId([3; 32]), 1, vec![], "x");
    let feed_op = EntryDraft {
        log,
        time: 1,
        next: vec![],
        refs: vec![],
        ops: vec![Op::Append { value: b"x".to_vec() }],
    }
    .sign(&client)
    .unwrap();
    let out = store
        .ingest(vec![root, stale_clock, not_on_acl, other_log, feed_op], IngestSource::Submit)
        .await
        .unwrap();
    assert!(matches!(out[0], Ok(SubmitOutcome::Stored { seq: 1 })));
    assert!(matches!(&out[1], Err(StoreError::Invalid(m)) if m.contains("clock")));
    assert!(matches!(out[2], Err(StoreError::PermissionDenied(_))));
    assert!(matches!(out[3], Err(StoreError::NotFound(_))));
    assert!(matches!(&out[4], Err(StoreError::Invalid(m)) if m.contains("does not accept")));
    assert_eq!(store.log(&log).unwrap().seq, 1);
    store.close().await.unwrap();
}

/// Pending space per log is bounded: past the bound, entries with missing parents are
/// refused with ResourceExhausted and nothing more is held.
#[tokio::test]
async fn pending_is_bounded() {
    let dir = tempfile::tempdir().unwrap();
    let (replica, client) = (key(1), key(2));
    let mut config = plait_store::StoreConfig::new(dir.path(), replica.clone()).without_disk_floor();
    config.pending_per_log_max = 3;
    let store = plait_store::Store::open(
        config,
        &mut rand::rngs::OsRng,
        std::sync::Arc::new(plait_store::NoopObserver),
    )
    .unwrap();
    let m = manifest("kv", LogType::Kv, &[&replica, &client]);
    let log = m.log_id();
    store.create_log(m).await.unwrap();
    let orphans: Vec<_> = (0..5u8)
        .map(|i| entry(&client, log, 2, vec![plait_core::EntryHash([i; 32])], &format!("o{i}")))
        .collect();
    let out = store.ingest(orphans, IngestSource::Sync).await.unwrap();
    assert_eq!(out.iter().filter(|o| matches!(o, Ok(SubmitOutcome::Pending))).count(), 3);
    assert_eq!(out.iter().filter(|o| matches!(o, Err(StoreError::ResourceExhausted(_)))).count(), 2);
    assert_eq!(store.log(&log).unwrap().pending, 3);
    store.close().await.unwrap();
}

/// The store remembers which peer each pulled seq came from, as ranges in seq order:
/// runs from one peer merge, entries written here or submitted are in no range, a child
/// completed from pending counts for nobody, and a restart forgets everything (pages are
/// then served whole, which is only less cheap).
#[tokio::test]
async fn pulled_seqs_are_remembered_by_peer() {
    let dir = tempfile::tempdir().unwrap();
    let (replica, client) = (key(1), key(2));
    let m = manifest("kv", LogType::Kv, &[&replica, &client]);
    let log = m.log_id();
    let (peer_a, peer_b) = (key(10).public(), key(11).public());
    let cursor = |peer, seq| plait_store::Cursor { peer, log, epoch: [3; 16], seq };
    let store = open(dir.path(), &replica);
    store.create_log(m.clone()).await.unwrap();
    let e1 = entry(&client, log, 1, vec![], "a");
    let e2 = entry(&client, log, 2, vec![e1.hash()], "b");
    let e3 = entry(&client, log, 3, vec![e2.hash()], "c");
    let e4 = entry(&client, log, 4, vec![e3.hash()], "d");
    let e5 = entry(&client, log, 5, vec![e4.hash()], "e");
    let e6 = entry(&client, log, 6, vec![e5.hash()], "f");
    store.ingest_pulled(vec![e1.clone()], cursor(peer_a, 1)).await.unwrap();
    store.ingest_pulled(vec![e2.clone()], cursor(peer_a, 2)).await.unwrap();
    store.ingest_pulled(vec![e3.clone()], cursor(peer_b, 1)).await.unwrap();
    store.ingest(vec![e4.clone()], IngestSource::Submit).await.unwrap();
    // e6 from peer a waits for e5, which peer b then sends: e5 is b's, e6 (completed
    // from pending) nobody's.
    store.ingest_pulled(vec![e6.clone()], cursor(peer_a, 3)).await.unwrap();
    store.ingest_pulled(vec![e5.clone()], cursor(peer_b, 2)).await.unwrap();
    store.write(vec![(log, Op::Put { key: b"local".to_vec(), value: b"v".to_vec() })]).await.unwrap();
    let ranges: Vec<_> =
        store.pulled_ranges(&log, 0, 100).iter().map(|r| (r.first, r.last, r.peer)).collect();
    assert_eq!(ranges, vec![(1, 2, peer_a), (3, 3, peer_b), (5, 5, peer_b)]);
    assert_eq!(store.log(&log).unwrap().seq, 7, "six pulled or submitted entries and one local");
    let after: Vec<_> = store.pulled_ranges(&log, 2, 4).iter().map(|r| r.first).collect();
    assert_eq!(after, vec![3], "only ranges with a seq in (2, 4]");
    store.close().await.unwrap();
    drop(store);
    let store = open(dir.path(), &replica);
    assert!(store.pulled_ranges(&log, 0, 100).is_empty(), "in memory only");
    store.close().await.unwrap();
}

/// The digest of a log is the digest of its set of stored entries: two replicas that
/// take the same entries in different orders (children before parents, each sent twice)
/// hold the same digest, the entries still pending count only once stored, and it
/// survives a restart.
#[tokio::test]
async fn digests_match_whatever_the_arrival_order() {
    let dir = tempfile::tempdir().unwrap();
    let client = key(2);
    let m = manifest("kv", LogType::Kv, &[&client]);
    let log = m.log_id();
    let a = entry(&client, log, 1, vec![], "a");
    let b = entry(&client, log, 2, vec![a.hash()], "b");
    let c = entry(&client, log, 2, vec![a.hash()], "c");
    let d = entry(&client, log, 3, vec![b.hash(), c.hash()], "d");
    let all = [a.clone(), b.clone(), c.clone(), d.clone()];
    let orders: [Vec<VerifiedEntry>; 2] =
        [all.to_vec(), vec![d.clone(), c.clone(), d.clone(), b.clone(), c.clone(), a.clone(), a.clone()]];
    let mut digests = Vec::new();
    for (i, order) in orders.into_iter().enumerate() {
        let path = dir.path().join(format!("r{i}"));
        let store = open(&path, &key(10 + i as u64));
        store.create_log(m.clone()).await.unwrap();
        let empty = store.log(&log).unwrap().digest;
        assert_eq!(empty, plait_core::SetDigest::default());
        for e in order {
            store.ingest(vec![e], IngestSource::Sync).await.unwrap();
            if store.log(&log).unwrap().seq == 0 {
                assert_eq!(store.log(&log).unwrap().digest, empty, "pending entries are not in the digest");
            }
        }
        assert_eq!(store.log(&log).unwrap().seq, 4);
        digests.push(store.log(&log).unwrap().digest);
        store.close().await.unwrap();
        drop(store);
        let store = open(&path, &key(10 + i as u64));
        assert_eq!(store.log(&log).unwrap().digest, digests[i], "the same after a restart");
        assert!(store.check_integrity().unwrap().is_clean());
    }
    assert_eq!(digests[0], digests[1]);
    let hashes: Vec<_> = all.iter().map(|e| e.hash()).collect();
    assert_eq!(digests[0], plait_core::SetDigest::of(&hashes));
}
