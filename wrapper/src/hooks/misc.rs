//! The rest of the file API on SFS: statfs/statvfs, posix_fadvise,
//! fallocate/posix_fallocate, copy_file_range/sendfile (done as reads and
//! writes), splice (refused), ioctl (FICLONE refused so `cp` falls back),
//! extended attributes (none on SFS).

use crate::descriptors::{sfs_fd, SFS_FDS};
use crate::hooks::io::{read_sfs, write_sfs};
use crate::paths::{c_bytes, sfs_path};
use crate::state::{self, err, run, run_errno, with_client};
use libc::{c_char, c_int, c_uint, c_ulong, c_void, off_t, size_t, ssize_t};
use sfs_client::FsStats;
use sfs_global::SfsResult;

/// `f_type` SFS reports ("SFS!").
pub const SFS_MAGIC: i64 = 0x5346_5321;
const BLOCK: u64 = 4096;
const STATFS_NAME_MAX: u64 = 255;

fn stats() -> SfsResult<FsStats> {
    with_client(|c| c.statfs())
}

fn statfs_of(s: &FsStats) -> libc::statfs {
    // SAFETY: all-zero is a valid statfs.
    let mut st: libc::statfs = unsafe { std::mem::zeroed() };
    st.f_type = SFS_MAGIC as _;
    st.f_bsize = BLOCK as _;
    st.f_frsize = BLOCK as _;
    st.f_blocks = s.capacity_bytes / BLOCK;
    st.f_bfree = s.free_bytes / BLOCK;
    st.f_bavail = s.free_bytes / BLOCK;
    st.f_files = s.entries + (1 << 32);
    st.f_ffree = 1 << 32;
    st.f_namelen = STATFS_NAME_MAX as _;
    st
}

fn statvfs_of(s: &FsStats) -> libc::statvfs {
    // SAFETY: all-zero is a valid statvfs.
    let mut st: libc::statvfs = unsafe { std::mem::zeroed() };
    st.f_bsize = BLOCK as _;
    st.f_frsize = BLOCK as _;
    st.f_blocks = s.capacity_bytes / BLOCK;
    st.f_bfree = s.free_bytes / BLOCK;
    st.f_bavail = s.free_bytes / BLOCK;
    st.f_files = s.entries + (1 << 32);
    st.f_ffree = 1 << 32;
    st.f_favail = 1 << 32;
    st.f_fsid = SFS_MAGIC as _;
    st.f_namemax = STATFS_NAME_MAX as _;
    st
}

/// # Safety
/// `buf` is NULL or aligned and valid for writing a `struct statfs`.
unsafe fn statfs_into(buf: *mut libc::statfs) -> SfsResult<c_int> {
    if buf.is_null() {
        return Err(err(libc::EFAULT, "NULL statfs buffer"));
    }
    let st = statfs_of(&stats()?);
    // SAFETY: `buf` is non-NULL (checked above), so aligned and valid for
    // writing a `statfs` (this function's contract); `write` does not read
    // what was there, which may be uninitialised.
    unsafe { buf.write(st) };
    Ok(0)
}

/// # Safety
/// `buf` is NULL or aligned and valid for writing a `struct statvfs`.
unsafe fn statvfs_into(buf: *mut libc::statvfs) -> SfsResult<c_int> {
    if buf.is_null() {
        return Err(err(libc::EFAULT, "NULL statvfs buffer"));
    }
    let st = statvfs_of(&stats()?);
    // SAFETY: `buf` is non-NULL (checked above), so aligned and valid for
    // writing a `statvfs` (this function's contract); `write` does not read
    // what was there, which may be uninitialised.
    unsafe { buf.write(st) };
    Ok(0)
}

// statfs64/statvfs64 are the same structures on LP64 Linux.
const _: () = assert!(std::mem::size_of::<libc::statfs>() == std::mem::size_of::<libc::statfs64>());
const _: () =
    assert!(std::mem::size_of::<libc::statvfs>() == std::mem::size_of::<libc::statvfs64>());

/// Checks that an SFS path exists before answering statfs on it.
fn exists(path: &str) -> SfsResult<()> {
    with_client(|c| c.stat(path)).map(|_| ())
}

/// # Safety
/// `path` is NULL or a NUL-terminated string and `buf` is NULL or valid for
/// writing a `struct statfs`: the contract of statfs(2), whose arguments these
/// are.
pub(crate) unsafe fn sfs_statfs(path: *const c_char, buf: *mut libc::statfs) -> c_int {
    // SAFETY: `path` is NULL or NUL-terminated (this function's contract).
    match unsafe { sfs_path(libc::AT_FDCWD, path) } {
        Some((_inside, p)) => run("statfs", || {
            exists(&p)?;
            // SAFETY: `buf` is NULL or valid for writing a `statfs` (this
            // function's contract).
            unsafe { statfs_into(buf) }
        }),
        // SAFETY: the caller's arguments go on unchanged to the next
        // library's `statfs`, under the contract this function was called
        // with.
        None => unsafe { real!(statfs)(path, buf) },
    }
}

/// # Safety
/// `buf` is NULL or valid for writing a `struct statfs`: the contract of
/// fstatfs(2), whose arguments these are.
pub(crate) unsafe fn sfs_fstatfs(fd: c_int, buf: *mut libc::statfs) -> c_int {
    match sfs_fd(fd) {
        Some(_inside) => run("fstatfs", || {
            // SAFETY: `buf` is NULL or valid for writing a `statfs` (this
            // function's contract).
            unsafe { statfs_into(buf) }
        }),
        // SAFETY: the caller's arguments go on unchanged to the next
        // library's `fstatfs`, under the contract this function was called
        // with.
        None => unsafe { real!(fstatfs)(fd, buf) },
    }
}

/// # Safety
/// `path` is NULL or a NUL-terminated string and `buf` is NULL or valid for
/// writing a `struct statvfs`: the contract of statvfs(3), whose arguments these
/// are.
pub(crate) unsafe fn sfs_statvfs(path: *const c_char, buf: *mut libc::statvfs) -> c_int {
    // SAFETY: `path` is NULL or NUL-terminated (this function's contract).
    match unsafe { sfs_path(libc::AT_FDCWD, path) } {
        Some((_inside, p)) => run("statvfs", || {
            exists(&p)?;
            // SAFETY: `buf` is NULL or valid for writing a `statvfs` (this
            // function's contract).
            unsafe { statvfs_into(buf) }
        }),
        // SAFETY: the caller's arguments go on unchanged to the next
        // library's `statvfs`, under the contract this function was called
        // with.
        None => unsafe { real!(statvfs)(path, buf) },
    }
}

/// # Safety
/// `buf` is NULL or valid for writing a `struct statvfs`: the contract of
/// fstatvfs(3), whose arguments these are.
pub(crate) unsafe fn sfs_fstatvfs(fd: c_int, buf: *mut libc::statvfs) -> c_int {
    match sfs_fd(fd) {
        Some(_inside) => run("fstatvfs", || {
            // SAFETY: `buf` is NULL or valid for writing a `statvfs` (this
            // function's contract).
            unsafe { statvfs_into(buf) }
        }),
        // SAFETY: the caller's arguments go on unchanged to the next
        // library's `fstatvfs`, under the contract this function was called
        // with.
        None => unsafe { real!(fstatvfs)(fd, buf) },
    }
}

/// posix_fadvise: advice is a hint; SFS has no page cache to steer, so any
/// valid advice is accepted (as on file systems that ignore it).
fn fadvise_sfs(fd: c_int, len: off_t, advice: c_int) -> SfsResult<()> {
    with_client(|c| c.fd_flags(fd))?;
    if len < 0 {
        return Err(err(libc::EINVAL, "negative length"));
    }
    match advice {
        libc::POSIX_FADV_NORMAL
        | libc::POSIX_FADV_RANDOM
        | libc::POSIX_FADV_SEQUENTIAL
        | libc::POSIX_FADV_WILLNEED
        | libc::POSIX_FADV_DONTNEED
        | libc::POSIX_FADV_NOREUSE => Ok(()),
        _ => Err(err(libc::EINVAL, "bad advice")),
    }
}

/// # Safety
/// None beyond posix_fadvise(2)'s: its arguments are plain integers.
pub(crate) unsafe fn sfs_posix_fadvise(fd: c_int, off: off_t, len: off_t, advice: c_int) -> c_int {
    match sfs_fd(fd) {
        Some(_inside) => run_errno("posix_fadvise", || fadvise_sfs(fd, len, advice)),
        // SAFETY: the caller's arguments go on unchanged to the next
        // library's `posix_fadvise`, under the contract this function was called
        // with.
        None => unsafe { real!(posix_fadvise)(fd, off, len, advice) },
    }
}

/// fallocate: mode 0 grows the file to `off + len` (SFS allocates chunks on
/// write, so space is not reserved: a later write can still hit ENOSPC);
/// FALLOC_FL_KEEP_SIZE alone changes nothing visible; hole punching,
/// zeroing, collapsing and inserting ranges are EOPNOTSUPP.
fn fallocate_sfs(fd: c_int, mode: c_int, off: off_t, len: off_t) -> SfsResult<()> {
    if off < 0 || len <= 0 {
        return Err(err(libc::EINVAL, "bad range"));
    }
    let end = off
        .checked_add(len)
        .ok_or_else(|| err(libc::EFBIG, "range overflows"))? as u64;
    match mode {
        0 => with_client(|c| {
            if c.fstat(fd)?.size < end {
                c.ftruncate(fd, end)?;
            }
            Ok(())
        }),
        libc::FALLOC_FL_KEEP_SIZE => with_client(|c| c.fd_flags(fd)).map(|_| ()),
        _ => Err(err(
            libc::EOPNOTSUPP,
            format!("fallocate mode {mode:#x} is not supported on SFS"),
        )),
    }
}

/// # Safety
/// None beyond fallocate(2)'s: its arguments are plain integers.
pub(crate) unsafe fn sfs_fallocate(fd: c_int, mode: c_int, off: off_t, len: off_t) -> c_int {
    match sfs_fd(fd) {
        Some(_inside) => run("fallocate", || {
            fallocate_sfs(fd, mode, off, len).map(|()| 0)
        }),
        // SAFETY: the caller's arguments go on unchanged to the next
        // library's `fallocate`, under the contract this function was called
        // with.
        None => unsafe { real!(fallocate)(fd, mode, off, len) },
    }
}

/// # Safety
/// None beyond posix_fallocate(3)'s: its arguments are plain integers.
pub(crate) unsafe fn sfs_posix_fallocate(fd: c_int, off: off_t, len: off_t) -> c_int {
    match sfs_fd(fd) {
        Some(_inside) => run_errno("posix_fallocate", || fallocate_sfs(fd, 0, off, len)),
        // SAFETY: the caller's arguments go on unchanged to the next
        // library's `posix_fallocate`, under the contract this function was called
        // with.
        None => unsafe { real!(posix_fallocate)(fd, off, len) },
    }
}

/// # Safety
/// None beyond posix_fallocate64(3)'s: its arguments are plain integers.
pub(crate) unsafe fn sfs_posix_fallocate64(fd: c_int, off: off_t, len: off_t) -> c_int {
    match sfs_fd(fd) {
        Some(_inside) => run_errno("posix_fallocate", || fallocate_sfs(fd, 0, off, len)),
        // SAFETY: the caller's arguments go on unchanged to the next
        // library's `posix_fallocate64`, under the contract this function was called
        // with.
        None => unsafe { real!(posix_fallocate64)(fd, off, len) },
    }
}

/// Bytes moved per copy_file_range/sendfile call on SFS (callers loop).
const COPY_STEP: usize = 8 << 20;

/// Reads from either kind of descriptor (positional if `at` is given).
///
/// # Safety
/// None beyond the types: `buf` is a slice, so the kernel writes only
/// memory it owns.
unsafe fn read_any(fd: c_int, buf: &mut [u8], at: Option<i64>) -> SfsResult<usize> {
    if SFS_FDS.contains(fd) {
        return read_sfs(fd, buf, at);
    }
    let n = match at {
        // SAFETY: syscall(2) with pread64's arguments: `buf` is a live
        // mutable slice, valid for writing `buf.len()` bytes.
        Some(off) => unsafe {
            raw_syscall!(libc::SYS_pread64, fd, buf.as_mut_ptr(), buf.len(), off)
        },
        // SAFETY: syscall(2) with read's arguments: `buf` is a live mutable
        // slice, valid for writing `buf.len()` bytes.
        None => unsafe { raw_syscall!(libc::SYS_read, fd, buf.as_mut_ptr(), buf.len()) },
    };
    if n < 0 {
        Err(err(state::errno(), "read"))
    } else {
        Ok(n as usize)
    }
}

/// # Safety
/// None beyond the types: `buf` is a slice, so the kernel reads only memory
/// it owns.
unsafe fn write_any(fd: c_int, buf: &[u8], at: Option<i64>) -> SfsResult<usize> {
    if SFS_FDS.contains(fd) {
        return write_sfs(fd, buf, at);
    }
    let mut done = 0;
    while done < buf.len() {
        let rest = &buf[done..];
        let n = match at {
            // SAFETY: syscall(2) with pwrite64's arguments: `rest` is a live
            // slice, valid for reading `rest.len()` bytes.
            Some(off) => unsafe {
                raw_syscall!(
                    libc::SYS_pwrite64,
                    fd,
                    rest.as_ptr(),
                    rest.len(),
                    off + done as i64,
                )
            },
            // SAFETY: syscall(2) with write's arguments: `rest` is a live
            // slice, valid for reading `rest.len()` bytes.
            None => unsafe { raw_syscall!(libc::SYS_write, fd, rest.as_ptr(), rest.len()) },
        };
        if n < 0 {
            if state::errno() == libc::EINTR {
                continue;
            }
            return Err(err(state::errno(), "write"));
        }
        done += n as usize;
    }
    Ok(done)
}

/// One step of a copy between descriptors, at least one of them SFS.
///
/// # Safety
/// `off_in` and `off_out` are each NULL or aligned and valid for reading
/// and writing an `i64`.
unsafe fn copy_step(
    fd_in: c_int,
    off_in: *mut i64,
    fd_out: c_int,
    off_out: *mut i64,
    len: usize,
) -> SfsResult<ssize_t> {
    let mut buf = vec![0u8; len.min(COPY_STEP)];
    // SAFETY: read only when non-NULL, so valid for reading (this
    // function's contract).
    let at_in = (!off_in.is_null()).then(|| unsafe { *off_in });
    // SAFETY: read_any has no contract beyond its types.
    let n = unsafe { read_any(fd_in, &mut buf, at_in) }?;
    if n == 0 {
        return Ok(0);
    }
    // SAFETY: read only when non-NULL, so valid for reading (this
    // function's contract).
    let at_out = (!off_out.is_null()).then(|| unsafe { *off_out });
    // SAFETY: write_any has no contract beyond its types.
    let written = unsafe { write_any(fd_out, &buf[..n], at_out) }?;
    if !off_in.is_null() {
        // SAFETY: non-NULL (checked), so valid for reading and writing (this
        // function's contract).
        unsafe { *off_in += written as i64 };
    }
    if !off_out.is_null() {
        // SAFETY: non-NULL (checked), so valid for reading and writing (this
        // function's contract).
        unsafe { *off_out += written as i64 };
    }
    Ok(written as ssize_t)
}

/// # Safety
/// `off_in` and `off_out` are each NULL or valid for reading and writing a
/// `loff_t`: the contract of copy_file_range(2), whose arguments these are.
pub(crate) unsafe fn sfs_copy_file_range(
    fd_in: c_int,
    off_in: *mut i64,
    fd_out: c_int,
    off_out: *mut i64,
    len: size_t,
    flags: c_uint,
) -> ssize_t {
    if !SFS_FDS.contains(fd_in) && !SFS_FDS.contains(fd_out) {
        // SAFETY: the caller's arguments go on unchanged to the next
        // library's `copy_file_range`, under the contract this function was
        // called with.
        return unsafe { real!(copy_file_range)(fd_in, off_in, fd_out, off_out, len, flags) };
    }
    match state::enter() {
        Some(_inside) => run("copy_file_range", || {
            if flags != 0 {
                return Err(err(libc::EINVAL, "copy_file_range flags must be 0"));
            }
            // SAFETY: `off_in` and `off_out` are NULL or valid `loff_t`s
            // (this function's contract), as copy_step requires.
            unsafe { copy_step(fd_in, off_in, fd_out, off_out, len) }
        }),
        // SAFETY: the caller's arguments go on unchanged to the next
        // library's `copy_file_range`, under the contract this function was
        // called with.
        None => unsafe { real!(copy_file_range)(fd_in, off_in, fd_out, off_out, len, flags) },
    }
}

/// # Safety
/// `offset` is NULL or aligned and valid for reading and writing an
/// `off_t`.
unsafe fn sendfile_hook(
    out_fd: c_int,
    in_fd: c_int,
    offset: *mut off_t,
    count: size_t,
) -> Option<ssize_t> {
    if !SFS_FDS.contains(in_fd) && !SFS_FDS.contains(out_fd) {
        return None;
    }
    let _inside = state::enter()?;
    Some(run("sendfile", || {
        // SAFETY: `offset` is NULL or a valid `off_t` (an `i64`: this
        // function's contract); the output offset is NULL.
        unsafe { copy_step(in_fd, offset, out_fd, std::ptr::null_mut(), count) }
    }))
}

/// # Safety
/// `offset` is NULL or valid for reading and writing an `off_t`: the
/// contract of sendfile(2), whose arguments these are.
pub(crate) unsafe fn sfs_sendfile(
    out_fd: c_int,
    in_fd: c_int,
    offset: *mut off_t,
    count: size_t,
) -> ssize_t {
    // SAFETY: `offset` is NULL or a valid `off_t` (this function's
    // contract), as sendfile_hook requires.
    unsafe { sendfile_hook(out_fd, in_fd, offset, count) }.unwrap_or_else(|| {
        // SAFETY: the caller's arguments go on unchanged to the next
        // library's `sendfile`, under the contract this function was called
        // with.
        unsafe { real!(sendfile)(out_fd, in_fd, offset, count) }
    })
}

/// # Safety
/// `off_in` and `off_out` are each NULL or valid for reading and writing a
/// `loff_t`: the contract of splice(2), whose arguments these are.
pub(crate) unsafe fn sfs_splice(
    fd_in: c_int,
    off_in: *mut i64,
    fd_out: c_int,
    off_out: *mut i64,
    len: size_t,
    flags: c_uint,
) -> ssize_t {
    if SFS_FDS.contains(fd_in) || SFS_FDS.contains(fd_out) {
        if let Some(_inside) = state::enter() {
            return run("splice", || {
                Err::<ssize_t, _>(err(
                    libc::EINVAL,
                    "splice to or from an SFS file is not supported",
                ))
            });
        }
    }
    // SAFETY: the caller's arguments go on unchanged to the next library's
    // `splice`, under the contract this function was called with.
    unsafe { real!(splice)(fd_in, off_in, fd_out, off_out, len, flags) }
}

/// ioctl on SFS descriptors: FIONREAD answers the bytes left to read;
/// everything else (FICLONE, FICLONERANGE, FS_IOC_*, terminal requests) is
/// ENOTTY or EOPNOTSUPP, so callers take their fallback path.
///
/// # Safety
/// For FIONREAD, `arg` is NULL or aligned and valid for writing a `c_int`
/// (other requests do not touch it).
unsafe fn ioctl_sfs(fd: c_int, request: c_ulong, arg: *mut c_void) -> SfsResult<c_int> {
    match request {
        libc::FIONREAD => {
            let left = with_client(|c| {
                let size = c.fstat(fd)?.size;
                let at = c.lseek(fd, 0, sfs_client::Whence::Current)?;
                Ok(size.saturating_sub(at))
            })?;
            if arg.is_null() {
                return Err(err(libc::EFAULT, "NULL FIONREAD argument"));
            }
            // SAFETY: FIONREAD with `arg` non-NULL (checked above): valid for
            // writing a `c_int` (this function's contract).
            unsafe { *arg.cast::<c_int>() = left.min(c_int::MAX as u64) as c_int };
            Ok(0)
        }
        libc::FICLONE | libc::FICLONERANGE => {
            Err(err(libc::EOPNOTSUPP, "SFS cannot clone file ranges"))
        }
        _ => Err(err(
            libc::ENOTTY,
            format!("ioctl {request:#x} is not supported on SFS"),
        )),
    }
}

/// # Safety
/// `arg` is what `request` requires (for FIONREAD, NULL or valid for writing
/// an `int`): the contract of ioctl(2), whose arguments these are.
pub(crate) unsafe fn sfs_ioctl(fd: c_int, request: c_ulong, arg: *mut c_void) -> c_int {
    match sfs_fd(fd) {
        Some(_inside) => run("ioctl", || {
            // SAFETY: `arg` is as `request` requires (this function's
            // contract), which is ioctl_sfs's for FIONREAD.
            unsafe { ioctl_sfs(fd, request, arg) }
        }),
        // SAFETY: the caller's arguments go on unchanged to the next
        // library's `ioctl`, under the contract this function was called
        // with.
        None => unsafe { real!(ioctl)(fd, request, arg) },
    }
}

/// The name argument of an `*xattr` call (EFAULT when unreadable).
///
/// # Safety
/// As [`c_bytes`].
unsafe fn xattr_name<'a>(name: *const c_char) -> SfsResult<&'a [u8]> {
    // SAFETY: forwarded contract.
    unsafe { c_bytes(name) }.ok_or_else(|| err(libc::EFAULT, "unreadable attribute name"))
}

/// Copies `bytes` out as getxattr/listxattr do: with `size` 0 only the
/// length is answered; a smaller buffer is ERANGE.
///
/// # Safety
/// `out` valid for `size` bytes when `size` > 0.
unsafe fn xattr_out(bytes: &[u8], out: *mut c_void, size: size_t) -> SfsResult<ssize_t> {
    if size == 0 {
        return Ok(bytes.len() as ssize_t);
    }
    if bytes.len() > size {
        return Err(err(
            libc::ERANGE,
            format!("{} bytes do not fit in {size}", bytes.len()),
        ));
    }
    if out.is_null() {
        return Err(err(libc::EFAULT, "NULL attribute buffer"));
    }
    // SAFETY: `out` is valid for `size` >= `bytes.len()` bytes.
    unsafe { std::ptr::copy_nonoverlapping(bytes.as_ptr(), out.cast::<u8>(), bytes.len()) };
    Ok(bytes.len() as ssize_t)
}

/// getxattr/lgetxattr/fgetxattr of the SFS entry at `path`.
///
/// # Safety
/// `name` a C string or invalid pointer; `value` valid for `size` bytes.
unsafe fn get_xattr_sfs(
    path: &str,
    follow: bool,
    name: *const c_char,
    value: *mut c_void,
    size: size_t,
) -> SfsResult<ssize_t> {
    // SAFETY: forwarded contract.
    let name = unsafe { xattr_name(name) }?;
    let found = with_client(|c| c.get_xattr(path, name, follow))?;
    // SAFETY: forwarded contract.
    unsafe { xattr_out(&found, value, size) }
}

/// listxattr/llistxattr/flistxattr: names, each ending in NUL.
///
/// # Safety
/// `list` valid for `size` bytes.
unsafe fn list_xattrs_sfs(
    path: &str,
    follow: bool,
    list: *mut c_char,
    size: size_t,
) -> SfsResult<ssize_t> {
    let names = with_client(|c| c.list_xattrs(path, follow))?;
    let mut out = Vec::new();
    for name in names {
        out.extend_from_slice(&name);
        out.push(0);
    }
    // SAFETY: forwarded contract.
    unsafe { xattr_out(&out, list.cast(), size) }
}

/// setxattr/removexattr and their `l`/`f` forms (`value` `None`: remove).
///
/// # Safety
/// `name` a C string or invalid pointer.
unsafe fn set_xattr_sfs(
    path: &str,
    follow: bool,
    name: *const c_char,
    value: Option<&[u8]>,
    flags: c_int,
) -> SfsResult<c_int> {
    // SAFETY: forwarded contract.
    let name = unsafe { xattr_name(name) }?;
    let flags = u32::try_from(flags).map_err(|_| err(libc::EINVAL, "negative flags"))?;
    with_client(|c| c.set_xattr(path, name, value, flags, follow))?;
    Ok(0)
}

/// The value argument of setxattr.
///
/// # Safety
/// `value` valid for `size` bytes (or NULL with `size` 0).
unsafe fn xattr_value<'a>(value: *const c_void, size: size_t) -> SfsResult<&'a [u8]> {
    if size > sfs_global::metadata::XATTR_SIZE_MAX {
        return Err(err(
            libc::E2BIG,
            format!("an attribute value of {size} bytes"),
        ));
    }
    if size == 0 {
        return Ok(&[]);
    }
    if value.is_null() {
        return Err(err(libc::EFAULT, "NULL attribute value"));
    }
    // SAFETY: the caller passes `size` readable bytes at `value`.
    Ok(unsafe { std::slice::from_raw_parts(value.cast::<u8>(), size) })
}

macro_rules! xattr_path_hooks {
    ($($name:ident => $hook:ident ( $($arg:ident : $ty:ty),* ) -> $ret:ty, |$p:ident| $answer:expr;)*) => {$(
        /// # Safety
        /// `path` and `name` are NULL or NUL-terminated strings, `value` is
        /// valid for reading (set) or writing (get) `size` bytes and `list`
        /// for writing `size` bytes: the contract of the xattr(7) call
        /// whose arguments these are.
        pub(crate) unsafe fn $hook(path: *const c_char, $($arg: $ty),*) -> $ret {
            // SAFETY: `path` is NULL or NUL-terminated (this function's
            // contract).
            match unsafe { sfs_path(libc::AT_FDCWD, path) } {
                Some((_inside, $p)) => run(stringify!($name), || {
                    // SAFETY: `name`, `value`, `list` and `size` are as this
                    // function's contract says, which is what
                    // get_xattr_sfs, set_xattr_sfs, xattr_value and
                    // list_xattrs_sfs require of them.
                    unsafe { $answer }
                }),
                // SAFETY: the caller's arguments go on unchanged to the next
                // library's function of this name, under the contract this
                // function was called with.
                None => unsafe { real!($name)(path, $($arg),*) },
            }
        }
    )*};
}

macro_rules! xattr_fd_hooks {
    ($($name:ident => $hook:ident ( $($arg:ident : $ty:ty),* ) -> $ret:ty, |$p:ident| $answer:expr;)*) => {$(
        /// # Safety
        /// `name` is NULL or a NUL-terminated string, `value` is valid for
        /// reading (set) or writing (get) `size` bytes and `list` for
        /// writing `size` bytes: the contract of the xattr(7) call whose
        /// arguments these are.
        pub(crate) unsafe fn $hook(fd: c_int, $($arg: $ty),*) -> $ret {
            match sfs_fd(fd) {
                Some(_inside) => run(stringify!($name), || {
                    let $p = with_client(|c| c.fd_path(fd))?;
                    // SAFETY: `name`, `value`, `list` and `size` are as this
                    // function's contract says, which is what
                    // get_xattr_sfs, set_xattr_sfs, xattr_value and
                    // list_xattrs_sfs require of them.
                    unsafe { $answer }
                }),
                // SAFETY: the caller's arguments go on unchanged to the next
                // library's function of this name, under the contract this
                // function was called with.
                None => unsafe { real!($name)(fd, $($arg),*) },
            }
        }
    )*};
}

// Extended attributes of SFS entries (sfs_client::xattrs). The `l` forms
// act on a final symlink itself, the `f` forms on the descriptor's file.
xattr_path_hooks! {
    getxattr => sfs_getxattr(name: *const c_char, value: *mut c_void, size: size_t) -> ssize_t,
        |p| get_xattr_sfs(&p, true, name, value, size);
    lgetxattr => sfs_lgetxattr(name: *const c_char, value: *mut c_void, size: size_t) -> ssize_t,
        |p| get_xattr_sfs(&p, false, name, value, size);
    setxattr => sfs_setxattr(name: *const c_char, value: *const c_void, size: size_t, flags: c_int) -> c_int,
        |p| set_xattr_sfs(&p, true, name, Some(xattr_value(value, size)?), flags);
    lsetxattr => sfs_lsetxattr(name: *const c_char, value: *const c_void, size: size_t, flags: c_int) -> c_int,
        |p| set_xattr_sfs(&p, false, name, Some(xattr_value(value, size)?), flags);
    removexattr => sfs_removexattr(name: *const c_char) -> c_int,
        |p| set_xattr_sfs(&p, true, name, None, 0);
    lremovexattr => sfs_lremovexattr(name: *const c_char) -> c_int,
        |p| set_xattr_sfs(&p, false, name, None, 0);
    listxattr => sfs_listxattr(list: *mut c_char, size: size_t) -> ssize_t,
        |p| list_xattrs_sfs(&p, true, list, size);
    llistxattr => sfs_llistxattr(list: *mut c_char, size: size_t) -> ssize_t,
        |p| list_xattrs_sfs(&p, false, list, size);
}

xattr_fd_hooks! {
    fgetxattr => sfs_fgetxattr(name: *const c_char, value: *mut c_void, size: size_t) -> ssize_t,
        |p| get_xattr_sfs(&p, true, name, value, size);
    fsetxattr => sfs_fsetxattr(name: *const c_char, value: *const c_void, size: size_t, flags: c_int) -> c_int,
        |p| set_xattr_sfs(&p, true, name, Some(xattr_value(value, size)?), flags);
    fremovexattr => sfs_fremovexattr(name: *const c_char) -> c_int,
        |p| set_xattr_sfs(&p, true, name, None, 0);
    flistxattr => sfs_flistxattr(list: *mut c_char, size: size_t) -> ssize_t,
        |p| list_xattrs_sfs(&p, true, list, size);
}
