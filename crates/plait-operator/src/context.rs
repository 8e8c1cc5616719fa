//! What every reconcile shares: the Kubernetes client, the seam to the replicas, the
//! clock, the event recorder, and retry bookkeeping.

use std::collections::HashMap;
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::sync::{Arc, Mutex};
use std::time::Duration;

use jiff::Timestamp;
use k8s_openapi::api::core::v1::ObjectReference;
use kube::runtime::events::{Event, EventType, Recorder, Reporter};

use crate::plan::PlanContext;
use crate::replicas::{ReplicaAdmin, Resolve};

/// The time, injected so tests decide what "now" is.
pub trait Clock: Send + Sync {
    fn now(&self) -> Timestamp;
}

/// The machine's clock.
#[derive(Clone, Copy, Debug, Default)]
pub struct SystemClock;

impl Clock for SystemClock {
    fn now(&self) -> Timestamp {
        Timestamp::now()
    }
}

/// Failed reconciles are retried after this, doubling per consecutive failure up to
/// [`RETRY_MAX`].
pub(crate) const RETRY_MIN: Duration = Duration::from_secs(2);
pub(crate) const RETRY_MAX: Duration = Duration::from_secs(300);

/// Upper bounds, in seconds, of the reconcile-duration histogram's buckets.
const DURATION_BUCKETS: [f64; 11] = [0.01, 0.05, 0.1, 0.25, 0.5, 1.0, 2.5, 5.0, 10.0, 30.0, 60.0];

/// A Prometheus histogram of durations.
#[derive(Debug, Default, Clone)]
struct Histogram {
    /// Observations at or under each bound of [`DURATION_BUCKETS`] (not cumulative).
    buckets: [u64; DURATION_BUCKETS.len()],
    count: u64,
    sum: f64,
}

impl Histogram {
    fn observe(&mut self, seconds: f64) {
        if let Some(i) = DURATION_BUCKETS.iter().position(|b| seconds <= *b) {
            self.buckets[i] += 1;
        }
        self.count += 1;
        self.sum += seconds;
    }

    fn render(&self, out: &mut String, name: &str, labels: &str) {
        let mut cumulative = 0;
        for (bound, n) in DURATION_BUCKETS.iter().zip(self.buckets) {
            cumulative += n;
            out.push_str(&format!("{name}_bucket{{{labels},le=\"{bound}\"}} {cumulative}\n"));
        }
        out.push_str(&format!("{name}_bucket{{{labels},le=\"+Inf\"}} {}\n", self.count));
        out.push_str(&format!(
            "{name}_sum{{{labels}}} {}\n{name}_count{{{labels}}} {}\n",
            self.sum, self.count
        ));
    }
}

/// What the last pass saw of one cluster, for its gauges.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub struct ClusterGauges {
    /// Replicas the StatefulSet has.
    pub replicas: i32,
    /// Replicas ready and caught up.
    pub ready_replicas: i32,
    /// The `Ready` condition is True.
    pub ready: bool,
    /// The `Available` condition is True.
    pub available: bool,
}

/// Counters, reconcile-duration histograms and per-cluster gauges served on `/metrics`.
#[derive(Debug, Default)]
pub struct Metrics {
    pub reconciles: AtomicU64,
    pub reconcile_errors: AtomicU64,
    pub backups_completed: AtomicU64,
    pub backups_failed: AtomicU64,
    pub drains: AtomicU64,
    pub member_updates: AtomicU64,
    /// This operator holds the leader Lease (or runs without election) and reconciles.
    leader: AtomicBool,
    /// Reconcile durations, by controller (`cluster`, `backup`).
    durations: Mutex<std::collections::BTreeMap<&'static str, Histogram>>,
    /// Each cluster's gauges, by (namespace, name); a deleted cluster's go.
    clusters: Mutex<std::collections::BTreeMap<(String, String), ClusterGauges>>,
}

/// A label value, escaped for the text format.
fn label(value: &str) -> String {
    value.replace('\\', "\\\\").replace('"', "\\\"").replace('\n', "\\n")
}

impl Metrics {
    /// Records how long one reconcile of `controller` took.
    pub fn observe_reconcile(&self, controller: &'static str, took: Duration) {
        self.durations
            .lock()
            .expect("metrics lock")
            .entry(controller)
            .or_default()
            .observe(took.as_secs_f64());
    }

    /// Whether this operator reconciles now: it leads, or runs without election.
    pub fn set_leader(&self, leading: bool) {
        self.leader.store(leading, Ordering::Relaxed);
    }

    /// Whether this operator reconciles now.
    pub fn leading(&self) -> bool {
        self.leader.load(Ordering::Relaxed)
    }

    /// Sets a cluster's gauges, or with `None` removes them (the cluster is gone).
    pub fn set_cluster(&self, namespace: &str, name: &str, gauges: Option<ClusterGauges>) {
        let mut clusters = self.clusters.lock().expect("metrics lock");
        let key = (namespace.to_owned(), name.to_owned());
        match gauges {
            Some(gauges) => {
                clusters.insert(key, gauges);
            }
            None => {
                clusters.remove(&key);
            }
        }
    }

    /// The Prometheus text format.
    pub fn render(&self) -> String {
        let mut out = String::new();
        for (name, help, value) in [
            ("plait_operator_reconciles_total", "Reconciles run.", &self.reconciles),
            ("plait_operator_reconcile_errors_total", "Reconciles that failed.", &self.reconcile_errors),
            ("plait_operator_backups_completed_total", "Backups completed.", &self.backups_completed),
            ("plait_operator_backups_failed_total", "Backup attempts that failed.", &self.backups_failed),
            ("plait_operator_drains_total", "Replicas drained before removal.", &self.drains),
            ("plait_operator_member_updates_total", "SetMembers calls that succeeded.", &self.member_updates),
        ] {
            out.push_str(&format!(
                "# HELP {name} {help}\n# TYPE {name} counter\n{name} {}\n",
                value.load(Ordering::Relaxed)
            ));
        }
        let name = "plait_operator_leader";
        out.push_str(&format!(
            "# HELP {name} 1 while this operator reconciles (it holds the leader Lease, or runs without election).\n# TYPE {name} gauge\n{name} {}\n",
            u8::from(self.leading())
        ));
        let name = "plait_operator_reconcile_duration_seconds";
        out.push_str(&format!(
            "# HELP {name} How long reconcile passes take, by controller.\n# TYPE {name} histogram\n"
        ));
        for (controller, histogram) in self.durations.lock().expect("metrics lock").iter() {
            histogram.render(&mut out, name, &format!("controller=\"{controller}\""));
        }
        let clusters = self.clusters.lock().expect("metrics lock");
        type Read = fn(&ClusterGauges) -> i64;
        let gauges: [(&str, &str, Read); 4] = [
            ("plait_operator_cluster_replicas", "Replicas a cluster's StatefulSet has.", |g| {
                i64::from(g.replicas)
            }),
            ("plait_operator_cluster_ready_replicas", "Replicas ready and caught up.", |g| {
                i64::from(g.ready_replicas)
            }),
            ("plait_operator_cluster_ready", "1 while a cluster's Ready condition is True.", |g| {
                i64::from(g.ready)
            }),
            (
                "plait_operator_cluster_available",
                "1 while a cluster serves writes (its Available condition).",
                |g| i64::from(g.available),
            ),
        ];
        for (name, help, read) in gauges {
            out.push_str(&format!("# HELP {name} {help}\n# TYPE {name} gauge\n"));
            for ((namespace, cluster), g) in clusters.iter() {
                out.push_str(&format!(
                    "{name}{{namespace=\"{}\",cluster=\"{}\"}} {}\n",
                    label(namespace),
                    label(cluster),
                    read(g)
                ));
            }
        }
        out
    }
}

#[cfg(test)]
mod metrics_tests {
    use super::*;

    /// The histogram's buckets are cumulative and end at `+Inf` with the count; each
    /// cluster has its gauges until it is removed; label values are escaped.
    #[test]
    fn durations_and_cluster_gauges_render() {
        let metrics = Metrics::default();
        metrics.observe_reconcile("cluster", Duration::from_millis(30));
        metrics.observe_reconcile("cluster", Duration::from_secs(2));
        metrics.observe_reconcile("cluster", Duration::from_secs(120));
        let gauges = ClusterGauges { replicas: 3, ready_replicas: 2, ready: false, available: true };
        metrics.set_cluster("shop", "orders", Some(gauges));
        metrics.set_cluster("shop", "gone", Some(gauges));
        metrics.set_cluster("shop", "gone", None);
        metrics.set_leader(true);
        let text = metrics.render();
        for line in [
            "plait_operator_reconcile_duration_seconds_bucket{controller=\"cluster\",le=\"0.01\"} 0",
            "plait_operator_reconcile_duration_seconds_bucket{controller=\"cluster\",le=\"0.05\"} 1",
            "plait_operator_reconcile_duration_seconds_bucket{controller=\"cluster\",le=\"2.5\"} 2",
            "plait_operator_reconcile_duration_seconds_bucket{controller=\"cluster\",le=\"60\"} 2",
            "plait_operator_reconcile_duration_seconds_bucket{controller=\"cluster\",le=\"+Inf\"} 3",
            "plait_operator_reconcile_duration_seconds_count{controller=\"cluster\"} 3",
            "plait_operator_cluster_replicas{namespace=\"shop\",cluster=\"orders\"} 3",
            "plait_operator_cluster_ready_replicas{namespace=\"shop\",cluster=\"orders\"} 2",
            "plait_operator_cluster_ready{namespace=\"shop\",cluster=\"orders\"} 0",
            "plait_operator_cluster_available{namespace=\"shop\",cluster=\"orders\"} 1",
            "plait_operator_leader 1",
        ] {
            assert!(text.lines().any(|l| l == line), "no {line:?} in\n{text}");
        }
        assert!(!text.contains("gone"), "{text}");
        assert_eq!(label("a\"b\\c\nd"), "a\\\"b\\\\c\\nd");
    }
}

/// Shared by every reconcile.
pub struct Context {
    pub client: kube::Client,
    pub admin: Arc<dyn ReplicaAdmin>,
    pub resolver: Arc<dyn Resolve>,
    pub clock: Arc<dyn Clock>,
    pub plan: PlanContext,
    pub metrics: Metrics,
    recorder: Recorder,
    /// Consecutive failures per object (`namespace/name`), for backoff.
    failures: Mutex<HashMap<String, u32>>,
    /// Since when each backup job (by id) could not be polled, while it cannot. Kept in
    /// memory only: an operator that takes over starts counting afresh.
    unpolled: Mutex<HashMap<String, Timestamp>>,
}

impl Context {
    pub fn new(
        client: kube::Client,
        admin: Arc<dyn ReplicaAdmin>,
        resolver: Arc<dyn Resolve>,
        clock: Arc<dyn Clock>,
        plan: PlanContext,
    ) -> Arc<Context> {
        let reporter =
            Reporter { controller: "plait-operator".into(), instance: std::env::var("POD_NAME").ok() };
        let recorder = Recorder::new(client.clone(), reporter);
        Arc::new(Context {
            client,
            admin,
            resolver,
            clock,
            plan,
            metrics: Metrics::default(),
            recorder,
            failures: Mutex::new(HashMap::new()),
            unpolled: Mutex::new(HashMap::new()),
        })
    }

    /// Publishes an event about `object`. Events are for people; failing to publish one
    /// is logged, never a reason to fail the reconcile.
    pub async fn event(
        &self,
        object: &ObjectReference,
        warning: bool,
        reason: &str,
        action: &str,
        note: String,
    ) {
        let type_ = if warning { EventType::Warning } else { EventType::Normal };
        if warning {
            tracing::warn!(object = ?object.name, reason, "{note}");
        } else {
            tracing::info!(object = ?object.name, reason, "{note}");
        }
        let event = Event {
            type_,
            reason: reason.to_owned(),
            // The API refuses notes over 1 kB.
            note: Some(truncate(note, 1000)),
            action: action.to_owned(),
            secondary: None,
        };
        if let Err(e) = self.recorder.publish(&event, object).await {
            tracing::warn!(reason, "cannot publish event: {e}");
        }
    }

    /// Records a failure of `key` and returns how long to wait before retrying.
    pub fn backoff(&self, key: &str) -> Duration {
        let mut failures = self.failures.lock().expect("failure table lock");
        let n = failures.entry(key.to_owned()).or_insert(0);
        *n = n.saturating_add(1);
        retry_delay(*n)
    }

    /// Notes that backup job `job` could not be polled at `now`; returns since when it
    /// has not been (the first failure of the current run of failures).
    pub(crate) fn unpolled_since(&self, job: &str, now: Timestamp) -> Timestamp {
        let mut unpolled = self.unpolled.lock().expect("unpolled table lock");
        // Bounded by the backups in flight: entries go when a job answers a poll or its
        // attempt ends.
        *unpolled.entry(job.to_owned()).or_insert(now)
    }

    /// Forgets the poll failures of backup job `job` (it answered, or its attempt ended).
    pub(crate) fn polled(&self, job: &str) {
        self.unpolled.lock().expect("unpolled table lock").remove(job);
    }

    /// Forgets the failures of `key` after a success.
    pub fn succeeded(&self, key: &str) {
        self.failures.lock().expect("failure table lock").remove(key);
    }
}

/// The wait before retry `n` (1-based): doubling from [`RETRY_MIN`], capped at [`RETRY_MAX`].
pub(crate) fn retry_delay(n: u32) -> Duration {
    RETRY_MIN.saturating_mul(1u32 << n.saturating_sub(1).min(16)).min(RETRY_MAX)
}

pub(crate) fn truncate(mut text: String, max: usize) -> String {
    if text.len() > max {
        let mut cut = max;
        while !text.is_char_boundary(cut) {
            cut -= 1;
        }
        text.truncate(cut);
    }
    text
}

/// Now, to the second: what Kubernetes timestamps keep, so a value written and read back
/// compares equal.
pub(crate) fn now_seconds(clock: &dyn Clock) -> Timestamp {
    Timestamp::from_second(clock.now().as_second()).expect("the clock is within range")
}

#[cfg(test)]
mod tests {
    use super::*;

    /// Retries back off exponentially and stop growing at the cap.
    #[test]
    fn backoff_doubles_up_to_the_cap() {
        assert_eq!(retry_delay(1), Duration::from_secs(2));
        assert_eq!(retry_delay(2), Duration::from_secs(4));
        assert_eq!(retry_delay(5), Duration::from_secs(32));
        assert_eq!(retry_delay(40), RETRY_MAX);
    }
}
