//! More real programs under the real shim, against real servers: the entry
//! library's lazy loading, sort of a 50 MB file, git, sed -i, make + gcc,
//! fio with verification, and a fork/exec torture test. Where a result can
//! be compared, the same script also runs on a local directory.

mod common;
mod shim_support;

use common::Cluster;
use shim_support::{assert_ok, require, same_on_sfs_and_local, text, under_shim};

#[test]
fn the_shim_is_loaded_only_by_programs_that_touch_the_mount() {
    let cluster = Cluster::start(1);
    let mount = &cluster.config.mountdir;
    let parent = std::path::Path::new(mount).parent().unwrap();
    let leaf = std::path::Path::new(mount)
        .file_name()
        .unwrap()
        .to_str()
        .unwrap();
    // A plain program maps only the entry library; one that opens an SFS
    // path (absolute, or relative with `.` from the kernel's working
    // directory) maps the shim too and reads the file.
    let script = r#"
set -euo pipefail
grep -c 'libsfs_shim' /proc/self/maps || true
echo data > "$1/f"
cd "$2"
cat "./$3/f" /proc/self/maps | grep -E '^data$|libsfs_shim' | sed 's/.*libsfs_shim.*/shim mapped/' | uniq
"#;
    let o = under_shim(
        &cluster,
        script,
        &[mount, &parent.display().to_string(), leaf],
    );
    assert_ok("lazy loading", &o);
    assert_eq!(text(&o.stdout), "0\ndata\nshim mapped\n");
}

#[test]
fn sort_of_a_50_mb_file_matches_local() {
    let cluster = Cluster::start(2);
    let src = tempfile::tempdir().unwrap();
    let input = src.path().join("input.txt");
    let mut seed = 0x9e37_79b9_7f4a_7c15u64;
    let mut lines = String::with_capacity(52 << 20);
    while lines.len() < 50 << 20 {
        seed ^= seed << 13;
        seed ^= seed >> 7;
        seed ^= seed << 17;
        lines.push_str(&format!("{:016x} {}\n", seed, seed % 1000));
    }
    std::fs::write(&input, lines).unwrap();
    let script = r#"
set -euo pipefail
cd "$1"
cp "$2" input.txt
sort input.txt > sorted.txt
sort -c sorted.txt
sort -k2,2n -k1,1 -o numeric.txt input.txt
wc -l < sorted.txt
md5sum sorted.txt numeric.txt
"#;
    let out = same_on_sfs_and_local(&cluster, script, &[&input.display().to_string()]);
    assert!(out.contains("sorted.txt"), "{out}");
}

const GIT: &str = r#"
set -euo pipefail
cd "$1"
export GIT_AUTHOR_DATE='2024-01-01T00:00:00Z' GIT_COMMITTER_DATE='2024-01-01T00:00:00Z'
git init -q -b main repo
cd repo
git config user.email t@example.com; git config user.name tester
mkdir -p src; for i in 1 2 3 4 5; do echo "file $i" > src/f$i.txt; done
git add .; git commit -q -m first
echo more >> src/f1.txt; git rm -q src/f2.txt; git mv src/f3.txt src/g3.txt
git commit -q -am second
git log --format='%H %s'
git status --porcelain
git show --stat --format=%s HEAD | sort
git gc -q
git fsck --full 2>&1
git cat-file -p HEAD:src/f1.txt
"#;

#[test]
fn git_init_add_commit_log_matches_local() {
    require("git");
    let cluster = Cluster::start(2);
    let out = same_on_sfs_and_local(&cluster, GIT, &[]);
    assert!(out.contains(" second\n"), "{out}");
}

#[test]
fn sed_in_place_matches_local() {
    let cluster = Cluster::start(1);
    let script = r#"
set -euo pipefail
cd "$1"
seq 1 2000 > numbers
sed -i 's/^1/one-/' numbers
sed -i.bak -e '/5$/d' numbers
ls
md5sum numbers numbers.bak
stat -c '%a %s' numbers
"#;
    same_on_sfs_and_local(&cluster, script, &[]);
}

const MAKE: &str = r#"
set -euo pipefail
cd "$1"
mkdir proj; cd proj
cat > util.h <<'C'
int triple(int x);
C
cat > util.c <<'C'
#include "util.h"
int triple(int x) { return 3 * x; }
C
cat > main.c <<'C'
#include <stdio.h>
#include "util.h"
int main(void) { printf("triple(14) = %d\n", triple(14)); return 0; }
C
cat > Makefile <<'M'
prog: main.o util.o
	$(CC) -o $@ main.o util.o
%.o: %.c util.h
	$(CC) -O2 -c -o $@ $<
M
make -s CC=gcc
make CC=gcc
touch -d '+1 minute' util.c
make CC=gcc
ls
cp prog "$2/prog" && "$2/prog"
./prog
"#;

#[test]
fn make_builds_a_c_program_in_the_mount_like_locally() {
    require("make");
    require("gcc");
    let cluster = Cluster::start(2);
    let bin = tempfile::tempdir().unwrap();
    let out = same_on_sfs_and_local(&cluster, MAKE, &[&bin.path().display().to_string()]);
    assert!(out.contains("triple(14) = 42"), "{out}");
    assert!(
        out.contains("Nothing to be done") || out.contains("is up to date"),
        "{out}"
    );
}

/// The GNU build system end to end in the mount: `autoreconf -i` (autoconf,
/// automake and their helper scripts, run by bash and perl), `./configure`
/// (hundreds of compiler runs, `config.status` writing files, bash
/// redirections of parent and children into one log), `make`, `make check`
/// (the test harness's logs) and `make dist`'s tarball — each step's
/// outcome and the files left as in a local directory.
const AUTOTOOLS: &str = r#"
set -euo pipefail
cd "$1"
mkdir proj; cd proj
cat > configure.ac <<'AC'
AC_INIT([triple], [1.0])
AM_INIT_AUTOMAKE([foreign -Wall -Werror])
AC_PROG_CC
AC_CHECK_HEADERS([stdio.h unistd.h])
AC_CONFIG_HEADERS([config.h])
AC_CONFIG_FILES([Makefile])
AC_OUTPUT
AC
cat > Makefile.am <<'AM'
bin_PROGRAMS = triple
triple_SOURCES = triple.c
check_SCRIPTS = t1.sh
TESTS = t1.sh
EXTRA_DIST = t1.sh
AM
cat > triple.c <<'C'
#include "config.h"
#include <stdio.h>
#include <stdlib.h>
int main(int argc, char **argv) { printf("%d\n", 3 * (argc > 1 ? atoi(argv[1]) : 14)); return 0; }
C
printf '#!/bin/sh\ntest "$(./triple 5)" = 15\n' > t1.sh
chmod +x t1.sh
autoreconf -i > autoreconf.log 2>&1 && echo "autoreconf: ok"
./configure > configure.log 2>&1 && echo "configure: ok"
grep -c '^checking' configure.log > /dev/null && echo "configure logged its checks"
grep 'HAVE_UNISTD_H' config.h
make > make.log 2>&1 && echo "make: ok"
./triple
make check > check.log 2>&1 && echo "make check: ok"
grep -E '^# (TOTAL|PASS|FAIL)' check.log
make dist > dist.log 2>&1 && tar tzf triple-1.0.tar.gz | sort | head -20
ls config.status Makefile triple t1.sh.log test-suite.log
"#;

#[test]
fn autotools_configure_make_and_check_run_in_the_mount_like_locally() {
    for tool in ["autoreconf", "automake", "make", "gcc"] {
        require(tool);
    }
    let cluster = Cluster::start(2);
    let out = same_on_sfs_and_local(&cluster, AUTOTOOLS, &[]);
    for line in [
        "autoreconf: ok",
        "configure: ok",
        "make: ok",
        "42",
        "make check: ok",
        "# PASS:  1",
    ] {
        assert!(out.contains(line), "{line:?} missing in:\n{out}");
    }
}

/// Programs stored on the mount: scripts (also with an interpreter that is
/// itself a script on the mount), a binary built there, run by path, from a
/// working directory inside the mount, through PATH, from Python's
/// subprocess and posix_spawn; the errnos of what cannot run.
const STORED_PROGRAMS: &str = r##"
set -u
cd "$1"
mkdir bin
cat > bin/hello <<'SH'
#!/bin/sh
echo "script $(basename "$0") args $*"
SH
chmod +x bin/hello
cat > bin/interp <<'SH'
#!/bin/sh
echo "interpreter for $(basename "$1")"
SH
chmod 755 bin/interp
echo "#!$1/bin/interp" > bin/viainterp
chmod +x bin/viainterp
echo 'int main(int c, char **v) { return c == 3 ? 7 : 1; }' > seven.c
gcc -o bin/seven seven.c
echo 'echo no x bit' > bin/plain
./bin/hello a b
bin/hello c
"$1/bin/hello" d
./bin/viainterp
./bin/seven x y; echo "seven exited $?"
PATH="$1/bin:$PATH" hello via-path
PATH="$1/bin:$PATH" env hello via-execvp
./bin/plain 2>/dev/null; echo "plain exited $?"
bin/missing 2>/dev/null; echo "missing exited $?"
python3 - "$1" <<'PY'
import os, subprocess, sys
d = sys.argv[1]
r = subprocess.run([d + "/bin/hello", "from-python"], capture_output=True, text=True)
print(r.stdout.strip().replace(d, "D"), r.returncode)
r = subprocess.run(["hello", "from-python-path"], capture_output=True, text=True,
                   env=dict(os.environ, PATH=d + "/bin:/usr/bin:/bin"))
print(r.stdout.strip().replace(d, "D"), r.returncode)
pid = os.posix_spawn(d + "/bin/seven", ["seven", "1", "2"], os.environ)
print("posix_spawn", os.waitstatus_to_exitcode(os.waitpid(pid, 0)[1]))
try:
    subprocess.run([d + "/bin/plain"])
except PermissionError as e:
    print("PermissionError", e.errno)
# system() and popen() spawn through glibc-internal calls the hooks never
# see: the working directory inside the mount reaches them all the same.
os.chdir(d)
sys.stdout.flush()
os.system("ls bin | head -2")
print("popen", os.popen("pwd").read().strip().replace(d, "D"))
PY
"##;

#[test]
fn programs_stored_on_the_mount_run() {
    require("gcc");
    let cluster = Cluster::start(2);
    let out = same_on_sfs_and_local(&cluster, STORED_PROGRAMS, &[]);
    // Paths differ between the two runs; what they print apart from paths
    // must not.
    let expected = [
        "script hello args a b",
        "script hello args c",
        "script hello args d",
        "interpreter for viainterp",
        "seven exited 7",
        "script hello args via-path",
        "script hello args via-execvp",
        "plain exited 126",
        "missing exited 127",
        "script hello args from-python 0",
        "script hello args from-python-path 0",
        "posix_spawn 7",
        "PermissionError 13",
        "hello",
        "interp",
        "popen D",
    ];
    assert_eq!(out.lines().collect::<Vec<_>>(), expected, "{out}");
}

/// Temporary files that live without a name: O_TMPFILE, open + unlink +
/// use, and sqlite's temporary files with its temporary directory on the
/// mount; nothing is left behind.
const UNNAMED_FILES: &str = r#"
import os, sqlite3, sys, tempfile
d = sys.argv[1]
os.environ["TMPDIR"] = d
tempfile.tempdir = None
with tempfile.TemporaryFile() as f:
    f.write(b"x" * 100000)
    f.seek(0)
    print("TemporaryFile", len(f.read()), os.fstat(f.fileno()).st_nlink)
fd = os.open(d + "/scratch", os.O_RDWR | os.O_CREAT, 0o600)
os.unlink(d + "/scratch")
os.write(fd, b"still here")
os.lseek(fd, 0, 0)
print("unlinked", os.read(fd, 64), os.path.exists(d + "/scratch"))
os.close(fd)
os.environ["SQLITE_TMPDIR"] = d
con = sqlite3.connect(d + "/db.sqlite")
con.execute("PRAGMA temp_store=FILE")
con.execute("PRAGMA cache_size=-64")
con.execute("create table t(x)")
con.executemany("insert into t values (?)", ((i * 7919 % 100003,) for i in range(40000)))
con.commit()
print("sorted", con.execute("select count(*), min(x), max(x), sum(x) from (select x from t order by x)").fetchone())
con.execute("create index i on t(x)")
print("integrity", con.execute("pragma integrity_check").fetchone()[0])
con.close()
print("left", sorted(os.listdir(d)))
"#;

#[test]
fn temporary_files_without_a_name_work_and_leave_nothing() {
    let cluster = Cluster::start(2);
    let script = format!("python3 - \"$1\" <<'PY'\n{UNNAMED_FILES}\nPY\n");
    let out = same_on_sfs_and_local(&cluster, &script, &[]);
    assert!(out.contains("TemporaryFile 100000 0"), "{out}");
    assert!(out.contains("unlinked b'still here' False"), "{out}");
    assert!(out.contains("integrity ok"), "{out}");
    assert!(out.contains("left ['db.sqlite']"), "{out}");
}

#[test]
fn fio_psync_four_threads_with_crc32c_verification() {
    require("fio");
    let cluster = Cluster::start(3);
    let script = r#"
set -euo pipefail
mkdir "$1/fio"
fio --name=sfs --directory="$1/fio" --ioengine=psync --thread --numjobs=4 \
    --rw=randrw --bs=4k --size=8m --verify=crc32c --do_verify=1 \
    --verify_fatal=1 --verify_state_save=0 --group_reporting \
    --output-format=terse --terse-version=3 | awk -F';' '{print "error=" $5}'
fio --name=seq --directory="$1/fio" --ioengine=psync --thread --numjobs=4 \
    --rw=write --bs=1m --size=16m --verify=crc32c --do_verify=1 \
    --verify_fatal=1 --verify_state_save=0 --group_reporting \
    --output-format=terse --terse-version=3 | awk -F';' '{print "error=" $5}'
ls "$1/fio" | wc -l
"#;
    let o = under_shim(&cluster, script, &[&cluster.config.mountdir]);
    assert_ok("fio", &o);
    assert_eq!(
        text(&o.stdout),
        "error=0\nerror=0\n8\n",
        "{}",
        text(&o.stderr)
    );
}

const TORTURE: &str = r#"
set -euo pipefail
cd "$1"
: > log
exec 4>>shared
for i in $(seq 1 200); do
  (
    echo "child $i" >> log
    grep -qx "child $i" log || echo "missing own line $i"
    sh -c 'echo "exec $0" >&4; cat log > /dev/null' "$i"
    printf '%s\n' "$i" > "own-$i"
    [ "$(cat "own-$i")" = "$i" ] || echo "bad own-$i"
    rm "own-$i"
  ) &
  if (( i % 25 == 0 )); then wait; fi
done
wait
exec 4>&-
sort -n -k2 log | uniq | wc -l
sort -n -k2 shared | awk '{print $2}' | uniq | wc -l
ls
"#;

#[test]
fn two_hundred_short_lived_children_write_and_read_the_same_files() {
    let cluster = Cluster::start(2);
    let o = under_shim(&cluster, TORTURE, &[&cluster.config.mountdir]);
    assert_ok("fork/exec torture", &o);
    assert_eq!(
        text(&o.stdout),
        "200\n200\nlog\nshared\n",
        "{}",
        text(&o.stderr)
    );
}
