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
        &std::fs::read_to_string(cluster.config.run_dir("s0").join("ready")).unwrap(),
    )
    .unwrap()
}

/// Opens 24 authenticated connections for `purpose` to `address`, sends
/// each one `frames` (full-chunk reads it never reads the answers of), and
/// checks the server's RSS: within the 64 MiB budget (plus the idle buffer
/// pool and slack) while flooded, back near where it was once the
/// connections close, and other clients served meanwhile.
fn flood(
    cluster: &Cluster,
    pid: u32,
    address: std::net::SocketAddr,
    purpose: sfs_rpc::auth::Purpose,
    frames: &[u8],
) {
    let secret = sfs_global::secret::Secret::load(&cluster.path().join("hostfile.secret")).unwrap();
    let before = rss(pid);
    let runtime = tokio::runtime::Runtime::new().unwrap();
    let connections: Vec<tokio::net::TcpStream> = runtime.block_on(async {
        let mut all = Vec::new();
        for _ in 0..24 {
            let stream = sfs_rpc::auth::connect_tcp(
                address,
                &secret,
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
    });
    std::thread::sleep(Duration::from_secs(3));
    let flooded = rss(pid);
    // The budget, the idle buffer pool (64 MiB) and slack for the rest.
    let allowed = 64 * MIB + 64 * MIB + 48 * MIB;
    assert!(
        flooded.saturating_sub(before) <= allowed,
        "RSS grew by {} MiB (from {} MiB), budget 64 MiB",
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
        "{purpose:?}: RSS before {} MiB, flooded {} MiB, after {} MiB",
        before / MIB,
        flooded / MIB,
        after / MIB
    );
    assert!(
        after <= before + 64 * MIB + 16 * MIB,
        "RSS stayed at {} MiB after the connections closed (before: {} MiB)",
        after / MIB,
        before / MIB
    );
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
    flood(&cluster, pid, data, sfs_rpc::auth::Purpose::Data, &frames);
}

/// The same flood on the lean RPC port: full-chunk `read_chunk` calls
/// (which the RPC serves for small pieces, but a client may ask any range).
#[test]
fn a_flood_of_unread_rpc_reads_stays_within_the_memory_budget_and_memory_returns() {
    use prost::Message;
    let (cluster, id, pid) = flood_target();
    let entry = &cluster.hostfile.hosts[0];
    let rpc: std::net::SocketAddr = entry.endpoint().parse().unwrap();
    let read = sfs_rpc::pb::ReadChunkRequest {
        range: Some(sfs_rpc::pb::ChunkRange {
            id_hi: id.hi(),
            id_lo: id.lo(),
            index: 0,
            offset: 0,
            len: cluster.config.chunk_size,
        }),
        stat: None,
    }
    .encode_to_vec();
    let method = sfs_rpc::lean::METHODS
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
    flood(&cluster, pid, rpc, sfs_rpc::auth::Purpose::Rpc, &frames);
}
