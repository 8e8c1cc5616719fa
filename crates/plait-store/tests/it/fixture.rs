//! A data directory written by format version 1 (committed under `tests/fixtures`) still
//! opens, reads back the same state and passes the integrity check.

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

/// The version-1 fixture opens with its logs, views, pending entry and heads intact.
#[tokio::test]
async fn format_v1_fixture_still_opens() {
    assert_eq!(FORMAT_VERSION, 1, "a new format version needs its own fixture next to this one");
    let dir = tempfile::tempdir().unwrap();
    // Opening writes to the directory, so work on a copy.
    copy_dir(&Path::new(env!("CARGO_MANIFEST_DIR")).join("tests/fixtures/format-v1"), dir.path());
    let store = open(dir.path(), &key(99));
    let settings = store.resolve("settings").unwrap();
    assert_eq!((settings.seq, settings.pending, settings.ops), (2, 1, 3));
    assert_eq!(store.get_kv(&settings.log_id, b"theme").unwrap().unwrap().value, b"dark");
    assert!(store.get_kv(&settings.log_id, b"lang").unwrap().is_none());
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
    store.close().await.unwrap();
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
