#!/usr/bin/env bash
# Measures the cost of the LD_PRELOAD shim (docs/performance.md, "Shim
# overhead"):
#
# 1. start-up of programs that never touch the mount: /bin/true and a bash
#    script `echo x > /dev/null`, without preload, with an empty C library
#    and with libsfs_preload.so, RUNS interleaved fork+exec runs each
#    (median);
# 2. per call on an SFS file: stat() of an SFS path and lseek(SEEK_CUR) on an
#    SFS descriptor through the shim, against sfs_stat/sfs_lseek of the C API
#    of the client library (libsfs_client.so) in the same process image,
#    against the same servers.
#
# Usage: scripts/shim-overhead.sh [RUNS]   (default 2000; RUNS=0 skips 1.)
set -euo pipefail

cd "$(dirname "${BASH_SOURCE[0]}")/.."
repo=$(pwd)
runs=${1:-2000}
export CARGO_TARGET_DIR="${CARGO_TARGET_DIR:-$HOME/.cache/sfs/target}"
cargo build --release -q -p sfs_cli -p sfs_shim -p sfs_preload -p sfs_client
release="$CARGO_TARGET_DIR/release"
shim="$release/libsfs_preload.so"
sfs_bin="$release/sfs"

work=$(mktemp -d "${TMPDIR:-/tmp}/sfs-overhead.XXXXXX")
started=0
cleanup() {
    if ((started)); then "$sfs_bin" stop >/dev/null 2>&1 || true; fi
    rm -rf "$work"
}
trap cleanup EXIT

# --- 1. start-up --------------------------------------------------------------

# A C driver forks and execs the program once per variant per round, timing
# each run (CLOCK_MONOTONIC): interleaving the variants run by run keeps a
# drifting machine load from favouring one of them; it prints the medians.
cat >"$work/spawn.c" <<'EOF'
#define _GNU_SOURCE
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <time.h>
#include <unistd.h>
#include <sys/wait.h>
static double now(void) { struct timespec t; clock_gettime(CLOCK_MONOTONIC, &t); return t.tv_sec * 1e6 + t.tv_nsec / 1e3; }
static int cmp(const void *a, const void *b) { double x = *(const double *)a, y = *(const double *)b; return x < y ? -1 : x > y; }
extern char **environ;
int main(int argc, char **argv) {
    int n = atoi(argv[1]), v = argc - 3;
    double *t = calloc((size_t)n * v, sizeof *t);
    for (int i = 0; i < n; i++)
        for (int k = 0; k < v; k++) {
            double t0 = now();
            pid_t pid = fork();
            if (pid == 0) {
                if (strcmp(argv[3 + k], "-")) setenv("LD_PRELOAD", argv[3 + k], 1); else unsetenv("LD_PRELOAD");
                char *args[] = {argv[2], NULL};
                execve(argv[2], args, environ);
                _exit(127);
            }
            int st;
            waitpid(pid, &st, 0);
            t[k * n + i] = now() - t0;
        }
    for (int k = 0; k < v; k++) {
        qsort(t + k * n, n, sizeof *t, cmp);
        printf("%.1f ", t[k * n + n / 2]);
    }
    printf("\n");
    return 0;
}
EOF
gcc -O2 -o "$work/spawn" "$work/spawn.c"
# The floor: what preloading any library costs, an empty one written in C.
echo 'int sfs_overhead_reference(void) { return 0; }' >"$work/empty.c"
gcc -shared -fPIC -O2 -o "$work/libempty.so" "$work/empty.c"
printf '#!/bin/bash\necho x > /dev/null\n' >"$work/echo.sh"
chmod +x "$work/echo.sh"

export SFS_MOUNTDIR="$work/mnt"
if ((runs > 0)); then
    echo "start-up, median µs of $runs interleaved fork+exec runs (no preload / empty C library / $shim):"
    for program in /bin/true "$work/echo.sh"; do
        read -r none empty entry < <("$work/spawn" "$runs" "$program" - "$work/libempty.so" "$shim")
        awk -v p="$(basename "$program")" -v a="$none" -v b="$empty" -v c="$entry" \
            'BEGIN { printf "  %-8s none %7.1f   empty %7.1f (%+.1f %%)   entry library %7.1f (%+.1f %%)\n", p, a, b, (b / a - 1) * 100, c, (c / a - 1) * 100 }'
    done
fi

# --- 2. per call --------------------------------------------------------------

cat >"$work/hostfile" <<EOF
s0 127.0.0.1:7750
EOF
python3 - "$repo/config.example.json" "$work" <<'EOF'
import json, sys
config = json.load(open(sys.argv[1]))
config["rootdir"] = sys.argv[2] + "/root"
config["mountdir"] = sys.argv[2] + "/mnt"
config["hosts_file"] = "hostfile"
json.dump(config, open(sys.argv[2] + "/config.json", "w"), indent=2)
EOF
export SFS_HOSTFILE="$work/hostfile" SFS_CONFIG="$work/config.json"
started=1
"$sfs_bin" start >/dev/null

cat >"$work/calls.c" <<'EOF'
/* N stat() and N lseek(SEEK_CUR) calls, through the shim (argv[1] = "shim")
 * or through the client library's C API (argv[1] = "capi"); prints ns/call. */
#include <dlfcn.h>
#include <fcntl.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/stat.h>
#include <time.h>
#include <unistd.h>

static double now(void) {
    struct timespec t;
    clock_gettime(CLOCK_MONOTONIC, &t);
    return t.tv_sec * 1e9 + t.tv_nsec;
}

int main(int argc, char **argv) {
    const char *mode = argv[1], *mnt = argv[2];
    int n = atoi(argv[3]);
    char path[4096];
    snprintf(path, sizeof path, "%s/probe", mnt);
    struct stat st;
    double t0, t1, t2;
    if (strcmp(mode, "shim") == 0) {
        int fd = open(path, O_CREAT | O_RDWR, 0644);
        if (fd < 0 || stat(path, &st) != 0) { perror("shim open/stat"); return 1; }
        t0 = now();
        for (int i = 0; i < n; i++) stat(path, &st);
        t1 = now();
        for (int i = 0; i < n; i++) lseek(fd, 0, SEEK_CUR);
        t2 = now();
    } else {
        void *lib = dlopen(argv[4], RTLD_NOW);
        if (!lib) { fprintf(stderr, "%s\n", dlerror()); return 1; }
        void *(*connect)(const char *, const char *) = dlsym(lib, "sfs_connect");
        int (*sopen)(void *, const char *, int, unsigned) = dlsym(lib, "sfs_open");
        int (*sstat)(void *, const char *, struct stat *, int) = dlsym(lib, "sfs_stat");
        long (*sseek)(void *, int, long, int) = dlsym(lib, "sfs_lseek");
        void *c = connect(getenv("SFS_CONFIG"), getenv("SFS_HOSTFILE"));
        int fd = c ? sopen(c, "/probe", O_CREAT | O_RDWR, 0644) : -1;
        if (fd < 0 || sstat(c, "/probe", &st, 1) != 0) { fprintf(stderr, "capi open/stat failed\n"); return 1; }
        t0 = now();
        for (int i = 0; i < n; i++) sstat(c, "/probe", &st, 1);
        t1 = now();
        for (int i = 0; i < n; i++) sseek(c, fd, 0, SEEK_CUR);
        t2 = now();
    }
    printf("%s: stat %.2f us/call, lseek %.3f us/call\n", mode, (t1 - t0) / n / 1e3, (t2 - t1) / n / 1e3);
    return 0;
}
EOF
gcc -O2 -o "$work/calls" "$work/calls.c" -ldl
rounds=5
echo "per call (20000 stat + 20000 lseek each, $rounds rounds; one server on loopback):"
results=()
for round in $(seq "$rounds"); do
    shim_line=$(LD_PRELOAD=$shim "$work/calls" shim "$work/mnt" 20000)
    capi_line=$("$work/calls" capi "$work/mnt" 20000 "$release/libsfs_client.so")
    echo "  round $round: $shim_line   $capi_line"
    results+=("$shim_line $capi_line")
done
# Median per column, and the shim's share as the difference of the medians.
printf '%s\n' "${results[@]}" | awk '
    { ss[NR] = $3; sl[NR] = $6; cs[NR] = $10; cl[NR] = $13 }
    function median(a, n,   i, j, t) {
        for (i = 1; i <= n; i++) for (j = i + 1; j <= n; j++) if (a[j] < a[i]) { t = a[i]; a[i] = a[j]; a[j] = t }
        return a[int((n + 1) / 2)]
    }
    END {
        n = NR; s1 = median(ss, n); c1 = median(cs, n); s2 = median(sl, n); c2 = median(cl, n)
        printf "  median: stat shim %.2f us, capi %.2f us (shim %+.2f us); lseek shim %.3f us, capi %.3f us (shim %+.3f us)\n", s1, c1, s1 - c1, s2, c2, s2 - c2
    }'
