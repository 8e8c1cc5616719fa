//! Replication with real processes over links that break: every replica ends with the
//! same heads and views, and no acknowledged write goes missing.

use std::collections::BTreeMap;
use std::sync::{Arc, Mutex};
use std::time::Duration;

use plait_core::{EntryDraft, LogId, Op, WriterKey};
use plait_proto::pb;
use plait_tests::cluster::{Cluster, channel, converged};
use rand::SeedableRng;

const CONVERGE: Duration = Duration::from_secs(90);

async fn data(endpoint: &str) -> pb::data_client::DataClient<tonic::transport::Channel> {
    pb::data_client::DataClient::new(channel(endpoint).await.unwrap())
}

/// Waits until the replica at `endpoint` hosts all three logs.
async fn hosts_logs(endpoint: String) {
    plait_tests::wait_until(CONVERGE, "a replica to host the logs", || {
        let e = endpoint.clone();
        async move { plait_tests::cluster::state(&e, &[]).await.is_ok_and(|s| s.len() == 3) }
    })
    .await
    .unwrap();
}

/// Creates a kv, a feed and a graph log on replica 0 and waits until every replica
/// hosts them (logs created on one replica appear on all).
async fn create_logs(cluster: &Cluster) {
    let mut logs = pb::logs_client::LogsClient::new(channel(&cluster.endpoint(0)).await.unwrap());
    for (name, t) in [("kv", pb::LogType::Kv), ("feed", pb::LogType::Feed), ("graph", pb::LogType::Graph)] {
        logs.create_log(pb::CreateLogRequest { name: name.into(), r#type: t as i32, ..Default::default() })
            .await
            .unwrap();
    }
    let all = endpoints(cluster);
    plait_tests::wait_until(CONVERGE, "the logs to reach every replica", || {
        let all = all.clone();
        async move {
            for e in &all {
                if !plait_tests::cluster::state(e, &[]).await.is_ok_and(|s| s.len() == 3) {
                    return false;
                }
            }
            true
        }
    })
    .await
    .unwrap();
}

fn routed(log: &str, op: pb::op::Op) -> pb::RoutedOp {
    pb::RoutedOp { log: log.into(), op: Some(pb::Op { op: Some(op) }) }
}

/// Acknowledged kv writes: key → value.
type Acked = Arc<Mutex<BTreeMap<Vec<u8>, Vec<u8>>>>;

/// Writes `n` batches through `endpoint`: a unique kv key, a contended kv key, a feed
/// item and a graph edge per batch. Records what was acknowledged; stops quietly at the
/// first error (the replica may be cut off or killed: unacknowledged is fine).
async fn write_load(endpoint: String, tag: String, n: usize, acked: Acked) {
    let Ok(ch) = channel(&endpoint).await else { return };
    let mut data = pb::data_client::DataClient::new(ch);
    for i in 0..n {
        let key = format!("{tag}-{i}").into_bytes();
        let ops = vec![
            routed("kv", pb::op::Op::Put(pb::KvPut { key: key.clone(), value: key.clone() })),
            routed("kv", pb::op::Op::Put(pb::KvPut { key: b"contended".to_vec(), value: key.clone() })),
            routed("feed", pb::op::Op::Append(pb::FeedAppend { value: key.clone() })),
            routed(
                "graph",
                pb::op::Op::Link(pb::GraphLink {
                    src: b"hub".to_vec(),
                    label: "to".into(),
                    dst: key.clone(),
                    props: vec![],
                }),
            ),
        ];
        let mut request = tonic::Request::new(pb::WriteRequest { ops, concern: None });
        request.set_timeout(Duration::from_secs(5));
        match data.write(request).await {
            Ok(_) => {
                acked.lock().unwrap().insert(key.clone(), key);
            }
            Err(_) => return,
        }
    }
}

fn endpoints(cluster: &Cluster) -> Vec<String> {
    (0..cluster.nodes.len()).map(|i| cluster.endpoint(i)).collect()
}

/// Every acknowledged key is in the converged kv view.
fn assert_acked_present(state: &BTreeMap<String, plait_tests::cluster::LogState>, acked: &Acked) {
    let rows: BTreeMap<_, _> = state["kv"].rows.iter().cloned().collect();
    for (key, value) in acked.lock().unwrap().iter() {
        assert_eq!(
            rows.get(key),
            Some(value),
            "acknowledged write {} is missing",
            String::from_utf8_lossy(key)
        );
    }
}

async fn assert_clean(cluster: &mut Cluster) {
    for i in 0..cluster.nodes.len() {
        cluster.nodes[i].terminate().unwrap();
        let (clean, report) = plait_tests::check(&cluster.data_dir(i)).unwrap();
        assert!(clean, "replica {i}: {report}");
    }
}

async fn run_writers(cluster: &Cluster, per_node: usize, acked: &Acked) {
    let tasks: Vec<_> = (0..cluster.nodes.len())
        .map(|i| tokio::spawn(write_load(cluster.endpoint(i), format!("n{i}"), per_node, acked.clone())))
        .collect();
    for t in tasks {
        t.await.unwrap();
    }
}

/// Three replicas with writers on every one converge; logs created on one appear on all.
#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn three_replicas_converge_under_concurrent_writes() {
    let mut cluster = Cluster::start(3, &[]).await.unwrap();
    create_logs(&cluster).await;
    let acked = Acked::default();
    run_writers(&cluster, 150, &acked).await;
    let state = converged(&endpoints(&cluster), &[b"hub"], CONVERGE).await.unwrap();
    assert_eq!(state.len(), 3, "every log reached every replica");
    assert_eq!(acked.lock().unwrap().len(), 450);
    assert_acked_present(&state, &acked);
    assert_eq!(state["feed"].rows.len(), 450);
    // Each replica took the writes in its own order; the digests of the sets agree.
    let digests = all_digests(&cluster).await;
    assert_eq!(digests[0].len(), 3);
    assert!(digests[0].values().all(|d| d.len() == 32), "{digests:?}");
    assert!(digests.iter().all(|d| *d == digests[0]), "{digests:?}");
    assert_clean(&mut cluster).await;
}

/// Every replica's log digests (`LogInfo.digest`), by log name.
async fn all_digests(cluster: &Cluster) -> Vec<BTreeMap<String, Vec<u8>>> {
    let mut out = Vec::new();
    for e in endpoints(cluster) {
        let mut logs = pb::logs_client::LogsClient::new(channel(&e).await.unwrap());
        let listed = logs.list_logs(pb::ListLogsRequest {}).await.unwrap().into_inner().logs;
        out.push(listed.into_iter().map(|l| (l.name, l.digest)).collect());
    }
    out
}

/// A replica cut off from the others keeps taking writes; after healing, all converge.
#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn partitions_heal_and_converge() {
    let mut cluster = Cluster::start(3, &[]).await.unwrap();
    create_logs(&cluster).await;
    converged(&endpoints(&cluster), &[b"hub"], CONVERGE).await.unwrap();
    cluster.isolate(2);
    let acked = Acked::default();
    run_writers(&cluster, 100, &acked).await;
    // While cut off, replica 2 has only its own writes.
    let isolated = plait_tests::cluster::state(&cluster.endpoint(2), &[]).await.unwrap();
    assert_eq!(isolated["feed"].rows.len(), 100, "the partition held");
    cluster.heal_all();
    let state = converged(&endpoints(&cluster), &[b"hub"], CONVERGE).await.unwrap();
    assert_acked_present(&state, &acked);
    assert_eq!(state["feed"].rows.len(), 300);
    assert_clean(&mut cluster).await;
}

/// Links that lose every reply, and links that are slow, still end in convergence once
/// healed; writes during the faults are not lost.
#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn one_way_loss_and_slow_links() {
    let mut cluster = Cluster::start(3, &[]).await.unwrap();
    create_logs(&cluster).await;
    converged(&endpoints(&cluster), &[b"hub"], CONVERGE).await.unwrap();
    cluster.links[0][1].as_ref().unwrap().lose_backward();
    cluster.links[1][0].as_ref().unwrap().lose_backward();
    cluster.links[1][2].as_ref().unwrap().slow(Duration::from_millis(30));
    cluster.links[2][0].as_ref().unwrap().slow(Duration::from_millis(30));
    let acked = Acked::default();
    run_writers(&cluster, 80, &acked).await;
    // Slow links alone still deliver: replica 2 gets replica 1's writes through them.
    plait_tests::wait_until(CONVERGE, "writes crossing slow links", || {
        let e = cluster.endpoint(2);
        async move { plait_tests::cluster::state(&e, &[]).await.is_ok_and(|s| s["feed"].rows.len() >= 160) }
    })
    .await
    .unwrap();
    cluster.heal_all();
    let state = converged(&endpoints(&cluster), &[b"hub"], CONVERGE).await.unwrap();
    assert_acked_present(&state, &acked);
    assert_eq!(state["feed"].rows.len(), 240);
    assert_clean(&mut cluster).await;
}

/// A replica killed with SIGKILL during replication restarts and catches up; a replica
/// whose data directory is wiped rejoins with a new epoch and gets everything back.
#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn sigkill_and_wiped_replica_rejoin() {
    let mut cluster = Cluster::start(3, &[]).await.unwrap();
    create_logs(&cluster).await;
    let acked = Acked::default();
    let load = tokio::spawn(write_load(cluster.endpoint(0), "a".into(), 400, acked.clone()));
    plait_tests::wait_until(CONVERGE, "replica 1 receiving entries", || {
        let e = cluster.endpoint(1);
        async move {
            plait_tests::cluster::state(&e, &[])
                .await
                .is_ok_and(|s| s.get("feed").is_some_and(|f| f.rows.len() >= 50))
        }
    })
    .await
    .unwrap();
    cluster.restart(1).unwrap();
    load.await.unwrap();
    let before = converged(&endpoints(&cluster), &[b"hub"], CONVERGE).await.unwrap();
    assert_acked_present(&before, &acked);

    let old_epoch = status_epoch(&cluster.endpoint(2)).await;
    cluster.wipe(2).unwrap();
    assert_ne!(status_epoch(&cluster.endpoint(2)).await, old_epoch, "a wiped replica has a new epoch");
    hosts_logs(cluster.endpoint(2)).await;
    run_writers(&cluster, 50, &acked).await;
    let after = converged(&endpoints(&cluster), &[b"hub"], CONVERGE).await.unwrap();
    assert_acked_present(&after, &acked);
    assert_eq!(after["feed"].rows.len(), before["feed"].rows.len() + 150);
    assert_clean(&mut cluster).await;
}

async fn status_node(endpoint: &str) -> Vec<u8> {
    let mut admin = pb::admin_client::AdminClient::new(channel(endpoint).await.unwrap());
    admin.status(pb::StatusRequest {}).await.unwrap().into_inner().node_id
}

async fn status_epoch(endpoint: &str) -> Vec<u8> {
    let mut admin = pb::admin_client::AdminClient::new(channel(endpoint).await.unwrap());
    admin.status(pb::StatusRequest {}).await.unwrap().into_inner().epoch
}

/// A new replica joins a cluster with a long history, told about by SetMembers, and
/// catches up; five replicas converge with writers on all.
#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn new_replica_joins_and_five_converge() {
    let mut cluster = Cluster::start(4, &[]).await.unwrap();
    create_logs(&cluster).await;
    let acked = Acked::default();
    // A long history: big batches through one replica.
    let mut d = data(&cluster.endpoint(0)).await;
    for b in 0..20 {
        let ops = (0..500)
            .map(|i| {
                routed(
                    "feed",
                    pb::op::Op::Append(pb::FeedAppend { value: format!("history-{b}-{i}").into_bytes() }),
                )
            })
            .collect();
        d.write(pb::WriteRequest { ops, concern: None }).await.unwrap();
    }
    run_writers(&cluster, 40, &acked).await;
    let n = cluster.add_node().await.unwrap();
    assert_eq!(n, 4);
    hosts_logs(cluster.endpoint(4)).await;
    run_writers(&cluster, 40, &acked).await;
    let state = converged(&endpoints(&cluster), &[b"hub"], CONVERGE).await.unwrap();
    assert_acked_present(&state, &acked);
    assert_eq!(state["feed"].rows.len(), 10_000 + 4 * 40 + 5 * 40);
    assert_clean(&mut cluster).await;
}

/// Children submitted to one replica before their parents, which only another replica
/// has, wait in pending until the replica fetches the parents; then all converge.
#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn children_before_parents() {
    let mut cluster = Cluster::start(3, &[]).await.unwrap();
    let client = WriterKey::generate(&mut rand::rngs::StdRng::seed_from_u64(11));
    let mut logs = pb::logs_client::LogsClient::new(channel(&cluster.endpoint(0)).await.unwrap());
    let info = logs
        .create_log(pb::CreateLogRequest {
            name: "dag".into(),
            r#type: pb::LogType::Kv as i32,
            writers: vec![client.public().0.to_vec()],
            ..Default::default()
        })
        .await
        .unwrap()
        .into_inner();
    converged(&endpoints(&cluster), &[], CONVERGE).await.unwrap();
    let log = LogId::from_slice(&info.log_id).unwrap();
    let mut chain = Vec::new();
    let mut next = vec![];
    for t in 1..=20u64 {
        let e = EntryDraft {
            log,
            time: t,
            next: next.clone(),
            refs: vec![],
            ops: vec![Op::Put { key: format!("k{t}").into_bytes(), value: b"v".to_vec() }],
        }
        .sign(&client)
        .unwrap();
        next = vec![e.hash()];
        chain.push(e);
    }
    // Parents only to replica 1, cut off from replica 0 so they cannot arrive by pull
    // before the children do.
    cluster.links[0][1].as_ref().unwrap().partition();
    let mut d1 = data(&cluster.endpoint(1)).await;
    d1.submit(pb::SubmitRequest { entries: chain[..10].iter().map(|e| e.bytes().to_vec()).collect() })
        .await
        .unwrap();
    let mut d0 = data(&cluster.endpoint(0)).await;
    let out = d0
        .submit(pb::SubmitRequest { entries: chain[10..].iter().map(|e| e.bytes().to_vec()).collect() })
        .await
        .unwrap()
        .into_inner();
    assert!(out.results.iter().all(|r| r.outcome == pb::SubmitOutcome::Pending as i32));
    cluster.heal_all();
    let state = converged(&endpoints(&cluster), &[], CONVERGE).await.unwrap();
    assert_eq!(state["dag"].rows.len(), 20);
    assert_eq!(state["dag"].pending, 0);
    assert_eq!(state["dag"].heads, vec![chain[19].hash().0.to_vec()]);
    assert_clean(&mut cluster).await;
}

/// A write can wait for k replicas; when they cannot be reached it fails with
/// DEADLINE_EXCEEDED but stays written locally.
#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn write_concern_waits_for_replicas() {
    let cluster = Cluster::start(3, &[]).await.unwrap();
    create_logs(&cluster).await;
    converged(&endpoints(&cluster), &[], CONVERGE).await.unwrap();
    let mut d = data(&cluster.endpoint(0)).await;
    let put = |key: &str, replicas: u32| pb::PutRequest {
        log: "kv".into(),
        key: key.as_bytes().to_vec(),
        value: b"v".to_vec(),
        concern: Some(pb::WriteConcern { replicas, timeout_ms: 1500 }),
    };
    d.put(put("all-three", 3)).await.expect("three replicas hold it");
    for i in 1..3 {
        let mut di = data(&cluster.endpoint(i)).await;
        let got = di
            .get(pb::GetRequest { log: "kv".into(), key: b"all-three".to_vec(), as_of: None })
            .await
            .unwrap()
            .into_inner();
        assert!(got.found, "replica {i} holds the write when it is acknowledged");
    }
    cluster.isolate(2);
    d.put(put("two", 2)).await.expect("two replicas are still reachable");
    let err = d.put(put("three-cut-off", 3)).await.unwrap_err();
    assert_eq!(err.code(), tonic::Code::DeadlineExceeded);
    assert!(err.message().contains("not undone"), "{}", err.message());
    let got = d
        .get(pb::GetRequest { log: "kv".into(), key: b"three-cut-off".to_vec(), as_of: None })
        .await
        .unwrap()
        .into_inner();
    assert!(got.found, "the write stays durable locally");
}

/// Drain refuses new writes and returns once another member holds everything; stale
/// membership updates lose.
#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn drain_and_membership_generations() {
    let cluster = Cluster::start(3, &[]).await.unwrap();
    create_logs(&cluster).await;
    converged(&endpoints(&cluster), &[], CONVERGE).await.unwrap();
    let acked = Acked::default();
    write_load(cluster.endpoint(2), "leaving".into(), 100, acked.clone()).await;
    let mut admin = pb::admin_client::AdminClient::new(channel(&cluster.endpoint(2)).await.unwrap());
    let drained = admin
        .drain(pb::DrainRequest { timeout_ms: 60_000, ..Default::default() })
        .await
        .unwrap()
        .into_inner();
    assert_eq!(drained.logs.len(), 3);
    assert!(drained.logs.iter().all(|l| l.seq == 0 || l.held_by.len() == 32));
    let refused = data(&cluster.endpoint(2))
        .await
        .put(pb::PutRequest { log: "kv".into(), key: b"k".to_vec(), value: b"v".to_vec(), concern: None })
        .await
        .unwrap_err();
    assert_eq!(refused.code(), tonic::Code::Unavailable);
    // Everything the draining replica held is on the member Drain named, already now.
    let kv_holder = &drained.logs.iter().find(|l| l.name == "kv").unwrap().held_by;
    let mut holder = None;
    for i in 0..2 {
        if &status_node(&cluster.endpoint(i)).await == kv_holder {
            holder = Some(i);
        }
    }
    let holder = holder.expect("the holder is one of the other members");
    let state = plait_tests::cluster::state(&cluster.endpoint(holder), &[]).await.unwrap();
    assert_acked_present(&state, &acked);

    admin.set_members(pb::SetMembersRequest { generation: 5, members: vec![] }).await.unwrap();
    let stale =
        admin.set_members(pb::SetMembersRequest { generation: 4, members: vec![] }).await.unwrap_err();
    assert_eq!(stale.code(), tonic::Code::FailedPrecondition);
    let status = admin.status(pb::StatusRequest {}).await.unwrap().into_inner();
    assert_eq!(status.members_generation, 5);
    assert!(status.draining);
    assert_eq!(status.peers.len(), 2, "static peers stay");
}

/// The anti-entropy backstop: a replica whose cursor claims more than it holds (forged
/// here in its stopped data directory) notices the peer's heads are missing and
/// reconciles, instead of trusting the cursor forever.
#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn heads_comparison_repairs_a_lying_cursor() {
    let dir = tempfile::tempdir().unwrap();
    let a = plait_tests::Plaitd::start(&dir.path().join("a"), &["--anti-entropy-ms", "200"]).unwrap();
    let mut logs = pb::logs_client::LogsClient::new(channel(&a.endpoint()).await.unwrap());
    let info = logs
        .create_log(pb::CreateLogRequest {
            name: "kv".into(),
            r#type: pb::LogType::Kv as i32,
            ..Default::default()
        })
        .await
        .unwrap()
        .into_inner();
    let mut d = data(&a.endpoint()).await;
    for i in 0..20 {
        d.put(pb::PutRequest {
            log: "kv".into(),
            key: format!("early{i}").into_bytes(),
            value: b"v".to_vec(),
            concern: None,
        })
        .await
        .unwrap();
    }
    let b_dir = dir.path().join("b");
    let mut b =
        plait_tests::Plaitd::start(&b_dir, &["--peer", &a.grpc.to_string(), "--anti-entropy-ms", "200"])
            .unwrap();
    let both = vec![a.endpoint(), b.endpoint()];
    converged(&both, &[], CONVERGE).await.unwrap();
    b.terminate().unwrap();
    for i in 0..20 {
        d.put(pb::PutRequest {
            log: "kv".into(),
            key: format!("late{i}").into_bytes(),
            value: b"v".to_vec(),
            concern: None,
        })
        .await
        .unwrap();
    }
    // Forge B's cursor: claim it holds A's log up to A's current seq.
    let mut admin = pb::admin_client::AdminClient::new(channel(&a.endpoint()).await.unwrap());
    let status = admin.status(pb::StatusRequest {}).await.unwrap().into_inner();
    let a_seq = status.logs[0].seq;
    {
        // Ingesting a cursor signs nothing, so any key opens the store.
        let key = WriterKey::generate(&mut rand::rngs::OsRng);
        let store = plait_store::Store::open(
            plait_store::StoreConfig::new(&b_dir, key).without_disk_floor(),
            &mut rand::rngs::OsRng,
            Arc::new(plait_store::NoopObserver),
        )
        .unwrap();
        let cursor = plait_store::Cursor {
            peer: plait_core::PublicKey::from_slice(&status.node_id).unwrap(),
            log: LogId::from_slice(&info.log_id).unwrap(),
            epoch: status.epoch.as_slice().try_into().unwrap(),
            seq: a_seq,
        };
        store.ingest_pulled(vec![], cursor).await.unwrap();
        store.close().await.unwrap();
    }
    b.restart().unwrap();
    let state = converged(&[a.endpoint(), b.endpoint()], &[], CONVERGE).await.unwrap();
    assert_eq!(state["kv"].rows.len(), 40, "the entries the forged cursor skipped arrived by reconciliation");
}

/// DNS discovery: a replica that only knows a name finds its peer by resolving it.
#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn dns_discovery_finds_peers() {
    let dir = tempfile::tempdir().unwrap();
    let a = plait_tests::Plaitd::start(&dir.path().join("a"), &[]).unwrap();
    let name = format!("localhost:{}", a.grpc.port());
    let b = plait_tests::Plaitd::start(
        &dir.path().join("b"),
        &["--discover-dns", &name, "--discover-interval-ms", "500", "--anti-entropy-ms", "200"],
    )
    .unwrap();
    let mut logs = pb::logs_client::LogsClient::new(channel(&a.endpoint()).await.unwrap());
    logs.create_log(pb::CreateLogRequest {
        name: "feed".into(),
        r#type: pb::LogType::Feed as i32,
        ..Default::default()
    })
    .await
    .unwrap();
    data(&a.endpoint())
        .await
        .append(pb::AppendRequest { log: "feed".into(), value: b"found".to_vec(), concern: None })
        .await
        .unwrap();
    converged(&[a.endpoint(), b.endpoint()], &[], CONVERGE).await.unwrap();
    let mut admin = pb::admin_client::AdminClient::new(channel(&b.endpoint()).await.unwrap());
    let peers = admin.status(pb::StatusRequest {}).await.unwrap().into_inner().peers;
    assert!(peers.iter().any(|p| p.source == "dns" && p.connected), "{peers:?}");
}

/// `(readiness, liveness)` as the kubelet's gRPC probes see them: the `plait.v1.Ready`
/// health service and the overall one.
async fn probes(endpoint: &str) -> (i32, i32) {
    let mut health = tonic_health::pb::health_client::HealthClient::new(channel(endpoint).await.unwrap());
    let mut statuses = [0; 2];
    for (status, service) in statuses.iter_mut().zip(["plait.v1.Ready", ""]) {
        let request = tonic_health::pb::HealthCheckRequest { service: service.into() };
        *status = health.check(request).await.unwrap().into_inner().status;
    }
    (statuses[0], statuses[1])
}

/// Waits until the replica at `endpoint` reports itself ready, on the probe and in Status.
async fn wait_ready(endpoint: &str) {
    plait_tests::wait_until(CONVERGE, &format!("{endpoint} to be ready"), || async move {
        let serving = tonic_health::pb::health_check_response::ServingStatus::Serving as i32;
        probes(endpoint).await.0 == serving && not_ready_reason(endpoint).await.is_none()
    })
    .await
    .unwrap();
}

async fn not_ready_reason(endpoint: &str) -> Option<String> {
    let mut admin = pb::admin_client::AdminClient::new(channel(endpoint).await.unwrap());
    let status = admin.status(pb::StatusRequest {}).await.unwrap().into_inner();
    assert_eq!(status.ready, status.not_ready_reason.is_empty(), "ready and its reason agree");
    (!status.ready).then_some(status.not_ready_reason)
}

/// Readiness follows catch-up and draining, liveness does not: a wiped replica that
/// rejoins over slow links is NOT_SERVING on `plait.v1.Ready` (and says it is catching up)
/// until a full round with every member has finished, then SERVING; Drain makes it
/// NOT_SERVING again; the overall health service stays SERVING throughout.
#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn readiness_follows_catch_up_and_drain() {
    use tonic_health::pb::health_check_response::ServingStatus;
    const SERVING: i32 = ServingStatus::Serving as i32;
    const NOT_SERVING: i32 = ServingStatus::NotServing as i32;

    let mut cluster = Cluster::start(3, &[]).await.unwrap();
    create_logs(&cluster).await;
    // A history big enough that catching up over a slow link takes many round trips.
    let mut d = data(&cluster.endpoint(0)).await;
    for b in 0..10 {
        let ops = (0..500)
            .map(|i| routed("feed", pb::op::Op::Append(pb::FeedAppend { value: vec![b; 200 + i % 7] })))
            .collect();
        d.write(pb::WriteRequest { ops, concern: None }).await.unwrap();
    }
    converged(&endpoints(&cluster), &[], CONVERGE).await.unwrap();
    // Holding the same data, each turns ready once its next evaluation sees its rounds done.
    for i in 0..cluster.nodes.len() {
        wait_ready(&cluster.endpoint(i)).await;
        assert_eq!(probes(&cluster.endpoint(i)).await.1, SERVING);
    }

    // Replica 2 loses its data and comes back behind slow links to both members.
    for proxy in cluster.links[2].iter().flatten() {
        proxy.slow(Duration::from_millis(150));
    }
    cluster.wipe(2).unwrap();
    let rejoined = cluster.endpoint(2);
    plait_tests::wait_until(CONVERGE, "the rejoined replica to report it is catching up", || {
        let e = rejoined.clone();
        async move { not_ready_reason(&e).await.is_some_and(|r| r.contains("catching up with member")) }
    })
    .await
    .unwrap();
    assert_eq!(probes(&rejoined).await, (NOT_SERVING, SERVING), "behind: out of the Service, yet alive");

    for proxy in cluster.links[2].iter().flatten() {
        proxy.heal();
    }
    plait_tests::wait_until(CONVERGE, "the rejoined replica to become ready", || {
        let e = rejoined.clone();
        async move { probes(&e).await.0 == SERVING }
    })
    .await
    .unwrap();
    // Ready means caught up: it already holds the whole history.
    let state = plait_tests::cluster::state(&rejoined, &[]).await.unwrap();
    assert_eq!(state["feed"].rows.len(), 5_000);
    assert_eq!(not_ready_reason(&rejoined).await, None);

    let mut admin = pb::admin_client::AdminClient::new(channel(&rejoined).await.unwrap());
    admin.drain(pb::DrainRequest { timeout_ms: 60_000, ..Default::default() }).await.unwrap();
    plait_tests::wait_until(CONVERGE, "the draining replica to leave readiness", || {
        let e = rejoined.clone();
        async move { probes(&e).await.0 == NOT_SERVING }
    })
    .await
    .unwrap();
    assert_eq!(probes(&rejoined).await.1, SERVING, "draining is not dead");
    assert!(not_ready_reason(&rejoined).await.unwrap().contains("draining"));
    // The others are ready (they may have gone through a round with the rejoined replica's
    // new epoch meanwhile), and the next write through one of them succeeds.
    wait_ready(&cluster.endpoint(0)).await;
    d.put(pb::PutRequest {
        log: "kv".into(),
        key: b"after".to_vec(),
        value: b"drain".to_vec(),
        concern: None,
    })
    .await
    .unwrap();
    assert_clean(&mut cluster).await;
}

/// A replica does not pull back what it sent: with single puts on one replica of two
/// (an entry each, so every put is a change on the other too), the writer's pulls from
/// its peer bring no entry it already held, the peer tells it instead that the new seqs
/// are its own (so it makes far fewer pulls than puts, where it used to make two per
/// put), and the writer's cursor on the peer still reaches the peer's seq, so status and
/// readiness see it caught up.
#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn replicas_do_not_pull_back_what_they_sent() {
    const PUTS: u64 = 200;
    let mut cluster = Cluster::start(2, &["--metrics-listen", "127.0.0.1:0"]).await.unwrap();
    create_logs(&cluster).await;
    let mut d = data(&cluster.endpoint(0)).await;
    for i in 0..PUTS {
        let put = pb::PutRequest {
            log: "kv".into(),
            key: format!("k{i}").into_bytes(),
            value: b"v".to_vec(),
            concern: None,
        };
        d.put(put).await.unwrap();
    }
    converged(&endpoints(&cluster), &[], CONVERGE).await.unwrap();
    // The writer's cursor on the peer reaches the peer's seq of the log.
    let writer = cluster.endpoint(0);
    plait_tests::wait_until(CONVERGE, "the writer's cursor on its peer to reach the peer's seq", || {
        let writer = writer.clone();
        async move {
            let mut admin = pb::admin_client::AdminClient::new(channel(&writer).await.unwrap());
            let status = admin.status(pb::StatusRequest {}).await.unwrap().into_inner();
            status.peers.iter().any(|p| {
                p.logs.iter().any(|l| l.name == "kv" && l.peer_seq >= PUTS && l.cursor == l.peer_seq)
            })
        }
    })
    .await
    .unwrap();
    let metrics = |i: usize| plait_tests::fetch_metrics(cluster.nodes[i].metrics.unwrap()).unwrap();
    let (writer_text, peer_text) = (metrics(0), metrics(1));
    assert_eq!(
        plait_tests::metric_sum(&writer_text, "plait_pulled_duplicates_total"),
        0.0,
        "the writer pulled back entries it held"
    );
    let pulls_served = plait_tests::rpc_calls(&peer_text, "Sync/Pull");
    assert!(
        pulls_served < PUTS as f64,
        "the writer pulled {pulls_served} times from its peer for {PUTS} puts"
    );
    assert!(
        plait_tests::metric_sum(&peer_text, "plait_entries_ingested_total") >= PUTS as f64,
        "the peer stored every put"
    );
    assert_clean(&mut cluster).await;
}

/// Steady replication makes no pull: single puts on one replica of two, each waiting
/// for the other replica (write concern 2), are each acknowledged, though the peer pulls
/// (almost) never. Each put's entry comes with the Watch notice that announces it and is
/// stored from there, and the writer learns how far its peer holds the log from the
/// peer's notices, which prove the peer's node id. A regression to a pull per put (or to
/// the closing empty pull that used to report each hold) fails the pull count; a hold
/// notice that is not counted makes the puts time out.
#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn entries_and_holds_arrive_in_notices_without_a_pull() {
    const PUTS: u64 = 60;
    let mut cluster = Cluster::start(2, &["--metrics-listen", "127.0.0.1:0"]).await.unwrap();
    create_logs(&cluster).await;
    converged(&endpoints(&cluster), &[], CONVERGE).await.unwrap();
    let metrics = |i: usize| plait_tests::fetch_metrics(cluster.nodes[i].metrics.unwrap()).unwrap();
    let before = plait_tests::rpc_calls(&metrics(0), "Sync/Pull");
    let mut d = data(&cluster.endpoint(0)).await;
    for i in 0..PUTS {
        let put = pb::PutRequest {
            log: "kv".into(),
            key: format!("held-{i}").into_bytes(),
            value: b"v".to_vec(),
            concern: Some(pb::WriteConcern { replicas: 2, timeout_ms: 10_000 }),
        };
        d.put(put).await.unwrap_or_else(|e| panic!("put {i} was not acknowledged by both replicas: {e}"));
    }
    let pulls = plait_tests::rpc_calls(&metrics(0), "Sync/Pull") - before;
    assert!(pulls <= 5.0, "the peer pulled {pulls} times for {PUTS} puts");
    let carried = plait_tests::metric_sum(&metrics(1), "plait_notice_entries_stored_total");
    assert!(carried >= PUTS as f64 - 5.0, "only {carried} of {PUTS} entries came with their notices");
    assert_clean(&mut cluster).await;
}

/// Every op a replica's Subscribe delivers says where the replica got it: written there
/// (local), or replicated from the peer with that node id. The origins are stored with
/// the entries, so a restarted replica says the same of its history.
#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn subscribe_says_where_each_op_came_from() {
    let mut cluster = Cluster::start(2, &[]).await.unwrap();
    create_logs(&cluster).await;
    let nodes = [status_node(&cluster.endpoint(0)).await, status_node(&cluster.endpoint(1)).await];
    for (i, key) in [(0, "written-on-0"), (1, "written-on-1")] {
        let op = pb::op::Op::Put(pb::KvPut { key: key.into(), value: b"v".to_vec() });
        data(&cluster.endpoint(i))
            .await
            .write(pb::WriteRequest { ops: vec![routed("kv", op)], concern: None })
            .await
            .unwrap();
    }
    converged(&endpoints(&cluster), &[], CONVERGE).await.unwrap();
    // What each replica's Subscribe says of each key: its origin kind and peer node id.
    async fn origins(endpoint: &str) -> BTreeMap<Vec<u8>, (i32, Vec<u8>)> {
        let mut stream = data(endpoint)
            .await
            .subscribe(pb::SubscribeRequest {
                log: "kv".into(),
                after_seq: 0,
                follow: false,
                consumer: String::new(),
            })
            .await
            .unwrap()
            .into_inner();
        let mut out = BTreeMap::new();
        while let Some(applied) = stream.message().await.unwrap() {
            let Some(pb::op::Op::Put(put)) = applied.op.and_then(|o| o.op) else { panic!("a kv put") };
            let origin = applied.origin.expect("every delivered op has an origin");
            out.insert(put.key, (origin.kind, origin.peer_node_id));
        }
        out
    }
    let (local, peer) = (pb::OriginKind::Local as i32, pb::OriginKind::Peer as i32);
    let expect = |i: usize| {
        let other = nodes[1 - i].clone();
        let (mine, theirs) =
            if i == 0 { ("written-on-0", "written-on-1") } else { ("written-on-1", "written-on-0") };
        BTreeMap::from([
            (mine.as_bytes().to_vec(), (local, Vec::new())),
            (theirs.as_bytes().to_vec(), (peer, other)),
        ])
    };
    assert_eq!(origins(&cluster.endpoint(0)).await, expect(0));
    assert_eq!(origins(&cluster.endpoint(1)).await, expect(1));
    cluster.restart(1).unwrap();
    assert_eq!(origins(&cluster.endpoint(1)).await, expect(1), "the same after a restart");
    assert_clean(&mut cluster).await;
}

/// Replicas that hold the same heads compare their logs' digests on every anti-entropy
/// round: once converged, each one's status says of each log and peer "verified equal at
/// seq s", s being its own seq, and no mismatch is counted.
#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn converged_replicas_verify_their_digests_equal() {
    let mut cluster = Cluster::start(2, &[]).await.unwrap();
    create_logs(&cluster).await;
    let acked = Acked::default();
    run_writers(&cluster, 40, &acked).await;
    converged(&endpoints(&cluster), &[b"hub"], CONVERGE).await.unwrap();
    wait_verified_equal(&cluster, false).await;
    assert_clean(&mut cluster).await;
}

/// Waits until each replica of a two-replica cluster says of each of its three logs that
/// it verified the peer's digest equal at its own seq. Unless `mismatch_seen` is allowed,
/// a mismatch on the way fails the test.
async fn wait_verified_equal(cluster: &Cluster, mismatch_seen: bool) {
    for endpoint in endpoints(cluster) {
        plait_tests::wait_until(CONVERGE, "every log verified equal with the peer", || {
            let endpoint = endpoint.clone();
            async move {
                let mut admin = pb::admin_client::AdminClient::new(channel(&endpoint).await.unwrap());
                let status = admin.status(pb::StatusRequest {}).await.unwrap().into_inner();
                let seqs: BTreeMap<Vec<u8>, u64> =
                    status.logs.iter().map(|l| (l.log_id.clone(), l.seq)).collect();
                status.peers.len() == 1
                    && status.peers[0].logs.len() == 3
                    && status.peers[0].logs.iter().all(|l| {
                        assert!(mismatch_seen || !l.digest_mismatch, "{l:?}");
                        !l.digest_mismatch
                            && l.verified_seq > 0
                            && seqs.get(&l.log_id) == Some(&l.verified_seq)
                    })
            }
        })
        .await
        .unwrap();
    }
}

/// A replica that lost an entry from its entry store (`plaitd lose-entry`, a test-only
/// fault: the entry's rows gone, what it did still stored, its digest summed again at the
/// next start) is found out and repaired by replication: the check of the stopped
/// directory reports the loss; once it runs again, it and its peer hold the same heads
/// with different digests, which is logged and counted, and the reconcile that follows
/// puts the entry back at its seq. Then both verify their digests equal, the entry reads
/// back, and every data directory is clean.
#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn a_replica_that_lost_an_entry_is_detected_and_repaired() {
    let mut cluster = Cluster::start(2, &["--metrics-listen", "127.0.0.1:0"]).await.unwrap();
    create_logs(&cluster).await;
    let acked = Acked::default();
    run_writers(&cluster, 40, &acked).await;
    converged(&endpoints(&cluster), &[b"hub"], CONVERGE).await.unwrap();
    let digest_of = |endpoint: String| async move {
        let mut logs = pb::logs_client::LogsClient::new(channel(&endpoint).await.unwrap());
        logs.get_log(pb::GetLogRequest { log: "kv".into() }).await.unwrap().into_inner().digest
    };
    let healthy = digest_of(cluster.endpoint(0)).await;

    cluster.nodes[1].terminate().unwrap();
    let dir = cluster.data_dir(1);
    // The first entry that is not a head: one with children, so the heads stay the same.
    let lost = (2..)
        .take(40)
        .find_map(|seq: u64| {
            let out = plait_tests::plaitd_command()
                .unwrap()
                .args(["lose-entry", "--data-dir"])
                .arg(&dir)
                .args(["--log", "kv", "--seq", &seq.to_string()])
                .output()
                .unwrap();
            out.status.success().then(|| String::from_utf8(out.stdout).unwrap().trim().to_owned())
        })
        .expect("an entry with children to lose");
    let (clean, report) = plait_tests::check(&dir).unwrap();
    assert!(!clean, "the check finds the lost entry: {report}");

    cluster.restart(1).unwrap();
    let endpoint = cluster.endpoint(1);
    let hash = hex::decode(&lost).unwrap();
    plait_tests::wait_until(CONVERGE, "the lost entry back and the digests equal", || {
        let (endpoint, hash, healthy) = (endpoint.clone(), hash.clone(), healthy.clone());
        async move {
            let found = data(&endpoint).await.get_entry(pb::GetEntryRequest { hash }).await.is_ok();
            found && digest_of(endpoint).await == healthy
        }
    })
    .await
    .unwrap();
    let metrics = |i: usize| plait_tests::fetch_metrics(cluster.nodes[i].metrics.unwrap()).unwrap();
    let mismatches = |text: String| {
        text.lines()
            .filter(|l| l.starts_with("plait_digest_mismatches_total"))
            .filter_map(|l| l.rsplit(' ').next()?.parse::<f64>().ok())
            .sum::<f64>()
    };
    let counted = tokio::task::block_in_place(|| mismatches(metrics(0)) + mismatches(metrics(1)));
    assert!(counted >= 1.0, "the mismatch was counted");
    wait_verified_equal(&cluster, true).await;
    assert_clean(&mut cluster).await;
}
