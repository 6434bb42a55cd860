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
const ACCEPT_MAGIC: &[u8; 4] = b"SFSK";
const REFUSE_MAGIC: &[u8; 4] = b"SFSN";
const VERSION: u8 = 1;
const NONCE: usize = 32;
const PROOF: usize = 32;
const MAX_REFUSAL: usize = 512;

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

/// Length of a proof.
pub const PROOF_LEN: usize = PROOF;

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
    let mut hello = Vec::with_capacity(40);
    hello.extend_from_slice(HELLO_MAGIC);
    hello.extend_from_slice(&[VERSION, purpose as u8, 0, 0]);
    hello.extend_from_slice(&client_nonce);
    stream.write_all(&hello).await.map_err(lost)?;

    let mut magic = [0u8; 4];
    stream.read_exact(&mut magic).await.map_err(lost)?;
    if &magic == REFUSE_MAGIC {
        return Err(read_refusal(stream, label).await);
    }
    if &magic != CHALLENGE_MAGIC {
        return Err(SfsError::new(
            Errno::EPROTO,
            format!("{label}: not an SFS server of this version (handshake answer {magic:?})"),
        ));
    }
    let mut challenge = [0u8; NONCE + PROOF];
    stream.read_exact(&mut challenge).await.map_err(lost)?;
    let (server_nonce, server_proof) = challenge.split_at(NONCE);
    if !verify(
        secret,
        "server",
        purpose,
        &client_nonce,
        server_nonce,
        server_proof,
    ) {
        return Err(denied(format!(
            "{label} does not hold this job's secret: it belongs to another job \
             (or this client read the wrong secret); nothing was sent to it"
        )));
    }
    let mut answer = Vec::with_capacity(4 + PROOF);
    answer.extend_from_slice(PROOF_MAGIC);
    answer.extend_from_slice(&proof(
        secret,
        "client",
        purpose,
        &client_nonce,
        server_nonce,
    ));
    stream.write_all(&answer).await.map_err(lost)?;
    stream.read_exact(&mut magic).await.map_err(lost)?;
    match &magic {
        m if m == ACCEPT_MAGIC => Ok(()),
        m if m == REFUSE_MAGIC => Err(read_refusal(stream, label).await),
        other => Err(SfsError::new(
            Errno::EPROTO,
            format!("{label}: bad handshake answer {other:?}"),
        )),
    }
}

async fn read_refusal<S: AsyncRead + Unpin>(stream: &mut S, label: &str) -> SfsError {
    let mut len = [0u8; 4];
    let mut text = String::from("(no reason given)");
    if stream.read_exact(&mut len).await.is_ok() {
        let n = (u32::from_le_bytes(len) as usize).min(MAX_REFUSAL);
        let mut buf = vec![0u8; n];
        if stream.read_exact(&mut buf).await.is_ok() {
            text = String::from_utf8_lossy(&buf).into_owned();
        }
    }
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
    let text = &message.as_bytes()[..message.len().min(MAX_REFUSAL)];
    let mut frame = Vec::with_capacity(8 + text.len());
    frame.extend_from_slice(REFUSE_MAGIC);
    frame.extend_from_slice(&(text.len() as u32).to_le_bytes());
    frame.extend_from_slice(text);
    let _ = stream.write_all(&frame).await;
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
    let mut hello = [0u8; 40];
    stream.read_exact(&mut hello[..4]).await.map_err(io)?;
    if &hello[..4] != HELLO_MAGIC {
        let why = format!(
            "no handshake (first bytes {:?}): every connection must prove the job secret first",
            String::from_utf8_lossy(&hello[..4])
        );
        refuse(stream, &why).await;
        return Err(Refused(why));
    }
    stream.read_exact(&mut hello[4..]).await.map_err(io)?;
    if hello[4] != VERSION {
        let why = format!(
            "handshake version {} (this server speaks {VERSION})",
            hello[4]
        );
        refuse(stream, &why).await;
        return Err(Refused(why));
    }
    if Purpose::from_byte(hello[5]) != Some(purpose) {
        let why = format!(
            "a handshake for connection kind {} on a port for {purpose:?}",
            hello[5]
        );
        refuse(stream, &why).await;
        return Err(Refused(why));
    }
    let client_nonce = &hello[8..];
    let server_nonce = nonce().map_err(io)?;
    let mut challenge = Vec::with_capacity(4 + NONCE + PROOF);
    challenge.extend_from_slice(CHALLENGE_MAGIC);
    challenge.extend_from_slice(&server_nonce);
    challenge.extend_from_slice(&proof(
        secret,
        "server",
        purpose,
        client_nonce,
        &server_nonce,
    ));
    stream.write_all(&challenge).await.map_err(io)?;
    let mut answer = [0u8; 4 + PROOF];
    stream.read_exact(&mut answer).await.map_err(io)?;
    if &answer[..4] != PROOF_MAGIC
        || !verify(
            secret,
            "client",
            purpose,
            client_nonce,
            &server_nonce,
            &answer[4..],
        )
    {
        let why = "wrong job secret: the client does not hold this job's secret \
                   (another job's, or none)";
        refuse(stream, why).await;
        return Err(Refused(why.into()));
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
        let e = read_refusal(&mut a, "server s0").await;
        assert!(e.message.contains("wrong job secret"), "{e}");
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
}
