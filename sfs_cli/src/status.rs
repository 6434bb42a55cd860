//! `sfs status`: every server of the hostfile with what its `Stats` call
//! reports, as a table for a person or (`--json`) one JSON object for a
//! script.
//!
//! The entry count is RocksDB's `estimate-num-keys`, which counts pending
//! size updates (merge operands) and deletions until compaction folds them:
//! an exact count would be a scan of the whole metadata store on every call.
//! So it is shown as an estimate (`~41k`) and named `entries_estimate` in
//! the JSON, never as a number to compare with a file count.
//!
//! `--watch` redraws a shorter table with rates ([`watch`]).

use crate::Setup;
use anyhow::{bail, Result};
use sfs_client::{Client, SfsResult};

/// What a server's `Stats` call answered (the fields of the RPC response
/// this command shows).
struct Stats {
    entries_estimate: u64,
    chunk_bytes: u64,
    capacity_bytes: u64,
    free_bytes: u64,
    requests: u64,
    uptime_ms: u64,
    tier: sfs_client::ServerStats,
}

/// One server's row: what the hostfile says and what it answered.
struct Row {
    name: String,
    address: String,
    data_transport: Option<&'static str>,
    stats: SfsResult<Stats>,
}

fn rows(setup: &Setup) -> Result<Vec<Row>> {
    let client = Client::new(setup.config.clone(), setup.hostfile.clone())?;
    Ok(rows_of(&client))
}

fn rows_of(client: &Client) -> Vec<Row> {
    let transports = client.data_transports();
    client
        .server_stats()
        .into_iter()
        .zip(transports)
        .map(|((name, address, stats), data_transport)| Row {
            name,
            address,
            data_transport: data_transport.map(|t| t.name()),
            stats: stats.map(|s| Stats {
                entries_estimate: s.entries,
                chunk_bytes: s.chunk_bytes,
                capacity_bytes: s.capacity_bytes,
                free_bytes: s.free_bytes,
                requests: s.requests,
                uptime_ms: s.uptime_ms,
                tier: s,
            }),
        })
        .collect()
}

pub fn status(setup: &Setup, json: bool) -> Result<()> {
    let rows = rows(setup)?;
    if json {
        print_json(setup, &rows)?;
    } else {
        print_table(&rows)?;
    }
    let down: Vec<String> = rows
        .iter()
        .filter(|r| r.stats.is_err())
        .map(|r| format!("{} ({})", r.name, r.address))
        .collect();
    if !json {
        outln!(
            "sfs status: {} of {} server(s) up",
            rows.len() - down.len(),
            rows.len()
        )?;
    }
    if !down.is_empty() {
        bail!(
            "{} of {} server(s) down: {}",
            down.len(),
            rows.len(),
            down.join(", ")
        );
    }
    // Two lines naming one server answer twice: "up" would hide that half
    // of the placement goes nowhere.
    let duplicates = sfs_rpc::locality::duplicate_addresses(&setup.hostfile);
    if !duplicates.is_empty() {
        bail!(
            "the hostfile names one server twice (placement counts it as two):\n  {}",
            duplicates.join("\n  ")
        );
    }
    Ok(())
}

fn print_table(rows: &[Row]) -> Result<()> {
    outln!(
        "{:<12} {:<22} {:<4} {:<5} {:>9} {:>10} {:>10} {:>10} {:>9} {:>8}",
        "SERVER",
        "ADDRESS",
        "UP",
        "DATA",
        "~ENTRIES",
        "USED",
        "CAPACITY",
        "FREE",
        "REQUESTS",
        "UPTIME"
    )?;
    for row in rows {
        let (name, address) = (&row.name, &row.address);
        let data = row.data_transport.unwrap_or("-");
        match &row.stats {
            Ok(s) => outln!(
                "{name:<12} {address:<22} {:<4} {data:<5} {:>9} {:>10} {:>10} {:>10} {:>9} {:>8}",
                "yes",
                approximate(s.entries_estimate),
                human_bytes(s.chunk_bytes),
                human_bytes(s.capacity_bytes),
                human_bytes(s.free_bytes),
                s.requests,
                human_duration(s.uptime_ms),
            )?,
            Err(e) => outln!(
                "{name:<12} {address:<22} {:<4} {data:<5} {:>9} {:>10} {:>10} {:>10} {:>9} {:>8}  ({e})",
                "no",
                "-",
                "-",
                "-",
                "-",
                "-",
                "-"
            )?,
        }
    }
    if rows.iter().any(|r| r.stats.is_ok()) {
        outln!(
            "~ENTRIES is RocksDB's estimate, not an exact count; FREE is what may still be written."
        )?;
        print_tiering(rows)?;
    }
    Ok(())
}

/// Each server's write-back to the object back end.
fn print_tiering(rows: &[Row]) -> Result<()> {
    outln!()?;
    outln!(
        "{:<12} {:<8} {:<9} {:>6} {:>10} {:>12} {:>10} {:>10} {:>10} {:>6}",
        "SERVER",
        "BACKEND",
        "WRITEBACK",
        "DIRTY",
        "DIRTY",
        "WRITTEN",
        "RATE",
        "EVICTED",
        "FETCHED",
        "ERRORS"
    )?;
    outln!(
        "{:<12} {:<8} {:<9} {:>6} {:>10} {:>12} {:>10} {:>10} {:>10} {:>6}",
        "",
        "",
        "",
        "FILES",
        "BYTES",
        "BACK",
        "(10 s)",
        "",
        "",
        ""
    )?;
    for row in rows {
        let Ok(s) = &row.stats else { continue };
        let t = &s.tier;
        let error = if t.backend_error.is_empty() {
            String::new()
        } else {
            format!("  (last error: {})", t.backend_error)
        };
        outln!(
            "{:<12} {:<8} {:<9} {:>6} {:>10} {:>12} {:>10} {:>10} {:>10} {:>6}{error}",
            row.name,
            t.backend,
            t.writeback,
            t.dirty_files,
            human_bytes(t.dirty_bytes),
            human_bytes(t.written_back_bytes),
            format!("{}/s", human_bytes(t.writeback_bytes_per_s)),
            human_bytes(t.evicted_bytes),
            human_bytes(t.fetched_bytes),
            t.writeback_errors,
        )?;
    }
    Ok(())
}

fn print_json(setup: &Setup, rows: &[Row]) -> Result<()> {
    let servers: Vec<serde_json::Value> = rows
        .iter()
        .map(|row| {
            let stats = row.stats.as_ref().ok();
            serde_json::json!({
                "name": row.name,
                "address": row.address,
                "up": stats.is_some(),
                "data_transport": row.data_transport,
                "entries_estimate": stats.map(|s| s.entries_estimate),
                "chunk_bytes": stats.map(|s| s.chunk_bytes),
                "capacity_bytes": stats.map(|s| s.capacity_bytes),
                "free_bytes": stats.map(|s| s.free_bytes),
                "requests": stats.map(|s| s.requests),
                "uptime_ms": stats.map(|s| s.uptime_ms),
                "data_bytes_in": stats.map(|s| s.tier.data_bytes_in),
                "data_bytes_out": stats.map(|s| s.tier.data_bytes_out),
                "tiering": stats.map(|s| serde_json::json!({
                    "backend": s.tier.backend,
                    "writeback": s.tier.writeback,
                    "dirty_files": s.tier.dirty_files,
                    "dirty_bytes": s.tier.dirty_bytes,
                    "written_back_bytes": s.tier.written_back_bytes,
                    "evicted_bytes": s.tier.evicted_bytes,
                    "fetched_bytes": s.tier.fetched_bytes,
                    "writeback_errors": s.tier.writeback_errors,
                    "backend_error": s.tier.backend_error,
                    "writeback_bytes_per_s": s.tier.writeback_bytes_per_s,
                })),
                "error": row.stats.as_ref().err().map(|e| e.to_string()),
            })
        })
        .collect();
    let up = rows.iter().filter(|r| r.stats.is_ok()).count();
    let report = serde_json::json!({
        "hostfile": setup.hostfile_path.display().to_string(),
        "servers": servers,
        "up": up,
        "down": rows.len() - up,
    });
    outln!("{report}")?;
    Ok(())
}

/// What one server's rates are computed from: two successive answers.
#[derive(Clone, Copy, Debug, PartialEq)]
struct Sample {
    uptime_ms: u64,
    requests: u64,
    bytes_in: u64,
    bytes_out: u64,
}

impl Sample {
    fn of(stats: &Stats) -> Sample {
        Sample {
            uptime_ms: stats.uptime_ms,
            requests: stats.requests,
            bytes_in: stats.tier.data_bytes_in,
            bytes_out: stats.tier.data_bytes_out,
        }
    }
}

/// Requests per second and MB/s (10^6 bytes) in and out between two
/// samples of one server, over the server's own clock (its uptime); `None`
/// when the server restarted in between or no time passed.
#[derive(Clone, Copy, Debug, Default, PartialEq)]
struct Rates {
    requests: f64,
    mb_in: f64,
    mb_out: f64,
}

fn rates(before: &Sample, now: &Sample) -> Option<Rates> {
    let seconds = now.uptime_ms.checked_sub(before.uptime_ms)? as f64 / 1000.0;
    if seconds <= 0.0 {
        return None;
    }
    let per_second = |now: u64, before: u64| Some(now.checked_sub(before)? as f64 / seconds);
    Some(Rates {
        requests: per_second(now.requests, before.requests)?,
        mb_in: per_second(now.bytes_in, before.bytes_in)? / 1e6,
        mb_out: per_second(now.bytes_out, before.bytes_out)? / 1e6,
    })
}

/// `sfs status --watch`: asks every server for its `Stats` every `seconds`
/// and redraws the table with the rates since the previous answers, and the
/// cluster's sums; `count` redraws, or until interrupted.
pub fn watch(setup: &Setup, seconds: f64, count: Option<u64>) -> Result<()> {
    if !(seconds.is_finite() && (0.1..=86_400.0).contains(&seconds)) {
        bail!("--watch: the interval must be from 0.1 to 86400 seconds, got {seconds}");
    }
    let client = Client::new(setup.config.clone(), setup.hostfile.clone())?;
    let interval = std::time::Duration::from_secs_f64(seconds);
    let terminal = std::io::IsTerminal::is_terminal(&std::io::stdout());
    let mut previous: Vec<Option<Sample>> = Vec::new();
    let mut redraws = 0u64;
    loop {
        let rows = rows_of(&client);
        let samples: Vec<Option<Sample>> = rows
            .iter()
            .map(|r| r.stats.as_ref().ok().map(Sample::of))
            .collect();
        if terminal {
            // Home and clear: the table is drawn over the last one.
            use std::io::Write as _;
            write!(std::io::stdout().lock(), "\x1b[H\x1b[2J")?;
        }
        print_watch(&rows, &samples, &previous, seconds)?;
        previous = samples;
        redraws += 1;
        if count.is_some_and(|n| redraws >= n) {
            return Ok(());
        }
        std::thread::sleep(interval);
    }
}

fn print_watch(
    rows: &[Row],
    samples: &[Option<Sample>],
    previous: &[Option<Sample>],
    seconds: f64,
) -> Result<()> {
    outln!("sfs status --watch {seconds}: rates since the previous redraw")?;
    let header = |a: &str, b: &str, c: &str, d: &str, e: &str, f: &str, g: &str, h: &str| {
        let line = format!("{a:<12} {b:<22} {c:<4} {d:>10} {e:>10} {f:>10} {g:>9} {h:>10}");
        line.trim_end().to_string()
    };
    outln!(
        "{}",
        header("SERVER", "ADDRESS", "UP", "REQ/S", "IN MB/s", "OUT MB/s", "~ENTRIES", "USED")
    )?;
    let mut sum = Rates::default();
    let mut measured = false;
    for (i, row) in rows.iter().enumerate() {
        let rate = match (previous.get(i).copied().flatten(), samples[i]) {
            (Some(before), Some(now)) => rates(&before, &now),
            _ => None,
        };
        if let Some(r) = rate {
            measured = true;
            sum.requests += r.requests;
            sum.mb_in += r.mb_in;
            sum.mb_out += r.mb_out;
        }
        let shown = |value: Option<f64>| value.map_or("-".to_string(), |v| format!("{v:.1}"));
        match &row.stats {
            Ok(s) => outln!(
                "{}",
                header(
                    &row.name,
                    &row.address,
                    "yes",
                    &shown(rate.map(|r| r.requests)),
                    &shown(rate.map(|r| r.mb_in)),
                    &shown(rate.map(|r| r.mb_out)),
                    &approximate(s.entries_estimate),
                    &human_bytes(s.chunk_bytes),
                )
            )?,
            Err(e) => outln!(
                "{}  ({e})",
                header(&row.name, &row.address, "no", "-", "-", "-", "-", "-")
            )?,
        }
    }
    let total = |v: f64| {
        if measured {
            format!("{v:.1}")
        } else {
            "-".into()
        }
    };
    let up = samples.iter().filter(|s| s.is_some()).count();
    outln!(
        "{}",
        header(
            "TOTAL",
            &format!("{up} of {} up", rows.len()),
            "",
            &total(sum.requests),
            &total(sum.mb_in),
            &total(sum.mb_out),
            "",
            ""
        )
    )?;
    Ok(())
}

/// A count shown with two significant digits and a `~`, so that it does not
/// read as exact.
fn approximate(n: u64) -> String {
    let scaled = |unit: f64, suffix: &str| {
        let value = n as f64 / unit;
        if value < 10.0 {
            format!("~{value:.1}{suffix}")
        } else {
            format!("~{value:.0}{suffix}")
        }
    };
    match n {
        0..=999 => format!("~{n}"),
        1_000..=999_999 => scaled(1e3, "k"),
        1_000_000..=999_999_999 => scaled(1e6, "M"),
        _ => scaled(1e9, "G"),
    }
}

fn human_bytes(bytes: u64) -> String {
    const UNITS: [&str; 6] = ["B", "KiB", "MiB", "GiB", "TiB", "PiB"];
    let mut value = bytes as f64;
    let mut unit = 0;
    while value >= 1024.0 && unit + 1 < UNITS.len() {
        value /= 1024.0;
        unit += 1;
    }
    if unit == 0 {
        format!("{bytes} B")
    } else {
        format!("{value:.1} {}", UNITS[unit])
    }
}

/// Uptime in the two largest units (`3d 04h`, `12m 05s`).
fn human_duration(ms: u64) -> String {
    let s = ms / 1000;
    let (d, h, m) = (s / 86_400, s / 3600 % 24, s / 60 % 60);
    match s {
        0..=59 => format!("{s}s"),
        60..=3599 => format!("{m}m {:02}s", s % 60),
        3600..=86_399 => format!("{h}h {m:02}m"),
        _ => format!("{d}d {h:02}h"),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn estimates_read_as_estimates() {
        assert_eq!(approximate(7), "~7");
        assert_eq!(approximate(4_149), "~4.1k");
        assert_eq!(approximate(41_234), "~41k");
        assert_eq!(approximate(2_500_000), "~2.5M");
    }

    #[test]
    fn rates_come_from_two_answers_of_one_server() {
        let before = Sample {
            uptime_ms: 10_000,
            requests: 100,
            bytes_in: 0,
            bytes_out: 5_000_000,
        };
        let now = Sample {
            uptime_ms: 12_000,
            requests: 700,
            bytes_in: 8_000_000,
            bytes_out: 5_000_000,
        };
        assert_eq!(
            rates(&before, &now),
            Some(Rates {
                requests: 300.0,
                mb_in: 4.0,
                mb_out: 0.0
            })
        );
        // Restarted in between (uptime and counters went back), or no time.
        let restarted = Sample {
            uptime_ms: 1_000,
            requests: 3,
            ..now
        };
        assert_eq!(rates(&now, &restarted), None);
        assert_eq!(rates(&now, &now), None);
    }

    #[test]
    fn sizes_and_durations_are_short() {
        assert_eq!(human_bytes(512), "512 B");
        assert_eq!(human_bytes(3 << 30), "3.0 GiB");
        assert_eq!(human_duration(42_900), "42s");
        assert_eq!(human_duration(725_000), "12m 05s");
        assert_eq!(human_duration(3 * 86_400_000 + 4 * 3_600_000), "3d 04h");
    }
}
