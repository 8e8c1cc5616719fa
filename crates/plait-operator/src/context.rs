//! What every reconcile shares: the Kubernetes client, the seam to the replicas, the
//! clock, the event recorder, and retry bookkeeping.

use std::collections::HashMap;
use std::sync::atomic::{AtomicU64, Ordering};
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

/// Counters served on `/metrics`.
#[derive(Debug, Default)]
pub struct Metrics {
    pub reconciles: AtomicU64,
    pub reconcile_errors: AtomicU64,
    pub backups_completed: AtomicU64,
    pub backups_failed: AtomicU64,
    pub drains: AtomicU64,
    pub member_updates: AtomicU64,
}

impl Metrics {
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
        out
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
