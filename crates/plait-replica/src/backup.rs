//! Backups: snapshots of logs written to an object store (`file://` directories, `s3://`
//! buckets through the `object_store` crate), a catalog that lists them, retention, and
//! restoring a fresh data directory from a full backup plus its deltas.
//!
//! Where backups may go is the server's choice: `plaitd --backup-destination NAME=URL`
//! configures named [`Destinations`] at startup, and a `Backup` call names one of them.
//! A caller can never make the replica write (or retain, which deletes) anywhere else.
//!
//! Layout under the destination: `catalog.json` (its format is
//! `plait_core::catalog`), and one object per snapshot at
//! `logs/<log id>/<backup id>.snap`. A snapshot is exported to a local file, flushed and
//! fsynced, read back and verified (trailer digest, entry count, checkpoint) before it is
//! uploaded; the catalog is rewritten only after the objects it names are complete. So a
//! catalog never lists a truncated or damaged snapshot, and a crash mid-backup leaves at
//! most unreferenced objects.
//!
//! The catalog is updated by compare-and-swap, so concurrent backups to one destination
//! (from several replicas, or several calls) never lose each other's entries: on S3 a
//! conditional put (`If-Match` the version read, or `If-None-Match: *` when there was no
//! catalog), re-read and re-applied when another update won; in a `file://` directory,
//! whose object store has no conditional update, an exclusive lock on
//! `catalog.json.lock` around the read-modify-write.

use std::collections::BTreeMap;
use std::io::{Read, Write};
use std::path::{Path, PathBuf};
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{Arc, Mutex};
use std::time::Duration;

use futures::StreamExt;
use object_store::path::Path as ObjectPath;
use object_store::{ObjectStore, ObjectStoreExt, PutMode, PutOptions, PutPayload, UpdateVersion};
use plait_core::catalog::{BackupKind, Catalog, CatalogEntry};
use plait_core::{Checkpoint, LogId, SnapshotItem, SnapshotReader};
use plait_store::{ImportReport, LogSummary, Store, StoreError};
use tokio::io::AsyncWriteExt;

use crate::error::{ReplicaError, ReplicaResult};

const CATALOG_KEY: &str = "catalog.json";
/// The lock file that serializes catalog updates in a `file://` destination.
const CATALOG_LOCK_FILE: &str = "catalog.json.lock";
/// Tries of one catalog update against a store where other backups keep winning the
/// race; then the backup fails as unavailable (its snapshots stay uncataloged).
const CATALOG_UPDATE_ATTEMPTS: u32 = 16;
/// Backoff between catalog update tries: doubling from the base up to the cap, each
/// wait a random part of that (jitter, so racing backups spread out).
const CATALOG_RETRY_BASE_MS: u64 = 10;
const CATALOG_RETRY_CAP_MS: u64 = 500;
/// Longest destination name: names are `[a-z0-9][a-z0-9-]{0,62}`.
const DESTINATION_NAME_BYTES_MAX: usize = 63;
/// Upload part size: large snapshots go up in parts, never whole in memory.
const PART_BYTES: usize = 16 * 1024 * 1024;
/// Bytes read at a time when verifying a snapshot file.
const VERIFY_READ_BYTES: usize = 1024 * 1024;

/// Where backups go, and how to reach it.
pub(crate) struct Destination {
    store: Arc<dyn ObjectStore>,
    prefix: ObjectPath,
    pub(crate) url: String,
    /// The directory of a `file://` destination: catalog updates there are serialized
    /// by a lock file in it, since its object store cannot put conditionally.
    local_dir: Option<PathBuf>,
    /// This replica's `--backup-owner`: a catalog another owner claimed is not written.
    owner: Option<String>,
}

/// The backup destinations this replica was configured with, by name. `Backup` calls
/// name one; they never carry a URL, so where backups go (and where retention deletes)
/// is decided by whoever starts the replica.
#[derive(Default)]
pub(crate) struct Destinations {
    by_name: BTreeMap<String, Arc<Destination>>,
}

impl Destinations {
    /// Parses `NAME=URL` settings (`--backup-destination`), each URL with
    /// [`Destination::parse`]. A malformed setting, a bad name or URL, or a name given
    /// twice is `Invalid`, naming the setting: plaitd then refuses to start.
    /// `owner` (`--backup-owner`) is claimed in, and checked against, each destination's
    /// catalog.
    pub(crate) fn parse(
        settings: &[String],
        options: &S3Options,
        owner: Option<&str>,
    ) -> ReplicaResult<Destinations> {
        if let Some(owner) = owner
            && !plait_core::catalog::valid_owner(owner)
        {
            return Err(ReplicaError::Invalid(format!(
                "backup owner {owner:?} is not valid: use 1 to {} letters, digits, '.', '-', '_' and '/', for \
                 example shop/orders",
                plait_core::catalog::OWNER_BYTES_MAX
            )));
        }
        // Every name first, so that a bad setting anywhere stops the start before any
        // URL is acted on (parsing a file:// URL creates its directory).
        let mut named: Vec<(&str, &str)> = Vec::new();
        for setting in settings.iter().map(|s| s.trim()).filter(|s| !s.is_empty()) {
            let Some((name, url)) = setting.split_once('=') else {
                return Err(ReplicaError::Invalid(format!(
                    "backup destination {setting:?} must be NAME=URL, for example nightly=s3://bucket/plait \
                     or local=file:///var/backups/plait"
                )));
            };
            let (name, url) = (name.trim(), url.trim());
            if !valid_destination_name(name) {
                return Err(ReplicaError::Invalid(format!(
                    "backup destination name {name:?} is not valid: use 1 to {DESTINATION_NAME_BYTES_MAX} \
                     lower-case letters, digits and '-', starting with a letter or digit"
                )));
            }
            if named.iter().any(|(n, _)| *n == name) {
                return Err(ReplicaError::Invalid(format!(
                    "backup destination {name:?} is configured twice: give each destination one name"
                )));
            }
            named.push((name, url));
        }
        let mut by_name = BTreeMap::new();
        for (name, url) in named {
            let mut destination = Destination::parse(url, options)
                .map_err(|e| e.context(format!("backup destination {name:?}")))?;
            destination.owner = owner.map(str::to_owned);
            by_name.insert(name.to_owned(), Arc::new(destination));
        }
        Ok(Destinations { by_name })
    }

    /// The configured names, sorted. Never the URLs: they may name buckets and paths
    /// that are none of a caller's business.
    pub(crate) fn names(&self) -> Vec<String> {
        self.by_name.keys().cloned().collect()
    }

    /// The destination a `Backup` call asks for. Empty picks the only one configured. A
    /// URL is refused before anything is touched: backups go to configured places only.
    pub(crate) fn resolve(&self, requested: &str) -> ReplicaResult<Arc<Destination>> {
        let configured = || match self.names().join(", ") {
            names if names.is_empty() => "none are configured".to_owned(),
            names => format!("configured: {names}"),
        };
        if requested.contains("://") || requested.contains('/') {
            return Err(ReplicaError::Invalid(format!(
                "Backup takes the name of a backup destination configured on the replica, not a URL \
                 ({}); the replica's operator adds destinations with --backup-destination NAME=URL",
                configured()
            )));
        }
        if self.by_name.is_empty() {
            return Err(ReplicaError::FailedPrecondition(
                "this replica has no backup destinations: start it with --backup-destination NAME=URL \
                 (or PLAIT_BACKUP_DESTINATIONS=NAME=URL,...), for example \
                 --backup-destination nightly=s3://bucket/plait"
                    .into(),
            ));
        }
        if requested.is_empty() {
            return match self.by_name.values().next() {
                Some(only) if self.by_name.len() == 1 => Ok(only.clone()),
                _ => Err(ReplicaError::Invalid(format!(
                    "name the backup destination: this replica has several ({})",
                    configured()
                ))),
            };
        }
        if !valid_destination_name(requested) {
            return Err(ReplicaError::Invalid(format!(
                "backup destination names are 1 to {DESTINATION_NAME_BYTES_MAX} lower-case letters, digits \
                 and '-' ({})",
                configured()
            )));
        }
        self.by_name.get(requested).cloned().ok_or_else(|| {
            ReplicaError::NotFound(format!(
                "this replica has no backup destination named {requested:?} ({})",
                configured()
            ))
        })
    }
}

/// `[a-z0-9][a-z0-9-]{0,62}`: safe in flags, env lists, file names and log lines.
fn valid_destination_name(name: &str) -> bool {
    let bytes = name.as_bytes();
    !bytes.is_empty()
        && bytes.len() <= DESTINATION_NAME_BYTES_MAX
        && bytes[0] != b'-'
        && bytes.iter().all(|b| b.is_ascii_lowercase() || b.is_ascii_digit() || *b == b'-')
}

/// Hands out the milliseconds backup ids start with, strictly increasing within this
/// process, so two backups started in the same millisecond never share an id (and so
/// never overwrite each other's objects or staged files).
#[derive(Default)]
pub(crate) struct BackupClock {
    last_ms: AtomicU64,
}

impl BackupClock {
    /// `now_ms`, or one past the last id's time when that is not later.
    pub(crate) fn next_ms(&self, now_ms: u64) -> u64 {
        let previous = self
            .last_ms
            .fetch_update(Ordering::SeqCst, Ordering::SeqCst, |last| Some(now_ms.max(last + 1)))
            .expect("the update always returns Some");
        now_ms.max(previous + 1)
    }
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
                local_dir: Some(PathBuf::from(path)),
                owner: None,
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
                local_dir: None,
                owner: None,
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
        Ok(self.versioned_catalog().await?.map(|(catalog, _)| catalog))
    }

    /// The catalog with the version a conditional write over it must match.
    async fn versioned_catalog(&self) -> ReplicaResult<Option<(Catalog, UpdateVersion)>> {
        match self.store.get(&self.key(CATALOG_KEY)).await {
            Ok(result) => {
                let version =
                    UpdateVersion { e_tag: result.meta.e_tag.clone(), version: result.meta.version.clone() };
                let bytes = result.bytes().await.map_err(|e| classify(e, &self.url))?;
                let catalog = Catalog::decode(&bytes)
                    .map_err(|e| ReplicaError::from(e).context(format!("the catalog at {}", self.url)))?;
                Ok(Some((catalog, version)))
            }
            Err(object_store::Error::NotFound { .. }) => Ok(None),
            Err(e) => Err(classify(e, &self.url)),
        }
    }

    /// Applies `change` to the catalog so that no concurrent update is lost, and returns
    /// what `change` returned for the catalog that was written. `change` sees the
    /// catalog as it is now; when another update wins the race it is called again on
    /// the newer one, so it must be a pure function of the catalog it is given.
    pub(crate) async fn update_catalog<T>(
        &self,
        mut change: impl FnMut(&mut Catalog) -> ReplicaResult<T>,
    ) -> ReplicaResult<T> {
        if let Some(dir) = &self.local_dir {
            // Held until this function returns: the read, the change and the write.
            let _lock = lock_catalog(dir).await?;
            let mut catalog = self.catalog().await?.unwrap_or_default();
            let out = change(&mut catalog)?;
            let bytes = self.encode_catalog(&catalog)?;
            // LocalFileSystem writes a staged file and renames it over the catalog, so
            // a reader sees the old catalog or the new one, whole.
            self.put_catalog(bytes, PutMode::Overwrite).await.map_err(|e| classify(e, &self.url))?;
            return Ok(out);
        }
        for attempt in 1..=CATALOG_UPDATE_ATTEMPTS {
            let (mut catalog, mode) = match self.versioned_catalog().await? {
                None => (Catalog::default(), PutMode::Create),
                Some((_, UpdateVersion { e_tag: None, version: None })) => {
                    return Err(ReplicaError::FailedPrecondition(format!(
                        "backup destination {} reports no ETag or version for its catalog, so the catalog \
                         cannot be updated without risking losing a concurrent backup's entries: use a store \
                         that returns ETags (AWS S3, MinIO, Cloudflare R2, Ceph RGW)",
                        self.url
                    )));
                }
                Some((catalog, version)) => (catalog, PutMode::Update(version)),
            };
            let out = change(&mut catalog)?;
            match self.put_catalog(self.encode_catalog(&catalog)?, mode).await {
                Ok(()) => return Ok(out),
                // Another backup updated (or created) the catalog since it was read.
                Err(object_store::Error::Precondition { .. } | object_store::Error::AlreadyExists { .. }) => {
                    tracing::debug!(destination = %self.url, attempt, "catalog changed under this backup; retrying");
                    tokio::time::sleep(catalog_retry_backoff(attempt, rand::random())).await;
                }
                Err(
                    e @ (object_store::Error::NotImplemented { .. }
                    | object_store::Error::NotSupported { .. }),
                ) => {
                    return Err(ReplicaError::FailedPrecondition(format!(
                        "backup destination {} does not support conditional writes (If-Match / \
                         If-None-Match), which keep concurrent backups from losing each other's catalog \
                         entries: use a store that does (AWS S3, MinIO, Cloudflare R2, Ceph RGW): {e}",
                        self.url
                    )));
                }
                Err(e) => return Err(classify(e, &self.url)),
            }
        }
        Err(ReplicaError::Unavailable(format!(
            "the catalog at {} changed under this backup {CATALOG_UPDATE_ATTEMPTS} times in a row (other \
             backups are writing it); this backup's snapshots were uploaded but are not cataloged: retry the \
             backup",
            self.url
        )))
    }

    /// Refuses a catalog whose owner is not this replica's (when both have one): another
    /// cluster's backups, which this one's entries and retention must not touch.
    fn check_owner(&self, catalog: &Catalog) -> ReplicaResult<()> {
        match (&self.owner, &catalog.owner) {
            (Some(ours), Some(theirs)) if ours != theirs => Err(ReplicaError::FailedPrecondition(format!(
                "backup destination {} holds the backups of {theirs}, and this replica backs up as {ours}: it \
                 does not write there, since its retention would delete {theirs}'s backups (a cluster restored \
                 from them needs a destination of its own)",
                self.url
            ))),
            _ => Ok(()),
        }
    }

    /// Claims an unowned catalog for this replica's owner, after [`Self::check_owner`].
    fn claim(&self, catalog: &mut Catalog) -> ReplicaResult<()> {
        self.check_owner(catalog)?;
        if catalog.owner.is_none() {
            catalog.owner.clone_from(&self.owner);
        }
        Ok(())
    }

    fn encode_catalog(&self, catalog: &Catalog) -> ReplicaResult<Vec<u8>> {
        catalog
            .encode()
            .map_err(|e| ReplicaError::from(e).context(format!("cannot write the catalog at {}", self.url)))
    }

    async fn put_catalog(&self, bytes: Vec<u8>, mode: PutMode) -> Result<(), object_store::Error> {
        let options = PutOptions { mode, ..Default::default() };
        self.store.put_opts(&self.key(CATALOG_KEY), PutPayload::from(bytes), options).await?;
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

/// The wait before catalog update try `attempt` + 1: a random part (`jitter` picks it)
/// of a window doubling from [`CATALOG_RETRY_BASE_MS`] up to [`CATALOG_RETRY_CAP_MS`].
fn catalog_retry_backoff(attempt: u32, jitter: u64) -> Duration {
    let window_ms = CATALOG_RETRY_BASE_MS.saturating_mul(1 << attempt.min(16)).min(CATALOG_RETRY_CAP_MS);
    Duration::from_millis(1 + jitter % window_ms)
}

/// Takes the exclusive lock that serializes catalog updates of a `file://` destination
/// (across processes too: it is an OS file lock). Released when the file is dropped.
/// The lock file stays: removing it would let a waiter lock a file no one else sees.
async fn lock_catalog(dir: &Path) -> ReplicaResult<std::fs::File> {
    let path = dir.join(CATALOG_LOCK_FILE);
    tokio::task::spawn_blocking(move || {
        let file =
            std::fs::OpenOptions::new().create(true).truncate(false).write(true).open(&path).map_err(
                |e| ReplicaError::io(format!("cannot open the catalog lock {}", path.display()), e),
            )?;
        file.lock()
            .map_err(|e| ReplicaError::io(format!("cannot lock the catalog lock {}", path.display()), e))?;
        Ok(file)
    })
    .await?
}

/// What a backup run wrote.
/// What one backup run takes: which logs, full or delta, and how many full chains
/// retention keeps (0: all).
pub(crate) struct BackupPlan {
    pub(crate) logs: Vec<LogSummary>,
    pub(crate) delta: bool,
    pub(crate) retain_full: usize,
}

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
/// `retain_full` > 0 deletes full backups (and their deltas) beyond the newest ones, in
/// this destination only and only objects that the catalog entries it removes name.
///
/// The snapshots are uploaded first; then one catalog update adds them and applies
/// retention to the catalog as it is at that moment ([`Destination::update_catalog`]),
/// so a concurrent backup's entries are kept; objects are deleted only after the
/// catalog that no longer names them is written.
pub(crate) async fn backup(
    store: &Store,
    dest: &Destination,
    plan: BackupPlan,
    now_ms: u64,
    work_dir: &Path,
    progress: &crate::backup_jobs::BackupProgress,
) -> ReplicaResult<BackupRun> {
    let BackupPlan { logs, delta, retain_full } = plan;
    use std::sync::atomic::Ordering;
    progress.logs_total.store(u32::try_from(logs.len()).unwrap_or(u32::MAX), Ordering::Relaxed);
    // Read to choose delta bases and to refuse another owner's destination before
    // anything is uploaded; the update below works on a fresh read and checks again.
    let catalog = dest.catalog().await?.unwrap_or_default();
    dest.check_owner(&catalog)?;
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
        progress.bytes_written.fetch_add(bytes, Ordering::Relaxed);
        progress.logs_done.fetch_add(1, Ordering::Relaxed);
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
        written.push((entry, checkpoint));
    }
    let entries: Vec<CatalogEntry> = written.iter().map(|(e, _)| e.clone()).collect();
    let deleted = dest
        .update_catalog(|catalog| {
            dest.claim(catalog)?;
            add_to_catalog(catalog, &entries, retain_full)
        })
        .await?;
    for key in &deleted {
        dest.delete(key).await?;
    }
    Ok(BackupRun { backup_id, written, deleted })
}

/// Adds a run's entries to `catalog` and applies retention (when `retain_full` > 0);
/// returns the keys of the entries retention removed. Called again on a newer catalog
/// when a concurrent update won, so it only looks at the catalog it is given: entries
/// already there (an earlier try that did land) are not added twice, and a delta whose
/// base a concurrent retention removed is refused rather than cataloged unrestorable.
fn add_to_catalog(
    catalog: &mut Catalog,
    entries: &[CatalogEntry],
    retain_full: usize,
) -> ReplicaResult<Vec<String>> {
    for entry in entries {
        if catalog.backups.iter().any(|b| b.backup_id == entry.backup_id && b.log_id == entry.log_id) {
            continue;
        }
        let base_kept = entry.kind == BackupKind::Full
            || catalog
                .backups
                .iter()
                .any(|b| b.log_id == entry.log_id && b.epoch == entry.epoch && b.seq == entry.base_seq);
        if !base_kept {
            return Err(ReplicaError::FailedPrecondition(format!(
                "the delta backup of log {} starts at seq {}, whose backup another backup's retention \
                 removed meanwhile; run the backup again (it takes a full backup of that log)",
                entry.name, entry.base_seq
            )));
        }
        catalog.backups.push(entry.clone());
    }
    Ok(if retain_full > 0 { apply_retention(catalog, retain_full) } else { Vec::new() })
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
    use plait_core::{Op, WriterKey};

    use super::*;

    /// A full backup of `logs` (no progress followed).
    async fn full_backup(
        store: &Store,
        dest: &Destination,
        logs: Vec<LogSummary>,
        retain_full: usize,
        now_ms: u64,
        work_dir: &Path,
    ) -> ReplicaResult<BackupRun> {
        let plan = BackupPlan { logs, delta: false, retain_full };
        backup(store, dest, plan, now_ms, work_dir, &Default::default()).await
    }

    /// A store in a temporary directory with one kv log holding `writes` entries.
    async fn store_with_log(dir: &Path, writes: usize) -> (Store, LogSummary) {
        let key = WriterKey::from_secret([5; 32]);
        let store = crate::test_support::open_store(&dir.join("data"), &key).await;
        let (summary, _) = store.create_log(crate::test_support::kv_manifest("kv", &key)).await.unwrap();
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
        let err = full_backup(&store, &dest, vec![summary.clone()], 0, 1, &not_a_dir.join("tmp"))
            .await
            .err()
            .expect("the backup fails");
        assert!(matches!(err, ReplicaError::Unavailable(_)), "{err:?}");
        assert!(dest.catalog().await.unwrap().is_none(), "nothing was cataloged");
        assert_eq!(std::fs::read_dir(&backups).unwrap().count(), 0, "nothing was uploaded");

        let work = dir.path().join("tmp");
        let run = full_backup(&store, &dest, vec![summary], 0, 2, &work).await.unwrap();
        let catalog = dest.catalog().await.unwrap().unwrap();
        assert_eq!(catalog.backups, run.written.iter().map(|(e, _)| e.clone()).collect::<Vec<_>>());
        assert_eq!(catalog.backups[0].seq, 5);
        assert_eq!(std::fs::read_dir(&work).unwrap().count(), 0, "the staged file is removed");
        store.close().await.unwrap();
    }

    /// The first backup with an owner claims an unowned catalog; a replica with another
    /// owner is refused (FAILED_PRECONDITION, naming both) before anything is uploaded,
    /// so the catalog and the objects stay as they were; the owner's next backup goes on;
    /// a replica without an owner is not checked. An invalid owner stops the start.
    #[tokio::test]
    async fn another_owners_destination_is_refused_before_any_upload() {
        let dir = tempfile::tempdir().unwrap();
        let (store, summary) = store_with_log(dir.path(), 5).await;
        let backups = dir.path().join("backups");
        let setting = format!("default=file://{}", backups.display());
        let as_owner = |owner: Option<&str>| {
            Destinations::parse(std::slice::from_ref(&setting), &S3Options::default(), owner)
                .unwrap()
                .resolve("default")
                .unwrap()
        };
        let work = dir.path().join("tmp");
        let source = as_owner(Some("shop/orders"));
        full_backup(&store, &source, vec![summary.clone()], 0, 1, &work).await.unwrap();
        let claimed = source.catalog().await.unwrap().unwrap();
        assert_eq!(claimed.owner.as_deref(), Some("shop/orders"));
        let objects = || walk(&backups);
        let before = (std::fs::read(backups.join(CATALOG_KEY)).unwrap(), objects());

        let restored = as_owner(Some("shop/orders-restored"));
        let err =
            full_backup(&store, &restored, vec![summary.clone()], 1, 2, &work).await.err().expect("refused");
        assert!(matches!(err, ReplicaError::FailedPrecondition(_)), "{err:?}");
        let message = err.to_string();
        assert!(
            message.contains("shop/orders-restored") && message.contains("holds the backups of shop/orders")
        );
        assert_eq!(
            (std::fs::read(backups.join(CATALOG_KEY)).unwrap(), objects()),
            before,
            "a trace was left"
        );

        full_backup(&store, &source, vec![summary.clone()], 0, 3, &work).await.unwrap();
        full_backup(&store, &as_owner(None), vec![summary], 0, 4, &work).await.unwrap();
        assert_eq!(source.catalog().await.unwrap().unwrap().backups.len(), 3);
        assert!(
            Destinations::parse(std::slice::from_ref(&setting), &S3Options::default(), Some("a b")).is_err()
        );
        store.close().await.unwrap();
    }

    /// Every file under `dir`, relative, sorted.
    fn walk(dir: &Path) -> Vec<String> {
        let mut out = Vec::new();
        let mut stack = vec![dir.to_path_buf()];
        while let Some(next) = stack.pop() {
            for entry in std::fs::read_dir(&next).unwrap() {
                let path = entry.unwrap().path();
                if path.is_dir() {
                    stack.push(path);
                } else {
                    out.push(path.strip_prefix(dir).unwrap().display().to_string());
                }
            }
        }
        out.sort();
        out
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

    /// A catalog entry of `log` from run `backup_id`.
    fn entry(backup_id: &str, log: u8, kind: BackupKind, seq: u64, base_seq: u64) -> CatalogEntry {
        let log_id = LogId([log; 32]);
        CatalogEntry {
            backup_id: backup_id.into(),
            log_id,
            name: format!("log-{log}"),
            kind,
            key: format!("logs/{log_id}/{backup_id}.snap"),
            bytes: 10,
            epoch: [1; 16],
            seq,
            base_seq,
            state_root: [2; 32],
            n_ops: seq,
        }
    }

    fn memory_destination() -> (Arc<object_store::memory::InMemory>, Destination) {
        let store = Arc::new(object_store::memory::InMemory::new());
        let dest = Destination {
            store: store.clone(),
            prefix: ObjectPath::from("prefix"),
            url: "memory://test/prefix".into(),
            local_dir: None,
            owner: None,
        };
        (store, dest)
    }

    fn ids(catalog: &Catalog) -> Vec<String> {
        let mut ids: Vec<String> = catalog.backups.iter().map(|b| b.backup_id.clone()).collect();
        ids.sort();
        ids
    }

    /// The compare-and-swap loop: when another backup writes the catalog between this
    /// update's read and its write (three times here, the first time creating it), the
    /// conditional put is refused, the catalog is read again and the change re-applied,
    /// so the other backups' entries and this one's all survive.
    #[tokio::test]
    async fn catalog_updates_retry_until_they_win() {
        let (store, dest) = memory_destination();
        let key = dest.key(CATALOG_KEY);
        let mut calls = 0;
        let ours = entry("ours", 1, BackupKind::Full, 5, 0);
        dest.update_catalog(|catalog| {
            calls += 1;
            if calls <= 3 {
                // Another backup lands first: the catalog read above is stale now.
                let mut theirs = catalog.clone();
                theirs.backups.push(entry(&format!("theirs-{calls}"), 2, BackupKind::Full, calls, 0));
                let bytes = theirs.encode().unwrap();
                futures::executor::block_on(store.put(&key, PutPayload::from(bytes))).unwrap();
            }
            catalog.backups.push(ours.clone());
            Ok(())
        })
        .await
        .unwrap();
        assert_eq!(calls, 4, "three lost races, then the write");
        let catalog = dest.catalog().await.unwrap().unwrap();
        assert_eq!(ids(&catalog), ["ours", "theirs-1", "theirs-2", "theirs-3"]);
    }

    /// An update that loses every race gives up after the bound, as unavailable (worth
    /// retrying later) with a message that says what happened and what to do.
    #[tokio::test]
    async fn catalog_updates_give_up_after_the_bound() {
        let (store, dest) = memory_destination();
        let key = dest.key(CATALOG_KEY);
        let mut calls = 0;
        let err = dest
            .update_catalog(|catalog| {
                calls += 1;
                let mut theirs = catalog.clone();
                theirs.backups.push(entry(&format!("theirs-{calls}"), 2, BackupKind::Full, calls, 0));
                futures::executor::block_on(store.put(&key, PutPayload::from(theirs.encode().unwrap())))
                    .unwrap();
                Ok(())
            })
            .await
            .unwrap_err();
        assert_eq!(calls, CATALOG_UPDATE_ATTEMPTS as u64);
        assert!(matches!(err, ReplicaError::Unavailable(_)), "{err:?}");
        assert!(err.to_string().contains("retry the backup"), "{err}");
        assert_eq!(dest.catalog().await.unwrap().unwrap().backups.len(), CATALOG_UPDATE_ATTEMPTS as usize);
    }

    /// Many updates at once, to an object store with conditional puts and to a
    /// directory (serialized by its lock file): every one's entry is in the catalog.
    #[tokio::test(flavor = "multi_thread", worker_threads = 4)]
    async fn concurrent_catalog_updates_lose_nothing() {
        let dir = tempfile::tempdir().unwrap();
        let file =
            Destination::parse(&format!("file://{}", dir.path().display()), &S3Options::default()).unwrap();
        for dest in [Arc::new(memory_destination().1), Arc::new(file)] {
            let tasks: Vec<_> = (0..16)
                .map(|i| {
                    let dest = dest.clone();
                    tokio::spawn(async move {
                        let ours = entry(&format!("run-{i:02}"), i, BackupKind::Full, 1, 0);
                        dest.update_catalog(|catalog| add_to_catalog(catalog, std::slice::from_ref(&ours), 0))
                            .await
                    })
                })
                .collect();
            for task in tasks {
                task.await.unwrap().unwrap();
            }
            let catalog = dest.catalog().await.unwrap().unwrap();
            let expected: Vec<String> = (0..16).map(|i| format!("run-{i:02}")).collect();
            assert_eq!(ids(&catalog), expected, "{}", dest.url);
        }
    }

    /// Re-applying a run's entries to a catalog that already has them (an earlier try
    /// that landed after all) adds nothing twice; a delta whose base a concurrent
    /// retention removed is refused; retention returns exactly the removed entries' keys.
    #[test]
    fn adding_entries_is_idempotent_and_keeps_chains_whole() {
        let full = entry("a", 1, BackupKind::Full, 5, 0);
        let delta = entry("b", 1, BackupKind::Delta, 8, 5);
        let mut catalog = Catalog::default();
        add_to_catalog(&mut catalog, std::slice::from_ref(&full), 0).unwrap();
        add_to_catalog(&mut catalog, std::slice::from_ref(&full), 0).unwrap();
        assert_eq!(catalog.backups, std::slice::from_ref(&full));
        add_to_catalog(&mut catalog, std::slice::from_ref(&delta), 0).unwrap();
        let newer = entry("c", 1, BackupKind::Full, 9, 0);
        let deleted = add_to_catalog(&mut catalog, std::slice::from_ref(&newer), 1).unwrap();
        assert_eq!(deleted, [full.key.clone(), delta.key.clone()]);
        assert_eq!(catalog.backups, [newer]);
        let orphan = entry("d", 1, BackupKind::Delta, 12, 8);
        let err = add_to_catalog(&mut catalog, &[orphan], 0).unwrap_err();
        assert!(matches!(err, ReplicaError::FailedPrecondition(_)), "{err:?}");
        assert!(err.to_string().contains("run the backup again"), "{err}");
    }

    /// Names pick configured destinations; a URL, an unknown name or a replica without
    /// destinations are refused with the kinds the Backup RPC promises.
    #[test]
    fn destinations_are_named_never_given() {
        let dir = tempfile::tempdir().unwrap();
        let url = |name: &str| format!("{name}=file://{}", dir.path().join(name).display());
        let none = Destinations::default();
        assert!(matches!(none.resolve("x"), Err(ReplicaError::FailedPrecondition(_))));
        assert!(matches!(none.resolve(""), Err(ReplicaError::FailedPrecondition(_))));
        assert!(matches!(none.resolve("s3://b/p"), Err(ReplicaError::Invalid(_))));
        let one = Destinations::parse(&[url("local")], &S3Options::default(), None).unwrap();
        assert_eq!(one.names(), ["local"]);
        assert!(one.resolve("").is_ok() && one.resolve("local").is_ok());
        assert!(
            matches!(one.resolve("other"), Err(ReplicaError::NotFound(m)) if m.contains("configured: local"))
        );
        for url in ["file:///tmp/x", "s3://bucket/p", "/tmp/x", "a/b"] {
            assert!(
                matches!(one.resolve(url), Err(ReplicaError::Invalid(m)) if m.contains("not a URL")),
                "{url}"
            );
        }
        let two =
            Destinations::parse(&[url("b"), url("a"), String::new()], &S3Options::default(), None).unwrap();
        assert_eq!(two.names(), ["a", "b"]);
        assert!(matches!(two.resolve(""), Err(ReplicaError::Invalid(m)) if m.contains("several")));
        for bad in ["", "-a", "A", "a_b", &"a".repeat(64)] {
            assert!(!valid_destination_name(bad), "{bad:?}");
        }
        for good in ["a", "0", "nightly-2", &"a".repeat(63)] {
            assert!(valid_destination_name(good), "{good:?}");
        }
    }

    /// Backup ids never repeat within a process, even for runs in the same millisecond
    /// or with a clock that steps back.
    #[test]
    fn backup_clock_is_strictly_increasing() {
        let clock = BackupClock::default();
        assert_eq!(clock.next_ms(100), 100);
        assert_eq!(clock.next_ms(100), 101);
        assert_eq!(clock.next_ms(50), 102);
        assert_eq!(clock.next_ms(500), 500);
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
