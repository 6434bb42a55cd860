//! The `srun` launcher (`launcher.kind = "srun"`): inside a Slurm
//! allocation, every server of the hostfile — this node's too — runs in one
//! job step, one task per host:
//!
//! ```text
//! srun --overlap --nodes=K --ntasks=K --ntasks-per-node=1 --label \
//!      [--nodelist=n1,n2] SFS --config C --hostfile H node ... step-start SLOT...
//! ```
//!
//! Slurm then tracks the servers as part of the job (its process tracking
//! signals them when the job ends or is cancelled, so nothing outlives
//! it), and `--overlap` lets the job's own steps run beside them. Each task
//! (`sfs node step-start`, [`crate::node`]) picks its slot — the servers of
//! its host — starts them, prints one report line per server and a final
//! line, and stays until its servers exit (`sfs stop`).
//!
//! A slot is `NODE=s1,s2`. When the hostfile names the job's nodes (as
//! `sfs hostfile --slurm` writes it: hosts or server names are node names),
//! the step runs on exactly those nodes (`--nodelist`) and a task takes the
//! slot of its node (`SLURMD_NODENAME`). Otherwise (hosts given as
//! addresses) slots are `=s1,s2` and the task with relative node id I
//! (`SLURM_NODEID`) takes the I-th: the hostfile's I-th host must then be
//! the step's I-th node.
//!
//! `sfs start` sends srun's output to `rootdir/launcher/srun-JOB-start.log`
//! and returns once every task has reported (or srun ended, or
//! `launcher.timeout_ms` passed); srun keeps running with the servers. `sfs
//! clean` runs its step in the foreground. The job secret reaches the
//! tasks in the step's environment (`SFS_SECRET`: Slurm hands a step its
//! submitter's environment over its authenticated channel), never on a
//! command line.

use super::{node_prefix, sfs_binary, HostGroup};
use crate::report::Outcome;
use crate::Setup;
use sfs_global::secret::Secret;
use std::collections::BTreeMap;
use std::ffi::OsString;
use std::os::unix::fs::DirBuilderExt;
use std::os::unix::process::CommandExt;
use std::path::{Path, PathBuf};
use std::process::{Command, Stdio};
use std::time::{Duration, Instant};

/// What a task prints last, then `ready|failed|cleaned` and its servers.
pub const FINAL: &str = "sfs node step:";
/// How often the step's log is read while `sfs start` waits.
const POLL: Duration = Duration::from_millis(50);
/// Lines of srun's own output shown when a host did not report.
const SRUN_LINES: usize = 15;

/// What the step does on each host.
#[derive(Clone, Copy, PartialEq, Eq, Debug)]
pub enum StepAction {
    Start { restore: bool },
    Clean,
}

/// Where each group runs: its slots (`NODE=s1,s2`, one per group, in
/// group order) and the step's `--nodelist` when the hostfile names the
/// job's nodes.
#[derive(Debug, PartialEq, Eq)]
pub struct Plan {
    pub slots: Vec<String>,
    pub nodelist: Option<Vec<String>>,
}

/// The job node a group names: its host (or the host's first label) when
/// that is a node of the job, else the node its servers are named after
/// (`n01`, `n01-0`, as `sfs hostfile` names them).
fn node_of(group: &HostGroup<'_>, job_nodes: &[String]) -> Option<String> {
    let is_node = |name: &str| {
        job_nodes
            .iter()
            .find(|n| n.eq_ignore_ascii_case(name))
            .cloned()
    };
    if let Some(node) = is_node(group.host).or_else(|| is_node(group.host.split('.').next()?)) {
        return Some(node);
    }
    let named_after = |server: &str| -> Option<String> {
        if let Some(node) = is_node(server) {
            return Some(node);
        }
        let (base, index) = server.rsplit_once('-')?;
        index.bytes().all(|b| b.is_ascii_digit()).then_some(())?;
        is_node(base)
    };
    let first = named_after(&group.entries[0].name)?;
    group
        .entries
        .iter()
        .all(|e| named_after(&e.name).as_deref() == Some(first.as_str()))
        .then_some(first)
}

/// Where each group runs within a job of `job_nodes`.
pub fn plan(groups: &[HostGroup<'_>], job_nodes: &[String]) -> Result<Plan, String> {
    if groups.len() > job_nodes.len() {
        return Err(format!(
            "the hostfile lists {} host(s), the job has {} node(s): the srun launcher runs \
             one task per host, each on its own node",
            groups.len(),
            job_nodes.len()
        ));
    }
    let nodes: Vec<Option<String>> = groups.iter().map(|g| node_of(g, job_nodes)).collect();
    let servers = |g: &HostGroup<'_>| {
        g.entries
            .iter()
            .map(|e| e.name.as_str())
            .collect::<Vec<_>>()
            .join(",")
    };
    if nodes.iter().all(Option::is_none) {
        return Ok(Plan {
            slots: groups.iter().map(|g| format!("={}", servers(g))).collect(),
            nodelist: None,
        });
    }
    let unnamed: Vec<&str> = groups
        .iter()
        .zip(&nodes)
        .filter(|(_, n)| n.is_none())
        .map(|(g, _)| g.host)
        .collect();
    if !unnamed.is_empty() {
        return Err(format!(
            "some hosts of the hostfile are nodes of this job and some ({}) are not: \
             name every host by its node (`sfs hostfile --slurm`) or none",
            unnamed.join(", ")
        ));
    }
    let nodes: Vec<String> = nodes.into_iter().map(Option::unwrap_or_default).collect();
    for (i, node) in nodes.iter().enumerate() {
        if nodes[..i].contains(node) {
            return Err(format!(
                "two hosts of the hostfile are on node {node}: list each node once \
                 (with several servers) for the srun launcher"
            ));
        }
    }
    Ok(Plan {
        slots: groups
            .iter()
            .zip(&nodes)
            .map(|(g, n)| format!("{n}={}", servers(g)))
            .collect(),
        nodelist: Some(nodes),
    })
}

/// The servers of the slot this task takes: the slot of `node_name`
/// (`SLURMD_NODENAME`) when slots name nodes, else the `node_id`-th
/// (`SLURM_NODEID`).
pub fn my_slot(
    slots: &[String],
    node_name: Option<&str>,
    node_id: Option<usize>,
) -> Result<Vec<String>, String> {
    let parsed: Vec<(&str, &str)> = slots
        .iter()
        .map(|s| {
            s.split_once('=')
                .ok_or_else(|| format!("bad slot {s:?}: expected NODE=SERVER,..."))
        })
        .collect::<Result<_, _>>()?;
    let by_name = parsed.iter().any(|(node, _)| !node.is_empty());
    let servers = if by_name {
        let name = node_name.ok_or("SLURMD_NODENAME is not set: not a task of a Slurm step")?;
        parsed
            .iter()
            .find(|(node, _)| node.eq_ignore_ascii_case(name))
            .map(|(_, s)| *s)
            .ok_or_else(|| format!("node {name} has no servers in this step's slots"))?
    } else {
        let id = node_id.ok_or("SLURM_NODEID is not set: not a task of a Slurm step")?;
        parsed.get(id).map(|(_, s)| *s).ok_or_else(|| {
            format!(
                "this task is on the step's node {id}, the hostfile has {} host(s)",
                parsed.len()
            )
        })?
    };
    Ok(servers.split(',').map(str::to_string).collect())
}

/// The nodes of this job, from `SLURM_JOB_NODELIST`.
fn job_nodes() -> Result<Vec<String>, String> {
    if std::env::var_os("SLURM_JOB_ID").is_none() {
        return Err(
            "`launcher.kind` is \"srun\" but this is not inside a Slurm allocation \
                    (SLURM_JOB_ID is not set): run `sfs start` in the job script or \
                    under salloc, or choose another launcher"
                .into(),
        );
    }
    crate::make_hostfile::slurm_nodes()
        .map(|nodes| nodes.into_iter().map(|(n, _)| n).collect())
        .map_err(|e| format!("{e:#}"))
}

/// The srun command line of a step.
fn srun_argv(setup: &Setup, sfs_path: &OsString, plan: &Plan, action: StepAction) -> Vec<OsString> {
    let launcher = &setup.config.launcher;
    let tasks = plan.slots.len();
    let mut argv: Vec<OsString> = launcher.srun_command.iter().map(OsString::from).collect();
    let name = match action {
        StepAction::Start { .. } => "sfs-servers",
        StepAction::Clean => "sfs-clean",
    };
    argv.extend(
        [
            "--overlap".to_string(),
            format!("--nodes={tasks}"),
            format!("--ntasks={tasks}"),
            "--ntasks-per-node=1".into(),
            "--kill-on-bad-exit=0".into(),
            "--label".into(),
            format!("--job-name={name}"),
        ]
        .map(OsString::from),
    );
    if let Some(nodes) = &plan.nodelist {
        argv.push(format!("--nodelist={}", nodes.join(",")).into());
    }
    let mut args = node_prefix(setup, sfs_path);
    match action {
        StepAction::Start { restore } => {
            args.push("step-start".into());
            if restore {
                args.push("--restore".into());
            }
        }
        StepAction::Clean => args.push("step-clean".into()),
    }
    args.extend(plan.slots.iter().cloned());
    argv.extend(args.into_iter().map(OsString::from));
    argv
}

/// What the step's output said, by task.
#[derive(Default, Debug)]
struct Reports {
    /// Per task label: its lines before the final one.
    lines: BTreeMap<u32, Vec<String>>,
    /// Per task label: whether it succeeded, and the servers it names.
    finals: BTreeMap<u32, (bool, Vec<String>)>,
    /// srun's own lines (not from a task).
    srun: Vec<String>,
}

/// Reads the step's `--label`led output.
fn parse(text: &str) -> Reports {
    let mut reports = Reports::default();
    for line in text.lines() {
        let labelled = line
            .split_once(": ")
            .and_then(|(label, rest)| Some((label.trim().parse::<u32>().ok()?, rest)));
        let Some((task, rest)) = labelled else {
            reports.srun.push(line.to_string());
            continue;
        };
        match rest.strip_prefix(FINAL) {
            Some(outcome) => {
                let mut words = outcome.split_whitespace();
                let ok = words.next() != Some("failed");
                let servers = words
                    .next()
                    .unwrap_or("")
                    .split(',')
                    .map(str::to_string)
                    .collect();
                reports.finals.insert(task, (ok, servers));
            }
            None => reports
                .lines
                .entry(task)
                .or_default()
                .push(rest.to_string()),
        }
    }
    reports
}

/// One outcome per group from the step's output; `ended` says why a group
/// that did not report has not (srun ended, or the time ran out).
fn outcomes(groups: &[HostGroup<'_>], reports: &Reports, missing: &str) -> Vec<Outcome> {
    groups
        .iter()
        .map(|group| {
            let names = group.names();
            let task = reports
                .finals
                .iter()
                .find(|(_, (_, servers))| *servers == names)
                .map(|(task, (ok, _))| (*task, *ok));
            let result = match task {
                Some((task, ok)) => {
                    let lines = reports.lines.get(&task).cloned().unwrap_or_default();
                    match ok {
                        true => Ok(lines),
                        false => Err(match lines.is_empty() {
                            true => "failed (no reason printed)".to_string(),
                            false => lines.join("\n"),
                        }),
                    }
                }
                None => {
                    let said = &reports.srun[reports.srun.len().saturating_sub(SRUN_LINES)..];
                    Err(match said.is_empty() {
                        true => missing.to_string(),
                        false => format!("{missing}; srun said:\n{}", said.join("\n")),
                    })
                }
            };
            Outcome {
                host: group.host.to_string(),
                servers: names,
                result,
            }
        })
        .collect()
}

/// The log of a step launched from this node.
fn log_path(setup: &Setup, action: StepAction) -> Result<PathBuf, String> {
    let dir = Path::new(&setup.config.rootdir).join("launcher");
    std::fs::DirBuilder::new()
        .recursive(true)
        .mode(0o700)
        .create(&dir)
        .map_err(|e| format!("creating {}: {e}", dir.display()))?;
    let job = std::env::var("SLURM_JOB_ID").unwrap_or_default();
    let what = match action {
        StepAction::Start { .. } => "start",
        StepAction::Clean => "clean",
    };
    Ok(dir.join(format!("srun-{job}-{what}.log")))
}

/// Runs `action` on every group as one srun step; one outcome per group.
/// A start returns once every task reported (srun keeps running with the
/// servers); a clean once the step ended.
pub fn run(
    setup: &Setup,
    secret: Option<&Secret>,
    groups: &[HostGroup<'_>],
    action: StepAction,
) -> Vec<Outcome> {
    match launch_and_wait(setup, secret, groups, action) {
        Ok(outcomes) => outcomes,
        Err(why) => groups
            .iter()
            .map(|group| Outcome {
                host: group.host.to_string(),
                servers: group.names(),
                result: Err(why.clone()),
            })
            .collect(),
    }
}

fn launch_and_wait(
    setup: &Setup,
    secret: Option<&Secret>,
    groups: &[HostGroup<'_>],
    action: StepAction,
) -> Result<Vec<Outcome>, String> {
    let plan = plan(groups, &job_nodes()?)?;
    let sfs_path = sfs_binary(setup)?;
    let argv = srun_argv(setup, &sfs_path, &plan, action);
    let log = log_path(setup, action)?;
    let out =
        std::fs::File::create(&log).map_err(|e| format!("creating {}: {e}", log.display()))?;
    let err = out
        .try_clone()
        .map_err(|e| format!("{}: {e}", log.display()))?;
    let program = argv[0].to_string_lossy().into_owned();
    let mut command = Command::new(&argv[0]);
    command
        .args(&argv[1..])
        .stdin(Stdio::null())
        .stdout(out)
        .stderr(err)
        // Its own process group: a Ctrl-C meant for `sfs start` does not
        // reach the step that keeps the servers.
        .process_group(0);
    match secret {
        Some(secret) => command.env(sfs_global::secret::SECRET_VAR, secret.to_hex()),
        None => command.env_remove(sfs_global::secret::SECRET_VAR),
    };
    let mut child = command
        .spawn()
        .map_err(|e| format!("cannot run {program}: {e} (config field `launcher.srun_command`)"))?;
    let timeout = Duration::from_millis(setup.config.launcher.timeout_ms);
    let deadline = Instant::now() + timeout;
    let read = || parse(&std::fs::read_to_string(&log).unwrap_or_default());
    loop {
        let ended = child
            .try_wait()
            .map_err(|e| format!("waiting for {program}: {e}"))?;
        let reports = read();
        let all_reported = reports.finals.len() >= plan.slots.len();
        let started = matches!(action, StepAction::Start { .. });
        if ended.is_some() || (started && all_reported) {
            // Once srun ended its output is complete; read it again.
            let reports = if ended.is_some() { read() } else { reports };
            let missing = match ended {
                Some(status) => format!(
                    "the step ended ({status}) before this host reported (log {})",
                    log.display()
                ),
                None => String::new(),
            };
            return Ok(outcomes(groups, &reports, &missing));
        }
        if Instant::now() >= deadline {
            if !started {
                let _ = child.kill();
                let _ = child.wait();
            }
            let missing = format!(
                "no report within {timeout:?} (config field `launcher.timeout_ms`); see {}{}",
                log.display(),
                match started {
                    true => " (the step keeps running: `sfs stop` or scancel ends it)",
                    false => "",
                }
            );
            return Ok(outcomes(groups, &read(), &missing));
        }
        std::thread::sleep(POLL);
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use sfs_global::hostfile::Hostfile;

    fn groups_of(text: &str) -> Hostfile {
        Hostfile::parse(text, "h").unwrap()
    }

    fn nodes(names: &[&str]) -> Vec<String> {
        names.iter().map(|n| n.to_string()).collect()
    }

    #[test]
    fn hosts_that_are_nodes_pin_the_step_to_them() {
        let h = groups_of("n1 n1:7000\nn3-0 n3.cluster:7000\nn3-1 n3.cluster:7002\n");
        let groups = super::super::group_by_host(&h.hosts);
        let plan = plan(&groups, &nodes(&["n1", "n2", "n3"])).unwrap();
        assert_eq!(plan.slots, ["n1=n1", "n3=n3-0,n3-1"]);
        assert_eq!(plan.nodelist, Some(nodes(&["n1", "n3"])));
    }

    #[test]
    fn servers_named_after_nodes_pin_the_step_when_hosts_are_addresses() {
        let h = groups_of("n2-0 10.1.0.2:7000\nn2-1 10.1.0.2:7002\nn1 10.1.0.1:7000\n");
        let groups = super::super::group_by_host(&h.hosts);
        let plan = plan(&groups, &nodes(&["n1", "n2"])).unwrap();
        assert_eq!(plan.slots, ["n2=n2-0,n2-1", "n1=n1"]);
        assert_eq!(plan.nodelist, Some(nodes(&["n2", "n1"])));
    }

    #[test]
    fn plain_addresses_go_by_the_steps_node_order() {
        let h = groups_of("a 127.0.0.1:7000\nb 127.0.0.2:7000\n");
        let groups = super::super::group_by_host(&h.hosts);
        let plan = plan(&groups, &nodes(&["x1", "x2", "x3"])).unwrap();
        assert_eq!(plan.slots, ["=a", "=b"]);
        assert_eq!(plan.nodelist, None);
        let e = super::plan(&groups, &nodes(&["x1"])).unwrap_err();
        assert!(e.contains("2 host(s), the job has 1 node(s)"), "{e}");
    }

    #[test]
    fn a_mixed_or_doubled_hostfile_is_refused() {
        let h = groups_of("n1 n1:7000\nb 127.0.0.2:7000\n");
        let groups = super::super::group_by_host(&h.hosts);
        let e = plan(&groups, &nodes(&["n1", "n2"])).unwrap_err();
        assert!(e.contains("(127.0.0.2) are not"), "{e}");
        let h = groups_of("n1 n1:7000\nn1-1 n1.ib:7000\n");
        let groups = super::super::group_by_host(&h.hosts);
        let e = plan(&groups, &nodes(&["n1", "n2"])).unwrap_err();
        assert!(
            e.contains("two hosts of the hostfile are on node n1"),
            "{e}"
        );
    }

    #[test]
    fn a_task_takes_its_nodes_slot_or_its_index() {
        let named = nodes(&["n1=a,b", "n2=c"]);
        assert_eq!(my_slot(&named, Some("N2"), Some(0)).unwrap(), ["c"]);
        assert!(my_slot(&named, Some("n9"), Some(0))
            .unwrap_err()
            .contains("node n9 has no servers"));
        assert!(my_slot(&named, None, Some(0)).is_err());
        let indexed = nodes(&["=a,b", "=c"]);
        assert_eq!(my_slot(&indexed, Some("n2"), Some(0)).unwrap(), ["a", "b"]);
        assert!(my_slot(&indexed, None, Some(2))
            .unwrap_err()
            .contains("node 2, the hostfile has 2"));
        assert!(my_slot(&nodes(&["x"]), None, Some(0)).is_err());
    }

    #[test]
    fn the_steps_output_gives_one_outcome_per_host() {
        let h = groups_of("a 127.0.0.1:7000\nb 127.0.0.2:7000\nc 127.0.0.3:7000\n");
        let groups = super::super::group_by_host(&h.hosts);
        let log = "1: server b: exited during start-up\n\
                   0: server a ready on 127.0.0.1:7000 (pid 9)\n\
                   1: sfs node step: failed b\n\
                   0: sfs node step: ready a\n\
                   srun: error: n3: task 2: Exited with exit code 1\n";
        let reports = parse(log);
        let outcomes = outcomes(&groups, &reports, "the step ended");
        assert_eq!(
            outcomes[0].result,
            Ok(vec!["server a ready on 127.0.0.1:7000 (pid 9)".to_string()])
        );
        assert_eq!(
            outcomes[1].result,
            Err("server b: exited during start-up".to_string())
        );
        let e = outcomes[2].result.as_ref().unwrap_err();
        assert!(
            e.starts_with("the step ended; srun said:") && e.contains("task 2: Exited"),
            "{e}"
        );
    }

    #[test]
    fn the_srun_command_line_pins_nodes_and_carries_no_secret() {
        let h = groups_of("n1 n1:7000\nn2 n2:7000\n");
        let setup = Setup {
            config: sfs_global::config::Config::default(),
            config_path: Some("/jobs/7/config.json".into()),
            hostfile: h.clone(),
            hostfile_path: "/jobs/7/hostfile".into(),
        };
        let groups = super::super::group_by_host(&h.hosts);
        let plan = plan(&groups, &nodes(&["n1", "n2"])).unwrap();
        let argv = srun_argv(
            &setup,
            &"/opt/sfs".into(),
            &plan,
            StepAction::Start { restore: false },
        );
        let argv: Vec<String> = argv
            .iter()
            .map(|a| a.to_string_lossy().into_owned())
            .collect();
        let expected = [
            "srun",
            "--overlap",
            "--nodes=2",
            "--ntasks=2",
            "--ntasks-per-node=1",
            "--kill-on-bad-exit=0",
            "--label",
            "--job-name=sfs-servers",
            "--nodelist=n1,n2",
            "/opt/sfs",
            "--config",
            "/jobs/7/config.json",
            "--hostfile",
            "/jobs/7/hostfile",
            "node",
        ];
        assert_eq!(argv[..expected.len()], expected);
        assert_eq!(argv[argv.len() - 3..], ["step-start", "n1=n1", "n2=n2"]);
    }
}
