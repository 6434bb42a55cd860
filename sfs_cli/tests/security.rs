//! The job secret against a second user of the machine (docs/security.md):
//! servers started by root, and another uid that can read the hostfile and
//! reach every port but not the secret file.

mod common;

use common::{describe as text, Cluster, SFS};
use std::os::unix::fs::PermissionsExt;
use std::path::Path;
use std::process::{Command, Output, Stdio};
use std::time::Duration;

/// The uid and gid the second user runs as (`nobody` on Debian).
const OTHER: &str = "65534";

/// Runs `sfs` as the other user (setpriv drops root), with `env` added.
fn sfs_as_other(sfs: &Path, cluster: &Cluster, env: &[(&str, &str)], args: &[&str]) -> Output {
    let mut command = Command::new("setpriv");
    command
        .args(["--reuid", OTHER, "--regid", OTHER, "--clear-groups", "--"])
        .arg(sfs)
        .arg("--config")
        .arg(&cluster.config_path)
        .arg("--hostfile")
        .arg(&cluster.hostfile_path)
        .args(args)
        .env_remove("SFS_SECRET")
        .env_remove("SFS_SECRET_FILE")
        .stdin(Stdio::null());
    for (k, v) in env {
        command.env(k, v);
    }
    command.output().expect("running setpriv")
}

#[test]
fn another_user_can_neither_read_nor_stop_the_jobs_servers() {
    if !rustix::process::geteuid().is_root() {
        eprintln!("skipped: needs root to run a second uid (CI runs as root)");
        return;
    }
    let cluster = Cluster::start(2);
    let put = cluster.sfs(&["put", "/etc/hostname", "/private"]);
    assert!(put.status.success(), "{}", text(&put));

    // Everything but the secret is open to the other user: the directory,
    // the hostfile, the config and a copy of the `sfs` binary (the build
    // directory may be under root's home).
    let dir = cluster.path();
    std::fs::set_permissions(dir, std::fs::Permissions::from_mode(0o755)).unwrap();
    for file in [&cluster.hostfile_path, &cluster.config_path] {
        std::fs::set_permissions(file, std::fs::Permissions::from_mode(0o644)).unwrap();
    }
    let sfs = dir.join("sfs-copy");
    std::fs::copy(SFS, &sfs).unwrap();
    std::fs::set_permissions(&sfs, std::fs::Permissions::from_mode(0o755)).unwrap();
    let secret = dir.join("hostfile.secret");
    let mode = std::fs::metadata(&secret).unwrap().permissions().mode() & 0o777;
    assert_eq!(mode, 0o600, "the servers made the secret file private");

    // Without the secret: refused before any server is asked.
    let cat = sfs_as_other(&sfs, &cluster, &[], &["stat", "/private"]);
    assert!(!cat.status.success(), "{}", text(&cat));
    let err = String::from_utf8_lossy(&cat.stderr);
    assert!(
        err.contains("job secret") && err.contains("hostfile.secret"),
        "{}",
        text(&cat)
    );
    let stop = sfs_as_other(&sfs, &cluster, &[], &["stop"]);
    assert!(!stop.status.success(), "{}", text(&stop));

    // With a secret of its own making: every server refuses it (the client
    // notices first that the servers do not hold its secret).
    let guess = "ab".repeat(32);
    for args in [&["stat", "/private"][..], &["rm", "/private"], &["stop"]] {
        let out = sfs_as_other(&sfs, &cluster, &[("SFS_SECRET", &guess)], args);
        assert!(!out.status.success(), "{args:?}: {}", text(&out));
        assert!(
            String::from_utf8_lossy(&out.stderr).contains("does not hold this job's secret"),
            "{args:?}: {}",
            text(&out)
        );
    }

    // The servers still run and the job's own user still reads its file.
    let copy = dir.join("copy");
    let get = cluster.sfs(&["get", "/private", copy.to_str().unwrap()]);
    assert!(get.status.success(), "{}", text(&get));
    assert_eq!(
        std::fs::read(&copy).unwrap(),
        std::fs::read("/etc/hostname").unwrap()
    );
    let status = cluster.sfs(&["status"]);
    assert!(status.status.success(), "{}", text(&status));
}

#[test]
fn a_secret_file_others_can_read_is_refused_by_clients() {
    let cluster = Cluster::start(1);
    let secret = cluster.path().join("hostfile.secret");
    std::fs::set_permissions(&secret, std::fs::Permissions::from_mode(0o644)).unwrap();
    let out = cluster.sfs(&["ls", "/"]);
    assert!(!out.status.success(), "{}", text(&out));
    assert!(
        String::from_utf8_lossy(&out.stderr).contains("chmod 600"),
        "{}",
        text(&out)
    );
    std::fs::set_permissions(&secret, std::fs::Permissions::from_mode(0o600)).unwrap();
    let out = cluster.sfs(&["ls", "/"]);
    assert!(out.status.success(), "{}", text(&out));
}

/// The refusal of a client whose hostfile is not the servers': by the
/// client's `Hello` check, or by a server asked about a path it does not
/// own (metadata calls may come before the first `Hello`).
fn names_the_difference(out: &Output) -> bool {
    let err = String::from_utf8_lossy(&out.stderr);
    err.contains("use one hostfile, in one order")
        || (err.contains("does not own") && err.contains("the client's hostfile differs"))
}

#[test]
fn a_client_whose_hostfile_differs_is_refused_and_names_the_difference() {
    let cluster = Cluster::start(3);
    let secret = cluster.path().join("hostfile.secret");
    let lines: Vec<String> = cluster
        .hostfile
        .hosts
        .iter()
        .map(|h| format!("{} {}", h.name, h.endpoint()))
        .collect();
    let run = |hosts: &str, args: &[&str]| {
        let path = cluster.path().join("other-hostfile");
        std::fs::write(&path, hosts).unwrap();
        Command::new(SFS)
            .arg("--config")
            .arg(&cluster.config_path)
            .arg("--hostfile")
            .arg(&path)
            .args(args)
            .env("SFS_SECRET_FILE", &secret)
            .stdin(Stdio::null())
            .output()
            .unwrap()
    };
    // The same servers in another order: placement would differ.
    let reordered = format!("{}\n{}\n{}\n", lines[2], lines[1], lines[0]);
    let out = run(&reordered, &["put", "/etc/hostname", "/f"]);
    assert!(!out.status.success(), "{}", text(&out));
    assert!(names_the_difference(&out), "{}", text(&out));
    // One server fewer.
    let out = run(&format!("{}\n{}\n", lines[0], lines[1]), &["ls", "/"]);
    assert!(!out.status.success(), "{}", text(&out));
    assert!(names_the_difference(&out), "{}", text(&out));
    // Nothing was created by the refused clients.
    let ls = cluster.sfs(&["ls", "/"]);
    assert!(ls.status.success(), "{}", text(&ls));
    assert!(ls.stdout.is_empty(), "{}", text(&ls));
    // The same file, named through SFS_SECRET_FILE, works.
    let same = format!("{}\n{}\n{}\n", lines[0], lines[1], lines[2]);
    let out = run(&same, &["put", "/etc/hostname", "/f"]);
    assert!(out.status.success(), "{}", text(&out));
}

#[test]
fn one_server_written_two_ways_is_refused_at_start() {
    let dir = tempfile::tempdir().unwrap();
    let port = std::net::TcpListener::bind("127.0.0.1:0")
        .unwrap()
        .local_addr()
        .unwrap()
        .port();
    let hostfile = dir.path().join("hostfile");
    std::fs::write(
        &hostfile,
        format!("a 127.0.0.1:{port}\nb localhost:{port}\n"),
    )
    .unwrap();
    let config = dir.path().join("config.json");
    let root = dir.path().join("root").display().to_string();
    std::fs::write(&config, format!("{{\"rootdir\": {root:?}}}")).unwrap();
    let out = Command::new(SFS)
        .arg("--config")
        .arg(&config)
        .arg("--hostfile")
        .arg(&hostfile)
        .arg("start")
        .stdin(Stdio::null())
        .output()
        .unwrap();
    assert!(!out.status.success(), "{}", text(&out));
    let err = String::from_utf8_lossy(&out.stderr);
    assert!(
        err.contains("names one server twice")
            && err.contains(":1: a 127.0.0.1")
            && err.contains("line 2: b localhost"),
        "{}",
        text(&out)
    );
    // Nothing was started (no run directory, so no ready file either).
    assert!(!dir.path().join("root").join("a").join("ready").exists());
}

/// The server process's resident memory in bytes.
fn rss(pid: u32) -> u64 {
    let status = std::fs::read_to_string(format!("/proc/{pid}/status")).unwrap();
    let kib: u64 = status
        .lines()
        .find_map(|l| l.strip_prefix("VmRSS:"))
        .and_then(|v| v.trim().trim_end_matches("kB").trim().parse().ok())
        .unwrap();
    kib * 1024
}

const MIB: u64 = 1 << 20;

/// A one-server cluster with a 64 MiB budget (16 MiB a connection) on both
/// the TCP data path and the lean RPC, one chunk of data in `/big`: the
/// cluster, the file's id and the server's pid.
fn flood_target() -> (Cluster, sfs_global::FileId, u32) {
    let cluster = Cluster::start_with(1, |c| {
        c.data_memory_bytes = 64 * MIB;
        c.data_memory_per_connection_bytes = 16 * MIB;
        c.rpc_memory_bytes = 64 * MIB;
        c.rpc_memory_per_connection_bytes = 16 * MIB;
        c.shared_memory_data = false;
    });
    // One chunk of real data to read again and again.
    let client = cluster.client();
    let fd = client
        .open("/big", libc::O_CREAT | libc::O_WRONLY, 0o644)
        .unwrap();
    let chunk = cluster.config.chunk_size;
    client.write(fd, &vec![7u8; chunk as usize]).unwrap();
    client.close(fd).unwrap();
    let id = client.stat("/big").unwrap().id;
    drop(client);
    let pid = ready_file(&cluster)["pid"].as_u64().unwrap() as u32;
    (cluster, id, pid)
}

fn ready_file(cluster: &Cluster) -> serde_json::Value {
    serde_json::from_str(
        &std::fs::read_to_string(sfs_global::ready::Ready::path(&cluster.config, "s0")).unwrap(),
    )
    .unwrap()
}

/// Loads the server with `load` (which opens connections that ask for
/// much and never read the answers, and returns them) and checks the
/// server's RSS: within the 64 MiB budget (plus the idle buffer pool and
/// slack) while flooded, back near where it was once the connections
/// close, and other clients served meanwhile.
fn flood<T>(
    cluster: &Cluster,
    pid: u32,
    what: &str,
    load: impl FnOnce(&tokio::runtime::Runtime, &sfs_global::secret::Secret) -> T,
) {
    let secret = sfs_global::secret::Secret::load(&cluster.path().join("hostfile.secret")).unwrap();
    let before = rss(pid);
    let runtime = tokio::runtime::Runtime::new().unwrap();
    let connections = load(&runtime, &secret);
    std::thread::sleep(Duration::from_secs(3));
    let flooded = rss(pid);
    // The budget, the idle buffer pool (64 MiB) and slack for the rest.
    let allowed = 64 * MIB + 64 * MIB + 48 * MIB;
    assert!(
        flooded.saturating_sub(before) <= allowed,
        "{what}: RSS grew by {} MiB (from {} MiB), budget 64 MiB",
        (flooded - before) / MIB,
        before / MIB
    );
    // The server still serves others meanwhile.
    let ls = cluster.sfs(&["ls", "/"]);
    assert!(ls.status.success(), "{}", text(&ls));

    drop(connections);
    drop(runtime);
    let deadline = std::time::Instant::now() + Duration::from_secs(20);
    let mut after = rss(pid);
    while after > before + 64 * MIB + 16 * MIB && std::time::Instant::now() < deadline {
        std::thread::sleep(Duration::from_millis(200));
        after = rss(pid);
    }
    eprintln!(
        "{what}: RSS before {} MiB, flooded {} MiB, after {} MiB",
        before / MIB,
        flooded / MIB,
        after / MIB
    );
    assert!(
        after <= before + 64 * MIB + 16 * MIB,
        "{what}: RSS stayed at {} MiB after the connections closed (before: {} MiB)",
        after / MIB,
        before / MIB
    );
}

/// 24 authenticated connections for `purpose` to `address`, each sent
/// `frames` (full-chunk reads whose answers it never reads).
fn raw_flood(
    runtime: &tokio::runtime::Runtime,
    secret: &sfs_global::secret::Secret,
    address: std::net::SocketAddr,
    purpose: sfs_rpc::auth::Purpose,
    frames: &[u8],
) -> Vec<tokio::net::TcpStream> {
    runtime.block_on(async {
        let mut all = Vec::new();
        for _ in 0..24 {
            let stream = sfs_rpc::auth::connect_tcp(
                address,
                secret,
                purpose,
                "server s0",
                Duration::from_secs(5),
            )
            .await
            .unwrap();
            all.push(stream);
        }
        for stream in &mut all {
            // Requests are small: all of them fit the socket buffers.
            tokio::io::AsyncWriteExt::write_all(stream, frames)
                .await
                .unwrap();
        }
        all
    })
}

/// A full-chunk read of `/big`'s first chunk, prost-encoded.
fn full_chunk_read(cluster: &Cluster, id: sfs_global::FileId) -> Vec<u8> {
    use prost::Message;
    sfs_rpc::pb::ReadChunkRequest {
        range: Some(sfs_rpc::pb::ChunkRange {
            id_hi: id.hi(),
            id_lo: id.lo(),
            index: 0,
            offset: 0,
            len: cluster.config.chunk_size,
        }),
        stat: None,
    }
    .encode_to_vec()
}

#[test]
fn a_flood_of_unread_reads_stays_within_the_memory_budget_and_memory_returns() {
    let (cluster, id, pid) = flood_target();
    let data: std::net::SocketAddr = ready_file(&cluster)["data_endpoint"]
        .as_str()
        .unwrap()
        .parse()
        .unwrap();
    // 400 full-chunk reads a connection (200 MiB asked per connection,
    // 4.7 GiB in all).
    let mut frames = Vec::new();
    for i in 0..400u64 {
        frames.extend_from_slice(
            &sfs_rdma::wire::RequestHeader {
                op: sfs_rdma::wire::Op::Read,
                request_id: i + 1,
                chunk: sfs_rdma::ChunkRef {
                    id,
                    index: 0,
                    offset: 0,
                    len: cluster.config.chunk_size,
                },
            }
            .encode(),
        );
    }
    flood(&cluster, pid, "TCP data", |runtime, secret| {
        raw_flood(runtime, secret, data, sfs_rpc::auth::Purpose::Data, &frames)
    });
}

/// The same flood on the lean RPC port: full-chunk `read_chunk` calls
/// (which the RPC serves for small pieces, but a client may ask any range).
#[test]
fn a_flood_of_unread_rpc_reads_stays_within_the_memory_budget_and_memory_returns() {
    let (cluster, id, pid) = flood_target();
    let entry = &cluster.hostfile.hosts[0];
    let rpc: std::net::SocketAddr = entry.endpoint().parse().unwrap();
    let read = full_chunk_read(&cluster, id);
    let method = sfs_rpc::methods::METHODS
        .iter()
        .find(|(_, name)| *name == "read_chunk")
        .unwrap()
        .0;
    let mut frames = Vec::new();
    for i in 0..400u64 {
        frames.extend_from_slice(
            &sfs_rpc::lean::RequestHeader {
                method,
                flags: 0,
                request_id: i + 1,
                body_len: read.len() as u32,
            }
            .encode(),
        );
        frames.extend_from_slice(&read);
    }
    flood(&cluster, pid, "lean RPC", |runtime, secret| {
        raw_flood(runtime, secret, rpc, sfs_rpc::auth::Purpose::Rpc, &frames)
    });
}

/// The same flood over gRPC on the RPC port: 24 HTTP/2 connections, each
/// opening as many `ReadChunk` streams as the server lets it and never
/// reading an answer (the client's flow-control windows stay closed, so
/// every answer past the first 64 KiB waits in the server).
#[test]
fn a_flood_of_unread_grpc_reads_stays_within_the_memory_budget_and_memory_returns() {
    let (cluster, id, pid) = flood_target();
    let rpc: std::net::SocketAddr = cluster.hostfile.hosts[0].endpoint().parse().unwrap();
    let read = full_chunk_read(&cluster, id);
    let mut message = vec![0u8];
    message.extend_from_slice(&(read.len() as u32).to_be_bytes());
    message.extend_from_slice(&read);
    let message = bytes::Bytes::from(message);
    flood(&cluster, pid, "gRPC", |runtime, secret| {
        runtime.block_on(async {
            let mut all = Vec::new();
            let mut streams = 0;
            for _ in 0..24 {
                let stream = sfs_rpc::auth::connect_tcp(
                    rpc,
                    secret,
                    sfs_rpc::auth::Purpose::Rpc,
                    "server s0",
                    Duration::from_secs(5),
                )
                .await
                .unwrap();
                let (mut send, connection) = h2::client::handshake(stream).await.unwrap();
                tokio::spawn(connection);
                // The server's settings (its stream limit) arrive first.
                tokio::time::sleep(Duration::from_millis(100)).await;
                let mut pending = Vec::new();
                for _ in 0..400 {
                    // The server's stream limit: `ready` waits past it.
                    match tokio::time::timeout(Duration::from_millis(200), send.clone().ready())
                        .await
                    {
                        Ok(Ok(ready)) => send = ready,
                        _ => break,
                    }
                    let request = http::Request::post("http://s0/sfs.v1.ChunkControl/ReadChunk")
                        .header("content-type", "application/grpc")
                        .header("te", "trailers")
                        .body(())
                        .unwrap();
                    let (response, mut body) = send.send_request(request, false).unwrap();
                    body.send_data(message.clone(), true).unwrap();
                    pending.push(response);
                    streams += 1;
                }
                all.push((send, pending));
            }
            eprintln!("gRPC flood: {streams} ReadChunk requests sent");
            assert!(streams >= 24 * 8, "only {streams} requests sent");
            all
        })
    });
}
/// A gRPC connection keeps its connection place for as long as it is open
/// (not only until the listener hands it to tonic): with
/// `max_connections = 4`, four open HTTP/2 connections leave no room for a
/// fifth, which is refused with the reason; closing one makes room.
#[test]
fn grpc_connections_hold_their_place_while_open() {
    let cluster = Cluster::start_with(1, |c| {
        c.max_connections = 4;
        c.shared_memory_data = false;
    });
    let rpc: std::net::SocketAddr = cluster.hostfile.hosts[0].endpoint().parse().unwrap();
    let secret = sfs_global::secret::Secret::load(&cluster.path().join("hostfile.secret")).unwrap();
    let runtime = tokio::runtime::Runtime::new().unwrap();
    let connect = || {
        runtime.block_on(sfs_rpc::auth::connect_tcp(
            rpc,
            &secret,
            sfs_rpc::auth::Purpose::Rpc,
            "server s0",
            Duration::from_secs(5),
        ))
    };
    let mut open = Vec::new();
    for _ in 0..4 {
        let stream = connect().unwrap();
        let send = runtime.block_on(async {
            let (send, connection) = h2::client::handshake(stream).await.unwrap();
            let driver = tokio::spawn(connection);
            // A request through it: the connection is tonic's now.
            let request = http::Request::post("http://s0/sfs.v1.Control/Stats")
                .header("content-type", "application/grpc")
                .header("te", "trailers")
                .body(())
                .unwrap();
            let (response, mut body) = send
                .clone()
                .ready()
                .await
                .unwrap()
                .send_request(request, false)
                .unwrap();
            body.send_data(bytes::Bytes::from_static(&[0, 0, 0, 0, 0]), true)
                .unwrap();
            let response = response.await.unwrap();
            assert_eq!(response.status(), 200);
            (send, driver)
        });
        open.push(send);
    }
    let refused = connect().expect_err("a fifth connection was let in");
    assert!(refused.to_string().contains("max_connections"), "{refused}");
    let (send, driver) = open.pop().unwrap();
    drop(send);
    driver.abort();
    let deadline = std::time::Instant::now() + Duration::from_secs(10);
    loop {
        match connect() {
            Ok(_) => break,
            Err(e) if std::time::Instant::now() < deadline => {
                let _ = e;
                std::thread::sleep(Duration::from_millis(100));
            }
            Err(e) => panic!("no place came back after a connection closed: {e}"),
        }
    }
}
