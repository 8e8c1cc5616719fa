//! `plait.v1.Admin`: the replica's view of itself and its peers, membership updates from
//! the operator, and drain before removal.

use std::sync::Arc;
use std::sync::atomic::Ordering;
use std::time::{Duration, Instant};

use plait_proto::convert::checkpoint_to_pb;
use plait_proto::pb;
use plait_store::Members;
use tonic::{Request, Response, Status};

use super::{Ctx, log_info};
use crate::auth::Principal;
use crate::error::{ReplicaError, ReplicaResult};
use crate::replication::DigestCheck;
use crate::status::reply;

/// Bytes per chunk of an exported snapshot stream, and chunks buffered.
const EXPORT_CHUNK_BYTES: usize = 1024 * 1024;
const EXPORT_CHUNKS_BUFFERED: usize = 4;
/// The highest member-list generation: far beyond any real count of updates, and low
/// enough that no caller can set one that no later update could pass (and that fits the
/// operator's status field).
const MEMBERS_GENERATION_MAX: u64 = 1 << 53;
/// Most members one SetMembers may name, and the longest address.
const MEMBERS_MAX: usize = 1024;
const ADDRESS_BYTES_MAX: usize = 255;
const DRAIN_TIMEOUT_DEFAULT: Duration = Duration::from_secs(60);
/// How often a drain re-checks while it waits: new entries may arrive by replication
/// without any peer's holdings changing.
const DRAIN_RECHECK: Duration = Duration::from_millis(250);

pub(crate) struct AdminService {
    pub(crate) ctx: Ctx,
}

impl AdminService {
    fn peers(&self) -> Vec<pb::PeerStatus> {
        let names: std::collections::HashMap<_, _> = self
            .ctx
            .store
            .logs()
            .into_iter()
            .map(|s| (s.log_id, s.manifest.manifest().name.clone()))
            .collect();
        self.ctx
            .membership
            .table
            .snapshot()
            .into_iter()
            .map(|(address, info)| {
                let mut logs: Vec<pb::PeerLogStatus> = info
                    .logs
                    .iter()
                    .map(|(log, (cursor, peer_seq))| pb::PeerLogStatus {
                        log_id: log.0.to_vec(),
                        name: names.get(log).cloned().unwrap_or_default(),
                        cursor: *cursor,
                        peer_seq: *peer_seq,
                        lag: peer_seq.saturating_sub(*cursor),
                        peer_holds: info.node_id.map_or(0, |n| self.ctx.holds.held_by(&n, log)),
                        verified_seq: match info.digests.get(log) {
                            Some(DigestCheck::Equal { seq }) => *seq,
                            _ => 0,
                        },
                        digest_mismatch: info.digests.get(log) == Some(&DigestCheck::Mismatch),
                    })
                    .collect();
                logs.sort_by(|a, b| a.name.cmp(&b.name));
                pb::PeerStatus {
                    address,
                    node_id: info.node_id.map(|n| n.0.to_vec()).unwrap_or_default(),
                    epoch: info.epoch.map(|e| e.to_vec()).unwrap_or_default(),
                    connected: info.connected,
                    last_contact_ms_ago: info.last_contact.map_or(0, |t| t.elapsed().as_millis() as u64),
                    last_error: info.last_error,
                    logs,
                    source: info.source.to_owned(),
                }
            })
            .collect()
    }

    /// The replica's state and who the caller is. Any authenticated caller may ask who
    /// it is; the logs and peers are shown only to callers that may read or administer.
    async fn status(&self, principal: &Principal) -> ReplicaResult<pb::StatusResponse> {
        let ctx = &self.ctx;
        let details = principal.grants.read || principal.grants.cluster_admin;
        let disk_bytes = ctx.blocking(|store| Ok::<_, ReplicaError>(store.disk_bytes())).await?;
        let members_generation = ctx.blocking(|store| store.members()).await?.generation;
        let not_ready = ctx.state.readiness.not_ready();
        Ok(pb::StatusResponse {
            node_id: ctx.node_key.public().0.to_vec(),
            writer: ctx.store.writer_key().public().0.to_vec(),
            epoch: ctx.store.epoch().to_vec(),
            version: env!("CARGO_PKG_VERSION").to_owned(),
            uptime_ms: ctx.started.elapsed().as_millis() as u64,
            logs: if details {
                ctx.store.logs().iter().map(|s| log_info(&ctx.store, s)).collect()
            } else {
                Vec::new()
            },
            disk_bytes,
            writable: ctx.store.is_writable(),
            peers: if details { self.peers() } else { Vec::new() },
            members_generation,
            draining: ctx.state.draining.load(Ordering::SeqCst),
            ready: not_ready.is_none(),
            not_ready_reason: not_ready.unwrap_or_default(),
            principal: principal.name.to_string(),
            authenticated_by: principal.proof.as_str().to_owned(),
            roles: principal.grants.roles(),
            backup_destinations: if details { ctx.backups.names() } else { Vec::new() },
            logs_created: ctx.store.logs_created_by(&principal.identity()) as u64,
            logs_quota: principal.logs_quota(ctx.logs_per_principal).map(|q| q as u64),
        })
    }

    async fn set_members(&self, r: pb::SetMembersRequest) -> ReplicaResult<pb::SetMembersResponse> {
        if r.generation == 0 || r.generation > MEMBERS_GENERATION_MAX {
            return Err(ReplicaError::Invalid(format!(
                "generation must be from 1 to {MEMBERS_GENERATION_MAX}: a higher one would leave no room for \
                 later updates"
            )));
        }
        if r.members.len() > MEMBERS_MAX {
            return Err(ReplicaError::Invalid(format!("at most {MEMBERS_MAX} members")));
        }
        for (i, m) in r.members.iter().enumerate() {
            if m.is_empty() || m.len() > ADDRESS_BYTES_MAX || m.chars().any(|c| c.is_whitespace()) {
                return Err(ReplicaError::Invalid(format!(
                    "members[{i}] must be a host:port address of 1 to {ADDRESS_BYTES_MAX} characters without spaces"
                )));
            }
        }
        let mut addresses = r.members;
        addresses.sort();
        addresses.dedup();
        self.ctx.store.set_members(Members { generation: r.generation, addresses }).await?;
        tracing::info!(generation = r.generation, "membership updated");
        self.ctx.membership.changed();
        Ok(pb::SetMembersResponse { generation: r.generation })
    }

    async fn checkpoint(&self, r: pb::CheckpointRequest) -> ReplicaResult<pb::CheckpointInfo> {
        let log = self.ctx.resolve(&r.log)?.log_id;
        let checkpoint = self.ctx.store.checkpoint(log).await?;
        Ok(checkpoint_to_pb(&checkpoint))
    }

    async fn export_snapshot(&self, r: pb::ExportSnapshotRequest) -> ReplicaResult<ExportStream> {
        let log = self.ctx.resolve(&r.log)?.log_id;
        let base = (r.base_seq > 0).then_some(r.base_seq);
        if let Some(seq) = base
            && !self.ctx.blocking(move |store| store.checkpoints(&log)).await?.iter().any(|c| c.seq == seq)
        {
            return Err(ReplicaError::FailedPrecondition(format!(
                "no checkpoint at seq {seq} for this log here; export a full snapshot or use a recorded checkpoint"
            )));
        }
        let (tx, rx) = tokio::sync::mpsc::channel(EXPORT_CHUNKS_BUFFERED);
        let store = self.ctx.store.clone();
        tokio::spawn(async move {
            let sink_tx = tx.clone();
            let pending = std::sync::Arc::new(std::sync::Mutex::new(Vec::with_capacity(EXPORT_CHUNK_BYTES)));
            let sink_pending = pending.clone();
            let result = store
                .export(log, base, move |bytes| {
                    let mut buffer = sink_pending.lock().expect("export buffer lock");
                    buffer.extend_from_slice(&bytes);
                    if buffer.len() >= EXPORT_CHUNK_BYTES {
                        let chunk = std::mem::take(&mut *buffer);
                        sink_tx.blocking_send(Ok(pb::SnapshotChunk { data: chunk })).map_err(|_| {
                            plait_store::StoreError::Unavailable("the client went away".into())
                        })?;
                    }
                    Ok(())
                })
                .await;
            match result {
                Ok(_) => {
                    let rest = std::mem::take(&mut *pending.lock().expect("export buffer lock"));
                    if !rest.is_empty() {
                        let _ = tx.send(Ok(pb::SnapshotChunk { data: rest })).await;
                    }
                }
                Err(e) => {
                    // The stream is this task's tonic boundary.
                    let _ = tx.send(Err(ReplicaError::from(e).into())).await;
                }
            }
        });
        Ok(tokio_stream::wrappers::ReceiverStream::new(rx))
    }

    async fn import_snapshot(
        &self,
        mut stream: tonic::Streaming<pb::SnapshotChunk>,
    ) -> ReplicaResult<pb::ImportSnapshotResponse> {
        let _permit = self.ctx.imports.clone().try_acquire_owned().map_err(|_| {
            ReplicaError::ResourceExhausted(
                "as many imports as this replica serves at once are running (--imports-max); try again later"
                    .into(),
            )
        })?;
        if let Some(why) = self.ctx.store.disk_low_reason() {
            return Err(ReplicaError::ResourceExhausted(format!("cannot stage a snapshot: {why}")));
        }
        let dir = self.ctx.data_dir.join("tmp");
        std::fs::create_dir_all(&dir).map_err(|e| ReplicaError::io("cannot stage the snapshot", e))?;
        let file = dir.join(format!("import-{}.snap", rand::random::<u64>()));
        let mut staged_bytes = 0u64;
        let staged = self.stage(&mut stream, &file, &mut staged_bytes).await;
        let report = match staged {
            Ok(()) => self.ctx.store.import_file(file.clone()).await.map_err(ReplicaError::from),
            Err(e) => Err(e),
        };
        let _ = tokio::fs::remove_file(&file).await;
        self.ctx.import_staging.give(staged_bytes);
        let report = report?;
        let kind = match report.kind {
            plait_store::RestoreKind::Full => "full",
            plait_store::RestoreKind::Merge => "merge",
            plait_store::RestoreKind::Delta => "delta",
            plait_store::RestoreKind::UpToDate => "up_to_date",
        };
        tracing::info!(log = %report.log, kind, entries = report.entries_stored, "snapshot imported");
        Ok(pb::ImportSnapshotResponse {
            log_id: report.log.0.to_vec(),
            kind: kind.into(),
            checkpoint: Some(checkpoint_to_pb(&report.checkpoint)),
            entries_read: report.entries_read,
            entries_stored: report.entries_stored,
        })
    }

    /// Spools an import stream to `file`, within the import's byte bound, the staging
    /// quota, the disk's floor and a per-chunk deadline; `staged` counts the quota taken.
    async fn stage(
        &self,
        stream: &mut tonic::Streaming<pb::SnapshotChunk>,
        file: &std::path::Path,
        staged: &mut u64,
    ) -> ReplicaResult<()> {
        use tokio::io::AsyncWriteExt;
        let io = |e: std::io::Error| ReplicaError::io("receiving the snapshot failed", e);
        let mut out = tokio::fs::File::create(file).await.map_err(io)?;
        let mut since_check = 0u64;
        loop {
            let next = tokio::time::timeout(IMPORT_CHUNK_TIMEOUT, stream.message()).await.map_err(|_| {
                ReplicaError::DeadlineExceeded(format!(
                    "no snapshot data for {} s; the import is abandoned",
                    IMPORT_CHUNK_TIMEOUT.as_secs()
                ))
            })?;
            let Some(chunk) = next.map_err(|e| io(std::io::Error::other(e)))? else { break };
            let len = chunk.data.len() as u64;
            if *staged + len > self.ctx.import_bytes_max {
                return Err(ReplicaError::ResourceExhausted(format!(
                    "the snapshot is over {} bytes, this replica's limit for one import (--import-bytes-max)",
                    self.ctx.import_bytes_max
                )));
            }
            self.ctx.import_staging.take(len).map_err(|max| {
                ReplicaError::ResourceExhausted(format!(
                    "imports in flight already stage {max} bytes, the limit (--import-staging-bytes-max); \
                     try again later"
                ))
            })?;
            *staged += len;
            since_check += len;
            if since_check >= IMPORT_DISK_CHECK_BYTES {
                since_check = 0;
                if let Some(why) = self.ctx.store.disk_low_reason() {
                    return Err(ReplicaError::ResourceExhausted(format!("cannot stage the snapshot: {why}")));
                }
            }
            out.write_all(&chunk.data).await.map_err(io)?;
        }
        out.flush().await.map_err(io)
    }

    /// Checks a backup request and picks what it backs up: the destination (by name only:
    /// a caller never chooses where the replica writes) and the logs.
    fn prepare_backup(
        &self,
        r: &pb::BackupRequest,
    ) -> ReplicaResult<(Arc<crate::backup::Destination>, Vec<plait_store::LogSummary>)> {
        let dest = self.ctx.backups.resolve(&r.destination)?;
        let logs = if r.logs.is_empty() {
            self.ctx.store.logs()
        } else {
            r.logs.iter().map(|l| self.ctx.resolve(l)).collect::<Result<Vec<_>, _>>()?
        };
        Ok((dest, logs))
    }

    async fn backup(&self, r: pb::BackupRequest) -> ReplicaResult<pb::BackupResponse> {
        let (dest, logs) = self.prepare_backup(&r)?;
        run_backup(&self.ctx, &r, &dest, logs, &crate::backup_jobs::BackupProgress::default()).await
    }

    /// Admits the job and, when it is new, runs it in a task of its own; answers at once.
    /// A request that names no known destination or log is refused here, and nothing is
    /// remembered of it.
    async fn start_backup(&self, r: pb::StartBackupRequest) -> ReplicaResult<pb::BackupJob> {
        let request = r.backup.unwrap_or_default();
        crate::backup_jobs::check_job_id(&r.job_id)?;
        let (dest, logs) = self.prepare_backup(&request)?;
        let job = match self.ctx.backup_jobs.admit(&r.job_id, &request)? {
            crate::backup_jobs::Admitted::Existing(job) => return Ok(job.report()),
            crate::backup_jobs::Admitted::New(job) => job,
        };
        tracing::info!(job = %r.job_id, destination = %request.destination, logs = logs.len(), "backup job started");
        let ctx = self.ctx.clone();
        let running = job.clone();
        let id = r.job_id;
        tokio::spawn(async move {
            let outcome = run_backup(&ctx, &request, &dest, logs, &running.progress).await;
            let ending = match outcome {
                Ok(response) => {
                    tracing::info!(job = %id, backup = %response.backup_id, "backup job completed");
                    crate::backup_jobs::Ending::Completed(response)
                }
                Err(e) => {
                    let status = crate::status::to_status(e);
                    tracing::warn!(job = %id, "backup job failed: {}", status.message());
                    crate::backup_jobs::Ending::Failed {
                        code: status.code() as i32,
                        message: status.message().to_owned(),
                    }
                }
            };
            running.end(ending);
        });
        Ok(job.report())
    }

    async fn get_backup_job(&self, r: pb::GetBackupJobRequest) -> ReplicaResult<pb::BackupJob> {
        Ok(self.ctx.backup_jobs.get(&r.job_id)?.report())
    }

    async fn drain(&self, r: pb::DrainRequest) -> ReplicaResult<pb::DrainResponse> {
        let timeout_ms = r.timeout_ms;
        let timeout = if timeout_ms == 0 {
            DRAIN_TIMEOUT_DEFAULT
        } else {
            Duration::from_millis(u64::from(timeout_ms))
        };
        if r.cancel {
            if self.ctx.state.draining.swap(false, Ordering::SeqCst) {
                tracing::info!("drain cancelled: accepting local writes again");
            }
            return Ok(pb::DrainResponse { logs: Vec::new() });
        }
        let deadline = Instant::now() + timeout;
        if !self.ctx.state.draining.swap(true, Ordering::SeqCst) {
            tracing::info!("draining: refusing local writes until removed");
        }
        let mut changes = self.ctx.holds.subscribe();
        loop {
            if !self.ctx.state.draining.load(Ordering::SeqCst) {
                return Err(ReplicaError::FailedPrecondition(
                    "the drain was cancelled while this call waited; the replica accepts writes".into(),
                ));
            }
            let members = self.ctx.membership.table.node_ids();
            let mut done = Vec::new();
            let mut waiting = Vec::new();
            for summary in self.ctx.store.logs() {
                let holders = self.ctx.holds.holders(&summary.log_id, summary.seq);
                // Only a current member counts: not an edge node, not a caller that only
                // claims to be one (holds are recorded for proven node ids only).
                let holder = holders.iter().find(|h| members.contains(h));
                match holder {
                    Some(h) => done.push(pb::DrainedLog {
                        log_id: summary.log_id.0.to_vec(),
                        name: summary.manifest.manifest().name.clone(),
                        seq: summary.seq,
                        held_by: h.0.to_vec(),
                    }),
                    None if summary.seq == 0 => done.push(pb::DrainedLog {
                        log_id: summary.log_id.0.to_vec(),
                        name: summary.manifest.manifest().name.clone(),
                        seq: 0,
                        held_by: Vec::new(),
                    }),
                    None => {
                        waiting.push(format!("{} (seq {})", summary.manifest.manifest().name, summary.seq))
                    }
                }
            }
            if waiting.is_empty() {
                return Ok(pb::DrainResponse { logs: done });
            }
            let remaining = deadline.saturating_duration_since(Instant::now());
            if remaining.is_zero() {
                return Err(ReplicaError::DeadlineExceeded(format!(
                    "not every entry is held by another member yet: {}; the replica stays draining, call Drain again",
                    waiting.join(", ")
                )));
            }
            let _ = tokio::time::timeout(remaining.min(DRAIN_RECHECK), changes.changed()).await;
        }
    }
}

/// Longest wait for the next chunk of an import before it is abandoned.
const IMPORT_CHUNK_TIMEOUT: Duration = Duration::from_secs(60);
/// How often, in staged bytes, an import checks the disk's free-space floor again.
const IMPORT_DISK_CHECK_BYTES: u64 = 64 * 1024 * 1024;

type ExportStream = tokio_stream::wrappers::ReceiverStream<Result<pb::SnapshotChunk, Status>>;

/// The tonic boundary: each RPC runs the method of the same name above, whose
/// `ReplicaError` becomes a status in `status.rs`.
#[tonic::async_trait]
impl pb::admin_server::Admin for AdminService {
    async fn status(
        &self,
        request: Request<pb::StatusRequest>,
    ) -> Result<Response<pb::StatusResponse>, Status> {
        reply(self.status(&Principal::of(&request)).await)
    }

    async fn set_members(
        &self,
        request: Request<pb::SetMembersRequest>,
    ) -> Result<Response<pb::SetMembersResponse>, Status> {
        reply(self.set_members(request.into_inner()).await)
    }

    async fn checkpoint(
        &self,
        request: Request<pb::CheckpointRequest>,
    ) -> Result<Response<pb::CheckpointInfo>, Status> {
        reply(self.checkpoint(request.into_inner()).await)
    }

    type ExportSnapshotStream = ExportStream;

    async fn export_snapshot(
        &self,
        request: Request<pb::ExportSnapshotRequest>,
    ) -> Result<Response<Self::ExportSnapshotStream>, Status> {
        reply(self.export_snapshot(request.into_inner()).await)
    }

    async fn import_snapshot(
        &self,
        request: Request<tonic::Streaming<pb::SnapshotChunk>>,
    ) -> Result<Response<pb::ImportSnapshotResponse>, Status> {
        reply(self.import_snapshot(request.into_inner()).await)
    }

    async fn backup(
        &self,
        request: Request<pb::BackupRequest>,
    ) -> Result<Response<pb::BackupResponse>, Status> {
        reply(self.backup(request.into_inner()).await)
    }

    async fn start_backup(
        &self,
        request: Request<pb::StartBackupRequest>,
    ) -> Result<Response<pb::BackupJob>, Status> {
        reply(self.start_backup(request.into_inner()).await)
    }

    async fn get_backup_job(
        &self,
        request: Request<pb::GetBackupJobRequest>,
    ) -> Result<Response<pb::BackupJob>, Status> {
        reply(self.get_backup_job(request.into_inner()).await)
    }

    async fn drain(&self, request: Request<pb::DrainRequest>) -> Result<Response<pb::DrainResponse>, Status> {
        reply(self.drain(request.into_inner()).await)
    }
}

/// Writes the backup `r` asks for (its destination and logs already resolved) and
/// reports it as `Backup` answers.
async fn run_backup(
    ctx: &Ctx,
    r: &pb::BackupRequest,
    dest: &crate::backup::Destination,
    logs: Vec<plait_store::LogSummary>,
    progress: &crate::backup_jobs::BackupProgress,
) -> ReplicaResult<pb::BackupResponse> {
    // Backup ids sort by time; wall time is fine here, it decides nothing.
    #[allow(clippy::disallowed_methods)]
    let now_ms = std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .map_or(0, |d| d.as_millis() as u64);
    let now_ms = ctx.backup_clock.next_ms(now_ms);
    let run = crate::backup::backup(
        &ctx.store,
        dest,
        crate::backup::BackupPlan { logs, delta: r.delta, retain_full: r.retain_full as usize },
        now_ms,
        &ctx.data_dir.join("tmp"),
        progress,
    )
    .await?;
    tracing::info!(
        backup = %run.backup_id,
        objects = run.written.len(),
        destination = %r.destination,
        url = %dest.url,
        "backup written"
    );
    Ok(pb::BackupResponse {
        backup_id: run.backup_id,
        objects: run
            .written
            .iter()
            .map(|(e, c)| pb::BackupObject {
                log_id: c.log.0.to_vec(),
                name: e.name.clone(),
                kind: e.kind.as_str().to_owned(),
                key: e.key.clone(),
                bytes: e.bytes,
                checkpoint: Some(checkpoint_to_pb(c)),
                base_seq: e.base_seq,
            })
            .collect(),
        deleted: run.deleted,
    })
}
