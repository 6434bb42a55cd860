//! How far a stage is: a progress bar (bytes, files, rate, ETA) on a
//! terminal, a plain line every `--progress-interval` seconds otherwise
//! (job logs), and the counts of the summary at the end.

use indicatif::{ProgressBar, ProgressDrawTarget, ProgressStyle};
use std::io::IsTerminal;
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::sync::{Condvar, Mutex};
use std::time::{Duration, Instant};

/// The counters the workers update.
pub struct Progress {
    what: String,
    pub files_total: u64,
    /// Bytes to copy plus, when verifying, bytes to read back.
    pub work_total: u64,
    pub files_done: AtomicU64,
    pub bytes_copied: AtomicU64,
    pub bytes_verified: AtomicU64,
    started: Instant,
    bar: Option<ProgressBar>,
    finished: Mutex<bool>,
    wake: Condvar,
    stop: AtomicBool,
}

impl Progress {
    pub fn new(what: &str, files_total: u64, work_total: u64) -> Progress {
        let bar = std::io::stderr().is_terminal().then(|| {
            let bar = ProgressBar::with_draw_target(Some(work_total), ProgressDrawTarget::stderr());
            let style = ProgressStyle::with_template(
                "{prefix} [{bar:30}] {bytes}/{total_bytes} {binary_bytes_per_sec} ETA {eta} {msg}",
            )
            .unwrap_or_else(|_| ProgressStyle::default_bar())
            .progress_chars("=> ");
            bar.set_style(style);
            bar.set_prefix(what.to_string());
            bar
        });
        Progress {
            what: what.to_string(),
            files_total,
            work_total,
            files_done: AtomicU64::new(0),
            bytes_copied: AtomicU64::new(0),
            bytes_verified: AtomicU64::new(0),
            started: Instant::now(),
            bar,
            finished: Mutex::new(false),
            wake: Condvar::new(),
            stop: AtomicBool::new(false),
        }
    }

    pub fn copied(&self, bytes: u64) {
        self.bytes_copied.fetch_add(bytes, Ordering::Relaxed);
        self.moved(bytes);
    }

    pub fn verified(&self, bytes: u64) {
        self.bytes_verified.fetch_add(bytes, Ordering::Relaxed);
        self.moved(bytes);
    }

    pub fn file_done(&self) {
        self.files_done.fetch_add(1, Ordering::Relaxed);
    }

    fn moved(&self, bytes: u64) {
        if let Some(bar) = &self.bar {
            bar.inc(bytes);
        }
    }

    fn work_done(&self) -> u64 {
        self.bytes_copied.load(Ordering::Relaxed) + self.bytes_verified.load(Ordering::Relaxed)
    }

    /// The plain line: files, bytes copied and verified, the copy rate
    /// (as the summary gives it), ETA (of copying and reading back).
    pub fn line(&self) -> String {
        let seconds = self.started.elapsed().as_secs_f64().max(1e-3);
        let copied = self.bytes_copied.load(Ordering::Relaxed);
        let done = self.work_done();
        let rate = done as f64 / seconds;
        let eta = match rate > 0.0 && done < self.work_total {
            true => format!(", ETA {:.0} s", (self.work_total - done) as f64 / rate),
            false => String::new(),
        };
        format!(
            "{}: {}/{} files, {:.1} MiB copied, {:.1} MiB verified, {:.1} MiB/s copied{eta}",
            self.what,
            self.files_done.load(Ordering::Relaxed),
            self.files_total,
            copied as f64 / 1048576.0,
            self.bytes_verified.load(Ordering::Relaxed) as f64 / 1048576.0,
            copied as f64 / seconds / 1048576.0
        )
    }

    /// Shows progress until [`Progress::stop`]: redraws the bar's file
    /// count, or prints a plain line every `every`.
    pub fn report_until_stopped(&self, every: Duration) {
        let tick = match self.bar {
            Some(_) => Duration::from_millis(200),
            None => every,
        };
        let mut finished = self.finished.lock().unwrap_or_else(|p| p.into_inner());
        loop {
            // Asked before each wait: a stage with nothing to do may stop
            // before this thread first waits, and that wake-up is gone.
            if *finished || self.stop.load(Ordering::Relaxed) {
                break;
            }
            let (guard, _) = self
                .wake
                .wait_timeout(finished, tick)
                .unwrap_or_else(|p| p.into_inner());
            finished = guard;
            if *finished || self.stop.load(Ordering::Relaxed) {
                break;
            }
            match &self.bar {
                Some(bar) => bar.set_message(format!(
                    "{}/{} files",
                    self.files_done.load(Ordering::Relaxed),
                    self.files_total
                )),
                None => eprintln!("{}", self.line()),
            }
        }
    }

    /// Ends the reporting; the bar leaves the screen (the summary follows).
    pub fn stop(&self) {
        self.stop.store(true, Ordering::Relaxed);
        *self.finished.lock().unwrap_or_else(|p| p.into_inner()) = true;
        self.wake.notify_all();
        if let Some(bar) = &self.bar {
            bar.finish_and_clear();
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    /// A stage with nothing to copy stops before its reporter waits: the
    /// reporter returns at once, not after its first period (a resumed
    /// stage-out with every file in the journal took 10 s).
    #[test]
    fn a_stop_before_the_first_wait_ends_reporting_at_once() {
        let progress = Progress::new("stage-out", 0, 0);
        progress.stop();
        let started = std::time::Instant::now();
        progress.report_until_stopped(Duration::from_secs(10));
        assert!(
            started.elapsed() < Duration::from_secs(2),
            "{:?}",
            started.elapsed()
        );
    }
}
