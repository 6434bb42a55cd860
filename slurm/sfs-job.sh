#!/bin/bash
# A Slurm batch script that gives a job its own SFS on its own nodes
# (docs/slurm.md, "A job script"): start SFS on every node as one srun step,
# stage in, run the job's command, stage out, stop and clean — also when the
# command fails. Use it as it is, or copy it and replace the command part.
#
#   sbatch --nodes=4 slurm/sfs-job.sh mpirun sfs exec -- ./solver /sfs/in /sfs/out
#
# Settings (environment, exported to the job by sbatch; defaults in brackets):
#   SFS               the sfs binary [sfs on PATH]
#   SFS_JOB_DIR       config, hostfile and job secret, on a file system every
#                     node sees [$HOME/sfs-jobs/$SLURM_JOB_ID]
#   SFS_ROOTDIR       each server's node-local state [/tmp/sfs-$SLURM_JOB_ID]
#   SFS_MOUNTDIR      where programs see SFS [/sfs]
#   SFS_ADDRESS       `sfs hostfile --address` template [{node}]
#   SFS_PORT          the servers' RPC port [7700]
#   SFS_EXTRA_CONFIG  more config.json fields, JSON without braces []
#   SFS_STAGE_IN_MANIFEST, SFS_STAGE_OUT_MANIFEST
#                     files of `SRC DST` lines for `sfs stage-in|stage-out
#                     --manifest` (docs/staging.md) []; on several nodes
#                     one rank per node moves its share (an srun step of
#                     `--rank-from-env`), then one run finishes the stage
#   SFS_STAGE_STATE_DIR  the stage journals [$SFS_JOB_DIR/stage]
set -euo pipefail

SFS=${SFS:-sfs}
: "${SLURM_JOB_ID:?not inside a Slurm job (sbatch or salloc)}"
SFS_JOB_DIR=${SFS_JOB_DIR:-$HOME/sfs-jobs/$SLURM_JOB_ID}
SFS_ROOTDIR=${SFS_ROOTDIR:-/tmp/sfs-$SLURM_JOB_ID}
export SFS_MOUNTDIR=${SFS_MOUNTDIR:-/sfs}
SFS_ADDRESS=${SFS_ADDRESS:-'{node}'}
SFS_PORT=${SFS_PORT:-7700}

mkdir -p "$SFS_JOB_DIR"
chmod 0700 "$SFS_JOB_DIR"
export SFS_CONFIG=$SFS_JOB_DIR/config.json SFS_HOSTFILE=$SFS_JOB_DIR/hostfile
cat >"$SFS_CONFIG" <<EOF
{
  "rootdir": "$SFS_ROOTDIR",
  "mountdir": "$SFS_MOUNTDIR",
  "launcher": { "kind": "srun", "sfs_path": "$(command -v "$SFS")" }${SFS_EXTRA_CONFIG:+,
  $SFS_EXTRA_CONFIG}
}
EOF
export SFS_STAGE_STATE_DIR=${SFS_STAGE_STATE_DIR:-$SFS_JOB_DIR/stage}
"$SFS" hostfile --slurm --address "$SFS_ADDRESS" --port "$SFS_PORT" -o "$SFS_HOSTFILE"

# Stop and clean whatever happens below; the job's exit status is the
# command's (or the first failing step's).
finish() {
    local status=$?
    "$SFS" stop || status=1
    "$SFS" clean || true
    exit "$status"
}
"$SFS" start
trap finish EXIT

# stage-in|stage-out MANIFEST: on several nodes every node moves its share
# first; the last run copies what no rank finished and sets directory modes
# and times.
stage() {
    local nodes=${SLURM_JOB_NUM_NODES:-1}
    if [[ $nodes -gt 1 ]]; then
        srun --overlap --nodes="$nodes" --ntasks="$nodes" --ntasks-per-node=1 \
            "$SFS" "$1" --manifest "$2" --rank-from-env
    fi
    "$SFS" "$1" --manifest "$2"
}

if [[ -n "${SFS_STAGE_IN_MANIFEST:-}" ]]; then
    stage stage-in "$SFS_STAGE_IN_MANIFEST"
fi

if [[ $# -gt 0 ]]; then
    "$@"
else
    echo "sfs-job.sh: no command given; SFS ran with nothing to do" >&2
fi

if [[ -n "${SFS_STAGE_OUT_MANIFEST:-}" ]]; then
    stage stage-out "$SFS_STAGE_OUT_MANIFEST"
fi
