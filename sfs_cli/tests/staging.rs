//! `sfs stage-in` / `sfs stage-out` against real servers: trees of many
//! small files and a few large ones (one sparse) into SFS and out again,
//! through a directory and through a real S3 service (radosgw), compared
//! byte for byte with modes, mtimes, symlinks and empty directories; a
//! stage killed at random points resumes without copying finished files
//! again (into SFS from a directory, and out of SFS to S3); a corrupted
//! copy is found by verification.

mod common;

use common::tree::{allocated, assert_same, set_mtime, snapshot, Node};
use common::Cluster;
use std::collections::BTreeSet;
use std::os::unix::fs::PermissionsExt;
use std::path::{Path, PathBuf};
use std::process::{Command, Stdio};
use std::time::Instant;

const MIB: usize = 1 << 20;

/// A tree of `small` small files in directories of 500, empty
/// directories, symlinks (relative, absolute and dangling, to a
/// directory), and, if `large`, files of several ranges: one dense with
/// an odd size, one of exactly whole ranges, one sparse (data in three
/// places, holes between and at the end). Modes and mtimes vary.
fn make_tree(root: &Path, small: usize, large: bool) {
    std::fs::create_dir_all(root).unwrap();
    let modes = [0o644, 0o600, 0o755, 0o444, 0o640];
    for i in 0..small {
        let dir = root.join(format!("d{}", i / 500));
        std::fs::create_dir_all(&dir).unwrap();
        let path = dir.join(format!("f{i}.dat"));
        let data = common::pattern(i as u64, (i * 37) % 9000);
        std::fs::write(&path, &data).unwrap();
        std::fs::set_permissions(&path, std::fs::Permissions::from_mode(modes[i % 5])).unwrap();
        set_mtime(
            &path,
            1_600_000_000 + i as i64,
            (i as i64 * 7919) % 1_000_000_000,
        );
    }
    std::fs::create_dir_all(root.join("empty")).unwrap();
    std::fs::create_dir_all(root.join("nested/empty_too")).unwrap();
    std::fs::set_permissions(
        root.join("nested/empty_too"),
        std::fs::Permissions::from_mode(0o700),
    )
    .unwrap();
    std::fs::write(root.join("nested/zero-length"), b"").unwrap();
    std::os::unix::fs::symlink("../nested/zero-length", root.join("nested/rel-link")).unwrap();
    std::os::unix::fs::symlink("/nonexistent/target", root.join("dangling")).unwrap();
    std::os::unix::fs::symlink("nested", root.join("dir-link")).unwrap();
    // Names are bytes: a Latin-1 name and a link whose target is one.
    use std::os::unix::ffi::OsStrExt;
    let latin1 = std::ffi::OsStr::from_bytes(b"caf\xe9.txt");
    std::fs::write(root.join("nested").join(latin1), b"not UTF-8").unwrap();
    std::os::unix::fs::symlink(latin1, root.join("nested/to-caf\u{e9}")).unwrap();
    set_mtime(&root.join("dangling"), 1_500_000_000, 123);
    if large {
        let big = root.join("big");
        std::fs::create_dir_all(&big).unwrap();
        std::fs::write(big.join("dense.bin"), common::pattern(1, 24 * MIB + 12345)).unwrap();
        std::fs::write(big.join("exact.bin"), common::pattern(2, 16 * MIB)).unwrap();
        let sparse = std::fs::File::create(big.join("sparse.bin")).unwrap();
        use std::os::unix::fs::FileExt;
        sparse.write_all_at(&common::pattern(3, MIB), 0).unwrap();
        sparse
            .write_all_at(&common::pattern(4, 300 << 10), 20 * MIB as u64)
            .unwrap();
        sparse
            .write_all_at(&common::pattern(5, 4096), 40 * MIB as u64)
            .unwrap();
        sparse.set_len(64 * MIB as u64).unwrap();
        set_mtime(&big.join("sparse.bin"), 1_650_000_000, 5);
        std::fs::set_permissions(
            big.join("exact.bin"),
            std::fs::Permissions::from_mode(0o600),
        )
        .unwrap();
    }
    // Directory mtimes last: creating entries changes them.
    for dir in ["empty", "nested/empty_too", "nested", "big", ""] {
        let path = root.join(dir);
        if path.exists() {
            set_mtime(&path, 1_700_000_000, 42);
        }
    }
}

/// Runs `sfs ARGS` against `cluster` with the environment `envs` added.
fn run(cluster: &Cluster, args: &[&str], envs: &[(&str, &str)]) -> std::process::Output {
    let mut command = cluster.sfs_command();
    command.args(args).envs(envs.iter().copied());
    command.output().unwrap()
}

/// Runs `sfs ARGS` against `cluster` with `envs`; asserts success and
/// returns stdout.
fn stage_ok(cluster: &Cluster, args: &[&str], envs: &[(&str, &str)]) -> String {
    let started = Instant::now();
    let out = run(cluster, args, envs);
    assert!(
        out.status.success(),
        "sfs {args:?} failed: {}\n{}",
        String::from_utf8_lossy(&out.stderr),
        String::from_utf8_lossy(&out.stdout)
    );
    let stdout = String::from_utf8(out.stdout).unwrap();
    eprintln!(
        "sfs {:?}: {:.1?}: {}",
        &args[..2],
        started.elapsed(),
        stdout.lines().last().unwrap_or("")
    );
    stdout
}

/// Two servers and, in their test directory, `work/tree` as [`make_tree`]
/// makes it; returns the cluster, `work` and the tree.
fn cluster_with_tree(small: usize, large: bool) -> (Cluster, PathBuf, PathBuf) {
    let cluster = Cluster::start(2);
    let work = cluster.path().join("work");
    let src = work.join("tree");
    make_tree(&src, small, large);
    (cluster, work, src)
}

/// Runs `sfs ARGS`, asserts that it fails, and returns its stderr.
fn stage_fails(cluster: &Cluster, args: &[&str], envs: &[(&str, &str)]) -> String {
    let out = run(cluster, args, envs);
    let stderr = String::from_utf8_lossy(&out.stderr).into_owned();
    assert!(!out.status.success(), "sfs {args:?} succeeded: {stderr}");
    stderr
}

/// The destinations a stage's `journal` records as finished.
fn finished_in(journal: &Path) -> Vec<String> {
    std::fs::read_to_string(journal)
        .unwrap_or_default()
        .lines()
        .filter_map(|l| serde_json::from_str::<serde_json::Value>(l).ok())
        .map(|v| v["dst"].as_str().unwrap().to_string())
        .collect()
}

/// The destinations a `-v` stage's output says it copied.
fn copied_in(out: &str) -> BTreeSet<&str> {
    out.lines()
        .filter_map(|l| l.strip_prefix("copied "))
        .collect()
}

/// Starts `sfs ARGS` with `envs`, kills it (SIGKILL) at a random point
/// of `full` (5–95 % of it), and returns when, and what its `journal`
/// then records as finished.
fn killed_stage(
    cluster: &Cluster,
    args: &[&str],
    envs: &[(&str, &str)],
    journal: &Path,
    full: std::time::Duration,
) -> (std::time::Duration, Vec<String>) {
    use rand::Rng;
    let mut child = cluster
        .sfs_command()
        .args(args)
        .envs(envs.iter().copied())
        .stdout(Stdio::null())
        .stderr(Stdio::null())
        .spawn()
        .unwrap();
    let delay = full.mul_f64(rand::thread_rng().gen_range(0.05..0.95));
    std::thread::sleep(delay);
    child.kill().unwrap();
    child.wait().unwrap();
    (delay, finished_in(journal))
}

/// The Ceph cluster's S3 service and two servers with a tree of `small`
/// files and the large ones, for a stage through S3; `None` (the test is
/// skipped, saying so) without radosgw. S3 keys are UTF-8: the tree's
/// names that are not have no key and are left out (the directory tests
/// carry them).
fn s3_stage(small: usize) -> Option<(&'static sfs_testkit::ceph::Ceph, Cluster, PathBuf, PathBuf)> {
    if Command::new("radosgw").arg("--version").output().is_err() {
        eprintln!("SKIPPED: radosgw is not installed (scripts/setup.sh installs Ceph)");
        return None;
    }
    let ceph = sfs_testkit::ceph::ceph();
    let (cluster, work, src) = cluster_with_tree(small, true);
    use std::os::unix::ffi::OsStrExt;
    std::fs::remove_file(src.join(std::ffi::OsStr::from_bytes(b"nested/caf\xe9.txt"))).unwrap();
    std::fs::remove_file(src.join("nested/to-caf\u{e9}")).unwrap();
    Some((ceph, cluster, work, src))
}

/// The environment of a stage that reaches `ceph`'s S3 service, its
/// state (journals) under `state`.
fn s3_env<'a>(ceph: &'a sfs_testkit::ceph::Ceph, state: &'a Path) -> [(&'static str, &'a str); 5] {
    [
        ("SFS_STAGE_STATE_DIR", state.to_str().unwrap()),
        ("AWS_ENDPOINT_URL", ceph.s3_endpoint.as_str()),
        ("AWS_ACCESS_KEY_ID", ceph.s3_access_key.as_str()),
        ("AWS_SECRET_ACCESS_KEY", ceph.s3_secret_key.as_str()),
        ("AWS_REGION", "us-east-1"),
    ]
}

fn small_files() -> usize {
    std::env::var("SFS_STAGE_TEST_FILES")
        .ok()
        .and_then(|n| n.parse().ok())
        .unwrap_or(10_000)
}

#[test]
fn a_tree_goes_in_and_out_of_a_directory_unchanged() {
    let (cluster, work, src) = cluster_with_tree(small_files(), true);
    let expected = snapshot(&src);
    let journal_dir = work.join("state");
    let state = journal_dir.to_str().unwrap();
    let envs = [("SFS_STAGE_STATE_DIR", state)];

    let out = stage_ok(&cluster, &["stage-in", src.to_str().unwrap(), "/in"], &envs);
    assert!(out.contains("0 failed"), "{out}");
    // In SFS: modes, mtimes, sizes and link targets as in the source.
    let client = cluster.client();
    for (rel, node) in &expected {
        let path = if rel.is_empty() {
            "/in".to_string()
        } else {
            format!("/in/{rel}")
        };
        let md = client.lstat(&path).unwrap();
        match node {
            Node::File {
                mode,
                mtime_ns,
                size,
                ..
            } => {
                assert_eq!(
                    (md.mode & 0o7777, md.mtime_ns, md.size),
                    (*mode, *mtime_ns, *size),
                    "{path}"
                )
            }
            Node::Dir { mode, mtime_ns } => {
                assert_eq!(
                    (md.mode & 0o7777, md.mtime_ns),
                    (*mode, *mtime_ns),
                    "{path}"
                )
            }
            Node::Link { target, mtime_ns } => {
                assert_eq!(
                    (&md.link_target, md.mtime_ns),
                    (target, *mtime_ns),
                    "{path}"
                )
            }
        }
    }

    let dst = work.join("out/copy");
    std::fs::create_dir_all(work.join("out")).unwrap();
    let out = stage_ok(
        &cluster,
        &["stage-out", "/in", dst.to_str().unwrap()],
        &envs,
    );
    assert!(out.contains("0 failed"), "{out}");
    assert_same(&expected, &snapshot(&dst));
    let sparse = dst.join("big/sparse.bin");
    assert!(
        allocated(&sparse) < 4 * MIB as u64,
        "the sparse file arrived with {} bytes allocated of 64 MiB",
        allocated(&sparse)
    );

    // Run again: everything is in the journal, nothing is copied.
    let again = stage_ok(
        &cluster,
        &["stage-out", "-v", "/in", dst.to_str().unwrap()],
        &envs,
    );
    assert!(!again.lines().any(|l| l.starts_with("copied ")), "{again}");
    assert!(again.contains(" 0 files (0.0 MiB) copied"), "{again}");
}

/// A corrupted copy is found: in SFS after a stage-in, and in a local
/// directory after a stage-out, by `--check`, which reads both sides.
#[test]
fn verification_finds_a_corrupted_copy() {
    let (cluster, work, src) = cluster_with_tree(50, true);
    let state = work.join("state");
    let envs = [("SFS_STAGE_STATE_DIR", state.to_str().unwrap())];
    stage_ok(&cluster, &["stage-in", src.to_str().unwrap(), "/in"], &envs);
    let check = ["stage-in", "--check", src.to_str().unwrap(), "/in"];
    stage_ok(&cluster, &check, &envs);

    // One byte inside the dense file's second range, and a small file
    // cut short: both found, nothing else.
    let client = cluster.client();
    let at = 9 * MIB + 7;
    let original = std::fs::read(src.join("big/dense.bin")).unwrap()[at];
    common::write_at(&client, "/in/big/dense.bin", at as u64, &[!original]);
    client.truncate("/in/d0/f3.dat", 10).unwrap();
    let out = cluster
        .sfs_command()
        .args(check)
        .envs(envs)
        .output()
        .unwrap();
    let stderr = String::from_utf8_lossy(&out.stderr);
    assert!(!out.status.success(), "{stderr}");
    let failed: BTreeSet<&str> = stderr
        .lines()
        .filter_map(|l| l.strip_prefix("stage-in: FAILED "))
        .map(|l| l.split(": ").next().unwrap())
        .collect();
    assert_eq!(
        failed,
        BTreeSet::from(["sfs:/in/big/dense.bin", "sfs:/in/d0/f3.dat"]),
        "{stderr}"
    );
    assert!(stderr.contains("verification failed"), "{stderr}");

    // Out to a directory, corrupt the copy of the sparse file in a hole.
    let dst = work.join("copy");
    stage_ok(
        &cluster,
        &["stage-in", "--restart", src.to_str().unwrap(), "/in"],
        &envs,
    );
    stage_ok(
        &cluster,
        &["stage-out", "/in", dst.to_str().unwrap()],
        &envs,
    );
    use std::os::unix::fs::FileExt;
    let copy = std::fs::OpenOptions::new()
        .write(true)
        .open(dst.join("big/sparse.bin"))
        .unwrap();
    copy.write_all_at(b"\x01", 30 * MIB as u64).unwrap();
    let stderr = stage_fails(
        &cluster,
        &["stage-out", "--check", "/in", dst.to_str().unwrap()],
        &envs,
    );
    assert!(
        stderr.contains(&format!(
            "FAILED {}: verification failed",
            dst.join("big/sparse.bin").display()
        )),
        "{stderr}"
    );
}

/// `sfs stage-in` killed (SIGKILL) at random points, then run again:
/// every file arrives intact, and no file the journal had finished before
/// the kill is copied again (its SFS entry keeps its id and ctime).
#[test]
fn a_killed_stage_resumes_without_copying_finished_files_again() {
    let (cluster, work, src) = cluster_with_tree(400, true);
    let client = cluster.client();

    // How long an uninterrupted stage takes: the kills fall inside it.
    let started = Instant::now();
    stage_ok(
        &cluster,
        &[
            "stage-in",
            "--journal",
            work.join("j-full").to_str().unwrap(),
            src.to_str().unwrap(),
            "/full",
        ],
        &[],
    );
    let full = started.elapsed();
    let mut interrupted_with_progress = 0;
    for trial in 0..10 {
        let dst = format!("/k{trial}");
        let journal = work.join(format!("j{trial}"));
        let args = [
            "stage-in",
            "-v",
            "--journal",
            journal.to_str().unwrap(),
            src.to_str().unwrap(),
            &dst,
        ];
        // What the journal says is finished, and how SFS holds it now.
        let (delay, finished) = killed_stage(&cluster, &args, &[], &journal, full);
        if !finished.is_empty() {
            interrupted_with_progress += 1;
        }
        let before: Vec<(String, sfs_client::Metadata)> = finished
            .iter()
            .map(|d| {
                let path = d.strip_prefix("sfs:").unwrap().to_string();
                let md = client.lstat(&path).unwrap();
                (path, md)
            })
            .collect();

        let out = stage_ok(&cluster, &args, &[]);
        let copied = copied_in(&out);
        for done in &finished {
            assert!(
                !copied.contains(done.as_str()),
                "trial {trial} (killed after {delay:?}): {done} was copied again"
            );
        }
        for (path, md) in &before {
            let now = client.lstat(path).unwrap();
            assert_eq!(
                (now.id, now.ctime_ns),
                (md.id, md.ctime_ns),
                "trial {trial}: {path} was written again"
            );
        }
        let files = snapshot(&src)
            .values()
            .filter(|n| matches!(n, Node::File { .. }))
            .count();
        assert_eq!(copied.len() + finished.len(), files, "trial {trial}");
        // Everything intact: both sides read and compared.
        stage_ok(
            &cluster,
            &["stage-in", "--check", src.to_str().unwrap(), &dst],
            &[],
        );
        eprintln!(
            "trial {trial}: killed after {delay:?} with {} files finished; resumed and verified",
            finished.len()
        );
    }
    // Most kills must have come after some files were done, or the test
    // tested little (the delays span 5–95 % of a full run).
    assert!(
        interrupted_with_progress >= 5,
        "{interrupted_with_progress}"
    );
    // The stage out of one of them matches the source exactly.
    let out = work.join("k9-out");
    stage_ok(
        &cluster,
        &[
            "stage-out",
            "--journal",
            work.join("j-out").to_str().unwrap(),
            "/k9",
            out.to_str().unwrap(),
        ],
        &[],
    );
    assert_same(&snapshot(&src), &snapshot(&out));
}

/// Filters, dry run, a manifest, and a failing path: the others are
/// staged, the command fails listing the one that failed.
#[test]
fn filters_dry_run_manifest_and_failures() {
    let (cluster, work, src) = cluster_with_tree(20, false);
    std::fs::write(src.join("d0/scratch.tmp"), b"tmp").unwrap();
    let state = work.join("state");
    let envs = [("SFS_STAGE_STATE_DIR", state.to_str().unwrap())];
    let client = cluster.client();

    let out = stage_ok(
        &cluster,
        &["stage-in", "--dry-run", src.to_str().unwrap(), "/dry"],
        &envs,
    );
    assert!(out.contains("would copy 23 files"), "{out}");
    assert!(out.contains(&format!(
        "copy {}/d0/f1.dat -> sfs:/dry/d0/f1.dat",
        src.display()
    )));
    assert!(client.lstat("/dry").is_err(), "a dry run changes nothing");

    stage_ok(
        &cluster,
        &[
            "stage-in",
            "--exclude",
            "*.tmp",
            "--exclude",
            "nested",
            src.to_str().unwrap(),
            "/ex",
        ],
        &envs,
    );
    assert!(client.lstat("/ex/d0/f1.dat").is_ok());
    assert!(client.lstat("/ex/d0/scratch.tmp").is_err());
    assert!(client.lstat("/ex/nested").is_err());
    assert!(client.lstat("/ex/empty").is_ok());

    stage_ok(
        &cluster,
        &[
            "stage-in",
            "--include",
            "f1*.dat",
            src.to_str().unwrap(),
            "/inc",
        ],
        &envs,
    );
    let mut names: Vec<String> = client
        .read_dir("/inc/d0")
        .unwrap()
        .map(|e| e.unwrap().name)
        .collect();
    names.sort();
    assert_eq!(
        names,
        [
            "f1.dat", "f10.dat", "f11.dat", "f12.dat", "f13.dat", "f14.dat", "f15.dat", "f16.dat",
            "f17.dat", "f18.dat", "f19.dat"
        ]
    );
    assert!(
        client.lstat("/inc/empty").is_err(),
        "no empty directories for nothing"
    );

    // A manifest of two pairs; a directory in the way of one file.
    let manifest = work.join("manifest");
    std::fs::write(
        &manifest,
        format!(
            "# two pairs\n{}\t/m/one\n{} /m/two/\n",
            src.join("d0").display(),
            src.join("nested").display()
        ),
    )
    .unwrap();
    client.mkdir("/m", 0o755).unwrap();
    client.mkdir("/m/one", 0o755).unwrap();
    client.mkdir("/m/one/f2.dat", 0o755).unwrap();
    let stderr = stage_fails(
        &cluster,
        &["stage-in", "--manifest", manifest.to_str().unwrap()],
        &envs,
    );
    assert!(
        stderr.contains("stage-in: FAILED sfs:/m/one/f2.dat: ") && stderr.contains("1 path failed"),
        "{stderr}"
    );
    assert!(client.lstat("/m/one/f3.dat").is_ok());
    assert!(client.lstat("/m/two/nested/zero-length").is_ok());
    assert_eq!(
        client.readlink("/m/two/nested/rel-link").unwrap(),
        "../nested/zero-length"
    );
}

/// The same tree through S3 (radosgw): SFS → s3://bucket/prefix → SFS →
/// directory, compared with the original.
#[test]
fn a_tree_goes_out_to_s3_and_back_unchanged() {
    let Some((ceph, cluster, work, src)) = s3_stage(small_files().min(2000)) else {
        return;
    };
    set_mtime(&src.join("nested"), 1_700_000_000, 42);
    let expected = snapshot(&src);
    let state = work.join("state");
    let prefix = sfs_testkit::ceph::unique_name("stage");
    let url = format!("s3://{}/{prefix}/tree", ceph.s3_bucket);
    let envs = s3_env(ceph, &state);
    stage_ok(&cluster, &["stage-in", src.to_str().unwrap(), "/in"], &envs);
    let out = stage_ok(&cluster, &["stage-out", "/in", &url], &envs);
    assert!(out.contains("0 failed"), "{out}");
    // Every object now has its file's size, mode and mtime: `--changed`
    // writes none again.
    let out = stage_ok(&cluster, &["stage-out", "--changed", "/in", &url], &envs);
    assert!(
        out.starts_with("stage-out: 0 files (0.0 MiB) copied") && out.contains("0 failed"),
        "{out}"
    );
    let out = stage_ok(&cluster, &["stage-in", &url, "/back"], &envs);
    assert!(out.contains("0 failed"), "{out}");
    let dst = work.join("copy");
    stage_ok(
        &cluster,
        &["stage-out", "/back", dst.to_str().unwrap()],
        &envs,
    );
    assert_same(&expected, &snapshot(&dst));
    assert!(allocated(&dst.join("big/sparse.bin")) < 4 * MIB as u64);
    // A single file to a key and back.
    let key = format!("s3://{}/{prefix}/one.bin", ceph.s3_bucket);
    stage_ok(&cluster, &["stage-out", "/in/big/dense.bin", &key], &envs);
    stage_ok(&cluster, &["stage-in", &key, "/one.bin"], &envs);
    let client = cluster.client();
    let (a, b) = (
        client.lstat("/one.bin").unwrap(),
        client.lstat("/in/big/dense.bin").unwrap(),
    );
    assert_eq!((a.size, a.mode, a.mtime_ns), (b.size, b.mode, b.mtime_ns));
    stage_ok(&cluster, &["stage-in", "--check", &key, "/one.bin"], &envs);
}

/// `sfs stage-out` to S3 (radosgw) killed (SIGKILL) at random points,
/// then run again: no file the journal had finished is uploaded again,
/// every file arrives (checked against SFS with `--check`), and the last
/// prefix brought back equals the source tree.
#[test]
fn a_killed_stage_out_to_s3_resumes_and_arrives_intact() {
    let Some((ceph, cluster, work, src)) = s3_stage(300) else {
        return;
    };
    let state = work.join("state");
    let envs = s3_env(ceph, &state);
    stage_ok(&cluster, &["stage-in", src.to_str().unwrap(), "/in"], &envs);
    let files = snapshot(&src)
        .values()
        .filter(|n| matches!(n, Node::File { .. }))
        .count();
    let prefix = sfs_testkit::ceph::unique_name("kill");
    let url = |name: &str| format!("s3://{}/{prefix}/{name}", ceph.s3_bucket);
    // How long an uninterrupted stage-out takes: the kills fall inside it.
    let started = Instant::now();
    stage_ok(&cluster, &["stage-out", "/in", &url("full")], &envs);
    let full = started.elapsed();
    let mut interrupted_with_progress = 0;
    let mut last = String::new();
    for trial in 0..10 {
        let dst = url(&format!("k{trial}"));
        let journal = work.join(format!("s3-j{trial}"));
        let args = [
            "stage-out",
            "-v",
            "--journal",
            journal.to_str().unwrap(),
            "/in",
            &dst,
        ];
        let (delay, finished) = killed_stage(&cluster, &args, &envs, &journal, full);
        if !finished.is_empty() {
            interrupted_with_progress += 1;
        }
        let out = stage_ok(&cluster, &args, &envs);
        let copied = copied_in(&out);
        for done in &finished {
            assert!(
                !copied.contains(done.as_str()),
                "trial {trial} (killed after {delay:?}): {done} was uploaded again"
            );
        }
        assert_eq!(copied.len() + finished.len(), files, "trial {trial}");
        // Every object read back and compared with SFS's file.
        stage_ok(&cluster, &["stage-out", "--check", "/in", &dst], &envs);
        eprintln!(
            "trial {trial}: killed after {delay:?} with {} files finished; resumed and checked",
            finished.len()
        );
        last = dst;
    }
    assert!(
        interrupted_with_progress >= 5,
        "{interrupted_with_progress}"
    );
    // The last one, back through SFS into a directory: the source tree.
    stage_ok(&cluster, &["stage-in", &last, "/back"], &envs);
    let copy = work.join("s3-copy");
    stage_ok(
        &cluster,
        &["stage-out", "/back", copy.to_str().unwrap()],
        &envs,
    );
    assert_same(&snapshot(&src), &snapshot(&copy));
}

/// Three ranks (as `srun` would start them, one of them taking its rank
/// from Slurm's environment) stage the same tree in at once: each file is
/// copied by exactly one of them, every rank gets a share, and the run
/// without ranks that follows copies nothing and sets the directories'
/// modes and times. The same out again with two ranks: the copy equals
/// the source.
#[test]
fn ranks_share_a_stage_and_a_last_run_finishes_it() {
    let (cluster, work, src) = cluster_with_tree(1200, true);
    let expected = snapshot(&src);
    let files = expected
        .values()
        .filter(|n| matches!(n, Node::File { .. }))
        .count();
    let journal_dir = work.join("state");
    let envs = [("SFS_STAGE_STATE_DIR", journal_dir.to_str().unwrap())];
    let shared = |args: &[&str], ranks: usize| -> Vec<BTreeSet<String>> {
        let children: Vec<_> = (0..ranks)
            .map(|rank| {
                let mut command = cluster.sfs_command();
                command.args(args).envs(envs.iter().copied());
                if rank == ranks - 1 {
                    command
                        .arg("--rank-from-env")
                        .env("SLURM_PROCID", rank.to_string())
                        .env("SLURM_NTASKS", ranks.to_string());
                } else {
                    command.args(["--rank", &rank.to_string(), "--ranks", &ranks.to_string()]);
                }
                command.stdout(Stdio::piped()).stderr(Stdio::piped());
                command.spawn().unwrap()
            })
            .collect();
        children
            .into_iter()
            .enumerate()
            .map(|(rank, child)| {
                let out = child.wait_with_output().unwrap();
                let stdout = String::from_utf8_lossy(&out.stdout).into_owned();
                assert!(
                    out.status.success(),
                    "rank {rank} failed: {}\n{stdout}",
                    String::from_utf8_lossy(&out.stderr)
                );
                assert!(
                    stdout.contains(&format!("(rank {rank} of {ranks})")),
                    "{stdout}"
                );
                stdout
                    .lines()
                    .filter_map(|l| l.strip_prefix("copied "))
                    .map(str::to_string)
                    .collect()
            })
            .collect()
    };
    let check_split = |done: &[BTreeSet<String>]| {
        let mut all = BTreeSet::new();
        for (rank, copied) in done.iter().enumerate() {
            assert!(!copied.is_empty(), "rank {rank} copied nothing");
            for path in copied {
                assert!(all.insert(path.clone()), "{path} copied by two ranks");
            }
        }
        all.len()
    };
    let src_arg = src.to_str().unwrap();
    let copied = check_split(&shared(&["stage-in", "-v", src_arg, "/in"], 3));
    let finish = stage_ok(&cluster, &["stage-in", "-v", src_arg, "/in"], &envs);
    assert!(
        !finish.lines().any(|l| l.starts_with("copied ")),
        "{finish}"
    );
    assert!(finish.contains(" 0 files (0.0 MiB) copied"), "{finish}");

    let dst = work.join("out/copy");
    let dst_arg = dst.to_str().unwrap();
    std::fs::create_dir_all(work.join("out")).unwrap();
    check_split(&shared(&["stage-out", "-v", "/in", dst_arg], 2));
    stage_ok(&cluster, &["stage-out", "/in", dst_arg], &envs);
    assert_same(&expected, &snapshot(&dst));
    assert_eq!(copied, files);
}
