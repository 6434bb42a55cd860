//! Tiering: the chunk store as a write-back cache in front of the object
//! back end.
//!
//! [`TieredStore`] wraps the [`ChunkStore`] and is what the data transports
//! and services talk to. It keeps, per server:
//!
//! - **Dirty chunks**: every chunk written since it was last written back,
//!   with a generation number bumped by each write. A write-back copies a
//!   chunk and then marks it clean only if no write came in meanwhile (same
//!   generation), so a write racing the copy is never lost. The journal
//!   ([`journal`]) remembers which files are dirty across a crash; after a
//!   restart all chunks of such a file are written back again.
//! - **Files in the back end**: once a file's object exists, a chunk of it
//!   that is not here was evicted (or is a hole) and is read back from the
//!   object — on a read, and before a partial write into it (a whole-chunk
//!   write needs nothing back). A fetched chunk is put in place whole, under
//!   the chunk's lock, so concurrent misses of one chunk fetch it once.
//! - **Sources** (cache mode): a file taken in from the backing directory
//!   reads a chunk that is not here, below the source's length, from the
//!   backing file — unless the chunk was written in SFS (recorded per chunk,
//!   durably before it can be evicted), which comes from the object. So a
//!   chunk only read is dropped without a write-back, and a written one is
//!   evicted as any other once written back.
//! - **Recency**: a clock tick per chunk read or written (the chunks found
//!   at start ticked first), kept ordered, so eviction walks from the least
//!   recently used chunk without listing the store.
//!
//! The write-back loop ([`writeback`]) runs on a small runtime of its own
//! (the back end's work never competes with the data path's threads) and
//! writes back files by policy (`backend.writeback`), writes back
//! everything and evicts clean chunks when the store passes its high
//! watermark, and wakes writers that wait for room (back-pressure: a write
//! to a full store waits up to `backend.space_wait_ms` before ENOSPC).
//!
//! Truncate and unlink follow into the back end. They exclude the write-back
//! of the same file (a per-file gate), and a fetch checks a per-file
//! truncation epoch before it puts a chunk in place, so neither can bring
//! back bytes that a truncate cut.

pub mod journal;
pub mod writeback;

use crate::backend::ObjectBackend;
use crate::chunk_store::ChunkStore;
use journal::{Journal, Record};
use sfs_global::chunk::truncation_point;
use sfs_global::config::{BackendConfig, WritebackPolicy};
use sfs_global::holdings::Held;
use sfs_global::{Errno, FileId, SfsError, SfsResult};
use sfs_rdma::{ChunkHandler, ChunkRef};
use std::collections::{BTreeMap, HashMap, HashSet};
use std::future::Future;
use std::path::{Path, PathBuf};
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{Arc, Condvar, Mutex, MutexGuard};
use std::time::{Duration, Instant};

/// A chunk written since its last write-back.
#[derive(Clone, Copy, Debug)]
struct DirtyChunk {
    /// Bumped by every write; the write-back marks clean only its own.
    generation: u64,
    /// The chunk's length after the write (for the dirty-bytes figure).
    end: u64,
}

#[derive(Debug)]
struct DirtyFile {
    chunks: HashMap<u64, DirtyChunk>,
    last_write: Instant,
    /// A client closed it after writing, and nothing was written since
    /// (the `close` policy writes it back).
    closed: bool,
}

#[derive(Default)]
struct State {
    clock: u64,
    dirty: HashMap<FileId, DirtyFile>,
    in_backend: HashSet<FileId>,
    /// Last access tick of every chunk held here (kept only when the
    /// store has a capacity, i.e. evicts): chunks found at start are
    /// ticked first, in the order found, then every read and write ticks.
    access: HashMap<FileId, HashMap<u64, u64>>,
    /// The same ticks ordered, oldest first: eviction's order, so a round
    /// walks from the least recently used chunk instead of listing the
    /// store's directories.
    lru: BTreeMap<u64, (FileId, u64)>,
    /// Files being written back, truncated or removed (one at a time).
    gate: HashSet<FileId>,
    /// Threads waiting in [`TieredStore::enter_gate`] for a gate to open:
    /// a gate that opens with none (and no writer waiting for room) skips
    /// the wake-up, a system call on every unlink and truncate otherwise.
    gate_waiters: usize,
    /// Per-file truncation epoch: odd while a truncate runs.
    epochs: HashMap<FileId, u64>,
    /// When a file whose write-back failed may be tried again, and the
    /// back-off that got it there.
    retry: HashMap<FileId, (Instant, Duration)>,
    /// Cache mode: files whose bytes below a length come from a file of
    /// the backing directory when no chunk here (nor the object) has them
    /// ([`TieredStore::set_source`]); kept in the chunk store too.
    sources: HashMap<FileId, (PathBuf, u64)>,
    /// Cache mode: the smallest size a file without a known source was
    /// truncated to here, so that a `SetSource` arriving after the
    /// truncate (another client opened the file just before) cannot count
    /// source bytes past the cut. Kept in memory, only with a backing
    /// directory, until the file is removed.
    cuts: HashMap<FileId, u64>,
    /// Cache mode: the chunks of files with a source that were written in
    /// SFS (below the source's length): once evicted they come from the
    /// object, not from the source. Kept in the chunk store too
    /// ([`ChunkStore::add_written`]).
    written: HashMap<FileId, HashSet<u64>>,
    /// Files with records in `written` not yet synced: a write-back syncs
    /// them before it marks any chunk of the file clean (evictable).
    written_unsynced: HashSet<FileId>,
    /// Chunks read ahead (being fetched, or fetched and not read yet): a
    /// read of one moves the window on ([`TieredStore::read_ahead`]).
    ahead: HashSet<(FileId, u64)>,
    /// The size of a file's object as a read-ahead last asked the back end
    /// (bounds the window; forgotten when a write-back, truncate or removal
    /// changes the object).
    object_sizes: HashMap<FileId, u64>,
    /// Counts the times a remembered object size was forgotten: a
    /// read-ahead that asked the back end before one keeps no answer.
    size_changes: u64,
}

impl State {
    fn tick(&mut self) -> u64 {
        self.clock += 1;
        self.clock
    }

    fn touch(&mut self, id: FileId, index: u64) {
        let tick = self.tick();
        if let Some(old) = self.access.entry(id).or_default().insert(index, tick) {
            self.lru.remove(&old);
        }
        self.lru.insert(tick, (id, index));
    }

    /// Whether chunk `index` of `id`, when not here, comes from the file's
    /// source: below the source's length and never written in SFS.
    fn in_source(&self, id: FileId, index: u64, chunk_size: u64) -> bool {
        self.sources
            .get(&id)
            .is_some_and(|(_, len)| index.saturating_mul(chunk_size) < *len)
            && !self.written.get(&id).is_some_and(|w| w.contains(&index))
    }

    /// Whether chunk `(id, index)` may be dropped here: not dirty, its file
    /// not behind its gate, and its bytes elsewhere — in the file's object,
    /// or (never written in SFS) in its source.
    fn evictable(&self, id: FileId, index: u64, chunk_size: u64) -> bool {
        !self.gate.contains(&id)
            && !self
                .dirty
                .get(&id)
                .is_some_and(|f| f.chunks.contains_key(&index))
            && (self.in_backend.contains(&id) || self.in_source(id, index, chunk_size))
    }

    /// Drops the recency of chunk `(id, index)` (evicted, cut, gone), and
    /// its read-ahead mark.
    fn forget(&mut self, id: FileId, index: u64) {
        self.ahead.remove(&(id, index));
        if let Some(chunks) = self.access.get_mut(&id) {
            if let Some(tick) = chunks.remove(&index) {
                self.lru.remove(&tick);
            }
            if chunks.is_empty() {
                self.access.remove(&id);
            }
        }
    }

    /// Forgets the size of `id`'s object a read-ahead remembered (the
    /// object changed), also one being asked for right now.
    fn forget_object_size(&mut self, id: FileId) {
        self.object_sizes.remove(&id);
        self.size_changes += 1;
    }

    /// Drops the recency and the read-ahead marks of every chunk of `id`
    /// with an index of at least `from`, and the object size a read-ahead
    /// remembered (the file was cut or removed).
    fn forget_from(&mut self, id: FileId, from: u64) {
        if !self.ahead.is_empty() {
            self.ahead.retain(|&(f, i)| f != id || i < from);
        }
        self.forget_object_size(id);
        let cut: Vec<u64> = self
            .access
            .get(&id)
            .map(|chunks| chunks.keys().copied().filter(|&i| i >= from).collect())
            .unwrap_or_default();
        for index in cut {
            self.forget(id, index);
        }
    }
}

/// Counters for `sfs status`.
#[derive(Default)]
pub struct TierCounters {
    pub written_back_bytes: AtomicU64,
    pub evicted_bytes: AtomicU64,
    pub fetched_bytes: AtomicU64,
    /// Cache mode: bytes read in from files of the backing directory.
    pub sourced_bytes: AtomicU64,
    pub writeback_errors: AtomicU64,
    /// Bytes written by clients since start (the I/O-aware policy's gauge).
    pub intake_bytes: AtomicU64,
}

/// A snapshot for `sfs status`.
#[derive(Clone, Debug, Default)]
pub struct TierStatus {
    pub policy: String,
    pub dirty_files: u64,
    pub dirty_bytes: u64,
    pub written_back_bytes: u64,
    pub evicted_bytes: u64,
    pub fetched_bytes: u64,
    pub sourced_bytes: u64,
    pub writeback_errors: u64,
    /// The last back-end error, empty when the last write-back succeeded.
    pub backend_error: String,
    /// Bytes written back per second over the last [`RATE_WINDOW`].
    pub writeback_bytes_per_s: u64,
}

/// The window of the write-back rate `sfs status` shows.
pub const RATE_WINDOW: Duration = Duration::from_secs(10);

/// The chunk store with write-back to, eviction to, and read-through from
/// the object back end. See the module documentation.
pub struct TieredStore {
    store: Arc<ChunkStore>,
    backend: Arc<dyn ObjectBackend>,
    settings: BackendConfig,
    runtime: Option<tokio::runtime::Runtime>,
    /// The threads of the write-back the loop starts on its own, at
    /// `backend.writeback_nice` (none when that is 0 or the policy is
    /// `explicit`: the runtime above).
    background: Option<tokio::runtime::Runtime>,
    state: Mutex<State>,
    /// Signalled when room was made or a gate opened.
    changed: Condvar,
    journal: Mutex<Journal>,
    /// Wakes the write-back loop (a full store, a stop).
    wake: Arc<tokio::sync::Notify>,
    stopping: std::sync::atomic::AtomicBool,
    /// Writers waiting in [`TieredStore::wait_for_room`].
    waiting_for_room: std::sync::atomic::AtomicUsize,
    pub counters: TierCounters,
    last_error: Mutex<String>,
    /// `(when, written_back_bytes)` once a second over [`RATE_WINDOW`].
    rate_samples: Mutex<std::collections::VecDeque<(Instant, u64)>>,
    /// Chunk-sized buffers the write-back reads chunks into and hands to
    /// the back end (reused: no zeroed allocation per chunk).
    buffers: Arc<sfs_rdma::buffers::BufferPool>,
    /// This store, for work it hands to its runtime (read-ahead).
    me: std::sync::Weak<TieredStore>,
    /// Which chunks are this server's ([`TieredStore::set_placement`]):
    /// read-ahead fetches only those.
    placement: std::sync::OnceLock<(sfs_global::distributor::Distributor, usize)>,
    /// The server has a backing directory: truncates of files without a
    /// source are remembered ([`TieredStore::set_cache_mode`]).
    cache_mode: std::sync::atomic::AtomicBool,
    /// Set once anything was read ahead: until then a read of a chunk held
    /// here does not look for a read-ahead mark.
    read_ahead_used: std::sync::atomic::AtomicBool,
    /// Read-aheads started and not yet done.
    read_aheads: std::sync::atomic::AtomicUsize,
}

/// Chunks that a read of one not held here also brings in, in the
/// background: the next ones this server owns of the same file, from its
/// object or (cache mode) its source. A read of a chunk brought in so moves
/// the window on by one, so a sequential reader finds its chunks here
/// instead of waiting for each one's fetch.
const READ_AHEAD: usize = 4;

/// The runtime of the write-back that runs by policy, its threads (workers
/// and blocking ones alike) `nice` steps below the server's priority (at
/// most nice 19); none for 0. Linux keeps a nice value per thread, so the
/// data path's threads are not touched, and a thread cannot take a lower
/// value back without `CAP_SYS_NICE`: hence threads of their own rather
/// than a priority changed per task.
fn background_runtime(nice: u8) -> SfsResult<Option<tokio::runtime::Runtime>> {
    if nice == 0 {
        return Ok(None);
    }
    // `None`: the calling thread (Linux's `getpriority`/`setpriority` with
    // PRIO_PROCESS and 0 act on the caller's thread only). The value is
    // fixed here, from the server's thread: a blocking thread is started
    // by a worker of this runtime and inherits its value, so adding to
    // what a new thread has would lower it once more.
    let own = rustix::process::getpriority_process(None)
        .map_err(|e| SfsError::io(format!("tier: cannot read the server's priority: {e}")))?;
    let target = (own + i32::from(nice)).min(19);
    tokio::runtime::Builder::new_multi_thread()
        .worker_threads(1)
        .thread_name("sfs-writeback")
        .on_thread_start(move || {
            if let Err(e) = rustix::process::setpriority_process(None, target) {
                tracing::warn!("tier: cannot lower a write-back thread's priority: {e}");
            }
        })
        .enable_all()
        .build()
        .map(Some)
        .map_err(|e| SfsError::io(format!("tier: cannot start its write-back runtime: {e}")))
}

/// Runs `f` when dropped.
struct OnDrop<F: FnMut()>(F);

impl<F: FnMut()> Drop for OnDrop<F> {
    fn drop(&mut self) {
        (self.0)()
    }
}

fn scopeguard<F: FnMut()>(f: F) -> OnDrop<F> {
    OnDrop(f)
}

fn lock<T>(m: &Mutex<T>) -> MutexGuard<'_, T> {
    m.lock().unwrap_or_else(|poisoned| poisoned.into_inner())
}

impl TieredStore {
    /// Opens the tier over `store`: replays the journal at `journal_path`
    /// (every chunk of a file it lists as dirty is dirty again) and starts
    /// the write-back loop.
    pub fn open(
        store: Arc<ChunkStore>,
        backend: Arc<dyn ObjectBackend>,
        settings: BackendConfig,
        journal_path: &Path,
    ) -> SfsResult<Arc<TieredStore>> {
        let (journal, replayed) = Journal::open(journal_path)?;
        let runtime = tokio::runtime::Builder::new_multi_thread()
            .worker_threads(2)
            .thread_name("sfs-tier")
            .enable_all()
            .build()
            .map_err(|e| SfsError::io(format!("tier: cannot start its runtime: {e}")))?;
        // Under `explicit` the loop writes back only under pressure, at the
        // server's priority: no threads of its own.
        let background = match settings.writeback {
            WritebackPolicy::Explicit => None,
            _ => background_runtime(settings.writeback_nice)?,
        };
        let mut state = State {
            in_backend: replayed.in_backend,
            sources: store
                .sources()?
                .into_iter()
                .map(|(id, source, len)| (id, (source, len)))
                .collect(),
            ..State::default()
        };
        let long_ago = Instant::now()
            .checked_sub(Duration::from_millis(settings.idle_ms))
            .unwrap_or_else(Instant::now);
        for id in state.sources.keys().copied().collect::<Vec<_>>() {
            let written: HashSet<u64> = store.written(id)?.into_iter().collect();
            if !written.is_empty() {
                state.written.insert(id, written);
            }
        }
        let mut resumed = 0;
        for id in replayed.dirty {
            let mut chunks = HashMap::new();
            for index in store.chunk_indexes(id)? {
                if state.in_source(id, index, store.chunk_size()) {
                    // Perhaps written before the crash, its record lost with
                    // it: what is here is the file's, so once written back
                    // it is read from the object.
                    store.add_written(id, index)?;
                    state.written.entry(id).or_default().insert(index);
                    state.written_unsynced.insert(id);
                }
                let generation = state.tick();
                let end = store.chunk_len(id, index).unwrap_or(0);
                chunks.insert(index, DirtyChunk { generation, end });
            }
            resumed += chunks.len();
            state.dirty.insert(
                id,
                DirtyFile {
                    chunks,
                    last_write: long_ago,
                    closed: false,
                },
            );
        }
        if resumed > 0 {
            tracing::info!(
                "tier: {resumed} dirty chunks of {} files left by the last run are written back again",
                state.dirty.len()
            );
        }
        if store.capacity_limit() > 0 {
            // Every chunk left by the last run gets a tick, older than any
            // later read or write: one listing of the store, here, instead
            // of one per eviction round.
            for id in store.file_ids()? {
                for index in store.chunk_indexes(id)? {
                    state.touch(id, index);
                }
            }
        }
        let buffers = writeback::buffer_pool(store.chunk_size(), &settings);
        let tier = Arc::new_cyclic(|me| TieredStore {
            me: me.clone(),
            placement: std::sync::OnceLock::new(),
            cache_mode: std::sync::atomic::AtomicBool::new(false),
            read_ahead_used: std::sync::atomic::AtomicBool::new(false),
            read_aheads: std::sync::atomic::AtomicUsize::new(0),
            buffers,
            store,
            backend,
            settings,
            runtime: Some(runtime),
            background,
            state: Mutex::new(state),
            changed: Condvar::new(),
            journal: Mutex::new(journal),
            wake: Arc::new(tokio::sync::Notify::new()),
            stopping: std::sync::atomic::AtomicBool::new(false),
            waiting_for_room: std::sync::atomic::AtomicUsize::new(0),
            counters: TierCounters::default(),
            last_error: Mutex::new(String::new()),
            rate_samples: Mutex::new(std::collections::VecDeque::new()),
        });
        let (looping, wake) = (Arc::downgrade(&tier), tier.wake.clone());
        tier.rt()
            .spawn(async move { writeback::run(looping, wake).await });
        let sampled = Arc::downgrade(&tier);
        tier.rt().spawn(async move {
            // Its own task: a long write-back round does not stall it.
            let mut tick = tokio::time::interval(Duration::from_secs(1));
            loop {
                tick.tick().await;
                let Some(tier) = sampled.upgrade() else { break };
                tier.sample_rate();
            }
        });
        Ok(tier)
    }

    /// Says which chunks are this server's: server `index` of the
    /// placement `places` (once, at start).
    pub fn set_placement(&self, places: sfs_global::distributor::Distributor, index: usize) {
        let _ = self.placement.set((places, index));
    }

    /// Cache mode is on (the server has a `backing_dir`): files may get
    /// a source, so truncates of files without one are remembered.
    pub fn set_cache_mode(&self) {
        self.cache_mode.store(true, Ordering::Relaxed);
    }

    /// Brings in, in the background, those of the next [`READ_AHEAD`]
    /// chunks of `id` after `index` that this server owns, that the file's
    /// source or object has and that are neither here nor on their way.
    /// Not while the store needs room: that goes to writers and to the
    /// chunks being read.
    fn read_ahead(&self, id: FileId, index: u64) {
        let Some(tier) = self.me.upgrade() else {
            return;
        };
        if self.placement.get().is_none() || self.under_pressure() || self.stopping() {
            return;
        }
        self.read_aheads.fetch_add(1, Ordering::AcqRel);
        let counted = tier.clone();
        // Counted down however the task ends (run, panicked, or dropped
        // unrun by a runtime shutting down).
        let done = scopeguard(move || {
            counted.read_aheads.fetch_sub(1, Ordering::AcqRel);
        });
        self.rt().spawn_blocking(move || {
            let _done = done;
            tier.fetch_ahead(id, index);
        });
    }

    /// Whether no read-ahead is under way.
    #[cfg(test)]
    fn read_ahead_idle(&self) -> bool {
        self.read_aheads.load(Ordering::Acquire) == 0 && lock(&self.state).ahead.is_empty()
    }

    /// [`TieredStore::read_ahead`]'s work, on a blocking thread.
    fn fetch_ahead(&self, id: FileId, index: u64) {
        let Some((places, me)) = self.placement.get() else {
            return;
        };
        let Some(end) = self.read_ahead_end(id) else {
            return;
        };
        let todo: Vec<u64> = {
            let mut state = lock(&self.state);
            let next: Vec<u64> = (index + 1..end.min(index + 1 + 16 * READ_AHEAD as u64))
                .filter(|&i| places.chunk_server(id, i) == *me)
                .take(READ_AHEAD)
                .filter(|&i| !state.ahead.contains(&(id, i)))
                .collect();
            state.ahead.extend(next.iter().map(|&i| (id, i)));
            next
        };
        if !todo.is_empty() {
            self.read_ahead_used.store(true, Ordering::Relaxed);
        }
        for next in todo {
            let fetched = {
                let _guard = self.store.lock(id, next);
                if self.store.has_chunk(id, next) || self.stopping() {
                    false
                } else {
                    match self.fetch_locked(id, next, None) {
                        Ok(found) => found.is_some(),
                        Err(e) => {
                            tracing::debug!("read-ahead of chunk {next} of {id}: {e}");
                            false
                        }
                    }
                }
            };
            if !fetched {
                // Nothing to read ahead there: no mark to move on from.
                lock(&self.state).ahead.remove(&(id, next));
            }
        }
    }

    /// How many chunks the file `id` has that a read-ahead may bring in:
    /// its source's length in cache mode, else its object's size (asked of
    /// the back end once, then remembered until the object changes);
    /// `None` when neither exists.
    fn read_ahead_end(&self, id: FileId) -> Option<u64> {
        let chunk_size = self.store.chunk_size();
        let changes = {
            let state = lock(&self.state);
            if let Some((_, len)) = state.sources.get(&id) {
                return Some(len.div_ceil(chunk_size));
            }
            if !state.in_backend.contains(&id) {
                return None;
            }
            if let Some(size) = state.object_sizes.get(&id) {
                return Some(size.div_ceil(chunk_size));
            }
            state.size_changes
        };
        let backend = self.backend.clone();
        let size = match self.wait_for(async move { backend.stat(id).await }) {
            Ok(Some(stat)) => stat.size,
            Ok(None) => return None,
            Err(e) => {
                tracing::debug!("read-ahead: size of the object of {id}: {e}");
                return None;
            }
        };
        let mut state = lock(&self.state);
        // Not if the object changed or went meanwhile (that forgot the
        // size, or would have).
        if state.size_changes == changes && state.in_backend.contains(&id) {
            state.object_sizes.insert(id, size);
        }
        Some(size.div_ceil(chunk_size))
    }

    /// A read found chunk `(id, index)` here: if a read-ahead brought it
    /// in, the window moves on.
    fn read_ahead_hit(&self, id: FileId, index: u64) {
        if self.read_ahead_used.load(Ordering::Relaxed)
            && lock(&self.state).ahead.remove(&(id, index))
        {
            self.read_ahead(id, index);
        }
    }

    fn rt(&self) -> &tokio::runtime::Runtime {
        self.runtime.as_ref().expect("the runtime lives until drop")
    }

    /// Where a write-back the loop starts by policy runs: the niced
    /// runtime, if there is one.
    pub(crate) fn background(&self) -> Option<tokio::runtime::Handle> {
        self.background.as_ref().map(|rt| rt.handle().clone())
    }

    /// The chunk store underneath.
    pub fn store(&self) -> &Arc<ChunkStore> {
        &self.store
    }

    /// The object back end.
    pub fn backend(&self) -> &Arc<dyn ObjectBackend> {
        &self.backend
    }

    pub fn settings(&self) -> &BackendConfig {
        &self.settings
    }

    /// Runs back-end work on the tier's runtime and waits for it, from any
    /// thread (also a runtime's worker: the wait blocks only that thread).
    fn wait_for<T: Send + 'static>(
        &self,
        work: impl Future<Output = SfsResult<T>> + Send + 'static,
    ) -> SfsResult<T> {
        let (tx, rx) = std::sync::mpsc::sync_channel(1);
        self.rt().spawn(async move {
            let _ = tx.send(work.await);
        });
        rx.recv()
            .map_err(|_| SfsError::io("tier: the back-end runtime stopped"))?
    }

    /// Stops the write-back loop (the server is stopping).
    pub fn stop(&self) {
        self.stopping.store(true, Ordering::Release);
        self.wake.notify_one();
        self.changed.notify_all();
    }

    fn stopping(&self) -> bool {
        self.stopping.load(Ordering::Acquire)
    }

    fn journal(&self, record: Record, durable: bool) -> SfsResult<()> {
        let mut journal = lock(&self.journal);
        journal.append(record)?;
        if durable {
            journal.sync()?;
        }
        Ok(())
    }

    fn in_backend(&self, id: FileId) -> bool {
        lock(&self.state).in_backend.contains(&id)
    }

    /// Whether a chunk of `id` that is not here may be had from elsewhere:
    /// the file's object, or its source in cache mode.
    fn fetchable(&self, id: FileId) -> bool {
        let state = lock(&self.state);
        state.in_backend.contains(&id) || state.sources.contains_key(&id)
    }

    /// Cache mode: the bytes of `id` below `len` that neither a chunk here
    /// nor the file's object holds are read from `source` (a file of the
    /// backing directory) when first needed, by chunk. A file recorded
    /// already keeps its source, and the smaller length: a truncate since
    /// lowered it, and a later opener must not raise it again.
    pub fn set_source(&self, id: FileId, source: PathBuf, len: u64) -> SfsResult<()> {
        let mut state = lock(&self.state);
        let len = state.cuts.get(&id).map_or(len, |&cut| cut.min(len));
        let source = match state.sources.get(&id) {
            Some((_, known_len)) if *known_len <= len => return Ok(()),
            Some((known, _)) => known.clone(),
            None => source,
        };
        self.store.set_source(id, &source, len)?;
        state.sources.insert(id, (source, len));
        Ok(())
    }

    /// Whether the store needs room: past its high watermark, or a writer
    /// waits for room (a chunk's growth may not fit below the watermark).
    /// Never without a configured capacity.
    pub(crate) fn under_pressure(&self) -> bool {
        let cap = self.store.capacity_limit();
        cap > 0
            && (self.waiting_for_room.load(Ordering::Acquire) > 0
                || self.store.usage() > cap / 100 * u64::from(self.settings.high_watermark_percent))
    }

    /// The usage eviction brings the store down to.
    pub(crate) fn low_watermark_bytes(&self) -> u64 {
        self.store.capacity_limit() / 100 * u64::from(self.settings.low_watermark_percent)
    }

    /// Records that a write to `(id, index)` is about to happen (before the
    /// data: the journal never misses a dirty file) or has happened
    /// (`end` set: a new generation, so a write-back copying the old bytes
    /// does not mark it clean).
    fn mark_dirty(&self, id: FileId, index: u64, end: Option<u64>) -> SfsResult<()> {
        let mut state = lock(&self.state);
        let generation = state.tick();
        let new_file = !state.dirty.contains_key(&id);
        if new_file {
            // Under the state lock: a "C" of the same file cannot slip in
            // between this record and the map.
            self.journal(Record::Dirty(id), false)?;
        }
        if end.is_some() && state.in_source(id, index, self.store.chunk_size()) {
            // A chunk of a file with a source written for the first time:
            // recorded once the data is in place, still under the chunk's
            // lock and with the chunk dirty from here on, so an eviction
            // never drops it as one its source has. Not before the data: a
            // write that then fails (ENOSPC) would leave a chunk that counts
            // as written but is neither dirty nor in the object, and an
            // eviction followed by a fetch would read zeros for it. A crash
            // between the data and this record is covered by the journal's
            // Dirty record (written first): after it every chunk of the file
            // here counts as written.
            self.store.add_written(id, index)?;
            state.written.entry(id).or_default().insert(index);
            state.written_unsynced.insert(id);
        }
        let file = state.dirty.entry(id).or_insert_with(|| DirtyFile {
            chunks: HashMap::new(),
            last_write: Instant::now(),
            closed: false,
        });
        file.last_write = Instant::now();
        file.closed = false;
        if let Some(end) = end {
            let chunk = file
                .chunks
                .entry(index)
                .or_insert(DirtyChunk { generation, end });
            chunk.generation = generation;
            chunk.end = chunk.end.max(end);
        }
        if self.evicts() {
            state.touch(id, index);
        }
        Ok(())
    }

    /// Whether chunks may be evicted (a capacity is set): only then is
    /// recency worth a map entry per chunk.
    fn evicts(&self) -> bool {
        self.store.capacity_limit() > 0
    }

    /// Brings evicted chunk `(id, index)` back from the object, whole; the
    /// caller holds the chunk's lock. Returns the chunk's bytes as
    /// installed, or `None` when nothing came back (a hole in the object
    /// too is nothing). With `into` (exactly a chunk long: a read of the
    /// whole chunk) a chunk read on this thread — from the file's source or
    /// from a store of plain files — is read straight into it, and the
    /// answer is [`Fetched::Into`]: the bytes are there, not copied again.
    fn fetch_locked(
        &self,
        id: FileId,
        index: u64,
        mut into: Option<&mut [u8]>,
    ) -> SfsResult<Option<Fetched>> {
        let chunk_size = self.store.chunk_size();
        debug_assert!(into.as_ref().is_none_or(|b| b.len() as u64 == chunk_size));
        loop {
            // A chunk of a file with a source, below its length, never
            // written in SFS (a truncate lowers the length): the source has
            // its bytes, whatever the object holds there (a range of it
            // never written back reads as zeros). A written one that is not
            // here was written back and evicted: the object has it.
            let (epoch, object, source, from_source) = {
                let state = lock(&self.state);
                let object = state.in_backend.contains(&id);
                let source = state.sources.get(&id).cloned();
                if !object && source.is_none() {
                    return Ok(None);
                }
                let from_source = state.in_source(id, index, chunk_size);
                (
                    *state.epochs.get(&id).unwrap_or(&0),
                    object,
                    source,
                    from_source,
                )
            };
            if epoch % 2 == 1 {
                // A truncate of this file is running: wait for its end.
                std::thread::sleep(Duration::from_millis(2));
                continue;
            }
            let mut data = Fetched::Object(Vec::new());
            if object && !from_source {
                let offset = index * chunk_size;
                let mut pooled = None;
                let dest = match into.as_deref_mut() {
                    Some(dest) => dest,
                    None => &mut pooled.insert(self.buffers.take(chunk_size as usize))[..],
                };
                let read = self
                    .backend
                    .read_now(id, offset, dest)
                    .map(|read| match read {
                        Err(e) if e.errno == Errno::ENOENT => Ok(0),
                        other => other,
                    });
                data = match read {
                    // A store of plain files: read here, into the caller's
                    // buffer or a pooled one.
                    Some(read) => {
                        let n = read?;
                        match pooled {
                            Some(mut buf) => {
                                buf.truncate(n);
                                Fetched::Pooled(buf)
                            }
                            None => Fetched::Into {
                                len: n,
                                from_source: false,
                            },
                        }
                    }
                    None => {
                        let backend = self.backend.clone();
                        Fetched::Object(self.wait_for(async move {
                            match backend.read(id, offset, chunk_size as usize).await {
                                Err(e) if e.errno == Errno::ENOENT => Ok(Vec::new()),
                                other => other,
                            }
                        })?)
                    }
                };
            }
            if from_source {
                if let Some((source, len)) = &source {
                    data = match into.as_deref_mut() {
                        Some(dest) => Fetched::Into {
                            len: read_source_into(source, *len, index, dest)?,
                            from_source: true,
                        },
                        None => Fetched::Source(read_source(source, *len, index, &self.buffers)?),
                    };
                }
            }
            let bytes = data.bytes(into.as_deref());
            if bytes.is_empty() {
                return Ok(None);
            }
            loop {
                let mut state = lock(&self.state);
                if *state.epochs.get(&id).unwrap_or(&0) != epoch {
                    break; // a truncate ran meanwhile: read the object again
                }
                // Installed under the state lock: a truncate starting now
                // sees the chunk and cuts it.
                match self.store.install_locked(id, index, bytes) {
                    Ok(()) => {
                        if self.evicts() {
                            // Read-ahead's chunks too: all are evictable.
                            state.touch(id, index);
                        }
                        let counter = match data {
                            Fetched::Object(_)
                            | Fetched::Pooled(_)
                            | Fetched::Into {
                                from_source: false, ..
                            } => &self.counters.fetched_bytes,
                            Fetched::Source(_) | Fetched::Into { .. } => {
                                &self.counters.sourced_bytes
                            }
                        };
                        counter.fetch_add(bytes.len() as u64, Ordering::Relaxed);
                        return Ok(Some(data));
                    }
                    Err(e) if e.errno == Errno::ENOSPC => {
                        drop(state);
                        self.wait_for_room(bytes.len() as u64, &e)?;
                    }
                    Err(e) => return Err(e),
                }
            }
        }
    }

    /// Back-pressure: waits until write-back and eviction made room for
    /// `bytes`, or fails with `full` after `space_wait_ms`.
    fn wait_for_room(&self, bytes: u64, full: &SfsError) -> SfsResult<()> {
        let cap = self.store.capacity_limit();
        if cap == 0 || bytes > cap {
            // No configured capacity: the device itself is full, and
            // eviction cannot know what room it needs.
            return Err(full.clone());
        }
        let deadline = Instant::now() + Duration::from_millis(self.settings.space_wait_ms);
        self.waiting_for_room.fetch_add(1, Ordering::AcqRel);
        let _waiting = scopeguard(|| {
            self.waiting_for_room.fetch_sub(1, Ordering::AcqRel);
        });
        let mut state = lock(&self.state);
        loop {
            if self.store.usage() + bytes <= cap {
                return Ok(());
            }
            let now = Instant::now();
            if now >= deadline || self.stopping() {
                let why = lock(&self.last_error).clone();
                return Err(SfsError::no_space(format!(
                    "{}; write-back and eviction made no room in {} ms{}",
                    full.message,
                    self.settings.space_wait_ms,
                    if why.is_empty() {
                        String::new()
                    } else {
                        format!(" (back end: {why})")
                    }
                )));
            }
            self.wake.notify_one();
            state = self
                .changed
                .wait_timeout(state, (deadline - now).min(Duration::from_millis(50)))
                .unwrap_or_else(|p| p.into_inner())
                .0;
        }
    }

    /// Enters the gate of `id` from a blocking thread (truncate, unlink).
    fn enter_gate(&self, id: FileId) -> Gate<'_> {
        let mut state = lock(&self.state);
        while state.gate.contains(&id) {
            state.gate_waiters += 1;
            state = self.changed.wait(state).unwrap_or_else(|p| p.into_inner());
            state.gate_waiters -= 1;
        }
        state.gate.insert(id);
        Gate { tier: self, id }
    }

    /// Enters the gate of `id` from the write-back loop.
    async fn enter_gate_async(&self, id: FileId) -> Gate<'_> {
        loop {
            {
                let mut state = lock(&self.state);
                if state.gate.insert(id) {
                    return Gate { tier: self, id };
                }
            }
            tokio::time::sleep(Duration::from_millis(2)).await;
        }
    }

    /// Removes every chunk of `id` here and, if this server wrote any of it
    /// back, its object.
    pub fn remove_chunks(&self, id: FileId) -> SfsResult<()> {
        let _gate = self.enter_gate(id);
        self.store.remove_chunks(id)?;
        let had_object = {
            let mut state = lock(&self.state);
            let was_dirty = state.dirty.remove(&id).is_some();
            let had_object = state.in_backend.remove(&id);
            state.sources.remove(&id);
            state.cuts.remove(&id);
            state.written.remove(&id);
            state.written_unsynced.remove(&id);
            state.forget_from(id, 0);
            state.epochs.remove(&id);
            state.retry.remove(&id);
            if was_dirty || had_object {
                self.journal(Record::Gone(id), false)?;
            }
            had_object
        };
        if had_object {
            let backend = self.backend.clone();
            self.wait_for(async move { backend.delete(id).await })?;
        }
        Ok(())
    }

    /// Cuts the file to `size` here and in its object.
    pub fn truncate_chunks(&self, id: FileId, size: u64) -> SfsResult<()> {
        let _gate = self.enter_gate(id);
        let had_object = {
            let mut state = lock(&self.state);
            *state.epochs.entry(id).or_insert(0) += 1;
            state.in_backend.contains(&id)
        };
        let result = (|| {
            self.store.truncate_chunks(id, size)?;
            {
                // The source's bytes past the cut are not the file's any
                // more, also once it grows again.
                let mut state = lock(&self.state);
                if let Some((source, len)) = state.sources.get_mut(&id) {
                    if *len > size {
                        *len = size;
                        self.store.set_source(id, source, size)?;
                    }
                } else if self.cache_mode.load(Ordering::Relaxed) {
                    let cut = state.cuts.entry(id).or_insert(size);
                    *cut = (*cut).min(size);
                }
            }
            let (first_removed, _) = truncation_point(size, self.store.chunk_size());
            {
                let mut state = lock(&self.state);
                if let Some(file) = state.dirty.get_mut(&id) {
                    file.chunks.retain(|&index, _| index < first_removed);
                }
                state.forget_from(id, first_removed);
            }
            if had_object {
                let backend = self.backend.clone();
                self.wait_for(async move { backend.truncate(id, size).await })?;
            }
            Ok(())
        })();
        let mut state = lock(&self.state);
        *state.epochs.entry(id).or_insert(0) += 1;
        // Again after the object was cut: a read-ahead that asked its size
        // between the forgetting above and the cut keeps no old size.
        state.forget_object_size(id);
        drop(state);
        result
    }

    /// Makes the chunks of `id` here durable on this server's device, with
    /// the journal that says they are dirty.
    pub fn sync_chunks(&self, id: FileId) -> SfsResult<()> {
        self.store.sync_chunks(id)?;
        // Every server gets the fsync of every file: only one that holds
        // dirty chunks of it has a record to make durable.
        if lock(&self.state).dirty.contains_key(&id) {
            lock(&self.journal).sync()?;
        }
        Ok(())
    }

    /// Writes back every chunk of `id` held here (not only the dirty ones:
    /// an explicit flush), or those with an index in `chunks`, and waits
    /// until the back end holds them.
    pub async fn flush_file(
        self: &Arc<Self>,
        id: FileId,
        chunks: Option<std::ops::Range<u64>>,
    ) -> SfsResult<writeback::Flushed> {
        let tier = self.clone();
        let which = match chunks {
            None => writeback::Which::All,
            Some(range) => writeback::Which::Range(range),
        };
        let run = async move { writeback::write_back(&tier, id, which).await };
        self.rt()
            .spawn(run)
            .await
            .map_err(|e| SfsError::io(format!("tier: write-back task failed: {e}")))?
    }

    /// A client closed `id` after writing it: under the `close` policy the
    /// write-back loop takes it at its next round (nothing here if this
    /// server holds no dirty chunk of it).
    pub fn closed_after_writing(&self, id: FileId) {
        if let Some(file) = lock(&self.state).dirty.get_mut(&id) {
            file.closed = true;
            if self.settings.writeback == WritebackPolicy::Close {
                self.wake.notify_one();
            }
        }
    }

    /// Writes back every file dirty here now (a checkpoint), up to
    /// `flush_files_in_flight` at once, and waits for all of them. A write
    /// that lands meanwhile may leave its file dirty again; the first
    /// failure is returned (after every file was tried).
    pub async fn write_back_all(self: &Arc<Self>) -> SfsResult<writeback::Flushed> {
        use futures::StreamExt;
        let due: Vec<FileId> = lock(&self.state).dirty.keys().copied().collect();
        let tier = self.clone();
        let run = async move {
            let in_flight = tier.settings.flush_files_in_flight.max(1) as usize;
            let results: Vec<_> = futures::stream::iter(due)
                .map(|id| {
                    let tier = tier.clone();
                    async move { writeback::write_back(&tier, id, writeback::Which::Dirty).await }
                })
                .buffer_unordered(in_flight)
                .collect()
                .await;
            let mut total = writeback::Flushed::default();
            for result in results {
                let flushed = result?;
                total.chunks += flushed.chunks;
                total.bytes += flushed.bytes;
            }
            Ok(total)
        };
        self.rt()
            .spawn(run)
            .await
            .map_err(|e| SfsError::io(format!("tier: write-back task failed: {e}")))?
    }

    /// Records that the back end holds objects for `ids` (files restored
    /// from a checkpoint: any chunk of them that is not here is read from
    /// there), durably, in one journal append.
    pub fn adopt_backend_files(&self, ids: &[FileId]) -> SfsResult<()> {
        let mut state = lock(&self.state);
        let mut journal = lock(&self.journal);
        journal.append_all(ids.iter().map(|&id| Record::InBackend(id)))?;
        journal.sync()?;
        state.in_backend.extend(ids.iter().copied());
        Ok(())
    }

    /// A page of what this server holds, for `sfs fsck`: the files it has
    /// chunks of or records as in the back end, in id order after `after`,
    /// at most `limit`, and whether more follow.
    pub fn holdings(&self, after: Option<FileId>, limit: usize) -> SfsResult<(Vec<Held>, bool)> {
        let mut ids: Vec<FileId> = self.store.file_ids()?;
        ids.extend(lock(&self.state).in_backend.iter().copied());
        ids.sort_unstable();
        ids.dedup();
        let start = after.map_or(0, |a| ids.partition_point(|&id| id <= a));
        let page = &ids[start..ids.len().min(start.saturating_add(limit))];
        let mut held = Vec::with_capacity(page.len());
        for &id in page {
            held.push(Held {
                id,
                chunks: self.store.chunk_indexes(id)?.len() as u64,
                in_backend: self.in_backend(id),
            });
        }
        Ok((held, start + page.len() < ids.len()))
    }

    fn sample_rate(&self) {
        let now = Instant::now();
        let bytes = self.counters.written_back_bytes.load(Ordering::Relaxed);
        let mut samples = lock(&self.rate_samples);
        samples.push_back((now, bytes));
        while samples
            .front()
            .is_some_and(|(at, _)| now.duration_since(*at) > RATE_WINDOW)
        {
            samples.pop_front();
        }
    }

    /// Bytes written back per second between the oldest and the newest
    /// sample (0 before two samples exist).
    fn writeback_rate(&self) -> u64 {
        let samples = lock(&self.rate_samples);
        match (samples.front(), samples.back()) {
            (Some((t0, b0)), Some((t1, b1))) if t1 > t0 => {
                ((b1 - b0) as f64 / t1.duration_since(*t0).as_secs_f64()) as u64
            }
            _ => 0,
        }
    }

    /// Figures for `sfs status`.
    pub fn status(&self) -> TierStatus {
        let (dirty_files, dirty_bytes) = {
            let state = lock(&self.state);
            let bytes = state
                .dirty
                .values()
                .flat_map(|f| f.chunks.values())
                .map(|c| c.end)
                .sum();
            (state.dirty.len() as u64, bytes)
        };
        let c = &self.counters;
        TierStatus {
            policy: match self.settings.writeback {
                WritebackPolicy::Explicit => "explicit",
                WritebackPolicy::Idle => "idle",
                WritebackPolicy::IoAware => "io-aware",
                WritebackPolicy::Close => "close",
            }
            .to_string(),
            dirty_files,
            dirty_bytes,
            written_back_bytes: c.written_back_bytes.load(Ordering::Relaxed),
            evicted_bytes: c.evicted_bytes.load(Ordering::Relaxed),
            fetched_bytes: c.fetched_bytes.load(Ordering::Relaxed),
            sourced_bytes: c.sourced_bytes.load(Ordering::Relaxed),
            writeback_errors: c.writeback_errors.load(Ordering::Relaxed),
            backend_error: lock(&self.last_error).clone(),
            writeback_bytes_per_s: self.writeback_rate(),
        }
    }

    /// Capacity, free space and usage of the chunk store underneath.
    pub fn capacity(&self) -> u64 {
        self.store.capacity()
    }

    pub fn free(&self) -> u64 {
        self.store.free()
    }

    pub fn usage(&self) -> u64 {
        self.store.usage()
    }
}

impl Drop for TieredStore {
    fn drop(&mut self) {
        // Dropped on a runtime's thread too: do not block there.
        for rt in [self.runtime.take(), self.background.take()]
            .into_iter()
            .flatten()
        {
            rt.shutdown_background();
        }
    }
}

/// Holds a file's gate; opens it when dropped.
struct Gate<'a> {
    tier: &'a TieredStore,
    id: FileId,
}

impl Drop for Gate<'_> {
    fn drop(&mut self) {
        let waiters = {
            let mut state = lock(&self.tier.state);
            state.gate.remove(&self.id);
            state.gate_waiters
        };
        // Someone in `enter_gate` registered under the lock held above, so
        // no wake-up is lost; a writer waiting for room (an unlink frees
        // some) rechecks within 50 ms anyway, but is told at once.
        if waiters > 0 || self.tier.waiting_for_room.load(Ordering::Acquire) > 0 {
            self.tier.changed.notify_all();
        }
    }
}

impl ChunkHandler for TieredStore {
    fn write_chunk(&self, chunk: &ChunkRef, data: &[u8]) -> SfsResult<()> {
        let whole_chunk = chunk.offset == 0 && chunk.len == self.store.chunk_size();
        loop {
            let guard = self.store.lock(chunk.id, chunk.index);
            if !whole_chunk
                && self.fetchable(chunk.id)
                && !self.store.has_chunk(chunk.id, chunk.index)
            {
                // A partial write into an evicted chunk, or one still in its
                // source: the rest of it comes first.
                self.fetch_locked(chunk.id, chunk.index, None)?;
            }
            self.mark_dirty(chunk.id, chunk.index, None)?;
            match self.store.write_locked(chunk, data) {
                Err(e) if e.errno == Errno::ENOSPC && self.store.capacity_limit() > 0 => {
                    drop(guard);
                    self.wait_for_room(chunk.len, &e)?;
                }
                Err(e) => return Err(e),
                Ok(()) => {
                    self.mark_dirty(chunk.id, chunk.index, Some(chunk.offset + chunk.len))?;
                    self.counters
                        .intake_bytes
                        .fetch_add(chunk.len, Ordering::Relaxed);
                    return Ok(());
                }
            }
        }
    }

    fn read_chunk(&self, chunk: &ChunkRef, buf: &mut [u8]) -> SfsResult<usize> {
        // Only a chunk that is here (held or fetched) gets a tick: a read
        // of a hole leaves no entry behind.
        let touch = || {
            if self.evicts() {
                lock(&self.state).touch(chunk.id, chunk.index);
            }
        };
        match self.store.read_held(chunk, buf)? {
            Some(n) => {
                touch();
                self.read_ahead_hit(chunk.id, chunk.index);
                return Ok(n);
            }
            // Asked after the miss: a chunk is evicted only once its file
            // is in the back end, and is elsewhere only then or when the
            // file has a source.
            None if !self.fetchable(chunk.id) => return Ok(0),
            None => {}
        }
        let _guard = self.store.lock(chunk.id, chunk.index);
        // Another reader may have brought it back while this one waited.
        if !self.store.has_chunk(chunk.id, chunk.index) {
            // A read of the whole chunk has it read into the answer.
            let chunk_size = self.store.chunk_size() as usize;
            let whole = chunk.offset == 0 && buf.len() == chunk_size;
            let into = whole.then_some(&mut buf[..]);
            if let Some(data) = self.fetch_locked(chunk.id, chunk.index, into)? {
                touch();
                self.read_ahead(chunk.id, chunk.index);
                // Answered from the fetched bytes (what the store now
                // holds, installed under this lock): no second read.
                if let Fetched::Into { len, .. } = data {
                    return Ok(len);
                }
                let data = data.bytes(None);
                let from = (chunk.offset as usize).min(data.len());
                let n = (data.len() - from).min(buf.len());
                buf[..n].copy_from_slice(&data[from..from + n]);
                return Ok(n);
            }
        }
        let n = self.store.read_held(chunk, buf)?;
        if n.is_some() {
            touch();
            // Brought in by a read-ahead while this read waited for it.
            self.read_ahead_hit(chunk.id, chunk.index);
        }
        Ok(n.unwrap_or(0))
    }
}

/// A chunk brought back whole: read from the file's object, or from its
/// source (into a pooled buffer: a source is read a chunk at a time, and a
/// fresh allocation per chunk cost more in page faults than the read).
enum Fetched {
    Object(Vec<u8>),
    /// From the object, read on the fetching thread
    /// ([`ObjectBackend::read_now`]).
    Pooled(sfs_rdma::buffers::PooledBuffer),
    Source(sfs_rdma::buffers::PooledBuffer),
    /// Read into the buffer the caller passed: its first `len` bytes, from
    /// the file's source or from its object.
    Into {
        len: usize,
        from_source: bool,
    },
}

impl Fetched {
    /// The chunk's bytes; those of [`Fetched::Into`] are in `into`, the
    /// buffer they were read into (none: empty).
    fn bytes<'a>(&'a self, into: Option<&'a [u8]>) -> &'a [u8] {
        match self {
            Fetched::Object(data) => data,
            Fetched::Pooled(data) | Fetched::Source(data) => data,
            Fetched::Into { len, .. } => into.map_or(&[], |b| &b[..*len]),
        }
    }
}

/// The bytes of chunk `index` of a file whose first `len` bytes are those
/// of the file at `source`: up to a chunk (the pool's buffer size), fewer
/// at the end (or if the source shrank since), none past `len`.
fn read_source(
    source: &Path,
    len: u64,
    index: u64,
    buffers: &Arc<sfs_rdma::buffers::BufferPool>,
) -> SfsResult<sfs_rdma::buffers::PooledBuffer> {
    let mut data = buffers.take(buffers.size());
    let got = read_source_into(source, len, index, &mut data)?;
    data.truncate(got);
    Ok(data)
}

/// [`read_source`] into `dest` (a chunk long): how many bytes it read.
fn read_source_into(source: &Path, len: u64, index: u64, dest: &mut [u8]) -> SfsResult<usize> {
    let chunk_size = dest.len() as u64;
    let start = index * chunk_size;
    let want = len.saturating_sub(start).min(chunk_size) as usize;
    if want == 0 {
        return Ok(0);
    }
    let failed = |e: std::io::Error| {
        SfsError::new(
            SfsError::from(std::io::Error::from(e.kind())).errno,
            format!("cache mode: cannot read {}: {e}", source.display()),
        )
    };
    let file = std::fs::File::open(source).map_err(failed)?;
    crate::backend::dir::read_into(&file, start, &mut dest[..want]).map_err(failed)
}

#[cfg(test)]
mod tests;
