# Sourced by the benchmark scripts: helpers for clusters on 127.0.0.1.

# A free TCP port on 127.0.0.1 (bound and released; a server binds it
# right after).
free_port() {
    python3 -c 'import socket; s=socket.socket(); s.bind(("127.0.0.1", 0)); print(s.getsockname()[1])'
}

# Writes hostfile FILE listing N servers s0..s(N-1) on 127.0.0.1, each on
# a free port.
local_hostfile() {
    local file=$1 n=$2 i
    : >"$file"
    for i in $(seq 0 $((n - 1))); do
        echo "s$i 127.0.0.1:$(free_port)" >>"$file"
    done
}
