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
