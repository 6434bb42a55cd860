//! Every file-API symbol the system's C library exports is either hooked by
//! the shim (defined by the preload library, `libsfs_preload.so`) or listed
//! here as deliberately passed through, with the reason. A new glibc name
//! (`preadv64v2` was one: Debian's python3 calls it for `os.preadv`) then
//! fails this test instead of silently reaching the kernel with a mount
//! path or an SFS descriptor.

mod common;
mod shim_support;

use std::collections::BTreeSet;
use std::path::{Path, PathBuf};
use std::process::Command;

/// The file API, by base name: a libc symbol belongs to it when its name,
/// without leading underscores, a `libc_` prefix, and the `_chk`, `_2`,
/// `64` variant markers, is one of these.
const FILE_API: &[&str] = &[
    // open and close
    "open",
    "openat",
    "creat",
    "close",
    "close_range",
    "closefrom",
    "fopen",
    "fdopen",
    "freopen",
    "tmpfile",
    "mkstemp",
    "mkostemp",
    "mkstemps",
    "mkostemps",
    "mkdtemp",
    "name_to_handle_at",
    "open_by_handle_at",
    "open_tree",
    // data
    "read",
    "write",
    "pread",
    "pwrite",
    "readv",
    "writev",
    "preadv",
    "pwritev",
    "preadv2",
    "pwritev2",
    "lseek",
    "sendfile",
    "copy_file_range",
    "splice",
    "tee",
    "readahead",
    "posix_fadvise",
    "fallocate",
    "posix_fallocate",
    "truncate",
    "ftruncate",
    "mmap",
    "munmap",
    "msync",
    // durability
    "fsync",
    "fdatasync",
    "syncfs",
    "sync",
    "sync_file_range",
    // attributes
    "stat",
    "lstat",
    "fstat",
    "fstatat",
    "statx",
    "xstat",
    "lxstat",
    "fxstat",
    "fxstatat",
    "access",
    "faccessat",
    "euidaccess",
    "eaccess",
    "chmod",
    "fchmod",
    "fchmodat",
    "lchmod",
    "chown",
    "fchown",
    "lchown",
    "fchownat",
    "utime",
    "utimes",
    "lutimes",
    "futimes",
    "futimesat",
    "utimensat",
    "futimens",
    "statfs",
    "fstatfs",
    "statvfs",
    "fstatvfs",
    "pathconf",
    "fpathconf",
    // extended attributes
    "getxattr",
    "lgetxattr",
    "fgetxattr",
    "setxattr",
    "lsetxattr",
    "fsetxattr",
    "listxattr",
    "llistxattr",
    "flistxattr",
    "removexattr",
    "lremovexattr",
    "fremovexattr",
    // names
    "mkdir",
    "mkdirat",
    "rmdir",
    "unlink",
    "unlinkat",
    "remove",
    "rename",
    "renameat",
    "renameat2",
    "link",
    "linkat",
    "symlink",
    "symlinkat",
    "readlink",
    "readlinkat",
    "mknod",
    "mknodat",
    "xmknod",
    "xmknodat",
    "mkfifo",
    "mkfifoat",
    "realpath",
    "canonicalize_file_name",
    // directories and the working directory
    "opendir",
    "fdopendir",
    "readdir",
    "readdir_r",
    "closedir",
    "rewinddir",
    "seekdir",
    "telldir",
    "dirfd",
    "scandir",
    "scandirat",
    "getdents",
    "chdir",
    "fchdir",
    "getcwd",
    "getwd",
    "get_current_dir_name",
    "chroot",
    "glob",
    "ftw",
    "nftw",
    "fts_open",
    // descriptors
    "dup",
    "dup2",
    "dup3",
    "fcntl",
    "ioctl",
    "flock",
    "lockf",
    // programs
    "execve",
    "execv",
    "execvp",
    "execvpe",
    "execveat",
    "fexecve",
    "execl",
    "execle",
    "execlp",
    "posix_spawn",
    "posix_spawnp",
    // a system call by number (entry.c routes those naming a path or a
    // descriptor into the hooks)
    "syscall",
];

/// File-API symbols the shim leaves to the C library, and why.
const PASSED_THROUGH: &[(&str, &str)] = &[
    ("sync", "takes no path or descriptor: it syncs the kernel's file systems; SFS data is made durable per file (fsync, fdatasync) or per instance (syncfs on an SFS descriptor)"),
    ("tee", "works on pipes only: on an SFS descriptor the kernel answers EINVAL, as for a regular file"),
    ("tmpfile", "creates its file in P_tmpdir (/tmp) and ignores TMPDIR, so it never touches the mount"),
    ("tmpfile64", "as tmpfile"),
    ("open_by_handle_at", "takes a handle, which only name_to_handle_at makes, and that refuses SFS paths (EOPNOTSUPP)"),
    ("open_tree", "the kernel's mount API: it acts on kernel mounts, and SFS is not one (an SFS path is ENOENT to it)"),
    ("chroot", "a root inside the mount cannot work (the kernel cannot walk SFS); the kernel answers ENOENT for an SFS path"),
    ("ftw", "GAP (docs/shim.md, Known gaps): glibc walks with internal calls no hook sees; on an SFS path it reports ENOENT"),
    ("ftw64", "GAP: as ftw"),
    ("nftw", "GAP: as ftw"),
    ("nftw64", "GAP: as ftw"),
    ("fts_open", "GAP: as ftw (coreutils and findutils carry their own fts, which works)"),
    ("fts64_open", "GAP: as fts_open"),
];

/// Reduces a symbol to its base name (see [`FILE_API`]).
fn base_name(symbol: &str) -> String {
    let mut name = symbol.trim_start_matches('_');
    name = name.strip_prefix("libc_").unwrap_or(name);
    let mut name = name
        .replace("64v2", "2")
        .replace("64_r", "_r")
        .replace("fts64_", "fts_");
    for suffix in ["_chk", "_2"] {
        if let Some(stripped) = name.strip_suffix(suffix) {
            name = stripped.to_string();
        }
    }
    if let Some(stripped) = name.strip_suffix("64") {
        name = stripped.to_string();
    }
    name
}

/// `(name, version)` of every symbol `library` defines and exports.
fn exported(library: &Path) -> Vec<(String, String)> {
    let out = Command::new("nm")
        .args(["-D", "--defined-only"])
        .arg(library)
        .output()
        .expect("running nm (binutils)");
    assert!(out.status.success(), "nm {} failed", library.display());
    String::from_utf8_lossy(&out.stdout)
        .lines()
        .filter_map(|line| {
            let symbol = line.split_whitespace().nth(2)?;
            let (name, version) = symbol.split_once('@').unwrap_or((symbol, ""));
            Some((
                name.to_string(),
                version.trim_start_matches('@').to_string(),
            ))
        })
        .collect()
}

/// The C library the system's programs load (from `ldd /bin/sh`).
fn system_libc() -> PathBuf {
    let out = Command::new("ldd")
        .arg("/bin/sh")
        .output()
        .expect("running ldd");
    String::from_utf8_lossy(&out.stdout)
        .lines()
        .find_map(|line| {
            let (name, rest) = line.trim().split_once(" => ")?;
            let path = rest.split_whitespace().next()?;
            name.starts_with("libc.so").then(|| PathBuf::from(path))
        })
        .expect("ldd /bin/sh names libc.so")
}

#[test]
fn every_file_api_symbol_of_libc_is_hooked_or_listed_with_a_reason() {
    let libc = system_libc();
    let file_api: BTreeSet<String> = exported(&libc)
        .into_iter()
        // GLIBC_PRIVATE names are glibc's own; no program links them.
        .filter(|(_, version)| version != "GLIBC_PRIVATE")
        .map(|(name, _)| name)
        .filter(|name| FILE_API.contains(&base_name(name).as_str()))
        .collect();
    assert!(
        file_api.contains("open64") && file_api.contains("__read_chk"),
        "the file API of {} was not recognised: {file_api:?}",
        libc.display()
    );
    let preload = &sfs_testkit::artifacts().preload;
    let hooked: BTreeSet<String> = exported(preload)
        .into_iter()
        .map(|(name, _)| name)
        .collect();
    let listed: BTreeSet<String> = PASSED_THROUGH
        .iter()
        .map(|(name, _)| name.to_string())
        .collect();
    let unhandled: Vec<&String> = file_api
        .iter()
        .filter(|name| !hooked.contains(*name) && !listed.contains(*name))
        .collect();
    assert!(
        unhandled.is_empty(),
        "{} exports file-API symbols that {} neither hooks nor lists in PASSED_THROUGH: {unhandled:?}",
        libc.display(),
        preload.display()
    );
    let stale: Vec<&String> = listed.iter().filter(|n| hooked.contains(*n)).collect();
    assert!(
        stale.is_empty(),
        "PASSED_THROUGH names symbols the shim hooks: {stale:?}"
    );
}

#[test]
fn base_names_strip_the_variant_markers() {
    for (symbol, base) in [
        ("open64", "open"),
        ("__open64_2", "open"),
        ("__read_chk", "read"),
        ("preadv64v2", "preadv2"),
        ("__xstat64", "xstat"),
        ("__libc_pread", "pread"),
        ("readdir64_r", "readdir_r"),
        ("fts64_open", "fts_open"),
    ] {
        assert_eq!(base_name(symbol), base, "{symbol}");
    }
}

/// The names hooked because of the check above work on SFS: fortified
/// `getcwd`/`readlink`/`realpath` (what `-O2 -D_FORTIFY_SOURCE=2` compiles
/// them into), `preadv64v2`/`pwritev64v2` (from C with 64-bit offsets and
/// from Python's `os.preadv`), `glob`, `scandirat`, `remove`, `pathconf`,
/// `readahead` and `sync_file_range`.
#[test]
fn newly_hooked_names_work_on_sfs() {
    let cluster = common::Cluster::start(1);
    let dir = tempfile::tempdir().unwrap();
    let source = dir.path().join("probe.c");
    std::fs::write(&source, PROBE).unwrap();
    let binary = dir.path().join("probe");
    let built = Command::new("gcc")
        .args([
            "-O2",
            "-D_FORTIFY_SOURCE=2",
            "-D_FILE_OFFSET_BITS=64",
            "-Wall",
            "-o",
        ])
        .arg(&binary)
        .arg(&source)
        .output()
        .expect("running gcc");
    shim_support::assert_ok("gcc", &built);
    let nm = Command::new("nm").arg("-D").arg(&binary).output().unwrap();
    let imports = String::from_utf8_lossy(&nm.stdout);
    for fortified in [
        "__getcwd_chk",
        "__readlink_chk",
        "__realpath_chk",
        "preadv64v2",
    ] {
        assert!(
            imports.contains(fortified),
            "probe does not call {fortified}"
        );
    }
    let mount = &cluster.config.mountdir;
    let out = shim_support::under_shim(
        &cluster,
        r#"mkdir "$2/d" && "$1" "$2/d" && python3 -c '
import os, sys
fd = os.open(sys.argv[1] + "/d/py", os.O_CREAT | os.O_RDWR)
print("pwritev", os.pwritev(fd, [b"abc", b"def"], 0))
buf = [bytearray(2), bytearray(4)]
print("preadv", os.preadv(fd, buf, 0), bytes(buf[0] + buf[1]).decode())
' "$2""#,
        &[&binary.display().to_string(), mount],
    );
    shim_support::assert_ok("probe", &out);
    assert_eq!(
        shim_support::text(&out.stdout),
        "cwd sfs\nreadlink f\nrealpath sfs f\npwritev 6\npreadv 6 hello!\nglob 2 f l\n\
         scandirat 4\nremove 0 0\npathconf 255\nreadahead 0\nsync_file_range 0\n\
         pwritev 6\npreadv 6 abcdef\n"
    );
}

const PROBE: &str = r#"
#define _GNU_SOURCE
#include <dirent.h>
#include <fcntl.h>
#include <glob.h>
#include <limits.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/stat.h>
#include <sys/uio.h>
#include <unistd.h>

int main(int argc, char **argv) {
    const char *d = argv[1];
    if (chdir(d) != 0) { perror("chdir"); return 1; }
    /* Sizes known only at run time: the fortified calls check them. */
    size_t room = (size_t)argc * 200;
    char cwd[512];
    if (!getcwd(cwd, room)) { perror("getcwd"); return 1; }
    printf("cwd %s\n", strcmp(cwd, d) == 0 ? "sfs" : cwd);
    int fd = open("f", O_CREAT | O_RDWR, 0644);
    if (fd < 0 || symlink("f", "l") != 0) { perror("create"); return 1; }
    char link[64];
    ssize_t n = readlink("l", link, room / 8);
    printf("readlink %.*s\n", (int)(n < 0 ? 0 : n), link);
    char real[PATH_MAX];
    char *r = realpath("l", real);
    printf("realpath %s %s\n", r && strncmp(real, d, strlen(d)) == 0 ? "sfs" : "host",
           r ? strrchr(real, '/') + 1 : "?");
    struct iovec out[2] = {{"hel", 3}, {"lo!", 3}};
    printf("pwritev %zd\n", pwritev2(fd, out, 2, 0, 0));
    char a[2], b[4];
    struct iovec in[2] = {{a, 2}, {b, 4}};
    printf("preadv %zd %.2s%.4s\n", preadv2(fd, in, 2, 0, 0), a, b);
    glob_t g;
    int rc = glob("*", 0, NULL, &g);
    printf("glob %zu", rc == 0 ? g.gl_pathc : 0);
    for (size_t i = 0; rc == 0 && i < g.gl_pathc; i++) printf(" %s", g.gl_pathv[i]);
    printf("\n");
    if (rc == 0) globfree(&g);
    struct dirent **list;
    int k = scandirat(AT_FDCWD, ".", &list, NULL, alphasort);
    printf("scandirat %d\n", k);
    mkdir("sub", 0755);
    printf("remove %d %d\n", remove("l"), remove("sub"));
    printf("pathconf %ld\n", pathconf("f", _PC_NAME_MAX));
    printf("readahead %zd\n", readahead(fd, 0, 6));
    printf("sync_file_range %d\n", sync_file_range(fd, 0, 6, SYNC_FILE_RANGE_WRITE));
    fflush(stdout);
    return 0;
}
"#;
