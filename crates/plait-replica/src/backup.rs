//! Backups: snapshots of logs written to an object store (`file://` directories, `s3://`
//! buckets through the `object_store` crate), a catalog that lists them, retention, and
//! restoring a fresh data directory from a full backup plus its deltas.
//!
//! Layout under the destination: `catalog.json`, and one object per snapshot at
//! `logs/<log id>/<backup id>.snap`. The catalog is rewritten after the objects it names
//! are complete, so a crash mid-backup leaves at most unreferenced objects.

use std::path::{Path, PathBuf};
use std::sync::Arc;

use anyhow::{Context, anyhow, bail};
use futures::StreamExt;
use object_store::path::Path as ObjectPath;
use object_store::{ObjectStore, ObjectStoreExt, PutPayload};
use plait_core::{Checkpoint, LogId};
use plait_store::{ImportReport, LogSummary, Store};
use serde::{Deserialize, Serialize};
use tokio::io::AsyncWriteExt;

/// The catalog's own format version.
const CATALOG_FORMAT: u32 = 1;
const CATALOG_KEY: &str = "catalog.json";
/// Upload part size: large snapshots go up in parts, never whole in memory.
const PART_BYTES: usize = 16 * 1024 * 1024;

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
    /// `AWS_ENDPOINT`, `AWS_ALLOW_HTTP`), overridden by `options`.
    pub(crate) fn parse(url: &str, options: &S3Options) -> anyhow::Result<Destination> {
        if let Some(path) = url.strip_prefix("file://") {
            if !path.starts_with('/') {
                bail!(
                    "a file:// destination needs an absolute path (file:///var/backups/plait), got {url:?}"
                );
            }
            std::fs::create_dir_all(path)
                .with_context(|| format!("cannot create backup directory {path}"))?;
            let store = object_store::local::LocalFileSystem::new_with_prefix(path)
                .with_context(|| format!("cannot use {path} as a backup directory"))?;
            return Ok(Destination {
                store: Arc::new(store),
                prefix: ObjectPath::default(),
                url: url.to_owned(),
            });
        }
        if let Some(rest) = url.strip_prefix("s3://") {
            let (bucket, prefix) = rest.split_once('/').unwrap_or((rest, ""));
            if bucket.is_empty() {
                bail!("an s3:// destination needs a bucket: s3://bucket/prefix, got {url:?}");
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
            let store = builder.build().with_context(|| format!("cannot configure S3 for {url}"))?;
            return Ok(Destination {
                store: Arc::new(store),
                prefix: ObjectPath::from(prefix),
                url: url.to_owned(),
            });
        }
        bail!("unsupported backup destination {url:?}: use file:///absolute/dir or s3://bucket/prefix")
    }

    fn key(&self, relative: &str) -> ObjectPath {
        let mut path = self.prefix.clone();
        for part in relative.split('/') {
            path = path.join(part);
        }
        path
    }

    /// The catalog, or an empty one if the destination has none yet.
    pub(crate) async fn catalog(&self) -> anyhow::Result<Option<Catalog>> {
        match self.store.get(&self.key(CATALOG_KEY)).await {
            Ok(result) => {
                let bytes = result.bytes().await.map_err(|e| explain(e, &self.url))?;
                let catalog: Catalog = serde_json::from_slice(&bytes)
                    .with_context(|| format!("the catalog at {} is not a Plait backup catalog", self.url))?;
                if catalog.format != CATALOG_FORMAT {
                    bail!(
                        "the catalog at {} has format {}; this plaitd reads format {CATALOG_FORMAT}",
                        self.url,
                        catalog.format
                    );
                }
                Ok(Some(catalog))
            }
            Err(object_store::Error::NotFound { .. }) => Ok(None),
            Err(e) => Err(explain(e, &self.url)),
        }
    }

    async fn write_catalog(&self, catalog: &Catalog) -> anyhow::Result<()> {
        let bytes = serde_json::to_vec_pretty(catalog)?;
        self.store
            .put(&self.key(CATALOG_KEY), PutPayload::from(bytes))
            .await
            .map_err(|e| explain(e, &self.url))?;
        Ok(())
    }

    async fn upload(&self, key: &str, file: &Path) -> anyhow::Result<u64> {
        let mut upload = self.store.put_multipart(&self.key(key)).await.map_err(|e| explain(e, &self.url))?;
        let mut reader = tokio::fs::File::open(file).await?;
        let mut total = 0u64;
        loop {
            let mut part = vec![0u8; PART_BYTES];
            let mut filled = 0;
            while filled < PART_BYTES {
                let n = tokio::io::AsyncReadExt::read(&mut reader, &mut part[filled..]).await?;
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
            upload.put_part(PutPayload::from(part)).await.map_err(|e| explain(e, &self.url))?;
            if filled < PART_BYTES {
                break;
            }
        }
        upload.complete().await.map_err(|e| explain(e, &self.url))?;
        Ok(total)
    }

    async fn download(&self, key: &str, file: &Path) -> anyhow::Result<u64> {
        let result = self.store.get(&self.key(key)).await.map_err(|e| explain(e, &self.url))?;
        let mut stream = result.into_stream();
        let mut out = tokio::fs::File::create(file).await?;
        let mut total = 0u64;
        while let Some(chunk) = stream.next().await {
            let chunk = chunk.map_err(|e| explain(e, &self.url))?;
            total += chunk.len() as u64;
            out.write_all(&chunk).await?;
        }
        out.flush().await?;
        Ok(total)
    }

    async fn delete(&self, key: &str) -> anyhow::Result<()> {
        match self.store.delete(&self.key(key)).await {
            Ok(()) | Err(object_store::Error::NotFound { .. }) => Ok(()),
            Err(e) => Err(explain(e, &self.url)),
        }
    }
}

/// Turns object store errors into messages that say what to check.
fn explain(e: object_store::Error, url: &str) -> anyhow::Error {
    let text = e.to_string();
    let lower = text.to_lowercase();
    if lower.contains("403")
        || lower.contains("accessdenied")
        || lower.contains("signaturedoesnotmatch")
        || lower.contains("invalidaccesskeyid")
    {
        anyhow!(
            "access to {url} was denied: check the credentials (AWS_ACCESS_KEY_ID / AWS_SECRET_ACCESS_KEY): {text}"
        )
    } else if lower.contains("nosuchbucket") {
        anyhow!("the bucket of {url} does not exist: {text}")
    } else if lower.contains("connect") || lower.contains("dns") || lower.contains("timed out") {
        anyhow!("cannot reach {url}: check the endpoint and the network: {text}")
    } else {
        anyhow!("backup destination {url}: {text}")
    }
}

/// One snapshot object in the catalog.
#[derive(Clone, Debug, Serialize, Deserialize, PartialEq, Eq)]
pub(crate) struct CatalogEntry {
    pub(crate) backup_id: String,
    pub(crate) log_id: String,
    pub(crate) name: String,
    /// "full" or "delta".
    pub(crate) kind: String,
    pub(crate) key: String,
    pub(crate) bytes: u64,
    /// The epoch (hex) of the replica that wrote it: its seqs are that replica's.
    pub(crate) epoch: String,
    pub(crate) seq: u64,
    pub(crate) base_seq: u64,
    pub(crate) state_root: String,
    pub(crate) n_ops: u64,
}

/// Every backup at a destination, oldest first.
#[derive(Clone, Debug, Default, Serialize, Deserialize)]
pub(crate) struct Catalog {
    pub(crate) format: u32,
    pub(crate) backups: Vec<CatalogEntry>,
}

/// What a backup run wrote.
pub(crate) struct BackupRun {
    pub(crate) backup_id: String,
    pub(crate) written: Vec<(CatalogEntry, Checkpoint)>,
    pub(crate) deleted: Vec<String>,
}

async fn export_to_file(
    store: &Store,
    log: LogId,
    base_seq: Option<u64>,
    file: &Path,
) -> anyhow::Result<Checkpoint> {
    let out = std::fs::File::create(file).with_context(|| format!("cannot create {}", file.display()))?;
    let mut out = std::io::BufWriter::new(out);
    let checkpoint = store
        .export(log, base_seq, move |chunk| {
            use std::io::Write;
            out.write_all(&chunk)
                .map_err(|e| plait_store::StoreError::Unavailable(format!("writing the snapshot: {e}")))
        })
        .await?;
    Ok(checkpoint)
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
) -> anyhow::Result<BackupRun> {
    let mut catalog =
        dest.catalog().await?.unwrap_or(Catalog { format: CATALOG_FORMAT, backups: Vec::new() });
    let epoch = hex::encode(store.epoch());
    let backup_id = format!("{now_ms:015}-{}", &epoch[..8]);
    std::fs::create_dir_all(work_dir)?;
    let mut written = Vec::new();
    for log in logs {
        let log_hex = log.log_id.to_hex();
        let base = if delta {
            let id = log.log_id;
            let recorded: Vec<u64> =
                store.run_blocking(move |s| s.checkpoints(&id)).await?.iter().map(|c| c.seq).collect();
            catalog
                .backups
                .iter()
                .rev()
                .find(|b| b.log_id == log_hex && b.epoch == epoch && recorded.contains(&b.seq))
                .map(|b| b.seq)
        } else {
            None
        };
        let file = work_dir.join(format!("{backup_id}-{log_hex}.snap"));
        let checkpoint = export_to_file(store, log.log_id, base, &file).await?;
        let key = format!("logs/{log_hex}/{backup_id}.snap");
        let bytes = dest.upload(&key, &file).await;
        let _ = std::fs::remove_file(&file);
        let bytes = bytes?;
        let entry = CatalogEntry {
            backup_id: backup_id.clone(),
            log_id: log_hex,
            name: log.manifest.manifest().name.clone(),
            kind: if base.is_some() { "delta" } else { "full" }.into(),
            key,
            bytes,
            epoch: epoch.clone(),
            seq: checkpoint.seq,
            base_seq: base.unwrap_or(0),
            state_root: hex::encode(checkpoint.state_root),
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
    let logs: std::collections::BTreeSet<String> = catalog.backups.iter().map(|b| b.log_id.clone()).collect();
    for log in logs {
        let fulls: Vec<usize> = catalog
            .backups
            .iter()
            .enumerate()
            .filter(|(_, b)| b.log_id == log && b.kind == "full")
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
pub(crate) fn chain(catalog: &Catalog, log_id: &str) -> Vec<CatalogEntry> {
    let of_log: Vec<&CatalogEntry> = catalog.backups.iter().filter(|b| b.log_id == log_id).collect();
    let Some(full_at) = of_log.iter().rposition(|b| b.kind == "full") else { return Vec::new() };
    let mut chain = vec![of_log[full_at].clone()];
    for b in &of_log[full_at + 1..] {
        let last = chain.last().expect("non-empty");
        if b.kind == "delta" && b.epoch == last.epoch && b.base_seq == last.seq {
            chain.push((*b).clone());
        }
    }
    chain
}

/// Restores every log of the catalog (or those named) into `store`: downloads each chain
/// and imports it in order. `progress` is told about each object.
pub(crate) async fn restore(
    store: &Store,
    dest: &Destination,
    only: &[String],
    work_dir: &Path,
    mut progress: impl FnMut(&CatalogEntry, &ImportReport),
) -> anyhow::Result<Vec<ImportReport>> {
    let catalog = dest.catalog().await?.ok_or_else(|| {
        anyhow!("no catalog at {}: it is not a Plait backup destination, or the prefix is wrong", dest.url)
    })?;
    let logs: std::collections::BTreeSet<(String, String)> =
        catalog.backups.iter().map(|b| (b.log_id.clone(), b.name.clone())).collect();
    std::fs::create_dir_all(work_dir)?;
    let mut reports = Vec::new();
    for (log_id, name) in logs {
        if !only.is_empty() && !only.iter().any(|o| o == &log_id || o == &name) {
            continue;
        }
        for entry in chain(&catalog, &log_id) {
            let file: PathBuf = work_dir.join(format!("restore-{}.snap", entry.backup_id));
            dest.download(&entry.key, &file).await?;
            let report = store.import_file(file.clone()).await;
            let _ = std::fs::remove_file(&file);
            let report = report.with_context(|| format!("restoring {} from {}", entry.key, dest.url))?;
            progress(&entry, &report);
            reports.push(report);
        }
    }
    Ok(reports)
}

/// Applies whatever of each log's newest chain this store does not hold yet, judged by
/// its restore watermark; returns how many snapshots were imported. Used by edge nodes
/// to restore and then follow a backup destination.
pub(crate) async fn follow(store: &Store, dest: &Destination, work_dir: &Path) -> anyhow::Result<usize> {
    let Some(catalog) = dest.catalog().await? else {
        bail!("no catalog at {}: it is not a Plait backup destination, or the prefix is wrong", dest.url);
    };
    std::fs::create_dir_all(work_dir)?;
    let logs: std::collections::BTreeSet<String> = catalog.backups.iter().map(|b| b.log_id.clone()).collect();
    let mut imported = 0;
    for log_id in logs {
        let id = LogId::from_hex(&log_id).map_err(|e| anyhow!("catalog names a bad log id: {e}"))?;
        for entry in chain(&catalog, &log_id) {
            let mark = store.run_blocking(move |s| s.restore_mark(&id)).await?;
            if mark.is_some_and(|m| hex::encode(m.epoch) == entry.epoch && m.seq >= entry.seq) {
                continue;
            }
            match import_one(store, dest, &entry, work_dir).await {
                Ok(_) => imported += 1,
                // A delta that does not fit this node (a gap, or another source epoch):
                // fall back to the chain's full backup, then carry on with the deltas.
                Err(FollowError::Precondition(why)) if entry.kind == "delta" => {
                    let full = chain(&catalog, &log_id)
                        .into_iter()
                        .next()
                        .expect("a chain starts with a full backup");
                    tracing::warn!(log = %log_id, delta = %entry.key, %why, full = %full.key, "falling back to a full restore");
                    import_one(store, dest, &full, work_dir).await.map_err(FollowError::into_anyhow)?;
                    import_one(store, dest, &entry, work_dir).await.map_err(FollowError::into_anyhow)?;
                    imported += 2;
                }
                Err(e) => return Err(e.into_anyhow()),
            }
        }
    }
    Ok(imported)
}

enum FollowError {
    /// The snapshot does not fit this node's watermark.
    Precondition(String),
    Other(anyhow::Error),
}

impl FollowError {
    fn into_anyhow(self) -> anyhow::Error {
        match self {
            FollowError::Precondition(why) => anyhow!(why),
            FollowError::Other(e) => e,
        }
    }
}

async fn import_one(
    store: &Store,
    dest: &Destination,
    entry: &CatalogEntry,
    work_dir: &Path,
) -> Result<ImportReport, FollowError> {
    let file = work_dir.join(format!("follow-{}-{}.snap", entry.backup_id, entry.log_id));
    dest.download(&entry.key, &file).await.map_err(FollowError::Other)?;
    let report = store.import_file(file.clone()).await;
    let _ = std::fs::remove_file(&file);
    match report {
        Ok(r) => Ok(r),
        Err(plait_store::StoreError::FailedPrecondition(why)) => Err(FollowError::Precondition(why)),
        Err(e) => Err(FollowError::Other(
            anyhow::Error::new(e).context(format!("applying {} from {}", entry.key, dest.url)),
        )),
    }
}
