//! The shim's descriptors: which numbers are SFS descriptors, the kernel
//! placeholders that hold those numbers, the shim's own descriptors, and
//! the one record the shim keeps per SFS descriptor.
//!
//! - **Which numbers**: [`SFS_FDS`], one bit per number, read without locks
//!   by every descriptor hook ([`sfs_fd`]); [`INTERNAL_FDS`], the shim's own
//!   sockets and event descriptors, kept at high numbers.
//! - **Placeholders**: every SFS descriptor is a real kernel descriptor
//!   ([`reserve_fd`]: a new open file description of `/`), so the kernel
//!   never hands its number to anyone else while it is open, and its file
//!   position is the SFS offset ([`KernelOffsets`]).
//! - **The record** ([`Record`]): what the shim itself knows about an SFS
//!   descriptor beyond its bit — the getdents listing read through it and
//!   the lock-file descriptor its `flock` locks live on. One table, created on
//!   first need (most descriptors never get one) and dropped with the bit
//!   by [`take`], which every way a descriptor ends goes through
//!   (`hooks::fd::forget`). The open file itself (path, id, open flags) is
//!   the client's (`sfs_client`'s descriptor table), shared with the C API.

use crate::listing::Listing;
use crate::state::{enter, err, errno, Inside};
use sfs_global::SfsResult;
use std::collections::HashMap;
use std::sync::atomic::{AtomicI32, AtomicU64, AtomicUsize, Ordering};
use std::sync::{Arc, Mutex, MutexGuard, OnceLock};

// ---------------------------------------------------------------------------
// The descriptor set

/// Highest descriptor number (exclusive) the shim hands out.
pub const MAX_FDS: usize = 1 << 20;

/// One bit per descriptor number: set while it is an SFS descriptor. Read
/// without locks by every descriptor hook, so a program that never opened an
/// SFS file pays one load per call.
pub struct SfsFds {
    bits: [AtomicU64; MAX_FDS / 64],
}

pub static SFS_FDS: SfsFds = SfsFds {
    bits: [const { AtomicU64::new(0) }; MAX_FDS / 64],
};

impl SfsFds {
    pub fn contains(&self, fd: i32) -> bool {
        fd >= 0
            && (fd as usize) < MAX_FDS
            && self.bits[fd as usize / 64].load(Ordering::Acquire) & (1 << (fd % 64)) != 0
    }
    pub fn insert(&self, fd: i32) {
        if fd >= 0 && (fd as usize) < MAX_FDS {
            self.bits[fd as usize / 64].fetch_or(1 << (fd % 64), Ordering::AcqRel);
        }
    }
    /// The SFS descriptors in `lo..=hi`, lowest first.
    pub fn in_range(&self, lo: u32, hi: u32) -> Vec<i32> {
        let hi = (hi as usize).min(MAX_FDS - 1);
        let mut out = Vec::new();
        let mut fd = lo as usize;
        while fd <= hi {
            let word = self.bits[fd / 64].load(Ordering::Acquire);
            if word == 0 {
                fd = (fd / 64 + 1) * 64;
                continue;
            }
            if word & (1 << (fd % 64)) != 0 {
                out.push(fd as i32);
            }
            fd += 1;
        }
        out
    }

    pub fn remove(&self, fd: i32) {
        if fd >= 0 && (fd as usize) < MAX_FDS {
            self.bits[fd as usize / 64].fetch_and(!(1 << (fd % 64)), Ordering::AcqRel);
        }
    }
}

/// Enters the shim for an SFS descriptor, or `None` (use the real call).
pub fn sfs_fd(fd: i32) -> Option<Inside> {
    if SFS_FDS.contains(fd) {
        enter()
    } else {
        None
    }
}

/// Descriptors the shim itself uses (the client's sockets, epoll and event
/// descriptors): kept at high numbers, out of the application's way.
pub static INTERNAL_FDS: SfsFds = SfsFds {
    bits: [const { AtomicU64::new(0) }; MAX_FDS / 64],
};

/// Lowest number for the shim's own descriptors: programs pick low numbers
/// themselves (`exec 3>` in a shell, dup2 onto 3..9, bash's 255), so the
/// shim moves its descriptors up near the descriptor limit.
fn internal_base() -> i32 {
    static BASE: OnceLock<i32> = OnceLock::new();
    *BASE.get_or_init(|| {
        // SAFETY: `limit` is written by getrlimit.
        let soft = unsafe {
            let mut limit: libc::rlimit = std::mem::zeroed();
            if libc::getrlimit(libc::RLIMIT_NOFILE, &mut limit) == 0 {
                limit.rlim_cur.min(MAX_FDS as u64) as i32
            } else {
                1024
            }
        };
        if soft >= 2048 {
            soft - 1024
        } else if soft > 512 {
            soft - 256
        } else {
            soft / 2
        }
    })
}

/// Moves a descriptor the shim just created to a high number and records
/// it as internal. On failure (no free high number) the original stays.
pub fn relocate_internal(fd: i32) -> i32 {
    if fd < 0 {
        return fd;
    }
    let base = internal_base();
    let moved = if fd >= base {
        fd
    } else {
        // SAFETY: F_DUPFD_CLOEXEC and close have no memory effects.
        let high = unsafe { raw_syscall!(libc::SYS_fcntl, fd, libc::F_DUPFD_CLOEXEC, base) } as i32;
        if high < 0 {
            fd
        } else {
            release_fd(fd);
            high
        }
    };
    INTERNAL_FDS.insert(moved);
    moved
}

/// A descriptor of `/` (`O_RDONLY|O_DIRECTORY`) at a high number, which new
/// placeholders are opened relative to (`openat(template, ".")`: no walk
/// from the root or the working directory). -1 until first needed, and
/// again if the program closed it (`closefrom`).
static TEMPLATE_FD: AtomicI32 = AtomicI32::new(-1);

fn open_root(flags: i32) -> i64 {
    // SAFETY: the path is a NUL-terminated literal.
    unsafe { raw_syscall!(libc::SYS_openat, libc::AT_FDCWD, c"/".as_ptr(), flags, 0) }
}

/// The template descriptor, opened on first use.
fn template_fd() -> Option<i32> {
    let current = TEMPLATE_FD.load(Ordering::Acquire);
    if current >= 0 {
        return Some(current);
    }
    let fd = open_root(libc::O_RDONLY | libc::O_DIRECTORY | libc::O_CLOEXEC);
    if fd < 0 {
        return None;
    }
    let fd = relocate_internal(fd as i32);
    match TEMPLATE_FD.compare_exchange(-1, fd, Ordering::AcqRel, Ordering::Acquire) {
        Ok(_) => Some(fd),
        Err(theirs) => {
            // Another thread made one first.
            INTERNAL_FDS.remove(fd);
            release_fd(fd);
            Some(theirs)
        }
    }
}

/// Reserves a kernel descriptor for a new SFS descriptor: the lowest free
/// number, as `open` would give. Each one is a new open file description
/// of `/` (never a copy of another descriptor), because the description
/// keeps the SFS descriptor's offset and `O_APPEND` flag
/// ([`KernelOffsets`]); `status` may hold `O_APPEND` and `O_NONBLOCK`
/// (other bits are ignored). Raw system calls: they cannot re-enter the
/// hooks.
pub fn reserve_fd(cloexec: bool, status: i32) -> SfsResult<i32> {
    let flags = libc::O_RDONLY
        | libc::O_DIRECTORY
        | (status & KERNEL_STATUS_FLAGS)
        | if cloexec { libc::O_CLOEXEC } else { 0 };
    let opened = template_fd().map_or(-1, |template| {
        // SAFETY: the path is a NUL-terminated literal.
        let fd = unsafe { raw_syscall!(libc::SYS_openat, template, c".".as_ptr(), flags, 0) };
        if fd < 0 && errno() == libc::EBADF {
            // The program closed the template behind our back: make another
            // next time.
            INTERNAL_FDS.remove(template);
            let _ = TEMPLATE_FD.compare_exchange(template, -1, Ordering::AcqRel, Ordering::Acquire);
        }
        fd
    });
    let fd = if opened >= 0 {
        opened
    } else {
        open_root(flags)
    };
    if fd < 0 {
        return Err(err(errno(), "cannot reserve a descriptor"));
    }
    let fd = fd as i32;
    if fd as usize >= MAX_FDS {
        release_fd(fd);
        return Err(err(
            libc::EMFILE,
            "descriptor number beyond the shim's table",
        ));
    }
    Ok(fd)
}

/// The status flags an SFS descriptor's placeholder carries for it, shared
/// like its offset and changed with `fcntl(F_SETFL)`. (`O_NOATIME` is not
/// among them: only the owner of `/` may set it on the placeholder.)
pub const KERNEL_STATUS_FLAGS: i32 = libc::O_APPEND | libc::O_NONBLOCK;

/// SFS descriptor offsets (and `O_APPEND`) kept by the kernel: each SFS descriptor's
/// placeholder is an open file description of its own (see
/// [`reserve_fd`]), and its file position is the SFS offset. `fork`,
/// `exec`, `dup` and descriptor passing share a description, so they share
/// the offset exactly as for a kernel file, across processes, with no
/// bookkeeping in the shim. Raw `lseek` system calls (never the hook).
pub struct KernelOffsets;

fn kernel_seek(fd: i32, offset: i64, whence: i32) -> SfsResult<u64> {
    // SAFETY: lseek takes numbers only.
    let r = unsafe { raw_syscall!(libc::SYS_lseek, fd, offset, whence) };
    if r < 0 {
        return Err(err(errno(), "moving the descriptor's offset"));
    }
    Ok(r as u64)
}

fn offset_arg(value: u64) -> SfsResult<i64> {
    i64::try_from(value).map_err(|_| err(libc::EFBIG, format!("offset {value} is too large")))
}

impl sfs_client::DescriptorOffsets for KernelOffsets {
    fn get(&self, fd: i32) -> SfsResult<u64> {
        kernel_seek(fd, 0, libc::SEEK_CUR)
    }

    fn set(&self, fd: i32, offset: u64) -> SfsResult<()> {
        kernel_seek(fd, offset_arg(offset)?, libc::SEEK_SET).map(|_| ())
    }

    fn advance(&self, fd: i32, by: u64) -> SfsResult<u64> {
        let after = kernel_seek(fd, offset_arg(by)?, libc::SEEK_CUR).map_err(|e| {
            if e.errno.0 == libc::EINVAL {
                err(libc::EFBIG, "write past the largest file offset")
            } else {
                e
            }
        })?;
        Ok(after - by)
    }

    fn appends(&self, fd: i32) -> SfsResult<bool> {
        // SAFETY: F_GETFL takes numbers only.
        let flags = unsafe { raw_syscall!(libc::SYS_fcntl, fd, libc::F_GETFL) };
        if flags < 0 {
            return Err(err(errno(), "reading the descriptor's status flags"));
        }
        Ok(flags as i32 & libc::O_APPEND != 0)
    }
}

/// Closes a reserved kernel descriptor.
pub fn release_fd(fd: i32) {
    // SAFETY: closing a descriptor number has no memory effects.
    unsafe {
        raw_syscall!(libc::SYS_close, fd);
    }
}

// ---------------------------------------------------------------------------
// The record

/// What the shim keeps about one SFS descriptor besides its bit.
#[derive(Default)]
pub struct Record {
    /// The listing `getdents64` reads through this descriptor (its position
    /// is the descriptor's offset, an entry index).
    pub listing: Option<Listing>,
    /// The lock-file descriptor `flock` locks through this descriptor are
    /// taken on: one per SFS open file description (shared by its
    /// duplicates here and, through `fork`, by its copies in children), so
    /// a `flock` lock lasts until the last of them closes, as the kernel
    /// keeps one.
    pub flock: Option<Arc<InternalFd>>,
}

/// A descriptor the shim opened for itself ([`relocate_internal`]d), closed
/// when dropped.
pub struct InternalFd(i32);

impl InternalFd {
    /// Takes `fd`, a descriptor just opened by the shim: moved up and
    /// recorded as internal.
    pub fn adopt(fd: i32) -> InternalFd {
        InternalFd(relocate_internal(fd))
    }

    pub fn raw(&self) -> i32 {
        self.0
    }
}

impl Drop for InternalFd {
    fn drop(&mut self) {
        INTERNAL_FDS.remove(self.0);
        release_fd(self.0);
    }
}

/// The records, by descriptor number; `RECORDED` counts them so that a
/// close of a descriptor without one (nearly all) takes no lock.
static RECORDS: Mutex<Option<HashMap<i32, Record>>> = Mutex::new(None);
static RECORDED: AtomicUsize = AtomicUsize::new(0);

/// The records, locked.
pub struct Records(MutexGuard<'static, Option<HashMap<i32, Record>>>);

impl Records {
    /// Locks the table (held while the caller works on a record, as a
    /// getdents reads its next page).
    pub fn lock() -> Records {
        Records(RECORDS.lock().unwrap_or_else(|p| p.into_inner()))
    }

    /// `fd`'s record, made empty if it has none.
    pub fn of(&mut self, fd: i32) -> &mut Record {
        let table = self.0.get_or_insert_with(HashMap::new);
        table.entry(fd).or_insert_with(|| {
            RECORDED.fetch_add(1, Ordering::Relaxed);
            Record::default()
        })
    }
}

/// Gives `to`, a new duplicate of SFS descriptor `from` (one open file
/// description), what `from`'s record holds.
pub fn share_record(from: i32, to: i32) {
    if RECORDED.load(Ordering::Relaxed) == 0 {
        return;
    }
    let mut records = Records::lock();
    let Some(record) = records.0.as_ref().and_then(|t| t.get(&from)) else {
        return;
    };
    let flock = record.flock.clone();
    records.of(to).flock = flock;
}

/// Ends SFS descriptor `fd` in the shim: its bit cleared and its record,
/// if it had one, handed back (the caller releases what it holds). The
/// kernel placeholder stays until the caller closes or replaces it.
pub fn take(fd: i32) -> Option<Record> {
    SFS_FDS.remove(fd);
    if RECORDED.load(Ordering::Relaxed) == 0 {
        return None;
    }
    let record = Records::lock().0.as_mut().and_then(|t| t.remove(&fd));
    if record.is_some() {
        RECORDED.fetch_sub(1, Ordering::Relaxed);
    }
    record
}
