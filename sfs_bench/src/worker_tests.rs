//! Verification must fail when the data or the entries are wrong.

use super::*;

fn spec(root: &std::path::Path, workload: Workload, phase: Phase) -> WorkerSpec {
    WorkerSpec {
        access: Access::Posix,
        root: root.join("run").display().to_string(),
        workload,
        phase,
        params: Params {
            nprocs: 1,
            easy_bytes: 4 << 20,
            easy_transfer: 1 << 20,
            hard_transfer: 47_008,
            hard_transfers: 10,
            random_file_bytes: 1 << 20,
            random_ops: 50,
            easy_files: 20,
            hard_files: 20,
            hard_file_bytes: 3901,
            tree_entries: 50,
            files_per_proc: 2,
            seed: 42,
        },
        rank: 0,
        procs: 1,
        histogram: root.join("h"),
    }
}

fn run(root: &std::path::Path, workload: Workload, phase: Phase) -> Result<u64> {
    let spec = spec(root, workload, phase);
    let mut histogram = new_histogram();
    let mut ctx = Ctx {
        fs: &PosixFs,
        spec: &spec,
        histogram: &mut histogram,
        ops: 0,
        bytes: 0,
        verified: 0,
    };
    let mut staged = stage(&spec);
    run_phase(&mut ctx, &mut staged)?;
    Ok(ctx.verified)
}

fn flip_byte(path: &std::path::Path, at: usize) {
    let mut data = std::fs::read(path).unwrap();
    data[at] ^= 0x40;
    std::fs::write(path, data).unwrap();
}

#[test]
fn verification_catches_a_corrupted_byte_in_every_data_workload() {
    for workload in [
        Workload::IorEasyNn,
        Workload::IorEasyN1,
        Workload::IorHard,
        Workload::Random4k,
        Workload::Tiering,
    ] {
        let dir = tempfile::tempdir().unwrap();
        let phases: &[Phase] = if workload == Workload::Random4k {
            &[Phase::Prepare, Phase::Prefill, Phase::RandWrite]
        } else {
            &[Phase::Prepare, Phase::Write]
        };
        for &phase in phases {
            run(dir.path(), workload, phase).unwrap();
        }
        let verified = run(dir.path(), workload, Phase::Verify).unwrap();
        assert!(verified > 0, "{workload:?}: nothing verified");
        let file = std::fs::read_dir(dir.path().join("run").join(workload.name()))
            .unwrap()
            .next()
            .unwrap()
            .unwrap()
            .path();
        flip_byte(&file, 123_457);
        let err = run(dir.path(), workload, Phase::Verify).unwrap_err();
        assert!(
            format!("{err:#}").contains("verification failed"),
            "{workload:?}: {err:#}"
        );
    }
}

#[test]
fn verification_catches_missing_entries_and_wrong_content() {
    let dir = tempfile::tempdir().unwrap();
    run(dir.path(), Workload::MdtestEasy, Phase::Prepare).unwrap();
    run(dir.path(), Workload::MdtestEasy, Phase::Create).unwrap();
    assert_eq!(
        run(dir.path(), Workload::MdtestEasy, Phase::Verify).unwrap(),
        20
    );
    std::fs::remove_file(dir.path().join("run/mdtest-easy/rank.0/f.7")).unwrap();
    let err = run(dir.path(), Workload::MdtestEasy, Phase::Verify).unwrap_err();
    assert!(format!("{err:#}").contains("f.7 missing"), "{err:#}");

    run(dir.path(), Workload::MdtestHard, Phase::Prepare).unwrap();
    run(dir.path(), Workload::MdtestHard, Phase::Create).unwrap();
    run(dir.path(), Workload::MdtestHard, Phase::Verify).unwrap();
    flip_byte(&dir.path().join("run/mdtest-hard/f.0.3"), 3900);
    let err = run(dir.path(), Workload::MdtestHard, Phase::Verify).unwrap_err();
    assert!(format!("{err:#}").contains("byte 3900"), "{err:#}");

    run(dir.path(), Workload::Find, Phase::Prepare).unwrap();
    run(dir.path(), Workload::Find, Phase::Create).unwrap();
    assert_eq!(run(dir.path(), Workload::Find, Phase::Walk).unwrap(), 50);
    std::fs::remove_file(dir.path().join("run/find/d0/f0")).unwrap();
    let err = run(dir.path(), Workload::Find, Phase::Walk).unwrap_err();
    assert!(format!("{err:#}").contains("expected"), "{err:#}");
}
