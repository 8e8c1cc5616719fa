//! The `PlaitBackup` reconciler: starts one backup job (`Admin.StartBackup`) on the first
//! ready replica of the cluster, records it, and polls it (`Admin.GetBackupJob`) until it
//! ends; no pass waits for a backup to finish. A failed attempt is recorded (status and a
//! Warning event) and retried with backoff, up to [`ATTEMPTS_MAX`] attempts; a backup
//! that completed or failed for good is never run again.
//!
//! The job is recorded (replica and job id) before it is started, so an operator that
//! dies in between, or a new leader, polls the same replica: it never starts a second
//! run of one attempt elsewhere. A job the replica no longer knows (it restarted) is a
//! failed attempt; a replica that cannot be reached to poll is waited for up to
//! [`UNPOLLED_MAX`], then that too is a failed attempt.

use std::sync::Arc;
use std::sync::atomic::Ordering;
use std::time::Duration;

use k8s_openapi::apimachinery::pkg::apis::meta::v1::Time;
use kube::api::{Patch, PatchParams};
use kube::runtime::controller::Action;
use kube::{Api, Resource, ResourceExt};

use crate::cluster::{Error, FIELD_MANAGER, first_ready};
use crate::context::{Context, now_seconds, retry_delay, truncate};
use crate::crd::{BackupCheckpoint, BackupKind, PlaitBackup, PlaitBackupStatus, PlaitCluster};
use crate::plan::{DEFAULT_DESTINATION, backup_destinations};
use crate::replicas::{BackupJob, BackupOutcome, BackupRequest};

/// Attempts before a backup is marked `Failed` for good.
pub const ATTEMPTS_MAX: i32 = 5;
/// How long a running job's replica may go unanswering to polls before the attempt
/// counts as failed.
pub(crate) const UNPOLLED_MAX: Duration = Duration::from_secs(120);
/// Bounds of the wait between polls of a running job: a tenth of its age, within these.
const POLL_MIN: Duration = Duration::from_secs(1);
const POLL_MAX: Duration = Duration::from_secs(15);

/// The wait before the next poll of a job running for `age`.
pub(crate) fn poll_after(age: Duration) -> Duration {
    (age / 10).clamp(POLL_MIN, POLL_MAX)
}

fn key(backup: &PlaitBackup) -> String {
    format!("PlaitBackup/{}/{}", backup.namespace().unwrap_or_default(), backup.name_any())
}

/// One reconcile pass of a backup.
pub async fn reconcile(backup: Arc<PlaitBackup>, ctx: Arc<Context>) -> Result<Action, Error> {
    ctx.metrics.reconciles.fetch_add(1, Ordering::Relaxed);
    let started = std::time::Instant::now();
    let result = reconcile_inner(&backup, &ctx).await;
    ctx.metrics.observe_reconcile("backup", started.elapsed());
    match &result {
        Ok(_) => ctx.succeeded(&key(&backup)),
        Err(_) => {
            ctx.metrics.reconcile_errors.fetch_add(1, Ordering::Relaxed);
        }
    }
    result
}

pub(crate) fn error_policy(backup: Arc<PlaitBackup>, error: &Error, ctx: Arc<Context>) -> Action {
    let delay = ctx.backoff(&key(&backup));
    tracing::warn!(backup = %backup.name_any(), "reconcile failed, retrying in {delay:?}: {error}");
    Action::requeue(delay)
}

async fn reconcile_inner(cached: &PlaitBackup, ctx: &Context) -> Result<Action, Error> {
    // The cache may be a step behind our own last status write: read the backup fresh so
    // a run that just completed is not taken for an interrupted one.
    let namespace = cached.namespace().ok_or_else(|| Error::Invalid("a PlaitBackup is namespaced".into()))?;
    let backups: Api<PlaitBackup> = Api::namespaced(ctx.client.clone(), &namespace);
    let Some(backup) = backups.get_opt(&cached.name_any()).await? else {
        return Ok(Action::await_change());
    };
    let backup = &backup;
    let mut status = backup.status.clone().unwrap_or_default();
    if matches!(status.phase.as_deref(), Some("Completed" | "Failed")) {
        return Ok(Action::await_change());
    }
    // Our own status write after a failed attempt wakes the controller at once; the
    // backoff is kept by the time recorded in the status, not by the requeue alone.
    let now = now_seconds(ctx.clock.as_ref());
    if let Some(next) = status.next_attempt_at.as_ref().map(|t| t.0)
        && next > now
    {
        let wait = Duration::try_from(next.duration_since(now)).unwrap_or(Duration::ZERO);
        return Ok(Action::requeue(wait.max(Duration::from_secs(1))));
    }
    let reference = backup.object_ref(&());
    let clusters: Api<PlaitCluster> = Api::namespaced(ctx.client.clone(), &namespace);

    if status.phase.as_deref() == Some("Running")
        && let (Some(job), Some(replica)) = (status.job.clone(), status.replica.clone())
    {
        return poll(backup, ctx, &clusters, status, &job, &replica).await;
    }

    // A new attempt. (A run left `Running` with no job recorded, by an operator of
    // before background jobs, counts as an attempt and is run again: a backup run is
    // idempotent up to taking one more snapshot.)
    status.attempts += 1;
    status.observed_generation = backup.metadata.generation;
    let Some(cluster) = clusters.get_opt(&backup.spec.cluster).await? else {
        let message = format!("PlaitCluster {} not found in namespace {namespace}", backup.spec.cluster);
        return failed_attempt(backup, ctx, status, message).await;
    };
    // The destination is a name the replicas were started with; its URL is the cluster's.
    let name = backup.spec.destination.clone().unwrap_or_else(|| DEFAULT_DESTINATION.to_owned());
    let destinations = backup_destinations(&cluster.spec);
    let Some((_, url)) = destinations.iter().find(|(n, _)| *n == name) else {
        // Nothing a retry can fix: the spec is fixed at creation.
        status.attempts = ATTEMPTS_MAX;
        let message = if destinations.is_empty() {
            format!("no destination: set spec.backup.destination of PlaitCluster {}", backup.spec.cluster)
        } else {
            let names: Vec<&str> = destinations.iter().map(|(n, _)| n.as_str()).collect();
            format!(
                "PlaitCluster {} has no backup destination named {name:?}: spec.destination names one of {}",
                backup.spec.cluster,
                names.join(", ")
            )
        };
        return failed_attempt(backup, ctx, status, message).await;
    };
    let url = url.clone();
    let replicas =
        cluster.status.as_ref().map(|s| s.replicas).filter(|n| *n > 0).unwrap_or(cluster.spec.replicas);
    let secured = crate::security::access(&cluster, ctx, &namespace).await?;
    let (ordinal, _) = match first_ready(ctx, &namespace, &backup.spec.cluster, replicas, &secured).await {
        Ok(found) => found,
        Err(problem) => {
            let message = format!("no ready replica to take the backup: {problem}");
            return failed_attempt(backup, ctx, status, message).await;
        }
    };
    let replica = format!("{}-{ordinal}", backup.spec.cluster);
    // Retention of full chains applies to the cluster's own destination only.
    let retain_full = cluster
        .spec
        .backup
        .as_ref()
        .filter(|_| name == DEFAULT_DESTINATION)
        .map(|b| u32::try_from(b.retention.full_chains).unwrap_or(0))
        .unwrap_or(0);
    // One job per attempt: asking again for the same job is answered with it.
    let uid = backup.metadata.uid.clone().unwrap_or_else(|| backup.name_any());
    let job = format!("{uid}-{}", status.attempts);

    status.phase = Some("Running".into());
    status.replica = Some(replica.clone());
    status.job = Some(job.clone());
    status.progress = None;
    status.location = Some(url.clone());
    status.started_at = Some(Time(now_seconds(ctx.clock.as_ref())));
    status.error = None;
    status.next_attempt_at = None;
    // Recorded before it starts: whoever reconciles next polls this replica for this job.
    write(backup, ctx, &status).await?;
    ctx.event(
        &reference,
        false,
        "BackupStarted",
        "Backup",
        format!(
            "{:?} backup of {} through {replica} to {name} ({url}), job {job}",
            backup.spec.kind, backup.spec.cluster
        ),
    )
    .await;

    let request = BackupRequest {
        destination: name.clone(),
        logs: backup.spec.logs.clone(),
        delta: backup.spec.kind == BackupKind::Delta,
        retain_full,
    };
    let started = match secured.admin_target(ctx, &namespace, &backup.spec.cluster, ordinal) {
        Ok(target) => ctx.admin.start_backup(&target, &job, request).await,
        Err(why) => Err(why),
    };
    match started {
        Ok(state) => follow(backup, ctx, status, &replica, state).await,
        Err(error) => {
            failed_attempt(
                backup,
                ctx,
                status,
                format!("starting the backup through {replica} failed: {error}"),
            )
            .await
        }
    }
}

/// One poll of the job a running backup recorded.
async fn poll(
    backup: &PlaitBackup,
    ctx: &Context,
    clusters: &Api<PlaitCluster>,
    mut status: PlaitBackupStatus,
    job: &str,
    replica: &str,
) -> Result<Action, Error> {
    let namespace = backup.namespace().unwrap_or_default();
    let ordinal = replica
        .strip_prefix(&format!("{}-", backup.spec.cluster))
        .and_then(|n| n.parse::<i32>().ok())
        .filter(|n| *n >= 0);
    let Some(ordinal) = ordinal else {
        let message =
            format!("the recorded replica {replica} is not one of PlaitCluster {}", backup.spec.cluster);
        return failed_attempt(backup, ctx, status, message).await;
    };
    let Some(cluster) = clusters.get_opt(&backup.spec.cluster).await? else {
        let message = format!("PlaitCluster {} not found in namespace {namespace}", backup.spec.cluster);
        return failed_attempt(backup, ctx, status, message).await;
    };
    let secured = crate::security::access(&cluster, ctx, &namespace).await?;
    let answer = match secured.admin_target(ctx, &namespace, &backup.spec.cluster, ordinal) {
        Ok(target) => ctx.admin.backup_job(&target, job).await,
        Err(why) => Err(why),
    };
    match answer {
        Ok(Some(state)) => {
            ctx.polled(job);
            follow(backup, ctx, status, replica, state).await
        }
        Ok(None) => {
            let message = format!(
                "{replica} no longer knows backup job {job} (it restarted); nothing of that run was recorded"
            );
            failed_attempt(backup, ctx, status, message).await
        }
        Err(error) => {
            let now = now_seconds(ctx.clock.as_ref());
            let since = ctx.unpolled_since(job, now);
            let unpolled = Duration::try_from(now.duration_since(since)).unwrap_or(Duration::ZERO);
            if unpolled >= UNPOLLED_MAX {
                let message = format!(
                    "cannot reach {replica} to follow backup job {job} for {} s: {error}",
                    unpolled.as_secs()
                );
                return failed_attempt(backup, ctx, status, message).await;
            }
            let note = format!("cannot reach {replica} to follow backup job {job}; waiting: {error}");
            if status.error.as_deref() != Some(note.as_str()) {
                status.error = Some(truncate(note, 4000));
                write(backup, ctx, &status).await?;
            }
            Ok(Action::requeue(POLL_MAX))
        }
    }
}

/// Acts on what the replica says of the job: records progress and polls again later,
/// or records how it ended.
async fn follow(
    backup: &PlaitBackup,
    ctx: &Context,
    mut status: PlaitBackupStatus,
    replica: &str,
    state: BackupJob,
) -> Result<Action, Error> {
    match state {
        BackupJob::Running { logs_done, logs_total, .. } => {
            let progress = Some(format!("{logs_done}/{logs_total} logs"));
            if status.progress != progress || status.error.is_some() {
                status.progress = progress;
                status.error = None;
                write(backup, ctx, &status).await?;
            }
            let now = now_seconds(ctx.clock.as_ref());
            let age = status
                .started_at
                .as_ref()
                .and_then(|t| Duration::try_from(now.duration_since(t.0)).ok())
                .unwrap_or(Duration::ZERO);
            Ok(Action::requeue(poll_after(age)))
        }
        BackupJob::Completed(outcome) => completed(backup, ctx, status, outcome).await,
        BackupJob::Failed(error) => {
            failed_attempt(backup, ctx, status, format!("backup through {replica} failed: {error}")).await
        }
    }
}

/// The attempt's job ended one way or the other: its poll failures, if any, go.
fn forget_poll_failures(ctx: &Context, status: &PlaitBackupStatus) {
    if let Some(job) = &status.job {
        ctx.polled(job);
    }
}

/// Records a completed backup: its id, size and each log's checkpoint.
async fn completed(
    backup: &PlaitBackup,
    ctx: &Context,
    mut status: PlaitBackupStatus,
    outcome: BackupOutcome,
) -> Result<Action, Error> {
    ctx.metrics.backups_completed.fetch_add(1, Ordering::Relaxed);
    forget_poll_failures(ctx, &status);
    status.phase = Some("Completed".into());
    status.progress = None;
    status.error = None;
    status.backup_id = Some(outcome.backup_id.clone());
    status.size_bytes = outcome.objects.iter().map(|o| i64::try_from(o.bytes).unwrap_or(i64::MAX)).sum();
    status.checkpoints = outcome
        .objects
        .iter()
        .map(|o| BackupCheckpoint {
            log: o.name.clone(),
            kind: o.kind.clone(),
            seq: i64::try_from(o.seq).unwrap_or(i64::MAX),
            state_root: o.state_root.clone(),
            bytes: i64::try_from(o.bytes).unwrap_or(i64::MAX),
            key: o.key.clone(),
        })
        .collect();
    status.completed_at = Some(Time(now_seconds(ctx.clock.as_ref())));
    write(backup, ctx, &status).await?;
    ctx.event(
        &backup.object_ref(&()),
        false,
        "BackupCompleted",
        "Backup",
        format!(
            "backup {} completed: {} log(s), {} bytes",
            outcome.backup_id,
            outcome.objects.len(),
            status.size_bytes
        ),
    )
    .await;
    Ok(Action::await_change())
}

/// Records a failed attempt: `Pending` with the error and a retry after backoff, or
/// `Failed` for good once the attempts are used up.
async fn failed_attempt(
    backup: &PlaitBackup,
    ctx: &Context,
    mut status: PlaitBackupStatus,
    message: String,
) -> Result<Action, Error> {
    ctx.metrics.backups_failed.fetch_add(1, Ordering::Relaxed);
    forget_poll_failures(ctx, &status);
    let last = status.attempts >= ATTEMPTS_MAX;
    status.phase = Some(if last { "Failed" } else { "Pending" }.into());
    status.error = Some(truncate(message.clone(), 4000));
    status.progress = None;
    let delay = backoff(status.attempts);
    status.next_attempt_at = (!last).then(|| {
        let delay = jiff::SignedDuration::try_from(delay).unwrap_or(jiff::SignedDuration::MAX);
        Time(now_seconds(ctx.clock.as_ref()).saturating_add(delay).unwrap_or(jiff::Timestamp::MAX))
    });
    write(backup, ctx, &status).await?;
    let (reason, note) = if last {
        ("BackupFailed", format!("giving up after {} attempts: {message}", status.attempts))
    } else {
        (
            "BackupAttemptFailed",
            format!("attempt {} failed, retrying in {delay:?}: {message}", status.attempts),
        )
    };
    ctx.event(&backup.object_ref(&()), true, reason, "Backup", note).await;
    Ok(if last { Action::await_change() } else { Action::requeue(delay) })
}

/// The wait before the next attempt after `attempts` attempts.
pub(crate) fn backoff(attempts: i32) -> Duration {
    retry_delay(u32::try_from(attempts).unwrap_or(1).max(1))
}

async fn write(backup: &PlaitBackup, ctx: &Context, status: &PlaitBackupStatus) -> Result<(), Error> {
    let api: Api<PlaitBackup> = Api::namespaced(ctx.client.clone(), &backup.namespace().unwrap_or_default());
    let body = serde_json::json!({
        "apiVersion": PlaitBackup::api_version(&()),
        "kind": PlaitBackup::kind(&()),
        "metadata": { "name": backup.name_any() },
        "status": status,
    });
    api.patch_status(&backup.name_any(), &PatchParams::apply(FIELD_MANAGER).force(), &Patch::Apply(body))
        .await?;
    Ok(())
}
