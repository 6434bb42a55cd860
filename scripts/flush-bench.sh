#!/usr/bin/env bash
# `sfs flush -r` of FILES files of 128 MiB (random bytes, written through
# the shim) to a `dir` back end under BACKEND_PARENT (/var/tmp), on a fresh
# SERVERS-server cluster per run (state on /dev/shm, `explicit` policy),
# for each build in turn, ROUNDS times; the page cache is dropped before
# each run (docs/performance.md, "Write-back: each batch handed to the
# device at once": this VM's memory makes runs that start from different
# cache states incomparable). Prints seconds, MiB/s and the servers' CPU.
#
#   scripts/flush-bench.sh ROUNDS LABEL=PATH/TO/sfs ...   # as root
set -euo pipefail
. "$(dirname "$0")/local-cluster.sh"
rounds=$1
shift
files=${FILES:-16}
servers=${SERVERS:-2}
parent=${BACKEND_PARENT:-/var/tmp}
preload=${SFS_PRELOAD:-${CARGO_TARGET_DIR:-$HOME/.cache/sfs/target}/release/libsfs_preload.so}
export SFS_PRELOAD=$preload
work=$(mktemp -d)
source_file=$(mktemp -p /dev/shm sfs-flush-src.XXXXXX)
head -c $((128 << 20)) /dev/urandom >"$source_file"
current=""
sfs() { "$current" --config "$work/config.json" --hostfile "$work/hostfile" "$@"; }
cleanup() {
    [ -n "$current" ] && sfs stop >/dev/null 2>&1 || true
    rm -rf "$work" "$source_file" "${state:-}" "${backend:-}"
}
trap cleanup EXIT
ticks() {
    local t=0 p
    for p in $(pgrep -f "$work/config.json.*server"); do
        t=$((t + $(awk '{ print $14 + $15 }' "/proc/$p/stat")))
    done
    echo "$t"
}
for round in $(seq "$rounds"); do
    for build in "$@"; do
        label=${build%%=*}
        current=${build#*=}
        state=$(mktemp -d -p /dev/shm sfs-flush-state.XXXXXX)
        backend=$(mktemp -d -p "$parent" sfs-flush-backend.XXXXXX)
        local_hostfile "$work/hostfile" "$servers"
        echo "{\"rootdir\": \"$state\", \"mountdir\": \"$work/mnt\", \"backend\": {\"kind\": \"dir\", \"path\": \"$backend\", \"writeback\": \"explicit\"}}" >"$work/config.json"
        sync
        echo 3 >/proc/sys/vm/drop_caches
        sfs start >/dev/null
        for f in $(seq "$files"); do
            sfs exec -- dd if="$source_file" of="$work/mnt/f$f" bs=1M count=128 iflag=fullblock status=none
        done
        sync
        t0=$(ticks)
        s0=$(date +%s.%N)
        sfs flush -r / >/dev/null 2>&1
        s1=$(date +%s.%N)
        t1=$(ticks)
        sfs stop >/dev/null
        awk -v l="$label" -v r="$round" -v a="$s0" -v b="$s1" -v mib=$((files * 128)) -v cpu=$((t1 - t0)) \
            'BEGIN { printf "round %d %-8s %.2f s  %d MiB/s  servers CPU %.2f s\n", r, l, b - a, mib / (b - a), cpu / 100 }'
        rm -rf "$state" "$backend"
    done
done
