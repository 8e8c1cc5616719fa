//! Where each stored entry came from: written here, handed to this replica signed,
//! pulled from a peer, or restored from a snapshot. Kept per log as runs of consecutive
//! seqs with one origin (entries arrive in batches from one source, so a run covers many
//! entries), in the `origins` keyspace, written in the same batch as the entries:
//!
//! - run rows: log number ‖ `r` ‖ first seq (8 bytes, big-endian) → last seq ‖ origin;
//! - pending rows: log number ‖ `p` ‖ entry hash → origin, for an entry waiting for its
//!   parents, so that it keeps the origin of its arrival when a later batch completes it.
//!
//! Local to the replica, like `creators`: never replicated, snapshotted or backed up (a
//! restored replica says its entries were restored). Entries stored by a replica that
//! did not keep origins have none: [`Origin::Unknown`].

use plait_core::{EntryHash, PublicKey};

use crate::keys::{LogNo, NO, u64_at};

/// Where an entry stored on this replica came from.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash)]
pub enum Origin {
    /// Stored before this replica kept origins.
    Unknown,
    /// Written through this replica's write calls (`Put`, `Write`, ...).
    Local,
    /// Signed elsewhere and handed to this replica by a call (`Submit`, `Push`).
    Submitted,
    /// Pulled from, or sent in a notice by, the peer replica with this node id.
    Peer(PublicKey),
    /// Read from a verified snapshot or backup.
    Restored,
}

const UNKNOWN: u8 = 0;
const LOCAL: u8 = 1;
const SUBMITTED: u8 = 2;
const PEER: u8 = 3;
const RESTORED: u8 = 4;

impl Origin {
    fn encode_into(self, out: &mut Vec<u8>) {
        match self {
            Origin::Unknown => out.push(UNKNOWN),
            Origin::Local => out.push(LOCAL),
            Origin::Submitted => out.push(SUBMITTED),
            Origin::Peer(peer) => {
                out.push(PEER);
                out.extend_from_slice(&peer.0);
            }
            Origin::Restored => out.push(RESTORED),
        }
    }

    fn parse(v: &[u8]) -> Option<Origin> {
        let (&kind, rest) = v.split_first()?;
        let origin = match (kind, rest.len()) {
            (UNKNOWN, 0) => Origin::Unknown,
            (LOCAL, 0) => Origin::Local,
            (SUBMITTED, 0) => Origin::Submitted,
            (PEER, 32) => Origin::Peer(PublicKey::from_slice(rest)?),
            (RESTORED, 0) => Origin::Restored,
            _ => return None,
        };
        Some(origin)
    }
}

/// Consecutive seqs of one log with one origin.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct OriginRun {
    pub first: u64,
    pub last: u64,
    pub origin: Origin,
}

const RUN: u8 = b'r';
const PENDING: u8 = b'p';

/// The prefix of a log's run rows.
pub(crate) fn run_prefix(no: LogNo) -> [u8; NO + 1] {
    let mut k = [0u8; NO + 1];
    k[..NO].copy_from_slice(&no.bytes());
    k[NO] = RUN;
    k
}

pub(crate) fn run_key(no: LogNo, first: u64) -> [u8; NO + 9] {
    let mut k = [0u8; NO + 9];
    k[..NO + 1].copy_from_slice(&run_prefix(no));
    k[NO + 1..].copy_from_slice(&first.to_be_bytes());
    k
}

pub(crate) fn run_value(run: &OriginRun) -> Vec<u8> {
    let mut v = run.last.to_be_bytes().to_vec();
    run.origin.encode_into(&mut v);
    v
}

/// A run row back, `None` when it is not one.
pub(crate) fn parse_run(k: &[u8], v: &[u8]) -> Option<OriginRun> {
    if k.len() != NO + 9 || k[NO] != RUN {
        return None;
    }
    let first = u64_at(k, NO + 1)?;
    let last = u64_at(v, 0)?;
    let origin = Origin::parse(v.get(8..)?)?;
    (first >= 1 && first <= last).then_some(OriginRun { first, last, origin })
}

pub(crate) fn pending_key(no: LogNo, hash: &EntryHash) -> [u8; NO + 33] {
    let mut k = [0u8; NO + 33];
    k[..NO].copy_from_slice(&no.bytes());
    k[NO] = PENDING;
    k[NO + 1..].copy_from_slice(&hash.0);
    k
}

pub(crate) fn pending_value(origin: Origin) -> Vec<u8> {
    let mut v = Vec::with_capacity(33);
    origin.encode_into(&mut v);
    v
}

pub(crate) fn parse_pending(v: &[u8]) -> Option<Origin> {
    Origin::parse(v)
}

/// Whether a key of the keyspace is a pending row.
pub(crate) fn is_pending_key(k: &[u8]) -> bool {
    k.len() == NO + 33 && k[NO] == PENDING
}

#[cfg(test)]
mod tests {
    use super::*;

    /// Every origin survives its encoding, in run and pending rows; anything else in a
    /// value is refused rather than read as some origin.
    #[test]
    fn origins_round_trip_and_bad_rows_are_refused() {
        let peer = PublicKey([7; 32]);
        for origin in
            [Origin::Unknown, Origin::Local, Origin::Submitted, Origin::Peer(peer), Origin::Restored]
        {
            let run = OriginRun { first: 3, last: 9, origin };
            assert_eq!(parse_run(&run_key(LogNo(5), 3), &run_value(&run)), Some(run));
            assert_eq!(parse_pending(&pending_value(origin)), Some(origin));
        }
        let run = OriginRun { first: 3, last: 9, origin: Origin::Local };
        let mut long = run_value(&run);
        long.push(0);
        assert_eq!(parse_run(&run_key(LogNo(5), 3), &long), None, "trailing bytes");
        assert_eq!(parse_pending(&[PEER; 5]), None, "a short peer id");
        assert_eq!(parse_pending(&[9]), None, "an unknown kind");
        let backwards = OriginRun { first: 9, last: 3, origin: Origin::Local };
        assert_eq!(parse_run(&run_key(LogNo(5), 9), &run_value(&backwards)), None, "last before first");
        assert_eq!(parse_run(&pending_key(LogNo(5), &EntryHash([1; 32])), &run_value(&run)), None);
        assert!(is_pending_key(&pending_key(LogNo(5), &EntryHash([1; 32]))));
        assert!(!is_pending_key(&run_key(LogNo(5), 1)));
    }
}
