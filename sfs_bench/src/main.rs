//! `sfs_bench`: IOR/mdtest/find-style workloads against SFS (through the
//! LD_PRELOAD shim and through the client library) and against local
//! directories (tmpfs and the local disk), side by side, in one invocation.
//!
//! Client processes are real processes: this binary re-executes itself as
//! `sfs_bench __worker SPEC` once per rank and phase; for the shim rows the
//! worker runs under `LD_PRELOAD=libsfs_preload.so` and makes plain std::fs
//! calls on paths under the mount directory, exactly as an application does.
//! Every run reads its data back and compares it; a mismatch is an error.
//! Each local baseline's IOR-easy N-N rates are checked against `fio` on the
//! same file system in the same run (`fio.rs`).
//!
//! `sfs_bench tiering` is a mode of its own (`tiering.rs`): it measures
//! write-back, foreground writes beside it and read-through against the
//! object back end's own throughput, starting and restarting its servers.

mod cluster;
mod fio;
mod fsapi;
mod pattern;
mod report;
mod runner;
mod spec;
mod staging;
mod tiering;
mod worker;

use anyhow::{bail, Context, Result};
use clap::{Parser, Subcommand, ValueEnum};
use cluster::SfsInstance;
use indicatif::{ProgressBar, ProgressDrawTarget, ProgressStyle};
use runner::{PhaseStats, Target};
use spec::{Access, Params, Workload};
use std::path::{Path, PathBuf};

#[derive(Clone, Copy, Debug, PartialEq, Eq, ValueEnum)]
enum Via {
    /// Worker processes under LD_PRELOAD of libsfs_preload.so (what users run).
    Shim,
    /// Worker processes calling sfs_client directly (no shim).
    Lib,
}

#[derive(Clone, Copy, Debug, PartialEq, Eq, ValueEnum)]
enum Baseline {
    Tmpfs,
    Disk,
    None,
}

#[derive(Parser)]
#[command(
    name = "sfs_bench",
    version,
    about = "IOR/mdtest-style benchmarks of SFS through the shim and the client library, next to tmpfs and the local disk",
    args_conflicts_with_subcommands = true
)]
struct Cli {
    #[command(subcommand)]
    mode: Option<Mode>,
    #[command(flatten)]
    common: CommonArgs,
    /// config.json of running servers (not needed with --servers).
    #[arg(long, env = "SFS_CONFIG")]
    config: Option<PathBuf>,
    /// Hostfile of running servers (not needed with --servers).
    #[arg(long, env = "SFS_HOSTFILE")]
    hostfile: Option<PathBuf>,
    /// Start this many servers on 127.0.0.1 (state on tmpfs) for each run, e.g. `1,2,4`.
    #[arg(long, value_delimiter = ',')]
    servers: Vec<usize>,
    /// How the SFS workers reach SFS: `shim`, `lib`, or both (`shim,lib`).
    #[arg(long, value_delimiter = ',', default_value = "shim")]
    via: Vec<Via>,
    /// Local baselines: `tmpfs`, `disk`, or `none`.
    #[arg(long, value_delimiter = ',', default_value = "tmpfs,disk")]
    baselines: Vec<Baseline>,
    /// Directory on tmpfs for the tmpfs baseline.
    #[arg(long, default_value = "/dev/shm")]
    tmpfs_dir: PathBuf,
    /// Directory on the local disk for the disk baseline.
    #[arg(long, default_value = "/var/tmp")]
    disk_dir: PathBuf,
    /// Workloads to run (default: all).
    #[arg(long, value_delimiter = ',')]
    workloads: Vec<Workload>,
    /// IOR-easy: MiB each process writes.
    #[arg(long, default_value_t = 512)]
    easy_mib: u64,
    /// IOR-hard: 47,008-byte transfers per process.
    #[arg(long, default_value_t = 5000)]
    hard_transfers: u64,
    /// Random 4 KiB I/O: size of the file in MiB.
    #[arg(long, default_value_t = 1024)]
    random_file_mib: u64,
    /// Random 4 KiB I/O: writes, and as many reads, per process.
    #[arg(long, default_value_t = 10_000)]
    random_ops: u64,
    /// mdtest-easy: files per process.
    #[arg(long, default_value_t = 10_000)]
    files: u64,
    /// mdtest-hard: files per process.
    #[arg(long, default_value_t = 10_000)]
    hard_files: u64,
    /// find / ls -l: entries of the tree (files and directories).
    #[arg(long, default_value_t = 100_000)]
    tree_entries: u64,
    /// The shim (default: libsfs_preload.so next to this binary).
    #[arg(long, env = "SFS_PRELOAD")]
    preload: Option<PathBuf>,
}

/// Modes other than the IOR/mdtest/find workloads.
#[derive(Subcommand)]
enum Mode {
    /// Write-back, foreground writes beside it and read-through of the
    /// tiering, against the object back end's own rates measured with fio
    /// in the same run (starts its own servers).
    Tiering {
        #[command(flatten)]
        args: tiering::TieringArgs,
        #[command(flatten)]
        common: CommonArgs,
    },
}

/// Options every mode takes.
#[derive(clap::Args)]
struct CommonArgs {
    /// Client processes.
    #[arg(long, short = 'n', default_value_t = 2)]
    nprocs: usize,
    /// Where servers this tool starts keep their state (tmpfs).
    #[arg(long, default_value = "/dev/shm")]
    state_dir: PathBuf,
    /// Seed of the data pattern and random offsets (default: from the clock).
    #[arg(long)]
    seed: Option<u64>,
    /// The `sfs` binary used to start servers (default: next to this binary).
    #[arg(long)]
    sfs: Option<PathBuf>,
    /// fio: the local baselines' IOR-easy N-N rates are checked against it
    /// (skipped, and the report says so, without it); `tiering` measures
    /// the back end with it (and needs it).
    #[arg(long, default_value = "fio")]
    fio: PathBuf,
    /// Print the report as JSON on stdout.
    #[arg(long)]
    json: bool,
}

fn next_to_me(name: &str) -> Result<PathBuf> {
    let exe = std::env::current_exe().context("locating the sfs_bench binary")?;
    Ok(exe.with_file_name(name))
}

fn main() {
    let args: Vec<String> = std::env::args().collect();
    let result = if args.get(1).map(String::as_str) == Some("__worker") {
        match args.get(2) {
            Some(spec) => worker::main(spec),
            None => Err(anyhow::anyhow!("usage: sfs_bench __worker SPEC_JSON")),
        }
    } else {
        let cli = Cli::parse();
        match &cli.mode {
            Some(Mode::Tiering { args, common }) => tiering::run(args, common),
            None => run(cli),
        }
    };
    if let Err(e) = result {
        eprintln!("sfs_bench: {e:#}");
        std::process::exit(1);
    }
}

/// The SFS configurations of the run: started per server count, or the running ones.
enum SfsSource {
    Start(Vec<usize>),
    Existing(PathBuf, PathBuf),
}

/// The `sfs` binary: given, or next to this one.
fn sfs_binary(common: &CommonArgs) -> Result<PathBuf> {
    let sfs = match &common.sfs {
        Some(p) => p.clone(),
        None => next_to_me("sfs")?,
    };
    if !sfs.exists() {
        bail!(
            "the sfs binary {} does not exist: build it (`cargo build --release -p sfs_cli`) or give --sfs",
            sfs.display()
        );
    }
    Ok(sfs)
}

fn run(cli: Cli) -> Result<()> {
    let common = &cli.common;
    if common.nprocs == 0 {
        bail!("--nprocs must be at least 1");
    }
    let load_start = report::load_average();
    let exe = std::env::current_exe().context("locating the sfs_bench binary")?;
    let pid = std::process::id();
    let workloads = if cli.workloads.is_empty() {
        Workload::ALL.to_vec()
    } else {
        Workload::ALL
            .into_iter()
            .filter(|w| cli.workloads.contains(w))
            .collect()
    };
    let params = Params {
        nprocs: common.nprocs,
        easy_bytes: cli.easy_mib << 20,
        easy_transfer: 1 << 20,
        hard_transfer: 47_008,
        hard_transfers: cli.hard_transfers.max(1),
        random_file_bytes: (cli.random_file_mib << 20).max(4096 * common.nprocs as u64),
        random_ops: cli.random_ops,
        easy_files: cli.files,
        hard_files: cli.hard_files,
        hard_file_bytes: 3901,
        tree_entries: cli.tree_entries.max(2),
        files_per_proc: 1,
        seed: common
            .seed
            .unwrap_or_else(|| worker::monotonic_ns() ^ pid as u64),
    };
    if params.easy_bytes < params.easy_transfer {
        bail!("--easy-mib must be at least 1");
    }
    let source = if !cli.servers.is_empty() {
        if cli.servers.contains(&0) {
            bail!("--servers: counts must be at least 1");
        }
        SfsSource::Start(cli.servers.clone())
    } else {
        match (&cli.config, &cli.hostfile) {
            (Some(c), Some(h)) => SfsSource::Existing(c.clone(), h.clone()),
            _ => bail!(
                "no SFS servers: give --servers 1[,2,4] to start them, or --config and --hostfile (SFS_CONFIG, SFS_HOSTFILE) of running servers"
            ),
        }
    };
    let preload = match &cli.preload {
        Some(p) => p.clone(),
        None => next_to_me("libsfs_preload.so")?,
    };
    if cli.via.contains(&Via::Shim) && !preload.exists() {
        bail!(
            "the shim {} does not exist: build it (`cargo build --release -p sfs_shim`) or give --preload",
            preload.display()
        );
    }
    let sfs = match &source {
        SfsSource::Start(_) => Some(sfs_binary(common)?),
        SfsSource::Existing(..) => None,
    };

    let scratch = std::env::temp_dir().join(format!("sfs_bench.{pid}"));
    std::fs::create_dir_all(&scratch)?;
    let _scratch_guard = RemoveOnDrop(scratch.clone());

    let mut baselines: Vec<Target> = Vec::new();
    for b in &cli.baselines {
        let (name, dir) = match b {
            Baseline::Tmpfs => ("tmpfs", &cli.tmpfs_dir),
            Baseline::Disk => ("disk", &cli.disk_dir),
            Baseline::None => continue,
        };
        if baselines.iter().any(|t| t.name == name) {
            continue;
        }
        baselines.push(Target {
            name: name.into(),
            root: format!("{}/sfs_bench.{pid}", absolute(dir)?.display()),
            access: Access::Posix,
            env: Vec::new(),
            server_pids: Vec::new(),
            servers: None,
            baseline_dir: Some(absolute(dir)?),
        });
    }
    let fio_version = (workloads.contains(&Workload::IorEasyNn) && !baselines.is_empty())
        .then(|| fio::version(&common.fio));
    let fio_checks = match &fio_version {
        Some(Ok(_)) => 2 * baselines.len(),
        _ => 0,
    };
    let sfs_configs = match &source {
        SfsSource::Start(counts) => counts.len(),
        SfsSource::Existing(..) => 1,
    };
    let phases_per_target: usize = workloads.iter().map(|w| w.phases().len()).sum();
    let steps = (baselines.len() + sfs_configs * cli.via.len()) * phases_per_target + fio_checks;
    let progress = ProgressBar::with_draw_target(Some(steps as u64), ProgressDrawTarget::stderr());
    progress.set_style(
        ProgressStyle::with_template("{elapsed_precise} [{bar:30}] {pos}/{len} {msg}")
            .expect("valid template")
            .progress_chars("=> "),
    );

    // The first touch of memory is slow in a VM (the host backs each guest
    // page on first use); untimed, so that neither the baseline that runs
    // first nor SFS's tmpfs state pays it inside a timed phase.
    let mut warm_up: Vec<String> = Vec::new();
    let mut warm_dirs: Vec<PathBuf> = vec![absolute(&common.state_dir)?];
    if cli.baselines.contains(&Baseline::Tmpfs) {
        warm_dirs.push(absolute(&cli.tmpfs_dir)?);
    }
    warm_dirs.dedup();
    let warm_bytes = params.easy_bytes * params.nprocs as u64;
    for dir in &warm_dirs {
        progress.set_message(format!(
            "warming {} MiB of memory in {}",
            warm_bytes >> 20,
            dir.display()
        ));
        warm_up.push(staging::warm_memory(dir, warm_bytes, pid)?);
    }

    let mut all: Vec<PhaseStats> = Vec::new();
    let mut fio_runs: Vec<fio::FioRun> = Vec::new();
    let mut fio_failures: Vec<String> = Vec::new();
    let mut run_target = |target: &Target, all: &mut Vec<PhaseStats>| -> Result<()> {
        for &workload in &workloads {
            // fio on the same file system right before and right after the
            // baseline's own run (the check takes their mean).
            let fio_here = matches!(
                (workload, &target.baseline_dir, &fio_version),
                (Workload::IorEasyNn, Some(_), Some(Ok(_)))
            );
            let mut fio_before = None;
            if let (true, Some(dir)) = (fio_here, &target.baseline_dir) {
                progress.set_message(format!("{} ior-easy-nn with fio (before)", target.name));
                match fio::run_ior_easy_nn(&common.fio, &target.name, dir, &params) {
                    Ok(run) => fio_before = Some(run),
                    Err(e) => fio_failures.push(format!("{} (before): {e:#}", target.name)),
                }
                progress.inc(1);
            }
            for &phase in workload.phases() {
                progress.set_message(format!(
                    "{}{} {} {}",
                    target.name,
                    target.servers.map_or(String::new(), |n| format!("@{n}")),
                    workload.name(),
                    phase.name()
                ));
                let stats = runner::run_phase(&exe, target, workload, phase, &params, &scratch)?;
                all.push(stats);
                progress.inc(1);
            }
            if let (true, Some(dir)) = (fio_here, &target.baseline_dir) {
                progress.set_message(format!("{} ior-easy-nn with fio (after)", target.name));
                match fio::run_ior_easy_nn(&common.fio, &target.name, dir, &params) {
                    Ok(after) => fio_runs.push(match &fio_before {
                        Some(before) => fio::FioRun::mean(before, &after),
                        None => after,
                    }),
                    Err(e) => fio_failures.push(format!("{} (after): {e:#}", target.name)),
                }
                progress.inc(1);
            }
        }
        Ok(())
    };
    for target in &baselines {
        run_target(target, &mut all)?;
    }
    let counts: Vec<Option<usize>> = match &source {
        SfsSource::Start(counts) => counts.iter().copied().map(Some).collect(),
        SfsSource::Existing(..) => vec![None],
    };
    for count in counts {
        let instance = match (count, &source) {
            (Some(n), _) => {
                progress.set_message(format!("starting {n} server(s)"));
                let state =
                    absolute(&common.state_dir)?.join(format!("sfs_bench.{pid}.{n}servers"));
                let sfs = sfs.as_ref().expect("found when servers are started");
                SfsInstance::start(sfs, n, &state)?
            }
            (None, SfsSource::Existing(config, hostfile)) => {
                SfsInstance::existing(config, hostfile)?
            }
            (None, SfsSource::Start(_)) => unreachable!("started instances have a count"),
        };
        for via in &cli.via {
            let target = sfs_target(&instance, *via, &preload, pid);
            run_target(&target, &mut all)?;
        }
    }
    progress.finish_and_clear();

    let fio_check_status = match &fio_version {
        None if !workloads.contains(&Workload::IorEasyNn) => {
            "skipped: ior-easy-nn is not among the workloads".to_string()
        }
        None => "skipped: no local baseline".to_string(),
        Some(Err(reason)) => format!("skipped: {reason}"),
        Some(Ok(version)) if fio_failures.is_empty() => format!("compared with {version}"),
        Some(Ok(version)) => format!(
            "compared with {version}; fio failed on {}",
            fio_failures.join("; ")
        ),
    };
    let fio_check_incomplete = matches!(fio_version, Some(Err(_))) || !fio_failures.is_empty();
    let fio_check = report::fio_check(&all, &fio_runs);
    let rows = report::rows(&all);
    let goals = report::goals(&rows, &params);
    let mut data_bytes_checked = 0;
    let mut entries_checked = 0;
    for s in &all {
        if Workload::ALL
            .iter()
            .any(|w| w.name() == s.workload && w.is_data())
        {
            data_bytes_checked += s.verified;
        } else {
            entries_checked += s.verified;
        }
    }
    let mut targets: Vec<String> = Vec::new();
    for s in &all {
        let name = match s.servers {
            Some(n) => format!("{}@{n}", s.target),
            None => s.target.clone(),
        };
        if !targets.contains(&name) {
            targets.push(name);
        }
    }
    let report = report::Report {
        machine: report::machine(load_start),
        params,
        targets,
        verification: report::Verification {
            status: "passed",
            data_bytes_checked,
            entries_checked,
        },
        results: rows,
        goals,
        warm_up,
        fio_check_status,
        fio_check,
    };
    if common.json {
        // The text report prints these; with --json a person still sees them.
        if fio_check_incomplete {
            eprintln!("sfs_bench: fio check {}", report.fio_check_status);
        }
        for warning in report.fio_check.iter().filter_map(|c| c.warning.as_ref()) {
            eprintln!("sfs_bench: {warning}");
        }
        println!("{}", serde_json::to_string_pretty(&report)?);
    } else {
        report::print_text(&report);
    }
    Ok(())
}

fn sfs_target(instance: &SfsInstance, via: Via, preload: &Path, pid: u32) -> Target {
    let servers = Some(instance.server_count());
    let server_pids = instance.server_pids();
    match via {
        Via::Shim => Target {
            name: "sfs-shim".into(),
            root: format!(
                "{}/sfs_bench.{pid}",
                instance.config.mountdir.trim_end_matches('/')
            ),
            access: Access::Posix,
            env: vec![
                ("LD_PRELOAD".into(), preload.display().to_string()),
                (
                    "SFS_CONFIG".into(),
                    instance.config_path.display().to_string(),
                ),
                (
                    "SFS_HOSTFILE".into(),
                    instance.hostfile_path.display().to_string(),
                ),
                ("SFS_MOUNTDIR".into(), instance.config.mountdir.clone()),
            ],
            server_pids,
            servers,
            baseline_dir: None,
        },
        Via::Lib => Target {
            name: "sfs-lib".into(),
            root: format!("/sfs_bench.{pid}"),
            access: Access::Lib {
                config: instance.config_path.clone(),
                hostfile: instance.hostfile_path.clone(),
            },
            env: Vec::new(),
            server_pids,
            servers,
            baseline_dir: None,
        },
    }
}

fn absolute(path: &Path) -> Result<PathBuf> {
    std::path::absolute(path).with_context(|| format!("resolving {}", path.display()))
}

/// Removes the scratch directory (histogram files, worker stderr) at the end.
struct RemoveOnDrop(PathBuf);

impl Drop for RemoveOnDrop {
    fn drop(&mut self) {
        let _ = std::fs::remove_dir_all(&self.0);
    }
}
