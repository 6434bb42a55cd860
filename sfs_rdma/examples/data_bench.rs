//! Throughput and latency of one data transport, client and server in one
//! process (the figures of docs/performance.md, "RDMA (Soft-RoCE in QEMU)").
//!
//! ```text
//! data_bench tcp|rdma ADDR [MiB] [request KiB] [eager threshold]
//! ```
//! Writes then reads MiB mebibytes in requests of the given size with
//! `queue_depth` requests in flight, to a server whose chunk store keeps
//! nothing (it measures the transport, not a disk), and prints MB/s; then
//! the median latency of 1000 writes of 1 KiB to 64 KiB.

use sfs_global::config::RdmaConfig;
use sfs_global::{FileId, SfsResult};
use sfs_rdma::rdma::{RdmaChannel, RdmaListener};
use sfs_rdma::tcp::{serve, TcpChannel};
use sfs_rdma::{ChunkHandler, ChunkRef, DataChannel};
use std::net::SocketAddr;
use std::sync::Arc;
use std::time::{Duration, Instant};

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
            tokio::spawn(serve(listener, Arc::new(Discard), CHUNK, async move {
                let _ = stop_rx.await;
            }));
            Arc::new(TcpChannel::new(
                addr,
                2,
                Duration::from_secs(3),
                Duration::from_secs(30),
            ))
        }
        "rdma" => {
            let listener = RdmaListener::bind(addr).expect("RDMA listener");
            tokio::spawn(
                listener.serve(Arc::new(Discard), CHUNK, config.clone(), async move {
                    let _ = stop_rx.await;
                }),
            );
            Arc::new(RdmaChannel::new(
                addr,
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
