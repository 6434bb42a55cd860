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
    could_be_inside, has_dot_components, has_dotdot_component, kernel_cwd, kernel_fd_path,
    may_descend_into,
};
use crate::state::{self, Inside, Settings};
use sfs_global::path::{escape_bytes, program_len, strip_mount};
use std::borrow::Cow;
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

/// The SFS string of a C string argument: its bytes, those that are not
/// UTF-8 escaped as SFS carries them ([`sfs_global::path::escape_bytes`]).
///
/// # Safety
/// As [`c_bytes`].
pub unsafe fn c_str<'a>(p: *const c_char) -> Option<Cow<'a, str>> {
    // SAFETY: forwarded contract.
    Some(escape_bytes(unsafe { c_bytes(p) }?))
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
    if crate::descriptors::SFS_FDS.contains(dirfd) {
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

/// What a path's last component says beyond its SFS path, which folds it
/// away: the kernel's rules depend on it.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub struct Tail {
    /// The path ends with `/` (the root aside): it names a directory, and
    /// a symlink there is followed.
    pub slash: bool,
    /// The last component is `.` (1) or `..` (2).
    pub dots: u8,
}

impl Tail {
    pub fn of(raw: &str) -> Tail {
        let trimmed = raw.trim_end_matches('/');
        let last = trimmed.rsplit('/').next().unwrap_or("");
        Tail {
            slash: !trimmed.is_empty() && trimmed.len() < raw.len(),
            dots: match last {
                "." => 1,
                ".." => 2,
                _ => 0,
            },
        }
    }

    /// Whether the path can only name a directory.
    pub fn wants_dir(self) -> bool {
        self.slash || self.dots > 0
    }
}

/// `dir` resolved as the kernel resolves a directory in the middle of a
/// path: every symlink on the way and at its end followed; ENOENT when it
/// is missing, ENOTDIR when it is not a directory. One lookup at most
/// (directories seen in the last second are cached by the client).
pub fn real_dir(dir: &str) -> sfs_global::SfsResult<String> {
    state::with_client(|c| c.resolve_directory(dir))
}

/// The SFS path of a raw path with `..` components below the mount, each
/// `..` taken from where the directory before it really is (a symlink
/// followed, ENOENT for a missing name, ENOTDIR for a file), as the kernel
/// does; `None` when it has none, or climbs out of the mount (then the
/// lexical answer stands).
pub fn through_dotdots(
    settings: &Settings,
    dirfd: c_int,
    text: &str,
) -> Option<sfs_global::SfsResult<String>> {
    if !has_dotdot_component(text) {
        return None;
    }
    let host = if text.starts_with('/') {
        text.to_string()
    } else {
        format!("{}/{text}", base_dir(settings, dirfd, text)?)
    };
    let rest = host.strip_prefix(settings.mount.as_str())?;
    if !(rest.is_empty() || rest.starts_with('/')) {
        return None;
    }
    let mut current = "/".to_string();
    for component in rest.split('/') {
        match component {
            "" | "." => {}
            ".." if current == "/" => return None,
            ".." => {
                let real = match real_dir(&current) {
                    Ok(real) => real,
                    Err(e) => return Some(Err(e)),
                };
                current = match real.rsplit_once('/') {
                    Some(("", _)) | None => "/".to_string(),
                    Some((parent, _)) => parent.to_string(),
                };
            }
            name => {
                if current != "/" {
                    current.push('/');
                }
                current.push_str(name);
            }
        }
    }
    Some(Ok(current))
}

/// [`resolve`], with each `..` taken as the kernel takes it
/// ([`through_dotdots`]): the SFS path `text` names, if it is one, or the
/// error of a `..` after a missing name or a file. For callers that report
/// errors themselves (exec).
pub fn resolve_dotdots(
    settings: &Settings,
    dirfd: c_int,
    text: &str,
) -> Option<sfs_global::SfsResult<String>> {
    let sfs = resolve(settings, dirfd, text)?;
    Some(through_dotdots(settings, dirfd, text).unwrap_or(Ok(sfs)))
}

/// The SFS path of the path argument `text` of the current call, if it is
/// one: [`resolve`], then as the kernel would — ENAMETOOLONG for an
/// argument too long ([`refuse_too_long`]), each `..` from where the
/// directory before it is ([`through_dotdots`]); an error there fails the
/// call ([`state::fail_call`]).
pub fn resolve_argument(settings: &Settings, dirfd: c_int, text: &str) -> Option<String> {
    let mut sfs = resolve(settings, dirfd, text)?;
    refuse_too_long(text);
    if !state::call_failed() {
        match through_dotdots(settings, dirfd, text) {
            Some(Ok(real)) => sfs = real,
            Some(Err(e)) => state::fail_call(e),
            None => {}
        }
    }
    Some(sfs)
}

/// A path argument of PATH_MAX bytes or more (its NUL would not fit) is
/// ENAMETOOLONG, as the kernel answers, whatever the whole path it names.
fn refuse_too_long(text: &str) {
    if program_len(text) >= sfs_global::path::PATH_MAX {
        state::fail_call(sfs_global::SfsError::new(
            sfs_global::Errno::ENAMETOOLONG,
            format!(
                "a path argument of {} bytes (PATH_MAX is 4096 with its NUL)",
                program_len(text)
            ),
        ));
    }
}

/// Enters the shim for a path argument if it is SFS: the guard, the SFS
/// path with its `..` components resolved as the kernel does
/// ([`through_dotdots`]), and its [`Tail`]. A path found wrong on the way
/// makes the call fail at its `run` ([`state::fail_call`]). `None` means
/// "call the real function".
///
/// # Safety
/// `path` is NULL or a NUL-terminated string valid for the call.
pub unsafe fn sfs_path_tail(dirfd: c_int, path: *const c_char) -> Option<(Inside, String, Tail)> {
    // SAFETY: forwarded contract.
    let text = unsafe { c_str(path) }?;
    let inside = state::enter()?;
    let settings = state::settings()?;
    let sfs = resolve_argument(settings, dirfd, &text)?;
    Some((inside, sfs, Tail::of(&text)))
}

/// [`sfs_path_tail`] for calls on an entry that exists, which follow a
/// symlink named with a trailing `/` (stat, lstat, chmod, open without
/// `O_CREAT`...): a path ending in `/`, `/.` or `/..` is the directory it
/// leads to; ENOENT or ENOTDIR when there is none.
///
/// # Safety
/// `path` is NULL or a NUL-terminated string valid for the call.
pub unsafe fn sfs_path(dirfd: c_int, path: *const c_char) -> Option<(Inside, String)> {
    // SAFETY: forwarded contract.
    let (inside, sfs, tail) = unsafe { sfs_path_tail(dirfd, path) }?;
    Some((inside, follow_tail(sfs, tail)))
}

/// The directory `sfs` leads to when `tail` says it must be one (see
/// [`sfs_path`]); `sfs` itself otherwise, or when the call failed already.
pub fn follow_tail(sfs: String, tail: Tail) -> String {
    if !tail.wants_dir() || state::call_failed() {
        return sfs;
    }
    match real_dir(&sfs) {
        Ok(real) => real,
        Err(e) => {
            state::fail_call(e);
            sfs
        }
    }
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
    let (inside, a, b) = unsafe { sfs_path_pair_tail(dirfd1, path1, dirfd2, path2) }?;
    Some((inside, a.map(|(p, _)| p), b.map(|(p, _)| p)))
}

/// One path of a two-path call: its SFS path and [`Tail`], if it is SFS.
pub type Side = Option<(String, Tail)>;

/// [`sfs_path_pair`] with each side's [`Tail`], and its `..` components
/// resolved as [`sfs_path_tail`] does.
///
/// # Safety
/// Both paths are NULL or NUL-terminated strings valid for the call.
pub unsafe fn sfs_path_pair_tail(
    dirfd1: c_int,
    path1: *const c_char,
    dirfd2: c_int,
    path2: *const c_char,
) -> Option<(Inside, Side, Side)> {
    if surely_invalid(path1) || surely_invalid(path2) {
        // The kernel's EFAULT (not a cross-file-system answer).
        return None;
    }
    // SAFETY: forwarded contract.
    let (a, b) = unsafe { (c_str(path1), c_str(path2)) };
    let inside = state::enter()?;
    let settings = state::settings()?;
    let side = |dirfd: c_int, text: &str| {
        resolve_argument(settings, dirfd, text).map(|sfs| (sfs, Tail::of(text)))
    };
    let a = a.and_then(|p| side(dirfd1, &p));
    let b = b.and_then(|p| side(dirfd2, &p));
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
    fn the_tail_says_what_folding_drops() {
        let t = |slash, dots| Tail { slash, dots };
        assert_eq!(Tail::of("a/b"), t(false, 0));
        assert_eq!(Tail::of("a/b/"), t(true, 0));
        assert_eq!(Tail::of("a/b//"), t(true, 0));
        assert_eq!(Tail::of("a/."), t(false, 1));
        assert_eq!(Tail::of("a/./"), t(true, 1));
        assert_eq!(Tail::of("a/.."), t(false, 2));
        assert_eq!(Tail::of("."), t(false, 1));
        assert_eq!(Tail::of("/"), t(false, 0));
        assert_eq!(Tail::of("/mnt/sfs/"), t(true, 0));
        assert_eq!(Tail::of("a/.b"), t(false, 0));
        assert!(!Tail::of("a").wants_dir());
        assert!(Tail::of("a/").wants_dir() && Tail::of("a/..").wants_dir());
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
