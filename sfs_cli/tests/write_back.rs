//! Writing SFS back by name (cache mode's write-back, docs/staging.md):
//! `sfs stage-out --changed` into a directory that already holds part of
//! the tree rewrites what differs and leaves what is the same untouched,
//! deletes nothing, and writes a renamed file under its new name;
//! `sfs stop --write-back` does the same into the config's `backing_dir`
//! and stops the servers only when every path arrived.

mod common;

use common::tree::{allocated, assert_same, set_mtime, snapshot, Node};
use common::{describe, pattern, write_at, Cluster};
use std::fs::Permissions;
use std::os::unix::fs::{FileExt, MetadataExt, PermissionsExt};
use std::path::Path;

const MIB: usize = 1 << 20;

/// The regular files of the source tree: path, pattern seed, size, mode.
/// `same-*` (and `top.txt`, `a/b/deep.dat`) are put into the destination
/// beforehand as they are, `stale-*` differently.
const FILES: [(&str, u64, usize, u32); 7] = [
    ("top.txt", 1, 1000, 0o644),
    ("a/same-1.dat", 2, 70_000, 0o640),
    ("a/b/deep.dat", 3, 1_300_000, 0o600),
    ("a/b/same-2.dat", 4, 0, 0o644),
    ("a/stale-size.dat", 5, 5000, 0o644),
    ("a/stale-content.dat", 6, 5000, 0o755),
    ("a/stale-mode.dat", 7, 300, 0o600),
];

/// The mtime (seconds, nanoseconds) the source gives file `seed`.
fn file_mtime(seed: u64) -> (i64, i64) {
    (1_650_000_000 + seed as i64, 123_456_780 + seed as i64)
}

/// The source tree: [`FILES`] in nested directories, two symlinks, an
/// empty directory and a sparse file (two data extents, a hole at the
/// end), every entry with its own nanosecond mtime.
fn make_source(root: &Path) {
    for (rel, seed, len, mode) in FILES {
        let path = root.join(rel);
        std::fs::create_dir_all(path.parent().unwrap()).unwrap();
        std::fs::write(&path, pattern(seed, len)).unwrap();
        std::fs::set_permissions(&path, Permissions::from_mode(mode)).unwrap();
        let (secs, nanos) = file_mtime(seed);
        set_mtime(&path, secs, nanos);
    }
    std::fs::create_dir(root.join("empty")).unwrap();
    std::os::unix::fs::symlink("a/b/deep.dat", root.join("link")).unwrap();
    set_mtime(&root.join("link"), 1_600_000_000, 7);
    std::os::unix::fs::symlink("../top.txt", root.join("a/link2")).unwrap();
    set_mtime(&root.join("a/link2"), 1_600_000_001, 8);
    let sparse = std::fs::File::create(root.join("a/sparse.bin")).unwrap();
    sparse.write_all_at(&pattern(9, 100_000), 0).unwrap();
    sparse
        .write_all_at(&pattern(10, 5000), 4 * MIB as u64)
        .unwrap();
    sparse.set_len(6 * MIB as u64).unwrap();
    set_mtime(&root.join("a/sparse.bin"), 1_650_000_100, 99);
    for dir in ["empty", "a/b", "a", ""] {
        set_mtime(&root.join(dir), 1_700_000_000, 42);
    }
}

/// Copies file `rel` of `src` to `dst` as a stage would leave it: same
/// bytes, mode and mtime.
fn copy_as_staged(src: &Path, dst: &Path, rel: &str) {
    let (from, to) = (src.join(rel), dst.join(rel));
    std::fs::create_dir_all(to.parent().unwrap()).unwrap();
    std::fs::copy(&from, &to).unwrap();
    let md = std::fs::metadata(&from).unwrap();
    std::fs::set_permissions(&to, md.permissions()).unwrap();
    set_mtime(&to, md.mtime(), md.mtime_nsec());
}

/// Inode and ctime of `path` (not following a symlink): both stay as
/// they are only if nothing wrote, truncated, chmod-ed, touched or
/// replaced it.
fn untouched_id(path: &Path) -> (u64, i64, i64) {
    let md = std::fs::symlink_metadata(path).unwrap();
    (md.ino(), md.ctime(), md.ctime_nsec())
}

/// Runs `sfs stage-out --changed /t DST` and checks its summary: the
/// files it wrote and found unchanged, the symlinks it made, no failure.
fn stage_out_changed(cluster: &Cluster, dst: &Path, copied: u64, unchanged: u64, symlinks: u64) {
    let out = cluster.sfs_ok(&["stage-out", "--changed", "/t", dst.to_str().unwrap()]);
    assert!(
        out.starts_with(&format!("stage-out: {copied} files ("))
            && out.contains(&format!(
                " {unchanged} unchanged (same size, mode and mtime)"
            ))
            && out.contains(&format!(" {symlinks} symlinks, 0 failed")),
        "{out}"
    );
}

#[test]
fn stage_out_changed_rewrites_what_differs_and_leaves_the_rest() {
    let cluster = Cluster::start(2);
    let work = cluster.path().join("work");
    let src = work.join("src");
    make_source(&src);
    let journal = work.join("stage-in.journal");
    cluster.sfs_ok(&[
        "stage-in",
        "--journal",
        journal.to_str().unwrap(),
        src.to_str().unwrap(),
        "/t",
    ]);

    // The destination already holds part of the tree: some of it as SFS
    // has it, some of it stale, and a file SFS does not have.
    let dst = work.join("out");
    let same = ["top.txt", "a/same-1.dat", "a/b/deep.dat", "a/b/same-2.dat"];
    for rel in same {
        copy_as_staged(&src, &dst, rel);
    }
    std::os::unix::fs::symlink("a/b/deep.dat", dst.join("link")).unwrap();
    set_mtime(&dst.join("link"), 1_600_000_000, 7);
    std::os::unix::fs::symlink("elsewhere", dst.join("a/link2")).unwrap();
    // Only the size differs (the mtime is the source's).
    std::fs::write(dst.join("a/stale-size.dat"), pattern(50, 4000)).unwrap();
    let (secs, nanos) = file_mtime(5);
    set_mtime(&dst.join("a/stale-size.dat"), secs, nanos);
    // Same size, other bytes, an mtime one nanosecond off.
    std::fs::write(dst.join("a/stale-content.dat"), pattern(60, 5000)).unwrap();
    std::fs::set_permissions(
        dst.join("a/stale-content.dat"),
        Permissions::from_mode(0o755),
    )
    .unwrap();
    let (secs, nanos) = file_mtime(6);
    set_mtime(&dst.join("a/stale-content.dat"), secs, nanos + 1);
    // The same bytes and mtime, another mode.
    copy_as_staged(&src, &dst, "a/stale-mode.dat");
    std::fs::set_permissions(dst.join("a/stale-mode.dat"), Permissions::from_mode(0o644)).unwrap();
    std::fs::write(dst.join("a/only-here.txt"), b"not in SFS").unwrap();
    std::fs::set_permissions(&dst, Permissions::from_mode(0o750)).unwrap();
    let top_before = snapshot(&dst).remove("").unwrap();
    let kept: Vec<_> = same
        .iter()
        .chain(&["link"])
        .map(|rel| (*rel, untouched_id(&dst.join(rel))))
        .collect();
    let stale: Vec<_> = [
        "a/stale-size.dat",
        "a/stale-content.dat",
        "a/stale-mode.dat",
    ]
    .iter()
    .map(|rel| (*rel, untouched_id(&dst.join(rel))))
    .collect();

    // The three stale files and the sparse one written, the four others
    // (and the symlink that is the same) not.
    stage_out_changed(&cluster, &dst, 4, 4, 1);
    for (rel, before) in &kept {
        assert_eq!(
            &untouched_id(&dst.join(rel)),
            before,
            "{rel} is the same in SFS and was written all the same"
        );
    }
    for (rel, before) in &stale {
        assert_ne!(
            &untouched_id(&dst.join(rel)),
            before,
            "{rel} was not written"
        );
    }
    // Byte-exact with modes and mtimes, plus the file SFS does not have.
    // The destination's top directory keeps its own mode (its mtime is
    // the kernel's: files were written into it).
    let mut got = snapshot(&dst);
    assert!(got.remove("a/only-here.txt").is_some(), "deleted: {got:?}");
    let mode = |node: Option<Node>| match node {
        Some(Node::Dir { mode, .. }) => mode,
        other => panic!("top: {other:?}"),
    };
    assert_eq!(mode(got.remove("")), mode(Some(top_before)));
    let mut expected = snapshot(&src);
    expected.remove("");
    assert_same(&expected, &got);
    assert_eq!(
        std::fs::read(dst.join("a/only-here.txt")).unwrap(),
        b"not in SFS"
    );
    let sparse = dst.join("a/sparse.bin");
    assert!(
        allocated(&sparse) < 2 * MIB as u64,
        "the sparse file arrived with {} bytes allocated",
        allocated(&sparse)
    );

    // A rename in SFS: the file is written under its new name, the old
    // name stays; everything else is unchanged now and not written again.
    let client = cluster.client();
    client.rename("/t/top.txt", "/t/renamed.txt").unwrap();
    // (Directories are given their mode and mtime again on every run.)
    let before: Vec<_> = snapshot(&dst)
        .into_iter()
        .filter(|(_, node)| !matches!(node, Node::Dir { .. }))
        .map(|(rel, _)| (rel.clone(), untouched_id(&dst.join(&rel))))
        .collect();
    stage_out_changed(&cluster, &dst, 1, 7, 0);
    assert_eq!(
        std::fs::read(dst.join("renamed.txt")).unwrap(),
        pattern(1, 1000)
    );
    for (rel, id) in &before {
        assert_eq!(&untouched_id(&dst.join(rel)), id, "{rel} was written again");
    }
}

/// Two servers whose config names `backing_dir`, under a directory of
/// its own (the cluster's directory goes when the cluster does).
fn cluster_with_backing_dir() -> (tempfile::TempDir, std::path::PathBuf, Cluster) {
    let shared = tempfile::tempdir().unwrap();
    let backing = shared.path().join("backing");
    std::fs::create_dir(&backing).unwrap();
    let cluster = Cluster::start_with(2, |config| {
        config.backing_dir = backing.display().to_string();
    });
    (shared, backing, cluster)
}

/// Files, directories, a symlink and a sparse file written in SFS.
fn write_results(cluster: &Cluster) {
    let client = cluster.client();
    client.mkdir("/results", 0o755).unwrap();
    client.mkdir("/results/run1", 0o750).unwrap();
    client.mkdir("/results/empty", 0o700).unwrap();
    write_at(
        &client,
        "/results/run1/out.dat",
        0,
        &pattern(1, 3 * MIB + 17),
    );
    write_at(&client, "/results/summary.txt", 0, b"42 events\n");
    client.chmod("/results/summary.txt", 0o600).unwrap();
    write_at(&client, "/results/sparse", 2 * MIB as u64, &pattern(2, 100));
    client.symlink("run1/out.dat", "/results/latest").unwrap();
}

#[test]
fn stop_write_back_writes_sfs_to_the_backing_dir_then_stops_the_servers() {
    let (shared, backing, mut cluster) = cluster_with_backing_dir();
    write_results(&cluster);
    // SFS as a plain stage-out copies it: what the backing directory
    // must hold afterwards.
    let reference = shared.path().join("reference");
    let journal = shared.path().join("reference.journal");
    cluster.sfs_ok(&[
        "stage-out",
        "--journal",
        journal.to_str().unwrap(),
        "/",
        reference.to_str().unwrap(),
    ]);

    let out = cluster.sfs(&["stop", "--write-back"]);
    assert!(out.status.success(), "{}", describe(&out));
    let stdout = String::from_utf8_lossy(&out.stdout);
    assert!(
        stdout.contains("stage-out: 3 files") && stdout.contains("server s1 stopped"),
        "{}",
        describe(&out)
    );
    for i in 0..2 {
        assert!(cluster.wait_exit(i).success(), "server {i} failed to stop");
    }
    // All but the backing directory itself, which keeps its attributes.
    let (mut expected, mut got) = (snapshot(&reference), snapshot(&backing));
    expected.remove("");
    got.remove("");
    assert_same(&expected, &got);
    assert_eq!(
        std::fs::read(backing.join("results/run1/out.dat")).unwrap(),
        pattern(1, 3 * MIB + 17)
    );
    let mut sparse = vec![0; 2 * MIB];
    sparse.extend(pattern(2, 100));
    assert_eq!(
        std::fs::read(backing.join("results/sparse")).unwrap(),
        sparse
    );
}

#[test]
fn stop_write_back_that_cannot_write_stops_nothing() {
    let (shared, backing, mut cluster) = cluster_with_backing_dir();
    write_results(&cluster);
    let still_up = |cluster: &mut Cluster, out: &std::process::Output| {
        for i in 0..2 {
            assert!(cluster.running(i), "server {i} stopped: {}", describe(out));
        }
        let mut data = [0u8; 32];
        let n = cluster
            .client()
            .read_at_path("/results/summary.txt", 0, &mut data)
            .unwrap();
        assert_eq!(&data[..n], b"42 events\n");
    };

    // No backing_dir in the config: refused before anything is done.
    let mut config = cluster.config.clone();
    config.backing_dir = String::new();
    let without = shared.path().join("without-backing-dir.json");
    std::fs::write(&without, config.to_json_pretty()).unwrap();
    let out = std::process::Command::new(common::SFS)
        .arg("--config")
        .arg(&without)
        .arg("--hostfile")
        .arg(&cluster.hostfile_path)
        .args(["stop", "--write-back"])
        .output()
        .unwrap();
    let stderr = String::from_utf8_lossy(&out.stderr);
    assert!(
        !out.status.success()
            && stderr.contains("nothing stopped")
            && stderr.contains("`backing_dir` is empty"),
        "{}",
        describe(&out)
    );
    still_up(&mut cluster, &out);

    // A backing directory that cannot be written (a file is in its place;
    // the tests run as root, for whom permission bits are no obstacle).
    std::fs::remove_dir(&backing).unwrap();
    std::fs::write(&backing, b"in the way").unwrap();
    let out = cluster.sfs(&["stop", "--write-back"]);
    let stderr = String::from_utf8_lossy(&out.stderr);
    let summary = backing.join("results/summary.txt");
    assert!(
        !out.status.success()
            && stderr.contains(&format!("stage-out: FAILED {}: ", backing.display()))
            && stderr.contains(&format!("stage-out: FAILED {}: ", summary.display()))
            && stderr.contains("nothing stopped"),
        "{}",
        describe(&out)
    );
    still_up(&mut cluster, &out);
    assert_eq!(std::fs::read(&backing).unwrap(), b"in the way");
}
