//! Logs, traces and metrics for `plaitd`: one place that installs the tracing subscriber,
//! owns the OpenTelemetry providers, defines every metric the replica records, wraps the
//! gRPC server to time each call, and serves the Prometheus `/metrics` endpoint.
//!
//! There is one set of instruments. They are OpenTelemetry instruments on one
//! `SdkMeterProvider`, which has two readers: the Prometheus exporter (always on, read on
//! each scrape) and, when `OTEL_EXPORTER_OTLP_ENDPOINT` is set, a periodic OTLP/gRPC
//! exporter. So a counter never disagrees between the two.

use std::future::Future;
use std::net::SocketAddr;
use std::pin::Pin;
use std::sync::Arc;
use std::sync::atomic::{AtomicBool, Ordering};
use std::task::{Context as TaskContext, Poll, ready};
use std::time::{Duration, Instant};

use anyhow::Context as _;
use opentelemetry::KeyValue;
use opentelemetry::metrics::{Counter, Gauge, Histogram, Meter, MeterProvider as _};
use opentelemetry::trace::TracerProvider as _;
use opentelemetry_sdk::Resource;
use opentelemetry_sdk::metrics::SdkMeterProvider;
use opentelemetry_sdk::trace::SdkTracerProvider;
use tonic::Code;
use tracing::Instrument as _;
use tracing::instrument::Instrumented;
use tracing_subscriber::filter::{EnvFilter, LevelFilter, Targets};
use tracing_subscriber::layer::SubscriberExt as _;
use tracing_subscriber::util::SubscriberInitExt as _;
use tracing_subscriber::{Layer as _, fmt};

/// The environment variable whose presence turns on OTLP export (the standard OTel name;
/// the exporters also read it, and the per-signal variants, for the endpoint itself).
const OTLP_ENDPOINT_ENV: &str = "OTEL_EXPORTER_OTLP_ENDPOINT";

/// The instrumentation scope of every instrument and of the tracer.
const SCOPE_NAME: &str = "plait";

/// Entries per group-commit batch: powers of two, because batch sizes grow geometrically
/// under load, up to well past any batch limit the store is likely to set.
const BATCH_BUCKETS_ENTRIES: [f64; 15] =
    [1.0, 2.0, 4.0, 8.0, 16.0, 32.0, 64.0, 128.0, 256.0, 512.0, 1024.0, 2048.0, 4096.0, 8192.0, 16384.0];

/// fsync latency: 50 µs (NVMe with a write cache) to 1 s (a disk in trouble), about
/// 2.5 buckets per decade so a shift in the median is visible.
const FSYNC_BUCKETS_SECONDS: [f64; 14] =
    [0.000_05, 0.000_1, 0.000_25, 0.000_5, 0.001, 0.002_5, 0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1.0];

/// Per-RPC latency: 100 µs (a KV get served from cache) to 10 s (a large batch behind a
/// slow fsync); longer calls, such as sync streams, land in `+Inf`.
const RPC_BUCKETS_SECONDS: [f64; 16] = [
    0.000_1, 0.000_25, 0.000_5, 0.001, 0.002_5, 0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1.0, 2.5, 5.0, 10.0,
];

/// The `method` label used for calls answered `UNIMPLEMENTED`: the path of such a call is
/// whatever the client sent, so using it as a label would let any client grow the number
/// of metric series without bound.
const UNKNOWN_METHOD: &str = "unknown";

/// Set by the first call to [`init`]; the global subscriber can only be installed once.
static INITIALIZED: AtomicBool = AtomicBool::new(false);

/// What [`init`] needs to know; `plaitd` fills it from its flags.
#[derive(Clone, Debug)]
pub struct TelemetryConfig {
    /// Which logs and spans to keep, in `RUST_LOG` syntax: `info`, or
    /// `info,plait_replica=debug`.
    pub log_filter: String,
    /// One JSON object per line instead of human-readable lines, for log collectors.
    pub log_json: bool,
    /// The OTel `service.name` resource attribute; also in `target_info` on `/metrics`.
    pub service_name: String,
    /// Where the caller should serve `/metrics` (see [`bind_metrics`]); `None` for no
    /// HTTP endpoint. [`init`] itself binds nothing, so that binding happens inside the
    /// runtime, next to the shutdown signal, and a port conflict fails startup there.
    pub metrics_listen: Option<SocketAddr>,
}

/// Owns the telemetry pipelines. Keep it alive for the life of the process and call
/// [`Telemetry::shutdown`] on the way out, or the last spans and metrics are lost.
pub struct Telemetry {
    metrics: Metrics,
    /// Read on every scrape; the OTel Prometheus exporter registered its collector here.
    registry: prometheus::Registry,
    meter_provider: SdkMeterProvider,
    /// `Some` only when OTLP export is on.
    tracer_provider: Option<SdkTracerProvider>,
}

/// Installs the global tracing subscriber (logs to stderr, plus OTLP traces when
/// `OTEL_EXPORTER_OTLP_ENDPOINT` is set) and builds the metrics pipeline (Prometheus
/// always, plus OTLP metrics when that variable is set).
///
/// Callable once per process: a second call is an error, as is a subscriber installed by
/// someone else. With OTLP on it must be called inside a multi-threaded Tokio runtime,
/// because the tonic exporters run their connections on it.
pub fn init(config: &TelemetryConfig) -> anyhow::Result<Telemetry> {
    // Parse the filter before touching any global state, so a typo in `RUST_LOG` is
    // reported plainly and changes nothing.
    let log_filter = EnvFilter::builder()
        .parse(&config.log_filter)
        .with_context(|| format!("invalid log filter {:?}", config.log_filter))?;
    if INITIALIZED.swap(true, Ordering::SeqCst) {
        anyhow::bail!("telemetry is already initialized; init may be called once per process");
    }

    let otlp = std::env::var_os(OTLP_ENDPOINT_ENV).is_some_and(|endpoint| !endpoint.is_empty());
    if otlp {
        match tokio::runtime::Handle::try_current() {
            Ok(handle) if handle.runtime_flavor() == tokio::runtime::RuntimeFlavor::MultiThread => {}
            // The SDK exports from its own threads and blocks on the tonic client, which
            // needs a runtime worker free to drive the connection.
            _ => anyhow::bail!(
                "{OTLP_ENDPOINT_ENV} is set, so telemetry must be initialized inside a \
                 multi-threaded Tokio runtime"
            ),
        }
    }

    let resource = Resource::builder().with_service_name(config.service_name.clone()).build();

    let otlp_metrics = if otlp {
        let exporter = opentelemetry_otlp::MetricExporter::builder()
            .with_tonic()
            .build()
            .context("building the OTLP metrics exporter")?;
        Some(exporter)
    } else {
        None
    };
    let mut telemetry = Telemetry::build(resource.clone(), otlp_metrics)?;

    let tracer_provider = if otlp {
        let exporter = opentelemetry_otlp::SpanExporter::builder()
            .with_tonic()
            .build()
            .context("building the OTLP span exporter")?;
        // The batch processor keeps a bounded queue and drops spans when it is full, so a
        // slow collector costs traces, never memory or write latency. The sampler comes
        // from `OTEL_TRACES_SAMPLER`, parent-based always-on by default.
        Some(SdkTracerProvider::builder().with_resource(resource).with_batch_exporter(exporter).build())
    } else {
        None
    };
    let otel_layer = tracer_provider.as_ref().map(|provider| {
        tracing_opentelemetry::layer()
            .with_tracer(provider.tracer(SCOPE_NAME))
            .with_filter(exporter_feedback_filter())
    });

    let fmt_layer = if config.log_json {
        fmt::layer().json().with_writer(std::io::stderr).boxed()
    } else {
        fmt::layer().with_writer(std::io::stderr).boxed()
    };
    tracing_subscriber::registry()
        .with(log_filter)
        .with(fmt_layer)
        .with(otel_layer)
        .try_init()
        .context("installing the global tracing subscriber")?;

    telemetry.tracer_provider = tracer_provider;
    tracing::info!(
        service = %config.service_name,
        otlp,
        "telemetry initialized"
    );
    Ok(telemetry)
}

/// Keeps the OTLP exporter's own machinery out of the exported traces: its gRPC client
/// emits spans and events, which would otherwise be exported, which makes more of them.
fn exporter_feedback_filter() -> Targets {
    Targets::new()
        .with_default(LevelFilter::TRACE)
        .with_target("opentelemetry", LevelFilter::OFF)
        .with_target("tonic", LevelFilter::OFF)
        .with_target("tower", LevelFilter::OFF)
        .with_target("h2", LevelFilter::OFF)
        .with_target("hyper", LevelFilter::OFF)
}

impl Telemetry {
    /// Metrics with Prometheus export only, and no global state: no subscriber, no OTLP,
    /// no global providers, so any number may coexist. For tests, which can then read
    /// what they recorded with [`Telemetry::prometheus_text`].
    pub fn detached(service_name: &str) -> anyhow::Result<Telemetry> {
        let resource = Resource::builder().with_service_name(service_name.to_owned()).build();
        Telemetry::build(resource, None)
    }

    fn build(
        resource: Resource,
        otlp_metrics: Option<opentelemetry_otlp::MetricExporter>,
    ) -> anyhow::Result<Telemetry> {
        // A registry of our own rather than prometheus's default one, so that two
        // `Telemetry` values in one test process never see each other's metrics.
        let registry = prometheus::Registry::new();
        let prometheus_exporter = opentelemetry_prometheus::exporter()
            .with_registry(registry.clone())
            // There is one scope; an `otel_scope_name` label on every series adds nothing.
            .scope_info_enabled(false)
            .build()
            .context("registering the Prometheus exporter")?;
        let mut builder =
            SdkMeterProvider::builder().with_resource(resource).with_reader(prometheus_exporter);
        if let Some(exporter) = otlp_metrics {
            builder = builder.with_periodic_exporter(exporter);
        }
        let meter_provider = builder.build();
        let metrics = Metrics::new(&meter_provider.meter(SCOPE_NAME));
        Ok(Telemetry { metrics, registry, meter_provider, tracer_provider: None })
    }

    /// The handle every component records through; cloning it is one reference count.
    pub fn metrics(&self) -> Metrics {
        self.metrics.clone()
    }

    /// Reports `plait_consumer_lag{log,consumer}` on every collection: entries each
    /// durable consumer is behind its log. One series per consumer, bounded by
    /// `--consumers-per-log-max` per hosted log; a deleted consumer's series goes.
    pub fn observe_consumers(&self, lags: plait_store::ConsumerLags) {
        let _gauge = self
            .meter_provider
            .meter(SCOPE_NAME)
            .u64_observable_gauge("plait.consumer.lag")
            .with_unit("{entry}")
            .with_description(
                "Entries stored past each durable consumer's committed seq, by log and consumer.",
            )
            .with_callback(move |observer| {
                for lag in lags.read() {
                    observer.observe(
                        lag.lag,
                        &[KeyValue::new("log", lag.log), KeyValue::new("consumer", lag.consumer.to_string())],
                    );
                }
            })
            .build();
    }

    /// The current values in the Prometheus text exposition format.
    pub fn prometheus_text(&self) -> String {
        encode_prometheus(&self.registry)
    }

    /// A `'static` source of [`Telemetry::prometheus_text`] for [`MetricsListener::serve`],
    /// which runs in its own task while `self` stays with the caller for shutdown.
    pub fn prometheus_source(&self) -> impl Fn() -> String + Send + Sync + 'static {
        let registry = self.registry.clone();
        move || encode_prometheus(&registry)
    }

    /// Flushes and stops the exporters. The SDK's shutdown blocks until the last export
    /// finishes, and that export needs a runtime worker to drive its connection, so it
    /// runs on the blocking pool rather than on the worker awaiting this.
    pub async fn shutdown(self) {
        let Telemetry { meter_provider, tracer_provider, .. } = self;
        let outcome = tokio::task::spawn_blocking(move || {
            let traces = tracer_provider.map(|provider| provider.shutdown());
            let metrics = meter_provider.shutdown();
            (traces, metrics)
        })
        .await;
        match outcome {
            Ok((traces, metrics)) => {
                if let Some(Err(error)) = traces {
                    tracing::warn!(%error, "flushing traces at shutdown failed");
                }
                if let Err(error) = metrics {
                    tracing::warn!(%error, "flushing metrics at shutdown failed");
                }
            }
            Err(error) => tracing::warn!(%error, "telemetry shutdown task failed"),
        }
    }
}

fn encode_prometheus(registry: &prometheus::Registry) -> String {
    // Encoding to a String fails only on invalid UTF-8, which our names and labels
    // cannot contain; a scrape still gets an answer that says what went wrong.
    prometheus::TextEncoder::new()
        .encode_to_string(&registry.gather())
        .unwrap_or_else(|error| format!("# encoding metrics failed: {error}\n"))
}

/// Every metric the replica records. The names below are as Prometheus shows them: the
/// exporter turns `.` into `_`, appends the unit (`s` becomes `_seconds`), and appends
/// `_total` to counters; OTLP receives the dotted names (`plait.ops.written`).
///
/// Attribute values are `&'static str` wherever the caller chooses them, so the number
/// of series is fixed by the code, not by the data.
#[derive(Clone)]
pub struct Metrics {
    /// One allocation shared by every clone: the instruments are created once.
    instruments: Arc<Instruments>,
}

struct Instruments {
    /// `plait_ops_written_total{log_type}`: ops acknowledged to clients as durable.
    ops_written: Counter<u64>,
    /// `plait_entries_ingested_total{source}`: entries stored, by where they came from:
    /// `local` (written here), `submit` (signed elsewhere, submitted), `sync` (replicated).
    entries_ingested: Counter<u64>,
    /// `plait_batch_entries`: entries per durable group-commit batch.
    batch_entries: Histogram<u64>,
    /// `plait_batch_ops`: ops per durable group-commit batch; with `plait_batch_entries`
    /// it shows how much batching clients do inside entries.
    batch_ops: Histogram<u64>,
    /// `plait_fsync_seconds`: latency of the fsync that makes a batch durable.
    fsync_seconds: Histogram<f64>,
    /// `plait_pending_entries`: entries held waiting for missing parents (the partial
    /// DAG), set by the store owner; near its limit, parents are not arriving.
    pending_entries: Gauge<u64>,
    /// `plait_write_stall_seconds_total`: time the writer waited for the storage
    /// engine's flushes, its memtables over `--write-buffer-mib`; growing, the disk is
    /// behind the writes.
    write_stall_seconds: Counter<f64>,
    /// `plait_checkpoints_deferred_total`: automatic checkpoints that gave up because
    /// more than `--checkpoint-defer-mib` arrived while they scanned; they are tried
    /// again later. Growing without checkpoints being taken, writes never pause long
    /// enough for a scan of the view.
    checkpoints_deferred: Counter<u64>,
    /// `plait_rpc_seconds{method,code}`: gRPC call latency, request to response headers.
    rpc_seconds: Histogram<f64>,
    /// `plait_rpc_errors_total{method,code}`: gRPC calls answered with a code other
    /// than `OK`.
    rpc_errors: Counter<u64>,
    /// `plait_replication_errors_total`: replication sessions that failed and backed off.
    replication_errors: Counter<u64>,
    /// `plait_peers_cut_off_total`: peers or pushes cut off for invalid entries or for
    /// flooding pending space.
    peers_cut_off: Counter<u64>,
    /// `plait_digest_mismatches_total`: comparisons with a peer that found the same heads
    /// but a different digest of a log's entries (an entry lost or corrupted on one side).
    digest_mismatches: Counter<u64>,
    /// `plait_pulled_duplicates_total`: entries pulled from peers that this replica
    /// already held (replication doing work twice; near zero when peers leave out what
    /// they pulled from here).
    pulled_duplicates: Counter<u64>,
    /// `plait_pull_entries_omitted_total`: entries left out of Pull pages because the
    /// caller was where they came from.
    pull_entries_omitted: Counter<u64>,
    /// `plait_notice_entries_stored_total`: entries that came with a peer's Watch notice
    /// and were stored without a pull.
    notice_entries: Counter<u64>,
    /// `plait_connections_refused_total{reason}`: connections closed by the listener
    /// (over the cap, failed or slow handshake).
    connections_refused: Counter<u64>,
    /// `plait_auth_denied_total{method,reason}`: calls refused by authentication or
    /// authorization.
    auth_denied: Counter<u64>,
}

impl Metrics {
    fn new(meter: &Meter) -> Metrics {
        let instruments = Instruments {
            ops_written: meter
                .u64_counter("plait.ops.written")
                .with_unit("{op}")
                .with_description("Ops acknowledged to clients as durable.")
                .build(),
            entries_ingested: meter
                .u64_counter("plait.entries.ingested")
                .with_unit("{entry}")
                .with_description("Entries stored, by source: local, submit or sync.")
                .build(),
            batch_entries: meter
                .u64_histogram("plait.batch.entries")
                .with_unit("{entry}")
                .with_description("Entries per durable group-commit batch.")
                .with_boundaries(BATCH_BUCKETS_ENTRIES.to_vec())
                .build(),
            batch_ops: meter
                .u64_histogram("plait.batch.ops")
                .with_unit("{op}")
                .with_description("Ops per durable group-commit batch.")
                .with_boundaries(BATCH_BUCKETS_ENTRIES.to_vec())
                .build(),
            fsync_seconds: meter
                .f64_histogram("plait.fsync")
                .with_unit("s")
                .with_description("Latency of the fsync that makes a batch durable.")
                .with_boundaries(FSYNC_BUCKETS_SECONDS.to_vec())
                .build(),
            pending_entries: meter
                .u64_gauge("plait.pending.entries")
                .with_unit("{entry}")
                .with_description("Entries held waiting for missing parents.")
                .build(),
            write_stall_seconds: meter
                .f64_counter("plait.write.stall")
                .with_unit("s")
                .with_description("Time the writer waited for flushes, its memtables over their bound.")
                .build(),
            rpc_seconds: meter
                .f64_histogram("plait.rpc")
                .with_unit("s")
                .with_description("gRPC call latency until response headers, by method and code.")
                .with_boundaries(RPC_BUCKETS_SECONDS.to_vec())
                .build(),
            rpc_errors: meter
                .u64_counter("plait.rpc.errors")
                .with_unit("{call}")
                .with_description("gRPC calls answered with a code other than OK.")
                .build(),
            replication_errors: meter
                .u64_counter("plait.replication.errors")
                .with_unit("{error}")
                .with_description("Replication sessions that failed and backed off.")
                .build(),
            peers_cut_off: meter
                .u64_counter("plait.peers.cut_off")
                .with_unit("{peer}")
                .with_description("Peers or pushes cut off for invalid entries or flooding pending space.")
                .build(),
            digest_mismatches: meter
                .u64_counter("plait.digest.mismatches")
                .with_unit("{comparison}")
                .with_description("Comparisons with a peer at the same heads that found a different digest.")
                .build(),
            pulled_duplicates: meter
                .u64_counter("plait.pulled.duplicates")
                .with_unit("{entry}")
                .with_description("Entries pulled from peers that this replica already held.")
                .build(),
            pull_entries_omitted: meter
                .u64_counter("plait.pull.entries_omitted")
                .with_unit("{entry}")
                .with_description(
                    "Entries left out of Pull pages because the caller was where they came from.",
                )
                .build(),
            notice_entries: meter
                .u64_counter("plait.notice.entries_stored")
                .with_unit("{entry}")
                .with_description("Entries that came with a peer's Watch notice and were stored without a pull.")
                .build(),
            connections_refused: meter
                .u64_counter("plait.connections.refused")
                .with_unit("{connection}")
                .with_description(
                    "Connections closed by the listener: over the cap, failed or slow handshake.",
                )
                .build(),
            checkpoints_deferred: meter
                .u64_counter("plait.checkpoints.deferred")
                .with_unit("{checkpoint}")
                .with_description(
                    "Automatic checkpoints that gave up, too much arriving while they scanned, to be tried again.",
                )
                .build(),
            auth_denied: meter
                .u64_counter("plait.auth.denied")
                .with_unit("{call}")
                .with_description("Calls refused by authentication or authorization, by method and reason.")
                .build(),
        };
        Metrics { instruments: Arc::new(instruments) }
    }

    /// Metrics that record nothing and install nothing, for tests that need a `Metrics`
    /// but do not look at it. Use [`Telemetry::detached`] to read values back.
    pub fn noop() -> Metrics {
        Metrics::new(&opentelemetry::metrics::NoopMeterProvider::new().meter(SCOPE_NAME))
    }

    /// The listener closed a connection; `reason` is a fixed label.
    pub(crate) fn record_connection_refused(&self, reason: &'static str) {
        self.instruments.connections_refused.add(1, &[KeyValue::new("reason", reason)]);
    }

    /// A call was refused before any handler ran.
    pub(crate) fn record_auth_denied(&self, method: &str, reason: &'static str) {
        self.instruments
            .auth_denied
            .add(1, &[KeyValue::new("method", method.to_owned()), KeyValue::new("reason", reason)]);
    }

    /// A replication session failed and will retry after a backoff.
    pub fn record_replication_error(&self) {
        self.instruments.replication_errors.add(1, &[]);
    }

    /// A peer or a push was cut off for misbehaving.
    pub fn record_peer_cut_off(&self) {
        self.instruments.peers_cut_off.add(1, &[]);
    }

    /// `n` entries of a pulled page were already here.
    pub fn record_digest_mismatch(&self) {
        self.instruments.digest_mismatches.add(1, &[]);
    }

    pub fn record_pulled_duplicates(&self, n: u64) {
        if n > 0 {
            self.instruments.pulled_duplicates.add(n, &[]);
        }
    }

    /// `n` entries were left out of a Pull page: the caller is where they came from.
    pub fn record_pull_omitted(&self, n: u64) {
        if n > 0 {
            self.instruments.pull_entries_omitted.add(n, &[]);
        }
    }

    /// `n` entries came with a peer's Watch notice and were stored without a pull.
    pub fn record_notice_entries(&self, n: u64) {
        self.instruments.notice_entries.add(n, &[]);
    }

    /// One durable group commit: `entries` entries holding `ops` ops, made durable by an
    /// fsync that took `fsync`.
    pub fn record_batch(&self, entries: u64, ops: u64, fsync: Duration) {
        self.instruments.batch_entries.record(entries, &[]);
        self.instruments.batch_ops.record(ops, &[]);
        self.instruments.fsync_seconds.record(fsync.as_secs_f64(), &[]);
    }

    /// `n` ops of one log type acknowledged to a client as durable.
    pub fn record_ops_written(&self, log_type: &'static str, n: u64) {
        self.instruments.ops_written.add(n, &[KeyValue::new("log_type", log_type)]);
    }

    /// `n` entries stored that came from `source`: `"local"`, `"submit"` or `"sync"`.
    pub fn record_ingested(&self, source: &'static str, n: u64) {
        self.instruments.entries_ingested.add(n, &[KeyValue::new("source", source)]);
    }

    /// The number of entries accepted but not yet durable, as of now.
    pub fn set_pending(&self, n: u64) {
        self.instruments.pending_entries.record(n, &[]);
    }

    /// An automatic checkpoint gave up, to be tried again later.
    pub(crate) fn record_checkpoint_deferred(&self) {
        self.instruments.checkpoints_deferred.add(1, &[]);
    }

    /// The writer waited `waited` for flushes (memtables over their bound).
    pub fn record_write_stall(&self, waited: Duration) {
        self.instruments.write_stall_seconds.add(waited.as_secs_f64(), &[]);
    }

    /// One finished gRPC call. `method` becomes a label, so pass only paths the server
    /// serves (the [`RpcMetricsLayer`] takes care of that).
    pub fn record_rpc(&self, method: &str, code: Code, elapsed: Duration) {
        self.record_rpc_owned(method.to_owned(), code, elapsed);
    }

    /// [`Metrics::record_rpc`] without copying the method name again on the hot path.
    fn record_rpc_owned(&self, method: String, code: Code, elapsed: Duration) {
        let attributes = [KeyValue::new("method", method), KeyValue::new("code", code_name(code))];
        self.instruments.rpc_seconds.record(elapsed.as_secs_f64(), &attributes);
        if code != Code::Ok {
            self.instruments.rpc_errors.add(1, &attributes);
        }
    }
}

/// The canonical gRPC name of a status code, as other gRPC servers label their metrics.
fn code_name(code: Code) -> &'static str {
    match code {
        Code::Ok => "OK",
        Code::Cancelled => "CANCELLED",
        Code::Unknown => "UNKNOWN",
        Code::InvalidArgument => "INVALID_ARGUMENT",
        Code::DeadlineExceeded => "DEADLINE_EXCEEDED",
        Code::NotFound => "NOT_FOUND",
        Code::AlreadyExists => "ALREADY_EXISTS",
        Code::PermissionDenied => "PERMISSION_DENIED",
        Code::ResourceExhausted => "RESOURCE_EXHAUSTED",
        Code::FailedPrecondition => "FAILED_PRECONDITION",
        Code::Aborted => "ABORTED",
        Code::OutOfRange => "OUT_OF_RANGE",
        Code::Unimplemented => "UNIMPLEMENTED",
        Code::Internal => "INTERNAL",
        Code::Unavailable => "UNAVAILABLE",
        Code::DataLoss => "DATA_LOSS",
        Code::Unauthenticated => "UNAUTHENTICATED",
    }
}

/// A tower layer for `tonic::transport::Server::builder().layer(..)` that puts every
/// gRPC call in an `rpc` span and records its latency and status code.
#[derive(Clone)]
pub(crate) struct RpcMetricsLayer {
    metrics: Metrics,
}

impl RpcMetricsLayer {
    /// A layer recording into `metrics`; one per server, cloned by tonic per connection.
    pub(crate) fn new(metrics: Metrics) -> RpcMetricsLayer {
        RpcMetricsLayer { metrics }
    }
}

impl<S> tower::Layer<S> for RpcMetricsLayer {
    type Service = RpcMetricsService<S>;

    fn layer(&self, inner: S) -> RpcMetricsService<S> {
        RpcMetricsService { inner, metrics: self.metrics.clone() }
    }
}

/// The service [`RpcMetricsLayer`] wraps around the server's routes.
#[derive(Clone)]
pub(crate) struct RpcMetricsService<S> {
    inner: S,
    metrics: Metrics,
}

impl<S, RequestBody, ResponseBody> tower::Service<http::Request<RequestBody>> for RpcMetricsService<S>
where
    S: tower::Service<http::Request<RequestBody>, Response = http::Response<ResponseBody>>,
{
    type Response = S::Response;
    type Error = S::Error;
    type Future = RpcMetricsFuture<S::Future>;

    fn poll_ready(&mut self, cx: &mut TaskContext<'_>) -> Poll<Result<(), S::Error>> {
        self.inner.poll_ready(cx)
    }

    fn call(&mut self, request: http::Request<RequestBody>) -> RpcMetricsFuture<S::Future> {
        // The gRPC path, `/plait.v1.Data/Put`, names the method.
        let method = request.uri().path().to_owned();
        // `otel.name` and `otel.kind` are read by tracing-opentelemetry: the exported span
        // is named after the method, so traces are readable without opening each span.
        let span = tracing::info_span!(
            "rpc",
            method = %method,
            code = tracing::field::Empty,
            otel.name = %method,
            otel.kind = "server",
        );
        // Entered for `call` too: some services do work before returning their future.
        let future = span.in_scope(|| self.inner.call(request));
        RpcMetricsFuture {
            inner: future.instrument(span),
            call: Some(RpcCall { metrics: self.metrics.clone(), method, started: Instant::now() }),
        }
    }
}

pin_project_lite::pin_project! {
    /// The response future of [`RpcMetricsService`]: records the call once, when the
    /// response headers are ready, or as `CANCELLED` if the call is dropped before that.
    pub(crate) struct RpcMetricsFuture<F> {
        #[pin]
        inner: Instrumented<F>,
        // Taken when the call is recorded, so it is recorded exactly once.
        call: Option<RpcCall>,
    }

    impl<F> PinnedDrop for RpcMetricsFuture<F> {
        fn drop(this: Pin<&mut Self>) {
            let this = this.project();
            // The client went away, or a deadline fired, before the response was ready.
            if let Some(call) = this.call.take() {
                call.finish(Code::Cancelled, this.inner.span());
            }
        }
    }
}

impl<F, ResponseBody, Error> Future for RpcMetricsFuture<F>
where
    F: Future<Output = Result<http::Response<ResponseBody>, Error>>,
{
    type Output = F::Output;

    fn poll(self: Pin<&mut Self>, cx: &mut TaskContext<'_>) -> Poll<F::Output> {
        let mut this = self.project();
        let outcome = ready!(this.inner.as_mut().poll(cx));
        let code = match &outcome {
            Ok(response) => response_code(response.headers()),
            // tonic's own routes never fail here; a layer below us did, and tonic will
            // turn its error into `UNKNOWN` for the client.
            Err(_) => Code::Unknown,
        };
        if let Some(call) = this.call.take() {
            call.finish(code, this.inner.span());
        }
        Poll::Ready(outcome)
    }
}

/// The status of a call as far as its response headers tell. Errors a handler returns
/// come as a trailers-only response, with `grpc-status` in the headers. Otherwise the
/// status follows the body in trailers: for unary calls that is OK, short of a failure to
/// encode the reply; for streaming calls it is OK so far, and an error later in the
/// stream is not counted here.
fn response_code(headers: &http::HeaderMap) -> Code {
    headers.get("grpc-status").map_or(Code::Ok, |status| Code::from_bytes(status.as_bytes()))
}

/// What [`RpcMetricsFuture`] needs to record a call when it ends.
struct RpcCall {
    metrics: Metrics,
    method: String,
    started: Instant,
}

impl RpcCall {
    fn finish(self, code: Code, span: &tracing::Span) {
        span.record("code", code_name(code));
        let method = if code == Code::Unimplemented { UNKNOWN_METHOD.to_owned() } else { self.method };
        self.metrics.record_rpc_owned(method, code, self.started.elapsed());
    }
}

/// The `/metrics` listener, bound but not yet serving: binding first lets `plaitd` fail
/// at startup on a taken port, and lets tests learn the port they were given.
pub(crate) struct MetricsListener {
    listener: tokio::net::TcpListener,
}

/// Binds the `/metrics` listener on `listen`.
pub(crate) async fn bind_metrics(listen: SocketAddr) -> anyhow::Result<MetricsListener> {
    let listener = tokio::net::TcpListener::bind(listen)
        .await
        .with_context(|| format!("binding the metrics listener on {listen}"))?;
    Ok(MetricsListener { listener })
}

impl MetricsListener {
    /// The address actually bound, which differs from the one asked for when its port is 0.
    pub(crate) fn local_addr(&self) -> anyhow::Result<SocketAddr> {
        self.listener.local_addr().context("reading the metrics listener's address")
    }

    /// Serves `GET /metrics` (the text `prometheus_text` returns), `GET /healthz` (200
    /// while the process serves) and `GET /readyz` (200 when `not_ready` says `None`,
    /// else 503 with the reason) until `shutdown` completes, then lets open requests
    /// finish.
    pub(crate) async fn serve(
        self,
        prometheus_text: impl Fn() -> String + Send + Sync + 'static,
        not_ready: impl Fn() -> Option<String> + Send + Sync + 'static,
        shutdown: impl Future<Output = ()> + Send + 'static,
    ) -> anyhow::Result<()> {
        use axum::routing::get;

        let prometheus_text = Arc::new(prometheus_text);
        let not_ready = Arc::new(not_ready);
        let router = axum::Router::new()
            .route(
                "/metrics",
                get(move || {
                    let text = prometheus_text();
                    async move { ([(http::header::CONTENT_TYPE, prometheus::TEXT_FORMAT)], text) }
                }),
            )
            .route("/healthz", get(|| async { "ok\n" }))
            .route(
                "/readyz",
                get(move || {
                    let reply = match not_ready() {
                        None => (http::StatusCode::OK, "ready\n".to_owned()),
                        Some(reason) => {
                            (http::StatusCode::SERVICE_UNAVAILABLE, format!("not ready: {reason}\n"))
                        }
                    };
                    async move { reply }
                }),
            );
        axum::serve(self.listener, router).with_graceful_shutdown(shutdown).await.context("serving metrics")
    }
}

#[cfg(test)]
mod tests;
