//! Runs `sfs_bench` end to end at a tiny scale against real servers (the
//! test kit's cluster on 127.0.0.1, or servers the tool starts itself),
//! through the shim and
//! the client library, next to a tmpfs baseline, and checks the JSON report,
//! including the tmpfs baseline's check against fio (installed by
//! scripts/setup.sh) and the report of a run without fio.

use serde_json::Value;
use sfs_testkit::cluster::Cluster;
use std::path::{Path, PathBuf};
use std::process::{Command, Stdio};

const BENCH: &str = env!("CARGO_BIN_EXE_sfs_bench");

/// The `sfs` binary and the preload library (built on demand).
fn artifacts() -> (PathBuf, PathBuf) {
    let built = sfs_testkit::artifacts();
    (built.sfs.clone(), built.preload.clone())
}

const TINY: &[&str] = &[
    "--nprocs",
    "2",
    "--easy-mib",
    "2",
    "--hard-transfers",
    "20",
    "--random-file-mib",
    "4",
    "--random-ops",
    "100",
    "--files",
    "100",
    "--hard-files",
    "50",
    "--tree-entries",
    "500",
    "--json",
];

fn run_bench(args: &[&str], extra: &[(&str, &Path)]) -> Value {
    let mut command = Command::new(BENCH);
    command.args(TINY).args(args);
    for (flag, path) in extra {
        command.arg(flag).arg(path);
    }
    let out = command
        .stdin(Stdio::null())
        .output()
        .expect("running sfs_bench");
    assert!(
        out.status.success(),
        "sfs_bench failed ({}): {}",
        out.status,
        String::from_utf8_lossy(&out.stderr)
    );
    serde_json::from_slice(&out.stdout).unwrap_or_else(|e| {
        panic!(
            "sfs_bench --json printed no JSON ({e}): {}",
            String::from_utf8_lossy(&out.stdout)
        )
    })
}

const WORKLOADS: &[(&str, &[&str])] = &[
    ("ior-easy-nn", &["write", "read"]),
    ("ior-easy-n1", &["write", "read"]),
    ("ior-hard", &["write", "read"]),
    ("random-4k", &["prefill", "rand-write", "rand-read"]),
    ("mdtest-easy", &["create", "stat", "remove"]),
    ("mdtest-hard", &["create", "stat", "read", "remove"]),
    ("find", &["create", "walk"]),
];

fn check_rows(report: &Value, targets: &[&str]) {
    let rows = report["results"].as_array().expect("results array");
    for (workload, phases) in WORKLOADS {
        for phase in *phases {
            for target in targets {
                let row = rows
                    .iter()
                    .find(|r| {
                        r["workload"] == *workload && r["phase"] == *phase && r["target"] == *target
                    })
                    .unwrap_or_else(|| panic!("no row for {workload} {phase} on {target}"));
                let positive = |field: &str| {
                    let v = row[field].as_f64().unwrap_or(-1.0);
                    assert!(v > 0.0, "{workload} {phase} {target}: {field} = {v}");
                };
                positive("ops");
                positive("seconds");
                positive("ops_per_s");
                assert!(row["latency_us"]["p50"].as_f64().unwrap() > 0.0);
                assert!(
                    row["latency_us"]["p99_9"].as_f64().unwrap()
                        >= row["latency_us"]["p50"].as_f64().unwrap()
                );
                if workload.starts_with("ior") || *workload == "random-4k" {
                    positive("mb_per_s");
                }
                if target.starts_with("sfs") {
                    assert!(row["servers"].as_u64().unwrap() >= 1);
                    assert!(
                        row["server_cpu_s"].as_f64().is_some(),
                        "server CPU measured"
                    );
                    assert!(row["vs_tmpfs"].as_f64().unwrap() > 0.0);
                }
            }
        }
    }
    // Verification read back every byte and entry the workloads wrote.
    let v = &report["verification"];
    assert_eq!(v["status"], "passed");
    let per_target_bytes = 2 * (2 << 20) * 2 + 2 * 20 * 47_008 + (4 << 20);
    assert!(
        v["data_bytes_checked"].as_u64().unwrap() >= per_target_bytes * targets.len() as u64,
        "{v}"
    );
    let per_target_entries = 2 * 100 + 2 * 50 + 500;
    assert!(v["entries_checked"].as_u64().unwrap() >= per_target_entries * targets.len() as u64);
    assert!(!report["goals"].as_array().unwrap().is_empty());
}

/// The tmpfs baseline's IOR-easy N-N write and read next to fio's.
fn check_fio_rows(report: &Value) {
    let status = report["fio_check_status"].as_str().unwrap();
    assert!(status.starts_with("compared with fio-"), "{status}");
    assert!(!status.contains("failed"), "{status}");
    let checks = report["fio_check"].as_array().expect("fio_check array");
    let rows = report["results"].as_array().unwrap();
    for phase in ["write", "read"] {
        let check = checks
            .iter()
            .find(|c| c["target"] == "tmpfs" && c["phase"] == phase)
            .unwrap_or_else(|| panic!("no fio check of the tmpfs {phase}: {checks:?}"));
        assert_eq!(check["workload"], "ior-easy-nn");
        let baseline = rows
            .iter()
            .find(|r| {
                r["target"] == "tmpfs" && r["workload"] == "ior-easy-nn" && r["phase"] == phase
            })
            .unwrap();
        // The check carries the row's own rate, not a second measurement.
        assert_eq!(check["sfs_bench_mb_per_s"], baseline["mb_per_s"]);
        let fio = check["fio_mb_per_s"].as_f64().unwrap();
        assert!(fio >= 0.0, "{check}");
        // At these sizes fio's millisecond clock may read 0: then no ratio.
        match check["ratio"].as_f64() {
            Some(ratio) => {
                assert!((ratio - check["sfs_bench_mb_per_s"].as_f64().unwrap() / fio).abs() < 1e-9);
                assert_eq!(
                    check["within_10_percent"].as_bool().unwrap(),
                    (0.9..=1.1).contains(&ratio),
                    "{check}"
                );
                assert_eq!(check["warning"].is_string(), ratio < 0.9, "{check}");
            }
            None => assert_eq!(fio, 0.0, "{check}"),
        }
        let command = check["fio_command"].as_str().unwrap();
        for option in [
            "--ioengine=psync",
            "--rw=write",
            "--bs=1048576",
            "--size=2097152",
            "--numjobs=2",
            "--fallocate=none",
        ] {
            assert!(command.contains(option), "{command} lacks {option}");
        }
    }
}

#[test]
fn tiny_run_against_running_servers_via_shim_and_library() {
    let (_, shim) = artifacts();
    let servers = Cluster::start_with(1, |c| c.mountdir = "/sfs_bench_test".into());
    // The baseline and fio's files in a directory of our own on tmpfs, to
    // see that both are removed.
    let tmpfs = tempfile::tempdir_in("/dev/shm").unwrap();
    let report = run_bench(
        &["--via", "shim,lib", "--baselines", "tmpfs"],
        &[
            ("--config", &servers.config_path),
            ("--hostfile", &servers.hostfile_path),
            ("--preload", &shim),
            ("--tmpfs-dir", tmpfs.path()),
        ],
    );
    check_rows(&report, &["sfs-shim", "sfs-lib", "tmpfs"]);
    check_fio_rows(&report);
    let left: Vec<_> = std::fs::read_dir(tmpfs.path()).unwrap().collect();
    assert!(left.is_empty(), "left on tmpfs: {left:?}");
    drop(servers);
}

#[test]
fn servers_started_by_the_tool_scale_from_one_to_two() {
    let (sfs, shim) = artifacts();
    let state = tempfile::tempdir().unwrap();
    let report = run_bench(
        &[
            "--via",
            "lib",
            "--baselines",
            "tmpfs",
            "--servers",
            "1,2",
            "--workloads",
            "ior-easy-nn,mdtest-easy",
        ],
        &[
            ("--sfs", &sfs),
            ("--preload", &shim),
            ("--state-dir", state.path()),
            // Without fio the run goes on and the report says why it has no check.
            ("--fio", Path::new("/nonexistent/fio")),
        ],
    );
    let status = report["fio_check_status"].as_str().unwrap();
    assert!(
        status.starts_with("skipped:") && status.contains("not installed"),
        "{status}"
    );
    assert_eq!(report["fio_check"].as_array().unwrap().len(), 0);
    let rows = report["results"].as_array().unwrap();
    for servers in [1, 2] {
        for (workload, phase) in [("ior-easy-nn", "read"), ("mdtest-easy", "stat")] {
            let row = rows
                .iter()
                .find(|r| {
                    r["servers"] == servers && r["workload"] == workload && r["phase"] == phase
                })
                .unwrap_or_else(|| panic!("no {workload} {phase} row with {servers} servers"));
            assert!(row["ops_per_s"].as_f64().unwrap() > 0.0);
            assert!(row["cpu_us_per_op"].as_f64().unwrap() > 0.0);
        }
    }
    // The tool stopped its servers and removed their state.
    let left: Vec<_> = std::fs::read_dir(state.path()).unwrap().collect();
    assert!(left.is_empty(), "state left behind: {left:?}");
}
