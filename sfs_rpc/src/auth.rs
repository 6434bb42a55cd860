//! The handshake that opens every connection to a server: both ends prove
//! they hold the job secret (`sfs_global::secret`) before anything else is
//! sent, and the secret itself never crosses the wire.
//!
//! ```text
//! client → server  "SFSH" | version u8 (1) | purpose u8 | 2 zero | client nonce [32]      (40 bytes)
//! server → client  "SFSC" | server nonce [32] | server proof [32]                         (68 bytes)
//! client → server  "SFSP" | client proof [32]                                             (36 bytes)
//! server → client  "SFSK"                                  (accepted, the protocol starts)
//!              or  "SFSN" | len u32 | message (≤ 512 bytes, UTF-8), then the server closes
//!
//! server proof = HMAC-SHA256(secret, "sfs-auth-1 server" | purpose | client nonce | server nonce)
//! client proof = HMAC-SHA256(secret, "sfs-auth-1 client" | purpose | client nonce | server nonce)
//! ```
//!
//! Both nonces are fresh random bytes, so a recorded handshake cannot be
//! replayed, and the proofs are bound to the connection's purpose (an RPC
//! handshake does not open a data connection). The client checks the
//! server's proof too: a client never sends a request to a server of
//! another job (a stale hostfile, a port reused by another job's server).
//! What follows the handshake is neither encrypted nor integrity-protected
//! (docs/security.md).
//!
//! Each message has a pure encoder and decoder ([`decode_hello`],
//! [`decode_answer`], [`decode_proof`]): the I/O code reads exactly the
//! bytes a decoder asks for, and the decoders are fuzzed
//! (`sfs_testkit/tests/decoders.rs`).

use hmac::{Hmac, Mac};
use sfs_global::secret::{random_bytes, Secret};
use sfs_global::{Errno, SfsError, SfsResult};
use sha2::Sha256;
use std::time::Duration;
use tokio::io::{AsyncRead, AsyncReadExt, AsyncWrite, AsyncWriteExt};

/// First bytes of a client's handshake.
pub const HELLO_MAGIC: &[u8; 4] = b"SFSH";
const CHALLENGE_MAGIC: &[u8; 4] = b"SFSC";
const PROOF_MAGIC: &[u8; 4] = b"SFSP";
/// The server's whole answer to a good proof.
pub const ACCEPT_MAGIC: &[u8; 4] = b"SFSK";
const REFUSE_MAGIC: &[u8; 4] = b"SFSN";
const VERSION: u8 = 1;
/// Bytes of a nonce.
pub const NONCE: usize = 32;
/// Bytes of a proof (an HMAC-SHA256).
pub const PROOF: usize = 32;
const MAX_REFUSAL: usize = 512;
/// Bytes of a client's hello.
pub const HELLO_LEN: usize = 8 + NONCE;
/// Bytes of a server's challenge.
pub const CHALLENGE_LEN: usize = 4 + NONCE + PROOF;
/// Bytes of a client's proof message.
pub const PROOF_LEN: usize = 4 + PROOF;
/// Why the server refuses a client whose proof is wrong.
const WRONG_SECRET: &str = "wrong job secret: the client does not hold this job's secret \
                            (another job's, or none)";

/// How long either end waits for the other's next handshake message.
pub const HANDSHAKE_TIMEOUT: Duration = Duration::from_secs(10);

/// What a connection is for; part of the proofs.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
#[repr(u8)]
pub enum Purpose {
    /// Metadata and control calls (lean or gRPC) on the hostfile port.
    Rpc = 1,
    /// Chunk data over TCP on the data port.
    Data = 2,
    /// The node-local shared-memory data socket.
    SharedMemory = 3,
    /// Chunk data over RDMA: the same proofs, carried in rdmacm's connect
    /// and accept private data and the connection's first SEND
    /// ([`Exchange`]).
    Rdma = 4,
}

impl Purpose {
    fn from_byte(b: u8) -> Option<Purpose> {
        match b {
            1 => Some(Purpose::Rpc),
            2 => Some(Purpose::Data),
            3 => Some(Purpose::SharedMemory),
            4 => Some(Purpose::Rdma),
            _ => None,
        }
    }
}

/// The MAC of one side's proof, before it is finished.
fn keyed(
    secret: &Secret,
    side: &str,
    purpose: Purpose,
    client_nonce: &[u8],
    server_nonce: &[u8],
) -> Hmac<Sha256> {
    // HMAC takes a key of any length; 32 bytes is never refused.
    let mut mac = <Hmac<Sha256> as Mac>::new_from_slice(secret.as_bytes())
        .expect("HMAC accepts any key length");
    mac.update(b"sfs-auth-1 ");
    mac.update(side.as_bytes());
    mac.update(&[purpose as u8]);
    mac.update(client_nonce);
    mac.update(server_nonce);
    mac
}

fn proof(
    secret: &Secret,
    side: &str,
    purpose: Purpose,
    client_nonce: &[u8],
    server_nonce: &[u8],
) -> [u8; PROOF] {
    keyed(secret, side, purpose, client_nonce, server_nonce)
        .finalize()
        .into_bytes()
        .into()
}

/// Whether `given` is the right proof, in time independent of where it
/// differs.
fn verify(
    secret: &Secret,
    side: &str,
    purpose: Purpose,
    client_nonce: &[u8],
    server_nonce: &[u8],
    given: &[u8],
) -> bool {
    keyed(secret, side, purpose, client_nonce, server_nonce)
        .verify_slice(given)
        .is_ok()
}

/// The proofs of a handshake whose messages travel inside another
/// protocol's (RDMA: the client's nonce in its connect private data, the
/// server's nonce and proof in the accept private data, the client's proof
/// in its first SEND). The same MACs as the stream handshake, keyed by the
/// secret and bound to the purpose and both nonces; the caller moves the
/// bytes.
pub struct Exchange<'a> {
    pub secret: &'a Secret,
    pub purpose: Purpose,
    pub client_nonce: &'a [u8],
    pub server_nonce: &'a [u8],
}

/// Length of a proof (the MAC) of an [`Exchange`].
pub const PROOF_MAC_LEN: usize = PROOF;

impl Exchange<'_> {
    /// What the server sends to prove the secret.
    pub fn server_proof(&self) -> [u8; PROOF] {
        proof(
            self.secret,
            "server",
            self.purpose,
            self.client_nonce,
            self.server_nonce,
        )
    }

    /// What the client sends to prove the secret.
    pub fn client_proof(&self) -> [u8; PROOF] {
        proof(
            self.secret,
            "client",
            self.purpose,
            self.client_nonce,
            self.server_nonce,
        )
    }

    /// Whether `given` is the server's proof (constant time).
    pub fn server_proof_is(&self, given: &[u8]) -> bool {
        verify(
            self.secret,
            "server",
            self.purpose,
            self.client_nonce,
            self.server_nonce,
            given,
        )
    }

    /// Whether `given` is the client's proof (constant time).
    pub fn client_proof_is(&self, given: &[u8]) -> bool {
        verify(
            self.secret,
            "client",
            self.purpose,
            self.client_nonce,
            self.server_nonce,
            given,
        )
    }
}

/// Fresh random bytes for a nonce.
pub fn fill_nonce(buf: &mut [u8]) -> std::io::Result<()> {
    random_bytes(buf)
}

fn nonce() -> std::io::Result<[u8; NONCE]> {
    let mut n = [0u8; NONCE];
    random_bytes(&mut n)?;
    Ok(n)
}

fn denied(message: String) -> SfsError {
    SfsError::new(Errno::EACCES, message)
}

// --- the messages, encoded and decoded without I/O (so they can be fuzzed:
// sfs_testkit/tests/decoders.rs) -----------------------------------------------

/// Why a handshake message did not decode (yet).
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum Malformed {
    /// The bytes so far begin a valid message, which is at least this many
    /// bytes long (always more than were given): read up to it and decode
    /// again.
    Short(usize),
    /// The bytes cannot begin this message; the reason, as the peer is told.
    Bad(String),
}

/// A client's hello for a connection of `purpose`.
pub fn encode_hello(purpose: Purpose, client_nonce: &[u8; NONCE]) -> [u8; HELLO_LEN] {
    let mut b = [0u8; HELLO_LEN];
    b[..4].copy_from_slice(HELLO_MAGIC);
    b[4] = VERSION;
    b[5] = purpose as u8;
    b[8..].copy_from_slice(client_nonce);
    b
}

/// Decodes a client's hello on a port for `purpose`: the client's nonce.
/// The magic is checked as soon as four bytes are there (a connection that
/// starts with anything else is refused without waiting for more), the
/// version and purpose once the whole hello is; bytes after it are not
/// looked at.
pub fn decode_hello(bytes: &[u8], purpose: Purpose) -> Result<[u8; NONCE], Malformed> {
    if bytes.len() < 4 {
        return Err(Malformed::Short(4));
    }
    if &bytes[..4] != HELLO_MAGIC {
        return Err(Malformed::Bad(format!(
            "no handshake (first bytes {:?}): every connection must prove the job secret first",
            String::from_utf8_lossy(&bytes[..4])
        )));
    }
    if bytes.len() < HELLO_LEN {
        return Err(Malformed::Short(HELLO_LEN));
    }
    if bytes[4] != VERSION {
        return Err(Malformed::Bad(format!(
            "handshake version {} (this server speaks {VERSION})",
            bytes[4]
        )));
    }
    if Purpose::from_byte(bytes[5]) != Some(purpose) {
        return Err(Malformed::Bad(format!(
            "a handshake for connection kind {} on a port for {purpose:?}",
            bytes[5]
        )));
    }
    Ok(bytes[8..HELLO_LEN].try_into().expect("32 bytes"))
}

/// A server's challenge: its nonce and its proof.
pub fn encode_challenge(
    server_nonce: &[u8; NONCE],
    server_proof: &[u8; PROOF],
) -> [u8; CHALLENGE_LEN] {
    let mut b = [0u8; CHALLENGE_LEN];
    b[..4].copy_from_slice(CHALLENGE_MAGIC);
    b[4..4 + NONCE].copy_from_slice(server_nonce);
    b[4 + NONCE..].copy_from_slice(server_proof);
    b
}

/// A client's proof message.
pub fn encode_proof(client_proof: &[u8; PROOF]) -> [u8; PROOF_LEN] {
    let mut b = [0u8; PROOF_LEN];
    b[..4].copy_from_slice(PROOF_MAGIC);
    b[4..].copy_from_slice(client_proof);
    b
}

/// Decodes a client's proof message: the proof, not verified yet. Any
/// 36 bytes are read first; a wrong magic is refused as a wrong secret.
pub fn decode_proof(bytes: &[u8]) -> Result<[u8; PROOF], Malformed> {
    if bytes.len() < PROOF_LEN {
        return Err(Malformed::Short(PROOF_LEN));
    }
    if &bytes[..4] != PROOF_MAGIC {
        return Err(Malformed::Bad(WRONG_SECRET.into()));
    }
    Ok(bytes[4..PROOF_LEN].try_into().expect("32 bytes"))
}

/// A server's refusal: the magic, the length and at most 512 bytes of
/// `message` (cut anywhere: the client decodes it lossily).
pub fn encode_refusal(message: &str) -> Vec<u8> {
    let text = &message.as_bytes()[..message.len().min(MAX_REFUSAL)];
    let mut frame = Vec::with_capacity(8 + text.len());
    frame.extend_from_slice(REFUSE_MAGIC);
    frame.extend_from_slice(&(text.len() as u32).to_le_bytes());
    frame.extend_from_slice(text);
    frame
}

/// Where a client is in the handshake: what the server's answer may be.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Step {
    /// The hello was sent: a challenge or a refusal.
    Hello,
    /// The proof was sent: an acceptance or a refusal.
    Proof,
}

/// A server's answer, as a client decodes it.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum Answer {
    /// The server's nonce and proof (after the hello).
    Challenge {
        nonce: [u8; NONCE],
        proof: [u8; PROOF],
    },
    /// The client's proof is good: the protocol starts (after the proof).
    Accepted,
    /// The server refused the client, for this reason (at most 512 bytes of
    /// it, however long the server says it is; lossy UTF-8).
    Refused(String),
    /// Four bytes that are no answer at this step.
    Unexpected([u8; 4]),
}

/// Decodes a server's answer at `step` of the handshake. Only ever
/// [`Malformed::Short`]: four bytes that are no answer are
/// [`Answer::Unexpected`], for the client to report.
pub fn decode_answer(bytes: &[u8], step: Step) -> Result<Answer, Malformed> {
    let Some(magic) = bytes.first_chunk::<4>() else {
        return Err(Malformed::Short(4));
    };
    match (magic, step) {
        (m, _) if m == REFUSE_MAGIC => {
            let Some(len) = bytes.get(4..8) else {
                return Err(Malformed::Short(8));
            };
            let n =
                (u32::from_le_bytes(len.try_into().expect("4 bytes")) as usize).min(MAX_REFUSAL);
            match bytes.get(8..8 + n) {
                Some(text) => Ok(Answer::Refused(String::from_utf8_lossy(text).into_owned())),
                None => Err(Malformed::Short(8 + n)),
            }
        }
        (m, Step::Hello) if m == CHALLENGE_MAGIC => {
            if bytes.len() < CHALLENGE_LEN {
                return Err(Malformed::Short(CHALLENGE_LEN));
            }
            Ok(Answer::Challenge {
                nonce: bytes[4..4 + NONCE].try_into().expect("32 bytes"),
                proof: bytes[4 + NONCE..CHALLENGE_LEN]
                    .try_into()
                    .expect("32 bytes"),
            })
        }
        (m, Step::Proof) if m == ACCEPT_MAGIC => Ok(Answer::Accepted),
        (m, _) => Ok(Answer::Unexpected(*m)),
    }
}

/// Reads one handshake message from `stream`: as many bytes as `decode`
/// asks for, until it decides (exactly the message's bytes, nothing after
/// them). An I/O error comes with the bytes read before it.
async fn read_message<S: AsyncRead + Unpin, T>(
    stream: &mut S,
    decode: impl Fn(&[u8]) -> Result<T, Malformed>,
) -> Result<Result<T, String>, (std::io::Error, Vec<u8>)> {
    let mut bytes = Vec::new();
    loop {
        match decode(&bytes) {
            Ok(message) => return Ok(Ok(message)),
            Err(Malformed::Bad(why)) => return Ok(Err(why)),
            Err(Malformed::Short(need)) => {
                let have = bytes.len();
                if need <= have {
                    // Never so (the decoders' fuzz test checks): stop
                    // rather than spin.
                    return Ok(Err(format!("handshake message undecided at {have} bytes")));
                }
                bytes.resize(need, 0);
                if let Err(e) = stream.read_exact(&mut bytes[have..]).await {
                    bytes.truncate(have);
                    return Err((e, bytes));
                }
            }
        }
    }
}

/// The client's half: proves the secret to the server behind `stream` and
/// checks the server's proof. `label` names the server in messages. EACCES
/// when either side's proof is wrong, EIO when the connection fails,
/// ETIMEDOUT when the server does not answer.
pub async fn client<S: AsyncRead + AsyncWrite + Unpin>(
    stream: &mut S,
    secret: &Secret,
    purpose: Purpose,
    label: &str,
) -> SfsResult<()> {
    match tokio::time::timeout(
        HANDSHAKE_TIMEOUT,
        client_steps(stream, secret, purpose, label),
    )
    .await
    {
        Ok(result) => result,
        Err(_) => Err(SfsError::timed_out(format!(
            "{label}: no answer to the handshake within {HANDSHAKE_TIMEOUT:?}"
        ))),
    }
}

async fn client_steps<S: AsyncRead + AsyncWrite + Unpin>(
    stream: &mut S,
    secret: &Secret,
    purpose: Purpose,
    label: &str,
) -> SfsResult<()> {
    let lost = |e: std::io::Error| SfsError::io(format!("{label}: handshake failed: {e}"));
    let client_nonce = nonce().map_err(lost)?;
    stream
        .write_all(&encode_hello(purpose, &client_nonce))
        .await
        .map_err(lost)?;

    let (server_nonce, server_proof) = match read_answer(stream, Step::Hello, label).await? {
        Answer::Challenge { nonce, proof } => (nonce, proof),
        Answer::Refused(text) => return Err(refused(label, &text)),
        other => {
            return Err(SfsError::new(
                Errno::EPROTO,
                format!(
                    "{label}: not an SFS server of this version (handshake answer {:?})",
                    other.magic()
                ),
            ))
        }
    };
    if !verify(
        secret,
        "server",
        purpose,
        &client_nonce,
        &server_nonce,
        &server_proof,
    ) {
        return Err(denied(format!(
            "{label} does not hold this job's secret: it belongs to another job \
             (or this client read the wrong secret); nothing was sent to it"
        )));
    }
    let client_proof = proof(secret, "client", purpose, &client_nonce, &server_nonce);
    stream
        .write_all(&encode_proof(&client_proof))
        .await
        .map_err(lost)?;
    match read_answer(stream, Step::Proof, label).await? {
        Answer::Accepted => Ok(()),
        Answer::Refused(text) => Err(refused(label, &text)),
        other => Err(SfsError::new(
            Errno::EPROTO,
            format!("{label}: bad handshake answer {:?}", other.magic()),
        )),
    }
}

impl Answer {
    /// The four bytes the answer began with.
    fn magic(&self) -> [u8; 4] {
        match self {
            Answer::Challenge { .. } => *CHALLENGE_MAGIC,
            Answer::Accepted => *ACCEPT_MAGIC,
            Answer::Refused(_) => *REFUSE_MAGIC,
            Answer::Unexpected(magic) => *magic,
        }
    }
}

/// Reads the server's answer at `step`. A refusal whose reason cannot be
/// read is still a refusal.
async fn read_answer<S: AsyncRead + Unpin>(
    stream: &mut S,
    step: Step,
    label: &str,
) -> SfsResult<Answer> {
    match read_message(stream, |b| decode_answer(b, step)).await {
        Ok(Ok(answer)) => Ok(answer),
        Ok(Err(why)) => Err(SfsError::new(Errno::EPROTO, format!("{label}: {why}"))),
        Err((_, read)) if read.starts_with(REFUSE_MAGIC) => {
            Ok(Answer::Refused("(no reason given)".into()))
        }
        Err((e, _)) => Err(SfsError::io(format!("{label}: handshake failed: {e}"))),
    }
}

fn refused(label: &str, text: &str) -> SfsError {
    denied(format!("{label} refused this client: {text}"))
}

/// Connects to `addr` and runs the client's handshake, both within
/// `timeout`: the stream is ready for requests. EIO when the server cannot
/// be reached (as for every other way of losing a server; the message keeps
/// the cause), ETIMEDOUT, or the handshake's EACCES/EPROTO.
pub async fn connect_tcp(
    addr: impl tokio::net::ToSocketAddrs,
    secret: &Secret,
    purpose: Purpose,
    label: &str,
    timeout: Duration,
) -> SfsResult<tokio::net::TcpStream> {
    let steps = async {
        let mut stream = tokio::net::TcpStream::connect(addr)
            .await
            .map_err(|e| SfsError::io(format!("cannot connect to {label}: {e}")))?;
        // Without it, Nagle holds the second of two pipelined frames for a
        // delayed ACK (40 ms).
        let _ = stream.set_nodelay(true);
        client(&mut stream, secret, purpose, label).await?;
        Ok(stream)
    };
    match tokio::time::timeout(timeout, steps).await {
        Ok(result) => result,
        Err(_) => Err(SfsError::timed_out(format!(
            "connecting to {label} timed out after {timeout:?}"
        ))),
    }
}

/// A lazily connecting gRPC channel whose every connection to `addr` runs
/// the client's handshake first (tonic's own connector would send the
/// HTTP/2 preface straight away, which the server refuses).
pub fn grpc_channel(
    endpoint: &tonic::transport::Endpoint,
    addr: String,
    secret: std::sync::Arc<Secret>,
    label: String,
    timeout: Duration,
) -> tonic::transport::Channel {
    let connector = tower::service_fn(move |_: tonic::codegen::http::Uri| {
        let (addr, secret, label) = (addr.clone(), secret.clone(), label.clone());
        async move {
            let stream = connect_tcp(addr.as_str(), &secret, Purpose::Rpc, &label, timeout)
                .await
                .map_err(|e| std::io::Error::other(e.to_string()))?;
            Ok::<_, std::io::Error>(hyper_util::rt::TokioIo::new(stream))
        }
    });
    endpoint.connect_with_connector_lazy(connector)
}

/// Why the server side of a handshake failed (the connection is then
/// closed; the server logs it).
#[derive(Debug)]
pub struct Refused(pub String);

impl std::fmt::Display for Refused {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str(&self.0)
    }
}

/// Sends a refusal the client can show, best effort, and ends the
/// connection's sending side.
pub async fn refuse<S: AsyncRead + AsyncWrite + Unpin>(stream: &mut S, message: &str) {
    let _ = stream.write_all(&encode_refusal(message)).await;
    let _ = stream.shutdown().await;
    // Closing a socket with unread input sends a reset, which can destroy
    // the refusal before the peer read it: read what the peer already sent
    // (a little, briefly) so the close is an orderly one.
    let drain = async {
        let mut sink = [0u8; 1024];
        let mut left: usize = 16 * 1024;
        while left > 0 {
            match stream.read(&mut sink).await {
                Ok(0) | Err(_) => break,
                Ok(n) => left = left.saturating_sub(n),
            }
        }
    };
    let _ = tokio::time::timeout(Duration::from_millis(200), drain).await;
}

/// The server's half: waits (at most [`HANDSHAKE_TIMEOUT`]) for a client's
/// handshake for `purpose` and checks its proof; `Ok` when the client holds
/// the secret and may be served. A client that is refused is told why
/// before the connection is closed.
pub async fn server<S: AsyncRead + AsyncWrite + Unpin>(
    stream: &mut S,
    secret: &Secret,
    purpose: Purpose,
) -> Result<(), Refused> {
    match tokio::time::timeout(HANDSHAKE_TIMEOUT, server_steps(stream, secret, purpose)).await {
        Ok(result) => result,
        Err(_) => Err(Refused(format!(
            "no handshake within {HANDSHAKE_TIMEOUT:?}"
        ))),
    }
}

async fn server_steps<S: AsyncRead + AsyncWrite + Unpin>(
    stream: &mut S,
    secret: &Secret,
    purpose: Purpose,
) -> Result<(), Refused> {
    let io = |e: std::io::Error| Refused(format!("handshake failed: {e}"));
    let client_nonce = match read_message(stream, |b| decode_hello(b, purpose)).await {
        Ok(Ok(client_nonce)) => client_nonce,
        Ok(Err(why)) => {
            refuse(stream, &why).await;
            return Err(Refused(why));
        }
        Err((e, _)) => return Err(io(e)),
    };
    let server_nonce = nonce().map_err(io)?;
    let server_proof = proof(secret, "server", purpose, &client_nonce, &server_nonce);
    stream
        .write_all(&encode_challenge(&server_nonce, &server_proof))
        .await
        .map_err(io)?;
    let good = match read_message(stream, decode_proof).await {
        Ok(Ok(client_proof)) => verify(
            secret,
            "client",
            purpose,
            &client_nonce,
            &server_nonce,
            &client_proof,
        ),
        Ok(Err(_)) => false,
        Err((e, _)) => return Err(io(e)),
    };
    if !good {
        refuse(stream, WRONG_SECRET).await;
        return Err(Refused(WRONG_SECRET.into()));
    }
    stream.write_all(ACCEPT_MAGIC).await.map_err(io)?;
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;

    async fn pair(
        client_secret: Secret,
        server_secret: Secret,
        client_purpose: Purpose,
        server_purpose: Purpose,
    ) -> (SfsResult<()>, Result<(), Refused>) {
        let (mut a, mut b) = tokio::io::duplex(1024);
        let server = tokio::spawn(async move {
            let result = server(&mut b, &server_secret, server_purpose).await;
            drop(b);
            result
        });
        let client = client(&mut a, &client_secret, client_purpose, "server s0").await;
        // A client that gave up closes its connection.
        drop(a);
        (client, server.await.unwrap())
    }

    #[test]
    fn an_exchange_proves_both_sides_and_binds_nonces_and_purpose() {
        let s = Secret::generate().unwrap();
        let other = Secret::generate().unwrap();
        let exchange = |secret, purpose, client_nonce, server_nonce| Exchange {
            secret,
            purpose,
            client_nonce,
            server_nonce,
        };
        let ours = exchange(&s, Purpose::Rdma, &[1u8; 12][..], &[2u8; 32][..]);
        assert!(ours.server_proof_is(&ours.server_proof()));
        assert!(ours.client_proof_is(&ours.client_proof()));
        // One side's proof is not the other's.
        assert!(!ours.client_proof_is(&ours.server_proof()));
        for theirs in [
            exchange(&other, Purpose::Rdma, &[1u8; 12][..], &[2u8; 32][..]),
            exchange(&s, Purpose::Data, &[1u8; 12][..], &[2u8; 32][..]),
            exchange(&s, Purpose::Rdma, &[9u8; 12][..], &[2u8; 32][..]),
            exchange(&s, Purpose::Rdma, &[1u8; 12][..], &[3u8; 32][..]),
        ] {
            assert!(!ours.client_proof_is(&theirs.client_proof()));
            assert!(!ours.server_proof_is(&theirs.server_proof()));
        }
        assert!(!ours.client_proof_is(&ours.client_proof()[..31]));
    }

    #[tokio::test]
    async fn same_secret_is_accepted() {
        let s = Secret::generate().unwrap();
        let (c, sv) = pair(s.clone(), s, Purpose::Rpc, Purpose::Rpc).await;
        c.unwrap();
        sv.unwrap();
    }

    #[tokio::test]
    async fn the_server_refuses_another_secret_and_the_client_sees_it_first() {
        let (c, sv) = pair(
            Secret::generate().unwrap(),
            Secret::generate().unwrap(),
            Purpose::Data,
            Purpose::Data,
        )
        .await;
        // The client checks the server's proof first and stops there.
        let e = c.unwrap_err();
        assert_eq!(e.errno, Errno::EACCES);
        assert!(e.message.contains("does not hold this job's secret"), "{e}");
        assert!(sv.is_err());
    }

    #[tokio::test]
    async fn a_client_without_the_secret_gets_a_refusal() {
        // A client that ignores the server's proof and guesses its own.
        let s = Secret::generate().unwrap();
        let (mut a, mut b) = tokio::io::duplex(1024);
        let server = tokio::spawn(async move { server(&mut b, &s, Purpose::Rpc).await });
        let mut hello = Vec::from(&HELLO_MAGIC[..]);
        hello.extend_from_slice(&[VERSION, Purpose::Rpc as u8, 0, 0]);
        hello.extend_from_slice(&[7u8; 32]);
        a.write_all(&hello).await.unwrap();
        let mut challenge = [0u8; 68];
        a.read_exact(&mut challenge).await.unwrap();
        a.write_all(b"SFSP").await.unwrap();
        a.write_all(&[0u8; 32]).await.unwrap();
        let mut magic = [0u8; 4];
        a.read_exact(&mut magic).await.unwrap();
        assert_eq!(&magic, REFUSE_MAGIC);
        let mut len = [0u8; 4];
        a.read_exact(&mut len).await.unwrap();
        let mut text = vec![0u8; u32::from_le_bytes(len) as usize];
        a.read_exact(&mut text).await.unwrap();
        let text = String::from_utf8(text).unwrap();
        assert_eq!(text, WRONG_SECRET);
        assert!(server
            .await
            .unwrap()
            .unwrap_err()
            .0
            .contains("wrong job secret"));
    }

    #[tokio::test]
    async fn a_frame_without_handshake_and_a_wrong_purpose_are_refused() {
        let s = Secret::generate().unwrap();
        let (mut a, mut b) = tokio::io::duplex(1024);
        let s2 = s.clone();
        let server = tokio::spawn(async move { server(&mut b, &s2, Purpose::Rpc).await });
        a.write_all(b"SFSQ and a shutdown request").await.unwrap();
        assert!(server
            .await
            .unwrap()
            .unwrap_err()
            .0
            .contains("no handshake"));
        let (c, sv) = pair(s.clone(), s, Purpose::Data, Purpose::Rpc).await;
        assert_eq!(c.unwrap_err().errno, Errno::EACCES);
        assert!(sv.unwrap_err().0.contains("connection kind"));
    }

    #[tokio::test]
    async fn proofs_differ_by_side_purpose_and_nonce() {
        let s = Secret::generate().unwrap();
        let p = proof(&s, "server", Purpose::Rpc, &[1; 32], &[2; 32]);
        assert_ne!(p, proof(&s, "client", Purpose::Rpc, &[1; 32], &[2; 32]));
        assert_ne!(p, proof(&s, "server", Purpose::Data, &[1; 32], &[2; 32]));
        assert_ne!(p, proof(&s, "server", Purpose::Rpc, &[1; 32], &[3; 32]));
        assert!(verify(&s, "server", Purpose::Rpc, &[1; 32], &[2; 32], &p));
    }

    #[test]
    fn messages_round_trip_through_their_decoders() {
        let (n1, n2, p) = ([1u8; NONCE], [2u8; NONCE], [3u8; PROOF]);
        let hello = encode_hello(Purpose::Data, &n1);
        assert_eq!(decode_hello(&hello, Purpose::Data), Ok(n1));
        let challenge = encode_challenge(&n2, &p);
        assert_eq!(
            decode_answer(&challenge, Step::Hello),
            Ok(Answer::Challenge {
                nonce: n2,
                proof: p
            })
        );
        assert_eq!(decode_proof(&encode_proof(&p)), Ok(p));
        assert_eq!(
            decode_answer(ACCEPT_MAGIC, Step::Proof),
            Ok(Answer::Accepted)
        );
        for step in [Step::Hello, Step::Proof] {
            assert_eq!(
                decode_answer(&encode_refusal("no"), step),
                Ok(Answer::Refused("no".into()))
            );
        }
        // The wire format of docs/security.md, byte for byte.
        assert_eq!(&hello[..8], b"SFSH\x01\x02\x00\x00");
        assert_eq!(&encode_refusal("ab")[..], b"SFSN\x02\x00\x00\x00ab");
    }

    #[test]
    fn decoders_ask_for_what_they_need_and_decide_as_early_as_before() {
        let hello = encode_hello(Purpose::Rpc, &[9; NONCE]);
        assert_eq!(
            decode_hello(&hello[..3], Purpose::Rpc),
            Err(Malformed::Short(4))
        );
        // The magic alone decides a connection that is no handshake.
        assert_eq!(
            decode_hello(&hello[..4], Purpose::Rpc),
            Err(Malformed::Short(HELLO_LEN))
        );
        let Err(Malformed::Bad(why)) = decode_hello(b"SFSQ", Purpose::Rpc) else {
            panic!("a lean request frame passed as a hello");
        };
        assert!(why.contains("no handshake"), "{why}");
        let Err(Malformed::Bad(why)) = decode_hello(&hello, Purpose::Data) else {
            panic!("a hello for another purpose passed");
        };
        assert!(why.contains("connection kind 1"), "{why}");
        let mut old = hello;
        old[4] = 2;
        assert!(matches!(
            decode_hello(&old, Purpose::Rpc),
            Err(Malformed::Bad(_))
        ));
        // Bytes after a message are not its own.
        let mut longer = hello.to_vec();
        longer.extend_from_slice(b"SFSQ");
        assert_eq!(decode_hello(&longer, Purpose::Rpc), Ok([9; NONCE]));

        assert_eq!(decode_proof(b"SFSP"), Err(Malformed::Short(PROOF_LEN)));
        assert_eq!(
            decode_proof(&[0; PROOF_LEN]),
            Err(Malformed::Bad(WRONG_SECRET.into()))
        );

        // A refusal is read to its (capped) length; its text is lossy.
        let mut refusal = encode_refusal("why");
        assert_eq!(
            decode_answer(&refusal[..6], Step::Hello),
            Err(Malformed::Short(8))
        );
        assert_eq!(
            decode_answer(&refusal[..9], Step::Hello),
            Err(Malformed::Short(11))
        );
        refusal[4..8].copy_from_slice(&u32::MAX.to_le_bytes());
        assert_eq!(
            decode_answer(&refusal, Step::Hello),
            Err(Malformed::Short(8 + MAX_REFUSAL))
        );
        let mut long = refusal[..8].to_vec();
        long.extend_from_slice(&[0xff; MAX_REFUSAL + 10]);
        let Ok(Answer::Refused(text)) = decode_answer(&long, Step::Hello) else {
            panic!("a long refusal was not read");
        };
        assert_eq!(text.chars().count(), MAX_REFUSAL);
        // An answer that does not belong to the step is reported, not read on.
        assert_eq!(
            decode_answer(b"SFSC", Step::Proof),
            Ok(Answer::Unexpected(*b"SFSC"))
        );
        assert_eq!(
            decode_answer(ACCEPT_MAGIC, Step::Hello),
            Ok(Answer::Unexpected(*ACCEPT_MAGIC))
        );
        assert_eq!(
            decode_answer(b"SFSC", Step::Hello),
            Err(Malformed::Short(CHALLENGE_LEN))
        );
    }

    #[tokio::test]
    async fn a_refusal_cut_short_is_still_a_refusal() {
        let (mut a, mut b) = tokio::io::duplex(1024);
        b.write_all(b"SFSN\x10\x00").await.unwrap();
        drop(b);
        let answer = read_answer(&mut a, Step::Hello, "s0").await.unwrap();
        assert_eq!(answer, Answer::Refused("(no reason given)".into()));
        let (mut a, mut b) = tokio::io::duplex(1024);
        b.write_all(b"SFSC").await.unwrap();
        drop(b);
        let e = read_answer(&mut a, Step::Hello, "s0").await.unwrap_err();
        assert_eq!(e.errno, Errno::EIO);
    }
}
