//! mkstemp, mkostemp, mkstemps, mkostemps (+64) and mkdtemp on templates
//! under the mount. glibc creates the file with an internal `open` that
//! LD_PRELOAD cannot see, so without these hooks `sed -i` and git would
//! create their temporary files on the host and then fail to rename them
//! into SFS.

use crate::hooks::open::{open_sfs, umask_value};
use crate::paths::sfs_path;
use crate::state::{err, run, with_client};
use libc::{c_char, c_int};
use sfs_global::{Errno, SfsResult};

const LETTERS: &[u8; 62] = b"ABCDEFGHIJKLMNOPQRSTUVWXYZabcdefghijklmnopqrstuvwxyz0123456789";
const ATTEMPTS: usize = 238_328; // 62^3, glibc's bound

/// Six random letters from the kernel (no hooks involved).
fn random_letters() -> [u8; 6] {
    let mut bytes = [0u8; 6];
    // SAFETY: the buffer is valid for its length.
    let n = unsafe { raw_syscall!(libc::SYS_getrandom, bytes.as_mut_ptr(), bytes.len(), 0) };
    if n != bytes.len() as libc::c_long {
        // No getrandom: time and pid are unique enough with the retry loop.
        let mut seed = std::time::SystemTime::now()
            .duration_since(std::time::UNIX_EPOCH)
            .map_or(0, |d| d.as_nanos() as u64)
            ^ (std::process::id() as u64) << 32;
        for b in &mut bytes {
            seed ^= seed << 13;
            seed ^= seed >> 7;
            seed ^= seed << 17;
            *b = seed as u8;
        }
    }
    bytes.map(|b| LETTERS[b as usize % LETTERS.len()])
}

/// Fills the `XXXXXX` of `template` (before a suffix of `suffix_len` bytes)
/// until `create` succeeds on the resulting SFS path; `None` when the
/// template is not under the mount.
///
/// # Safety
/// `template` is NULL or a writable NUL-terminated string.
unsafe fn make_temp<R>(
    template: *mut c_char,
    suffix_len: c_int,
    what: &str,
    create: impl Fn(&str) -> SfsResult<R>,
) -> Option<SfsResult<R>> {
    // SAFETY: forwarded contract; the guard is held for the whole loop.
    let (_inside, _) = unsafe { sfs_path(libc::AT_FDCWD, template.cast_const()) }?;
    // A template whose directory is not there (`missing/../tXXXXXX`) or
    // that is too long fails as the kernel would fail its creation.
    if let Some(e) = crate::state::take_failure() {
        return Some(Err(e));
    }
    // SAFETY: `template` is a NUL-terminated string (checked non-NULL above).
    let len = unsafe { libc::strlen(template) };
    let suffix = usize::try_from(suffix_len).ok()?;
    if len < 6 + suffix {
        return Some(Err(err(
            libc::EINVAL,
            format!("{what}: template too short"),
        )));
    }
    let start = len - 6 - suffix;
    // Written through the raw pointer each time, not through a slice held
    // across the loop: the string is also read through `template` below.
    // SAFETY: `start..start + 6` lies inside the string (`len` from strlen).
    let slot = unsafe { template.add(start).cast::<u8>() };
    // SAFETY: as above; the slice lives for this comparison only.
    if unsafe { std::slice::from_raw_parts(slot, 6) } != b"XXXXXX" {
        return Some(Err(err(
            libc::EINVAL,
            format!("{what}: template must contain XXXXXX"),
        )));
    }
    for _ in 0..ATTEMPTS {
        // SAFETY: `slot..slot + 6` lies inside the caller's writable template.
        unsafe { std::ptr::copy_nonoverlapping(random_letters().as_ptr(), slot, 6) };
        // SAFETY: still a NUL-terminated string; the guard taken above makes
        // this lookup skip the re-entrancy check.
        let Some(path) = (unsafe { crate::paths::c_str(template.cast_const()) }).and_then(|t| {
            crate::state::settings()
                .and_then(|s| crate::paths::resolve_argument(s, libc::AT_FDCWD, &t))
        }) else {
            return Some(Err(err(
                libc::EINVAL,
                format!("{what}: template left the mount"),
            )));
        };
        if let Some(e) = crate::state::take_failure() {
            return Some(Err(e));
        }
        match create(&path) {
            Err(e) if e.errno == Errno::EEXIST => continue,
            other => return Some(other),
        }
    }
    Some(Err(err(libc::EEXIST, format!("{what}: no free name"))))
}

/// # Safety
/// As [`make_temp`].
unsafe fn mkstemp_hook(template: *mut c_char, suffix_len: c_int, flags: c_int) -> Option<c_int> {
    let flags = (flags & !libc::O_ACCMODE) | libc::O_RDWR | libc::O_CREAT | libc::O_EXCL;
    // SAFETY: forwarded contract.
    let made = unsafe {
        make_temp(template, suffix_len, "mkstemp", |p| {
            open_sfs(p, flags, 0o600)
        })
    }?;
    Some(run("mkstemp", || made))
}

/// # Safety
/// `template` is NULL or a writable NUL-terminated string: the contract of
/// mkstemp(3), whose argument this is.
pub(crate) unsafe fn sfs_mkstemp(template: *mut c_char) -> c_int {
    // SAFETY: `template` is NULL or a writable NUL-terminated string (this
    // function's contract).
    unsafe { mkstemp_hook(template, 0, 0) }.unwrap_or_else(|| {
        // SAFETY: the caller's arguments go on unchanged to the next library's `mkstemp`,
        // under the contract this function was called with.
        unsafe { real!(mkstemp)(template) }
    })
}

/// # Safety
/// `template` is NULL or a writable NUL-terminated string: the contract of
/// mkostemp(3), whose arguments these are.
pub(crate) unsafe fn sfs_mkostemp(template: *mut c_char, flags: c_int) -> c_int {
    // SAFETY: `template` is NULL or a writable NUL-terminated string (this
    // function's contract).
    unsafe { mkstemp_hook(template, 0, flags) }.unwrap_or_else(|| {
        // SAFETY: the caller's arguments go on unchanged to the next library's `mkostemp`,
        // under the contract this function was called with.
        unsafe { real!(mkostemp)(template, flags) }
    })
}

/// # Safety
/// `template` is NULL or a writable NUL-terminated string: the contract of
/// mkstemps(3), whose arguments these are.
pub(crate) unsafe fn sfs_mkstemps(template: *mut c_char, suffix_len: c_int) -> c_int {
    // SAFETY: `template` is NULL or a writable NUL-terminated string (this
    // function's contract).
    unsafe { mkstemp_hook(template, suffix_len, 0) }.unwrap_or_else(|| {
        // SAFETY: the caller's arguments go on unchanged to the next library's `mkstemps`,
        // under the contract this function was called with.
        unsafe { real!(mkstemps)(template, suffix_len) }
    })
}

/// # Safety
/// `template` is NULL or a writable NUL-terminated string: the contract of
/// mkostemps(3), whose arguments these are.
pub(crate) unsafe fn sfs_mkostemps(
    template: *mut c_char,
    suffix_len: c_int,
    flags: c_int,
) -> c_int {
    // SAFETY: `template` is NULL or a writable NUL-terminated string (this
    // function's contract).
    unsafe { mkstemp_hook(template, suffix_len, flags) }.unwrap_or_else(|| {
        // SAFETY: the caller's arguments go on unchanged to the next library's `mkostemps`,
        // under the contract this function was called with.
        unsafe { real!(mkostemps)(template, suffix_len, flags) }
    })
}

/// # Safety
/// `template` is NULL or a writable NUL-terminated string: the contract of
/// mkdtemp(3), whose argument this is.
pub(crate) unsafe fn sfs_mkdtemp(template: *mut c_char) -> *mut c_char {
    let mode = 0o700 & !umask_value();
    // SAFETY: `template` is NULL or a writable NUL-terminated string (this
    // function's contract).
    let made = unsafe {
        make_temp(template, 0, "mkdtemp", |p| {
            with_client(|c| c.mkdir(p, mode))
        })
    };
    match made {
        Some(made) => run("mkdtemp", || made.map(|()| template)),
        // SAFETY: the caller's arguments go on unchanged to the next library's `mkdtemp`,
        // under the contract this function was called with.
        None => unsafe { real!(mkdtemp)(template) },
    }
}
