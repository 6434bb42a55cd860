//! The server side of the RDMA transport.
//!
//! [`RdmaListener`] listens with rdmacm on the server's data address. Each
//! connect request gets its own protection domain, queue pair and
//! pre-registered buffers (one chunk buffer, one receive and one send buffer
//! per slot of the queue depth the client announced), and a task that drives
//! the completion queue. A request takes a slot: a write's bytes are pulled
//! from the client's buffer with RDMA READ (or taken from the message when
//! eager), handed to the [`ChunkHandler`] on the blocking pool, and
//! acknowledged; a read's bytes are pushed with RDMA WRITE followed by the
//! response SEND (RC ordering places the data before the response).
//!
//! A client proves the job secret before anything is served
//! (`sfs_rpc::auth::Exchange`, purpose RDMA): its connect's hello carries
//! its nonce, the accept's private data the server's nonce and proof, and
//! the client's first SEND its own proof; a connection whose first message
//! is not the right proof is cut off without an answer.
//!
//! Nothing from a client is trusted: the hello must match our chunk size and
//! limits, descriptors must lie inside the region announced in the hello
//! (EINVAL otherwise, the QP is never pointed outside it), and a client that
//! overruns its queue depth or sends a malformed message is disconnected.

use super::cm::{cm_event_name, CmEvent, CmId, EventChannel};
use super::pool::{Slot, SlotPool, Unanswered};
use super::proto::{self, DATA, RECV, SEND, WR_INDEX, WR_READ, WR_RECV, WR_SEND, WR_WRITE};
use super::proto::{
    Accept, ClientProof, Hello, MessageSizes, Payload, RdmaRequest, Region, ACCESS_READ,
    ACCESS_WRITE, RDMA_REQUEST_LEN, RDMA_RESPONSE_LEN, SERVER_NONCE_LEN,
};
use super::verbs::{wc_status_errno, QueuePair, QueueSizes};
use crate::wire::{Op, ResponseHeader};
use crate::ChunkHandler;
use rdma_sys::ibv_wr_opcode::{IBV_WR_RDMA_READ, IBV_WR_RDMA_WRITE, IBV_WR_SEND};
use rdma_sys::rdma_cm_event_type::*;
use sfs_global::config::RdmaConfig;
use sfs_global::secret::Secret;
use sfs_global::{Errno, SfsError, SfsResult};
use sfs_rpc::auth::{Exchange, Purpose};
use sfs_rpc::limits::ConnectionLimit;
use std::collections::HashMap;
use std::future::Future;
use std::net::SocketAddr;
use std::sync::{Arc, Mutex};
use tokio::sync::{oneshot, Notify};
use tokio::task::JoinSet;

/// Completion waiters by slot; `dead` once the connection is torn down, so
/// a late request fails at once instead of waiting for a completion that
/// nobody will poll.
pub(crate) struct Waiters {
    dead: bool,
    slots: Vec<Option<oneshot::Sender<u32>>>,
}

impl Waiters {
    pub(crate) fn new(count: usize) -> Mutex<Waiters> {
        Mutex::new(Waiters {
            dead: false,
            slots: (0..count).map(|_| None).collect(),
        })
    }
}

/// Registers a waiter for slot `index` (before posting its work request).
pub(crate) fn wait_for(
    waiters: &Mutex<Waiters>,
    index: usize,
) -> SfsResult<oneshot::Receiver<u32>> {
    let mut w = waiters.lock().expect("waiters");
    if w.dead {
        return Err(SfsError::new(Errno::EIO, "RDMA connection closed"));
    }
    let (tx, rx) = oneshot::channel();
    w.slots[index] = Some(tx);
    Ok(rx)
}

/// Fails every waiter and refuses new ones.
pub(crate) fn fail_all(waiters: &Mutex<Waiters>) {
    let mut w = waiters.lock().expect("waiters");
    w.dead = true;
    for slot in w.slots.iter_mut() {
        if let Some(tx) = slot.take() {
            let _ = tx.send(rdma_sys::ibv_wc_status::IBV_WC_WR_FLUSH_ERR);
        }
    }
}

/// Awaits a completion status; an error status becomes its errno.
pub(crate) async fn completed(rx: oneshot::Receiver<u32>, what: &str) -> SfsResult<()> {
    let status = rx
        .await
        .unwrap_or(rdma_sys::ibv_wc_status::IBV_WC_WR_FLUSH_ERR);
    if status == rdma_sys::ibv_wc_status::IBV_WC_SUCCESS {
        Ok(())
    } else {
        Err(SfsError::new(
            wc_status_errno(status),
            format!("RDMA {what} failed (completion status {status})"),
        ))
    }
}

/// A bound rdmacm listener.
pub struct RdmaListener {
    channel: Arc<EventChannel>,
    id: CmId,
    addr: SocketAddr,
}

impl RdmaListener {
    /// Binds `addr`; fails (ENOTSUP) when no RDMA device serves it.
    pub fn bind(addr: SocketAddr) -> SfsResult<RdmaListener> {
        let channel = EventChannel::new()?;
        let id = CmId::new(&channel)?;
        id.bind(addr)?;
        if id.verbs().is_null() {
            return Err(SfsError::new(
                Errno::ENOTSUP,
                format!("no RDMA device serves {addr}"),
            ));
        }
        id.listen(128)?;
        Ok(RdmaListener { channel, id, addr })
    }

    pub fn local_addr(&self) -> SocketAddr {
        self.addr
    }

    /// Serves until `shutdown` resolves, then disconnects every client and
    /// waits for their requests to finish.
    pub async fn serve(
        self,
        handler: Arc<dyn ChunkHandler>,
        secret: Arc<Secret>,
        chunk_size: u64,
        config: RdmaConfig,
        places: ConnectionLimit,
        shutdown: impl Future<Output = ()> + Send + 'static,
    ) -> SfsResult<()> {
        tokio::pin!(shutdown);
        let mut connections: HashMap<usize, Arc<Notify>> = HashMap::new();
        let mut tasks: JoinSet<usize> = JoinSet::new();
        tracing::info!(addr = %self.addr, "RDMA data listener ready");
        loop {
            tokio::select! {
                _ = &mut shutdown => break,
                event = self.channel.next() => {
                    let event = event?;
                    match event.kind {
                        RDMA_CM_EVENT_CONNECT_REQUEST => {
                            let key = event.id as usize;
                            let place = match places.admit() {
                                Ok(place) => place,
                                Err(why) => {
                                    tracing::info!("RDMA connection refused: {why}");
                                    CmId::adopt(event.id, &self.channel).reject(&why);
                                    continue;
                                }
                            };
                            match accept(&self.channel, event, handler.clone(), &secret, chunk_size, &config) {
                                Ok((conn, stop)) => {
                                    connections.insert(key, stop.clone());
                                    let handler = handler.clone();
                                    handler.connection_opened();
                                    tasks.spawn(async move {
                                        let _place = place;
                                        run_connection(conn, stop).await;
                                        handler.connection_closed();
                                        key
                                    });
                                }
                                Err(e) => tracing::warn!("refusing an RDMA connection: {e}"),
                            }
                        }
                        RDMA_CM_EVENT_DISCONNECTED | RDMA_CM_EVENT_DEVICE_REMOVAL => {
                            if let Some(stop) = connections.get(&(event.id as usize)) {
                                stop.notify_one();
                            }
                        }
                        other => tracing::debug!("RDMA listener: {}", cm_event_name(other)),
                    }
                }
                Some(done) = tasks.join_next(), if !tasks.is_empty() => {
                    if let Ok(key) = done {
                        connections.remove(&key);
                    }
                }
            }
        }
        for stop in connections.values() {
            stop.notify_one();
        }
        while tasks.join_next().await.is_some() {}
        drop(self.id);
        Ok(())
    }
}

/// One accepted connection.
struct ServerConnection {
    qp: QueuePair,
    id: CmId,
    handler: Arc<dyn ChunkHandler>,
    region: Region,
    chunk_size: u64,
    eager: u64,
    recv_size: usize,
    send_size: usize,
    slots: Arc<SlotPool>,
    unanswered: Unanswered,
    waiters: Mutex<Waiters>,
    /// The client's proof this connection waits for as its first message,
    /// checked by [`Exchange::client_proof_is`].
    expected: ProofCheck,
}

/// What checks the first message of a connection.
struct ProofCheck {
    secret: Arc<Secret>,
    client_nonce: [u8; super::proto::CLIENT_NONCE_LEN],
    server_nonce: [u8; SERVER_NONCE_LEN],
}

impl ProofCheck {
    fn holds(&self, message: &[u8]) -> SfsResult<()> {
        let proof = ClientProof::decode(message)?;
        let exchange = Exchange {
            secret: &self.secret,
            purpose: Purpose::Rdma,
            client_nonce: &self.client_nonce,
            server_nonce: &self.server_nonce,
        };
        if !exchange.client_proof_is(&proof.0) {
            return Err(SfsError::new(
                Errno::EACCES,
                "the client does not hold this job's secret",
            ));
        }
        Ok(())
    }
}

fn accept(
    channel: &Arc<EventChannel>,
    event: CmEvent,
    handler: Arc<dyn ChunkHandler>,
    secret: &Arc<Secret>,
    chunk_size: u64,
    config: &RdmaConfig,
) -> SfsResult<(Arc<ServerConnection>, Arc<Notify>)> {
    let id = CmId::adopt(event.id, channel);
    let refuse = |id: &CmId, why: String| {
        id.reject(&why);
        Err(SfsError::new(Errno::EPROTO, why))
    };
    let hello = match Hello::decode(&event.private_data) {
        Ok(h) => h,
        Err(e) => return refuse(&id, e.message),
    };
    if hello.chunk_size != chunk_size {
        return refuse(
            &id,
            format!(
                "client chunk size {} differs from ours ({chunk_size}): clients and servers must read the same config.json",
                hello.chunk_size
            ),
        );
    }
    if hello.queue_depth == 0 || hello.queue_depth > config.queue_depth {
        return refuse(
            &id,
            format!(
                "client queue depth {} outside 1..={}",
                hello.queue_depth, config.queue_depth
            ),
        );
    }
    if hello.eager_threshold > config.eager_threshold {
        return refuse(
            &id,
            format!(
                "client eager threshold {} above ours ({})",
                hello.eager_threshold, config.eager_threshold
            ),
        );
    }
    let depth = hello.queue_depth as usize;
    let sizes = QueueSizes {
        send: 3 * hello.queue_depth,
        recv: hello.queue_depth,
        cq: (4 * hello.queue_depth).max(config.cq_size),
    };
    let eager = u64::from(hello.eager_threshold);
    // The client's threshold (at most ours): we receive its requests and
    // send it responses, sized as it sized its buffers.
    let messages = MessageSizes::for_threshold(hello.eager_threshold);
    let recv_size = messages.request;
    let send_size = messages.response;
    let setup = || -> SfsResult<QueuePair> {
        let mut qp = QueuePair::new(&id, sizes, config)?;
        messages.check_device(hello.eager_threshold, qp.max_message)?;
        qp.register(depth * chunk_size as usize, false)?;
        qp.register(depth * recv_size, false)?;
        qp.register(depth * send_size, false)?;
        qp.ready(&id, config)?;
        for i in 0..depth {
            qp.post_recv(WR_RECV | i as u64, RECV, i * recv_size, recv_size)?;
        }
        Ok(qp)
    };
    let qp = match setup() {
        Ok(qp) => qp,
        Err(e) => {
            id.reject(&e.message);
            return Err(e);
        }
    };
    let mut server_nonce = [0u8; SERVER_NONCE_LEN];
    if let Err(e) = sfs_rpc::auth::fill_nonce(&mut server_nonce) {
        id.reject("the server cannot draw a nonce");
        return Err(SfsError::io(format!("drawing a nonce: {e}")));
    }
    let proof = Exchange {
        secret,
        purpose: Purpose::Rdma,
        client_nonce: &hello.nonce,
        server_nonce: &server_nonce,
    }
    .server_proof();
    let answer = Accept {
        nonce: server_nonce,
        proof,
    };
    id.accept(&qp, config, &answer.encode())?;
    tracing::debug!(
        queue_depth = depth,
        eager,
        "RDMA connection accepted (region {} bytes)",
        hello.region.len
    );
    Ok((
        Arc::new(ServerConnection {
            qp,
            id,
            handler,
            region: hello.region,
            chunk_size,
            eager,
            recv_size,
            send_size,
            slots: Arc::new(SlotPool::new(depth)),
            unanswered: Unanswered::new(depth),
            waiters: Waiters::new(depth),
            expected: ProofCheck {
                secret: secret.clone(),
                client_nonce: hello.nonce,
                server_nonce,
            },
        }),
        Arc::new(Notify::new()),
    ))
}

/// Drives one connection's completion queue until it fails or is stopped.
async fn run_connection(conn: Arc<ServerConnection>, stop: Arc<Notify>) {
    let mut requests = JoinSet::new();
    let mut completions = Vec::new();
    // Nothing is served until the first message proved the secret.
    let mut proven = false;
    let why = 'run: loop {
        tokio::select! {
            _ = stop.notified() => break 'run "disconnected".to_string(),
            polled = conn.qp.completions(&mut completions) => {
                if let Err(e) = polled {
                    break 'run e.to_string();
                }
                for wc in completions.drain(..) {
                    let index = (wc.wr_id & WR_INDEX) as usize;
                    if wc.status != rdma_sys::ibv_wc_status::IBV_WC_SUCCESS {
                        break 'run format!("completion error status {} on wr {:#x}", wc.status, wc.wr_id);
                    }
                    if wc.wr_id & !WR_INDEX == WR_RECV && !proven {
                        match take_proof(&conn, index, wc.byte_len as usize) {
                            Ok(()) => proven = true,
                            Err(e) => {
                                tracing::info!("RDMA connection refused: {}", e.message);
                                break 'run e.message;
                            }
                        }
                    } else if wc.wr_id & !WR_INDEX == WR_RECV {
                        // A slot is freed when its response SEND completes,
                        // which the client may see answered (and reuse)
                        // slightly earlier: a request may wait briefly for
                        // a slot, but a client with more than its queue
                        // depth unanswered is cut off.
                        if !conn.unanswered.received() {
                            break 'run "client exceeded its announced queue depth".to_string();
                        }
                        match take_request(&conn, index, wc.byte_len as usize) {
                            Ok((request, eager)) => {
                                let conn = conn.clone();
                                requests.spawn(async move {
                                    if let Some(slot) = conn.slots.clone().acquire().await {
                                        serve_request(conn, request, eager, slot).await;
                                    }
                                });
                            }
                            Err(e) => break 'run e.message,
                        }
                    } else if let Some(tx) = conn.waiters.lock().expect("waiters").slots[index].take() {
                        let _ = tx.send(wc.status);
                    }
                }
            }
            Some(_) = requests.join_next(), if !requests.is_empty() => {
                while requests.try_join_next().is_some() {}
            }
        }
    };
    tracing::debug!("RDMA connection closing: {why}");
    conn.qp.to_error();
    conn.id.disconnect();
    fail_all(&conn.waiters);
    conn.slots.close();
    while requests.join_next().await.is_some() {}
}

/// Copies received message `index` out of its receive slot and posts the
/// slot again.
fn take_message(conn: &ServerConnection, index: usize, len: usize) -> SfsResult<Vec<u8>> {
    // SAFETY: receive slot `index` was just completed by the device and is
    // not posted again until after this copy.
    unsafe { proto::take_message(&conn.qp, index, conn.slots.capacity(), conn.recv_size, len) }
}

/// Checks the connection's first message, the client's proof.
fn take_proof(conn: &ServerConnection, index: usize, len: usize) -> SfsResult<()> {
    conn.expected.holds(&take_message(conn, index, len)?)
}

/// Takes a received request (and its eager payload).
fn take_request(
    conn: &ServerConnection,
    index: usize,
    len: usize,
) -> SfsResult<(RdmaRequest, Vec<u8>)> {
    let msg = take_message(conn, index, len)?;
    let request = RdmaRequest::decode(&msg, conn.chunk_size, conn.eager)?;
    Ok((request, msg[RDMA_REQUEST_LEN..].to_vec()))
}

/// Carries out one request and sends its response.
async fn serve_request(
    conn: Arc<ServerConnection>,
    request: RdmaRequest,
    eager: Vec<u8>,
    slot: Slot,
) {
    let index = slot.index();
    let chunk = request.header.chunk;
    let len = chunk.len as usize;
    let data_offset = index * conn.chunk_size as usize;
    let result: SfsResult<usize> = async {
        match (request.header.op, request.payload) {
            (Op::Write, Payload::Eager) => {
                let handler = conn.handler.clone();
                tokio::task::spawn_blocking(move || handler.write_chunk(&chunk, &eager))
                    .await
                    .map_err(|e| SfsError::io(format!("chunk write task: {e}")))??;
                Ok(0)
            }
            (Op::Write, Payload::Remote(desc)) => {
                desc.check(&conn.region, chunk.len, ACCESS_READ)?;
                let rx = wait_for(&conn.waiters, index)?;
                conn.qp.post_send(
                    WR_READ | index as u64,
                    IBV_WR_RDMA_READ,
                    DATA,
                    data_offset,
                    len,
                    Some((desc.addr, desc.rkey)),
                    true,
                )?;
                completed(rx, "READ of a write's data").await?;
                let c = conn.clone();
                tokio::task::spawn_blocking(move || {
                    // SAFETY: this slot's chunk buffer is ours until the slot
                    // is dropped, and the RDMA READ into it has completed.
                    let data = unsafe { c.qp.buffer(DATA).range_mut(data_offset, len) };
                    c.handler.write_chunk(&chunk, data)
                })
                .await
                .map_err(|e| SfsError::io(format!("chunk write task: {e}")))??;
                Ok(0)
            }
            (Op::Read, payload) => {
                if let Payload::Remote(desc) = payload {
                    desc.check(&conn.region, chunk.len, ACCESS_WRITE)?;
                }
                let c = conn.clone();
                let n = tokio::task::spawn_blocking(move || {
                    // SAFETY: as above; no RDMA targets this buffer now.
                    let data = unsafe { c.qp.buffer(DATA).range_mut(data_offset, len) };
                    c.handler.read_chunk(&chunk, data)
                })
                .await
                .map_err(|e| SfsError::io(format!("chunk read task: {e}")))??;
                let n = n.min(len);
                if let Payload::Remote(desc) = payload {
                    if n > 0 {
                        // Unsignalled: the response SEND behind it completes
                        // only after it, and an error still completes.
                        conn.qp.post_send(
                            WR_WRITE | index as u64,
                            IBV_WR_RDMA_WRITE,
                            DATA,
                            data_offset,
                            n,
                            Some((desc.addr, desc.rkey)),
                            false,
                        )?;
                    }
                }
                Ok(n)
            }
        }
    }
    .await;
    let send_offset = index * conn.send_size;
    // SAFETY: this slot's send buffer is ours until the slot is dropped
    // (after the SEND below completes).
    let out = unsafe { conn.qp.buffer(SEND).range_mut(send_offset, conn.send_size) };
    let (status, n) = match result {
        Ok(n) => (0, n),
        Err(e) => {
            tracing::debug!("RDMA request failed: {e}");
            (e.errno.0, 0)
        }
    };
    let header = ResponseHeader {
        status,
        request_id: request.header.request_id,
        len: n as u64,
    };
    out[..RDMA_RESPONSE_LEN].copy_from_slice(&header.encode());
    let mut msg_len = RDMA_RESPONSE_LEN;
    if status == 0 && request.header.op == Op::Read && request.payload == Payload::Eager {
        // SAFETY: the chunk buffer of this slot, filled by the read above.
        let data = unsafe { conn.qp.buffer(DATA).range_mut(data_offset, n) };
        out[RDMA_RESPONSE_LEN..RDMA_RESPONSE_LEN + n].copy_from_slice(data);
        msg_len += n;
    }
    conn.unanswered.answering();
    let sent = async {
        let rx = wait_for(&conn.waiters, index)?;
        conn.qp.post_send(
            WR_SEND | index as u64,
            IBV_WR_SEND,
            SEND,
            send_offset,
            msg_len,
            None,
            true,
        )?;
        completed(rx, "response SEND").await
    }
    .await;
    if let Err(e) = sent {
        tracing::debug!("RDMA response not sent: {e}");
    }
    drop(slot);
}
