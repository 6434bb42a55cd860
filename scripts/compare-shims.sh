#!/usr/bin/env bash
# Two shim builds side by side against one server: starts one server with
# SFS (its `sfs` binary, state on /dev/shm), then runs scripts/meta-loop.c
# (create, stat, unlink of FILES files, one call at a time) under each
# build's preload library in turn, ROUNDS rounds, the first build of each
# round alternating, and prints per phase the median of each build's CPU
# time per file and rate, and the median and interquartile range of
# second ÷ first per round. The server is the same for both, so what
# differs is the shim and the client library inside it.
#
#   scripts/compare-shims.sh ROUNDS SFS LABEL=PRELOAD.so LABEL=PRELOAD.so
#
# FILES (10000) per round and build.
set -euo pipefail
. "$(dirname "$0")/local-cluster.sh"
rounds=$1 sfs=$2 first=$3 second=$4
files=${FILES:-10000}
here=$(cd "$(dirname "${BASH_SOURCE[0]}")" && pwd)
work=$(mktemp -d)
state=$(mktemp -d -p /dev/shm sfs-shims.XXXXXX)
trap '"$sfs" --config "$work/config.json" --hostfile "$work/hostfile" stop >/dev/null 2>&1 || true; rm -rf "$work" "$state"' EXIT
gcc -O2 -o "$work/meta-loop" "$here/meta-loop.c"
local_hostfile "$work/hostfile" 1
printf '{"rootdir": "%s/root", "mountdir": "/sfs-shims", "data_port_offset": 0}\n' "$state" > "$work/config.json"
"$sfs" --config "$work/config.json" --hostfile "$work/hostfile" start > /dev/null
for round in $(seq "$rounds"); do
    if ((round % 2)); then order=("$first" "$second"); else order=("$second" "$first"); fi
    for build in "${order[@]}"; do
        label=${build%%=*}
        echo "$round $label $(SFS_CONFIG="$work/config.json" SFS_HOSTFILE="$work/hostfile" \
            LD_PRELOAD="${build#*=}" "$work/meta-loop" "/sfs-shims/$label$round" "$files")"
    done
done | tee "$work/log" >&2
python3 - "$work/log" "${first%%=*}" "${second%%=*}" <<'PY'
import statistics as st, sys
log, a, b = sys.argv[1:]
rows = {}
for line in open(log):
    f = line.split()
    rows.setdefault(f[0], {})[f[1]] = {f[i]: (float(f[i + 1]), float(f[i + 2])) for i in (2, 5, 8)}
rows = [r for r in rows.values() if a in r and b in r]
for phase in ("create", "stat", "remove"):
    for i, what in ((0, "cpu µs/file"), (1, "files/s")):
        x = [r[a][phase][i] for r in rows]
        y = [r[b][phase][i] for r in rows]
        q = sorted(r[b][phase][i] / r[a][phase][i] for r in rows)
        n = len(q)
        print(f"{phase:7} {what:12} {a} {st.median(x):9.1f}  {b} {st.median(y):9.1f}  "
              f"{b}÷{a} median {st.median(q):.3f} IQR [{q[n // 4]:.2f}–{q[(3 * n) // 4]:.2f}]  higher in {sum(v > 1 for v in q)}/{n}")
PY
