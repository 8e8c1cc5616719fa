//! Reconcile planning, without I/O: from a `PlaitCluster` and what was observed of its
//! replicas to the objects that should exist, the next scaling step, the member set to
//! send, and the status to report. Everything here is a pure function so it is tested
//! directly, and the controller only carries out what these functions decide.

use std::collections::BTreeMap;
use std::hash::{Hash, Hasher};

use k8s_openapi::api::apps::v1::{
    RollingUpdateStatefulSetStrategy, StatefulSet, StatefulSetPersistentVolumeClaimRetentionPolicy,
    StatefulSetSpec, StatefulSetUpdateStrategy,
};
use k8s_openapi::api::core::v1::{
    Capabilities, ConfigMap, ConfigMapEnvSource, Container, ContainerPort, EnvFromSource, EnvVar,
    EnvVarSource, GRPCAction, HTTPGetAction, KeyToPath, ObjectFieldSelector, PersistentVolumeClaim,
    PersistentVolumeClaimSpec, PodSecurityContext, PodSpec, PodTemplateSpec, Probe, ProjectedVolumeSource,
    SeccompProfile, SecretEnvSource, SecretProjection, SecretVolumeSource, SecurityContext, Service,
    ServicePort, ServiceSpec, TopologySpreadConstraint, Volume, VolumeMount, VolumeProjection,
    VolumeResourceRequirements,
};
use k8s_openapi::api::networking::v1::{
    NetworkPolicy, NetworkPolicyIngressRule, NetworkPolicyPeer, NetworkPolicyPort, NetworkPolicySpec,
};
use k8s_openapi::api::policy::v1::{PodDisruptionBudget, PodDisruptionBudgetSpec};
use k8s_openapi::apimachinery::pkg::api::resource::Quantity;
use k8s_openapi::apimachinery::pkg::apis::meta::v1::{Condition, LabelSelector, ObjectMeta, Time};
use k8s_openapi::apimachinery::pkg::util::intstr::IntOrString;
use kube::{Resource, ResourceExt};

use crate::crd::{MemberStatus, PlaitCluster, PlaitClusterSpec, TlsMode};
use crate::replicas::{ADMIN_PORT, GRPC_PORT, METRICS_PORT, ReplicaStatus};
use crate::security;

/// The health service plaitd drives from its readiness (draining, poisoned, catching
/// up); the overall service "" only says the process serves.
pub(crate) const READY_SERVICE: &str = "plait.v1.Ready";
/// The name of each replica's volume claim template: its claims are `data-<cluster>-<n>`.
pub(crate) const DATA_VOLUME: &str = "data";
/// Where a replica keeps its data inside its volume. A subdirectory, because a fresh
/// filesystem's root may hold `lost+found`, and plaitd wants its own directory.
pub(crate) const DATA_DIR: &str = "/data/plait";
/// Where the writer key Secret is mounted.
pub(crate) const WRITER_KEY_DIR: &str = "/etc/plait/writer";
/// The key of the writer key in its Secret.
pub(crate) const WRITER_KEY_FIELD: &str = "writer.key";
/// The user replicas run as (distroless `nonroot`).
pub(crate) const REPLICA_UID: i64 = 65532;

pub(crate) fn headless_name(cluster: &str) -> String {
    format!("{cluster}-headless")
}

pub(crate) fn config_name(cluster: &str) -> String {
    format!("{cluster}-config")
}

/// The Secret holding the writer key: the one named in the spec, else one the operator
/// generates.
pub(crate) fn writer_key_secret_name(cluster: &PlaitCluster) -> String {
    cluster.spec.writer_key_secret.clone().unwrap_or_else(|| format!("{}-writer-key", cluster.name_any()))
}

/// The labels that select a cluster's replica pods.
pub(crate) fn selector_labels(cluster: &str) -> BTreeMap<String, String> {
    BTreeMap::from([
        ("app.kubernetes.io/name".to_owned(), "plaitd".to_owned()),
        ("app.kubernetes.io/instance".to_owned(), cluster.to_owned()),
    ])
}

/// The selector as a string, for the scale subresource.
pub(crate) fn selector_string(cluster: &str) -> String {
    selector_labels(cluster).iter().map(|(k, v)| format!("{k}={v}")).collect::<Vec<_>>().join(",")
}

/// Labels of every object the operator makes for a cluster.
pub(crate) fn labels(cluster: &str) -> BTreeMap<String, String> {
    let mut labels = selector_labels(cluster);
    labels.insert("app.kubernetes.io/component".to_owned(), "replica".to_owned());
    labels.insert("app.kubernetes.io/managed-by".to_owned(), "plait-operator".to_owned());
    labels
}

/// Problems with a spec that the API server's schema cannot see.
pub(crate) fn validate(spec: &PlaitClusterSpec) -> Result<(), String> {
    if let Some(schedule) = spec.backup.as_ref().and_then(|b| b.schedule.as_deref()) {
        crate::schedule::Schedule::parse(schedule)?;
    }
    if spec.replicas < 1 || spec.replicas > crate::crd::REPLICAS_MAX {
        return Err(format!("spec.replicas must be between 1 and {}", crate::crd::REPLICAS_MAX));
    }
    let extra = spec.backup.as_ref().map(|b| b.extra_destinations.as_slice()).unwrap_or_default();
    for (i, d) in extra.iter().enumerate() {
        if d.name == DEFAULT_DESTINATION {
            return Err(format!(
                "spec.backup.extraDestinations[{i}] is named {DEFAULT_DESTINATION:?}, which is \
                 spec.backup.destination: give it another name"
            ));
        }
        if extra[..i].iter().any(|e| e.name == d.name) {
            return Err(format!("spec.backup.extraDestinations names {:?} twice", d.name));
        }
    }
    // A restored cluster backing up where it restored from would add to the source's
    // catalog and apply its retention there (the replicas refuse it too, by owner).
    if let Some(from) = spec.bootstrap.as_ref().map(|b| b.from.trim_end_matches('/')) {
        for (name, url) in backup_destinations(spec) {
            if url.trim_end_matches('/') == from {
                return Err(format!(
                    "backup destination {name:?} ({url}) is spec.bootstrap.from: a cluster restored from \
                     backups must back up to a destination of its own, or its retention would delete the \
                     source cluster's backups"
                ));
            }
        }
    }
    Ok(())
}

/// The name replicas know `spec.backup.destination` by, and that `PlaitBackup`s use when
/// they name none.
pub(crate) const DEFAULT_DESTINATION: &str = "default";

/// The backup destinations every replica is started with, as `(name, url)`:
/// `spec.backup.destination` as [`DEFAULT_DESTINATION`], then the extra ones. Replicas
/// back up only to these; a `Backup` call names one.
pub(crate) fn backup_destinations(spec: &PlaitClusterSpec) -> Vec<(String, String)> {
    let Some(backup) = &spec.backup else { return Vec::new() };
    std::iter::once((DEFAULT_DESTINATION.to_owned(), backup.destination.clone()))
        .chain(backup.extra_destinations.iter().map(|d| (d.name.clone(), d.url.clone())))
        .collect()
}

/// Settings the operator gives every replica of a cluster: what the ConfigMap holds.
pub(crate) fn replica_settings(spec: &PlaitClusterSpec) -> BTreeMap<String, String> {
    let mut env = spec.settings.clone();
    if let Some(t) = &spec.telemetry {
        if let Some(level) = &t.log_level {
            env.insert("PLAIT_LOG".into(), level.clone());
        }
        if t.log_json {
            env.insert("PLAIT_LOG_JSON".into(), "true".into());
        }
        if let Some(endpoint) = &t.otlp_endpoint {
            env.insert("OTEL_EXPORTER_OTLP_ENDPOINT".into(), endpoint.clone());
        }
    }
    let s3 = spec
        .backup
        .as_ref()
        .and_then(|b| b.s3.as_ref())
        .or(spec.bootstrap.as_ref().and_then(|b| b.s3.as_ref()));
    if let Some(s3) = s3 {
        if let Some(endpoint) = &s3.endpoint {
            env.insert("PLAIT_BACKUP_S3_ENDPOINT".into(), endpoint.clone());
        }
        if let Some(region) = &s3.region {
            env.insert("PLAIT_BACKUP_S3_REGION".into(), region.clone());
        }
        if s3.allow_http {
            env.insert("PLAIT_BACKUP_S3_ALLOW_HTTP".into(), "true".into());
        }
    }
    env
}

/// The replica container's arguments: `serve`, one `--backup-destination NAME=URL` per
/// destination of the cluster, and with any destination `--backup-owner
/// <namespace>/<name>`, which the replicas claim each destination's catalog for and refuse
/// a catalog another cluster claimed (a cluster restored from another's backups must not
/// add to them or apply its retention to them). Flags, not the ConfigMap: a flag wins
/// over an environment variable, so `spec.settings` cannot redirect backups.
fn serve_args(cluster: &PlaitCluster) -> Vec<String> {
    let mut args = vec!["serve".to_owned()];
    let destinations = backup_destinations(&cluster.spec);
    if !destinations.is_empty() {
        args.push("--backup-owner".to_owned());
        args.push(backup_owner(cluster));
    }
    for (name, url) in destinations {
        args.push("--backup-destination".to_owned());
        args.push(format!("{name}={url}"));
    }
    args
}

/// Who a cluster's replicas back up as: `<namespace>/<name>`, so a cluster deleted and
/// made again under its name goes on with its own backups.
pub(crate) fn backup_owner(cluster: &PlaitCluster) -> String {
    format!("{}/{}", cluster.namespace().unwrap_or_default(), cluster.name_any())
}

/// A stable fingerprint of a value: of the settings, put on the pod template so a
/// settings change rolls the replicas; of a pod template, to tell it changed.
fn fingerprint(value: &impl Hash) -> String {
    // SipHash with fixed keys: stable across runs, which is all a change detector needs.
    let mut hasher = std::collections::hash_map::DefaultHasher::new();
    value.hash(&mut hasher);
    format!("{:016x}", hasher.finish())
}

/// The operator's own settings that shape replicas.
#[derive(Clone, Debug)]
pub struct PlanContext {
    /// The plaitd image used when a cluster names none.
    pub replica_image: String,
    /// The namespace the operator runs in, which NetworkPolicies admit it from; any
    /// namespace when not known.
    pub operator_namespace: Option<String>,
}

/// The plaitd image of a cluster's replicas: `spec.image`, else the one recorded in its
/// status when it was created, else the operator's default (a new cluster).
pub(crate) fn replica_image(cluster: &PlaitCluster, ctx: &PlanContext) -> String {
    cluster
        .spec
        .image
        .clone()
        .or_else(|| cluster.status.as_ref().and_then(|s| s.image.clone()))
        .unwrap_or_else(|| ctx.replica_image.clone())
}

/// The image the StatefulSet's replica container runs now, for a cluster made before its
/// image was recorded in its status.
pub(crate) fn running_image(stateful_set: &StatefulSet) -> Option<String> {
    let pod = stateful_set.spec.as_ref()?.template.spec.as_ref()?;
    pod.containers.iter().find(|c| c.name == "plaitd").and_then(|c| c.image.clone())
}

/// The StatefulSet annotation holding a hash of the pod template last applied, so a pass
/// knows whether it changes the template, which starts a roll.
pub(crate) const TEMPLATE_HASH_ANNOTATION: &str = "plait.dev/template-hash";
/// The label the StatefulSet controller puts on each pod: the revision of the template
/// the pod was made from.
pub(crate) const REVISION_LABEL: &str = "controller-revision-hash";

/// A stable hash of a pod template.
pub(crate) fn template_hash(template: &PodTemplateSpec) -> String {
    fingerprint(&serde_json::to_string(template).expect("a pod template serializes"))
}

/// What a pass knows of a roll of the pod template.
#[derive(Clone, Debug, Default)]
pub(crate) struct RolloutInput {
    /// The StatefulSet's replicas after this pass.
    pub replicas: i32,
    /// The StatefulSet exists.
    pub exists: bool,
    /// This pass applies a template different from the one applied last.
    pub template_changed: bool,
    /// The partition applied last.
    pub partition: i32,
    /// The StatefulSet controller's newest revision, once it has seen the newest spec.
    pub update_revision: Option<String>,
    /// Each existing, not terminating pod's revision, by ordinal.
    pub pod_revisions: BTreeMap<i32, String>,
    /// The ordinals whose replica answers ready and caught up.
    pub caught_up: std::collections::BTreeSet<i32>,
}

/// Where a roll stands, and the StatefulSet partition that carries out the next step:
/// pods at or above the partition get the newest template, the others keep theirs.
#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub(crate) struct Rollout {
    pub partition: i32,
    /// Replicas at the newest template, when known.
    pub updated: Option<i32>,
    /// While a roll is under way: what it waits for or does now.
    pub progress: Option<String>,
}

/// The next step of a roll. Replicas move to a new template one at a time, highest ordinal
/// first: the next one only once every replica above it runs the new template and is
/// caught up, and only while every other replica is caught up, so a roll never takes a
/// second replica away while one is still catching up. A changed template first holds
/// every pod back (until the StatefulSet controller has a revision for it); pods not made
/// yet, or a StatefulSet no pod of which runs, have nothing to roll.
pub(crate) fn rollout(input: &RolloutInput) -> Rollout {
    let n = input.replicas;
    if !input.exists || input.pod_revisions.is_empty() {
        return Rollout { partition: 0, updated: None, progress: None };
    }
    if input.template_changed {
        return Rollout {
            partition: n,
            updated: Some(0),
            progress: Some(format!(
                "the pod template changed: rolling {n} replicas one at a time, highest ordinal first"
            )),
        };
    }
    let Some(revision) = &input.update_revision else {
        return Rollout {
            partition: input.partition.min(n),
            updated: None,
            progress: (input.partition > 0)
                .then(|| "waiting for the StatefulSet controller to see the new template".to_owned()),
        };
    };
    let updated = |o: i32| input.pod_revisions.get(&o) == Some(revision);
    let count = (0..n).filter(|o| updated(*o)).count() as i32;
    if count == n {
        return Rollout { partition: 0, updated: Some(n), progress: None };
    }
    let caught_up = |o: i32| input.caught_up.contains(&o);
    for o in (0..n).rev() {
        if updated(o) && caught_up(o) {
            continue;
        }
        let progress = if updated(o) {
            Some(format!("{count} of {n} replicas updated; waiting for replica {o} to catch up"))
        } else {
            let behind: Vec<String> =
                (0..n).filter(|p| *p != o && !caught_up(*p)).map(|p| p.to_string()).collect();
            if !behind.is_empty() {
                return Rollout {
                    partition: o + 1,
                    updated: Some(count),
                    progress: Some(format!(
                        "{count} of {n} replicas updated; replica {o} is next, once replicas {} are caught up",
                        behind.join(", ")
                    )),
                };
            }
            Some(format!("{count} of {n} replicas updated; updating replica {o}"))
        };
        return Rollout { partition: o, updated: Some(count), progress };
    }
    // Every replica is caught up but some pod above 0 is not at the revision: cannot
    // happen (the loop returns at it), kept total for the type.
    Rollout { partition: 0, updated: Some(count), progress: None }
}

/// Sets the partition a rollout decided on the StatefulSet.
pub(crate) fn set_partition(stateful_set: &mut StatefulSet, partition: i32) {
    if let Some(strategy) = stateful_set.spec.as_mut().and_then(|s| s.update_strategy.as_mut()) {
        strategy.rolling_update = Some(RollingUpdateStatefulSetStrategy {
            partition: Some(partition),
            ..RollingUpdateStatefulSetStrategy::default()
        });
    }
}

/// The label a pod carries, with the cluster's name as value, to be let through the
/// cluster's NetworkPolicy.
pub(crate) const CLIENT_LABEL: &str = "plait.dev/client";
/// The label of the operator's pods, which NetworkPolicies admit.
pub(crate) const OPERATOR_POD_LABEL: (&str, &str) = ("app.kubernetes.io/name", "plait-operator");

/// Every object a cluster owns, as it should be.
#[derive(Clone, Debug)]
pub(crate) struct Desired {
    pub config_map: ConfigMap,
    pub headless: Service,
    pub client: Service,
    pub pdb: PodDisruptionBudget,
    pub stateful_set: StatefulSet,
    /// `None` when `spec.security.networkPolicy` is off.
    pub network_policy: Option<NetworkPolicy>,
}

fn meta(cluster: &PlaitCluster, name: String) -> ObjectMeta {
    ObjectMeta {
        name: Some(name),
        namespace: cluster.namespace(),
        labels: Some(labels(&cluster.name_any())),
        owner_references: cluster.controller_owner_ref(&()).map(|r| vec![r]),
        ..ObjectMeta::default()
    }
}

/// The objects of `cluster`, with the StatefulSet at `replicas` (which the scaling plan
/// decides; it differs from `spec.replicas` while scaling down one replica at a time).
pub(crate) fn desired(cluster: &PlaitCluster, ctx: &PlanContext, replicas: i32) -> Desired {
    let name = cluster.name_any();
    let spec = &cluster.spec;
    let settings = replica_settings(spec);

    let config_map = ConfigMap {
        metadata: meta(cluster, config_name(&name)),
        data: Some(settings.clone()),
        ..ConfigMap::default()
    };

    let grpc_port = ServicePort {
        name: Some("grpc".into()),
        port: i32::from(GRPC_PORT),
        target_port: Some(IntOrString::String("grpc".into())),
        app_protocol: Some("kubernetes.io/h2c".into()),
        ..ServicePort::default()
    };
    let headless = Service {
        metadata: meta(cluster, headless_name(&name)),
        spec: Some(ServiceSpec {
            cluster_ip: Some("None".into()),
            // Replicas must find each other before they are ready: readiness needs peers.
            publish_not_ready_addresses: Some(true),
            selector: Some(selector_labels(&name)),
            ports: Some(vec![grpc_port.clone()]),
            ..ServiceSpec::default()
        }),
        ..Service::default()
    };
    let client = Service {
        metadata: meta(cluster, name.clone()),
        spec: Some(ServiceSpec {
            selector: Some(selector_labels(&name)),
            ports: Some(vec![
                grpc_port,
                ServicePort {
                    name: Some("metrics".into()),
                    port: i32::from(METRICS_PORT),
                    target_port: Some(IntOrString::String("metrics".into())),
                    ..ServicePort::default()
                },
            ]),
            ..ServiceSpec::default()
        }),
        ..Service::default()
    };
    let pdb = PodDisruptionBudget {
        metadata: meta(cluster, name.clone()),
        spec: Some(PodDisruptionBudgetSpec {
            // Some replicas keep serving and hold the others' entries: never all at once,
            // so a one-replica cluster's only pod is never evicted.
            max_unavailable: Some(IntOrString::Int(disruptions_allowed(
                spec.pod_disruption_budget.max_unavailable,
                replicas,
            ))),
            selector: Some(LabelSelector {
                match_labels: Some(selector_labels(&name)),
                ..LabelSelector::default()
            }),
            ..PodDisruptionBudgetSpec::default()
        }),
        ..PodDisruptionBudget::default()
    };

    let template = pod_template(cluster, ctx, &settings);
    let mut set_meta = meta(cluster, name.clone());
    set_meta.annotations =
        Some(BTreeMap::from([(TEMPLATE_HASH_ANNOTATION.to_owned(), template_hash(&template))]));
    let stateful_set = StatefulSet {
        metadata: set_meta,
        spec: Some(StatefulSetSpec {
            replicas: Some(replicas),
            service_name: Some(headless_name(&name)),
            // Replicas need no ordering to start: membership comes from the operator.
            pod_management_policy: Some("Parallel".into()),
            selector: LabelSelector {
                match_labels: Some(selector_labels(&name)),
                ..LabelSelector::default()
            },
            // The operator rolls a new template itself, one replica at a time, by
            // lowering the partition (`rollout`); nothing rolls until it does.
            update_strategy: Some(StatefulSetUpdateStrategy {
                type_: Some("RollingUpdate".into()),
                rolling_update: Some(RollingUpdateStatefulSetStrategy {
                    partition: Some(0),
                    ..RollingUpdateStatefulSetStrategy::default()
                }),
            }),
            // A removed replica was drained first, so its volume holds nothing that is not
            // elsewhere; a replica added later starts clean as a new epoch.
            persistent_volume_claim_retention_policy: Some(StatefulSetPersistentVolumeClaimRetentionPolicy {
                when_scaled: Some("Delete".into()),
                when_deleted: Some("Retain".into()),
            }),
            template,
            volume_claim_templates: Some(vec![PersistentVolumeClaim {
                metadata: ObjectMeta {
                    name: Some(DATA_VOLUME.into()),
                    labels: Some(selector_labels(&name)),
                    ..ObjectMeta::default()
                },
                spec: Some(PersistentVolumeClaimSpec {
                    access_modes: Some(vec!["ReadWriteOnce".into()]),
                    storage_class_name: spec.storage.storage_class_name.clone(),
                    resources: Some(VolumeResourceRequirements {
                        requests: Some(BTreeMap::from([(
                            "storage".to_owned(),
                            Quantity(spec.storage.size.clone()),
                        )])),
                        ..VolumeResourceRequirements::default()
                    }),
                    ..PersistentVolumeClaimSpec::default()
                }),
                ..PersistentVolumeClaim::default()
            }]),
            ..StatefulSetSpec::default()
        }),
        ..StatefulSet::default()
    };

    let network_policy = spec.security.network_policy.then(|| network_policy(cluster, ctx));
    Desired { config_map, headless, client, pdb, stateful_set, network_policy }
}

/// Admits to the replicas' gRPC port only the cluster's own replicas, the operator and
/// pods labelled [`CLIENT_LABEL`]`: <cluster>` in any namespace; the admin port (the
/// cluster-admin methods, which the gRPC port refuses) only the operator; the metrics port from
/// anywhere (it serves counters, not data). Traffic out is not restricted: backups and
/// telemetry go where the spec says.
fn network_policy(cluster: &PlaitCluster, ctx: &PlanContext) -> NetworkPolicy {
    let name = cluster.name_any();
    let port = |name: &str| NetworkPolicyPort {
        port: Some(IntOrString::String(name.to_owned())),
        protocol: Some("TCP".into()),
        ..NetworkPolicyPort::default()
    };
    let pods = |labels: BTreeMap<String, String>| LabelSelector {
        match_labels: Some(labels),
        ..LabelSelector::default()
    };
    let operator_namespace = LabelSelector {
        match_labels: ctx
            .operator_namespace
            .as_ref()
            .map(|ns| BTreeMap::from([("kubernetes.io/metadata.name".to_owned(), ns.clone())])),
        ..LabelSelector::default()
    };
    let operator = NetworkPolicyPeer {
        namespace_selector: Some(operator_namespace),
        pod_selector: Some(pods(BTreeMap::from([(
            OPERATOR_POD_LABEL.0.to_owned(),
            OPERATOR_POD_LABEL.1.to_owned(),
        )]))),
        ..Default::default()
    };
    NetworkPolicy {
        metadata: meta(cluster, name.clone()),
        spec: Some(NetworkPolicySpec {
            pod_selector: Some(pods(selector_labels(&name))),
            policy_types: Some(vec!["Ingress".into()]),
            ingress: Some(vec![
                NetworkPolicyIngressRule {
                    from: Some(vec![
                        NetworkPolicyPeer {
                            pod_selector: Some(pods(selector_labels(&name))),
                            ..Default::default()
                        },
                        operator.clone(),
                        NetworkPolicyPeer {
                            namespace_selector: Some(LabelSelector::default()),
                            pod_selector: Some(pods(BTreeMap::from([(
                                CLIENT_LABEL.to_owned(),
                                name.clone(),
                            )]))),
                            ..Default::default()
                        },
                    ]),
                    ports: Some(vec![port("grpc")]),
                },
                // The cluster-admin methods: the operator only.
                NetworkPolicyIngressRule { from: Some(vec![operator]), ports: Some(vec![port("admin")]) },
                NetworkPolicyIngressRule { from: None, ports: Some(vec![port("metrics")]) },
            ]),
            ..NetworkPolicySpec::default()
        }),
    }
}

/// The projected volume every replica of a secured cluster mounts at
/// [`security::TLS_DIR`]: the auth file and CA, and each replica's certificate and key
/// as `<pod>.crt` and `<pod>.key` (a StatefulSet gives every pod the same volumes, so a
/// replica picks its own files by its pod name). Every ordinal up to the most a cluster
/// may have is listed, optional, so scaling never changes the pod template.
fn tls_volume(cluster: &str) -> Volume {
    let item = |key: &str, path: String| KeyToPath { key: key.to_owned(), path, mode: None };
    let mut sources = vec![VolumeProjection {
        secret: Some(SecretProjection {
            name: security::auth_secret_name(cluster),
            items: Some(vec![
                item(security::AUTH_FILE, security::AUTH_FILE.to_owned()),
                item(security::CA_FILE, security::CA_FILE.to_owned()),
            ]),
            optional: Some(false),
        }),
        ..VolumeProjection::default()
    }];
    for ordinal in 0..crate::crd::REPLICAS_MAX {
        sources.push(VolumeProjection {
            secret: Some(SecretProjection {
                name: security::replica_tls_secret_name(cluster, ordinal),
                items: Some(vec![
                    item("tls.crt", format!("{cluster}-{ordinal}.crt")),
                    item("tls.key", format!("{cluster}-{ordinal}.key")),
                ]),
                optional: Some(true),
            }),
            ..VolumeProjection::default()
        });
    }
    Volume {
        name: "tls".into(),
        projected: Some(ProjectedVolumeSource { sources: Some(sources), default_mode: Some(0o440) }),
        ..Volume::default()
    }
}

fn env(name: &str, value: impl Into<String>) -> EnvVar {
    EnvVar { name: name.to_owned(), value: Some(value.into()), ..EnvVar::default() }
}

fn restricted_security_context() -> SecurityContext {
    SecurityContext {
        allow_privilege_escalation: Some(false),
        read_only_root_filesystem: Some(true),
        run_as_non_root: Some(true),
        capabilities: Some(Capabilities { drop: Some(vec!["ALL".into()]), ..Capabilities::default() }),
        ..SecurityContext::default()
    }
}

fn pod_template(
    cluster: &PlaitCluster,
    ctx: &PlanContext,
    settings: &BTreeMap<String, String>,
) -> PodTemplateSpec {
    let name = cluster.name_any();
    let spec = &cluster.spec;
    let image = replica_image(cluster, ctx);
    let pull_policy = spec.image_pull_policy.map(|p| p.as_str().to_owned());
    let writer_key_file = format!("{WRITER_KEY_DIR}/{WRITER_KEY_FIELD}");

    let mut env_from = vec![EnvFromSource {
        config_map_ref: Some(ConfigMapEnvSource { name: config_name(&name), optional: Some(false) }),
        ..EnvFromSource::default()
    }];
    let credentials = spec
        .backup
        .as_ref()
        .and_then(|b| b.s3.as_ref())
        .and_then(|s3| s3.credentials_secret.clone())
        .or_else(|| {
            spec.bootstrap.as_ref().and_then(|b| b.s3.as_ref()).and_then(|s3| s3.credentials_secret.clone())
        });
    if let Some(secret) = credentials {
        env_from.push(EnvFromSource {
            secret_ref: Some(SecretEnvSource { name: secret, optional: Some(false) }),
            ..EnvFromSource::default()
        });
    }
    let mounts = vec![
        VolumeMount { name: DATA_VOLUME.into(), mount_path: "/data".into(), ..VolumeMount::default() },
        VolumeMount {
            name: "writer-key".into(),
            mount_path: WRITER_KEY_DIR.into(),
            read_only: Some(true),
            ..VolumeMount::default()
        },
    ];
    let tls = spec.security.tls != TlsMode::Disabled;
    let mut replica_mounts = mounts.clone();
    let mut volumes = vec![Volume {
        name: "writer-key".into(),
        secret: Some(SecretVolumeSource {
            secret_name: Some(writer_key_secret_name(cluster)),
            default_mode: Some(0o440),
            ..SecretVolumeSource::default()
        }),
        ..Volume::default()
    }];
    let mut replica_env = vec![
        EnvVar {
            name: "POD_NAME".into(),
            value_from: Some(EnvVarSource {
                field_ref: Some(ObjectFieldSelector {
                    field_path: "metadata.name".into(),
                    api_version: None,
                }),
                ..EnvVarSource::default()
            }),
            ..EnvVar::default()
        },
        env("PLAIT_LISTEN", format!("0.0.0.0:{GRPC_PORT}")),
        env("PLAIT_METRICS_LISTEN", format!("0.0.0.0:{METRICS_PORT}")),
        // The cluster-admin methods on a port of their own, for the operator alone.
        env("PLAIT_ADMIN_LISTEN", format!("0.0.0.0:{ADMIN_PORT}")),
        env("PLAIT_DATA_DIR", DATA_DIR),
        env("PLAIT_WRITER_KEY_FILE", writer_key_file.clone()),
    ];
    if tls {
        let dir = security::TLS_DIR;
        replica_env.extend([
            env("PLAIT_TLS_CERT", format!("{dir}/$(POD_NAME).crt")),
            env("PLAIT_TLS_KEY", format!("{dir}/$(POD_NAME).key")),
            env("PLAIT_TLS_CLIENT_CA", format!("{dir}/{}", security::CA_FILE)),
            env("PLAIT_AUTH_FILE", format!("{dir}/{}", security::AUTH_FILE)),
        ]);
        replica_mounts.push(VolumeMount {
            name: "tls".into(),
            mount_path: dir.into(),
            read_only: Some(true),
            ..VolumeMount::default()
        });
        volumes.push(tls_volume(&name));
    } else {
        // Plaintext on the pod network, by the spec's explicit choice.
        replica_env.push(env("PLAIT_INSECURE", "true"));
    }
    // Liveness asks whether the process serves at all (the overall health service, or
    // /healthz); readiness asks whether the replica is ready for clients: not draining,
    // not poisoned, caught up with the members it can reach (`plait.v1.Ready`, or
    // /readyz). The kubelet's gRPC probe speaks plaintext only, so a TLS replica is
    // probed over HTTP on its metrics port instead.
    let probe = |ready: bool, period: i32, failures: i32| Probe {
        grpc: (!tls).then(|| GRPCAction {
            port: i32::from(GRPC_PORT),
            service: ready.then(|| READY_SERVICE.to_owned()),
        }),
        http_get: tls.then(|| HTTPGetAction {
            path: Some(if ready { "/readyz" } else { "/healthz" }.into()),
            port: IntOrString::String("metrics".into()),
            ..HTTPGetAction::default()
        }),
        period_seconds: Some(period),
        failure_threshold: Some(failures),
        ..Probe::default()
    };

    let replica = Container {
        name: "plaitd".into(),
        image: Some(image.clone()),
        image_pull_policy: pull_policy.clone(),
        args: Some(serve_args(cluster)),
        env: Some(replica_env),
        env_from: Some(env_from.clone()),
        ports: Some(vec![
            ContainerPort {
                name: Some("grpc".into()),
                container_port: i32::from(GRPC_PORT),
                ..ContainerPort::default()
            },
            ContainerPort {
                name: Some("metrics".into()),
                container_port: i32::from(METRICS_PORT),
                ..ContainerPort::default()
            },
            ContainerPort {
                name: Some("admin".into()),
                container_port: i32::from(ADMIN_PORT),
                ..ContainerPort::default()
            },
        ]),
        readiness_probe: Some(probe(true, 5, 3)),
        liveness_probe: Some(probe(false, 10, 6)),
        startup_probe: Some(probe(false, 2, 900)),
        resources: spec.resources.clone(),
        security_context: Some(restricted_security_context()),
        volume_mounts: Some(replica_mounts),
        ..Container::default()
    };

    // A new cluster from a backup: every replica restores before it first serves. The
    // init container does nothing on later starts (the data directory is no longer empty).
    let init_containers = spec.bootstrap.as_ref().map(|bootstrap| {
        let mut args = vec![
            "restore".to_owned(),
            "--from".to_owned(),
            bootstrap.from.clone(),
            "--skip-if-initialized".to_owned(),
        ];
        for log in &bootstrap.logs {
            args.push("--log".to_owned());
            args.push(log.clone());
        }
        vec![Container {
            name: "restore".into(),
            image: Some(image.clone()),
            image_pull_policy: pull_policy.clone(),
            args: Some(args),
            env: Some(vec![
                env("PLAIT_DATA_DIR", DATA_DIR),
                env("PLAIT_WRITER_KEY_FILE", writer_key_file.clone()),
            ]),
            env_from: Some(env_from.clone()),
            resources: spec.resources.clone(),
            security_context: Some(restricted_security_context()),
            volume_mounts: Some(mounts.clone()),
            ..Container::default()
        }]
    });

    let scheduling = spec.scheduling.clone().unwrap_or_default();
    let spread = if scheduling.topology_spread_constraints.is_empty() {
        vec![TopologySpreadConstraint {
            max_skew: 1,
            topology_key: "kubernetes.io/hostname".into(),
            when_unsatisfiable: "ScheduleAnyway".into(),
            label_selector: Some(LabelSelector {
                match_labels: Some(selector_labels(&name)),
                ..LabelSelector::default()
            }),
            ..TopologySpreadConstraint::default()
        }]
    } else {
        scheduling.topology_spread_constraints.clone()
    };

    let mut pod_labels = labels(&name);
    pod_labels.retain(|k, _| k != "app.kubernetes.io/managed-by");
    PodTemplateSpec {
        metadata: Some(ObjectMeta {
            labels: Some(pod_labels),
            annotations: Some(BTreeMap::from([("plait.dev/config-hash".to_owned(), fingerprint(settings))])),
            ..ObjectMeta::default()
        }),
        spec: Some(PodSpec {
            containers: vec![replica],
            init_containers,
            termination_grace_period_seconds: Some(30),
            security_context: Some(PodSecurityContext {
                run_as_non_root: Some(true),
                run_as_user: Some(REPLICA_UID),
                run_as_group: Some(REPLICA_UID),
                fs_group: Some(REPLICA_UID),
                seccomp_profile: Some(SeccompProfile {
                    type_: "RuntimeDefault".into(),
                    ..SeccompProfile::default()
                }),
                ..PodSecurityContext::default()
            }),
            // Replicas never call the Kubernetes API.
            automount_service_account_token: Some(false),
            volumes: Some(volumes),
            node_selector: (!scheduling.node_selector.is_empty()).then_some(scheduling.node_selector),
            tolerations: (!scheduling.tolerations.is_empty()).then_some(scheduling.tolerations),
            affinity: scheduling.affinity,
            topology_spread_constraints: Some(spread),
            priority_class_name: scheduling.priority_class_name,
            ..PodSpec::default()
        }),
    }
}

/// What a probe of one replica found.
#[derive(Clone, Debug, PartialEq, Eq)]
pub(crate) enum Probed {
    Answered(ReplicaStatus),
    Unreachable(String),
}

impl Probed {
    pub(crate) fn status(&self) -> Option<&ReplicaStatus> {
        match self {
            Probed::Answered(s) => Some(s),
            Probed::Unreachable(_) => None,
        }
    }

    /// Able to serve: answering, writable, not draining. Enough to take a backup from
    /// or to read a cluster's logs through.
    pub(crate) fn ready(&self) -> bool {
        self.status().is_some_and(|s| s.writable && !s.draining)
    }

    /// Ready for clients as the replica itself reports it: serving and caught up with
    /// the members it reaches. What the member list and the Ready condition count.
    pub(crate) fn caught_up(&self) -> bool {
        self.ready() && self.status().is_some_and(|s| s.not_ready.is_none())
    }
}

/// Keeps the volume claim template of the StatefulSet that exists: the API server
/// refuses changes to it, so a grown `spec.storage.size` reaches the claims by patching
/// them (`storage.rs`), and the template keeps the size the cluster was created with.
pub(crate) fn keep_claim_template_size(desired: &mut StatefulSet, existing: &StatefulSet) {
    let storage = |sts: &StatefulSet| {
        sts.spec
            .as_ref()
            .and_then(|s| s.volume_claim_templates.as_ref())
            .and_then(|t| t.first())
            .and_then(|t| t.spec.as_ref())
            .and_then(|s| s.resources.as_ref())
            .and_then(|r| r.requests.as_ref())
            .and_then(|r| r.get("storage"))
            .cloned()
    };
    let Some(size) = storage(existing) else { return };
    if let Some(requests) = desired
        .spec
        .as_mut()
        .and_then(|s| s.volume_claim_templates.as_mut())
        .and_then(|t| t.first_mut())
        .and_then(|t| t.spec.as_mut())
        .and_then(|s| s.resources.as_mut())
        .and_then(|r| r.requests.as_mut())
    {
        requests.insert("storage".to_owned(), size);
    }
}

/// The next scaling step, from the desired replica count and the StatefulSet's current
/// one (`None`: no StatefulSet yet).
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub(crate) enum ScaleStep {
    /// Keep (or create) the StatefulSet at this many replicas.
    Hold(i32),
    /// Grow to `to`: new replicas catch up from their peers.
    Up { from: i32, to: i32 },
    /// Shrink by one: drain the highest ordinal, then remove it.
    Down { leaving: i32 },
}

pub(crate) fn scale_step(desired: i32, current: Option<i32>) -> ScaleStep {
    match current {
        None => ScaleStep::Hold(desired),
        Some(current) if current < desired => ScaleStep::Up { from: current, to: desired },
        Some(current) if current > desired => ScaleStep::Down { leaving: current - 1 },
        Some(current) => ScaleStep::Hold(current),
    }
}

/// The member set to send and to whom.
#[derive(Clone, Debug, PartialEq, Eq)]
pub(crate) struct MembershipPlan {
    pub generation: u64,
    pub addresses: Vec<String>,
    /// Ordinals to send `SetMembers` to.
    pub send_to: Vec<i32>,
}

/// Decides the member generation and who must hear of it. A new address list, or a
/// replica reporting a generation above the recorded one (the status was lost), takes a
/// new generation above everything seen, sent to every answering replica; otherwise the
/// recorded generation goes to the answering replicas that are behind it (restarted with
/// a wiped data directory, or missed the last update).
pub(crate) fn membership(
    recorded_generation: u64,
    recorded_addresses: &[String],
    addresses: Vec<String>,
    probes: &[(i32, Probed)],
) -> MembershipPlan {
    let answering: Vec<(i32, &ReplicaStatus)> =
        probes.iter().filter_map(|(ordinal, p)| p.status().map(|s| (*ordinal, s))).collect();
    let highest_reported = answering.iter().map(|(_, s)| s.members_generation).max().unwrap_or(0);
    if addresses != recorded_addresses || highest_reported > recorded_generation {
        let generation = recorded_generation.max(highest_reported) + 1;
        return MembershipPlan {
            generation,
            addresses,
            send_to: answering.iter().map(|(o, _)| *o).collect(),
        };
    }
    let send_to = answering
        .iter()
        .filter(|(_, s)| s.members_generation < recorded_generation)
        .map(|(o, _)| *o)
        .collect();
    MembershipPlan { generation: recorded_generation, addresses, send_to }
}

/// Everything the status is computed from.
#[derive(Clone, Debug, Default)]
pub(crate) struct Observation {
    pub generation: Option<i64>,
    pub desired_replicas: i32,
    /// The StatefulSet's replicas after this reconcile.
    pub replicas: i32,
    pub invalid_spec: Option<String>,
    /// Probes of ordinals `0..replicas` (and the leaving one while it drains).
    pub probes: Vec<(i32, Probed)>,
    pub addresses: BTreeMap<i32, String>,
    pub members_generation: u64,
    pub member_addresses: Vec<String>,
    /// A scale-down waiting on a drain, and why.
    pub drain_blocked: Option<String>,
    /// Set when a membership update failed to reach a replica.
    pub membership_errors: Vec<String>,
    /// The newest backup of the cluster: (name, phase, error).
    pub latest_backup: Option<(String, String, Option<String>)>,
    pub backup_configured: bool,
    /// Volumes still growing, and volumes that should grow but cannot.
    pub storage: crate::storage::StorageObservation,
    /// The image recorded in the status.
    pub image: Option<String>,
    /// Where a roll of the pod template stands.
    pub rollout: Rollout,
}

/// A Kubernetes quantity in bytes (or units), for the forms `spec.storage.size` and
/// claims use: digits with an optional fraction, then an optional binary (`Ki`..`Ei`) or
/// decimal (`k`..`E`) suffix. `None` for anything else (exponents, milli-units).
pub(crate) fn quantity_bytes(quantity: &str) -> Option<u128> {
    let split = quantity.find(|c: char| !c.is_ascii_digit() && c != '.').unwrap_or(quantity.len());
    let (number, suffix) = quantity.split_at(split);
    let multiplier: u128 = match suffix {
        "" => 1,
        "Ki" => 1 << 10,
        "Mi" => 1 << 20,
        "Gi" => 1 << 30,
        "Ti" => 1 << 40,
        "Pi" => 1 << 50,
        "Ei" => 1 << 60,
        "k" => 1_000,
        "M" => 1_000_000,
        "G" => 1_000_000_000,
        "T" => 1_000_000_000_000,
        "P" => 1_000_000_000_000_000,
        "E" => 1_000_000_000_000_000_000,
        _ => return None,
    };
    let (whole, fraction) = number.split_once('.').unwrap_or((number, ""));
    if whole.is_empty() || whole.len() > 20 || fraction.len() > 9 || fraction.contains('.') {
        return None;
    }
    let scale = 10u128.pow(fraction.len() as u32);
    let whole: u128 = whole.parse().ok()?;
    let fraction: u128 = if fraction.is_empty() { 0 } else { fraction.parse().ok()? };
    // Rounded up, as Kubernetes rounds a fractional byte count.
    Some((whole * scale + fraction).checked_mul(multiplier)?.div_ceil(scale))
}

fn condition(type_: &str, ok: bool, reason: &str, message: String) -> (String, bool, String, String) {
    (type_.to_owned(), ok, reason.to_owned(), message)
}

/// Replicas the PodDisruptionBudget lets voluntary disruptions take at once: what the
/// spec asks, but never all of them.
pub(crate) fn disruptions_allowed(max_unavailable: i32, replicas: i32) -> i32 {
    max_unavailable.clamp(0, (replicas - 1).max(0))
}

/// The annotation naming replica pods (comma-separated) that may be removed on scale-down
/// without a drain: for a pod that is gone for good, whose drain can never succeed.
pub(crate) const SKIP_DRAIN_ANNOTATION: &str = "plait.dev/skip-drain";

/// Whether the annotation lets pod `pod` leave without a drain.
pub(crate) fn skip_drain(cluster: &PlaitCluster, pod: &str) -> bool {
    cluster.annotations().get(SKIP_DRAIN_ANNOTATION).is_some_and(|v| v.split(',').any(|p| p.trim() == pod))
}

/// The annotation that pauses reconciling a cluster, when `"true"`.
pub(crate) const PAUSED_ANNOTATION: &str = "plait.dev/paused";

/// Whether the cluster is paused by its annotation.
pub(crate) fn paused(cluster: &PlaitCluster) -> bool {
    cluster.annotations().get(PAUSED_ANNOTATION).is_some_and(|v| v == "true")
}

/// A paused cluster's conditions: the ones it had, with `Paused` True (its transition
/// time kept while it stays paused).
pub(crate) fn paused_conditions(
    previous: &[Condition],
    generation: Option<i64>,
    message: String,
    now: &Time,
) -> Vec<Condition> {
    let mut list: Vec<Condition> = previous.iter().filter(|c| c.type_ != "Paused").cloned().collect();
    let before = previous.iter().find(|c| c.type_ == "Paused");
    let last_transition_time = match before {
        Some(c) if c.status == "True" => c.last_transition_time.clone(),
        _ => now.clone(),
    };
    list.push(Condition {
        type_: "Paused".into(),
        status: "True".into(),
        reason: "PausedByAnnotation".into(),
        message,
        observed_generation: generation,
        last_transition_time,
    });
    list
}

/// `Converged`: every member compared each log's digest with each peer at the same heads
/// and found it equal. A mismatch (a replica lost or corrupted an entry) says where; it
/// clears once the replicas' reconcile repaired it and the next comparison is equal.
fn converged(members: &[&(i32, Probed)]) -> (String, bool, String, String) {
    let mismatches: Vec<String> = members
        .iter()
        .filter_map(|(o, p)| p.status().map(|s| (o, s)))
        .flat_map(|(o, s)| s.digest_mismatches.iter().map(move |m| format!("replica {o}: {m}")))
        .collect();
    if !mismatches.is_empty() {
        return condition(
            "Converged",
            false,
            "DigestMismatch",
            format!("same heads, different entries: {}", mismatches.join(", ")),
        );
    }
    let pending: Vec<String> = members
        .iter()
        .filter_map(|(o, p)| match p.status() {
            None => Some(format!("replica {o} is unreachable")),
            Some(s) if s.unverified > 0 => Some(format!("replica {o}: {} not compared yet", s.unverified)),
            Some(_) => None,
        })
        .collect();
    if pending.is_empty() {
        condition(
            "Converged",
            true,
            "DigestsEqual",
            "every replica found its logs' digests equal to its peers' at the same heads".into(),
        )
    } else {
        condition("Converged", false, "NotYetVerified", pending.join(", "))
    }
}

/// The conditions and phase of an observation. Transition times are kept from `previous`
/// when a condition's status did not change, so an unchanged cluster gets an unchanged
/// status.
pub(crate) fn conditions(obs: &Observation, previous: &[Condition], now: &Time) -> (String, Vec<Condition>) {
    let members: Vec<&(i32, Probed)> = obs.probes.iter().filter(|(o, _)| *o < obs.replicas).collect();
    let ready = members.iter().filter(|(_, p)| p.caught_up()).count() as i32;
    let unreachable: Vec<String> = members
        .iter()
        .filter_map(|(o, p)| match p {
            Probed::Unreachable(e) => Some(format!("replica {o}: {e}")),
            Probed::Answered(s) if !s.writable => {
                Some(format!("replica {o}: not writable (durability error)"))
            }
            Probed::Answered(_) => None,
        })
        .collect();
    let scaling = obs.replicas != obs.desired_replicas;
    let all_ready = !scaling && ready == obs.desired_replicas;
    let consistent = members.len() as i32 == obs.replicas
        && members
            .iter()
            .all(|(_, p)| p.status().is_some_and(|s| s.members_generation == obs.members_generation));

    // Serving writes: some member answers, is writable and not draining, whether or not
    // every replica is ready.
    let serving = members.iter().filter(|(_, p)| p.ready()).count();
    let mut list = Vec::new();
    list.push(if serving > 0 {
        condition(
            "Available",
            true,
            "ReplicasServing",
            format!("{serving} of {} replicas serve writes", obs.replicas),
        )
    } else {
        condition("Available", false, "NoReplicaServing", "no replica serves writes".into())
    });
    if let Some(invalid) = &obs.invalid_spec {
        list.push(condition("Ready", false, "InvalidSpec", invalid.clone()));
        list.push(condition("Progressing", false, "InvalidSpec", "the spec must be fixed first".into()));
        list.push(condition("Degraded", true, "InvalidSpec", invalid.clone()));
    } else {
        list.push(if all_ready {
            condition(
                "Ready",
                true,
                "AllReplicasReady",
                format!("{ready} of {} replicas ready", obs.desired_replicas),
            )
        } else {
            condition(
                "Ready",
                false,
                "ReplicasNotReady",
                format!("{ready} of {} replicas ready", obs.desired_replicas),
            )
        });
        list.push(if let Some(blocked) = &obs.drain_blocked {
            condition("Progressing", true, "Draining", blocked.clone())
        } else if scaling {
            condition(
                "Progressing",
                true,
                "Scaling",
                format!("scaling from {} to {} replicas", obs.replicas, obs.desired_replicas),
            )
        } else if let Some(progress) = &obs.rollout.progress {
            condition("Progressing", true, "RollingUpdate", progress.clone())
        } else if !all_ready {
            condition("Progressing", true, "WaitingForReplicas", format!("{ready} of {} ready", obs.replicas))
        } else if !obs.storage.resizing.is_empty() {
            let names: Vec<&str> = obs.storage.resizing.iter().map(|v| v.name.as_str()).collect();
            condition(
                "Progressing",
                true,
                "ResizingVolumes",
                format!("volumes growing: {}", names.join(", ")),
            )
        } else {
            condition("Progressing", false, "Reconciled", "the cluster matches its spec".into())
        });
        let mut problems = unreachable.clone();
        problems.extend(obs.drain_blocked.iter().filter(|b| b.contains("failed")).cloned());
        problems.extend(obs.membership_errors.iter().cloned());
        problems.extend(obs.storage.problems.iter().cloned());
        if let Some((name, phase, error)) = &obs.latest_backup
            && phase == "Failed"
        {
            problems.push(format!("backup {name} failed: {}", error.clone().unwrap_or_default()));
        }
        list.push(if problems.is_empty() {
            condition("Degraded", false, "AsExpected", "no problems seen".into())
        } else {
            condition("Degraded", true, "ReplicaProblems", problems.join("; "))
        });
    }
    list.push(if consistent {
        condition(
            "MembershipConsistent",
            true,
            "AllMembersCurrent",
            format!("every replica has member generation {}", obs.members_generation),
        )
    } else {
        let behind: Vec<String> = members
            .iter()
            .filter(|(_, p)| p.status().is_none_or(|s| s.members_generation != obs.members_generation))
            .map(|(o, p)| match p.status() {
                Some(s) => format!("replica {o} has generation {}", s.members_generation),
                None => format!("replica {o} is unreachable"),
            })
            .collect();
        condition(
            "MembershipConsistent",
            false,
            "MembersBehind",
            format!("want generation {}: {}", obs.members_generation, behind.join(", ")),
        )
    });
    list.push(converged(&members));
    list.push(condition(
        "Paused",
        false,
        "Reconciling",
        format!("the operator reconciles; {PAUSED_ANNOTATION}: \"true\" pauses it"),
    ));
    list.push(match (&obs.latest_backup, obs.backup_configured) {
        (Some((name, phase, _)), _) if phase == "Completed" => {
            condition("BackupReady", true, "BackupCompleted", format!("latest backup {name} completed"))
        }
        (Some((name, phase, error)), _) if phase == "Failed" => condition(
            "BackupReady",
            false,
            "BackupFailed",
            format!("latest backup {name} failed: {}", error.clone().unwrap_or_default()),
        ),
        (Some((name, phase, _)), _) => {
            condition("BackupReady", false, "BackupInProgress", format!("backup {name} is {phase}"))
        }
        (None, true) => condition("BackupReady", false, "NoBackupYet", "no backup has completed yet".into()),
        (None, false) => condition(
            "BackupReady",
            false,
            "NotConfigured",
            "spec.backup is not set and no backup was taken".into(),
        ),
    });

    let conditions = list
        .into_iter()
        .map(|(type_, ok, reason, message)| {
            let status = if ok { "True" } else { "False" }.to_owned();
            let previous = previous.iter().find(|c| c.type_ == type_);
            let last_transition_time = match previous {
                Some(p) if p.status == status => p.last_transition_time.clone(),
                _ => now.clone(),
            };
            Condition {
                type_,
                status,
                reason,
                message,
                observed_generation: obs.generation,
                last_transition_time,
            }
        })
        .collect();

    let phase = if obs.invalid_spec.is_some() {
        "Failed"
    } else if scaling {
        "Scaling"
    } else if all_ready {
        "Running"
    } else if ready == 0 {
        "Pending"
    } else {
        "Degraded"
    };
    (phase.to_owned(), conditions)
}

/// The member list of the status.
/// An unreachable member keeps the identity it last showed (`previous`), so the status
/// still says which incarnation is missing and a new one is recognised when it answers.
pub(crate) fn member_statuses(
    cluster: &str,
    obs: &Observation,
    previous: &[MemberStatus],
) -> Vec<MemberStatus> {
    obs.probes
        .iter()
        .map(|(ordinal, probe)| {
            let address = obs.addresses.get(ordinal).cloned().unwrap_or_default();
            let name = format!("{cluster}-{ordinal}");
            match probe {
                Probed::Answered(s) => MemberStatus {
                    name,
                    address,
                    epoch: s.epoch.clone(),
                    node_id: s.node_id.clone(),
                    ready: probe.caught_up(),
                    lag: i64::try_from(s.lag).unwrap_or(i64::MAX),
                    members_generation: i64::try_from(s.members_generation).unwrap_or(i64::MAX),
                    draining: s.draining,
                    message: if s.draining {
                        "draining: refuses local writes".into()
                    } else if !s.writable {
                        "not writable".into()
                    } else if let Some(reason) = &s.not_ready {
                        format!("not ready: {reason}")
                    } else {
                        String::new()
                    },
                },
                Probed::Unreachable(error) => {
                    let known = previous.iter().find(|m| m.name == name);
                    MemberStatus {
                        epoch: known.map(|m| m.epoch.clone()).unwrap_or_default(),
                        node_id: known.map(|m| m.node_id.clone()).unwrap_or_default(),
                        name,
                        address,
                        ready: false,
                        message: error.clone(),
                        ..MemberStatus::default()
                    }
                }
            }
        })
        .collect()
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::crd::{BackupSpec, BootstrapSpec, NamedDestination, RetentionSpec, StorageSpec};

    fn cluster(replicas: i32) -> PlaitCluster {
        let mut c = PlaitCluster::new("db", PlaitClusterSpec::with_replicas(replicas));
        c.metadata.namespace = Some("ns".into());
        c.metadata.uid = Some("uid-1".into());
        c
    }

    fn ctx() -> PlanContext {
        PlanContext { replica_image: "plait/plaitd:test".into(), operator_namespace: None }
    }

    fn answered(generation: u64) -> Probed {
        Probed::Answered(ReplicaStatus {
            writable: true,
            members_generation: generation,
            ..ReplicaStatus::default()
        })
    }

    /// The objects carry the cluster as controlling owner, select the cluster's pods only,
    /// and the StatefulSet takes the replica count the scaling plan chose, not the spec's.
    #[test]
    fn desired_objects_are_owned_and_scoped() {
        let c = cluster(3);
        let d = desired(&c, &ctx(), 4);
        for meta in [
            &d.config_map.metadata,
            &d.headless.metadata,
            &d.client.metadata,
            &d.pdb.metadata,
            &d.stateful_set.metadata,
        ] {
            let owner = &meta.owner_references.as_ref().unwrap()[0];
            assert_eq!(
                (owner.kind.as_str(), owner.name.as_str(), owner.controller),
                ("PlaitCluster", "db", Some(true))
            );
            assert_eq!(meta.namespace.as_deref(), Some("ns"));
        }
        let sts = d.stateful_set.spec.unwrap();
        assert_eq!(sts.replicas, Some(4));
        assert_eq!(sts.service_name.as_deref(), Some("db-headless"));
        assert_eq!(sts.selector.match_labels, Some(selector_labels("db")));
        let pod = sts.template.spec.unwrap();
        let container = &pod.containers[0];
        assert_eq!(container.image.as_deref(), Some("plait/plaitd:test"));
        let sc = container.security_context.as_ref().unwrap();
        assert_eq!((sc.read_only_root_filesystem, sc.allow_privilege_escalation), (Some(true), Some(false)));
        assert!(pod.init_containers.is_none(), "no restore without bootstrap");
        assert_eq!(d.headless.spec.unwrap().cluster_ip.as_deref(), Some("None"));
        assert_eq!(d.pdb.spec.unwrap().max_unavailable, Some(IntOrString::Int(1)));
    }

    /// The budget is what the spec asks, but never every replica: a one-replica
    /// cluster's only pod is never evicted, whatever the spec says.
    #[test]
    fn disruption_budget_never_allows_all_replicas() {
        let budget = |max: i32, replicas: i32| {
            let mut c = cluster(replicas);
            c.spec.pod_disruption_budget.max_unavailable = max;
            desired(&c, &ctx(), replicas).pdb.spec.unwrap().max_unavailable
        };
        assert_eq!(budget(1, 1), Some(IntOrString::Int(0)));
        assert_eq!(budget(5, 1), Some(IntOrString::Int(0)));
        assert_eq!(budget(1, 3), Some(IntOrString::Int(1)));
        assert_eq!(budget(2, 5), Some(IntOrString::Int(2)));
        assert_eq!(budget(9, 5), Some(IntOrString::Int(4)));
        assert_eq!(budget(0, 5), Some(IntOrString::Int(0)));
    }

    /// Readiness asks the service plaitd drives from draining, poisoning and catch-up
    /// (`plait.v1.Ready`, or `/readyz` with TLS); liveness and startup ask only whether the
    /// process serves (the overall service, or `/healthz`).
    #[test]
    fn probes_ask_readiness_and_liveness_apart() {
        let probes = |c: &PlaitCluster| {
            let pod = desired(c, &ctx(), 3).stateful_set.spec.unwrap().template.spec.unwrap();
            let container = pod.containers[0].clone();
            [
                container.readiness_probe.unwrap(),
                container.liveness_probe.unwrap(),
                container.startup_probe.unwrap(),
            ]
        };
        let grpc = |p: &Probe| p.grpc.as_ref().map(|g| g.service.clone());
        let http = |p: &Probe| p.http_get.as_ref().and_then(|h| h.path.clone());

        let mut c = cluster(3);
        c.spec.security.tls = TlsMode::Disabled;
        let [ready, live, startup] = probes(&c);
        assert_eq!(grpc(&ready), Some(Some(READY_SERVICE.to_owned())));
        assert_eq!(grpc(&live), Some(None));
        assert_eq!(grpc(&startup), Some(None));
        assert!(ready.http_get.is_none() && live.http_get.is_none());

        let [ready, live, startup] = probes(&cluster(3));
        assert_eq!(http(&ready).as_deref(), Some("/readyz"));
        assert_eq!(http(&live).as_deref(), Some("/healthz"));
        assert_eq!(http(&startup).as_deref(), Some("/healthz"));
        assert!(ready.grpc.is_none(), "the kubelet's gRPC probe cannot speak TLS");
    }

    /// A replica that answers but reports itself not ready (catching up) is not counted
    /// ready in the member list or the Ready condition, and says why.
    #[test]
    fn a_catching_up_replica_is_not_counted_ready() {
        let mut behind = ReplicaStatus { writable: true, members_generation: 1, ..ReplicaStatus::default() };
        behind.not_ready = Some("catching up with member x: first round not finished".into());
        let obs = Observation {
            generation: Some(2),
            desired_replicas: 2,
            replicas: 2,
            probes: vec![(0, answered(1)), (1, Probed::Answered(behind))],
            members_generation: 1,
            ..Observation::default()
        };
        let (_, conditions) = conditions(&obs, &[], &Time(jiff::Timestamp::from_second(1_000).unwrap()));
        let ready = conditions.iter().find(|c| c.type_ == "Ready").unwrap();
        assert_eq!(ready.status, "False");
        let available = conditions.iter().find(|c| c.type_ == "Available").unwrap();
        assert_eq!(available.status, "True", "both replicas serve writes: available, not all ready");
    }

    /// Quantities compare by value whatever their notation; what the CRD's pattern does
    /// not admit is not a size.
    #[test]
    fn quantities_are_read_as_bytes() {
        assert_eq!(quantity_bytes("10Gi"), Some(10 << 30));
        assert_eq!(quantity_bytes("1.5Gi"), quantity_bytes("1536Mi"));
        assert_eq!(quantity_bytes("1G"), Some(1_000_000_000));
        assert_eq!(quantity_bytes("512"), Some(512));
        assert_eq!(quantity_bytes("0.5k"), Some(500));
        assert!(quantity_bytes("1G") < quantity_bytes("1Gi"));
        for bad in ["", "Gi", "1.2.3Gi", "1e3", "100m", "ten", "1 Gi", "-1Gi"] {
            assert_eq!(quantity_bytes(bad), None, "{bad:?}");
        }
    }

    /// The StatefulSet keeps the claim size it was created with (the API server refuses a
    /// changed volume claim template); a new one takes the spec's.
    #[test]
    fn claim_template_keeps_the_size_it_was_created_with() {
        let size = |sts: &StatefulSet| {
            sts.spec.as_ref().unwrap().volume_claim_templates.as_ref().unwrap()[0]
                .spec
                .as_ref()
                .unwrap()
                .resources
                .as_ref()
                .unwrap()
                .requests
                .as_ref()
                .unwrap()["storage"]
                .0
                .clone()
        };
        let mut c = cluster(3);
        c.spec.storage.size = "1Gi".into();
        let existing = desired(&c, &ctx(), 3).stateful_set;
        c.spec.storage.size = "5Gi".into();
        let mut grown = desired(&c, &ctx(), 3).stateful_set;
        assert_eq!(size(&grown), "5Gi");
        keep_claim_template_size(&mut grown, &existing);
        assert_eq!(size(&grown), "1Gi");
    }

    /// A cluster bootstrapped from a backup restores in an init container that skips
    /// data directories already initialized, with the cluster's writer key.
    #[test]
    fn bootstrap_adds_a_restore_init_container() {
        let mut c = cluster(3);
        c.spec.bootstrap =
            Some(BootstrapSpec { from: "s3://backups/db".into(), logs: vec!["orders".into()], s3: None });
        let d = desired(&c, &ctx(), 3);
        let init = d.stateful_set.spec.unwrap().template.spec.unwrap().init_containers.unwrap();
        let args = init[0].args.clone().unwrap();
        assert_eq!(
            args,
            ["restore", "--from", "s3://backups/db", "--skip-if-initialized", "--log", "orders"]
        );
    }

    /// Replicas are started with the cluster's destination as `default` and each extra
    /// one under its name; without `spec.backup` they get none. A reserved or repeated
    /// extra name is an invalid spec.
    #[test]
    fn replicas_get_the_backup_destinations_as_flags() {
        let args = |c: &PlaitCluster| {
            desired(c, &ctx(), 3).stateful_set.spec.unwrap().template.spec.unwrap().containers[0]
                .args
                .clone()
                .unwrap()
        };
        let mut c = cluster(3);
        assert_eq!(args(&c), ["serve"]);
        c.spec.backup = Some(BackupSpec {
            destination: "s3://bucket/db".into(),
            extra_destinations: vec![NamedDestination { name: "offsite".into(), url: "s3://far/db".into() }],
            schedule: None,
            full_every: 0,
            retention: RetentionSpec::default(),
            s3: None,
        });
        assert_eq!(
            args(&c),
            [
                "serve",
                "--backup-owner",
                "ns/db",
                "--backup-destination",
                "default=s3://bucket/db",
                "--backup-destination",
                "offsite=s3://far/db"
            ]
        );
        assert!(validate(&c.spec).is_ok());
        let backup = c.spec.backup.as_mut().unwrap();
        backup.extra_destinations.push(NamedDestination { name: "offsite".into(), url: "s3://x/y".into() });
        assert!(validate(&c.spec).unwrap_err().contains("twice"));
        let backup = c.spec.backup.as_mut().unwrap();
        backup.extra_destinations = vec![NamedDestination { name: "default".into(), url: "s3://x/y".into() }];
        assert!(validate(&c.spec).unwrap_err().contains("another name"));
        // A restored cluster never backs up where it restored from.
        let backup = c.spec.backup.as_mut().unwrap();
        backup.extra_destinations =
            vec![NamedDestination { name: "offsite".into(), url: "s3://far/db/".into() }];
        c.spec.bootstrap = Some(BootstrapSpec { from: "s3://far/db".into(), logs: Vec::new(), s3: None });
        assert!(validate(&c.spec).unwrap_err().contains("a destination of its own"));
        c.spec.bootstrap.as_mut().unwrap().from = "s3://far/other".into();
        assert!(validate(&c.spec).is_ok());
    }

    /// A settings change changes the pod template (so replicas roll); the same settings
    /// give the same template.
    #[test]
    fn settings_roll_the_pods() {
        let a = cluster(3);
        let mut b = cluster(3);
        b.spec.settings.insert("PLAIT_CACHE_MIB".into(), "256".into());
        let template = |c: &PlaitCluster| desired(c, &ctx(), 3).stateful_set.spec.unwrap().template;
        assert_eq!(template(&a), template(&a.clone()));
        assert_ne!(template(&a).metadata, template(&b).metadata);
    }

    /// Scale-up goes straight to the target; scale-down takes one replica at a time,
    /// always the highest ordinal.
    #[test]
    fn scaling_steps() {
        assert_eq!(scale_step(3, None), ScaleStep::Hold(3));
        assert_eq!(scale_step(5, Some(3)), ScaleStep::Up { from: 3, to: 5 });
        assert_eq!(scale_step(3, Some(5)), ScaleStep::Down { leaving: 4 });
        assert_eq!(scale_step(3, Some(4)), ScaleStep::Down { leaving: 3 });
        assert_eq!(scale_step(3, Some(3)), ScaleStep::Hold(3));
    }

    /// A new member list takes a generation above everything seen and goes to every
    /// answering replica; an unchanged list goes only to replicas behind (a wiped one).
    #[test]
    fn membership_generations_only_increase() {
        let addrs = vec!["a".to_owned(), "b".to_owned()];
        let probes = vec![(0, answered(4)), (1, Probed::Unreachable("down".into()))];
        let plan = membership(3, &["a".to_owned()], addrs.clone(), &probes);
        assert_eq!((plan.generation, plan.send_to), (5, vec![0]));

        let probes = vec![(0, answered(5)), (1, answered(0))];
        let plan = membership(5, &addrs, addrs.clone(), &probes);
        assert_eq!((plan.generation, plan.send_to), (5, vec![1]), "only the wiped replica hears it");

        let probes = vec![(0, answered(5)), (1, answered(5))];
        assert!(membership(5, &addrs, addrs.clone(), &probes).send_to.is_empty(), "steady: nothing to send");

        // The recorded generation was lost (status reset): go above what replicas report.
        let plan = membership(0, &addrs, addrs.clone(), &probes);
        assert_eq!(plan.generation, 6);
    }

    /// Conditions reflect the observation, and an unchanged observation keeps the
    /// transition times, so a repeated reconcile writes the same status.
    #[test]
    fn conditions_are_stable() {
        let obs = Observation {
            generation: Some(2),
            desired_replicas: 2,
            replicas: 2,
            probes: vec![(0, answered(1)), (1, answered(1))],
            members_generation: 1,
            ..Observation::default()
        };
        let t1 = Time(jiff::Timestamp::from_second(1_000).unwrap());
        let t2 = Time(jiff::Timestamp::from_second(2_000).unwrap());
        let (phase, first) = conditions(&obs, &[], &t1);
        assert_eq!(phase, "Running");
        let get = |list: &[Condition], t: &str| list.iter().find(|c| c.type_ == t).unwrap().status.clone();
        assert_eq!(get(&first, "Ready"), "True");
        assert_eq!(get(&first, "MembershipConsistent"), "True");
        assert_eq!(get(&first, "Degraded"), "False");
        assert_eq!(get(&first, "BackupReady"), "False");
        assert_eq!(get(&first, "Available"), "True");
        let (_, second) = conditions(&obs, &first, &t2);
        assert_eq!(first, second, "nothing changed, nothing written");

        let mut broken = obs.clone();
        broken.probes[1].1 = Probed::Unreachable("connection refused".into());
        let (phase, third) = conditions(&broken, &second, &t2);
        assert_eq!(phase, "Degraded");
        assert_eq!(get(&third, "Ready"), "False");
        assert_eq!(get(&third, "Degraded"), "True");
        assert_eq!(get(&third, "MembershipConsistent"), "False");
        let ready = third.iter().find(|c| c.type_ == "Ready").unwrap();
        assert_eq!(ready.last_transition_time, t2, "a transition is stamped");
    }

    /// `Converged` is true once every member found its digests equal to its peers', says
    /// which replica, log and peer disagree on a mismatch, and waits (false, not yet
    /// verified) while a comparison is outstanding or a member does not answer.
    #[test]
    fn converged_follows_the_digest_comparisons() {
        let obs = |probes: Vec<(i32, Probed)>| Observation {
            desired_replicas: 2,
            replicas: 2,
            probes,
            members_generation: 1,
            ..Observation::default()
        };
        let converged = |obs: &Observation| {
            let (_, list) = conditions(obs, &[], &Time(jiff::Timestamp::UNIX_EPOCH));
            let c = list.into_iter().find(|c| c.type_ == "Converged").unwrap();
            (c.status, c.reason, c.message)
        };
        let (status, reason, _) = converged(&obs(vec![(0, answered(1)), (1, answered(1))]));
        assert_eq!((status.as_str(), reason.as_str()), ("True", "DigestsEqual"));
        let mut waiting = answered(1);
        let mut corrupt = answered(1);
        if let (Probed::Answered(w), Probed::Answered(c)) = (&mut waiting, &mut corrupt) {
            w.unverified = 2;
            c.digest_mismatches = vec!["chat (db-0.db-headless:7070)".into()];
        }
        let (status, reason, message) = converged(&obs(vec![(0, answered(1)), (1, waiting.clone())]));
        assert_eq!((status.as_str(), reason.as_str()), ("False", "NotYetVerified"));
        assert!(message.contains("replica 1: 2 not compared yet"), "{message}");
        let (status, reason, message) = converged(&obs(vec![(0, waiting), (1, corrupt)]));
        assert_eq!((status.as_str(), reason.as_str()), ("False", "DigestMismatch"), "a mismatch wins");
        assert!(message.contains("replica 1: chat (db-0.db-headless:7070)"), "{message}");
        let (status, reason, message) =
            converged(&obs(vec![(0, answered(1)), (1, Probed::Unreachable("refused".into()))]));
        assert_eq!((status.as_str(), reason.as_str()), ("False", "NotYetVerified"));
        assert!(message.contains("replica 1 is unreachable"), "{message}");
    }

    /// An invalid spec fails the cluster with a clear condition.
    #[test]
    fn invalid_spec_is_reported() {
        let mut c = cluster(3);
        c.spec.backup = Some(BackupSpec {
            destination: "s3://bucket/x".into(),
            extra_destinations: Vec::new(),
            schedule: Some("every day at noon".into()),
            full_every: 0,
            retention: RetentionSpec::default(),
            s3: None,
        });
        let error = validate(&c.spec).unwrap_err();
        assert!(error.contains("schedule"), "{error}");
        let obs = Observation { invalid_spec: Some(error), desired_replicas: 3, ..Observation::default() };
        let (phase, list) = conditions(&obs, &[], &Time(jiff::Timestamp::UNIX_EPOCH));
        assert_eq!(phase, "Failed");
        assert!(
            list.iter().any(|c| c.type_ == "Degraded" && c.status == "True" && c.reason == "InvalidSpec")
        );
        let _ = StorageSpec::default();
    }

    /// A roll's next step, from where it stands: nothing to roll without pods or with
    /// every pod at the newest revision (even one catching up); a changed template holds
    /// every pod; then the highest pod not at the revision is released only while the
    /// others are caught up, and one at the revision holds the roll until it is caught up.
    #[test]
    fn a_roll_releases_one_caught_up_replica_at_a_time() {
        let input = |revisions: &[&str], caught_up: &[i32]| RolloutInput {
            replicas: revisions.len() as i32,
            exists: true,
            template_changed: false,
            partition: 3,
            update_revision: Some("new".into()),
            pod_revisions: revisions.iter().enumerate().map(|(o, r)| (o as i32, (*r).to_owned())).collect(),
            caught_up: caught_up.iter().copied().collect(),
        };
        let all = [0, 1, 2];
        let partition = |i: &RolloutInput| rollout(i).partition;

        assert_eq!(rollout(&RolloutInput { pod_revisions: BTreeMap::new(), ..input(&[], &[]) }).partition, 0);
        let done = rollout(&input(&["new", "new", "new"], &[0, 2]));
        assert_eq!((done.partition, done.progress), (0, None), "every pod updated: no roll");
        let changed = RolloutInput { template_changed: true, ..input(&["old", "old", "old"], &all) };
        assert_eq!(partition(&changed), 3);
        let unseen =
            RolloutInput { update_revision: None, partition: 2, ..input(&["old", "old", "old"], &all) };
        assert_eq!(partition(&unseen), 2, "the controller has not seen the template: hold");

        assert_eq!(partition(&input(&["old", "old", "old"], &all)), 2, "highest first");
        let waiting = rollout(&input(&["old", "old", "new"], &[0, 1]));
        assert_eq!(waiting.partition, 2, "replica 2 catches up first");
        assert_eq!(waiting.updated, Some(1));
        assert!(waiting.progress.unwrap().contains("waiting for replica 2"));
        assert_eq!(partition(&input(&["old", "old", "new"], &all)), 1);
        let behind = rollout(&input(&["old", "old", "new"], &[1, 2]));
        assert_eq!(behind.partition, 2, "replica 0 is behind: replica 1 waits");
        assert!(behind.progress.unwrap().contains("once replicas 0 are caught up"));
        assert_eq!(partition(&input(&["old", "new", "new"], &all)), 0);
        // A pod not made yet is released (the controller makes it at the new revision).
        let missing = RolloutInput {
            pod_revisions: BTreeMap::from([(0, "old".to_owned()), (2, "new".to_owned())]),
            ..input(&["old", "old", "old"], &[0, 2])
        };
        assert_eq!(partition(&missing), 1);
    }

    /// The image: `spec.image`, else the recorded one, else the operator's default; the
    /// template carries a hash of itself, which moves with the image.
    #[test]
    fn the_image_is_recorded_and_the_template_hashed() {
        let mut c = cluster(3);
        assert_eq!(replica_image(&c, &ctx()), "plait/plaitd:test");
        c.status = Some(crate::crd::PlaitClusterStatus {
            image: Some("plait/plaitd:old".into()),
            ..Default::default()
        });
        assert_eq!(replica_image(&c, &ctx()), "plait/plaitd:old", "an operator upgrade rolls nothing");
        let hash = |c: &PlaitCluster| {
            desired(c, &ctx(), 3).stateful_set.metadata.annotations.unwrap()[TEMPLATE_HASH_ANNOTATION].clone()
        };
        let before = hash(&c);
        assert_eq!(before, hash(&c), "stable");
        c.spec.image = Some("plait/plaitd:new".into());
        assert_eq!(replica_image(&c, &ctx()), "plait/plaitd:new");
        assert_ne!(before, hash(&c));
        assert_eq!(running_image(&desired(&c, &ctx(), 3).stateful_set).as_deref(), Some("plait/plaitd:new"));
    }
}
