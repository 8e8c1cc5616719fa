//! The operator against a real Kubernetes API server (etcd + kube-apiserver started by
//! the harness) and real `plaitd` processes on loopback. There is no kubelet here, so the
//! test plays it: `Kubelet::sync` makes the replica processes match the StatefulSet the
//! operator applied (running the restore init container's command first, as a kubelet
//! would), and a `StaticResolver` maps each pod to its process's address. The operator
//! runs in-process with the permissions the chart grants and nothing more.

use std::collections::BTreeMap;
use std::path::{Path, PathBuf};
use std::sync::Arc;
use std::time::{Duration, Instant};

use anyhow::{Context as _, bail};
use k8s_openapi::api::apps::v1::StatefulSet;
use k8s_openapi::api::coordination::v1::Lease;
use k8s_openapi::api::core::v1::{ConfigMap, Pod, Secret, Service};
use k8s_openapi::api::events::v1::Event;
use k8s_openapi::api::networking::v1::NetworkPolicy;
use k8s_openapi::api::policy::v1::PodDisruptionBudget;
use k8s_openapi::api::rbac::v1::{ClusterRole, ClusterRoleBinding, Role, RoleBinding};
use kube::api::{ListParams, Patch, PatchParams, PostParams};
use kube::{Api, Client, ResourceExt};
use plait_client::CreateLogOptions;
use plait_core::LogType;
use plait_operator::{
    BackupKind, BackupSpec, BootstrapSpec, Context, GrpcAdmin, LeaseSettings, NamedDestination, PlaitBackup,
    PlaitBackupSpec, PlaitCluster, PlaitClusterSpec, PlanContext, RetentionSpec, Scope, StaticResolver,
    StorageSpec, SystemClock,
};
use plait_tests::Plaitd;
use plait_tests::kube::{ControlPlane, OPERATOR_NAMESPACE, create_namespace, install_crds};
use serde::Deserialize;
use tokio::sync::oneshot;

const CONVERGE_TIMEOUT: Duration = Duration::from_secs(90);

/// Plays the kubelet for one cluster: replica processes follow the StatefulSet.
struct Kubelet {
    client: Client,
    namespace: String,
    cluster: String,
    resolver: Arc<StaticResolver>,
    root: PathBuf,
    replicas: BTreeMap<i32, Plaitd>,
    /// The pod each replica runs for, by uid (`sync_pods` only).
    pod_uids: BTreeMap<i32, String>,
    /// How applications call the replicas: TLS and the token from `<cluster>-client`,
    /// once the operator has made it (plaintext for `tls: Disabled`).
    client_options: Option<plait_client::ClientOptions>,
    /// The operator's own certificate (`admin`), for what the token may not do.
    admin_options: Option<plait_client::ClientOptions>,
}

/// A replica as the test calls it.
#[derive(Clone)]
struct Endpoint {
    address: String,
    options: plait_client::ClientOptions,
}

/// Where a secured pod mounts its certificates, auth file and CA.
const POD_TLS_DIR: &str = "/etc/plait/tls";

impl Kubelet {
    fn new(
        client: Client,
        namespace: &str,
        cluster: &str,
        resolver: Arc<StaticResolver>,
        root: &Path,
    ) -> Kubelet {
        Kubelet {
            client,
            namespace: namespace.to_owned(),
            cluster: cluster.to_owned(),
            resolver,
            root: root.join(cluster),
            replicas: BTreeMap::new(),
            pod_uids: BTreeMap::new(),
            client_options: None,
            admin_options: None,
        }
    }

    /// The volume of replica `ordinal`, and the data directory in it (as `/data/plait`).
    fn volume(&self, ordinal: i32) -> PathBuf {
        self.root.join(format!("{}-{ordinal}", self.cluster))
    }

    fn data_dir(&self, ordinal: i32) -> PathBuf {
        self.volume(ordinal).join("plait")
    }

    fn endpoint(&self, ordinal: i32) -> Endpoint {
        let replica = &self.replicas[&ordinal];
        match &self.client_options {
            Some(options) => Endpoint { address: replica.grpc.to_string(), options: options.clone() },
            None => Endpoint { address: replica.endpoint(), options: plait_client::ClientOptions::new() },
        }
    }

    /// Replica `ordinal`'s admin address, called with the operator's admin certificate.
    fn admin_endpoint(&self, ordinal: i32) -> Endpoint {
        let mut endpoint = self.endpoint(ordinal);
        if let Some(admin) = self.replicas[&ordinal].admin {
            endpoint.address = match &self.client_options {
                Some(_) => admin.to_string(),
                None => format!("http://{admin}"),
            };
        }
        if let Some(options) = &self.admin_options {
            endpoint.options = options.clone();
        }
        endpoint
    }

    /// Writes the pod's projected `tls` volume to this machine as the kubelet does (again
    /// on every sync, so a renewed certificate reaches the running replicas), and returns
    /// the replica's security settings with the pod's paths mapped onto it.
    async fn tls_files(
        &mut self,
        pod: &k8s_openapi::api::core::v1::PodSpec,
    ) -> anyhow::Result<Vec<(&'static str, String)>> {
        let Some(volume) = pod.volumes.iter().flatten().find(|v| v.name == "tls") else {
            self.client_options = None;
            self.admin_options = None;
            return Ok(Vec::new());
        };
        let dir = self.root.join("tls");
        std::fs::create_dir_all(&dir)?;
        let secrets: Api<Secret> = Api::namespaced(self.client.clone(), &self.namespace);
        let sources = volume.projected.as_ref().and_then(|p| p.sources.clone()).unwrap_or_default();
        for source in sources.iter().filter_map(|s| s.secret.as_ref()) {
            let Some(secret) = secrets.get_opt(&source.name).await? else {
                anyhow::ensure!(source.optional == Some(true), "Secret {} is missing", source.name);
                continue;
            };
            let data = secret.data.unwrap_or_default();
            for item in source.items.iter().flatten() {
                let value =
                    data.get(&item.key).with_context(|| format!("{} lacks {}", source.name, item.key))?;
                let path = dir.join(&item.path);
                // Only a change is written: a rewrite of the same bytes is not a rotation.
                if std::fs::read(&path).ok().as_deref() != Some(value.0.as_slice()) {
                    let staged = dir.join(format!(".{}", item.path));
                    std::fs::write(&staged, &value.0)?;
                    std::fs::rename(&staged, &path)?;
                }
            }
        }
        let client = secrets.get(&format!("{}-client", self.cluster)).await?.data.unwrap_or_default();
        let ca = client.get("ca.crt").context("no ca.crt in the client Secret")?;
        let token = client.get("token").context("no token in the client Secret")?;
        self.client_options = Some(
            plait_client::ClientOptions::new()
                .tls_ca_pem(ca.0.clone())
                .token(std::str::from_utf8(&token.0)?)?,
        );
        let admin = secrets.get(&format!("{}-operator-tls", self.cluster)).await?.data.unwrap_or_default();
        let field = |key: &str| admin.get(key).map(|v| v.0.clone()).context("incomplete operator Secret");
        self.admin_options = Some(
            plait_client::ClientOptions::new()
                .tls_ca_pem(field("ca.crt")?)
                .client_cert_pem(field("tls.crt")?, field("tls.key")?),
        );
        let env = pod.containers.first().and_then(|c| c.env.clone()).unwrap_or_default();
        let mut settings = Vec::new();
        for (name, flag) in [
            ("PLAIT_TLS_CERT", "--tls-cert"),
            ("PLAIT_TLS_KEY", "--tls-key"),
            ("PLAIT_TLS_CLIENT_CA", "--tls-client-ca"),
            ("PLAIT_AUTH_FILE", "--auth-file"),
        ] {
            let value = env
                .iter()
                .find(|e| e.name == name)
                .and_then(|e| e.value.clone())
                .with_context(|| format!("the replica container has no {name}"))?;
            let local = value.replacen(POD_TLS_DIR, &dir.display().to_string(), 1);
            settings.push((flag, local));
        }
        Ok(settings)
    }

    /// Starts the replicas the StatefulSet has and this kubelet does not run, and stops
    /// the ones it no longer has, deleting their volumes (`whenScaled: Delete`).
    async fn sync(&mut self) -> anyhow::Result<()> {
        let statefulsets: Api<StatefulSet> = Api::namespaced(self.client.clone(), &self.namespace);
        let Some(sts) = statefulsets.get_opt(&self.cluster).await? else { return Ok(()) };
        let spec = sts.spec.context("statefulset spec")?;
        let n = spec.replicas.unwrap_or(1);
        let removed: Vec<i32> = self.replicas.keys().copied().filter(|o| *o >= n).collect();
        for ordinal in removed {
            drop(self.replicas.remove(&ordinal));
            self.resolver.remove(&self.namespace, &self.cluster, ordinal);
            std::fs::remove_dir_all(self.volume(ordinal))?;
        }
        let pod = spec.template.spec.context("pod spec")?;
        let tls = self.tls_files(&pod).await?;
        for ordinal in 0..n {
            if self.replicas.contains_key(&ordinal) {
                continue;
            }
            self.start_replica(ordinal, &pod, &tls).await?;
        }
        Ok(())
    }

    /// Plays the kubelet for pods the StatefulSet controller makes: runs a replica for
    /// each pod, and when a pod is replaced (a roll) restarts its replica on the same
    /// volume from the new pod's spec. A naive kubelet: it marks each pod Running and
    /// Ready as soon as its process starts, so whatever waits for a replica to catch up
    /// is the operator. Before restarting a replica it records, in `gate_violations`,
    /// any replica of a higher ordinal that is not ready and caught up, which a roll
    /// gated on catch-up never leaves behind. Returns the ordinals restarted, in order.
    async fn sync_pods(&mut self, gate_violations: &mut Vec<String>) -> anyhow::Result<Vec<i32>> {
        let pods: Api<Pod> = Api::namespaced(self.client.clone(), &self.namespace);
        let selector = format!("app.kubernetes.io/instance={}", self.cluster);
        let mut listed = pods.list(&ListParams::default().labels(&selector)).await?.items;
        listed.sort_by_key(|p| std::cmp::Reverse(p.name_any()));
        let prefix = format!("{}-", self.cluster);
        let mut restarted = Vec::new();
        for pod in listed.into_iter().filter(|p| p.metadata.deletion_timestamp.is_none()) {
            let name = pod.name_any();
            let Some(ordinal) = name.strip_prefix(&prefix).and_then(|o| o.parse::<i32>().ok()) else {
                continue;
            };
            let uid = pod.metadata.uid.clone().unwrap_or_default();
            if self.pod_uids.get(&ordinal) == Some(&uid) {
                continue;
            }
            let spec = pod.spec.clone().context("pod spec")?;
            let tls = self.tls_files(&spec).await?;
            if self.replicas.contains_key(&ordinal) {
                for (higher, _) in self.replicas.range(ordinal + 1..) {
                    let status = replica_client(self.endpoint(*higher)).await.status().await?;
                    if let Some(why) = status.not_ready {
                        gate_violations
                            .push(format!("replica {ordinal} restarted while {higher} was not ready: {why}"));
                    }
                }
                let old = self.replicas.remove(&ordinal).expect("running");
                let listen = old.grpc.to_string();
                drop(old);
                restarted.push(ordinal);
                // On the same address, as a replaced pod keeps its DNS name: the member set
                // does not change during a roll.
                self.start_replica_at(ordinal, &spec, &tls, &listen).await?;
                self.pod_uids.insert(ordinal, uid);
                let ready = serde_json::json!({
                    "status": { "phase": "Running", "conditions": [{ "type": "Ready", "status": "True" }] },
                });
                pods.patch_status(&name, &PatchParams::default(), &Patch::Merge(&ready)).await?;
                continue;
            }
            self.start_replica(ordinal, &spec, &tls).await?;
            self.pod_uids.insert(ordinal, uid);
            let ready = serde_json::json!({
                "status": { "phase": "Running", "conditions": [{ "type": "Ready", "status": "True" }] },
            });
            pods.patch_status(&name, &PatchParams::default(), &Patch::Merge(&ready)).await?;
        }
        Ok(restarted)
    }

    /// Starts replica `ordinal` from a pod spec on its volume.
    async fn start_replica(
        &mut self,
        ordinal: i32,
        pod: &k8s_openapi::api::core::v1::PodSpec,
        tls: &[(&'static str, String)],
    ) -> anyhow::Result<()> {
        self.start_replica_at(ordinal, pod, tls, "127.0.0.1:0").await
    }

    /// [`Self::start_replica`], listening on `listen`.
    async fn start_replica_at(
        &mut self,
        ordinal: i32,
        pod: &k8s_openapi::api::core::v1::PodSpec,
        tls: &[(&'static str, String)],
        listen: &str,
    ) -> anyhow::Result<()> {
        let listen = listen.to_owned();
        {
            let key_file = self.writer_key(pod).await?;
            let pod_name = format!("{}-{ordinal}", self.cluster);
            let tls_flags: Vec<String> = tls
                .iter()
                .flat_map(|(flag, path)| [flag.to_string(), path.replace("$(POD_NAME)", &pod_name)])
                .collect();
            let data_dir = self.data_dir(ordinal);
            std::fs::create_dir_all(self.volume(ordinal))?;
            // The init container, if any, with the pod's paths mapped onto this machine, then
            // the replica; both block on child processes, so off the async workers.
            // The replica container's flags after `serve` (its backup destinations).
            let serve_flags: Vec<String> = pod
                .containers
                .first()
                .and_then(|c| c.args.clone())
                .unwrap_or_default()
                .into_iter()
                .skip_while(|a| a == "serve")
                .collect();
            // The pod's admin port (PLAIT_ADMIN_LISTEN), mapped onto a free loopback port.
            let admin_port = pod
                .containers
                .first()
                .and_then(|c| c.env.as_ref())
                .is_some_and(|env| env.iter().any(|e| e.name == "PLAIT_ADMIN_LISTEN"));
            let init_args = pod
                .init_containers
                .as_ref()
                .and_then(|c| c.first())
                .map(|init| init.args.clone().unwrap_or_default());
            let replica = tokio::task::spawn_blocking(move || -> anyhow::Result<Plaitd> {
                if let Some(args) = init_args {
                    let output = plait_tests::plaitd_command()?
                        .args(&args)
                        .env("PLAIT_DATA_DIR", &data_dir)
                        .env("PLAIT_WRITER_KEY_FILE", &key_file)
                        .output()?;
                    if !output.status.success() {
                        bail!(
                            "init container {args:?} of replica {ordinal} failed: {}",
                            String::from_utf8_lossy(&output.stderr)
                        );
                    }
                }
                let key = key_file.display().to_string();
                let mut flags = vec!["--writer-key-file", &key, "--anti-entropy-ms", "1000"];
                flags.extend(serve_flags.iter().map(String::as_str));
                flags.extend(tls_flags.iter().map(String::as_str));
                if admin_port {
                    flags.extend(["--admin-listen", "127.0.0.1:0"]);
                }
                Plaitd::start_at(&data_dir, &listen, &flags, Vec::new())
            })
            .await??;
            self.resolver.set(&self.namespace, &self.cluster, ordinal, replica.grpc.to_string());
            if let Some(admin) = replica.admin {
                self.resolver.set_admin(&self.namespace, &self.cluster, ordinal, admin.to_string());
            }
            self.replicas.insert(ordinal, replica);
        }
        Ok(())
    }

    /// The writer key Secret the pod mounts, written to a file as the kubelet would.
    async fn writer_key(&self, pod: &k8s_openapi::api::core::v1::PodSpec) -> anyhow::Result<PathBuf> {
        let secret_name = pod
            .volumes
            .iter()
            .flatten()
            .find_map(|v| v.secret.as_ref().and_then(|s| s.secret_name.clone()))
            .context("the pod mounts no secret")?;
        let path = self.root.join("writer.key");
        if !path.exists() {
            let secret =
                Api::<Secret>::namespaced(self.client.clone(), &self.namespace).get(&secret_name).await?;
            let key = secret
                .data
                .and_then(|d| d.get("writer.key").cloned())
                .context("no writer.key in the secret")?;
            std::fs::create_dir_all(&self.root)?;
            std::fs::write(&path, key.0)?;
        }
        Ok(path)
    }

    /// Wipes a replica's data directory and starts it again: a new epoch.
    async fn wipe(&mut self, ordinal: i32) -> anyhow::Result<()> {
        drop(self.replicas.remove(&ordinal));
        std::fs::remove_dir_all(self.volume(ordinal))?;
        self.sync().await
    }
}

/// The operator, running in this process until stopped.
struct Operator {
    stop: Option<oneshot::Sender<()>>,
    task: tokio::task::JoinHandle<()>,
    ctx: Arc<Context>,
}

impl Operator {
    fn start(client: Client, resolver: Arc<StaticResolver>, namespace: &str) -> Operator {
        Operator::start_with_image(client, resolver, namespace, "plait/plaitd:test")
    }

    fn context(client: Client, resolver: Arc<StaticResolver>, image: &str) -> Arc<Context> {
        Context::new(
            client,
            Arc::new(GrpcAdmin),
            resolver,
            Arc::new(SystemClock),
            PlanContext { replica_image: image.into(), operator_namespace: None },
        )
    }

    /// An operator whose default replica image is `image`.
    fn start_with_image(
        client: Client,
        resolver: Arc<StaticResolver>,
        namespace: &str,
        image: &str,
    ) -> Operator {
        let ctx = Operator::context(client, resolver, image);
        let (stop, stopped) = oneshot::channel::<()>();
        let task = tokio::spawn(plait_operator::run(
            ctx.clone(),
            Scope { namespace: Some(namespace.to_owned()) },
            false,
            async move {
                let _ = stopped.await;
            },
        ));
        Operator { stop: Some(stop), task, ctx }
    }

    /// An operator under leader election, as the chart runs two: candidate `identity`
    /// for the Lease `plait-operator` in [`OPERATOR_NAMESPACE`], with short durations.
    fn start_elected(
        client: Client,
        resolver: Arc<StaticResolver>,
        namespace: &str,
        identity: &str,
    ) -> Operator {
        let ctx = Operator::context(client, resolver, "plait/plaitd:test");
        let settings = LeaseSettings {
            namespace: OPERATOR_NAMESPACE.into(),
            name: "plait-operator".into(),
            identity: identity.into(),
            lease_duration: Duration::from_secs(4),
            renew_deadline: Duration::from_secs(3),
            retry_period: Duration::from_millis(500),
        };
        settings.validate().expect("valid election settings");
        let (stop, stopped) = oneshot::channel::<()>();
        let scope = Scope { namespace: Some(namespace.to_owned()) };
        let task = tokio::spawn({
            let ctx = ctx.clone();
            let identity = identity.to_owned();
            async move {
                let stopped = async move {
                    let _ = stopped.await;
                };
                if let Err(lost) = plait_operator::run_leading(ctx, scope, settings, stopped).await {
                    eprintln!("operator {identity}: {lost}");
                }
            }
        });
        Operator { stop: Some(stop), task, ctx }
    }

    /// Whether this operator reconciles (leads, or runs without election).
    fn leading(&self) -> bool {
        self.ctx.metrics.leading()
    }

    async fn stop(mut self) {
        if let Some(stop) = self.stop.take() {
            let _ = stop.send(());
        }
        let _ = tokio::time::timeout(Duration::from_secs(20), &mut self.task).await;
        self.task.abort();
    }

    /// Dies at once, as a process killed with SIGKILL would: nothing finishes, nothing is
    /// released (the Lease stays held until it expires).
    async fn kill(self) {
        self.task.abort();
        let _ = self.task.await;
    }
}

/// The leader Lease of the operators, as the API server has it.
async fn lease(client: &Client) -> anyhow::Result<k8s_openapi::api::coordination::v1::LeaseSpec> {
    let lease = Api::<Lease>::namespaced(client.clone(), OPERATOR_NAMESPACE).get("plait-operator").await?;
    lease.spec.context("a Lease without a spec")
}

/// Grants the operator's service account exactly the chart's ClusterRole and its leader
/// election Role (in [`OPERATOR_NAMESPACE`]), as rendered in `manifests/install.yaml`.
async fn grant_chart_rbac(admin: &Client) -> anyhow::Result<()> {
    if Api::<k8s_openapi::api::core::v1::Namespace>::all(admin.clone())
        .get_opt(OPERATOR_NAMESPACE)
        .await?
        .is_none()
    {
        create_namespace(admin, OPERATOR_NAMESPACE).await?;
    }
    let path = Path::new(env!("CARGO_MANIFEST_DIR")).join("../manifests/install.yaml");
    let text = std::fs::read_to_string(&path).with_context(|| format!("reading {}", path.display()))?;
    let params = PatchParams::apply("plait-tests").force();
    let mut granted = 0;
    for document in serde_yaml::Deserializer::from_str(&text) {
        let value = serde_yaml::Value::deserialize(document)?;
        match value.get("kind").and_then(|k| k.as_str()) {
            Some("ClusterRole") => {
                let role: ClusterRole = serde_yaml::from_value(value)?;
                Api::<ClusterRole>::all(admin.clone())
                    .patch(&role.name_any(), &params, &Patch::Apply(&role))
                    .await?;
                granted += 1;
            }
            Some("ClusterRoleBinding") => {
                let binding: ClusterRoleBinding = serde_yaml::from_value(value)?;
                Api::<ClusterRoleBinding>::all(admin.clone())
                    .patch(&binding.name_any(), &params, &Patch::Apply(&binding))
                    .await?;
                granted += 1;
            }
            Some("Role") => {
                let role: Role = serde_yaml::from_value(value)?;
                Api::<Role>::namespaced(admin.clone(), OPERATOR_NAMESPACE)
                    .patch(&role.name_any(), &params, &Patch::Apply(&role))
                    .await?;
                granted += 1;
            }
            Some("RoleBinding") => {
                let binding: RoleBinding = serde_yaml::from_value(value)?;
                Api::<RoleBinding>::namespaced(admin.clone(), OPERATOR_NAMESPACE)
                    .patch(&binding.name_any(), &params, &Patch::Apply(&binding))
                    .await?;
                granted += 1;
            }
            _ => {}
        }
    }
    anyhow::ensure!(
        granted == 4,
        "manifests/install.yaml should hold one ClusterRole, one Role (leader election) and their bindings"
    );
    Ok(())
}

fn condition(cluster: &PlaitCluster, type_: &str) -> Option<String> {
    cluster.status.as_ref()?.conditions.iter().find(|c| c.type_ == type_).map(|c| c.status.clone())
}

/// Ready with `n` replicas, every member at the current member generation.
fn settled(n: i32) -> impl Fn(&PlaitCluster) -> bool {
    move |c| {
        condition(c, "Ready").as_deref() == Some("True")
            && condition(c, "MembershipConsistent").as_deref() == Some("True")
            && c.status.as_ref().is_some_and(|s| s.ready_replicas == n && s.replicas == n)
    }
}

/// Polls (syncing the kubelet each time) until `check` holds for the cluster.
async fn converge(
    kubelet: &mut Kubelet,
    what: &str,
    check: impl Fn(&PlaitCluster) -> bool,
) -> anyhow::Result<PlaitCluster> {
    let api: Api<PlaitCluster> = Api::namespaced(kubelet.client.clone(), &kubelet.namespace);
    let deadline = Instant::now() + CONVERGE_TIMEOUT;
    loop {
        kubelet.sync().await?;
        let cluster = api.get(&kubelet.cluster).await?;
        if check(&cluster) {
            return Ok(cluster);
        }
        if Instant::now() > deadline {
            bail!("timed out waiting for {what}; status: {:#?}", cluster.status);
        }
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
}

async fn reasons(client: &Client, namespace: &str, name: &str) -> anyhow::Result<Vec<String>> {
    let events = Api::<Event>::namespaced(client.clone(), namespace).list(&ListParams::default()).await?;
    Ok(events
        .items
        .into_iter()
        .filter(|e| e.regarding.as_ref().and_then(|r| r.name.as_deref()) == Some(name))
        // The event recorder folds repeats of one reason into one event with a series
        // count: each occurrence counts.
        .flat_map(|e| {
            let times = e.series.as_ref().map_or(1, |s| s.count.max(1)) as usize;
            e.reason.into_iter().flat_map(move |r| std::iter::repeat_n(r, times))
        })
        .collect())
}

async fn replica_client(endpoint: Endpoint) -> plait_client::Client {
    plait_client::Client::connect_with(endpoint.address, &endpoint.options).await.expect("replica answers")
}

async fn wait_for_value(endpoint: Endpoint, log: &str, key: &str, value: &str) -> anyhow::Result<()> {
    let address = endpoint.address.clone();
    let client = replica_client(endpoint).await;
    plait_tests::wait_until(CONVERGE_TIMEOUT, &format!("{key} on {address}"), || {
        let client = client.clone();
        async move { client.get(log, key).await.ok().flatten().is_some_and(|v| v.value == value.as_bytes()) }
    })
    .await
}

/// Resource versions of everything the operator owns, and the cluster's.
async fn versions(client: &Client, ns: &str, name: &str) -> anyhow::Result<Vec<String>> {
    let v = |m: &k8s_openapi::apimachinery::pkg::apis::meta::v1::ObjectMeta| {
        m.resource_version.clone().unwrap_or_default()
    };
    Ok(vec![
        v(&Api::<PlaitCluster>::namespaced(client.clone(), ns).get(name).await?.metadata),
        v(&Api::<StatefulSet>::namespaced(client.clone(), ns).get(name).await?.metadata),
        v(&Api::<Service>::namespaced(client.clone(), ns).get(name).await?.metadata),
        v(&Api::<Service>::namespaced(client.clone(), ns).get(&format!("{name}-headless")).await?.metadata),
        v(&Api::<ConfigMap>::namespaced(client.clone(), ns).get(&format!("{name}-config")).await?.metadata),
        v(&Api::<PodDisruptionBudget>::namespaced(client.clone(), ns).get(name).await?.metadata),
    ])
}

/// The certificate replica `addr` serves (DER), read in a TLS handshake trusting `ca_pem`.
async fn served_certificate(addr: std::net::SocketAddr, ca_pem: &[u8]) -> anyhow::Result<Vec<u8>> {
    let mut roots = rustls::RootCertStore::empty();
    for cert in plait_pki::certs_from_pem(ca_pem)? {
        roots.add(cert)?;
    }
    let config =
        rustls::ClientConfig::builder_with_provider(Arc::new(rustls::crypto::ring::default_provider()))
            .with_safe_default_protocol_versions()?
            .with_root_certificates(roots)
            .with_no_client_auth();
    let tcp = tokio::net::TcpStream::connect(addr).await?;
    let name = rustls::pki_types::ServerName::IpAddress(addr.ip().into());
    let tls = tokio_rustls::TlsConnector::from(Arc::new(config)).connect(name, tcp).await?;
    let served = tls.get_ref().1.peer_certificates().and_then(|c| c.first()).context("no certificate")?;
    Ok(served.to_vec())
}

/// Rotation through the operator: replica 0's certificate is replaced in its Secret by
/// one of the same names with ten days of ninety left (as time would leave it), which
/// the running replica picks up; the operator's next pass finds it in the last third of
/// its life and issues a fresh one; the kubelet's rewrite of the projected volume reaches
/// the replica, which serves the new certificate on new connections without a restart.
async fn rotate_replica_certificate(
    kubelet: &mut Kubelet,
    clusters: &Api<PlaitCluster>,
) -> anyhow::Result<()> {
    let secrets: Api<Secret> = Api::namespaced(kubelet.client.clone(), &kubelet.namespace);
    let ca_data = secrets.get("db-ca").await?.data.unwrap_or_default();
    let field = |data: &BTreeMap<String, k8s_openapi::ByteString>, key: &str| -> anyhow::Result<String> {
        Ok(String::from_utf8(data.get(key).with_context(|| format!("no {key}"))?.0.clone())?)
    };
    let ca_pem = field(&ca_data, "ca.crt")?;
    let ca = plait_pki::Ca::from_pem(&ca_pem, &field(&ca_data, "ca.key")?)?;
    let mut secret = secrets.get("db-0-tls").await?;
    // The names the operator issued for: "cn|groups|dns names|ip addresses".
    let names =
        secret.annotations().get("plait.dev/certificate-names").context("no names annotation")?.clone();
    let parts: Vec<&str> = names.split('|').collect();
    anyhow::ensure!(parts.len() == 4, "unexpected names annotation {names:?}");
    let list = |i: usize| parts[i].split(',').filter(|s| !s.is_empty()).collect::<Vec<_>>();
    // Certificates are judged by the real clock of the plaitd processes.
    #[allow(clippy::disallowed_methods)]
    let now = std::time::SystemTime::now();
    const DAY: Duration = Duration::from_secs(86_400);
    let aging = plait_pki::Validity { not_before: now - 80 * DAY, not_after: now + 10 * DAY };
    let mut spec = plait_pki::CertSpec::new(parts[0], aging);
    spec = list(1).into_iter().fold(spec, plait_pki::CertSpec::group);
    spec = list(2).into_iter().fold(spec, plait_pki::CertSpec::dns);
    for ip in list(3) {
        spec = spec.ip(ip.parse()?);
    }
    let issued = ca.issue(&spec)?;
    let original_der = served_certificate(kubelet.replicas[&0].grpc, ca_pem.as_bytes()).await?;
    let data = secret.data.get_or_insert_with(BTreeMap::new);
    data.insert("tls.crt".into(), k8s_openapi::ByteString(issued.cert_pem().as_bytes().to_vec()));
    data.insert("tls.key".into(), k8s_openapi::ByteString(issued.key_pem().as_bytes().to_vec()));
    secrets.replace("db-0-tls", &PostParams::default(), &secret).await?;

    let addr = kubelet.replicas[&0].grpc;
    let pid = kubelet.replicas[&0].pid();
    let aging_der = issued.cert_der().to_vec();
    let deadline = Instant::now() + CONVERGE_TIMEOUT;
    // The kubelet writes the aging certificate; the replica reloads it. The operator may
    // already have replaced it in the Secret by then: either is a state time can bring.
    loop {
        kubelet.sync().await?;
        let served = served_certificate(addr, ca_pem.as_bytes()).await?;
        let in_secret = secrets.get("db-0-tls").await?.data.unwrap_or_default();
        let replaced = in_secret.get("tls.crt").map(|c| c.0.as_slice()) != Some(issued.cert_pem().as_bytes());
        if served == aging_der || replaced {
            break;
        }
        anyhow::ensure!(Instant::now() < deadline, "the replica never served the aging certificate");
        tokio::time::sleep(Duration::from_millis(200)).await;
    }
    // Any change to the cluster starts a pass at once (the steady requeue would, later).
    clusters
        .patch(
            "db",
            &PatchParams::default(),
            &Patch::Merge(
                serde_json::json!({"metadata": {"annotations": {"test.plait.dev/nudge": "rotation"}}}),
            ),
        )
        .await?;
    loop {
        kubelet.sync().await?;
        let served = served_certificate(addr, ca_pem.as_bytes()).await?;
        let validity = plait_pki::validity_of(&served)?;
        let in_secret = secrets.get("db-0-tls").await?.data.unwrap_or_default();
        let renewed = in_secret
            .get("tls.crt")
            .and_then(|pem| plait_pki::certs_from_pem(&pem.0).ok())
            .and_then(|certs| certs.first().map(|c| c.to_vec()));
        // A third certificate, the one now in the Secret, fresh: not the original still
        // served for want of a reload, nor the aging one.
        if renewed.as_deref() == Some(served.as_slice())
            && served != aging_der
            && served != original_der
            && validity.not_after > now + 80 * DAY
        {
            break;
        }
        anyhow::ensure!(Instant::now() < deadline, "the operator did not renew the aging certificate");
        tokio::time::sleep(Duration::from_millis(200)).await;
    }
    anyhow::ensure!(kubelet.replicas[&0].pid() == pid, "the replica was restarted to rotate");
    let renewed = secrets.get("db-0-tls").await?;
    anyhow::ensure!(
        renewed.annotations().get("plait.dev/certificate-names") == Some(&names),
        "names changed"
    );
    Ok(())
}

/// A cluster's whole life under two operators under leader election (one leads, the
/// other stands by), with the chart's RBAC only: created and wired (every replica told
/// its members), written to and replicated, reconciled again without any change, its
/// certificate rotated by the operator without a restart, scaled 3→5→3 with each
/// leaving replica drained first and no acknowledged write lost (the leader killed
/// mid-way through the scale-down, holding the Lease: the standby takes over and
/// finishes it),
/// a replica whose data directory was wiped coming back as a new epoch, an unreachable
/// replica showing up as Degraded (still Available, not Ready), and that lost replica
/// removed by a scale-down only once `plait.dev/skip-drain` names it; the last leader,
/// stopped gracefully, releases the Lease.
#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn operator_runs_a_cluster_through_scaling_and_failures() -> anyhow::Result<()> {
    let cp = ControlPlane::start().await?;
    let admin = cp.admin_client();
    install_crds(&admin).await?;
    grant_chart_rbac(&admin).await?;
    let ns = "life";
    create_namespace(&admin, ns).await?;
    let dir = tempfile::tempdir()?;
    let resolver = Arc::new(StaticResolver::new());
    // Two operators, as the chart runs them: the first to take the Lease reconciles, the
    // other stands by.
    let operator = Operator::start_elected(cp.operator_client(), resolver.clone(), ns, "operator-a");
    plait_tests::wait_until(CONVERGE_TIMEOUT, "operator-a to lead", || async { operator.leading() }).await?;
    let standby = Operator::start_elected(cp.operator_client(), resolver.clone(), ns, "operator-b");
    let clusters: Api<PlaitCluster> = Api::namespaced(admin.clone(), ns);
    let mut kubelet = Kubelet::new(admin.clone(), ns, "db", resolver.clone(), dir.path());

    // Created and wired.
    let started = Instant::now();
    clusters
        .create(&PostParams::default(), &PlaitCluster::new("db", PlaitClusterSpec::with_replicas(3)))
        .await?;
    let cluster = converge(&mut kubelet, "3 ready replicas", settled(3)).await?;
    eprintln!("created and wired 3 replicas in {:?}", started.elapsed());
    assert!(operator.leading() && !standby.leading(), "exactly one operator reconciles");
    assert_eq!(lease(&admin).await?.holder_identity.as_deref(), Some("operator-a"));
    let status = cluster.status.clone().unwrap();
    assert!(status.members_generation >= 1);
    assert_eq!(status.member_addresses.len(), 3);
    assert_eq!(status.phase.as_deref(), Some("Running"));
    assert_eq!(status.observed_generation, cluster.metadata.generation);
    for ordinal in 0..3 {
        let s = replica_client(kubelet.endpoint(ordinal)).await.status().await?;
        assert_eq!(
            s.members_generation, status.members_generation as u64,
            "replica {ordinal} has the members"
        );
    }

    // Secured by default: the replicas serve TLS only, the application token from
    // `db-client` is what the test calls them with, and a NetworkPolicy admits only
    // members, the operator and labelled clients.
    let plaintext = plait_client::Client::connect(kubelet.replicas[&0].endpoint()).await;
    assert!(
        match plaintext {
            Ok(client) => client.status().await.is_err(),
            Err(_) => true,
        },
        "a plaintext call got through to a secured replica"
    );
    let policy = Api::<NetworkPolicy>::namespaced(admin.clone(), ns).get("db").await?;
    let rules = policy.spec.and_then(|s| s.ingress).unwrap_or_default();
    assert_eq!(rules.len(), 3, "gRPC from members, the operator and clients; admin; metrics: {rules:?}");
    // The admin port admits the operator alone, and the API port refuses what it serves,
    // even to the operator's own certificate.
    let admin_rule = &rules[1];
    let admin_from = admin_rule.from.clone().unwrap_or_default();
    assert_eq!(admin_from.len(), 1, "{admin_rule:?}");
    assert!(
        admin_from[0]
            .pod_selector
            .as_ref()
            .and_then(|s| s.match_labels.as_ref())
            .is_some_and(|l| l.get("app.kubernetes.io/name").map(String::as_str) == Some("plait-operator"))
    );
    let mut on_api = kubelet.admin_endpoint(0);
    on_api.address = kubelet.endpoint(0).address;
    match replica_client(on_api).await.checkpoint("none").await {
        Err(plait_client::ClientError::Unauthorized(m)) => assert!(m.contains("--admin-listen"), "{m}"),
        other => panic!("the API port served a cluster-admin call: {other:?}"),
    }
    let secrets: Api<Secret> = Api::namespaced(admin.clone(), ns);
    for name in ["db-ca", "db-0-tls", "db-2-tls", "db-operator-tls", "db-client", "db-auth"] {
        assert!(secrets.get_opt(name).await?.is_some(), "Secret {name} missing");
    }

    // Written through one replica, replicated to the others.
    let writer = replica_client(kubelet.endpoint(0)).await;
    writer.create_log(&CreateLogOptions::new("orders", LogType::Kv)).await?;
    writer.put("orders", "first", "1").await?;
    wait_for_value(kubelet.endpoint(2), "orders", "first", "1").await?;
    // The replicas compare the log's digest whenever their heads agree, and the operator
    // shows that every pair found it equal: first each replica says so of the log with
    // each of its peers, then the next reconcile's condition does.
    for ordinal in 0..3 {
        let client = replica_client(kubelet.endpoint(ordinal)).await;
        plait_tests::wait_until(CONVERGE_TIMEOUT, &format!("replica {ordinal} to verify orders"), || {
            let client = client.clone();
            async move {
                client.status().await.is_ok_and(|s| {
                    s.peers.len() == 2
                        && s.peers.iter().all(|p| {
                            p.logs
                                .iter()
                                .any(|l| l.name == "orders" && l.verified_seq > 0 && !l.digest_mismatch)
                        })
                })
            }
        })
        .await?;
    }
    let fresh = clusters.get("db").await?;
    plait_operator::reconcile_cluster(Arc::new(fresh), operator.ctx.clone()).await?;
    converge(&mut kubelet, "Converged", |c| condition(c, "Converged").as_deref() == Some("True")).await?;

    // A reconcile with nothing changed changes nothing. The replicas' own state (their
    // readiness, lag) may still move between two passes and is then rightly written, so
    // this waits, with a deadline, for a pass that finds nothing new and writes nothing.
    let deadline = Instant::now() + CONVERGE_TIMEOUT;
    loop {
        let before = versions(&admin, ns, "db").await?;
        let fresh = clusters.get("db").await?;
        plait_operator::reconcile_cluster(Arc::new(fresh.clone()), operator.ctx.clone()).await?;
        if versions(&admin, ns, "db").await? == before {
            break;
        }
        let after = clusters.get("db").await?;
        eprintln!("a reconcile wrote: status before {:#?}\nafter {:#?}", fresh.status, after.status);
        anyhow::ensure!(Instant::now() < deadline, "no reconcile pass came without a write");
    }

    rotate_replica_certificate(&mut kubelet, &clusters).await?;
    writer.put("orders", "after-rotation", "1").await?;
    wait_for_value(kubelet.endpoint(0), "orders", "after-rotation", "1").await?;

    // Scale up: the new replicas catch up from their peers.
    let started = Instant::now();
    clusters
        .patch("db", &PatchParams::default(), &Patch::Merge(serde_json::json!({"spec": {"replicas": 5}})))
        .await?;
    converge(&mut kubelet, "5 ready replicas", settled(5)).await?;
    wait_for_value(kubelet.endpoint(4), "orders", "first", "1").await?;
    eprintln!("scaled 3 to 5, new replicas caught up, in {:?}", started.elapsed());
    // A write taken by the replica about to leave.
    replica_client(kubelet.endpoint(4)).await.put("orders", "on-four", "4").await?;

    // Scale down, one replica at a time, highest ordinal first, each drained first.
    clusters
        .patch("db", &PatchParams::default(), &Patch::Merge(serde_json::json!({"spec": {"replicas": 3}})))
        .await?;
    let sts_api: Api<StatefulSet> = Api::namespaced(admin.clone(), ns);
    plait_tests::wait_until(CONVERGE_TIMEOUT, "the StatefulSet to lose replica 4", || {
        let sts_api = sts_api.clone();
        async move { sts_api.get("db").await.is_ok_and(|s| s.spec.and_then(|s| s.replicas) == Some(4)) }
    })
    .await?;
    // The leader dies in the middle of the scale-down, holding the Lease; the standby
    // takes the Lease once it expires, and finishes the scale-down.
    assert!(!standby.leading(), "the standby leads while the leader holds the Lease");
    assert_eq!(
        standby.ctx.metrics.reconciles.load(std::sync::atomic::Ordering::Relaxed),
        0,
        "the standby reconciled while the leader held the Lease"
    );
    let transitions = lease(&admin).await?.lease_transitions.unwrap_or(0);
    operator.kill().await;
    let killed = Instant::now();
    kubelet.sync().await?;
    plait_tests::wait_until(CONVERGE_TIMEOUT, "operator-b to take over", || async { standby.leading() })
        .await?;
    eprintln!("operator-b took the Lease {:?} after the leader was killed (lease: 4 s)", killed.elapsed());
    let taken = lease(&admin).await?;
    assert_eq!(taken.holder_identity.as_deref(), Some("operator-b"));
    assert_eq!(taken.lease_transitions, Some(transitions + 1), "one change of leader");
    let operator = standby;
    converge(&mut kubelet, "3 ready replicas after the scale-down", settled(3)).await?;
    eprintln!("scaled 5 to 3 (two drains, a leader killed mid-way) in {:?}", started.elapsed());
    let seen = reasons(&admin, ns, "db").await?;
    // At least one drain per removed replica (an operator restarted mid-way may drain a
    // replica it finds draining once more; the recorder may fold repeats into a series).
    assert!(
        seen.iter().filter(|r| *r == "Drained").count() >= 2,
        "two drains, one per removed replica: {seen:?}"
    );
    for ordinal in 0..3 {
        wait_for_value(kubelet.endpoint(ordinal), "orders", "on-four", "4").await?;
    }

    // A wiped replica rejoins as a new epoch and catches up.
    let old_epoch = clusters.get("db").await?.status.unwrap().members[1].epoch.clone();
    kubelet.wipe(1).await?;
    let cluster = converge(&mut kubelet, "the wiped replica back", |c| {
        settled(3)(c) && c.status.as_ref().is_some_and(|s| s.members[1].epoch != old_epoch)
    })
    .await?;
    assert!(!cluster.status.unwrap().members[1].epoch.is_empty());
    wait_for_value(kubelet.endpoint(1), "orders", "on-four", "4").await?;
    assert!(reasons(&admin, ns, "db").await?.iter().any(|r| r == "NewEpoch"));

    // An unreachable replica shows up in the status.
    drop(kubelet.replicas.remove(&2));
    resolver.set(ns, "db", 2, "127.0.0.1:1");
    let cluster = Api::<PlaitCluster>::namespaced(admin.clone(), ns);
    plait_tests::wait_until(CONVERGE_TIMEOUT, "Degraded for the unreachable replica", || {
        let cluster = cluster.clone();
        async move {
            cluster.get("db").await.is_ok_and(|c| {
                // Still serving writes through the other two: Available, not Ready.
                condition(&c, "Degraded").as_deref() == Some("True")
                    && condition(&c, "Available").as_deref() == Some("True")
                    && condition(&c, "Ready").as_deref() == Some("False")
                    && c.status
                        .as_ref()
                        .is_some_and(|s| !s.members[2].ready && !s.members[2].message.is_empty())
            })
        }
    })
    .await?;

    // Its pod is gone for good: a scale-down cannot drain it and waits ...
    let failed = |r: Vec<String>| r.iter().filter(|r| *r == "DrainFailed").count();
    let failed_before = failed(reasons(&admin, ns, "db").await?);
    let two = serde_json::json!({ "spec": { "replicas": 2 } });
    clusters.patch("db", &PatchParams::default(), &Patch::Merge(&two)).await?;
    plait_tests::wait_until(CONVERGE_TIMEOUT, "a failed drain of the lost replica", || {
        let admin = admin.clone();
        async move { reasons(&admin, ns, "db").await.is_ok_and(|r| failed(r) > failed_before) }
    })
    .await?;
    assert_eq!(sts_api.get("db").await?.spec.and_then(|s| s.replicas), Some(3), "removed without a drain");
    // ... until plait.dev/skip-drain names it: removed without a drain, with a warning.
    let skip = serde_json::json!({ "metadata": { "annotations": { "plait.dev/skip-drain": "db-2" } } });
    clusters.patch("db", &PatchParams::default(), &Patch::Merge(&skip)).await?;
    plait_tests::wait_until(CONVERGE_TIMEOUT, "the StatefulSet to lose the lost replica", || {
        let sts_api = sts_api.clone();
        async move { sts_api.get("db").await.is_ok_and(|s| s.spec.and_then(|s| s.replicas) == Some(2)) }
    })
    .await?;
    converge(&mut kubelet, "2 ready replicas after the skipped drain", settled(2)).await?;
    assert!(reasons(&admin, ns, "db").await?.iter().any(|r| r == "DrainSkipped"));
    wait_for_value(kubelet.endpoint(1), "orders", "on-four", "4").await?;
    // A leader that stops gracefully releases the Lease, for a standby to take at once.
    operator.stop().await;
    assert_eq!(lease(&admin).await?.holder_identity, None, "the stopped leader still holds the Lease");
    Ok(())
}

/// Backups and restore through the operator: an on-demand `PlaitBackup` completes as a
/// background job on a ready replica, followed to its end, and records its checkpoints; one that cannot be written is retried
/// with its error in the status and a Warning event; a new cluster bootstrapped from the
/// backup restores it in every replica's init container and reaches the same state root.
/// An invalid spec is reported and nothing of it is applied.
#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn operator_backs_up_and_bootstraps_from_backups() -> anyhow::Result<()> {
    let cp = ControlPlane::start().await?;
    let admin = cp.admin_client();
    install_crds(&admin).await?;
    grant_chart_rbac(&admin).await?;
    let ns = "backups";
    create_namespace(&admin, ns).await?;
    let dir = tempfile::tempdir()?;
    let backups_dir = dir.path().join("backups");
    let destination = format!("file://{}", backups_dir.display());
    let resolver = Arc::new(StaticResolver::new());
    let operator = Operator::start(cp.operator_client(), resolver.clone(), ns);
    let clusters: Api<PlaitCluster> = Api::namespaced(admin.clone(), ns);
    let backups: Api<PlaitBackup> = Api::namespaced(admin.clone(), ns);

    // An invalid spec: reported, nothing applied.
    let mut bad = PlaitClusterSpec::with_replicas(2);
    bad.backup = Some(BackupSpec {
        destination: destination.clone(),
        extra_destinations: Vec::new(),
        schedule: Some("every night".into()),
        full_every: 0,
        retention: RetentionSpec::default(),
        s3: None,
    });
    clusters.create(&PostParams::default(), &PlaitCluster::new("bad", bad)).await?;
    plait_tests::wait_until(CONVERGE_TIMEOUT, "the invalid cluster to be reported", || {
        let clusters = clusters.clone();
        async move {
            clusters
                .get("bad")
                .await
                .is_ok_and(|c| c.status.is_some_and(|s| s.phase.as_deref() == Some("Failed")))
        }
    })
    .await?;
    assert!(
        Api::<StatefulSet>::namespaced(admin.clone(), ns).get_opt("bad").await?.is_none(),
        "half-applied"
    );
    assert!(reasons(&admin, ns, "bad").await?.iter().any(|r| r == "InvalidSpec"));

    // The source cluster, with data.
    // A second destination that the test breaks once the replicas run (a file where its
    // directory was), for the failing backup below.
    let broken_dir = dir.path().join("broken");
    let mut source = PlaitClusterSpec::with_replicas(2);
    source.backup = Some(BackupSpec {
        destination: destination.clone(),
        extra_destinations: vec![NamedDestination {
            name: "broken".into(),
            url: format!("file://{}", broken_dir.display()),
        }],
        schedule: None,
        full_every: 0,
        retention: RetentionSpec::default(),
        s3: None,
    });
    clusters.create(&PostParams::default(), &PlaitCluster::new("src", source)).await?;
    let mut src = Kubelet::new(admin.clone(), ns, "src", resolver.clone(), dir.path());
    converge(&mut src, "the source cluster ready", settled(2)).await?;
    let writer = replica_client(src.endpoint(0)).await;
    writer.create_log(&CreateLogOptions::new("orders", LogType::Kv)).await?;
    for i in 0..50 {
        writer.put("orders", format!("k{i}"), format!("v{i}")).await?;
    }

    // On demand.
    let backup = PlaitBackup::new(
        "src-now",
        PlaitBackupSpec { cluster: "src".into(), kind: BackupKind::Full, logs: vec![], destination: None },
    );
    backups.create(&PostParams::default(), &backup).await?;
    plait_tests::wait_until(CONVERGE_TIMEOUT, "the backup to complete", || {
        let backups = backups.clone();
        async move {
            backups
                .get("src-now")
                .await
                .is_ok_and(|b| b.status.is_some_and(|s| s.phase.as_deref() == Some("Completed")))
        }
    })
    .await?;
    let completed = backups.get("src-now").await?;
    let done = completed.status.clone().unwrap();
    // Run as a background job on the replica, named after the backup and the attempt.
    let uid = completed.metadata.uid.clone().unwrap_or_default();
    assert_eq!(done.job, Some(format!("{uid}-1")));
    assert_eq!(done.progress, None, "a finished backup shows no progress");
    assert!(done.size_bytes > 0);
    assert_eq!(done.checkpoints.len(), 1);
    assert_eq!(done.checkpoints[0].log, "orders");
    assert_eq!(done.location.as_deref(), Some(destination.as_str()));
    let source_root = replica_client(src.admin_endpoint(0)).await.checkpoint("orders").await?.state_root;
    assert_eq!(done.checkpoints[0].state_root, hex::encode(source_root), "nothing written since the backup");
    plait_tests::wait_until(CONVERGE_TIMEOUT, "BackupReady on the cluster", || {
        let clusters = clusters.clone();
        async move {
            clusters.get("src").await.is_ok_and(|c| condition(&c, "BackupReady").as_deref() == Some("True"))
        }
    })
    .await?;

    // A backup that cannot be written is retried and says why.
    std::fs::remove_dir_all(&broken_dir)?;
    std::fs::write(&broken_dir, b"not a directory")?;
    let failing = PlaitBackup::new(
        "src-broken",
        PlaitBackupSpec {
            cluster: "src".into(),
            kind: BackupKind::Full,
            logs: vec![],
            destination: Some("broken".into()),
        },
    );
    backups.create(&PostParams::default(), &failing).await?;
    let deadline = Instant::now() + CONVERGE_TIMEOUT;
    loop {
        let status = backups.get("src-broken").await?.status.unwrap_or_default();
        // Pending with the error and the time of the next attempt: backing off, not
        // burning through its attempts.
        if status.attempts >= 1 && status.error.is_some() && status.next_attempt_at.is_some() {
            assert_eq!(status.phase.as_deref(), Some("Pending"));
            assert!(status.attempts < plait_operator::ATTEMPTS_MAX, "retried without backoff: {status:#?}");
            break;
        }
        if Instant::now() > deadline {
            bail!("the failed attempt was not recorded; status: {status:#?}");
        }
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
    // The event follows the status write.
    plait_tests::wait_until(CONVERGE_TIMEOUT, "the BackupAttemptFailed event", || {
        let admin = admin.clone();
        async move {
            reasons(&admin, ns, "src-broken")
                .await
                .is_ok_and(|r| r.iter().any(|r| r == "BackupAttemptFailed"))
        }
    })
    .await?;

    // A new cluster from the backup, with the source's writer key.
    let mut restored = PlaitClusterSpec::with_replicas(2);
    restored.bootstrap = Some(BootstrapSpec { from: destination.clone(), logs: vec![], s3: None });
    restored.writer_key_secret = Some("src-writer-key".into());
    clusters.create(&PostParams::default(), &PlaitCluster::new("copy", restored)).await?;
    let mut copy = Kubelet::new(admin.clone(), ns, "copy", resolver.clone(), dir.path());
    converge(&mut copy, "the restored cluster ready", settled(2)).await?;
    for ordinal in 0..2 {
        let client = replica_client(copy.admin_endpoint(ordinal)).await;
        let root = client.checkpoint("orders").await?.state_root;
        assert_eq!(root, source_root, "replica {ordinal} of the restored cluster has the source's state");
    }
    // The restored logs accept writes: the writer key came along.
    replica_client(copy.endpoint(1)).await.put("orders", "after-restore", "yes").await?;
    operator.stop().await;
    Ok(())
}

/// Growing `spec.storage.size` grows every replica's claim when its storage class allows
/// expansion, and shows the claims in `status.resizingVolumes` until their capacity has
/// caught up; the StatefulSet's claim template keeps its size (the API server refuses a
/// change); a replica added later has its claim grown too. A class that does not allow
/// expansion leaves the claims alone, with a Warning event and the reason in `Degraded`.
/// The volumes are static PersistentVolumes bound by the real PV controller; the storage
/// system finishing a resize is played by patching the claims' capacity. No replica
/// runs: volume growth does not depend on them.
#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn operator_grows_volumes_the_storage_class_allows() -> anyhow::Result<()> {
    use k8s_openapi::api::core::v1::{PersistentVolume, PersistentVolumeClaim};
    use k8s_openapi::api::storage::v1::StorageClass;
    use plait_tests::kube::Options;
    use serde_json::json;

    // The controller manager's StatefulSet controller makes the claims, its PV controller
    // binds them.
    let cp = ControlPlane::start_with(Options { controller_manager: true }).await?;
    let admin = cp.admin_client();
    install_crds(&admin).await?;
    grant_chart_rbac(&admin).await?;
    let ns = "volumes";
    create_namespace(&admin, ns).await?;
    let operator = Operator::start(cp.operator_client(), Arc::new(StaticResolver::new()), ns);
    let post = PostParams::default();
    let clusters: Api<PlaitCluster> = Api::namespaced(admin.clone(), ns);
    let claims: Api<PersistentVolumeClaim> = Api::namespaced(admin.clone(), ns);

    for (name, expand) in [("expandable", true), ("fixed", false)] {
        let class: StorageClass = serde_json::from_value(json!({
            "apiVersion": "storage.k8s.io/v1",
            "kind": "StorageClass",
            "metadata": { "name": name },
            "provisioner": "kubernetes.io/no-provisioner",
            "allowVolumeExpansion": expand,
            "volumeBindingMode": "Immediate",
        }))?;
        Api::<StorageClass>::all(admin.clone()).create(&post, &class).await?;
    }
    // A static volume pre-bound to the claim the StatefulSet makes for `cluster`'s replica.
    let volume = |cluster: &str, class: &str, ordinal: i32| -> anyhow::Result<PersistentVolume> {
        Ok(serde_json::from_value(json!({
            "apiVersion": "v1",
            "kind": "PersistentVolume",
            "metadata": { "name": format!("{cluster}-{ordinal}") },
            "spec": {
                "capacity": { "storage": "1Gi" },
                "accessModes": ["ReadWriteOnce"],
                "storageClassName": class,
                "hostPath": { "path": format!("/var/lib/plait-test/{cluster}-{ordinal}") },
                "claimRef": { "namespace": ns, "name": format!("data-{cluster}-{ordinal}") },
            },
        }))?)
    };
    let volumes: Api<PersistentVolume> = Api::all(admin.clone());
    for (cluster, class) in [("grow", "expandable"), ("stuck", "fixed")] {
        for ordinal in 0..2 {
            volumes.create(&post, &volume(cluster, class, ordinal)?).await?;
        }
        let mut spec = PlaitClusterSpec::with_replicas(2);
        spec.storage = StorageSpec { size: "1Gi".into(), storage_class_name: Some(class.into()) };
        clusters.create(&post, &PlaitCluster::new(cluster, spec)).await?;
    }
    let request = |claim: &PersistentVolumeClaim| {
        claim
            .spec
            .as_ref()
            .and_then(|s| s.resources.as_ref())
            .and_then(|r| r.requests.as_ref())
            .map(|r| r["storage"].0.clone())
    };
    let bound = |claim: &PersistentVolumeClaim| {
        claim.status.as_ref().and_then(|s| s.phase.as_deref()) == Some("Bound")
    };
    plait_tests::wait_until(CONVERGE_TIMEOUT, "the four claims made and bound", || {
        let claims = claims.clone();
        async move {
            let list = claims.list(&ListParams::default()).await.map(|l| l.items).unwrap_or_default();
            list.len() == 4 && list.iter().all(bound)
        }
    })
    .await?;

    let grow = json!({ "spec": { "storage": { "size": "2Gi" } } });
    for cluster in ["grow", "stuck"] {
        clusters.patch(cluster, &PatchParams::default(), &Patch::Merge(&grow)).await?;
    }
    let resizing = |cluster: &PlaitCluster| {
        cluster.status.as_ref().map(|s| s.resizing_volumes.clone()).unwrap_or_default()
    };
    plait_tests::wait_until(
        CONVERGE_TIMEOUT,
        "both claims of grow asking for 2Gi and shown resizing",
        || {
            let (claims, clusters) = (claims.clone(), clusters.clone());
            async move {
                let mut grown = 0;
                for ordinal in 0..2 {
                    if let Ok(claim) = claims.get(&format!("data-grow-{ordinal}")).await
                        && request(&claim).as_deref() == Some("2Gi")
                    {
                        grown += 1;
                    }
                }
                grown == 2 && clusters.get("grow").await.is_ok_and(|c| resizing(&c).len() == 2)
            }
        },
    )
    .await?;
    let cluster = clusters.get("grow").await?;
    for volume in resizing(&cluster) {
        assert_eq!((volume.requested.as_str(), volume.capacity.as_str()), ("2Gi", "1Gi"), "{volume:?}");
    }
    let sets: Api<StatefulSet> = Api::namespaced(admin.clone(), ns);
    let template = sets.get("grow").await?.spec.unwrap().volume_claim_templates.unwrap()[0].clone();
    assert_eq!(
        request(&PersistentVolumeClaim { spec: template.spec, ..Default::default() }).as_deref(),
        Some("1Gi")
    );
    assert_eq!(reasons(&admin, ns, "grow").await?.iter().filter(|r| *r == "VolumeExpansion").count(), 2);

    plait_tests::wait_until(CONVERGE_TIMEOUT, "stuck to say its class does not allow expansion", || {
        let clusters = clusters.clone();
        async move {
            clusters.get("stuck").await.is_ok_and(|c| {
                c.status.as_ref().is_some_and(|s| {
                    s.conditions.iter().any(|c| {
                        c.type_ == "Degraded"
                            && c.status == "True"
                            && c.message.contains("storage class fixed does not allow volume expansion")
                    })
                })
            })
        }
    })
    .await?;
    for ordinal in 0..2 {
        let claim = claims.get(&format!("data-stuck-{ordinal}")).await?;
        assert_eq!(request(&claim).as_deref(), Some("1Gi"), "a claim of a fixed class is left alone");
    }
    assert!(reasons(&admin, ns, "stuck").await?.iter().any(|r| r == "VolumeExpansionFailed"));

    // The storage system finishes: the claims' capacity reaches their request.
    let finished = json!({ "status": { "capacity": { "storage": "2Gi" } } });
    for ordinal in 0..2 {
        claims
            .patch_status(&format!("data-grow-{ordinal}"), &PatchParams::default(), &Patch::Merge(&finished))
            .await?;
    }
    plait_tests::wait_until(CONVERGE_TIMEOUT, "grow to show no volume resizing", || {
        let clusters = clusters.clone();
        async move { clusters.get("grow").await.is_ok_and(|c| resizing(&c).is_empty()) }
    })
    .await?;

    // A replica added now gets a claim of the template's size, grown on a later pass.
    volumes.create(&post, &volume("grow", "expandable", 2)?).await?;
    clusters
        .patch("grow", &PatchParams::default(), &Patch::Merge(json!({ "spec": { "replicas": 3 } })))
        .await?;
    plait_tests::wait_until(CONVERGE_TIMEOUT, "the new replica's claim grown to 2Gi", || {
        let claims = claims.clone();
        async move {
            claims.get("data-grow-2").await.is_ok_and(|c| bound(&c) && request(&c).as_deref() == Some("2Gi"))
        }
    })
    .await?;
    operator.stop().await;
    Ok(())
}

/// The partition of a StatefulSet's rolling update.
fn partition(set: &StatefulSet) -> Option<i32> {
    set.spec.as_ref()?.update_strategy.as_ref()?.rolling_update.as_ref()?.partition
}

/// The replica container's image in a StatefulSet's pod template.
fn template_image(set: &StatefulSet) -> Option<String> {
    set.spec.as_ref()?.template.spec.as_ref()?.containers.first()?.image.clone()
}

/// Controlled upgrades against the real API server and its StatefulSet controller (the
/// test plays a naive kubelet, which marks a pod Ready the moment its process starts):
/// the image is recorded at creation, so an operator with a new default image rolls
/// nothing; a `spec.image` change rolls the replicas one at a time, highest ordinal
/// first, never restarting one while a higher one is not yet caught up; a
/// `plait.dev/paused` cluster is not rolled (its Paused condition says so) until the
/// annotation goes; every write survives.
#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn operator_rolls_a_new_image_one_caught_up_replica_at_a_time() -> anyhow::Result<()> {
    use plait_tests::kube::Options;

    let cp = ControlPlane::start_with(Options { controller_manager: true }).await?;
    let admin = cp.admin_client();
    install_crds(&admin).await?;
    grant_chart_rbac(&admin).await?;
    let ns = "roll";
    create_namespace(&admin, ns).await?;
    let dir = tempfile::tempdir()?;
    let resolver = Arc::new(StaticResolver::new());
    let mut operator =
        Operator::start_with_image(cp.operator_client(), resolver.clone(), ns, "plait/plaitd:one");
    let clusters: Api<PlaitCluster> = Api::namespaced(admin.clone(), ns);
    let sets: Api<StatefulSet> = Api::namespaced(admin.clone(), ns);
    let mut kubelet = Kubelet::new(admin.clone(), ns, "db", resolver.clone(), dir.path());
    clusters
        .create(&PostParams::default(), &PlaitCluster::new("db", PlaitClusterSpec::with_replicas(3)))
        .await?;

    let mut violations = Vec::new();
    let mut restarts = Vec::new();
    // Syncs the pods until `check` holds, collecting restarts.
    macro_rules! roll_until {
        ($what:expr, $check:expr) => {{
            let deadline = Instant::now() + CONVERGE_TIMEOUT;
            loop {
                restarts.extend(kubelet.sync_pods(&mut violations).await?);
                let cluster = clusters.get("db").await?;
                let set = sets.get_opt("db").await?;
                if $check(&cluster, set.as_ref()) {
                    break cluster;
                }
                if Instant::now() > deadline {
                    bail!("timed out waiting for {}; status: {:#?}", $what, cluster.status);
                }
                tokio::time::sleep(Duration::from_millis(100)).await;
            }
        }};
    }
    let cluster = roll_until!("3 ready replicas", |c: &PlaitCluster, _: Option<&StatefulSet>| settled(3)(c));
    assert_eq!(cluster.status.unwrap().image.as_deref(), Some("plait/plaitd:one"));
    let writer = replica_client(kubelet.endpoint(0)).await;
    writer.create_log(&CreateLogOptions::new("orders", LogType::Kv)).await?;
    for i in 0..20 {
        writer.put("orders", format!("k{i}").as_str(), "before").await?;
    }

    // An operator upgrade (a new default image) rolls nothing: a pass keeps the recorded
    // image, and the StatefulSet's template with it.
    operator.stop().await;
    operator = Operator::start_with_image(cp.operator_client(), resolver.clone(), ns, "plait/plaitd:two");
    plait_operator::reconcile_cluster(Arc::new(clusters.get("db").await?), operator.ctx.clone()).await?;
    let set = sets.get("db").await?;
    assert_eq!(
        template_image(&set).as_deref(),
        Some("plait/plaitd:one"),
        "the operator upgrade rolled the cluster"
    );
    assert_eq!(partition(&set), Some(0));
    assert!(kubelet.sync_pods(&mut violations).await?.is_empty(), "no pod was replaced");

    // Paused: a new image changes nothing, not even the StatefulSet's template.
    let pause = serde_json::json!({ "metadata": { "annotations": { "plait.dev/paused": "true" } } });
    clusters.patch("db", &PatchParams::default(), &Patch::Merge(&pause)).await?;
    let image = serde_json::json!({ "spec": { "image": "plait/plaitd:two" } });
    clusters.patch("db", &PatchParams::default(), &Patch::Merge(&image)).await?;
    roll_until!("the Paused condition", |c: &PlaitCluster, _: Option<&StatefulSet>| {
        condition(c, "Paused").as_deref() == Some("True")
    });
    plait_operator::reconcile_cluster(Arc::new(clusters.get("db").await?), operator.ctx.clone()).await?;
    let set = sets.get("db").await?;
    assert_eq!(template_image(&set).as_deref(), Some("plait/plaitd:one"), "a paused cluster was rolled");
    assert!(kubelet.sync_pods(&mut violations).await?.is_empty(), "a paused cluster's pod was replaced");

    // Unpaused: the roll goes, one caught-up replica at a time, highest ordinal first.
    let resume = serde_json::json!({ "metadata": { "annotations": { "plait.dev/paused": null } } });
    clusters.patch("db", &PatchParams::default(), &Patch::Merge(&resume)).await?;
    let cluster =
        roll_until!("every replica on the new image", |c: &PlaitCluster, s: Option<&StatefulSet>| {
            settled(3)(c)
                && restarts.len() == 3
                && s.and_then(partition) == Some(0)
                && condition(c, "Progressing").as_deref() == Some("False")
        });
    assert_eq!(restarts, vec![2, 1, 0], "highest ordinal first, each once");
    assert!(violations.is_empty(), "a replica restarted before the one above it caught up: {violations:?}");
    let status = cluster.status.unwrap();
    assert_eq!(status.image.as_deref(), Some("plait/plaitd:two"));
    let pods: Api<Pod> = Api::namespaced(admin.clone(), ns);
    for ordinal in 0..3 {
        let pod = pods.get(&format!("db-{ordinal}")).await?;
        let image = pod.spec.and_then(|s| s.containers.first().and_then(|c| c.image.clone()));
        assert_eq!(image.as_deref(), Some("plait/plaitd:two"), "pod {ordinal}");
        wait_for_value(kubelet.endpoint(ordinal), "orders", "k19", "before").await?;
    }
    let seen = reasons(&admin, ns, "db").await?;
    for reason in ["RollingUpdate", "UpdatingReplica", "RolloutComplete", "Paused"] {
        assert!(seen.iter().any(|r| r == reason), "no {reason} event: {seen:?}");
    }
    operator.stop().await;
    Ok(())
}

/// A replica started before admin addresses existed (no `--admin-listen`) is still
/// managed while a roll brings the admin port to its pod: the operator's call to its
/// admin address, refused, falls back to the API address, which such a replica serves
/// everything on. Without the fallback the call fails.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn admin_calls_fall_back_to_the_api_address_of_an_older_replica() -> anyhow::Result<()> {
    use plait_operator::{ReplicaAdmin, Target};
    let dir = tempfile::tempdir()?;
    let replica = Plaitd::start(&dir.path().join("old"), &[])?;
    let target =
        Target { address: "127.0.0.1:1".into(), options: None, fallback: Some(replica.grpc.to_string()) };
    let generation = GrpcAdmin.set_members(&target, 1, vec![replica.grpc.to_string()]).await;
    assert_eq!(generation, Ok(1));
    let without = Target { fallback: None, ..target };
    assert!(GrpcAdmin.set_members(&without, 2, Vec::new()).await.is_err());
    Ok(())
}
