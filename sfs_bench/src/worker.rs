//! The worker process: runs one phase of one workload as one client rank.
//!
//! The orchestrator starts it as `sfs_bench __worker SPEC_JSON` (under the
//! shim, or not). It connects and stages the phase's buffers and write data
//! first (untimed, see `staging.rs`), prints `ready`, waits for `go`
//! on stdin so every rank starts together, runs the phase, writes its latency
//! histogram to the file named in the spec and prints a [`WorkerResult`] as
//! one JSON line. Any error, including a verification mismatch, makes it exit
//! with status 1 and the reason on stderr. The workloads themselves are in
//! `worker/data.rs` (IOR, random 4 KiB), `worker/metadata.rs` (mdtest,
//! find) and `worker/tiering.rs` (the client side of `sfs_bench tiering`).

mod data;
mod metadata;
mod tiering;

use crate::fsapi::{FileSystem, LibFs, OpenMode, PosixFs};
use crate::spec::{Access, Params, Phase, WorkerResult, WorkerSpec, Workload};
use crate::staging::{AlignedBuf, PlannedWrite, StagedWrites};
use anyhow::{bail, Context, Result};
use data::{ior, ior_stage, random, random_stage};
use hdrhistogram::Histogram;
use metadata::{find, mdtest, mdtest_stage};
use std::io::{BufRead, Write};
use std::time::Instant;
use tiering::{tiering, tiering_stage};

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
    let mut staged = stage(&spec);
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
    run_phase(&mut ctx, &mut staged)?;
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
        workload_dir(self.spec)
    }
}

fn workload_dir(spec: &WorkerSpec) -> String {
    format!("{}/{}", spec.root, spec.workload.name())
}

/// What a phase needs besides its file-system calls, built before the
/// barrier so that the timed phase makes those calls and little else.
#[derive(Default)]
struct Staged {
    /// The data of the phase's writes, in the order they are made.
    writes: StagedWrites,
    /// Where the phase's reads go.
    read_buf: AlignedBuf,
    /// File offsets of random reads, in order.
    read_offsets: Vec<u64>,
}

fn stage(spec: &WorkerSpec) -> Staged {
    match spec.workload {
        Workload::IorEasyNn | Workload::IorEasyN1 | Workload::IorHard => ior_stage(spec),
        Workload::Random4k => random_stage(spec),
        Workload::MdtestEasy | Workload::MdtestHard => mdtest_stage(spec),
        Workload::Find => Staged::default(),
        Workload::Tiering => tiering_stage(spec),
    }
}

fn staged_writes(spec: &WorkerSpec, planned: impl Iterator<Item = PlannedWrite>) -> Staged {
    Staged {
        writes: StagedWrites::new(spec.params.seed, &planned.collect::<Vec<_>>()),
        ..Staged::default()
    }
}

fn staged_read_buf(len: u64) -> Staged {
    Staged {
        read_buf: AlignedBuf::new(len as usize),
        ..Staged::default()
    }
}

fn run_phase(ctx: &mut Ctx, staged: &mut Staged) -> Result<()> {
    let spec = ctx.spec;
    match (spec.workload, spec.phase) {
        (w, Phase::Prepare) => prepare(ctx, w),
        (w, Phase::Teardown) => teardown(ctx, w),
        (Workload::IorEasyNn | Workload::IorEasyN1 | Workload::IorHard, phase) => {
            ior(ctx, phase, staged)
        }
        (Workload::Random4k, phase) => random(ctx, phase, staged),
        (Workload::MdtestEasy | Workload::MdtestHard, phase) => mdtest(ctx, phase, staged),
        (Workload::Find, phase) => find(ctx, phase),
        (Workload::Tiering, phase) => tiering(ctx, phase, staged),
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
        Workload::IorEasyNn | Workload::MdtestHard | Workload::Tiering => {}
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

#[cfg(test)]
#[path = "worker_tests.rs"]
mod tests;
