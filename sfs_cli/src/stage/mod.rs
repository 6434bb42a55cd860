//! `sfs stage-in SRC... DST` and `sfs stage-out SRC... DST`: parallel,
//! verified, resumable copies of trees into and out of SFS
//! (docs/staging.md).
//!
//! Stage-in copies local (or parallel file system) paths and S3 prefixes
//! into an SFS path; stage-out copies SFS paths to a local path or an S3
//! prefix. The command resolves SRC → DST pairs (`cp -r` rules, or a
//! `--manifest`), walks each source, drops what the filters and the
//! journal say to skip, and hands the rest to the engine.
//!
//! `stage-out --changed` (and `sfs stop --write-back`, which runs it from
//! SFS's root to the config's `backing_dir`) skips instead what the
//! destination already holds, by size, mode and mtime, and keeps no
//! journal: the destination itself says what is done.
//!
//! - [`tree`]: the `Tree` trait every side implements; [`local`], [`sfs`],
//!   [`s3`] the three kinds of tree.
//! - [`engine`]: the worker pool, ranges, verification.
//! - [`journal`]: what resumes an interrupted stage.
//! - [`filter`], [`progress`]: `--include/--exclude`, the progress display.

mod engine;
mod filter;
mod journal;
mod local;
mod progress;
mod s3;
mod sfs;
mod tree;

use crate::Setup;
use anyhow::{bail, Context, Result};
use engine::Pair;
use std::collections::HashMap;
use std::path::PathBuf;
use std::sync::Arc;
use std::time::Duration;
use tree::{EntryKind, Tree};

/// Files in flight by default: enough to keep every server and the
/// other side busy with small files, few enough for one node's memory
/// (each worker holds one range).
const DEFAULT_JOBS: usize = 16;

/// The default range: 8 MiB (16 chunks of the default 512 KiB), rounded
/// up to whole chunks; also above S3's 5 MiB minimum part size.
const DEFAULT_RANGE: u64 = 8 << 20;

/// Seconds between progress lines when stderr is not a terminal.
const DEFAULT_PROGRESS_INTERVAL: u64 = 10;

/// Options shared by stage-in and stage-out.
#[derive(clap::Args, Debug)]
pub struct StageArgs {
    /// Sources, then the destination. DST is a directory to copy into when
    /// it ends with `/` or there are several sources (or SRC is a file and
    /// DST an existing directory); otherwise SRC is copied to DST. SRC
    /// ending in `/` copies its contents.
    paths: Vec<String>,
    /// A file of `SRC DST` lines (tab- or space-separated; `#` comments):
    /// each SRC copied to exactly DST (into it if DST ends with `/`).
    #[arg(long)]
    manifest: Option<PathBuf>,
    /// Workers moving files and ranges at once.
    #[arg(short = 'j', long, default_value_t = DEFAULT_JOBS)]
    jobs: usize,
    /// Do not read the destination back to compare its hash.
    #[arg(long)]
    no_verify: bool,
    /// Stage only files and symlinks matching one of these globs (a
    /// pattern without `/` matches names at any depth).
    #[arg(long)]
    include: Vec<String>,
    /// Leave out what matches (an excluded directory is not entered).
    #[arg(long)]
    exclude: Vec<String>,
    /// Show what would be done; change nothing.
    #[arg(short = 'n', long)]
    dry_run: bool,
    /// The journal file (default: under $SFS_STAGE_STATE_DIR, else
    /// $XDG_STATE_HOME/sfs/stage, else ~/.local/state/sfs/stage).
    #[arg(long)]
    journal: Option<PathBuf>,
    /// Copy nothing: compare every file of SRC with its copy in DST (xxh3
    /// of each range, read from both sides) and list those that differ.
    #[arg(long, conflicts_with_all = ["dry_run", "no_verify"])]
    check: bool,
    /// Forget the journal: copy everything again.
    #[arg(long)]
    restart: bool,
    /// Print `copied DST` for every file as it is done.
    #[arg(short = 'v', long)]
    verbose: bool,
    /// Seconds between progress lines when stderr is not a terminal.
    #[arg(long, default_value_t = DEFAULT_PROGRESS_INTERVAL)]
    progress_interval: u64,
    /// Size of the ranges large files are cut into, in MiB (rounded up to
    /// whole chunks).
    #[arg(long)]
    range_mib: Option<u64>,
    /// This process is rank R of `--ranks` N processes staging the same
    /// SRC and DST (one per node, started by `srun` or `mpirun`): it moves
    /// its share of the files and symlinks only. Run the command once more
    /// without ranks afterwards to set directory modes and times (and
    /// write an S3 sidecar); it copies nothing the ranks finished.
    #[arg(long, requires = "ranks")]
    rank: Option<usize>,
    /// How many ranks share the stage (see `--rank`).
    #[arg(long, requires = "rank")]
    ranks: Option<usize>,
    /// Take `--rank` and `--ranks` from the environment `srun` or `mpirun`
    /// sets (SLURM_PROCID/SLURM_NTASKS, OMPI_COMM_WORLD_RANK/_SIZE,
    /// PMI_RANK/PMI_SIZE).
    #[arg(long, conflicts_with_all = ["rank", "ranks"])]
    rank_from_env: bool,
}

impl StageArgs {
    /// The options of `SRC DST` with no flag given.
    fn plain(src: &str, dst: &str) -> StageArgs {
        StageArgs {
            paths: vec![src.to_string(), dst.to_string()],
            manifest: None,
            jobs: DEFAULT_JOBS,
            no_verify: false,
            include: Vec::new(),
            exclude: Vec::new(),
            dry_run: false,
            journal: None,
            check: false,
            restart: false,
            verbose: false,
            progress_interval: DEFAULT_PROGRESS_INTERVAL,
            range_mib: None,
            rank: None,
            ranks: None,
            rank_from_env: false,
        }
    }

    /// `(rank, ranks)` when this process stages a share only.
    fn share(&self) -> Result<Option<(usize, usize)>> {
        let (rank, ranks) = match (self.rank, self.ranks, self.rank_from_env) {
            (Some(rank), Some(ranks), _) => (rank, ranks),
            (_, _, true) => rank_from_env()?,
            _ => return Ok(None),
        };
        if ranks == 0 || rank >= ranks {
            bail!("--rank {rank} --ranks {ranks}: the rank must be below the number of ranks");
        }
        Ok((ranks > 1).then_some((rank, ranks)))
    }
}

/// The rank and the number of ranks that `srun` or `mpirun` put in the
/// environment.
fn rank_from_env() -> Result<(usize, usize)> {
    const KNOWN: [(&str, &str); 3] = [
        ("SLURM_PROCID", "SLURM_NTASKS"),
        ("OMPI_COMM_WORLD_RANK", "OMPI_COMM_WORLD_SIZE"),
        ("PMI_RANK", "PMI_SIZE"),
    ];
    for (rank, size) in KNOWN {
        if let (Ok(r), Ok(n)) = (std::env::var(rank), std::env::var(size)) {
            let parse = |name: &str, value: &str| -> Result<usize> {
                value
                    .trim()
                    .parse()
                    .with_context(|| format!("{name}={value:?}: not a number"))
            };
            return Ok((parse(rank, &r)?, parse(size, &n)?));
        }
    }
    bail!(
        "--rank-from-env: none of {} is set (run under srun or mpirun, or give --rank and --ranks)",
        KNOWN
            .iter()
            .map(|(r, n)| format!("{r}/{n}"))
            .collect::<Vec<_>>()
            .join(", ")
    )
}

/// Which files and symlinks of `pairs` rank `rank` of `ranks` stages:
/// `mine[p][i]` for entry `i` of pair `p`. Every rank computes the same
/// split from the same walk: entries by size, largest first (ties by
/// pair and path, not by walk order), each to the rank with the least
/// work so far, counting [`SHARE_FILE_COST`] per entry on top of its bytes
/// so that many small files spread as evenly as a few large ones.
fn shares(pairs: &[Pair], rank: usize, ranks: usize) -> Vec<Vec<bool>> {
    let mut entries: Vec<(u64, usize, &str, usize)> = Vec::new();
    for (p, pair) in pairs.iter().enumerate() {
        for (i, entry) in pair.entries.iter().enumerate() {
            if entry.kind != EntryKind::Dir {
                entries.push((entry.size, p, entry.rel.as_str(), i));
            }
        }
    }
    entries.sort_by(|a, b| b.0.cmp(&a.0).then(a.1.cmp(&b.1)).then(a.2.cmp(b.2)));
    let mut load = vec![0u64; ranks];
    let mut mine: Vec<Vec<bool>> = pairs.iter().map(|p| vec![false; p.entries.len()]).collect();
    for (size, p, _, i) in entries {
        let (least, _) = load
            .iter()
            .enumerate()
            .min_by_key(|&(r, work)| (*work, r))
            .expect("at least one rank");
        load[least] += size + SHARE_FILE_COST;
        mine[p][i] = least == rank;
    }
    mine
}

/// What a file costs a rank besides its bytes when the ranks split a
/// stage ([`shares`]): about what a small file's create, write and
/// verification take, in bytes moved meanwhile.
const SHARE_FILE_COST: u64 = 256 << 10;

/// The options of `sfs stage-out`: the shared ones and `--changed`.
#[derive(clap::Args, Debug)]
pub struct StageOutArgs {
    #[command(flatten)]
    stage: StageArgs,
    /// Write only what differs from DST: a file that DST already holds
    /// with the same size, mode and mtime (a symlink: same target and
    /// mtime) is skipped without being read. Nothing at DST is deleted.
    /// Keeps no journal (DST says what is done).
    #[arg(long, conflicts_with_all = ["check", "journal", "restart"])]
    changed: bool,
}

/// Which way data moves.
#[derive(Clone, Copy, PartialEq, Eq)]
enum Direction {
    In,
    Out,
}

impl Direction {
    fn name(self) -> &'static str {
        match self {
            Direction::In => "stage-in",
            Direction::Out => "stage-out",
        }
    }
}

/// What says that a file needs no copying.
#[derive(Clone, Copy, PartialEq, Eq)]
enum Skip {
    /// The journal has it, from the same source version, and the
    /// destination still has its size: resuming a stage.
    Journaled,
    /// `--changed`: the destination already holds it ([`tree::unchanged`]).
    Unchanged,
}

impl Skip {
    /// How the summary names the files skipped.
    fn label(self) -> &'static str {
        match self {
            Skip::Journaled => "already staged (journal)",
            Skip::Unchanged => "unchanged (same size, mode and mtime)",
        }
    }
}

/// Makes the trees a command names.
struct Trees<'a> {
    setup: &'a Setup,
    clients: Option<Arc<Vec<sfs_client::Client>>>,
    clients_wanted: usize,
    runtime: Option<Arc<tokio::runtime::Runtime>>,
    buckets: HashMap<String, Arc<s3::Bucket>>,
}

impl Trees<'_> {
    fn clients(&mut self) -> Result<Arc<Vec<sfs_client::Client>>> {
        if let Some(clients) = &self.clients {
            return Ok(Arc::clone(clients));
        }
        let clients = (0..self.clients_wanted)
            .map(|_| crate::files::client(self.setup))
            .collect::<Result<Vec<_>>>()?;
        let clients = Arc::new(clients);
        self.clients = Some(Arc::clone(&clients));
        Ok(clients)
    }

    /// An SFS path (a path under the mount directory is taken as the SFS
    /// path it names).
    fn sfs(&mut self, spec: &str) -> Result<Arc<dyn Tree>> {
        let path = sfs_global::path::strip_mount(spec, &self.setup.config.mountdir)
            .unwrap_or_else(|| spec.to_string());
        let path = sfs_global::path::normalize(&path)
            .with_context(|| format!("{spec}: not an SFS path"))?;
        Ok(Arc::new(sfs::SfsTree::new(self.clients()?, path)))
    }

    /// A local path or an `s3://` URL.
    fn outside(&mut self, spec: &str) -> Result<Arc<dyn Tree>> {
        let Some(url) = s3::parse_url(spec) else {
            return Ok(Arc::new(local::LocalTree::new(PathBuf::from(spec))));
        };
        let (bucket, prefix) = url?;
        if !self.buckets.contains_key(&bucket) {
            let runtime = match &self.runtime {
                Some(runtime) => Arc::clone(runtime),
                None => {
                    let runtime = Arc::new(
                        tokio::runtime::Builder::new_multi_thread()
                            .worker_threads(2)
                            .enable_all()
                            .build()
                            .context("starting the S3 runtime")?,
                    );
                    self.runtime = Some(Arc::clone(&runtime));
                    runtime
                }
            };
            let connected = Arc::new(s3::Bucket::connect(&bucket, runtime)?);
            self.buckets.insert(bucket.clone(), connected);
        }
        Ok(Arc::new(s3::S3Tree::new(
            Arc::clone(&self.buckets[&bucket]),
            prefix,
        )))
    }

    fn tree(&mut self, spec: &str, sfs_side: bool) -> Result<Arc<dyn Tree>> {
        match sfs_side {
            true => self.sfs(spec),
            false => self.outside(spec),
        }
    }
}

/// The last component of `spec` (a path or an S3 URL).
fn basename(spec: &str) -> Result<&str> {
    let trimmed = spec.trim_end_matches('/');
    let name = trimmed.rsplit('/').next().unwrap_or(trimmed);
    if name.is_empty() || name == "." || name == ".." || name.ends_with(':') {
        bail!("{spec}: has no name to copy into a directory (end it with / to copy its contents)");
    }
    Ok(name)
}

fn join_spec(dir: &str, name: &str) -> String {
    format!("{}/{name}", dir.trim_end_matches('/'))
}

/// The SRC → DST pairs of the command line and the manifest.
fn pairs(
    args: &StageArgs,
    trees: &mut Trees,
    direction: Direction,
) -> Result<Vec<(String, String)>> {
    let mut pairs = Vec::new();
    match args.paths.len() {
        0 if args.manifest.is_some() => {}
        0 | 1 => bail!("{}: give SRC... DST or --manifest FILE", direction.name()),
        n => {
            let (srcs, dst) = (&args.paths[..n - 1], &args.paths[n - 1]);
            let into = srcs.len() > 1 || dst.ends_with('/');
            let dst_is_dir = |trees: &mut Trees| -> Result<bool> {
                let tree = trees.tree(dst, direction == Direction::In)?;
                Ok(tree.root_kind()? == Some(EntryKind::Dir))
            };
            for src in srcs {
                // A single file also goes into an existing directory; a
                // single directory is copied to DST whatever is there, so
                // that the same command names the same paths on every run
                // (which is what lets it resume).
                let into = into
                    || (!src.ends_with('/')
                        && trees.tree(src, direction == Direction::Out)?.root_kind()?
                            == Some(EntryKind::File)
                        && dst_is_dir(trees)?);
                let to = match into && !src.ends_with('/') {
                    true => join_spec(dst, basename(src)?),
                    false => dst.clone(),
                };
                pairs.push((src.clone(), to));
            }
        }
    }
    if let Some(manifest) = &args.manifest {
        let text = std::fs::read_to_string(manifest)
            .with_context(|| format!("reading manifest {}", manifest.display()))?;
        for (number, line) in text.lines().enumerate() {
            let line = line.trim();
            if line.is_empty() || line.starts_with('#') {
                continue;
            }
            let fields: Vec<&str> = match line.contains('\t') {
                true => line.split('\t').filter(|f| !f.is_empty()).collect(),
                false => line.split_whitespace().collect(),
            };
            let [src, dst] = fields[..] else {
                bail!(
                    "{}:{}: expected `SRC DST`, got {line:?}",
                    manifest.display(),
                    number + 1
                );
            };
            let to = match dst.ends_with('/') && !src.ends_with('/') {
                true => join_spec(dst, basename(src)?),
                false => dst.to_string(),
            };
            pairs.push((src.to_string(), to));
        }
    }
    Ok(pairs)
}

/// `sfs stage-in`.
pub fn stage_in(setup: &Setup, args: &StageArgs) -> Result<()> {
    stage(setup, args, Direction::In, Skip::Journaled)
}

/// `sfs stage-out`.
pub fn stage_out(setup: &Setup, args: &StageOutArgs) -> Result<()> {
    let skip = match args.changed {
        true => Skip::Unchanged,
        false => Skip::Journaled,
    };
    stage(setup, &args.stage, Direction::Out, skip)
}

/// `sfs stop --write-back`'s first half: SFS written back by name to the
/// config's `backing_dir`, as `sfs stage-out --changed / BACKING_DIR`.
/// Failing paths are listed on stderr and make it an error.
pub fn write_back(setup: &Setup) -> Result<()> {
    let dir = &setup.config.backing_dir;
    if dir.is_empty() {
        let config = match &setup.config_path {
            Some(path) => path.display().to_string(),
            None => "no config file: the built-in defaults".into(),
        };
        bail!(
            "--write-back: the config field `backing_dir` is empty ({config}); set it to the \
             directory to write back to, or copy with `sfs stage-out --changed / DIR`"
        );
    }
    eprintln!("write-back: sfs:/ -> {dir} (as `sfs stage-out --changed / {dir}`)");
    stage(
        setup,
        &StageArgs::plain("/", dir),
        Direction::Out,
        Skip::Unchanged,
    )
    .with_context(|| format!("write-back to {dir}"))
}

/// Runs `sfs stage-in` or `sfs stage-out`.
fn stage(setup: &Setup, args: &StageArgs, direction: Direction, skip: Skip) -> Result<()> {
    let what = direction.name();
    let jobs = args.jobs.max(1);
    let mut trees = Trees {
        setup,
        clients: None,
        clients_wanted: jobs.min(sfs::MAX_CLIENTS),
        runtime: None,
        buckets: HashMap::new(),
    };
    let specs = pairs(args, &mut trees, direction)?;
    let filter = filter::Filter::new(&args.include, &args.exclude)?;
    let chunk = setup.config.chunk_size;
    let range_size = args
        .range_mib
        .map_or(DEFAULT_RANGE, |mib| mib.max(1) << 20)
        .div_ceil(chunk)
        * chunk;

    let mut failures = Vec::new();
    let mut pairs = Vec::new();
    let mut described = Vec::new();
    let mut into_backing = Vec::new();
    for (src_spec, dst_spec) in &specs {
        let src = trees.tree(src_spec, direction == Direction::Out)?;
        let dst = trees.tree(dst_spec, direction == Direction::In)?;
        described.push((src.describe(""), dst.describe("")));
        if src.root_kind()?.is_none() {
            failures.push((src.describe(""), "no such file or directory".to_string()));
            continue;
        }
        let mut problems = Vec::new();
        let walked = src
            .walk(&|rel| filter.excluded(rel), &mut problems)
            .with_context(|| format!("walking {}", src.describe("")))?;
        failures.extend(problems);
        into_backing.push(direction == Direction::Out && inside_backing_dir(setup, dst_spec));
        pairs.push(Pair {
            src,
            dst,
            entries: filter.keep_included(walked),
        });
    }
    if direction == Direction::Out && !args.check && !args.dry_run {
        // Cache mode: a file renamed in SFS may still read bytes from its
        // old backing name, which this stage may be about to rewrite.
        // Nothing is written unless every such file holds its bytes.
        let mut held = Vec::new();
        for (pair, into_backing) in pairs.iter().zip(&into_backing) {
            if *into_backing {
                held.extend(pair.src.detach_moved());
            }
        }
        report_failures(what, &held)?;
    }
    let share = args.share()?;
    if share.is_some() && args.restart {
        bail!("{what}: --restart with ranks would empty the journal the other ranks write to; restart without ranks");
    }
    let mine = share.map(|(rank, ranks)| shares(&pairs, rank, ranks));
    let journal = match skip {
        Skip::Unchanged => None,
        Skip::Journaled => {
            let path = match &args.journal {
                Some(path) => path.clone(),
                None => journal::default_path(what, &described)?,
            };
            let journal =
                journal::Journal::open(&path, args.restart && !args.dry_run && !args.check)?;
            eprintln!("{what}: journal {}", journal.path().display());
            Some(journal)
        }
    };

    // What the journal or the destination says is done already.
    let mut todo = Vec::new();
    let mut skipped = 0u64;
    for pair in &pairs {
        let mut left = Vec::new();
        for (i, entry) in pair.entries.iter().enumerate() {
            if mine.as_ref().is_some_and(|mine| !mine[todo.len()][i]) {
                continue; // another rank's
            }
            let done = match (entry.kind, &journal) {
                (EntryKind::Dir, _) => continue,
                // No journal: `--changed`, which asks the destination.
                (_, None) => pair
                    .dst
                    .entry(&entry.rel)
                    .ok()
                    .flatten()
                    .is_some_and(|dst| tree::unchanged(entry, &dst)),
                (EntryKind::Symlink, Some(_)) => false,
                (EntryKind::File, Some(journal)) => !args.check && journaled(journal, pair, entry),
            };
            match done {
                true if entry.kind == EntryKind::File => skipped += 1,
                true => {}
                false => left.push(i),
            }
        }
        todo.push(left);
    }

    if args.dry_run {
        return dry_run(what, &pairs, &todo, skipped, skip, &failures);
    }
    let settings = engine::Settings {
        jobs,
        verify: !args.no_verify && !args.check,
        check_only: args.check,
        range_size,
        verbose: args.verbose,
        progress_every: Duration::from_secs(args.progress_interval.max(1)),
        changed_only: journal.is_none(),
        sharded: share.is_some(),
    };
    let what = match share {
        Some((rank, ranks)) => format!("{what} (rank {rank} of {ranks})"),
        None => what.to_string(),
    };
    let what = what.as_str();
    let started = std::time::Instant::now();
    let mut outcome = engine::run(what, &pairs, &todo, &settings, journal.as_ref());
    outcome.files_skipped = skipped;
    failures.extend(std::mem::take(&mut outcome.failures));
    let seconds = started.elapsed().as_secs_f64();
    if args.check {
        outln!(
            "{what} --check: {} files ({:.1} MiB) the same, {} differ or failed, in {seconds:.1} s",
            outcome.files_copied,
            outcome.bytes_copied as f64 / 1048576.0,
            failures.len()
        )?;
        return report_failures(what, &failures);
    }
    outln!(
        "{what}: {} files ({:.1} MiB) copied{}, {} {}, {} directories, \
         {} symlinks, {} failed, in {seconds:.1} s ({:.1} MiB/s)",
        outcome.files_copied,
        outcome.bytes_copied as f64 / 1048576.0,
        if settings.verify { " and verified" } else { "" },
        outcome.files_skipped,
        skip.label(),
        outcome.dirs,
        outcome.symlinks,
        failures.len(),
        outcome.bytes_copied as f64 / 1048576.0 / seconds.max(1e-3)
    )?;
    if share.is_some() {
        outln!(
            "{what}: directory modes and times are not set yet: once every rank is done, \
             run the same command without ranks"
        )?;
    }
    report_failures(what, &failures)
}

/// Whether `spec` (a stage-out's destination) is a local path inside the
/// config's `backing_dir`.
fn inside_backing_dir(setup: &Setup, spec: &str) -> bool {
    let backing = &setup.config.backing_dir;
    if backing.is_empty() || s3::parse_url(spec).is_some() {
        return false;
    }
    let Ok(backing) = std::fs::canonicalize(backing) else {
        return false;
    };
    // The nearest part of `spec` that exists, resolved, and the rest.
    let mut existing = std::path::absolute(spec).unwrap_or_else(|_| PathBuf::from(spec));
    let mut rest = Vec::new();
    loop {
        if let Ok(real) = std::fs::canonicalize(&existing) {
            let full: PathBuf = rest.iter().rev().fold(real, |p, n| p.join(n));
            return full.starts_with(&backing);
        }
        match (
            existing.file_name().map(|n| n.to_owned()),
            existing.parent(),
        ) {
            (Some(name), Some(parent)) => {
                rest.push(name);
                existing = parent.to_path_buf();
            }
            _ => return false,
        }
    }
}

/// Whether the journal finished `entry` of `pair` from the source as it is
/// now, and the destination still has a file of its size.
fn journaled(journal: &journal::Journal, pair: &Pair, entry: &tree::Entry) -> bool {
    journal
        .finished(&pair.dst.describe(&entry.rel))
        .is_some_and(|r| {
            r.src == pair.src.describe(&entry.rel)
                && r.size == entry.size
                && r.version == entry.version
        })
        && pair
            .dst
            .file_state(&entry.rel)
            .ok()
            .flatten()
            .is_some_and(|s| s.size == entry.size)
}

/// Lists the failing paths on stderr; an error if there are any.
fn report_failures(what: &str, failures: &[(String, String)]) -> Result<()> {
    if failures.is_empty() {
        return Ok(());
    }
    for (path, cause) in failures {
        eprintln!("{what}: FAILED {path}: {cause}");
    }
    bail!(
        "{what}: {} path{} failed (listed above); run the same command again to retry them",
        failures.len(),
        if failures.len() == 1 { "" } else { "s" }
    )
}

/// `--dry-run`: what the stage would do, one line per entry.
fn dry_run(
    what: &str,
    pairs: &[Pair],
    todo: &[Vec<usize>],
    skipped: u64,
    skip: Skip,
    failures: &[(String, String)],
) -> Result<()> {
    let (mut files, mut bytes) = (0u64, 0u64);
    for (pair, todo) in pairs.iter().zip(todo) {
        for entry in pair.entries.iter().filter(|e| e.kind == EntryKind::Dir) {
            outln!("mkdir {}", pair.dst.describe(&entry.rel))?;
        }
        for &i in todo {
            let entry = &pair.entries[i];
            let (src, dst) = (pair.src.describe(&entry.rel), pair.dst.describe(&entry.rel));
            match entry.kind {
                EntryKind::File => {
                    files += 1;
                    bytes += entry.size;
                    outln!("copy {src} -> {dst} ({} bytes)", entry.size)?;
                }
                EntryKind::Symlink => outln!("symlink {dst} -> {}", entry.target)?,
                EntryKind::Dir => {}
            }
        }
    }
    outln!(
        "{what} (dry run): would copy {files} files ({:.1} MiB), {skipped} {}",
        bytes as f64 / 1048576.0,
        skip.label()
    )?;
    report_failures(what, failures)
}

#[cfg(test)]
mod tests {
    use super::*;
    use tree::Entry;

    fn pair(entries: Vec<Entry>) -> Pair {
        let tree: Arc<dyn Tree> = Arc::new(local::LocalTree::new(PathBuf::from("/nonexistent")));
        Pair {
            src: Arc::clone(&tree),
            dst: tree,
            entries,
        }
    }

    fn entry(rel: &str, kind: EntryKind, size: u64) -> Entry {
        Entry {
            rel: rel.to_string(),
            kind,
            mode: 0o644,
            mtime_ns: 0,
            size,
            target: String::new(),
            version: 0,
        }
    }

    /// Every file and symlink goes to exactly one rank, directories to
    /// none; the split does not depend on the walk's order; bytes spread
    /// evenly (within the largest file).
    #[test]
    fn every_entry_has_one_rank_whatever_the_walk_order() {
        let mut entries = vec![entry("", EntryKind::Dir, 0)];
        for i in 0..200u64 {
            entries.push(entry(
                &format!("f{i}"),
                EntryKind::File,
                (i * 7919) % 100_000,
            ));
        }
        entries.push(entry("big", EntryKind::File, 50 << 20));
        entries.push(entry("link", EntryKind::Symlink, 0));
        let ranks = 3;
        let pairs = [pair(entries.clone()), pair(entries[..50].to_vec())];
        let mut reversed = entries.clone();
        reversed[1..].reverse();
        let reordered = [pair(reversed), pair(entries[..50].to_vec())];
        let split: Vec<_> = (0..ranks).map(|r| shares(&pairs, r, ranks)).collect();
        let mut load = vec![0u64; ranks];
        for (p, pair) in pairs.iter().enumerate() {
            for (i, e) in pair.entries.iter().enumerate() {
                let owners: Vec<usize> = (0..ranks).filter(|&r| split[r][p][i]).collect();
                match e.kind {
                    EntryKind::Dir => assert!(owners.is_empty(), "{}", e.rel),
                    _ => {
                        assert_eq!(owners.len(), 1, "{}", e.rel);
                        load[owners[0]] += e.size;
                        // The same rank when the walk came in another order.
                        let again = shares(&reordered, owners[0], ranks);
                        let at = reordered[p].entries.iter().position(|x| x.rel == e.rel);
                        assert!(again[p][at.unwrap()], "{} moved", e.rel);
                    }
                }
            }
        }
        let small: Vec<u64> = load.iter().copied().filter(|&l| l < 50 << 20).collect();
        let (min, max) = (small.iter().min().unwrap(), small.iter().max().unwrap());
        assert!(max - min <= 100_000 + SHARE_FILE_COST, "{load:?}");
    }
}
