//! The write-back loop and eviction of one server.
//!
//! Every server writes back its own chunks (no funnel through a client):
//! chunk `i` of a file lands at byte `i * chunk_size` of the file's object,
//! so servers write disjoint ranges of the same objects. The loop wakes
//! every [`TICK`] (or when a writer finds the store full) and:
//!
//! 1. picks the files that are due: with the store past its high watermark
//!    or a writer waiting for room, every dirty file (capacity pressure overrides the policy); else by
//!    policy — `idle`: unwritten here for `idle_ms`; `io-aware`: the same,
//!    but nothing while this server takes in more than `busy_mb_per_s`;
//!    `close`: closed by a client after writing, or idle as for `idle`;
//!    `explicit`: none. A file whose write-back failed waits out a back-off
//!    (doubling from 1 s to 30 s) before it is tried again.
//! 2. writes back up to `flush_files_in_flight` files at once, each with at
//!    most [`BYTES_IN_FLIGHT`] of chunk data read and not yet written — by
//!    policy on threads of their own at nice `writeback_nice`, so that the
//!    job's writes to this server come first; under pressure at the
//!    server's priority (writers are waiting for that round);
//! 3. under the same pressure, evicts clean chunks of files the back end
//!    holds, and chunks of files with a source never written in SFS, least
//!    recently used first, down to the low watermark, and
//!    wakes the writers waiting for room.

use super::{lock, Record, TieredStore};
use futures::stream::{self, StreamExt};
use sfs_global::config::WritebackPolicy;
use sfs_global::{FileId, SfsError, SfsResult};
use sfs_rdma::buffers::BufferPool;
use sfs_rdma::{ChunkHandler, ChunkRef};
use std::sync::atomic::Ordering;
use std::sync::Arc;
use std::time::{Duration, Instant};

/// How often the loop looks for work when nothing wakes it.
pub const TICK: Duration = Duration::from_millis(100);

/// Chunk bytes read from the store and not yet in the back end, per file
/// (at least one chunk is always in flight).
pub const BYTES_IN_FLIGHT: u64 = 8 << 20;

/// The most chunks in one batch of a write-back ([`batching`]), so small
/// chunks still make batches of a useful size without listing thousands.
const MAX_CHUNKS_PER_BATCH: u64 = 32;

const FIRST_BACKOFF: Duration = Duration::from_secs(1);
const MAX_BACKOFF: Duration = Duration::from_secs(30);

/// What one write-back of one file moved.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub struct Flushed {
    pub chunks: u64,
    pub bytes: u64,
}

/// Which chunks of a file a write-back copies.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum Which {
    /// The dirty ones (the loop).
    Dirty,
    /// Every chunk held here (an explicit flush).
    All,
    /// The chunks held here with an index in the range (a flush of a byte
    /// range).
    Range(std::ops::Range<u64>),
}

/// The loop; returns when the tier stops or is dropped (it holds the tier
/// only while a round runs, so dropping the last handle ends it).
pub async fn run(tier: std::sync::Weak<TieredStore>, wake: Arc<tokio::sync::Notify>) {
    let mut last_intake = 0;
    let mut last_sample = Instant::now();
    let mut busy = false;
    loop {
        tokio::select! {
            _ = wake.notified() => {}
            _ = tokio::time::sleep(TICK) => {}
        }
        let Some(tier) = tier.upgrade() else { break };
        if tier.stopping() {
            break;
        }
        // The I/O-aware gauge: new bytes per second since the last sample
        // (at least 200 ms apart, so one burst does not decide).
        let elapsed = last_sample.elapsed();
        if elapsed >= Duration::from_millis(200) {
            let intake = tier.counters.intake_bytes.load(Ordering::Relaxed);
            let rate = (intake - last_intake) as f64 / elapsed.as_secs_f64() / 1e6;
            busy = rate > tier.settings.busy_mb_per_s as f64;
            last_intake = intake;
            last_sample = Instant::now();
        }
        let pressure = tier.under_pressure();
        let due = due_files(&tier, pressure, busy);
        if !due.is_empty() {
            let in_flight = tier.settings.flush_files_in_flight as usize;
            // By policy, on the niced threads (the job's I/O first); a full
            // store's writers wait for this round, so it runs here then.
            let niced = if pressure { None } else { tier.background() };
            stream::iter(due)
                .for_each_concurrent(in_flight, |id| {
                    let tier = tier.clone();
                    let niced = niced.clone();
                    async move {
                        // Errors are counted, logged and retried later.
                        let work = async move { write_back(&tier, id, Which::Dirty).await };
                        match niced {
                            Some(runtime) => drop(runtime.spawn(work).await),
                            None => drop(work.await),
                        }
                    }
                })
                .await;
        }
        if pressure {
            let evicting = tier.clone();
            let target = tier.low_watermark_bytes();
            let evicted =
                crate::backend::off_the_runtime("eviction", move || evict_to(&evicting, target))
                    .await;
            if let Err(e) = evicted {
                tracing::warn!("tier: eviction failed: {}", e.message);
            }
        }
        tier.changed.notify_all();
    }
}

/// The dirty files to write back now, oldest write first.
fn due_files(tier: &TieredStore, pressure: bool, busy: bool) -> Vec<FileId> {
    let idle = Duration::from_millis(tier.settings.idle_ms);
    let by_policy = match tier.settings.writeback {
        WritebackPolicy::Explicit => false,
        WritebackPolicy::Idle | WritebackPolicy::Close => true,
        WritebackPolicy::IoAware => !busy,
    };
    let on_close = tier.settings.writeback == WritebackPolicy::Close;
    if !pressure && !by_policy {
        return Vec::new();
    }
    let now = Instant::now();
    let state = lock(&tier.state);
    let mut due: Vec<(Instant, FileId)> = state
        .dirty
        .iter()
        .filter(|(id, file)| {
            !state.gate.contains(id)
                && state.retry.get(id).is_none_or(|(at, _)| *at <= now)
                && (pressure
                    || (on_close && file.closed)
                    || now.duration_since(file.last_write) >= idle)
        })
        .map(|(id, file)| (file.last_write, *id))
        .collect();
    due.sort_unstable();
    due.into_iter().map(|(_, id)| id).collect()
}

/// Writes back chunks of `id` held here, persists the object, records that
/// the back end holds the file, and marks clean every chunk no write
/// touched meanwhile. On failure the chunks stay dirty and the file backs
/// off.
pub async fn write_back(tier: &Arc<TieredStore>, id: FileId, which: Which) -> SfsResult<Flushed> {
    let _gate = tier.enter_gate_async(id).await;
    let result = copy_chunks(tier, id, which).await;
    match &result {
        Ok(_) => {
            lock(&tier.state).retry.remove(&id);
            lock(&tier.last_error).clear();
        }
        Err(e) => {
            tier.counters
                .writeback_errors
                .fetch_add(1, Ordering::Relaxed);
            let mut state = lock(&tier.state);
            let backoff = state
                .retry
                .get(&id)
                .map_or(FIRST_BACKOFF, |(_, b)| (*b * 2).min(MAX_BACKOFF));
            state.retry.insert(id, (Instant::now() + backoff, backoff));
            *lock(&tier.last_error) = e.message.clone();
            tracing::warn!(
                "tier: write-back of {id} to the {} back end failed (next try in {} s): {}",
                tier.backend.kind(),
                backoff.as_secs(),
                e.message
            );
        }
    }
    result
}

async fn copy_chunks(tier: &Arc<TieredStore>, id: FileId, which: Which) -> SfsResult<Flushed> {
    // (index, generation seen before the copy; None: was clean)
    let chunks: Vec<(u64, Option<u64>)> = match which {
        Which::Dirty => lock(&tier.state)
            .dirty
            .get(&id)
            .map(|f| {
                f.chunks
                    .iter()
                    .map(|(&i, c)| (i, Some(c.generation)))
                    .collect()
            })
            .unwrap_or_default(),
        Which::All | Which::Range(_) => {
            let store = tier.store.clone();
            let mut indexes =
                crate::backend::off_the_runtime("flush", move || store.chunk_indexes(id)).await?;
            if let Which::Range(range) = &which {
                indexes.retain(|i| range.contains(i));
            }
            let state = lock(&tier.state);
            let dirty = state.dirty.get(&id);
            indexes
                .into_iter()
                .map(|i| {
                    (
                        i,
                        dirty.and_then(|f| f.chunks.get(&i)).map(|c| c.generation),
                    )
                })
                .collect()
        }
    };
    let chunk_size = tier.store.chunk_size();
    let (per_batch, batches_in_flight) = batching(chunk_size);
    let batches: Vec<Vec<(u64, Option<u64>)>> =
        chunks.chunks(per_batch).map(<[_]>::to_vec).collect();
    let batches: Vec<SfsResult<Vec<Copied>>> = stream::iter(batches)
        .map(|batch| copy_batch(tier, id, batch))
        .buffer_unordered(batches_in_flight)
        .collect()
        .await;
    let mut flushed = Flushed::default();
    let mut done = Vec::new();
    let mut first_error = None;
    for batch in batches {
        match batch {
            Ok(copied) => {
                for (index, generation, bytes) in copied {
                    if bytes > 0 {
                        flushed.chunks += 1;
                        flushed.bytes += bytes;
                    }
                    done.push((index, generation));
                }
            }
            Err(e) => {
                first_error.get_or_insert(e);
            }
        }
    }
    if let Some(e) = first_error {
        return Err(e);
    }
    if flushed.chunks > 0 {
        tier.backend.persist(id).await?;
        // The object may have grown: a read-ahead asks its size again.
        lock(&tier.state).forget_object_size(id);
        let new_object = !lock(&tier.state).in_backend.contains(&id);
        if new_object {
            // Durable before any chunk of the file can be evicted: after a
            // crash, a chunk missing here must be looked for there.
            tier.journal(Record::InBackend(id), true)?;
            lock(&tier.state).in_backend.insert(id);
        }
    }
    if lock(&tier.state).written_unsynced.remove(&id) {
        // Durable before any written chunk of a file with a source is
        // clean, i.e. evictable: after a crash it must still be read from
        // the object, not from the source.
        if let Err(e) = tier.store.sync_written(id) {
            lock(&tier.state).written_unsynced.insert(id);
            return Err(e);
        }
    }
    {
        let mut state = lock(&tier.state);
        let now_clean = match state.dirty.get_mut(&id) {
            Some(file) => {
                for (index, generation) in done {
                    let unchanged = file
                        .chunks
                        .get(&index)
                        .is_some_and(|c| Some(c.generation) == generation);
                    if unchanged {
                        file.chunks.remove(&index);
                    }
                }
                file.chunks.is_empty()
            }
            None => false,
        };
        if now_clean {
            state.dirty.remove(&id);
            tier.journal(Record::Clean(id), false)?;
        }
    }
    tier.counters
        .written_back_bytes
        .fetch_add(flushed.bytes, Ordering::Relaxed);
    Ok(flushed)
}

/// A chunk a write-back copied: `(index, generation seen before the copy
/// (None: was clean), bytes written)`.
type Copied = (u64, Option<u64>, u64);

/// Chunks per batch and batches in flight for one file: a batch is one
/// trip to the blocking pool to read its chunks and one back-end call
/// ([`ObjectBackend::write_pieces`](crate::backend::ObjectBackend::write_pieces))
/// to write them; two batches in flight let one be read while the other
/// is written, within [`BYTES_IN_FLIGHT`].
fn batching(chunk_size: u64) -> (usize, usize) {
    let per_batch = (BYTES_IN_FLIGHT / 2 / chunk_size).clamp(1, MAX_CHUNKS_PER_BATCH);
    let in_flight = (BYTES_IN_FLIGHT / (per_batch * chunk_size)).clamp(1, 2);
    (per_batch as usize, in_flight as usize)
}

/// The write-back's buffer pool: it keeps what every file in flight can
/// hold at once, so a steady write-back allocates nothing.
pub(super) fn buffer_pool(
    chunk_size: u64,
    settings: &sfs_global::config::BackendConfig,
) -> Arc<BufferPool> {
    let per_file = (BYTES_IN_FLIGHT / chunk_size).max(1);
    let keep = per_file * u64::from(settings.flush_files_in_flight.max(1));
    BufferPool::new(chunk_size as usize, keep as usize)
}

/// Copies a batch of chunks of `id` to the back end: reads them into
/// pooled buffers in one blocking task, writes them in one back-end call.
/// Returns `(index, generation seen, bytes written)` for each chunk (0
/// bytes when the chunk is gone or empty).
async fn copy_batch(
    tier: &Arc<TieredStore>,
    id: FileId,
    batch: Vec<(u64, Option<u64>)>,
) -> SfsResult<Vec<Copied>> {
    if tier.backend.copies_from_files() {
        return copy_batch_as_files(tier, id, batch).await;
    }
    let store = tier.store.clone();
    let buffers = tier.buffers.clone();
    let chunk_size = store.chunk_size();
    let (done, pieces) = crate::backend::off_the_runtime("flush", move || {
        let mut done = Vec::with_capacity(batch.len());
        let mut pieces = Vec::with_capacity(batch.len());
        for (index, generation) in batch {
            let chunk = ChunkRef {
                id,
                index,
                offset: 0,
                len: chunk_size,
            };
            // Whatever the buffer held before is overwritten or cut off.
            let mut data = buffers.take(chunk_size as usize);
            let held = store.read_chunk(&chunk, &mut data)?;
            data.truncate(held);
            done.push((index, generation, held as u64));
            if held > 0 {
                pieces.push((index * chunk_size, data));
            }
        }
        Ok((done, pieces))
    })
    .await?;
    if pieces.is_empty() {
        return Ok(done);
    }
    let first = pieces[0].0 / chunk_size;
    let count = pieces.len();
    tier.backend
        .write_pieces(id, pieces)
        .await
        .map_err(|e| batch_failed(e, id, first, count))?;
    Ok(done)
}

/// A back end's error for a batch, naming the chunks.
fn batch_failed(e: SfsError, id: FileId, first: u64, count: usize) -> SfsError {
    SfsError::new(
        e.errno,
        format!(
            "writing back {count} chunks of {id} (from chunk {first}): {}",
            e.message
        ),
    )
}

/// [`copy_batch`] for a back end of plain files: the chunk files are
/// handed over open and the kernel copies them, in one blocking task (no
/// buffer, no copy through the server's memory).
async fn copy_batch_as_files(
    tier: &Arc<TieredStore>,
    id: FileId,
    batch: Vec<(u64, Option<u64>)>,
) -> SfsResult<Vec<Copied>> {
    let store = tier.store.clone();
    let backend = tier.backend.clone();
    let chunk_size = store.chunk_size();
    crate::backend::off_the_runtime("flush", move || {
        let mut done = Vec::with_capacity(batch.len());
        let mut files = Vec::with_capacity(batch.len());
        for (index, generation) in batch {
            match store.open_held(id, index)? {
                Some(file) => files.push((index, generation, file)),
                None => done.push((index, generation, 0)),
            }
        }
        if files.is_empty() {
            return Ok(done);
        }
        let (first, count) = (files[0].0, files.len());
        let (meta, pieces): (Vec<_>, Vec<_>) = files
            .into_iter()
            .map(|(index, generation, file)| ((index, generation), (index * chunk_size, file)))
            .unzip();
        let copied = backend
            .write_from_files(id, &pieces, chunk_size)
            .map_err(|e| batch_failed(e, id, first, count))?;
        done.extend(
            meta.into_iter()
                .zip(copied)
                .map(|((index, generation), bytes)| (index, generation, bytes)),
        );
        Ok(done)
    })
    .await
}

/// Chunks an eviction round takes from the recency order at once.
const EVICT_BATCH: usize = 1024;

/// Evicts clean chunks of files the back end holds, and chunks of files
/// with a source that were never written in SFS (the source has them),
/// least recently used first, until usage is at most `target`; returns the
/// bytes freed. Skips a
/// chunk whose lock is taken (a writer may be waiting for room while
/// holding it) and files behind their gate.
pub fn evict_to(tier: &TieredStore, target: u64) -> SfsResult<u64> {
    let chunk_size = tier.store.chunk_size();
    let mut freed = 0;
    'rounds: while tier.store.usage() > target {
        // The oldest evictable chunks, walking the recency order (dirty
        // chunks and files not in the back end are passed over).
        let candidates: Vec<(FileId, u64)> = {
            let state = lock(&tier.state);
            state
                .lru
                .values()
                .filter(|(id, index)| state.evictable(*id, *index, chunk_size))
                .take(EVICT_BATCH)
                .copied()
                .collect()
        };
        let mut progressed = false;
        for (id, index) in candidates {
            if tier.store.usage() <= target {
                break 'rounds;
            }
            let Some(_guard) = tier.store.try_lock(id, index) else {
                continue;
            };
            if !lock(&tier.state).evictable(id, index, chunk_size) {
                continue;
            }
            // 0 for an entry whose chunk is already gone: forgotten too.
            freed += tier.store.evict_locked(id, index)?;
            lock(&tier.state).forget(id, index);
            progressed = true;
        }
        if !progressed {
            break;
        }
    }
    tier.counters
        .evicted_bytes
        .fetch_add(freed, Ordering::Relaxed);
    if freed > 0 {
        tracing::debug!("tier: evicted {freed} bytes of clean chunks");
    }
    tier.changed.notify_all();
    Ok(freed)
}
