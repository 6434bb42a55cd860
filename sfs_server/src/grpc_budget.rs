//! Limits of the gRPC side of the RPC port, as the lean side has them: a
//! gRPC connection holds its connection place (config `max_connections`)
//! for as long as tonic serves it, and each gRPC request reserves bytes of
//! the same memory budget as lean requests (config `rpc_memory_bytes`,
//! `rpc_memory_per_connection_bytes`) before its handler runs, keeping them
//! until its answer has been sent or the connection is gone. A client that
//! opens streams and never reads the answers holds at most its
//! connection's share; its further requests wait (their bodies stay in
//! HTTP/2's flow-control windows), and other connections are served from
//! the rest.
//!
//! Unlike the lean server, this layer does not decode the request before
//! it runs, so it reserves by method what the answer can be at most: a
//! chunk for `ReadChunk` and `WriteChunk`, a whole message for the listing
//! calls, and [`SMALL_REQUEST`] for the point calls.

use http_types::{Request, Response};
use sfs_rpc::lean::{MemoryBudget, Reservation};
use sfs_rpc::limits::Place;
use std::future::Future;
use std::pin::Pin;
use std::sync::Arc;
use std::task::{Context, Poll};
use tokio::io::{AsyncRead, AsyncWrite, ReadBuf};
use tokio::net::TcpStream;
use tokio::sync::Semaphore;

/// What a point call (stat, create, ...) reserves: its request and answer
/// are a few hundred bytes; the rest is headroom for paths.
pub const SMALL_REQUEST: usize = 64 * 1024;

/// A connection handed to tonic, with its place and its share of the
/// memory budget: the place is given back when tonic drops the connection.
pub struct GrpcStream {
    stream: TcpStream,
    info: GrpcConnection,
    _place: Place,
}

/// What every request of a [`GrpcStream`] finds in its extensions (tonic
/// puts a connection's `connect_info` there).
#[derive(Clone)]
pub struct GrpcConnection {
    /// The connection's share of the memory budget.
    share: Arc<Semaphore>,
}

impl GrpcStream {
    pub fn new(stream: TcpStream, place: Place, budget: &MemoryBudget) -> GrpcStream {
        GrpcStream {
            stream,
            info: GrpcConnection {
                share: budget.connection_share(),
            },
            _place: place,
        }
    }
}

impl tonic::transport::server::Connected for GrpcStream {
    type ConnectInfo = GrpcConnection;

    fn connect_info(&self) -> GrpcConnection {
        self.info.clone()
    }
}

impl AsyncRead for GrpcStream {
    fn poll_read(
        mut self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        buf: &mut ReadBuf<'_>,
    ) -> Poll<std::io::Result<()>> {
        Pin::new(&mut self.stream).poll_read(cx, buf)
    }
}

impl AsyncWrite for GrpcStream {
    fn poll_write(
        mut self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        buf: &[u8],
    ) -> Poll<std::io::Result<usize>> {
        Pin::new(&mut self.stream).poll_write(cx, buf)
    }

    fn poll_flush(mut self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<std::io::Result<()>> {
        Pin::new(&mut self.stream).poll_flush(cx)
    }

    fn poll_shutdown(mut self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<std::io::Result<()>> {
        Pin::new(&mut self.stream).poll_shutdown(cx)
    }

    fn poll_write_vectored(
        mut self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        bufs: &[std::io::IoSlice<'_>],
    ) -> Poll<std::io::Result<usize>> {
        Pin::new(&mut self.stream).poll_write_vectored(cx, bufs)
    }

    fn is_write_vectored(&self) -> bool {
        self.stream.is_write_vectored()
    }
}

/// Wraps tonic's router in [`GrpcBudgeted`].
#[derive(Clone)]
pub struct GrpcBudgetLayer {
    budget: MemoryBudget,
    chunk_size: usize,
}

impl GrpcBudgetLayer {
    /// Requests reserve from `budget`; a chunk call reserves `chunk_size`.
    pub fn new(budget: MemoryBudget, chunk_size: u64) -> Self {
        GrpcBudgetLayer {
            budget,
            chunk_size: usize::try_from(chunk_size).unwrap_or(usize::MAX),
        }
    }

    /// What a request to `path` (`/sfs.v1.ChunkControl/ReadChunk`)
    /// reserves.
    fn cost(&self, path: &str) -> usize {
        let method = path.rsplit('/').next().unwrap_or("");
        match method {
            "ReadChunk" | "WriteChunk" => self.chunk_size.saturating_add(SMALL_REQUEST),
            "Readdir" | "ReaddirPaged" | "ListSubtree" | "ListSubtreePaged" | "Holdings" => {
                sfs_rpc::MAX_MESSAGE_BYTES
            }
            _ => SMALL_REQUEST,
        }
    }
}

impl<S> tower::Layer<S> for GrpcBudgetLayer {
    type Service = GrpcBudgeted<S>;

    fn layer(&self, inner: S) -> Self::Service {
        GrpcBudgeted {
            inner,
            layer: self.clone(),
        }
    }
}

/// Every gRPC request runs once its bytes are reserved and keeps them
/// until its answer's body is sent or dropped.
#[derive(Clone)]
pub struct GrpcBudgeted<S> {
    inner: S,
    layer: GrpcBudgetLayer,
}

impl<S, B> tower::Service<Request<B>> for GrpcBudgeted<S>
where
    S: tower::Service<Request<B>, Response = Response<tonic::body::Body>> + Clone + Send + 'static,
    S::Future: Send + 'static,
    S::Error: 'static,
    B: Send + 'static,
{
    type Response = Response<tonic::body::Body>;
    type Error = S::Error;
    type Future = Pin<Box<dyn Future<Output = Result<Self::Response, S::Error>> + Send>>;

    fn poll_ready(&mut self, cx: &mut Context<'_>) -> Poll<Result<(), Self::Error>> {
        self.inner.poll_ready(cx)
    }

    fn call(&mut self, request: Request<B>) -> Self::Future {
        let cost = self.layer.cost(request.uri().path());
        let budget = self.layer.budget.clone();
        // Without the connection's record (a stream not from our listener)
        // the request gets a share of its own: the server's total still
        // holds.
        let share = request
            .extensions()
            .get::<GrpcConnection>()
            .map_or_else(|| budget.connection_share(), |c| c.share.clone());
        // The service readied by `poll_ready` serves this request; a clone
        // takes its place for the next (tower's usual hand-over).
        let clone = self.inner.clone();
        let mut inner = std::mem::replace(&mut self.inner, clone);
        Box::pin(async move {
            let reservation = budget.reserve(&share, cost).await;
            let response = inner.call(request).await?;
            Ok(response.map(|body| {
                tonic::body::Body::new(Reserved {
                    body,
                    _reservation: reservation,
                })
            }))
        })
    }
}

/// An answer's body, holding its request's reservation until it is sent
/// (hyper drops a body once its last frame is out, or when the stream or
/// connection goes).
struct Reserved {
    body: tonic::body::Body,
    _reservation: Option<Reservation>,
}

impl http_body::Body for Reserved {
    type Data = bytes::Bytes;
    type Error = tonic::Status;

    fn poll_frame(
        mut self: Pin<&mut Self>,
        cx: &mut Context<'_>,
    ) -> Poll<Option<Result<http_body::Frame<Self::Data>, Self::Error>>> {
        Pin::new(&mut self.body).poll_frame(cx)
    }

    fn is_end_stream(&self) -> bool {
        self.body.is_end_stream()
    }

    fn size_hint(&self) -> http_body::SizeHint {
        self.body.size_hint()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn chunk_calls_reserve_a_chunk_and_listings_a_message() {
        let layer = GrpcBudgetLayer::new(MemoryBudget::new(1 << 30, 1 << 26), 1 << 20);
        assert_eq!(
            layer.cost("/sfs.v1.ChunkControl/ReadChunk"),
            (1 << 20) + SMALL_REQUEST
        );
        assert_eq!(
            layer.cost("/sfs.v1.ChunkControl/WriteChunk"),
            (1 << 20) + SMALL_REQUEST
        );
        assert_eq!(
            layer.cost("/sfs.v1.Metadata/ReaddirPaged"),
            sfs_rpc::MAX_MESSAGE_BYTES
        );
        assert_eq!(layer.cost("/sfs.v1.Metadata/Stat"), SMALL_REQUEST);
    }

    #[tokio::test]
    async fn a_connection_waits_for_its_share_and_gets_it_back_when_answers_go() {
        let budget = MemoryBudget::new(4 << 20, 2 << 20);
        let share = budget.connection_share();
        let a = budget.reserve(&share, 1 << 20).await.unwrap();
        let _b = budget.reserve(&share, 1 << 20).await.unwrap();
        assert_eq!(budget.available(), 2 << 20);
        // The share is used up: a third waits...
        let third = budget.reserve(&share, 1 << 20);
        tokio::pin!(third);
        assert!(futures::poll!(&mut third).is_pending());
        // ...until an answer is sent.
        drop(a);
        let Poll::Ready(Some(_third)) = futures::poll!(&mut third) else {
            panic!("the third request still waits after an answer went");
        };
        assert_eq!(budget.available(), 2 << 20);
        // Another connection takes the rest of the server's budget; a small
        // request of a third, idle connection is still admitted, but not a
        // second one beside it.
        let other = budget.connection_share();
        let _c = budget.reserve(&other, 2 << 20).await.unwrap();
        assert_eq!(budget.available(), 0);
        let idle = budget.connection_share();
        let _small = budget.reserve(&idle, 1024).await.unwrap();
        let second = budget.reserve(&idle, 1024);
        tokio::pin!(second);
        assert!(futures::poll!(&mut second).is_pending());
    }
}
