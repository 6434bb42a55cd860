#!/usr/bin/env bash
# Instructions one server executes per metadata operation, counted by
# callgrind (deterministic, unlike time on a shared VM): a fresh one-server
# cluster on 127.0.0.1 (state on /dev/shm) whose server runs under
# `valgrind --tool=callgrind` with instrumentation off, a warm-up `sfs
# bench meta --files 200`, then instrumentation on for `sfs bench meta
# --files FILES` (FILES creates, stats and removals) and off again. Prints
# the total and the instructions per operation; the profile stays in
# OUT.1 for `callgrind_annotate`. Then the client's instructions per
# operation, the same way (docs/performance.md, "Instructions per
# metadata operation").
#
#   scripts/count-instructions.sh PATH/TO/sfs OUT [FILES]
set -euo pipefail
. "$(dirname "$0")/local-cluster.sh"
bin=$1
out=$2
files=${3:-3000}
command -v callgrind_control >/dev/null || { echo "needs valgrind: apt-get install valgrind" >&2; exit 1; }
work=$(mktemp -d)
state=$(mktemp -d -p /dev/shm sfs-count.XXXXXX)
sfs() { "$bin" --config "$work/config.json" --hostfile "$work/hostfile" "$@"; }
vpid=""
trap 'sfs stop >/dev/null 2>&1 || true; [ -n "$vpid" ] && wait "$vpid"; rm -rf "$work" "$state"' EXIT
local_hostfile "$work/hostfile" 1
echo "{\"rootdir\": \"$state\", \"mountdir\": \"$work/mnt\"}" >"$work/config.json"
rm -f "$out" "$out".*
valgrind --tool=callgrind --callgrind-out-file="$out" --instr-atstart=no \
    "$bin" --config "$work/config.json" --hostfile "$work/hostfile" server >"$work/server.log" 2>&1 &
vpid=$!
for _ in $(seq 600); do sfs status >/dev/null 2>&1 && break; sleep 0.5; done
sfs bench meta --files 200 >/dev/null
callgrind_control -i on "$vpid" >/dev/null 2>&1
sfs bench meta --files "$files" >/dev/null
callgrind_control -i off "$vpid" >/dev/null 2>&1
callgrind_control -d "$vpid" >/dev/null 2>&1
total=$(awk '/^totals:/ { t = $2 } END { print t }' "$out".1)
echo "server: $total instructions, $((total / (3 * files))) per operation ($files files: create, stat, remove)"
# The client: `sfs bench meta` itself under callgrind (against the same
# server), with FILES/4 and with FILES files; the difference leaves out
# what a run costs whatever its length (loading, connecting).
client() {
    valgrind --tool=callgrind --callgrind-out-file="$out.client.$1" \
        "$bin" --config "$work/config.json" --hostfile "$work/hostfile" bench meta --files "$1" >/dev/null 2>&1
    awk '/^totals:/ { t = $2 } END { print t }' "$out.client.$1"
}
short=$((files / 4))
small=$(client "$short")
large=$(client "$files")
echo "client: $(((large - small) / (3 * (files - short)))) per operation (profile in $out.client.$files)"
