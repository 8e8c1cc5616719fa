//! Leader election on a `coordination.k8s.io` Lease, so that two or more operator pods
//! can run and exactly one of them reconciles.
//!
//! The protocol is the one Kubernetes' own controllers use. A candidate reads the Lease;
//! it takes the Lease when nobody holds it, or when the record (holder and renew time)
//! has not changed for a whole lease duration *as measured on the candidate's own
//! monotonic clock* since the candidate first saw that record. Clocks of different
//! machines are never compared, so skew between nodes does not matter. Every write is a
//! create or a replace at the resource version read, so two candidates racing for the
//! Lease cannot both win: the API server refuses the second with a conflict.
//!
//! The leader renews every retry period. When it has not renewed for the renew deadline
//! (shorter than the lease duration), it stops leading before anyone else may take the
//! Lease: the caller stops reconciling at once (the process exits and its pod restarts
//! as a candidate). On a graceful shutdown the leader releases the Lease, so a standby
//! takes over without waiting out the lease duration.

use std::time::Duration;

use k8s_openapi::api::coordination::v1::{Lease, LeaseSpec};
use k8s_openapi::apimachinery::pkg::apis::meta::v1::{MicroTime, ObjectMeta};
use kube::Api;
use kube::api::PostParams;
use tokio::time::Instant;

use crate::context::Clock;

/// How an operator takes part in the election.
#[derive(Clone, Debug)]
pub struct LeaseSettings {
    /// The Lease's namespace (the operator's own).
    pub namespace: String,
    /// The Lease's name; every operator of one installation uses the same.
    pub name: String,
    /// This candidate, unique among them (the pod name).
    pub identity: String,
    /// How long a Lease not renewed stays held; others wait this long before taking it.
    pub lease_duration: Duration,
    /// How long the leader keeps leading while its renewals fail. Shorter than
    /// `lease_duration`, so it stops before another candidate can take the Lease.
    pub renew_deadline: Duration,
    /// How often candidates try to take the Lease and the leader renews it.
    pub retry_period: Duration,
}

impl LeaseSettings {
    /// The settings are usable: every duration positive, the renew deadline shorter
    /// than the lease duration and longer than the retry period.
    pub fn validate(&self) -> Result<(), String> {
        if self.name.is_empty() || self.namespace.is_empty() || self.identity.is_empty() {
            return Err("the lease name, its namespace and the candidate's identity must not be empty".into());
        }
        if self.lease_duration.as_secs() < 1 || self.lease_duration.as_secs() > i32::MAX as u64 {
            return Err(format!("the lease duration must be between one second and {} s", i32::MAX));
        }
        if self.renew_deadline >= self.lease_duration {
            return Err(format!(
                "the renew deadline ({:?}) must be shorter than the lease duration ({:?})",
                self.renew_deadline, self.lease_duration
            ));
        }
        if self.retry_period.is_zero() || self.retry_period >= self.renew_deadline {
            return Err(format!(
                "the retry period ({:?}) must be positive and shorter than the renew deadline ({:?})",
                self.retry_period, self.renew_deadline
            ));
        }
        Ok(())
    }
}

/// The record last seen on the Lease, and when this candidate first saw it.
#[derive(Clone, Debug)]
struct Observed {
    holder: Option<String>,
    renew_time: Option<MicroTime>,
    duration: Duration,
    seen_at: Instant,
}

/// One candidate's view of the election.
pub struct Elector {
    api: Api<Lease>,
    settings: LeaseSettings,
    clock: std::sync::Arc<dyn Clock>,
    observed: Option<Observed>,
}

/// What one attempt found.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum Attempt {
    /// This candidate holds the Lease (took or renewed it).
    Leading,
    /// Another holds it (named when known) and has renewed it within its duration, or
    /// another candidate won a race to write it.
    Following(Option<String>),
}

impl Elector {
    pub fn new(client: kube::Client, settings: LeaseSettings, clock: std::sync::Arc<dyn Clock>) -> Elector {
        Elector { api: Api::namespaced(client, &settings.namespace), settings, clock, observed: None }
    }

    pub fn settings(&self) -> &LeaseSettings {
        &self.settings
    }

    fn now(&self) -> MicroTime {
        MicroTime(self.clock.now())
    }

    fn lease_seconds(&self) -> i32 {
        i32::try_from(self.settings.lease_duration.as_secs()).unwrap_or(i32::MAX)
    }

    /// Notes the record read, restarting the expiry clock when it changed.
    fn observe(&mut self, spec: &LeaseSpec) {
        let holder = spec.holder_identity.clone().filter(|h| !h.is_empty());
        let duration = Duration::from_secs(spec.lease_duration_seconds.unwrap_or(0).max(0) as u64);
        let changed = self
            .observed
            .as_ref()
            .is_none_or(|o| o.holder != holder || o.renew_time != spec.renew_time || o.duration != duration);
        if changed {
            self.observed = Some(Observed {
                holder,
                renew_time: spec.renew_time.clone(),
                duration,
                seen_at: Instant::now(),
            });
        }
    }

    /// One attempt to take or renew the Lease.
    pub async fn try_acquire_or_renew(&mut self) -> Result<Attempt, kube::Error> {
        let now = self.now();
        let Some(lease) = self.api.get_opt(&self.settings.name).await? else {
            let lease = Lease {
                metadata: ObjectMeta {
                    name: Some(self.settings.name.clone()),
                    namespace: Some(self.settings.namespace.clone()),
                    labels: Some(
                        [("app.kubernetes.io/managed-by".to_owned(), "plait-operator".to_owned())].into(),
                    ),
                    ..ObjectMeta::default()
                },
                spec: Some(LeaseSpec {
                    holder_identity: Some(self.settings.identity.clone()),
                    lease_duration_seconds: Some(self.lease_seconds()),
                    acquire_time: Some(now.clone()),
                    renew_time: Some(now),
                    lease_transitions: Some(0),
                    ..LeaseSpec::default()
                }),
            };
            return match self.api.create(&PostParams::default(), &lease).await {
                Ok(created) => {
                    self.observe(created.spec.as_ref().expect("a created Lease has its spec"));
                    Ok(Attempt::Leading)
                }
                // Another candidate created it first.
                Err(kube::Error::Api(e)) if e.code == 409 => Ok(Attempt::Following(None)),
                Err(e) => Err(e),
            };
        };
        let spec = lease.spec.clone().unwrap_or_default();
        self.observe(&spec);
        let observed = self.observed.clone().expect("observed just now");
        let ours = observed.holder.as_deref() == Some(self.settings.identity.as_str());
        if !ours
            && let Some(holder) = &observed.holder
            && observed.seen_at.elapsed() < observed.duration
        {
            return Ok(Attempt::Following(Some(holder.clone())));
        }
        let transitions = spec.lease_transitions.unwrap_or(0);
        let next = LeaseSpec {
            holder_identity: Some(self.settings.identity.clone()),
            lease_duration_seconds: Some(self.lease_seconds()),
            acquire_time: if ours { spec.acquire_time.clone() } else { Some(now.clone()) },
            renew_time: Some(now),
            lease_transitions: Some(if ours { transitions } else { transitions.saturating_add(1) }),
            ..spec
        };
        let replacement = Lease { metadata: lease.metadata.clone(), spec: Some(next) };
        match self.api.replace(&self.settings.name, &PostParams::default(), &replacement).await {
            Ok(written) => {
                self.observe(written.spec.as_ref().expect("a written Lease has its spec"));
                Ok(Attempt::Leading)
            }
            // Written by another since it was read: whoever wrote it holds it now.
            Err(kube::Error::Api(e)) if e.code == 409 => Ok(Attempt::Following(None)),
            Err(e) => Err(e),
        }
    }

    /// Gives the Lease up, if this candidate still holds it: no holder, a one-second
    /// duration, so a standby takes it at its next attempt.
    pub async fn release(&mut self) -> Result<(), kube::Error> {
        let Some(lease) = self.api.get_opt(&self.settings.name).await? else { return Ok(()) };
        let spec = lease.spec.clone().unwrap_or_default();
        if spec.holder_identity.as_deref() != Some(self.settings.identity.as_str()) {
            return Ok(());
        }
        let next = LeaseSpec {
            holder_identity: None,
            lease_duration_seconds: Some(1),
            renew_time: Some(self.now()),
            ..spec
        };
        let replacement = Lease { metadata: lease.metadata.clone(), spec: Some(next) };
        match self.api.replace(&self.settings.name, &PostParams::default(), &replacement).await {
            Ok(_) => Ok(()),
            // Taken over meanwhile: nothing of ours to release.
            Err(kube::Error::Api(e)) if e.code == 409 => Ok(()),
            Err(e) => Err(e),
        }
    }

    /// Waits until this candidate leads (or `stop` resolves: `false`), trying every
    /// retry period.
    pub async fn acquire(&mut self, stop: &mut (impl Future<Output = ()> + Unpin)) -> bool {
        let mut following: Option<Option<String>> = None;
        loop {
            match self.try_acquire_or_renew().await {
                Ok(Attempt::Leading) => return true,
                Ok(Attempt::Following(holder)) => {
                    if following.as_ref() != Some(&holder) && holder.is_some() {
                        tracing::info!(
                            leader = holder.as_deref().unwrap_or(""),
                            lease = %self.settings.name,
                            "standing by: another operator leads"
                        );
                    }
                    following = Some(holder);
                }
                Err(error) => {
                    tracing::warn!(lease = %self.settings.name, "cannot read or take the lease: {error}")
                }
            }
            tokio::select! {
                () = &mut *stop => return false,
                () = tokio::time::sleep(jittered(self.settings.retry_period)) => {}
            }
        }
    }

    /// Renews the Lease every retry period while leading; returns when a renewal has
    /// not succeeded within the renew deadline, or the Lease was taken: leadership is
    /// lost, and the caller must stop acting on it at once.
    pub async fn keep(&mut self) -> LostLease {
        let mut renewed = Instant::now();
        loop {
            tokio::time::sleep(self.settings.retry_period).await;
            let left = self.settings.renew_deadline.saturating_sub(renewed.elapsed());
            match tokio::time::timeout(left, self.try_acquire_or_renew()).await {
                Ok(Ok(Attempt::Leading)) => renewed = Instant::now(),
                Ok(Ok(Attempt::Following(holder))) => {
                    return LostLease(format!(
                        "the lease was taken by {}",
                        holder.as_deref().unwrap_or("another operator")
                    ));
                }
                Ok(Err(error)) => {
                    tracing::warn!(lease = %self.settings.name, "renewing the lease failed: {error}")
                }
                Err(_) => {}
            }
            if renewed.elapsed() >= self.settings.renew_deadline {
                return LostLease(format!(
                    "the lease was not renewed within the renew deadline ({:?})",
                    self.settings.renew_deadline
                ));
            }
        }
    }
}

/// Leadership lost while leading, and why.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[error("leadership lost: {0}")]
pub struct LostLease(pub String);

/// `period` plus up to a fifth of it, so candidates do not all try in step.
fn jittered(period: Duration) -> Duration {
    period + period.mul_f64(rand::random::<f64>() * 0.2)
}

#[cfg(test)]
mod tests {
    use super::*;

    fn settings() -> LeaseSettings {
        LeaseSettings {
            namespace: "plait-system".into(),
            name: "plait-operator".into(),
            identity: "plait-operator-0".into(),
            lease_duration: Duration::from_secs(15),
            renew_deadline: Duration::from_secs(10),
            retry_period: Duration::from_secs(2),
        }
    }

    /// The defaults are valid; a renew deadline not shorter than the lease (a leader
    /// that could still act once another took over), or a retry period not shorter than
    /// the deadline, or an empty identity, is refused with the reason.
    #[test]
    fn settings_are_checked() {
        assert_eq!(settings().validate(), Ok(()));
        let too_long = LeaseSettings { renew_deadline: Duration::from_secs(15), ..settings() };
        assert!(too_long.validate().unwrap_err().contains("renew deadline"));
        let slow = LeaseSettings { retry_period: Duration::from_secs(10), ..settings() };
        assert!(slow.validate().unwrap_err().contains("retry period"));
        let anonymous = LeaseSettings { identity: String::new(), ..settings() };
        assert!(anonymous.validate().is_err());
        let short = LeaseSettings { lease_duration: Duration::from_millis(500), ..settings() };
        assert!(short.validate().is_err());
    }
}
