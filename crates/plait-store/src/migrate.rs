//! Migrations of the on-disk layout, run by `Store::open` before anything else reads the
//! keyspaces.
//!
//! Format 2 puts a 4-byte per-replica log number in place of the 32-byte log id at the
//! start of every key of the keyspaces with a row per entry or op. Migrating a format-1
//! directory first gives every hosted log its number (durably), then rewrites those
//! keyspaces' rows in bounded batches, and only then records format 2. It can stop
//! anywhere (a crash, a full disk) and start again: a key is in the new layout exactly
//! when its first four bytes are a number given to a log, because numbers that equal the
//! first four bytes of a hosted log's id are never given out.
//!
//! Format 3 adds the `versions` keyspace (every kv and graph op by key or edge, with its
//! entry's seq). Migrating a format-2 directory writes those rows from the stored
//! entries, log by log in seq order and in bounded batches, and only then records format
//! 3. The rows are a function of the entries, so a migration cut short simply starts
//! again: writing a row twice writes the same row.

use std::collections::{HashMap, HashSet};

use fjall::{Database, Keyspace, PersistMode};
use plait_core::LogId;

use crate::error::{StoreError, StoreResult};
use crate::keys::{self, LogNo};
use crate::store::{FORMAT_VERSION, Keyspaces};

const _: () = assert!(FORMAT_VERSION == 3, "a new format needs its migration here");

/// `meta` key of the number the next log gets.
pub(crate) const NEXT_LOG_NO: &str = "next_log_no";

/// Rows rewritten per durable batch while migrating.
const MIGRATE_BATCH_ROWS: usize = 10_000;
/// Rows between two progress lines in the log.
const PROGRESS_ROWS: u64 = 1_000_000;

/// The number the next log gets, from `meta`.
pub(crate) fn next_log_no(ks: &Keyspaces) -> StoreResult<u32> {
    match ks.meta.get(NEXT_LOG_NO)? {
        Some(v) => LogNo::parse(&v)
            .map(|n| n.0)
            .ok_or_else(|| StoreError::Corrupt(format!("meta/{NEXT_LOG_NO} is not a 4-byte number"))),
        None => Err(StoreError::Corrupt(format!("meta/{NEXT_LOG_NO} is missing"))),
    }
}

/// The keyspaces whose keys start with the log number in format 2 (the log id in 1).
fn numbered(ks: &Keyspaces) -> [(&'static str, &Keyspace); 7] {
    [
        ("seq", &ks.seq),
        ("heads", &ks.heads),
        ("pending", &ks.pending),
        ("kv", &ks.kv),
        ("feed", &ks.feed),
        ("graph_out", &ks.graph_out),
        ("graph_in", &ks.graph_in),
    ]
}

/// Migrates a format-1 directory to format 2. `rows_max` stops it after about that many
/// rewritten rows, without recording format 2, for tests of a migration cut short.
/// Returns whether it finished.
pub(crate) fn v1_to_v2(db: &Database, ks: &Keyspaces, rows_max: Option<u64>) -> StoreResult<bool> {
    let numbers = number_logs(db, ks)?;
    let given: HashSet<[u8; keys::NO]> = numbers.values().map(|n| n.bytes()).collect();
    tracing::info!(logs = numbers.len(), "migrating the data directory from format 1 to 2");
    let mut rewritten = 0u64;
    for (name, keyspace) in numbered(ks) {
        // Each pass reads from a fresh iterator after the last key it rewrote, so no
        // snapshot is held over the whole migration (it would keep every flushed
        // memtable in memory).
        let mut after: Option<Vec<u8>> = None;
        loop {
            let mut batch = db.batch().durability(Some(PersistMode::SyncData));
            let mut rows = 0usize;
            let iter: Box<dyn Iterator<Item = fjall::Guard>> = match &after {
                None => Box::new(keyspace.iter()),
                Some(k) => {
                    let mut from = k.clone();
                    from.push(0);
                    Box::new(keyspace.range(from..))
                }
            };
            for row in iter {
                let (k, v) = row.into_inner()?;
                if k.get(..keys::NO).is_some_and(|p| given.contains(p)) {
                    continue;
                }
                after = Some(k.to_vec());
                let Some(no) = k.get(..keys::ID).and_then(|id| numbers.get(id)) else {
                    // A row of no hosted log: nothing reads it; leave it.
                    tracing::warn!(keyspace = name, key = %hex::encode(&k), "a row of no hosted log; left as it is");
                    continue;
                };
                let mut new = no.bytes().to_vec();
                new.extend_from_slice(&k[keys::ID..]);
                batch.insert(keyspace, new, v);
                batch.remove(keyspace, k);
                rows += 1;
                if rows == MIGRATE_BATCH_ROWS {
                    break;
                }
            }
            let done = rows < MIGRATE_BATCH_ROWS;
            batch.commit()?;
            let before = rewritten;
            rewritten += rows as u64;
            if rewritten / PROGRESS_ROWS > before / PROGRESS_ROWS {
                tracing::info!(rows = rewritten, keyspace = name, "migrating to format 2");
            }
            if rows_max.is_some_and(|max| rewritten >= max) {
                return Ok(false);
            }
            if done {
                break;
            }
        }
    }
    let mut batch = db.batch().durability(Some(PersistMode::SyncAll));
    batch.insert(&ks.meta, "format", 2u32.to_be_bytes().to_vec());
    batch.commit()?;
    tracing::info!(rows = rewritten, "the data directory is now format 2");
    Ok(true)
}

/// Migrates a format-2 directory to format 3: writes the `versions` rows of every stored
/// op but those the view rows hold. `rows_max` stops it after about that many rows without recording format 3.
/// Returns whether it finished.
pub(crate) fn v2_to_v3(db: &Database, ks: &Keyspaces, rows_max: Option<u64>) -> StoreResult<bool> {
    let mut numbers = Vec::new();
    for row in ks.log_nos.iter() {
        let v = row.value()?;
        numbers
            .push(LogNo::parse(&v).ok_or_else(|| StoreError::Corrupt("a log number is not 4 bytes".into()))?);
    }
    tracing::info!(
        logs = numbers.len(),
        "migrating the data directory from format 2 to 3 (history of every key and edge)"
    );
    let mut written = 0u64;
    let batch_rows = rows_max.map_or(MIGRATE_BATCH_ROWS, |max| (max as usize).clamp(1, MIGRATE_BATCH_ROWS));
    for no in numbers {
        let mut next_seq = 1u64;
        loop {
            let mut batch = db.batch().durability(Some(PersistMode::SyncData));
            let mut rows = 0usize;
            let mut done = true;
            // A fresh iterator per batch, as above: no snapshot is held for long.
            for row in
                ks.seq.range(keys::seq_key(no, next_seq).to_vec()..keys::seq_key(no, u64::MAX).to_vec())
            {
                let (k, hash) = row.into_inner()?;
                let seq = keys::u64_at(&k, keys::NO)
                    .ok_or_else(|| StoreError::Corrupt("a seq key is short".into()))?;
                let hash = plait_core::EntryHash::from_slice(&hash)
                    .ok_or_else(|| StoreError::Corrupt(format!("seq {seq} does not hold an entry hash")))?;
                let bytes = ks
                    .entries
                    .get(hash.0)?
                    .ok_or_else(|| StoreError::Corrupt(format!("entry {hash} at seq {seq} is missing")))?;
                let entry = plait_core::DecodedEntry::decode(&bytes)
                    .map_err(|e| StoreError::Corrupt(format!("entry {hash} at seq {seq}: {e}")))?;
                let clock = entry.entry().clock;
                for (index, op) in entry.entry().ops.iter().enumerate() {
                    let id = plait_core::OpId {
                        time: clock.time,
                        writer: clock.writer,
                        entry: hash,
                        index: index as u32,
                    };
                    // The op a view row holds stays out of the history.
                    let view_row = match op {
                        plait_core::Op::Put { key, .. } | plait_core::Op::Delete { key } => {
                            ks.kv.get(keys::kv_key(no, key))?
                        }
                        plait_core::Op::Link { src, label, dst, .. }
                        | plait_core::Op::Unlink { src, label, dst } => {
                            ks.graph_out.get(keys::edge_key(no, src, label, dst))?
                        }
                        plait_core::Op::Append { .. } => None,
                    };
                    if view_row.as_deref().and_then(keys::parse_register).is_some_and(|r| r.id == id) {
                        continue;
                    }
                    for (key, value) in keys::version_rows(no, seq, &id, op) {
                        batch.insert(&ks.versions, key, value);
                        rows += 1;
                    }
                }
                next_seq = seq + 1;
                if rows >= batch_rows {
                    done = false;
                    break;
                }
            }
            batch.commit()?;
            let before = written;
            written += rows as u64;
            if written / PROGRESS_ROWS > before / PROGRESS_ROWS {
                tracing::info!(rows = written, "migrating to format 3");
            }
            if rows_max.is_some_and(|max| written >= max) {
                return Ok(false);
            }
            if done {
                break;
            }
        }
    }
    let mut batch = db.batch().durability(Some(PersistMode::SyncAll));
    batch.insert(&ks.meta, "format", FORMAT_VERSION.to_be_bytes().to_vec());
    batch.commit()?;
    tracing::info!(rows = written, "the data directory is now format 3");
    Ok(true)
}

/// Gives every hosted log without a number one, durably, and returns every log's number
/// by log id. Numbers equal to the first four bytes of a hosted log's id are skipped, so a
/// rewritten key can never be mistaken for one still to rewrite.
fn number_logs(db: &Database, ks: &Keyspaces) -> StoreResult<HashMap<Vec<u8>, LogNo>> {
    let mut ids = Vec::new();
    for row in ks.logs.iter() {
        let id = row.key()?;
        LogId::from_slice(&id).ok_or_else(|| StoreError::Corrupt("a logs key is not a log id".into()))?;
        ids.push(id.to_vec());
    }
    ids.sort();
    let id_prefixes: HashSet<u32> =
        ids.iter().map(|id| u32::from_be_bytes(id[..keys::NO].try_into().expect("32-byte id"))).collect();
    let mut numbers = HashMap::new();
    for id in &ids {
        if let Some(v) = ks.log_nos.get(id)? {
            let no =
                LogNo::parse(&v).ok_or_else(|| StoreError::Corrupt("a log number is not 4 bytes".into()))?;
            numbers.insert(id.clone(), no);
        }
    }
    let mut next = match ks.meta.get(NEXT_LOG_NO)? {
        Some(_) => next_log_no(ks)?,
        None => 1,
    };
    let mut batch = db.batch().durability(Some(PersistMode::SyncAll));
    for id in &ids {
        if numbers.contains_key(id) {
            continue;
        }
        while id_prefixes.contains(&next) {
            next += 1;
        }
        let no = LogNo(next);
        next += 1;
        batch.insert(&ks.log_nos, id.clone(), no.bytes().to_vec());
        numbers.insert(id.clone(), no);
    }
    batch.insert(&ks.meta, NEXT_LOG_NO, next.to_be_bytes().to_vec());
    batch.commit()?;
    Ok(numbers)
}

#[cfg(test)]
mod tests {
    use std::path::Path;
    use std::sync::Arc;

    use fjall::Database;
    use plait_core::WriterKey;
    use rand::SeedableRng;
    use rand::rngs::StdRng;

    use super::*;
    use crate::{NoopObserver, Store, StoreConfig};

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

    fn format(ks: &Keyspaces) -> u32 {
        u32::from_be_bytes(ks.meta.get("format").unwrap().unwrap().as_ref().try_into().unwrap())
    }

    /// Rows of the numbered keyspaces in the new layout and in the old one.
    fn layouts(ks: &Keyspaces) -> (usize, usize) {
        let given: HashSet<Vec<u8>> = ks.log_nos.iter().map(|r| r.value().unwrap().to_vec()).collect();
        let ids: HashSet<Vec<u8>> = ks.logs.iter().map(|r| r.key().unwrap().to_vec()).collect();
        let (mut new, mut old) = (0, 0);
        for (_, keyspace) in numbered(ks) {
            for row in keyspace.iter() {
                let k = row.key().unwrap();
                if given.contains(&k[..keys::NO]) {
                    new += 1;
                } else {
                    assert!(ids.contains(&k[..keys::ID]), "a row in neither layout");
                    old += 1;
                }
            }
        }
        (new, old)
    }

    /// A migration cut short, as by a crash or a full disk, leaves a directory whose next
    /// open finishes it: afterwards every row is in the new layout, none is lost (the
    /// integrity check rebuilds every view from the entries and compares), and the
    /// directory says format 2.
    #[tokio::test]
    async fn a_migration_cut_short_finishes_at_the_next_open() {
        let dir = tempfile::tempdir().unwrap();
        copy_dir(&Path::new(env!("CARGO_MANIFEST_DIR")).join("tests/fixtures/format-v1"), dir.path());
        let rows = {
            let db = Database::builder(dir.path()).open().unwrap();
            let ks = Keyspaces::open(&db).unwrap();
            assert_eq!(format(&ks), 1);
            let (_, rows) = layouts(&ks);
            assert!(!v1_to_v2(&db, &ks, Some(2)).unwrap(), "the migration stops after its first batch");
            assert_eq!(format(&ks), 1, "a migration cut short does not say it finished");
            let (new, old) = layouts(&ks);
            assert!(new > 0 && old > 0, "the cut leaves both layouts ({new} new, {old} old)");
            assert_eq!(new + old, rows);
            rows
        };
        let store = Store::open(
            StoreConfig::new(dir.path(), WriterKey::from_secret([9; 32])).without_disk_floor(),
            &mut StdRng::seed_from_u64(1),
            Arc::new(NoopObserver),
        )
        .unwrap();
        let settings = store.resolve("settings").unwrap();
        assert_eq!(store.get_kv(&settings.log_id, b"theme").unwrap().unwrap().value, b"dark");
        let report = store.check_integrity().unwrap();
        assert!(report.is_clean(), "{:?}", report.problems);
        assert_eq!((report.entries, report.pending), (4, 1));
        store.close().await.unwrap();
        drop(store);
        let db = Database::builder(dir.path()).open().unwrap();
        let ks = Keyspaces::open(&db).unwrap();
        assert_eq!(format(&ks), FORMAT_VERSION);
        assert_eq!(layouts(&ks), (rows, 0), "every row is rewritten once");
    }

    /// The history migration cut short leaves format 2 with part of the `versions` rows;
    /// the next open writes the rest (rewriting a row is harmless: the same key and
    /// value), the integrity check finds exactly the rows the entries make, and the
    /// directory says format 3.
    #[tokio::test]
    async fn a_history_migration_cut_short_finishes_at_the_next_open() {
        let dir = tempfile::tempdir().unwrap();
        copy_dir(&Path::new(env!("CARGO_MANIFEST_DIR")).join("tests/fixtures/format-v2"), dir.path());
        {
            let db = Database::builder(dir.path()).open().unwrap();
            let ks = Keyspaces::open(&db).unwrap();
            assert_eq!(format(&ks), 2);
            assert_eq!(ks.versions.iter().count(), 0);
            assert!(!v2_to_v3(&db, &ks, Some(1)).unwrap(), "the migration stops after its first batch");
            assert_eq!(format(&ks), 2, "a migration cut short does not say it finished");
            assert!(ks.versions.iter().count() > 0, "the first batch is stored");
        }
        let store = Store::open(
            StoreConfig::new(dir.path(), WriterKey::from_secret([9; 32])).without_disk_floor(),
            &mut StdRng::seed_from_u64(1),
            Arc::new(NoopObserver),
        )
        .unwrap();
        let settings = store.resolve("settings").unwrap();
        let theme = store.kv_history(&settings.log_id, b"theme", None, crate::PageLimit::rows(10)).unwrap();
        assert_eq!(theme.versions.last().unwrap().value.as_deref(), Some(b"dark".as_slice()));
        let report = store.check_integrity().unwrap();
        assert!(report.is_clean(), "{:?}", report.problems);
        store.close().await.unwrap();
        drop(store);
        let db = Database::builder(dir.path()).open().unwrap();
        let ks = Keyspaces::open(&db).unwrap();
        assert_eq!(format(&ks), FORMAT_VERSION);
    }

    /// Numbers are never the first four bytes of a hosted log's id, so the two layouts
    /// cannot be confused, and never reused.
    #[test]
    fn numbers_skip_the_prefixes_of_hosted_log_ids() {
        let dir = tempfile::tempdir().unwrap();
        let db = Database::builder(dir.path()).open().unwrap();
        let ks = Keyspaces::open(&db).unwrap();
        // Two ids that start with the numbers 1 and 2.
        let mut a = [0xaa; 32];
        a[..4].copy_from_slice(&1u32.to_be_bytes());
        let mut b = [0xbb; 32];
        b[..4].copy_from_slice(&2u32.to_be_bytes());
        ks.logs.insert(a, b"manifest").unwrap();
        ks.logs.insert(b, b"manifest").unwrap();
        let numbers = number_logs(&db, &ks).unwrap();
        let mut given: Vec<u32> = numbers.values().map(|n| n.0).collect();
        given.sort();
        assert_eq!(given, [3, 4]);
        assert_eq!(next_log_no(&ks).unwrap(), 5);
        // Numbering again keeps what was given.
        assert_eq!(number_logs(&db, &ks).unwrap(), numbers);
    }
}
