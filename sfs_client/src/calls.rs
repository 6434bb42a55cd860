//! The typed face of the calls a client makes on one server: SFS types in
//! (`FileId`, paths, chunk ranges), SFS types out. The protobuf messages
//! of the file-level calls are built here, so the POSIX layer above
//! (`namespace`, `io`, `links`, `permissions`, `flush`, `inventory`) never
//! spells a file id as two wire fields.

use crate::flush::FlushStats;
use crate::servers::ServerHandle;
use sfs_global::holdings::Held;
use sfs_global::{FileId, SfsResult};
use sfs_rpc::pb;
use std::ops::Range;

/// A stat of `path` that fails with ESTALE unless the entry there is still
/// the file `id` (renamed or replaced meanwhile); `None`: any entry. The
/// caller adds the permission checks it wants (`access`,
/// `sticky_parent_uid`) with struct update syntax.
pub(crate) fn stat_of(path: &str, id: Option<FileId>) -> pb::PathRequest {
    pb::PathRequest {
        path: path.to_string(),
        check_id: id.is_some(),
        id_hi: id.map_or(0, FileId::hi),
        id_lo: id.map_or(0, FileId::lo),
        ..Default::default()
    }
}

/// A removal of `path` (a directory or not, as `kind` says) that fails
/// with ESTALE unless the entry there is the file `if_id`; `None`: any.
pub(crate) fn remove_of(
    path: &str,
    kind: pb::RemoveKind,
    if_id: Option<FileId>,
) -> pb::RemoveRequest {
    pb::RemoveRequest {
        path: path.to_string(),
        kind: kind as i32,
        if_id: if_id.is_some(),
        id_hi: if_id.map_or(0, FileId::hi),
        id_lo: if_id.map_or(0, FileId::lo),
        ..Default::default()
    }
}

/// Raises the size of the file `id`, whose attributes are at `path`, to
/// `end` if smaller (a merge on its owner).
pub(crate) fn grow_of(path: &str, id: FileId, end: u64) -> pb::GrowSizeRequest {
    pb::GrowSizeRequest {
        path: path.to_string(),
        end,
        check_id: true,
        id_hi: id.hi(),
        id_lo: id.lo(),
    }
}

/// Adds `delta` to the link count of the file `id` at its shared entry
/// `path` (crate::links).
pub(crate) fn link_of(path: &str, id: FileId, delta: i32) -> pb::LinkRequest {
    pb::LinkRequest {
        path: path.to_string(),
        id_hi: id.hi(),
        id_lo: id.lo(),
        delta,
    }
}

/// The RPC form of a chunk range.
pub(crate) fn chunk_range(chunk: &sfs_rdma::ChunkRef) -> pb::ChunkRange {
    pb::ChunkRange {
        id_hi: chunk.id.hi(),
        id_lo: chunk.id.lo(),
        index: chunk.index,
        offset: chunk.offset,
        len: chunk.len,
    }
}

fn file(id: FileId) -> pb::FileRequest {
    pb::FileRequest {
        id_hi: id.hi(),
        id_lo: id.lo(),
    }
}

impl ServerHandle {
    /// Drops every chunk of `id` this server holds (and its object, if
    /// this server wrote some of it back).
    pub(crate) async fn remove_chunks(&self, id: FileId) -> SfsResult<()> {
        self.rpc.remove_chunks(file(id)).await.map(|_| ())
    }

    /// Cuts the chunks of `id` this server holds at `size` bytes.
    pub(crate) async fn truncate_chunks(&self, id: FileId, size: u64) -> SfsResult<()> {
        self.rpc
            .truncate_chunks(pb::TruncateChunksRequest {
                id_hi: id.hi(),
                id_lo: id.lo(),
                size,
            })
            .await
            .map(|_| ())
    }

    /// Makes this server's chunks of `id` durable.
    pub(crate) async fn sync_chunks(&self, id: FileId) -> SfsResult<()> {
        self.rpc.sync_chunks(file(id)).await.map(|_| ())
    }

    /// Asks this server to write `id` back to the object back end soon
    /// (the `close` write-back policy).
    pub(crate) async fn write_back_soon(&self, id: FileId) -> SfsResult<()> {
        self.rpc.write_back_soon(file(id)).await.map(|_| ())
    }

    /// Writes this server's chunks of `id` (those of `chunks`, or all) to
    /// the object back end now.
    pub(crate) async fn flush_chunks(
        &self,
        id: FileId,
        chunks: Option<Range<u64>>,
    ) -> SfsResult<FlushStats> {
        let answer = self
            .rpc
            .flush_chunks(pb::FlushChunksRequest {
                id_hi: id.hi(),
                id_lo: id.lo(),
                ranged: chunks.is_some(),
                first_chunk: chunks.as_ref().map_or(0, |r| r.start),
                chunk_count: chunks.as_ref().map_or(0, |r| r.end - r.start),
            })
            .await?;
        Ok(FlushStats {
            chunks: answer.chunks,
            bytes: answer.bytes,
        })
    }

    /// Cache mode: the bytes of `id` below `len` that this server does not
    /// hold come from `source` in the backing directory.
    pub(crate) async fn set_source(&self, id: FileId, source: &str, len: u64) -> SfsResult<()> {
        self.rpc
            .set_source(pb::SetSourceRequest {
                id_hi: id.hi(),
                id_lo: id.lo(),
                source: source.to_string(),
                source_len: len,
            })
            .await
            .map(|_| ())
    }

    /// Makes all of this server's metadata durable.
    pub(crate) async fn sync_metadata(&self) -> SfsResult<()> {
        self.rpc.sync_metadata(pb::Empty {}).await.map(|_| ())
    }

    /// `O_APPEND`: reserves `len` bytes at the end of the file `id` whose
    /// attributes are at `at`, and returns where they start.
    pub(crate) async fn reserve_append(&self, at: &str, id: FileId, len: u64) -> SfsResult<u64> {
        let answer = self
            .rpc
            .reserve_append(pb::ReserveAppendRequest {
                path: at.to_string(),
                len,
                check_id: true,
                id_hi: id.hi(),
                id_lo: id.lo(),
            })
            .await?;
        Ok(answer.offset)
    }

    /// One page (up to `limit` files) of the files this server holds
    /// chunks of, in id order, after `after` (from the start: `None`), and
    /// whether more follow.
    pub(crate) async fn holdings(
        &self,
        after: Option<FileId>,
        limit: u32,
    ) -> SfsResult<(Vec<Held>, bool)> {
        let page = self
            .rpc
            .holdings(pb::HoldingsRequest {
                after_hi: after.map_or(0, FileId::hi),
                after_lo: after.map_or(0, FileId::lo),
                from_start: after.is_none(),
                limit,
            })
            .await?;
        let files = page
            .files
            .iter()
            .map(|f| Held {
                id: FileId::from_parts(f.id_hi, f.id_lo),
                chunks: f.chunks,
                in_backend: f.in_backend,
            })
            .collect();
        Ok((files, page.more))
    }
}
