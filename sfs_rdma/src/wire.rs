//! Framing of the TCP data path.
//!
//! Fixed-size little-endian headers, so a frame is parsed with no allocation
//! and a hostile peer cannot make the server allocate more than one chunk:
//!
//! ```text
//! request  (56 bytes): magic "SFSD" | op u8 | 3 pad | request id u64 |
//!                      file id u128 | chunk index u64 | offset u64 | len u64
//!                      then `len` payload bytes for a write
//! response (24 bytes): magic "SFSR" | status i32 (0 or errno) | request id u64 |
//!                      len u64, then `len` payload bytes for a read
//! ```
//!
//! Many requests are in flight on one connection; responses come back in
//! completion order and are matched by request id.

use crate::ChunkRef;
use sfs_global::{Errno, FileId, SfsError, SfsResult};

pub const REQUEST_MAGIC: [u8; 4] = *b"SFSD";
pub const RESPONSE_MAGIC: [u8; 4] = *b"SFSR";
pub const REQUEST_HEADER_LEN: usize = 56;
pub const RESPONSE_HEADER_LEN: usize = 24;

/// Operation of a data request.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Op {
    Write = 1,
    Read = 2,
}

/// A decoded request header.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct RequestHeader {
    pub op: Op,
    pub request_id: u64,
    pub chunk: ChunkRef,
}

impl RequestHeader {
    pub fn encode(&self) -> [u8; REQUEST_HEADER_LEN] {
        let mut b = [0u8; REQUEST_HEADER_LEN];
        b[0..4].copy_from_slice(&REQUEST_MAGIC);
        b[4] = self.op as u8;
        b[8..16].copy_from_slice(&self.request_id.to_le_bytes());
        b[16..32].copy_from_slice(&self.chunk.id.0.to_le_bytes());
        b[32..40].copy_from_slice(&self.chunk.index.to_le_bytes());
        b[40..48].copy_from_slice(&self.chunk.offset.to_le_bytes());
        b[48..56].copy_from_slice(&self.chunk.len.to_le_bytes());
        b
    }

    /// Decodes and validates a header against the chunk size: a bad magic,
    /// op or range is a protocol error (the server drops the connection).
    pub fn decode(b: &[u8; REQUEST_HEADER_LEN], chunk_size: u64) -> SfsResult<RequestHeader> {
        let proto = |why: String| SfsError::new(Errno::EPROTO, format!("bad data request: {why}"));
        if b[0..4] != REQUEST_MAGIC {
            return Err(proto("wrong magic".into()));
        }
        let op = match b[4] {
            1 => Op::Write,
            2 => Op::Read,
            other => return Err(proto(format!("unknown op {other}"))),
        };
        let u64_at = |i: usize| u64::from_le_bytes(b[i..i + 8].try_into().expect("8 bytes"));
        let chunk = ChunkRef {
            id: FileId(u128::from_le_bytes(b[16..32].try_into().expect("16 bytes"))),
            index: u64_at(32),
            offset: u64_at(40),
            len: u64_at(48),
        };
        chunk.check(chunk_size).map_err(|e| proto(e.message))?;
        Ok(RequestHeader {
            op,
            request_id: u64_at(8),
            chunk,
        })
    }
}

/// Waits up to `timeout` for one request's `exchange` with `server`:
/// ETIMEDOUT when it takes longer, the server's errno when it refused.
pub async fn answered<T>(
    server: &(dyn std::fmt::Display + Sync),
    timeout: std::time::Duration,
    chunk: &ChunkRef,
    exchange: impl std::future::Future<Output = SfsResult<(ResponseHeader, T)>>,
) -> SfsResult<(ResponseHeader, T)> {
    let (header, answer) = tokio::time::timeout(timeout, exchange)
        .await
        .map_err(|_| {
            SfsError::timed_out(format!(
                "data server {server} did not answer within {timeout:?}"
            ))
        })??;
    if header.status != 0 {
        return Err(SfsError::new(
            Errno(header.status),
            format!(
                "data server {server} refused chunk {} of {}",
                chunk.index, chunk.id
            ),
        ));
    }
    Ok((header, answer))
}

/// Reads the next answer's header off a data connection's byte stream
/// (TCP or node-local); `Err` says why the connection ends, after
/// `connection` ("data connection to HOST").
pub async fn read_response_header<R: tokio::io::AsyncRead + Unpin>(
    reader: &mut R,
    connection: &str,
) -> Result<ResponseHeader, String> {
    let mut raw = [0u8; RESPONSE_HEADER_LEN];
    if let Err(e) = tokio::io::AsyncReadExt::read_exact(reader, &mut raw).await {
        return Err(format!("{connection} lost: {e}"));
    }
    ResponseHeader::decode(&raw).map_err(|e| format!("{connection}: {e}"))
}

/// A decoded response header.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct ResponseHeader {
    /// 0 for success, else the errno.
    pub status: i32,
    pub request_id: u64,
    /// Payload bytes that follow (reads only).
    pub len: u64,
}

impl ResponseHeader {
    /// The answer to request `request_id`: the bytes it placed (reads; 0
    /// for writes) or its errno.
    pub fn answering(request_id: u64, result: SfsResult<usize>) -> ResponseHeader {
        match result {
            Ok(n) => ResponseHeader {
                status: 0,
                request_id,
                len: n as u64,
            },
            Err(e) => ResponseHeader {
                status: e.errno.0,
                request_id,
                len: 0,
            },
        }
    }

    pub fn encode(&self) -> [u8; RESPONSE_HEADER_LEN] {
        let mut b = [0u8; RESPONSE_HEADER_LEN];
        b[0..4].copy_from_slice(&RESPONSE_MAGIC);
        b[4..8].copy_from_slice(&self.status.to_le_bytes());
        b[8..16].copy_from_slice(&self.request_id.to_le_bytes());
        b[16..24].copy_from_slice(&self.len.to_le_bytes());
        b
    }

    pub fn decode(b: &[u8; RESPONSE_HEADER_LEN]) -> SfsResult<ResponseHeader> {
        if b[0..4] != RESPONSE_MAGIC {
            return Err(SfsError::new(
                Errno::EPROTO,
                "bad data response: wrong magic",
            ));
        }
        Ok(ResponseHeader {
            status: i32::from_le_bytes(b[4..8].try_into().expect("4 bytes")),
            request_id: u64::from_le_bytes(b[8..16].try_into().expect("8 bytes")),
            len: u64::from_le_bytes(b[16..24].try_into().expect("8 bytes")),
        })
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn header(offset: u64, len: u64) -> RequestHeader {
        RequestHeader {
            op: Op::Write,
            request_id: 42,
            chunk: ChunkRef {
                id: FileId::from_parts(7, 9),
                index: 3,
                offset,
                len,
            },
        }
    }

    #[test]
    fn headers_round_trip() {
        let h = header(10, 100);
        assert_eq!(RequestHeader::decode(&h.encode(), 4096).unwrap(), h);
        let r = ResponseHeader {
            status: -5,
            request_id: 1 << 40,
            len: 77,
        };
        assert_eq!(ResponseHeader::decode(&r.encode()).unwrap(), r);
    }

    #[test]
    fn hostile_headers_are_refused() {
        for (offset, len) in [(0, 0), (4096, 1), (4000, 97), (0, u64::MAX), (u64::MAX, 2)] {
            let e = RequestHeader::decode(&header(offset, len).encode(), 4096).unwrap_err();
            assert_eq!(e.errno, Errno::EPROTO, "{offset}+{len}");
        }
        let mut b = header(0, 1).encode();
        b[4] = 9;
        assert!(RequestHeader::decode(&b, 4096).is_err());
        b[0] = b'X';
        assert!(RequestHeader::decode(&b, 4096).is_err());
        let mut h = header(0, 1);
        h.chunk.index = u64::MAX;
        assert!(RequestHeader::decode(&h.encode(), 4096).is_err());
        assert!(ResponseHeader::decode(&[0; RESPONSE_HEADER_LEN]).is_err());
    }
}
