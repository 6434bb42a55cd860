//! One transport conformance suite, run against every transport behind
//! `DataChannel` / `ChunkHandler`: TCP and node-local shared memory always,
//! RDMA when a device exists.
//!
//! Each case is a generic body over a [`Transport`] (start a server on an
//! address, open a client channel to it). The RDMA cases need an RDMA
//! device and an address it serves, given as `SFS_RDMA_TEST_ADDR` (the
//! Soft-RoCE VM of `scripts/rdma-vm-test.sh` sets it). Without a device they
//! are registered as *ignored* and print "skipped: no RDMA device", so a run
//! without RDMA never counts them as passed.

use libtest_mimic::{Arguments, Failed, Trial};
use sfs_global::config::RdmaConfig;
use sfs_global::{Errno, FileId, SfsError, SfsResult};
use sfs_rdma::memory::MemoryChunks;
use sfs_rdma::rdma::proto::Descriptor;
use sfs_rdma::rdma::{rdma_devices, RdmaChannel, RdmaListener};
use sfs_rdma::shm::ShmChannel;
use sfs_rdma::tcp::{serve, TcpChannel};
use sfs_rdma::{ChunkHandler, ChunkRef, DataChannel};
use std::net::{IpAddr, SocketAddr};
use std::sync::atomic::{AtomicU16, Ordering};
use std::sync::Arc;
use std::time::{Duration, Instant};
use tokio::sync::oneshot;

/// The job secret of these servers and clients.
fn secret() -> std::sync::Arc<sfs_global::secret::Secret> {
    std::sync::Arc::new(sfs_global::secret::Secret::from_bytes([7; 32]))
}

const CHUNK: u64 = 256 * 1024;
const REQUEST_TIMEOUT: Duration = Duration::from_secs(10);

/// A running server: stops (and is awaited) on `stop`.
struct Server {
    addr: SocketAddr,
    stop: Option<oneshot::Sender<()>>,
    task: tokio::task::JoinHandle<()>,
}

impl Server {
    /// Runs `serve` on a task; its argument resolves when the server is
    /// told to stop.
    fn spawn<F>(
        addr: SocketAddr,
        serve: impl FnOnce(futures::future::BoxFuture<'static, ()>) -> F,
    ) -> Server
    where
        F: std::future::Future<Output = ()> + Send + 'static,
    {
        let (tx, rx) = oneshot::channel::<()>();
        let task = tokio::spawn(serve(Box::pin(async move {
            let _ = rx.await;
        })));
        Server {
            addr,
            stop: Some(tx),
            task,
        }
    }

    async fn stop(mut self) {
        let _ = self.stop.take().map(|s| s.send(()));
        tokio::time::timeout(Duration::from_secs(20), &mut self.task)
            .await
            .expect("server stops within 20 s")
            .expect("server task");
    }
}

/// What the suite needs of a transport.
trait Transport: Send + Sync {
    fn name(&self) -> &'static str;
    /// Payloads up to this size travel inside the messages (RDMA only).
    fn eager_threshold(&self) -> u64 {
        u64::from(RdmaConfig::default().eager_threshold)
    }
    /// Starts a server on `addr` (port 0 = a fresh one).
    fn start(
        &self,
        store: Arc<MemoryChunks>,
        addr: Option<SocketAddr>,
    ) -> futures::future::BoxFuture<'_, Server>;
    fn channel(&self, addr: SocketAddr) -> Arc<dyn DataChannel>;
    /// The RDMA channel type, for descriptor tests.
    fn rdma_channel(&self, _addr: SocketAddr) -> Option<RdmaChannel> {
        None
    }
    /// An RDMA channel whose eager threshold differs from the server's.
    fn rdma_channel_with_eager(&self, _addr: SocketAddr, _threshold: u32) -> Option<RdmaChannel> {
        None
    }
}

struct Tcp;

impl Transport for Tcp {
    fn name(&self) -> &'static str {
        "tcp"
    }
    fn start(
        &self,
        store: Arc<MemoryChunks>,
        addr: Option<SocketAddr>,
    ) -> futures::future::BoxFuture<'_, Server> {
        Box::pin(async move {
            let listener =
                tokio::net::TcpListener::bind(addr.unwrap_or(([127, 0, 0, 1], 0).into()))
                    .await
                    .expect("bind");
            let addr = listener.local_addr().unwrap();
            Server::spawn(addr, |stop| async move {
                serve(listener, store, secret(), CHUNK, sfs_rdma::tcp::MemoryLimits::from_config(&sfs_global::config::Config::default()), sfs_rpc::limits::ConnectionLimit::new(4096, "s0"), stop)
                    .await
                    .expect("tcp serve");
            })
        })
    }
    fn channel(&self, addr: SocketAddr) -> Arc<dyn DataChannel> {
        Arc::new(TcpChannel::new(
            addr,
            secret(),
            2,
            CHUNK,
            Duration::from_secs(3),
            REQUEST_TIMEOUT,
        ))
    }
}

/// The node-local transport: a server's "address" names its socket, a
/// file in one directory per test process (the port is a counter).
struct Shm {
    dir: tempfile::TempDir,
    next: AtomicU16,
}

impl Shm {
    fn path(&self, addr: SocketAddr) -> std::path::PathBuf {
        self.dir.path().join(format!("{}.sock", addr.port()))
    }
}

impl Transport for Shm {
    fn name(&self) -> &'static str {
        "shm"
    }
    fn start(
        &self,
        store: Arc<MemoryChunks>,
        addr: Option<SocketAddr>,
    ) -> futures::future::BoxFuture<'_, Server> {
        Box::pin(async move {
            let addr = addr.unwrap_or_else(|| {
                (
                    [127, 0, 0, 1],
                    self.next.fetch_add(1, Ordering::Relaxed) + 1,
                )
                    .into()
            });
            let listener = sfs_rdma::shm::bind(&self.path(addr)).expect("bind");
            Server::spawn(addr, |stop| async move {
                sfs_rdma::shm::serve(
                    listener,
                    "s0".into(),
                    store,
                    secret(),
                    CHUNK,
                    sfs_rpc::limits::ConnectionLimit::new(4096, "s0"),
                    stop,
                )
                .await
                .expect("shm serve");
            })
        })
    }
    fn channel(&self, addr: SocketAddr) -> Arc<dyn DataChannel> {
        Arc::new(ShmChannel::new(
            &self.path(addr),
            "s0",
            secret(),
            CHUNK,
            Duration::from_secs(3),
            REQUEST_TIMEOUT,
        ))
    }
}

struct Rdma {
    ip: IpAddr,
    config: RdmaConfig,
}

static NEXT_PORT: AtomicU16 = AtomicU16::new(0);

impl Transport for Rdma {
    fn name(&self) -> &'static str {
        "rdma"
    }
    fn eager_threshold(&self) -> u64 {
        u64::from(self.config.eager_threshold)
    }
    fn start(
        &self,
        store: Arc<MemoryChunks>,
        addr: Option<SocketAddr>,
    ) -> futures::future::BoxFuture<'_, Server> {
        Box::pin(async move {
            let addr = addr.unwrap_or_else(|| {
                let port = 21000
                    + NEXT_PORT.fetch_add(1, Ordering::SeqCst)
                    + (std::process::id() % 1000) as u16 * 16;
                SocketAddr::new(self.ip, port)
            });
            let listener = RdmaListener::bind(addr).expect("RDMA listener binds");
            let (tx, rx) = oneshot::channel::<()>();
            let config = self.config.clone();
            let task = tokio::spawn(async move {
                listener
                    .serve(
                        store,
                        secret(),
                        CHUNK,
                        config,
                        sfs_rpc::limits::ConnectionLimit::new(4096, "s0"),
                        async move {
                            let _ = rx.await;
                        },
                    )
                    .await
                    .expect("rdma serve");
            });
            Server {
                addr,
                stop: Some(tx),
                task,
            }
        })
    }
    fn channel(&self, addr: SocketAddr) -> Arc<dyn DataChannel> {
        Arc::new(self.rdma_channel(addr).expect("rdma"))
    }
    fn rdma_channel(&self, addr: SocketAddr) -> Option<RdmaChannel> {
        self.rdma_channel_with_eager(addr, self.config.eager_threshold)
    }
    fn rdma_channel_with_eager(&self, addr: SocketAddr, threshold: u32) -> Option<RdmaChannel> {
        Some(RdmaChannel::new(
            addr,
            secret(),
            RdmaConfig {
                eager_threshold: threshold,
                ..self.config.clone()
            },
            CHUNK,
            Duration::from_secs(3),
            REQUEST_TIMEOUT,
        ))
    }
}

fn chunk(file: u128, index: u64, offset: u64, len: u64) -> ChunkRef {
    ChunkRef {
        id: FileId(file),
        index,
        offset,
        len,
    }
}

fn pattern(seed: u64, len: usize) -> Vec<u8> {
    (0..len)
        .map(|i| ((i as u64).wrapping_mul(31).wrapping_add(seed * 7919) >> 3) as u8)
        .collect()
}

fn check(ok: bool, what: impl Into<String>) -> Result<(), Failed> {
    if ok {
        Ok(())
    } else {
        Err(what.into().into())
    }
}

fn err<T: std::fmt::Debug>(r: SfsResult<T>) -> Result<SfsError, Failed> {
    match r {
        Err(e) => Ok(e),
        Ok(v) => Err(format!("expected an error, got {v:?}").into()),
    }
}

async fn write_read_every_size_class(t: &dyn Transport) -> Result<(), Failed> {
    let server = t.start(Arc::new(MemoryChunks::default()), None).await;
    let channel = t.channel(server.addr);
    let eager = t.eager_threshold();
    let sizes = [
        1,
        100,
        4095,
        eager - 1,
        eager,
        eager + 1,
        65536,
        100_003,
        CHUNK,
    ];
    let mut index = 0;
    for &len in &sizes {
        for offset in [0, 1, 4095, 65537, CHUNK - len] {
            if offset + len > CHUNK {
                continue;
            }
            index += 1;
            let data = pattern(index, len as usize);
            let c = chunk(1, index, offset, len);
            channel
                .write_chunk(c, &data)
                .await
                .map_err(|e| format!("write {len}@{offset}: {e}"))?;
            let mut back = vec![0xAAu8; len as usize];
            let n = channel
                .read_chunk(c, &mut back)
                .await
                .map_err(|e| format!("read {len}@{offset}: {e}"))?;
            check(
                n == len as usize,
                format!("read {len}@{offset} returned {n}"),
            )?;
            check(back == data, format!("bytes differ for {len}@{offset}"))?;
        }
    }
    server.stop().await;
    Ok(())
}

async fn holes_and_short_reads(t: &dyn Transport) -> Result<(), Failed> {
    let server = t.start(Arc::new(MemoryChunks::default()), None).await;
    let channel = t.channel(server.addr);
    let mut buf = vec![7u8; 100_000];
    let n = channel
        .read_chunk(chunk(2, 0, 0, 100_000), &mut buf)
        .await?;
    check(n == 0, format!("absent chunk read {n} bytes"))?;
    check(
        buf.iter().all(|&b| b == 7),
        "bytes past the answer were touched",
    )?;
    channel.write_chunk(chunk(2, 1, 0, 10), &[9; 10]).await?;
    let n = channel
        .read_chunk(chunk(2, 1, 5, 100_000), &mut buf)
        .await?;
    check(n == 5, format!("short read returned {n}, expected 5"))?;
    check(buf[..5] == [9; 5], "short read bytes")?;
    server.stop().await;
    Ok(())
}

async fn many_in_flight(t: &dyn Transport) -> Result<(), Failed> {
    let server = t.start(Arc::new(MemoryChunks::default()), None).await;
    let channel = t.channel(server.addr);
    let count = 96u64;
    let len = 40_000u64;
    let writes = (0..count).map(|i| {
        let channel = channel.clone();
        async move {
            let data = pattern(i, len as usize);
            channel.write_chunk(chunk(3, i, i, len), &data).await
        }
    });
    for r in futures::future::join_all(writes).await {
        r?;
    }
    let reads = (0..count).map(|i| {
        let channel = channel.clone();
        async move {
            let mut buf = vec![0u8; len as usize];
            let n = channel.read_chunk(chunk(3, i, i, len), &mut buf).await?;
            Ok::<_, SfsError>((i, n, buf))
        }
    });
    for r in futures::future::join_all(reads).await {
        let (i, n, buf) = r?;
        check(
            n == len as usize && buf == pattern(i, len as usize),
            format!("chunk {i}"),
        )?;
    }
    server.stop().await;
    Ok(())
}

async fn concurrent_clients(t: &dyn Transport) -> Result<(), Failed> {
    let server = t.start(Arc::new(MemoryChunks::default()), None).await;
    let clients: Vec<_> = (0..4).map(|_| t.channel(server.addr)).collect();
    let work = clients.iter().enumerate().map(|(c, channel)| async move {
        for i in 0..16u64 {
            let data = pattern(c as u64 * 100 + i, 70_000);
            let r = chunk(4, c as u64 * 100 + i, 3, 70_000);
            channel.write_chunk(r, &data).await?;
            let mut back = vec![0u8; 70_000];
            channel.read_chunk(r, &mut back).await?;
            if back != data {
                return Err(SfsError::io(format!("client {c} chunk {i} differs")));
            }
        }
        Ok::<_, SfsError>(())
    });
    for r in futures::future::join_all(work).await {
        r?;
    }
    server.stop().await;
    Ok(())
}

async fn server_errors_become_errnos(t: &dyn Transport) -> Result<(), Failed> {
    let store = Arc::new(MemoryChunks::default());
    let server = t.start(store.clone(), None).await;
    let channel = t.channel(server.addr);
    store.full.store(true, Ordering::SeqCst);
    for len in [10, 200_000] {
        let e = err(channel
            .write_chunk(chunk(5, 0, 0, len), &vec![1; len as usize])
            .await)?;
        check(e.errno == Errno::ENOSPC, format!("full store gave {e}"))?;
    }
    store.full.store(false, Ordering::SeqCst);
    channel.write_chunk(chunk(5, 0, 0, 10), &[1; 10]).await?;
    server.stop().await;
    Ok(())
}

async fn hostile_range_then_recovery(t: &dyn Transport) -> Result<(), Failed> {
    let server = t.start(Arc::new(MemoryChunks::default()), None).await;
    let channel = t.channel(server.addr);
    channel.write_chunk(chunk(6, 0, 0, 10), &[1; 10]).await?;
    let started = Instant::now();
    let e = err(channel
        .write_chunk(chunk(6, 0, CHUNK - 1, 2), &[1; 2])
        .await)?;
    check(
        started.elapsed() < REQUEST_TIMEOUT + Duration::from_secs(2),
        "no hang",
    )?;
    check(e.errno != Errno(0), "an errno")?;
    channel
        .write_chunk(chunk(6, 0, 0, 10), &[2; 10])
        .await
        .map_err(|e| format!("no recovery: {e}"))?;
    server.stop().await;
    Ok(())
}

async fn peer_disappears_then_reconnect(t: &dyn Transport) -> Result<(), Failed> {
    let store = Arc::new(MemoryChunks::default());
    let server = t.start(store.clone(), None).await;
    let addr = server.addr;
    let channel = t.channel(addr);
    channel
        .write_chunk(chunk(7, 0, 0, 100_000), &pattern(1, 100_000))
        .await?;
    server.stop().await;
    let started = Instant::now();
    let e = err(channel
        .write_chunk(chunk(7, 1, 0, 100_000), &pattern(2, 100_000))
        .await)?;
    check(
        started.elapsed() < REQUEST_TIMEOUT + Duration::from_secs(5),
        format!("took {:?} to notice the server left", started.elapsed()),
    )?;
    eprintln!("    {}: after the server left: {e}", t.name());
    // One mapping for every transport: a server that left is EIO.
    check(
        e.errno == Errno::EIO,
        format!("{}: a server that left gave {e}, not EIO", t.name()),
    )?;
    let server = t.start(store, Some(addr)).await;
    let mut back = vec![0u8; 100_000];
    let mut n = Err(SfsError::io("not tried"));
    // The first request may still find the old connection's failure.
    for _ in 0..3 {
        n = channel.read_chunk(chunk(7, 0, 0, 100_000), &mut back).await;
        if n.is_ok() {
            break;
        }
    }
    check(
        n? == 100_000 && back == pattern(1, 100_000),
        "data after reconnect",
    )?;
    server.stop().await;
    Ok(())
}

async fn bad_descriptor_is_refused(t: &dyn Transport) -> Result<(), Failed> {
    let server = t.start(Arc::new(MemoryChunks::default()), None).await;
    let channel = t.rdma_channel(server.addr).expect("rdma only");
    let data = pattern(3, 100_000);
    channel.write_chunk(chunk(8, 0, 0, 100_000), &data).await?;
    let forgeries: [(&str, &(dyn Fn(Descriptor) -> Descriptor + Sync)); 4] = [
        ("address below the region", &|d| Descriptor {
            addr: d.addr - 8192 * 1024,
            ..d
        }),
        ("beyond the region's end", &|d| Descriptor {
            addr: d.addr + (1 << 30),
            ..d
        }),
        ("foreign rkey", &|d| Descriptor {
            rkey: d.rkey ^ 0x5a5a,
            ..d
        }),
        ("length differs", &|d| Descriptor {
            len: d.len + 1,
            ..d
        }),
    ];
    for (what, forge) in forgeries {
        let e = err(channel
            .write_chunk_with_forged_descriptor(
                chunk(8, 0, 0, 100_000),
                &pattern(4, 100_000),
                forge,
            )
            .await)?;
        check(e.errno == Errno::EINVAL, format!("{what}: {e}"))?;
    }
    // The connection survived and the chunk is unchanged.
    let mut back = vec![0u8; 100_000];
    channel
        .read_chunk(chunk(8, 0, 0, 100_000), &mut back)
        .await?;
    check(back == data, "chunk changed by a refused request")?;
    server.stop().await;
    Ok(())
}

/// A client whose eager threshold is above the server's would send
/// messages larger than the server's receive buffers: the server refuses the
/// connection and says why; a client with a smaller threshold is served with
/// buffers sized for it.
async fn eager_threshold_mismatch(t: &dyn Transport) -> Result<(), Failed> {
    let server = t.start(Arc::new(MemoryChunks::default()), None).await;
    let ours = u32::try_from(t.eager_threshold()).expect("threshold");
    let greedy = t
        .rdma_channel_with_eager(server.addr, ours * 2 + 1)
        .expect("rdma only");
    let started = Instant::now();
    let e = err(greedy.write_chunk(chunk(9, 0, 0, 100), &[5; 100]).await)?;
    check(
        started.elapsed() < REQUEST_TIMEOUT,
        "refused without a timeout",
    )?;
    check(e.errno == Errno::EPROTO, format!("errno of {e}"))?;
    check(
        e.message.contains("eager threshold"),
        format!("the refusal names the cause: {e}"),
    )?;
    let modest = t
        .rdma_channel_with_eager(server.addr, ours / 4)
        .expect("rdma only");
    for len in [
        u64::from(ours / 4),
        u64::from(ours / 4) + 1,
        u64::from(ours),
    ] {
        let data = pattern(len, len as usize);
        modest.write_chunk(chunk(9, len, 0, len), &data).await?;
        let mut back = vec![0u8; len as usize];
        let n = modest.read_chunk(chunk(9, len, 0, len), &mut back).await?;
        check(n == len as usize && back == data, format!("{len} bytes"))?;
    }
    server.stop().await;
    Ok(())
}

/// Only clients that prove the job secret are served: a client of another
/// job is told (EACCES) and sends nothing, one that ignores the server's
/// proof and makes up its own is cut off before its request is served;
/// the server goes on serving its own clients.
async fn only_the_jobs_clients_are_served(t: &dyn Transport) -> Result<(), Failed> {
    let store = Arc::new(MemoryChunks::default());
    let server = t.start(store.clone(), None).await;
    let stranger = t
        .rdma_channel(server.addr)
        .expect("rdma only")
        .with_secret(Arc::new(sfs_global::secret::Secret::from_bytes([8; 32])));
    let e = err(stranger.write_chunk(chunk(10, 0, 0, 100), &[1; 100]).await)?;
    check(e.errno == Errno::EACCES, format!("errno of {e}"))?;
    check(
        e.message.contains("does not hold this job's secret"),
        format!("the refusal names the cause: {e}"),
    )?;
    let forger = t
        .rdma_channel(server.addr)
        .expect("rdma only")
        .with_forged_proof();
    let started = Instant::now();
    let e = err(forger.write_chunk(chunk(10, 1, 0, 100), &[2; 100]).await)?;
    check(
        started.elapsed() < REQUEST_TIMEOUT,
        format!("cut off, not left waiting: {e}"),
    )?;
    let mut back = [0u8; 100];
    for index in [0, 1] {
        let n = store.read_chunk(&chunk(10, index, 0, 100), &mut back)?;
        check(
            n == 0,
            format!("chunk {index} was written by a client without the secret"),
        )?;
    }
    let honest = t.rdma_channel(server.addr).expect("rdma only");
    honest.write_chunk(chunk(10, 2, 0, 100), &[3; 100]).await?;
    let n = honest.read_chunk(chunk(10, 2, 0, 100), &mut back).await?;
    check(n == 100 && back == [3; 100], "the job's client is served")?;
    server.stop().await;
    Ok(())
}

type Case = fn(&dyn Transport) -> futures::future::BoxFuture<'_, Result<(), Failed>>;

/// A non-default eager threshold: payloads of up to 64 KiB travel inside
/// the request and response messages, whose buffers on both sides are then
/// sized for 64 KiB (16 times the default).
const LARGE_EAGER_THRESHOLD: u32 = 64 * 1024;

/// The cases run again over RDMA with [`LARGE_EAGER_THRESHOLD`].
fn large_eager_cases() -> Vec<(&'static str, Case)> {
    vec![
        ("write_read_every_size_class", |t| {
            Box::pin(write_read_every_size_class(t))
        }),
        ("many_in_flight", |t| Box::pin(many_in_flight(t))),
        ("concurrent_clients", |t| Box::pin(concurrent_clients(t))),
    ]
}

fn cases() -> Vec<(&'static str, Case, bool)> {
    vec![
        (
            "write_read_every_size_class",
            |t| Box::pin(write_read_every_size_class(t)),
            false,
        ),
        (
            "holes_and_short_reads",
            |t| Box::pin(holes_and_short_reads(t)),
            false,
        ),
        ("many_in_flight", |t| Box::pin(many_in_flight(t)), false),
        (
            "concurrent_clients",
            |t| Box::pin(concurrent_clients(t)),
            false,
        ),
        (
            "server_errors_become_errnos",
            |t| Box::pin(server_errors_become_errnos(t)),
            false,
        ),
        (
            "hostile_range_then_recovery",
            |t| Box::pin(hostile_range_then_recovery(t)),
            false,
        ),
        (
            "peer_disappears_then_reconnect",
            |t| Box::pin(peer_disappears_then_reconnect(t)),
            false,
        ),
        (
            "bad_descriptor_is_refused",
            |t| Box::pin(bad_descriptor_is_refused(t)),
            true,
        ),
        (
            "eager_threshold_mismatch",
            |t| Box::pin(eager_threshold_mismatch(t)),
            true,
        ),
        (
            "only_the_jobs_clients_are_served",
            |t| Box::pin(only_the_jobs_clients_are_served(t)),
            true,
        ),
    ]
}

fn run(transport: Arc<dyn Transport>, case: Case) -> Result<(), Failed> {
    let rt = tokio::runtime::Builder::new_multi_thread()
        .worker_threads(2)
        .enable_all()
        .build()
        .map_err(|e| format!("runtime: {e}"))?;
    rt.block_on(async move {
        tokio::time::timeout(Duration::from_secs(120), case(transport.as_ref()))
            .await
            .map_err(|_| Failed::from("case did not finish within 120 s"))?
    })
}

fn main() {
    let args = Arguments::from_args();
    let devices = rdma_devices();
    let rdma_addr = std::env::var("SFS_RDMA_TEST_ADDR").ok();
    let rdma_with = |config: RdmaConfig| -> Option<Arc<dyn Transport>> {
        match (&rdma_addr, devices.is_empty()) {
            (Some(ip), false) => Some(Arc::new(Rdma {
                ip: ip.parse().expect("SFS_RDMA_TEST_ADDR is an IP address"),
                config,
            })),
            _ => None,
        }
    };
    let rdma = rdma_with(RdmaConfig::default());
    let rdma_large_eager = rdma_with(RdmaConfig {
        eager_threshold: LARGE_EAGER_THRESHOLD,
        ..RdmaConfig::default()
    });
    let skip_reason = if devices.is_empty() {
        "skipped: no RDMA device".to_string()
    } else if rdma_addr.is_none() {
        format!(
            "skipped: RDMA device(s) {} but SFS_RDMA_TEST_ADDR (an address they serve) is unset",
            devices.join(", ")
        )
    } else {
        String::new()
    };
    if rdma.is_none() && !args.list {
        println!("conformance: rdma cases {skip_reason}");
    }
    let tcp: Arc<dyn Transport> = Arc::new(Tcp);
    let shm: Arc<dyn Transport> = Arc::new(Shm {
        dir: tempfile::tempdir().expect("temp dir"),
        next: AtomicU16::new(0),
    });
    let mut trials = Vec::new();
    for (name, case, rdma_only) in cases() {
        if !rdma_only {
            for t in [&tcp, &shm] {
                let t = t.clone();
                trials.push(Trial::test(format!("{}::{name}", t.name()), move || {
                    run(t, case)
                }));
            }
        }
        match &rdma {
            Some(t) => {
                let t = t.clone();
                trials.push(Trial::test(format!("rdma::{name}"), move || run(t, case)));
            }
            None => {
                let reason = skip_reason.clone();
                trials.push(
                    Trial::test(format!("rdma::{name}"), move || Err(reason.into()))
                        .with_ignored_flag(true),
                );
            }
        }
    }
    for (name, case) in large_eager_cases() {
        let trial_name = format!("rdma_eager_64k::{name}");
        match &rdma_large_eager {
            Some(t) => {
                let t = t.clone();
                trials.push(Trial::test(trial_name, move || run(t, case)));
            }
            None => {
                let reason = skip_reason.clone();
                trials.push(
                    Trial::test(trial_name, move || Err(reason.into())).with_ignored_flag(true),
                );
            }
        }
    }
    libtest_mimic::run(&args, trials).exit();
}
