//! The TCP data transport.
//!
//! Client: [`TcpChannel`] keeps a few persistent connections to one server
//! (`tcp_connections_per_server`) and multiplexes many requests on each: a
//! request registers a one-shot slot under a fresh request id, writes its
//! frame, and a per-connection reader task completes the slot when the
//! response arrives. A broken connection fails every waiting request with EIO
//! at once (so a killed server is noticed immediately, not at a timeout) and is
//! replaced on the next request.
//!
//! Server: [`serve`] accepts connections and runs each request's chunk I/O on
//! the blocking pool, at most [`MAX_IN_FLIGHT_PER_CONNECTION`] at a time per
//! connection, answering in completion order.

use crate::buffers::{BufferPool, PooledBuffer};
use crate::nosignal::{send_frame, FrameError};
use crate::wire::{
    answered, read_response_header, Op, RequestHeader, ResponseHeader, REQUEST_HEADER_LEN,
};
use crate::{ChunkHandler, ChunkRef, DataChannel};
use futures::future::BoxFuture;
use sfs_global::secret::Secret;
use sfs_global::{SfsError, SfsResult};
use sfs_rpc::accept;
use sfs_rpc::auth::{self, Purpose};
use sfs_rpc::limits::{self, ConnectionLimit};
use sfs_rpc::mux::{Mux, OnCancel};
use std::future::Future;
use std::net::SocketAddr;
use std::sync::atomic::{AtomicUsize, Ordering};
use std::sync::Arc;
use std::time::Duration;
use tokio::io::{AsyncReadExt, AsyncWriteExt, BufReader};
use tokio::net::tcp::{OwnedReadHalf, OwnedWriteHalf};
use tokio::net::{TcpListener, TcpStream};
use tokio::sync::{mpsc, watch, Semaphore};
use tokio::task::JoinSet;

/// Largest payload of any frame (the largest chunk size config allows).
const MAX_CHUNK_BYTES: u64 = 64 << 20;

/// Requests of one connection whose chunk I/O runs at the same time.
pub const MAX_IN_FLIGHT_PER_CONNECTION: usize = 64;

/// Bytes of idle chunk buffers the server keeps for its requests.
const SERVER_POOL_BYTES: u64 = 64 << 20;

/// Bytes of idle chunk buffers a client keeps per server for read answers
/// (a client may talk to hundreds of servers).
const CLIENT_POOL_BYTES: u64 = 8 << 20;

/// A pool of chunk buffers that keeps at most `bytes` of them (2 to 128
/// buffers).
fn chunk_pool(chunk_size: u64, bytes: u64) -> Arc<BufferPool> {
    let keep = (bytes / chunk_size.max(1)).clamp(2, 128) as usize;
    BufferPool::new(chunk_size as usize, keep)
}

/// Writes all of `parts` (without SIGPIPE: [`crate::nosignal`]).
async fn write_all_parts(writer: &mut OwnedWriteHalf, parts: &[&[u8]]) -> std::io::Result<()> {
    crate::nosignal::send_all(writer.as_ref(), parts).await
}

/// Memory bounds of the server side (config `data_memory_bytes`,
/// `data_memory_per_connection_bytes`): the payload bytes of requests read
/// and answers not yet written.
#[derive(Clone, Copy, Debug)]
pub struct MemoryLimits {
    pub total_bytes: u64,
    pub per_connection_bytes: u64,
}

impl MemoryLimits {
    /// The limits a config gives (validated there to fit a `u32`), each
    /// raised to one chunk and the total to at least one connection's: a
    /// whole-chunk request must always fit, or it would wait forever.
    pub fn from_config(config: &sfs_global::config::Config) -> MemoryLimits {
        let per_connection_bytes = config
            .data_memory_per_connection_bytes
            .max(config.chunk_size);
        MemoryLimits {
            total_bytes: config.data_memory_bytes.max(per_connection_bytes),
            per_connection_bytes,
        }
    }
}

/// How long a stopping server waits for a connection's unwritten answers
/// (a client that stopped reading would hold it forever).
const WRITE_DRAIN: Duration = Duration::from_secs(5);

/// Serves the data path on `listener` until `shutdown` resolves; then stops
/// accepting, lets every connection finish the requests it has read, and
/// returns. A connection is served only after it proved `secret`
/// (`sfs_rpc::auth`).
pub async fn serve(
    listener: TcpListener,
    handler: Arc<dyn ChunkHandler>,
    secret: Arc<Secret>,
    chunk_size: u64,
    limits: MemoryLimits,
    places: ConnectionLimit,
    shutdown: impl Future<Output = ()> + Send + 'static,
) -> std::io::Result<()> {
    let pool = chunk_pool(chunk_size, SERVER_POOL_BYTES);
    let budget = Arc::new(Semaphore::new(limits.total_bytes as usize));
    let serve = move |mut stream: TcpStream, peer: SocketAddr, stop| {
        let _ = stream.set_nodelay(true);
        tracing::debug!(%peer, "data connection accepted");
        let (handler, pool, secret) = (handler.clone(), pool.clone(), secret.clone());
        let memory = Memory {
            server: budget.clone(),
            connection: Arc::new(Semaphore::new(limits.per_connection_bytes as usize)),
        };
        let place = places.admit();
        async move {
            let Some(_place) = limits::placed_or_refused(place, &mut stream, "data").await else {
                return;
            };
            match auth::server(&mut stream, &secret, Purpose::Data).await {
                Ok(()) => {
                    handler.connection_opened();
                    serve_connection(
                        stream,
                        peer,
                        handler.clone(),
                        chunk_size,
                        pool,
                        memory,
                        stop,
                    )
                    .await;
                    handler.connection_closed();
                }
                Err(refused) => tracing::info!(%peer, "data connection refused: {refused}"),
            }
        }
    };
    accept::serve_connections(listener, "data", shutdown, serve, accept::AtStop::Finish).await;
    Ok(())
}

/// A connection's share of the memory bounds.
struct Memory {
    server: Arc<Semaphore>,
    connection: Arc<Semaphore>,
}

/// What a request holds until its answer is written: its place among the
/// connection's requests and its payload bytes in both budgets.
type Held = (
    tokio::sync::OwnedSemaphorePermit,
    tokio::sync::OwnedSemaphorePermit,
    tokio::sync::OwnedSemaphorePermit,
);

type Reply = (ResponseHeader, Option<PooledBuffer>, Held);

async fn serve_connection(
    stream: TcpStream,
    peer: SocketAddr,
    handler: Arc<dyn ChunkHandler>,
    chunk_size: u64,
    pool: Arc<BufferPool>,
    memory: Memory,
    mut stop: watch::Receiver<bool>,
) {
    let (reader, writer) = stream.into_split();
    let mut reader = BufReader::with_capacity(64 * 1024, reader);
    let (reply_tx, reply_rx) = mpsc::channel::<Reply>(MAX_IN_FLIGHT_PER_CONNECTION);
    let writer_task = tokio::spawn(write_replies(writer, reply_rx));
    let slots = Arc::new(Semaphore::new(MAX_IN_FLIGHT_PER_CONNECTION));
    let mut in_flight = JoinSet::new();
    loop {
        let mut raw = [0u8; REQUEST_HEADER_LEN];
        tokio::select! {
            _ = stop.wait_for(|s| *s) => break,
            read = reader.read_exact(&mut raw) => if read.is_err() { break },
        }
        let header = match RequestHeader::decode(&raw, chunk_size) {
            Ok(h) => h,
            Err(e) => {
                tracing::warn!(%peer, "dropping data connection: {e}");
                break;
            }
        };
        // Room first (the connection's share, then the server's, so a
        // connection waiting for the server holds at most its own share),
        // then the buffer: a client that sends faster than answers leave,
        // or never reads them, stops being read instead of growing memory.
        let bytes = header.chunk.len as u32;
        let held = tokio::select! {
            _ = stop.wait_for(|s| *s) => break,
            held = async {
                let slot = slots.clone().acquire_owned().await.ok()?;
                let own = memory.connection.clone().acquire_many_owned(bytes).await.ok()?;
                let server = memory.server.clone().acquire_many_owned(bytes).await.ok()?;
                Some((slot, own, server))
            } => match held {
                Some(held) => held,
                None => break,
            },
        };
        let mut payload = pool.take(header.chunk.len as usize);
        if header.op == Op::Write && reader.read_exact(&mut payload).await.is_err() {
            break;
        }
        let handler = handler.clone();
        let reply_tx = reply_tx.clone();
        in_flight.spawn(async move {
            let result = tokio::task::spawn_blocking(move || {
                let r = match header.op {
                    Op::Write => handler.write_chunk(&header.chunk, &payload).map(|()| 0),
                    Op::Read => handler.read_chunk(&header.chunk, &mut payload),
                };
                (r, payload)
            })
            .await;
            let (result, payload) = match result {
                Ok((r, payload)) => (r, Some(payload)),
                Err(_) => (Err(SfsError::io("chunk I/O task failed")), None),
            };
            let answer = ResponseHeader::answering(header.request_id, result);
            let payload = match payload {
                Some(mut payload) if header.op == Op::Read && answer.status == 0 => {
                    payload.truncate(answer.len as usize);
                    Some(payload)
                }
                _ => None,
            };
            let _ = reply_tx.send((answer, payload, held)).await;
        });
        while in_flight.try_join_next().is_some() {}
    }
    while in_flight.join_next().await.is_some() {}
    drop(reply_tx);
    let mut writer_task = writer_task;
    if tokio::time::timeout(WRITE_DRAIN, &mut writer_task)
        .await
        .is_err()
    {
        tracing::info!(%peer, "data connection: answers not taken within {WRITE_DRAIN:?}, closing");
        writer_task.abort();
    }
}

async fn write_replies(mut writer: OwnedWriteHalf, mut replies: mpsc::Receiver<Reply>) {
    // `_held` goes (and frees its room) once the answer is written.
    while let Some((header, payload, _held)) = replies.recv().await {
        let header = header.encode();
        let payload = payload.as_deref().unwrap_or_default();
        if write_all_parts(&mut writer, &[&header, payload])
            .await
            .is_err()
        {
            return;
        }
    }
    let _ = writer.shutdown().await;
}

/// One multiplexed connection of a [`TcpChannel`].
struct Connection {
    writer: tokio::sync::Mutex<OwnedWriteHalf>,
    /// Waiting requests, each with the largest payload its answer may carry.
    mux: Mux<(ResponseHeader, PooledBuffer), u64>,
}

async fn read_responses(
    conn: Arc<Connection>,
    reader: OwnedReadHalf,
    peer: SocketAddr,
    pool: Arc<BufferPool>,
) {
    let mut reader = BufReader::with_capacity(64 * 1024, reader);
    let connection = format!("data connection to {peer}");
    let why = loop {
        let header = match read_response_header(&mut reader, &connection).await {
            Ok(h) => h,
            Err(why) => break why,
        };
        let waiter = conn.mux.take(header.request_id);
        let max = waiter.as_ref().map_or(0, |(max, _)| *max);
        // A response whose waiter gave up (timeout) is read and dropped, but
        // never one larger than any chunk can be.
        if (waiter.is_some() && header.len > max) || header.len > MAX_CHUNK_BYTES {
            break format!("data connection to {peer}: response larger than requested");
        }
        let mut payload = pool.take(header.len as usize);
        if header.len > 0 {
            if let Err(e) = reader.read_exact(&mut payload).await {
                break format!("data connection to {peer} lost: {e}");
            }
        }
        if let Some((_, tx)) = waiter {
            let _ = tx.send(Ok((header, payload)));
        }
    };
    tracing::debug!("{why}");
    conn.mux.fail_all(SfsError::io(why));
}

/// Client side of the TCP transport to one server.
pub struct TcpChannel {
    addr: SocketAddr,
    slots: Vec<tokio::sync::Mutex<Option<Arc<Connection>>>>,
    next_slot: AtomicUsize,
    /// Buffers the read answers arrive in.
    pool: Arc<BufferPool>,
    connect_timeout: Duration,
    request_timeout: Duration,
    /// Proved to the server on every connect.
    secret: Arc<Secret>,
}

impl TcpChannel {
    /// A channel of `connections` lazily opened connections to `addr`,
    /// each proving `secret` first.
    pub fn new(
        addr: SocketAddr,
        secret: Arc<Secret>,
        connections: usize,
        chunk_size: u64,
        connect_timeout: Duration,
        request_timeout: Duration,
    ) -> Self {
        TcpChannel {
            addr,
            secret,
            slots: (0..connections.max(1))
                .map(|_| tokio::sync::Mutex::new(None))
                .collect(),
            next_slot: AtomicUsize::new(0),
            pool: chunk_pool(chunk_size, CLIENT_POOL_BYTES),
            connect_timeout,
            request_timeout,
        }
    }

    async fn connection(&self) -> SfsResult<Arc<Connection>> {
        let slot = &self.slots[self.next_slot.fetch_add(1, Ordering::Relaxed) % self.slots.len()];
        let mut slot = slot.lock().await;
        if let Some(conn) = slot.as_ref() {
            if !conn.mux.is_broken() {
                return Ok(conn.clone());
            }
        }
        let stream = auth::connect_tcp(
            self.addr,
            &self.secret,
            Purpose::Data,
            &format!("data server {}", self.addr),
            self.connect_timeout,
        )
        .await?;
        let (reader, writer) = stream.into_split();
        let conn = Arc::new(Connection {
            writer: tokio::sync::Mutex::new(writer),
            mux: Mux::new(),
        });
        tokio::spawn(read_responses(
            conn.clone(),
            reader,
            self.addr,
            self.pool.clone(),
        ));
        *slot = Some(conn.clone());
        Ok(conn)
    }

    async fn call(
        &self,
        op: Op,
        chunk: ChunkRef,
        payload: Option<&[u8]>,
    ) -> SfsResult<(ResponseHeader, PooledBuffer)> {
        let conn = self.connection().await?;
        let lost = || SfsError::io(format!("data connection to {} lost", self.addr));
        let id = conn.mux.next_id();
        let max = if op == Op::Read { chunk.len } else { 0 };
        // A call that ends without its answer (error, timeout,
        // cancellation) leaves no entry behind.
        let registration = conn
            .mux
            .register(id, max, OnCancel::Forget)
            .map_err(|_| lost())?;
        let header = RequestHeader {
            op,
            request_id: id,
            chunk,
        }
        .encode();
        let exchange = async {
            let parts = [&header[..], payload.unwrap_or_default()];
            match send_frame(&conn.writer, conn.mux.broken_flag(), || {}, &parts).await {
                Ok(()) => {}
                Err(FrameError::Broken) => return Err(lost()),
                Err(FrameError::Io(e)) => {
                    conn.mux.fail_all(SfsError::io(format!(
                        "data connection to {} lost: {e}",
                        self.addr
                    )));
                    return Err(SfsError::io(format!(
                        "sending to data server {}: {e}",
                        self.addr
                    )));
                }
            }
            registration.answer().await.unwrap_or_else(|| Err(lost()))
        };
        answered(&self.addr, self.request_timeout, &chunk, exchange).await
    }
}

impl DataChannel for TcpChannel {
    fn transport(&self) -> sfs_global::config::DataTransport {
        sfs_global::config::DataTransport::Tcp
    }

    fn write_chunk<'a>(&'a self, chunk: ChunkRef, data: &'a [u8]) -> BoxFuture<'a, SfsResult<()>> {
        Box::pin(async move {
            debug_assert_eq!(data.len() as u64, chunk.len);
            self.call(Op::Write, chunk, Some(data)).await.map(|_| ())
        })
    }

    fn read_chunk<'a>(
        &'a self,
        chunk: ChunkRef,
        buf: &'a mut [u8],
    ) -> BoxFuture<'a, SfsResult<usize>> {
        Box::pin(async move {
            let (_, data) = self.call(Op::Read, chunk, None).await?;
            let n = data.len().min(buf.len());
            buf[..n].copy_from_slice(&data[..n]);
            Ok(n)
        })
    }
}

#[cfg(test)]
mod tests;
