//! `plait.v1.Sync`: what peers and edge nodes call to replicate. Pull and Reconcile
//! stream entries in this replica's seq order (a topological order), bounded pages at a
//! time; Pull also records what the caller holds, for write concern and drain.

use std::collections::HashSet;

use plait_core::{DecodedEntry, EntryHash, LogId, PublicKey, verify_batch};
use plait_proto::{convert, pb};
use plait_store::{IngestSource, StoreError, SubmitOutcome};
use tokio::sync::mpsc;
use tokio_stream::wrappers::ReceiverStream;
use tonic::{Request, Response, Status, Streaming};

use super::Ctx;
use crate::replication::{
    FETCH_HASHES_MAX, PULL_PAGE_BYTES, PULL_PAGE_ENTRIES, PULL_PAGE_ENTRIES_MAX, PULL_PAGES_BUFFERED,
    PUSH_ENTRIES_MAX, RECONCILE_PAST_MAX,
};
use crate::status;

/// Heads per log a Hello carries for the anti-entropy check.
const HELLO_HEADS_MAX: usize = 64;
/// Entries with missing parents one Push stream may leave before it is cut off.
const PUSH_PENDING_MAX: u64 = 10_000;

pub(crate) struct SyncService {
    pub(crate) ctx: Ctx,
}

fn caller(from: Option<&pb::PeerIdentity>) -> Option<(PublicKey, Vec<u8>)> {
    let from = from?;
    Some((PublicKey::from_slice(&from.node_id)?, from.epoch.clone()))
}

impl SyncService {
    fn hosted(&self, log_id: &[u8]) -> Result<LogId, Status> {
        let log = convert::log_id("log_id", log_id).map_err(status::from_conversion)?;
        if self.ctx.store.log(&log).is_none() {
            return Err(Status::not_found(format!("log {log} is not hosted on this replica")));
        }
        Ok(log)
    }

    /// Streams entries of `log` with seq in `(after, until]`, skipping `skip`, in pages.
    fn stream_entries(
        &self,
        log: LogId,
        after: u64,
        until: u64,
        page_entries: usize,
        skip: Option<HashSet<EntryHash>>,
    ) -> ReceiverStream<Result<pb::EntryPage, Status>> {
        let (tx, rx) = mpsc::channel(PULL_PAGES_BUFFERED);
        let ctx = self.ctx.clone();
        let epoch = ctx.store.epoch().to_vec();
        tokio::spawn(async move {
            let mut cursor = after;
            let skip = std::sync::Arc::new(skip);
            while cursor < until {
                let skip = skip.clone();
                let page = ctx
                    .blocking(move |store| {
                        let entries = store
                            .entries_after(&log, cursor, page_entries, PULL_PAGE_BYTES)
                            .map_err(status::from_store)?;
                        let last = entries.last().map(|e| e.seq);
                        let entries: Vec<pb::SeqEntry> = entries
                            .into_iter()
                            .filter(|e| e.seq <= until)
                            .filter(|e| skip.as_ref().as_ref().is_none_or(|s| !s.contains(&e.entry.hash())))
                            .map(|e| pb::SeqEntry { seq: e.seq, entry: e.entry.into_bytes() })
                            .collect();
                        Ok((entries, last))
                    })
                    .await;
                let (entries, last) = match page {
                    Ok(p) => p,
                    Err(s) => {
                        let _ = tx.send(Err(s)).await;
                        return;
                    }
                };
                let Some(last) = last else { break };
                cursor = last;
                let page = pb::EntryPage { entries, epoch: epoch.clone(), server_seq: until };
                if tx.send(Ok(page)).await.is_err() {
                    return; // The caller went away.
                }
            }
            // A final (possibly empty) page carries server_seq even when nothing was sent.
            let _ = tx.send(Ok(pb::EntryPage { entries: Vec::new(), epoch, server_seq: until })).await;
        });
        ReceiverStream::new(rx)
    }

    async fn verify(&self, raw: Vec<Vec<u8>>) -> Result<Vec<plait_core::VerifiedEntry>, Status> {
        let decoded = raw
            .iter()
            .enumerate()
            .map(|(i, b)| {
                DecodedEntry::decode(b).map_err(|e| status::from_decode(&format!("entries[{i}]"), e))
            })
            .collect::<Result<Vec<_>, _>>()?;
        let verified =
            tokio::task::spawn_blocking(move || verify_batch(decoded)).await.map_err(status::from_join)?;
        verified
            .into_iter()
            .enumerate()
            .map(|(i, r)| r.map_err(|e| status::from_verify(&format!("entries[{i}]"), e)))
            .collect()
    }
}

#[tonic::async_trait]
impl pb::sync_server::Sync for SyncService {
    async fn hello(&self, _: Request<pb::HelloRequest>) -> Result<Response<pb::HelloResponse>, Status> {
        let summaries = self.ctx.store.logs();
        let logs = self
            .ctx
            .blocking(move |store| {
                let mut logs = Vec::with_capacity(summaries.len());
                for s in summaries {
                    // Only durable heads: the summary's seq is durable, and heads are read
                    // after it, so anything newer is filtered out by its seq.
                    let heads = store
                        .heads(&s.log_id)
                        .map_err(status::from_store)?
                        .into_iter()
                        .filter(|h| h.seq <= s.seq)
                        .take(HELLO_HEADS_MAX)
                        .map(|h| h.entry.hash().0.to_vec())
                        .collect();
                    logs.push(pb::HostedLog {
                        log_id: s.log_id.0.to_vec(),
                        manifest: s.manifest.bytes().to_vec(),
                        seq: s.seq,
                        heads,
                    });
                }
                Ok(logs)
            })
            .await?;
        Ok(Response::new(pb::HelloResponse {
            node_id: self.ctx.node_key.public().0.to_vec(),
            epoch: self.ctx.store.epoch().to_vec(),
            logs,
        }))
    }

    type PullStream = ReceiverStream<Result<pb::EntryPage, Status>>;

    async fn pull(&self, request: Request<pb::PullRequest>) -> Result<Response<Self::PullStream>, Status> {
        let r = request.into_inner();
        let log = self.hosted(&r.log_id)?;
        let epoch = self.ctx.store.epoch();
        if r.epoch != epoch {
            return Err(Status::failed_precondition(format!(
                "epoch mismatch: this replica's epoch is {}; the cursor is void, reconcile by heads",
                hex::encode(epoch)
            )));
        }
        if r.page_entries > PULL_PAGE_ENTRIES_MAX {
            return Err(Status::invalid_argument(format!("page_entries is at most {PULL_PAGE_ENTRIES_MAX}")));
        }
        let page_entries = if r.page_entries == 0 { PULL_PAGE_ENTRIES } else { r.page_entries as usize };
        let until = self.ctx.store.log(&log).map_or(0, |s| s.seq);
        if r.after_seq > until {
            return Err(Status::failed_precondition(format!(
                "after_seq {} is ahead of this replica's seq {until} for the log",
                r.after_seq
            )));
        }
        if let Some((peer, _)) = caller(r.from.as_ref()) {
            // The caller holds everything up to after_seq of this epoch.
            self.ctx.holds.record(peer, log, r.after_seq);
        }
        Ok(Response::new(self.stream_entries(log, r.after_seq, until, page_entries, None)))
    }

    type ReconcileStream = ReceiverStream<Result<pb::EntryPage, Status>>;

    async fn reconcile(
        &self,
        request: Request<pb::ReconcileRequest>,
    ) -> Result<Response<Self::ReconcileStream>, Status> {
        let r = request.into_inner();
        let log = self.hosted(&r.log_id)?;
        let heads = convert::entry_hashes("heads", &r.heads).map_err(status::from_conversion)?;
        if heads.len() > 4096 {
            return Err(Status::invalid_argument("at most 4096 heads"));
        }
        let until = self.ctx.store.log(&log).map_or(0, |s| s.seq);
        let past = self
            .ctx
            .blocking(move |store| {
                store.causal_past(&log, &heads, RECONCILE_PAST_MAX).map_err(status::from_store)
            })
            .await?;
        Ok(Response::new(self.stream_entries(log, 0, until, PULL_PAGE_ENTRIES, past)))
    }

    async fn fetch(&self, request: Request<pb::FetchRequest>) -> Result<Response<pb::FetchResponse>, Status> {
        let hashes = request.into_inner().hashes;
        if hashes.len() > FETCH_HASHES_MAX {
            return Err(Status::invalid_argument(format!("at most {FETCH_HASHES_MAX} hashes per fetch")));
        }
        let hashes = convert::entry_hashes("hashes", &hashes).map_err(status::from_conversion)?;
        let entries = self
            .ctx
            .blocking(move |store| {
                let mut out = Vec::new();
                for hash in hashes {
                    if let Some(e) = store.get_entry(&hash).map_err(status::from_store)? {
                        out.push(e.entry.into_bytes());
                    }
                }
                Ok(out)
            })
            .await?;
        Ok(Response::new(pb::FetchResponse { entries }))
    }

    type WatchStream = ReceiverStream<Result<pb::WatchNotice, Status>>;

    async fn watch(&self, _: Request<pb::WatchRequest>) -> Result<Response<Self::WatchStream>, Status> {
        let permit = self.ctx.subscriptions.clone().try_acquire_owned().map_err(|_| {
            Status::resource_exhausted("too many open streams on this replica; try again later")
        })?;
        let (tx, rx) = mpsc::channel(1024);
        let ctx = self.ctx.clone();
        let mut changes = ctx.store.changes();
        let mut shutdown = ctx.shutdown.clone();
        let epoch = ctx.store.epoch().to_vec();
        tokio::spawn(async move {
            let _permit = permit;
            let notice =
                |log: LogId, seq: u64| pb::WatchNotice { log_id: log.0.to_vec(), seq, epoch: epoch.clone() };
            let all =
                |ctx: &Ctx| ctx.store.logs().into_iter().map(|s| notice(s.log_id, s.seq)).collect::<Vec<_>>();
            for n in all(&ctx) {
                if tx.send(Ok(n)).await.is_err() {
                    return;
                }
            }
            loop {
                let next = tokio::select! {
                    change = changes.recv() => change,
                    _ = async { shutdown.wait_for(|s| *s).await.is_ok() } => return,
                    _ = tx.closed() => return,
                };
                let notices = match next {
                    Ok((log, seq)) => vec![notice(log, seq)],
                    // Fell behind: say where every log stands now.
                    Err(tokio::sync::broadcast::error::RecvError::Lagged(_)) => all(&ctx),
                    Err(tokio::sync::broadcast::error::RecvError::Closed) => return,
                };
                for n in notices {
                    if tx.send(Ok(n)).await.is_err() {
                        return;
                    }
                }
            }
        });
        Ok(Response::new(ReceiverStream::new(rx)))
    }

    async fn push(
        &self,
        request: Request<Streaming<pb::PushRequest>>,
    ) -> Result<Response<pb::PushResponse>, Status> {
        let mut stream = request.into_inner();
        let mut response = pb::PushResponse::default();
        while let Some(message) = stream.message().await? {
            if message.entries.len() > PUSH_ENTRIES_MAX {
                return Err(Status::invalid_argument(format!(
                    "at most {PUSH_ENTRIES_MAX} entries per push message"
                )));
            }
            let verified = self.verify(message.entries).await?;
            if let Some(foreign) = verified.iter().find(|e| self.ctx.store.log(&e.log()).is_none()) {
                return Err(Status::not_found(format!(
                    "log {} is not hosted on this replica",
                    foreign.log()
                )));
            }
            let outcomes =
                self.ctx.store.ingest(verified, IngestSource::Sync).await.map_err(status::from_store)?;
            for (i, outcome) in outcomes.into_iter().enumerate() {
                match outcome {
                    Ok(SubmitOutcome::Stored { .. }) => response.stored += 1,
                    Ok(SubmitOutcome::Duplicate { .. }) => response.duplicate += 1,
                    Ok(SubmitOutcome::Pending) => response.pending += 1,
                    Err(StoreError::ResourceExhausted(m)) => return Err(Status::resource_exhausted(m)),
                    Err(e) => {
                        let s = status::from_store(e);
                        return Err(Status::new(s.code(), format!("entries[{i}]: {}", s.message())));
                    }
                }
            }
            if response.pending > PUSH_PENDING_MAX {
                self.ctx.metrics.record_peer_cut_off();
                tracing::warn!(pending = response.pending, "cutting off a push that floods pending entries");
                return Err(Status::resource_exhausted(format!(
                    "cut off: {} entries wait for parents this push never sent (limit {PUSH_PENDING_MAX}); push parents first",
                    response.pending
                )));
            }
        }
        self.ctx.metrics.record_ingested("push", response.stored);
        Ok(Response::new(response))
    }
}
