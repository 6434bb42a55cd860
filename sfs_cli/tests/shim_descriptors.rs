//! SFS descriptors are real kernel descriptors, SFS directory streams
//! page through large directories, and descriptors survive the execl
//! family: C programs under the real shim check numbers, flags and
//! placeholders, also after the program closes every descriptor behind the
//! shim's back.

mod common;
mod shim_support;

use common::Cluster;
use shim_support::{assert_ok, compile_c, text, under_shim};

const PROBE: &str = r#"
#define _GNU_SOURCE
#include <dirent.h>
#include <errno.h>
#include <fcntl.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <unistd.h>
#include <sys/stat.h>

static void fail(const char *what) { perror(what); exit(1); }

/* The highest open descriptor (the shim keeps its own at high numbers). */
static int highest_fd(void) {
    DIR *d = opendir("/proc/self/fd");
    if (!d) fail("opendir /proc/self/fd");
    int hi = -1, own = dirfd(d);
    struct dirent *e;
    while ((e = readdir(d))) {
        int fd = atoi(e->d_name);
        if (e->d_name[0] != '.' && fd != own && fd > hi) hi = fd;
    }
    closedir(d);
    return hi;
}

/* Where the kernel says a descriptor points. */
static void target(int fd, char *out, size_t len) {
    char link[64];
    snprintf(link, sizeof link, "/proc/self/fd/%d", fd);
    ssize_t n = readlink(link, out, len - 1);
    if (n < 0) fail("readlink");
    out[n] = 0;
}

static int create(const char *dir, const char *name, int flags) {
    char path[4096];
    snprintf(path, sizeof path, "%s/%s", dir, name);
    int fd = open(path, O_RDWR | O_CREAT | O_TRUNC | flags, 0644);
    if (fd < 0) fail(path);
    if (write(fd, name, strlen(name)) != (ssize_t)strlen(name)) fail("write");
    return fd;
}

int main(int argc, char **argv) {
    const char *mnt = argv[1], *local = argv[2];
    char where[4096];

    /* Numbers are the lowest free ones, as open(2) gives. */
    int lowest = open("/dev/null", O_RDONLY);
    close(lowest);
    int a = create(mnt, "a", 0);
    int b = create(mnt, "b", O_CLOEXEC);
    printf("lowest: %d %d\n", a == lowest, b == lowest + 1);
    printf("cloexec: %d %d\n", fcntl(a, F_GETFD) & FD_CLOEXEC, fcntl(b, F_GETFD) & FD_CLOEXEC);
    target(a, where, sizeof where);
    printf("placeholder: %s\n", where);

    /* The program closes every descriptor; the shim's own ones (its
       connections, at high numbers) survive, and a program's dup2 onto one
       of them is refused rather than cutting it. */
    int high = highest_fd();
    closefrom(3);
    int mine = open(local, O_RDONLY);
    if (mine < 0) fail("open local");
    errno = 0;
    int refused = high > mine && dup2(mine, high) == -1;
    int why = errno;
    printf("dup2 onto the shim's own: %d %d\n", refused, why == EBADF);
    int c = create(mnt, "c", 0);
    target(c, where, sizeof where);
    printf("after closefrom: %s\n", where);
    struct stat st;
    if (fstat(c, &st)) fail("fstat");
    printf("fstat: regular %d size %lld\n", S_ISREG(st.st_mode), (long long)st.st_size);
    char buf[8] = {0};
    if (pread(c, buf, sizeof buf - 1, 0) != 1) fail("pread");
    printf("read: %s\n", buf);
    target(mine, where, sizeof where);
    printf("own file kept: %d\n", strcmp(where, local) == 0);

    /* The same with close_range. */
    if (close_range(3, ~0U, 0)) fail("close_range");
    int d = create(mnt, "d", 0);
    target(d, where, sizeof where);
    printf("after close_range: %d %s\n", d == 3, where);
    return 0;
}
"#;

#[test]
fn placeholders_survive_the_program_closing_everything() {
    let cluster = Cluster::start(1);
    let dir = tempfile::tempdir().unwrap();
    let binary = compile_c(dir.path(), "probe", PROBE);
    let local = dir.path().join("local.txt");
    std::fs::write(&local, "local").unwrap();
    let mnt = format!("{}/p", cluster.config.mountdir);
    let script = r#"mkdir "$1" && exec "$2" "$1" "$3""#;
    let out = under_shim(
        &cluster,
        script,
        &[
            &mnt,
            &binary.display().to_string(),
            &local.display().to_string(),
        ],
    );
    assert_ok("probe", &out);
    assert_eq!(
        text(&out.stdout),
        format!(
            "lowest: 1 1\ncloexec: 0 1\nplaceholder: /\ndup2 onto the shim's own: 1 1\n\
             after closefrom: /\nfstat: regular 1 size 1\nread: c\nown file kept: 1\n\
             after close_range: 1 /\n"
        ),
        "{}",
        text(&out.stderr)
    );
}

const DIR_PROBE: &str = r#"
#include <dirent.h>
#include <errno.h>
#include <fcntl.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <unistd.h>

static void fail(const char *what) { perror(what); exit(1); }

int main(int argc, char **argv) {
    const char *dir = argv[1];
    int files = atoi(argv[2]);
    char path[4096], at1000[256] = {0}, at10[256] = {0};
    for (int i = 0; i < files; i++) {
        snprintf(path, sizeof path, "%s/f%05d", dir, i);
        int fd = open(path, O_WRONLY | O_CREAT | O_EXCL, 0644);
        if (fd < 0) fail(path);
        close(fd);
    }
    DIR *d = opendir(dir);
    if (!d) fail("opendir");
    long mark1000 = -1, mark10 = -1;
    int count = 0;
    struct dirent *e;
    errno = 0;
    while ((e = readdir(d))) {
        if (count == 10) { mark10 = telldir(d); }
        if (count == 11) strcpy(at10, e->d_name);
        if (count == 1000) { mark1000 = telldir(d); }
        if (count == 1001) strcpy(at1000, e->d_name);
        count++;
    }
    printf("entries %d errno %d\n", count, errno);
    /* Back into the middle, then before the page held: the same entries. */
    seekdir(d, mark1000);
    e = readdir(d);
    printf("seek 1000: %d\n", e && strcmp(e->d_name, at1000) == 0);
    seekdir(d, mark10);
    e = readdir(d);
    printf("seek 10: %d\n", e && strcmp(e->d_name, at10) == 0);
    /* A rewind sees what was made since. */
    snprintf(path, sizeof path, "%s/late", dir);
    close(open(path, O_WRONLY | O_CREAT, 0644));
    rewinddir(d);
    int again = 0, late = 0;
    while ((e = readdir(d))) { again++; late += strcmp(e->d_name, "late") == 0; }
    printf("after rewind %d late %d\n", again, late);
    closedir(d);
    return 0;
}
"#;

#[test]
fn directory_streams_page_and_seek_through_a_large_directory() {
    // Pages of 64 entries: the 3,000-file directory spans dozens of them.
    let cluster = Cluster::start_with(2, |c| c.readdir_page_size = 64);
    let dir = tempfile::tempdir().unwrap();
    let binary = compile_c(dir.path(), "dirs", DIR_PROBE);
    let mnt = format!("{}/big", cluster.config.mountdir);
    let out = under_shim(
        &cluster,
        r#"mkdir "$1" && exec "$2" "$1" 3000"#,
        &[&mnt, &binary.display().to_string()],
    );
    assert_ok("probe", &out);
    assert_eq!(
        text(&out.stdout),
        "entries 3002 errno 0\nseek 1000: 1\nseek 10: 1\nafter rewind 3003 late 1\n",
        "{}",
        text(&out.stderr)
    );
}

/// Opens an SFS file without `O_CLOEXEC` as descriptor 3, then execs a
/// shell through `execl`, `execlp` or `execle` (argv[1] picks which; the
/// execle environment lacks LD_PRELOAD, which the shim puts back): the new
/// image reads the file through the inherited descriptor.
const EXECL_PROBE: &str = r#"
#define _GNU_SOURCE
#include <fcntl.h>
#include <stdio.h>
#include <string.h>
#include <unistd.h>

int main(int argc, char **argv) {
    const char *how = argv[1], *path = argv[2];
    int fd = open(path, O_RDONLY);
    if (fd < 0) { perror("open"); return 1; }
    if (fd != 3 && (dup2(fd, 3) != 3 || close(fd) != 0)) { perror("dup2"); return 1; }
    const char *script = "printf '%s: ' \"$0\"; cat <&3";
    if (strcmp(how, "execl") == 0) execl("/bin/sh", "execl", "-c", script, (char *)NULL);
    else if (strcmp(how, "execlp") == 0) execlp("sh", "execlp", "-c", script, (char *)NULL);
    else {
        char *env[] = {"PATH=/usr/bin:/bin", NULL};
        execle("/bin/sh", "execle", "-c", script, (char *)NULL, env);
    }
    perror(how);
    return 1;
}
"#;

#[test]
fn descriptors_survive_the_execl_family() {
    let cluster = Cluster::start(1);
    let dir = tempfile::tempdir().unwrap();
    let binary = compile_c(dir.path(), "execl", EXECL_PROBE);
    let file = format!("{}/inherited", cluster.config.mountdir);
    let script = r#"printf 'through fd 3\n' > "$1"; for how in execl execlp execle; do "$2" "$how" "$1"; done"#;
    let out = under_shim(&cluster, script, &[&file, &binary.display().to_string()]);
    assert_ok("execl family", &out);
    assert_eq!(
        text(&out.stdout),
        "execl: through fd 3\nexeclp: through fd 3\nexecle: through fd 3\n"
    );
}

/// Writes 1 MiB, SIGKILLs the server (argv[2]), then writes on until a
/// write fails; prints how. SIGPIPE keeps its default action, as in most C
/// programs: a socket write to the dead server must fail, not kill it.
const DEAD_SERVER_PROBE: &str = r#"
#include <errno.h>
#include <fcntl.h>
#include <signal.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <unistd.h>

int main(int argc, char **argv) {
    static char buf[1 << 20];
    memset(buf, 7, sizeof buf);
    int fd = open(argv[1], O_CREAT | O_WRONLY, 0644);
    if (fd < 0 || write(fd, buf, sizeof buf) != sizeof buf) { perror("first write"); return 1; }
    if (kill(atoi(argv[2]), SIGKILL) != 0) { perror("kill"); return 1; }
    usleep(200 * 1000);
    for (int i = 0; i < 50; i++)
        if (write(fd, buf, sizeof buf) < 0) {
            printf("write failed: %s\n", strerror(errno));
            return 0;
        }
    printf("all writes succeeded\n");
    return 0;
}
"#;

fn a_dead_server_fails_writes_without_sigpipe(tune: impl FnOnce(&mut sfs_global::config::Config)) {
    let cluster = Cluster::start_with(1, tune);
    let dir = tempfile::tempdir().unwrap();
    let binary = compile_c(dir.path(), "dead_server", DEAD_SERVER_PROBE);
    let ready = sfs_global::ready::Ready::path(&cluster.config, &cluster.hostfile.hosts[0].name);
    let ready: serde_json::Value =
        serde_json::from_str(&std::fs::read_to_string(ready).unwrap()).unwrap();
    let pid = ready["pid"]
        .as_u64()
        .expect("pid in the ready file")
        .to_string();
    let file = format!("{}/victim", cluster.config.mountdir);
    let out = under_shim(
        &cluster,
        r#"exec "$1" "$2" "$3""#,
        &[&binary.display().to_string(), &file, &pid],
    );
    assert_ok("writing to a killed server", &out);
    assert_eq!(text(&out.stdout), "write failed: Input/output error\n");
}

#[test]
fn a_killed_server_fails_writes_without_sigpipe_over_shared_memory() {
    a_dead_server_fails_writes_without_sigpipe(|_| {});
}

#[test]
fn a_killed_server_fails_writes_without_sigpipe_over_tcp() {
    a_dead_server_fails_writes_without_sigpipe(|c| c.shared_memory_data = false);
}

/// freopen onto an SFS file opens it at a new descriptor, copies that onto
/// the stream's, and closes the new one; a stream of an SFS file that
/// freopen replaces is closed too. Both closes happen inside the shim: the
/// numbers must stop being SFS descriptors, or the next file the kernel
/// hands that number out for is read from SFS instead.
const FREOPEN_PROBE: &str = r#"
#include <fcntl.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <unistd.h>

/* Opens the local file and reads it back; exits 1 if it reads otherwise. */
static void read_local(const char *path, const char *when) {
    char buf[64] = {0};
    int fd = open(path, O_RDONLY);
    if (fd < 0) { perror("open local"); exit(1); }
    ssize_t n = read(fd, buf, sizeof buf - 1);
    if (n != 11 || strcmp(buf, "local data\n") != 0) {
        fprintf(stderr, "%s: fd %d read %zd bytes: \"%s\"\n", when, fd, n, buf);
        exit(1);
    }
    close(fd);
}

int main(int argc, char **argv) {
    (void)argc;
    if (!freopen(argv[1], "w", stdout)) { perror("freopen stdout"); return 1; }
    printf("to sfs\n");
    fflush(stdout);
    read_local(argv[2], "after freopen of stdout");
    FILE *f = fopen(argv[3], "w");
    if (!f) { perror("fopen"); return 1; }
    FILE *g = freopen(argv[4], "w", f);
    if (!g) { perror("freopen stream"); return 1; }
    fputs("second\n", g);
    fclose(g);
    read_local(argv[2], "after freopen of an SFS stream");
    return 0;
}
"#;

#[test]
fn descriptors_that_freopen_closes_are_not_sfs_descriptors_afterwards() {
    let cluster = Cluster::start(1);
    let dir = tempfile::tempdir().unwrap();
    let binary = compile_c(dir.path(), "freopen", FREOPEN_PROBE);
    let local = dir.path().join("local.txt");
    std::fs::write(&local, "local data\n").unwrap();
    let mnt = &cluster.config.mountdir;
    let out = under_shim(
        &cluster,
        r#"exec "$1" "$2/out" "$3" "$2/first" "$2/second""#,
        &[
            &binary.display().to_string(),
            mnt,
            &local.display().to_string(),
        ],
    );
    assert_ok("freopen probe", &out);
    let client = cluster.client();
    let read = |path: &str| {
        let fd = client.open(path, libc::O_RDONLY, 0).unwrap();
        let mut buf = vec![0u8; 64];
        let n = client.read(fd, &mut buf).unwrap();
        client.close(fd).unwrap();
        String::from_utf8_lossy(&buf[..n]).into_owned()
    };
    assert_eq!(read("/out"), "to sfs\n");
    assert_eq!(read("/second"), "second\n");
    assert_eq!(read("/first"), "");
}

/// scandir calls the program's filter and comparator while the shim handles
/// the call; calls those make (a stat of each entry) must reach SFS too.
const SCANDIR_PROBE: &str = r#"
#define _GNU_SOURCE
#include <dirent.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/stat.h>

static const char *dir;

/* Keeps regular files, as a program that stats each entry would. */
static int regular(const struct dirent *e) {
    char path[4096];
    struct stat st;
    snprintf(path, sizeof path, "%s/%s", dir, e->d_name);
    if (stat(path, &st) != 0) {
        perror(path);
        return 0;
    }
    return S_ISREG(st.st_mode);
}

/* Largest file first: the order needs a stat too. */
static int by_size(const struct dirent **a, const struct dirent **b) {
    char pa[4096], pb[4096];
    struct stat sa, sb;
    snprintf(pa, sizeof pa, "%s/%s", dir, (*a)->d_name);
    snprintf(pb, sizeof pb, "%s/%s", dir, (*b)->d_name);
    if (stat(pa, &sa) != 0 || stat(pb, &sb) != 0) {
        perror("stat in compare");
        exit(1);
    }
    return (sb.st_size > sa.st_size) - (sb.st_size < sa.st_size);
}

int main(int argc, char **argv) {
    (void)argc;
    dir = argv[1];
    struct dirent **names;
    int n = scandir(dir, &names, regular, by_size);
    if (n < 0) { perror("scandir"); return 1; }
    for (int i = 0; i < n; i++) {
        printf("%s\n", names[i]->d_name);
        free(names[i]);
    }
    free(names);
    return 0;
}
"#;

#[test]
fn scandir_filters_and_comparators_see_sfs_entries() {
    let cluster = Cluster::start(1);
    let dir = tempfile::tempdir().unwrap();
    let binary = compile_c(dir.path(), "scandir", SCANDIR_PROBE);
    let client = cluster.client();
    client.mkdir("/d", 0o755).unwrap();
    client.mkdir("/d/sub", 0o755).unwrap();
    for (name, size) in [("small", 10), ("large", 3000), ("middle", 500)] {
        common::write_at(&client, &format!("/d/{name}"), 0, &vec![b'x'; size]);
    }
    let out = under_shim(
        &cluster,
        r#"exec "$1" "$2/d""#,
        &[&binary.display().to_string(), &cluster.config.mountdir],
    );
    assert_ok("scandir probe", &out);
    assert_eq!(text(&out.stdout), "large\nmiddle\nsmall\n");
}
