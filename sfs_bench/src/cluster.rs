//! The SFS servers a run measures: either ones already running (from a
//! config and hostfile) or 1, 2, 4 ... servers this tool starts itself with
//! `sfs start` on ephemeral 127.0.0.1 ports, state on tmpfs, and stops with
//! `sfs stop` (and SIGKILL as a last resort) when the run ends or fails.

use anyhow::{bail, Context, Result};
use sfs_global::config::Config;
use sfs_global::hostfile::Hostfile;
use std::path::{Path, PathBuf};
use std::process::Command;

pub struct SfsInstance {
    pub config: Config,
    pub config_path: PathBuf,
    pub hostfile: Hostfile,
    pub hostfile_path: PathBuf,
    /// Set when this tool started the servers: the `sfs` binary and the state directory.
    owned: Option<(PathBuf, PathBuf)>,
}

fn free_port() -> Result<u16> {
    Ok(std::net::TcpListener::bind("127.0.0.1:0")?
        .local_addr()?
        .port())
}

impl SfsInstance {
    /// Servers someone else started.
    pub fn existing(config_path: &Path, hostfile_path: &Path) -> Result<SfsInstance> {
        Ok(SfsInstance {
            config: Config::load(config_path)?,
            config_path: std::path::absolute(config_path)?,
            hostfile: Hostfile::load(hostfile_path)?,
            hostfile_path: std::path::absolute(hostfile_path)?,
            owned: None,
        })
    }

    /// Starts `servers` servers with `sfs start`, state under `state_dir` (tmpfs).
    pub fn start(sfs: &Path, servers: usize, state_dir: &Path) -> Result<SfsInstance> {
        SfsInstance::start_with(sfs, servers, state_dir, Config::default(), false)
    }

    /// [`SfsInstance::start`] with the settings of `config` (its rootdir,
    /// mountdir and ports are replaced), and with `restore`: `sfs start
    /// --restore`, from the checkpoint in the config's back end.
    pub fn start_with(
        sfs: &Path,
        servers: usize,
        state_dir: &Path,
        config: Config,
        restore: bool,
    ) -> Result<SfsInstance> {
        std::fs::create_dir_all(state_dir)
            .with_context(|| format!("creating {}", state_dir.display()))?;
        let config = Config {
            rootdir: state_dir.join("root").display().to_string(),
            mountdir: "/sfs_bench_mnt".into(),
            data_port_offset: 0,
            ..config
        };
        let config_path = state_dir.join("config.json");
        std::fs::write(&config_path, config.to_json_pretty())?;
        let mut hosts = String::new();
        for i in 0..servers {
            hosts.push_str(&format!("s{i} 127.0.0.1:{}\n", free_port()?));
        }
        let hostfile_path = state_dir.join("hostfile");
        std::fs::write(&hostfile_path, &hosts)?;
        let instance = SfsInstance {
            config,
            config_path,
            hostfile: Hostfile::load(&hostfile_path)?,
            hostfile_path,
            owned: Some((sfs.to_path_buf(), state_dir.to_path_buf())),
        };
        let start: &[&str] = if restore {
            &["start", "--restore"]
        } else {
            &["start"]
        };
        instance.sfs_checked(start)?;
        Ok(instance)
    }

    fn sfs_command(&self, args: &[&str]) -> Result<std::process::Output> {
        let (sfs, _) = self
            .owned
            .as_ref()
            .context("servers not started by sfs_bench")?;
        Command::new(sfs)
            .arg("--config")
            .arg(&self.config_path)
            .arg("--hostfile")
            .arg(&self.hostfile_path)
            .args(args)
            .env_remove("LD_PRELOAD")
            .output()
            .with_context(|| format!("running {} {}", sfs.display(), args.join(" ")))
    }

    /// Runs `sfs ARGS` against these servers; its stdout, or an error with
    /// everything it said when it fails.
    pub fn sfs_checked(&self, args: &[&str]) -> Result<String> {
        let out = self.sfs_command(args)?;
        if !out.status.success() {
            bail!(
                "`sfs {}` failed ({}):\n{}{}",
                args.join(" "),
                out.status,
                String::from_utf8_lossy(&out.stdout),
                String::from_utf8_lossy(&out.stderr)
            );
        }
        Ok(String::from_utf8_lossy(&out.stdout).into_owned())
    }

    pub fn server_count(&self) -> usize {
        self.hostfile.hosts.len()
    }

    /// Process ids of the servers on this machine, from their ready files.
    pub fn server_pids(&self) -> Vec<i32> {
        sfs_rpc::locality::local_entries(&self.hostfile)
            .iter()
            .filter_map(|entry| {
                sfs_global::ready::Ready::read(&sfs_global::ready::Ready::path(
                    &self.config,
                    &entry.name,
                ))?
                .pid()
            })
            .collect()
    }
}

impl Drop for SfsInstance {
    fn drop(&mut self) {
        let Some((_, state_dir)) = self.owned.clone() else {
            return;
        };
        let pids = self.server_pids();
        let stopped = self
            .sfs_command(&["stop"])
            .map(|out| out.status.success())
            .unwrap_or(false);
        if !stopped {
            for pid in pids {
                // SAFETY: kill(2) with a pid read from the ready file of a server this tool started.
                unsafe { libc::kill(pid, libc::SIGKILL) };
            }
        }
        let _ = std::fs::remove_dir_all(state_dir);
    }
}

/// CPU seconds (user + system) a process has used so far, from /proc/PID/stat.
pub fn process_cpu_seconds(pid: i32) -> Option<f64> {
    let text = std::fs::read_to_string(format!("/proc/{pid}/stat")).ok()?;
    // Fields after the command name (which may hold spaces) in parentheses.
    let rest = &text[text.rfind(')')? + 2..];
    let fields: Vec<&str> = rest.split_whitespace().collect();
    // utime and stime are fields 14 and 15 of the line, 12 and 13 after `state`.
    let utime: f64 = fields.get(11)?.parse().ok()?;
    let stime: f64 = fields.get(12)?.parse().ok()?;
    // SAFETY: sysconf has no memory-safety preconditions.
    let ticks = unsafe { libc::sysconf(libc::_SC_CLK_TCK) };
    Some((utime + stime) / ticks.max(1) as f64)
}

#[cfg(test)]
mod tests {
    #[test]
    fn own_cpu_time_is_readable_and_grows() {
        let pid = std::process::id() as i32;
        let before = super::process_cpu_seconds(pid).expect("own /proc stat");
        let started = std::time::Instant::now();
        let mut x = 0u64;
        while started.elapsed().as_millis() < 300 {
            x = x.wrapping_mul(31).wrapping_add(std::hint::black_box(7));
        }
        std::hint::black_box(x);
        let after = super::process_cpu_seconds(pid).unwrap();
        assert!(after > before, "{before} -> {after}");
    }
}
