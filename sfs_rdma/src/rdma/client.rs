//! The client side of the RDMA transport: [`RdmaChannel`], one rdmacm
//! connection per client–server pair, reused by every request and
//! re-established on the next request after any error.
//!
//! A connection pre-registers `queue_depth` chunk buffers (the region the
//! server may READ and WRITE, announced once in the connect hello) plus a
//! send and a receive buffer per slot. A request takes a slot (the
//! queue-depth accounting), puts its bytes into the slot's chunk buffer (or
//! into the message when at most `eager_threshold`), sends an 88-byte request
//! with the buffer's descriptor and waits for the response, which a poller
//! task matches to the slot by request id. Completions arrive through the
//! completion channel's fd (tokio `AsyncFd`); the rdmacm channel is watched
//! by the same task, so a vanished server fails every waiting request at
//! once (EIO / ETIMEDOUT) instead of leaving it hanging.
//!
//! Connecting proves the job secret both ways (`sfs_rpc::auth::Exchange`):
//! the hello carries our nonce; the server's accept carries its nonce and
//! proof, checked before the connection is used (a server of another job
//! gets nothing, EACCES); our proof is the connection's first SEND, and its
//! completion is awaited before any request reuses the send buffer.

use super::cm::{cm_event_name, reject_reason, CmId, EventChannel};
use super::pool::SlotPool;
use super::proto::{
    decode_response, Accept, ClientProof, Descriptor, Hello, MessageSizes, Payload, RdmaRequest,
    Region, ACCESS_READ, ACCESS_WRITE, CLIENT_NONCE_LEN, CLIENT_PROOF_LEN, RDMA_REQUEST_LEN,
    RDMA_RESPONSE_LEN,
};
use super::proto::{take_message, DATA, RECV, SEND, WR_INDEX, WR_RECV, WR_SEND};
use super::verbs::{QueuePair, QueueSizes};
use crate::wire::{Op, RequestHeader, ResponseHeader};
use crate::{ChunkRef, DataChannel};
use futures::future::BoxFuture;
use rdma_sys::ibv_wr_opcode::IBV_WR_SEND;
use rdma_sys::rdma_cm_event_type::*;
use sfs_global::config::RdmaConfig;
use sfs_global::secret::Secret;
use sfs_global::{Errno, SfsError, SfsResult};
use sfs_rpc::auth::{Exchange, Purpose};
use sfs_rpc::mux::{Mux, OnCancel};
use std::net::SocketAddr;
use std::sync::Arc;
use std::time::Duration;
use tokio::sync::Notify;

/// A response: its header and the bytes of an eager answer.
type Response = (ResponseHeader, Vec<u8>);

/// One established connection.
struct ClientConnection {
    // Field order is drop order: the QP goes before its id and channel.
    qp: QueuePair,
    id: CmId,
    channel: Arc<EventChannel>,
    slots: Arc<SlotPool>,
    /// Requests waiting for their responses, by request id
    /// (`sequence << 16 | slot`); entries are kept when a caller gives up
    /// (the server may still write into the slot), and such a caller fails
    /// the connection ([`AbandonGuard`]).
    mux: Mux<Response>,
    stop: Notify,
    chunk_size: usize,
    eager: usize,
    recv_size: usize,
    send_size: usize,
    peer: SocketAddr,
    registration: Registration,
}

/// What registering a connection's buffers cost: time in `ibv_reg_mr` for
/// the chunk buffers and the message buffers (allocation not included).
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct Registration {
    pub bytes: usize,
    pub elapsed: Duration,
}

impl ClientConnection {
    /// Marks the connection broken and fails every waiting request.
    fn fail(&self, error: SfsError) {
        self.mux.fail_all(error);
        self.slots.close();
        self.stop.notify_one();
    }
}

async fn connect(
    peer: SocketAddr,
    secret: &Secret,
    forged_proof: bool,
    config: &RdmaConfig,
    chunk_size: usize,
) -> SfsResult<Arc<ClientConnection>> {
    let channel = EventChannel::new()?;
    let id = CmId::new(&channel)?;
    id.resolve_addr(peer, config.resolve_timeout_ms)?;
    channel
        .expect(RDMA_CM_EVENT_ADDR_RESOLVED, &format!("resolving {peer}"))
        .await?;
    id.resolve_route(config.resolve_timeout_ms)?;
    channel
        .expect(RDMA_CM_EVENT_ROUTE_RESOLVED, &format!("route to {peer}"))
        .await?;
    let depth = config.queue_depth as usize;
    let eager = config.eager_threshold as usize;
    // We send requests and receive responses; the server sizes its buffers
    // the other way round from the same threshold (in our hello).
    let messages = MessageSizes::for_threshold(config.eager_threshold);
    let recv_size = messages.response;
    let send_size = messages.request;
    let sizes = QueueSizes {
        send: 2 * config.queue_depth,
        recv: config.queue_depth,
        cq: (3 * config.queue_depth).max(config.cq_size),
    };
    let mut qp = QueuePair::new(&id, sizes, config)?;
    messages.check_device(config.eager_threshold, qp.max_message)?;
    qp.register(depth * chunk_size, true)?;
    qp.register(depth * recv_size, false)?;
    qp.register(depth * send_size, false)?;
    let registration = Registration {
        bytes: depth * (chunk_size + recv_size + send_size),
        elapsed: qp.registration_time,
    };
    tracing::debug!(
        bytes = registration.bytes,
        elapsed_us = registration.elapsed.as_micros() as u64,
        "RDMA buffers registered"
    );
    let data = qp.buffer(DATA);
    let mut nonce = [0u8; CLIENT_NONCE_LEN];
    sfs_rpc::auth::fill_nonce(&mut nonce).map_err(|e| SfsError::io(format!("nonce: {e}")))?;
    let hello = Hello {
        nonce,
        queue_depth: config.queue_depth,
        eager_threshold: config.eager_threshold,
        chunk_size: chunk_size as u64,
        region: Region {
            addr: data.addr(),
            len: data.len() as u64,
            rkey: data.rkey(),
        },
    };
    id.connect(&qp, config, &hello.encode())?;
    // The event holds rdmacm pointers (not Send): it must not live across
    // the awaits below.
    let accepted = {
        let event = channel.next().await?;
        if event.kind != RDMA_CM_EVENT_CONNECT_RESPONSE {
            // A server that says why it refused speaks another protocol
            // (EPROTO, as a version mismatch on TCP); any other failure to
            // connect is a server that cannot be reached (EIO).
            let (errno, reason) = match reject_reason(&event.private_data) {
                Some(why) if event.kind == RDMA_CM_EVENT_REJECTED => {
                    (Errno::EPROTO, format!(": {why}"))
                }
                _ => (Errno::EIO, String::new()),
            };
            return Err(SfsError::new(
                errno,
                format!(
                    "{} (status {}){reason}",
                    cm_event_name(event.kind),
                    event.status
                ),
            ));
        }
        Accept::decode(&event.private_data)?
    };
    let exchange = Exchange {
        secret,
        purpose: Purpose::Rdma,
        client_nonce: &nonce,
        server_nonce: &accepted.nonce,
    };
    if !forged_proof && !exchange.server_proof_is(&accepted.proof) {
        return Err(SfsError::new(
            Errno::EACCES,
            "the RDMA data server does not hold this job's secret: it belongs to another \
             job (or this client read the wrong secret); nothing was sent to it",
        ));
    }
    qp.ready(&id, config)?;
    for i in 0..depth {
        qp.post_recv(WR_RECV | i as u64, RECV, i * recv_size, recv_size)?;
    }
    id.establish()?;
    // Our proof, the connection's first message, from slot 0's send buffer;
    // its completion is awaited so that no request overwrites the buffer
    // before the device has sent it.
    {
        // SAFETY: no request exists yet; slot 0's send buffer is free.
        let msg = unsafe { qp.buffer(SEND).range_mut(0, CLIENT_PROOF_LEN) };
        let proof = match forged_proof {
            false => exchange.client_proof(),
            true => [0x5a; sfs_rpc::auth::PROOF_MAC_LEN],
        };
        msg.copy_from_slice(&ClientProof(proof).encode());
    }
    qp.post_send(WR_SEND, IBV_WR_SEND, SEND, 0, CLIENT_PROOF_LEN, None, true)?;
    let mut completions = Vec::new();
    'sent: loop {
        qp.completions(&mut completions).await?;
        for wc in completions.drain(..) {
            if wc.status != rdma_sys::ibv_wc_status::IBV_WC_SUCCESS {
                return Err(SfsError::new(
                    super::verbs::wc_status_errno(wc.status),
                    format!(
                        "sending the proof of the job secret failed (completion status {})",
                        wc.status
                    ),
                ));
            }
            if wc.wr_id == WR_SEND {
                break 'sent;
            }
        }
    }
    let conn = Arc::new(ClientConnection {
        qp,
        id,
        channel,
        slots: Arc::new(SlotPool::new(depth)),
        mux: Mux::new(),
        stop: Notify::new(),
        chunk_size,
        eager,
        recv_size,
        send_size,
        peer,
        registration,
    });
    tokio::spawn(poll_connection(conn.clone()));
    Ok(conn)
}

/// Delivers responses to their slots and watches for the peer leaving.
async fn poll_connection(conn: Arc<ClientConnection>) {
    let mut completions = Vec::new();
    let error = 'run: loop {
        tokio::select! {
            _ = conn.stop.notified() => break 'run None,
            event = conn.channel.next() => match event {
                Ok(e) if e.kind == RDMA_CM_EVENT_DISCONNECTED || e.kind == RDMA_CM_EVENT_DEVICE_REMOVAL => {
                    break 'run Some(SfsError::new(Errno::EIO, format!("RDMA data server {} {}", conn.peer, cm_event_name(e.kind))));
                }
                Ok(_) => {}
                Err(e) => break 'run Some(e),
            },
            polled = conn.qp.completions(&mut completions) => {
                if let Err(e) = polled {
                    break 'run Some(e);
                }
                for wc in completions.drain(..) {
                    if wc.status != rdma_sys::ibv_wc_status::IBV_WC_SUCCESS {
                        break 'run Some(SfsError::new(
                            super::verbs::wc_status_errno(wc.status),
                            format!("RDMA connection to {} failed (completion status {})", conn.peer, wc.status),
                        ));
                    }
                    if wc.wr_id & !WR_INDEX == WR_RECV {
                        if let Err(e) = deliver(&conn, (wc.wr_id & WR_INDEX) as usize, wc.byte_len as usize) {
                            break 'run Some(e);
                        }
                    }
                    // A SEND completing is no news: the response says more.
                }
            }
        }
    };
    let error = error.unwrap_or_else(|| {
        SfsError::new(
            Errno::EIO,
            format!("RDMA connection to {} closed", conn.peer),
        )
    });
    tracing::debug!("{error}");
    conn.fail(error);
    conn.qp.to_error();
    conn.id.disconnect();
}

fn deliver(conn: &ClientConnection, index: usize, len: usize) -> SfsResult<()> {
    // SAFETY: the device completed this receive; it is re-posted only after
    // the copy.
    let msg = unsafe { take_message(&conn.qp, index, conn.slots.capacity(), conn.recv_size, len) }?;
    let header = decode_response(&msg)?;
    // Every request's entry stays until its response (or the connection's
    // failure): a response without one is the server's mistake.
    if conn.mux.deliver(header.request_id, |()| {
        Ok((header, msg[RDMA_RESPONSE_LEN..].to_vec()))
    }) {
        Ok(())
    } else {
        Err(SfsError::new(
            Errno::EPROTO,
            format!("RDMA response for unknown request {:#x}", header.request_id),
        ))
    }
}

/// Fails the connection if a request is dropped before its response.
struct AbandonGuard<'a>(Option<&'a ClientConnection>);

impl Drop for AbandonGuard<'_> {
    fn drop(&mut self) {
        if let Some(conn) = self.0 {
            conn.fail(SfsError::new(
                Errno::EIO,
                "RDMA request abandoned before its response",
            ));
        }
    }
}

/// Client side of the RDMA transport to one server.
pub struct RdmaChannel {
    peer: SocketAddr,
    secret: Arc<Secret>,
    /// Tests only: skip the server's proof and send a wrong proof of our
    /// own ([`RdmaChannel::with_forged_proof`]).
    forged_proof: bool,
    config: RdmaConfig,
    chunk_size: usize,
    connect_timeout: Duration,
    request_timeout: Duration,
    connection: tokio::sync::Mutex<Option<Arc<ClientConnection>>>,
}

impl RdmaChannel {
    /// A channel to `peer` (an address served by an RDMA device); connects
    /// on first use.
    pub fn new(
        peer: SocketAddr,
        secret: Arc<Secret>,
        config: RdmaConfig,
        chunk_size: u64,
        connect_timeout: Duration,
        request_timeout: Duration,
    ) -> Self {
        RdmaChannel {
            peer,
            secret,
            forged_proof: false,
            config,
            chunk_size: chunk_size as usize,
            connect_timeout,
            request_timeout,
            connection: tokio::sync::Mutex::new(None),
        }
    }

    async fn connection(&self) -> SfsResult<Arc<ClientConnection>> {
        let mut slot = self.connection.lock().await;
        if let Some(conn) = slot.as_ref() {
            if !conn.mux.is_broken() {
                return Ok(conn.clone());
            }
        }
        *slot = None;
        let conn = tokio::time::timeout(
            self.connect_timeout,
            connect(
                self.peer,
                &self.secret,
                self.forged_proof,
                &self.config,
                self.chunk_size,
            ),
        )
        .await
        .map_err(|_| {
            SfsError::timed_out(format!(
                "RDMA connection to {} timed out after {:?}",
                self.peer, self.connect_timeout
            ))
        })?
        .map_err(|e| {
            // Whatever the verbs call reported (ECONNREFUSED, EHOSTUNREACH,
            // ...): a server that cannot be reached is EIO on every
            // transport; a protocol refusal stays EPROTO.
            let errno = match e.errno {
                Errno::EPROTO | Errno::EACCES => e.errno,
                _ => Errno::EIO,
            };
            SfsError::new(
                errno,
                format!("RDMA connection to {}: {}", self.peer, e.message),
            )
        })?;
        tracing::debug!(peer = %self.peer, "RDMA connection established");
        *slot = Some(conn.clone());
        Ok(conn)
    }

    /// What registering the current connection's buffers cost, or `None`
    /// before the first request connected (for measurements).
    pub async fn registration(&self) -> Option<Registration> {
        let slot = self.connection.lock().await;
        slot.as_ref().map(|conn| conn.registration)
    }

    /// One request. `forge` rewrites the descriptor (tests of the server's
    /// checks only).
    async fn call(
        &self,
        op: Op,
        chunk: ChunkRef,
        write: Option<&[u8]>,
        read: Option<&mut [u8]>,
        forge: Option<&(dyn Fn(Descriptor) -> Descriptor + Sync)>,
    ) -> SfsResult<usize> {
        if chunk.len == 0 || chunk.len as usize > self.chunk_size {
            return Err(SfsError::new(
                Errno::EINVAL,
                format!("chunk range of {} bytes", chunk.len),
            ));
        }
        let conn = self.connection().await?;
        let lost = || {
            conn.mux
                .failure()
                .unwrap_or_else(|| SfsError::io(format!("RDMA connection to {} lost", self.peer)))
        };
        let slot = conn.slots.acquire().await.ok_or_else(lost)?;
        let index = slot.index();
        // The slot in the low bits names the buffers (for a reader of
        // traces); the sequence makes the id unique.
        let request_id = (conn.mux.next_id() << 16) | index as u64;
        let len = chunk.len as usize;
        let data_offset = index * conn.chunk_size;
        let data = conn.qp.buffer(DATA);
        let payload = if len <= conn.eager && forge.is_none() {
            Payload::Eager
        } else {
            let access = if op == Op::Write {
                ACCESS_READ
            } else {
                ACCESS_WRITE
            };
            let desc = Descriptor {
                addr: data.addr() + data_offset as u64,
                len: chunk.len,
                rkey: data.rkey(),
                access,
            };
            Payload::Remote(forge.map_or(desc, |f| f(desc)))
        };
        let send_offset = index * conn.send_size;
        // SAFETY: the slot's send buffer is ours until the slot drops; the
        // previous SEND from it was answered, so the device is done with it.
        let msg = unsafe { conn.qp.buffer(SEND).range_mut(send_offset, conn.send_size) };
        RdmaRequest {
            header: RequestHeader {
                op,
                request_id,
                chunk,
            },
            payload,
        }
        .encode_into(msg);
        let mut msg_len = RDMA_REQUEST_LEN;
        if let Some(bytes) = write {
            match payload {
                Payload::Eager => {
                    msg[RDMA_REQUEST_LEN..RDMA_REQUEST_LEN + len].copy_from_slice(bytes);
                    msg_len += len;
                }
                Payload::Remote(_) => {
                    // SAFETY: the slot's chunk buffer is ours; the server
                    // reads it only after our SEND below.
                    unsafe { data.range_mut(data_offset, len) }.copy_from_slice(bytes);
                }
            }
        }
        // Until the response arrives the server may still RDMA into this
        // slot: a request abandoned half-way (cancelled future) takes the
        // connection down with it rather than reuse a buffer in flight.
        let registration = conn
            .mux
            .register(request_id, (), OnCancel::Keep)
            .map_err(|_| lost())?;
        let mut abandoned = AbandonGuard(Some(&conn));
        if let Err(e) = conn.qp.post_send(
            WR_SEND | index as u64,
            IBV_WR_SEND,
            SEND,
            send_offset,
            msg_len,
            None,
            true,
        ) {
            conn.fail(e.clone());
            return Err(e);
        }
        let answer = tokio::time::timeout(self.request_timeout, registration.answer()).await;
        let (header, eager_bytes) = match answer {
            Ok(Some(r)) => r?,
            Ok(None) => return Err(lost()),
            Err(_) => {
                // The server may still RDMA into this slot: the connection
                // (and with it the buffers' registration) must go.
                let e = SfsError::timed_out(format!(
                    "RDMA data server {} did not answer within {:?}",
                    self.peer, self.request_timeout
                ));
                conn.fail(e.clone());
                return Err(e);
            }
        };
        abandoned.0 = None;
        if header.status != 0 {
            return Err(SfsError::new(
                Errno(header.status),
                format!(
                    "RDMA data server {} refused chunk {} of {}",
                    self.peer, chunk.index, chunk.id
                ),
            ));
        }
        let n = header.len as usize;
        if let Some(buf) = read {
            if n > len {
                conn.fail(SfsError::new(
                    Errno::EPROTO,
                    "response longer than requested",
                ));
                return Err(SfsError::new(
                    Errno::EPROTO,
                    "RDMA response longer than requested",
                ));
            }
            match payload {
                Payload::Eager => {
                    if eager_bytes.len() != n {
                        return Err(SfsError::new(
                            Errno::EPROTO,
                            "eager response length mismatch",
                        ));
                    }
                    buf[..n].copy_from_slice(&eager_bytes);
                }
                Payload::Remote(_) => {
                    // SAFETY: the server's RDMA WRITE into the slot's chunk
                    // buffer was placed before its response (RC ordering).
                    buf[..n].copy_from_slice(unsafe { data.range_mut(data_offset, n) });
                }
            }
        }
        drop(slot);
        Ok(n)
    }

    /// This channel with another job secret (tests of the refusal).
    #[doc(hidden)]
    pub fn with_secret(mut self, secret: Arc<Secret>) -> Self {
        self.secret = secret;
        self
    }

    /// This channel as a client without the secret that ignores the
    /// server's proof and sends a made-up one (tests that the server serves
    /// nothing to it).
    #[doc(hidden)]
    pub fn with_forged_proof(mut self) -> Self {
        self.forged_proof = true;
        self
    }

    /// Writes with a rewritten descriptor: for tests that the server refuses
    /// descriptors outside the client's registered region.
    #[doc(hidden)]
    pub async fn write_chunk_with_forged_descriptor(
        &self,
        chunk: ChunkRef,
        data: &[u8],
        forge: &(dyn Fn(Descriptor) -> Descriptor + Sync),
    ) -> SfsResult<()> {
        self.call(Op::Write, chunk, Some(data), None, Some(forge))
            .await
            .map(|_| ())
    }
}

impl Drop for RdmaChannel {
    fn drop(&mut self) {
        if let Ok(slot) = self.connection.try_lock() {
            if let Some(conn) = slot.as_ref() {
                conn.fail(SfsError::new(Errno::EIO, "RDMA channel closed"));
            }
        }
    }
}

impl DataChannel for RdmaChannel {
    fn transport(&self) -> sfs_global::config::DataTransport {
        sfs_global::config::DataTransport::Rdma
    }

    fn write_chunk<'a>(&'a self, chunk: ChunkRef, data: &'a [u8]) -> BoxFuture<'a, SfsResult<()>> {
        Box::pin(async move {
            debug_assert_eq!(data.len() as u64, chunk.len);
            self.call(Op::Write, chunk, Some(data), None, None)
                .await
                .map(|_| ())
        })
    }

    fn read_chunk<'a>(
        &'a self,
        chunk: ChunkRef,
        buf: &'a mut [u8],
    ) -> BoxFuture<'a, SfsResult<usize>> {
        Box::pin(async move { self.call(Op::Read, chunk, None, Some(buf), None).await })
    }
}
