//! The `sfs` command end to end: start, status, file tools, stop.

mod common;

use std::process::Command;

#[test]
fn start_put_get_ls_status_stop() {
    let dir = tempfile::tempdir().unwrap();
    let port = |_: u8| {
        std::net::TcpListener::bind("127.0.0.1:0")
            .unwrap()
            .local_addr()
            .unwrap()
            .port()
    };
    let hostfile = dir.path().join("hostfile");
    std::fs::write(
        &hostfile,
        format!("a 127.0.0.1:{}\nb 127.0.0.1:{}\n", port(0), port(1)),
    )
    .unwrap();
    let config = dir.path().join("config.json");
    let root = dir.path().join("root");
    std::fs::write(
        &config,
        format!(
            r#"{{"rootdir": "{}", "data_port_offset": 0}}"#,
            root.display()
        ),
    )
    .unwrap();
    let sfs = |args: &[&str]| {
        let out = Command::new(common::SFS)
            .arg("--config")
            .arg(&config)
            .arg("--hostfile")
            .arg(&hostfile)
            .args(args)
            .output()
            .unwrap();
        (
            out.status.success(),
            String::from_utf8_lossy(&out.stdout).into_owned(),
            String::from_utf8_lossy(&out.stderr).into_owned(),
        )
    };
    // Stop the servers even if an assertion fails.
    type Run<'a> = &'a dyn Fn(&[&str]) -> (bool, String, String);
    struct StopOnDrop<'a>(Run<'a>);
    impl Drop for StopOnDrop<'_> {
        fn drop(&mut self) {
            let _ = (self.0)(&["stop"]);
        }
    }
    let (ok, out, err) = sfs(&["start"]);
    assert!(ok, "{out}{err}");
    let _stop = StopOnDrop(&sfs);
    assert!(
        out.contains("server a ready") && out.contains("server b ready"),
        "{out}"
    );

    let local = dir.path().join("local.bin");
    let data: Vec<u8> = (0..1_500_000u32).map(|i| (i % 253) as u8).collect();
    std::fs::write(&local, &data).unwrap();
    assert!(sfs(&["mkdir", "-p", "/x/y/z"]).0);
    assert!(
        sfs(&["mkdir", "-p", "/x/y"]).0,
        "mkdir -p of an existing directory succeeds"
    );
    let (ok, _, err) = sfs(&["put", local.to_str().unwrap(), "/x/y/file"]);
    assert!(ok, "{err}");
    let back = dir.path().join("back.bin");
    assert!(sfs(&["get", "/x/y/file", back.to_str().unwrap()]).0);
    assert_eq!(std::fs::read(&back).unwrap(), data);
    let (_, out, _) = sfs(&["ls", "-l", "/x/y"]);
    assert!(
        out.contains("1500000") && out.contains("file") && out.contains("drwx"),
        "{out}"
    );
    let (_, out, _) = sfs(&["stat", "/x/y/file"]);
    assert!(
        out.contains("regular file") && out.contains("1500000"),
        "{out}"
    );
    let (ok, out, _) = sfs(&["status"]);
    assert!(ok && out.contains("yes"), "{out}");
    // Each server's row names the data transport this client uses with it:
    // shared memory, as the servers run on this machine.
    let rows: Vec<&str> = out
        .lines()
        .take_while(|l| !l.is_empty()) // the first table; tiering follows
        .filter(|l| l.starts_with("a ") || l.starts_with("b "))
        .collect();
    assert_eq!(rows.len(), 2, "{out}");
    for row in rows {
        let data = row.split_whitespace().nth(3);
        assert_eq!(data, Some("shm"), "{out}");
    }
    let (ok, _, err) = sfs(&["rm", "/x"]);
    assert!(!ok && err.contains("is a directory"), "{err}");
    assert!(sfs(&["rm", "-r", "/x"]).0);
    let (ok, _, err) = sfs(&["stat", "/x"]);
    assert!(!ok && err.contains("ENOENT"), "{err}");
    let (ok, out, err) = sfs(&["stop"]);
    assert!(ok && out.contains("server a stopped"), "{out}{err}");
    let (ok, out, _) = sfs(&["status"]);
    assert!(!ok && out.contains("no"), "{out}");
}
