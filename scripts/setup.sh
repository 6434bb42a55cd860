#!/usr/bin/env bash
# Installs the Debian 12 packages SFS needs to build and test. Idempotent:
# packages already installed are left alone, and `apt-get update` runs only
# when something is missing. Runs apt as root, or through sudo otherwise.
#
#   build: librocksdb-dev (linked instead of compiling RocksDB, see
#          .cargo/config.toml), libibverbs-dev librdmacm-dev libclang-dev clang
#          (rdma-sys bindings), pkg-config
#   tests: fio sqlite3 python3 git make gcc attr rsync autoconf automake (the
#          shim tests run them; attr is setfattr/getfattr)
#   object back ends: librados-dev (the `rados` back end links librados);
#          ceph-mon ceph-osd ceph-common radosgw uuid-runtime curl (the
#          private Ceph cluster scripts/ceph.sh starts for the rados and s3
#          tests: monitor, memstore OSD, CLI, S3 gateway, uuidgen, signed
#          S3 requests)
#   RDMA in a VM (scripts/rdma-vm-test.sh): qemu-system-x86 cpio xz-utils
#   simulated nodes (sfs_cli/tests/launcher.rs: sshd per network namespace,
#          `sfs start` over ssh): openssh-server openssh-client iproute2
#   Slurm and MPI (sfs_testkit::slurm, sfs_cli/tests/slurm.rs: a private
#          slurmctld, three slurmd, munged; MPI jobs): slurm-wlm munge
#          openmpi-bin libopenmpi-dev
#   and, with cargo, pjdfstest 0.2.2 into ~/.cache/sfs/tools (the POSIX
#          conformance run of sfs_cli/tests/pjdfstest.rs)
set -euo pipefail

packages=(
    librocksdb-dev libibverbs-dev librdmacm-dev libclang-dev clang pkg-config
    fio sqlite3 python3 git make gcc attr rsync autoconf automake
    librados-dev ceph-mon ceph-osd ceph-common radosgw uuid-runtime curl
    qemu-system-x86 cpio xz-utils
    openssh-server openssh-client iproute2
    slurm-wlm munge openmpi-bin libopenmpi-dev
)

if ! command -v dpkg-query >/dev/null || ! command -v apt-get >/dev/null; then
    echo "setup.sh: this script needs a Debian-like system (dpkg-query, apt-get);" >&2
    echo "setup.sh: install by hand: ${packages[*]}" >&2
    exit 1
fi

missing=()
for p in "${packages[@]}"; do
    status=$(dpkg-query -W -f='${db:Status-Status}' "$p" 2>/dev/null || true)
    [[ "$status" == "installed" ]] || missing+=("$p")
done

# Tools from crates.io the tests run (no Debian package): pjdfstest, the
# POSIX conformance suite the shim is checked against.
tools="$HOME/.cache/sfs/tools"
install_tools() {
    if [[ -x "$tools/bin/pjdfstest" ]]; then
        echo "setup.sh: pjdfstest present ($tools/bin)"
        return
    fi
    echo "setup.sh: installing pjdfstest 0.2.2 into $tools (cargo install)"
    local tool_log
    tool_log=$(mktemp)
    if ! cargo install --locked --quiet pjdfstest --version 0.2.2 --root "$tools" >"$tool_log" 2>&1; then
        echo "setup.sh: FAILED: cargo install pjdfstest" >&2
        tail -n 30 "$tool_log" >&2
        rm -f "$tool_log"
        exit 1
    fi
    rm -f "$tool_log"
}

if ((${#missing[@]} == 0)); then
    echo "setup.sh: all ${#packages[@]} packages present"
    install_tools
    exit 0
fi

if ((EUID == 0)); then
    as_root=(env DEBIAN_FRONTEND=noninteractive)
elif command -v sudo >/dev/null; then
    # Without a terminal (CI) sudo must fail at once instead of waiting for a
    # password nobody can type.
    sudo_flags=()
    [[ -t 0 ]] || sudo_flags=(-n)
    as_root=(sudo "${sudo_flags[@]}" env DEBIAN_FRONTEND=noninteractive)
else
    echo "setup.sh: missing packages: ${missing[*]}" >&2
    echo "setup.sh: not root and no sudo: install them as root and rerun" >&2
    exit 1
fi

log=$(mktemp)
trap 'rm -f "$log"' EXIT

# Runs an apt command quietly; on failure shows its output and stops.
apt_quiet() {
    if ! "${as_root[@]}" "$@" >"$log" 2>&1; then
        echo "setup.sh: FAILED: $*" >&2
        tail -n 30 "$log" >&2
        exit 1
    fi
}

echo "setup.sh: installing: ${missing[*]}"
apt_quiet apt-get update -q
apt_quiet apt-get install -y -q --no-install-recommends "${missing[@]}"
echo "setup.sh: installed: ${missing[*]}"
install_tools
