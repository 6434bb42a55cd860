//! The metadata workloads: mdtest-easy, mdtest-hard (3,901 bytes per
//! file) and the find / `ls -lR` tree.

use super::{staged_read_buf, staged_writes, Ctx, Staged};
use crate::fsapi::OpenMode;
use crate::pattern::Pattern;
use crate::spec::{Params, Phase, WorkerSpec, Workload};
use crate::staging::PlannedWrite;
use anyhow::{bail, Result};
use std::collections::HashSet;

/// mdtest-hard: the seed of the content of file `i` of `rank`.
fn mdtest_file_seed(params: &Params, rank: usize, i: u64) -> u64 {
    params.seed ^ ((rank as u64) << 32 | i)
}

pub(super) fn mdtest_stage(spec: &WorkerSpec) -> Staged {
    let params = &spec.params;
    if spec.workload == Workload::MdtestEasy {
        return Staged::default();
    }
    match spec.phase {
        Phase::Create => staged_writes(
            spec,
            (0..params.hard_files).map(|i| PlannedWrite {
                offset: 0,
                len: params.hard_file_bytes as usize,
                file_seed: mdtest_file_seed(params, spec.rank, i),
            }),
        ),
        Phase::Read | Phase::Verify => staged_read_buf(params.hard_file_bytes),
        _ => Staged::default(),
    }
}

pub(super) fn mdtest(ctx: &mut Ctx, phase: Phase, staged: &mut Staged) -> Result<()> {
    let spec = ctx.spec;
    let params = &spec.params;
    let dir = ctx.dir();
    let rank = spec.rank;
    let easy = spec.workload == Workload::MdtestEasy;
    let (files, own_dir) = if easy {
        (params.easy_files, format!("{dir}/rank.{rank}"))
    } else {
        (params.hard_files, dir.clone())
    };
    let name = |i: u64| {
        if easy {
            format!("{own_dir}/f.{i}")
        } else {
            format!("{dir}/f.{rank}.{i}")
        }
    };
    let size = if easy { 0 } else { params.hard_file_bytes };
    match phase {
        Phase::Create => {
            for i in 0..files {
                let path = name(i);
                // mdtest-easy files are empty: it stages no writes.
                let data = (!easy).then(|| staged.writes.data(i as usize).1);
                ctx.timed(|fs| {
                    let file = fs.open(&path, OpenMode::CreateExclusive)?;
                    if let Some(data) = data {
                        fs.pwrite_all(&file, data, 0)?;
                    }
                    fs.close(file)
                })?;
                ctx.bytes += size;
            }
        }
        Phase::Stat => {
            for i in 0..files {
                let path = name(i);
                let info = ctx.timed(|fs| fs.lstat(&path))?;
                if !info.is_file || info.size != size {
                    bail!("verification failed: {path} is not a regular file of {size} bytes");
                }
            }
        }
        Phase::Read => {
            let buf = staged.read_buf.as_mut_slice();
            for i in 0..files {
                let path = name(i);
                ctx.timed(|fs| {
                    let file = fs.open(&path, OpenMode::Read)?;
                    fs.pread_exact(&file, buf, 0)?;
                    fs.close(file)
                })?;
                ctx.bytes += size;
            }
        }
        Phase::Verify => {
            // Every name this rank created is listed, and (hard) holds its bytes.
            let pattern = Pattern::new(params.seed, size as usize);
            let buf = staged.read_buf.as_mut_slice();
            let listed: HashSet<String> = ctx.fs.list(&own_dir)?.into_iter().collect();
            for i in 0..files {
                let path = name(i);
                let base = path.rsplit('/').next().unwrap_or_default();
                if !listed.contains(base) {
                    bail!("verification failed: {path} missing from the listing of {own_dir}");
                }
                if !easy {
                    let file = ctx.fs.open(&path, OpenMode::Read)?;
                    ctx.fs.pread_exact(&file, buf, 0)?;
                    ctx.fs.close(file)?;
                    if let Err(at) = pattern.check(buf, 0, mdtest_file_seed(params, rank, i)) {
                        bail!(
                            "verification failed: {path} byte {at} differs from what was written"
                        );
                    }
                }
                ctx.verified += 1;
            }
            let expected = if easy {
                files
            } else {
                files * params.nprocs as u64
            };
            if listed.len() as u64 != expected {
                bail!(
                    "verification failed: {own_dir} lists {} entries, expected {expected}",
                    listed.len()
                );
            }
        }
        Phase::Remove => {
            for i in 0..files {
                let path = name(i);
                ctx.timed(|fs| fs.unlink(&path))?;
            }
        }
        other => bail!(
            "phase {} is not part of {}",
            other.name(),
            spec.workload.name()
        ),
    }
    Ok(())
}

pub(super) fn find(ctx: &mut Ctx, phase: Phase) -> Result<()> {
    let spec = ctx.spec;
    let params = &spec.params;
    let dir = ctx.dir();
    let dirs = params.tree_dirs();
    let mine = (spec.rank as u64..params.tree_files()).step_by(spec.procs.max(1));
    let name = |i: u64| format!("{dir}/d{}/f{i}", i % dirs);
    match phase {
        Phase::Create => {
            for i in mine {
                let path = name(i);
                ctx.timed(|fs| fs.close(fs.open(&path, OpenMode::CreateExclusive)?))?;
            }
        }
        Phase::Walk => {
            // `ls -lR` / `find -ls`: readdir every directory, lstat every entry.
            let mut stack = vec![dir.clone()];
            let (mut seen_dirs, mut seen_files) = (0u64, 0u64);
            while let Some(current) = stack.pop() {
                for entry in ctx.fs.list(&current)? {
                    let path = format!("{current}/{entry}");
                    let info = ctx.timed(|fs| fs.lstat(&path))?;
                    if info.is_dir {
                        seen_dirs += 1;
                        stack.push(path);
                    } else if info.is_file && info.size == 0 {
                        seen_files += 1;
                    } else {
                        bail!(
                            "verification failed: {path} is neither a directory nor an empty file"
                        );
                    }
                }
            }
            if seen_dirs != dirs || seen_files != params.tree_files() {
                bail!(
                    "verification failed: the walk found {seen_dirs} directories and {seen_files} files, expected {dirs} and {}",
                    params.tree_files()
                );
            }
            ctx.verified += seen_dirs + seen_files;
        }
        Phase::Remove => {
            for i in mine {
                let path = name(i);
                ctx.timed(|fs| fs.unlink(&path))?;
            }
        }
        other => bail!("phase {} is not part of find", other.name()),
    }
    Ok(())
}
