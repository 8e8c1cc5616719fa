//! The `proto` target: prost decoding of every message a replica (or a client) accepts
//! from the network, followed by the `plait_proto::convert` conversions and core decoders
//! the receiving side applies to it.
//!
//! Input: one byte that picks the message kind (modulo the number of kinds, so every
//! byte picks one), then the message's protobuf bytes. A message that decodes must
//! re-encode to a message that decodes to the same value, and every conversion must
//! either succeed or return a `ConversionError` that names its field. Entries, manifests
//! and snapshot chunks inside messages go through the same core decoders the services use.

use plait_core::{
    DecodedEntry, LogId, Op, OpId, PublicKey, SignedManifest, SnapshotItem, SnapshotReader, VerifiedEntry,
    valid_log_name, verify_batch,
};
use plait_proto::{ConversionError, convert, pb};
use prost::Message;

/// The message kinds, in the order of their selector byte. Append new kinds at the end
/// so that the committed corpus keeps its meaning.
pub const KINDS: &[&str] = &[
    // Data, from clients.
    "AppendRequest",
    "PutRequest",
    "DeleteRequest",
    "LinkRequest",
    "UnlinkRequest",
    "WriteRequest",
    "SubmitRequest",
    "GetRequest",
    "ScanRequest",
    "ReadFeedRequest",
    "EdgesRequest",
    "GetEntryRequest",
    "HeadsRequest",
    "SubscribeRequest",
    // Logs, from clients.
    "CreateLogRequest",
    "GetLogRequest",
    "DropLogRequest",
    // Admin, from clients and the operator.
    "SetMembersRequest",
    "DrainRequest",
    "CheckpointRequest",
    "ExportSnapshotRequest",
    "SnapshotChunk",
    "BackupRequest",
    // Sync, from peers and edge nodes.
    "HelloRequest",
    "PullRequest",
    "ReconcileRequest",
    "FetchRequest",
    "WatchRequest",
    "PushRequest",
    // Sync answers a replica accepts from the peers it pulls from.
    "HelloResponse",
    "EntryPage",
    "FetchResponse",
    "WatchNotice",
    // Answers a client accepts from a replica.
    "Entry",
    "HeadsResponse",
    "WriteResponse",
    "ListLogsResponse",
    // Added later: kinds go at the end, so the committed corpus keeps its selectors.
    "HistoryRequest",
    "CommitConsumerRequest",
];

/// The selector byte of a kind, for the seed generator.
pub fn selector(kind: &str) -> u8 {
    let index = KINDS.iter().position(|k| *k == kind).unwrap_or_else(|| panic!("unknown kind {kind}"));
    u8::try_from(index).expect("fewer than 256 kinds")
}

/// Entries decoded and verified per message at most: signature checks are the slow part,
/// and a few are enough to cover the conversions.
const ENTRIES_CHECKED_MAX: usize = 8;

pub fn run(data: &[u8]) {
    let Some((&selector, bytes)) = data.split_first() else { return };
    let kind = KINDS[usize::from(selector) % KINDS.len()];
    match kind {
        "AppendRequest" => with(bytes, |r: pb::AppendRequest| {
            log_ref(&r.log);
            concern(r.concern.as_ref());
            op_bounds(Op::Append { value: r.value });
        }),
        "PutRequest" => with(bytes, |r: pb::PutRequest| {
            log_ref(&r.log);
            concern(r.concern.as_ref());
            op_bounds(Op::Put { key: r.key, value: r.value });
        }),
        "DeleteRequest" => with(bytes, |r: pb::DeleteRequest| {
            log_ref(&r.log);
            concern(r.concern.as_ref());
            op_bounds(Op::Delete { key: r.key });
        }),
        "LinkRequest" => with(bytes, |r: pb::LinkRequest| {
            log_ref(&r.log);
            concern(r.concern.as_ref());
            op_bounds(Op::Link { src: r.src, label: r.label, dst: r.dst, props: r.props });
        }),
        "UnlinkRequest" => with(bytes, |r: pb::UnlinkRequest| {
            log_ref(&r.log);
            concern(r.concern.as_ref());
            op_bounds(Op::Unlink { src: r.src, label: r.label, dst: r.dst });
        }),
        "WriteRequest" => with(bytes, |r: pb::WriteRequest| {
            concern(r.concern.as_ref());
            for (i, routed) in r.ops.into_iter().enumerate() {
                log_ref(&routed.log);
                let field = format!("ops[{i}].op");
                let message = routed.op.clone();
                if let Some(op) = converted(convert::op(&field, routed.op)) {
                    op.validate().expect("a converted op is within bounds");
                    // Core to proto and back is the identity.
                    let out = pb::Op::from(&op);
                    assert_eq!(Some(&out), message.as_ref(), "op conversion is not one to one");
                    assert_eq!(Op::try_from(out).expect("an op converts back"), op);
                }
            }
        }),
        "SubmitRequest" => with(bytes, |r: pb::SubmitRequest| entries(&r.entries)),
        "GetRequest" => with(bytes, |r: pb::GetRequest| log_ref(&r.log)),
        "ScanRequest" => with(bytes, |r: pb::ScanRequest| log_ref(&r.log)),
        "ReadFeedRequest" => with(bytes, |r: pb::ReadFeedRequest| {
            log_ref(&r.log);
            if let Some(id) = OpId::from_sort_key(&r.after) {
                assert_eq!(id.to_sort_key().as_slice(), r.after.as_slice(), "positions round-trip");
            }
        }),
        "EdgesRequest" => with(bytes, |r: pb::EdgesRequest| {
            log_ref(&r.log);
            let _ = pb::Direction::try_from(r.direction);
        }),
        "GetEntryRequest" => with(bytes, |r: pb::GetEntryRequest| {
            converted(convert::entry_hash("hash", &r.hash));
        }),
        "HeadsRequest" => with(bytes, |r: pb::HeadsRequest| log_ref(&r.log)),
        "SubscribeRequest" => with(bytes, |r: pb::SubscribeRequest| log_ref(&r.log)),
        "CreateLogRequest" => with(bytes, create_log),
        "GetLogRequest" => with(bytes, |r: pb::GetLogRequest| log_ref(&r.log)),
        "DropLogRequest" => with(bytes, |r: pb::DropLogRequest| log_ref(&r.log)),
        "SetMembersRequest" => with(bytes, |_: pb::SetMembersRequest| {}),
        "DrainRequest" => with(bytes, |_: pb::DrainRequest| {}),
        "CheckpointRequest" => with(bytes, |r: pb::CheckpointRequest| log_ref(&r.log)),
        "ExportSnapshotRequest" => with(bytes, |r: pb::ExportSnapshotRequest| log_ref(&r.log)),
        "SnapshotChunk" => with(bytes, |r: pb::SnapshotChunk| snapshot_chunk(&r.data)),
        "BackupRequest" => with(bytes, |r: pb::BackupRequest| r.logs.iter().for_each(|l| log_ref(l))),
        "HelloRequest" => with(bytes, |r: pb::HelloRequest| peer(r.from.as_ref())),
        "PullRequest" => with(bytes, |r: pb::PullRequest| {
            converted(convert::log_id("log_id", &r.log_id));
            peer(r.from.as_ref());
        }),
        "ReconcileRequest" => with(bytes, |r: pb::ReconcileRequest| {
            converted(convert::log_id("log_id", &r.log_id));
            converted(convert::entry_hashes("heads", &r.heads));
            peer(r.from.as_ref());
        }),
        "FetchRequest" => with(bytes, |r: pb::FetchRequest| {
            converted(convert::entry_hashes("hashes", &r.hashes));
        }),
        "WatchRequest" => with(bytes, |r: pb::WatchRequest| peer(r.from.as_ref())),
        "PushRequest" => with(bytes, |r: pb::PushRequest| {
            peer(r.from.as_ref());
            entries(&r.entries);
        }),
        "HelloResponse" => with(bytes, |r: pb::HelloResponse| {
            converted(convert::public_key("node_id", &r.node_id));
            for (i, log) in r.logs.iter().enumerate() {
                let id = converted(convert::log_id(&format!("logs[{i}].log_id"), &log.log_id));
                if let Ok(manifest) = SignedManifest::decode_and_verify(&log.manifest) {
                    let _matches = id == Some(manifest.log_id());
                }
                converted(convert::entry_hashes(&format!("logs[{i}].heads"), &log.heads));
            }
        }),
        "EntryPage" => with(bytes, |r: pb::EntryPage| {
            let raw: Vec<Vec<u8>> = r.entries.into_iter().map(|e| e.entry).collect();
            entries(&raw);
        }),
        "FetchResponse" => with(bytes, |r: pb::FetchResponse| entries(&r.entries)),
        "WatchNotice" => with(bytes, |r: pb::WatchNotice| {
            converted(convert::log_id("log_id", &r.log_id));
        }),
        "Entry" => with(bytes, entry_message),
        "HistoryRequest" => with(bytes, |r: pb::HistoryRequest| {
            log_ref(&r.log);
            if let Some(pb::history_request::Target::Writer(range)) = r.target {
                converted(convert::public_key("writer", &range.writer));
            }
        }),
        "CommitConsumerRequest" => with(bytes, |r: pb::CommitConsumerRequest| log_ref(&r.log)),
        "HeadsResponse" => with(bytes, |r: pb::HeadsResponse| {
            converted(convert::log_id("log_id", &r.log_id));
            for (i, head) in r.heads.iter().enumerate() {
                converted(convert::entry_hash(&format!("heads[{i}].hash"), &head.hash));
                converted(convert::clock(&format!("heads[{i}].clock"), head.clock.as_ref()));
            }
        }),
        "WriteResponse" => with(bytes, |r: pb::WriteResponse| {
            for (i, ack) in r.acks.iter().enumerate() {
                converted(convert::log_id(&format!("acks[{i}].log_id"), &ack.log_id));
                converted(convert::entry_hash(&format!("acks[{i}].entry_hash"), &ack.entry_hash));
                converted(convert::clock(&format!("acks[{i}].clock"), ack.clock.as_ref()));
            }
        }),
        "ListLogsResponse" => with(bytes, |r: pb::ListLogsResponse| {
            for (i, info) in r.logs.iter().enumerate() {
                converted(convert::log_id(&format!("logs[{i}].log_id"), &info.log_id));
                converted(convert::log_type(&format!("logs[{i}].type"), info.r#type));
                converted(convert::public_keys(&format!("logs[{i}].writers"), &info.writers));
                converted(convert::public_key(&format!("logs[{i}].created_by"), &info.created_by));
                let _ = SignedManifest::decode_and_verify(&info.manifest);
            }
        }),
        other => unreachable!("kind {other} has no case"),
    }
}

/// Decodes `bytes` as `M`; when that works, checks that prost round-trips it and hands
/// it to `check`.
fn with<M: Message + Default + PartialEq + Clone>(bytes: &[u8], check: impl FnOnce(M)) {
    let Ok(message) = M::decode(bytes) else { return };
    let again = M::decode(message.encode_to_vec().as_slice()).expect("a re-encoded message decodes");
    assert!(again == message, "prost does not round-trip the message");
    check(message);
}

/// The result of a conversion; an error must name its field, say it, and take a parent.
fn converted<T>(result: Result<T, ConversionError>) -> Option<T> {
    match result {
        Ok(value) => Some(value),
        Err(e) => {
            let field = e.field().to_owned();
            assert!(!field.is_empty(), "a conversion error names no field: {e:?}");
            assert!(e.to_string().contains(&field), "the message does not name {field}: {e}");
            let nested = e.in_field("parent");
            assert_eq!(nested.field(), format!("parent.{field}"));
            None
        }
    }
}

/// A `LogRef`: a 64-hex log id or a log name, as the store resolves it.
fn log_ref(log: &str) {
    if let Ok(id) = LogId::from_hex(log) {
        assert_eq!(LogId::from_hex(&id.to_hex()), Ok(id));
        assert!(!valid_log_name(log), "a log name may not look like a log id");
    }
    let _ = valid_log_name(log);
}

fn concern(concern: Option<&pb::WriteConcern>) {
    let _ = concern.map(|c| (c.replicas, c.timeout_ms));
}

/// A typed write's op: bounds checked as the service does, and the trip through the
/// proto form.
fn op_bounds(op: Op) {
    let valid = op.validate().is_ok();
    let converted = Op::try_from(pb::Op::from(&op));
    assert_eq!(converted.is_ok(), valid, "validate and the proto conversion disagree");
    if let Ok(back) = converted {
        assert_eq!(back, op);
    }
}

fn peer(from: Option<&pb::PeerIdentity>) {
    if let Some(from) = from {
        let _ = PublicKey::from_slice(&from.node_id);
        let _epoch_ok = from.epoch.len() == 16;
    }
}

/// Entries in canonical CBOR, as `Submit`, `Push`, pulled pages and fetches carry them:
/// decoded, batch-verified, and for those that verify, the outgoing `Entry` message must
/// convert back to the same fields.
fn entries(raw: &[Vec<u8>]) {
    let mut decoded = Vec::new();
    for bytes in raw {
        if let Ok(entry) = DecodedEntry::decode(bytes) {
            assert_eq!(entry.bytes(), bytes.as_slice());
            decoded.push(entry);
            if decoded.len() == ENTRIES_CHECKED_MAX {
                break;
            }
        }
    }
    let n = decoded.len();
    let results = verify_batch(decoded);
    assert_eq!(results.len(), n, "verify_batch returns one result per entry");
    for verified in results.into_iter().flatten() {
        let message = convert::entry_to_pb(&verified, 7);
        entry_message_matches(&message, &verified);
    }
}

fn entry_message_matches(message: &pb::Entry, entry: &VerifiedEntry) {
    let fields = entry.entry();
    assert_eq!(convert::entry_hash("hash", &message.hash), Ok(entry.hash()));
    assert_eq!(convert::log_id("log_id", &message.log_id), Ok(fields.log));
    assert_eq!(convert::clock("clock", message.clock.as_ref()), Ok(fields.clock));
    assert_eq!(convert::entry_hashes("next", &message.next), Ok(fields.next.clone()));
    assert_eq!(convert::entry_hashes("refs", &message.refs), Ok(fields.refs.clone()));
    let ops: Result<Vec<Op>, _> = message.ops.iter().cloned().map(Op::try_from).collect();
    assert_eq!(ops, Ok(fields.ops.clone()));
    assert_eq!(message.signature, fields.signature.0.to_vec());
    assert_eq!(message.encoded, entry.bytes());
    assert_eq!(VerifiedEntry::reverify(&message.encoded, entry.hash()).as_ref(), Ok(entry));
}

/// An `Entry` message as a client gets it from `GetEntry`: every field converted, and
/// the encoded bytes verified under the hash.
fn entry_message(message: pb::Entry) {
    let hash = converted(convert::entry_hash("hash", &message.hash));
    converted(convert::log_id("log_id", &message.log_id));
    converted(convert::clock("clock", message.clock.as_ref()));
    converted(convert::entry_hashes("next", &message.next));
    converted(convert::entry_hashes("refs", &message.refs));
    for (i, op) in message.ops.iter().enumerate() {
        converted(convert::op(&format!("ops[{i}].op"), Some(op.clone())));
    }
    if let Some(hash) = hash
        && let Ok(entry) = VerifiedEntry::reverify(&message.encoded, hash)
    {
        entry_message_matches(&convert::entry_to_pb(&entry, message.seq), &entry);
    }
}

/// `CreateLog`: a client-signed manifest is verified as it is; otherwise the fields are
/// converted and a manifest is built and signed the way the service does.
fn create_log(r: pb::CreateLogRequest) {
    if !r.signed_manifest.is_empty() {
        let _ = SignedManifest::decode_and_verify(&r.signed_manifest);
        return;
    }
    if !valid_log_name(&r.name) {
        return;
    }
    let Some(log_type) = converted(convert::log_type("type", r.r#type)) else { return };
    let Some(mut keys) = converted(convert::public_keys("writers", &r.writers)) else { return };
    let key = crate::fuzz_key();
    let writers = if r.open {
        if !keys.is_empty() {
            return;
        }
        plait_core::Writers::Open
    } else {
        if !r.exclude_replica_writer {
            keys.push(key.public());
        }
        if keys.is_empty() {
            return;
        }
        plait_core::Writers::keys(keys)
    };
    let manifest = plait_core::Manifest {
        name: r.name,
        log_type,
        writers,
        created_by: key.public(),
        created_at_lamport: 0,
        options: Vec::new(),
    };
    // Too many writers is refused by signing; anything else that got here must sign.
    if let Ok(signed) = manifest.sign(&key) {
        let back = SignedManifest::decode_and_verify(signed.bytes()).expect("a manifest we signed verifies");
        assert_eq!(back, signed);
    }
}

/// One `ImportSnapshot` chunk read on its own, as the start of a stream: headers and
/// entries it yields go through their decoders.
fn snapshot_chunk(data: &[u8]) {
    let mut reader = SnapshotReader::new();
    reader.feed(data);
    while let Ok(Some(item)) = reader.next_item() {
        match item {
            SnapshotItem::Header(header) => {
                let _ = SignedManifest::decode_and_verify(&header.manifest);
            }
            SnapshotItem::Entry { bytes, .. } => {
                let _ = DecodedEntry::decode(&bytes);
            }
            SnapshotItem::End { .. } => {}
        }
    }
    let _ = reader.finish();
}
