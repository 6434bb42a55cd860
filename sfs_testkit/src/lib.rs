//! Test support shared by SFS's integration tests: [`artifacts`] (below),
//! [`cluster`], real `sfs server` processes on 127.0.0.1 (the system
//! tests' one launcher), [`fuzz`], the decoders' fuzzer, [`ceph`], the Ceph cluster the
//! `rados` and `s3` back ends are tested against, [`netns`], simulated
//! nodes (network namespaces with their own sshd), and [`slurm`], a private
//! Slurm cluster on 127.0.0.1.
//!
//! Tests that run SFS as a user does need artefacts that are not their own
//! crate's: the `sfs` binary, the preload entry library
//! (`libsfs_preload.so`) and the shim it loads (`libsfs_shim.so`). Cargo
//! builds a test's own binaries and dependencies before the test runs, but
//! not those, and whether they already sat in the target directory used to
//! depend on what had been built before — a cold build directory once
//! failed where a warm one passed. [`artifacts`] is the one way a test gets
//! them: it runs `cargo build` for them once per test run (a no-op taking
//! well under a second when they are current, so a stale binary is never
//! tested either) and returns where they are. "Once per run": once per
//! process under `cargo test` (one process per test binary), and once per
//! `NEXTEST_RUN_ID` under nextest (one process per test), recorded in a
//! stamp file under a file lock so that parallel tests wait for one build.

pub mod ceph;
pub mod cluster;
pub mod fuzz;
pub mod netns;
pub mod slurm;

/// A loopback TCP port that was free a moment ago: bound to port 0 and let
/// go. Another process may take it before the caller binds it; a test
/// that starts a server on it should try again with a new port when the
/// start fails with "Address already in use" (the system tests' cluster
/// does).
pub fn free_port() -> u16 {
    let probe = std::net::TcpListener::bind("127.0.0.1:0").expect("binding a loopback port");
    probe.local_addr().expect("its address").port()
}

use fs2::FileExt;
use std::path::{Path, PathBuf};
use std::process::Command;
use std::sync::OnceLock;

/// Whether this process runs as root (its effective uid, from /proc):
/// what the tests of simulated nodes and of a private Slurm need.
pub fn is_root() -> bool {
    std::fs::read_to_string("/proc/self/status")
        .ok()
        .and_then(|status| {
            status
                .lines()
                .find_map(|l| l.strip_prefix("Uid:"))
                .and_then(|ids| ids.split_whitespace().nth(1).map(|e| e == "0"))
        })
        .unwrap_or(false)
}

/// Runs `command`; panics with its command line, status and output if it
/// cannot run or fails, followed by `context()` (logs worth seeing then).
pub fn run_checked(
    command: &mut Command,
    context: impl FnOnce() -> String,
) -> std::process::Output {
    let shown = format!("{command:?}");
    let out = command
        .output()
        .unwrap_or_else(|e| panic!("cannot run {shown}: {e}"));
    assert!(
        out.status.success(),
        "{shown}: {}\n{}{}\n{}",
        out.status,
        String::from_utf8_lossy(&out.stdout),
        String::from_utf8_lossy(&out.stderr),
        context()
    );
    out
}

/// The artefacts of this build (the test's own profile and target
/// directory), all present and current.
#[derive(Debug)]
pub struct Artifacts {
    /// The `sfs` command.
    pub sfs: PathBuf,
    /// `libsfs_preload.so`, the library users put in `LD_PRELOAD`.
    pub preload: PathBuf,
    /// `libsfs_shim.so`, which the preload library loads next to itself.
    pub shim: PathBuf,
}

/// The packages whose artefacts [`Artifacts`] names.
const PACKAGES: [&str; 3] = ["sfs_cli", "sfs_shim", "sfs_preload"];

/// Builds the artefacts once per process and returns them; panics with
/// cargo's output when the build fails.
pub fn artifacts() -> &'static Artifacts {
    static BUILT: OnceLock<Artifacts> = OnceLock::new();
    BUILT.get_or_init(|| {
        let profile_dir = profile_dir();
        build_once_per_run(&profile_dir);
        let artifacts = Artifacts {
            sfs: profile_dir.join("sfs"),
            preload: profile_dir.join("libsfs_preload.so"),
            shim: profile_dir.join("libsfs_shim.so"),
        };
        for path in [&artifacts.sfs, &artifacts.preload, &artifacts.shim] {
            assert!(
                path.is_file(),
                "cargo build of {PACKAGES:?} did not leave {}",
                path.display()
            );
        }
        artifacts
    })
}

/// `target/<profile>` of the running test: its executable lives in
/// `target/<profile>/deps/`.
fn profile_dir() -> PathBuf {
    let exe = std::env::current_exe().expect("the test's executable");
    exe.parent()
        .and_then(Path::parent)
        .expect("the test runs from target/<profile>/deps/")
        .to_path_buf()
}

/// Runs [`build`] unless another process of this nextest run did.
fn build_once_per_run(profile_dir: &Path) {
    let Some(run) = std::env::var_os("NEXTEST_RUN_ID") else {
        return build(profile_dir);
    };
    let lock_path = profile_dir.join(".sfs_testkit.lock");
    let lock = std::fs::File::create(&lock_path)
        .unwrap_or_else(|e| panic!("cannot create {}: {e}", lock_path.display()));
    lock.lock_exclusive()
        .unwrap_or_else(|e| panic!("cannot lock {}: {e}", lock_path.display()));
    let stamp = profile_dir.join(".sfs_testkit.built");
    let run = run.to_string_lossy().into_owned();
    if std::fs::read_to_string(&stamp).ok().as_deref() != Some(run.as_str()) {
        build(profile_dir);
        std::fs::write(&stamp, &run)
            .unwrap_or_else(|e| panic!("cannot write {}: {e}", stamp.display()));
    }
    // The lock is released when `lock` is dropped.
}

/// `cargo build` of [`PACKAGES`] into the test's own target directory and
/// profile. Cargo holds no lock on the build directory while tests run
/// (cargo test and nextest both release it after building), so this does
/// not wait on the build that started the test.
fn build(profile_dir: &Path) {
    let target_dir = profile_dir.parent().expect("target/<profile> has a parent");
    let mut command = Command::new(cargo());
    command.arg("build").arg("--target-dir").arg(target_dir);
    for package in PACKAGES {
        command.args(["-p", package]);
    }
    match profile_dir.file_name().and_then(|n| n.to_str()) {
        Some("debug") => {}
        Some("release") => {
            command.arg("--release");
        }
        Some(other) => {
            command.args(["--profile", other]);
        }
        None => panic!("unexpected build directory {}", profile_dir.display()),
    }
    let out = command
        .current_dir(env!("CARGO_MANIFEST_DIR"))
        .output()
        .expect("running cargo build");
    assert!(
        out.status.success(),
        "cargo build of {PACKAGES:?} failed ({}):\n{}",
        out.status,
        String::from_utf8_lossy(&out.stderr)
    );
}

/// The cargo that runs the tests (`CARGO`, set by cargo and nextest), else
/// the one on the PATH.
fn cargo() -> PathBuf {
    std::env::var_os("CARGO")
        .map(PathBuf::from)
        .unwrap_or_else(|| PathBuf::from("cargo"))
}
