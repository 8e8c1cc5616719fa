//! `plait.v1.Admin`: the replica's view of itself.

use plait_proto::pb;
use tonic::{Request, Response, Status};

use super::{Ctx, log_info};

pub(crate) struct AdminService {
    pub(crate) ctx: Ctx,
}

#[tonic::async_trait]
impl pb::admin_server::Admin for AdminService {
    async fn status(&self, _: Request<pb::StatusRequest>) -> Result<Response<pb::StatusResponse>, Status> {
        let ctx = &self.ctx;
        let disk_bytes = ctx.blocking(|store| Ok(store.disk_bytes())).await?;
        Ok(Response::new(pb::StatusResponse {
            node_id: ctx.node_key.public().0.to_vec(),
            writer: ctx.store.writer_key().public().0.to_vec(),
            epoch: ctx.store.epoch().to_vec(),
            version: env!("CARGO_PKG_VERSION").to_owned(),
            uptime_ms: ctx.started.elapsed().as_millis() as u64,
            logs: ctx.store.logs().iter().map(log_info).collect(),
            disk_bytes,
            writable: ctx.store.is_writable(),
        }))
    }
}
