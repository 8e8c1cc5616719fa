//! `plait.v1.Logs`: create, inspect, list and drop logs.

use plait_core::{Manifest, SignedManifest, Writers, valid_log_name};
use plait_proto::{convert, pb};
use tonic::{Request, Response, Status};

use plait_store::Creator;

use super::{Ctx, log_info};
use crate::auth::Principal;
use crate::error::{ReplicaError, ReplicaResult};
use crate::status::reply;

pub(crate) struct LogsService {
    pub(crate) ctx: Ctx,
}

impl LogsService {
    fn manifest_from_request(&self, req: pb::CreateLogRequest) -> ReplicaResult<SignedManifest> {
        if !req.signed_manifest.is_empty() {
            return SignedManifest::decode_and_verify(&req.signed_manifest)
                .map_err(|e| ReplicaError::from(e).context("signed_manifest"));
        }
        if !valid_log_name(&req.name) {
            return Err(ReplicaError::Invalid(format!(
                "name {:?} must be 1 to 128 characters of letters, digits, '.', '-' and '_' (and not 64 hex characters)",
                req.name
            )));
        }
        let log_type = convert::log_type("type", req.r#type)?;
        let mut keys = convert::public_keys("writers", &req.writers)?;
        let writers = if req.open {
            if !keys.is_empty() {
                return Err(ReplicaError::Invalid(
                    "an open log takes no writers: leave writers empty or open false".into(),
                ));
            }
            Writers::Open
        } else {
            if !req.exclude_replica_writer {
                keys.push(self.ctx.store.writer_key().public());
            }
            if keys.is_empty() {
                return Err(ReplicaError::Invalid(
                    "nobody could write this log: give writers, or do not exclude the replica's writer key"
                        .into(),
                ));
            }
            Writers::keys(keys)
        };
        let manifest = Manifest {
            name: req.name,
            log_type,
            writers,
            created_by: self.ctx.store.writer_key().public(),
            created_at_lamport: 0,
            options: Vec::new(),
        };
        manifest.sign(self.ctx.store.writer_key()).map_err(|e| ReplicaError::from(e).context("manifest"))
    }

    async fn create_log(
        &self,
        principal: &Principal,
        request: pb::CreateLogRequest,
    ) -> ReplicaResult<pb::LogInfo> {
        let manifest = self.manifest_from_request(request)?;
        let client_max = client_logs_max(self.ctx.logs_max);
        if self.ctx.store.log(&manifest.log_id()).is_none() && self.ctx.store.log_count() >= client_max {
            return Err(ReplicaError::ResourceExhausted(format!(
                "this replica hosts {} logs: clients may create up to {client_max} (--logs-max {} less a tenth \
                 kept for logs learned from peers); drop some or raise the limit",
                self.ctx.store.log_count(),
                self.ctx.logs_max
            )));
        }
        let creator = Creator {
            identity: principal.identity().into(),
            quota: principal.logs_quota(self.ctx.logs_per_principal),
        };
        let (summary, created) = self.ctx.store.create_log_as(manifest, creator).await?;
        if created {
            tracing::info!(
                log = %summary.log_id,
                name = %summary.manifest.manifest().name,
                creator = summary.creator.as_deref().unwrap_or(""),
                "log created"
            );
        }
        Ok(log_info(&self.ctx.store, &summary))
    }

    async fn drop_log(&self, request: pb::DropLogRequest) -> ReplicaResult<pb::DropLogResponse> {
        let summary = self.ctx.resolve(&request.log)?;
        self.ctx.store.drop_log(summary.log_id).await?;
        tracing::info!(log = %summary.log_id, "log dropped");
        Ok(pb::DropLogResponse { log_id: summary.log_id.0.to_vec() })
    }
}

/// Logs clients may create: `--logs-max` less a tenth (at least one when there is room
/// for two), kept so that logs created elsewhere can still be learned from peers however
/// many logs clients create here.
pub(crate) fn client_logs_max(logs_max: usize) -> usize {
    let reserve = if logs_max >= 2 { (logs_max / 10).max(1) } else { 0 };
    logs_max - reserve
}

/// The tonic boundary: each RPC runs the method of the same name above, whose
/// `ReplicaError` becomes a status in `status.rs`.
#[tonic::async_trait]
impl pb::logs_server::Logs for LogsService {
    async fn create_log(
        &self,
        request: Request<pb::CreateLogRequest>,
    ) -> Result<Response<pb::LogInfo>, Status> {
        let principal = Principal::of(&request);
        reply(self.create_log(&principal, request.into_inner()).await)
    }

    async fn get_log(&self, request: Request<pb::GetLogRequest>) -> Result<Response<pb::LogInfo>, Status> {
        reply(self.ctx.resolve(&request.into_inner().log).map(|s| log_info(&self.ctx.store, &s)))
    }

    async fn list_logs(
        &self,
        _: Request<pb::ListLogsRequest>,
    ) -> Result<Response<pb::ListLogsResponse>, Status> {
        let logs = self.ctx.store.logs().iter().map(|s| log_info(&self.ctx.store, s)).collect();
        Ok(Response::new(pb::ListLogsResponse { logs }))
    }

    async fn drop_log(
        &self,
        request: Request<pb::DropLogRequest>,
    ) -> Result<Response<pb::DropLogResponse>, Status> {
        reply(self.drop_log(request.into_inner()).await)
    }
}

#[cfg(test)]
mod tests {
    use super::client_logs_max;

    /// Clients leave a tenth of the log limit (at least one) to replication.
    #[test]
    fn clients_leave_room_for_replicated_logs() {
        assert_eq!(client_logs_max(1000), 900);
        assert_eq!(client_logs_max(10), 9);
        assert_eq!(client_logs_max(5), 4);
        assert_eq!(client_logs_max(2), 1);
        assert_eq!(client_logs_max(1), 1);
        assert_eq!(client_logs_max(0), 0);
    }
}
