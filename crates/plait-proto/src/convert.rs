//! Conversions between `plait-core` types and the generated proto messages.
//!
//! Going out (core to proto) cannot fail. Coming in (proto to core) can: a oneof may be
//! unset, an enum may be `UNSPECIFIED` or a number this version does not know, and an id
//! may have the wrong length. Every such failure is a [`ConversionError`] that names the
//! field and says what was expected, so whoever sent the message can fix it. A server
//! answers these with `INVALID_ARGUMENT`; a client that gets them from a server has met
//! a server bug.

use plait_core::{
    Checkpoint, Clock, EntryHash, LogId, LogType, Op, OpError, PublicKey, SignedManifest, VerifiedEntry,
    Writers,
};

use crate::pb;

/// A proto message that does not convert to the core type it stands for.
///
/// `field` is the path of the offending field as the sender wrote it (`op`,
/// `writers[2]`, `ops[3].op`); callers that convert nested messages add their part of
/// the path with [`ConversionError::in_field`].
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum ConversionError {
    /// A message field or oneof that must be set is not.
    #[error("{field} is missing: {expected}")]
    Missing { field: String, expected: &'static str },
    /// A fixed-size id (hash, log id, key) has the wrong number of bytes.
    #[error("{field} must be {expected} bytes ({what}), got {got}")]
    Length { field: String, what: &'static str, expected: usize, got: usize },
    /// An enum field is left at its `UNSPECIFIED` zero value.
    #[error("{field} is unspecified: set it to one of {allowed}")]
    Unspecified { field: String, allowed: &'static str },
    /// An enum field holds a number this version of the API does not define.
    #[error("{field} has unknown value {value}: expected one of {allowed}")]
    UnknownEnum { field: String, value: i32, allowed: &'static str },
    /// An operation is well-formed as a message but out of the format's bounds.
    #[error("{field}: invalid {op} operation: {source}")]
    InvalidOp {
        field: String,
        op: &'static str,
        #[source]
        source: OpError,
    },
}

impl ConversionError {
    /// The path of the field the error is about.
    pub fn field(&self) -> &str {
        match self {
            ConversionError::Missing { field, .. }
            | ConversionError::Length { field, .. }
            | ConversionError::Unspecified { field, .. }
            | ConversionError::UnknownEnum { field, .. }
            | ConversionError::InvalidOp { field, .. } => field,
        }
    }

    /// Puts `parent` in front of the field path: `op` in `ops[3]` becomes `ops[3].op`.
    pub fn in_field(mut self, parent: &str) -> Self {
        let field = match &mut self {
            ConversionError::Missing { field, .. }
            | ConversionError::Length { field, .. }
            | ConversionError::Unspecified { field, .. }
            | ConversionError::UnknownEnum { field, .. }
            | ConversionError::InvalidOp { field, .. } => field,
        };
        *field = if field.is_empty() { parent.to_owned() } else { format!("{parent}.{field}") };
        self
    }
}

const OP_VARIANTS: &str = "set exactly one of append, put, delete, link, unlink";
const LOG_TYPES: &str = "LOG_TYPE_FEED, LOG_TYPE_KV, LOG_TYPE_GRAPH";

// ---------------------------------------------------------------------------------------
// Fixed-size ids.

fn fixed<const N: usize>(field: &str, what: &'static str, bytes: &[u8]) -> Result<[u8; N], ConversionError> {
    <[u8; N]>::try_from(bytes).map_err(|_| ConversionError::Length {
        field: field.to_owned(),
        what,
        expected: N,
        got: bytes.len(),
    })
}

/// An entry hash from the bytes of field `field`.
pub fn entry_hash(field: &str, bytes: &[u8]) -> Result<EntryHash, ConversionError> {
    fixed(field, "a blake3 entry hash", bytes).map(EntryHash)
}

/// A log id from the bytes of field `field`.
pub fn log_id(field: &str, bytes: &[u8]) -> Result<LogId, ConversionError> {
    fixed(field, "a blake3 log id", bytes).map(LogId)
}

/// An ed25519 public key from the bytes of field `field`.
pub fn public_key(field: &str, bytes: &[u8]) -> Result<PublicKey, ConversionError> {
    fixed(field, "an ed25519 public key", bytes).map(PublicKey)
}

/// Entry hashes from a repeated field; an error names the index (`next[4]`).
pub fn entry_hashes(field: &str, items: &[Vec<u8>]) -> Result<Vec<EntryHash>, ConversionError> {
    items.iter().enumerate().map(|(i, bytes)| entry_hash(&format!("{field}[{i}]"), bytes)).collect()
}

/// Public keys from a repeated field; an error names the index (`writers[2]`).
pub fn public_keys(field: &str, items: &[Vec<u8>]) -> Result<Vec<PublicKey>, ConversionError> {
    items.iter().enumerate().map(|(i, bytes)| public_key(&format!("{field}[{i}]"), bytes)).collect()
}

// ---------------------------------------------------------------------------------------
// Log types.

impl From<LogType> for pb::LogType {
    fn from(log_type: LogType) -> Self {
        match log_type {
            LogType::Feed => pb::LogType::Feed,
            LogType::Kv => pb::LogType::Kv,
            LogType::Graph => pb::LogType::Graph,
        }
    }
}

impl TryFrom<pb::LogType> for LogType {
    type Error = ConversionError;

    fn try_from(log_type: pb::LogType) -> Result<Self, Self::Error> {
        match log_type {
            pb::LogType::Feed => Ok(LogType::Feed),
            pb::LogType::Kv => Ok(LogType::Kv),
            pb::LogType::Graph => Ok(LogType::Graph),
            pb::LogType::Unspecified => {
                Err(ConversionError::Unspecified { field: "type".to_owned(), allowed: LOG_TYPES })
            }
        }
    }
}

/// A log type from the raw enum number prost stores in a message (`LogInfo.type`,
/// `CreateLogRequest.type`): refuses `UNSPECIFIED` and numbers this version does not know.
pub fn log_type(field: &str, value: i32) -> Result<LogType, ConversionError> {
    let known = pb::LogType::try_from(value).map_err(|_| ConversionError::UnknownEnum {
        field: field.to_owned(),
        value,
        allowed: LOG_TYPES,
    })?;
    LogType::try_from(known).map_err(|e| match e {
        ConversionError::Unspecified { allowed, .. } => {
            ConversionError::Unspecified { field: field.to_owned(), allowed }
        }
        other => other,
    })
}

// ---------------------------------------------------------------------------------------
// Clocks.

impl From<Clock> for pb::Clock {
    fn from(clock: Clock) -> Self {
        pb::Clock { time: clock.time, writer: clock.writer.0.to_vec() }
    }
}

impl TryFrom<&pb::Clock> for Clock {
    type Error = ConversionError;

    fn try_from(clock: &pb::Clock) -> Result<Self, Self::Error> {
        Ok(Clock { time: clock.time, writer: public_key("writer", &clock.writer)? })
    }
}

/// The clock in an optional message field (`Head.clock`, `WriteAck.clock`); unset is
/// an error naming the field.
pub fn clock(field: &str, clock: Option<&pb::Clock>) -> Result<Clock, ConversionError> {
    let clock = clock.ok_or_else(|| ConversionError::Missing {
        field: field.to_owned(),
        expected: "a clock with time and a 32-byte writer",
    })?;
    Clock::try_from(clock).map_err(|e| e.in_field(field))
}

// ---------------------------------------------------------------------------------------
// Operations.

impl From<&Op> for pb::Op {
    fn from(op: &Op) -> Self {
        pb::Op::from(op.clone())
    }
}

impl From<Op> for pb::Op {
    fn from(op: Op) -> Self {
        use pb::op::Op as Variant;
        let variant = match op {
            Op::Append { value } => Variant::Append(pb::FeedAppend { value }),
            Op::Put { key, value } => Variant::Put(pb::KvPut { key, value }),
            Op::Delete { key } => Variant::Delete(pb::KvDelete { key }),
            Op::Link { src, label, dst, props } => Variant::Link(pb::GraphLink { src, label, dst, props }),
            Op::Unlink { src, label, dst } => Variant::Unlink(pb::GraphUnlink { src, label, dst }),
        };
        pb::Op { op: Some(variant) }
    }
}

/// Refuses an `Op` whose oneof is unset, and one whose fields are out of the format's
/// bounds (an empty key, an oversized value): such an op could never be signed into an
/// entry, so it is refused here with the field that is wrong.
impl TryFrom<pb::Op> for Op {
    type Error = ConversionError;

    fn try_from(op: pb::Op) -> Result<Self, Self::Error> {
        use pb::op::Op as Variant;
        let variant = op
            .op
            .ok_or_else(|| ConversionError::Missing { field: "op".to_owned(), expected: OP_VARIANTS })?;
        let op = match variant {
            Variant::Append(pb::FeedAppend { value }) => Op::Append { value },
            Variant::Put(pb::KvPut { key, value }) => Op::Put { key, value },
            Variant::Delete(pb::KvDelete { key }) => Op::Delete { key },
            Variant::Link(pb::GraphLink { src, label, dst, props }) => Op::Link { src, label, dst, props },
            Variant::Unlink(pb::GraphUnlink { src, label, dst }) => Op::Unlink { src, label, dst },
        };
        op.validate().map_err(|source| ConversionError::InvalidOp {
            field: "op".to_owned(),
            op: op.name(),
            source,
        })?;
        Ok(op)
    }
}

/// The op in an optional message field (`RoutedOp.op`, `AppliedOp.op`).
pub fn op(field: &str, op: Option<pb::Op>) -> Result<Op, ConversionError> {
    let op = op.ok_or_else(|| ConversionError::Missing { field: field.to_owned(), expected: OP_VARIANTS })?;
    // The inner error already says `op`; name the outer field instead.
    Op::try_from(op).map_err(|mut e| {
        match &mut e {
            ConversionError::Missing { field: f, .. } | ConversionError::InvalidOp { field: f, .. } => {
                *f = field.to_owned();
            }
            _ => {}
        }
        e
    })
}

// ---------------------------------------------------------------------------------------
// Entries.

/// An entry as the API shows it, with its seq on this replica.
pub fn entry_to_pb(entry: &VerifiedEntry, seq: u64) -> pb::Entry {
    let fields = entry.entry();
    pb::Entry {
        hash: entry.hash().0.to_vec(),
        log_id: fields.log.0.to_vec(),
        clock: Some(fields.clock.into()),
        next: fields.next.iter().map(|h| h.0.to_vec()).collect(),
        refs: fields.refs.iter().map(|h| h.0.to_vec()).collect(),
        ops: fields.ops.iter().map(pb::Op::from).collect(),
        signature: fields.signature.0.to_vec(),
        encoded: entry.bytes().to_vec(),
        seq,
    }
}

// ---------------------------------------------------------------------------------------
// Checkpoints and logs.

/// A checkpoint as the API shows it.
pub fn checkpoint_to_pb(c: &Checkpoint) -> pb::CheckpointInfo {
    pb::CheckpointInfo {
        log_id: c.log.0.to_vec(),
        epoch: c.epoch.to_vec(),
        seq: c.seq,
        heads: c.heads.iter().map(|h| h.0.to_vec()).collect(),
        state_root: c.state_root.to_vec(),
        n_entries: c.n_entries,
        n_ops: c.n_ops,
    }
}

/// What a log's signed manifest says, as the API shows it. The counts of what a replica
/// holds of the log (`seq`, `heads`, `pending`, `ops`) are zero here: they come from
/// the replica's store, which fills them in.
pub fn log_info(manifest: &SignedManifest) -> pb::LogInfo {
    let fields = manifest.manifest();
    let (open, writers) = match &fields.writers {
        Writers::Open => (true, Vec::new()),
        Writers::Keys(keys) => (false, keys.iter().map(|k| k.0.to_vec()).collect()),
    };
    pb::LogInfo {
        log_id: manifest.log_id().0.to_vec(),
        name: fields.name.clone(),
        r#type: pb::LogType::from(fields.log_type) as i32,
        open,
        writers,
        created_by: fields.created_by.0.to_vec(),
        manifest: manifest.bytes().to_vec(),
        seq: 0,
        heads: 0,
        pending: 0,
        ops: 0,
        creator: String::new(),
        digest: Vec::new(),
        consumers: Vec::new(),
    }
}

#[cfg(test)]
mod tests {
    use plait_core::{EntryDraft, WriterKey};

    use super::*;

    fn key() -> WriterKey {
        WriterKey::from_secret([7; 32])
    }

    fn all_ops() -> Vec<Op> {
        vec![
            Op::Append { value: b"hello".to_vec() },
            Op::Put { key: b"k".to_vec(), value: b"v".to_vec() },
            Op::Delete { key: b"k".to_vec() },
            Op::Link { src: b"a".to_vec(), label: "knows".into(), dst: b"b".to_vec(), props: vec![1, 2] },
            Op::Unlink { src: b"a".to_vec(), label: String::new(), dst: b"b".to_vec() },
        ]
    }

    /// Every core op survives the trip to proto and back unchanged.
    #[test]
    fn op_round_trips() {
        for op in all_ops() {
            let message = pb::Op::from(&op);
            assert_eq!(Op::try_from(message).unwrap(), op);
        }
    }

    /// An `Op` message with no oneof set is refused with a message that says what to set.
    #[test]
    fn op_without_variant_is_refused() {
        let err = Op::try_from(pb::Op { op: None }).unwrap_err();
        assert_eq!(err.field(), "op");
        let message = err.to_string();
        assert!(message.contains("op is missing"), "{message}");
        assert!(message.contains("append, put, delete, link, unlink"), "{message}");
    }

    /// An op that could never be signed (an empty kv key) is refused at the boundary,
    /// naming the op and the field.
    #[test]
    fn op_out_of_bounds_is_refused() {
        let message = pb::Op::from(Op::Put { key: vec![], value: b"v".to_vec() });
        let err = Op::try_from(message).unwrap_err();
        assert!(matches!(err, ConversionError::InvalidOp { op: "kv.put", .. }), "{err:?}");
        assert_eq!(err.to_string(), "op: invalid kv.put operation: key must not be empty");
    }

    /// The optional-field helper names the outer field and adds paths.
    #[test]
    fn op_field_helper_names_the_field() {
        let err = op("ops[3].op", None).unwrap_err();
        assert_eq!(err.field(), "ops[3].op");
        let err = op("op", Some(pb::Op { op: None })).unwrap_err().in_field("ops[1]");
        assert_eq!(err.field(), "ops[1].op");
        assert_eq!(op("op", Some(pb::Op::from(&all_ops()[0]))).unwrap(), all_ops()[0]);
    }

    /// Log types map one to one; UNSPECIFIED and unknown numbers are errors that list
    /// the valid values.
    #[test]
    fn log_types_convert_and_unspecified_is_refused() {
        for t in [LogType::Feed, LogType::Kv, LogType::Graph] {
            assert_eq!(LogType::try_from(pb::LogType::from(t)).unwrap(), t);
            assert_eq!(log_type("type", pb::LogType::from(t) as i32).unwrap(), t);
        }
        let err = LogType::try_from(pb::LogType::Unspecified).unwrap_err();
        assert!(err.to_string().contains("LOG_TYPE_FEED"), "{err}");
        let err = log_type("logs[0].type", 0).unwrap_err();
        assert_eq!(err.field(), "logs[0].type");
        assert!(matches!(err, ConversionError::Unspecified { .. }));
        let err = log_type("type", 42).unwrap_err();
        assert_eq!(
            err.to_string(),
            "type has unknown value 42: expected one of LOG_TYPE_FEED, LOG_TYPE_KV, LOG_TYPE_GRAPH"
        );
    }

    /// Ids of the right length convert; the wrong length names the field and both lengths.
    #[test]
    fn ids_check_their_length() {
        assert_eq!(entry_hash("hash", &[1; 32]).unwrap(), EntryHash([1; 32]));
        assert_eq!(log_id("log_id", &[2; 32]).unwrap(), LogId([2; 32]));
        assert_eq!(public_key("writer", &[3; 32]).unwrap(), PublicKey([3; 32]));
        let err = entry_hash("hash", &[1; 31]).unwrap_err();
        assert_eq!(err.to_string(), "hash must be 32 bytes (a blake3 entry hash), got 31");
        let err = log_id("log_id", &[]).unwrap_err();
        assert_eq!(err.to_string(), "log_id must be 32 bytes (a blake3 log id), got 0");
        let err = public_keys("writers", &[vec![0; 32], vec![0; 33]]).unwrap_err();
        assert_eq!(err.field(), "writers[1]");
        assert!(err.to_string().contains("ed25519 public key"), "{err}");
        assert_eq!(entry_hashes("next", &[vec![9; 32]]).unwrap(), vec![EntryHash([9; 32])]);
    }

    /// Clocks round-trip; a missing clock or a short writer names the field.
    #[test]
    fn clocks_convert() {
        let c = Clock { time: 42, writer: key().public() };
        let message = pb::Clock::from(c);
        assert_eq!(message.time, 42);
        assert_eq!(clock("clock", Some(&message)).unwrap(), c);
        let err = clock("heads[0].clock", None).unwrap_err();
        assert_eq!(err.field(), "heads[0].clock");
        let short = pb::Clock { time: 1, writer: vec![0; 5] };
        let err = clock("clock", Some(&short)).unwrap_err();
        assert_eq!(err.field(), "clock.writer");
    }

    /// A signed entry becomes an `Entry` message whose fields match the entry and whose
    /// `encoded` bytes are the canonical bytes the hash is taken over.
    #[test]
    fn entry_to_message() {
        let parent = EntryHash([5; 32]);
        let draft =
            EntryDraft { log: LogId([1; 32]), time: 3, next: vec![parent], refs: vec![], ops: all_ops() };
        let entry = draft.sign(&key()).unwrap();
        let message = entry_to_pb(&entry, 17);
        assert_eq!(message.seq, 17);
        assert_eq!(entry_hash("hash", &message.hash).unwrap(), entry.hash());
        assert_eq!(log_id("log_id", &message.log_id).unwrap(), LogId([1; 32]));
        assert_eq!(clock("clock", message.clock.as_ref()).unwrap(), entry.clock());
        assert_eq!(entry_hashes("next", &message.next).unwrap(), vec![parent]);
        assert!(message.refs.is_empty());
        assert_eq!(message.signature.len(), 64);
        assert_eq!(message.encoded, entry.bytes());
        let ops: Vec<Op> = message.ops.into_iter().map(Op::try_from).collect::<Result<_, _>>().unwrap();
        assert_eq!(ops, all_ops());
        let again = VerifiedEntry::reverify(&message.encoded, entry.hash()).unwrap();
        assert_eq!(again, entry);
    }

    /// A manifest's name, type, ACL and bytes come through `log_info`; the counts are
    /// left for the replica to fill in.
    #[test]
    fn log_info_shows_the_manifest() {
        let writer = WriterKey::from_secret([8; 32]).public();
        for writers in [Writers::Open, Writers::keys(vec![writer])] {
            let manifest = plait_core::Manifest {
                name: "orders".into(),
                log_type: LogType::Kv,
                writers: writers.clone(),
                created_by: key().public(),
                created_at_lamport: 0,
                options: Vec::new(),
            }
            .sign(&key())
            .unwrap();
            let info = log_info(&manifest);
            assert_eq!(log_id("log_id", &info.log_id).unwrap(), manifest.log_id());
            assert_eq!(info.name, "orders");
            assert_eq!(log_type("type", info.r#type).unwrap(), LogType::Kv);
            assert_eq!(info.open, writers == Writers::Open);
            let expected: Vec<Vec<u8>> = if info.open { Vec::new() } else { vec![writer.0.to_vec()] };
            assert_eq!(info.writers, expected);
            assert_eq!(info.created_by, key().public().0.to_vec());
            assert_eq!(info.manifest, manifest.bytes());
            assert_eq!((info.seq, info.heads, info.pending, info.ops), (0, 0, 0, 0));
        }
    }

    /// A checkpoint's every field comes through `checkpoint_to_pb`.
    #[test]
    fn checkpoint_to_message() {
        let c = Checkpoint {
            log: LogId([1; 32]),
            epoch: [2; 16],
            seq: 9,
            heads: vec![EntryHash([3; 32])],
            state_root: [4; 32],
            n_entries: 9,
            n_ops: 12,
        };
        let message = checkpoint_to_pb(&c);
        assert_eq!(message.log_id, vec![1; 32]);
        assert_eq!(message.epoch, vec![2; 16]);
        assert_eq!(message.seq, 9);
        assert_eq!(message.heads, vec![vec![3; 32]]);
        assert_eq!(message.state_root, vec![4; 32]);
        assert_eq!((message.n_entries, message.n_ops), (9, 12));
    }
}
