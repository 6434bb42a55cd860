//! The routing rules of the shim: is a path argument under the mount
//! directory? The entry library (`wrapper/preload/entry.c`) applies the
//! same rules in C before the shim is loaded, so that it loads the shim
//! whenever the shim would take the call. Only std, libc and sfs_global here.

use sfs_global::config::Config;
use sfs_global::path::normalize_host;
use std::ffi::c_int;

/// Does a relative path have components that could climb into the mount?
pub fn has_dot_components(path: &str) -> bool {
    path.contains("//")
        || ((path.starts_with('.') || path.contains("/."))
            && path.split('/').any(|c| c == "." || c == ".."))
}

/// Has the path a `..` component? A component starts the path or follows
/// a `/`, so a path with neither `..` at its start nor `/..` has none: one
/// substring search decides the common case (splitting every path a call
/// names into components cost about 1,000 instructions a call).
pub fn has_dotdot_component(path: &str) -> bool {
    (path.starts_with("..") || path.contains("/..")) && path.split('/').any(|c| c == "..")
}

/// Could a relative path without `.`/`..` components lead into `mount`
/// from a working directory outside it? Only if that directory is an
/// ancestor of the mount and the path descends through it, so the path's
/// first component must be one of the mount's components: one scan of two
/// short strings decides the common case without asking the kernel where
/// the working directory is.
pub fn may_descend_into(path: &str, mount: &str) -> bool {
    let first = path.split('/').next().unwrap_or("");
    !first.is_empty() && mount.split('/').any(|c| c == first)
}

/// Could an absolute path be under `mount`? One prefix comparison in the
/// common case; paths with `.`/`..` components need normalising.
pub fn could_be_inside(path: &str, mount: &str) -> bool {
    match path.strip_prefix(mount) {
        Some(rest) => rest.is_empty() || rest.starts_with('/'),
        None => has_dot_components(path),
    }
}

/// The kernel's working directory, with a raw system call (no hooks).
pub fn kernel_cwd() -> Option<String> {
    let mut buf = vec![0u8; 4096];
    // SAFETY: the buffer is valid for its length.
    let n = unsafe { raw_syscall!(libc::SYS_getcwd, buf.as_mut_ptr(), buf.len()) };
    if n <= 0 {
        return None;
    }
    let end = buf.iter().position(|&b| b == 0).unwrap_or(buf.len());
    buf.truncate(end);
    String::from_utf8(buf).ok()
}

/// Where a real descriptor points, from /proc/self/fd (no hooks).
pub fn kernel_fd_path(fd: c_int) -> Option<String> {
    let link = std::ffi::CString::new(format!("/proc/self/fd/{fd}")).ok()?;
    let mut buf = vec![0u8; 4096];
    // SAFETY: `link` is NUL-terminated and `buf` valid for its length.
    let n = unsafe {
        raw_syscall!(
            libc::SYS_readlinkat,
            libc::AT_FDCWD,
            link.as_ptr(),
            buf.as_mut_ptr(),
            buf.len(),
        )
    };
    if n <= 0 {
        return None;
    }
    buf.truncate(n as usize);
    String::from_utf8(buf).ok()
}

/// The mount directory the environment names: `SFS_MOUNTDIR`, else
/// `mountdir` of `SFS_CONFIG`. `Ok(None)`: no mount configured (the shim
/// passes everything through); `Err`: a message for the person who set it.
/// Must run with the hooks bypassed (it may read the config file).
pub fn mount_from_environment() -> Result<Option<String>, String> {
    let env = crate::environment::var;
    let mount = match env("SFS_MOUNTDIR") {
        Some(m) => m.to_string_lossy().into_owned(),
        None => match env("SFS_CONFIG") {
            Some(p) => match Config::load(std::path::Path::new(&p)) {
                Ok(c) => c.mountdir,
                Err(e) => return Err(format!("SFS_CONFIG: {e}; the shim stays inactive")),
            },
            None => return Ok(None),
        },
    };
    match normalize_host(&mount).filter(|m| m != "/") {
        Some(m) => Ok(Some(m)),
        None => Err(format!(
            "SFS_MOUNTDIR={mount:?} is not an absolute directory other than /; the shim stays inactive"
        )),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    /// The definitions the quick tests must agree with.
    fn dots_by_components(path: &str) -> bool {
        path.contains("//") || path.split('/').any(|c| c == "." || c == "..")
    }

    fn dotdots_by_components(path: &str) -> bool {
        path.split('/').any(|c| c == "..")
    }

    #[test]
    fn the_quick_dot_tests_agree_with_splitting_into_components() {
        // Every path of up to six characters from these, and some longer.
        let alphabet = ['/', '.', 'a'];
        let mut paths = vec![String::new()];
        let mut last = vec![String::new()];
        for _ in 0..6 {
            let next: Vec<String> = last
                .iter()
                .flat_map(|p| alphabet.iter().map(move |c| format!("{p}{c}")))
                .collect();
            paths.extend(next.iter().cloned());
            last = next;
        }
        paths.extend(
            [
                "/mnt/sfs/a/b/file.0",
                "/mnt/sfs/a/../b",
                "/mnt/sfs/a/..b/c",
                "/mnt/sfs/a/b..",
                "/mnt/sfs/.hidden/x",
                "/mnt/sfs/a/.",
                "../x",
                "..x/y",
                ".../x",
            ]
            .map(String::from),
        );
        for path in &paths {
            assert_eq!(
                has_dot_components(path),
                dots_by_components(path),
                "{path:?}"
            );
            assert_eq!(
                has_dotdot_component(path),
                dotdots_by_components(path),
                "{path:?}"
            );
        }
        assert!(has_dotdot_component("a/../b") && !has_dotdot_component("a/..b"));
    }
}
