//! Who the peers are (static flags, `Admin.SetMembers`, DNS discovery), one session per
//! peer address, and the table of what each session knows, for status.

use std::collections::{BTreeMap, HashMap};
use std::sync::{Arc, Mutex};
use std::time::Instant;

use plait_core::{LogId, PublicKey};
use plait_store::Store;
use tokio::sync::{Notify, watch};

use super::ReplicationConfig;
use super::session::Session;
use crate::telemetry::Metrics;

/// What one session knows of its peer.
#[derive(Clone, Debug, Default)]
pub(crate) struct PeerInfo {
    pub(crate) source: &'static str,
    pub(crate) node_id: Option<PublicKey>,
    pub(crate) epoch: Option<[u8; 16]>,
    pub(crate) connected: bool,
    /// A full round (every log the peer hosts pulled up to the seq it reported) has
    /// finished since the session last connected.
    pub(crate) synced: bool,
    pub(crate) last_contact: Option<Instant>,
    pub(crate) last_error: String,
    /// The address turned out to be this replica itself.
    pub(crate) is_self: bool,
    /// Per log: our cursor into the peer's numbering, and the peer's seq as last seen.
    pub(crate) logs: HashMap<LogId, (u64, u64)>,
    /// Per log: the last comparison of digests with the peer at equal heads.
    pub(crate) digests: HashMap<LogId, DigestCheck>,
}

/// What comparing a log's digest with a peer's, both at the same heads, found.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub(crate) enum DigestCheck {
    /// Equal, at this replica's seq.
    Equal { seq: u64 },
    /// Different: one of the two lost or corrupted an entry.
    Mismatch,
}

/// Peer address → what its session knows.
#[derive(Clone, Default)]
pub(crate) struct PeerTable(Arc<Mutex<BTreeMap<String, PeerInfo>>>);

impl PeerTable {
    pub(crate) fn update(&self, address: &str, f: impl FnOnce(&mut PeerInfo)) {
        let mut table = self.0.lock().expect("peer table lock poisoned");
        if let Some(info) = table.get_mut(address) {
            f(info);
        }
    }

    fn insert(&self, address: &str, source: &'static str) {
        let mut table = self.0.lock().expect("peer table lock poisoned");
        table.entry(address.to_owned()).or_default().source = source;
    }

    fn remove(&self, address: &str) {
        self.0.lock().expect("peer table lock poisoned").remove(address);
    }

    pub(crate) fn snapshot(&self) -> Vec<(String, PeerInfo)> {
        let table = self.0.lock().expect("peer table lock poisoned");
        table.iter().filter(|(_, i)| !i.is_self).map(|(a, i)| (a.clone(), i.clone())).collect()
    }

    /// Node ids of the current peers (not this replica).
    pub(crate) fn node_ids(&self) -> Vec<PublicKey> {
        self.snapshot().into_iter().filter_map(|(_, i)| i.node_id).collect()
    }
}

/// Everything a session needs.
#[derive(Clone)]
pub(crate) struct EngineCtx {
    pub(crate) store: Store,
    pub(crate) node_id: PublicKey,
    /// Signs the node proofs this replica's calls to peers carry.
    pub(crate) node_key: plait_core::WriterKey,
    pub(crate) peer_client: super::PeerClientConfig,
    pub(crate) table: PeerTable,
    pub(crate) metrics: Metrics,
    pub(crate) config: ReplicationConfig,
    /// What peers hold of this replica's logs (shared with the services): peers' hold
    /// notices are recorded here.
    pub(crate) holds: Arc<super::Holds>,
    /// Peers that learn this replica's holds from its Watch notices (shared with the
    /// services).
    pub(crate) listeners: Arc<super::Listeners>,
}

/// The handle the services use to tell the engine that membership changed.
#[derive(Clone)]
pub(crate) struct Membership {
    changed: Arc<Notify>,
    pub(crate) table: PeerTable,
}

impl Membership {
    pub(crate) fn changed(&self) {
        self.changed.notify_one();
    }

    /// Starts the membership loop; it ends when `shutdown` turns true.
    pub(crate) fn start(ctx: EngineCtx, shutdown: watch::Receiver<bool>) -> Membership {
        let changed = Arc::new(Notify::new());
        let membership = Membership { changed: changed.clone(), table: ctx.table.clone() };
        tokio::spawn(run(ctx, changed, shutdown));
        membership
    }
}

struct Running {
    stop: watch::Sender<bool>,
}

async fn resolve(name: &str) -> Vec<String> {
    match tokio::net::lookup_host(name).await {
        Ok(addrs) => addrs.map(|a| a.to_string()).collect(),
        Err(e) => {
            tracing::warn!(name, error = %e, "peer discovery: DNS lookup failed");
            Vec::new()
        }
    }
}

async fn run(ctx: EngineCtx, changed: Arc<Notify>, mut shutdown: watch::Receiver<bool>) {
    let mut sessions: HashMap<String, Running> = HashMap::new();
    let mut discovered: Vec<String> = Vec::new();
    let mut next_discovery = Instant::now();
    loop {
        if let Some(name) = &ctx.config.discover_dns
            && Instant::now() >= next_discovery
        {
            discovered = resolve(name).await;
            next_discovery = Instant::now() + ctx.config.discover_interval;
        }
        let mut desired: BTreeMap<String, &'static str> = BTreeMap::new();
        for address in &discovered {
            desired.insert(address.clone(), "dns");
        }
        match ctx.store.run_blocking(|store| store.members()).await {
            Ok(members) => {
                for address in members.addresses {
                    desired.insert(address, "members");
                }
            }
            Err(e) => tracing::error!(error = %e, "cannot read the member list"),
        }
        for address in &ctx.config.static_peers {
            desired.insert(address.clone(), "flag");
        }
        for address in &ctx.config.upstreams {
            desired.insert(address.clone(), "upstream");
        }
        sessions.retain(|address, running| {
            let keep = desired.contains_key(address);
            if !keep {
                tracing::info!(peer = %address, "peer removed");
                let _ = running.stop.send(true);
                ctx.table.remove(address);
            }
            keep
        });
        for (address, source) in desired {
            if sessions.contains_key(&address) {
                continue;
            }
            tracing::info!(peer = %address, source, "peer added");
            ctx.table.insert(&address, source);
            let (stop, stopped) = watch::channel(false);
            tokio::spawn(Session::new(ctx.clone(), address.clone(), stopped, source == "upstream").run());
            sessions.insert(address, Running { stop });
        }
        let wait = if ctx.config.discover_dns.is_some() {
            next_discovery.saturating_duration_since(Instant::now())
        } else {
            std::time::Duration::from_secs(3600)
        };
        tokio::select! {
            _ = changed.notified() => {}
            _ = tokio::time::sleep(wait) => {}
            _ = async { shutdown.wait_for(|s| *s).await.is_ok() } => {
                for running in sessions.values() {
                    let _ = running.stop.send(true);
                }
                return;
            }
        }
    }
}
