//! Durable consumers: named positions in a log that this replica keeps for the
//! applications subscribed to it. A consumer's committed seq says that everything up to
//! it was processed; a subscription under the consumer's name resumes after it.
//!
//! Rows live in the `consumers` keyspace (log id ‖ name → committed seq, 8 bytes
//! big-endian). They are local, like `creators`: seqs are this replica's numbering, so
//! consumers are never replicated, snapshotted or backed up. Every change goes through
//! the writer, in the batch of its group (one fsync), and reaches the in-memory map
//! readers use only after that batch is durable.

use std::collections::{BTreeMap, HashMap};
use std::sync::Arc;

use plait_core::LogId;

use crate::error::{StoreError, StoreResult};
use crate::keys;
use crate::store::Store;

/// The longest consumer name, in bytes (names are ASCII, so also characters).
pub const CONSUMER_NAME_MAX: usize = 128;
/// Consumers one log may have on a replica unless configured otherwise.
pub const CONSUMERS_PER_LOG_DEFAULT: usize = 64;

/// One consumer of a log and the seq it committed.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Consumer {
    pub name: Arc<str>,
    /// Every entry up to this seq is processed; a subscription resumes after it.
    pub seq: u64,
}

/// Every log's consumers (name → committed seq), as of the last durable batch.
pub(crate) type ConsumerMap = HashMap<LogId, BTreeMap<Arc<str>, u64>>;

/// Refuses a name that is empty, longer than [`CONSUMER_NAME_MAX`] or holds anything but
/// `A-Z a-z 0-9 . _ -`, saying which.
pub fn check_consumer_name(name: &str) -> StoreResult<()> {
    if name.is_empty() || name.len() > CONSUMER_NAME_MAX {
        return Err(StoreError::Invalid(format!(
            "a consumer name is 1 to {CONSUMER_NAME_MAX} characters; this one has {}",
            name.chars().count()
        )));
    }
    if let Some(bad) = name.chars().find(|c| !(c.is_ascii_alphanumeric() || matches!(c, '.' | '_' | '-'))) {
        return Err(StoreError::Invalid(format!(
            "a consumer name holds only A-Z, a-z, 0-9, '.', '_' and '-'; {name:?} has {bad:?}"
        )));
    }
    Ok(())
}

/// `consumers` key: log id ‖ name.
pub(crate) fn key(log: &LogId, name: &str) -> Vec<u8> {
    let mut k = Vec::with_capacity(keys::ID + name.len());
    k.extend_from_slice(&log.0);
    k.extend_from_slice(name.as_bytes());
    k
}

/// The log and name of a `consumers` key, if it is well formed.
pub(crate) fn parse_key(k: &[u8]) -> Option<(LogId, &str)> {
    let log = LogId::from_slice(k.get(..keys::ID)?)?;
    let name = std::str::from_utf8(&k[keys::ID..]).ok()?;
    Some((log, name))
}

/// The committed seq of a `consumers` value.
pub(crate) fn parse_value(v: &[u8]) -> Option<u64> {
    Some(u64::from_be_bytes(v.try_into().ok()?))
}

/// Reads every consumer row at open. A row that names no hosted log or does not parse is
/// left out (and reported by `plaitd check`) rather than keeping the replica from starting.
pub(crate) fn load(ks: &fjall::Keyspace, hosted: impl Fn(&LogId) -> bool) -> StoreResult<ConsumerMap> {
    let mut map = ConsumerMap::new();
    for row in ks.iter() {
        let (k, v) = row.into_inner()?;
        match (parse_key(&k), parse_value(&v)) {
            (Some((log, name)), Some(seq)) if hosted(&log) && check_consumer_name(name).is_ok() => {
                map.entry(log).or_default().insert(Arc::from(name), seq);
            }
            _ => {
                tracing::warn!(key = %hex::encode(&k), "a consumer row is unreadable or names no hosted log; left out")
            }
        }
    }
    Ok(map)
}

/// A change to one consumer.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub(crate) enum ConsumerChange {
    /// Sets the committed seq, creating the consumer if the log has fewer than `limit`.
    Commit {
        seq: u64,
        limit: usize,
    },
    Delete,
}

impl Store {
    /// Stores `seq` as what consumer `name` of `log` has processed, durably, creating the
    /// consumer when it is new and the log has fewer than `limit` consumers. Returns
    /// whether it was created. A seq past the log's end is `Invalid`; moving back is
    /// allowed (a consumer that wants to read again).
    pub async fn commit_consumer(&self, log: LogId, name: &str, seq: u64, limit: usize) -> StoreResult<bool> {
        check_consumer_name(name)?;
        let name = Arc::from(name);
        let change = ConsumerChange::Commit { seq, limit };
        self.call(|reply| crate::writer::Command::Consumer { log, name, change, reply }).await
    }

    /// Removes consumer `name` of `log`; `NotFound` if it has none by that name.
    pub async fn delete_consumer(&self, log: LogId, name: &str) -> StoreResult<()> {
        check_consumer_name(name)?;
        let name = Arc::from(name);
        let change = ConsumerChange::Delete;
        self.call(|reply| crate::writer::Command::Consumer { log, name, change, reply }).await.map(|_| ())
    }

    /// The committed seq of consumer `name` of `log`, if it exists.
    pub fn consumer(&self, log: &LogId, name: &str) -> Option<u64> {
        self.shared.consumer_seq(log, name)
    }

    /// The consumers of `log`, by name.
    pub fn consumers(&self, log: &LogId) -> Vec<Consumer> {
        let all = self.shared.consumers.read().expect("consumers lock poisoned");
        let Some(consumers) = all.get(log) else { return Vec::new() };
        consumers.iter().map(|(name, &seq)| Consumer { name: name.clone(), seq }).collect()
    }

    /// Every log's consumers, for status and metrics.
    pub fn all_consumers(&self) -> Vec<(LogId, Consumer)> {
        let all = self.shared.consumers.read().expect("consumers lock poisoned");
        all.iter()
            .flat_map(|(log, c)| c.iter().map(|(name, &seq)| (*log, Consumer { name: name.clone(), seq })))
            .collect()
    }
}

/// Reads every consumer's lag for metrics without keeping the store open: a metrics
/// callback outlives the serving path, and must not hold the data directory.
#[derive(Clone)]
pub struct ConsumerLags(std::sync::Weak<crate::store::Shared>);

/// One consumer's lag: the log's name, the consumer's name, entries past its commit.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct ConsumerLag {
    pub log: String,
    pub consumer: Arc<str>,
    pub lag: u64,
}

impl ConsumerLags {
    /// Every consumer's lag now; empty once the store is gone.
    pub fn read(&self) -> Vec<ConsumerLag> {
        let Some(shared) = self.0.upgrade() else { return Vec::new() };
        let all = shared.consumers.read().expect("consumers lock poisoned");
        let logs = shared.logs.read().expect("log summaries lock poisoned");
        let mut out = Vec::new();
        for (log, consumers) in all.iter() {
            let Some(summary) = logs.get(log) else { continue };
            for (name, &seq) in consumers {
                out.push(ConsumerLag {
                    log: summary.manifest.manifest().name.clone(),
                    consumer: name.clone(),
                    lag: summary.seq.saturating_sub(seq),
                });
            }
        }
        out
    }
}

impl Store {
    /// A handle that reads consumers' lag while the store is open.
    pub fn consumer_lags(&self) -> ConsumerLags {
        ConsumerLags(Arc::downgrade(&self.shared))
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    /// Names are checked for length and alphabet before anything is stored.
    #[test]
    fn consumer_names_are_1_to_128_of_a_small_alphabet() {
        for good in ["a", "orders-v2", "billing.sync_1", &"x".repeat(CONSUMER_NAME_MAX)] {
            assert!(check_consumer_name(good).is_ok(), "{good}");
        }
        for bad in ["", &"x".repeat(CONSUMER_NAME_MAX + 1), "a/b", "a b", "é", "a\0"] {
            assert!(matches!(check_consumer_name(bad), Err(StoreError::Invalid(_))), "{bad:?}");
        }
    }

    /// A key reads back as the log and name it was made of.
    #[test]
    fn consumer_keys_round_trip() {
        let log = LogId([7; 32]);
        let k = key(&log, "orders");
        assert_eq!(parse_key(&k), Some((log, "orders")));
        assert_eq!(parse_key(&k[..31]), None);
    }
}
