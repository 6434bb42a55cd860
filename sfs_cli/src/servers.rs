//! Starting, stopping and watching the servers of a hostfile.
//!
//! `sfs start` launches `sfs server --id NAME` for every hostfile entry
//! whose address belongs to this machine, detached in its own session with
//! its log in `rootdir/NAME/server.log`, and waits for each one's ready file
//! (written by the server once both listeners accept), so a job script can
//! use SFS as soon as `sfs start` returns. The servers of other hosts it
//! starts at the same time through the launcher (`crate::launcher`), which
//! runs the same code there (`sfs node start`).
//!
//! Before it starts any server, `sfs start` makes the job secret's file if
//! there is none (docs/security.md).
//!
//! `sfs stop` sends the `Shutdown` control RPC to every server of the
//! hostfile, on this machine or not, so that it works from a login node as
//! well as from a node of the job; it then waits until each server's process
//! has exited (on this machine, where its ready file gives the pid) or its
//! RPC port refuses connections (elsewhere), all servers at once. It fails
//! when it stopped nothing, or when a server could neither be asked nor
//! found down. Both report per host (`crate::report`).

use crate::report::{self, Outcome};
use crate::{launcher, Setup};
use anyhow::{bail, Context, Result};
use sfs_client::Client;
use sfs_global::hostfile::HostEntry;
use sfs_global::secret::Secret;
use std::io::IsTerminal;
use std::net::{SocketAddr, TcpStream};
use std::os::unix::fs::{DirBuilderExt, OpenOptionsExt};
use std::os::unix::process::CommandExt;
use std::path::{Path, PathBuf};
use std::process::{Command, Stdio};
use std::time::{Duration, Instant};

/// How long `sfs start` waits for a server to report ready.
const START_TIMEOUT: Duration = Duration::from_secs(60);
/// How long `sfs stop` waits for a server process to exit.
const STOP_TIMEOUT: Duration = Duration::from_secs(60);
/// Interval at which readiness and exit are checked.
const POLL: Duration = Duration::from_millis(20);

fn ready_pid(ready_file: &Path) -> Option<i32> {
    sfs_global::ready::Ready::read(ready_file)?.pid()
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

/// `sfs start`: this machine's servers directly, every other host's through
/// the launcher (all at once), then one report line per server or host and
/// a summary; fails naming each host where something failed. With
/// `local_only`, only this machine's servers (for a launcher of the job's
/// own, such as pdsh).
pub fn start(setup: &Setup, restore: bool, local_only: bool) -> Result<()> {
    let duplicates = sfs_rpc::locality::duplicate_addresses(&setup.hostfile);
    if !duplicates.is_empty() {
        bail!(
            "the hostfile names one server twice (placement would count it as two):\n  {}",
            duplicates.join("\n  ")
        );
    }
    // The job secret (docs/security.md): made here, once, before the
    // servers start, so they and every client of the job read one file.
    let (secret, _) = sfs_global::secret::for_server(&setup.config, &setup.hostfile)
        .map_err(|e| anyhow::anyhow!("{e}"))?;
    let (local, remote): (Vec<&HostEntry>, Vec<&HostEntry>) =
        setup.hostfile.hosts.iter().partition(|e| {
            sfs_rpc::locality::is_local(e) && (local_only || !launcher::takes_every_host(setup))
        });
    if local_only && local.is_empty() {
        bail!(
            "{}: no server of the hostfile has an address on this machine",
            setup.hostfile_path.display()
        );
    }
    let groups = match local_only {
        true => Vec::new(),
        false => launcher::group_by_host(remote),
    };
    let action = launcher::NodeAction::Start { restore };
    let outcomes = std::thread::scope(|scope| {
        let there = scope.spawn(|| launcher::run(setup, Some(&secret), &groups, &action));
        let mut outcomes = start_here(setup, &local, restore, None);
        outcomes.extend(there.join().expect("the launcher thread does not panic"));
        outcomes
    });
    let started = outcomes.iter().any(|o| o.result.is_ok());
    report::print("start", &outcomes).map_err(|e| match started {
        true => {
            anyhow::anyhow!("{e}; the servers that started keep running (`sfs stop` stops them)")
        }
        false => e,
    })
}

/// Starts `entries` on this machine, detached, and waits until each is
/// ready; one outcome per server. `secret` is handed to the servers in
/// their environment (`SFS_SECRET`) when given: `sfs node`, which received
/// it from the launcher; otherwise they find it as every process of the
/// job does.
pub fn start_here(
    setup: &Setup,
    entries: &[&HostEntry],
    restore: bool,
    secret: Option<&Secret>,
) -> Vec<Outcome> {
    let mut outcomes = Vec::new();
    let mut launched = Vec::new();
    for &entry in entries {
        match launch(setup, entry, restore, secret) {
            Ok(Launch::AlreadyRunning(pid)) => outcomes.push(Outcome::of_server(
                entry,
                Ok(format!("server {} already running (pid {pid})", entry.name)),
            )),
            Ok(Launch::Started(child, ready, log)) => launched.push((entry, child, ready, log)),
            Err(e) => outcomes.push(Outcome::of_server(
                entry,
                Err(format!("server {}: {e:#}", entry.name)),
            )),
        }
    }
    for (entry, child, ready, log_path) in launched {
        outcomes.push(Outcome::of_server(
            entry,
            wait_ready(entry, child, &ready, &log_path),
        ));
    }
    outcomes
}

/// What [`launch`] did for one server.
enum Launch {
    AlreadyRunning(i32),
    /// Spawned: the child, its ready file and its log.
    Started(std::process::Child, PathBuf, PathBuf),
}

fn launch(
    setup: &Setup,
    entry: &HostEntry,
    restore: bool,
    secret: Option<&Secret>,
) -> Result<Launch> {
    let exe = std::env::current_exe().context("locating the sfs binary")?;
    let run_dir = setup.config.run_dir(&entry.name);
    // Private, as the server makes it (docs/security.md): the log names
    // the job's paths.
    std::fs::DirBuilder::new()
        .recursive(true)
        .mode(0o700)
        .create(&run_dir)
        .with_context(|| format!("creating {}", run_dir.display()))?;
    let ready = sfs_global::ready::Ready::path(&setup.config, &entry.name);
    if let Some(pid) = ready_pid(&ready).filter(|&p| process_alive(p)) {
        return Ok(Launch::AlreadyRunning(pid));
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
    if let Some(secret) = secret {
        command.env(sfs_global::secret::SECRET_VAR, secret.to_hex());
    }
    command
        .arg("--hostfile")
        .arg(&setup.hostfile_path)
        .arg("server")
        .arg("--id")
        .arg(&entry.name)
        .args(restore.then_some("--restore"))
        .stdin(Stdio::null())
        .stdout(log.try_clone()?)
        .stderr(log)
        .process_group(0);
    // SAFETY: between fork and exec the child only makes one system call
    // (close_range, async-signal-safe) and allocates nothing.
    unsafe {
        command.pre_exec(close_inherited_descriptors);
    }
    let child = command.spawn().context("launching the server")?;
    Ok(Launch::Started(child, ready, log_path))
}

/// Marks every descriptor above standard error close-on-exec in a server
/// about to be exec'd. A server outlives the command that starts it, and
/// any descriptor it inherited without close-on-exec — the pipe through
/// which a batch system's script runner (Slurm's burst-buffer functions),
/// an ssh session or a `$(sfs start)` reads the starter's output — would
/// keep that reader waiting for an end of file until the server exits.
fn close_inherited_descriptors() -> std::io::Result<()> {
    /// `CLOSE_RANGE_CLOEXEC` (Linux 5.11): mark instead of closing, so the
    /// pipe through which Rust reports a failed exec keeps working.
    const CLOSE_RANGE_CLOEXEC: u32 = 1 << 2;
    // SAFETY: close_range(2) takes plain integers and only changes the
    // close-on-exec flags of this (forked) process's descriptors. Its
    // result is not looked at: on an older kernel (ENOSYS, EINVAL) the
    // server starts as before.
    unsafe { libc::syscall(libc::SYS_close_range, 3u32, u32::MAX, CLOSE_RANGE_CLOEXEC) };
    Ok(())
}

/// Waits until a launched server's ready file names it; the report line,
/// or why it is not ready (with the end of its log when it exited).
fn wait_ready(
    entry: &HostEntry,
    mut child: std::process::Child,
    ready: &Path,
    log_path: &Path,
) -> Result<String, String> {
    let deadline = Instant::now() + START_TIMEOUT;
    loop {
        if ready_pid(ready) == Some(child.id() as i32) {
            return Ok(format!(
                "server {} ready on {} (pid {})",
                entry.name,
                entry.endpoint(),
                child.id()
            ));
        }
        match child.try_wait() {
            Ok(Some(status)) => {
                return Err(format!(
                    "server {} exited during start-up ({status}); its log {} ends with:\n{}",
                    entry.name,
                    log_path.display(),
                    log_tail(log_path)
                ))
            }
            Ok(None) => {}
            Err(e) => return Err(format!("server {}: waiting for it: {e}", entry.name)),
        }
        if Instant::now() > deadline {
            return Err(format!(
                "server {} not ready after {START_TIMEOUT:?}; see {}",
                entry.name,
                log_path.display()
            ));
        }
        std::thread::sleep(POLL);
    }
}

/// What a connection attempt to a server's RPC port found.
pub enum Probe {
    Listening,
    /// Nothing listens there: the server is not running (or not on this
    /// address), a definite answer.
    Refused,
    /// No answer either way (timeout, unreachable network, no address).
    Unknown(String),
}

pub fn probe(entry: &HostEntry, timeout: Duration) -> Probe {
    let address = match sfs_rpc::locality::socket_addr(entry) {
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
        match (pid, sfs_rpc::locality::socket_addr(entry)) {
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
pub fn local_pid(setup: &Setup, entry: &HostEntry) -> Option<i32> {
    if !sfs_rpc::locality::is_local(entry) {
        return None;
    }
    ready_pid(&sfs_global::ready::Ready::path(&setup.config, &entry.name))
        .filter(|&p| process_alive(p))
}

/// What asking one server to stop found.
enum Asked {
    /// It was asked (or signalled) and is going.
    Stopping(Gone),
    /// Nothing listens on its port.
    NotRunning,
    /// It could not be asked and may still run.
    Failed(String),
}

/// Asks one server to stop: its `Shutdown` RPC, or SIGTERM for a local
/// process that does not answer; otherwise finds out whether anything
/// listens on its port.
fn ask_to_stop(
    setup: &Setup,
    client: &Result<Client, sfs_client::SfsError>,
    entry: &HostEntry,
    connect_timeout: Duration,
) -> Asked {
    let pid = local_pid(setup, entry);
    let asked = match client {
        Ok(client) => client.shutdown_server(entry.index),
        Err(e) => Err(e.clone()),
    };
    let error = match asked {
        Ok(()) => return Asked::Stopping(Gone::of(entry, pid)),
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
        return match signalled {
            Ok(()) => Asked::Stopping(Gone::ProcessExited(p)),
            Err(e) => Asked::Failed(format!(
                "server {} {}: pid {p} cannot be signalled ({e}) (shutdown request: {error})",
                entry.name,
                entry.endpoint()
            )),
        };
    }
    match probe(entry, connect_timeout) {
        Probe::Refused => Asked::NotRunning,
        Probe::Listening => Asked::Failed(format!(
            "server {} {}: listening, but the shutdown request failed: {error}",
            entry.name,
            entry.endpoint()
        )),
        Probe::Unknown(why) => Asked::Failed(format!(
            "server {} {}: {why} (shutdown request: {error}); it may still run",
            entry.name,
            entry.endpoint()
        )),
    }
}

/// `sfs stop`: asks every server of the hostfile at once, wherever it
/// runs, waits until each has gone, reports each by host with a summary;
/// fails naming the hosts of servers that could not be asked or did not
/// go, or when no server was running at all.
pub fn stop(setup: &Setup) -> Result<()> {
    let connect_timeout = Duration::from_millis(setup.config.connect_timeout_ms.max(1));
    // Without the job secret no server can be asked; the servers that
    // are not running are still found (and a secret that was never made
    // means none of this job ever started).
    let client = Client::new(setup.config.clone(), setup.hostfile.clone());
    let hosts = &setup.hostfile.hosts;
    let asked: Vec<Asked> = std::thread::scope(|scope| {
        let threads: Vec<_> = hosts
            .iter()
            .map(|entry| {
                let client = &client;
                scope.spawn(move || ask_to_stop(setup, client, entry, connect_timeout))
            })
            .collect();
        threads
            .into_iter()
            .map(|t| t.join().expect("asking a server to stop does not panic"))
            .collect()
    });
    // Close this client's connections before waiting: a server drains its
    // open connections before it exits, and an idle one of ours (nobody
    // drives a current-thread runtime between calls) would hold it until its
    // drain timeout.
    drop(client);
    let outcomes: Vec<Outcome> = std::thread::scope(|scope| {
        let threads: Vec<_> = hosts
            .iter()
            .zip(&asked)
            .map(|(entry, asked)| {
                scope.spawn(move || {
                    let result = match asked {
                        Asked::Stopping(gone) => gone
                            .wait(&entry.name, connect_timeout)
                            .map(|()| {
                                format!("server {} stopped ({})", entry.name, entry.endpoint())
                            })
                            .map_err(|e| e.to_string()),
                        Asked::NotRunning => Ok(format!(
                            "server {} not running (nothing listens on {})",
                            entry.name,
                            entry.endpoint()
                        )),
                        Asked::Failed(why) => Err(why.clone()),
                    };
                    Outcome::of_server(entry, result)
                })
            })
            .collect();
        threads
            .into_iter()
            .map(|t| t.join().expect("waiting for a server does not panic"))
            .collect()
    });
    report::print("stop", &outcomes)?;
    if !asked.iter().any(|a| matches!(a, Asked::Stopping(_))) {
        let all: Vec<String> = hosts
            .iter()
            .map(|h| format!("{} {}", h.name, h.endpoint()))
            .collect();
        bail!(
            "nothing stopped: no server of {} is running (nothing listens on {})",
            setup.hostfile_path.display(),
            all.join(", ")
        );
    }
    Ok(())
}

/// The listening socket inherited as descriptor `fd` (`sfs server
/// --listen-fd`), owned by this process from here on and closed on exec.
fn inherited_listener(fd: i32) -> Result<std::net::TcpListener> {
    if fd < 3 {
        bail!("--listen-fd {fd}: descriptors 0, 1 and 2 are the standard streams");
    }
    // SAFETY: fcntl with F_GETFD takes a number only and reads no memory.
    if unsafe { libc::fcntl(fd, libc::F_GETFD) } < 0 {
        bail!("--listen-fd {fd}: no such descriptor was inherited");
    }
    let mut listening: libc::c_int = 0;
    let mut len = std::mem::size_of::<libc::c_int>() as libc::socklen_t;
    // SAFETY: `listening` and `len` are valid for writes of the sizes given.
    let asked = unsafe {
        libc::getsockopt(
            fd,
            libc::SOL_SOCKET,
            libc::SO_ACCEPTCONN,
            (&mut listening as *mut libc::c_int).cast(),
            &mut len,
        )
    };
    if asked < 0 || listening == 0 {
        bail!("--listen-fd {fd}: not a listening socket");
    }
    // SAFETY: `fd` is open (checked above) and was handed to this process to
    // serve on: nothing else in it refers to that number (the number was
    // taken before this process started, so nothing it opened since got
    // it). The OwnedFd becomes the listener's and is closed with it.
    let owned = unsafe { <std::os::fd::OwnedFd as std::os::fd::FromRawFd>::from_raw_fd(fd) };
    rustix::io::fcntl_setfd(&owned, rustix::io::FdFlags::CLOEXEC)
        .with_context(|| format!("--listen-fd {fd}: cannot set close-on-exec"))?;
    Ok(std::net::TcpListener::from(owned))
}

pub fn serve(
    setup: Setup,
    id: Option<String>,
    restore: bool,
    listen_fd: Option<i32>,
) -> Result<()> {
    let listener = listen_fd
        .map(inherited_listener)
        .transpose()?
        .map(sfs_server::PreBound::new);
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
        listener,
    };
    let runtime = tokio::runtime::Builder::new_multi_thread()
        .enable_all()
        .thread_name("sfs-server")
        .build()
        .context("starting the server runtime")?;
    runtime.block_on(sfs_server::run(options))
}
