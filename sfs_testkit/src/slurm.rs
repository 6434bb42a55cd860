//! A private Slurm cluster on 127.0.0.1 for tests of what runs under a
//! batch system (`sfs hostfile --slurm`, MPI jobs, the Lua burst buffer):
//! one `slurmctld` and `slurmd`s n1..nN, all on this machine (FACTS.md,
//! "Batch system and simulated nodes"), each test its own cluster.
//!
//! Everything lives in one directory of its own under the temp dir (mode
//! 0755 so that user `tests` can reach it): the config, a private `munged`
//! (own key, own socket), state, spool, pid and log files, and
//! [`PrivateSlurm::work_dir`], a world-writable directory for job scripts
//! and output. Daemons listen on ports picked free at start (a start that
//! loses a port to another process is retried with new ones), so test
//! processes can run clusters side by side; all traffic goes to 127.0.0.1.
//!
//! Nothing outlives the cluster: on drop (also when the test panics) every
//! daemon's process group is killed, and with it every process whose
//! environment names this cluster's `slurm.conf` (slurmd sets `SLURM_CONF`
//! for `slurmstepd`, job steps and tasks, slurmctld for the Lua burst
//! buffer's functions), then the directory is removed. A watcher process
//! does the same if the test process dies without dropping it (SIGKILL, a
//! harness timeout).
//!
//! Scheduling is made prompt (`bf_interval=1,sched_interval=1`): without
//! it a job whose burst buffer is staged in waits up to 30 s for the
//! backfill scheduler. Burst buffer functions run as root (the SlurmUser)
//! with the daemons' working directory, which is the cluster's directory.

use std::collections::HashMap;
use std::ffi::OsStr;
use std::fs;
use std::io::Write;
use std::net::TcpListener;
use std::os::unix::fs::PermissionsExt;
use std::os::unix::process::CommandExt;
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Output, Stdio};
use std::time::{Duration, Instant};

/// Why a private cluster cannot be started here, or `None` when it can:
/// it needs root (the daemons run as root; `runuser` for other users) and
/// Debian's `slurm-wlm` and `munge` packages.
pub fn missing_prerequisites() -> Option<String> {
    if !crate::is_root() {
        return Some("not root: the Slurm daemons and munged run as root".into());
    }
    for (program, package) in [
        ("slurmctld", "slurmctld (slurm-wlm)"),
        ("slurmd", "slurmd (slurm-wlm)"),
        ("sbatch", "slurm-client (slurm-wlm)"),
        ("srun", "slurm-client (slurm-wlm)"),
        ("scontrol", "slurm-client (slurm-wlm)"),
        ("sinfo", "slurm-client (slurm-wlm)"),
        ("munged", "munge"),
        ("mungekey", "munge"),
        ("runuser", "util-linux"),
    ] {
        if find_program(program).is_none() {
            return Some(format!("{program} not found (package {package})"));
        }
    }
    None
}

/// Whether the system has a user `name` (for jobs submitted as another
/// user than root, which burst buffers need).
pub fn user_exists(name: &str) -> bool {
    Command::new("id")
        .args(["-u", name])
        .stdout(Stdio::null())
        .stderr(Stdio::null())
        .status()
        .is_ok_and(|s| s.success())
}

/// Makes the system user `name` (no home, no login shell) unless it
/// exists: the unprivileged user that jobs with burst buffers are
/// submitted as. Panics when it cannot.
pub fn ensure_user(name: &str) {
    if user_exists(name) {
        return;
    }
    let out = Command::new(program("useradd"))
        .args([
            "--system",
            "--no-create-home",
            "--shell",
            "/usr/sbin/nologin",
            name,
        ])
        .output()
        .unwrap_or_else(|e| panic!("cannot run useradd: {e}"));
    assert!(
        out.status.success() || user_exists(name),
        "useradd {name} failed: {}",
        String::from_utf8_lossy(&out.stderr)
    );
}

/// `program` on the PATH or in the sbin directories (which a test's PATH
/// may lack), or `None`.
fn find_program(program: &str) -> Option<PathBuf> {
    let path = std::env::var_os("PATH").unwrap_or_default();
    std::env::split_paths(&path)
        .chain(["/usr/sbin", "/sbin", "/usr/bin", "/bin"].map(PathBuf::from))
        .map(|dir| dir.join(program))
        .find(|candidate| {
            fs::metadata(candidate)
                .is_ok_and(|m| m.is_file() && m.permissions().mode() & 0o111 != 0)
        })
}

/// Like [`find_program`], but panics naming the program when it is missing.
fn program(name: &str) -> PathBuf {
    find_program(name).unwrap_or_else(|| {
        panic!("{name} not found: a private Slurm cluster needs Debian's slurm-wlm and munge")
    })
}

/// What [`PrivateSlurm::start`] builds.
#[derive(Debug, Clone)]
pub struct SlurmOptions {
    /// Number of nodes, named `n1`..`nN` (default 3). Each is one `slurmd
    /// -N nX` on this machine with a port of its own; jobs tell them apart
    /// by `$SLURMD_NODENAME`.
    pub nodes: usize,
    /// CPUs each node offers (default 2, the cores of the test machine;
    /// more are accepted: `SlurmdParameters=config_overrides`).
    pub cpus_per_node: u32,
    /// A Lua burst buffer script: when set, the cluster runs
    /// `BurstBufferType=burst_buffer/lua` with a copy of it as
    /// `burst_buffer.lua` next to slurm.conf (Slurm reloads it on every
    /// call, so it may be changed while the cluster runs: see
    /// [`PrivateSlurm::burst_buffer_script`]). No `burst_buffer.conf` is
    /// written: it is optional and holds only timeouts (defaults: stage-in
    /// and stage-out 86400 s, others 300 s).
    pub burst_buffer_lua: Option<PathBuf>,
    /// How long the daemons may take until every node is idle (default
    /// 60 s; it takes about 1 s).
    pub start_timeout: Duration,
}

impl Default for SlurmOptions {
    fn default() -> Self {
        SlurmOptions {
            nodes: 3,
            cpus_per_node: 2,
            burst_buffer_lua: None,
            start_timeout: Duration::from_secs(60),
        }
    }
}

/// Job states after which a job no longer changes (`scontrol show job`).
const FINAL_STATES: [&str; 9] = [
    "COMPLETED",
    "FAILED",
    "CANCELLED",
    "TIMEOUT",
    "NODE_FAIL",
    "PREEMPTED",
    "BOOT_FAIL",
    "DEADLINE",
    "OUT_OF_MEMORY",
];

/// How many times [`PrivateSlurm::start`] tries before giving up when
/// another process takes one of the ports it picked.
const START_ATTEMPTS: usize = 5;

/// One daemon started by the cluster.
struct Daemon {
    name: String,
    child: Child,
}

/// A running private cluster; stopped and removed on drop.
pub struct PrivateSlurm {
    dir: PathBuf,
    conf: PathBuf,
    nodes: Vec<String>,
    /// slurmctld and the slurmds.
    daemons: Vec<Daemon>,
    /// munged, stopped after the Slurm daemons.
    munged: Option<Daemon>,
    /// Cleans up if this process dies without dropping the cluster.
    watcher: Option<Child>,
}

/// Why an attempt to start failed in a way another attempt may not.
struct PortTaken(String);

impl PrivateSlurm {
    /// Starts a cluster and waits until all its nodes are idle (about
    /// 1 s); panics, with the daemons' logs, if it cannot.
    pub fn start(options: SlurmOptions) -> PrivateSlurm {
        assert!(options.nodes >= 1, "a cluster needs at least one node");
        let mut last = String::new();
        for _ in 0..START_ATTEMPTS {
            match PrivateSlurm::try_start(&options) {
                Ok(cluster) => return cluster,
                // The failed attempt's daemons and directory are gone
                // (dropped inside try_start): try again with new ports.
                Err(PortTaken(logs)) => last = logs,
            }
        }
        panic!(
            "private Slurm cluster: a port was taken by another process in each of \
             {START_ATTEMPTS} attempts; the last attempt's logs:\n{last}"
        );
    }

    /// One attempt: the directory, munged, the config, the daemons.
    fn try_start(options: &SlurmOptions) -> Result<PrivateSlurm, PortTaken> {
        let dir = std::env::temp_dir().join(crate::ceph::unique_name("sfs-slurm"));
        let nodes: Vec<String> = (1..=options.nodes).map(|i| format!("n{i}")).collect();
        let mut cluster = PrivateSlurm {
            conf: dir.join("slurm.conf"),
            dir,
            nodes,
            daemons: Vec::new(),
            munged: None,
            watcher: None,
        };
        // From here on a panic drops `cluster`, which undoes what is done.
        cluster.make_directories();
        cluster.start_watcher();
        cluster.start_munged();
        let ports = free_ports(1 + options.nodes);
        cluster.write_config(options, &ports);
        cluster.spawn(
            "slurmctld",
            Command::new(program("slurmctld"))
                .args(["-D", "-f"])
                .arg(&cluster.conf),
        );
        for node in cluster.nodes.clone() {
            cluster.spawn(
                &format!("slurmd-{node}"),
                Command::new(program("slurmd"))
                    .args(["-D", "-N", &node, "-f"])
                    .arg(&cluster.conf),
            );
        }
        cluster.wait_idle(options.start_timeout)?;
        Ok(cluster)
    }

    /// The cluster's directory (config, `log/`, `state/`, ...).
    pub fn dir(&self) -> &Path {
        &self.dir
    }

    /// Its slurm.conf (what `SLURM_CONF` names).
    pub fn conf(&self) -> &Path {
        &self.conf
    }

    /// A directory every user may write (mode 1777): put job scripts
    /// there (they must be readable by the user who submits them), and
    /// jobs and commands of this cluster start there.
    pub fn work_dir(&self) -> PathBuf {
        self.dir.join("work")
    }

    /// The nodes' names, `n1`..`nN`.
    pub fn nodes(&self) -> &[String] {
        &self.nodes
    }

    /// Where the burst buffer script lives (`burst_buffer.lua` next to
    /// slurm.conf); rewriting it changes the functions of the next call.
    pub fn burst_buffer_script(&self) -> PathBuf {
        self.dir.join("burst_buffer.lua")
    }

    /// `program` (sbatch, srun, scontrol, squeue, ...) run as root against
    /// this cluster: `SLURM_CONF` set, other `SLURM_*` variables removed,
    /// working directory [`PrivateSlurm::work_dir`].
    pub fn command(&self, program: impl AsRef<OsStr>) -> Command {
        self.command_as(None, program)
    }

    /// Like [`PrivateSlurm::command`], as `user` when given (`runuser -u
    /// USER --`, which keeps the environment).
    pub fn command_as(&self, user: Option<&str>, program: impl AsRef<OsStr>) -> Command {
        let mut command = match user {
            None => Command::new(program),
            Some(user) => {
                let mut runuser = Command::new(self::program("runuser"));
                runuser.args(["-u", user, "--"]).arg(program);
                runuser
            }
        };
        for (name, _) in std::env::vars_os() {
            if name.to_string_lossy().starts_with("SLURM_") {
                command.env_remove(name);
            }
        }
        command
            .env("SLURM_CONF", &self.conf)
            .current_dir(self.work_dir());
        command
    }

    /// Submits `script` (readable by `as_user`: put it in
    /// [`PrivateSlurm::work_dir`]) as root or `as_user`; returns the job
    /// id. The job starts in the work directory, and its output goes where
    /// the script says (`#SBATCH -o`), by default `slurm-ID.out` there
    /// ([`PrivateSlurm::job_output`] reads it). Root cannot use burst
    /// buffers: submit `#BB_LUA` jobs as another user.
    pub fn sbatch(&self, script: &Path, as_user: Option<&str>) -> u32 {
        self.sbatch_with(script, as_user, &[])
    }

    /// [`PrivateSlurm::sbatch`] with more sbatch options (`-N2`, ...).
    pub fn sbatch_with(&self, script: &Path, as_user: Option<&str>, args: &[&str]) -> u32 {
        let out = self.run_ok(
            self.command_as(as_user, "sbatch")
                .arg("--parsable")
                .args(args)
                .arg(script),
        );
        let text = String::from_utf8_lossy(&out.stdout);
        let id = text.trim().split(';').next().unwrap_or_default();
        id.parse().unwrap_or_else(|e| {
            panic!(
                "sbatch printed {text:?}, not a job id ({e}); stderr:\n{}",
                String::from_utf8_lossy(&out.stderr)
            )
        })
    }

    /// The fields of `scontrol show job -o ID` (JobState, NodeList,
    /// StdOut, BurstBufferState, ...), or `None` if Slurm does not know
    /// the job. Values holding spaces are joined back with single spaces.
    pub fn job_info(&self, id: u32) -> Option<HashMap<String, String>> {
        let out = self
            .command("scontrol")
            .args(["show", "job", "-o", &id.to_string()])
            .output()
            .unwrap_or_else(|e| panic!("cannot run scontrol: {e}"));
        if !out.status.success() {
            return None;
        }
        let mut fields = HashMap::new();
        let mut last: Option<String> = None;
        for token in String::from_utf8_lossy(&out.stdout).split_whitespace() {
            match token.split_once('=') {
                Some((key, value)) => {
                    fields.insert(key.to_string(), value.to_string());
                    last = Some(key.to_string());
                }
                None => {
                    if let Some(value) = last.as_ref().and_then(|k| fields.get_mut(k)) {
                        value.push(' ');
                        value.push_str(token);
                    }
                }
            }
        }
        Some(fields)
    }

    /// The job's `JobState` now (PENDING, RUNNING, STAGE_OUT, COMPLETED,
    /// ...), or `None` if Slurm does not know the job.
    pub fn job_state(&self, id: u32) -> Option<String> {
        self.job_info(id).and_then(|f| f.get("JobState").cloned())
    }

    /// Waits until the job is over and returns its final `JobState`
    /// (COMPLETED, FAILED, CANCELLED, TIMEOUT, ...), polling `scontrol`
    /// every 100 ms (`sbatch --wait` may return ~10 s late). A job with a
    /// burst buffer is over once its `BurstBufferState` is `complete` too,
    /// i.e. after `slurm_bb_job_teardown` returned. Panics, with the
    /// job's record and the daemons' logs, after `timeout`.
    pub fn wait_job(&self, id: u32, timeout: Duration) -> String {
        let deadline = Instant::now() + timeout;
        loop {
            let info = self.job_info(id);
            if let Some(fields) = &info {
                let state = fields.get("JobState").map(String::as_str).unwrap_or("");
                let bb_done = fields
                    .get("BurstBufferState")
                    .is_none_or(|s| s == "complete");
                if FINAL_STATES.contains(&state) && bb_done {
                    return state.to_string();
                }
            }
            if Instant::now() >= deadline {
                panic!(
                    "job {id} not over after {timeout:?}: {info:?}\n{}",
                    self.logs()
                );
            }
            std::thread::sleep(Duration::from_millis(100));
        }
    }

    /// The job's standard output as it is now (the file `StdOut` names);
    /// panics if the job or the file is unknown.
    pub fn job_output(&self, id: u32) -> String {
        let info = self
            .job_info(id)
            .unwrap_or_else(|| panic!("Slurm does not know job {id}"));
        let path = info
            .get("StdOut")
            .unwrap_or_else(|| panic!("job {id} has no StdOut: {info:?}"));
        fs::read_to_string(path)
            .unwrap_or_else(|e| panic!("cannot read job {id}'s output {path}: {e}"))
    }

    /// The end (last 60 lines) of every log of the cluster (the daemons'
    /// log files and their standard output and error), for messages.
    pub fn logs(&self) -> String {
        let mut files: Vec<PathBuf> = fs::read_dir(self.dir.join("log"))
            .map(|entries| entries.filter_map(|e| e.ok().map(|e| e.path())).collect())
            .unwrap_or_default();
        files.sort();
        let mut text = String::new();
        for file in files {
            let content = fs::read_to_string(&file).unwrap_or_default();
            let lines: Vec<&str> = content.lines().collect();
            let tail = &lines[lines.len().saturating_sub(60)..];
            text.push_str(&format!(
                "==== {} ====\n{}\n",
                file.display(),
                tail.join("\n")
            ));
        }
        text
    }

    /// Runs `command`, panicking with its output and the cluster's logs if
    /// it fails.
    fn run_ok(&self, command: &mut Command) -> Output {
        crate::run_checked(command, || self.logs())
    }

    /// The directory tree: 0755 where other users pass through (the munge
    /// socket, the spool), 1777 where jobs of any user write (`work/`,
    /// each node's `tmp/` for PMIx).
    fn make_directories(&self) {
        for (sub, mode) in [
            ("", 0o755),
            ("munge", 0o755),
            ("state", 0o700),
            ("spool", 0o755),
            ("log", 0o755),
            ("run", 0o755),
            ("tmp", 0o755),
            ("work", 0o1777),
        ] {
            let path = self.dir.join(sub);
            fs::create_dir_all(&path)
                .unwrap_or_else(|e| panic!("cannot create {}: {e}", path.display()));
            fs::set_permissions(&path, fs::Permissions::from_mode(mode))
                .unwrap_or_else(|e| panic!("cannot chmod {}: {e}", path.display()));
        }
        for node in &self.nodes {
            let spool = self.dir.join("spool").join(node);
            fs::create_dir_all(&spool)
                .unwrap_or_else(|e| panic!("cannot create {}: {e}", spool.display()));
            // TmpFS: the PMIx plugin makes spmix_appdir_UID_JOB.STEP in
            // it, which would clash between nodes sharing one /tmp.
            let tmp = self.dir.join("tmp").join(node);
            fs::create_dir_all(&tmp)
                .unwrap_or_else(|e| panic!("cannot create {}: {e}", tmp.display()));
            fs::set_permissions(&tmp, fs::Permissions::from_mode(0o1777))
                .unwrap_or_else(|e| panic!("cannot chmod {}: {e}", tmp.display()));
        }
    }

    /// A shell that waits for this process to end and then does what drop
    /// does; drop kills it first. Its own process group, so that a signal
    /// to the test's group (Ctrl-C) does not take it along.
    fn start_watcher(&mut self) {
        const SCRIPT: &str = r#"
pid=$1 dir=$2 conf=$3
while kill -0 "$pid" 2>/dev/null; do sleep 1; done
for round in 1 2 3 4 5; do
    for group in $(cat "$dir/pgids" 2>/dev/null); do kill -KILL -- "-$group" 2>/dev/null; done
    for environ in /proc/[0-9]*/environ; do
        if grep -qzxF "SLURM_CONF=$conf" "$environ" 2>/dev/null; then
            p=${environ#/proc/}; kill -KILL "${p%/environ}" 2>/dev/null
        fi
    done
    sleep 0.2
done
rm -rf "$dir"
"#;
        let child = Command::new("sh")
            .args(["-c", SCRIPT, "sfs-slurm-watcher"])
            .arg(std::process::id().to_string())
            .arg(&self.dir)
            .arg(&self.conf)
            .stdin(Stdio::null())
            .stdout(Stdio::null())
            .stderr(Stdio::null())
            .process_group(0)
            .spawn()
            .unwrap_or_else(|e| panic!("cannot start the cluster's watcher (sh): {e}"));
        self.watcher = Some(child);
    }

    /// munged with a key and socket of its own; waits for the socket.
    fn start_munged(&mut self) {
        let munge = self.dir.join("munge");
        let key = munge.join("munge.key");
        self.run_ok(
            Command::new(program("mungekey"))
                .arg("-c")
                .arg("-k")
                .arg(&key),
        );
        let socket = munge.join("munge.socket");
        assert!(
            socket.as_os_str().len() < 100,
            "munge socket path {} too long for a Unix socket (set TMPDIR shorter)",
            socket.display()
        );
        let mut command = Command::new(program("munged"));
        command
            .arg("-F")
            .arg(format!("--socket={}", socket.display()))
            .arg(format!("--key-file={}", key.display()))
            .arg(format!(
                "--pid-file={}",
                self.dir.join("run/munged.pid").display()
            ))
            .arg(format!(
                "--log-file={}",
                self.dir.join("log/munged.log").display()
            ))
            .arg(format!(
                "--seed-file={}",
                munge.join("munged.seed").display()
            ));
        let daemon = self.spawn_daemon("munged", &mut command);
        self.munged = Some(daemon);
        let deadline = Instant::now() + Duration::from_secs(20);
        while !socket.exists() {
            if let Some(Ok(Some(status))) = self.munged.as_mut().map(|d| d.child.try_wait()) {
                panic!("munged exited ({status}):\n{}", self.logs());
            }
            assert!(
                Instant::now() < deadline,
                "munged made no socket in 20 s:\n{}",
                self.logs()
            );
            std::thread::sleep(Duration::from_millis(10));
        }
    }

    /// slurm.conf (and the burst buffer script): `ports[0]` for
    /// slurmctld, then one per node.
    fn write_config(&self, options: &SlurmOptions, ports: &[u16]) {
        let dir = self.dir.display();
        let mut conf = format!(
            "# A private test cluster (sfs_testkit::slurm).\n\
             ClusterName=sfs\n\
             SlurmctldHost=localhost(127.0.0.1)\n\
             SlurmctldPort={ctld_port}\n\
             AuthType=auth/munge\n\
             AuthInfo=socket={dir}/munge/munge.socket\n\
             CredType=cred/munge\n\
             SlurmUser=root\n\
             SlurmdUser=root\n\
             StateSaveLocation={dir}/state\n\
             SlurmdSpoolDir={dir}/spool/%n\n\
             SlurmctldPidFile={dir}/run/slurmctld.pid\n\
             SlurmdPidFile={dir}/run/slurmd-%n.pid\n\
             SlurmctldLogFile={dir}/log/slurmctld.log\n\
             SlurmdLogFile={dir}/log/slurmd-%n.log\n\
             TmpFS={dir}/tmp/%n\n\
             MailProg=/bin/true\n\
             ProctrackType=proctrack/linuxproc\n\
             TaskPlugin=task/none\n\
             JobAcctGatherType=jobacct_gather/none\n\
             AccountingStorageType=accounting_storage/none\n\
             SelectType=select/cons_tres\n\
             SelectTypeParameters=CR_CPU\n\
             SlurmdParameters=config_overrides\n\
             MpiDefault=none\n\
             ReturnToService=2\n\
             MinJobAge=3600\n\
             KillWait=2\n\
             SchedulerType=sched/backfill\n\
             SchedulerParameters=bf_interval=1,sched_interval=1\n",
            ctld_port = ports[0],
        );
        if let Some(script) = &options.burst_buffer_lua {
            let target = self.burst_buffer_script();
            fs::copy(script, &target).unwrap_or_else(|e| {
                panic!(
                    "cannot copy {} to {}: {e}",
                    script.display(),
                    target.display()
                )
            });
            conf.push_str("BurstBufferType=burst_buffer/lua\nDebugFlags=BurstBuffer\n");
        }
        for (node, port) in self.nodes.iter().zip(&ports[1..]) {
            conf.push_str(&format!(
                "NodeName={node} NodeHostname=localhost NodeAddr=127.0.0.1 Port={port} \
                 CPUs={} State=UNKNOWN\n",
                options.cpus_per_node
            ));
        }
        conf.push_str("PartitionName=debug Nodes=ALL Default=YES MaxTime=INFINITE State=UP\n");
        fs::write(&self.conf, conf)
            .unwrap_or_else(|e| panic!("cannot write {}: {e}", self.conf.display()));
    }

    /// Starts a Slurm daemon in the background (own process group).
    fn spawn(&mut self, name: &str, command: &mut Command) {
        let daemon = self.spawn_daemon(name, command);
        self.daemons.push(daemon);
    }

    /// Starts `command` in a process group of its own, working directory
    /// the cluster's, output to `log/NAME.out`, and records the group for
    /// the watcher.
    fn spawn_daemon(&self, name: &str, command: &mut Command) -> Daemon {
        let out_path = self.dir.join("log").join(format!("{name}.out"));
        let out = fs::File::create(&out_path)
            .unwrap_or_else(|e| panic!("cannot create {}: {e}", out_path.display()));
        let err = out
            .try_clone()
            .unwrap_or_else(|e| panic!("cannot duplicate {}: {e}", out_path.display()));
        for (var, _) in std::env::vars_os() {
            if var.to_string_lossy().starts_with("SLURM_") {
                command.env_remove(var);
            }
        }
        let child = command
            .env("SLURM_CONF", &self.conf)
            .current_dir(&self.dir)
            .stdin(Stdio::null())
            .stdout(out)
            .stderr(err)
            .process_group(0)
            .spawn()
            .unwrap_or_else(|e| panic!("cannot start {name} ({command:?}): {e}"));
        let pgids = self.dir.join("pgids");
        let mut file = fs::OpenOptions::new()
            .create(true)
            .append(true)
            .open(&pgids)
            .unwrap_or_else(|e| panic!("cannot open {}: {e}", pgids.display()));
        writeln!(file, "{}", child.id())
            .unwrap_or_else(|e| panic!("cannot write {}: {e}", pgids.display()));
        Daemon {
            name: name.to_string(),
            child,
        }
    }

    /// Waits until `sinfo` shows every node idle. A daemon that exits
    /// because its port was taken meanwhile is [`PortTaken`]; any other
    /// exit, or `timeout`, panics with the logs.
    fn wait_idle(&mut self, timeout: Duration) -> Result<(), PortTaken> {
        let deadline = Instant::now() + timeout;
        loop {
            let exited = self
                .daemons
                .iter_mut()
                .find_map(|d| Some((d.name.clone(), d.child.try_wait().ok()??)));
            if let Some((name, status)) = exited {
                let logs = self.logs();
                if logs.contains("Address already in use") {
                    return Err(PortTaken(logs));
                }
                panic!("{name} exited ({status}) during start:\n{logs}");
            }
            let out = self
                .command("sinfo")
                .args(["-h", "-N", "-o", "%N %T"])
                .output()
                .unwrap_or_else(|e| panic!("cannot run sinfo: {e}"));
            let last = format!(
                "{}{}",
                String::from_utf8_lossy(&out.stdout),
                String::from_utf8_lossy(&out.stderr)
            );
            let idle = last
                .lines()
                .filter(|l| l.split_whitespace().nth(1) == Some("idle"))
                .count();
            if out.status.success() && idle == self.nodes.len() {
                return Ok(());
            }
            if Instant::now() >= deadline {
                panic!(
                    "private Slurm cluster: nodes not idle after {timeout:?}; sinfo:\n{last}\n{}",
                    self.logs()
                );
            }
            std::thread::sleep(Duration::from_millis(50));
        }
    }
}

/// `count` distinct ports that are free now (bound together on all
/// addresses, as the daemons bind them, then released).
fn free_ports(count: usize) -> Vec<u16> {
    let listeners: Vec<TcpListener> = (0..count)
        .map(|_| {
            TcpListener::bind(("0.0.0.0", 0))
                .unwrap_or_else(|e| panic!("cannot bind a free port: {e}"))
        })
        .collect();
    listeners
        .iter()
        .map(|l| {
            l.local_addr()
                .unwrap_or_else(|e| panic!("bound socket without address: {e}"))
                .port()
        })
        .collect()
}

/// The processes whose environment holds `SLURM_CONF=conf`: a cluster's
/// daemons, slurmstepds, job steps and tasks, burst buffer functions and
/// what they started (this process excepted). Empty once a cluster is
/// dropped.
pub fn cluster_processes(conf: &Path) -> Vec<i32> {
    let wanted = format!("SLURM_CONF={}", conf.display()).into_bytes();
    let me = std::process::id() as i32;
    let Ok(entries) = fs::read_dir("/proc") else {
        return Vec::new();
    };
    entries
        .filter_map(|e| e.ok()?.file_name().to_str()?.parse::<i32>().ok())
        .filter(|&pid| pid != me)
        .filter(|pid| {
            fs::read(format!("/proc/{pid}/environ"))
                .is_ok_and(|env| env.split(|&b| b == 0).any(|var| var == wanted.as_slice()))
        })
        .collect()
}

/// Sends SIGKILL to process `pid`, or to its group when `group`.
fn kill(pid: u32, group: bool) {
    let Some(pid) = i32::try_from(pid)
        .ok()
        .and_then(rustix::process::Pid::from_raw)
    else {
        return;
    };
    let signal = rustix::process::Signal::KILL;
    let _ = match group {
        true => rustix::process::kill_process_group(pid, signal),
        false => rustix::process::kill_process(pid, signal),
    };
}

impl Drop for PrivateSlurm {
    fn drop(&mut self) {
        // The daemons' groups (slurmctld's holds slurmscriptd and the
        // burst buffer functions), then whatever else names the config:
        // slurmstepds and tasks live in sessions of their own. Repeated
        // until none is left, as a dying stepd may still start something.
        for daemon in &self.daemons {
            kill(daemon.child.id(), true);
        }
        for _ in 0..100 {
            let left = cluster_processes(&self.conf);
            if left.is_empty() {
                break;
            }
            for pid in left {
                kill(pid as u32, false);
            }
            std::thread::sleep(Duration::from_millis(20));
        }
        for daemon in self.daemons.iter_mut().chain(self.munged.as_mut()) {
            kill(daemon.child.id(), true);
            let _ = daemon.child.wait();
        }
        if let Some(mut watcher) = self.watcher.take() {
            kill(watcher.id(), true);
            let _ = watcher.wait();
        }
        for _ in 0..5 {
            if fs::remove_dir_all(&self.dir).is_ok() || !self.dir.exists() {
                break;
            }
            std::thread::sleep(Duration::from_millis(50));
        }
    }
}
