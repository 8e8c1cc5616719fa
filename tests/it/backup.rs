//! Backups and restores with real processes: to a directory and to a real S3-compatible
//! server, full and delta, restored by `plaitd restore` into a fresh data directory that
//! reproduces the source's state roots and heads; and every bad destination or snapshot
//! refused with a clear error while the replica keeps serving. Destinations are named
//! on the replica's command line (`--backup-destination NAME=URL`); `Backup` takes only
//! a name, and concurrent backups to one destination all end up in its catalog.

use futures::StreamExt;
use plait_proto::pb;
use plait_tests::Plaitd;
use plait_tests::cluster::channel;
use plait_tests::s3::S3Server;
use tonic::Code;

use crate::support::put_op;

async fn admin(endpoint: &str) -> pb::admin_client::AdminClient<tonic::transport::Channel> {
    pb::admin_client::AdminClient::new(channel(endpoint).await.unwrap())
}

/// Creates a kv and a feed log and writes `n` batches to them.
async fn write(endpoint: &str, tag: &str, n: usize) {
    let mut data = pb::data_client::DataClient::new(channel(endpoint).await.unwrap());
    for i in 0..n {
        let ops = vec![
            put_op("kv", &format!("{tag}-{i}"), "v"),
            pb::RoutedOp {
                log: "feed".into(),
                op: Some(pb::Op {
                    op: Some(pb::op::Op::Append(pb::FeedAppend { value: format!("{tag}-{i}").into_bytes() })),
                }),
            },
        ];
        data.write(pb::WriteRequest { ops, concern: None }).await.unwrap();
    }
}

async fn create_logs(endpoint: &str) {
    let mut logs = pb::logs_client::LogsClient::new(channel(endpoint).await.unwrap());
    for (name, t) in [("kv", pb::LogType::Kv), ("feed", pb::LogType::Feed)] {
        logs.create_log(pb::CreateLogRequest { name: name.into(), r#type: t as i32, ..Default::default() })
            .await
            .unwrap();
    }
}

/// (state root, heads) of each log, from a fresh checkpoint.
async fn roots(endpoint: &str) -> Vec<(Vec<u8>, Vec<Vec<u8>>)> {
    let mut a = admin(endpoint).await;
    let mut out = Vec::new();
    for log in ["feed", "kv"] {
        let c = a.checkpoint(pb::CheckpointRequest { log: log.into() }).await.unwrap().into_inner();
        out.push((c.state_root, c.heads));
    }
    out
}

fn restore(from: &str, data_dir: &std::path::Path, env: &[(&'static str, String)]) -> std::process::Output {
    plait_tests::plaitd_command()
        .unwrap()
        .args(["restore", "--from", from, "--data-dir"])
        .arg(data_dir)
        .envs(env.iter().map(|(k, v)| (*k, v.as_str())))
        .output()
        .unwrap()
}

/// `--backup-destination NAME=URL` as flags.
fn destination_flag(name: &str, url: &str) -> [String; 2] {
    ["--backup-destination".to_owned(), format!("{name}={url}")]
}

fn flags(owned: &[String]) -> Vec<&str> {
    owned.iter().map(String::as_str).collect()
}

/// Backs up every log to the destination the replica knows as `destination`.
async fn backup(endpoint: &str, destination: &str, delta: bool) -> pb::BackupResponse {
    admin(endpoint)
        .await
        .backup(pb::BackupRequest { destination: destination.into(), logs: vec![], delta, retain_full: 0 })
        .await
        .unwrap()
        .into_inner()
}

/// Full, then delta backups to a directory; `plaitd restore` builds a new data directory
/// (a new epoch) whose every log has the source's state root and heads.
#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn file_backups_restore_to_the_same_state() {
    let dir = tempfile::tempdir().unwrap();
    let destination = format!("file://{}", dir.path().join("backups").display());
    let source =
        Plaitd::start(&dir.path().join("source"), &flags(&destination_flag("local", &destination))).unwrap();
    create_logs(&source.endpoint()).await;
    write(&source.endpoint(), "a", 50).await;
    let full = backup(&source.endpoint(), "local", false).await;
    assert!(full.objects.iter().all(|o| o.kind == "full"));
    write(&source.endpoint(), "b", 30).await;
    let delta = backup(&source.endpoint(), "local", true).await;
    assert!(delta.objects.iter().all(|o| o.kind == "delta" && o.base_seq > 0), "{:?}", delta.objects);

    let out = restore(&destination, &dir.path().join("restored"), &[]);
    assert!(out.status.success(), "{}", String::from_utf8_lossy(&out.stderr));
    let restored = Plaitd::start(&dir.path().join("restored"), &[]).unwrap();
    assert_eq!(roots(&restored.endpoint()).await, roots(&source.endpoint()).await);
    let epoch = |e: String| async move {
        admin(&e).await.status(pb::StatusRequest {}).await.unwrap().into_inner().epoch
    };
    assert_ne!(epoch(restored.endpoint()).await, epoch(source.endpoint()).await, "a restore is a new epoch");
}

/// The kv answers of a replica as of a point: the scan of every key, and one key read.
async fn kv_as_of(endpoint: &str, as_of: Option<pb::AsOf>) -> (Vec<(Vec<u8>, Vec<u8>)>, Vec<u8>) {
    let mut data = pb::data_client::DataClient::new(channel(endpoint).await.unwrap());
    let scan =
        pb::ScanRequest { log: "kv".into(), limit: 10_000, as_of: as_of.clone(), ..Default::default() };
    let page = data.scan(scan).await.unwrap().into_inner();
    assert!(page.next_start.is_empty());
    let get = pb::GetRequest { log: "kv".into(), key: b"a-0".to_vec(), as_of };
    let value = data.get(get).await.unwrap().into_inner().value;
    (page.items.into_iter().map(|kv| (kv.key, kv.value)).collect(), value)
}

/// The feed's values as of a point.
async fn feed_as_of(endpoint: &str, as_of: Option<pb::AsOf>) -> Vec<Vec<u8>> {
    let mut data = pb::data_client::DataClient::new(channel(endpoint).await.unwrap());
    let read = pb::ReadFeedRequest { log: "feed".into(), limit: 10_000, as_of, ..Default::default() };
    data.read_feed(read).await.unwrap().into_inner().items.into_iter().map(|i| i.value).collect()
}

/// A replica restored from a full and a delta backup answers reads as of each backup's
/// checkpoint (named by its state root, the same on both) exactly as the source does, and
/// those answers are the past: later overwrites and appends are left out, the current
/// view has them.
#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn a_restored_replica_reads_as_of_the_backups_checkpoints_like_the_source() {
    let dir = tempfile::tempdir().unwrap();
    let destination = format!("file://{}", dir.path().join("backups").display());
    let source =
        Plaitd::start(&dir.path().join("source"), &flags(&destination_flag("local", &destination))).unwrap();
    create_logs(&source.endpoint()).await;
    write(&source.endpoint(), "a", 20).await;
    let full = backup(&source.endpoint(), "local", false).await;
    // Overwrites of keys the full backup holds, and more items.
    let mut data = pb::data_client::DataClient::new(channel(&source.endpoint()).await.unwrap());
    for i in 0..5 {
        let ops = vec![crate::support::put_op("kv", &format!("a-{i}"), "overwritten")];
        data.write(pb::WriteRequest { ops, concern: None }).await.unwrap();
    }
    write(&source.endpoint(), "b", 10).await;
    let delta = backup(&source.endpoint(), "local", true).await;
    write(&source.endpoint(), "c", 5).await;

    let out = restore(&destination, &dir.path().join("restored"), &[]);
    assert!(out.status.success(), "{}", String::from_utf8_lossy(&out.stderr));
    let restored = Plaitd::start(&dir.path().join("restored"), &[]).unwrap();
    let root_of = |objects: &[pb::BackupObject], name: &str| {
        let object = objects.iter().find(|o| o.name == name).unwrap();
        Some(pb::AsOf {
            point: Some(pb::as_of::Point::Checkpoint(object.checkpoint.as_ref().unwrap().state_root.clone())),
        })
    };
    for (objects, kv_len, feed_len, a0) in
        [(&full.objects, 20, 20, b"v".as_slice()), (&delta.objects, 30, 30, b"overwritten".as_slice())]
    {
        let (kv_source, a0_source) = kv_as_of(&source.endpoint(), root_of(objects, "kv")).await;
        assert_eq!(kv_source.len(), kv_len);
        assert_eq!(a0_source, a0);
        assert_eq!(kv_as_of(&restored.endpoint(), root_of(objects, "kv")).await, (kv_source, a0_source));
        let feed_source = feed_as_of(&source.endpoint(), root_of(objects, "feed")).await;
        assert_eq!(feed_source.len(), feed_len);
        assert_eq!(feed_as_of(&restored.endpoint(), root_of(objects, "feed")).await, feed_source);
    }
    // The source's present has moved on; the restored replica's present is the delta's.
    assert_eq!(kv_as_of(&source.endpoint(), None).await.0.len(), 35);
    assert_eq!(feed_as_of(&restored.endpoint(), None).await.len(), 30);
}

/// The same against a real S3-compatible server: backups go into a bucket through
/// `object_store`, credentials and endpoint from the environment.
#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn s3_backups_restore_to_the_same_state() {
    let s3 = S3Server::start().unwrap();
    s3.create_bucket("plait-backups").unwrap();
    let dir = tempfile::tempdir().unwrap();
    let destination = "s3://plait-backups/cluster-1";
    let source = Plaitd::start_with_env(
        &dir.path().join("source"),
        &flags(&destination_flag("bucket", destination)),
        s3.env(),
    )
    .unwrap();
    create_logs(&source.endpoint()).await;
    write(&source.endpoint(), "a", 40).await;
    backup(&source.endpoint(), "bucket", false).await;
    write(&source.endpoint(), "b", 20).await;
    let delta = backup(&source.endpoint(), "bucket", true).await;
    assert!(delta.objects.iter().all(|o| o.kind == "delta"));
    let out = restore(destination, &dir.path().join("restored"), &s3.env());
    assert!(out.status.success(), "{}", String::from_utf8_lossy(&out.stderr));
    let restored = Plaitd::start(&dir.path().join("restored"), &[]).unwrap();
    assert_eq!(roots(&restored.endpoint()).await, roots(&source.endpoint()).await);
}

/// `plaitd` started with a bad `--backup-destination` refuses to start, says which
/// setting is wrong and why, and creates nothing.
#[test]
fn bad_destination_flags_stop_the_start() {
    let dir = tempfile::tempdir().unwrap();
    let data_dir = dir.path().join("data");
    let cases: [(&[&str], &str); 6] = [
        (&["--backup-destination", "x=ftp://host/x"], "unsupported backup destination"),
        (&["--backup-destination", "x=file://relative/dir"], "absolute path"),
        (&["--backup-destination", "file:///var/backups"], "must be NAME=URL"),
        (&["--backup-destination", "Nightly=file:///tmp/plait-never"], "is not valid"),
        (&["--backup-destination", "a=s3://b/p", "--backup-destination", "a=s3://c/p"], "configured twice"),
        (&["--backup-destination", "s3://bucket=file:///tmp/plait-never"], "is not valid"),
    ];
    for (args, expected) in cases {
        let out = plait_tests::plaitd_command()
            .unwrap()
            .args(["--listen", "127.0.0.1:0", "--data-dir"])
            .arg(&data_dir)
            .args(args)
            .output()
            .unwrap();
        let stderr = String::from_utf8_lossy(&out.stderr);
        assert!(!out.status.success(), "{args:?} started");
        assert!(stderr.contains("--backup-destination") && stderr.contains(expected), "{args:?}: {stderr}");
        assert!(!data_dir.exists(), "{args:?}: the data directory was created");
    }
    assert!(!std::path::Path::new("/tmp/plait-never").exists());
    // The same through the environment, as a comma-separated list.
    let out = plait_tests::plaitd_command()
        .unwrap()
        .args(["--listen", "127.0.0.1:0", "--data-dir"])
        .arg(&data_dir)
        .env("PLAIT_BACKUP_DESTINATIONS", "a=file:///tmp/plait-never-a,a=file:///tmp/plait-never-b")
        .output()
        .unwrap();
    assert!(!out.status.success());
    assert!(String::from_utf8_lossy(&out.stderr).contains("configured twice"));
}

/// `Backup` takes a configured destination's name, never a URL: a URL (or a path) is
/// INVALID_ARGUMENT naming the configured destinations, and nothing is written where it
/// points; an unknown name is NOT_FOUND; no name picks the only destination. After the
/// refusals the replica writes and backs up as before, `Status` lists the names (not the
/// URLs), and `plaitd check` finds its data clean.
#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn backup_takes_a_configured_name_never_a_url() {
    let dir = tempfile::tempdir().unwrap();
    let backups = dir.path().join("backups");
    let url = format!("file://{}", backups.display());
    let mut replica =
        Plaitd::start(&dir.path().join("replica"), &flags(&destination_flag("local", &url))).unwrap();
    let endpoint = replica.endpoint();
    create_logs(&endpoint).await;
    write(&endpoint, "a", 5).await;
    let mut a = admin(&endpoint).await;
    let request = |destination: &str| pb::BackupRequest {
        destination: destination.into(),
        retain_full: 1,
        ..Default::default()
    };

    let elsewhere = dir.path().join("elsewhere");
    for url in [
        format!("file://{}", elsewhere.display()),
        "s3://someone-elses-bucket/x".to_owned(),
        format!("{}", elsewhere.display()),
        "../elsewhere".to_owned(),
    ] {
        let err = a.backup(request(&url)).await.unwrap_err();
        assert_eq!(err.code(), Code::InvalidArgument, "{url}: {}", err.message());
        assert!(err.message().contains("not a URL"), "{}", err.message());
        assert!(err.message().contains("configured: local"), "{}", err.message());
        assert!(!err.message().contains(&backups.display().to_string()), "the URL is not shown");
    }
    assert!(!elsewhere.exists(), "nothing was written where the URL pointed");
    assert!(!backups.join("catalog.json").exists(), "nor to the configured destination");

    let err = a.backup(request("nightly")).await.unwrap_err();
    assert_eq!(err.code(), Code::NotFound, "{}", err.message());
    assert!(err.message().contains("\"nightly\"") && err.message().contains("configured: local"));
    let err = a.backup(request("Not A Name")).await.unwrap_err();
    assert_eq!(err.code(), Code::InvalidArgument, "{}", err.message());

    let status = a.status(pb::StatusRequest {}).await.unwrap().into_inner();
    assert_eq!(status.backup_destinations, ["local"]);
    write(&endpoint, "b", 5).await;
    let run = a.backup(request("")).await.unwrap().into_inner();
    assert_eq!(run.objects.len(), 2, "the only destination is the default");
    assert!(backups.join("catalog.json").exists());
    let run = a.backup(request("local")).await.unwrap().into_inner();
    assert_eq!(run.objects.len(), 2);
    assert_eq!(run.deleted.len(), 2, "retention removed the first run's objects");
    drop(a);
    replica.terminate().unwrap();
    let (clean, report) = plait_tests::check(&replica.data_dir).unwrap();
    assert!(clean, "{report}");

    // With several destinations, one must be named.
    let two = [destination_flag("a", &url), destination_flag("b", &format!("{url}-b"))].concat();
    let replica = Plaitd::start(&dir.path().join("two"), &flags(&two)).unwrap();
    let mut a = admin(&replica.endpoint()).await;
    let err = a.backup(request("")).await.unwrap_err();
    assert_eq!(err.code(), Code::InvalidArgument, "{}", err.message());
    assert!(err.message().contains("several (configured: a, b)"), "{}", err.message());
    let status = a.status(pb::StatusRequest {}).await.unwrap().into_inner();
    assert_eq!(status.backup_destinations, ["a", "b"]);
}

/// A replica started without destinations refuses every `Backup` with
/// FAILED_PRECONDITION and says how to configure one; a URL is still INVALID_ARGUMENT.
#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn backup_without_destinations_says_how_to_add_one() {
    let dir = tempfile::tempdir().unwrap();
    let replica = Plaitd::start(&dir.path().join("replica"), &[]).unwrap();
    create_logs(&replica.endpoint()).await;
    let mut a = admin(&replica.endpoint()).await;
    for name in ["", "default"] {
        let err =
            a.backup(pb::BackupRequest { destination: name.into(), ..Default::default() }).await.unwrap_err();
        assert_eq!(err.code(), Code::FailedPrecondition, "{}", err.message());
        assert!(err.message().contains("--backup-destination NAME=URL"), "{}", err.message());
    }
    let err = a
        .backup(pb::BackupRequest { destination: "file:///tmp/x".into(), ..Default::default() })
        .await
        .unwrap_err();
    assert_eq!(err.code(), Code::InvalidArgument, "{}", err.message());
    assert!(err.message().contains("none are configured"), "{}", err.message());
    let status = a.status(pb::StatusRequest {}).await.unwrap().into_inner();
    assert!(status.backup_destinations.is_empty());
}

/// Eight backups started at once to one destination, a directory and an S3 bucket:
/// every run's entries are in the catalog afterwards (none lost to another run's
/// catalog write), and the destination restores.
#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn concurrent_backups_keep_every_catalog_entry() {
    const RUNS: usize = 8;
    let s3 = S3Server::start().unwrap();
    s3.create_bucket("plait-backups").unwrap();
    let dir = tempfile::tempdir().unwrap();
    let backups = dir.path().join("backups");
    let url = format!("file://{}", backups.display());
    let destinations =
        [destination_flag("local", &url), destination_flag("bucket", "s3://plait-backups/concurrent")]
            .concat();
    let source = Plaitd::start_with_env(&dir.path().join("source"), &flags(&destinations), s3.env()).unwrap();
    create_logs(&source.endpoint()).await;
    write(&source.endpoint(), "a", 20).await;
    for (name, catalog) in [
        (
            "local",
            Box::new(|| std::fs::read(backups.join("catalog.json")).unwrap()) as Box<dyn Fn() -> Vec<u8>>,
        ),
        ("bucket", Box::new(|| s3.get_object("plait-backups", "concurrent/catalog.json").unwrap())),
    ] {
        let endpoint = source.endpoint();
        let runs = futures::future::join_all((0..RUNS).map(|_| backup(&endpoint, name, false))).await;
        let mut ids: Vec<String> = runs.iter().map(|r| r.backup_id.clone()).collect();
        ids.sort();
        ids.dedup();
        assert_eq!(ids.len(), RUNS, "{name}: every run has its own id");
        let catalog: serde_json::Value = serde_json::from_slice(&catalog()).unwrap();
        let entries = catalog["backups"].as_array().unwrap();
        let mut cataloged: Vec<String> =
            entries.iter().map(|e| e["backup_id"].as_str().unwrap().to_owned()).collect();
        assert_eq!(cataloged.len(), RUNS * 2, "{name}: two logs per run");
        cataloged.sort();
        cataloged.dedup();
        assert_eq!(cataloged, ids, "{name}: no run's entries were lost");
    }
    let out = restore(&url, &dir.path().join("restored"), &[]);
    assert!(out.status.success(), "{}", String::from_utf8_lossy(&out.stderr));
    let out = restore("s3://plait-backups/concurrent", &dir.path().join("restored-s3"), &s3.env());
    assert!(out.status.success(), "{}", String::from_utf8_lossy(&out.stderr));
}

/// Bad destinations and bad snapshots get clear errors; nothing is half-applied and the
/// replica keeps serving.
#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn bad_destinations_and_snapshots_are_refused() {
    let dir = tempfile::tempdir().unwrap();
    let replica = Plaitd::start_with_env(
        &dir.path().join("replica"),
        &flags(&destination_flag("unreachable", "s3://bucket/prefix")),
        vec![
            ("AWS_ACCESS_KEY_ID", "x".into()),
            ("AWS_SECRET_ACCESS_KEY", "y".into()),
            ("AWS_REGION", "us-east-1".into()),
            // Nothing listens on port 1: an unreachable object store.
            ("PLAIT_BACKUP_S3_ENDPOINT", "http://127.0.0.1:1".into()),
            ("PLAIT_BACKUP_S3_ALLOW_HTTP", "true".into()),
        ],
    )
    .unwrap();
    let endpoint = replica.endpoint();
    create_logs(&endpoint).await;
    write(&endpoint, "a", 20).await;
    let mut a = admin(&endpoint).await;
    let request =
        |destination: &str| pb::BackupRequest { destination: destination.into(), ..Default::default() };

    let err = a.backup(request("unreachable")).await.unwrap_err();
    assert_eq!(err.code(), Code::Unavailable);
    assert!(err.message().contains("s3://bucket/prefix"), "{}", err.message());

    // A destination without a catalog.
    let empty = dir.path().join("empty");
    std::fs::create_dir_all(&empty).unwrap();
    let out = restore(&format!("file://{}", empty.display()), &dir.path().join("r1"), &[]);
    assert!(!out.status.success());
    assert!(
        String::from_utf8_lossy(&out.stderr).contains("no catalog"),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
    assert!(!dir.path().join("r1").exists(), "nothing was created");

    // Snapshots: export one, then import damaged versions of it into the same replica's
    // peer... here into a second, empty replica.
    let mut stream = a
        .export_snapshot(pb::ExportSnapshotRequest { log: "kv".into(), base_seq: 0 })
        .await
        .unwrap()
        .into_inner();
    let mut snapshot = Vec::new();
    while let Some(chunk) = stream.next().await {
        snapshot.extend(chunk.unwrap().data);
    }
    let target = Plaitd::start(&dir.path().join("target"), &[]).unwrap();
    let mut t = admin(&target.endpoint()).await;
    let import = |bytes: Vec<u8>| {
        let chunks: Vec<pb::SnapshotChunk> =
            bytes.chunks(1000).map(|c| pb::SnapshotChunk { data: c.to_vec() }).collect();
        futures::stream::iter(chunks)
    };
    let truncated = snapshot[..snapshot.len() - 10].to_vec();
    let err = t.import_snapshot(import(truncated)).await.unwrap_err();
    assert_eq!(err.code(), Code::InvalidArgument);
    assert!(err.message().contains("truncated"), "{}", err.message());
    let mut version = snapshot.clone();
    version[9] = 7;
    let err = t.import_snapshot(import(version)).await.unwrap_err();
    assert!(err.message().contains("version 7"), "{}", err.message());
    let mut flipped = snapshot.clone();
    let at = snapshot.len() / 2;
    flipped[at] ^= 1;
    assert_eq!(t.import_snapshot(import(flipped)).await.unwrap_err().code(), Code::InvalidArgument);
    let logs = pb::logs_client::LogsClient::new(channel(&target.endpoint()).await.unwrap())
        .list_logs(pb::ListLogsRequest {})
        .await
        .unwrap()
        .into_inner()
        .logs;
    assert!(logs.is_empty(), "nothing of a bad snapshot was applied");

    // A delta on a node that never restored the base.
    let c = a.checkpoint(pb::CheckpointRequest { log: "kv".into() }).await.unwrap().into_inner();
    write(&endpoint, "b", 5).await;
    let mut stream = a
        .export_snapshot(pb::ExportSnapshotRequest { log: "kv".into(), base_seq: c.seq })
        .await
        .unwrap()
        .into_inner();
    let mut delta = Vec::new();
    while let Some(chunk) = stream.next().await {
        delta.extend(chunk.unwrap().data);
    }
    let err = t.import_snapshot(import(delta.clone())).await.unwrap_err();
    assert_eq!(err.code(), Code::FailedPrecondition);
    assert!(err.message().contains("restore a full snapshot first"), "{}", err.message());
    let err = a
        .export_snapshot(pb::ExportSnapshotRequest { log: "kv".into(), base_seq: 999_999 })
        .await
        .unwrap_err();
    assert_eq!(err.code(), Code::FailedPrecondition);

    // The good snapshot, then the delta, import fine: the replica kept serving.
    let full = t.import_snapshot(import(snapshot)).await.unwrap().into_inner();
    assert_eq!(full.kind, "full");
    let next = t.import_snapshot(import(delta)).await.unwrap().into_inner();
    assert_eq!(next.kind, "delta");
}

/// Retention: with `retain_full: 1`, a new full backup drops the older chain (its full
/// backup and its deltas) from the catalog and deletes their objects; a restore still
/// works from what is left.
#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn retention_keeps_the_newest_chains() {
    let dir = tempfile::tempdir().unwrap();
    let backups = dir.path().join("backups");
    let destination = format!("file://{}", backups.display());
    let source =
        Plaitd::start(&dir.path().join("source"), &flags(&destination_flag("local", &destination))).unwrap();
    create_logs(&source.endpoint()).await;
    let mut a = admin(&source.endpoint()).await;
    let run =
        |delta: bool| pb::BackupRequest { destination: "local".into(), logs: vec![], delta, retain_full: 1 };
    write(&source.endpoint(), "a", 10).await;
    let first = a.backup(run(false)).await.unwrap().into_inner();
    write(&source.endpoint(), "b", 10).await;
    let first_delta = a.backup(run(true)).await.unwrap().into_inner();
    write(&source.endpoint(), "c", 10).await;
    let second = a.backup(run(false)).await.unwrap().into_inner();
    let old: Vec<String> = first.objects.iter().chain(&first_delta.objects).map(|o| o.key.clone()).collect();
    let mut deleted = second.deleted.clone();
    deleted.sort();
    let mut expected = old.clone();
    expected.sort();
    assert_eq!(deleted, expected, "the older chain is deleted whole");
    for key in &old {
        assert!(!backups.join(key).exists(), "{key} is still there");
    }
    let catalog: serde_json::Value =
        serde_json::from_slice(&std::fs::read(backups.join("catalog.json")).unwrap()).unwrap();
    assert_eq!(catalog["backups"].as_array().unwrap().len(), 2, "one full backup per log is left");
    let out = restore(&destination, &dir.path().join("restored"), &[]);
    assert!(out.status.success(), "{}", String::from_utf8_lossy(&out.stderr));
    let restored = Plaitd::start(&dir.path().join("restored"), &[]).unwrap();
    assert_eq!(roots(&restored.endpoint()).await, roots(&source.endpoint()).await);
}

/// A restore killed with SIGKILL part way leaves no half-built data directory: running
/// it again completes, and the result has the source's state.
#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn a_killed_restore_restarts_cleanly() {
    let dir = tempfile::tempdir().unwrap();
    let destination = format!("file://{}", dir.path().join("backups").display());
    let source =
        Plaitd::start(&dir.path().join("source"), &flags(&destination_flag("local", &destination))).unwrap();
    create_logs(&source.endpoint()).await;
    // Enough data that the second log's restore takes a while after the first's.
    let mut data = pb::data_client::DataClient::new(channel(&source.endpoint()).await.unwrap());
    for b in 0..40 {
        let ops = (0..500)
            .map(|i| pb::RoutedOp {
                log: if i % 2 == 0 { "kv".into() } else { "feed".into() },
                op: Some(pb::Op {
                    op: Some(if i % 2 == 0 {
                        pb::op::Op::Put(pb::KvPut {
                            key: format!("k{b}-{i}").into_bytes(),
                            value: vec![7; 200],
                        })
                    } else {
                        pb::op::Op::Append(pb::FeedAppend { value: vec![8; 200] })
                    }),
                }),
            })
            .collect();
        data.write(pb::WriteRequest { ops, concern: None }).await.unwrap();
    }
    backup(&source.endpoint(), "local", false).await;
    let target = dir.path().join("restored");
    let mut child = plait_tests::plaitd_command()
        .unwrap()
        .args(["restore", "--from", &destination, "--data-dir"])
        .arg(&target)
        .stderr(std::process::Stdio::piped())
        .spawn()
        .unwrap();
    // Kill it as soon as it reports its first restored snapshot.
    let stderr = child.stderr.take().unwrap();
    let mut first = String::new();
    std::io::BufRead::read_line(&mut std::io::BufReader::new(stderr), &mut first).unwrap();
    child.kill().unwrap();
    child.wait().unwrap();
    if !target.exists() {
        // Killed before the end: nothing half-built is in place; a second run completes.
        let out = restore(&destination, &target, &[]);
        assert!(out.status.success(), "{}", String::from_utf8_lossy(&out.stderr));
        assert!(
            String::from_utf8_lossy(&out.stderr).contains("interrupted restore"),
            "the staging directory was cleared"
        );
    }
    let restored = Plaitd::start(&target, &[]).unwrap();
    assert_eq!(roots(&restored.endpoint()).await, roots(&source.endpoint()).await);

    // Whatever moment the kill above hit, this is the state a kill mid-restore leaves: a
    // staging directory with partial contents. The next restore clears it and completes.
    let again = dir.path().join("again");
    let staging = dir.path().join("again.restoring");
    std::fs::create_dir_all(staging.join("tmp")).unwrap();
    std::fs::write(staging.join("tmp/partial.snap"), b"half a snapshot").unwrap();
    let out = restore(&destination, &again, &[]);
    assert!(out.status.success(), "{}", String::from_utf8_lossy(&out.stderr));
    assert!(String::from_utf8_lossy(&out.stderr).contains("interrupted restore"));
    assert!(!staging.exists(), "the staging directory became the data directory");
    let restored_again = Plaitd::start(&again, &[]).unwrap();
    assert_eq!(roots(&restored_again.endpoint()).await, roots(&source.endpoint()).await);
}

/// Wrong credentials against an S3 server that checks them are refused with
/// PERMISSION_DENIED (not UNAVAILABLE, which clients would retry forever) and an error
/// that says to check the credentials; the right ones work; the replica keeps serving.
#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn wrong_credentials_are_named() {
    let s3 = plait_tests::s3::CheckingS3Server::start("plait", "right-key", "right-secret").unwrap();
    let dir = tempfile::tempdir().unwrap();
    let bucket = destination_flag("bucket", "s3://plait/backups");
    let wrong = Plaitd::start_with_env(
        &dir.path().join("wrong"),
        &flags(&bucket),
        s3.env("right-key", "wrong-secret"),
    )
    .unwrap();
    create_logs(&wrong.endpoint()).await;
    write(&wrong.endpoint(), "a", 3).await;
    let err = admin(&wrong.endpoint())
        .await
        .backup(pb::BackupRequest { destination: "bucket".into(), ..Default::default() })
        .await
        .unwrap_err();
    assert_eq!(err.code(), Code::PermissionDenied, "{}", err.message());
    assert!(err.message().contains("check the credentials"), "{}", err.message());
    write(&wrong.endpoint(), "b", 1).await;

    let right = Plaitd::start_with_env(
        &dir.path().join("right"),
        &flags(&bucket),
        s3.env("right-key", "right-secret"),
    )
    .unwrap();
    create_logs(&right.endpoint()).await;
    write(&right.endpoint(), "a", 3).await;
    backup(&right.endpoint(), "bucket", false).await;
    let out =
        restore("s3://plait/backups", &dir.path().join("restored"), &s3.env("right-key", "wrong-secret"));
    assert!(!out.status.success());
    assert!(
        String::from_utf8_lossy(&out.stderr).contains("check the credentials"),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
    assert!(!dir.path().join("restored").exists(), "nothing was created");
}

/// Every file under `dir` with its bytes, sorted: what a refused request must not change.
fn tree(dir: &std::path::Path) -> Vec<(std::path::PathBuf, Vec<u8>)> {
    let mut out = Vec::new();
    let mut stack = vec![dir.to_path_buf()];
    while let Some(next) = stack.pop() {
        for entry in std::fs::read_dir(&next).unwrap() {
            let path = entry.unwrap().path();
            if path.is_dir() {
                stack.push(path);
            } else {
                out.push((path.clone(), std::fs::read(&path).unwrap()));
            }
        }
    }
    out.sort();
    out
}

/// A restored cluster cannot write into its source's backups: the source's replica
/// (`--backup-owner shop/orders`) claims the destination with its first backup; a
/// replica restored from it and started with another owner on the same destination is
/// refused with FAILED_PRECONDITION naming both owners, and the destination is byte for
/// byte as it was; that replica keeps serving (a write goes through), backs up to a
/// destination of its own, and its data directory checks clean; the source's next
/// backup goes on.
#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn a_restored_cluster_cannot_back_up_into_its_sources_destination() {
    let dir = tempfile::tempdir().unwrap();
    let backups = dir.path().join("backups");
    let url = format!("file://{}", backups.display());
    let owned = |owner: &str, extra: &[String]| {
        [
            vec!["--backup-owner".to_owned(), owner.to_owned()],
            destination_flag("default", &url).to_vec(),
            extra.to_vec(),
        ]
        .concat()
    };
    let source = Plaitd::start(&dir.path().join("source"), &flags(&owned("shop/orders", &[]))).unwrap();
    create_logs(&source.endpoint()).await;
    write(&source.endpoint(), "a", 5).await;
    backup(&source.endpoint(), "default", false).await;
    let catalog = std::fs::read_to_string(backups.join("catalog.json")).unwrap();
    assert!(catalog.contains("\"owner\": \"shop/orders\""), "{catalog}");

    let restored_dir = dir.path().join("restored");
    let out = restore(&url, &restored_dir, &[]);
    assert!(out.status.success(), "{}", String::from_utf8_lossy(&out.stderr));
    let own = format!("file://{}", dir.path().join("own").display());
    let mut restored =
        Plaitd::start(&restored_dir, &flags(&owned("shop/restored", &destination_flag("own", &own))))
            .unwrap();
    let before = tree(&backups);
    let err = admin(&restored.endpoint())
        .await
        .backup(pb::BackupRequest { destination: "default".into(), retain_full: 1, ..Default::default() })
        .await
        .unwrap_err();
    assert_eq!(err.code(), Code::FailedPrecondition, "{}", err.message());
    assert!(
        err.message().contains("holds the backups of shop/orders") && err.message().contains("shop/restored"),
        "{}",
        err.message()
    );
    assert_eq!(tree(&backups), before, "the refused backup left a trace in the source's destination");

    // The next valid write (to a log of its own: the restored logs trust the source's
    // writer key, which this test does not give it) and backup go through.
    let mut logs = pb::logs_client::LogsClient::new(channel(&restored.endpoint()).await.unwrap());
    let request =
        pb::CreateLogRequest { name: "fresh".into(), r#type: pb::LogType::Kv as i32, ..Default::default() };
    logs.create_log(request).await.unwrap();
    let mut data = pb::data_client::DataClient::new(channel(&restored.endpoint()).await.unwrap());
    data.write(pb::WriteRequest { ops: vec![put_op("fresh", "k", "v")], concern: None }).await.unwrap();
    assert_eq!(backup(&restored.endpoint(), "own", false).await.objects.len(), 3);
    assert_eq!(backup(&source.endpoint(), "default", true).await.objects.len(), 2);
    restored.terminate().unwrap();
    let (clean, report) = plait_tests::check(&restored.data_dir).unwrap();
    assert!(clean, "{report}");
}

/// Starts backup job `id` to `destination` (all logs, full).
async fn start_job(
    a: &mut pb::admin_client::AdminClient<tonic::transport::Channel>,
    id: &str,
    destination: &str,
    logs: Vec<String>,
) -> Result<pb::BackupJob, tonic::Status> {
    let backup = pb::BackupRequest { destination: destination.into(), logs, delta: false, retain_full: 0 };
    a.start_backup(pb::StartBackupRequest { job_id: id.into(), backup: Some(backup) })
        .await
        .map(|r| r.into_inner())
}

/// Polls job `id` until it has ended.
async fn ended(a: &pb::admin_client::AdminClient<tonic::transport::Channel>, id: &str) -> pb::BackupJob {
    let last = std::sync::Mutex::new(None);
    plait_tests::wait_until(
        std::time::Duration::from_secs(60),
        &format!("backup job {id} to end"),
        || async {
            let request = pb::GetBackupJobRequest { job_id: id.into() };
            let job = a.clone().get_backup_job(request).await.unwrap().into_inner();
            let done = job.state != pb::BackupJobState::Running as i32;
            *last.lock().unwrap() = Some(job);
            done
        },
    )
    .await
    .unwrap();
    last.into_inner().unwrap().expect("polled at least once")
}

/// Backups in the background: `StartBackup` answers at once with a job the caller named,
/// `GetBackupJob` follows it to the same result `Backup` gives (every log written,
/// progress at its total), and asking again for the same job returns it and writes
/// nothing more. Bad job ids, URLs, unknown destinations and logs are refused with the
/// right code and leave no job behind; the same id with another request is
/// ALREADY_EXISTS; a job whose destination cannot be written ends FAILED with the code
/// and message `Backup` would have given, and the replica keeps serving. A restart
/// forgets the jobs (NOT_FOUND), the data directory checks clean and writes go on.
#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn background_backup_jobs_are_named_followed_and_refused_cleanly() {
    let dir = tempfile::tempdir().unwrap();
    let backups = dir.path().join("backups");
    let broken = dir.path().join("broken");
    let destinations = [
        destination_flag("local", &format!("file://{}", backups.display())),
        destination_flag("broken", &format!("file://{}", broken.display())),
    ]
    .concat();
    let mut replica = Plaitd::start(&dir.path().join("replica"), &flags(&destinations)).unwrap();
    let endpoint = replica.endpoint();
    create_logs(&endpoint).await;
    write(&endpoint, "a", 20).await;
    let mut a = admin(&endpoint).await;

    // Refused before anything starts, and nothing remembered.
    let long = "j".repeat(129);
    for (id, destination, logs, code) in [
        ("", "local", vec![], Code::InvalidArgument),
        ("a/b", "local", vec![], Code::InvalidArgument),
        (long.as_str(), "local", vec![], Code::InvalidArgument),
        ("url", "file:///var/elsewhere", vec![], Code::InvalidArgument),
        ("unknown-destination", "nightly", vec![], Code::NotFound),
        ("unknown-log", "local", vec!["no-such-log".to_owned()], Code::NotFound),
    ] {
        let err = start_job(&mut a, id, destination, logs).await.unwrap_err();
        assert_eq!(err.code(), code, "{id:?}: {}", err.message());
        if !id.is_empty() && id.len() <= 128 && !id.contains('/') {
            let err = a.get_backup_job(pb::GetBackupJobRequest { job_id: id.into() }).await.unwrap_err();
            assert_eq!(err.code(), Code::NotFound, "a refused job {id} was remembered");
        }
    }
    assert!(!backups.join("catalog.json").exists(), "a refused job wrote something");
    let err = a.get_backup_job(pb::GetBackupJobRequest { job_id: "never".into() }).await.unwrap_err();
    assert_eq!(err.code(), Code::NotFound);
    let err = a.get_backup_job(pb::GetBackupJobRequest { job_id: "a b".into() }).await.unwrap_err();
    assert_eq!(err.code(), Code::InvalidArgument);

    // Started, followed to the end.
    let job = start_job(&mut a, "nightly-1", "local", vec![]).await.unwrap();
    assert_eq!(job.job_id, "nightly-1");
    let done = ended(&a, "nightly-1").await;
    assert_eq!(done.state, pb::BackupJobState::Completed as i32, "{done:?}");
    let result = done.result.clone().expect("a completed job has its result");
    assert_eq!(result.objects.len(), 2);
    assert_eq!((done.logs_done, done.logs_total), (2, 2));
    assert_eq!(done.bytes_written, result.objects.iter().map(|o| o.bytes).sum::<u64>());
    let catalog = std::fs::read(backups.join("catalog.json")).unwrap();

    // Asked again: the same job, nothing written.
    let again = start_job(&mut a, "nightly-1", "local", vec![]).await.unwrap();
    assert_eq!(again.result.map(|r| r.backup_id), Some(result.backup_id.clone()));
    assert_eq!(std::fs::read(backups.join("catalog.json")).unwrap(), catalog, "a second run was written");
    let err = start_job(&mut a, "nightly-1", "local", vec!["kv".into()]).await.unwrap_err();
    assert_eq!(err.code(), Code::AlreadyExists, "{}", err.message());

    // A destination that cannot be written: the job fails, the replica serves on.
    if broken.exists() {
        std::fs::remove_dir_all(&broken).unwrap();
    }
    std::fs::write(&broken, b"a file where the destination's directory should be").unwrap();
    start_job(&mut a, "broken-1", "broken", vec![]).await.unwrap();
    let failed = ended(&a, "broken-1").await;
    assert_eq!(failed.state, pb::BackupJobState::Failed as i32, "{failed:?}");
    assert_ne!(failed.error_code, Code::Ok as i32);
    assert!(!failed.error_message.is_empty());
    assert!(failed.result.is_none());
    write(&endpoint, "b", 5).await;

    // A restart forgets every job (with the destination mended: a replica refuses to
    // start with a destination it cannot create).
    std::fs::remove_file(&broken).unwrap();
    drop(a);
    replica.restart().unwrap();
    let a = admin(&replica.endpoint()).await;
    let err =
        a.clone().get_backup_job(pb::GetBackupJobRequest { job_id: "nightly-1".into() }).await.unwrap_err();
    assert_eq!(err.code(), Code::NotFound, "{}", err.message());
    drop(a);
    replica.terminate().unwrap();
    let (clean, report) = plait_tests::check(&replica.data_dir).unwrap();
    assert!(clean, "{report}");
    let replica = Plaitd::start(&dir.path().join("replica"), &flags(&destinations)).unwrap();
    write(&replica.endpoint(), "c", 1).await;
}
