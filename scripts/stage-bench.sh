#!/usr/bin/env bash
# Measures `sfs stage-in/stage-out` (docs/performance.md, "Staging"):
#
#   large tree: FILES files of MIB MiB (the last one sparse: data in its
#               first and last quarter), on tmpfs
#   small tree: SMALL files of 0-8 KiB in directories of 500, on tmpfs
#
# For each tree and direction, side by side in one run: `sfs stage-in/out`,
# `sfs exec -- cp -a` of the same tree through the shim, and (large tree)
# the bandwidth of reading the source and writing the destination alone,
# with one dd per file at once (for SFS through the shim). Two servers on
# 127.0.0.1, chunk stores on tmpfs.
#
# Usage: scripts/stage-bench.sh [FILES] [MIB] [SMALL] [ROUNDS]
#        (default 4 256 10000 3)
set -euo pipefail

cd "$(dirname "${BASH_SOURCE[0]}")/.."
repo=$(pwd)
files=${1:-4}
mib=${2:-256}
small=${3:-10000}
rounds=${4:-3}
export CARGO_TARGET_DIR="${CARGO_TARGET_DIR:-$HOME/.cache/sfs/target}"
cargo build --release -q -p sfs_cli -p sfs_shim -p sfs_preload
sfs_bin="$CARGO_TARGET_DIR/release/sfs"

work=$(mktemp -d /dev/shm/sfs-stage-bench.XXXXXX)
started=0
cleanup() {
    if ((started)); then "$sfs_bin" stop >/dev/null 2>&1 || true; fi
    rm -rf "$work"
}
trap cleanup EXIT

cat >"$work/hostfile" <<EOF
s0 127.0.0.1:7760
s1 127.0.0.1:7770
EOF
python3 - "$repo/config.example.json" "$work" <<'EOF'
import json, sys
config = json.load(open(sys.argv[1]))
config["rootdir"] = sys.argv[2] + "/root"
config["mountdir"] = sys.argv[2] + "/mnt"
json.dump(config, open(sys.argv[2] + "/config.json", "w"), indent=2)
EOF
export SFS_HOSTFILE="$work/hostfile" SFS_CONFIG="$work/config.json"
export SFS_STAGE_STATE_DIR="$work/state"
mnt="$work/mnt"
started=1
"$sfs_bin" start >/dev/null

# --- the trees -------------------------------------------------------------

mkdir -p "$work/large" "$work/small"
for ((i = 0; i < files - 1; i++)); do
    head -c $((mib << 20)) /dev/urandom >"$work/large/f$i"
done
last="$work/large/f$((files - 1))"
head -c $((mib << 18)) /dev/urandom >"$last"
truncate -s $((mib << 20)) "$last"
head -c $((mib << 18)) /dev/urandom | dd of="$last" bs=1M seek=$((mib * 3 / 4)) conv=notrunc status=none
python3 - "$work/small" "$small" <<'EOF'
import os, random, sys
root, n = sys.argv[1], int(sys.argv[2])
random.seed(1)
for i in range(n):
    d = os.path.join(root, f"d{i // 500}")
    os.makedirs(d, exist_ok=True)
    with open(os.path.join(d, f"f{i}"), "wb") as f:
        f.write(os.urandom(random.randint(0, 8192)))
EOF
large_bytes=$(du -b --apparent-size -s "$work/large" | cut -f1)
small_bytes=$(du -b --apparent-size -s "$work/small" | cut -f1)

# Runs "$@", prints the seconds it took.
seconds() {
    local t0 t1
    t0=$(date +%s.%N)
    "$@" >/dev/null
    t1=$(date +%s.%N)
    echo "$t1 - $t0" | bc -l
}
# One dd per file at once: reads the large tree's files f0.. under DIR
# (named, not globbed: the shell itself does not run under the shim).
read_all() {
    local dir=$1 pids=() i
    for ((i = 0; i < files; i++)); do
        "${@:2}" dd if="$dir/f$i" of=/dev/null bs=8M status=none &
        pids+=($!)
    done
    wait "${pids[@]}"
}
# One dd per file at once: writes FILES files of MIB MiB into DIR.
write_all() {
    local dir=$1 pids=() i
    for ((i = 0; i < files; i++)); do
        "${@:2}" dd if=/dev/zero of="$dir/w$i" bs=8M count=$((mib / 8)) status=none &
        pids+=($!)
    done
    wait "${pids[@]}"
}
shim=("$sfs_bin" exec --)
sfs_rm() { "$sfs_bin" rm -r "$@"; }

# The measurements: name, bytes, the timed command, then what cleans up
# after it (not timed), separated by `;;`.
measurements=(
    "large: read source (tmpfs), dd per file|$large_bytes|read_all $work/large|true"
    "large: write SFS through the shim, dd per file|$large_bytes|write_all $mnt/ddw ${shim[*]}|sfs_rm /ddw; $sfs_bin mkdir /ddw"
    "large: sfs stage-in --no-verify|$large_bytes|$sfs_bin stage-in --no-verify --restart $work/large /l1|sfs_rm /l1"
    "large: sfs stage-in|$large_bytes|$sfs_bin stage-in --restart $work/large /l2|sfs_rm /l2"
    "large: sfs exec -- cp -a (in)|$large_bytes|${shim[*]} cp -a $work/large $mnt/l3|sfs_rm /l3"
    "large: read SFS through the shim, dd per file|$large_bytes|read_all $mnt/large ${shim[*]}|true"
    "large: write tmpfs, dd per file|$large_bytes|write_all $work/ddw|rm -f $work/ddw/*"
    "large: sfs stage-out --no-verify|$large_bytes|$sfs_bin stage-out --no-verify --restart /large $work/o1|rm -rf $work/o1"
    "large: sfs stage-out|$large_bytes|$sfs_bin stage-out --restart /large $work/o2|rm -rf $work/o2"
    "large: sfs exec -- cp -a (out)|$large_bytes|${shim[*]} cp -a $mnt/large $work/o3|rm -rf $work/o3"
    "small: sfs stage-in --no-verify|$small_bytes|$sfs_bin stage-in --no-verify --restart $work/small /s1|sfs_rm /s1"
    "small: sfs stage-in|$small_bytes|$sfs_bin stage-in --restart $work/small /s2|sfs_rm /s2"
    "small: sfs exec -- cp -a (in)|$small_bytes|${shim[*]} cp -a $work/small $mnt/s3|sfs_rm /s3"
    "small: sfs stage-out|$small_bytes|$sfs_bin stage-out --restart /small $work/o4|rm -rf $work/o4"
    "small: sfs exec -- cp -a (out)|$small_bytes|${shim[*]} cp -a $mnt/small $work/o5|rm -rf $work/o5"
)

# What the stage-out rows read, staged once (untimed).
"$sfs_bin" stage-in --restart "$work/large" /large >/dev/null
"$sfs_bin" stage-in --restart "$work/small" /small >/dev/null
"$sfs_bin" mkdir /ddw
mkdir -p "$work/ddw"

# ROUNDS rounds, the measurements interleaved (a drifting load from other
# processes then hits all of them alike); the median of each is reported.
declare -A times
uptime
for ((round = 0; round < rounds; round++)); do
    for m in "${measurements[@]}"; do
        IFS='|' read -r name bytes command cleanup <<<"$m"
        # shellcheck disable=SC2086 # the command is split into words on purpose
        times[$name]+="$(seconds $command) "
        eval "$cleanup" >/dev/null
    done
done
uptime

echo "large tree: $files files of $mib MiB ($large_bytes bytes), small tree: $small files ($small_bytes bytes), median of $rounds rounds"
echo "| what | seconds (median) | MiB/s | all rounds (s) |"
echo "|---|---|---|---|"
for m in "${measurements[@]}"; do
    IFS='|' read -r name bytes _ _ <<<"$m"
    median=$(tr ' ' '\n' <<<"${times[$name]}" | grep . | sort -g | awk '{a[NR]=$1} END {print a[int((NR+1)/2)]}')
    printf '| %s | %.2f | %.0f | %s|\n' "$name" "$median" "$(echo "$bytes / $median / 1048576" | bc -l)" "${times[$name]}"
done
