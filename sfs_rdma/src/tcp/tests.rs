use super::*;
use crate::memory::MemoryChunks;
use sfs_global::Errno;
use sfs_global::FileId;
use tokio::sync::oneshot;

/// The job secret of these tests' servers and clients.
fn secret() -> std::sync::Arc<sfs_global::secret::Secret> {
    std::sync::Arc::new(sfs_global::secret::Secret::from_bytes([7; 32]))
}

const CHUNK: u64 = 64 * 1024;

async fn start(
    store: Arc<MemoryChunks>,
) -> (
    SocketAddr,
    oneshot::Sender<()>,
    tokio::task::JoinHandle<std::io::Result<()>>,
) {
    start_with(store, ConnectionLimit::new(1024, "test server")).await
}

async fn start_with(
    store: Arc<MemoryChunks>,
    places: ConnectionLimit,
) -> (
    SocketAddr,
    oneshot::Sender<()>,
    tokio::task::JoinHandle<std::io::Result<()>>,
) {
    let listener = TcpListener::bind("127.0.0.1:0").await.unwrap();
    let addr = listener.local_addr().unwrap();
    let (stop_tx, stop_rx) = oneshot::channel::<()>();
    let task = tokio::spawn(serve(
        listener,
        store,
        secret(),
        CHUNK,
        MemoryLimits::from_config(&sfs_global::config::Config::default()),
        places,
        async move {
            let _ = stop_rx.await;
        },
    ));
    (addr, stop_tx, task)
}

fn chunk(index: u64, offset: u64, len: u64) -> ChunkRef {
    ChunkRef {
        id: FileId(77),
        index,
        offset,
        len,
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn many_requests_in_flight_round_trip() {
    let store = Arc::new(MemoryChunks::default());
    let (addr, stop, task) = start(store.clone()).await;
    let channel = Arc::new(TcpChannel::new(
        addr,
        secret(),
        2,
        CHUNK,
        Duration::from_secs(2),
        Duration::from_secs(5),
    ));
    let mut writes = JoinSet::new();
    for i in 0..64u64 {
        let channel = channel.clone();
        writes.spawn(async move {
            let data = vec![i as u8; CHUNK as usize];
            channel.write_chunk(chunk(i, 0, CHUNK), &data).await
        });
    }
    while let Some(r) = writes.join_next().await {
        r.unwrap().unwrap();
    }
    for i in 0..64u64 {
        let mut buf = vec![0xffu8; 100];
        let n = channel
            .read_chunk(chunk(i, 1000, 100), &mut buf)
            .await
            .unwrap();
        assert_eq!(n, 100);
        assert!(buf.iter().all(|&b| b == i as u8));
    }
    // A chunk never written reads as zero bytes held.
    let mut buf = vec![0u8; 10];
    assert_eq!(
        channel
            .read_chunk(chunk(999, 0, 10), &mut buf)
            .await
            .unwrap(),
        0
    );
    stop.send(()).unwrap();
    task.await.unwrap().unwrap();
}

#[tokio::test]
async fn server_errors_keep_their_errno() {
    let store = Arc::new(MemoryChunks::default());
    store.full.store(true, Ordering::SeqCst);
    let (addr, stop, _task) = start(store).await;
    let channel = TcpChannel::new(
        addr,
        secret(),
        1,
        CHUNK,
        Duration::from_secs(2),
        Duration::from_secs(5),
    );
    let e = channel
        .write_chunk(chunk(0, 0, 4), b"abcd")
        .await
        .unwrap_err();
    assert_eq!(e.errno, Errno::ENOSPC);
    // The connection stays usable after a refused request.
    let mut buf = [0u8; 4];
    assert_eq!(
        channel.read_chunk(chunk(0, 0, 4), &mut buf).await.unwrap(),
        0
    );
    let _ = stop.send(());
}

#[tokio::test]
async fn dead_server_gives_an_errno_not_a_hang() {
    // Nothing listens here (bound, then closed).
    let addr = TcpListener::bind("127.0.0.1:0")
        .await
        .unwrap()
        .local_addr()
        .unwrap();
    let channel = TcpChannel::new(
        addr,
        secret(),
        1,
        CHUNK,
        Duration::from_secs(2),
        Duration::from_secs(2),
    );
    let e = channel.write_chunk(chunk(0, 0, 1), b"x").await.unwrap_err();
    assert_eq!(e.errno, Errno::EIO);

    // A server that accepts but never answers: ETIMEDOUT after the timeout.
    let silent = TcpListener::bind("127.0.0.1:0").await.unwrap();
    let addr = silent.local_addr().unwrap();
    let channel = TcpChannel::new(
        addr,
        secret(),
        1,
        CHUNK,
        Duration::from_secs(2),
        Duration::from_millis(300),
    );
    let e = channel.write_chunk(chunk(0, 0, 1), b"x").await.unwrap_err();
    assert_eq!(e.errno, Errno::ETIMEDOUT);

    // A server whose connection drops mid-request: EIO at once, then reconnect.
    let store = Arc::new(MemoryChunks::default());
    let (addr, stop, task) = start(store).await;
    let channel = TcpChannel::new(
        addr,
        secret(),
        1,
        CHUNK,
        Duration::from_secs(2),
        Duration::from_secs(5),
    );
    channel.write_chunk(chunk(0, 0, 1), b"x").await.unwrap();
    stop.send(()).unwrap();
    task.await.unwrap().unwrap();
    let e = channel.write_chunk(chunk(0, 0, 1), b"x").await.unwrap_err();
    assert!(e.errno == Errno::EIO, "{e}");
}

#[tokio::test]
async fn hostile_frames_drop_the_connection_only() {
    let store = Arc::new(MemoryChunks::default());
    let (addr, stop, _task) = start(store).await;
    let mut raw = TcpStream::connect(addr).await.unwrap();
    // A peer holding the secret that then breaks the protocol.
    auth::client(&mut raw, &secret(), Purpose::Data, "test server")
        .await
        .unwrap();
    let mut bad = RequestHeader {
        op: Op::Write,
        request_id: 1,
        chunk: chunk(0, 0, 1),
    }
    .encode();
    bad[48..56].copy_from_slice(&u64::MAX.to_le_bytes());
    raw.write_all(&bad).await.unwrap();
    let mut buf = [0u8; 1];
    assert_eq!(
        raw.read(&mut buf).await.unwrap(),
        0,
        "server closes the connection"
    );
    // The server still serves others.
    let channel = TcpChannel::new(
        addr,
        secret(),
        1,
        CHUNK,
        Duration::from_secs(2),
        Duration::from_secs(5),
    );
    channel.write_chunk(chunk(0, 0, 1), b"y").await.unwrap();
    let _ = stop.send(());
}

#[tokio::test]
async fn past_the_connection_limit_a_client_is_told_and_places_come_back() {
    let store = Arc::new(MemoryChunks::default());
    let (addr, stop, _task) = start_with(store, ConnectionLimit::new(1, "s9")).await;
    let key = secret();
    let connect = || {
        auth::connect_tcp(
            addr,
            &key,
            Purpose::Data,
            "data server",
            Duration::from_secs(5),
        )
    };
    let first = connect().await.unwrap();
    let e = connect().await.unwrap_err();
    assert!(
        e.message.contains("server s9 has 1 connections open")
            && e.message.contains("max_connections"),
        "{e}"
    );
    // Once the first connection closes, its place is free for the next.
    drop(first);
    let deadline = std::time::Instant::now() + Duration::from_secs(5);
    loop {
        match connect().await {
            Ok(_) => break,
            Err(e) if std::time::Instant::now() < deadline => {
                assert!(e.message.contains("max_connections"), "{e}");
                tokio::time::sleep(Duration::from_millis(20)).await;
            }
            Err(e) => panic!("the place never came back: {e}"),
        }
    }
    let _ = stop.send(());
}
