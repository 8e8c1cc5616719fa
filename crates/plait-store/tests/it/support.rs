//! Opening stores and making manifests and entries for tests.

use std::path::Path;
use std::sync::Arc;

use plait_core::{EntryDraft, LogType, Manifest, Op, SignedManifest, VerifiedEntry, WriterKey, Writers};
use plait_store::{NoopObserver, Store, StoreConfig};
use rand::SeedableRng;
use rand::rngs::StdRng;

pub(crate) fn key(seed: u64) -> WriterKey {
    WriterKey::generate(&mut StdRng::seed_from_u64(seed))
}

pub(crate) fn open(path: &Path, writer: &WriterKey) -> Store {
    Store::open(
        StoreConfig::new(path, writer.clone()).without_disk_floor(),
        &mut StdRng::seed_from_u64(7),
        Arc::new(NoopObserver),
    )
    .unwrap()
}

pub(crate) fn manifest(name: &str, log_type: LogType, writers: &[&WriterKey]) -> SignedManifest {
    Manifest {
        name: name.into(),
        log_type,
        writers: Writers::keys(writers.iter().map(|k| k.public()).collect()),
        created_by: writers[0].public(),
        created_at_lamport: 0,
        options: vec![],
    }
    .sign(writers[0])
    .unwrap()
}

/// An entry by `writer` of one put of `k` at clock `time` after `next`, signed.
pub(crate) fn entry(
    writer: &WriterKey,
    log: plait_core::LogId,
    time: u64,
    next: Vec<plait_core::EntryHash>,
    k: &str,
) -> VerifiedEntry {
    EntryDraft {
        log,
        time,
        next,
        refs: vec![],
        ops: vec![Op::Put { key: k.as_bytes().to_vec(), value: b"v".to_vec() }],
    }
    .sign(writer)
    .unwrap()
}

/// A small op of `log_type` on one of three keys (or edges out of them), from generated
/// numbers: what the property tests build entries of.
fn op_for(log_type: LogType, k: u8, v: u8, delete: bool) -> Op {
    let key = vec![b'a' + k % 3];
    match (log_type, delete) {
        (LogType::Kv, false) => Op::Put { key, value: vec![v] },
        (LogType::Kv, true) => Op::Delete { key },
        (LogType::Feed, _) => Op::Append { value: vec![v] },
        (LogType::Graph, false) => {
            Op::Link { src: key, label: "l".into(), dst: vec![b'x' + v % 2], props: vec![v] }
        }
        (LogType::Graph, true) => Op::Unlink { src: key, label: "l".into(), dst: vec![b'x' + v % 2] },
    }
}

/// One generated step of a property test: a writer (index), parents (indices into the
/// entries made so far) and ops (key, value, delete).
pub(crate) type Step = (usize, Vec<usize>, Vec<(u8, u8, bool)>);

/// Entries signed by `writers` from generated steps, each on top of the earlier entries
/// its step names, with a clock one past its parents'.
pub(crate) fn signed_entries(
    m: &SignedManifest,
    writers: &[WriterKey],
    steps: &[Step],
) -> Vec<VerifiedEntry> {
    let log_type = m.manifest().log_type;
    let mut entries: Vec<VerifiedEntry> = Vec::new();
    for (w, seen, ops) in steps {
        let next: Vec<_> = if entries.is_empty() {
            vec![]
        } else {
            seen.iter().map(|i| entries[i % entries.len()].hash()).collect()
        };
        let time = 1 + next
            .iter()
            .map(|h| entries.iter().find(|e| e.hash() == *h).unwrap().clock().time)
            .max()
            .unwrap_or(0);
        let ops = ops.iter().map(|(k, v, d)| op_for(log_type, *k, *v, *d)).collect();
        entries
            .push(EntryDraft { log: m.log_id(), time, next, refs: vec![], ops }.sign(&writers[*w]).unwrap());
    }
    entries
}

/// `entries` in a generated order, with the first `duplicates` sent again at the end.
pub(crate) fn arrival(
    entries: &[VerifiedEntry],
    shuffle: &[proptest::sample::Index],
    duplicates: usize,
) -> Vec<VerifiedEntry> {
    let mut arrival = entries.to_vec();
    for (i, ix) in shuffle.iter().enumerate() {
        let len = arrival.len();
        arrival.swap(i % len, ix.index(len));
    }
    arrival.extend(entries.iter().take(duplicates).cloned());
    arrival
}
