//! The open family: open, open64, openat, openat64, creat, creat64 and the
//! fortified `__open_2` variants.

use crate::paths::{follow_tail, sfs_path_tail};
use crate::state::{self, run, with_client, SFS_FDS};
use libc::{c_char, c_int, mode_t};
use sfs_global::SfsResult;
use std::sync::atomic::{AtomicU32, Ordering};

/// The process umask, learnt on first use and kept current by the `umask`
/// hook (the kernel applies it to creates; SFS must do it itself).
static UMASK: AtomicU32 = AtomicU32::new(u32::MAX);

pub fn umask_value() -> u32 {
    let cached = UMASK.load(Ordering::Relaxed);
    if cached != u32::MAX {
        return cached;
    }
    // SAFETY: umask has no memory effects; the second call restores it.
    let current = unsafe {
        let m = libc::umask(0o022);
        libc::umask(m);
        m
    };
    UMASK.store(current, Ordering::Relaxed);
    current
}

pub(crate) unsafe fn sfs_umask(mask: mode_t) -> mode_t {
    let old = real!(umask)(mask);
    UMASK.store(mask & 0o777, Ordering::Relaxed);
    old
}

/// Opens an SFS path at a freshly reserved kernel descriptor number.
pub fn open_sfs(path: &str, flags: c_int, mode: mode_t) -> SfsResult<c_int> {
    let creating = flags & (libc::O_CREAT | libc::O_TMPFILE) != 0;
    let mode = if creating {
        mode & !umask_value() & 0o7777
    } else {
        0
    };
    // O_PATH descriptors are opened read-only: SFS has no cheaper handle.
    let flags = if flags & libc::O_PATH != 0 {
        (flags & !(libc::O_PATH | libc::O_ACCMODE)) | libc::O_RDONLY
    } else {
        flags
    };
    let fd = state::reserve_fd(flags & libc::O_CLOEXEC != 0, flags)?;
    let sfs_flags = flags & !(libc::O_CLOEXEC | libc::O_NOCTTY | libc::O_NONBLOCK);
    match with_client(|c| c.open_at_fd(path, sfs_flags, mode, fd)) {
        Ok(()) => {
            SFS_FDS.insert(fd);
            Ok(fd)
        }
        Err(e) => {
            state::release_fd(fd);
            Err(e)
        }
    }
}

/// The shared body of every open hook: `None` means "not SFS".
///
/// # Safety
/// `path` is NULL or a NUL-terminated string.
unsafe fn open_hook(
    dirfd: c_int,
    path: *const c_char,
    flags: c_int,
    mode: mode_t,
) -> Option<c_int> {
    // SAFETY: forwarded contract.
    let (_inside, sfs, tail) = unsafe { sfs_path_tail(dirfd, path) }?;
    if flags & libc::O_CREAT != 0 && tail.wants_dir() {
        // As the kernel: O_CREAT of a path that names a directory.
        return Some(run("open", || {
            Err::<c_int, _>(state::err(
                libc::EISDIR,
                format!("{sfs}/: O_CREAT of a path ending in a directory"),
            ))
        }));
    }
    let sfs = follow_tail(sfs, tail);
    Some(run("open", || open_sfs(&sfs, flags, mode)))
}

pub(crate) unsafe fn sfs_open(path: *const c_char, flags: c_int, mode: mode_t) -> c_int {
    open_hook(libc::AT_FDCWD, path, flags, mode).unwrap_or_else(|| real!(open)(path, flags, mode))
}

pub(crate) unsafe fn sfs_openat(
    dirfd: c_int,
    path: *const c_char,
    flags: c_int,
    mode: mode_t,
) -> c_int {
    open_hook(dirfd, path, flags, mode).unwrap_or_else(|| real!(openat)(dirfd, path, flags, mode))
}

pub(crate) unsafe fn sfs_creat(path: *const c_char, mode: mode_t) -> c_int {
    let flags = libc::O_CREAT | libc::O_WRONLY | libc::O_TRUNC;
    open_hook(libc::AT_FDCWD, path, flags, mode).unwrap_or_else(|| real!(creat)(path, mode))
}

pub(crate) unsafe fn sfs_open_2(path: *const c_char, flags: c_int) -> c_int {
    open_hook(libc::AT_FDCWD, path, flags, 0).unwrap_or_else(|| real!(__open_2)(path, flags))
}

pub(crate) unsafe fn sfs_open64_2(path: *const c_char, flags: c_int) -> c_int {
    open_hook(libc::AT_FDCWD, path, flags, 0).unwrap_or_else(|| real!(__open64_2)(path, flags))
}

pub(crate) unsafe fn sfs_openat_2(dirfd: c_int, path: *const c_char, flags: c_int) -> c_int {
    open_hook(dirfd, path, flags, 0).unwrap_or_else(|| real!(__openat_2)(dirfd, path, flags))
}

pub(crate) unsafe fn sfs_openat64_2(dirfd: c_int, path: *const c_char, flags: c_int) -> c_int {
    open_hook(dirfd, path, flags, 0).unwrap_or_else(|| real!(__openat64_2)(dirfd, path, flags))
}
