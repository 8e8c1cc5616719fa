//! The writer's filter of the view rows a log has ever had, so that an op on a key or
//! edge the log never had skips the read of its view row.
//!
//! The register merge reads each op's current view row to learn what the op replaces
//! (for the history). For a key the log never had, that read finds nothing after
//! walking every memtable and each table's filter: most of the writer's time when a
//! fresh replica restores or catches up. A log the writer has seen empty (created here,
//! or empty when the store opened) gets a Bloom filter of every view row staged for it
//! since; "not in the filter" is then certain (every row write goes through the merge,
//! which inserts first), and "maybe" falls back to the read. A staged row whose group
//! later fails stays in the filter: a false "maybe", never a false "no".
//!
//! Bounded: at most [`FILTERS_MAX`] filters of [`FILTER_BITS`] bits each; a filter that
//! has taken [`FILTER_KEYS_MAX`] rows is dropped (its log reads every row from then on),
//! and so is a log's eligibility when no filter is free at its first row.

use std::collections::{HashMap, HashSet};
use std::hash::BuildHasher;

use crate::keys::LogNo;

/// Bits per filter: 32 Mbit, 4 MiB.
pub(crate) const FILTER_BITS: usize = 1 << 25;
/// Rows a filter takes before it is dropped: at 4M rows, about 8 per 64-bit word, a few
/// percent of the absent rows still read (3 bits per row in one word).
pub(crate) const FILTER_KEYS_MAX: usize = 4_000_000;
/// Filters at once, so at most 16 MiB.
pub(crate) const FILTERS_MAX: usize = 4;
const PROBES: u64 = 3;

struct Filter {
    bits: Box<[u64]>,
    rows: usize,
}

/// The bits of one row in a filter.
#[derive(Clone, Copy, Debug)]
pub(crate) struct RowSlot {
    word: usize,
    mask: u64,
}

/// The filters of the logs the writer saw empty.
#[derive(Default)]
pub(crate) struct RowFilters {
    /// Logs seen empty that have no filter yet (none of their rows were staged).
    eligible: HashSet<LogNo>,
    filters: HashMap<LogNo, Filter>,
    hasher: foldhash::fast::FixedState,
}

impl RowFilters {
    /// `no` is empty: its rows can be tracked from now on.
    pub(crate) fn seen_empty(&mut self, no: LogNo) {
        if !self.filters.contains_key(&no) {
            self.eligible.insert(no);
        }
    }

    /// The log is gone; its number is never given again.
    pub(crate) fn forget(&mut self, no: LogNo) {
        self.eligible.remove(&no);
        self.filters.remove(&no);
    }

    /// Where a row's bits are: one 64-bit word (a blocked filter: one cache miss per
    /// lookup) and the mask of its [`PROBES`] bits in it, from one hash.
    pub(crate) fn slot(&self, keyspace: &str, key: &[u8]) -> RowSlot {
        let h = self.hasher.hash_one((keyspace, key));
        let word = ((h >> 32) % (FILTER_BITS / 64) as u64) as usize;
        let mask = (0..PROBES).fold(0u64, |m, i| m | 1 << ((h >> (i * 6)) & 63));
        RowSlot { word, mask }
    }

    /// Whether the log surely has no row at `slot` (a row of `kv` or `graph_out`).
    pub(crate) fn surely_absent(&self, no: LogNo, slot: RowSlot) -> bool {
        match self.filters.get(&no) {
            Some(f) => f.bits[slot.word] & slot.mask != slot.mask,
            None => self.eligible.contains(&no),
        }
    }

    /// A row of the log is staged. Called before the row can be read back by anyone.
    pub(crate) fn insert(&mut self, no: LogNo, slot: RowSlot) {
        if self.eligible.remove(&no) {
            if self.filters.len() >= FILTERS_MAX {
                return; // No room: the log reads every row.
            }
            self.filters.insert(no, Filter { bits: vec![0; FILTER_BITS / 64].into_boxed_slice(), rows: 0 });
        }
        let Some(f) = self.filters.get_mut(&no) else { return };
        f.bits[slot.word] |= slot.mask;
        f.rows += 1;
        if f.rows > FILTER_KEYS_MAX {
            self.filters.remove(&no);
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    /// Nothing inserted is ever "surely absent"; a log not seen empty never is; a full
    /// filter and a forgotten log fall back to "maybe".
    #[test]
    fn inserted_rows_are_never_surely_absent() {
        let mut f = RowFilters::default();
        let (a, b) = (LogNo(1), LogNo(2));
        f.seen_empty(a);
        assert!(f.surely_absent(a, f.slot("kv", b"x")), "an empty log has no rows");
        assert!(!f.surely_absent(b, f.slot("kv", b"x")), "a log not seen empty may have any");
        for i in 0..10_000u32 {
            let slot = f.slot("kv", &i.to_be_bytes());
            f.insert(a, slot);
        }
        for i in 0..10_000u32 {
            assert!(!f.surely_absent(a, f.slot("kv", &i.to_be_bytes())));
        }
        let absent =
            (10_000..20_000u32).filter(|i| f.surely_absent(a, f.slot("kv", &i.to_be_bytes()))).count();
        assert!(absent > 9_900, "the filter answers for absent rows ({absent} of 10000)");
        f.forget(a);
        assert!(!f.surely_absent(a, f.slot("kv", b"y")));
        // Only FILTERS_MAX logs get a filter; the next reads every row.
        for n in 10..10 + FILTERS_MAX as u32 + 1 {
            f.seen_empty(LogNo(n));
            let slot = f.slot("kv", b"k");
            f.insert(LogNo(n), slot);
        }
        assert!(!f.surely_absent(LogNo(10 + FILTERS_MAX as u32), f.slot("kv", b"other")));
        assert!(!f.surely_absent(LogNo(10), f.slot("kv", b"k")));
        assert!(f.surely_absent(LogNo(10), f.slot("kv", b"other")));
    }
}
