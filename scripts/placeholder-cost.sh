#!/usr/bin/env bash
# What an SFS descriptor's kernel placeholder costs (docs/performance.md,
# "Shim: shared offsets"): a copy of one descriptor of / (F_DUPFD, shared
# description: what the shim did before offsets moved into the kernel)
# against a description of its own (openat(template, ".")), each with its
# close, and one lseek (what a read or write now adds per call).
set -euo pipefail
work=$(mktemp -d)
trap 'rm -rf "$work"' EXIT
cat > "$work/cost.c" <<'C'
#define _GNU_SOURCE
#include <fcntl.h>
#include <stdio.h>
#include <time.h>
#include <unistd.h>
static double now(void) {
    struct timespec t;
    clock_gettime(CLOCK_MONOTONIC, &t);
    return t.tv_sec + t.tv_nsec * 1e-9;
}
int main(void) {
    int template = open("/", O_RDONLY | O_DIRECTORY | O_CLOEXEC);
    const int n = 200000;
    for (int round = 0; round < 5; round++) {
        double a = now();
        for (int i = 0; i < n; i++) close(fcntl(template, F_DUPFD_CLOEXEC, 0));
        double b = now();
        for (int i = 0; i < n; i++) close(openat(template, ".", O_RDONLY | O_DIRECTORY | O_CLOEXEC));
        double c = now();
        for (int i = 0; i < n; i++) (void)lseek(template, 0, SEEK_CUR);
        double d = now();
        printf("F_DUPFD+close %.2f us  openat(.)+close %.2f us  lseek %.3f us\n",
               (b - a) / n * 1e6, (c - b) / n * 1e6, (d - c) / n * 1e6);
    }
    return 0;
}
C
gcc -O2 -o "$work/cost" "$work/cost.c"
"$work/cost"
