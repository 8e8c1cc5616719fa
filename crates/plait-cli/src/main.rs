//! `plaitctl`: the command-line client for Plait replicas.
//!
//! Parses the command line ([`cli`]), runs the command against a replica ([`run`]) and
//! prints the result for people or programs ([`output`]). Exit status: 0 on success, 1
//! on an error (printed as `error: <message>` on stderr), 2 on a usage error (clap).

mod cli;
mod output;
mod pki;
mod run;

use std::process::ExitCode;

use clap::Parser;

#[tokio::main(flavor = "current_thread")]
async fn main() -> ExitCode {
    let cli = cli::Cli::parse();
    match run::run(cli).await {
        Ok(()) => ExitCode::SUCCESS,
        // A closed pipe (`plaitctl scan big | head`) means the reader has what it wanted.
        Err(error) if is_broken_pipe(&error) => ExitCode::SUCCESS,
        Err(error) => {
            eprintln!("error: {error:#}");
            ExitCode::FAILURE
        }
    }
}

fn is_broken_pipe(error: &anyhow::Error) -> bool {
    error.chain().any(|cause| {
        cause.downcast_ref::<std::io::Error>().is_some_and(|e| e.kind() == std::io::ErrorKind::BrokenPipe)
    })
}
