//! What each peer holds of this replica's logs, learned from the cursors peers send when
//! they pull: a pull after seq `s` with this replica's epoch means the puller durably
//! holds every entry up to `s`. Write concern and drain wait on this.

use std::collections::HashMap;
use std::sync::Mutex;
use std::time::Instant;

use plait_core::{LogId, PublicKey};
use tokio::sync::watch;

#[derive(Default)]
struct Inner {
    by_peer: HashMap<PublicKey, HashMap<LogId, u64>>,
}

pub(crate) struct Holds {
    inner: Mutex<Inner>,
    /// Bumped on every change, so waiters re-check.
    version: watch::Sender<u64>,
}

impl Default for Holds {
    fn default() -> Self {
        Holds { inner: Mutex::default(), version: watch::channel(0).0 }
    }
}

impl Holds {
    pub(crate) fn record(&self, peer: PublicKey, log: LogId, seq: u64) {
        let mut inner = self.inner.lock().expect("holds lock poisoned");
        let held = inner.by_peer.entry(peer).or_default().entry(log).or_insert(0);
        if seq > *held {
            *held = seq;
            drop(inner);
            self.version.send_modify(|v| *v += 1);
        }
    }

    /// Peers known to hold `log` up to at least `seq`.
    pub(crate) fn holders(&self, log: &LogId, seq: u64) -> Vec<PublicKey> {
        let inner = self.inner.lock().expect("holds lock poisoned");
        inner
            .by_peer
            .iter()
            .filter(|(_, logs)| logs.get(log).is_some_and(|s| *s >= seq))
            .map(|(p, _)| *p)
            .collect()
    }

    pub(crate) fn held_by(&self, peer: &PublicKey, log: &LogId) -> u64 {
        let inner = self.inner.lock().expect("holds lock poisoned");
        inner.by_peer.get(peer).and_then(|l| l.get(log)).copied().unwrap_or(0)
    }

    /// Waits until `others` peers that `members()` lists hold every `(log, seq)` or
    /// `deadline` passes; returns the fewest holders seen on timeout. Only members count:
    /// a node that pulls without being one (an edge node) is no replica of the write.
    pub(crate) async fn wait_for(
        &self,
        targets: &[(LogId, u64)],
        others: usize,
        deadline: Instant,
        members: impl Fn() -> Vec<PublicKey>,
    ) -> Result<(), usize> {
        let mut version = self.version.subscribe();
        // The fewest current members holding any one target.
        let fewest_holding = |default: usize| {
            let members = members();
            targets
                .iter()
                .map(|(log, seq)| self.holders(log, *seq).iter().filter(|h| members.contains(h)).count())
                .min()
                .unwrap_or(default)
        };
        loop {
            let fewest = fewest_holding(others);
            if fewest >= others {
                return Ok(());
            }
            let remaining = deadline.saturating_duration_since(Instant::now());
            if remaining.is_zero() {
                return Err(fewest);
            }
            if tokio::time::timeout(remaining, version.changed()).await.is_err() {
                let fewest = fewest_holding(0);
                return if fewest >= others { Ok(()) } else { Err(fewest) };
            }
        }
    }

    pub(crate) fn subscribe(&self) -> watch::Receiver<u64> {
        self.version.subscribe()
    }
}
