//! The request handlers of a server, one file per service, and what they
//! share. Handlers implement the transport-neutral traits of
//! `sfs_rpc::methods` (caller and request in, `SfsResult` out); the gRPC and
//! lean front ends are made from those (`sfs_rpc::methods::Grpc`,
//! `sfs_rpc::methods::Services`).
//!
//! - [`metadata`]: entries of the namespace (create, stat, remove, sizes,
//!   attributes, listings, rename's put).
//! - [`chunk_control`]: remove, truncate, sync and flush (to the object
//!   back end) of the chunks held here (the chunk bytes themselves travel
//!   over `sfs_rdma`).
//! - [`control`]: handshake, statistics and shutdown.
//!
//! Every request comes from the network and is checked here before it
//! reaches a store: a hostile or buggy client gets an errno, never a panic
//! and never a malformed key. Store calls may block on the disk, so they run
//! on tokio's blocking pool ([`blocking`]) and never stall the runtime.

pub mod chunk_control;
pub mod control;
pub mod metadata;

use crate::meta_store::MetadataStore;
use crate::metrics::metered::MeteredChunks;
use crate::metrics::{Metrics, Transport};
use crate::shutdown::Shutdown;
use crate::tier::TieredStore;
use sfs_global::chunk::MAX_FILE_SIZE;
use sfs_global::config::{Config, DataTransport};
use sfs_global::path::{normalize, program_len, PATH_MAX};
use sfs_global::{Errno, FileKind, Metadata, SfsError, SfsResult};
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::Arc;
use std::time::Instant;

/// Everything the services of one server share.
pub struct ServerState {
    pub config: Config,
    /// This server's hostfile name and index, and the number of servers.
    pub name: String,
    pub index: usize,
    pub count: usize,
    /// `Hostfile::digest` of the server's hostfile: a client whose own
    /// differs is refused at its `Hello`.
    pub hostfile_digest: u64,
    pub meta: Arc<dyn MetadataStore>,
    /// The chunk store behind its write-back tier (the object back end,
    /// shared by all servers, is `chunks.backend()`).
    pub chunks: Arc<TieredStore>,
    /// The chunk store for pieces that travel inline on the RPC connection,
    /// counted as transport `rpc` in [`ServerState::metrics`].
    pub inline_chunks: Arc<dyn sfs_rdma::ChunkHandler>,
    /// The server's counters (served on `GET /metrics`).
    pub metrics: Arc<Metrics>,
    /// Data transport in use (TCP or RDMA) and its `host:port`.
    pub data_transport: DataTransport,
    pub data_endpoint: String,
    /// The node-local data socket, if this server serves one.
    pub data_local_socket: Option<String>,
    pub shutdown: Shutdown,
    pub started: Instant,
    requests: AtomicU64,
}

impl ServerState {
    #[allow(clippy::too_many_arguments)]
    pub fn new(
        config: Config,
        name: String,
        index: usize,
        count: usize,
        hostfile_digest: u64,
        meta: Arc<dyn MetadataStore>,
        chunks: Arc<TieredStore>,
        data_transport: DataTransport,
        data_endpoint: String,
        data_local_socket: Option<String>,
        shutdown: Shutdown,
        metrics: Arc<Metrics>,
    ) -> Self {
        ServerState {
            inline_chunks: MeteredChunks::wrap(chunks.clone(), metrics.clone(), Transport::Rpc),
            metrics,
            config,
            name,
            index,
            count,
            hostfile_digest,
            meta,
            chunks,
            data_transport,
            data_endpoint,
            data_local_socket,
            shutdown,
            started: Instant::now(),
            requests: AtomicU64::new(0),
        }
    }

    /// Counts one request (for `Stats`).
    pub fn served(&self) {
        self.requests.fetch_add(1, Ordering::Relaxed);
    }

    /// Requests served since start.
    pub fn requests(&self) -> u64 {
        self.requests.load(Ordering::Relaxed)
    }
}

/// Runs a point store call (one key: a RocksDB lookup, put or merge without
/// a WAL sync, normally microseconds) inline on the worker. Handing such
/// calls to the blocking pool cost two thread switches per request, more
/// than the call itself (see docs/performance.md). A RocksDB write stall can
/// still hold a worker for its duration; scans (directory checks, listings)
/// and syncs go to [`blocking`].
pub fn quick<T, F>(call: F) -> SfsResult<T>
where
    F: FnOnce() -> SfsResult<T>,
{
    call()
}

/// Runs a long store call (file system work, syncs, scans) on the blocking
/// pool.
pub async fn blocking<T, F>(call: F) -> SfsResult<T>
where
    T: Send + 'static,
    F: FnOnce() -> SfsResult<T> + Send + 'static,
{
    match tokio::task::spawn_blocking(call).await {
        Ok(result) => result,
        Err(e) => {
            tracing::error!("a store call failed: {e}");
            Err(SfsError::io(format!("server internal error: {e}")))
        }
    }
}

/// Accepts only paths in normal form: absolute, no `.`/`..`, no doubled or
/// trailing `/` (a server never normalises on a client's behalf: two spellings
/// of a path would otherwise reach two different owners).
pub fn check_path(path: &str) -> SfsResult<()> {
    let normal = normalize(path)?;
    if normal != path {
        return Err(SfsError::invalid(format!(
            "path {path:?} is not in normal form (expected {normal:?})"
        )));
    }
    Ok(())
}

/// Accepts a size or end offset no larger than the largest file.
pub fn check_size(what: &str, value: u64) -> SfsResult<()> {
    if value > MAX_FILE_SIZE {
        return Err(SfsError::new(
            Errno::EFBIG,
            format!("{what} {value} is larger than the largest file size {MAX_FILE_SIZE}"),
        ));
    }
    Ok(())
}

/// The kind named by a mode's type bits.
pub fn check_mode(mode: u32) -> SfsResult<FileKind> {
    if mode & !(libc::S_IFMT | 0o7777) != 0 {
        return Err(SfsError::invalid(format!(
            "mode {mode:#o} has unknown bits"
        )));
    }
    FileKind::from_mode(mode)
        .ok_or_else(|| SfsError::invalid(format!("mode {mode:#o} names no file type")))
}

/// A symlink needs a target of 1..=PATH_MAX bytes without NUL; other kinds
/// have none.
pub fn check_link_target(kind: FileKind, target: &str) -> SfsResult<()> {
    match kind {
        FileKind::Symlink if target.is_empty() => {
            Err(SfsError::invalid("a symlink needs a target"))
        }
        FileKind::Symlink if target.len() > PATH_MAX && program_len(target) > PATH_MAX => {
            Err(SfsError::new(
                Errno::ENAMETOOLONG,
                format!(
                    "symlink target of {} bytes is longer than {PATH_MAX}",
                    program_len(target)
                ),
            ))
        }
        FileKind::Symlink if target.contains('\0') => {
            Err(SfsError::invalid("symlink target contains a NUL byte"))
        }
        FileKind::Symlink => Ok(()),
        _ if !target.is_empty() => Err(SfsError::invalid("only a symlink has a link target")),
        _ => Ok(()),
    }
}

/// Checks a whole entry sent by a client (rename's put).
pub fn check_entry(entry: &Metadata) -> SfsResult<()> {
    let kind = check_mode(entry.mode)?;
    check_size("size", entry.size)?;
    check_link_target(kind, &entry.link_target)
}

/// The page size to stream with: what the client asked for, capped by the
/// config (0 means the config's value).
pub fn page_size(requested: u32, config: &Config) -> usize {
    let cap = config.readdir_page_size.max(1);
    (if requested == 0 {
        cap
    } else {
        requested.min(cap)
    }) as usize
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn hostile_inputs_are_refused_with_errnos() {
        for bad in ["", "a", "/a/../b", "/a/", "//a", "/.", "/a\0b", "/.."] {
            assert!(check_path(bad).is_err(), "{bad:?}");
        }
        assert_eq!(check_path("/../x").unwrap_err().errno, Errno::EINVAL);
        let long = format!("/{}", "n".repeat(300));
        assert_eq!(check_path(&long).unwrap_err().errno, Errno::ENAMETOOLONG);
        check_path("/").unwrap();
        check_path("/a/b").unwrap();
        assert_eq!(check_size("end", u64::MAX).unwrap_err().errno, Errno::EFBIG);
        assert_eq!(check_mode(libc::S_IFIFO | 0o644).unwrap(), FileKind::Fifo);
        assert_eq!(check_mode(0o644).unwrap_err().errno, Errno::EINVAL);
        assert_eq!(check_mode(u32::MAX).unwrap_err().errno, Errno::EINVAL);
        assert_eq!(
            check_mode(libc::S_IFDIR | 0o755).unwrap(),
            FileKind::Directory
        );
        assert!(check_link_target(FileKind::Symlink, "").is_err());
        assert!(check_link_target(FileKind::File, "x").is_err());
        let huge = "t".repeat(PATH_MAX + 1);
        assert_eq!(
            check_link_target(FileKind::Symlink, &huge)
                .unwrap_err()
                .errno,
            Errno::ENAMETOOLONG
        );
        let config = Config::default();
        assert_eq!(page_size(0, &config), config.readdir_page_size as usize);
        assert_eq!(
            page_size(u32::MAX, &config),
            config.readdir_page_size as usize
        );
        assert_eq!(page_size(3, &config), 3);
    }
}
