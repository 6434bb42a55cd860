//! Client side of the lean RPC, and [`Rpc`]: one server's calls, over lean
//! or over gRPC.
//!
//! A [`LeanClient`] keeps one persistent connection to a server and
//! multiplexes every call on it: a call registers a one-shot slot under a
//! fresh request id, writes its frame in one `send` and waits for the slot,
//! which the reader task completes — or the caller's executor, which polls
//! the socket ([`LeanClient::poll_answers`]) before it would sleep. A broken connection fails
//! every waiting call with EIO at once and is replaced by the next call, so
//! a restarted server is picked up without restarting the client.

use super::{Inbox, RequestHeader, ResponseHeader, HEADER_LEN, MAX_BODY_BYTES};
use crate::caller::{CallerSource, FLAG_CALLER};
use crate::mux::{Mux, OnCancel};
use crate::pb::chunk_control_client::ChunkControlClient;
use crate::pb::control_client::ControlClient;
use crate::pb::metadata_client::MetadataClient;
use prost::Message;
use sfs_global::secret::Secret;
use sfs_global::{Errno, SfsError, SfsResult};
use std::sync::{Arc, Mutex};
use std::time::Duration;
use tokio::io::Interest;
use tokio::net::TcpStream;
use tokio::sync::oneshot;
use tonic::transport::Channel;

/// One server's calls: every unary method of the three services, sent over
/// the lean RPC or over gRPC as config `metadata_rpc` says (the methods
/// come from the table in `lean/mod.rs`).
#[derive(Clone)]
pub enum Rpc {
    Lean(Arc<LeanClient>),
    Grpc(Arc<GrpcClients>),
}

/// The tonic clients of one server, sharing one HTTP/2 channel.
#[derive(Clone)]
pub struct GrpcClients {
    pub metadata: MetadataClient<Channel>,
    pub chunks: ChunkControlClient<Channel>,
    pub control: ControlClient<Channel>,
    /// "server NAME (host:port)", for messages.
    label: Arc<str>,
    /// Whose requests these are (`crate::caller`).
    caller: Arc<CallerSource>,
}

impl GrpcClients {
    /// Clients on `channel` of the server described by `label` (for messages).
    pub fn new(channel: Channel, label: &str) -> Self {
        let limit = crate::MAX_MESSAGE_BYTES;
        GrpcClients {
            metadata: MetadataClient::new(channel.clone())
                .max_decoding_message_size(limit)
                .max_encoding_message_size(limit),
            chunks: ChunkControlClient::new(channel.clone())
                .max_decoding_message_size(limit)
                .max_encoding_message_size(limit),
            control: ControlClient::new(channel)
                .max_decoding_message_size(limit)
                .max_encoding_message_size(limit),
            label: label.into(),
            caller: Arc::default(),
        }
    }

    /// Takes the caller of each metadata request from `caller` (by
    /// default: this process's credentials at the time of the call).
    pub fn with_caller(mut self, caller: Arc<CallerSource>) -> Self {
        self.caller = caller;
        self
    }

    /// A request of lean method number `method`, with the `sfs-caller`
    /// header when that method carries the caller.
    pub fn request<T>(&self, method: u16, message: T) -> tonic::Request<T> {
        let mut request = tonic::Request::new(message);
        if crate::methods::carries_caller(method) {
            let value = crate::caller::header_value(&self.caller.current());
            if let Ok(value) = value.parse() {
                request
                    .metadata_mut()
                    .insert(crate::caller::CALLER_HEADER, value);
            }
        }
        request
    }

    /// A failed call as an error: the server's errno when an SFS handler
    /// answered, else (connection lost, deadline) an errno naming the server.
    pub fn error(&self, status: tonic::Status) -> SfsError {
        let e = crate::error_from_status(&status);
        if status.metadata().get(crate::ERRNO_HEADER).is_some() {
            e
        } else {
            SfsError::new(e.errno, format!("{}: {}", self.label, e.message))
        }
    }
}

/// One connection, shared by the callers and the reader task.
///
/// Whoever holds the `inbox` lock reads the socket: the reader task when
/// the runtime reports it readable, or a polling executor
/// ([`LeanClient::poll_answers`]). Both parse every complete answer they
/// find and hand it to its waiter, so answers never depend on who read
/// them.
struct Connection {
    stream: TcpStream,
    /// Bytes read and not yet parsed into answers.
    inbox: Mutex<Inbox>,
    /// Calls waiting for their answers: (status, body) by request id.
    mux: Mux<(i32, Vec<u8>)>,
    /// Frames must not interleave: one writer at a time.
    write_lock: tokio::sync::Mutex<()>,
    label: String,
}

impl Connection {
    fn fail_all(&self, why: &str) {
        self.mux.fail_all(SfsError::io(why));
    }

    /// Reads what the socket holds and delivers every complete answer.
    /// `raw` reads past tokio's readiness (a spinning caller, whose runtime
    /// is not polling the driver); otherwise a `WouldBlock` clears it.
    /// `Err` when the connection is finished (closed, failed, garbage).
    fn drain(&self, inbox: &mut Inbox, raw: bool) -> Result<usize, String> {
        let mut delivered = 0;
        loop {
            let read = if raw {
                inbox.recv_from(&self.stream)
            } else {
                self.stream
                    .try_io(Interest::READABLE, || inbox.recv_from(&self.stream))
            };
            match read {
                Ok(0) => return Err(format!("connection to {} closed by the server", self.label)),
                Ok(_) => delivered += self.deliver(inbox)?,
                Err(e) if e.kind() == std::io::ErrorKind::WouldBlock => return Ok(delivered),
                Err(e) if e.kind() == std::io::ErrorKind::Interrupted => {}
                Err(e) => return Err(format!("connection to {} lost: {e}", self.label)),
            }
        }
    }

    /// Hands every complete answer in `inbox` to its waiter; how many
    /// waiters got one.
    fn deliver(&self, inbox: &mut Inbox) -> Result<usize, String> {
        let mut delivered = 0;
        while let Some((header, body)) = inbox
            .next_frame::<ResponseHeader>()
            .map_err(|e| format!("connection to {}: {}", self.label, e.message))?
        {
            // An answer whose caller gave up (timeout) finds no waiter: dropped.
            if self
                .mux
                .deliver(header.request_id, |()| Ok((header.status, body.to_vec())))
            {
                delivered += 1;
            }
        }
        Ok(delivered)
    }

    /// Writes one whole frame: at once if the socket takes it (the usual
    /// case), else as the runtime reports room.
    async fn send(&self, frame: &[u8]) -> std::io::Result<()> {
        let _turn = self.write_lock.lock().await;
        // A caller abandoned half-way through its frame (and marked the
        // connection broken) while this one waited for its turn: writing now
        // would put this frame in the middle of that one.
        if self.mux.is_broken() {
            return Err(std::io::Error::new(
                std::io::ErrorKind::BrokenPipe,
                format!("connection to {} was given up", self.label),
            ));
        }
        let mut sent = match send_now(&self.stream, frame) {
            Ok(n) => n,
            Err(e) if e.kind() == std::io::ErrorKind::WouldBlock => 0,
            Err(e) => return Err(e),
        };
        while sent < frame.len() {
            self.stream.writable().await?;
            match self.stream.try_write(&frame[sent..]) {
                Ok(n) => sent += n,
                Err(e) if e.kind() == std::io::ErrorKind::WouldBlock => {}
                Err(e) => return Err(e),
            }
        }
        Ok(())
    }
}

/// `send(2)` without waiting and without SIGPIPE.
fn send_now(stream: &TcpStream, frame: &[u8]) -> std::io::Result<usize> {
    Ok(rustix::net::send(
        stream,
        frame,
        rustix::net::SendFlags::DONTWAIT | rustix::net::SendFlags::NOSIGNAL,
    )?)
}

/// Reads answers whenever the runtime reports the socket readable, until
/// the connection fails or its client drops it (`closed`).
async fn read_answers(conn: Arc<Connection>, mut closed: oneshot::Receiver<()>) {
    let why = loop {
        tokio::select! {
            ready = conn.stream.readable() => if let Err(e) = ready {
                break format!("connection to {} lost: {e}", conn.label);
            },
            _ = &mut closed => return,
        }
        let mut inbox = conn.inbox.lock().expect("inbox lock");
        if let Err(why) = conn.drain(&mut inbox, false) {
            break why;
        }
        drop(inbox);
    };
    tracing::debug!("{why}");
    conn.fail_all(&why);
}

/// The client's handle on a connection: dropping it stops the reader task,
/// which closes the socket.
struct Handle {
    conn: Arc<Connection>,
    _stop_reader: oneshot::Sender<()>,
}

/// The lean RPC client of one server.
pub struct LeanClient {
    /// "server NAME (host:port)", for messages.
    label: String,
    endpoint: String,
    connect_timeout: Duration,
    request_timeout: Duration,
    /// Proved to the server on every connect (`crate::auth`).
    secret: Arc<Secret>,
    /// Whose requests these are (`crate::caller`).
    caller: Arc<CallerSource>,
    connection: tokio::sync::Mutex<Option<Handle>>,
}

impl LeanClient {
    /// A client of the server `name` at `endpoint` (`host:port`); connects
    /// (and proves `secret`) on the first call.
    pub fn new(
        name: &str,
        endpoint: &str,
        secret: Arc<Secret>,
        connect_timeout: Duration,
        request_timeout: Duration,
    ) -> Self {
        LeanClient {
            label: format!("server {name} ({endpoint})"),
            endpoint: endpoint.to_string(),
            connect_timeout,
            request_timeout,
            secret,
            caller: Arc::default(),
            connection: tokio::sync::Mutex::new(None),
        }
    }

    /// Takes the caller of each metadata request from `caller` (by
    /// default: this process's credentials at the time of the call).
    pub fn with_caller(mut self, caller: Arc<CallerSource>) -> Self {
        self.caller = caller;
        self
    }

    /// Reads what answers the socket holds now, without waiting, and hands
    /// them to their callers; true if any call got its answer. A caller's
    /// executor calls this while it would otherwise sleep (see
    /// `sfs_rpc::lean::spin`): after every branch of a call has sent its
    /// requests, polling the sockets for a few microseconds is cheaper than
    /// a sleep and a wake-up.
    pub fn poll_answers(&self) -> bool {
        let Ok(slot) = self.connection.try_lock() else {
            return false;
        };
        let Some(conn) = slot.as_ref().map(|h| h.conn.clone()) else {
            return false;
        };
        drop(slot);
        if !conn.mux.has_pending() {
            return false;
        }
        // Another caller (or the reader task) may be reading: the answers
        // it finds reach their callers all the same.
        let Ok(mut inbox) = conn.inbox.try_lock() else {
            return false;
        };
        match conn.drain(&mut inbox, true) {
            Ok(delivered) => delivered > 0,
            Err(why) => {
                drop(inbox);
                conn.fail_all(&why);
                true
            }
        }
    }

    /// Whether a call is waiting for its answer.
    pub fn waiting(&self) -> bool {
        self.connection
            .try_lock()
            .is_ok_and(|slot| slot.as_ref().is_some_and(|h| h.conn.mux.has_pending()))
    }

    async fn connection(&self) -> SfsResult<Arc<Connection>> {
        let mut slot = self.connection.lock().await;
        if let Some(handle) = slot.as_ref() {
            if !handle.conn.mux.is_broken() {
                return Ok(handle.conn.clone());
            }
        }
        let stream = crate::auth::connect_tcp(
            self.endpoint.as_str(),
            &self.secret,
            crate::auth::Purpose::Rpc,
            &self.label,
            self.connect_timeout,
        )
        .await?;
        let _ = stream.set_nodelay(true);
        let conn = Arc::new(Connection {
            stream,
            inbox: Mutex::new(Inbox::new()),
            mux: Mux::new(),
            write_lock: tokio::sync::Mutex::new(()),
            label: self.label.clone(),
        });
        let (stop_reader, closed) = oneshot::channel();
        tokio::spawn(read_answers(conn.clone(), closed));
        *slot = Some(Handle {
            conn: conn.clone(),
            _stop_reader: stop_reader,
        });
        Ok(conn)
    }

    /// Calls `method` with `request`, preceded by the caller block when
    /// `with_caller` (the credentials [`LeanClient::with_caller`] names at
    /// the time of the call); the server's errno on refusal, EIO when the
    /// connection fails, ETIMEDOUT after `request_timeout`.
    pub async fn call<Req: Message, Resp: Message + Default>(
        &self,
        method: u16,
        with_caller: bool,
        request: &Req,
    ) -> SfsResult<Resp> {
        let caller = with_caller.then(|| self.caller.current());
        let body_len =
            request.encoded_len() + caller.as_deref().map_or(0, crate::caller::block_len);
        if body_len > MAX_BODY_BYTES {
            return Err(SfsError::new(
                Errno::EOVERFLOW,
                format!("request of {body_len} bytes exceeds the lean RPC frame limit"),
            ));
        }
        let exchange = async {
            let conn = self.connection().await?;
            let id = conn.mux.next_id();
            let mut frame = Vec::with_capacity(HEADER_LEN + body_len);
            frame.extend_from_slice(
                &RequestHeader {
                    method,
                    flags: if caller.is_some() { FLAG_CALLER } else { 0 },
                    request_id: id,
                    body_len: body_len as u32,
                }
                .encode(),
            );
            if let Some(caller) = &caller {
                crate::caller::encode_block(caller, &mut frame);
            }
            request
                .encode(&mut frame)
                .map_err(|e| SfsError::io(format!("encoding a request: {e}")))?;
            // A call that ends without its answer (error, timeout,
            // cancellation) leaves no entry behind.
            let registration = conn
                .mux
                .register(id, (), OnCancel::Forget)
                .map_err(|_| self.lost())?;
            {
                // A frame abandoned half-way (timeout, cancellation) would
                // desynchronise the stream: the connection is then unusable.
                let poison = scopeguard::guard((), |()| conn.mux.mark_broken());
                if let Err(e) = conn.send(&frame).await {
                    let why = format!("connection to {} lost: {e}", self.label);
                    conn.fail_all(&why);
                    return Err(SfsError::io(why));
                }
                scopeguard::ScopeGuard::into_inner(poison);
            }
            registration
                .answer()
                .await
                .unwrap_or_else(|| Err(self.lost()))
        };
        let (status, body) = tokio::time::timeout(self.request_timeout, exchange)
            .await
            .map_err(|_| {
                SfsError::timed_out(format!(
                    "{} did not answer within {:?}",
                    self.label, self.request_timeout
                ))
            })??;
        if status != 0 {
            return Err(SfsError::new(
                Errno(status),
                String::from_utf8_lossy(&body).into_owned(),
            ));
        }
        Resp::decode(body.as_slice()).map_err(|e| {
            SfsError::new(
                Errno::EPROTO,
                format!("{} sent an undecodable answer: {e}", self.label),
            )
        })
    }

    fn lost(&self) -> SfsError {
        SfsError::io(format!("connection to {} lost", self.label))
    }
}
