//! The SFS services over SFS's own framing: the *lean* RPC.
//!
//! Every unary call of the `Metadata`, `ChunkControl` and `Control` services
//! of `sfs.proto` can travel here instead of over gRPC: the same prost
//! messages, answered by the same handlers (`crate::methods`: the lean and
//! gRPC front ends are both made from its table, so validation and errnos
//! are identical), framed by a
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
pub use server::{serve_connection, Dispatch, MemoryBudget, Reservation};

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
}
