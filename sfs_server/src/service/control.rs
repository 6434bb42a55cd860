//! The `Control` gRPC service: the handshake a client starts with (protocol
//! version, server identity, chunk size, where the data path listens),
//! statistics for `sfs status`, the graceful `Shutdown`, and the namespace
//! checkpoint (`Checkpoint`, `CommitCheckpoint`: [`crate::checkpoint`]).

use super::{blocking, refuse, ServerState};
use sfs_global::checkpoint::Manifest;
use sfs_global::{Errno, SfsError, PROTOCOL_VERSION};
use sfs_rpc::pb::{self, control_server};
use std::sync::Arc;
use tonic::{Request, Response, Status};

/// Serves the `Control` service from the shared server state.
pub struct ControlService {
    state: Arc<ServerState>,
}

impl ControlService {
    pub fn new(state: Arc<ServerState>) -> Self {
        ControlService { state }
    }
}

#[tonic::async_trait]
impl control_server::Control for ControlService {
    async fn hello(
        &self,
        request: Request<pb::HelloRequest>,
    ) -> Result<Response<pb::HelloResponse>, Status> {
        self.state.served();
        let version = request.into_inner().protocol_version;
        if version != PROTOCOL_VERSION {
            return Err(refuse(SfsError::new(
                Errno::EPROTO,
                format!(
                    "server {} speaks SFS protocol {PROTOCOL_VERSION}, the client speaks {version}: run the same SFS version on both",
                    self.state.name
                ),
            )));
        }
        let state = &self.state;
        Ok(Response::new(pb::HelloResponse {
            protocol_version: PROTOCOL_VERSION,
            server_name: state.name.clone(),
            server_index: u32::try_from(state.index).unwrap_or(u32::MAX),
            server_count: u32::try_from(state.count).unwrap_or(u32::MAX),
            chunk_size: state.config.chunk_size,
            data_transport: state.data_transport.to_string(),
            data_endpoint: state.data_endpoint.clone(),
            data_local_socket: state.data_local_socket.clone().unwrap_or_default(),
            node_id: sfs_rdma::shm::node_id().to_string(),
            hostfile_digest: state.hostfile_digest,
        }))
    }

    async fn stats(
        &self,
        _request: Request<pb::Empty>,
    ) -> Result<Response<pb::StatsResponse>, Status> {
        self.state.served();
        let state = self.state.clone();
        let (entries, capacity_bytes, free_bytes) = blocking(move || {
            Ok((
                state.meta.entry_count()?,
                state.chunks.capacity(),
                state.chunks.free(),
            ))
        })
        .await?;
        let state = &self.state;
        let tier = state.chunks.status();
        Ok(Response::new(pb::StatsResponse {
            server_name: state.name.clone(),
            entries,
            chunk_bytes: state.chunks.usage(),
            capacity_bytes,
            free_bytes,
            requests: state.requests(),
            uptime_ms: u64::try_from(state.started.elapsed().as_millis()).unwrap_or(u64::MAX),
            backend: state.chunks.backend().kind().to_string(),
            writeback: tier.policy,
            dirty_files: tier.dirty_files,
            dirty_bytes: tier.dirty_bytes,
            written_back_bytes: tier.written_back_bytes,
            evicted_bytes: tier.evicted_bytes,
            fetched_bytes: tier.fetched_bytes,
            writeback_errors: tier.writeback_errors,
            backend_error: tier.backend_error,
            writeback_bytes_per_s: tier.writeback_bytes_per_s,
            data_bytes_in: state.metrics.data_bytes_in(),
            data_bytes_out: state.metrics.data_bytes_out(),
        }))
    }

    async fn shutdown(&self, _request: Request<pb::Empty>) -> Result<Response<pb::Empty>, Status> {
        self.state.served();
        tracing::info!("shutdown requested over gRPC");
        self.state.shutdown.trigger();
        Ok(Response::new(pb::Empty {}))
    }

    async fn checkpoint(
        &self,
        request: Request<pb::CheckpointRequest>,
    ) -> Result<Response<pb::CheckpointResponse>, Status> {
        self.state.served();
        let sequence = request.into_inner().sequence;
        let state = &self.state;
        let (server, servers) = (
            u32::try_from(state.index).unwrap_or(u32::MAX),
            u32::try_from(state.count).unwrap_or(u32::MAX),
        );
        let dumped =
            crate::checkpoint::dump(state.meta.clone(), &state.chunks, sequence, server, servers)
                .await
                .map_err(refuse)?;
        Ok(Response::new(pb::CheckpointResponse {
            entries: dumped.entries,
            files: dumped.files,
            file_bytes: dumped.file_bytes,
            written_back_bytes: dumped.written_back_bytes,
            dump_bytes: dumped.dump_bytes,
        }))
    }

    async fn commit_checkpoint(
        &self,
        request: Request<pb::CommitCheckpointRequest>,
    ) -> Result<Response<pb::Empty>, Status> {
        self.state.served();
        let req = request.into_inner();
        let manifest = Manifest {
            generation: 0, // set by the commit
            sequence: req.sequence,
            servers: req.servers,
            entries: req.entries,
            files: req.files,
            file_bytes: req.file_bytes,
            created_ns: 0,
        };
        crate::checkpoint::commit(self.state.chunks.backend().as_ref(), &manifest)
            .await
            .map_err(refuse)?;
        Ok(Response::new(pb::Empty {}))
    }
}
