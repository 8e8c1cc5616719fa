//! How the operator talks to replicas: the `Admin` gRPC calls it makes, and the seam that
//! turns a pod into an address. In a cluster a replica is reached through its stable DNS
//! name under the headless Service; tests resolve the same pods to `plaitd` processes on
//! loopback.

use std::collections::BTreeMap;
use std::future::Future;
use std::pin::Pin;
use std::sync::Mutex;
use std::time::Duration;

use plait_client::{Client, ClientOptions};

/// The gRPC port of every replica.
pub const GRPC_PORT: u16 = 7070;
/// The Prometheus metrics port of every replica.
pub const METRICS_PORT: u16 = 9090;
/// The admin port of every replica (`plaitd --admin-listen`): the cluster-admin methods
/// the operator calls (SetMembers, Drain, backups) are served there only, so a
/// NetworkPolicy can admit the operator alone to it.
pub const ADMIN_PORT: u16 = 7072;

/// How long one status probe may take before the replica counts as unreachable.
pub(crate) const PROBE_TIMEOUT: Duration = Duration::from_secs(3);
/// How long the operator waits for a leaving replica to confirm that its entries are held
/// elsewhere, per attempt. Failed attempts are retried with backoff.
pub(crate) const DRAIN_TIMEOUT: Duration = Duration::from_secs(60);

/// Turns replica `ordinal` of a cluster into the gRPC address (`host:port`) both the
/// operator and the other replicas use to reach it.
pub trait Resolve: Send + Sync {
    fn address(&self, namespace: &str, cluster: &str, ordinal: i32) -> String;
    /// The replica's admin address (`--admin-listen`), for the cluster-admin methods.
    fn admin_address(&self, namespace: &str, cluster: &str, ordinal: i32) -> String;
}

/// The in-cluster resolver: `<cluster>-<ordinal>.<cluster>-headless.<namespace>.svc:7070`.
#[derive(Clone, Debug, Default)]
pub struct DnsResolver;

impl Resolve for DnsResolver {
    fn address(&self, namespace: &str, cluster: &str, ordinal: i32) -> String {
        format!("{cluster}-{ordinal}.{}.{namespace}.svc:{GRPC_PORT}", crate::plan::headless_name(cluster))
    }

    fn admin_address(&self, namespace: &str, cluster: &str, ordinal: i32) -> String {
        format!("{cluster}-{ordinal}.{}.{namespace}.svc:{ADMIN_PORT}", crate::plan::headless_name(cluster))
    }
}

/// A resolver with a fixed table, for running the operator against processes outside a
/// cluster (tests, local development). Pods not in the table resolve to an address that
/// refuses connections.
#[derive(Debug, Default)]
pub struct StaticResolver {
    table: Mutex<BTreeMap<(String, String, i32), String>>,
    /// Admin addresses; a pod without one is called on its API address.
    admin: Mutex<BTreeMap<(String, String, i32), String>>,
}

impl StaticResolver {
    pub fn new() -> StaticResolver {
        StaticResolver::default()
    }

    pub fn set(&self, namespace: &str, cluster: &str, ordinal: i32, address: impl Into<String>) {
        self.table
            .lock()
            .expect("resolver table lock")
            .insert((namespace.to_owned(), cluster.to_owned(), ordinal), address.into());
    }

    /// Sets the pod's admin address (`--admin-listen`).
    pub fn set_admin(&self, namespace: &str, cluster: &str, ordinal: i32, address: impl Into<String>) {
        self.admin
            .lock()
            .expect("resolver table lock")
            .insert((namespace.to_owned(), cluster.to_owned(), ordinal), address.into());
    }

    pub fn remove(&self, namespace: &str, cluster: &str, ordinal: i32) {
        let key = (namespace.to_owned(), cluster.to_owned(), ordinal);
        self.table.lock().expect("resolver table lock").remove(&key);
        self.admin.lock().expect("resolver table lock").remove(&key);
    }
}

impl Resolve for StaticResolver {
    fn address(&self, namespace: &str, cluster: &str, ordinal: i32) -> String {
        self.table
            .lock()
            .expect("resolver table lock")
            .get(&(namespace.to_owned(), cluster.to_owned(), ordinal))
            .cloned()
            // Port 1 on loopback: nothing listens there, so the probe fails fast.
            .unwrap_or_else(|| "127.0.0.1:1".to_owned())
    }

    fn admin_address(&self, namespace: &str, cluster: &str, ordinal: i32) -> String {
        let admin = self.admin.lock().expect("resolver table lock");
        match admin.get(&(namespace.to_owned(), cluster.to_owned(), ordinal)) {
            Some(address) => address.clone(),
            None => {
                drop(admin);
                self.address(namespace, cluster, ordinal)
            }
        }
    }
}

/// A replica as the operator calls it: its address, and the TLS options and client
/// certificate to call it with (none for a cluster with `tls: Disabled`).
#[derive(Clone, Debug)]
pub struct Target {
    pub address: String,
    pub options: Option<ClientOptions>,
    /// Where to connect when `address` cannot be reached: for the admin address, the API
    /// address, which a replica started before admin addresses existed serves everything
    /// on (its pod is replaced by the roll that brings the admin port).
    pub fallback: Option<String>,
}

impl Target {
    /// A replica reached in plaintext.
    pub fn plaintext(address: impl Into<String>) -> Target {
        Target { address: address.into(), options: None, fallback: None }
    }
}

/// What the operator learns from one replica's `Admin.Status`.
#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub struct ReplicaStatus {
    pub node_id: String,
    pub epoch: String,
    pub writable: bool,
    pub draining: bool,
    pub members_generation: u64,
    /// Entries its peers hold that it has not pulled yet, summed over logs and taking the
    /// largest over peers.
    pub lag: u64,
    /// `None` when the replica reports itself ready for clients (caught up with the
    /// members it reaches), else its reason.
    pub not_ready: Option<String>,
    /// Logs whose digest differs from a peer's at the same heads, as `log (peer)`.
    pub digest_mismatches: Vec<String>,
    /// Peer and log pairs (of logs with entries) whose digests it has not yet found equal
    /// at the same heads on the current connection.
    pub unverified: u64,
}

/// A backup request as the operator makes it.
#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub struct BackupRequest {
    pub destination: String,
    pub logs: Vec<String>,
    pub delta: bool,
    pub retain_full: u32,
}

/// One log's part of a finished backup.
#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub struct BackupObject {
    pub name: String,
    pub kind: String,
    pub key: String,
    pub bytes: u64,
    pub seq: u64,
    pub state_root: String,
}

/// A finished backup.
#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub struct BackupOutcome {
    pub backup_id: String,
    pub objects: Vec<BackupObject>,
}

/// A backup job as the replica running it reports it.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum BackupJob {
    Running {
        logs_done: u32,
        logs_total: u32,
        bytes_written: u64,
    },
    Completed(BackupOutcome),
    /// The error the backup failed with.
    Failed(String),
}

type Reply<'a, T> = Pin<Box<dyn Future<Output = Result<T, String>> + Send + 'a>>;

/// The `Admin` calls the operator makes. Errors are messages for status and events.
pub trait ReplicaAdmin: Send + Sync {
    fn status<'a>(&'a self, target: &'a Target) -> Reply<'a, ReplicaStatus>;
    fn set_members<'a>(&'a self, target: &'a Target, generation: u64, members: Vec<String>)
    -> Reply<'a, u64>;
    fn drain<'a>(&'a self, target: &'a Target, timeout: Duration) -> Reply<'a, ()>;
    /// Starts backup job `job` on the replica (or finds it, started before) and answers
    /// at once.
    fn start_backup<'a>(
        &'a self,
        target: &'a Target,
        job: &'a str,
        request: BackupRequest,
    ) -> Reply<'a, BackupJob>;
    /// Backup job `job`, or `None` when the replica does not know it (it restarted).
    fn backup_job<'a>(&'a self, target: &'a Target, job: &'a str) -> Reply<'a, Option<BackupJob>>;
}

/// The real thing: `Admin` over gRPC with `plait-client`.
#[derive(Clone, Debug, Default)]
pub struct GrpcAdmin;

async fn connect(target: &Target) -> Result<Client, String> {
    match connect_to(target, &target.address).await {
        Ok(client) => Ok(client),
        Err(first) => match &target.fallback {
            Some(fallback) => {
                connect_to(target, fallback).await.map_err(|second| format!("{first}; {second}"))
            }
            None => Err(first),
        },
    }
}

async fn connect_to(target: &Target, address: &str) -> Result<Client, String> {
    let (url, options) = match &target.options {
        Some(options) => (address.to_owned(), options.clone()),
        None if address.contains("://") => (address.to_owned(), ClientOptions::new()),
        None => (format!("http://{address}"), ClientOptions::new()),
    };
    tokio::time::timeout(PROBE_TIMEOUT, Client::connect_with(url, &options))
        .await
        .map_err(|_| format!("{address}: no answer within {} s", PROBE_TIMEOUT.as_secs()))?
        .map_err(|e| format!("{address}: {e}"))
}

async fn within<T>(
    address: &str,
    limit: Duration,
    call: impl Future<Output = Result<T, plait_client::ClientError>>,
) -> Result<T, String> {
    tokio::time::timeout(limit, call)
        .await
        .map_err(|_| format!("{address}: no answer within {} s", limit.as_secs()))?
        .map_err(|e| format!("{address}: {e}"))
}

impl ReplicaAdmin for GrpcAdmin {
    fn status<'a>(&'a self, target: &'a Target) -> Reply<'a, ReplicaStatus> {
        Box::pin(async move {
            let address = target.address.as_str();
            let client = connect(target).await?;
            let status = within(address, PROBE_TIMEOUT, client.status()).await?;
            let lag = status
                .peers
                .iter()
                .map(|peer| peer.logs.iter().map(|log| log.lag).sum::<u64>())
                .max()
                .unwrap_or(0);
            Ok(ReplicaStatus {
                node_id: hex::encode(status.node_id.as_bytes()),
                epoch: hex::encode(status.epoch),
                writable: status.writable,
                draining: status.draining,
                members_generation: status.members_generation,
                lag,
                not_ready: status.not_ready,
                digest_mismatches: status
                    .peers
                    .iter()
                    .flat_map(|peer| {
                        peer.logs
                            .iter()
                            .filter(|log| log.digest_mismatch)
                            .map(move |log| format!("{} ({})", log.name, peer.address))
                    })
                    .collect(),
                unverified: status
                    .peers
                    .iter()
                    .flat_map(|peer| peer.logs.iter())
                    .filter(|log| log.verified_seq == 0 && !log.digest_mismatch && log.peer_seq > 0)
                    .count() as u64,
            })
        })
    }

    fn set_members<'a>(
        &'a self,
        target: &'a Target,
        generation: u64,
        members: Vec<String>,
    ) -> Reply<'a, u64> {
        Box::pin(async move {
            let address = target.address.as_str();
            let client = connect(target).await?;
            within(address, PROBE_TIMEOUT, client.set_members(generation, members)).await
        })
    }

    fn drain<'a>(&'a self, target: &'a Target, timeout: Duration) -> Reply<'a, ()> {
        Box::pin(async move {
            let address = target.address.as_str();
            let client = connect(target).await?;
            // The replica gives up after `timeout`; allow a little more for the answer.
            within(address, timeout + PROBE_TIMEOUT, client.drain(timeout)).await.map(|_| ())
        })
    }

    fn start_backup<'a>(
        &'a self,
        target: &'a Target,
        job: &'a str,
        request: BackupRequest,
    ) -> Reply<'a, BackupJob> {
        Box::pin(async move {
            let address = target.address.as_str();
            let client = connect(target).await?;
            let report = within(
                address,
                PROBE_TIMEOUT,
                client.start_backup(
                    job,
                    &request.destination,
                    request.logs,
                    request.delta,
                    request.retain_full,
                ),
            )
            .await?;
            Ok(job_of(report))
        })
    }

    fn backup_job<'a>(&'a self, target: &'a Target, job: &'a str) -> Reply<'a, Option<BackupJob>> {
        Box::pin(async move {
            let address = target.address.as_str();
            let client = connect(target).await?;
            match tokio::time::timeout(PROBE_TIMEOUT, client.backup_job(job)).await {
                Err(_) => Err(format!("{address}: no answer within {} s", PROBE_TIMEOUT.as_secs())),
                Ok(Err(plait_client::ClientError::NotFound(_))) => Ok(None),
                Ok(Err(e)) => Err(format!("{address}: {e}")),
                Ok(Ok(report)) => Ok(Some(job_of(report))),
            }
        })
    }
}

/// A job as the client reports it, as the operator records it.
fn job_of(report: plait_client::BackupJobReport) -> BackupJob {
    match report.state {
        plait_client::BackupJobState::Running => BackupJob::Running {
            logs_done: report.logs_done,
            logs_total: report.logs_total,
            bytes_written: report.bytes_written,
        },
        plait_client::BackupJobState::Failed(error) => BackupJob::Failed(error.to_string()),
        plait_client::BackupJobState::Completed(response) => BackupJob::Completed(BackupOutcome {
            backup_id: response.backup_id,
            objects: response
                .objects
                .into_iter()
                .map(|o| BackupObject {
                    kind: o.kind.name().to_owned(),
                    name: o.name,
                    key: o.key,
                    bytes: o.bytes,
                    seq: o.checkpoint.seq,
                    state_root: hex::encode(o.checkpoint.state_root),
                })
                .collect(),
        }),
    }
}
