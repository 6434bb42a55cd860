//! The node-local transport on a real Unix socket and real shared memory:
//! what the conformance suite (tests/conformance.rs) does not reach — the
//! hello's checks and slot ownership after a timeout.

use super::*;
use crate::memory::MemoryChunks;
use sfs_global::FileId;
use tokio::sync::oneshot;

/// The job secret of these tests' servers and clients.
fn secret() -> std::sync::Arc<sfs_global::secret::Secret> {
    std::sync::Arc::new(sfs_global::secret::Secret::from_bytes([7; 32]))
}

const CHUNK: u64 = 64 * 1024;

/// Reads of chunk index 99 take 300 ms; everything else is a MemoryChunks.
struct SlowReads(MemoryChunks);

impl ChunkHandler for SlowReads {
    fn write_chunk(&self, chunk: &ChunkRef, data: &[u8]) -> SfsResult<()> {
        self.0.write_chunk(chunk, data)
    }
    fn read_chunk(&self, chunk: &ChunkRef, buf: &mut [u8]) -> SfsResult<usize> {
        if chunk.index == 99 {
            std::thread::sleep(Duration::from_millis(300));
        }
        self.0.read_chunk(chunk, buf)
    }
}

struct TestServer {
    _dir: tempfile::TempDir,
    path: PathBuf,
    stop: Option<oneshot::Sender<()>>,
    task: tokio::task::JoinHandle<std::io::Result<()>>,
}

impl TestServer {
    fn start() -> TestServer {
        let dir = tempfile::tempdir().unwrap();
        let path = socket_path(dir.path());
        let listener = bind(&path).unwrap();
        let (tx, rx) = oneshot::channel::<()>();
        let handler: Arc<dyn ChunkHandler> = Arc::new(SlowReads(MemoryChunks::default()));
        let task = tokio::spawn(serve(
            listener,
            "s0".into(),
            handler,
            secret(),
            CHUNK,
            sfs_rpc::limits::ConnectionLimit::new(1024, "s0"),
            async move {
                let _ = rx.await;
            },
        ));
        TestServer {
            _dir: dir,
            path,
            stop: Some(tx),
            task,
        }
    }

    fn channel(&self, timeout: Duration) -> ShmChannel {
        ShmChannel::new(
            &self.path,
            "s0",
            secret(),
            CHUNK,
            Duration::from_secs(2),
            timeout,
        )
    }

    /// A channel that has connected (one write done), and its connection.
    async fn connected(&self, timeout: Duration) -> (ShmChannel, Arc<ShmConnection>) {
        let channel = self.channel(timeout);
        channel
            .write_chunk(chunk(1, 0, 10), &[1; 10])
            .await
            .unwrap();
        let conn = channel.conn.try_lock().unwrap().clone().unwrap();
        (channel, conn)
    }

    async fn stop(mut self) {
        let _ = self.stop.take().map(|s| s.send(()));
        tokio::time::timeout(Duration::from_secs(10), &mut self.task)
            .await
            .expect("server stops")
            .expect("server task")
            .expect("serve");
    }
}

fn chunk(index: u64, offset: u64, len: u64) -> ChunkRef {
    ChunkRef {
        id: FileId::from_parts(1, 2),
        index,
        offset,
        len,
    }
}

fn pattern(seed: u8, len: usize) -> Vec<u8> {
    (0..len)
        .map(|i| (i as u8).wrapping_mul(31) ^ seed)
        .collect()
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn bytes_written_through_slots_read_back() {
    let server = TestServer::start();
    let channel = server.channel(Duration::from_secs(5));
    assert_eq!(channel.transport(), sfs_global::config::DataTransport::Shm);
    for (index, offset, len) in [
        (0, 0, 1),
        (1, 0, CHUNK),
        (2, 1000, 20_000),
        (3, CHUNK - 7, 7),
    ] {
        let data = pattern(index as u8, len as usize);
        channel
            .write_chunk(chunk(index, offset, len), &data)
            .await
            .unwrap();
        let mut back = vec![0u8; len as usize];
        let n = channel
            .read_chunk(chunk(index, offset, len), &mut back)
            .await
            .unwrap();
        assert_eq!((n, &back), (len as usize, &data), "chunk {index}");
    }
    // An absent chunk reads short; more requests than slots all complete.
    let mut buf = vec![9u8; 10];
    assert_eq!(
        channel
            .read_chunk(chunk(50, 0, 10), &mut buf)
            .await
            .unwrap(),
        0
    );
    let writes = (0..40u64).map(|i| {
        let channel = &channel;
        async move {
            let data = pattern(i as u8, 5000);
            channel.write_chunk(chunk(100 + i, 0, 5000), &data).await?;
            let mut back = vec![0u8; 5000];
            channel
                .read_chunk(chunk(100 + i, 0, 5000), &mut back)
                .await?;
            Ok::<_, SfsError>(back == data)
        }
    });
    for ok in futures::future::join_all(writes).await {
        assert!(ok.unwrap());
    }
    drop(channel);
    server.stop().await;
}

#[tokio::test]
async fn a_client_asking_for_another_server_is_refused() {
    let server = TestServer::start();
    let e = ShmChannel::connect(
        &server.path,
        "s1",
        secret(),
        CHUNK,
        Duration::from_secs(2),
        Duration::from_secs(2),
    )
    .await
    .err()
    .expect("refused");
    assert_eq!(e.errno, Errno::EADDRNOTAVAIL, "{e}");
    let e = ShmChannel::connect(
        &server.path,
        "s0",
        secret(),
        CHUNK * 2,
        Duration::from_secs(2),
        Duration::from_secs(2),
    )
    .await
    .err()
    .expect("refused");
    assert_eq!(e.errno, Errno::EINVAL, "chunk size: {e}");
    // The server still serves the right client.
    let channel = server.channel(Duration::from_secs(2));
    channel.write_chunk(chunk(0, 0, 3), b"abc").await.unwrap();
    drop(channel);
    server.stop().await;
}

/// Sends a hello for `s0` with `fd` attached; the welcome's status.
async fn raw_hello(path: &Path, fd: &OwnedFd, slots: u32) -> (UnixStream, i32) {
    let mut stream = UnixStream::connect(path).await.unwrap();
    // A peer holding the secret that then breaks the protocol.
    auth::client(&mut stream, &secret(), Purpose::SharedMemory, "test server")
        .await
        .unwrap();
    let mut hello = Vec::new();
    hello.extend_from_slice(&MAGIC);
    hello.extend_from_slice(&VERSION.to_le_bytes());
    hello.extend_from_slice(&slots.to_le_bytes());
    hello.extend_from_slice(&CHUNK.to_le_bytes());
    hello.extend_from_slice(&2u16.to_le_bytes());
    hello.extend_from_slice(b"s0");
    let mut space = [MaybeUninit::uninit(); rustix::cmsg_space!(ScmRights(1))];
    let fds = [fd.as_fd()];
    let mut control = rustix::net::SendAncillaryBuffer::new(&mut space);
    control.push(rustix::net::SendAncillaryMessage::ScmRights(&fds));
    stream.writable().await.unwrap();
    rustix::net::sendmsg(
        stream.as_fd(),
        &[std::io::IoSlice::new(&hello)],
        &mut control,
        rustix::net::SendFlags::NOSIGNAL,
    )
    .unwrap();
    let mut stream = stream;
    let mut welcome = [0u8; WELCOME_LEN];
    stream.read_exact(&mut welcome).await.unwrap();
    (stream, i32::from_le_bytes(welcome[4..].try_into().unwrap()))
}

#[tokio::test]
async fn unsealed_memory_and_bad_slots_are_refused() {
    let server = TestServer::start();
    // A memfd that could shrink under the server's mapping.
    // SAFETY: the name is a NUL-terminated literal.
    let raw = unsafe { libc::memfd_create(c"unsealed".as_ptr(), libc::MFD_CLOEXEC) };
    assert!(raw >= 0);
    // SAFETY: a fresh descriptor nothing else owns.
    let unsealed = unsafe { OwnedFd::from_raw_fd(raw) };
    // SAFETY: a plain system call on our descriptor.
    let grown = unsafe { libc::ftruncate(raw, (CHUNK * 2) as libc::off_t) };
    assert_eq!(grown, 0);
    let (_, status) = raw_hello(&server.path, &unsealed, 2).await;
    assert_eq!(status, Errno::EINVAL.0, "unsealed region");
    // A sealed one but too small for the slots announced.
    let small = sealed_memfd(CHUNK as usize).unwrap();
    let (_, status) = raw_hello(&server.path, &small, 2).await;
    assert_eq!(status, Errno::EINVAL.0, "region smaller than announced");
    // A good hello, then a request naming a slot past the region: the
    // server drops the connection without touching memory.
    let good = sealed_memfd(2 * CHUNK as usize).unwrap();
    let (mut stream, status) = raw_hello(&server.path, &good, 2).await;
    assert_eq!(status, 0);
    let header = RequestHeader {
        op: Op::Read,
        request_id: 1,
        chunk: chunk(0, 0, 10),
    };
    stream.write_all(&encode_request(&header, 2)).await.unwrap();
    let mut rest = Vec::new();
    let read = tokio::time::timeout(Duration::from_secs(5), stream.read_to_end(&mut rest))
        .await
        .expect("the server closes the connection");
    assert!(read.is_ok() && rest.is_empty(), "no answer to a bad slot");
    server.stop().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_timed_out_request_keeps_its_slot_until_the_server_answers() {
    let server = TestServer::start();
    let channel = server.channel(Duration::from_millis(50));
    channel
        .write_chunk(chunk(99, 0, 100), &[7; 100])
        .await
        .unwrap();
    let free = |channel: &ShmChannel| {
        let conn = channel.conn.try_lock().unwrap().clone().unwrap();
        let n = conn.free.lock().unwrap().len();
        n
    };
    assert_eq!(free(&channel), SLOTS as usize);
    let mut buf = vec![0u8; 100];
    let e = channel
        .read_chunk(chunk(99, 0, 100), &mut buf)
        .await
        .unwrap_err();
    assert_eq!(e.errno, Errno::ETIMEDOUT, "{e}");
    // The server still reads into that slot: it is not free yet.
    assert_eq!(free(&channel), SLOTS as usize - 1);
    tokio::time::sleep(Duration::from_millis(600)).await;
    assert_eq!(free(&channel), SLOTS as usize, "freed by the late answer");
    drop(channel);
    server.stop().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_call_cancelled_before_sending_frees_its_slot() {
    let server = TestServer::start();
    let (channel, conn) = server.connected(Duration::from_millis(50)).await;
    // Another sender holds the socket: the call times out before it sends.
    let held = conn.writer.lock().await;
    let e = channel
        .write_chunk(chunk(2, 0, 10), &[2; 10])
        .await
        .unwrap_err();
    assert_eq!(e.errno, Errno::ETIMEDOUT, "{e}");
    drop(held);
    assert_eq!(
        conn.free.lock().unwrap().len(),
        SLOTS as usize,
        "slot returned"
    );
    assert!(!conn.mux.has_pending());
    // The connection is still good.
    channel
        .write_chunk(chunk(3, 0, 10), &[3; 10])
        .await
        .unwrap();
    drop(conn);
    drop(channel);
    server.stop().await;
}

#[tokio::test]
async fn two_requests_naming_one_slot_close_the_connection() {
    let server = TestServer::start();
    let region = sealed_memfd(2 * CHUNK as usize).unwrap();
    let (mut stream, status) = raw_hello(&server.path, &region, 2).await;
    assert_eq!(status, 0);
    // The first read of the slow chunk holds slot 0 for 300 ms; a second
    // request on slot 0 meanwhile is refused by dropping the connection.
    for id in [1, 2] {
        let header = RequestHeader {
            op: Op::Read,
            request_id: id,
            chunk: chunk(99, 0, 10),
        };
        stream.write_all(&encode_request(&header, 0)).await.unwrap();
    }
    let mut rest = Vec::new();
    tokio::time::timeout(Duration::from_secs(5), stream.read_to_end(&mut rest))
        .await
        .expect("the server closes the connection")
        .unwrap();
    // At most the first request's answer arrived.
    assert!(
        rest.len() <= crate::wire::RESPONSE_HEADER_LEN,
        "{} bytes",
        rest.len()
    );
    server.stop().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn slots_of_a_connection_given_up_are_never_reused() {
    let server = TestServer::start();
    let (channel, conn) = server.connected(Duration::from_millis(50)).await;
    // A slow read is in flight (the server fills its slot for 300 ms) when
    // the connection is given up.
    let mut buf = vec![0u8; 10];
    assert!(channel
        .read_chunk(chunk(99, 0, 10), &mut buf)
        .await
        .is_err());
    conn.fail_all("test");
    assert_eq!(conn.free.lock().unwrap().len(), SLOTS as usize - 1);
    assert!(
        conn.take_slot().await.is_err(),
        "no slot of a closed connection"
    );
    // The channel itself goes on with a fresh connection and region.
    channel
        .write_chunk(chunk(2, 0, 10), &[2; 10])
        .await
        .unwrap();
    let mut back = [0u8; 10];
    channel
        .read_chunk(chunk(2, 0, 10), &mut back)
        .await
        .unwrap();
    assert_eq!(back, [2; 10]);
    drop(conn);
    drop(channel);
    server.stop().await;
}

#[test]
fn hello_and_welcome_bytes_are_checked_without_the_memory() {
    let hello = encode_hello(2, CHUNK, "s0");
    assert_eq!(decode_hello(&hello, "s0", CHUNK), Ok(2));
    let errno = |r: Result<u32, (Errno, String)>| r.unwrap_err().0;
    assert_eq!(
        errno(decode_hello(&hello, "s1", CHUNK)),
        Errno::EADDRNOTAVAIL
    );
    assert_eq!(errno(decode_hello(&hello, "s0", 2 * CHUNK)), Errno::EINVAL);
    assert_eq!(
        errno(decode_hello(&encode_hello(17, CHUNK, "s0"), "s0", CHUNK)),
        Errno::EINVAL
    );
    assert_eq!(
        errno(decode_hello(&hello[..hello.len() - 1], "s0", CHUNK)),
        Errno::EPROTO
    );
    assert_eq!(
        errno(decode_hello(&hello[..10], "s0", CHUNK)),
        Errno::EPROTO
    );
    let mut newer = hello.clone();
    newer[4] = 2;
    assert_eq!(errno(decode_hello(&newer, "s0", CHUNK)), Errno::EPROTO);

    assert_eq!(decode_welcome(&encode_welcome(0)), Ok(()));
    assert_eq!(
        decode_welcome(&encode_welcome(libc::EINVAL)),
        Err(Errno::EINVAL)
    );
    assert_eq!(decode_welcome(&[0; WELCOME_LEN]), Err(Errno::EPROTO));
}
