//! What happens when servers stop, restart, die, or are given bad input.

mod common;

use common::Cluster;
use sfs_client::Errno;
use std::time::{Duration, Instant};

#[test]
fn restart_keeps_every_fsynced_byte_and_every_entry() {
    fsynced_data_survives(Cluster::stop_all);
}

#[test]
fn fsynced_data_survives_kill_9_of_every_server() {
    fsynced_data_survives(|cluster| {
        for i in 0..3 {
            cluster.kill9(i);
        }
    });
}

/// Writes and fsyncs 50 files, stops the servers with `stop`, restarts
/// them, and checks every byte and entry.
fn fsynced_data_survives(stop: impl FnOnce(&mut Cluster)) {
    let mut cluster = Cluster::start(3);
    let data: Vec<u8> = (0..3_000_000u32).map(|i| (i * 31 % 251) as u8).collect();
    {
        let client = cluster.client();
        client.mkdir("/keep", 0o750).unwrap();
        for i in 0..50 {
            let fd = client
                .open(
                    &format!("/keep/f{i}"),
                    libc::O_WRONLY | libc::O_CREAT,
                    0o644,
                )
                .unwrap();
            client.write(fd, &data[i * 1000..]).unwrap();
            client.fsync(fd).unwrap();
            client.close(fd).unwrap();
        }
        client.symlink("f1", "/keep/link").unwrap();
        client.sync_all().unwrap();
    }
    stop(&mut cluster);
    cluster.restart_stopped();
    let client = cluster.client();
    assert_eq!(client.stat("/keep").unwrap().mode & 0o777, 0o750);
    assert_eq!(client.read_dir("/keep").unwrap().count(), 51);
    assert_eq!(client.readlink("/keep/link").unwrap(), "f1");
    for i in 0..50 {
        let fd = client
            .open(&format!("/keep/f{i}"), libc::O_RDONLY, 0)
            .unwrap();
        let mut buf = vec![0u8; data.len()];
        let n = client.read(fd, &mut buf).unwrap();
        assert_eq!(&buf[..n], &data[i * 1000..], "file {i}");
        client.close(fd).unwrap();
    }
}

#[test]
fn killed_server_gives_an_errno_within_ten_seconds() {
    let mut cluster = Cluster::start(3);
    let client = cluster.client();
    // Files whose metadata lives on every server, with data on every server.
    let paths: Vec<String> = (0..30).map(|i| format!("/f{i}")).collect();
    for p in &paths {
        let fd = client
            .open(p, libc::O_WRONLY | libc::O_CREAT, 0o644)
            .unwrap();
        client.write(fd, &vec![7u8; 2 << 20]).unwrap();
        client.close(fd).unwrap();
    }
    cluster.kill9(1);
    let mut failures = 0;
    for p in &paths {
        let started = Instant::now();
        let result = client.stat(p).and_then(|_| {
            let fd = client.open(p, libc::O_RDONLY, 0)?;
            let mut buf = vec![0u8; 2 << 20];
            let r = client.read(fd, &mut buf);
            let _ = client.close(fd);
            r
        });
        let took = started.elapsed();
        assert!(took < Duration::from_secs(10), "{p}: took {took:?}");
        if let Err(e) = result {
            assert!(
                e.errno == Errno::EIO || e.errno == Errno::ETIMEDOUT,
                "{p}: {e}"
            );
            failures += 1;
        }
    }
    assert!(failures > 0, "some files touch the killed server");
    // The other servers keep serving.
    client
        .mkdir("/after", 0o755)
        .or_else(|e| {
            if e.errno == Errno::EIO {
                Ok(())
            } else {
                Err(e)
            }
        })
        .unwrap();
}

#[test]
fn a_second_server_on_the_same_directories_is_refused() {
    let cluster = Cluster::start(1);
    let out = cluster.sfs(&["server", "--id", "s0"]);
    assert!(!out.status.success());
    let err = String::from_utf8_lossy(&out.stderr);
    assert!(err.contains("lock"), "{err}");
}

/// `sfs server --listen-fd N` serves only on a listening socket it was
/// handed (the test kit's cluster starts every server that way): a
/// standard stream, a number not inherited, or a descriptor that is not a
/// listening socket is refused before anything starts.
#[test]
fn a_listener_that_is_not_one_is_refused() {
    let cluster = Cluster::start(1);
    let refused = |fd: &str, why: &str| {
        let out = cluster.sfs(&["server", "--id", "s0", "--listen-fd", fd]);
        let err = String::from_utf8_lossy(&out.stderr);
        assert!(!out.status.success() && err.contains(why), "{fd}: {err}");
    };
    refused(
        "1",
        "--listen-fd 1: descriptors 0, 1 and 2 are the standard streams",
    );
    refused("987", "--listen-fd 987: no such descriptor was inherited");
    // A file inherited at 5 (bash opens it there for the child): no socket.
    let mut shell = std::process::Command::new("bash");
    shell
        .arg("-c")
        .arg("exec 5</dev/null; exec \"$@\"")
        .arg("bash")
        .arg(common::SFS)
        .arg("--config")
        .arg(&cluster.config_path)
        .arg("--hostfile")
        .arg(&cluster.hostfile_path)
        .args(["server", "--id", "s0", "--listen-fd", "5"]);
    let out = shell.output().unwrap();
    let err = String::from_utf8_lossy(&out.stderr);
    assert!(
        !out.status.success() && err.contains("--listen-fd 5: not a listening socket"),
        "{err}"
    );
}

#[test]
fn bad_config_and_hostfile_are_refused_with_the_cause() {
    let dir = tempfile::tempdir().unwrap();
    let config = dir.path().join("config.json");
    let hostfile = dir.path().join("hostfile");
    std::fs::write(&hostfile, "s0 127.0.0.1:7999\n").unwrap();
    let run = |args: &[&str]| {
        let out = std::process::Command::new(common::SFS)
            .arg("--config")
            .arg(&config)
            .arg("--hostfile")
            .arg(&hostfile)
            .args(args)
            .output()
            .unwrap();
        assert!(!out.status.success());
        String::from_utf8_lossy(&out.stderr).into_owned()
    };
    std::fs::write(&config, r#"{"chunk_size": 1000}"#).unwrap();
    let e = run(&["server"]);
    assert!(
        e.contains("field `chunk_size` must be a power of two"),
        "{e}"
    );
    std::fs::write(&config, r#"{"chunk_sise": 4096}"#).unwrap();
    assert!(run(&["status"]).contains("chunk_sise"));
    std::fs::write(&config, "{}").unwrap();
    std::fs::write(&hostfile, "s0 127.0.0.1:7999\ns0 127.0.0.2:7999\n").unwrap();
    let e = run(&["start"]);
    assert!(e.contains("hostfile:2") && e.contains("duplicate"), "{e}");
    std::fs::write(&hostfile, "# empty\n").unwrap();
    assert!(run(&["status"]).contains("no servers listed"));
}
