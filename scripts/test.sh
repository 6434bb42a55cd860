#!/usr/bin/env bash
# THE test command of SFS (CI runs it through .ci/run):
#   1. scripts/setup.sh       system packages
#   2. cargo fmt --check      formatting
#   3. cargo clippy           lints, warnings are errors
#   3b. scripts/rdma-vm-test.sh RDMA over Soft-RoCE in a QEMU guest
#   4. artefacts              sfs and the shim libraries, which the tests
#                             run (sfs_testkit would build them on demand;
#                             built here so the time shows as its own step)
#   5. ceph                   scripts/ceph.sh: one private Ceph cluster
#                             (mon, memstore OSD, radosgw) on 127.0.0.1 for
#                             the rados and s3 back-end tests, stopped when
#                             this script exits, also on failure
#   6. tests                  cargo nextest (+ doctests) when installed,
#                             else cargo test
# Works from any directory. The target directory defaults to
# ~/.cache/sfs/target so a build survives between runs; set CARGO_TARGET_DIR
# to use another one (CI, .ci/run, starts from an empty one every time).
# The last lines printed are the test runner's summary.
set -euo pipefail

cd "$(dirname "${BASH_SOURCE[0]}")/.."
export CARGO_TARGET_DIR="${CARGO_TARGET_DIR:-$HOME/.cache/sfs/target}"

started_all=$SECONDS

# Runs one step and prints how long it took.
step() {
    local name=$1
    shift
    echo "==> $name: $*"
    local started=$SECONDS
    "$@"
    echo "==> $name: ok in $((SECONDS - started)) s"
}

step setup bash scripts/setup.sh

if ! command -v cargo >/dev/null; then
    echo "test.sh: cargo not found: install Rust (https://rustup.rs) and rerun" >&2
    exit 1
fi
echo "==> target dir: $CARGO_TARGET_DIR"

step fmt cargo fmt --all -- --check
step clippy cargo clippy --workspace --all-targets -- -D warnings
# The RDMA data path on a real (software) RoCE device: a QEMU guest with
# rdma_rxe runs the transport conformance suite over RDMA and an end-to-end
# sfs run (about 1.5 min here once the .debs are cached; SFS_SKIP_RDMA_VM=1
# skips it, saying so).
if [[ "${SFS_SKIP_RDMA_VM:-0}" == 1 ]]; then
    echo "==> rdma-vm: skipped (SFS_SKIP_RDMA_VM=1)"
else
    step rdma-vm bash scripts/rdma-vm-test.sh
fi

step artefacts cargo build -p sfs_cli -p sfs_shim -p sfs_preload

# The back-end tests find the cluster through the SFS_CEPH_* variables of
# DIR/env (sfs_testkit::ceph; without them each run starts its own).
ceph_dir=$(mktemp -d "${TMPDIR:-/tmp}/sfs-ceph.XXXXXX")
stop_ceph() {
    bash scripts/ceph.sh stop "$ceph_dir" || true
    rm -rf "$ceph_dir"
}
trap stop_ceph EXIT
step ceph bash scripts/ceph.sh start "$ceph_dir"
set -a
# shellcheck source=/dev/null
source "$ceph_dir/env"
set +a

if cargo nextest --version >/dev/null 2>&1; then
    # nextest does not run doctests: run them first, so that nextest's
    # summary stays the last thing printed.
    step doctests cargo test --workspace --doc
    echo "==> tests: cargo nextest run --workspace (before tests: $((SECONDS - started_all)) s)"
    # Not `exec`: the EXIT trap must still stop the Ceph cluster.
    cargo nextest run --workspace --no-fail-fast
else
    echo "==> tests: cargo test --workspace (before tests: $((SECONDS - started_all)) s)"
    cargo test --workspace --no-fail-fast
fi
