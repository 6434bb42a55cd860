//! `sfs clean`: removes every server's state on every host once the job is
//! done with it — the server's directory `rootdir/NAME` (chunk store,
//! metadata, log, ready and lock files) and `metadir/NAME` when `metadir`
//! is set — this machine's directly, the other hosts' through the launcher
//! (`sfs node clean`).
//!
//! It refuses while any server of the hostfile answers on its port, and
//! each host refuses again for a server whose lock file is held (a server
//! that runs but cannot be reached from here). It leaves alone what
//! outlives the job: the object back end (also the `dir` back end's
//! directory, `rootdir/backend` by default, which no server's directory
//! may overlap) and the job secret.

use crate::report::{self, Outcome};
use crate::servers::{self, Probe};
use crate::{launcher, Setup};
use anyhow::{bail, Result};
use sfs_global::config::Config;
use sfs_global::hostfile::HostEntry;
use std::path::PathBuf;
use std::time::Duration;

/// `sfs clean` over the whole hostfile.
pub fn clean(setup: &Setup) -> Result<()> {
    let connect_timeout = Duration::from_millis(setup.config.connect_timeout_ms.max(1));
    let hosts = &setup.hostfile.hosts;
    let probes: Vec<Probe> = std::thread::scope(|scope| {
        let threads: Vec<_> = hosts
            .iter()
            .map(|entry| scope.spawn(move || servers::probe(entry, connect_timeout)))
            .collect();
        threads
            .into_iter()
            .map(|t| t.join().expect("probing a port does not panic"))
            .collect()
    });
    let running: Vec<String> = hosts
        .iter()
        .zip(&probes)
        .filter(|(_, probe)| matches!(probe, Probe::Listening))
        .map(|(entry, _)| format!("{} ({})", entry.name, entry.endpoint()))
        .collect();
    if !running.is_empty() {
        bail!(
            "nothing removed: {} server(s) still running: {}; stop them first with `sfs stop`",
            running.len(),
            running.join(", ")
        );
    }
    let (local, remote): (Vec<&HostEntry>, Vec<&HostEntry>) = hosts
        .iter()
        .partition(|e| sfs_rpc::locality::is_local(e) && !launcher::takes_every_host(setup));
    let groups = launcher::group_by_host(remote);
    // A secret is not needed to remove files; the far side ignores it.
    let outcomes = std::thread::scope(|scope| {
        let there =
            scope.spawn(|| launcher::run(setup, None, &groups, &launcher::NodeAction::Clean));
        let mut outcomes = clean_here(&setup.config, &local);
        outcomes.extend(there.join().expect("the launcher thread does not panic"));
        outcomes
    });
    report::print("clean", &outcomes)
}

/// Removes the state of `entries`, servers of this machine; one outcome
/// per server.
pub fn clean_here(config: &Config, entries: &[&HostEntry]) -> Vec<Outcome> {
    entries
        .iter()
        .map(|entry| Outcome::of_server(entry, clean_server(config, entry)))
        .collect()
}

/// True when a server holds the lock file `run_dir/lock` (the server keeps
/// an exclusive `flock` on it while it runs).
fn lock_held(run_dir: &std::path::Path) -> bool {
    let Ok(file) = std::fs::File::open(run_dir.join("lock")) else {
        return false;
    };
    // Our lock, if we get it, goes with `file`.
    matches!(
        rustix::fs::flock(&file, rustix::fs::FlockOperation::NonBlockingLockExclusive),
        Err(rustix::io::Errno::WOULDBLOCK)
    )
}

fn clean_server(config: &Config, entry: &HostEntry) -> Result<String, String> {
    let run_dir = config.run_dir(&entry.name);
    if lock_held(&run_dir) {
        return Err(format!(
            "server {} is running here (it holds {}): stop it first with `sfs stop`",
            entry.name,
            run_dir.join("lock").display()
        ));
    }
    let mut dirs: Vec<PathBuf> = vec![run_dir];
    if !config.metadir.is_empty() {
        dirs.push(config.meta_dir(&entry.name));
    }
    let mut removed = Vec::new();
    for dir in &dirs {
        match std::fs::remove_dir_all(dir) {
            Ok(()) => removed.push(dir.display().to_string()),
            Err(e) if e.kind() == std::io::ErrorKind::NotFound => {}
            Err(e) => {
                return Err(format!(
                    "server {}: cannot remove {}: {e}",
                    entry.name,
                    dir.display()
                ))
            }
        }
    }
    Ok(match removed.is_empty() {
        true => format!(
            "server {}: nothing to remove ({} does not exist)",
            entry.name,
            dirs[0].display()
        ),
        false => format!("server {}: removed {}", entry.name, removed.join(" and ")),
    })
}

#[cfg(test)]
mod tests {
    use super::*;
    use sfs_global::hostfile::Hostfile;

    #[test]
    fn removes_a_servers_directories_but_not_while_its_lock_is_held() {
        let dir = tempfile::tempdir().unwrap();
        let config = Config {
            rootdir: dir.path().join("root").display().to_string(),
            metadir: dir.path().join("meta").display().to_string(),
            ..Config::default()
        };
        let hostfile = Hostfile::parse("s0 192.0.2.1\n", "h").unwrap();
        let entry = &hostfile.hosts[0];
        let run_dir = config.run_dir("s0");
        std::fs::create_dir_all(run_dir.join("chunks")).unwrap();
        std::fs::create_dir_all(config.meta_dir("s0")).unwrap();
        let lock = std::fs::File::create(run_dir.join("lock")).unwrap();
        rustix::fs::flock(&lock, rustix::fs::FlockOperation::LockExclusive).unwrap();
        let e = clean_server(&config, entry).unwrap_err();
        assert!(e.contains("server s0 is running here"), "{e}");
        assert!(run_dir.exists());
        drop(lock);
        let done = clean_server(&config, entry).unwrap();
        assert!(
            done.starts_with("server s0: removed ") && done.contains(" and "),
            "{done}"
        );
        assert!(!run_dir.exists() && !config.meta_dir("s0").exists());
        assert!(dir.path().join("root").exists(), "the rootdir itself stays");
        let again = clean_server(&config, entry).unwrap();
        assert!(again.contains("nothing to remove"), "{again}");
    }
}
