//! One replication session: this replica pulling every log it shares with one peer.
//!
//! The session connects, says hello (learning the peer's node id, epoch and logs),
//! hosts any log the peer has that this replica lacks, and then for each log pulls by
//! cursor (or reconciles by heads when the cursor's epoch is not the peer's). It wakes on
//! the peer's Watch notices and, as a backstop, on a periodic anti-entropy pass. Every
//! page is verified before it is stored, and stored with its cursor in one batch.
//! Failures back off with jitter; a peer that sends invalid entries or floods pending is
//! cut off for the backoff period.

use std::collections::HashSet;
use std::time::{Duration, Instant};

use anyhow::{Context, anyhow, bail};
use plait_core::{DecodedEntry, EntryHash, LogId, SignedManifest, VerifiedEntry, verify_batch};
use plait_proto::pb;
use plait_proto::pb::sync_client::SyncClient;
use plait_store::{Cursor, StoreError, SubmitOutcome};
use rand::Rng;
use tokio::sync::{mpsc, watch};
use tonic::transport::{Channel, Endpoint};

use super::membership::EngineCtx;
use super::{FETCH_HASHES_MAX, PULL_PAGE_ENTRIES};

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
/// Largest message the session accepts from a peer.
const MESSAGE_BYTES_MAX: usize = 64 * 1024 * 1024;

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
}

struct Peer {
    client: SyncClient<Channel>,
    node_id: plait_core::PublicKey,
    epoch: [u8; 16],
}

fn jittered(backoff: Duration) -> Duration {
    // Full jitter: a random wait up to the backoff, so peers that failed together do not
    // retry together.
    let ms = backoff.as_millis().max(1) as u64;
    Duration::from_millis(rand::thread_rng().gen_range(ms / 2..=ms))
}

impl Session {
    pub(super) fn new(ctx: EngineCtx, address: String, stop: watch::Receiver<bool>) -> Session {
        Session { ctx, address, stop, pending_from_peer: 0 }
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
                        info.last_error = message;
                    });
                }
            }
            let wait = jittered(backoff);
            backoff = (backoff * 2).min(BACKOFF_MAX);
            let mut stop = self.stop.clone();
            tokio::select! {
                _ = tokio::time::sleep(wait) => {}
                _ = async { stop.wait_for(|s| *s).await.is_ok() } => return,
            }
        }
    }

    async fn connect(&self) -> anyhow::Result<Peer> {
        let url = if self.address.contains("://") {
            self.address.clone()
        } else {
            format!("http://{}", self.address)
        };
        let channel = Endpoint::from_shared(url)
            .with_context(|| format!("peer address {:?} is not a valid URI", self.address))?
            .connect_timeout(CONNECT_TIMEOUT)
            .tcp_nodelay(true)
            .http2_keep_alive_interval(KEEPALIVE_INTERVAL)
            .keep_alive_timeout(KEEPALIVE_TIMEOUT)
            .keep_alive_while_idle(true)
            .connect()
            .await
            .with_context(|| format!("cannot connect to peer {}", self.address))?;
        let mut client = SyncClient::new(channel)
            .max_decoding_message_size(MESSAGE_BYTES_MAX)
            .max_encoding_message_size(MESSAGE_BYTES_MAX);
        let hello = self.hello(&mut client).await?;
        let node_id = plait_proto::convert::public_key("node_id", &hello.node_id)?;
        let epoch: [u8; 16] = hello
            .epoch
            .as_slice()
            .try_into()
            .map_err(|_| anyhow!("peer sent an epoch that is not 16 bytes"))?;
        Ok(Peer { client, node_id, epoch })
    }

    async fn hello(&self, client: &mut SyncClient<Channel>) -> anyhow::Result<pb::HelloResponse> {
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
            info.last_contact = Some(Instant::now());
            info.last_error.clear();
        });
        tracing::info!(peer = %self.address, node = %peer.node_id, "replicating");

        // Notices from the peer's Watch stream: logs whose seq moved.
        let (notice_tx, mut notices) = mpsc::channel::<Option<LogId>>(1024);
        let watcher = tokio::spawn(watch_peer(peer.client.clone(), self.identity(), notice_tx));
        let result = self.follow(&mut peer, &mut notices).await;
        watcher.abort();
        result
    }

    async fn follow(
        &mut self,
        peer: &mut Peer,
        notices: &mut mpsc::Receiver<Option<LogId>>,
    ) -> anyhow::Result<Stop> {
        let mut due: Option<HashSet<LogId>> = None; // None: every log.
        loop {
            let hello = self.hello(&mut peer.client).await?;
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
                if due.as_ref().is_some_and(|d| !d.contains(&log_id)) {
                    continue;
                }
                self.sync_log(peer, log_id, log.seq).await?;
                if due.is_none() {
                    self.check_heads(peer, log_id, log).await?;
                }
            }
            // Wait for a notice, the anti-entropy tick or the stop signal.
            let mut next_due = HashSet::new();
            let mut stop = self.stop.clone();
            tokio::select! {
                notice = notices.recv() => match notice {
                    Some(Some(log)) => {
                        next_due.insert(log);
                        while let Ok(Some(log)) = notices.try_recv() {
                            next_due.insert(log);
                        }
                        due = Some(next_due);
                    }
                    _ => bail!("the peer's watch stream ended"),
                },
                _ = tokio::time::sleep(self.ctx.config.anti_entropy) => due = None,
                _ = async { stop.wait_for(|s| *s).await.is_ok() } => return Ok(Stop::Cancelled),
            }
        }
    }

    /// Hosts every log the peer has and this replica lacks, after verifying its manifest.
    async fn host_new_logs(&self, logs: &[pb::HostedLog]) -> anyhow::Result<()> {
        for log in logs {
            let Ok(id) = plait_proto::convert::log_id("log_id", &log.log_id) else { continue };
            if self.ctx.store.log(&id).is_some() {
                continue;
            }
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
        let cursor = self.ctx.store.cursor(&peer.node_id, &log)?;
        let valid = cursor.filter(|c| c.epoch == peer.epoch);
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
        // how far this replica now holds its log, which its write concern waits on.
        let mut after = match start {
            Some(seq) => seq,
            None => self.ctx.store.cursor(&peer.node_id, &log)?.map_or(0, |c| c.seq),
        };
        if after >= peer_seq && reconciled {
            return self.fetch_missing(peer, log).await;
        }
        // Bounded, so a peer under constant writes does not keep this session on one log.
        for _ in 0..PULLS_PER_SYNC_MAX {
            match self.pull(peer, log, after).await {
                Ok(Some(last)) => after = last,
                Ok(None) => break,
                Err(e)
                    if e.downcast_ref::<tonic::Status>()
                        .is_some_and(|s| s.code() == tonic::Code::FailedPrecondition)
                        && !reconciled =>
                {
                    tracing::info!(peer = %self.address, log = %log, error = %e, "cursor refused; reconciling by heads");
                    self.reconcile(peer, log).await?;
                    reconciled = true;
                    after = self.ctx.store.cursor(&peer.node_id, &log)?.map_or(0, |c| c.seq);
                }
                Err(e) => return Err(e),
            }
        }
        self.fetch_missing(peer, log).await
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
            .ctx
            .store
            .cursor(&peer.node_id, &log)?
            .is_some_and(|c| c.epoch == peer.epoch && c.seq >= hosted.seq);
        if !caught_up || hosted.heads.is_empty() {
            return Ok(());
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
        }
        Ok(())
    }

    /// One pull after `after_seq`; returns the last seq received, or `None` if the peer
    /// had nothing new.
    async fn pull(&mut self, peer: &mut Peer, log: LogId, after_seq: u64) -> anyhow::Result<Option<u64>> {
        let request = pb::PullRequest {
            log_id: log.0.to_vec(),
            epoch: peer.epoch.to_vec(),
            after_seq,
            from: Some(self.identity()),
            page_entries: PULL_PAGE_ENTRIES as u32,
        };
        let mut stream = peer.client.pull(request).await.map_err(anyhow::Error::new)?.into_inner();
        let mut received = None;
        loop {
            let page = tokio::time::timeout(CALL_TIMEOUT, stream.message())
                .await
                .map_err(|_| anyhow!("the peer went silent for {CALL_TIMEOUT:?} in the middle of a pull"))?
                .context("pull stream")?;
            let Some(page) = page else { return Ok(received) };
            let Some(last) = page.entries.last().map(|e| e.seq) else { continue };
            received = Some(last);
            let cursor = Cursor { peer: peer.node_id, log, epoch: peer.epoch, seq: last };
            self.apply_page(log, page.entries.into_iter().map(|e| e.entry).collect(), Some(cursor)).await?;
        }
    }

    async fn reconcile(&mut self, peer: &mut Peer, log: LogId) -> anyhow::Result<()> {
        let store = self.ctx.store.clone();
        let heads = tokio::task::spawn_blocking(move || store.heads(&log)).await??;
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
            server_seq = Some(page.server_seq);
            self.apply_page(log, page.entries.into_iter().map(|e| e.entry).collect(), None).await?;
        }
        // Everything up to the peer's seq at the start is now held here: resume by cursor.
        if let Some(seq) = server_seq {
            let cursor = Cursor { peer: peer.node_id, log, epoch: peer.epoch, seq };
            self.ctx.store.ingest_pulled(Vec::new(), cursor).await?;
        }
        Ok(())
    }

    /// Verifies a page and stores its valid entries with the cursor. An invalid entry is
    /// the peer's fault: nothing past it is trusted and the session is cut off.
    async fn apply_page(
        &mut self,
        log: LogId,
        raw: Vec<Vec<u8>>,
        cursor: Option<Cursor>,
    ) -> anyhow::Result<()> {
        let count = raw.len();
        let checked = tokio::task::spawn_blocking(move || {
            let mut decoded = Vec::with_capacity(raw.len());
            let mut first_error = None;
            for (i, bytes) in raw.iter().enumerate() {
                match DecodedEntry::decode(bytes) {
                    Ok(d) => decoded.push(d),
                    Err(e) => {
                        first_error = Some(format!("entry {i} of the page: {e}"));
                        break;
                    }
                }
            }
            let mut verified: Vec<VerifiedEntry> = Vec::with_capacity(decoded.len());
            for (i, result) in verify_batch(decoded).into_iter().enumerate() {
                match result {
                    Ok(v) => verified.push(v),
                    Err(e) => {
                        first_error.get_or_insert(format!("entry {i} of the page: {e}"));
                        break;
                    }
                }
            }
            (verified, first_error)
        })
        .await?;
        let (mut verified, first_error) = checked;
        if let Some(wrong) = verified.iter().position(|e| e.log() != log) {
            verified.truncate(wrong);
            bail!("the peer sent an entry of another log in a pull of {log}; cutting it off");
        }
        let complete = first_error.is_none() && verified.len() == count;
        let n = verified.len() as u64;
        let outcomes = match (complete, cursor) {
            (true, Some(cursor)) => self.ctx.store.ingest_pulled(verified, cursor).await?,
            _ => self.ctx.store.ingest(verified, plait_store::IngestSource::Sync).await?,
        };
        let mut stored = 0;
        for outcome in outcomes {
            match outcome {
                Ok(SubmitOutcome::Stored { .. }) => stored += 1,
                Ok(SubmitOutcome::Pending) => self.pending_from_peer += 1,
                Ok(SubmitOutcome::Duplicate { .. }) => {}
                Err(e) => bail!("the peer sent an entry this replica refuses: {e}; cutting it off"),
            }
        }
        self.ctx.metrics.record_ingested("sync", stored);
        if self.pending_from_peer > self.ctx.config.peer_pending_max {
            self.ctx.metrics.record_peer_cut_off();
            let n = self.pending_from_peer;
            self.pending_from_peer = 0;
            bail!("the peer left {n} entries waiting for parents it never sent; cutting it off");
        }
        if let Some(e) = first_error {
            self.ctx.metrics.record_peer_cut_off();
            bail!(
                "the peer sent an invalid entry ({e}); {n} valid entries before it were kept; cutting it off"
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
            if found.is_empty() {
                return Ok(()); // Another peer may have them; the next pass tries again.
            }
            let before = self.ctx.store.log(&log).map_or(0, |s| s.pending);
            self.apply_page(log, found, None).await?;
            let after = self.ctx.store.log(&log).map_or(0, |s| s.pending);
            self.pending_from_peer = self.pending_from_peer.saturating_sub(before.saturating_sub(after));
        }
        Ok(())
    }
}

/// Forwards the peer's Watch notices; sends `None` when the stream ends.
async fn watch_peer(
    mut client: SyncClient<Channel>,
    identity: pb::PeerIdentity,
    notices: mpsc::Sender<Option<LogId>>,
) {
    let stream = client.watch(pb::WatchRequest { from: Some(identity) }).await;
    if let Ok(stream) = stream {
        let mut stream = stream.into_inner();
        while let Ok(Some(notice)) = stream.message().await {
            if let Ok(log) = plait_proto::convert::log_id("log_id", &notice.log_id)
                && notices.send(Some(log)).await.is_err()
            {
                return;
            }
        }
    }
    let _ = notices.send(None).await;
}
