//! `sfs start`, `status`, `stop` and `clean` across simulated nodes: three
//! network namespaces on a bridge, each with its own sshd and one server;
//! `sfs start` from a fourth namespace starts all three over ssh, programs
//! under the shim write on one node and read on another, `sfs stop` from a
//! fifth namespace (no server there) stops them all, `sfs clean` removes
//! their state; then a node whose sshd is gone and one whose server cannot
//! bind its port are each reported by name, with a non-zero exit.
//!
//! Every address lives only in the test's namespaces, and every `sfs` runs
//! inside one of them (sfs_testkit::netns). Servers started over ssh are
//! not the test's children: their pids are read from their ready files and
//! killed on drop if the test ends before `sfs stop` did it.

use sfs_global::config::Config;
use sfs_testkit::netns::{self, Network, Ssh, Sshd};
use std::path::{Path, PathBuf};
use std::process::{Child, Output, Stdio};
use std::time::{Duration, Instant};

const SUBNET: &str = "10.213.7";
const PORT: u16 = 7700;

/// The simulated cluster; field order is teardown order.
struct Lab {
    /// Servers started over ssh, by pid, killed on drop.
    servers: Vec<i32>,
    /// Processes holding a node's port (the failure case).
    squatters: Vec<Child>,
    sshds: Vec<Sshd>,
    /// Held for its drop: the namespaces go last.
    _network: Network,
    /// (namespace, address) of the three server nodes.
    nodes: Vec<(String, String)>,
    login: String,
    other: String,
    dir: tempfile::TempDir,
    config: Config,
    config_path: PathBuf,
    hostfile_path: PathBuf,
    sfs: PathBuf,
}

impl Drop for Lab {
    fn drop(&mut self) {
        for &pid in &self.servers {
            // Only a process that is still one of this test's servers (its
            // command line names the test's directory): a pid may be reused.
            let cmdline = std::fs::read(format!("/proc/{pid}/cmdline")).unwrap_or_default();
            let ours =
                String::from_utf8_lossy(&cmdline).contains(&self.dir.path().display().to_string());
            if ours {
                if let Some(pid) = rustix::process::Pid::from_raw(pid) {
                    let _ = rustix::process::kill_process(pid, rustix::process::Signal::KILL);
                }
            }
        }
        for child in &mut self.squatters {
            let _ = child.kill();
            let _ = child.wait();
        }
    }
}

fn text(out: &Output) -> String {
    format!(
        "{}\nstdout:\n{}\nstderr:\n{}",
        out.status,
        String::from_utf8_lossy(&out.stdout),
        String::from_utf8_lossy(&out.stderr)
    )
}

/// Asserts that `out` succeeded and that its standard output has, for each
/// server (numbered from 1, with its address), the line `expected` makes.
fn assert_every_server(
    out: &Output,
    addresses: &[String],
    expected: impl Fn(usize, &str) -> String,
) {
    assert!(out.status.success(), "{}", text(out));
    let stdout = String::from_utf8_lossy(&out.stdout);
    for (i, address) in addresses.iter().enumerate() {
        let line = expected(i + 1, address);
        assert!(stdout.contains(&line), "{line} missing:\n{}", text(out));
    }
}

impl Lab {
    fn new() -> Lab {
        let sfs = sfs_testkit::artifacts().sfs.clone();
        let dir = tempfile::tempdir().unwrap();
        let mut network = Network::create("l", SUBNET);
        let nodes: Vec<(String, String)> = (1..=3)
            .map(|i| network.add_node(&format!("n{i}"), 10 + i))
            .collect();
        let (login, _) = network.add_node("login", 100);
        let (other, _) = network.add_node("other", 101);
        let ssh_dir = dir.path().join("ssh");
        std::fs::create_dir(&ssh_dir).unwrap();
        let ssh = Ssh::new(&ssh_dir);
        let sshds = nodes
            .iter()
            .map(|(namespace, address)| ssh.start_sshd(namespace, address))
            .collect();
        let config = Config {
            rootdir: dir.path().join("root").display().to_string(),
            mountdir: "/sfs".into(),
            chunk_size: 64 * 1024,
            // Data between nodes goes over the bridge, not through shared
            // memory (the "nodes" share one kernel).
            shared_memory_data: false,
            connect_timeout_ms: 2000,
            request_timeout_ms: 8000,
            launcher: sfs_global::config::LauncherConfig {
                ssh_command: vec![
                    "ssh".into(),
                    "-F".into(),
                    ssh.client_config.display().to_string(),
                ],
                timeout_ms: 60_000,
                ..Default::default()
            },
            ..Config::default()
        };
        let config_path = dir.path().join("config.json");
        std::fs::write(&config_path, config.to_json_pretty()).unwrap();
        let hostfile_path = dir.path().join("hostfile");
        let hosts: String = nodes
            .iter()
            .enumerate()
            .map(|(i, (_, address))| format!("s{} {address}:{PORT}\n", i + 1))
            .collect();
        std::fs::write(&hostfile_path, hosts).unwrap();
        Lab {
            servers: Vec::new(),
            squatters: Vec::new(),
            sshds,
            _network: network,
            nodes,
            login,
            other,
            dir,
            config,
            config_path,
            hostfile_path,
            sfs,
        }
    }

    /// `sfs ARGS` inside `namespace`, with this lab's files and nothing
    /// from the test's own environment.
    fn sfs(&self, namespace: &str, args: &[&str]) -> Output {
        let started = Instant::now();
        let out = Network::command(namespace, &self.sfs)
            .arg("--config")
            .arg(&self.config_path)
            .arg("--hostfile")
            .arg(&self.hostfile_path)
            .args(args)
            .env_remove("SFS_SECRET")
            .env_remove("SFS_SECRET_FILE")
            .env_remove("SFS_CONFIG")
            .env_remove("SFS_HOSTFILE")
            .stdin(Stdio::null())
            .output()
            .expect("running sfs");
        // The whole output, shown when the test fails (or with --no-capture).
        eprintln!(
            "[{:.2}s] sfs {} in {namespace}: {}",
            started.elapsed().as_secs_f64(),
            args.join(" "),
            text(&out)
        );
        out
    }

    /// Records the pids of the servers that are ready now, for teardown.
    fn note_servers(&mut self) {
        for i in 1..=3 {
            let ready = sfs_global::ready::Ready::path(&self.config, &format!("s{i}"));
            let Ok(body) = std::fs::read_to_string(ready) else {
                continue;
            };
            let json: serde_json::Value = serde_json::from_str(&body).unwrap();
            if let Some(pid) = json["pid"].as_i64() {
                self.servers.push(pid as i32);
            }
        }
    }

    /// Waits until every recorded server process has exited.
    fn wait_servers_gone(&self) {
        let deadline = Instant::now() + Duration::from_secs(60);
        for &pid in &self.servers {
            while Path::new(&format!("/proc/{pid}")).exists()
                && !std::fs::read_to_string(format!("/proc/{pid}/stat"))
                    .unwrap_or_default()
                    .contains(") Z ")
            {
                assert!(Instant::now() < deadline, "server pid {pid} still runs");
                std::thread::sleep(Duration::from_millis(20));
            }
        }
    }
}

#[test]
fn start_use_stop_and_clean_across_simulated_nodes() {
    if let Some(reason) = netns::missing_prerequisites() {
        println!("SKIPPED start_use_stop_and_clean_across_simulated_nodes: {reason}");
        eprintln!("SKIPPED start_use_stop_and_clean_across_simulated_nodes: {reason}");
        return;
    }
    let mut lab = Lab::new();
    let (login, other) = (lab.login.clone(), lab.other.clone());
    let addresses: Vec<String> = lab.nodes.iter().map(|(_, a)| a.clone()).collect();

    // `--local-only` starts what is on this machine: nothing here.
    let out = lab.sfs(&login, &["start", "--local-only"]);
    assert!(!out.status.success(), "{}", text(&out));
    assert!(
        String::from_utf8_lossy(&out.stderr)
            .contains("no server of the hostfile has an address on this machine"),
        "{}",
        text(&out)
    );

    // Start from a namespace that has no server: all three over ssh.
    let out = lab.sfs(&login, &["start"]);
    lab.note_servers();
    assert_every_server(&out, &addresses, |i, address| {
        format!("{address}: server s{i} ready on {address}:{PORT}")
    });
    let stdout = String::from_utf8_lossy(&out.stdout);
    assert!(
        stdout.contains("sfs start: 3 of 3 host(s) ok (3 server(s))"),
        "{}",
        text(&out)
    );
    assert_eq!(lab.servers.len(), 3, "ready files: {}", text(&out));

    let out = lab.sfs(&login, &["status"]);
    assert!(out.status.success(), "{}", text(&out));
    assert!(
        String::from_utf8_lossy(&out.stdout).contains("sfs status: 3 of 3 server(s) up"),
        "{}",
        text(&out)
    );

    // State cannot be removed from under running servers.
    let out = lab.sfs(&login, &["clean"]);
    assert!(!out.status.success(), "{}", text(&out));
    let stderr = String::from_utf8_lossy(&out.stderr);
    for (i, address) in addresses.iter().enumerate() {
        let named = format!("s{} ({address}:{PORT})", i + 1);
        assert!(
            stderr.contains(&named),
            "{named} not named:\n{}",
            text(&out)
        );
    }
    assert!(sfs_global::ready::Ready::path(&lab.config, "s1").exists());

    // A workload through the shim on node 1, read back through it on
    // node 2: 3 MB spread over 47 chunks on the three servers.
    let data: Vec<u8> = (0..3_000_000u32)
        .map(|i| (i.wrapping_mul(2_654_435_761) >> 13) as u8)
        .collect();
    let input = lab.dir.path().join("input.bin");
    std::fs::write(&input, &data).unwrap();
    let script = format!(
        "set -e; mkdir -p /sfs/job; cp {} /sfs/job/data.bin; echo written on n1 > /sfs/job/note",
        input.display()
    );
    let n1 = lab.nodes[0].0.clone();
    let out = lab.sfs(&n1, &["exec", "--", "sh", "-c", &script]);
    assert!(out.status.success(), "{}", text(&out));
    let copy = lab.dir.path().join("copy.bin");
    let script = format!(
        "set -e; cat /sfs/job/note; cat /sfs/job/data.bin > {}",
        copy.display()
    );
    let n2 = lab.nodes[1].0.clone();
    let out = lab.sfs(&n2, &["exec", "--", "sh", "-c", &script]);
    assert!(out.status.success(), "{}", text(&out));
    assert_eq!(String::from_utf8_lossy(&out.stdout), "written on n1\n");
    assert!(
        std::fs::read(&copy).unwrap() == data,
        "data read on n2 differs"
    );

    // Stop from yet another namespace without a server.
    let out = lab.sfs(&other, &["stop"]);
    assert_every_server(&out, &addresses, |i, address| {
        format!("{address}: server s{i} stopped ({address}:{PORT})")
    });
    let stdout = String::from_utf8_lossy(&out.stdout);
    assert!(
        stdout.contains("sfs stop: 3 of 3 host(s) ok"),
        "{}",
        text(&out)
    );
    lab.wait_servers_gone();
    let out = lab.sfs(&other, &["status"]);
    assert!(!out.status.success(), "{}", text(&out));
    assert!(
        String::from_utf8_lossy(&out.stderr).contains("3 of 3 server(s) down: s1 ("),
        "{}",
        text(&out)
    );

    // Clean every node's state through the launcher.
    let out = lab.sfs(&login, &["clean"]);
    let run_dir = |i: usize| lab.config.run_dir(&format!("s{i}"));
    assert_every_server(&out, &addresses, |i, address| {
        format!("{address}: server s{i}: removed {}", run_dir(i).display())
    });
    for i in 1..=3 {
        assert!(!run_dir(i).exists(), "{} still there", run_dir(i).display());
    }

    // Failures, each named: node 3 refuses logins (its sshd is gone) and
    // node 2's port is taken, so its server cannot start; node 1 starts.
    lab.sshds[2].kill();
    let (n2, address2) = lab.nodes[1].clone();
    let mut squatter = Network::command(&n2, "python3")
        .arg("-c")
        .arg(format!(
            "import socket, time\ns = socket.socket()\n\
             s.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)\n\
             s.bind(('{address2}', {PORT}))\ns.listen()\n\
             print('listening', flush=True)\ntime.sleep(600)"
        ))
        .stdout(Stdio::piped())
        .spawn()
        .expect("python3");
    let mut line = String::new();
    std::io::BufRead::read_line(
        &mut std::io::BufReader::new(squatter.stdout.take().unwrap()),
        &mut line,
    )
    .unwrap();
    assert_eq!(line, "listening\n");
    lab.squatters.push(squatter);
    lab.servers.clear();
    let started = Instant::now();
    let out = lab.sfs(&login, &["start"]);
    lab.note_servers();
    assert!(!out.status.success(), "{}", text(&out));
    assert!(
        started.elapsed() < Duration::from_secs(50),
        "the failed hosts were not reported within the launcher's bounds"
    );
    let (stdout, stderr) = (
        String::from_utf8_lossy(&out.stdout),
        String::from_utf8_lossy(&out.stderr),
    );
    let (a1, a3) = (&addresses[0], &addresses[2]);
    assert!(
        stdout.contains(&format!("{a1}: server s1 ready on {a1}:{PORT}")),
        "{}",
        text(&out)
    );
    assert!(
        stderr.contains(&format!("{a3}: FAILED (s3): ssh failed (exit status: 255)"))
            && stderr.contains("Connection refused"),
        "{}",
        text(&out)
    );
    assert!(
        stderr.contains(&format!("{address2}: FAILED (s2): sfs on the host failed"))
            && stderr.contains("Address already in use"),
        "{}",
        text(&out)
    );
    assert!(
        stdout.contains(&format!(
            "sfs start: 1 of 3 host(s) ok (3 server(s)); failed: {address2} (s2), {a3} (s3)"
        )),
        "{}",
        text(&out)
    );
    assert!(
        stderr.contains(&format!(
            "start failed on 2 host(s): {address2} (s2), {a3} (s3)"
        )) && stderr.contains("`sfs stop` stops them"),
        "{}",
        text(&out)
    );
    // Stop what did start; the two others are reported as not running.
    for mut child in lab.squatters.drain(..) {
        let _ = child.kill();
        let _ = child.wait();
    }
    let out = lab.sfs(&other, &["stop"]);
    assert!(out.status.success(), "{}", text(&out));
    let stdout = String::from_utf8_lossy(&out.stdout);
    assert!(
        stdout.contains(&format!("{a1}: server s1 stopped"))
            && stdout.contains(&format!("{a3}: server s3 not running")),
        "{}",
        text(&out)
    );
    lab.wait_servers_gone();
}
