//! Bad input of every kind gets the right status code and a message a person can act on;
//! nothing is stored and the replica keeps serving.

use plait_core::{EntryDraft, LogId, Op, WriterKey};
use plait_proto::pb;
use rand::SeedableRng;
use tonic::Code;

use crate::support::{Clients, connect, create, node_proof, put_op, start};

fn expect(result: Result<impl std::fmt::Debug, tonic::Status>, code: Code, words: &str) {
    let status = result.expect_err("the call should fail");
    assert_eq!(status.code(), code, "{status:?}");
    assert!(status.message().contains(words), "message {:?} should mention {words:?}", status.message());
}

async fn seq_of(c: &mut Clients, log: &str) -> u64 {
    c.logs.get_log(pb::GetLogRequest { log: log.into() }).await.unwrap().into_inner().seq
}

/// Typed writes and reads with bad arguments.
#[tokio::test]
async fn bad_writes_and_reads() {
    let (_dir, replica) = start();
    let mut c = connect(&replica).await;
    create(&mut c, "kv", pb::LogType::Kv).await;
    create(&mut c, "feed", pb::LogType::Feed).await;
    let put = |log: &str, key: Vec<u8>, value: Vec<u8>| pb::PutRequest {
        log: log.into(),
        key,
        value,
        concern: None,
    };

    expect(c.data.put(put("nope", b"k".to_vec(), b"v".to_vec())).await, Code::NotFound, "no log named");
    expect(
        c.data.put(put("", b"k".to_vec(), b"v".to_vec())).await,
        Code::InvalidArgument,
        "log must be given",
    );
    expect(
        c.data.append(pb::AppendRequest { log: "kv".into(), value: b"v".to_vec(), concern: None }).await,
        Code::InvalidArgument,
        "kv log",
    );
    expect(c.data.put(put("feed", b"k".to_vec(), b"v".to_vec())).await, Code::InvalidArgument, "feed log");
    expect(
        c.data.put(put("kv", vec![], b"v".to_vec())).await,
        Code::InvalidArgument,
        "key must not be empty",
    );
    expect(
        c.data.put(put("kv", vec![1; 2000], b"v".to_vec())).await,
        Code::InvalidArgument,
        "over the limit",
    );
    expect(
        c.data.put(put("kv", b"k".to_vec(), vec![])).await,
        Code::InvalidArgument,
        "value must not be empty",
    );
    expect(
        c.data.put(put("kv", b"k".to_vec(), vec![1; 600 * 1024])).await,
        Code::InvalidArgument,
        "over the limit",
    );
    expect(
        c.data.get(pb::GetRequest { log: "feed".into(), key: b"k".to_vec(), as_of: None }).await,
        Code::InvalidArgument,
        "kv logs",
    );
    expect(
        c.data.get(pb::GetRequest { log: "kv".into(), key: vec![], as_of: None }).await,
        Code::InvalidArgument,
        "key",
    );
    expect(
        c.data.scan(pb::ScanRequest { log: "kv".into(), limit: 1_000_000, ..Default::default() }).await,
        Code::InvalidArgument,
        "limit",
    );
    expect(
        c.data
            .read_feed(pb::ReadFeedRequest { log: "feed".into(), after: vec![1, 2, 3], ..Default::default() })
            .await,
        Code::InvalidArgument,
        "position",
    );
    expect(
        c.data.edges(pb::EdgesRequest { log: "kv".into(), node: b"n".to_vec(), ..Default::default() }).await,
        Code::InvalidArgument,
        "graph logs",
    );
    expect(
        c.data.get_entry(pb::GetEntryRequest { hash: vec![1; 5] }).await,
        Code::InvalidArgument,
        "32 bytes",
    );
    expect(c.data.get_entry(pb::GetEntryRequest { hash: vec![1; 32] }).await, Code::NotFound, "no entry");
    expect(c.data.heads(pb::HeadsRequest { log: "nope".into() }).await, Code::NotFound, "no log");
    expect(
        c.data.subscribe(pb::SubscribeRequest { log: "nope".into(), ..Default::default() }).await.map(|_| ()),
        Code::NotFound,
        "no log",
    );

    // A routed batch with one bad op stores none of its ops.
    let bad_batch = pb::WriteRequest {
        ops: vec![
            put_op("kv", "fine", "1"),
            pb::RoutedOp {
                log: "kv".into(),
                op: Some(pb::Op { op: Some(pb::op::Op::Append(pb::FeedAppend { value: b"x".to_vec() })) }),
            },
        ],
        concern: None,
    };
    expect(c.data.write(bad_batch).await, Code::InvalidArgument, "ops[1]");
    expect(
        c.data
            .write(pb::WriteRequest { ops: vec![pb::RoutedOp { log: "kv".into(), op: None }], concern: None })
            .await,
        Code::InvalidArgument,
        "ops[0].op is missing",
    );
    expect(
        c.data.write(pb::WriteRequest { ops: vec![], concern: None }).await,
        Code::InvalidArgument,
        "must not be empty",
    );
    let missing_log =
        pb::WriteRequest { ops: vec![put_op("kv", "a", "1"), put_op("nope", "a", "1")], concern: None };
    expect(c.data.write(missing_log).await, Code::NotFound, "ops[1]");

    // An oversized message is refused by the transport limit, not by a crash.
    let huge = c.data.put(put("kv", b"k".to_vec(), vec![7; 17 * 1024 * 1024])).await;
    assert!(huge.is_err());

    assert_eq!(seq_of(&mut c, "kv").await, 0, "nothing was stored");
    assert_eq!(seq_of(&mut c, "feed").await, 0, "nothing was stored");
    c.data.put(put("kv", b"k".to_vec(), b"v".to_vec())).await.expect("the replica keeps serving");
    assert_eq!(seq_of(&mut c, "kv").await, 1);
}

/// Creating logs with missing or contradictory fields.
#[tokio::test]
async fn bad_log_definitions() {
    let (_dir, replica) = start();
    let mut c = connect(&replica).await;
    let req = |name: &str, t: pb::LogType| pb::CreateLogRequest {
        name: name.into(),
        r#type: t as i32,
        ..Default::default()
    };
    expect(
        c.logs.create_log(req("x", pb::LogType::Unspecified)).await,
        Code::InvalidArgument,
        "type is unspecified",
    );
    expect(c.logs.create_log(req("has space", pb::LogType::Kv)).await, Code::InvalidArgument, "name");
    expect(c.logs.create_log(req("", pb::LogType::Kv)).await, Code::InvalidArgument, "name");
    expect(
        c.logs.create_log(pb::CreateLogRequest { r#type: 42, ..req("x", pb::LogType::Kv) }).await,
        Code::InvalidArgument,
        "unknown value 42",
    );
    expect(
        c.logs
            .create_log(pb::CreateLogRequest { writers: vec![vec![1; 31]], ..req("x", pb::LogType::Kv) })
            .await,
        Code::InvalidArgument,
        "writers[0]",
    );
    expect(
        c.logs
            .create_log(pb::CreateLogRequest {
                open: true,
                writers: vec![vec![1; 32]],
                ..req("x", pb::LogType::Kv)
            })
            .await,
        Code::InvalidArgument,
        "open",
    );
    expect(
        c.logs
            .create_log(pb::CreateLogRequest { exclude_replica_writer: true, ..req("x", pb::LogType::Kv) })
            .await,
        Code::InvalidArgument,
        "nobody could write",
    );
    expect(
        c.logs
            .create_log(pb::CreateLogRequest {
                signed_manifest: vec![0x83, 1, 2],
                ..req("x", pb::LogType::Kv)
            })
            .await,
        Code::InvalidArgument,
        "signed_manifest",
    );
    create(&mut c, "taken", pb::LogType::Kv).await;
    expect(
        c.logs.create_log(req("taken", pb::LogType::Feed)).await,
        Code::AlreadyExists,
        "choose another name",
    );
    expect(c.logs.drop_log(pb::DropLogRequest { log: "nope".into() }).await, Code::NotFound, "no log");
    let logs = c.logs.list_logs(pb::ListLogsRequest {}).await.unwrap().into_inner().logs;
    assert_eq!(logs.len(), 1, "no bad definition created a log");
}

/// Pre-signed entries that are malformed, non-canonical, tampered, badly signed, from a
/// writer not on the ACL, for an unknown log or with a stale clock are refused whole.
#[tokio::test]
async fn bad_submitted_entries() {
    let (_dir, replica) = start();
    let mut c = connect(&replica).await;
    let alice = WriterKey::generate(&mut rand::rngs::StdRng::seed_from_u64(1));
    let mallory = WriterKey::generate(&mut rand::rngs::StdRng::seed_from_u64(2));
    let info = c
        .logs
        .create_log(pb::CreateLogRequest {
            name: "kv".into(),
            r#type: pb::LogType::Kv as i32,
            writers: vec![alice.public().0.to_vec()],
            ..Default::default()
        })
        .await
        .unwrap()
        .into_inner();
    let log = LogId::from_slice(&info.log_id).unwrap();
    let make = |key: &WriterKey, log: LogId, time: u64, next: Vec<plait_core::EntryHash>, ops: Vec<Op>| {
        EntryDraft { log, time, next, refs: vec![], ops }.sign(key).unwrap().into_bytes()
    };
    let put = || vec![Op::Put { key: b"k".to_vec(), value: b"v".to_vec() }];
    let good = make(&alice, log, 1, vec![], put());
    let submit = |entries: Vec<Vec<u8>>| pb::SubmitRequest { entries };

    expect(c.data.submit(submit(vec![])).await, Code::InvalidArgument, "must not be empty");
    expect(c.data.submit(submit(vec![b"garbage".to_vec()])).await, Code::InvalidArgument, "entries[0]");
    let mut non_canonical = vec![good[0], 0x18, 0x01];
    non_canonical.extend_from_slice(&good[2..]);
    expect(c.data.submit(submit(vec![non_canonical])).await, Code::InvalidArgument, "not canonical");
    let mut tampered = good.clone();
    let at = tampered.windows(1).rposition(|w| w == b"v").expect("value byte");
    tampered[at] = b'w';
    expect(c.data.submit(submit(vec![good.clone(), tampered])).await, Code::InvalidArgument, "entries[1]");
    let mut bad_sig = good.clone();
    let last = bad_sig.len() - 1;
    bad_sig[last] ^= 1;
    expect(c.data.submit(submit(vec![bad_sig])).await, Code::InvalidArgument, "bad signature");
    expect(
        c.data.submit(submit(vec![make(&mallory, log, 1, vec![], put())])).await,
        Code::PermissionDenied,
        "not on the ACL",
    );
    expect(
        c.data.submit(submit(vec![make(&alice, LogId([5; 32]), 1, vec![], put())])).await,
        Code::NotFound,
        "not hosted",
    );
    let feed_op = make(&alice, log, 1, vec![], vec![Op::Append { value: b"x".to_vec() }]);
    expect(c.data.submit(submit(vec![feed_op])).await, Code::InvalidArgument, "does not accept");
    let parent = plait_core::DecodedEntry::decode(&good).unwrap().hash();
    let stale = make(&alice, log, 1, vec![parent], put());
    expect(c.data.submit(submit(vec![good.clone(), stale])).await, Code::InvalidArgument, "does not exceed");

    assert_eq!(seq_of(&mut c, "kv").await, 0, "nothing of a refused request was stored");
    let ok = c.data.submit(submit(vec![good])).await.expect("the replica keeps serving").into_inner();
    assert_eq!(ok.results[0].seq, 1);
}

/// A Watch challenge that is not 32 bytes, or that comes without the caller's node proof
/// (holds are reported only to a proven caller), is refused with INVALID_ARGUMENT and a
/// message that says what is valid; a good one is answered with the replica's proof of
/// its node id, over the caller's id and the challenge. Nothing is stored by any of it,
/// the next write is seq 1 and the data directory is clean.
#[tokio::test]
async fn bad_watch_challenges() {
    let (_dir, mut replica) = start();
    let mut c = connect(&replica).await;
    create(&mut c, "kv", pb::LogType::Kv).await;
    let status = c.admin.status(pb::StatusRequest {}).await.unwrap().into_inner();
    let mut sync = pb::sync_client::SyncClient::new(c.channel.clone());
    let caller = WriterKey::generate(&mut rand::rngs::StdRng::seed_from_u64(9));
    let identity = Some(pb::PeerIdentity { node_id: caller.public().0.to_vec(), epoch: vec![3; 16] });
    let watch = |challenge: Vec<u8>, proven: bool| {
        let mut request =
            tonic::Request::new(pb::WatchRequest { from: identity.clone(), challenge, entries: false });
        if proven {
            let proof = node_proof(&caller, &status.node_id).parse().unwrap();
            request.metadata_mut().insert("plait-node-proof", proof);
        }
        request
    };
    expect(sync.watch(watch(vec![1; 5], true)).await, Code::InvalidArgument, "it must be 32");
    expect(sync.watch(watch(vec![1; 33], true)).await, Code::InvalidArgument, "it must be 32");
    expect(sync.watch(watch(vec![1; 32], false)).await, Code::InvalidArgument, "node proof");

    let challenge = [4u8; 32];
    let response = sync.watch(watch(challenge.to_vec(), true)).await.expect("a proven caller's challenge");
    let proof = response.metadata().get("plait-server-proof").expect("the server's proof").to_str().unwrap();
    let mut message = caller.public().0.to_vec();
    message.extend_from_slice(&challenge);
    let server = plait_core::PublicKey::from_slice(&status.node_id).unwrap();
    let signature = plait_core::Signature::from_hex(proof).unwrap();
    assert!(
        plait_core::verify_statement(&server, "plait.v1 server proof", &message, &signature),
        "the proof is the replica's node key over the caller and the challenge"
    );
    let first = response.into_inner().message().await.unwrap().expect("the first notice");
    assert_eq!((first.seq, first.held), (0, 0), "nothing written, nothing of the caller's held");

    assert_eq!(seq_of(&mut c, "kv").await, 0, "nothing of a refused request was stored");
    let put = pb::PutRequest { log: "kv".into(), key: b"k".to_vec(), value: b"v".to_vec(), concern: None };
    assert_eq!(c.data.put(put).await.expect("the replica keeps serving").into_inner().seq, 1);
    replica.terminate().unwrap();
    let (clean, report) = plait_tests::check(&replica.data_dir).unwrap();
    assert!(clean, "{report}");
}

/// A Pull that asks for more than a page may hold (over 4096 entries or 4 MiB) is refused
/// with INVALID_ARGUMENT naming the limit; one that asks for one byte gets pages of one
/// entry each (a page always holds one), and one that leaves the sizes at 0 gets the
/// server's default pages. Nothing is stored by any of it, the next write continues the
/// log and the data directory is clean.
#[tokio::test]
async fn bad_pull_page_sizes() {
    let (_dir, mut replica) = start();
    let mut c = connect(&replica).await;
    create(&mut c, "kv", pb::LogType::Kv).await;
    for key in [b"a", b"b", b"c"] {
        let put = pb::PutRequest { log: "kv".into(), key: key.to_vec(), value: b"v".to_vec(), concern: None };
        c.data.put(put).await.unwrap();
    }
    let status = c.admin.status(pb::StatusRequest {}).await.unwrap().into_inner();
    let mut sync = pb::sync_client::SyncClient::new(c.channel.clone());
    let pull = |page_entries: u32, page_bytes: u32| pb::PullRequest {
        log_id: status.logs[0].log_id.clone(),
        epoch: status.epoch.clone(),
        after_seq: 0,
        from: None,
        page_entries,
        omit_yours: false,
        page_bytes,
    };
    expect(sync.pull(pull(4097, 0)).await, Code::InvalidArgument, "page_entries is at most 4096");
    expect(
        sync.pull(pull(0, 4 * 1024 * 1024 + 1)).await,
        Code::InvalidArgument,
        "page_bytes is at most 4194304",
    );
    expect(sync.pull(pull(0, u32::MAX)).await, Code::InvalidArgument, "page_bytes is at most");

    let pages = |mut stream: tonic::Streaming<pb::EntryPage>| async move {
        let mut sizes = Vec::new();
        while let Some(page) = stream.message().await.unwrap() {
            // Pages of no entries only move the caller's cursor.
            if !page.entries.is_empty() {
                sizes.push(page.entries.len());
            }
        }
        sizes
    };
    let one_byte = sync.pull(pull(0, 1)).await.expect("a one-byte page size").into_inner();
    assert_eq!(pages(one_byte).await, vec![1, 1, 1], "one entry per page, however small the size asked");
    let default = sync.pull(pull(0, 0)).await.expect("default page sizes").into_inner();
    assert_eq!(pages(default).await, vec![3], "the three entries in one default page");

    assert_eq!(seq_of(&mut c, "kv").await, 3, "nothing of a refused request was stored");
    let put = pb::PutRequest { log: "kv".into(), key: b"d".to_vec(), value: b"v".to_vec(), concern: None };
    assert_eq!(c.data.put(put).await.expect("the replica keeps serving").into_inner().seq, 4);
    replica.terminate().unwrap();
    let (clean, report) = plait_tests::check(&replica.data_dir).unwrap();
    assert!(clean, "{report}");
}

/// Reads of the past and History with bad points and targets: a seq past the log's end
/// and a malformed checkpoint are INVALID_ARGUMENT, an unknown checkpoint is NOT_FOUND, and
/// each message says what is valid; History without a target, of the wrong log type or
/// with a foreign continuation is refused. A good read as of a recorded checkpoint, in
/// between, is answered. Nothing is stored, the next write continues the log and the data
/// directory is clean.
#[tokio::test]
async fn bad_points_in_the_past_and_bad_history_requests() {
    let (_dir, mut replica) = start();
    let mut c = connect(&replica).await;
    create(&mut c, "kv", pb::LogType::Kv).await;
    create(&mut c, "feed", pb::LogType::Feed).await;
    for value in ["1", "2"] {
        c.data.write(pb::WriteRequest { ops: vec![put_op("kv", "k", value)], concern: None }).await.unwrap();
    }
    let taken = c.admin.checkpoint(pb::CheckpointRequest { log: "kv".into() }).await.unwrap().into_inner();
    let seq = |s| Some(pb::AsOf { point: Some(pb::as_of::Point::Seq(s)) });
    let root = |r: Vec<u8>| Some(pb::AsOf { point: Some(pb::as_of::Point::Checkpoint(r)) });
    let get = |as_of| pb::GetRequest { log: "kv".into(), key: b"k".to_vec(), as_of };

    expect(c.data.get(get(seq(3))).await, Code::InvalidArgument, "holds seqs 0 to 2");
    expect(c.data.get(get(root(vec![7; 5]))).await, Code::InvalidArgument, "32 bytes");
    expect(c.data.get(get(Some(pb::AsOf { point: None }))).await, Code::InvalidArgument, "names no point");
    expect(c.data.get(get(root(vec![7; 32]))).await, Code::NotFound, &hex::encode(&taken.state_root));
    let scan = pb::ScanRequest { log: "kv".into(), as_of: seq(9), ..Default::default() };
    expect(c.data.scan(scan).await, Code::InvalidArgument, "past the end");
    let feed = pb::ReadFeedRequest { log: "feed".into(), as_of: root(vec![1; 32]), ..Default::default() };
    expect(c.data.read_feed(feed).await, Code::NotFound, "it has recorded none");
    // One caller's refused read does not disturb another's good one.
    let good = c.data.get(get(root(taken.state_root.clone()))).await.unwrap().into_inner();
    assert_eq!(good.value, b"2");
    let first = c.data.get(get(seq(1))).await.unwrap().into_inner();
    assert_eq!((first.found, first.value.as_slice()), (true, b"1".as_slice()));

    use pb::history_request::Target;
    let history =
        |log: &str, target, after: Vec<u8>| pb::HistoryRequest { log: log.into(), target, limit: 0, after };
    expect(c.data.history(history("kv", None, vec![])).await, Code::InvalidArgument, "needs a target");
    let edge = Target::Edge(pb::EdgeRef { src: b"a".to_vec(), label: "l".into(), dst: b"b".to_vec() });
    expect(c.data.history(history("kv", Some(edge), vec![])).await, Code::InvalidArgument, "graph");
    expect(
        c.data.history(history("kv", Some(Target::Key(b"k".to_vec())), vec![1; 3])).await,
        Code::InvalidArgument,
        "next_after",
    );
    expect(
        c.data.history(history("kv", Some(Target::Key(vec![])), vec![])).await,
        Code::InvalidArgument,
        "empty",
    );
    let writer = |w: Vec<u8>, from, to| Some(Target::Writer(pb::WriterRange { writer: w, from, to }));
    expect(
        c.data.history(history("kv", writer(vec![1; 3], 1, 0), vec![])).await,
        Code::InvalidArgument,
        "writer",
    );
    let node_key = c.admin.status(pb::StatusRequest {}).await.unwrap().into_inner().node_id;
    expect(
        c.data.history(history("kv", writer(node_key.clone(), 5, 2), vec![])).await,
        Code::InvalidArgument,
        "after",
    );
    expect(
        c.data.history(history("nope", Some(Target::Key(b"k".to_vec())), vec![])).await,
        Code::NotFound,
        "nope",
    );
    let versions =
        c.data.history(history("kv", Some(Target::Key(b"k".to_vec())), vec![])).await.unwrap().into_inner();
    let values: Vec<_> = versions.versions.iter().map(|v| (v.seq, v.live, v.value.clone())).collect();
    assert_eq!(values, vec![(1, true, b"1".to_vec()), (2, true, b"2".to_vec())]);

    assert_eq!(seq_of(&mut c, "kv").await, 2, "nothing of a refused request was stored");
    c.data.write(pb::WriteRequest { ops: vec![put_op("kv", "k", "3")], concern: None }).await.unwrap();
    assert_eq!(seq_of(&mut c, "kv").await, 3, "the next write continues the log");
    replica.terminate().unwrap();
    let (clean, report) = plait_tests::check(&replica.data_dir).unwrap();
    assert!(clean, "{report}");
}

/// Durable consumers refuse bad names (commit, delete and Subscribe alike), a commit past
/// the log's end, a new consumer over the limit per log, and unknown consumers or logs,
/// each with its code and a message that says what is valid. A good commit in between is
/// answered; nothing of a refusal is stored; the next write continues the log and the data
/// directory is clean.
#[tokio::test]
async fn bad_consumer_requests() {
    let dir = tempfile::tempdir().unwrap();
    let mut replica =
        plait_tests::Plaitd::start(&dir.path().join("data"), &["--consumers-per-log-max", "2"]).unwrap();
    let mut c = connect(&replica).await;
    create(&mut c, "kv", pb::LogType::Kv).await;
    c.data.write(pb::WriteRequest { ops: vec![put_op("kv", "k", "1")], concern: None }).await.unwrap();
    let commit =
        |consumer: &str, seq| pb::CommitConsumerRequest { log: "kv".into(), consumer: consumer.into(), seq };
    let long = "x".repeat(129);
    for bad in ["", long.as_str(), "a/b", "white space", "ünï"] {
        expect(c.data.commit_consumer(commit(bad, 0)).await, Code::InvalidArgument, "consumer name");
        let delete = pb::DeleteConsumerRequest { log: "kv".into(), consumer: bad.into() };
        expect(c.data.delete_consumer(delete).await, Code::InvalidArgument, "consumer name");
        // An empty consumer in Subscribe is no consumer (proto3's default).
        if !bad.is_empty() {
            let subscribe =
                pb::SubscribeRequest { log: "kv".into(), consumer: bad.into(), ..Default::default() };
            expect(c.data.subscribe(subscribe).await.map(|_| ()), Code::InvalidArgument, "consumer name");
        }
    }
    expect(c.data.commit_consumer(commit("a", 2)).await, Code::InvalidArgument, "holds seqs 0 to 1");
    let nope = pb::CommitConsumerRequest { log: "nope".into(), consumer: "a".into(), seq: 0 };
    expect(c.data.commit_consumer(nope).await, Code::NotFound, "nope");
    let unknown = pb::DeleteConsumerRequest { log: "kv".into(), consumer: "a".into() };
    expect(c.data.delete_consumer(unknown).await, Code::NotFound, "no consumer \"a\"");
    // Good commits between the refusals are answered; the third new consumer is over the
    // limit, by commit and by Subscribe, while the existing ones still commit.
    let ok = c.data.commit_consumer(commit("a", 1)).await.unwrap().into_inner();
    assert_eq!((ok.committed_seq, ok.lag), (1, 0));
    c.data.commit_consumer(commit("b", 0)).await.unwrap();
    expect(c.data.commit_consumer(commit("c", 0)).await, Code::ResourceExhausted, "has 2 consumers");
    let over = pb::SubscribeRequest { log: "kv".into(), consumer: "c".into(), ..Default::default() };
    expect(c.data.subscribe(over).await.map(|_| ()), Code::ResourceExhausted, "has 2 consumers");
    c.data.commit_consumer(commit("b", 1)).await.unwrap();

    let listed =
        c.data.list_consumers(pb::ListConsumersRequest { log: "kv".into() }).await.unwrap().into_inner();
    let names: Vec<_> = listed.consumers.iter().map(|c| (c.name.as_str(), c.committed_seq)).collect();
    assert_eq!((names, listed.limit), (vec![("a", 1), ("b", 1)], 2), "nothing of a refusal was stored");
    assert_eq!(seq_of(&mut c, "kv").await, 1);
    c.data.write(pb::WriteRequest { ops: vec![put_op("kv", "k", "2")], concern: None }).await.unwrap();
    assert_eq!(seq_of(&mut c, "kv").await, 2, "the next write continues the log");
    replica.terminate().unwrap();
    let (clean, report) = plait_tests::check(&replica.data_dir).unwrap();
    assert!(clean, "{report}");
}
