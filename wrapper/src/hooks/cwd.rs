//! The working directory inside the mount: chdir/fchdir/getcwd/
//! get_current_dir_name, and realpath/canonicalize_file_name.
//!
//! The kernel cannot enter an SFS directory, so the shim keeps its own
//! working directory while it is inside the mount: relative paths and
//! AT_FDCWD resolve against it, getcwd reports it, and `exec` passes it on
//! (`SFS_CWD`). The kernel's working directory stays where it was.

use crate::paths::{c_str, sfs_path};
use crate::state::{self, err, run, sfs_fd, with_client};
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

pub(crate) unsafe fn sfs_chdir(path: *const c_char) -> c_int {
    if let Some((_inside, p)) = sfs_path(libc::AT_FDCWD, path) {
        return run("chdir", || enter_dir(p));
    }
    // Leaving the mount with a relative path: it is relative to the
    // shim's directory, not the kernel's.
    let absolute = match (state::cwd(), c_str(path)) {
        (Some(cwd), Some(rel)) if !rel.starts_with('/') => state::settings()
            .and_then(|s| normalize_host(&format!("{}/{rel}", state::host_path(s, &cwd))))
            .and_then(|p| std::ffi::CString::new(unescape(&p).into_owned()).ok()),
        _ => None,
    };
    let r = match &absolute {
        Some(p) => real!(chdir)(p.as_ptr()),
        None => real!(chdir)(path),
    };
    if r == 0 {
        state::set_cwd(None);
    }
    r
}

pub(crate) unsafe fn sfs_fchdir(fd: c_int) -> c_int {
    match sfs_fd(fd) {
        Some(_inside) => run("fchdir", || enter_dir(with_client(|c| c.fd_path(fd))?)),
        None => {
            let r = real!(fchdir)(fd);
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
unsafe fn to_c_buffer(s: &str, buf: *mut c_char, size: size_t) -> SfsResult<*mut c_char> {
    let s = unescape(s);
    let need = s.len() + 1;
    let out = if buf.is_null() {
        let n = if size == 0 { need } else { size };
        if n < need {
            return Err(err(libc::ERANGE, "buffer too small"));
        }
        let p = libc::malloc(n).cast::<c_char>();
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
    std::ptr::copy_nonoverlapping(s.as_ptr(), out.cast::<u8>(), s.len());
    *out.add(s.len()) = 0;
    Ok(out)
}

pub(crate) unsafe fn sfs_getcwd(buf: *mut c_char, size: size_t) -> *mut c_char {
    match cwd_host_path() {
        Some(p) => run("getcwd", || to_c_buffer(&p, buf, size)),
        None => real!(getcwd)(buf, size),
    }
}

// The fortified variants (`-D_FORTIFY_SOURCE`, Debian's default for
// packaged C) take the caller's buffer size: a call that would overflow it
// goes to glibc's own, which aborts as it must; every other call is the
// plain one.
pub(crate) unsafe fn sfs_getcwd_chk(buf: *mut c_char, size: size_t, buflen: size_t) -> *mut c_char {
    if size > buflen {
        return real!(__getcwd_chk)(buf, size, buflen);
    }
    match cwd_host_path() {
        Some(p) => run("getcwd", || to_c_buffer(&p, buf, size)),
        None => real!(__getcwd_chk)(buf, size, buflen),
    }
}

pub(crate) unsafe fn sfs_get_current_dir_name() -> *mut c_char {
    match cwd_host_path() {
        Some(p) => run("get_current_dir_name", || {
            to_c_buffer(&p, std::ptr::null_mut(), 0)
        }),
        None => real!(get_current_dir_name)(),
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

pub(crate) unsafe fn sfs_realpath(path: *const c_char, resolved: *mut c_char) -> *mut c_char {
    match sfs_path(libc::AT_FDCWD, path) {
        Some((inside, p)) => {
            let r = realpath_sfs(&p);
            match r {
                Ok(Ok(host)) => run("realpath", || {
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
                        Ok(c) => real!(realpath)(c.as_ptr(), resolved),
                        Err(_) => {
                            state::set_errno(libc::EINVAL);
                            std::ptr::null_mut()
                        }
                    }
                }
                Err(e) => run("realpath", || Err(e)),
            }
        }
        None => real!(realpath)(path, resolved),
    }
}

pub(crate) unsafe fn sfs_realpath_chk(
    path: *const c_char,
    resolved: *mut c_char,
    resolvedlen: size_t,
) -> *mut c_char {
    if resolvedlen < libc::PATH_MAX as size_t {
        return real!(__realpath_chk)(path, resolved, resolvedlen);
    }
    match sfs_path(libc::AT_FDCWD, path) {
        Some((inside, _)) => {
            drop(inside);
            sfs_realpath(path, resolved)
        }
        None => real!(__realpath_chk)(path, resolved, resolvedlen),
    }
}

pub(crate) unsafe fn sfs_canonicalize_file_name(path: *const c_char) -> *mut c_char {
    match sfs_path(libc::AT_FDCWD, path) {
        Some((_inside, p)) => run("realpath", || match realpath_sfs(&p)? {
            Ok(host) => to_c_buffer(&host, std::ptr::null_mut(), 0),
            Err(_outside) => Err(err(libc::EXDEV, "symlink leads out of the mount")),
        }),
        None => real!(canonicalize_file_name)(path),
    }
}
