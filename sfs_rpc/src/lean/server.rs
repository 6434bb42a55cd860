//! Server side of the lean RPC.
//!
//! One task per connection reads requests, runs them and writes the answers.
//! A call that completes at once (the point RocksDB calls, which the
//! services run inline) is answered within the same wake-up that read it:
//! no task is spawned and no channel crossed, so a request costs one `read`
//! and one `write`. Calls that wait (syncs, scans on the blocking pool) stay
//! in flight while the connection goes on reading, so a slow call never
//! holds up the quick ones behind it.
//!
//! Memory is bounded ([`MemoryBudget`]): a request reserves its body and,
//! for a chunk read, the range it asks for, from its connection's share and
//! then the server's, before it starts; the reservation is given back once
//! its answer has been written to the socket. A request that does not fit
//! stays unread in the connection's buffer, and the connection is not read
//! further until it does (back-pressure: the client's sends block), so a
//! client that pipelines requests and never reads the answers pins at most
//! its share.

use super::spin::Spin;
use super::{Inbox, RequestHeader, ResponseHeader, MAX_ERROR_MESSAGE};
use crate::caller::FLAG_CALLER;
use bytes::Bytes;
use futures::stream::{FuturesUnordered, StreamExt};
use futures::FutureExt;
use sfs_global::access::Caller;
use sfs_global::SfsResult;
use std::future::Future;
use std::pin::Pin;
use std::sync::Arc;
use std::time::Duration;
use tokio::io::Interest;
use tokio::net::TcpStream;
use tokio::sync::{OwnedSemaphorePermit, Semaphore};

/// Requests of one connection in flight at once; past this the server stops
/// reading that connection until some finish (TCP pushes back on the client).
pub const MAX_IN_FLIGHT: usize = 256;

/// The lean method number of `read_chunk`, whose answer is as large as the
/// range it asks for.
const READ_CHUNK: u16 = 36;

/// How many bytes the lean RPC may hold for requests in flight and their
/// unwritten answers: per connection, and over all connections of a server
/// (config `rpc_memory_per_connection_bytes`, `rpc_memory_bytes`).
#[derive(Clone)]
pub struct MemoryBudget {
    server: Arc<Semaphore>,
    per_connection: usize,
}

impl MemoryBudget {
    /// A budget of `total` bytes a server, `per_connection` a connection
    /// (each at least 1, the total at least one connection's).
    pub fn new(total: u64, per_connection: u64) -> MemoryBudget {
        let per_connection = usize::try_from(per_connection.max(1)).unwrap_or(usize::MAX);
        let server_bytes = usize::try_from(total.max(1))
            .unwrap_or(usize::MAX)
            .max(per_connection)
            .min(Semaphore::MAX_PERMITS);
        MemoryBudget {
            server: Arc::new(Semaphore::new(server_bytes)),
            per_connection: per_connection.min(server_bytes),
        }
    }

    /// What a request reserves: its body, plus the range a chunk read asks
    /// for; never more than a connection's share (a request larger than
    /// the budget runs alone rather than never).
    fn cost(&self, header: &RequestHeader, body: &[u8]) -> usize {
        let asked = if header.method == READ_CHUNK {
            use prost::Message;
            crate::pb::ReadChunkRequest::decode(body)
                .ok()
                .and_then(|r| r.range)
                .map_or(0, |r| usize::try_from(r.len).unwrap_or(usize::MAX))
                .min(super::MAX_BODY_BYTES)
        } else {
            0
        };
        (body.len() + asked).clamp(1, self.per_connection)
    }
}

/// Bytes a request of a connection the lean server does not read itself
/// (a gRPC connection) holds of a [`MemoryBudget`] until its answer is
/// sent: its connection's share and, unless it was admitted as the
/// connection's only small request, the server's.
pub struct Reservation {
    _share: OwnedSemaphorePermit,
    _server: Option<OwnedSemaphorePermit>,
}

impl MemoryBudget {
    /// A new connection's own share of the budget, for
    /// [`MemoryBudget::reserve`].
    pub fn connection_share(&self) -> Arc<Semaphore> {
        Arc::new(Semaphore::new(self.per_connection))
    }

    /// Reserves `cost` bytes (at least 1, at most a connection's share) for
    /// one request of the connection whose share is `share`, waiting until
    /// the connection's earlier requests and then the server's other
    /// connections leave room — the same rules as the lean server's: a
    /// small request of a connection with nothing else reserved is always
    /// admitted. `None` only when the budget was closed.
    pub async fn reserve(&self, share: &Arc<Semaphore>, cost: usize) -> Option<Reservation> {
        let cost = cost.clamp(1, self.per_connection);
        let own = share.clone().acquire_many_owned(cost as u32).await.ok()?;
        let alone = share.available_permits() + cost >= self.per_connection;
        let server = match self.server.clone().try_acquire_many_owned(cost as u32) {
            Ok(permit) => Some(permit),
            Err(_) if alone && cost <= ALWAYS_ADMITTED => None,
            Err(_) => Some(
                self.server
                    .clone()
                    .acquire_many_owned(cost as u32)
                    .await
                    .ok()?,
            ),
        };
        Some(Reservation {
            _share: own,
            _server: server,
        })
    }

    /// The bytes of the server's budget not reserved now.
    pub fn available(&self) -> usize {
        self.server.available_permits()
    }
}

/// A small request a connection with nothing else in flight may always
/// run, even when other connections hold the server's whole budget (for
/// example clients that never read their answers): every connection keeps
/// making progress, and what such requests hold is bounded by the number of
/// connections times this.
const ALWAYS_ADMITTED: usize = 64 * 1024;

/// Bytes reserved by one request until its answer is written (the
/// server's permit, or none for an [`ALWAYS_ADMITTED`] request).
struct Reserved {
    bytes: usize,
    _permit: Option<OwnedSemaphorePermit>,
}

/// Runs one lean request: `method` with its prost-encoded `body`, answering
/// the prost-encoded response or the handler's error (its errno goes on
/// the wire). `crate::methods::Services` is the dispatch of a server's
/// handlers.
pub trait Dispatch: Send + Sync + 'static {
    fn call(
        &self,
        method: u16,
        caller: Option<Caller>,
        body: Bytes,
    ) -> Pin<Box<dyn Future<Output = SfsResult<Vec<u8>>> + Send + '_>>;
}

/// Serves lean requests on `stream` until the client closes it, a protocol
/// error, or `stop` resolves; in-flight requests are answered before the
/// connection closes. Between requests the connection polls for the next
/// one for up to `spin` ([`Spin`]) before it sleeps.
pub async fn serve_connection(
    stream: TcpStream,
    dispatch: Arc<dyn Dispatch>,
    budget: MemoryBudget,
    spin: Duration,
    stop: impl Future<Output = ()>,
) {
    let peer = stream
        .peer_addr()
        .map_or_else(|_| "?".to_string(), |a| a.to_string());
    let dispatch = &*dispatch;
    let spin = Spin::new(spin);
    let mut inbox = Inbox::new();
    let mut output: Vec<u8> = Vec::with_capacity(64 * 1024);
    let mut in_flight = FuturesUnordered::new();
    let mut reading = true;
    // Bytes this connection has reserved: requests in flight and answers in
    // `output`, whose reservations wait in `written` for the write.
    let mut used = 0usize;
    let mut written: Vec<Reserved> = Vec::new();
    // The cost of the next request when it waits for the server's budget
    // with nothing of this connection's own to wait for.
    let mut waiting_for_server: Option<usize> = None;
    tokio::pin!(stop);
    loop {
        // Start every complete request already read that fits the budget.
        let mut full = false;
        while in_flight.len() < MAX_IN_FLIGHT && waiting_for_server.is_none() {
            let cost = match inbox.peek_frame::<RequestHeader>() {
                Ok(Some((header, body))) => budget.cost(&header, body),
                Ok(None) => break,
                Err(e) => {
                    tracing::warn!(%peer, "dropping lean RPC connection: {}", e.message);
                    return;
                }
            };
            if used > 0 && used + cost > budget.per_connection {
                full = true;
                break;
            }
            let permit = match budget.server.clone().try_acquire_many_owned(cost as u32) {
                Ok(permit) => Some(permit),
                Err(_) if used == 0 && cost <= ALWAYS_ADMITTED => None,
                Err(_) if used > 0 => {
                    full = true;
                    break;
                }
                Err(_) => {
                    waiting_for_server = Some(cost);
                    break;
                }
            };
            used += cost;
            let reserved = Reserved {
                bytes: cost,
                _permit: permit,
            };
            if let Ok(Some((header, body))) = inbox.next_frame::<RequestHeader>() {
                in_flight.push(answer(
                    dispatch,
                    header,
                    Bytes::copy_from_slice(body),
                    reserved,
                ));
            }
        }
        // Point calls finish on their first poll: answer them now, together.
        while let Some(Some((id, result, reserved))) = in_flight.next().now_or_never() {
            encode_response(&mut output, id, result);
            written.push(reserved);
        }
        if !output.is_empty() {
            if write_all(&stream, &output).await.is_err() {
                return;
            }
            output.clear();
            output.shrink_to(64 * 1024);
            used -= written.iter().map(|r| r.bytes).sum::<usize>();
            written.clear();
            if full {
                // Room was made: admit what waits before reading more.
                continue;
            }
        }
        if !reading && in_flight.is_empty() {
            break;
        }
        // Idle: the client is likely to send its next request at once.
        if reading && in_flight.is_empty() && !full && waiting_for_server.is_none() {
            match spin.poll(|| match inbox.recv_from(&stream) {
                Err(e) if e.kind() == std::io::ErrorKind::WouldBlock => None,
                other => Some(other),
            }) {
                Some(Ok(0)) => {
                    // Closed while polling: answer what was read, then close
                    // (the loop's top; the select below would have nothing
                    // left to wait for).
                    reading = false;
                    continue;
                }
                Some(Ok(_)) => continue,
                Some(Err(_)) => return,
                None => {}
            }
        }
        tokio::select! {
            // Over budget the connection is not read further: its requests
            // wait in the socket (and the client's sends block).
            ready = stream.readable(), if reading && in_flight.len() < MAX_IN_FLIGHT && !full && waiting_for_server.is_none() => {
                if ready.is_err() {
                    return;
                }
                match stream.try_io(Interest::READABLE, || inbox.recv_from(&stream)) {
                    // The client closed its side: answer what it sent, then close.
                    Ok(0) => reading = false,
                    Ok(_) => {}
                    Err(e) if e.kind() == std::io::ErrorKind::WouldBlock => {}
                    Err(_) => return,
                }
            }
            Some((id, result, reserved)) = in_flight.next(), if !in_flight.is_empty() => {
                encode_response(&mut output, id, result);
                written.push(reserved);
            }
            permit = budget.server.clone().acquire_many_owned(waiting_for_server.unwrap_or(1) as u32), if waiting_for_server.is_some() => {
                let Ok(permit) = permit else { return };
                let cost = waiting_for_server.take().unwrap_or(0);
                if let Ok(Some((header, body))) = inbox.next_frame::<RequestHeader>() {
                    used += cost;
                    let reserved = Reserved { bytes: cost, _permit: Some(permit) };
                    in_flight.push(answer(dispatch, header, Bytes::copy_from_slice(body), reserved));
                }
            }
            () = &mut stop, if reading => reading = false,
        }
    }
    let _ = rustix::net::shutdown(&stream, rustix::net::Shutdown::Write);
}

/// Writes all of `bytes`, waiting for room when the socket is full.
async fn write_all(stream: &TcpStream, mut bytes: &[u8]) -> std::io::Result<()> {
    while !bytes.is_empty() {
        match stream.try_write(bytes) {
            Ok(n) => bytes = &bytes[n..],
            Err(e) if e.kind() == std::io::ErrorKind::WouldBlock => stream.writable().await?,
            Err(e) => return Err(e),
        }
    }
    Ok(())
}

/// Runs one request. A caller block that does not decode is that
/// request's refusal (EPROTO), as an undecodable body is.
async fn answer(
    dispatch: &dyn Dispatch,
    header: RequestHeader,
    body: Bytes,
    reserved: Reserved,
) -> (u64, SfsResult<Vec<u8>>, Reserved) {
    let (id, result) = run(dispatch, header, body).await;
    (id, result, reserved)
}

async fn run(
    dispatch: &dyn Dispatch,
    header: RequestHeader,
    body: Bytes,
) -> (u64, SfsResult<Vec<u8>>) {
    let (caller, body) = if header.flags & FLAG_CALLER != 0 {
        match crate::caller::decode_block(&body) {
            Ok((caller, rest)) => {
                let at = body.len() - rest.len();
                (Some(caller), body.slice(at..))
            }
            Err(e) => return (header.request_id, Err(e)),
        }
    } else {
        (None, body)
    };
    (
        header.request_id,
        dispatch.call(header.method, caller, body).await,
    )
}

fn encode_response(output: &mut Vec<u8>, request_id: u64, result: SfsResult<Vec<u8>>) {
    let (status, body) = match result {
        Ok(body) if body.len() <= super::MAX_BODY_BYTES => (0, body),
        Ok(body) => (
            sfs_global::Errno::EOVERFLOW.0,
            format!(
                "lean RPC: answer of {} bytes exceeds the frame limit",
                body.len()
            )
            .into_bytes(),
        ),
        Err(e) => {
            let mut message = e.message;
            if message.len() > MAX_ERROR_MESSAGE {
                let mut cut = MAX_ERROR_MESSAGE;
                while !message.is_char_boundary(cut) {
                    cut -= 1;
                }
                message.truncate(cut);
            }
            (e.errno.0, message.into_bytes())
        }
    };
    let header = ResponseHeader {
        status,
        request_id,
        body_len: u32::try_from(body.len()).unwrap_or(u32::MAX),
    };
    output.extend_from_slice(&header.encode());
    output.extend_from_slice(&body);
}

#[cfg(test)]
mod budget_tests {
    use super::*;
    use prost::Message;

    #[test]
    fn a_chunk_read_reserves_the_range_it_asks_for() {
        assert_eq!(
            crate::methods::method_name(READ_CHUNK),
            Some("read_chunk"),
            "READ_CHUNK names the lean method"
        );
        let budget = MemoryBudget::new(64 << 20, 16 << 20);
        let read = |len: u64| {
            crate::pb::ReadChunkRequest {
                range: Some(crate::pb::ChunkRange {
                    id_hi: 1,
                    id_lo: 2,
                    index: 0,
                    offset: 0,
                    len,
                }),
                stat: None,
            }
            .encode_to_vec()
        };
        let header = |method: u16, body: &[u8]| RequestHeader {
            method,
            flags: 0,
            request_id: 1,
            body_len: body.len() as u32,
        };
        let body = read(512 * 1024);
        assert_eq!(
            budget.cost(&header(READ_CHUNK, &body), &body),
            body.len() + 512 * 1024
        );
        // The same bytes under another method cost their length only.
        assert_eq!(budget.cost(&header(2, &body), &body), body.len());
        // Never more than a connection's share, never nothing.
        let huge = read(u64::MAX);
        assert_eq!(budget.cost(&header(READ_CHUNK, &huge), &huge), 16 << 20);
        assert_eq!(budget.cost(&header(2, &[]), &[]), 1);
        // Garbage is charged as its length.
        assert_eq!(budget.cost(&header(READ_CHUNK, &[0xff; 9]), &[0xff; 9]), 9);
    }

    #[test]
    fn the_server_budget_is_at_least_one_connections() {
        let budget = MemoryBudget::new(1, 8 << 20);
        assert_eq!(budget.server.available_permits(), 8 << 20);
        assert_eq!(budget.per_connection, 8 << 20);
    }
}
