//! What each peer holds of this replica's logs, learned from the cursors peers send when
//! they pull: a pull after seq `s` with this replica's epoch means the puller durably
//! holds every entry up to `s`. Write concern and drain wait on this. A peer that
//! proved its node id on its Watch stream also reports, in its notices, how far it holds
//! this replica's logs (`WatchNotice.held`), which saves it the pull that would say so.

use std::collections::HashMap;
use std::sync::{Arc, Mutex};
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

    /// Makes waiters look again although no hold moved: a peer's node id became known,
    /// so holds recorded before it counted for nobody and may count now.
    pub(crate) fn members_changed(&self) {
        self.version.send_modify(|v| *v += 1);
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

/// The peers that watch this replica with a challenge (`WatchRequest.challenge`), with
/// how many such streams each has open: they learn from this replica's notices how far
/// it holds their logs, so a session pulling from one of them need not close each sync
/// with an empty pull that only says so.
#[derive(Default)]
pub(crate) struct Listeners {
    streams: Mutex<HashMap<PublicKey, usize>>,
}

impl Listeners {
    /// Counts `peer` as listening until the guard drops (its Watch stream ends).
    pub(crate) fn listen(self: &Arc<Self>, peer: PublicKey) -> ListenGuard {
        *self.streams.lock().expect("listeners lock poisoned").entry(peer).or_insert(0) += 1;
        ListenGuard { listeners: self.clone(), peer }
    }

    pub(crate) fn listening(&self, peer: &PublicKey) -> bool {
        self.streams.lock().expect("listeners lock poisoned").contains_key(peer)
    }
}

/// One open Watch stream that reports holds to its caller.
pub(crate) struct ListenGuard {
    listeners: Arc<Listeners>,
    peer: PublicKey,
}

impl Drop for ListenGuard {
    fn drop(&mut self) {
        let mut streams = self.listeners.streams.lock().expect("listeners lock poisoned");
        if let Some(count) = streams.get_mut(&self.peer) {
            *count -= 1;
            if *count == 0 {
                streams.remove(&self.peer);
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    /// A write concern waiting for a peer whose node id is not known yet is met as soon as
    /// the id becomes known, when the peer's hold was recorded before that: learning a
    /// member wakes the waiter (it used to sleep until its deadline, and only then count).
    #[tokio::test]
    async fn a_member_learned_late_wakes_a_waiting_write_concern() {
        let holds = Holds::default();
        let (peer, log) = (PublicKey([1; 32]), LogId([2; 32]));
        let members = Mutex::new(Vec::new());
        let deadline = Instant::now() + std::time::Duration::from_secs(3600);
        let targets = [(log, 1)];
        let members_now = || members.lock().unwrap().clone();
        let mut waiting = std::pin::pin!(holds.wait_for(&targets, 1, deadline, members_now));
        assert!(futures::poll!(waiting.as_mut()).is_pending());
        holds.record(peer, log, 1);
        assert!(futures::poll!(waiting.as_mut()).is_pending(), "the holder is no member yet");
        members.lock().unwrap().push(peer);
        holds.members_changed();
        assert_eq!(futures::poll!(waiting.as_mut()), std::task::Poll::Ready(Ok(())));
    }

    /// A peer listens while any of its streams is open, and stops when the last closes.
    #[test]
    fn a_peer_listens_while_one_of_its_streams_is_open() {
        let listeners = Arc::new(Listeners::default());
        let (a, b) = (PublicKey([1; 32]), PublicKey([2; 32]));
        let first = listeners.listen(a);
        let second = listeners.listen(a);
        assert!(listeners.listening(&a) && !listeners.listening(&b));
        drop(first);
        assert!(listeners.listening(&a), "one stream is still open");
        drop(second);
        assert!(!listeners.listening(&a));
    }
}
