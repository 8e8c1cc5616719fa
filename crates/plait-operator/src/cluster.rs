//! The `PlaitCluster` reconciler: carries out what `plan` decides. One pass validates the
//! spec, makes sure the writer key exists, probes the replicas, takes at most one scaling
//! step (a scale-down only after `Admin.Drain` succeeds), applies the owned objects with
//! server-side apply, sends the member set, creates scheduled backups, and writes the
//! status. Every step is idempotent, so a pass interrupted anywhere (the operator
//! restarted) is completed by the next one.

use std::collections::BTreeMap;
use std::sync::Arc;
use std::sync::atomic::Ordering;
use std::time::Duration;

use futures::future::join_all;
use jiff::Timestamp;
use k8s_openapi::ByteString;
use k8s_openapi::api::apps::v1::StatefulSet;
use k8s_openapi::api::core::v1::{Pod, Secret};
use k8s_openapi::api::networking::v1::NetworkPolicy;
use k8s_openapi::apimachinery::pkg::apis::meta::v1::{ObjectMeta, Time};
use kube::api::{DeleteParams, ListParams, Patch, PatchParams, PostParams};
use kube::runtime::controller::Action;
use kube::{Api, Resource, ResourceExt};
use serde::Serialize;
use serde::de::DeserializeOwned;

use crate::context::{Context, now_seconds};
use crate::crd::{BackupKind, PlaitBackup, PlaitBackupSpec, PlaitCluster, PlaitClusterStatus};
use crate::plan::{self, Observation, Probed, ScaleStep};
use crate::replicas::{DRAIN_TIMEOUT, ReplicaStatus};
use crate::schedule::{self, Schedule};
use crate::security::{self, Secured};
use crate::storage;

/// The field manager of everything the operator applies.
pub const FIELD_MANAGER: &str = "plait-operator";
/// Label on every `PlaitBackup` naming its cluster.
pub const CLUSTER_LABEL: &str = "plait.dev/cluster";
/// Label on the `PlaitBackup`s the schedule created.
pub const SCHEDULED_LABEL: &str = "plait.dev/scheduled";

/// How often a healthy cluster is looked at again (readiness and lag come from the
/// replicas, which Kubernetes does not tell the operator about).
pub(crate) const STEADY_REQUEUE: Duration = Duration::from_secs(30);
/// How often a cluster that is still converging is looked at again.
pub(crate) const CONVERGING_REQUEUE: Duration = Duration::from_secs(3);

/// Failures of a reconcile pass; all are retried with backoff.
#[derive(Debug, thiserror::Error)]
pub enum Error {
    #[error("kubernetes API: {0}")]
    Kube(#[from] kube::Error),
    #[error("{0}")]
    Invalid(String),
}

fn key(cluster: &PlaitCluster) -> String {
    format!("PlaitCluster/{}/{}", cluster.namespace().unwrap_or_default(), cluster.name_any())
}

/// One reconcile pass of a cluster.
pub async fn reconcile(cluster: Arc<PlaitCluster>, ctx: Arc<Context>) -> Result<Action, Error> {
    ctx.metrics.reconciles.fetch_add(1, Ordering::Relaxed);
    let started = std::time::Instant::now();
    let result = reconcile_inner(&cluster, &ctx).await;
    ctx.metrics.observe_reconcile("cluster", started.elapsed());
    // A pass that returns `Ok` may still have backed off (an invalid spec, a blocked
    // drain, a failed member update): it forgets the failures itself when it ends clean.
    if result.is_err() {
        ctx.metrics.reconcile_errors.fetch_add(1, Ordering::Relaxed);
    }
    result
}

/// What the controller does after a failed pass: log it, surface it, and retry later,
/// waiting longer after each consecutive failure.
pub(crate) fn error_policy(cluster: Arc<PlaitCluster>, error: &Error, ctx: Arc<Context>) -> Action {
    let delay = ctx.backoff(&key(&cluster));
    tracing::warn!(cluster = %cluster.name_any(), "reconcile failed, retrying in {delay:?}: {error}");
    Action::requeue(delay)
}

async fn reconcile_inner(cached: &PlaitCluster, ctx: &Context) -> Result<Action, Error> {
    let namespace =
        cached.namespace().ok_or_else(|| Error::Invalid("a PlaitCluster is namespaced".into()))?;
    // The cache may be a step behind our own last status write (the member generation
    // above all): read the cluster fresh.
    let clusters: Api<PlaitCluster> = Api::namespaced(ctx.client.clone(), &namespace);
    let Some(cluster) = clusters.get_opt(&cached.name_any()).await? else {
        ctx.metrics.set_cluster(&namespace, &cached.name_any(), None);
        ctx.succeeded(&key(cached));
        return Ok(Action::await_change());
    };
    let cluster = &cluster;
    let name = cluster.name_any();
    let reference = cluster.object_ref(&());
    let previous = cluster.status.clone().unwrap_or_default();
    let now = now_seconds(ctx.clock.as_ref());
    let desired_replicas = cluster.spec.replicas;

    // Paused: say so, and touch nothing else until the annotation goes (its removal is a
    // change to the cluster, which wakes this reconcile).
    if plan::paused(cluster) {
        let mut status = previous.clone();
        let message = format!(
            "paused by the {} annotation: nothing is applied, scaled, drained, sent to replicas or \
             backed up on schedule until it is removed",
            plan::PAUSED_ANNOTATION
        );
        let conditions = plan::paused_conditions(
            &previous.conditions,
            cluster.metadata.generation,
            message.clone(),
            &Time(now),
        );
        if conditions != previous.conditions {
            if !has_condition_status(&previous, "Paused", "True") {
                ctx.event(&reference, false, "Paused", "Pause", message.clone()).await;
            }
            status.conditions = conditions;
            patch_status(cluster, ctx, &status).await?;
        }
        ctx.succeeded(&key(cluster));
        return Ok(Action::await_change());
    }

    let mut obs = Observation {
        generation: cluster.metadata.generation,
        desired_replicas,
        members_generation: u64::try_from(previous.members_generation).unwrap_or(0),
        member_addresses: previous.member_addresses.clone(),
        backup_configured: cluster.spec.backup.is_some(),
        image: previous.image.clone(),
        ..Observation::default()
    };

    // Never half-apply an invalid spec: report it and touch nothing else.
    let problem = match plan::validate(&cluster.spec) {
        Err(problem) => Some(problem),
        Ok(()) => ensure_writer_key(cluster, ctx, &namespace).await?,
    };
    if let Some(problem) = problem {
        if previous.phase.as_deref() != Some("Failed")
            || !has_condition_message(&previous, "Degraded", &problem)
        {
            ctx.event(&reference, true, "InvalidSpec", "Validate", problem.clone()).await;
        }
        obs.invalid_spec = Some(problem);
        obs.replicas = previous.replicas;
        write_status(cluster, ctx, &previous, &obs, &now, BackupSummary::from_status(&previous)).await?;
        return Ok(Action::requeue(ctx.backoff(&key(cluster))));
    }

    let statefulsets: Api<StatefulSet> = Api::namespaced(ctx.client.clone(), &namespace);
    let existing_set = statefulsets.get_opt(&name).await?;
    // A cluster made before its image was recorded keeps the image its replicas run.
    let with_image;
    let cluster = match existing_set.as_ref().and_then(plan::running_image) {
        Some(running) if previous.image.is_none() => {
            let mut copy = cluster.clone();
            copy.status.get_or_insert_with(PlaitClusterStatus::default).image = Some(running);
            with_image = copy;
            &with_image
        }
        _ => cluster,
    };
    obs.image = Some(plan::replica_image(cluster, &ctx.plan));
    let current = existing_set.as_ref().and_then(|s| s.spec.as_ref()).and_then(|s| s.replicas);
    let address = |ordinal: i32| ctx.resolver.address(&namespace, &name, ordinal);

    // Certificates for every replica that exists or is about to, before any of them is
    // started or called.
    let secured =
        security::ensure(cluster, ctx, &namespace, desired_replicas.max(current.unwrap_or(0))).await?;
    if let Secured::Waiting(why) = &secured
        && !has_condition_message(&previous, "Degraded", why)
    {
        ctx.event(&reference, false, "WaitingForCertificates", "Secure", why.clone()).await;
    }
    let secured = &secured;
    // SetMembers and Drain go to the admin address.
    let replica_target = |ordinal: i32| secured.admin_target(ctx, &namespace, &name, ordinal);

    // The pods (for a roll: the revision each runs, whether it is Ready), listed before
    // the replicas are probed: a pod seen Ready at the new revision was then already
    // running the process the probe below asks, so an answer from the process it replaced
    // cannot let a roll move on.
    let pods = match &existing_set {
        Some(_) => {
            let api: Api<Pod> = Api::namespaced(ctx.client.clone(), &namespace);
            api.list(&ListParams::default().labels(&plan::selector_string(&name))).await?.items
        }
        None => Vec::new(),
    };

    // Probe every replica that exists now.
    let existing = current.unwrap_or(0);
    let (namespace_ref, name_ref) = (namespace.as_str(), name.as_str());
    let probes: Vec<(i32, Probed)> = join_all((0..existing).map(|ordinal| async move {
        (ordinal, probe(ctx, namespace_ref, name_ref, ordinal, secured).await)
    }))
    .await;
    for (ordinal, probed) in &probes {
        obs.addresses.insert(*ordinal, address(*ordinal));
        if let (Probed::Answered(now), Some(before)) =
            (probed, previous.members.iter().find(|m| m.name == format!("{name}-{ordinal}")))
            && !before.epoch.is_empty()
            && before.epoch != now.epoch
        {
            ctx.event(
                &reference,
                false,
                "NewEpoch",
                "Observe",
                format!(
                    "replica {name}-{ordinal} came back with a new epoch {} (was {}): its data directory was \
                     replaced; it catches up from its peers",
                    now.epoch, before.epoch
                ),
            )
            .await;
        }
    }

    // At most one scaling step per pass.
    let target = match plan::scale_step(desired_replicas, current) {
        ScaleStep::Hold(n) => n,
        ScaleStep::Up { from, to } => {
            ctx.event(
                &reference,
                false,
                "ScalingUp",
                "Scale",
                format!("scaling up from {from} to {to} replicas"),
            )
            .await;
            to
        }
        ScaleStep::Down { leaving } if plan::skip_drain(cluster, &format!("{name}-{leaving}")) => {
            ctx.event(
                &reference,
                true,
                "DrainSkipped",
                "Scale",
                format!(
                    "removing replica {name}-{leaving} without a drain, as the {} annotation asks: entries \
                     that only it held (written through it and not yet pulled by another replica) are lost",
                    plan::SKIP_DRAIN_ANNOTATION
                ),
            )
            .await;
            leaving
        }
        ScaleStep::Down { leaving } => {
            let drained = match replica_target(leaving) {
                Ok(leaving) => ctx.admin.drain(&leaving, DRAIN_TIMEOUT).await,
                Err(why) => Err(why),
            };
            match drained {
                Ok(()) => {
                    ctx.metrics.drains.fetch_add(1, Ordering::Relaxed);
                    ctx.event(
                        &reference,
                        false,
                        "Drained",
                        "Scale",
                        format!(
                            "replica {name}-{leaving} is drained (everything it holds is held by another \
                             replica); removing it"
                        ),
                    )
                    .await;
                    leaving
                }
                Err(error) => {
                    let message = format!("drain of replica {name}-{leaving} failed, retrying: {error}");
                    ctx.event(&reference, true, "DrainFailed", "Scale", message.clone()).await;
                    obs.drain_blocked = Some(message);
                    leaving + 1
                }
            }
        }
    };
    obs.replicas = target;

    // The owned objects, applied whole every pass: server-side apply makes an unchanged
    // object a no-op and repairs anything edited or deleted by hand.
    let mut desired = plan::desired(cluster, &ctx.plan, target);
    if let Some(existing) = &existing_set {
        plan::keep_claim_template_size(&mut desired.stateful_set, existing);
    }
    // Membership: the replicas that remain after this step. A pass that is about to send
    // members holds the roll: the replicas' readiness it probed predates the member set
    // they are about to get (and must then catch up with).
    let mut member_probes: Vec<(i32, Probed)> = probes.iter().filter(|(o, _)| *o < target).cloned().collect();
    let addresses: Vec<String> = (0..target).map(address).collect();
    let membership =
        plan::membership(obs.members_generation, &obs.member_addresses, addresses, &member_probes);
    let members_pending = membership.generation != obs.members_generation || !membership.send_to.is_empty();
    obs.rollout = rollout(
        cluster,
        ctx,
        existing_set.as_ref(),
        &desired.stateful_set,
        target,
        if members_pending { &[] } else { &probes },
        &pods,
    )
    .await?;
    plan::set_partition(&mut desired.stateful_set, obs.rollout.partition);
    apply(&ctx.client, &namespace, &desired.config_map).await?;
    apply(&ctx.client, &namespace, &desired.headless).await?;
    apply(&ctx.client, &namespace, &desired.client).await?;
    apply(&ctx.client, &namespace, &desired.pdb).await?;
    apply(&ctx.client, &namespace, &desired.stateful_set).await?;
    let policies: Api<NetworkPolicy> = Api::namespaced(ctx.client.clone(), &namespace);
    match &desired.network_policy {
        Some(policy) => apply(&ctx.client, &namespace, policy).await?,
        // Turned off: the one made earlier goes, or it would keep admitting only a few.
        None => match policies.delete(&name, &DeleteParams::default()).await {
            Ok(_) => {}
            Err(kube::Error::Api(e)) if e.code == 404 => {}
            Err(e) => return Err(e.into()),
        },
    }
    if current.is_none() {
        ctx.event(
            &reference,
            false,
            "Created",
            "Create",
            format!("created StatefulSet {name} with {target} replicas"),
        )
        .await;
    }

    // Membership, as decided above.
    if membership.generation != obs.members_generation {
        ctx.event(
            &reference,
            false,
            "MembersChanged",
            "SetMembers",
            format!("member generation {}: {}", membership.generation, membership.addresses.join(", ")),
        )
        .await;
    }
    for ordinal in &membership.send_to {
        let result = match replica_target(*ordinal) {
            Ok(replica) => {
                ctx.admin.set_members(&replica, membership.generation, membership.addresses.clone()).await
            }
            Err(why) => Err(why),
        };
        match result {
            Ok(generation) => {
                ctx.metrics.member_updates.fetch_add(1, Ordering::Relaxed);
                if let Some((_, Probed::Answered(status))) =
                    member_probes.iter_mut().find(|(o, _)| o == ordinal)
                {
                    status.members_generation = generation;
                }
            }
            Err(error) => {
                let message = format!("cannot send members to replica {name}-{ordinal}: {error}");
                ctx.event(&reference, true, "SetMembersFailed", "SetMembers", message.clone()).await;
                obs.membership_errors.push(message);
            }
        }
    }
    obs.members_generation = membership.generation;
    obs.member_addresses = membership.addresses;
    // The status lists the remaining members, and the leaving one while it drains.
    obs.probes = member_probes;
    if let Some((leaving, probe)) = probes.iter().find(|(o, _)| *o >= target) {
        obs.probes.push((*leaving, probe.clone()));
    }

    // Volumes: grow the claims to the spec's size.
    let degraded = previous.conditions.iter().find(|c| c.type_ == "Degraded").map(|c| c.message.as_str());
    obs.storage = storage::grow(cluster, ctx, &namespace, target, degraded.unwrap_or_default()).await?;

    // Backups: the schedule, retention of its records, and what the newest one says.
    let (backups, next_run) = scheduled_backups(cluster, ctx, &namespace, &previous, &obs, now).await?;
    obs.latest_backup = backups.latest.clone();

    let was_ready = has_condition_status(&previous, "Ready", "True");
    let status = write_status(cluster, ctx, &previous, &obs, &now, backups).await?;
    let ready = has_condition_status(&status, "Ready", "True");
    if ready && !was_ready {
        ctx.event(&reference, false, "Ready", "Reconcile", format!("all {target} replicas are ready")).await;
    }

    // Volumes growing are watched closely: nothing else wakes the reconcile when the
    // storage system finishes.
    let settled = ready
        && obs.membership_errors.is_empty()
        && obs.storage.resizing.is_empty()
        && obs.rollout.progress.is_none();
    let mut requeue = if settled { STEADY_REQUEUE } else { CONVERGING_REQUEUE };
    if obs.drain_blocked.is_some() || !obs.membership_errors.is_empty() {
        requeue = ctx.backoff(&key(cluster));
    } else {
        ctx.succeeded(&key(cluster));
    }
    if let Some(next) = next_run {
        let until = next.duration_since(now.max(Timestamp::UNIX_EPOCH));
        let until = Duration::try_from(until).unwrap_or(Duration::ZERO).max(Duration::from_secs(1));
        requeue = requeue.min(until);
    }
    Ok(Action::requeue(requeue))
}

/// Observes the StatefulSet's pods and decides the next step of a roll of its template
/// (see [`plan::rollout`]); says so in events as a roll starts, moves to the next replica
/// and ends.
async fn rollout(
    cluster: &PlaitCluster,
    ctx: &Context,
    existing: Option<&StatefulSet>,
    desired: &StatefulSet,
    replicas: i32,
    probes: &[(i32, Probed)],
    pods: &[Pod],
) -> Result<plan::Rollout, Error> {
    let name = cluster.name_any();
    let hash = |set: &StatefulSet| set.annotations().get(plan::TEMPLATE_HASH_ANNOTATION).cloned();
    let mut input = plan::RolloutInput {
        replicas,
        exists: existing.is_some(),
        template_changed: existing.is_some_and(|e| hash(e) != hash(desired)),
        caught_up: probes.iter().filter(|(_, p)| p.caught_up()).map(|(o, _)| *o).collect(),
        ..plan::RolloutInput::default()
    };
    if let Some(existing) = existing {
        input.partition = existing
            .spec
            .as_ref()
            .and_then(|s| s.update_strategy.as_ref())
            .and_then(|u| u.rolling_update.as_ref())
            .and_then(|r| r.partition)
            .unwrap_or(0);
        input.update_revision = existing
            .status
            .as_ref()
            .filter(|s| {
                s.observed_generation.is_some() && s.observed_generation >= existing.metadata.generation
            })
            .and_then(|s| s.update_revision.clone());
        let prefix = format!("{name}-");
        let mut pods_ready = std::collections::BTreeSet::new();
        for pod in pods.iter().filter(|p| p.metadata.deletion_timestamp.is_none()) {
            let ordinal = pod.name_any().strip_prefix(&prefix).and_then(|o| o.parse::<i32>().ok());
            if let (Some(ordinal), Some(revision)) = (ordinal, pod.labels().get(plan::REVISION_LABEL)) {
                input.pod_revisions.insert(ordinal, revision.clone());
                let ready = pod
                    .status
                    .as_ref()
                    .and_then(|s| s.conditions.as_ref())
                    .is_some_and(|c| c.iter().any(|c| c.type_ == "Ready" && c.status == "True"));
                if ready {
                    pods_ready.insert(ordinal);
                }
            }
        }
        // Caught up counts only for a pod whose current container passed its readiness
        // probe: until then the replica that answers may still be the one it replaces.
        input.caught_up.retain(|o| pods_ready.contains(o));
    }
    let decided = plan::rollout(&input);
    debug_assert!((0..=replicas).contains(&decided.partition), "a partition outside the StatefulSet");

    let reference = cluster.object_ref(&());
    let image = plan::replica_image(cluster, &ctx.plan);
    let rolling_before = cluster.status.as_ref().is_some_and(|s| {
        s.conditions.iter().any(|c| c.type_ == "Progressing" && c.reason == "RollingUpdate")
    });
    if input.template_changed && decided.progress.is_some() {
        let message = format!(
            "the pod template changed (image {image}): rolling {replicas} replicas one at a time, highest \
             ordinal first, each once the others are caught up"
        );
        ctx.event(&reference, false, "RollingUpdate", "Roll", message).await;
    } else if decided.progress.is_some() && decided.partition < input.partition.min(replicas) {
        let message =
            format!("updating replica {name}-{} to the new pod template (image {image})", decided.partition);
        ctx.event(&reference, false, "UpdatingReplica", "Roll", message).await;
    } else if rolling_before && decided.progress.is_none() && !input.pod_revisions.is_empty() {
        let message = format!("every replica runs the new pod template (image {image})");
        ctx.event(&reference, false, "RolloutComplete", "Roll", message).await;
    }
    Ok(decided)
}

fn has_condition_status(status: &PlaitClusterStatus, type_: &str, value: &str) -> bool {
    status.conditions.iter().any(|c| c.type_ == type_ && c.status == value)
}

fn has_condition_message(status: &PlaitClusterStatus, type_: &str, message: &str) -> bool {
    status.conditions.iter().any(|c| c.type_ == type_ && c.message == message)
}

/// Server-side apply of one owned object, forcing ownership of the fields we set.
pub(crate) async fn apply<K>(client: &kube::Client, namespace: &str, object: &K) -> Result<(), Error>
where
    K: Resource<DynamicType = (), Scope = k8s_openapi::NamespaceResourceScope>
        + Serialize
        + DeserializeOwned
        + Clone
        + std::fmt::Debug,
{
    let api: Api<K> = Api::namespaced(client.clone(), namespace);
    let name = object.meta().name.clone().ok_or_else(|| Error::Invalid("object without a name".into()))?;
    let mut body = serde_json::to_value(object).map_err(|e| Error::Invalid(e.to_string()))?;
    body["apiVersion"] = K::api_version(&()).into();
    body["kind"] = K::kind(&()).into();
    api.patch(&name, &PatchParams::apply(FIELD_MANAGER).force(), &Patch::Apply(body)).await?;
    Ok(())
}

/// Makes sure the writer key Secret exists. A key the spec names must exist and hold a
/// key; otherwise the operator generates one, once. The generated Secret is deliberately
/// not owned by the cluster: it outlives it, so a cluster restored from its backups can
/// reuse it and keep writing to the restored logs.
async fn ensure_writer_key(
    cluster: &PlaitCluster,
    ctx: &Context,
    namespace: &str,
) -> Result<Option<String>, Error> {
    let secrets: Api<Secret> = Api::namespaced(ctx.client.clone(), namespace);
    let secret_name = plan::writer_key_secret_name(cluster);
    let existing = secrets.get_opt(&secret_name).await?;
    if cluster.spec.writer_key_secret.is_some() {
        let holds_key = existing.as_ref().and_then(|s| s.data.as_ref()).is_some_and(|d| {
            d.get(plan::WRITER_KEY_FIELD).is_some_and(|v| String::from_utf8_lossy(&v.0).trim().len() == 64)
        });
        return Ok((!holds_key).then(|| {
            format!(
                "spec.writerKeySecret: Secret {secret_name} must exist and hold `{}` (64 hex characters)",
                plan::WRITER_KEY_FIELD
            )
        }));
    }
    if existing.is_some() {
        return Ok(None);
    }
    let mut secret_bytes = [0u8; 32];
    rand::RngCore::fill_bytes(&mut rand::rngs::OsRng, &mut secret_bytes);
    let secret = Secret {
        metadata: ObjectMeta {
            name: Some(secret_name.clone()),
            namespace: Some(namespace.to_owned()),
            labels: Some(plan::labels(&cluster.name_any())),
            ..ObjectMeta::default()
        },
        data: Some(BTreeMap::from([(
            plan::WRITER_KEY_FIELD.to_owned(),
            ByteString(format!("{}\n", hex::encode(secret_bytes)).into_bytes()),
        )])),
        type_: Some("Opaque".into()),
        ..Secret::default()
    };
    match secrets.create(&PostParams::default(), &secret).await {
        Ok(_) => {
            ctx.event(
                &cluster.object_ref(&()),
                false,
                "WriterKeyCreated",
                "Create",
                format!("generated the writer key in Secret {secret_name}"),
            )
            .await;
            Ok(None)
        }
        // Another pass created it first.
        Err(kube::Error::Api(e)) if e.code == 409 => Ok(None),
        Err(e) => Err(e.into()),
    }
}

/// What the status says of backups.
#[derive(Clone, Debug, Default)]
struct BackupSummary {
    /// The newest backup: (name, phase, error).
    latest: Option<(String, String, Option<String>)>,
    last_completed: Option<(String, Option<Time>)>,
    last_schedule_time: Option<Time>,
    runs_since_full: i32,
}

impl BackupSummary {
    fn from_status(status: &PlaitClusterStatus) -> BackupSummary {
        BackupSummary {
            latest: None,
            last_completed: status.last_backup.clone().map(|name| (name, status.last_backup_time.clone())),
            last_schedule_time: status.last_schedule_time.clone(),
            runs_since_full: status.runs_since_full,
        }
    }
}

/// Creates the scheduled backup when one is due, deletes scheduled records beyond the
/// retention, and summarizes the cluster's backups. Returns the summary and the next
/// scheduled run.
async fn scheduled_backups(
    cluster: &PlaitCluster,
    ctx: &Context,
    namespace: &str,
    previous: &PlaitClusterStatus,
    obs: &Observation,
    now: Timestamp,
) -> Result<(BackupSummary, Option<Timestamp>), Error> {
    let name = cluster.name_any();
    let api: Api<PlaitBackup> = Api::namespaced(ctx.client.clone(), namespace);
    let mut summary = BackupSummary::from_status(previous);
    // On-demand backups carry no label: select by the cluster they name.
    let mut backups: Vec<PlaitBackup> = api
        .list(&ListParams::default())
        .await?
        .items
        .into_iter()
        .filter(|b| b.spec.cluster == name)
        .collect();
    let mut next_run = None;

    if let Some(spec) = &cluster.spec.backup
        && let Some(expression) = &spec.schedule
    {
        let schedule = Schedule::parse(expression).map_err(Error::Invalid)?;
        let since = previous
            .last_schedule_time
            .as_ref()
            .map(|t| t.0)
            .or_else(|| cluster.metadata.creation_timestamp.as_ref().map(|t| t.0))
            .unwrap_or(now);
        let any_ready = obs.probes.iter().any(|(_, p)| p.ready());
        if schedule::due(&schedule, since, now) && any_ready {
            let full = spec.full_every <= 1
                || previous.runs_since_full + 1 >= spec.full_every
                || summary.last_completed.is_none();
            let run =
                make_scheduled_backup(cluster, now, if full { BackupKind::Full } else { BackupKind::Delta });
            match api.create(&PostParams::default(), &run).await {
                Ok(created) => {
                    ctx.event(
                        &cluster.object_ref(&()),
                        false,
                        "BackupScheduled",
                        "Backup",
                        format!(
                            "created {} ({:?}) for schedule {expression:?}",
                            created.name_any(),
                            run.spec.kind
                        ),
                    )
                    .await;
                    backups.push(created);
                }
                // This run was created by an earlier pass that did not get to write the status.
                Err(kube::Error::Api(e)) if e.code == 409 => {}
                Err(e) => return Err(e.into()),
            }
            summary.last_schedule_time = Some(Time(now));
            summary.runs_since_full = if full { 0 } else { previous.runs_since_full + 1 };
            next_run = schedule.next_after(now);
        } else {
            next_run = schedule.next_after(since);
        }

        // Retention of the records the schedule made: the oldest finished ones go.
        let keep = usize::try_from(spec.retention.records).unwrap_or(0);
        if keep > 0 {
            let mut scheduled: Vec<&PlaitBackup> = backups
                .iter()
                .filter(|b| b.labels().get(SCHEDULED_LABEL).is_some_and(|v| v == "true"))
                .filter(|b| finished(b))
                .collect();
            scheduled.sort_by_key(|b| b.metadata.creation_timestamp.as_ref().map(|t| t.0));
            let excess = scheduled.len().saturating_sub(keep);
            let doomed: Vec<String> = scheduled.iter().take(excess).map(|b| b.name_any()).collect();
            for old in &doomed {
                match api.delete(old, &DeleteParams::default()).await {
                    Ok(_) => {}
                    Err(kube::Error::Api(e)) if e.code == 404 => {}
                    Err(e) => return Err(e.into()),
                }
            }
            backups.retain(|b| !doomed.contains(&b.name_any()));
        }
    }

    backups.sort_by_key(|b| (b.metadata.creation_timestamp.as_ref().map(|t| t.0), b.name_any()));
    if let Some(newest) = backups.last() {
        let status = newest.status.clone().unwrap_or_default();
        summary.latest =
            Some((newest.name_any(), status.phase.unwrap_or_else(|| "Pending".into()), status.error.clone()));
    }
    if let Some(done) = backups.iter().rev().find(|b| phase_of(b) == "Completed") {
        summary.last_completed =
            Some((done.name_any(), done.status.as_ref().and_then(|s| s.completed_at.clone())));
    }
    Ok((summary, next_run))
}

fn phase_of(backup: &PlaitBackup) -> &str {
    backup.status.as_ref().and_then(|s| s.phase.as_deref()).unwrap_or("Pending")
}

fn finished(backup: &PlaitBackup) -> bool {
    matches!(phase_of(backup), "Completed" | "Failed")
}

/// The `PlaitBackup` a scheduled run creates: named after its time, labelled with its
/// cluster, owned (not controlled) by the cluster so it goes when the cluster goes.
fn make_scheduled_backup(cluster: &PlaitCluster, now: Timestamp, kind: BackupKind) -> PlaitBackup {
    let name = cluster.name_any();
    let stamp = now.strftime("%Y%m%d%H%M%S").to_string();
    let mut backup = PlaitBackup::new(
        &format!("{name}-{stamp}"),
        PlaitBackupSpec { cluster: name.clone(), kind, logs: Vec::new(), destination: None },
    );
    backup.metadata.namespace = cluster.namespace();
    backup.metadata.labels = Some(BTreeMap::from([
        (CLUSTER_LABEL.to_owned(), name.clone()),
        (SCHEDULED_LABEL.to_owned(), "true".to_owned()),
    ]));
    if let Some(mut owner) = cluster.controller_owner_ref(&()) {
        owner.controller = Some(false);
        backup.metadata.owner_references = Some(vec![owner]);
    }
    backup
}

/// Computes and, when it differs from what is stored, writes the status.
async fn write_status(
    cluster: &PlaitCluster,
    ctx: &Context,
    previous: &PlaitClusterStatus,
    obs: &Observation,
    now: &Timestamp,
    backups: BackupSummary,
) -> Result<PlaitClusterStatus, Error> {
    let name = cluster.name_any();
    let (phase, conditions) = plan::conditions(obs, &previous.conditions, &Time(*now));
    let members = if obs.invalid_spec.is_some() {
        previous.members.clone()
    } else {
        plan::member_statuses(&name, obs, &previous.members)
    };
    let ready_replicas =
        members.iter().filter(|m| m.ready && member_ordinal(&m.name) < obs.replicas).count() as i32;
    let status = PlaitClusterStatus {
        phase: Some(phase),
        replicas: obs.replicas,
        ready_replicas,
        selector: Some(plan::selector_string(&name)),
        members,
        members_ready: Some(format!("{ready_replicas}/{}", obs.desired_replicas)),
        members_generation: i64::try_from(obs.members_generation).unwrap_or(i64::MAX),
        member_addresses: obs.member_addresses.clone(),
        conditions,
        observed_generation: cluster.metadata.generation,
        last_schedule_time: backups.last_schedule_time,
        runs_since_full: backups.runs_since_full,
        last_backup: backups.last_completed.as_ref().map(|(n, _)| n.clone()),
        last_backup_time: backups.last_completed.and_then(|(_, t)| t),
        resizing_volumes: obs.storage.resizing.clone(),
        image: obs.image.clone(),
        updated_replicas: if obs.rollout.progress.is_some() { obs.rollout.updated } else { None },
    };
    if cluster.status.as_ref() != Some(&status) {
        patch_status(cluster, ctx, &status).await?;
    }
    let condition = |type_: &str| has_condition_status(&status, type_, "True");
    let gauges = crate::context::ClusterGauges {
        replicas: status.replicas,
        ready_replicas: status.ready_replicas,
        ready: condition("Ready"),
        available: condition("Available"),
    };
    ctx.metrics.set_cluster(&cluster.namespace().unwrap_or_default(), &name, Some(gauges));
    Ok(status)
}

/// Writes the whole status by server-side apply.
async fn patch_status(
    cluster: &PlaitCluster,
    ctx: &Context,
    status: &PlaitClusterStatus,
) -> Result<(), Error> {
    let name = cluster.name_any();
    let api: Api<PlaitCluster> =
        Api::namespaced(ctx.client.clone(), &cluster.namespace().unwrap_or_default());
    let body = serde_json::json!({
        "apiVersion": PlaitCluster::api_version(&()),
        "kind": PlaitCluster::kind(&()),
        "metadata": { "name": name },
        "status": status,
    });
    api.patch_status(&name, &PatchParams::apply(FIELD_MANAGER).force(), &Patch::Apply(body)).await?;
    Ok(())
}

fn member_ordinal(pod: &str) -> i32 {
    pod.rsplit('-').next().and_then(|o| o.parse().ok()).unwrap_or(i32::MAX)
}

/// Probes the replica at `ordinal`, as `Probed`.
pub(crate) async fn probe(
    ctx: &Context,
    namespace: &str,
    cluster: &str,
    ordinal: i32,
    secured: &Secured,
) -> Probed {
    let target = match secured.target(ctx, namespace, cluster, ordinal) {
        Ok(target) => target,
        Err(why) => return Probed::Unreachable(why),
    };
    match ctx.admin.status(&target).await {
        Ok(status) => Probed::Answered(status),
        Err(error) => Probed::Unreachable(error),
    }
}

/// The first ready replica of a cluster, probing ordinals in order.
pub(crate) async fn first_ready(
    ctx: &Context,
    namespace: &str,
    cluster: &str,
    replicas: i32,
    secured: &Secured,
) -> Result<(i32, ReplicaStatus), String> {
    let mut problems = Vec::new();
    for ordinal in 0..replicas {
        match probe(ctx, namespace, cluster, ordinal, secured).await {
            probed @ Probed::Answered(_) if probed.ready() => {
                return Ok((ordinal, probed.status().cloned().expect("answered")));
            }
            Probed::Answered(_) => problems.push(format!("replica {ordinal} is draining or not writable")),
            Probed::Unreachable(error) => problems.push(format!("replica {ordinal}: {error}")),
        }
    }
    Err(if problems.is_empty() { "the cluster has no replicas".into() } else { problems.join("; ") })
}
