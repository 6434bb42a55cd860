//! Cache mode (config `backing_dir`, docs/staging.md): a Python program
//! under the shim reads inputs it never staged straight from the backing
//! directory (listing, stat, data read through by chunk on two servers),
//! changes some of them (a partial overwrite inside a chunk, a truncate
//! and regrowth, an append, a removal), writes outputs, and `sfs stop
//! --write-back` leaves the outputs and the changes in the backing
//! directory byte-exact, the untouched inputs untouched.

mod common;
mod shim_support;

use common::{describe, pattern, Cluster};
use shim_support::under_shim;
use std::os::unix::fs::MetadataExt;
use std::path::Path;

const MIB: usize = 1 << 20;

/// The inputs: a file of many chunks, a small one, one below a
/// subdirectory, one to truncate, and a symlink.
fn make_inputs(backing: &Path) {
    std::fs::create_dir_all(backing.join("in/sub")).unwrap();
    std::fs::write(backing.join("in/big.bin"), pattern(1, 5 * MIB + 123)).unwrap();
    std::fs::write(backing.join("in/small.txt"), "small input\n").unwrap();
    std::fs::write(backing.join("in/sub/deep.txt"), "deep input\n").unwrap();
    std::fs::write(backing.join("in/trunc.bin"), pattern(2, 10_000)).unwrap();
    std::os::unix::fs::symlink("big.bin", backing.join("in/latest")).unwrap();
    std::fs::write(backing.join("in/unread.bin"), pattern(3, 3 * MIB + 5)).unwrap();
    // A name that is not UTF-8 is taken in with its bytes.
    std::fs::create_dir_all(backing.join("in/bytes")).unwrap();
    std::fs::write(backing.join(latin1_name()), "latin1 input\n").unwrap();
}

/// `in/bytes/caf\xe9.txt`, a Latin-1 name.
fn latin1_name() -> std::path::PathBuf {
    use std::os::unix::ffi::OsStrExt;
    std::ffi::OsStr::from_bytes(b"in/bytes/caf\xe9.txt").into()
}

const PROGRAM: &str = r#"
import hashlib, os, sys
m = sys.argv[1]
def digest(path):
    with open(path, "rb") as f:
        return hashlib.sha256(f.read()).hexdigest()
print("listing", sorted(os.listdir(m + "/in")), sorted(os.listdir(m + "/in/sub")))
print("size", os.stat(m + "/in/big.bin").st_size, os.readlink(m + "/in/latest"))
latin1 = os.fsencode(m) + b"/in/bytes/caf\xe9.txt"
print("latin1", os.listdir(os.fsencode(m) + b"/in/bytes"), open(latin1, "rb").read())
with open(latin1, "ab") as f:
    f.write(b"more\n")
for name in ["big.bin", "small.txt", "sub/deep.txt", "latest"]:
    print("sha", name, digest(m + "/in/" + name))
# Changes: a patch inside the second chunk, a truncate and regrowth, an
# append, a removal; and outputs.
with open(m + "/in/big.bin", "r+b") as f:
    f.seek(600_000)
    f.write(b"PATCHED")
os.truncate(m + "/in/trunc.bin", 1000)
with open(m + "/in/trunc.bin", "r+b") as f:
    f.seek(3000)
    f.write(b"end")
with open(m + "/in/small.txt", "a") as f:
    f.write("appended\n")
os.remove(m + "/in/sub/deep.txt")
# Changed without reading a byte: the write-back rewrites it from chunks
# SFS reads from the very file it replaces.
os.chmod(m + "/in/unread.bin", 0o600)
print("removed", os.path.exists(m + "/in/sub/deep.txt"), sorted(os.listdir(m + "/in/sub")))
os.makedirs(m + "/out/run1")
with open(m + "/out/run1/result.txt", "w") as f:
    f.write("big " + digest(m + "/in/big.bin") + "\n")
try:
    os.rename(m + "/in/sub", m + "/in/moved")
    print("rename of a backing directory: done")
except OSError as e:
    print("rename of a backing directory:", e.strerror)
"#;

fn sha256(data: &[u8]) -> String {
    use std::io::Write;
    let mut child = std::process::Command::new("sha256sum")
        .stdin(std::process::Stdio::piped())
        .stdout(std::process::Stdio::piped())
        .spawn()
        .unwrap();
    child.stdin.take().unwrap().write_all(data).unwrap();
    let out = child.wait_with_output().unwrap();
    String::from_utf8_lossy(&out.stdout)
        .split_whitespace()
        .next()
        .unwrap()
        .to_string()
}

#[test]
fn a_program_reads_the_backing_directory_through_sfs_and_its_outputs_are_written_back() {
    let shared = tempfile::tempdir().unwrap();
    let backing = shared.path().join("backing");
    make_inputs(&backing);
    let untouched = std::fs::metadata(backing.join("in/sub/deep.txt")).unwrap();
    let mut cluster = Cluster::start_with(2, |config| {
        config.backing_dir = backing.display().to_string();
    });
    let script = shared.path().join("program.py");
    std::fs::write(&script, PROGRAM).unwrap();
    let mount = cluster.config.mountdir.clone();
    let out = under_shim(
        &cluster,
        &format!("python3 {} \"$1\"", script.display()),
        &[&mount],
    );
    assert!(out.status.success(), "{}", describe(&out));
    let stdout = String::from_utf8_lossy(&out.stdout).to_string();
    let big = pattern(1, 5 * MIB + 123);
    let expected = [
        "listing ['big.bin', 'bytes', 'latest', 'small.txt', 'sub', 'trunc.bin', 'unread.bin'] ['deep.txt']"
            .to_string(),
        "latin1 [b'caf\\xe9.txt'] b'latin1 input\\n'".to_string(),
        format!("size {} big.bin", big.len()),
        format!("sha big.bin {}", sha256(&big)),
        format!("sha small.txt {}", sha256(b"small input\n")),
        format!("sha sub/deep.txt {}", sha256(b"deep input\n")),
        format!("sha latest {}", sha256(&big)),
        "removed False []".to_string(),
        "rename of a backing directory: Invalid cross-device link".to_string(),
    ];
    for line in &expected {
        assert!(
            stdout.contains(line.as_str()),
            "{line:?} missing in:\n{stdout}"
        );
    }
    // Nothing reached the backing directory before the write-back.
    assert_eq!(
        std::fs::read(backing.join("in/small.txt")).unwrap(),
        b"small input\n"
    );
    assert!(!backing.join("out").exists());

    let stopped = cluster.sfs(&["stop", "--write-back"]);
    assert!(stopped.status.success(), "{}", describe(&stopped));
    for i in 0..2 {
        assert!(cluster.wait_exit(i).success(), "server {i} failed to stop");
    }
    let mut patched = big.clone();
    patched[600_000..600_007].copy_from_slice(b"PATCHED");
    assert_eq!(std::fs::read(backing.join("in/big.bin")).unwrap(), patched);
    let mut trunc = pattern(2, 1000);
    trunc.resize(3000, 0);
    trunc.extend_from_slice(b"end");
    assert_eq!(std::fs::read(backing.join("in/trunc.bin")).unwrap(), trunc);
    assert_eq!(
        std::fs::read(backing.join("in/small.txt")).unwrap(),
        b"small input\nappended\n"
    );
    assert_eq!(
        std::fs::read_to_string(backing.join("out/run1/result.txt")).unwrap(),
        format!("big {}\n", sha256(&patched))
    );
    assert_eq!(
        std::fs::read(backing.join(latin1_name())).unwrap(),
        b"latin1 input\nmore\n"
    );
    let unread = backing.join("in/unread.bin");
    assert_eq!(std::fs::read(&unread).unwrap(), pattern(3, 3 * MIB + 5));
    assert_eq!(std::fs::metadata(&unread).unwrap().mode() & 0o7777, 0o600);
    // A removal in SFS is not propagated; the file stays as it was.
    let deep = std::fs::metadata(backing.join("in/sub/deep.txt")).unwrap();
    assert_eq!(
        (deep.ino(), deep.ctime(), deep.ctime_nsec()),
        (untouched.ino(), untouched.ctime(), untouched.ctime_nsec())
    );
}

/// A job reads three times the servers' chunk-store capacity out of the
/// backing directory, twice: chunks only read are dropped as room is
/// needed (their backing file has them) and read in again. A chunk changed
/// in SFS is written back before it is dropped and then comes from the
/// object back end — not the backing file's old bytes.
#[test]
fn a_job_reads_more_of_the_backing_directory_than_the_servers_hold() {
    const CAPACITY: u64 = 2 << 20;
    let shared = tempfile::tempdir().unwrap();
    let backing = shared.path().join("backing");
    std::fs::create_dir_all(&backing).unwrap();
    let mut inputs = Vec::new();
    for i in 1..=6u64 {
        let bytes = pattern(10 + i, 2 * MIB + i as usize * 1000);
        std::fs::write(backing.join(format!("f{i}")), &bytes).unwrap();
        inputs.push(bytes);
    }
    let cluster = Cluster::start_with(2, |c| {
        c.chunk_size = 64 << 10;
        c.chunk_store_capacity = CAPACITY;
        c.backing_dir = backing.display().to_string();
    });
    let script = r#"
set -euo pipefail
cd "$1"
sha256sum f1 f2 f3 f4 f5 f6
printf PATCHED | dd of=f2 bs=1 seek=70000 conv=notrunc status=none
sha256sum f6 f5 f4 f3 f2 f1
sha256sum f1 f2 f3 f4 f5 f6
"#;
    let out = under_shim(&cluster, script, &[&cluster.config.mountdir]);
    assert!(out.status.success(), "{}", describe(&out));
    let mut patched = inputs[1].clone();
    patched[70_000..70_007].copy_from_slice(b"PATCHED");
    let sum = |i: usize| {
        let bytes = if i == 2 { &patched } else { &inputs[i - 1] };
        format!("{}  f{i}", sha256(bytes))
    };
    let mut expected: Vec<String> = (1..=6)
        .map(|i| format!("{}  f{i}", sha256(&inputs[i - 1])))
        .collect();
    expected.extend((1..=6).rev().map(sum));
    expected.extend((1..=6).map(sum));
    let stdout = String::from_utf8_lossy(&out.stdout);
    assert_eq!(stdout.lines().collect::<Vec<_>>(), expected);
    // Nothing reached the backing directory: the change lives in SFS.
    assert_eq!(std::fs::read(backing.join("f2")).unwrap(), inputs[1]);
    let status = cluster.sfs(&["status", "--json"]);
    assert!(status.status.success(), "{}", describe(&status));
    let report: serde_json::Value = serde_json::from_slice(&status.stdout).unwrap();
    for server in report["servers"].as_array().unwrap() {
        assert!(
            server["chunk_bytes"].as_u64().unwrap() <= CAPACITY,
            "{server}"
        );
        assert!(
            server["tiering"]["evicted_bytes"].as_u64().unwrap() > 0,
            "{server}"
        );
    }
}

/// Files renamed in SFS still read their unread bytes from their old
/// backing names; a write-back that rewrites those names must not change
/// them. A swap (`a` ↔ `b` through a third name) and a log rotation
/// (`log` → `log.1`, a new `log`), never read before the write-back,
/// written back one file at a time (`-j 1`, so one name is rewritten
/// before the next file is read) and again by `sfs stop --write-back`.
#[test]
fn a_write_back_keeps_the_bytes_of_files_renamed_in_sfs() {
    let shared = tempfile::tempdir().unwrap();
    let backing = shared.path().join("backing");
    std::fs::create_dir_all(&backing).unwrap();
    let (a, b, log) = (
        pattern(21, 300_000),
        pattern(22, 200_000),
        pattern(23, 150_000),
    );
    std::fs::write(backing.join("a.bin"), &a).unwrap();
    std::fs::write(backing.join("b.bin"), &b).unwrap();
    std::fs::write(backing.join("log"), &log).unwrap();
    let mut cluster = Cluster::start_with(2, |c| {
        c.chunk_size = 64 << 10;
        c.backing_dir = backing.display().to_string();
    });
    let script = r#"
set -euo pipefail
cd "$1"
mv a.bin t.bin && mv b.bin a.bin && mv t.bin b.bin
mv log log.1
echo fresh > log
# No hard links in the view of a backing directory (docs/staging.md).
if ln log log.hard 2>/dev/null; then echo "ln worked" >&2; exit 1; fi
[ ! -e log.hard ]
"#;
    let out = under_shim(&cluster, script, &[&cluster.config.mountdir]);
    assert!(out.status.success(), "{}", describe(&out));
    let staged = cluster.sfs(&[
        "stage-out",
        "--changed",
        "-j",
        "1",
        "/",
        backing.to_str().unwrap(),
    ]);
    assert!(staged.status.success(), "{}", describe(&staged));
    let check = |when: &str| {
        assert!(
            std::fs::read(backing.join("a.bin")).unwrap() == b,
            "a.bin {when}"
        );
        assert!(
            std::fs::read(backing.join("b.bin")).unwrap() == a,
            "b.bin {when}"
        );
        assert!(
            std::fs::read(backing.join("log.1")).unwrap() == log,
            "log.1 {when}"
        );
        assert_eq!(
            std::fs::read(backing.join("log")).unwrap(),
            b"fresh\n",
            "{when}"
        );
    };
    check("after stage-out --changed");
    // SFS reads the same, and a second write-back writes nothing new.
    let client = cluster.client();
    let mut buf = vec![0u8; b.len() + 10];
    let n = client.read_at_path("/a.bin", 0, &mut buf).unwrap();
    assert!(buf[..n] == b[..], "a.bin through SFS");
    let stopped = cluster.sfs(&["stop", "--write-back"]);
    assert!(stopped.status.success(), "{}", describe(&stopped));
    for i in 0..2 {
        assert!(cluster.wait_exit(i).success(), "server {i} failed to stop");
    }
    check("after sfs stop --write-back");
}
