//! One replication session: this replica pulling every log it shares with one peer.
//!
//! The session connects, says hello (learning the peer's node id, epoch and logs),
//! hosts any log the peer has that this replica lacks, and then for each log pulls by
//! cursor (or reconciles by heads when the cursor's epoch is not the peer's). It wakes on
//! the peer's Watch notices and, as a backstop, on a periodic anti-entropy pass. Every
//! page is verified before it is stored, and stored with its cursor in one batch.
//! Failures back off exponentially with full jitter; a peer that sends invalid entries or floods pending is
//! cut off for the backoff period.

use std::collections::{HashMap, HashSet};
use std::time::{Duration, Instant};

use super::client::{PeerAuth, PeerChannel};
use crate::auth::peer::{CHALLENGE_BYTES, SERVER_PROOF_KEY, verify_server_proof};
use anyhow::{Context, anyhow, bail};
use plait_core::{DecodedEntry, EntryHash, LogId, SignedManifest, VerifiedEntry, verify_batch};
use plait_proto::pb;
use plait_proto::pb::sync_client::SyncClient;
use plait_store::{Cursor, StoreError, SubmitOutcome};
use rand::Rng;
use tokio::sync::{mpsc, watch};
use tonic::service::interceptor::InterceptedService;

use super::membership::EngineCtx;
use super::{
    FETCH_HASHES_MAX, INLINE_PAGE_BYTES_MAX, INLINE_PAGE_ENTRIES_MAX, PULL_ASK_PAGE_BYTES, PULL_PAGE_BYTES,
    PULL_PAGE_ENTRIES,
};

const CONNECT_TIMEOUT: Duration = Duration::from_secs(3);
/// Unary calls and the gap between two pages of a stream: a silent peer past this is
/// treated as gone (a partition looks exactly like this).
const CALL_TIMEOUT: Duration = Duration::from_secs(10);
const KEEPALIVE_INTERVAL: Duration = Duration::from_secs(2);
const KEEPALIVE_TIMEOUT: Duration = Duration::from_secs(4);
const BACKOFF_MIN: Duration = Duration::from_millis(100);
const BACKOFF_MAX: Duration = Duration::from_secs(5);
/// Rounds of fetching missing parents per sync before leaving the rest for later.
const FETCH_ROUNDS_MAX: usize = 16;
/// Pulls of one log in one pass before moving to the next log.
const PULLS_PER_SYNC_MAX: usize = 64;
/// Largest page message the session accepts: a real page is at most `PULL_PAGE_BYTES`
/// plus the one entry that crossed the bound, and some framing.
const PAGE_MESSAGE_BYTES_MAX: usize = PULL_PAGE_BYTES + plait_core::limits::ENTRY_BYTES_MAX + 64 * 1024;
// A page a peer may send must fit in a message the default limit accepts.
const _: () = assert!(PAGE_MESSAGE_BYTES_MAX <= crate::config::MESSAGE_BYTES_DEFAULT);
/// Largest Hello accepted: every hosted log's manifest (each at most
/// `MANIFEST_BYTES_MAX`) and up to 64 heads.
const HELLO_BYTES_MAX: usize = 40 * 1024 * 1024;
/// Logs one Hello may make this replica host, per round.
const NEW_LOGS_PER_ROUND_MAX: usize = 64;

/// How complete a page must be.
#[derive(Clone, Copy, PartialEq, Eq)]
enum PageMode {
    /// From Pull or Reconcile: in the peer's seq order, so every parent is either held
    /// here already or earlier in the page. Anything else is a lie.
    Complete,
    /// From Fetch: parents of pending entries, which may themselves wait for more.
    Fetched,
}

/// Decodes, verifies and checks a page against the log's manifest, without storing it.
/// `in_flight`: entries of the page before, verified and on their way into the store,
/// which count as held for the parents check.
fn check_page(
    store: &plait_store::Store,
    manifest: &SignedManifest,
    raw: Vec<Vec<u8>>,
    mode: PageMode,
    in_flight: &HashSet<EntryHash>,
) -> Result<Vec<VerifiedEntry>, String> {
    let log = manifest.log_id();
    let mut decoded = Vec::with_capacity(raw.len());
    for (i, bytes) in raw.into_iter().enumerate() {
        decoded.push(DecodedEntry::decode(&bytes).map_err(|e| format!("entry {i} of the page: {e}"))?);
    }
    let mut verified = Vec::with_capacity(decoded.len());
    for (i, result) in verify_batch(decoded).into_iter().enumerate() {
        verified.push(result.map_err(|e| format!("entry {i} of the page: {e}"))?);
    }
    let m = manifest.manifest();
    let mut in_page: HashSet<EntryHash> = HashSet::with_capacity(verified.len());
    for (i, entry) in verified.iter().enumerate() {
        if entry.log() != log {
            return Err(format!("entry {i} of the page belongs to log {}, not {log}", entry.log()));
        }
        if !m.writers.allows(&entry.clock().writer) {
            return Err(format!(
                "entry {i}: writer {} is not on the ACL of log {:?}",
                entry.clock().writer,
                m.name
            ));
        }
        for op in &entry.entry().ops {
            op.check_type(m.log_type).map_err(|e| format!("entry {i}: {e}"))?;
        }
        if mode == PageMode::Complete {
            for parent in &entry.entry().next {
                let held = in_page.contains(parent)
                    || in_flight.contains(parent)
                    || store.has_entry(parent).map_err(|e| e.to_string())?;
                if !held {
                    return Err(format!(
                        "entry {i} names parent {parent}, which neither this replica nor the earlier part of the page holds"
                    ));
                }
            }
        }
        in_page.insert(entry.hash());
    }
    Ok(verified)
}

/// A verified page of a pull on its way into the store (the writer commits pages in the
/// order they were sent, so the next one may be verified meanwhile).
struct InFlight {
    ingest: tokio::task::JoinHandle<plait_store::StoreResult<Vec<plait_store::StoreResult<SubmitOutcome>>>>,
    cursor: Cursor,
    hashes: HashSet<EntryHash>,
}

/// What one pull brought.
struct Pulled {
    /// The seq of the peer's log this replica now holds (stored, or left out by the peer
    /// as this replica's own).
    reached: u64,
    /// Whether the cursor at `reached` is stored: the last page had entries.
    stored: bool,
}

/// Why a session stopped talking to its peer.
#[derive(Debug)]
enum Stop {
    /// Told to stop: the peer left the membership, or the replica is shutting down.
    Cancelled,
}

pub(super) struct Session {
    ctx: EngineCtx,
    address: String,
    stop: watch::Receiver<bool>,
    /// Entries this peer left pending, for the per-peer bound.
    pending_from_peer: u64,
    /// Edge mode: also push this replica's entries to the peer, which does not pull.
    push: bool,
    /// Per log, the seq an empty pull last told the peer this replica holds, on this
    /// connection: a round that finds the cursor still there and the peer no further
    /// has nothing to pull and nothing to tell, so it makes no call.
    told: HashMap<LogId, u64>,
    /// Per log, how far pages of nothing but this replica's own entries (left out by the
    /// peer, `omit_yours`) moved the cursor past the stored one, on this connection.
    /// Not worth a write of its own: a restart just pulls those seqs again, left out again.
    ahead: HashMap<LogId, u64>,
}

struct Peer {
    channel: PeerChannel,
    /// For pages: its message limit is a real page's size.
    client: SyncClient<PeerChannel>,
    /// For Hello, which carries every manifest.
    hello_client: SyncClient<PeerChannel>,
    node_id: plait_core::PublicKey,
    epoch: [u8; 16],
}

/// Full jitter: a wait drawn uniformly from zero up to the backoff, so peers that failed
/// together do not retry together (a floor at half the backoff would keep them bunched
/// in the upper half). The rng is a parameter so tests can fix it.
fn jittered(backoff: Duration, rng: &mut impl Rng) -> Duration {
    let ms = backoff.as_millis().max(1) as u64;
    Duration::from_millis(rng.gen_range(0..=ms))
}

impl Session {
    pub(super) fn new(ctx: EngineCtx, address: String, stop: watch::Receiver<bool>, push: bool) -> Session {
        Session {
            ctx,
            address,
            stop,
            pending_from_peer: 0,
            push,
            told: HashMap::new(),
            ahead: HashMap::new(),
        }
    }

    fn identity(&self) -> pb::PeerIdentity {
        pb::PeerIdentity { node_id: self.ctx.node_id.0.to_vec(), epoch: self.ctx.store.epoch().to_vec() }
    }

    pub(super) async fn run(mut self) {
        let mut backoff = BACKOFF_MIN;
        loop {
            if *self.stop.borrow() {
                return;
            }
            match self.connect_and_follow().await {
                Ok(Stop::Cancelled) => return,
                Err(e) => {
                    let message = format!("{e:#}");
                    tracing::warn!(peer = %self.address, error = %message, "replication failed; retrying");
                    self.ctx.metrics.record_replication_error();
                    self.ctx.table.update(&self.address, |info| {
                        info.connected = false;
                        info.synced = false;
                        info.last_error = message;
                    });
                }
            }
            let wait = jittered(backoff, &mut rand::thread_rng());
            backoff = (backoff * 2).min(BACKOFF_MAX);
            let mut stop = self.stop.clone();
            tokio::select! {
                _ = tokio::time::sleep(wait) => {}
                _ = async { stop.wait_for(|s| *s).await.is_ok() } => return,
            }
        }
    }

    async fn connect(&self) -> anyhow::Result<Peer> {
        let channel = self
            .ctx
            .peer_client
            .endpoint(&self.address)?
            .connect_timeout(CONNECT_TIMEOUT)
            .tcp_nodelay(true)
            .http2_keep_alive_interval(KEEPALIVE_INTERVAL)
            .keep_alive_timeout(KEEPALIVE_TIMEOUT)
            .keep_alive_while_idle(true)
            .connect()
            .await
            .with_context(|| format!("cannot connect to peer {}", self.address))?;
        let auth: PeerAuth = self.ctx.peer_client.credentials(&self.ctx.node_key);
        let channel = InterceptedService::new(channel, auth.clone());
        let hello_client_channel = channel.clone();
        let client = SyncClient::new(channel.clone())
            .max_decoding_message_size(PAGE_MESSAGE_BYTES_MAX)
            .max_encoding_message_size(PAGE_MESSAGE_BYTES_MAX);
        let mut hello_client = SyncClient::new(channel).max_decoding_message_size(HELLO_BYTES_MAX);
        let hello = self.hello(&mut hello_client).await?;
        let node_id = plait_proto::convert::public_key("node_id", &hello.node_id)?;
        // Every later call proves this replica's node id to that peer.
        auth.set_audience(node_id);
        let epoch: [u8; 16] = hello
            .epoch
            .as_slice()
            .try_into()
            .map_err(|_| anyhow!("peer sent an epoch that is not 16 bytes"))?;
        Ok(Peer { channel: hello_client_channel, client, hello_client, node_id, epoch })
    }

    async fn hello(&self, client: &mut SyncClient<PeerChannel>) -> anyhow::Result<pb::HelloResponse> {
        let mut request = tonic::Request::new(pb::HelloRequest { from: Some(self.identity()) });
        request.set_timeout(CALL_TIMEOUT);
        Ok(client.hello(request).await.context("hello")?.into_inner())
    }

    async fn connect_and_follow(&mut self) -> anyhow::Result<Stop> {
        let mut peer = self.connect().await?;
        if peer.node_id == self.ctx.node_id {
            // DNS discovery and member lists include this replica itself.
            self.ctx.table.update(&self.address, |info| info.is_self = true);
            let _ = self.stop.wait_for(|s| *s).await;
            return Ok(Stop::Cancelled);
        }
        self.ctx.table.update(&self.address, |info| {
            info.node_id = Some(peer.node_id);
            info.epoch = Some(peer.epoch);
            info.connected = true;
            info.synced = false;
            info.last_contact = Some(Instant::now());
            info.last_error.clear();
            info.digests.clear();
        });
        // A write concern waiting since before this peer's node id was known may be met
        // by what the peer already held.
        self.ctx.holds.members_changed();
        tracing::info!(peer = %self.address, node = %peer.node_id, "replicating");
        // What the peer was told lives in its memory: a new connection tells it again.
        self.told.clear();
        self.ahead.clear();

        // Notices from the peer's Watch stream: logs whose seq moved, and to what seq.
        let (notice_tx, mut notices) = mpsc::channel::<Result<Notice, String>>(1024);
        let watcher = tokio::spawn(watch_peer(
            peer.client.clone(),
            self.identity(),
            self.ctx.node_id,
            peer.node_id,
            peer.epoch,
            notice_tx,
        ));
        let result = self.follow(&mut peer, &mut notices).await;
        watcher.abort();
        result
    }

    async fn follow(
        &mut self,
        peer: &mut Peer,
        notices: &mut mpsc::Receiver<Result<Notice, String>>,
    ) -> anyhow::Result<Stop> {
        // None: every log (the first round and the anti-entropy rounds); otherwise the
        // logs notices named, with the highest seq named for each.
        let mut due: Option<HashMap<LogId, u64>> = None;
        // Edge mode wakes on local writes too, to push them at once.
        let mut local = self.ctx.store.changes();
        loop {
            // A round of notices for logs hosted here needs no Hello: each notice carries
            // the peer's seq, so the round costs a pull per log that changed and nothing
            // per log hosted. A full round, a notice for a log not hosted here yet (its
            // manifest comes with the Hello) and edge mode (the push needs the peer's
            // logs) ask the peer's Hello.
            let notified =
                due.as_ref().filter(|d| !self.push && d.keys().all(|log| self.ctx.store.log(log).is_some()));
            if let Some(notified) = notified {
                for (&log_id, &seq) in notified {
                    self.ctx.table.update(&self.address, |info| {
                        let known = &mut info.logs.entry(log_id).or_default().1;
                        *known = (*known).max(seq);
                        info.last_contact = Some(Instant::now());
                    });
                    self.sync_log(peer, log_id, seq).await?;
                }
            } else {
                let hello = self.hello(&mut peer.hello_client).await?;
                if hello.epoch != peer.epoch {
                    bail!("the peer's epoch changed (it was wiped or restored); reconnecting");
                }
                self.host_new_logs(&hello.logs).await?;
                for log in &hello.logs {
                    let log_id = plait_proto::convert::log_id("log_id", &log.log_id)?;
                    self.ctx.table.update(&self.address, |info| {
                        info.logs.entry(log_id).or_default().1 = log.seq;
                        info.last_contact = Some(Instant::now());
                    });
                    if due.as_ref().is_some_and(|d| !d.contains_key(&log_id)) {
                        continue;
                    }
                    self.sync_log(peer, log_id, log.seq).await?;
                    if due.is_none() {
                        self.check_heads(peer, log_id, log).await?;
                    }
                }
                if due.is_none() {
                    self.ctx.table.update(&self.address, |info| info.synced = true);
                }
                if self.push {
                    self.push_all(peer, &hello.logs).await?;
                }
            }
            // Wait for a notice, the anti-entropy tick or the stop signal.
            let mut stop = self.stop.clone();
            let tick = tokio::time::Instant::now() + self.ctx.config.anti_entropy;
            let mut batch = Vec::new();
            loop {
                tokio::select! {
                    notice = notices.recv() => match notice {
                        Some(Ok(first)) => {
                            batch.push(first);
                            loop {
                                match notices.try_recv() {
                                    Ok(Ok(n)) => batch.push(n),
                                    Ok(Err(why)) => bail!(why),
                                    Err(_) => break,
                                }
                            }
                        }
                        Some(Err(why)) => bail!(why),
                        None => bail!("the peer's watch stream ended"),
                    },
                    _ = tokio::time::sleep_until(tick) => due = None,
                    // Any local change: push (the pull part of the round finds nothing due).
                    change = local.recv(), if self.push => {
                        // A cursor that moved (this replica's own push marker among them)
                        // brings nothing new to push.
                        if change.is_ok_and(|c| c.held.is_some() && c.seq == c.prev) {
                            continue;
                        }
                        due = Some(HashMap::new());
                    }
                    _ = async { stop.wait_for(|s| *s).await.is_ok() } => return Ok(Stop::Cancelled),
                }
                break;
            }
            if !batch.is_empty() {
                let mut next_due = HashMap::new();
                for notice in batch {
                    // The peer proved its node id on this stream; it cannot hold more of
                    // a log than this replica has stored.
                    if notice.held > 0
                        && self.ctx.store.log(&notice.log).is_some_and(|s| notice.held <= s.seq)
                    {
                        self.ctx.holds.record(peer.node_id, notice.log, notice.held);
                    }
                    if self.take_yours(&notice) || self.nothing_new(&notice) {
                        continue;
                    }
                    // Notices come in order, so one that could not be stored leaves every
                    // later one of its log to the pull as well.
                    if !next_due.contains_key(&notice.log) && self.store_carried(peer, &notice).await? {
                        continue;
                    }
                    let known = next_due.entry(notice.log).or_insert(notice.seq);
                    *known = (*known).max(notice.seq);
                }
                due = Some(next_due);
            }
        }
    }

    /// A notice that carries the entries of its change (a small one): if this replica
    /// holds the log from the peer up to just before them, they are verified and stored
    /// as a pulled page would be, with the cursor at the notice's seq, and no pull is
    /// made. Only while the peer listens for holds: the notice of the stored cursor is
    /// then what tells it, where a pull would have. Returns whether they were stored.
    async fn store_carried(&mut self, peer: &Peer, notice: &Notice) -> anyhow::Result<bool> {
        let Some(first) = notice.entries.first().map(|e| e.seq) else { return Ok(false) };
        let n = notice.entries.len() as u64;
        // The peer's numbers, so checked: seqs `first..=notice.seq` in order, from 1.
        let in_order =
            notice.entries.iter().enumerate().all(|(i, e)| first.checked_add(i as u64) == Some(e.seq));
        let held = self.ahead.get(&notice.log).copied();
        if n > INLINE_PAGE_ENTRIES_MAX
            || !in_order
            || notice.entries.last().map(|e| e.seq) != Some(notice.seq)
            || first == 0
            || held != Some(first - 1)
            || !self.ctx.listeners.listening(&peer.node_id)
        {
            return Ok(false);
        }
        let raw = notice.entries.iter().map(|e| e.entry.clone()).collect();
        let Some(verified) = self.check(notice.log, raw, PageMode::Complete, HashSet::new()).await? else {
            return Ok(false);
        };
        let cursor = Cursor { peer: peer.node_id, log: notice.log, epoch: peer.epoch, seq: notice.seq };
        let outcomes = self.ctx.store.ingest_pulled(verified, cursor).await?;
        self.account(notice.log, outcomes, Some(cursor))?;
        self.ahead.insert(notice.log, notice.seq);
        self.told.insert(notice.log, notice.seq);
        self.ctx.metrics.record_notice_entries(n);
        self.ctx.table.update(&self.address, |info| {
            let log = &mut info.logs.entry(notice.log).or_default().1;
            *log = (*log).max(notice.seq);
        });
        Ok(true)
    }

    /// A notice that the peer's new seqs of a log are all entries it pulled from here: if
    /// this replica holds the log from the peer up to just before them, it holds them
    /// all, so the cursor moves (in memory) without a pull, and the peer has already
    /// counted the hold. Returns whether the notice was taken that way.
    fn take_yours(&mut self, notice: &Notice) -> bool {
        let Some(held) = self.ahead.get(&notice.log).copied() else { return false };
        if notice.yours_from == 0 || held + 1 < notice.yours_from {
            return false;
        }
        self.ahead.insert(notice.log, notice.seq.max(held));
        self.told.insert(notice.log, notice.seq);
        self.ctx.table.update(&self.address, |info| {
            let log = info.logs.entry(notice.log).or_default();
            log.0 = log.0.max(notice.seq);
            log.1 = log.1.max(notice.seq);
            info.last_contact = Some(Instant::now());
        });
        true
    }

    /// A notice that only reports a hold, of a seq this replica already holds from the peer.
    fn nothing_new(&self, notice: &Notice) -> bool {
        notice.held > 0
            && notice.yours_from == 0
            && self.ahead.get(&notice.log).is_some_and(|a| *a >= notice.seq)
    }

    /// Edge mode: pushes every entry of every log written here since the last push, after
    /// creating on the upstream any log it does not host yet (from the signed manifest).
    async fn push_all(&mut self, peer: &mut Peer, theirs: &[pb::HostedLog]) -> anyhow::Result<()> {
        let hosted: HashSet<&[u8]> = theirs.iter().map(|l| l.log_id.as_slice()).collect();
        for summary in self.ctx.store.logs() {
            let marker = push_marker(&peer.node_id);
            let epoch = self.ctx.store.epoch();
            let mut after = self
                .stored_cursor(marker, summary.log_id)
                .await?
                .filter(|c| c.epoch == epoch)
                .map_or(0, |c| c.seq);
            if after >= summary.seq {
                continue;
            }
            if !hosted.contains(summary.log_id.0.as_slice()) {
                let mut logs = pb::logs_client::LogsClient::new(peer.channel.clone());
                let request = pb::CreateLogRequest {
                    signed_manifest: summary.manifest.bytes().to_vec(),
                    ..Default::default()
                };
                logs.create_log(request).await.context("creating the log upstream")?;
            }
            loop {
                let store = self.ctx.store.clone();
                let log = summary.log_id;
                let page = tokio::task::spawn_blocking(move || {
                    store.entries_after(&log, after, PULL_PAGE_ENTRIES, PULL_PAGE_BYTES)
                })
                .await??;
                let Some(last) = page.last().map(|e| e.seq) else { break };
                let request = pb::PushRequest {
                    entries: page.into_iter().map(|e| e.entry.into_bytes()).collect(),
                    from: Some(self.identity()),
                };
                let mut call = tonic::Request::new(futures::stream::iter(vec![request]));
                call.set_timeout(CALL_TIMEOUT);
                peer.client.push(call).await.context("push")?;
                after = last;
                let cursor = Cursor { peer: marker, log, epoch, seq: after };
                self.ctx.store.ingest_pulled(Vec::new(), cursor).await?;
            }
        }
        Ok(())
    }

    /// Hosts every log the peer has and this replica lacks, after verifying its manifest.
    async fn host_new_logs(&self, logs: &[pb::HostedLog]) -> anyhow::Result<()> {
        let mut added = 0;
        for log in logs {
            let Ok(id) = plait_proto::convert::log_id("log_id", &log.log_id) else { continue };
            if self.ctx.store.log(&id).is_some() {
                continue;
            }
            let hosted = self.ctx.store.log_count();
            if hosted >= self.ctx.config.logs_max || added == NEW_LOGS_PER_ROUND_MAX {
                tracing::warn!(
                    peer = %self.address,
                    hosted,
                    limit = self.ctx.config.logs_max,
                    "not hosting more logs from this peer now (the replica's log limit, or this round's share)"
                );
                return Ok(());
            }
            added += 1;
            let manifest = SignedManifest::decode_and_verify(&log.manifest)
                .map_err(|e| anyhow!("peer sent an invalid manifest for log {id}: {e}"))?;
            if manifest.log_id() != id {
                bail!("peer sent a manifest that does not hash to log {id}");
            }
            match self.ctx.store.create_log(manifest).await {
                Ok((summary, true)) => {
                    tracing::info!(log = %id, name = %summary.manifest.manifest().name, peer = %self.address, "hosting a log created elsewhere");
                }
                Ok(_) => {}
                Err(StoreError::AlreadyExists(m)) => {
                    // A different log with the same name here: keep ours, skip theirs.
                    tracing::warn!(log = %id, peer = %self.address, "{m}");
                }
                Err(e) => return Err(e.into()),
            }
        }
        Ok(())
    }

    /// Brings one log up to the peer's seq: by cursor, or by heads when the cursor is void.
    async fn sync_log(&mut self, peer: &mut Peer, log: LogId, peer_seq: u64) -> anyhow::Result<()> {
        if self.ctx.store.log(&log).is_none() {
            return Ok(());
        }
        if peer_seq == 0 {
            // The peer has no entry of the log: nothing to pull, nothing to reconcile.
            return self.fetch_missing(peer, log).await;
        }
        let cursor = self.stored_cursor(peer.node_id, log).await?;
        let ahead = self.ahead.get(&log).copied().unwrap_or(0);
        let valid = cursor.filter(|c| c.epoch == peer.epoch).map(|c| Cursor { seq: c.seq.max(ahead), ..c });
        if let Some(c) = valid {
            self.ahead.insert(log, c.seq);
            // Status shows the stored cursor from the start, not only after new entries.
            self.ctx.table.update(&self.address, |info| info.logs.entry(log).or_default().0 = c.seq);
            // A listening peer was told the stored cursor by this replica's notices.
            let known = self.told.get(&log) == Some(&c.seq)
                || (self.ctx.listeners.listening(&peer.node_id) && cursor.is_some_and(|s| s.seq == c.seq));
            if c.seq >= peer_seq && known {
                // Caught up, and the peer already knows: no call.
                return self.fetch_missing(peer, log).await;
            }
        }
        let ours = self.ctx.store.log(&log).map_or(0, |s| s.seq);
        let start = match valid {
            Some(c) => Some(c.seq),
            // No cursor and nothing here yet: a plain pull from the start is the cheapest.
            None if ours == 0 => Some(0),
            None => None,
        };
        let mut reconciled = false;
        if start.is_none() {
            if cursor.is_some() {
                tracing::info!(peer = %self.address, log = %log, "the peer's epoch changed; reconciling by heads");
            }
            self.reconcile(peer, log).await?;
            reconciled = true;
        }
        // Pull until a pull brings nothing new. The last, empty pull also tells the peer
        // how far this replica now holds its log, which its write concern waits on;
        // a peer that listens to this replica's notices learns that from the notice of
        // the stored cursor instead, so the pulls stop once they reach `peer_seq`.
        let mut after = match start {
            Some(seq) => seq,
            None => self.stored_cursor(peer.node_id, log).await?.map_or(0, |c| c.seq),
        };
        if after >= peer_seq && reconciled {
            return self.fetch_missing(peer, log).await;
        }
        // Bounded, so a peer under constant writes does not keep this session on one log.
        for _ in 0..PULLS_PER_SYNC_MAX {
            match self.pull(peer, log, after).await {
                Ok(Some(pulled)) => {
                    after = pulled.reached;
                    if pulled.stored && after >= peer_seq && self.ctx.listeners.listening(&peer.node_id) {
                        self.told.insert(log, after);
                        break;
                    }
                }
                Ok(None) => break,
                Err(e)
                    if e.downcast_ref::<tonic::Status>()
                        .is_some_and(|s| s.code() == tonic::Code::FailedPrecondition)
                        && !reconciled =>
                {
                    tracing::info!(peer = %self.address, log = %log, error = %e, "cursor refused; reconciling by heads");
                    self.reconcile(peer, log).await?;
                    reconciled = true;
                    after = self.stored_cursor(peer.node_id, log).await?.map_or(0, |c| c.seq);
                }
                Err(e) => return Err(e),
            }
        }
        self.fetch_missing(peer, log).await
    }

    /// The stored cursor of `log` from `peer`: a point lookup in the small `peers`
    /// keyspace, made on the async worker as `Data.Get` is (the hand-off to the blocking
    /// pool cost more than the read).
    async fn stored_cursor(&self, peer: plait_core::PublicKey, log: LogId) -> anyhow::Result<Option<Cursor>> {
        Ok(self.ctx.store.cursor(&peer, &log)?)
    }

    /// The anti-entropy backstop: once this replica's cursor says it holds the peer's log
    /// up to the seq of the hello, every head the hello named must be here. If one is not,
    /// the cursor lied (a bug, or storage that lost data) and a reconcile repairs it.
    async fn check_heads(
        &mut self,
        peer: &mut Peer,
        log: LogId,
        hosted: &pb::HostedLog,
    ) -> anyhow::Result<()> {
        let caught_up = self
            .stored_cursor(peer.node_id, log)
            .await?
            .is_some_and(|c| c.epoch == peer.epoch && c.seq >= hosted.seq);
        if !caught_up || hosted.heads.is_empty() {
            // Equal heads need no cursor: the digests can be compared all the same.
            return self.compare_digests(peer, log, hosted).await;
        }
        let heads = plait_proto::convert::entry_hashes("heads", &hosted.heads)?;
        let store = self.ctx.store.clone();
        let missing = tokio::task::spawn_blocking(move || -> plait_store::StoreResult<Option<EntryHash>> {
            for head in heads {
                if !store.has_entry(&head)? {
                    return Ok(Some(head));
                }
            }
            Ok(None)
        })
        .await??;
        if let Some(head) = missing {
            tracing::warn!(peer = %self.address, log = %log, head = %head, "anti-entropy: a peer head is missing although the cursor is caught up; reconciling");
            self.reconcile(peer, log).await?;
            return Ok(());
        }
        self.compare_digests(peer, log, hosted).await
    }

    /// Equal digests mean both hold the same entries, recorded for the status ("verified
    /// at seq s"). Different digests while the peer listed all its heads of `log` and they
    /// are exactly this replica's mean one side lost or corrupted an entry (the same heads
    /// name the same causal past): logged, counted, shown, and repaired here by a reconcile
    /// of the whole log
    /// (which brings whatever the peer has that this replica lacks; the peer's own
    /// anti-entropy brings it what this replica has).
    async fn compare_digests(
        &mut self,
        peer: &mut Peer,
        log: LogId,
        hosted: &pb::HostedLog,
    ) -> anyhow::Result<()> {
        let Some(theirs) = plait_core::SetDigest::from_slice(&hosted.digest) else { return Ok(()) };
        let Some(summary) = self.ctx.store.log(&log) else { return Ok(()) };
        let (seq, digest) = (summary.seq, summary.digest);
        if digest == theirs {
            // The same set of entries: no heads need reading (the common case, and all an
            // idle log costs per round).
            self.ctx.table.update(&self.address, |info| {
                info.digests.insert(log, super::DigestCheck::Equal { seq });
            });
            return Ok(());
        }
        // Different digests are a fault only when both hold the same heads; otherwise
        // replication has not converged yet.
        if hosted.head_count as usize != hosted.heads.len() {
            return Ok(()); // Not every head listed (too many, or some replaced meanwhile).
        }
        let their_heads: std::collections::BTreeSet<EntryHash> =
            plait_proto::convert::entry_hashes("heads", &hosted.heads)?.into_iter().collect();
        let store = self.ctx.store.clone();
        let same_heads = tokio::task::spawn_blocking(move || -> plait_store::StoreResult<bool> {
            // Heads at the summary's seq: a head newer than it, or a count that moved,
            // means the two were not read at one moment; compare on the next round.
            let heads: std::collections::BTreeSet<EntryHash> =
                store.head_seqs(&log)?.into_iter().filter(|(_, s)| *s <= seq).map(|(h, _)| h).collect();
            Ok(heads.len() == summary.heads as usize && heads == their_heads)
        })
        .await??;
        if !same_heads {
            return Ok(());
        }
        tracing::error!(
            peer = %self.address,
            log = %log,
            seq,
            ours = %digest.to_hex(),
            theirs = %theirs.to_hex(),
            "the peer holds the same heads but a different set of entries: one side lost or corrupted an entry; reconciling"
        );
        self.ctx.metrics.record_digest_mismatch();
        let mut again = false;
        self.ctx.table.update(&self.address, |info| {
            again =
                info.digests.insert(log, super::DigestCheck::Mismatch) == Some(super::DigestCheck::Mismatch);
        });
        if again {
            // A whole reconcile with this peer already ran on this connection and the
            // digests still differ: the loss is on the peer's side, or the peer lies.
            // Another full transfer every round would repair nothing; the next
            // connection tries once more.
            return Ok(());
        }
        self.reconcile_whole(peer, log).await
    }

    /// One pull after `after_seq`; returns how far the pull brought this replica, or
    /// `None` if the peer had nothing new. The peer leaves out entries it pulled from this
    /// replica (`omit_yours`); a page of only those moves the cursor in memory (`ahead`).
    async fn pull(&mut self, peer: &mut Peer, log: LogId, after_seq: u64) -> anyhow::Result<Option<Pulled>> {
        let request = pb::PullRequest {
            log_id: log.0.to_vec(),
            epoch: peer.epoch.to_vec(),
            after_seq,
            from: Some(self.identity()),
            page_entries: PULL_PAGE_ENTRIES as u32,
            omit_yours: true,
            page_bytes: PULL_ASK_PAGE_BYTES as u32,
        };
        let mut stream = peer.client.pull(request).await.map_err(anyhow::Error::new)?.into_inner();
        let mut received = None;
        // The seq of the last cursor handed to the store.
        let mut stored = 0;
        // The page before, on its way into the store while the next one is verified.
        let mut inflight: Option<InFlight> = None;
        loop {
            let page = tokio::time::timeout(CALL_TIMEOUT, stream.message())
                .await
                .map_err(|_| anyhow!("the peer went silent for {CALL_TIMEOUT:?} in the middle of a pull"))?
                .context("pull stream")?;
            let Some(page) = page else {
                if let Some(previous) = inflight.take() {
                    self.land(log, previous).await?;
                }
                if received.is_none() {
                    // An empty pull told the peer this replica holds `after_seq`.
                    self.told.insert(log, after_seq);
                }
                return Ok(received.map(|reached| Pulled { reached, stored: stored == reached }));
            };
            check_page_size(&page, PULL_PAGE_ENTRIES)?;
            let last = page.entries.last().map_or(0, |e| e.seq);
            if page.through_seq > page.server_seq || (page.through_seq != 0 && last > page.through_seq) {
                bail!(
                    "the peer sent a page through seq {} with entries up to {last} and its seq at {}; cutting it off",
                    page.through_seq,
                    page.server_seq
                );
            }
            let reached = last.max(page.through_seq);
            if reached <= received.unwrap_or(after_seq) {
                continue;
            }
            received = Some(reached);
            // How far this replica holds the peer's log, as this connection knows it.
            let ahead = self.ahead.entry(log).or_insert(0);
            *ahead = (*ahead).max(reached);
            if page.entries.is_empty() {
                self.ctx.table.update(&self.address, |info| info.logs.entry(log).or_default().0 = reached);
                continue;
            }
            let cursor = Cursor { peer: peer.node_id, log, epoch: peer.epoch, seq: reached };
            let raw = page.entries.into_iter().map(|e| e.entry).collect();
            let held = inflight.as_mut().map(|p| std::mem::take(&mut p.hashes)).unwrap_or_default();
            let checked = self.check(log, raw, PageMode::Complete, held).await;
            // The page before lands first: a refusal of this one leaves it stored.
            if let Some(previous) = inflight.take() {
                self.land(log, previous).await?;
            }
            let Some(verified) = checked? else {
                return Ok(received.map(|reached| Pulled { reached, stored: false }));
            };
            let hashes = verified.iter().map(VerifiedEntry::hash).collect();
            stored = reached;
            let store = self.ctx.store.clone();
            let ingest = tokio::spawn(async move { store.ingest_pulled(verified, cursor).await });
            inflight = Some(InFlight { ingest, cursor, hashes });
        }
    }

    /// Waits for a pulled page's ingest and accounts for it.
    async fn land(&mut self, log: LogId, page: InFlight) -> anyhow::Result<()> {
        let outcomes = page.ingest.await.context("a page's ingest task failed")??;
        self.account(log, outcomes, Some(page.cursor))
    }

    async fn reconcile(&mut self, peer: &mut Peer, log: LogId) -> anyhow::Result<()> {
        let store = self.ctx.store.clone();
        let heads = tokio::task::spawn_blocking(move || store.heads(&log)).await??;
        self.reconcile_after(peer, log, heads, Vec::new()).await
    }

    /// A reconcile that names no heads, so the peer sends its whole log: what repairs a
    /// digest mismatch, where the heads agree and so say nothing of what is missing.
    /// Everything already held is a duplicate, refused by hash before it is stored.
    ///
    /// When this replica's own seqs have gaps, it is the side that lost entries (from its
    /// entry store, with what they did still stored): those are put back at their seqs as
    /// the peer's pages bring them, before the pages are ingested (`repair.rs`).
    async fn reconcile_whole(&mut self, peer: &mut Peer, log: LogId) -> anyhow::Result<()> {
        let store = self.ctx.store.clone();
        let gaps = tokio::task::spawn_blocking(move || store.seq_gaps(&log)).await??;
        if !gaps.is_empty() {
            tracing::error!(
                peer = %self.address,
                log = %log,
                lost = gaps.len(),
                first = gaps[0],
                "this replica lost entries from its entry store (its seqs have gaps); restoring them from the peer"
            );
        }
        self.reconcile_after(peer, log, Vec::new(), gaps).await
    }

    async fn reconcile_after(
        &mut self,
        peer: &mut Peer,
        log: LogId,
        heads: Vec<plait_store::StoredEntry>,
        mut gaps: Vec<u64>,
    ) -> anyhow::Result<()> {
        let request = pb::ReconcileRequest {
            log_id: log.0.to_vec(),
            heads: heads.iter().map(|h| h.entry.hash().0.to_vec()).collect(),
            from: Some(self.identity()),
        };
        let mut stream = peer.client.reconcile(request).await.context("reconcile")?.into_inner();
        let mut server_seq: Option<u64> = None;
        loop {
            let page = tokio::time::timeout(CALL_TIMEOUT, stream.message())
                .await
                .map_err(|_| {
                    anyhow!("the peer went silent for {CALL_TIMEOUT:?} in the middle of a reconcile")
                })?
                .context("reconcile stream")?;
            let Some(page) = page else { break };
            check_page_size(&page, PULL_PAGE_ENTRIES)?;
            server_seq = Some(page.server_seq);
            let raw = page.entries.into_iter().map(|e| e.entry).collect();
            self.apply_page(log, raw, peer.node_id, &mut gaps, PageMode::Complete).await?;
        }
        // Everything up to the peer's seq at the start is now held here: resume by cursor.
        if let Some(seq) = server_seq {
            let cursor = Cursor { peer: peer.node_id, log, epoch: peer.epoch, seq };
            self.ctx.store.ingest_pulled(Vec::new(), cursor).await?;
            self.ctx.table.update(&self.address, |info| info.logs.entry(log).or_default().0 = seq);
        }
        Ok(())
    }

    /// Verifies a page of entries a peer sent outside a pull and stores the valid ones as
    /// that peer's. An invalid entry is the peer's fault: nothing past it is trusted and
    /// the session is cut off. While `gaps` (seqs this replica lost, see
    /// `reconcile_whole`) remain, the entries it lost are first put back at their seqs.
    async fn apply_page(
        &mut self,
        log: LogId,
        raw: Vec<Vec<u8>>,
        from: plait_core::PublicKey,
        gaps: &mut Vec<u64>,
        mode: PageMode,
    ) -> anyhow::Result<()> {
        let Some(verified) = self.check(log, raw, mode, HashSet::new()).await? else { return Ok(()) };
        if !gaps.is_empty() {
            let restored = self.ctx.store.restore_lost(log, verified.clone(), gaps.clone()).await?;
            if !restored.is_empty() {
                tracing::warn!(peer = %self.address, log = %log, restored = restored.len(), "restored lost entries from the peer");
                gaps.retain(|g| restored.iter().all(|(_, seq)| seq != g));
            }
        }
        let outcomes = self.ctx.store.ingest_from_peer(verified, from).await?;
        self.account(log, outcomes, None)
    }

    /// Decodes, verifies and checks a page off the async workers; `None` when the log is
    /// no longer hosted here.
    async fn check(
        &mut self,
        log: LogId,
        raw: Vec<Vec<u8>>,
        mode: PageMode,
        in_flight: HashSet<EntryHash>,
    ) -> anyhow::Result<Option<Vec<VerifiedEntry>>> {
        let Some(summary) = self.ctx.store.log(&log) else { return Ok(None) };
        let store = self.ctx.store.clone();
        // Everything is checked before anything is stored: a page from a misbehaving
        // peer is refused whole, and its cursor never moves past a refused entry.
        let small = raw.len() as u64 <= INLINE_PAGE_ENTRIES_MAX
            && raw.iter().map(Vec::len).sum::<usize>() <= INLINE_PAGE_BYTES_MAX;
        let checked = if small {
            check_page(&store, &summary.manifest, raw, mode, &in_flight)
        } else {
            tokio::task::spawn_blocking(move || check_page(&store, &summary.manifest, raw, mode, &in_flight))
                .await?
        };
        match checked {
            Ok(v) => Ok(Some(v)),
            Err(why) => {
                self.ctx.metrics.record_peer_cut_off();
                bail!(
                    "the peer sent a page this replica refuses ({why}); nothing of it was stored; cutting it off"
                );
            }
        }
    }

    /// What the store made of a page: counts, the per-peer pending bound, the peer table.
    fn account(
        &mut self,
        log: LogId,
        outcomes: Vec<plait_store::StoreResult<SubmitOutcome>>,
        cursor: Option<Cursor>,
    ) -> anyhow::Result<()> {
        let mut stored = 0;
        let mut duplicates = 0;
        for outcome in outcomes {
            match outcome {
                Ok(SubmitOutcome::Stored { .. }) => stored += 1,
                Ok(SubmitOutcome::Pending) => self.pending_from_peer += 1,
                Ok(SubmitOutcome::Duplicate { .. }) => duplicates += 1,
                Err(e) => bail!("the peer sent an entry this replica refuses: {e}; cutting it off"),
            }
        }
        self.ctx.metrics.record_ingested("sync", stored);
        if cursor.is_some() {
            self.ctx.metrics.record_pulled_duplicates(duplicates);
        }
        if self.pending_from_peer > self.ctx.config.peer_pending_max {
            self.ctx.metrics.record_peer_cut_off();
            // Not reset: until those entries complete, this peer gets no more room.
            bail!(
                "the peer left {} entries waiting for parents it never sent (limit {}); cutting it off",
                self.pending_from_peer,
                self.ctx.config.peer_pending_max
            );
        }
        if let Some(c) = cursor {
            self.ctx.table.update(&self.address, |info| {
                info.logs.entry(log).or_default().0 = c.seq;
                info.last_contact = Some(Instant::now());
            });
        }
        Ok(())
    }

    /// Fetches parents that pending entries of `log` wait for, from this peer.
    async fn fetch_missing(&mut self, peer: &mut Peer, log: LogId) -> anyhow::Result<()> {
        if self.pending_from_peer > self.ctx.config.peer_pending_max {
            return Ok(()); // This peer used up its room; other peers may still help.
        }
        for _ in 0..FETCH_ROUNDS_MAX {
            let summary = self.ctx.store.log(&log);
            if summary.is_none_or(|s| s.pending == 0) {
                return Ok(());
            }
            let store = self.ctx.store.clone();
            let missing: Vec<EntryHash> =
                tokio::task::spawn_blocking(move || store.missing_parents(&log, FETCH_HASHES_MAX)).await??;
            if missing.is_empty() {
                return Ok(());
            }
            let mut request = tonic::Request::new(pb::FetchRequest {
                hashes: missing.iter().map(|h| h.0.to_vec()).collect(),
            });
            request.set_timeout(CALL_TIMEOUT);
            let found = peer.client.fetch(request).await.context("fetch")?.into_inner().entries;
            if found.len() > missing.len() {
                self.ctx.metrics.record_peer_cut_off();
                bail!(
                    "the peer answered a fetch of {} entries with {}; cutting it off",
                    missing.len(),
                    found.len()
                );
            }
            if found.is_empty() {
                return Ok(()); // Another peer may have them; the next pass tries again.
            }
            let before = self.ctx.store.log(&log).map_or(0, |s| s.pending);
            self.apply_page(log, found, peer.node_id, &mut Vec::new(), PageMode::Fetched).await?;
            let after = self.ctx.store.log(&log).map_or(0, |s| s.pending);
            self.pending_from_peer = self.pending_from_peer.saturating_sub(before.saturating_sub(after));
        }
        Ok(())
    }
}

/// The key under which the push cursor to `upstream` is kept: pushes are cursors too,
/// in this replica's own numbering, stored beside the pull cursors.
fn push_marker(upstream: &plait_core::PublicKey) -> plait_core::PublicKey {
    let mut h = blake3::Hasher::new();
    h.update(b"plait/push/v1");
    h.update(&upstream.0);
    plait_core::PublicKey(*h.finalize().as_bytes())
}

/// Refuses a page with more entries than asked for, or more bytes than a page can hold.
fn check_page_size(page: &pb::EntryPage, entries_max: usize) -> anyhow::Result<()> {
    let bytes: usize = page.entries.iter().map(|e| e.entry.len()).sum();
    if page.entries.len() > entries_max || bytes > PULL_PAGE_BYTES + plait_core::limits::ENTRY_BYTES_MAX {
        bail!(
            "the peer sent a page of {} entries and {bytes} bytes, over the {entries_max} entries and {PULL_PAGE_BYTES} bytes asked for; cutting it off",
            page.entries.len()
        );
    }
    Ok(())
}

/// A Watch notice: the peer's seq of a log, from which seq on the new entries are all
/// ones it pulled from here (0: not known to be), and how far the peer durably holds
/// this replica's log (0: not said, or not proven).
struct Notice {
    log: LogId,
    seq: u64,
    yours_from: u64,
    held: u64,
    /// The change's entries, when the peer sent them along.
    entries: Vec<pb::SeqEntry>,
}

/// Forwards the peer's Watch notices; sends why when the stream ends, when a notice
/// names another epoch than the connection's (the peer was wiped or restored: the
/// session reconnects), or when the peer fails the challenge. The call carries a fresh
/// challenge: a peer that answers it with a proof by `peer_id`'s key is the replica the
/// session believes it is, so the holds its notices report count; a peer that answers
/// with no proof (one that predates holds in notices) reports none.
async fn watch_peer(
    mut client: SyncClient<PeerChannel>,
    identity: pb::PeerIdentity,
    me: plait_core::PublicKey,
    peer_id: plait_core::PublicKey,
    epoch: [u8; 16],
    notices: mpsc::Sender<Result<Notice, String>>,
) {
    let challenge: [u8; CHALLENGE_BYTES] = rand::random();
    let request = pb::WatchRequest { from: Some(identity), challenge: challenge.to_vec(), entries: true };
    if let Ok(response) = client.watch(request).await {
        let proven = match response.metadata().get(SERVER_PROOF_KEY).map(|v| v.to_str()) {
            None => false,
            Some(Ok(proof)) if verify_server_proof(&peer_id, &me, &challenge, proof) => true,
            Some(_) => {
                let why = format!(
                    "the peer's answer to the Watch challenge does not prove node id {peer_id}, which its Hello named; reconnecting"
                );
                let _ = notices.send(Err(why)).await;
                return;
            }
        };
        let mut stream = response.into_inner();
        while let Ok(Some(notice)) = stream.message().await {
            if notice.epoch.as_slice() != epoch.as_slice() {
                break;
            }
            let yours_from = if notice.yours_from <= notice.seq { notice.yours_from } else { 0 };
            let held = if proven { notice.held } else { 0 };
            if let Ok(log) = plait_proto::convert::log_id("log_id", &notice.log_id)
                && notices
                    .send(Ok(Notice {
                        log,
                        seq: notice.seq,
                        yours_from,
                        held,
                        entries: carried(notice.entries),
                    }))
                    .await
                    .is_err()
            {
                return;
            }
        }
    }
    let _ = notices.send(Err("the peer's watch stream ended".into())).await;
}

/// The entries a notice carries, when they are within what a notice may carry (at most
/// [`INLINE_PAGE_ENTRIES_MAX`] entries and [`INLINE_PAGE_BYTES_MAX`] bytes: what
/// `store_carried` takes); more are dropped as they arrive and the log is pulled instead,
/// so the notices queued for the session stay small whatever the peer sends.
fn carried(entries: Vec<pb::SeqEntry>) -> Vec<pb::SeqEntry> {
    let bytes: usize = entries.iter().map(|e| e.entry.len()).sum();
    if entries.len() as u64 <= INLINE_PAGE_ENTRIES_MAX && bytes <= INLINE_PAGE_BYTES_MAX {
        entries
    } else {
        Vec::new()
    }
}

#[cfg(test)]
mod tests {
    use rand::SeedableRng;

    use super::*;

    /// A notice's entries are kept only within the inline bounds: five entries, or four
    /// over 64 KiB, are dropped on arrival (a hostile peer's 5 MiB notices must not pile
    /// up in the session's queue); four small ones are kept as they came.
    #[test]
    fn notice_entries_over_the_inline_bounds_are_dropped() {
        let entry = |seq: u64, len: usize| pb::SeqEntry { seq, entry: vec![0; len] };
        let four: Vec<_> = (1..=4).map(|s| entry(s, 100)).collect();
        assert_eq!(carried(four.clone()), four);
        assert!(carried((1..=5).map(|s| entry(s, 100)).collect()).is_empty(), "too many");
        let big = INLINE_PAGE_BYTES_MAX / 4 + 1;
        assert!(carried((1..=4).map(|s| entry(s, big)).collect()).is_empty(), "too many bytes");
    }

    /// The backoff wait is full jitter: never above the backoff, and it reaches well
    /// below half of it (where the old `ms/2..=ms` draw could never go) as well as near
    /// the top. Seeded, so the test is deterministic.
    #[test]
    fn jitter_spans_zero_to_the_backoff() {
        let mut rng = rand::rngs::StdRng::seed_from_u64(9);
        for backoff in [BACKOFF_MIN, Duration::from_millis(800), BACKOFF_MAX] {
            let waits: Vec<Duration> = (0..1000).map(|_| jittered(backoff, &mut rng)).collect();
            assert!(waits.iter().all(|w| *w <= backoff), "a wait above {backoff:?}");
            let min = *waits.iter().min().unwrap();
            let max = *waits.iter().max().unwrap();
            assert!(min < backoff / 10, "min {min:?} of {backoff:?}: not full jitter");
            assert!(max > backoff * 9 / 10, "max {max:?} of {backoff:?}");
            let below_half = waits.iter().filter(|w| **w < backoff / 2).count();
            assert!((400..=600).contains(&below_half), "{below_half} of 1000 below half");
        }
        assert!(jittered(Duration::ZERO, &mut rng) <= Duration::from_millis(1));
    }
}
