//! Small chunk pieces on the RPC connection.
//!
//! Over TCP, a chunk piece costs the data connection's own round trip —
//! and a reader task's wake-up on each side — on top of the metadata call
//! that goes with it (the size update of a write, the size lookup of a
//! read). A piece of up to `inline_data_bytes` goes instead as a
//! `WriteChunk`/`ReadChunk` call on the lean RPC connection, which already
//! polls for its answers and whose server answers small store calls in the
//! wake-up that read them. Larger pieces, and every piece when the data
//! transport is RDMA, take the data transport.

use futures::future::BoxFuture;
use sfs_global::SfsResult;
use sfs_rdma::{ChunkRef, DataChannel};
use sfs_rpc::lean::Rpc;
use sfs_rpc::pb;
use std::sync::Arc;

/// A data channel that sends pieces up to `limit` bytes over `rpc` and the
/// rest over `bulk`.
pub struct SmallPiecesOverRpc {
    pub rpc: Rpc,
    pub bulk: Arc<dyn DataChannel>,
    pub limit: u64,
}

impl DataChannel for SmallPiecesOverRpc {
    fn transport(&self) -> sfs_global::config::DataTransport {
        self.bulk.transport()
    }

    fn write_chunk<'a>(&'a self, chunk: ChunkRef, data: &'a [u8]) -> BoxFuture<'a, SfsResult<()>> {
        if chunk.len > self.limit {
            return self.bulk.write_chunk(chunk, data);
        }
        Box::pin(async move {
            self.rpc
                .write_chunk(pb::WriteChunkRequest {
                    range: Some(crate::calls::chunk_range(&chunk)),
                    data: data.to_vec(),
                    grow: None,
                })
                .await
                .map(|_| ())
        })
    }

    fn read_chunk<'a>(
        &'a self,
        chunk: ChunkRef,
        buf: &'a mut [u8],
    ) -> BoxFuture<'a, SfsResult<usize>> {
        if chunk.len > self.limit {
            return self.bulk.read_chunk(chunk, buf);
        }
        Box::pin(async move {
            let answer = self
                .rpc
                .read_chunk(pb::ReadChunkRequest {
                    range: Some(crate::calls::chunk_range(&chunk)),
                    stat: None,
                })
                .await?;
            let n = answer.data.len().min(buf.len());
            buf[..n].copy_from_slice(&answer.data[..n]);
            Ok(n)
        })
    }
}
