//! `plait.v1.Logs`: create, inspect, list and drop logs.

use plait_core::{Manifest, SignedManifest, Writers, valid_log_name};
use plait_proto::{convert, pb};
use tonic::{Request, Response, Status};

use super::{Ctx, log_info};
use crate::status;

pub(crate) struct LogsService {
    pub(crate) ctx: Ctx,
}

impl LogsService {
    fn manifest_from_request(&self, req: pb::CreateLogRequest) -> Result<SignedManifest, Status> {
        if !req.signed_manifest.is_empty() {
            return SignedManifest::decode_and_verify(&req.signed_manifest)
                .map_err(|e| status::from_verify("signed_manifest", e));
        }
        if !valid_log_name(&req.name) {
            return Err(Status::invalid_argument(format!(
                "name {:?} must be 1 to 128 characters of letters, digits, '.', '-' and '_' (and not 64 hex characters)",
                req.name
            )));
        }
        let log_type = convert::log_type("type", req.r#type).map_err(status::from_conversion)?;
        let mut keys = convert::public_keys("writers", &req.writers).map_err(status::from_conversion)?;
        let writers = if req.open {
            if !keys.is_empty() {
                return Err(Status::invalid_argument(
                    "an open log takes no writers: leave writers empty or open false",
                ));
            }
            Writers::Open
        } else {
            if !req.exclude_replica_writer {
                keys.push(self.ctx.store.writer_key().public());
            }
            if keys.is_empty() {
                return Err(Status::invalid_argument(
                    "nobody could write this log: give writers, or do not exclude the replica's writer key",
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
        manifest.sign(self.ctx.store.writer_key()).map_err(|e| status::from_decode("manifest", e))
    }
}

#[tonic::async_trait]
impl pb::logs_server::Logs for LogsService {
    async fn create_log(
        &self,
        request: Request<pb::CreateLogRequest>,
    ) -> Result<Response<pb::LogInfo>, Status> {
        let manifest = self.manifest_from_request(request.into_inner())?;
        if self.ctx.store.log(&manifest.log_id()).is_none() && self.ctx.store.log_count() >= self.ctx.logs_max
        {
            return Err(Status::resource_exhausted(format!(
                "this replica hosts {} logs, its limit (--logs-max); drop some or raise the limit",
                self.ctx.logs_max
            )));
        }
        let (summary, created) = self.ctx.store.create_log(manifest).await.map_err(status::from_store)?;
        if created {
            tracing::info!(log = %summary.log_id, name = %summary.manifest.manifest().name, "log created");
        }
        Ok(Response::new(log_info(&summary)))
    }

    async fn get_log(&self, request: Request<pb::GetLogRequest>) -> Result<Response<pb::LogInfo>, Status> {
        Ok(Response::new(log_info(&self.ctx.resolve(&request.into_inner().log)?)))
    }

    async fn list_logs(
        &self,
        _: Request<pb::ListLogsRequest>,
    ) -> Result<Response<pb::ListLogsResponse>, Status> {
        let logs = self.ctx.store.logs().iter().map(log_info).collect();
        Ok(Response::new(pb::ListLogsResponse { logs }))
    }

    async fn drop_log(
        &self,
        request: Request<pb::DropLogRequest>,
    ) -> Result<Response<pb::DropLogResponse>, Status> {
        let summary = self.ctx.resolve(&request.into_inner().log)?;
        self.ctx.store.drop_log(summary.log_id).await.map_err(status::from_store)?;
        tracing::info!(log = %summary.log_id, "log dropped");
        Ok(Response::new(pb::DropLogResponse { log_id: summary.log_id.0.to_vec() }))
    }
}
