//! Key and value layouts of the keyspaces. Every multi-part key starts with the log id
//! so one log's rows are one prefix; numbers are big-endian so byte order is numeric
//! order.

use plait_core::{EntryHash, LogId, OpId, PublicKey};

use crate::store::Members;

pub(crate) const LOG: usize = 32;
pub(crate) const HASH: usize = 32;

pub(crate) fn log_seq(log: &LogId, seq: u64) -> [u8; LOG + 8] {
    let mut k = [0u8; LOG + 8];
    k[..LOG].copy_from_slice(&log.0);
    k[LOG..].copy_from_slice(&seq.to_be_bytes());
    k
}

pub(crate) fn log_hash(log: &LogId, hash: &EntryHash) -> [u8; LOG + HASH] {
    let mut k = [0u8; LOG + HASH];
    k[..LOG].copy_from_slice(&log.0);
    k[LOG..].copy_from_slice(&hash.0);
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
pub(crate) fn location(log: &LogId, seq: u64, time: u64) -> [u8; LOG + 16] {
    let mut v = [0u8; LOG + 16];
    v[..LOG].copy_from_slice(&log.0);
    v[LOG..LOG + 8].copy_from_slice(&seq.to_be_bytes());
    v[LOG + 8..].copy_from_slice(&time.to_be_bytes());
    v
}

pub(crate) struct Location {
    pub(crate) log: LogId,
    pub(crate) seq: u64,
    pub(crate) time: u64,
}

pub(crate) fn parse_location(v: &[u8]) -> Option<Location> {
    Some(Location { log: LogId::from_slice(v.get(..LOG)?)?, seq: u64_at(v, LOG)?, time: u64_at(v, LOG + 8)? })
}

/// `kv` key: log ‖ key.
pub(crate) fn kv_key(log: &LogId, key: &[u8]) -> Vec<u8> {
    let mut k = Vec::with_capacity(LOG + key.len());
    k.extend_from_slice(&log.0);
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

/// `feed` key: log ‖ op id sort key, so a prefix scan reads the feed in total order.
pub(crate) fn feed_key(log: &LogId, id: &OpId) -> Vec<u8> {
    let mut k = Vec::with_capacity(LOG + OpId::SORT_KEY_LEN);
    k.extend_from_slice(&log.0);
    k.extend_from_slice(&id.to_sort_key());
    k
}

fn push_len_prefixed(k: &mut Vec<u8>, part: &[u8]) {
    // Lengths are bounded by the op limits (at most 1 KiB), far below u16::MAX.
    k.extend_from_slice(&(part.len() as u16).to_be_bytes());
    k.extend_from_slice(part);
}

/// `graph_out` key: log ‖ len‖src ‖ len‖label ‖ dst; `graph_in` swaps src and dst.
/// Length prefixes make "all edges of node n" and "of node n with label l" prefixes.
pub(crate) fn edge_key(log: &LogId, node: &[u8], label: &str, other: &[u8]) -> Vec<u8> {
    let mut k = edge_prefix(log, node, Some(label));
    k.extend_from_slice(other);
    k
}

pub(crate) fn edge_prefix(log: &LogId, node: &[u8], label: Option<&str>) -> Vec<u8> {
    let mut k = Vec::with_capacity(LOG + 4 + node.len() + label.map_or(0, str::len) + 32);
    k.extend_from_slice(&log.0);
    push_len_prefixed(&mut k, node);
    if let Some(label) = label {
        push_len_prefixed(&mut k, label.as_bytes());
    }
    k
}

/// Splits an edge key (without its log prefix) into node, label and other node.
pub(crate) fn parse_edge_key(k: &[u8]) -> Option<(&[u8], &str, &[u8])> {
    let k = k.get(LOG..)?;
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
