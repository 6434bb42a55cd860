//! The `ChunkControl` service: whole-file operations on the chunks this
//! server holds (remove on unlink, cut on truncate, fsync on fsync, copy
//! to the object back end on flush, what it holds for fsck), and
//! small chunk pieces (`WriteChunk`/`ReadChunk`) that a client sends on its
//! RPC connection instead of the data transport. Bulk bytes use
//! `sfs_rdma`'s data path.

use super::metadata::MetadataService;
use super::{blocking, check_size, quick, ServerState};
use sfs_global::access::Caller;
use sfs_global::{FileId, SfsError, SfsResult};
use sfs_rdma::ChunkRef;
use sfs_rpc::methods::{ChunkControlHandlers, MetadataHandlers as _};
use sfs_rpc::pb;
use std::os::unix::ffi::OsStrExt;
use std::sync::Arc;

/// Pieces up to this size are stored inline on the worker (a page-cache
/// copy, microseconds); larger ones on the blocking pool.
const INLINE_PIECE_BYTES: u64 = 64 * 1024;

/// The most files one `Holdings` page names (about 40 bytes each on the
/// wire, far below the message limit).
const MAX_HOLDINGS_PAGE: u32 = 65_536;

/// Whether `caller` may read the backing file `file` (below `root`, both
/// resolved) as the backing file system would let it: search on every
/// directory below `root` on the way, and read on the file — or owns it
/// (an owner may give itself the access in SFS with `chmod`). The server
/// reads backing files with its own rights; this keeps a client from
/// reading through SFS a backing file its user could not.
fn may_read_backing(
    caller: &sfs_global::access::Caller,
    root: &std::path::Path,
    file: &std::path::Path,
) -> sfs_global::SfsResult<()> {
    use sfs_global::access::{check_access, MAY_EXEC, MAY_READ};
    use std::os::unix::fs::MetadataExt;
    let as_entry = |path: &std::path::Path, kind| -> sfs_global::SfsResult<sfs_global::Metadata> {
        let st = std::fs::metadata(path)?;
        let mut md = sfs_global::Metadata::new(kind, st.mode() & 0o7777, FileId(0), 0);
        md.uid = st.uid();
        md.gid = st.gid();
        Ok(md)
    };
    let mut dirs: Vec<&std::path::Path> = file
        .ancestors()
        .skip(1)
        .take_while(|dir| *dir != root && dir.starts_with(root))
        .collect();
    dirs.reverse();
    for dir in dirs {
        let md = as_entry(dir, sfs_global::FileKind::Directory)?;
        check_access(&md, caller, MAY_EXEC, &dir.display().to_string())?;
    }
    let md = as_entry(file, sfs_global::FileKind::File)?;
    if caller.owns(&md) {
        return Ok(());
    }
    check_access(&md, caller, MAY_READ, &file.display().to_string())
}

/// The chunk range of a request, checked against this server's chunk size.
fn chunk_ref(range: Option<&pb::ChunkRange>, chunk_size: u64) -> SfsResult<ChunkRef> {
    let r =
        range.ok_or_else(|| sfs_global::SfsError::invalid("a chunk request without a range"))?;
    let chunk = ChunkRef {
        id: FileId::from_parts(r.id_hi, r.id_lo),
        index: r.index,
        offset: r.offset,
        len: r.len,
    };
    chunk.check(chunk_size)?;
    Ok(chunk)
}

/// Serves the `ChunkControl` service from the shared server state.
pub struct ChunkControlService {
    state: Arc<ServerState>,
    /// For the size update or lookup a small piece may carry.
    metadata: Arc<MetadataService>,
}

impl ChunkControlService {
    pub fn new(state: Arc<ServerState>, metadata: Arc<MetadataService>) -> Self {
        ChunkControlService { state, metadata }
    }
}

impl ChunkControlHandlers for ChunkControlService {
    async fn remove_chunks(&self, _caller: Caller, req: pb::FileRequest) -> SfsResult<pb::Empty> {
        self.state.served();
        let id = FileId::from_parts(req.id_hi, req.id_lo);
        let chunks = self.state.chunks.clone();
        blocking(move || chunks.remove_chunks(id)).await?;
        Ok(pb::Empty {})
    }

    async fn truncate_chunks(
        &self,
        _caller: Caller,
        req: pb::TruncateChunksRequest,
    ) -> SfsResult<pb::Empty> {
        self.state.served();
        check_size("truncate size", req.size)?;
        let id = FileId::from_parts(req.id_hi, req.id_lo);
        let chunks = self.state.chunks.clone();
        blocking(move || chunks.truncate_chunks(id, req.size)).await?;
        Ok(pb::Empty {})
    }

    async fn set_source(&self, caller: Caller, req: pb::SetSourceRequest) -> SfsResult<pb::Empty> {
        self.state.served();
        let backing = &self.state.config.backing_dir;
        if backing.is_empty() {
            return Err(SfsError::invalid(format!(
                "server {} has no backing_dir (cache mode is off)",
                self.state.name
            )));
        }
        // Only a path within the backing directory: normalised, so no `..`
        // climbs out of it.
        if sfs_global::path::normalize(&req.source).ok().as_deref() != Some(req.source.as_str())
            || req.source == "/"
        {
            return Err(SfsError::invalid(format!(
                "source {:?} is not a normalised path below the backing directory",
                req.source
            )));
        }
        check_size("source length", req.source_len)?;
        let id = FileId::from_parts(req.id_hi, req.id_lo);
        let backing = std::path::PathBuf::from(backing);
        let source = backing.join(std::ffi::OsStr::from_bytes(&sfs_global::path::unescape(
            &req.source[1..],
        )));
        let chunks = self.state.chunks.clone();
        blocking(move || {
            // A regular file inside the backing directory once every
            // symlink is resolved (a link on the way may not lead out),
            // and not a FIFO a read would block on.
            let outside = || {
                SfsError::invalid(format!(
                    "source {}: not a regular file inside the backing directory",
                    source.display()
                ))
            };
            let real = std::fs::canonicalize(&source).map_err(|_| outside())?;
            let real_backing = std::fs::canonicalize(&backing).map_err(SfsError::from)?;
            if !real.starts_with(&real_backing) || !std::fs::metadata(&real)?.is_file() {
                return Err(outside());
            }
            may_read_backing(&caller, &real_backing, &real)?;
            chunks.set_source(id, real, req.source_len)
        })
        .await?;
        Ok(pb::Empty {})
    }

    async fn write_chunk(
        &self,
        caller: Caller,
        req: pb::WriteChunkRequest,
    ) -> SfsResult<pb::Empty> {
        self.state.served();
        let chunk = chunk_ref(req.range.as_ref(), self.state.config.chunk_size)?;
        if req.data.len() as u64 != chunk.len {
            return Err(sfs_global::SfsError::invalid(format!(
                "write of {} bytes carries {}",
                chunk.len,
                req.data.len()
            )));
        }
        // Counted as the `rpc` transport (bytes inline on the RPC connection).
        let chunks = self.state.inline_chunks.clone();
        if chunk.len <= INLINE_PIECE_BYTES {
            quick(|| chunks.write_chunk(&chunk, &req.data))?;
        } else {
            blocking(move || chunks.write_chunk(&chunk, &req.data)).await?;
        }
        // The size grows only once the bytes are placed.
        if let Some(grow) = req.grow {
            self.metadata.grow_size(caller, grow).await?;
        }
        Ok(pb::Empty {})
    }

    async fn read_chunk(
        &self,
        caller: Caller,
        req: pb::ReadChunkRequest,
    ) -> SfsResult<pb::ReadChunkResponse> {
        self.state.served();
        let chunk = chunk_ref(req.range.as_ref(), self.state.config.chunk_size)?;
        let entry = match req.stat {
            Some(stat) => Some(self.metadata.stat(caller, stat).await?),
            None => None,
        };
        let chunks = self.state.inline_chunks.clone();
        let read = move || {
            let mut data = vec![0u8; chunk.len as usize];
            let held = chunks.read_chunk(&chunk, &mut data)?;
            data.truncate(held);
            Ok(data)
        };
        let data = if chunk.len <= INLINE_PIECE_BYTES {
            quick(read)?
        } else {
            blocking(read).await?
        };
        Ok(pb::ReadChunkResponse { data, entry })
    }

    async fn sync_chunks(&self, _caller: Caller, req: pb::FileRequest) -> SfsResult<pb::Empty> {
        self.state.served();
        let id = FileId::from_parts(req.id_hi, req.id_lo);
        let chunks = self.state.chunks.clone();
        blocking(move || chunks.sync_chunks(id)).await?;
        Ok(pb::Empty {})
    }

    async fn flush_chunks(
        &self,
        _caller: Caller,
        req: pb::FlushChunksRequest,
    ) -> SfsResult<pb::FlushChunksResponse> {
        self.state.served();
        let id = FileId::from_parts(req.id_hi, req.id_lo);
        let chunks = req
            .ranged
            .then(|| req.first_chunk..req.first_chunk.saturating_add(req.chunk_count));
        let flushed = self.state.chunks.flush_file(id, chunks).await?;
        Ok(pb::FlushChunksResponse {
            chunks: flushed.chunks,
            bytes: flushed.bytes,
        })
    }

    async fn write_back_soon(&self, _caller: Caller, req: pb::FileRequest) -> SfsResult<pb::Empty> {
        self.state.served();
        self.state
            .chunks
            .closed_after_writing(FileId::from_parts(req.id_hi, req.id_lo));
        Ok(pb::Empty {})
    }

    async fn holdings(
        &self,
        _caller: Caller,
        req: pb::HoldingsRequest,
    ) -> SfsResult<pb::HoldingsResponse> {
        self.state.served();
        let after = (!req.from_start).then(|| FileId::from_parts(req.after_hi, req.after_lo));
        let limit = req.limit.clamp(1, MAX_HOLDINGS_PAGE) as usize;
        let chunks = self.state.chunks.clone();
        let (held, more) = blocking(move || chunks.holdings(after, limit)).await?;
        Ok(pb::HoldingsResponse {
            files: held
                .into_iter()
                .map(|h| pb::HeldFile {
                    id_hi: h.id.hi(),
                    id_lo: h.id.lo(),
                    chunks: h.chunks,
                    in_backend: h.in_backend,
                })
                .collect(),
            more,
        })
    }
}

#[cfg(test)]
mod tests {
    use super::may_read_backing;
    use sfs_global::access::Caller;
    use std::os::unix::fs::PermissionsExt;

    fn caller(uid: u32, gid: u32) -> Caller {
        Caller {
            uid,
            gid,
            groups: Vec::new(),
        }
    }

    /// A backing file is readable through `SetSource` only as the backing
    /// file system would let its caller read it: search on each directory
    /// on the way, read on the file, or owning it; root always.
    #[test]
    fn set_source_asks_what_the_caller_may_read_in_the_backing_directory() {
        let dir = tempfile::tempdir().unwrap();
        let root = dir.path().canonicalize().unwrap();
        let mode = |path: &std::path::Path, m: u32| {
            std::fs::set_permissions(path, std::fs::Permissions::from_mode(m)).unwrap()
        };
        std::fs::create_dir_all(root.join("open/closed")).unwrap();
        for name in ["open/shared", "open/private", "open/closed/inside"] {
            std::fs::write(root.join(name), b"x").unwrap();
        }
        // Set, not left to the umask: a server started by another test in
        // this process sets the process's umask to 077.
        mode(&root.join("open"), 0o755);
        mode(&root.join("open/shared"), 0o644);
        mode(&root.join("open/private"), 0o600);
        mode(&root.join("open/closed"), 0o700);
        // Everything belongs to this test's user (root in CI): others are
        // told apart by uid, as the server does.
        let me = std::fs::metadata(&root).map(|m| {
            use std::os::unix::fs::MetadataExt;
            (m.uid(), m.gid())
        });
        let (owner, group) = me.unwrap();
        let owner = caller(owner, group);
        let stranger = caller(owner.uid.wrapping_add(4242), group.wrapping_add(4242));
        let in_group = caller(owner.uid.wrapping_add(4242), group);
        let check = |who: &Caller, name: &str| may_read_backing(who, &root, &root.join(name));
        assert!(check(&stranger, "open/shared").is_ok());
        let denied = check(&stranger, "open/private").unwrap_err();
        assert_eq!(denied.errno, sfs_global::Errno::EACCES, "{denied:?}");
        assert_eq!(
            check(&stranger, "open/closed/inside").unwrap_err().errno,
            sfs_global::Errno::EACCES
        );
        assert!(check(&owner, "open/private").is_ok());
        assert!(check(&owner, "open/closed/inside").is_ok());
        assert!(check(&in_group, "open/shared").is_ok());
        assert!(check(&in_group, "open/private").is_err());
        mode(&root.join("open/private"), 0o000);
        assert!(
            check(&owner, "open/private").is_ok(),
            "its owner may chmod it"
        );
        assert!(check(&caller(0, 0), "open/closed/inside").is_ok());
    }
}
