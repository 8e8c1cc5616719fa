//! `plait.v1.Sync`: what peers and edge nodes call to replicate. Pull and Reconcile
//! stream entries in this replica's seq order (a topological order), bounded pages at a
//! time; Pull also records what the caller holds, for write concern and drain.

use std::collections::{HashMap, HashSet};

use plait_core::{DecodedEntry, EntryHash, LogId, PublicKey, verify_batch};
use plait_proto::{convert, pb};
use plait_store::{IngestSource, StoreError, SubmitOutcome};
use tokio::sync::mpsc;
use tokio_stream::wrappers::ReceiverStream;
use tonic::{Request, Response, Status, Streaming};

use super::Ctx;
use crate::auth::peer::{CHALLENGE_BYTES, SERVER_PROOF_KEY, server_proof};
use crate::error::{ReplicaError, ReplicaResult};
use crate::replication::{
    FETCH_HASHES_MAX, INLINE_PAGE_BYTES_MAX, INLINE_PAGE_ENTRIES_MAX, PULL_PAGE_BYTES, PULL_PAGE_ENTRIES,
    PULL_PAGE_ENTRIES_MAX, PULL_PAGES_BUFFERED, PUSH_ENTRIES_MAX, RECONCILE_PAST_MAX,
};
use crate::status::reply;

/// Who a call comes from, for what only affects the caller: the proven node id, or else
/// the one its body names.
fn caller(proven: Option<PublicKey>, from: Option<&pb::PeerIdentity>) -> Option<PublicKey> {
    proven.or_else(|| from.and_then(|f| convert::public_key("from.node_id", &f.node_id).ok()))
}

/// Heads per log a Hello carries for the anti-entropy check.
const HELLO_HEADS_MAX: usize = 64;
/// Entries with missing parents one Push stream may leave before it is cut off.
const PUSH_PENDING_MAX: u64 = 10_000;

pub(crate) struct SyncService {
    pub(crate) ctx: Ctx,
}

impl SyncService {
    /// The node id the call's proof proves, if it carries one. The `from` a request names
    /// in its body is never believed: holds are recorded only for proven node ids.
    fn proven_caller<T>(&self, request: &Request<T>) -> ReplicaResult<Option<PublicKey>> {
        match self.ctx.proofs.verify_metadata(request.metadata()) {
            None => Ok(None),
            Some(Ok(node)) => Ok(Some(node)),
            Some(Err(e)) => Err(ReplicaError::Unauthenticated(format!("{e}; the call is refused"))),
        }
    }
}

/// Most entries and most entry bytes of one page (a page always holds one entry).
#[derive(Clone, Copy)]
struct PageSize {
    entries: usize,
    bytes: usize,
}

impl PageSize {
    const DEFAULT: PageSize = PageSize { entries: PULL_PAGE_ENTRIES, bytes: PULL_PAGE_BYTES };
}

impl SyncService {
    fn hosted(&self, log_id: &[u8]) -> ReplicaResult<LogId> {
        let log = convert::log_id("log_id", log_id)?;
        if self.ctx.store.log(&log).is_none() {
            return Err(ReplicaError::NotFound(format!("log {log} is not hosted on this replica")));
        }
        Ok(log)
    }

    /// Streams entries of `log` with seq in `(after, until]`, skipping `skip` and, for
    /// `omit`, the entries pulled from that peer, in pages; each page's `through_seq` is
    /// the last seq it accounts for.
    fn stream_entries(
        &self,
        log: LogId,
        after: u64,
        until: u64,
        page: PageSize,
        skip: Option<HashSet<EntryHash>>,
        omit: Option<PublicKey>,
    ) -> PageStream {
        let (tx, rx) = mpsc::channel(PULL_PAGES_BUFFERED);
        let ctx = self.ctx.clone();
        let epoch = ctx.store.epoch().to_vec();
        tokio::spawn(async move {
            let mut cursor = after;
            let skip = std::sync::Arc::new(skip);
            while cursor < until {
                let skip = skip.clone();
                let metrics = ctx.metrics.clone();
                let read = move |store: &plait_store::Store| {
                    let entries = store.entries_after(&log, cursor, page.entries, page.bytes)?;
                    let last = entries.last().map(|e| e.seq);
                    // The caller's own entries come back to it as nothing but a cursor.
                    let theirs = match (omit, last) {
                        (Some(peer), Some(last)) => store
                            .pulled_ranges(&log, cursor, last)
                            .into_iter()
                            .filter(|r| r.peer == peer)
                            .collect(),
                        _ => Vec::new(),
                    };
                    let omitted = |seq: u64| theirs.iter().any(|r| r.first <= seq && seq <= r.last);
                    let entries: Vec<_> = entries.into_iter().filter(|e| e.seq <= until).collect();
                    let before = entries.len();
                    let entries: Vec<_> = entries.into_iter().filter(|e| !omitted(e.seq)).collect();
                    metrics.record_pull_omitted((before - entries.len()) as u64);
                    let entries: Vec<pb::SeqEntry> = entries
                        .into_iter()
                        .filter(|e| skip.as_ref().as_ref().is_none_or(|s| !s.contains(&e.entry.hash())))
                        .map(|e| pb::SeqEntry { seq: e.seq, entry: e.entry.into_bytes() })
                        .collect();
                    Ok::<_, ReplicaError>((entries, last))
                };
                // A page of a few entries (steady replication) is read right here.
                let read_page = if until - cursor <= INLINE_PAGE_ENTRIES_MAX {
                    read(&ctx.store)
                } else {
                    ctx.blocking(read).await
                };
                let (entries, last) = match read_page {
                    Ok(p) => p,
                    Err(e) => {
                        // The stream is this task's tonic boundary.
                        let _ = tx.send(Err(e.into())).await;
                        return;
                    }
                };
                let Some(last) = last else { break };
                cursor = last;
                let through_seq = last.min(until);
                let page = pb::EntryPage { entries, epoch: epoch.clone(), server_seq: until, through_seq };
                if tx.send(Ok(page)).await.is_err() {
                    return; // The caller went away.
                }
            }
            // A final (possibly empty) page carries server_seq even when nothing was sent.
            let last_page = pb::EntryPage {
                entries: Vec::new(),
                epoch,
                server_seq: until,
                through_seq: cursor.min(until),
            };
            let _ = tx.send(Ok(last_page)).await;
        });
        ReceiverStream::new(rx)
    }

    async fn verify(&self, raw: Vec<Vec<u8>>) -> ReplicaResult<Vec<plait_core::VerifiedEntry>> {
        let decoded = raw
            .iter()
            .enumerate()
            .map(|(i, b)| {
                DecodedEntry::decode(b).map_err(|e| ReplicaError::from(e).context(format!("entries[{i}]")))
            })
            .collect::<Result<Vec<_>, _>>()?;
        let verified = tokio::task::spawn_blocking(move || verify_batch(decoded)).await?;
        verified
            .into_iter()
            .enumerate()
            .map(|(i, r)| r.map_err(|e| ReplicaError::from(e).context(format!("entries[{i}]"))))
            .collect()
    }

    async fn hello(&self) -> ReplicaResult<pb::HelloResponse> {
        let summaries = self.ctx.store.logs();
        let logs = self
            .ctx
            .blocking(move |store| {
                let mut logs = Vec::with_capacity(summaries.len());
                for s in summaries {
                    // Only durable heads: the summary's seq is durable, and heads are read
                    // after it, so anything newer is filtered out by its seq.
                    let heads = store
                        .head_seqs(&s.log_id)?
                        .into_iter()
                        .filter(|(_, seq)| *seq <= s.seq)
                        .take(HELLO_HEADS_MAX)
                        .map(|(hash, _)| hash.0.to_vec())
                        .collect();
                    logs.push(pb::HostedLog {
                        log_id: s.log_id.0.to_vec(),
                        manifest: s.manifest.bytes().to_vec(),
                        seq: s.seq,
                        heads,
                        digest: s.digest.0.to_vec(),
                        head_count: s.heads,
                    });
                }
                Ok::<_, ReplicaError>(logs)
            })
            .await?;
        Ok(pb::HelloResponse {
            node_id: self.ctx.node_key.public().0.to_vec(),
            epoch: self.ctx.store.epoch().to_vec(),
            logs,
        })
    }

    fn pull(&self, r: pb::PullRequest, proven: Option<PublicKey>) -> ReplicaResult<PageStream> {
        let log = self.hosted(&r.log_id)?;
        let epoch = self.ctx.store.epoch();
        if r.epoch != epoch {
            return Err(ReplicaError::FailedPrecondition(format!(
                "epoch mismatch: this replica's epoch is {}; the cursor is void, reconcile by heads",
                hex::encode(epoch)
            )));
        }
        if r.page_entries > PULL_PAGE_ENTRIES_MAX {
            return Err(ReplicaError::Invalid(format!("page_entries is at most {PULL_PAGE_ENTRIES_MAX}")));
        }
        let page_entries = if r.page_entries == 0 { PULL_PAGE_ENTRIES } else { r.page_entries as usize };
        if r.page_bytes as usize > PULL_PAGE_BYTES {
            return Err(ReplicaError::Invalid(format!("page_bytes is at most {PULL_PAGE_BYTES}")));
        }
        let page_bytes = if r.page_bytes == 0 { PULL_PAGE_BYTES } else { r.page_bytes as usize };
        let until = self.ctx.store.log(&log).map_or(0, |s| s.seq);
        if r.after_seq > until {
            return Err(ReplicaError::FailedPrecondition(format!(
                "after_seq {} is ahead of this replica's seq {until} for the log",
                r.after_seq
            )));
        }
        if let Some(peer) = proven {
            // The caller holds everything up to after_seq of this epoch.
            self.ctx.holds.record(peer, log, r.after_seq);
        }
        // Leaving entries out only ever costs the caller, so the id its body names is
        // enough (a caller claiming another's id just misses that one's entries).
        let omit = if r.omit_yours { caller(proven, r.from.as_ref()) } else { None };
        Ok(self.stream_entries(
            log,
            r.after_seq,
            until,
            PageSize { entries: page_entries, bytes: page_bytes },
            None,
            omit,
        ))
    }

    async fn reconcile(&self, r: pb::ReconcileRequest) -> ReplicaResult<PageStream> {
        let log = self.hosted(&r.log_id)?;
        let heads = convert::entry_hashes("heads", &r.heads)?;
        if heads.len() > 4096 {
            return Err(ReplicaError::Invalid("at most 4096 heads".into()));
        }
        let until = self.ctx.store.log(&log).map_or(0, |s| s.seq);
        let past =
            self.ctx.blocking(move |store| store.causal_past(&log, &heads, RECONCILE_PAST_MAX)).await?;
        Ok(self.stream_entries(log, 0, until, PageSize::DEFAULT, past, None))
    }

    async fn fetch(&self, r: pb::FetchRequest) -> ReplicaResult<pb::FetchResponse> {
        let hashes = r.hashes;
        if hashes.len() > FETCH_HASHES_MAX {
            return Err(ReplicaError::Invalid(format!("at most {FETCH_HASHES_MAX} hashes per fetch")));
        }
        let hashes = convert::entry_hashes("hashes", &hashes)?;
        let entries = self
            .ctx
            .blocking(move |store| {
                // Bounded by bytes as well: 1024 entries of 1 MiB are far over a message.
                // The caller fetches what is still missing in its next round.
                let mut out = Vec::new();
                let mut bytes = 0usize;
                for hash in hashes {
                    if let Some(e) = store.get_entry(&hash)? {
                        let entry = e.entry.into_bytes();
                        if !out.is_empty() && bytes + entry.len() > PULL_PAGE_BYTES {
                            break;
                        }
                        bytes += entry.len();
                        out.push(entry);
                    }
                }
                Ok::<_, ReplicaError>(out)
            })
            .await?;
        Ok(pb::FetchResponse { entries })
    }

    /// Notices for `caller` (its proven node id, if any). A change made only of entries
    /// pulled from the caller, while the caller holds everything before it, is sent as
    /// `yours_from`: the caller holds it all, so it needs no pull, and it is counted as
    /// holding the new seq at once (only for a proven caller: holds never trust a claim).
    /// With a challenge (only from a proven caller) the server proves its node id, which
    /// the returned proof carries, and reports in `held` every durable move of its
    /// cursors of the caller's logs: the first notices carry the stored cursors.
    fn watch(
        &self,
        caller: Option<PublicKey>,
        r: pb::WatchRequest,
    ) -> ReplicaResult<(WatchStream, Option<String>)> {
        let listener = if r.challenge.is_empty() {
            None
        } else {
            let challenge: [u8; CHALLENGE_BYTES] = r.challenge.as_slice().try_into().map_err(|_| {
                ReplicaError::Invalid(format!(
                    "challenge is {} bytes; it must be {CHALLENGE_BYTES}",
                    r.challenge.len()
                ))
            })?;
            let caller = caller.ok_or_else(|| {
                ReplicaError::Invalid(
                    "a challenge needs the caller's node proof (plait-node-proof): holds are reported only to a proven caller"
                        .into(),
                )
            })?;
            let epoch: [u8; 16] = r
                .from
                .as_ref()
                .and_then(|f| f.epoch.as_slice().try_into().ok())
                .ok_or_else(|| ReplicaError::Invalid("a challenge needs from.epoch, 16 bytes".into()))?;
            let proof = server_proof(&self.ctx.node_key, &caller, &challenge);
            Some((caller, epoch, proof))
        };
        let permit = self.ctx.peer_streams.clone().try_acquire_owned().map_err(|_| {
            ReplicaError::ResourceExhausted(
                "too many open peer Watch streams on this replica (--peer-streams-max); try again later"
                    .into(),
            )
        })?;
        let (tx, rx) = mpsc::channel(1024);
        let ctx = self.ctx.clone();
        // Subscribed before the first notices are read, so no change falls between them.
        let mut changes = ctx.store.changes();
        let mut shutdown = ctx.shutdown.clone();
        let epoch = ctx.store.epoch().to_vec();
        let proof = listener.as_ref().map(|l| l.2.clone());
        let want_entries = r.entries;
        let holds_for = listener.map(|(caller, epoch, _)| (caller, epoch));
        tokio::spawn(async move {
            let _permit = permit;
            let _listening = holds_for.map(|(peer, _)| ctx.listeners.listen(peer));
            let notice = |log: LogId, seq: u64| pb::WatchNotice {
                log_id: log.0.to_vec(),
                seq,
                epoch: epoch.clone(),
                yours_from: 0,
                held: 0,
                entries: Vec::new(),
            };
            // The seq of every log, with what is held of the caller's logs.
            let all = |ctx: Ctx| async move {
                let held: HashMap<LogId, u64> = match holds_for {
                    Some((peer, epoch)) => ctx
                        .blocking(move |store| store.cursors_from(&peer))
                        .await?
                        .into_iter()
                        .filter(|c| c.epoch == epoch)
                        .map(|c| (c.log, c.seq))
                        .collect(),
                    None => HashMap::new(),
                };
                let notices = ctx
                    .store
                    .logs()
                    .into_iter()
                    .map(|s| pb::WatchNotice {
                        held: held.get(&s.log_id).copied().unwrap_or(0),
                        ..notice(s.log_id, s.seq)
                    })
                    .collect::<Vec<_>>();
                Ok::<_, ReplicaError>(notices)
            };
            let mut next = Some(all(ctx.clone()).await);
            loop {
                let notices = match next.take() {
                    Some(Ok(notices)) => notices,
                    Some(Err(e)) => {
                        // The stream is this task's tonic boundary.
                        let _ = tx.send(Err(e.into())).await;
                        return;
                    }
                    None => Vec::new(),
                };
                for n in notices {
                    if tx.send(Ok(n)).await.is_err() {
                        return;
                    }
                }
                let change = tokio::select! {
                    change = changes.recv() => change,
                    _ = async { shutdown.wait_for(|s| *s).await.is_ok() } => return,
                    _ = tx.closed() => return,
                };
                next = match change {
                    Ok(change) => {
                        let held = holds_for
                            .zip(change.held)
                            .filter(|((peer, epoch), c)| c.peer == *peer && c.epoch == *epoch)
                            .map_or(0, |(_, c)| c.seq);
                        // A cursor of some other peer that moved, nothing new: nothing to say.
                        if change.held.is_some() && change.seq == change.prev && held == 0 {
                            continue;
                        }
                        let yours = caller.filter(|c| {
                            change.seq > change.prev
                                && change.from == Some(*c)
                                && ctx.holds.held_by(c, &change.log) >= change.prev
                        });
                        let yours_from = match yours {
                            Some(peer) => {
                                ctx.holds.record(peer, change.log, change.seq);
                                change.prev + 1
                            }
                            None => 0,
                        };
                        let entries = if want_entries && yours_from == 0 {
                            carried(&ctx.store, &change, caller)
                        } else {
                            Vec::new()
                        };
                        Some(Ok(vec![pb::WatchNotice {
                            yours_from,
                            held,
                            entries,
                            ..notice(change.log, change.seq)
                        }]))
                    }
                    // Fell behind: say where every log stands now.
                    Err(tokio::sync::broadcast::error::RecvError::Lagged(_)) => Some(all(ctx.clone()).await),
                    Err(tokio::sync::broadcast::error::RecvError::Closed) => return,
                };
            }
        });
        Ok((ReceiverStream::new(rx), proof))
    }

    async fn push(&self, mut stream: Streaming<pb::PushRequest>) -> ReplicaResult<pb::PushResponse> {
        let mut response = pb::PushResponse::default();
        while let Some(message) = stream.message().await? {
            if message.entries.len() > PUSH_ENTRIES_MAX {
                return Err(ReplicaError::Invalid(format!(
                    "at most {PUSH_ENTRIES_MAX} entries per push message"
                )));
            }
            let verified = self.verify(message.entries).await?;
            if let Some(foreign) = verified.iter().find(|e| self.ctx.store.log(&e.log()).is_none()) {
                return Err(ReplicaError::NotFound(format!(
                    "log {} is not hosted on this replica",
                    foreign.log()
                )));
            }
            let outcomes = self.ctx.store.ingest(verified, IngestSource::Sync).await?;
            for (i, outcome) in outcomes.into_iter().enumerate() {
                match outcome {
                    Ok(SubmitOutcome::Stored { .. }) => response.stored += 1,
                    Ok(SubmitOutcome::Duplicate { .. }) => response.duplicate += 1,
                    Ok(SubmitOutcome::Pending) => response.pending += 1,
                    // A bound: said as the store said it, without the entry's index.
                    Err(e @ StoreError::ResourceExhausted(_)) => return Err(e.into()),
                    Err(e) => return Err(ReplicaError::from(e).context(format!("entries[{i}]"))),
                }
            }
            if response.pending > PUSH_PENDING_MAX {
                self.ctx.metrics.record_peer_cut_off();
                tracing::warn!(pending = response.pending, "cutting off a push that floods pending entries");
                return Err(ReplicaError::ResourceExhausted(format!(
                    "cut off: {} entries wait for parents this push never sent (limit {PUSH_PENDING_MAX}); push parents first",
                    response.pending
                )));
            }
        }
        self.ctx.metrics.record_ingested("push", response.stored);
        Ok(response)
    }
}

/// The entries of a small change, to go along with its notice: read on the async worker
/// (a few entries, as a small pull page is), and only when none came from `caller`.
/// Empty when the change is not small or the read fails (the caller then pulls, and the
/// pull reports what is wrong).
fn carried(
    store: &plait_store::Store,
    change: &plait_store::Change,
    caller: Option<PublicKey>,
) -> Vec<pb::SeqEntry> {
    let n = change.seq.saturating_sub(change.prev);
    if n == 0 || n > INLINE_PAGE_ENTRIES_MAX {
        return Vec::new();
    }
    if let Some(peer) = caller
        && store.pulled_ranges(&change.log, change.prev, change.seq).iter().any(|r| r.peer == peer)
    {
        return Vec::new();
    }
    let Ok(entries) = store.entries_after(&change.log, change.prev, n as usize, INLINE_PAGE_BYTES_MAX) else {
        return Vec::new();
    };
    let bytes: usize = entries.iter().map(|e| e.entry.bytes().len()).sum();
    let whole = entries.len() as u64 == n
        && entries.last().is_some_and(|e| e.seq == change.seq)
        && bytes <= INLINE_PAGE_BYTES_MAX;
    if !whole {
        return Vec::new();
    }
    entries.into_iter().map(|e| pb::SeqEntry { seq: e.seq, entry: e.entry.into_bytes() }).collect()
}

type PageStream = ReceiverStream<Result<pb::EntryPage, Status>>;
type WatchStream = ReceiverStream<Result<pb::WatchNotice, Status>>;

/// The tonic boundary: each RPC runs the method of the same name above, whose
/// `ReplicaError` becomes a status in `status.rs`.
#[tonic::async_trait]
impl pb::sync_server::Sync for SyncService {
    async fn hello(&self, _: Request<pb::HelloRequest>) -> Result<Response<pb::HelloResponse>, Status> {
        reply(self.hello().await)
    }

    type PullStream = PageStream;

    async fn pull(&self, request: Request<pb::PullRequest>) -> Result<Response<Self::PullStream>, Status> {
        let proven = match self.proven_caller(&request) {
            Ok(p) => p,
            Err(e) => return reply(Err(e)),
        };
        reply(self.pull(request.into_inner(), proven))
    }

    type ReconcileStream = PageStream;

    async fn reconcile(
        &self,
        request: Request<pb::ReconcileRequest>,
    ) -> Result<Response<Self::ReconcileStream>, Status> {
        reply(self.reconcile(request.into_inner()).await)
    }

    async fn fetch(&self, request: Request<pb::FetchRequest>) -> Result<Response<pb::FetchResponse>, Status> {
        reply(self.fetch(request.into_inner()).await)
    }

    type WatchStream = WatchStream;

    async fn watch(&self, request: Request<pb::WatchRequest>) -> Result<Response<Self::WatchStream>, Status> {
        let proven = match self.proven_caller(&request) {
            Ok(p) => p,
            Err(e) => return reply(Err(e)),
        };
        let mut response = reply(self.watch(proven, request.into_inner()))?;
        let proof = response.get_mut().1.take();
        if let Some(value) = proof.and_then(|p| p.parse().ok()) {
            response.metadata_mut().insert(SERVER_PROOF_KEY, value);
        }
        Ok(response.map(|(stream, _)| stream))
    }

    async fn push(
        &self,
        request: Request<Streaming<pb::PushRequest>>,
    ) -> Result<Response<pb::PushResponse>, Status> {
        reply(self.push(request.into_inner()).await)
    }
}
