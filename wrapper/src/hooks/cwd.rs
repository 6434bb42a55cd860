//! The working directory inside the mount: chdir/fchdir/getcwd/
//! get_current_dir_name, and realpath/canonicalize_file_name.
//!
//! The kernel cannot enter an SFS directory, so the shim keeps its own
//! working directory while it is inside the mount: relative paths and
//! AT_FDCWD resolve against it, getcwd reports it, and `exec` passes it on
//! (`SFS_CWD`). The kernel's working directory stays where it was.

use crate::descriptors::sfs_fd;
use crate::paths::{c_str, sfs_path};
use crate::state::{self, err, run, with_client};
use libc::{c_char, c_int, size_t};
use sfs_global::path::{normalize_host, split_parent, unescape};
use sfs_global::SfsResult;

fn enter_dir(path: String) -> SfsResult<c_int> {
    let md = with_client(|c| c.stat(&path))?;
    if !md.is_dir() {
        return Err(err(libc::ENOTDIR, format!("{path}: not a directory")));
    }
    state::set_cwd(Some(path));
    Ok(0)
}

/// # Safety
/// `path` is NULL or a NUL-terminated string: the contract of chdir(2),
/// whose argument this is.
pub(crate) unsafe fn sfs_chdir(path: *const c_char) -> c_int {
    // SAFETY: `path` is NULL or NUL-terminated (this function's contract).
    if let Some((_inside, p)) = unsafe { sfs_path(libc::AT_FDCWD, path) } {
        return run("chdir", || enter_dir(p));
    }
    // Leaving the mount with a relative path: it is relative to the
    // shim's directory, not the kernel's.
    // SAFETY: `path` is NULL or NUL-terminated (this function's contract),
    // and outlives the borrowed string, which lives for this match.
    let absolute = match (state::cwd(), unsafe { c_str(path) }) {
        (Some(cwd), Some(rel)) if !rel.starts_with('/') => state::settings()
            .and_then(|s| normalize_host(&format!("{}/{rel}", state::host_path(s, &cwd))))
            .and_then(|p| std::ffi::CString::new(unescape(&p).into_owned()).ok()),
        _ => None,
    };
    let r = match &absolute {
        // SAFETY: `p` is a NUL-terminated CString alive for the call, as the
        // next library's `chdir` requires.
        Some(p) => unsafe { real!(chdir)(p.as_ptr()) },
        // SAFETY: the caller's argument goes on unchanged to the next
        // library's `chdir`, under the contract this function was called
        // with.
        None => unsafe { real!(chdir)(path) },
    };
    if r == 0 {
        state::set_cwd(None);
    }
    r
}

/// # Safety
/// None beyond fchdir(2)'s: its argument is a plain integer.
pub(crate) unsafe fn sfs_fchdir(fd: c_int) -> c_int {
    match sfs_fd(fd) {
        Some(_inside) => run("fchdir", || enter_dir(with_client(|c| c.fd_path(fd))?)),
        None => {
            // SAFETY: the caller's argument goes on unchanged to the next
            // library's `fchdir`, under the contract this function was
            // called with.
            let r = unsafe { real!(fchdir)(fd) };
            if r == 0 {
                state::set_cwd(None);
            }
            r
        }
    }
}

/// The shim's working directory as a host path, if inside the mount.
fn cwd_host_path() -> Option<String> {
    let cwd = state::cwd()?;
    let _inside = state::enter()?;
    Some(state::host_path(state::settings()?, &cwd))
}

/// Copies the program's bytes of `s` (an SFS string: [`unescape`]) into a
/// caller buffer or a malloc'ed one (glibc's getcwd extension: NULL
/// buffer).
///
/// # Safety
/// `buf` is NULL or valid for writing `size` bytes.
unsafe fn to_c_buffer(s: &str, buf: *mut c_char, size: size_t) -> SfsResult<*mut c_char> {
    let s = unescape(s);
    let need = s.len() + 1;
    let out = if buf.is_null() {
        let n = if size == 0 { need } else { size };
        if n < need {
            return Err(err(libc::ERANGE, "buffer too small"));
        }
        // SAFETY: malloc has no precondition; its NULL is checked below.
        let p = unsafe { libc::malloc(n) }.cast::<c_char>();
        if p.is_null() {
            return Err(err(libc::ENOMEM, "getcwd"));
        }
        p
    } else {
        if size < need {
            return Err(err(libc::ERANGE, "buffer too small"));
        }
        buf
    };
    // SAFETY: `out` is valid for writing `need` = `s.len() + 1` bytes: it
    // is either a fresh malloc of `n` >= `need` bytes or `buf` with `size`
    // >= `need` (checked above; `buf` valid for `size` bytes per this
    // function's contract); `s` is a Rust string, not in that buffer.
    unsafe {
        std::ptr::copy_nonoverlapping(s.as_ptr(), out.cast::<u8>(), s.len());
        *out.add(s.len()) = 0;
    }
    Ok(out)
}

/// # Safety
/// `buf` is NULL or valid for writing `size` bytes: the contract of
/// getcwd(3), whose arguments these are.
pub(crate) unsafe fn sfs_getcwd(buf: *mut c_char, size: size_t) -> *mut c_char {
    match cwd_host_path() {
        Some(p) => run("getcwd", || {
            // SAFETY: `buf` is NULL or valid for `size` bytes (this
            // function's contract), as to_c_buffer requires.
            unsafe { to_c_buffer(&p, buf, size) }
        }),
        // SAFETY: the caller's arguments go on unchanged to the next
        // library's `getcwd`, under the contract this function was called
        // with.
        None => unsafe { real!(getcwd)(buf, size) },
    }
}

// The fortified variants (`-D_FORTIFY_SOURCE`, Debian's default for
// packaged C) take the caller's buffer size: a call that would overflow it
// goes to glibc's own, which aborts as it must; every other call is the
// plain one.
/// # Safety
/// `buf` is NULL or valid for writing `buflen` bytes: the contract of
/// `__getcwd_chk` (getcwd(3) under `_FORTIFY_SOURCE`), whose arguments
/// these are.
pub(crate) unsafe fn sfs_getcwd_chk(buf: *mut c_char, size: size_t, buflen: size_t) -> *mut c_char {
    if size > buflen {
        // SAFETY: the caller's arguments go on unchanged to the next
        // library's `__getcwd_chk`, under the contract this function was
        // called with.
        return unsafe { real!(__getcwd_chk)(buf, size, buflen) };
    }
    match cwd_host_path() {
        Some(p) => run("getcwd", || {
            // SAFETY: `buf` is NULL or valid for `buflen` >= `size` bytes
            // (this function's contract; checked above), as to_c_buffer
            // requires.
            unsafe { to_c_buffer(&p, buf, size) }
        }),
        // SAFETY: the caller's arguments go on unchanged to the next
        // library's `__getcwd_chk`, under the contract this function was
        // called with.
        None => unsafe { real!(__getcwd_chk)(buf, size, buflen) },
    }
}

/// # Safety
/// None: get_current_dir_name(3) takes no arguments (`unsafe` is the
/// handlers' shape).
pub(crate) unsafe fn sfs_get_current_dir_name() -> *mut c_char {
    match cwd_host_path() {
        Some(p) => run("get_current_dir_name", || {
            // SAFETY: a NULL buffer: to_c_buffer mallocs its own.
            unsafe { to_c_buffer(&p, std::ptr::null_mut(), 0) }
        }),
        // SAFETY: the next library's `get_current_dir_name` takes no
        // arguments and has no precondition.
        None => unsafe { real!(get_current_dir_name)() },
    }
}

/// realpath of an SFS path: follows symlinks among its directories and at
/// the last component, fails like realpath if it does not exist.
/// `Err(host)` when a symlink leads out of the mount.
fn realpath_sfs(path: &str) -> SfsResult<Result<String, String>> {
    let settings = state::settings().ok_or_else(|| err(libc::EIO, "no settings"))?;
    let mut current = path.to_string();
    for _ in 0..40 {
        current = with_client(|c| c.resolve_directories(&current))?;
        let md = with_client(|c| c.lstat(&current))?;
        if md.kind() != sfs_global::FileKind::Symlink {
            return Ok(Ok(state::host_path(settings, &current)));
        }
        let target = md.link_target;
        let host = if target.starts_with('/') {
            target
        } else {
            let parent = split_parent(&current).map_or("/", |(p, _)| p);
            format!("{}/{target}", state::host_path(settings, parent))
        };
        // A `..` in the target is taken from where the directory before
        // it really is, as the kernel takes it.
        match crate::paths::resolve_dotdots(settings, libc::AT_FDCWD, &host) {
            Some(inside) => current = inside?,
            None => return Ok(Err(host)),
        }
    }
    Err(err(
        libc::ELOOP,
        format!("{path}: too many levels of symbolic links"),
    ))
}

/// # Safety
/// `path` is NULL or a NUL-terminated string and `resolved` is NULL or valid
/// for writing `PATH_MAX` bytes: the contract of realpath(3), whose
/// arguments these are.
pub(crate) unsafe fn sfs_realpath(path: *const c_char, resolved: *mut c_char) -> *mut c_char {
    // SAFETY: `path` is NULL or NUL-terminated (this function's contract).
    match unsafe { sfs_path(libc::AT_FDCWD, path) } {
        Some((inside, p)) => {
            let r = realpath_sfs(&p);
            match r {
                // SAFETY: `resolved` is NULL (size 0: to_c_buffer mallocs)
                // or valid for `PATH_MAX` bytes (this function's contract),
                // the size passed.
                Ok(Ok(host)) => run("realpath", || unsafe {
                    to_c_buffer(
                        &host,
                        resolved,
                        if resolved.is_null() {
                            0
                        } else {
                            libc::PATH_MAX as usize
                        },
                    )
                }),
                Ok(Err(outside)) => {
                    drop(inside);
                    match std::ffi::CString::new(unescape(&outside).into_owned()) {
                        // SAFETY: `c` is a NUL-terminated CString alive for
                        // the call; `resolved` goes on unchanged to the next
                        // library's `realpath`, under the contract this
                        // function was called with.
                        Ok(c) => unsafe { real!(realpath)(c.as_ptr(), resolved) },
                        Err(_) => {
                            state::set_errno(libc::EINVAL);
                            std::ptr::null_mut()
                        }
                    }
                }
                Err(e) => run("realpath", || Err(e)),
            }
        }
        // SAFETY: the caller's arguments go on unchanged to the next
        // library's `realpath`, under the contract this function was called
        // with.
        None => unsafe { real!(realpath)(path, resolved) },
    }
}

/// # Safety
/// `path` is NULL or a NUL-terminated string and `resolved` is NULL or valid
/// for writing `resolvedlen` bytes: the contract of `__realpath_chk`
/// (realpath(3) under `_FORTIFY_SOURCE`), whose arguments these are.
pub(crate) unsafe fn sfs_realpath_chk(
    path: *const c_char,
    resolved: *mut c_char,
    resolvedlen: size_t,
) -> *mut c_char {
    if resolvedlen < libc::PATH_MAX as size_t {
        // SAFETY: the caller's arguments go on unchanged to the next
        // library's `__realpath_chk`, under the contract this function was
        // called with.
        return unsafe { real!(__realpath_chk)(path, resolved, resolvedlen) };
    }
    // SAFETY: `path` is NULL or NUL-terminated (this function's contract).
    match unsafe { sfs_path(libc::AT_FDCWD, path) } {
        Some((inside, _)) => {
            drop(inside);
            // SAFETY: `path` is NULL or NUL-terminated and `resolved` NULL or
            // valid for `resolvedlen` >= `PATH_MAX` bytes (this function's
            // contract; checked above): realpath's contract.
            unsafe { sfs_realpath(path, resolved) }
        }
        // SAFETY: the caller's arguments go on unchanged to the next
        // library's `__realpath_chk`, under the contract this function was
        // called with.
        None => unsafe { real!(__realpath_chk)(path, resolved, resolvedlen) },
    }
}

/// # Safety
/// `path` is NULL or a NUL-terminated string: the contract of
/// canonicalize_file_name(3), whose argument this is.
pub(crate) unsafe fn sfs_canonicalize_file_name(path: *const c_char) -> *mut c_char {
    // SAFETY: `path` is NULL or NUL-terminated (this function's contract).
    match unsafe { sfs_path(libc::AT_FDCWD, path) } {
        Some((_inside, p)) => run("realpath", || match realpath_sfs(&p)? {
            // SAFETY: a NULL buffer: to_c_buffer mallocs its own.
            Ok(host) => unsafe { to_c_buffer(&host, std::ptr::null_mut(), 0) },
            Err(_outside) => Err(err(libc::EXDEV, "symlink leads out of the mount")),
        }),
        // SAFETY: the caller's argument goes on unchanged to the next
        // library's `canonicalize_file_name`, under the contract this
        // function was called with.
        None => unsafe { real!(canonicalize_file_name)(path) },
    }
}
