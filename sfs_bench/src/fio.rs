//! The local baselines checked against `fio` in the same run.
//!
//! The tmpfs and disk rows are the denominators of every "SFS ÷ tmpfs"
//! ratio, so a baseline slower than the standard tool flatters SFS. Right
//! after a baseline's IOR-easy N-N workload, `fio` runs the same workload on
//! the same file system — file per process, the same transfer size, bytes
//! per process and process count, psync, write then read — and the report
//! prints both rates and their ratio (`report::fio_check`).
//!
//! fio's options are chosen so that both tools time the same work:
//! `--fallocate=none` (fio's default preallocates its files before the
//! clock starts, which on tmpfs takes page allocation and zeroing out of the
//! timed write, while IOR and sfs_bench write into new files),
//! `--fsync_on_close=1` on the write (sfs_bench fsyncs at the end of the
//! write phase, as IOR `-e`), and `--invalidate=0` (sfs_bench reads right
//! after writing, from the page cache; fio would otherwise drop the cache
//! of its files first and read ext4 from the disk).
//!
//! fio runs twice, right before and right after the baseline's own run, and
//! the check uses the mean of the two: on a virtual disk two back-to-back
//! runs of the same fio job differ by up to 40 % (measured 290–475 MB/s), so
//! one run of each tool beside the other mostly compares their luck.

use crate::spec::Params;
use anyhow::{bail, Context, Result};
use std::path::{Path, PathBuf};
use std::process::{Command, Stdio};

/// One fio phase as fio measured it.
#[derive(Clone, Debug)]
pub struct Measured {
    /// The mean rate of the runs.
    pub mb_per_s: f64,
    /// The mean time of the runs.
    pub seconds: f64,
    /// Each run's rate, in the order they ran.
    pub runs_mb_per_s: Vec<f64>,
}

impl Measured {
    fn mean(runs: &[&Measured]) -> Measured {
        let n = runs.len().max(1) as f64;
        Measured {
            mb_per_s: runs.iter().map(|m| m.mb_per_s).sum::<f64>() / n,
            seconds: runs.iter().map(|m| m.seconds).sum::<f64>() / n,
            runs_mb_per_s: runs.iter().flat_map(|m| m.runs_mb_per_s.clone()).collect(),
        }
    }
}

/// fio's IOR-easy N-N write and read on one baseline's file system.
#[derive(Clone, Debug)]
pub struct FioRun {
    /// `tmpfs` or `disk`.
    pub target: String,
    pub write: Measured,
    pub read: Measured,
    /// The write's command line (the read differs in `--rw=read`, no fsync
    /// and `--invalidate`).
    pub command: String,
}

/// fio's version, or why the check is skipped.
pub fn version(fio: &Path) -> Result<String, String> {
    match Command::new(fio)
        .arg("--version")
        .env_remove("LD_PRELOAD")
        .output()
    {
        Ok(out) if out.status.success() => {
            Ok(String::from_utf8_lossy(&out.stdout).trim().to_string())
        }
        Ok(out) => Err(format!(
            "`{} --version` failed ({}): {}",
            fio.display(),
            out.status,
            String::from_utf8_lossy(&out.stderr).trim()
        )),
        Err(e) if e.kind() == std::io::ErrorKind::NotFound => Err(format!(
            "{} is not installed (Debian package `fio`, installed by scripts/setup.sh; or give --fio PATH)",
            fio.display()
        )),
        Err(e) => Err(format!("cannot run {}: {e}", fio.display())),
    }
}

impl FioRun {
    /// The mean of the run before the baseline's and the run after it.
    pub fn mean(before: &FioRun, after: &FioRun) -> FioRun {
        FioRun {
            target: after.target.clone(),
            write: Measured::mean(&[&before.write, &after.write]),
            read: Measured::mean(&[&before.read, &after.read]),
            command: after.command.clone(),
        }
    }
}

/// Runs fio's IOR-easy N-N write then read in a fresh directory under
/// `baseline_dir` (so on the baseline's file system), removed afterwards.
pub fn run_ior_easy_nn(
    fio: &Path,
    target: &str,
    baseline_dir: &Path,
    params: &Params,
) -> Result<FioRun> {
    let shape = Shape {
        name: "ior-easy-nn",
        block: params.easy_transfer,
        file_bytes: params.easy_bytes,
        files: params.nprocs as u64,
        // sfs_bench reads right after writing, from the page cache.
        cold_read: false,
    };
    run_write_then_read(fio, target, baseline_dir, &shape)
}

/// One fio workload: `files` jobs, each writing then reading one file of
/// `file_bytes` sequentially in `block` pieces with psync; every file is
/// fsynced when its write ends.
pub struct Shape {
    pub name: &'static str,
    pub block: u64,
    pub file_bytes: u64,
    pub files: u64,
    /// Drop the files' cached pages before reading (fio's `--invalidate=1`:
    /// `posix_fadvise(DONTNEED)`, so the read comes from the device).
    pub cold_read: bool,
}

/// Runs `shape`'s write then read in a fresh directory under `parent` (so
/// on its file system), removed afterwards.
pub fn run_write_then_read(
    fio: &Path,
    target: &str,
    parent: &Path,
    shape: &Shape,
) -> Result<FioRun> {
    let dir = parent.join(format!("sfs_bench.{}.fio", std::process::id()));
    std::fs::create_dir(&dir).with_context(|| format!("creating {}", dir.display()))?;
    let _remove = RemoveDir(dir.clone());
    let expected_bytes = shape.file_bytes * shape.files;
    let job = |rw: &str| -> Vec<String> {
        let mut args = vec![
            "--output-format=json".to_string(),
            format!("--name={}", shape.name),
            format!("--directory={}", dir.display()),
            "--ioengine=psync".into(),
            format!("--rw={rw}"),
            format!("--bs={}", shape.block),
            format!("--size={}", shape.file_bytes),
            format!("--numjobs={}", shape.files),
            "--group_reporting".into(),
            "--fallocate=none".into(),
        ];
        match rw {
            "write" => args.push("--fsync_on_close=1".into()),
            _ => args.push(format!("--invalidate={}", u8::from(shape.cold_read))),
        }
        args
    };
    let write_args = job("write");
    let command = format!("{} {}", fio.display(), write_args.join(" "));
    let write = run_job(fio, &write_args, "write", expected_bytes)?;
    // Same job name and directory: the read job reads the files just written.
    let read = run_job(fio, &job("read"), "read", expected_bytes)?;
    Ok(FioRun {
        target: target.to_string(),
        write,
        read,
        command,
    })
}

fn run_job(fio: &Path, args: &[String], rw: &str, expected_bytes: u64) -> Result<Measured> {
    let out = Command::new(fio)
        .args(args)
        .env_remove("LD_PRELOAD")
        .stdin(Stdio::null())
        .output()
        .with_context(|| format!("running {}", fio.display()))?;
    if !out.status.success() {
        bail!(
            "fio {rw} failed ({}): {}",
            out.status,
            String::from_utf8_lossy(&out.stderr).trim()
        );
    }
    parse(&String::from_utf8_lossy(&out.stdout), rw, expected_bytes)
        .with_context(|| format!("reading fio's {rw} report"))
}

/// The group's rate from fio's `--output-format=json --group_reporting`
/// report (fio may print notes before the JSON).
fn parse(stdout: &str, rw: &str, expected_bytes: u64) -> Result<Measured> {
    let start = stdout.find('{').context("no JSON in fio's output")?;
    let report: serde_json::Value = serde_json::from_str(&stdout[start..])?;
    let job = &report["jobs"][0];
    if job["error"].as_i64().unwrap_or(0) != 0 {
        bail!("fio job error {}", job["error"]);
    }
    let phase = &job[rw];
    let io_bytes = phase["io_bytes"].as_u64().context("no io_bytes")?;
    if io_bytes != expected_bytes {
        bail!("fio moved {io_bytes} bytes, expected {expected_bytes}");
    }
    let bw_bytes = phase["bw_bytes"].as_f64().context("no bw_bytes")?;
    Ok(Measured {
        mb_per_s: bw_bytes / 1e6,
        seconds: phase["runtime"].as_f64().unwrap_or(0.0) / 1e3,
        runs_mb_per_s: vec![bw_bytes / 1e6],
    })
}

struct RemoveDir(PathBuf);

impl Drop for RemoveDir {
    fn drop(&mut self) {
        let _ = std::fs::remove_dir_all(&self.0);
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn reads_the_group_rate_and_checks_the_bytes() {
        let out = r#"note: a line before the report
{ "fio version": "fio-3.33", "jobs": [ { "jobname": "ior-easy-nn", "error": 0,
  "write": { "io_bytes": 4194304, "bw_bytes": 1048576000, "runtime": 4 },
  "read": { "io_bytes": 0, "bw_bytes": 0, "runtime": 0 } } ] }"#;
        let m = parse(out, "write", 4 << 20).unwrap();
        assert_eq!(m.mb_per_s, 1048.576);
        assert_eq!(m.seconds, 0.004);
        assert!(parse(out, "write", 8 << 20).is_err(), "short run");
        assert!(parse(out, "read", 4 << 20).is_err(), "nothing read");
        assert!(parse("fio: bad option", "write", 1).is_err());
    }

    #[test]
    fn the_check_uses_the_mean_of_the_runs_before_and_after() {
        let run = |w: f64, r: f64| FioRun {
            target: "disk".into(),
            write: Measured {
                mb_per_s: w,
                seconds: 2.0,
                runs_mb_per_s: vec![w],
            },
            read: Measured {
                mb_per_s: r,
                seconds: 0.1,
                runs_mb_per_s: vec![r],
            },
            command: "fio".into(),
        };
        let both = FioRun::mean(&run(300.0, 9000.0), &run(500.0, 11000.0));
        assert_eq!(both.write.mb_per_s, 400.0);
        assert_eq!(both.write.runs_mb_per_s, vec![300.0, 500.0]);
        assert_eq!(both.read.mb_per_s, 10000.0);
    }

    #[test]
    fn a_missing_fio_is_a_reason_not_an_error() {
        let reason = version(Path::new("/nonexistent/fio")).unwrap_err();
        assert!(reason.contains("not installed"), "{reason}");
    }
}
