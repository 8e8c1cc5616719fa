//! Command-line settings of `plaitd`. Every flag has an environment equivalent so the
//! same binary is configured by flags on a laptop and by env in a pod.

use std::net::SocketAddr;
use std::path::PathBuf;

use clap::Args;

/// The default largest gRPC message. Pulled pages and subscription batches are bounded
/// below it (compile-time assertions beside those bounds).
pub(crate) const MESSAGE_BYTES_DEFAULT: usize = 16 * 1024 * 1024;

/// Settings of `plaitd serve`.
#[derive(Args, Clone, Debug)]
pub struct ServeArgs {
    /// Address the gRPC API listens on.
    #[arg(long, env = "PLAIT_LISTEN", default_value = "127.0.0.1:7070")]
    pub listen: SocketAddr,

    /// Directory holding the replica's data (created on first start).
    #[arg(long, env = "PLAIT_DATA_DIR", default_value = "./plait-data")]
    pub data_dir: PathBuf,

    /// The replica's identity key towards peers. Generated on first start.
    /// [default: <data-dir>/node.key]
    #[arg(long, env = "PLAIT_NODE_KEY_FILE")]
    pub node_key_file: Option<PathBuf>,

    /// The key this replica signs entries with for clients. Replicas of one cluster share
    /// it so a log that names it accepts writes through any of them. Generated on first
    /// start if missing. [default: <data-dir>/writer.key]
    #[arg(long, env = "PLAIT_WRITER_KEY_FILE")]
    pub writer_key_file: Option<PathBuf>,

    /// Address of the Prometheus metrics endpoint (`GET /metrics`). Off when not set.
    #[arg(long, env = "PLAIT_METRICS_LISTEN")]
    pub metrics_listen: Option<SocketAddr>,

    /// A second gRPC address for the cluster-admin methods (`Admin.SetMembers`, `Drain`,
    /// `Checkpoint`, `ExportSnapshot`, `ImportSnapshot`, `Backup`, `StartBackup`,
    /// `GetBackupJob`), so a network policy can let only the operator reach them. When
    /// set, `--listen` refuses those methods (PERMISSION_DENIED, naming this address)
    /// and this address serves every method, with the same TLS and authentication. Off
    /// when not set: `--listen` serves everything.
    #[arg(long, env = "PLAIT_ADMIN_LISTEN")]
    pub admin_listen: Option<SocketAddr>,

    /// Log filter, in `RUST_LOG` syntax (`info`, `plait_store=debug,info`).
    #[arg(long = "log", env = "PLAIT_LOG", default_value = "info,fjall=warn,lsm_tree=warn")]
    pub log_filter: String,

    /// Write logs as JSON lines instead of human-readable text.
    #[arg(long, env = "PLAIT_LOG_JSON")]
    pub log_json: bool,

    /// Largest gRPC message accepted or sent, in bytes.
    #[arg(long, env = "PLAIT_MESSAGE_BYTES_MAX", default_value_t = MESSAGE_BYTES_DEFAULT)]
    pub message_bytes_max: usize,

    /// Concurrent HTTP/2 streams per client connection.
    #[arg(long, env = "PLAIT_STREAMS_PER_CONNECTION_MAX", default_value_t = 256)]
    pub streams_per_connection_max: u32,

    /// Open `Subscribe` streams across all clients.
    #[arg(long, env = "PLAIT_SUBSCRIPTIONS_MAX", default_value_t = 1024)]
    pub subscriptions_max: usize,

    /// Bytes one `ImportSnapshot` stream may carry; more is refused and the staged part
    /// deleted.
    #[arg(long, env = "PLAIT_IMPORT_BYTES_MAX", default_value_t = 4 * 1024 * 1024 * 1024)]
    pub import_bytes_max: u64,

    /// Bytes all imports together may stage in the data directory at once.
    #[arg(long, env = "PLAIT_IMPORT_STAGING_BYTES_MAX", default_value_t = 8 * 1024 * 1024 * 1024)]
    pub import_staging_bytes_max: u64,

    /// `ImportSnapshot` calls served at once.
    #[arg(long, env = "PLAIT_IMPORTS_MAX", default_value_t = 2)]
    pub imports_max: usize,

    /// Open `Sync.Watch` streams across all peers: a limit of its own, so clients holding
    /// every `Subscribe` slot cannot starve replication.
    #[arg(long, env = "PLAIT_PEER_STREAMS_MAX", default_value_t = 256)]
    pub peer_streams_max: usize,

    /// Entries one log may hold while waiting for missing parents.
    #[arg(long, env = "PLAIT_PENDING_PER_LOG_MAX", default_value_t = 100_000)]
    pub pending_per_log_max: u64,

    /// Block cache of the storage engine, in MiB.
    #[arg(long, env = "PLAIT_CACHE_MIB", default_value_t = 64)]
    pub cache_mib: u64,

    /// Bound, in MiB, on the storage engine's memtables (written data not yet flushed to
    /// tables, every keyspace together). Above it, with flushes outstanding, writes and
    /// replication wait for the flushes, so memory stays bounded when the disk falls
    /// behind. At least 90 (what the active memtables alone may hold); 0: no bound.
    #[arg(long, env = "PLAIT_WRITE_BUFFER_MIB", default_value_t = plait_store::WRITE_BUFFER_BYTES_DEFAULT / (1024 * 1024))]
    pub write_buffer_mib: u64,

    /// Background threads of the storage engine, for memtable flushes and compactions
    /// (1 to 16). One is the default: with more, the engine's pool (fjall 3.1) keeps one
    /// thread spinning while another compacts, which costs more than it gains on small
    /// machines. Raise it on machines with cores to spare and heavy write loads.
    #[arg(long, env = "PLAIT_ENGINE_THREADS", default_value_t = plait_store::ENGINE_THREADS_DEFAULT as u16,
          value_parser = clap::value_parser!(u16).range(1..=16))]
    pub engine_threads: u16,

    /// Free space, in MiB, that the data directory's disk must keep: below it writes,
    /// log creation and replication into this replica are refused with
    /// RESOURCE_EXHAUSTED (reads go on) instead of filling the disk. 0 turns it off.
    #[arg(long, env = "PLAIT_DISK_FREE_MIN_MIB", default_value_t = plait_store::DISK_FREE_MIN_BYTES / (1024 * 1024))]
    pub disk_free_min_mib: u64,

    /// A peer replica's gRPC address (host:port). Repeat the flag, or give a
    /// comma-separated list in the environment variable.
    #[arg(long = "peer", env = "PLAIT_PEERS", value_delimiter = ',')]
    pub peers: Vec<String>,

    /// Edge mode: a replica (host:port) to follow that does not count this one as a
    /// member. This replica pulls from it, and pushes its own writes to it whenever it can
    /// reach it; writes made while cut off are pushed after. Repeatable.
    #[arg(long = "upstream", env = "PLAIT_UPSTREAMS", value_delimiter = ',')]
    pub upstreams: Vec<String>,

    /// A backup destination that Admin.Backup may write to, as NAME=URL: the URL is
    /// file:///absolute/dir or s3://bucket/prefix, the name 1 to 63 of [a-z0-9-]
    /// (`plaitctl backup NAME`). Backup calls name one of these and can never give a
    /// URL, so only whoever starts the replica decides where backups (and retention's
    /// deletions) go. Repeat the flag, or give a comma-separated list in the
    /// environment variable. Checked at startup.
    #[arg(
        long = "backup-destination",
        env = "PLAIT_BACKUP_DESTINATIONS",
        value_delimiter = ',',
        value_name = "NAME=URL"
    )]
    pub backup_destinations: Vec<String>,

    /// Who this replica backs up as, claimed in each destination's catalog by the first
    /// backup there (1 to 253 letters, digits, '.', '-', '_' and '/'; the operator gives
    /// each cluster `<namespace>/<name>`). A destination whose catalog another owner
    /// claimed is refused (FAILED_PRECONDITION) before anything is uploaded, so a
    /// cluster restored from another's backups cannot add to them or apply its
    /// retention to them. Unset: no check, and nothing claimed.
    #[arg(long, env = "PLAIT_BACKUP_OWNER", value_name = "OWNER")]
    pub backup_owner: Option<String>,

    /// Edge mode: before serving, restore from this backup destination whatever this
    /// node does not hold yet (everything on first start; the rest after an interrupted
    /// restore).
    #[arg(long, env = "PLAIT_RESTORE_FROM")]
    pub restore_from: Option<String>,

    /// Edge mode: with --restore-from, check the backup catalog this often and apply new
    /// deltas, in ms (0: never).
    #[arg(long, env = "PLAIT_FOLLOW_BACKUPS_MS", default_value_t = 0)]
    pub follow_backups_ms: u64,

    /// Discover peers by resolving this DNS name (host:port, for example a Kubernetes
    /// headless service) every `--discover-interval-ms`.
    #[arg(long, env = "PLAIT_DISCOVER_DNS")]
    pub discover_dns: Option<String>,

    /// How often DNS discovery resolves the name again, in ms.
    #[arg(long, env = "PLAIT_DISCOVER_INTERVAL_MS", default_value_t = 10_000)]
    pub discover_interval_ms: u64,

    /// How often every log is compared with every peer even without notices, in ms
    /// (anti-entropy; the backstop for missed notices).
    #[arg(long, env = "PLAIT_ANTI_ENTROPY_MS", default_value_t = 5_000)]
    pub anti_entropy_ms: u64,

    /// Logs this replica hosts at most, created here or learned from peers.
    #[arg(long, env = "PLAIT_LOGS_MAX", default_value_t = 1000)]
    pub logs_max: usize,

    /// Logs each authenticated principal may create on this replica, unless its entry in
    /// the auth file sets `logs_max`. Counts the logs it created that are still hosted
    /// here; dropping one frees its place. Not applied with security off.
    #[arg(long, env = "PLAIT_LOGS_PER_PRINCIPAL", default_value_t = 100)]
    pub logs_per_principal: usize,

    /// Durable consumers one log may have on this replica (named positions that
    /// `Subscribe` resumes from; see docs/consumers.md). A new consumer over the limit is
    /// refused with RESOURCE_EXHAUSTED; deleting one frees its place. At least 1.
    #[arg(long, env = "PLAIT_CONSUMERS_PER_LOG_MAX", default_value_t = plait_store::CONSUMERS_PER_LOG_DEFAULT,
          value_parser = clap::builder::RangedU64ValueParser::<usize>::new().range(1..=65_535))]
    pub consumers_per_log_max: usize,

    /// Entries a replica may be behind a reachable member, on any log, and still report
    /// ready on the `plait.v1.Ready` health service and `/readyz`. A replica that has not
    /// finished its first round with every reachable member is not ready either.
    #[arg(long, env = "PLAIT_READY_LAG_MAX", default_value_t = 10_000)]
    pub ready_lag_max: u64,

    /// Entries with missing parents one peer may leave pending before it is cut off.
    #[arg(long, env = "PLAIT_PEER_PENDING_MAX", default_value_t = 10_000)]
    pub peer_pending_max: u64,

    /// Take a checkpoint of a log after this many new ops (0: never by count).
    #[arg(long, env = "PLAIT_CHECKPOINT_EVERY_OPS", default_value_t = 100_000)]
    pub checkpoint_every_ops: u64,

    /// Take a checkpoint of a log that changed at least this often, in ms (0: never by time).
    #[arg(long, env = "PLAIT_CHECKPOINT_EVERY_MS", default_value_t = 300_000)]
    pub checkpoint_every_ms: u64,

    /// An automatic checkpoint gives up, and is tried again later, once more than this
    /// many MiB of writes and replicated entries arrive while it scans the log's view:
    /// the storage engine keeps in memory every memtable it flushes while a scan runs,
    /// so this bounds what a checkpoint costs in memory during heavy ingest (a catch-up,
    /// a restore). 0: never give up. On-demand checkpoints and exports always finish.
    #[arg(long, env = "PLAIT_CHECKPOINT_DEFER_MIB", default_value_t = 32)]
    pub checkpoint_defer_mib: u64,

    #[command(flatten)]
    pub s3: S3Args,

    #[command(flatten)]
    pub security: SecurityArgs,

    /// How long SIGTERM waits for in-flight calls before closing the store anyway, in ms.
    #[arg(long, env = "PLAIT_SHUTDOWN_GRACE_MS", default_value_t = 10_000)]
    pub shutdown_grace_ms: u64,
}

impl ServeArgs {
    pub fn node_key_path(&self) -> PathBuf {
        self.node_key_file.clone().unwrap_or_else(|| self.data_dir.join("node.key"))
    }

    pub fn writer_key_path(&self) -> PathBuf {
        self.writer_key_file.clone().unwrap_or_else(|| self.data_dir.join("writer.key"))
    }
}

/// TLS, authentication and connection bounds (docs/security.md).
#[derive(Args, Clone, Debug, Default)]
pub struct SecurityArgs {
    /// PEM certificate chain of the gRPC listener; also presented to peers as this
    /// replica's client certificate. Re-read when it changes. Needs --tls-key.
    #[arg(long, env = "PLAIT_TLS_CERT", requires = "tls_key", help_heading = "Security")]
    pub tls_cert: Option<PathBuf>,

    /// PEM private key of --tls-cert.
    #[arg(long, env = "PLAIT_TLS_KEY", requires = "tls_cert", help_heading = "Security")]
    pub tls_key: Option<PathBuf>,

    /// PEM CA bundle that client and peer certificates are verified against (mutual
    /// TLS). Certificates in group `plait:peers` are replicas, `plait:admins` admins.
    #[arg(long, env = "PLAIT_TLS_CLIENT_CA", requires = "tls_cert", help_heading = "Security")]
    pub tls_client_ca: Option<PathBuf>,

    /// PEM CA bundle this replica verifies its peers' and upstreams' server certificates
    /// with; peers are then called over TLS. [default: --tls-client-ca]
    #[arg(long, env = "PLAIT_PEER_TLS_CA", help_heading = "Security")]
    pub peer_tls_ca: Option<PathBuf>,

    /// YAML file of bearer tokens (stored hashed) and certificate subjects, each with
    /// roles. Re-read when it changes. With it or --tls-client-ca, every call must
    /// authenticate.
    #[arg(long, env = "PLAIT_AUTH_FILE", help_heading = "Security")]
    pub auth_file: Option<PathBuf>,

    /// This replica's bearer token towards its peers and upstreams (when they take
    /// tokens instead of certificates). A file holding the token.
    #[arg(long, env = "PLAIT_PEER_TOKEN_FILE", help_heading = "Security")]
    pub peer_token_file: Option<PathBuf>,

    /// Serve a non-loopback address without TLS and authentication. Anyone who can
    /// reach the port can then read, write, drop logs and change membership.
    #[arg(long, env = "PLAIT_INSECURE", help_heading = "Security")]
    pub insecure: bool,

    /// Open client connections at most; more are closed at once.
    #[arg(long, env = "PLAIT_CONNECTIONS_MAX", default_value_t = 1024, help_heading = "Security")]
    pub connections_max: usize,

    /// A new connection must finish its TLS handshake (or, on plaintext, send its first
    /// bytes) within this, in ms.
    #[arg(long, env = "PLAIT_HANDSHAKE_TIMEOUT_MS", default_value_t = 10_000, help_heading = "Security")]
    pub handshake_timeout_ms: u64,

    /// A connection with no call open for this long is closed, in ms.
    #[arg(long, env = "PLAIT_IDLE_TIMEOUT_MS", default_value_t = 300_000, help_heading = "Security")]
    pub idle_timeout_ms: u64,

    /// HTTP/2 keepalive: ping a connection silent this long, in ms; one that does not
    /// answer within the same time is closed.
    #[arg(long, env = "PLAIT_KEEPALIVE_MS", default_value_t = 30_000, help_heading = "Security")]
    pub keepalive_ms: u64,

    /// Deadline of unary calls that set none, in ms (streams, Drain and Backup excepted).
    #[arg(long, env = "PLAIT_CALL_TIMEOUT_MS", default_value_t = 60_000, help_heading = "Security")]
    pub call_timeout_ms: u64,

    /// How often TLS files and the auth file are checked for changes, in ms.
    #[arg(long, env = "PLAIT_SECURITY_RELOAD_MS", default_value_t = 5_000, help_heading = "Security")]
    pub security_reload_ms: u64,
}

impl SecurityArgs {
    /// Whether callers must authenticate.
    pub fn auth_required(&self) -> bool {
        self.tls_client_ca.is_some() || self.auth_file.is_some()
    }
}

/// How to reach an S3-compatible backup store, beyond the `AWS_*` environment.
#[derive(Args, Clone, Debug, Default)]
pub struct S3Args {
    /// S3 endpoint for backups (for S3-compatible stores); else AWS_ENDPOINT or AWS.
    #[arg(long, env = "PLAIT_BACKUP_S3_ENDPOINT")]
    pub backup_s3_endpoint: Option<String>,

    /// S3 region for backups; else AWS_REGION.
    #[arg(long, env = "PLAIT_BACKUP_S3_REGION")]
    pub backup_s3_region: Option<String>,

    /// Allow plain http:// S3 endpoints (test and on-premises stores).
    #[arg(long, env = "PLAIT_BACKUP_S3_ALLOW_HTTP")]
    pub backup_s3_allow_http: bool,
}

impl S3Args {
    pub(crate) fn options(&self) -> crate::backup::S3Options {
        crate::backup::S3Options {
            endpoint: self.backup_s3_endpoint.clone(),
            region: self.backup_s3_region.clone(),
            allow_http: self.backup_s3_allow_http,
        }
    }
}

/// Settings of `plaitd restore`.
#[derive(Args, Clone, Debug)]
pub struct RestoreArgs {
    /// The backup destination to restore from: file:///dir or s3://bucket/prefix.
    #[arg(long)]
    pub from: String,

    /// The data directory to build. It must not exist or be empty: a restore makes a new
    /// replica incarnation (a new epoch).
    #[arg(long, env = "PLAIT_DATA_DIR", default_value = "./plait-data")]
    pub data_dir: PathBuf,

    /// Restore only these logs (name or id); all when not given.
    #[arg(long = "log")]
    pub logs: Vec<String>,

    /// The writer key file of the new data directory (default: <data-dir>/writer.key,
    /// generated). Use the cluster's shared writer key to rejoin a cluster.
    #[arg(long, env = "PLAIT_WRITER_KEY_FILE")]
    pub writer_key_file: Option<PathBuf>,

    /// Succeed without restoring when the data directory already holds data (a replica
    /// that bootstrapped before and restarted). Used by the operator's init container.
    #[arg(long)]
    pub skip_if_initialized: bool,

    /// Free space, in MiB, that the data directory's disk must keep while the restore
    /// writes: below it the restore stops with an error (the staging directory is left
    /// for the next attempt to clear) instead of filling the disk. 0 turns it off.
    #[arg(long, env = "PLAIT_DISK_FREE_MIN_MIB", default_value_t = plait_store::DISK_FREE_MIN_BYTES / (1024 * 1024))]
    pub disk_free_min_mib: u64,

    #[command(flatten)]
    pub s3: S3Args,
}

/// Settings of `plaitd check`.
#[derive(Args, Clone, Debug)]
pub struct CheckArgs {
    /// Data directory to check. The replica using it must be stopped.
    #[arg(long, env = "PLAIT_DATA_DIR", default_value = "./plait-data")]
    pub data_dir: PathBuf,

    /// Print the report as JSON.
    #[arg(long)]
    pub json: bool,
}

/// Settings of the hidden `plaitd lose-entry`, a fault for tests of detection and repair.
#[derive(Args, Clone, Debug)]
pub struct LoseEntryArgs {
    /// Data directory of a stopped replica.
    #[arg(long, env = "PLAIT_DATA_DIR", default_value = "./plait-data")]
    pub data_dir: PathBuf,
    /// The log, by name or hex id.
    #[arg(long)]
    pub log: String,
    /// The seq of the entry to lose (not a head).
    #[arg(long)]
    pub seq: u64,
}

/// Settings of `plaitd keygen`.
#[derive(Args, Clone, Debug)]
pub struct KeygenArgs {
    /// Where to write the secret key (hex, mode 0600). Refuses to overwrite.
    #[arg(long)]
    pub out: PathBuf,
}
