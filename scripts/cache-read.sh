#!/usr/bin/env bash
# Cache mode's first read (docs/performance.md, "Cache mode"): a file of
# SIZE_MIB in a backing directory under BACKING_PARENT, read with `dd
# bs=1M` plainly and then through a fresh SFS (SERVERS servers on
# 127.0.0.1, state on /dev/shm, `backing_dir` set) under the shim: the
# first read (read through from the backing file by chunk) and a second
# one (held by SFS). COLD=1 drops the page cache before each of the plain
# read and the first read (a disk-backed BACKING_PARENT then reads from the
# device). Prints MB/s of each and the first read's share of the plain one.
#
#   scripts/cache-read.sh [ROUNDS]      # SFS_BIN: directory of a release `sfs`
set -euo pipefail
. "$(dirname "$0")/local-cluster.sh"
rounds=${1:-3}
bin=${SFS_BIN:-${CARGO_TARGET_DIR:-$HOME/.cache/sfs/target}/release}
size=${SIZE_MIB:-1024}
servers=${SERVERS:-2}
parent=${BACKING_PARENT:-/dev/shm}
work=$(mktemp -d)
backing=$(mktemp -d -p "$parent" sfs-cache-read.XXXXXX)
state=$(mktemp -d -p /dev/shm sfs-cache-state.XXXXXX)
sfs() { "$bin/sfs" --config "$work/config.json" --hostfile "$work/hostfile" "$@"; }
trap 'sfs stop >/dev/null 2>&1 || true; rm -rf "$work" "$backing" "$state"' EXIT
local_hostfile "$work/hostfile" "$servers"
echo "{\"rootdir\": \"$state\", \"backing_dir\": \"$backing\", \"mountdir\": \"$work/mnt\"}" >"$work/config.json"
head -c $((size << 20)) /dev/urandom >"$backing/big"
sync
drop() { if [ "${COLD:-0}" = 1 ]; then sync; echo 3 >/proc/sys/vm/drop_caches; fi; }
rate() { awk '/copied/ { for (i = 1; i <= NF; i++) if ($i ~ /s,$/) t = $(i - 1); print int('"$size"' * 1.048576 / t) }'; }
for _ in $(seq "$rounds"); do
    rm -rf "${state:?}"/*
    drop
    plain=$(dd if="$backing/big" of=/dev/null bs=1M 2>&1 | rate)
    sfs start >/dev/null
    drop
    first=$(sfs exec -- dd if="$work/mnt/big" of=/dev/null bs=1M 2>&1 | rate)
    second=$(sfs exec -- dd if="$work/mnt/big" of=/dev/null bs=1M 2>&1 | rate)
    sfs stop >/dev/null
    echo "plain $plain MB/s  first through SFS $first MB/s ($(awk -v a="$first" -v b="$plain" 'BEGIN { printf "%d", 100 * a / b }') %)  second $second MB/s"
done
