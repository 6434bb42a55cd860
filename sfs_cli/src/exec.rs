//! `sfs exec -- PROGRAM ARGS...`: runs an unmodified program with the SFS
//! shim preloaded, so that its file calls under the mount directory go to
//! the servers of this hostfile/config.
//!
//! It sets `LD_PRELOAD` (the shim first, anything already there after it),
//! `SFS_CONFIG`, `SFS_HOSTFILE` (absolute) and `SFS_MOUNTDIR` (the config's
//! `mountdir` unless already set), then replaces itself with the program —
//! after asking every server of the hostfile for its stats, so that a
//! server that is down is named here instead of surfacing as a bare EIO in
//! the program (`--no-check` skips that).

use crate::Setup;
use anyhow::{bail, Context, Result};
use sfs_client::Client;
use std::ffi::OsString;
use std::os::unix::process::CommandExt;
use std::path::{Path, PathBuf};

/// File name of the shim library.
pub const SHIM_NAME: &str = "libsfs_preload.so";

/// The shim: `--preload`/`SFS_PRELOAD`, else next to this executable (where
/// cargo puts it), else `../lib/` from it (an installed layout).
pub fn find_shim(explicit: Option<&Path>) -> Result<PathBuf> {
    if let Some(p) = explicit {
        if p.is_file() {
            return Ok(std::path::absolute(p)?);
        }
        bail!("the shim {} does not exist", p.display());
    }
    let exe = std::env::current_exe().context("locating the sfs executable")?;
    let dir = exe.parent().unwrap_or(Path::new("."));
    for candidate in [
        dir.join(SHIM_NAME),
        dir.join("../lib").join(SHIM_NAME),
        dir.join("deps").join(SHIM_NAME),
    ] {
        if candidate.is_file() {
            return Ok(candidate);
        }
    }
    bail!(
        "cannot find {SHIM_NAME} next to {} (build it with `cargo build -p sfs_preload -p sfs_shim`, or pass --preload / set SFS_PRELOAD)",
        exe.display()
    )
}

/// Refuses to start the program when a server of the hostfile does not
/// answer, naming each: under the shim, the program would only see EIO.
fn check_servers(setup: &Setup) -> Result<()> {
    let client = Client::new(setup.config.clone(), setup.hostfile.clone())?;
    let down: Vec<String> = client
        .server_stats()
        .into_iter()
        .filter_map(|(name, address, stats)| {
            stats
                .err()
                .map(|e| format!("{name} ({address}): {}", e.message))
        })
        .collect();
    if down.is_empty() {
        return Ok(());
    }
    bail!(
        "{} of {} server(s) of {} cannot be reached, so the program was not started (start them with `sfs start`, or pass --no-check):\n  {}",
        down.len(),
        setup.hostfile.len(),
        setup.hostfile_path.display(),
        down.join("\n  ")
    )
}

pub fn run(setup: &Setup, preload: Option<&Path>, check: bool, command: &[OsString]) -> Result<()> {
    let shim = find_shim(preload)?;
    let Some((program, args)) = command.split_first() else {
        bail!("sfs exec: no program given (sfs exec -- PROGRAM ARGS...)");
    };
    if check {
        check_servers(setup)?;
    }
    let mut ld_preload = OsString::from(&shim);
    if let Some(existing) = std::env::var_os("LD_PRELOAD").filter(|v| !v.is_empty()) {
        ld_preload.push(" ");
        ld_preload.push(existing);
    }
    let mountdir = std::env::var_os("SFS_MOUNTDIR")
        .filter(|v| !v.is_empty())
        .unwrap_or_else(|| setup.config.mountdir.clone().into());
    let mut command = std::process::Command::new(program);
    match &setup.config_path {
        Some(config) => command.env("SFS_CONFIG", config),
        None => command.env_remove("SFS_CONFIG"),
    };
    let error = command
        .args(args)
        .env("LD_PRELOAD", ld_preload)
        .env("SFS_HOSTFILE", &setup.hostfile_path)
        .env("SFS_MOUNTDIR", mountdir)
        .exec();
    Err(error).with_context(|| format!("cannot run {}", program.to_string_lossy()))
}
