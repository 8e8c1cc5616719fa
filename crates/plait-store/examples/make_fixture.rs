//! Writes the data-directory fixture that `tests/it/fixture.rs` opens, so a future change
//! to the on-disk layout that cannot read the current format version fails a test.
//!
//! Run from the workspace root only when adding a new format version's fixture:
//! `cargo run -p plait-store --example make_fixture -- crates/plait-store/tests/fixtures/format-v3`

use std::sync::Arc;

use plait_core::{EntryDraft, LogType, Manifest, Op, WriterKey, Writers};
use plait_store::{IngestSource, NoopObserver, Store, StoreConfig};
use rand::SeedableRng;
use rand::rngs::StdRng;

#[tokio::main]
async fn main() {
    let out = std::env::args().nth(1).expect("usage: make_fixture <empty directory>");
    let replica = WriterKey::from_secret([1; 32]);
    let client = WriterKey::from_secret([2; 32]);
    let store = Store::open(
        StoreConfig::new(&out, replica.clone()),
        &mut StdRng::seed_from_u64(1),
        Arc::new(NoopObserver),
    )
    .expect("open");
    let manifest = |name: &str, log_type| {
        Manifest {
            name: name.into(),
            log_type,
            writers: Writers::keys(vec![replica.public(), client.public()]),
            created_by: replica.public(),
            created_at_lamport: 0,
            options: vec![],
        }
        .sign(&replica)
        .expect("sign")
    };
    let (kv, _) = store.create_log(manifest("settings", LogType::Kv)).await.expect("kv");
    let (feed, _) = store.create_log(manifest("chat", LogType::Feed)).await.expect("feed");
    let (graph, _) = store.create_log(manifest("people", LogType::Graph)).await.expect("graph");
    store
        .write(vec![
            (kv.log_id, Op::Put { key: b"theme".to_vec(), value: b"dark".to_vec() }),
            (kv.log_id, Op::Put { key: b"lang".to_vec(), value: b"en".to_vec() }),
            (feed.log_id, Op::Append { value: b"hello".to_vec() }),
            (
                graph.log_id,
                Op::Link {
                    src: b"ann".to_vec(),
                    label: "knows".into(),
                    dst: b"bob".to_vec(),
                    props: b"{}".to_vec(),
                },
            ),
        ])
        .await
        .expect("write");
    store.write(vec![(kv.log_id, Op::Delete { key: b"lang".to_vec() })]).await.expect("delete");
    // A pending entry: its parent is never stored.
    let orphan = EntryDraft {
        log: kv.log_id,
        time: 9,
        next: vec![plait_core::EntryHash([0xab; 32])],
        refs: vec![],
        ops: vec![Op::Put { key: b"orphan".to_vec(), value: b"1".to_vec() }],
    }
    .sign(&client)
    .expect("sign");
    store.ingest(vec![orphan], IngestSource::Submit).await.expect("ingest");
    store.close().await.expect("close");
    println!("fixture written to {out}");
}
