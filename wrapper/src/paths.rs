//! Host paths → SFS paths.
//!
//! A path argument is SFS if, made absolute (against the shim's working
//! directory inside the mount, against an SFS directory descriptor, or
//! against the kernel's working directory / a real directory descriptor when
//! `..` could climb into the mount or the path could descend into it from
//! an ancestor) and normalised lexically, it lies under the mount directory. The common case — an absolute path that does not
//! start with the mount directory and has no `.`/`..` components — is decided
//! by one prefix comparison, without allocating.

use crate::route::{
    could_be_inside, has_dot_components, kernel_cwd, kernel_fd_path, may_descend_into,
};
use crate::state::{self, Inside, Settings};
use sfs_global::path::strip_mount;
use std::ffi::{c_char, c_int, CStr};

/// The lowest address no process's memory can be at: above it lies the
/// kernel's half of the address space on every 64-bit Linux (user space
/// ends below 2^47, or 2^56 with five-level page tables on x86-64; 2^52 on
/// arm64).
const FIRST_NON_USER_ADDRESS: usize = 1 << 56;

/// Whether `p` cannot point into the process's memory: NULL, the first
/// page (never mapped) or the kernel's half. The shim does not read such
/// an argument; the call goes to the kernel as it is, which answers EFAULT
/// as it would without the shim. (An unmapped address elsewhere is read,
/// and faults, as the program's own `strlen` of it would.)
pub fn surely_invalid(p: *const c_char) -> bool {
    let at = p as usize;
    !(4096..FIRST_NON_USER_ADDRESS).contains(&at)
}

/// The bytes of a C string argument, or `None` for a pointer that surely
/// does not point into the process's memory (NULL included:
/// [`surely_invalid`]), which callers hand to the kernel unread.
///
/// # Safety
/// `p` is such a pointer or a NUL-terminated string that outlives the
/// returned slice.
pub unsafe fn c_bytes<'a>(p: *const c_char) -> Option<&'a [u8]> {
    if surely_invalid(p) {
        None
    } else {
        // SAFETY: per the contract above.
        Some(unsafe { CStr::from_ptr(p) }.to_bytes())
    }
}

/// The string of a C string argument, if it is UTF-8 (SFS names are).
///
/// # Safety
/// As [`c_bytes`].
pub unsafe fn c_str<'a>(p: *const c_char) -> Option<&'a str> {
    // SAFETY: forwarded contract.
    std::str::from_utf8(unsafe { c_bytes(p) }?).ok()
}

/// The directory a relative path is taken against, as a host path; `None`
/// when the result cannot be inside the mount.
fn base_dir(settings: &Settings, dirfd: c_int, path: &str) -> Option<String> {
    if dirfd == libc::AT_FDCWD {
        if let Some(cwd) = state::cwd() {
            return Some(state::host_path(settings, &cwd));
        }
        return if outside_could_lead_in(settings, path) {
            kernel_cwd()
        } else {
            None
        };
    }
    if state::SFS_FDS.contains(dirfd) {
        let sfs = state::with_client(|c| c.fd_path(dirfd)).ok()?;
        return Some(state::host_path(settings, &sfs));
    }
    if outside_could_lead_in(settings, path) {
        kernel_fd_path(dirfd)
    } else {
        None
    }
}

/// Could `path`, taken against a directory outside the mount, lead into
/// it? Through `..`, or down from an ancestor of the mount (`mnt/f` from
/// the mount's parent).
fn outside_could_lead_in(settings: &Settings, path: &str) -> bool {
    has_dot_components(path) || may_descend_into(path, &settings.mount)
}

/// The SFS path of `path` (taken against `dirfd`), or `None` if it is not
/// under the mount. Empty paths are never SFS here (callers handle
/// `AT_EMPTY_PATH` themselves).
pub fn resolve(settings: &Settings, dirfd: c_int, path: &str) -> Option<String> {
    if path.is_empty() {
        return None;
    }
    if path.starts_with('/') {
        if !could_be_inside(path, &settings.mount) {
            return None;
        }
        return strip_mount(path, &settings.mount);
    }
    let base = base_dir(settings, dirfd, path)?;
    strip_mount(&format!("{base}/{path}"), &settings.mount)
}

/// Enters the shim for a path argument if it is SFS: the guard and the SFS
/// path; `None` means "call the real function".
///
/// # Safety
/// `path` is NULL or a NUL-terminated string valid for the call.
pub unsafe fn sfs_path(dirfd: c_int, path: *const c_char) -> Option<(Inside, String)> {
    // SAFETY: forwarded contract.
    let text = unsafe { c_str(path) }?;
    let inside = state::enter()?;
    let settings = state::settings()?;
    let sfs = resolve(settings, dirfd, text)?;
    Some((inside, sfs))
}

/// Like [`sfs_path`] for calls with two paths (rename, link): `Some` if
/// either is SFS, with each side's SFS path if it has one.
///
/// # Safety
/// Both paths are NULL or NUL-terminated strings valid for the call.
pub unsafe fn sfs_path_pair(
    dirfd1: c_int,
    path1: *const c_char,
    dirfd2: c_int,
    path2: *const c_char,
) -> Option<(Inside, Option<String>, Option<String>)> {
    if surely_invalid(path1) || surely_invalid(path2) {
        // The kernel's EFAULT (not a cross-file-system answer).
        return None;
    }
    // SAFETY: forwarded contract.
    let (a, b) = unsafe { (c_str(path1), c_str(path2)) };
    let inside = state::enter()?;
    let settings = state::settings()?;
    let a = a.and_then(|p| resolve(settings, dirfd1, p));
    let b = b.and_then(|p| resolve(settings, dirfd2, p));
    if a.is_none() && b.is_none() {
        return None;
    }
    Some((inside, a, b))
}

#[cfg(test)]
mod tests {
    use super::*;

    fn settings() -> Settings {
        Settings {
            mount: "/mnt/sfs".into(),
            config_path: None,
            hostfile_path: None,
        }
    }

    #[test]
    fn absolute_paths_map_into_the_mount() {
        let s = settings();
        assert_eq!(resolve(&s, libc::AT_FDCWD, "/mnt/sfs"), Some("/".into()));
        assert_eq!(resolve(&s, libc::AT_FDCWD, "/mnt/sfs/"), Some("/".into()));
        assert_eq!(
            resolve(&s, libc::AT_FDCWD, "/mnt/sfs/a/b"),
            Some("/a/b".into())
        );
        assert_eq!(
            resolve(&s, libc::AT_FDCWD, "/mnt/sfs//a/./b/../c"),
            Some("/a/c".into())
        );
        assert_eq!(
            resolve(&s, libc::AT_FDCWD, "/mnt/x/../sfs/a"),
            Some("/a".into())
        );
    }

    #[test]
    fn paths_outside_stay_outside() {
        let s = settings();
        assert_eq!(resolve(&s, libc::AT_FDCWD, "/mnt/sfsx/a"), None);
        assert_eq!(resolve(&s, libc::AT_FDCWD, "/mnt/sfs/../etc"), None);
        assert_eq!(resolve(&s, libc::AT_FDCWD, "/etc/passwd"), None);
        assert_eq!(resolve(&s, libc::AT_FDCWD, ""), None);
        // Relative, no `..`, first component not one of the mount's:
        // decided without any system call.
        assert_eq!(resolve(&s, libc::AT_FDCWD, "a/b"), None);
        assert!(!may_descend_into("a/b", &s.mount));
        assert!(!may_descend_into("sfsx/a", &s.mount));
        assert!(may_descend_into("sfs/a", &s.mount));
        assert!(may_descend_into("mnt/sfs", &s.mount));
    }

    #[test]
    fn relative_paths_descend_into_the_mount_from_an_ancestor() {
        let top = tempfile::tempdir().unwrap();
        let top_path = top.path().to_str().unwrap().to_string();
        let s = Settings {
            mount: format!("{top_path}/mnt"),
            config_path: None,
            hostfile_path: None,
        };
        let dir = std::fs::File::open(top.path()).unwrap();
        let fd = std::os::fd::AsRawFd::as_raw_fd(&dir);
        assert_eq!(resolve(&s, fd, "mnt"), Some("/".into()));
        assert_eq!(resolve(&s, fd, "mnt/a/b"), Some("/a/b".into()));
        assert_eq!(resolve(&s, fd, "mntx/a"), None);
        assert_eq!(resolve(&s, fd, "other/../mnt/a"), Some("/a".into()));
    }
}
