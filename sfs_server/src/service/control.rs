//! The `Control` gRPC service: the handshake a client starts with (protocol
//! version, server identity, chunk size, where the data path listens),
//! statistics for `sfs status`, the graceful `Shutdown`, and the namespace
//! checkpoint (`Checkpoint`, `CommitCheckpoint`: [`crate::checkpoint`]).

use super::{blocking, ServerState};
use sfs_global::access::Caller;
use sfs_global::checkpoint::Manifest;
use sfs_global::{Errno, SfsError, SfsResult, PROTOCOL_VERSION};
use sfs_rpc::methods::ControlHandlers;
use sfs_rpc::pb;
use std::sync::Arc;

/// Serves the `Control` service from the shared server state.
pub struct ControlService {
    state: Arc<ServerState>,
}

impl ControlService {
    pub fn new(state: Arc<ServerState>) -> Self {
        ControlService { state }
    }
}

impl ControlHandlers for ControlService {
    async fn hello(&self, _caller: Caller, req: pb::HelloRequest) -> SfsResult<pb::HelloResponse> {
        self.state.served();
        let version = req.protocol_version;
        if version != PROTOCOL_VERSION {
            return Err(SfsError::new(
                Errno::EPROTO,
                format!(
                    "server {} speaks SFS protocol {PROTOCOL_VERSION}, the client speaks {version}: run the same SFS version on both",
                    self.state.name
                ),
            ));
        }
        let state = &self.state;
        Ok(pb::HelloResponse {
            protocol_version: PROTOCOL_VERSION,
            server_name: state.name.clone(),
            server_index: u32::try_from(state.index).unwrap_or(u32::MAX),
            server_count: u32::try_from(state.count).unwrap_or(u32::MAX),
            chunk_size: state.config.chunk_size,
            data_transport: state.data_transport.name().to_string(),
            data_endpoint: state.data_endpoint.clone(),
            data_local_socket: state.data_local_socket.clone().unwrap_or_default(),
            node_id: sfs_rdma::shm::node_id().to_string(),
            hostfile_digest: state.hostfile_digest,
        })
    }

    async fn stats(&self, _caller: Caller, _req: pb::Empty) -> SfsResult<pb::StatsResponse> {
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
        Ok(pb::StatsResponse {
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
        })
    }

    async fn shutdown(&self, _caller: Caller, _req: pb::Empty) -> SfsResult<pb::Empty> {
        self.state.served();
        tracing::info!("shutdown requested over gRPC");
        self.state.shutdown.trigger();
        Ok(pb::Empty {})
    }

    async fn checkpoint(
        &self,
        _caller: Caller,
        req: pb::CheckpointRequest,
    ) -> SfsResult<pb::CheckpointResponse> {
        self.state.served();
        let sequence = req.sequence;
        let state = &self.state;
        let (server, servers) = (
            u32::try_from(state.index).unwrap_or(u32::MAX),
            u32::try_from(state.count).unwrap_or(u32::MAX),
        );
        let dumped =
            crate::checkpoint::dump(state.meta.clone(), &state.chunks, sequence, server, servers)
                .await?;
        Ok(pb::CheckpointResponse {
            entries: dumped.entries,
            files: dumped.files,
            file_bytes: dumped.file_bytes,
            written_back_bytes: dumped.written_back_bytes,
            dump_bytes: dumped.dump_bytes,
        })
    }

    async fn commit_checkpoint(
        &self,
        _caller: Caller,
        req: pb::CommitCheckpointRequest,
    ) -> SfsResult<pb::Empty> {
        self.state.served();
        let manifest = Manifest {
            generation: 0, // set by the commit
            sequence: req.sequence,
            servers: req.servers,
            entries: req.entries,
            files: req.files,
            file_bytes: req.file_bytes,
            created_ns: 0,
        };
        crate::checkpoint::commit(self.state.chunks.backend().as_ref(), &manifest).await?;
        Ok(pb::Empty {})
    }
}
