//! Moves the planned entries: directories first (parents before children),
//! then files and symlinks by a pool of `--jobs` workers, then the
//! directories' modes and mtimes (children before parents, so that setting
//! a child's mtime does not change its parent's after the parent got it).
//!
//! A file is cut into **ranges** of `range_size` bytes, a multiple of the
//! SFS chunk size starting at chunk boundaries, so each chunk is moved
//! whole by one worker and lands on (or comes from) its one server; the
//! ranges of one large file are moved by many workers at once. Each range
//! is hashed (xxh3-128) as it is read from the source; once every range of
//! a file is written and the file completed (mode, mtime), its ranges are
//! read back from the destination, hashed and compared (unless
//! `--no-verify`). Only then is the file recorded in the journal (when the
//! stage keeps one: `--changed` does not).
//! Verification tasks go to the front of the queue: files finish (and are
//! journaled) early rather than all at the end.

use super::journal::{Journal, Record};
use super::progress::Progress;
use super::tree::{Entry, EntryKind, FileSink, Tree};
use anyhow::{bail, Result};
use std::collections::VecDeque;
use std::ops::Range;
use std::sync::atomic::{AtomicUsize, Ordering};
use std::sync::{Arc, Condvar, Mutex, OnceLock};
use std::time::Duration;

/// One SRC → DST of the command, with what its walk found.
pub struct Pair {
    pub src: Arc<dyn Tree>,
    pub dst: Arc<dyn Tree>,
    /// Every entry to stage (after filters), parents before children.
    pub entries: Vec<Entry>,
}

/// How the engine runs.
pub struct Settings {
    pub jobs: usize,
    pub verify: bool,
    /// `--check`: compare source and destination range by range, write
    /// nothing (the journal is not touched either).
    pub check_only: bool,
    pub range_size: u64,
    pub verbose: bool,
    pub progress_every: Duration,
    /// `--changed`: a directory's mode and mtime are set only where the
    /// destination's differ, and the destination's top directory keeps
    /// its own.
    pub changed_only: bool,
    /// One of several ranks (`--rank`): directories are made, but their
    /// modes and times (and an S3 sidecar) are left to a run without ranks
    /// once every rank is done — another rank may still add to them.
    pub sharded: bool,
}

/// What a stage did.
#[derive(Default)]
pub struct Outcome {
    pub files_copied: u64,
    pub bytes_copied: u64,
    pub files_skipped: u64,
    pub dirs: u64,
    pub symlinks: u64,
    /// (path, cause) of everything that failed.
    pub failures: Vec<(String, String)>,
}

/// The ranges of a file of `size` bytes (one empty range for an empty file).
pub fn ranges_of(size: u64, range_size: u64) -> Vec<Range<u64>> {
    if size == 0 {
        return std::iter::once(0..0).collect();
    }
    (0..size.div_ceil(range_size))
        .map(|i| i * range_size..((i + 1) * range_size).min(size))
        .collect()
}

/// The hash the journal keeps for a file: xxh3-64 over its ranges' hashes.
fn file_digest(ranges: &[u128]) -> String {
    let bytes: Vec<u8> = ranges.iter().flat_map(|d| d.to_le_bytes()).collect();
    format!("{:016x}", xxhash_rust::xxh3::xxh3_64(&bytes))
}

/// A file being staged.
struct FileJob {
    pair: usize,
    entry: Entry,
    ranges: Vec<Range<u64>>,
    sink: OnceLock<Result<Box<dyn FileSink>, String>>,
    /// The source's hash of each range, as it was read.
    digests: Mutex<Vec<u128>>,
    writes_left: AtomicUsize,
    verifies_left: AtomicUsize,
    /// The first thing that went wrong.
    error: Mutex<Option<String>>,
}

impl FileJob {
    fn fail(&self, cause: String) {
        self.error
            .lock()
            .unwrap_or_else(|p| p.into_inner())
            .get_or_insert(cause);
    }

    fn failed(&self) -> bool {
        self.error
            .lock()
            .unwrap_or_else(|p| p.into_inner())
            .is_some()
    }
}

#[derive(Clone, Copy)]
enum Task {
    Write { file: usize, range: usize },
    Verify { file: usize, range: usize },
    Symlink { pair: usize, entry: usize },
}

/// The work queue: tasks waiting, and how many are waiting or running
/// (workers stop when none are, as a running task may add more).
struct Queue {
    state: Mutex<(VecDeque<Task>, usize)>,
    ready: Condvar,
}

impl Queue {
    fn new(tasks: VecDeque<Task>) -> Queue {
        let pending = tasks.len();
        Queue {
            state: Mutex::new((tasks, pending)),
            ready: Condvar::new(),
        }
    }

    fn next(&self) -> Option<Task> {
        let mut state = self.state.lock().unwrap_or_else(|p| p.into_inner());
        loop {
            if let Some(task) = state.0.pop_front() {
                return Some(task);
            }
            if state.1 == 0 {
                return None;
            }
            state = self.ready.wait(state).unwrap_or_else(|p| p.into_inner());
        }
    }

    /// `tasks` go first in line.
    fn push_front(&self, tasks: impl DoubleEndedIterator<Item = Task>) {
        let mut state = self.state.lock().unwrap_or_else(|p| p.into_inner());
        for task in tasks.rev() {
            state.0.push_front(task);
            state.1 += 1;
        }
        self.ready.notify_all();
    }

    fn done(&self) {
        let mut state = self.state.lock().unwrap_or_else(|p| p.into_inner());
        state.1 -= 1;
        if state.1 == 0 {
            self.ready.notify_all();
        }
    }
}

/// The run's shared state.
struct Run<'a> {
    pairs: &'a [Pair],
    files: Vec<FileJob>,
    settings: &'a Settings,
    journal: Option<&'a Journal>,
    progress: &'a Progress,
    queue: Queue,
    failures: Mutex<Vec<(String, String)>>,
    copied: AtomicUsize,
}

/// Stages `pairs`; `todo[p]` lists the entries of pair `p` that the
/// journal (or `--changed`'s look at the destination) does not already
/// have; finished files are recorded in `journal` if there is one.
pub fn run(
    what: &str,
    pairs: &[Pair],
    todo: &[Vec<usize>],
    settings: &Settings,
    journal: Option<&Journal>,
) -> Outcome {
    let mut outcome = Outcome::default();
    let mut failures = Vec::new();
    // Directories, parents first: the entries are in walk order.
    for pair in pairs.iter().filter(|_| !settings.check_only) {
        for entry in pair.entries.iter().filter(|e| e.kind == EntryKind::Dir) {
            match pair.dst.make_dir(&entry.rel) {
                Ok(()) => outcome.dirs += 1,
                Err(e) => failures.push((pair.dst.describe(&entry.rel), format!("{e:#}"))),
            }
        }
    }
    let mut files = Vec::new();
    let mut tasks = VecDeque::new();
    let mut work = 0;
    for (p, pair) in pairs.iter().enumerate() {
        for &i in &todo[p] {
            let entry = &pair.entries[i];
            match entry.kind {
                EntryKind::File => {
                    let ranges = ranges_of(entry.size, settings.range_size);
                    let file = files.len();
                    tasks.extend((0..ranges.len()).map(|range| Task::Write { file, range }));
                    work += entry.size
                        * if settings.verify || settings.check_only {
                            2
                        } else {
                            1
                        };
                    files.push(FileJob {
                        pair: p,
                        entry: entry.clone(),
                        writes_left: AtomicUsize::new(ranges.len()),
                        verifies_left: AtomicUsize::new(ranges.len()),
                        digests: Mutex::new(vec![0; ranges.len()]),
                        ranges,
                        sink: OnceLock::new(),
                        error: Mutex::new(None),
                    });
                }
                EntryKind::Symlink => tasks.push_back(Task::Symlink { pair: p, entry: i }),
                EntryKind::Dir => {}
            }
        }
    }
    let progress = Progress::new(what, files.len() as u64, work);
    let run = Run {
        pairs,
        files,
        settings,
        journal,
        progress: &progress,
        queue: Queue::new(tasks),
        failures: Mutex::new(failures),
        copied: AtomicUsize::new(0),
    };
    std::thread::scope(|scope| {
        let workers: Vec<_> = (0..settings.jobs.max(1))
            .map(|_| scope.spawn(|| run.work()))
            .collect();
        scope.spawn(|| progress.report_until_stopped(settings.progress_every));
        for worker in workers {
            let _ = worker.join();
        }
        progress.stop();
    });
    let mut failures = run.failures.into_inner().unwrap_or_else(|p| p.into_inner());
    // Directory attributes, children first (reverse walk order).
    for pair in pairs
        .iter()
        .filter(|_| !settings.check_only && !settings.sharded)
    {
        for entry in pair.entries.iter().rev() {
            if entry.kind == EntryKind::Dir {
                if settings.changed_only
                    && (entry.rel.is_empty()
                        || pair
                            .dst
                            .entry(&entry.rel)
                            .ok()
                            .flatten()
                            .is_some_and(|dst| crate::stage::tree::unchanged(entry, &dst)))
                {
                    continue;
                }
                if let Err(e) = pair
                    .dst
                    .set_dir_attrs(&entry.rel, entry.mode, entry.mtime_ns)
                {
                    failures.push((pair.dst.describe(&entry.rel), format!("{e:#}")));
                }
            }
        }
        if let Err(e) = pair.dst.finish(&pair.entries) {
            failures.push((pair.dst.describe(""), format!("{e:#}")));
        }
    }
    outcome.symlinks = pairs
        .iter()
        .zip(todo)
        .map(|(pair, todo)| {
            todo.iter()
                .filter(|&&i| pair.entries[i].kind == EntryKind::Symlink)
                .count() as u64
        })
        .sum();
    outcome.files_copied = run.copied.load(Ordering::Relaxed) as u64;
    outcome.bytes_copied = progress
        .bytes_copied
        .load(std::sync::atomic::Ordering::Relaxed);
    failures.sort();
    outcome.failures = failures;
    outcome
}

impl Run<'_> {
    /// A worker: tasks until there are none.
    fn work(&self) {
        let mut buf = Vec::new();
        while let Some(task) = self.queue.next() {
            match task {
                Task::Write { file, range } => self.write(file, range, &mut buf),
                Task::Verify { file, range } => self.verify(file, range, &mut buf),
                Task::Symlink { pair, entry } => self.symlink(pair, entry),
            }
            self.queue.done();
        }
    }

    fn fail(&self, path: String, cause: String) {
        self.failures
            .lock()
            .unwrap_or_else(|p| p.into_inner())
            .push((path, cause));
    }

    fn symlink(&self, pair: usize, entry: usize) {
        let Pair { dst, entries, .. } = &self.pairs[pair];
        let entry = &entries[entry];
        let made = match self.settings.check_only {
            true => Ok(()),
            false => dst.make_symlink(&entry.rel, &entry.target, entry.mtime_ns),
        };
        let made = made.and_then(|()| match dst.read_link(&entry.rel)? {
            Some(target) if target != entry.target => {
                bail!("reads back as a link to {target:?}, not {:?}", entry.target)
            }
            _ => Ok(()),
        });
        if let Err(e) = made {
            self.fail(dst.describe(&entry.rel), format!("{e:#}"));
        }
    }

    /// Reads range `range` of file `file` from the source (holes are not
    /// read), hashes it, writes it to the destination.
    fn write(&self, file: usize, range: usize, buf: &mut Vec<u8>) {
        let job = &self.files[file];
        let pair = &self.pairs[job.pair];
        if !job.failed() {
            let moved = (|| -> Result<()> {
                if self.settings.check_only {
                    return self.compare(job, range, buf);
                }
                let sink = job.sink.get_or_init(|| {
                    pair.dst
                        .create_file(&job.entry, job.ranges.len())
                        .map_err(|e| format!("{e:#}"))
                });
                let sink = match sink {
                    Ok(sink) => sink,
                    Err(e) => bail!("{e}"),
                };
                self.read_source(job, range, buf)?;
                sink.write_range(range, job.ranges[range].start, buf)?;
                self.progress.copied(buf.len() as u64);
                Ok(())
            })();
            if let Err(e) = moved {
                job.fail(format!("{e:#}"));
            }
        }
        if job.writes_left.fetch_sub(1, Ordering::AcqRel) == 1 {
            match self.settings.check_only {
                true => self.finished(file),
                false => self.written(file),
            }
        }
    }

    /// Reads `range` of `job` into `buf`, holes as zeros, and returns its
    /// hash.
    fn read_source(&self, job: &FileJob, range: usize, buf: &mut Vec<u8>) -> Result<u128> {
        let src = &self.pairs[job.pair].src;
        let span = job.ranges[range].clone();
        // The buffer keeps the last range's bytes: only holes are zeroed
        // (a memset of every range costs a pass over the data).
        buf.resize((span.end - span.start) as usize, 0);
        let mut filled = 0;
        for data in src.data_in(&job.entry.rel, span.clone())? {
            let at = (data.start - span.start) as usize;
            let end = (data.end - span.start) as usize;
            buf[filled..at].fill(0);
            src.read_at(&job.entry.rel, data.start, &mut buf[at..end])?;
            filled = end;
        }
        buf[filled..].fill(0);
        let digest = xxhash_rust::xxh3::xxh3_128(buf);
        job.digests.lock().unwrap_or_else(|p| p.into_inner())[range] = digest;
        Ok(digest)
    }

    /// `--check` of one range: source and destination hashes compared.
    fn compare(&self, job: &FileJob, range: usize, buf: &mut Vec<u8>) -> Result<()> {
        self.read_source(job, range, buf)?;
        self.progress.copied(buf.len() as u64);
        self.check_destination(job, range, buf)
    }

    /// Reads `range` of `job` back from the destination into `buf` and
    /// compares its hash with the source's.
    fn check_destination(&self, job: &FileJob, range: usize, buf: &mut Vec<u8>) -> Result<()> {
        let dst = &self.pairs[job.pair].dst;
        let span = job.ranges[range].clone();
        let len = (span.end - span.start) as usize;
        buf.resize(len, 0); // every byte is read over
        dst.read_at(&job.entry.rel, span.start, buf)
            .map_err(|e| e.context("verification failed: cannot read the destination"))?;
        let digest = xxhash_rust::xxh3::xxh3_128(buf);
        let expected = job.digests.lock().unwrap_or_else(|p| p.into_inner())[range];
        if digest != expected {
            bail!(
                "verification failed: bytes {}..{} of the destination differ from the source \
                 (xxh3 {digest:032x}, source {expected:032x})",
                span.start,
                span.end
            );
        }
        self.progress.verified(len as u64);
        Ok(())
    }

    /// Every range of `file` is written (or failed): complete it, check
    /// that the source did not change meanwhile, then verify or record.
    fn written(&self, file: usize) {
        let job = &self.files[file];
        let pair = &self.pairs[job.pair];
        let sink = match job.sink.get() {
            Some(Ok(sink)) => Some(sink),
            _ => None,
        };
        let completed = (|| -> Result<()> {
            if job.failed() {
                if let Some(sink) = sink {
                    sink.abort();
                }
                return Ok(());
            }
            let Some(sink) = sink else {
                bail!("the destination file was never created");
            };
            sink.complete()?;
            let now = pair.src.file_state(&job.entry.rel)?;
            match now {
                Some(s) if s.size == job.entry.size && s.mtime_ns == job.entry.version => Ok(()),
                _ => bail!(
                    "the source changed while it was staged (size or modification time); \
                     run the stage again"
                ),
            }
        })();
        if let Err(e) = completed {
            job.fail(format!("{e:#}"));
        }
        if job.failed() {
            self.finished(file);
        } else if self.settings.verify {
            self.queue
                .push_front((0..job.ranges.len()).map(|range| Task::Verify { file, range }));
        } else {
            self.finished(file);
        }
    }

    /// Reads range `range` of `file` back from the destination and
    /// compares its hash with the source's.
    fn verify(&self, file: usize, range: usize, buf: &mut Vec<u8>) {
        let job = &self.files[file];
        if !job.failed() {
            if let Err(e) = self.check_destination(job, range, buf) {
                job.fail(format!("{e:#}"));
            }
        }
        if job.verifies_left.fetch_sub(1, Ordering::AcqRel) == 1 {
            self.finished(file);
        }
    }

    /// `file` is done: recorded in the journal, or listed as failed.
    fn finished(&self, file: usize) {
        let job = &self.files[file];
        let pair = &self.pairs[job.pair];
        let dst = pair.dst.describe(&job.entry.rel);
        let recorded = (|| -> Result<()> {
            if let Some(cause) = job.error.lock().unwrap_or_else(|p| p.into_inner()).take() {
                bail!("{cause}");
            }
            if self.settings.verify || self.settings.check_only {
                let size = pair.dst.file_state(&job.entry.rel)?.map(|s| s.size);
                if size != Some(job.entry.size) {
                    bail!(
                        "verification failed: the destination has size {size:?}, the source {}",
                        job.entry.size
                    );
                }
            }
            let Some(journal) = self.journal.filter(|_| !self.settings.check_only) else {
                return Ok(());
            };
            let digests = job.digests.lock().unwrap_or_else(|p| p.into_inner());
            journal.record(&Record {
                src: pair.src.describe(&job.entry.rel),
                dst: dst.clone(),
                size: job.entry.size,
                version: job.entry.version,
                xxh3: file_digest(&digests),
                verified: self.settings.verify,
            })
        })();
        match recorded {
            Ok(()) => {
                self.copied.fetch_add(1, Ordering::Relaxed);
                self.progress.file_done();
                if self.settings.verbose {
                    let verb = if self.settings.check_only {
                        "same"
                    } else {
                        "copied"
                    };
                    let _ = outln!("{verb} {dst}");
                }
            }
            Err(e) => self.fail(dst, format!("{e:#}")),
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn ranges_cover_the_file_at_range_boundaries() {
        let one = |r: Range<u64>| std::iter::once(r).collect::<Vec<_>>();
        assert_eq!(ranges_of(0, 8), one(0..0));
        assert_eq!(ranges_of(5, 8), one(0..5));
        assert_eq!(ranges_of(8, 8), one(0..8));
        assert_eq!(ranges_of(17, 8), [0..8, 8..16, 16..17]);
    }

    #[test]
    fn the_file_digest_depends_on_every_range_and_their_order() {
        let a = file_digest(&[1, 2]);
        assert_ne!(a, file_digest(&[2, 1]));
        assert_ne!(a, file_digest(&[1, 3]));
        assert_eq!(a, file_digest(&[1, 2]));
    }
}
