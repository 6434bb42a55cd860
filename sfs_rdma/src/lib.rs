//! Bulk chunk data between SFS clients and servers.
//!
//! Metadata travels over gRPC (`sfs_rpc`); chunk bytes travel here, over one
//! of three transports behind the same interface:
//!
//! - [`tcp`]: persistent TCP connections, many requests in flight on each
//!   (request ids, one reader task per connection), the default wherever no
//!   RDMA device exists.
//! - [`rdma`]: device discovery through ibverbs (`rdma-sys`), used by
//!   `transport: "auto"` to choose RDMA when a device serves the server.
//! - [`shm`]: for a server on the client's own machine, chunk bytes in a
//!   shared memory region the client hands over a Unix socket; only headers
//!   cross the socket.
//!
//! The interface is shaped for one-sided RDMA: a request names a chunk
//! ([`ChunkRef`]) and a client buffer; the server *pulls* a write's bytes from
//! that buffer and *pushes* a read's bytes into it. Over TCP "pull" is the
//! payload that follows the request header and "push" the payload of the
//! response, so the server-side [`ChunkHandler`] is identical for both.

pub mod buffers;
pub mod memory;
pub mod nosignal;
pub mod rdma;
pub mod shm;
pub mod tcp;
pub mod wire;

use futures::future::BoxFuture;
use sfs_global::config::DataTransport;
use sfs_global::{FileId, SfsResult};

/// A byte range inside one chunk of one file.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct ChunkRef {
    pub id: FileId,
    /// Chunk index within the file.
    pub index: u64,
    /// Offset inside the chunk.
    pub offset: u64,
    /// Length in bytes; `offset + len` never exceeds the chunk size.
    pub len: u64,
}

impl ChunkRef {
    /// Refuses (EPROTO) a range a client must never ask for: empty, not
    /// inside one chunk of `chunk_size` bytes, or past the largest file.
    /// Every way a chunk range reaches a server checks it.
    pub fn check(&self, chunk_size: u64) -> SfsResult<()> {
        let refuse = |why: String| {
            Err(sfs_global::SfsError::new(
                sfs_global::Errno::EPROTO,
                format!("bad chunk range: {why}"),
            ))
        };
        if self.len == 0 || self.offset >= chunk_size || self.len > chunk_size - self.offset {
            return refuse(format!(
                "range {}+{} outside a chunk of {chunk_size} bytes",
                self.offset, self.len
            ));
        }
        if self.index > sfs_global::chunk::MAX_FILE_SIZE / chunk_size {
            return refuse(format!(
                "chunk index {} beyond the largest file",
                self.index
            ));
        }
        Ok(())
    }
}

/// The server side of the data path: the chunk store. Called from blocking
/// threads, so implementations may use plain file I/O.
pub trait ChunkHandler: Send + Sync + 'static {
    /// Stores `data` at `chunk.offset` of chunk `(chunk.id, chunk.index)`.
    /// `data.len() == chunk.len`. ENOSPC when the store is full.
    fn write_chunk(&self, chunk: &ChunkRef, data: &[u8]) -> SfsResult<()>;

    /// Reads up to `chunk.len` bytes at `chunk.offset` into `buf`
    /// (`buf.len() == chunk.len`); returns how many bytes the chunk holds there
    /// (fewer when the chunk is shorter or absent: the caller treats the rest
    /// as a hole of zeros). Bytes of `buf` past that count may have been
    /// written (a chunk read into `buf` whole, then found cut) and are not
    /// part of the answer: transports send only the count.
    fn read_chunk(&self, chunk: &ChunkRef, buf: &mut [u8]) -> SfsResult<usize>;

    /// A data connection was accepted and proved the job secret (the
    /// server counts its open connections for its metrics).
    fn connection_opened(&self) {}

    /// A connection announced by [`ChunkHandler::connection_opened`] ended.
    fn connection_closed(&self) {}
}

/// The client side of the data path to one server.
pub trait DataChannel: Send + Sync {
    /// Which transport this is, for logs and `sfs status`.
    fn transport(&self) -> DataTransport;

    /// Writes `data` into a chunk; resolves when the server has placed it
    /// (visible to every later read; durable only after a sync).
    fn write_chunk<'a>(&'a self, chunk: ChunkRef, data: &'a [u8]) -> BoxFuture<'a, SfsResult<()>>;

    /// Reads a chunk range into `buf` (`buf.len() == chunk.len`); returns the
    /// bytes the server held. Bytes past that are left untouched.
    fn read_chunk<'a>(
        &'a self,
        chunk: ChunkRef,
        buf: &'a mut [u8],
    ) -> BoxFuture<'a, SfsResult<usize>>;
}
