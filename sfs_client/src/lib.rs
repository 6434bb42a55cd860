//! The SFS client library: POSIX-shaped calls on the SFS namespace.
//!
//! A [`Client`] knows every server of the hostfile and talks to them over
//! `sfs_rpc` for metadata (the lean framing or gRPC, config `metadata_rpc`)
//! and over a data transport for chunk bytes (`sfs_rdma`). Paths are SFS paths (`/` is the root of the mount); the
//! LD_PRELOAD shim maps host paths onto them. Every call is blocking (it runs
//! on the client's own small tokio runtime), thread-safe, bounded in time by
//! the config's timeouts, and fails with an [`SfsError`] whose errno is what
//! the POSIX call would set.
//!
//! - [`io`]: open, read/write/seek/sync on descriptors, over the open-file
//!   table (`files`) and the chunk data path (`data`).
//! - [`namespace`]: stat, mkdir, unlink, rename, symlinks, attributes.
//! - [`dir`]: streamed directory listings.
//! - [`flush`]: copy a file's data to the object back end.
//! - [`permissions`]: which server checks the caller's permissions on what.
//! - [`capi`]: the C ABI (`include/sfs.h`).
//! - [`embed`]: what the LD_PRELOAD shim needs beyond POSIX: descriptors at
//!   numbers it chooses, and a fresh runtime in a forked child.

mod calls;
pub mod capi;
mod data;
pub mod dir;
pub mod dir_times;
pub mod embed;
mod files;
pub mod flush;
pub mod inventory;
pub mod io;
pub mod links;
pub mod namespace;
pub mod orphans;
pub mod permissions;
pub mod pieces;
pub mod servers;
pub mod walk;
pub mod xattrs;

use futures::future::join_all;
use servers::{ConnectOptions, ServerHandle, ServerSlot};
use sfs_global::config::Config;
use sfs_global::distributor::Distributor;
use sfs_global::hostfile::Hostfile;
use sfs_rpc::lean::spin::Spin;
use std::future::Future;
use std::sync::Arc;
use std::task::Poll;
use std::time::Duration;

pub use dir::{DirEntry, ReadDir};
pub use files::{DescriptorOffsets, OpenFlags, Whence};
pub use flush::{CheckpointStats, FlushStats};
pub use inventory::Inventory;
pub use sfs_global::access::Caller;
pub use sfs_global::holdings::Held;
pub use sfs_global::{Errno, FileId, FileKind, Metadata, SfsError, SfsResult};
pub use sfs_rpc::caller::ids_changed;
/// What one server's `Stats` call answers ([`Client::server_stats`]).
pub use sfs_rpc::pb::StatsResponse as ServerStats;

/// Names in the root that no listing shows: files unlinked while open
/// (crate::orphans) and the shared entries of hard-linked files
/// (crate::links).
pub fn hidden_in_root(name: &str) -> bool {
    name.starts_with(orphans::ORPHAN_PREFIX)
        || name.starts_with(sfs_global::metadata::SHARED_PREFIX)
}

/// Totals of the chunk stores of all servers (for `statfs`).
#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub struct FsStats {
    pub capacity_bytes: u64,
    pub free_bytes: u64,
    pub used_bytes: u64,
    pub entries: u64,
    pub servers: usize,
    pub chunk_size: u64,
}

/// A client of one SFS instance. Cheap to share between threads (`Arc`).
pub struct Client {
    pub(crate) config: Config,
    pub(crate) distributor: Distributor,
    pub(crate) servers: Vec<ServerSlot>,
    pub(crate) options: ConnectOptions,
    pub(crate) files: files::FileTable,
    pub(crate) orphans: orphans::Orphans,
    /// Parent directories' attributes a removal's permission check saw
    /// (reused briefly: [`permissions::ParentCache`]).
    pub(crate) parents: permissions::ParentCache,
    /// Where descriptor offsets live when an embedder keeps them
    /// ([`DescriptorOffsets`]); `None`: in the open files.
    pub(crate) descriptor_offsets: Option<std::sync::Arc<dyn DescriptorOffsets>>,
    /// Cache mode: files taken from the backing directory whose source this
    /// client told their chunks' servers ([`Client::tell_source`]).
    pub(crate) sourced: std::sync::Mutex<std::collections::HashSet<FileId>>,
    /// Files this client saw hard-linked: their attributes are at their
    /// shared entries (crate::links). Read on every I/O call, written once
    /// per file.
    pub(crate) shared: std::sync::RwLock<std::collections::HashSet<FileId>>,
    /// Directories whose mtime and ctime wait to advance (crate::dir_times).
    pub(crate) dir_times: dir_times::DirTimes,
    /// How long a waiting call polls for answers before sleeping.
    spin: std::sync::OnceLock<Spin>,
    /// [`Client::local_servers`], once known.
    local_servers: std::sync::OnceLock<usize>,
    runtime: tokio::runtime::Runtime,
}

impl Drop for Client {
    /// Sends the directory times still waiting (crate::dir_times), unless
    /// dropped inside an async runtime, where it cannot wait for them.
    fn drop(&mut self) {
        if tokio::runtime::Handle::try_current().is_err() {
            self.flush_dir_times();
        }
    }
}

impl Client {
    /// A client for the servers of `hostfile` using `config`, with the job
    /// secret found as `sfs_global::secret::for_client` says (EACCES, naming
    /// where it looked, when there is none). Connects lazily: no server is
    /// contacted until the first call that needs it.
    pub fn new(config: Config, hostfile: Hostfile) -> SfsResult<Client> {
        let (secret, _) =
            sfs_global::secret::for_client(&config, &hostfile, sfs_global::secret::environment)
                .map_err(|e| SfsError::new(sfs_global::Errno::EACCES, e))?;
        Client::with_secret(config, hostfile, secret)
    }

    /// [`Client::new`] with the job secret given.
    pub fn with_secret(
        config: Config,
        hostfile: Hostfile,
        secret: sfs_global::secret::Secret,
    ) -> SfsResult<Client> {
        config
            .validate()
            .map_err(|e| SfsError::invalid(e.to_string()))?;
        let options = ConnectOptions {
            connect_timeout: Duration::from_millis(config.connect_timeout_ms),
            request_timeout: Duration::from_millis(config.request_timeout_ms),
            data_connections: config.tcp_connections_per_server as usize,
            chunk_size: config.chunk_size,
            transport: config.transport,
            rdma: config.rdma.clone(),
            metadata_rpc: config.metadata_rpc,
            inline_data_bytes: config.inline_data_bytes,
            shared_memory_data: config.shared_memory_data,
            secret: std::sync::Arc::new(secret),
            hostfile_digest: hostfile.digest(),
            server_count: hostfile.len(),
            caller: Arc::default(),
        };
        // A current-thread runtime: the calling thread drives the I/O itself
        // inside `block_on`, so a call costs no thread hand-offs (a
        // multi-threaded runtime measured 30–45% slower per metadata call,
        // docs/performance.md) and the client starts no threads of its own,
        // which the LD_PRELOAD shim wants. Several application threads may
        // call at once; tokio hands the driver between them.
        let runtime = tokio::runtime::Builder::new_current_thread()
            .enable_all()
            .build()
            .map_err(|e| SfsError::io(format!("cannot start the client runtime: {e}")))?;
        let servers = {
            let _guard = runtime.enter();
            hostfile
                .hosts
                .iter()
                .map(|h| ServerSlot::new(h.clone(), &options))
                .collect::<SfsResult<Vec<_>>>()?
        };
        Ok(Client {
            distributor: Distributor::new(servers.len()),
            config,
            servers,
            options,
            files: files::FileTable::default(),
            orphans: orphans::Orphans::default(),
            parents: permissions::ParentCache::default(),
            descriptor_offsets: None,
            sourced: Default::default(),
            shared: Default::default(),
            dir_times: Default::default(),
            spin: std::sync::OnceLock::new(),
            local_servers: std::sync::OnceLock::new(),
            runtime,
        })
    }

    /// A client from a config file and a hostfile on disk.
    pub fn from_files(config: &std::path::Path, hostfile: &std::path::Path) -> SfsResult<Client> {
        let config = Config::load(config).map_err(|e| SfsError::invalid(e.to_string()))?;
        let hostfile = Hostfile::load(hostfile).map_err(|e| SfsError::invalid(e.to_string()))?;
        Client::new(config, hostfile)
    }

    /// Makes every later request act for `caller` (`None`: for this
    /// process's effective uid, gid and groups at the time of each call,
    /// the default). For tools that act on a user's behalf, and tests; the
    /// servers check permissions against it (docs/semantics.md).
    pub fn set_caller(&self, caller: Option<Caller>) {
        self.options.caller.set(caller);
    }

    pub fn config(&self) -> &Config {
        &self.config
    }

    pub fn server_count(&self) -> usize {
        self.servers.len()
    }

    /// Runs a future to completion on the client's runtime.
    ///
    /// When the future cannot go on and a lean RPC call is waiting, the
    /// calling thread polls the servers' sockets for answers for up to
    /// `rpc_spin_us` (adaptive, `sfs_rpc::lean::spin`) before it lets the
    /// runtime sleep in `epoll_wait`: a sleep and a wake-up cost more than
    /// a loopback or fast-network round trip. Polling here, not inside each
    /// call, means every branch of a call (a write's data and size update,
    /// a broadcast to all servers) has sent its request before anyone
    /// waits.
    pub(crate) fn block_on<F: Future>(&self, future: F) -> F::Output {
        // On the heap: the runtime moves what it is given several times on
        // its way in, and a call's future is kilobytes.
        let mut future = Box::pin(future);
        self.runtime.block_on(async {
            std::future::poll_fn(|cx| loop {
                if let Poll::Ready(output) = future.as_mut().poll(cx) {
                    return Poll::Ready(output);
                }
                let waiting = self
                    .servers
                    .iter()
                    .any(|s| s.lean().is_some_and(|l| l.waiting()));
                if !waiting
                    || self
                        .spin()
                        .poll(|| self.poll_answers().then_some(()))
                        .is_none()
                {
                    return Poll::Pending;
                }
            })
            .await
        })
    }

    /// How long a waiting call polls its sockets before it sleeps
    /// (`Config::rpc_spin`): decided when a call first waits, since it asks
    /// the resolver and the kernel which servers are on this machine — a
    /// process that never waits on a server never asks.
    fn spin(&self) -> &Spin {
        self.spin
            .get_or_init(|| Spin::new(self.config.rpc_spin(self.local_servers())))
    }

    /// How many servers of the hostfile are on this machine: asked of the
    /// resolver and the kernel once (`sfs_rpc::locality`), when first
    /// needed (polling, node-local locks).
    pub(crate) fn local_servers(&self) -> usize {
        *self.local_servers.get_or_init(|| {
            self.servers
                .iter()
                .filter(|s| sfs_rpc::locality::is_local(s.entry()))
                .count()
        })
    }

    /// Hands every lean answer that has arrived to its caller; true if any.
    fn poll_answers(&self) -> bool {
        let mut delivered = false;
        for slot in &self.servers {
            if let Some(lean) = slot.lean() {
                delivered |= lean.poll_answers();
            }
        }
        delivered
    }

    /// Handles of server `index`, connecting if needed.
    pub(crate) async fn server(&self, index: usize) -> SfsResult<&ServerHandle> {
        self.servers[index].handle(&self.options).await
    }

    /// Handles of the server owning `path`'s metadata.
    pub(crate) async fn owner(&self, path: &str) -> SfsResult<&ServerHandle> {
        self.server(self.distributor.metadata_server(path)).await
    }

    /// Runs `call` against every server at once; the first error wins.
    pub(crate) async fn on_all_servers<'a, T, F, Fut>(&'a self, call: F) -> SfsResult<Vec<T>>
    where
        F: Fn(&'a ServerHandle) -> Fut,
        Fut: Future<Output = SfsResult<T>>,
    {
        let calls = (0..self.servers.len()).map(|i| {
            let call = &call;
            async move { call(self.server(i).await?).await }
        });
        join_all(calls).await.into_iter().collect()
    }

    /// Capacity and usage summed over all servers.
    pub fn statfs(&self) -> SfsResult<FsStats> {
        self.block_on(async {
            let stats = self
                .on_all_servers(|h| h.rpc.stats(sfs_rpc::pb::Empty {}))
                .await?;
            let mut total = FsStats {
                servers: stats.len(),
                chunk_size: self.config.chunk_size,
                ..FsStats::default()
            };
            for s in stats {
                total.capacity_bytes += s.capacity_bytes;
                total.free_bytes += s.free_bytes;
                total.used_bytes += s.chunk_bytes;
                total.entries += s.entries;
            }
            Ok(total)
        })
    }

    /// Per-server statistics, in hostfile order; an unreachable server is an
    /// `Err` in its slot rather than failing the whole call.
    pub fn server_stats(&self) -> Vec<(String, String, SfsResult<sfs_rpc::pb::StatsResponse>)> {
        self.block_on(async {
            let calls = self.servers.iter().enumerate().map(|(i, slot)| async move {
                let result =
                    async { self.server(i).await?.rpc.stats(sfs_rpc::pb::Empty {}).await }.await;
                (slot.entry().name.clone(), slot.entry().endpoint(), result)
            });
            join_all(calls).await
        })
    }

    /// The data transport this client uses with each server, in hostfile
    /// order; `None` for a server it cannot reach. Connects to every
    /// server (the handshake decides the transport).
    pub fn data_transports(&self) -> Vec<Option<sfs_global::config::DataTransport>> {
        self.block_on(async {
            let calls = (0..self.servers.len())
                .map(|i| async move { self.server(i).await.ok().map(|h| h.data.transport()) });
            join_all(calls).await
        })
    }

    /// Asks server `index` to shut down gracefully.
    pub fn shutdown_server(&self, index: usize) -> SfsResult<()> {
        self.block_on(async {
            self.server(index)
                .await?
                .rpc
                .shutdown(sfs_rpc::pb::Empty {})
                .await
                .map(|_| ())
        })
    }
}
