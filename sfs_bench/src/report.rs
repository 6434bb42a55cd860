//! The results: a table for people, JSON for machines, the targets
//! checked against what was measured, and the local baselines checked
//! against fio.

use crate::fio::FioRun;
use crate::runner::PhaseStats;
use crate::spec::{Params, Workload};
use serde::Serialize;

/// One reported phase with its ratio to the local baselines.
#[derive(Clone, Debug, Serialize)]
pub struct Row {
    #[serde(flatten)]
    pub stats: PhaseStats,
    /// This row's rate divided by the tmpfs (disk) baseline's, same workload and phase.
    pub vs_tmpfs: Option<f64>,
    pub vs_disk: Option<f64>,
}

#[derive(Clone, Debug, Serialize)]
pub struct Goal {
    pub servers: Option<usize>,
    pub target: String,
    pub what: String,
    pub achieved: f64,
    pub goal: f64,
    pub unit: &'static str,
    pub met: bool,
}

/// A local baseline's IOR-easy N-N rate next to fio's on the same file
/// system, same sizes and process count, measured in the same run.
#[derive(Clone, Debug, Serialize)]
pub struct FioCheck {
    /// `tmpfs` or `disk`.
    pub target: String,
    pub workload: &'static str,
    /// `write` or `read`.
    pub phase: &'static str,
    pub sfs_bench_mb_per_s: f64,
    /// The mean of fio's runs (before and after the baseline's).
    pub fio_mb_per_s: f64,
    /// Each fio run's rate, in the order they ran.
    pub fio_runs_mb_per_s: Vec<f64>,
    /// sfs_bench ÷ fio (none when fio measured no time: a run far too short).
    pub ratio: Option<f64>,
    /// The ratio is between 0.9 and 1.1.
    pub within_10_percent: bool,
    pub sfs_bench_seconds: f64,
    pub fio_seconds: f64,
    /// fio's write job (the read job is the same with `--rw=read`, no fsync).
    pub fio_command: String,
    /// Set when the baseline is more than 10 % slower than fio: then every
    /// ratio against this baseline flatters SFS.
    pub warning: Option<String>,
}

#[derive(Clone, Debug, Serialize)]
pub struct Verification {
    /// Always "passed" in a report: a mismatch ends the run with an error.
    pub status: &'static str,
    pub data_bytes_checked: u64,
    pub entries_checked: u64,
}

#[derive(Clone, Debug, Serialize)]
pub struct Machine {
    pub cpus: usize,
    pub cpu_model: String,
    pub memory_gib: f64,
    pub kernel: String,
    pub load_average_start: String,
    pub load_average_end: String,
}

#[derive(Clone, Debug, Serialize)]
pub struct Report {
    pub machine: Machine,
    pub params: Params,
    pub targets: Vec<String>,
    pub verification: Verification,
    pub results: Vec<Row>,
    pub goals: Vec<Goal>,
    /// The untimed memory warm-up before the first phase, one line a directory.
    pub warm_up: Vec<String>,
    /// What became of the fio check: compared, or why it was skipped.
    pub fio_check_status: String,
    pub fio_check: Vec<FioCheck>,
}

fn read(path: &str) -> String {
    std::fs::read_to_string(path).unwrap_or_default()
}

pub fn load_average() -> String {
    read("/proc/loadavg")
        .split_whitespace()
        .take(3)
        .collect::<Vec<_>>()
        .join(" ")
}

pub fn machine(load_average_start: String) -> Machine {
    let cpuinfo = read("/proc/cpuinfo");
    let cpu_model = cpuinfo
        .lines()
        .find(|l| l.starts_with("model name"))
        .and_then(|l| l.split(':').nth(1))
        .unwrap_or("unknown")
        .trim()
        .to_string();
    let memory_kib: f64 = read("/proc/meminfo")
        .lines()
        .find(|l| l.starts_with("MemTotal:"))
        .and_then(|l| l.split_whitespace().nth(1))
        .and_then(|v| v.parse().ok())
        .unwrap_or(0.0);
    Machine {
        cpus: std::thread::available_parallelism().map_or(1, |n| n.get()),
        cpu_model,
        memory_gib: memory_kib / (1024.0 * 1024.0),
        kernel: read("/proc/sys/kernel/osrelease").trim().to_string(),
        load_average_start,
        load_average_end: load_average(),
    }
}

fn rate(stats: &PhaseStats) -> f64 {
    if is_data(stats.workload) {
        stats.mb_per_s
    } else {
        stats.ops_per_s
    }
}

fn is_data(workload: &str) -> bool {
    Workload::ALL
        .iter()
        .any(|w| w.name() == workload && w.is_data())
}

/// Rows with their baseline ratios, in workload and phase order.
pub fn rows(all: &[PhaseStats]) -> Vec<Row> {
    let position = |s: &PhaseStats| {
        let w = Workload::ALL
            .iter()
            .position(|w| w.name() == s.workload)
            .unwrap_or(usize::MAX);
        let p = Workload::ALL
            .get(w)
            .and_then(|w| w.phases().iter().position(|p| p.name() == s.phase))
            .unwrap_or(usize::MAX);
        // SFS rows first (by server count), then the baselines.
        (w, p, s.servers.is_none(), s.servers)
    };
    let mut all = all.to_vec();
    all.sort_by_key(|s| position(s));
    let all = &all;
    let baseline = |name: &str, s: &PhaseStats| {
        all.iter()
            .find(|b| b.target == name && b.workload == s.workload && b.phase == s.phase)
            .map(rate)
            .filter(|&r| r > 0.0)
    };
    all.iter()
        .filter(|s| {
            Workload::ALL.iter().any(|w| {
                w.name() == s.workload
                    && w.phases()
                        .iter()
                        .any(|p| p.name() == s.phase && p.reported(*w))
            })
        })
        .map(|s| Row {
            stats: s.clone(),
            vs_tmpfs: baseline("tmpfs", s).map(|b| rate(s) / b),
            vs_disk: baseline("disk", s).map(|b| rate(s) / b),
        })
        .collect()
}

/// The targets, for every SFS configuration that ran the workloads they need.
pub fn goals(rows: &[Row], params: &Params) -> Vec<Goal> {
    let mut goals = Vec::new();
    let mut configs: Vec<(Option<usize>, String)> = rows
        .iter()
        .filter(|r| r.stats.servers.is_some())
        .map(|r| (r.stats.servers, r.stats.target.clone()))
        .collect();
    configs.dedup();
    configs.sort();
    configs.dedup();
    for (servers, target) in configs {
        let find = |workload: &str, phase: &str| {
            rows.iter().find(|r| {
                r.stats.servers == servers
                    && r.stats.target == target
                    && r.stats.workload == workload
                    && r.stats.phase == phase
            })
        };
        let mut push =
            |what: String, achieved: Option<f64>, goal: f64, unit: &'static str, at_least: bool| {
                if let Some(achieved) = achieved {
                    goals.push(Goal {
                        servers,
                        target: target.clone(),
                        what,
                        achieved,
                        goal,
                        unit,
                        met: if at_least {
                            achieved >= goal
                        } else {
                            achieved < goal
                        },
                    });
                }
            };
        for phase in ["write", "read"] {
            push(
                format!("IOR-easy N-N {phase} vs tmpfs"),
                find("ior-easy-nn", phase)
                    .and_then(|r| r.vs_tmpfs)
                    .map(|x| x * 100.0),
                50.0,
                "%",
                true,
            );
            let n1 = find("ior-easy-n1", phase).map(|r| r.stats.mb_per_s);
            let nn = find("ior-easy-nn", phase).map(|r| r.stats.mb_per_s);
            push(
                format!("IOR-easy N-1 {phase} vs N-N"),
                n1.zip(nn)
                    .filter(|(_, nn)| *nn > 0.0)
                    .map(|(a, b)| a / b * 100.0),
                80.0,
                "%",
                true,
            );
        }
        push(
            "mdtest-easy creates".into(),
            find("mdtest-easy", "create").map(|r| r.stats.ops_per_s),
            20_000.0,
            "ops/s",
            true,
        );
        push(
            "mdtest-easy stats".into(),
            find("mdtest-easy", "stat").map(|r| r.stats.ops_per_s),
            30_000.0,
            "ops/s",
            true,
        );
        push(
            format!("ls -l of {} entries", params.tree_entries),
            find("find", "walk").map(|r| r.stats.seconds),
            5.0,
            "s",
            false,
        );
    }
    goals
}

/// The baselines' IOR-easy N-N rows next to fio's runs on their file systems.
pub fn fio_check(all: &[PhaseStats], runs: &[FioRun]) -> Vec<FioCheck> {
    let mut checks = Vec::new();
    for run in runs {
        for (phase, fio) in [("write", &run.write), ("read", &run.read)] {
            let Some(ours) = all.iter().find(|s| {
                s.target == run.target && s.workload == "ior-easy-nn" && s.phase == phase
            }) else {
                continue;
            };
            let ratio = (fio.mb_per_s > 0.0).then(|| ours.mb_per_s / fio.mb_per_s);
            let warning = ratio.filter(|&r| r < 0.9).map(|r| {
                format!(
                    "WARNING: the {} baseline's ior-easy-nn {phase} is {:.0} % slower than fio on the same file system ({:.0} vs {:.0} MB/s, the mean of fio's runs before and after it): ratios against {} flatter SFS",
                    run.target,
                    (1.0 - r) * 100.0,
                    ours.mb_per_s,
                    fio.mb_per_s,
                    run.target
                )
            });
            checks.push(FioCheck {
                target: run.target.clone(),
                workload: "ior-easy-nn",
                phase,
                sfs_bench_mb_per_s: ours.mb_per_s,
                fio_mb_per_s: fio.mb_per_s,
                fio_runs_mb_per_s: fio.runs_mb_per_s.clone(),
                ratio,
                within_10_percent: ratio.is_some_and(|r| (0.9..=1.1).contains(&r)),
                sfs_bench_seconds: ours.seconds,
                fio_seconds: fio.seconds,
                fio_command: run.command.clone(),
                warning,
            });
        }
    }
    checks
}

fn ratio(x: Option<f64>) -> String {
    x.map_or("-".into(), |r| format!("{:.0}%", r * 100.0))
}

/// The table printed without `--json`.
pub fn print_text(report: &Report) {
    let m = &report.machine;
    let p = &report.params;
    println!(
        "sfs_bench: {} client processes; {} CPUs ({}), {:.1} GiB, Linux {}; load average {} at start, {} at end",
        p.nprocs, m.cpus, m.cpu_model, m.memory_gib, m.kernel, m.load_average_start, m.load_average_end
    );
    for line in &report.warm_up {
        println!("memory warm-up: {line}");
    }
    println!(
        "sizes: IOR-easy {} MiB/process in {} KiB transfers; IOR-hard {} x {} B/process; random 4 KiB: {} MiB file, {} ops/process; mdtest-easy {} files/process; mdtest-hard {} files/process x {} B; tree {} entries",
        p.easy_bytes >> 20,
        p.easy_transfer >> 10,
        p.hard_transfers,
        p.hard_transfer,
        p.random_file_bytes >> 20,
        p.random_ops,
        p.easy_files,
        p.hard_files,
        p.hard_file_bytes,
        p.tree_entries
    );
    println!();
    println!(
        "{:<12} {:<10} {:<9} {:>3} {:>13} {:>9} {:>9} {:>9} {:>8} {:>8} {:>9} {:>6} {:>6}",
        "workload",
        "phase",
        "target",
        "srv",
        "rate",
        "p50 us",
        "p99 us",
        "p99.9 us",
        "cli CPU",
        "srv CPU",
        "CPU us/op",
        "/tmpfs",
        "/disk"
    );
    for row in &report.results {
        let s = &row.stats;
        let rate = if is_data(s.workload) {
            format!("{:.1} MB/s", s.mb_per_s)
        } else {
            format!("{:.0} op/s", s.ops_per_s)
        };
        println!(
            "{:<12} {:<10} {:<9} {:>3} {:>13} {:>9.1} {:>9.1} {:>9.1} {:>7.2}s {:>8} {:>9.1} {:>6} {:>6}",
            s.workload,
            s.phase,
            s.target,
            s.servers.map_or("-".into(), |n| n.to_string()),
            rate,
            s.latency_us.p50,
            s.latency_us.p99,
            s.latency_us.p99_9,
            s.client_cpu_s,
            s.server_cpu_s.map_or("-".into(), |c| format!("{c:.2}s")),
            s.cpu_us_per_op,
            ratio(row.vs_tmpfs),
            ratio(row.vs_disk),
        );
    }
    println!();
    let v = &report.verification;
    println!(
        "verification: {} ({:.1} MiB of data and {} entries read back and compared)",
        v.status,
        v.data_bytes_checked as f64 / (1 << 20) as f64,
        v.entries_checked
    );
    print_fio_check(report);
    if !report.goals.is_empty() {
        println!();
        println!("targets of issue 5:");
        for g in &report.goals {
            println!(
                "  {:<4} {:<9} {:<32} {:>10.1} {:<5} (goal {} {} {})",
                if g.met { "met" } else { "MISS" },
                format!("{}@{}", g.target, g.servers.unwrap_or(0)),
                g.what,
                g.achieved,
                g.unit,
                if g.unit == "s" { "<" } else { ">=" },
                g.goal,
                g.unit
            );
        }
    }
}

/// Below this a phase's time is mostly process start-up and clock resolution.
const MIN_COMPARABLE_SECONDS: f64 = 0.5;

fn print_fio_check(report: &Report) {
    let p = &report.params;
    println!();
    println!(
        "local baselines against fio (ior-easy-nn: {} processes, file per process, {} KiB transfers, {} MiB each, psync, same file system): {}",
        p.nprocs,
        p.easy_transfer >> 10,
        p.easy_bytes >> 20,
        report.fio_check_status
    );
    if report.fio_check.is_empty() {
        return;
    }
    println!(
        "  {:<6} {:<6} {:>15} {:>15} {:>9}  {:<21}",
        "target", "phase", "sfs_bench", "fio (mean)", "ratio", "fio runs before/after"
    );
    for c in &report.fio_check {
        let verdict = match c.ratio {
            None => "fio measured no time: too short to compare",
            // Process start-up and fio's millisecond clock dominate short runs.
            Some(_) if c.fio_seconds.min(c.sfs_bench_seconds) < MIN_COMPARABLE_SECONDS => {
                "too short to judge (under 0.5 s): a larger --easy-mib gives a comparable time"
            }
            Some(_) if c.within_10_percent => "within 10 %",
            Some(r) if r > 1.0 => "faster than fio: check both measured the same work",
            Some(_) => "SLOWER than fio",
        };
        let runs: Vec<String> = c
            .fio_runs_mb_per_s
            .iter()
            .map(|r| format!("{r:.0}"))
            .collect();
        println!(
            "  {:<6} {:<6} {:>10.1} MB/s {:>10.1} MB/s {:>9}  {:<21}  {verdict}",
            c.target,
            c.phase,
            c.sfs_bench_mb_per_s,
            c.fio_mb_per_s,
            ratio(c.ratio),
            runs.join(" / ") + " MB/s",
        );
    }
    for c in &report.fio_check {
        if let Some(warning) = &c.warning {
            println!("{warning}");
        }
    }
    if let Some(c) = report.fio_check.first() {
        println!("  fio write job: {}", c.fio_command);
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::fio::Measured;
    use crate::runner::Latency;

    fn stats(target: &str, phase: &'static str, mb_per_s: f64) -> PhaseStats {
        PhaseStats {
            workload: "ior-easy-nn",
            phase,
            target: target.into(),
            servers: None,
            procs: 2,
            ops: 1024,
            bytes: 1 << 30,
            seconds: 1.0,
            mb_per_s,
            ops_per_s: 1024.0,
            latency_us: Latency {
                p50: 1.0,
                p99: 1.0,
                p99_9: 1.0,
                max: 1.0,
            },
            client_cpu_s: 1.0,
            server_cpu_s: None,
            cpu_us_per_op: 1.0,
            verified: 0,
        }
    }

    #[test]
    fn a_baseline_slower_than_fio_gets_a_warning_naming_target_and_phase() {
        let all = [
            stats("tmpfs", "write", 5000.0),
            stats("tmpfs", "read", 9000.0),
            stats("disk", "write", 1000.0),
        ];
        let measured = |mb_per_s| Measured {
            mb_per_s,
            seconds: 1.0,
            runs_mb_per_s: vec![mb_per_s],
        };
        let runs = [FioRun {
            target: "tmpfs".into(),
            write: measured(8000.0),
            read: measured(9500.0),
            command: "fio ...".into(),
        }];
        let checks = fio_check(&all, &runs);
        assert_eq!(checks.len(), 2, "only the target fio ran on");
        let write = &checks[0];
        assert_eq!((write.target.as_str(), write.phase), ("tmpfs", "write"));
        assert_eq!(write.ratio, Some(5000.0 / 8000.0));
        assert!(!write.within_10_percent);
        let warning = write.warning.as_deref().unwrap();
        assert!(
            warning.starts_with("WARNING: the tmpfs baseline's ior-easy-nn write is 38 % slower"),
            "{warning}"
        );
        let read = &checks[1];
        assert!(read.within_10_percent && read.warning.is_none());
    }
}
