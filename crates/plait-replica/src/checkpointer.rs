//! Automatic checkpoints: one per log after `every_ops` new ops or, for a log that
//! changed, every `every_ms`. Checkpoints are records: cheap to keep, and what delta
//! snapshots and backups start from. Taking one costs a scan of the log's whole view (its
//! state root), so a fixed cadence would cost more the larger the log grows, and a
//! replica catching up a large log would spend most of its time rescanning it. The
//! checkpointer therefore spends at most a tenth of its time on them: after one that took
//! `d`, it takes none for `9 × d`. A log counts from its newest recorded checkpoint, so a
//! restart does not scan every view again.
//!
//! A scan also costs memory: while it runs, the storage engine keeps every memtable it
//! flushes (see [`Store::checkpoint_bounded`]). So a checkpoint gives up once more than
//! `defer_bytes` arrive during its scan and is tried again after the same rest: during
//! a catch-up or a restore of a large log, checkpoints wait until ingest slows down.

use std::collections::HashMap;
use std::time::{Duration, Instant};

use plait_core::LogId;
use plait_store::{LogSummary, Store};
use tokio::sync::watch;

use crate::telemetry::Metrics;

/// When each log is due for a checkpoint.
struct Plan {
    every_ops: u64,
    every_ms: u64,
    /// log → (ops at its newest checkpoint, when this replica learned of it)
    last: HashMap<LogId, (u64, Instant)>,
}

impl Plan {
    fn new(every_ops: u64, every_ms: u64) -> Plan {
        Plan { every_ops, every_ms, last: HashMap::new() }
    }

    /// Logs not seen before (all of them at start, then new or pulled ones) start from
    /// their newest recorded checkpoint, or from nothing. Blocking: reads the store.
    fn seed(&mut self, store: &Store, logs: &[LogSummary], now: Instant) {
        for log in logs {
            if self.last.contains_key(&log.log_id) {
                continue;
            }
            let ops = match store.checkpoints(&log.log_id) {
                Ok(recorded) => recorded.last().map_or(0, |c| c.n_ops),
                Err(e) => {
                    tracing::warn!(log = %log.log_id, error = %e, "cannot read recorded checkpoints; counting from none");
                    0
                }
            };
            self.last.insert(log.log_id, (ops, now));
        }
    }

    fn unseen(&self, logs: &[LogSummary]) -> bool {
        logs.iter().any(|l| !self.last.contains_key(&l.log_id))
    }

    fn due(&self, log: &LogSummary, now: Instant) -> bool {
        let (ops_then, at) = self.last.get(&log.log_id).copied().unwrap_or((0, now));
        let by_ops = self.every_ops > 0 && log.ops >= ops_then + self.every_ops;
        let by_time = self.every_ms > 0
            && log.ops > ops_then
            && now.saturating_duration_since(at) >= Duration::from_millis(self.every_ms);
        by_ops || by_time
    }

    fn taken(&mut self, log: LogId, n_ops: u64, now: Instant) {
        self.last.insert(log, (n_ops, now));
    }
}

/// Runs the checkpointer until `shutdown`; nothing when both cadences are 0.
pub(crate) fn spawn(
    store: Store,
    every_ops: u64,
    every_ms: u64,
    defer_bytes: u64,
    metrics: Metrics,
    mut shutdown: watch::Receiver<bool>,
) {
    if every_ops == 0 && every_ms == 0 {
        return;
    }
    tokio::spawn(async move {
        let mut plan = Plan::new(every_ops, every_ms);
        let tick = Duration::from_millis(every_ms.clamp(100, 1000));
        let mut rest = Duration::ZERO;
        loop {
            tokio::select! {
                _ = tokio::time::sleep(tick.max(rest)) => {}
                _ = async { shutdown.wait_for(|s| *s).await.is_ok() } => return,
            }
            rest = Duration::ZERO;
            let logs = store.logs();
            if plan.unseen(&logs) {
                let (store, seeding) = (store.clone(), logs.clone());
                plan = match tokio::task::spawn_blocking(move || {
                    plan.seed(&store, &seeding, Instant::now());
                    plan
                })
                .await
                {
                    Ok(plan) => plan,
                    Err(e) => {
                        tracing::error!(error = %e, "the checkpointer's seeding task failed; checkpoints stop");
                        return;
                    }
                };
            }
            for log in logs {
                if !plan.due(&log, Instant::now()) {
                    continue;
                }
                let started = Instant::now();
                let taken = if defer_bytes == 0 {
                    store.checkpoint(log.log_id).await.map(Some)
                } else {
                    store.checkpoint_bounded(log.log_id, defer_bytes).await
                };
                match taken {
                    Ok(Some(c)) => {
                        tracing::debug!(log = %log.log_id, seq = c.seq, "checkpoint taken");
                        plan.taken(log.log_id, c.n_ops, Instant::now());
                    }
                    Ok(None) => {
                        tracing::debug!(log = %log.log_id, "checkpoint deferred: writes arrived faster than the view could be scanned");
                        metrics.record_checkpoint_deferred();
                    }
                    Err(e) => tracing::warn!(log = %log.log_id, error = %e, "checkpoint failed"),
                }
                rest = started.elapsed() * 9;
                if rest >= tick {
                    // The rest of the logs wait for the next round.
                    break;
                }
            }
        }
    });
}

#[cfg(test)]
mod tests {
    use plait_core::{Op, WriterKey};

    use super::*;
    use crate::test_support::{kv_manifest, open_store as open};

    async fn put(store: &Store, log: LogId, from: usize, n: usize) {
        for i in from..from + n {
            let op = Op::Put { key: format!("k{i}").into_bytes(), value: vec![7; 10] };
            store.write(vec![(log, op)]).await.unwrap();
        }
    }

    /// A reopened replica whose log has not changed since its newest recorded checkpoint
    /// has no checkpoint due (the view is not scanned again on every start), a log without
    /// one is due at once, and `every_ops` new ops after the recorded one make it due.
    #[tokio::test]
    async fn a_restart_counts_from_the_newest_recorded_checkpoint() {
        let dir = tempfile::tempdir().unwrap();
        let key = WriterKey::from_secret([9; 32]);
        let store = open(dir.path(), &key).await;
        let manifest = |name: &str| kv_manifest(name, &key);
        let (kept, _) = store.create_log(manifest("kept")).await.unwrap();
        let (never, _) = store.create_log(manifest("never")).await.unwrap();
        put(&store, kept.log_id, 0, 10).await;
        put(&store, never.log_id, 0, 10).await;
        store.checkpoint(kept.log_id).await.unwrap();
        store.close().await.unwrap();
        drop(store);

        let store = open(dir.path(), &key).await;
        let now = Instant::now();
        let mut plan = Plan::new(10, 60_000);
        let logs = store.logs();
        assert!(plan.unseen(&logs));
        let seeding = store.clone();
        let logs_for_seed = logs.clone();
        plan = tokio::task::spawn_blocking(move || {
            plan.seed(&seeding, &logs_for_seed, now);
            plan
        })
        .await
        .unwrap();
        assert!(!plan.unseen(&logs));
        let summary = |id: LogId| store.log(&id).unwrap();
        assert!(!plan.due(&summary(kept.log_id), now), "nothing changed since the recorded checkpoint");
        assert!(plan.due(&summary(never.log_id), now), "a log never checkpointed is due");
        // Nor after the time cadence, while nothing changes.
        assert!(!plan.due(&summary(kept.log_id), now + Duration::from_secs(120)));

        put(&store, kept.log_id, 10, 9).await;
        assert!(!plan.due(&summary(kept.log_id), now), "9 new ops are under every_ops");
        assert!(plan.due(&summary(kept.log_id), now + Duration::from_secs(120)), "changed and old enough");
        put(&store, kept.log_id, 19, 1).await;
        assert!(plan.due(&summary(kept.log_id), now), "every_ops new ops");
        store.close().await.unwrap();
    }
}
