//! Deterministic generators of keys, manifests and entry DAGs.

use plait_core::{EntryDraft, LogType, Manifest, Op, SignedManifest, VerifiedEntry, WriterKey, Writers};
use rand::SeedableRng;
use rand::rngs::StdRng;

pub(crate) fn key(seed: u64) -> WriterKey {
    WriterKey::generate(&mut StdRng::seed_from_u64(seed))
}

pub(crate) fn manifest(log_type: LogType, writers: &[&WriterKey]) -> SignedManifest {
    Manifest {
        name: format!("test-{log_type}"),
        log_type,
        writers: Writers::keys(writers.iter().map(|k| k.public()).collect()),
        created_by: writers[0].public(),
        created_at_lamport: 0,
        options: vec![],
    }
    .sign(writers[0])
    .unwrap()
}

/// One step of a generated history: writer index, which earlier entries it saw (as
/// indices into the entries made so far, reduced modulo their count), and its ops.
#[derive(Clone, Debug)]
pub(crate) struct Step {
    pub(crate) writer: usize,
    pub(crate) seen: Vec<usize>,
    pub(crate) ops: Vec<Op>,
}

/// Builds a valid DAG: each entry's parents are any earlier entries, its clock one past
/// the greatest parent's.
pub(crate) fn build(manifest: &SignedManifest, writers: &[WriterKey], steps: &[Step]) -> Vec<VerifiedEntry> {
    let mut out: Vec<VerifiedEntry> = Vec::new();
    for step in steps {
        let next: Vec<_> = if out.is_empty() {
            vec![]
        } else {
            step.seen.iter().map(|i| out[i % out.len()].hash()).collect()
        };
        let time = 1 + next
            .iter()
            .map(|h| out.iter().find(|e| e.hash() == *h).unwrap().clock().time)
            .max()
            .unwrap_or(0);
        let entry = EntryDraft { log: manifest.log_id(), time, next, refs: vec![], ops: step.ops.clone() }
            .sign(&writers[step.writer % writers.len()])
            .unwrap();
        out.push(entry);
    }
    out
}
