//! Unix domain sockets named by a path inside the mount (`bind`,
//! `connect`): the name is an SFS entry of type socket (mode `0777` less
//! the umask, as Linux makes it), and the socket itself is bound to an
//! abstract address of this node's network namespace derived from that
//! entry's id. A `connect` to the path looks the entry up (ENOENT when it
//! is gone, ECONNREFUSED when it is not a socket, EACCES without write
//! permission on it), following symlinks, and connects to the same
//! abstract address: processes of one node reach each other through a
//! socket named in SFS, also after it was renamed; another node has no
//! listener there (ECONNREFUSED). docs/semantics.md, "Special files".

use crate::hooks::open::umask_value;
use crate::paths::sfs_path_tail;
use crate::state::{self, err, run, with_client};
use libc::{c_int, sockaddr, socklen_t};
use sfs_global::{Errno, FileKind, SfsResult};
use std::ffi::CString;

/// The path of an `AF_UNIX` address that names one (not an abstract or
/// unnamed address), as a C string.
///
/// # Safety
/// `addr` is NULL or valid for `len` bytes.
unsafe fn unix_path(addr: *const sockaddr, len: socklen_t) -> Option<CString> {
    let family_end = std::mem::size_of::<libc::sa_family_t>();
    if addr.is_null() || (len as usize) <= family_end {
        return None;
    }
    // SAFETY: valid for `len` bytes, which cover the family.
    if c_int::from(unsafe { (*addr).sa_family }) != libc::AF_UNIX {
        return None;
    }
    let max = std::mem::size_of::<libc::sockaddr_un>() - family_end;
    let n = (len as usize - family_end).min(max);
    // SAFETY: the `n` bytes after the family lie within `len`.
    let bytes = unsafe { std::slice::from_raw_parts(addr.cast::<u8>().add(family_end), n) };
    let end = bytes.iter().position(|&b| b == 0).unwrap_or(n);
    if end == 0 {
        return None; // abstract (leading NUL) or unnamed
    }
    CString::new(&bytes[..end]).ok()
}

/// The abstract address standing for the socket entry `id` in this SFS
/// (its mount and hostfile: another job's SFS on the node has others).
fn abstract_address(id: sfs_global::FileId) -> (libc::sockaddr_un, socklen_t) {
    let settings = state::settings();
    let mut key = String::new();
    if let Some(s) = settings {
        key.push_str(&s.mount);
        key.push('\0');
        if let Some(h) = &s.hostfile_path {
            key.push_str(&h.to_string_lossy());
        }
        key.push('\0');
    }
    key.push_str(&id.to_hex());
    let name = format!(
        "sfs-socket-{:032x}",
        xxhash_rust::xxh3::xxh3_128(key.as_bytes())
    );
    // SAFETY: all-zero is a valid `sockaddr_un`.
    let mut sa: libc::sockaddr_un = unsafe { std::mem::zeroed() };
    sa.sun_family = libc::AF_UNIX as libc::sa_family_t;
    // sun_path[0] stays 0: the abstract namespace.
    for (i, b) in name.bytes().enumerate() {
        sa.sun_path[i + 1] = b as libc::c_char;
    }
    let len = std::mem::size_of::<libc::sa_family_t>() + 1 + name.len();
    (sa, len as socklen_t)
}

fn last_error(what: &str) -> sfs_global::SfsError {
    let e = std::io::Error::last_os_error();
    err(
        e.raw_os_error().unwrap_or(libc::EIO),
        format!("{what}: {e}"),
    )
}

fn bind_sfs(fd: c_int, sfs: &str) -> SfsResult<c_int> {
    let mode = libc::S_IFSOCK | (0o777 & !umask_value());
    match with_client(|c| c.mknod(sfs, mode, 0)) {
        Err(e) if e.errno == Errno::EEXIST => {
            return Err(err(libc::EADDRINUSE, format!("{sfs}: exists")))
        }
        other => other?,
    }
    let id = match with_client(|c| c.lstat(sfs)) {
        Ok(md) => md.id,
        Err(e) => {
            let _ = with_client(|c| c.unlink(sfs));
            return Err(e);
        }
    };
    let (sa, len) = abstract_address(id);
    // SAFETY: `sa` is a valid address of `len` bytes.
    let r = unsafe { real!(bind)(fd, (&sa as *const libc::sockaddr_un).cast(), len) };
    if r != 0 {
        let e = last_error(&format!("binding {sfs}"));
        let _ = with_client(|c| c.unlink(sfs));
        return Err(e);
    }
    Ok(0)
}

fn connect_sfs(fd: c_int, sfs: &str) -> SfsResult<c_int> {
    let md = with_client(|c| c.stat(sfs))?;
    if md.kind() != FileKind::Socket {
        return Err(err(libc::ECONNREFUSED, format!("{sfs}: not a socket")));
    }
    // As Linux: connecting needs write permission on the socket's entry.
    with_client(|c| c.access(sfs, libc::W_OK as u32))?;
    let (sa, len) = abstract_address(md.id);
    // SAFETY: `sa` is a valid address of `len` bytes.
    let r = unsafe { real!(connect)(fd, (&sa as *const libc::sockaddr_un).cast(), len) };
    if r != 0 {
        return Err(last_error(&format!("connecting to {sfs}")));
    }
    Ok(0)
}

/// Runs `call` with the SFS path an `AF_UNIX` address names, if it names
/// one inside the mount (`None`: the real function's business).
///
/// # Safety
/// `addr` is NULL or valid for `len` bytes.
unsafe fn unix_socket_call(
    addr: *const sockaddr,
    len: socklen_t,
    what: &str,
    call: impl FnOnce(&str) -> SfsResult<c_int>,
) -> Option<c_int> {
    // SAFETY: forwarded contract.
    let path = unsafe { unix_path(addr, len) }?;
    // SAFETY: `path` is a NUL-terminated string that outlives the call.
    let (_inside, sfs, _tail) = unsafe { sfs_path_tail(libc::AT_FDCWD, path.as_ptr()) }?;
    Some(run(what, || call(&sfs)))
}

/// # Safety
/// `addr` is NULL or valid for reading `len` bytes: the contract of bind(2),
/// whose arguments these are.
pub(crate) unsafe fn sfs_bind(fd: c_int, addr: *const sockaddr, len: socklen_t) -> c_int {
    // SAFETY: `addr` is NULL or valid for `len` bytes (this function's contract).
    unsafe { unix_socket_call(addr, len, "bind", |sfs| bind_sfs(fd, sfs)) }.unwrap_or_else(|| {
        // SAFETY: the caller's arguments go on unchanged to the next library's `bind`,
        // under the contract this function was called with.
        unsafe { real!(bind)(fd, addr, len) }
    })
}

/// # Safety
/// `addr` is NULL or valid for reading `len` bytes: the contract of
/// connect(2), whose arguments these are.
pub(crate) unsafe fn sfs_connect(fd: c_int, addr: *const sockaddr, len: socklen_t) -> c_int {
    // SAFETY: `addr` is NULL or valid for `len` bytes (this function's contract).
    unsafe { unix_socket_call(addr, len, "connect", |sfs| connect_sfs(fd, sfs)) }.unwrap_or_else(
        || {
            // SAFETY: the caller's arguments go on unchanged to the next library's `connect`,
            // under the contract this function was called with.
            unsafe { real!(connect)(fd, addr, len) }
        },
    )
}
