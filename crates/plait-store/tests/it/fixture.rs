//! Data directories written by each format version (committed under `tests/fixtures`)
//! still open, read back the same state and pass the integrity check.

use std::path::Path;

use plait_store::{Direction, FORMAT_VERSION, PageLimit};

use crate::support::{key, open};

fn copy_dir(from: &Path, to: &Path) {
    std::fs::create_dir_all(to).unwrap();
    for entry in std::fs::read_dir(from).unwrap() {
        let entry = entry.unwrap();
        let target = to.join(entry.file_name());
        if entry.file_type().unwrap().is_dir() {
            copy_dir(&entry.path(), &target);
        } else {
            std::fs::copy(entry.path(), target).unwrap();
        }
    }
}

/// Opens a copy of a committed fixture and checks its logs, views, pending entry and
/// heads, and that the integrity check is clean.
async fn open_fixture(name: &str) {
    let dir = tempfile::tempdir().unwrap();
    // Opening writes to the directory, so work on a copy.
    copy_dir(&Path::new(env!("CARGO_MANIFEST_DIR")).join("tests/fixtures").join(name), dir.path());
    // The fixture's replica key (examples/make_fixture.rs), which its logs let write.
    let replica = plait_core::WriterKey::from_secret([1; 32]);
    let store = open(dir.path(), &replica);
    let settings = store.resolve("settings").unwrap();
    assert_eq!((settings.seq, settings.pending, settings.ops), (2, 1, 3));
    assert_eq!(store.get_kv(&settings.log_id, b"theme").unwrap().unwrap().value, b"dark");
    assert!(store.get_kv(&settings.log_id, b"lang").unwrap().is_none());
    // History is there whichever format wrote the directory: the migration to format 3
    // builds it from the stored entries.
    let theme = store.kv_history(&settings.log_id, b"theme", None, PageLimit::rows(10)).unwrap().versions;
    assert_eq!(theme.last().unwrap().value.as_deref(), Some(b"dark".as_slice()));
    assert_eq!(store.get_kv_as_of(&settings.log_id, b"theme", settings.seq).unwrap().unwrap().value, b"dark");
    assert!(store.get_kv_as_of(&settings.log_id, b"theme", 0).unwrap().is_none());
    let chat = store.resolve("chat").unwrap();
    assert_eq!(
        store.read_feed(&chat.log_id, None, PageLimit::rows(10), false).unwrap().items[0].value,
        b"hello"
    );
    let people = store.resolve("people").unwrap();
    assert_eq!(
        store.edges(&people.log_id, b"bob", Direction::In, None, None, PageLimit::rows(10)).unwrap().edges[0]
            .src,
        b"ann"
    );
    let report = store.check_integrity().unwrap();
    assert!(report.is_clean(), "{:?}", report.problems);
    assert_eq!((report.logs, report.entries, report.pending), (3, 4, 1));
    // The next write goes on from the fixture's state.
    let acks = store
        .write(vec![(settings.log_id, plait_core::Op::Put { key: b"lang".to_vec(), value: b"fr".to_vec() })])
        .await
        .unwrap();
    assert_eq!(acks[0].seq, 3);
    assert_eq!(store.get_kv(&settings.log_id, b"lang").unwrap().unwrap().value, b"fr");
    assert!(store.check_integrity().unwrap().is_clean());
    store.close().await.unwrap();
    drop(store);
    // And it opens again as it was left.
    // The fixture's replica key (examples/make_fixture.rs), which its logs let write.
    let replica = plait_core::WriterKey::from_secret([1; 32]);
    let store = open(dir.path(), &replica);
    assert_eq!(store.get_kv(&settings.log_id, b"lang").unwrap().unwrap().value, b"fr");
    assert!(store.check_integrity().unwrap().is_clean());
    store.close().await.unwrap();
}

/// The version-1 fixture (log ids at the start of every key) is migrated when it opens
/// and reads back the same state.
#[tokio::test]
async fn format_v1_fixture_is_migrated() {
    open_fixture("format-v1").await;
}

/// The version-2 fixture (log numbers at the start of the hot keys, no history) is
/// migrated when it opens: its history is built from the entries.
#[tokio::test]
async fn format_v2_fixture_is_migrated() {
    open_fixture("format-v2").await;
}

/// The version-3 fixture (history in the `versions` keyspace) opens as it is.
#[tokio::test]
async fn format_v3_fixture_still_opens() {
    assert_eq!(FORMAT_VERSION, 3, "a new format version needs its own fixture next to these");
    open_fixture("format-v3").await;
}

/// Files under `dir`, recursively.
fn files(dir: &Path) -> Vec<std::path::PathBuf> {
    let mut out = Vec::new();
    for entry in std::fs::read_dir(dir).unwrap() {
        let path = entry.unwrap().path();
        if path.is_dir() { out.extend(files(&path)) } else { out.push(path) }
    }
    out
}

/// A journal whose records were lz4-compressed (what every store wrote before journals
/// were made uncompressed) still replays: the record below is written by fjall with lz4,
/// left unflushed, and is read back after the store has opened and closed over it.
#[tokio::test]
async fn lz4_journal_records_still_replay() {
    use fjall::{CompressionType, Database, KeyspaceCreateOptions, PersistMode};

    let dir = tempfile::tempdir().unwrap();
    open(dir.path(), &key(1)).close().await.unwrap();
    // Large and compressible: over fjall's 4 KiB threshold for compressing a record.
    let value = b"plait journal ".repeat(4096);
    {
        let db = Database::builder(dir.path()).journal_compression(CompressionType::Lz4).open().unwrap();
        let probe = db.keyspace("lz4probe", KeyspaceCreateOptions::default).unwrap();
        probe.insert("k", value.as_slice()).unwrap();
        db.persist(PersistMode::SyncAll).unwrap();
        // Dropped without a flush: the value lives only in the journal.
    }
    let needle = &value[..1024];
    let plain = files(dir.path())
        .into_iter()
        .any(|f| std::fs::read(&f).unwrap().windows(needle.len()).any(|w| w == needle));
    assert!(!plain, "the test's record must be stored compressed for the test to mean anything");

    let store = open(dir.path(), &key(1));
    let report = store.check_integrity().unwrap();
    assert!(report.is_clean(), "{:?}", report.problems);
    store.close().await.unwrap();
    drop(store);

    let db = Database::builder(dir.path()).journal_compression(CompressionType::None).open().unwrap();
    let probe = db.keyspace("lz4probe", KeyspaceCreateOptions::default).unwrap();
    assert_eq!(probe.get("k").unwrap().as_deref(), Some(value.as_slice()));
}
