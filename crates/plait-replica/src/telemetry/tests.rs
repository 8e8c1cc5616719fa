//! Tests for the telemetry module: metric names and values as Prometheus shows them, the
//! RPC layer's status codes and span, and the `/metrics` HTTP endpoint. None installs a
//! global subscriber or provider, so they run in any order beside other tests.

use std::collections::BTreeMap;
use std::convert::Infallible;
use std::sync::{Arc, Mutex};
use std::time::Duration;

use tokio::io::{AsyncReadExt as _, AsyncWriteExt as _};
use tokio::sync::oneshot;
use tonic::Code;
use tower::{Layer as _, Service as _, ServiceExt as _};
use tracing_subscriber::layer::SubscriberExt as _;

use super::*;

/// The value of the one series named `name` whose labels include all of `labels`, or
/// `None` if there is no such series.
fn sample(text: &str, name: &str, labels: &[(&str, &str)]) -> Option<f64> {
    let values: Vec<f64> = text
        .lines()
        .filter(|line| !line.starts_with('#'))
        .filter_map(|line| {
            let (series, value) = line.rsplit_once(' ')?;
            let (series_name, series_labels) = match series.split_once('{') {
                Some((series_name, rest)) => (series_name, rest.strip_suffix('}')?),
                None => (series, ""),
            };
            let matches = series_name == name
                && labels.iter().all(|(key, value)| {
                    let wanted = format!("{key}=\"{value}\"");
                    series_labels.split(',').any(|pair| pair == wanted)
                });
            matches.then(|| value.parse().expect("sample values are numbers"))
        })
        .collect();
    assert!(values.len() <= 1, "{name} {labels:?} matches {} series in\n{text}", values.len());
    values.first().copied()
}

/// A response as a tonic handler's error comes out: trailers-only, status in the headers.
fn grpc_error_response(code: Code) -> http::Response<String> {
    http::Response::builder()
        .header("content-type", "application/grpc")
        .header("grpc-status", (code as i32).to_string())
        .body(String::new())
        .expect("a valid response")
}

fn grpc_request(path: &str) -> http::Request<String> {
    http::Request::builder()
        .uri(format!("http://plait.test{path}"))
        .body(String::new())
        .expect("a valid request")
}

/// Every instrument appears in the Prometheus text under its documented name, and
/// counters add up, histograms count observations into the right buckets, and the
/// gauge holds the last value set.
#[test]
fn prometheus_text_shows_recorded_metrics() {
    let telemetry = Telemetry::detached("plait-test").expect("telemetry");
    let metrics = telemetry.metrics();

    metrics.record_batch(10, 15, Duration::from_micros(80));
    metrics.record_batch(20, 25, Duration::from_millis(2));
    metrics.record_ops_written("kv", 3);
    metrics.record_ops_written("kv", 4);
    metrics.clone().record_ops_written("doc", 1);
    metrics.record_ingested("local", 5);
    metrics.record_ingested("sync", 7);
    metrics.set_pending(42);
    metrics.set_pending(17);
    metrics.record_checkpoint_deferred();
    metrics.record_rpc("/plait.v1.Data/Put", Code::Ok, Duration::from_millis(1));
    metrics.record_rpc("/plait.v1.Data/Put", Code::NotFound, Duration::from_millis(2));

    let text = telemetry.prometheus_text();
    assert_eq!(sample(&text, "plait_batch_entries_count", &[]), Some(2.0));
    assert_eq!(sample(&text, "plait_batch_entries_sum", &[]), Some(30.0));
    assert_eq!(sample(&text, "plait_batch_entries_bucket", &[("le", "16")]), Some(1.0));
    assert_eq!(sample(&text, "plait_batch_ops_sum", &[]), Some(40.0));
    assert_eq!(sample(&text, "plait_fsync_seconds_count", &[]), Some(2.0));
    assert_eq!(sample(&text, "plait_fsync_seconds_bucket", &[("le", "0.00005")]), Some(0.0));
    assert_eq!(sample(&text, "plait_fsync_seconds_bucket", &[("le", "0.0001")]), Some(1.0));
    assert_eq!(sample(&text, "plait_fsync_seconds_bucket", &[("le", "0.0025")]), Some(2.0));
    assert_eq!(sample(&text, "plait_fsync_seconds_bucket", &[("le", "1")]), Some(2.0));
    assert_eq!(sample(&text, "plait_ops_written_total", &[("log_type", "kv")]), Some(7.0));
    assert_eq!(sample(&text, "plait_ops_written_total", &[("log_type", "doc")]), Some(1.0));
    assert_eq!(sample(&text, "plait_entries_ingested_total", &[("source", "local")]), Some(5.0));
    assert_eq!(sample(&text, "plait_entries_ingested_total", &[("source", "sync")]), Some(7.0));
    assert_eq!(sample(&text, "plait_pending_entries", &[]), Some(17.0));
    assert_eq!(sample(&text, "plait_checkpoints_deferred_total", &[]), Some(1.0));
    let put = ("method", "/plait.v1.Data/Put");
    assert_eq!(sample(&text, "plait_rpc_seconds_count", &[put, ("code", "OK")]), Some(1.0));
    assert_eq!(sample(&text, "plait_rpc_seconds_count", &[put, ("code", "NOT_FOUND")]), Some(1.0));
    assert_eq!(sample(&text, "plait_rpc_errors_total", &[put, ("code", "NOT_FOUND")]), Some(1.0));
    assert_eq!(sample(&text, "plait_rpc_errors_total", &[put, ("code", "OK")]), None);
    assert_eq!(sample(&text, "target_info", &[("service_name", "plait-test")]), Some(1.0));
    assert!(text.contains("# TYPE plait_ops_written_total counter"), "{text}");
    assert!(text.contains("# TYPE plait_fsync_seconds histogram"), "{text}");
    assert!(text.contains("# TYPE plait_pending_entries gauge"), "{text}");
}

/// Two detached `Telemetry` values do not share metrics, so tests that each make one
/// can run in parallel; and the no-op `Metrics` accepts every call.
#[test]
fn detached_telemetry_is_isolated_and_noop_metrics_record_nothing() {
    let first = Telemetry::detached("first").expect("telemetry");
    let second = Telemetry::detached("second").expect("telemetry");
    first.metrics().record_ingested("submit", 3);

    assert_eq!(
        sample(&first.prometheus_text(), "plait_entries_ingested_total", &[("source", "submit")]),
        Some(3.0)
    );
    assert_eq!(
        sample(&second.prometheus_text(), "plait_entries_ingested_total", &[("source", "submit")]),
        None
    );

    let noop = Metrics::noop();
    noop.record_batch(1, 1, Duration::from_millis(1));
    noop.record_ops_written("kv", 1);
    noop.record_ingested("local", 1);
    noop.set_pending(1);
    noop.record_rpc("/plait.v1.Data/Put", Code::Internal, Duration::from_millis(1));
}

/// The layer records one observation per call, taking the code from the `grpc-status`
/// response header when there is one and OK when there is none, and counts only the
/// non-OK call as an error.
#[tokio::test]
async fn rpc_layer_records_code_from_grpc_status_header() {
    let telemetry = Telemetry::detached("plait-test").expect("telemetry");
    let mut service = RpcMetricsLayer::new(telemetry.metrics()).layer(tower::service_fn(
        |request: http::Request<String>| async move {
            let response = if request.uri().path().ends_with("/Missing") {
                grpc_error_response(Code::NotFound)
            } else {
                http::Response::new("reply".to_owned())
            };
            Ok::<_, Infallible>(response)
        },
    ));

    let missing = "/plait.v1.Data/Missing";
    let get = "/plait.v1.Data/Get";
    let response =
        service.ready().await.expect("ready").call(grpc_request(missing)).await.expect("a response");
    assert_eq!(response.headers()["grpc-status"], "5");
    let response = service.ready().await.expect("ready").call(grpc_request(get)).await.expect("a response");
    assert_eq!(response.body(), "reply");

    let text = telemetry.prometheus_text();
    let not_found = [("method", missing), ("code", "NOT_FOUND")];
    let ok = [("method", get), ("code", "OK")];
    assert_eq!(sample(&text, "plait_rpc_seconds_count", &not_found), Some(1.0));
    assert_eq!(sample(&text, "plait_rpc_errors_total", &not_found), Some(1.0));
    assert_eq!(sample(&text, "plait_rpc_seconds_count", &ok), Some(1.0));
    assert_eq!(sample(&text, "plait_rpc_errors_total", &ok), None);
}

/// A call to a path the server does not serve is labelled `unknown`, so clients cannot
/// create metric series by inventing paths.
#[tokio::test]
async fn rpc_layer_labels_unimplemented_paths_unknown() {
    let telemetry = Telemetry::detached("plait-test").expect("telemetry");
    let service = RpcMetricsLayer::new(telemetry.metrics()).layer(tower::service_fn(
        |_request: http::Request<String>| async {
            Ok::<_, Infallible>(grpc_error_response(Code::Unimplemented))
        },
    ));

    service.oneshot(grpc_request("/made.up.Service/Anything")).await.expect("a response");

    let text = telemetry.prometheus_text();
    let unknown = [("method", "unknown"), ("code", "UNIMPLEMENTED")];
    assert_eq!(sample(&text, "plait_rpc_errors_total", &unknown), Some(1.0));
    assert!(!text.contains("made.up.Service"), "{text}");
}

/// A call dropped before its response is ready (client gone, deadline passed) is
/// recorded once, as CANCELLED.
#[tokio::test]
async fn rpc_layer_records_dropped_call_as_cancelled() {
    let telemetry = Telemetry::detached("plait-test").expect("telemetry");
    let mut service = RpcMetricsLayer::new(telemetry.metrics()).layer(tower::service_fn(
        |_request: http::Request<String>| {
            std::future::pending::<Result<http::Response<String>, Infallible>>()
        },
    ));

    let call = service.ready().await.expect("ready").call(grpc_request("/plait.v1.Sync/Pull"));
    drop(call);

    let text = telemetry.prometheus_text();
    let cancelled = [("method", "/plait.v1.Sync/Pull"), ("code", "CANCELLED")];
    assert_eq!(sample(&text, "plait_rpc_errors_total", &cancelled), Some(1.0));
    assert_eq!(sample(&text, "plait_rpc_seconds_count", &[]), Some(1.0));
}

/// The spans one subscriber saw: name, then fields as recorded.
type SeenSpans = Arc<Mutex<Vec<(String, BTreeMap<String, String>)>>>;

/// Records every span's name and fields, including fields recorded after creation.
struct SpanRecorder {
    spans: SeenSpans,
}

struct FieldRecorder<'a>(&'a mut BTreeMap<String, String>);

impl tracing::field::Visit for FieldRecorder<'_> {
    fn record_str(&mut self, field: &tracing::field::Field, value: &str) {
        self.0.insert(field.name().to_owned(), value.to_owned());
    }

    fn record_debug(&mut self, field: &tracing::field::Field, value: &dyn std::fmt::Debug) {
        self.0.insert(field.name().to_owned(), format!("{value:?}"));
    }
}

impl<S> tracing_subscriber::Layer<S> for SpanRecorder
where
    S: tracing::Subscriber + for<'a> tracing_subscriber::registry::LookupSpan<'a>,
{
    fn on_new_span(
        &self,
        attributes: &tracing::span::Attributes<'_>,
        id: &tracing::span::Id,
        context: tracing_subscriber::layer::Context<'_, S>,
    ) {
        let mut fields = BTreeMap::new();
        attributes.record(&mut FieldRecorder(&mut fields));
        let mut spans = self.spans.lock().expect("not poisoned");
        spans.push((attributes.metadata().name().to_owned(), fields));
        let index = spans.len() - 1;
        if let Some(span) = context.span(id) {
            span.extensions_mut().insert(index);
        }
    }

    fn on_record(
        &self,
        id: &tracing::span::Id,
        values: &tracing::span::Record<'_>,
        context: tracing_subscriber::layer::Context<'_, S>,
    ) {
        let Some(span) = context.span(id) else {
            return;
        };
        let Some(&index) = span.extensions().get::<usize>() else {
            return;
        };
        let mut spans = self.spans.lock().expect("not poisoned");
        values.record(&mut FieldRecorder(&mut spans[index].1));
    }
}

/// Each call runs in a span named `rpc` carrying the gRPC path as `method`, and the
/// span gets the final `code` when the call ends.
#[tokio::test(flavor = "current_thread")]
async fn rpc_layer_opens_rpc_span_with_method_and_code() {
    let spans = SeenSpans::default();
    let subscriber = tracing_subscriber::registry().with(SpanRecorder { spans: spans.clone() });
    // Scoped to this thread, which also polls the call: nothing global is installed.
    let _guard = tracing::subscriber::set_default(subscriber);

    let service = RpcMetricsLayer::new(Metrics::noop()).layer(tower::service_fn(
        |_request: http::Request<String>| async {
            Ok::<_, Infallible>(grpc_error_response(Code::PermissionDenied))
        },
    ));
    service.oneshot(grpc_request("/plait.v1.Admin/Status")).await.expect("a response");

    let spans = spans.lock().expect("not poisoned");
    let rpc: Vec<_> = spans.iter().filter(|(name, _)| name == "rpc").collect();
    assert_eq!(rpc.len(), 1, "{spans:?}");
    let fields = &rpc[0].1;
    assert_eq!(fields["method"], "/plait.v1.Admin/Status");
    assert_eq!(fields["code"], "PERMISSION_DENIED");
}

/// The layer fits `tonic::transport::Server::builder().layer(..)`, and over a real
/// HTTP/2 connection records the OK of a unary reply and the status of a handler error.
#[tokio::test]
async fn rpc_layer_serves_real_grpc_calls() {
    use tonic_health::pb::HealthCheckRequest;
    use tonic_health::pb::health_client::HealthClient;

    let telemetry = Telemetry::detached("plait-test").expect("telemetry");
    let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.expect("bind");
    let address = listener.local_addr().expect("address");
    let (_reporter, health) = tonic_health::server::health_reporter();
    let (stop, stopped) = oneshot::channel::<()>();
    let server = tokio::spawn(
        tonic::transport::Server::builder()
            .layer(RpcMetricsLayer::new(telemetry.metrics()))
            .add_service(health)
            .serve_with_incoming_shutdown(tonic::transport::server::TcpIncoming::from(listener), async {
                let _ = stopped.await;
            }),
    );

    // The listener is already bound, so connecting cannot race the server's start.
    let channel = tonic::transport::Endpoint::from_shared(format!("http://{address}"))
        .expect("endpoint")
        .connect()
        .await
        .expect("connect");
    let mut client = HealthClient::new(channel);
    client
        .check(HealthCheckRequest { service: String::new() })
        .await
        .expect("the server's own health is known");
    let status = client
        .check(HealthCheckRequest { service: "no.such.Service".to_owned() })
        .await
        .expect_err("an unregistered service is not found");
    assert_eq!(status.code(), Code::NotFound);
    drop(client);
    stop.send(()).expect("server running");
    server.await.expect("joined").expect("served");

    // The server records a call before sending its response headers, so both calls are
    // recorded by the time the client has seen both replies.
    let text = telemetry.prometheus_text();
    let check = ("method", "/grpc.health.v1.Health/Check");
    assert_eq!(sample(&text, "plait_rpc_seconds_count", &[check, ("code", "OK")]), Some(1.0));
    assert_eq!(sample(&text, "plait_rpc_errors_total", &[check, ("code", "NOT_FOUND")]), Some(1.0));
}

/// Sends one HTTP/1.1 request over a fresh TCP connection and returns the whole reply.
async fn http_get(address: SocketAddr, path: &str) -> String {
    let mut stream = tokio::net::TcpStream::connect(address).await.expect("connect");
    let request = format!("GET {path} HTTP/1.1\r\nHost: plait.test\r\nConnection: close\r\n\r\n");
    stream.write_all(request.as_bytes()).await.expect("send request");
    let mut reply = String::new();
    stream.read_to_string(&mut reply).await.expect("read reply");
    reply
}

/// `/metrics` answers over real TCP with the Prometheus content type and the current
/// values, `/healthz` answers ok, `/readyz` follows the readiness it is given (503 with
/// the reason when not ready), and the server stops when told to.
#[tokio::test]
async fn metrics_endpoint_serves_prometheus_text_and_health() {
    let telemetry = Telemetry::detached("plait-test").expect("telemetry");
    telemetry.metrics().record_ops_written("kv", 9);
    let listener = bind_metrics("127.0.0.1:0".parse().expect("address")).await.expect("bind");
    let address = listener.local_addr().expect("address");
    let (stop, stopped) = oneshot::channel::<()>();
    let readiness = Arc::new(std::sync::Mutex::new(Some("catching up".to_owned())));
    let not_ready = {
        let readiness = readiness.clone();
        move || readiness.lock().expect("lock").clone()
    };
    let server = tokio::spawn(listener.serve(telemetry.prometheus_source(), not_ready, async {
        let _ = stopped.await;
    }));

    let reply = http_get(address, "/metrics").await;
    let (head, body) = reply.split_once("\r\n\r\n").expect("headers end");
    assert!(head.starts_with("HTTP/1.1 200 OK"), "{head}");
    assert!(head.to_ascii_lowercase().contains("content-type: text/plain; version=0.0.4"), "{head}");
    assert_eq!(sample(body, "plait_ops_written_total", &[("log_type", "kv")]), Some(9.0));

    let reply = http_get(address, "/healthz").await;
    assert!(reply.starts_with("HTTP/1.1 200 OK"), "{reply}");
    assert!(reply.ends_with("\r\n\r\nok\n"), "{reply}");

    let reply = http_get(address, "/readyz").await;
    assert!(reply.starts_with("HTTP/1.1 503"), "{reply}");
    assert!(reply.ends_with("\r\n\r\nnot ready: catching up\n"), "{reply}");
    *readiness.lock().expect("lock") = None;
    let reply = http_get(address, "/readyz").await;
    assert!(reply.starts_with("HTTP/1.1 200 OK") && reply.ends_with("\r\n\r\nready\n"), "{reply}");

    let reply = http_get(address, "/nothing-here").await;
    assert!(reply.starts_with("HTTP/1.1 404"), "{reply}");

    stop.send(()).expect("server running");
    server.await.expect("joined").expect("served");
}

/// A taken port is an error that names the address, not a silent missing endpoint.
#[tokio::test]
async fn bind_metrics_reports_a_taken_port() {
    let taken = tokio::net::TcpListener::bind("127.0.0.1:0").await.expect("bind");
    let address = taken.local_addr().expect("address");

    let error = bind_metrics(address).await.map(|_| ()).expect_err("the port is taken");

    let message = format!("{error:#}");
    assert!(message.contains(&format!("binding the metrics listener on {address}")), "{message}");
}

/// A malformed log filter is reported as such, and before `init` installs anything, so
/// this test leaves the process as it found it.
#[test]
fn init_rejects_a_malformed_log_filter() {
    let config = TelemetryConfig {
        log_filter: "plait=notalevel".to_owned(),
        log_json: false,
        service_name: "plait-test".to_owned(),
        metrics_listen: None,
    };

    let error = init(&config).err().expect("the filter is malformed");

    assert!(format!("{error:#}").contains("invalid log filter"), "{error:#}");
}
