//! The lean RPC end to end on loopback: a real `serve_connection` behind a
//! real listener, a real `LeanClient`, and a small dispatcher standing in for
//! the services (the real services are tested through the server crate).

use super::server::{serve_connection, Dispatch};
use super::{LeanClient, RequestHeader, HEADER_LEN};
use crate::pb;
use bytes::Bytes;
use prost::Message;
use sfs_global::access::Caller;
use sfs_global::{Errno, SfsError, SfsResult};
use std::future::Future;
use std::pin::Pin;
use std::sync::atomic::{AtomicUsize, Ordering};
use std::sync::Arc;
use std::time::{Duration, Instant};
use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::net::{TcpListener, TcpStream};
use tokio::sync::watch;

/// The job secret of these tests' servers and clients.
fn secret() -> Arc<sfs_global::secret::Secret> {
    Arc::new(sfs_global::secret::Secret::from_bytes([7; 32]))
}

const STAT: u16 = 2;
const REMOVE: u16 = 3;
const SLOW: u16 = 12;

/// Answers `STAT` with an entry whose size is the path's length and whose
/// uid and gid are the caller's (u32::MAX without one), `REMOVE`
/// with ENOENT, `SLOW` after 300 ms; anything else is ENOSYS.
struct Echo {
    calls: AtomicUsize,
}

impl Dispatch for Echo {
    fn call(
        &self,
        method: u16,
        caller: Option<Caller>,
        body: Bytes,
    ) -> Pin<Box<dyn Future<Output = SfsResult<Vec<u8>>> + Send + '_>> {
        self.calls.fetch_add(1, Ordering::Relaxed);
        Box::pin(async move {
            match method {
                STAT => {
                    let req = pb::PathRequest::decode(body)
                        .map_err(|e| SfsError::invalid(e.to_string()))?;
                    Ok(pb::Entry {
                        size: req.path.len() as u64,
                        link_target: req.path,
                        uid: caller.as_ref().map_or(u32::MAX, |c| c.uid),
                        gid: caller.as_ref().map_or(u32::MAX, |c| c.gid),
                        ..Default::default()
                    }
                    .encode_to_vec())
                }
                REMOVE => Err(SfsError::not_found("/gone")),
                SLOW => {
                    tokio::time::sleep(Duration::from_millis(300)).await;
                    Ok(pb::Empty {}.encode_to_vec())
                }
                other => Err(SfsError::new(Errno::ENOSYS, format!("method {other}"))),
            }
        })
    }
}

/// A listener serving [`Echo`] until dropped (then every connection is told
/// to stop, as a server's shutdown does).
struct TestServer {
    addr: std::net::SocketAddr,
    echo: Arc<Echo>,
    stop: watch::Sender<bool>,
    accept: tokio::task::JoinHandle<()>,
}

impl TestServer {
    async fn start() -> TestServer {
        Self::start_on(TcpListener::bind("127.0.0.1:0").await.unwrap()).await
    }

    async fn start_on(listener: TcpListener) -> TestServer {
        let addr = listener.local_addr().unwrap();
        let echo = Arc::new(Echo {
            calls: AtomicUsize::new(0),
        });
        let (stop, stopped) = watch::channel(false);
        let dispatch: Arc<dyn Dispatch> = echo.clone();
        let accept = tokio::spawn(async move {
            while let Ok((mut stream, _)) = listener.accept().await {
                let mut stopped = stopped.clone();
                let dispatch = dispatch.clone();
                tokio::spawn(async move {
                    if crate::auth::server(&mut stream, &secret(), crate::auth::Purpose::Rpc)
                        .await
                        .is_err()
                    {
                        return;
                    }
                    let budget = super::MemoryBudget::new(256 << 20, 32 << 20);
                    serve_connection(
                        stream,
                        dispatch,
                        budget,
                        Duration::from_micros(20),
                        async move {
                            let _ = stopped.wait_for(|s| *s).await;
                        },
                    )
                    .await
                });
            }
        });
        TestServer {
            addr,
            echo,
            stop,
            accept,
        }
    }

    fn client(&self, timeout: Duration) -> LeanClient {
        LeanClient::new(
            "t0",
            &self.addr.to_string(),
            secret(),
            Duration::from_secs(2),
            timeout,
        )
    }

    /// Stops accepting and tells every connection to finish.
    fn shut_down(self) -> std::net::SocketAddr {
        self.accept.abort();
        let _ = self.stop.send(true);
        self.addr
    }
}

fn stat(path: &str) -> pb::PathRequest {
    pb::PathRequest {
        path: path.into(),
        ..Default::default()
    }
}

#[tokio::test]
async fn many_calls_in_flight_each_get_their_own_answer() {
    let server = TestServer::start().await;
    let client = server.client(Duration::from_secs(5));
    let calls = (0..500).map(|i| {
        let client = &client;
        async move {
            let path = format!("/{}", "x".repeat(i % 97));
            let entry: pb::Entry = client.call(STAT, true, &stat(&path)).await.unwrap();
            assert_eq!(entry.link_target, path);
            assert_eq!(entry.size, path.len() as u64);
        }
    });
    futures::future::join_all(calls).await;
    assert_eq!(server.echo.calls.load(Ordering::Relaxed), 500);
}

#[tokio::test]
async fn refusals_carry_the_errno_and_the_message() {
    let server = TestServer::start().await;
    let client = server.client(Duration::from_secs(5));
    let e = client
        .call::<_, pb::Entry>(REMOVE, true, &stat("/gone"))
        .await
        .unwrap_err();
    assert_eq!(e.errno, Errno::ENOENT);
    assert!(e.message.contains("/gone"), "{}", e.message);
    let e = client
        .call::<_, pb::Empty>(999, true, &pb::Empty {})
        .await
        .unwrap_err();
    assert_eq!(e.errno, Errno::ENOSYS);
    // The connection survives refusals.
    let entry: pb::Entry = client.call(STAT, true, &stat("/ok")).await.unwrap();
    assert_eq!(entry.size, 3);
}

#[tokio::test]
async fn a_slow_call_does_not_hold_up_quick_ones_behind_it() {
    let server = TestServer::start().await;
    let client = server.client(Duration::from_secs(5));
    let slow = client.call::<_, pb::Empty>(SLOW, true, &pb::Empty {});
    let quick = async {
        let started = Instant::now();
        for _ in 0..20 {
            let _: pb::Entry = client.call(STAT, true, &stat("/q")).await.unwrap();
        }
        started.elapsed()
    };
    let (slow, quick) = tokio::join!(slow, quick);
    slow.unwrap();
    assert!(
        quick < Duration::from_millis(250),
        "quick calls took {quick:?}"
    );
}

#[tokio::test]
async fn an_unanswered_call_times_out_and_the_connection_stays_usable() {
    let server = TestServer::start().await;
    let client = server.client(Duration::from_millis(100));
    let e = client
        .call::<_, pb::Empty>(SLOW, true, &pb::Empty {})
        .await
        .unwrap_err();
    assert_eq!(e.errno, Errno::ETIMEDOUT);
    // The late answer arrives on the same connection and is dropped.
    tokio::time::sleep(Duration::from_millis(300)).await;
    let entry: pb::Entry = client.call(STAT, true, &stat("/after")).await.unwrap();
    assert_eq!(entry.size, 6);
}

#[tokio::test]
async fn a_vanished_server_is_eio_at_once_and_a_returning_one_is_used_again() {
    let server = TestServer::start().await;
    let client = server.client(Duration::from_secs(5));
    let _: pb::Entry = client.call(STAT, true, &stat("/a")).await.unwrap();
    // A call in flight when the server goes away fails at once, not at the
    // timeout.
    let slow = client.call::<_, pb::Empty>(SLOW, true, &pb::Empty {});
    let addr = {
        let server = server;
        let kill = async {
            tokio::time::sleep(Duration::from_millis(50)).await;
            server.shut_down()
        };
        let started = Instant::now();
        let (slow, addr) = tokio::join!(slow, kill);
        // A stopping server answers what it read: the slow call completes.
        slow.unwrap();
        assert!(started.elapsed() < Duration::from_secs(2));
        addr
    };
    tokio::time::sleep(Duration::from_millis(50)).await;
    let e = client
        .call::<_, pb::Entry>(STAT, true, &stat("/b"))
        .await
        .unwrap_err();
    assert_eq!(e.errno, Errno::EIO, "{e}");
    assert!(e.message.contains("server t0"), "{}", e.message);
    // The server comes back on the same port: the next call reconnects.
    let listener = TcpListener::bind(addr).await.unwrap();
    let _server = TestServer::start_on(listener).await;
    let entry: pb::Entry = client.call(STAT, true, &stat("/back")).await.unwrap();
    assert_eq!(entry.size, 5);
}

/// A raw connection that has proved the secret (a peer of the job that
/// then breaks the framing).
async fn authenticated(addr: std::net::SocketAddr) -> TcpStream {
    let mut raw = TcpStream::connect(addr).await.unwrap();
    crate::auth::client(&mut raw, &secret(), crate::auth::Purpose::Rpc, "t0")
        .await
        .unwrap();
    raw
}

#[tokio::test]
async fn hostile_frames_close_only_their_own_connection() {
    let server = TestServer::start().await;
    let client = server.client(Duration::from_secs(5));
    let _: pb::Entry = client.call(STAT, true, &stat("/a")).await.unwrap();

    for garbage in [
        // A wrong magic.
        b"SFSX0000000000000000".to_vec(),
        // A body larger than any message.
        RequestHeader {
            method: STAT,
            flags: 0,
            request_id: 1,
            body_len: u32::MAX,
        }
        .encode()
        .to_vec(),
    ] {
        let mut raw = authenticated(server.addr).await;
        raw.write_all(&garbage).await.unwrap();
        let mut answer = Vec::new();
        let read = tokio::time::timeout(Duration::from_secs(5), raw.read_to_end(&mut answer))
            .await
            .expect("the server closes a hostile connection");
        assert!(read.is_ok() || answer.is_empty());
        assert!(answer.len() < HEADER_LEN, "no answer to garbage");
    }
    // An undecodable body is a refusal, not a dropped connection.
    let mut raw = authenticated(server.addr).await;
    let mut frame = RequestHeader {
        method: STAT,
        flags: 0,
        request_id: 9,
        body_len: 3,
    }
    .encode()
    .to_vec();
    frame.extend_from_slice(&[0xff, 0xff, 0xff]);
    raw.write_all(&frame).await.unwrap();
    let mut header = [0u8; HEADER_LEN];
    raw.read_exact(&mut header).await.unwrap();
    let header = super::ResponseHeader::decode(&header).unwrap();
    assert_eq!((header.request_id, header.status), (9, Errno::EINVAL.0));

    // Everyone else is still served.
    let entry: pb::Entry = client.call(STAT, true, &stat("/still")).await.unwrap();
    assert_eq!(entry.size, 6);
}

#[tokio::test]
async fn answers_also_arrive_by_polling() {
    // The server runs on a runtime of its own, so that this test's runtime
    // (and the client's reader task on it) never runs while it polls.
    let (addr_tx, addr_rx) = std::sync::mpsc::channel();
    std::thread::spawn(move || {
        let runtime = tokio::runtime::Runtime::new().unwrap();
        runtime.block_on(async {
            let server = TestServer::start().await;
            addr_tx.send(server.addr).unwrap();
            std::future::pending::<()>().await;
        });
    });
    let addr = addr_rx.recv().unwrap();
    let client = LeanClient::new(
        "t0",
        &addr.to_string(),
        secret(),
        Duration::from_secs(2),
        Duration::from_secs(5),
    );
    let _: pb::Entry = client.call(STAT, true, &stat("/first")).await.unwrap();
    assert!(!client.waiting() && !client.poll_answers());
    let request = stat("/polled");
    let call = client.call::<_, pb::Entry>(STAT, true, &request);
    let mut call = std::pin::pin!(call);
    let waker = futures::task::noop_waker();
    let mut cx = std::task::Context::from_waker(&waker);
    assert!(
        call.as_mut().poll(&mut cx).is_pending(),
        "sent, not answered yet"
    );
    assert!(client.waiting());
    let started = Instant::now();
    while !client.poll_answers() {
        assert!(started.elapsed() < Duration::from_secs(5), "no answer");
        std::thread::sleep(Duration::from_micros(50));
    }
    assert!(!client.waiting());
    match call.as_mut().poll(&mut cx) {
        std::task::Poll::Ready(Ok(entry)) => assert_eq!(entry.size, 7),
        other => panic!("not answered: {other:?}"),
    }
}

/// A client that closes its side while the connection is polling for its
/// next request (the spin after an answer) ends the connection cleanly.
#[tokio::test]
async fn a_client_closing_while_the_server_polls_ends_the_connection_cleanly() {
    let listener = TcpListener::bind("127.0.0.1:0").await.unwrap();
    let addr = listener.local_addr().unwrap();
    let dispatch: Arc<dyn Dispatch> = Arc::new(Echo {
        calls: AtomicUsize::new(0),
    });
    // The client runs on a thread of its own: the server's poll holds this
    // runtime's only thread.
    let client = std::thread::spawn(move || {
        use std::io::{Read, Write};
        let mut raw = std::net::TcpStream::connect(addr).unwrap();
        let body = stat("/a").encode_to_vec();
        let mut frame = RequestHeader {
            method: STAT,
            flags: 0,
            request_id: 1,
            body_len: body.len() as u32,
        }
        .encode()
        .to_vec();
        frame.extend_from_slice(&body);
        raw.write_all(&frame).unwrap();
        let mut header = [0u8; HEADER_LEN];
        raw.read_exact(&mut header).unwrap();
        let header = super::ResponseHeader::decode(&header).unwrap();
        assert_eq!((header.request_id, header.status), (1, 0));
        let mut answer = vec![0u8; header.body_len as usize];
        raw.read_exact(&mut answer).unwrap();
        raw.shutdown(std::net::Shutdown::Write).unwrap();
        Instant::now()
    });
    let (stream, _) = listener.accept().await.unwrap();
    // A long poll window, so that the close arrives inside it.
    let served = tokio::spawn(serve_connection(
        stream,
        dispatch,
        super::MemoryBudget::new(256 << 20, 32 << 20),
        Duration::from_secs(5),
        std::future::pending(),
    ));
    tokio::time::timeout(Duration::from_secs(10), served)
        .await
        .expect("the connection ends after the client closes")
        .expect("the connection task does not panic");
    let closed = client.join().unwrap();
    assert!(
        closed.elapsed() < Duration::from_secs(4),
        "the server saw the close while it polled"
    );
}

#[tokio::test]
async fn each_request_carries_the_caller_of_its_time() {
    let server = TestServer::start().await;
    let source = Arc::new(crate::caller::CallerSource::default());
    let client = server
        .client(Duration::from_secs(5))
        .with_caller(source.clone());
    let me = crate::caller::of_process();
    let entry: pb::Entry = client.call(STAT, true, &stat("/a")).await.unwrap();
    assert_eq!((entry.uid, entry.gid), (me.uid, me.gid));
    // A change of credentials counts from the next request on, on the
    // same connection.
    source.set(Some(Caller {
        uid: 1234,
        gid: 567,
        groups: vec![8, 9],
    }));
    let entry: pb::Entry = client.call(STAT, true, &stat("/a")).await.unwrap();
    assert_eq!((entry.uid, entry.gid), (1234, 567));
    assert_eq!(entry.size, 2, "the body after the caller block is intact");
    let entry: pb::Entry = client.call(STAT, false, &stat("/a")).await.unwrap();
    assert_eq!((entry.uid, entry.gid), (u32::MAX, u32::MAX));

    // A caller block cut short is that request's refusal.
    let mut raw = authenticated(server.addr).await;
    let mut frame = RequestHeader {
        method: STAT,
        flags: crate::caller::FLAG_CALLER,
        request_id: 5,
        body_len: 4,
    }
    .encode()
    .to_vec();
    frame.extend_from_slice(&[1, 2, 3, 4]);
    raw.write_all(&frame).await.unwrap();
    let mut header = [0u8; HEADER_LEN];
    raw.read_exact(&mut header).await.unwrap();
    let header = super::ResponseHeader::decode(&header).unwrap();
    assert_eq!((header.request_id, header.status), (5, Errno::EPROTO.0));
    server.shut_down();
}
