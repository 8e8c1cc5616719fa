//! `plaitd`: a Plait replica.

use clap::{Parser, Subcommand};
use plait_replica::{CheckArgs, KeygenArgs, LoseEntryArgs, RestoreArgs, ServeArgs, TelemetryConfig};

/// A Plait replica: a tamper-evident, conflict-free replicated database served over gRPC.
///
/// With no subcommand, `plaitd` serves: it opens (or creates) the data directory and
/// listens for gRPC clients. Every flag has an environment equivalent, shown in brackets.
#[derive(Parser, Debug)]
#[command(
    version,
    args_conflicts_with_subcommands = true,
    after_help = "Examples:\n  plaitd                                  # serve ./plait-data on 127.0.0.1:7070\n  plaitd --listen 0.0.0.0:7070 --data-dir /var/lib/plait --metrics-listen 0.0.0.0:9464\n  plaitd check --data-dir /var/lib/plait  # verify a stopped replica's data"
)]
struct Cli {
    #[command(subcommand)]
    command: Option<Command>,
    #[command(flatten)]
    serve: ServeArgs,
}

#[derive(Subcommand, Debug)]
enum Command {
    /// Serve the gRPC API (the default).
    Serve(ServeArgs),
    /// Verify a stopped replica's data directory: every entry re-hashed and re-verified,
    /// seq gap-free, every view rebuilt and compared. Exits 2 if problems are found.
    Check(CheckArgs),
    /// Build a fresh data directory from backups: each log's newest full backup and the
    /// deltas after it, every entry verified. Then start plaitd on it.
    Restore(RestoreArgs),
    /// Generate an ed25519 key file (for a cluster's shared writer key, or a client).
    Keygen(KeygenArgs),
    /// A fault for tests: loses one entry of a stopped replica's log from its entry
    /// store (its entries, by_hash and seq rows), as a lost table block would, and drops
    /// the log's stored digest so the next start sums it again. Prints the entry's hash.
    #[command(hide = true)]
    LoseEntry(LoseEntryArgs),
}

/// jemalloc in place of the system allocator: glibc's malloc kept 100-140 MiB more than
/// the heap held while a replica caught up (fragmented arenas, a growing mmap threshold),
/// and malloc and free were a tenth of the writer's and the verifiers' samples.
/// `.cargo/config.toml` sets how promptly it returns freed memory (docs/benchmarks.md,
/// "The allocator").
#[global_allocator]
static GLOBAL: tikv_jemallocator::Jemalloc = tikv_jemallocator::Jemalloc;

#[tokio::main]
async fn main() -> anyhow::Result<()> {
    let cli = Cli::parse();
    match cli.command {
        None => serve(cli.serve).await,
        Some(Command::Serve(args)) => serve(args).await,
        Some(Command::Check(args)) => {
            if !plait_replica::check(args).await? {
                std::process::exit(2);
            }
            Ok(())
        }
        Some(Command::Restore(args)) => plait_replica::restore(args).await,
        Some(Command::LoseEntry(args)) => plait_replica::lose_entry(args).await,
        Some(Command::Keygen(args)) => {
            let key = plait_core::WriterKey::generate(&mut rand::rngs::OsRng);
            plait_replica::write_key(&args.out, &key)?;
            println!("{}", key.public());
            Ok(())
        }
    }
}

async fn serve(args: ServeArgs) -> anyhow::Result<()> {
    let telemetry = plait_replica::init_telemetry(&TelemetryConfig {
        log_filter: args.log_filter.clone(),
        log_json: args.log_json,
        service_name: "plaitd".into(),
        metrics_listen: args.metrics_listen,
    })?;
    plait_replica::serve(args, telemetry).await
}
