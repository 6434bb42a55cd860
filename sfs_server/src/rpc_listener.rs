//! The server's RPC port: one listener, two protocols.
//!
//! Every connection to the hostfile address is accepted here and handed, by
//! the first bytes the client sends, either to the lean RPC
//! (`sfs_rpc::lean`, `SFSQ`) or to tonic's gRPC server (anything else, in
//! practice the HTTP/2 preface). Both protocols reach the same service
//! objects, so a client may use either (config `metadata_rpc`). Before
//! either, the client proves the job secret (`sfs_rpc::auth`); a
//! connection that does not is told why and closed, and nothing of it
//! reaches a service.

use crate::grpc_budget::GrpcStream;
use crate::metrics::Metrics;
use crate::shutdown::Shutdown;
use sfs_global::secret::Secret;
use sfs_rpc::accept;
use sfs_rpc::auth::{self, Purpose};
use sfs_rpc::lean::{is_lean_preamble, serve_connection, Dispatch, MemoryBudget};
use sfs_rpc::limits::{self, ConnectionLimit};
use std::sync::atomic::Ordering;
use std::sync::Arc;
use std::time::Duration;
use tokio::net::{TcpListener, TcpStream};
use tokio::sync::mpsc;
use tokio_stream::wrappers::ReceiverStream;

/// How long a new connection may stay silent before the server drops it
/// without knowing its protocol (HTTP/2 and lean clients both speak first).
const FIRST_BYTES_TIMEOUT: Duration = Duration::from_secs(10);

/// Connections handed to gRPC and not yet taken by tonic.
const GRPC_BACKLOG: usize = 64;

/// The gRPC side of a split listener: the connections tonic serves, each
/// with its place and its share of the memory budget
/// ([`crate::grpc_budget`]).
pub type GrpcIncoming = ReceiverStream<std::io::Result<GrpcStream>>;

/// How the listener treats its connections.
pub struct Policy {
    /// How long a lean connection polls for its next request before it
    /// sleeps.
    pub spin: Duration,
    /// The RPC port's memory budget (shared by its lean and gRPC
    /// connections).
    pub budget: MemoryBudget,
    /// The server's connection places (shared with its data listeners).
    pub places: ConnectionLimit,
}

/// Accepts on `listener` until `shutdown`, serving lean connections itself
/// (each polls for its next request for up to `policy.spin` before sleeping) and
/// passing the others to the returned stream (for
/// `serve_with_incoming_shutdown`). The task ends when every lean
/// connection has answered what it read.
pub fn split(
    listener: TcpListener,
    dispatch: Arc<dyn Dispatch>,
    secret: Arc<Secret>,
    policy: Policy,
    metrics: Arc<Metrics>,
    shutdown: Shutdown,
) -> (GrpcIncoming, tokio::task::JoinHandle<std::io::Result<()>>) {
    let Policy {
        spin,
        budget,
        places,
    } = policy;
    let (grpc_tx, grpc_rx) = mpsc::channel(GRPC_BACKLOG);
    let stop = shutdown.clone();
    let serve = move |mut stream: TcpStream, peer: std::net::SocketAddr, _| {
        // Without it, Nagle holds the second of two pipelined replies for a
        // delayed ACK (40 ms).
        let _ = stream.set_nodelay(true);
        let (dispatch, grpc_tx, shutdown) = (dispatch.clone(), grpc_tx.clone(), shutdown.clone());
        let (secret, metrics, budget) = (secret.clone(), metrics.clone(), budget.clone());
        let place = places.admit();
        async move {
            // A gRPC connection takes its place along to tonic.
            let Some(place) = limits::placed_or_refused(place, &mut stream, "RPC").await else {
                return;
            };
            if let Err(refused) = auth::server(&mut stream, &secret, Purpose::Rpc).await {
                tracing::info!(%peer, "RPC connection refused: {refused}");
                return;
            }
            match first_bytes_are_lean(&stream).await {
                Ok(true) => {
                    metrics.rpc_connections.fetch_add(1, Ordering::Relaxed);
                    serve_connection(stream, dispatch, budget, spin, shutdown.wait()).await;
                    metrics.rpc_connections.fetch_sub(1, Ordering::Relaxed);
                    drop(place);
                }
                Ok(false) => {
                    let _ = grpc_tx
                        .send(Ok(GrpcStream::new(stream, place, &budget)))
                        .await;
                }
                Err(e) => {
                    tracing::debug!(%peer, "dropping a connection before its first request: {e}")
                }
            }
        }
    };
    // The listener's own sender goes with `serve` once it stops accepting,
    // so tonic's incoming ends when the last handed-over connection is in.
    let task = tokio::spawn(async move {
        accept::serve_connections(listener, "RPC", stop.wait(), serve, accept::AtStop::Finish)
            .await;
        Ok(())
    });
    (ReceiverStream::new(grpc_rx), task)
}

/// Waits for the first four bytes of a connection, without consuming them.
async fn first_bytes_are_lean(stream: &TcpStream) -> std::io::Result<bool> {
    let wait = async {
        let mut first = [0u8; 4];
        loop {
            let n = stream.peek(&mut first).await?;
            if n == 0 {
                return Err(std::io::Error::new(
                    std::io::ErrorKind::UnexpectedEof,
                    "closed without a request",
                ));
            }
            if n == first.len() {
                return Ok(is_lean_preamble(&first));
            }
            // Fewer bytes than a magic: a peek would see them again at
            // once, so give the rest a moment to arrive.
            tokio::time::sleep(Duration::from_millis(1)).await;
        }
    };
    tokio::time::timeout(FIRST_BYTES_TIMEOUT, wait)
        .await
        .unwrap_or_else(|_| {
            Err(std::io::Error::new(
                std::io::ErrorKind::TimedOut,
                "no request within 10 s",
            ))
        })
}
