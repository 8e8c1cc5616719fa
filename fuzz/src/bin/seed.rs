//! Writes the seed corpus, `fuzz/corpus/<target>/`, from the real encoders: signed
//! entries and manifests, snapshot streams from `SnapshotWriter`, protobuf messages from
//! prost, and backup catalogs in the replica's catalog.json layout.
//!
//! Deterministic (fixed keys, no randomness), so running it again rewrites the same
//! files. It overwrites the files it names and leaves other files alone. Run it with
//! `scripts/fuzz.sh seed` after a format change, and commit the result.

use std::path::{Path, PathBuf};

use plait_core::{
    Checkpoint, EntryDraft, EntryHash, LogId, LogType, Manifest, Op, SignedManifest, SnapshotHeader,
    SnapshotWriter, StateRoot, VerifiedEntry, WriterKey, Writers,
};
use plait_fuzz::proto::selector;
use plait_proto::{convert, pb};
use prost::Message;

struct Corpus {
    root: PathBuf,
    written: usize,
    bytes: usize,
}

impl Corpus {
    fn put(&mut self, target: &str, name: &str, data: &[u8]) {
        let dir = self.root.join(target);
        std::fs::create_dir_all(&dir).unwrap_or_else(|e| panic!("cannot create {}: {e}", dir.display()));
        let path = dir.join(name);
        std::fs::write(&path, data).unwrap_or_else(|e| panic!("cannot write {}: {e}", path.display()));
        self.written += 1;
        self.bytes += data.len();
    }

    fn proto<M: Message>(&mut self, kind: &str, name: &str, message: &M) {
        let mut data = vec![selector(kind)];
        data.extend_from_slice(&message.encode_to_vec());
        self.put("proto", &format!("{kind}-{name}"), &data);
    }
}

fn key(n: u8) -> WriterKey {
    WriterKey::from_secret([n; 32])
}

fn manifest(
    name: &str,
    log_type: LogType,
    writers: Writers,
    options: Vec<(String, String)>,
) -> SignedManifest {
    Manifest {
        name: name.into(),
        log_type,
        writers,
        created_by: key(1).public(),
        created_at_lamport: 0,
        options,
    }
    .sign(&key(1))
    .expect("seed manifests are valid")
}

fn sign(log: LogId, time: u64, next: Vec<EntryHash>, ops: Vec<Op>, writer: &WriterKey) -> VerifiedEntry {
    EntryDraft { log, time, next, refs: Vec::new(), ops }.sign(writer).expect("seed entries are valid")
}

/// A small DAG of a kv log: a root, two concurrent children by two writers, a merge.
fn kv_history(log: LogId) -> Vec<VerifiedEntry> {
    let root =
        sign(log, 1, vec![], vec![Op::Put { key: b"theme".to_vec(), value: b"dark".to_vec() }], &key(1));
    let a = sign(
        log,
        2,
        vec![root.hash()],
        vec![Op::Put { key: b"theme".to_vec(), value: b"light".to_vec() }],
        &key(1),
    );
    let b = sign(log, 2, vec![root.hash()], vec![Op::Delete { key: b"theme".to_vec() }], &key(2));
    let merge = sign(
        log,
        3,
        vec![a.hash(), b.hash()],
        vec![
            Op::Put { key: b"lang".to_vec(), value: b"en".to_vec() },
            Op::Put { key: vec![0, 1, 2, 0xff], value: vec![0; 40] },
        ],
        &key(1),
    );
    vec![root, a, b, merge]
}

fn checkpoint(log: LogId, entries: &[VerifiedEntry], seq: u64) -> Checkpoint {
    let mut root = StateRoot::new();
    for e in entries.iter().take(seq as usize) {
        root.push(&e.hash().0, e.bytes());
    }
    let heads = entries.get(seq as usize - 1).map(|e| vec![e.hash()]).unwrap_or_default();
    Checkpoint {
        log,
        epoch: [7; 16],
        seq,
        heads,
        state_root: root.finish(),
        n_entries: seq,
        n_ops: entries.iter().take(seq as usize).map(|e| e.entry().ops.len() as u64).sum(),
    }
}

fn snapshot(manifest: &SignedManifest, entries: &[VerifiedEntry], base: Option<u64>) -> Vec<u8> {
    let log = manifest.log_id();
    let seq = entries.len() as u64;
    let header = SnapshotHeader {
        manifest: manifest.bytes().to_vec(),
        checkpoint: checkpoint(log, entries, seq.max(1)),
        base: base.map(|b| checkpoint(log, entries, b)),
    };
    let (mut writer, mut out) = SnapshotWriter::start(&header);
    for (i, e) in entries.iter().enumerate().skip(base.unwrap_or(0) as usize) {
        out.extend(writer.entry(i as u64 + 1, e.bytes()));
    }
    out.extend(writer.finish());
    out
}

fn peer() -> Option<pb::PeerIdentity> {
    Some(pb::PeerIdentity { node_id: key(9).public().0.to_vec(), epoch: vec![3; 16] })
}

fn main() {
    let root = std::env::args_os()
        .nth(1)
        .map(PathBuf::from)
        .unwrap_or_else(|| Path::new(env!("CARGO_MANIFEST_DIR")).join("corpus"));
    let mut c = Corpus { root, written: 0, bytes: 0 };

    // Manifests: every type, open and closed ACLs, options, the longest name.
    let kv = manifest("settings", LogType::Kv, Writers::keys(vec![key(1).public(), key(2).public()]), vec![]);
    let feed = manifest("chat", LogType::Feed, Writers::Open, vec![]);
    let graph = manifest(
        "people",
        LogType::Graph,
        Writers::keys(vec![key(1).public()]),
        vec![("color".into(), "blue".into()), ("retention".into(), "30d".into())],
    );
    let long = manifest(
        &"n".repeat(128),
        LogType::Kv,
        Writers::keys((1..=5).map(|n| key(n).public()).collect()),
        vec![],
    );
    let mut lamport = long.manifest().clone();
    lamport.name = "late.log_v2".into();
    lamport.created_at_lamport = u64::MAX;
    let lamport = lamport.sign(&key(1)).expect("valid");
    for (name, m) in [
        ("kv", &kv),
        ("feed-open", &feed),
        ("graph-options", &graph),
        ("long-name", &long),
        ("lamport", &lamport),
    ] {
        c.put("manifest", name, m.bytes());
    }

    // Entries: every op, parents and refs, several writers, bounds.
    let kv_log = kv.log_id();
    let history = kv_history(kv_log);
    for (i, e) in history.iter().enumerate() {
        c.put("entry", &format!("kv-history-{i}"), e.bytes());
    }
    let feed_log = feed.log_id();
    let graph_log = graph.log_id();
    let singles: Vec<(&str, VerifiedEntry)> = vec![
        ("feed-append", sign(feed_log, 1, vec![], vec![Op::Append { value: b"hello".to_vec() }], &key(3))),
        (
            "feed-batch",
            sign(
                feed_log,
                9,
                vec![],
                (0..100u32).map(|i| Op::Append { value: i.to_string().into_bytes() }).collect(),
                &key(3),
            ),
        ),
        (
            "feed-big-value",
            sign(feed_log, 2, vec![], vec![Op::Append { value: vec![0xab; 16 * 1024] }], &key(3)),
        ),
        (
            "graph-link",
            sign(
                graph_log,
                1,
                vec![],
                vec![Op::Link {
                    src: b"ann".to_vec(),
                    label: "knows".into(),
                    dst: b"bob".to_vec(),
                    props: b"{}".to_vec(),
                }],
                &key(1),
            ),
        ),
        (
            "graph-unlink-unicode",
            sign(
                graph_log,
                5,
                vec![EntryHash([4; 32])],
                vec![Op::Unlink { src: b"ann".to_vec(), label: "kennt ✓".into(), dst: b"bob".to_vec() }],
                &key(1),
            ),
        ),
        (
            "graph-empty-label",
            sign(
                graph_log,
                2,
                vec![],
                vec![Op::Link { src: vec![1], label: String::new(), dst: vec![2], props: vec![] }],
                &key(1),
            ),
        ),
        ("kv-time-max", sign(kv_log, 1 << 62, vec![], vec![Op::Delete { key: vec![0xff; 1024] }], &key(2))),
        (
            "mixed-ops",
            sign(
                kv_log,
                4,
                vec![],
                vec![
                    Op::Append { value: vec![1] },
                    Op::Put { key: vec![2], value: vec![3] },
                    Op::Delete { key: vec![4] },
                    Op::Link { src: vec![5], label: "l".into(), dst: vec![6], props: vec![7] },
                    Op::Unlink { src: vec![8], label: "m".into(), dst: vec![9] },
                ],
                &key(4),
            ),
        ),
    ];
    for (name, e) in &singles {
        c.put("entry", name, e.bytes());
    }
    let many_parents = EntryDraft {
        log: kv_log,
        time: 1000,
        next: (0..40u8).map(|i| EntryHash([i; 32])).collect(),
        refs: (100..110u8).map(|i| EntryHash([i; 32])).collect(),
        ops: vec![Op::Put { key: b"k".to_vec(), value: b"v".to_vec() }],
    }
    .sign(&key(5))
    .expect("valid");
    c.put("entry", "parents-and-refs", many_parents.bytes());

    // Snapshots: full and delta, empty and not, under every kind of chunking. The first
    // byte picks the chunking (see plait_fuzz::snapshot::chunk_sizes).
    let full = snapshot(&kv, &history, None);
    let delta = snapshot(&kv, &history, Some(2));
    let one = snapshot(&feed, &singles[..1].iter().map(|(_, e)| e.clone()).collect::<Vec<_>>(), None);
    let mut empty_header = SnapshotHeader {
        manifest: graph.bytes().to_vec(),
        checkpoint: checkpoint(graph_log, &[], 1),
        base: None,
    };
    empty_header.checkpoint.seq = 0;
    empty_header.checkpoint.n_entries = 0;
    let (writer, mut empty) = SnapshotWriter::start(&empty_header);
    empty.extend(writer.finish());
    for (name, selector, stream) in [
        ("full-whole", 0u8, &full),
        ("full-bytewise", 8, &full),
        ("full-chunks-7", 2, &full),
        ("full-chunks-100", 4, &full),
        ("delta-whole", 0, &delta),
        ("delta-chunks-16", 3, &delta),
        ("one-entry-chunks-3", 1, &one),
        ("empty-whole", 0, &empty),
        ("empty-chunks-4096", 6, &empty),
    ] {
        let mut data = vec![selector];
        data.extend_from_slice(stream);
        c.put("snapshot", name, &data);
    }
    let mut truncated = vec![5u8];
    truncated.extend_from_slice(&full[..full.len() - 45]);
    c.put("snapshot", "truncated-before-trailer", &truncated);
    let mut trailing = vec![0u8];
    trailing.extend_from_slice(&full);
    trailing.extend_from_slice(b"extra");
    c.put("snapshot", "bytes-after-trailer", &trailing);

    // Protobuf messages, one or more per kind.
    let concern = Some(pb::WriteConcern { replicas: 3, timeout_ms: 5000 });
    c.proto(
        "AppendRequest",
        "feed",
        &pb::AppendRequest { log: "chat".into(), value: b"hi".to_vec(), concern },
    );
    c.proto(
        "PutRequest",
        "kv",
        &pb::PutRequest {
            log: "settings".into(),
            key: b"theme".to_vec(),
            value: b"dark".to_vec(),
            concern: None,
        },
    );
    c.proto(
        "PutRequest",
        "by-id",
        &pb::PutRequest { log: kv_log.to_hex(), key: b"k".to_vec(), value: vec![0; 600], concern },
    );
    c.proto(
        "DeleteRequest",
        "kv",
        &pb::DeleteRequest { log: "settings".into(), key: b"theme".to_vec(), concern: None },
    );
    c.proto(
        "LinkRequest",
        "graph",
        &pb::LinkRequest {
            log: "people".into(),
            src: b"ann".to_vec(),
            label: "knows".into(),
            dst: b"bob".to_vec(),
            props: b"x".to_vec(),
            concern,
        },
    );
    c.proto(
        "UnlinkRequest",
        "graph",
        &pb::UnlinkRequest {
            log: "people".into(),
            src: b"ann".to_vec(),
            label: "knows".into(),
            dst: b"bob".to_vec(),
            concern: None,
        },
    );
    let routed = |log: &str, op: Op| pb::RoutedOp { log: log.into(), op: Some(pb::Op::from(op)) };
    c.proto(
        "WriteRequest",
        "every-op",
        &pb::WriteRequest {
            ops: vec![
                routed("chat", Op::Append { value: b"a".to_vec() }),
                routed("settings", Op::Put { key: b"k".to_vec(), value: b"v".to_vec() }),
                routed("settings", Op::Delete { key: b"k".to_vec() }),
                routed(
                    "people",
                    Op::Link { src: b"a".to_vec(), label: "l".into(), dst: b"b".to_vec(), props: vec![] },
                ),
                routed("people", Op::Unlink { src: b"a".to_vec(), label: "l".into(), dst: b"b".to_vec() }),
                pb::RoutedOp { log: "chat".into(), op: Some(pb::Op { op: None }) },
                pb::RoutedOp { log: "chat".into(), op: None },
            ],
            concern,
        },
    );
    c.proto(
        "SubmitRequest",
        "history",
        &pb::SubmitRequest { entries: history.iter().map(|e| e.bytes().to_vec()).collect() },
    );
    c.proto(
        "SubmitRequest",
        "mixed",
        &pb::SubmitRequest { entries: vec![singles[7].1.bytes().to_vec(), b"not an entry".to_vec()] },
    );
    c.proto(
        "GetRequest",
        "kv",
        &pb::GetRequest { log: "settings".into(), key: b"theme".to_vec(), as_of: None },
    );
    c.proto(
        "GetRequest",
        "as-of",
        &pb::GetRequest {
            log: "settings".into(),
            key: b"theme".to_vec(),
            as_of: Some(pb::AsOf { point: Some(pb::as_of::Point::Checkpoint(vec![7; 32])) }),
        },
    );
    c.proto(
        "CommitConsumerRequest",
        "commit",
        &pb::CommitConsumerRequest { log: "chat".into(), consumer: "billing.v2".into(), seq: 10 },
    );
    c.proto(
        "SubscribeRequest",
        "consumer",
        &pb::SubscribeRequest {
            log: "chat".into(),
            after_seq: 0,
            follow: true,
            consumer: "billing.v2".into(),
        },
    );
    c.proto(
        "HistoryRequest",
        "key",
        &pb::HistoryRequest {
            log: "settings".into(),
            target: Some(pb::history_request::Target::Key(b"theme".to_vec())),
            limit: 2,
            after: vec![],
        },
    );
    c.proto(
        "ScanRequest",
        "prefix",
        &pb::ScanRequest {
            log: "settings".into(),
            prefix: b"th".to_vec(),
            start: vec![],
            end: b"z".to_vec(),
            limit: 10,
            as_of: None,
        },
    );
    let position = singles[0].1.op_ids().next().expect("one op").0.to_sort_key().to_vec();
    c.proto(
        "ReadFeedRequest",
        "after",
        &pb::ReadFeedRequest { log: "chat".into(), after: position, limit: 5, tail: false, as_of: None },
    );
    c.proto(
        "ReadFeedRequest",
        "tail",
        &pb::ReadFeedRequest { log: "chat".into(), after: vec![], limit: 0, tail: true, as_of: None },
    );
    c.proto(
        "EdgesRequest",
        "in",
        &pb::EdgesRequest {
            log: "people".into(),
            node: b"bob".to_vec(),
            direction: pb::Direction::In as i32,
            label: "knows".into(),
            limit: 3,
            ..Default::default()
        },
    );
    c.proto("GetEntryRequest", "hash", &pb::GetEntryRequest { hash: history[0].hash().0.to_vec() });
    c.proto("HeadsRequest", "by-name", &pb::HeadsRequest { log: "settings".into() });
    c.proto(
        "SubscribeRequest",
        "follow",
        &pb::SubscribeRequest { log: "chat".into(), after_seq: 10, follow: true, consumer: String::new() },
    );
    c.proto(
        "CreateLogRequest",
        "fields",
        &pb::CreateLogRequest {
            name: "settings".into(),
            r#type: pb::LogType::Kv as i32,
            writers: vec![key(2).public().0.to_vec(), key(3).public().0.to_vec()],
            open: false,
            exclude_replica_writer: false,
            signed_manifest: vec![],
        },
    );
    c.proto(
        "CreateLogRequest",
        "open",
        &pb::CreateLogRequest {
            name: "chat".into(),
            r#type: pb::LogType::Feed as i32,
            open: true,
            ..Default::default()
        },
    );
    c.proto(
        "CreateLogRequest",
        "signed",
        &pb::CreateLogRequest { signed_manifest: graph.bytes().to_vec(), ..Default::default() },
    );
    c.proto("GetLogRequest", "by-id", &pb::GetLogRequest { log: graph_log.to_hex() });
    c.proto("DropLogRequest", "by-name", &pb::DropLogRequest { log: "chat".into() });
    c.proto(
        "SetMembersRequest",
        "three",
        &pb::SetMembersRequest { generation: 4, members: vec!["10.0.0.1:7070".into(), "r2:7070".into()] },
    );
    c.proto("DrainRequest", "timeout", &pb::DrainRequest { timeout_ms: 1000, ..Default::default() });
    c.proto("CheckpointRequest", "by-name", &pb::CheckpointRequest { log: "settings".into() });
    c.proto(
        "ExportSnapshotRequest",
        "delta",
        &pb::ExportSnapshotRequest { log: "settings".into(), base_seq: 2 },
    );
    c.proto("SnapshotChunk", "full", &pb::SnapshotChunk { data: full.clone() });
    c.proto("SnapshotChunk", "start", &pb::SnapshotChunk { data: delta[..60].to_vec() });
    c.proto(
        "BackupRequest",
        "delta",
        &pb::BackupRequest {
            destination: "file:///var/backups/plait".into(),
            logs: vec!["settings".into(), kv_log.to_hex()],
            delta: true,
            retain_full: 2,
        },
    );
    c.proto("HelloRequest", "peer", &pb::HelloRequest { from: peer() });
    c.proto(
        "PullRequest",
        "cursor",
        &pb::PullRequest {
            log_id: kv_log.0.to_vec(),
            epoch: vec![7; 16],
            after_seq: 2,
            from: peer(),
            page_entries: 100,
            omit_yours: true,
            page_bytes: 1 << 20,
        },
    );
    c.proto(
        "ReconcileRequest",
        "heads",
        &pb::ReconcileRequest {
            log_id: kv_log.0.to_vec(),
            heads: vec![history[1].hash().0.to_vec(), history[2].hash().0.to_vec()],
            from: peer(),
        },
    );
    c.proto(
        "FetchRequest",
        "hashes",
        &pb::FetchRequest { hashes: history.iter().map(|e| e.hash().0.to_vec()).collect() },
    );
    c.proto("WatchRequest", "peer", &pb::WatchRequest { from: peer(), ..Default::default() });
    c.proto(
        "PushRequest",
        "entries",
        &pb::PushRequest { entries: history[..2].iter().map(|e| e.bytes().to_vec()).collect(), from: peer() },
    );
    c.proto(
        "HelloResponse",
        "logs",
        &pb::HelloResponse {
            node_id: key(8).public().0.to_vec(),
            epoch: vec![7; 16],
            logs: vec![
                pb::HostedLog {
                    log_id: kv_log.0.to_vec(),
                    manifest: kv.bytes().to_vec(),
                    seq: 4,
                    heads: vec![history[3].hash().0.to_vec()],
                    digest: vec![9; 32],
                    head_count: 1,
                },
                pb::HostedLog {
                    log_id: feed_log.0.to_vec(),
                    manifest: feed.bytes().to_vec(),
                    seq: 0,
                    heads: vec![],
                    ..Default::default()
                },
            ],
        },
    );
    c.proto(
        "EntryPage",
        "page",
        &pb::EntryPage {
            entries: history
                .iter()
                .enumerate()
                .map(|(i, e)| pb::SeqEntry { seq: i as u64 + 1, entry: e.bytes().to_vec() })
                .collect(),
            epoch: vec![7; 16],
            server_seq: 4,
            through_seq: 4,
        },
    );
    c.proto(
        "FetchResponse",
        "entries",
        &pb::FetchResponse { entries: vec![history[3].bytes().to_vec(), singles[3].1.bytes().to_vec()] },
    );
    c.proto(
        "WatchNotice",
        "seq",
        &pb::WatchNotice {
            log_id: kv_log.0.to_vec(),
            seq: 9,
            epoch: vec![7; 16],
            yours_from: 5,
            ..Default::default()
        },
    );
    c.proto("Entry", "kv", &convert::entry_to_pb(&history[3], 4));
    c.proto("Entry", "graph", &convert::entry_to_pb(&singles[3].1, 1));
    c.proto(
        "HeadsResponse",
        "two",
        &pb::HeadsResponse {
            log_id: kv_log.0.to_vec(),
            heads: history[1..3]
                .iter()
                .map(|e| pb::Head { hash: e.hash().0.to_vec(), clock: Some(e.clock().into()) })
                .collect(),
            seq: 3,
        },
    );
    c.proto(
        "WriteResponse",
        "acks",
        &pb::WriteResponse {
            acks: vec![pb::WriteAck {
                log_id: kv_log.0.to_vec(),
                entry_hash: history[0].hash().0.to_vec(),
                seq: 1,
                op_index: 0,
                clock: Some(history[0].clock().into()),
            }],
        },
    );
    let info = |m: &SignedManifest| {
        let fields = m.manifest();
        let (open, writers) = match &fields.writers {
            Writers::Open => (true, vec![]),
            Writers::Keys(keys) => (false, keys.iter().map(|k| k.0.to_vec()).collect()),
        };
        pb::LogInfo {
            log_id: m.log_id().0.to_vec(),
            name: fields.name.clone(),
            r#type: pb::LogType::from(fields.log_type) as i32,
            open,
            writers,
            created_by: fields.created_by.0.to_vec(),
            manifest: m.bytes().to_vec(),
            seq: 4,
            heads: 1,
            pending: 0,
            ops: 5,
            ..Default::default()
        }
    };
    c.proto(
        "ListLogsResponse",
        "three",
        &pb::ListLogsResponse { logs: vec![info(&kv), info(&feed), info(&graph)] },
    );

    // Backup catalogs, in the layout plaitd writes to catalog.json.
    let entry_json = |log: &SignedManifest, backup: &str, kind: &str, seq: u64, base: u64| {
        format!(
            concat!(
                "{{\"backup_id\":\"{b}\",\"log_id\":\"{l}\",\"name\":\"{n}\",\"kind\":\"{k}\",",
                "\"key\":\"logs/{l}/{b}.snap\",\"bytes\":{bytes},\"epoch\":\"{e}\",\"seq\":{s},",
                "\"base_seq\":{base},\"state_root\":\"{r}\",\"n_ops\":{ops}}}"
            ),
            b = backup,
            l = log.log_id().to_hex(),
            n = log.manifest().name,
            k = kind,
            bytes = full.len(),
            e = "07".repeat(16),
            s = seq,
            base = base,
            r = hex_of(&checkpoint(kv_log, &history, seq.max(1)).state_root),
            ops = seq + 1,
        )
    };
    let catalogs = [
        ("empty", "{\"format\":1,\"backups\":[]}".to_owned()),
        (
            "one-full",
            format!(
                "{{\"format\":1,\"backups\":[{}]}}",
                entry_json(&kv, "20250101T000000Z-0001", "full", 4, 0)
            ),
        ),
        (
            "chain",
            format!(
                "{{\n  \"format\": 1,\n  \"backups\": [\n    {},\n    {},\n    {}\n  ]\n}}",
                entry_json(&kv, "20250101T000000Z-0001", "full", 2, 0),
                entry_json(&kv, "20250102T000000Z-0002", "delta", 4, 2),
                entry_json(&graph, "20250102T000000Z-0002", "full", 1, 0),
            ),
        ),
        ("future-format", "{\"format\":2,\"backups\":[]}".to_owned()),
    ];
    for (name, json) in &catalogs {
        c.put("catalog", &format!("{name}.json"), json.as_bytes());
    }

    println!("wrote {} seed files, {} bytes, under {}", c.written, c.bytes, c.root.display());
}

fn hex_of(bytes: &[u8]) -> String {
    bytes.iter().map(|b| format!("{b:02x}")).collect()
}
