#!/usr/bin/env bash
# Metadata rates of one client thread (`sfs bench meta`) against one server
# on tmpfs, for several configurations side by side: each repetition starts
# a fresh server per configuration, in turn, so a noisy machine affects all
# of them alike; prints the median, minimum and maximum of each.
#
#   scripts/meta-rates.sh REPS 'LABEL|JSON FIELDS' ...
#   scripts/meta-rates.sh 5 'lean|' 'grpc|"metadata_rpc": "grpc"' 'nospin|"rpc_spin_us": 0'
#
# SFS_BIN: directory of the `sfs` binary (default: the release build in
# $CARGO_TARGET_DIR or ~/.cache/sfs/target); FILES: files per run (20000).
set -euo pipefail
bin=${SFS_BIN:-${CARGO_TARGET_DIR:-$HOME/.cache/sfs/target}/release}
reps=$1
shift
work=$(mktemp -d)
state=$(mktemp -d -p /dev/shm sfs-meta-rates.XXXXXX)
stop_server() { "$bin/sfs" --config "$work/config.json" --hostfile "$work/hostfile" stop >/dev/null 2>&1 || true; }
trap 'stop_server; rm -rf "$work" "$state"' EXIT
port=$(python3 -c 'import socket; s=socket.socket(); s.bind(("127.0.0.1", 0)); print(s.getsockname()[1])')
echo "s0 127.0.0.1:$port" >"$work/hostfile"
declare -A results
for _ in $(seq "$reps"); do
    for cfg in "$@"; do
        label=${cfg%%|*}
        fields=${cfg#*|}
        rm -rf "${state:?}"/*
        echo "{\"rootdir\": \"$state\"${fields:+, $fields}}" >"$work/config.json"
        "$bin/sfs" --config "$work/config.json" --hostfile "$work/hostfile" start >/dev/null
        out=$("$bin/sfs" --config "$work/config.json" --hostfile "$work/hostfile" bench meta --files "${FILES:-20000}")
        stop_server
        for op in create stat remove; do
            rate=$(awk -v op="$op" '$1 == op { print $2 }' <<<"$out")
            results[$label.$op]="${results[$label.$op]:-} $rate"
        done
    done
done
uptime
for cfg in "$@"; do
    label=${cfg%%|*}
    for op in create stat remove; do
        # shellcheck disable=SC2086
        printf '%-10s %-7s %s   [%s ]\n' "$label" "$op" \
            "$(printf '%s\n' ${results[$label.$op]} | sort -n | awk '{ v[NR] = $1 } END { printf "median %6d/s  min %6d  max %6d", v[int((NR + 1) / 2)], v[1], v[NR] }')" \
            "${results[$label.$op]}"
    done
done
