//! Writes the committed snapshot fixture: a full snapshot of the `settings` log of the
//! format-v1 data-directory fixture. Run from the workspace root only when adding a new
//! snapshot format version's fixture:
//! `cargo run -p plait-store --example make_snapshot_fixture -- crates/plait-store/tests/fixtures/snapshot-v1.snap`

use std::sync::Arc;

use plait_core::WriterKey;
use plait_store::{NoopObserver, Store, StoreConfig};
use rand::SeedableRng;

#[tokio::main]
async fn main() {
    let out = std::env::args().nth(1).expect("usage: make_snapshot_fixture <file>");
    let dir = tempfile::tempdir().expect("temp dir");
    let status = std::process::Command::new("cp")
        .arg("-r")
        .arg(concat!(env!("CARGO_MANIFEST_DIR"), "/tests/fixtures/format-v1/."))
        .arg(dir.path())
        .status()
        .expect("cp");
    assert!(status.success());
    let store = Store::open(
        StoreConfig::new(dir.path(), WriterKey::from_secret([1; 32])),
        &mut rand::rngs::StdRng::seed_from_u64(1),
        Arc::new(NoopObserver),
    )
    .expect("open");
    let log = store.resolve("settings").expect("settings").log_id;
    let mut bytes = Vec::new();
    let sink = std::sync::Arc::new(std::sync::Mutex::new(Vec::new()));
    let s = sink.clone();
    store
        .export(log, None, move |chunk| {
            s.lock().expect("lock").extend(chunk);
            Ok(())
        })
        .await
        .expect("export");
    bytes.extend(sink.lock().expect("lock").iter());
    std::fs::write(&out, bytes).expect("write");
    store.close().await.expect("close");
    println!("snapshot fixture written to {out}");
}
