//! The worker process: runs one phase of one workload as one client rank.
//!
//! The orchestrator starts it as `sfs_bench __worker SPEC_JSON` (under the
//! shim, or not). It connects first (untimed), prints `ready`, waits for `go`
//! on stdin so every rank starts together, runs the phase, writes its latency
//! histogram to the file named in the spec and prints a [`WorkerResult`] as
//! one JSON line. Any error, including a verification mismatch, makes it exit
//! with status 1 and the reason on stderr.

use crate::fsapi::{FileSystem, LibFs, OpenMode, PosixFs};
use crate::pattern::Pattern;
use crate::spec::{Access, Params, Phase, WorkerResult, WorkerSpec, Workload};
use anyhow::{bail, Context, Result};
use hdrhistogram::Histogram;
use rand::{rngs::StdRng, Rng, SeedableRng};
use std::collections::HashSet;
use std::io::{BufRead, Write};
use std::time::Instant;

/// Latencies are recorded in nanoseconds, up to one minute, 3 significant digits.
pub fn new_histogram() -> Histogram<u64> {
    Histogram::new_with_bounds(1, 60_000_000_000, 3).expect("valid histogram bounds")
}

/// CLOCK_MONOTONIC in nanoseconds: one clock for all processes of the machine,
/// so the phase's wall time is the latest end minus the earliest start.
pub fn monotonic_ns() -> u64 {
    let mut ts = libc::timespec {
        tv_sec: 0,
        tv_nsec: 0,
    };
    // SAFETY: `ts` is a valid, writable timespec; CLOCK_MONOTONIC always exists on Linux.
    let rc = unsafe { libc::clock_gettime(libc::CLOCK_MONOTONIC, &mut ts) };
    assert_eq!(rc, 0, "clock_gettime(CLOCK_MONOTONIC)");
    ts.tv_sec as u64 * 1_000_000_000 + ts.tv_nsec as u64
}

/// User and system CPU time of this process (all threads), in microseconds.
fn cpu_self_us() -> (u64, u64) {
    // SAFETY: an all-zero rusage is a valid value of the plain C struct.
    let mut usage: libc::rusage = unsafe { std::mem::zeroed() };
    // SAFETY: `usage` is a valid, writable rusage for getrusage to fill.
    let rc = unsafe { libc::getrusage(libc::RUSAGE_SELF, &mut usage) };
    assert_eq!(rc, 0, "getrusage");
    let us = |tv: libc::timeval| tv.tv_sec as u64 * 1_000_000 + tv.tv_usec as u64;
    (us(usage.ru_utime), us(usage.ru_stime))
}

/// Entry point of `sfs_bench __worker SPEC_JSON`.
pub fn main(spec_json: &str) -> Result<()> {
    let spec: WorkerSpec = serde_json::from_str(spec_json).context("bad worker spec")?;
    let fs: Box<dyn FileSystem> = match &spec.access {
        Access::Posix => Box::new(PosixFs),
        Access::Lib { config, hostfile } => Box::new(LibFs {
            client: sfs_client::Client::from_files(config, hostfile)
                .context("creating the SFS client")?,
        }),
    };
    // Connect before the barrier: lstat a few names that hash to different
    // servers, so connection set-up is not part of the timed phase.
    for k in 0..16 {
        let _ = fs.lstat(&format!("{}/.warm-up-{k}", spec.root));
    }
    let mut stdout = std::io::stdout().lock();
    writeln!(stdout, "ready")?;
    stdout.flush()?;
    let mut line = String::new();
    std::io::stdin().lock().read_line(&mut line)?;
    if line.trim() != "go" {
        bail!("expected `go` from the orchestrator, got {line:?}");
    }

    let mut histogram = new_histogram();
    let (user0, system0) = cpu_self_us();
    let start_ns = monotonic_ns();
    let mut ctx = Ctx {
        fs: fs.as_ref(),
        spec: &spec,
        histogram: &mut histogram,
        ops: 0,
        bytes: 0,
        verified: 0,
    };
    run_phase(&mut ctx)?;
    let (ops, bytes, verified) = (ctx.ops, ctx.bytes, ctx.verified);
    let end_ns = monotonic_ns();
    let (user1, system1) = cpu_self_us();

    let mut encoded = Vec::new();
    use hdrhistogram::serialization::Serializer as _;
    hdrhistogram::serialization::V2Serializer::new()
        .serialize(&histogram, &mut encoded)
        .map_err(|e| anyhow::anyhow!("serializing the histogram: {e:?}"))?;
    std::fs::write(&spec.histogram, encoded)
        .with_context(|| format!("writing {}", spec.histogram.display()))?;
    let result = WorkerResult {
        rank: spec.rank,
        start_ns,
        end_ns,
        ops,
        bytes,
        user_us: user1 - user0,
        system_us: system1 - system0,
        verified,
    };
    writeln!(stdout, "{}", serde_json::to_string(&result)?)?;
    stdout.flush()?;
    Ok(())
}

struct Ctx<'a> {
    fs: &'a dyn FileSystem,
    spec: &'a WorkerSpec,
    histogram: &'a mut Histogram<u64>,
    ops: u64,
    bytes: u64,
    verified: u64,
}

impl Ctx<'_> {
    /// Runs one timed operation and records its latency.
    fn timed<T>(&mut self, op: impl FnOnce(&dyn FileSystem) -> Result<T>) -> Result<T> {
        let started = Instant::now();
        let out = op(self.fs)?;
        self.histogram
            .saturating_record(started.elapsed().as_nanos().max(1) as u64);
        self.ops += 1;
        Ok(out)
    }

    fn params(&self) -> &Params {
        &self.spec.params
    }

    fn dir(&self) -> String {
        format!("{}/{}", self.spec.root, self.spec.workload.name())
    }
}

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

fn run_phase(ctx: &mut Ctx) -> Result<()> {
    let spec = ctx.spec;
    match (spec.workload, spec.phase) {
        (w, Phase::Prepare) => prepare(ctx, w),
        (w, Phase::Teardown) => teardown(ctx, w),
        (Workload::IorEasyNn | Workload::IorEasyN1 | Workload::IorHard, phase) => ior(ctx, phase),
        (Workload::Random4k, phase) => random(ctx, phase),
        (Workload::MdtestEasy | Workload::MdtestHard, phase) => mdtest(ctx, phase),
        (Workload::Find, phase) => find(ctx, phase),
    }
}

fn prepare(ctx: &mut Ctx, workload: Workload) -> Result<()> {
    let fs = ctx.fs;
    let root = &ctx.spec.root;
    if fs.lstat(root).is_err() {
        fs.mkdir(root)?;
    }
    let dir = ctx.dir();
    fs.mkdir(&dir)?;
    let params = ctx.params();
    match workload {
        Workload::IorEasyN1 | Workload::IorHard => {
            fs.close(fs.open(&format!("{dir}/shared"), OpenMode::CreateExclusive)?)?
        }
        Workload::Random4k => {
            fs.close(fs.open(&format!("{dir}/file"), OpenMode::CreateExclusive)?)?
        }
        Workload::MdtestEasy => {
            for rank in 0..params.nprocs {
                fs.mkdir(&format!("{dir}/rank.{rank}"))?;
            }
        }
        Workload::Find => {
            for d in 0..params.tree_dirs() {
                fs.mkdir(&format!("{dir}/d{d}"))?;
            }
        }
        Workload::IorEasyNn | Workload::MdtestHard => {}
    }
    Ok(())
}

fn teardown(ctx: &mut Ctx, workload: Workload) -> Result<()> {
    let fs = ctx.fs;
    let dir = ctx.dir();
    let params = ctx.params();
    let subdirs: Vec<String> = match workload {
        Workload::MdtestEasy => (0..params.nprocs)
            .map(|r| format!("{dir}/rank.{r}"))
            .collect(),
        Workload::Find => (0..params.tree_dirs())
            .map(|d| format!("{dir}/d{d}"))
            .collect(),
        _ => Vec::new(),
    };
    for sub in &subdirs {
        fs.rmdir(sub)?;
    }
    let left = fs.list(&dir)?;
    if !left.is_empty() {
        bail!(
            "{dir} still holds {} entries after the remove phase: {:?}",
            left.len(),
            &left[..left.len().min(5)]
        );
    }
    fs.rmdir(&dir)?;
    if fs.list(&ctx.spec.root)?.is_empty() {
        fs.rmdir(&ctx.spec.root)?;
    }
    Ok(())
}

fn ior(ctx: &mut Ctx, phase: Phase) -> Result<()> {
    let spec = ctx.spec;
    let params = &spec.params;
    let dir = ctx.dir();
    // Reads go to another rank's data (IOR's -C), so no rank reads what its
    // own client may still hold.
    let rank = match phase {
        Phase::Read => (spec.rank + 1) % params.nprocs,
        _ => spec.rank,
    };
    let layout = ior_layout(&dir, spec.workload, params, rank);
    let pattern = Pattern::new(params.seed, layout.transfer as usize);
    let mut buf = vec![0u8; layout.transfer as usize];
    let len = layout.transfer;
    match phase {
        Phase::Write => {
            let file = ctx.fs.open(&layout.path, OpenMode::CreateReadWrite)?;
            let mut filled_for: Option<u64> = None;
            for i in 0..layout.transfers {
                let offset = (layout.offset)(params, rank, i);
                match filled_for {
                    Some(prev) if prev % 512 == offset % 512 => {
                        pattern.restamp(&mut buf, offset, layout.file_seed)
                    }
                    _ => pattern.fill(&mut buf, offset, layout.file_seed),
                }
                filled_for = Some(offset);
                ctx.timed(|fs| fs.pwrite_all(&file, &buf, offset))?;
                ctx.bytes += len;
            }
            // IOR -e: the write phase ends when the data is durable.
            ctx.fs.fsync(&file)?;
            ctx.fs.close(file)?;
        }
        Phase::Read | Phase::Verify => {
            let file = ctx.fs.open(&layout.path, OpenMode::Read)?;
            for i in 0..layout.transfers {
                let offset = (layout.offset)(params, rank, i);
                if phase == Phase::Read {
                    ctx.timed(|fs| fs.pread_exact(&file, &mut buf, offset))?;
                    ctx.bytes += len;
                } else {
                    ctx.fs.pread_exact(&file, &mut buf, offset)?;
                    if let Err(at) = pattern.check(&buf, offset, layout.file_seed) {
                        bail!(
                            "verification failed: {} byte {at} differs from what rank {rank} wrote",
                            layout.path
                        );
                    }
                    ctx.verified += len;
                }
            }
            ctx.fs.close(file)?;
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

fn random(ctx: &mut Ctx, phase: Phase) -> Result<()> {
    let spec = ctx.spec;
    let params = &spec.params;
    let path = format!("{}/file", ctx.dir());
    let per_proc = params.random_blocks_per_proc();
    let first = spec.rank as u64 * per_proc;
    let prefill_seed = params.seed ^ 0xa;
    let rewrite_seed = params.seed ^ 0xb;
    let pattern = Pattern::new(params.seed, 1 << 20);
    // The blocks this rank rewrites, in order; the verify phase regenerates them.
    let rewritten = || {
        let mut rng = StdRng::seed_from_u64(params.seed ^ (spec.rank as u64) << 8 ^ 1);
        (0..params.random_ops).map(move |_| first + rng.gen_range(0..per_proc))
    };
    match phase {
        Phase::Prefill => {
            let file = ctx.fs.open(&path, OpenMode::CreateReadWrite)?;
            let mut buf = vec![0u8; 1 << 20];
            let end = (first + per_proc) * BLOCK;
            let mut offset = first * BLOCK;
            while offset < end {
                let n = (end - offset).min(1 << 20) as usize;
                pattern.fill(&mut buf[..n], offset, prefill_seed);
                ctx.timed(|fs| fs.pwrite_all(&file, &buf[..n], offset))?;
                ctx.bytes += n as u64;
                offset += n as u64;
            }
            ctx.fs.fsync(&file)?;
            ctx.fs.close(file)?;
        }
        Phase::RandWrite => {
            let file = ctx.fs.open(&path, OpenMode::CreateReadWrite)?;
            let mut buf = vec![0u8; BLOCK as usize];
            pattern.fill(&mut buf, 0, rewrite_seed);
            for block in rewritten() {
                let offset = block * BLOCK;
                pattern.restamp(&mut buf, offset, rewrite_seed);
                ctx.timed(|fs| fs.pwrite_all(&file, &buf, offset))?;
                ctx.bytes += BLOCK;
            }
            ctx.fs.fsync(&file)?;
            ctx.fs.close(file)?;
        }
        Phase::RandRead => {
            let file = ctx.fs.open(&path, OpenMode::Read)?;
            let mut buf = vec![0u8; BLOCK as usize];
            let blocks = per_proc * params.nprocs as u64;
            let mut rng = StdRng::seed_from_u64(params.seed ^ (spec.rank as u64) << 8 ^ 2);
            for _ in 0..params.random_ops {
                let offset = rng.gen_range(0..blocks) * BLOCK;
                ctx.timed(|fs| fs.pread_exact(&file, &mut buf, offset))?;
                ctx.bytes += BLOCK;
            }
            ctx.fs.close(file)?;
        }
        Phase::Verify => {
            let rewritten: HashSet<u64> = rewritten().collect();
            let file = ctx.fs.open(&path, OpenMode::Read)?;
            let mut buf = vec![0u8; 1 << 20];
            let end = (first + per_proc) * BLOCK;
            let mut offset = first * BLOCK;
            while offset < end {
                let n = (end - offset).min(1 << 20) as usize;
                ctx.fs.pread_exact(&file, &mut buf[..n], offset)?;
                for (k, block) in buf[..n].chunks(BLOCK as usize).enumerate() {
                    let at = offset + k as u64 * BLOCK;
                    let seed = if rewritten.contains(&(at / BLOCK)) {
                        rewrite_seed
                    } else {
                        prefill_seed
                    };
                    if let Err(bad) = pattern.check(block, at, seed) {
                        bail!(
                            "verification failed: {path} byte {bad} differs from what was written"
                        );
                    }
                }
                ctx.verified += n as u64;
                offset += n as u64;
            }
            ctx.fs.close(file)?;
        }
        Phase::Remove => {
            if spec.rank == 0 {
                ctx.timed(|fs| fs.unlink(&path))?;
            }
        }
        other => bail!("phase {} is not part of random-4k", other.name()),
    }
    Ok(())
}

fn mdtest(ctx: &mut Ctx, phase: Phase) -> Result<()> {
    let spec = ctx.spec;
    let params = &spec.params;
    let dir = ctx.dir();
    let rank = spec.rank;
    let easy = spec.workload == Workload::MdtestEasy;
    let (files, own_dir) = if easy {
        (params.easy_files, format!("{dir}/rank.{rank}"))
    } else {
        (params.hard_files, dir.clone())
    };
    let name = |i: u64| {
        if easy {
            format!("{own_dir}/f.{i}")
        } else {
            format!("{dir}/f.{rank}.{i}")
        }
    };
    let file_seed = |i: u64| params.seed ^ ((rank as u64) << 32 | i);
    let size = if easy { 0 } else { params.hard_file_bytes };
    let pattern = Pattern::new(params.seed, size as usize);
    let mut buf = vec![0u8; size as usize];
    match phase {
        Phase::Create => {
            for i in 0..files {
                let path = name(i);
                if !easy {
                    pattern.fill(&mut buf, 0, file_seed(i));
                }
                ctx.timed(|fs| {
                    let file = fs.open(&path, OpenMode::CreateExclusive)?;
                    if !buf.is_empty() {
                        fs.pwrite_all(&file, &buf, 0)?;
                    }
                    fs.close(file)
                })?;
                ctx.bytes += size;
            }
        }
        Phase::Stat => {
            for i in 0..files {
                let path = name(i);
                let info = ctx.timed(|fs| fs.lstat(&path))?;
                if !info.is_file || info.size != size {
                    bail!("verification failed: {path} is not a regular file of {size} bytes");
                }
            }
        }
        Phase::Read => {
            for i in 0..files {
                let path = name(i);
                ctx.timed(|fs| {
                    let file = fs.open(&path, OpenMode::Read)?;
                    fs.pread_exact(&file, &mut buf, 0)?;
                    fs.close(file)
                })?;
                ctx.bytes += size;
            }
        }
        Phase::Verify => {
            // Every name this rank created is listed, and (hard) holds its bytes.
            let listed: HashSet<String> = ctx.fs.list(&own_dir)?.into_iter().collect();
            for i in 0..files {
                let path = name(i);
                let base = path.rsplit('/').next().unwrap_or_default();
                if !listed.contains(base) {
                    bail!("verification failed: {path} missing from the listing of {own_dir}");
                }
                if !easy {
                    let file = ctx.fs.open(&path, OpenMode::Read)?;
                    ctx.fs.pread_exact(&file, &mut buf, 0)?;
                    ctx.fs.close(file)?;
                    if let Err(at) = pattern.check(&buf, 0, file_seed(i)) {
                        bail!(
                            "verification failed: {path} byte {at} differs from what was written"
                        );
                    }
                }
                ctx.verified += 1;
            }
            let expected = if easy {
                files
            } else {
                files * params.nprocs as u64
            };
            if listed.len() as u64 != expected {
                bail!(
                    "verification failed: {own_dir} lists {} entries, expected {expected}",
                    listed.len()
                );
            }
        }
        Phase::Remove => {
            for i in 0..files {
                let path = name(i);
                ctx.timed(|fs| fs.unlink(&path))?;
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

fn find(ctx: &mut Ctx, phase: Phase) -> Result<()> {
    let spec = ctx.spec;
    let params = &spec.params;
    let dir = ctx.dir();
    let dirs = params.tree_dirs();
    let mine = (spec.rank as u64..params.tree_files()).step_by(spec.procs.max(1));
    let name = |i: u64| format!("{dir}/d{}/f{i}", i % dirs);
    match phase {
        Phase::Create => {
            for i in mine {
                let path = name(i);
                ctx.timed(|fs| fs.close(fs.open(&path, OpenMode::CreateExclusive)?))?;
            }
        }
        Phase::Walk => {
            // `ls -lR` / `find -ls`: readdir every directory, lstat every entry.
            let mut stack = vec![dir.clone()];
            let (mut seen_dirs, mut seen_files) = (0u64, 0u64);
            while let Some(current) = stack.pop() {
                for entry in ctx.fs.list(&current)? {
                    let path = format!("{current}/{entry}");
                    let info = ctx.timed(|fs| fs.lstat(&path))?;
                    if info.is_dir {
                        seen_dirs += 1;
                        stack.push(path);
                    } else if info.is_file && info.size == 0 {
                        seen_files += 1;
                    } else {
                        bail!(
                            "verification failed: {path} is neither a directory nor an empty file"
                        );
                    }
                }
            }
            if seen_dirs != dirs || seen_files != params.tree_files() {
                bail!(
                    "verification failed: the walk found {seen_dirs} directories and {seen_files} files, expected {dirs} and {}",
                    params.tree_files()
                );
            }
            ctx.verified += seen_dirs + seen_files;
        }
        Phase::Remove => {
            for i in mine {
                let path = name(i);
                ctx.timed(|fs| fs.unlink(&path))?;
            }
        }
        other => bail!("phase {} is not part of find", other.name()),
    }
    Ok(())
}

#[cfg(test)]
#[path = "worker_tests.rs"]
mod tests;
