//! The store's incremental views and heads equal the reference fold for any arrival
//! order, duplicates included, and the integrity check agrees.

use plait_core::{IngestOutcome, LogType, LogView, MemoryLog};
use plait_store::{Direction, IngestSource, PageLimit};
use proptest::prelude::*;

use crate::support::{arrival, key, manifest, open, signed_entries};

proptest! {
    #![proptest_config(ProptestConfig::with_cases(24))]

    /// Entries from three writers, delivered to the store in a shuffled order with
    /// duplicates and in several calls, give the reference heads and view.
    #[test]
    fn store_matches_reference_fold(
        log_type in prop::sample::select(vec![LogType::Feed, LogType::Kv, LogType::Graph]),
        steps in prop::collection::vec((0usize..3, prop::collection::vec(0usize..32, 0..3), prop::collection::vec((any::<u8>(), any::<u8>(), any::<bool>()), 1..3)), 1..20),
        shuffle in prop::collection::vec(any::<prop::sample::Index>(), 0..40),
        chunk in 1usize..6,
    ) {
        let writers = [key(1), key(2), key(3)];
        let m = manifest("log", log_type, &writers.iter().collect::<Vec<_>>());
        let entries = signed_entries(&m, &writers, &steps);
        let mut reference = MemoryLog::new(m.clone());
        for e in &entries {
            prop_assert!(!matches!(reference.ingest(e.clone()), IngestOutcome::Rejected(_)));
        }
        let arrival = arrival(&entries, &shuffle, 3);

        let rt = tokio::runtime::Builder::new_current_thread().enable_all().build().unwrap();
        let dir = tempfile::tempdir().unwrap();
        rt.block_on(async {
            let store = open(dir.path(), &writers[0]);
            store.create_log(m.clone()).await.unwrap();
            for part in arrival.chunks(chunk) {
                for outcome in store.ingest(part.to_vec(), IngestSource::Sync).await.unwrap() {
                    outcome.unwrap();
                }
            }
            let log = m.log_id();
            let summary = store.log(&log).unwrap();
            assert_eq!(summary.seq as usize, reference.len());
            assert_eq!(summary.pending, 0);
            let heads: std::collections::BTreeSet<_> = store.heads(&log).unwrap().iter().map(|e| e.entry.hash()).collect();
            assert_eq!(&heads, reference.heads());
            match reference.view() {
                LogView::Kv(_) => {
                    let (rows, _) = store.scan_kv(&log, b"", b"", b"", PageLimit::rows(100)).unwrap();
                    let got: Vec<_> = rows.iter().map(|r| (r.key.as_slice(), r.value.as_slice())).collect();
                    assert_eq!(got, reference.view().kv_live());
                }
                LogView::Feed(items) => {
                    let rows = store.read_feed(&log, None, PageLimit::rows(1000), false).unwrap().items;
                    let got: Vec<_> = rows.iter().map(|r| (r.id, r.value.clone())).collect();
                    let want: Vec<_> = items.iter().map(|(id, v)| (*id, v.clone())).collect();
                    assert_eq!(got, want);
                }
                LogView::Graph(map) => {
                    for node in [b"a", b"b", b"c"] {
                        let got = store.edges(&log, node, Direction::Out, None, None, PageLimit::rows(100)).unwrap().edges;
                        let want: Vec<_> = map.iter().filter(|(e, r)| e.src == node && r.value.is_some()).map(|(e, _)| e.dst.clone()).collect();
                        assert_eq!(got.iter().map(|r| r.dst.clone()).collect::<Vec<_>>(), want);
                    }
                }
            }
            let report = store.check_integrity().unwrap();
            assert!(report.is_clean(), "{:?}", report.problems);
            store.close().await.unwrap();
        });
    }
}
