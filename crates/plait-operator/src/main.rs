//! `plait-operator`: the Kubernetes operator for Plait clusters.
//!
//! `plait-operator run` watches `PlaitCluster` and `PlaitBackup` resources and reconciles
//! them; `plait-operator crd` prints the CustomResourceDefinitions to install.

use std::net::SocketAddr;
use std::sync::Arc;
use std::sync::atomic::{AtomicBool, Ordering};

use anyhow::Context as _;
use clap::{Args, Parser, Subcommand};
use plait_operator::{Context, DnsResolver, GrpcAdmin, PlanContext, Scope, SystemClock};

/// The Plait operator: runs replicated Plait databases on Kubernetes.
#[derive(Parser, Debug)]
#[command(version, about, long_about = None, args_conflicts_with_subcommands = true)]
struct Cli {
    #[command(subcommand)]
    command: Option<Command>,

    /// Settings of `run`, also accepted without the subcommand.
    #[command(flatten)]
    run: RunArgs,
}

#[derive(Subcommand, Debug)]
enum Command {
    /// Watch PlaitCluster and PlaitBackup resources and reconcile them (the default).
    Run(RunArgs),
    /// Print the CustomResourceDefinitions (YAML) to stdout, for `kubectl apply -f -`.
    Crd,
}

#[derive(Args, Debug, Clone)]
struct RunArgs {
    /// Watch only this namespace (all namespaces when not set).
    #[arg(long, env = "PLAIT_OPERATOR_NAMESPACE")]
    namespace: Option<String>,

    /// The plaitd image of clusters that do not name one.
    #[arg(long, env = "PLAIT_OPERATOR_REPLICA_IMAGE", default_value = concat!("plait/plaitd:", env!("CARGO_PKG_VERSION")))]
    replica_image: String,

    /// Address serving /healthz, /readyz and /metrics.
    #[arg(long, env = "PLAIT_OPERATOR_LISTEN", default_value = "0.0.0.0:8080")]
    listen: SocketAddr,

    /// Log filter, in `RUST_LOG` syntax.
    #[arg(long = "log", env = "PLAIT_OPERATOR_LOG", default_value = "info,kube=warn")]
    log_filter: String,

    /// Write logs as JSON lines.
    #[arg(long, env = "PLAIT_OPERATOR_LOG_JSON")]
    log_json: bool,

    #[command(flatten)]
    election: ElectionArgs,
}

/// Leader election: with more than one operator pod, exactly one reconciles.
#[derive(Args, Debug, Clone)]
struct ElectionArgs {
    /// Take part in leader election on a coordination.k8s.io Lease, and reconcile only
    /// while holding it. Needed to run more than one operator; the chart turns it on.
    #[arg(long, env = "PLAIT_OPERATOR_LEADER_ELECT")]
    leader_elect: bool,

    /// The Lease's name; every operator of one installation must use the same.
    #[arg(long, env = "PLAIT_OPERATOR_LEASE_NAME", default_value = "plait-operator")]
    lease_name: String,

    /// The Lease's namespace [default: the operator's own, from POD_NAMESPACE].
    #[arg(long, env = "PLAIT_OPERATOR_LEASE_NAMESPACE")]
    lease_namespace: Option<String>,

    /// This candidate's identity in the Lease [default: POD_NAME, else the host name].
    #[arg(long, env = "PLAIT_OPERATOR_LEASE_IDENTITY")]
    lease_identity: Option<String>,

    /// Seconds a Lease that is not renewed stays held: how long a standby waits after a
    /// leader dies without releasing it.
    #[arg(long, env = "PLAIT_OPERATOR_LEASE_DURATION_SECONDS", default_value_t = 15)]
    lease_duration_seconds: u64,

    /// Seconds the leader keeps reconciling while its renewals fail (less than the
    /// lease duration).
    #[arg(long, env = "PLAIT_OPERATOR_RENEW_DEADLINE_SECONDS", default_value_t = 10)]
    renew_deadline_seconds: u64,

    /// Seconds between attempts to take or renew the Lease (less than the renew
    /// deadline).
    #[arg(long, env = "PLAIT_OPERATOR_RETRY_PERIOD_SECONDS", default_value_t = 2)]
    retry_period_seconds: u64,
}

impl ElectionArgs {
    /// The election's settings, or `None` without `--leader-elect`.
    fn settings(&self) -> anyhow::Result<Option<plait_operator::LeaseSettings>> {
        if !self.leader_elect {
            return Ok(None);
        }
        let from_env = |name: &str| std::env::var(name).ok().filter(|v| !v.is_empty());
        let namespace =
            self.lease_namespace.clone().filter(|ns| !ns.is_empty()).or_else(|| from_env("POD_NAMESPACE"));
        let Some(namespace) = namespace else {
            anyhow::bail!(
                "--leader-elect needs the Lease's namespace: set --lease-namespace or POD_NAMESPACE"
            );
        };
        let identity = self
            .lease_identity
            .clone()
            .filter(|id| !id.is_empty())
            .or_else(|| from_env("POD_NAME"))
            .or_else(|| from_env("HOSTNAME"))
            .or_else(|| std::fs::read_to_string("/etc/hostname").ok().map(|h| h.trim().to_owned()))
            .filter(|id| !id.is_empty());
        let Some(identity) = identity else {
            anyhow::bail!("--leader-elect needs an identity: set --lease-identity or POD_NAME");
        };
        let settings = plait_operator::LeaseSettings {
            namespace,
            name: self.lease_name.clone(),
            identity,
            lease_duration: std::time::Duration::from_secs(self.lease_duration_seconds),
            renew_deadline: std::time::Duration::from_secs(self.renew_deadline_seconds),
            retry_period: std::time::Duration::from_secs(self.retry_period_seconds),
        };
        settings.validate().map_err(|e| anyhow::anyhow!("bad leader election settings: {e}"))?;
        Ok(Some(settings))
    }
}

/// Resolves on SIGTERM (a pod being stopped) or Ctrl-C.
async fn terminated() {
    let mut term = match tokio::signal::unix::signal(tokio::signal::unix::SignalKind::terminate()) {
        Ok(term) => term,
        Err(error) => {
            tracing::warn!("cannot watch for SIGTERM: {error}");
            let _ = tokio::signal::ctrl_c().await;
            return;
        }
    };
    tokio::select! {
        _ = term.recv() => {}
        _ = tokio::signal::ctrl_c() => {}
    }
    tracing::info!("stopping: finishing the passes in flight");
}

#[tokio::main]
async fn main() -> anyhow::Result<()> {
    let cli = Cli::parse();
    match cli.command.unwrap_or(Command::Run(cli.run)) {
        Command::Crd => {
            use std::io::Write as _;
            match std::io::stdout().write_all(plait_operator::crds_yaml().as_bytes()) {
                // `plait-operator crd | head` is fine.
                Err(e) if e.kind() == std::io::ErrorKind::BrokenPipe => Ok(()),
                other => other.context("writing the CRDs"),
            }
        }
        Command::Run(args) => run(args).await,
    }
}

async fn run(args: RunArgs) -> anyhow::Result<()> {
    let filter = tracing_subscriber::EnvFilter::try_new(&args.log_filter)
        .with_context(|| format!("bad --log filter {:?}", args.log_filter))?;
    let builder = tracing_subscriber::fmt().with_env_filter(filter);
    if args.log_json {
        builder.json().init()
    } else {
        builder.init()
    }

    let election = args.election.settings()?;
    plait_operator::install_crypto_provider();
    let client = kube::Client::try_default().await.context(
        "cannot reach the Kubernetes API (in a pod: the service account; outside: ~/.kube/config)",
    )?;
    let ctx = Context::new(
        client.clone(),
        Arc::new(GrpcAdmin),
        Arc::new(DnsResolver),
        Arc::new(SystemClock),
        PlanContext {
            replica_image: args.replica_image.clone(),
            operator_namespace: std::env::var("POD_NAMESPACE").ok().filter(|ns| !ns.is_empty()),
        },
    );

    // Ready once the API answers: the controllers then list and watch on their own.
    let ready = Arc::new(AtomicBool::new(false));
    let listener = tokio::net::TcpListener::bind(args.listen)
        .await
        .with_context(|| format!("cannot listen on {}", args.listen))?;
    let http = {
        let ctx = ctx.clone();
        let ready = ready.clone();
        let router = axum::Router::new()
            .route("/healthz", axum::routing::get(|| async { "ok" }))
            .route(
                "/readyz",
                axum::routing::get(move || {
                    let ready = ready.load(Ordering::Relaxed);
                    async move {
                        if ready {
                            (axum::http::StatusCode::OK, "ready")
                        } else {
                            (axum::http::StatusCode::SERVICE_UNAVAILABLE, "starting")
                        }
                    }
                }),
            )
            .route(
                "/metrics",
                axum::routing::get(move || {
                    let body = ctx.metrics.render();
                    async move { body }
                }),
            );
        tokio::spawn(async move { axum::serve(listener, router).await })
    };
    client.apiserver_version().await.context("the Kubernetes API does not answer")?;
    ready.store(true, Ordering::Relaxed);
    tracing::info!(
        namespace = args.namespace.as_deref().filter(|ns| !ns.is_empty()).unwrap_or("<all>"),
        replica_image = %args.replica_image,
        listen = %args.listen,
        leader_election = election.is_some(),
        "plait-operator running"
    );
    // An empty PLAIT_OPERATOR_NAMESPACE means every namespace, as leaving it unset does.
    let scope = Scope { namespace: args.namespace.filter(|ns| !ns.is_empty()) };
    let outcome = match election {
        Some(settings) => plait_operator::run_leading(ctx, scope, settings, terminated()).await,
        None => {
            ctx.metrics.set_leader(true);
            plait_operator::run(ctx, scope, false, terminated()).await;
            Ok(())
        }
    };
    http.abort();
    match outcome {
        Ok(()) => {
            tracing::info!("plait-operator stopped");
            Ok(())
        }
        // Exit at once: another operator may be taking over.
        Err(lost) => Err(anyhow::anyhow!("{lost}; exiting, to start over as a candidate")),
    }
}
