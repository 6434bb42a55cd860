//! The `"launcher"` section of config.json: how `sfs start` and `sfs clean`
//! reach the servers of the hostfile that do not live on the machine the
//! command runs on (docs/operations.md, "Running across nodes").
//!
//! With `ssh`, servers on this machine are started directly; for the others
//! the launcher logs in to each host (in parallel, never asking for a
//! password) and runs the same `sfs` binary there with the same config and
//! hostfile paths: the launcher assumes that those three files are on a
//! file system every node sees at the same path. The job secret travels on
//! the login's standard input, never on a command line. With `srun`, every
//! server (this machine's too) runs in one job step of the Slurm allocation
//! `sfs start` runs in, one task per node, so that Slurm tracks them and
//! nothing outlives the job; the secret travels in the step's environment.

use super::ConfigError;
use serde::{Deserialize, Serialize};

/// How the servers of other hosts are reached.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum LauncherKind {
    /// Never: only this machine's servers are started or cleaned; another
    /// host's server is reported as failed, by name.
    Local,
    /// `ssh HOST sfs ...`, one login per host, all hosts at once.
    Ssh,
    /// `srun --overlap ... sfs node ...`: one step of the Slurm allocation,
    /// one task per host, which keeps running beside the job's own steps.
    Srun,
}

/// Settings of the launcher (`"launcher": {...}` in config.json).
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
#[serde(default, deny_unknown_fields)]
pub struct LauncherConfig {
    /// How other hosts are reached: "local", "ssh" or "srun".
    pub kind: LauncherKind,
    /// `ssh`: the program and its first arguments, such as
    /// `["ssh", "-F", "/etc/sfs/ssh_config"]`. SFS adds `-o BatchMode=yes`
    /// (never a password prompt) and a `ConnectTimeout` after the program,
    /// then the host (its hostfile address) and the remote command.
    pub ssh_command: Vec<String>,
    /// `srun`: the program and its first arguments, such as `["srun",
    /// "--partition=bb"]`. SFS adds `--overlap`, the node and task counts,
    /// `--nodelist` when the hostfile names the job's nodes, and `--label`.
    pub srun_command: Vec<String>,
    /// The `sfs` binary on the other hosts, absolute; empty means the path
    /// of the `sfs` that runs the launcher.
    pub sfs_path: String,
    /// `ssh`: logins at once at the most (as pdsh's fanout); a host waits
    /// for a free slot.
    pub fanout: u32,
    /// How long one host may take (login, start of its servers until they
    /// are ready, or their clean-up) before it is reported as failed.
    pub timeout_ms: u64,
}

impl Default for LauncherConfig {
    fn default() -> Self {
        LauncherConfig {
            kind: LauncherKind::Ssh,
            ssh_command: vec!["ssh".into()],
            srun_command: vec!["srun".into()],
            sfs_path: String::new(),
            fanout: 64,
            timeout_ms: 90_000,
        }
    }
}

impl LauncherConfig {
    /// Checks the settings; names the field (`origin` is the config file).
    pub(super) fn validate_in(&self, origin: &str) -> Result<(), ConfigError> {
        let bad = |field: &'static str, problem: String| ConfigError::BadValue {
            file: origin.to_string(),
            field,
            problem,
        };
        for (field, command, program) in [
            ("launcher.ssh_command", &self.ssh_command, "ssh"),
            ("launcher.srun_command", &self.srun_command, "srun"),
        ] {
            match command.first() {
                None => {
                    return Err(bad(
                        field,
                        format!(
                        "must name the {program} program, e.g. [\"{program}\"], got an empty list"
                    ),
                    ))
                }
                Some(first) if first.trim().is_empty() => {
                    return Err(bad(
                        field,
                        format!("must start with the {program} program, got {first:?}"),
                    ))
                }
                Some(_) => {}
            }
        }
        if !self.sfs_path.is_empty() && !self.sfs_path.starts_with('/') {
            return Err(bad(
                "launcher.sfs_path",
                format!(
                    "must be an absolute path, or empty for this sfs binary's path, got {:?}",
                    self.sfs_path
                ),
            ));
        }
        if !(1..=4096).contains(&self.fanout) {
            return Err(bad(
                "launcher.fanout",
                format!("must be from 1 to 4096, got {}", self.fanout),
            ));
        }
        if !(1..=3_600_000).contains(&self.timeout_ms) {
            return Err(bad(
                "launcher.timeout_ms",
                format!("must be from 1 to 3600000, got {}", self.timeout_ms),
            ));
        }
        Ok(())
    }
}
