//! What the job-secret handshake adds to opening a connection
//! (docs/security.md, docs/performance.md): a loopback server that accepts
//! and runs `auth::server` (or nothing), and a client that opens N
//! connections one after another, each ready when `auth::client` returned
//! (or when `connect` did). Prints the median and 90th percentile per
//! connection of both, interleaved run by run.
//!
//! Usage: cargo run --release -p sfs_rpc --example handshake_cost [N]

use sfs_global::secret::Secret;
use sfs_rpc::auth::{self, Purpose};
use std::time::{Duration, Instant};
use tokio::io::AsyncReadExt;
use tokio::net::{TcpListener, TcpStream};

async fn serve(listener: TcpListener, secret: Secret, handshake: bool) {
    while let Ok((mut stream, _)) = listener.accept().await {
        let secret = secret.clone();
        tokio::spawn(async move {
            if handshake
                && auth::server(&mut stream, &secret, Purpose::Rpc)
                    .await
                    .is_err()
            {
                return;
            }
            // Hold the connection until the client closes it.
            let mut byte = [0u8; 1];
            let _ = stream.read(&mut byte).await;
        });
    }
}

fn percentile(samples: &mut [Duration], p: f64) -> Duration {
    samples.sort();
    samples[((samples.len() - 1) as f64 * p) as usize]
}

#[tokio::main(flavor = "current_thread")]
async fn main() {
    let n: usize = std::env::args()
        .nth(1)
        .map_or(2000, |a| a.parse().expect("N"));
    let secret = Secret::generate().expect("secret");
    let plain = TcpListener::bind("127.0.0.1:0").await.unwrap();
    let authed = TcpListener::bind("127.0.0.1:0").await.unwrap();
    let (plain_addr, authed_addr) = (plain.local_addr().unwrap(), authed.local_addr().unwrap());
    // The servers on a thread and runtime of their own, as a server process.
    let server_secret = secret.clone();
    std::thread::spawn(move || {
        tokio::runtime::Builder::new_multi_thread()
            .worker_threads(1)
            .enable_all()
            .build()
            .unwrap()
            .block_on(async move {
                tokio::spawn(serve(plain, server_secret.clone(), false));
                serve(authed, server_secret, true).await;
            })
    });
    let (mut without, mut with) = (Vec::with_capacity(n), Vec::with_capacity(n));
    for _ in 0..n {
        let started = Instant::now();
        let stream = TcpStream::connect(plain_addr).await.unwrap();
        stream.set_nodelay(true).unwrap();
        without.push(started.elapsed());
        drop(stream);
        let started = Instant::now();
        let stream = auth::connect_tcp(
            authed_addr,
            &secret,
            Purpose::Rpc,
            "server",
            Duration::from_secs(5),
        )
        .await
        .unwrap();
        with.push(started.elapsed());
        drop(stream);
    }
    let us = |d: Duration| d.as_secs_f64() * 1e6;
    println!("{n} connections each, loopback, one after another");
    println!(
        "connect only:          median {:7.1} us   p90 {:7.1} us",
        us(percentile(&mut without, 0.5)),
        us(percentile(&mut without, 0.9))
    );
    println!(
        "connect + handshake:   median {:7.1} us   p90 {:7.1} us",
        us(percentile(&mut with, 0.5)),
        us(percentile(&mut with, 0.9))
    );
}
