//! The data workloads: IOR-easy N-N and N-1, IOR-hard, random 4 KiB I/O.
//! For each, where a rank's bytes go, what it stages before the barrier
//! (its writes' data, its read buffer) and its phases.

use super::{staged_read_buf, staged_writes, workload_dir, Ctx, Staged};
use crate::fsapi::OpenMode;
use crate::pattern::Pattern;
use crate::spec::{Params, Phase, WorkerSpec, Workload};
use crate::staging::{PlannedWrite, StagedWrites};
use anyhow::{bail, Result};
use rand::{rngs::StdRng, Rng, SeedableRng};
use std::collections::HashSet;

/// Where one rank's IOR transfers go.
struct IorLayout {
    path: String,
    file_seed: u64,
    transfer: u64,
    transfers: u64,
    /// File offset of transfer `i` of `rank`.
    offset: fn(&Params, usize, u64) -> u64,
}

fn ior_layout(dir: &str, workload: Workload, params: &Params, rank: usize) -> IorLayout {
    match workload {
        Workload::IorEasyNn => IorLayout {
            path: format!("{dir}/file.{rank}"),
            file_seed: params.seed ^ ((rank as u64 + 1) << 40),
            transfer: params.easy_transfer,
            transfers: params.easy_bytes / params.easy_transfer,
            offset: |p, _, i| i * p.easy_transfer,
        },
        Workload::IorEasyN1 => IorLayout {
            path: format!("{dir}/shared"),
            file_seed: params.seed,
            transfer: params.easy_transfer,
            transfers: params.easy_bytes / params.easy_transfer,
            offset: |p, r, i| {
                r as u64 * (p.easy_bytes / p.easy_transfer * p.easy_transfer) + i * p.easy_transfer
            },
        },
        _ => IorLayout {
            path: format!("{dir}/shared"),
            file_seed: params.seed ^ 0x4a5d,
            transfer: params.hard_transfer,
            transfers: params.hard_transfers,
            offset: |p, r, i| (i * p.nprocs as u64 + r as u64) * p.hard_transfer,
        },
    }
}

/// The rank whose data this rank's phase touches: reads go to another
/// rank's data (IOR's -C), so no rank reads what its own client may still hold.
fn ior_data_rank(spec: &WorkerSpec) -> usize {
    match spec.phase {
        Phase::Read => (spec.rank + 1) % spec.params.nprocs,
        _ => spec.rank,
    }
}

pub(super) fn ior_stage(spec: &WorkerSpec) -> Staged {
    let params = &spec.params;
    let rank = ior_data_rank(spec);
    let layout = ior_layout(&workload_dir(spec), spec.workload, params, rank);
    match spec.phase {
        Phase::Write => staged_writes(
            spec,
            (0..layout.transfers).map(|i| PlannedWrite {
                offset: (layout.offset)(params, rank, i),
                len: layout.transfer as usize,
                file_seed: layout.file_seed,
            }),
        ),
        Phase::Read | Phase::Verify => staged_read_buf(layout.transfer),
        _ => Staged::default(),
    }
}

/// The timed part of a write phase: staged writes `which` in order into
/// `path`, then fsync (the phase ends when the data is durable) and close.
pub(super) fn write_staged(
    ctx: &mut Ctx,
    path: &str,
    writes: &mut StagedWrites,
    which: std::ops::Range<usize>,
) -> Result<()> {
    let file = ctx.fs.open(path, OpenMode::CreateReadWrite)?;
    for i in which {
        let (offset, data) = writes.data(i);
        ctx.timed(|fs| fs.pwrite_all(&file, data, offset))?;
        ctx.bytes += data.len() as u64;
    }
    ctx.fs.fsync(&file)?;
    ctx.fs.close(file)
}

/// What a verify pass compares the bytes it reads with.
pub(super) struct Expected<'a> {
    pub pattern: &'a Pattern,
    pub file_seed: u64,
    /// The rank that wrote them (for the message).
    pub writer: usize,
}

/// Reads `buf.len()` bytes at each of `offsets` of `path`: timed and
/// counted as the phase's bytes (a read phase), or with `check` untimed and
/// compared (a verify pass).
pub(super) fn read_transfers(
    ctx: &mut Ctx,
    path: &str,
    offsets: impl Iterator<Item = u64>,
    buf: &mut [u8],
    check: Option<Expected>,
) -> Result<()> {
    let len = buf.len() as u64;
    let file = ctx.fs.open(path, OpenMode::Read)?;
    for offset in offsets {
        match &check {
            None => {
                ctx.timed(|fs| fs.pread_exact(&file, buf, offset))?;
                ctx.bytes += len;
            }
            Some(expected) => {
                ctx.fs.pread_exact(&file, buf, offset)?;
                if let Err(at) = expected.pattern.check(buf, offset, expected.file_seed) {
                    bail!(
                        "verification failed: {path} byte {at} differs from what rank {} wrote",
                        expected.writer
                    );
                }
                ctx.verified += len;
            }
        }
    }
    ctx.fs.close(file)
}

pub(super) fn ior(ctx: &mut Ctx, phase: Phase, staged: &mut Staged) -> Result<()> {
    let spec = ctx.spec;
    let params = &spec.params;
    let rank = ior_data_rank(spec);
    let layout = ior_layout(&ctx.dir(), spec.workload, params, rank);
    match phase {
        Phase::Write => {
            // IOR -e: the write phase ends when the data is durable.
            let all = 0..staged.writes.len();
            write_staged(ctx, &layout.path, &mut staged.writes, all)?;
        }
        Phase::Read | Phase::Verify => {
            // Verify is its own phase, not a rate: every byte read back and
            // compared (the read phase builds no pattern: it is timed).
            let pattern = (phase == Phase::Verify)
                .then(|| Pattern::new(params.seed, layout.transfer as usize));
            let check = pattern.as_ref().map(|pattern| Expected {
                pattern,
                file_seed: layout.file_seed,
                writer: rank,
            });
            let offsets = (0..layout.transfers).map(|i| (layout.offset)(params, rank, i));
            let buf = staged.read_buf.as_mut_slice();
            read_transfers(ctx, &layout.path, offsets, buf, check)?;
        }
        Phase::Remove => {
            if spec.workload == Workload::IorEasyNn || spec.rank == 0 {
                ctx.timed(|fs| fs.unlink(&layout.path))?;
            }
        }
        other => bail!(
            "phase {} is not part of {}",
            other.name(),
            spec.workload.name()
        ),
    }
    Ok(())
}

const BLOCK: u64 = 4096;

/// Random 4 KiB I/O: where each rank's part of the file is, its seeds, and
/// the blocks it rewrites (in order; the verify phase regenerates them).
struct RandomLayout {
    path: String,
    /// This rank's part: blocks `[first, first + per_proc)`.
    first: u64,
    per_proc: u64,
    prefill_seed: u64,
    rewrite_seed: u64,
}

impl RandomLayout {
    fn new(spec: &WorkerSpec) -> RandomLayout {
        let params = &spec.params;
        let per_proc = params.random_blocks_per_proc();
        RandomLayout {
            path: format!("{}/file", workload_dir(spec)),
            first: spec.rank as u64 * per_proc,
            per_proc,
            prefill_seed: params.seed ^ 0xa,
            rewrite_seed: params.seed ^ 0xb,
        }
    }

    /// This rank's part of the file in pieces of up to 1 MiB: (offset, length).
    fn prefill_pieces(&self) -> impl Iterator<Item = (u64, usize)> {
        let end = (self.first + self.per_proc) * BLOCK;
        (self.first * BLOCK..end)
            .step_by(1 << 20)
            .map(move |offset| (offset, (end - offset).min(1 << 20) as usize))
    }

    fn rewritten_blocks(&self, spec: &WorkerSpec) -> impl Iterator<Item = u64> {
        let params = &spec.params;
        let mut rng = StdRng::seed_from_u64(params.seed ^ (spec.rank as u64) << 8 ^ 1);
        let (first, per_proc) = (self.first, self.per_proc);
        (0..params.random_ops).map(move |_| first + rng.gen_range(0..per_proc))
    }
}

pub(super) fn random_stage(spec: &WorkerSpec) -> Staged {
    let params = &spec.params;
    let layout = RandomLayout::new(spec);
    match spec.phase {
        Phase::Prefill => staged_writes(
            spec,
            layout.prefill_pieces().map(|(offset, len)| PlannedWrite {
                offset,
                len,
                file_seed: layout.prefill_seed,
            }),
        ),
        Phase::RandWrite => staged_writes(
            spec,
            layout.rewritten_blocks(spec).map(|block| PlannedWrite {
                offset: block * BLOCK,
                len: BLOCK as usize,
                file_seed: layout.rewrite_seed,
            }),
        ),
        Phase::RandRead => {
            let blocks = layout.per_proc * params.nprocs as u64;
            let mut rng = StdRng::seed_from_u64(params.seed ^ (spec.rank as u64) << 8 ^ 2);
            Staged {
                read_offsets: (0..params.random_ops)
                    .map(|_| rng.gen_range(0..blocks) * BLOCK)
                    .collect(),
                ..staged_read_buf(BLOCK)
            }
        }
        Phase::Verify => staged_read_buf(1 << 20),
        _ => Staged::default(),
    }
}

pub(super) fn random(ctx: &mut Ctx, phase: Phase, staged: &mut Staged) -> Result<()> {
    let spec = ctx.spec;
    let layout = RandomLayout::new(spec);
    let path = &layout.path;
    match phase {
        Phase::Prefill | Phase::RandWrite => {
            let all = 0..staged.writes.len();
            write_staged(ctx, path, &mut staged.writes, all)?;
        }
        Phase::RandRead => {
            let buf = staged.read_buf.as_mut_slice();
            let file = ctx.fs.open(path, OpenMode::Read)?;
            for &offset in &staged.read_offsets {
                ctx.timed(|fs| fs.pread_exact(&file, buf, offset))?;
                ctx.bytes += BLOCK;
            }
            ctx.fs.close(file)?;
        }
        Phase::Verify => {
            let pattern = Pattern::new(spec.params.seed, 1 << 20);
            let rewritten: HashSet<u64> = layout.rewritten_blocks(spec).collect();
            let buf = staged.read_buf.as_mut_slice();
            let file = ctx.fs.open(path, OpenMode::Read)?;
            for (offset, n) in layout.prefill_pieces() {
                ctx.fs.pread_exact(&file, &mut buf[..n], offset)?;
                for (k, block) in buf[..n].chunks(BLOCK as usize).enumerate() {
                    let at = offset + k as u64 * BLOCK;
                    let seed = if rewritten.contains(&(at / BLOCK)) {
                        layout.rewrite_seed
                    } else {
                        layout.prefill_seed
                    };
                    if let Err(bad) = pattern.check(block, at, seed) {
                        bail!(
                            "verification failed: {path} byte {bad} differs from what was written"
                        );
                    }
                }
                ctx.verified += n as u64;
            }
            ctx.fs.close(file)?;
        }
        Phase::Remove => {
            if spec.rank == 0 {
                ctx.timed(|fs| fs.unlink(path))?;
            }
        }
        other => bail!("phase {} is not part of random-4k", other.name()),
    }
    Ok(())
}
