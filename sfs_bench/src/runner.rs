//! Runs one phase of one workload on one target with N forked worker
//! processes, and aggregates what they report: wall time from the earliest
//! start to the latest end, operations, bytes, merged latency histograms,
//! client CPU (the workers' own getrusage) and server CPU (/proc of the
//! server processes, before and after).

use crate::cluster::process_cpu_seconds;
use crate::spec::{Access, Params, Phase, WorkerResult, WorkerSpec, Workload};
use crate::worker::new_histogram;
use anyhow::{bail, Context, Result};
use serde::Serialize;
use std::io::{BufRead, BufReader, Write};
use std::path::{Path, PathBuf};
use std::process::{Child, ChildStdin, Command, Stdio};

/// One file system under test.
pub struct Target {
    /// `sfs-shim`, `sfs-lib`, `tmpfs` or `disk`.
    pub name: String,
    /// This run's directory on it (a path inside SFS for `sfs-lib`).
    pub root: String,
    pub access: Access,
    /// Environment of the workers: LD_PRELOAD and SFS_* for the shim.
    pub env: Vec<(String, String)>,
    /// Server processes whose CPU time is charged to this target.
    pub server_pids: Vec<i32>,
    /// Servers behind it (None for a local directory).
    pub servers: Option<usize>,
    /// Local baselines: the directory given for it, where fio's check runs.
    pub baseline_dir: Option<PathBuf>,
}

/// The aggregate of one phase.
#[derive(Clone, Debug, Serialize)]
pub struct PhaseStats {
    pub workload: &'static str,
    pub phase: &'static str,
    pub target: String,
    pub servers: Option<usize>,
    pub procs: usize,
    pub ops: u64,
    pub bytes: u64,
    pub seconds: f64,
    pub mb_per_s: f64,
    pub ops_per_s: f64,
    pub latency_us: Latency,
    pub client_cpu_s: f64,
    pub server_cpu_s: Option<f64>,
    /// (client + server CPU) per operation, microseconds.
    pub cpu_us_per_op: f64,
    pub verified: u64,
}

#[derive(Clone, Debug, Serialize)]
pub struct Latency {
    pub p50: f64,
    pub p99: f64,
    pub p99_9: f64,
    pub max: f64,
}

struct Running {
    child: Child,
    stdin: ChildStdin,
    stdout: BufReader<std::process::ChildStdout>,
    stderr_path: PathBuf,
}

impl Running {
    fn failure(&mut self, what: &str) -> anyhow::Error {
        let status = self.child.wait().map(|s| s.to_string()).unwrap_or_default();
        let stderr = std::fs::read_to_string(&self.stderr_path).unwrap_or_default();
        anyhow::anyhow!("worker {what} ({status}): {}", stderr.trim())
    }
}

/// Runs `phase` of `workload` on `target` with `params.nprocs` worker processes
/// (one for single-process phases).
pub fn run_phase(
    exe: &Path,
    target: &Target,
    workload: Workload,
    phase: Phase,
    params: &Params,
    scratch: &Path,
) -> Result<PhaseStats> {
    let procs = if phase.single_process() {
        1
    } else {
        params.nprocs
    };
    let mut workers = Vec::with_capacity(procs);
    let tag = format!("{}-{}-{}", target.name, workload.name(), phase.name());
    for rank in 0..procs {
        let spec = WorkerSpec {
            access: target.access.clone(),
            root: target.root.clone(),
            workload,
            phase,
            params: params.clone(),
            rank,
            procs,
            histogram: scratch.join(format!("{tag}-{rank}.hdr")),
        };
        let stderr_path = scratch.join(format!("{tag}-{rank}.stderr"));
        let mut command = Command::new(exe);
        command
            .arg("__worker")
            .arg(serde_json::to_string(&spec)?)
            .env_remove("LD_PRELOAD")
            .stdin(Stdio::piped())
            .stdout(Stdio::piped())
            .stderr(std::fs::File::create(&stderr_path)?);
        for (key, value) in &target.env {
            command.env(key, value);
        }
        let mut child = command
            .spawn()
            .with_context(|| format!("starting worker {}", exe.display()))?;
        let stdin = child.stdin.take().expect("piped stdin");
        let stdout = BufReader::new(child.stdout.take().expect("piped stdout"));
        workers.push(Running {
            child,
            stdin,
            stdout,
            stderr_path,
        });
    }
    for worker in &mut workers {
        let mut line = String::new();
        worker.stdout.read_line(&mut line)?;
        if line.trim() != "ready" {
            let err = worker.failure("failed to start");
            return Err(err.context(format!("{tag}: on {}", target.root)));
        }
    }
    let server_cpu_before: Vec<Option<f64>> = target
        .server_pids
        .iter()
        .map(|&pid| process_cpu_seconds(pid))
        .collect();
    for worker in &mut workers {
        writeln!(worker.stdin, "go")?;
        worker.stdin.flush()?;
    }
    let mut results = Vec::with_capacity(procs);
    let mut first_error = None;
    for worker in &mut workers {
        let mut line = String::new();
        let _ = worker.stdout.read_line(&mut line);
        match serde_json::from_str::<WorkerResult>(line.trim()) {
            Ok(result) => {
                let status = worker.child.wait()?;
                if !status.success() {
                    first_error.get_or_insert(worker.failure("failed"));
                }
                results.push(result);
            }
            Err(_) => {
                first_error.get_or_insert(worker.failure("failed"));
            }
        }
    }
    if let Some(err) = first_error {
        return Err(err.context(format!("{tag}: on {}", target.root)));
    }
    let server_cpu_s = if target.server_pids.is_empty() {
        None
    } else {
        let mut total = 0.0;
        for (&pid, before) in target.server_pids.iter().zip(server_cpu_before) {
            match (before, process_cpu_seconds(pid)) {
                (Some(b), Some(a)) => total += a - b,
                _ => bail!("server process {pid} of {} is gone", target.name),
            }
        }
        Some(total)
    };

    let mut histogram = new_histogram();
    for rank in 0..procs {
        let path = scratch.join(format!("{tag}-{rank}.hdr"));
        let bytes = std::fs::read(&path).with_context(|| format!("reading {}", path.display()))?;
        let h: hdrhistogram::Histogram<u64> = hdrhistogram::serialization::Deserializer::new()
            .deserialize(&mut bytes.as_slice())
            .map_err(|e| anyhow::anyhow!("{}: bad histogram: {e:?}", path.display()))?;
        histogram
            .add(h)
            .map_err(|e| anyhow::anyhow!("merging histograms: {e:?}"))?;
        let _ = std::fs::remove_file(path);
    }
    let start = results.iter().map(|r| r.start_ns).min().unwrap_or(0);
    let end = results.iter().map(|r| r.end_ns).max().unwrap_or(0);
    let seconds = (end.saturating_sub(start) as f64 / 1e9).max(1e-9);
    let ops: u64 = results.iter().map(|r| r.ops).sum();
    let bytes: u64 = results.iter().map(|r| r.bytes).sum();
    let client_cpu_s = results
        .iter()
        .map(|r| (r.user_us + r.system_us) as f64 / 1e6)
        .sum::<f64>();
    let us = |q: f64| histogram.value_at_quantile(q) as f64 / 1000.0;
    Ok(PhaseStats {
        workload: workload.name(),
        phase: phase.name(),
        target: target.name.clone(),
        servers: target.servers,
        procs,
        ops,
        bytes,
        seconds,
        mb_per_s: bytes as f64 / seconds / 1e6,
        ops_per_s: ops as f64 / seconds,
        latency_us: Latency {
            p50: us(0.5),
            p99: us(0.99),
            p99_9: us(0.999),
            max: histogram.max() as f64 / 1000.0,
        },
        client_cpu_s,
        server_cpu_s,
        cpu_us_per_op: (client_cpu_s + server_cpu_s.unwrap_or(0.0)) * 1e6 / ops.max(1) as f64,
        verified: results.iter().map(|r| r.verified).sum(),
    })
}
