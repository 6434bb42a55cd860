//! Calls on descriptors as such: close (and close_range/closefrom), the
//! dup family, fcntl, fsync/fdatasync/syncfs, ftruncate.
//!
//! The SFS descriptor's kernel placeholder carries the descriptor flags
//! (FD_CLOEXEC), so `dup2` clearing it, `dup3(O_CLOEXEC)` setting it and
//! `F_GETFD`/`F_SETFD` are the kernel's own behaviour. Every placeholder is
//! an open file description of its own, which keeps the SFS offset
//! (`crate::descriptors::KernelOffsets`), so duplicates made here, across `fork` and
//! across `exec` share the offset as the kernel's do; the rest of the open
//! file (path, id, open flags) lives in the client's table, shared by all
//! duplicates in this process.

use crate::descriptors::{sfs_fd, SFS_FDS};
use crate::hooks::lock;
use crate::state::{self, err, run, with_client};
use crate::stdio;
use libc::{c_int, c_uint, c_ulong, off_t};
use sfs_global::SfsResult;

/// Closes SFS descriptor `fd` from inside the shim: forgotten wherever SFS
/// keeps it, then the kernel's placeholder closed with a raw system call.
/// Not `libc::close`: from inside the shim that reaches the `close` hook,
/// which passes a call made inside straight to the kernel, and the number
/// would stay an SFS descriptor for the next file the kernel opens at it.
pub fn close_inside(fd: c_int) {
    forget(fd);
    crate::descriptors::release_fd(fd);
}

/// Drops SFS descriptor `fd` from the shim: its bit, its record, the
/// process's record locks on its file, and its open file in the client. The kernel
/// number stays until the caller closes or replaces it.
pub fn forget(fd: c_int) {
    stdio::before_std_fd_changes(fd);
    // The record goes here (a flock lock with its last holder).
    drop(crate::descriptors::take(fd));
    let locked = with_client(|c| {
        // A descriptor of a file this process took record locks on: POSIX
        // drops them at any close of the file.
        let locked = lock::locked_key(c, fd);
        c.forget_fd(fd);
        Ok(locked)
    });
    if let Ok(Some(key)) = locked {
        lock::on_close(key);
    }
}

/// # Safety
/// Any arguments are sound: close(2), whose arguments these are, takes numbers
/// only (the handler is `unsafe` by the hooks' shape).
pub(crate) unsafe fn sfs_close(fd: c_int) -> c_int {
    if crate::descriptors::INTERNAL_FDS.contains(fd) {
        if state::inside_now() {
            crate::descriptors::INTERNAL_FDS.remove(fd);
        } else {
            // The shim's own descriptor: not the application's to close.
            state::set_errno(libc::EBADF);
            return -1;
        }
    }
    match sfs_fd(fd) {
        Some(_inside) => {
            forget(fd);
            // SAFETY: the caller's descriptor goes on unchanged to the next
            // library's `close`, under the contract this function was called
            // with (a number only).
            unsafe { real!(close)(fd) }
        }
        // SAFETY: the caller's arguments go on unchanged to the next library's
        // `close`, under the contract this function was called with.
        None => unsafe { real!(close)(fd) },
    }
}

fn forget_range(first: c_uint, last: c_uint) {
    for fd in SFS_FDS.in_range(first, last) {
        if let Some(_inside) = sfs_fd(fd) {
            forget(fd);
        }
    }
}

/// Runs the real `close_range(first, last, flags)` on every sub-range that
/// holds none of the shim's own descriptors: a program that closes "all
/// descriptors" (daemons at start, children before exec) must not cut the
/// client's connections or its runtime's epoll descriptor. The shim's own
/// descriptors are close-on-exec, so an exec still drops them.
fn close_range_around_internal(first: c_uint, last: c_uint, flags: c_int) -> c_int {
    let mut from = first;
    for own in crate::descriptors::INTERNAL_FDS.in_range(first, last) {
        let own = own as c_uint;
        if own > from {
            // SAFETY: close_range takes numbers only.
            if unsafe { real!(close_range)(from, own - 1, flags) } != 0 {
                return -1;
            }
        }
        from = own + 1;
    }
    if from > last || (from == 0 && first > 0) {
        return 0;
    }
    // SAFETY: as above.
    unsafe { real!(close_range)(from, last, flags) }
}

/// # Safety
/// Any arguments are sound: close_range(2), whose arguments these are, takes
/// numbers only (the handler is `unsafe` by the hooks' shape).
pub(crate) unsafe fn sfs_close_range(first: c_uint, last: c_uint, flags: c_int) -> c_int {
    if first > last {
        // SAFETY: the caller's arguments go on unchanged to the next library's
        // `close_range`, under the contract this function was called with
        // (numbers only).
        return unsafe { real!(close_range)(first, last, flags) };
    }
    if flags & (libc::CLOSE_RANGE_CLOEXEC as c_int) == 0 {
        forget_range(first, last);
    }
    close_range_around_internal(first, last, flags)
}

/// # Safety
/// Any arguments are sound: closefrom(3), whose arguments these are, takes
/// numbers only (the handler is `unsafe` by the hooks' shape).
pub(crate) unsafe fn sfs_closefrom(low: c_int) {
    let low = low.max(0) as c_uint;
    forget_range(low, c_uint::MAX);
    if close_range_around_internal(low, c_uint::MAX, 0) != 0 {
        // What glibc's closefrom does when close_range is missing:
        // close one by one, still sparing the shim's descriptors.
        let open = std::fs::read_dir("/proc/self/fd")
            .into_iter()
            .flatten()
            .flatten();
        for fd in open.filter_map(|e| e.file_name().to_str()?.parse::<c_int>().ok()) {
            if fd as c_uint >= low && !crate::descriptors::INTERNAL_FDS.contains(fd) {
                // SAFETY: close takes a number only; closing the program's
                // descriptors from `low` up is what closefrom was asked to do
                // (the shim's own are spared above).
                unsafe { real!(close)(fd) };
            }
        }
    }
}

/// Registers `newfd`, just made by the kernel as a copy of SFS `fd`'s
/// placeholder, as sharing `fd`'s open file.
fn adopt_duplicate(fd: c_int, newfd: c_int) -> SfsResult<c_int> {
    if SFS_FDS.contains(newfd) && newfd != fd {
        forget(newfd);
    }
    with_client(|c| c.dup_to(fd, newfd))?;
    SFS_FDS.insert(newfd);
    crate::descriptors::share_record(fd, newfd);
    stdio::after_std_fd_became_sfs(newfd);
    Ok(newfd)
}

fn kernel_result(r: c_int) -> SfsResult<c_int> {
    if r < 0 {
        Err(err(state::errno(), "duplicating the descriptor"))
    } else {
        Ok(r)
    }
}

/// # Safety
/// Any arguments are sound: dup(2), whose arguments these are, takes numbers
/// only (the handler is `unsafe` by the hooks' shape).
pub(crate) unsafe fn sfs_dup(fd: c_int) -> c_int {
    match sfs_fd(fd) {
        Some(_inside) => run("dup", || {
            // SAFETY: dup takes a number only: the caller's descriptor,
            // duplicated by the next library's `dup`.
            adopt_duplicate(fd, kernel_result(unsafe { real!(dup)(fd) })?)
        }),
        // SAFETY: the caller's arguments go on unchanged to the next library's
        // `dup`, under the contract this function was called with.
        None => unsafe { real!(dup)(fd) },
    }
}

/// dup2/dup3 when `newfd` or `oldfd` is SFS.
///
/// # Safety
/// Any arguments are sound: numbers only (`unsafe` as the handlers that call
/// it).
unsafe fn dup_onto(oldfd: c_int, newfd: c_int, flags: Option<c_int>) -> Option<c_int> {
    if crate::descriptors::INTERNAL_FDS.contains(newfd) && !state::inside_now() {
        // The number is one of the shim's own descriptors (a connection, the
        // runtime's epoll), whose owners hold it: replacing it would cut
        // them. Refused as a number beyond the program's range.
        state::set_errno(libc::EBADF);
        return Some(-1);
    }
    let old_sfs = SFS_FDS.contains(oldfd);
    if !old_sfs && !SFS_FDS.contains(newfd) {
        return None;
    }
    let _inside = state::enter()?;
    Some(run("dup2", || {
        if oldfd == newfd {
            return match flags {
                Some(_) => Err(err(libc::EINVAL, "dup3 onto itself")),
                None => Ok(newfd),
            };
        }
        // Buffered data of a standard stream belongs to the old descriptor.
        stdio::before_std_fd_changes(newfd);
        // SAFETY: dup2 and dup3 take numbers only: the caller's descriptors and
        // flags, on to the next library's function.
        let r = unsafe {
            match flags {
                None => real!(dup2)(oldfd, newfd),
                Some(f) => real!(dup3)(oldfd, newfd, f),
            }
        };
        let r = kernel_result(r)?;
        if old_sfs {
            adopt_duplicate(oldfd, r)
        } else {
            forget(newfd);
            Ok(r)
        }
    }))
}

/// # Safety
/// Any arguments are sound: dup2(2), whose arguments these are, takes numbers
/// only (the handler is `unsafe` by the hooks' shape).
pub(crate) unsafe fn sfs_dup2(oldfd: c_int, newfd: c_int) -> c_int {
    // SAFETY: `dup_onto` takes numbers only; the caller's arguments go on
    // unchanged to the next library's `dup2`, under the contract this function
    // was called with.
    unsafe { dup_onto(oldfd, newfd, None).unwrap_or_else(|| real!(dup2)(oldfd, newfd)) }
}

/// # Safety
/// Any arguments are sound: dup3(2), whose arguments these are, takes numbers
/// only (the handler is `unsafe` by the hooks' shape).
pub(crate) unsafe fn sfs_dup3(oldfd: c_int, newfd: c_int, flags: c_int) -> c_int {
    // SAFETY: `dup_onto` takes numbers only; the caller's arguments go on
    // unchanged to the next library's `dup3`, under the contract this function
    // was called with.
    unsafe {
        dup_onto(oldfd, newfd, Some(flags)).unwrap_or_else(|| real!(dup3)(oldfd, newfd, flags))
    }
}

/// Status flags F_GETFL reports from the open (the access mode, and the
/// flags Linux does not let F_SETFL change either).
const OPEN_FLAGS: c_int = libc::O_ACCMODE | libc::O_DIRECT | libc::O_SYNC | libc::O_DSYNC;

/// # Safety
/// For the lock commands (`F_GETLK`, `F_SETLK`, `F_SETLKW` and their OFD
/// variants) `arg` is NULL or the address of a `struct flock` valid for reads
/// and writes: the contract of fcntl(2). The other commands it runs take
/// numbers only.
unsafe fn fcntl_sfs(fd: c_int, cmd: c_int, arg: c_ulong) -> SfsResult<c_int> {
    match cmd {
        libc::F_DUPFD | libc::F_DUPFD_CLOEXEC => {
            // SAFETY: F_DUPFD and F_DUPFD_CLOEXEC take a number as `arg`.
            let newfd = kernel_result(unsafe { real!(fcntl)(fd, cmd, arg) })?;
            adopt_duplicate(fd, newfd)
        }
        // SAFETY: F_GETFD and F_SETFD take a number (or nothing) as `arg`.
        libc::F_GETFD | libc::F_SETFD => kernel_result(unsafe { real!(fcntl)(fd, cmd, arg) }),
        // O_APPEND and O_NONBLOCK live on the placeholder's description
        // (shared with duplicates and children, as the kernel's are).
        libc::F_GETFL => {
            let open = with_client(|c| c.fd_flags(fd))? & OPEN_FLAGS;
            // SAFETY: F_GETFL takes no argument.
            let kernel = kernel_result(unsafe { real!(fcntl)(fd, libc::F_GETFL, 0) })?;
            Ok(open | (kernel & crate::descriptors::KERNEL_STATUS_FLAGS))
        }
        libc::F_SETFL => {
            // SAFETY: F_GETFL takes no argument.
            let kernel = kernel_result(unsafe { real!(fcntl)(fd, libc::F_GETFL, 0) })?;
            let wanted = (kernel & !crate::descriptors::KERNEL_STATUS_FLAGS)
                | (arg as c_int & crate::descriptors::KERNEL_STATUS_FLAGS);
            // O_ASYNC, O_NOATIME, O_DIRECT: no effect on SFS I/O.
            // SAFETY: F_SETFL takes a number (the flags) as `arg`.
            kernel_result(unsafe { real!(fcntl)(fd, libc::F_SETFL, wanted as c_ulong) }).map(|_| 0)
        }
        libc::F_GETLK
        | libc::F_SETLK
        | libc::F_SETLKW
        | libc::F_OFD_GETLK
        | libc::F_OFD_SETLK
        | libc::F_OFD_SETLKW => {
            // SAFETY: for these commands `arg` is NULL or the address of a
            // valid `struct flock` (this function's contract), which is
            // `fcntl_lock`'s.
            unsafe { lock::fcntl_lock(fd, cmd, arg as *mut libc::flock) }
        }
        _ => Err(err(
            libc::EINVAL,
            format!("fcntl command {cmd} is not supported on SFS descriptors"),
        )),
    }
}

/// # Safety
/// `arg` is what fcntl(2) wants for `cmd`: for the lock commands NULL or the
/// address of a valid `struct flock`, else a number or nothing. The contract of
/// fcntl(2), whose arguments these are (its optional argument taken as a fixed
/// one: wrapper/hooks.table).
pub(crate) unsafe fn sfs_fcntl(fd: c_int, cmd: c_int, arg: c_ulong) -> c_int {
    match sfs_fd(fd) {
        Some(_inside) => run("fcntl", || {
            // SAFETY: `arg` is what `cmd` wants (this function's contract),
            // which is `fcntl_sfs`'s.
            unsafe { fcntl_sfs(fd, cmd, arg) }
        }),
        // SAFETY: the caller's arguments go on unchanged to the next library's
        // `fcntl`, under the contract this function was called with.
        None => unsafe { real!(fcntl)(fd, cmd, arg) },
    }
}

/// # Safety
/// Any arguments are sound: fsync(2), whose arguments these are, takes numbers
/// only (the handler is `unsafe` by the hooks' shape).
pub(crate) unsafe fn sfs_fsync(fd: c_int) -> c_int {
    match sfs_fd(fd) {
        Some(_inside) => run("fsync", || with_client(|c| c.fsync(fd)).map(|()| 0)),
        // SAFETY: the caller's arguments go on unchanged to the next library's
        // `fsync`, under the contract this function was called with.
        None => unsafe { real!(fsync)(fd) },
    }
}

/// # Safety
/// Any arguments are sound: fdatasync(2), whose arguments these are, takes
/// numbers only (the handler is `unsafe` by the hooks' shape).
pub(crate) unsafe fn sfs_fdatasync(fd: c_int) -> c_int {
    match sfs_fd(fd) {
        Some(_inside) => run("fdatasync", || with_client(|c| c.fdatasync(fd)).map(|()| 0)),
        // SAFETY: the caller's arguments go on unchanged to the next library's
        // `fdatasync`, under the contract this function was called with.
        None => unsafe { real!(fdatasync)(fd) },
    }
}

/// # Safety
/// Any arguments are sound: syncfs(2), whose arguments these are, takes numbers
/// only (the handler is `unsafe` by the hooks' shape).
pub(crate) unsafe fn sfs_syncfs(fd: c_int) -> c_int {
    match sfs_fd(fd) {
        Some(_inside) => run("syncfs", || with_client(|c| c.sync_all()).map(|()| 0)),
        // SAFETY: the caller's arguments go on unchanged to the next library's
        // `syncfs`, under the contract this function was called with.
        None => unsafe { real!(syncfs)(fd) },
    }
}

fn ftruncate_sfs(fd: c_int, len: off_t) -> SfsResult<c_int> {
    let len = u64::try_from(len).map_err(|_| err(libc::EINVAL, "negative length"))?;
    crate::hooks::io::check_truncate_length(len)?;
    with_client(|c| c.ftruncate(fd, len)).map(|()| 0)
}

/// # Safety
/// Any arguments are sound: ftruncate(2), whose arguments these are, takes
/// numbers only (the handler is `unsafe` by the hooks' shape).
pub(crate) unsafe fn sfs_ftruncate(fd: c_int, len: off_t) -> c_int {
    match sfs_fd(fd) {
        Some(_inside) => run("ftruncate", || ftruncate_sfs(fd, len)),
        // SAFETY: the caller's arguments go on unchanged to the next library's
        // `ftruncate`, under the contract this function was called with.
        None => unsafe { real!(ftruncate)(fd, len) },
    }
}

/// # Safety
/// Any arguments are sound: flock(2), whose arguments these are, takes numbers
/// only (the handler is `unsafe` by the hooks' shape).
pub(crate) unsafe fn sfs_flock(fd: c_int, op: c_int) -> c_int {
    match sfs_fd(fd) {
        Some(_inside) => run("flock", || lock::flock(fd, op)),
        // SAFETY: the caller's arguments go on unchanged to the next library's
        // `flock`, under the contract this function was called with.
        None => unsafe { real!(flock)(fd, op) },
    }
}

/// # Safety
/// Any arguments are sound: lockf(3), whose arguments these are, takes numbers
/// only (the handler is `unsafe` by the hooks' shape).
pub(crate) unsafe fn sfs_lockf(fd: c_int, cmd: c_int, len: off_t) -> c_int {
    match sfs_fd(fd) {
        Some(_inside) => run("lockf", || lock::lockf(fd, cmd, len)),
        // SAFETY: the caller's arguments go on unchanged to the next library's
        // `lockf`, under the contract this function was called with.
        None => unsafe { real!(lockf)(fd, cmd, len) },
    }
}

// The client's own descriptors are created inside the shim; they move to
// high numbers (see `crate::descriptors::relocate_internal`).

/// # Safety
/// Any arguments are sound: socket(2), whose arguments these are, takes numbers
/// only (the handler is `unsafe` by the hooks' shape).
pub(crate) unsafe fn sfs_socket(domain: c_int, kind: c_int, protocol: c_int) -> c_int {
    // SAFETY: the caller's arguments go on unchanged to the next library's
    // `socket`, under the contract this function was called with.
    let fd = unsafe { real!(socket)(domain, kind, protocol) };
    if state::inside_now() {
        crate::descriptors::relocate_internal(fd)
    } else {
        fd
    }
}

/// # Safety
/// Any arguments are sound: epoll_create1(2), whose arguments these are, takes
/// numbers only (the handler is `unsafe` by the hooks' shape).
pub(crate) unsafe fn sfs_epoll_create1(flags: c_int) -> c_int {
    // SAFETY: the caller's arguments go on unchanged to the next library's
    // `epoll_create1`, under the contract this function was called with.
    let fd = unsafe { real!(epoll_create1)(flags) };
    if state::inside_now() {
        crate::descriptors::relocate_internal(fd)
    } else {
        fd
    }
}

/// # Safety
/// Any arguments are sound: eventfd(2), whose arguments these are, takes
/// numbers only (the handler is `unsafe` by the hooks' shape).
pub(crate) unsafe fn sfs_eventfd(initval: c_uint, flags: c_int) -> c_int {
    // SAFETY: the caller's arguments go on unchanged to the next library's
    // `eventfd`, under the contract this function was called with.
    let fd = unsafe { real!(eventfd)(initval, flags) };
    if state::inside_now() {
        crate::descriptors::relocate_internal(fd)
    } else {
        fd
    }
}

// tokio's signal driver keeps a socket pair for the whole process: it
// must not sit at a low number the program may dup2() over (bash's
// `exec 4>file`), or a forked child's new runtime registers the
// program's descriptor instead.
/// # Safety
/// `sv` is valid for writing two `c_int`s: the contract of socketpair(2), whose
/// arguments these are.
pub(crate) unsafe fn sfs_socketpair(
    domain: c_int,
    kind: c_int,
    protocol: c_int,
    sv: *mut c_int,
) -> c_int {
    // SAFETY: the caller's arguments go on unchanged to the next library's
    // `socketpair`, under the contract this function was called with.
    let r = unsafe { real!(socketpair)(domain, kind, protocol, sv) };
    if r == 0 && state::inside_now() {
        // SAFETY: `sv` is valid for two `c_int`s (this function's contract),
        // which the successful call above has written.
        unsafe {
            *sv = crate::descriptors::relocate_internal(*sv);
            *sv.add(1) = crate::descriptors::relocate_internal(*sv.add(1));
        }
    }
    r
}

/// # Safety
/// `fds` is valid for writing two `c_int`s: the contract of pipe2(2), whose
/// arguments these are.
pub(crate) unsafe fn sfs_pipe2(fds: *mut c_int, flags: c_int) -> c_int {
    // SAFETY: the caller's arguments go on unchanged to the next library's
    // `pipe2`, under the contract this function was called with.
    let r = unsafe { real!(pipe2)(fds, flags) };
    if r == 0 && state::inside_now() {
        // SAFETY: `fds` is valid for two `c_int`s (this function's contract),
        // which the successful call above has written.
        unsafe {
            *fds = crate::descriptors::relocate_internal(*fds);
            *fds.add(1) = crate::descriptors::relocate_internal(*fds.add(1));
        }
    }
    r
}
