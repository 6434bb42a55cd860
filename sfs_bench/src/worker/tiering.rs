//! The client side of `sfs_bench tiering` (the servers, policies, flush,
//! restart and the back end's own rates are in `tiering.rs`): each rank
//! writes `files_per_proc` files of `easy_bytes` in `easy_transfer`
//! pieces, one file after the other, each fsynced and closed before the
//! next. So under the `idle` policy a rank's finished files are due for
//! write-back while it writes its later ones — the flusher runs beside the
//! foreground writes, which is what the mode compares. Reads go to the next
//! rank's files (IOR's -C), so no rank reads what its own client wrote.

use super::data::{read_transfers, write_staged, Expected};
use super::{staged_read_buf, staged_writes, workload_dir, Ctx, Staged};
use crate::pattern::Pattern;
use crate::spec::{Phase, WorkerSpec};
use crate::staging::PlannedWrite;
use anyhow::{bail, Result};

/// One file of a rank: its path and its pattern seed.
struct TierFile {
    path: String,
    seed: u64,
}

/// The files of `rank`, in the order it writes them.
fn files_of(spec: &WorkerSpec, rank: usize) -> Vec<TierFile> {
    let dir = workload_dir(spec);
    (0..spec.params.files_per_proc)
        .map(|k| TierFile {
            path: format!("{dir}/rank.{rank}.file.{k}"),
            seed: spec.params.seed ^ ((rank as u64 + 1) << 40) ^ ((k + 1) << 20),
        })
        .collect()
}

/// The rank whose files this phase touches (reads: the neighbour's).
fn data_rank(spec: &WorkerSpec) -> usize {
    match spec.phase {
        Phase::Read => (spec.rank + 1) % spec.params.nprocs,
        _ => spec.rank,
    }
}

fn transfers_per_file(spec: &WorkerSpec) -> u64 {
    spec.params.easy_bytes / spec.params.easy_transfer
}

pub(super) fn tiering_stage(spec: &WorkerSpec) -> Staged {
    let transfer = spec.params.easy_transfer;
    let per_file = transfers_per_file(spec);
    match spec.phase {
        Phase::Write => staged_writes(
            spec,
            files_of(spec, spec.rank).into_iter().flat_map(|file| {
                (0..per_file).map(move |i| PlannedWrite {
                    offset: i * transfer,
                    len: transfer as usize,
                    file_seed: file.seed,
                })
            }),
        ),
        Phase::Read | Phase::Verify => staged_read_buf(transfer),
        _ => Staged::default(),
    }
}

pub(super) fn tiering(ctx: &mut Ctx, phase: Phase, staged: &mut Staged) -> Result<()> {
    let spec = ctx.spec;
    let params = &spec.params;
    let rank = data_rank(spec);
    let files = files_of(spec, rank);
    let per_file = transfers_per_file(spec) as usize;
    match phase {
        Phase::Write => {
            for (k, file) in files.iter().enumerate() {
                let which = k * per_file..(k + 1) * per_file;
                write_staged(ctx, &file.path, &mut staged.writes, which)?;
            }
        }
        Phase::Read | Phase::Verify => {
            let transfer = params.easy_transfer;
            // Built only for the verify pass: the read phase is timed.
            let pattern =
                (phase == Phase::Verify).then(|| Pattern::new(params.seed, transfer as usize));
            for file in &files {
                let check = pattern.as_ref().map(|pattern| Expected {
                    pattern,
                    file_seed: file.seed,
                    writer: rank,
                });
                let offsets = (0..per_file as u64).map(|i| i * transfer);
                let buf = staged.read_buf.as_mut_slice();
                read_transfers(ctx, &file.path, offsets, buf, check)?;
            }
        }
        Phase::Remove => {
            for file in &files {
                ctx.timed(|fs| fs.unlink(&file.path))?;
            }
        }
        other => bail!("phase {} is not part of tiering", other.name()),
    }
    Ok(())
}
