//! The reconcilers against a fake API server and fake replicas. A `tower_test` mock stands
//! in for the Kubernetes API: a small in-memory object store that answers gets, lists,
//! creates, applies, status patches and deletes, and records every request. A scripted
//! `ReplicaAdmin` stands in for the replicas and records every call. Each test runs one
//! or two reconcile passes and then checks what they asked of both.
//!
//! The store is deliberately tolerant (it answers whatever is asked, in any order) so the
//! tests pin down what the operator does, not the order of its reads.

use std::collections::BTreeMap;
use std::future::Future;
use std::pin::Pin;
use std::sync::{Arc, Mutex};
use std::time::Duration;

use http::{Method, Request, Response, StatusCode};
use jiff::{SignedDuration, Timestamp};
use k8s_openapi::ByteString;
use k8s_openapi::api::apps::v1::{StatefulSet, StatefulSetSpec};
use k8s_openapi::api::core::v1::Secret;
use k8s_openapi::apimachinery::pkg::apis::meta::v1::{Condition, ObjectMeta, Time};
use kube::client::Body;
use kube::runtime::controller::Action;
use serde_json::{Value, json};
use tokio::task::JoinHandle;
use tower_test::mock;

use crate::backup::{ATTEMPTS_MAX, backoff};
use crate::cluster::{CONVERGING_REQUEUE, STEADY_REQUEUE};
use crate::context::{Clock, Context, RETRY_MIN};
use crate::crd::{
    BackupCheckpoint, BackupKind, BackupSpec, PlaitBackup, PlaitBackupSpec, PlaitBackupStatus, PlaitCluster,
    PlaitClusterSpec, PlaitClusterStatus, RetentionSpec,
};
use crate::plan::PlanContext;
use crate::replicas::{
    BackupJob, BackupObject, BackupOutcome, BackupRequest, ReplicaAdmin, ReplicaStatus, Resolve, Target,
};

const NS: &str = "ns";
const NAME: &str = "db";
const CLUSTERS: &str = "/apis/plait.dev/v1alpha1/namespaces/ns/plaitclusters";
const BACKUPS: &str = "/apis/plait.dev/v1alpha1/namespaces/ns/plaitbackups";
const SECRETS: &str = "/api/v1/namespaces/ns/secrets";
const CONFIG_MAPS: &str = "/api/v1/namespaces/ns/configmaps";
const SERVICES: &str = "/api/v1/namespaces/ns/services";
const PDBS: &str = "/apis/policy/v1/namespaces/ns/poddisruptionbudgets";
const STATEFUL_SETS: &str = "/apis/apps/v1/namespaces/ns/statefulsets";
const EVENTS: &str = "/apis/events.k8s.io/v1/namespaces/ns/events";

/// How long any one reconcile, or the fake API server's wind-down, may take. Everything
/// here is in memory, so hitting this means a request went unanswered.
const DEADLINE: Duration = Duration::from_secs(5);

fn now() -> Timestamp {
    "2026-11-20T12:00:00Z".parse().expect("a valid timestamp")
}

fn minutes_ago(minutes: i64) -> Timestamp {
    now().checked_sub(SignedDuration::from_mins(minutes)).expect("within range")
}

fn cluster_path() -> String {
    format!("{CLUSTERS}/{NAME}")
}

fn cluster_status_path() -> String {
    format!("{CLUSTERS}/{NAME}/status")
}

fn stateful_set_path() -> String {
    format!("{STATEFUL_SETS}/{NAME}")
}

/// The owned objects in the order the operator applies them: configuration and Services
/// before the StatefulSet whose pods need them.
fn owned_paths() -> [String; 6] {
    [
        format!("{CONFIG_MAPS}/{NAME}-config"),
        format!("{SERVICES}/{NAME}-headless"),
        format!("{SERVICES}/{NAME}"),
        format!("{PDBS}/{NAME}"),
        stateful_set_path(),
        format!("/apis/networking.k8s.io/v1/namespaces/{NS}/networkpolicies/{NAME}"),
    ]
}

/// The address the fake resolver gives replica `ordinal` of the cluster.
fn address(ordinal: i32) -> String {
    format!("{NAME}-{ordinal}.{NS}:7070")
}

/// Replica `ordinal`'s admin address, where SetMembers, Drain and backups go.
fn admin(ordinal: i32) -> String {
    format!("{NAME}-{ordinal}.{NS}:7072")
}

/// The API address of the replica at `address`, its API or its admin address.
fn api_form(address: &str) -> String {
    address.strip_suffix(":7072").map_or_else(|| address.to_owned(), |host| format!("{host}:7070"))
}

/// The API address of the replica whose admin address this is; panics for any other
/// address, so a cluster-admin call sent to the API address fails the test.
fn api_of(admin: &str) -> String {
    assert!(admin.ends_with(":7072"), "{admin} is not an admin address: a cluster-admin call went elsewhere");
    api_form(admin)
}

fn addresses(replicas: i32) -> Vec<String> {
    (0..replicas).map(address).collect()
}

// ---------------------------------------------------------------------------------------
// The clock and the resolver.

/// A clock stopped at [`now`].
struct FixedClock;

impl Clock for FixedClock {
    fn now(&self) -> Timestamp {
        now()
    }
}

/// Resolves a pod to a name only the fake replicas answer to.
struct PodResolver;

impl Resolve for PodResolver {
    fn address(&self, namespace: &str, cluster: &str, ordinal: i32) -> String {
        format!("{cluster}-{ordinal}.{namespace}:7070")
    }

    fn admin_address(&self, namespace: &str, cluster: &str, ordinal: i32) -> String {
        format!("{cluster}-{ordinal}.{namespace}:7072")
    }
}

// ---------------------------------------------------------------------------------------
// The fake replicas.

type Reply<'a, T> = Pin<Box<dyn Future<Output = Result<T, String>> + Send + 'a>>;

/// One `Admin` call the operator made.
#[derive(Clone, Debug, PartialEq, Eq)]
enum Call {
    Status(String),
    SetMembers { address: String, generation: u64, members: Vec<String> },
    Drain(String),
    StartBackup(String, String, BackupRequest),
    BackupJob(String, String),
}

/// How one fake replica answers.
#[derive(Clone, Debug)]
struct FakeReplica {
    status: Result<ReplicaStatus, String>,
    drain: Result<(), String>,
    /// What `StartBackup` answers.
    start_backup: Result<BackupJob, String>,
    /// What `GetBackupJob` answers (`None`: the job is unknown).
    backup_job: Result<Option<BackupJob>, String>,
}

/// A writable, not draining replica at member generation `generation`.
fn ready(generation: u64) -> FakeReplica {
    FakeReplica {
        status: Ok(ReplicaStatus {
            node_id: "0a0b".into(),
            epoch: "e1".into(),
            writable: true,
            draining: false,
            members_generation: generation,
            lag: 0,
            not_ready: None,
            digest_mismatches: Vec::new(),
            unverified: 0,
        }),
        drain: Ok(()),
        start_backup: Err("no backup scripted".into()),
        backup_job: Err("no backup scripted".into()),
    }
}

fn unreachable(error: &str) -> FakeReplica {
    FakeReplica {
        status: Err(error.into()),
        drain: Err(error.into()),
        start_backup: Err(error.into()),
        backup_job: Err(error.into()),
    }
}

/// Replicas by address, answering from a table and recording every call. `SetMembers`
/// to an answering replica moves its reported generation, as the real one does.
#[derive(Default)]
struct FakeAdmin {
    replicas: Mutex<BTreeMap<String, FakeReplica>>,
    calls: Mutex<Vec<Call>>,
}

impl FakeAdmin {
    fn with(replicas: impl IntoIterator<Item = (i32, FakeReplica)>) -> FakeAdmin {
        let admin = FakeAdmin::default();
        admin.replicas.lock().unwrap().extend(replicas.into_iter().map(|(o, r)| (address(o), r)));
        admin
    }

    fn record(&self, call: Call) {
        self.calls.lock().unwrap().push(call);
    }

    /// The replica at `address`, its API or its admin address.
    fn replica(&self, address: &str) -> Result<FakeReplica, String> {
        self.replicas
            .lock()
            .unwrap()
            .get(&api_form(address))
            .cloned()
            .ok_or_else(|| format!("{address}: connection refused"))
    }
}

impl ReplicaAdmin for FakeAdmin {
    fn status<'a>(&'a self, target: &'a Target) -> Reply<'a, ReplicaStatus> {
        let address = target.address.as_str();
        self.record(Call::Status(address.to_owned()));
        let answer = self.replica(address).and_then(|r| r.status);
        Box::pin(async move { answer })
    }

    fn set_members<'a>(
        &'a self,
        target: &'a Target,
        generation: u64,
        members: Vec<String>,
    ) -> Reply<'a, u64> {
        let address = target.address.as_str();
        self.record(Call::SetMembers { address: address.to_owned(), generation, members });
        let mut replicas = self.replicas.lock().unwrap();
        let answer = match replicas.get_mut(&api_form(address)).map(|r| &mut r.status) {
            Some(Ok(status)) => {
                status.members_generation = generation;
                Ok(generation)
            }
            Some(Err(error)) => Err(error.clone()),
            None => Err(format!("{address}: connection refused")),
        };
        Box::pin(async move { answer })
    }

    fn drain<'a>(&'a self, target: &'a Target, _timeout: Duration) -> Reply<'a, ()> {
        let address = target.address.as_str();
        self.record(Call::Drain(address.to_owned()));
        let answer = self.replica(address).and_then(|r| r.drain);
        Box::pin(async move { answer })
    }

    fn start_backup<'a>(
        &'a self,
        target: &'a Target,
        job: &'a str,
        request: BackupRequest,
    ) -> Reply<'a, BackupJob> {
        let address = target.address.as_str();
        self.record(Call::StartBackup(address.to_owned(), job.to_owned(), request));
        let answer = self.replica(address).and_then(|r| r.start_backup);
        Box::pin(async move { answer })
    }

    fn backup_job<'a>(&'a self, target: &'a Target, job: &'a str) -> Reply<'a, Option<BackupJob>> {
        let address = target.address.as_str();
        self.record(Call::BackupJob(address.to_owned(), job.to_owned()));
        let answer = self.replica(address).and_then(|r| r.backup_job);
        Box::pin(async move { answer })
    }
}

// ---------------------------------------------------------------------------------------
// The fake API server.

/// One request the fake API server answered.
#[derive(Clone, Debug)]
struct Seen {
    method: Method,
    path: String,
    query: BTreeMap<String, String>,
    content_type: Option<String>,
    body: Value,
}

impl Seen {
    fn is(&self, method: &Method, path: &str) -> bool {
        self.method == *method && self.path == path
    }
}

/// Objects by their URL path, and every request seen.
#[derive(Default)]
struct Store {
    objects: BTreeMap<String, Value>,
    seen: Vec<Seen>,
}

fn status_error(code: StatusCode, reason: &str, message: String) -> (StatusCode, Value) {
    let body = json!({
        "apiVersion": "v1",
        "kind": "Status",
        "metadata": {},
        "status": "Failure",
        "message": message,
        "reason": reason,
        "code": code.as_u16(),
    });
    (code, body)
}

/// RFC 7386 merge patch, for the event recorder's series updates.
fn merge(target: &mut Value, patch: &Value) {
    match (target, patch) {
        (Value::Object(target), Value::Object(patch)) => {
            for (key, value) in patch {
                if value.is_null() {
                    target.remove(key);
                } else {
                    merge(target.entry(key.clone()).or_insert(Value::Null), value);
                }
            }
        }
        (target, patch) => *target = patch.clone(),
    }
}

/// Whether `object` carries every `key=value` of a label selector.
fn matches_labels(object: &Value, selector: Option<&String>) -> bool {
    selector.is_none_or(|selector| {
        selector.split(',').filter(|term| !term.is_empty()).all(|term| {
            let (key, value) = term.split_once('=').unwrap_or((term, ""));
            object["metadata"]["labels"][key].as_str() == Some(value)
        })
    })
}

impl Store {
    fn answer(&mut self, seen: &Seen) -> (StatusCode, Value) {
        let path = seen.path.as_str();
        // A collection is the path right under the namespace: `.../namespaces/ns/<plural>`.
        let collection = path.rsplit('/').nth(1) == Some(NS);
        match seen.method {
            Method::GET if collection => {
                let prefix = format!("{path}/");
                let items: Vec<Value> = self
                    .objects
                    .iter()
                    .filter(|(key, _)| key.strip_prefix(&prefix).is_some_and(|rest| !rest.contains('/')))
                    .map(|(_, object)| object)
                    .filter(|object| matches_labels(object, seen.query.get("labelSelector")))
                    .cloned()
                    .collect();
                (
                    StatusCode::OK,
                    json!({ "kind": "List", "metadata": { "resourceVersion": "1" }, "items": items }),
                )
            }
            Method::GET => match self.objects.get(path) {
                Some(object) => (StatusCode::OK, object.clone()),
                None => status_error(StatusCode::NOT_FOUND, "NotFound", format!("{path} not found")),
            },
            Method::POST => {
                let name = seen.body["metadata"]["name"].as_str().expect("created objects are named");
                let key = format!("{path}/{name}");
                if self.objects.contains_key(&key) {
                    return status_error(StatusCode::CONFLICT, "AlreadyExists", format!("{key} exists"));
                }
                self.objects.insert(key, seen.body.clone());
                (StatusCode::CREATED, seen.body.clone())
            }
            Method::PATCH if path.ends_with("/status") => {
                let parent = path.trim_end_matches("/status");
                match self.objects.get_mut(parent) {
                    Some(object) => {
                        object["status"] = seen.body["status"].clone();
                        (StatusCode::OK, object.clone())
                    }
                    None => status_error(StatusCode::NOT_FOUND, "NotFound", format!("{parent} not found")),
                }
            }
            Method::PATCH if seen.content_type.as_deref() == Some("application/apply-patch+yaml") => {
                // Server-side apply of a whole object by its only manager: the result is
                // what was applied.
                self.objects.insert(path.to_owned(), seen.body.clone());
                (StatusCode::OK, seen.body.clone())
            }
            Method::PATCH => match self.objects.get_mut(path) {
                Some(object) => {
                    merge(object, &seen.body);
                    (StatusCode::OK, object.clone())
                }
                None => status_error(StatusCode::NOT_FOUND, "NotFound", format!("{path} not found")),
            },
            Method::DELETE => match self.objects.remove(path) {
                Some(object) => (StatusCode::OK, object),
                None => status_error(StatusCode::NOT_FOUND, "NotFound", format!("{path} not found")),
            },
            _ => status_error(StatusCode::METHOD_NOT_ALLOWED, "MethodNotAllowed", path.to_owned()),
        }
    }
}

/// The RBAC `(group, resource, verb)` a request needs: `resource` is `plural` or
/// `plural/subresource`.
fn rbac_request(seen: &Seen) -> (String, String, &'static str) {
    let parts: Vec<&str> = seen.path.trim_start_matches('/').split('/').collect();
    // `api/v1/...` is the core group; `apis/<group>/<version>/...` the others.
    let (group, rest) = match parts.as_slice() {
        ["api", _, rest @ ..] => (String::new(), rest),
        ["apis", group, _, rest @ ..] => ((*group).to_owned(), rest),
        _ => panic!("not an API path: {}", seen.path),
    };
    let rest = match rest {
        ["namespaces", _, rest @ ..] => rest,
        rest => rest,
    };
    let (resource, named) = match rest {
        [plural] => ((*plural).to_owned(), false),
        [plural, _name] => ((*plural).to_owned(), true),
        [plural, _name, sub] => (format!("{plural}/{sub}"), true),
        _ => panic!("unexpected API path: {}", seen.path),
    };
    let verb = match (&seen.method, named) {
        (&Method::GET, false) if seen.query.get("watch").is_some_and(|w| w == "true") => "watch",
        (&Method::GET, false) => "list",
        (&Method::GET, true) => "get",
        (&Method::POST, _) => "create",
        (&Method::PUT, _) => "update",
        (&Method::PATCH, _) => "patch",
        (&Method::DELETE, _) => "delete",
        (method, _) => panic!("unexpected method {method} on {}", seen.path),
    };
    (group, resource, verb)
}

fn percent_decode(text: &str) -> String {
    let bytes = text.as_bytes();
    let mut out = Vec::with_capacity(bytes.len());
    let mut i = 0;
    while i < bytes.len() {
        match bytes[i] {
            b'+' => out.push(b' '),
            b'%' if i + 2 < bytes.len() => {
                let hex = std::str::from_utf8(&bytes[i + 1..i + 3]).expect("ascii");
                out.push(u8::from_str_radix(hex, 16).expect("a percent escape"));
                i += 2;
            }
            byte => out.push(byte),
        }
        i += 1;
    }
    String::from_utf8(out).expect("utf-8 query")
}

fn parse_query(query: Option<&str>) -> BTreeMap<String, String> {
    query
        .unwrap_or("")
        .split('&')
        .filter(|pair| !pair.is_empty())
        .map(|pair| {
            let (key, value) = pair.split_once('=').unwrap_or((pair, ""));
            (percent_decode(key), percent_decode(value))
        })
        .collect()
}

/// Answers requests from the store until every client is gone.
async fn serve(mut handle: mock::Handle<Request<Body>, Response<Body>>, store: Arc<Mutex<Store>>) {
    while let Some((request, send)) = handle.next_request().await {
        let (parts, body) = request.into_parts();
        let bytes = body.collect_bytes().await.expect("a request body");
        let seen = Seen {
            method: parts.method.clone(),
            path: parts.uri.path().to_owned(),
            query: parse_query(parts.uri.query()),
            content_type: parts
                .headers
                .get(http::header::CONTENT_TYPE)
                .map(|v| v.to_str().expect("ascii header").to_owned()),
            body: if bytes.is_empty() {
                Value::Null
            } else {
                serde_json::from_slice(&bytes).expect("request bodies are JSON")
            },
        };
        let (code, answer) = {
            let mut store = store.lock().unwrap();
            let answer = store.answer(&seen);
            store.seen.push(seen);
            answer
        };
        let response = Response::builder()
            .status(code)
            .header(http::header::CONTENT_TYPE, "application/json")
            .body(Body::from(serde_json::to_vec(&answer).expect("JSON")))
            .expect("a response");
        send.send_response(response);
    }
}

// ---------------------------------------------------------------------------------------
// The harness.

/// A context wired to the fake API server and fake replicas.
struct Harness {
    ctx: Arc<Context>,
    store: Arc<Mutex<Store>>,
    admin: Arc<FakeAdmin>,
    server: JoinHandle<()>,
}

impl Harness {
    fn start(objects: Vec<(String, Value)>, admin: FakeAdmin) -> Harness {
        let (service, handle) = mock::pair::<Request<Body>, Response<Body>>();
        let store = Arc::new(Mutex::new(Store { objects: objects.into_iter().collect(), seen: Vec::new() }));
        let server = tokio::spawn(serve(handle, store.clone()));
        let client = kube::Client::new(service, "default");
        let admin = Arc::new(admin);
        let ctx = Context::new(
            client,
            admin.clone(),
            Arc::new(PodResolver),
            Arc::new(FixedClock),
            PlanContext { replica_image: "plait/plaitd:test".into(), operator_namespace: None },
        );
        Harness { ctx, store, admin, server }
    }

    fn object(&self, path: &str) -> Option<Value> {
        self.store.lock().unwrap().objects.get(path).cloned()
    }

    /// Requests seen so far.
    fn seen(&self) -> Vec<Seen> {
        self.store.lock().unwrap().seen.clone()
    }

    /// Replica calls made so far.
    fn calls(&self) -> Vec<Call> {
        self.admin.calls.lock().unwrap().clone()
    }

    /// Where the next pass's requests and calls start, for tests that run two passes.
    fn mark(&self) -> (usize, usize) {
        (self.seen().len(), self.calls().len())
    }

    async fn reconcile_cluster(&self) -> Action {
        let cached: PlaitCluster =
            serde_json::from_value(self.object(&cluster_path()).expect("the cluster is stored"))
                .expect("a PlaitCluster");
        tokio::time::timeout(DEADLINE, crate::cluster::reconcile(Arc::new(cached), self.ctx.clone()))
            .await
            .expect("the reconcile finishes")
            .expect("the reconcile succeeds")
    }

    async fn reconcile_backup(&self, name: &str) -> Action {
        let cached: PlaitBackup =
            serde_json::from_value(self.object(&format!("{BACKUPS}/{name}")).expect("the backup is stored"))
                .expect("a PlaitBackup");
        tokio::time::timeout(DEADLINE, crate::backup::reconcile(Arc::new(cached), self.ctx.clone()))
            .await
            .expect("the reconcile finishes")
            .expect("the reconcile succeeds")
    }

    /// Checks that RBAC grants every request seen (`crate::rbac`), then drops the client
    /// (the context holds it, and so does its event recorder), which ends the fake API
    /// server's loop.
    async fn finish(self) {
        for seen in self.seen() {
            let (group, resource, verb) = rbac_request(&seen);
            let rules = [crate::rbac::RULES, crate::rbac::CLUSTER_RULES].concat();
            assert!(
                crate::rbac::permits(&rules, &group, &resource, verb),
                "{} {} needs {verb} on {group:?}/{resource}, which crate::rbac does not grant",
                seen.method,
                seen.path
            );
        }
        let Harness { ctx, server, .. } = self;
        drop(ctx);
        tokio::time::timeout(DEADLINE, server)
            .await
            .expect("the fake API server stops once the client is gone")
            .expect("the fake API server does not panic");
    }
}

// ---------------------------------------------------------------------------------------
// Objects and readings.

/// A cluster in plaintext (`tls: Disabled`): these tests are about scaling, membership
/// and backups; its certificates are tested against the real API server.
fn cluster(replicas: i32) -> PlaitCluster {
    let mut spec = PlaitClusterSpec::with_replicas(replicas);
    spec.security.tls = crate::crd::TlsMode::Disabled;
    let mut cluster = PlaitCluster::new(NAME, spec);
    cluster.metadata.namespace = Some(NS.into());
    cluster.metadata.uid = Some("uid-db".into());
    cluster.metadata.generation = Some(1);
    cluster.metadata.creation_timestamp = Some(Time(minutes_ago(600)));
    cluster
}

fn backup_spec(schedule: Option<&str>) -> BackupSpec {
    BackupSpec {
        destination: "s3://backups/db".into(),
        extra_destinations: Vec::new(),
        schedule: schedule.map(str::to_owned),
        full_every: 0,
        retention: RetentionSpec::default(),
        s3: None,
    }
}

fn stored_cluster(cluster: &PlaitCluster) -> (String, Value) {
    (cluster_path(), serde_json::to_value(cluster).expect("JSON"))
}

fn stored_secret(name: &str) -> (String, Value) {
    let secret = Secret {
        metadata: ObjectMeta { name: Some(name.into()), namespace: Some(NS.into()), ..ObjectMeta::default() },
        data: Some(BTreeMap::from([(
            "writer.key".to_owned(),
            ByteString(format!("{}\n", "ab".repeat(32)).into()),
        )])),
        ..Secret::default()
    };
    (format!("{SECRETS}/{name}"), serde_json::to_value(secret).expect("JSON"))
}

fn stored_stateful_set(replicas: i32) -> (String, Value) {
    let stateful_set = StatefulSet {
        metadata: ObjectMeta { name: Some(NAME.into()), namespace: Some(NS.into()), ..ObjectMeta::default() },
        spec: Some(StatefulSetSpec { replicas: Some(replicas), ..StatefulSetSpec::default() }),
        ..StatefulSet::default()
    };
    (stateful_set_path(), serde_json::to_value(stateful_set).expect("JSON"))
}

/// A cluster that exists: its writer key and StatefulSet are there.
fn existing(cluster: &PlaitCluster, stateful_set_replicas: i32) -> Vec<(String, Value)> {
    vec![
        stored_cluster(cluster),
        stored_secret(&format!("{NAME}-writer-key")),
        stored_stateful_set(stateful_set_replicas),
    ]
}

/// The status the cluster would have recorded after sending member generation
/// `generation` with the addresses of `replicas` replicas.
fn recorded_members(generation: i64, replicas: i32) -> PlaitClusterStatus {
    PlaitClusterStatus {
        replicas,
        members_generation: generation,
        member_addresses: addresses(replicas),
        ..PlaitClusterStatus::default()
    }
}

/// The `(type, reason)` of every event published.
fn events(seen: &[Seen]) -> Vec<(String, String)> {
    seen.iter()
        .filter(|s| s.method == Method::POST && s.path == EVENTS)
        .map(|s| {
            let field = |name: &str| s.body[name].as_str().unwrap_or_default().to_owned();
            (field("type"), field("reason"))
        })
        .collect()
}

fn has_event(seen: &[Seen], type_: &str, reason: &str) -> bool {
    events(seen).contains(&(type_.to_owned(), reason.to_owned()))
}

fn cluster_statuses(seen: &[Seen]) -> Vec<PlaitClusterStatus> {
    seen.iter()
        .filter(|s| s.is(&Method::PATCH, &cluster_status_path()))
        .map(|s| serde_json::from_value(s.body["status"].clone()).expect("a PlaitClusterStatus"))
        .collect()
}

/// The one status the pass wrote.
fn cluster_status(seen: &[Seen]) -> PlaitClusterStatus {
    let mut written = cluster_statuses(seen);
    assert_eq!(written.len(), 1, "one status write per pass");
    written.pop().expect("one")
}

fn backup_statuses(seen: &[Seen], name: &str) -> Vec<PlaitBackupStatus> {
    seen.iter()
        .filter(|s| s.is(&Method::PATCH, &format!("{BACKUPS}/{name}/status")))
        .map(|s| serde_json::from_value(s.body["status"].clone()).expect("a PlaitBackupStatus"))
        .collect()
}

fn condition<'a>(status: &'a PlaitClusterStatus, type_: &str) -> &'a Condition {
    status.conditions.iter().find(|c| c.type_ == type_).unwrap_or_else(|| panic!("no {type_} condition"))
}

/// The StatefulSet's replicas as last applied in `seen`.
fn applied_replicas(seen: &[Seen]) -> Option<i64> {
    seen.iter()
        .rev()
        .find(|s| s.is(&Method::PATCH, &stateful_set_path()))
        .map(|s| s.body["spec"]["replicas"].as_i64().expect("the applied StatefulSet sets replicas"))
}

/// Requests other than event publishing, as `(method, path)`.
fn requests(seen: &[Seen]) -> Vec<(Method, String)> {
    seen.iter().filter(|s| s.path != EVENTS).map(|s| (s.method.clone(), s.path.clone())).collect()
}

fn drains(calls: &[Call]) -> Vec<String> {
    calls
        .iter()
        .filter_map(|c| match c {
            Call::Drain(address) => Some(api_of(address)),
            _ => None,
        })
        .collect()
}

fn set_members(calls: &[Call]) -> Vec<(String, u64, Vec<String>)> {
    calls
        .iter()
        .filter_map(|c| match c {
            Call::SetMembers { address, generation, members } => {
                Some((api_of(address), *generation, members.clone()))
            }
            _ => None,
        })
        .collect()
}

// ---------------------------------------------------------------------------------------
// PlaitCluster.

/// A new cluster: the writer key Secret is created (POST, not apply, so it is never
/// rewritten), the ConfigMap, both Services, the PDB and the StatefulSet are applied
/// server-side as `plait-operator` with force, in that order, the StatefulSet with
/// `spec.replicas`; the status says Pending with Ready=False, and `Created` is published.
/// A second pass finds the Secret and creates no other.
#[tokio::test]
async fn new_cluster_creates_its_objects() {
    let h = Harness::start(vec![stored_cluster(&cluster(3))], FakeAdmin::default());
    let action = h.reconcile_cluster().await;
    let seen = h.seen();

    let secret = format!("{SECRETS}/{NAME}-writer-key");
    let looked = seen.iter().position(|s| s.is(&Method::GET, &secret)).expect("the Secret is looked up");
    let created = seen.iter().position(|s| s.is(&Method::POST, SECRETS)).expect("the Secret is created");
    assert!(looked < created);
    let key: Secret = serde_json::from_value(seen[created].body.clone()).expect("a Secret");
    assert_eq!(key.metadata.name.as_deref(), Some("db-writer-key"));
    let key = &key.data.expect("data")["writer.key"].0;
    assert_eq!(key.len(), 65, "64 hex characters and a newline");
    assert!(key[..64].iter().all(u8::is_ascii_hexdigit));

    let applies: Vec<&Seen> =
        seen.iter().filter(|s| s.method == Method::PATCH && !s.path.ends_with("/status")).collect();
    let applied_paths: Vec<&str> = applies.iter().map(|s| s.path.as_str()).collect();
    assert_eq!(applied_paths, owned_paths());
    for apply in &applies {
        assert_eq!(apply.query.get("fieldManager").map(String::as_str), Some("plait-operator"), "{apply:?}");
        assert_eq!(apply.query.get("force").map(String::as_str), Some("true"), "{apply:?}");
        assert_eq!(apply.content_type.as_deref(), Some("application/apply-patch+yaml"));
        assert_eq!(apply.body["metadata"]["ownerReferences"][0]["uid"], "uid-db");
    }
    assert_eq!(applied_replicas(&seen), Some(3));

    let status = cluster_status(&seen);
    assert_eq!(status.phase.as_deref(), Some("Pending"));
    assert_eq!(condition(&status, "Ready").status, "False");
    assert_eq!(status.replicas, 3);
    assert_eq!(status.member_addresses, addresses(3));
    assert!(has_event(&seen, "Normal", "WriterKeyCreated"));
    assert!(has_event(&seen, "Normal", "Created"));
    assert!(h.calls().is_empty(), "no StatefulSet yet: no replica to ask");
    assert_eq!(action, Action::requeue(CONVERGING_REQUEUE));

    let (from, _) = h.mark();
    h.reconcile_cluster().await;
    let again = &h.seen()[from..];
    assert!(again.iter().any(|s| s.is(&Method::GET, &secret)));
    assert!(!again.iter().any(|s| s.is(&Method::POST, SECRETS)), "the key is generated once");
    assert!(!has_event(again, "Normal", "Created"), "the StatefulSet exists now");
    h.finish().await;
}

/// A steady cluster: once its status records what the replicas report, a pass with
/// the same clock writes no status, sends no members and publishes nothing; it only
/// reads and re-applies the owned objects and reads the replicas' claims.
#[tokio::test]
async fn steady_cluster_is_a_no_op() {
    let admin = FakeAdmin::with((0..3).map(|o| (o, ready(1))));
    let h = Harness::start(existing(&cluster(3), 3), admin);
    let first = h.reconcile_cluster().await;
    let seen = h.seen();
    // The first pass records the members (a new generation, since none was recorded)
    // and the status the second one must find equal.
    let status = cluster_status(&seen);
    assert_eq!(status.phase.as_deref(), Some("Running"));
    assert_eq!(status.members_generation, 2);
    assert!(has_event(&seen, "Normal", "Ready"));
    assert_eq!(first, Action::requeue(STEADY_REQUEUE));

    let (from, calls_from) = h.mark();
    let second = h.reconcile_cluster().await;
    let seen = &h.seen()[from..];
    let calls = &h.calls()[calls_from..];
    assert!(cluster_statuses(seen).is_empty(), "an unchanged status is not written");
    assert!(set_members(calls).is_empty(), "every replica has the recorded generation");
    assert_eq!(calls, (0..3).map(|o| Call::Status(address(o))).collect::<Vec<_>>());
    assert!(events(seen).is_empty(), "nothing happened: {:?}", events(seen));
    let mut expected = vec![
        (Method::GET, cluster_path()),
        (Method::GET, format!("{SECRETS}/{NAME}-writer-key")),
        (Method::GET, stateful_set_path()),
        // The pods, for the revision each runs (a roll of the template).
        (Method::GET, format!("/api/v1/namespaces/{NS}/pods")),
    ];
    expected.extend(owned_paths().into_iter().map(|p| (Method::PATCH, p)));
    // Each replica's claim is read, to see whether it must grow; none is patched.
    expected.extend(
        (0..3).map(|o| {
            (Method::GET, format!("/api/v1/namespaces/{NS}/persistentvolumeclaims/data-{NAME}-{o}"))
        }),
    );
    expected.push((Method::GET, BACKUPS.to_owned()));
    assert_eq!(requests(seen), expected);
    assert_eq!(second, Action::requeue(STEADY_REQUEUE));
    // The cluster's gauges and the passes' durations are on /metrics.
    let metrics = h.ctx.metrics.render();
    for line in [
        "plait_operator_cluster_ready{namespace=\"ns\",cluster=\"db\"} 1",
        "plait_operator_cluster_ready_replicas{namespace=\"ns\",cluster=\"db\"} 3",
        "plait_operator_reconcile_duration_seconds_count{controller=\"cluster\"} 2",
    ] {
        assert!(metrics.lines().any(|l| l == line), "no {line:?} in\n{metrics}");
    }
    h.finish().await;
}

/// New member addresses (nothing recorded yet) take generation 1, sent to every ready
/// replica with all three addresses, and the status records them.
#[tokio::test]
async fn changed_addresses_go_to_every_replica() {
    let admin = FakeAdmin::with((0..3).map(|o| (o, ready(0))));
    let h = Harness::start(existing(&cluster(3), 3), admin);
    h.reconcile_cluster().await;
    let seen = h.seen();
    let sent = set_members(&h.calls());
    let expected: Vec<_> = (0..3).map(|o| (address(o), 1, addresses(3))).collect();
    assert_eq!(sent, expected);
    let status = cluster_status(&seen);
    assert_eq!((status.members_generation, status.member_addresses.clone()), (1, addresses(3)));
    assert_eq!(condition(&status, "MembershipConsistent").status, "True");
    assert!(has_event(&seen, "Normal", "MembersChanged"));
    h.finish().await;
}

/// Unchanged addresses at recorded generation 5: only the replica reporting generation 0
/// (restarted with a wiped data directory) is sent the member set, at generation 5.
#[tokio::test]
async fn a_wiped_replica_alone_is_sent_the_members() {
    let mut cluster = cluster(3);
    cluster.status = Some(recorded_members(5, 3));
    let admin = FakeAdmin::with([(0, ready(5)), (1, ready(0)), (2, ready(5))]);
    let h = Harness::start(existing(&cluster, 3), admin);
    h.reconcile_cluster().await;
    let seen = h.seen();
    assert_eq!(set_members(&h.calls()), vec![(address(1), 5, addresses(3))]);
    assert_eq!(cluster_status(&seen).members_generation, 5);
    assert!(!has_event(&seen, "Normal", "MembersChanged"), "the member set did not change");
    h.finish().await;
}

/// Scaling down 5 to 3 takes one step: only the highest ordinal (4) is drained, the
/// StatefulSet goes to 4, the remaining four replicas get the new member set, and
/// `Drained` is published.
#[tokio::test]
async fn scale_down_drains_the_highest_ordinal_first() {
    let admin = FakeAdmin::with((0..5).map(|o| (o, ready(0))));
    let h = Harness::start(existing(&cluster(3), 5), admin);
    h.reconcile_cluster().await;
    let seen = h.seen();
    let calls = h.calls();
    assert_eq!(drains(&calls), vec![address(4)]);
    assert_eq!(applied_replicas(&seen), Some(4));
    let expected: Vec<_> = (0..4).map(|o| (address(o), 1, addresses(4))).collect();
    assert_eq!(set_members(&calls), expected, "the leaving replica is not a member any more");
    assert!(has_event(&seen, "Normal", "Drained"));
    let status = cluster_status(&seen);
    assert_eq!((status.phase.as_deref(), status.replicas), (Some("Scaling"), 4));
    h.finish().await;
}

/// A failed drain keeps the StatefulSet at 5, reports Progressing=Draining and
/// Degraded=True, publishes a Warning `DrainFailed`, and retries with a growing backoff.
#[tokio::test]
async fn failed_drain_holds_the_replica() {
    let mut leaving = ready(0);
    leaving.drain = Err("entries held nowhere else".into());
    let admin = FakeAdmin::with((0..4).map(|o| (o, ready(0))).chain([(4, leaving)]));
    let h = Harness::start(existing(&cluster(3), 5), admin);
    let first = h.reconcile_cluster().await;
    let seen = h.seen();
    assert_eq!(drains(&h.calls()), vec![address(4)]);
    assert_eq!(applied_replicas(&seen), Some(5));
    let status = cluster_status(&seen);
    let progressing = condition(&status, "Progressing");
    assert_eq!((progressing.status.as_str(), progressing.reason.as_str()), ("True", "Draining"));
    assert!(progressing.message.contains("entries held nowhere else"), "{}", progressing.message);
    assert_eq!(condition(&status, "Degraded").status, "True");
    assert!(has_event(&seen, "Warning", "DrainFailed"));
    assert_eq!(first, Action::requeue(RETRY_MIN));

    let second = h.reconcile_cluster().await;
    assert_eq!(second, Action::requeue(RETRY_MIN * 2), "consecutive failed drains back off");
    h.finish().await;
}

/// An invalid spec (a schedule that is not cron) touches nothing: no Secret, Service or
/// StatefulSet; the status says Failed with Degraded=InvalidSpec and a Warning
/// `InvalidSpec` is published. A second pass neither repeats the event nor rewrites the
/// status, and waits longer.
#[tokio::test]
async fn invalid_spec_applies_nothing() {
    let mut cluster = cluster(3);
    cluster.spec.backup = Some(backup_spec(Some("not a cron")));
    let h = Harness::start(vec![stored_cluster(&cluster)], FakeAdmin::default());
    let first = h.reconcile_cluster().await;
    let seen = h.seen();
    assert_eq!(requests(&seen), vec![(Method::GET, cluster_path()), (Method::PATCH, cluster_status_path())]);
    let status = cluster_status(&seen);
    assert_eq!(status.phase.as_deref(), Some("Failed"));
    let degraded = condition(&status, "Degraded");
    assert_eq!((degraded.status.as_str(), degraded.reason.as_str()), ("True", "InvalidSpec"));
    assert!(degraded.message.contains("not a cron"), "{}", degraded.message);
    assert_eq!(events(&seen), vec![("Warning".to_owned(), "InvalidSpec".to_owned())]);
    assert!(h.calls().is_empty());
    assert_eq!(first, Action::requeue(RETRY_MIN));

    let (from, _) = h.mark();
    let second = h.reconcile_cluster().await;
    let seen = &h.seen()[from..];
    assert_eq!(requests(seen), vec![(Method::GET, cluster_path())]);
    assert!(events(seen).is_empty(), "the same problem is reported once");
    assert_eq!(second, Action::requeue(RETRY_MIN * 2), "a spec that stays invalid is looked at less often");
    h.finish().await;
}

/// A named writer key Secret that does not exist is an invalid spec: nothing is created
/// or applied, and the condition names the Secret.
#[tokio::test]
async fn missing_writer_key_secret_applies_nothing() {
    let mut cluster = cluster(3);
    cluster.spec.writer_key_secret = Some("shared-key".into());
    let h = Harness::start(vec![stored_cluster(&cluster)], FakeAdmin::default());
    h.reconcile_cluster().await;
    let seen = h.seen();
    assert_eq!(
        requests(&seen),
        vec![
            (Method::GET, cluster_path()),
            (Method::GET, format!("{SECRETS}/shared-key")),
            (Method::PATCH, cluster_status_path()),
        ]
    );
    let status = cluster_status(&seen);
    assert_eq!(status.phase.as_deref(), Some("Failed"));
    let degraded = condition(&status, "Degraded");
    assert_eq!((degraded.status.as_str(), degraded.reason.as_str()), ("True", "InvalidSpec"));
    assert!(degraded.message.contains("shared-key"), "{}", degraded.message);
    assert!(has_event(&seen, "Warning", "InvalidSpec"));
    h.finish().await;
}

/// An unreachable replica is listed as not ready with the probe's error, and makes the
/// cluster Degraded with MembershipConsistent=False.
#[tokio::test]
async fn unreachable_replica_degrades_the_cluster() {
    let mut cluster = cluster(3);
    cluster.status = Some(recorded_members(1, 3));
    let admin = FakeAdmin::with([(0, ready(1)), (1, ready(1)), (2, unreachable("db-2: connection refused"))]);
    let h = Harness::start(existing(&cluster, 3), admin);
    let action = h.reconcile_cluster().await;
    let seen = h.seen();
    let status = cluster_status(&seen);
    let member = status.members.iter().find(|m| m.name == "db-2").expect("db-2 is listed");
    assert!(!member.ready);
    assert_eq!(member.message, "db-2: connection refused");
    assert_eq!(status.ready_replicas, 2);
    assert_eq!(status.phase.as_deref(), Some("Degraded"));
    assert_eq!(condition(&status, "Degraded").status, "True");
    assert!(condition(&status, "Degraded").message.contains("connection refused"));
    assert_eq!(condition(&status, "MembershipConsistent").status, "False");
    assert!(set_members(&h.calls()).is_empty(), "the reachable replicas are current");
    assert_eq!(action, Action::requeue(CONVERGING_REQUEUE));
    h.finish().await;
}

/// A due schedule creates a `PlaitBackup` named after the time, labelled with its
/// cluster and as scheduled, owned but not controlled by the cluster; the status
/// records the run time.
#[tokio::test]
async fn due_schedule_creates_a_backup() {
    let mut cluster = cluster(3);
    cluster.spec.backup = Some(backup_spec(Some("*/5 * * * *")));
    cluster.metadata.creation_timestamp = Some(Time(minutes_ago(10)));
    cluster.status = Some(recorded_members(1, 3));
    let admin = FakeAdmin::with((0..3).map(|o| (o, ready(1))));
    let h = Harness::start(existing(&cluster, 3), admin);
    let action = h.reconcile_cluster().await;
    let seen = h.seen();

    // Listed whole: on-demand backups carry no label, they name their cluster in the spec.
    assert!(seen.iter().any(|s| s.is(&Method::GET, BACKUPS)), "the backups are listed");
    let created: Vec<&Seen> = seen.iter().filter(|s| s.is(&Method::POST, BACKUPS)).collect();
    assert_eq!(created.len(), 1);
    let backup: PlaitBackup = serde_json::from_value(created[0].body.clone()).expect("a PlaitBackup");
    assert_eq!(backup.metadata.name.as_deref(), Some("db-20261120120000"));
    let labels = backup.metadata.labels.clone().unwrap_or_default();
    assert_eq!(labels.get("plait.dev/cluster").map(String::as_str), Some("db"));
    assert_eq!(labels.get("plait.dev/scheduled").map(String::as_str), Some("true"));
    let owner = &backup.metadata.owner_references.expect("owned")[0];
    assert_eq!((owner.name.as_str(), owner.controller), ("db", Some(false)));
    assert_eq!(
        backup.spec,
        PlaitBackupSpec { cluster: "db".into(), kind: BackupKind::Full, logs: Vec::new(), destination: None }
    );

    let status = cluster_status(&seen);
    assert_eq!(status.last_schedule_time, Some(Time(now())));
    assert_eq!(condition(&status, "BackupReady").reason, "BackupInProgress");
    assert!(has_event(&seen, "Normal", "BackupScheduled"));
    // The next run is five minutes away: the steady requeue comes first.
    assert_eq!(action, Action::requeue(STEADY_REQUEUE));
    h.finish().await;
}

fn stored_backup(name: &str, created: Timestamp, scheduled: bool, phase: Option<&str>) -> (String, Value) {
    let mut backup = PlaitBackup::new(
        name,
        PlaitBackupSpec { cluster: NAME.into(), kind: BackupKind::Full, logs: Vec::new(), destination: None },
    );
    backup.metadata.namespace = Some(NS.into());
    backup.metadata.creation_timestamp = Some(Time(created));
    let mut labels = BTreeMap::from([("plait.dev/cluster".to_owned(), NAME.to_owned())]);
    if scheduled {
        labels.insert("plait.dev/scheduled".into(), "true".into());
    }
    backup.metadata.labels = Some(labels);
    backup.status = phase.map(|phase| PlaitBackupStatus {
        phase: Some(phase.into()),
        completed_at: (phase == "Completed").then_some(Time(created)),
        ..PlaitBackupStatus::default()
    });
    (format!("{BACKUPS}/{name}"), serde_json::to_value(backup).expect("JSON"))
}

/// Retention of scheduled records: with `records: 2` and three finished scheduled
/// backups, the oldest one is deleted, and nothing else (not an on-demand backup, however
/// old); the status names the newest completed one.
#[tokio::test]
async fn retention_deletes_the_oldest_scheduled_record() {
    let mut cluster = cluster(3);
    let mut spec = backup_spec(Some("*/5 * * * *"));
    spec.retention.records = 2;
    cluster.spec.backup = Some(spec);
    // The last run was now: the next one is not due.
    cluster.status =
        Some(PlaitClusterStatus { last_schedule_time: Some(Time(now())), ..recorded_members(1, 3) });
    let mut objects = existing(&cluster, 3);
    objects.extend([
        stored_backup("db-manual", minutes_ago(900), false, Some("Completed")),
        stored_backup("db-old", minutes_ago(300), true, Some("Completed")),
        stored_backup("db-older", minutes_ago(400), true, Some("Failed")),
        stored_backup("db-new", minutes_ago(200), true, Some("Completed")),
    ]);
    let admin = FakeAdmin::with((0..3).map(|o| (o, ready(1))));
    let h = Harness::start(objects, admin);
    h.reconcile_cluster().await;
    let seen = h.seen();
    let deleted: Vec<&str> =
        seen.iter().filter(|s| s.method == Method::DELETE).map(|s| s.path.as_str()).collect();
    assert_eq!(deleted, vec![format!("{BACKUPS}/db-older")]);
    assert!(!seen.iter().any(|s| s.is(&Method::POST, BACKUPS)), "no run is due");
    let status = cluster_status(&seen);
    assert_eq!(status.last_backup.as_deref(), Some("db-new"));
    assert_eq!(status.last_backup_time, Some(Time(minutes_ago(200))));
    h.finish().await;
}

// ---------------------------------------------------------------------------------------
// PlaitBackup.

const BACKUP: &str = "db-manual";

/// A cluster with backups configured, and an on-demand backup of it with `status`.
fn backup_world(status: Option<PlaitBackupStatus>) -> Vec<(String, Value)> {
    let mut cluster = cluster(3);
    cluster.spec.backup = Some(backup_spec(None));
    cluster.status = Some(recorded_members(1, 3));
    let (path, mut backup) = stored_backup(BACKUP, minutes_ago(1), false, None);
    backup["status"] = serde_json::to_value(status).expect("JSON");
    vec![stored_cluster(&cluster), (path, backup)]
}

/// Replica 0 answers `StartBackup` with `start` and `GetBackupJob` with `job`.
fn backup_admin(start: Result<BackupJob, String>, job: Result<Option<BackupJob>, String>) -> FakeAdmin {
    let mut first = ready(1);
    first.start_backup = start;
    first.backup_job = job;
    FakeAdmin::with([(0, first), (1, ready(1)), (2, ready(1))])
}

/// A job just started: nothing written yet of two logs.
fn started() -> Result<BackupJob, String> {
    Ok(BackupJob::Running { logs_done: 0, logs_total: 2, bytes_written: 0 })
}

fn outcome() -> BackupOutcome {
    let object = |name: &str, bytes: u64, seq: u64| BackupObject {
        name: name.into(),
        kind: "full".into(),
        key: format!("db/{name}/full-{seq}"),
        bytes,
        seq,
        state_root: "c0ffee".into(),
    };
    BackupOutcome {
        backup_id: "b-1".into(),
        objects: vec![object("orders", 1000, 7), object("users", 24, 3)],
    }
}

/// The job of the first attempt (the stored backup has no uid: its name stands in).
const JOB: &str = "db-manual-1";

/// A backup whose first attempt runs as [`JOB`] on db-0, started `age` ago.
fn running(age: jiff::SignedDuration) -> PlaitBackupStatus {
    PlaitBackupStatus {
        phase: Some("Running".into()),
        attempts: 1,
        replica: Some("db-0".into()),
        job: Some(JOB.into()),
        location: Some("s3://backups/db".into()),
        started_at: Some(Time(now() - age)),
        ..PlaitBackupStatus::default()
    }
}

/// A new backup starts a job on the first ready replica with the cluster's destination
/// and full-chain retention, and returns at once: the job (named after the backup and
/// the attempt) and its replica are recorded before the job is started, then its
/// progress; `BackupStarted` is published and the pass polls again soon.
#[tokio::test]
async fn backup_starts_a_job_and_records_it_first() {
    let h = Harness::start(backup_world(None), backup_admin(started(), Ok(None)));
    let action = h.reconcile_backup(BACKUP).await;
    let seen = h.seen();
    let request =
        BackupRequest { destination: "default".into(), logs: Vec::new(), delta: false, retain_full: 7 };
    assert_eq!(h.calls(), vec![Call::Status(address(0)), Call::StartBackup(admin(0), JOB.into(), request)]);
    let written = backup_statuses(&seen, BACKUP);
    let recorded = &written[0];
    assert_eq!(
        (recorded.phase.as_deref(), recorded.replica.as_deref(), recorded.job.as_deref(), recorded.attempts),
        (Some("Running"), Some("db-0"), Some(JOB), 1)
    );
    assert_eq!(recorded.started_at, Some(Time(now())));
    assert_eq!(written[1].progress.as_deref(), Some("0/2 logs"));
    assert_eq!(written.len(), 2);
    assert!(has_event(&seen, "Normal", "BackupStarted"));
    assert_eq!(action, Action::requeue(crate::backup::poll_after(Duration::ZERO)));
    h.finish().await;
}

/// A running job is polled on the replica recorded for it (no replica is probed, no
/// new job started); its progress is recorded, and the next poll comes after a tenth of
/// its age.
#[tokio::test]
async fn running_job_is_polled_and_its_progress_recorded() {
    let world = backup_world(Some(running(jiff::SignedDuration::from_secs(100))));
    let progress = BackupJob::Running { logs_done: 1, logs_total: 2, bytes_written: 1000 };
    let h = Harness::start(world, backup_admin(started(), Ok(Some(progress))));
    let action = h.reconcile_backup(BACKUP).await;
    assert_eq!(h.calls(), vec![Call::BackupJob(admin(0), JOB.into())]);
    let written = backup_statuses(&h.seen(), BACKUP);
    assert_eq!(written.len(), 1);
    assert_eq!(
        (written[0].phase.as_deref(), written[0].progress.as_deref()),
        (Some("Running"), Some("1/2 logs"))
    );
    assert_eq!(action, Action::requeue(Duration::from_secs(10)));
    h.finish().await;
}

/// A job that completed is recorded as Completed with the size and each log's
/// checkpoint; `BackupCompleted` is published and nothing is requeued.
#[tokio::test]
async fn completed_job_completes_the_backup() {
    let world = backup_world(Some(running(jiff::SignedDuration::from_secs(30))));
    let h = Harness::start(world, backup_admin(started(), Ok(Some(BackupJob::Completed(outcome())))));
    let action = h.reconcile_backup(BACKUP).await;
    let seen = h.seen();
    assert_eq!(h.calls(), vec![Call::BackupJob(admin(0), JOB.into())]);
    let written = backup_statuses(&seen, BACKUP);
    let done = written.last().expect("a status write");
    assert_eq!(done.phase.as_deref(), Some("Completed"));
    assert_eq!((done.attempts, done.size_bytes, done.backup_id.as_deref()), (1, 1024, Some("b-1")));
    assert_eq!(
        done.checkpoints[0],
        BackupCheckpoint {
            log: "orders".into(),
            kind: "full".into(),
            seq: 7,
            state_root: "c0ffee".into(),
            bytes: 1000,
            key: "db/orders/full-7".into(),
        }
    );
    assert_eq!(done.checkpoints.len(), 2);
    assert_eq!(done.completed_at, Some(Time(now())));
    assert_eq!(done.progress, None);
    assert!(has_event(&seen, "Normal", "BackupCompleted"));
    assert_eq!(action, Action::await_change());
    h.finish().await;
}

/// A job that failed on the replica goes back to Pending with the replica's error, one
/// attempt counted, a Warning `BackupAttemptFailed`, and a retry after backoff.
#[tokio::test]
async fn failed_job_is_a_failed_attempt() {
    let world = backup_world(Some(running(jiff::SignedDuration::from_secs(30))));
    let failed = BackupJob::Failed("permission denied: bucket refuses".into());
    let h = Harness::start(world, backup_admin(started(), Ok(Some(failed))));
    let action = h.reconcile_backup(BACKUP).await;
    let seen = h.seen();
    let last = backup_statuses(&seen, BACKUP).pop().expect("a status write");
    assert_eq!((last.phase.as_deref(), last.attempts), (Some("Pending"), 1));
    assert!(last.error.as_deref().is_some_and(|e| e.contains("bucket refuses")), "{last:?}");
    assert!(has_event(&seen, "Warning", "BackupAttemptFailed"));
    assert_eq!(action, Action::requeue(backoff(1)));
    h.finish().await;
}

/// A job its replica no longer knows (the replica restarted) is a failed attempt, with
/// the reason; the next attempt is a new job.
#[tokio::test]
async fn lost_job_is_a_failed_attempt() {
    let world = backup_world(Some(running(jiff::SignedDuration::from_secs(30))));
    let h = Harness::start(world, backup_admin(started(), Ok(None)));
    let action = h.reconcile_backup(BACKUP).await;
    let last = backup_statuses(&h.seen(), BACKUP).pop().expect("a status write");
    assert_eq!((last.phase.as_deref(), last.attempts), (Some("Pending"), 1));
    assert!(last.error.as_deref().is_some_and(|e| e.contains("no longer knows backup job")), "{last:?}");
    assert_eq!(action, Action::requeue(backoff(1)));
    h.finish().await;
}

/// A replica that does not answer a poll is waited for: the pass notes why in the
/// status (still Running, no attempt counted) and polls again; once it has not answered
/// for `UNPOLLED_MAX`, the attempt fails.
#[tokio::test]
async fn unanswered_polls_wait_then_fail_the_attempt() {
    let world = backup_world(Some(running(jiff::SignedDuration::from_secs(30))));
    let h = Harness::start(world, backup_admin(started(), Err("connection refused".into())));
    let action = h.reconcile_backup(BACKUP).await;
    let waiting = backup_statuses(&h.seen(), BACKUP).pop().expect("a status write");
    assert_eq!((waiting.phase.as_deref(), waiting.attempts), (Some("Running"), 1));
    assert!(waiting.error.as_deref().is_some_and(|e| e.contains("waiting")), "{waiting:?}");
    assert_eq!(action, Action::requeue(Duration::from_secs(15)));

    // The first failure was UNPOLLED_MAX ago.
    let long_ago = now() - jiff::SignedDuration::try_from(crate::backup::UNPOLLED_MAX).unwrap();
    h.ctx.polled(JOB);
    assert_eq!(h.ctx.unpolled_since(JOB, long_ago), long_ago);
    let action = h.reconcile_backup(BACKUP).await;
    let last = backup_statuses(&h.seen(), BACKUP).pop().expect("a status write");
    assert_eq!((last.phase.as_deref(), last.attempts), (Some("Pending"), 1));
    assert!(last.error.as_deref().is_some_and(|e| e.contains("cannot reach db-0")), "{last:?}");
    assert_eq!(action, Action::requeue(backoff(1)));
    h.finish().await;
}

/// A job that cannot be started goes back to Pending with the error and one attempt
/// counted, a Warning `BackupAttemptFailed` is published, and the backup is retried
/// after backoff.
#[tokio::test]
async fn failed_backup_attempt_is_retried() {
    let h = Harness::start(backup_world(None), backup_admin(Err("bucket unreachable".into()), Ok(None)));
    let action = h.reconcile_backup(BACKUP).await;
    let seen = h.seen();
    let written = backup_statuses(&seen, BACKUP);
    let phases: Vec<Option<&str>> = written.iter().map(|s| s.phase.as_deref()).collect();
    assert_eq!(phases, [Some("Running"), Some("Pending")]);
    let last = &written[1];
    assert_eq!(last.attempts, 1);
    assert!(last.error.as_deref().is_some_and(|e| e.contains("bucket unreachable")), "{last:?}");
    assert!(has_event(&seen, "Warning", "BackupAttemptFailed"));
    assert_eq!(action, Action::requeue(backoff(1)));
    let retry_at = last.next_attempt_at.as_ref().expect("the next attempt's time is recorded").0;
    assert_eq!(retry_at, now() + jiff::SignedDuration::try_from(backoff(1)).unwrap());
    h.finish().await;
}

/// The status write after a failed attempt wakes the controller at once; that wake-up
/// must not start the next attempt early. Before `nextAttemptAt` nothing is called and
/// the pass only requeues for the time left.
#[tokio::test]
async fn backoff_holds_across_wake_ups() {
    let before = PlaitBackupStatus {
        phase: Some("Pending".into()),
        attempts: 2,
        error: Some("bucket unreachable".into()),
        next_attempt_at: Some(Time(now() + jiff::SignedDuration::from_secs(3))),
        ..PlaitBackupStatus::default()
    };
    let h =
        Harness::start(backup_world(Some(before)), backup_admin(Err("bucket unreachable".into()), Ok(None)));
    let action = h.reconcile_backup(BACKUP).await;
    assert_eq!(requests(&h.seen()), vec![(Method::GET, format!("{BACKUPS}/{BACKUP}"))]);
    assert!(h.calls().is_empty(), "no replica is called before the backoff ends");
    assert_eq!(action, Action::requeue(Duration::from_secs(3)));
    h.finish().await;
}

/// The last allowed attempt failing marks the backup Failed for good: `BackupFailed`
/// is published and nothing is requeued.
#[tokio::test]
async fn last_failed_attempt_fails_the_backup() {
    let before = PlaitBackupStatus {
        phase: Some("Pending".into()),
        attempts: ATTEMPTS_MAX - 1,
        error: Some("bucket unreachable".into()),
        ..PlaitBackupStatus::default()
    };
    let h =
        Harness::start(backup_world(Some(before)), backup_admin(Err("bucket unreachable".into()), Ok(None)));
    let action = h.reconcile_backup(BACKUP).await;
    let seen = h.seen();
    let last = backup_statuses(&seen, BACKUP).pop().expect("a status write");
    assert_eq!((last.phase.as_deref(), last.attempts), (Some("Failed"), ATTEMPTS_MAX));
    assert!(has_event(&seen, "Warning", "BackupFailed"));
    assert!(!has_event(&seen, "Warning", "BackupAttemptFailed"));
    assert_eq!(action, Action::await_change());
    h.finish().await;
}

/// A backup that names one of the cluster's extra destinations is asked for by that
/// name, without retention (which applies to the cluster's own destination only), and
/// records that destination's URL as its location.
#[tokio::test]
async fn backup_to_an_extra_destination_names_it() {
    let mut world = backup_world(None);
    let mut cluster: PlaitCluster = serde_json::from_value(world[0].1.clone()).expect("a PlaitCluster");
    let backup = cluster.spec.backup.as_mut().expect("backups configured");
    backup.extra_destinations =
        vec![crate::crd::NamedDestination { name: "offsite".into(), url: "s3://far/db".into() }];
    world[0] = stored_cluster(&cluster);
    world[1].1["spec"]["destination"] = json!("offsite");
    let h = Harness::start(world, backup_admin(started(), Ok(None)));
    h.reconcile_backup(BACKUP).await;
    let request =
        BackupRequest { destination: "offsite".into(), logs: Vec::new(), delta: false, retain_full: 0 };
    assert_eq!(h.calls(), vec![Call::Status(address(0)), Call::StartBackup(admin(0), JOB.into(), request)]);
    let written = backup_statuses(&h.seen(), BACKUP);
    assert_eq!(written[0].location.as_deref(), Some("s3://far/db"));
    h.finish().await;
}

/// A backup that names a destination the cluster does not have fails for good at once,
/// saying which names there are, and no replica is asked to back up anywhere.
#[tokio::test]
async fn backup_to_an_unknown_destination_fails() {
    let mut world = backup_world(None);
    world[1].1["spec"]["destination"] = json!("elsewhere");
    let h = Harness::start(world, backup_admin(started(), Ok(None)));
    let action = h.reconcile_backup(BACKUP).await;
    assert!(h.calls().is_empty(), "{:?}", h.calls());
    let last = backup_statuses(&h.seen(), BACKUP).pop().expect("a status write");
    assert_eq!((last.phase.as_deref(), last.attempts), (Some("Failed"), ATTEMPTS_MAX));
    let error = last.error.unwrap_or_default();
    assert!(
        error.contains("no backup destination named \"elsewhere\"") && error.contains("default"),
        "{error}"
    );
    assert_eq!(action, Action::await_change());
    h.finish().await;
}

/// A completed backup is never run again: the pass reads it fresh and stops there.
#[tokio::test]
async fn completed_backup_is_left_alone() {
    let before =
        PlaitBackupStatus { phase: Some("Completed".into()), attempts: 1, ..PlaitBackupStatus::default() };
    let h = Harness::start(backup_world(Some(before)), backup_admin(started(), Ok(None)));
    let action = h.reconcile_backup(BACKUP).await;
    assert_eq!(requests(&h.seen()), vec![(Method::GET, format!("{BACKUPS}/{BACKUP}"))]);
    assert!(events(&h.seen()).is_empty());
    assert!(h.calls().is_empty());
    assert_eq!(action, Action::await_change());
    h.finish().await;
}

/// `plait.dev/paused: "true"` stops reconciling: the pass only reads the cluster and
/// writes a `Paused` condition (once, with an event), calls no replica and applies
/// nothing; removing the annotation resumes, and `Paused` turns False.
#[tokio::test]
async fn paused_cluster_is_left_alone_until_resumed() {
    let admin = FakeAdmin::with((0..3).map(|o| (o, ready(1))));
    let mut paused = cluster(3);
    paused.metadata.annotations = Some(BTreeMap::from([("plait.dev/paused".to_owned(), "true".to_owned())]));
    let h = Harness::start(existing(&paused, 3), admin);
    let first = h.reconcile_cluster().await;
    let seen = h.seen();
    assert_eq!(requests(&seen), vec![(Method::GET, cluster_path()), (Method::PATCH, cluster_status_path())]);
    let status = cluster_status(&seen);
    let condition_paused = condition(&status, "Paused");
    assert_eq!(
        (condition_paused.status.as_str(), condition_paused.reason.as_str()),
        ("True", "PausedByAnnotation")
    );
    assert!(has_event(&seen, "Normal", "Paused"));
    assert!(h.calls().is_empty(), "no replica is called while paused");
    assert_eq!(first, Action::await_change());

    let (from, _) = h.mark();
    h.reconcile_cluster().await;
    let seen = &h.seen()[from..];
    assert_eq!(requests(seen), vec![(Method::GET, cluster_path())], "still paused: nothing written");
    assert!(events(seen).is_empty());

    // Resumed.
    h.store.lock().unwrap().objects.get_mut(&cluster_path()).unwrap()["metadata"]["annotations"] = json!({});
    let (from, _) = h.mark();
    h.reconcile_cluster().await;
    let seen = &h.seen()[from..];
    assert!(seen.iter().any(|s| s.is(&Method::PATCH, &stateful_set_path())), "reconciling again");
    let status = cluster_status(seen);
    assert_eq!(condition(&status, "Paused").status, "False");
    assert_eq!(status.phase.as_deref(), Some("Running"));
    h.finish().await;
}

/// A replica whose pod is gone for good cannot be drained; the `plait.dev/skip-drain`
/// annotation naming it removes it without a drain call, with a Warning `DrainSkipped`
/// saying what may be lost. Other pods named there change nothing.
#[tokio::test]
async fn skip_drain_annotation_removes_a_lost_replica() {
    let admin = FakeAdmin::with((0..4).map(|o| (o, ready(0))).chain([(4, unreachable("no route to host"))]));
    let mut lost = cluster(3);
    lost.metadata.annotations =
        Some(BTreeMap::from([("plait.dev/skip-drain".to_owned(), format!("{NAME}-9, {NAME}-4"))]));
    let h = Harness::start(existing(&lost, 5), admin);
    h.reconcile_cluster().await;
    let seen = h.seen();
    assert!(drains(&h.calls()).is_empty(), "no drain is tried");
    assert_eq!(applied_replicas(&seen), Some(4));
    assert!(has_event(&seen, "Warning", "DrainSkipped"));
    // The next ordinal is not named: it is drained as usual.
    let (from, calls_from) = h.mark();
    h.store.lock().unwrap().objects.insert(stateful_set_path(), stored_stateful_set(4).1);
    h.reconcile_cluster().await;
    assert_eq!(drains(&h.calls()[calls_from..]), vec![address(3)]);
    assert!(!has_event(&h.seen()[from..], "Warning", "DrainSkipped"));
    h.finish().await;
}

/// A pod of the cluster's StatefulSet at template revision `revision`.
fn stored_pod(ordinal: i32, revision: &str) -> (String, Value) {
    let pod = json!({
        "apiVersion": "v1",
        "kind": "Pod",
        "metadata": {
            "name": format!("{NAME}-{ordinal}"),
            "namespace": NS,
            "labels": {
                "app.kubernetes.io/name": "plaitd",
                "app.kubernetes.io/instance": NAME,
                "controller-revision-hash": revision,
            },
        },
        "status": { "phase": "Running", "conditions": [{ "type": "Ready", "status": "True" }] },
    });
    (format!("/api/v1/namespaces/{NS}/pods/{NAME}-{ordinal}"), pod)
}

/// The partition of the StatefulSet as last applied in `seen`.
fn applied_partition(seen: &[Seen]) -> Option<i64> {
    seen.iter()
        .rev()
        .find(|s| s.is(&Method::PATCH, &stateful_set_path()))
        .and_then(|s| s.body["spec"]["updateStrategy"]["rollingUpdate"]["partition"].as_i64())
}

/// An image change rolls one replica at a time, highest ordinal first, each only once
/// the one before it runs the new template and is caught up: the operator holds every
/// pod back when the template changes, releases replica 2 once the StatefulSet controller
/// has a revision for it, holds while replica 2 catches up, then releases replica 1.
/// A cluster whose StatefulSet was made before its image was recorded keeps the image
/// its replicas run, whatever the operator's default, and records it.
#[tokio::test]
async fn an_image_change_rolls_one_caught_up_replica_at_a_time() {
    let admin = FakeAdmin::with((0..3).map(|o| (o, ready(1))));
    let mut objects = existing(&cluster(3), 3);
    let (path, mut set) = stored_stateful_set(3);
    set["spec"]["template"] =
        json!({ "spec": { "containers": [{ "name": "plaitd", "image": "plait/plaitd:old" }] } });
    objects.push((path, set));
    objects.extend((0..3).map(|o| stored_pod(o, "r1")));
    let h = Harness::start(objects, admin);
    let set_status = |h: &Harness, revision: &str| {
        let mut store = h.store.lock().unwrap();
        let set = store.objects.get_mut(&stateful_set_path()).unwrap();
        set["status"] = json!({ "observedGeneration": 1, "replicas": 3, "updateRevision": revision });
    };

    // Recorded from what runs; the template gains its hash and this operator's shape: a
    // changed template, every pod held back.
    h.reconcile_cluster().await;
    assert_eq!(applied_partition(&h.seen()), Some(3));
    assert!(has_event(&h.seen(), "Normal", "RollingUpdate"), "{:?}", events(&h.seen()));
    let status = cluster_status(&h.seen());
    assert_eq!(status.image.as_deref(), Some("plait/plaitd:old"), "not the operator's default");
    // The controller reports the same revision every pod runs: nothing to roll.
    set_status(&h, "r1");
    let (from, _) = h.mark();
    h.reconcile_cluster().await;
    assert_eq!(applied_partition(&h.seen()[from..]), Some(0));
    assert!(has_event(&h.seen()[from..], "Normal", "RolloutComplete"));
    let status = cluster_status(&h.seen()[from..]);
    assert_eq!(condition(&status, "Progressing").reason, "Reconciled");

    // A new image: every pod is held back until the controller has the new revision.
    {
        let mut store = h.store.lock().unwrap();
        let stored = store.objects.get_mut(&cluster_path()).unwrap();
        stored["spec"]["image"] = json!("plait/plaitd:new");
    }
    let (from, _) = h.mark();
    h.reconcile_cluster().await;
    let seen = &h.seen()[from..];
    assert_eq!(applied_partition(seen), Some(3));
    let status = cluster_status(seen);
    assert_eq!(status.image.as_deref(), Some("plait/plaitd:new"));
    assert_eq!(condition(&status, "Progressing").reason, "RollingUpdate");

    // The controller has it: the highest replica goes first.
    set_status(&h, "r2");
    let (from, _) = h.mark();
    h.reconcile_cluster().await;
    let seen = &h.seen()[from..];
    assert_eq!(applied_partition(seen), Some(2));
    assert!(has_event(seen, "Normal", "UpdatingReplica"));

    // Replica 2 runs the new template but is catching up: nothing else moves.
    {
        let mut store = h.store.lock().unwrap();
        let (path, pod) = stored_pod(2, "r2");
        store.objects.insert(path, pod);
    }
    // (Edited in place: the replica keeps the member generation it was sent.)
    let set_not_ready = |h: &Harness, why: Option<&str>| {
        let mut replicas = h.admin.replicas.lock().unwrap();
        let replica = replicas.get_mut(&address(2)).unwrap();
        replica.status.as_mut().unwrap().not_ready = why.map(str::to_owned);
    };
    set_not_ready(&h, Some("catching up"));
    set_status(&h, "r2");
    let (from, _) = h.mark();
    h.reconcile_cluster().await;
    let seen = &h.seen()[from..];
    assert_eq!(applied_partition(seen), Some(2));
    let status = cluster_status(seen);
    let progressing = condition(&status, "Progressing");
    assert!(progressing.message.contains("waiting for replica 2 to catch up"), "{progressing:?}");
    assert_eq!(status.updated_replicas, Some(1));

    // Caught up: replica 1 is next.
    set_not_ready(&h, None);
    set_status(&h, "r2");
    let (from, _) = h.mark();
    h.reconcile_cluster().await;
    assert_eq!(applied_partition(&h.seen()[from..]), Some(1));

    // Every pod at the new revision: the roll is over, the partition back at 0.
    {
        let mut store = h.store.lock().unwrap();
        for o in 0..3 {
            let (path, pod) = stored_pod(o, "r2");
            store.objects.insert(path, pod);
        }
    }
    // (The fake store's apply replaces the whole object, status too.)
    set_status(&h, "r2");
    let (from, _) = h.mark();
    h.reconcile_cluster().await;
    let seen = &h.seen()[from..];
    assert_eq!(applied_partition(seen), Some(0));
    let status = cluster_status(seen);
    assert_eq!(condition(&status, "Progressing").reason, "Reconciled");
    assert_eq!(status.updated_replicas, None);
    h.finish().await;
}
