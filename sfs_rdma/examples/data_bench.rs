//! Throughput and latency of one data transport, client and server in one
//! process (the figures of docs/performance.md, "RDMA (Soft-RoCE in QEMU)").
//!
//! ```text
//! data_bench tcp|rdma ADDR [MiB] [request KiB] [eager threshold]
//! data_bench rdma ADDR latency [repetitions]
//! ```
//! The first form writes then reads MiB mebibytes in requests of the given
//! size with `queue_depth` requests in flight, to a server whose chunk store
//! keeps nothing (it measures the transport, not a disk), and prints MB/s;
//! then the median latency of 300 writes each of 1 KiB to 64 KiB.
//!
//! The second form settles the eager threshold: per repetition it opens one
//! connection that sends everything eagerly (threshold 64 KiB) and one that
//! never does (threshold 0, so writes are RDMA-READ by the server and reads
//! RDMA-WRITTEN to the client), alternates 100 writes and then 100 reads of
//! 1, 4, 16 and 64 KiB between them, takes the median of each, and prints
//! the median of those medians; it also prints what `ibv_reg_mr` of each
//! connection's buffers cost, in µs per MiB.

use sfs_global::config::RdmaConfig;
use sfs_global::{FileId, SfsResult};
use sfs_rdma::rdma::{RdmaChannel, RdmaListener};
use sfs_rdma::tcp::{serve, TcpChannel};
use sfs_rdma::{ChunkHandler, ChunkRef, DataChannel};
use std::net::SocketAddr;
use std::sync::Arc;
use std::time::{Duration, Instant};

/// The job secret of these servers and clients.
fn secret() -> std::sync::Arc<sfs_global::secret::Secret> {
    std::sync::Arc::new(sfs_global::secret::Secret::from_bytes([7; 32]))
}

const CHUNK: u64 = 512 * 1024;

/// Accepts writes and answers reads with whatever its buffer held.
struct Discard;

impl ChunkHandler for Discard {
    fn write_chunk(&self, _: &ChunkRef, _: &[u8]) -> SfsResult<()> {
        Ok(())
    }
    fn read_chunk(&self, c: &ChunkRef, _: &mut [u8]) -> SfsResult<usize> {
        Ok(c.len as usize)
    }
}

#[tokio::main(flavor = "multi_thread", worker_threads = 2)]
async fn main() {
    let args: Vec<String> = std::env::args().collect();
    if args.len() < 3 {
        eprintln!("usage: data_bench tcp|rdma ADDR [MiB] [request KiB] [eager threshold]");
        std::process::exit(2);
    }
    let addr: SocketAddr = args[2].parse().expect("ADDR is ip:port");
    if args[1] == "rdma" && args.get(3).map(String::as_str) == Some("latency") {
        let repetitions = args.get(4).map_or(5, |a| a.parse().expect("repetitions"));
        eager_versus_one_sided(addr, repetitions).await;
        return;
    }
    let mib: u64 = args.get(3).map_or(256, |a| a.parse().expect("MiB"));
    let request = args
        .get(4)
        .map_or(CHUNK, |a| a.parse::<u64>().expect("KiB") * 1024);
    let mut config = RdmaConfig::default();
    if let Some(t) = args.get(5) {
        config.eager_threshold = t.parse().expect("eager threshold");
    }
    let (stop_tx, stop_rx) = tokio::sync::oneshot::channel::<()>();
    let channel: Arc<dyn DataChannel> = match args[1].as_str() {
        "tcp" => {
            let listener = tokio::net::TcpListener::bind(addr).await.expect("bind");
            let addr = listener.local_addr().unwrap();
            tokio::spawn(serve(
                listener,
                Arc::new(Discard),
                secret(),
                CHUNK,
                sfs_rdma::tcp::MemoryLimits::from_config(&sfs_global::config::Config::default()),
                sfs_rpc::limits::ConnectionLimit::new(4096, "s0"),
                async move {
                    let _ = stop_rx.await;
                },
            ));
            Arc::new(TcpChannel::new(
                addr,
                secret(),
                2,
                CHUNK,
                Duration::from_secs(3),
                Duration::from_secs(30),
            ))
        }
        "rdma" => {
            let listener = RdmaListener::bind(addr).expect("RDMA listener");
            tokio::spawn(listener.serve(
                Arc::new(Discard),
                secret(),
                CHUNK,
                config.clone(),
                sfs_rpc::limits::ConnectionLimit::new(4096, "s0"),
                async move {
                    let _ = stop_rx.await;
                },
            ));
            Arc::new(RdmaChannel::new(
                addr,
                secret(),
                config.clone(),
                CHUNK,
                Duration::from_secs(3),
                Duration::from_secs(30),
            ))
        }
        other => panic!("unknown transport {other}"),
    };
    let depth = config.queue_depth as usize;
    let count = mib * 1024 * 1024 / request;
    for (name, write) in [("write", true), ("read", false)] {
        let started = Instant::now();
        let mut next = 0u64;
        let mut running = futures::stream::FuturesUnordered::new();
        use futures::StreamExt;
        loop {
            while running.len() < depth && next < count {
                let channel = channel.clone();
                let c = ChunkRef {
                    id: FileId(1),
                    index: next,
                    offset: 0,
                    len: request,
                };
                running.push(async move {
                    let mut buf = vec![(next & 0xff) as u8; request as usize];
                    if write {
                        channel.write_chunk(c, &buf).await.map(|_| 0)
                    } else {
                        channel.read_chunk(c, &mut buf).await
                    }
                });
                next += 1;
            }
            match running.next().await {
                Some(r) => {
                    r.expect("request");
                }
                None => break,
            }
        }
        let secs = started.elapsed().as_secs_f64();
        println!(
            "BENCH {} {name} {} KiB x {count}, {depth} in flight: {:.1} MB/s",
            args[1],
            request / 1024,
            (count * request) as f64 / secs / 1e6
        );
    }
    for size in [1024u64, 4096, 16384, 65536] {
        let data = vec![1u8; size as usize];
        let mut times = Vec::new();
        for i in 0..300u64 {
            let c = ChunkRef {
                id: FileId(2),
                index: i,
                offset: 0,
                len: size,
            };
            let t = Instant::now();
            channel.write_chunk(c, &data).await.expect("write");
            times.push(t.elapsed());
        }
        times.sort();
        println!(
            "BENCH {} latency write {size} B (eager threshold {}): median {:.0} us",
            args[1],
            config.eager_threshold,
            times[times.len() / 2].as_secs_f64() * 1e6
        );
    }
    let _ = stop_tx.send(());
}

/// Median of a non-empty list.
fn median<T: PartialOrd + Copy>(values: &mut [T]) -> T {
    values.sort_by(|a, b| a.partial_cmp(b).expect("comparable"));
    values[values.len() / 2]
}

/// Latency in µs of one operation of `size` bytes.
async fn op_latency(channel: &RdmaChannel, write: bool, size: u64, index: u64) -> f64 {
    let mut buf = vec![1u8; size as usize];
    let c = ChunkRef {
        id: FileId(3),
        index,
        offset: 0,
        len: size,
    };
    let t = Instant::now();
    if write {
        channel.write_chunk(c, &buf).await.expect("write");
    } else {
        channel.read_chunk(c, &mut buf).await.expect("read");
    }
    t.elapsed().as_secs_f64() * 1e6
}

/// Eager versus one-sided latency and the registration cost, `repetitions`
/// times on fresh connections (see the module comment).
async fn eager_versus_one_sided(addr: SocketAddr, repetitions: usize) {
    const SIZES: [u64; 4] = [1024, 4096, 16384, 65536];
    const EAGER_ALL: u32 = 65536;
    let server_config = RdmaConfig {
        eager_threshold: EAGER_ALL,
        ..RdmaConfig::default()
    };
    let listener = RdmaListener::bind(addr).expect("RDMA listener");
    let (stop_tx, stop_rx) = tokio::sync::oneshot::channel::<()>();
    let server = tokio::spawn(listener.serve(
        Arc::new(Discard),
        secret(),
        CHUNK,
        server_config,
        sfs_rpc::limits::ConnectionLimit::new(4096, "s0"),
        async move {
            let _ = stop_rx.await;
        },
    ));
    // medians[mode][op][size] = one median per repetition.
    let mut medians = vec![vec![vec![Vec::new(); SIZES.len()]; 2]; 2];
    let mut registration: Vec<Vec<f64>> = vec![Vec::new(); 2];
    let mut registered_bytes = [0usize; 2];
    for _ in 0..repetitions {
        let channels: Vec<RdmaChannel> = [0u32, EAGER_ALL]
            .into_iter()
            .map(|threshold| {
                let config = RdmaConfig {
                    eager_threshold: threshold,
                    ..RdmaConfig::default()
                };
                RdmaChannel::new(
                    addr,
                    secret(),
                    config,
                    CHUNK,
                    Duration::from_secs(3),
                    Duration::from_secs(30),
                )
            })
            .collect();
        for (op, write) in [true, false].into_iter().enumerate() {
            for (i, &size) in SIZES.iter().enumerate() {
                // Alternate the two connections operation by operation, so
                // both see the same load on the (shared, emulated) host.
                let mut times = [Vec::new(), Vec::new()];
                for n in 0..100 {
                    for (mode, channel) in channels.iter().enumerate() {
                        times[mode].push(op_latency(channel, write, size, n).await);
                    }
                }
                for (mode, mut t) in times.into_iter().enumerate() {
                    medians[mode][op][i].push(median(&mut t));
                }
            }
        }
        for (mode, channel) in channels.iter().enumerate() {
            let cost = channel.registration().await.expect("connected");
            registered_bytes[mode] = cost.bytes;
            registration[mode]
                .push(cost.elapsed.as_secs_f64() * 1e6 / (cost.bytes as f64 / (1 << 20) as f64));
        }
    }
    for (op, name) in ["write", "read"].into_iter().enumerate() {
        for (i, size) in SIZES.iter().enumerate() {
            let one_sided = &mut medians[0][op][i];
            let runs_one_sided = format!("{one_sided:.0?}");
            let one_sided = median(one_sided);
            let eager = &mut medians[1][op][i];
            let runs_eager = format!("{eager:.0?}");
            let eager = median(eager);
            println!(
                "BENCH rdma latency {name} {size} B, median of {repetitions} medians of 100: \
                 eager {eager:.0} us {runs_eager}, one-sided {one_sided:.0} us {runs_one_sided}"
            );
        }
    }
    for (mode, threshold) in [0u32, EAGER_ALL].into_iter().enumerate() {
        let runs = format!("{:.0?}", registration[mode]);
        println!(
            "BENCH rdma registration (eager threshold {threshold}): {:.1} MiB per connection, \
             median {:.0} us per MiB {runs}",
            registered_bytes[mode] as f64 / (1 << 20) as f64,
            median(&mut registration[mode])
        );
    }
    let _ = stop_tx.send(());
    let _ = server.await;
}
