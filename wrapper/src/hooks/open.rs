//! The open family: open, open64, openat, openat64, creat, creat64 and the
//! fortified `__open_2` variants.

use crate::descriptors::SFS_FDS;
use crate::paths::{follow_tail, sfs_path_tail};
use crate::state::{self, run, with_client};
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

/// # Safety
/// None beyond umask(2)'s, whose argument this is: a plain value.
pub(crate) unsafe fn sfs_umask(mask: mode_t) -> mode_t {
    // SAFETY: the caller's argument goes on unchanged to the next library's
    // `umask`, under the contract this function was called with.
    let old = unsafe { real!(umask)(mask) };
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
    let fd = crate::descriptors::reserve_fd(flags & libc::O_CLOEXEC != 0, flags)?;
    let sfs_flags = flags & !(libc::O_CLOEXEC | libc::O_NOCTTY | libc::O_NONBLOCK);
    match with_client(|c| c.open_at_fd(path, sfs_flags, mode, fd)) {
        Ok(()) => {
            SFS_FDS.insert(fd);
            Ok(fd)
        }
        Err(e) => {
            crate::descriptors::release_fd(fd);
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

/// # Safety
/// `path` is NULL or a NUL-terminated string: the contract of open(2),
/// whose arguments these are.
pub(crate) unsafe fn sfs_open(path: *const c_char, flags: c_int, mode: mode_t) -> c_int {
    // SAFETY: `path` is NULL or NUL-terminated (this function's contract).
    unsafe { open_hook(libc::AT_FDCWD, path, flags, mode) }.unwrap_or_else(|| {
        // SAFETY: the caller's arguments go on unchanged to the next library's `open`,
        // under the contract this function was called with.
        unsafe { real!(open)(path, flags, mode) }
    })
}

/// # Safety
/// `path` is NULL or a NUL-terminated string: the contract of openat(2),
/// whose arguments these are.
pub(crate) unsafe fn sfs_openat(
    dirfd: c_int,
    path: *const c_char,
    flags: c_int,
    mode: mode_t,
) -> c_int {
    // SAFETY: `path` is NULL or NUL-terminated (this function's contract).
    unsafe { open_hook(dirfd, path, flags, mode) }.unwrap_or_else(|| {
        // SAFETY: the caller's arguments go on unchanged to the next library's `openat`,
        // under the contract this function was called with.
        unsafe { real!(openat)(dirfd, path, flags, mode) }
    })
}

/// # Safety
/// `path` is NULL or a NUL-terminated string: the contract of creat(2),
/// whose arguments these are.
pub(crate) unsafe fn sfs_creat(path: *const c_char, mode: mode_t) -> c_int {
    let flags = libc::O_CREAT | libc::O_WRONLY | libc::O_TRUNC;
    // SAFETY: `path` is NULL or NUL-terminated (this function's contract).
    unsafe { open_hook(libc::AT_FDCWD, path, flags, mode) }.unwrap_or_else(|| {
        // SAFETY: the caller's arguments go on unchanged to the next library's `creat`,
        // under the contract this function was called with.
        unsafe { real!(creat)(path, mode) }
    })
}

/// # Safety
/// `path` is NULL or a NUL-terminated string: the contract of `__open_2`,
/// glibc's fortified open(2), whose arguments these are.
pub(crate) unsafe fn sfs_open_2(path: *const c_char, flags: c_int) -> c_int {
    // SAFETY: `path` is NULL or NUL-terminated (this function's contract).
    unsafe { open_hook(libc::AT_FDCWD, path, flags, 0) }.unwrap_or_else(|| {
        // SAFETY: the caller's arguments go on unchanged to the next library's `__open_2`,
        // under the contract this function was called with.
        unsafe { real!(__open_2)(path, flags) }
    })
}

/// # Safety
/// `path` is NULL or a NUL-terminated string: the contract of `__open64_2`,
/// glibc's fortified open64(2), whose arguments these are.
pub(crate) unsafe fn sfs_open64_2(path: *const c_char, flags: c_int) -> c_int {
    // SAFETY: `path` is NULL or NUL-terminated (this function's contract).
    unsafe { open_hook(libc::AT_FDCWD, path, flags, 0) }.unwrap_or_else(|| {
        // SAFETY: the caller's arguments go on unchanged to the next library's
        // `__open64_2`, under the contract this function was called with.
        unsafe { real!(__open64_2)(path, flags) }
    })
}

/// # Safety
/// `path` is NULL or a NUL-terminated string: the contract of `__openat_2`,
/// glibc's fortified openat(2), whose arguments these are.
pub(crate) unsafe fn sfs_openat_2(dirfd: c_int, path: *const c_char, flags: c_int) -> c_int {
    // SAFETY: `path` is NULL or NUL-terminated (this function's contract).
    unsafe { open_hook(dirfd, path, flags, 0) }.unwrap_or_else(|| {
        // SAFETY: the caller's arguments go on unchanged to the next library's
        // `__openat_2`, under the contract this function was called with.
        unsafe { real!(__openat_2)(dirfd, path, flags) }
    })
}

/// # Safety
/// `path` is NULL or a NUL-terminated string: the contract of
/// `__openat64_2`, glibc's fortified openat64(2), whose arguments these are.
pub(crate) unsafe fn sfs_openat64_2(dirfd: c_int, path: *const c_char, flags: c_int) -> c_int {
    // SAFETY: `path` is NULL or NUL-terminated (this function's contract).
    unsafe { open_hook(dirfd, path, flags, 0) }.unwrap_or_else(|| {
        // SAFETY: the caller's arguments go on unchanged to the next library's
        // `__openat64_2`, under the contract this function was called with.
        unsafe { real!(__openat64_2)(dirfd, path, flags) }
    })
}
