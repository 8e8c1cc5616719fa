//! A real Kubernetes control plane for tests: etcd and kube-apiserver, and optionally
//! kube-controller-manager, as processes on loopback ports over a temporary directory.
//! There is no scheduler and no kubelet: Pods are created but stay `Pending`.
//!
//! The binaries come from `tests/kube/build-binaries.sh` (which `scripts/test-prereqs.sh`
//! runs): from `PLAIT_KUBE_BIN`, or else the directory that script builds into by default.
//!
//! Two identities are set up with static tokens: the admin (`system:masters`) and the
//! operator's service account (`system:serviceaccount:plait-system:plait-operator`),
//! which starts with no permissions beyond those of every authenticated user.

use std::fs::File;
use std::io::Write;
use std::os::unix::process::CommandExt;
use std::path::{Path, PathBuf};
use std::process::{Child, ChildStdin, Command, Stdio};
use std::time::{Duration, Instant};

use anyhow::{Context, bail};
use k8s_openapi::api::core::v1::{Namespace, ServiceAccount};
use k8s_openapi::api::rbac::v1::{ClusterRole, ClusterRoleBinding};
use k8s_openapi::apiextensions_apiserver::pkg::apis::apiextensions::v1::CustomResourceDefinition;
use kube::api::{Api, Patch, PatchParams, PostParams};
use kube::config::Kubeconfig;
use kube::{Client, ResourceExt};
use rand::RngCore;
use serde::Deserialize;

/// The versions `tests/kube/build-binaries.sh` builds by default; they name its cache
/// directory.
pub const KUBE_VERSION: &str = "1.36.3";
pub const ETCD_VERSION: &str = "3.6.8";

/// The operator's identity: the service account its Deployment runs as.
pub const OPERATOR_NAMESPACE: &str = "plait-system";
pub const OPERATOR_SERVICE_ACCOUNT: &str = "plait-operator";
pub const OPERATOR_USER: &str = "system:serviceaccount:plait-system:plait-operator";

/// The field manager of server-side applies made by the harness.
pub const FIELD_MANAGER: &str = "plait-tests";

/// How long the control plane may take to become ready. It usually takes 2-3 s; a
/// loaded two-core machine running other tests beside it takes several times that.
const START_TIMEOUT: Duration = Duration::from_secs(60);
/// How long a CRD may take to be served after it is applied.
const ESTABLISHED_TIMEOUT: Duration = Duration::from_secs(30);
/// Interval between readiness polls.
const POLL_INTERVAL: Duration = Duration::from_millis(50);
/// Start attempts: a free port found by binding port 0 can be taken by another process
/// before etcd or the API server binds it; only that failure is retried.
const START_ATTEMPTS_MAX: u32 = 3;
/// Log lines quoted in a start failure.
const LOG_TAIL_LINES: usize = 40;

/// Controllers that act for a cloud provider; there is none.
const CLOUD_CONTROLLERS: [&str; 3] =
    ["cloud-node-lifecycle-controller", "node-route-controller", "service-lb-controller"];

/// What to run besides etcd and the API server.
#[derive(Clone, Copy, Debug, Default)]
pub struct Options {
    /// Run kube-controller-manager: StatefulSets create Pods, owned objects are garbage
    /// collected, namespaces get their `default` ServiceAccount.
    pub controller_manager: bool,
}

/// A running control plane. Dropping it kills its processes (SIGKILL) and removes its
/// directory; if the test process dies without dropping it, a reaper does the same.
pub struct ControlPlane {
    url: String,
    admin_kubeconfig: Kubeconfig,
    operator_kubeconfig: Kubeconfig,
    admin_kubeconfig_path: PathBuf,
    operator_kubeconfig_path: PathBuf,
    processes: Vec<Process>,
    reaper: Reaper,
    // Dropped last, after every process that writes into it is dead.
    dir: tempfile::TempDir,
}

impl ControlPlane {
    /// Starts etcd and kube-apiserver and waits until the API server is ready.
    pub async fn start() -> anyhow::Result<ControlPlane> {
        ControlPlane::start_with(Options::default()).await
    }

    /// Starts etcd, kube-apiserver and what `options` asks for, and waits until all of
    /// it is ready.
    pub async fn start_with(options: Options) -> anyhow::Result<ControlPlane> {
        let mut attempt = 1;
        loop {
            match ControlPlane::try_start(options).await {
                Err(e)
                    if attempt < START_ATTEMPTS_MAX
                        && format!("{e:#}").contains("address already in use") =>
                {
                    attempt += 1;
                }
                result => return result,
            }
        }
    }

    async fn try_start(options: Options) -> anyhow::Result<ControlPlane> {
        let bin = binaries_dir()?;
        let dir = tempfile::Builder::new().prefix("plait-kube-").tempdir()?;
        let root = dir.path().to_path_buf();
        let reaper = Reaper::start(&root)?;
        // Built before anything starts, so that a failed start cleans up through `Drop`.
        let mut plane = ControlPlane {
            url: String::new(),
            admin_kubeconfig: Kubeconfig::default(),
            operator_kubeconfig: Kubeconfig::default(),
            admin_kubeconfig_path: root.join("admin.kubeconfig"),
            operator_kubeconfig_path: root.join("operator.kubeconfig"),
            processes: Vec::new(),
            reaper,
            dir,
        };
        let deadline = Instant::now() + START_TIMEOUT;

        // The key service-account tokens are signed with (P-256: generated at once).
        let signing_key = root.join("service-account.key");
        let verifying_key = root.join("service-account.pub");
        openssl(&["ecparam", "-genkey", "-name", "prime256v1", "-noout", "-out"], &signing_key)?;
        openssl(&["ec", "-pubout", "-in", &signing_key.to_string_lossy(), "-out"], &verifying_key)?;

        let admin_token = random_token();
        let operator_token = random_token();
        let tokens = root.join("tokens.csv");
        std::fs::write(
            &tokens,
            format!(
                "{admin_token},admin,admin,\"system:masters\"\n\
                 {operator_token},{OPERATOR_USER},plait-operator-uid,\
                 \"system:serviceaccounts,system:serviceaccounts:{OPERATOR_NAMESPACE},system:authenticated\"\n"
            ),
        )?;

        let etcd_client_port = free_port()?;
        let etcd_peer_port = free_port()?;
        let etcd_client = format!("http://127.0.0.1:{etcd_client_port}");
        let etcd_peer = format!("http://127.0.0.1:{etcd_peer_port}");
        plane.spawn(
            &bin,
            "etcd",
            &[
                "--name=default".into(),
                format!("--data-dir={}", root.join("etcd").display()),
                format!("--listen-client-urls={etcd_client}"),
                format!("--advertise-client-urls={etcd_client}"),
                format!("--listen-peer-urls={etcd_peer}"),
                format!("--initial-advertise-peer-urls={etcd_peer}"),
                format!("--initial-cluster=default={etcd_peer}"),
                // A test's data need not survive a power cut.
                "--unsafe-no-fsync".into(),
                "--log-level=warn".into(),
            ],
        )?;
        loop {
            if tokio::net::TcpStream::connect(("127.0.0.1", etcd_client_port)).await.is_ok() {
                break;
            }
            plane.check_alive("etcd", deadline, "listening")?;
            tokio::time::sleep(POLL_INTERVAL).await;
        }

        let apiserver_port = free_port()?;
        let cert_dir = root.join("certs");
        plane.spawn(
            &bin,
            "kube-apiserver",
            &[
                format!("--etcd-servers={etcd_client}"),
                "--bind-address=127.0.0.1".into(),
                "--advertise-address=127.0.0.1".into(),
                format!("--secure-port={apiserver_port}"),
                // The API server signs its own serving certificate (with a CA it puts in
                // the same file) for 127.0.0.1.
                format!("--cert-dir={}", cert_dir.display()),
                "--service-cluster-ip-range=10.96.0.0/16".into(),
                "--authorization-mode=Node,RBAC".into(),
                format!("--token-auth-file={}", tokens.display()),
                format!("--service-account-key-file={}", verifying_key.display()),
                format!("--service-account-signing-key-file={}", signing_key.display()),
                "--service-account-issuer=https://kubernetes.default.svc".into(),
                "--api-audiences=https://kubernetes.default.svc".into(),
                // The reconciler would publish 127.0.0.1 as the endpoint of the
                // `kubernetes` Service, which Endpoints refuse (loopback), every 10 s.
                "--endpoint-reconciler-type=none".into(),
                "--profiling=false".into(),
            ],
        )?;
        plane.url = format!("https://127.0.0.1:{apiserver_port}");
        let ca = cert_dir.join("apiserver.crt");
        plane.admin_kubeconfig = kubeconfig(&plane.url, &ca, "admin", &admin_token)?;
        plane.operator_kubeconfig = kubeconfig(&plane.url, &ca, OPERATOR_SERVICE_ACCOUNT, &operator_token)?;
        std::fs::write(&plane.admin_kubeconfig_path, serde_yaml::to_string(&plane.admin_kubeconfig)?)?;
        std::fs::write(&plane.operator_kubeconfig_path, serde_yaml::to_string(&plane.operator_kubeconfig)?)?;

        // Ready: /readyz answers ok (which includes the RBAC bootstrap post-start hook),
        // and what every test relies on is there.
        loop {
            // The certificate file appears during startup; a client is built from it on
            // each poll until one works.
            let error = match plane.api_ready().await {
                Ok(()) => break,
                Err(e) => e,
            };
            plane.check_alive("kube-apiserver", deadline, &format!("ready (last answer: {error:#})"))?;
            tokio::time::sleep(POLL_INTERVAL).await;
        }

        if options.controller_manager {
            let args = [
                format!("--kubeconfig={}", plane.admin_kubeconfig_path.display()),
                format!(
                    "--controllers=*,{}",
                    CLOUD_CONTROLLERS.iter().map(|c| format!("-{c}")).collect::<Vec<_>>().join(",")
                ),
                format!("--service-account-private-key-file={}", signing_key.display()),
                format!("--root-ca-file={}", ca.display()),
                "--use-service-account-credentials=false".into(),
                "--leader-elect=false".into(),
                // No health or metrics endpoint: nothing reads it, and no port to find.
                "--secure-port=0".into(),
                // By default it creates this directory under /usr/libexec.
                format!("--flex-volume-plugin-dir={}", root.join("flexvolume").display()),
                "--profiling=false".into(),
            ];
            plane.spawn(&bin, "kube-controller-manager", &args)?;
            // Its service-account controller gives every namespace a `default`
            // ServiceAccount: once `default` has one, its controllers run.
            let client = plane.admin_client();
            let accounts: Api<ServiceAccount> = Api::namespaced(client, "default");
            loop {
                if accounts.get_opt("default").await.ok().flatten().is_some() {
                    break;
                }
                plane.check_alive("kube-controller-manager", deadline, "running its controllers")?;
                tokio::time::sleep(POLL_INTERVAL).await;
            }
        }
        Ok(plane)
    }

    /// The API server's URL (`https://127.0.0.1:<port>`).
    pub fn url(&self) -> &str {
        &self.url
    }

    /// A kubeconfig file for the admin (`system:masters`), for processes such as the
    /// operator or kubectl.
    pub fn kubeconfig_path(&self) -> &Path {
        &self.admin_kubeconfig_path
    }

    /// A kubeconfig file for the operator's service account.
    pub fn operator_kubeconfig_path(&self) -> &Path {
        &self.operator_kubeconfig_path
    }

    /// A client with every permission (`system:masters`). Call it inside the Tokio
    /// runtime that will use the client: a client's connection pool lives in it.
    pub fn admin_client(&self) -> Client {
        plait_operator::install_crypto_provider();
        Client::try_from(self.admin_kubeconfig.clone()).expect("the admin kubeconfig worked at start")
    }

    /// A client authenticated as the operator's service account, with only the
    /// permissions RBAC bindings grant it. Same runtime rule as `admin_client`.
    pub fn operator_client(&self) -> Client {
        plait_operator::install_crypto_provider();
        Client::try_from(self.operator_kubeconfig.clone()).expect("the operator kubeconfig worked at start")
    }

    /// One readiness poll with a fresh admin client.
    async fn api_ready(&self) -> anyhow::Result<()> {
        plait_operator::install_crypto_provider();
        let client = Client::try_from(self.admin_kubeconfig.clone())?;
        let readyz = client.request_text(http::Request::get("/readyz").body(Vec::new())?).await?;
        if readyz.trim() != "ok" {
            bail!("/readyz: {readyz}");
        }
        Api::<Namespace>::all(client.clone()).get("default").await.context("namespace default")?;
        for role in ["cluster-admin", "admin", "edit", "view"] {
            Api::<ClusterRole>::all(client.clone()).get(role).await.context("bootstrap ClusterRole")?;
        }
        Api::<ClusterRoleBinding>::all(client).get("cluster-admin").await.context("bootstrap binding")?;
        Ok(())
    }

    /// Starts one control-plane process, logging to `<dir>/<name>.log`.
    fn spawn(&mut self, bin: &Path, name: &'static str, args: &[String]) -> anyhow::Result<()> {
        let log_path = self.dir.path().join(format!("{name}.log"));
        let log = File::create(&log_path)?;
        let child = Command::new(bin.join(name))
            .args(args)
            .current_dir(self.dir.path())
            .stdin(Stdio::null())
            .stdout(log.try_clone()?)
            .stderr(log)
            // Out of the terminal's process group: Ctrl-C reaches the test process only,
            // and the reaper kills these at once instead of waiting for their graceful
            // shutdown.
            .process_group(0)
            .spawn()
            .with_context(|| format!("cannot start {}", bin.join(name).display()))?;
        self.reaper.watch(child.id());
        self.processes.push(Process { name, child, log_path });
        Ok(())
    }

    /// Fails with the end of a process's log if it exited or the deadline passed.
    fn check_alive(&mut self, name: &str, deadline: Instant, waiting_for: &str) -> anyhow::Result<()> {
        let process = self.processes.iter_mut().find(|p| p.name == name).expect("a started process");
        let problem = if let Some(status) = process.child.try_wait()? {
            format!("{name} exited ({status}) before {waiting_for}")
        } else if Instant::now() > deadline {
            format!("{name} was not {waiting_for} within {START_TIMEOUT:?}")
        } else {
            return Ok(());
        };
        bail!(
            "{problem}; the last {LOG_TAIL_LINES} lines of {}:\n{}",
            process.log_path.display(),
            log_tail(&process.log_path, LOG_TAIL_LINES)
        )
    }
}

impl Drop for ControlPlane {
    fn drop(&mut self) {
        for process in &mut self.processes {
            let _ = process.child.kill();
            let _ = process.child.wait();
        }
        self.reaper.disarm();
    }
}

struct Process {
    name: &'static str,
    child: Child,
    log_path: PathBuf,
}

/// Kills the control plane's processes and removes its directory when the test process
/// dies without dropping the `ControlPlane`: SIGKILL, an abort, or a control plane kept in
/// a static, which is never dropped. The test process writes each process id to the
/// reaper's stdin; the kernel closes that pipe however the test process ends, and at end
/// of file the reaper acts. A normal drop kills the processes itself and disarms it.
/// (`PR_SET_PDEATHSIG` would need `unsafe` in `pre_exec`, and fires when the spawning
/// *thread* exits, which in a test runtime may be long before the control plane is done.)
struct Reaper {
    child: Child,
    stdin: Option<ChildStdin>,
}

const REAPER_SCRIPT: &str = r#"
pids=""
while read -r line; do
  case "$line" in
    disarm) exit 0 ;;
    *) pids="$pids $line" ;;
  esac
done
if [ -n "$pids" ]; then kill -KILL $pids 2>/dev/null; fi
rm -rf "$1"
"#;

impl Reaper {
    fn start(dir: &Path) -> anyhow::Result<Reaper> {
        let mut child = Command::new("sh")
            .args(["-c", REAPER_SCRIPT, "plait-kube-reaper"])
            .arg(dir)
            .stdin(Stdio::piped())
            .stdout(Stdio::null())
            .stderr(Stdio::null())
            // Ctrl-C must not kill it before the test process, whose exit it waits for.
            .process_group(0)
            .spawn()
            .context("cannot start sh")?;
        let stdin = child.stdin.take();
        Ok(Reaper { child, stdin })
    }

    fn watch(&mut self, pid: u32) {
        if let Some(stdin) = &mut self.stdin {
            let _ = writeln!(stdin, "{pid}");
        }
    }

    fn disarm(&mut self) {
        if let Some(mut stdin) = self.stdin.take() {
            let _ = writeln!(stdin, "disarm");
        }
        let _ = self.child.wait();
    }
}

/// The directory holding `etcd`, `kube-apiserver` and `kube-controller-manager`:
/// `PLAIT_KUBE_BIN`, or else where `tests/kube/build-binaries.sh` builds them by default.
pub fn binaries_dir() -> anyhow::Result<PathBuf> {
    let dir = match std::env::var_os("PLAIT_KUBE_BIN") {
        Some(dir) => PathBuf::from(dir),
        None => {
            let home = std::env::var_os("HOME").context("HOME is not set (and PLAIT_KUBE_BIN is not)")?;
            PathBuf::from(home)
                .join(".cache/plait-ci")
                .join(format!("kube-{KUBE_VERSION}-etcd-{ETCD_VERSION}"))
                .join("bin")
        }
    };
    for name in ["etcd", "kube-apiserver", "kube-controller-manager"] {
        if !dir.join(name).is_file() {
            bail!(
                "{} is missing: run tests/kube/build-binaries.sh (it builds Kubernetes {KUBE_VERSION} and \
                 etcd {ETCD_VERSION} once and caches them), or set PLAIT_KUBE_BIN to a directory holding \
                 etcd, kube-apiserver and kube-controller-manager",
                dir.join(name).display()
            );
        }
    }
    Ok(dir)
}

/// A kubeconfig that authenticates with a bearer token and trusts the API server's
/// self-signed CA.
fn kubeconfig(url: &str, ca: &Path, user: &str, token: &str) -> anyhow::Result<Kubeconfig> {
    let kubeconfig = serde_json::from_value(serde_json::json!({
        "apiVersion": "v1",
        "kind": "Config",
        "clusters": [{ "name": "plait-test", "cluster": { "server": url, "certificate-authority": ca } }],
        "users": [{ "name": user, "user": { "token": token } }],
        "contexts": [{ "name": user, "context": { "cluster": "plait-test", "user": user } }],
        "current-context": user,
    }))?;
    Ok(kubeconfig)
}

/// Runs the `openssl` command line tool with `args` followed by `out`.
fn openssl(args: &[&str], out: &Path) -> anyhow::Result<()> {
    let output = Command::new("openssl")
        .args(args)
        .arg(out)
        .output()
        .context("cannot run openssl (the control plane's signing key is made with it)")?;
    if !output.status.success() {
        bail!("openssl {} failed: {}", args.join(" "), String::from_utf8_lossy(&output.stderr));
    }
    Ok(())
}

fn random_token() -> String {
    let mut bytes = [0u8; 16];
    rand::thread_rng().fill_bytes(&mut bytes);
    hex::encode(bytes)
}

fn free_port() -> anyhow::Result<u16> {
    Ok(std::net::TcpListener::bind("127.0.0.1:0")?.local_addr()?.port())
}

fn log_tail(path: &Path, lines: usize) -> String {
    let text = std::fs::read_to_string(path).unwrap_or_default();
    let all: Vec<&str> = text.lines().collect();
    all[all.len().saturating_sub(lines)..].join("\n")
}

/// Creates a namespace.
pub async fn create_namespace(client: &Client, name: &str) -> anyhow::Result<Namespace> {
    let namespace: Namespace = serde_json::from_value(serde_json::json!({ "metadata": { "name": name } }))?;
    Api::<Namespace>::all(client.clone())
        .create(&PostParams::default(), &namespace)
        .await
        .with_context(|| format!("creating namespace {name}"))
}

/// The operator's CRDs (`PlaitCluster`, `PlaitBackup`), parsed from the YAML the operator
/// prints and the chart ships.
pub fn crds() -> anyhow::Result<Vec<CustomResourceDefinition>> {
    let yaml = plait_operator::crds_yaml();
    let mut crds = Vec::new();
    for document in serde_yaml::Deserializer::from_str(&yaml) {
        let value = serde_yaml::Value::deserialize(document)?;
        if value.is_null() {
            continue;
        }
        crds.push(serde_yaml::from_value(value).context("a CRD document")?);
    }
    Ok(crds)
}

/// Applies the operator's CRDs (server-side apply) and waits until both are served.
pub async fn install_crds(client: &Client) -> anyhow::Result<()> {
    let api = Api::<CustomResourceDefinition>::all(client.clone());
    let crds = crds()?;
    for crd in &crds {
        api.patch(&crd.name_any(), &PatchParams::apply(FIELD_MANAGER).force(), &Patch::Apply(crd))
            .await
            .with_context(|| format!("applying CRD {}", crd.name_any()))?;
    }
    for crd in &crds {
        wait_established(client, &crd.name_any(), ESTABLISHED_TIMEOUT).await?;
    }
    Ok(())
}

/// Waits until the CRD `name` (`plaitclusters.plait.dev`) has the condition
/// `Established`: its resources are served.
pub async fn wait_established(client: &Client, name: &str, timeout: Duration) -> anyhow::Result<()> {
    let api = Api::<CustomResourceDefinition>::all(client.clone());
    crate::wait_until(timeout, &format!("CRD {name} to be established"), || async {
        let Ok(crd) = api.get(name).await else { return false };
        let conditions = crd.status.and_then(|s| s.conditions).unwrap_or_default();
        conditions.iter().any(|c| c.type_ == "Established" && c.status == "True")
    })
    .await
}
