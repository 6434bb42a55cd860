//! What the `sfs` command prints: server logs without colour codes, `ls -l`
//! in the format of coreutils, quiet ends on a closed pipe, `status` in text
//! and JSON, the hostfile lookup in its error, what `stop` reports, and the
//! hostfiles `sfs hostfile` writes.

mod common;

use common::Cluster;
use std::process::{Command, Output};

const MONTHS: [&str; 12] = [
    "Jan", "Feb", "Mar", "Apr", "May", "Jun", "Jul", "Aug", "Sep", "Oct", "Nov", "Dec",
];

fn text(bytes: &[u8]) -> String {
    String::from_utf8_lossy(bytes).into_owned()
}

fn describe(out: &Output) -> String {
    format!(
        "{}\nstdout:\n{}\nstderr:\n{}",
        out.status,
        text(&out.stdout),
        text(&out.stderr)
    )
}

#[test]
fn server_log_has_no_colour_escapes() {
    let cluster = Cluster::start(1);
    let out = cluster.sfs(&["mkdir", "/logged"]);
    assert!(out.status.success(), "{}", describe(&out));
    let log = std::fs::read(cluster.log_file(0)).unwrap();
    assert!(!log.is_empty(), "the server logged nothing at `info`");
    assert!(
        !log.windows(2).any(|w| w == b"\x1b["),
        "ANSI escapes in a log that is not a terminal:\n{}",
        text(&log)
    );
}

#[test]
fn ls_long_prints_mode_links_and_local_time_like_coreutils() {
    let cluster = Cluster::start(2);
    let client = cluster.client();
    client.mkdir("/d", 0o755).unwrap();
    client.mkdir("/d/sub", 0o755).unwrap();
    client.chmod("/d/sub", 0o755).unwrap();
    let fd = client
        .open("/d/file", libc::O_WRONLY | libc::O_CREAT, 0o640)
        .unwrap();
    client.write(fd, b"hello").unwrap();
    client.close(fd).unwrap();
    client.chmod("/d/file", 0o640).unwrap();
    let fd = client
        .open("/d/old", libc::O_WRONLY | libc::O_CREAT, 0o644)
        .unwrap();
    client.close(fd).unwrap();
    client.chmod("/d/old", 0o4755).unwrap();
    // 2001-09-09 01:46:40 UTC: older than six months, so the year is shown.
    client
        .utimens("/d/old", None, Some(1_000_000_000 * 1_000_000_000))
        .unwrap();
    client.symlink("file", "/d/link").unwrap();
    let file_mtime = client.stat("/d/file").unwrap().mtime_ns / 1_000_000_000;

    // UTC makes the expected times exact; the conversion itself is local
    // time (localtime_r honours TZ like `ls`).
    let out = cluster
        .sfs_command()
        .env("TZ", "UTC")
        .args(["ls", "-l", "/d"])
        .output()
        .unwrap();
    assert!(out.status.success(), "{}", describe(&out));
    let listing = text(&out.stdout);
    let line = |name: &str| -> Vec<String> {
        listing
            .lines()
            .map(|l| l.split_whitespace().map(str::to_string).collect::<Vec<_>>())
            .find(|fields| fields.get(8).map(String::as_str) == Some(name))
            .unwrap_or_else(|| panic!("no line for {name} in:\n{listing}"))
    };

    // mode, links, uid, gid, size, month, day, time or year, name
    let file = line("file");
    assert_eq!(file.len(), 9, "{listing}");
    assert_eq!(file[0], "-rw-r-----", "{listing}");
    assert_eq!(file[1], "1", "{listing}");
    assert_eq!(file[4], "5", "{listing}");
    assert!(MONTHS.contains(&file[5].as_str()), "{listing}");
    let day: u32 = file[6].parse().unwrap();
    assert!((1..=31).contains(&day), "{listing}");
    let expected_clock = format!(
        "{:02}:{:02}",
        file_mtime % 86_400 / 3600,
        file_mtime % 3600 / 60
    );
    assert_eq!(file[7], expected_clock, "{listing}");

    let old = line("old");
    assert_eq!(old[0], "-rwsr-xr-x", "{listing}");
    assert_eq!(old[5..8], ["Sep", "9", "2001"], "{listing}");

    let sub = line("sub");
    assert_eq!(sub[0], "drwxr-xr-x", "{listing}");

    let link = line("link");
    assert_eq!(link[0], "lrwxrwxrwx", "{listing}");
    assert_eq!(link[9..], ["->", "file"], "{listing}");
}

#[test]
fn ls_into_a_closed_pipe_ends_quietly() {
    let cluster = Cluster::start(1);
    let client = cluster.client();
    // 1500 names of 100 bytes: about 150 KB, more than a pipe buffer plus
    // what `head` reads, so `sfs` writes after `head` has exited.
    for i in 0..1500 {
        client.mkdir(&format!("/{i:0>100}"), 0o755).expect("mkdir");
    }
    let out = Command::new("sh")
        .arg("-c")
        .arg(r#""$0" --config "$1" --hostfile "$2" ls / | head -n 1"#)
        .arg(common::SFS)
        .arg(&cluster.config_path)
        .arg(&cluster.hostfile_path)
        .output()
        .unwrap();
    assert!(out.status.success(), "{}", describe(&out));
    assert_eq!(text(&out.stdout).lines().count(), 1, "{}", describe(&out));
    assert!(out.stderr.is_empty(), "{}", describe(&out));
}

#[test]
fn status_reports_every_field_as_text_and_json() {
    let mut cluster = Cluster::start(2);
    let out = cluster.sfs(&["status"]);
    assert!(out.status.success(), "{}", describe(&out));
    let table = text(&out.stdout);
    let header = table.lines().next().unwrap();
    for column in ["~ENTRIES", "USED", "CAPACITY", "FREE", "REQUESTS", "UPTIME"] {
        assert!(header.contains(column), "{column} missing:\n{table}");
    }
    assert!(table.contains("estimate"), "{table}");

    let out = cluster.sfs(&["status", "--json"]);
    assert!(out.status.success(), "{}", describe(&out));
    let report: serde_json::Value = serde_json::from_slice(&out.stdout).unwrap();
    assert_eq!(report["up"], 2, "{report}");
    assert_eq!(report["down"], 0, "{report}");
    let servers = report["servers"].as_array().unwrap();
    assert_eq!(servers.len(), 2, "{report}");
    for (server, entry) in servers.iter().zip(&cluster.hostfile.hosts) {
        assert_eq!(server["name"], entry.name.as_str(), "{report}");
        assert_eq!(server["address"], entry.endpoint().as_str(), "{report}");
        assert_eq!(server["up"], true, "{report}");
        assert_eq!(server["data_transport"], "shm", "{report}");
        for field in [
            "entries_estimate",
            "chunk_bytes",
            "capacity_bytes",
            "free_bytes",
            "requests",
            "uptime_ms",
            "data_bytes_in",
            "data_bytes_out",
        ] {
            assert!(server[field].is_u64(), "{field}: {report}");
        }
        assert!(server["requests"].as_u64().unwrap() >= 1, "{report}");
        assert!(server["error"].is_null(), "{report}");
    }

    // A server down: its entry says so, the JSON stays whole, the exit fails.
    cluster.kill9(1);
    let out = cluster.sfs(&["status", "--json"]);
    assert!(!out.status.success(), "{}", describe(&out));
    let report: serde_json::Value = serde_json::from_slice(&out.stdout).unwrap();
    assert_eq!(
        (report["up"].as_u64(), report["down"].as_u64()),
        (Some(1), Some(1))
    );
    let down = &report["servers"][1];
    assert_eq!(down["up"], false, "{report}");
    assert!(
        down["uptime_ms"].is_null() && down["error"].is_string(),
        "{report}"
    );
}

#[test]
fn a_missing_hostfile_is_reported_with_every_place_looked_at() {
    let dir = tempfile::tempdir().unwrap();
    let sfs = || {
        let mut command = Command::new(common::SFS);
        command
            .current_dir(dir.path())
            .env_remove("SFS_HOSTFILE")
            .env_remove("SFS_CONFIG");
        command
    };
    let out = sfs().arg("status").output().unwrap();
    assert!(!out.status.success(), "{}", describe(&out));
    let err = text(&out.stderr);
    let local = dir.path().join("hostfile").display().to_string();
    for place in [
        "--hostfile",
        "SFS_HOSTFILE",
        "./hostfile",
        &local,
        "hosts_file",
    ] {
        assert!(err.contains(place), "{place} not named:\n{err}");
    }

    // With a config named, its `hosts_file` (relative to the config) is the
    // last place, and the message gives the path it resolved to.
    let sub = dir.path().join("sub");
    std::fs::create_dir(&sub).unwrap();
    std::fs::write(sub.join("config.json"), r#"{"hosts_file": "servers"}"#).unwrap();
    let out = sfs()
        .args(["--config", "sub/config.json", "status"])
        .output()
        .unwrap();
    let err = text(&out.stderr);
    assert!(!out.status.success(), "{}", describe(&out));
    let resolved = sub.join("servers").display().to_string();
    for place in [
        "--hostfile",
        "SFS_HOSTFILE",
        &local,
        "config.json",
        &resolved,
    ] {
        assert!(err.contains(place), "{place} not named:\n{err}");
    }
}

/// `sfs stop` where no server of the hostfile runs. Tests may only reach
/// 127.0.0.0/8, which is always "this machine", so the case of a hostfile
/// whose servers all live elsewhere cannot be staged here. What is covered:
/// every entry is asked over its address (nothing listens on this
/// 127.0.0.2 port, so the connection is refused), the command says on
/// stderr that it stopped nothing and names the hosts, and it fails — where
/// it used to print one line per server and succeed.
#[test]
fn stop_without_a_running_server_says_it_stopped_nothing() {
    let dir = tempfile::tempdir().unwrap();
    let port = std::net::TcpListener::bind("127.0.0.2:0")
        .unwrap()
        .local_addr()
        .unwrap()
        .port();
    let hostfile = dir.path().join("hostfile");
    std::fs::write(&hostfile, format!("a 127.0.0.2:{port}\n")).unwrap();
    let config = dir.path().join("config.json");
    let root = dir.path().join("root").display().to_string();
    std::fs::write(&config, serde_json::json!({ "rootdir": root }).to_string()).unwrap();
    let out = Command::new(common::SFS)
        .arg("--config")
        .arg(&config)
        .arg("--hostfile")
        .arg(&hostfile)
        .arg("stop")
        .output()
        .unwrap();
    assert!(!out.status.success(), "{}", describe(&out));
    let err = text(&out.stderr);
    assert!(err.contains("nothing stopped"), "{err}");
    assert!(err.contains(&format!("a 127.0.0.2:{port}")), "{err}");
    assert!(
        text(&out.stdout).contains("server a not running"),
        "{}",
        describe(&out)
    );
}

/// `sfs stop` with a config whose `rootdir` holds no ready file of these
/// servers: it knows no pid, as for a server on another machine, so it
/// stops them through their `Shutdown` RPC alone and waits until their
/// ports close. The servers then exit with status 0.
#[test]
fn stop_uses_the_shutdown_rpc_for_servers_whose_process_it_cannot_see() {
    let mut cluster = Cluster::start(2);
    let mut elsewhere = cluster.config.clone();
    elsewhere.rootdir = cluster.path().join("elsewhere").display().to_string();
    let config = cluster.path().join("elsewhere.json");
    std::fs::write(&config, elsewhere.to_json_pretty()).unwrap();
    let out = Command::new(common::SFS)
        .arg("--config")
        .arg(&config)
        .arg("--hostfile")
        .arg(&cluster.hostfile_path)
        .arg("stop")
        .output()
        .unwrap();
    assert!(out.status.success(), "{}", describe(&out));
    let stdout = text(&out.stdout);
    for i in 0..2 {
        let entry = &cluster.hostfile.hosts[i];
        let line = format!("server {} stopped ({})", entry.name, entry.endpoint());
        assert!(stdout.contains(&line), "{line} missing:\n{stdout}");
    }
    for i in 0..2 {
        let status = cluster.wait_exit(i);
        assert!(status.success(), "server {i} exited with {status}");
    }
}

/// A put that fails part-way (the chunk stores fill up) leaves the target as
/// it was: absent, or its previous content; nothing else behind.
#[test]
fn a_failed_put_leaves_the_previous_content_and_no_partial_file() {
    let cluster = Cluster::start_with(1, |c| {
        c.chunk_store_capacity = 4 << 20;
        // A full store fails at once instead of waiting for the write-back
        // to make room (which would let the put succeed).
        c.backend.space_wait_ms = 0;
    });
    let dir = tempfile::tempdir().unwrap();
    let small = dir.path().join("small");
    let big = dir.path().join("big");
    std::fs::write(&small, b"previous content\n").unwrap();
    std::fs::write(&big, vec![7u8; 16 << 20]).unwrap();
    let (small, big) = (small.display().to_string(), big.display().to_string());
    let out = cluster.sfs(&["put", &small, "/kept"]);
    assert!(out.status.success(), "{}", describe(&out));
    for target in ["/kept", "/new"] {
        let out = cluster.sfs(&["put", &big, target]);
        assert!(!out.status.success(), "a 16 MiB put into 4 MiB succeeded");
        assert!(text(&out.stderr).contains("ENOSPC"), "{}", describe(&out));
    }
    // `sfs ls` lists names starting with a dot too (the staging names do).
    let listing = text(&cluster.sfs(&["ls", "/"]).stdout);
    assert_eq!(listing.trim(), "kept", "left behind: {listing}");
    let back = dir.path().join("back");
    let out = cluster.sfs(&["get", "/kept", &back.display().to_string()]);
    assert!(out.status.success(), "{}", describe(&out));
    assert_eq!(std::fs::read(&back).unwrap(), b"previous content\n");
}

/// `sfs exec` names the servers that do not answer instead of starting the
/// program into EIO; `--no-check` starts it anyway.
#[test]
fn exec_names_the_servers_that_are_down() {
    let mut cluster = Cluster::start(2);
    cluster.stop(1);
    let down = &cluster.hostfile.hosts[1];
    let out = cluster.sfs(&["exec", "--", "true"]);
    assert!(!out.status.success(), "{}", describe(&out));
    let err = text(&out.stderr);
    assert!(err.contains("1 of 2 server(s)"), "{err}");
    assert!(err.contains(&down.name), "{err}");
    let out = cluster.sfs(&["exec", "--no-check", "--", "true"]);
    assert!(out.status.success(), "{}", describe(&out));
}

/// Without any config file the built-in defaults apply: `sfs start` from a
/// directory with only a hostfile starts servers that answer (it used to
/// hand them a `config.json` that did not exist).
#[test]
fn start_without_a_config_file_uses_the_defaults() {
    let dir = tempfile::tempdir().unwrap();
    // The server binds `port` and, for data, `port + 1` (the default
    // `data_port_offset`): both must be free.
    let port = (0..100)
        .find_map(|_| {
            let rpc = std::net::TcpListener::bind("127.0.0.1:0").ok()?;
            let port = rpc.local_addr().ok()?.port();
            std::net::TcpListener::bind(("127.0.0.1", port.checked_add(1)?)).ok()?;
            Some(port)
        })
        .expect("two free neighbouring ports");
    // The default rootdir is shared by everything on the machine: a server
    // name of its own keeps this test's state apart, removed at the end.
    let name = format!("no-config-test-{port}");
    std::fs::write(
        dir.path().join("hostfile"),
        format!("{name} 127.0.0.1:{port}\n"),
    )
    .unwrap();
    let state = std::path::Path::new(&sfs_global::config::Config::default().rootdir).join(&name);
    struct RemoveOnDrop(std::path::PathBuf);
    impl Drop for RemoveOnDrop {
        fn drop(&mut self) {
            let _ = std::fs::remove_dir_all(&self.0);
        }
    }
    let _cleanup = RemoveOnDrop(state);
    let sfs = |args: &[&str]| {
        Command::new(common::SFS)
            .args(args)
            .current_dir(dir.path())
            .env_remove("SFS_CONFIG")
            .env_remove("SFS_HOSTFILE")
            .output()
            .unwrap()
    };
    let started = sfs(&["start"]);
    let listed = sfs(&["ls", "/"]);
    let stopped = sfs(&["stop"]);
    assert!(started.status.success(), "{}", describe(&started));
    assert!(listed.status.success(), "{}", describe(&listed));
    assert!(stopped.status.success(), "{}", describe(&stopped));
}

/// `sfs hostfile` from a machine file and from a Slurm node list (expanded
/// by SFS itself: no `scontrol` on the PATH here), read back by the
/// hostfile parser; outside an allocation `--slurm` names the variable.
#[test]
fn hostfile_is_written_from_a_machine_file_and_a_slurm_node_list() {
    let dir = tempfile::tempdir().unwrap();
    let sfs = || {
        let mut command = Command::new(common::SFS);
        command
            .current_dir(dir.path())
            .env_remove("SFS_CONFIG")
            .env_remove("SFS_HOSTFILE")
            .env_remove("SLURM_JOB_NODELIST")
            .env_remove("SLURM_NODELIST")
            .env("PATH", dir.path());
        command
    };
    let machines = dir.path().join("machines");
    std::fs::write(&machines, "# PBS_NODEFILE\nnode-a\nnode-b\nnode-a\n").unwrap();
    let written = dir.path().join("hostfile");
    let out = sfs()
        .args(["hostfile", "--from"])
        .arg(&machines)
        .args(["--port", "9000", "-o"])
        .arg(&written)
        .output()
        .unwrap();
    assert!(out.status.success(), "{}", describe(&out));
    let hostfile = sfs_global::hostfile::Hostfile::load(&written).unwrap();
    let servers: Vec<String> = hostfile
        .hosts
        .iter()
        .map(|h| format!("{} {}", h.name, h.endpoint()))
        .collect();
    assert_eq!(
        servers,
        [
            "node-a-0 node-a:9000",
            "node-a-1 node-a:9002",
            "node-b node-b:9000"
        ]
    );

    let out = sfs()
        .args(["hostfile", "--slurm", "--servers-per-node", "2"])
        .env("SLURM_JOB_NODELIST", "c[08-09]")
        .output()
        .unwrap();
    assert!(out.status.success(), "{}", describe(&out));
    assert_eq!(
        text(&out.stdout),
        "c08-0 c08:7700\nc08-1 c08:7702\nc09-0 c09:7700\nc09-1 c09:7702\n"
    );

    let out = sfs().args(["hostfile", "--slurm"]).output().unwrap();
    assert!(!out.status.success(), "{}", describe(&out));
    assert!(
        text(&out.stderr).contains("not inside a Slurm allocation (SLURM_JOB_NODELIST"),
        "{}",
        describe(&out)
    );
    let out = sfs().arg("hostfile").output().unwrap();
    assert!(
        !out.status.success(),
        "neither --slurm nor --from: {}",
        describe(&out)
    );
}
