//! The SFS services over SFS's own framing: the *lean* RPC.
//!
//! Every unary call of the `Metadata`, `ChunkControl` and `Control` services
//! of `sfs.proto` can travel here instead of over gRPC: the same prost
//! messages, answered by the same server code (the tonic service traits are
//! called directly, so validation and errnos are identical), framed by a
//! fixed 20-byte header on a plain TCP connection. A unary gRPC call costs
//! HTTP/2 framing, HPACK and several task hand-offs on each side — about
//! 100 µs of wall time on a 2-vCPU VM where a TCP round trip takes 22 µs
//! (docs/performance.md) — while a lean call is one `write` and one `read`
//! on each side. The gRPC services stay the reference interface; config
//! `metadata_rpc` picks which one a client uses.
//!
//! Lean connections share the server's gRPC port: the server looks at the
//! first four bytes a client sends (`SFSQ` here, `PRI ` for HTTP/2's
//! preface, [`is_lean_preamble`]) and hands the connection to one protocol or
//! the other.
//!
//! ```text
//! request  (20 bytes): magic "SFSQ" | method u16 | flags u16 | request id u64 | body len u32
//!                      then `body len` bytes: with flag 1 (`FLAG_CALLER`) a caller block
//!                      (crate::caller), then the prost-encoded request
//! response (20 bytes): magic "SFSA" | status i32 | request id u64 | body len u32
//!                      then the prost-encoded response (status 0),
//!                      or the error message in UTF-8 (status = the errno)
//! ```
//!
//! All integers are little-endian. Many requests are in flight on one
//! connection; responses come back in completion order, matched by id.
//! Streaming calls (`Readdir`, `ListSubtree`) have paged unary twins
//! (`ReaddirPaged`, `ListSubtreePaged`) that both protocols carry.

pub mod client;
pub mod server;
pub mod spin;

pub use client::{GrpcClients, LeanClient, Rpc};
pub use server::{serve_connection, Dispatch, MemoryBudget, Reservation, Services};

use sfs_global::{Errno, SfsError, SfsResult};
use std::os::fd::AsFd;

pub const REQUEST_MAGIC: [u8; 4] = *b"SFSQ";
pub const RESPONSE_MAGIC: [u8; 4] = *b"SFSA";
pub const HEADER_LEN: usize = 20;

/// Largest body either side accepts, as for gRPC messages.
pub const MAX_BODY_BYTES: usize = crate::MAX_MESSAGE_BYTES;

/// Longest error message a server sends (longer ones are cut).
const MAX_ERROR_MESSAGE: usize = 4096;

/// Whether the first bytes of a connection are a lean request (rather than
/// an HTTP/2 preface).
pub fn is_lean_preamble(first: &[u8]) -> bool {
    first.starts_with(&REQUEST_MAGIC)
}

/// A decoded request header.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct RequestHeader {
    pub method: u16,
    /// [`crate::caller::FLAG_CALLER`] or 0; other bits are refused.
    pub flags: u16,
    pub request_id: u64,
    pub body_len: u32,
}

impl RequestHeader {
    pub fn encode(&self) -> [u8; HEADER_LEN] {
        let mut b = [0u8; HEADER_LEN];
        b[0..4].copy_from_slice(&REQUEST_MAGIC);
        b[4..6].copy_from_slice(&self.method.to_le_bytes());
        b[6..8].copy_from_slice(&self.flags.to_le_bytes());
        b[8..16].copy_from_slice(&self.request_id.to_le_bytes());
        b[16..20].copy_from_slice(&self.body_len.to_le_bytes());
        b
    }

    /// Decodes a header; a wrong magic or an oversized body is a protocol
    /// error (the server drops the connection).
    pub fn decode(b: &[u8; HEADER_LEN]) -> SfsResult<RequestHeader> {
        if b[0..4] != REQUEST_MAGIC {
            return Err(protocol("request with a wrong magic"));
        }
        let header = RequestHeader {
            method: u16::from_le_bytes([b[4], b[5]]),
            flags: u16::from_le_bytes([b[6], b[7]]),
            request_id: u64::from_le_bytes(b[8..16].try_into().expect("8 bytes")),
            body_len: u32::from_le_bytes(b[16..20].try_into().expect("4 bytes")),
        };
        check_body_len(header.body_len)?;
        if header.flags & !crate::caller::FLAG_CALLER != 0 {
            return Err(protocol(&format!(
                "unknown request flags {:#x}",
                header.flags
            )));
        }
        Ok(header)
    }
}

/// A decoded response header.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct ResponseHeader {
    /// 0 for success, else the errno.
    pub status: i32,
    pub request_id: u64,
    pub body_len: u32,
}

impl ResponseHeader {
    pub fn encode(&self) -> [u8; HEADER_LEN] {
        let mut b = [0u8; HEADER_LEN];
        b[0..4].copy_from_slice(&RESPONSE_MAGIC);
        b[4..8].copy_from_slice(&self.status.to_le_bytes());
        b[8..16].copy_from_slice(&self.request_id.to_le_bytes());
        b[16..20].copy_from_slice(&self.body_len.to_le_bytes());
        b
    }

    pub fn decode(b: &[u8; HEADER_LEN]) -> SfsResult<ResponseHeader> {
        if b[0..4] != RESPONSE_MAGIC {
            return Err(protocol("response with a wrong magic"));
        }
        let header = ResponseHeader {
            status: i32::from_le_bytes(b[4..8].try_into().expect("4 bytes")),
            request_id: u64::from_le_bytes(b[8..16].try_into().expect("8 bytes")),
            body_len: u32::from_le_bytes(b[16..20].try_into().expect("4 bytes")),
        };
        check_body_len(header.body_len)?;
        Ok(header)
    }
}

/// A frame header of either direction.
pub(crate) trait Header: Sized {
    fn decode(b: &[u8; HEADER_LEN]) -> SfsResult<Self>;
    fn body_len(&self) -> usize;
}

impl Header for RequestHeader {
    fn decode(b: &[u8; HEADER_LEN]) -> SfsResult<Self> {
        RequestHeader::decode(b)
    }
    fn body_len(&self) -> usize {
        self.body_len as usize
    }
}

impl Header for ResponseHeader {
    fn decode(b: &[u8; HEADER_LEN]) -> SfsResult<Self> {
        ResponseHeader::decode(b)
    }
    fn body_len(&self) -> usize {
        self.body_len as usize
    }
}

/// Bytes read from a connection and not yet taken as frames.
pub(crate) struct Inbox {
    buf: Vec<u8>,
    start: usize,
}

impl Inbox {
    pub(crate) fn new() -> Self {
        Inbox {
            buf: Vec::with_capacity(64 * 1024),
            start: 0,
        }
    }

    /// Reads what the socket holds now, never waiting (`WouldBlock` when it
    /// holds nothing); `Ok(0)` at the end of the stream. This reads past
    /// tokio's readiness: wrap it in `try_io` to keep that in step.
    pub(crate) fn recv_from(&mut self, socket: impl AsFd) -> std::io::Result<usize> {
        if self.start > 0
            && (self.start == self.buf.len() || self.buf.capacity() - self.buf.len() < 16 * 1024)
        {
            self.buf.drain(..self.start);
            self.start = 0;
        }
        if self.buf.capacity() - self.buf.len() < 16 * 1024 {
            self.buf.reserve(64 * 1024);
        }
        // `recv` reports (bytes stored, bytes the message had); for a
        // stream they are the same.
        let (stored, _) = rustix::net::recv(
            socket,
            rustix::buffer::spare_capacity(&mut self.buf),
            rustix::net::RecvFlags::DONTWAIT,
        )?;
        Ok(stored)
    }

    /// The next complete frame without taking it (what [`Inbox::next_frame`]
    /// would return next).
    pub(crate) fn peek_frame<H: Header>(&mut self) -> SfsResult<Option<(H, &[u8])>> {
        let start = self.start;
        let frame = self.next_frame::<H>()?;
        let Some((header, _)) = frame else {
            return Ok(None);
        };
        let at = start + HEADER_LEN;
        let end = at + header.body_len();
        self.start = start;
        Ok(Some((header, &self.buf[at..end])))
    }

    /// Takes the next complete frame: its header and body.
    pub(crate) fn next_frame<H: Header>(&mut self) -> SfsResult<Option<(H, &[u8])>> {
        let rest = &self.buf[self.start..];
        if rest.len() < HEADER_LEN {
            return Ok(None);
        }
        let header = H::decode(rest[..HEADER_LEN].try_into().expect("header length"))?;
        let frame_len = HEADER_LEN + header.body_len();
        if rest.len() < frame_len {
            let missing = frame_len - rest.len();
            self.buf.reserve(missing);
            return Ok(None);
        }
        let at = self.start;
        self.start += frame_len;
        Ok(Some((header, &self.buf[at + HEADER_LEN..at + frame_len])))
    }
}

fn check_body_len(len: u32) -> SfsResult<()> {
    if len as usize > MAX_BODY_BYTES {
        return Err(protocol(&format!(
            "frame body of {len} bytes is larger than the limit of {MAX_BODY_BYTES}"
        )));
    }
    Ok(())
}

fn protocol(why: &str) -> SfsError {
    SfsError::new(Errno::EPROTO, format!("lean RPC: {why}"))
}

/// Whether requests of `method` carry the caller ([`crate::caller`]): the
/// `Metadata` service's (1..=31), whose handlers check permissions, and
/// `SetSource` (40), whose server checks that the caller may read the
/// backing file. Other chunk and control calls act on file ids a
/// permitted open handed out, or concern the whole server, and go without
/// (no bytes, no system calls).
pub const fn carries_caller(method: u16) -> bool {
    method < 32 || method == 40
}

/// Declares the methods the lean RPC carries, once: the server's dispatch
/// ([`Services`]), the typed calls of [`LeanClient`] and of [`Rpc`] (which
/// sends each call over lean or gRPC) all come from this table, so the
/// protocols cannot drift apart. Numbers are part of the wire format: never
/// reuse one.
macro_rules! lean_methods {
    ($( $code:literal => $service:ident . $method:ident ( $req:ident ) -> $resp:ident ; )*) => {
        /// Every method number with its name, in table order (for the
        /// server's per-method metrics).
        pub const METHODS: &[(u16, &str)] = &[$( ($code, stringify!($method)), )*];

        /// The name of a method number (for logs and errors).
        pub fn method_name(method: u16) -> Option<&'static str> {
            match method {
                $( $code => Some(stringify!($method)), )*
                _ => None,
            }
        }

        impl<M, C, K> server::Services<M, C, K>
        where
            M: crate::pb::metadata_server::Metadata,
            C: crate::pb::chunk_control_server::ChunkControl,
            K: crate::pb::control_server::Control,
        {
            /// Decodes the body of a `method` request, calls the service and
            /// encodes its answer.
            async fn dispatch(
                &self,
                method: u16,
                caller: Option<sfs_global::access::Caller>,
                body: bytes::Bytes,
            ) -> Result<Vec<u8>, tonic::Status> {
                use prost::Message;
                #[allow(unused_imports)]
                use crate::pb::{chunk_control_server::ChunkControl, control_server::Control, metadata_server::Metadata};
                match method {
                    $( $code => {
                        let request = crate::pb::$req::decode(body).map_err(|e| {
                            tonic::Status::invalid_argument(format!(
                                "{}: undecodable request: {e}", stringify!($method)
                            ))
                        })?;
                        let mut request = tonic::Request::new(request);
                        if let Some(caller) = caller {
                            request.extensions_mut().insert(caller);
                        }
                        let response = self.$service.$method(request).await?;
                        Ok(response.into_inner().encode_to_vec())
                    } )*
                    other => Err(crate::status_from_error(&SfsError::new(
                        Errno::ENOSYS,
                        format!("lean RPC: unknown method {other}"),
                    ))),
                }
            }
        }

        impl client::LeanClient {
            $(
                pub async fn $method(&self, request: crate::pb::$req) -> SfsResult<crate::pb::$resp> {
                    self.call($code, carries_caller($code), &request).await
                }
            )*
        }

        impl client::Rpc {
            $(
                pub async fn $method(&self, request: crate::pb::$req) -> SfsResult<crate::pb::$resp> {
                    match self {
                        client::Rpc::Lean(lean) => lean.$method(request).await,
                        client::Rpc::Grpc(grpc) => grpc
                            .$service
                            .clone()
                            .$method(grpc.request($code, request))
                            .await
                            .map(tonic::Response::into_inner)
                            .map_err(|status| grpc.error(status)),
                    }
                }
            )*
        }
    };
}

lean_methods! {
    1 => metadata.create(CreateRequest) -> CreateResponse;
    2 => metadata.stat(PathRequest) -> Entry;
    3 => metadata.remove(RemoveRequest) -> Entry;
    4 => metadata.grow_size(GrowSizeRequest) -> Empty;
    5 => metadata.reserve_append(ReserveAppendRequest) -> ReserveAppendResponse;
    6 => metadata.truncate(TruncateRequest) -> Entry;
    7 => metadata.set_attr(SetAttrRequest) -> Entry;
    8 => metadata.readdir_paged(ReaddirPageRequest) -> ReaddirPage;
    9 => metadata.has_children(PathRequest) -> HasChildrenResponse;
    10 => metadata.put_entry(PutEntryRequest) -> PutEntryResponse;
    11 => metadata.list_subtree_paged(ReaddirPageRequest) -> SubtreePage;
    12 => metadata.sync_metadata(Empty) -> Empty;
    13 => metadata.share_entry(LinkRequest) -> Entry;
    14 => metadata.add_links(LinkRequest) -> Entry;
    15 => metadata.set_xattr(SetXattrRequest) -> Entry;
    32 => chunks.remove_chunks(FileRequest) -> Empty;
    33 => chunks.truncate_chunks(TruncateChunksRequest) -> Empty;
    34 => chunks.sync_chunks(FileRequest) -> Empty;
    35 => chunks.write_chunk(WriteChunkRequest) -> Empty;
    36 => chunks.read_chunk(ReadChunkRequest) -> ReadChunkResponse;
    37 => chunks.flush_chunks(FlushChunksRequest) -> FlushChunksResponse;
    38 => chunks.holdings(HoldingsRequest) -> HoldingsResponse;
    39 => chunks.write_back_soon(FileRequest) -> Empty;
    40 => chunks.set_source(SetSourceRequest) -> Empty;
    48 => control.hello(HelloRequest) -> HelloResponse;
    49 => control.stats(Empty) -> StatsResponse;
    50 => control.shutdown(Empty) -> Empty;
    51 => control.checkpoint(CheckpointRequest) -> CheckpointResponse;
    52 => control.commit_checkpoint(CommitCheckpointRequest) -> Empty;
}

#[cfg(test)]
mod tests;

#[cfg(test)]
mod frame_tests {
    use super::*;

    #[test]
    fn headers_round_trip() {
        let q = RequestHeader {
            method: 7,
            flags: crate::caller::FLAG_CALLER,
            request_id: u64::MAX - 3,
            body_len: 1234,
        };
        assert_eq!(RequestHeader::decode(&q.encode()).unwrap(), q);
        let a = ResponseHeader {
            status: 2,
            request_id: 1 << 40,
            body_len: 0,
        };
        assert_eq!(ResponseHeader::decode(&a.encode()).unwrap(), a);
    }

    #[test]
    fn hostile_headers_are_refused() {
        let mut q = RequestHeader {
            method: 1,
            flags: 0,
            request_id: 1,
            body_len: 0,
        }
        .encode();
        q[0] = b'P';
        assert_eq!(RequestHeader::decode(&q).unwrap_err().errno, Errno::EPROTO);
        let big = RequestHeader {
            method: 1,
            flags: 0,
            request_id: 1,
            body_len: MAX_BODY_BYTES as u32 + 1,
        };
        assert_eq!(
            RequestHeader::decode(&big.encode()).unwrap_err().errno,
            Errno::EPROTO
        );
        assert!(ResponseHeader::decode(&[0; HEADER_LEN]).is_err());
        let unknown_flag = RequestHeader {
            method: 1,
            flags: 2,
            request_id: 1,
            body_len: 0,
        };
        assert_eq!(
            RequestHeader::decode(&unknown_flag.encode())
                .unwrap_err()
                .errno,
            Errno::EPROTO
        );
        // A request header is not a response header and vice versa.
        let a = ResponseHeader {
            status: 0,
            request_id: 1,
            body_len: 0,
        };
        assert!(RequestHeader::decode(&a.encode()).is_err());
    }

    #[test]
    fn the_preamble_tells_lean_from_http2() {
        assert!(is_lean_preamble(b"SFSQ\x01\x00"));
        assert!(!is_lean_preamble(b"PRI * HTTP/2.0\r\n\r\nSM\r\n\r\n"));
        assert!(!is_lean_preamble(b"SFS"));
    }

    #[test]
    fn every_method_has_a_name() {
        for code in [1, 2, 3, 12, 13, 14, 15, 32, 34, 48, 50] {
            assert!(method_name(code).is_some(), "{code}");
        }
        assert_eq!(method_name(0), None);
        assert_eq!(method_name(16), None);
    }
}
