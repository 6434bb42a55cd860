//! Running programs stored in SFS.
//!
//! The kernel cannot read an SFS file, so `exec` of one would fail with
//! ENOENT. The exec hooks ask [`prepare`] first, which does what the kernel
//! would:
//!
//! - a script (`#!interpreter [arg]`) becomes an exec of the interpreter
//!   with the optional argument and the script's path; the interpreter,
//!   loaded with the shim, opens the script through SFS (and an interpreter
//!   that is itself in SFS is handled the same way, up to 4 levels, as the
//!   kernel's limit);
//! - anything else is copied into a sealed-off memory file (`memfd`,
//!   close-on-exec) and run as `/proc/self/fd/N`: the kernel opens that
//!   path before it closes close-on-exec descriptors, so the copy is gone
//!   with the exec and nothing leaks into the new image. `posix_spawn`
//!   uses the same path (its child inherits the descriptor until its exec).
//!
//! Permissions are stored, not enforced in SFS, but a file without any
//! execute bit is EACCES here as the kernel would say; a directory is
//! EACCES too. `execvp`-style searches of a `PATH` that names directories
//! under the mount are done by [`search`].

use crate::paths;
use crate::state::{self, err};
use sfs_global::{FileKind, SfsError, SfsResult};
use std::ffi::{c_char, CStr, CString};
use std::os::fd::{AsRawFd, FromRawFd, OwnedFd};

/// Interpreters an exec may go through (the kernel's BINPRM_MAX_RECURSION).
const MAX_INTERPRETERS: usize = 4;

/// The longest `#!` line the kernel reads (BINPRM_BUF_SIZE).
const SHEBANG_MAX: usize = 256;

/// Bytes copied from SFS into the memory file per read.
const COPY_PIECE: usize = 1 << 20;

/// What to hand to the real exec.
pub struct Launch {
    pub path: CString,
    pub argv: Vec<CString>,
    /// The memory file `path` names, open until the exec (or the spawn)
    /// has happened.
    pub _program: Option<OwnedFd>,
}

impl Launch {
    /// The NULL-terminated argument vector (valid while `self` lives).
    pub fn argv_pointers(&self) -> Vec<*const c_char> {
        crate::exec::pointers(&self.argv)
    }
}

/// The C strings of a NULL-terminated `argv`.
///
/// # Safety
/// `argv` is NULL or a NULL-terminated array of NUL-terminated strings.
pub unsafe fn collect_argv(argv: *const *const c_char) -> Vec<CString> {
    let mut out = Vec::new();
    let mut p = argv;
    // SAFETY: per the contract above.
    unsafe {
        while !p.is_null() && !(*p).is_null() {
            out.push(CStr::from_ptr(*p).to_owned());
            p = p.add(1);
        }
    }
    out
}

/// How to exec `path` with `argv` if it is a program stored in SFS: `None`
/// when it is not under the mount (the kernel execs it as given), else the
/// launch or the errno the exec must fail with.
pub fn prepare(path: &CStr, argv: Vec<CString>) -> Option<SfsResult<Launch>> {
    let _inside = state::enter()?;
    let settings = state::settings()?;
    let text = sfs_global::path::escape_bytes(path.to_bytes());
    let sfs_path = match paths::resolve_dotdots(settings, libc::AT_FDCWD, &text)? {
        Ok(sfs_path) => sfs_path,
        Err(e) => return Some(Err(e)),
    };
    Some(state::with_client(|client| {
        launch(client, path.to_owned(), &sfs_path, argv, 0)
    }))
}

fn launch(
    client: &sfs_client::Client,
    host_path: CString,
    sfs_path: &str,
    argv: Vec<CString>,
    depth: usize,
) -> SfsResult<Launch> {
    let md = client.stat(sfs_path)?;
    if md.kind() != FileKind::File {
        return Err(err(
            libc::EACCES,
            format!("{sfs_path}: not a regular file, cannot be executed"),
        ));
    }
    // Execute permission for this caller, as the file's owner decides
    // (root needs some x bit).
    client.access(sfs_path, sfs_global::access::MAY_EXEC)?;
    let mut head = [0u8; SHEBANG_MAX];
    let n = client.read_at_path(sfs_path, 0, &mut head)?;
    let head = &head[..n];
    if let Some((interpreter, arg)) = shebang(head) {
        if depth + 1 >= MAX_INTERPRETERS {
            return Err(err(
                libc::ELOOP,
                format!("{sfs_path}: too many levels of interpreters"),
            ));
        }
        let mut new_argv = vec![interpreter.clone()];
        new_argv.extend(arg);
        new_argv.push(host_path);
        new_argv.extend(argv.into_iter().skip(1));
        let settings = state::settings().ok_or_else(|| err(libc::EIO, "no SFS settings"))?;
        let text = sfs_global::path::escape_bytes(interpreter.to_bytes()).into_owned();
        return match paths::resolve_dotdots(settings, libc::AT_FDCWD, &text) {
            Some(in_sfs) => launch(client, interpreter, &in_sfs?, new_argv, depth + 1),
            None => Ok(Launch {
                path: interpreter,
                argv: new_argv,
                _program: None,
            }),
        };
    }
    let memfd = copy_to_memory(client, sfs_path, md.size)?;
    let path = CString::new(format!("/proc/self/fd/{}", memfd.as_raw_fd()))
        .map_err(|_| err(libc::EINVAL, "descriptor path"))?;
    Ok(Launch {
        path,
        argv,
        _program: Some(memfd),
    })
}

/// The interpreter and its optional argument of a `#!` line, as the kernel
/// splits it: the first word, then the rest of the line as one argument.
fn shebang(head: &[u8]) -> Option<(CString, Option<CString>)> {
    let line = head.strip_prefix(b"#!")?;
    let end = line.iter().position(|&b| b == b'\n').unwrap_or(line.len());
    let line = &line[..end];
    let is_blank = |b: &u8| *b == b' ' || *b == b'\t';
    let start = line.iter().position(|b| !is_blank(b))?;
    let line = &line[start..];
    let split = line.iter().position(is_blank).unwrap_or(line.len());
    let interpreter = CString::new(&line[..split]).ok()?;
    let rest = &line[split..];
    let trimmed: &[u8] = match (
        rest.iter().position(|b| !is_blank(b)),
        rest.iter().rposition(|b| !is_blank(b)),
    ) {
        (Some(a), Some(z)) => &rest[a..=z],
        _ => &[],
    };
    let arg = if trimmed.is_empty() {
        None
    } else {
        Some(CString::new(trimmed).ok()?)
    };
    Some((interpreter, arg))
}

/// Copies an SFS file into a new close-on-exec memory file.
fn copy_to_memory(client: &sfs_client::Client, sfs_path: &str, size: u64) -> SfsResult<OwnedFd> {
    let name = CString::new(format!(
        "sfs:{}",
        sfs_path.rsplit('/').next().unwrap_or("program")
    ))
    .unwrap_or_else(|_| c"sfs:program".to_owned());
    // SAFETY: `name` is a C string; memfd_create has no other memory effects.
    let raw = unsafe { raw_syscall!(libc::SYS_memfd_create, name.as_ptr(), libc::MFD_CLOEXEC) };
    if raw < 0 {
        return Err(err(state::errno(), "memfd_create for a program in SFS"));
    }
    // SAFETY: the kernel just returned this descriptor; nobody else owns it.
    let memfd = unsafe { OwnedFd::from_raw_fd(raw as i32) };
    let mut buf = vec![0u8; COPY_PIECE.min(size.max(1) as usize)];
    let mut offset = 0u64;
    loop {
        let n = client.read_at_path(sfs_path, offset, &mut buf)?;
        if n == 0 {
            break;
        }
        let mut written = 0;
        while written < n {
            // SAFETY: the buffer is valid for `n - written` bytes from there.
            let w = unsafe {
                raw_syscall!(
                    libc::SYS_pwrite64,
                    memfd.as_raw_fd(),
                    buf[written..n].as_ptr(),
                    n - written,
                    offset + written as u64,
                )
            };
            if w < 0 {
                return Err(err(state::errno(), "copying a program into memory"));
            }
            written += w as usize;
        }
        offset += n as u64;
    }
    Ok(memfd)
}

/// Does any entry of `PATH` lie under the mount?
pub fn path_var_names_the_mount() -> bool {
    let Some(_inside) = state::enter() else {
        return false;
    };
    let Some(settings) = state::settings() else {
        return false;
    };
    std::env::var("PATH").is_ok_and(|path| {
        path.split(':')
            .any(|dir| !dir.is_empty() && paths::resolve(settings, libc::AT_FDCWD, dir).is_some())
    })
}

/// The candidates an `execvp` of `file` tries, in order: `file` itself when
/// it contains a `/`, else each `PATH` entry joined with it (an empty entry
/// is the working directory, as glibc takes it).
pub fn search_candidates(file: &CStr) -> Vec<CString> {
    let bytes = file.to_bytes();
    if bytes.contains(&b'/') {
        return vec![file.to_owned()];
    }
    let path = std::env::var("PATH").unwrap_or_else(|_| "/bin:/usr/bin".to_string());
    path.split(':')
        .filter_map(|dir| {
            let dir = if dir.is_empty() { "." } else { dir };
            let mut joined = dir.as_bytes().to_vec();
            joined.push(b'/');
            joined.extend_from_slice(bytes);
            CString::new(joined).ok()
        })
        .collect()
}

/// Runs `attempt` on each candidate of an `execvp`-style search until one
/// does not fail with "try the next one" (ENOENT, ENOTDIR, EACCES, ESTALE);
/// returns the last errno, EACCES if any candidate was not executable.
pub fn search(file: &CStr, mut attempt: impl FnMut(&CStr) -> i32) -> i32 {
    let mut saw_eacces = false;
    let mut last = libc::ENOENT;
    for candidate in search_candidates(file) {
        match attempt(&candidate) {
            libc::EACCES => {
                saw_eacces = true;
                last = libc::EACCES;
            }
            libc::ENOENT | libc::ENOTDIR | libc::ESTALE | libc::ENAMETOOLONG => {}
            other => return other,
        }
    }
    if saw_eacces {
        libc::EACCES
    } else {
        last
    }
}

/// An SFS error as the errno an exec reports.
pub fn errno_of(e: &SfsError) -> i32 {
    e.errno.0
}

#[cfg(test)]
mod tests {
    use super::*;

    fn parsed(line: &[u8]) -> Option<(String, Option<String>)> {
        shebang(line).map(|(i, a)| {
            (
                i.to_string_lossy().into_owned(),
                a.map(|a| a.to_string_lossy().into_owned()),
            )
        })
    }

    #[test]
    fn shebang_lines_split_as_the_kernel_splits_them() {
        assert_eq!(parsed(b"#!/bin/sh\necho"), Some(("/bin/sh".into(), None)));
        assert_eq!(
            parsed(b"#! /usr/bin/env  python3 -u \nx"),
            Some(("/usr/bin/env".into(), Some("python3 -u".into())))
        );
        assert_eq!(
            parsed(b"#!/bin/bash\t-e"),
            Some(("/bin/bash".into(), Some("-e".into())))
        );
        assert_eq!(parsed(b"#!\n"), None);
        assert_eq!(parsed(b"\x7fELF"), None);
        assert_eq!(parsed(b""), None);
    }

    #[test]
    fn searches_follow_path_and_stop_at_a_real_failure() {
        std::env::set_var("PATH", "/a::/b");
        let names: Vec<String> = search_candidates(c"tool")
            .iter()
            .map(|c| c.to_string_lossy().into_owned())
            .collect();
        assert_eq!(names, ["/a/tool", "./tool", "/b/tool"]);
        assert_eq!(search_candidates(c"./x")[0].as_bytes(), b"./x");
        let mut tried = Vec::new();
        let e = search(c"tool", |c| {
            tried.push(c.to_owned());
            if c.to_bytes() == b"./tool" {
                libc::EACCES
            } else {
                libc::ENOENT
            }
        });
        assert_eq!((e, tried.len()), (libc::EACCES, 3));
        let e = search(c"tool", |c| {
            if c.to_bytes() == b"/a/tool" {
                libc::E2BIG
            } else {
                0
            }
        });
        assert_eq!(e, libc::E2BIG);
    }
}
