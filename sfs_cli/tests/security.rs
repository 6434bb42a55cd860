//! The job secret against a second user of the machine (docs/security.md):
//! servers started by root, and another uid that can read the hostfile and
//! reach every port but not the secret file.

mod common;

use common::{Cluster, SFS};
use std::os::unix::fs::PermissionsExt;
use std::path::Path;
use std::process::{Command, Output, Stdio};

/// The uid and gid the second user runs as (`nobody` on Debian).
const OTHER: &str = "65534";

fn text(out: &Output) -> String {
    format!(
        "status {}\nstdout: {}\nstderr: {}",
        out.status,
        String::from_utf8_lossy(&out.stdout),
        String::from_utf8_lossy(&out.stderr)
    )
}

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
