//! Whether this replica should receive clients' calls: the `plait.v1.Ready` health
//! service and `/readyz`, which Kubernetes' readiness probes ask, follow it.
//!
//! Ready means: not draining, the store not poisoned, every member this replica can reach
//! contacted and a full round with it finished, and no log more than `--ready-lag-max`
//! entries behind any reachable member. A member that cannot be reached does not count:
//! a replica whose peers are all down must still serve what it has, or losing two pods
//! would take the third out of the Service too.

use std::sync::Mutex;
use std::time::Duration;

use tokio::sync::watch;

use crate::replication::PeerInfo;

/// The health service name whose status is readiness. The overall service ("") stays
/// SERVING while the process serves at all: it is the liveness signal.
pub(crate) const READY_SERVICE: &str = "plait.v1.Ready";
/// How often readiness is re-evaluated.
const EVERY: Duration = Duration::from_millis(500);

/// The last evaluation: `None` when ready, else why not.
#[derive(Default)]
pub(crate) struct ReadinessCell(Mutex<Option<String>>);

impl ReadinessCell {
    /// `None` when ready, else the reason it is not.
    pub(crate) fn not_ready(&self) -> Option<String> {
        self.0.lock().expect("readiness lock poisoned").clone()
    }

    /// Stores `next`; returns whether it differs from what was stored.
    fn set(&self, next: Option<String>) -> bool {
        let mut current = self.0.lock().expect("readiness lock poisoned");
        let changed = *current != next;
        *current = next;
        changed
    }
}

/// What readiness is decided from.
pub(crate) struct Inputs<'a> {
    pub(crate) draining: bool,
    pub(crate) writable: bool,
    pub(crate) peers: &'a [(String, PeerInfo)],
    pub(crate) lag_max: u64,
}

/// `None` when ready, else the first reason it is not, in words an operator can act on.
pub(crate) fn evaluate(inputs: &Inputs<'_>) -> Option<String> {
    if !inputs.writable {
        return Some("the store is poisoned by a failed write to disk".into());
    }
    if inputs.draining {
        return Some("draining before removal".into());
    }
    for (address, info) in inputs.peers {
        if !info.connected {
            if info.last_error.is_empty() && info.last_contact.is_none() {
                return Some(format!("not yet tried member {address}"));
            }
            // Unreachable: does not hold readiness back (see the module comment).
            continue;
        }
        if !info.synced {
            return Some(format!("catching up with member {address}: first round not finished"));
        }
        let behind = info.logs.iter().map(|(log, (cursor, seq))| (seq.saturating_sub(*cursor), log)).max();
        if let Some((lag, log)) = behind
            && lag > inputs.lag_max
        {
            return Some(format!(
                "catching up with member {address}: {lag} entries behind on log {log} (ready within {})",
                inputs.lag_max
            ));
        }
    }
    None
}

/// Re-evaluates readiness until `shutdown`, keeping `cell` and the health service in step
/// and logging each change.
pub(crate) fn spawn(
    ctx: crate::services::Ctx,
    lag_max: u64,
    health: tonic_health::server::HealthReporter,
    mut shutdown: watch::Receiver<bool>,
) {
    tokio::spawn(async move {
        let mut first = true;
        loop {
            let peers = ctx.membership.table.snapshot();
            let next = evaluate(&Inputs {
                draining: ctx.state.draining.load(std::sync::atomic::Ordering::SeqCst),
                writable: ctx.store.is_writable(),
                peers: &peers,
                lag_max,
            });
            let changed = ctx.state.readiness.set(next.clone());
            if changed || first {
                match &next {
                    None => {
                        tracing::info!("ready");
                        health.set_service_status(READY_SERVICE, tonic_health::ServingStatus::Serving).await;
                    }
                    Some(reason) => {
                        tracing::info!(%reason, "not ready");
                        health
                            .set_service_status(READY_SERVICE, tonic_health::ServingStatus::NotServing)
                            .await;
                    }
                }
                first = false;
            }
            tokio::select! {
                _ = tokio::time::sleep(EVERY) => {}
                _ = shutdown.wait_for(|s| *s) => return,
            }
        }
    });
}

#[cfg(test)]
mod tests {
    use std::time::Instant;

    use plait_core::LogId;

    use super::*;

    fn peer(connected: bool, synced: bool, logs: &[(u8, u64, u64)]) -> PeerInfo {
        PeerInfo {
            connected,
            synced,
            last_contact: connected.then(Instant::now),
            logs: logs.iter().map(|&(id, cursor, seq)| (LogId([id; 32]), (cursor, seq))).collect(),
            ..PeerInfo::default()
        }
    }

    fn ready(draining: bool, writable: bool, peers: &[(String, PeerInfo)]) -> Option<String> {
        evaluate(&Inputs { draining, writable, peers, lag_max: 100 })
    }

    /// A lone replica is ready; draining and a poisoned store each make it not ready.
    #[test]
    fn own_state_decides_without_peers() {
        assert_eq!(ready(false, true, &[]), None);
        assert!(ready(true, true, &[]).unwrap().contains("draining"));
        assert!(ready(false, false, &[]).unwrap().contains("poisoned"));
        assert!(ready(true, false, &[]).unwrap().contains("poisoned"), "poisoned is the graver reason");
    }

    /// A reachable member must have finished a round, and every log must be within the
    /// lag bound of what that member reported; exactly the bound is still ready.
    #[test]
    fn reachable_members_must_be_caught_up() {
        let a = "db-1:7400".to_owned();
        assert!(ready(false, true, &[(a.clone(), peer(true, false, &[]))]).unwrap().contains("first round"));
        assert_eq!(ready(false, true, &[(a.clone(), peer(true, true, &[(1, 900, 1000), (2, 5, 5)]))]), None);
        let behind =
            ready(false, true, &[(a.clone(), peer(true, true, &[(1, 899, 1000), (2, 0, 0)]))]).unwrap();
        assert!(behind.contains("101 entries behind") && behind.contains("db-1:7400"), "{behind}");
    }

    /// An unreachable member does not hold readiness back, but one never tried yet does
    /// (a replica just started has not learned whether it is behind).
    #[test]
    fn unreachable_members_do_not_count_but_untried_ones_do() {
        let mut down = peer(false, false, &[(1, 0, 1_000_000)]);
        down.last_error = "connection refused".into();
        let peers = vec![("db-2:7400".to_owned(), down), ("db-1:7400".to_owned(), peer(true, true, &[]))];
        assert_eq!(ready(false, true, &peers), None);
        let untried = vec![("db-2:7400".to_owned(), PeerInfo::default())];
        assert!(ready(false, true, &untried).unwrap().contains("not yet tried"));
    }
}
