//! Data calls on SFS descriptors: read/write, positional and vectored
//! variants, the fortified `_chk` variants, and lseek.

use crate::descriptors::sfs_fd;
use crate::state::{err, run, with_client};
use libc::{c_int, c_void, iovec, off_t, size_t, ssize_t};
use sfs_client::Whence;
use sfs_global::SfsResult;

/// A C buffer as a slice (empty when `len` is 0, whatever the pointer).
///
/// The program's read buffer may be uninitialised memory. The slice is
/// only ever written (the client copies answers into it and never reads
/// it), which Rust's rules allow through a `&mut [u8]`; whether merely
/// making such a reference to uninitialised bytes is allowed is a question
/// those rules leave open. Zeroing the buffer first would settle it for a
/// `memset` of every read's length; `MaybeUninit` down to the transports
/// would settle it for free, and is not done yet (docs/shim.md, "Known
/// gaps"). `stdio`'s `cookie_read` is the same case.
///
/// # Safety
/// `buf` is valid for `len` bytes of writes.
unsafe fn out_buf<'a>(buf: *mut c_void, len: usize) -> &'a mut [u8] {
    if len == 0 || buf.is_null() {
        &mut []
    } else {
        // SAFETY: per the contract above.
        unsafe { std::slice::from_raw_parts_mut(buf.cast::<u8>(), len) }
    }
}

/// # Safety
/// `buf` is valid for `len` bytes of reads.
unsafe fn in_buf<'a>(buf: *const c_void, len: usize) -> &'a [u8] {
    if len == 0 || buf.is_null() {
        &[]
    } else {
        // SAFETY: per the contract above.
        unsafe { std::slice::from_raw_parts(buf.cast::<u8>(), len) }
    }
}

fn offset(off: i64) -> SfsResult<u64> {
    u64::try_from(off).map_err(|_| err(libc::EINVAL, format!("negative offset {off}")))
}

pub fn read_sfs(fd: c_int, buf: &mut [u8], at: Option<i64>) -> SfsResult<usize> {
    with_client(|c| match at {
        None => c.read(fd, buf),
        Some(off) => c.pread(fd, buf, offset(off)?),
    })
}

/// A write as `write`/`pwrite` make it: within the process's
/// RLIMIT_FSIZE ([`fsize_allows`]).
pub fn write_sfs(fd: c_int, buf: &[u8], at: Option<i64>) -> SfsResult<usize> {
    let buf = match file_size_limit() {
        None => buf,
        Some(limit) => {
            let start = match at {
                Some(off) => offset(off)?,
                None => with_client(|c| {
                    let whence = if c.fd_flags(fd)? & libc::O_APPEND != 0 {
                        Whence::End // an append lands at the end
                    } else {
                        Whence::Current
                    };
                    c.lseek(fd, 0, whence)
                })?,
            };
            &buf[..fsize_allows(start, buf.len(), limit)?]
        }
    };
    write_unlimited(fd, buf, at)
}

/// A write without the RLIMIT_FSIZE check (mmap's write-back: the limit
/// applies to writes, not to stores into a mapping).
pub fn write_unlimited(fd: c_int, buf: &[u8], at: Option<i64>) -> SfsResult<usize> {
    with_client(|c| match at {
        None => c.write(fd, buf),
        Some(off) => c.pwrite(fd, buf, offset(off)?),
    })
}

/// The process's RLIMIT_FSIZE, when it has one.
pub fn file_size_limit() -> Option<u64> {
    let mut limit = libc::rlimit {
        rlim_cur: 0,
        rlim_max: 0,
    };
    // SAFETY: `limit` is a valid, writable rlimit.
    let r = unsafe { libc::getrlimit(libc::RLIMIT_FSIZE, &mut limit) };
    (r == 0 && limit.rlim_cur != libc::RLIM_INFINITY).then_some(limit.rlim_cur)
}

/// `truncate`/`ftruncate` to `len` under RLIMIT_FSIZE: past it, SIGXFSZ
/// and EFBIG, as Linux.
pub fn check_truncate_length(len: u64) -> SfsResult<()> {
    match file_size_limit() {
        Some(limit) if len > limit => fsize_allows(len, 1, len).map(|_| ()),
        _ => Ok(()),
    }
}

/// How many of `len` bytes starting at `start` RLIMIT_FSIZE (`limit`)
/// lets a file take, as Linux decides: the bytes below the limit (a short
/// write); none at all — SIGXFSZ to the process, then EFBIG — when the
/// write starts at or past it.
pub fn fsize_allows(start: u64, len: usize, limit: u64) -> SfsResult<usize> {
    if len == 0 {
        return Ok(0);
    }
    if start >= limit {
        // SAFETY: raising a signal in this process; its default action
        // ends it, as the kernel's would.
        unsafe { libc::raise(libc::SIGXFSZ) };
        return Err(err(
            libc::EFBIG,
            format!("offset {start} at or past RLIMIT_FSIZE {limit}"),
        ));
    }
    Ok(len.min(usize::try_from(limit - start).unwrap_or(usize::MAX)))
}

/// The iovecs of a vectored call.
///
/// # Safety
/// `iov` points to `count` iovecs, each valid for its length.
unsafe fn iovecs<'a>(iov: *const iovec, count: c_int) -> SfsResult<&'a [iovec]> {
    if !(0..=libc::UIO_MAXIOV).contains(&count) {
        return Err(err(libc::EINVAL, "bad iovec count"));
    }
    if count == 0 {
        return Ok(&[]);
    }
    // SAFETY: per the contract above.
    Ok(unsafe { std::slice::from_raw_parts(iov, count as usize) })
}

/// Vectored read: one SFS read of the total length, scattered.
///
/// # Safety
/// As [`iovecs`].
unsafe fn readv_sfs(
    fd: c_int,
    iov: *const iovec,
    count: c_int,
    at: Option<i64>,
) -> SfsResult<usize> {
    // SAFETY: forwarded contract.
    let iov = unsafe { iovecs(iov, count) }?;
    let total: usize = iov.iter().map(|v| v.iov_len).sum();
    let mut data = vec![0u8; total];
    let n = read_sfs(fd, &mut data, at)?;
    let mut rest = &data[..n];
    for v in iov {
        if rest.is_empty() {
            break;
        }
        let take = rest.len().min(v.iov_len);
        // SAFETY: each iovec is valid for `iov_len` bytes.
        unsafe { out_buf(v.iov_base, take) }.copy_from_slice(&rest[..take]);
        rest = &rest[take..];
    }
    Ok(n)
}

/// Vectored write: gathered into one SFS write (so it stays one write, as
/// writev is atomic with respect to other writers of the file).
///
/// # Safety
/// As [`iovecs`].
unsafe fn writev_sfs(
    fd: c_int,
    iov: *const iovec,
    count: c_int,
    at: Option<i64>,
) -> SfsResult<usize> {
    // SAFETY: forwarded contract.
    let iov = unsafe { iovecs(iov, count) }?;
    let mut data = Vec::with_capacity(iov.iter().map(|v| v.iov_len).sum());
    for v in iov {
        // SAFETY: each iovec is valid for `iov_len` bytes.
        data.extend_from_slice(unsafe { in_buf(v.iov_base, v.iov_len) });
    }
    write_sfs(fd, &data, at)
}

fn to_ssize(r: SfsResult<usize>) -> SfsResult<ssize_t> {
    r.map(|n| n as ssize_t)
}

/// # Safety
/// `buf` is valid for writing `count` bytes: the contract of read(2), whose
/// arguments these are.
pub(crate) unsafe fn sfs_read(fd: c_int, buf: *mut c_void, count: size_t) -> ssize_t {
    match sfs_fd(fd) {
        Some(_inside) => run("read", || {
            // SAFETY: `buf` is valid for `count` bytes of writes (this
            // function's contract).
            to_ssize(read_sfs(fd, unsafe { out_buf(buf, count) }, None))
        }),
        // SAFETY: the caller's arguments go on unchanged to the next library's
        // `read`, under the contract this function was called with.
        None => unsafe { real!(read)(fd, buf, count) },
    }
}

/// # Safety
/// `buf` is valid for writing `count` bytes and `buflen` is the size of the
/// object it points to: the contract of `__read_chk` (fortified read), whose
/// arguments these are.
pub(crate) unsafe fn sfs_read_chk(
    fd: c_int,
    buf: *mut c_void,
    count: size_t,
    buflen: size_t,
) -> ssize_t {
    match sfs_fd(fd) {
        Some(_inside) => run("read", || {
            // SAFETY: `buf` is valid for `count` bytes of writes, and so for
            // the fewer of `count` and `buflen` (this function's contract).
            to_ssize(read_sfs(
                fd,
                unsafe { out_buf(buf, count.min(buflen)) },
                None,
            ))
        }),
        // SAFETY: the caller's arguments go on unchanged to the next library's
        // `__read_chk`, under the contract this function was called with.
        None => unsafe { real!(__read_chk)(fd, buf, count, buflen) },
    }
}

/// # Safety
/// `buf` is valid for reading `count` bytes: the contract of write(2), whose
/// arguments these are.
pub(crate) unsafe fn sfs_write(fd: c_int, buf: *const c_void, count: size_t) -> ssize_t {
    match sfs_fd(fd) {
        Some(_inside) => run("write", || {
            // SAFETY: `buf` is valid for `count` bytes of reads (this
            // function's contract).
            to_ssize(write_sfs(fd, unsafe { in_buf(buf, count) }, None))
        }),
        // SAFETY: the caller's arguments go on unchanged to the next library's
        // `write`, under the contract this function was called with.
        None => unsafe { real!(write)(fd, buf, count) },
    }
}

/// # Safety
/// `buf` is valid for writing `count` bytes: the contract of pread(2), whose
/// arguments these are.
pub(crate) unsafe fn sfs_pread(fd: c_int, buf: *mut c_void, count: size_t, off: off_t) -> ssize_t {
    match sfs_fd(fd) {
        Some(_inside) => run("pread", || {
            // SAFETY: `buf` is valid for `count` bytes of writes (this
            // function's contract).
            to_ssize(read_sfs(fd, unsafe { out_buf(buf, count) }, Some(off)))
        }),
        // SAFETY: the caller's arguments go on unchanged to the next library's
        // `pread`, under the contract this function was called with.
        None => unsafe { real!(pread)(fd, buf, count, off) },
    }
}

/// # Safety
/// `buf` is valid for writing `count` bytes and `buflen` is the size of the
/// object it points to: the contract of `__pread_chk` (fortified pread), whose
/// arguments these are.
pub(crate) unsafe fn sfs_pread_chk(
    fd: c_int,
    buf: *mut c_void,
    count: size_t,
    off: off_t,
    buflen: size_t,
) -> ssize_t {
    match sfs_fd(fd) {
        Some(_inside) => run("pread", || {
            // SAFETY: `buf` is valid for `count` bytes of writes, and so for
            // the fewer of `count` and `buflen` (this function's contract).
            to_ssize(read_sfs(
                fd,
                unsafe { out_buf(buf, count.min(buflen)) },
                Some(off),
            ))
        }),
        // SAFETY: the caller's arguments go on unchanged to the next library's
        // `__pread_chk`, under the contract this function was called with.
        None => unsafe { real!(__pread_chk)(fd, buf, count, off, buflen) },
    }
}

/// # Safety
/// `buf` is valid for writing `count` bytes and `buflen` is the size of the
/// object it points to: the contract of `__pread64_chk` (fortified pread64),
/// whose arguments these are.
pub(crate) unsafe fn sfs_pread64_chk(
    fd: c_int,
    buf: *mut c_void,
    count: size_t,
    off: off_t,
    buflen: size_t,
) -> ssize_t {
    match sfs_fd(fd) {
        Some(_inside) => run("pread", || {
            // SAFETY: `buf` is valid for `count` bytes of writes, and so for
            // the fewer of `count` and `buflen` (this function's contract).
            to_ssize(read_sfs(
                fd,
                unsafe { out_buf(buf, count.min(buflen)) },
                Some(off),
            ))
        }),
        // SAFETY: the caller's arguments go on unchanged to the next library's
        // `__pread64_chk`, under the contract this function was called with.
        None => unsafe { real!(__pread64_chk)(fd, buf, count, off, buflen) },
    }
}

/// # Safety
/// `buf` is valid for reading `count` bytes: the contract of pwrite(2), whose
/// arguments these are.
pub(crate) unsafe fn sfs_pwrite(
    fd: c_int,
    buf: *const c_void,
    count: size_t,
    off: off_t,
) -> ssize_t {
    match sfs_fd(fd) {
        Some(_inside) => run("pwrite", || {
            // SAFETY: `buf` is valid for `count` bytes of reads (this
            // function's contract).
            to_ssize(write_sfs(fd, unsafe { in_buf(buf, count) }, Some(off)))
        }),
        // SAFETY: the caller's arguments go on unchanged to the next library's
        // `pwrite`, under the contract this function was called with.
        None => unsafe { real!(pwrite)(fd, buf, count, off) },
    }
}

/// # Safety
/// `iov` points to `count` iovecs, each valid for writing its `iov_len` bytes:
/// the contract of readv(2), whose arguments these are.
pub(crate) unsafe fn sfs_readv(fd: c_int, iov: *const iovec, count: c_int) -> ssize_t {
    match sfs_fd(fd) {
        Some(_inside) => run("readv", || {
            // SAFETY: `iov` and `count` as this function's contract says, which
            // is `readv_sfs`'s.
            to_ssize(unsafe { readv_sfs(fd, iov, count, None) })
        }),
        // SAFETY: the caller's arguments go on unchanged to the next library's
        // `readv`, under the contract this function was called with.
        None => unsafe { real!(readv)(fd, iov, count) },
    }
}

/// # Safety
/// `iov` points to `count` iovecs, each valid for reading its `iov_len` bytes:
/// the contract of writev(2), whose arguments these are.
pub(crate) unsafe fn sfs_writev(fd: c_int, iov: *const iovec, count: c_int) -> ssize_t {
    match sfs_fd(fd) {
        Some(_inside) => run("writev", || {
            // SAFETY: `iov` and `count` as this function's contract says, which
            // is `writev_sfs`'s.
            to_ssize(unsafe { writev_sfs(fd, iov, count, None) })
        }),
        // SAFETY: the caller's arguments go on unchanged to the next library's
        // `writev`, under the contract this function was called with.
        None => unsafe { real!(writev)(fd, iov, count) },
    }
}

/// # Safety
/// `iov` points to `count` iovecs, each valid for writing its `iov_len` bytes:
/// the contract of preadv(2), whose arguments these are.
pub(crate) unsafe fn sfs_preadv(fd: c_int, iov: *const iovec, count: c_int, off: off_t) -> ssize_t {
    match sfs_fd(fd) {
        Some(_inside) => run("preadv", || {
            // SAFETY: `iov` and `count` as this function's contract says, which
            // is `readv_sfs`'s.
            to_ssize(unsafe { readv_sfs(fd, iov, count, Some(off)) })
        }),
        // SAFETY: the caller's arguments go on unchanged to the next library's
        // `preadv`, under the contract this function was called with.
        None => unsafe { real!(preadv)(fd, iov, count, off) },
    }
}

/// # Safety
/// `iov` points to `count` iovecs, each valid for reading its `iov_len` bytes:
/// the contract of pwritev(2), whose arguments these are.
pub(crate) unsafe fn sfs_pwritev(
    fd: c_int,
    iov: *const iovec,
    count: c_int,
    off: off_t,
) -> ssize_t {
    match sfs_fd(fd) {
        Some(_inside) => run("pwritev", || {
            // SAFETY: `iov` and `count` as this function's contract says, which
            // is `writev_sfs`'s.
            to_ssize(unsafe { writev_sfs(fd, iov, count, Some(off)) })
        }),
        // SAFETY: the caller's arguments go on unchanged to the next library's
        // `pwritev`, under the contract this function was called with.
        None => unsafe { real!(pwritev)(fd, iov, count, off) },
    }
}

/// preadv2/pwritev2: offset -1 means "the current offset"; the RWF_ flags
/// (hints such as RWF_HIPRI/RWF_DSYNC) do not change what SFS does, except
/// RWF_NOWAIT, which SFS cannot honour.
fn v2_offset(off: off_t, flags: c_int) -> SfsResult<Option<i64>> {
    if flags & libc::RWF_NOWAIT != 0 {
        return Err(err(libc::EOPNOTSUPP, "RWF_NOWAIT is not supported on SFS"));
    }
    Ok(if off == -1 { None } else { Some(off) })
}

/// # Safety
/// `iov` points to `count` iovecs, each valid for writing its `iov_len` bytes:
/// the contract of preadv2(2), whose arguments these are.
pub(crate) unsafe fn sfs_preadv2(
    fd: c_int,
    iov: *const iovec,
    count: c_int,
    off: off_t,
    flags: c_int,
) -> ssize_t {
    match sfs_fd(fd) {
        Some(_inside) => run("preadv2", || {
            // SAFETY: `iov` and `count` as this function's contract says, which
            // is `readv_sfs`'s.
            to_ssize(unsafe { readv_sfs(fd, iov, count, v2_offset(off, flags)?) })
        }),
        // SAFETY: the caller's arguments go on unchanged to the next library's
        // `preadv2`, under the contract this function was called with.
        None => unsafe { real!(preadv2)(fd, iov, count, off, flags) },
    }
}

/// # Safety
/// `iov` points to `count` iovecs, each valid for reading its `iov_len` bytes:
/// the contract of pwritev2(2), whose arguments these are.
pub(crate) unsafe fn sfs_pwritev2(
    fd: c_int,
    iov: *const iovec,
    count: c_int,
    off: off_t,
    flags: c_int,
) -> ssize_t {
    match sfs_fd(fd) {
        Some(_inside) => run("pwritev2", || {
            // SAFETY: `iov` and `count` as this function's contract says, which
            // is `writev_sfs`'s.
            to_ssize(unsafe { writev_sfs(fd, iov, count, v2_offset(off, flags)?) })
        }),
        // SAFETY: the caller's arguments go on unchanged to the next library's
        // `pwritev2`, under the contract this function was called with.
        None => unsafe { real!(pwritev2)(fd, iov, count, off, flags) },
    }
}

pub fn lseek_sfs(fd: c_int, off: off_t, whence: c_int) -> SfsResult<off_t> {
    let whence = Whence::from_raw(whence)?;
    with_client(|c| c.lseek(fd, off, whence)).map(|o| o as off_t)
}

/// # Safety
/// Any arguments are sound: lseek(2), whose arguments these are, takes numbers
/// only (the handler is `unsafe` by the hooks' shape).
pub(crate) unsafe fn sfs_lseek(fd: c_int, off: off_t, whence: c_int) -> off_t {
    match sfs_fd(fd) {
        Some(_inside) => run("lseek", || lseek_sfs(fd, off, whence)),
        // SAFETY: the caller's arguments go on unchanged to the next library's
        // `lseek`, under the contract this function was called with (numbers
        // only).
        None => unsafe { real!(lseek)(fd, off, whence) },
    }
}
