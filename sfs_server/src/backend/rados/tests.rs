//! The `rados` back end against a real Ceph cluster
//! (`sfs_testkit::ceph`: started by scripts/test.sh, or on first use).

use super::*;
use sfs_global::config::{BackendKind, Config};
use sfs_testkit::ceph::{ceph, unique_name};
use std::time::Instant;

/// Settings for the test cluster's pool, in a namespace of this test's own.
fn settings() -> RadosSettings {
    let ceph = ceph();
    RadosSettings {
        conf: ceph.conf.clone(),
        user: "admin".into(),
        pool: ceph.pool.clone(),
        namespace: unique_name("test"),
        timeout: Duration::from_secs(20),
    }
}

async fn open(settings: RadosSettings) -> SfsResult<RadosBackend> {
    super::super::off_the_runtime("test", move || RadosBackend::open(&settings)).await
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn rados_back_end_passes_the_conformance_suite() {
    let backend = open(settings()).await.unwrap();
    let started = Instant::now();
    super::super::conformance::run_all(&backend).await;
    eprintln!("conformance suite against rados: {:.1?}", started.elapsed());
}

#[tokio::test]
async fn namespaces_keep_jobs_apart_and_names_are_hex_ids() {
    let (mine, other) = (settings(), settings());
    let (mine, other) = (open(mine).await.unwrap(), open(other).await.unwrap());
    let id = FileId(0x00ab_0000_0000_0000_0000_0000_0000_0001);
    mine.write(id, 0, b"x").await.unwrap();
    assert_eq!(mine.list().await.unwrap(), vec![id]);
    assert!(other.list().await.unwrap().is_empty());
    assert_eq!(other.stat(id).await.unwrap(), None);
    // The RADOS object is the id's 32 hex digits.
    let names = mine.pool.list().unwrap();
    assert_eq!(names, vec!["00ab0000000000000000000000000001".to_string()]);
    mine.delete(id).await.unwrap();
}

#[tokio::test]
async fn a_cluster_that_cannot_be_used_fails_open_naming_the_field() {
    let dir = tempfile::tempdir().unwrap();
    let missing = RadosSettings {
        conf: dir.path().join("no-ceph.conf"),
        ..settings()
    };
    let e = open(missing).await.err().expect("a missing ceph.conf");
    assert!(e.message.contains("backend.rados_conf"), "{e}");

    let no_pool = RadosSettings {
        pool: "no-such-pool".into(),
        ..settings()
    };
    let e = open(no_pool).await.err().expect("a missing pool");
    assert_eq!(e.errno, Errno::ENOENT, "{e}");
    assert!(e.message.contains("backend.rados_pool"), "{e}");

    // A monitor address nobody listens on: the connect gives up after the
    // timeout instead of hanging.
    let port = std::net::TcpListener::bind("127.0.0.1:0")
        .unwrap()
        .local_addr()
        .unwrap()
        .port();
    let conf = dir.path().join("ceph.conf");
    std::fs::write(
        &conf,
        format!(
            "[global]\nmon host = v2:127.0.0.1:{port}\nauth client required = none\n\
             log file = {}/client.log\n",
            dir.path().display()
        ),
    )
    .unwrap();
    let unreachable = RadosSettings {
        conf,
        timeout: Duration::from_secs(2),
        ..settings()
    };
    let started = Instant::now();
    let e = open(unreachable).await.err().expect("no monitor");
    assert_eq!(e.errno, Errno::EIO, "{e}");
    assert!(e.message.contains("backend.rados_conf"), "{e}");
    assert!(
        started.elapsed() < Duration::from_secs(15),
        "open gave up only after {:?}",
        started.elapsed()
    );
}

#[tokio::test]
async fn a_server_opens_rados_from_its_config() {
    let ceph = ceph();
    let mut config = Config::default();
    config.backend.kind = BackendKind::Rados;
    config.backend.rados_conf = ceph.conf.display().to_string();
    config.backend.rados_pool = ceph.pool.clone();
    config.backend.rados_namespace = unique_name("config");
    config.validate().unwrap();
    let backend = super::super::open(&config).await.unwrap();
    assert_eq!(backend.kind(), "rados");
    assert!(backend.list().await.unwrap().is_empty());
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_cluster_that_disappears_fails_with_eio_and_works_when_it_returns() {
    // A cluster of this test's own: its only OSD is frozen (SIGSTOP) and
    // thawed, which the shared cluster's tests must not see.
    let private = sfs_testkit::ceph::PrivateCeph::start();
    let osds = private.pids("osd");
    assert_eq!(osds.len(), 1, "one OSD in {:?}", private.ceph.dir);
    let backend = open(RadosSettings {
        conf: private.ceph.conf.clone(),
        user: "admin".into(),
        pool: private.ceph.pool.clone(),
        namespace: unique_name("away"),
        timeout: Duration::from_secs(2),
    })
    .await
    .unwrap();
    let id = FileId(0xd15b);
    backend.write(id, 0, b"before").await.unwrap();

    let signal = |sig| {
        // SAFETY: kill(2) with a pid read from the cluster's pid file and a
        // valid signal number; it touches no memory of this process.
        let rc = unsafe { libc::kill(osds[0], sig) };
        assert_eq!(rc, 0, "kill({}, {sig})", osds[0]);
    };
    signal(libc::SIGSTOP);
    let started = Instant::now();
    let away = backend.write(id, 6, b"while away").await;
    let waited = started.elapsed();
    signal(libc::SIGCONT);
    let e = away.unwrap_err();
    assert_eq!(e.errno, Errno::EIO, "{e}");
    assert!(
        waited < Duration::from_secs(15),
        "failed only after {waited:?}"
    );

    // Back: the same handle works again (librados resends to the OSD).
    let deadline = Instant::now() + Duration::from_secs(30);
    loop {
        match backend.write(id, 6, b" after").await {
            Ok(()) => break,
            Err(e) if Instant::now() < deadline => {
                eprintln!("not back yet: {e}");
                tokio::time::sleep(Duration::from_millis(200)).await;
            }
            Err(e) => panic!("the cluster came back but writes still fail: {e}"),
        }
    }
    let back = backend.read(id, 0, 100).await.unwrap();
    assert_eq!(
        &back[..12],
        b"before after",
        "{:?}",
        String::from_utf8_lossy(&back)
    );
    backend.delete(id).await.unwrap();
}
