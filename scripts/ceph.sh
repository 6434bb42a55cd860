#!/usr/bin/env bash
# A private, throw-away Ceph cluster on 127.0.0.1 for the `rados` and `s3`
# back-end tests:
#
#   scripts/ceph.sh start DIR [--stop-with PID]
#   scripts/ceph.sh stop DIR
#
# `start` runs one ceph-mon, one ceph-osd on memstore (data in memory; pool
# size 1) and radosgw (S3 on a free port), with no cephx auth, no systemd and
# no ceph-mgr. Everything it makes (ceph.conf, monmap, mon store, logs, pid
# files) lives under DIR. It returns once a real `rados put` and a real signed
# S3 PUT succeeded, and writes DIR/env, shell variables the tests read:
#
#   SFS_CEPH_DIR, SFS_CEPH_CONF, SFS_CEPH_POOL          (RADOS)
#   SFS_CEPH_S3_ENDPOINT, SFS_CEPH_S3_BUCKET,
#   SFS_CEPH_S3_ACCESS_KEY, SFS_CEPH_S3_SECRET_KEY      (S3 through radosgw)
#
# With --stop-with PID, a watcher stops the cluster and removes DIR (and
# DIR.lock, the lock file sfs_testkit takes to start one cluster per test
# run) once process PID is gone: a test run that started its own cluster.
# `stop` kills every daemon `start` started in DIR; calling it again, or on a
# DIR where nothing runs, does nothing. Packages: ceph-mon ceph-osd
# ceph-common radosgw curl python3 (scripts/setup.sh installs them).
#
# Facts this relies on (docs/tiering.md, "Testing against Ceph"): without
# ceph-mgr, CLI commands the mgr answers hang forever, so every `ceph` call
# runs under `timeout`; radosgw with auth off hangs at start unless its
# section sets the ms_*_mode options to `crc`.
set -euo pipefail

usage() {
    echo "usage: $0 start DIR [--stop-with PID] | stop DIR" >&2
    exit 2
}

(($# >= 2)) || usage
command=$1
dir=$2
shift 2

# The pool and bucket the tests use; tests separate themselves inside them
# (a RADOS namespace, an S3 key prefix per test).
pool=sfs
bucket=sfs
# radosgw checks S3 signatures against this user; the keys are test-only.
access_key=sfs-test-access
secret_key=sfs-test-secret

# Every `ceph`/`rados`/`radosgw-admin` call is bounded: against a cluster
# that is not (yet) there they wait forever.
ceph_cli() { timeout 20 ceph -c "$dir/ceph.conf" "$@"; }

# Prints a TCP port on 127.0.0.1 that is free right now.
free_port() {
    python3 -c 'import socket; s = socket.socket(); s.bind(("127.0.0.1", 0)); print(s.getsockname()[1])'
}

# Starts a daemon in the foreground mode of Ceph, detached from this shell
# (no inherited stdout: a caller reading our output must see EOF when we
# exit), and records its pid in DIR/pids.
spawn() {
    local name=$1
    shift
    setsid "$@" </dev/null >"$dir/log/$name.out" 2>&1 &
    echo "$! $name" >>"$dir/pids"
}

# Retries "$@" until it succeeds, for at most $1 seconds; on timeout prints
# what failed and the tail of log $2.
wait_for() {
    local seconds=$1 log=$2
    shift 2
    local deadline=$((SECONDS + seconds))
    until "$@" >"$dir/log/last-probe.out" 2>&1; do
        if ((SECONDS >= deadline)); then
            echo "ceph.sh: not ready after ${seconds} s: $*" >&2
            tail -n 5 "$dir/log/last-probe.out" >&2 || true
            echo "ceph.sh: last lines of $log:" >&2
            tail -n 20 "$log" >&2 || true
            # A daemon that exits before it opens its log (a full disk, a
            # port taken) says why on its own output.
            local out
            for out in "$dir"/log/*.out; do
                [[ $out == */last-probe.out ]] && continue
                echo "ceph.sh: last lines of $out:" >&2
                tail -n 5 "$out" >&2 || true
            done
            echo "ceph.sh: daemons still running:" >&2
            local pid name
            while read -r pid name; do
                kill -0 "$pid" 2>/dev/null && echo "  $name (pid $pid)" >&2
            done <"$dir/pids"
            df -h "$dir" >&2 || true
            return 1
        fi
        sleep 0.2
    done
}

stop() {
    [[ -f "$dir/pids" ]] || return 0
    local pid name
    # Newest first: radosgw and the OSD go before the monitor they talk to.
    while read -r pid name; do
        if kill -0 "$pid" 2>/dev/null; then
            kill "$pid" 2>/dev/null || true
        fi
    done < <(tac "$dir/pids")
    local deadline=$((SECONDS + 10))
    while read -r pid name; do
        while kill -0 "$pid" 2>/dev/null; do
            if ((SECONDS >= deadline)); then
                kill -9 "$pid" 2>/dev/null || true
                break
            fi
            sleep 0.1
        done
    done <"$dir/pids"
    rm -f "$dir/pids"
}

# A signed S3 request (AWS signature v4, done by curl); radosgw wants the
# payload hash as a header of its own.
s3_put() {
    local path=$1 body=$2
    curl -sS -f --max-time 10 -X PUT --data-binary "$body" \
        --aws-sigv4 "aws:amz:us-east-1:s3" --user "$access_key:$secret_key" \
        -H "x-amz-content-sha256: $(printf '%s' "$body" | sha256sum | cut -d' ' -f1)" \
        "http://127.0.0.1:$rgw_port/$path"
}

start() {
    local stop_with=
    while (($#)); do
        case $1 in
        --stop-with)
            stop_with=${2:?--stop-with needs a pid}
            shift 2
            ;;
        *) usage ;;
        esac
    done
    for tool in ceph-mon ceph-osd ceph radosgw radosgw-admin monmaptool rados curl python3 uuidgen; do
        command -v "$tool" >/dev/null || {
            echo "ceph.sh: $tool not found: run scripts/setup.sh (packages ceph-mon ceph-osd ceph-common radosgw curl python3)" >&2
            exit 1
        }
    done
    if [[ -f "$dir/pids" ]]; then
        echo "ceph.sh: $dir/pids exists: a cluster may run there; run '$0 stop $dir' first" >&2
        exit 1
    fi
    # A monitor store left by an earlier cluster would make --mkfs fail.
    if [[ -d "$dir" && -n "$(ls -A "$dir")" ]]; then
        echo "ceph.sh: $dir is not empty: give a new or empty directory" >&2
        exit 1
    fi
    mkdir -p "$dir"/{mon,osd,log,run}
    dir=$(cd "$dir" && pwd)
    local started=$SECONDS
    # A failed start leaves nothing running.
    cluster_up=false
    trap '$cluster_up || stop' EXIT

    local fsid mon_port osd_uuid
    fsid=$(uuidgen)
    osd_uuid=$(uuidgen)
    mon_port=$(free_port)
    rgw_port=$(free_port)
    cat >"$dir/ceph.conf" <<EOF
[global]
fsid = $fsid
mon host = v2:127.0.0.1:$mon_port
ms bind msgr1 = false
public addr = 127.0.0.1
cluster addr = 127.0.0.1
auth cluster required = none
auth service required = none
auth client required = none
run dir = $dir/run
admin socket = $dir/run/\$name.asok
log file = $dir/log/\$name.log
pid file = $dir/run/\$name.pid
mon data = $dir/mon/\$name
osd data = $dir/osd/\$name
osd objectstore = memstore
memstore device bytes = 2147483648
osd pool default size = 1
osd pool default min size = 1
osd pool default pg num = 8
osd pool default pgp num = 8
mon allow pool size one = true
mon allow pool delete = true
mon warn on pool no redundancy = false
# A cluster of one: no failure domain to spread over.
osd crush chooseleaf type = 0
# A test cluster of one monitor: commit map changes (pool creations,
# radosgw's pools) at once instead of batching them for a second each.
paxos propose interval = 0.01
paxos min wait = 0.001
# The monitor's store is a few MiB: a build machine whose disk is over 95 %
# full (a cold cargo target fills tens of GiB) must not stop it from
# starting ("monitor data filesystem reached concerning levels").
mon data avail crit = 0
mon data avail warn = 0
# Clients give up instead of waiting forever.
client mount timeout = 15
rados mon op timeout = 15
rados osd op timeout = 15

[client.rgw.sfs]
rgw frontends = beast endpoint=127.0.0.1:$rgw_port
rgw data = $dir/rgw
ms client mode = crc
ms cluster mode = crc
ms service mode = crc
ms mon client mode = crc
ms mon cluster mode = crc
ms mon service mode = crc
EOF
    ceph-authtool --create-keyring "$dir/mon.keyring" --gen-key -n mon. \
        --cap mon 'allow *' >/dev/null
    monmaptool --create --fsid "$fsid" --addv a "[v2:127.0.0.1:$mon_port]" \
        "$dir/monmap" >/dev/null
    ceph-mon -c "$dir/ceph.conf" --mkfs -i a --monmap "$dir/monmap" \
        --keyring "$dir/mon.keyring" >"$dir/log/mon-mkfs.out" 2>&1
    spawn mon.a ceph-mon -c "$dir/ceph.conf" -i a -f
    wait_for 30 "$dir/log/mon.a.log" ceph_cli mon stat

    local osd_id
    osd_id=$(ceph_cli osd create "$osd_uuid")
    mkdir -p "$dir/osd/osd.$osd_id"
    ceph-osd -c "$dir/ceph.conf" -i "$osd_id" --mkfs --osd-uuid "$osd_uuid" \
        >"$dir/log/osd-mkfs.out" 2>&1
    spawn "osd.$osd_id" ceph-osd -c "$dir/ceph.conf" -i "$osd_id" -f
    ceph_cli osd pool create "$pool" 8 8 >/dev/null 2>&1
    ceph_cli osd pool application enable "$pool" rados >/dev/null 2>&1
    # A real write through the OSD: the pool's PGs are active.
    wait_for 60 "$dir/log/osd.$osd_id.log" \
        timeout 10 rados -c "$dir/ceph.conf" -p "$pool" put ceph-sh-probe "$dir/ceph.conf"
    timeout 10 rados -c "$dir/ceph.conf" -p "$pool" rm ceph-sh-probe

    mkdir -p "$dir/rgw"
    spawn rgw radosgw -c "$dir/ceph.conf" -n client.rgw.sfs -f
    timeout 60 radosgw-admin -c "$dir/ceph.conf" -n client.rgw.sfs user create \
        --uid=sfs-test --display-name="SFS tests" \
        --access-key="$access_key" --secret-key="$secret_key" \
        >"$dir/log/rgw-user.out" 2>&1
    # Real S3 requests: create the bucket (object_store does not), then put.
    wait_for 60 "$dir/log/client.rgw.sfs.log" s3_put "$bucket" ""
    s3_put "$bucket/ceph-sh-probe" "ready" >/dev/null

    cat >"$dir/env" <<EOF
SFS_CEPH_DIR=$dir
SFS_CEPH_CONF=$dir/ceph.conf
SFS_CEPH_POOL=$pool
SFS_CEPH_S3_ENDPOINT=http://127.0.0.1:$rgw_port
SFS_CEPH_S3_BUCKET=$bucket
SFS_CEPH_S3_ACCESS_KEY=$access_key
SFS_CEPH_S3_SECRET_KEY=$secret_key
EOF
    cluster_up=true
    if [[ -n "$stop_with" ]]; then
        # `tail --pid` returns when the process is gone.
        setsid bash -c 'tail --pid="$1" -f /dev/null; bash "$2" stop "$3"; rm -rf "$3" "$3.lock"' \
            ceph-watch "$stop_with" "$(realpath "${BASH_SOURCE[0]}")" "$dir" \
            </dev/null >/dev/null 2>&1 &
    fi
    echo "ceph.sh: cluster up in $((SECONDS - started)) s: $dir/env"
}

case $command in
start) start "$@" ;;
stop)
    (($# == 0)) || usage
    [[ -d "$dir" ]] || exit 0
    stop
    ;;
*) usage ;;
esac
