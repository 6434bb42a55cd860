//! Which config and hostfile a command uses (docs/configuration.md, "Which
//! files a command uses"), and, when the hostfile cannot be read, a message
//! that names every place looked at: a person who ran `sfs status` in the
//! wrong directory learns where to put the file or which flag to pass.

use anyhow::{Context, Result};
use sfs_global::config::Config;
use sfs_global::hostfile::{Hostfile, HostfileError};
use std::path::{Path, PathBuf};

/// The config and hostfile a command works with, after the defaults chain.
pub struct Setup {
    pub config: Config,
    /// The config file read, or `None` when none was named and there is no
    /// `./config.json` (the built-in defaults apply; servers and programs
    /// under `sfs exec` are then given no config file either).
    pub config_path: Option<PathBuf>,
    pub hostfile: Hostfile,
    pub hostfile_path: PathBuf,
}

/// What named a file: the flag or the environment variable (clap reads
/// both into one field; its value source tells them apart).
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Named {
    Flag,
    Environment,
}

/// The files named on the command line or in the environment (`--config`
/// and `SFS_CONFIG` need not be told apart: nothing else is tried after them).
pub struct Request {
    pub hostfile: Option<(PathBuf, Named)>,
    pub config: Option<PathBuf>,
}

/// How the hostfile was chosen, kept for the message when it cannot be read.
#[derive(Debug, PartialEq, Eq)]
enum Choice {
    /// `--hostfile` or `SFS_HOSTFILE`: nothing else is looked at.
    Named(Named),
    /// `./hostfile`, because it exists or no config was named.
    CurrentDir,
    /// The config's `hosts_file` (already resolved against the config's
    /// directory by `Config::load`), because a config was named and there is
    /// no `./hostfile`.
    FromConfig { config: PathBuf },
}

/// The hostfile lookup: flag, then environment, then `./hostfile` if it
/// exists or no config was named, else the named config's `hosts_file`.
fn choose_hostfile(request: &Request, config: &Config) -> (PathBuf, Choice) {
    if let Some((path, named)) = &request.hostfile {
        return (path.clone(), Choice::Named(*named));
    }
    let local = PathBuf::from("hostfile");
    match &request.config {
        Some(config_path) if !local.exists() => (
            PathBuf::from(&config.hosts_file),
            Choice::FromConfig {
                config: config_path.clone(),
            },
        ),
        _ => (local, Choice::CurrentDir),
    }
}

fn absolute(path: &Path) -> String {
    std::path::absolute(path)
        .unwrap_or_else(|_| path.to_path_buf())
        .display()
        .to_string()
}

/// The message for a hostfile that could not be read: every step of the
/// lookup with what it found, then how to name one.
fn unreadable_message(path: &Path, choice: &Choice, reason: &str) -> String {
    let shown = absolute(path);
    if let Choice::Named(named) = choice {
        let by = match named {
            Named::Flag => "--hostfile",
            Named::Environment => "SFS_HOSTFILE (set in the environment, no --hostfile given)",
        };
        return format!(
            "cannot read the hostfile {shown} named by {by}: {reason}; \
             a named hostfile is the only one tried (./hostfile and the config's \
             `hosts_file` are not looked at)"
        );
    }
    let config_step = match choice {
        Choice::FromConfig { config } => {
            format!(
                "the `hosts_file` of {} ({shown}): {reason}",
                absolute(config)
            )
        }
        Choice::CurrentDir | Choice::Named(_) => {
            "the config's `hosts_file`: not looked at (it is used only when a config \
              is named by --config or SFS_CONFIG and there is no ./hostfile)"
                .to_string()
        }
    };
    let local_step = match choice {
        Choice::CurrentDir => format!("./hostfile ({shown}): {reason}"),
        _ => format!(
            "./hostfile ({}): does not exist",
            absolute(Path::new("hostfile"))
        ),
    };
    format!(
        "no readable hostfile; looked at, in this order:\n  \
         1. --hostfile: not given\n  \
         2. SFS_HOSTFILE: not set\n  \
         3. {local_step}\n  \
         4. {config_step}\n\
         Name the servers' hostfile with --hostfile FILE or SFS_HOSTFILE=FILE, or create \
         ./hostfile (lines of `name address[:port]`, see hostfile.example)"
    )
}

/// Reads the config the request leads to (the built-in defaults when none
/// is named and there is no `./config.json`), and the path of the file read.
pub fn load_config(request: &Request) -> Result<(Config, Option<PathBuf>)> {
    let config_path = request
        .config
        .clone()
        .unwrap_or_else(|| PathBuf::from("config.json"));
    if request.config.is_some() || config_path.exists() {
        let config = Config::load(&config_path)?;
        let absolute = std::path::absolute(&config_path).context("resolving the config path")?;
        Ok((config, Some(absolute)))
    } else {
        Ok((Config::default(), None))
    }
}

/// Reads the config and the hostfile the request leads to.
pub fn load(request: &Request) -> Result<Setup> {
    let (config, config_path) = load_config(request)?;
    let (hostfile_path, choice) = choose_hostfile(request, &config);
    let hostfile = match Hostfile::load(&hostfile_path) {
        Ok(hostfile) => hostfile,
        Err(HostfileError::Unreadable { reason, .. }) => {
            anyhow::bail!("{}", unreadable_message(&hostfile_path, &choice, &reason))
        }
        Err(e) => return Err(e.into()),
    };
    // Before any server starts: a data port on another server's port would
    // only show up as one server failing to bind.
    sfs_global::hostfile::validate_with_config(&config, &hostfile)?;
    Ok(Setup {
        config,
        config_path,
        hostfile,
        hostfile_path: std::path::absolute(&hostfile_path)
            .context("resolving the hostfile path")?,
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    fn request(hostfile: Option<Named>, config: bool) -> Request {
        Request {
            hostfile: hostfile.map(|n| (PathBuf::from("/h/hosts"), n)),
            config: config.then(|| PathBuf::from("/c/config.json")),
        }
    }

    #[test]
    fn a_named_hostfile_wins_and_its_message_says_who_named_it() {
        let r = request(Some(Named::Environment), true);
        let (path, choice) = choose_hostfile(&r, &Config::default());
        assert_eq!(path, Path::new("/h/hosts"));
        let m = unreadable_message(&path, &choice, "No such file");
        assert!(m.contains("/h/hosts") && m.contains("SFS_HOSTFILE"), "{m}");
        assert!(m.contains("No such file"), "{m}");
    }

    #[test]
    fn the_fallback_message_lists_every_step() {
        let m = unreadable_message(Path::new("hostfile"), &Choice::CurrentDir, "gone");
        for step in [
            "--hostfile",
            "SFS_HOSTFILE",
            "./hostfile",
            "hosts_file",
            "gone",
        ] {
            assert!(m.contains(step), "{step} missing from {m}");
        }
        let choice = Choice::FromConfig {
            config: PathBuf::from("/c/config.json"),
        };
        let m = unreadable_message(Path::new("/c/hosts"), &choice, "gone");
        assert!(
            m.contains("/c/config.json (/c/hosts): gone") && m.contains("does not exist"),
            "{m}"
        );
    }
}
