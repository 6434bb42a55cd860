//! Starting, stopping and watching the servers of a hostfile.
//!
//! `sfs start` launches `sfs server --id NAME` for every hostfile entry
//! whose address belongs to this machine, detached in its own session with
//! its log in `rootdir/NAME/server.log`, and waits for each one's ready file
//! (written by the server once both listeners accept), so a job script can
//! use SFS as soon as `sfs start` returns.
//!
//! Before it starts any server, `sfs start` makes the job secret's file if
//! there is none (docs/security.md).
//!
//! `sfs stop` sends the `Shutdown` control RPC to every server of the
//! hostfile, on this machine or not, so that it works from a login node as
//! well as from a node of the job; it then waits until each server's process
//! has exited (on this machine, where its ready file gives the pid) or its
//! RPC port refuses connections (elsewhere). It fails when it stopped
//! nothing, or when a server could neither be asked nor found down.

use crate::Setup;
use anyhow::{bail, Context, Result};
use sfs_client::Client;
use sfs_global::hostfile::HostEntry;
use std::io::IsTerminal;
use std::net::{SocketAddr, TcpStream};
use std::os::unix::fs::{DirBuilderExt, OpenOptionsExt};
use std::os::unix::process::CommandExt;
use std::path::Path;
use std::process::{Command, Stdio};
use std::time::{Duration, Instant};

/// How long `sfs start` waits for a server to report ready.
const START_TIMEOUT: Duration = Duration::from_secs(60);
/// How long `sfs stop` waits for a server process to exit.
const STOP_TIMEOUT: Duration = Duration::from_secs(60);
/// Interval at which readiness and exit are checked.
const POLL: Duration = Duration::from_millis(20);

fn ready_pid(ready_file: &Path) -> Option<i32> {
    let text = std::fs::read_to_string(ready_file).ok()?;
    let json: serde_json::Value = serde_json::from_str(&text).ok()?;
    json.get("pid")?
        .as_i64()
        .and_then(|p| i32::try_from(p).ok())
}

fn process_alive(pid: i32) -> bool {
    // /proc/PID exists while the process (or its zombie) exists; a zombie of
    // ours is reaped by try_wait in `start`, and servers are not our children
    // in `stop`.
    let stat = std::fs::read_to_string(format!("/proc/{pid}/stat")).unwrap_or_default();
    !stat.is_empty() && !stat.contains(") Z ")
}

fn log_tail(log: &Path) -> String {
    let text = std::fs::read_to_string(log).unwrap_or_default();
    let lines: Vec<&str> = text.lines().collect();
    lines[lines.len().saturating_sub(15)..].join("\n")
}

pub fn start(setup: &Setup, restore: bool) -> Result<()> {
    let local = setup.hostfile.local_entries();
    if local.is_empty() {
        bail!(
            "{}: no server of the hostfile has an address on this machine",
            setup.hostfile_path.display()
        );
    }
    let duplicates = sfs_global::hostfile::duplicate_addresses(&setup.hostfile);
    if !duplicates.is_empty() {
        bail!(
            "the hostfile names one server twice (placement would count it as two):\n  {}",
            duplicates.join("\n  ")
        );
    }
    // The job secret (docs/security.md): made here, once, before the
    // servers start, so they and every client of the job read one file.
    sfs_global::secret::for_server(&setup.config, &setup.hostfile)
        .map_err(|e| anyhow::anyhow!("{e}"))?;
    let exe = std::env::current_exe().context("locating the sfs binary")?;
    let mut launched = Vec::new();
    for entry in local {
        let run_dir = setup.config.run_dir(&entry.name);
        // Private, as the server makes it (docs/security.md): the log names
        // the job's paths.
        std::fs::DirBuilder::new()
            .recursive(true)
            .mode(0o700)
            .create(&run_dir)
            .with_context(|| format!("creating {}", run_dir.display()))?;
        let ready = run_dir.join("ready");
        if let Some(pid) = ready_pid(&ready).filter(|&p| process_alive(p)) {
            outln!("server {} already running (pid {pid})", entry.name)?;
            continue;
        }
        let _ = std::fs::remove_file(&ready);
        let log_path = run_dir.join("server.log");
        let log = std::fs::OpenOptions::new()
            .create(true)
            .append(true)
            .mode(0o600)
            .open(&log_path)
            .with_context(|| format!("opening {}", log_path.display()))?;
        let mut command = Command::new(&exe);
        if let Some(config) = &setup.config_path {
            command.arg("--config").arg(config);
        }
        let child = command
            .arg("--hostfile")
            .arg(&setup.hostfile_path)
            .arg("server")
            .arg("--id")
            .arg(&entry.name)
            .args(restore.then_some("--restore"))
            .stdin(Stdio::null())
            .stdout(log.try_clone()?)
            .stderr(log)
            .process_group(0)
            .spawn()
            .with_context(|| format!("launching server {}", entry.name))?;
        launched.push((entry.clone(), child, ready, log_path));
    }
    for (entry, mut child, ready, log_path) in launched {
        let deadline = Instant::now() + START_TIMEOUT;
        loop {
            if ready_pid(&ready) == Some(child.id() as i32) {
                outln!(
                    "server {} ready on {} (pid {})",
                    entry.name,
                    entry.endpoint(),
                    child.id()
                )?;
                break;
            }
            if let Some(status) = child.try_wait()? {
                bail!(
                    "server {} exited during start-up ({status}); its log {} ends with:\n{}",
                    entry.name,
                    log_path.display(),
                    log_tail(&log_path)
                );
            }
            if Instant::now() > deadline {
                bail!(
                    "server {} not ready after {START_TIMEOUT:?}; see {}",
                    entry.name,
                    log_path.display()
                );
            }
            std::thread::sleep(POLL);
        }
    }
    Ok(())
}

/// What a connection attempt to a server's RPC port found.
enum Probe {
    Listening,
    /// Nothing listens there: the server is not running (or not on this
    /// address), a definite answer.
    Refused,
    /// No answer either way (timeout, unreachable network, no address).
    Unknown(String),
}

fn probe(entry: &HostEntry, timeout: Duration) -> Probe {
    let address = match entry.socket_addr() {
        Ok(address) => address,
        Err(e) => return Probe::Unknown(format!("resolving {}: {e}", entry.host)),
    };
    match TcpStream::connect_timeout(&address, timeout) {
        Ok(_) => Probe::Listening,
        Err(e) if e.kind() == std::io::ErrorKind::ConnectionRefused => Probe::Refused,
        Err(e) => Probe::Unknown(e.to_string()),
    }
}

/// How `sfs stop` learns that a server it asked to stop has gone.
enum Gone {
    /// Its process (on this machine, pid from the ready file) has exited:
    /// the metadata store is flushed and the lock released.
    ProcessExited(i32),
    /// Its RPC port refuses connections: a server on another machine, or
    /// one whose ready file is not under this config's `rootdir`. The
    /// process may still be flushing when this is seen.
    PortClosed(SocketAddr),
    /// Its address does not resolve any more; nothing to wait for.
    Unknown,
}

impl Gone {
    fn of(entry: &HostEntry, pid: Option<i32>) -> Gone {
        match (pid, entry.socket_addr()) {
            (Some(pid), _) => Gone::ProcessExited(pid),
            (None, Ok(address)) => Gone::PortClosed(address),
            (None, Err(_)) => Gone::Unknown,
        }
    }

    fn still_there(&self, connect_timeout: Duration) -> bool {
        match self {
            Gone::ProcessExited(pid) => process_alive(*pid),
            Gone::PortClosed(address) => {
                TcpStream::connect_timeout(address, connect_timeout).is_ok()
            }
            Gone::Unknown => false,
        }
    }

    fn wait(&self, name: &str, connect_timeout: Duration) -> Result<()> {
        let deadline = Instant::now() + STOP_TIMEOUT;
        while self.still_there(connect_timeout) {
            if Instant::now() > deadline {
                match self {
                    Gone::ProcessExited(pid) => {
                        bail!("server {name} (pid {pid}) still running after {STOP_TIMEOUT:?}")
                    }
                    _ => bail!(
                        "server {name} still accepts connections {STOP_TIMEOUT:?} after it was asked to stop"
                    ),
                }
            }
            std::thread::sleep(POLL);
        }
        Ok(())
    }
}

/// The live pid of a server on this machine, from its ready file. Only for
/// local entries: `rootdir` may be shared between machines, and a pid of
/// another machine means nothing here.
fn local_pid(setup: &Setup, entry: &HostEntry) -> Option<i32> {
    if !entry.is_local() {
        return None;
    }
    ready_pid(&setup.config.run_dir(&entry.name).join("ready")).filter(|&p| process_alive(p))
}

pub fn stop(setup: &Setup) -> Result<()> {
    let connect_timeout = Duration::from_millis(setup.config.connect_timeout_ms.max(1));
    // Without the job secret no server can be asked; the servers that
    // are not running are still found (and a secret that was never made
    // means none of this job ever started).
    let client = Client::new(setup.config.clone(), setup.hostfile.clone());
    let mut stopping = Vec::new();
    let mut not_running = Vec::new();
    let mut unreachable = Vec::new();
    for entry in &setup.hostfile.hosts {
        let pid = local_pid(setup, entry);
        let asked = match &client {
            Ok(client) => client.shutdown_server(entry.index),
            Err(e) => Err(e.clone()),
        };
        let error = match asked {
            Ok(()) => {
                stopping.push((entry, Gone::of(entry, pid)));
                continue;
            }
            Err(e) => e,
        };
        if let Some(p) = pid {
            // The process lives but does not answer: ask it the Unix way.
            eprintln!(
                "server {}: shutdown request failed ({error}); sending SIGTERM to {p}",
                entry.name
            );
            let signalled = rustix::process::Pid::from_raw(p)
                .ok_or(rustix::io::Errno::SRCH)
                .and_then(|pid| rustix::process::kill_process(pid, rustix::process::Signal::TERM));
            match signalled {
                Ok(()) => stopping.push((entry, Gone::ProcessExited(p))),
                Err(e) => unreachable.push(format!(
                    "{} {}: pid {p} cannot be signalled ({e}) (shutdown request: {error})",
                    entry.name,
                    entry.endpoint()
                )),
            }
            continue;
        }
        match probe(entry, connect_timeout) {
            Probe::Refused => not_running.push(entry),
            Probe::Listening => unreachable.push(format!(
                "{} {}: listening, but the shutdown request failed: {error}",
                entry.name,
                entry.endpoint()
            )),
            Probe::Unknown(why) => unreachable.push(format!(
                "{} {}: {why} (shutdown request: {error})",
                entry.name,
                entry.endpoint()
            )),
        }
    }
    // Close this client's connections before waiting: a server drains its
    // open connections before it exits, and an idle one of ours (nobody
    // drives a current-thread runtime between calls) would hold it until its
    // drain timeout.
    drop(client);
    for (entry, gone) in &stopping {
        gone.wait(&entry.name, connect_timeout)?;
        outln!("server {} stopped ({})", entry.name, entry.endpoint())?;
    }
    for entry in &not_running {
        outln!(
            "server {} not running (nothing listens on {})",
            entry.name,
            entry.endpoint()
        )?;
    }
    let hostfile = setup.hostfile_path.display();
    if !unreachable.is_empty() {
        bail!(
            "{} server(s) of {hostfile} could not be asked to stop and may still run:\n  {}",
            unreachable.len(),
            unreachable.join("\n  ")
        );
    }
    if stopping.is_empty() {
        let hosts: Vec<String> = setup
            .hostfile
            .hosts
            .iter()
            .map(|h| format!("{} {}", h.name, h.endpoint()))
            .collect();
        bail!(
            "nothing stopped: no server of {hostfile} is running (nothing listens on {})",
            hosts.join(", ")
        );
    }
    Ok(())
}

pub fn serve(setup: Setup, id: Option<String>, restore: bool) -> Result<()> {
    let filter = std::env::var("SFS_LOG").unwrap_or_else(|_| setup.config.log_level.clone());
    tracing_subscriber::fmt()
        .with_env_filter(
            tracing_subscriber::EnvFilter::try_new(&filter)
                .with_context(|| format!("bad log filter {filter:?}"))?,
        )
        .with_writer(std::io::stderr)
        // Colour only for a person watching a terminal: `sfs start` sends
        // this to `server.log`, where escape codes are noise to grep.
        .with_ansi(std::io::stderr().is_terminal())
        .init();
    let options = sfs_server::ServerOptions {
        config: setup.config,
        hostfile: setup.hostfile,
        server_name: id,
        secret: None,
        restore,
    };
    let runtime = tokio::runtime::Builder::new_multi_thread()
        .enable_all()
        .thread_name("sfs-server")
        .build()
        .context("starting the server runtime")?;
    runtime.block_on(sfs_server::run(options))
}
