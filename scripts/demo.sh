#!/usr/bin/env bash
# THE demo of SFS: builds the `sfs` command, starts the three loopback servers
# of hostfile.example, copies a file in and out through the client library,
# shows the namespace and the servers, and stops them. Everything lives in a
# temporary directory that is removed at the end; the servers are stopped
# whether the demo succeeds or fails.
set -euo pipefail

cd "$(dirname "${BASH_SOURCE[0]}")/.."
repo=$(pwd)
export CARGO_TARGET_DIR="${CARGO_TARGET_DIR:-$HOME/.cache/sfs/target}"

say() { printf '\n\033[1m==> %s\033[0m\n' "$*"; }

say "setup"
bash scripts/setup.sh

say "build: cargo build --release -p sfs_cli -p sfs_shim -p sfs_preload"
cargo build --release -p sfs_cli -p sfs_shim -p sfs_preload
sfs_bin="$CARGO_TARGET_DIR/release/sfs"

work=$(mktemp -d "${TMPDIR:-/tmp}/sfs-demo.XXXXXX")
started=0

cleanup() {
    local rc=$?
    if ((started)); then
        say "stopping the servers (exit path)"
        "$sfs_bin" stop || true
    fi
    if ((rc != 0)); then
        for log in "$work"/root/*/server.log; do
            [[ -f "$log" ]] || continue
            echo "--- last lines of $log" >&2
            tail -n 20 "$log" >&2
        done
        echo "demo.sh: FAILED (exit $rc)" >&2
    fi
    rm -rf "$work"
    exit "$rc"
}
trap cleanup EXIT

# A private copy of the examples: servers keep their state under $work/root,
# so nothing is left in /tmp/sfs-root.
cp hostfile.example "$work/hostfile"
python3 - "$repo/config.example.json" "$work" <<'EOF'
import json, sys
source, work = sys.argv[1], sys.argv[2]
with open(source) as f:
    config = json.load(f)
config["rootdir"] = work + "/root"
config["mountdir"] = work + "/mnt"
config["hosts_file"] = "hostfile"
with open(work + "/config.json", "w") as f:
    json.dump(config, f, indent=2)
    f.write("\n")
EOF

# A port already in use (another demo still running, say) would make a server
# exit during start-up; say so plainly before starting anything. SO_REUSEADDR
# as the servers bind, so ports in TIME_WAIT do not count as taken.
python3 - "$work/config.json" "$work/hostfile" <<'EOF'
import json, socket, sys
offset = json.load(open(sys.argv[1]))["data_port_offset"]
for line in open(sys.argv[2]):
    line = line.split("#")[0].split()
    if len(line) != 2 or line[1].startswith("["):
        continue  # sfs itself reports malformed lines; IPv6 is not checked here
    host, _, port = line[1].partition(":")
    port = int(port or 7700)
    for p in {port, port + offset}:
        s = socket.socket()
        s.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
        try:
            s.bind((host, p))
        except OSError as e:
            sys.exit(f"demo.sh: {host}:{p} (server {line[0]}) is in use ({e.strerror}); stop whatever holds it")
        finally:
            s.close()
EOF

# Every later `sfs` (and the `sfs stop` of the exit path) finds the files
# through the environment; `start` names them explicitly to show the flags.
export SFS_HOSTFILE="$work/hostfile" SFS_CONFIG="$work/config.json"

say "sfs start --hostfile $work/hostfile --config $work/config.json"
started=1
"$sfs_bin" start --hostfile "$work/hostfile" --config "$work/config.json"

sfs() {
    echo "\$ sfs $*"
    "$sfs_bin" "$@"
}

source_file=/usr/share/common-licenses/GPL-3
if [[ ! -f "$source_file" ]]; then
    source_file="$work/sample.bin"
    head -c 3000000 /dev/urandom >"$source_file"
fi

say "namespace and data through the client library"
sfs mkdir -p /demo/data
sfs put "$source_file" /demo/data/gpl
sfs ls -l /demo/data
sfs stat /demo/data/gpl
sfs get /demo/data/gpl "$work/gpl.out"
echo "\$ cmp $source_file gpl.out"
cmp "$source_file" "$work/gpl.out"
echo "identical: $(stat -c %s "$source_file") bytes"

say "an unmodified program through the LD_PRELOAD shim: sfs exec -- sh -c ..."
mnt="$work/mnt"   # the `mountdir` of config.json: nothing is mounted, the shim knows the paths
"$sfs_bin" exec -- sh -c "
    set -e
    echo '\$ wc -c $mnt/demo/data/gpl'; wc -c $mnt/demo/data/gpl
    echo '\$ cp /etc/services $mnt/demo/'; cp /etc/services $mnt/demo/
    echo '\$ cd $mnt/demo && ls -l && grep -c tcp services'; cd $mnt/demo && ls -l && grep -c tcp services
    echo '\$ python3 -c ... (json round trip in the mount)'
    python3 -c \"import json; json.dump({'ok': True}, open('$mnt/demo/x.json', 'w')); print(json.load(open('$mnt/demo/x.json')))\"
"
sfs get /demo/services "$work/services.out"
echo "\$ cmp /etc/services services.out"
cmp /etc/services "$work/services.out"

say "drain to the object back end (config backend: dir under the rootdir)"
sfs flush -r /demo

say "servers (usage, and what each wrote back)"
sfs status

say "sfs stop"
started=0
sfs stop
say "demo finished"
