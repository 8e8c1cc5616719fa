//! Checkpoints, snapshot export and verified import.
//!
//! A checkpoint is a record of a cut: the writer thread takes a fjall snapshot between
//! groups (so it is both consistent and durable) together with the log's seq, heads and
//! counts; the state root is computed from that snapshot while writes go on. Export
//! streams a snapshot from the same cut. Import reads a snapshot twice: first to verify
//! every entry and the trailer, and only then to apply it, in batches that each carry the
//! restore watermark, so a crash leaves a consistent prefix that a second import resumes.

use std::io::Read;

use fjall::Readable;
use plait_core::{
    Checkpoint, DecodedEntry, EntryHash, LogId, SignedManifest, SnapshotHeader, SnapshotItem, SnapshotReader,
    SnapshotWriter, StateRoot, VerifiedEntry, verify_batch,
};
use tokio::sync::oneshot;

use crate::error::{StoreError, StoreResult};
use crate::keys;
use crate::store::{RestoreMark, Store};
use crate::writer::{Command, Cut};

/// Entries verified together on import (one batch verification), and applied together
/// (one atomic batch with its watermark).
const IMPORT_BATCH_ENTRIES: usize = 512;
/// Bytes read from a snapshot file at a time.
const READ_CHUNK_BYTES: usize = 1024 * 1024;

/// What kind of restore an import was.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum RestoreKind {
    /// A full snapshot into a log that had nothing: the state root was checked.
    Full,
    /// A full snapshot into a log that already had entries (duplicates are no-ops).
    Merge,
    /// A delta whose base matched this node's restore watermark.
    Delta,
    /// A delta this node had already applied: nothing to do.
    UpToDate,
}

/// What an import did.
#[derive(Clone, Debug)]
pub struct ImportReport {
    pub log: LogId,
    pub kind: RestoreKind,
    pub checkpoint: Checkpoint,
    pub entries_read: u64,
    pub entries_stored: u64,
}

fn view_keyspaces<'a>(store: &'a Store, manifest: &SignedManifest) -> Vec<&'a fjall::Keyspace> {
    let ks = &store.shared.ks;
    match manifest.manifest().log_type {
        plait_core::LogType::Kv => vec![&ks.kv],
        plait_core::LogType::Feed => vec![&ks.feed],
        plait_core::LogType::Graph => vec![&ks.graph_out],
    }
}

/// The state root of a log's view as `read` sees it: rows are the view keys without the
/// log prefix, with their stored values, in key order.
fn state_root(
    store: &Store,
    read: &impl Readable,
    log: &LogId,
    manifest: &SignedManifest,
) -> StoreResult<[u8; 32]> {
    let mut root = StateRoot::new();
    for keyspace in view_keyspaces(store, manifest) {
        for row in read.prefix(keyspace, log.0) {
            let (k, v) = row.into_inner()?;
            root.push(&k[keys::LOG..], &v);
        }
    }
    Ok(root.finish())
}

impl Store {
    async fn cut(&self, log: LogId) -> StoreResult<Cut> {
        self.call(|reply| Command::Cut { log, reply }).await
    }

    fn checkpoint_of(&self, cut: &Cut, log: LogId) -> StoreResult<Checkpoint> {
        let state_root = state_root(self, &cut.snapshot, &log, &cut.manifest)?;
        let mut heads = cut.heads.clone();
        heads.sort();
        Ok(Checkpoint {
            log,
            epoch: self.epoch(),
            seq: cut.seq,
            heads,
            state_root,
            n_entries: cut.seq,
            n_ops: cut.ops,
        })
    }

    async fn record_checkpoint(&self, checkpoint: Checkpoint) -> StoreResult<()> {
        self.call(|reply: oneshot::Sender<StoreResult<()>>| Command::PutCheckpoint { checkpoint, reply })
            .await
    }

    /// Takes and records a checkpoint of `log`: a consistent, durable cut with the Merkle
    /// root of the view at that cut. Writes go on while the root is computed.
    pub async fn checkpoint(&self, log: LogId) -> StoreResult<Checkpoint> {
        let cut = self.cut(log).await?;
        let store = self.clone();
        let checkpoint = tokio::task::spawn_blocking(move || store.checkpoint_of(&cut, log))
            .await
            .map_err(|e| StoreError::Unavailable(format!("checkpoint task failed: {e}")))??;
        self.record_checkpoint(checkpoint.clone()).await?;
        Ok(checkpoint)
    }

    /// The recorded checkpoints of a log, oldest first.
    pub fn checkpoints(&self, log: &LogId) -> StoreResult<Vec<Checkpoint>> {
        self.shared
            .ks
            .checkpoints
            .prefix(log.0)
            .map(|row| {
                let v = row.value()?;
                Checkpoint::decode(&v).map_err(|e| StoreError::Corrupt(format!("stored checkpoint: {e}")))
            })
            .collect()
    }

    /// This node's restore watermark for a log: the source epoch and seq applied.
    pub fn restore_mark(&self, log: &LogId) -> StoreResult<Option<RestoreMark>> {
        let Some(v) = self.shared.ks.restores.get(log.0)? else { return Ok(None) };
        let (epoch, seq) =
            keys::parse_cursor(&v).ok_or_else(|| StoreError::Corrupt("unreadable restore mark".into()))?;
        Ok(Some(RestoreMark { log: *log, epoch, seq }))
    }

    /// Streams a snapshot of `log` to `sink` from a fresh checkpoint: full, or a delta
    /// after `base_seq`, which must be a checkpoint recorded here. Writes go on meanwhile;
    /// the snapshot is the cut. Returns the checkpoint the snapshot brings a reader to.
    pub async fn export(
        &self,
        log: LogId,
        base_seq: Option<u64>,
        mut sink: impl FnMut(Vec<u8>) -> StoreResult<()> + Send + 'static,
    ) -> StoreResult<Checkpoint> {
        let recorded = self.run_blocking(move |store| store.checkpoints(&log)).await?;
        let base = match base_seq {
            None => None,
            Some(seq) => Some(
                recorded
                    .into_iter()
                    .find(|c| c.seq == seq)
                    .ok_or_else(|| StoreError::FailedPrecondition(format!("no checkpoint at seq {seq} for log {log} on this replica; take a full snapshot, or a delta from a recorded checkpoint")))?,
            ),
        };
        let cut = self.cut(log).await?;
        let store = self.clone();
        let checkpoint = tokio::task::spawn_blocking(move || -> StoreResult<Checkpoint> {
            let checkpoint = store.checkpoint_of(&cut, log)?;
            let header = SnapshotHeader {
                manifest: cut.manifest.bytes().to_vec(),
                checkpoint: checkpoint.clone(),
                base: base.clone(),
            };
            let (mut writer, head) = SnapshotWriter::start(&header);
            sink(head)?;
            let ks = &store.shared.ks;
            let from = keys::log_seq(&log, base.as_ref().map_or(0, |b| b.seq) + 1);
            let to = keys::log_seq(&log, cut.seq);
            for row in cut.snapshot.range(&ks.seq, from..=to) {
                let (k, hash) = row.into_inner()?;
                let seq =
                    keys::u64_at(&k, keys::LOG).ok_or_else(|| StoreError::Corrupt("short seq key".into()))?;
                let hash =
                    EntryHash::from_slice(&hash).ok_or_else(|| StoreError::Corrupt("seq row".into()))?;
                let bytes = cut
                    .snapshot
                    .get(&ks.entries, hash.0)?
                    .ok_or_else(|| StoreError::Corrupt(format!("entry {hash} is missing")))?;
                // Paired verification: what leaves the store is checked again.
                VerifiedEntry::reverify(&bytes, hash)
                    .map_err(|e| StoreError::Corrupt(format!("stored entry {hash} does not verify: {e}")))?;
                sink(writer.entry(seq, &bytes))?;
            }
            sink(writer.finish())?;
            Ok(checkpoint)
        })
        .await
        .map_err(|e| StoreError::Unavailable(format!("export task failed: {e}")))??;
        self.record_checkpoint(checkpoint.clone()).await?;
        Ok(checkpoint)
    }

    /// Imports a snapshot from a file: verifies all of it first (every entry's canonical
    /// form, hash, signature and log, and the trailer), then applies it in batches, each
    /// with the restore watermark. A delta must start at or before this node's watermark
    /// for the same source epoch; otherwise it is refused and nothing is applied.
    pub async fn import_file(&self, path: std::path::PathBuf) -> StoreResult<ImportReport> {
        let verify_path = path.clone();
        let header = tokio::task::spawn_blocking(move || verify_snapshot(&verify_path))
            .await
            .map_err(|e| StoreError::Unavailable(format!("import task failed: {e}")))??;
        let (header, entries_read) = header;
        let manifest = SignedManifest::decode_and_verify(&header.manifest)
            .map_err(|e| StoreError::Invalid(format!("snapshot manifest: {e}")))?;
        let log = manifest.log_id();
        let checkpoint = header.checkpoint.clone();
        let had_entries = self.log(&log).is_some_and(|s| s.seq > 0);
        let mark = self.run_blocking(move |store| store.restore_mark(&log)).await?;
        let kind = match (&header.base, mark) {
            (None, _) => {
                if had_entries {
                    RestoreKind::Merge
                } else {
                    RestoreKind::Full
                }
            }
            (Some(base), Some(m)) if m.epoch == base.epoch && m.seq >= checkpoint.seq => {
                RestoreKind::UpToDate
            }
            (Some(base), Some(m)) if m.epoch == base.epoch && m.seq >= base.seq => RestoreKind::Delta,
            (Some(base), Some(m)) if m.epoch != base.epoch => {
                return Err(StoreError::FailedPrecondition(format!(
                    "the delta is from source epoch {} but this node was restored from epoch {}; restore a full snapshot of the new epoch (or reconcile with a replica)",
                    hex::encode(base.epoch),
                    hex::encode(m.epoch)
                )));
            }
            (Some(base), Some(m)) => {
                return Err(StoreError::FailedPrecondition(format!(
                    "the delta starts after seq {} but this node holds the source only up to seq {}; apply the deltas in between, or restore a full snapshot",
                    base.seq, m.seq
                )));
            }
            (Some(base), None) => {
                return Err(StoreError::FailedPrecondition(format!(
                    "the delta needs a base (source seq {}), but log {log} was never restored here; restore a full snapshot first",
                    base.seq
                )));
            }
        };
        if kind == RestoreKind::UpToDate {
            return Ok(ImportReport { log, kind, checkpoint, entries_read, entries_stored: 0 });
        }
        match self.create_log(manifest.clone()).await {
            Ok(_) => {}
            Err(StoreError::AlreadyExists(m)) => return Err(StoreError::FailedPrecondition(m)),
            Err(e) => return Err(e),
        }
        // Second pass: apply. The file was verified; entries are verified again as they
        // are applied, because they are bytes from a file, not from our store.
        let (tx, mut rx) = tokio::sync::mpsc::channel::<StoreResult<(Vec<VerifiedEntry>, u64)>>(2);
        let read_path = path.clone();
        let reader = tokio::task::spawn_blocking(move || read_batches(&read_path, &tx));
        let mut stored = 0;
        while let Some(batch) = rx.recv().await {
            let (entries, last_seq) = batch?;
            let mark = RestoreMark { log, epoch: checkpoint.epoch, seq: last_seq };
            for outcome in self.ingest_restored(entries, mark).await? {
                if let crate::SubmitOutcome::Stored { .. } = outcome? {
                    stored += 1;
                }
            }
        }
        reader.await.map_err(|e| StoreError::Unavailable(format!("import task failed: {e}")))?;
        // The watermark reaches the checkpoint even when the last entries were duplicates.
        self.ingest_restored(Vec::new(), RestoreMark { log, epoch: checkpoint.epoch, seq: checkpoint.seq })
            .await?;
        if kind == RestoreKind::Full {
            let cut = self.cut(log).await?;
            let store = self.clone();
            let root =
                tokio::task::spawn_blocking(move || state_root(&store, &cut.snapshot, &log, &cut.manifest))
                    .await
                    .map_err(|e| StoreError::Unavailable(format!("state root task failed: {e}")))??;
            if root != checkpoint.state_root {
                return Err(StoreError::Corrupt(format!(
                    "restored log {log}: the state root {} does not match the snapshot's checkpoint {}",
                    hex::encode(root),
                    hex::encode(checkpoint.state_root)
                )));
            }
        }
        Ok(ImportReport { log, kind, checkpoint, entries_read, entries_stored: stored })
    }
}

fn snapshot_error(e: plait_core::SnapshotError) -> StoreError {
    StoreError::Invalid(e.to_string())
}

fn open(path: &std::path::Path) -> StoreResult<std::fs::File> {
    std::fs::File::open(path)
        .map_err(|e| StoreError::Invalid(format!("cannot read snapshot {}: {e}", path.display())))
}

/// Pass one: everything checked, nothing applied. Returns the header and entry count.
fn verify_snapshot(path: &std::path::Path) -> StoreResult<(SnapshotHeader, u64)> {
    let mut file = open(path)?;
    let mut reader = SnapshotReader::new();
    let mut header: Option<SnapshotHeader> = None;
    let mut log = None;
    let mut pending: Vec<DecodedEntry> = Vec::new();
    let mut count = 0u64;
    let mut last_seq = 0u64;
    let mut buf = vec![0u8; READ_CHUNK_BYTES];
    let check = |pending: &mut Vec<DecodedEntry>| -> StoreResult<()> {
        for result in verify_batch(std::mem::take(pending)) {
            result.map_err(|e| StoreError::Invalid(format!("snapshot entry: {e}")))?;
        }
        Ok(())
    };
    loop {
        let n = file.read(&mut buf).map_err(|e| StoreError::Invalid(format!("reading snapshot: {e}")))?;
        if n == 0 {
            break;
        }
        reader.feed(&buf[..n]);
        while let Some(item) = reader.next_item().map_err(snapshot_error)? {
            match item {
                SnapshotItem::Header(h) => {
                    let manifest = SignedManifest::decode_and_verify(&h.manifest)
                        .map_err(|e| StoreError::Invalid(format!("snapshot manifest: {e}")))?;
                    if manifest.log_id() != h.checkpoint.log {
                        return Err(StoreError::Invalid(
                            "the snapshot's checkpoint is for another log than its manifest".into(),
                        ));
                    }
                    log = Some(manifest.log_id());
                    header = Some(h);
                }
                SnapshotItem::Entry { seq, bytes } => {
                    let entry = DecodedEntry::decode(&bytes)
                        .map_err(|e| StoreError::Invalid(format!("snapshot entry at seq {seq}: {e}")))?;
                    if Some(entry.entry().log) != log {
                        return Err(StoreError::Invalid(format!(
                            "snapshot entry at seq {seq} belongs to another log"
                        )));
                    }
                    if seq <= last_seq {
                        return Err(StoreError::Invalid(format!(
                            "snapshot entries are out of seq order at {seq}"
                        )));
                    }
                    last_seq = seq;
                    pending.push(entry);
                    count += 1;
                    if pending.len() == IMPORT_BATCH_ENTRIES {
                        check(&mut pending)?;
                    }
                }
                SnapshotItem::End { .. } => {}
            }
        }
    }
    reader.finish().map_err(snapshot_error)?;
    check(&mut pending)?;
    let header = header.ok_or_else(|| StoreError::Invalid("the snapshot has no header".into()))?;
    if last_seq > header.checkpoint.seq {
        return Err(StoreError::Invalid("the snapshot holds entries past its checkpoint".into()));
    }
    Ok((header, count))
}

/// Pass two: the entries again, in batches with the seq of each batch's last entry.
fn read_batches(
    path: &std::path::Path,
    tx: &tokio::sync::mpsc::Sender<StoreResult<(Vec<VerifiedEntry>, u64)>>,
) {
    let send = |r| tx.blocking_send(r).is_ok();
    let mut file = match open(path) {
        Ok(f) => f,
        Err(e) => {
            send(Err(e));
            return;
        }
    };
    let mut reader = SnapshotReader::new();
    let mut batch: Vec<DecodedEntry> = Vec::new();
    let mut last = 0;
    let mut buf = vec![0u8; READ_CHUNK_BYTES];
    let flush = |batch: &mut Vec<DecodedEntry>, last: u64| -> bool {
        let verified: Result<Vec<_>, _> = verify_batch(std::mem::take(batch)).into_iter().collect();
        match verified {
            Ok(v) => send(Ok((v, last))),
            Err(e) => {
                // Told the importer; either way this reader stops here.
                send(Err(StoreError::Invalid(format!("snapshot entry: {e}"))));
                false
            }
        }
    };
    loop {
        let n = match file.read(&mut buf) {
            Ok(0) => break,
            Ok(n) => n,
            Err(e) => {
                send(Err(StoreError::Invalid(format!("reading snapshot: {e}"))));
                return;
            }
        };
        reader.feed(&buf[..n]);
        loop {
            match reader.next_item() {
                Ok(Some(SnapshotItem::Entry { seq, bytes })) => match DecodedEntry::decode(&bytes) {
                    Ok(e) => {
                        batch.push(e);
                        last = seq;
                        if batch.len() == IMPORT_BATCH_ENTRIES && !flush(&mut batch, last) {
                            return;
                        }
                    }
                    Err(e) => {
                        send(Err(StoreError::Invalid(format!("snapshot entry: {e}"))));
                        return;
                    }
                },
                Ok(Some(_)) => {}
                Ok(None) => break,
                Err(e) => {
                    send(Err(snapshot_error(e)));
                    return;
                }
            }
        }
    }
    if !batch.is_empty() {
        flush(&mut batch, last);
    }
}
