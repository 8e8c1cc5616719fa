//! Opening stores and making manifests and entries for tests.

use std::path::Path;
use std::sync::Arc;

use plait_core::{LogType, Manifest, SignedManifest, WriterKey, Writers};
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
