//! Open files and their data: the open-file table, read/write/seek/sync.
//!
//! A write is split by chunk (`sfs_global::chunk::split`); every piece goes
//! to its chunk's owner and, at the same time, "size is at least my end" goes
//! to the metadata owner, which merges it. The write returns when both are
//! done, so a read after a completed write sees its data and size; a reader
//! running *during* a write may see the new size before the data (zeros).
//! `O_APPEND` first reserves its range atomically on the owner. A read asks
//! the owner for the size while it fetches the pieces in parallel; bytes no
//! chunk holds (holes) read as zeros.

use crate::calls::chunk_range;
use crate::namespace::NewEntry;
use crate::Client;
use futures::stream::{self, StreamExt, TryStreamExt};
use sfs_global::chunk::{split, ChunkPiece as Piece, MAX_FILE_SIZE};
use sfs_global::config::WritebackPolicy;
use sfs_global::{Errno, FileId, FileKind, Metadata, SfsError, SfsResult};
use sfs_rdma::ChunkRef;
use sfs_rpc::pb;
use std::collections::HashMap;
use std::sync::atomic::{AtomicBool, AtomicI32, AtomicU64, Ordering};
use std::sync::{Arc, Mutex, RwLock};

/// Chunk pieces of one call in flight at once (across all servers).
const PIECES_IN_FLIGHT: usize = 32;

/// `open(2)` flags as the C library defines them.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct OpenFlags(pub i32);

/// Symlinks an `open(O_CREAT)` follows before ELOOP, as Linux's MAXSYMLINKS.
const MAX_CREATE_HOPS: usize = 40;

impl OpenFile {
    pub(crate) fn new(path: String, md: &Metadata, flags: OpenFlags) -> Arc<OpenFile> {
        Arc::new(OpenFile {
            path: RwLock::new(path),
            id: md.id,
            kind: md.kind(),
            flags,
            offset: Mutex::new(0),
            size_hint: AtomicU64::new(if flags.has(libc::O_TRUNC) { 0 } else { md.size }),
            written: AtomicBool::new(false),
            drop_privileges: AtomicBool::new(
                flags.writable()
                    && md.kind() == FileKind::File
                    && sfs_global::access::without_privileges(md.mode & 0o7777) != md.mode & 0o7777,
            ),
        })
    }

    /// The file's current SFS path.
    pub fn path(&self) -> String {
        self.path.read().expect("path lock").clone()
    }

    pub(crate) fn set_path(&self, path: String) {
        *self.path.write().expect("path lock") = path;
    }
}

impl OpenFlags {
    fn access(self) -> i32 {
        self.0 & libc::O_ACCMODE
    }
    pub(crate) fn readable(self) -> bool {
        self.access() == libc::O_RDONLY || self.access() == libc::O_RDWR
    }
    pub(crate) fn writable(self) -> bool {
        self.access() == libc::O_WRONLY || self.access() == libc::O_RDWR
    }
    fn has(self, flag: i32) -> bool {
        self.0 & flag != 0
    }
    /// The permissions an open with these flags needs on an existing
    /// file, as open(2): read and/or write by the access mode, write for
    /// `O_TRUNC` (`sfs_global::access` bits).
    pub(crate) fn access_mask(self) -> u32 {
        use sfs_global::access::{MAY_READ, MAY_WRITE};
        let mut mask = 0;
        if self.readable() {
            mask |= MAY_READ;
        }
        if self.writable() || self.has(libc::O_TRUNC) {
            mask |= MAY_WRITE;
        }
        mask
    }
}

/// `lseek(2)` origins.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Whence {
    Set,
    Current,
    End,
    /// Next offset holding data (SFS reports the whole file as data).
    Data,
    /// Next hole (SFS reports only the end of the file).
    Hole,
}

impl Whence {
    /// From the C constants; EINVAL for anything else.
    pub fn from_raw(whence: i32) -> SfsResult<Whence> {
        match whence {
            libc::SEEK_SET => Ok(Whence::Set),
            libc::SEEK_CUR => Ok(Whence::Current),
            libc::SEEK_END => Ok(Whence::End),
            libc::SEEK_DATA => Ok(Whence::Data),
            libc::SEEK_HOLE => Ok(Whence::Hole),
            other => Err(SfsError::invalid(format!("lseek: bad whence {other}"))),
        }
    }
}

/// One open file description (shared by `dup`ed descriptors).
pub(crate) struct OpenFile {
    /// Where the file is now: changes when this client renames it or
    /// orphans it (unlink while open, see [`crate::orphans`]).
    path: RwLock<String>,
    pub id: FileId,
    pub kind: FileKind,
    pub flags: OpenFlags,
    pub offset: Mutex<u64>,
    /// The last size this description saw (open, read, write): how far a
    /// read fetches chunks before it knows the current size.
    pub size_hint: AtomicU64,
    /// Whether data was written through this description (its last close
    /// then asks for a write-back under the `close` policy).
    pub written: AtomicBool,
    /// Whether the file had `S_ISUID` (or `S_ISGID` with group execute)
    /// when opened for writing and this description has not written yet:
    /// its first write asks the server to clear them (which it does unless
    /// the caller is root), as a write does in Linux.
    pub drop_privileges: AtomicBool,
}

/// Where an embedding process keeps the shared state of the open file
/// descriptions it opens at numbers of its own ([`Client::open_at_fd`]):
/// the offset and the `O_APPEND` status flag. The LD_PRELOAD shim keeps
/// them in the kernel's open file description of the descriptor's
/// placeholder, which `fork`, `exec` and `dup` share exactly as they share
/// a kernel file's: a shell and the children it starts on one `>` file then
/// write one after another instead of over each other, and `fcntl(F_SETFL,
/// O_APPEND)` in one process holds for all of them.
pub trait DescriptorOffsets: Send + Sync {
    /// The offset of descriptor `fd`.
    fn get(&self, fd: i32) -> SfsResult<u64>;
    /// Moves it to `offset`.
    fn set(&self, fd: i32, offset: u64) -> SfsResult<()>;
    /// Moves it forward by `by` in one atomic step (against every process
    /// sharing the description) and returns where it was.
    fn advance(&self, fd: i32, by: u64) -> SfsResult<u64>;
    /// True if writes through descriptor `fd` append (`O_APPEND`, as set at
    /// open or later with `fcntl(F_SETFL)`).
    fn appends(&self, fd: i32) -> SfsResult<bool>;
}

/// A descriptor's offset during one call: kept in its open file (a library
/// client's own descriptors) or by the embedder ([`DescriptorOffsets`]).
/// Holds the open file's lock, so this process's calls on it take turns.
struct Position<'a> {
    fd: i32,
    local: std::sync::MutexGuard<'a, u64>,
    outside: Option<&'a dyn DescriptorOffsets>,
}

impl Position<'_> {
    fn get(&self) -> SfsResult<u64> {
        match self.outside {
            Some(o) => o.get(self.fd),
            None => Ok(*self.local),
        }
    }

    fn set(&mut self, offset: u64) -> SfsResult<()> {
        match self.outside {
            Some(o) => o.set(self.fd, offset),
            None => {
                *self.local = offset;
                Ok(())
            }
        }
    }

    /// Reserves `len` bytes at the current offset: where they start.
    fn reserve(&mut self, len: u64) -> SfsResult<u64> {
        match self.outside {
            Some(o) => o.advance(self.fd, len),
            None => {
                let at = *self.local;
                *self.local = at.saturating_add(len);
                Ok(at)
            }
        }
    }

    /// Undoes [`Position::reserve`] after a failed write, unless another
    /// process sharing the description moved the offset since.
    fn give_back(&mut self, at: u64, len: u64) -> SfsResult<()> {
        if self.get()? == at.saturating_add(len) {
            self.set(at)?;
        }
        Ok(())
    }
}

/// The client's open files by descriptor number; safe for many threads.
pub struct FileTable {
    files: RwLock<HashMap<i32, Arc<OpenFile>>>,
    next_fd: AtomicI32,
}

impl Default for FileTable {
    fn default() -> Self {
        FileTable {
            files: RwLock::new(HashMap::new()),
            next_fd: AtomicI32::new(3),
        }
    }
}

impl FileTable {
    fn insert(&self, file: Arc<OpenFile>) -> SfsResult<i32> {
        let mut files = self.files.write().expect("file table lock");
        for _ in 0..i32::MAX {
            let fd = self.next_fd.fetch_add(1, Ordering::Relaxed);
            if fd < 3 {
                self.next_fd.store(3, Ordering::Relaxed);
                continue;
            }
            if let std::collections::hash_map::Entry::Vacant(v) = files.entry(fd) {
                v.insert(file);
                return Ok(fd);
            }
        }
        Err(SfsError::new(Errno::EMFILE, "no free SFS descriptor"))
    }

    /// Places `file` at descriptor `fd` (chosen by the caller), replacing
    /// whatever was there.
    pub(crate) fn insert_at(&self, fd: i32, file: Arc<OpenFile>) {
        self.files
            .write()
            .expect("file table lock")
            .insert(fd, file);
    }

    /// Every open descriptor with its open file, in no particular order.
    pub(crate) fn snapshot(&self) -> Vec<(i32, Arc<OpenFile>)> {
        self.files
            .read()
            .expect("file table lock")
            .iter()
            .map(|(fd, f)| (*fd, f.clone()))
            .collect()
    }

    pub(crate) fn get(&self, fd: i32) -> SfsResult<Arc<OpenFile>> {
        self.files
            .read()
            .expect("file table lock")
            .get(&fd)
            .cloned()
            .ok_or_else(|| SfsError::bad_fd(fd.into()))
    }

    fn remove(&self, fd: i32) -> SfsResult<Arc<OpenFile>> {
        self.files
            .write()
            .expect("file table lock")
            .remove(&fd)
            .ok_or_else(|| SfsError::bad_fd(fd.into()))
    }

    /// Number of open descriptors.
    pub fn len(&self) -> usize {
        self.files.read().expect("file table lock").len()
    }

    pub fn is_empty(&self) -> bool {
        self.len() == 0
    }
}

impl Client {
    /// `open(2)`: returns an SFS descriptor. Honours O_CREAT, O_EXCL, O_TRUNC,
    /// O_APPEND, O_DIRECTORY and O_NOFOLLOW; a directory opens read-only.
    pub fn open(&self, path: &str, flags: i32, mode: u32) -> SfsResult<i32> {
        let file = self.open_file(path, flags, mode)?;
        self.files.insert(file)
    }

    /// The open file description `open` would create, not yet in the table.
    pub(crate) fn open_file(&self, path: &str, flags: i32, mode: u32) -> SfsResult<Arc<OpenFile>> {
        self.through_dirs(path, |path| self.open_normal(path, flags, mode))
    }

    /// [`Client::open_file`] of a normalised path.
    fn open_normal(&self, path: String, flags: i32, mode: u32) -> SfsResult<Arc<OpenFile>> {
        if flags & libc::O_TMPFILE == libc::O_TMPFILE {
            return self.open_unnamed(&path, flags, mode);
        }
        let flags = OpenFlags(flags);
        let (path, md) = self.block_on(async {
            let (path, md) = self.open_entry(&path, flags, mode).await?;
            self.tell_source(&md).await?;
            Ok::<_, SfsError>((path, md))
        })?;
        // As Linux: a directory opens only to read, and not with O_CREAT
        // (even one that exists) or O_TRUNC.
        if md.is_dir() && (flags.writable() || flags.has(libc::O_CREAT) || flags.has(libc::O_TRUNC))
        {
            return Err(SfsError::is_dir(&path));
        }
        if md.kind().is_special() {
            // FIFOs, sockets and devices are names with a type and a mode:
            // nothing behind them to read or write (docs/semantics.md).
            return Err(SfsError::new(
                Errno::ENXIO,
                format!("{path}: a FIFO, socket or device on SFS cannot be opened"),
            ));
        }
        if flags.has(libc::O_DIRECTORY) && !md.is_dir() {
            return Err(SfsError::not_dir(&path));
        }
        if flags.has(libc::O_TRUNC)
            && flags.writable()
            && md.kind() == FileKind::File
            && md.size > 0
        {
            // The open checked write permission (or made the file).
            let at = self.attributes_at(&path, md.id);
            self.block_on(self.truncate_resolved(&at, 0, true))?;
        }
        Ok(OpenFile::new(path, &md, flags))
    }

    /// Cache mode: tells the servers that hold chunks of `md`, a file
    /// taken from the backing directory, where its bytes come from (they
    /// read them through by chunk); once per file and client, before the
    /// first read or write through any descriptor of it.
    pub(crate) async fn tell_source(&self, md: &Metadata) -> SfsResult<()> {
        if md.source.is_empty() || md.kind() != FileKind::File || md.source_len == 0 {
            return Ok(());
        }
        if self.sourced.lock().expect("sourced lock").contains(&md.id) {
            return Ok(());
        }
        // The servers of its chunks below source_len: every server soon for
        // a large file, one for a file of one chunk.
        let chunks = md.source_len.div_ceil(self.config.chunk_size);
        let mut servers = std::collections::BTreeSet::new();
        for index in 0..chunks {
            servers.insert(self.distributor.chunk_server(md.id, index));
            if servers.len() == self.distributor.servers() {
                break;
            }
        }
        let told = servers.into_iter().map(|server| async move {
            self.server(server)
                .await?
                .set_source(md.id, &md.source, md.source_len)
                .await
        });
        futures::future::try_join_all(told).await?;
        self.sourced.lock().expect("sourced lock").insert(md.id);
        Ok(())
    }

    async fn open_entry(
        &self,
        path: &str,
        flags: OpenFlags,
        mode: u32,
    ) -> SfsResult<(String, Metadata)> {
        let access = flags.access_mask();
        if flags.has(libc::O_CREAT) {
            let exclusive = flags.has(libc::O_EXCL);
            match self
                .create_entry(path, NewEntry::of(FileKind::File, mode), exclusive, access)
                .await
            {
                Ok((md, _)) if md.kind() != FileKind::Symlink => return Ok((path.to_string(), md)),
                Ok(_) if flags.has(libc::O_NOFOLLOW) => {
                    return Err(SfsError::new(
                        Errno::ELOOP,
                        format!("{path}: is a symbolic link (O_NOFOLLOW)"),
                    ))
                }
                Ok((link, _)) => return self.create_through(path, link, mode, access).await,
                Err(e) => return Err(e),
            }
        }
        let md = self.lookup_access(path, access).await?;
        if md.kind() == FileKind::Symlink {
            if flags.has(libc::O_NOFOLLOW) {
                return Err(SfsError::new(
                    Errno::ELOOP,
                    format!("{path}: is a symbolic link (O_NOFOLLOW)"),
                ));
            }
            return self.resolve_access(path, access).await;
        }
        Ok((path.to_string(), md))
    }

    /// `open(O_CREAT)` (without `O_EXCL`) that found the symlink `link` at
    /// `path`: opens what the chain of symlinks leads to, creating a
    /// regular file where it ends at a missing name (Linux creates the
    /// target of a dangling symlink); ELOOP past 40 links.
    async fn create_through(
        &self,
        path: &str,
        link: Metadata,
        mode: u32,
        access: u32,
    ) -> SfsResult<(String, Metadata)> {
        let (mut at, mut md) = (path.to_string(), link);
        for _ in 0..MAX_CREATE_HOPS {
            let leads_to = self.link_destination(&at, &md.link_target)?;
            let (found, _) = self
                .create_entry(&leads_to, NewEntry::of(FileKind::File, mode), false, access)
                .await?;
            if found.kind() != FileKind::Symlink {
                return Ok((leads_to, found));
            }
            (at, md) = (leads_to, found);
        }
        Err(SfsError::new(
            Errno::ELOOP,
            format!("{path}: too many levels of symbolic links"),
        ))
    }

    /// Reads up to `buf.len()` bytes at `offset` of the file at `path`
    /// (following symlinks) without a descriptor: what the LD_PRELOAD shim
    /// uses to load a program stored in SFS for `exec`. EISDIR for a
    /// directory.
    pub fn read_at_path(&self, path: &str, offset: u64, buf: &mut [u8]) -> SfsResult<usize> {
        let file = self.open_file(path, libc::O_RDONLY, 0)?;
        if file.kind == FileKind::Directory {
            return Err(SfsError::is_dir(file.path()));
        }
        self.block_on(self.read_data(&file, offset, buf))
    }

    /// `close(2)`. The last close of a file this client orphaned (unlinked
    /// while open) removes it.
    pub fn close(&self, fd: i32) -> SfsResult<()> {
        let file = self.files.remove(fd)?;
        if self.orphans.contains(file.id) {
            self.release_orphan_if_last(file.id);
        } else if self.config.backend.writeback == WritebackPolicy::Close
            && file.written.load(Ordering::Relaxed)
            && Arc::strong_count(&file) == 1
        {
            // The last descriptor of a description that wrote: the servers
            // write the file back now (docs/tiering.md). A hint: close
            // itself succeeded whatever the servers answer.
            let hinted = self.block_on(self.on_all_servers(|h| h.write_back_soon(file.id)));
            if let Err(e) = hinted {
                tracing::debug!("close of {}: write-back hint failed: {e}", file.path());
            }
        }
        Ok(())
    }

    /// `dup(2)`: a new descriptor sharing the open file and its offset.
    pub fn dup(&self, fd: i32) -> SfsResult<i32> {
        let file = self.files.get(fd)?;
        self.files.insert(file)
    }

    /// The SFS path an open descriptor was opened with.
    pub fn fd_path(&self, fd: i32) -> SfsResult<String> {
        Ok(self.files.get(fd)?.path())
    }

    /// Where descriptor `fd`'s offset is kept, with this process's calls on
    /// its open file serialised (as the kernel's per-file offset lock does).
    fn position<'a>(&'a self, fd: i32, file: &'a OpenFile) -> Position<'a> {
        Position {
            fd,
            local: file.offset.lock().expect("offset lock"),
            outside: self.descriptor_offsets.as_deref(),
        }
    }

    /// `write(2)` at the descriptor's offset (or at the end with O_APPEND).
    pub fn write(&self, fd: i32, buf: &[u8]) -> SfsResult<usize> {
        let file = self.writable_file(fd)?;
        let mut position = self.position(fd, &file);
        let len = buf.len() as u64;
        let appends = match self.descriptor_offsets.as_deref() {
            Some(outside) => outside.appends(fd)?,
            None => file.flags.has(libc::O_APPEND),
        };
        if appends {
            let at = self.block_on(self.reserve_append(&file.path(), file.id, len))?;
            let n = self.block_on(self.write_data(&file, at, buf, false))?;
            position.set(at + n as u64)?;
            return Ok(n);
        }
        // Reserved before the data moves, so that processes writing through
        // one shared description (a shell and its children on one `>` file)
        // get consecutive ranges, as from the kernel.
        let at = position.reserve(len)?;
        match self.block_on(self.write_data(&file, at, buf, true)) {
            Ok(n) => Ok(n),
            Err(e) => {
                position.give_back(at, len)?;
                Err(e)
            }
        }
    }

    /// `pwrite(2)`.
    pub fn pwrite(&self, fd: i32, buf: &[u8], offset: u64) -> SfsResult<usize> {
        let file = self.writable_file(fd)?;
        self.block_on(self.write_data(&file, offset, buf, true))
    }

    /// `read(2)` at the descriptor's offset.
    pub fn read(&self, fd: i32, buf: &mut [u8]) -> SfsResult<usize> {
        let file = self.readable_file(fd)?;
        let mut position = self.position(fd, &file);
        let at = position.get()?;
        let n = self.block_on(self.read_data(&file, at, buf))?;
        position.set(at + n as u64)?;
        Ok(n)
    }

    /// `pread(2)`.
    pub fn pread(&self, fd: i32, buf: &mut [u8], offset: u64) -> SfsResult<usize> {
        let file = self.readable_file(fd)?;
        self.block_on(self.read_data(&file, offset, buf))
    }

    /// `lseek(2)`.
    pub fn lseek(&self, fd: i32, offset: i64, whence: Whence) -> SfsResult<u64> {
        let file = self.files.get(fd)?;
        let mut position = self.position(fd, &file);
        let size = || -> SfsResult<i64> {
            let at = self.attributes_at(&file.path(), file.id);
            Ok(self.block_on(self.lookup_open(&at, file.id))?.size as i64)
        };
        let target = match whence {
            Whence::Set => Some(offset),
            Whence::Current => (position.get()? as i64).checked_add(offset),
            Whence::End => size()?.checked_add(offset),
            Whence::Data | Whence::Hole => {
                let size = size()?;
                if offset < 0 || offset >= size {
                    return Err(SfsError::new(
                        Errno(libc::ENXIO),
                        format!("lseek: offset {offset} is past the end"),
                    ));
                }
                Some(if whence == Whence::Data { offset } else { size })
            }
        };
        match target {
            Some(t) if t >= 0 => {
                position.set(t as u64)?;
                Ok(t as u64)
            }
            _ => Err(SfsError::invalid(format!(
                "lseek: resulting offset is negative or overflows ({offset})"
            ))),
        }
    }

    /// The current offset of descriptor `fd`.
    pub(crate) fn offset_of(&self, fd: i32) -> SfsResult<u64> {
        let file = self.files.get(fd)?;
        let position = self.position(fd, &file);
        position.get()
    }

    /// `fstat(2)`; `st_nlink` is 0 for a file unlinked while open.
    pub fn fstat(&self, fd: i32) -> SfsResult<Metadata> {
        let file = self.files.get(fd)?;
        let at = self.attributes_at(&file.path(), file.id);
        let mut md = self.block_on(async {
            if file.kind == FileKind::Directory {
                self.settle_dir_times(&at).await;
            }
            self.lookup_open(&at, file.id).await
        })?;
        if self.orphans.contains(file.id) {
            // Its hidden name is not one of its names.
            md.nlink = md.nlink.saturating_sub(1);
        }
        Ok(md)
    }

    /// `ftruncate(2)`: EINVAL unless open for writing.
    pub fn ftruncate(&self, fd: i32, size: u64) -> SfsResult<()> {
        let file = self.files.get(fd)?;
        if !file.flags.writable() || file.kind != FileKind::File {
            return Err(SfsError::invalid(format!(
                "ftruncate: descriptor {fd} is not open for writing a file"
            )));
        }
        let at = self.attributes_at(&file.path(), file.id);
        self.block_on(self.truncate_resolved(&at, size, true))
    }

    /// `fsync(2)`: when it returns, the file's chunks on every server and the
    /// metadata on its owner are durable; with `backend.fsync_to_backend`,
    /// the object back end also holds the file (as after [`Client::flush`]).
    pub fn fsync(&self, fd: i32) -> SfsResult<()> {
        let file = self.files.get(fd)?;
        self.block_on(async {
            let id = file.id;
            if file.kind == FileKind::File {
                self.on_all_servers(|h| h.sync_chunks(id)).await?;
                if self.config.backend.fsync_to_backend {
                    // Back-end-persistent too (config backend.fsync_to_backend).
                    self.on_all_servers(|h| h.flush_chunks(id, None)).await?;
                }
            }
            let (path, at) = (file.path(), self.attributes_at(&file.path(), file.id));
            let owners = [&path, &at].map(|p| self.distributor.metadata_server(p));
            self.server(owners[0]).await?.sync_metadata().await?;
            if owners[1] != owners[0] {
                // A hard-linked file's attributes live elsewhere.
                self.server(owners[1]).await?.sync_metadata().await?;
            }
            Ok(())
        })
    }

    /// `fdatasync(2)`: as [`Client::fsync`] (SFS has no cheaper subset).
    pub fn fdatasync(&self, fd: i32) -> SfsResult<()> {
        self.fsync(fd)
    }

    /// `sync(2)` for SFS: every server makes all its metadata durable.
    pub fn sync_all(&self) -> SfsResult<()> {
        self.block_on(async { self.on_all_servers(|h| h.sync_metadata()).await.map(|_| ()) })
    }

    fn writable_file(&self, fd: i32) -> SfsResult<Arc<OpenFile>> {
        let file = self.files.get(fd)?;
        if !file.flags.writable() {
            return Err(SfsError::bad_fd(fd.into()));
        }
        if file.kind == FileKind::Directory {
            return Err(SfsError::is_dir(file.path()));
        }
        Ok(file)
    }

    fn readable_file(&self, fd: i32) -> SfsResult<Arc<OpenFile>> {
        let file = self.files.get(fd)?;
        if !file.flags.readable() {
            return Err(SfsError::bad_fd(fd.into()));
        }
        if file.kind == FileKind::Directory {
            return Err(SfsError::is_dir(file.path()));
        }
        Ok(file)
    }

    async fn reserve_append(&self, path: &str, id: FileId, len: u64) -> SfsResult<u64> {
        self.on_attributes(path, Some(id), |at| async move {
            self.owner(&at).await?.reserve_append(&at, id, len).await
        })
        .await
    }

    /// Places `buf` at `offset` on the chunk owners and (if `grow`) merges
    /// the new end into the size on the metadata owner, both at once.
    async fn write_data(
        &self,
        file: &OpenFile,
        offset: u64,
        buf: &[u8],
        grow: bool,
    ) -> SfsResult<usize> {
        if buf.is_empty() {
            return Ok(0);
        }
        file.written.store(true, Ordering::Relaxed);
        // Loaded first: every write reads it, only the first may clear it.
        if file.drop_privileges.load(Ordering::Relaxed)
            && file.drop_privileges.swap(false, Ordering::Relaxed)
        {
            let path = self.attributes_at(&file.path(), file.id);
            let req = pb::SetAttrRequest {
                path: path.clone(),
                drop_privileges: true,
                ..Default::default()
            };
            match self.set_attr(&path, req).await {
                // Write permission taken away since the open: the write
                // goes on (checked at open), the bits stay.
                Err(e) if e.errno == Errno::EACCES => {}
                other => {
                    other?;
                }
            }
        }
        let end = offset
            .checked_add(buf.len() as u64)
            .filter(|&e| e <= MAX_FILE_SIZE)
            .ok_or_else(|| {
                SfsError::new(
                    Errno::EFBIG,
                    format!("write past the largest file size at offset {offset}"),
                )
            })?;
        let chunk_size = self.config.chunk_size;
        let pieces: Vec<Piece> = split(offset, buf.len() as u64, chunk_size).collect();
        let grow_request =
            crate::calls::grow_of(&self.attributes_at(&file.path(), file.id), file.id, end);
        // A small piece whose chunk server also holds the file's entry can
        // carry the size update: then the write is one call to that server.
        let carrier = match grow {
            true => self.carrier(&grow_request.path, file, &pieces).await?,
            false => None,
        };
        let regrow = AtomicBool::new(false);
        let place = stream::iter(pieces.iter().enumerate())
            .map(|(i, piece)| {
                let grow_request = &grow_request;
                let regrow = &regrow;
                async move {
                    let server = self.distributor.chunk_server(file.id, piece.index);
                    let data =
                        &buf[piece.buf_offset as usize..(piece.buf_offset + piece.len) as usize];
                    let chunk = chunk_of(file.id, piece);
                    let handle = self.server(server).await?;
                    if carrier == Some(i) {
                        let carried = handle
                            .rpc
                            .write_chunk(pb::WriteChunkRequest {
                                range: Some(chunk_range(&chunk)),
                                data: data.to_vec(),
                                grow: Some(grow_request.clone()),
                            })
                            .await;
                        return match carried {
                            // The bytes are placed; the size is the shared
                            // entry's (linked by another client since).
                            Err(e) if e.errno == Errno::EREMCHG => {
                                regrow.store(true, Ordering::Relaxed);
                                Ok(())
                            }
                            other => other.map(|_| ()),
                        };
                    }
                    handle.data.write_chunk(chunk, data).await
                }
            })
            .buffer_unordered(PIECES_IN_FLIGHT)
            .try_collect::<Vec<()>>();
        // Otherwise the size update travels with the data instead of after
        // it: one round trip less per write. If placing the data fails the
        // size may still have grown; the range then reads as a hole (zeros)
        // and the caller gets the error (docs/semantics.md).
        let grow_size = async {
            if !grow || carrier.is_some() {
                return Ok(());
            }
            self.owner(&grow_request.path)
                .await?
                .rpc
                .grow_size(grow_request.clone())
                .await
                .map(|_| ())
        };
        let (placed, grown) = futures::join!(place, grow_size);
        let redirected =
            regrow.load(Ordering::Relaxed) || matches!(&grown, Err(e) if e.errno == Errno::EREMCHG);
        let grown = match redirected {
            // Linked by another client since: the size is the shared
            // entry's (the data is placed either way).
            true => {
                self.remember_shared(file.id);
                self.on_attributes(&file.path(), Some(file.id), |at| {
                    let request = pb::GrowSizeRequest {
                        path: at.clone(),
                        ..grow_request.clone()
                    };
                    async move { self.owner(&at).await?.rpc.grow_size(request).await }
                })
                .await
                .map(|_| ())
            }
            false => grown,
        };
        // A definite answer about the file (renamed away, replaced) matters
        // more than a transient failure placing data.
        match (placed, grown) {
            (_, Err(e)) if matches!(e.errno, Errno::ESTALE | Errno::ENOENT) => return Err(e),
            (Err(e), _) | (_, Err(e)) => return Err(e),
            _ => {}
        }
        file.size_hint.fetch_max(end, Ordering::Relaxed);
        Ok(buf.len())
    }

    /// Reads up to `buf.len()` bytes at `offset`, short at the end of file.
    ///
    /// The size lookup and the chunk reads go out together (one round trip,
    /// not two); bytes fetched past the end of file are not reported.
    async fn read_data(&self, file: &OpenFile, offset: u64, buf: &mut [u8]) -> SfsResult<usize> {
        if buf.is_empty() {
            return Ok(0);
        }
        let want = (buf.len() as u64).min(MAX_FILE_SIZE.saturating_sub(offset));
        if want == 0 {
            return Ok(0);
        }
        // First round, together with the size lookup: up to the size last
        // seen (at least one byte), so a large buffer on a small file asks
        // for no chunk that cannot exist, and the caller's bytes past the
        // end of the file are left as they were (CPython's `readinto`
        // relies on it). A file that grew since costs a second round.
        let hint = file.size_hint.load(Ordering::Relaxed).max(offset + 1);
        let first_end = hint;
        let first_len = first_end.min(offset + want) - offset;
        let (head, tail) = buf[..want as usize].split_at_mut(first_len as usize);
        let (size, fetched) = self.first_round(file, offset, head).await;
        let size = size?.size;
        file.size_hint.store(size, Ordering::Relaxed);
        if offset >= size {
            return Ok(0);
        }
        let end = size.min(offset + want);
        // Only pieces holding bytes below the size count: a server that
        // holds nothing this read returns cannot fail it.
        if let Some(e) = first_error(fetched, end) {
            return Err(e);
        }
        if end > first_end {
            // The file grew beyond the size last seen: fetch the rest.
            let rest = &mut tail[..(end - first_end) as usize];
            if let Some(e) = first_error(self.fetch(file, first_end, rest).await, end) {
                return Err(e);
            }
        }
        Ok((end - offset) as usize)
    }

    /// The piece (an index into `pieces`) that can carry a call to the
    /// file's metadata server: small, held by that same server, and the
    /// lean RPC in use with it; `None` when none can.
    /// `at`: where the file's attributes live ([`Client::attributes_at`]).
    async fn carrier(
        &self,
        at: &str,
        file: &OpenFile,
        pieces: &[Piece],
    ) -> SfsResult<Option<usize>> {
        let owner = self.distributor.metadata_server(at);
        let limit = self.server(owner).await?.inline_limit;
        Ok(pieces.iter().position(|p| {
            p.len <= limit && self.distributor.chunk_server(file.id, p.index) == owner
        }))
    }

    /// The first round of a read: the file's current entry and the pieces
    /// of `buf` at `offset`, all at once. When the first piece's server
    /// also holds the entry (and takes small pieces over the lean RPC), the
    /// entry comes with that piece: one call instead of two.
    async fn first_round(
        &self,
        file: &OpenFile,
        offset: u64,
        buf: &mut [u8],
    ) -> (SfsResult<Metadata>, Vec<(u64, SfsResult<()>)>) {
        let path = self.attributes_at(&file.path(), file.id);
        let first = split(offset, buf.len() as u64, self.config.chunk_size).next();
        let carrier = match first {
            Some(piece) => {
                self.carrier(&path, file, std::slice::from_ref(&piece))
                    .await
            }
            None => Ok(None),
        };
        let (Ok(Some(_)), Some(piece)) = (carrier, first) else {
            return futures::join!(
                self.lookup_open(&path, file.id),
                self.fetch(file, offset, buf)
            );
        };
        let (head, rest) = buf.split_at_mut(piece.len as usize);
        let chunk = chunk_of(file.id, &piece);
        let combined = async {
            let handle = self.owner(&path).await?;
            let answer = handle
                .rpc
                .read_chunk(pb::ReadChunkRequest {
                    range: Some(chunk_range(&chunk)),
                    stat: Some(crate::calls::stat_of(&path, Some(file.id))),
                })
                .await?;
            let mut entry = answer
                .entry
                .as_ref()
                .map(Metadata::from)
                .ok_or_else(|| SfsError::io("server answered a read without the entry"))?;
            if entry.is_name_of_shared() {
                // Linked by another client since the open.
                entry = self.shared_entry(&entry, 0, None).await?;
            }
            let n = answer.data.len().min(head.len());
            head[..n].copy_from_slice(&answer.data[..n]);
            head[n..].fill(0);
            Ok::<_, SfsError>(entry)
        };
        let (entry, mut fetched) =
            futures::join!(combined, self.fetch(file, offset + piece.len, rest));
        let piece_result = entry.as_ref().map(|_| ()).map_err(Clone::clone);
        fetched.push((offset, piece_result));
        (entry, fetched)
    }

    /// Reads `buf.len()` bytes at `offset` from the chunk owners, in parallel,
    /// zero-filling holes; returns each piece's file range and outcome.
    async fn fetch(
        &self,
        file: &OpenFile,
        offset: u64,
        buf: &mut [u8],
    ) -> Vec<(u64, SfsResult<()>)> {
        let mut rest = buf;
        let mut jobs = Vec::new();
        for piece in split(offset, rest.len() as u64, self.config.chunk_size) {
            let (head, tail) = std::mem::take(&mut rest).split_at_mut(piece.len as usize);
            rest = tail;
            jobs.push((piece, head));
        }
        stream::iter(jobs)
            .map(|(piece, out)| async move {
                let server = self.distributor.chunk_server(file.id, piece.index);
                let chunk = ChunkRef {
                    id: file.id,
                    index: piece.index,
                    offset: piece.offset_in_chunk,
                    len: piece.len,
                };
                let result = async {
                    let held = self
                        .server(server)
                        .await?
                        .data
                        .read_chunk(chunk, out)
                        .await?;
                    out[held..].fill(0); // a hole, or a chunk shorter than the file
                    Ok(())
                }
                .await;
                (offset + piece.buf_offset, result)
            })
            .buffer_unordered(PIECES_IN_FLIGHT)
            .collect()
            .await
    }
}

/// The chunk range of a piece of file `id`.
fn chunk_of(id: FileId, piece: &Piece) -> ChunkRef {
    ChunkRef {
        id,
        index: piece.index,
        offset: piece.offset_in_chunk,
        len: piece.len,
    }
}

/// The first failure among fetched pieces that start below `end`.
fn first_error(pieces: Vec<(u64, SfsResult<()>)>, end: u64) -> Option<SfsError> {
    pieces
        .into_iter()
        .filter(|(start, _)| *start < end)
        .find_map(|(_, r)| r.err())
}
