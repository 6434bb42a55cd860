//! Running `sfs node` on the hosts of the hostfile that are not this
//! machine: the part of `sfs start` and `sfs clean` that reaches other
//! nodes (config section `launcher`, docs/operations.md "Running across
//! nodes").
//!
//! With `launcher.kind` `"ssh"`, every other host gets one login, all at
//! once, each bounded by `launcher.timeout_ms`:
//!
//! ```text
//! ssh -o BatchMode=yes -o ConnectTimeout=N [ssh_command args] HOST \
//!     SFS --config C --hostfile H node --hostfile-digest X --config-digest Y start s1 s2
//! ```
//!
//! The far side runs the same `sfs` (`launcher.sfs_path`, by default this
//! binary's path) with the same config and hostfile paths: the launcher
//! assumes they are on a file system that every node sees at the same
//! path, and `sfs node` refuses to act when the files it reads there differ
//! from the launcher's (the digests). The job secret is written to the
//! login's standard input, never put on a command line (where `ps` on
//! either machine would show it).
//!
//! With `launcher.kind` `"srun"` every host, this one included, is one
//! task of a Slurm job step ([`srun`]).

pub mod srun;

use crate::report::Outcome;
use crate::Setup;
use sfs_global::config::LauncherKind;
use sfs_global::hostfile::HostEntry;
use sfs_global::secret::Secret;
use std::ffi::OsString;
use std::io::{Read, Write};
use std::process::{Command, Stdio};
use std::time::{Duration, Instant};

/// Interval at which a launched login is checked for its end.
const POLL: Duration = Duration::from_millis(20);
/// Lines of a failed login's error output shown in its report.
const ERROR_LINES: usize = 20;

/// The servers of the hostfile on one host (as the hostfile writes it).
pub struct HostGroup<'a> {
    pub host: &'a str,
    pub entries: Vec<&'a HostEntry>,
}

impl HostGroup<'_> {
    fn names(&self) -> Vec<String> {
        self.entries.iter().map(|e| e.name.clone()).collect()
    }
}

/// Groups entries by host, in hostfile order (addresses compared as
/// [`HostEntry::same_host`] does: one login per machine however often it is
/// listed).
pub fn group_by_host<'a>(entries: impl IntoIterator<Item = &'a HostEntry>) -> Vec<HostGroup<'a>> {
    let mut groups: Vec<HostGroup<'a>> = Vec::new();
    for entry in entries {
        match groups.iter_mut().find(|g| g.entries[0].same_host(entry)) {
            Some(group) => group.entries.push(entry),
            None => groups.push(HostGroup {
                host: &entry.host,
                entries: vec![entry],
            }),
        }
    }
    groups
}

/// What `sfs node` does on the far side.
pub enum NodeAction {
    /// Start the host's servers and wait until they are ready.
    Start { restore: bool },
    /// Remove the host's servers' state.
    Clean,
}

/// True when the launcher runs this machine's servers too (`srun`: all
/// servers in one job step), so callers hand it every group.
pub fn takes_every_host(setup: &Setup) -> bool {
    setup.config.launcher.kind == LauncherKind::Srun
}

/// Runs `action` on every group's host through the configured launcher, all
/// hosts at once; one outcome per group, in order.
pub fn run(
    setup: &Setup,
    secret: Option<&Secret>,
    groups: &[HostGroup<'_>],
    action: &NodeAction,
) -> Vec<Outcome> {
    let launcher = &setup.config.launcher;
    if groups.is_empty() {
        return Vec::new();
    }
    if launcher.kind == LauncherKind::Srun {
        let action = match action {
            NodeAction::Start { restore } => srun::StepAction::Start { restore: *restore },
            NodeAction::Clean => srun::StepAction::Clean,
        };
        return srun::run(setup, secret, groups, action);
    }
    if launcher.kind == LauncherKind::Local {
        return groups
            .iter()
            .map(|group| Outcome {
                host: group.host.to_string(),
                servers: group.names(),
                result: Err(format!(
                    "not on this machine, and the config's `launcher.kind` is \"local\": \
                     run `sfs start --local-only` on {} or set `launcher.kind` to \"ssh\"",
                    group.host
                )),
            })
            .collect();
    }
    let sfs_path = match sfs_binary(setup) {
        Ok(path) => path,
        Err(e) => {
            return groups
                .iter()
                .map(|group| Outcome {
                    host: group.host.to_string(),
                    servers: group.names(),
                    result: Err(e.clone()),
                })
                .collect()
        }
    };
    let timeout = Duration::from_millis(launcher.timeout_ms);
    let stdin = match secret {
        Some(secret) => format!("{}\n", secret.to_hex()),
        None => "\n".to_string(),
    };
    let argvs: Vec<Vec<OsString>> = groups
        .iter()
        .map(|group| ssh_argv(setup, &sfs_path, group, action))
        .collect();
    let results = in_parallel(&argvs, launcher.fanout as usize, |argv| {
        run_login(argv, &stdin, timeout)
    });
    groups
        .iter()
        .zip(results)
        .map(|(group, result)| Outcome {
            host: group.host.to_string(),
            servers: group.names(),
            result: result.map(|out| out.lines().map(str::to_string).collect()),
        })
        .collect()
}

/// `work` on every item, at most `fanout` at once (a sliding window: a
/// thread takes the next item as soon as it is done with one); the
/// results in the items' order.
fn in_parallel<T: Sync, R: Send>(
    items: &[T],
    fanout: usize,
    work: impl Fn(&T) -> R + Sync,
) -> Vec<R> {
    let next = std::sync::atomic::AtomicUsize::new(0);
    let results: Vec<std::sync::Mutex<Option<R>>> =
        items.iter().map(|_| std::sync::Mutex::new(None)).collect();
    std::thread::scope(|scope| {
        for _ in 0..fanout.clamp(1, items.len().max(1)) {
            scope.spawn(|| loop {
                let i = next.fetch_add(1, std::sync::atomic::Ordering::Relaxed);
                let Some(item) = items.get(i) else { break };
                let result = work(item);
                *results[i].lock().unwrap_or_else(|e| e.into_inner()) = Some(result);
            });
        }
    });
    results
        .into_iter()
        .map(|slot| {
            slot.into_inner()
                .unwrap_or_else(|e| e.into_inner())
                .expect("every item was worked on")
        })
        .collect()
}

/// The `sfs` binary to run on other hosts.
fn sfs_binary(setup: &Setup) -> Result<OsString, String> {
    match setup.config.launcher.sfs_path.as_str() {
        "" => std::env::current_exe()
            .map(OsString::from)
            .map_err(|e| format!("cannot locate this sfs binary to run it elsewhere: {e}")),
        path => Ok(OsString::from(path)),
    }
}

/// `text` as one word of a POSIX shell command line: ssh hands the remote
/// command to the login shell as one string.
fn shell_quote(text: &str) -> String {
    format!("'{}'", text.replace('\'', r"'\''"))
}

/// `SFS [--config C] --hostfile H node --hostfile-digest X --config-digest
/// Y`: the far side's command up to its action.
fn node_prefix(setup: &Setup, sfs_path: &OsString) -> Vec<String> {
    let mut args = vec![sfs_path.to_string_lossy().into_owned()];
    if let Some(config) = &setup.config_path {
        args.extend(["--config".into(), config.display().to_string()]);
    }
    args.extend([
        "--hostfile".into(),
        setup.hostfile_path.display().to_string(),
        "node".into(),
        "--hostfile-digest".into(),
        format!("{:016x}", setup.hostfile.digest()),
        "--config-digest".into(),
        format!("{:016x}", setup.config.digest()),
    ]);
    args
}

/// The arguments of `sfs node` for `action` on `group`'s servers.
fn node_args(
    setup: &Setup,
    sfs_path: &OsString,
    group: &HostGroup<'_>,
    action: &NodeAction,
) -> Vec<String> {
    let mut args = node_prefix(setup, sfs_path);
    match action {
        NodeAction::Start { restore } => {
            args.push("start".into());
            if *restore {
                args.push("--restore".into());
            }
        }
        NodeAction::Clean => args.push("clean".into()),
    }
    args.extend(group.names());
    args
}

/// The whole ssh command line for one host.
fn ssh_argv(
    setup: &Setup,
    sfs_path: &OsString,
    group: &HostGroup<'_>,
    action: &NodeAction,
) -> Vec<OsString> {
    let config = &setup.config;
    let ssh = &config.launcher.ssh_command;
    // ssh takes whole seconds; a login gets the time a client gets to
    // connect to a server, at least one second.
    let connect_seconds = config.connect_timeout_ms.div_ceil(1000).max(1);
    let mut argv: Vec<OsString> = vec![ssh[0].clone().into()];
    // First: for ssh the first value of an option wins, so a user's
    // `-o BatchMode=no` cannot bring back a password prompt.
    argv.extend(
        [
            "-o".to_string(),
            "BatchMode=yes".into(),
            "-o".into(),
            format!("ConnectTimeout={connect_seconds}"),
        ]
        .map(OsString::from),
    );
    argv.extend(ssh[1..].iter().map(OsString::from));
    argv.push(group.host.into());
    let remote: Vec<String> = node_args(setup, sfs_path, group, action)
        .iter()
        .map(|a| shell_quote(a))
        .collect();
    argv.push(remote.join(" ").into());
    argv
}

/// Reads all of `from` on its own thread (a login's output must be drained
/// while it runs, or a chatty one blocks on a full pipe).
fn drain(from: Option<impl Read + Send + 'static>) -> std::thread::JoinHandle<Vec<u8>> {
    std::thread::spawn(move || {
        let mut bytes = Vec::new();
        if let Some(mut from) = from {
            let _ = from.read_to_end(&mut bytes);
        }
        bytes
    })
}

/// The last [`ERROR_LINES`] lines of a login's error output.
fn tail(bytes: &[u8]) -> String {
    let text = String::from_utf8_lossy(bytes);
    let lines: Vec<&str> = text.trim_end().lines().collect();
    lines[lines.len().saturating_sub(ERROR_LINES)..].join("\n")
}

/// Runs one login with `stdin` as its input; its standard output when it
/// ends well within `timeout`, else what went wrong with its error output.
fn run_login(argv: &[OsString], stdin: &str, timeout: Duration) -> Result<String, String> {
    let program = argv[0].to_string_lossy().into_owned();
    let mut child = Command::new(&argv[0])
        .args(&argv[1..])
        .stdin(Stdio::piped())
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .spawn()
        .map_err(|e| format!("cannot run {program}: {e} (config field `launcher.ssh_command`)"))?;
    // A login that fails before it reads its input closes the pipe: its
    // exit status and error output say why, not this write.
    if let Some(mut input) = child.stdin.take() {
        let _ = input.write_all(stdin.as_bytes());
    }
    let stdout = drain(child.stdout.take());
    let stderr = drain(child.stderr.take());
    let deadline = Instant::now() + timeout;
    let status = loop {
        match child.try_wait() {
            Ok(Some(status)) => break Some(status),
            Ok(None) if Instant::now() >= deadline => {
                let _ = child.kill();
                let _ = child.wait();
                break None;
            }
            Ok(None) => std::thread::sleep(POLL),
            Err(e) => return Err(format!("waiting for {program}: {e}")),
        }
    };
    let out = String::from_utf8_lossy(&stdout.join().unwrap_or_default()).into_owned();
    let err = tail(&stderr.join().unwrap_or_default());
    // What the far side said: what it did (standard output) and then why
    // it failed (error output).
    let said: Vec<&str> = [out.trim_end(), err.as_str()]
        .into_iter()
        .filter(|t| !t.is_empty())
        .collect();
    let shown = |what: String| match said.is_empty() {
        true => what,
        false => format!("{what}:\n{}", said.join("\n")),
    };
    match status {
        None => Err(shown(format!(
            "no answer within {timeout:?} (config field `launcher.timeout_ms`); {program} \
             killed (servers it was starting may still come up: see `sfs status`)"
        ))),
        Some(status) if status.success() => Ok(out),
        // ssh's own failures (no route, refused, authentication) exit 255.
        Some(status) if status.code() == Some(255) => {
            Err(shown(format!("{program} failed ({status})")))
        }
        Some(status) => Err(shown(format!("sfs on the host failed ({status})"))),
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use sfs_global::hostfile::Hostfile;

    #[test]
    fn quoting_survives_the_remote_shell() {
        assert_eq!(shell_quote("/a b/c"), "'/a b/c'");
        assert_eq!(shell_quote("it's"), r"'it'\''s'");
        let out = Command::new("sh")
            .arg("-c")
            .arg(format!("printf %s {}", shell_quote("x'$HOME `y` \"z\"")))
            .output()
            .unwrap();
        assert_eq!(String::from_utf8_lossy(&out.stdout), "x'$HOME `y` \"z\"");
    }

    #[test]
    fn servers_of_one_host_share_a_login() {
        let text = "a n1:7000\nb n2:7000\nc N1:7002\nd 10.0.0.1\n";
        let hostfile = Hostfile::parse(text, "h").unwrap();
        let groups = group_by_host(&hostfile.hosts);
        let shown: Vec<(&str, Vec<String>)> = groups.iter().map(|g| (g.host, g.names())).collect();
        assert_eq!(shown[0], ("n1", vec!["a".to_string(), "c".to_string()]));
        assert_eq!(shown[1], ("n2", vec!["b".to_string()]));
        assert_eq!(shown[2].0, "10.0.0.1");
    }

    fn setup_with(launcher: sfs_global::config::LauncherConfig) -> Setup {
        let config = sfs_global::config::Config {
            launcher,
            ..Default::default()
        };
        let hostfile = Hostfile::parse("a 192.0.2.1\nb 192.0.2.2:7000\nc 192.0.2.2:7002\n", "h");
        Setup {
            config,
            config_path: Some("/jobs/7/config.json".into()),
            hostfile: hostfile.unwrap(),
            hostfile_path: "/jobs/7/hostfile".into(),
        }
    }

    #[test]
    fn the_local_launcher_names_the_servers_it_cannot_reach() {
        let setup = setup_with(sfs_global::config::LauncherConfig {
            kind: LauncherKind::Local,
            ..Default::default()
        });
        let groups = group_by_host(&setup.hostfile.hosts);
        let outcomes = run(&setup, None, &groups, &NodeAction::Clean);
        assert_eq!(outcomes.len(), 2);
        assert_eq!(outcomes[1].servers, ["b", "c"]);
        let e = outcomes[1].result.as_ref().unwrap_err();
        assert!(
            e.contains("`launcher.kind` is \"local\"") && e.contains("192.0.2.2"),
            "{e}"
        );
    }

    /// A stand-in for ssh that prints its arguments and its input: the
    /// command line the launcher builds, and the secret only on stdin.
    #[test]
    fn the_ssh_command_line_carries_no_secret_and_batch_mode_comes_first() {
        let dir = tempfile::tempdir().unwrap();
        let fake = dir.path().join("fake-ssh");
        std::fs::write(
            &fake,
            "#!/bin/sh\nprintf 'arg %s\\n' \"$@\"\nsed 's/^/stdin /'\n",
        )
        .unwrap();
        std::fs::set_permissions(&fake, std::os::unix::fs::PermissionsExt::from_mode(0o755))
            .unwrap();
        let setup = setup_with(sfs_global::config::LauncherConfig {
            ssh_command: vec![fake.display().to_string(), "-F".into(), "/etc/x".into()],
            sfs_path: "/opt/sfs/bin/sfs".into(),
            fanout: 1,
            ..Default::default()
        });
        let secret = Secret::generate().unwrap();
        let groups = group_by_host(&setup.hostfile.hosts);
        let outcomes = run(
            &setup,
            Some(&secret),
            &groups,
            &NodeAction::Start { restore: true },
        );
        let lines = outcomes[1].result.as_ref().unwrap();
        let remote = format!(
            "arg '/opt/sfs/bin/sfs' '--config' '/jobs/7/config.json' '--hostfile' \
             '/jobs/7/hostfile' 'node' '--hostfile-digest' '{:016x}' '--config-digest' \
             '{:016x}' 'start' '--restore' 'b' 'c'",
            setup.hostfile.digest(),
            setup.config.digest()
        );
        assert_eq!(
            lines,
            &[
                "arg -o",
                "arg BatchMode=yes",
                "arg -o",
                "arg ConnectTimeout=3",
                "arg -F",
                "arg /etc/x",
                "arg 192.0.2.2",
                &remote,
                &format!("stdin {}", secret.to_hex()),
            ]
        );
        assert_eq!(outcomes[0].servers, ["a"]);
        assert!(outcomes[0].result.is_ok());
    }

    #[test]
    fn work_runs_at_most_fanout_at_once_and_keeps_the_order() {
        let running = std::sync::atomic::AtomicUsize::new(0);
        let most = std::sync::atomic::AtomicUsize::new(0);
        let items: Vec<u64> = (0..20).collect();
        let results = in_parallel(&items, 3, |&i| {
            let now = running.fetch_add(1, std::sync::atomic::Ordering::SeqCst) + 1;
            most.fetch_max(now, std::sync::atomic::Ordering::SeqCst);
            std::thread::sleep(Duration::from_millis(5));
            running.fetch_sub(1, std::sync::atomic::Ordering::SeqCst);
            i * 2
        });
        assert_eq!(results, (0..20).map(|i| i * 2).collect::<Vec<_>>());
        let most = most.load(std::sync::atomic::Ordering::SeqCst);
        assert!((1..=3).contains(&most), "{most} at once");
        assert!(in_parallel(&[] as &[u8], 4, |_| ()).is_empty());
    }

    #[test]
    fn a_login_that_fails_reports_its_error_and_one_that_hangs_is_killed() {
        let argv =
            |script: &str| -> Vec<OsString> { vec!["sh".into(), "-c".into(), script.into()] };
        let e = run_login(
            &argv("read s; echo \"no: $s\" >&2; exit 255"),
            "k\n",
            Duration::from_secs(10),
        )
        .unwrap_err();
        assert_eq!(e, "sh failed (exit status: 255):\nno: k");
        let e = run_login(&argv("exit 1"), "", Duration::from_secs(10)).unwrap_err();
        assert_eq!(e, "sfs on the host failed (exit status: 1)");
        let started = Instant::now();
        let e = run_login(&argv("exec sleep 30"), "", Duration::from_millis(300)).unwrap_err();
        assert!(e.starts_with("no answer within 300ms"), "{e}");
        assert!(started.elapsed() < Duration::from_secs(10));
        assert_eq!(
            run_login(&argv("cat"), "line\n", Duration::from_secs(10)).unwrap(),
            "line\n"
        );
    }
}
