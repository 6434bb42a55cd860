//! The chunk store: the data chunks this server owns, as plain local files.
//!
//! Chunk `(id, index)` lives at `chunk_dir/<id as 32 hex digits>/<index>`, so
//! a file's chunks on this server are one directory (removed in one sweep)
//! and a rename never touches data. A chunk file is as long as the highest
//! byte written into it; bytes never written read back as a hole (the client
//! zero-fills), which is what sparse POSIX files do.
//!
//! Capacity is enforced *before* writing: usage (the sum of chunk file
//! lengths, scanned at start-up) is an atomic counter, and a write reserves
//! its growth with a compare-and-swap, so a full store refuses with ENOSPC
//! instead of half-writing. A per-chunk striped lock keeps "read length,
//! reserve growth, write" consistent when two requests hit one chunk.

use sfs_global::chunk::truncation_point;
use sfs_global::{Errno, FileId, SfsError, SfsResult};
use sfs_rdma::{ChunkHandler, ChunkRef};
use std::fs::{File, OpenOptions};
use std::io::ErrorKind;
use std::os::unix::ffi::OsStrExt;
use std::os::unix::fs::FileExt;
use std::path::{Path, PathBuf};
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{Mutex, MutexGuard};
use xxhash_rust::xxh3::xxh3_64;

/// Striped per-chunk locks: enough that unrelated chunks rarely wait.
const CHUNK_LOCK_STRIPES: usize = 256;

/// Chunks of this server, stored as files under one directory.
pub struct ChunkStore {
    root: PathBuf,
    chunk_size: u64,
    /// Byte limit; 0 means "whatever the device holds".
    capacity: u64,
    /// Sum of the lengths of all chunk files.
    used: AtomicU64,
    stripes: Box<[Mutex<()>]>,
}

/// Adds the operation and path to an I/O error, keeping its errno (a full
/// device stays ENOSPC, a missing file ENOENT).
fn io_error(e: std::io::Error, what: &str, path: &Path) -> SfsError {
    let errno = match e.raw_os_error() {
        Some(n) => Errno(n),
        None => SfsError::from(std::io::Error::from(e.kind())).errno,
    };
    SfsError::new(
        errno,
        format!("chunk store: cannot {what} {}: {e}", path.display()),
    )
}

/// Name of the file in a file's chunk directory that records its source
/// in cache mode ([`ChunkStore::set_source`]).
const SOURCE_FILE: &str = ".source";

/// Name of the file in a file's chunk directory that lists the chunks of a
/// file with a source that were written in SFS ([`ChunkStore::add_written`]):
/// one little-endian `u64` index per record, appended.
const WRITTEN_FILE: &str = ".written";

/// One chunk file of a file's directory.
struct ChunkFile {
    index: u64,
    path: PathBuf,
}

/// What a file's chunk directory holds: its chunk files and which of the
/// cache-mode records ([`SOURCE_FILE`], [`WRITTEN_FILE`]) exist.
#[derive(Default)]
struct Listing {
    chunks: Vec<ChunkFile>,
    records: Vec<PathBuf>,
}

/// Size of every file in `dir` (one file's chunks), for the start-up scan;
/// removes what a fetch from the back end left half-written in a crash.
fn directory_bytes(dir: &Path) -> std::io::Result<u64> {
    let mut total = 0;
    for entry in std::fs::read_dir(dir)? {
        let entry = entry?;
        if entry.file_name() == SOURCE_FILE || entry.file_name() == WRITTEN_FILE {
            continue; // not chunk bytes
        }
        if entry.file_name().to_string_lossy().starts_with(".fetch.") {
            std::fs::remove_file(entry.path())?;
        } else if entry.file_type()?.is_file() {
            total += entry.metadata()?.len();
        }
    }
    Ok(total)
}

impl ChunkStore {
    /// Opens (creating if needed) the store at `root` and counts its usage.
    pub fn open(root: &Path, chunk_size: u64, capacity: u64) -> SfsResult<Self> {
        std::fs::create_dir_all(root).map_err(|e| io_error(e, "create directory", root))?;
        let mut used = 0;
        for entry in std::fs::read_dir(root).map_err(|e| io_error(e, "list", root))? {
            let entry = entry.map_err(|e| io_error(e, "list", root))?;
            if entry.file_type().map(|t| t.is_dir()).unwrap_or(false) {
                used += directory_bytes(&entry.path())
                    .map_err(|e| io_error(e, "scan", &entry.path()))?;
            }
        }
        if capacity > 0 && used > capacity {
            tracing::warn!(
                "chunk store {} holds {used} bytes, more than its capacity of {capacity}: new data will be refused",
                root.display()
            );
        }
        Ok(ChunkStore {
            root: root.to_path_buf(),
            chunk_size,
            capacity,
            used: AtomicU64::new(used),
            stripes: (0..CHUNK_LOCK_STRIPES).map(|_| Mutex::new(())).collect(),
        })
    }

    fn file_dir(&self, id: FileId) -> PathBuf {
        self.root.join(id.to_hex())
    }

    fn chunk_path(&self, id: FileId, index: u64) -> PathBuf {
        self.file_dir(id).join(index.to_string())
    }

    /// Locks the stripe of one chunk; the data is `()`, so poisoning is moot.
    /// Writes, truncation, eviction and the fetch of an evicted chunk hold it.
    pub(crate) fn lock(&self, id: FileId, index: u64) -> MutexGuard<'_, ()> {
        self.stripe(id, index)
            .lock()
            .unwrap_or_else(|poisoned| poisoned.into_inner())
    }

    /// The lock stripe of chunk `(id, index)`.
    fn stripe(&self, id: FileId, index: u64) -> &Mutex<()> {
        let mut key = [0u8; 24];
        key[..16].copy_from_slice(&id.0.to_le_bytes());
        key[16..].copy_from_slice(&index.to_le_bytes());
        &self.stripes[(xxh3_64(&key) % CHUNK_LOCK_STRIPES as u64) as usize]
    }

    /// [`ChunkStore::lock`] if nobody holds the stripe (eviction skips
    /// busy chunks rather than wait behind a writer that waits for room).
    pub(crate) fn try_lock(&self, id: FileId, index: u64) -> Option<MutexGuard<'_, ()>> {
        match self.stripe(id, index).try_lock() {
            Ok(guard) => Some(guard),
            Err(std::sync::TryLockError::Poisoned(p)) => Some(p.into_inner()),
            Err(std::sync::TryLockError::WouldBlock) => None,
        }
    }

    fn check_range(&self, chunk: &ChunkRef, buf_len: usize) -> SfsResult<()> {
        let in_chunk = chunk
            .offset
            .checked_add(chunk.len)
            .is_some_and(|end| end <= self.chunk_size);
        if !in_chunk || buf_len as u64 != chunk.len {
            return Err(SfsError::invalid(format!(
                "chunk {} of {}: range {}+{} (buffer {buf_len}) does not fit a chunk of {} bytes",
                chunk.index, chunk.id, chunk.offset, chunk.len, self.chunk_size
            )));
        }
        Ok(())
    }

    /// Reserves `growth` more bytes of capacity, or refuses with ENOSPC.
    fn reserve(&self, growth: u64) -> SfsResult<()> {
        if growth == 0 {
            return Ok(());
        }
        let capacity = self.capacity;
        self.used
            .fetch_update(Ordering::AcqRel, Ordering::Acquire, |used| {
                let after = used.checked_add(growth)?;
                (capacity == 0 || after <= capacity).then_some(after)
            })
            .map(|_| ())
            .map_err(|used| {
                SfsError::no_space(format!(
                    "chunk store {} is full: {used} of {capacity} bytes used, {growth} more needed",
                    self.root.display()
                ))
            })
    }

    fn release(&self, bytes: u64) {
        let _ = self
            .used
            .fetch_update(Ordering::AcqRel, Ordering::Acquire, |used| {
                Some(used.saturating_sub(bytes))
            });
    }

    /// Removes every chunk of `id` held here, its cache-mode records and
    /// its directory. The directory is listed once: a client asks every
    /// server, and on those without a directory for `id` that listing is
    /// the only system call; a record is removed only if it was listed.
    pub fn remove_chunks(&self, id: FileId) -> SfsResult<()> {
        let Some(listing) = self.listing(id)? else {
            return Ok(()); // nothing of `id` here
        };
        self.drop_chunks(id, listing.chunks, 0, None)?;
        for path in listing.records {
            match std::fs::remove_file(&path) {
                Err(e) if e.kind() != ErrorKind::NotFound => {
                    return Err(io_error(e, "remove", &path))
                }
                _ => {}
            }
        }
        let dir = self.file_dir(id);
        match std::fs::remove_dir(&dir) {
            Ok(()) => Ok(()),
            Err(e) if e.kind() == ErrorKind::NotFound => Ok(()),
            // A write recreated a chunk meanwhile: its data stays, as it would
            // for a write racing with unlink on any file system.
            Err(e) if e.raw_os_error() == Some(libc::ENOTEMPTY) => Ok(()),
            Err(e) => Err(io_error(e, "remove", &dir)),
        }
    }

    /// Cuts the chunks of `id` held here to a file size of `size`.
    pub fn truncate_chunks(&self, id: FileId, size: u64) -> SfsResult<()> {
        let (first_removed, partial) = truncation_point(size, self.chunk_size);
        self.drop_chunks(id, self.chunk_files(id)?, first_removed, partial)
    }

    /// Of `files` (chunk files of `id`, as [`ChunkStore::chunk_files`]
    /// lists them), removes those with index >= `first_removed` and shortens
    /// the `partial` chunk `(index, length)` if it is longer.
    fn drop_chunks(
        &self,
        id: FileId,
        files: Vec<ChunkFile>,
        first_removed: u64,
        partial: Option<(u64, u64)>,
    ) -> SfsResult<()> {
        for ChunkFile { index, path } in files {
            let _guard = self.lock(id, index);
            let len = match std::fs::metadata(&path) {
                Ok(m) => m.len(),
                Err(e) if e.kind() == ErrorKind::NotFound => continue,
                Err(e) => return Err(io_error(e, "stat", &path)),
            };
            if index >= first_removed {
                match std::fs::remove_file(&path) {
                    Ok(()) => self.release(len),
                    Err(e) if e.kind() == ErrorKind::NotFound => {}
                    Err(e) => return Err(io_error(e, "remove", &path)),
                }
            } else if let Some((_, keep)) = partial.filter(|&(i, keep)| i == index && len > keep) {
                let file = OpenOptions::new()
                    .write(true)
                    .open(&path)
                    .map_err(|e| io_error(e, "open", &path))?;
                file.set_len(keep)
                    .map_err(|e| io_error(e, "truncate", &path))?;
                self.release(len - keep);
            }
        }
        Ok(())
    }

    /// The chunk files of `id` held here; foreign names in the directory
    /// are ignored.
    fn chunk_files(&self, id: FileId) -> SfsResult<Vec<ChunkFile>> {
        Ok(self.listing(id)?.map(|l| l.chunks).unwrap_or_default())
    }

    /// What `id`'s directory holds, or `None` when there is none.
    fn listing(&self, id: FileId) -> SfsResult<Option<Listing>> {
        let dir = self.file_dir(id);
        let entries = match std::fs::read_dir(&dir) {
            Ok(entries) => entries,
            Err(e) if e.kind() == ErrorKind::NotFound => return Ok(None),
            Err(e) => return Err(io_error(e, "list", &dir)),
        };
        let mut listing = Listing::default();
        for entry in entries {
            let entry = entry.map_err(|e| io_error(e, "list", &dir))?;
            let name = entry.file_name();
            if name == SOURCE_FILE || name == WRITTEN_FILE {
                listing.records.push(entry.path());
            } else if let Some(index) = name.to_str().and_then(|n| n.parse::<u64>().ok()) {
                listing.chunks.push(ChunkFile {
                    index,
                    path: entry.path(),
                });
            }
        }
        Ok(Some(listing))
    }

    /// Cache mode: records that the bytes of `id` below `len` that no
    /// chunk here holds come from the file at `source` (replacing what was
    /// recorded; written to a temporary name and renamed, so a crash leaves
    /// the old record or the new one).
    pub fn set_source(&self, id: FileId, source: &Path, len: u64) -> SfsResult<()> {
        let dir = self.file_dir(id);
        std::fs::create_dir_all(&dir).map_err(|e| io_error(e, "create", &dir))?;
        let path = dir.join(SOURCE_FILE);
        let temporary = dir.join(".source.new");
        let mut text = format!("{len}\n").into_bytes();
        text.extend_from_slice(source.as_os_str().as_encoded_bytes());
        std::fs::write(&temporary, &text).map_err(|e| io_error(e, "write", &temporary))?;
        std::fs::rename(&temporary, &path).map_err(|e| io_error(e, "rename", &path))
    }

    /// Every file whose source [`ChunkStore::set_source`] recorded here,
    /// with it: (id, source, length). A record that does not parse is
    /// reported and left out.
    pub fn sources(&self) -> SfsResult<Vec<(FileId, PathBuf, u64)>> {
        let mut found = Vec::new();
        for id in self.file_ids()? {
            let path = self.file_dir(id).join(SOURCE_FILE);
            let text = match std::fs::read(&path) {
                Ok(text) => text,
                Err(e) if e.kind() == ErrorKind::NotFound => continue,
                Err(e) => return Err(io_error(e, "read", &path)),
            };
            let parsed = text.iter().position(|&b| b == b'\n').and_then(|at| {
                let len = std::str::from_utf8(&text[..at]).ok()?.parse::<u64>().ok()?;
                let source = std::ffi::OsStr::from_bytes(&text[at + 1..]);
                Some((PathBuf::from(source), len))
            });
            match parsed {
                Some((source, len)) => found.push((id, source, len)),
                None => tracing::warn!("{}: not a source record; ignored", path.display()),
            }
        }
        Ok(found)
    }

    /// Cache mode: records that chunk `index` of `id` (a file with a
    /// source) was written in SFS, so that once evicted it is read from the
    /// file's object, not from the source. Appended, not synced
    /// ([`ChunkStore::sync_written`]).
    pub fn add_written(&self, id: FileId, index: u64) -> SfsResult<()> {
        use std::io::Write;
        let dir = self.file_dir(id);
        std::fs::create_dir_all(&dir).map_err(|e| io_error(e, "create", &dir))?;
        let path = dir.join(WRITTEN_FILE);
        let mut file = OpenOptions::new()
            .create(true)
            .append(true)
            .open(&path)
            .map_err(|e| io_error(e, "open", &path))?;
        // One write of 8 bytes to an O_APPEND file: a crash leaves the
        // record whole, or torn at the end (ignored when read).
        file.write_all(&index.to_le_bytes())
            .map_err(|e| io_error(e, "write", &path))
    }

    /// Makes the records of [`ChunkStore::add_written`] for `id` durable.
    pub fn sync_written(&self, id: FileId) -> SfsResult<()> {
        let dir = self.file_dir(id);
        let path = dir.join(WRITTEN_FILE);
        match File::open(&path) {
            Ok(f) => f.sync_all().map_err(|e| io_error(e, "sync", &path))?,
            Err(e) if e.kind() == ErrorKind::NotFound => return Ok(()),
            Err(e) => return Err(io_error(e, "open", &path)),
        }
        let f = File::open(&dir).map_err(|e| io_error(e, "open", &dir))?;
        f.sync_all().map_err(|e| io_error(e, "sync", &dir))
    }

    /// The chunks of `id` that [`ChunkStore::add_written`] recorded (a torn
    /// last record is ignored).
    pub fn written(&self, id: FileId) -> SfsResult<Vec<u64>> {
        let path = self.file_dir(id).join(WRITTEN_FILE);
        let bytes = match std::fs::read(&path) {
            Ok(bytes) => bytes,
            Err(e) if e.kind() == ErrorKind::NotFound => return Ok(Vec::new()),
            Err(e) => return Err(io_error(e, "read", &path)),
        };
        Ok(bytes
            .chunks_exact(8)
            .map(|record| u64::from_le_bytes(record.try_into().expect("8 bytes")))
            .collect())
    }

    /// Every file with a chunk directory here (foreign names ignored).
    pub fn file_ids(&self) -> SfsResult<Vec<FileId>> {
        let mut ids = Vec::new();
        for entry in std::fs::read_dir(&self.root).map_err(|e| io_error(e, "list", &self.root))? {
            let entry = entry.map_err(|e| io_error(e, "list", &self.root))?;
            let id = entry
                .file_name()
                .to_str()
                .filter(|name| name.len() == 32)
                .and_then(|name| u128::from_str_radix(name, 16).ok());
            if let Some(id) = id {
                ids.push(FileId(id));
            }
        }
        Ok(ids)
    }

    /// The indexes of the chunks of `id` held here, ascending (what a
    /// flush to the object back end walks).
    pub fn chunk_indexes(&self, id: FileId) -> SfsResult<Vec<u64>> {
        let mut indexes: Vec<u64> = self
            .chunk_files(id)?
            .into_iter()
            .map(|file| file.index)
            .collect();
        indexes.sort_unstable();
        Ok(indexes)
    }

    /// The chunk size this store was opened with.
    pub fn chunk_size(&self) -> u64 {
        self.chunk_size
    }

    /// Makes the chunks of `id` held here durable: every chunk file, their
    /// directory, and the store directory that names it.
    pub fn sync_chunks(&self, id: FileId) -> SfsResult<()> {
        let files = self.chunk_files(id)?;
        if files.is_empty() {
            return Ok(());
        }
        for ChunkFile { path, .. } in &files {
            match File::open(path) {
                Ok(f) => f.sync_all().map_err(|e| io_error(e, "sync", path))?,
                Err(e) if e.kind() == ErrorKind::NotFound => {}
                Err(e) => return Err(io_error(e, "open", path)),
            }
        }
        for dir in [self.file_dir(id), self.root.clone()] {
            let f = File::open(&dir).map_err(|e| io_error(e, "open", &dir))?;
            f.sync_all().map_err(|e| io_error(e, "sync", &dir))?;
        }
        Ok(())
    }

    /// Bytes held (sum of chunk file lengths).
    pub fn usage(&self) -> u64 {
        self.used.load(Ordering::Acquire)
    }

    /// The configured limit, or the device's size when unlimited.
    pub fn capacity(&self) -> u64 {
        if self.capacity > 0 {
            return self.capacity;
        }
        rustix::fs::statvfs(&self.root)
            .map(|s| s.f_blocks.saturating_mul(s.f_frsize))
            .unwrap_or(0)
    }

    /// Bytes that may still be written: capacity minus usage, or the
    /// device's free space when unlimited.
    pub fn free(&self) -> u64 {
        if self.capacity > 0 {
            return self.capacity.saturating_sub(self.usage());
        }
        rustix::fs::statvfs(&self.root)
            .map(|s| s.f_bavail.saturating_mul(s.f_frsize))
            .unwrap_or(0)
    }

    fn open_for_write(&self, path: &Path) -> SfsResult<File> {
        let open = || {
            OpenOptions::new()
                .write(true)
                .create(true)
                .truncate(false)
                .open(path)
        };
        match open() {
            Ok(f) => Ok(f),
            Err(e) if e.kind() == ErrorKind::NotFound => {
                // First chunk of this file on this server: create its directory.
                if let Some(dir) = path.parent() {
                    std::fs::create_dir_all(dir)
                        .map_err(|e| io_error(e, "create directory", dir))?;
                }
                open().map_err(|e| io_error(e, "create", path))
            }
            Err(e) => Err(io_error(e, "open", path)),
        }
    }
}

impl ChunkStore {
    /// The configured byte limit (0: none).
    pub fn capacity_limit(&self) -> u64 {
        self.capacity
    }

    /// Whether chunk `(id, index)` is held here (a hole inside a held
    /// chunk file still counts as held).
    pub(crate) fn has_chunk(&self, id: FileId, index: u64) -> bool {
        self.chunk_path(id, index).exists()
    }

    /// The length of chunk `(id, index)`, if held.
    pub(crate) fn chunk_len(&self, id: FileId, index: u64) -> Option<u64> {
        std::fs::metadata(self.chunk_path(id, index))
            .ok()
            .map(|m| m.len())
    }

    /// Removes one chunk to make room (its bytes are in the back end);
    /// returns the bytes freed. The caller holds the chunk's lock.
    pub(crate) fn evict_locked(&self, id: FileId, index: u64) -> SfsResult<u64> {
        let path = self.chunk_path(id, index);
        let len = match std::fs::metadata(&path) {
            Ok(m) => m.len(),
            Err(e) if e.kind() == ErrorKind::NotFound => return Ok(0),
            Err(e) => return Err(io_error(e, "stat", &path)),
        };
        match std::fs::remove_file(&path) {
            Ok(()) => {
                self.release(len);
                Ok(len)
            }
            Err(e) if e.kind() == ErrorKind::NotFound => Ok(0),
            Err(e) => Err(io_error(e, "remove", &path)),
        }
    }

    /// Puts back chunk `(id, index)` fetched from the back end, whole or not
    /// at all: written beside it and renamed into place, so a crash
    /// mid-fetch never leaves a partial chunk that would read as the truth.
    /// The caller holds the chunk's lock. ENOSPC when there is no room.
    pub(crate) fn install_locked(&self, id: FileId, index: u64, data: &[u8]) -> SfsResult<()> {
        let path = self.chunk_path(id, index);
        let staging = self.file_dir(id).join(format!(".fetch.{index}"));
        self.reserve(data.len() as u64)?;
        let written = (|| {
            let file = self.open_for_write(&staging)?;
            file.set_len(0)
                .map_err(|e| io_error(e, "truncate", &staging))?;
            file.write_all_at(data, 0)
                .map_err(|e| io_error(e, "write", &staging))?;
            std::fs::rename(&staging, &path).map_err(|e| io_error(e, "rename", &staging))
        })();
        if written.is_err() {
            self.release(data.len() as u64);
            let _ = std::fs::remove_file(&staging);
        }
        written
    }

    /// [`ChunkHandler::write_chunk`] for a caller that holds the chunk's
    /// lock.
    pub(crate) fn write_locked(&self, chunk: &ChunkRef, data: &[u8]) -> SfsResult<()> {
        self.check_range(chunk, data.len())?;
        if data.is_empty() {
            return Ok(());
        }
        let path = self.chunk_path(chunk.id, chunk.index);
        // Room first, then the file: a write refused for room must not
        // leave an empty chunk file behind, which would read as the
        // chunk's (empty) bytes instead of sending the read to where the
        // chunk really is (the object, or cache mode's source). The
        // caller holds the chunk's lock, so its length cannot change.
        let old_len = match std::fs::metadata(&path) {
            Ok(m) => m.len(),
            Err(e) if e.kind() == ErrorKind::NotFound => 0,
            Err(e) => return Err(io_error(e, "stat", &path)),
        };
        let growth = (chunk.offset + chunk.len).saturating_sub(old_len);
        self.reserve(growth)?;
        let file = match self.open_for_write(&path) {
            Ok(file) => file,
            Err(e) => {
                self.release(growth);
                return Err(e);
            }
        };
        if let Err(e) = file.write_all_at(data, chunk.offset) {
            // Keep the count honest: charge only what the file really grew.
            let new_len = file.metadata().map(|m| m.len()).unwrap_or(old_len);
            self.release(growth.saturating_sub(new_len.saturating_sub(old_len)));
            let err = io_error(e, "write", &path);
            if err.errno == Errno::ENOSPC {
                tracing::warn!("{}", err.message);
            }
            return Err(err);
        }
        Ok(())
    }
}

impl ChunkHandler for ChunkStore {
    fn write_chunk(&self, chunk: &ChunkRef, data: &[u8]) -> SfsResult<()> {
        let _guard = self.lock(chunk.id, chunk.index);
        self.write_locked(chunk, data)
    }

    fn read_chunk(&self, chunk: &ChunkRef, buf: &mut [u8]) -> SfsResult<usize> {
        Ok(self.read_held(chunk, buf)?.unwrap_or(0))
    }
}

impl ChunkStore {
    /// The file of chunk `(id, index)`, open for reading, if it is held
    /// here and not empty (the write-back hands it to a back end that
    /// copies files: [`crate::backend::ObjectBackend::write_from_files`]).
    pub(crate) fn open_held(&self, id: FileId, index: u64) -> SfsResult<Option<File>> {
        let path = self.chunk_path(id, index);
        match File::open(&path).and_then(|f| Ok((f.metadata()?.len(), f))) {
            Ok((0, _)) => Ok(None),
            Ok((_, file)) => Ok(Some(file)),
            Err(e) if e.kind() == ErrorKind::NotFound => Ok(None),
            Err(e) => Err(io_error(e, "open", &path)),
        }
    }

    /// Reads a chunk range; `None` when the chunk is not held here (the
    /// tier then looks in the back end), so a chunk evicted between a check
    /// and the read is never mistaken for a hole.
    pub(crate) fn read_held(&self, chunk: &ChunkRef, buf: &mut [u8]) -> SfsResult<Option<usize>> {
        self.check_range(chunk, buf.len())?;
        let path = self.chunk_path(chunk.id, chunk.index);
        let file = match File::open(&path) {
            Ok(f) => f,
            Err(e) if e.kind() == ErrorKind::NotFound => return Ok(None),
            Err(e) => return Err(io_error(e, "open", &path)),
        };
        let mut filled = 0;
        while filled < buf.len() {
            match file.read_at(&mut buf[filled..], chunk.offset + filled as u64) {
                Ok(0) => break,
                Ok(n) => filled += n,
                Err(e) if e.kind() == ErrorKind::Interrupted => {}
                Err(e) => return Err(io_error(e, "read", &path)),
            }
        }
        Ok(Some(filled))
    }
}

#[cfg(test)]
mod tests;
