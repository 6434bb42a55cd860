//! The one typed configuration of SFS, read from `config.json`.
//!
//! Every option has a default (so an empty `{}` is a valid config), unknown
//! fields are refused (a typo must not silently fall back to a default), a
//! file that is not a JSON object is refused (serde would otherwise read `[]`
//! as a struct with every field defaulted), and [`Config::validate`] checks
//! values and names the field and the fix when it refuses one. Every message
//! starts with the path of the file it came from, or `config` for a config
//! built in memory, because people keep several configs side by side.
//! `config.example.json` at the repository root is `Config::default()`
//! written out, and a test keeps the two equal.

mod backend;
mod launcher;

pub use backend::{BackendConfig, BackendKind, WritebackPolicy};
pub use launcher::{LauncherConfig, LauncherKind};
use serde::{Deserialize, Serialize};
use std::path::{Path, PathBuf};

/// Which bulk-data transport the client and server use.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum TransportKind {
    /// RDMA when a device serves the server's address, TCP otherwise.
    Auto,
    /// TCP only.
    Tcp,
    /// RDMA only; refuse to start without a device.
    Rdma,
}

/// The data transport a server serves and a client uses with it: what
/// [`TransportKind`] resolved to on a machine (`Tcp` or `Rdma`), or the
/// node-local shared-memory path (`Shm`). Its [`DataTransport::name`] is
/// what `Hello` carries, the ready file and `sfs status` show, and the
/// metrics label.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash)]
pub enum DataTransport {
    Tcp,
    Rdma,
    Shm,
}

impl DataTransport {
    /// The name on the wire and in reports.
    pub const fn name(self) -> &'static str {
        match self {
            DataTransport::Tcp => "tcp",
            DataTransport::Rdma => "rdma",
            DataTransport::Shm => "shm",
        }
    }

    /// The transport a name names (as [`DataTransport::name`] spells it).
    pub fn from_name(name: &str) -> Option<DataTransport> {
        [DataTransport::Tcp, DataTransport::Rdma, DataTransport::Shm]
            .into_iter()
            .find(|t| t.name() == name)
    }
}

impl std::fmt::Display for DataTransport {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str(self.name())
    }
}

/// How a client sends metadata and control calls (the servers speak both on
/// their hostfile port).
#[derive(Clone, Copy, Debug, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum MetadataRpc {
    /// The same services and messages in SFS's own framing (sfs_rpc::lean):
    /// one `write` and one `read` per call on each side.
    Lean,
    /// gRPC over HTTP/2 (tonic): the reference interface, any gRPC client.
    Grpc,
}

/// What names a config built in memory (not read from a file) in messages.
pub const IN_MEMORY_ORIGIN: &str = "config";

/// A refused configuration: the message names the file, the field and the fix.
#[derive(Debug, thiserror::Error, PartialEq, Eq)]
pub enum ConfigError {
    #[error("{file}: cannot read: {reason}")]
    Unreadable { file: String, reason: String },
    #[error("{file}: {reason}")]
    Malformed { file: String, reason: String },
    #[error("{file}: expected a JSON object with SFS settings, found {found}")]
    NotAnObject { file: String, found: &'static str },
    #[error("{file}: field `{field}` {problem}")]
    BadValue {
        /// The config file's path, or [`IN_MEMORY_ORIGIN`].
        file: String,
        field: &'static str,
        problem: String,
    },
}

/// The kind of a JSON value as a message says it ("found an array").
fn json_kind(value: &serde_json::Value) -> &'static str {
    match value {
        serde_json::Value::Null => "null",
        serde_json::Value::Bool(_) => "a boolean",
        serde_json::Value::Number(_) => "a number",
        serde_json::Value::String(_) => "a string",
        serde_json::Value::Array(_) => "an array",
        serde_json::Value::Object(_) => "an object",
    }
}

/// Tunables of the RDMA data path (`"rdma": {...}` in config.json), in the
/// spirit of librpma's and Hartebeest's knobs. Connection and request
/// timeouts are the top-level `connect_timeout_ms` / `request_timeout_ms`.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
#[serde(default, deny_unknown_fields)]
pub struct RdmaConfig {
    /// Requests in flight per connection; also the number of pre-registered
    /// chunk buffers on each side of a connection.
    pub queue_depth: u32,
    /// Scatter/gather entries per work request (QP capability).
    pub max_sge: u32,
    /// Bytes a send may carry inline in its work request (QP capability).
    pub max_inline_data: u32,
    /// Payloads up to this size travel inside the request or response
    /// message instead of by RDMA READ/WRITE (see docs/performance.md).
    pub eager_threshold: u32,
    /// Completion-queue entries; 0 sizes it from the queue depth.
    pub cq_size: u32,
    /// Largest path MTU (256, 512, 1024, 2048 or 4096); the port's active
    /// MTU wins when smaller.
    pub path_mtu: u32,
    /// Time allowed to resolve a server's address and route.
    pub resolve_timeout_ms: u64,
    /// Local ACK timeout exponent: 4.096 µs × 2^n before a retry.
    pub ack_timeout: u8,
    /// Transport retries before a QP gives up on a silent peer (0–7).
    pub retry_count: u8,
    /// Retries after receiver-not-ready NAKs (0–7, 7 = forever).
    pub rnr_retry_count: u8,
}

impl Default for RdmaConfig {
    fn default() -> Self {
        RdmaConfig {
            queue_depth: 16,
            max_sge: 1,
            max_inline_data: 128,
            eager_threshold: 4096,
            cq_size: 0,
            path_mtu: 4096,
            resolve_timeout_ms: 2000,
            ack_timeout: 14,
            retry_count: 7,
            rnr_retry_count: 7,
        }
    }
}

impl RdmaConfig {
    /// Checks the tunables against the chunk size; names the field.
    pub fn validate(&self, chunk_size: u64) -> Result<(), ConfigError> {
        self.validate_in(chunk_size, IN_MEMORY_ORIGIN)
    }

    /// [`RdmaConfig::validate`], naming `origin` (the config file) in messages.
    fn validate_in(&self, chunk_size: u64, origin: &str) -> Result<(), ConfigError> {
        let bad = |field: &'static str, problem: String| {
            Err(ConfigError::BadValue {
                file: origin.to_string(),
                field,
                problem,
            })
        };
        if !(1..=1024).contains(&self.queue_depth) {
            return bad(
                "rdma.queue_depth",
                format!("must be from 1 to 1024, got {}", self.queue_depth),
            );
        }
        if !(1..=32).contains(&self.max_sge) {
            return bad(
                "rdma.max_sge",
                format!("must be from 1 to 32, got {}", self.max_sge),
            );
        }
        if self.max_inline_data > 4096 {
            return bad(
                "rdma.max_inline_data",
                format!("must be at most 4096, got {}", self.max_inline_data),
            );
        }
        if u64::from(self.eager_threshold) > chunk_size.min(1 << 20) {
            return bad(
                "rdma.eager_threshold",
                format!(
                    "must be at most the chunk size and 1 MiB ({}), got {}",
                    chunk_size.min(1 << 20),
                    self.eager_threshold
                ),
            );
        }
        if self.cq_size != 0 && !(3 * self.queue_depth..=1 << 20).contains(&self.cq_size) {
            return bad(
                "rdma.cq_size",
                format!(
                    "must be 0 (automatic) or from 3 × queue_depth ({}) to 1048576, got {}",
                    3 * self.queue_depth,
                    self.cq_size
                ),
            );
        }
        if ![256, 512, 1024, 2048, 4096].contains(&self.path_mtu) {
            return bad(
                "rdma.path_mtu",
                format!(
                    "must be 256, 512, 1024, 2048 or 4096, got {}",
                    self.path_mtu
                ),
            );
        }
        if !(1..=600_000).contains(&self.resolve_timeout_ms) {
            return bad(
                "rdma.resolve_timeout_ms",
                format!("must be from 1 to 600000, got {}", self.resolve_timeout_ms),
            );
        }
        if !(1..=31).contains(&self.ack_timeout) {
            return bad(
                "rdma.ack_timeout",
                format!("must be from 1 to 31, got {}", self.ack_timeout),
            );
        }
        if self.retry_count > 7 || self.rnr_retry_count > 7 {
            return bad(
                "rdma.retry_count",
                format!(
                    "retry_count and rnr_retry_count must be from 0 to 7, got {} and {}",
                    self.retry_count, self.rnr_retry_count
                ),
            );
        }
        Ok(())
    }
}

/// Settings of a whole SFS instance; servers and clients read the same file.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
#[serde(default, deny_unknown_fields)]
pub struct Config {
    /// Directory under which the shim redirects paths to SFS (clients only).
    pub mountdir: String,
    /// Root of a server's local state; each server uses `rootdir/<server name>/`
    /// for its chunk store, so several servers may share one config on one host.
    pub rootdir: String,
    /// Where a server keeps its RocksDB metadata (`metadir/<server name>/`);
    /// empty means `rootdir/<server name>/meta`.
    pub metadir: String,
    /// Cache mode (docs/staging.md): a directory every server can read (a
    /// parallel file system's path, the same on every node) whose tree the
    /// SFS namespace starts as a view of. Entries SFS has not seen are
    /// looked up there, a file's data is read through from it by chunk on
    /// first access, and `sfs stop --write-back` / `sfs stage-out
    /// --changed` write what changed back by name. Empty (the default):
    /// SFS starts empty.
    pub backing_dir: String,
    /// Hostfile to use when neither `--hostfile` nor `SFS_HOSTFILE` is given;
    /// a relative path is taken relative to the config file's directory.
    pub hosts_file: String,
    /// File holding the job secret (docs/security.md); empty means
    /// `<hostfile>.secret`. `SFS_SECRET` and `SFS_SECRET_FILE` win. A
    /// relative path is taken relative to the config file's directory.
    pub secret_file: String,
    /// Address a server binds instead of its hostfile address (e.g. `0.0.0.0`);
    /// empty means exactly the hostfile address.
    pub listen: String,
    /// Size of a data chunk in bytes: a power of two from 4 KiB to 64 MiB.
    pub chunk_size: u64,
    /// Bytes a server's chunk store may hold; 0 means "what the device holds".
    pub chunk_store_capacity: u64,
    /// Bulk-data transport: "auto", "tcp" or "rdma".
    pub transport: TransportKind,
    /// The data port is the server's hostfile port plus this offset; 0 lets the
    /// system pick one (clients learn it from the server's handshake).
    pub data_port_offset: u16,
    /// A server serves Prometheus metrics over HTTP (`GET /metrics`) on its
    /// hostfile port plus this offset, on its hostfile address (or
    /// `listen`); 0 (the default): no metrics port.
    pub metrics_port_offset: u16,
    /// Protocol of a client's metadata and control calls: "lean" or "grpc".
    pub metadata_rpc: MetadataRpc,
    /// Microseconds a client polls the socket for a lean RPC answer before
    /// it sleeps (adaptive: less when answers come later); 0 never polls.
    pub rpc_spin_us: u64,
    /// Chunk pieces up to this many bytes travel on the lean RPC connection
    /// instead of the TCP data transport (one round trip less per small
    /// I/O); 0 sends every piece over the data transport. Not used with
    /// RDMA or `metadata_rpc: "grpc"`.
    pub inline_data_bytes: u64,
    /// Chunk data to and from a server on the same machine goes through
    /// shared memory (a sealed memfd handed over a Unix socket in the
    /// server's run directory) instead of TCP/RDMA; false: never.
    pub shared_memory_data: bool,
    /// TCP data connections a client keeps to each server (many requests are in
    /// flight on each).
    pub tcp_connections_per_server: u32,
    /// Time a client waits to connect to a server before EIO/ETIMEDOUT.
    pub connect_timeout_ms: u64,
    /// Time a client waits for any single request before ETIMEDOUT.
    pub request_timeout_ms: u64,
    /// Directory entries per message of a streamed directory listing.
    pub readdir_page_size: u32,
    /// Bytes of request and answer payloads a server's TCP data path holds
    /// at once, over all connections: a request waits (and its connection
    /// is not read further) until its bytes fit. Bounds the memory that
    /// clients sending faster than the server answers — or never reading
    /// their answers — can pin.
    pub data_memory_bytes: u64,
    /// The same bound per TCP data connection, so one connection cannot
    /// take the whole server's budget. Both bounds are raised to one chunk
    /// if smaller (a whole-chunk request must fit).
    pub data_memory_per_connection_bytes: u64,
    /// Bytes the lean RPC may hold for requests in flight and their
    /// unwritten answers, over all connections (a request's body, plus the
    /// range a `read_chunk` asks for): a request waits, and its connection
    /// is not read further, until its bytes fit.
    pub rpc_memory_bytes: u64,
    /// The same bound per lean RPC connection. A single request larger
    /// than either bound still runs (alone).
    pub rpc_memory_per_connection_bytes: u64,
    /// Connections a server holds open at once over all its listeners (RPC,
    /// TCP data, shared memory, RDMA); past it a new one is refused at once
    /// with the reason. 0: half of what the open-file limit leaves after
    /// 1024 for the server itself, at least 64.
    pub max_connections: u64,
    /// Tunables of the RDMA data path (used when the transport is RDMA).
    pub rdma: RdmaConfig,
    /// The object back end that `sfs flush` writes file data to.
    pub backend: BackendConfig,
    /// How `sfs start` and `sfs clean` reach the servers of other hosts.
    pub launcher: LauncherConfig,
    /// Log filter of the servers (tracing `EnvFilter` syntax); `SFS_LOG` wins.
    pub log_level: String,
}

impl Default for Config {
    fn default() -> Self {
        Config {
            mountdir: "/tmp/sfs".into(),
            rootdir: "/tmp/sfs-root".into(),
            metadir: String::new(),
            backing_dir: String::new(),
            hosts_file: "hostfile".into(),
            secret_file: String::new(),
            listen: String::new(),
            chunk_size: 512 * 1024,
            chunk_store_capacity: 0,
            transport: TransportKind::Auto,
            data_port_offset: 1,
            metrics_port_offset: 0,
            metadata_rpc: MetadataRpc::Lean,
            rpc_spin_us: 50,
            inline_data_bytes: 64 * 1024,
            shared_memory_data: true,
            tcp_connections_per_server: 2,
            connect_timeout_ms: 3000,
            request_timeout_ms: 8000,
            readdir_page_size: 1024,
            data_memory_bytes: 256 << 20,
            data_memory_per_connection_bytes: 32 << 20,
            rpc_memory_bytes: 256 << 20,
            rpc_memory_per_connection_bytes: 32 << 20,
            max_connections: 0,
            rdma: RdmaConfig::default(),
            backend: BackendConfig::default(),
            launcher: LauncherConfig::default(),
            log_level: "info".into(),
        }
    }
}

impl Config {
    /// How long lean RPC ends poll before they sleep: `rpc_spin_us`, or
    /// zero when the hostfile puts as many servers on this machine
    /// (`local_servers`: `sfs_rpc::locality` counts them) as it has CPUs.
    /// Then the polls take the CPUs the other servers and the clients need:
    /// with 2 servers on 2 vCPUs, polling servers and clients did 21,000
    /// stats/s through the shim and sleeping ones 30,000
    /// (docs/performance.md, "Server-count scaling").
    pub fn rpc_spin(&self, local_servers: usize) -> std::time::Duration {
        let cpus = std::thread::available_parallelism().map_or(1, |n| n.get());
        if local_servers >= cpus {
            return std::time::Duration::ZERO;
        }
        std::time::Duration::from_micros(self.rpc_spin_us)
    }

    /// Reads, parses and validates a config file.
    pub fn load(file: &Path) -> Result<Config, ConfigError> {
        let text = std::fs::read_to_string(file).map_err(|e| ConfigError::Unreadable {
            file: file.display().to_string(),
            reason: e.to_string(),
        })?;
        let mut config = Config::parse(&text, &file.display().to_string())?;
        // A relative hostfile is found next to the config, not in the cwd.
        let hosts = Path::new(&config.hosts_file);
        if hosts.is_relative() {
            if let Some(dir) = file.parent().filter(|d| !d.as_os_str().is_empty()) {
                config.hosts_file = dir.join(hosts).display().to_string();
            }
        }
        let secret = Path::new(&config.secret_file);
        if !config.secret_file.is_empty() && secret.is_relative() {
            if let Some(dir) = file.parent().filter(|d| !d.as_os_str().is_empty()) {
                config.secret_file = dir.join(secret).display().to_string();
            }
        }
        Ok(config)
    }

    /// Parses and validates config text; `origin` names it in messages.
    pub fn parse(text: &str, origin: &str) -> Result<Config, ConfigError> {
        // serde reads a struct from a JSON array too, by position, so `[]`
        // would be the defaults and `"rdma": [16]` a queue depth: refuse
        // anything but objects before the typed parse. Text that is not JSON
        // at all is left to the typed parse, whose message names the field.
        if let Ok(value) = serde_json::from_str::<serde_json::Value>(text) {
            if !value.is_object() {
                return Err(ConfigError::NotAnObject {
                    file: origin.to_string(),
                    found: json_kind(&value),
                });
            }
            for (field, what) in [
                ("rdma", "RDMA"),
                ("backend", "object back end"),
                ("launcher", "launcher"),
            ] {
                if let Some(section) = value.get(field).filter(|s| !s.is_object()) {
                    return Err(ConfigError::BadValue {
                        file: origin.to_string(),
                        field,
                        problem: format!(
                            "must be a JSON object of {what} settings, found {}",
                            json_kind(section)
                        ),
                    });
                }
            }
        }
        let de = &mut serde_json::Deserializer::from_str(text);
        let config: Config =
            serde_path_to_error::deserialize(de).map_err(|e| ConfigError::Malformed {
                file: origin.to_string(),
                reason: if e.path().to_string() == "." {
                    e.inner().to_string()
                } else {
                    format!("field `{}`: {}", e.path(), e.inner())
                },
            })?;
        config.validate_in(origin)?;
        Ok(config)
    }

    /// Checks every value; the first bad one is reported with its fix. For a
    /// config built in memory: messages name it [`IN_MEMORY_ORIGIN`] (a
    /// loaded config was already checked under its file's name).
    pub fn validate(&self) -> Result<(), ConfigError> {
        self.validate_in(IN_MEMORY_ORIGIN)
    }

    /// [`Config::validate`], naming `origin` (the config file) in messages.
    fn validate_in(&self, origin: &str) -> Result<(), ConfigError> {
        let bad = |field: &'static str, problem: String| {
            Err(ConfigError::BadValue {
                file: origin.to_string(),
                field,
                problem,
            })
        };
        if !self.chunk_size.is_power_of_two() || !(4096..=64 << 20).contains(&self.chunk_size) {
            return bad(
                "chunk_size",
                format!(
                    "must be a power of two between 4096 and 67108864, got {}",
                    self.chunk_size
                ),
            );
        }
        if !self.mountdir.starts_with('/') || self.mountdir.len() < 2 {
            return bad(
                "mountdir",
                format!(
                    "must be an absolute path other than `/`, got {:?}",
                    self.mountdir
                ),
            );
        }
        if self.rootdir.is_empty() {
            return bad(
                "rootdir",
                "must name a directory, got an empty string".into(),
            );
        }
        if !self.backing_dir.is_empty() && !self.backing_dir.starts_with('/') {
            return bad(
                "backing_dir",
                format!("must be an absolute path, got {:?}", self.backing_dir),
            );
        }
        if self.hosts_file.is_empty() {
            return bad(
                "hosts_file",
                "must name a hostfile, got an empty string".into(),
            );
        }
        if !self.listen.is_empty() && self.listen.parse::<std::net::IpAddr>().is_err() {
            return bad(
                "listen",
                format!(
                    "must be an IP address such as 0.0.0.0 or empty, got {:?}",
                    self.listen
                ),
            );
        }
        if self.metrics_port_offset != 0 && self.metrics_port_offset == self.data_port_offset {
            return bad(
                "metrics_port_offset",
                format!(
                    "must differ from `data_port_offset` ({}): both would be the same port",
                    self.data_port_offset
                ),
            );
        }
        if !(1..=64).contains(&self.tcp_connections_per_server) {
            return bad(
                "tcp_connections_per_server",
                format!(
                    "must be from 1 to 64, got {}",
                    self.tcp_connections_per_server
                ),
            );
        }
        if !(1..=600_000).contains(&self.connect_timeout_ms) {
            return bad(
                "connect_timeout_ms",
                format!("must be from 1 to 600000, got {}", self.connect_timeout_ms),
            );
        }
        if !(1..=3_600_000).contains(&self.request_timeout_ms) {
            return bad(
                "request_timeout_ms",
                format!("must be from 1 to 3600000, got {}", self.request_timeout_ms),
            );
        }
        if self.rpc_spin_us > 10_000 {
            return bad(
                "rpc_spin_us",
                format!(
                    "must be from 0 (never poll) to 10000, got {}",
                    self.rpc_spin_us
                ),
            );
        }
        if self.inline_data_bytes > (1 << 20) {
            return bad(
                "inline_data_bytes",
                format!(
                    "must be from 0 (never) to 1048576, got {}",
                    self.inline_data_bytes
                ),
            );
        }
        if !(1..=100_000).contains(&self.readdir_page_size) {
            return bad(
                "readdir_page_size",
                format!("must be from 1 to 100000, got {}", self.readdir_page_size),
            );
        }
        for (field, value) in [
            (
                "data_memory_per_connection_bytes",
                self.data_memory_per_connection_bytes,
            ),
            ("data_memory_bytes", self.data_memory_bytes),
            (
                "rpc_memory_per_connection_bytes",
                self.rpc_memory_per_connection_bytes,
            ),
            ("rpc_memory_bytes", self.rpc_memory_bytes),
        ] {
            if !(1..=u64::from(u32::MAX)).contains(&value) {
                return bad(field, format!("must be from 1 to 4294967295, got {value}"));
            }
        }
        if self.max_connections > 100_000_000 {
            return bad(
                "max_connections",
                format!(
                    "must be from 0 (derived from the open-file limit) to 100000000, got {}",
                    self.max_connections
                ),
            );
        }
        self.rdma.validate_in(self.chunk_size, origin)?;
        // A writer waiting for room longer than the client waits for its
        // answer would see ETIMEDOUT instead of ENOSPC.
        if self.backend.space_wait_ms >= self.request_timeout_ms {
            return bad(
                "backend.space_wait_ms",
                format!(
                    "must be below request_timeout_ms ({}), got {}",
                    self.request_timeout_ms, self.backend.space_wait_ms
                ),
            );
        }
        self.backend.validate_in(self.chunk_size, origin)?;
        self.launcher.validate_in(origin)
    }

    /// A digest of every setting: two processes that read the same config
    /// file (the launcher and the `sfs` it runs on another host) agree on
    /// it.
    pub fn digest(&self) -> u64 {
        xxhash_rust::xxh3::xxh3_64(self.to_json_pretty().as_bytes())
    }

    /// Directory of one server's chunk store.
    pub fn chunk_dir(&self, server_name: &str) -> PathBuf {
        Path::new(&self.rootdir).join(server_name).join("chunks")
    }

    /// Directory of one server's RocksDB metadata.
    pub fn meta_dir(&self, server_name: &str) -> PathBuf {
        if self.metadir.is_empty() {
            Path::new(&self.rootdir).join(server_name).join("meta")
        } else {
            Path::new(&self.metadir).join(server_name)
        }
    }

    /// Directory of the `dir` object back end, shared by every server.
    pub fn backend_dir(&self) -> PathBuf {
        self.backend.dir(&self.rootdir)
    }

    /// Directory holding one server's lock, ready and pid files.
    pub fn run_dir(&self, server_name: &str) -> PathBuf {
        Path::new(&self.rootdir).join(server_name)
    }

    /// The config as pretty JSON (what `config.example.json` holds).
    pub fn to_json_pretty(&self) -> String {
        let mut s = serde_json::to_string_pretty(self).expect("config serialises");
        s.push('\n');
        s
    }
}

#[cfg(test)]
mod tests;
