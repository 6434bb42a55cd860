//! Open SFS descriptors and the working directory across `exec`.
//!
//! An SFS descriptor's kernel placeholder follows FD_CLOEXEC like any
//! descriptor, so after `exec` exactly the descriptors without FD_CLOEXEC
//! still exist. The exec hooks describe them (and the shim's working
//! directory) in the new image's environment — `SFS_FDS` and `SFS_CWD`,
//! plus `LD_PRELOAD` and the `SFS_*` settings if the program stripped them —
//! and the shim, loaded again in the new image, takes them back before
//! `main` (the client connects on first use). Exec paths the shim cannot see
//! (glibc-internal ones, `execl*`, `posix_spawn` file actions, static
//! binaries) leave the placeholders without a description: reads then fail
//! with EISDIR and writes with EBADF — never silently wrong data.

use crate::descriptors::SFS_FDS;
use crate::environment;
use crate::state;
use sfs_client::embed::OpenFdInfo;
use std::ffi::{c_char, CStr, CString};

const FDS_VAR: &str = "SFS_FDS";
const CWD_VAR: &str = "SFS_CWD";
/// Settings a child needs to reach the same SFS instance.
const CARRIED_VARS: [&str; 6] = [
    "SFS_MOUNTDIR",
    "SFS_CONFIG",
    "SFS_HOSTFILE",
    "SFS_SECRET",
    "SFS_SECRET_FILE",
    "SFS_LOG",
];

fn hex(bytes: &[u8]) -> String {
    bytes.iter().map(|b| format!("{b:02x}")).collect()
}

fn unhex(s: &str) -> Option<String> {
    if !s.len().is_multiple_of(2) {
        return None;
    }
    let bytes: Option<Vec<u8>> = (0..s.len())
        .step_by(2)
        .map(|i| u8::from_str_radix(s.get(i..i + 2)?, 16).ok())
        .collect();
    String::from_utf8(bytes?).ok()
}

/// `fd:flags:offset:dir:hexpath` entries, comma-separated.
pub fn encode(fds: &[OpenFdInfo]) -> String {
    fds.iter()
        .map(|i| {
            format!(
                "{}:{}:{}:{}:{}",
                i.fd,
                i.flags,
                i.offset,
                u8::from(i.is_dir),
                hex(i.path.as_bytes())
            )
        })
        .collect::<Vec<_>>()
        .join(",")
}

pub fn decode(text: &str) -> Vec<OpenFdInfo> {
    text.split(',')
        .filter_map(|item| {
            let mut parts = item.split(':');
            let info = OpenFdInfo {
                fd: parts.next()?.parse().ok()?,
                flags: parts.next()?.parse().ok()?,
                offset: parts.next()?.parse().ok()?,
                is_dir: parts.next()? == "1",
                path: unhex(parts.next()?)?,
            };
            parts.next().is_none().then_some(info)
        })
        .collect()
}

/// True if kernel descriptor `fd` survives exec.
fn inherited(fd: i32) -> bool {
    // SAFETY: F_GETFD has no memory effects.
    let flags = unsafe { raw_syscall!(libc::SYS_fcntl, fd, libc::F_GETFD) };
    flags >= 0 && flags & i64::from(libc::FD_CLOEXEC) == 0
}

/// The descriptors the new image inherits, with their state.
fn inherited_descriptors() -> Vec<OpenFdInfo> {
    let fds: Vec<i32> = SFS_FDS
        .in_range(0, u32::MAX)
        .into_iter()
        .filter(|&fd| inherited(fd))
        .collect();
    if fds.is_empty() {
        return Vec::new();
    }
    let pending = state::PENDING
        .lock()
        .unwrap_or_else(|p| p.into_inner())
        .clone();
    let mut out = Vec::new();
    for fd in fds {
        if let Some(p) = pending.iter().find(|p| p.fd == fd) {
            out.push(p.clone());
        } else if let Ok(info) = state::with_client(|c| c.fd_info(fd)) {
            out.push(info);
        }
    }
    out
}

/// The library to put back into LD_PRELOAD: the preload entry library that
/// loaded this one (`sfs_preload_path`, libsfs_preload.so), or this library
/// itself when it was preloaded directly.
fn own_path() -> Option<String> {
    // SAFETY: dlsym only looks the name up; the entry library defines
    // `sfs_preload_path` as `extern "C" fn() -> *const c_char` returning NULL
    // or a NUL-terminated string that lives as long as the process.
    unsafe {
        let entry = libc::dlsym(libc::RTLD_DEFAULT, c"sfs_preload_path".as_ptr());
        if !entry.is_null() {
            let entry: extern "C" fn() -> *const c_char = std::mem::transmute(entry);
            let path = entry();
            if !path.is_null() {
                return CStr::from_ptr(path).to_str().ok().map(str::to_string);
            }
        }
    }
    // SAFETY: dladdr only reads the address and fills `info`.
    unsafe {
        let mut info: libc::Dl_info = std::mem::zeroed();
        if libc::dladdr(own_path as *const libc::c_void, &mut info) == 0 || info.dli_fname.is_null()
        {
            return None;
        }
        CStr::from_ptr(info.dli_fname)
            .to_str()
            .ok()
            .map(str::to_string)
    }
}

/// An environment for the new image, or `None` if the original will do
/// (no SFS descriptor inherited and no working directory inside the mount).
///
/// # Safety
/// `envp` is NULL or a NULL-terminated array of NUL-terminated strings.
pub unsafe fn environment_for_exec(envp: *const *const c_char) -> Option<Vec<CString>> {
    let _inside = state::enter()?;
    state::settings()?;
    let fds = inherited_descriptors();
    let cwd = state::cwd();
    if fds.is_empty() && cwd.is_none() {
        return None;
    }
    let mut env: Vec<CString> = Vec::new();
    let mut preload_seen = false;
    let mut seen = [false; CARRIED_VARS.len()];
    let own = own_path();
    let mut p = envp;
    // SAFETY: `p` is not NULL (checked first) and points into the array
    // `envp`, before or at its NULL terminator (this function's contract),
    // so it can be read.
    while !p.is_null() && !unsafe { *p }.is_null() {
        // SAFETY: `*p` is an entry of `envp` before its terminator (checked
        // just above): a NUL-terminated string (this function's contract).
        let entry = unsafe { CStr::from_ptr(*p) };
        let text = entry.to_bytes();
        // SAFETY: `p` is before the terminator, so `p + 1` is still within
        // the array (at most its terminator).
        p = unsafe { p.add(1) };
        if text.starts_with(format!("{FDS_VAR}=").as_bytes())
            || text.starts_with(format!("{CWD_VAR}=").as_bytes())
        {
            continue;
        }
        if let Some(value) = text.strip_prefix(b"LD_PRELOAD=") {
            preload_seen = true;
            if let Some(own) = &own {
                if !value.windows(own.len()).any(|w| w == own.as_bytes()) {
                    let mut joined = format!("LD_PRELOAD={own} ").into_bytes();
                    joined.extend_from_slice(value);
                    env.push(CString::new(joined).ok()?);
                    continue;
                }
            }
        }
        for (i, var) in CARRIED_VARS.iter().enumerate() {
            if text.starts_with(format!("{var}=").as_bytes()) {
                seen[i] = true;
            }
        }
        env.push(entry.to_owned());
    }
    if !preload_seen {
        if let Some(own) = &own {
            env.push(CString::new(format!("LD_PRELOAD={own}")).ok()?);
        }
    }
    for (i, var) in CARRIED_VARS.iter().enumerate() {
        if !seen[i] {
            if let Some(value) = environment::var(var) {
                env.push(CString::new(format!("{var}={}", value.to_string_lossy())).ok()?);
            }
        }
    }
    if !fds.is_empty() {
        env.push(CString::new(format!("{FDS_VAR}={}", encode(&fds))).ok()?);
    }
    if let Some(cwd) = cwd {
        env.push(CString::new(format!("{CWD_VAR}={}", hex(cwd.as_bytes()))).ok()?);
    }
    Some(env)
}

/// Keeps `SFS_CWD` in the process's own environment while the working
/// directory is inside the mount (and removes it outside), so that every
/// child — also through exec paths the hooks cannot see: `system`,
/// `popen`, `execl*`, glibc's internal `posix_spawn` — starts in the same
/// directory. Through glibc's own `setenv`, never the program's (see
/// [`environment`]). `setenv` is not safe against `getenv` in other
/// threads; a program changes directory into the mount rarely, and usually
/// before it starts threads.
pub fn publish_cwd(cwd: Option<&str>) {
    let value = cwd.and_then(|c| CString::new(hex(c.as_bytes())).ok());
    environment::set(c"SFS_CWD", value.as_deref());
}

/// NULL-terminated pointer array over `env` (which must outlive it).
pub fn pointers(env: &[CString]) -> Vec<*const c_char> {
    env.iter()
        .map(|e| e.as_ptr())
        .chain(std::iter::once(std::ptr::null()))
        .collect()
}

/// The process's current environment, as exec with `environ` would pass it.
pub fn environ() -> *const *const c_char {
    extern "C" {
        static environ: *const *const c_char;
    }
    // SAFETY: reading the `environ` pointer itself.
    unsafe { environ }
}

/// Is `fd` one of the shim's placeholders (a directory descriptor of `/`)?
fn is_placeholder(fd: i32) -> bool {
    // SAFETY: `st` is written by the kernel; the path is a literal.
    unsafe {
        let mut st: libc::stat = std::mem::zeroed();
        let mut root: libc::stat = std::mem::zeroed();
        raw_syscall!(libc::SYS_fstat, fd, &mut st) == 0
            && raw_syscall!(
                libc::SYS_newfstatat,
                libc::AT_FDCWD,
                c"/".as_ptr(),
                &mut root,
                0,
            ) == 0
            && st.st_dev == root.st_dev
            && st.st_ino == root.st_ino
    }
}

/// At load: takes back the descriptors and working directory described by
/// the process that exec'ed this image. Two environment look-ups when
/// there are none.
pub fn restore_from_environment() {
    let fds = environment::var_text(FDS_VAR);
    let cwd = environment::var_text(CWD_VAR);
    if fds.is_none() && cwd.is_none() {
        return;
    }
    let Some(_inside) = state::enter() else {
        return;
    };
    if let Some(text) = fds {
        let mut pending = state::PENDING.lock().unwrap_or_else(|p| p.into_inner());
        for info in decode(&text) {
            if (info.fd as usize) < crate::descriptors::MAX_FDS && is_placeholder(info.fd) {
                SFS_FDS.insert(info.fd);
                pending.push(info);
            }
        }
    }
    if let Some(text) = cwd {
        if let Some(path) = unhex(&text).filter(|p| p.starts_with('/')) {
            state::set_cwd(Some(path));
        }
    }
    // SFS_CWD stays: it describes this process's directory too.
    environment::set(c"SFS_FDS", None);
    let std_fds: Vec<i32> = state::PENDING
        .lock()
        .unwrap_or_else(|p| p.into_inner())
        .iter()
        .map(|i| i.fd)
        .filter(|fd| (0..=2).contains(fd))
        .collect();
    for fd in std_fds {
        crate::stdio::after_std_fd_became_sfs(fd);
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn descriptors_round_trip_through_the_environment() {
        let fds = vec![
            OpenFdInfo {
                fd: 1,
                path: "/a b/ü,:x".into(),
                flags: libc::O_WRONLY | libc::O_APPEND,
                offset: 42,
                is_dir: false,
            },
            OpenFdInfo {
                fd: 7,
                path: "/".into(),
                flags: libc::O_RDONLY,
                offset: 0,
                is_dir: true,
            },
        ];
        assert_eq!(decode(&encode(&fds)), fds);
        assert!(decode("garbage").is_empty());
        assert!(decode("1:2:3:0:zz").is_empty());
    }
}
