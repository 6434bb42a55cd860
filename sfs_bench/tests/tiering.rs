//! Runs `sfs_bench tiering` at a tiny scale end to end — fio on the back
//! end's directory, servers started, restarted from a checkpoint and
//! stopped by the tool — and checks what it must get right whatever the
//! machine's speed: every phase verified, the flush and the read-through
//! moved every byte, a figure for each step, the three targets reported,
//! nothing left behind. Not its speed.

use serde_json::Value;
use std::process::{Command, Stdio};

const BENCH: &str = env!("CARGO_BIN_EXE_sfs_bench");

#[test]
fn tiering_mode_verifies_every_phase_and_leaves_nothing_behind() {
    let built = sfs_testkit::artifacts();
    let backend = tempfile::tempdir().unwrap();
    let state = tempfile::tempdir().unwrap();
    let out = Command::new(BENCH)
        .args(["tiering", "--servers", "2", "--nprocs", "2"])
        .args([
            "--total-mib",
            "8",
            "--files-per-proc",
            "2",
            "--idle-ms",
            "20",
        ])
        .args(["--seed", "7", "--json"])
        .arg("--backend-dir")
        .arg(backend.path())
        .arg("--state-dir")
        .arg(state.path())
        .arg("--sfs")
        .arg(&built.sfs)
        .stdin(Stdio::null())
        .output()
        .expect("running sfs_bench tiering");
    assert!(
        out.status.success(),
        "sfs_bench tiering failed ({}): {}",
        out.status,
        String::from_utf8_lossy(&out.stderr)
    );
    let report: Value = serde_json::from_slice(&out.stdout)
        .unwrap_or_else(|e| panic!("no JSON ({e}): {}", String::from_utf8_lossy(&out.stdout)));
    let sizes = &report["sizes"];
    assert_eq!(sizes["files"], 4);
    assert_eq!(sizes["file_bytes"], 2 << 20);
    let total = sizes["total_bytes"].as_u64().unwrap();
    assert_eq!(total, 8 << 20);
    // Verified: the explicit run's write, the flusher run's write, and the
    // restored servers' read-through (what the flush put in the back end).
    assert_eq!(report["verified_bytes"].as_u64().unwrap(), 3 * total);
    assert_eq!(report["flushed_bytes"].as_u64().unwrap(), total);
    assert_eq!(report["fetched_bytes"].as_u64().unwrap(), total, "{report}");
    let figures = report["figures"].as_array().unwrap();
    assert_eq!(figures.len(), 6, "{figures:?}");
    for figure in figures {
        assert!(figure["mb_per_s"].as_f64().unwrap() > 0.0, "{figure}");
        assert_eq!(figure["bytes"].as_u64().unwrap(), total, "{figure}");
    }
    let targets = report["targets"].as_array().unwrap();
    assert_eq!(targets.len(), 3);
    for target in targets {
        let ratio = target["ratio"].as_f64().unwrap();
        assert!(ratio > 0.0, "{target}");
        assert_eq!(
            target["met"].as_bool().unwrap(),
            ratio >= target["goal"].as_f64().unwrap()
        );
    }
    assert!(report["fio_command"]
        .as_str()
        .unwrap()
        .contains("--bs=524288"));
    for dir in [backend.path(), state.path()] {
        let left: Vec<_> = std::fs::read_dir(dir).unwrap().collect();
        assert!(left.is_empty(), "left in {}: {left:?}", dir.display());
    }
}
