//! Server side of the lean RPC.
//!
//! One task per connection reads requests, runs them and writes the answers.
//! A call that completes at once (the point RocksDB calls, which the
//! services run inline) is answered within the same wake-up that read it:
//! no task is spawned and no channel crossed, so a request costs one `read`
//! and one `write`. Calls that wait (syncs, scans on the blocking pool) stay
//! in flight while the connection goes on reading, so a slow call never
//! holds up the quick ones behind it.

use super::spin::Spin;
use super::{Inbox, RequestHeader, ResponseHeader, MAX_ERROR_MESSAGE};
use crate::caller::FLAG_CALLER;
use bytes::Bytes;
use futures::stream::{FuturesUnordered, StreamExt};
use futures::FutureExt;
use sfs_global::access::Caller;
use std::future::Future;
use std::pin::Pin;
use std::sync::Arc;
use std::time::Duration;
use tokio::io::Interest;
use tokio::net::TcpStream;
use tonic::Status;

/// Requests of one connection in flight at once; past this the server stops
/// reading that connection until some finish (TCP pushes back on the client).
pub const MAX_IN_FLIGHT: usize = 256;

/// The three services of a server, as the lean RPC calls them.
pub struct Services<M, C, K> {
    pub metadata: Arc<M>,
    pub chunks: Arc<C>,
    pub control: Arc<K>,
}

/// Runs one lean request: `method` with its prost-encoded `body`, answering
/// the prost-encoded response or the status the service returned.
pub trait Dispatch: Send + Sync + 'static {
    fn call(
        &self,
        method: u16,
        caller: Option<Caller>,
        body: Bytes,
    ) -> Pin<Box<dyn Future<Output = Result<Vec<u8>, Status>> + Send + '_>>;
}

impl<M, C, K> Dispatch for Services<M, C, K>
where
    M: crate::pb::metadata_server::Metadata,
    C: crate::pb::chunk_control_server::ChunkControl,
    K: crate::pb::control_server::Control,
{
    fn call(
        &self,
        method: u16,
        caller: Option<Caller>,
        body: Bytes,
    ) -> Pin<Box<dyn Future<Output = Result<Vec<u8>, Status>> + Send + '_>> {
        Box::pin(self.dispatch(method, caller, body))
    }
}

/// Serves lean requests on `stream` until the client closes it, a protocol
/// error, or `stop` resolves; in-flight requests are answered before the
/// connection closes. Between requests the connection polls for the next
/// one for up to `spin` ([`Spin`]) before it sleeps.
pub async fn serve_connection(
    stream: TcpStream,
    dispatch: Arc<dyn Dispatch>,
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
    tokio::pin!(stop);
    loop {
        // Start every complete request already read.
        while in_flight.len() < MAX_IN_FLIGHT {
            match inbox.next_frame::<RequestHeader>() {
                Ok(Some((header, body))) => {
                    in_flight.push(answer(dispatch, header, Bytes::copy_from_slice(body)))
                }
                Ok(None) => break,
                Err(e) => {
                    tracing::warn!(%peer, "dropping lean RPC connection: {}", e.message);
                    return;
                }
            }
        }
        // Point calls finish on their first poll: answer them now, together.
        while let Some(Some((id, result))) = in_flight.next().now_or_never() {
            encode_response(&mut output, id, result);
        }
        if !output.is_empty() {
            if write_all(&stream, &output).await.is_err() {
                return;
            }
            output.clear();
            output.shrink_to(64 * 1024);
        }
        if !reading && in_flight.is_empty() {
            break;
        }
        // Idle: the client is likely to send its next request at once.
        if reading && in_flight.is_empty() {
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
            ready = stream.readable(), if reading && in_flight.len() < MAX_IN_FLIGHT => {
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
            Some((id, result)) = in_flight.next(), if !in_flight.is_empty() => {
                encode_response(&mut output, id, result);
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
) -> (u64, Result<Vec<u8>, Status>) {
    let (caller, body) = if header.flags & FLAG_CALLER != 0 {
        match crate::caller::decode_block(&body) {
            Ok((caller, rest)) => {
                let at = body.len() - rest.len();
                (Some(caller), body.slice(at..))
            }
            Err(e) => return (header.request_id, Err(crate::status_from_error(&e))),
        }
    } else {
        (None, body)
    };
    (
        header.request_id,
        dispatch.call(header.method, caller, body).await,
    )
}

fn encode_response(output: &mut Vec<u8>, request_id: u64, result: Result<Vec<u8>, Status>) {
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
        Err(status) => {
            let e = crate::error_from_status(&status);
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
