//! The Plait replica: the gRPC services over a `plait-store`, the server that hosts
//! them, and the pieces of the `plaitd` binary (configuration, keys, telemetry).

mod auth;
mod backup;
mod backup_jobs;
mod checkpointer;
mod config;
mod error;
mod keyfile;
mod net;
mod readiness;
mod reload;
mod replication;
mod server;
mod services;
mod status;
mod telemetry;
#[cfg(test)]
mod test_support;

pub use config::{CheckArgs, KeygenArgs, LoseEntryArgs, RestoreArgs, S3Args, SecurityArgs, ServeArgs};
pub use keyfile::{load_or_create_key, read_key, write_key};
pub use server::{check, lose_entry, restore, serve};
pub use telemetry::{Metrics, Telemetry, TelemetryConfig, init as init_telemetry};
