//! Real programs under the real LD_PRELOAD shim (`sfs exec`), against real
//! servers: coreutils, bash, python3, tar, sqlite, fork. Where a result can
//! be compared, the same script also runs on a local temp directory and the
//! outputs must be identical byte for byte.

mod common;
mod shim_support;

use common::Cluster;
use shim_support::{assert_ok, same_on_sfs_and_local, text, under_shim};
use std::path::Path;
use std::process::Command;

/// A source tree of `files` files with mixed sizes (0 B .. ~1.2 MiB),
/// some nested, plus a text file for sort.
fn make_tree(dir: &Path, files: usize) {
    let mut seed = 0x2545_f491_4f6c_dd1du64;
    let mut next = move || {
        seed ^= seed << 13;
        seed ^= seed >> 7;
        seed ^= seed << 17;
        seed
    };
    for i in 0..files {
        let sub = dir.join(format!("d{}", i % 20)).join(format!("e{}", i % 3));
        std::fs::create_dir_all(&sub).unwrap();
        let size = match i % 10 {
            0 => 0,
            1..=6 => (next() % 5000) as usize,
            7 | 8 => (next() % 200_000) as usize,
            _ => (next() % 1_300_000) as usize,
        };
        let data: Vec<u8> = (0..size).map(|_| next() as u8).collect();
        std::fs::write(sub.join(format!("f{i}.bin")), data).unwrap();
    }
    let lines: String = (0..60_000)
        .map(|_| format!("{:016x} line\n", next()))
        .collect();
    std::fs::write(dir.join("words.txt"), lines).unwrap();
}

const COREUTILS: &str = r#"
set -euo pipefail
cd "$1"; src="$2"
cp -r "$src" tree
find tree -type f | wc -l
mkdir -p a/b/c/d; rmdir a/b/c/d; ls -R a
mv tree/d1 tree/d1-moved; mv tree/words.txt words.txt
ln -s words.txt link; readlink link; cat link | wc -l
touch -d @1700000000 words.txt; stat -c '%n %s %Y %F' words.txt; stat -L -c '%s %Y %F' link
touch new-empty; stat -c '%s %F' new-empty
chmod 640 words.txt; stat -c '%a' words.txt
truncate -s 12345 tree/d2/e0/f2.bin; stat -c %s tree/d2/e0/f2.bin
truncate -s 10 tree/d2/e0/f2.bin; md5sum tree/d2/e0/f2.bin
dd if=words.txt of=dd4k bs=4K status=none; dd if=words.txt of=dd16m bs=16M status=none
cmp words.txt dd4k; cmp words.txt dd16m
head -n 3 words.txt; tail -n 2 words.txt; head -c 100 words.txt | wc -c
wc words.txt
sort words.txt > sorted.txt; sort -c sorted.txt; md5sum sorted.txt
sort -r -o rsorted.txt words.txt; head -n 1 rsorted.txt
cat tree/d3/e0/*.bin | md5sum
find . -type f -printf '%P %s\n' | LC_ALL=C sort
find . -type d -printf '%P\n' | LC_ALL=C sort
find . -type l -printf '%P -> %l\n'
du -ab --apparent-size tree | grep -c bin
ls -laR tree | grep -c '^-'
ls tree/d4/e1
rm -r tree/d5; rm tree/d6/e0/f6.bin
test ! -e tree/d5 && echo removed
find . -type f -exec md5sum {} + | LC_ALL=C sort -k2
"#;

#[test]
fn coreutils_match_a_local_directory() {
    let cluster = Cluster::start(3);
    let src = tempfile::tempdir().unwrap();
    make_tree(src.path(), 2000);
    let src_path = src.path().display().to_string();
    let out = same_on_sfs_and_local(&cluster, COREUTILS, &[&src_path]);
    assert!(out.contains("removed"), "{out}");
}

const BASH: &str = r#"
set -euo pipefail
cd "$1"
pwd | sed "s|^$1|ROOT|"
echo one > f; echo two >> f; printf 'three\n' >> f
cat < f
while read -r line; do echo "read $line"; done < f
cat f | tr a-z A-Z | sort | uniq -c
exec 3> g; echo via-fd3 >&3; exec 3>&-; cat g
{ echo grouped; echo lines; } > h; cat h
mkdir sub; touch sub/a sub/b sub/c
for x in sub/*; do echo "glob $x"; done
cd sub; for x in *; do echo "here $x"; done; ls; cd ..
echo $(cat f | wc -l) lines
ls -1 > listing; cat listing
"#;

#[test]
fn bash_redirections_pipes_and_globbing() {
    let cluster = Cluster::start(2);
    same_on_sfs_and_local(&cluster, BASH, &[]);
}

const PYTHON: &str = r#"
import json, mmap, os, pathlib, shutil, sqlite3, subprocess, sys, tempfile, zipfile
root = pathlib.Path(sys.argv[1]); src = sys.argv[2]
(root / "p").mkdir()
(root / "p" / "a.txt").write_text("hello\n")
print((root / "p" / "a.txt").read_text(), end="")
print(sorted(p.name for p in (root / "p").iterdir()))
shutil.copytree(src, root / "copy")
print(sum(len(fs) for _, _, fs in os.walk(root / "copy")))
with open(root / "data.json", "w") as f:
    json.dump({"k": [1, 2, 3]}, f)
print(json.load(open(root / "data.json")))
with open(root / "tmp.json", "w") as f:
    f.write('{"new": true}')
os.replace(root / "tmp.json", root / "data.json")
print(json.load(open(root / "data.json")))
with tempfile.NamedTemporaryFile(dir=root, delete=False) as t:
    t.write(b"temp"); name = t.name
print(open(name, "rb").read())
with zipfile.ZipFile(root / "z.zip", "w") as z:
    z.writestr("inner.txt", "zipped " * 100)
print(zipfile.ZipFile(root / "z.zip").read("inner.txt")[:13])
with open(root / "m.bin", "wb") as f:
    f.write(b"x" * 10000)
with open(root / "m.bin", "r+b") as f:
    m = mmap.mmap(f.fileno(), 0)
    print(m[:3], len(m)); m[0:5] = b"HELLO"; m.flush(); m.close()
print(open(root / "m.bin", "rb").read(7))
with open(root / "child.out", "w") as out:
    subprocess.run(["sh", "-c", "echo from child; ls " + str(root / "p")], stdout=out, check=True)
print(open(root / "child.out").read(), end="")
db = sqlite3.connect(root / "t.db")
db.execute("create table t (i integer primary key, s text)")
for chunk in range(10):
    with db:
        db.executemany("insert into t (s) values (?)", (("row %d" % i,) for i in range(10000)))
print(db.execute("select count(*), sum(length(s)) from t").fetchone())
print(db.execute("pragma integrity_check").fetchone())
db.close()
"#;

#[test]
fn python_pathlib_shutil_json_mmap_subprocess_sqlite() {
    let cluster = Cluster::start(2);
    let src = tempfile::tempdir().unwrap();
    make_tree(src.path(), 100);
    let script = tempfile::NamedTempFile::new().unwrap();
    std::fs::write(script.path(), PYTHON).unwrap();
    let cmd = format!("python3 {} \"$1\" \"$2\"", script.path().display());
    let out = same_on_sfs_and_local(&cluster, &cmd, &[&src.path().display().to_string()]);
    assert!(out.contains("('ok',)"), "{out}");
    assert!(out.contains("(100000, "), "{out}");
}

#[test]
fn tar_round_trip_of_usr_include() {
    let cluster = Cluster::start(3);
    let source = Path::new("/usr/include/linux");
    assert!(
        source.is_dir(),
        "/usr/include/linux is needed (linux-libc-dev)"
    );
    let out_dir = tempfile::tempdir().unwrap();
    let script = r#"
set -euo pipefail
m="$1"; out="$2"
mkdir "$m/t" "$m/t/x"
tar czf "$m/t/inc.tgz" -C /usr/include linux
tar xzf "$m/t/inc.tgz" -C "$m/t/x"
tar cf - -C "$m/t/x" linux | tar xf - -C "$out"
gzip -t "$m/t/inc.tgz" && echo gzip-ok
"#;
    let o = under_shim(
        &cluster,
        script,
        &[
            &cluster.config.mountdir,
            &out_dir.path().display().to_string(),
        ],
    );
    assert_ok("tar under the shim", &o);
    let diff = Command::new("diff")
        .arg("-r")
        .arg(source)
        .arg(out_dir.path().join("linux"))
        .output()
        .unwrap();
    assert_ok("diff -r against /usr/include/linux", &diff);
}

#[test]
fn sqlite3_cli_integrity_check() {
    if Command::new("sqlite3").arg("-version").output().is_err() {
        panic!("sqlite3 is needed (scripts/setup.sh installs it)");
    }
    let cluster = Cluster::start(2);
    let script = r#"
set -euo pipefail
db="$1/cli.db"
sqlite3 "$db" 'create table t(a integer primary key, b text);'
for i in 1 2 3 4 5; do
  sqlite3 "$db" "begin; with recursive c(x) as (select 1 union all select x+1 from c where x < 20000) insert into t(b) select 'v' || x from c; commit;"
done
sqlite3 "$db" 'select count(*) from t; pragma integrity_check;'
"#;
    let o = under_shim(&cluster, script, &[&cluster.config.mountdir]);
    assert_ok("sqlite3 under the shim", &o);
    assert_eq!(text(&o.stdout), "100000\nok\n");
}

#[test]
fn fork_children_share_open_files_and_exec_inherits_descriptors() {
    let cluster = Cluster::start(2);
    let script = r#"
import os, sys
root = sys.argv[1]
fd = os.open(root + "/shared", os.O_CREAT | os.O_WRONLY | os.O_APPEND, 0o644)
pids = []
for i in range(50):
    pid = os.fork()
    if pid == 0:
        os.write(fd, b"child %03d\n" % i)
        with open(root + "/own-%d" % i, "w") as f:
            f.write("x" * i)
        os._exit(0)
    pids.append(pid)
for pid in pids:
    _, status = os.waitpid(pid, 0)
    assert status == 0, status
os.close(fd)
lines = sorted(open(root + "/shared").read().splitlines())
assert lines == ["child %03d" % i for i in range(50)], lines[:5]
assert all(os.path.getsize(root + "/own-%d" % i) == i for i in range(50))
# A descriptor without FD_CLOEXEC survives exec into another program.
fd = os.open(root + "/inherited", os.O_CREAT | os.O_WRONLY, 0o644)
os.set_inheritable(fd, True)
pid = os.fork()
if pid == 0:
    os.execvp("sh", ["sh", "-c", "echo through-exec >&%d; ls %s >&%d" % (fd, root + "/inherited", fd)])
_, status = os.waitpid(pid, 0)
assert status == 0
print(open(root + "/inherited").read(), end="")
print("forks ok")
"#;
    let file = tempfile::NamedTempFile::new().unwrap();
    std::fs::write(file.path(), script).unwrap();
    let cmd = format!("python3 {} \"$1\"", file.path().display());
    let o = under_shim(&cluster, &cmd, &[&cluster.config.mountdir]);
    assert_ok("fork test", &o);
    assert_eq!(
        text(&o.stdout),
        format!(
            "through-exec\n{}/inherited\nforks ok\n",
            cluster.config.mountdir
        )
    );
}

#[test]
fn a_program_that_never_touches_the_mount_starts_no_thread_or_socket() {
    let cluster = Cluster::start(1);
    // `cat` reports its own thread count; `ls` lists its own descriptors.
    let o = under_shim(
        &cluster,
        "grep Threads /proc/self/status; ls -l /proc/self/fd | grep -c socket || true",
        &[],
    );
    assert_ok("plain program", &o);
    assert_eq!(text(&o.stdout), "Threads:\t1\n0\n");
    // Even after SFS calls the client runs on the calling thread.
    let o = under_shim(
        &cluster,
        "echo hi > \"$1/f\"; cat \"$1/f\" /proc/self/status | grep -E '^(hi|Threads)'",
        &[&cluster.config.mountdir],
    );
    assert_ok("SFS program", &o);
    assert_eq!(text(&o.stdout), "hi\nThreads:\t1\n");
}

#[test]
fn errors_are_precise() {
    let cluster = Cluster::start(1);
    let script = r#"
cd "$1"
cat missing 2>&1 | sed "s|$1|M|"
mkdir d; rmdir d/nope 2>&1 | sed "s|$1|M|"
touch f; python3 -c "import os; os.link('d', 'dlink')" 2>&1 | tail -n 1
python3 -c "
import fcntl, os, errno
fd = os.open('$1/f', os.O_RDWR)
fcntl.lockf(fd, fcntl.LOCK_EX)
print('locked')
try:
    fcntl.ioctl(fd, 0x40049409, 0)
except OSError as e:
    print('ficlone', errno.errorcode[e.errno])
"
"#;
    let o = under_shim(&cluster, script, &[&cluster.config.mountdir]);
    assert_ok("errors", &o);
    let out = text(&o.stdout);
    assert!(
        out.contains("cat: missing: No such file or directory"),
        "{out}"
    );
    assert!(out.contains("No such file or directory"), "{out}");
    assert!(out.contains("Operation not permitted"), "{out}");
    assert!(out.contains("locked"), "{out}");
    // EOPNOTSUPP and ENOTSUP are one number on Linux; Python names it ENOTSUP.
    assert!(out.contains("ficlone ENOTSUP"), "{out}");
}

/// `cd` to the mount's parent, then relative paths that descend into the
/// mount (`sfs/d/f`): builtins of the shell, fresh child processes (whose
/// entry library has not loaded the shim yet) and `cd` itself reach SFS,
/// and nothing lands in the host's directory of the same name.
#[test]
fn relative_paths_from_an_ancestor_of_the_mount_reach_sfs() {
    let cluster = Cluster::start(1);
    let mount = Path::new(&cluster.config.mountdir);
    let parent = mount.parent().unwrap().to_str().unwrap();
    let name = mount.file_name().unwrap().to_str().unwrap();
    let script = r#"
set -e
cd "$1"
mkdir "$2/d"
echo hi > "$2/d/f"
cat "$2/d/f"
ls "$2/d"
stat -c %s "$2/d/f"
cp "$2/d/f" "$2/d/g"
python3 -c 'import os, sys; print(sorted(os.listdir(sys.argv[1])))' "$2/d"
cd "$2/d"
pwd
cat g
"#;
    let o = under_shim(&cluster, script, &[parent, name]);
    assert_ok("relative paths from the parent", &o);
    assert_eq!(
        text(&o.stdout),
        format!("hi\nf\n3\n['f', 'g']\n{}/d\nhi\n", cluster.config.mountdir)
    );
    let check = under_shim(&cluster, "cat \"$1/d/g\"", &[&cluster.config.mountdir]);
    assert_ok("reading back by absolute path", &check);
    assert_eq!(text(&check.stdout), "hi\n");
    assert!(
        !mount.join("d").exists(),
        "the host directory {} was written",
        mount.display()
    );
}
