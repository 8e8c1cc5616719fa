//! Durable consumers: commits survive a reopen, are bounded per log, refuse seqs the log
//! does not hold, and leave with their log.

use std::future::Future;
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::{Arc, Condvar, Mutex};

use plait_core::{LogType, Op};
use plait_store::{Consumer, FaultInjector, NoopObserver, Store, StoreConfig, StoreError, StoreResult};
use rand::SeedableRng;
use rand::rngs::StdRng;

use crate::support::{key, manifest, open};

/// Holds the writer in the next commit once armed, until released, so that commands
/// sent meanwhile queue up and form the next group together.
#[derive(Default)]
struct Gate {
    armed: AtomicBool,
    /// (the writer is in the commit, released)
    state: Mutex<(bool, bool)>,
    changed: Condvar,
}

impl Gate {
    fn arm(&self) {
        *self.state.lock().unwrap() = (false, false);
        self.armed.store(true, Ordering::SeqCst);
    }

    fn wait_entered(&self) {
        let state = self.state.lock().unwrap();
        drop(self.changed.wait_while(state, |s| !s.0).unwrap());
    }

    fn release(&self) {
        self.state.lock().unwrap().1 = true;
        self.changed.notify_all();
    }
}

impl FaultInjector for Gate {
    fn before_commit(&self) -> StoreResult<()> {
        if self.armed.swap(false, Ordering::SeqCst) {
            let mut state = self.state.lock().unwrap();
            state.0 = true;
            self.changed.notify_all();
            drop(self.changed.wait_while(state, |s| !s.1).unwrap());
        }
        Ok(())
    }
}

fn put(k: &str) -> Op {
    Op::Put { key: k.as_bytes().to_vec(), value: b"v".to_vec() }
}

/// A commit is durable and served again after the store reopens; moving back is
/// allowed; a delete removes the row; `check` is clean throughout.
#[tokio::test]
async fn a_committed_position_survives_a_reopen_and_a_delete_removes_it() {
    let dir = tempfile::tempdir().unwrap();
    let writer = key(1);
    let store = open(dir.path(), &writer);
    let (log, _) = store.create_log(manifest("orders", LogType::Kv, &[&writer])).await.unwrap();
    let log = log.log_id;
    for i in 0..5 {
        store.write(vec![(log, put(&format!("k{i}")))]).await.unwrap();
    }
    assert!(store.commit_consumer(log, "billing", 3, 8).await.unwrap(), "the first commit creates it");
    assert!(!store.commit_consumer(log, "billing", 5, 8).await.unwrap());
    assert!(store.commit_consumer(log, "audit", 0, 8).await.unwrap());
    assert!(!store.commit_consumer(log, "audit", 0, 8).await.unwrap());
    store.close().await.unwrap();
    drop(store);

    let store = open(dir.path(), &writer);
    assert_eq!(store.consumer(&log, "billing"), Some(5));
    assert_eq!(
        store.consumers(&log),
        vec![Consumer { name: "audit".into(), seq: 0 }, Consumer { name: "billing".into(), seq: 5 }]
    );
    assert!(!store.commit_consumer(log, "billing", 2, 8).await.unwrap(), "a consumer may move back");
    assert_eq!(store.consumer(&log, "billing"), Some(2));
    store.delete_consumer(log, "audit").await.unwrap();
    assert!(matches!(store.delete_consumer(log, "audit").await, Err(StoreError::NotFound(_))));
    assert!(store.check_integrity().unwrap().is_clean());
    store.close().await.unwrap();
    drop(store);
    let store = open(dir.path(), &writer);
    assert_eq!(store.consumers(&log), vec![Consumer { name: "billing".into(), seq: 2 }]);
    assert!(store.check_integrity().unwrap().is_clean());
    store.close().await.unwrap();
}

/// Refusals store nothing: a seq past the log's end, a bad name, an unknown log, and a
/// new consumer over the limit, also when concurrent commits race for the last place.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn refused_commits_store_nothing_and_the_limit_holds_under_races() {
    let dir = tempfile::tempdir().unwrap();
    let writer = key(2);
    let gate = Arc::new(Gate::default());
    let mut config = StoreConfig::new(dir.path(), writer.clone()).without_disk_floor();
    config.faults = Some(gate.clone());
    let store = Store::open(config, &mut StdRng::seed_from_u64(7), Arc::new(NoopObserver)).unwrap();
    let (log, _) = store.create_log(manifest("events", LogType::Feed, &[&writer])).await.unwrap();
    let log = log.log_id;
    store.write(vec![(log, Op::Append { value: b"x".to_vec() })]).await.unwrap();

    let past = store.commit_consumer(log, "c", 2, 4).await.unwrap_err();
    assert!(matches!(&past, StoreError::Invalid(m) if m.contains("0 to 1")), "{past}");
    for bad in ["", "a/b", &"x".repeat(129)] {
        assert!(
            matches!(store.commit_consumer(log, bad, 0, 4).await, Err(StoreError::Invalid(_))),
            "{bad:?}"
        );
    }
    let other = plait_core::LogId([9; 32]);
    assert!(matches!(store.commit_consumer(other, "c", 0, 4).await, Err(StoreError::NotFound(_))));
    assert!(store.consumers(&log).is_empty());

    // Twelve new consumers race for four places, all in one group of the writer: the
    // writer is held in the commit of a write while the twelve commands queue behind it.
    gate.arm();
    let write = {
        let store = store.clone();
        tokio::spawn(async move { store.write(vec![(log, Op::Append { value: b"w".to_vec() })]).await })
    };
    let waiting = gate.clone();
    tokio::task::spawn_blocking(move || waiting.wait_entered()).await.unwrap();
    let waker = std::task::Waker::noop();
    let mut cx = std::task::Context::from_waker(waker);
    let mut tries: Vec<_> = (0..12)
        .map(|i| {
            let store = store.clone();
            Box::pin(async move { store.commit_consumer(log, &format!("c{i}"), 1, 4).await })
        })
        .collect();
    for t in &mut tries {
        // The first poll queues the command; the answer waits for the group's commit.
        assert!(t.as_mut().poll(&mut cx).is_pending());
    }
    gate.release();
    write.await.unwrap().unwrap();
    let mut created = 0;
    for t in tries {
        match t.await {
            Ok(true) => created += 1,
            Err(StoreError::ResourceExhausted(m)) => assert!(m.contains("4 consumers"), "{m}"),
            other => panic!("unexpected {other:?}"),
        }
    }
    assert_eq!(created, 4);
    assert_eq!(store.consumers(&log).len(), 4);
    // An existing consumer still commits at the limit; after a delete a new one fits.
    let first = store.consumers(&log)[0].name.clone();
    assert!(!store.commit_consumer(log, &first, 0, 4).await.unwrap());
    store.delete_consumer(log, &first).await.unwrap();
    assert!(store.commit_consumer(log, "late", 1, 4).await.unwrap());
    // The next write goes on normally.
    assert_eq!(store.write(vec![(log, Op::Append { value: b"y".to_vec() })]).await.unwrap()[0].seq, 3);
    assert!(store.check_integrity().unwrap().is_clean());
    store.close().await.unwrap();
}

/// Dropping a log drops its consumers, in memory and on disk; a log of the same name
/// created again starts without them.
#[tokio::test]
async fn consumers_leave_with_their_log() {
    let dir = tempfile::tempdir().unwrap();
    let writer = key(3);
    let store = open(dir.path(), &writer);
    let m = manifest("jobs", LogType::Kv, &[&writer]);
    let (log, _) = store.create_log(m.clone()).await.unwrap();
    let log = log.log_id;
    store.commit_consumer(log, "worker", 0, 4).await.unwrap();
    store.drop_log(log).await.unwrap();
    assert!(store.consumers(&log).is_empty());
    let (again, _) = store.create_log(m).await.unwrap();
    assert!(store.consumers(&again.log_id).is_empty());
    assert!(store.check_integrity().unwrap().is_clean());
    store.close().await.unwrap();
    drop(store);
    let store = open(dir.path(), &writer);
    assert!(store.consumers(&log).is_empty());
    assert!(store.check_integrity().unwrap().is_clean());
    store.close().await.unwrap();
}
