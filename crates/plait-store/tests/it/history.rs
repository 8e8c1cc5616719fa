//! Reads of a log's past equal the reference fold of exactly the entries stored by then,
//! for any arrival order, duplicates included; History is the ops of one key or edge in
//! total order; a checkpoint names the seq of the entries it covers; a point that does
//! not exist is refused and leaves no trace.

use std::collections::BTreeMap;

use plait_core::{EntryHash, LogType, LogView, MemoryLog, Op, OpId, VerifiedEntry};
use plait_store::{AsOf, Direction, IngestSource, PageLimit, Store, StoreError};
use proptest::prelude::*;

use crate::support::{arrival, key, manifest, open, signed_entries};

/// One version as History reports it: op, seq of its entry, value or none.
type VersionOf = (OpId, u64, Option<Vec<u8>>);

/// The reference view of the entries stored at `seq` or before, folded from nothing.
fn fold_upto(m: &plait_core::SignedManifest, by_seq: &BTreeMap<u64, VerifiedEntry>, seq: u64) -> LogView {
    let mut reference = MemoryLog::new(m.clone());
    for (_, e) in by_seq.range(..=seq) {
        reference.ingest(e.clone());
    }
    assert_eq!(reference.len() as u64, seq, "entries stored by a seq are closed under their parents");
    reference.view().clone()
}

/// Asserts that every read as of `seq` equals `want`.
fn assert_view_at(store: &Store, log: &plait_core::LogId, seq: u64, want: &LogView) {
    match want {
        LogView::Kv(map) => {
            let (rows, next) = store.scan_kv_as_of(log, b"", b"", b"", PageLimit::rows(100), seq).unwrap();
            assert_eq!(next, None);
            let got: Vec<_> = rows.iter().map(|r| (r.key.clone(), r.value.clone(), r.id)).collect();
            let live: Vec<_> = map
                .iter()
                .filter_map(|(k, r)| r.value.as_ref().map(|v| (k.clone(), v.clone(), r.id)))
                .collect();
            assert_eq!(got, live, "scan as of seq {seq}");
            for k in [b"a", b"b", b"c", b"d"] {
                let got = store.get_kv_as_of(log, k, seq).unwrap().map(|r| r.value);
                let want = map.get(k.as_slice()).and_then(|r| r.value.clone());
                assert_eq!(got, want, "get of {:?} as of seq {seq}", k);
            }
            // A page of one row at a time walks the same pairs.
            let mut start = Vec::new();
            let mut walked = Vec::new();
            loop {
                let (rows, next) =
                    store.scan_kv_as_of(log, b"", &start, b"", PageLimit::rows(1), seq).unwrap();
                walked.extend(rows.into_iter().map(|r| (r.key, r.value, r.id)));
                match next {
                    Some(k) => start = k,
                    None => break,
                }
            }
            assert_eq!(walked, live, "paged scan as of seq {seq}");
        }
        LogView::Feed(items) => {
            let want: Vec<_> = items.iter().map(|(id, v)| (*id, v.clone())).collect();
            let page = store.read_feed_as_of(log, None, PageLimit::rows(1000), false, seq).unwrap();
            assert_eq!(page.items.iter().map(|r| (r.id, r.value.clone())).collect::<Vec<_>>(), want);
            let tail = store.read_feed_as_of(log, None, PageLimit::rows(2), true, seq).unwrap();
            let want_tail: Vec<_> = want.iter().rev().take(2).rev().cloned().collect();
            assert_eq!(tail.items.iter().map(|r| (r.id, r.value.clone())).collect::<Vec<_>>(), want_tail);
        }
        LogView::Graph(map) => {
            for node in [b"a", b"b", b"c", b"x", b"y"] {
                for direction in [Direction::Out, Direction::In] {
                    let want: Vec<_> = map
                        .iter()
                        .filter(|(e, r)| {
                            r.value.is_some()
                                && match direction {
                                    Direction::Out => e.src == node,
                                    Direction::In => e.dst == node,
                                }
                        })
                        .map(|(e, r)| {
                            (e.src.clone(), e.dst.clone(), r.value.as_ref().unwrap().props.clone(), r.id)
                        })
                        .collect();
                    let mut got = Vec::new();
                    let mut after: Option<Vec<u8>> = None;
                    loop {
                        let page = store
                            .edges_as_of(
                                log,
                                node,
                                direction,
                                Some("l"),
                                after.as_deref(),
                                PageLimit::rows(1),
                                seq,
                            )
                            .unwrap();
                        got.extend(page.edges.into_iter().map(|r| (r.src, r.dst, r.props, r.id)));
                        match page.next_after {
                            Some(a) => after = Some(a),
                            None => break,
                        }
                    }
                    got.sort();
                    let mut want = want;
                    want.sort();
                    assert_eq!(got, want, "edges {direction:?} of {node:?} as of seq {seq}");
                }
            }
        }
    }
}

proptest! {
    #![proptest_config(ProptestConfig::with_cases(16))]

    /// Entries from three writers arrive shuffled, in chunks, with duplicates, and a
    /// checkpoint is taken part way. For every seq the reads as of it equal the fold of
    /// the entries stored by then; the checkpoint names its seq; each key's and edge's
    /// History is its ops in total order.
    #[test]
    fn reads_of_the_past_match_the_fold_of_what_was_stored_then(
        log_type in prop::sample::select(vec![LogType::Feed, LogType::Kv, LogType::Graph]),
        steps in prop::collection::vec((0usize..3, prop::collection::vec(0usize..32, 0..3), prop::collection::vec((any::<u8>(), any::<u8>(), any::<bool>()), 1..3)), 1..16),
        shuffle in prop::collection::vec(any::<prop::sample::Index>(), 0..30),
        chunk in 1usize..5,
        cut in any::<prop::sample::Index>(),
    ) {
        let writers = [key(1), key(2), key(3)];
        let m = manifest("log", log_type, &writers.iter().collect::<Vec<_>>());
        let entries = signed_entries(&m, &writers, &steps);
        let arrival = arrival(&entries, &shuffle, 2);
        let chunks: Vec<_> = arrival.chunks(chunk).map(<[_]>::to_vec).collect();
        let cut = cut.index(chunks.len());

        let rt = tokio::runtime::Builder::new_current_thread().enable_all().build().unwrap();
        let dir = tempfile::tempdir().unwrap();
        rt.block_on(async {
            let store = open(dir.path(), &writers[0]);
            store.create_log(m.clone()).await.unwrap();
            let log = m.log_id();
            let mut checkpoint = None;
            for (i, part) in chunks.into_iter().enumerate() {
                for outcome in store.ingest(part, IngestSource::Sync).await.unwrap() {
                    outcome.unwrap();
                }
                if i == cut {
                    checkpoint = Some(store.checkpoint(log).await.unwrap());
                }
            }
            let checkpoint = checkpoint.unwrap();
            let by_seq: BTreeMap<u64, VerifiedEntry> = entries
                .iter()
                .map(|e| (store.get_entry(&e.hash()).unwrap().unwrap().seq, e.clone()))
                .collect();
            let end = store.log(&log).unwrap().seq;
            // Two steps may make the same entry: count distinct ones.
            prop_assert_eq!(end as usize, by_seq.len());
            for seq in 0..=end {
                prop_assert_eq!(store.resolve_as_of(&log, AsOf::Seq(seq)).unwrap(), seq);
                assert_view_at(&store, &log, seq, &fold_upto(&m, &by_seq, seq));
            }
            // The checkpoint names the seq whose entries it covers.
            let at = store.resolve_as_of(&log, AsOf::Checkpoint(checkpoint.state_root)).unwrap();
            prop_assert_eq!(at, checkpoint.seq);
            let covered: std::collections::BTreeSet<EntryHash> = by_seq.range(..=at).map(|(_, e)| e.hash()).collect();
            prop_assert_eq!(covered.len() as u64, checkpoint.n_entries);

            // History: every op of a key or edge in total order, with its entry's seq.
            let mut ops: BTreeMap<Vec<u8>, Vec<VersionOf>> = BTreeMap::new();
            for (seq, e) in &by_seq {
                for (id, op) in e.op_ids() {
                    let (group, value) = match op {
                        Op::Put { key, value } => (key.clone(), Some(value.clone())),
                        Op::Delete { key } => (key.clone(), None),
                        Op::Link { src, dst, props, .. } => ([src.clone(), dst.clone()].concat(), Some(props.clone())),
                        Op::Unlink { src, dst, .. } => ([src.clone(), dst.clone()].concat(), None),
                        _ => continue,
                    };
                    ops.entry(group).or_default().push((id, *seq, value));
                }
            }
            for (group, mut want) in ops {
                want.sort_by_key(|(id, _, _)| *id);
                let mut got = Vec::new();
                let mut after: Option<Vec<u8>> = None;
                loop {
                    let page = match log_type {
                        LogType::Kv => store.kv_history(&log, &group, after.as_deref(), PageLimit::rows(2)).unwrap(),
                        _ => store.edge_history(&log, (&group[..1], "l", &group[1..]), after.as_deref(), PageLimit::rows(2)).unwrap(),
                    };
                    got.extend(page.versions.into_iter().map(|v| (v.id, v.seq, v.value)));
                    match page.next_after {
                        Some(a) => after = Some(a),
                        None => break,
                    }
                }
                prop_assert_eq!(got, want);
            }
            let report = store.check_integrity().unwrap();
            prop_assert!(report.is_clean(), "{:?}", report.problems);
            store.close().await.unwrap();
            Ok(())
        })?;
    }
}

/// A seq past the log's end and a checkpoint this replica never recorded are refused,
/// saying what is valid; nothing is stored, the check stays clean and the next write
/// goes on.
#[tokio::test]
async fn points_that_do_not_exist_are_refused_and_say_what_is_valid() {
    let writer = key(1);
    let dir = tempfile::tempdir().unwrap();
    let store = open(dir.path(), &writer);
    let m = manifest("kv", LogType::Kv, &[&writer]);
    let log = m.log_id();
    store.create_log(m).await.unwrap();
    store.write(vec![(log, Op::Put { key: b"k".to_vec(), value: b"1".to_vec() })]).await.unwrap();
    let taken = store.checkpoint(log).await.unwrap();
    store.write(vec![(log, Op::Put { key: b"k".to_vec(), value: b"2".to_vec() })]).await.unwrap();

    match store.resolve_as_of(&log, AsOf::Seq(3)) {
        Err(StoreError::Invalid(msg)) => assert!(msg.contains("seqs 0 to 2"), "{msg}"),
        other => panic!("a seq past the end: {other:?}"),
    }
    match store.resolve_as_of(&log, AsOf::Checkpoint([9; 32])) {
        Err(StoreError::NotFound(msg)) => {
            assert!(msg.contains(&hex::encode(taken.state_root)), "names the recorded one: {msg}")
        }
        other => panic!("an unknown checkpoint: {other:?}"),
    }
    assert_eq!(store.get_kv_as_of(&log, b"k", 1).unwrap().unwrap().value, b"1");
    assert_eq!(store.get_kv_as_of(&log, b"k", 0).unwrap(), None);
    // A continuation that is not one is refused too.
    assert!(matches!(
        store.kv_history(&log, b"k", Some(b"short"), PageLimit::rows(5)),
        Err(StoreError::Invalid(_))
    ));
    assert!(matches!(
        store.edges_as_of(&log, b"k", Direction::Out, None, Some(b"elsewhere"), PageLimit::rows(5), 1),
        Err(StoreError::Invalid(_))
    ));
    assert!(matches!(
        store.read_feed_as_of(&log, Some(b"x"), PageLimit::rows(5), false, 1),
        Err(StoreError::Invalid(_))
    ));

    assert_eq!(store.log(&log).unwrap().seq, 2, "nothing stored by a refusal");
    assert!(store.check_integrity().unwrap().is_clean());
    store.write(vec![(log, Op::Put { key: b"k".to_vec(), value: b"3".to_vec() })]).await.unwrap();
    let history = store.kv_history(&log, b"k", None, PageLimit::rows(10)).unwrap();
    let values: Vec<_> = history.versions.iter().map(|v| (v.seq, v.value.clone().unwrap())).collect();
    assert_eq!(values, vec![(1, b"1".to_vec()), (2, b"2".to_vec()), (3, b"3".to_vec())]);
    store.close().await.unwrap();
}

/// A page of a scan as of a point counts the versions it walks back through, not only the
/// keys: with one key overwritten 100,000 times, a scan as of the point before the
/// overwrites stops after that key and its continuation gives the next key, so a page's
/// work stays bounded whatever the history holds.
#[tokio::test]
async fn a_page_of_the_past_counts_the_versions_it_walks() {
    let writer = key(1);
    let dir = tempfile::tempdir().unwrap();
    let store = open(dir.path(), &writer);
    let m = manifest("kv", LogType::Kv, &[&writer]);
    let log = m.log_id();
    store.create_log(m).await.unwrap();
    let put = |k: &str, v: String| (log, Op::Put { key: k.as_bytes().to_vec(), value: v.into_bytes() });
    store.write(vec![put("a", "first".into()), put("b", "first".into())]).await.unwrap();
    for round in 0..100 {
        store.write((0..1000).map(|i| put("a", format!("{round}-{i}"))).collect()).await.unwrap();
    }
    let (page, next) = store.scan_kv_as_of(&log, b"", b"", b"", PageLimit::rows(100), 1).unwrap();
    assert_eq!(
        page.iter().map(|r| (r.key.clone(), r.value.clone())).collect::<Vec<_>>(),
        [(b"a".to_vec(), b"first".to_vec())]
    );
    assert_eq!(
        next.as_deref(),
        Some(b"b".as_slice()),
        "the page stops after the key whose versions it walked"
    );
    let (page, next) = store.scan_kv_as_of(&log, b"", b"b", b"", PageLimit::rows(100), 1).unwrap();
    assert_eq!(page.iter().map(|r| r.value.clone()).collect::<Vec<_>>(), [b"first".to_vec()]);
    assert_eq!(next, None);
    let (page, _) = store.scan_kv_as_of(&log, b"", b"", b"", PageLimit::rows(100), 101).unwrap();
    assert_eq!(page.len(), 2, "as of the end no version is walked and both keys fit one page");
    store.close().await.unwrap();
}
