//! The report of `sfs_bench tiering`: each figure, the three
//! targets as ratios with pass/miss, the sizes and the machine's state; a
//! table for people, JSON for machines.

use super::Measured;
use crate::report::{machine, Machine};
use crate::runner::PhaseStats;
use serde::Serialize;

/// One measured rate.
#[derive(Clone, Debug, Serialize)]
pub struct Figure {
    pub what: &'static str,
    pub mb_per_s: f64,
    pub seconds: f64,
    pub bytes: u64,
    /// Client and server CPU seconds, where SFS did the work.
    pub client_cpu_s: Option<f64>,
    pub server_cpu_s: Option<f64>,
    pub note: String,
}

/// One of the targets against this run.
#[derive(Clone, Debug, Serialize)]
pub struct TargetCheck {
    pub target: &'static str,
    pub measured_mb_per_s: f64,
    pub reference_mb_per_s: f64,
    pub ratio: f64,
    pub goal: f64,
    pub met: bool,
    /// Why the ratio may say less than it seems to (empty: nothing known).
    pub caveat: String,
}

#[derive(Clone, Debug, Serialize)]
pub struct Sizes {
    pub servers: usize,
    pub client_processes: usize,
    pub files: u64,
    pub file_bytes: u64,
    pub total_bytes: u64,
    pub chunk_size: u64,
    pub transfer_bytes: u64,
    pub backend_dir: String,
    pub flusher_policy: String,
    pub idle_ms: u64,
    pub writeback_nice: u8,
    pub seed: u64,
}

#[derive(Clone, Debug, Serialize)]
pub struct TieringReport {
    pub machine: Machine,
    pub sizes: Sizes,
    pub warm_up: String,
    /// How the reads were made cold.
    pub cold_reads: String,
    /// What each timed phase started from.
    pub page_cache: String,
    pub figures: Vec<Figure>,
    pub targets: Vec<TargetCheck>,
    /// fio's write job on the back end (the read: `--rw=read --invalidate=1`).
    pub fio_command: String,
    /// Each fio run's write and read rate, before and after SFS's phases.
    pub fio_runs_mb_per_s: Vec<(f64, f64)>,
    /// Bytes read back and compared with what was written.
    pub verified_bytes: u64,
    /// Bytes `sfs flush` wrote to the back end.
    pub flushed_bytes: u64,
    /// Bytes the flusher wrote back while the foreground write ran
    /// (counted by the servers per file done) ...
    pub written_back_during_write_bytes: u64,
    /// ... and in the back end's files when the write ended.
    pub in_backend_after_write_bytes: u64,
    /// Bytes the restored servers read through from the back end.
    pub fetched_bytes: u64,
}

fn sfs_figure(what: &'static str, stats: &PhaseStats, note: String) -> Figure {
    Figure {
        what,
        mb_per_s: stats.mb_per_s,
        seconds: stats.seconds,
        bytes: stats.bytes,
        client_cpu_s: Some(stats.client_cpu_s),
        server_cpu_s: stats.server_cpu_s,
        note,
    }
}

fn check(
    target: &'static str,
    measured: f64,
    reference: f64,
    goal: f64,
    caveat: String,
) -> TargetCheck {
    let ratio = if reference > 0.0 {
        measured / reference
    } else {
        0.0
    };
    TargetCheck {
        target,
        measured_mb_per_s: measured,
        reference_mb_per_s: reference,
        ratio,
        goal,
        met: ratio >= goal,
        caveat,
    }
}

pub fn build(m: &Measured) -> TieringReport {
    let p = &m.params;
    let files = p.nprocs as u64 * p.files_per_proc;
    let total = p.easy_bytes * files;
    let mib = |b: u64| b as f64 / 1048576.0;
    let flush_rate = m.explicit.flush_bytes as f64 / m.explicit.flush_seconds.max(1e-9) / 1e6;
    let runs = |f: &crate::fio::Measured| {
        f.runs_mb_per_s
            .iter()
            .map(|r| format!("{r:.0}"))
            .collect::<Vec<_>>()
            .join(" / ")
    };
    let background_seconds = m.flushing.write.seconds + m.flushing.drain_seconds;
    let figures = vec![
        Figure {
            what: "back end write (fio, each file fsynced)",
            mb_per_s: m.native.write.mb_per_s,
            seconds: m.native.write.seconds,
            bytes: total,
            client_cpu_s: None,
            server_cpu_s: None,
            note: format!("mean of runs before / after: {} MB/s", runs(&m.native.write)),
        },
        Figure {
            what: "back end read, cold (fio)",
            mb_per_s: m.native.read.mb_per_s,
            seconds: m.native.read.seconds,
            bytes: total,
            client_cpu_s: None,
            server_cpu_s: None,
            note: format!("mean of runs before / after: {} MB/s", runs(&m.native.read)),
        },
        Figure {
            what: "SFS flush to the back end (sfs flush -r)",
            mb_per_s: flush_rate,
            seconds: m.explicit.flush_seconds,
            bytes: m.explicit.flush_bytes,
            client_cpu_s: None,
            server_cpu_s: Some(m.explicit.flush_server_cpu_s),
            note: "explicit policy: nothing written back before".into(),
        },
        sfs_figure(
            "SFS write, no write-back (explicit)",
            &m.explicit.write,
            String::new(),
        ),
        sfs_figure(
            "SFS write, flusher running",
            &m.flushing.write,
            format!(
                "during the write {:.0} MiB written back ({:.0} MiB in the back end's files); all of it {:.2} s after the write began ({:.0} MB/s)",
                mib(m.flushing.written_back_during_write),
                mib(m.flushing.in_backend_after_write),
                background_seconds,
                total as f64 / background_seconds.max(1e-9) / 1e6
            ),
        ),
        sfs_figure(
            "SFS read-through after restore, cold",
            &m.restored.read,
            format!("{:.0} MiB fetched from the back end", mib(m.restored.fetched)),
        ),
    ];
    let flusher_caveat = if m.flushing.in_backend_after_write == 0 {
        "the flusher wrote nothing back during the write: the ratio compares two writes without write-back".into()
    } else if m.flushing.in_backend_after_write < total / 4 {
        format!(
            "the flusher overlapped only part of the write ({:.0} of {:.0} MiB in the back end when it ended)",
            mib(m.flushing.in_backend_after_write),
            mib(total)
        )
    } else {
        String::new()
    };
    let fetch_caveat = if m.restored.fetched < total {
        format!(
            "only {:.0} of {:.0} MiB were fetched from the back end",
            mib(m.restored.fetched),
            mib(total)
        )
    } else {
        String::new()
    };
    let targets = vec![
        check(
            "flush >= 80 % of the back end's write",
            flush_rate,
            m.native.write.mb_per_s,
            0.8,
            String::new(),
        ),
        check(
            "write with the flusher >= 70 % of without",
            m.flushing.write.mb_per_s,
            m.explicit.write.mb_per_s,
            0.7,
            flusher_caveat,
        ),
        check(
            "read-through >= 50 % of the back end's read",
            m.restored.read.mb_per_s,
            m.native.read.mb_per_s,
            0.5,
            fetch_caveat,
        ),
    ];
    TieringReport {
        machine: machine(m.load_start.clone()),
        sizes: Sizes {
            servers: m.servers,
            client_processes: p.nprocs,
            files,
            file_bytes: p.easy_bytes,
            total_bytes: total,
            chunk_size: m.chunk_size,
            transfer_bytes: p.easy_transfer,
            backend_dir: m.backend_dir.display().to_string(),
            flusher_policy: m.flusher.name().into(),
            idle_ms: m.idle_ms,
            writeback_nice: m.writeback_nice,
            seed: p.seed,
        },
        warm_up: m.warm_up.clone(),
        cold_reads: format!(
            "page cache of the back end's files dropped before each cold read (posix_fadvise DONTNEED: fio --invalidate=1 for fio's, sfs_bench for the {} files of SFS's back end)",
            m.restored.cold_files
        ),
        page_cache: if m.page_cache_dropped {
            "synced and dropped (drop_caches) before each timed phase: fio's runs and SFS's start from the same memory".into()
        } else {
            "synced before each timed phase, NOT dropped (drop_caches needs root): on a VM that hands freed memory back to its host, phases after large ones may run slower for it".into()
        },
        figures,
        targets,
        fio_command: m.native.command.clone(),
        fio_runs_mb_per_s: m
            .native_runs
            .iter()
            .map(|r| (r.write.mb_per_s, r.read.mb_per_s))
            .collect(),
        verified_bytes: m.explicit.verified + m.flushing.verified + m.restored.verified,
        flushed_bytes: m.explicit.flush_bytes,
        written_back_during_write_bytes: m.flushing.written_back_during_write,
        in_backend_after_write_bytes: m.flushing.in_backend_after_write,
        fetched_bytes: m.restored.fetched,
    }
}

/// The tables printed without `--json`.
pub fn print_text(r: &TieringReport) {
    let m = &r.machine;
    let s = &r.sizes;
    println!(
        "sfs_bench tiering: {} servers, {} client processes; {} CPUs ({}), {:.1} GiB, Linux {}; load average {} at start, {} at end",
        s.servers, s.client_processes, m.cpus, m.cpu_model, m.memory_gib, m.kernel,
        m.load_average_start, m.load_average_end
    );
    println!(
        "sizes: {} files of {} MiB ({} MiB), {} KiB chunks, {} KiB transfers; back end `dir` under {}; flusher {} with idle_ms {}, writeback_nice {}; seed {}",
        s.files,
        s.file_bytes >> 20,
        s.total_bytes >> 20,
        s.chunk_size >> 10,
        s.transfer_bytes >> 10,
        s.backend_dir,
        s.flusher_policy,
        s.idle_ms,
        s.writeback_nice,
        s.seed
    );
    println!("memory warm-up: {}", r.warm_up);
    println!("cold reads: {}", r.cold_reads);
    println!("page cache: {}", r.page_cache);
    println!("fio: {}", r.fio_command);
    println!();
    println!(
        "{:<42} {:>10} {:>9} {:>17}  note",
        "figure", "MB/s", "seconds", "CPU client+server"
    );
    for f in &r.figures {
        let cpu = match (f.client_cpu_s, f.server_cpu_s) {
            (Some(c), Some(s)) => format!("{c:.2}s + {s:.2}s"),
            (None, Some(s)) => format!("- + {s:.2}s"),
            _ => "-".into(),
        };
        println!(
            "{:<42} {:>10.0} {:>9.3} {:>17}  {}",
            f.what, f.mb_per_s, f.seconds, cpu, f.note
        );
    }
    println!();
    println!(
        "{:<45} {:>10} {:>10} {:>7} {:>6}  result",
        "target", "measured", "reference", "ratio", "goal"
    );
    for t in &r.targets {
        println!(
            "{:<45} {:>10.0} {:>10.0} {:>6.0}% {:>5.0}%  {}{}",
            t.target,
            t.measured_mb_per_s,
            t.reference_mb_per_s,
            t.ratio * 100.0,
            t.goal * 100.0,
            if t.met { "met" } else { "MISSED" },
            if t.caveat.is_empty() {
                String::new()
            } else {
                format!(" ({})", t.caveat)
            }
        );
    }
    println!();
    println!(
        "verification: passed, {} MiB read back and compared",
        r.verified_bytes >> 20
    );
}
