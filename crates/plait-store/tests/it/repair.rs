//! Repairing a log that lost an entry from its entry store: the loss shows as a seq gap,
//! a different digest and an unclean check; the entry given back (among the log's whole
//! set, as a peer's reconcile sends it) goes back to its seq, and only it.

use plait_core::{EntryDraft, LogType, Op};

use crate::support::{key, manifest, open};

/// A kv log whose middle entry is lost: after the restore its digest, entries and check
/// are as before the loss; an entry never stored here, offered in the same call, is left
/// to the ordinary ingest.
#[tokio::test]
async fn a_lost_entry_goes_back_to_its_seq_and_nothing_else_is_restored() {
    let dir = tempfile::tempdir().unwrap();
    let writer = key(1);
    let store = open(dir.path(), &writer);
    let (log, _) = store.create_log(manifest("kv", LogType::Kv, &[&writer])).await.unwrap();
    let log = log.log_id;
    for i in 0..6 {
        let ops = vec![
            (log, Op::Put { key: format!("k{i}").into_bytes(), value: b"v".to_vec() }),
            (log, Op::Put { key: b"shared".to_vec(), value: vec![i] }),
        ];
        store.write(ops).await.unwrap();
    }
    let before = store.log(&log).unwrap();
    let all: Vec<_> =
        store.entries_after(&log, 0, 100, 1 << 20).unwrap().into_iter().map(|s| s.entry).collect();
    let lost = store.lose_entry_for_tests(&log, 3).unwrap();
    assert!(store.lose_entry_for_tests(&log, 6).is_err(), "a head cannot be lost this way");
    store.close().await.unwrap();
    drop(store);

    let store = open(dir.path(), &writer);
    let damaged = store.log(&log).unwrap();
    assert_ne!(damaged.digest, before.digest, "the digest is summed again without the lost entry");
    assert_eq!((damaged.seq, damaged.heads), (before.seq, before.heads), "the heads say nothing of it");
    assert!(!store.check_integrity().unwrap().is_clean(), "the check finds the loss");
    assert_eq!(store.seq_gaps(&log).unwrap(), vec![3]);

    // An entry on top of the heads that was never stored here.
    let heads: Vec<_> = store.heads(&log).unwrap().into_iter().map(|h| h.entry.hash()).collect();
    let time = store.heads(&log).unwrap().iter().map(|h| h.entry.clock().time).max().unwrap() + 1;
    let new = EntryDraft {
        log,
        time,
        next: heads,
        refs: vec![],
        ops: vec![Op::Put { key: b"n".to_vec(), value: b"1".to_vec() }],
    }
    .sign(&writer)
    .unwrap();
    let mut offered = all.clone();
    offered.push(new);
    let restored = store.restore_lost(log, offered, store.seq_gaps(&log).unwrap()).await.unwrap();
    assert_eq!(restored, vec![(lost, 3)]);
    let after = store.log(&log).unwrap();
    assert_eq!((after.digest, after.seq, after.ops), (before.digest, before.seq, before.ops));
    assert!(store.seq_gaps(&log).unwrap().is_empty());
    assert!(store.get_kv(&log, b"n").unwrap().is_none(), "the new entry was not slipped into the gap");
    let report = store.check_integrity().unwrap();
    assert!(report.is_clean(), "{:?}", report.problems);
    store.close().await.unwrap();
}
