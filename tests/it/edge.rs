//! Edge nodes: a replica that is not a cluster member follows an upstream replica (or a
//! backup destination), serves reads locally, takes writes while cut off, and pushes
//! them when it can reach the upstream again.

use std::time::Duration;

use plait_proto::pb;
use plait_tests::Plaitd;
use plait_tests::cluster::{channel, converged};
use plait_tests::proxy::Proxy;

const CONVERGE: Duration = Duration::from_secs(60);

fn keygen(path: &std::path::Path) {
    let out = plait_tests::plaitd_command().unwrap().arg("keygen").arg("--out").arg(path).output().unwrap();
    assert!(out.status.success());
}

async fn put(endpoint: &str, log: &str, key: &str) {
    let mut data = pb::data_client::DataClient::new(channel(endpoint).await.unwrap());
    data.put(pb::PutRequest {
        log: log.into(),
        key: key.as_bytes().to_vec(),
        value: b"v".to_vec(),
        concern: None,
    })
    .await
    .unwrap();
}

async fn create(endpoint: &str, name: &str, t: pb::LogType) {
    let mut logs = pb::logs_client::LogsClient::new(channel(endpoint).await.unwrap());
    logs.create_log(pb::CreateLogRequest { name: name.into(), r#type: t as i32, ..Default::default() })
        .await
        .unwrap();
}

async fn seq(endpoint: &str, log: &str) -> Option<u64> {
    let mut logs = pb::logs_client::LogsClient::new(channel(endpoint).await.ok()?);
    Some(logs.get_log(pb::GetLogRequest { log: log.into() }).await.ok()?.into_inner().seq)
}

/// An edge node following a replica keeps taking writes while the link is cut (to an
/// existing log and to a log it creates offline); after the link heals both hold
/// everything, and after a SIGKILL the edge resumes pushing from its watermark.
#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn edge_writes_offline_and_converges() {
    let dir = tempfile::tempdir().unwrap();
    let key = dir.path().join("writer.key");
    keygen(&key);
    let key_flag = key.display().to_string();
    let upstream = Plaitd::start(&dir.path().join("upstream"), &["--writer-key-file", &key_flag]).unwrap();
    let link = Proxy::start().await.unwrap();
    link.set_target(upstream.grpc);
    let link_addr = link.addr.to_string();
    let mut edge = Plaitd::start(
        &dir.path().join("edge"),
        &["--upstream", &link_addr, "--writer-key-file", &key_flag, "--anti-entropy-ms", "200"],
    )
    .unwrap();
    create(&upstream.endpoint(), "kv", pb::LogType::Kv).await;
    put(&upstream.endpoint(), "kv", "before").await;
    plait_tests::wait_until(CONVERGE, "the edge to follow", || {
        let e = edge.endpoint();
        async move { seq(&e, "kv").await == Some(1) }
    })
    .await
    .unwrap();

    link.partition();
    for i in 0..20 {
        put(&edge.endpoint(), "kv", &format!("offline-{i}")).await;
        put(&upstream.endpoint(), "kv", &format!("online-{i}")).await;
    }
    create(&edge.endpoint(), "field-notes", pb::LogType::Kv).await;
    put(&edge.endpoint(), "field-notes", "seen").await;
    assert_eq!(seq(&upstream.endpoint(), "field-notes").await, None, "the partition held");
    link.heal();
    let state = converged(&[upstream.endpoint(), edge.endpoint()], &[], CONVERGE).await.unwrap();
    assert_eq!(state["kv"].rows.len(), 41);
    assert_eq!(state["field-notes"].rows.len(), 1, "a log created offline reached the upstream");

    edge.restart().unwrap();
    put(&edge.endpoint(), "kv", "after-restart").await;
    let state = converged(&[upstream.endpoint(), edge.endpoint()], &[], CONVERGE).await.unwrap();
    assert_eq!(state["kv"].rows.len(), 42);
}

/// An edge node that starts from a backup destination has the data when it is ready,
/// then applies new deltas as they are backed up, and takes local writes.
#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn edge_restores_from_backups_and_follows_deltas() {
    let dir = tempfile::tempdir().unwrap();
    let key = dir.path().join("writer.key");
    keygen(&key);
    let key_flag = key.display().to_string();
    let destination = format!("file://{}", dir.path().join("backups").display());
    let named = format!("local={destination}");
    let source = Plaitd::start(
        &dir.path().join("source"),
        &["--writer-key-file", &key_flag, "--backup-destination", &named],
    )
    .unwrap();
    create(&source.endpoint(), "kv", pb::LogType::Kv).await;
    for i in 0..10 {
        put(&source.endpoint(), "kv", &format!("a{i}")).await;
    }
    let mut admin = pb::admin_client::AdminClient::new(channel(&source.endpoint()).await.unwrap());
    let backup =
        |delta| pb::BackupRequest { destination: "local".into(), logs: vec![], delta, retain_full: 0 };
    admin.backup(backup(false)).await.unwrap();

    let edge = Plaitd::start(
        &dir.path().join("edge"),
        &["--restore-from", &destination, "--follow-backups-ms", "200", "--writer-key-file", &key_flag],
    )
    .unwrap();
    assert_eq!(seq(&edge.endpoint(), "kv").await, Some(10), "restored before serving");
    for i in 0..5 {
        put(&source.endpoint(), "kv", &format!("b{i}")).await;
    }
    admin.backup(backup(true)).await.unwrap();
    plait_tests::wait_until(CONVERGE, "the edge to apply the delta", || {
        let e = edge.endpoint();
        async move { seq(&e, "kv").await == Some(15) }
    })
    .await
    .unwrap();
    put(&edge.endpoint(), "kv", "local").await;
    assert_eq!(seq(&edge.endpoint(), "kv").await, Some(16), "the edge takes local writes");
}
