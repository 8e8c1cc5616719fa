//! What this crate's unit tests share.

use plait_core::{LogType, Manifest, SignedManifest, WriterKey, Writers};

/// A kv log named `name` that only `key` may write, created by `key`.
pub(crate) fn kv_manifest(name: &str, key: &WriterKey) -> SignedManifest {
    Manifest {
        name: name.into(),
        log_type: LogType::Kv,
        writers: Writers::keys(vec![key.public()]),
        created_by: key.public(),
        created_at_lamport: 0,
        options: vec![],
    }
    .sign(key)
    .unwrap()
}
