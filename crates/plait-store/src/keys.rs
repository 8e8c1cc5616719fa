//! Key and value layouts of the keyspaces. Every multi-part key starts with its log, so
//! one log's rows are one prefix; numbers are big-endian so byte order is numeric order.
//!
//! The keyspaces with a row per entry or per op (`seq`, `heads`, `pending`, `kv`, `feed`,
//! `graph_out`, `graph_in`) start their keys with the log's [`LogNo`], a 4-byte number
//! this replica gave the log; the rest (one row per log, checkpoint or peer) with the
//! 32-byte log id. The number is local: nothing that leaves the replica (snapshots, state
//! roots, continuations aside) carries it.

use plait_core::{EntryHash, LogId, OpId, PublicKey};

use crate::store::Members;

/// Bytes of a log id at the start of a per-log key.
pub(crate) const ID: usize = 32;
/// Bytes of a log number at the start of a per-entry or per-op key.
pub(crate) const NO: usize = 4;
pub(crate) const HASH: usize = 32;

/// A log's number on this replica: given once, when the log is created, imported or
/// migrated here, never reused (`meta/next_log_no` counts them), kept in `log_nos` (log id
/// → number). Four bytes in place of the 32-byte log id in every hot key: shorter keys
/// are fewer bytes to insert, compare, flush and compact.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub(crate) struct LogNo(pub(crate) u32);

impl LogNo {
    pub(crate) fn bytes(self) -> [u8; NO] {
        self.0.to_be_bytes()
    }

    pub(crate) fn parse(v: &[u8]) -> Option<LogNo> {
        Some(LogNo(u32::from_be_bytes(v.try_into().ok()?)))
    }
}

/// `seq` key: log number ‖ seq.
pub(crate) fn seq_key(no: LogNo, seq: u64) -> [u8; NO + 8] {
    let mut k = [0u8; NO + 8];
    k[..NO].copy_from_slice(&no.bytes());
    k[NO..].copy_from_slice(&seq.to_be_bytes());
    k
}

/// `checkpoints` key: log id ‖ seq.
pub(crate) fn checkpoint_key(log: &LogId, seq: u64) -> [u8; ID + 8] {
    let mut k = [0u8; ID + 8];
    k[..ID].copy_from_slice(&log.0);
    k[ID..].copy_from_slice(&seq.to_be_bytes());
    k
}

/// `heads` and `pending` key: log number ‖ entry hash.
pub(crate) fn entry_key(no: LogNo, hash: &EntryHash) -> [u8; NO + HASH] {
    let mut k = [0u8; NO + HASH];
    k[..NO].copy_from_slice(&no.bytes());
    k[NO..].copy_from_slice(&hash.0);
    k
}

pub(crate) fn hash_hash(a: &EntryHash, b: &EntryHash) -> [u8; 2 * HASH] {
    let mut k = [0u8; 2 * HASH];
    k[..HASH].copy_from_slice(&a.0);
    k[HASH..].copy_from_slice(&b.0);
    k
}

pub(crate) fn u64_at(bytes: &[u8], at: usize) -> Option<u64> {
    Some(u64::from_be_bytes(bytes.get(at..at + 8)?.try_into().ok()?))
}

/// `by_hash` value: log ‖ seq ‖ clock time.
pub(crate) fn location(log: &LogId, seq: u64, time: u64) -> [u8; ID + 16] {
    let mut v = [0u8; ID + 16];
    v[..ID].copy_from_slice(&log.0);
    v[ID..ID + 8].copy_from_slice(&seq.to_be_bytes());
    v[ID + 8..].copy_from_slice(&time.to_be_bytes());
    v
}

pub(crate) struct Location {
    pub(crate) log: LogId,
    pub(crate) seq: u64,
    pub(crate) time: u64,
}

pub(crate) fn parse_location(v: &[u8]) -> Option<Location> {
    Some(Location { log: LogId::from_slice(v.get(..ID)?)?, seq: u64_at(v, ID)?, time: u64_at(v, ID + 8)? })
}

/// `kv` key: log number ‖ key.
pub(crate) fn kv_key(no: LogNo, key: &[u8]) -> Vec<u8> {
    let mut k = Vec::with_capacity(NO + key.len());
    k.extend_from_slice(&no.bytes());
    k.extend_from_slice(key);
    k
}

/// Register value (kv and graph): op id sort key ‖ live flag ‖ payload. A tombstone has
/// flag 0 and no payload.
pub(crate) fn register_value(id: &OpId, payload: Option<&[u8]>) -> Vec<u8> {
    let mut v = Vec::with_capacity(OpId::SORT_KEY_LEN + 1 + payload.map_or(0, <[u8]>::len));
    v.extend_from_slice(&id.to_sort_key());
    match payload {
        Some(p) => {
            v.push(1);
            v.extend_from_slice(p);
        }
        None => v.push(0),
    }
    v
}

pub(crate) struct RegisterRef<'a> {
    pub(crate) id: OpId,
    pub(crate) payload: Option<&'a [u8]>,
}

pub(crate) fn parse_register(v: &[u8]) -> Option<RegisterRef<'_>> {
    let id = OpId::from_sort_key(v.get(..OpId::SORT_KEY_LEN)?)?;
    let payload = match v.get(OpId::SORT_KEY_LEN)? {
        1 => Some(&v[OpId::SORT_KEY_LEN + 1..]),
        0 => None,
        _ => return None,
    };
    Some(RegisterRef { id, payload })
}

/// `feed` key: log number ‖ op id sort key, so a prefix scan reads the feed in total order.
pub(crate) fn feed_key(no: LogNo, id: &OpId) -> Vec<u8> {
    let mut k = Vec::with_capacity(NO + OpId::SORT_KEY_LEN);
    k.extend_from_slice(&no.bytes());
    k.extend_from_slice(&id.to_sort_key());
    k
}

fn push_len_prefixed(k: &mut Vec<u8>, part: &[u8]) {
    // Lengths are bounded by the op limits (at most 1 KiB), far below u16::MAX.
    k.extend_from_slice(&(part.len() as u16).to_be_bytes());
    k.extend_from_slice(part);
}

/// `graph_out` key: log number ‖ len‖src ‖ len‖label ‖ dst; `graph_in` swaps src and dst.
/// Length prefixes make "all edges of node n" and "of node n with label l" prefixes.
pub(crate) fn edge_key(no: LogNo, node: &[u8], label: &str, other: &[u8]) -> Vec<u8> {
    let mut k = edge_prefix(no, node, Some(label));
    k.extend_from_slice(other);
    k
}

pub(crate) fn edge_prefix(no: LogNo, node: &[u8], label: Option<&str>) -> Vec<u8> {
    let mut k = Vec::with_capacity(NO + 4 + node.len() + label.map_or(0, str::len) + 32);
    k.extend_from_slice(&no.bytes());
    push_len_prefixed(&mut k, node);
    if let Some(label) = label {
        push_len_prefixed(&mut k, label.as_bytes());
    }
    k
}

/// Splits an edge key (after its log number) into node, label and other node.
pub(crate) fn parse_edge_key(k: &[u8]) -> Option<(&[u8], &str, &[u8])> {
    let k = k.get(NO..)?;
    let node_len = u16::from_be_bytes(k.get(..2)?.try_into().ok()?) as usize;
    let node = k.get(2..2 + node_len)?;
    let rest = &k[2 + node_len..];
    let label_len = u16::from_be_bytes(rest.get(..2)?.try_into().ok()?) as usize;
    let label = std::str::from_utf8(rest.get(2..2 + label_len)?).ok()?;
    Some((node, label, &rest[2 + label_len..]))
}

/// The exclusive upper bound of a prefix: the smallest key greater than every key that
/// starts with it (`None` when the prefix is all 0xff).
pub(crate) fn prefix_end(prefix: &[u8]) -> Option<Vec<u8>> {
    let mut end = prefix.to_vec();
    while let Some(last) = end.pop() {
        if last < 0xff {
            end.push(last + 1);
            return Some(end);
        }
    }
    None
}

/// `peers` key: peer node id ‖ log.
pub(crate) fn peer_log(peer: &PublicKey, log: &LogId) -> [u8; 64] {
    let mut k = [0u8; 64];
    k[..32].copy_from_slice(&peer.0);
    k[32..].copy_from_slice(&log.0);
    k
}

/// `counters` value: ops stored (u64 BE) ‖ the digest of the stored entries. Replicas that
/// did not keep digests wrote the op count alone, which still reads.
pub(crate) fn counters_value(ops: u64, digest: &plait_core::SetDigest) -> Vec<u8> {
    let mut v = Vec::with_capacity(40);
    v.extend_from_slice(&ops.to_be_bytes());
    v.extend_from_slice(&digest.0);
    v
}

/// The digest of a `counters` value, `None` when it has none.
pub(crate) fn counters_digest(v: &[u8]) -> Option<plait_core::SetDigest> {
    v.get(8..40).filter(|_| v.len() == 40).map(|d| plait_core::SetDigest(d.try_into().expect("32 bytes")))
}

/// `peers` value: the peer's epoch ‖ seq.
pub(crate) fn cursor_value(epoch: &[u8; 16], seq: u64) -> [u8; 24] {
    let mut v = [0u8; 24];
    v[..16].copy_from_slice(epoch);
    v[16..].copy_from_slice(&seq.to_be_bytes());
    v
}

pub(crate) fn parse_cursor(v: &[u8]) -> Option<([u8; 16], u64)> {
    Some((v.get(..16)?.try_into().ok()?, u64_at(v, 16)?))
}

/// `meta/members`: generation ‖ addresses joined by newlines (addresses never hold one).
pub(crate) fn members_value(members: &Members) -> Vec<u8> {
    let mut v = members.generation.to_be_bytes().to_vec();
    v.extend_from_slice(members.addresses.join("\n").as_bytes());
    v
}

pub(crate) fn parse_members(v: &[u8]) -> Option<Members> {
    let generation = u64_at(v, 0)?;
    let text = std::str::from_utf8(v.get(8..)?).ok()?;
    let addresses = if text.is_empty() { Vec::new() } else { text.split('\n').map(str::to_owned).collect() };
    Some(Members { generation, addresses })
}
