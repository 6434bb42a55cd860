//! `sfs_bench tiering`: SFS's tiering against the object back end's own
//! throughput, in one run (docs/tiering.md for the model,
//! docs/performance.md "Tiering" for results).
//!
//! The `dir` back end lives in a fresh directory under `--backend-dir` (the
//! device being measured, the local disk by default); the chunk stores on
//! `--state-dir` (tmpfs: the fast tier). In order:
//!
//! 1. fio writes and reads the same files SFS will move — as many, as
//!    large, in whole chunks, each fsynced (as a write-back `persist`s its
//!    object) — on the back end's file system: its own rates (read cold).
//! 2. Servers with the `explicit` policy: the ranks write the files (the
//!    foreground rate without write-back), verify them, then `sfs flush -r`
//!    writes them to the back end (the flush rate), and `sfs checkpoint`.
//! 3. Servers with `idle` (or `io-aware`) at a short `idle_ms`: the same
//!    write, with the flusher writing each rank's finished files back while
//!    it writes its next ones (the report says how many bytes went back
//!    during the write); verify; wait until everything is written back.
//! 4. Fresh servers started with `--restore` from step 2's checkpoint: the
//!    data is only in the back end, its pages dropped from the page cache;
//!    the ranks read everything (read-through), then verify.
//! 5. fio again; the back end's rates are the mean of steps 1 and 5 (on a
//!    virtual disk back-to-back runs differ by up to 40 %, see `fio.rs`).
//!
//! Every byte written is read back and compared in steps 2 and 3, and what
//! the flush wrote is compared through the restored servers in step 4.

mod report;

use crate::cluster::{process_cpu_seconds, SfsInstance};
use crate::runner::{run_phase, PhaseStats, Target};
use crate::spec::{Access, Params, Phase, Workload};
use crate::{absolute, fio, staging, CommonArgs, RemoveOnDrop};
use anyhow::{bail, Context, Result};
use sfs_global::config::{Config, WritebackPolicy};
use std::path::{Path, PathBuf};
use std::time::{Duration, Instant};

/// Options of `sfs_bench tiering`.
#[derive(clap::Args)]
pub struct TieringArgs {
    /// Servers to start on 127.0.0.1.
    #[arg(long, default_value_t = 2)]
    pub servers: usize,
    /// MiB written in all, split into equal files (whole chunks).
    #[arg(long, default_value_t = 2048)]
    pub total_mib: u64,
    /// Files each client process writes, one after the other (enough that
    /// the flusher has finished files to write back for most of the write).
    #[arg(long, default_value_t = 8)]
    pub files_per_proc: u64,
    /// Directory on the back end's device: the `dir` back end and fio's
    /// files go into a fresh directory under it, removed at the end.
    #[arg(long, default_value = "/var/tmp")]
    pub backend_dir: PathBuf,
    /// Write-back policy of the write with the flusher running.
    #[arg(long, value_enum, default_value = "idle")]
    pub flusher: Flusher,
    /// `backend.idle_ms` of that write: how long a file must be left
    /// alone before it is written back.
    #[arg(long, default_value_t = 100)]
    pub idle_ms: u64,
    /// `backend.writeback_nice` of that write: how far below the servers'
    /// priority the flusher's threads run (0: beside the data path).
    #[arg(long, default_value_t = sfs_global::config::BackendConfig::default().writeback_nice)]
    pub writeback_nice: u8,
}

/// The policies under which write-back runs beside the writes.
#[derive(Clone, Copy, Debug, PartialEq, Eq, clap::ValueEnum)]
pub enum Flusher {
    Idle,
    IoAware,
}

impl Flusher {
    fn policy(self) -> WritebackPolicy {
        match self {
            Flusher::Idle => WritebackPolicy::Idle,
            Flusher::IoAware => WritebackPolicy::IoAware,
        }
    }

    /// The policy's name in config.json.
    pub fn name(self) -> &'static str {
        match self {
            Flusher::Idle => "idle",
            Flusher::IoAware => "io-aware",
        }
    }
}

/// A client request may carry the flush of a whole file on one server.
const REQUEST_TIMEOUT_MS: u64 = 600_000;

/// How long the flusher run may take to drain after its write.
const DRAIN_TIMEOUT: Duration = Duration::from_secs(600);

/// The tier counters summed over all servers of an instance.
#[derive(Clone, Copy, Debug, Default)]
struct TierCounters {
    written_back: u64,
    fetched: u64,
    dirty: u64,
}

/// Step 2: the explicit policy's write, then its flush.
pub struct ExplicitStep {
    pub write: PhaseStats,
    pub flush_seconds: f64,
    /// CPU the servers used during the flush.
    pub flush_server_cpu_s: f64,
    pub flush_bytes: u64,
    pub verified: u64,
}

/// Step 3: the write with the flusher running.
pub struct FlusherStep {
    pub write: PhaseStats,
    /// Bytes written back while the write ran, as the servers count them:
    /// per file written back whole (so not the files they were still
    /// copying when the write ended) ...
    pub written_back_during_write: u64,
    /// ... and the bytes the back end's files held when it ended,
    /// counting those too.
    pub in_backend_after_write: u64,
    /// From the end of the write until nothing was dirty.
    pub drain_seconds: f64,
    pub verified: u64,
}

/// Step 4: the read-through of restored servers.
pub struct RestoredStep {
    pub read: PhaseStats,
    /// Files of the back end whose cached pages were dropped first.
    pub cold_files: u64,
    /// Bytes the servers fetched from the back end.
    pub fetched: u64,
    pub verified: u64,
}

/// What one run measured (the report turns it into the tables).
pub struct Measured {
    pub params: Params,
    pub servers: usize,
    pub chunk_size: u64,
    pub backend_dir: PathBuf,
    pub flusher: Flusher,
    pub idle_ms: u64,
    pub writeback_nice: u8,
    /// The mean of fio's runs before and after ...
    pub native: fio::FioRun,
    /// ... and each of them.
    pub native_runs: [fio::FioRun; 2],
    pub explicit: ExplicitStep,
    pub flushing: FlusherStep,
    pub restored: RestoredStep,
    pub warm_up: String,
    pub load_start: String,
    /// Whether the page cache was dropped before each timed phase.
    pub page_cache_dropped: bool,
}

/// What every step needs: the binaries, the sizes, where things go.
struct Bench<'a> {
    args: &'a TieringArgs,
    exe: PathBuf,
    sfs: PathBuf,
    params: Params,
    /// Bytes written in all.
    total: u64,
    /// Where the instances keep their state (tmpfs).
    state: PathBuf,
    /// Worker stderr and histograms.
    scratch: PathBuf,
    /// Whether every [`Bench::settle`] could drop the page cache.
    dropped: std::cell::Cell<bool>,
    pid: u32,
}

impl Bench<'_> {
    /// Starts servers with their back end in `backend` under `policy`.
    fn start(
        &self,
        name: &str,
        backend: &Path,
        policy: WritebackPolicy,
        restore: bool,
    ) -> Result<SfsInstance> {
        let mut config = Config::default();
        config.backend.path = backend.display().to_string();
        config.backend.writeback = policy;
        config.backend.idle_ms = self.args.idle_ms;
        config.backend.writeback_nice = self.args.writeback_nice;
        config.request_timeout_ms = REQUEST_TIMEOUT_MS;
        let dir = self.state.join(format!("sfs_bench.{}.{name}", self.pid));
        SfsInstance::start_with(&self.sfs, self.args.servers, &dir, config, restore)
    }

    fn phase(&self, target: &Target, phase: Phase) -> Result<PhaseStats> {
        run_phase(
            &self.exe,
            target,
            Workload::Tiering,
            phase,
            &self.params,
            &self.scratch,
        )
    }

    /// Step 2: write and verify with no write-back, then time `sfs flush
    /// -r` of everything, and checkpoint for step 4.
    fn explicit(&self, backend: &Path) -> Result<ExplicitStep> {
        let instance = self.start("explicit", backend, WritebackPolicy::Explicit, false)?;
        let target = lib_target(&instance, "sfs-explicit", self.pid);
        self.phase(&target, Phase::Prepare)?;
        self.settle();
        let write = self.phase(&target, Phase::Write)?;
        let verified = self.phase(&target, Phase::Verify)?.verified;
        let leaked = counters(&instance)?.written_back;
        if leaked != 0 {
            bail!("the explicit policy wrote {leaked} bytes back before the flush");
        }
        self.settle();
        let cpu_before = servers_cpu_seconds(&instance)?;
        let started = Instant::now();
        let out = instance.sfs_checked(&["flush", "-r", &target.root])?;
        let flush_seconds = started.elapsed().as_secs_f64();
        let flush_server_cpu_s = servers_cpu_seconds(&instance)? - cpu_before;
        let flush_bytes = flushed_bytes(&out)?;
        if flush_bytes != self.total {
            bail!(
                "sfs flush wrote {flush_bytes} bytes, expected {}:\n{out}",
                self.total
            );
        }
        instance.sfs_checked(&["checkpoint"])?;
        Ok(ExplicitStep {
            write,
            flush_seconds,
            flush_server_cpu_s,
            flush_bytes,
            verified,
        })
    }

    /// Step 3: the same write with the flusher policy, what reached the
    /// back end meanwhile, the drain, and the verify pass.
    fn flushing(&self, backend: &Path) -> Result<FlusherStep> {
        let policy = self.args.flusher.policy();
        let instance = self.start("flusher", backend, policy, false)?;
        let target = lib_target(&instance, "sfs-flusher", self.pid);
        self.phase(&target, Phase::Prepare)?;
        self.settle();
        let before = counters(&instance)?;
        let write = self.phase(&target, Phase::Write)?;
        let written_back_during_write = counters(&instance)?.written_back - before.written_back;
        let in_backend_after_write = bytes_in_files(backend)?;
        let drained = Instant::now();
        wait_until_clean(&instance)?;
        let drain_seconds = drained.elapsed().as_secs_f64();
        let verified = self.phase(&target, Phase::Verify)?.verified;
        Ok(FlusherStep {
            write,
            written_back_during_write,
            in_backend_after_write,
            drain_seconds,
            verified,
        })
    }

    /// Step 4: fresh servers restored from `backend`'s checkpoint read
    /// everything through from the back end, cold, then verify it.
    fn restored(&self, backend: &Path) -> Result<RestoredStep> {
        let instance = self.start("restored", backend, WritebackPolicy::Explicit, true)?;
        let target = lib_target(&instance, "sfs-restored", self.pid);
        self.settle();
        let cold_files = drop_cached_pages(backend)?;
        let read = self.phase(&target, Phase::Read)?;
        let fetched = counters(&instance)?.fetched;
        let verified = self.phase(&target, Phase::Verify)?.verified;
        self.phase(&target, Phase::Remove)?;
        self.phase(&target, Phase::Teardown)?;
        Ok(RestoredStep {
            read,
            cold_files,
            fetched,
            verified,
        })
    }
}

/// Runs the whole sequence and prints the report.
pub fn run(args: &TieringArgs, common: &CommonArgs) -> Result<()> {
    if args.servers == 0 || common.nprocs == 0 || args.files_per_proc == 0 {
        bail!("--servers, --nprocs and --files-per-proc must be at least 1");
    }
    let load_start = crate::report::load_average();
    let pid = std::process::id();
    let sfs = crate::sfs_binary(common)?;
    let fio_version = fio::version(&common.fio)
        .map_err(|reason| anyhow::anyhow!("the back end's own rates need fio: {reason}"))?;
    let chunk_size = Config::default().chunk_size;
    let transfer: u64 = 1 << 20;
    let files = common.nprocs as u64 * args.files_per_proc;
    // Whole transfers and whole chunks: SFS and fio move the same blocks.
    let unit = transfer.max(chunk_size);
    let file_bytes = (args.total_mib << 20) / files / unit * unit;
    if file_bytes == 0 {
        bail!(
            "--total-mib {} is too small for {files} files of whole {} KiB pieces",
            args.total_mib,
            unit >> 10
        );
    }
    let params = Params {
        nprocs: common.nprocs,
        easy_bytes: file_bytes,
        easy_transfer: transfer,
        files_per_proc: args.files_per_proc,
        seed: common
            .seed
            .unwrap_or_else(|| crate::worker::monotonic_ns() ^ pid as u64),
        ..Params::default()
    };
    let work = absolute(&args.backend_dir)?.join(format!("sfs_bench.{pid}.tiering"));
    std::fs::create_dir_all(&work).with_context(|| format!("creating {}", work.display()))?;
    let _work_guard = RemoveOnDrop(work.clone());
    let scratch = std::env::temp_dir().join(format!("sfs_bench.{pid}"));
    std::fs::create_dir_all(&scratch)?;
    let _scratch_guard = RemoveOnDrop(scratch.clone());
    let bench = Bench {
        args,
        exe: std::env::current_exe().context("locating the sfs_bench binary")?,
        sfs,
        params,
        total: file_bytes * files,
        state: absolute(&common.state_dir)?,
        scratch,
        pid,
        dropped: std::cell::Cell::new(true),
    };
    let say = |what: &str| eprintln!("sfs_bench tiering: {what}");

    // The chunk stores are on tmpfs: the first touch of its memory is a
    // host fault in this VM, which the first write would otherwise pay.
    let warm_up = staging::warm_memory(&bench.state, bench.total, pid)?;
    let shape = fio::Shape {
        name: "backend",
        block: chunk_size,
        file_bytes,
        files,
        cold_read: true,
    };
    say(&format!("{fio_version} on {} (before)", work.display()));
    bench.settle();
    let native_before = fio::run_write_then_read(&common.fio, "backend", &work, &shape)?;

    say("explicit: write, verify, flush, checkpoint");
    let explicit_backend = work.join("backend-explicit");
    let explicit = bench.explicit(&explicit_backend)?;

    say(&format!(
        "{}: write with the flusher running, verify, drain",
        args.flusher.name()
    ));
    let flusher_backend = work.join("backend-flusher");
    let flushing = bench.flushing(&flusher_backend)?;
    // Its objects are not needed again: free the device before the reads.
    std::fs::remove_dir_all(&flusher_backend)
        .with_context(|| format!("removing {}", flusher_backend.display()))?;

    say("restored from the checkpoint: read-through, verify");
    let restored = bench.restored(&explicit_backend)?;

    say(&format!("{fio_version} on {} (after)", work.display()));
    bench.settle();
    let native_after = fio::run_write_then_read(&common.fio, "backend", &work, &shape)?;
    let measured = Measured {
        native: fio::FioRun::mean(&native_before, &native_after),
        native_runs: [native_before, native_after],
        params: bench.params,
        servers: args.servers,
        chunk_size,
        backend_dir: absolute(&args.backend_dir)?,
        flusher: args.flusher,
        idle_ms: args.idle_ms,
        writeback_nice: args.writeback_nice,
        explicit,
        flushing,
        restored,
        warm_up,
        load_start,
        page_cache_dropped: bench.dropped.get(),
    };
    let report = report::build(&measured);
    if common.json {
        println!("{}", serde_json::to_string_pretty(&report)?);
    } else {
        report::print_text(&report);
    }
    Ok(())
}

/// The client-library target of an instance (the ranks call sfs_client).
fn lib_target(instance: &SfsInstance, name: &str, pid: u32) -> Target {
    Target {
        name: name.into(),
        root: format!("/sfs_bench.{pid}"),
        access: Access::Lib {
            config: instance.config_path.clone(),
            hostfile: instance.hostfile_path.clone(),
        },
        env: Vec::new(),
        server_pids: instance.server_pids(),
        servers: Some(instance.server_count()),
        baseline_dir: None,
    }
}

/// The servers' tier counters (`sfs status`), summed.
fn counters(instance: &SfsInstance) -> Result<TierCounters> {
    let client = sfs_client::Client::from_files(&instance.config_path, &instance.hostfile_path)
        .context("connecting to the servers for their counters")?;
    let mut total = TierCounters::default();
    for (name, _, stats) in client.server_stats() {
        let stats = stats.with_context(|| format!("statistics of server {name}"))?;
        if stats.writeback_errors > 0 {
            bail!(
                "server {name}: {} failed write-backs, last: {}",
                stats.writeback_errors,
                stats.backend_error
            );
        }
        total.written_back += stats.written_back_bytes;
        total.fetched += stats.fetched_bytes;
        total.dirty += stats.dirty_bytes;
    }
    Ok(total)
}

/// CPU seconds the instance's server processes used so far.
fn servers_cpu_seconds(instance: &SfsInstance) -> Result<f64> {
    let mut total = 0.0;
    for pid in instance.server_pids() {
        total +=
            process_cpu_seconds(pid).with_context(|| format!("server process {pid} is gone"))?;
    }
    Ok(total)
}

/// Waits until no server holds dirty data (the flusher drained).
fn wait_until_clean(instance: &SfsInstance) -> Result<()> {
    let deadline = Instant::now() + DRAIN_TIMEOUT;
    loop {
        let now = counters(instance)?;
        if now.dirty == 0 {
            return Ok(());
        }
        if Instant::now() > deadline {
            bail!(
                "{} dirty bytes still not written back after {} s",
                now.dirty,
                DRAIN_TIMEOUT.as_secs()
            );
        }
        std::thread::sleep(Duration::from_millis(50));
    }
}

/// The byte count of `sfs flush`'s last line (`total: F files, B bytes in
/// C chunks`).
fn flushed_bytes(out: &str) -> Result<u64> {
    out.lines()
        .rev()
        .find_map(|line| {
            let rest = line.strip_prefix("total: ")?;
            let (_, after_files) = rest.split_once("files, ")?;
            after_files.split_whitespace().next()?.parse().ok()
        })
        .with_context(|| format!("no total in sfs flush's output:\n{out}"))
}

impl Bench<'_> {
    /// Before a timed phase: every dirty page written ([`sync_all`]), then
    /// the page cache dropped if this process may (root), so that fio's
    /// runs and SFS's phases all start from the same memory. On this
    /// project's VM, memory that a full page cache leaves to be found anew
    /// is first touched at a tenth of the speed (docs/performance.md,
    /// "Write-back: each batch handed to the device at once"), which
    /// otherwise falls on whichever phase comes after a large one.
    fn settle(&self) {
        sync_all();
        if std::fs::write("/proc/sys/vm/drop_caches", "3").is_err() {
            self.dropped.set(false);
        }
    }
}

/// Writes every dirty page of the machine to its device, so that a timed
/// phase does not also pay for an earlier phase's writes.
fn sync_all() {
    // SAFETY: sync(2) takes no arguments and cannot fail.
    unsafe { libc::sync() };
}

/// Every file under `dir`, recursively.
fn files_under(dir: &Path) -> Result<Vec<PathBuf>> {
    let mut files = Vec::new();
    let mut pending = vec![dir.to_path_buf()];
    while let Some(dir) = pending.pop() {
        let listing =
            std::fs::read_dir(&dir).with_context(|| format!("listing {}", dir.display()))?;
        for entry in listing {
            let path = entry?.path();
            if path.is_dir() {
                pending.push(path);
            } else {
                files.push(path);
            }
        }
    }
    Ok(files)
}

/// The bytes allocated to the files under `dir` (the back end's objects
/// are sparse: each server writes its own chunks, so this counts what was
/// written, including what is still in the page cache).
fn bytes_in_files(dir: &Path) -> Result<u64> {
    use std::os::unix::fs::MetadataExt;
    let mut bytes = 0;
    for path in files_under(dir)? {
        // A file removed meanwhile (a checkpoint's old dump) counts nothing.
        if let Ok(md) = std::fs::metadata(&path) {
            bytes += md.blocks() * 512;
        }
    }
    Ok(bytes)
}

/// Drops the cached pages of every file under `dir`, so that reading them
/// comes from the device: what fio's `--invalidate=1` does for its own
/// files (`posix_fadvise(POSIX_FADV_DONTNEED)` of clean pages), so both
/// sides of the read-through ratio read cold, without root and without
/// throwing away other processes' cache as `drop_caches` would.
fn drop_cached_pages(dir: &Path) -> Result<u64> {
    use std::os::fd::AsRawFd;
    let files = files_under(dir)?;
    for path in &files {
        let file =
            std::fs::File::open(path).with_context(|| format!("opening {}", path.display()))?;
        // Dirty pages are not dropped: make them clean first.
        file.sync_data()?;
        // SAFETY: posix_fadvise on a descriptor this function owns; offset
        // 0 and length 0 mean the whole file.
        let rc = unsafe { libc::posix_fadvise(file.as_raw_fd(), 0, 0, libc::POSIX_FADV_DONTNEED) };
        if rc != 0 {
            bail!(
                "posix_fadvise of {}: {}",
                path.display(),
                std::io::Error::from_raw_os_error(rc)
            );
        }
    }
    Ok(files.len() as u64)
}

#[cfg(test)]
mod tests {
    #[test]
    fn reads_the_total_of_sfs_flush() {
        let out = "/a/f.0: 1048576 bytes\n/a/f.1: 1048576 bytes\ntotal: 2 files, 2097152 bytes in 4 chunks\n";
        assert_eq!(super::flushed_bytes(out).unwrap(), 2 << 20);
        assert!(super::flushed_bytes("nothing").is_err());
    }
}
