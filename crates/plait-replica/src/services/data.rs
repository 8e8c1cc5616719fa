//! `plait.v1.Data`: typed writes, the routed batch write, pre-signed entries, reads and
//! subscriptions. Every request is checked here, at the boundary, before the store sees
//! it; the store checks again what it must own (ACL, parents, clocks).

use std::collections::HashMap;

use plait_core::limits::{KEY_BYTES_MAX, LABEL_BYTES_MAX, NODE_BYTES_MAX};
use plait_core::{DecodedEntry, EntryHash, LogId, LogType, Op, OpId, verify_batch};
use plait_proto::{convert, pb};
use plait_store::{AsOf, Direction, IngestSource, LogSummary, SubmitOutcome, WriteAck};
use tokio_stream::wrappers::ReceiverStream;
use tonic::{Request, Response, Status};

use super::{Ctx, consumer_infos, page_limit};
use crate::auth::Principal;
use crate::error::{ReplicaError, ReplicaResult};
use crate::status::reply;

/// Most ops one `Write` call may carry.
const WRITE_OPS_MAX: usize = 10_000;
/// Most entries one `Submit` call may carry.
const SUBMIT_ENTRIES_MAX: usize = 1024;
/// Entries a subscription reads from the store at a time, and their bytes.
const SUBSCRIBE_PAGE_ENTRIES: usize = 256;
const SUBSCRIBE_PAGE_BYTES: usize = 4 * 1024 * 1024;
// A batch may pass the byte bound by one entry; it still fits the default message limit.
const _: () = assert!(
    SUBSCRIBE_PAGE_BYTES + plait_core::limits::ENTRY_BYTES_MAX + 64 * 1024
        <= crate::config::MESSAGE_BYTES_DEFAULT
);
/// Applied ops buffered per subscriber before the stream waits for the client.
const SUBSCRIBE_BUFFER: usize = 1024;
/// Write concern: the default wait, the longest allowed, and the most replicas asked.
const CONCERN_TIMEOUT_DEFAULT_MS: u32 = 10_000;
const CONCERN_TIMEOUT_MAX_MS: u32 = 300_000;
const CONCERN_REPLICAS_MAX: u32 = 64;

pub(crate) struct DataService {
    pub(crate) ctx: Ctx,
}

fn ack_to_pb(ack: &WriteAck) -> pb::WriteAck {
    pb::WriteAck {
        log_id: ack.log.0.to_vec(),
        entry_hash: ack.hash.0.to_vec(),
        seq: ack.seq,
        op_index: ack.index,
        clock: Some(ack.clock.into()),
    }
}

fn bounded(field: &str, value: &[u8], max: usize) -> ReplicaResult<()> {
    if value.is_empty() {
        return Err(ReplicaError::Invalid(format!("{field} must not be empty")));
    }
    if value.len() > max {
        return Err(ReplicaError::Invalid(format!(
            "{field} is {} bytes, over the limit of {max}",
            value.len()
        )));
    }
    Ok(())
}

fn optional_bounded(field: &str, value: &[u8], max: usize) -> ReplicaResult<()> {
    if value.len() > max {
        return Err(ReplicaError::Invalid(format!(
            "{field} is {} bytes, over the limit of {max}",
            value.len()
        )));
    }
    Ok(())
}

/// The point a request's `as_of` names, checked; `None` for the current view. The store
/// resolves it to a seq with the read, on the blocking pool (a checkpoint is looked up).
fn as_of(as_of: Option<pb::AsOf>) -> ReplicaResult<Option<AsOf>> {
    let Some(as_of) = as_of else { return Ok(None) };
    let point = match as_of.point {
        None => {
            return Err(ReplicaError::Invalid(
                "as_of names no point: set its seq or its checkpoint (a state root)".into(),
            ));
        }
        Some(pb::as_of::Point::Seq(seq)) => AsOf::Seq(seq),
        Some(pb::as_of::Point::Checkpoint(root)) => {
            let root: [u8; 32] = root.as_slice().try_into().map_err(|_| {
                ReplicaError::Invalid(format!(
                    "as_of.checkpoint is a checkpoint's state root, 32 bytes; got {} bytes",
                    root.len()
                ))
            })?;
            AsOf::Checkpoint(root)
        }
    };
    Ok(Some(point))
}

fn check_concern(concern: Option<&pb::WriteConcern>) -> ReplicaResult<()> {
    if let Some(c) = concern {
        if c.replicas > CONCERN_REPLICAS_MAX {
            return Err(ReplicaError::Invalid(format!("concern.replicas is at most {CONCERN_REPLICAS_MAX}")));
        }
        if c.timeout_ms > CONCERN_TIMEOUT_MAX_MS {
            return Err(ReplicaError::Invalid(format!(
                "concern.timeout_ms is at most {CONCERN_TIMEOUT_MAX_MS}"
            )));
        }
    }
    Ok(())
}

impl DataService {
    /// Writes one typed op to the log named in the request.
    async fn write_one(
        &self,
        principal: &Principal,
        log: &str,
        op: Op,
        concern: Option<pb::WriteConcern>,
    ) -> ReplicaResult<pb::WriteAck> {
        self.ctx.check_writable()?;
        check_concern(concern.as_ref())?;
        op.validate()?;
        let summary = self.ctx.resolve_typed(log, op.log_type(), op.name())?;
        self.ctx.check_may_write(principal, &summary)?;
        let acks = self.ctx.store.write(vec![(summary.log_id, op)]).await?;
        self.ctx.metrics.record_ops_written(summary.manifest.manifest().log_type.name(), 1);
        self.await_concern(&acks, concern).await?;
        Ok(ack_to_pb(&acks[0]))
    }

    /// Waits until enough replicas hold the acknowledged entries. The write is already
    /// durable here; a timeout says so and undoes nothing.
    async fn await_concern(&self, acks: &[WriteAck], concern: Option<pb::WriteConcern>) -> ReplicaResult<()> {
        let Some(concern) = concern.filter(|c| c.replicas > 1) else { return Ok(()) };
        let timeout_ms =
            if concern.timeout_ms == 0 { CONCERN_TIMEOUT_DEFAULT_MS } else { concern.timeout_ms };
        let mut targets: HashMap<LogId, u64> = HashMap::new();
        for ack in acks {
            let seq = targets.entry(ack.log).or_default();
            *seq = (*seq).max(ack.seq);
        }
        let targets: Vec<(LogId, u64)> = targets.into_iter().collect();
        let deadline = std::time::Instant::now() + std::time::Duration::from_millis(u64::from(timeout_ms));
        let others = concern.replicas as usize - 1;
        let table = self.ctx.membership.table.clone();
        self.ctx.holds.wait_for(&targets, others, deadline, move || table.node_ids()).await.map_err(|held| {
            ReplicaError::DeadlineExceeded(format!(
                "the write is durable here (seq {}) but only {} of the {} replicas asked for held it within {timeout_ms} ms; it is not undone",
                acks.last().map_or(0, |a| a.seq),
                held + 1,
                concern.replicas
            ))
        })
    }

    /// Decodes, verifies and pre-checks submitted entries; any failure refuses the whole
    /// request, naming the entry, so nothing of a bad request is stored.
    async fn check_submitted(&self, raw: Vec<Vec<u8>>) -> ReplicaResult<Vec<plait_core::VerifiedEntry>> {
        if raw.is_empty() {
            return Err(ReplicaError::Invalid("entries must not be empty".into()));
        }
        if raw.len() > SUBMIT_ENTRIES_MAX {
            return Err(ReplicaError::Invalid(format!(
                "{} entries in one call, over the limit of {SUBMIT_ENTRIES_MAX}",
                raw.len()
            )));
        }
        let decoded = raw
            .iter()
            .enumerate()
            .map(|(i, bytes)| {
                DecodedEntry::decode(bytes)
                    .map_err(|e| ReplicaError::from(e).context(format!("entries[{i}]")))
            })
            .collect::<Result<Vec<_>, _>>()?;
        let verified = tokio::task::spawn_blocking(move || verify_batch(decoded)).await?;
        let verified = verified
            .into_iter()
            .enumerate()
            .map(|(i, r)| r.map_err(|e| ReplicaError::from(e).context(format!("entries[{i}]"))))
            .collect::<Result<Vec<_>, _>>()?;

        // Parents' clock times, from this request and from the store.
        let in_request: HashMap<EntryHash, u64> =
            verified.iter().map(|e| (e.hash(), e.clock().time)).collect();
        let parents: Vec<EntryHash> = verified
            .iter()
            .flat_map(|e| e.entry().next.iter().copied())
            .filter(|p| !in_request.contains_key(p))
            .collect();
        let stored: HashMap<EntryHash, (LogId, u64)> = self
            .ctx
            .blocking(move |store| {
                let mut out = HashMap::new();
                for p in parents {
                    if let Some(e) = store.get_entry(&p)? {
                        out.insert(p, (e.entry.log(), e.entry.clock().time));
                    }
                }
                Ok::<_, ReplicaError>(out)
            })
            .await?;

        for (i, entry) in verified.iter().enumerate() {
            let at = |m: String| format!("entries[{i}] ({}): {m}", entry.hash());
            let summary = self.ctx.store.log(&entry.log()).ok_or_else(|| {
                ReplicaError::NotFound(at(format!("log {} is not hosted on this replica", entry.log())))
            })?;
            let manifest = summary.manifest.manifest();
            if !manifest.writers.allows(&entry.clock().writer) {
                return Err(ReplicaError::PermissionDenied(at(format!(
                    "writer {} is not on the ACL of log {:?}",
                    entry.clock().writer,
                    manifest.name
                ))));
            }
            for op in &entry.entry().ops {
                op.check_type(manifest.log_type).map_err(|e| ReplicaError::Invalid(at(e.to_string())))?;
            }
            for parent in &entry.entry().next {
                let time = match (in_request.get(parent), stored.get(parent)) {
                    (Some(t), _) => Some(*t),
                    (None, Some((log, _))) if *log != entry.log() => {
                        return Err(ReplicaError::Invalid(at(format!(
                            "parent {parent} belongs to another log"
                        ))));
                    }
                    (None, Some((_, t))) => Some(*t),
                    (None, None) => None,
                };
                if time.is_some_and(|t| t >= entry.clock().time) {
                    return Err(ReplicaError::Invalid(at(format!(
                        "clock time {} does not exceed parent {parent}'s {}",
                        entry.clock().time,
                        time.unwrap_or_default()
                    ))));
                }
            }
        }
        Ok(verified)
    }
}

/// The RPCs, each returning `ReplicaError`; the trait impl below is the tonic boundary.
impl DataService {
    async fn write(
        &self,
        principal: &Principal,
        request: pb::WriteRequest,
    ) -> ReplicaResult<pb::WriteResponse> {
        self.ctx.check_writable()?;
        let pb::WriteRequest { ops, concern } = request;
        check_concern(concern.as_ref())?;
        if ops.is_empty() {
            return Err(ReplicaError::Invalid("ops must not be empty".into()));
        }
        if ops.len() > WRITE_OPS_MAX {
            return Err(ReplicaError::Invalid(format!(
                "{} ops in one call, over the limit of {WRITE_OPS_MAX}",
                ops.len()
            )));
        }
        let mut logs: HashMap<String, LogSummary> = HashMap::new();
        let mut routed = Vec::with_capacity(ops.len());
        let mut per_type: HashMap<LogType, u64> = HashMap::new();
        for (i, routed_op) in ops.into_iter().enumerate() {
            let op = convert::op(&format!("ops[{i}].op"), routed_op.op)?;
            if !logs.contains_key(&routed_op.log) {
                let summary = self.ctx.resolve(&routed_op.log).map_err(|e| e.context(format!("ops[{i}]")))?;
                self.ctx.check_may_write(principal, &summary).map_err(|e| e.context(format!("ops[{i}]")))?;
                logs.insert(routed_op.log.clone(), summary);
            }
            let summary = &logs[&routed_op.log];
            let log_type = summary.manifest.manifest().log_type;
            op.check_type(log_type).map_err(|e| {
                ReplicaError::Invalid(format!("ops[{i}]: log {:?}: {e}", summary.manifest.manifest().name))
            })?;
            *per_type.entry(log_type).or_default() += 1;
            routed.push((summary.log_id, op));
        }
        let acks = self.ctx.store.write(routed).await?;
        for (log_type, n) in per_type {
            self.ctx.metrics.record_ops_written(log_type.name(), n);
        }
        self.await_concern(&acks, concern).await?;
        Ok(pb::WriteResponse { acks: acks.iter().map(ack_to_pb).collect() })
    }

    async fn submit(
        &self,
        principal: &Principal,
        request: pb::SubmitRequest,
    ) -> ReplicaResult<pb::SubmitResponse> {
        self.ctx.check_writable()?;
        let verified = self.check_submitted(request.entries).await?;
        for (i, entry) in verified.iter().enumerate() {
            if let Some(summary) = self.ctx.store.log(&entry.entry().log) {
                self.ctx
                    .check_may_write(principal, &summary)
                    .map_err(|e| e.context(format!("entries[{i}]")))?;
            }
        }
        let hashes: Vec<EntryHash> = verified.iter().map(|e| e.hash()).collect();
        let outcomes = self.ctx.store.ingest(verified, IngestSource::Submit).await?;
        let mut results = Vec::with_capacity(outcomes.len());
        let mut stored = 0;
        for (i, (hash, outcome)) in hashes.iter().zip(outcomes).enumerate() {
            let (outcome, seq) = match outcome {
                Ok(SubmitOutcome::Stored { seq }) => {
                    stored += 1;
                    (pb::SubmitOutcome::Stored, seq)
                }
                Ok(SubmitOutcome::Duplicate { seq }) => (pb::SubmitOutcome::Duplicate, seq),
                Ok(SubmitOutcome::Pending) => (pb::SubmitOutcome::Pending, 0),
                Err(e) => return Err(ReplicaError::from(e).context(format!("entries[{i}] ({hash})"))),
            };
            results.push(pb::SubmitResult { entry_hash: hash.0.to_vec(), outcome: outcome as i32, seq });
        }
        self.ctx.metrics.record_ingested("submit", stored);
        Ok(pb::SubmitResponse { results })
    }

    async fn get(&self, r: pb::GetRequest) -> ReplicaResult<pb::GetResponse> {
        bounded("key", &r.key, KEY_BYTES_MAX)?;
        let log = self.ctx.resolve_typed(&r.log, LogType::Kv, "Get")?.log_id;
        let row = match as_of(r.as_of)? {
            // A point read: a few block lookups, mostly in the cache. Run on the async
            // worker, where a hop to the blocking pool would cost more than the read itself.
            None => self.ctx.store.get_kv(&log, &r.key)?,
            // Walks the key's versions back from the newest: off the async workers.
            Some(point) => {
                self.ctx
                    .blocking(move |store| {
                        store.get_kv_as_of(&log, &r.key, store.resolve_as_of(&log, point)?)
                    })
                    .await?
            }
        };
        Ok(match row {
            Some(row) => {
                pb::GetResponse { found: true, value: row.value, clock: Some(row.id.clock().into()) }
            }
            None => pb::GetResponse { found: false, value: Vec::new(), clock: None },
        })
    }

    async fn scan(&self, r: pb::ScanRequest) -> ReplicaResult<pb::ScanResponse> {
        optional_bounded("prefix", &r.prefix, KEY_BYTES_MAX)?;
        optional_bounded("start", &r.start, KEY_BYTES_MAX)?;
        optional_bounded("end", &r.end, KEY_BYTES_MAX)?;
        let limit = page_limit(r.limit)?;
        let log = self.ctx.resolve_typed(&r.log, LogType::Kv, "Scan")?.log_id;
        let as_of = as_of(r.as_of)?;
        let (rows, next) = self
            .ctx
            .blocking(move |store| match as_of {
                None => store.scan_kv(&log, &r.prefix, &r.start, &r.end, limit),
                Some(point) => {
                    let seq = store.resolve_as_of(&log, point)?;
                    store.scan_kv_as_of(&log, &r.prefix, &r.start, &r.end, limit, seq)
                }
            })
            .await?;
        let items = rows
            .into_iter()
            .map(|row| pb::KeyValue { key: row.key, value: row.value, clock: Some(row.id.clock().into()) })
            .collect();
        Ok(pb::ScanResponse { items, next_start: next.unwrap_or_default() })
    }

    async fn read_feed(&self, r: pb::ReadFeedRequest) -> ReplicaResult<pb::ReadFeedResponse> {
        let limit = page_limit(r.limit)?;
        if r.tail && !r.after.is_empty() {
            return Err(ReplicaError::Invalid("tail reads the last items; it does not take `after`".into()));
        }
        if !r.after.is_empty() && r.after.len() != OpId::SORT_KEY_LEN {
            return Err(ReplicaError::Invalid(format!(
                "after must be a position from an earlier FeedItem ({} bytes), got {} bytes",
                OpId::SORT_KEY_LEN,
                r.after.len()
            )));
        }
        let log = self.ctx.resolve_typed(&r.log, LogType::Feed, "ReadFeed")?.log_id;
        let as_of = as_of(r.as_of)?;
        let page = self
            .ctx
            .blocking(move |store| {
                let after = (!r.after.is_empty()).then_some(r.after.as_slice());
                match as_of {
                    None => store.read_feed(&log, after, limit, r.tail),
                    Some(point) => {
                        let seq = store.resolve_as_of(&log, point)?;
                        store.read_feed_as_of(&log, after, limit, r.tail, seq)
                    }
                }
            })
            .await?;
        let items = page
            .items
            .into_iter()
            .map(|row| pb::FeedItem {
                value: row.value,
                clock: Some(row.id.clock().into()),
                entry_hash: row.id.entry.0.to_vec(),
                op_index: row.id.index,
                position: row.id.to_sort_key().to_vec(),
            })
            .collect();
        Ok(pb::ReadFeedResponse { items, more: page.more, next_after: page.next_after.unwrap_or_default() })
    }

    async fn edges(&self, r: pb::EdgesRequest) -> ReplicaResult<pb::EdgesResponse> {
        bounded("node", &r.node, NODE_BYTES_MAX)?;
        optional_bounded("label", r.label.as_bytes(), LABEL_BYTES_MAX)?;
        let limit = page_limit(r.limit)?;
        let direction = match pb::Direction::try_from(r.direction) {
            Ok(pb::Direction::Unspecified | pb::Direction::Out) => Direction::Out,
            Ok(pb::Direction::In) => Direction::In,
            Err(_) => {
                return Err(ReplicaError::Invalid(format!(
                    "direction {} is not DIRECTION_OUT or DIRECTION_IN",
                    r.direction
                )));
            }
        };
        let log = self.ctx.resolve_typed(&r.log, LogType::Graph, "Edges")?.log_id;
        if r.after.len() > plait_core::limits::NODE_BYTES_MAX * 2 + LABEL_BYTES_MAX + 64 {
            return Err(ReplicaError::Invalid(format!(
                "after is {} bytes: it must be the next_after of an earlier page",
                r.after.len()
            )));
        }
        let as_of = as_of(r.as_of)?;
        let page = self
            .ctx
            .blocking(move |store| {
                let label = (!r.label.is_empty()).then_some(r.label.as_str());
                let after = (!r.after.is_empty()).then_some(r.after.as_slice());
                match as_of {
                    None => store.edges(&log, &r.node, direction, label, after, limit),
                    Some(point) => {
                        let seq = store.resolve_as_of(&log, point)?;
                        store.edges_as_of(&log, &r.node, direction, label, after, limit, seq)
                    }
                }
            })
            .await?;
        let edges = page
            .edges
            .into_iter()
            .map(|e| pb::Edge {
                src: e.src,
                label: e.label,
                dst: e.dst,
                props: e.props,
                clock: Some(e.id.clock().into()),
            })
            .collect();
        Ok(pb::EdgesResponse { edges, next_after: page.next_after.unwrap_or_default() })
    }

    async fn history(&self, r: pb::HistoryRequest) -> ReplicaResult<pb::HistoryResponse> {
        let limit = page_limit(r.limit)?;
        if r.after.len() > plait_core::limits::NODE_BYTES_MAX * 2 + LABEL_BYTES_MAX + 64 {
            return Err(ReplicaError::Invalid(format!(
                "after is {} bytes: it must be the next_after of an earlier page",
                r.after.len()
            )));
        }
        let after = (!r.after.is_empty()).then_some(r.after);
        let versions = |page: plait_store::VersionPage| pb::HistoryResponse {
            versions: page
                .versions
                .into_iter()
                .map(|v| pb::Version {
                    seq: v.seq,
                    entry_hash: v.id.entry.0.to_vec(),
                    op_index: v.id.index,
                    clock: Some(v.id.clock().into()),
                    live: v.value.is_some(),
                    value: v.value.unwrap_or_default(),
                })
                .collect(),
            entries: Vec::new(),
            next_after: page.next_after.unwrap_or_default(),
        };
        match r.target {
            None => {
                Err(ReplicaError::Invalid("History needs a target: a key, an edge or a writer range".into()))
            }
            Some(pb::history_request::Target::Key(key)) => {
                bounded("key", &key, KEY_BYTES_MAX)?;
                let log = self.ctx.resolve_typed(&r.log, LogType::Kv, "History of a key")?.log_id;
                let page = self
                    .ctx
                    .blocking(move |store| store.kv_history(&log, &key, after.as_deref(), limit))
                    .await?;
                Ok(versions(page))
            }
            Some(pb::history_request::Target::Edge(edge)) => {
                bounded("edge.src", &edge.src, NODE_BYTES_MAX)?;
                bounded("edge.dst", &edge.dst, NODE_BYTES_MAX)?;
                bounded("edge.label", edge.label.as_bytes(), LABEL_BYTES_MAX)?;
                let log = self.ctx.resolve_typed(&r.log, LogType::Graph, "History of an edge")?.log_id;
                let page = self
                    .ctx
                    .blocking(move |store| {
                        store.edge_history(&log, (&edge.src, &edge.label, &edge.dst), after.as_deref(), limit)
                    })
                    .await?;
                Ok(versions(page))
            }
            Some(pb::history_request::Target::Writer(range)) => {
                let writer = convert::public_key("writer.writer", &range.writer)?;
                let summary = self.ctx.resolve(&r.log)?;
                let log = summary.log_id;
                let to = if range.to == 0 { summary.seq } else { range.to };
                if range.from > to {
                    return Err(ReplicaError::Invalid(format!(
                        "writer.from {} is after writer.to {to}",
                        range.from
                    )));
                }
                let from = match &after {
                    None => range.from,
                    Some(a) => {
                        let next =
                            <[u8; 8]>::try_from(a.as_slice()).map(u64::from_be_bytes).map_err(|_| {
                                ReplicaError::Invalid(
                                    "after must be the next_after of an earlier page".into(),
                                )
                            })?;
                        if next < range.from || next > to {
                            return Err(ReplicaError::Invalid(format!(
                                "after names seq {next}, outside the range {} to {to}",
                                range.from
                            )));
                        }
                        next
                    }
                };
                let page = self
                    .ctx
                    .blocking(move |store| store.writer_entries(&log, &writer, from, to, limit))
                    .await?;
                Ok(pb::HistoryResponse {
                    versions: Vec::new(),
                    entries: page
                        .entries
                        .into_iter()
                        .map(|e| pb::WriterEntry {
                            seq: e.seq,
                            entry_hash: e.hash.0.to_vec(),
                            clock: Some(plait_core::Clock { time: e.time, writer }.into()),
                            op_count: e.ops,
                        })
                        .collect(),
                    next_after: page.next_seq.map(|s| s.to_be_bytes().to_vec()).unwrap_or_default(),
                })
            }
        }
    }

    async fn get_entry(&self, r: pb::GetEntryRequest) -> ReplicaResult<pb::Entry> {
        let hash = convert::entry_hash("hash", &r.hash)?;
        let stored = self.ctx.blocking(move |store| store.get_entry(&hash)).await?;
        let stored =
            stored.ok_or_else(|| ReplicaError::NotFound(format!("no entry {hash} on this replica")))?;
        Ok(convert::entry_to_pb(&stored.entry, stored.seq))
    }

    async fn heads(&self, r: pb::HeadsRequest) -> ReplicaResult<pb::HeadsResponse> {
        let summary = self.ctx.resolve(&r.log)?;
        let log = summary.log_id;
        let heads = self.ctx.blocking(move |store| store.heads(&log)).await?;
        Ok(pb::HeadsResponse {
            log_id: log.0.to_vec(),
            heads: heads
                .iter()
                .map(|h| pb::Head { hash: h.entry.hash().0.to_vec(), clock: Some(h.entry.clock().into()) })
                .collect(),
            seq: summary.seq,
        })
    }

    /// Commits `seq` for consumer `name` of the log, within the limit per log.
    async fn commit(&self, summary: &LogSummary, name: &str, seq: u64) -> ReplicaResult<()> {
        let limit = self.ctx.consumers_per_log;
        if self.ctx.store.commit_consumer(summary.log_id, name, seq, limit).await? {
            tracing::info!(log = %summary.manifest.manifest().name, consumer = %name, seq, "consumer created");
        }
        Ok(())
    }

    async fn commit_consumer(&self, r: pb::CommitConsumerRequest) -> ReplicaResult<pb::ConsumerInfo> {
        let summary = self.ctx.resolve(&r.log)?;
        self.commit(&summary, &r.consumer, r.seq).await?;
        // The seq only grows, so the lag is read after the commit.
        let seq = self.ctx.store.log(&summary.log_id).map_or(summary.seq, |s| s.seq);
        Ok(pb::ConsumerInfo { name: r.consumer, committed_seq: r.seq, lag: seq.saturating_sub(r.seq) })
    }

    async fn delete_consumer(
        &self,
        r: pb::DeleteConsumerRequest,
    ) -> ReplicaResult<pb::DeleteConsumerResponse> {
        let summary = self.ctx.resolve(&r.log)?;
        self.ctx.store.delete_consumer(summary.log_id, &r.consumer).await?;
        tracing::info!(log = %summary.manifest.manifest().name, consumer = %r.consumer, "consumer deleted");
        Ok(pb::DeleteConsumerResponse {})
    }

    fn list_consumers(&self, r: pb::ListConsumersRequest) -> ReplicaResult<pb::ListConsumersResponse> {
        let summary = self.ctx.resolve(&r.log)?;
        Ok(pb::ListConsumersResponse {
            consumers: consumer_infos(&self.ctx.store, &summary),
            limit: u32::try_from(self.ctx.consumers_per_log).unwrap_or(u32::MAX),
        })
    }

    async fn subscribe(&self, r: pb::SubscribeRequest) -> ReplicaResult<SubscribeStream> {
        let summary = self.ctx.resolve(&r.log)?;
        let permit = self.ctx.subscriptions.clone().try_acquire_owned().map_err(|_| {
            ReplicaError::ResourceExhausted(
                "too many open subscriptions on this replica; close some or try another replica".into(),
            )
        })?;
        let log = summary.log_id;
        // A durable consumer resumes after its committed seq; a new one is committed at
        // after_seq first, so that a restart of either side resumes there too.
        let after_seq = if r.consumer.is_empty() {
            r.after_seq
        } else {
            plait_store::check_consumer_name(&r.consumer)?;
            match self.ctx.store.consumer(&log, &r.consumer) {
                Some(committed) => committed,
                None => {
                    self.commit(&summary, &r.consumer, r.after_seq).await?;
                    r.after_seq
                }
            }
        };
        let mut seq_watch = self.ctx.store.watch_seq(&log)?;
        let mut shutdown = self.ctx.shutdown.clone();
        let (tx, rx) = tokio::sync::mpsc::channel(SUBSCRIBE_BUFFER);
        let ctx = self.ctx.clone();
        tokio::spawn(async move {
            let _permit = permit;
            let mut cursor = after_seq;
            // The stream is the tonic boundary of this task: its errors become statuses
            // as they are sent.
            let fail = |e: ReplicaError| -> Result<pb::AppliedOp, Status> { Err(e.into()) };
            loop {
                // Only what is durable: a committed batch is readable a moment before its
                // fsync, and a crash in that moment would take back what was delivered.
                let durable = *seq_watch.borrow();
                let page = ctx
                    .blocking(move |store| {
                        let mut page = store.entries_after(
                            &log,
                            cursor,
                            SUBSCRIBE_PAGE_ENTRIES,
                            SUBSCRIBE_PAGE_BYTES,
                        )?;
                        page.retain(|e| e.seq <= durable);
                        let runs = match (page.first(), page.last()) {
                            (Some(first), Some(last)) => store.origins(&log, first.seq, last.seq)?,
                            _ => Vec::new(),
                        };
                        Ok::<_, ReplicaError>((page, runs))
                    })
                    .await;
                let (page, runs) = match page {
                    Ok(p) => p,
                    Err(e) => {
                        let _ = tx.send(fail(e)).await;
                        return;
                    }
                };
                let mut runs = runs.into_iter().peekable();
                for stored in &page {
                    while runs.next_if(|run| run.last < stored.seq).is_some() {}
                    let origin = match runs.peek() {
                        Some(run) if run.first <= stored.seq => origin_to_pb(run.origin),
                        _ => origin_to_pb(plait_store::Origin::Unknown),
                    };
                    let entry_ops = u32::try_from(stored.entry.entry().ops.len()).unwrap_or(u32::MAX);
                    for (id, op) in stored.entry.op_ids() {
                        let applied = pb::AppliedOp {
                            seq: stored.seq,
                            entry_hash: id.entry.0.to_vec(),
                            op_index: id.index,
                            clock: Some(id.clock().into()),
                            op: Some(op.into()),
                            position: id.to_sort_key().to_vec(),
                            origin: Some(origin.clone()),
                            entry_ops,
                        };
                        if tx.send(Ok(applied)).await.is_err() {
                            return; // The client went away.
                        }
                    }
                    cursor = stored.seq;
                }
                if !page.is_empty() {
                    continue;
                }
                if !r.follow {
                    return;
                }
                // Wait until something past the cursor is durable, the log is dropped, the
                // client leaves or the server shuts down.
                tokio::select! {
                    // The watch guards are dropped inside these blocks: they must not
                    // live across an await.
                    alive = async { seq_watch.wait_for(|seq| *seq > cursor).await.is_ok() } => {
                        if !alive {
                            let _ = tx.send(fail(ReplicaError::NotFound("the log was dropped".into()))).await;
                            return;
                        }
                    }
                    _ = async { shutdown.wait_for(|stop| *stop).await.is_ok() } => {
                        let stopping = ReplicaError::Unavailable(
                            "the replica is shutting down; resubscribe from your last seq".into(),
                        );
                        let _ = tx.send(fail(stopping)).await;
                        return;
                    }
                    _ = tx.closed() => return,
                }
            }
        });
        Ok(ReceiverStream::new(rx))
    }
}

type SubscribeStream = ReceiverStream<Result<pb::AppliedOp, Status>>;

/// The tonic boundary: each RPC runs the method of the same name above, whose
/// `ReplicaError` becomes a status in `status.rs`.
#[tonic::async_trait]
impl pb::data_server::Data for DataService {
    async fn append(&self, request: Request<pb::AppendRequest>) -> Result<Response<pb::WriteAck>, Status> {
        let principal = Principal::of(&request);
        let r = request.into_inner();
        reply(self.write_one(&principal, &r.log, Op::Append { value: r.value }, r.concern).await)
    }

    async fn put(&self, request: Request<pb::PutRequest>) -> Result<Response<pb::WriteAck>, Status> {
        let principal = Principal::of(&request);
        let r = request.into_inner();
        reply(self.write_one(&principal, &r.log, Op::Put { key: r.key, value: r.value }, r.concern).await)
    }

    async fn delete(&self, request: Request<pb::DeleteRequest>) -> Result<Response<pb::WriteAck>, Status> {
        let principal = Principal::of(&request);
        let r = request.into_inner();
        reply(self.write_one(&principal, &r.log, Op::Delete { key: r.key }, r.concern).await)
    }

    async fn link(&self, request: Request<pb::LinkRequest>) -> Result<Response<pb::WriteAck>, Status> {
        let principal = Principal::of(&request);
        let r = request.into_inner();
        let op = Op::Link { src: r.src, label: r.label, dst: r.dst, props: r.props };
        reply(self.write_one(&principal, &r.log, op, r.concern).await)
    }

    async fn unlink(&self, request: Request<pb::UnlinkRequest>) -> Result<Response<pb::WriteAck>, Status> {
        let principal = Principal::of(&request);
        let r = request.into_inner();
        reply(
            self.write_one(
                &principal,
                &r.log,
                Op::Unlink { src: r.src, label: r.label, dst: r.dst },
                r.concern,
            )
            .await,
        )
    }

    async fn write(&self, request: Request<pb::WriteRequest>) -> Result<Response<pb::WriteResponse>, Status> {
        let principal = Principal::of(&request);
        reply(self.write(&principal, request.into_inner()).await)
    }

    async fn submit(
        &self,
        request: Request<pb::SubmitRequest>,
    ) -> Result<Response<pb::SubmitResponse>, Status> {
        let principal = Principal::of(&request);
        reply(self.submit(&principal, request.into_inner()).await)
    }

    async fn get(&self, request: Request<pb::GetRequest>) -> Result<Response<pb::GetResponse>, Status> {
        reply(self.get(request.into_inner()).await)
    }

    async fn scan(&self, request: Request<pb::ScanRequest>) -> Result<Response<pb::ScanResponse>, Status> {
        reply(self.scan(request.into_inner()).await)
    }

    async fn read_feed(
        &self,
        request: Request<pb::ReadFeedRequest>,
    ) -> Result<Response<pb::ReadFeedResponse>, Status> {
        reply(self.read_feed(request.into_inner()).await)
    }

    async fn edges(&self, request: Request<pb::EdgesRequest>) -> Result<Response<pb::EdgesResponse>, Status> {
        reply(self.edges(request.into_inner()).await)
    }

    async fn history(
        &self,
        request: Request<pb::HistoryRequest>,
    ) -> Result<Response<pb::HistoryResponse>, Status> {
        reply(self.history(request.into_inner()).await)
    }

    async fn get_entry(&self, request: Request<pb::GetEntryRequest>) -> Result<Response<pb::Entry>, Status> {
        reply(self.get_entry(request.into_inner()).await)
    }

    async fn heads(&self, request: Request<pb::HeadsRequest>) -> Result<Response<pb::HeadsResponse>, Status> {
        reply(self.heads(request.into_inner()).await)
    }

    async fn commit_consumer(
        &self,
        request: Request<pb::CommitConsumerRequest>,
    ) -> Result<Response<pb::ConsumerInfo>, Status> {
        reply(self.commit_consumer(request.into_inner()).await)
    }

    async fn delete_consumer(
        &self,
        request: Request<pb::DeleteConsumerRequest>,
    ) -> Result<Response<pb::DeleteConsumerResponse>, Status> {
        reply(self.delete_consumer(request.into_inner()).await)
    }

    async fn list_consumers(
        &self,
        request: Request<pb::ListConsumersRequest>,
    ) -> Result<Response<pb::ListConsumersResponse>, Status> {
        reply(self.list_consumers(request.into_inner()))
    }

    type SubscribeStream = SubscribeStream;

    async fn subscribe(
        &self,
        request: Request<pb::SubscribeRequest>,
    ) -> Result<Response<Self::SubscribeStream>, Status> {
        reply(self.subscribe(request.into_inner()).await)
    }
}

/// Where this replica got an entry, as Subscribe delivers it.
fn origin_to_pb(origin: plait_store::Origin) -> pb::Origin {
    use plait_store::Origin;
    let (kind, peer) = match origin {
        Origin::Unknown => (pb::OriginKind::Unknown, Vec::new()),
        Origin::Local => (pb::OriginKind::Local, Vec::new()),
        Origin::Submitted => (pb::OriginKind::Submitted, Vec::new()),
        Origin::Peer(node) => (pb::OriginKind::Peer, node.0.to_vec()),
        Origin::Restored => (pb::OriginKind::Restored, Vec::new()),
    };
    pb::Origin { kind: kind as i32, peer_node_id: peer }
}
