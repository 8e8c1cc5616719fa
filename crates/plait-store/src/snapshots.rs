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
    Checkpoint, EntryHash, LogId, SignedManifest, SnapshotHeader, SnapshotItem, SnapshotReader,
    SnapshotWriter, StateRoot, VerifiedEntry,
};
use tokio::sync::oneshot;

use crate::error::{StoreError, StoreResult};
use crate::keys::{self, LogNo};
use crate::store::{RestoreMark, Store};
use crate::writer::{Command, Cut};

/// Entries verified together on import (one batch verification), and applied together
/// (one atomic batch with its watermark): at most this many, and at most
/// [`IMPORT_BATCH_BYTES`] of them, whichever comes first.
const IMPORT_BATCH_ENTRIES: usize = 512;
/// Bytes of entries in one import batch. Small enough that the writer's group, its
/// memtable inserts and its fsync stay short and the next batch is verified meanwhile;
/// large enough that the fsync per batch costs little.
const IMPORT_BATCH_BYTES: usize = 4 * 1024 * 1024;
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

/// Rows a state-root scan reads between two looks at its budget.
const SCAN_ROWS_PER_LOOK: usize = 1024;

/// The state root of a log's view as `read` sees it: rows are the view keys without the
/// log prefix, with their stored values, in key order.
fn state_root(
    store: &Store,
    read: &impl Readable,
    no: LogNo,
    manifest: &SignedManifest,
) -> StoreResult<[u8; 32]> {
    let root = state_root_within(store, read, no, manifest, &|| false)?;
    Ok(root.expect("a scan that never gives up finishes"))
}

/// [`state_root`], giving up (`None`) as soon as `give_up` says so. It is asked before
/// the first row and every [`SCAN_ROWS_PER_LOOK`] rows.
fn state_root_within(
    store: &Store,
    read: &impl Readable,
    no: LogNo,
    manifest: &SignedManifest,
    give_up: &dyn Fn() -> bool,
) -> StoreResult<Option<[u8; 32]>> {
    let mut root = StateRoot::new();
    let mut rows = 0usize;
    for keyspace in view_keyspaces(store, manifest) {
        for row in read.prefix(keyspace, no.bytes()) {
            if rows.is_multiple_of(SCAN_ROWS_PER_LOOK) && give_up() {
                return Ok(None);
            }
            rows += 1;
            let (k, v) = row.into_inner()?;
            root.push(&k[keys::NO..], &v);
        }
    }
    if give_up() {
        return Ok(None);
    }
    Ok(Some(root.finish()))
}

impl Store {
    async fn cut(&self, log: LogId) -> StoreResult<Cut> {
        self.call(|reply| Command::Cut { log, reply }).await
    }

    fn checkpoint_of(&self, cut: &Cut, log: LogId) -> StoreResult<Checkpoint> {
        let checkpoint = self.checkpoint_within(cut, log, None)?;
        Ok(checkpoint.expect("a scan without a budget finishes"))
    }

    /// The checkpoint of `cut`, or `None` once the writer has taken in more than
    /// `taken_in_max` bytes since the cut (never, for `None`).
    fn checkpoint_within(
        &self,
        cut: &Cut,
        log: LogId,
        taken_in_max: Option<u64>,
    ) -> StoreResult<Option<Checkpoint>> {
        let give_up = || taken_in_max.is_some_and(|max| self.shared.taken_in_since(cut.taken_in) > max);
        let Some(state_root) = state_root_within(self, &cut.snapshot, cut.no, &cut.manifest, &give_up)?
        else {
            return Ok(None);
        };
        let mut heads = cut.heads.clone();
        heads.sort();
        Ok(Some(Checkpoint {
            log,
            epoch: self.epoch(),
            seq: cut.seq,
            heads,
            state_root,
            n_entries: cut.seq,
            n_ops: cut.ops,
        }))
    }

    async fn record_checkpoint(&self, checkpoint: Checkpoint) -> StoreResult<()> {
        self.call(|reply: oneshot::Sender<StoreResult<()>>| Command::PutCheckpoint { checkpoint, reply })
            .await
    }

    /// Takes and records a checkpoint of `log`: a consistent, durable cut with the Merkle
    /// root of the view at that cut. Writes go on while the root is computed.
    pub async fn checkpoint(&self, log: LogId) -> StoreResult<Checkpoint> {
        let checkpoint = self.take_checkpoint(log, None).await?;
        Ok(checkpoint.expect("a scan without a budget finishes"))
    }

    /// [`Store::checkpoint`] with a bound on what it costs in memory: it gives up,
    /// recording nothing (`Ok(None)`), once the writer has taken in more than
    /// `taken_in_max` bytes (entries and ops, as received) while the view is scanned.
    ///
    /// The scan reads a fjall snapshot, and while any snapshot is open the engine keeps
    /// every version of its trees from then on, with the memtables each one references:
    /// every memtable flushed during the scan stays in memory until the scan ends. A
    /// scan of a large view during heavy ingest (a catch-up, a restore) would otherwise
    /// hold what the store took in for as long as the scan runs, which grows with the
    /// view. For automatic checkpoints, which can wait for a quieter moment.
    pub async fn checkpoint_bounded(&self, log: LogId, taken_in_max: u64) -> StoreResult<Option<Checkpoint>> {
        self.take_checkpoint(log, Some(taken_in_max)).await
    }

    async fn take_checkpoint(
        &self,
        log: LogId,
        taken_in_max: Option<u64>,
    ) -> StoreResult<Option<Checkpoint>> {
        let cut = self.cut(log).await?;
        let store = self.clone();
        // The cut (and its snapshot) is dropped when the scan ends, before anything else.
        let checkpoint =
            tokio::task::spawn_blocking(move || store.checkpoint_within(&cut, log, taken_in_max))
                .await
                .map_err(|e| StoreError::Unavailable(format!("checkpoint task failed: {e}")))??;
        let Some(checkpoint) = checkpoint else {
            return Ok(None);
        };
        self.record_checkpoint(checkpoint.clone()).await?;
        self.run_blocking(|store| {
            store.release_scan_versions();
            Ok(())
        })
        .await?;
        Ok(Some(checkpoint))
    }

    /// Lets the engine drop the tree versions a finished scan's snapshot kept, with the
    /// flushed memtables they hold. fjall collects old versions only when a memtable
    /// rotates or a flush lands, so a store that goes quiet right after a scan would
    /// keep them until its next burst of writes (300 MiB on a source that had just
    /// loaded 10M ops). The checkpoint just recorded left the `checkpoints` keyspace's
    /// memtable non-empty: rotating it (a small flush) runs that collection. Nothing is
    /// lost if it fails: the versions go at the next rotation.
    fn release_scan_versions(&self) {
        if let Err(e) = self.shared.ks.checkpoints.rotate_memtable() {
            tracing::warn!(error = %e, "could not rotate the checkpoints memtable; memory a scan held is released at the next flush");
        }
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
            let from = keys::seq_key(cut.no, base.as_ref().map_or(0, |b| b.seq) + 1);
            let to = keys::seq_key(cut.no, cut.seq);
            for row in cut.snapshot.range(&ks.seq, from..=to) {
                let (k, hash) = row.into_inner()?;
                let seq =
                    keys::u64_at(&k, keys::NO).ok_or_else(|| StoreError::Corrupt("short seq key".into()))?;
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

    /// Imports a snapshot from a file. Every entry's canonical form, hash, signature and
    /// log, the seq order and the trailer are checked, and for a full snapshot the
    /// state root it leaves; a snapshot that fails any check leaves nothing stored.
    ///
    /// A full snapshot of a log this node does not host is applied in one pass: each
    /// batch is verified (on several threads) while the writer applies the one before,
    /// and a failure anywhere drops the log again. Into a log that exists (a delta, or a
    /// full snapshot merged into entries already here) the file is verified whole first
    /// and applied in a second pass, so nothing is applied on a refusal. Each applied
    /// batch carries the restore watermark, so a crash leaves a consistent prefix that a
    /// second import resumes. A delta must start at or before this node's watermark for
    /// the same source epoch; otherwise it is refused.
    pub async fn import_file(&self, path: std::path::PathBuf) -> StoreResult<ImportReport> {
        let header_path = path.clone();
        let header = tokio::task::spawn_blocking(move || read_header(&header_path))
            .await
            .map_err(|e| StoreError::Unavailable(format!("import task failed: {e}")))??;
        let manifest = SignedManifest::decode_and_verify(&header.manifest)
            .map_err(|e| StoreError::Invalid(format!("snapshot manifest: {e}")))?;
        let log = manifest.log_id();
        let checkpoint = header.checkpoint.clone();
        let hosted = self.log(&log);
        let had_entries = hosted.as_ref().is_some_and(|s| s.seq > 0);
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
            // Still the whole file is checked: an answer about a file says it is sound.
            let (_, entries_read) = self.scan(&path, &header, None).await?;
            return Ok(ImportReport { log, kind, checkpoint, entries_read, entries_stored: 0 });
        }
        let one_pass = hosted.is_none();
        if !one_pass {
            // Into a log that exists: everything checked before anything is applied.
            self.scan(&path, &header, None).await?;
        }
        match self.create_log(manifest.clone()).await {
            Ok(_) => {}
            Err(StoreError::AlreadyExists(m)) => return Err(StoreError::FailedPrecondition(m)),
            Err(e) => return Err(e),
        }
        let applied = self.apply_snapshot(&path, &header, kind).await;
        match applied {
            Ok((entries_read, entries_stored)) => {
                self.record_restored_checkpoint(&checkpoint).await?;
                Ok(ImportReport { log, kind, checkpoint, entries_read, entries_stored })
            }
            Err(e) => {
                if one_pass {
                    // The log did not exist before this import: taking it away again
                    // leaves the node as it was.
                    if let Err(drop) = self.drop_log(log).await {
                        tracing::error!(%log, error = %drop, "could not drop a refused restore's log");
                    }
                }
                Err(e)
            }
        }
    }

    /// Records the checkpoint a restore brought this replica to as one of its own, at the
    /// seq where the log holds exactly the checkpoint's entries, so that reads as of the
    /// checkpoint answer here as on the source. Only when that seq exists: every head of
    /// the checkpoint is stored (so all its entries are) and the log holds as many
    /// entries as it covers (so no others). A log that also holds entries from elsewhere
    /// answers as of its own seqs only.
    async fn record_restored_checkpoint(&self, checkpoint: &Checkpoint) -> StoreResult<()> {
        let log = checkpoint.log;
        let Some(summary) = self.log(&log) else { return Ok(()) };
        if summary.seq != checkpoint.n_entries {
            tracing::info!(%log, seq = summary.seq, checkpoint_entries = checkpoint.n_entries, "the restored log holds more than the checkpoint; reads as of it are not answered here");
            return Ok(());
        }
        let heads = checkpoint.heads.clone();
        let all_stored = self
            .run_blocking(move |store| -> StoreResult<bool> {
                for head in &heads {
                    match store
                        .shared
                        .ks
                        .by_hash
                        .get(head.0)?
                        .as_deref()
                        .and_then(crate::keys::parse_location)
                    {
                        Some(l) if l.log == log && l.seq <= summary.seq => {}
                        _ => return Ok(false),
                    }
                }
                Ok(true)
            })
            .await?;
        if !all_stored {
            return Ok(());
        }
        self.record_checkpoint(Checkpoint { epoch: self.epoch(), seq: summary.seq, ..checkpoint.clone() })
            .await
    }

    /// Applies a snapshot's entries batch by batch with the restore watermark, then
    /// checks a full restore's state root. Returns entries read and stored.
    async fn apply_snapshot(
        &self,
        path: &std::path::Path,
        header: &SnapshotHeader,
        kind: RestoreKind,
    ) -> StoreResult<(u64, u64)> {
        let checkpoint = &header.checkpoint;
        let log = checkpoint.log;
        let (tx, mut rx) = tokio::sync::mpsc::channel::<(Vec<VerifiedEntry>, u64)>(1);
        let scan = self.scan(path, header, Some(tx));
        // `move`: when applying fails, the receiver goes with it, so the scan's next send
        // fails and the scan stops instead of waiting for room forever.
        let apply = async move {
            let mut stored = 0;
            while let Some((entries, last_seq)) = rx.recv().await {
                let mark = RestoreMark { log, epoch: checkpoint.epoch, seq: last_seq };
                for outcome in self.ingest_restored(entries, mark).await? {
                    // Pending cannot happen in a sound snapshot (seq order has parents
                    // first); a full restore's state root check refuses one that does.
                    if let crate::SubmitOutcome::Stored { .. } = outcome? {
                        stored += 1;
                    }
                }
            }
            Ok::<u64, StoreError>(stored)
        };
        let (scanned, applied) = tokio::join!(scan, apply);
        // A refusal while applying comes first: the scan then only says it was stopped.
        let stored = applied?;
        let (_, entries_read) = scanned?;
        // The watermark reaches the checkpoint even when the last entries were duplicates.
        self.ingest_restored(Vec::new(), RestoreMark { log, epoch: checkpoint.epoch, seq: checkpoint.seq })
            .await?;
        if kind == RestoreKind::Full {
            let cut = self.cut(log).await?;
            let store = self.clone();
            let root =
                tokio::task::spawn_blocking(move || state_root(&store, &cut.snapshot, cut.no, &cut.manifest))
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
        Ok((entries_read, stored))
    }

    /// Reads and checks a whole snapshot file on a blocking thread, handing each batch
    /// of verified entries with the seq of its last entry to `out` when given. Returns
    /// the header and the entry count once the trailer checked out.
    async fn scan(
        &self,
        path: &std::path::Path,
        expected: &SnapshotHeader,
        out: Option<tokio::sync::mpsc::Sender<(Vec<VerifiedEntry>, u64)>>,
    ) -> StoreResult<(SnapshotHeader, u64)> {
        let path = path.to_path_buf();
        let expected = expected.clone();
        tokio::task::spawn_blocking(move || {
            scan_snapshot(&path, &expected, |entries, last_seq| match &out {
                Some(tx) => tx.blocking_send((entries, last_seq)).is_ok(),
                None => true,
            })
        })
        .await
        .map_err(|e| StoreError::Unavailable(format!("import task failed: {e}")))?
    }
}

fn snapshot_error(e: plait_core::SnapshotError) -> StoreError {
    StoreError::Invalid(e.to_string())
}

fn open(path: &std::path::Path) -> StoreResult<std::fs::File> {
    std::fs::File::open(path)
        .map_err(|e| StoreError::Invalid(format!("cannot read snapshot {}: {e}", path.display())))
}

/// Threads that decode and verify an import batch: the machine's cores, at most four.
fn verify_threads() -> usize {
    std::thread::available_parallelism().map_or(1, |n| n.get()).min(4)
}

/// Checks a header as read: its manifest verifies and its checkpoint is of that log.
fn check_header(h: &SnapshotHeader) -> StoreResult<LogId> {
    let manifest = SignedManifest::decode_and_verify(&h.manifest)
        .map_err(|e| StoreError::Invalid(format!("snapshot manifest: {e}")))?;
    if manifest.log_id() != h.checkpoint.log {
        return Err(StoreError::Invalid(
            "the snapshot's checkpoint is for another log than its manifest".into(),
        ));
    }
    Ok(manifest.log_id())
}

/// Reads just the header of a snapshot file, checked.
fn read_header(path: &std::path::Path) -> StoreResult<SnapshotHeader> {
    let mut file = open(path)?;
    let mut reader = SnapshotReader::new();
    let mut buf = vec![0u8; 64 * 1024];
    loop {
        let n = file.read(&mut buf).map_err(|e| StoreError::Invalid(format!("reading snapshot: {e}")))?;
        if n == 0 {
            reader.finish().map_err(snapshot_error)?;
            return Err(StoreError::Invalid("the snapshot has no header".into()));
        }
        reader.feed(&buf[..n]);
        match reader.next_item().map_err(snapshot_error)? {
            Some(SnapshotItem::Header(h)) => {
                check_header(&h)?;
                return Ok(h);
            }
            Some(_) => return Err(StoreError::Invalid("the snapshot does not start with its header".into())),
            None => {}
        }
    }
}

/// One pass over a snapshot file: the header (which must be `expected`), every entry
/// decoded and verified in batches on [`verify_threads`] threads, seq order, each entry's
/// log, and the trailer. Each verified batch goes to `batch` with the seq of its last
/// entry; `batch` returning false means the receiver is gone, and the scan stops.
fn scan_snapshot(
    path: &std::path::Path,
    expected: &SnapshotHeader,
    mut batch: impl FnMut(Vec<VerifiedEntry>, u64) -> bool,
) -> StoreResult<(SnapshotHeader, u64)> {
    let mut file = open(path)?;
    let mut reader = SnapshotReader::new();
    let mut header: Option<SnapshotHeader> = None;
    // `expected` was checked when it was read (`read_header`): its checkpoint's log is
    // its manifest's.
    let log = expected.checkpoint.log;
    let mut raw: Vec<Vec<u8>> = Vec::new();
    let mut raw_bytes = 0usize;
    let mut count = 0u64;
    let mut last_seq = 0u64;
    let mut buf = vec![0u8; READ_CHUNK_BYTES];
    let threads = verify_threads();
    let mut flush = |raw: &mut Vec<Vec<u8>>, last_seq: u64| -> StoreResult<bool> {
        let mut entries = Vec::with_capacity(raw.len());
        for result in plait_core::decode_and_verify(raw, threads) {
            let entry = result.map_err(|e| StoreError::Invalid(format!("snapshot entry: {e}")))?;
            if entry.log() != log {
                return Err(StoreError::Invalid(format!(
                    "snapshot entry {} belongs to another log",
                    entry.hash()
                )));
            }
            entries.push(entry);
        }
        raw.clear();
        Ok(batch(entries, last_seq))
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
                    if header.is_some() || h != *expected {
                        return Err(StoreError::Invalid("the snapshot changed while it was read".into()));
                    }
                    header = Some(h);
                }
                SnapshotItem::Entry { seq, bytes } => {
                    if header.is_none() {
                        return Err(StoreError::Invalid(
                            "the snapshot does not start with its header".into(),
                        ));
                    }
                    if seq <= last_seq {
                        return Err(StoreError::Invalid(format!(
                            "snapshot entries are out of seq order at {seq}"
                        )));
                    }
                    last_seq = seq;
                    count += 1;
                    raw_bytes += bytes.len();
                    raw.push(bytes);
                    if raw.len() == IMPORT_BATCH_ENTRIES || raw_bytes >= IMPORT_BATCH_BYTES {
                        if !flush(&mut raw, last_seq)? {
                            return Err(StoreError::Unavailable("the import stopped".into()));
                        }
                        raw_bytes = 0;
                    }
                }
                SnapshotItem::End { .. } => {}
            }
        }
    }
    reader.finish().map_err(snapshot_error)?;
    let header = header.ok_or_else(|| StoreError::Invalid("the snapshot has no header".into()))?;
    if last_seq > header.checkpoint.seq {
        return Err(StoreError::Invalid("the snapshot holds entries past its checkpoint".into()));
    }
    // The last batch goes out only once the trailer checked out, so a one-pass import
    // never applies the end of a file whose trailer is wrong.
    if !raw.is_empty() && !flush(&mut raw, last_seq)? {
        return Err(StoreError::Unavailable("the import stopped".into()));
    }
    Ok((header, count))
}

#[cfg(test)]
mod tests {
    use std::sync::Arc;

    use plait_core::{Op, WriterKey};
    use rand::SeedableRng;
    use rand::rngs::StdRng;

    use crate::{NoopObserver, Store, StoreConfig};

    async fn kv_store(dir: &std::path::Path) -> (Store, plait_core::LogId) {
        let key = WriterKey::generate(&mut StdRng::seed_from_u64(1));
        let store = Store::open(
            StoreConfig::new(dir, key.clone()).without_disk_floor(),
            &mut StdRng::seed_from_u64(2),
            Arc::new(NoopObserver),
        )
        .unwrap();
        let manifest = crate::test_support::kv_manifest("bounded", &key);
        let (summary, _) = store.create_log(manifest).await.unwrap();
        (store, summary.log_id)
    }

    async fn put(store: &Store, log: plait_core::LogId, from: usize, n: usize) {
        let ops = (from..from + n)
            .map(|i| (log, Op::Put { key: format!("k{i:05}").into_bytes(), value: vec![7; 100] }))
            .collect();
        store.write(ops).await.unwrap();
    }

    /// A bounded checkpoint gives up, recording nothing, when the writer took in more
    /// than its budget after the cut, and finishes the same cut when the budget allows
    /// it; on a quiet store the bounded checkpoint is recorded like any other. Fails when
    /// the budget is not looked at, or is counted from the wrong moment.
    #[tokio::test]
    async fn a_bounded_checkpoint_gives_up_when_writes_arrive_during_its_scan() {
        let dir = tempfile::tempdir().unwrap();
        let (store, log) = kv_store(dir.path()).await;
        put(&store, log, 0, 3000).await;

        let cut = store.cut(log).await.unwrap();
        put(&store, log, 3000, 10).await;
        let at_cut = cut.seq;
        let (s, c) = (store.clone(), cut);
        let (over, within) = tokio::task::spawn_blocking(move || {
            let over = s.checkpoint_within(&c, log, Some(100)).unwrap();
            let within = s.checkpoint_within(&c, log, Some(1 << 20)).unwrap();
            (over, within)
        })
        .await
        .unwrap();
        assert!(over.is_none(), "10 puts of 100-byte values arrived after the cut: over a 100-byte budget");
        let within = within.expect("the same writes fit a 1 MiB budget");
        assert_eq!(within.seq, at_cut, "the checkpoint is of the cut, not of the later writes");
        assert_eq!(within.n_ops, 3000);
        assert!(store.checkpoints(&log).unwrap().is_empty(), "checkpoint_within records nothing");

        let quiet =
            store.checkpoint_bounded(log, 0).await.unwrap().expect("nothing arrives on a quiet store");
        assert_eq!(quiet.n_ops, 3010);
        assert_eq!(store.checkpoints(&log).unwrap(), vec![quiet.clone()]);
        let full = store.checkpoint(log).await.unwrap();
        assert_eq!(full.state_root, quiet.state_root, "the bounded scan computes the same root");
        store.check_integrity().unwrap();
    }

    /// A scan's snapshot keeps the engine's old tree versions (and the flushed memtables
    /// they hold) after it ends, until fjall next collects them; recording a checkpoint
    /// makes it collect at once. Fails when `release_scan_versions` is not called, or no
    /// longer makes fjall drop them.
    #[tokio::test]
    async fn a_recorded_checkpoint_releases_what_an_earlier_scan_kept() {
        use fjall::AbstractTree;

        let dir = tempfile::tempdir().unwrap();
        let (store, log) = kv_store(dir.path()).await;
        let kv = store.shared.ks.kv.clone();
        put(&store, log, 0, 100).await;
        let cut = store.cut(log).await.unwrap();
        for round in 0..3 {
            put(&store, log, 100 + round * 100, 100).await;
            kv.rotate_memtable_and_wait().unwrap();
        }
        assert!(kv.tree.version_free_list_len() >= 2, "an open snapshot keeps the versions flushes replaced");
        drop(cut);
        assert!(kv.tree.version_free_list_len() >= 2, "closing the snapshot alone collects nothing");

        store.checkpoint(log).await.unwrap();
        assert_eq!(kv.tree.version_free_list_len(), 0, "the checkpoint let fjall drop every old version");
        put(&store, log, 1000, 1).await;
        store.check_integrity().unwrap();
    }
}
