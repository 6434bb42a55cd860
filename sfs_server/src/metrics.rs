//! What a server counts for Prometheus, and the text it answers a scrape with.
//!
//! The counters live in one [`Metrics`] per server, shared by the lean RPC
//! dispatch ([`metered::MeteredDispatch`]), the chunk handlers of the data
//! transports ([`metered::MeteredChunks`]) and the RPC listener. A request
//! costs relaxed atomic adds and one histogram bucket increment, nothing
//! more: names, labels and the figures that need the stores (entries,
//! chunk-store usage, tiering) are produced only when a scrape asks, by
//! [`scrape`] and [`render`]. [`http`] serves the text on `GET /metrics` (config
//! `metrics_port_offset`; docs/operations.md lists every metric).

pub mod grpc;
pub mod http;
pub mod metered;

use crate::service::ServerState;
use sfs_global::Errno;
use std::fmt::Write;
use std::sync::atomic::{AtomicI64, AtomicU64, Ordering};
use std::sync::Arc;
use std::time::Duration;

/// Upper bounds (seconds) of the latency histogram buckets; a last `+Inf`
/// bucket takes the rest. From a loopback metadata call (tens of µs) to a
/// chunk write that waited for room in a full store.
pub const LATENCY_BUCKETS: [f64; 10] = [
    0.000_05, 0.000_1, 0.000_25, 0.000_5, 0.001, 0.002_5, 0.01, 0.1, 1.0, 10.0,
];

/// Errnos counted one by one; a larger one counts as [`ERRNO_SLOTS`].
const ERRNO_SLOTS: usize = 134;

/// Lean method numbers are below this (`sfs_rpc::methods::METHODS`).
const METHOD_SLOTS: usize = 64;

/// A latency histogram with fixed buckets ([`LATENCY_BUCKETS`]).
#[derive(Default)]
pub struct Histogram {
    /// Observations per bucket (not cumulative; [`render`] sums them).
    buckets: [AtomicU64; LATENCY_BUCKETS.len() + 1],
    sum_ns: AtomicU64,
}

impl Histogram {
    /// Counts one observation: one bucket increment and one add.
    pub fn observe(&self, elapsed: Duration) {
        let seconds = elapsed.as_secs_f64();
        let bucket = LATENCY_BUCKETS
            .iter()
            .position(|bound| seconds <= *bound)
            .unwrap_or(LATENCY_BUCKETS.len());
        self.buckets[bucket].fetch_add(1, Ordering::Relaxed);
        let ns = u64::try_from(elapsed.as_nanos()).unwrap_or(u64::MAX);
        self.sum_ns.fetch_add(ns, Ordering::Relaxed);
    }

    /// Observations so far.
    pub fn count(&self) -> u64 {
        self.buckets.iter().map(|b| b.load(Ordering::Relaxed)).sum()
    }

    /// Appends the `_bucket`, `_sum` and `_count` lines of this histogram
    /// under `name`, with `labels` (`key="value",...`, may be empty).
    fn render(&self, out: &mut String, name: &str, labels: &str) {
        let sep = if labels.is_empty() { "" } else { "," };
        let mut cumulative = 0;
        for (i, bucket) in self.buckets.iter().enumerate() {
            cumulative += bucket.load(Ordering::Relaxed);
            let bound = match LATENCY_BUCKETS.get(i) {
                Some(bound) => bound.to_string(),
                None => "+Inf".to_string(),
            };
            let _ = writeln!(
                out,
                "{name}_bucket{{{labels}{sep}le=\"{bound}\"}} {cumulative}"
            );
        }
        let sum = self.sum_ns.load(Ordering::Relaxed) as f64 / 1e9;
        let _ = writeln!(out, "{name}_sum{{{labels}}} {sum}");
        let _ = writeln!(out, "{name}_count{{{labels}}} {cumulative}");
    }
}

/// Requests of one lean RPC method.
#[derive(Default)]
struct MethodCounters {
    requests: AtomicU64,
    latency: Histogram,
}

/// The data transports whose bytes are counted apart. `Rpc` is the chunk
/// pieces that travel inline on the lean RPC connection
/// (`inline_data_bytes`).
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Transport {
    Tcp,
    Shm,
    Rdma,
    Rpc,
}

impl Transport {
    pub const ALL: [Transport; 4] = [
        Transport::Tcp,
        Transport::Shm,
        Transport::Rdma,
        Transport::Rpc,
    ];

    pub fn name(self) -> &'static str {
        match self {
            Transport::Tcp => "tcp",
            Transport::Shm => "shm",
            Transport::Rdma => "rdma",
            Transport::Rpc => "rpc",
        }
    }
}

/// Chunk I/O of one transport.
#[derive(Default)]
pub struct TransportCounters {
    /// Chunk bytes clients wrote (into the server) and read (out of it).
    pub bytes_in: AtomicU64,
    pub bytes_out: AtomicU64,
    pub writes: AtomicU64,
    pub reads: AtomicU64,
    pub write_latency: Histogram,
    pub read_latency: Histogram,
    /// Open data connections (the inline RPC path has none of its own).
    pub connections: AtomicI64,
}

/// Failed requests by errno, per source.
struct ErrnoCounters([AtomicU64; ERRNO_SLOTS + 1]);

impl Default for ErrnoCounters {
    fn default() -> Self {
        ErrnoCounters(std::array::from_fn(|_| AtomicU64::new(0)))
    }
}

impl ErrnoCounters {
    fn count(&self, errno: Errno) {
        let slot = usize::try_from(errno.0)
            .ok()
            .filter(|n| *n < ERRNO_SLOTS)
            .unwrap_or(ERRNO_SLOTS);
        self.0[slot].fetch_add(1, Ordering::Relaxed);
    }

    /// `(errno name, failures)` of every errno seen.
    fn seen(&self) -> impl Iterator<Item = (String, u64)> + '_ {
        self.0.iter().enumerate().filter_map(|(slot, n)| {
            let n = n.load(Ordering::Relaxed);
            let name = if slot == ERRNO_SLOTS {
                "other".to_string()
            } else {
                Errno(slot as i32).name()
            };
            (n > 0).then_some((name, n))
        })
    }
}

/// The lean method number of a gRPC path's method: its last segment
/// (`GrowSize`) is the lean method's name (`grow_size`) in CamelCase.
pub fn grpc_method(path: &str) -> Option<u16> {
    let camel = path.rsplit('/').next()?;
    let mut snake = String::with_capacity(camel.len() + 4);
    for (i, c) in camel.chars().enumerate() {
        if c.is_ascii_uppercase() {
            if i > 0 {
                snake.push('_');
            }
            snake.push(c.to_ascii_lowercase());
        } else {
            snake.push(c);
        }
    }
    sfs_rpc::methods::METHODS
        .iter()
        .find(|(_, name)| *name == snake)
        .map(|(code, _)| *code)
}

/// Every counter of one server.
pub struct Metrics {
    /// By lean method number.
    methods: [MethodCounters; METHOD_SLOTS],
    /// Lean requests whose number no method has.
    unknown_methods: AtomicU64,
    /// gRPC requests, by the lean number of the method of the same name.
    grpc_methods: [MethodCounters; METHOD_SLOTS],
    /// gRPC requests for a path no method has.
    grpc_unknown: AtomicU64,
    transports: [TransportCounters; 4],
    rpc_errors: ErrnoCounters,
    data_errors: ErrnoCounters,
    /// Open lean RPC connections (gRPC connections are tonic's, not counted).
    pub rpc_connections: AtomicI64,
}

impl Default for Metrics {
    fn default() -> Self {
        Metrics {
            methods: std::array::from_fn(|_| MethodCounters::default()),
            unknown_methods: AtomicU64::new(0),
            grpc_methods: std::array::from_fn(|_| MethodCounters::default()),
            grpc_unknown: AtomicU64::new(0),
            transports: std::array::from_fn(|_| TransportCounters::default()),
            rpc_errors: ErrnoCounters::default(),
            data_errors: ErrnoCounters::default(),
            rpc_connections: AtomicI64::new(0),
        }
    }
}

impl Metrics {
    /// Counts one lean request of `method` that took `elapsed` and failed
    /// with `errno` (`None`: succeeded).
    pub fn rpc_done(&self, method: u16, elapsed: Duration, errno: Option<Errno>) {
        let known = sfs_rpc::methods::method_name(method).is_some();
        let counters = known
            .then(|| self.methods.get(usize::from(method)))
            .flatten();
        self.count_request(counters, &self.unknown_methods, elapsed, errno);
    }

    /// Counts one gRPC request for `path` (`/sfs.Metadata/GrowSize`) that
    /// took `elapsed` and failed with `errno` (`None`: succeeded).
    pub fn grpc_done(&self, path: &str, elapsed: Duration, errno: Option<Errno>) {
        let counters = grpc_method(path).and_then(|code| self.grpc_methods.get(usize::from(code)));
        self.count_request(counters, &self.grpc_unknown, elapsed, errno);
    }

    /// One request of a known method (its `counters`) or of none
    /// (`unknown`), with its failure by errno.
    fn count_request(
        &self,
        counters: Option<&MethodCounters>,
        unknown: &AtomicU64,
        elapsed: Duration,
        errno: Option<Errno>,
    ) {
        match counters {
            Some(counters) => {
                counters.requests.fetch_add(1, Ordering::Relaxed);
                counters.latency.observe(elapsed);
            }
            None => {
                unknown.fetch_add(1, Ordering::Relaxed);
            }
        }
        if let Some(errno) = errno {
            self.rpc_errors.count(errno);
        }
    }

    /// Lean requests of `method` so far.
    pub fn rpc_requests(&self, method: u16) -> u64 {
        self.methods
            .get(usize::from(method))
            .map_or(0, |m| m.requests.load(Ordering::Relaxed))
    }

    pub fn transport(&self, transport: Transport) -> &TransportCounters {
        &self.transports[transport as usize]
    }

    /// Chunk bytes clients wrote, over every transport (for `Stats`).
    pub fn data_bytes_in(&self) -> u64 {
        self.transports
            .iter()
            .map(|t| t.bytes_in.load(Ordering::Relaxed))
            .sum()
    }

    /// Chunk bytes clients read, over every transport (for `Stats`).
    pub fn data_bytes_out(&self) -> u64 {
        self.transports
            .iter()
            .map(|t| t.bytes_out.load(Ordering::Relaxed))
            .sum()
    }

    /// Counts a failed chunk read or write of the data path.
    pub fn data_error(&self, errno: Errno) {
        self.data_errors.count(errno);
    }
}

/// The figures a scrape reads from the server's state rather than from
/// counters (some need the stores, so they are gathered off the runtime).
#[derive(Clone, Debug, Default)]
pub struct Snapshot {
    /// Every request the services answered, over both protocols.
    pub requests: u64,
    pub uptime_seconds: f64,
    /// RocksDB's estimate.
    pub entries: u64,
    pub chunk_bytes: u64,
    pub capacity_bytes: u64,
    pub free_bytes: u64,
    pub tier: crate::tier::TierStatus,
}

/// One metric family: its `# HELP` and `# TYPE` lines.
fn family(out: &mut String, name: &str, kind: &str, help: &str) {
    let _ = writeln!(out, "# HELP {name} {help}");
    let _ = writeln!(out, "# TYPE {name} {kind}");
}

/// Escapes a label value as the exposition format asks.
fn label(value: &str) -> String {
    value
        .replace('\\', "\\\\")
        .replace('"', "\\\"")
        .replace('\n', "\\n")
}

/// The Prometheus text exposition (format 0.0.4) of `metrics` and
/// `snapshot`, every sample labelled `server="<server>"`.
/// Every method's name with its counters among `counters`.
fn named(
    counters: &[MethodCounters; METHOD_SLOTS],
) -> impl Iterator<Item = (&'static str, &MethodCounters)> + '_ {
    sfs_rpc::methods::METHODS
        .iter()
        .map(move |(code, name)| (*name, &counters[usize::from(*code)]))
}

pub fn render(server: &str, metrics: &Metrics, snapshot: &Snapshot) -> String {
    let server = format!("server=\"{}\"", label(server));
    let mut out = String::with_capacity(16 * 1024);
    family(
        &mut out,
        "sfs_uptime_seconds",
        "gauge",
        "Seconds since the server started.",
    );
    let uptime = snapshot.uptime_seconds;
    let _ = writeln!(out, "sfs_uptime_seconds{{{server}}} {uptime}");
    family(
        &mut out,
        "sfs_requests_total",
        "counter",
        "Metadata and control requests answered, over lean RPC and gRPC.",
    );
    let requests = snapshot.requests;
    let _ = writeln!(out, "sfs_requests_total{{{server}}} {requests}");

    family(
        &mut out,
        "sfs_rpc_requests_total",
        "counter",
        "Requests by protocol and method (the unknown method: a number or path no method has).",
    );
    for (protocol, counters, unknown) in [
        ("lean", &metrics.methods, &metrics.unknown_methods),
        ("grpc", &metrics.grpc_methods, &metrics.grpc_unknown),
    ] {
        for (name, counters) in named(counters) {
            let n = counters.requests.load(Ordering::Relaxed);
            let _ = writeln!(
                out,
                "sfs_rpc_requests_total{{{server},protocol=\"{protocol}\",method=\"{name}\"}} {n}"
            );
        }
        let unknown = unknown.load(Ordering::Relaxed);
        let _ = writeln!(
            out,
            "sfs_rpc_requests_total{{{server},protocol=\"{protocol}\",method=\"unknown\"}} {unknown}"
        );
    }

    family(
        &mut out,
        "sfs_rpc_request_duration_seconds",
        "histogram",
        "Time the server took to answer a request, by protocol and method (methods called at least once).",
    );
    for (protocol, counters) in [("lean", &metrics.methods), ("grpc", &metrics.grpc_methods)] {
        for (name, counters) in named(counters).filter(|(_, c)| c.latency.count() > 0) {
            counters.latency.render(
                &mut out,
                "sfs_rpc_request_duration_seconds",
                &format!("{server},protocol=\"{protocol}\",method=\"{name}\""),
            );
        }
    }

    // Two counters per transport in each of these families.
    type Pair = fn(&TransportCounters) -> [(&'static str, &AtomicU64); 2];
    let data_families: [(&str, &str, &str, Pair); 2] = [
        (
            "sfs_data_bytes_total",
            "Chunk bytes moved by the data path, by transport and direction (in: written by clients).",
            "direction",
            |t| [("in", &t.bytes_in), ("out", &t.bytes_out)],
        ),
        (
            "sfs_data_requests_total",
            "Chunk reads and writes, by transport and operation.",
            "op",
            |t| [("write", &t.writes), ("read", &t.reads)],
        ),
    ];
    for (name, help, key, pair) in data_families {
        family(&mut out, name, "counter", help);
        for transport in Transport::ALL {
            for (value, n) in pair(metrics.transport(transport)) {
                let _ = writeln!(
                    out,
                    "{name}{{{server},transport=\"{}\",{key}=\"{value}\"}} {}",
                    transport.name(),
                    n.load(Ordering::Relaxed)
                );
            }
        }
    }
    family(
        &mut out,
        "sfs_data_request_duration_seconds",
        "histogram",
        "Time a chunk read or write took in the chunk store, by transport and operation (used ones).",
    );
    for transport in Transport::ALL {
        let t = metrics.transport(transport);
        for (op, histogram) in [("write", &t.write_latency), ("read", &t.read_latency)] {
            if histogram.count() > 0 {
                histogram.render(
                    &mut out,
                    "sfs_data_request_duration_seconds",
                    &format!("{server},transport=\"{}\",op=\"{op}\"", transport.name()),
                );
            }
        }
    }

    family(
        &mut out,
        "sfs_errors_total",
        "counter",
        "Failed requests by source (rpc, data) and errno (errnos seen at least once).",
    );
    for (source, errors) in [("rpc", &metrics.rpc_errors), ("data", &metrics.data_errors)] {
        for (errno, n) in errors.seen() {
            let _ = writeln!(
                out,
                "sfs_errors_total{{{server},source=\"{source}\",errno=\"{errno}\"}} {n}"
            );
        }
    }

    family(
        &mut out,
        "sfs_connections",
        "gauge",
        "Open connections that proved the job secret: lean RPC and data connections by transport.",
    );
    let rpc = metrics.rpc_connections.load(Ordering::Relaxed);
    let _ = writeln!(out, "sfs_connections{{{server},kind=\"lean\"}} {rpc}");
    for transport in [Transport::Tcp, Transport::Shm, Transport::Rdma] {
        let n = metrics
            .transport(transport)
            .connections
            .load(Ordering::Relaxed);
        let _ = writeln!(
            out,
            "sfs_connections{{{server},kind=\"{}\"}} {n}",
            transport.name()
        );
    }

    // The figures read from the stores, one sample each.
    let tier = &snapshot.tier;
    let single: [(&str, &str, &str, u64); 12] = [
        (
            "sfs_metadata_entries",
            "gauge",
            "Metadata entries held (RocksDB's estimate).",
            snapshot.entries,
        ),
        (
            "sfs_chunk_store_used_bytes",
            "gauge",
            "Bytes of chunk data held in the chunk store.",
            snapshot.chunk_bytes,
        ),
        (
            "sfs_chunk_store_capacity_bytes",
            "gauge",
            "Bytes the chunk store may hold (chunk_store_capacity, or the device's size).",
            snapshot.capacity_bytes,
        ),
        (
            "sfs_chunk_store_free_bytes",
            "gauge",
            "Bytes the chunk store may still take.",
            snapshot.free_bytes,
        ),
        (
            "sfs_tier_dirty_files",
            "gauge",
            "Files with chunks not yet written back to the object back end.",
            tier.dirty_files,
        ),
        (
            "sfs_tier_dirty_bytes",
            "gauge",
            "Chunk bytes not yet written back to the object back end.",
            tier.dirty_bytes,
        ),
        (
            "sfs_tier_written_back_bytes_total",
            "counter",
            "Chunk bytes written back to the object back end.",
            tier.written_back_bytes,
        ),
        (
            "sfs_tier_evicted_bytes_total",
            "counter",
            "Chunk bytes evicted from the chunk store (their copy is in the back end).",
            tier.evicted_bytes,
        ),
        (
            "sfs_tier_fetched_bytes_total",
            "counter",
            "Chunk bytes read back from the object back end.",
            tier.fetched_bytes,
        ),
        (
            "sfs_tier_sourced_bytes_total",
            "counter",
            "Cache mode: chunk bytes read in from files of the backing directory.",
            tier.sourced_bytes,
        ),
        (
            "sfs_tier_writeback_errors_total",
            "counter",
            "Failed write-backs to the object back end.",
            tier.writeback_errors,
        ),
        (
            "sfs_tier_writeback_bytes_per_second",
            "gauge",
            "Write-back rate over the last 10 seconds.",
            tier.writeback_bytes_per_s,
        ),
    ];
    for (name, kind, help, value) in single {
        family(&mut out, name, kind, help);
        let _ = writeln!(out, "{name}{{{server}}} {value}");
    }
    out
}

/// The text a metrics scrape gets: the counters and the figures read from
/// the stores (off the runtime: the entry estimate and the device's free
/// space are system calls).
pub async fn scrape(state: Arc<ServerState>) -> String {
    let gather = state.clone();
    let stores = tokio::task::spawn_blocking(move || {
        let entries = gather.meta.entry_count().unwrap_or_else(|e| {
            tracing::warn!("metrics: cannot estimate the entries: {e}");
            0
        });
        (entries, gather.chunks.capacity(), gather.chunks.free())
    })
    .await;
    let (entries, capacity_bytes, free_bytes) = stores.unwrap_or_default();
    let snapshot = Snapshot {
        requests: state.requests(),
        uptime_seconds: state.started.elapsed().as_secs_f64(),
        entries,
        chunk_bytes: state.chunks.usage(),
        capacity_bytes,
        free_bytes,
        tier: state.chunks.status(),
    };
    render(&state.name, &state.metrics, &snapshot)
}

#[cfg(test)]
mod tests;
