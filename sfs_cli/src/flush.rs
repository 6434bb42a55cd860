//! `sfs flush PATH...`: makes files back-end-persistent (their data in the
//! object back end, see docs/semantics.md), one line per file and a total.
//!
//! The files are listed first (a directory needs `-r`), then flushed
//! [`FILES_AT_ONCE`] requests at a time — each already has every server
//! writing its own chunks; a file over `--slice-mib` is flushed in
//! slices, one request each — while a progress line (files, bytes, rate,
//! ETA) is kept on stderr: redrawn in place on a terminal, a plain line
//! every [`PLAIN_EVERY`] otherwise, so job logs show how far it got, and
//! once more at the end.

use crate::files::client;
use crate::Setup;
use anyhow::{anyhow, bail, Context, Result};
use sfs_client::{Client, FileKind, FlushStats};
use std::io::{IsTerminal, Write};
use std::sync::atomic::{AtomicU64, AtomicUsize, Ordering};
use std::sync::Mutex;
use std::time::{Duration, Instant};

/// Files flushed at once.
const FILES_AT_ONCE: usize = 4;

/// How often the progress line is redrawn on a terminal ...
const REDRAW_EVERY: Duration = Duration::from_millis(200);
/// ... and printed as a plain line when stderr is not one.
const PLAIN_EVERY: Duration = Duration::from_secs(10);

/// Flushes each path; a directory needs `recursive` and then every file
/// under it is flushed (symlinks inside the tree are not followed, so a
/// link cannot make the walk loop or leave the tree).
pub fn flush(setup: &Setup, paths: &[String], recursive: bool, slice: u64) -> Result<()> {
    let client = client(setup)?;
    let mut files = Vec::new();
    for path in paths {
        let path = sfs_global::path::normalize(path)?;
        // As open: a symlink named on the command line is followed.
        let md = client
            .stat(&path)
            .with_context(|| format!("flush {path}"))?;
        if md.is_dir() {
            if !recursive {
                bail!("flush {path}: is a directory (use -r)");
            }
            list_tree(&client, &path, &mut files)?;
        } else if md.kind() == FileKind::File {
            files.push((path, md.size));
        }
        // Symlinks, FIFOs, sockets, devices: nothing held to flush.
    }
    let progress = Progress::new(&files);
    let slices = slices(&files, slice_bytes(slice, setup.config.chunk_size));
    // Per file: slices still to do, and what the done ones wrote.
    let mut counts = vec![0usize; files.len()];
    for slice in &slices {
        counts[slice.file] += 1;
    }
    let per_file: Vec<Mutex<(usize, FlushStats)>> = counts
        .into_iter()
        .map(|count| Mutex::new((count, FlushStats::default())))
        .collect();
    let workers = FILES_AT_ONCE.min(slices.len());
    progress.workers.store(workers, Ordering::Release);
    let next = AtomicUsize::new(0);
    let first_error: Mutex<Option<anyhow::Error>> = Mutex::new(None);
    std::thread::scope(|scope| {
        for _ in 0..workers {
            scope.spawn(|| loop {
                let failed = first_error.lock().map(|e| e.is_some()).unwrap_or(true);
                let slice = slices.get(next.fetch_add(1, Ordering::Relaxed));
                let (Some(slice), false) = (slice, failed) else {
                    progress.workers.fetch_sub(1, Ordering::AcqRel);
                    return;
                };
                let (path, _) = &files[slice.file];
                let result = match slice.range {
                    None => client.flush(path),
                    Some((offset, len)) => client.flush_range(path, offset, len),
                };
                match result {
                    Ok(stats) => {
                        progress.slice_done(slice.bytes);
                        let mut file = per_file[slice.file]
                            .lock()
                            .unwrap_or_else(|p| p.into_inner());
                        file.0 -= 1;
                        file.1.chunks += stats.chunks;
                        file.1.bytes += stats.bytes;
                        if file.0 == 0 {
                            progress.file_done(path, file.1);
                        }
                    }
                    Err(e) => {
                        let e = anyhow!(e).context(format!("flush {path}"));
                        first_error
                            .lock()
                            .unwrap_or_else(|p| p.into_inner())
                            .get_or_insert(e);
                    }
                }
            });
        }
        scope.spawn(|| progress.report_until_done());
    });
    progress.finish();
    if let Some(e) = first_error.into_inner().unwrap_or_else(|p| p.into_inner()) {
        return Err(e);
    }
    let total = progress.total.lock().unwrap_or_else(|p| p.into_inner());
    outln!(
        "total: {} files, {} bytes in {} chunks",
        progress.files_done.load(Ordering::Relaxed),
        total.bytes,
        total.chunks
    )?;
    Ok(())
}

/// `slice` (`sfs flush --slice-mib`, 256 MiB by default) rounded down to
/// whole chunks (at least one chunk). A file larger than that is flushed
/// in slices of it, each its own request to every server: the progress
/// line moves within a huge file, no single request runs for minutes
/// (each is bounded by `request_timeout_ms`), and the workers share the
/// slices of one file.
fn slice_bytes(slice: u64, chunk_size: u64) -> u64 {
    (slice / chunk_size).max(1) * chunk_size
}

/// One request of a flush: file `file` whole (`range` None), or the bytes
/// `(offset, len)` of it, `len` 0 meaning to its end (so the last slice
/// also takes what the file grew by since it was listed).
#[derive(Debug, PartialEq, Eq)]
struct Slice {
    file: usize,
    range: Option<(u64, u64)>,
    /// What the slice counts for in the progress line.
    bytes: u64,
}

fn slices(files: &[(String, u64)], slice: u64) -> Vec<Slice> {
    let mut out = Vec::new();
    for (file, &(_, size)) in files.iter().enumerate() {
        if size <= slice {
            out.push(Slice {
                file,
                range: None,
                bytes: size,
            });
            continue;
        }
        let mut offset = 0;
        while offset < size {
            let last = size - offset <= slice;
            out.push(Slice {
                file,
                range: Some((offset, if last { 0 } else { slice })),
                bytes: slice.min(size - offset),
            });
            offset += slice;
        }
    }
    out
}

fn list_tree(client: &Client, dir: &str, files: &mut Vec<(String, u64)>) -> Result<()> {
    let mut entries: Vec<_> = client
        .read_dir(dir)
        .and_then(|listing| listing.collect::<Result<_, _>>())
        .with_context(|| format!("flush: listing {dir}"))?;
    entries.sort_by(|a, b| a.name.cmp(&b.name));
    for entry in entries {
        let path = sfs_global::path::join(dir, &entry.name);
        match entry.metadata.kind() {
            FileKind::Directory => list_tree(client, &path, files)?,
            FileKind::File => files.push((path, entry.metadata.size)),
            // Nothing held: symlinks, FIFOs, sockets, devices.
            _ => {}
        }
    }
    Ok(())
}

/// Counts what is flushed and shows it on stderr.
struct Progress {
    files: usize,
    bytes: u64,
    files_done: AtomicUsize,
    /// Sum of the sizes of the slices done (what the rate and ETA count:
    /// known before the flush, unlike the bytes a flush writes).
    bytes_done: AtomicU64,
    total: Mutex<FlushStats>,
    started: Instant,
    terminal: bool,
    /// The per-file lines and the progress line: one at a time.
    out: Mutex<()>,
    /// Workers still flushing.
    workers: AtomicUsize,
}

impl Progress {
    fn new(files: &[(String, u64)]) -> Progress {
        Progress {
            files: files.len(),
            bytes: files.iter().map(|(_, size)| size).sum(),
            files_done: AtomicUsize::new(0),
            bytes_done: AtomicU64::new(0),
            total: Mutex::new(FlushStats::default()),
            started: Instant::now(),
            terminal: std::io::stderr().is_terminal(),
            out: Mutex::new(()),
            workers: AtomicUsize::new(0),
        }
    }

    /// A slice of `bytes` of a file was flushed.
    fn slice_done(&self, bytes: u64) {
        self.bytes_done.fetch_add(bytes, Ordering::Relaxed);
    }

    /// Every slice of a file was flushed; `stats` is what they wrote.
    fn file_done(&self, path: &str, stats: FlushStats) {
        {
            let mut total = self.total.lock().unwrap_or_else(|p| p.into_inner());
            total.chunks += stats.chunks;
            total.bytes += stats.bytes;
        }
        self.files_done.fetch_add(1, Ordering::Relaxed);
        let _out = self.out.lock().unwrap_or_else(|p| p.into_inner());
        if self.terminal {
            // The progress line is on the terminal's last line: clear it.
            eprint!("\r\x1b[K");
        }
        let _ = outln!("{path}: {} bytes", stats.bytes);
    }

    fn line(&self) -> String {
        let files = self.files_done.load(Ordering::Relaxed);
        let bytes = self.bytes_done.load(Ordering::Relaxed);
        let seconds = self.started.elapsed().as_secs_f64().max(1e-3);
        let rate = bytes as f64 / seconds;
        let eta = if rate > 0.0 && bytes < self.bytes {
            format!(", ETA {:.0} s", (self.bytes - bytes) as f64 / rate)
        } else {
            String::new()
        };
        format!(
            "flush: {files}/{} files, {:.1}/{:.1} MiB ({:.0}%), {:.1} MiB/s{eta}",
            self.files,
            bytes as f64 / 1048576.0,
            self.bytes as f64 / 1048576.0,
            if self.bytes == 0 {
                100.0
            } else {
                bytes as f64 * 100.0 / self.bytes as f64
            },
            rate / 1048576.0
        )
    }

    /// Redraws (terminal) or prints (otherwise) the line until every
    /// worker has stopped (all files done, or an error).
    fn report_until_done(&self) {
        let every = if self.terminal {
            REDRAW_EVERY
        } else {
            PLAIN_EVERY
        };
        let mut last = Instant::now();
        while self.workers.load(Ordering::Acquire) > 0 {
            std::thread::sleep(Duration::from_millis(50));
            if last.elapsed() < every {
                continue;
            }
            last = Instant::now();
            let _out = self.out.lock().unwrap_or_else(|p| p.into_inner());
            let mut err = std::io::stderr().lock();
            let _ = if self.terminal {
                write!(err, "\r\x1b[K{}", self.line())
            } else {
                writeln!(err, "{}", self.line())
            };
            let _ = err.flush();
        }
    }

    /// The final state, once (in place of the redrawn line on a terminal),
    /// so a job log ends with the rate too.
    fn finish(&self) {
        if self.files == 0 {
            return;
        }
        let clear = if self.terminal { "\r\x1b[K" } else { "" };
        eprintln!("{clear}{}", self.line());
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn large_files_are_cut_into_whole_chunk_slices_and_the_last_runs_to_the_end() {
        assert_eq!(slice_bytes(256 << 20, 512 << 10), 256 << 20);
        assert_eq!(slice_bytes(256 << 20, 3 << 20), 255 << 20, "whole chunks");
        assert_eq!(
            slice_bytes(256 << 20, 1 << 30),
            1 << 30,
            "at least one chunk"
        );
        let files = vec![("/a".to_string(), 0), ("/b".to_string(), 250)];
        let s = slices(&files, 100);
        assert_eq!(
            s,
            vec![
                Slice {
                    file: 0,
                    range: None,
                    bytes: 0
                },
                Slice {
                    file: 1,
                    range: Some((0, 100)),
                    bytes: 100
                },
                Slice {
                    file: 1,
                    range: Some((100, 100)),
                    bytes: 100
                },
                Slice {
                    file: 1,
                    range: Some((200, 0)),
                    bytes: 50
                },
            ]
        );
        // A file of exactly one slice is one whole-file flush.
        let s = slices(&[("/c".to_string(), 100)], 100);
        assert_eq!(s[0].range, None);
        assert_eq!(s.len(), 1);
    }
}
