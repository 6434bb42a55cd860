use super::writeback::Flushed;
use super::*;
use crate::backend::dir::DirBackend;
use crate::backend::ObjectStat;
use async_trait::async_trait;
use std::ops::Range;
use std::sync::atomic::{AtomicBool, AtomicU64};

const CHUNK: u64 = 4096;

/// The `dir` back end with a switch that makes every write and read fail
/// (a store that went away).
struct Flaky {
    inner: DirBackend,
    down: AtomicBool,
    /// Each write first sleeps this long (a slow store).
    write_delay_ms: AtomicU64,
    /// Offers `dir`'s reads on the calling thread (`read_now`); off, a
    /// fetch takes the asynchronous `read` that networked stores have.
    plain_reads: AtomicBool,
    /// The nice value of the thread each write ran on, in order.
    write_nice: Mutex<Vec<i32>>,
    /// Offers `dir`'s copies from files (`write_from_files`); off, a
    /// write-back reads chunks into buffers as for networked stores.
    file_copies: AtomicBool,
}

/// The nice value of the calling thread.
fn own_nice() -> i32 {
    rustix::process::getpriority_process(None).expect("getpriority")
}

impl Flaky {
    fn check(&self) -> SfsResult<()> {
        if self.down.load(Ordering::Acquire) {
            return Err(SfsError::io("flaky back end: unreachable"));
        }
        Ok(())
    }
}

#[async_trait]
impl ObjectBackend for Flaky {
    fn kind(&self) -> &'static str {
        "flaky"
    }
    async fn create(&self, id: FileId) -> SfsResult<()> {
        self.check()?;
        self.inner.create(id).await
    }
    async fn write(&self, id: FileId, offset: u64, data: &[u8]) -> SfsResult<()> {
        self.check()?;
        lock(&self.write_nice).push(own_nice());
        let delay = self.write_delay_ms.load(Ordering::Acquire);
        if delay > 0 {
            tokio::time::sleep(Duration::from_millis(delay)).await;
        }
        self.inner.write(id, offset, data).await
    }
    async fn read(&self, id: FileId, offset: u64, len: usize) -> SfsResult<Vec<u8>> {
        self.check()?;
        self.inner.read(id, offset, len).await
    }
    fn read_now(&self, id: FileId, offset: u64, buf: &mut [u8]) -> Option<SfsResult<usize>> {
        if !self.plain_reads.load(Ordering::Acquire) {
            return None;
        }
        Some(self.check().and_then(|()| {
            self.inner
                .read_now(id, offset, buf)
                .expect("dir reads on the calling thread")
        }))
    }
    fn copies_from_files(&self) -> bool {
        self.file_copies.load(Ordering::Acquire)
    }
    fn write_from_files(
        &self,
        id: FileId,
        pieces: &[(u64, std::fs::File)],
        max_len: u64,
    ) -> SfsResult<Vec<u64>> {
        self.check()?;
        lock(&self.write_nice).push(own_nice());
        // Copied, then slow to answer (the copy has read the chunks).
        let copied = self.inner.write_from_files(id, pieces, max_len);
        let delay = self.write_delay_ms.load(Ordering::Acquire);
        if delay > 0 {
            std::thread::sleep(Duration::from_millis(delay));
        }
        copied
    }
    async fn persist(&self, id: FileId) -> SfsResult<()> {
        self.check()?;
        self.inner.persist(id).await
    }
    async fn truncate(&self, id: FileId, size: u64) -> SfsResult<()> {
        self.check()?;
        self.inner.truncate(id, size).await
    }
    async fn delete(&self, id: FileId) -> SfsResult<()> {
        self.check()?;
        self.inner.delete(id).await
    }
    async fn stat(&self, id: FileId) -> SfsResult<Option<ObjectStat>> {
        self.inner.stat(id).await
    }
    async fn list(&self) -> SfsResult<Vec<FileId>> {
        self.inner.list().await
    }
    async fn extents(&self, id: FileId) -> SfsResult<Vec<Range<u64>>> {
        self.inner.extents(id).await
    }
}

struct Fixture {
    dir: tempfile::TempDir,
    backend: Arc<Flaky>,
}

impl Fixture {
    fn new() -> Fixture {
        let dir = tempfile::tempdir().unwrap();
        let backend = Arc::new(Flaky {
            inner: DirBackend::open(&dir.path().join("backend")).unwrap(),
            down: AtomicBool::new(false),
            write_delay_ms: AtomicU64::new(0),
            plain_reads: AtomicBool::new(false),
            write_nice: Mutex::new(Vec::new()),
            file_copies: AtomicBool::new(true),
        });
        Fixture { dir, backend }
    }

    fn open(&self, capacity: u64, settings: BackendConfig) -> Arc<TieredStore> {
        let store =
            Arc::new(ChunkStore::open(&self.dir.path().join("chunks"), CHUNK, capacity).unwrap());
        TieredStore::open(
            store,
            self.backend.clone(),
            settings,
            &self.dir.path().join("tier.journal"),
        )
        .unwrap()
    }
}

fn at(id: FileId, index: u64, offset: u64, len: u64) -> ChunkRef {
    ChunkRef {
        id,
        index,
        offset,
        len,
    }
}

/// Chunk `index` of file `id`, full, with bytes that name both.
fn chunk_bytes(id: FileId, index: u64) -> Vec<u8> {
    (0..CHUNK)
        .map(|i| (id.0 as u64 * 31 + index * 7 + i / 13) as u8)
        .collect()
}

fn read_whole(tier: &TieredStore, id: FileId, index: u64) -> Vec<u8> {
    let mut buf = vec![0u8; CHUNK as usize];
    let n = tier.read_chunk(&at(id, index, 0, CHUNK), &mut buf).unwrap();
    buf.truncate(n);
    buf
}

fn wait_until(what: &str, mut done: impl FnMut() -> bool) {
    let deadline = Instant::now() + Duration::from_secs(20);
    while !done() {
        assert!(Instant::now() < deadline, "timed out waiting until {what}");
        std::thread::sleep(Duration::from_millis(10));
    }
}

fn idle(ms: u64) -> BackendConfig {
    BackendConfig {
        writeback: WritebackPolicy::Idle,
        idle_ms: ms,
        ..BackendConfig::default()
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn an_explicit_flush_puts_chunks_at_their_file_offsets() {
    explicit_flush_puts_chunks_at_their_file_offsets(true).await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn an_explicit_flush_through_buffers_puts_chunks_at_their_file_offsets() {
    explicit_flush_puts_chunks_at_their_file_offsets(false).await;
}

/// With the chunk files handed to the back end (`file_copies`) or read
/// into buffers first.
async fn explicit_flush_puts_chunks_at_their_file_offsets(file_copies: bool) {
    let f = Fixture::new();
    f.backend.file_copies.store(file_copies, Ordering::Release);
    let tier = f.open(0, BackendConfig::default());
    let id = FileId(0x42);
    // Chunks 0 and 2 of a file whose chunk 1 lives on another server;
    // chunk 2 is the short last one.
    tier.write_chunk(&at(id, 0, 0, CHUNK), &[1u8; CHUNK as usize])
        .unwrap();
    tier.write_chunk(&at(id, 2, 0, 100), &[3u8; 100]).unwrap();
    assert_eq!(tier.status().dirty_files, 1);
    assert_eq!(tier.status().dirty_bytes, CHUNK + 100);
    // A range flush moves only the chunks in its range; the rest stays
    // dirty.
    let flushed = tier.flush_file(id, Some(2..3)).await.unwrap();
    assert_eq!(
        flushed,
        Flushed {
            chunks: 1,
            bytes: 100
        }
    );
    assert_eq!(
        f.backend.extents(id).await.unwrap(),
        vec![2 * CHUNK..2 * CHUNK + 100]
    );
    assert_eq!(tier.status().dirty_bytes, CHUNK);
    let flushed = tier.flush_file(id, None).await.unwrap();
    assert_eq!(
        flushed,
        Flushed {
            chunks: 2,
            bytes: CHUNK + 100
        }
    );
    let object = f.backend.read(id, 0, 3 * CHUNK as usize).await.unwrap();
    assert_eq!(object.len() as u64, 2 * CHUNK + 100);
    assert!(object[..CHUNK as usize].iter().all(|&b| b == 1));
    assert!(object[CHUNK as usize..2 * CHUNK as usize]
        .iter()
        .all(|&b| b == 0));
    assert!(object[2 * CHUNK as usize..].iter().all(|&b| b == 3));
    assert_eq!(tier.status().dirty_files, 0, "clean after the flush");
    // `sfs status` shows the rate over the last seconds (sampled once a
    // second): some of those bytes, never more than were written back.
    let start = Instant::now();
    while tier.status().writeback_bytes_per_s == 0 {
        assert!(
            start.elapsed() < Duration::from_secs(5),
            "no write-back rate"
        );
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
    let rate = tier.status().writeback_bytes_per_s;
    assert!(rate <= 2 * CHUNK + 100, "rate {rate}");
    // No chunks here: nothing written, no object created.
    let other = FileId(0x43);
    assert_eq!(
        tier.flush_file(other, None).await.unwrap(),
        Flushed::default()
    );
    assert_eq!(f.backend.stat(other).await.unwrap(), None);
}

#[test]
fn the_idle_policy_writes_back_on_its_own_and_explicit_does_not() {
    let f = Fixture::new();
    let tier = f.open(0, BackendConfig::default());
    let id = FileId(7);
    tier.write_chunk(&at(id, 0, 0, CHUNK), &chunk_bytes(id, 0))
        .unwrap();
    std::thread::sleep(Duration::from_millis(300));
    assert_eq!(tier.status().dirty_files, 1, "explicit: still dirty");
    drop(tier);

    let tier = f.open(0, idle(50));
    // The journal said dirty: the restarted tier writes it back.
    wait_until("the idle write-back ran", || tier.status().dirty_files == 0);
    let rt = tokio::runtime::Runtime::new().unwrap();
    let object = rt.block_on(f.backend.read(id, 0, CHUNK as usize)).unwrap();
    assert_eq!(object, chunk_bytes(id, 0));
    assert_eq!(tier.status().written_back_bytes, CHUNK);
}

#[test]
fn the_policys_write_back_yields_the_cpu_and_an_asked_one_does_not() {
    let f = Fixture::new();
    let server = own_nice();
    let policy_nice = |writeback_nice: u8| {
        let tier = f.open(
            0,
            BackendConfig {
                writeback_nice,
                ..idle(300)
            },
        );
        let id = FileId(0x900 + u128::from(writeback_nice));
        // Asked for (well before the file is idle): at the server's
        // priority, whatever the setting.
        tier.write_chunk(&at(id, 0, 0, CHUNK), &chunk_bytes(id, 0))
            .unwrap();
        let rt = tokio::runtime::Runtime::new().unwrap();
        rt.block_on(tier.flush_file(id, None)).unwrap();
        let asked = lock(&f.backend.write_nice).drain(..).collect::<Vec<_>>();
        // By policy, once idle.
        tier.write_chunk(&at(id, 1, 0, CHUNK), &chunk_bytes(id, 1))
            .unwrap();
        wait_until("the idle write-back ran", || tier.status().dirty_files == 0);
        let seen = lock(&f.backend.write_nice).drain(..).collect::<Vec<_>>();
        (seen, asked)
    };
    let (seen, asked) = policy_nice(7);
    assert_eq!(seen, vec![(server + 7).min(19)], "by policy: 7 steps down");
    assert!(asked.iter().all(|&n| n == server), "asked for: {asked:?}");
    assert_eq!(asked.len(), 1);
    let (seen, _) = policy_nice(0);
    assert_eq!(seen, vec![server], "writeback_nice 0: beside the data path");
}

#[test]
fn dirty_files_survive_a_restart_and_are_written_back() {
    let f = Fixture::new();
    let ids: Vec<FileId> = (1..=5).map(|i| FileId(0x100 + i)).collect();
    {
        let tier = f.open(0, BackendConfig::default());
        for &id in &ids {
            for index in 0..3 {
                tier.write_chunk(&at(id, index, 0, CHUNK), &chunk_bytes(id, index))
                    .unwrap();
            }
        }
        // Dropped without a write-back, as a killed server would be: only
        // the journal's appends (no sync) and the chunk files remain.
    }
    let tier = f.open(0, idle(10));
    assert!(tier.status().dirty_files > 0 || tier.status().written_back_bytes > 0);
    wait_until("every file was written back", || {
        tier.status().dirty_files == 0
    });
    let rt = tokio::runtime::Runtime::new().unwrap();
    for &id in &ids {
        let object = rt
            .block_on(f.backend.read(id, 0, 3 * CHUNK as usize))
            .unwrap();
        let expected: Vec<u8> = (0..3).flat_map(|i| chunk_bytes(id, i)).collect();
        assert_eq!(object, expected, "{id}");
    }
}

#[test]
fn a_full_store_evicts_clean_chunks_and_reads_them_back() {
    let f = Fixture::new();
    // Room for 8 chunks; 3x that is written (writers wait for the
    // write-back and eviction instead of failing), then all read back.
    let tier = f.open(8 * CHUNK, BackendConfig::default());
    let files: Vec<FileId> = (0..6).map(|i| FileId(0x200 + i)).collect();
    for &id in &files {
        for index in 0..4 {
            tier.write_chunk(&at(id, index, 0, CHUNK), &chunk_bytes(id, index))
                .unwrap();
        }
    }
    assert!(tier.usage() <= 8 * CHUNK);
    let status = tier.status();
    assert!(status.evicted_bytes >= 16 * CHUNK, "{status:?}");
    for &id in &files {
        for index in 0..4 {
            assert_eq!(
                read_whole(&tier, id, index),
                chunk_bytes(id, index),
                "{id} chunk {index}"
            );
        }
    }
    assert!(tier.status().fetched_bytes > 0);
    assert!(tier.usage() <= 8 * CHUNK);
}

#[test]
fn eviction_takes_the_least_recently_used_first_also_after_a_restart() {
    let f = Fixture::new();
    let rt = tokio::runtime::Runtime::new().unwrap();
    let old: Vec<FileId> = (0..10).map(|i| FileId(0x280 + i)).collect();
    {
        let tier = f.open(100 * CHUNK, BackendConfig::default());
        for &id in &old {
            tier.write_chunk(&at(id, 0, 0, CHUNK), &chunk_bytes(id, 0))
                .unwrap();
            rt.block_on(tier.flush_file(id, None)).unwrap();
        }
    }
    // Restarted: the chunks found are older than anything touched since.
    let tier = f.open(100 * CHUNK, BackendConfig::default());
    let new: Vec<FileId> = (0..10).map(|i| FileId(0x2a0 + i)).collect();
    for &id in &new {
        tier.write_chunk(&at(id, 0, 0, CHUNK), &chunk_bytes(id, 0))
            .unwrap();
        rt.block_on(tier.flush_file(id, None)).unwrap();
    }
    for &id in &old[..5] {
        assert_eq!(read_whole(&tier, id, 0), chunk_bytes(id, 0));
    }
    let before = tier.usage();
    assert_eq!(
        writeback::evict_to(&tier, before - 5 * CHUNK).unwrap(),
        5 * CHUNK
    );
    for &id in &old[5..] {
        assert!(
            !tier.store().has_chunk(id, 0),
            "{id}: untouched since start"
        );
    }
    for &id in old[..5].iter().chain(&new) {
        assert!(tier.store().has_chunk(id, 0), "{id}: touched, kept");
    }
    // Gone and cut chunks leave no recency behind.
    tier.remove_chunks(new[0]).unwrap();
    tier.truncate_chunks(new[1], 0).unwrap();
    let state = lock(&tier.state);
    assert_eq!(state.lru.len(), 13, "5 old, 8 new");
    assert!(state
        .lru
        .values()
        .all(|(id, _)| *id != new[0] && *id != new[1] && !old[5..].contains(id)));
    let ticks: usize = state.access.values().map(HashMap::len).sum();
    assert_eq!(ticks, state.lru.len());
}

#[test]
fn a_writer_waiting_below_the_high_watermark_still_gets_room() {
    let f = Fixture::new();
    // 9.4 chunks held of 10: below the 95 % watermark, yet a whole chunk
    // does not fit. The waiting writer itself is the pressure.
    let settings = BackendConfig {
        high_watermark_percent: 95,
        low_watermark_percent: 50,
        space_wait_ms: 3000,
        ..BackendConfig::default()
    };
    let tier = f.open(10 * CHUNK, settings);
    let id = FileId(0x250);
    for index in 0..9 {
        tier.write_chunk(&at(id, index, 0, CHUNK), &chunk_bytes(id, index))
            .unwrap();
    }
    let partial = CHUNK * 4 / 10;
    tier.write_chunk(
        &at(id, 9, 0, partial),
        &chunk_bytes(id, 9)[..partial as usize],
    )
    .unwrap();
    tier.write_chunk(&at(id, 10, 0, CHUNK), &chunk_bytes(id, 10))
        .unwrap();
    assert!(tier.usage() <= 10 * CHUNK);
    assert_eq!(read_whole(&tier, id, 0), chunk_bytes(id, 0));
    assert_eq!(read_whole(&tier, id, 10), chunk_bytes(id, 10));
}

#[test]
fn a_partial_write_into_an_evicted_chunk_keeps_the_rest() {
    let f = Fixture::new();
    let tier = f.open(4 * CHUNK, BackendConfig::default());
    let id = FileId(0x300);
    tier.write_chunk(&at(id, 0, 0, CHUNK), &chunk_bytes(id, 0))
        .unwrap();
    let rt = tokio::runtime::Runtime::new().unwrap();
    rt.block_on(tier.flush_file(id, None)).unwrap();
    assert_eq!(writeback::evict_to(&tier, 0).unwrap(), CHUNK);
    assert!(!tier.store().has_chunk(id, 0));
    tier.write_chunk(&at(id, 0, 100, 10), &[0xee; 10]).unwrap();
    let mut expected = chunk_bytes(id, 0);
    expected[100..110].fill(0xee);
    assert_eq!(read_whole(&tier, id, 0), expected);
    assert_eq!(tier.status().fetched_bytes, CHUNK);
}

#[test]
fn a_read_inside_an_evicted_chunk_is_answered_from_the_fetch() {
    let f = Fixture::new();
    let tier = f.open(4 * CHUNK, BackendConfig::default());
    let id = FileId(0x310);
    // A short last chunk: reads past its end are short, as from the store.
    let short = (CHUNK / 2) as usize;
    tier.write_chunk(&at(id, 0, 0, short as u64), &chunk_bytes(id, 0)[..short])
        .unwrap();
    let rt = tokio::runtime::Runtime::new().unwrap();
    rt.block_on(tier.flush_file(id, None)).unwrap();
    assert_eq!(writeback::evict_to(&tier, 0).unwrap(), short as u64);
    let mut buf = vec![0u8; 1000];
    let n = tier
        .read_chunk(&at(id, 0, short as u64 - 300, 1000), &mut buf)
        .unwrap();
    assert_eq!(n, 300, "short at the chunk's end");
    assert_eq!(buf[..300], chunk_bytes(id, 0)[short - 300..short]);
    assert_eq!(tier.status().fetched_bytes, short as u64);
    // The fetched chunk was installed: a second read needs no fetch.
    assert_eq!(read_whole(&tier, id, 0), chunk_bytes(id, 0)[..short]);
    assert_eq!(tier.status().fetched_bytes, short as u64);
    assert_eq!(writeback::evict_to(&tier, 0).unwrap(), short as u64);
    let n = tier
        .read_chunk(&at(id, 0, short as u64, 10), &mut buf[..10])
        .unwrap();
    assert_eq!(n, 0, "at the end of the held bytes");
}

/// A read of an evicted chunk brings in the next chunks of the file that
/// this server owns, from the object, in the background; reading one of
/// those moves the window on. Chunks of other servers are left alone, and
/// nothing is fetched past the object's end.
#[test]
fn a_sequential_read_of_an_object_reads_this_servers_next_chunks_ahead() {
    let f = Fixture::new();
    f.backend.plain_reads.store(true, Ordering::Release);
    let tier = f.open(64 * CHUNK, BackendConfig::default());
    let places = sfs_global::distributor::Distributor::new(2);
    tier.set_placement(places, 0);
    let id = FileId(0x320);
    let chunks = 24;
    for index in 0..chunks {
        tier.write_chunk(&at(id, index, 0, CHUNK), &chunk_bytes(id, index))
            .unwrap();
    }
    let rt = tokio::runtime::Runtime::new().unwrap();
    rt.block_on(tier.flush_file(id, None)).unwrap();
    assert_eq!(writeback::evict_to(&tier, 0).unwrap(), chunks * CHUNK);
    let mine: Vec<u64> = (0..chunks)
        .filter(|&i| places.chunk_server(id, i) == 0)
        .collect();
    assert!(mine.len() > READ_AHEAD + 2, "{mine:?}");
    let held = |i: u64| tier.store.has_chunk(id, i);
    assert_eq!(read_whole(&tier, id, mine[0]), chunk_bytes(id, mine[0]));
    let window = &mine[1..=READ_AHEAD];
    wait_until("the window is read ahead", || {
        window.iter().all(|&i| held(i))
    });
    assert!(!held(mine[READ_AHEAD + 1]), "no further than the window");
    for i in (0..chunks).filter(|i| !mine.contains(i)) {
        assert!(!held(i), "chunk {i} is another server's");
    }
    // Reading the first chunk of the window moves it on by one.
    assert_eq!(read_whole(&tier, id, mine[1]), chunk_bytes(id, mine[1]));
    wait_until("the window moved on", || held(mine[READ_AHEAD + 1]));
    // Reading on to the end fetches every chunk once and nothing past it.
    for &i in &mine[2..] {
        assert_eq!(read_whole(&tier, id, i), chunk_bytes(id, i), "chunk {i}");
    }
    wait_until("the read-ahead settled", || tier.read_ahead_idle());
    assert_eq!(tier.status().fetched_bytes, mine.len() as u64 * CHUNK);
    // A cut forgets the remembered object size.
    tier.truncate_chunks(id, CHUNK).unwrap();
    assert!(!lock(&tier.state).object_sizes.contains_key(&id));
}

#[test]
fn truncate_and_unlink_follow_into_the_back_end() {
    let f = Fixture::new();
    let tier = f.open(0, BackendConfig::default());
    let rt = tokio::runtime::Runtime::new().unwrap();
    let id = FileId(0x400);
    for index in 0..3 {
        tier.write_chunk(&at(id, index, 0, CHUNK), &chunk_bytes(id, index))
            .unwrap();
    }
    rt.block_on(tier.flush_file(id, None)).unwrap();
    writeback::evict_to(&tier, 0).unwrap();
    // Cut to half of chunk 1, then grow again by writing chunk 2's end:
    // what was cut reads as zeros, from here and from the object.
    tier.truncate_chunks(id, CHUNK + CHUNK / 2).unwrap();
    let size = rt.block_on(f.backend.stat(id)).unwrap().unwrap().size;
    assert_eq!(size, CHUNK + CHUNK / 2);
    tier.write_chunk(&at(id, 2, CHUNK - 1, 1), &[9]).unwrap();
    let mut chunk1 = chunk_bytes(id, 1);
    chunk1.truncate((CHUNK / 2) as usize);
    assert_eq!(read_whole(&tier, id, 1), chunk1);
    let mut chunk2 = vec![0u8; CHUNK as usize];
    chunk2[CHUNK as usize - 1] = 9;
    assert_eq!(read_whole(&tier, id, 2), chunk2);

    tier.remove_chunks(id).unwrap();
    assert_eq!(rt.block_on(f.backend.stat(id)).unwrap(), None);
    assert!(read_whole(&tier, id, 0).is_empty());
}

#[test]
fn a_truncate_waiting_at_a_gate_goes_on_when_the_gate_opens() {
    // The gate wakes waiters only when one is counted: a lost count would
    // leave this truncate waiting for ever.
    let f = Fixture::new();
    let tier = f.open(0, BackendConfig::default());
    let id = FileId(0x410);
    tier.write_chunk(&at(id, 0, 0, CHUNK), &chunk_bytes(id, 0))
        .unwrap();
    let held = tier.enter_gate(id);
    let (done_tx, done_rx) = std::sync::mpsc::channel();
    std::thread::scope(|s| {
        s.spawn(|| {
            let result = tier.truncate_chunks(id, 10);
            done_tx.send(result).unwrap();
        });
        wait_until("the truncate waits at the gate", || {
            lock(&tier.state).gate_waiters == 1
        });
        assert!(done_rx.try_recv().is_err(), "went past a closed gate");
        drop(held);
        let result = done_rx
            .recv_timeout(Duration::from_secs(20))
            .expect("the truncate was not woken when the gate opened");
        result.unwrap();
    });
    assert_eq!(lock(&tier.state).gate_waiters, 0);
    assert_eq!(read_whole(&tier, id, 0), chunk_bytes(id, 0)[..10].to_vec());
}

#[test]
fn a_back_end_that_fails_keeps_data_dirty_and_a_full_store_fails_with_enospc() {
    let f = Fixture::new();
    let settings = BackendConfig {
        space_wait_ms: 300,
        ..idle(10)
    };
    let tier = f.open(4 * CHUNK, settings);
    f.backend.down.store(true, Ordering::Release);
    let id = FileId(0x500);
    for index in 0..4 {
        tier.write_chunk(&at(id, index, 0, CHUNK), &chunk_bytes(id, index))
            .unwrap();
    }
    wait_until("a write-back failed", || tier.status().writeback_errors > 0);
    assert_eq!(tier.status().dirty_files, 1);
    assert!(tier.status().backend_error.contains("unreachable"));
    let full = tier
        .write_chunk(&at(id, 4, 0, CHUNK), &chunk_bytes(id, 4))
        .unwrap_err();
    assert_eq!(full.errno, Errno::ENOSPC);
    assert!(full.message.contains("unreachable"), "{}", full.message);
    // The store comes back: the retry (after its back-off) drains it.
    f.backend.down.store(false, Ordering::Release);
    wait_until("the retry wrote it back", || tier.status().dirty_files == 0);
    assert!(tier.status().backend_error.is_empty());
    tier.write_chunk(&at(id, 4, 0, CHUNK), &chunk_bytes(id, 4))
        .unwrap();
    for index in 0..5 {
        assert_eq!(read_whole(&tier, id, index), chunk_bytes(id, index));
    }
}

#[test]
fn a_write_during_a_write_back_is_not_marked_clean() {
    let f = Fixture::new();
    let tier = f.open(0, BackendConfig::default());
    let rt = tokio::runtime::Runtime::new().unwrap();
    let id = FileId(0x600);
    tier.write_chunk(&at(id, 0, 0, CHUNK), &[1; CHUNK as usize])
        .unwrap();
    // The write-back reads the chunk, then waits in the slow back end while
    // a new write lands: it must leave the chunk dirty.
    f.backend.write_delay_ms.store(300, Ordering::Release);
    let flush = {
        let tier = tier.clone();
        std::thread::spawn(move || {
            tokio::runtime::Runtime::new()
                .unwrap()
                .block_on(tier.flush_file(id, None))
                .unwrap()
        })
    };
    std::thread::sleep(Duration::from_millis(100));
    tier.write_chunk(&at(id, 0, 0, CHUNK), &[2; CHUNK as usize])
        .unwrap();
    flush.join().unwrap();
    let object = rt.block_on(f.backend.read(id, 0, CHUNK as usize)).unwrap();
    assert_eq!(
        object,
        vec![1; CHUNK as usize],
        "the write-back copied the old bytes"
    );
    assert_eq!(
        tier.status().dirty_files,
        1,
        "so the new write is still dirty"
    );
    f.backend.write_delay_ms.store(0, Ordering::Release);
    rt.block_on(tier.flush_file(id, None)).unwrap();
    assert_eq!(tier.status().dirty_files, 0);
    let object = rt.block_on(f.backend.read(id, 0, CHUNK as usize)).unwrap();
    assert_eq!(object, vec![2; CHUNK as usize]);
}

#[test]
fn the_close_policy_writes_back_a_file_once_its_writer_closed_it() {
    let f = Fixture::new();
    let tier = f.open(
        0,
        BackendConfig {
            writeback: WritebackPolicy::Close,
            idle_ms: 600_000,
            ..BackendConfig::default()
        },
    );
    let (closed, open) = (FileId(0x51), FileId(0x52));
    for id in [closed, open] {
        tier.write_chunk(&at(id, 0, 0, 100), &[7u8; 100]).unwrap();
    }
    // A close hint before a later write does not count: the write reopens it.
    tier.closed_after_writing(closed);
    tier.write_chunk(&at(closed, 0, 100, 10), &[8u8; 10])
        .unwrap();
    std::thread::sleep(super::writeback::TICK * 3);
    assert_eq!(tier.status().dirty_files, 2, "written back before a close");
    tier.closed_after_writing(closed);
    wait_until("the closed file is written back", || {
        tier.status().dirty_files == 1
    });
    let rt = tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .build()
        .unwrap();
    assert_eq!(
        rt.block_on(f.backend.stat(closed)).unwrap().map(|s| s.size),
        Some(110)
    );
    assert_eq!(rt.block_on(f.backend.stat(open)).unwrap(), None);
}

/// Cache mode: the chunks of a file with a source that were never read
/// come from the source — also once the file is in the back end, whose
/// object holds only what was written back (its other ranges read as
/// zeros) — after a restart too; a truncate lowers what the source counts
/// for; a written chunk, once written back and evicted, comes from the
/// object (not the source, which has its old bytes), after a restart too;
/// a removal forgets the source.
#[test]
fn unread_chunks_of_a_file_with_a_source_come_from_it() {
    let f = Fixture::new();
    let rt = tokio::runtime::Runtime::new().unwrap();
    let source = f.dir.path().join("backing.bin");
    let bytes: Vec<u8> = (0..3 * CHUNK).map(|i| (i % 251) as u8).collect();
    std::fs::write(&source, &bytes).unwrap();
    let id = FileId(0x500);
    let slice = |r: Range<u64>| bytes[r.start as usize..r.end as usize].to_vec();
    {
        let tier = f.open(CHUNK * 64, BackendConfig::default());
        tier.set_source(id, source.clone(), 3 * CHUNK).unwrap();
        // A partial write brings its chunk in first.
        tier.write_chunk(&at(id, 1, 10, 5), b"HELLO").unwrap();
        rt.block_on(tier.flush_file(id, None)).unwrap();
        writeback::evict_to(&tier, 0).unwrap();
        assert!(!tier.store.has_chunk(id, 1), "written back, then evicted");
        let mut chunk1 = slice(CHUNK..2 * CHUNK);
        chunk1[10..15].copy_from_slice(b"HELLO");
        assert_eq!(read_whole(&tier, id, 1), chunk1, "from the object");
        assert_eq!(read_whole(&tier, id, 0), slice(0..CHUNK));
        assert_eq!(
            tier.counters.sourced_bytes.load(Ordering::Relaxed),
            2 * CHUNK
        );
        tier.stop();
    }
    // After a restart: the source is known again (its record in the
    // chunk store).
    let tier = f.open(CHUNK * 64, BackendConfig::default());
    let mut chunk1 = slice(CHUNK..2 * CHUNK);
    chunk1[10..15].copy_from_slice(b"HELLO");
    writeback::evict_to(&tier, 0).unwrap();
    assert!(!tier.store.has_chunk(id, 1));
    assert_eq!(read_whole(&tier, id, 1), chunk1);
    // Cut inside chunk 2 (never read) and grown again: past the cut, zeros.
    tier.truncate_chunks(id, 2 * CHUNK + 7).unwrap();
    tier.set_source(id, source.clone(), 3 * CHUNK).unwrap();
    tier.write_chunk(&at(id, 2, CHUNK - 1, 1), &[9]).unwrap();
    let mut chunk2 = slice(2 * CHUNK..2 * CHUNK + 7);
    chunk2.resize(CHUNK as usize, 0);
    chunk2[CHUNK as usize - 1] = 9;
    assert_eq!(read_whole(&tier, id, 2), chunk2);
    tier.remove_chunks(id).unwrap();
    assert!(read_whole(&tier, id, 0).is_empty());
}

/// Cache mode: a truncate that reaches a server before the file's first
/// `SetSource` still cuts what the source counts for.
#[test]
fn a_truncate_before_the_source_is_known_still_cuts_it() {
    let f = Fixture::new();
    let source = f.dir.path().join("backing.bin");
    std::fs::write(&source, vec![7u8; 2 * CHUNK as usize]).unwrap();
    let tier = f.open(0, BackendConfig::default());
    tier.set_cache_mode();
    let id = FileId(0x501);
    tier.truncate_chunks(id, 100).unwrap();
    tier.set_source(id, source, 2 * CHUNK).unwrap();
    tier.write_chunk(&at(id, 1, 0, 1), &[9]).unwrap();
    assert_eq!(read_whole(&tier, id, 0), vec![7u8; 100]);
    assert_eq!(read_whole(&tier, id, 1), vec![9]);
}

/// Cache mode: a job reads more of its backing files than the store holds.
/// Chunks only read are dropped (their source has them, no write-back), so
/// the reads never wait for room, and each reads right again.
#[test]
fn chunks_only_read_from_a_source_are_evicted_without_a_write_back() {
    let f = Fixture::new();
    let tier = f.open(
        6 * CHUNK,
        BackendConfig {
            space_wait_ms: 500,
            ..BackendConfig::default()
        },
    );
    let sources: Vec<(FileId, Vec<u8>)> = (0..4)
        .map(|i| {
            let id = FileId(0x510 + i);
            let bytes: Vec<u8> = (0..4 * CHUNK).map(|b| (b % 253) as u8 ^ i as u8).collect();
            let path = f.dir.path().join(format!("in{i}.bin"));
            std::fs::write(&path, &bytes).unwrap();
            tier.set_source(id, path, 4 * CHUNK).unwrap();
            (id, bytes)
        })
        .collect();
    for round in 0..2 {
        for (id, bytes) in &sources {
            for index in 0..4 {
                let start = (index * CHUNK) as usize;
                assert_eq!(
                    read_whole(&tier, *id, index),
                    bytes[start..start + CHUNK as usize],
                    "round {round}, {id} chunk {index}"
                );
                assert!(tier.usage() <= 6 * CHUNK, "usage {}", tier.usage());
            }
        }
    }
    let status = tier.status();
    assert!(status.evicted_bytes >= 20 * CHUNK, "{status:?}");
    assert_eq!(status.written_back_bytes, 0, "{status:?}");
}

/// Cache mode, after a crash that lost the record of a written chunk: the
/// journal still names the file dirty, so every chunk of it here counts as
/// written, is written back, and once evicted comes from the object — not
/// as the source's old bytes.
#[test]
fn a_chunk_written_before_a_crash_is_not_read_from_the_source_again() {
    let f = Fixture::new();
    let source = f.dir.path().join("backing.bin");
    std::fs::write(&source, vec![1u8; 2 * CHUNK as usize]).unwrap();
    let id = FileId(0x520);
    {
        let tier = f.open(CHUNK * 64, BackendConfig::default());
        tier.set_source(id, source.clone(), 2 * CHUNK).unwrap();
        tier.write_chunk(&at(id, 0, 0, CHUNK), &vec![2u8; CHUNK as usize])
            .unwrap();
        tier.stop();
    }
    let record = f
        .dir
        .path()
        .join("chunks")
        .join(id.to_hex())
        .join(".written");
    assert!(record.exists());
    std::fs::remove_file(&record).unwrap();
    let tier = f.open(CHUNK * 64, BackendConfig::default());
    let rt = tokio::runtime::Runtime::new().unwrap();
    rt.block_on(tier.write_back_all()).unwrap();
    writeback::evict_to(&tier, 0).unwrap();
    assert!(!tier.store.has_chunk(id, 0));
    assert_eq!(read_whole(&tier, id, 0), vec![2u8; CHUNK as usize]);
    assert_eq!(read_whole(&tier, id, 1), vec![1u8; CHUNK as usize]);
}

/// Cache mode: a write into a chunk of a file with a source that fails
/// (ENOSPC) leaves the chunk as its source has it — not counted as
/// written, which would make a later read look for it in the object (which
/// never held it) and answer nothing.
#[test]
fn a_failed_write_leaves_the_chunk_to_its_source() {
    let f = Fixture::new();
    let source = f.dir.path().join("backing.bin");
    let bytes: Vec<u8> = (0..2 * CHUNK).map(|i| (i % 241) as u8).collect();
    std::fs::write(&source, &bytes).unwrap();
    let tier = f.open(
        CHUNK,
        BackendConfig {
            space_wait_ms: 0,
            ..BackendConfig::default()
        },
    );
    let id = FileId(0x530);
    tier.set_source(id, source, 2 * CHUNK).unwrap();
    assert_eq!(read_whole(&tier, id, 0), bytes[..CHUNK as usize]);
    // The store is full (chunk 0): a whole-chunk write of chunk 1 fails.
    let failed = tier.write_chunk(&at(id, 1, 0, CHUNK), &vec![5u8; CHUNK as usize]);
    assert_eq!(failed.unwrap_err().errno, Errno::ENOSPC);
    assert!(!tier.store.has_chunk(id, 1), "no empty chunk file left");
    writeback::evict_to(&tier, 0).unwrap();
    let got = read_whole(&tier, id, 1);
    assert!(
        got == bytes[CHUNK as usize..],
        "chunk 1 read {} bytes, not the source's",
        got.len()
    );
}
