//! The `ChunkControl` gRPC service: whole-file operations on the chunks this
//! server holds (remove on unlink, cut on truncate, fsync on fsync). Chunk
//! bytes themselves never pass here; they use `sfs_rdma`'s data path.

use super::{blocking, check_size, refuse, ServerState};
use sfs_global::FileId;
use sfs_rpc::pb::{self, chunk_control_server};
use std::sync::Arc;
use tonic::{Request, Response, Status};

/// Serves the `ChunkControl` service from the shared server state.
pub struct ChunkControlService {
    state: Arc<ServerState>,
}

impl ChunkControlService {
    pub fn new(state: Arc<ServerState>) -> Self {
        ChunkControlService { state }
    }
}

#[tonic::async_trait]
impl chunk_control_server::ChunkControl for ChunkControlService {
    async fn remove_chunks(
        &self,
        request: Request<pb::FileRequest>,
    ) -> Result<Response<pb::Empty>, Status> {
        self.state.served();
        let req = request.into_inner();
        let id = FileId::from_parts(req.id_hi, req.id_lo);
        let chunks = self.state.chunks.clone();
        blocking(move || chunks.remove_chunks(id)).await?;
        Ok(Response::new(pb::Empty {}))
    }

    async fn truncate_chunks(
        &self,
        request: Request<pb::TruncateChunksRequest>,
    ) -> Result<Response<pb::Empty>, Status> {
        self.state.served();
        let req = request.into_inner();
        check_size("truncate size", req.size).map_err(refuse)?;
        let id = FileId::from_parts(req.id_hi, req.id_lo);
        let chunks = self.state.chunks.clone();
        blocking(move || chunks.truncate_chunks(id, req.size)).await?;
        Ok(Response::new(pb::Empty {}))
    }

    async fn sync_chunks(
        &self,
        request: Request<pb::FileRequest>,
    ) -> Result<Response<pb::Empty>, Status> {
        self.state.served();
        let req = request.into_inner();
        let id = FileId::from_parts(req.id_hi, req.id_lo);
        let chunks = self.state.chunks.clone();
        blocking(move || chunks.sync_chunks(id)).await?;
        Ok(Response::new(pb::Empty {}))
    }
}
