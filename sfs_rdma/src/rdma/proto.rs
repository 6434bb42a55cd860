//! Messages of the RDMA data path, carried by two-sided SEND/RECV on the
//! connection's queue pair; the bulk bytes move one-sided.
//!
//! ```text
//! request  (88 bytes + eager payload):
//!     wire::RequestHeader (56) | mode u8 | 7 pad | descriptor (21) | 3 pad
//!     mode 0 = eager: a write's bytes follow the header, a read's come back
//!              in the response;
//!     mode 1 = remote: the descriptor names the client's registered buffer;
//!              the server RDMA-READs a write's bytes from it and RDMA-WRITEs
//!              a read's bytes into it before it sends the response.
//! response (24 bytes + eager read payload): wire::ResponseHeader
//! descriptor (21 bytes, librpma's layout): addr u64 | len u64 | rkey u32 |
//!     access u8 (1 = server may read, 2 = server may write)
//! hello    (client → server in the rdmacm private data, 44 bytes, within
//!           the 56 an RC connect request carries):
//!     magic "SFSH" | version u16 | pad u16 | queue depth u32 |
//!     eager threshold u32 | chunk size u64 | region: addr u64 | len u64 |
//!     rkey u32
//! ```
//!
//! The server trusts nothing in a request: a descriptor must lie inside the
//! region the client announced when it connected, carry that region's rkey,
//! and be exactly as long as the chunk range; an eager message must hold
//! exactly the bytes its header announces.

use super::verbs::QueuePair;
use crate::wire::{RequestHeader, ResponseHeader, REQUEST_HEADER_LEN, RESPONSE_HEADER_LEN};
use sfs_global::{Errno, SfsError, SfsResult};

/// The buffers each end of a connection registers, by role: the bulk data
/// region, the receive slots and the send slots.
pub(crate) const DATA: usize = 0;
pub(crate) const RECV: usize = 1;
pub(crate) const SEND: usize = 2;

/// wr_id kinds (top byte); the low bits are the slot or receive index.
pub(crate) const WR_RECV: u64 = 1 << 56;
pub(crate) const WR_SEND: u64 = 2 << 56;
pub(crate) const WR_READ: u64 = 3 << 56;
pub(crate) const WR_WRITE: u64 = 4 << 56;
pub(crate) const WR_INDEX: u64 = (1 << 56) - 1;

/// Copies received message `index` (`len` bytes) out of its receive slot
/// of `qp` (`slots` slots of `recv_size` bytes) and posts the slot again:
/// how both ends take a message.
///
/// # Safety
/// The device completed the receive posted into slot `index`, and nothing
/// else writes that slot until it is posted again (after the copy).
pub(crate) unsafe fn take_message(
    qp: &QueuePair,
    index: usize,
    slots: usize,
    recv_size: usize,
    len: usize,
) -> SfsResult<Vec<u8>> {
    // SAFETY: forwarded contract: the slot is completed and idle.
    unsafe { qp.take_received(RECV, WR_RECV | index as u64, index, slots, recv_size, len) }
}

pub const DESCRIPTOR_LEN: usize = 21;
pub const RDMA_REQUEST_LEN: usize = REQUEST_HEADER_LEN + 8 + DESCRIPTOR_LEN + 3;
pub const RDMA_RESPONSE_LEN: usize = RESPONSE_HEADER_LEN;
/// The connect private data: 56 bytes, all that rdmacm carries in an IB
/// connect request.
pub const HELLO_LEN: usize = 56;
pub const HELLO_MAGIC: [u8; 4] = *b"SFSH";
/// 2: the hello carries the client's nonce and the job secret is proven
/// ([`Accept`], [`ClientProof`]).
pub const PROTOCOL_VERSION: u16 = 2;
/// The client's nonce: what is left of the connect private data.
pub const CLIENT_NONCE_LEN: usize = 12;
/// The server's nonce, in the accept private data.
pub const SERVER_NONCE_LEN: usize = 32;
const PROOF_LEN: usize = sfs_rpc::auth::PROOF_MAC_LEN;
/// The accept private data: magic, server nonce, server proof.
pub const ACCEPT_LEN: usize = 4 + SERVER_NONCE_LEN + PROOF_LEN;
const ACCEPT_MAGIC: [u8; 4] = *b"SFSA";
/// The client's first SEND: magic, client proof.
pub const CLIENT_PROOF_LEN: usize = 4 + PROOF_LEN;
const CLIENT_PROOF_MAGIC: [u8; 4] = *b"SFSP";

/// Sizes of one slot's message buffers for an eager threshold: the largest
/// request and response either side may send, so a client's send buffer
/// matches the server's receive buffer and the other way round. Both sides
/// size their buffers from here (the server from the client's hello).
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct MessageSizes {
    /// A request with an eager write payload of `eager_threshold` bytes.
    pub request: usize,
    /// A response with an eager read payload of `eager_threshold` bytes.
    pub response: usize,
}

impl MessageSizes {
    pub fn for_threshold(eager_threshold: u32) -> MessageSizes {
        let eager = eager_threshold as usize;
        MessageSizes {
            request: RDMA_REQUEST_LEN + eager,
            response: RDMA_RESPONSE_LEN + eager,
        }
    }

    /// Refuses a threshold whose messages the device cannot carry
    /// (`max_msg_sz` of its port), naming the config field.
    pub fn check_device(&self, eager_threshold: u32, max_message: u64) -> SfsResult<()> {
        let largest = self.request.max(self.response) as u64;
        if largest > max_message {
            return Err(SfsError::new(
                Errno::EINVAL,
                format!(
                    "config.json: field `rdma.eager_threshold` ({eager_threshold}) makes \
                     {largest}-byte messages, above the {max_message} bytes this RDMA device \
                     carries in one message; lower it"
                ),
            ));
        }
        Ok(())
    }
}

/// The server may RDMA-READ the region (a write's source).
pub const ACCESS_READ: u8 = 1;
/// The server may RDMA-WRITE the region (a read's destination).
pub const ACCESS_WRITE: u8 = 2;

/// A client buffer the server may access one-sided.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct Descriptor {
    pub addr: u64,
    pub len: u64,
    pub rkey: u32,
    pub access: u8,
}

impl Descriptor {
    pub fn encode(&self) -> [u8; DESCRIPTOR_LEN] {
        let mut b = [0u8; DESCRIPTOR_LEN];
        b[0..8].copy_from_slice(&self.addr.to_le_bytes());
        b[8..16].copy_from_slice(&self.len.to_le_bytes());
        b[16..20].copy_from_slice(&self.rkey.to_le_bytes());
        b[20] = self.access;
        b
    }

    pub fn decode(b: &[u8; DESCRIPTOR_LEN]) -> Descriptor {
        Descriptor {
            addr: u64::from_le_bytes(b[0..8].try_into().expect("8 bytes")),
            len: u64::from_le_bytes(b[8..16].try_into().expect("8 bytes")),
            rkey: u32::from_le_bytes(b[16..20].try_into().expect("4 bytes")),
            access: b[20],
        }
    }

    /// Checks a descriptor from a request against the client's announced
    /// region: inside it, with its rkey, the access the operation needs, and
    /// exactly `len` bytes long. EINVAL otherwise (never touches the QP).
    pub fn check(&self, region: &Region, len: u64, access: u8) -> SfsResult<()> {
        let bad = |why: &str| {
            Err(SfsError::new(
                Errno::EINVAL,
                format!("bad RDMA descriptor: {why}"),
            ))
        };
        if self.rkey != region.rkey {
            return bad("rkey not of this connection's region");
        }
        if self.len != len {
            return bad("length differs from the request");
        }
        if self.access & access != access {
            return bad("access not granted");
        }
        let end = self.addr.checked_add(self.len);
        match end {
            Some(end) if self.addr >= region.addr && end <= region.addr + region.len => Ok(()),
            _ => bad("outside the registered region"),
        }
    }
}

/// The client's registered region, as announced in the hello.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct Region {
    pub addr: u64,
    pub len: u64,
    pub rkey: u32,
}

/// How a request's payload travels.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Payload {
    /// In the messages themselves.
    Eager,
    /// One-sided, through the client's buffer.
    Remote(Descriptor),
}

/// A decoded RDMA request.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct RdmaRequest {
    pub header: RequestHeader,
    pub payload: Payload,
}

impl RdmaRequest {
    /// Writes the request into `out` (at least [`RDMA_REQUEST_LEN`] bytes).
    pub fn encode_into(&self, out: &mut [u8]) {
        out[..REQUEST_HEADER_LEN].copy_from_slice(&self.header.encode());
        let rest = &mut out[REQUEST_HEADER_LEN..RDMA_REQUEST_LEN];
        rest.fill(0);
        if let Payload::Remote(d) = self.payload {
            rest[0] = 1;
            rest[8..8 + DESCRIPTOR_LEN].copy_from_slice(&d.encode());
        }
    }

    /// Decodes a received message of `msg.len()` bytes; the eager payload
    /// (if any) is `msg[RDMA_REQUEST_LEN..]` and must match the header.
    pub fn decode(msg: &[u8], chunk_size: u64, eager_threshold: u64) -> SfsResult<RdmaRequest> {
        let proto = |why: String| SfsError::new(Errno::EPROTO, format!("bad RDMA request: {why}"));
        if msg.len() < RDMA_REQUEST_LEN {
            return Err(proto(format!("{} bytes, shorter than a header", msg.len())));
        }
        let header = RequestHeader::decode(
            msg[..REQUEST_HEADER_LEN].try_into().expect("header"),
            chunk_size,
        )?;
        let rest = &msg[REQUEST_HEADER_LEN..RDMA_REQUEST_LEN];
        let payload = match rest[0] {
            0 => {
                if header.chunk.len > eager_threshold {
                    return Err(proto(format!(
                        "eager payload of {} bytes above the threshold {eager_threshold}",
                        header.chunk.len
                    )));
                }
                let expected = match header.op {
                    crate::wire::Op::Write => header.chunk.len as usize,
                    crate::wire::Op::Read => 0,
                };
                if msg.len() - RDMA_REQUEST_LEN != expected {
                    return Err(proto(format!(
                        "message carries {} payload bytes, header says {expected}",
                        msg.len() - RDMA_REQUEST_LEN
                    )));
                }
                Payload::Eager
            }
            1 => {
                if msg.len() != RDMA_REQUEST_LEN {
                    return Err(proto("remote request with trailing bytes".into()));
                }
                Payload::Remote(Descriptor::decode(
                    rest[8..8 + DESCRIPTOR_LEN].try_into().expect("descriptor"),
                ))
            }
            other => return Err(proto(format!("unknown payload mode {other}"))),
        };
        Ok(RdmaRequest { header, payload })
    }
}

/// Decodes a response message; the eager payload is `msg[RDMA_RESPONSE_LEN..]`.
pub fn decode_response(msg: &[u8]) -> SfsResult<ResponseHeader> {
    if msg.len() < RDMA_RESPONSE_LEN {
        return Err(SfsError::new(
            Errno::EPROTO,
            format!("bad RDMA response: {} bytes", msg.len()),
        ));
    }
    ResponseHeader::decode(msg[..RDMA_RESPONSE_LEN].try_into().expect("header"))
}

/// What a client announces when it connects.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct Hello {
    pub queue_depth: u32,
    pub eager_threshold: u32,
    pub chunk_size: u64,
    pub region: Region,
    /// Fresh random bytes for the proofs of the job secret.
    pub nonce: [u8; CLIENT_NONCE_LEN],
}

impl Hello {
    pub fn encode(&self) -> [u8; HELLO_LEN] {
        let mut b = [0u8; HELLO_LEN];
        b[0..4].copy_from_slice(&HELLO_MAGIC);
        b[4..6].copy_from_slice(&PROTOCOL_VERSION.to_le_bytes());
        b[8..12].copy_from_slice(&self.queue_depth.to_le_bytes());
        b[12..16].copy_from_slice(&self.eager_threshold.to_le_bytes());
        b[16..24].copy_from_slice(&self.chunk_size.to_le_bytes());
        b[24..32].copy_from_slice(&self.region.addr.to_le_bytes());
        b[32..40].copy_from_slice(&self.region.len.to_le_bytes());
        b[40..44].copy_from_slice(&self.region.rkey.to_le_bytes());
        b[44..56].copy_from_slice(&self.nonce);
        b
    }

    /// Decodes a hello (private data may carry padding after it).
    pub fn decode(b: &[u8]) -> SfsResult<Hello> {
        let refuse = |why: &str| SfsError::new(Errno::EPROTO, format!("bad RDMA hello: {why}"));
        if b.len() < HELLO_LEN {
            return Err(refuse("too short"));
        }
        if b[0..4] != HELLO_MAGIC {
            return Err(refuse("wrong magic"));
        }
        let version = u16::from_le_bytes([b[4], b[5]]);
        if version != PROTOCOL_VERSION {
            return Err(refuse(&format!(
                "protocol version {version}, this server speaks {PROTOCOL_VERSION}"
            )));
        }
        let u32_at = |i: usize| u32::from_le_bytes(b[i..i + 4].try_into().expect("4"));
        let u64_at = |i: usize| u64::from_le_bytes(b[i..i + 8].try_into().expect("8"));
        Ok(Hello {
            queue_depth: u32_at(8),
            eager_threshold: u32_at(12),
            chunk_size: u64_at(16),
            region: Region {
                addr: u64_at(24),
                len: u64_at(32),
                rkey: u32_at(40),
            },
            nonce: b[44..56].try_into().expect("12"),
        })
    }
}

/// What the server answers a connect with (the accept's private data): its
/// nonce and its proof of the job secret over both nonces.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct Accept {
    pub nonce: [u8; SERVER_NONCE_LEN],
    pub proof: [u8; PROOF_LEN],
}

impl Accept {
    pub fn encode(&self) -> [u8; ACCEPT_LEN] {
        let mut b = [0u8; ACCEPT_LEN];
        b[0..4].copy_from_slice(&ACCEPT_MAGIC);
        b[4..36].copy_from_slice(&self.nonce);
        b[36..68].copy_from_slice(&self.proof);
        b
    }

    /// Decodes an accept (private data may carry padding after it).
    pub fn decode(b: &[u8]) -> SfsResult<Accept> {
        if b.len() < ACCEPT_LEN || b[0..4] != ACCEPT_MAGIC {
            return Err(SfsError::new(
                Errno::EPROTO,
                "the RDMA server's accept carries no proof of the job secret \
                 (an SFS server of another version?)",
            ));
        }
        Ok(Accept {
            nonce: b[4..36].try_into().expect("32"),
            proof: b[36..68].try_into().expect("32"),
        })
    }
}

/// The client's first message on a connection: its proof of the job
/// secret. The server serves nothing before it.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct ClientProof(pub [u8; PROOF_LEN]);

impl ClientProof {
    pub fn encode(&self) -> [u8; CLIENT_PROOF_LEN] {
        let mut b = [0u8; CLIENT_PROOF_LEN];
        b[0..4].copy_from_slice(&CLIENT_PROOF_MAGIC);
        b[4..].copy_from_slice(&self.0);
        b
    }

    /// Decodes the first message; EACCES for anything else.
    pub fn decode(b: &[u8]) -> SfsResult<ClientProof> {
        if b.len() != CLIENT_PROOF_LEN || b[0..4] != CLIENT_PROOF_MAGIC {
            return Err(SfsError::new(
                Errno::EACCES,
                "the first message is not a proof of the job secret",
            ));
        }
        Ok(ClientProof(b[4..].try_into().expect("32")))
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::wire::Op;
    use crate::ChunkRef;
    use sfs_global::FileId;

    fn header(op: Op, len: u64) -> RequestHeader {
        RequestHeader {
            op,
            request_id: 9,
            chunk: ChunkRef {
                id: FileId(5),
                index: 2,
                offset: 100,
                len,
            },
        }
    }

    const REGION: Region = Region {
        addr: 0x1000,
        len: 0x10000,
        rkey: 77,
    };

    #[test]
    fn descriptor_round_trips_in_21_bytes() {
        let d = Descriptor {
            addr: 0xdead_beef_0000,
            len: 1 << 20,
            rkey: 0x1234_5678,
            access: ACCESS_READ | ACCESS_WRITE,
        };
        assert_eq!(d.encode().len(), 21);
        assert_eq!(Descriptor::decode(&d.encode()), d);
    }

    #[test]
    fn descriptor_check_refuses_anything_outside_the_region() {
        let ok = Descriptor {
            addr: 0x2000,
            len: 4096,
            rkey: 77,
            access: ACCESS_READ,
        };
        ok.check(&REGION, 4096, ACCESS_READ).unwrap();
        let last = Descriptor {
            addr: 0x11000 - 4096,
            ..ok
        };
        last.check(&REGION, 4096, ACCESS_READ).unwrap();
        for (d, len, access) in [
            (Descriptor { rkey: 78, ..ok }, 4096, ACCESS_READ),
            (ok, 4095, ACCESS_READ),
            (ok, 4096, ACCESS_WRITE),
            (Descriptor { addr: 0xfff, ..ok }, 4096, ACCESS_READ),
            (
                Descriptor {
                    addr: 0x11000 - 4095,
                    ..ok
                },
                4096,
                ACCESS_READ,
            ),
            (
                Descriptor {
                    addr: u64::MAX - 10,
                    ..ok
                },
                4096,
                ACCESS_READ,
            ),
        ] {
            let e = d.check(&REGION, len, access).unwrap_err();
            assert_eq!(e.errno, Errno::EINVAL, "{d:?} {len} {access}");
        }
    }

    #[test]
    fn requests_round_trip_and_lengths_are_checked() {
        let mut buf = vec![0u8; RDMA_REQUEST_LEN + 50];
        let eager = RdmaRequest {
            header: header(Op::Write, 50),
            payload: Payload::Eager,
        };
        eager.encode_into(&mut buf);
        assert_eq!(RdmaRequest::decode(&buf, 4096, 64).unwrap(), eager);
        // Payload shorter or longer than announced, or above the threshold.
        assert!(RdmaRequest::decode(&buf[..RDMA_REQUEST_LEN + 49], 4096, 64).is_err());
        assert!(RdmaRequest::decode(&buf, 4096, 32).is_err());
        let remote = RdmaRequest {
            header: header(Op::Read, 3000),
            payload: Payload::Remote(Descriptor {
                addr: 1,
                len: 3000,
                rkey: 2,
                access: ACCESS_WRITE,
            }),
        };
        remote.encode_into(&mut buf);
        assert_eq!(
            RdmaRequest::decode(&buf[..RDMA_REQUEST_LEN], 4096, 64).unwrap(),
            remote
        );
        assert!(
            RdmaRequest::decode(&buf, 4096, 64).is_err(),
            "trailing bytes"
        );
        buf[REQUEST_HEADER_LEN] = 7;
        assert!(RdmaRequest::decode(&buf[..RDMA_REQUEST_LEN], 4096, 64).is_err());
        assert!(RdmaRequest::decode(&buf[..10], 4096, 64).is_err());
        let eager_read = RdmaRequest {
            header: header(Op::Read, 10),
            payload: Payload::Eager,
        };
        eager_read.encode_into(&mut buf);
        assert_eq!(
            RdmaRequest::decode(&buf[..RDMA_REQUEST_LEN], 4096, 64).unwrap(),
            eager_read
        );
    }

    #[test]
    fn message_buffers_hold_the_largest_eager_payload_for_any_threshold() {
        for threshold in [0u32, 1, 4096, 65536, 1 << 20] {
            let sizes = MessageSizes::for_threshold(threshold);
            let chunk_size = u64::from(threshold).max(4096);
            // A client's eager write of exactly `threshold` bytes fills its
            // send buffer, which is the server's receive buffer.
            let mut send = vec![0u8; sizes.request];
            let mut request = RdmaRequest {
                header: header(Op::Write, u64::from(threshold)),
                payload: Payload::Eager,
            };
            request.header.chunk.offset = 0;
            if threshold > 0 {
                request.encode_into(&mut send);
                assert_eq!(
                    RdmaRequest::decode(&send, chunk_size, u64::from(threshold)).unwrap(),
                    request,
                    "threshold {threshold}"
                );
                // One byte above the threshold does not travel eagerly.
                let mut over = request;
                over.header.chunk.len += 1;
                let mut big = vec![0u8; sizes.request + 1];
                over.encode_into(&mut big);
                assert!(RdmaRequest::decode(&big, chunk_size + 1, u64::from(threshold)).is_err());
            }
            // A server's eager read response of `threshold` bytes fills its
            // send buffer, which is the client's receive buffer.
            assert_eq!(sizes.response, RDMA_RESPONSE_LEN + threshold as usize);
            let mut response = vec![0u8; sizes.response];
            response[..RDMA_RESPONSE_LEN].copy_from_slice(
                &ResponseHeader {
                    status: 0,
                    request_id: 3,
                    len: u64::from(threshold),
                }
                .encode(),
            );
            assert_eq!(
                decode_response(&response).unwrap().len,
                u64::from(threshold)
            );
        }
    }

    #[test]
    fn a_threshold_the_device_cannot_carry_is_refused_naming_the_field() {
        let sizes = MessageSizes::for_threshold(65536);
        sizes.check_device(65536, 1 << 31).unwrap();
        sizes
            .check_device(65536, (RDMA_REQUEST_LEN + 65536) as u64)
            .unwrap();
        let e = sizes.check_device(65536, 65536).unwrap_err();
        assert_eq!(e.errno, Errno::EINVAL);
        assert!(e.message.contains("rdma.eager_threshold"), "{e}");
    }

    #[test]
    fn hello_round_trips_and_refuses_strangers() {
        let h = Hello {
            queue_depth: 16,
            eager_threshold: 4096,
            chunk_size: 512 * 1024,
            region: REGION,
            nonce: [7; CLIENT_NONCE_LEN],
        };
        let b = h.encode();
        assert!(b.len() <= 56, "fits an RC connect's private data");
        assert_eq!(Hello::decode(&b).unwrap(), h);
        assert!(Hello::decode(&b[..20]).is_err());
        let mut bad = b;
        bad[0] = b'X';
        assert!(Hello::decode(&bad).is_err());
        let mut old = b;
        old[4] = 9;
        assert_eq!(Hello::decode(&old).unwrap_err().errno, Errno::EPROTO);
        assert!(decode_response(&[0u8; 3]).is_err());
    }

    #[test]
    fn accept_and_client_proof_round_trip_and_refuse_strangers() {
        let a = Accept {
            nonce: [3; SERVER_NONCE_LEN],
            proof: [4; PROOF_LEN],
        };
        let b = a.encode();
        assert!(b.len() <= 196, "fits an accept's private data");
        assert_eq!(Accept::decode(&b).unwrap(), a);
        // rdmacm may pad private data with zeros.
        let mut padded = b.to_vec();
        padded.extend_from_slice(&[0; 20]);
        assert_eq!(Accept::decode(&padded).unwrap(), a);
        assert_eq!(Accept::decode(&b[..60]).unwrap_err().errno, Errno::EPROTO);
        assert_eq!(
            Accept::decode(&[0; ACCEPT_LEN]).unwrap_err().errno,
            Errno::EPROTO
        );
        let p = ClientProof([5; PROOF_LEN]);
        let m = p.encode();
        assert!(m.len() <= RDMA_REQUEST_LEN, "fits a request buffer");
        assert_eq!(ClientProof::decode(&m).unwrap(), p);
        assert_eq!(
            ClientProof::decode(&m[..35]).unwrap_err().errno,
            Errno::EACCES
        );
        let mut request = vec![0u8; RDMA_REQUEST_LEN];
        request[..4].copy_from_slice(b"SFSQ");
        assert_eq!(
            ClientProof::decode(&request).unwrap_err().errno,
            Errno::EACCES
        );
    }
}
