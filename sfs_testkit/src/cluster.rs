//! A real SFS cluster for integration tests: N `sfs server` processes on
//! 127.0.0.1, state in a temp dir, started and awaited through their ready
//! files, and killed when the test ends, whether it passed or panicked.
//!
//! Ports: the kit binds each server's RPC listener on port 0 (the system
//! picks a free port), writes the ports it got into the hostfile, and hands
//! each listener to its server process (`sfs server --listen-fd`), so no
//! other process can take a port between its choice and the server's
//! start. Data ports are picked by the servers (`data_port_offset` 0) and
//! reported to clients in the handshake. A server is ready when its ready
//! file ([`Ready`]) names its pid and its hostfile address.

use sfs_client::Client;
use sfs_global::config::Config;
use sfs_global::hostfile::Hostfile;
use sfs_global::ready::Ready;
use std::net::TcpListener;
use std::os::fd::AsRawFd;
use std::os::unix::process::CommandExt;
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::time::{Duration, Instant};

/// The descriptor number a server process gets its listener at.
const LISTEN_FD: i32 = 3;

pub struct Cluster {
    pub dir: tempfile::TempDir,
    pub config: Config,
    pub config_path: PathBuf,
    pub hostfile: Hostfile,
    pub hostfile_path: PathBuf,
    servers: Vec<Option<Child>>,
    /// Each server's RPC listener, bound by the kit and handed to the
    /// server process at its next start (`sfs server --listen-fd`).
    listeners: Vec<Option<TcpListener>>,
    /// Added to `sfs server` at the first start only (`--restore`).
    first_start_args: Vec<String>,
}

impl Cluster {
    /// Starts `n` servers with the default config, adjusted by `tune`.
    pub fn start_with(n: usize, tune: impl FnOnce(&mut Config)) -> Cluster {
        Cluster::try_start_with(n, &[], tune).unwrap_or_else(|log| panic!("{log}"))
    }

    /// [`Cluster::start_with`], with `server_args` added to every server's
    /// first start; `Err` with the log of a server that exited during
    /// start-up.
    ///
    /// The RPC ports cannot be lost (the kit hands the listeners over), but
    /// a port a server binds itself at its RPC port plus an offset (the
    /// metrics port, `metrics_port_offset`; a data port with a
    /// `data_port_offset`) can already be taken, by another test or by a
    /// port the system picked: a start that fails with "Address already in
    /// use" is tried again with new ports (up to five times).
    pub fn try_start_with(
        n: usize,
        server_args: &[&str],
        tune: impl FnOnce(&mut Config),
    ) -> Result<Cluster, String> {
        let dir = tempfile::tempdir().expect("temp dir");
        let mut config = Config {
            rootdir: dir.path().join("root").display().to_string(),
            mountdir: "/sfs".into(),
            data_port_offset: 0,
            connect_timeout_ms: 2000,
            request_timeout_ms: 6000,
            ..Config::default()
        };
        tune(&mut config);
        let default_root = config.rootdir == dir.path().join("root").display().to_string();
        let mut dir = Some(dir);
        for attempt in 1.. {
            // A failed attempt's directory went with it: a new one, and the
            // root inside it unless `tune` chose another.
            let dir = dir
                .take()
                .unwrap_or_else(|| tempfile::tempdir().expect("temp dir"));
            let mut config = config.clone();
            if default_root {
                config.rootdir = dir.path().join("root").display().to_string();
            }
            match Cluster::try_start(dir, config, n, server_args) {
                Err(log) if attempt < 5 && log.contains("Address already in use") => continue,
                started => return started,
            }
        }
        unreachable!("the loop returns")
    }

    fn try_start(
        dir: tempfile::TempDir,
        config: Config,
        n: usize,
        server_args: &[&str],
    ) -> Result<Cluster, String> {
        let config_path = dir.path().join("config.json");
        std::fs::write(&config_path, config.to_json_pretty()).unwrap();
        let listeners: Vec<TcpListener> = (0..n)
            .map(|_| TcpListener::bind("127.0.0.1:0").expect("binding a loopback port"))
            .collect();
        let hosts: String = listeners
            .iter()
            .enumerate()
            .map(|(i, l)| format!("s{i} {}\n", l.local_addr().expect("its address")))
            .collect();
        let hostfile_path = dir.path().join("hostfile");
        std::fs::write(&hostfile_path, &hosts).unwrap();
        let hostfile = Hostfile::load(&hostfile_path).unwrap();
        let mut cluster = Cluster {
            dir,
            config,
            config_path,
            hostfile,
            hostfile_path,
            servers: (0..n).map(|_| None).collect(),
            listeners: listeners.into_iter().map(Some).collect(),
            first_start_args: server_args.iter().map(|a| a.to_string()).collect(),
        };
        for i in 0..n {
            cluster.spawn(i);
        }
        for i in 0..n {
            // On failure `cluster` is dropped: its servers are killed.
            cluster.ready_or_exited(i)?;
        }
        cluster.first_start_args.clear();
        Ok(cluster)
    }

    pub fn start(n: usize) -> Cluster {
        Cluster::start_with(n, |_| {})
    }

    fn ready_file(&self, i: usize) -> PathBuf {
        sfs_global::ready::Ready::path(&self.config, &self.hostfile.hosts[i].name)
    }

    pub fn log_file(&self, i: usize) -> PathBuf {
        self.dir.path().join(format!("server{i}.log"))
    }

    /// Starts server `i` on the listener the kit holds for it (bound again
    /// on its port when it was handed to an earlier start: the port is free
    /// once that server is gone).
    fn spawn(&mut self, i: usize) {
        let _ = std::fs::remove_file(self.ready_file(i));
        let address = self.hostfile.hosts[i].endpoint();
        let listener = self.listeners[i].take().unwrap_or_else(|| {
            TcpListener::bind(&address)
                .unwrap_or_else(|e| panic!("binding server {i}'s address {address} again: {e}"))
        });
        let log = std::fs::OpenOptions::new()
            .create(true)
            .append(true)
            .open(self.log_file(i))
            .unwrap();
        let mut command = self.sfs_command();
        command
            .args(["server", "--id", &self.hostfile.hosts[i].name])
            .args(["--listen-fd", &LISTEN_FD.to_string()])
            .args(&self.first_start_args)
            .env("SFS_LOG", &self.config.log_level)
            .stdout(log.try_clone().unwrap())
            .stderr(log);
        let fd = listener.as_raw_fd();
        // SAFETY: the closure runs in the child between fork and exec and
        // calls only dup2 and fcntl, which are async-signal-safe; `fd` is
        // the listener's descriptor, open in the parent and so in the child.
        unsafe {
            command.pre_exec(move || {
                // dup2 onto another number leaves the copy without
                // close-on-exec; onto itself it changes nothing, so clear it.
                let moved = if fd == LISTEN_FD {
                    libc::fcntl(fd, libc::F_SETFD, 0)
                } else {
                    libc::dup2(fd, LISTEN_FD)
                };
                if moved < 0 {
                    return Err(std::io::Error::last_os_error());
                }
                Ok(())
            });
        }
        let child = command.spawn().expect("spawning sfs server");
        // The server has its copy; the kit's goes, so that a stopped server's
        // port refuses connections as a dead server's does.
        drop(listener);
        self.servers[i] = Some(child);
    }

    fn wait_ready(&mut self, i: usize) {
        if let Err(log) = self.ready_or_exited(i) {
            panic!("{log}");
        }
    }

    /// Waits until server `i` is ready; `Err` with its log if it exited.
    fn ready_or_exited(&mut self, i: usize) -> Result<(), String> {
        let deadline = Instant::now() + Duration::from_secs(60);
        let ready = self.ready_file(i);
        loop {
            let child = self.servers[i].as_mut().expect("server spawned");
            if let Some(said) = Ready::read(&ready).filter(|r| r.pid == child.id()) {
                let address = self.hostfile.hosts[i].endpoint();
                assert_eq!(said.address, address, "server {i} serves elsewhere");
                return Ok(());
            }
            if let Some(status) = child.try_wait().unwrap() {
                self.servers[i] = None;
                return Err(format!(
                    "server {i} exited during start-up ({status}):\n{}",
                    std::fs::read_to_string(self.log_file(i)).unwrap_or_default()
                ));
            }
            assert!(Instant::now() < deadline, "server {i} not ready in time");
            std::thread::sleep(Duration::from_millis(10));
        }
    }

    /// A fresh client of this cluster.
    pub fn client(&self) -> Client {
        Client::new(self.config.clone(), self.hostfile.clone()).expect("client")
    }

    /// SIGKILL: the server dies without any chance to clean up.
    pub fn kill9(&mut self, i: usize) {
        if let Some(mut child) = self.servers[i].take() {
            child.kill().unwrap();
            child.wait().unwrap();
        }
    }

    /// SIGTERM and wait: the graceful path; asserts exit status 0.
    pub fn stop(&mut self, i: usize) {
        if let Some(mut child) = self.servers[i].take() {
            let pid = rustix::process::Pid::from_raw(child.id() as i32).unwrap();
            rustix::process::kill_process(pid, rustix::process::Signal::TERM).unwrap();
            let status = child.wait().unwrap();
            assert!(
                status.success(),
                "server {i} exited with {status}:\n{}",
                std::fs::read_to_string(self.log_file(i)).unwrap_or_default()
            );
        }
    }

    pub fn stop_all(&mut self) {
        for i in 0..self.servers.len() {
            self.stop(i);
        }
    }

    /// Starts every stopped server again on the same directories and ports.
    pub fn restart_stopped(&mut self) {
        let stopped: Vec<usize> = (0..self.servers.len())
            .filter(|&i| self.servers[i].is_none())
            .collect();
        for &i in &stopped {
            self.spawn(i);
        }
        for &i in &stopped {
            self.wait_ready(i);
        }
    }

    /// Whether server `i` is still running (it has not exited).
    pub fn running(&mut self, i: usize) -> bool {
        match self.servers[i].as_mut() {
            Some(child) => child.try_wait().unwrap().is_none(),
            None => false,
        }
    }

    /// Waits (up to a minute, then panics; `Drop` kills it) until server
    /// `i` exits by itself, after `sfs stop`, and returns its exit status.
    pub fn wait_exit(&mut self, i: usize) -> std::process::ExitStatus {
        let deadline = Instant::now() + Duration::from_secs(60);
        loop {
            let child = self.servers[i].as_mut().expect("server running");
            if let Some(status) = child.try_wait().unwrap() {
                self.servers[i] = None;
                return status;
            }
            assert!(Instant::now() < deadline, "server {i} still running");
            std::thread::sleep(Duration::from_millis(10));
        }
    }

    /// The `sfs` command with this cluster's config and hostfile, for
    /// callers that add environment variables or run it in a pipeline.
    pub fn sfs_command(&self) -> Command {
        let mut command = Command::new(&crate::artifacts().sfs);
        command
            .arg("--config")
            .arg(&self.config_path)
            .arg("--hostfile")
            .arg(&self.hostfile_path)
            .stdin(Stdio::null());
        command
    }

    /// Runs the `sfs` binary against this cluster.
    pub fn sfs(&self, args: &[&str]) -> std::process::Output {
        self.sfs_command().args(args).output().expect("running sfs")
    }

    /// Runs the `sfs` binary against this cluster, asserting success, and
    /// returns its standard output.
    pub fn sfs_ok(&self, args: &[&str]) -> String {
        let out = self.sfs(args);
        assert!(
            out.status.success(),
            "sfs {args:?}: {}",
            String::from_utf8_lossy(&out.stderr)
        );
        String::from_utf8(out.stdout).unwrap()
    }

    pub fn path(&self) -> &Path {
        self.dir.path()
    }
}

impl Drop for Cluster {
    fn drop(&mut self) {
        for child in self.servers.iter_mut().flatten() {
            let _ = child.kill();
            let _ = child.wait();
        }
    }
}

/// Bytes that differ by position and seed, so a chunk at the wrong offset shows.
pub fn pattern(seed: u64, len: usize) -> Vec<u8> {
    (0..len as u64)
        .map(|i| (i.wrapping_mul(31).wrapping_add(seed.wrapping_mul(131)) % 251) as u8)
        .collect()
}

/// Writes `data` at `offset` of `path` (created 0644 if missing) and closes it.
pub fn write_at(client: &Client, path: &str, offset: u64, data: &[u8]) {
    let fd = client
        .open(path, libc::O_WRONLY | libc::O_CREAT, 0o644)
        .unwrap();
    assert_eq!(client.pwrite(fd, data, offset).unwrap(), data.len());
    client.close(fd).unwrap();
}

/// A finished command's status, standard output and error output, for
/// assertion messages.
pub fn describe(out: &std::process::Output) -> String {
    format!(
        "status {}\nstdout: {}\nstderr: {}",
        out.status,
        String::from_utf8_lossy(&out.stdout),
        String::from_utf8_lossy(&out.stderr)
    )
}
