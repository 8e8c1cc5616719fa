//! Durable consumers with real processes: a consumer resumes after SIGKILL of the replica
//! and after its own restart with nothing skipped and nothing delivered twice past its
//! committed position; lag shows in status and metrics.

use std::sync::Arc;
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::time::Duration;

use futures::StreamExt;
use plait_client::{AppliedOp, Client};
use plait_proto::pb;
use plait_tests::Plaitd;

use crate::support::{connect, create};

/// Rounds of consume-then-SIGKILL.
const ROUNDS: usize = 3;
/// Entries the consumer commits after, at most (commits are batched, as an application
/// would).
const COMMIT_EVERY: u64 = 7;

async fn client(replica: &Plaitd) -> Client {
    Client::connect(replica.endpoint()).await.unwrap()
}

/// Appends `n` feed items, one entry each.
async fn append(c: &Client, n: usize) {
    for i in 0..n {
        c.append("events", format!("v{i}").as_bytes()).await.unwrap();
    }
}

/// What one run of the consumer saw: every op as (seq, op index), and the commits.
#[derive(Default)]
struct Run {
    ops: Vec<(u64, u32)>,
    /// The last commit the replica acknowledged.
    acked: Option<u64>,
    /// A commit sent whose answer never came (the replica died): it may or may not be
    /// stored.
    in_flight: Option<u64>,
}

/// Consumes `events` as consumer `worker` until the stream fails or ends, committing every
/// [`COMMIT_EVERY`] finished entries; once `kill_after` entries are finished, raises
/// `reached`.
async fn consume(c: &Client, follow: bool, kill_after: u64, reached: Arc<AtomicBool>) -> Run {
    let mut run = Run::default();
    let Ok(mut stream) = c.subscribe_consumer("events", "worker", 0, follow).await else { return run };
    let mut finished = 0u64;
    while let Some(next) = stream.next().await {
        let Ok(op): Result<AppliedOp, _> = next else { break };
        run.ops.push((op.seq, op.op_index));
        if op.ends_entry() {
            finished += 1;
            if finished.is_multiple_of(COMMIT_EVERY) {
                run.in_flight = Some(op.seq);
                match c.commit_consumer("events", "worker", op.seq).await {
                    Ok(info) => {
                        assert_eq!(info.committed_seq, op.seq);
                        run.acked = Some(op.seq);
                        run.in_flight = None;
                    }
                    Err(_) => break,
                }
            }
            if finished >= kill_after {
                reached.store(true, Ordering::SeqCst);
            }
        }
    }
    run
}

/// Every op of every entry in `seqs`, in order, as the log holds them: the reference a
/// resumed delivery is compared with.
async fn expected_ops(c: &Client, after: u64, until: u64) -> Vec<(u64, u32)> {
    let mut stream = c.subscribe("events", after, false).await.unwrap();
    let mut out = Vec::new();
    while let Some(op) = stream.next().await {
        let op = op.unwrap();
        if op.seq <= until {
            out.push((op.seq, op.op_index));
        }
    }
    out
}

/// A consumer killed with its replica (SIGKILL, under write load) resumes, after the
/// restart, exactly after its last durable commit: the first op delivered is the first of
/// the next entry, every later op comes once and in order, none is missing. A restart of
/// the consumer alone resumes the same way. The data directory is clean after each kill.
#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn a_consumer_resumes_after_sigkill_with_nothing_skipped_or_twice() {
    let dir = tempfile::tempdir().unwrap();
    let data = dir.path().join("data");
    let mut replica = Plaitd::start(&data, &[]).unwrap();
    {
        let mut c = connect(&replica).await;
        create(&mut c, "events", pb::LogType::Feed).await;
    }
    append(&client(&replica).await, 40).await;

    // The consumer alone restarts: a second subscription under the same name starts right
    // after the commit of the first.
    let c = client(&replica).await;
    let first = consume(&c, false, u64::MAX, Arc::default()).await;
    let committed = first.acked.unwrap();
    assert_eq!(committed, 35, "40 entries, committed every 7");
    assert_eq!(c.consumers("events").await.unwrap().0[0].lag, 5);
    let again = consume(&c, false, u64::MAX, Arc::default()).await;
    assert_eq!(again.ops, expected_ops(&c, committed, u64::MAX).await, "resumes after the commit");
    let mut committed = again.acked.unwrap_or(committed);

    for round in 0..ROUNDS {
        let c = client(&replica).await;
        // Writers keep appending while the consumer follows; the replica is killed under
        // both.
        let stop = Arc::new(AtomicBool::new(false));
        let written = Arc::new(AtomicU64::new(0));
        let writer = {
            let (c, stop, written) = (c.clone(), stop.clone(), written.clone());
            tokio::spawn(async move {
                while !stop.load(Ordering::SeqCst) {
                    let ops = (0..3)
                        .map(|i| {
                            plait_client::RoutedOp::new("events", plait_core::Op::Append { value: vec![i] })
                        })
                        .collect();
                    if c.write(ops).await.is_err() {
                        return;
                    }
                    written.fetch_add(1, Ordering::SeqCst);
                }
            })
        };
        let reached = Arc::new(AtomicBool::new(false));
        let consumer = {
            let (c, reached) = (c.clone(), reached.clone());
            tokio::spawn(async move { consume(&c, true, 60, reached).await })
        };
        plait_tests::wait_until(Duration::from_secs(60), "the consumer to finish 60 entries", || {
            let done = reached.load(Ordering::SeqCst);
            async move { done }
        })
        .await
        .unwrap();
        replica.kill9();
        stop.store(true, Ordering::SeqCst);
        writer.await.unwrap();
        let run = consumer.await.unwrap();
        assert_eq!(
            run.ops.first().map(|op| op.0),
            Some(committed + 1),
            "round {round}: resumed after the commit"
        );
        let (clean, report) = plait_tests::check(&data).unwrap();
        assert!(clean, "round {round}: {report}");

        replica.restart().unwrap();
        let c = client(&replica).await;
        let stored = c.consumers("events").await.unwrap().0[0].committed_seq;
        let acked = run.acked.unwrap_or(committed);
        assert!(
            stored == acked || Some(stored) == run.in_flight,
            "round {round}: committed {stored} after the restart; acknowledged {acked}, in flight {:?}",
            run.in_flight
        );
        // What this run delivered up to the commit is exactly the log's ops there.
        let delivered: Vec<_> = run.ops.iter().copied().filter(|op| op.0 <= stored).collect();
        assert_eq!(
            delivered,
            expected_ops(&c, committed, stored).await,
            "round {round}: nothing skipped up to the commit"
        );
        committed = stored;
    }

    // The last resume reads to the end: after it, every op of the log past the first
    // commit was delivered in some run, each once past the commit it resumed from.
    let c = client(&replica).await;
    let last = consume(&c, false, u64::MAX, Arc::default()).await;
    let end = c.get_log("events").await.unwrap().seq;
    assert_eq!(last.ops, expected_ops(&c, committed, end).await, "the final resume delivers the rest once");
    c.commit_consumer("events", "worker", end).await.unwrap();
    assert_eq!(c.consumers("events").await.unwrap().0[0].lag, 0);
    replica.terminate().unwrap();
    let (clean, report) = plait_tests::check(&data).unwrap();
    assert!(clean, "{report}");
}

/// A consumer's lag is in Admin.Status (per log), ListConsumers and the metrics, and a
/// deleted consumer leaves all three.
#[tokio::test]
async fn consumer_lag_is_in_status_and_metrics() {
    let dir = tempfile::tempdir().unwrap();
    let replica = Plaitd::start(&dir.path().join("data"), &["--metrics-listen", "127.0.0.1:0"]).unwrap();
    let mut raw = connect(&replica).await;
    create(&mut raw, "events", pb::LogType::Feed).await;
    let c = client(&replica).await;
    append(&c, 10).await;
    c.commit_consumer("events", "billing", 4).await.unwrap();
    c.commit_consumer("events", "audit", 10).await.unwrap();

    let status = raw.admin.status(pb::StatusRequest {}).await.unwrap().into_inner();
    let log = status.logs.iter().find(|l| l.name == "events").unwrap();
    let lags: Vec<_> = log.consumers.iter().map(|c| (c.name.as_str(), c.committed_seq, c.lag)).collect();
    assert_eq!(lags, vec![("audit", 10, 0), ("billing", 4, 6)]);
    let addr = replica.metrics.expect("metrics address");
    let scrape = || async move {
        tokio::task::spawn_blocking(move || plait_tests::fetch_metrics(addr).unwrap()).await.unwrap()
    };
    let metrics = scrape().await;
    let line = metrics
        .lines()
        .find(|l| l.starts_with("plait_consumer_lag") && l.contains("consumer=\"billing\""))
        .unwrap_or_else(|| panic!("no lag series for billing in\n{metrics}"));
    assert!(line.contains("log=\"events\"") && line.ends_with(" 6"), "{line}");

    c.delete_consumer("events", "billing").await.unwrap();
    let (left, limit) = c.consumers("events").await.unwrap();
    assert_eq!((left.len(), limit), (1, 64));
    let metrics = scrape().await;
    assert!(!metrics.contains("consumer=\"billing\""), "a deleted consumer's series stays:\n{metrics}");
}
