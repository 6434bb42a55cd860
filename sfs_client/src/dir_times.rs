//! A directory's mtime and ctime advance when an entry is added to it or
//! removed from it (create, mkdir, symlink, mknod, link, unlink, rmdir,
//! rename).
//!
//! A directory's entry usually lives on another server than the entries
//! in it, so updating its times costs a round trip of its own. Sending one
//! per create would add a call to every create of mdtest; instead the
//! client gathers the directories it changed and sends their updates
//! together (a `GrowSize` to 0 on each: mtime and ctime become the
//! server's time, the size of a directory does not change):
//!
//! - before a program of this client reads the attributes of a waiting
//!   directory (stat, lstat, fstat of it), so it always sees the new
//!   times;
//! - once the oldest waiting update is [`WINDOW`] old, at the next call
//!   that changes an entry or stats one, or when more than
//!   [`MOST_WAITING`] directories wait;
//! - at the end: when the [`Client`] is dropped, and at the exit of a
//!   program under the shim.
//!
//! Other clients therefore see a directory's new times up to [`WINDOW`]
//! later while the client keeps working, and a client that goes quiet
//! sends them at its next call or its exit; a process killed before
//! leaves them unchanged (docs/semantics.md, "Times").

use crate::Client;
use sfs_global::path::split_parent;
use sfs_rpc::pb;
use std::collections::HashSet;
use std::sync::Mutex;
use std::time::{Duration, Instant};

/// How long a directory's time update may wait for others to go with it.
pub const WINDOW: Duration = Duration::from_millis(50);

/// The most directories waiting at once: one more sends them all.
pub const MOST_WAITING: usize = 64;

/// The directories whose times wait to be sent.
#[derive(Default)]
pub(crate) struct DirTimes {
    waiting: Mutex<Waiting>,
}

#[derive(Default)]
struct Waiting {
    dirs: HashSet<String>,
    since: Option<Instant>,
}

impl Waiting {
    fn take(&mut self) -> Vec<String> {
        self.since = None;
        self.dirs.drain().collect()
    }

    fn due(&self) -> bool {
        self.since.is_some_and(|t| t.elapsed() >= WINDOW) || self.dirs.len() > MOST_WAITING
    }
}

impl Client {
    /// An entry was added to or removed at `path`: its directory's times
    /// advance (soon: see the module documentation).
    pub(crate) async fn changed_in_parent_of(&self, path: &str) {
        let Some((dir, _)) = split_parent(path) else {
            return;
        };
        let due = {
            let mut waiting = self.dir_times.waiting.lock().expect("dir times");
            if !waiting.dirs.contains(dir) {
                waiting.dirs.insert(dir.to_string());
            }
            waiting.since.get_or_insert_with(Instant::now);
            waiting.due().then(|| waiting.take())
        };
        if let Some(dirs) = due {
            self.send_dir_times(dirs).await;
        }
    }

    /// Whether an update of `path`'s times waits.
    pub(crate) fn dir_times_wait_for(&self, path: &str) -> bool {
        let waiting = self.dir_times.waiting.lock().expect("dir times");
        waiting.dirs.contains(path)
    }

    /// Before a program reads the attributes of `path` (stat, lstat,
    /// fstat; not the client's own look-ups of parents, which would cost
    /// every create a call): a waiting update of its times goes first,
    /// and every waiting one once they are due.
    pub(crate) async fn settle_dir_times(&self, path: &str) {
        let send = {
            let mut waiting = self.dir_times.waiting.lock().expect("dir times");
            if waiting.dirs.is_empty() {
                return;
            }
            if waiting.due() {
                waiting.take()
            } else if waiting.dirs.remove(path) {
                if waiting.dirs.is_empty() {
                    waiting.since = None;
                }
                vec![path.to_string()]
            } else {
                return;
            }
        };
        self.send_dir_times(send).await;
    }

    /// Sends every waiting update of a directory's times now (what a
    /// program's exit and the client's drop do).
    pub fn flush_dir_times(&self) {
        let dirs = self.dir_times.waiting.lock().expect("dir times").take();
        if !dirs.is_empty() {
            self.block_on(self.send_dir_times(dirs));
        }
    }

    /// Drops the waiting updates (a forked child: they are its parent's).
    pub(crate) fn forget_dir_times(&self) {
        self.dir_times.waiting.lock().expect("dir times").take();
    }

    async fn send_dir_times(&self, dirs: Vec<String>) {
        let sends = dirs.iter().map(|dir| async move {
            let request = pb::GrowSizeRequest {
                path: dir.clone(),
                end: 0,
                ..Default::default()
            };
            self.owner(dir).await?.rpc.grow_size(request).await
        });
        for (dir, sent) in dirs.iter().zip(futures::future::join_all(sends).await) {
            // A directory removed or renamed meanwhile has no times to set.
            if let Err(e) = sent {
                tracing::debug!("{dir}: times not updated: {e}");
            }
        }
    }
}
