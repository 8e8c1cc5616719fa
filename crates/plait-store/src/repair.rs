//! Repairing a log that lost entries from its entry store: the `entries`, `by_hash` and
//! `seq` rows of an entry gone (a lost table block, a bad disk), while what the entry did
//! (its view and history rows, the heads it replaced, its children) is still stored.
//!
//! Such a log has a gap in its seqs, and its digest (summed from the seq rows when the
//! counters row lacks one) differs from a peer that holds the same heads, which is how
//! replication finds it (`plait_digest_mismatches_total`). The repair puts each lost entry
//! back where it was: the peer sends the log whole, and an entry this replica does not
//! hold is restored only when its first op is already applied here (the op is in a view
//! or history row: the entry was stored here once), at the lowest free seq above its
//! parents'. Nothing else changes: the views, heads and op count already count it. An
//! entry that was never here is left to the ordinary ingest.

use std::collections::BTreeSet;

use fjall::PersistMode;
use plait_core::{EntryHash, LogId, LogType, Op, OpId, VerifiedEntry};

use crate::error::{StoreError, StoreResult};
use crate::keys::{self, LogNo};
use crate::store::{Shared, Store};

/// Gaps reported at most: a log with more lost entries than this is repaired in several
/// rounds (each mismatch finds the next ones).
pub const SEQ_GAPS_MAX: usize = 10_000;

impl Store {
    /// Seqs of `log` below its seq that have no entry: entries lost from the entry store.
    /// Reads every seq key of the log (not the entries), so it is for repairs, not for
    /// the serving path. At most [`SEQ_GAPS_MAX`].
    pub fn seq_gaps(&self, log: &LogId) -> StoreResult<Vec<u64>> {
        let summary =
            self.log(log).ok_or_else(|| StoreError::NotFound(format!("no log {log} on this replica")))?;
        let mut gaps = Vec::new();
        let mut expected = 1;
        for row in self.shared.ks.seq.prefix(summary.no.bytes()) {
            let k = row.key()?;
            let seq =
                keys::u64_at(&k, keys::NO).ok_or_else(|| StoreError::Corrupt("short seq key".into()))?;
            while expected < seq && gaps.len() < SEQ_GAPS_MAX {
                gaps.push(expected);
                expected += 1;
            }
            expected = seq + 1;
            if gaps.len() >= SEQ_GAPS_MAX {
                break;
            }
        }
        Ok(gaps)
    }

    /// Puts back, at their seqs, the entries of `entries` that `log` lost from its entry
    /// store (see the module docs); `gaps` are the free seqs ([`Store::seq_gaps`]).
    /// Returns the entries restored with their seqs. Entries held or never stored here are
    /// skipped.
    pub async fn restore_lost(
        &self,
        log: LogId,
        entries: Vec<VerifiedEntry>,
        gaps: Vec<u64>,
    ) -> StoreResult<Vec<(EntryHash, u64)>> {
        self.call(|reply| crate::writer::Command::RestoreLost { log, entries, gaps, reply }).await
    }

    /// For tests of detection and repair: loses the entry at `seq` of `log` from the entry
    /// store the way a lost table block would (its `entries`, `by_hash` and `seq` rows),
    /// and drops the log's stored digest so that the next open sums it again from the seq
    /// rows. Everything the entry did stays. Refused for a head (its loss would change the
    /// heads, not only the set) and for a seq the log does not hold. Durable on return.
    pub fn lose_entry_for_tests(&self, log: &LogId, seq: u64) -> StoreResult<EntryHash> {
        let summary =
            self.log(log).ok_or_else(|| StoreError::NotFound(format!("no log {log} on this replica")))?;
        let ks = &self.shared.ks;
        let seq_key = keys::seq_key(summary.no, seq);
        let hash = ks
            .seq
            .get(seq_key)?
            .and_then(|v| EntryHash::from_slice(&v))
            .ok_or_else(|| StoreError::NotFound(format!("log {log} holds no entry at seq {seq}")))?;
        if ks.heads.contains_key(keys::entry_key(summary.no, &hash))? {
            return Err(StoreError::FailedPrecondition(format!(
                "the entry at seq {seq} is a head; lose one with children instead"
            )));
        }
        let mut batch = self.shared.db.batch().durability(Some(PersistMode::SyncAll));
        batch.remove(&ks.entries, hash.0);
        batch.remove(&ks.by_hash, hash.0);
        batch.remove(&ks.seq, seq_key);
        batch.insert(&ks.counters, log.0, summary.ops.to_be_bytes().to_vec());
        batch.commit()?;
        Ok(hash)
    }
}

/// Whether the first op of `entry` is applied in the log numbered `no`: in its view row
/// (the greatest op of its key or edge), in the history behind it, or in the feed.
pub(crate) fn first_op_applied(
    shared: &Shared,
    no: LogNo,
    log_type: LogType,
    entry: &VerifiedEntry,
) -> StoreResult<bool> {
    let Some((id, op)) = entry.op_ids().next() else { return Ok(false) };
    let ks = &shared.ks;
    let in_row = |keyspace: &fjall::Keyspace, key: &[u8], id: &OpId| -> StoreResult<bool> {
        Ok(keyspace.get(key)?.as_deref().and_then(keys::parse_register).is_some_and(|r| r.id == *id))
    };
    Ok(match (log_type, op) {
        (LogType::Feed, Op::Append { .. }) => ks.feed.contains_key(keys::feed_key(no, &id))?,
        (LogType::Kv, Op::Put { key, .. } | Op::Delete { key }) => {
            in_row(&ks.kv, &keys::kv_key(no, key), &id)?
                || ks.versions.contains_key(keys::kv_version_key(no, key, &id))?
        }
        (LogType::Graph, Op::Link { src, label, dst, .. } | Op::Unlink { src, label, dst }) => {
            in_row(&ks.graph_out, &keys::edge_key(no, src, label, dst), &id)?
                || ks.versions.contains_key(keys::edge_version_key(
                    no,
                    keys::VERSION_OUT,
                    src,
                    label,
                    dst,
                    &id,
                ))?
        }
        _ => false,
    })
}

/// The lowest free seq above `floor`, taken out of `free`.
pub(crate) fn take_gap(free: &mut BTreeSet<u64>, floor: u64) -> Option<u64> {
    let gap = free.range(floor + 1..).next().copied()?;
    free.remove(&gap);
    Some(gap)
}
