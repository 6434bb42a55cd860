//! POSIX fidelity under the real shim, compared with the same scripts on a
//! local directory: shells started inside the mount, and one open file
//! description shared by a parent and its children (fork, exec, dup).

mod common;
mod shim_support;

use common::Cluster;
use shim_support::{assert_ok, compile_c, require, same_on_sfs_and_local, text, under_shim};

/// bash defines its own getenv/setenv; a bash started with its working
/// directory inside the mount (a job script, `./configure`) must still see
/// SFS, through `bash FILE`, a `#!/bin/bash` script and `bash -c`.
#[test]
fn bash_started_inside_the_mount_sees_sfs() {
    let cluster = Cluster::start(2);
    let script = r#"
set -euo pipefail
cd "$1"
mkdir d
cat > d/job.sh <<'EOS'
#!/bin/bash
set -euo pipefail
mkdir sub
cd sub
echo made > f
cat f
cd ..
ls -R
EOS
chmod +x d/job.sh
cd d
bash "$1/d/job.sh"
rm -r sub
./job.sh
bash -c 'cd sub && cat f && echo "in $(basename "$PWD")"'
cd "$1" && bash -c 'cd d/sub && ls'
"#;
    let out = same_on_sfs_and_local(&cluster, script, &[]);
    assert!(out.contains("in sub"), "{out}");
}

/// A shell and the children it starts write into one `>` file through one
/// shared description: nothing is overwritten, as on a kernel file.
#[test]
fn parent_and_children_share_the_offset_of_one_description() {
    require("make");
    let cluster = Cluster::start(2);
    let script = r#"
set -euo pipefail
cd "$1"
{ echo header; seq 1 3; echo footer; } > f
cat f
exec 3> log
echo one >&3
(echo two >&3)
sh -c 'echo three >&3'
echo four >&3
exec 3>&-
cat log
( exec > out; echo a; ls -d .; echo b; sh -c 'echo c'; ) 
cat out
for i in 1 2 3; do echo "line $i"; /bin/echo "child $i"; done > loop
cat loop
echo x >> f; sh -c 'echo y >> f'; echo z >> f
cat f
{ head -c 3; cat; } < loop
printf 'all:\n\t@echo first\n\t@echo second\n\t@sh -c "echo third"\n' > Makefile
make > make.log
cat make.log
"#;
    let out = same_on_sfs_and_local(&cluster, script, &[]);
    assert!(out.starts_with("header\n1\n2\n3\nfooter\n"), "{out}");
    assert!(out.contains("first\nsecond\nthird\n"), "{out}");
}

/// A lock taken through a descriptor holds other processes off until that
/// descriptor closes, and is gone after it (the descriptor's record in the
/// shim, `wrapper/src/descriptors.rs`); a number reused for another file
/// carries nothing of it. fcntl locks, flock and lockf, as locally; a
/// flock lock lasts while a duplicate or a forked child's copy is open.
#[test]
fn a_lock_lasts_until_the_descriptor_that_took_it_closes() {
    let cluster = Cluster::start(1);
    let script = r#"
set -euo pipefail
cd "$1"
python3 - <<'EOS'
import fcntl, os, subprocess, sys
probe = """
import fcntl, os, sys
fd = os.open(sys.argv[1], os.O_RDWR)
try:
    if sys.argv[3] == "flock":
        fcntl.flock(fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
    else:
        fcntl.lockf(fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
    print(sys.argv[2], "free")
except OSError:
    print(sys.argv[2], "held")
"""
def ask(name, when, kind):
    sys.stdout.flush()
    subprocess.run([sys.executable, "-c", probe, name, when, kind], check=True)
for take in ("lockf", "flock", "fcntl"):
    fd = os.open("f", os.O_RDWR | os.O_CREAT, 0o644)
    if take == "lockf":
        fcntl.lockf(fd, fcntl.LOCK_EX)
    elif take == "flock":
        fcntl.flock(fd, fcntl.LOCK_EX)
    else:
        fcntl.fcntl(fd, fcntl.F_SETLK, bytes(32))
    if take != "fcntl":
        ask("f", take + " while open", take)
    os.close(fd)
    # The number comes back for another file: nothing of the lock on it.
    again = os.open("g", os.O_RDWR | os.O_CREAT, 0o644)
    print("same number", again == fd)
    ask("f", take + " after close", take)
    ask("g", take + " other file", take)
    os.close(again)
# POSIX: a record lock goes at the close of *any* descriptor of the file
# (not of another file's).
fd = os.open("f", os.O_RDWR)
fcntl.lockf(fd, fcntl.LOCK_EX)
os.close(os.open("g", os.O_RDONLY))
ask("f", "lockf after another file's close", "lockf")
os.close(os.open("f", os.O_RDONLY))
ask("f", "lockf after another descriptor's close", "lockf")
os.close(fd)
# A flock lock belongs to the open file description: it lasts while a
# duplicate, or a forked child's copy, is open.
fd = os.open("f", os.O_RDWR)
fcntl.flock(fd, fcntl.LOCK_EX)
twin = os.dup(fd)
os.close(fd)
ask("f", "flock with a dup open", "flock")
go, wait = os.pipe()
child = os.fork()
if child == 0:
    os.close(wait)
    os.read(go, 1)
    os._exit(0)
os.close(go)
os.close(twin)
ask("f", "flock with a child's copy open", "flock")
os.close(wait)
os.waitpid(child, 0)
ask("f", "flock after the child's exit", "flock")
EOS
"#;
    let out = same_on_sfs_and_local(&cluster, script, &[]);
    for line in [
        "lockf while open held\n",
        "lockf after close free\n",
        "lockf after another file's close held\n",
        "lockf after another descriptor's close free\n",
        "flock while open held\n",
        "flock after close free\n",
        "flock with a child's copy open held\n",
    ] {
        assert!(out.contains(line), "{line:?} missing: {out}");
    }
}

/// The same from C: a forked child writes through the inherited descriptor,
/// the parent goes on after it, and both see one offset (also after
/// `lseek` in the child and through a `dup`).
#[test]
fn fork_shares_the_offset_in_c() {
    let cluster = Cluster::start(1);
    let dir = tempfile::tempdir().unwrap();
    let program = compile_c(
        dir.path(),
        "fork_offset",
        r#"
#include <fcntl.h>
#include <stdio.h>
#include <string.h>
#include <sys/wait.h>
#include <unistd.h>
static void put(int fd, const char *s) {
    if (write(fd, s, strlen(s)) != (ssize_t)strlen(s)) { perror("write"); _exit(1); }
}
int main(int argc, char **argv) {
    int fd = open(argv[1], O_CREAT | O_TRUNC | O_RDWR, 0644);
    if (fd < 0) { perror("open"); return 1; }
    put(fd, "parent1\n");
    pid_t pid = fork();
    if (pid == 0) { put(fd, "child\n"); _exit(0); }
    waitpid(pid, NULL, 0);
    put(fd, "parent2\n");
    int copy = dup(fd);
    put(copy, "dup\n");
    printf("offset %ld\n", (long)lseek(fd, 0, SEEK_CUR));
    pid = fork();
    if (pid == 0) { lseek(fd, 0, SEEK_SET); _exit(0); }
    waitpid(pid, NULL, 0);
    printf("after child seek %ld\n", (long)lseek(copy, 0, SEEK_CUR));
    char buf[64] = {0};
    ssize_t n = read(fd, buf, 7);
    printf("read %zd %s\n", n, buf);
    int other = open(argv[1], O_RDONLY);
    printf("second open at %ld\n", (long)lseek(other, 0, SEEK_CUR));
    return 0;
}
"#,
    );
    let path = format!("{}/f", cluster.config.mountdir);
    let out = under_shim(
        &cluster,
        "\"$1\" \"$2\" && cat \"$2\"",
        &[&program.display().to_string(), &path],
    );
    assert_ok("fork_offset", &out);
    assert_eq!(
        text(&out.stdout),
        "offset 26\nafter child seek 0\nread 7 parent1\nsecond open at 0\n\
         parent1\nchild\nparent2\ndup\n"
    );
}

/// With every server down, a program under the shim gets EIO, and the shim
/// says once (not once per call) why, unless `SFS_LOG=off`.
#[test]
fn the_shim_says_once_that_servers_are_unreachable() {
    let mut cluster = Cluster::start(1);
    cluster.stop_all();
    let run = |log: Option<&str>| {
        // Preloaded by hand: `sfs exec` itself refuses to start a program
        // when servers are down.
        let mut command = std::process::Command::new("sh");
        command
            .args(["-c", "cat \"$1/a\"; cat \"$1/b\"; exit 0", "sh"])
            .arg(&cluster.config.mountdir)
            .env("LD_PRELOAD", shim_support::shim())
            .env("SFS_CONFIG", &cluster.config_path)
            .env("SFS_HOSTFILE", &cluster.hostfile_path)
            .env_remove("SFS_LOG")
            .stdin(std::process::Stdio::null());
        if let Some(level) = log {
            command.env("SFS_LOG", level);
        }
        command.output().expect("running sfs exec")
    };
    let said = text(&run(None).stderr);
    assert_eq!(
        said.matches("cannot be reached").count(),
        2,
        "one line per process (two cat processes): {said}"
    );
    assert!(said.contains("Input/output error"), "{said}");
    let quiet = text(&run(Some("off")).stderr);
    assert!(!quiet.contains("cannot be reached"), "{quiet}");
}

/// `read` leaves the caller's bytes past the returned count alone (CPython's
/// `readinto` checks it), also when the file grew through another
/// descriptor since this one last saw its size.
#[test]
fn read_leaves_the_buffer_past_the_count_alone() {
    let cluster = Cluster::start(2);
    let dir = tempfile::tempdir().unwrap();
    let program = compile_c(
        dir.path(),
        "read_tail",
        r#"
#include <fcntl.h>
#include <stdio.h>
#include <string.h>
#include <unistd.h>
static int untouched(const char *buf, size_t from, size_t to) {
    for (size_t i = from; i < to; i++) if (buf[i] != 'X') return 0;
    return 1;
}
int main(int argc, char **argv) {
    int w = open(argv[1], O_CREAT | O_TRUNC | O_RDWR, 0644);
    int r = open(argv[1], O_RDONLY);
    if (w < 0 || r < 0 || write(w, "0123456789", 10) != 10) { perror("setup"); return 1; }
    char buf[100000];
    memset(buf, 'X', sizeof buf);
    ssize_t n = read(r, buf, sizeof buf);
    printf("read %zd untouched %d\n", n, untouched(buf, (size_t)n, sizeof buf));
    if (write(w, "abc", 3) != 3) return 1;
    memset(buf, 'X', sizeof buf);
    n = read(r, buf, sizeof buf);
    printf("read %zd %.3s untouched %d\n", n, buf, untouched(buf, (size_t)n, sizeof buf));
    return 0;
}
"#,
    );
    let path = format!("{}/f", cluster.config.mountdir);
    let out = under_shim(
        &cluster,
        "\"$1\" \"$2\"",
        &[&program.display().to_string(), &path],
    );
    assert_ok("read_tail", &out);
    assert_eq!(
        text(&out.stdout),
        "read 10 untouched 1\nread 3 abc untouched 1\n"
    );
}

/// `fcntl(F_SETFL)` switches `O_APPEND` (and `O_NONBLOCK`) on an open SFS
/// descriptor, for every process sharing the description, as on ext4.
#[test]
fn f_setfl_switches_append_for_the_whole_description() {
    let cluster = Cluster::start(1);
    let dir = tempfile::tempdir().unwrap();
    let program = compile_c(
        dir.path(),
        "setfl",
        r#"
#include <fcntl.h>
#include <stdio.h>
#include <string.h>
#include <sys/wait.h>
#include <unistd.h>
int main(int argc, char **argv) {
    int fd = open(argv[1], O_CREAT | O_TRUNC | O_WRONLY, 0644);
    if (fd < 0 || write(fd, "0123456789", 10) != 10) { perror("setup"); return 1; }
    printf("append at open %d\n", !!(fcntl(fd, F_GETFL) & O_APPEND));
    if (fcntl(fd, F_SETFL, O_APPEND | O_NONBLOCK) != 0) { perror("F_SETFL"); return 1; }
    int fl = fcntl(fd, F_GETFL);
    printf("flags %d %d %d\n", !!(fl & O_APPEND), !!(fl & O_NONBLOCK), (fl & O_ACCMODE) == O_WRONLY);
    lseek(fd, 0, SEEK_SET);
    if (write(fd, "A", 1) != 1) return 1;
    pid_t pid = fork();
    if (pid == 0) { lseek(fd, 0, SEEK_SET); _exit(write(fd, "C", 1) == 1 ? 0 : 1); }
    waitpid(pid, NULL, 0);
    fcntl(fd, F_SETFL, 0);
    printf("append after clearing %d\n", !!(fcntl(fd, F_GETFL) & O_APPEND));
    lseek(fd, 0, SEEK_SET);
    if (write(fd, "X", 1) != 1) return 1;
    return 0;
}
"#,
    );
    let out = program_locally_and_under_shim(&cluster, &program, "\"$1\" \"$2/f\" && cat \"$2/f\"");
    assert_eq!(
        out,
        "append at open 0\nflags 1 1 1\nappend after clearing 0\nX123456789AC"
    );
}

/// A path argument that cannot point into the process's memory (NULL, the
/// kernel's half of the address space) gives EFAULT under the shim as
/// without it, instead of crashing the program in the shim's `strlen`
/// (pjdfstest's `efault_path` cases): path calls, and symlink's target
/// beside a link path inside the mount.
#[test]
fn a_path_pointer_outside_the_process_gives_efault() {
    let cluster = Cluster::start(1);
    let dir = tempfile::tempdir().unwrap();
    let program = compile_c(
        dir.path(),
        "efault",
        r#"
#define _GNU_SOURCE
#include <errno.h>
#include <fcntl.h>
#include <stdio.h>
#include <string.h>
#include <sys/stat.h>
#include <unistd.h>
static void show(const char *what, int rc) {
    printf("%s %d %s\n", what, rc, rc < 0 ? strerrorname_np(errno) : "-");
}
int main(int argc, char **argv) {
    const char *bad[2] = { NULL, (const char *)-1 };
    struct stat st;
    char link[4096];
    snprintf(link, sizeof link, "%s/l", argv[1]);
    if (chdir(argv[1]) != 0) { perror("chdir"); return 1; }
    for (int i = 0; i < 2; i++) {
        show("open", open(bad[i], O_RDONLY));
        show("openat", openat(AT_FDCWD, bad[i], O_RDONLY));
        show("stat", stat(bad[i], &st));
        show("mkdir", mkdir(bad[i], 0755));
        show("unlink", unlink(bad[i]));
        show("rename", rename(bad[i], "x"));
        show("chmod", chmod(bad[i], 0644));
        show("access", access(bad[i], F_OK));
        show("symlink", symlink(bad[i], link));
    }
    return 0;
}
"#,
    );
    let out = program_locally_and_under_shim(&cluster, &program, "\"$1\" \"$2\"");
    assert!(out.contains("open -1 EFAULT"), "{out}");
}

/// Runs `script` (`$1` the program, `$2` a directory) with a local
/// directory and then under the shim with the mount, and returns the
/// standard output, asserting both runs succeed and print the same.
fn program_locally_and_under_shim(
    cluster: &Cluster,
    program: &std::path::Path,
    script: &str,
) -> String {
    let local = tempfile::tempdir().unwrap();
    let program = program.display().to_string();
    let expected = shim_support::local(script, &[&program, &local.path().display().to_string()]);
    assert_ok("locally", &expected);
    let out = under_shim(cluster, script, &[&program, &cluster.config.mountdir]);
    assert_ok("under the shim", &out);
    assert_eq!(text(&out.stdout), text(&expected.stdout));
    text(&out.stdout)
}

/// Symlinks in the middle of a path are followed (relative, absolute into
/// the mount, chained), a regular file in the middle gives ENOTDIR, a loop
/// ELOOP and a missing directory ENOENT, for lookups, creates, renames and
/// removals, as on a local directory.
#[test]
fn symlinks_and_files_in_the_middle_of_a_path_resolve_as_the_kernel_does() {
    let cluster = Cluster::start(2);
    let script = format!(
        r#"
set -eu
cd "$1"
mkdir -p runs/run42/sub
ln -s runs/run42 latest
echo data > latest/out.h5
cat runs/run42/out.h5 latest/out.h5
ls latest
mkdir latest/new
ls runs/run42
ln -s run42 runs/alias
cat runs/alias/out.h5
ln -s "$1/runs" abs
cat abs/alias/out.h5
mv latest/out.h5 latest/moved.h5
echo z > z
mv z latest/z
ls runs/run42
rm latest/moved.h5 latest/z
rmdir latest/new
ls runs/run42
touch plain
ln -s loop2 loop1
ln -s loop1 loop2
python3 - <<'PY'
{ATTEMPT}attempt("stat file/x", lambda: os.stat("plain/x"))
attempt("open file/x", lambda: open("plain/x"))
attempt("create file/x", lambda: open("plain/x", "w"))
attempt("mkdir file/x", lambda: os.mkdir("plain/x"))
attempt("stat loop/x", lambda: os.stat("loop1/x"))
attempt("stat missing/x", lambda: os.stat("missing/x"))
attempt("create missing/x", lambda: open("missing/x", "w"))
attempt("stat latest/sub", lambda: os.stat("latest/sub"))
attempt("chmod latest/sub", lambda: os.chmod("latest/sub", 0o700))
print(oct(os.stat("runs/run42/sub").st_mode & 0o777))
import ctypes
libc = ctypes.CDLL(None)
libc.realpath.restype = ctypes.c_char_p
for p in [b"latest/sub", b"abs/alias/sub", b"latest"]:
    print(os.path.relpath(libc.realpath(p, None).decode()))
PY
"#
    );
    let out = same_on_sfs_and_local(&cluster, &script, &[]);
    assert!(out.contains("stat loop/x ELOOP"), "{out}");
    assert!(out.contains("open file/x ENOTDIR"), "{out}");
}

/// `open(O_CREAT)` through a dangling symlink creates the file it names
/// (relative and chained), `O_EXCL` refuses it (EEXIST), `O_NOFOLLOW`
/// refuses the link (ELOOP), as on a local directory.
#[test]
fn o_creat_through_a_dangling_symlink_creates_its_target() {
    let cluster = Cluster::start(2);
    let script = format!(
        r#"
set -eu
cd "$1"
mkdir d
ln -s d/target dangling
ln -s dangling chained
ln -s d/other second
python3 - <<'PY'
{ATTEMPT}with open("dangling", "w") as f:
    f.write("through\n")
print(open("d/target").read(), end="")
attempt("excl", lambda: os.open("second", os.O_CREAT | os.O_EXCL | os.O_WRONLY, 0o644))
attempt("nofollow", lambda: os.open("second", os.O_CREAT | os.O_NOFOLLOW | os.O_WRONLY, 0o644))
os.remove("d/target")
with open("chained", "a") as f:
    f.write("chained\n")
print(open("d/target").read(), end="")
print(sorted(os.listdir("d")))
PY
"#
    );
    let out = same_on_sfs_and_local(&cluster, &script, &[]);
    assert!(out.contains("through\nexcl EEXIST"), "{out}");
}

/// The Python helper of the scripts above: `attempt(name, call)` prints
/// the call's name and "ok" or the errno's name.
const ATTEMPT: &str = "import errno, os
def attempt(name, call):
    try:
        call()
        print(name, \"ok\")
    except OSError as e:
        print(name, errno.errorcode[e.errno])
";

/// A trailing `/`, a last `.` or `..`, and `..` after a symlink, a file or
/// a missing name are taken as the kernel takes them (not folded away):
/// each call below answers as on a local directory and leaves the same
/// tree — Python's `os` calls (open with and without `O_CREAT`, unlink,
/// rmdir, rename, stat, lstat, symlink, mkdir, chmod, access, truncate,
/// readlink, utime, listdir, chdir) and coreutils (`cp f nodir/`, `rm -f
/// f/`, `mv ld/ e`, `touch new/`, `cat lx/../deep/../../f` ...).
#[test]
fn a_trailing_slash_dot_and_dotdot_are_taken_as_the_kernel_takes_them() {
    let cluster = Cluster::start(2);
    let out = python_then_shell_on_sfs_and_local(&cluster, PYTHON_CASES, SHELL_CASES);
    assert!(
        out.contains("unlink f/                    ENOTDIR"),
        "{out}"
    );
    assert!(out.contains("lstat lx/../deep             ok dir"), "{out}");
    assert!(out.contains("1 cp f nodir/"), "{out}");
}

/// Runs the Python program `python`, then the shell commands `shell`, in a
/// fresh directory on SFS and in one on a local file system (`$HERE` is
/// that directory); both must succeed and print the same.
fn python_then_shell_on_sfs_and_local(cluster: &Cluster, python: &str, shell: &str) -> String {
    let script = format!(
        "set -u\ncd \"$1\"\nexport HERE=\"$PWD\"\npython3 - <<'PY'\n{python}\nPY\n{shell}\n"
    );
    same_on_sfs_and_local(cluster, &script, &[])
}

/// The calls of [`a_trailing_slash_dot_and_dotdot_are_taken_as_the_kernel_takes_them`]:
/// each on a fresh tree (`f` a file, `d` a directory, `s/deep`, `ld -> d`,
/// `lf -> f`, `lx -> s/deep`), printing its answer and the names left.
const PYTHON_CASES: &str = r#"import os, errno, shutil, stat as st
def setup():
    for n in os.listdir('.'):
        if os.path.islink(n) or os.path.isfile(n): os.unlink(n)
        else: shutil.rmtree(n)
    open('f', 'w').write('x'); os.mkdir('d'); os.makedirs('s/deep')
    os.symlink('d', 'ld'); os.symlink('f', 'lf'); os.symlink('s/deep', 'lx')
def answer(r):
    if isinstance(r, os.stat_result):
        return 'dir' if st.S_ISDIR(r.st_mode) else ('lnk' if st.S_ISLNK(r.st_mode) else 'file')
    return 'fd' if isinstance(r, int) else r
W, R, C = os.O_CREAT | os.O_WRONLY, os.O_RDONLY, os.O_CREAT | os.O_RDONLY
CASES = [
    ('open', 'f/', W), ('open', 'new/', W), ('open', 'd/', W), ('open', 'd/', C),
    ('open', 'f/', R), ('open', 'ld/', R), ('open', 'd', C), ('open', 'd', R | os.O_TRUNC),
    ('open', 'd', os.O_RDWR), ('open', 'd', R),
    ('unlink', 'f/'), ('unlink', 'd/'), ('unlink', 'new/'), ('unlink', 'ld/'), ('unlink', 'lf/'),
    ('rmdir', 'ld/'), ('rmdir', 'd/'), ('rmdir', 'd/.'), ('rmdir', 's/deep/..'), ('rmdir', 'f/'),
    ('rename', 'f/', 'g'), ('rename', 'f', 'g/'), ('rename', 'd', 'e/'), ('rename', 'd/', 'e'),
    ('rename', 'ld/', 'e'), ('rename', 'd/.', 'e'), ('rename', 's/deep/..', 'e'),
    ('rename', 'f', 'd/.'),
    ('stat', 'f/'), ('lstat', 'ld/'), ('lstat', 'lf/'), ('lstat', 'new/'),
    ('symlink', 't', 'new/'), ('symlink', 't', 'f/'),
    ('mkdir', 'new/'), ('mkdir', 'new/.'), ('mkdir', 'd/.'),
    ('stat', 'missing/../f'), ('unlink', 'missing/../f'), ('stat', 'f/../f'),
    ('stat', 'lx/..'), ('lstat', 'lx/../deep'),
    ('chmod', 'f/', 0o600), ('truncate', 'f/', 0), ('readlink', 'ld/'), ('utime', 'f/'),
    ('listdir', 'ld/'), ('chdir', 'f/'),
]
for call, *args in CASES:
    setup()
    name = ' '.join([call] + [a for a in args if isinstance(a, str)])
    try:
        out = f'ok {answer(getattr(os, call)(*args))}'
    except OSError as e:
        out = errno.errorcode[e.errno]
    print(f'{name:28} {out:10} [{" ".join(sorted(os.listdir(".")))}]')
    os.chdir(os.environ.get('HERE', '.'))
"#;

/// Coreutils on the same kind of tree: exit status and what is left.
const SHELL_CASES: &str = r#"setup() { rm -rf ./* ; echo x > f; mkdir d; mkdir -p s/deep; ln -s d ld; ln -s s/deep lx; }
t() { setup; "$@" >/dev/null 2>&1; echo "$? $* | $(find . | sort | tr '\n' ' ')"; }
t cp f nodir/
t cp f d/
t cp f ld/
t mv f nodir/
t mv f d/
t rm -f f/
t rm -rf ld/
t rm -r d/
t touch new/
t mkdir -p a/b/
t rmdir d/
t ls f/
t ls ld/
t cat lx/../deep/../../f
t stat -L lx/..
t ln -s f new/
t cp -r d newd/
t mv d e/
t mv ld e
t mv ld/ e
t test -d ld/
t test -f f/
t cat missing/../f
"#;

/// FIFOs, sockets and devices made with `mkfifo`/`mknod` are entries with
/// their type, mode (less the umask) and device number, listed with their
/// type, found by `mkfifo`/`mkdir`/`O_EXCL` (EEXIST), changed by `chmod`,
/// renamed and removed, not truncated (EINVAL), and not opened (ENXIO: a
/// FIFO without a reader answers so on Linux too) — as on a local
/// directory. Devices need root, on SFS as locally (EPERM otherwise).
#[test]
fn fifos_sockets_and_devices_are_entries_with_their_type() {
    let cluster = Cluster::start(2);
    let out = python_then_shell_on_sfs_and_local(&cluster, SPECIAL_FILES, "");
    assert!(out.contains("fifo 0o10644 0"), "{out}");
    assert!(out.contains("open fifo nonblock wronly ENXIO"), "{out}");
}

/// The calls of [`fifos_sockets_and_devices_are_entries_with_their_type`].
const SPECIAL_FILES: &str = r#"import os, stat, errno
for n in os.listdir('.'):
    os.unlink(n) if not os.path.isdir(n) or os.path.islink(n) else os.rmdir(n)
os.umask(0o022)
os.mkfifo('fifo', 0o666)
os.mknod('chr', 0o640 | stat.S_IFCHR, os.makedev(1, 3))
os.mknod('blk', 0o600 | stat.S_IFBLK, os.makedev(8, 1))
os.mknod('sock', 0o644 | stat.S_IFSOCK)
os.mknod('reg', 0o644)
for n in sorted(os.listdir('.')):
    st = os.lstat(n)
    print(n, oct(st.st_mode), st.st_size, (os.major(st.st_rdev), os.minor(st.st_rdev)) if stat.S_ISCHR(st.st_mode) or stat.S_ISBLK(st.st_mode) else '')
print([ (e.name, e.is_file(), e.is_dir()) for e in sorted(os.scandir('.'), key=lambda e: e.name)])
for what, fn in [('mkfifo again', lambda: os.mkfifo('fifo')), ('open fifo nonblock wronly', lambda: os.open('fifo', os.O_WRONLY|os.O_NONBLOCK)),
                 ('open sock', lambda: os.open('sock', os.O_RDONLY)), ('mkdir over fifo', lambda: os.mkdir('fifo')), ('truncate fifo', lambda: os.truncate('fifo', 0)),
                 ('open excl fifo', lambda: os.open('fifo', os.O_CREAT|os.O_EXCL|os.O_WRONLY))]:
    try: fn(); print(what, 'ok')
    except OSError as e: print(what, errno.errorcode[e.errno])
os.chmod('fifo', 0o600); print(oct(os.stat('fifo').st_mode))
os.rename('fifo', 'fifo2'); os.unlink('chr'); print(sorted(os.listdir('.')))
"#;

/// The kernel limits a path *argument* (4,095 bytes and its NUL), not the
/// whole path of an entry: a relative path of 4,095 bytes works below a
/// working directory in the mount (its whole path is longer), one of
/// 4,096 is ENAMETOOLONG, and a working directory deeper than 4,096 bytes
/// still works — as on a local directory.
#[test]
fn a_path_argument_is_limited_not_the_whole_path() {
    let cluster = Cluster::start(2);
    let out = python_then_shell_on_sfs_and_local(&cluster, LONG_PATHS, "");
    assert!(out.contains("create 4095 ok"), "{out}");
    assert!(out.contains("create 4096 ENAMETOOLONG"), "{out}");
}

/// The calls of [`a_path_argument_is_limited_not_the_whole_path`].
const LONG_PATHS: &str = r#"import os, errno
def attempt(what, fn):
    try: fn(); print(what, 'ok')
    except OSError as e: print(what, errno.errorcode[e.errno])
name = 'n' * 250
depth = 0
path = ''
# a relative path of exactly 4095 bytes: directories of 251 bytes, then a file
while len(path) + 251 + 1 < 4095 - 10:
    path += name + '/'
    os.mkdir(path)
last = 'f' * (4095 - len(path))
full = path + last
print(len(full))
attempt('create 4095', lambda: open(full, 'w').write('x'))
attempt('stat 4095', lambda: os.stat(full))
attempt('create 4096', lambda: open(full + 'g', 'w'))
attempt('mkdir 4096', lambda: os.mkdir(full + 'g'))
attempt('unlink 4095', lambda: os.unlink(full))
os.chdir(path)
attempt('create below deep cwd', lambda: open('x' * 200, 'w').write('y'))
print(len(os.getcwd()) > 4000)
"#;

/// A Unix socket bound to a path inside the mount is a socket entry in SFS
/// (mode 0777 less the umask; EADDRINUSE when the name is taken), and a
/// `connect` to that path reaches it (on the same node); connecting to a
/// file is ECONNREFUSED, to a missing or unlinked name ENOENT — as on a
/// local directory.
#[test]
fn a_unix_socket_bound_inside_the_mount_is_an_sfs_entry() {
    let cluster = Cluster::start(2);
    let out = python_then_shell_on_sfs_and_local(&cluster, UNIX_SOCKETS, "");
    assert!(out.contains("b'HELLO'"), "{out}");
    assert!(out.contains("sock 0o140755"), "{out}");
}

/// The calls of [`a_unix_socket_bound_inside_the_mount_is_an_sfs_entry`].
const UNIX_SOCKETS: &str = r#"import os, socket, stat, errno, threading
def attempt(what, fn):
    try: r = fn(); print(what, 'ok')
    except OSError as e: print(what, errno.errorcode[e.errno])
os.umask(0o022)
srv = socket.socket(socket.AF_UNIX, socket.SOCK_STREAM)
srv.bind('sock'); srv.listen(1)
st = os.lstat('sock'); print('sock', oct(st.st_mode))
attempt('bind again', lambda: socket.socket(socket.AF_UNIX).bind('sock'))
def serve():
    c, _ = srv.accept(); c.sendall(c.recv(100).upper()); c.close()
t = threading.Thread(target=serve); t.start()
cl = socket.socket(socket.AF_UNIX); cl.connect(os.path.abspath('sock')); cl.sendall(b'hello'); print(cl.recv(100)); cl.close(); t.join()
open('plain', 'w').close()
attempt('connect plain', lambda: socket.socket(socket.AF_UNIX).connect('plain'))
attempt('connect missing', lambda: socket.socket(socket.AF_UNIX).connect('missing'))
os.chmod('sock', 0o700); print(oct(os.stat('sock').st_mode))
os.rename('sock', 'sock2'); os.symlink('sock2', 'lsock')
def echo(at):
    t = threading.Thread(target=serve); t.start()
    c = socket.socket(socket.AF_UNIX); c.connect(at); c.sendall(b'again'); print(at, c.recv(100)); c.close(); t.join()
echo('lsock')
os.unlink('lsock'); os.rename('sock2', 'sock')
os.unlink('sock')
attempt('connect unlinked', lambda: socket.socket(socket.AF_UNIX).connect('sock'))
print(sorted(os.listdir('.')))
"#;

/// `mkstemp` with `..` in its template goes up from where the directory
/// before it really is (after a symlink), and fails with ENOENT below a
/// missing one — as on a local directory.
#[test]
fn mkstemp_takes_dotdot_as_the_kernel_does() {
    let cluster = Cluster::start(2);
    let out = python_then_shell_on_sfs_and_local(&cluster, MKSTEMP_DOTDOT, "");
    assert!(out.contains("missing/.. ENOENT"), "{out}");
}

/// The calls of [`mkstemp_takes_dotdot_as_the_kernel_does`].
const MKSTEMP_DOTDOT: &str = r#"import os, errno, ctypes
os.makedirs('s/deep'); os.symlink('s/deep', 'lx')
libc = ctypes.CDLL(None, use_errno=True)
for d in ['lx/..', 'missing/..', 's']:
    t = ctypes.create_string_buffer((d + '/tXXXXXX').encode())
    fd = libc.mkstemp(t)
    if fd < 0: print(d, errno.errorcode[ctypes.get_errno()]); continue
    os.close(fd); print(d, 'ok', os.path.dirname(os.path.relpath(os.path.realpath(t.value.decode()))))
"#;

/// RLIMIT_FSIZE (`ulimit -f`) holds for SFS files as for local ones: a
/// write crossing the limit is cut short at it, one starting at or past it
/// raises SIGXFSZ (the shell reports the signal, status 153) or, with the
/// signal ignored, fails with EFBIG, as `truncate`/`ftruncate` past it do.
/// (Before, a process under a small limit died setting up the node-local
/// data path, whose shared memory is sized like a file.)
#[test]
fn rlimit_fsize_cuts_writes_as_the_kernel_does() {
    let cluster = Cluster::start(2);
    let out = same_on_sfs_and_local(&cluster, FSIZE_LIMIT, &[]);
    assert!(out.contains("short 2048"), "{out}");
    assert!(out.contains("head: 153"), "{out}");
}

/// The script of [`rlimit_fsize_cuts_writes_as_the_kernel_does`].
const FSIZE_LIMIT: &str = r#"cd "$1"
( ulimit -f 1; head -c 3000 /dev/zero > big ); echo "head: $?"; stat -c '%s' big
( ulimit -f 1; printf abc >> big ); echo "append: $?"; stat -c '%s' big
( ulimit -f 2; python3 -c "
import os, signal, errno
signal.signal(signal.SIGXFSZ, signal.SIG_IGN)
fd = os.open('p', os.O_CREAT | os.O_WRONLY)
print('short', os.pwrite(fd, b'x' * 3000, 0))
try: os.pwrite(fd, b'y', 2048)
except OSError as e: print('past', errno.errorcode[e.errno])
try: os.ftruncate(fd, 5000)
except OSError as e: print('ftruncate', errno.errorcode[e.errno])
try: os.truncate('p', 5000)
except OSError as e: print('truncate', errno.errorcode[e.errno])
os.ftruncate(fd, 100); print(os.fstat(fd).st_size)
" ); echo "python: $?"
"#;

/// Hard links through the shim as on a local directory: `ln`, `link(2)`
/// and `linkat(2)` (with `AT_SYMLINK_FOLLOW`, and `AT_EMPTY_PATH` giving an
/// `O_TMPFILE` file its name), `st_nlink` going up and down, data and
/// attributes shared between names, rename between two names of one file
/// (nothing happens), tar and cp -a keeping links, errors (EEXIST, EPERM
/// for a directory, ENOENT), and `pathconf(_PC_LINK_MAX)`.
#[test]
fn hard_links_behave_as_on_a_local_directory() {
    let cluster = Cluster::start(3);
    let out = python_then_shell_on_sfs_and_local(&cluster, HARD_LINKS, HARD_LINKS_SHELL);
    assert!(out.contains("nlink after link 2 2"), "{out}");
    assert!(out.contains("tar kept the link: yes"), "{out}");
    assert!(out.contains("tmpfile named: b'unnamed' 1"), "{out}");
}

/// The calls of [`hard_links_behave_as_on_a_local_directory`].
const HARD_LINKS: &str = r#"import os, errno, ctypes
libc = ctypes.CDLL(None, use_errno=True)
def attempt(what, fn):
    try: fn(); print(what, 'ok')
    except OSError as e: print(what, errno.errorcode[e.errno])
os.mkdir('d'); os.mkdir('e')
open('d/a', 'w').write('hello')
os.link('d/a', 'e/b')
print('nlink after link', os.stat('d/a').st_nlink, os.stat('e/b').st_nlink)
print('same file', os.path.samefile('d/a', 'e/b'))
with open('e/b', 'a') as f: f.write(' world')
print(open('d/a').read(), os.stat('d/a').st_size)
os.chmod('e/b', 0o640); print(oct(os.stat('d/a').st_mode & 0o777))
os.truncate('d/a', 4); print(open('e/b').read())
attempt('link onto existing', lambda: os.link('d/a', 'e/b'))
attempt('link a directory', lambda: os.link('d', 'dd'))
attempt('link a missing file', lambda: os.link('none', 'x'))
attempt('link into a missing dir', lambda: os.link('d/a', 'none/x'))
os.rename('d/a', 'e/b'); print('rename between names', sorted(os.listdir('d')), sorted(os.listdir('e')))
os.link('e/b', 'c'); print('three', os.stat('c').st_nlink)
os.unlink('d/a'); print('after unlink', os.stat('c').st_nlink, open('c').read())
os.symlink('c', 'sl')
os.link('sl', 'sl2', follow_symlinks=False); print('symlink named', os.lstat('sl2').st_nlink, os.readlink('sl2'))
os.link('sl', 'c2', follow_symlinks=True); print('followed', os.lstat('c2').st_nlink, os.path.islink('c2'))
fd = os.open('.', os.O_TMPFILE | os.O_WRONLY, 0o600)
os.write(fd, b'unnamed')
AT_EMPTY_PATH, AT_FDCWD = 0x1000, -100
rc = libc.linkat(fd, b'', AT_FDCWD, b'tmp-named', AT_EMPTY_PATH)
print('linkat empty path', rc, os.strerror(ctypes.get_errno()) if rc else '')
os.close(fd)
print('tmpfile named:', open('tmp-named', 'rb').read(), os.stat('tmp-named').st_nlink)
print('link max', os.pathconf('c', 'PC_LINK_MAX') >= 65000)
"#;

/// The shell half of [`HARD_LINKS`]: tar and cp -a keep hard links.
const HARD_LINKS_SHELL: &str = r#"set -e
mkdir t; echo data > t/x; ln t/x t/y
tar cf t.tar t; mkdir u; tar xf t.tar -C u
[ u/t/x -ef u/t/y ] && echo "tar kept the link: yes" || echo "tar kept the link: no"
cp -a t v; [ v/x -ef v/y ] && echo "cp -a kept the link: yes" || echo "cp -a kept the link: no"
stat -c '%h %s %A' u/t/x v/y
rm u/t/x; stat -c '%h' u/t/y; cat u/t/y
ls -A | sort | tr '\n' ' '; echo
"#;

/// Extended attributes (`user.*`, root's `trusted.*`, `security.*`) as on
/// a local directory: set, get, list, remove with their flags and errors
/// (EEXIST, ENODATA, ERANGE, E2BIG, EOPNOTSUPP outside the namespaces,
/// EPERM for `user.*` of a symlink), the `l` and `f` forms, ctime, a
/// rename and a hard link keeping them, a user other than root (EACCES
/// without permission, `trusted.*` hidden), and the tools: setfattr,
/// getfattr, `cp --preserve=xattr`, `cp -a` and `rsync -X`.
#[test]
fn extended_attributes_behave_as_on_a_local_directory() {
    let cluster = Cluster::start(3);
    let out = python_then_shell_on_sfs_and_local(&cluster, XATTRS, XATTRS_SHELL);
    assert!(
        out.contains("listed ['trusted.t', 'user.a', 'user.b']"),
        "{out}"
    );
    assert!(
        out.contains("other user sees ['security.s', 'user.a', 'user.b']"),
        "{out}"
    );
    assert!(out.contains("# file: c/f\nuser.tool=\"yes\""), "{out}");
    assert!(out.contains("rsync kept: user.tool=\"yes\""), "{out}");
}

/// The calls of [`extended_attributes_behave_as_on_a_local_directory`].
const XATTRS: &str = r#"import os, errno, time
def attempt(what, fn):
    try: r = fn(); print(what, 'ok', r if r is not None else '')
    except OSError as e: print(what, errno.errorcode[e.errno])
open('f', 'w').write('x'); os.mkdir('d'); os.symlink('f', 'sl')
c0 = os.stat('f').st_ctime_ns; time.sleep(0.02)
os.setxattr('f', 'user.a', b'1')
print('ctime changed', os.stat('f').st_ctime_ns > c0)
os.setxattr('f', 'user.b', bytes(range(256)))
os.setxattr('f', 'trusted.t', b'')
print('listed', sorted(os.listxattr('f')))
print('binary kept', os.getxattr('f', 'user.b') == bytes(range(256)))
print('empty value', os.getxattr('f', 'trusted.t'))
attempt('create existing', lambda: os.setxattr('f', 'user.a', b'2', os.XATTR_CREATE))
attempt('replace missing', lambda: os.setxattr('f', 'user.c', b'2', os.XATTR_REPLACE))
attempt('replace existing', lambda: os.setxattr('f', 'user.a', b'22', os.XATTR_REPLACE))
attempt('get missing', lambda: os.getxattr('f', 'user.c'))
attempt('remove missing', lambda: os.removexattr('f', 'user.c'))
attempt('name too long', lambda: os.setxattr('f', 'user.' + 'n' * 251, b''))
attempt('empty name', lambda: os.setxattr('f', '', b''))
attempt('value too large', lambda: os.setxattr('f', 'user.big', b'v' * 65537))
attempt('no namespace', lambda: os.setxattr('f', 'color', b'1'))
attempt('unknown namespace', lambda: os.setxattr('f', 'other.x', b'1'))
attempt('get unknown namespace', lambda: os.getxattr('f', 'other.x'))
attempt('through symlink', lambda: os.getxattr('sl', 'user.a'))
attempt('symlink itself', lambda: os.setxattr('sl', 'user.a', b'1', follow_symlinks=False))
attempt('list symlink itself', lambda: os.listxattr('sl', follow_symlinks=False))
attempt('security', lambda: os.setxattr('f', 'security.s', b'1'))
attempt('on a directory', lambda: os.setxattr('d', 'user.d', b'dir'))
print('directory lists', os.listxattr('d'))
attempt('missing file', lambda: os.getxattr('none', 'user.a'))
fd = os.open('f', os.O_RDONLY)
os.setxattr(fd, 'user.fd', b'by descriptor'); print('fd get', os.getxattr(fd, 'user.fd'))
os.removexattr(fd, 'user.fd'); print('fd list', sorted(os.listxattr(fd)))
os.close(fd)
buf_len = len(b'\0'.join(n.encode() for n in os.listxattr('f'))) + 1
import ctypes
libc = ctypes.CDLL(None, use_errno=True)
print('size query', libc.listxattr(b'f', None, 0) == buf_len, libc.getxattr(b'f', b'user.a', None, 0))
small = ctypes.create_string_buffer(1)
rc = libc.getxattr(b'f', b'user.a', small, 1); print('small buffer', rc, errno.errorcode[ctypes.get_errno()])
os.rename('f', 'g'); print('renamed', os.getxattr('g', 'user.a'))
os.link('g', 'h'); os.setxattr('h', 'user.linked', b'y')
print('linked', os.getxattr('g', 'user.linked'), sorted(os.listxattr('g')) == sorted(os.listxattr('h')))
os.removexattr('g', 'user.linked'); print('removed through the other name', 'user.linked' in os.listxattr('h'))
open('private', 'w').write('p'); os.chmod('private', 0o600); os.setxattr('private', 'user.p', b'1')
os.chmod('g', 0o644)
pid = os.fork()
if pid == 0:
    os.setgid(65534); os.setuid(65534)
    print('other user sees', sorted(os.listxattr('g')))
    attempt('other user reads', lambda: os.getxattr('g', 'user.a'))
    attempt('other user writes', lambda: os.setxattr('g', 'user.a', b'3'))
    attempt('other user reads private', lambda: os.getxattr('private', 'user.p'))
    attempt('other user reads trusted', lambda: os.getxattr('g', 'trusted.t'))
    attempt('other user sets trusted', lambda: os.setxattr('g', 'trusted.u', b''))
    attempt('other user reads security', lambda: os.getxattr('g', 'security.s'))
    os._exit(0)
os.waitpid(pid, 0)
"#;

/// The shell half of [`XATTRS`]: the attr tools, cp and rsync.
const XATTRS_SHELL: &str = r#"set -e
mkdir c; echo data > c/f
setfattr -n user.tool -v yes c/f
getfattr -d c/f
getfattr -n user.tool --only-values c/f; echo
setfattr -x user.tool c/f; getfattr -d c/f 2>&1 | wc -l
setfattr -n user.tool -v yes c/f
cp --preserve=xattr c/f c/g; getfattr -n user.tool --only-values c/g; echo
cp -a c e; getfattr -n user.tool --only-values e/f; echo
rsync -aX c/ r/; echo "rsync kept: $(getfattr -d r/f 2>/dev/null | grep user.tool)"
cp c/f c/plain; getfattr -d c/plain | wc -l
"#;

/// Names are bytes: a file, directory or symlink target that is not
/// UTF-8 (Latin-1 names from an old archive, a stray `\xff`) is made,
/// listed, read back, renamed, archived and resolved through `getcwd` and
/// `realpath` as on a local directory — and stays in SFS rather than
/// landing in the host directory the program was started from.
#[test]
fn names_that_are_not_utf8_are_kept_as_bytes_inside_the_mount() {
    let cluster = Cluster::start(3);
    let out = python_then_shell_on_sfs_and_local(&cluster, NOT_UTF8, NOT_UTF8_SHELL);
    assert!(
        out.contains("listed [b'caf\\xe9', b'd\\xff', b'ln\\xfe']"),
        "{out}"
    );
    assert!(out.contains("tar listed: 2"), "{out}");
    assert_nothing_leaked();
}

/// The calls of [`names_that_are_not_utf8_are_kept_as_bytes_inside_the_mount`].
const NOT_UTF8: &str = r#"import os, errno
open(b'caf\xe9', 'wb').write(b'latin1')
os.mkdir(b'd\xff')
open(b'd\xff/in\x80side', 'w').write('inside')
os.symlink(b'tar\xfeget', b'ln\xfe')
print('listed', sorted(os.listdir(b'.')))
print('inner', os.listdir(b'd\xff'), 'link', os.readlink(b'ln\xfe'))
os.chdir(b'd\xff'); print('cwd', os.getcwdb()[-2:], open(b'in\x80side').read()); os.chdir('..')
print('realpath', os.path.realpath(b'd\xff/in\x80side')[-9:])
os.rename(b'caf\xe9', b'caf\xe8'); print('renamed', open(b'caf\xe8', 'rb').read())
odd = 'x\U0010ff80'.encode()
open(odd, 'w').write('odd'); print('odd name', odd in os.listdir(b'.'), os.path.exists(b'x\x80'))
open(b'\xff' * 255, 'w').close(); print('255 bytes ok')
try: open(b'\xfe' * 256, 'w')
except OSError as e: print('256 bytes', errno.errorcode[e.errno])
st = os.stat(b'caf\xe8'); print('stat', st.st_size)
for n in [b'caf\xe8', odd, b'\xff' * 255]: os.unlink(n)
os.unlink(b'ln\xfe')
"#;

/// The shell half of [`NOT_UTF8`]: bash, coreutils and tar.
const NOT_UTF8_SHELL: &str = r#"set -e
export LC_ALL=C
touch "$(printf 'sh\xe9ll')"; ls | od -c | head -3
mv "$(printf 'sh\xe9ll')" "$(printf 'm\xf6ved')"; ls -b
tar cf ../t.tar "$(printf 'd\xff')"; echo "tar listed: $(tar tf ../t.tar | wc -l)"
mkdir x; tar xf ../t.tar -C x; ls -b x "x/$(printf 'd\xff')"; rm ../t.tar
find . | LC_ALL=C sort | od -c | tail -4
"#;

/// System calls made by number through `syscall(2)` (`faccessat2`, which
/// glibc 2.36 has no function for; `utime`; `openat` with `O_CREAT`;
/// `statx`, `getcwd`, `read` on an SFS descriptor, ...) act on SFS as the
/// C library's functions do, as on a local directory: none reaches the
/// kernel with a path inside the mount, none leaves a file on the host.
#[test]
fn system_calls_by_number_reach_sfs() {
    let cluster = Cluster::start(3);
    let out = python_then_shell_on_sfs_and_local(&cluster, BY_NUMBER, "");
    assert!(out.contains("faccessat2 f 0 0"), "{out}");
    assert!(out.contains("openat created 0 b'made by number'"), "{out}");
    assert!(out.contains("utime 0 1000000000"), "{out}");
    assert_nothing_leaked();
}

/// The calls of [`system_calls_by_number_reach_sfs`] (x86_64 numbers).
const BY_NUMBER: &str = r#"import os, ctypes, platform, errno
assert platform.machine() == 'x86_64', platform.machine()
libc = ctypes.CDLL(None, use_errno=True)
sc = libc.syscall
sc.restype = ctypes.c_long
L = ctypes.c_long
AT = L(-100)
def call(what, n, *args):
    r = sc(L(n), *args)
    e = ctypes.get_errno() if r < 0 else 0
    return r, (errno.errorcode.get(e, e) if e else 0)
open('f', 'w').write('data')
os.mkdir('d')
print('faccessat2 f', *call('faccessat2', 439, AT, b'f', L(os.R_OK), L(0)))
print('faccessat2 missing', *call('faccessat2', 439, AT, b'none', L(os.F_OK), L(0)))
print('access', *call('access', 21, b'd', L(os.X_OK)))
fd, e = call('openat', 257, AT, b'd/new', L(os.O_CREAT | os.O_WRONLY | os.O_EXCL), L(0o640))
print('openat created', 0 if fd >= 0 else e, end=' ')
buf = b'made by number'
call('write', 1, L(fd), buf, L(len(buf))); call('close', 3, L(fd))
print(open('d/new', 'rb').read())
print('mode', oct(os.stat('d/new').st_mode & 0o777))
class utimbuf(ctypes.Structure): _fields_ = [('actime', ctypes.c_long), ('modtime', ctypes.c_long)]
r = call('utime', 132, b'f', ctypes.byref(utimbuf(1000000000, 1000000000)))
print('utime', r[0], int(os.stat('f').st_mtime))
st = ctypes.create_string_buffer(144)
print('newfstatat', call('newfstatat', 262, AT, b'd/new', st, L(0))[0], int.from_bytes(st.raw[48:56], 'little'))
sx = ctypes.create_string_buffer(256)
print('statx', call('statx', 332, AT, b'f', L(0), L(0xfff), sx)[0], int.from_bytes(sx.raw[40:48], 'little'))
print('mkdirat', *call('mkdirat', 258, AT, b'd/sub', L(0o755)), os.path.isdir('d/sub'))
print('renameat2', *call('renameat2', 316, AT, b'd/new', AT, b'd/renamed', L(0)), sorted(os.listdir('d')))
fd = os.open('f', os.O_RDONLY)
rb = ctypes.create_string_buffer(16)
print('read', call('read', 0, L(fd), rb, L(16))[0], rb.value)
print('lseek', call('lseek', 8, L(fd), L(1), L(0))[0], call('read', 0, L(fd), rb, L(16))[0], rb.value[:3])
os.close(fd)
os.chdir('d')
cb = ctypes.create_string_buffer(4096)
n, e = call('getcwd', 79, cb, L(4096))
print('getcwd', n == len(cb.value) + 1, cb.value.endswith(b'/d'))
os.chdir('..')
print('symlink', *call('symlinkat', 266, b'f', AT, b'lnk'), os.readlink('lnk'))
rl = ctypes.create_string_buffer(64)
print('readlinkat', call('readlinkat', 267, AT, b'lnk', rl, L(64))[0], rl.value)
print('fchmodat', *call('fchmodat', 268, AT, b'f', L(0o600)), oct(os.stat('f').st_mode & 0o777))
print('unlinkat', *call('unlinkat', 263, AT, b'lnk', L(0)), os.path.lexists('lnk'))
print('unlinkat dir', *call('unlinkat', 263, AT, b'd/sub', L(0x200)), os.path.exists('d/sub'))
print('truncate', *call('truncate', 76, b'f', L(2)), os.stat('f').st_size)
print('getpid passes', call('getpid', 39)[0] == os.getpid())
"#;

/// No name that only a program under the shim made appeared in the
/// directory `sfs exec` started it from (this test's working directory):
/// names that are not UTF-8, or those the scripts here make.
fn assert_nothing_leaked() {
    let here = std::env::current_dir().unwrap();
    let leaked: Vec<_> = std::fs::read_dir(&here)
        .unwrap()
        .flatten()
        .map(|e| e.file_name())
        .filter(|n| n.to_str().is_none_or(|n| ["f", "d", "lnk"].contains(&n)))
        .collect();
    assert!(
        leaked.is_empty(),
        "names leaked into {}: {leaked:?}",
        here.display()
    );
}

/// A shared writable mapping writes back only the bytes the program
/// stored: a `pwrite` made after the `mmap`, in another page or beside a
/// store in the same page, survives `msync` and `munmap`, and a mapping
/// never stored to changes nothing — as on a local directory (where the
/// mapping is the page cache itself).
#[test]
fn a_shared_mapping_writes_back_only_what_was_stored() {
    let cluster = Cluster::start(3);
    let out = python_then_shell_on_sfs_and_local(&cluster, MMAP_STORES, "");
    assert!(out.contains("untouched mapping kept b'PW'"), "{out}");
    assert!(out.contains("stored kept b'PW' b'Q' b'XYZ'"), "{out}");
}

/// The calls of [`a_shared_mapping_writes_back_only_what_was_stored`].
const MMAP_STORES: &str = r#"import mmap, os
open('m', 'wb').write(b'a' * 3 * 4096)
fd = os.open('m', os.O_RDWR)
mm = mmap.mmap(fd, 3 * 4096, mmap.MAP_SHARED, mmap.PROT_READ | mmap.PROT_WRITE)
os.pwrite(fd, b'PW', 100)
mm.close()
print('untouched mapping kept', open('m', 'rb').read()[100:102])
mm = mmap.mmap(fd, 3 * 4096, mmap.MAP_SHARED, mmap.PROT_READ | mmap.PROT_WRITE)
os.pwrite(fd, b'PW', 200)
mm[210:211] = b'Q'
mm[5000:5003] = b'XYZ'
mm.flush()
os.pwrite(fd, b'late', 9000)
mm[8200:8201] = b'R'
mm.close()
data = open('m', 'rb').read()
print('stored kept', data[200:202], data[210:211], data[5000:5003], data[9000:9004], data[8200:8201])
print('length', len(data), data.count(b'a'))
os.close(fd)
"#;

/// `..` after a symlink in a program's path (execve) and in a symlink's
/// target that `realpath` follows is taken from where the symlink leads,
/// as the kernel takes it (lexically it would name another file).
#[test]
fn exec_and_realpath_take_dotdot_after_a_symlink_as_the_kernel_does() {
    let cluster = Cluster::start(2);
    let out = python_then_shell_on_sfs_and_local(&cluster, DOTDOT_PROGRAMS, DOTDOT_SHELL);
    assert!(out.contains("realpath tf ok a/f"), "{out}");
    assert!(out.contains("ran a/run.sh"), "{out}");
}

/// The calls of [`exec_and_realpath_take_dotdot_after_a_symlink_as_the_kernel_does`].
const DOTDOT_PROGRAMS: &str = r#"import os, ctypes, errno, subprocess
os.makedirs('a/b'); os.symlink('a/b', 'lb')
open('a/f', 'w').write('x')
open('a/run.sh', 'w').write('#!/bin/sh\necho ran a/run.sh\n'); os.chmod('a/run.sh', 0o755)
os.symlink('lb/../f', 'tf'); os.symlink('lb/../../none', 'tn')
libc = ctypes.CDLL(None, use_errno=True)
libc.realpath.restype = ctypes.c_char_p
here = os.getcwd()
for name in ['tf', 'tn', 'lb/..', 'lb/../f']:
    r = libc.realpath(name.encode(), None)
    if r:
        print('realpath', name, 'ok', os.path.relpath(r.decode(), here))
    else:
        print('realpath', name, errno.errorcode[ctypes.get_errno()])
print(subprocess.run(['lb/../run.sh'], capture_output=True, text=True).stdout.strip())
try: subprocess.run(['lb/../../missing/../run.sh'])
except OSError as e: print('exec missing', errno.errorcode[e.errno])
"#;

/// The shell half of [`DOTDOT_PROGRAMS`].
const DOTDOT_SHELL: &str = r#"lb/../run.sh
./lb/../run.sh
"#;

/// A directory's mtime and ctime advance when an entry is created, linked,
/// renamed or removed in it, and a rename changes the ctime of what moves —
/// seen by the process that made the change and by the next process (the
/// first sends its waiting directory times at exit), as on a local
/// directory.
#[test]
fn directory_times_follow_their_entries_as_on_a_local_directory() {
    let cluster = Cluster::start(3);
    let out = python_then_shell_on_sfs_and_local(&cluster, DIR_TIMES, DIR_TIMES_SHELL);
    assert!(out.contains("create parent changed True\n"), "{out}");
    assert!(out.contains("rename parent changed True True"), "{out}");
    assert!(out.contains("write parent changed False"), "{out}");
    assert!(out.contains("rename moved ctime changed True"), "{out}");
    assert!(out.contains("next process: True"), "{out}");
}

/// The calls of [`directory_times_follow_their_entries_as_on_a_local_directory`].
const DIR_TIMES: &str = r#"import os, time
os.mkdir('d'); os.mkdir('e')
def times(p):
    st = os.stat(p)
    return st.st_mtime_ns, st.st_ctime_ns
def check(what, op, dirs=('d',)):
    before = [times(d) for d in dirs]
    time.sleep(0.02)
    op()
    after = [times(d) for d in dirs]
    print(what, 'parent changed', *[a[0] > b[0] and a[1] > b[1] for a, b in zip(after, before)])
check('create', lambda: open('d/f', 'w').close())
check('open existing', lambda: open('d/f', 'w').close())
check('mkdir', lambda: os.mkdir('d/sub'))
check('symlink', lambda: os.symlink('f', 'd/l'))
check('mkfifo', lambda: os.mkfifo('d/p'))
check('link', lambda: os.link('d/f', 'd/h'))
check('rename', lambda: os.rename('d/h', 'e/h'), ('d', 'e'))
check('unlink', lambda: os.unlink('e/h'), ('e',))
check('rmdir', lambda: os.rmdir('d/sub'))
check('write', lambda: open('d/f', 'a').write('x'))
before = os.stat('d/f').st_ctime_ns
time.sleep(0.02)
os.rename('d/f', 'd/g')
print('rename moved ctime changed', os.stat('d/g').st_ctime_ns > before)
open('stamp', 'w').write(str(os.stat('e').st_mtime_ns))
time.sleep(0.02)
open('e/last', 'w').close()
"#;

/// The shell half of [`DIR_TIMES`]: a new process sees the last create of
/// the one before.
const DIR_TIMES_SHELL: &str = r#"python3 -c "import os; print('next process:', os.stat('e').st_mtime_ns > int(open('stamp').read()))"
"#;
