//! Lamport clocks and the total order of operations.

use crate::ids::{EntryHash, PublicKey};

/// A Lamport clock. On append `time = 1 + max(time of parents)`; the writer breaks ties.
#[derive(Clone, Copy, Debug, PartialEq, Eq, PartialOrd, Ord, Hash)]
pub struct Clock {
    pub time: u64,
    pub writer: PublicKey,
}

/// The identity of one operation and its place in the total order:
/// `(clock.time, clock.writer, entry hash, op index)`. Wall clocks never enter it, so
/// skewed clocks cannot change a result. The derived `Ord` follows the field order.
#[derive(Clone, Copy, Debug, PartialEq, Eq, PartialOrd, Ord, Hash)]
pub struct OpId {
    pub time: u64,
    pub writer: PublicKey,
    pub entry: EntryHash,
    pub index: u32,
}

impl OpId {
    /// Bytes whose lexicographic order is the total order: time big-endian, writer,
    /// entry hash, index big-endian. 76 bytes.
    pub fn to_sort_key(&self) -> [u8; Self::SORT_KEY_LEN] {
        let mut out = [0u8; Self::SORT_KEY_LEN];
        out[..8].copy_from_slice(&self.time.to_be_bytes());
        out[8..40].copy_from_slice(&self.writer.0);
        out[40..72].copy_from_slice(&self.entry.0);
        out[72..].copy_from_slice(&self.index.to_be_bytes());
        out
    }

    pub const SORT_KEY_LEN: usize = 76;

    pub fn from_sort_key(bytes: &[u8]) -> Option<OpId> {
        if bytes.len() != Self::SORT_KEY_LEN {
            return None;
        }
        Some(OpId {
            time: u64::from_be_bytes(bytes[..8].try_into().ok()?),
            writer: PublicKey::from_slice(&bytes[8..40])?,
            entry: EntryHash::from_slice(&bytes[40..72])?,
            index: u32::from_be_bytes(bytes[72..].try_into().ok()?),
        })
    }

    pub fn clock(&self) -> Clock {
        Clock { time: self.time, writer: self.writer }
    }
}
