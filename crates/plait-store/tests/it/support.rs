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
pub(crate) fn op_for(log_type: LogType, k: u8, v: u8, delete: bool) -> Op {
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
