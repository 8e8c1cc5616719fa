//! The CRDT laws: arrival order, duplicates and partial overlaps never change heads or
//! views, and last-writer-wins follows the total order.

use std::collections::BTreeMap;

use plait_core::{IngestOutcome, LogType, LogView, MemoryLog, Op, OpId, VerifiedEntry};
use proptest::prelude::*;
use proptest::sample::Index;

use crate::support::{Step, build, key, manifest};

fn kv_op() -> impl Strategy<Value = Op> {
    // A small key space so that concurrent writes to the same key are common.
    let key = prop::sample::select(vec![b"a".to_vec(), b"b".to_vec(), b"c".to_vec()]);
    prop_oneof![
        (key.clone(), prop::collection::vec(any::<u8>(), 1..4))
            .prop_map(|(key, value)| Op::Put { key, value }),
        key.prop_map(|key| Op::Delete { key }),
    ]
}

fn graph_op() -> impl Strategy<Value = Op> {
    let node = prop::sample::select(vec![b"x".to_vec(), b"y".to_vec()]);
    let label = prop::sample::select(vec!["knows".to_string(), "likes".to_string()]);
    prop_oneof![
        (node.clone(), label.clone(), node.clone(), prop::collection::vec(any::<u8>(), 0..3))
            .prop_map(|(src, label, dst, props)| Op::Link { src, label, dst, props }),
        (node.clone(), label, node).prop_map(|(src, label, dst)| Op::Unlink { src, label, dst }),
    ]
}

fn feed_op() -> impl Strategy<Value = Op> {
    prop::collection::vec(any::<u8>(), 1..4).prop_map(|value| Op::Append { value })
}

fn steps(op: impl Strategy<Value = Op>) -> impl Strategy<Value = Vec<Step>> {
    prop::collection::vec(
        (0usize..3, prop::collection::vec(0usize..64, 0..3), prop::collection::vec(op, 1..4))
            .prop_map(|(writer, seen, ops)| Step { writer, seen, ops }),
        1..24,
    )
}

fn history(log_type: LogType) -> impl Strategy<Value = (LogType, Vec<Step>)> {
    match log_type {
        LogType::Feed => steps(feed_op()).prop_map(|s| (LogType::Feed, s)).boxed(),
        LogType::Kv => steps(kv_op()).prop_map(|s| (LogType::Kv, s)).boxed(),
        LogType::Graph => steps(graph_op()).prop_map(|s| (LogType::Graph, s)).boxed(),
    }
}

fn any_history() -> impl Strategy<Value = (LogType, Vec<Step>)> {
    prop_oneof![history(LogType::Feed), history(LogType::Kv), history(LogType::Graph)]
}

fn ingest_all(log: &mut MemoryLog, entries: impl IntoIterator<Item = VerifiedEntry>) {
    for e in entries {
        let outcome = log.ingest(e);
        assert!(!matches!(outcome, IngestOutcome::Rejected(_)), "{outcome:?}");
    }
}

proptest! {
    #![proptest_config(ProptestConfig::with_cases(96))]

    /// Any arrival order, with any duplicates, gives the heads and the view of arrival in
    /// creation order, and leaves nothing pending.
    #[test]
    fn arrival_order_and_duplicates_do_not_matter(
        (log_type, steps) in any_history(),
        order in prop::collection::vec(any::<Index>(), 0..64),
        dupes in prop::collection::vec(any::<Index>(), 0..16),
    ) {
        let writers = [key(1), key(2), key(3)];
        let m = manifest(log_type, &writers.iter().collect::<Vec<_>>());
        let entries = build(&m, &writers, &steps);

        let mut reference = MemoryLog::new(m.clone());
        ingest_all(&mut reference, entries.clone());

        let mut shuffled = entries.clone();
        for (i, ix) in order.iter().enumerate() {
            let len = shuffled.len();
            shuffled.swap(i % len, ix.index(len));
        }
        for ix in &dupes {
            shuffled.push(entries[ix.index(entries.len())].clone());
        }
        let mut log = MemoryLog::new(m);
        ingest_all(&mut log, shuffled);

        prop_assert_eq!(log.heads(), reference.heads());
        prop_assert_eq!(log.view(), reference.view());
        prop_assert_eq!(log.len(), reference.len());
        prop_assert_eq!(log.pending_len(), 0);
    }

    /// Two replicas that each saw an arbitrary part of the history, then exchanged
    /// everything, end with the same heads and views as one that saw it all.
    #[test]
    fn partial_overlaps_converge(
        (log_type, steps) in any_history(),
        split in prop::collection::vec(0u8..3, 24),
    ) {
        let writers = [key(1), key(2), key(3)];
        let m = manifest(log_type, &writers.iter().collect::<Vec<_>>());
        let entries = build(&m, &writers, &steps);
        let mut a = MemoryLog::new(m.clone());
        let mut b = MemoryLog::new(m.clone());
        for (e, s) in entries.iter().zip(split.iter().cycle()) {
            if *s != 1 { ingest_all(&mut a, [e.clone()]); }
            if *s != 0 { ingest_all(&mut b, [e.clone()]); }
        }
        ingest_all(&mut a, entries.iter().rev().cloned());
        ingest_all(&mut b, entries.iter().cloned());
        let mut all = MemoryLog::new(m);
        ingest_all(&mut all, entries);
        prop_assert_eq!(a.heads(), all.heads());
        prop_assert_eq!(b.heads(), all.heads());
        prop_assert_eq!(a.view(), all.view());
        prop_assert_eq!(b.view(), all.view());
    }

    /// The kv view keeps, for every key, exactly the op greatest in the total order
    /// `(time, writer, entry hash, op index)`; a delete there leaves a tombstone.
    #[test]
    fn lww_follows_the_total_order((_, steps) in history(LogType::Kv)) {
        let writers = [key(1), key(2), key(3)];
        let m = manifest(LogType::Kv, &writers.iter().collect::<Vec<_>>());
        let entries = build(&m, &writers, &steps);
        let mut expected: BTreeMap<Vec<u8>, (OpId, Option<Vec<u8>>)> = BTreeMap::new();
        for e in &entries {
            for (id, op) in e.op_ids() {
                let (key, value) = match op {
                    Op::Put { key, value } => (key.clone(), Some(value.clone())),
                    Op::Delete { key } => (key.clone(), None),
                    _ => unreachable!(),
                };
                let slot = expected.entry(key).or_insert((id, value.clone()));
                if slot.0 < id { *slot = (id, value); }
            }
        }
        let mut view = LogView::new(LogType::Kv);
        for e in entries.iter().rev() { view.apply(e); }
        let LogView::Kv(map) = view else { unreachable!() };
        let got: BTreeMap<_, _> = map.into_iter().map(|(k, r)| (k, (r.id, r.value))).collect();
        prop_assert_eq!(got, expected);
    }
}

/// An entry whose writer is not on the ACL, or whose op the log's type does not accept,
/// is refused and changes nothing.
#[test]
fn acl_and_op_types_are_enforced() {
    let (alice, mallory) = (key(1), key(9));
    let m = manifest(LogType::Kv, &[&alice]);
    let mut log = MemoryLog::new(m.clone());
    let outsider = build(
        &m,
        &[mallory],
        &[Step { writer: 0, seen: vec![], ops: vec![Op::Put { key: b"k".to_vec(), value: b"v".to_vec() }] }],
    );
    assert!(matches!(log.ingest(outsider[0].clone()), IngestOutcome::Rejected(why) if why.contains("ACL")));
    let wrong_type = build(
        &m,
        &[alice],
        &[Step { writer: 0, seen: vec![], ops: vec![Op::Append { value: b"v".to_vec() }] }],
    );
    assert!(
        matches!(log.ingest(wrong_type[0].clone()), IngestOutcome::Rejected(why) if why.contains("does not accept"))
    );
    assert!(log.is_empty());
}
