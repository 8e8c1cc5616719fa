//! Stores and logs for this crate's unit tests.

use std::path::Path;
use std::sync::Arc;

use plait_core::{LogType, Manifest, SignedManifest, WriterKey, Writers};
use plait_store::{Store, StoreConfig};

/// A real store in `dir`, written by `key`.
pub(crate) async fn open_store(dir: &Path, key: &WriterKey) -> Store {
    let config = StoreConfig::new(dir, key.clone()).without_disk_floor();
    tokio::task::spawn_blocking(move || {
        Store::open(config, &mut rand::rngs::OsRng, Arc::new(plait_store::NoopObserver))
    })
    .await
    .unwrap()
    .unwrap()
}

/// The manifest of a kv log named `name` that `key` creates and writes.
pub(crate) fn kv_manifest(name: &str, key: &WriterKey) -> SignedManifest {
    Manifest {
        name: name.into(),
        log_type: LogType::Kv,
        writers: Writers::keys(vec![key.public()]),
        created_by: key.public(),
        created_at_lamport: 0,
        options: Vec::new(),
    }
    .sign(key)
    .unwrap()
}
