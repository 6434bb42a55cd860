//! The stat family: stat/lstat/fstat/fstatat (+64), the old `__xstat`
//! entry points that binaries built against glibc < 2.33 call, and statx;
//! access/faccessat/euidaccess.

use crate::descriptors::{sfs_fd, SFS_FDS};
use crate::paths::{c_bytes, sfs_path};
use crate::state::{self, err, run, with_client};
use libc::{c_char, c_int, c_uint};
use sfs_client::capi::{fill_stat, SFS_DEVICE};
use sfs_global::{Metadata, SfsResult};

// glibc's `struct stat64` is `struct stat` on LP64 Linux (x86_64, aarch64).
const _: () = assert!(std::mem::size_of::<libc::stat>() == std::mem::size_of::<libc::stat64>());

/// What to look up for a stat-like call.
pub enum Target {
    Path { path: String, follow: bool },
    Fd(c_int),
}

pub fn metadata(target: &Target) -> SfsResult<(Metadata, u64)> {
    with_client(|c| {
        let chunk = c.config().chunk_size;
        let md = match target {
            Target::Path { path, follow: true } => c.stat(path)?,
            Target::Path {
                path,
                follow: false,
            } => c.lstat(path)?,
            Target::Fd(fd) => c.fstat(*fd)?,
        };
        Ok((md, chunk))
    })
}

/// # Safety
/// `buf` is NULL or valid for writing a `struct stat`.
unsafe fn stat_into(target: Target, buf: *mut libc::stat) -> SfsResult<c_int> {
    if buf.is_null() {
        return Err(err(libc::EFAULT, "NULL stat buffer"));
    }
    let (md, chunk) = metadata(&target)?;
    // SAFETY: checked non-NULL; the caller guarantees it is writable and
    // aligned. `write` sets all of it (all-zero is a valid `struct stat`)
    // without reading what was there, which may be uninitialised.
    unsafe { buf.write(std::mem::zeroed()) };
    // SAFETY: as above, and now initialised: a reference to it is sound.
    let st = unsafe { &mut *buf };
    fill_stat(&md, chunk, st);
    Ok(0)
}

/// The target of an `*at` stat call, if it is SFS: handles AT_EMPTY_PATH
/// (the descriptor itself) and AT_SYMLINK_NOFOLLOW.
///
/// # Safety
/// `path` is NULL or NUL-terminated.
pub unsafe fn at_target(
    dirfd: c_int,
    path: *const c_char,
    flags: c_int,
) -> Option<(state::Inside, Target)> {
    // SAFETY: forwarded contract.
    let empty = unsafe { c_bytes(path) }.is_none_or(|b| b.is_empty());
    if empty && flags & libc::AT_EMPTY_PATH != 0 {
        if SFS_FDS.contains(dirfd) {
            return Some((state::enter()?, Target::Fd(dirfd)));
        }
        if dirfd == libc::AT_FDCWD {
            let inside = state::enter()?;
            let cwd = state::cwd()?;
            return Some((
                inside,
                Target::Path {
                    path: cwd,
                    follow: true,
                },
            ));
        }
        return None;
    }
    // SAFETY: forwarded contract.
    let (inside, path) = unsafe { sfs_path(dirfd, path) }?;
    let follow = flags & libc::AT_SYMLINK_NOFOLLOW == 0;
    Some((inside, Target::Path { path, follow }))
}

/// # Safety
/// `path` NULL or NUL-terminated; `buf` NULL or writable (a `struct stat`).
unsafe fn path_stat(path: *const c_char, buf: *mut libc::stat, follow: bool) -> Option<c_int> {
    // SAFETY: forwarded contract.
    let (_inside, path) = unsafe { sfs_path(libc::AT_FDCWD, path) }?;
    // SAFETY: forwarded contract.
    Some(run("stat", || unsafe {
        stat_into(Target::Path { path, follow }, buf)
    }))
}

/// # Safety
/// `buf` NULL or writable (a `struct stat`).
unsafe fn fd_stat(fd: c_int, buf: *mut libc::stat) -> Option<c_int> {
    let _inside = sfs_fd(fd)?;
    // SAFETY: forwarded contract.
    Some(run("fstat", || unsafe { stat_into(Target::Fd(fd), buf) }))
}

/// # Safety
/// `path` NULL or NUL-terminated; `buf` NULL or writable (a `struct stat`).
unsafe fn at_stat(
    dirfd: c_int,
    path: *const c_char,
    buf: *mut libc::stat,
    flags: c_int,
) -> Option<c_int> {
    // SAFETY: forwarded contract.
    let (_inside, target) = unsafe { at_target(dirfd, path, flags) }?;
    // SAFETY: forwarded contract.
    Some(run("fstatat", || unsafe { stat_into(target, buf) }))
}

/// # Safety
/// `path` is NULL or a NUL-terminated string and `buf` is NULL or valid for
/// writing a `struct stat`: the contract of stat(2), whose arguments these are.
pub(crate) unsafe fn sfs_stat(path: *const c_char, buf: *mut libc::stat) -> c_int {
    // SAFETY: `path` and `buf` as this function's contract says, which is
    // `path_stat`'s.
    unsafe { path_stat(path, buf, true) }.unwrap_or_else(|| {
        // SAFETY: the caller's arguments go on unchanged to the next library's
        // `stat`, under the contract this function was called with.
        unsafe { real!(stat)(path, buf) }
    })
}

/// # Safety
/// `path` is NULL or a NUL-terminated string and `buf` is NULL or valid for
/// writing a `struct stat`: the contract of lstat(2), whose arguments these
/// are.
pub(crate) unsafe fn sfs_lstat(path: *const c_char, buf: *mut libc::stat) -> c_int {
    // SAFETY: `path` and `buf` as this function's contract says, which is
    // `path_stat`'s.
    unsafe { path_stat(path, buf, false) }.unwrap_or_else(|| {
        // SAFETY: the caller's arguments go on unchanged to the next library's
        // `lstat`, under the contract this function was called with.
        unsafe { real!(lstat)(path, buf) }
    })
}

/// # Safety
/// `buf` is NULL or valid for writing a `struct stat`: the contract of
/// fstat(2), whose arguments these are.
pub(crate) unsafe fn sfs_fstat(fd: c_int, buf: *mut libc::stat) -> c_int {
    // SAFETY: `buf` as this function's contract says, which is `fd_stat`'s.
    unsafe { fd_stat(fd, buf) }.unwrap_or_else(|| {
        // SAFETY: the caller's arguments go on unchanged to the next library's
        // `fstat`, under the contract this function was called with.
        unsafe { real!(fstat)(fd, buf) }
    })
}

/// # Safety
/// `path` is NULL or a NUL-terminated string and `buf` is NULL or valid for
/// writing a `struct stat`: the contract of fstatat(2), whose arguments these
/// are.
pub(crate) unsafe fn sfs_fstatat(
    dirfd: c_int,
    path: *const c_char,
    buf: *mut libc::stat,
    flags: c_int,
) -> c_int {
    // SAFETY: `path` and `buf` as this function's contract says, which is
    // `at_stat`'s.
    unsafe { at_stat(dirfd, path, buf, flags) }.unwrap_or_else(|| {
        // SAFETY: the caller's arguments go on unchanged to the next library's
        // `fstatat`, under the contract this function was called with.
        unsafe { real!(fstatat)(dirfd, path, buf, flags) }
    })
}

/// # Safety
/// `path` is NULL or a NUL-terminated string and `buf` is NULL or valid for
/// writing a `struct stat`: the contract of `__xstat` (stat(2) behind a version
/// number), whose arguments these are.
pub(crate) unsafe fn sfs_xstat(ver: c_int, path: *const c_char, buf: *mut libc::stat) -> c_int {
    // SAFETY: `path` and `buf` as this function's contract says, which is
    // `path_stat`'s.
    unsafe { path_stat(path, buf, true) }.unwrap_or_else(|| {
        // SAFETY: the caller's arguments go on unchanged to the next library's
        // `__xstat`, under the contract this function was called with.
        unsafe { real!(__xstat)(ver, path, buf) }
    })
}

/// # Safety
/// `path` is NULL or a NUL-terminated string and `buf` is NULL or valid for
/// writing a `struct stat`: the contract of `__lxstat` (lstat(2) behind a
/// version number), whose arguments these are.
pub(crate) unsafe fn sfs_lxstat(ver: c_int, path: *const c_char, buf: *mut libc::stat) -> c_int {
    // SAFETY: `path` and `buf` as this function's contract says, which is
    // `path_stat`'s.
    unsafe { path_stat(path, buf, false) }.unwrap_or_else(|| {
        // SAFETY: the caller's arguments go on unchanged to the next library's
        // `__lxstat`, under the contract this function was called with.
        unsafe { real!(__lxstat)(ver, path, buf) }
    })
}

/// # Safety
/// `buf` is NULL or valid for writing a `struct stat`: the contract of
/// `__fxstat` (fstat(2) behind a version number), whose arguments these are.
pub(crate) unsafe fn sfs_fxstat(ver: c_int, fd: c_int, buf: *mut libc::stat) -> c_int {
    // SAFETY: `buf` as this function's contract says, which is `fd_stat`'s.
    unsafe { fd_stat(fd, buf) }.unwrap_or_else(|| {
        // SAFETY: the caller's arguments go on unchanged to the next library's
        // `__fxstat`, under the contract this function was called with.
        unsafe { real!(__fxstat)(ver, fd, buf) }
    })
}

/// # Safety
/// `path` is NULL or a NUL-terminated string and `buf` is NULL or valid for
/// writing a `struct stat`: the contract of `__fxstatat` (fstatat(2) behind a
/// version number), whose arguments these are.
pub(crate) unsafe fn sfs_fxstatat(
    ver: c_int,
    dirfd: c_int,
    path: *const c_char,
    buf: *mut libc::stat,
    flags: c_int,
) -> c_int {
    // SAFETY: `path` and `buf` as this function's contract says, which is
    // `at_stat`'s.
    unsafe { at_stat(dirfd, path, buf, flags) }.unwrap_or_else(|| {
        // SAFETY: the caller's arguments go on unchanged to the next library's
        // `__fxstatat`, under the contract this function was called with.
        unsafe { real!(__fxstatat)(ver, dirfd, path, buf, flags) }
    })
}

fn timestamp(ns: i64) -> libc::statx_timestamp {
    // SAFETY: all-zero is a valid statx_timestamp (it has padding fields).
    let mut t: libc::statx_timestamp = unsafe { std::mem::zeroed() };
    t.tv_sec = ns.div_euclid(1_000_000_000);
    t.tv_nsec = ns.rem_euclid(1_000_000_000) as u32;
    t
}

/// # Safety
/// `buf` is NULL or valid for writing a `struct statx`.
unsafe fn statx_into(target: Target, buf: *mut libc::statx) -> SfsResult<c_int> {
    if buf.is_null() {
        return Err(err(libc::EFAULT, "NULL statx buffer"));
    }
    let (md, chunk) = metadata(&target)?;
    // SAFETY: checked non-NULL; the caller guarantees it is writable. The
    // zeroes make it initialised (all-zero is a valid `struct statx`)
    // before a reference to it is made.
    let stx = unsafe {
        std::ptr::write_bytes(buf, 0, 1);
        &mut *buf
    };
    stx.stx_mask = libc::STATX_BASIC_STATS;
    stx.stx_blksize = chunk as u32;
    stx.stx_nlink = md.nlink;
    stx.stx_uid = md.uid;
    stx.stx_gid = md.gid;
    stx.stx_mode = md.mode as u16;
    stx.stx_ino = md.id.lo() ^ md.id.hi();
    stx.stx_size = md.st_size();
    stx.stx_blocks = md.st_size().div_ceil(512);
    stx.stx_rdev_major = libc::major(md.rdev());
    stx.stx_rdev_minor = libc::minor(md.rdev());
    stx.stx_atime = timestamp(md.atime_ns);
    stx.stx_mtime = timestamp(md.mtime_ns);
    stx.stx_ctime = timestamp(md.ctime_ns);
    stx.stx_dev_major = libc::major(SFS_DEVICE);
    stx.stx_dev_minor = libc::minor(SFS_DEVICE);
    Ok(0)
}

/// # Safety
/// `path` is NULL or a NUL-terminated string and `buf` is NULL or valid for
/// writing a `struct statx`: the contract of statx(2), whose arguments these
/// are.
pub(crate) unsafe fn sfs_statx(
    dirfd: c_int,
    path: *const c_char,
    flags: c_int,
    mask: c_uint,
    buf: *mut libc::statx,
) -> c_int {
    // SAFETY: `path` is NULL or NUL-terminated (this function's contract),
    // which is `at_target`'s.
    match unsafe { at_target(dirfd, path, flags) } {
        Some((_inside, target)) => run("statx", || {
            // SAFETY: `buf` is NULL or valid for writing a `struct statx` (this
            // function's contract), which is `statx_into`'s.
            unsafe { statx_into(target, buf) }
        }),
        // SAFETY: the caller's arguments go on unchanged to the next library's
        // `statx`, under the contract this function was called with.
        None => unsafe { real!(statx)(dirfd, path, flags, mask, buf) },
    }
}

/// access(2) on SFS: the entry's owner checks the R_OK/W_OK/X_OK bits
/// against this process's effective ids (not the real ones access(2)
/// names: SFS requests carry only the effective ids, which is what
/// `faccessat(AT_EACCESS)` asks anyway). A symlink itself
/// (`AT_SYMLINK_NOFOLLOW`) is always accessible.
fn access_sfs(path: &str, mode: c_int, follow: bool) -> SfsResult<c_int> {
    if !follow {
        metadata(&Target::Path {
            path: path.to_string(),
            follow,
        })?;
        return Ok(0);
    }
    let bits = (mode & (libc::R_OK | libc::W_OK | libc::X_OK)) as u32;
    with_client(|c| c.access(path, bits)).map(|()| 0)
}

/// # Safety
/// `path` NULL or NUL-terminated.
unsafe fn access_hook(
    dirfd: c_int,
    path: *const c_char,
    mode: c_int,
    flags: c_int,
) -> Option<c_int> {
    // SAFETY: forwarded contract.
    let (_inside, target) = unsafe {
        at_target(
            dirfd,
            path,
            flags & (libc::AT_EMPTY_PATH | libc::AT_SYMLINK_NOFOLLOW),
        )
    }?;
    Some(run("access", || match target {
        Target::Path { path, follow } => access_sfs(&path, mode, follow),
        Target::Fd(fd) => metadata(&Target::Fd(fd)).map(|_| 0),
    }))
}

/// # Safety
/// `path` is NULL or a NUL-terminated string: the contract of access(2), whose
/// arguments these are.
pub(crate) unsafe fn sfs_access(path: *const c_char, mode: c_int) -> c_int {
    // SAFETY: `path` as this function's contract says, which is
    // `access_hook`'s.
    unsafe { access_hook(libc::AT_FDCWD, path, mode, 0) }.unwrap_or_else(|| {
        // SAFETY: the caller's arguments go on unchanged to the next library's
        // `access`, under the contract this function was called with.
        unsafe { real!(access)(path, mode) }
    })
}

/// # Safety
/// `path` is NULL or a NUL-terminated string: the contract of faccessat(2),
/// whose arguments these are.
pub(crate) unsafe fn sfs_faccessat(
    dirfd: c_int,
    path: *const c_char,
    mode: c_int,
    flags: c_int,
) -> c_int {
    // SAFETY: `path` as this function's contract says, which is
    // `access_hook`'s.
    unsafe { access_hook(dirfd, path, mode, flags) }.unwrap_or_else(|| {
        // SAFETY: the caller's arguments go on unchanged to the next library's
        // `faccessat`, under the contract this function was called with.
        unsafe { real!(faccessat)(dirfd, path, mode, flags) }
    })
}

/// # Safety
/// `path` is NULL or a NUL-terminated string: the contract of euidaccess(3),
/// whose arguments these are.
pub(crate) unsafe fn sfs_euidaccess(path: *const c_char, mode: c_int) -> c_int {
    // SAFETY: `path` as this function's contract says, which is
    // `access_hook`'s.
    unsafe { access_hook(libc::AT_FDCWD, path, mode, 0) }.unwrap_or_else(|| {
        // SAFETY: the caller's arguments go on unchanged to the next library's
        // `euidaccess`, under the contract this function was called with.
        unsafe { real!(euidaccess)(path, mode) }
    })
}

/// # Safety
/// `path` is NULL or a NUL-terminated string: the contract of eaccess(3), whose
/// arguments these are.
pub(crate) unsafe fn sfs_eaccess(path: *const c_char, mode: c_int) -> c_int {
    // SAFETY: `path` as this function's contract says, which is
    // `access_hook`'s.
    unsafe { access_hook(libc::AT_FDCWD, path, mode, 0) }.unwrap_or_else(|| {
        // SAFETY: the caller's arguments go on unchanged to the next library's
        // `eaccess`, under the contract this function was called with.
        unsafe { real!(eaccess)(path, mode) }
    })
}
