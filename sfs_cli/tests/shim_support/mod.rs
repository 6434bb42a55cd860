//! Running programs under the real shim (`sfs exec`) and comparing them
//! with the same programs on a local directory; shared by the shim tests.

#![allow(dead_code)]

use crate::common::{Cluster, SFS};
use std::path::PathBuf;
use std::process::{Command, Output, Stdio};

/// The preload entry library of this build, next to the shim it loads
/// (built on demand, see `sfs_testkit`).
pub fn shim() -> PathBuf {
    sfs_testkit::artifacts().preload.clone()
}

/// Runs `bash -c script` with `args` under `sfs exec`.
pub fn under_shim(cluster: &Cluster, script: &str, args: &[&str]) -> Output {
    Command::new(SFS)
        .arg("--config")
        .arg(&cluster.config_path)
        .arg("--hostfile")
        .arg(&cluster.hostfile_path)
        .arg("exec")
        .arg("--preload")
        .arg(shim())
        .args(["--", "bash", "-c", script, "script"])
        .args(args)
        .env("SFS_LOG", "warn")
        .stdin(Stdio::null())
        .output()
        .expect("running sfs exec")
}

/// Runs `bash -c script` with `args` without the shim.
pub fn local(script: &str, args: &[&str]) -> Output {
    Command::new("bash")
        .args(["-c", script, "script"])
        .args(args)
        .stdin(Stdio::null())
        .output()
        .expect("running bash")
}

/// Fails the test unless `program` is on the PATH (scripts/setup.sh
/// installs what the tests run).
pub fn require(program: &str) {
    let found = Command::new("sh")
        .args(["-c", &format!("command -v {program}")])
        .output()
        .is_ok_and(|o| o.status.success());
    assert!(found, "{program} is needed (scripts/setup.sh installs it)");
}

/// Compiles one C source with gcc into `dir`; the binary's path.
pub fn compile_c(dir: &std::path::Path, name: &str, source: &str) -> PathBuf {
    require("gcc");
    let source_path = dir.join(format!("{name}.c"));
    std::fs::write(&source_path, source).unwrap();
    let binary = dir.join(name);
    let built = Command::new("gcc")
        .arg("-O1")
        .arg("-Wall")
        .arg("-o")
        .arg(&binary)
        .arg(&source_path)
        .output()
        .expect("running gcc");
    assert_ok("gcc", &built);
    binary
}

pub fn text(o: &[u8]) -> String {
    String::from_utf8_lossy(o).into_owned()
}

pub fn assert_ok(what: &str, out: &Output) {
    assert!(
        out.status.success(),
        "{what} failed ({}):\n--- stdout\n{}\n--- stderr\n{}",
        out.status,
        text(&out.stdout),
        text(&out.stderr)
    );
}

/// Runs one script on the mount and on a local directory; both must succeed
/// with identical output.
pub fn same_on_sfs_and_local(cluster: &Cluster, script: &str, extra: &[&str]) -> String {
    let local_dir = tempfile::tempdir().unwrap();
    let local_root = local_dir.path().join("root");
    std::fs::create_dir(&local_root).unwrap();
    let sfs_root = format!("{}/work", cluster.config.mountdir);
    let mut sfs_args = vec![sfs_root.as_str()];
    sfs_args.extend_from_slice(extra);
    let local_root = local_root.display().to_string();
    let mut local_args = vec![local_root.as_str()];
    local_args.extend_from_slice(extra);
    let prepare = under_shim(cluster, "mkdir \"$1\"", &[&sfs_root]);
    assert_ok("mkdir on SFS", &prepare);
    let on_sfs = under_shim(cluster, script, &sfs_args);
    let on_local = local(script, &local_args);
    assert_ok("script on local dir", &on_local);
    assert_ok("script on SFS", &on_sfs);
    let (a, b) = (text(&on_local.stdout), text(&on_sfs.stdout));
    if a != b {
        let diff = a
            .lines()
            .zip(b.lines())
            .enumerate()
            .find(|(_, (x, y))| x != y)
            .map(|(i, (x, y))| {
                format!(
                    "first difference at line {}:\n local: {x}\n   sfs: {y}",
                    i + 1
                )
            })
            .unwrap_or_else(|| format!("lengths differ: {} vs {} bytes", a.len(), b.len()));
        panic!(
            "outputs differ: {diff}\n--- sfs stderr\n{}",
            text(&on_sfs.stderr)
        );
    }
    a
}
