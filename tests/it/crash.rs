//! Crash durability with real processes: plaitd under concurrent write load is killed
//! with SIGKILL again and again. After every restart each acknowledged write is present,
//! seq is gap-free and continues, and the integrity check is clean.

use std::collections::BTreeMap;
use std::sync::{Arc, Mutex};
use std::time::Duration;

use plait_proto::pb;
use plait_tests::Plaitd;

use crate::support::connect;

/// Rounds of load-then-SIGKILL.
const ROUNDS: usize = 6;
/// Concurrent writers per round.
const WRITERS: usize = 8;
/// Acknowledged writes to wait for before killing, per round.
const ACKS_BEFORE_KILL: usize = 300;

/// Every write acknowledged before a SIGKILL survives it, in every round.
#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn acknowledged_writes_survive_sigkill() {
    let dir = tempfile::tempdir().unwrap();
    let data = dir.path().join("data");
    let mut replica = Plaitd::start(&data, &[]).unwrap();
    {
        let mut c = connect(&replica).await;
        c.logs
            .create_log(pb::CreateLogRequest {
                name: "kv".into(),
                r#type: pb::LogType::Kv as i32,
                ..Default::default()
            })
            .await
            .unwrap();
        c.logs
            .create_log(pb::CreateLogRequest {
                name: "feed".into(),
                r#type: pb::LogType::Feed as i32,
                ..Default::default()
            })
            .await
            .unwrap();
    }
    // key → value of every acknowledged kv write; each key is written once.
    let acked: Arc<Mutex<BTreeMap<String, (u64, String)>>> = Arc::default();
    let mut feed_acked = 0u64;
    let mut last_seq = 0u64;

    for round in 0..ROUNDS {
        let endpoint = replica.endpoint();
        let mut tasks = Vec::new();
        let stop = Arc::new(std::sync::atomic::AtomicBool::new(false));
        let feed_count = Arc::new(std::sync::atomic::AtomicU64::new(0));
        for w in 0..WRITERS {
            let (endpoint, acked, stop, feed_count) =
                (endpoint.clone(), acked.clone(), stop.clone(), feed_count.clone());
            tasks.push(tokio::spawn(async move {
                let Ok(channel) = tonic::transport::Channel::from_shared(endpoint).unwrap().connect().await
                else {
                    return;
                };
                let mut data = pb::data_client::DataClient::new(channel);
                let mut i = 0;
                while !stop.load(std::sync::atomic::Ordering::SeqCst) {
                    let key = format!("r{round}-w{w}-{i}");
                    let ops = vec![
                        pb::RoutedOp {
                            log: "kv".into(),
                            op: Some(pb::Op {
                                op: Some(pb::op::Op::Put(pb::KvPut {
                                    key: key.clone().into_bytes(),
                                    value: key.clone().into_bytes(),
                                })),
                            }),
                        },
                        pb::RoutedOp {
                            log: "feed".into(),
                            op: Some(pb::Op {
                                op: Some(pb::op::Op::Append(pb::FeedAppend {
                                    value: key.clone().into_bytes(),
                                })),
                            }),
                        },
                    ];
                    match data.write(pb::WriteRequest { ops, concern: None }).await {
                        Ok(r) => {
                            let seq = r.into_inner().acks[0].seq;
                            acked.lock().unwrap().insert(key.clone(), (seq, key));
                            feed_count.fetch_add(1, std::sync::atomic::Ordering::SeqCst);
                        }
                        Err(_) => return, // The replica was killed mid-call: not acknowledged.
                    }
                    i += 1;
                }
            }));
        }
        let target = acked.lock().unwrap().len() + ACKS_BEFORE_KILL;
        plait_tests::wait_until(Duration::from_secs(60), "acknowledged writes", || {
            let n = acked.lock().unwrap().len();
            async move { n >= target }
        })
        .await
        .unwrap();
        replica.kill9();
        stop.store(true, std::sync::atomic::Ordering::SeqCst);
        for t in tasks {
            t.await.unwrap();
        }
        feed_acked += feed_count.load(std::sync::atomic::Ordering::SeqCst);

        // The integrity check runs on the stopped data directory, straight after SIGKILL.
        let (clean, report) = plait_tests::check(&data).unwrap();
        assert!(clean, "round {round}: {report}");

        replica.restart().unwrap();
        let mut c = connect(&replica).await;
        let info = c.logs.get_log(pb::GetLogRequest { log: "kv".into() }).await.unwrap().into_inner();
        let acked_now = acked.lock().unwrap().clone();
        let max_acked_seq = acked_now.values().map(|(s, _)| *s).max().unwrap_or(0);
        assert!(
            info.seq >= max_acked_seq,
            "round {round}: seq {} is behind an acknowledged seq {max_acked_seq}",
            info.seq
        );
        assert!(info.seq >= last_seq, "seq never goes back");
        for (key, (_, value)) in &acked_now {
            let got = c
                .data
                .get(pb::GetRequest { log: "kv".into(), key: key.clone().into_bytes(), as_of: None })
                .await
                .unwrap()
                .into_inner();
            assert!(
                got.found && got.value == value.as_bytes(),
                "round {round}: acknowledged write {key} is missing"
            );
        }
        let feed = c.logs.get_log(pb::GetLogRequest { log: "feed".into() }).await.unwrap().into_inner();
        assert!(
            feed.ops >= feed_acked,
            "round {round}: {} feed ops stored, {feed_acked} acknowledged",
            feed.ops
        );
        // Seq continues from the recovered value, without a gap.
        let ack = c
            .data
            .put(pb::PutRequest {
                log: "kv".into(),
                key: format!("probe{round}").into_bytes(),
                value: b"p".to_vec(),
                concern: None,
            })
            .await
            .unwrap()
            .into_inner();
        assert_eq!(ack.seq, info.seq + 1, "round {round}: seq continues after recovery");
        last_seq = ack.seq;
    }
    replica.terminate().unwrap();
    let (clean, report) = plait_tests::check(&data).unwrap();
    assert!(clean, "{report}");
}
