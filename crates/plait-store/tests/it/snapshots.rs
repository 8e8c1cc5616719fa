//! Checkpoints, export and import on real fjall databases: consistent cuts under
//! concurrent writes, full and full-plus-delta restores that reproduce the source's state
//! root and heads, refused deltas, idempotence, damaged files, and a committed fixture.

use std::path::{Path, PathBuf};
use std::sync::{Arc, Mutex};

use plait_core::{LogId, LogType, Op};
use plait_store::{RestoreKind, Store, StoreError};

use crate::support::{key, manifest, open};

async fn export_to(store: &Store, log: LogId, base: Option<u64>, path: &Path) -> plait_core::Checkpoint {
    let buf = Arc::new(Mutex::new(Vec::new()));
    let sink = buf.clone();
    let checkpoint = store
        .export(log, base, move |chunk| {
            sink.lock().unwrap().extend(chunk);
            Ok(())
        })
        .await
        .unwrap();
    std::fs::write(path, buf.lock().unwrap().as_slice()).unwrap();
    checkpoint
}

async fn put_many(store: &Store, log: LogId, prefix: &str, n: usize) {
    for chunk in 0..n.div_ceil(100) {
        let ops = (0..100.min(n - chunk * 100))
            .map(|i| {
                (
                    log,
                    Op::Put {
                        key: format!("{prefix}{}", chunk * 100 + i).into_bytes(),
                        value: b"v".to_vec(),
                    },
                )
            })
            .collect();
        store.write(ops).await.unwrap();
    }
}

fn file(dir: &tempfile::TempDir, name: &str) -> PathBuf {
    dir.path().join(name)
}

/// An export taken while writers keep writing is a consistent cut: its checkpoint's state
/// root equals the root a restored node computes, and its heads are the restored heads.
#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn export_under_writes_is_a_consistent_cut() {
    let dir = tempfile::tempdir().unwrap();
    let writer = key(1);
    let source = open(&dir.path().join("source"), &writer);
    let (log, _) = source.create_log(manifest("kv", LogType::Kv, &[&writer])).await.unwrap();
    let log = log.log_id;
    put_many(&source, log, "before", 500).await;
    let busy = source.clone();
    let load = tokio::spawn(async move { put_many(&busy, log, "during", 3000).await });
    let snap = file(&dir, "full.snap");
    let checkpoint = export_to(&source, log, None, &snap).await;
    load.await.unwrap();
    assert!(checkpoint.seq >= 5);

    let restored = open(&dir.path().join("restored"), &key(2));
    let report = restored.import_file(snap).await.unwrap();
    assert_eq!(report.kind, RestoreKind::Full, "a full restore checks the state root itself");
    let again = restored.checkpoint(log).await.unwrap();
    assert_eq!(again.state_root, checkpoint.state_root);
    assert_eq!(again.heads, checkpoint.heads);
    assert_eq!(again.n_ops, checkpoint.n_ops);
    assert!(restored.check_integrity().unwrap().is_clean());
    source.close().await.unwrap();
    restored.close().await.unwrap();
}

/// A full snapshot plus deltas restores to exactly the source's state at the last delta;
/// the watermark moves with each; a delta already applied is a no-op.
#[tokio::test]
async fn full_plus_deltas_reproduce_the_source() {
    let dir = tempfile::tempdir().unwrap();
    let writer = key(1);
    let source = open(&dir.path().join("source"), &writer);
    let (log, _) = source.create_log(manifest("kv", LogType::Kv, &[&writer])).await.unwrap();
    let log = log.log_id;
    put_many(&source, log, "a", 300).await;
    let full = export_to(&source, log, None, &file(&dir, "full.snap")).await;
    put_many(&source, log, "b", 200).await;
    source.write(vec![(log, Op::Delete { key: b"a1".to_vec() })]).await.unwrap();
    let delta1 = export_to(&source, log, Some(full.seq), &file(&dir, "delta1.snap")).await;
    put_many(&source, log, "c", 100).await;
    let delta2 = export_to(&source, log, Some(delta1.seq), &file(&dir, "delta2.snap")).await;

    let restored = open(&dir.path().join("restored"), &key(2));
    assert_eq!(restored.import_file(file(&dir, "full.snap")).await.unwrap().kind, RestoreKind::Full);
    let r1 = restored.import_file(file(&dir, "delta1.snap")).await.unwrap();
    assert_eq!(r1.kind, RestoreKind::Delta);
    assert_eq!(restored.restore_mark(&log).unwrap().unwrap().seq, delta1.seq);
    let r2 = restored.import_file(file(&dir, "delta2.snap")).await.unwrap();
    assert_eq!(r2.kind, RestoreKind::Delta);
    let mine = restored.checkpoint(log).await.unwrap();
    assert_eq!(mine.state_root, delta2.state_root, "full plus deltas give the source's state root");
    assert_eq!(mine.heads, delta2.heads);
    let again = restored.import_file(file(&dir, "delta2.snap")).await.unwrap();
    assert_eq!((again.kind, again.entries_stored), (RestoreKind::UpToDate, 0));
    let twice = restored.import_file(file(&dir, "full.snap")).await.unwrap();
    assert_eq!(twice.entries_stored, 0, "applying the same snapshot twice changes nothing");
    assert_eq!(restored.checkpoint(log).await.unwrap().state_root, delta2.state_root);
    source.close().await.unwrap();
    restored.close().await.unwrap();
}

/// Deltas on the wrong base are refused with a reason and apply nothing.
#[tokio::test]
async fn deltas_on_the_wrong_base_are_refused() {
    let dir = tempfile::tempdir().unwrap();
    let writer = key(1);
    let source = open(&dir.path().join("source"), &writer);
    let (log, _) = source.create_log(manifest("kv", LogType::Kv, &[&writer])).await.unwrap();
    let log = log.log_id;
    put_many(&source, log, "a", 100).await;
    let full = export_to(&source, log, None, &file(&dir, "full.snap")).await;
    put_many(&source, log, "b", 100).await;
    let d1 = export_to(&source, log, Some(full.seq), &file(&dir, "d1.snap")).await;
    put_many(&source, log, "c", 100).await;
    export_to(&source, log, Some(d1.seq), &file(&dir, "d2.snap")).await;

    let fresh = open(&dir.path().join("fresh"), &key(2));
    let err = fresh.import_file(file(&dir, "d1.snap")).await.unwrap_err();
    assert!(
        matches!(&err, StoreError::FailedPrecondition(m) if m.contains("restore a full snapshot first")),
        "{err}"
    );
    assert!(fresh.log(&log).is_none(), "nothing applied");
    fresh.import_file(file(&dir, "full.snap")).await.unwrap();
    let err = fresh.import_file(file(&dir, "d2.snap")).await.unwrap_err();
    assert!(matches!(&err, StoreError::FailedPrecondition(m) if m.contains("deltas in between")), "{err}");
    assert_eq!(fresh.restore_mark(&log).unwrap().unwrap().seq, full.seq, "the watermark did not move");
    // A delta from another source epoch.
    // A node of its own epoch (the test helper's stores share a seeded one).
    let other = Store::open(
        plait_store::StoreConfig::new(dir.path().join("other"), writer.clone()).without_disk_floor(),
        &mut rand::rngs::OsRng,
        Arc::new(plait_store::NoopObserver),
    )
    .unwrap();
    other.import_file(file(&dir, "full.snap")).await.unwrap();
    let c = other.checkpoint(log).await.unwrap();
    put_many(&other, log, "x", 10).await;
    export_to(&other, log, Some(c.seq), &file(&dir, "foreign.snap")).await;
    let err = fresh.import_file(file(&dir, "foreign.snap")).await.unwrap_err();
    assert!(matches!(&err, StoreError::FailedPrecondition(m) if m.contains("epoch")), "{err}");
    for s in [source, fresh, other] {
        s.close().await.unwrap();
    }
}

/// Truncated, corrupted and wrongly versioned snapshot files are refused before anything
/// is applied.
#[tokio::test]
async fn damaged_snapshots_apply_nothing() {
    let dir = tempfile::tempdir().unwrap();
    let writer = key(1);
    let source = open(&dir.path().join("source"), &writer);
    let (log, _) = source.create_log(manifest("kv", LogType::Kv, &[&writer])).await.unwrap();
    put_many(&source, log.log_id, "a", 1000).await;
    export_to(&source, log.log_id, None, &file(&dir, "full.snap")).await;
    let good = std::fs::read(file(&dir, "full.snap")).unwrap();
    let target = open(&dir.path().join("target"), &key(2));
    let mut truncated = good.clone();
    truncated.truncate(good.len() - 20);
    let mut flipped = good.clone();
    let at = good.len() * 2 / 3;
    flipped[at] ^= 1;
    let mut version = good.clone();
    version[9] = 2;
    for (name, bytes, words) in
        [("truncated", truncated, "truncated"), ("flipped", flipped, ""), ("version", version, "version 2")]
    {
        std::fs::write(file(&dir, name), bytes).unwrap();
        let err = target.import_file(file(&dir, name)).await.unwrap_err();
        assert!(matches!(&err, StoreError::Invalid(m) if m.contains(words)), "{name}: {err}");
        assert!(target.log(&log.log_id).is_none(), "{name}: nothing was applied");
    }
    let missing = target.import_file(file(&dir, "nope.snap")).await.unwrap_err();
    assert!(matches!(missing, StoreError::Invalid(_)));
    source.close().await.unwrap();
    target.close().await.unwrap();
}

/// Every row of every keyspace but `meta` in a closed data directory, read with the
/// engine itself, so nothing the store's own API hides can hide here.
fn rows_outside_meta(path: &Path) -> Vec<(String, Vec<u8>)> {
    let db = fjall::Database::builder(path).open().unwrap();
    let mut rows = Vec::new();
    for name in db.list_keyspace_names() {
        let name: &str = name.as_ref();
        let name = name.to_owned();
        if name == "meta" {
            continue;
        }
        let keyspace = db.keyspace(&name, fjall::KeyspaceCreateOptions::default).unwrap();
        for row in keyspace.iter() {
            rows.push((name.clone(), row.key().unwrap().to_vec()));
        }
    }
    rows
}

/// A full snapshot of a log the node does not host is applied as it is verified, batch
/// by batch; when a later batch, or the trailer, turns out bad, the log is dropped again
/// with every row it had (entries, views, heads, counters, restore watermark), the data
/// directory checks clean, and the good snapshot then restores as if nothing happened.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_refused_one_pass_restore_leaves_no_row() {
    let dir = tempfile::tempdir().unwrap();
    let writer = key(1);
    let source = open(&dir.path().join("source"), &writer);
    let (log, _) = source.create_log(manifest("kv", LogType::Kv, &[&writer])).await.unwrap();
    let log = log.log_id;
    // About 6 MiB of entries: more than one import batch (4 MiB), so the first batch is
    // applied before the damage is found.
    for round in 0..15u32 {
        let ops = (0..100u32)
            .map(|i| {
                (log, Op::Put { key: format!("k{round}-{i}").into_bytes(), value: vec![round as u8; 4096] })
            })
            .collect();
        source.write(ops).await.unwrap();
    }
    let checkpoint = export_to(&source, log, None, &file(&dir, "full.snap")).await;
    source.close().await.unwrap();
    let good = std::fs::read(file(&dir, "full.snap")).unwrap();
    assert!(good.len() > 5 * 1024 * 1024, "the snapshot spans several batches: {} bytes", good.len());

    let target_dir = dir.path().join("target");
    let mut flipped = good.clone();
    let at = good.len() * 9 / 10;
    flipped[at] ^= 1;
    let mut truncated = good.clone();
    truncated.truncate(good.len() - 20);
    for (name, bytes) in [("flipped", flipped), ("truncated", truncated)] {
        let target = open(&target_dir, &key(2));
        std::fs::write(file(&dir, name), bytes).unwrap();
        let err = target.import_file(file(&dir, name)).await.unwrap_err();
        assert!(matches!(&err, StoreError::Invalid(_)), "{name}: {err}");
        assert!(target.log(&log).is_none(), "{name}: the log is gone");
        assert_eq!(target.restore_mark(&log).unwrap(), None, "{name}: no restore watermark");
        assert!(target.get_kv(&log, b"k0-0").unwrap().is_none(), "{name}: no view row");
        let report = target.check_integrity().unwrap();
        assert!(report.is_clean() && report.logs == 0, "{name}: {report:?}");
        target.close().await.unwrap();
        drop(target);
        assert_eq!(rows_outside_meta(&target_dir), Vec::new(), "{name}: no row outside meta");
    }
    let target = open(&target_dir, &key(2));
    let report = target.import_file(file(&dir, "full.snap")).await.unwrap();
    assert_eq!((report.kind, report.entries_stored), (RestoreKind::Full, checkpoint.n_entries));
    assert_eq!(target.get_kv(&log, b"k14-99").unwrap().unwrap().value, vec![14u8; 4096]);
    assert!(target.check_integrity().unwrap().is_clean());
    target.close().await.unwrap();
}

/// A snapshot whose entries all verify but that the store refuses as it applies them
/// (signed by a writer the log's ACL does not name), spanning several import batches:
/// the import fails promptly with the store's reason instead of waiting on a reader
/// that has no one left to read for, and leaves nothing behind.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_snapshot_the_store_refuses_stops_the_import() {
    let dir = tempfile::tempdir().unwrap();
    let (owner, stranger) = (key(1), key(9));
    let m = manifest("kv", LogType::Kv, &[&owner]);
    let log = m.log_id();
    // 1,500 entries: three batches of at most 512, so the reader is still sending when
    // the first batch is refused.
    let entries: Vec<_> = (1..=1500u64)
        .map(|time| {
            plait_core::EntryDraft {
                log,
                time,
                next: vec![],
                refs: vec![],
                ops: vec![Op::Put { key: format!("k{time}").into_bytes(), value: b"v".to_vec() }],
            }
            .sign(&stranger)
            .unwrap()
        })
        .collect();
    let checkpoint = plait_core::Checkpoint {
        log,
        epoch: [4; 16],
        seq: entries.len() as u64,
        heads: vec![],
        state_root: [0; 32],
        n_entries: entries.len() as u64,
        n_ops: entries.len() as u64,
    };
    let header = plait_core::SnapshotHeader { manifest: m.bytes().to_vec(), checkpoint, base: None };
    let (mut writer, mut bytes) = plait_core::SnapshotWriter::start(&header);
    for (i, e) in entries.iter().enumerate() {
        bytes.extend(writer.entry(i as u64 + 1, e.bytes()));
    }
    bytes.extend(writer.finish());
    std::fs::write(file(&dir, "stranger.snap"), bytes).unwrap();

    let target = open(&dir.path().join("target"), &key(2));
    let import = target.import_file(file(&dir, "stranger.snap"));
    let err = tokio::time::timeout(std::time::Duration::from_secs(60), import)
        .await
        .expect("the import ends instead of hanging")
        .unwrap_err();
    assert!(matches!(&err, StoreError::PermissionDenied(m) if m.contains("ACL")), "{err}");
    assert!(target.log(&log).is_none(), "the log is dropped again");
    let report = target.check_integrity().unwrap();
    assert!(report.is_clean() && report.logs == 0, "{report:?}");
    // The next good write goes on normally.
    let (other, _) = target.create_log(manifest("other", LogType::Kv, &[&key(2)])).await.unwrap();
    target.write(vec![(other.log_id, Op::Put { key: b"a".to_vec(), value: b"1".to_vec() })]).await.unwrap();
    assert!(target.check_integrity().unwrap().is_clean());
    target.close().await.unwrap();
}

/// The committed version-1 snapshot still imports and gives the state it was taken from.
#[tokio::test]
async fn snapshot_v1_fixture_still_imports() {
    let dir = tempfile::tempdir().unwrap();
    let store = open(dir.path(), &key(3));
    let fixture = Path::new(env!("CARGO_MANIFEST_DIR")).join("tests/fixtures/snapshot-v1.snap");
    let report = store.import_file(fixture).await.unwrap();
    assert_eq!((report.kind, report.entries_read), (RestoreKind::Full, 2));
    assert_eq!(store.get_kv(&report.log, b"theme").unwrap().unwrap().value, b"dark");
    assert!(store.get_kv(&report.log, b"lang").unwrap().is_none());
    store.close().await.unwrap();
}
