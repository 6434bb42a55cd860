//! The Ceph cluster that the `rados` and `s3` back-end tests run against:
//! one real cluster (ceph-mon, a memstore ceph-osd, radosgw) started by
//! `scripts/ceph.sh`, shared by every test of a run. Tests keep apart by
//! name: each takes its own RADOS namespace or S3 key prefix
//! ([`unique_name`]), so no test sees another's objects.
//!
//! Where the cluster comes from, in order:
//! 1. `SFS_CEPH_*` variables in the environment: scripts/test.sh starts
//!    one cluster before the tests, exports DIR/env, and stops it at exit.
//! 2. Otherwise the first test that asks starts one with `scripts/ceph.sh
//!    start DIR --stop-with PID`, which stops it (and removes DIR) once
//!    PID is gone: under nextest (one process per test) one cluster per
//!    run (`NEXTEST_RUN_ID`), found by later tests under a file lock and
//!    stopped when nextest exits; under `cargo test` one per test process.
//!
//! A test never skips for want of Ceph: if the cluster cannot start, it
//! fails with the script's output (missing packages: scripts/setup.sh).

use fs2::FileExt;
use std::collections::HashMap;
use std::path::{Path, PathBuf};
use std::process::Command;
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::OnceLock;

/// A running cluster: what DIR/env of scripts/ceph.sh says.
#[derive(Debug, Clone)]
pub struct Ceph {
    /// The cluster's directory (logs under `log/`).
    pub dir: PathBuf,
    /// Its ceph.conf, for librados.
    pub conf: PathBuf,
    /// A pool the tests may write to.
    pub pool: String,
    /// radosgw's S3 URL (`http://127.0.0.1:PORT`).
    pub s3_endpoint: String,
    /// A bucket the tests may write to.
    pub s3_bucket: String,
    /// Keys radosgw accepts.
    pub s3_access_key: String,
    /// The secret of `s3_access_key`.
    pub s3_secret_key: String,
}

/// The run's cluster, started on first use if the environment names none;
/// panics (with the script's output) if it cannot be had.
pub fn ceph() -> &'static Ceph {
    static CLUSTER: OnceLock<Ceph> = OnceLock::new();
    CLUSTER.get_or_init(|| {
        let from_env: HashMap<String, String> = std::env::vars()
            .filter(|(k, _)| k.starts_with("SFS_CEPH_"))
            .collect();
        if from_env.contains_key("SFS_CEPH_CONF") {
            return Ceph::from_vars(&from_env, "the environment");
        }
        start_own()
    })
}

/// A name no other test of this run uses (a RADOS namespace, an S3
/// prefix): `what`, this process and a counter.
pub fn unique_name(what: &str) -> String {
    static NEXT: AtomicU64 = AtomicU64::new(0);
    let nanos = std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .map_or(0, |d| d.subsec_nanos());
    format!(
        "{what}-{}-{}-{nanos}",
        std::process::id(),
        NEXT.fetch_add(1, Ordering::Relaxed)
    )
}

impl Ceph {
    /// The cluster that the `SFS_CEPH_*` variables in `vars` describe;
    /// panics naming a missing one and `source`.
    fn from_vars(vars: &HashMap<String, String>, source: &str) -> Ceph {
        let var = |name: &str| {
            vars.get(name).cloned().unwrap_or_else(|| {
                panic!("{source} sets SFS_CEPH_CONF but not {name} (see scripts/ceph.sh)")
            })
        };
        Ceph {
            dir: PathBuf::from(var("SFS_CEPH_DIR")),
            conf: PathBuf::from(var("SFS_CEPH_CONF")),
            pool: var("SFS_CEPH_POOL"),
            s3_endpoint: var("SFS_CEPH_S3_ENDPOINT"),
            s3_bucket: var("SFS_CEPH_S3_BUCKET"),
            s3_access_key: var("SFS_CEPH_S3_ACCESS_KEY"),
            s3_secret_key: var("SFS_CEPH_S3_SECRET_KEY"),
        }
    }

    /// The cluster of `dir/env`, which scripts/ceph.sh writes once it is up.
    fn from_env_file(env: &Path) -> Ceph {
        let text = std::fs::read_to_string(env)
            .unwrap_or_else(|e| panic!("cannot read {}: {e}", env.display()));
        let vars = text
            .lines()
            .filter_map(|l| l.split_once('='))
            .map(|(k, v)| (k.to_string(), v.to_string()))
            .collect();
        Ceph::from_vars(&vars, &env.display().to_string())
    }
}

/// Runs `scripts/ceph.sh COMMAND DIR [--stop-with PID]`; its output.
fn ceph_script(command: &str, dir: &Path, stop_with: Option<u32>) -> std::process::Output {
    let script = Path::new(env!("CARGO_MANIFEST_DIR")).join("../scripts/ceph.sh");
    let mut run = Command::new("bash");
    run.arg(script).arg(command).arg(dir);
    if let Some(pid) = stop_with {
        run.arg("--stop-with").arg(pid.to_string());
    }
    run.output().expect("running bash scripts/ceph.sh")
}

/// Starts a cluster for this run (nextest) or process (cargo test), or
/// joins the one another test process of the run started.
fn start_own() -> Ceph {
    // Under nextest the runner is this process's parent and outlives every
    // test of the run; under cargo test this process is the whole run.
    let (key, owner) = match std::env::var("NEXTEST_RUN_ID") {
        Ok(run) => (format!("run-{run}"), std::os::unix::process::parent_id()),
        Err(_) => (format!("pid-{}", std::process::id()), std::process::id()),
    };
    let dir = std::env::temp_dir().join(format!("sfs-ceph-{key}"));
    // Next to DIR, not in it: scripts/ceph.sh's watcher removes both.
    let lock_path = std::env::temp_dir().join(format!("sfs-ceph-{key}.lock"));
    let lock = std::fs::File::create(&lock_path)
        .unwrap_or_else(|e| panic!("cannot create {}: {e}", lock_path.display()));
    lock.lock_exclusive()
        .unwrap_or_else(|e| panic!("cannot lock {}: {e}", lock_path.display()));
    let env = dir.join("env");
    if !env.exists() {
        let out = ceph_script("start", &dir, Some(owner));
        assert!(
            out.status.success(),
            "scripts/ceph.sh start {} failed ({}); the back-end tests need a Ceph \
             cluster (packages: scripts/setup.sh):\n{}{}",
            dir.display(),
            out.status,
            String::from_utf8_lossy(&out.stdout),
            String::from_utf8_lossy(&out.stderr)
        );
    }
    Ceph::from_env_file(&env)
}

/// A cluster of one test's own (not the run's shared one), for what must
/// not disturb other tests: freezing its OSD, stopping it. Stopped and
/// removed on drop (and by scripts/ceph.sh's watcher if this process dies).
pub struct PrivateCeph {
    pub ceph: Ceph,
    dir: PathBuf,
}

impl PrivateCeph {
    /// Starts one (about 2 s); panics with the script's output if it cannot.
    pub fn start() -> PrivateCeph {
        let dir = std::env::temp_dir().join(unique_name("sfs-ceph-private"));
        let out = ceph_script("start", &dir, Some(std::process::id()));
        if !out.status.success() {
            let _ = ceph_script("stop", &dir, None);
            panic!(
                "scripts/ceph.sh start {} failed ({}):\n{}{}",
                dir.display(),
                out.status,
                String::from_utf8_lossy(&out.stdout),
                String::from_utf8_lossy(&out.stderr)
            );
        }
        PrivateCeph {
            ceph: Ceph::from_env_file(&dir.join("env")),
            dir,
        }
    }

    /// The pids of the cluster's daemons named like `name` (`osd`, `mon`,
    /// `rgw`), from DIR/pids.
    pub fn pids(&self, name: &str) -> Vec<i32> {
        std::fs::read_to_string(self.dir.join("pids"))
            .unwrap_or_default()
            .lines()
            .filter_map(|l| l.split_once(' '))
            .filter(|(_, n)| n.contains(name))
            .filter_map(|(pid, _)| pid.parse().ok())
            .collect()
    }
}

impl Drop for PrivateCeph {
    fn drop(&mut self) {
        let _ = ceph_script("stop", &self.dir, None);
        let _ = std::fs::remove_dir_all(&self.dir);
    }
}
