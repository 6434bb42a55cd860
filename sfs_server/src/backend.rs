//! Object back ends: the durable store behind a server's chunk store.
//!
//! A burst buffer absorbs a job's I/O on the job's own nodes and drains it
//! to slower, durable storage. That storage is reached through one
//! "Motr-like" interface, [`ObjectBackend`]: objects named by 128-bit ids
//! (SFS's [`FileId`]: the file's id doubles as its object's id, so a rename
//! never touches the back end), written and read at byte offsets, made
//! persistent explicitly, deleted, listed, and asked which byte ranges
//! hold data (the storage brick's "list mapped ids", what a recovery scan
//! needs). Each kind of store implements it in its own module; one
//! conformance suite ([`conformance`], in tests) runs unchanged against
//! every implementation.
//!
//! # The contract
//!
//! - **Objects** are sparse byte arrays. `write` creates the object if
//!   needed; `create` exists so that an empty object can exist. Both are
//!   idempotent.
//! - **Visible**: when `write` returns, every later `read` through any
//!   handle of the same back end returns the bytes. Writes to disjoint
//!   ranges may run concurrently; for overlapping ranges written at the same
//!   time, each byte holds one of the writers' values.
//! - **Persistent**: when `persist(id)` returns, every write to `id` that
//!   returned before `persist` was called survives a crash of the machine
//!   (for `dir`: the file and its directory entry are fsync'ed). Before
//!   that, a crash may keep any subset of the written bytes; a single write
//!   is not atomic against a crash.
//! - **Reads** return `min(len, size - offset)` bytes (none at or past the
//!   end); bytes never written inside the size read as zeros. Reading an
//!   object that does not exist is ENOENT.
//! - **Size** is the end of the furthest write (or 0 for a created object).
//! - **Truncate** cuts (or extends with zeros) an existing object to a
//!   size; truncating a missing object does nothing (a file's truncate
//!   follows into the back end only where the object exists).
//! - **Delete** removes the object and is idempotent.
//! - **Alignment**: none is required. Chunk-aligned writes of whole chunks
//!   are the common case (the write-back moves chunks), and back ends
//!   without partial writes map chunks to objects of their own.
//! - **Stores of plain files** may offer two shortcuts, used when they
//!   say so and otherwise left to the general calls: `read_now` (a read
//!   on the calling thread into the caller's buffer) and
//!   `write_from_files` (pieces copied by the kernel from open files, the
//!   write-back's chunk files). Both keep the rules above.
//! - **Errors** carry the errno an application would see (EIO for a store
//!   that cannot be reached, ENOSPC for a full one) and a message naming
//!   the store and the object.

pub mod dir;
pub mod rados;
pub mod s3;

#[cfg(test)]
pub(crate) mod conformance;

use async_trait::async_trait;
use sfs_global::config::{BackendKind, Config};
use sfs_global::{FileId, SfsResult};
use sfs_rdma::buffers::PooledBuffer;
use std::ops::Range;
use std::sync::Arc;
use std::time::Duration;

/// Runs blocking store work on tokio's blocking pool (back ends over
/// files and the flush of chunk files both block); a worker that panicked
/// is EIO, named after `who`.
pub(crate) async fn off_the_runtime<T: Send + 'static>(
    who: &str,
    work: impl FnOnce() -> SfsResult<T> + Send + 'static,
) -> SfsResult<T> {
    tokio::task::spawn_blocking(work)
        .await
        .map_err(|e| sfs_global::SfsError::io(format!("{who}: worker failed: {e}")))?
}

/// What [`ObjectBackend::stat`] reports.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct ObjectStat {
    /// The end of the furthest write.
    pub size: u64,
}

/// A Motr-like object store: see the module documentation for the contract.
#[async_trait]
pub trait ObjectBackend: Send + Sync {
    /// A short name for messages and `sfs status` (`dir`, `rados`, `s3`).
    fn kind(&self) -> &'static str;

    /// Makes `id` exist (empty if new). Idempotent.
    async fn create(&self, id: FileId) -> SfsResult<()>;

    /// Writes `data` at `offset` of `id`, creating it if needed; visible
    /// when it returns.
    async fn write(&self, id: FileId, offset: u64, data: &[u8]) -> SfsResult<()>;

    /// Writes several pieces of `id` (each `(offset, bytes)`), as if by one
    /// [`write`](Self::write) each, in any order; visible when it returns.
    /// The write-back hands a batch of chunks of one object here, so a
    /// store can open the object once and take owned buffers instead of
    /// copying them (`dir` does); the default writes them concurrently,
    /// one `write` each.
    async fn write_pieces(&self, id: FileId, pieces: Vec<(u64, PooledBuffer)>) -> SfsResult<()> {
        let writes = pieces
            .iter()
            .map(|(offset, data)| self.write(id, *offset, data));
        futures::future::try_join_all(writes).await.map(drop)
    }

    /// Reads up to `len` bytes at `offset` of `id` (short at the end).
    async fn read(&self, id: FileId, offset: u64, len: usize) -> SfsResult<Vec<u8>>;

    /// Reads as [`read`](Self::read) does, into `buf` and on the calling
    /// thread, for a store whose reads are plain file reads; `None` when
    /// the store has no such path (the caller then uses `read`). The tier
    /// fetches an evicted chunk on a blocking thread already: this spares
    /// it two thread hand-offs and a freshly zeroed buffer per chunk.
    /// Returns how many bytes were read (short at the end); ENOENT for a
    /// missing object.
    fn read_now(&self, _id: FileId, _offset: u64, _buf: &mut [u8]) -> Option<SfsResult<usize>> {
        None
    }

    /// Whether [`write_from_files`](Self::write_from_files) works: a store
    /// of plain files, which the kernel can fill from other files without
    /// the bytes passing through the server's memory.
    fn copies_from_files(&self) -> bool {
        false
    }

    /// Writes as [`write_pieces`](Self::write_pieces) does, on the calling
    /// thread, each piece `(offset, file)` being the whole content of
    /// `file` (read from its byte 0 to its end, at most `max_len` bytes),
    /// copied by the kernel (`copy_file_range`, else `sendfile`). Returns
    /// how many bytes each piece had. Only called when
    /// [`copies_from_files`](Self::copies_from_files) says so; ENOTSUP
    /// otherwise.
    fn write_from_files(
        &self,
        id: FileId,
        _pieces: &[(u64, std::fs::File)],
        _max_len: u64,
    ) -> SfsResult<Vec<u64>> {
        Err(sfs_global::SfsError::new(
            sfs_global::Errno::ENOTSUP,
            format!(
                "{} back end: no copies from files (object {id})",
                self.kind()
            ),
        ))
    }

    /// Makes every write to `id` that returned before this call persistent.
    async fn persist(&self, id: FileId) -> SfsResult<()>;

    /// Sets the size of `id` if it exists (bytes past it are gone, a longer
    /// size reads as zeros); a missing object stays missing.
    async fn truncate(&self, id: FileId, size: u64) -> SfsResult<()>;

    /// Removes `id`; removing a missing object succeeds.
    async fn delete(&self, id: FileId) -> SfsResult<()>;

    /// The object's size, or `None` if it does not exist.
    async fn stat(&self, id: FileId) -> SfsResult<Option<ObjectStat>>;

    /// Every object id in the store, in no particular order.
    async fn list(&self) -> SfsResult<Vec<FileId>>;

    /// The byte ranges of `id` that hold data, sorted and disjoint; a store
    /// that does not track holes reports `[0, size)`. ENOENT if `id` does
    /// not exist.
    async fn extents(&self, id: FileId) -> SfsResult<Vec<Range<u64>>>;
}

/// Opens the back end that `config.backend` names (a server does this at
/// start-up, so a store it cannot reach stops it before it serves, within
/// about twice `backend.timeout_ms` for the networked ones, with an error
/// naming the setting to fix).
pub async fn open(config: &Config) -> SfsResult<Arc<dyn ObjectBackend>> {
    let settings = &config.backend;
    let timeout = Duration::from_millis(settings.timeout_ms);
    match settings.kind {
        BackendKind::Dir => {
            let root = config.backend_dir();
            let backend = off_the_runtime("dir back end", move || {
                let backend = dir::DirBackend::open(&root)?;
                tracing::info!("object back end: dir at {}", root.display());
                Ok(backend)
            })
            .await?;
            Ok(Arc::new(backend))
        }
        BackendKind::Rados => {
            let rados = rados::RadosSettings {
                conf: settings.rados_conf.clone().into(),
                user: settings.rados_user.clone(),
                pool: settings.rados_pool.clone(),
                namespace: settings.rados_namespace.clone(),
                timeout,
            };
            let backend = off_the_runtime("rados back end", move || {
                let backend = rados::RadosBackend::open(&rados)?;
                tracing::info!(
                    "object back end: rados pool {} (namespace {:?}) of {}",
                    rados.pool,
                    rados.namespace,
                    rados.conf.display()
                );
                Ok(backend)
            })
            .await?;
            Ok(Arc::new(backend))
        }
        BackendKind::S3 => {
            let s3 = s3::S3Settings {
                endpoint: settings.s3_endpoint.clone(),
                bucket: settings.s3_bucket.clone(),
                prefix: settings.s3_prefix.clone(),
                region: settings.s3_region.clone(),
                piece_size: settings.s3_piece_size(config.chunk_size),
                timeout,
                access_key: String::new(),
                secret_key: String::new(),
                session_token: None,
            }
            .with_credentials_from_env()?;
            let backend = s3::S3Backend::open(s3.clone()).await?;
            tracing::info!(
                "object back end: s3 bucket {} prefix {:?} at {:?}, {} B pieces",
                s3.bucket,
                s3.prefix,
                s3.endpoint,
                s3.piece_size
            );
            Ok(Arc::new(backend))
        }
    }
}
