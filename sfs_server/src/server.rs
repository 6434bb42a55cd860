//! Start-up, readiness and shutdown of one SFS server.
//!
//! [`run`] turns a config and a hostfile into a serving daemon, in an order
//! chosen so that every failure is reported before anything is served and
//! names its cause: find our hostfile entry, choose the data transport, lock
//! the run directory (one server per directory), open the metadata and chunk
//! stores and the object back end, restore the namespace from the back end
//! if asked, create the root directory if we own it,
//! bind both listeners, and only then announce readiness with the `ready`
//! file. On SIGTERM, SIGINT or
//! the `Shutdown` RPC it stops accepting, lets in-flight requests finish,
//! syncs the metadata WAL, removes the `ready` file and returns `Ok`.

use crate::chunk_store::ChunkStore;
use crate::meta_rocks::RocksMetadataStore;
use crate::meta_store::{now_ns, MetadataStore};
use crate::metrics::metered::{MeteredChunks, MeteredDispatch};
use crate::metrics::{Metrics, Transport};
use crate::service::chunk_control::ChunkControlService;
use crate::service::control::ControlService;
use crate::service::metadata::MetadataService;
use crate::service::ServerState;
use crate::shutdown::Shutdown;
use crate::tier::TieredStore;
use anyhow::{anyhow, bail, Context};
use sfs_global::config::{Config, DataTransport, TransportKind};
use sfs_global::distributor::Distributor;
use sfs_global::hostfile::{HostEntry, Hostfile};
use sfs_global::secret::Secret;
use sfs_global::{FileKind, Metadata};
use sfs_rpc::methods::Grpc;
use sfs_rpc::pb::{
    chunk_control_server::ChunkControlServer, control_server::ControlServer,
    metadata_server::MetadataServer,
};
use sfs_rpc::MAX_MESSAGE_BYTES;
use std::future::Future;
use std::io::{Read, Seek, Write};
use std::net::{SocketAddr, ToSocketAddrs};
use std::os::unix::fs::PermissionsExt;
use std::path::{Path, PathBuf};
use std::sync::Arc;
use std::time::Duration;
use tokio::net::TcpListener;
use tokio::signal::unix::{signal, SignalKind};

/// How long shutdown waits for in-flight requests and open listings.
const DRAIN_TIMEOUT: Duration = Duration::from_secs(30);

/// HTTP/2 streams a gRPC connection may have open at once (what they hold
/// is bounded by the memory budget; this bounds the streams' own state).
const GRPC_STREAMS_PER_CONNECTION: u32 = 128;

/// What a server needs to start.
#[derive(Clone, Debug)]
pub struct ServerOptions {
    /// The job's configuration (validated again at start).
    pub config: Config,
    /// The job's servers; this server is one of its entries.
    pub hostfile: Hostfile,
    /// This server's hostfile name (`--id`); `None` picks the one entry whose
    /// address is on this machine.
    pub server_name: Option<String>,
    /// The job secret every connection must prove; `None` finds it (or
    /// creates its file) as `sfs_global::secret::for_server` says.
    pub secret: Option<Secret>,
    /// Fill the (empty) metadata store from the back end's committed
    /// namespace checkpoint before serving (`sfs start --restore`).
    pub restore: bool,
    /// The RPC listener, bound already by whoever started the server
    /// (`sfs server --listen-fd`, a test kit); `None` binds the hostfile's
    /// address.
    pub listener: Option<PreBound>,
}

/// An RPC listener bound before the server starts, on the server's
/// hostfile address: by a supervisor that hands the socket over, or by a
/// test kit that binds port 0 and writes the port it got into the
/// hostfile, so that no other process can take the port in between. The
/// first [`run_until`] of the options takes it; a second start of the same
/// options fails rather than bind by itself.
#[derive(Clone, Debug)]
pub struct PreBound(Arc<std::sync::Mutex<Option<std::net::TcpListener>>>);

impl PreBound {
    pub fn new(listener: std::net::TcpListener) -> PreBound {
        PreBound(Arc::new(std::sync::Mutex::new(Some(listener))))
    }

    fn take(&self) -> Option<std::net::TcpListener> {
        self.0.lock().unwrap_or_else(|p| p.into_inner()).take()
    }
}

/// Runs a server until SIGTERM, SIGINT or a `Shutdown` RPC; `Ok` after a
/// clean stop.
pub async fn run(options: ServerOptions) -> anyhow::Result<()> {
    run_until(options, std::future::pending()).await
}

/// [`run`] on a new multi-threaded tokio runtime, for a synchronous `main`.
pub fn run_blocking(options: ServerOptions) -> anyhow::Result<()> {
    tokio::runtime::Builder::new_multi_thread()
        .enable_all()
        .thread_name("sfs-server")
        .build()
        .context("cannot start the tokio runtime")?
        .block_on(run(options))
}

/// [`run`], also stopping when `stop` resolves (for embedding and tests).
pub async fn run_until(
    options: ServerOptions,
    stop: impl Future<Output = ()> + Send + 'static,
) -> anyhow::Result<()> {
    let ServerOptions {
        config,
        hostfile,
        server_name,
        secret,
        restore,
        listener,
    } = options;
    config.validate()?;
    sfs_global::hostfile::validate_with_config(&config, &hostfile)?;
    // Resolved and bound once: which entry is this server (without
    // `--id`) and how its lean connections wait both ask it.
    let local = sfs_rpc::locality::local_entries(&hostfile);
    let entry = own_entry(&hostfile, server_name.as_deref(), &local)?;
    let name = entry.name.clone();
    let duplicates = sfs_rpc::locality::duplicate_addresses(&hostfile);
    if !duplicates.is_empty() {
        bail!(
            "server {name}: the hostfile names one server twice:\n  {}",
            duplicates.join("\n  ")
        );
    }
    // What the server writes (run directory, chunk files, RocksDB files
    // with path names in its WAL, the journal) is its own: other users of
    // the machine read nothing of the job's data through the file system.
    rustix::process::umask(rustix::fs::Mode::from_raw_mode(0o077));
    // Chunk buffers (512 KiB by default) always come from mmap and go back
    // to the system when freed. glibc would otherwise raise its mmap
    // threshold after the first such free and serve later buffers from the
    // heap, where memory freed after a burst of requests stays in the
    // process (RSS measured in the flood test of sfs_cli/tests/security.rs).
    // SAFETY: mallopt only sets an allocator tunable; it is thread-safe.
    unsafe {
        libc::mallopt(libc::M_MMAP_THRESHOLD, 128 * 1024);
    }
    let secret = Arc::new(match secret {
        Some(secret) => secret,
        None => {
            let (secret, source) = sfs_global::secret::for_server(&config, &hostfile)
                .map_err(|e| anyhow!("server {name}: {e}"))?;
            tracing::info!("server {name}: job secret from {source}");
            secret
        }
    });
    let transport =
        sfs_rdma::rdma::select_transport(config.transport).map_err(|e| anyhow!("{}", e.message))?;

    // Installed before anything is served, so a signal is never missed.
    let mut terminate =
        signal(SignalKind::terminate()).context("cannot install the SIGTERM handler")?;
    let mut interrupt =
        signal(SignalKind::interrupt()).context("cannot install the SIGINT handler")?;

    let run_dir = config.run_dir(&name);
    std::fs::create_dir_all(&run_dir)
        .with_context(|| format!("cannot create run directory {}", run_dir.display()))?;
    // Also when it was made by an older server under a wider umask.
    std::fs::set_permissions(&run_dir, std::fs::Permissions::from_mode(0o700))
        .with_context(|| format!("cannot make run directory {} private", run_dir.display()))?;
    let lock = RunDirLock::acquire(&run_dir)?;
    let ready_file = sfs_global::ready::Ready::path(&config, &name);
    remove_if_present(&ready_file)?;

    let (meta, chunks) = open_stores(&config, &hostfile, &entry, &run_dir, restore).await?;

    let Listeners {
        grpc: grpc_listener,
        data: data_listeners,
        data_endpoint,
        transport,
        shm_path,
        metrics: metrics_listener,
    } = bind_listeners(&config, &entry, &run_dir, transport, listener).await?;

    let shutdown = Shutdown::new();
    let metrics = Arc::new(Metrics::default());
    let state = Arc::new(ServerState::new(
        config.clone(),
        name.clone(),
        entry.index,
        hostfile.len(),
        hostfile.digest(),
        meta.clone(),
        chunks.clone(),
        transport.chosen,
        data_endpoint.clone(),
        data_listeners
            .shm
            .as_ref()
            .map(|_| shm_path.display().to_string()),
        shutdown.clone(),
        metrics.clone(),
    ));
    let places = sfs_rpc::limits::ConnectionLimit::from_config(
        config.max_connections,
        sfs_rpc::limits::raise_open_file_limit(),
        &name,
    );
    tracing::info!(
        "server {name}: at most {} connections at once (max_connections)",
        places.limit()
    );

    let data = DataTasks::spawn(
        &config,
        &name,
        data_listeners,
        &chunks,
        &metrics,
        &secret,
        &places,
        &shutdown,
    );
    let metadata = Arc::new(MetadataService::new(state.clone()));
    let chunk_control = Arc::new(ChunkControlService::new(state.clone(), metadata.clone()));
    let control = Arc::new(ControlService::new(state.clone()));
    let lean = MeteredDispatch::wrap(
        Arc::new(sfs_rpc::methods::Services {
            metadata: metadata.clone(),
            chunks: chunk_control.clone(),
            control: control.clone(),
        }),
        metrics.clone(),
    );
    let rpc_budget = sfs_rpc::lean::MemoryBudget::new(
        config.rpc_memory_bytes,
        config.rpc_memory_per_connection_bytes,
    );
    let (grpc_incoming, lean_task) = crate::rpc_listener::split(
        grpc_listener,
        lean,
        secret.clone(),
        crate::rpc_listener::Policy {
            spin: server_spin(&config, local.len(), &name),
            budget: rpc_budget.clone(),
            places: places.clone(),
        },
        metrics.clone(),
        shutdown.clone(),
    );
    let metrics_task = metrics_listener.map(|listener| {
        let state = state.clone();
        tokio::spawn(crate::metrics::http::serve(
            listener,
            move || crate::metrics::scrape(state.clone()),
            shutdown.clone(),
        ))
    });
    let grpc = grpc_server(
        grpc_incoming,
        (metadata, chunk_control, control),
        metrics.clone(),
        rpc_budget,
        config.chunk_size,
        &shutdown,
    );
    let mut grpc_task = tokio::spawn(grpc);

    let address = entry.endpoint();
    sfs_global::ready::Ready {
        pid: std::process::id(),
        name: name.clone(),
        address: address.clone(),
        data_transport: transport.chosen.name().to_string(),
        data_endpoint: data_endpoint.clone(),
    }
    .write(&ready_file)
    .with_context(|| format!("cannot write {}", ready_file.display()))?;
    tracing::info!(
        "sfs server {name} ready on {address} (data: {} {data_endpoint})",
        transport.chosen
    );

    let grpc_ended = tokio::select! {
        _ = shutdown.wait() => None,
        _ = stop => None,
        _ = terminate.recv() => {
            tracing::info!("server {name}: SIGTERM received, shutting down");
            None
        }
        _ = interrupt.recv() => {
            tracing::info!("server {name}: SIGINT received, shutting down");
            None
        }
        result = &mut grpc_task => Some(result),
    };
    let failure = match &grpc_ended {
        None => None,
        // The RPC listener ends tonic's stream of connections when a
        // shutdown starts, which tonic may see before this task does.
        Some(Ok(Ok(()))) if shutdown.is_triggered() => None,
        Some(Ok(Ok(()))) => Some(anyhow!("the gRPC server stopped unexpectedly")),
        Some(Ok(Err(e))) => Some(anyhow!("the gRPC server failed: {e}")),
        Some(Err(e)) => Some(anyhow!("the gRPC server task failed: {e}")),
    };
    shutdown.trigger();
    if grpc_ended.is_none() {
        drain(&name, "gRPC server", "requests", &mut grpc_task).await;
    }
    drain(&name, "lean RPC listener", "lean requests", lean_task).await;
    data.drain(&name, &shm_path).await;
    if let Some(task) = metrics_task {
        let _ = task.await;
    }
    chunks.stop();
    let sync = tokio::task::spawn_blocking(move || meta.sync()).await?;
    remove_if_present(&ready_file)?;
    drop(state);
    drop(lock);
    sync.map_err(|e| anyhow!("server {name}: final metadata sync failed: {e}"))?;
    match failure {
        Some(e) => Err(e.context(format!("server {name}"))),
        None => {
            tracing::info!("sfs server {name} stopped");
            Ok(())
        }
    }
}

/// Opens what a server serves from, before anything is bound: the metadata
/// store (over the backing directory in cache mode), the chunk store under
/// the tier and its object back end; restores the namespace from the back
/// end if asked, and creates the root directory if this server owns it.
async fn open_stores(
    config: &Config,
    hostfile: &Hostfile,
    entry: &HostEntry,
    run_dir: &Path,
    restore: bool,
) -> anyhow::Result<(Arc<dyn MetadataStore>, Arc<TieredStore>)> {
    let name = &entry.name;
    let meta_dir = config.meta_dir(name);
    let mut meta: Arc<dyn MetadataStore> =
        Arc::new(tokio::task::spawn_blocking(move || RocksMetadataStore::open(&meta_dir)).await??);
    if !config.backing_dir.is_empty() {
        let backing = Path::new(&config.backing_dir);
        if !backing.is_dir() {
            bail!(
                "server {name}: config: backing_dir {} is not a directory this server can read",
                backing.display()
            );
        }
        tracing::info!("server {name}: cache mode over {}", backing.display());
        meta = Arc::new(crate::backing::BackedStore::new(
            meta,
            backing,
            entry.index,
            hostfile.len(),
        ));
    }
    let (chunk_dir, chunk_size, capacity) = (
        config.chunk_dir(name),
        config.chunk_size,
        config.chunk_store_capacity,
    );
    let chunks = Arc::new(
        tokio::task::spawn_blocking(move || ChunkStore::open(&chunk_dir, chunk_size, capacity))
            .await??,
    );
    let backend = crate::backend::open(config)
        .await
        .with_context(|| format!("server {name}: cannot open the object back end"))?;
    let journal_path = run_dir.join("tier.journal");
    let chunks = {
        let settings = config.backend.clone();
        tokio::task::spawn_blocking(move || {
            TieredStore::open(chunks, backend, settings, &journal_path)
        })
        .await??
    };
    chunks.set_placement(Distributor::new(hostfile.len()), entry.index);
    if !config.backing_dir.is_empty() {
        chunks.set_cache_mode();
    }
    if restore {
        let restored =
            crate::checkpoint::restore(meta.clone(), &chunks, entry.index, hostfile.len())
                .await
                .map_err(|e| anyhow!("server {name}: cannot restore the namespace: {e}"))?;
        tracing::info!(
            "server {name}: restored {} entries of checkpoint {} ({} files read from the back end on first access)",
            restored.entries,
            restored.sequence,
            restored.files_in_backend
        );
    }
    if Distributor::new(hostfile.len()).metadata_server("/") == entry.index {
        let meta = meta.clone();
        tokio::task::spawn_blocking(move || create_root(meta.as_ref())).await??;
    }
    Ok((meta, chunks))
}

/// What a server listens on, all bound before it announces readiness.
struct Listeners {
    grpc: TcpListener,
    data: DataListeners,
    /// The TCP data listener's address as clients reach it.
    data_endpoint: String,
    /// The data transport served (TCP when RDMA was asked for under
    /// "auto" but cannot listen).
    transport: sfs_rdma::rdma::TransportChoice,
    /// Where the node-local socket is (bound or not).
    shm_path: PathBuf,
    metrics: Option<TcpListener>,
}

/// Binds the RPC port (or takes the one bound already, `pre_bound`), the
/// data port (and RDMA on it when `transport` chose it), the node-local
/// socket and the metrics port of the server `entry`.
async fn bind_listeners(
    config: &Config,
    entry: &HostEntry,
    run_dir: &Path,
    transport: sfs_rdma::rdma::TransportChoice,
    pre_bound: Option<PreBound>,
) -> anyhow::Result<Listeners> {
    let name = &entry.name;
    let grpc_addr = bind_address(config, entry)?;
    let grpc_listener = match pre_bound {
        None => TcpListener::bind(grpc_addr)
            .await
            .with_context(|| format!("server {name}: cannot bind the gRPC address {grpc_addr}"))?,
        Some(pre_bound) => take_pre_bound(name, &pre_bound, grpc_addr)?,
    };
    let data_port = entry.data_port(config.data_port_offset).ok_or_else(|| {
        anyhow!(
            "config: field `data_port_offset` {} plus port {} of server {name} exceeds 65535",
            config.data_port_offset,
            entry.port
        )
    })?;
    let data_addr = SocketAddr::new(grpc_addr.ip(), data_port);
    let data_listener = TcpListener::bind(data_addr)
        .await
        .with_context(|| format!("server {name}: cannot bind the data address {data_addr}"))?;
    let data_endpoint = HostEntry {
        port: data_listener.local_addr()?.port(),
        ..entry.clone()
    }
    .endpoint();
    // RDMA listens on the same address and port (rdmacm's own port space)
    // when a device serves it; TCP is served regardless, for clients
    // without a device.
    let mut transport = transport;
    let rdma_listener = if transport.chosen == DataTransport::Rdma {
        let rdma_addr = data_endpoint
            .to_socket_addrs()
            .ok()
            .and_then(|mut a| a.next())
            .ok_or_else(|| {
                anyhow!("server {name}: cannot resolve data endpoint {data_endpoint}")
            })?;
        match sfs_rdma::rdma::RdmaListener::bind(rdma_addr) {
            Ok(listener) => Some(listener),
            Err(e) if config.transport == TransportKind::Rdma => bail!(
                "server {name}: config.json asks for transport \"rdma\" but {}; use \"auto\" or \"tcp\"",
                e.message
            ),
            Err(e) => {
                transport = sfs_rdma::rdma::TransportChoice {
                    chosen: DataTransport::Tcp,
                    reason: format!("{}, but {}; using TCP", transport.reason, e.message),
                };
                None
            }
        }
    } else {
        None
    };
    tracing::info!(
        "server {name}: data transport {} ({})",
        transport.chosen,
        transport.reason
    );
    // Clients on this machine put chunk bytes in shared memory instead.
    // Absolute: clients in other working directories connect to it.
    let shm_path = std::path::absolute(sfs_rdma::shm::socket_path(run_dir))
        .context("the node-local socket's path")?;
    let shm_listener = if config.shared_memory_data {
        match sfs_rdma::shm::bind(&shm_path) {
            Ok(listener) => {
                tracing::info!(
                    "server {name}: node-local clients use shared memory ({})",
                    shm_path.display()
                );
                Some(listener)
            }
            Err(e) => {
                tracing::warn!(
                    "server {name}: no node-local shared-memory data path ({}: {e}); local clients use {}",
                    shm_path.display(),
                    transport.chosen
                );
                None
            }
        }
    } else {
        None
    };

    let metrics_listener =
        crate::metrics::http::bind(config.metrics_port_offset, entry, grpc_addr.ip()).await?;
    Ok(Listeners {
        grpc: grpc_listener,
        data: DataListeners {
            tcp: data_listener,
            shm: shm_listener,
            rdma: rdma_listener,
        },
        data_endpoint,
        transport,
        shm_path,
        metrics: metrics_listener,
    })
}

/// The gRPC server on the connections the RPC listener hands it (those
/// that did not speak the lean protocol), over the same services, until
/// `shutdown`.
fn grpc_server(
    incoming: crate::rpc_listener::GrpcIncoming,
    (metadata, chunk_control, control): (
        Arc<MetadataService>,
        Arc<ChunkControlService>,
        Arc<ControlService>,
    ),
    metrics: Arc<Metrics>,
    rpc_budget: sfs_rpc::lean::MemoryBudget,
    chunk_size: u64,
    shutdown: &Shutdown,
) -> impl Future<Output = Result<(), tonic::transport::Error>> + Send + 'static {
    tonic::transport::Server::builder()
        .tcp_nodelay(true)
        // Every gRPC request counted by method (`/metrics`) and logged at
        // debug level, as the lean dispatch's are.
        .layer(crate::metrics::grpc::GrpcMetricsLayer::new(metrics))
        // Each request reserves bytes of the RPC port's memory budget until
        // its answer is sent; a connection has at most this many streams.
        .layer(crate::grpc_budget::GrpcBudgetLayer::new(
            rpc_budget, chunk_size,
        ))
        .max_concurrent_streams(GRPC_STREAMS_PER_CONNECTION)
        // The caller of each metadata request (its `sfs-caller` header)
        // becomes a request extension, as the lean server puts it.
        .add_service(tonic::service::interceptor::InterceptedService::new(
            MetadataServer::new(Grpc(metadata))
                .max_decoding_message_size(MAX_MESSAGE_BYTES)
                .max_encoding_message_size(MAX_MESSAGE_BYTES),
            sfs_rpc::caller::grpc_interceptor,
        ))
        // `SetSource` carries its caller too.
        .add_service(tonic::service::interceptor::InterceptedService::new(
            ChunkControlServer::new(Grpc(chunk_control))
                .max_decoding_message_size(MAX_MESSAGE_BYTES)
                .max_encoding_message_size(MAX_MESSAGE_BYTES),
            sfs_rpc::caller::grpc_interceptor,
        ))
        .add_service(
            ControlServer::new(Grpc(control))
                .max_decoding_message_size(MAX_MESSAGE_BYTES)
                .max_encoding_message_size(MAX_MESSAGE_BYTES),
        )
        // The RPC listener sets TCP_NODELAY on every connection it accepts.
        .serve_with_incoming_shutdown(incoming, shutdown.wait())
}

/// What the data path listens on: TCP always; node-local clients'
/// shared-memory socket and RDMA when they could be bound.
struct DataListeners {
    tcp: TcpListener,
    shm: Option<tokio::net::UnixListener>,
    rdma: Option<sfs_rdma::rdma::RdmaListener>,
}

/// The data path's serving tasks: TCP always, node-local shared memory and
/// RDMA when they were bound.
struct DataTasks {
    tcp: tokio::task::JoinHandle<std::io::Result<()>>,
    shm: Option<tokio::task::JoinHandle<std::io::Result<()>>>,
    rdma: Option<tokio::task::JoinHandle<sfs_global::SfsResult<()>>>,
}

impl DataTasks {
    /// Serves chunks from `chunks` on each listener (counted per
    /// transport in `metrics`), every connection proving `secret` and
    /// taking one of `places`, until `shutdown`.
    #[allow(clippy::too_many_arguments)]
    fn spawn(
        config: &Config,
        name: &str,
        listeners: DataListeners,
        chunks: &Arc<TieredStore>,
        metrics: &Arc<Metrics>,
        secret: &Arc<Secret>,
        places: &sfs_rpc::limits::ConnectionLimit,
        shutdown: &Shutdown,
    ) -> DataTasks {
        let chunk_size = config.chunk_size;
        let DataListeners {
            tcp: data_listener,
            shm: shm_listener,
            rdma: rdma_listener,
        } = listeners;
        let metered = |transport| MeteredChunks::wrap(chunks.clone(), metrics.clone(), transport);
        let data_task = tokio::spawn(sfs_rdma::tcp::serve(
            data_listener,
            metered(Transport::Tcp),
            secret.clone(),
            chunk_size,
            sfs_rdma::tcp::MemoryLimits::from_config(config),
            places.clone(),
            shutdown.wait(),
        ));
        let shm_task = shm_listener.map(|listener| {
            tokio::spawn(sfs_rdma::shm::serve(
                listener,
                name.to_string(),
                metered(Transport::Shm),
                secret.clone(),
                chunk_size,
                places.clone(),
                shutdown.wait(),
            ))
        });
        let rdma_task = rdma_listener.map(|listener| {
            tokio::spawn(listener.serve(
                metered(Transport::Rdma),
                secret.clone(),
                chunk_size,
                config.rdma.clone(),
                places.clone(),
                shutdown.wait(),
            ))
        });
        DataTasks {
            tcp: data_task,
            shm: shm_task,
            rdma: rdma_task,
        }
    }

    /// Waits for each to finish its transfers (shutdown was triggered);
    /// removes the node-local socket at `shm_path`.
    async fn drain(self, name: &str, shm_path: &Path) {
        drain(name, "data listener", "data transfers", self.tcp).await;
        if let Some(task) = self.shm {
            drain(name, "shared-memory listener", "node-local transfers", task).await;
            let _ = std::fs::remove_file(shm_path);
        }
        if let Some(task) = self.rdma {
            drain(name, "RDMA listener", "RDMA transfers", task).await;
        }
    }
}

/// [`Config::rpc_spin`] for this server's lean connections, logged when
/// it turns polling off.
fn server_spin(config: &Config, local_servers: usize, name: &str) -> Duration {
    let spin = config.rpc_spin(local_servers);
    if spin.is_zero() && config.rpc_spin_us > 0 {
        tracing::info!(
            "server {name}: as many servers of the hostfile on this machine as CPUs: lean connections sleep instead of polling"
        );
    }
    spin
}

/// Waits up to [`DRAIN_TIMEOUT`] for a task that is finishing its in-flight
/// `work` after the shutdown signal; logs how it ended.
async fn drain<E: std::fmt::Display>(
    name: &str,
    what: &str,
    work: &str,
    task: impl Future<Output = Result<Result<(), E>, tokio::task::JoinError>>,
) {
    match tokio::time::timeout(DRAIN_TIMEOUT, task).await {
        Ok(Ok(Ok(()))) => {}
        Ok(Ok(Err(e))) => tracing::warn!("server {name}: {what} ended with an error: {e}"),
        Ok(Err(e)) => tracing::warn!("server {name}: {what} task failed: {e}"),
        Err(_) => tracing::warn!(
            "server {name}: {work} still running after {DRAIN_TIMEOUT:?}; stopping anyway"
        ),
    }
}

/// Finds this server's hostfile entry: by name, else the one of `local`
/// (the entries on this machine).
fn own_entry(
    hostfile: &Hostfile,
    name: Option<&str>,
    local: &[&HostEntry],
) -> anyhow::Result<HostEntry> {
    if let Some(name) = name {
        return hostfile.by_name(name).cloned().ok_or_else(|| {
            let names: Vec<&str> = hostfile.hosts.iter().map(|h| h.name.as_str()).collect();
            anyhow!(
                "server name {name:?} is not in the hostfile (it lists: {})",
                names.join(", ")
            )
        });
    }
    match local {
        [one] => Ok((*one).clone()),
        [] => {
            bail!("no hostfile entry has an address of this machine; pass --id NAME to choose one")
        }
        several => {
            let names: Vec<&str> = several.iter().map(|h| h.name.as_str()).collect();
            bail!(
                "several hostfile entries are on this machine ({}); pass --id NAME to choose which server to start",
                names.join(", ")
            )
        }
    }
}

/// The listener handed over in `pre_bound`, checked to be bound to the
/// address the server would have bound (`grpc_addr`): a socket on another
/// port would serve clients that look for the server elsewhere.
fn take_pre_bound(
    name: &str,
    pre_bound: &PreBound,
    grpc_addr: SocketAddr,
) -> anyhow::Result<TcpListener> {
    let listener = pre_bound.take().ok_or_else(|| {
        anyhow!("server {name}: the listener handed over was taken by an earlier start")
    })?;
    let bound = listener
        .local_addr()
        .with_context(|| format!("server {name}: the listener handed over has no address"))?;
    if bound != grpc_addr {
        bail!("server {name}: the listener handed over is bound to {bound}, not to its RPC address {grpc_addr}");
    }
    listener.set_nonblocking(true).with_context(|| {
        format!("server {name}: cannot make the listener handed over non-blocking")
    })?;
    TcpListener::from_std(listener)
        .with_context(|| format!("server {name}: cannot serve on the listener handed over"))
}

/// The gRPC address: the hostfile's, or `config.listen` with its port.
fn bind_address(config: &Config, entry: &HostEntry) -> anyhow::Result<SocketAddr> {
    if config.listen.is_empty() {
        return sfs_rpc::locality::socket_addr(entry).with_context(|| {
            format!(
                "server {}: cannot resolve its hostfile address {}",
                entry.name,
                entry.endpoint()
            )
        });
    }
    let ip = config.listen.parse().with_context(|| {
        format!(
            "config: field `listen` is not an IP address: {:?}",
            config.listen
        )
    })?;
    Ok(SocketAddr::new(ip, entry.port))
}

/// Creates the root directory entry if it does not exist yet.
fn create_root(meta: &dyn MetadataStore) -> sfs_global::SfsResult<()> {
    let mut root = Metadata::new(
        FileKind::Directory,
        0o755,
        crate::service::metadata::new_file_id(),
        now_ns(),
    );
    root.uid = rustix::process::getuid().as_raw();
    root.gid = rustix::process::getgid().as_raw();
    if meta.create("/", root, false)?.1 {
        tracing::info!("created the root directory");
        meta.sync()?;
    }
    Ok(())
}

fn remove_if_present(path: &Path) -> anyhow::Result<()> {
    match std::fs::remove_file(path) {
        Ok(()) => Ok(()),
        Err(e) if e.kind() == std::io::ErrorKind::NotFound => Ok(()),
        Err(e) => Err(e).with_context(|| format!("cannot remove {}", path.display())),
    }
}

/// An exclusive lock on `run_dir/lock`, held for the server's lifetime, so
/// two servers never share one metadata database or chunk directory. The
/// holder's pid is written into the file for the message of the loser.
struct RunDirLock {
    _file: std::fs::File,
}

impl RunDirLock {
    fn acquire(run_dir: &Path) -> anyhow::Result<Self> {
        let path: PathBuf = run_dir.join("lock");
        let mut file = std::fs::OpenOptions::new()
            .read(true)
            .write(true)
            .create(true)
            .truncate(false)
            .open(&path)
            .with_context(|| format!("cannot open lock file {}", path.display()))?;
        if fs2::FileExt::try_lock_exclusive(&file).is_err() {
            let mut holder = String::new();
            let _ = file.read_to_string(&mut holder);
            let holder = holder.trim();
            let holder = if holder.is_empty() { "unknown" } else { holder };
            bail!(
                "another SFS server (pid {holder}) holds the lock file {}: stop it, or give this server its own rootdir/name",
                path.display()
            );
        }
        file.set_len(0)
            .and_then(|()| file.rewind())
            .and_then(|()| writeln!(file, "{}", std::process::id()))
            .with_context(|| format!("cannot write lock file {}", path.display()))?;
        Ok(RunDirLock { _file: file })
    }
}

#[cfg(test)]
mod tests;
