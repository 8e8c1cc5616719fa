//! The client's request options and typed replies.
//!
//! Replies are checked on arrival: ids have their lengths, enums are known, ops are in
//! bounds, entries verify. A reply that fails a check becomes
//! [`ClientError::Corrupt`](crate::ClientError::Corrupt) rather than a half-valid value.

use plait_core::limits::NEXT_MAX;
use plait_core::{
    Clock, EntryDraft, EntryHash, LogId, LogType, Op, PublicKey, SignedManifest, VerifiedEntry, Writers,
};
use plait_proto::convert;
use plait_proto::pb;

use crate::error::ClientError;

// ---------------------------------------------------------------------------------------
// Requests.

/// What [`Client::create_log`](crate::Client::create_log) asks for: a log signed by the
/// replica's writer key, with an ACL.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct CreateLogOptions {
    /// 1 to 128 characters of letters, digits, '.', '-', '_'.
    pub name: String,
    /// What the log holds; decides which ops it accepts.
    pub log_type: LogType,
    /// Extra keys allowed to write, besides the replica's writer key.
    pub writers: Vec<PublicKey>,
    /// Any valid signature may write; `writers` must then be empty.
    pub open: bool,
    /// Leave the replica's writer key off the ACL: only `writers` can write, through
    /// pre-signed entries.
    pub exclude_replica_writer: bool,
}

impl CreateLogOptions {
    /// A log that only the replica's writer key may write to.
    pub fn new(name: impl Into<String>, log_type: LogType) -> Self {
        CreateLogOptions {
            name: name.into(),
            log_type,
            writers: Vec::new(),
            open: false,
            exclude_replica_writer: false,
        }
    }

    /// Also allows `key` to write.
    pub fn writer(mut self, key: PublicKey) -> Self {
        self.writers.push(key);
        self
    }

    /// Lets any valid signature write.
    pub fn open(mut self) -> Self {
        self.open = true;
        self
    }

    /// Leaves the replica's writer key off the ACL.
    pub fn exclude_replica_writer(mut self) -> Self {
        self.exclude_replica_writer = true;
        self
    }

    pub(crate) fn to_request(&self) -> pb::CreateLogRequest {
        pb::CreateLogRequest {
            name: self.name.clone(),
            r#type: pb::LogType::from(self.log_type) as i32,
            writers: self.writers.iter().map(|k| k.0.to_vec()).collect(),
            open: self.open,
            exclude_replica_writer: self.exclude_replica_writer,
            signed_manifest: Vec::new(),
        }
    }
}

/// An operation addressed to a log, for the routed batch [`Client::write`](crate::Client::write).
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct RoutedOp {
    /// The log's name or hex id.
    pub log: String,
    /// The operation; the log's type must accept it.
    pub op: Op,
}

impl RoutedOp {
    /// An op addressed to the log named `log` (name or hex id).
    pub fn new(log: impl Into<String>, op: Op) -> Self {
        RoutedOp { log: log.into(), op }
    }
}

/// Which keys a [`Client::scan`](crate::Client::scan) returns. The default is every key,
/// in pages of the server's default size.
#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub struct ScanOptions {
    /// Only keys starting with this prefix.
    pub prefix: Vec<u8>,
    /// Inclusive lower bound; empty for the first key. To continue a scan, pass the
    /// previous page's `next_start`.
    pub start: Vec<u8>,
    /// Exclusive upper bound; empty for none.
    pub end: Vec<u8>,
    /// Most items in one page, 1 to 10000; 0 lets the server choose (1000).
    pub limit: u32,
    /// Scan the log as it was at this point; `None` for now.
    pub as_of: Option<AsOf>,
}

/// Where a [`Client::read_feed`](crate::Client::read_feed) starts and how much it reads.
#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub struct ReadFeedOptions {
    /// The `position` of an item already read; the read starts after it. Empty: from the
    /// start.
    pub after: Vec<u8>,
    /// Most items, 1 to 10000; 0 lets the server choose (1000). A page also stops at
    /// about 4 MiB of values.
    pub limit: u32,
    /// The last `limit` items instead (as many of the newest as fit a page), oldest first.
    pub tail: bool,
    /// Read the feed as it was at this point; `None` for now.
    pub as_of: Option<AsOf>,
}

/// Which way an edge query goes from its node.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub enum Direction {
    /// Edges whose `src` is the node.
    #[default]
    Out,
    /// Edges whose `dst` is the node.
    In,
}

/// Which edges a [`Client::edges`](crate::Client::edges) returns.
#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub struct EdgesOptions {
    /// Out of the node (the default) or into it.
    pub direction: Direction,
    /// Only edges with this label; `None` for all.
    pub label: Option<String>,
    /// Most edges, 1 to 10000; 0 lets the server choose (1000). A page also stops at
    /// about 4 MiB.
    pub limit: u32,
    /// Continue after this: the `next_after` of an earlier [`EdgePage`] of the same
    /// node, direction, label and `as_of`. Empty: from the first edge.
    pub after: Vec<u8>,
    /// The edges as they were at this point; `None` for now.
    pub as_of: Option<AsOf>,
}

/// A point in a log's past, for reads of the log as it was then: the view of exactly the
/// entries it held at that point, as if later entries had never arrived.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum AsOf {
    /// A seq of the replica asked (0: before the first entry). Seqs are the replica's own.
    Seq(u64),
    /// The state root of a checkpoint the replica recorded (taken there, or restored
    /// there from a snapshot or backup): the same point on every replica that holds it.
    Checkpoint([u8; 32]),
}

impl AsOf {
    pub(crate) fn to_pb(self) -> pb::AsOf {
        pb::AsOf {
            point: Some(match self {
                AsOf::Seq(seq) => pb::as_of::Point::Seq(seq),
                AsOf::Checkpoint(root) => pb::as_of::Point::Checkpoint(root.to_vec()),
            }),
        }
    }
}

/// What a [`Client::history`](crate::Client::history) call asks for.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum HistoryTarget {
    /// Every version of a key of a kv log.
    Key(Vec<u8>),
    /// Every version of an edge of a graph log.
    Edge { src: Vec<u8>, label: String, dst: Vec<u8> },
    /// The entries one writer signed among the replica's seqs `from..=to` (`to` of 0: to
    /// the log's end).
    Writer { writer: PublicKey, from: u64, to: u64 },
}

/// One version of a key or edge: the op that wrote it.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Version {
    /// The seq of its entry on the replica asked.
    pub seq: u64,
    /// The entry that carries the op ([`Client::get_entry`](crate::Client::get_entry)
    /// fetches and verifies it) and the op's index in it.
    pub entry_hash: EntryHash,
    pub op_index: u32,
    /// Writer and Lamport time.
    pub clock: Clock,
    /// The value (kv) or properties (graph) set; `None` for a delete or unlink.
    pub value: Option<Vec<u8>>,
}

/// An entry of the writer asked for.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct WriterEntry {
    pub seq: u64,
    pub entry_hash: EntryHash,
    pub clock: Clock,
    pub op_count: u32,
}

/// A page of history: versions (key, edge) or entries (writer), oldest first.
#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub struct HistoryPage {
    pub versions: Vec<Version>,
    pub entries: Vec<WriterEntry>,
    /// Set when more may follow: the `after` of the next page.
    pub next_after: Option<Vec<u8>>,
}

// ---------------------------------------------------------------------------------------
// Replies.

/// A log as the replica knows it.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct LogInfo {
    /// blake3 of the log's canonical manifest.
    pub log_id: LogId,
    /// The log's name on this replica.
    pub name: String,
    /// What the log holds; decides which ops it accepts.
    pub log_type: LogType,
    /// Who may write: open, or these keys.
    pub writers: Writers,
    /// The key that signed the manifest.
    pub created_by: PublicKey,
    /// The signed manifest in canonical CBOR; see [`LogInfo::verified_manifest`].
    pub manifest: Vec<u8>,
    /// The highest seq stored on the replica; 0 for an empty log.
    pub seq: u64,
    /// Number of heads.
    pub heads: u32,
    /// Entries waiting for missing parents.
    pub pending: u64,
    /// Operations stored over all entries.
    pub ops: u64,
    /// The principal that created the log on this replica (`token:app`, ...); empty for
    /// a log learned from peers or restored.
    pub creator: String,
    /// The digest of the log's stored entries on the replica: two replicas holding the
    /// same entries report the same one. `None` from a replica that does not keep it.
    pub digest: Option<plait_core::SetDigest>,
    /// The log's durable consumers on the replica, by name.
    pub consumers: Vec<ConsumerInfo>,
}

/// A durable consumer of a log: a named position the replica keeps, which
/// [`Client::subscribe_consumer`](crate::Client::subscribe_consumer) resumes after.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct ConsumerInfo {
    pub name: String,
    /// Every entry up to this seq is processed.
    pub committed_seq: u64,
    /// Entries the replica holds past the committed seq.
    pub lag: u64,
}

impl From<pb::ConsumerInfo> for ConsumerInfo {
    fn from(c: pb::ConsumerInfo) -> ConsumerInfo {
        ConsumerInfo { name: c.name, committed_seq: c.committed_seq, lag: c.lag }
    }
}

impl LogInfo {
    /// Decodes and verifies the manifest and checks that it hashes to `log_id`, so the
    /// ACL shown is the one the log's identity commits to.
    pub fn verified_manifest(&self) -> Result<SignedManifest, ClientError> {
        let manifest = SignedManifest::decode_and_verify(&self.manifest)
            .map_err(|e| ClientError::corrupt_reply("manifest", e))?;
        if manifest.log_id() != self.log_id {
            return Err(ClientError::Corrupt(format!(
                "the manifest of log {} hashes to {}",
                self.log_id,
                manifest.log_id()
            )));
        }
        Ok(manifest)
    }
}

impl TryFrom<pb::LogInfo> for LogInfo {
    type Error = ClientError;

    fn try_from(info: pb::LogInfo) -> Result<Self, Self::Error> {
        let writers = if info.open {
            Writers::Open
        } else {
            Writers::keys(convert::public_keys("writers", &info.writers)?)
        };
        Ok(LogInfo {
            log_id: convert::log_id("log_id", &info.log_id)?,
            log_type: convert::log_type("type", info.r#type)?,
            writers,
            created_by: convert::public_key("created_by", &info.created_by)?,
            name: info.name,
            manifest: info.manifest,
            seq: info.seq,
            heads: info.heads,
            pending: info.pending,
            ops: info.ops,
            creator: info.creator,
            consumers: info.consumers.into_iter().map(ConsumerInfo::from).collect(),
            digest: match info.digest.len() {
                0 => None,
                _ => Some(plait_core::SetDigest(info.digest.as_slice().try_into().map_err(|_| {
                    ClientError::Corrupt(format!("digest of {} bytes, not 32", info.digest.len()))
                })?)),
            },
        })
    }
}

/// Where one written op landed and when it became durable.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct WriteAck {
    /// The log the op went to.
    pub log_id: LogId,
    /// The entry that carries the op.
    pub entry_hash: EntryHash,
    /// The seq of the entry that carries the op.
    pub seq: u64,
    /// The op's position in its entry.
    pub op_index: u32,
    /// The entry's Lamport clock.
    pub clock: Clock,
}

impl TryFrom<pb::WriteAck> for WriteAck {
    type Error = ClientError;

    fn try_from(ack: pb::WriteAck) -> Result<Self, Self::Error> {
        Ok(WriteAck {
            log_id: convert::log_id("log_id", &ack.log_id)?,
            entry_hash: convert::entry_hash("entry_hash", &ack.entry_hash)?,
            seq: ack.seq,
            op_index: ack.op_index,
            clock: convert::clock("clock", ack.clock.as_ref())?,
        })
    }
}

/// What became of one submitted entry.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum SubmitOutcome {
    /// Stored and applied.
    Stored,
    /// Already stored; nothing changed.
    Duplicate,
    /// Valid, waiting for parents the replica does not hold yet.
    Pending,
}

impl SubmitOutcome {
    /// A lowercase word for output: `stored`, `duplicate`, `pending`.
    pub fn name(self) -> &'static str {
        match self {
            SubmitOutcome::Stored => "stored",
            SubmitOutcome::Duplicate => "duplicate",
            SubmitOutcome::Pending => "pending",
        }
    }
}

/// The result of one entry in a [`Client::submit`](crate::Client::submit).
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct SubmitResult {
    /// The entry's hash.
    pub entry_hash: EntryHash,
    /// Whether it was stored, already there, or waits for parents.
    pub outcome: SubmitOutcome,
    /// The entry's seq; 0 while pending.
    pub seq: u64,
}

impl TryFrom<pb::SubmitResult> for SubmitResult {
    type Error = ClientError;

    fn try_from(result: pb::SubmitResult) -> Result<Self, Self::Error> {
        let outcome = match pb::SubmitOutcome::try_from(result.outcome) {
            Ok(pb::SubmitOutcome::Stored) => SubmitOutcome::Stored,
            Ok(pb::SubmitOutcome::Duplicate) => SubmitOutcome::Duplicate,
            Ok(pb::SubmitOutcome::Pending) => SubmitOutcome::Pending,
            Ok(pb::SubmitOutcome::Unspecified) | Err(_) => {
                return Err(ClientError::corrupt_reply(
                    "submit",
                    format_args!("outcome {} is not stored, duplicate or pending", result.outcome),
                ));
            }
        };
        Ok(SubmitResult {
            entry_hash: convert::entry_hash("entry_hash", &result.entry_hash)?,
            outcome,
            seq: result.seq,
        })
    }
}

/// A kv value with the clock of the op that wrote it.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Versioned {
    /// The value.
    pub value: Vec<u8>,
    /// The clock of the put that wrote it.
    pub clock: Clock,
}

/// One live key of a kv log.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct KeyValue {
    /// The key.
    pub key: Vec<u8>,
    /// Its current value.
    pub value: Vec<u8>,
    /// The clock of the put that wrote it.
    pub clock: Clock,
}

impl TryFrom<pb::KeyValue> for KeyValue {
    type Error = ClientError;

    fn try_from(item: pb::KeyValue) -> Result<Self, Self::Error> {
        Ok(KeyValue {
            clock: convert::clock("clock", item.clock.as_ref())?,
            key: item.key,
            value: item.value,
        })
    }
}

/// One page of a scan.
#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub struct ScanPage {
    /// Keys in key order.
    pub items: Vec<KeyValue>,
    /// Set when more items follow: the `start` of the next page.
    pub next_start: Option<Vec<u8>>,
}

/// A page of a feed.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct FeedPage {
    /// Items in the total order.
    pub items: Vec<FeedItem>,
    /// Set when more items follow: read again after the last item's `position` (or
    /// after `next_after` when it is set).
    pub more: bool,
    /// Set when a read as of a point in the past stopped having examined its bound of
    /// items with none to return: read again after it.
    pub next_after: Option<Vec<u8>>,
}

/// A page of edges.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct EdgePage {
    /// Edges in key order.
    pub edges: Vec<Edge>,
    /// Set when more edges may follow: the `after` of the next page.
    pub next_after: Option<Vec<u8>>,
}

/// One item of a feed, in the total order.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct FeedItem {
    /// The appended value.
    pub value: Vec<u8>,
    /// The clock of the entry that carries it.
    pub clock: Clock,
    /// The entry that carries it.
    pub entry_hash: EntryHash,
    /// Its position inside that entry.
    pub op_index: u32,
    /// Opaque: pass it as [`ReadFeedOptions::after`] to read what follows.
    pub position: Vec<u8>,
}

impl TryFrom<pb::FeedItem> for FeedItem {
    type Error = ClientError;

    fn try_from(item: pb::FeedItem) -> Result<Self, Self::Error> {
        Ok(FeedItem {
            clock: convert::clock("clock", item.clock.as_ref())?,
            entry_hash: convert::entry_hash("entry_hash", &item.entry_hash)?,
            value: item.value,
            op_index: item.op_index,
            position: item.position,
        })
    }
}

/// One edge of a graph log.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Edge {
    /// The node the edge leaves.
    pub src: Vec<u8>,
    /// The edge's label; may be empty.
    pub label: String,
    /// The node the edge enters.
    pub dst: Vec<u8>,
    /// Properties stored on the edge; may be empty.
    pub props: Vec<u8>,
    /// The clock of the link that wrote the edge.
    pub clock: Clock,
}

impl TryFrom<pb::Edge> for Edge {
    type Error = ClientError;

    fn try_from(edge: pb::Edge) -> Result<Self, Self::Error> {
        Ok(Edge {
            clock: convert::clock("clock", edge.clock.as_ref())?,
            src: edge.src,
            label: edge.label,
            dst: edge.dst,
            props: edge.props,
        })
    }
}

/// An entry fetched by hash, verified by the client, with its seq on the replica.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct StoredEntry {
    /// The entry, checked against its hash and signature.
    pub entry: VerifiedEntry,
    /// Its seq on the replica that answered.
    pub seq: u64,
}

impl StoredEntry {
    /// Verifies the entry's canonical bytes against the hash that was asked for, so a
    /// replica cannot hand back a different or forged entry.
    pub(crate) fn verify(message: pb::Entry, requested: EntryHash) -> Result<StoredEntry, ClientError> {
        let entry = VerifiedEntry::reverify(&message.encoded, requested)
            .map_err(|e| ClientError::corrupt_reply("entry", e))?;
        Ok(StoredEntry { entry, seq: message.seq })
    }
}

/// A head of a log: an entry no other entry names as a parent.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct Head {
    /// The head entry's hash.
    pub hash: EntryHash,
    /// Its Lamport clock.
    pub clock: Clock,
}

/// The heads of a log, for clients that build entries themselves.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Heads {
    /// The log's id.
    pub log_id: LogId,
    /// Entries no other entry names as a parent.
    pub heads: Vec<Head>,
    /// The log's highest seq on the replica.
    pub seq: u64,
}

impl Heads {
    /// A draft of the next entry on these heads: parents are the heads, and the clock's
    /// time is one more than the latest head's, so the entry orders after everything the
    /// heads have seen. With more heads than an entry may name (`NEXT_MAX`), the latest
    /// ones are named; the time still follows all of them, and a later entry merges the
    /// rest.
    pub fn draft(&self, ops: Vec<Op>) -> EntryDraft {
        let time = 1 + self.heads.iter().map(|h| h.clock.time).max().unwrap_or(0);
        let mut heads = self.heads.clone();
        if heads.len() > NEXT_MAX {
            heads.sort_by(|a, b| b.clock.cmp(&a.clock).then(b.hash.cmp(&a.hash)));
            heads.truncate(NEXT_MAX);
        }
        EntryDraft {
            log: self.log_id,
            time,
            next: heads.iter().map(|h| h.hash).collect(),
            refs: Vec::new(),
            ops,
        }
    }
}

impl TryFrom<pb::HeadsResponse> for Heads {
    type Error = ClientError;

    fn try_from(reply: pb::HeadsResponse) -> Result<Self, Self::Error> {
        let heads = reply
            .heads
            .iter()
            .enumerate()
            .map(|(i, head)| {
                Ok(Head {
                    hash: convert::entry_hash(&format!("heads[{i}].hash"), &head.hash)?,
                    clock: convert::clock(&format!("heads[{i}].clock"), head.clock.as_ref())?,
                })
            })
            .collect::<Result<Vec<_>, ClientError>>()?;
        Ok(Heads { log_id: convert::log_id("log_id", &reply.log_id)?, heads, seq: reply.seq })
    }
}

/// One operation as a log applied it, from [`Client::subscribe`](crate::Client::subscribe).
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct AppliedOp {
    /// The seq of the entry that carries the op.
    pub seq: u64,
    /// The entry that carries the op.
    pub entry_hash: EntryHash,
    /// The op's position inside that entry.
    pub op_index: u32,
    /// The entry's Lamport clock.
    pub clock: Clock,
    /// The operation.
    pub op: Op,
    /// The op's place in the total order (for feeds, a `FeedItem` position).
    pub position: Vec<u8>,
    /// Where the replica got the op's entry.
    pub origin: Origin,
    /// How many ops the entry carries (0 from a replica that does not say): the op with
    /// `op_index == entry_ops - 1` is the entry's last, after which its seq may be
    /// committed.
    pub entry_ops: u32,
}

impl AppliedOp {
    /// Whether this is the last op of its entry.
    pub fn ends_entry(&self) -> bool {
        self.op_index + 1 == self.entry_ops
    }
}

/// Where a replica got an entry: kept by that replica, so one entry is `Local` on the
/// replica it was written on and `Peer` on the others.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Origin {
    /// Stored before the replica kept origins, or a kind this client does not know.
    Unknown,
    /// Written through the replica's write calls.
    Local,
    /// Signed elsewhere and handed to the replica by a call (`submit`, a push).
    Submitted,
    /// Replicated from the peer replica with this node id.
    Peer(PublicKey),
    /// Read from a snapshot or backup.
    Restored,
}

impl Origin {
    fn from_pb(origin: Option<pb::Origin>) -> Result<Origin, ClientError> {
        let Some(origin) = origin else { return Ok(Origin::Unknown) };
        Ok(match pb::OriginKind::try_from(origin.kind) {
            Ok(pb::OriginKind::Local) => Origin::Local,
            Ok(pb::OriginKind::Submitted) => Origin::Submitted,
            Ok(pb::OriginKind::Peer) => {
                Origin::Peer(convert::public_key("origin.peer_node_id", &origin.peer_node_id)?)
            }
            Ok(pb::OriginKind::Restored) => Origin::Restored,
            Ok(pb::OriginKind::Unknown) | Err(_) => Origin::Unknown,
        })
    }
}

impl std::fmt::Display for Origin {
    /// `local`, `submitted`, `peer:<node id hex>`, `restored` or `unknown`.
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        match self {
            Origin::Unknown => f.write_str("unknown"),
            Origin::Local => f.write_str("local"),
            Origin::Submitted => f.write_str("submitted"),
            Origin::Peer(node) => write!(f, "peer:{}", node.to_hex()),
            Origin::Restored => f.write_str("restored"),
        }
    }
}

impl TryFrom<pb::AppliedOp> for AppliedOp {
    type Error = ClientError;

    fn try_from(applied: pb::AppliedOp) -> Result<Self, Self::Error> {
        Ok(AppliedOp {
            seq: applied.seq,
            entry_hash: convert::entry_hash("entry_hash", &applied.entry_hash)?,
            op_index: applied.op_index,
            clock: convert::clock("clock", applied.clock.as_ref())?,
            op: convert::op("op", applied.op)?,
            position: applied.position,
            origin: Origin::from_pb(applied.origin)?,
            entry_ops: applied.entry_ops,
        })
    }
}

/// Length of a replica's epoch, the id of its data directory's incarnation.
pub const EPOCH_LEN: usize = 16;

/// An epoch from a status reply: exactly [`EPOCH_LEN`] bytes.
fn epoch(field: &str, bytes: &[u8]) -> Result<[u8; EPOCH_LEN], ClientError> {
    reply_epoch("status", field, bytes)
}

/// An epoch from the `what` reply: exactly [`EPOCH_LEN`] bytes.
fn reply_epoch(what: &str, field: &str, bytes: &[u8]) -> Result<[u8; EPOCH_LEN], ClientError> {
    <[u8; EPOCH_LEN]>::try_from(bytes).map_err(|_| {
        ClientError::corrupt_reply(
            what,
            format_args!("{field} must be {EPOCH_LEN} bytes, got {}", bytes.len()),
        )
    })
}

/// A replica's view of itself.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Status {
    /// The replica's node key, its identity towards peers.
    pub node_id: PublicKey,
    /// The key the replica signs entries with on behalf of clients.
    pub writer: PublicKey,
    /// The data directory's incarnation; new on init and on restore.
    pub epoch: [u8; EPOCH_LEN],
    /// The replica's software version.
    pub version: String,
    /// Time since the replica started, in milliseconds.
    pub uptime_ms: u64,
    /// Every log the replica hosts.
    pub logs: Vec<LogInfo>,
    /// Bytes the data directory takes on disk.
    pub disk_bytes: u64,
    /// False once a durability error poisoned the store.
    pub writable: bool,
    /// The replicas this one replicates with, and how far each log has come with each.
    pub peers: Vec<PeerStatus>,
    /// The generation of the last member list set with
    /// [`Client::set_members`](crate::Client::set_members); 0 if never set.
    pub members_generation: u64,
    /// True once [`Client::drain`](crate::Client::drain) was called: local writes are
    /// refused.
    pub draining: bool,
    /// `None` when the replica is ready for clients (what its readiness probe reports),
    /// else why not: draining, poisoned, or catching up with a reachable member.
    pub not_ready: Option<String>,
    /// Who this client is to the replica (`anonymous` with security off).
    pub caller: Caller,
    /// The names of the backup destinations [`Client::backup`](crate::Client::backup)
    /// may name, as the replica was started with (`--backup-destination NAME=URL`).
    pub backup_destinations: Vec<String>,
}

/// The caller as the replica authenticated it.
#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub struct Caller {
    /// The principal: a token's name or a certificate's common name.
    pub principal: String,
    /// How it was proven: `none` (security off), `token` or `certificate`.
    pub authenticated_by: String,
    /// Its roles: read, write:<log-name pattern>, log-admin, cluster-admin, peer.
    pub roles: Vec<String>,
    /// Logs hosted on the replica that it created.
    pub logs_created: u64,
    /// How many it may create there; `None` with security off.
    pub logs_quota: Option<u64>,
}

impl TryFrom<pb::StatusResponse> for Status {
    type Error = ClientError;

    fn try_from(status: pb::StatusResponse) -> Result<Self, Self::Error> {
        Ok(Status {
            node_id: convert::public_key("node_id", &status.node_id)?,
            writer: convert::public_key("writer", &status.writer)?,
            epoch: epoch("epoch", &status.epoch)?,
            version: status.version,
            uptime_ms: status.uptime_ms,
            logs: status.logs.into_iter().map(LogInfo::try_from).collect::<Result<_, _>>()?,
            disk_bytes: status.disk_bytes,
            writable: status.writable,
            peers: status
                .peers
                .into_iter()
                .enumerate()
                .map(|(i, peer)| PeerStatus::from_pb(&format!("peers[{i}]"), peer))
                .collect::<Result<_, _>>()?,
            members_generation: status.members_generation,
            draining: status.draining,
            not_ready: (!status.ready).then(|| {
                if status.not_ready_reason.is_empty() {
                    "not ready".to_owned()
                } else {
                    status.not_ready_reason
                }
            }),
            caller: Caller {
                principal: status.principal,
                authenticated_by: status.authenticated_by,
                roles: status.roles,
                logs_created: status.logs_created,
                logs_quota: status.logs_quota,
            },
            backup_destinations: status.backup_destinations,
        })
    }
}

/// One peer as the replica sees it: who it is, whether it answers, and per log how far
/// replication has come both ways.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct PeerStatus {
    /// The peer's gRPC address (host:port), as it was configured.
    pub address: String,
    /// The peer's node key; `None` until the peer has answered once.
    pub node_id: Option<PublicKey>,
    /// The peer's data directory incarnation; `None` until the peer has answered once.
    pub epoch: Option<[u8; EPOCH_LEN]>,
    /// Whether the last call to the peer succeeded.
    pub connected: bool,
    /// Milliseconds since the last successful call to the peer; `None` if there never
    /// was one.
    pub last_contact_ms_ago: Option<u64>,
    /// The last error talking to the peer; `None` if there was none.
    pub last_error: Option<String>,
    /// Where the peer came from: `flag` (`--peer`), `members` (`SetMembers`) or `dns`
    /// (discovery). Kept as text so a newer server's sources still show.
    pub source: String,
    /// Replication with this peer, one per log, by name.
    pub logs: Vec<PeerLogStatus>,
}

impl PeerStatus {
    /// Converts one peer of a status reply; `field` names it (`peers[2]`) in errors.
    fn from_pb(field: &str, peer: pb::PeerStatus) -> Result<PeerStatus, ClientError> {
        // Empty bytes mean the peer has not said who it is yet; anything else must be a
        // well-formed id.
        let node_id = if peer.node_id.is_empty() {
            None
        } else {
            Some(convert::public_key(&format!("{field}.node_id"), &peer.node_id)?)
        };
        let epoch =
            if peer.epoch.is_empty() { None } else { Some(epoch(&format!("{field}.epoch"), &peer.epoch)?) };
        let logs = peer
            .logs
            .into_iter()
            .enumerate()
            .map(|(i, log)| PeerLogStatus::from_pb(&format!("{field}.logs[{i}]"), log))
            .collect::<Result<_, _>>()?;
        Ok(PeerStatus {
            address: peer.address,
            node_id,
            epoch,
            connected: peer.connected,
            // The wire says 0 for "never"; a contact 0 ms ago reads the same, and is
            // shown as never until the next status a moment later.
            last_contact_ms_ago: (peer.last_contact_ms_ago != 0).then_some(peer.last_contact_ms_ago),
            last_error: (!peer.last_error.is_empty()).then_some(peer.last_error),
            source: peer.source,
            logs,
        })
    }
}

/// Replication of one log with one peer.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct PeerLogStatus {
    /// The log.
    pub log_id: LogId,
    /// The log's name on this replica; empty if this replica does not host it.
    pub name: String,
    /// The last seq pulled from the peer, in the peer's numbering.
    pub cursor: u64,
    /// The peer's seq of the log as last seen, in the peer's numbering.
    pub peer_seq: u64,
    /// Entries the peer has that this replica has not pulled yet.
    pub lag: u64,
    /// How far the peer has pulled from this replica, in this replica's numbering.
    pub peer_holds: u64,
    /// This replica's seq when the log's digest was last found equal to the peer's at
    /// the same heads (0: not yet on this connection).
    pub verified_seq: u64,
    /// The last comparison found the same heads but different digests.
    pub digest_mismatch: bool,
}

impl PeerLogStatus {
    fn from_pb(field: &str, log: pb::PeerLogStatus) -> Result<PeerLogStatus, ClientError> {
        Ok(PeerLogStatus {
            log_id: convert::log_id(&format!("{field}.log_id"), &log.log_id)?,
            name: log.name,
            cursor: log.cursor,
            peer_seq: log.peer_seq,
            lag: log.lag,
            peer_holds: log.peer_holds,
            verified_seq: log.verified_seq,
            digest_mismatch: log.digest_mismatch,
        })
    }
}

/// One log of a finished [`Client::drain`](crate::Client::drain): everything up to `seq`
/// is held by another member.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct DrainedLog {
    /// The log.
    pub log_id: LogId,
    /// The log's name on the drained replica.
    pub name: String,
    /// The drained replica's seq of the log when the drain finished.
    pub seq: u64,
    /// The node id of a member that holds every entry up to `seq`; `None` for an empty
    /// log, which needs no holder.
    pub held_by: Option<PublicKey>,
}

impl DrainedLog {
    pub(crate) fn from_pb(field: &str, log: pb::DrainedLog) -> Result<DrainedLog, ClientError> {
        let held_by = if log.held_by.is_empty() {
            None
        } else {
            Some(convert::public_key(&format!("{field}.held_by"), &log.held_by)?)
        };
        // A log with entries is only drained once someone else holds them: a reply that
        // says otherwise would let an operator remove the last copy.
        if held_by.is_none() && log.seq != 0 {
            return Err(ClientError::corrupt_reply(
                "drain",
                format_args!("{field} has seq {} but no member holding it", log.seq),
            ));
        }
        Ok(DrainedLog {
            log_id: convert::log_id(&format!("{field}.log_id"), &log.log_id)?,
            name: log.name,
            seq: log.seq,
            held_by,
        })
    }
}

/// A recorded checkpoint of a log: a consistent cut on one replica with the Merkle root
/// of the log's view at that cut. From [`Client::checkpoint`](crate::Client::checkpoint),
/// and inside import and backup reports.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct CheckpointInfo {
    /// The log.
    pub log_id: LogId,
    /// The epoch of the replica that took it: the seq is in that replica's numbering.
    pub epoch: [u8; EPOCH_LEN],
    /// The cut: every entry with this seq or lower on that replica.
    pub seq: u64,
    /// The log's heads at the cut.
    pub heads: Vec<EntryHash>,
    /// Merkle root over the log's view at the cut.
    pub state_root: [u8; 32],
    /// Entries at the cut.
    pub n_entries: u64,
    /// Operations at the cut.
    pub n_ops: u64,
}

impl CheckpointInfo {
    /// Converts a checkpoint of a reply; `field` names it (`objects[1].checkpoint`) in
    /// errors.
    pub(crate) fn from_pb(field: &str, info: pb::CheckpointInfo) -> Result<CheckpointInfo, ClientError> {
        let state_root = <[u8; 32]>::try_from(info.state_root.as_slice()).map_err(|_| {
            ClientError::corrupt_reply(
                "checkpoint",
                format_args!("{field}.state_root must be 32 bytes, got {}", info.state_root.len()),
            )
        })?;
        Ok(CheckpointInfo {
            log_id: convert::log_id(&format!("{field}.log_id"), &info.log_id)?,
            epoch: reply_epoch("checkpoint", &format!("{field}.epoch"), &info.epoch)?,
            seq: info.seq,
            heads: convert::entry_hashes(&format!("{field}.heads"), &info.heads)?,
            state_root,
            n_entries: info.n_entries,
            n_ops: info.n_ops,
        })
    }

    /// Converts a checkpoint that a reply must carry.
    fn required(field: &str, info: Option<pb::CheckpointInfo>) -> Result<CheckpointInfo, ClientError> {
        let info =
            info.ok_or_else(|| ClientError::corrupt_reply("snapshot", format_args!("{field} is missing")))?;
        CheckpointInfo::from_pb(field, info)
    }
}

/// What an [`Client::import_snapshot`](crate::Client::import_snapshot) did with the
/// snapshot.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum ImportKind {
    /// A full snapshot restored into a log this replica did not hold.
    Full,
    /// A full snapshot merged into a log this replica already held.
    Merge,
    /// A delta applied after the replica's restore watermark.
    Delta,
    /// A delta this replica had already applied: nothing changed.
    UpToDate,
}

impl ImportKind {
    /// The wire and output word: `full`, `merge`, `delta`, `up_to_date`.
    pub fn name(self) -> &'static str {
        match self {
            ImportKind::Full => "full",
            ImportKind::Merge => "merge",
            ImportKind::Delta => "delta",
            ImportKind::UpToDate => "up_to_date",
        }
    }

    fn parse(text: &str) -> Result<ImportKind, ClientError> {
        match text {
            "full" => Ok(ImportKind::Full),
            "merge" => Ok(ImportKind::Merge),
            "delta" => Ok(ImportKind::Delta),
            "up_to_date" => Ok(ImportKind::UpToDate),
            other => Err(ClientError::corrupt_reply(
                "import",
                format_args!("kind {other:?} is not full, merge, delta or up_to_date"),
            )),
        }
    }
}

/// The outcome of an [`Client::import_snapshot`](crate::Client::import_snapshot).
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct ImportReport {
    /// The log the snapshot was of.
    pub log_id: LogId,
    /// How it was applied.
    pub kind: ImportKind,
    /// The cut the snapshot brought the log to, in the source replica's numbering.
    pub checkpoint: CheckpointInfo,
    /// Entries in the snapshot, all verified.
    pub entries_read: u64,
    /// Entries this replica did not hold before and stored.
    pub entries_stored: u64,
}

impl TryFrom<pb::ImportSnapshotResponse> for ImportReport {
    type Error = ClientError;

    fn try_from(reply: pb::ImportSnapshotResponse) -> Result<Self, Self::Error> {
        Ok(ImportReport {
            log_id: convert::log_id("log_id", &reply.log_id)?,
            kind: ImportKind::parse(&reply.kind)?,
            checkpoint: CheckpointInfo::required("checkpoint", reply.checkpoint)?,
            entries_read: reply.entries_read,
            entries_stored: reply.entries_stored,
        })
    }
}

/// Whether a backup object holds a whole log or the entries after an earlier backup.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum BackupKind {
    /// Every entry up to the checkpoint.
    Full,
    /// The entries after `base_seq` up to the checkpoint.
    Delta,
}

impl BackupKind {
    /// The wire and output word: `full` or `delta`.
    pub fn name(self) -> &'static str {
        match self {
            BackupKind::Full => "full",
            BackupKind::Delta => "delta",
        }
    }
}

/// One snapshot object a [`Client::backup`](crate::Client::backup) wrote.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct BackupObject {
    /// The log.
    pub log_id: LogId,
    /// The log's name on the replica.
    pub name: String,
    /// Full, or a delta.
    pub kind: BackupKind,
    /// The object's key under the destination.
    pub key: String,
    /// The object's size.
    pub bytes: u64,
    /// The cut the object brings a restore to.
    pub checkpoint: CheckpointInfo,
    /// For a delta, the seq of the checkpoint it starts from (0 if the log was empty
    /// then); `None` for a full one.
    pub base_seq: Option<u64>,
}

impl BackupObject {
    fn from_pb(field: &str, object: pb::BackupObject) -> Result<BackupObject, ClientError> {
        let kind = match (object.kind.as_str(), object.base_seq) {
            ("full", 0) => BackupKind::Full,
            // A delta of a log first backed up empty starts at seq 0.
            ("delta", _) => BackupKind::Delta,
            (kind, base_seq) => {
                return Err(ClientError::corrupt_reply(
                    "backup",
                    format_args!("{field} has kind {kind:?} with base seq {base_seq}"),
                ));
            }
        };
        Ok(BackupObject {
            log_id: convert::log_id(&format!("{field}.log_id"), &object.log_id)?,
            name: object.name,
            kind,
            key: object.key,
            bytes: object.bytes,
            checkpoint: CheckpointInfo::required(&format!("{field}.checkpoint"), object.checkpoint)?,
            base_seq: (kind == BackupKind::Delta).then_some(object.base_seq),
        })
    }
}

/// What a [`Client::backup`](crate::Client::backup) wrote and removed.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct BackupReport {
    /// The run's id in the destination's catalog.
    pub backup_id: String,
    /// One object per log backed up.
    pub objects: Vec<BackupObject>,
    /// Keys of objects removed by retention.
    pub deleted: Vec<String>,
}

impl TryFrom<pb::BackupResponse> for BackupReport {
    type Error = ClientError;

    fn try_from(reply: pb::BackupResponse) -> Result<Self, Self::Error> {
        Ok(BackupReport {
            backup_id: reply.backup_id,
            objects: reply
                .objects
                .into_iter()
                .enumerate()
                .map(|(i, object)| BackupObject::from_pb(&format!("objects[{i}]"), object))
                .collect::<Result<_, _>>()?,
            deleted: reply.deleted,
        })
    }
}

/// Where a backup job started with [`Client::start_backup`](crate::Client::start_backup)
/// stands.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum BackupJobState {
    Running,
    /// Done: what [`Client::backup`](crate::Client::backup) would have answered.
    Completed(BackupReport),
    /// Failed, with the error [`Client::backup`](crate::Client::backup) would have
    /// returned.
    Failed(ClientError),
}

/// A backup job and its progress.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct BackupJobReport {
    pub job_id: String,
    pub state: BackupJobState,
    /// Logs the job backs up, and how many are written so far.
    pub logs_total: u32,
    pub logs_done: u32,
    /// Bytes uploaded so far.
    pub bytes_written: u64,
    /// Since the job started (to its end, once it ended).
    pub elapsed: std::time::Duration,
}

impl TryFrom<pb::BackupJob> for BackupJobReport {
    type Error = ClientError;

    fn try_from(reply: pb::BackupJob) -> Result<Self, Self::Error> {
        let state = match pb::BackupJobState::try_from(reply.state) {
            Ok(pb::BackupJobState::Running) => BackupJobState::Running,
            Ok(pb::BackupJobState::Completed) => {
                let Some(result) = reply.result else {
                    return Err(ClientError::corrupt_reply("backup job", "completed without a result"));
                };
                BackupJobState::Completed(BackupReport::try_from(result)?)
            }
            Ok(pb::BackupJobState::Failed) => BackupJobState::Failed(ClientError::from_status(
                &tonic::Status::new(tonic::Code::from(reply.error_code), reply.error_message),
            )),
            _ => {
                return Err(ClientError::corrupt_reply(
                    "backup job",
                    format_args!("unknown job state {}", reply.state),
                ));
            }
        };
        Ok(BackupJobReport {
            job_id: reply.job_id,
            state,
            logs_total: reply.logs_total,
            logs_done: reply.logs_done,
            bytes_written: reply.bytes_written,
            elapsed: std::time::Duration::from_millis(reply.elapsed_ms),
        })
    }
}

#[cfg(test)]
mod tests {
    use plait_core::{Manifest, WriterKey};

    use super::*;

    fn key() -> WriterKey {
        WriterKey::from_secret([3; 32])
    }

    fn pb_clock(time: u64) -> Option<pb::Clock> {
        Some(Clock { time, writer: key().public() }.into())
    }

    fn signed_manifest() -> SignedManifest {
        Manifest {
            name: "chat".into(),
            log_type: LogType::Feed,
            writers: Writers::keys(vec![key().public()]),
            created_by: key().public(),
            created_at_lamport: 1,
            options: vec![],
        }
        .sign(&key())
        .unwrap()
    }

    fn pb_log_info(manifest: &SignedManifest) -> pb::LogInfo {
        pb::LogInfo {
            log_id: manifest.log_id().0.to_vec(),
            name: "chat".into(),
            r#type: pb::LogType::Feed as i32,
            open: false,
            writers: vec![key().public().0.to_vec()],
            created_by: key().public().0.to_vec(),
            manifest: manifest.bytes().to_vec(),
            seq: 7,
            heads: 1,
            pending: 0,
            ops: 9,
            creator: "token:app".into(),
            digest: vec![5; 32],
            consumers: vec![pb::ConsumerInfo { name: "billing".into(), committed_seq: 5, lag: 2 }],
        }
    }

    /// A well-formed LogInfo converts and its manifest verifies against its id.
    #[test]
    fn log_info_converts_and_manifest_verifies() {
        let manifest = signed_manifest();
        let info = LogInfo::try_from(pb_log_info(&manifest)).unwrap();
        assert_eq!(info.log_type, LogType::Feed);
        assert_eq!(info.writers, Writers::Keys(vec![key().public()]));
        assert_eq!(info.seq, 7);
        assert_eq!(info.verified_manifest().unwrap().log_id(), info.log_id);
    }

    /// A LogInfo whose manifest does not hash to its id is caught.
    #[test]
    fn log_info_with_foreign_manifest_is_corrupt() {
        let manifest = signed_manifest();
        let mut message = pb_log_info(&manifest);
        message.log_id = vec![0; 32];
        let info = LogInfo::try_from(message).unwrap();
        assert!(matches!(info.verified_manifest(), Err(ClientError::Corrupt(_))));
    }

    /// An unspecified log type in a reply is the server's error, reported as corrupt.
    #[test]
    fn log_info_with_unspecified_type_is_corrupt() {
        let mut message = pb_log_info(&signed_manifest());
        message.r#type = 0;
        let err = LogInfo::try_from(message).unwrap_err();
        assert!(matches!(err, ClientError::Corrupt(_)), "{err:?}");
        assert!(err.to_string().contains("type is unspecified"), "{err}");
    }

    /// A write ack's ids parse; a log id of the wrong length is refused.
    #[test]
    fn write_ack_parses_ids() {
        let ack = pb::WriteAck {
            log_id: vec![4; 32],
            entry_hash: vec![5; 32],
            seq: 3,
            op_index: 1,
            clock: pb_clock(2),
        };
        let ack = WriteAck::try_from(ack).unwrap();
        assert_eq!(ack.log_id, LogId([4; 32]));
        assert_eq!(ack.entry_hash, EntryHash([5; 32]));
        assert_eq!(ack.clock.time, 2);
        let bad = pb::WriteAck { log_id: b"chat".to_vec(), ..Default::default() };
        assert!(WriteAck::try_from(bad).is_err());
    }

    /// Submit outcomes map one to one; UNSPECIFIED is refused.
    #[test]
    fn submit_outcomes() {
        let result = |outcome: i32| pb::SubmitResult { entry_hash: vec![1; 32], outcome, seq: 0 };
        assert_eq!(SubmitResult::try_from(result(1)).unwrap().outcome, SubmitOutcome::Stored);
        assert_eq!(SubmitResult::try_from(result(2)).unwrap().outcome, SubmitOutcome::Duplicate);
        assert_eq!(SubmitResult::try_from(result(3)).unwrap().outcome, SubmitOutcome::Pending);
        assert!(SubmitResult::try_from(result(0)).is_err());
        assert!(SubmitResult::try_from(result(9)).is_err());
    }

    /// Heads name the index of a malformed head.
    #[test]
    fn heads_name_the_bad_index() {
        let good = pb::Head { hash: vec![1; 32], clock: pb_clock(4) };
        let bad = pb::Head { hash: vec![1; 31], clock: pb_clock(4) };
        let reply = pb::HeadsResponse { log_id: vec![2; 32], heads: vec![good.clone()], seq: 5 };
        let heads = Heads::try_from(reply).unwrap();
        assert_eq!(heads.heads[0].clock.time, 4);
        let reply = pb::HeadsResponse { log_id: vec![2; 32], heads: vec![good, bad], seq: 5 };
        let err = Heads::try_from(reply).unwrap_err();
        assert!(err.to_string().contains("heads[1].hash"), "{err}");
    }

    fn head(time: u64, hash_byte: u8) -> Head {
        Head { hash: EntryHash([hash_byte; 32]), clock: Clock { time, writer: key().public() } }
    }

    /// The first entry of an empty log has no parents and time 1.
    #[test]
    fn draft_on_no_heads_starts_at_one() {
        let heads = Heads { log_id: LogId([1; 32]), heads: vec![], seq: 0 };
        let draft = heads.draft(vec![Op::Append { value: b"x".to_vec() }]);
        assert_eq!(draft.time, 1);
        assert!(draft.next.is_empty());
        assert_eq!(draft.log, LogId([1; 32]));
    }

    /// The next entry names every head and ticks past the latest one; it signs.
    #[test]
    fn draft_names_heads_and_ticks_past_them() {
        let heads =
            Heads { log_id: LogId([1; 32]), heads: vec![head(3, 1), head(9, 2), head(5, 3)], seq: 10 };
        let draft = heads.draft(vec![Op::Append { value: b"x".to_vec() }]);
        assert_eq!(draft.time, 10);
        assert_eq!(draft.next, vec![EntryHash([1; 32]), EntryHash([2; 32]), EntryHash([3; 32])]);
        let entry = draft.sign(&key()).unwrap();
        assert_eq!(entry.clock().time, 10);
    }

    /// With more heads than an entry may name, the latest are kept and time still
    /// follows the latest of all.
    #[test]
    fn draft_caps_parents_at_next_max() {
        let many: Vec<Head> = (0..NEXT_MAX as u64 + 10)
            .map(|i| {
                let mut h = head(i + 1, 0);
                h.hash.0[..8].copy_from_slice(&i.to_be_bytes());
                h
            })
            .collect();
        let heads = Heads { log_id: LogId([1; 32]), heads: many, seq: 1 };
        let draft = heads.draft(vec![Op::Append { value: b"x".to_vec() }]);
        assert_eq!(draft.next.len(), NEXT_MAX);
        assert_eq!(draft.time, NEXT_MAX as u64 + 11);
        // The oldest ten (times 1..=10) are the ones left out.
        assert!(draft.next.iter().all(|h| u64::from_be_bytes(h.0[..8].try_into().unwrap()) >= 10));
        draft.sign(&key()).unwrap();
    }

    /// An entry fetched by hash verifies; a different entry under that hash does not.
    #[test]
    fn stored_entry_verifies_against_the_requested_hash() {
        let entry = plait_core::EntryDraft {
            log: LogId([1; 32]),
            time: 1,
            next: vec![],
            refs: vec![],
            ops: vec![Op::Append { value: b"x".to_vec() }],
        }
        .sign(&key())
        .unwrap();
        let message = convert::entry_to_pb(&entry, 4);
        let stored = StoredEntry::verify(message.clone(), entry.hash()).unwrap();
        assert_eq!(stored.seq, 4);
        assert_eq!(stored.entry, entry);
        let err = StoredEntry::verify(message, EntryHash([0; 32])).unwrap_err();
        assert!(matches!(err, ClientError::Corrupt(_)), "{err:?}");
    }

    /// An applied op without its op is a malformed reply.
    #[test]
    fn applied_op_requires_the_op() {
        let applied = pb::AppliedOp {
            seq: 1,
            entry_hash: vec![1; 32],
            op_index: 0,
            clock: pb_clock(1),
            op: Some(pb::Op::from(Op::Delete { key: b"k".to_vec() })),
            position: vec![],
            origin: None,
            entry_ops: 1,
        };
        assert!(AppliedOp::try_from(applied.clone()).unwrap().ends_entry());
        assert_eq!(AppliedOp::try_from(applied.clone()).unwrap().op, Op::Delete { key: b"k".to_vec() });
        let err = AppliedOp::try_from(pb::AppliedOp { op: None, ..applied }).unwrap_err();
        assert!(err.to_string().contains("op is missing"), "{err}");
    }

    /// An applied op's origin: a peer's needs its 32-byte node id; a kind this client does
    /// not know, or none at all (an older replica), is unknown.
    #[test]
    fn applied_op_origins() {
        let applied = |kind: i32, peer: Vec<u8>| pb::AppliedOp {
            seq: 1,
            entry_hash: vec![1; 32],
            op_index: 0,
            clock: pb_clock(1),
            op: Some(pb::Op::from(Op::Delete { key: b"k".to_vec() })),
            position: vec![],
            origin: Some(pb::Origin { kind, peer_node_id: peer }),
            entry_ops: 1,
        };
        let origin = |a| AppliedOp::try_from(a).map(|a: AppliedOp| a.origin);
        assert_eq!(origin(applied(pb::OriginKind::Local as i32, vec![])).unwrap(), Origin::Local);
        let peer = origin(applied(pb::OriginKind::Peer as i32, vec![7; 32])).unwrap();
        assert_eq!(peer, Origin::Peer(PublicKey([7; 32])));
        assert_eq!(peer.to_string(), format!("peer:{}", "07".repeat(32)));
        assert!(origin(applied(pb::OriginKind::Peer as i32, vec![7; 3])).is_err(), "a short node id");
        assert_eq!(origin(applied(99, vec![])).unwrap(), Origin::Unknown);
        assert_eq!(origin(pb::AppliedOp { origin: None, ..applied(0, vec![]) }).unwrap(), Origin::Unknown);
    }

    /// Status requires a 16-byte epoch.
    #[test]
    fn status_checks_the_epoch() {
        let status = pb::StatusResponse {
            node_id: vec![1; 32],
            writer: vec![2; 32],
            epoch: vec![3; 16],
            version: "0.1.0".into(),
            uptime_ms: 1000,
            logs: vec![],
            disk_bytes: 0,
            writable: true,
            ..Default::default()
        };
        assert_eq!(Status::try_from(status.clone()).unwrap().epoch, [3; 16]);
        let err = Status::try_from(pb::StatusResponse { epoch: vec![3; 8], ..status }).unwrap_err();
        assert!(err.to_string().contains("epoch must be 16 bytes"), "{err}");
    }

    fn pb_peer() -> pb::PeerStatus {
        pb::PeerStatus {
            address: "10.0.0.2:7070".into(),
            node_id: vec![8; 32],
            epoch: vec![9; 16],
            connected: true,
            last_contact_ms_ago: 1200,
            last_error: String::new(),
            logs: vec![pb::PeerLogStatus {
                log_id: vec![4; 32],
                name: "settings".into(),
                cursor: 10,
                peer_seq: 12,
                lag: 2,
                peer_holds: 7,
                verified_seq: 11,
                digest_mismatch: false,
            }],
            source: "members".into(),
        }
    }

    fn pb_status(peers: Vec<pb::PeerStatus>) -> pb::StatusResponse {
        pb::StatusResponse {
            node_id: vec![1; 32],
            writer: vec![2; 32],
            epoch: vec![3; 16],
            peers,
            members_generation: 4,
            draining: true,
            ready: false,
            not_ready_reason: "draining before removal".into(),
            ..Default::default()
        }
    }

    /// Peers, their per-log replication, the members generation and the drain flag come
    /// through field by field.
    #[test]
    fn status_carries_peers_membership_and_drain() {
        let status = Status::try_from(pb_status(vec![pb_peer()])).unwrap();
        assert_eq!(status.members_generation, 4);
        assert!(status.draining);
        assert_eq!(status.not_ready.as_deref(), Some("draining before removal"));
        let expected = PeerStatus {
            address: "10.0.0.2:7070".into(),
            node_id: Some(PublicKey([8; 32])),
            epoch: Some([9; 16]),
            connected: true,
            last_contact_ms_ago: Some(1200),
            last_error: None,
            source: "members".into(),
            logs: vec![PeerLogStatus {
                log_id: LogId([4; 32]),
                name: "settings".into(),
                cursor: 10,
                peer_seq: 12,
                lag: 2,
                peer_holds: 7,
                verified_seq: 11,
                digest_mismatch: false,
            }],
        };
        assert_eq!(status.peers, vec![expected]);
    }

    /// A peer that never answered has no node id, epoch or contact: empty wire fields
    /// become `None`, and a last error is kept.
    #[test]
    fn peer_that_never_answered() {
        let peer = pb::PeerStatus {
            node_id: vec![],
            epoch: vec![],
            connected: false,
            last_contact_ms_ago: 0,
            last_error: "connection refused".into(),
            logs: vec![],
            ..pb_peer()
        };
        let status = Status::try_from(pb_status(vec![pb_peer(), peer])).unwrap();
        let peer = &status.peers[1];
        assert_eq!((peer.node_id, peer.epoch, peer.last_contact_ms_ago), (None, None, None));
        assert_eq!(peer.last_error.as_deref(), Some("connection refused"));
        assert!(!peer.connected && peer.logs.is_empty());
    }

    /// A malformed id or epoch anywhere in the peers makes the whole reply corrupt, and
    /// the error names the field down to its index.
    #[test]
    fn malformed_peers_are_corrupt_and_named() {
        let bad_node = pb::PeerStatus { node_id: vec![8; 31], ..pb_peer() };
        let bad_epoch = pb::PeerStatus { epoch: vec![9; 15], ..pb_peer() };
        let mut bad_log = pb_peer();
        bad_log.logs.push(pb::PeerLogStatus { log_id: vec![4; 3], ..bad_log.logs[0].clone() });
        for (peer, field) in [
            (bad_node, "peers[1].node_id"),
            (bad_epoch, "peers[1].epoch"),
            (bad_log, "peers[1].logs[1].log_id"),
        ] {
            let err = Status::try_from(pb_status(vec![pb_peer(), peer])).unwrap_err();
            assert!(matches!(err, ClientError::Corrupt(_)), "{err:?}");
            assert!(err.to_string().contains(field), "{field}: {err}");
        }
    }

    /// A drained log names its holder; an empty log needs none; a log with entries and
    /// no holder is a reply not to trust.
    #[test]
    fn drained_logs() {
        let drained = |seq: u64, held_by: Vec<u8>| pb::DrainedLog {
            log_id: vec![4; 32],
            name: "settings".into(),
            seq,
            held_by,
        };
        let log = DrainedLog::from_pb("logs[0]", drained(5, vec![8; 32])).unwrap();
        assert_eq!(
            log,
            DrainedLog {
                log_id: LogId([4; 32]),
                name: "settings".into(),
                seq: 5,
                held_by: Some(PublicKey([8; 32]))
            }
        );
        assert_eq!(DrainedLog::from_pb("logs[0]", drained(0, vec![])).unwrap().held_by, None);
        let err = DrainedLog::from_pb("logs[2]", drained(5, vec![])).unwrap_err();
        assert!(matches!(err, ClientError::Corrupt(_)), "{err:?}");
        assert!(err.to_string().contains("logs[2] has seq 5 but no member"), "{err}");
        let err = DrainedLog::from_pb("logs[0]", drained(5, vec![8; 4])).unwrap_err();
        assert!(err.to_string().contains("logs[0].held_by"), "{err}");
    }
    fn pb_checkpoint() -> pb::CheckpointInfo {
        pb::CheckpointInfo {
            log_id: vec![4; 32],
            epoch: vec![9; 16],
            seq: 12,
            heads: vec![vec![1; 32], vec![2; 32]],
            state_root: vec![7; 32],
            n_entries: 12,
            n_ops: 30,
        }
    }

    /// A checkpoint converts field by field; a short root, epoch or head is corrupt and
    /// named.
    #[test]
    fn checkpoints() {
        let info = CheckpointInfo::from_pb("checkpoint", pb_checkpoint()).unwrap();
        assert_eq!(
            info,
            CheckpointInfo {
                log_id: LogId([4; 32]),
                epoch: [9; 16],
                seq: 12,
                heads: vec![EntryHash([1; 32]), EntryHash([2; 32])],
                state_root: [7; 32],
                n_entries: 12,
                n_ops: 30,
            }
        );
        let bad = [
            (pb::CheckpointInfo { state_root: vec![7; 31], ..pb_checkpoint() }, "checkpoint.state_root"),
            (pb::CheckpointInfo { epoch: vec![9; 8], ..pb_checkpoint() }, "checkpoint.epoch"),
            (pb::CheckpointInfo { heads: vec![vec![1; 3]], ..pb_checkpoint() }, "checkpoint.heads"),
            (pb::CheckpointInfo { log_id: vec![], ..pb_checkpoint() }, "checkpoint.log_id"),
        ];
        for (message, field) in bad {
            let err = CheckpointInfo::from_pb("checkpoint", message).unwrap_err();
            assert!(matches!(err, ClientError::Corrupt(_)), "{err:?}");
            assert!(err.to_string().contains(field), "{field}: {err}");
        }
    }

    /// Import kinds map one to one; an unknown kind or a missing checkpoint is corrupt.
    #[test]
    fn import_reports() {
        let reply = |kind: &str| pb::ImportSnapshotResponse {
            log_id: vec![4; 32],
            kind: kind.into(),
            checkpoint: Some(pb_checkpoint()),
            entries_read: 12,
            entries_stored: 10,
        };
        for kind in [ImportKind::Full, ImportKind::Merge, ImportKind::Delta, ImportKind::UpToDate] {
            let report = ImportReport::try_from(reply(kind.name())).unwrap();
            assert_eq!(report.kind, kind);
            assert_eq!((report.entries_read, report.entries_stored), (12, 10));
            assert_eq!(report.checkpoint.seq, 12);
        }
        let err = ImportReport::try_from(reply("partial")).unwrap_err();
        assert!(matches!(err, ClientError::Corrupt(_)) && err.to_string().contains("partial"), "{err}");
        let err = ImportReport::try_from(pb::ImportSnapshotResponse { checkpoint: None, ..reply("full") })
            .unwrap_err();
        assert!(err.to_string().contains("checkpoint is missing"), "{err}");
    }

    /// Backup objects: a full one has no base, a delta has one (0 for a log backed up
    /// empty); an unknown kind, or a full one with a base, is corrupt and names the object.
    #[test]
    fn backup_reports() {
        let object = |kind: &str, base_seq: u64| pb::BackupObject {
            log_id: vec![4; 32],
            name: "settings".into(),
            kind: kind.into(),
            key: format!("settings/{kind}.snap"),
            bytes: 1234,
            checkpoint: Some(pb_checkpoint()),
            base_seq,
        };
        let reply = |objects| pb::BackupResponse {
            backup_id: "b1".into(),
            objects,
            deleted: vec!["old.snap".into()],
        };
        let report = BackupReport::try_from(reply(vec![object("full", 0), object("delta", 5)])).unwrap();
        assert_eq!(report.backup_id, "b1");
        assert_eq!(report.deleted, vec!["old.snap".to_owned()]);
        assert_eq!((report.objects[0].kind, report.objects[0].base_seq), (BackupKind::Full, None));
        assert_eq!((report.objects[1].kind, report.objects[1].base_seq), (BackupKind::Delta, Some(5)));
        assert_eq!(report.objects[1].checkpoint.state_root, [7; 32]);
        let from_empty = BackupReport::try_from(reply(vec![object("delta", 0)])).unwrap();
        assert_eq!(from_empty.objects[0].base_seq, Some(0));
        for bad in [object("full", 3), object("copy", 0)] {
            let err = BackupReport::try_from(reply(vec![object("full", 0), bad])).unwrap_err();
            assert!(matches!(err, ClientError::Corrupt(_)), "{err:?}");
            assert!(err.to_string().contains("objects[1]"), "{err}");
        }
        let mut missing = object("full", 0);
        missing.checkpoint = None;
        let err = BackupReport::try_from(reply(vec![missing])).unwrap_err();
        assert!(err.to_string().contains("objects[0].checkpoint is missing"), "{err}");
    }
}
