//! The accept loop of every listener of a server: the RPC port, the TCP
//! and node-local data paths and the metrics port each accept connections
//! until the server stops, serve each in a task of its own, keep going
//! when an accept fails, and at the end stop their connections and wait
//! for them. What a connection does (its handshake, limits and protocol)
//! stays with its listener; the loop is here once.

use std::future::Future;
use std::time::Duration;
use tokio::sync::watch;
use tokio::task::JoinSet;

/// How long a listener waits after a failed accept (EMFILE and friends)
/// before it accepts again: the connections it has keep being served.
const ACCEPT_RETRY: Duration = Duration::from_millis(50);

/// A listening socket: TCP or Unix.
pub trait Listener: Send + 'static {
    type Stream: Send + 'static;
    /// The peer's address, for logs.
    type Peer: Send + 'static;

    fn accept_one(
        &self,
    ) -> impl Future<Output = std::io::Result<(Self::Stream, Self::Peer)>> + Send;
}

impl Listener for tokio::net::TcpListener {
    type Stream = tokio::net::TcpStream;
    type Peer = std::net::SocketAddr;

    fn accept_one(
        &self,
    ) -> impl Future<Output = std::io::Result<(Self::Stream, Self::Peer)>> + Send {
        self.accept()
    }
}

impl Listener for tokio::net::UnixListener {
    type Stream = tokio::net::UnixStream;
    type Peer = tokio::net::unix::SocketAddr;

    fn accept_one(
        &self,
    ) -> impl Future<Output = std::io::Result<(Self::Stream, Self::Peer)>> + Send {
        self.accept()
    }
}

/// What happens to the connections when the listener stops.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum AtStop {
    /// Each is told (its `stop` turns true) and finishes what it has
    /// read; the loop waits for all of them.
    Finish,
    /// Each is dropped where it is (a connection with nothing worth
    /// finishing, such as a metrics scrape).
    Abort,
}

/// Accepts on `listener` until `shutdown` resolves, serving each
/// connection with `serve(stream, peer, stop)` in a task of its own; `stop`
/// turns true when the listener stops. A failed accept is logged (naming
/// the listener as `what`) and retried after a moment. At the end `serve`
/// is dropped (with whatever it holds), then the connections are finished
/// or aborted as `at_stop` says, and this returns once every one has ended.
pub async fn serve_connections<L, F, Fut>(
    listener: L,
    what: &str,
    shutdown: impl Future<Output = ()>,
    mut serve: F,
    at_stop: AtStop,
) where
    L: Listener,
    F: FnMut(L::Stream, L::Peer, watch::Receiver<bool>) -> Fut,
    Fut: Future<Output = ()> + Send + 'static,
{
    tokio::pin!(shutdown);
    let (stop_tx, stop_rx) = watch::channel(false);
    let mut connections = JoinSet::new();
    loop {
        tokio::select! {
            _ = &mut shutdown => break,
            accepted = listener.accept_one() => match accepted {
                Ok((stream, peer)) => {
                    connections.spawn(serve(stream, peer, stop_rx.clone()));
                }
                Err(e) => {
                    tracing::warn!("{what} listener: accept failed: {e}");
                    tokio::time::sleep(ACCEPT_RETRY).await;
                }
            },
            Some(_) = connections.join_next(), if !connections.is_empty() => {}
        }
    }
    drop(serve);
    drop(listener);
    let _ = stop_tx.send(true);
    if at_stop == AtStop::Abort {
        connections.abort_all();
    }
    while connections.join_next().await.is_some() {}
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::sync::atomic::{AtomicUsize, Ordering};
    use std::sync::Arc;
    use tokio::io::{AsyncReadExt, AsyncWriteExt};

    /// Connections are served concurrently; at the end each is told to
    /// stop and the loop returns only once every one has finished.
    #[tokio::test]
    async fn every_connection_is_served_then_finished_at_stop() {
        let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
        let addr = listener.local_addr().unwrap();
        let (shutdown_tx, shutdown_rx) = tokio::sync::oneshot::channel::<()>();
        let finished = Arc::new(AtomicUsize::new(0));
        let counted = finished.clone();
        let server = tokio::spawn(async move {
            serve_connections(
                listener,
                "test",
                async {
                    let _ = shutdown_rx.await;
                },
                move |mut stream: tokio::net::TcpStream, _, mut stop| {
                    let counted = counted.clone();
                    async move {
                        let mut byte = [0u8; 1];
                        stream.read_exact(&mut byte).await.unwrap();
                        stream.write_all(&byte).await.unwrap();
                        // Held open until the listener stops.
                        let _ = stop.wait_for(|s| *s).await;
                        counted.fetch_add(1, Ordering::SeqCst);
                    }
                },
                AtStop::Finish,
            )
            .await
        });
        let mut clients = Vec::new();
        for i in 0..3u8 {
            let mut c = tokio::net::TcpStream::connect(addr).await.unwrap();
            c.write_all(&[i]).await.unwrap();
            let mut back = [0u8; 1];
            c.read_exact(&mut back).await.unwrap();
            assert_eq!(back, [i]);
            clients.push(c);
        }
        assert_eq!(finished.load(Ordering::SeqCst), 0);
        shutdown_tx.send(()).unwrap();
        server.await.unwrap();
        assert_eq!(finished.load(Ordering::SeqCst), 3, "all finished first");
        assert!(
            tokio::net::TcpStream::connect(addr).await.is_err(),
            "no longer listening"
        );
    }

    #[tokio::test]
    async fn abort_drops_connections_where_they_are() {
        let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
        let addr = listener.local_addr().unwrap();
        let (shutdown_tx, shutdown_rx) = tokio::sync::oneshot::channel::<()>();
        let (accepted_tx, mut accepted_rx) = tokio::sync::mpsc::channel(1);
        let server = tokio::spawn(serve_connections(
            listener,
            "test",
            async {
                let _ = shutdown_rx.await;
            },
            move |_stream: tokio::net::TcpStream, _, _stop| {
                let accepted_tx = accepted_tx.clone();
                async move {
                    accepted_tx.send(()).await.unwrap();
                    // Never ends by itself.
                    std::future::pending::<()>().await;
                }
            },
            AtStop::Abort,
        ));
        let _client = tokio::net::TcpStream::connect(addr).await.unwrap();
        accepted_rx.recv().await.unwrap();
        shutdown_tx.send(()).unwrap();
        tokio::time::timeout(Duration::from_secs(5), server)
            .await
            .expect("aborted, not waited for")
            .unwrap();
    }
}
