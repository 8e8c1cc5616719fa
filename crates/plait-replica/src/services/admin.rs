//! `plait.v1.Admin`: the replica's view of itself and its peers, membership updates from
//! the operator, and drain before removal.

use std::sync::atomic::Ordering;
use std::time::{Duration, Instant};

use plait_proto::pb;
use plait_store::{Members, StoreError};
use tonic::{Request, Response, Status};

use super::{Ctx, log_info};
use crate::status;

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
}

#[tonic::async_trait]
impl pb::admin_server::Admin for AdminService {
    async fn status(&self, _: Request<pb::StatusRequest>) -> Result<Response<pb::StatusResponse>, Status> {
        let ctx = &self.ctx;
        let disk_bytes = ctx.blocking(|store| Ok(store.disk_bytes())).await?;
        let members_generation = ctx.store.members().map_err(status::from_store)?.generation;
        Ok(Response::new(pb::StatusResponse {
            node_id: ctx.node_key.public().0.to_vec(),
            writer: ctx.store.writer_key().public().0.to_vec(),
            epoch: ctx.store.epoch().to_vec(),
            version: env!("CARGO_PKG_VERSION").to_owned(),
            uptime_ms: ctx.started.elapsed().as_millis() as u64,
            logs: ctx.store.logs().iter().map(log_info).collect(),
            disk_bytes,
            writable: ctx.store.is_writable(),
            peers: self.peers(),
            members_generation,
            draining: ctx.state.draining.load(Ordering::SeqCst),
        }))
    }

    async fn set_members(
        &self,
        request: Request<pb::SetMembersRequest>,
    ) -> Result<Response<pb::SetMembersResponse>, Status> {
        let r = request.into_inner();
        if r.generation == 0 {
            return Err(Status::invalid_argument("generation must be at least 1"));
        }
        if r.members.len() > MEMBERS_MAX {
            return Err(Status::invalid_argument(format!("at most {MEMBERS_MAX} members")));
        }
        for (i, m) in r.members.iter().enumerate() {
            if m.is_empty() || m.len() > ADDRESS_BYTES_MAX || m.chars().any(|c| c.is_whitespace()) {
                return Err(Status::invalid_argument(format!(
                    "members[{i}] must be a host:port address of 1 to {ADDRESS_BYTES_MAX} characters without spaces"
                )));
            }
        }
        let mut addresses = r.members;
        addresses.sort();
        addresses.dedup();
        match self.ctx.store.set_members(Members { generation: r.generation, addresses }).await {
            Ok(()) => {}
            Err(StoreError::FailedPrecondition(m)) => return Err(Status::failed_precondition(m)),
            Err(e) => return Err(status::from_store(e)),
        }
        tracing::info!(generation = r.generation, "membership updated");
        self.ctx.membership.changed();
        Ok(Response::new(pb::SetMembersResponse { generation: r.generation }))
    }

    async fn drain(&self, request: Request<pb::DrainRequest>) -> Result<Response<pb::DrainResponse>, Status> {
        let timeout_ms = request.into_inner().timeout_ms;
        let timeout = if timeout_ms == 0 {
            DRAIN_TIMEOUT_DEFAULT
        } else {
            Duration::from_millis(u64::from(timeout_ms))
        };
        let deadline = Instant::now() + timeout;
        if !self.ctx.state.draining.swap(true, Ordering::SeqCst) {
            tracing::info!("draining: refusing local writes until removed");
        }
        let mut changes = self.ctx.holds.subscribe();
        loop {
            let members = self.ctx.membership.table.node_ids();
            let mut done = Vec::new();
            let mut waiting = Vec::new();
            for summary in self.ctx.store.logs() {
                let holders = self.ctx.holds.holders(&summary.log_id, summary.seq);
                let holder = holders.iter().find(|h| members.is_empty() || members.contains(h));
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
                return Ok(Response::new(pb::DrainResponse { logs: done }));
            }
            let remaining = deadline.saturating_duration_since(Instant::now());
            if remaining.is_zero() {
                return Err(Status::deadline_exceeded(format!(
                    "not every entry is held by another member yet: {}; the replica stays draining, call Drain again",
                    waiting.join(", ")
                )));
            }
            let _ = tokio::time::timeout(remaining.min(DRAIN_RECHECK), changes.changed()).await;
        }
    }
}
