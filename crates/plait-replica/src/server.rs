//! Starting, running and stopping a replica: keys, store, gRPC server with health and
//! reflection, metrics endpoint, and a shutdown that drains before closing the store.

use std::sync::Arc;
use std::time::{Duration, Instant};

use anyhow::Context;
use plait_proto::pb;
use plait_store::{Store, StoreConfig, StoreObserver};
use tokio::sync::{Semaphore, watch};
use tonic::transport::Server;

use crate::auth::{AuthLayer, Authenticator, ProofVerifier};
use crate::backup::{Destination, Destinations, S3Options};
use crate::config::{CheckArgs, RestoreArgs, ServeArgs};
use crate::keyfile::load_or_create_key;
use crate::net::{self, ListenerLimits, ReloadingTls, TlsFiles};
use crate::replication::{
    EngineCtx, Holds, Listeners, Membership, PeerClientConfig, PeerTable, ReplicationConfig,
};
use crate::services::{AdminService, Ctx, DataService, LogsService, SyncService};
use crate::telemetry::{self, Metrics, RpcMetricsLayer, Telemetry};

/// Feeds store events into metrics.
struct MetricsObserver(Metrics);

impl StoreObserver for MetricsObserver {
    fn batch_committed(&self, entries: u64, ops: u64, fsync: Duration) {
        self.0.record_batch(entries, ops, fsync);
    }

    fn pending_changed(&self, pending: u64) {
        self.0.set_pending(pending);
    }

    fn write_stalled(&self, waited: Duration) {
        self.0.record_write_stall(waited);
    }
}

/// Why the server stopped.
enum Stop {
    Signal(&'static str),
    Poisoned,
}

async fn stop_signal(mut poisoned: watch::Receiver<bool>) -> Stop {
    let mut term = match tokio::signal::unix::signal(tokio::signal::unix::SignalKind::terminate()) {
        Ok(s) => s,
        Err(e) => {
            tracing::warn!(error = %e, "cannot listen for SIGTERM; only Ctrl-C stops the replica");
            let _ = tokio::signal::ctrl_c().await;
            return Stop::Signal("SIGINT");
        }
    };
    tokio::select! {
        _ = term.recv() => Stop::Signal("SIGTERM"),
        _ = tokio::signal::ctrl_c() => Stop::Signal("SIGINT"),
        _ = poisoned.wait_for(|p| *p) => Stop::Poisoned,
    }
}

/// Runs a replica until SIGTERM or SIGINT (a clean stop) or until a failed write to disk
/// poisons the store (an error: the process must restart and recover).
pub async fn serve(args: ServeArgs, telemetry: Telemetry) -> anyhow::Result<()> {
    let started = Instant::now();
    let metrics = telemetry.metrics();
    check_exposure(&args)?;
    // Before anything is created or opened: bad settings stop the start with the reason.
    let write_buffer_bytes = args.write_buffer_mib.saturating_mul(1024 * 1024);
    if write_buffer_bytes != 0 && write_buffer_bytes < plait_store::MEMTABLES_BYTES_MAX {
        anyhow::bail!(
            "--write-buffer-mib {} is under what the active memtables alone may hold ({} MiB); give at least \
             that, or 0 for no bound",
            args.write_buffer_mib,
            plait_store::MEMTABLES_BYTES_MAX.div_ceil(1024 * 1024)
        );
    }
    let backups =
        Destinations::parse(&args.backup_destinations, &args.s3.options(), args.backup_owner.as_deref())
            .context("invalid --backup-destination (PLAIT_BACKUP_DESTINATIONS)")?;
    if !backups.names().is_empty() {
        tracing::info!(destinations = %backups.names().join(","), "backup destinations configured");
    }
    let mut rng = rand::rngs::OsRng;
    std::fs::create_dir_all(&args.data_dir)
        .with_context(|| format!("cannot create data directory {}", args.data_dir.display()))?;
    let (node_key, new_node) = load_or_create_key(&args.node_key_path(), &mut rng)?;
    let (writer_key, new_writer) = load_or_create_key(&args.writer_key_path(), &mut rng)?;
    if new_node || new_writer {
        tracing::info!(node = %node_key.public(), writer = %writer_key.public(), "generated keys on first start");
    }

    let mut config = StoreConfig::new(&args.data_dir, writer_key);
    config.pending_per_log_max = args.pending_per_log_max;
    config.cache_bytes = args.cache_mib * 1024 * 1024;
    config.disk_free_min_bytes = args.disk_free_min_mib.saturating_mul(1024 * 1024);
    config.write_buffer_bytes = write_buffer_bytes;
    config.engine_threads = usize::from(args.engine_threads);
    let observer: Arc<dyn StoreObserver> = Arc::new(MetricsObserver(metrics.clone()));
    let store = tokio::task::spawn_blocking(move || Store::open(config, &mut rand::rngs::OsRng, observer))
        .await?
        .with_context(|| format!("cannot open the store in {}", args.data_dir.display()))?;
    telemetry.observe_consumers(store.consumer_lags());
    let recovered: u64 = store.logs().iter().map(|l| l.seq).sum();
    tracing::info!(
        epoch = %hex::encode(store.epoch()),
        logs = store.log_count(),
        entries = recovered,
        open_ms = started.elapsed().as_millis() as u64,
        "store open"
    );

    let s3 = args.s3.options();
    let follow = match &args.restore_from {
        Some(url) => Some(edge_restore(&store, url, &s3, &args.data_dir).await?),
        None => None,
    };
    let (shutdown_tx, shutdown_rx) = watch::channel(false);
    if let Some(dest) = follow
        && args.follow_backups_ms > 0
    {
        spawn_backup_follower(
            store.clone(),
            dest,
            Duration::from_millis(args.follow_backups_ms),
            args.data_dir.join("tmp"),
            shutdown_rx.clone(),
        );
    }
    let replication = ReplicationConfig {
        static_peers: args.peers.iter().map(|p| p.trim().to_owned()).filter(|p| !p.is_empty()).collect(),
        upstreams: args.upstreams.iter().map(|p| p.trim().to_owned()).filter(|p| !p.is_empty()).collect(),
        discover_dns: args.discover_dns.clone(),
        discover_interval: Duration::from_millis(args.discover_interval_ms.max(100)),
        anti_entropy: Duration::from_millis(args.anti_entropy_ms.max(50)),
        peer_pending_max: args.peer_pending_max,
        logs_max: args.logs_max,
    };
    let node_public = node_key.public();
    let holds = Arc::new(Holds::default());
    let listeners = Arc::new(Listeners::default());
    let membership = Membership::start(
        EngineCtx {
            store: store.clone(),
            node_id: node_key.public(),
            node_key: node_key.clone(),
            peer_client: PeerClientConfig::from_args(&args.security)?,
            table: PeerTable::default(),
            metrics: metrics.clone(),
            config: replication,
            holds: holds.clone(),
            listeners: listeners.clone(),
        },
        shutdown_rx.clone(),
    );
    let ctx = Ctx {
        store: store.clone(),
        metrics: metrics.clone(),
        node_key,
        started,
        subscriptions: Arc::new(Semaphore::new(args.subscriptions_max)),
        peer_streams: Arc::new(Semaphore::new(args.peer_streams_max)),
        imports: Arc::new(Semaphore::new(args.imports_max)),
        import_staging: Arc::new(crate::services::StagingQuota::new(args.import_staging_bytes_max)),
        import_bytes_max: args.import_bytes_max,
        shutdown: shutdown_rx,
        holds,
        listeners,
        membership,
        state: Arc::default(),
        data_dir: args.data_dir.clone(),
        logs_max: args.logs_max,
        logs_per_principal: args.logs_per_principal,
        consumers_per_log: args.consumers_per_log_max,
        backups: Arc::new(backups),
        backup_clock: Arc::default(),
        backup_jobs: Arc::default(),
        proofs: Arc::new(ProofVerifier::new(node_public)),
    };
    let reload_every = Duration::from_millis(args.security.security_reload_ms.max(100));
    let authenticator = Authenticator::new(
        args.security.auth_required(),
        args.security.auth_file.clone(),
        metrics.clone(),
        Duration::from_millis(args.security.call_timeout_ms.max(1)),
    )
    .context("cannot load the auth file")?;
    crate::checkpointer::spawn(
        store.clone(),
        args.checkpoint_every_ops,
        args.checkpoint_every_ms,
        args.checkpoint_defer_mib.saturating_mul(1024 * 1024),
        metrics.clone(),
        ctx.shutdown.clone(),
    );

    // The reporter starts the overall service ("") as SERVING; it turns NOT_SERVING
    // together with the named ones when the replica stops (see `set_not_serving`).
    let (health, health_service) = tonic_health::server::health_reporter();
    health.set_serving::<pb::logs_server::LogsServer<LogsService>>().await;
    health.set_serving::<pb::data_server::DataServer<DataService>>().await;
    health.set_serving::<pb::admin_server::AdminServer<AdminService>>().await;
    health.set_serving::<pb::sync_server::SyncServer<SyncService>>().await;
    // Readiness starts NOT_SERVING and follows the replica's state from here on.
    health.set_service_status(crate::readiness::READY_SERVICE, tonic_health::ServingStatus::NotServing).await;
    crate::readiness::spawn(ctx.clone(), args.ready_lag_max, health.clone(), ctx.shutdown.clone());
    // Both reflection versions: grpc.reflection.v1 for current grpcurl and grpc-java,
    // v1alpha for Python's grpcio-reflection, older grpcurl and Postman, which only
    // speak that one.
    let reflection = || {
        tonic_reflection::server::Builder::configure()
            .register_encoded_file_descriptor_set(plait_proto::FILE_DESCRIPTOR_SET)
            .register_encoded_file_descriptor_set(tonic_health::pb::FILE_DESCRIPTOR_SET)
    };
    let reflection_v1 = reflection().build_v1().context("cannot build the reflection service (v1)")?;
    let reflection_v1alpha =
        reflection().build_v1alpha().context("cannot build the reflection service (v1alpha)")?;

    let bytes_max = args.message_bytes_max;
    let logs = pb::logs_server::LogsServer::new(LogsService { ctx: ctx.clone() })
        .max_decoding_message_size(bytes_max)
        .max_encoding_message_size(bytes_max);
    let data = pb::data_server::DataServer::new(DataService { ctx: ctx.clone() })
        .max_decoding_message_size(bytes_max)
        .max_encoding_message_size(bytes_max);
    let admin = pb::admin_server::AdminServer::new(AdminService { ctx: ctx.clone() })
        .max_decoding_message_size(bytes_max)
        .max_encoding_message_size(bytes_max);
    let sync = pb::sync_server::SyncServer::new(SyncService { ctx: ctx.clone() })
        .max_decoding_message_size(bytes_max)
        .max_encoding_message_size(bytes_max);

    let security = &args.security;
    let tls = match (&security.tls_cert, &security.tls_key) {
        (Some(cert), Some(key)) => {
            let tls = ReloadingTls::load(TlsFiles {
                cert: cert.clone(),
                key: key.clone(),
                client_ca: security.tls_client_ca.clone(),
            })
            .context("cannot set up TLS")?;
            tls.clone().spawn_reloader(reload_every, ctx.shutdown.clone());
            Some(tls)
        }
        _ => None,
    };
    authenticator.clone().spawn_reloader(reload_every, ctx.shutdown.clone());

    let listener = tokio::net::TcpListener::bind(args.listen)
        .await
        .with_context(|| format!("cannot listen on {} for gRPC", args.listen))?;
    let grpc_addr = listener.local_addr()?;
    let admin_listener = match args.admin_listen {
        Some(addr) => Some(
            tokio::net::TcpListener::bind(addr)
                .await
                .with_context(|| format!("cannot listen on {addr} for the admin API (--admin-listen)"))?,
        ),
        None => None,
    };
    let admin_addr = admin_listener.as_ref().map(tokio::net::TcpListener::local_addr).transpose()?;
    let metrics_addr = match args.metrics_listen {
        Some(addr) => {
            let listener = telemetry::bind_metrics(addr).await?;
            let local = listener.local_addr()?;
            let mut stop = ctx.shutdown.clone();
            let state = ctx.state.clone();
            let not_ready = move || state.readiness.not_ready();
            tokio::spawn(listener.serve(telemetry.prometheus_source(), not_ready, async move {
                let _ = stop.wait_for(|s| *s).await;
            }));
            Some(local)
        }
        None => None,
    };
    // One line on stdout that scripts and tests can wait for.
    println!(
        "plaitd ready grpc={grpc_addr} admin={} metrics={} data_dir={}",
        admin_addr.map_or_else(|| "off".to_owned(), |a| a.to_string()),
        metrics_addr.map_or_else(|| "off".to_owned(), |a| a.to_string()),
        args.data_dir.display()
    );
    tracing::info!(
        %grpc_addr,
        ?admin_addr,
        ?metrics_addr,
        tls = tls.is_some(),
        auth = authenticator.required(),
        "serving"
    );

    let limits = ListenerLimits {
        connections_max: security.connections_max.max(1),
        handshake_timeout: Duration::from_millis(security.handshake_timeout_ms.max(1)),
        idle_timeout: Duration::from_millis(security.idle_timeout_ms.max(1)),
    };
    let admin_incoming = admin_listener
        .map(|l| net::incoming(l, tls.clone(), limits.clone(), metrics.clone(), ctx.shutdown.clone()));
    let incoming = net::incoming(listener, tls, limits, metrics.clone(), ctx.shutdown.clone());
    let keepalive = Duration::from_millis(security.keepalive_ms.max(1000));
    let (stop_tx, stop_rx) = tokio::sync::oneshot::channel();
    let poisoned = store.poisoned();
    let shutdown_signal = {
        let health = health.clone();
        async move {
            let stop = stop_signal(poisoned).await;
            match &stop {
                Stop::Signal(name) => tracing::info!(signal = name, "stopping: draining in-flight calls"),
                Stop::Poisoned => tracing::error!("the store is poisoned; refusing all calls and exiting"),
            }
            // Stop the readiness task first, so it cannot turn readiness back on.
            let _ = shutdown_tx.send(true);
            set_not_serving(&health).await;
            let _ = stop_tx.send(stop);
        }
    };
    // Every listener serves every service; the API address leaves the cluster-admin
    // methods to the admin address when there is one.
    let router = |admin_elsewhere: Option<std::net::SocketAddr>| {
        Server::builder()
            .max_concurrent_streams(Some(args.streams_per_connection_max))
            .http2_keepalive_interval(Some(keepalive))
            .http2_keepalive_timeout(Some(keepalive))
            .layer(RpcMetricsLayer::new(metrics.clone()))
            .layer(AuthLayer { auth: authenticator.clone(), admin_elsewhere })
            .add_service(health_service.clone())
            .add_service(reflection_v1.clone())
            .add_service(reflection_v1alpha.clone())
            .add_service(logs.clone())
            .add_service(data.clone())
            .add_service(admin.clone())
            .add_service(sync.clone())
    };
    let admin_server = admin_incoming.map(|incoming| {
        let mut stop = ctx.shutdown.clone();
        tokio::spawn(router(None).serve_with_incoming_shutdown(incoming, async move {
            let _ = stop.wait_for(|s| *s).await;
        }))
    });
    let server = router(admin_addr).serve_with_incoming_shutdown(incoming, shutdown_signal);
    let grace = Duration::from_millis(args.shutdown_grace_ms);
    let mut server = std::pin::pin!(server);
    let mut stop_rx = std::pin::pin!(stop_rx);
    let stop = tokio::select! {
        result = &mut server => {
            result.context("the gRPC server failed")?;
            stop_rx.await.unwrap_or(Stop::Signal("server exit"))
        }
        stop = &mut stop_rx => {
            let stop = stop.unwrap_or(Stop::Signal("server exit"));
            // The server is draining; give in-flight calls the grace period.
            if tokio::time::timeout(grace, &mut server).await.is_err() {
                tracing::warn!(grace_ms = args.shutdown_grace_ms, "calls still running after the grace period; closing anyway");
            }
            stop
        }
    };
    if let Some(admin_server) = admin_server {
        // It began draining with the API address; give it what is left of the grace.
        match tokio::time::timeout(grace, admin_server).await {
            Ok(Ok(Ok(()))) => {}
            Ok(Ok(Err(e))) => tracing::warn!(error = %e, "the admin gRPC server failed"),
            Ok(Err(e)) => tracing::warn!(error = %e, "the admin gRPC server task failed"),
            Err(_) => tracing::warn!("admin calls still running after the grace period; closing anyway"),
        }
    }
    store.close().await.context("cannot close the store")?;
    telemetry.shutdown().await;
    match stop {
        Stop::Signal(_) => {
            tracing::info!("stopped cleanly");
            Ok(())
        }
        Stop::Poisoned => {
            anyhow::bail!("stopped because a write to disk failed; restart to recover from the journal")
        }
    }
}

/// Refuses to expose an unauthenticated replica beyond this machine unless told to.
fn check_exposure(args: &ServeArgs) -> anyhow::Result<()> {
    let security = &args.security;
    let tls = security.tls_cert.is_some();
    let auth = security.auth_required();
    let loopback = args.listen.ip().is_loopback() && args.admin_listen.is_none_or(|a| a.ip().is_loopback());
    if loopback || (tls && auth) {
        return Ok(());
    }
    if security.insecure {
        tracing::warn!(
            listen = %args.listen,
            tls,
            auth,
            "serving a non-loopback address without TLS and authentication (--insecure): anyone who \
             can reach it can read, write, drop logs and change membership"
        );
        return Ok(());
    }
    let missing = match (tls, auth) {
        (false, false) => "TLS and authentication",
        (false, true) => "TLS",
        _ => "authentication",
    };
    anyhow::bail!(
        "refusing to serve {} without {missing}: anyone who could reach it could read, write, drop \
         logs and change membership. Give --tls-cert/--tls-key and --tls-client-ca (client \
         certificates) or --auth-file (tokens); docs/security.md shows how to make them. To \
         serve it open anyway, pass --insecure.",
        match args.admin_listen {
            Some(admin) if args.listen.ip().is_loopback() => admin,
            _ => args.listen,
        }
    )
}

/// Turns every service NOT_SERVING, the overall one ("") included: probes (Kubernetes,
/// load balancers) ask for "", so it must follow the replica's real state.
async fn set_not_serving(health: &tonic_health::server::HealthReporter) {
    health.set_not_serving::<pb::logs_server::LogsServer<LogsService>>().await;
    health.set_not_serving::<pb::data_server::DataServer<DataService>>().await;
    health.set_not_serving::<pb::admin_server::AdminServer<AdminService>>().await;
    health.set_not_serving::<pb::sync_server::SyncServer<SyncService>>().await;
    health.set_service_status(crate::readiness::READY_SERVICE, tonic_health::ServingStatus::NotServing).await;
    health.set_service_status("", tonic_health::ServingStatus::NotServing).await;
}

/// Re-hashes and re-verifies every entry of a stopped replica's data directory and
/// rebuilds every view to compare. Returns whether it is clean.
/// Opens a stopped replica's store for an offline tool. The tools write no entries
/// (opening may finish a migration or store a missing digest), so any writer key will do.
async fn open_offline(data_dir: &std::path::Path) -> anyhow::Result<Store> {
    let key = plait_core::WriterKey::generate(&mut rand::rngs::OsRng);
    let config = StoreConfig::new(data_dir, key);
    tokio::task::spawn_blocking(move || {
        Store::open(config, &mut rand::rngs::OsRng, Arc::new(plait_store::NoopObserver))
    })
    .await?
    .with_context(|| format!("cannot open {}", data_dir.display()))
}

/// `plaitd lose-entry`: loses one entry of a stopped replica's log from its entry store
/// (`Store::lose_entry_for_tests`), so tests can watch the loss be detected and repaired.
pub async fn lose_entry(args: crate::config::LoseEntryArgs) -> anyhow::Result<()> {
    let store = open_offline(&args.data_dir).await?;
    let log = store.resolve(&args.log)?.log_id;
    let lost = store.clone();
    let hash = tokio::task::spawn_blocking(move || lost.lose_entry_for_tests(&log, args.seq)).await??;
    store.close().await?;
    println!("{hash}");
    Ok(())
}

pub async fn check(args: CheckArgs) -> anyhow::Result<bool> {
    if !args.data_dir.join("meta").exists() && !args.data_dir.exists() {
        anyhow::bail!("{} does not exist", args.data_dir.display());
    }
    let store = open_offline(&args.data_dir).await?;
    let checked = store.clone();
    let report = tokio::task::spawn_blocking(move || checked.check_integrity()).await??;
    store.close().await?;
    if args.json {
        println!(
            "{{\"logs\":{},\"entries\":{},\"ops\":{},\"pending\":{},\"problems\":{:?}}}",
            report.logs, report.entries, report.ops, report.pending, report.problems
        );
    } else {
        println!(
            "checked {} logs, {} entries, {} ops ({} pending): {}",
            report.logs,
            report.entries,
            report.ops,
            report.pending,
            if report.is_clean() { "clean" } else { "PROBLEMS FOUND" }
        );
        for problem in &report.problems {
            println!("  - {problem}");
        }
    }
    Ok(report.is_clean())
}

/// Builds a fresh data directory from a backup destination: each log's newest full
/// backup and the deltas after it. The result is a new replica incarnation (a new epoch).
pub async fn restore(args: RestoreArgs) -> anyhow::Result<()> {
    if args.data_dir.exists() && std::fs::read_dir(&args.data_dir)?.next().is_some() {
        if args.skip_if_initialized {
            println!("{} already holds data; nothing to restore", args.data_dir.display());
            return Ok(());
        }
        anyhow::bail!(
            "{} is not empty: a restore builds a fresh data directory; choose an empty or new one",
            args.data_dir.display()
        );
    }
    let dest = Destination::parse(&args.from, &args.s3.options())?;
    // Fail on an unusable destination before creating anything.
    if dest.catalog().await?.is_none() {
        anyhow::bail!(
            "no catalog at {}: it is not a Plait backup destination, or the prefix is wrong",
            dest.url
        );
    }
    // Build beside the target and rename at the end: a restore killed midway leaves only
    // the staging directory, which the next restore clears and starts over in.
    let staging = args.data_dir.with_extension("restoring");
    if staging.exists() {
        eprintln!("removing {} left by an interrupted restore", staging.display());
        std::fs::remove_dir_all(&staging)?;
    }
    std::fs::create_dir_all(&staging)?;
    let writer_path = match &args.writer_key_file {
        Some(path) => path.clone(),
        None => staging.join("writer.key"),
    };
    let (writer_key, _) = load_or_create_key(&writer_path, &mut rand::rngs::OsRng)?;
    let mut config = StoreConfig::new(&staging, writer_key);
    config.disk_free_min_bytes = args.disk_free_min_mib.saturating_mul(1024 * 1024);
    let store = tokio::task::spawn_blocking(move || {
        Store::open(config, &mut rand::rngs::OsRng, Arc::new(plait_store::NoopObserver))
    })
    .await??;
    let started = Instant::now();
    let result = crate::backup::restore(&store, &dest, &args.logs, &staging.join("tmp"), |entry, report| {
        eprintln!(
            "restored {} {} ({} bytes): {} entries read, {} stored, at source seq {} [{:.1}s]",
            entry.name,
            entry.kind,
            entry.bytes,
            report.entries_read,
            report.entries_stored,
            report.checkpoint.seq,
            started.elapsed().as_secs_f64()
        );
    })
    .await;
    store.close().await?;
    let reports = result?;
    let _ = std::fs::remove_dir_all(staging.join("tmp"));
    if args.data_dir.exists() {
        std::fs::remove_dir(&args.data_dir)?;
    }
    std::fs::rename(&staging, &args.data_dir)
        .with_context(|| format!("cannot move the restored data into {}", args.data_dir.display()))?;
    println!(
        "restored {} snapshot(s) from {} into {} (epoch {})",
        reports.len(),
        dest.url,
        args.data_dir.display(),
        hex::encode(store.epoch())
    );
    Ok(())
}

/// Edge mode, at every start: applies what the backup destination has beyond this
/// node's restore watermarks. On first start that is a full restore; after a restore
/// that was killed midway it is the rest of it; otherwise usually nothing.
async fn edge_restore(
    store: &Store,
    url: &str,
    s3: &S3Options,
    data_dir: &std::path::Path,
) -> anyhow::Result<Destination> {
    let dest = Destination::parse(url, s3)?;
    let reports = crate::backup::follow(store, &dest, &data_dir.join("tmp")).await?;
    tracing::info!(snapshots = reports, from = %dest.url, "edge: restored from backups");
    Ok(dest)
}

/// Edge mode: applies new deltas from the backup destination as they appear.
fn spawn_backup_follower(
    store: Store,
    dest: Destination,
    every: Duration,
    work_dir: std::path::PathBuf,
    mut shutdown: watch::Receiver<bool>,
) {
    tokio::spawn(async move {
        loop {
            tokio::select! {
                _ = tokio::time::sleep(every) => {}
                _ = async { shutdown.wait_for(|s| *s).await.is_ok() } => return,
            }
            match crate::backup::follow(&store, &dest, &work_dir).await {
                Ok(0) => {}
                Ok(n) => tracing::info!(snapshots = n, "edge: applied new backups"),
                Err(e) => {
                    tracing::warn!(error = %format!("{e:#}"), "edge: following backups failed; retrying")
                }
            }
        }
    });
}
