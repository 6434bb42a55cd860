//! The private Slurm cluster of `sfs_testkit::slurm` works as the tests
//! that use it assume: three nodes that `srun` and `sbatch` reach and tell
//! apart, jobs of an unprivileged user, the Lua burst buffer calling its
//! functions in order with a variable of `slurm_bb_paths` in the job's
//! environment, and nothing left behind once the cluster is dropped.
//! A test never skips for want of Slurm: scripts/setup.sh installs it, and
//! the user jobs run as is made when missing.

use sfs_testkit::slurm::{self, PrivateSlurm, SlurmOptions};
use std::path::Path;
use std::process::Command;
use std::time::{Duration, Instant};

/// The unprivileged user jobs with burst buffers are submitted as (root
/// cannot use burst buffers).
const USER: &str = "tests";

/// Fails the test, saying why, where a private cluster cannot run; makes
/// the unprivileged user.
fn require() {
    if let Some(reason) = slurm::missing_prerequisites() {
        panic!("a private Slurm cluster cannot run here: {reason} (scripts/setup.sh installs slurm-wlm and munge)");
    }
    slurm::ensure_user(USER);
}

/// Writes a job script (mode 0644, in the cluster's work directory).
fn script(cluster: &PrivateSlurm, name: &str, text: &str) -> std::path::PathBuf {
    let path = cluster.work_dir().join(name);
    std::fs::write(&path, text).expect("writing a job script");
    path
}

/// Asserts that nothing of a dropped cluster is left: no process naming
/// its config, no directory.
fn assert_gone(conf: &Path, dir: &Path) {
    let left = slurm::cluster_processes(conf);
    assert!(
        left.is_empty(),
        "processes of the dropped cluster: {left:?}"
    );
    assert!(!dir.exists(), "{} still exists", dir.display());
}

#[test]
fn srun_and_sbatch_reach_three_nodes() {
    require();
    let started = Instant::now();
    let cluster = PrivateSlurm::start(SlurmOptions::default());
    println!("cluster up in {:?}", started.elapsed());

    // One task per node, each on its own slurmd.
    let out = cluster
        .command("srun")
        .args([
            "-N3",
            "--ntasks-per-node=1",
            "sh",
            "-c",
            "echo $SLURMD_NODENAME",
        ])
        .output()
        .expect("running srun");
    assert!(
        out.status.success(),
        "srun: {}\n{}",
        String::from_utf8_lossy(&out.stderr),
        cluster.logs()
    );
    let mut names: Vec<String> = String::from_utf8_lossy(&out.stdout)
        .lines()
        .map(str::to_string)
        .collect();
    names.sort();
    assert_eq!(names, ["n1", "n2", "n3"]);

    // A batch job as root and one as the unprivileged user, side by side.
    let job = script(
        &cluster,
        "two-nodes.sh",
        "#!/bin/sh\n#SBATCH -N2\necho \"batch as $(id -un) on $SLURMD_NODENAME\"\n\
         srun sh -c 'echo \"step on $SLURMD_NODENAME\"' | sort\n",
    );
    let as_root = cluster.sbatch(&job, None);
    let as_user = cluster.sbatch(&job, Some(USER));
    for (id, user) in [(as_root, "root"), (as_user, USER)] {
        let state = cluster.wait_job(id, Duration::from_secs(60));
        let output = cluster.job_output(id);
        assert_eq!(state, "COMPLETED", "job {id}: {output}\n{}", cluster.logs());
        let info = cluster.job_info(id).expect("the job's record");
        let nodes = expand(&cluster, &info["NodeList"]);
        assert_eq!(nodes.len(), 2, "NodeList {}", info["NodeList"]);
        assert!(
            output.contains(&format!("batch as {user} on {}", nodes[0])),
            "{output}"
        );
        for node in &nodes {
            assert!(output.contains(&format!("step on {node}")), "{output}");
        }
    }

    let (conf, dir) = (cluster.conf().to_path_buf(), cluster.dir().to_path_buf());
    drop(cluster);
    assert_gone(&conf, &dir);
    println!("whole test {:?}", started.elapsed());
}

/// The node names of a hostlist (`n[1-2]`, `n[1,3]`, `n2`), in order.
fn expand(cluster: &PrivateSlurm, hostlist: &str) -> Vec<String> {
    let out = cluster
        .command("scontrol")
        .args(["show", "hostnames", hostlist])
        .output()
        .expect("running scontrol show hostnames");
    String::from_utf8_lossy(&out.stdout)
        .lines()
        .map(str::to_string)
        .collect()
}

/// The burst buffer script of the test: every function a job calls
/// appends its name and arguments to `calls`; `slurm_bb_paths` adds a
/// variable to the job's environment.
fn lua_script(calls: &Path) -> String {
    format!(
        r#"-- sfs_testkit's test burst buffer: records each call.
local CALLS = "{calls}"
local function record(name, ...)
  local f = assert(io.open(CALLS, "a"))
  f:write(name, " ", table.concat({{...}}, " "), "\n")
  f:close()
  return slurm.SUCCESS
end
function slurm_bb_job_process(job_script) return record("job_process", job_script) end
function slurm_bb_pools() return slurm.SUCCESS end
function slurm_bb_setup(job_id, uid, gid, pool, size, job_script)
  return record("setup", job_id, uid, gid)
end
function slurm_bb_data_in(job_id, job_script) return record("data_in", job_id) end
function slurm_bb_real_size(job_id) return slurm.SUCCESS end
function slurm_bb_paths(job_id, job_script, path_file)
  local f = assert(io.open(path_file, "a"))
  f:write("SFS_BB_TEST=paths-of-", job_id, "\n")
  f:close()
  return record("paths", job_id)
end
function slurm_bb_pre_run(job_id, job_script) return record("pre_run", job_id) end
function slurm_bb_post_run(job_id, job_script) return record("post_run", job_id) end
function slurm_bb_data_out(job_id, job_script) return record("data_out", job_id) end
function slurm_bb_job_teardown(job_id, job_script, hurry)
  return record("job_teardown", job_id, hurry)
end
function slurm_bb_get_status(...) return slurm.SUCCESS, "ok" end
"#,
        calls = calls.display()
    )
}

#[test]
fn lua_burst_buffer_runs_for_an_unprivileged_users_job() {
    require();
    let started = Instant::now();
    let scratch = tempfile::tempdir().expect("a temporary directory");
    let calls = scratch.path().join("calls");
    let lua = scratch.path().join("bb.lua");
    std::fs::write(&lua, lua_script(&calls)).expect("writing the Lua script");
    let cluster = PrivateSlurm::start(SlurmOptions {
        burst_buffer_lua: Some(lua),
        ..SlurmOptions::default()
    });
    println!("cluster up in {:?}", started.elapsed());

    let job = script(
        &cluster,
        "bb.sh",
        "#!/bin/sh\n#SBATCH -N1\n#BB_LUA capacity-free request\n\
         echo \"user=$(id -un) SFS_BB_TEST=$SFS_BB_TEST\"\n",
    );
    let id = cluster.sbatch(&job, Some(USER));
    let state = cluster.wait_job(id, Duration::from_secs(60));
    let output = cluster.job_output(id);
    let recorded = std::fs::read_to_string(&calls).unwrap_or_default();
    assert_eq!(
        state,
        "COMPLETED",
        "{output}\n{recorded}\n{}",
        cluster.logs()
    );
    assert!(
        output.contains(&format!("user={USER} SFS_BB_TEST=paths-of-{id}")),
        "{output}"
    );

    // The user's own group need not have its uid's number.
    let id_of = |flag: &str| {
        String::from_utf8(
            Command::new("id")
                .args([flag, USER])
                .output()
                .expect("running id")
                .stdout,
        )
        .expect("id prints UTF-8")
        .trim()
        .to_string()
    };
    let (uid, gid) = (id_of("-u"), id_of("-g"));
    let lines: Vec<&str> = recorded.lines().collect();
    let expected = [
        "job_process".to_string(),
        format!("setup {id} {uid} {gid}"),
        format!("data_in {id}"),
        format!("paths {id}"),
        format!("pre_run {id}"),
        format!("post_run {id}"),
        format!("data_out {id}"),
        format!("job_teardown {id} false"),
    ];
    assert_eq!(lines.len(), expected.len(), "calls:\n{recorded}");
    for (line, want) in lines.iter().zip(&expected) {
        assert!(
            line.starts_with(want.as_str()),
            "{line:?} is not {want:?}:\n{recorded}"
        );
    }

    let (conf, dir) = (cluster.conf().to_path_buf(), cluster.dir().to_path_buf());
    drop(cluster);
    assert_gone(&conf, &dir);
    println!("whole test {:?}", started.elapsed());
}
