//! SFS under a real Slurm (slurmctld, three slurmd n1..n3 and munged on
//! this machine, `sfs_testkit::slurm`), as docs/slurm.md tells a user:
//!
//! - the job script `slurm/sfs-job.sh` starts SFS on the job's three nodes
//!   (`launcher.kind` "srun": one server step), runs `mpirun -np 2 sfs exec
//!   --` of an MPI program of the test's own (collective MPI-IO N-1 and
//!   POSIX N-N, every byte checked by the ranks) and a Python program
//!   through the shim, stages out, stops and cleans; the staged-out files
//!   are checked byte for byte;
//! - servers started by a job end with it: `scancel` of a running job
//!   leaves no server behind;
//! - the burst buffer `slurm/burst_buffer.lua`: a job of an unprivileged
//!   user with `#BB_LUA` directives gets SFS started on its nodes, its
//!   input staged in before it runs and its output staged out after;
//!   teardown stops and removes everything. Checked by their effects.
//!
//! The nodes share this machine's network namespace: the hostfile gives
//! node I the address 127.0.0.I (`sfs hostfile --address
//! '127.0.0.{number}'`), all on one free port.

use sfs_testkit::slurm::{self, PrivateSlurm, SlurmOptions};
use std::net::{SocketAddr, TcpListener, TcpStream};
use std::os::unix::fs::PermissionsExt;
use std::path::{Path, PathBuf};
use std::process::Command;
use std::time::{Duration, Instant};

/// The unprivileged user burst-buffer jobs run as (root cannot use them).
const USER: &str = "tests";
/// How long a job may take from submission to its end.
const JOB_TIMEOUT: Duration = Duration::from_secs(120);
/// Bytes each MPI rank writes.
const BLOCK: usize = 1 << 20;

/// Fails the test, saying why, where a private cluster cannot run.
fn require() {
    if let Some(reason) = slurm::missing_prerequisites() {
        panic!("a private Slurm cluster cannot run here: {reason} (scripts/setup.sh installs it)");
    }
    slurm::ensure_user(USER);
}

/// A port free on 127.0.0.1..3 with the next one (the data port) free too.
fn free_port_pair() -> u16 {
    for _ in 0..100 {
        let port = TcpListener::bind("127.0.0.1:0")
            .unwrap()
            .local_addr()
            .unwrap()
            .port();
        if port == u16::MAX {
            continue;
        }
        let free = (1..=3).all(|host| {
            [port, port + 1]
                .iter()
                .all(|p| TcpListener::bind(format!("127.0.0.{host}:{p}")).is_ok())
        });
        if free {
            return port;
        }
    }
    panic!("no free port pair on 127.0.0.1..3");
}

/// Whether anything listens on 127.0.0.`host`:`port`.
fn listening(host: u8, port: u16) -> bool {
    let address: SocketAddr = format!("127.0.0.{host}:{port}").parse().unwrap();
    TcpStream::connect_timeout(&address, Duration::from_millis(300)).is_ok()
}

/// Waits until no server listens on `port` of the three addresses.
fn wait_ports_closed(port: u16, within: Duration) -> Result<(), String> {
    let deadline = Instant::now() + within;
    while Instant::now() < deadline {
        if !(1..=3).any(|h| listening(h, port)) {
            return Ok(());
        }
        std::thread::sleep(Duration::from_millis(100));
    }
    let open: Vec<u8> = (1..=3).filter(|&h| listening(h, port)).collect();
    Err(format!(
        "still listening on port {port} of 127.0.0.{open:?}"
    ))
}

/// The byte an MPI rank writes at `i` (as mpi_io.c's `pattern`).
fn pattern(rank: usize, i: usize) -> u8 {
    ((rank * 131 + i * 7 + (i >> 12)) & 0xff) as u8
}

/// The repository's root.
fn repo() -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR"))
        .parent()
        .unwrap()
        .to_path_buf()
}

/// Compiles the MPI program into `dir`.
fn build_mpi_program(dir: &Path) -> PathBuf {
    let program = dir.join("mpi_io");
    let source = repo().join("sfs_cli/tests/slurm_support/mpi_io.c");
    let out = Command::new("mpicc")
        .args(["-O2", "-o"])
        .arg(&program)
        .arg(&source)
        .output()
        .expect("mpicc (openmpi, scripts/setup.sh)");
    assert!(
        out.status.success(),
        "mpicc failed: {}",
        String::from_utf8_lossy(&out.stderr)
    );
    program
}

/// `sfs` and the shim libraries copied where any user may run them (the
/// build directory may be under root's 0700 home).
fn installed_sfs(dir: &Path) -> PathBuf {
    let bin = dir.join("bin");
    std::fs::create_dir_all(&bin).unwrap();
    std::fs::set_permissions(&bin, std::fs::Permissions::from_mode(0o755)).unwrap();
    let artifacts = sfs_testkit::artifacts();
    for file in [&artifacts.sfs, &artifacts.preload, &artifacts.shim] {
        let to = bin.join(file.file_name().unwrap());
        std::fs::copy(file, &to).unwrap();
        std::fs::set_permissions(&to, std::fs::Permissions::from_mode(0o755)).unwrap();
    }
    bin.join("sfs")
}

/// Submits `script` with sbatch `options` before it and `arguments` for it
/// after it; the job's id.
fn submit(cluster: &PrivateSlurm, options: &[&str], script: &Path, arguments: &[&str]) -> u32 {
    let out = cluster
        .command("sbatch")
        .arg("--parsable")
        .args(options)
        .arg(script)
        .args(arguments)
        .output()
        .expect("sbatch runs");
    let text = String::from_utf8_lossy(&out.stdout);
    text.trim()
        .split(';')
        .next()
        .and_then(|id| id.parse().ok())
        .unwrap_or_else(|| {
            panic!(
                "sbatch failed ({}): {text}{}",
                out.status,
                String::from_utf8_lossy(&out.stderr)
            )
        })
}

/// The job's end: its state must be `want`; shows its output and the
/// daemons' logs otherwise.
fn expect_state(cluster: &PrivateSlurm, id: u32, want: &str) -> String {
    let state = cluster.wait_job(id, JOB_TIMEOUT);
    let output = cluster.job_output(id);
    assert_eq!(
        state,
        want,
        "job {id}: output:\n{output}\nlogs:\n{}",
        cluster.logs()
    );
    output
}

/// Open MPI's settings for these simulated nodes: every connection on
/// loopback (the nodes' orted reach each other there), as root when the
/// job is root's.
const MPI_ENVIRONMENT: &str =
    "export OMPI_MCA_oob_tcp_if_include=lo OMPI_MCA_btl_tcp_if_include=lo \
     OMPI_MCA_btl=self,vader,tcp OMPI_ALLOW_RUN_AS_ROOT=1 OMPI_ALLOW_RUN_AS_ROOT_CONFIRM=1";

#[test]
fn a_job_script_runs_mpi_and_python_on_sfs_across_its_nodes_and_stages_out() {
    require();
    let cluster = PrivateSlurm::start(SlurmOptions::default());
    let work = cluster.work_dir();
    let mpi_io = build_mpi_program(&work);
    let sfs = sfs_testkit::artifacts().sfs.clone();
    let port = free_port_pair();
    let results = work.join("results");
    let manifest = work.join("stage-out.list");
    std::fs::write(&manifest, format!("/out {}\n", results.display())).unwrap();
    let mountdir = work.join("sfs-virtual");
    let commands = work.join("work.sh");
    std::fs::write(
        &commands,
        format!(
            r#"#!/bin/bash
set -euo pipefail
{MPI_ENVIRONMENT}
"$SFS" exec -- mkdir -p "$SFS_MOUNTDIR/out"
mpirun -np 2 "$SFS" exec -- {mpi_io} "$SFS_MOUNTDIR/out" {BLOCK}
"$SFS" exec -- python3 - <<'EOF'
import os
out = os.path.join(os.environ["SFS_MOUNTDIR"], "out")
names = sorted(os.listdir(out))
sizes = [os.path.getsize(os.path.join(out, n)) for n in names]
with open(os.path.join(out, "summary.txt"), "w") as f:
    for n, s in zip(names, sizes):
        f.write(f"{{n}} {{s}}\n")
print("python saw", len(names), "files,", sum(sizes), "bytes")
EOF
"$SFS" status | tail -1
"#,
            mpi_io = mpi_io.display()
        ),
    )
    .unwrap();
    let export = format!(
        "--export=ALL,SFS={},SFS_JOB_DIR={},SFS_ROOTDIR={},SFS_MOUNTDIR={},\
         SFS_ADDRESS=127.0.0.{{number}},SFS_PORT={port},SFS_STAGE_OUT_MANIFEST={}",
        sfs.display(),
        work.join("job").display(),
        work.join("root").display(),
        mountdir.display(),
        manifest.display(),
    );
    let output_file = format!("--output={}/job-%j.out", work.display());
    let started = Instant::now();
    let id = submit(
        &cluster,
        &["--nodes=3", &export, &output_file],
        &repo().join("slurm/sfs-job.sh"),
        &["bash", &commands.display().to_string()],
    );
    let output = expect_state(&cluster, id, "COMPLETED");
    eprintln!("job {id} took {:?}:\n{output}", started.elapsed());
    for line in [
        "127.0.0.1: server n1 ready on 127.0.0.1:",
        "127.0.0.2: server n2 ready on 127.0.0.2:",
        "127.0.0.3: server n3 ready on 127.0.0.3:",
        "sfs start: 3 of 3 host(s) ok (3 server(s))",
        "rank 0 of 2 ok",
        "rank 1 of 2 ok",
        "python saw 3 files, 4194304 bytes",
        "sfs status: 3 of 3 server(s) up",
        // Staged out by one rank per node, then finished by one run.
        "stage-out (rank 0 of 3): ",
        "stage-out (rank 1 of 3): ",
        "stage-out (rank 2 of 3): ",
        "stage-out: 0 files (0.0 MiB) copied",
        "sfs stop: 3 of 3 host(s) ok (3 server(s))",
        "sfs clean: 3 of 3 host(s) ok (3 server(s))",
    ] {
        assert!(output.contains(line), "{line:?} missing from:\n{output}");
    }
    // What was staged out: every byte the ranks wrote.
    let shared = std::fs::read(results.join("shared.dat")).unwrap();
    assert_eq!(shared.len(), 2 * BLOCK);
    for (rank, block) in shared.chunks(BLOCK).enumerate() {
        assert!(
            block
                .iter()
                .enumerate()
                .all(|(i, &b)| b == pattern(rank, i)),
            "rank {rank}'s block of shared.dat differs"
        );
        let own = std::fs::read(results.join(format!("rank-{rank}.dat"))).unwrap();
        assert_eq!(own, block, "rank-{rank}.dat");
    }
    assert_eq!(
        std::fs::read_to_string(results.join("summary.txt")).unwrap(),
        format!(
            "rank-0.dat {BLOCK}\nrank-1.dat {BLOCK}\nshared.dat {}\n",
            2 * BLOCK
        )
    );
    // Stopped and cleaned: no server, no state.
    wait_ports_closed(port, Duration::from_secs(10)).unwrap();
    for node in ["n1", "n2", "n3"] {
        assert!(
            !work.join("root").join(node).exists(),
            "{node}'s state left"
        );
    }
}

#[test]
fn servers_started_by_a_job_end_with_it() {
    require();
    let cluster = PrivateSlurm::start(SlurmOptions::default());
    let work = cluster.work_dir();
    let sfs = sfs_testkit::artifacts().sfs.clone();
    let port = free_port_pair();
    let export = format!(
        "--export=ALL,SFS={},SFS_JOB_DIR={},SFS_ROOTDIR={},\
         SFS_ADDRESS=127.0.0.{{number}},SFS_PORT={port}",
        sfs.display(),
        work.join("job").display(),
        work.join("root").display(),
    );
    let id = submit(
        &cluster,
        &["--nodes=3", &export],
        &repo().join("slurm/sfs-job.sh"),
        &["sleep", "600"],
    );
    // Running: every server answers.
    let deadline = Instant::now() + JOB_TIMEOUT;
    while !(1..=3).all(|h| listening(h, port)) {
        assert!(
            Instant::now() < deadline,
            "the job's servers never came up; job {:?}\nlogs:\n{}",
            cluster.job_info(id),
            cluster.logs()
        );
        std::thread::sleep(Duration::from_millis(200));
    }
    let servers = |cluster: &PrivateSlurm| -> Vec<i32> {
        slurm::cluster_processes(cluster.conf())
            .into_iter()
            .filter(|pid| {
                std::fs::read(format!("/proc/{pid}/cmdline"))
                    .map(|c| {
                        let c = String::from_utf8_lossy(&c);
                        c.contains("\0server\0--id\0")
                    })
                    .unwrap_or(false)
            })
            .collect()
    };
    assert_eq!(servers(&cluster).len(), 3, "three servers in the job");
    let out = cluster
        .command("scancel")
        .arg(id.to_string())
        .output()
        .unwrap();
    assert!(out.status.success(), "{out:?}");
    // Slurm's process tracking ends the server step with the job: the job
    // script's own `sfs stop` never ran.
    wait_ports_closed(port, Duration::from_secs(30)).unwrap();
    let deadline = Instant::now() + Duration::from_secs(30);
    while !servers(&cluster).is_empty() {
        assert!(
            Instant::now() < deadline,
            "server processes outlived the job: {:?}",
            servers(&cluster)
        );
        std::thread::sleep(Duration::from_millis(200));
    }
}

#[test]
fn the_burst_buffer_plugin_starts_stages_and_tears_down_sfs_for_a_job() {
    require();
    let cluster = PrivateSlurm::start(SlurmOptions {
        burst_buffer_lua: Some(repo().join("slurm/burst_buffer.lua")),
        ..SlurmOptions::default()
    });
    let work = cluster.work_dir();
    let sfs = installed_sfs(&work);
    let port = free_port_pair();
    let jobs_dir = work.join("bb-jobs");
    let rootdir = work.join("bb-root");
    for dir in [&jobs_dir, &rootdir] {
        std::fs::create_dir_all(dir).unwrap();
    }
    // The user's servers make their directories under rootdir.
    std::fs::set_permissions(&rootdir, std::fs::Permissions::from_mode(0o1777)).unwrap();
    let site = cluster
        .burst_buffer_script()
        .parent()
        .unwrap()
        .join("sfs_bb_site.lua");
    std::fs::write(
        &site,
        format!(
            "return {{ sfs = {sfs:?}, jobs_dir = {jobs:?}, rootdir = {root:?}, \
             mountdir = \"/sfs-bb-test\", launcher = \"local\", \
             address = \"127.0.0.{{number}}\", port = {port} }}\n",
            sfs = sfs.display().to_string(),
            jobs = jobs_dir.display().to_string(),
            root = rootdir.display().to_string(),
        ),
    )
    .unwrap();
    // The user's input, and where the output goes.
    let input = work.join("bb-in");
    std::fs::create_dir_all(input.join("sub")).unwrap();
    let text = "burst buffers absorb a job's i/o\n".repeat(1000);
    std::fs::write(input.join("input.txt"), &text).unwrap();
    std::fs::write(input.join("sub/small"), b"small file\n").unwrap();
    let results = work.join("bb-out");
    let script = work.join("bb-job.sh");
    std::fs::write(
        &script,
        format!(
            r#"#!/bin/bash
#SBATCH --nodes=2
#SBATCH --output={work}/bb-%j.out
#BB_LUA SFS chunk_store=1GiB servers_per_node=1
#BB_LUA SFS_STAGE_IN {input} /in
#BB_LUA SFS_STAGE_OUT /out {results}
set -euo pipefail
echo "config $SFS_CONFIG mount $SFS_MOUNTDIR"
{sfs} status | tail -1
{sfs} exec -- python3 - <<'EOF'
import os
m = os.environ["SFS_MOUNTDIR"]
data = open(m + "/in/input.txt").read()
small = open(m + "/in/sub/small").read()
os.makedirs(m + "/out", exist_ok=True)
open(m + "/out/result.txt", "w").write(data.upper())
print("job read", len(data), "and", len(small), "bytes")
EOF
"#,
            work = work.display(),
            input = input.display(),
            results = results.display(),
            sfs = sfs.display(),
        ),
    )
    .unwrap();
    std::fs::set_permissions(&script, std::fs::Permissions::from_mode(0o644)).unwrap();
    let id = cluster.sbatch(&script, Some(USER));
    let log_file = jobs_dir.join(format!("{id}.log"));
    // A burst-buffer step that hangs keeps the job configuring: fail with
    // what the script ran and printed.
    let deadline = Instant::now() + JOB_TIMEOUT;
    loop {
        let info = cluster.job_info(id).unwrap_or_default();
        let state = info.get("JobState").cloned().unwrap_or_default();
        let bb = info.get("BurstBufferState").cloned().unwrap_or_default();
        if ["COMPLETED", "FAILED", "CANCELLED", "TIMEOUT"].contains(&state.as_str())
            && bb == "complete"
        {
            break;
        }
        assert!(
            Instant::now() < deadline,
            "job {id} {state}, burst buffer {bb}, reason {:?}; burst buffer log:\n{}",
            info.get("Reason"),
            std::fs::read_to_string(&log_file).unwrap_or_default()
        );
        std::thread::sleep(Duration::from_millis(250));
    }
    let output = expect_state(&cluster, id, "COMPLETED");
    let log = std::fs::read_to_string(&log_file).unwrap_or_default();
    let explain = || format!("job output:\n{output}\nburst buffer log:\n{log}");
    assert!(
        output.contains(&format!(
            "config {}/{id}/config.json mount /sfs-bb-test",
            jobs_dir.display()
        )),
        "slurm_bb_paths' variables reach the job: {}",
        explain()
    );
    assert!(
        output.contains("sfs status: 2 of 2 server(s) up"),
        "{}",
        explain()
    );
    assert!(
        output.contains(&format!("job read {} and 11 bytes", text.len())),
        "stage-in ran before the job: {}",
        explain()
    );
    // Stage-out ran after it, as the user.
    let result = results.join("result.txt");
    assert_eq!(
        std::fs::read_to_string(&result).unwrap_or_else(|e| panic!("{e}: {}", explain())),
        text.to_uppercase()
    );
    let owner = std::os::unix::fs::MetadataExt::uid(&std::fs::metadata(&result).unwrap());
    let tests_uid: u32 = String::from_utf8_lossy(
        &Command::new("id")
            .args(["-u", USER])
            .output()
            .unwrap()
            .stdout,
    )
    .trim()
    .parse()
    .unwrap();
    assert_eq!(owner, tests_uid, "staged out by the job's user, not root");
    // Teardown: servers stopped, their state and the job's directory gone.
    wait_ports_closed(port, Duration::from_secs(30))
        .unwrap_or_else(|e| panic!("{e}: {}", explain()));
    let deadline = Instant::now() + Duration::from_secs(30);
    while jobs_dir.join(id.to_string()).exists() {
        assert!(
            Instant::now() < deadline,
            "teardown left the job directory: {}",
            explain()
        );
        std::thread::sleep(Duration::from_millis(200));
    }
    for node in ["n1", "n2"] {
        assert!(
            !rootdir.join(id.to_string()).join(node).exists(),
            "teardown left {node}'s state: {}",
            explain()
        );
    }
}

#[test]
fn a_bad_directive_rejects_the_job_at_submission() {
    require();
    let cluster = PrivateSlurm::start(SlurmOptions {
        burst_buffer_lua: Some(repo().join("slurm/burst_buffer.lua")),
        ..SlurmOptions::default()
    });
    let script = cluster.work_dir().join("bad.sh");
    std::fs::write(&script, "#!/bin/bash\n#BB_LUA SFS chunk_store=lots\ntrue\n").unwrap();
    std::fs::set_permissions(&script, std::fs::Permissions::from_mode(0o644)).unwrap();
    let out = cluster
        .command_as(Some(USER), "sbatch")
        .arg(&script)
        .output()
        .unwrap();
    let stderr = String::from_utf8_lossy(&out.stderr);
    assert!(!out.status.success(), "accepted: {stderr}");
    assert!(
        stderr.contains("chunk_store must be a size"),
        "the refusal names the directive: {stderr}"
    );
}
