//! Starting, stopping and watching the servers of a hostfile.
//!
//! `sfs start` launches `sfs server --id NAME` for every hostfile entry
//! whose address belongs to this machine, detached in its own session with
//! its log in `rootdir/NAME/server.log`, and waits for each one's ready file
//! (written by the server once both listeners accept), so a job script can
//! use SFS as soon as `sfs start` returns. `sfs stop` asks each local server
//! to shut down over gRPC and waits until its process has exited.

use crate::Setup;
use anyhow::{bail, Context, Result};
use sfs_client::Client;
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

pub fn start(setup: &Setup) -> Result<()> {
    let local = setup.hostfile.local_entries();
    if local.is_empty() {
        bail!(
            "{}: no server of the hostfile has an address on this machine",
            setup.hostfile_path.display()
        );
    }
    let exe = std::env::current_exe().context("locating the sfs binary")?;
    let mut launched = Vec::new();
    for entry in local {
        let run_dir = setup.config.run_dir(&entry.name);
        std::fs::create_dir_all(&run_dir)
            .with_context(|| format!("creating {}", run_dir.display()))?;
        let ready = run_dir.join("ready");
        if let Some(pid) = ready_pid(&ready).filter(|&p| process_alive(p)) {
            println!("server {} already running (pid {pid})", entry.name);
            continue;
        }
        let _ = std::fs::remove_file(&ready);
        let log_path = run_dir.join("server.log");
        let log = std::fs::OpenOptions::new()
            .create(true)
            .append(true)
            .open(&log_path)
            .with_context(|| format!("opening {}", log_path.display()))?;
        let child = Command::new(&exe)
            .arg("--config")
            .arg(&setup.config_path)
            .arg("--hostfile")
            .arg(&setup.hostfile_path)
            .arg("server")
            .arg("--id")
            .arg(&entry.name)
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
                println!(
                    "server {} ready on {} (pid {})",
                    entry.name,
                    entry.endpoint(),
                    child.id()
                );
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

pub fn stop(setup: &Setup) -> Result<()> {
    let client = Client::new(setup.config.clone(), setup.hostfile.clone())?;
    let mut waiting = Vec::new();
    for entry in setup.hostfile.local_entries() {
        let ready = setup.config.run_dir(&entry.name).join("ready");
        let pid = ready_pid(&ready);
        match client.shutdown_server(entry.index) {
            Ok(()) => waiting.push((entry.name.clone(), pid)),
            Err(e) => match pid.filter(|&p| process_alive(p)) {
                Some(p) => {
                    // The process lives but does not answer: ask it the Unix way.
                    eprintln!(
                        "server {}: shutdown request failed ({e}); sending SIGTERM to {p}",
                        entry.name
                    );
                    if let Some(pid) = rustix::process::Pid::from_raw(p) {
                        let _ = rustix::process::kill_process(pid, rustix::process::Signal::TERM);
                    }
                    waiting.push((entry.name.clone(), Some(p)));
                }
                None => println!("server {} not running", entry.name),
            },
        }
    }
    // Close this client's connections before waiting: a server drains its
    // open connections before it exits, and an idle one of ours (nobody
    // drives a current-thread runtime between calls) would hold it until its
    // drain timeout.
    drop(client);
    for (name, pid) in waiting {
        let deadline = Instant::now() + STOP_TIMEOUT;
        if let Some(pid) = pid {
            while process_alive(pid) {
                if Instant::now() > deadline {
                    bail!("server {name} (pid {pid}) still running after {STOP_TIMEOUT:?}");
                }
                std::thread::sleep(POLL);
            }
        }
        println!("server {name} stopped");
    }
    Ok(())
}

fn human(bytes: u64) -> String {
    const UNITS: [&str; 6] = ["B", "KiB", "MiB", "GiB", "TiB", "PiB"];
    let mut value = bytes as f64;
    let mut unit = 0;
    while value >= 1024.0 && unit + 1 < UNITS.len() {
        value /= 1024.0;
        unit += 1;
    }
    if unit == 0 {
        format!("{bytes} B")
    } else {
        format!("{value:.1} {}", UNITS[unit])
    }
}

pub fn status(setup: &Setup) -> Result<()> {
    let client = Client::new(setup.config.clone(), setup.hostfile.clone())?;
    println!(
        "{:<12} {:<22} {:<4} {:<5} {:>10} {:>12} {:>12}",
        "SERVER", "ADDRESS", "UP", "DATA", "ENTRIES", "BYTES", "CAPACITY"
    );
    let mut down = 0;
    let transports = client.data_transports();
    for ((name, address, stats), data) in client.server_stats().into_iter().zip(transports) {
        let data = data.unwrap_or("-");
        match stats {
            Ok(s) => println!(
                "{name:<12} {address:<22} {:<4} {data:<5} {:>10} {:>12} {:>12}",
                "yes",
                s.entries,
                human(s.chunk_bytes),
                human(s.capacity_bytes)
            ),
            Err(e) => {
                down += 1;
                println!(
                    "{name:<12} {address:<22} {:<4} {data:<5} {:>10} {:>12} {:>12}  ({})",
                    "no", "-", "-", "-", e.errno
                );
            }
        }
    }
    if down > 0 {
        bail!("{down} server(s) down");
    }
    Ok(())
}

pub fn serve(setup: Setup, id: Option<String>) -> Result<()> {
    let filter = std::env::var("SFS_LOG").unwrap_or_else(|_| setup.config.log_level.clone());
    tracing_subscriber::fmt()
        .with_env_filter(
            tracing_subscriber::EnvFilter::try_new(&filter)
                .with_context(|| format!("bad log filter {filter:?}"))?,
        )
        .with_writer(std::io::stderr)
        .init();
    let options = sfs_server::ServerOptions {
        config: setup.config,
        hostfile: setup.hostfile,
        server_name: id,
    };
    let runtime = tokio::runtime::Builder::new_multi_thread()
        .enable_all()
        .thread_name("sfs-server")
        .build()
        .context("starting the server runtime")?;
    runtime.block_on(sfs_server::run(options))
}
