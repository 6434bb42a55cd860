//! The C ABI of the client library (declared in `include/sfs.h`).
//!
//! Programs that link SFS directly instead of being intercepted use these
//! functions. Calls return what the POSIX call returns on success and the
//! *negative* errno on failure (as raw system calls do), so no thread-local
//! `errno` is involved. Paths are SFS paths (`/` = root of the mount).

use crate::{Client, Whence};
use sfs_global::{Errno, Metadata, SfsError, SfsResult};
use std::ffi::{c_char, c_int, c_void, CStr};
use std::path::Path;

/// Device number reported in `st_dev` for every SFS entry ("SFS").
pub const SFS_DEVICE: u64 = 0x0053_4653;

/// Fills a `struct stat` from an SFS entry.
pub fn fill_stat(md: &Metadata, chunk_size: u64, st: &mut libc::stat) {
    st.st_dev = SFS_DEVICE;
    st.st_ino = md.id.lo() ^ md.id.hi();
    st.st_mode = md.mode;
    st.st_nlink = md.nlink.into();
    st.st_uid = md.uid;
    st.st_gid = md.gid;
    st.st_rdev = md.rdev();
    st.st_size = md.st_size() as i64;
    st.st_blksize = chunk_size as _;
    st.st_blocks = md.st_size().div_ceil(512) as i64;
    st.st_atime = md.atime_ns.div_euclid(1_000_000_000);
    st.st_atime_nsec = md.atime_ns.rem_euclid(1_000_000_000);
    st.st_mtime = md.mtime_ns.div_euclid(1_000_000_000);
    st.st_mtime_nsec = md.mtime_ns.rem_euclid(1_000_000_000);
    st.st_ctime = md.ctime_ns.div_euclid(1_000_000_000);
    st.st_ctime_nsec = md.ctime_ns.rem_euclid(1_000_000_000);
}

fn negative(e: &SfsError) -> c_int {
    -e.errno.0
}

fn status(r: SfsResult<()>) -> c_int {
    r.map_or_else(|e| negative(&e), |()| 0)
}

fn count(r: SfsResult<usize>) -> isize {
    r.map_or_else(|e| negative(&e) as isize, |n| n as isize)
}

/// Borrows a C string argument; EINVAL for NULL or non-UTF-8.
///
/// # Safety
/// `p` is NULL or points to a NUL-terminated string valid for the call.
unsafe fn arg<'a>(p: *const c_char) -> SfsResult<&'a str> {
    if p.is_null() {
        return Err(SfsError::invalid("NULL path"));
    }
    // SAFETY: the caller guarantees a valid NUL-terminated string.
    unsafe { CStr::from_ptr(p) }
        .to_str()
        .map_err(|_| SfsError::invalid("path is not UTF-8"))
}

/// Borrows the client handle; EINVAL for NULL.
///
/// # Safety
/// `c` is NULL or a pointer returned by `sfs_connect` and not yet passed to
/// `sfs_disconnect`.
unsafe fn client<'a>(c: *const Client) -> SfsResult<&'a Client> {
    // SAFETY: the caller guarantees `c` is NULL or a live client.
    unsafe { c.as_ref() }.ok_or_else(|| SfsError::invalid("NULL client"))
}

/// Connects to the SFS instance described by a config file and a hostfile.
/// Returns NULL on failure (the reason is logged through `tracing`).
///
/// # Safety
/// Both arguments are NUL-terminated strings.
#[no_mangle]
pub unsafe extern "C" fn sfs_connect(
    config_path: *const c_char,
    hostfile_path: *const c_char,
) -> *mut Client {
    // SAFETY: forwarded caller guarantees.
    let paths = unsafe { (arg(config_path), arg(hostfile_path)) };
    let (Ok(config), Ok(hosts)) = paths else {
        return std::ptr::null_mut();
    };
    match Client::from_files(Path::new(config), Path::new(hosts)) {
        Ok(c) => Box::into_raw(Box::new(c)),
        Err(e) => {
            tracing::error!("sfs_connect: {e}");
            std::ptr::null_mut()
        }
    }
}

/// Releases a client returned by `sfs_connect`.
///
/// # Safety
/// `c` is NULL or a live client; it must not be used afterwards.
#[no_mangle]
pub unsafe extern "C" fn sfs_disconnect(c: *mut Client) {
    if !c.is_null() {
        // SAFETY: `c` came from Box::into_raw in sfs_connect and is freed once.
        drop(unsafe { Box::from_raw(c) });
    }
}

macro_rules! with_client {
    ($c:expr, |$cl:ident| $body:expr) => {{
        // SAFETY: the C caller passes a live client from sfs_connect.
        match unsafe { client($c) } {
            Ok($cl) => $body,
            Err(e) => Err(e),
        }
    }};
}

/// `open(2)`: a descriptor, or -errno.
///
/// # Safety
/// `c` is a live client, `path` a NUL-terminated string.
#[no_mangle]
pub unsafe extern "C" fn sfs_open(
    c: *const Client,
    path: *const c_char,
    flags: c_int,
    mode: u32,
) -> c_int {
    // SAFETY: caller guarantees a valid string.
    let r = with_client!(c, |cl| unsafe { arg(path) }
        .and_then(|p| cl.open(p, flags, mode)));
    r.unwrap_or_else(|e| negative(&e))
}

/// `close(2)`: 0 or -errno.
///
/// # Safety
/// `c` is a live client.
#[no_mangle]
pub unsafe extern "C" fn sfs_close(c: *const Client, fd: c_int) -> c_int {
    status(with_client!(c, |cl| cl.close(fd)))
}

/// `pread(2)` (`offset` < 0 means "at the current offset", as `read(2)`).
///
/// # Safety
/// `c` is a live client; `buf` is valid for writes of `len` bytes.
#[no_mangle]
pub unsafe extern "C" fn sfs_pread(
    c: *const Client,
    fd: c_int,
    buf: *mut c_void,
    len: usize,
    offset: i64,
) -> isize {
    if buf.is_null() && len > 0 {
        return -(Errno::EINVAL.0 as isize);
    }
    let slice: &mut [u8] = if len == 0 {
        &mut []
    } else {
        // SAFETY: the caller guarantees `buf` is valid for `len` writable bytes.
        unsafe { std::slice::from_raw_parts_mut(buf.cast::<u8>(), len) }
    };
    count(with_client!(c, |cl| if offset < 0 {
        cl.read(fd, slice)
    } else {
        cl.pread(fd, slice, offset as u64)
    }))
}

/// `pwrite(2)` (`offset` < 0 means "at the current offset", as `write(2)`).
///
/// # Safety
/// `c` is a live client; `buf` is valid for reads of `len` bytes.
#[no_mangle]
pub unsafe extern "C" fn sfs_pwrite(
    c: *const Client,
    fd: c_int,
    buf: *const c_void,
    len: usize,
    offset: i64,
) -> isize {
    if buf.is_null() && len > 0 {
        return -(Errno::EINVAL.0 as isize);
    }
    let slice: &[u8] = if len == 0 {
        &[]
    } else {
        // SAFETY: the caller guarantees `buf` is valid for `len` readable bytes.
        unsafe { std::slice::from_raw_parts(buf.cast::<u8>(), len) }
    };
    count(with_client!(c, |cl| if offset < 0 {
        cl.write(fd, slice)
    } else {
        cl.pwrite(fd, slice, offset as u64)
    }))
}

/// `lseek(2)`: the new offset, or -errno.
///
/// # Safety
/// `c` is a live client.
#[no_mangle]
pub unsafe extern "C" fn sfs_lseek(c: *const Client, fd: c_int, offset: i64, whence: c_int) -> i64 {
    let r = with_client!(c, |cl| Whence::from_raw(whence)
        .and_then(|w| cl.lseek(fd, offset, w)));
    r.map_or_else(|e| i64::from(negative(&e)), |o| o as i64)
}

/// `stat(2)` (`follow` = 1) or `lstat(2)` (`follow` = 0): 0 or -errno.
///
/// # Safety
/// `c` is a live client, `path` a NUL-terminated string, `st` valid for writes.
#[no_mangle]
pub unsafe extern "C" fn sfs_stat(
    c: *const Client,
    path: *const c_char,
    st: *mut libc::stat,
    follow: c_int,
) -> c_int {
    let r = with_client!(c, |cl| {
        // SAFETY: caller guarantees a valid string.
        unsafe { arg(path) }
            .and_then(|p| if follow != 0 { cl.stat(p) } else { cl.lstat(p) })
            .map(|md| (md, cl.config().chunk_size))
    });
    match r {
        // SAFETY: the caller guarantees `st` is valid for writes.
        Ok((md, cs)) => match unsafe { st.as_mut() } {
            Some(st) => {
                fill_stat(&md, cs, st);
                0
            }
            None => -Errno::EINVAL.0,
        },
        Err(e) => negative(&e),
    }
}

/// `fstat(2)`: 0 or -errno.
///
/// # Safety
/// `c` is a live client, `st` valid for writes.
#[no_mangle]
pub unsafe extern "C" fn sfs_fstat(c: *const Client, fd: c_int, st: *mut libc::stat) -> c_int {
    match with_client!(c, |cl| cl.fstat(fd).map(|md| (md, cl.config().chunk_size))) {
        // SAFETY: the caller guarantees `st` is valid for writes.
        Ok((md, cs)) => match unsafe { st.as_mut() } {
            Some(st) => {
                fill_stat(&md, cs, st);
                0
            }
            None => -Errno::EINVAL.0,
        },
        Err(e) => negative(&e),
    }
}

macro_rules! path_call {
    ($(#[$doc:meta])* $name:ident, |$cl:ident, $p:ident $(, $extra:ident : $ty:ty)*| $body:expr) => {
        $(#[$doc])*
        ///
        /// # Safety
        /// `c` is a live client and `path` a NUL-terminated string.
        #[no_mangle]
        pub unsafe extern "C" fn $name(c: *const Client, path: *const c_char $(, $extra: $ty)*) -> c_int {
            // SAFETY: caller guarantees a valid string.
            status(with_client!(c, |$cl| unsafe { arg(path) }.and_then(|$p| $body)))
        }
    };
}

path_call!(/// `mkdir(2)`.
    sfs_mkdir, |cl, p, mode: u32| cl.mkdir(p, mode));
path_call!(/// `rmdir(2)`.
    sfs_rmdir, |cl, p| cl.rmdir(p));
path_call!(/// `unlink(2)`.
    sfs_unlink, |cl, p| cl.unlink(p));
path_call!(/// `truncate(2)`.
    sfs_truncate, |cl, p, size: i64| if size < 0 { Err(SfsError::invalid("negative size")) } else { cl.truncate(p, size as u64) });
path_call!(/// `chmod(2)`.
    sfs_chmod, |cl, p, mode: u32| cl.chmod(p, mode));
path_call!(/// Writes the file to the object back end and waits until it is
    /// persistent there (`sfs flush`; docs/semantics.md, level 3).
    sfs_flush, |cl, p| cl.flush(p).map(|_| ()));
path_call!(/// [`sfs_flush`] of the bytes `[offset, offset + len)` only (`len` 0:
/// to the end); the chunks holding them are written back whole.
sfs_flush_range, |cl, p, offset: i64, len: i64| match (u64::try_from(offset), u64::try_from(len)) {
    (Ok(offset), Ok(len)) => cl.flush_range(p, offset, len).map(|_| ()),
    _ => Err(SfsError::invalid("negative offset or length")),
});

/// `rename(2)`: 0 or -errno.
///
/// # Safety
/// `c` is a live client; both paths are NUL-terminated strings.
#[no_mangle]
pub unsafe extern "C" fn sfs_rename(
    c: *const Client,
    old: *const c_char,
    new: *const c_char,
) -> c_int {
    status(with_client!(c, |cl| {
        // SAFETY: the caller guarantees both are valid NUL-terminated strings.
        let (o, n) = unsafe { (arg(old), arg(new)) };
        o.and_then(|o| n.and_then(|n| cl.rename(o, n)))
    }))
}

/// `symlink(2)`: 0 or -errno.
///
/// # Safety
/// `c` is a live client; both arguments are NUL-terminated strings.
#[no_mangle]
pub unsafe extern "C" fn sfs_symlink(
    c: *const Client,
    target: *const c_char,
    linkpath: *const c_char,
) -> c_int {
    status(with_client!(c, |cl| {
        // SAFETY: the caller guarantees both are valid NUL-terminated strings.
        let (t, l) = unsafe { (arg(target), arg(linkpath)) };
        t.and_then(|t| l.and_then(|l| cl.symlink(t, l)))
    }))
}

/// `readlink(2)`: bytes placed in `buf` (not NUL-terminated), or -errno.
///
/// # Safety
/// `c` is a live client, `path` a NUL-terminated string, `buf` valid for
/// writes of `len` bytes.
#[no_mangle]
pub unsafe extern "C" fn sfs_readlink(
    c: *const Client,
    path: *const c_char,
    buf: *mut c_char,
    len: usize,
) -> isize {
    // SAFETY: caller guarantees a valid string.
    let r = with_client!(c, |cl| unsafe { arg(path) }.and_then(|p| cl.readlink(p)));
    match r {
        Ok(target) => {
            let n = target.len().min(len);
            if n > 0 {
                // SAFETY: `buf` is valid for `len >= n` bytes and cannot overlap
                // the freshly allocated `target`.
                unsafe { std::ptr::copy_nonoverlapping(target.as_ptr(), buf.cast::<u8>(), n) };
            }
            n as isize
        }
        Err(e) => negative(&e) as isize,
    }
}

/// `ftruncate(2)`: 0 or -errno.
///
/// # Safety
/// `c` is a live client.
#[no_mangle]
pub unsafe extern "C" fn sfs_ftruncate(c: *const Client, fd: c_int, size: i64) -> c_int {
    status(with_client!(c, |cl| if size < 0 {
        Err(SfsError::invalid("negative size"))
    } else {
        cl.ftruncate(fd, size as u64)
    }))
}

/// `fsync(2)`: 0 or -errno.
///
/// # Safety
/// `c` is a live client.
#[no_mangle]
pub unsafe extern "C" fn sfs_fsync(c: *const Client, fd: c_int) -> c_int {
    status(with_client!(c, |cl| cl.fsync(fd)))
}
