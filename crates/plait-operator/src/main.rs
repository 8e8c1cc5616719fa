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
        "plait-operator running"
    );
    // An empty PLAIT_OPERATOR_NAMESPACE means every namespace, as leaving it unset does.
    let namespace = args.namespace.filter(|ns| !ns.is_empty());
    plait_operator::run(ctx, Scope { namespace }, true, std::future::pending()).await;
    http.abort();
    tracing::info!("plait-operator stopped");
    Ok(())
}
