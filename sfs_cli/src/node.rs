//! `sfs node` (hidden): what the launcher runs on another host
//! (`crate::launcher`) — start or clean the servers it names, which live on
//! that host.
//!
//! Before it acts it checks that it reads what the launcher read: the
//! hostfile and config at the paths given must have the launcher's digests
//! (they differ when those paths are not on a file system shared by the
//! nodes, or name other files there), and a job secret file found here must
//! hold the secret the launcher sent on standard input. The secret reaches
//! the servers through their environment, never a command line.

use crate::Setup;
use anyhow::{anyhow, bail, Context, Result};
use sfs_global::hostfile::HostEntry;
use sfs_global::secret::{self, Lookup, Secret};
use std::io::BufRead;

/// What the launcher expects this host to read, as `--hostfile-digest` and
/// `--config-digest` give it (16 hex digits each).
pub struct Expected<'a> {
    pub hostfile_digest: &'a str,
    pub config_digest: &'a str,
}

/// What to do here.
pub enum Action<'a> {
    Start {
        restore: bool,
        servers: &'a [String],
    },
    Clean {
        servers: &'a [String],
    },
    /// A task of the srun launcher's step (`crate::launcher::srun`): start
    /// the servers of this task's slot, then stay until they exit.
    StepStart {
        restore: bool,
        slots: &'a [String],
    },
    /// A task of `sfs clean`'s srun step.
    StepClean {
        slots: &'a [String],
    },
}

pub fn run(setup: &Setup, expected: &Expected<'_>, action: &Action<'_>) -> Result<()> {
    match action {
        Action::StepStart { restore, slots } => {
            check_same_files(setup, expected)?;
            return step_start(setup, *restore, slots);
        }
        Action::StepClean { slots } => {
            check_same_files(setup, expected)?;
            return step_clean(setup, slots);
        }
        Action::Start { .. } | Action::Clean { .. } => {}
    }
    let mut line = String::new();
    std::io::stdin()
        .lock()
        .read_line(&mut line)
        .context("reading the job secret from standard input")?;
    check_same_files(setup, expected)?;
    let (names, outcomes) = match action {
        Action::Start { restore, servers } => {
            let secret = received_secret(setup, &line)?;
            let entries = entries(setup, servers)?;
            let outcomes = crate::servers::start_here(setup, &entries, *restore, Some(&secret));
            (servers, outcomes)
        }
        Action::Clean { servers } => {
            let entries = entries(setup, servers)?;
            (servers, crate::clean::clean_here(&setup.config, &entries))
        }
        Action::StepStart { .. } | Action::StepClean { .. } => unreachable!("handled above"),
    };
    let mut failed = Vec::new();
    for outcome in outcomes {
        match outcome.result {
            Ok(lines) => {
                for line in lines {
                    outln!("{line}")?;
                }
            }
            Err(why) => failed.push(why),
        }
    }
    if !failed.is_empty() {
        bail!(
            "{} of {} server(s) failed:\n{}",
            failed.len(),
            names.len(),
            failed.join("\n")
        );
    }
    Ok(())
}

/// The servers of this step task's slot (`SLURMD_NODENAME`, `SLURM_NODEID`).
fn slot_servers(slots: &[String]) -> Result<Vec<String>> {
    let name = std::env::var("SLURMD_NODENAME").ok();
    let id = std::env::var("SLURM_NODEID")
        .ok()
        .and_then(|v| v.parse::<usize>().ok());
    crate::launcher::srun::my_slot(slots, name.as_deref(), id).map_err(|e| anyhow!(e))
}

/// Prints a step task's report: its lines, then the final line the
/// launcher reads (`ready|failed|cleaned` and the slot's servers).
fn step_report(outcomes: &[crate::report::Outcome], servers: &[String], done: &str) -> bool {
    let mut ok = true;
    for outcome in outcomes {
        match &outcome.result {
            Ok(lines) => lines.iter().for_each(|l| println!("{l}")),
            Err(why) => {
                ok = false;
                println!("{why}");
            }
        }
    }
    let word = if ok { done } else { "failed" };
    println!(
        "{} {word} {}",
        crate::launcher::srun::FINAL,
        servers.join(",")
    );
    ok
}

/// `sfs node step-start`: starts this task's servers with the secret of
/// the step's environment, reports, then stays until every server that
/// started has exited — the servers are the task's children, so Slurm
/// tracks them as part of the step and signals them when the job ends.
fn step_start(setup: &Setup, restore: bool, slots: &[String]) -> Result<()> {
    let servers = slot_servers(slots)?;
    let secret = match std::env::var(secret::SECRET_VAR) {
        Ok(hex) => Secret::from_hex(&hex)
            .map_err(|e| anyhow!("{}: not a job secret: {e}", secret::SECRET_VAR))?,
        Err(_) => bail!(
            "no job secret in the step's environment ({})",
            secret::SECRET_VAR
        ),
    };
    let entries = entries(setup, &servers)?;
    let outcomes = crate::servers::start_here(setup, &entries, restore, Some(&secret));
    let ok = step_report(&outcomes, &servers, "ready");
    // Stay while any of this task's servers runs (`sfs stop` ends them).
    loop {
        let running: Vec<i32> = entries
            .iter()
            .filter_map(|e| crate::servers::local_pid(setup, e))
            .collect();
        if running.is_empty() {
            break;
        }
        std::thread::sleep(std::time::Duration::from_millis(250));
    }
    if !ok {
        bail!("not every server of this node started");
    }
    Ok(())
}

/// `sfs node step-clean`: removes this task's servers' state.
fn step_clean(setup: &Setup, slots: &[String]) -> Result<()> {
    let servers = slot_servers(slots)?;
    let entries = entries(setup, &servers)?;
    let outcomes = crate::clean::clean_here(&setup.config, &entries);
    if !step_report(&outcomes, &servers, "cleaned") {
        bail!("not every server's state was removed");
    }
    Ok(())
}

/// The hostfile entries named, refusing a name the hostfile does not have.
fn entries<'a>(setup: &'a Setup, names: &[String]) -> Result<Vec<&'a HostEntry>> {
    names
        .iter()
        .map(|name| {
            setup.hostfile.by_name(name).ok_or_else(|| {
                anyhow!(
                    "{}: no server named {name:?} (the launcher's hostfile has one)",
                    setup.hostfile_path.display()
                )
            })
        })
        .collect()
}

const SHARED: &str = "the launcher runs sfs on every node with the same config and hostfile \
                      paths, which must be on a shared file system (the same files at the same \
                      path on every node)";

fn check_same_files(setup: &Setup, expected: &Expected<'_>) -> Result<()> {
    let hostfile = format!("{:016x}", setup.hostfile.digest());
    if hostfile != expected.hostfile_digest {
        bail!(
            "the hostfile {} here differs from the launcher's (digest {hostfile}, the launcher's {}): {SHARED}",
            setup.hostfile_path.display(),
            expected.hostfile_digest
        );
    }
    let config = format!("{:016x}", setup.config.digest());
    if config != expected.config_digest {
        let which = match &setup.config_path {
            Some(path) => format!("the config {}", path.display()),
            None => "the built-in default config (no config file named, no ./config.json)".into(),
        };
        bail!(
            "{which} here differs from the launcher's (digest {config}, the launcher's {}): {SHARED}",
            expected.config_digest
        );
    }
    Ok(())
}

/// The secret the launcher sent, checked against a secret file that this
/// host finds (a stale or unshared file would lock this host's clients out).
fn received_secret(setup: &Setup, line: &str) -> Result<Secret> {
    let sent = Secret::from_hex(line)
        .map_err(|e| anyhow!("no job secret received on standard input: {e}"))?;
    if let Lookup::File { path, named_by } =
        secret::lookup(&setup.config, &setup.hostfile, secret::environment)
    {
        if path.exists() {
            let here = Secret::load(&path).map_err(|e| anyhow!("{e}"))?;
            if here != sent {
                bail!(
                    "the job secret {} (named by {named_by}) here differs from the launcher's: \
                     clients on this host would be refused; {SHARED}",
                    path.display()
                );
            }
        }
    }
    Ok(sent)
}

#[cfg(test)]
mod tests {
    use super::*;
    use sfs_global::config::Config;
    use sfs_global::hostfile::Hostfile;

    fn setup_in(dir: &std::path::Path) -> Setup {
        let hostfile_path = dir.join("hostfile");
        std::fs::write(&hostfile_path, "s0 192.0.2.1\n").unwrap();
        Setup {
            config: Config::default(),
            config_path: None,
            hostfile: Hostfile::load(&hostfile_path).unwrap(),
            hostfile_path,
        }
    }

    #[test]
    fn files_that_differ_from_the_launchers_are_refused_naming_them() {
        let dir = tempfile::tempdir().unwrap();
        let setup = setup_in(dir.path());
        let hostfile = format!("{:016x}", setup.hostfile.digest());
        let config = format!("{:016x}", setup.config.digest());
        let same = Expected {
            hostfile_digest: &hostfile,
            config_digest: &config,
        };
        check_same_files(&setup, &same).unwrap();
        let e = check_same_files(
            &setup,
            &Expected {
                hostfile_digest: "0000000000000001",
                config_digest: &config,
            },
        )
        .unwrap_err()
        .to_string();
        assert!(
            e.contains(&setup.hostfile_path.display().to_string())
                && e.contains("shared")
                && e.contains("0000000000000001"),
            "{e}"
        );
        let e = check_same_files(
            &setup,
            &Expected {
                hostfile_digest: &hostfile,
                config_digest: "0000000000000002",
            },
        )
        .unwrap_err()
        .to_string();
        assert!(e.contains("built-in default config"), "{e}");
    }

    #[test]
    fn a_secret_file_here_must_hold_the_secret_sent() {
        let dir = tempfile::tempdir().unwrap();
        let setup = setup_in(dir.path());
        let sent = Secret::generate().unwrap();
        let line = format!("{}\n", sent.to_hex());
        // No file here: the secret sent is used.
        assert_eq!(received_secret(&setup, &line).unwrap(), sent);
        assert!(received_secret(&setup, "\n")
            .unwrap_err()
            .to_string()
            .contains("no job secret received"));
        let file = secret::default_path(&setup.hostfile_path);
        let (here, _) = Secret::load_or_create(&file).unwrap();
        let e = received_secret(&setup, &line).unwrap_err().to_string();
        assert!(
            e.contains(&file.display().to_string()) && e.contains("differs"),
            "{e}"
        );
        let line = format!("{}\n", here.to_hex());
        assert_eq!(received_secret(&setup, &line).unwrap(), here);
    }
}
