//! The open-file table: the descriptors a client hands out, the open file
//! description behind each (flags, offset, current path, size hint) and
//! where a descriptor's offset is kept (in its open file, or by an embedder
//! through [`DescriptorOffsets`]). It is apart from `io.rs`, whose POSIX
//! calls look descriptors up here, because the rest of the crate (orphans,
//! embed, capi) and the shim use these types without the calls.

use crate::Client;
use sfs_global::{Errno, FileId, FileKind, Metadata, SfsError, SfsResult};
use std::collections::HashMap;
use std::sync::atomic::{AtomicBool, AtomicI32, AtomicU64, Ordering};
use std::sync::{Arc, Mutex, RwLock};

/// `open(2)` flags as the C library defines them.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct OpenFlags(pub i32);

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
    pub(crate) fn has(self, flag: i32) -> bool {
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
pub(crate) struct Position<'a> {
    fd: i32,
    local: std::sync::MutexGuard<'a, u64>,
    outside: Option<&'a dyn DescriptorOffsets>,
}

impl Position<'_> {
    pub(crate) fn get(&self) -> SfsResult<u64> {
        match self.outside {
            Some(o) => o.get(self.fd),
            None => Ok(*self.local),
        }
    }

    pub(crate) fn set(&mut self, offset: u64) -> SfsResult<()> {
        match self.outside {
            Some(o) => o.set(self.fd, offset),
            None => {
                *self.local = offset;
                Ok(())
            }
        }
    }

    /// Reserves `len` bytes at the current offset: where they start.
    pub(crate) fn reserve(&mut self, len: u64) -> SfsResult<u64> {
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
    pub(crate) fn give_back(&mut self, at: u64, len: u64) -> SfsResult<()> {
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
    pub(crate) fn insert(&self, file: Arc<OpenFile>) -> SfsResult<i32> {
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

    pub(crate) fn remove(&self, fd: i32) -> SfsResult<Arc<OpenFile>> {
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
    /// Where descriptor `fd`'s offset is kept, with this process's calls on
    /// its open file serialised (as the kernel's per-file offset lock does).
    pub(crate) fn position<'a>(&'a self, fd: i32, file: &'a OpenFile) -> Position<'a> {
        Position {
            fd,
            local: file.offset.lock().expect("offset lock"),
            outside: self.descriptor_offsets.as_deref(),
        }
    }
}
