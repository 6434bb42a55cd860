//! What a benchmark run consists of: workloads, their phases, their sizes,
//! and the messages between the orchestrator and its worker processes.

use serde::{Deserialize, Serialize};
use std::path::PathBuf;

/// The IOR/mdtest/find-style workloads.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash, Serialize, Deserialize, clap::ValueEnum)]
#[serde(rename_all = "kebab-case")]
pub enum Workload {
    /// IOR-easy N-N: each process writes then reads its own file, 1 MiB transfers.
    IorEasyNn,
    /// IOR-easy N-1: each process writes then reads a disjoint block of one shared file.
    IorEasyN1,
    /// IOR-hard: N-1, 47,008-byte transfers at strided offsets.
    IorHard,
    /// 4 KiB random writes and reads on one file.
    #[value(name = "random-4k")]
    Random4k,
    /// mdtest-easy: create/stat/remove empty files, a directory per process.
    MdtestEasy,
    /// mdtest-hard: one shared directory, 3,901 bytes written per file, then read.
    MdtestHard,
    /// find / `ls -l`: stat every entry of a directory tree.
    Find,
    /// The client side of `sfs_bench tiering` (not a `--workloads` choice:
    /// that mode starts and restarts its own servers, see `tiering.rs`):
    /// each process writes `files_per_proc` files of `easy_bytes`, one
    /// after the other, each fsynced and closed before the next.
    #[value(skip)]
    Tiering,
}

impl Workload {
    pub const ALL: [Workload; 7] = [
        Workload::IorEasyNn,
        Workload::IorEasyN1,
        Workload::IorHard,
        Workload::Random4k,
        Workload::MdtestEasy,
        Workload::MdtestHard,
        Workload::Find,
    ];

    pub fn name(self) -> &'static str {
        match self {
            Workload::IorEasyNn => "ior-easy-nn",
            Workload::IorEasyN1 => "ior-easy-n1",
            Workload::IorHard => "ior-hard",
            Workload::Random4k => "random-4k",
            Workload::MdtestEasy => "mdtest-easy",
            Workload::MdtestHard => "mdtest-hard",
            Workload::Find => "find",
            Workload::Tiering => "tiering",
        }
    }

    /// Data workloads report MB/s, the others ops/s.
    pub fn is_data(self) -> bool {
        matches!(
            self,
            Workload::IorEasyNn
                | Workload::IorEasyN1
                | Workload::IorHard
                | Workload::Random4k
                | Workload::Tiering
        )
    }

    /// The phases in order. `Prepare` and `Teardown` run in one process, the
    /// walk of `find` too (as `ls -lR` does); every other phase in all of them.
    pub fn phases(self) -> &'static [Phase] {
        use Phase::*;
        match self {
            Workload::IorEasyNn | Workload::IorEasyN1 | Workload::IorHard | Workload::Tiering => {
                &[Prepare, Write, Read, Verify, Remove, Teardown]
            }
            Workload::Random4k => &[
                Prepare, Prefill, RandWrite, RandRead, Verify, Remove, Teardown,
            ],
            Workload::MdtestEasy => &[Prepare, Create, Verify, Stat, Remove, Teardown],
            Workload::MdtestHard => &[Prepare, Create, Stat, Read, Verify, Remove, Teardown],
            Workload::Find => &[Prepare, Create, Walk, Remove, Teardown],
        }
    }
}

/// One step of a workload, timed across all its processes.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash, Serialize, Deserialize)]
#[serde(rename_all = "kebab-case")]
pub enum Phase {
    /// Create the workload's directories (one process, not reported).
    Prepare,
    Write,
    Read,
    /// Fill the random-I/O file sequentially before the random phases.
    Prefill,
    RandWrite,
    RandRead,
    Create,
    Stat,
    /// Read everything back and compare with what was written (checked, not a rate).
    Verify,
    /// `ls -lR` of the tree: readdir every directory, lstat every entry.
    Walk,
    /// Remove the files (mdtest's remove phase; cleanup for the others).
    Remove,
    /// Remove the directories and check nothing is left (one process, not reported).
    Teardown,
}

impl Phase {
    pub fn name(self) -> &'static str {
        match self {
            Phase::Prepare => "prepare",
            Phase::Write => "write",
            Phase::Read => "read",
            Phase::Prefill => "prefill",
            Phase::RandWrite => "rand-write",
            Phase::RandRead => "rand-read",
            Phase::Create => "create",
            Phase::Stat => "stat",
            Phase::Verify => "verify",
            Phase::Walk => "walk",
            Phase::Remove => "remove",
            Phase::Teardown => "teardown",
        }
    }

    /// Phases that run in a single process.
    pub fn single_process(self) -> bool {
        matches!(self, Phase::Prepare | Phase::Teardown | Phase::Walk)
    }

    /// Phases whose rate goes into the results table.
    pub fn reported(self, workload: Workload) -> bool {
        match self {
            Phase::Prepare | Phase::Teardown | Phase::Verify => false,
            // Removing the data files is cleanup; removing metadata is mdtest's phase.
            Phase::Remove => !workload.is_data(),
            _ => true,
        }
    }
}

/// Sizes of the workloads (the same for every target, so rows compare).
#[derive(Clone, Debug, Default, Serialize, Deserialize)]
pub struct Params {
    /// Client processes.
    pub nprocs: usize,
    /// IOR-easy: bytes each process writes (N-N: its file; N-1: its block);
    /// tiering: bytes of each file.
    pub easy_bytes: u64,
    /// IOR-easy transfer size.
    pub easy_transfer: u64,
    /// IOR-hard transfer size.
    pub hard_transfer: u64,
    /// IOR-hard transfers per process.
    pub hard_transfers: u64,
    /// Size of the random-I/O file.
    pub random_file_bytes: u64,
    /// 4 KiB random writes, and as many reads, per process.
    pub random_ops: u64,
    /// mdtest-easy files per process.
    pub easy_files: u64,
    /// mdtest-hard files per process.
    pub hard_files: u64,
    /// Bytes written to and read from each mdtest-hard file.
    pub hard_file_bytes: u64,
    /// Entries (files and directories) of the find tree.
    pub tree_entries: u64,
    /// Tiering: files each process writes (several, so that the `idle`
    /// write-back policy finds a finished file to write back while the
    /// process writes its next one).
    pub files_per_proc: u64,
    /// Seed of the data pattern and of the random offsets.
    pub seed: u64,
}

impl Params {
    /// Directories of the find tree: one per 1,000 entries.
    pub fn tree_dirs(&self) -> u64 {
        (self.tree_entries / 1000).max(1)
    }
    /// Files of the find tree (the rest of the entries).
    pub fn tree_files(&self) -> u64 {
        self.tree_entries.saturating_sub(self.tree_dirs())
    }
    /// The random-I/O file rounded to whole 4 KiB blocks per process.
    pub fn random_blocks_per_proc(&self) -> u64 {
        (self.random_file_bytes / 4096 / self.nprocs as u64).max(1)
    }
}

/// How a worker reaches the file system under test.
#[derive(Clone, Debug, Serialize, Deserialize)]
pub enum Access {
    /// std::fs calls on paths (under the shim for SFS, plain for baselines).
    Posix,
    /// sfs_client called directly.
    Lib { config: PathBuf, hostfile: PathBuf },
}

/// Everything a worker process needs: sent as JSON on its command line.
#[derive(Clone, Debug, Serialize, Deserialize)]
pub struct WorkerSpec {
    pub access: Access,
    /// Directory of this run on the file system under test (absolute; for
    /// `Lib` a path inside SFS).
    pub root: String,
    pub workload: Workload,
    pub phase: Phase,
    pub params: Params,
    pub rank: usize,
    /// Processes taking part in this phase.
    pub procs: usize,
    /// Where the worker writes its latency histogram (V2 serialization).
    pub histogram: PathBuf,
}

/// What a worker reports after its phase (one JSON line on stdout).
#[derive(Clone, Debug, Default, Serialize, Deserialize)]
pub struct WorkerResult {
    pub rank: usize,
    /// CLOCK_MONOTONIC, nanoseconds, when the phase started and ended in this process.
    pub start_ns: u64,
    pub end_ns: u64,
    pub ops: u64,
    pub bytes: u64,
    /// CPU time of this process during the phase (getrusage RUSAGE_SELF deltas).
    pub user_us: u64,
    pub system_us: u64,
    /// Bytes or entries compared against what was written.
    pub verified: u64,
}
