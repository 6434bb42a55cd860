//! A whole server on loopback, driven through its real gRPC and data ports.

use super::{own_entry, run_until, PreBound, ServerOptions};
use sfs_global::config::{Config, TransportKind};
use sfs_global::hostfile::Hostfile;
use sfs_global::secret::Secret;
use sfs_global::{Errno, FileId, PROTOCOL_VERSION};
use sfs_rdma::{ChunkRef, DataChannel};
use sfs_rpc::error_from_status;
use sfs_rpc::lean::LeanClient;
use sfs_rpc::pb::{self, control_client::ControlClient, metadata_client::MetadataClient};
use std::path::PathBuf;
use std::sync::Arc;
use std::time::Duration;
use tokio::task::JoinHandle;
use tonic::transport::Channel;

/// A server running in this process on a free loopback port, with its
/// directories in a temporary directory removed on drop (also on failure).
struct TestServer {
    _dir: tempfile::TempDir,
    options: ServerOptions,
    endpoint: String,
    ready_file: PathBuf,
    task: JoinHandle<anyhow::Result<()>>,
}

/// The job secret of these tests' servers and clients.
fn secret() -> Arc<Secret> {
    Arc::new(Secret::from_bytes([7; 32]))
}

impl TestServer {
    async fn start() -> TestServer {
        let dir = tempfile::tempdir().unwrap();
        let listener = std::net::TcpListener::bind("127.0.0.1:0").unwrap();
        let port = listener.local_addr().unwrap().port();
        let hostfile = Hostfile::parse(&format!("s0 127.0.0.1:{port}\n"), "test hostfile").unwrap();
        let config = Config {
            rootdir: dir.path().join("root").display().to_string(),
            transport: TransportKind::Tcp,
            data_port_offset: 0,
            readdir_page_size: 3,
            ..Config::default()
        };
        let options = ServerOptions {
            config: config.clone(),
            hostfile,
            server_name: Some("s0".into()),
            secret: Some((*secret()).clone()),
            restore: false,
            listener: Some(PreBound::new(listener)),
        };
        let task = tokio::spawn(run_until(options.clone(), std::future::pending()));
        let ready_file = sfs_global::ready::Ready::path(&config, "s0");
        let server = TestServer {
            _dir: dir,
            options,
            endpoint: format!("http://127.0.0.1:{port}"),
            ready_file,
            task,
        };
        server.wait_ready().await;
        server
    }

    /// Waits for the ready file (the server's own readiness signal), failing
    /// early with the server's error if it stops first.
    async fn wait_ready(&self) {
        for _ in 0..2000 {
            if self.ready_file.exists() {
                return;
            }
            assert!(
                !self.task.is_finished(),
                "server stopped before it was ready"
            );
            tokio::time::sleep(Duration::from_millis(10)).await;
        }
        panic!("server not ready after 20 s");
    }

    /// A gRPC channel that proves `secret` on connecting.
    fn channel_with(&self, secret: Arc<Secret>) -> Channel {
        let endpoint = tonic::transport::Endpoint::from_shared(self.endpoint.clone()).unwrap();
        sfs_rpc::auth::grpc_channel(
            &endpoint,
            self.endpoint.trim_start_matches("http://").to_string(),
            secret,
            "server s0".into(),
            Duration::from_secs(5),
        )
    }

    async fn metadata(&self) -> MetadataClient<Channel> {
        MetadataClient::new(self.channel_with(secret()))
    }

    async fn control(&self) -> ControlClient<Channel> {
        ControlClient::new(self.channel_with(secret()))
    }
}

fn errno<T: std::fmt::Debug>(result: Result<T, tonic::Status>) -> Errno {
    error_from_status(&result.unwrap_err()).errno
}

fn create(path: &str, mode: u32, exclusive: bool) -> pb::CreateRequest {
    pb::CreateRequest {
        path: path.into(),
        mode,
        exclusive,
        ..Default::default()
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn serves_metadata_and_data_then_shuts_down_cleanly() {
    let server = TestServer::start().await;
    let mut control = server.control().await;
    let mut meta = server.metadata().await;

    let hello = control
        .hello(pb::HelloRequest {
            protocol_version: PROTOCOL_VERSION,
        })
        .await
        .unwrap()
        .into_inner();
    assert_eq!(
        (
            hello.server_name.as_str(),
            hello.server_index,
            hello.server_count
        ),
        ("s0", 0, 1)
    );
    assert_eq!(hello.data_transport, "tcp");
    assert!(
        hello.data_endpoint.starts_with("127.0.0.1:"),
        "{}",
        hello.data_endpoint
    );
    let old_client = control
        .hello(pb::HelloRequest {
            protocol_version: 999,
        })
        .await;
    assert_eq!(errno(old_client), Errno::EPROTO);

    let root = meta
        .stat(pb::PathRequest {
            path: "/".into(),
            ..Default::default()
        })
        .await
        .unwrap()
        .into_inner();
    assert_eq!(root.mode & libc::S_IFMT, libc::S_IFDIR);

    let file_mode = libc::S_IFREG | 0o644;
    let made = meta
        .create(create("/f", file_mode, true))
        .await
        .unwrap()
        .into_inner();
    assert!(made.created);
    let file = made.entry.unwrap();
    assert_ne!(file.file_id(), FileId(0));
    assert_eq!(
        errno(meta.create(create("/f", file_mode, true)).await),
        Errno::EEXIST
    );
    let f = meta
        .grow_size(pb::GrowSizeRequest {
            path: "/f".into(),
            end: 100,
            ..Default::default()
        })
        .await
        .unwrap();
    drop(f);
    // A caller holding another file open under this path gets ESTALE and
    // changes nothing; the right id passes.
    let id = meta
        .stat(pb::PathRequest {
            path: "/f".into(),
            ..Default::default()
        })
        .await
        .unwrap()
        .into_inner();
    let wrong = pb::GrowSizeRequest {
        path: "/f".into(),
        end: 5000,
        check_id: true,
        id_hi: id.id_hi,
        id_lo: id.id_lo ^ 1,
    };
    assert_eq!(errno(meta.grow_size(wrong).await), Errno::ESTALE);
    let wrong = pb::ReserveAppendRequest {
        path: "/f".into(),
        len: 10,
        check_id: true,
        id_hi: id.id_hi ^ 1,
        id_lo: id.id_lo,
    };
    assert_eq!(errno(meta.reserve_append(wrong).await), Errno::ESTALE);
    let wrong = pb::PathRequest {
        path: "/f".into(),
        check_id: true,
        id_hi: id.id_hi,
        id_lo: id.id_lo ^ 1,
        ..Default::default()
    };
    assert_eq!(errno(meta.stat(wrong).await), Errno::ESTALE);
    let right = pb::PathRequest {
        path: "/f".into(),
        check_id: true,
        id_hi: id.id_hi,
        id_lo: id.id_lo,
        ..Default::default()
    };
    assert_eq!(meta.stat(right).await.unwrap().into_inner().size, 100);
    assert_eq!(
        meta.stat(pb::PathRequest {
            path: "/f".into(),
            ..Default::default()
        })
        .await
        .unwrap()
        .into_inner()
        .size,
        100
    );

    meta.create(create("/d", libc::S_IFDIR | 0o755, true))
        .await
        .unwrap();
    for i in 0..10 {
        meta.create(create(&format!("/d/x{i}"), file_mode, true))
            .await
            .unwrap();
    }
    let mut pages = meta
        .readdir(pb::ReaddirRequest {
            dir: "/d".into(),
            page_size: 1000,
        })
        .await
        .unwrap()
        .into_inner();
    let mut names = Vec::new();
    while let Some(page) = pages.message().await.unwrap() {
        assert!(
            page.entries.len() <= 3,
            "pages are capped by readdir_page_size"
        );
        names.extend(page.entries.into_iter().map(|e| e.name));
    }
    assert_eq!(names.len(), 10);
    let mut subtree = meta
        .list_subtree(pb::ReaddirRequest {
            dir: "/".into(),
            page_size: 0,
        })
        .await
        .unwrap()
        .into_inner();
    let mut below_root = 0;
    while let Some(page) = subtree.message().await.unwrap() {
        below_root += page.entries.len();
    }
    assert_eq!(below_root, 12);

    // Hostile and malformed requests get errnos, not panics.
    assert_eq!(
        errno(meta.create(create("../x", file_mode, false)).await),
        Errno::EINVAL
    );
    assert_eq!(
        errno(meta.create(create("a", file_mode, false)).await),
        Errno::EINVAL
    );
    assert_eq!(
        errno(meta.create(create("/a/../b", file_mode, false)).await),
        Errno::EINVAL
    );
    // A FIFO is an entry; a device only root makes (this caller is
    // nobody); a device number only a device has.
    let fifo = meta
        .create(create("/fifo", libc::S_IFIFO | 0o644, false))
        .await
        .unwrap()
        .into_inner();
    assert_eq!(fifo.entry.unwrap().mode, libc::S_IFIFO | 0o644);
    assert_eq!(
        errno(
            meta.create(create("/chr", libc::S_IFCHR | 0o644, false))
                .await
        ),
        Errno::EPERM
    );
    assert_eq!(
        errno(
            meta.create(pb::CreateRequest {
                rdev: 7,
                ..create("/f7", file_mode, false)
            })
            .await
        ),
        Errno::EINVAL
    );
    assert_eq!(
        errno(
            meta.create(create("/link", libc::S_IFLNK | 0o777, false))
                .await
        ),
        Errno::EINVAL
    );
    let huge = pb::GrowSizeRequest {
        path: "/f".into(),
        end: u64::MAX,
        ..Default::default()
    };
    assert_eq!(errno(meta.grow_size(huge).await), Errno::EFBIG);
    let huge = pb::TruncateRequest {
        path: "/f".into(),
        size: u64::MAX,
        ..Default::default()
    };
    assert_eq!(errno(meta.truncate(huge).await), Errno::EFBIG);
    let odd_kind = pb::RemoveRequest {
        path: "/f".into(),
        kind: 7,
        ..Default::default()
    };
    assert_eq!(errno(meta.remove(odd_kind).await), Errno::EINVAL);
    let no_entry = pb::PutEntryRequest {
        path: "/g".into(),
        entry: None,
        replace: false,
        ..Default::default()
    };
    assert_eq!(errno(meta.put_entry(no_entry).await), Errno::EINVAL);
    assert_eq!(
        errno(
            meta.stat(pb::PathRequest {
                path: "/missing".into(),
                ..Default::default()
            })
            .await
        ),
        Errno::ENOENT
    );
    let rmdir = pb::RemoveRequest {
        path: "/d".into(),
        kind: pb::RemoveKind::RemoveDirectory as i32,
        ..Default::default()
    };
    assert_eq!(errno(meta.remove(rmdir).await), Errno::ENOTEMPTY);

    // The data path serves chunks of the same store.
    let data_addr = hello.data_endpoint.parse().unwrap();
    let channel = sfs_rdma::tcp::TcpChannel::new(
        data_addr,
        secret(),
        1,
        Config::default().chunk_size,
        Duration::from_secs(5),
        Duration::from_secs(5),
    );
    let chunk = ChunkRef {
        id: file.file_id(),
        index: 0,
        offset: 10,
        len: 5,
    };
    channel.write_chunk(chunk, b"hello").await.unwrap();
    let mut buf = [0u8; 5];
    assert_eq!(channel.read_chunk(chunk, &mut buf).await.unwrap(), 5);
    assert_eq!(&buf, b"hello");
    meta.sync_metadata(pb::Empty {}).await.unwrap();

    let stats = control.stats(pb::Empty {}).await.unwrap().into_inner();
    assert_eq!(stats.chunk_bytes, 15);
    assert!(stats.requests > 20 && stats.entries > 0 && stats.capacity_bytes > 0);

    // A second server on the same directories is refused, naming the lock.
    let second = run_until(server.options.clone(), std::future::pending())
        .await
        .unwrap_err();
    let message = format!("{second:#}");
    assert!(
        message.contains("lock") && message.contains(&std::process::id().to_string()),
        "{message}"
    );

    control.shutdown(pb::Empty {}).await.unwrap();
    let outcome = tokio::time::timeout(Duration::from_secs(40), server.task).await;
    outcome.expect("server stops").unwrap().unwrap();
    assert!(
        !server.ready_file.exists(),
        "the ready file is removed on shutdown"
    );
}

/// `message` as a request of the caller `uid:gid` (the gRPC header).
fn as_user<T>(caller: &str, message: T) -> tonic::Request<T> {
    let mut request = tonic::Request::new(message);
    request
        .metadata_mut()
        .insert(sfs_rpc::caller::CALLER_HEADER, caller.parse().unwrap());
    request
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn grpc_requests_are_checked_against_their_caller() {
    let server = TestServer::start().await;
    let mut meta = server.metadata().await;
    let made = meta
        .create(as_user(
            "1000:1000",
            create("/own", libc::S_IFREG | 0o600, true),
        ))
        .await
        .unwrap()
        .into_inner();
    let entry = made.entry.unwrap();
    assert_eq!((entry.uid, entry.gid), (1000, 1000), "owned by the caller");
    let read = |caller: Option<&str>| {
        let message = pb::PathRequest {
            path: "/own".into(),
            access: sfs_global::access::MAY_READ,
            ..Default::default()
        };
        match caller {
            Some(c) => as_user(c, message),
            None => tonic::Request::new(message),
        }
    };
    meta.stat(read(Some("1000:1000"))).await.unwrap();
    meta.stat(read(Some("0:0"))).await.unwrap();
    assert_eq!(
        errno(meta.stat(read(Some("1001:1000:4,1000"))).await),
        Errno::EACCES
    );
    // Without a caller a request acts for nobody.
    assert_eq!(errno(meta.stat(read(None)).await), Errno::EACCES);
    let chmod = |caller| {
        as_user(
            caller,
            pb::SetAttrRequest {
                path: "/own".into(),
                mode: Some(0o666),
                ..Default::default()
            },
        )
    };
    assert_eq!(errno(meta.set_attr(chmod("1001:1000")).await), Errno::EPERM);
    let changed = meta
        .set_attr(chmod("1000:1000"))
        .await
        .unwrap()
        .into_inner();
    assert_eq!(changed.mode & 0o7777, 0o666);
    let truncate = |caller| {
        as_user(
            caller,
            pb::TruncateRequest {
                path: "/own".into(),
                size: 1,
                ..Default::default()
            },
        )
    };
    meta.truncate(truncate("1001:1001")).await.unwrap();
    let chmod_ro = as_user(
        "1000:1000",
        pb::SetAttrRequest {
            path: "/own".into(),
            mode: Some(0o444),
            ..Default::default()
        },
    );
    meta.set_attr(chmod_ro).await.unwrap();
    assert_eq!(
        errno(meta.truncate(truncate("1000:1000")).await),
        Errno::EACCES
    );
    let garbage = as_user("root", read(None).into_inner());
    assert_eq!(errno(meta.stat(garbage).await), Errno::EPROTO);
}

fn lean_create(path: &str, mode: u32, link_target: &str) -> pb::CreateRequest {
    pb::CreateRequest {
        path: path.into(),
        mode,
        exclusive: true,
        link_target: link_target.into(),
        check_parent: true,
        ..Default::default()
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn lean_and_grpc_share_the_port_and_answer_alike() {
    let server = TestServer::start().await;
    let address = server.endpoint.trim_start_matches("http://");
    let lean = LeanClient::new(
        "s0",
        address,
        secret(),
        Duration::from_secs(5),
        Duration::from_secs(5),
    );
    let mut meta = server.metadata().await;
    let hello = lean
        .hello(pb::HelloRequest {
            protocol_version: PROTOCOL_VERSION,
        })
        .await
        .unwrap();
    assert_eq!((hello.server_name.as_str(), hello.server_count), ("s0", 1));

    // The parent check on the server: one call creates, or refuses.
    let dir = libc::S_IFDIR | 0o755;
    let file = libc::S_IFREG | 0o644;
    let made = lean.create(lean_create("/p", dir, "")).await.unwrap();
    assert!(made.created && !made.parent_is_symlink);
    let e = lean
        .create(lean_create("/missing/x", file, ""))
        .await
        .unwrap_err();
    assert_eq!(e.errno, Errno::ENOENT, "{e}");
    lean.create(lean_create("/p/file", file, "")).await.unwrap();
    let e = lean
        .create(lean_create("/p/file/x", file, ""))
        .await
        .unwrap_err();
    assert_eq!(e.errno, Errno::ENOTDIR, "{e}");
    lean.create(lean_create("/l", libc::S_IFLNK | 0o777, "p"))
        .await
        .unwrap();
    let via_link = lean.create(lean_create("/l/x", file, "")).await.unwrap();
    assert!(via_link.parent_is_symlink && !via_link.created && via_link.entry.is_none());
    for refused in ["/missing/x", "/p/file/x", "/l/x"] {
        let found = meta
            .stat(pb::PathRequest {
                path: refused.into(),
                ..Default::default()
            })
            .await;
        assert_eq!(errno(found), Errno::ENOENT, "{refused} was not created");
    }

    // Paged listings agree over both protocols (pages capped at 3 entries).
    for i in 0..9 {
        lean.create(lean_create(&format!("/p/e{i}"), file, ""))
            .await
            .unwrap();
    }
    let mut over_lean = Vec::new();
    let mut over_grpc = Vec::new();
    let mut after = String::new();
    loop {
        let request = pb::ReaddirPageRequest {
            dir: "/p".into(),
            page_size: 100,
            after: after.clone(),
        };
        let page = lean.readdir_paged(request.clone()).await.unwrap();
        let twin = meta.readdir_paged(request).await.unwrap().into_inner();
        assert_eq!(page, twin);
        assert!(page.entries.len() <= 3);
        over_lean.extend(page.entries.iter().map(|e| e.name.clone()));
        over_grpc.extend(twin.entries.iter().map(|e| e.name.clone()));
        if !page.more {
            break;
        }
        after = page.entries.last().unwrap().name.clone();
    }
    assert_eq!(over_lean.len(), 10, "{over_lean:?}");
    assert_eq!(over_lean, over_grpc);
    let mut below_root = 0;
    let mut after = String::new();
    loop {
        let page = lean
            .list_subtree_paged(pb::ReaddirPageRequest {
                dir: "/".into(),
                page_size: 0,
                after,
            })
            .await
            .unwrap();
        below_root += page.entries.len();
        if !page.more {
            break;
        }
        after = page.entries.last().unwrap().path.clone();
    }
    assert_eq!(below_root, 12);
    let e = lean
        .list_subtree_paged(pb::ReaddirPageRequest {
            dir: "/".into(),
            page_size: 0,
            after: "../x".into(),
        })
        .await
        .unwrap_err();
    assert_eq!(e.errno, Errno::EINVAL);

    // Small pieces on the RPC connection: stored, read back (a hole reads
    // short), hostile ranges refused, and a size update or lookup carried
    // along for a file whose entry this server holds.
    let chunk_size = Config::default().chunk_size;
    let file_entry = lean
        .stat(pb::PathRequest {
            path: "/p/e0".into(),
            ..Default::default()
        })
        .await
        .unwrap();
    let range = |offset: u64, len: u64| pb::ChunkRange {
        id_hi: file_entry.id_hi,
        id_lo: file_entry.id_lo,
        index: 2,
        offset,
        len,
    };
    let read = |range: pb::ChunkRange| pb::ReadChunkRequest {
        range: Some(range),
        stat: None,
    };
    let grow_to = |end: u64| pb::GrowSizeRequest {
        path: "/p/e0".into(),
        end,
        check_id: true,
        id_hi: file_entry.id_hi,
        id_lo: file_entry.id_lo,
    };
    let piece_end = 2 * chunk_size + 105;
    lean.write_chunk(pb::WriteChunkRequest {
        range: Some(range(100, 5)),
        data: b"piece".to_vec(),
        grow: Some(grow_to(piece_end)),
    })
    .await
    .unwrap();
    let both = lean
        .read_chunk(pb::ReadChunkRequest {
            range: Some(range(100, 5)),
            stat: Some(pb::PathRequest {
                path: "/p/e0".into(),
                check_id: true,
                id_hi: file_entry.id_hi,
                id_lo: file_entry.id_lo,
                ..Default::default()
            }),
        })
        .await
        .unwrap();
    assert_eq!(both.data, b"piece");
    assert_eq!(
        both.entry.unwrap().size,
        piece_end,
        "the size grew with the piece"
    );
    assert_eq!(
        lean.read_chunk(read(range(102, 50))).await.unwrap().data,
        b"ece"
    );
    assert!(lean
        .read_chunk(read(range(4096, 10)))
        .await
        .unwrap()
        .data
        .is_empty());
    let stale = lean
        .write_chunk(pb::WriteChunkRequest {
            range: Some(range(0, 1)),
            data: b"x".to_vec(),
            grow: Some(pb::GrowSizeRequest {
                id_lo: file_entry.id_lo ^ 1,
                ..grow_to(1)
            }),
        })
        .await
        .unwrap_err();
    assert_eq!(stale.errno, Errno::ESTALE);
    for bad in [
        range(chunk_size - 2, 5),
        range(0, 0),
        pb::ChunkRange {
            index: u64::MAX,
            ..range(0, 1)
        },
    ] {
        assert_eq!(
            lean.read_chunk(read(bad)).await.unwrap_err().errno,
            Errno::EPROTO
        );
    }
    let short = lean
        .write_chunk(pb::WriteChunkRequest {
            range: Some(range(0, 10)),
            data: b"abc".to_vec(),
            grow: None,
        })
        .await
        .unwrap_err();
    assert_eq!(short.errno, Errno::EINVAL);
    let no_range = lean
        .write_chunk(pb::WriteChunkRequest {
            range: None,
            data: Vec::new(),
            grow: None,
        })
        .await
        .unwrap_err();
    assert_eq!(no_range.errno, Errno::EINVAL);

    // A connection speaking neither protocol is dropped; both keep serving.
    let mut garbage = tokio::net::TcpStream::connect(address).await.unwrap();
    tokio::io::AsyncWriteExt::write_all(&mut garbage, b"GARBAGE GARBAGE GARBAGE")
        .await
        .unwrap();
    let mut rest = Vec::new();
    let _ = tokio::time::timeout(
        Duration::from_secs(10),
        tokio::io::AsyncReadExt::read_to_end(&mut garbage, &mut rest),
    )
    .await
    .expect("the server closes a connection it cannot understand");
    lean.stat(pb::PathRequest {
        path: "/p".into(),
        ..Default::default()
    })
    .await
    .unwrap();
    meta.stat(pb::PathRequest {
        path: "/p".into(),
        ..Default::default()
    })
    .await
    .unwrap();

    // An idle lean connection does not hold up a shutdown.
    let started = std::time::Instant::now();
    lean.shutdown(pb::Empty {}).await.unwrap();
    drop(meta);
    let outcome = tokio::time::timeout(Duration::from_secs(20), server.task).await;
    outcome.expect("server stops").unwrap().unwrap();
    assert!(started.elapsed() < Duration::from_secs(10));
}

#[test]
fn several_local_entries_need_an_id() {
    let own = |hostfile: &Hostfile, name| {
        own_entry(hostfile, name, &sfs_rpc::locality::local_entries(hostfile))
    };
    let hostfile = Hostfile::parse("a 127.0.0.1:7001\nb 127.0.0.1:7002\n", "h").unwrap();
    let e = own(&hostfile, None).unwrap_err().to_string();
    assert!(e.contains("--id"), "{e}");
    assert_eq!(own(&hostfile, Some("b")).unwrap().index, 1);
    let e = own(&hostfile, Some("zz")).unwrap_err().to_string();
    assert!(e.contains("zz") && e.contains("a, b"), "{e}");
    let single = Hostfile::parse("only 127.0.0.1:7001\n", "h").unwrap();
    assert_eq!(own(&single, None).unwrap().name, "only");
    // Not on this machine (TEST-NET-1): no entry to pick without an id.
    let far = Hostfile::parse("x 192.0.2.1:7001\n", "h").unwrap();
    assert!(own(&far, None).unwrap_err().to_string().contains("--id"));
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn nothing_is_served_without_the_job_secret() {
    let server = TestServer::start().await;
    let address = server.endpoint.trim_start_matches("http://").to_string();
    let wrong = Arc::new(Secret::from_bytes([8; 32]));

    // A raw lean Shutdown frame, as an attacker would send it: refused
    // with a reason, and the server keeps running.
    let mut raw = tokio::net::TcpStream::connect(&address).await.unwrap();
    // Method 50 is Control.Shutdown; an empty body is its whole request.
    let mut frame = Vec::from(&b"SFSQ"[..]);
    frame.extend_from_slice(&50u16.to_le_bytes());
    frame.extend_from_slice(&0u16.to_le_bytes());
    frame.extend_from_slice(&1u64.to_le_bytes());
    frame.extend_from_slice(&0u32.to_le_bytes());
    tokio::io::AsyncWriteExt::write_all(&mut raw, &frame)
        .await
        .unwrap();
    let mut answer = Vec::new();
    tokio::time::timeout(
        Duration::from_secs(10),
        tokio::io::AsyncReadExt::read_to_end(&mut raw, &mut answer),
    )
    .await
    .expect("the server closes the connection")
    .unwrap();
    let answer = String::from_utf8_lossy(&answer);
    assert!(
        answer.starts_with("SFSN") && answer.contains("job secret"),
        "{answer:?}"
    );

    // Clients holding another secret: the lean RPC, gRPC and the data port.
    let lean = LeanClient::new(
        "s0",
        &address,
        wrong.clone(),
        Duration::from_secs(5),
        Duration::from_secs(5),
    );
    let e = lean
        .shutdown(pb::Empty {})
        .await
        .expect_err("shutdown with a wrong secret");
    assert_eq!(e.errno, Errno::EACCES, "{e}");
    let mut grpc = ControlClient::new(server.channel_with(wrong.clone()));
    grpc.shutdown(pb::Empty {})
        .await
        .expect_err("gRPC shutdown with a wrong secret");
    // tonic's own connector, which sends no handshake at all.
    let mut plain = ControlClient::new(
        tonic::transport::Endpoint::from_shared(server.endpoint.clone())
            .unwrap()
            .connect_lazy(),
    );
    plain
        .shutdown(pb::Empty {})
        .await
        .expect_err("gRPC without a handshake");
    let hello = server
        .control()
        .await
        .hello(pb::HelloRequest {
            protocol_version: PROTOCOL_VERSION,
        })
        .await
        .unwrap()
        .into_inner();
    let data = sfs_rdma::tcp::TcpChannel::new(
        hello.data_endpoint.parse().unwrap(),
        wrong,
        1,
        Config::default().chunk_size,
        Duration::from_secs(5),
        Duration::from_secs(5),
    );
    let chunk = ChunkRef {
        id: FileId(1),
        index: 0,
        offset: 0,
        len: 4,
    };
    let mut buf = [0u8; 4];
    let e = data.read_chunk(chunk, &mut buf).await.unwrap_err();
    assert_eq!(e.errno, Errno::EACCES, "{e}");

    // The server is still up and serves the job's clients.
    assert!(!server.task.is_finished());
    server
        .metadata()
        .await
        .stat(pb::PathRequest {
            path: "/".into(),
            ..Default::default()
        })
        .await
        .unwrap();

    // Its state is private: directories 0700, files 0600.
    use std::os::unix::fs::PermissionsExt;
    let root = PathBuf::from(&server.options.config.rootdir).join("s0");
    let mut checked = 0;
    let mut stack = vec![root];
    while let Some(dir) = stack.pop() {
        let mode = std::fs::metadata(&dir).unwrap().permissions().mode() & 0o777;
        assert_eq!(mode & 0o077, 0, "{} has mode {mode:o}", dir.display());
        for entry in std::fs::read_dir(&dir).unwrap() {
            let entry = entry.unwrap();
            let meta = entry.metadata().unwrap();
            if meta.is_dir() {
                stack.push(entry.path());
            } else if meta.is_file() {
                let mode = meta.permissions().mode() & 0o777;
                assert_eq!(
                    mode & 0o077,
                    0,
                    "{} has mode {mode:o}",
                    entry.path().display()
                );
                checked += 1;
            }
        }
    }
    assert!(checked >= 5, "only {checked} files looked at");
    server.control().await.shutdown(pb::Empty {}).await.unwrap();
    tokio::time::timeout(Duration::from_secs(20), server.task)
        .await
        .expect("server stops")
        .unwrap()
        .unwrap();
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_request_for_a_path_another_server_owns_is_refused() {
    // Server s0 of two; s1 is never started (its port only reserves a place).
    let dir = tempfile::tempdir().unwrap();
    let bind = || std::net::TcpListener::bind("127.0.0.1:0").unwrap();
    let (l0, l1) = (bind(), bind());
    let port = |l: &std::net::TcpListener| l.local_addr().unwrap().port();
    let (p0, p1) = (port(&l0), port(&l1));
    let hostfile = Hostfile::parse(
        &format!("s0 127.0.0.1:{p0}\ns1 127.0.0.1:{p1}\n"),
        "test hostfile",
    )
    .unwrap();
    let config = tcp_config(dir.path());
    let distributor = sfs_global::distributor::Distributor::new(2);
    let owned_by = |server: usize| {
        (0..)
            .map(|i| format!("/f{i}"))
            .find(|p| distributor.metadata_server(p) == server)
            .unwrap()
    };
    let (mine, theirs) = (owned_by(0), owned_by(1));
    let options = ServerOptions {
        config: config.clone(),
        hostfile,
        server_name: Some("s0".into()),
        secret: Some((*secret()).clone()),
        restore: false,
        listener: Some(PreBound::new(l0)),
    };
    let task = tokio::spawn(run_until(options, std::future::pending()));
    let ready = sfs_global::ready::Ready::path(&config, "s0");
    for _ in 0..2000 {
        if ready.exists() {
            break;
        }
        assert!(!task.is_finished(), "server stopped before it was ready");
        tokio::time::sleep(Duration::from_millis(10)).await;
    }
    let lean = LeanClient::new(
        "s0",
        &format!("127.0.0.1:{p0}"),
        secret(),
        Duration::from_secs(5),
        Duration::from_secs(5),
    );
    let create = |path: &str| pb::CreateRequest {
        path: path.into(),
        mode: libc::S_IFREG | 0o644,
        ..Default::default()
    };
    lean.create(create(&mine)).await.unwrap();
    let e = lean.create(create(&theirs)).await.unwrap_err();
    assert_eq!(e.errno, Errno::EREMOTE, "{e}");
    assert!(e.message.contains("does not own"), "{e}");
    let e = lean
        .stat(pb::PathRequest {
            path: theirs.clone(),
            ..Default::default()
        })
        .await
        .unwrap_err();
    assert_eq!(e.errno, Errno::EREMOTE, "{e}");
    lean.shutdown(pb::Empty {}).await.unwrap();
    tokio::time::timeout(Duration::from_secs(20), task)
        .await
        .expect("server stops")
        .unwrap()
        .unwrap();
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_listener_handed_over_on_another_address_is_refused() {
    let dir = tempfile::tempdir().unwrap();
    let bind = || std::net::TcpListener::bind("127.0.0.1:0").unwrap();
    let (listed, other) = (bind(), bind());
    let hostfile = Hostfile::parse(
        &format!("s0 {}\n", listed.local_addr().unwrap()),
        "test hostfile",
    )
    .unwrap();
    let config = tcp_config(dir.path());
    let other_addr = other.local_addr().unwrap();
    let options = ServerOptions {
        config,
        hostfile,
        server_name: Some("s0".into()),
        secret: Some((*secret()).clone()),
        restore: false,
        listener: Some(PreBound::new(other)),
    };
    let refused = run_until(options, std::future::pending())
        .await
        .unwrap_err();
    let message = format!("{refused:#}");
    assert!(
        message.contains(&format!(
            "bound to {other_addr}, not to its RPC address {}",
            listed.local_addr().unwrap()
        )),
        "{message}"
    );
}

/// A server's configuration in `dir`: TCP data, the data port picked by
/// the system.
fn tcp_config(dir: &std::path::Path) -> Config {
    Config {
        rootdir: dir.join("root").display().to_string(),
        transport: TransportKind::Tcp,
        data_port_offset: 0,
        ..Config::default()
    }
}
