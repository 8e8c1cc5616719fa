//! Backups: snapshots of logs written to an object store (`file://` directories, `s3://`
//! buckets through the `object_store` crate), a catalog that lists them, retention, and
//! restoring a fresh data directory from a full backup plus its deltas.
//!
//! Layout under the destination: `catalog.json` (its format is
//! `plait_core::catalog`), and one object per snapshot at
//! `logs/<log id>/<backup id>.snap`. A snapshot is exported to a local file, flushed and
//! fsynced, read back and verified (trailer digest, entry count, checkpoint) before it is
//! uploaded; the catalog is rewritten only after the objects it names are complete. So a
//! catalog never lists a truncated or damaged snapshot, and a crash mid-backup leaves at
//! most unreferenced objects.

use std::io::{Read, Write};
use std::path::{Path, PathBuf};
use std::sync::{Arc, Mutex};

use futures::StreamExt;
use object_store::path::Path as ObjectPath;
use object_store::{ObjectStore, ObjectStoreExt, PutPayload};
use plait_core::catalog::{BackupKind, Catalog, CatalogEntry};
use plait_core::{Checkpoint, LogId, SnapshotItem, SnapshotReader};
use plait_store::{ImportReport, LogSummary, Store, StoreError};
use tokio::io::AsyncWriteExt;

use crate::error::{ReplicaError, ReplicaResult};

const CATALOG_KEY: &str = "catalog.json";
/// Upload part size: large snapshots go up in parts, never whole in memory.
const PART_BYTES: usize = 16 * 1024 * 1024;
/// Bytes read at a time when verifying a snapshot file.
const VERIFY_READ_BYTES: usize = 1024 * 1024;

/// Where backups go, and how to reach it.
pub(crate) struct Destination {
    store: Arc<dyn ObjectStore>,
    prefix: ObjectPath,
    pub(crate) url: String,
}

/// S3 settings that may come from flags instead of the environment.
#[derive(Clone, Debug, Default)]
pub(crate) struct S3Options {
    pub(crate) endpoint: Option<String>,
    pub(crate) region: Option<String>,
    pub(crate) allow_http: bool,
}

impl Destination {
    /// Parses `file:///dir` or `s3://bucket/prefix`. Credentials for S3 come from the
    /// environment (`AWS_ACCESS_KEY_ID`, `AWS_SECRET_ACCESS_KEY`, `AWS_REGION`,
    /// `AWS_ENDPOINT`, `AWS_ALLOW_HTTP`), overridden by `options`. Every failure here is
    /// the destination's setting, so it is `Invalid`.
    pub(crate) fn parse(url: &str, options: &S3Options) -> ReplicaResult<Destination> {
        let invalid = ReplicaError::Invalid;
        if let Some(path) = url.strip_prefix("file://") {
            if !path.starts_with('/') {
                return Err(invalid(format!(
                    "a file:// destination needs an absolute path (file:///var/backups/plait), got {url:?}"
                )));
            }
            std::fs::create_dir_all(path)
                .map_err(|e| invalid(format!("cannot create backup directory {path}: {e}")))?;
            let store = object_store::local::LocalFileSystem::new_with_prefix(path)
                .map_err(|e| invalid(format!("cannot use {path} as a backup directory: {e}")))?;
            return Ok(Destination {
                store: Arc::new(store),
                prefix: ObjectPath::default(),
                url: url.to_owned(),
            });
        }
        if let Some(rest) = url.strip_prefix("s3://") {
            let (bucket, prefix) = rest.split_once('/').unwrap_or((rest, ""));
            if bucket.is_empty() {
                return Err(invalid(format!(
                    "an s3:// destination needs a bucket: s3://bucket/prefix, got {url:?}"
                )));
            }
            let mut builder = object_store::aws::AmazonS3Builder::from_env().with_bucket_name(bucket);
            if let Some(endpoint) = &options.endpoint {
                builder = builder.with_endpoint(endpoint);
            }
            if let Some(region) = &options.region {
                builder = builder.with_region(region);
            }
            if options.allow_http {
                builder = builder.with_allow_http(true);
            }
            let store =
                builder.build().map_err(|e| invalid(format!("cannot configure S3 for {url}: {e}")))?;
            return Ok(Destination {
                store: Arc::new(store),
                prefix: ObjectPath::from(prefix),
                url: url.to_owned(),
            });
        }
        Err(invalid(format!(
            "unsupported backup destination {url:?}: use file:///absolute/dir or s3://bucket/prefix"
        )))
    }

    fn key(&self, relative: &str) -> ObjectPath {
        let mut path = self.prefix.clone();
        for part in relative.split('/') {
            path = path.join(part);
        }
        path
    }

    /// The catalog, or `None` if the destination has none yet.
    pub(crate) async fn catalog(&self) -> ReplicaResult<Option<Catalog>> {
        match self.store.get(&self.key(CATALOG_KEY)).await {
            Ok(result) => {
                let bytes = result.bytes().await.map_err(|e| classify(e, &self.url))?;
                let catalog = Catalog::decode(&bytes)
                    .map_err(|e| ReplicaError::from(e).context(format!("the catalog at {}", self.url)))?;
                Ok(Some(catalog))
            }
            Err(object_store::Error::NotFound { .. }) => Ok(None),
            Err(e) => Err(classify(e, &self.url)),
        }
    }

    async fn write_catalog(&self, catalog: &Catalog) -> ReplicaResult<()> {
        let bytes = catalog.encode().map_err(|e| {
            ReplicaError::from(e).context(format!("cannot write the catalog at {}", self.url))
        })?;
        self.store
            .put(&self.key(CATALOG_KEY), PutPayload::from(bytes))
            .await
            .map_err(|e| classify(e, &self.url))?;
        Ok(())
    }

    async fn upload(&self, key: &str, file: &Path) -> ReplicaResult<u64> {
        let read_error = |e| ReplicaError::io(format!("reading the snapshot {}", file.display()), e);
        let mut upload =
            self.store.put_multipart(&self.key(key)).await.map_err(|e| classify(e, &self.url))?;
        let mut reader = tokio::fs::File::open(file).await.map_err(read_error)?;
        let mut total = 0u64;
        loop {
            let mut part = vec![0u8; PART_BYTES];
            let mut filled = 0;
            while filled < PART_BYTES {
                let n = tokio::io::AsyncReadExt::read(&mut reader, &mut part[filled..])
                    .await
                    .map_err(read_error)?;
                if n == 0 {
                    break;
                }
                filled += n;
            }
            if filled == 0 {
                break;
            }
            part.truncate(filled);
            total += filled as u64;
            upload.put_part(PutPayload::from(part)).await.map_err(|e| classify(e, &self.url))?;
            if filled < PART_BYTES {
                break;
            }
        }
        upload.complete().await.map_err(|e| classify(e, &self.url))?;
        Ok(total)
    }

    async fn download(&self, key: &str, file: &Path) -> ReplicaResult<u64> {
        let write_error = |e| ReplicaError::io(format!("writing {}", file.display()), e);
        let result = self.store.get(&self.key(key)).await.map_err(|e| classify(e, &self.url))?;
        let mut stream = result.into_stream();
        let mut out = tokio::fs::File::create(file).await.map_err(write_error)?;
        let mut total = 0u64;
        while let Some(chunk) = stream.next().await {
            let chunk = chunk.map_err(|e| classify(e, &self.url))?;
            total += chunk.len() as u64;
            out.write_all(&chunk).await.map_err(write_error)?;
        }
        out.flush().await.map_err(write_error)?;
        Ok(total)
    }

    async fn delete(&self, key: &str) -> ReplicaResult<()> {
        match self.store.delete(&self.key(key)).await {
            Ok(()) | Err(object_store::Error::NotFound { .. }) => Ok(()),
            Err(e) => Err(classify(e, &self.url)),
        }
    }
}

/// Classifies an object store failure by its typed variant, never by its text, and says
/// what to check. Only transport trouble is `Unavailable`: a client retries that, and
/// retrying a refused credential forever helps nobody.
fn classify(e: object_store::Error, url: &str) -> ReplicaError {
    use object_store::Error as E;
    match e {
        // Both are PERMISSION_DENIED, not UNAUTHENTICATED: S3 answers a wrong secret
        // (SignatureDoesNotMatch) and an unknown key id (InvalidAccessKeyId) with 403, the
        // same as a policy refusal, so object_store cannot tell them apart anyway; and
        // UNAUTHENTICATED would tell the gRPC caller that *its* credentials to plaitd are
        // bad, while what is wrong is the replica's configuration. Neither is retried.
        E::PermissionDenied { .. } | E::Unauthenticated { .. } => ReplicaError::PermissionDenied(format!(
            "access to {url} was denied: check the credentials (AWS_ACCESS_KEY_ID / AWS_SECRET_ACCESS_KEY) and that they may read and write the bucket: {e}"
        )),
        E::NotFound { .. } => {
            ReplicaError::NotFound(format!("{url}: not found: check that the bucket exists: {e}"))
        }
        E::AlreadyExists { .. } => ReplicaError::AlreadyExists(format!("backup destination {url}: {e}")),
        E::Precondition { .. } | E::NotModified { .. } => {
            ReplicaError::FailedPrecondition(format!("backup destination {url}: {e}"))
        }
        E::NotSupported { .. } | E::NotImplemented { .. } => ReplicaError::FailedPrecondition(format!(
            "backup destination {url} does not support what a backup needs: {e}"
        )),
        E::InvalidPath { .. } | E::UnknownConfigurationKey { .. } => {
            ReplicaError::Invalid(format!("backup destination {url}: {e}"))
        }
        E::JoinError { .. } => ReplicaError::Internal(format!("backup destination {url}: {e}")),
        // Generic is what object_store reports for connection failures, timeouts and
        // server errors (5xx, throttling) once its own retries are spent.
        e => {
            if is_unreachable(&e) {
                ReplicaError::Unavailable(format!(
                    "cannot reach {url}: check the endpoint and the network: {e}"
                ))
            } else {
                ReplicaError::Unavailable(format!("backup destination {url}: {e}"))
            }
        }
    }
}

/// Whether the failure is a connection or timeout error: an `HttpError` of those kinds
/// somewhere in the error's source chain.
fn is_unreachable(e: &object_store::Error) -> bool {
    use object_store::client::{HttpError, HttpErrorKind};
    let mut current: Option<&(dyn std::error::Error + 'static)> = Some(e);
    while let Some(error) = current {
        if let Some(http) = error.downcast_ref::<HttpError>() {
            return matches!(http.kind(), HttpErrorKind::Connect | HttpErrorKind::Timeout);
        }
        current = error.source();
    }
    false
}

/// What a backup run wrote.
pub(crate) struct BackupRun {
    pub(crate) backup_id: String,
    pub(crate) written: Vec<(CatalogEntry, Checkpoint)>,
    pub(crate) deleted: Vec<String>,
}

/// A local file removed when dropped, whichever way the step using it ends.
struct TempFile(PathBuf);

impl Drop for TempFile {
    fn drop(&mut self) {
        let _ = std::fs::remove_file(&self.0);
    }
}

/// Exports a snapshot of `log` to `file` and makes it durable: every write, the flush
/// and the fsync are checked, so a failed last write fails the export instead of leaving
/// a short file behind.
async fn export_to_file(
    store: &Store,
    log: LogId,
    base_seq: Option<u64>,
    file: &Path,
) -> ReplicaResult<Checkpoint> {
    let out = std::fs::File::create(file)
        .map_err(|e| ReplicaError::io(format!("cannot create {}", file.display()), e))?;
    // Shared with the sink, which the store calls on its blocking thread; taken back
    // below to flush and sync once the export has returned.
    let out = Arc::new(Mutex::new(std::io::BufWriter::new(out)));
    let sink = out.clone();
    let checkpoint = store
        .export(log, base_seq, move |chunk| {
            sink.lock()
                .expect("snapshot file lock")
                .write_all(&chunk)
                .map_err(|e| StoreError::Unavailable(format!("writing the snapshot: {e}")))
        })
        .await?;
    let path = file.to_path_buf();
    tokio::task::spawn_blocking(move || {
        let mut out = out.lock().expect("snapshot file lock");
        out.flush()?;
        out.get_ref().sync_all()
    })
    .await?
    .map_err(|e| ReplicaError::io(format!("writing the snapshot {}", path.display()), e))?;
    Ok(checkpoint)
}

/// Reads a snapshot file back and checks that it is the complete, unaltered export of
/// `checkpoint` (from `base_seq`, for a delta): the trailer's digest and count match what
/// was read, the header names this checkpoint and base, and it holds exactly the entries
/// after the base up to the checkpoint (seq is gap-free, so that is `seq - base_seq`).
/// Returns the entry count. A backup is uploaded and cataloged only after this passes.
fn verify_snapshot_file(file: &Path, checkpoint: &Checkpoint, base_seq: Option<u64>) -> ReplicaResult<u64> {
    let refused = |why: String| {
        ReplicaError::Internal(format!(
            "the snapshot written to {} does not verify, so it is not uploaded or cataloged: {why}",
            file.display()
        ))
    };
    let mut input = std::fs::File::open(file)
        .map_err(|e| ReplicaError::io(format!("reading the snapshot {}", file.display()), e))?;
    let mut reader = SnapshotReader::new();
    let mut buffer = vec![0u8; VERIFY_READ_BYTES];
    let mut entries = 0u64;
    let mut header_seen = false;
    let mut trailer = None;
    loop {
        let n = input
            .read(&mut buffer)
            .map_err(|e| ReplicaError::io(format!("reading the snapshot {}", file.display()), e))?;
        if n == 0 {
            break;
        }
        reader.feed(&buffer[..n]);
        while let Some(item) = reader.next_item().map_err(|e| refused(e.to_string()))? {
            match item {
                SnapshotItem::Header(header) => {
                    if header.checkpoint != *checkpoint {
                        return Err(refused("its header names another checkpoint".into()));
                    }
                    let base = header.base.map(|b| b.seq);
                    if base != base_seq {
                        return Err(refused(format!("its base is {base:?}, expected {base_seq:?}")));
                    }
                    header_seen = true;
                }
                SnapshotItem::Entry { .. } => entries += 1,
                SnapshotItem::End { entries: count } => trailer = Some(count),
            }
        }
    }
    reader.finish().map_err(|e| refused(e.to_string()))?;
    let expected = checkpoint.seq.saturating_sub(base_seq.unwrap_or(0));
    if !header_seen || trailer != Some(entries) || entries != expected {
        return Err(refused(format!(
            "it holds {entries} entries (trailer: {trailer:?}); the export covered {expected}"
        )));
    }
    Ok(entries)
}

/// Backs up `logs`: a full snapshot each, or with `delta` a delta since this replica's
/// latest backup of the log in the catalog (full when there is none from this epoch).
/// `retain_full` > 0 deletes full backups (and their deltas) beyond the newest ones.
pub(crate) async fn backup(
    store: &Store,
    dest: &Destination,
    logs: Vec<LogSummary>,
    delta: bool,
    retain_full: usize,
    now_ms: u64,
    work_dir: &Path,
) -> ReplicaResult<BackupRun> {
    let mut catalog = dest.catalog().await?.unwrap_or_default();
    let epoch = store.epoch();
    let backup_id = format!("{now_ms:015}-{}", &hex::encode(epoch)[..8]);
    std::fs::create_dir_all(work_dir)
        .map_err(|e| ReplicaError::io(format!("cannot create {}", work_dir.display()), e))?;
    let mut written = Vec::new();
    for log in logs {
        let log_id = log.log_id;
        let base = if delta {
            let recorded: Vec<u64> =
                store.run_blocking(move |s| s.checkpoints(&log_id)).await?.iter().map(|c| c.seq).collect();
            catalog
                .backups
                .iter()
                .rev()
                .find(|b| b.log_id == log_id && b.epoch == epoch && recorded.contains(&b.seq))
                .map(|b| b.seq)
        } else {
            None
        };
        let file = TempFile(work_dir.join(format!("{backup_id}-{log_id}.snap")));
        let checkpoint = export_to_file(store, log_id, base, &file.0).await?;
        let (path, verified) = (file.0.clone(), checkpoint.clone());
        tokio::task::spawn_blocking(move || verify_snapshot_file(&path, &verified, base)).await??;
        let key = format!("logs/{log_id}/{backup_id}.snap");
        let bytes = dest.upload(&key, &file.0).await?;
        drop(file);
        let entry = CatalogEntry {
            backup_id: backup_id.clone(),
            log_id,
            name: log.manifest.manifest().name.clone(),
            kind: if base.is_some() { BackupKind::Delta } else { BackupKind::Full },
            key,
            bytes,
            epoch,
            seq: checkpoint.seq,
            base_seq: base.unwrap_or(0),
            state_root: checkpoint.state_root,
            n_ops: checkpoint.n_ops,
        };
        catalog.backups.push(entry.clone());
        written.push((entry, checkpoint));
    }
    let deleted = if retain_full > 0 { apply_retention(&mut catalog, retain_full) } else { Vec::new() };
    dest.write_catalog(&catalog).await?;
    for key in &deleted {
        dest.delete(key).await?;
    }
    Ok(BackupRun { backup_id, written, deleted })
}

/// Drops every chain (a full backup and the deltas after it) older than the newest
/// `keep` full backups of each log; returns the keys to delete.
fn apply_retention(catalog: &mut Catalog, keep: usize) -> Vec<String> {
    let mut deleted = Vec::new();
    let logs: std::collections::BTreeSet<LogId> = catalog.backups.iter().map(|b| b.log_id).collect();
    for log in logs {
        let fulls: Vec<usize> = catalog
            .backups
            .iter()
            .enumerate()
            .filter(|(_, b)| b.log_id == log && b.kind == BackupKind::Full)
            .map(|(i, _)| i)
            .collect();
        if fulls.len() <= keep {
            continue;
        }
        let first_kept = fulls[fulls.len() - keep];
        let mut index = 0;
        catalog.backups.retain(|b| {
            let drop = b.log_id == log && index < first_kept;
            index += 1;
            if drop {
                deleted.push(b.key.clone());
            }
            !drop
        });
    }
    deleted
}

/// The newest restorable chain of a log in a catalog: its latest full backup and the
/// deltas that continue it (each starting at the previous one's checkpoint).
pub(crate) fn chain(catalog: &Catalog, log_id: &LogId) -> Vec<CatalogEntry> {
    let of_log: Vec<&CatalogEntry> = catalog.backups.iter().filter(|b| b.log_id == *log_id).collect();
    let Some(full_at) = of_log.iter().rposition(|b| b.kind == BackupKind::Full) else { return Vec::new() };
    let mut chain = vec![of_log[full_at].clone()];
    for b in &of_log[full_at + 1..] {
        let last = chain.last().expect("non-empty");
        if b.kind == BackupKind::Delta && b.epoch == last.epoch && b.base_seq == last.seq {
            chain.push((*b).clone());
        }
    }
    chain
}

fn no_catalog(dest: &Destination) -> ReplicaError {
    ReplicaError::NotFound(format!(
        "no catalog at {}: it is not a Plait backup destination, or the prefix is wrong",
        dest.url
    ))
}

/// Restores every log of the catalog (or those named) into `store`: downloads each chain
/// and imports it in order. `progress` is told about each object.
pub(crate) async fn restore(
    store: &Store,
    dest: &Destination,
    only: &[String],
    work_dir: &Path,
    mut progress: impl FnMut(&CatalogEntry, &ImportReport),
) -> ReplicaResult<Vec<ImportReport>> {
    let catalog = dest.catalog().await?.ok_or_else(|| no_catalog(dest))?;
    let logs: std::collections::BTreeSet<(LogId, String)> =
        catalog.backups.iter().map(|b| (b.log_id, b.name.clone())).collect();
    std::fs::create_dir_all(work_dir)
        .map_err(|e| ReplicaError::io(format!("cannot create {}", work_dir.display()), e))?;
    let mut reports = Vec::new();
    for (log_id, name) in logs {
        if !only.is_empty() && !only.iter().any(|o| *o == log_id.to_hex() || o == &name) {
            continue;
        }
        for entry in chain(&catalog, &log_id) {
            let file = TempFile(work_dir.join(format!("restore-{}.snap", entry.backup_id)));
            dest.download(&entry.key, &file.0).await?;
            let report = store.import_file(file.0.clone()).await.map_err(|e| {
                ReplicaError::from(e).context(format!("restoring {} from {}", entry.key, dest.url))
            })?;
            progress(&entry, &report);
            reports.push(report);
        }
    }
    Ok(reports)
}

/// Applies whatever of each log's newest chain this store does not hold yet, judged by
/// its restore watermark; returns how many snapshots were imported. Used by edge nodes
/// to restore and then follow a backup destination.
pub(crate) async fn follow(store: &Store, dest: &Destination, work_dir: &Path) -> ReplicaResult<usize> {
    let catalog = dest.catalog().await?.ok_or_else(|| no_catalog(dest))?;
    std::fs::create_dir_all(work_dir)
        .map_err(|e| ReplicaError::io(format!("cannot create {}", work_dir.display()), e))?;
    let logs: std::collections::BTreeSet<LogId> = catalog.backups.iter().map(|b| b.log_id).collect();
    let mut imported = 0;
    for id in logs {
        for entry in chain(&catalog, &id) {
            let mark = store.run_blocking(move |s| s.restore_mark(&id)).await?;
            if mark.is_some_and(|m| m.epoch == entry.epoch && m.seq >= entry.seq) {
                continue;
            }
            match import_one(store, dest, &entry, work_dir).await {
                Ok(_) => imported += 1,
                // A delta that does not fit this node (a gap, or another source epoch):
                // fall back to the chain's full backup, then carry on with the deltas.
                Err(ImportError::Misfit(why)) if entry.kind == BackupKind::Delta => {
                    let full =
                        chain(&catalog, &id).into_iter().next().expect("a chain starts with a full backup");
                    tracing::warn!(log = %id, delta = %entry.key, %why, full = %full.key, "falling back to a full restore");
                    import_one(store, dest, &full, work_dir).await?;
                    import_one(store, dest, &entry, work_dir).await?;
                    imported += 2;
                }
                Err(e) => return Err(e.into()),
            }
        }
    }
    Ok(imported)
}

/// Why one snapshot of a chain was not applied.
enum ImportError {
    /// The snapshot does not fit this node's watermark (the store's precondition).
    Misfit(String),
    Other(ReplicaError),
}

impl From<ImportError> for ReplicaError {
    fn from(e: ImportError) -> Self {
        match e {
            ImportError::Misfit(why) => ReplicaError::FailedPrecondition(why),
            ImportError::Other(e) => e,
        }
    }
}

async fn import_one(
    store: &Store,
    dest: &Destination,
    entry: &CatalogEntry,
    work_dir: &Path,
) -> Result<ImportReport, ImportError> {
    let file = TempFile(work_dir.join(format!("follow-{}-{}.snap", entry.backup_id, entry.log_id)));
    dest.download(&entry.key, &file.0).await.map_err(ImportError::Other)?;
    match store.import_file(file.0.clone()).await {
        Ok(r) => Ok(r),
        Err(StoreError::FailedPrecondition(why)) => Err(ImportError::Misfit(why)),
        Err(e) => Err(ImportError::Other(
            ReplicaError::from(e).context(format!("applying {} from {}", entry.key, dest.url)),
        )),
    }
}

#[cfg(test)]
mod tests {
    use plait_core::{LogType, Manifest, Op, WriterKey, Writers};
    use plait_store::StoreConfig;

    use super::*;

    /// A store in a temporary directory with one kv log holding `writes` entries.
    async fn store_with_log(dir: &Path, writes: usize) -> (Store, LogSummary) {
        let key = WriterKey::from_secret([5; 32]);
        let config = StoreConfig::new(dir.join("data"), key.clone());
        let store = tokio::task::spawn_blocking(move || {
            Store::open(config, &mut rand::rngs::OsRng, Arc::new(plait_store::NoopObserver))
        })
        .await
        .unwrap()
        .unwrap();
        let manifest = Manifest {
            name: "kv".into(),
            log_type: LogType::Kv,
            writers: Writers::keys(vec![key.public()]),
            created_by: key.public(),
            created_at_lamport: 0,
            options: Vec::new(),
        }
        .sign(&key)
        .unwrap();
        let (summary, _) = store.create_log(manifest).await.unwrap();
        for i in 0..writes {
            let op = Op::Put { key: format!("k{i}").into_bytes(), value: vec![7; 100] };
            store.write(vec![(summary.log_id, op)]).await.unwrap();
        }
        let summary = store.log(&summary.log_id).unwrap();
        (store, summary)
    }

    /// A snapshot is verified against what was exported: the good file passes with its
    /// entry count; a truncated copy, a copy with one bit flipped and a copy checked
    /// against another checkpoint or base are all refused, and the error says the
    /// snapshot is neither uploaded nor cataloged.
    #[tokio::test]
    async fn verification_refuses_truncated_and_altered_snapshots() {
        let dir = tempfile::tempdir().unwrap();
        let (store, summary) = store_with_log(dir.path(), 20).await;
        let file = dir.path().join("good.snap");
        let checkpoint = export_to_file(&store, summary.log_id, None, &file).await.unwrap();
        assert_eq!(verify_snapshot_file(&file, &checkpoint, None).unwrap(), 20);
        let good = std::fs::read(&file).unwrap();

        let check = |bytes: &[u8], checkpoint: &Checkpoint, base: Option<u64>| {
            let damaged = dir.path().join("damaged.snap");
            std::fs::write(&damaged, bytes).unwrap();
            let err = verify_snapshot_file(&damaged, checkpoint, base).unwrap_err();
            assert!(matches!(err, ReplicaError::Internal(_)), "{err:?}");
            assert!(err.to_string().contains("not uploaded or cataloged"), "{err}");
            err.to_string()
        };
        for cut in [1, 10, good.len() / 2, good.len() - 45, good.len() - 1] {
            check(&good[..cut], &checkpoint, None);
        }
        assert!(check(&good[..good.len() - 1], &checkpoint, None).contains("truncated"));
        for at in [good.len() / 3, good.len() / 2, good.len() - 2] {
            let mut flipped = good.clone();
            flipped[at] ^= 0x10;
            check(&flipped, &checkpoint, None);
        }
        let mut other = checkpoint.clone();
        other.seq += 1;
        check(&good, &other, None);
        check(&good, &checkpoint, Some(3));
        store.close().await.unwrap();
    }

    /// A backup whose export fails (here: the work directory cannot be created) returns
    /// the error and leaves the destination without a catalog or any object, and a
    /// backup that succeeds lists exactly the verified snapshot.
    #[tokio::test]
    async fn a_failed_backup_catalogs_nothing() {
        let dir = tempfile::tempdir().unwrap();
        let (store, summary) = store_with_log(dir.path(), 5).await;
        let backups = dir.path().join("backups");
        let dest =
            Destination::parse(&format!("file://{}", backups.display()), &S3Options::default()).unwrap();
        let not_a_dir = dir.path().join("file");
        std::fs::write(&not_a_dir, b"x").unwrap();
        let err = backup(&store, &dest, vec![summary.clone()], false, 0, 1, &not_a_dir.join("tmp"))
            .await
            .err()
            .expect("the backup fails");
        assert!(matches!(err, ReplicaError::Unavailable(_)), "{err:?}");
        assert!(dest.catalog().await.unwrap().is_none(), "nothing was cataloged");
        assert_eq!(std::fs::read_dir(&backups).unwrap().count(), 0, "nothing was uploaded");

        let work = dir.path().join("tmp");
        let run = backup(&store, &dest, vec![summary], false, 0, 2, &work).await.unwrap();
        let catalog = dest.catalog().await.unwrap().unwrap();
        assert_eq!(catalog.backups, run.written.iter().map(|(e, _)| e.clone()).collect::<Vec<_>>());
        assert_eq!(catalog.backups[0].seq, 5);
        assert_eq!(std::fs::read_dir(&work).unwrap().count(), 0, "the staged file is removed");
        store.close().await.unwrap();
    }

    /// A catalog refused by the core decoder surfaces as a precondition of the
    /// destination, naming it, rather than as a transient failure to retry.
    #[tokio::test]
    async fn a_malformed_catalog_is_a_precondition() {
        let dir = tempfile::tempdir().unwrap();
        std::fs::write(dir.path().join(CATALOG_KEY), b"{\"format\": 1, \"backups\": 3}").unwrap();
        let url = format!("file://{}", dir.path().display());
        let dest = Destination::parse(&url, &S3Options::default()).unwrap();
        let err = dest.catalog().await.expect_err("refused");
        assert!(matches!(err, ReplicaError::FailedPrecondition(_)), "{err:?}");
        assert!(err.to_string().contains(&url), "{err}");
    }

    /// Object store failures are classified by variant: credentials are refused for
    /// good, a missing object is not found, and only the rest is worth retrying.
    #[test]
    fn object_store_errors_are_classified_by_variant() {
        let source = || -> Box<dyn std::error::Error + Send + Sync> { "x".into() };
        let url = "s3://b/p";
        let cases = [
            object_store::Error::PermissionDenied { path: "p".into(), source: source() },
            object_store::Error::Unauthenticated { path: "p".into(), source: source() },
        ];
        for e in cases {
            let classified = classify(e, url);
            assert!(matches!(classified, ReplicaError::PermissionDenied(_)), "{classified:?}");
            assert!(classified.to_string().contains("check the credentials"), "{classified}");
        }
        let not_found = classify(object_store::Error::NotFound { path: "p".into(), source: source() }, url);
        assert!(matches!(not_found, ReplicaError::NotFound(_)), "{not_found:?}");
        let generic = classify(object_store::Error::Generic { store: "S3", source: source() }, url);
        assert!(matches!(generic, ReplicaError::Unavailable(ref m) if m.contains(url)), "{generic:?}");
        let unsupported = classify(object_store::Error::NotSupported { source: source() }, url);
        assert!(matches!(unsupported, ReplicaError::FailedPrecondition(_)), "{unsupported:?}");
    }
}
