#!/usr/bin/env bash
# Two or more `sfs` builds side by side: each round starts, for every build
# in turn, a fresh cluster of SERVERS servers on 127.0.0.1 (state on
# /dev/shm), runs `sfs bench data` and `sfs bench meta` with that build and
# stops it, so a noisy machine affects every build alike. Prints the median,
# minimum and maximum of each figure per build, and each build's median
# over the first's. Each round starts with the next build in turn.
#
#   scripts/compare-builds.sh ROUNDS LABEL=PATH/TO/sfs LABEL=PATH/TO/sfs ...
#
# SERVERS (2), FILES (files of `bench meta`, 20000), SIZE_MIB (`bench data`,
# 1024; 0 skips it), COUNTS=1 also prints each server's lean requests per
# method after the first round of each build (from its metrics port: builds
# without metrics fail to start with it).
set -euo pipefail
rounds=$1
shift
servers=${SERVERS:-2}
work=$(mktemp -d)
state=$(mktemp -d -p /dev/shm sfs-compare.XXXXXX)
current=""
stop_cluster() {
    [ -n "$current" ] && "$current" --config "$work/config.json" --hostfile "$work/hostfile" stop >/dev/null 2>&1 || true
    current=""
}
trap 'stop_cluster; rm -rf "$work" "$state"' EXIT
free_port() { python3 -c 'import socket; s=socket.socket(); s.bind(("127.0.0.1", 0)); print(s.getsockname()[1])'; }
declare -A results
figures="write read create stat remove"
builds=("$@")
for round in $(seq "$rounds"); do
    # Each round starts with another build: no build always runs first.
    order=()
    for i in "${!builds[@]}"; do
        order+=("${builds[$(((i + round - 1) % ${#builds[@]}))]}")
    done
    for build in "${order[@]}"; do
        label=${build%%=*}
        bin=${build#*=}
        rm -rf "${state:?}"/*
        : >"$work/hostfile"
        for i in $(seq 0 $((servers - 1))); do
            # Every port of a server (gRPC, data = +1, metrics = +2) free.
            while :; do
                port=$(free_port)
                if python3 -c "import socket,sys
for p in (${port}+1, ${port}+2):
    s=socket.socket(); s.bind(('127.0.0.1', p)); s.close()" 2>/dev/null; then break; fi
            done
            echo "s$i 127.0.0.1:$port" >>"$work/hostfile"
        done
        metrics=""
        [ "${COUNTS:-0}" = 1 ] && [ "$round" = 1 ] && metrics=', "metrics_port_offset": 2'
        echo "{\"rootdir\": \"$state\"$metrics}" >"$work/config.json"
        current=$bin
        "$bin" --config "$work/config.json" --hostfile "$work/hostfile" start >/dev/null
        out=""
        if [ "${SIZE_MIB:-1024}" != 0 ]; then
            out=$("$bin" --config "$work/config.json" --hostfile "$work/hostfile" bench data --size-mib "${SIZE_MIB:-1024}")
        fi
        out+=$'\n'$("$bin" --config "$work/config.json" --hostfile "$work/hostfile" bench meta --files "${FILES:-20000}")
        if [ "${COUNTS:-0}" = 1 ] && [ "$round" = 1 ]; then
            while read -r _ addr; do
                [ -z "$addr" ] && continue
                mport=$((${addr##*:} + 2))
                echo "== $label ${addr}: lean requests per method"
                curl -s "http://127.0.0.1:$mport/metrics" | grep '^sfs_rpc_requests_total' | grep -v ' 0$' || true
            done < <(grep -v '^#' "$work/hostfile")
        fi
        stop_cluster
        for f in $figures; do
            # `bench data` prints "write ... N MB/s", `bench meta` "create N ops/s".
            v=$(awk -v f="$f" '$1 == f { for (i = 2; i <= NF; i++) if ($i ~ /^[0-9.]+$/) { print $i; exit } }' <<<"$out")
            results[$label.$f]="${results[$label.$f]:-} ${v:-nan}"
        done
    done
done
uptime
median() { printf '%s\n' "$@" | sort -g | awk '{ v[NR] = $1 } END { print v[int((NR + 1) / 2)] }'; }
first=${1%%=*}
for f in $figures; do
    for build in "$@"; do
        label=${build%%=*}
        # shellcheck disable=SC2086
        m=$(median ${results[$label.$f]})
        # shellcheck disable=SC2086
        b=$(median ${results[$first.$f]})
        # shellcheck disable=SC2086
        printf '%-7s %-10s median %10.1f  min %10.1f  max %10.1f  ÷%s %.3f   [%s ]\n' "$f" "$label" "$m" \
            "$(printf '%s\n' ${results[$label.$f]} | sort -g | head -1)" \
            "$(printf '%s\n' ${results[$label.$f]} | sort -g | tail -1)" \
            "$first" "$(awk -v m="$m" -v b="$b" 'BEGIN { print (b > 0 ? m / b : 0) }')" \
            "${results[$label.$f]}"
    done
done
