//! stdio on SFS files.
//!
//! glibc's `FILE*` functions call its internal read/write/seek, which no
//! LD_PRELOAD hook sees, so an SFS stream must be built explicitly: `fopen`,
//! `fdopen` and `freopen` on SFS return a `fopencookie` stream whose
//! callbacks are the shim's SFS calls; every `FILE*` function (fgets,
//! fprintf, fread, fseek, ...) then works on it. Its `fileno` is the SFS
//! descriptor.
//!
//! The standard streams are glibc objects bound to descriptors 0, 1 and 2.
//! When one of those numbers becomes an SFS descriptor (a shell's
//! `cmd > /mnt/sfs/out`, or a descriptor inherited through exec), the
//! global `stdin`/`stdout`/`stderr` pointer is switched to an SFS cookie
//! stream on that number, and switched back (after a flush) when the number
//! stops being SFS. Code that copied the old pointer before the switch
//! keeps writing to the old stream.

use crate::descriptors::{sfs_fd, SFS_FDS};
use crate::hooks::io::{lseek_sfs, read_sfs, write_sfs};
use crate::hooks::open::open_sfs;
use crate::paths::{c_str, sfs_path};
use crate::state::{self, err, run};
use libc::{c_char, c_int, c_void, size_t, ssize_t, FILE};
use sfs_global::SfsResult;
use std::sync::atomic::{AtomicPtr, Ordering};
use std::sync::Mutex;

/// The start of glibc's `struct _IO_FILE` (public in
/// `bits/types/struct_FILE.h`), up to `_fileno`.
#[repr(C)]
struct IoFilePrefix {
    flags: c_int,
    pointers: [*mut c_char; 11],
    markers: *mut c_void,
    chain: *mut c_void,
    fileno: c_int,
}

/// glibc's `cookie_io_functions_t`.
#[repr(C)]
struct CookieFunctions {
    read: Option<unsafe extern "C" fn(*mut c_void, *mut c_char, size_t) -> ssize_t>,
    write: Option<unsafe extern "C" fn(*mut c_void, *const c_char, size_t) -> ssize_t>,
    seek: Option<unsafe extern "C" fn(*mut c_void, *mut i64, c_int) -> c_int>,
    close: Option<unsafe extern "C" fn(*mut c_void) -> c_int>,
}

extern "C" {
    fn fopencookie(
        cookie: *mut c_void,
        mode: *const c_char,
        functions: CookieFunctions,
    ) -> *mut FILE;
}

/// What a cookie stream knows: its descriptor and whether fclose closes it.
struct Cookie {
    fd: c_int,
    owns_fd: bool,
}

/// # Safety
/// `cookie` is a [`Cookie`] made by [`cookie_stream`] and not yet closed, and
/// `buf` is valid for writing `size` bytes: what glibc passes to a cookie
/// stream's read function.
unsafe extern "C" fn cookie_read(cookie: *mut c_void, buf: *mut c_char, size: size_t) -> ssize_t {
    // SAFETY: `cookie` points to a live `Cookie` (this function's contract),
    // which only `cookie_close` frees.
    let c = unsafe { &*cookie.cast::<Cookie>() };
    let Some(_inside) = state::enter() else {
        return -1;
    };
    // SAFETY: `buf` is glibc's buffer, valid for `size` bytes of writes (this
    // function's contract).
    let slice = unsafe { std::slice::from_raw_parts_mut(buf.cast::<u8>(), size) };
    run("fread", || {
        read_sfs(c.fd, slice, None).map(|n| n as ssize_t)
    })
}

/// # Safety
/// `cookie` is a [`Cookie`] made by [`cookie_stream`] and not yet closed, and
/// `buf` is valid for reading `size` bytes: what glibc passes to a cookie
/// stream's write function.
unsafe extern "C" fn cookie_write(
    cookie: *mut c_void,
    buf: *const c_char,
    size: size_t,
) -> ssize_t {
    // SAFETY: `cookie` points to a live `Cookie` (this function's contract),
    // which only `cookie_close` frees.
    let c = unsafe { &*cookie.cast::<Cookie>() };
    let Some(_inside) = state::enter() else {
        return -1;
    };
    // SAFETY: `buf` is glibc's buffer, valid for `size` bytes of reads (this
    // function's contract).
    let slice = unsafe { std::slice::from_raw_parts(buf.cast::<u8>(), size) };
    // glibc treats a short cookie write as an error: write it all.
    run("fwrite", || {
        let mut done = 0;
        while done < slice.len() {
            done += write_sfs(c.fd, &slice[done..], None)?;
        }
        Ok(done as ssize_t)
    })
}

/// # Safety
/// `cookie` is a [`Cookie`] made by [`cookie_stream`] and not yet closed, and
/// `offset` is valid for reading and writing an `i64`: what glibc passes to a
/// cookie stream's seek function.
unsafe extern "C" fn cookie_seek(cookie: *mut c_void, offset: *mut i64, whence: c_int) -> c_int {
    // SAFETY: `cookie` points to a live `Cookie` (this function's contract),
    // which only `cookie_close` frees.
    let c = unsafe { &*cookie.cast::<Cookie>() };
    let Some(_inside) = state::enter() else {
        return -1;
    };
    // SAFETY: `offset` is valid for reads (this function's contract).
    match lseek_sfs(c.fd, unsafe { *offset }, whence) {
        Ok(pos) => {
            // SAFETY: `offset` is valid for writes (this function's contract).
            unsafe { *offset = pos };
            0
        }
        Err(e) => {
            state::set_errno(e.errno.0);
            -1
        }
    }
}

/// # Safety
/// `cookie` is a [`Cookie`] made by [`cookie_stream`], not yet closed: glibc
/// calls a cookie stream's close function once, when the stream is closed.
unsafe extern "C" fn cookie_close(cookie: *mut c_void) -> c_int {
    // SAFETY: `cookie` came from `Box::into_raw` in `cookie_stream` and is
    // freed here only, once (this function's contract).
    let c = unsafe { Box::from_raw(cookie.cast::<Cookie>()) };
    if c.owns_fd && state::inside_now() {
        // Closed by the shim itself (freopen of this stream).
        crate::hooks::fd::close_inside(c.fd);
        0
    } else if c.owns_fd {
        // SAFETY: close takes a number only: the stream's own descriptor.
        unsafe { libc::close(c.fd) }
    } else {
        0
    }
}

/// A cookie stream on SFS descriptor `fd`.
///
/// # Safety
/// `mode` is a NUL-terminated string (an fopen mode).
unsafe fn cookie_stream(fd: c_int, mode: *const c_char, owns_fd: bool) -> SfsResult<*mut FILE> {
    let cookie = Box::into_raw(Box::new(Cookie { fd, owns_fd }));
    let functions = CookieFunctions {
        read: Some(cookie_read),
        write: Some(cookie_write),
        seek: Some(cookie_seek),
        close: Some(cookie_close),
    };
    // SAFETY: `mode` is a C string (this function's contract); `cookie` is a
    // live `Box<Cookie>` that the callbacks, written for it, take over.
    let stream = unsafe { fopencookie(cookie.cast(), mode, functions) };
    if stream.is_null() {
        // SAFETY: `cookie` came from `Box::into_raw` above, and glibc did not
        // keep it (no stream was made).
        drop(unsafe { Box::from_raw(cookie) });
        return Err(err(state::errno(), "fopencookie"));
    }
    // SAFETY: `stream` is a non-NULL glibc `FILE`, which starts with the fields
    // of `IoFilePrefix` (glibc's public `struct _IO_FILE`).
    unsafe { (*stream.cast::<IoFilePrefix>()).fileno = fd };
    Ok(stream)
}

/// open(2) flags of an fopen mode string.
fn mode_flags(mode: &str) -> SfsResult<c_int> {
    let mut chars = mode.chars();
    let mut flags = match chars.next() {
        Some('r') => libc::O_RDONLY,
        Some('w') => libc::O_WRONLY | libc::O_CREAT | libc::O_TRUNC,
        Some('a') => libc::O_WRONLY | libc::O_CREAT | libc::O_APPEND,
        _ => return Err(err(libc::EINVAL, format!("bad fopen mode {mode:?}"))),
    };
    for c in chars {
        match c {
            '+' => flags = (flags & !libc::O_ACCMODE) | libc::O_RDWR,
            'x' => flags |= libc::O_EXCL,
            'e' => flags |= libc::O_CLOEXEC,
            _ => {}
        }
    }
    Ok(flags)
}

/// # Safety
/// `mode` is NULL or a NUL-terminated string.
unsafe fn fopen_sfs(path: &str, mode: *const c_char) -> SfsResult<*mut FILE> {
    // SAFETY: `mode` is NULL or a C string (this function's contract), which is
    // `c_str`'s.
    let text = unsafe { c_str(mode) }.ok_or_else(|| err(libc::EINVAL, "bad fopen mode"))?;
    let fd = open_sfs(path, mode_flags(&text)?, 0o666)?;
    // SAFETY: `mode` is a C string: `c_str` took it as one above.
    unsafe { cookie_stream(fd, mode, true) }.inspect_err(|_| crate::hooks::fd::close_inside(fd))
}

/// # Safety
/// `path` and `mode` are NULL or NUL-terminated strings: the contract of
/// fopen(3), whose arguments these are.
pub(crate) unsafe fn sfs_fopen(path: *const c_char, mode: *const c_char) -> *mut FILE {
    // SAFETY: `path` is NULL or a C string (this function's contract), which is
    // `sfs_path`'s.
    match unsafe { sfs_path(libc::AT_FDCWD, path) } {
        Some((_inside, p)) => run("fopen", || {
            // SAFETY: `mode` is NULL or a C string (this function's contract),
            // which is `fopen_sfs`'s.
            unsafe { fopen_sfs(&p, mode) }
        }),
        // SAFETY: the caller's arguments go on unchanged to the next library's
        // `fopen`, under the contract this function was called with.
        None => unsafe { real!(fopen)(path, mode) },
    }
}

/// # Safety
/// `mode` is a NUL-terminated string: the contract of fdopen(3), whose
/// arguments these are.
pub(crate) unsafe fn sfs_fdopen(fd: c_int, mode: *const c_char) -> *mut FILE {
    match sfs_fd(fd) {
        Some(_inside) => run("fdopen", || {
            // SAFETY: `mode` is a C string (this function's contract), which is
            // `cookie_stream`'s.
            unsafe { cookie_stream(fd, mode, true) }
        }),
        // SAFETY: the caller's arguments go on unchanged to the next library's
        // `fdopen`, under the contract this function was called with.
        None => unsafe { real!(fdopen)(fd, mode) },
    }
}

extern "C" {
    static mut stdin: *mut FILE;
    static mut stdout: *mut FILE;
    static mut stderr: *mut FILE;
}

/// The standard stream variable for descriptor 0, 1 or 2.
///
/// # Safety
/// None to call: it only takes the address of one of glibc's standard stream
/// variables. Reading or writing through it is the caller's to justify.
unsafe fn std_stream(fd: c_int) -> *mut *mut FILE {
    match fd {
        0 => &raw mut stdin,
        1 => &raw mut stdout,
        _ => &raw mut stderr,
    }
}

/// Per standard descriptor: the glibc stream that was replaced, and the
/// cookie stream that replaced it (kept for reuse: it only names the fd).
static ORIGINAL: [AtomicPtr<FILE>; 3] = [const { AtomicPtr::new(std::ptr::null_mut()) }; 3];
static COOKIE: [AtomicPtr<FILE>; 3] = [const { AtomicPtr::new(std::ptr::null_mut()) }; 3];
static SWITCH: Mutex<()> = Mutex::new(());

/// Descriptor 0/1/2 just became an SFS descriptor: point the standard
/// stream at it.
pub fn after_std_fd_became_sfs(fd: c_int) {
    if !(0..=2).contains(&fd) {
        return;
    }
    let _switch = SWITCH.lock().unwrap_or_else(|p| p.into_inner());
    let i = fd as usize;
    // SAFETY: the standard stream variables are plain pointers owned by
    // glibc; they are read and written as the C program itself would.
    unsafe {
        let slot = std_stream(fd);
        let mut cookie = COOKIE[i].load(Ordering::Acquire);
        if !cookie.is_null() && *slot == cookie {
            return;
        }
        if cookie.is_null() {
            let mode = if fd == 0 { c"r" } else { c"w" };
            match cookie_stream(fd, mode.as_ptr(), false) {
                Ok(s) => cookie = s,
                Err(_) => return,
            }
            if fd == 2 {
                libc::setvbuf(cookie, std::ptr::null_mut(), libc::_IONBF, 0);
            }
            COOKIE[i].store(cookie, Ordering::Release);
        }
        if fd != 0 {
            libc::fflush(*slot);
        }
        ORIGINAL[i].store(*slot, Ordering::Release);
        *slot = cookie;
    }
}

/// Descriptor `fd` is about to stop being what it is (closed, or replaced
/// by dup2): flush its standard stream and restore glibc's own stream.
pub fn before_std_fd_changes(fd: c_int) {
    if !(0..=2).contains(&fd) {
        return;
    }
    let _switch = SWITCH.lock().unwrap_or_else(|p| p.into_inner());
    let i = fd as usize;
    // SAFETY: as in `after_std_fd_became_sfs`.
    unsafe {
        let slot = std_stream(fd);
        if fd != 0 {
            libc::fflush(*slot);
        }
        let cookie = COOKIE[i].load(Ordering::Acquire);
        if !cookie.is_null() && *slot == cookie {
            let original = ORIGINAL[i].load(Ordering::Acquire);
            if !original.is_null() {
                *slot = original;
            }
        }
    }
}

/// freopen onto an SFS path: the stream's descriptor becomes the new SFS
/// file. A standard stream is switched as above and the switched stream
/// is returned; any other stream is closed and a new stream returned
/// (its address differs from the argument's: see docs/shim.md).
///
/// # Safety
/// `mode` is NULL or a NUL-terminated string and `stream` an open stream: the
/// contract of freopen(3).
unsafe fn freopen_sfs(path: &str, mode: *const c_char, stream: *mut FILE) -> SfsResult<*mut FILE> {
    // SAFETY: `mode` is NULL or a C string (this function's contract), which is
    // `c_str`'s.
    let text = unsafe { c_str(mode) }.ok_or_else(|| err(libc::EINVAL, "bad fopen mode"))?;
    let target = [0, 1, 2].into_iter().find(|&fd| {
        // SAFETY: reads glibc's standard stream variable, a plain pointer, as
        // the C program itself would.
        let slot = unsafe { std_stream(fd) };
        // SAFETY: as above.
        (unsafe { *slot }) == stream || ORIGINAL[fd as usize].load(Ordering::Acquire) == stream
    });
    let fd = open_sfs(path, mode_flags(&text)?, 0o666)?;
    match target {
        Some(std_fd) => {
            before_std_fd_changes(std_fd);
            // SAFETY: dup3 takes numbers only; a raw system call cannot
            // re-enter the hooks.
            let r = unsafe { raw_syscall!(libc::SYS_dup3, fd, std_fd, 0) };
            if r < 0 {
                let e = err(state::errno(), "freopen");
                crate::hooks::fd::close_inside(fd);
                return Err(e);
            }
            if SFS_FDS.contains(std_fd) {
                crate::hooks::fd::forget(std_fd);
            }
            if let Err(e) = sfs_client_dup(fd, std_fd) {
                crate::hooks::fd::close_inside(fd);
                // `std_fd` holds a copy of a placeholder that is no SFS
                // descriptor: closed, as a failed freopen closes the stream.
                crate::descriptors::release_fd(std_fd);
                return Err(e);
            }
            // The descriptor just opened, now copied to `std_fd`.
            crate::hooks::fd::close_inside(fd);
            after_std_fd_became_sfs(std_fd);
            // SAFETY: reads glibc's standard stream variable, a plain pointer,
            // as the C program itself would.
            Ok(unsafe { *std_stream(std_fd) })
        }
        None => {
            // SAFETY: `stream` is an open stream (this function's contract),
            // which freopen closes; it is not used after this.
            unsafe { libc::fclose(stream) };
            // SAFETY: `mode` is a C string: `c_str` took it as one above.
            unsafe { cookie_stream(fd, mode, true) }
        }
    }
}

fn sfs_client_dup(fd: c_int, newfd: c_int) -> SfsResult<()> {
    state::with_client(|c| c.dup_to(fd, newfd))?;
    SFS_FDS.insert(newfd);
    crate::descriptors::share_record(fd, newfd);
    Ok(())
}

/// # Safety
/// `path` and `mode` are NULL or NUL-terminated strings and `stream` an open
/// stream: the contract of freopen(3), whose arguments these are.
pub(crate) unsafe fn sfs_freopen(
    path: *const c_char,
    mode: *const c_char,
    stream: *mut FILE,
) -> *mut FILE {
    // SAFETY: `path` is NULL or a C string (this function's contract), which is
    // `sfs_path`'s.
    match unsafe { sfs_path(libc::AT_FDCWD, path) } {
        Some((_inside, p)) => run("freopen", || {
            // SAFETY: `mode` and `stream` as this function's contract says,
            // which is `freopen_sfs`'s.
            unsafe { freopen_sfs(&p, mode, stream) }
        }),
        // SAFETY: the caller's arguments go on unchanged to the next library's
        // `freopen`, under the contract this function was called with.
        None => unsafe { real!(freopen)(path, mode, stream) },
    }
}

/// # Safety
/// `path` and `mode` are NULL or NUL-terminated strings and `stream` an open
/// stream: the contract of freopen64(3), whose arguments these are.
pub(crate) unsafe fn sfs_freopen64(
    path: *const c_char,
    mode: *const c_char,
    stream: *mut FILE,
) -> *mut FILE {
    // SAFETY: `path` is NULL or a C string (this function's contract), which is
    // `sfs_path`'s.
    match unsafe { sfs_path(libc::AT_FDCWD, path) } {
        Some((_inside, p)) => run("freopen", || {
            // SAFETY: `mode` and `stream` as this function's contract says,
            // which is `freopen_sfs`'s.
            unsafe { freopen_sfs(&p, mode, stream) }
        }),
        // SAFETY: the caller's arguments go on unchanged to the next library's
        // `freopen64`, under the contract this function was called with.
        None => unsafe { real!(freopen64)(path, mode, stream) },
    }
}
