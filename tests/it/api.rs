//! Every service of a real plaitd, used as a client would: logs, typed writes, the
//! routed batch, pre-signed entries, reads, subscriptions, status, health, reflection.

use futures::StreamExt;
use plait_core::{EntryDraft, EntryHash, LogId, Op, WriterKey};
use plait_proto::pb;
use rand::SeedableRng;

use crate::support::{connect, create, put_op, start};

/// Logs are created (idempotently), listed, fetched by name and id, and dropped.
#[tokio::test]
async fn logs_lifecycle() {
    let (_dir, replica) = start();
    let mut c = connect(&replica).await;
    let kv = create(&mut c, "settings", pb::LogType::Kv).await;
    assert_eq!(kv.log_id.len(), 32);
    assert_eq!(kv.seq, 0);
    let again = create(&mut c, "settings", pb::LogType::Kv).await;
    assert_eq!(again.log_id, kv.log_id, "creating the same log twice returns it");
    create(&mut c, "chat", pb::LogType::Feed).await;
    let list = c.logs.list_logs(pb::ListLogsRequest {}).await.unwrap().into_inner().logs;
    assert_eq!(list.iter().map(|l| l.name.as_str()).collect::<Vec<_>>(), vec!["chat", "settings"]);
    let by_id =
        c.logs.get_log(pb::GetLogRequest { log: hex::encode(&kv.log_id) }).await.unwrap().into_inner();
    assert_eq!(by_id.name, "settings");
    c.logs.drop_log(pb::DropLogRequest { log: "chat".into() }).await.unwrap();
    let err = c.logs.get_log(pb::GetLogRequest { log: "chat".into() }).await.unwrap_err();
    assert_eq!(err.code(), tonic::Code::NotFound);
}

/// Typed writes and reads of all three stores, the routed batch across logs, and
/// acknowledgements that name the entry and seq.
#[tokio::test]
async fn typed_writes_and_reads() {
    let (_dir, replica) = start();
    let mut c = connect(&replica).await;
    create(&mut c, "kv", pb::LogType::Kv).await;
    create(&mut c, "feed", pb::LogType::Feed).await;
    create(&mut c, "graph", pb::LogType::Graph).await;

    let ack = c
        .data
        .put(pb::PutRequest { log: "kv".into(), key: b"a".to_vec(), value: b"1".to_vec(), concern: None })
        .await
        .unwrap()
        .into_inner();
    assert_eq!((ack.seq, ack.op_index), (1, 0));
    let got = c
        .data
        .get(pb::GetRequest { log: "kv".into(), key: b"a".to_vec(), as_of: None })
        .await
        .unwrap()
        .into_inner();
    assert!(got.found);
    assert_eq!(got.value, b"1");
    c.data.delete(pb::DeleteRequest { log: "kv".into(), key: b"a".to_vec(), concern: None }).await.unwrap();
    assert!(
        !c.data
            .get(pb::GetRequest { log: "kv".into(), key: b"a".to_vec(), as_of: None })
            .await
            .unwrap()
            .into_inner()
            .found
    );

    let batch = pb::WriteRequest {
        ops: vec![
            put_op("kv", "x", "1"),
            put_op("kv", "y", "2"),
            pb::RoutedOp {
                log: "feed".into(),
                op: Some(pb::Op { op: Some(pb::op::Op::Append(pb::FeedAppend { value: b"hi".to_vec() })) }),
            },
        ],
        concern: None,
    };
    let acks = c.data.write(batch).await.unwrap().into_inner().acks;
    assert_eq!(acks.len(), 3);
    assert_eq!(acks[0].entry_hash, acks[1].entry_hash, "ops for one log share an entry");
    let scan = c
        .data
        .scan(pb::ScanRequest { log: "kv".into(), limit: 1, ..Default::default() })
        .await
        .unwrap()
        .into_inner();
    assert_eq!(scan.items.len(), 1);
    assert_eq!(scan.next_start, b"y", "a page ends with where to continue");

    for i in 0..5 {
        c.data
            .append(pb::AppendRequest {
                log: "feed".into(),
                value: format!("m{i}").into_bytes(),
                concern: None,
            })
            .await
            .unwrap();
    }
    let tail = c
        .data
        .read_feed(pb::ReadFeedRequest { log: "feed".into(), limit: 2, tail: true, ..Default::default() })
        .await
        .unwrap()
        .into_inner();
    assert_eq!(
        tail.items.iter().map(|i| i.value.clone()).collect::<Vec<_>>(),
        vec![b"m3".to_vec(), b"m4".to_vec()]
    );
    let first = c
        .data
        .read_feed(pb::ReadFeedRequest { log: "feed".into(), limit: 2, ..Default::default() })
        .await
        .unwrap()
        .into_inner();
    let next = c
        .data
        .read_feed(pb::ReadFeedRequest {
            log: "feed".into(),
            limit: 10,
            after: first.items[1].position.clone(),
            ..Default::default()
        })
        .await
        .unwrap()
        .into_inner();
    assert_eq!(first.items.len() + next.items.len(), 6, "paging by position reads every item once");

    c.data
        .link(pb::LinkRequest {
            log: "graph".into(),
            src: b"ann".to_vec(),
            label: "knows".into(),
            dst: b"bob".to_vec(),
            props: b"{}".to_vec(),
            concern: None,
        })
        .await
        .unwrap();
    c.data
        .link(pb::LinkRequest {
            log: "graph".into(),
            src: b"ann".to_vec(),
            label: "knows".into(),
            dst: b"cid".to_vec(),
            props: vec![],
            concern: None,
        })
        .await
        .unwrap();
    c.data
        .unlink(pb::UnlinkRequest {
            log: "graph".into(),
            src: b"ann".to_vec(),
            label: "knows".into(),
            dst: b"cid".to_vec(),
            concern: None,
        })
        .await
        .unwrap();
    let out = c
        .data
        .edges(pb::EdgesRequest { log: "graph".into(), node: b"ann".to_vec(), ..Default::default() })
        .await
        .unwrap()
        .into_inner()
        .edges;
    assert_eq!(out.iter().map(|e| e.dst.clone()).collect::<Vec<_>>(), vec![b"bob".to_vec()]);
    let inn = c
        .data
        .edges(pb::EdgesRequest {
            log: "graph".into(),
            node: b"bob".to_vec(),
            direction: pb::Direction::In as i32,
            ..Default::default()
        })
        .await
        .unwrap()
        .into_inner()
        .edges;
    assert_eq!(inn[0].src, b"ann");

    let entry =
        c.data.get_entry(pb::GetEntryRequest { hash: ack.entry_hash.clone() }).await.unwrap().into_inner();
    assert_eq!(entry.seq, 1);
    let decoded = plait_core::DecodedEntry::decode(&entry.encoded).unwrap().verify().unwrap();
    assert_eq!(decoded.hash().0.to_vec(), ack.entry_hash, "the served bytes hash to the entry's id");
    let heads = c.data.heads(pb::HeadsRequest { log: "kv".into() }).await.unwrap().into_inner();
    assert_eq!(heads.heads.len(), 1);
    assert_eq!(heads.seq, 3);
}

/// A client that holds its own key signs entries itself; the replica verifies and stores
/// them, holds a child whose parent has not arrived, and applies both when it does.
#[tokio::test]
async fn presigned_entries_and_pending_parents() {
    let (_dir, replica) = start();
    let mut c = connect(&replica).await;
    let client = WriterKey::generate(&mut rand::rngs::StdRng::seed_from_u64(5));
    let info = c
        .logs
        .create_log(pb::CreateLogRequest {
            name: "mine".into(),
            r#type: pb::LogType::Kv as i32,
            writers: vec![client.public().0.to_vec()],
            exclude_replica_writer: true,
            ..Default::default()
        })
        .await
        .unwrap()
        .into_inner();
    let log = LogId::from_slice(&info.log_id).unwrap();
    let parent = EntryDraft {
        log,
        time: 1,
        next: vec![],
        refs: vec![],
        ops: vec![Op::Put { key: b"k".to_vec(), value: b"1".to_vec() }],
    }
    .sign(&client)
    .unwrap();
    let child = EntryDraft {
        log,
        time: 2,
        next: vec![parent.hash()],
        refs: vec![],
        ops: vec![Op::Put { key: b"k".to_vec(), value: b"2".to_vec() }],
    }
    .sign(&client)
    .unwrap();

    let r = c
        .data
        .submit(pb::SubmitRequest { entries: vec![child.bytes().to_vec()] })
        .await
        .unwrap()
        .into_inner();
    assert_eq!(r.results[0].outcome, pb::SubmitOutcome::Pending as i32);
    let r = c
        .data
        .submit(pb::SubmitRequest { entries: vec![parent.bytes().to_vec()] })
        .await
        .unwrap()
        .into_inner();
    assert_eq!(r.results[0].outcome, pb::SubmitOutcome::Stored as i32);
    let got = c
        .data
        .get(pb::GetRequest { log: "mine".into(), key: b"k".to_vec(), as_of: None })
        .await
        .unwrap()
        .into_inner();
    assert_eq!(got.value, b"2", "the child was applied once its parent arrived");
    let r = c
        .data
        .submit(pb::SubmitRequest { entries: vec![parent.bytes().to_vec()] })
        .await
        .unwrap()
        .into_inner();
    assert_eq!(r.results[0].outcome, pb::SubmitOutcome::Duplicate as i32);

    // The replica's own key is not on this log's ACL.
    let err = c
        .data
        .put(pb::PutRequest { log: "mine".into(), key: b"k".to_vec(), value: b"3".to_vec(), concern: None })
        .await
        .unwrap_err();
    assert_eq!(err.code(), tonic::Code::PermissionDenied);
    let heads = c.data.heads(pb::HeadsRequest { log: "mine".into() }).await.unwrap().into_inner();
    assert_eq!(EntryHash::from_slice(&heads.heads[0].hash), Some(child.hash()));
}

/// Subscribe delivers history from a cursor, then live ops as they land.
#[tokio::test]
async fn subscribe_from_cursor_then_live() {
    let (_dir, replica) = start();
    let mut c = connect(&replica).await;
    create(&mut c, "feed", pb::LogType::Feed).await;
    for i in 0..3 {
        c.data
            .append(pb::AppendRequest {
                log: "feed".into(),
                value: format!("old{i}").into_bytes(),
                concern: None,
            })
            .await
            .unwrap();
    }
    let mut stream = c
        .data
        .subscribe(pb::SubscribeRequest {
            log: "feed".into(),
            after_seq: 1,
            follow: true,
            consumer: String::new(),
        })
        .await
        .unwrap()
        .into_inner();
    let mut seen = Vec::new();
    for _ in 0..2 {
        seen.push(stream.next().await.unwrap().unwrap().seq);
    }
    assert_eq!(seen, vec![2, 3], "history after the cursor, in seq order");
    c.data
        .append(pb::AppendRequest { log: "feed".into(), value: b"new".to_vec(), concern: None })
        .await
        .unwrap();
    let live = tokio::time::timeout(std::time::Duration::from_secs(10), stream.next())
        .await
        .unwrap()
        .unwrap()
        .unwrap();
    assert_eq!(live.seq, 4);
    let Some(pb::op::Op::Append(a)) = live.op.unwrap().op else { panic!("not an append") };
    assert_eq!(a.value, b"new");
}

/// Status describes the replica and its logs; health says SERVING; reflection lists the
/// services so grpcurl works without the protos.
#[tokio::test]
async fn status_health_and_reflection() {
    let (_dir, replica) = start();
    let mut c = connect(&replica).await;
    create(&mut c, "kv", pb::LogType::Kv).await;
    c.data
        .put(pb::PutRequest { log: "kv".into(), key: b"a".to_vec(), value: b"1".to_vec(), concern: None })
        .await
        .unwrap();
    let status = c.admin.status(pb::StatusRequest {}).await.unwrap().into_inner();
    assert_eq!((status.node_id.len(), status.writer.len(), status.epoch.len()), (32, 32, 16));
    assert!(status.writable);
    assert_eq!(status.logs[0].seq, 1);
    assert_eq!(status.logs[0].ops, 1);

    let mut health = tonic_health::pb::health_client::HealthClient::new(c.channel.clone());
    let serving = health
        .check(tonic_health::pb::HealthCheckRequest { service: "plait.v1.Data".into() })
        .await
        .unwrap()
        .into_inner();
    assert_eq!(serving.status, tonic_health::pb::health_check_response::ServingStatus::Serving as i32);

    use tonic_reflection::pb::v1::{
        ServerReflectionRequest, server_reflection_client::ServerReflectionClient,
        server_reflection_request::MessageRequest, server_reflection_response::MessageResponse,
    };
    let mut reflection = ServerReflectionClient::new(c.channel.clone());
    let request = ServerReflectionRequest {
        host: String::new(),
        message_request: Some(MessageRequest::ListServices(String::new())),
    };
    let mut responses =
        reflection.server_reflection_info(futures::stream::iter(vec![request])).await.unwrap().into_inner();
    let Some(MessageResponse::ListServicesResponse(list)) =
        responses.next().await.unwrap().unwrap().message_response
    else {
        panic!()
    };
    let names: Vec<_> = list.service.iter().map(|s| s.name.as_str()).collect();
    for service in ["plait.v1.Logs", "plait.v1.Data", "plait.v1.Admin", "grpc.health.v1.Health"] {
        assert!(names.contains(&service), "{service} missing from {names:?}");
    }
}

/// Reflection also answers as `grpc.reflection.v1alpha`, the version Python's
/// grpcio-reflection, older grpcurl and Postman speak: it lists every service and
/// describes the file that defines one.
#[tokio::test]
async fn reflection_v1alpha_lists_and_describes_services() {
    use tonic_reflection::pb::v1alpha::{
        ServerReflectionRequest, server_reflection_client::ServerReflectionClient,
        server_reflection_request::MessageRequest, server_reflection_response::MessageResponse,
    };
    let (_dir, replica) = start();
    let c = connect(&replica).await;
    let mut reflection = ServerReflectionClient::new(c.channel.clone());
    let request = |message: MessageRequest| ServerReflectionRequest {
        host: String::new(),
        message_request: Some(message),
    };
    let requests = vec![
        request(MessageRequest::ListServices(String::new())),
        request(MessageRequest::FileContainingSymbol("plait.v1.Data".into())),
    ];
    let mut responses =
        reflection.server_reflection_info(futures::stream::iter(requests)).await.unwrap().into_inner();
    let Some(MessageResponse::ListServicesResponse(list)) =
        responses.next().await.unwrap().unwrap().message_response
    else {
        panic!("no list of services")
    };
    let names: Vec<_> = list.service.iter().map(|s| s.name.as_str()).collect();
    for service in
        ["plait.v1.Logs", "plait.v1.Data", "plait.v1.Admin", "plait.v1.Sync", "grpc.health.v1.Health"]
    {
        assert!(names.contains(&service), "{service} missing from {names:?}");
    }
    let Some(MessageResponse::FileDescriptorResponse(files)) =
        responses.next().await.unwrap().unwrap().message_response
    else {
        panic!("no file descriptor for plait.v1.Data")
    };
    assert!(
        files.file_descriptor_proto.iter().any(|f| f.windows(14).any(|w| w == b"plait/v1/data.")),
        "the descriptor of plait/v1/data.proto is in the answer"
    );
}

/// The overall health service (`""`, what Kubernetes and load balancers probe) follows
/// the replica: SERVING while it serves, and NOT_SERVING, together with the named
/// services, as soon as SIGTERM starts the shutdown, while in-flight calls (these two
/// watches) still drain. A poisoned store stops the replica through the same path.
#[tokio::test]
async fn overall_health_turns_not_serving_when_the_replica_stops() {
    use tonic_health::pb::health_check_response::ServingStatus;
    use tonic_health::pb::{HealthCheckRequest, health_client::HealthClient};
    let dir = tempfile::tempdir().unwrap();
    // A long grace period: the open watches keep the server draining, so the change can
    // be seen on them.
    let replica =
        plait_tests::Plaitd::start(&dir.path().join("data"), &["--shutdown-grace-ms", "60000"]).unwrap();
    let c = connect(&replica).await;
    let mut health = HealthClient::new(c.channel.clone());
    let ask = |service: &str| HealthCheckRequest { service: service.into() };
    let overall = health.check(ask("")).await.unwrap().into_inner();
    assert_eq!(overall.status, ServingStatus::Serving as i32);
    let mut watches = Vec::new();
    for service in ["", "plait.v1.Data"] {
        let mut watch = health.watch(ask(service)).await.unwrap().into_inner();
        let first = watch.message().await.unwrap().expect("a first status");
        assert_eq!(first.status, ServingStatus::Serving as i32, "{service:?} starts SERVING");
        watches.push((service, watch));
    }

    let sent =
        std::process::Command::new("kill").args(["-TERM", &replica.pid().to_string()]).status().unwrap();
    assert!(sent.success());
    for (service, watch) in &mut watches {
        let next = tokio::time::timeout(std::time::Duration::from_secs(30), watch.message())
            .await
            .unwrap_or_else(|_| panic!("{service:?} did not change within 30 s of SIGTERM"))
            .unwrap()
            .expect("a status change");
        assert_eq!(next.status, ServingStatus::NotServing as i32, "{service:?} after SIGTERM");
    }
}

/// The metrics endpoint exposes the store's and the RPCs' metrics.
#[tokio::test]
async fn prometheus_metrics_are_served() {
    let dir = tempfile::tempdir().unwrap();
    let replica =
        plait_tests::Plaitd::start(&dir.path().join("data"), &["--metrics-listen", "127.0.0.1:0"]).unwrap();
    let mut c = connect(&replica).await;
    create(&mut c, "kv", pb::LogType::Kv).await;
    c.data
        .put(pb::PutRequest { log: "kv".into(), key: b"a".to_vec(), value: b"1".to_vec(), concern: None })
        .await
        .unwrap();
    let addr = replica.metrics.expect("metrics address");
    let body = tokio::task::spawn_blocking(move || plait_tests::fetch_metrics(addr).expect("metrics"))
        .await
        .unwrap();
    for name in ["plait_ops_written_total", "plait_fsync_seconds", "plait_batch_entries", "plait_rpc_seconds"]
    {
        assert!(body.contains(name), "{name} missing from /metrics");
    }
}
