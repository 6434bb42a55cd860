//! The `s3` back end against a real radosgw (`sfs_testkit::ceph`: started
//! by scripts/test.sh, or on first use).

use super::*;
use sfs_testkit::ceph::{ceph, unique_name};
use std::net::SocketAddr;
use std::time::Instant;
use tokio::net::{TcpListener, TcpStream};

/// Settings for the test bucket, under a prefix of this test's own, with
/// 1 MiB pieces (the suite's 3 MiB writes span pieces, its 64 KiB
/// concurrent writes share one).
fn settings() -> S3Settings {
    let ceph = ceph();
    S3Settings {
        endpoint: ceph.s3_endpoint.clone(),
        bucket: ceph.s3_bucket.clone(),
        prefix: unique_name("test"),
        region: "us-east-1".into(),
        piece_size: 1 << 20,
        timeout: Duration::from_secs(20),
        access_key: ceph.s3_access_key.clone(),
        secret_key: ceph.s3_secret_key.clone(),
        session_token: None,
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn s3_back_end_passes_the_conformance_suite() {
    let backend = S3Backend::open(settings()).await.unwrap();
    let started = Instant::now();
    super::super::conformance::run_all(&backend).await;
    eprintln!("conformance suite against s3: {:.1?}", started.elapsed());
    assert_eq!(backend.locks.in_use(), 0, "piece locks are released");
}

/// The keys under the test's prefix, with their sizes, sorted.
async fn keys(backend: &S3Backend) -> Vec<(String, u64)> {
    let metas: Vec<ObjectMeta> = backend
        .store
        .list(Some(&backend.root))
        .try_collect()
        .await
        .unwrap();
    let mut keys: Vec<(String, u64)> = metas
        .into_iter()
        .map(|m| {
            let key = m.location.as_ref();
            let inside = key.strip_prefix(backend.root.as_ref()).unwrap();
            (inside.trim_start_matches('/').to_string(), m.size)
        })
        .collect();
    keys.sort();
    keys
}

#[tokio::test]
async fn an_object_is_pieces_under_its_id_and_truncate_moves_the_end() {
    let backend = S3Backend::open(S3Settings {
        piece_size: 64 << 10,
        ..settings()
    })
    .await
    .unwrap();
    let id = FileId(0xab);
    let hex = id.to_hex();
    // Two whole pieces and half of a third, as a write-back of 160 KiB.
    backend.write(id, 0, &[7; 160 << 10]).await.unwrap();
    let piece = |i: u64, len: u64| (format!("{hex}/{i}"), len);
    assert_eq!(
        keys(&backend).await,
        vec![piece(0, 64 << 10), piece(1, 64 << 10), piece(2, 32 << 10)]
    );
    // Longer: the piece of the new last byte, zero-filled up to it; the
    // short piece before it stays short (its tail is a hole).
    backend.truncate(id, (5 << 16) + 10).await.unwrap();
    let created = (format!("{hex}/created"), 0);
    assert_eq!(
        keys(&backend).await,
        vec![
            piece(0, 64 << 10),
            piece(1, 64 << 10),
            piece(2, 32 << 10),
            piece(5, 10),
            created.clone()
        ]
    );
    assert_eq!(
        backend.extents(id).await.unwrap(),
        vec![0..160 << 10, 5 << 16..(5 << 16) + 10]
    );
    let tail = backend.read(id, 150 << 10, 1 << 20).await.unwrap();
    assert_eq!(tail.len(), (5 << 16) + 10 - (150 << 10));
    assert!(tail[..10 << 10].iter().all(|&b| b == 7));
    assert!(tail[10 << 10..].iter().all(|&b| b == 0));
    // Shorter: pieces past the end go, the piece of the new end is cut.
    backend.truncate(id, 70_000).await.unwrap();
    assert_eq!(
        keys(&backend).await,
        vec![piece(0, 64 << 10), piece(1, 70_000 - (64 << 10)), created]
    );
    // To zero: the object still exists, empty.
    backend.truncate(id, 0).await.unwrap();
    assert_eq!(
        backend.stat(id).await.unwrap(),
        Some(ObjectStat { size: 0 })
    );
    backend.delete(id).await.unwrap();
    assert!(keys(&backend).await.is_empty());
}

#[tokio::test]
async fn wrong_credentials_are_refused_at_open_naming_them() {
    let wrong = S3Settings {
        secret_key: "not-the-secret".into(),
        ..settings()
    };
    let e = S3Backend::open(wrong).await.err().expect("a wrong secret");
    assert_eq!(e.errno, Errno::EACCES, "{e}");
    assert!(e.message.contains("AWS_SECRET_ACCESS_KEY"), "{e}");
}

/// A TCP port on 127.0.0.1 that nothing listens on right now.
#[tokio::test]
async fn a_missing_bucket_or_endpoint_fails_open_naming_the_field() {
    let e = S3Backend::open(S3Settings {
        bucket: "no-such-bucket".into(),
        ..settings()
    })
    .await
    .err()
    .expect("a missing bucket");
    assert!(e.message.contains("backend.s3_bucket"), "{e}");

    let started = Instant::now();
    let e = S3Backend::open(S3Settings {
        endpoint: format!("http://127.0.0.1:{}", sfs_testkit::free_port()),
        timeout: Duration::from_secs(2),
        ..settings()
    })
    .await
    .err()
    .expect("nobody listening");
    assert_eq!(e.errno, Errno::EIO, "{e}");
    assert!(e.message.contains("backend.s3_endpoint"), "{e}");
    assert!(
        started.elapsed() < Duration::from_secs(10),
        "open gave up only after {:?}",
        started.elapsed()
    );
}

/// Forwards connections from `listener` to `upstream` until aborted;
/// aborting closes every forwarded connection too.
fn forward(listener: TcpListener, upstream: SocketAddr) -> tokio::task::JoinHandle<()> {
    tokio::spawn(async move {
        let mut connections = tokio::task::JoinSet::new();
        while let Ok((mut inbound, _)) = listener.accept().await {
            connections.spawn(async move {
                if let Ok(mut outbound) = TcpStream::connect(upstream).await {
                    let _ = tokio::io::copy_bidirectional(&mut inbound, &mut outbound).await;
                }
            });
        }
    })
}

#[tokio::test]
async fn a_store_that_disappears_fails_with_eio_and_works_when_it_returns() {
    // radosgw behind a forwarder of this test's own: stopping the forwarder
    // takes the store away from this back end only, not from other tests.
    let upstream: SocketAddr = ceph()
        .s3_endpoint
        .trim_start_matches("http://")
        .parse()
        .unwrap();
    let listener = TcpListener::bind("127.0.0.1:0").await.unwrap();
    let address = listener.local_addr().unwrap();
    let proxy = forward(listener, upstream);
    let backend = S3Backend::open(S3Settings {
        endpoint: format!("http://{address}"),
        timeout: Duration::from_secs(2),
        ..settings()
    })
    .await
    .unwrap();
    let id = FileId(0xd15a);
    backend.write(id, 0, b"before").await.unwrap();

    proxy.abort();
    let _ = proxy.await;
    let started = Instant::now();
    let e = backend.write(id, 6, b"while away").await.unwrap_err();
    assert_eq!(e.errno, Errno::EIO, "{e}");
    assert!(
        started.elapsed() < Duration::from_secs(15),
        "failed only after {:?}",
        started.elapsed()
    );

    let proxy = forward(TcpListener::bind(address).await.unwrap(), upstream);
    backend.write(id, 6, b" after").await.unwrap();
    assert_eq!(backend.read(id, 0, 100).await.unwrap(), b"before after");
    backend.delete(id).await.unwrap();
    proxy.abort();
}
