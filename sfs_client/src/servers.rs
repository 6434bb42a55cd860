//! Connections from a client to every server of the hostfile.
//!
//! Each server gets, lazily, one RPC client for metadata and control — the
//! lean framing (one persistent connection, many calls in flight) or a gRPC
//! channel (HTTP/2), as config `metadata_rpc` says — and, after a `Hello`
//! handshake that checks the protocol version and chunk size and learns the
//! data endpoint, one data channel. A failed handshake is not cached: the
//! next call tries again, so a restarted server is picked up without
//! restarting the client.

use crate::pieces::SmallPiecesOverRpc;
use sfs_global::config::{DataTransport, MetadataRpc, RdmaConfig, TransportKind};
use sfs_global::hostfile::HostEntry;
use sfs_global::secret::Secret;
use sfs_global::{Errno, SfsError, SfsResult};
use sfs_rdma::rdma::RdmaChannel;
use sfs_rdma::shm::ShmChannel;
use sfs_rdma::tcp::TcpChannel;
use sfs_rdma::DataChannel;
use sfs_rpc::lean::{GrpcClients, LeanClient, Rpc};
use sfs_rpc::pb;
use std::sync::Arc;
use std::time::Duration;
use tonic::transport::Endpoint;

/// Timeouts and sizes a client needs to reach servers.
#[derive(Clone, Debug)]
pub struct ConnectOptions {
    pub connect_timeout: Duration,
    pub request_timeout: Duration,
    pub data_connections: usize,
    pub chunk_size: u64,
    /// The configured data transport: "tcp" makes a client use TCP even
    /// with a server that offers RDMA.
    pub transport: TransportKind,
    pub rdma: RdmaConfig,
    pub metadata_rpc: MetadataRpc,
    /// Chunk pieces up to this size travel on the lean RPC connection when
    /// the data transport is TCP or shared memory (0: never).
    pub inline_data_bytes: u64,
    /// Use a server's node-local shared-memory data path when it runs on
    /// this machine.
    pub shared_memory_data: bool,
    /// The job secret every connection proves (`sfs_rpc::auth`).
    pub secret: Arc<Secret>,
    /// `Hostfile::digest` and length of this client's hostfile: a server
    /// whose own differs is refused at the handshake.
    pub hostfile_digest: u64,
    pub server_count: usize,
    /// Whose metadata requests these are (`sfs_rpc::caller`): the
    /// process's credentials at each call unless fixed.
    pub caller: Arc<sfs_rpc::caller::CallerSource>,
}

/// The RPC client and data channel of one server, ready to use.
#[derive(Clone)]
pub struct ServerHandle {
    pub name: String,
    pub rpc: Rpc,
    pub data: Arc<dyn DataChannel>,
    /// Chunk pieces up to this size go on `rpc` (WriteChunk/ReadChunk),
    /// and may carry a size update or lookup; 0 when they never do.
    pub inline_limit: u64,
}

/// A server of the hostfile, connected on first use.
pub struct ServerSlot {
    entry: HostEntry,
    rpc: Rpc,
    ready: tokio::sync::OnceCell<ServerHandle>,
}

impl ServerSlot {
    /// Must be called inside the client's runtime (a gRPC channel binds to it).
    pub fn new(entry: HostEntry, options: &ConnectOptions) -> SfsResult<Self> {
        let rpc = match options.metadata_rpc {
            MetadataRpc::Lean => Rpc::Lean(Arc::new(
                LeanClient::new(
                    &entry.name,
                    &entry.endpoint(),
                    options.secret.clone(),
                    options.connect_timeout,
                    options.request_timeout,
                )
                .with_caller(options.caller.clone()),
            )),
            MetadataRpc::Grpc => {
                let uri = format!("http://{}", entry.endpoint());
                let endpoint = Endpoint::from_shared(uri.clone())
                    .map_err(|e| {
                        SfsError::invalid(format!("server {}: bad address {uri}: {e}", entry.name))
                    })?
                    .connect_timeout(options.connect_timeout)
                    .timeout(options.request_timeout)
                    .tcp_nodelay(true);
                let label = format!("server {} ({})", entry.name, entry.endpoint());
                let channel = sfs_rpc::auth::grpc_channel(
                    &endpoint,
                    entry.endpoint(),
                    options.secret.clone(),
                    label.clone(),
                    options.connect_timeout,
                );
                Rpc::Grpc(Arc::new(
                    GrpcClients::new(channel, &label).with_caller(options.caller.clone()),
                ))
            }
        };
        Ok(ServerSlot {
            entry,
            rpc,
            ready: tokio::sync::OnceCell::new(),
        })
    }

    pub fn entry(&self) -> &HostEntry {
        &self.entry
    }

    /// The lean client of this server, if that is the protocol in use.
    pub fn lean(&self) -> Option<&LeanClient> {
        match &self.rpc {
            Rpc::Lean(lean) => Some(lean),
            Rpc::Grpc(_) => None,
        }
    }

    /// The server's handles, performing the handshake if not done yet.
    pub async fn handle(&self, options: &ConnectOptions) -> SfsResult<&ServerHandle> {
        self.ready.get_or_try_init(|| self.handshake(options)).await
    }

    async fn handshake(&self, options: &ConnectOptions) -> SfsResult<ServerHandle> {
        let hello = self
            .rpc
            .hello(pb::HelloRequest {
                protocol_version: sfs_global::PROTOCOL_VERSION,
            })
            .await?;
        if hello.protocol_version != sfs_global::PROTOCOL_VERSION {
            return Err(SfsError::new(
                Errno::EPROTO,
                format!(
                    "server {} speaks protocol {}, this client {}",
                    self.entry.name,
                    hello.protocol_version,
                    sfs_global::PROTOCOL_VERSION
                ),
            ));
        }
        if hello.chunk_size != options.chunk_size {
            return Err(SfsError::invalid(format!(
                "server {} uses chunk_size {} but this client's config says {}: use one config.json for the whole job",
                self.entry.name, hello.chunk_size, options.chunk_size
            )));
        }
        self.check_identity(options, &hello)?;
        // The server names its data endpoint as its hostfile entry does: an
        // address, or a host name (resolved without blocking the runtime).
        let bad_endpoint = || {
            SfsError::new(
                Errno::EPROTO,
                format!(
                    "server {} reported a bad data endpoint {:?}",
                    self.entry.name, hello.data_endpoint
                ),
            )
        };
        let data_addr = match hello.data_endpoint.parse::<std::net::SocketAddr>() {
            Ok(addr) => addr,
            Err(_) => tokio::net::lookup_host(hello.data_endpoint.as_str())
                .await
                .map_err(|_| bad_endpoint())?
                .next()
                .ok_or_else(bad_endpoint)?,
        };
        let data: Arc<dyn DataChannel> = match self.node_local(options, &hello).await {
            Some(shm) => Arc::new(shm),
            None => self.remote_channel(options, &hello, data_addr)?,
        };
        let inline_limit = match &self.rpc {
            Rpc::Lean(_) if matches!(data.transport(), DataTransport::Tcp | DataTransport::Shm) => {
                options.inline_data_bytes
            }
            _ => 0,
        };
        let data: Arc<dyn DataChannel> = if inline_limit > 0 {
            Arc::new(SmallPiecesOverRpc {
                rpc: self.rpc.clone(),
                bulk: data,
                limit: inline_limit,
            })
        } else {
            data
        };
        tracing::debug!(server = %self.entry.name, transport = %data.transport(), %data_addr, "connected");
        Ok(ServerHandle {
            name: self.entry.name.clone(),
            rpc: self.rpc.clone(),
            data,
            inline_limit,
        })
    }

    /// Refuses a server whose hostfile is not this client's: another name
    /// or position at this address, another number of servers, or other
    /// addresses. Placement hashes over the hostfile's order, so a client
    /// that went on would put entries on servers that do not own them,
    /// where correctly configured clients never find them.
    fn check_identity(&self, options: &ConnectOptions, hello: &pb::HelloResponse) -> SfsResult<()> {
        let entry = &self.entry;
        if hello.server_name != entry.name
            || hello.server_index as usize != entry.index
            || hello.server_count as usize != options.server_count
        {
            return Err(SfsError::invalid(format!(
                "the server at {} is {} (server {} of {} in its hostfile), but this client's \
                 hostfile has {} there (server {} of {}): use one hostfile, in one order, for \
                 the whole job",
                entry.endpoint(),
                hello.server_name,
                hello.server_index as u64 + 1,
                hello.server_count,
                entry.name,
                entry.index + 1,
                options.server_count
            )));
        }
        if hello.hostfile_digest != options.hostfile_digest {
            return Err(SfsError::invalid(format!(
                "server {} read another hostfile than this client (it is at the same place in \
                 both, but other servers or addresses differ): use one hostfile, in one order, \
                 for the whole job",
                entry.name
            )));
        }
        Ok(())
    }

    /// The shared-memory data path to a server on this machine, if it
    /// offers one and it answers; `None`: use the network transport.
    async fn node_local(
        &self,
        options: &ConnectOptions,
        hello: &pb::HelloResponse,
    ) -> Option<ShmChannel> {
        if !options.shared_memory_data
            || hello.data_local_socket.is_empty()
            || hello.node_id.is_empty()
            || hello.node_id != sfs_rdma::shm::node_id()
        {
            return None;
        }
        match ShmChannel::connect(
            std::path::Path::new(&hello.data_local_socket),
            &self.entry.name,
            options.secret.clone(),
            options.chunk_size,
            options.connect_timeout,
            options.request_timeout,
        )
        .await
        {
            Ok(channel) => Some(channel),
            Err(e) => {
                tracing::info!(server = %self.entry.name, "node-local data path unusable, using the network: {}", e.message);
                None
            }
        }
    }

    /// The TCP or RDMA channel to a server, as its hello offers.
    fn remote_channel(
        &self,
        options: &ConnectOptions,
        hello: &pb::HelloResponse,
        data_addr: std::net::SocketAddr,
    ) -> SfsResult<Arc<dyn DataChannel>> {
        let rdma = match DataTransport::from_name(&hello.data_transport) {
            Some(DataTransport::Tcp) => false,
            // A server offering RDMA serves TCP on the same endpoint too, so
            // a client that cannot (or is told not to) use RDMA still works.
            Some(DataTransport::Rdma) if options.transport == TransportKind::Tcp => false,
            Some(DataTransport::Rdma) => {
                let here = sfs_rdma::rdma::select_transport(options.transport)?.chosen;
                if here != DataTransport::Rdma {
                    tracing::info!(server = %self.entry.name, "server offers RDMA but this client has no RDMA device; using TCP");
                }
                here == DataTransport::Rdma
            }
            // A node-local path is not offered as the network transport.
            None | Some(DataTransport::Shm) => {
                return Err(SfsError::not_supported(format!(
                    "server {} offers data transport {:?}, which this client does not speak",
                    self.entry.name, hello.data_transport
                )))
            }
        };
        Ok(if rdma {
            Arc::new(RdmaChannel::new(
                data_addr,
                options.secret.clone(),
                options.rdma.clone(),
                options.chunk_size,
                options.connect_timeout,
                options.request_timeout,
            ))
        } else {
            Arc::new(TcpChannel::new(
                data_addr,
                options.secret.clone(),
                options.data_connections,
                options.chunk_size,
                options.connect_timeout,
                options.request_timeout,
            ))
        })
    }
}
