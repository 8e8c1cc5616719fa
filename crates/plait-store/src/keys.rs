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

/// The kinds of `versions` rows, the byte after the log number.
pub(crate) const VERSION_KV: u8 = b'k';
pub(crate) const VERSION_OUT: u8 = b'o';
pub(crate) const VERSION_IN: u8 = b'i';

/// Appends `part` with every 0x00 written as 0x00 0xff, so that no escaped part holds
/// 0x00 0x01: the terminator [`push_component`] ends a part with. Escaping keeps byte
/// order (and prefixes: the escaped prefix of a key is a prefix of the escaped key).
fn push_escaped(k: &mut Vec<u8>, part: &[u8]) {
    for &b in part {
        k.push(b);
        if b == 0 {
            k.push(0xff);
        }
    }
}

fn push_component(k: &mut Vec<u8>, part: &[u8]) {
    push_escaped(k, part);
    k.extend_from_slice(&[0, 1]);
}

/// Splits one escaped, terminated part off the front of `k`.
fn take_component(k: &[u8]) -> Option<(Vec<u8>, &[u8])> {
    let mut out = Vec::new();
    let mut i = 0;
    loop {
        match *k.get(i)? {
            0 => match *k.get(i + 1)? {
                0xff => out.push(0),
                1 => return Some((out, &k[i + 2..])),
                _ => return None,
            },
            b => {
                out.push(b);
                i += 1;
                continue;
            }
        }
        i += 2;
    }
}

/// `versions` key of a kv op: log number ‖ 'k' ‖ escaped key ‖ 0x00 0x01 ‖ op id sort key,
/// so one key's versions are one prefix, in total order, and keys sort as in `kv`.
pub(crate) fn kv_version_key(no: LogNo, key: &[u8], id: &OpId) -> Vec<u8> {
    let mut k = kv_version_prefix(no, key, true);
    k.extend_from_slice(&id.to_sort_key());
    k
}

/// The start of the `versions` rows of `key` (`whole`), or of every key that starts
/// with `key` (not `whole`); also the first row of keys at or after `key` in key order.
pub(crate) fn kv_version_prefix(no: LogNo, key: &[u8], whole: bool) -> Vec<u8> {
    let mut k = Vec::with_capacity(NO + 1 + key.len() + 2 + OpId::SORT_KEY_LEN);
    k.extend_from_slice(&no.bytes());
    k.push(VERSION_KV);
    if whole {
        push_component(&mut k, key);
    } else {
        push_escaped(&mut k, key);
    }
    k
}

/// `versions` key of a graph op, out of `node` ('o', node = src) or into it ('i', node =
/// dst): log number ‖ kind ‖ node ‖ label ‖ other node (each escaped and terminated) ‖
/// op id sort key.
pub(crate) fn edge_version_key(
    no: LogNo,
    kind: u8,
    node: &[u8],
    label: &str,
    other: &[u8],
    id: &OpId,
) -> Vec<u8> {
    let mut k = edge_version_group(no, kind, node, label, other);
    k.extend_from_slice(&id.to_sort_key());
    k
}

/// The prefix of every version of one edge.
pub(crate) fn edge_version_group(no: LogNo, kind: u8, node: &[u8], label: &str, other: &[u8]) -> Vec<u8> {
    let mut k = edge_version_prefix(no, kind, node, Some(label));
    push_component(&mut k, other);
    k
}

pub(crate) fn edge_version_prefix(no: LogNo, kind: u8, node: &[u8], label: Option<&str>) -> Vec<u8> {
    let mut k = Vec::with_capacity(NO + 1 + node.len() + 40 + OpId::SORT_KEY_LEN);
    k.extend_from_slice(&no.bytes());
    k.push(kind);
    push_component(&mut k, node);
    if let Some(label) = label {
        push_component(&mut k, label.as_bytes());
    }
    k
}

/// A `versions` key split: its parts (one for kv, node, label and other node for graph)
/// and its op id. `None` when the key is not one.
pub(crate) fn parse_version_key(k: &[u8]) -> Option<(u8, Vec<Vec<u8>>, OpId)> {
    let kind = *k.get(NO)?;
    let split = k.len().checked_sub(OpId::SORT_KEY_LEN)?;
    let id = OpId::from_sort_key(&k[split..])?;
    let mut rest = k.get(NO + 1..split)?;
    let mut parts = Vec::new();
    while !rest.is_empty() {
        let (part, tail) = take_component(rest)?;
        parts.push(part);
        rest = tail;
    }
    let expected = if kind == VERSION_KV { 1 } else { 3 };
    (parts.len() == expected && matches!(kind, VERSION_KV | VERSION_OUT | VERSION_IN))
        .then_some((kind, parts, id))
}

/// `versions` value: the seq of the op's entry ‖ live flag ‖ payload (value or props).
pub(crate) fn version_value(seq: u64, payload: Option<&[u8]>) -> Vec<u8> {
    let mut v = Vec::with_capacity(9 + payload.map_or(0, <[u8]>::len));
    v.extend_from_slice(&seq.to_be_bytes());
    match payload {
        Some(p) => {
            v.push(1);
            v.extend_from_slice(p);
        }
        None => v.push(0),
    }
    v
}

pub(crate) fn parse_version_value(v: &[u8]) -> Option<(u64, Option<&[u8]>)> {
    let seq = u64_at(v, 0)?;
    match v.get(8)? {
        1 => Some((seq, Some(&v[9..]))),
        0 if v.len() == 9 => Some((seq, None)),
        _ => None,
    }
}

/// The `versions` rows of one op of an entry stored at `seq`: one for a kv op, two for a
/// graph op (out of src and into dst); none for a feed append.
pub(crate) fn version_rows(no: LogNo, seq: u64, id: &OpId, op: &plait_core::Op) -> Vec<(Vec<u8>, Vec<u8>)> {
    use plait_core::Op;
    match op {
        Op::Append { .. } => Vec::new(),
        Op::Put { key, value } => vec![(kv_version_key(no, key, id), version_value(seq, Some(value)))],
        Op::Delete { key } => vec![(kv_version_key(no, key, id), version_value(seq, None))],
        Op::Link { src, label, dst, props } => {
            let v = version_value(seq, Some(props));
            vec![
                (edge_version_key(no, VERSION_OUT, src, label, dst, id), v.clone()),
                (edge_version_key(no, VERSION_IN, dst, label, src, id), v),
            ]
        }
        Op::Unlink { src, label, dst } => {
            let v = version_value(seq, None);
            vec![
                (edge_version_key(no, VERSION_OUT, src, label, dst, id), v.clone()),
                (edge_version_key(no, VERSION_IN, dst, label, src, id), v),
            ]
        }
    }
}

/// The op of `op`'s key or edge that sets `payload`: a put or link with it, a delete or
/// unlink without (a feed append stays itself).
pub(crate) fn register_op(op: &plait_core::Op, payload: Option<Vec<u8>>) -> plait_core::Op {
    use plait_core::Op;
    match (op, payload) {
        (Op::Put { key, .. } | Op::Delete { key }, Some(value)) => Op::Put { key: key.clone(), value },
        (Op::Put { key, .. } | Op::Delete { key }, None) => Op::Delete { key: key.clone() },
        (Op::Link { src, label, dst, .. } | Op::Unlink { src, label, dst }, Some(props)) => {
            Op::Link { src: src.clone(), label: label.clone(), dst: dst.clone(), props }
        }
        (Op::Link { src, label, dst, .. } | Op::Unlink { src, label, dst }, None) => {
            Op::Unlink { src: src.clone(), label: label.clone(), dst: dst.clone() }
        }
        (op @ Op::Append { .. }, _) => op.clone(),
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use proptest::prelude::*;

    fn id(time: u64) -> OpId {
        OpId { time, writer: PublicKey([7; 32]), entry: EntryHash([9; 32]), index: 0 }
    }

    proptest! {
        /// Version keys sort by key first, then total order, exactly as the kv view's
        /// keys sort; a key's escaped prefix is a prefix of exactly the keys that start
        /// with it; and the key parses back.
        #[test]
        fn kv_version_keys_keep_key_order_prefixes_and_parse_back(
            a in proptest::collection::vec(prop_oneof![Just(0u8), Just(1u8), Just(0xffu8), any::<u8>()], 0..8),
            b in proptest::collection::vec(prop_oneof![Just(0u8), Just(1u8), Just(0xffu8), any::<u8>()], 0..8),
            ta in 0u64..3, tb in 0u64..3,
        ) {
            let no = LogNo(3);
            let (ka, kb) = (kv_version_key(no, &a, &id(ta)), kv_version_key(no, &b, &id(tb)));
            prop_assert_eq!((a.clone(), ta).cmp(&(b.clone(), tb)), ka.cmp(&kb));
            prop_assert_eq!(b.starts_with(&a), kb.starts_with(&kv_version_prefix(no, &a, false)));
            prop_assert_eq!(a == b, kb.starts_with(&kv_version_prefix(no, &a, true)));
            prop_assert!((b >= a) == (kb.as_slice() >= kv_version_prefix(no, &a, false).as_slice()));
            let (kind, parts, parsed) = parse_version_key(&ka).unwrap();
            prop_assert_eq!((kind, parts, parsed), (VERSION_KV, vec![a], id(ta)));
        }

        #[test]
        fn edge_version_keys_parse_back(
            src in proptest::collection::vec(any::<u8>(), 0..6),
            label in "[a-z\\x00]{0,4}",
            dst in proptest::collection::vec(any::<u8>(), 0..6),
        ) {
            let k = edge_version_key(LogNo(1), VERSION_IN, &dst, &label, &src, &id(5));
            prop_assert!(k.starts_with(&edge_version_prefix(LogNo(1), VERSION_IN, &dst, Some(&label))));
            let (kind, parts, parsed) = parse_version_key(&k).unwrap();
            prop_assert_eq!((kind, parts, parsed), (VERSION_IN, vec![dst, label.into_bytes(), src], id(5)));
        }
    }

    #[test]
    fn version_values_round_trip_and_bad_ones_are_refused() {
        assert_eq!(parse_version_value(&version_value(7, Some(b"v"))), Some((7, Some(&b"v"[..]))));
        assert_eq!(parse_version_value(&version_value(7, None)), Some((7, None)));
        assert_eq!(parse_version_value(&[0; 8]), None);
        assert_eq!(parse_version_value(&[0, 0, 0, 0, 0, 0, 0, 1, 0, 5]), None);
        assert_eq!(parse_version_key(&[0, 0, 0, 1, b'k', 0, 2]), None);
    }
}
