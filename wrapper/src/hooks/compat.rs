//! glibc's other public names for hooked calls, and the rarer file calls
//! that take a path or a descriptor.
//!
//! glibc exports `__read`, `__open64`, `__xmknod` and friends next to the
//! standard names (older binaries and some libraries link them); each is
//! the same call as its standard name here. The rest are calls whose
//! standard names nothing else hooks: `lchmod`, `futimesat`, `getwd`,
//! `pathconf`/`fpathconf`, `readahead`, `sync_file_range`,
//! `name_to_handle_at`, `scandirat`, `execveat` and `glob`.
//! `sfs_cli/tests/shim_symbols.rs` checks that every file-API name of the
//! system's libc is hooked or deliberately passed through.

use crate::hooks::dir::{self, Compare, Filter};
use crate::hooks::{cwd, fd, io, misc, namespace, open, process};
use crate::paths::sfs_path;
use crate::state::{self, err, run, sfs_fd, with_client};
use libc::{
    c_char, c_int, c_long, c_uint, c_ulong, c_void, dirent, mode_t, off_t, size_t, ssize_t,
};

pub(crate) unsafe fn sfs_alias_read(fd: c_int, buf: *mut c_void, count: size_t) -> ssize_t {
    io::sfs_read(fd, buf, count)
}

pub(crate) unsafe fn sfs_alias_write(fd: c_int, buf: *const c_void, count: size_t) -> ssize_t {
    io::sfs_write(fd, buf, count)
}

pub(crate) unsafe fn sfs_alias_pread64(
    fd: c_int,
    buf: *mut c_void,
    count: size_t,
    off: off_t,
) -> ssize_t {
    io::sfs_pread(fd, buf, count, off)
}

pub(crate) unsafe fn sfs_alias_pwrite64(
    fd: c_int,
    buf: *const c_void,
    count: size_t,
    off: off_t,
) -> ssize_t {
    io::sfs_pwrite(fd, buf, count, off)
}

pub(crate) unsafe fn sfs_alias_lseek(fd: c_int, off: off_t, whence: c_int) -> off_t {
    io::sfs_lseek(fd, off, whence)
}

pub(crate) unsafe fn sfs_alias_open(path: *const c_char, flags: c_int, mode: mode_t) -> c_int {
    open::sfs_open(path, flags, mode)
}

pub(crate) unsafe fn sfs_alias_close(fd: c_int) -> c_int {
    fd::sfs_close(fd)
}

pub(crate) unsafe fn sfs_alias_dup2(oldfd: c_int, newfd: c_int) -> c_int {
    fd::sfs_dup2(oldfd, newfd)
}

pub(crate) unsafe fn sfs_alias_fcntl(fd: c_int, cmd: c_int, arg: c_ulong) -> c_int {
    fd::sfs_fcntl(fd, cmd, arg)
}

pub(crate) unsafe fn sfs_alias_statfs(path: *const c_char, buf: *mut libc::statfs) -> c_int {
    misc::sfs_statfs(path, buf)
}

// `__xmknod(_MKNOD_VER, ...)`: what mknod compiled against glibc < 2.33 calls.
pub(crate) unsafe fn sfs_alias_xmknod(
    version: c_int,
    path: *const c_char,
    mode: mode_t,
    dev: *mut libc::dev_t,
) -> c_int {
    // SAFETY: `dev` is the caller's device number (read only if set).
    let number = if dev.is_null() { 0 } else { unsafe { *dev } };
    namespace::mknod_hook(libc::AT_FDCWD, path, mode, number, "mknod")
        .unwrap_or_else(|| real!(__xmknod)(version, path, mode, dev))
}

pub(crate) unsafe fn sfs_alias_xmknodat(
    version: c_int,
    dirfd: c_int,
    path: *const c_char,
    mode: mode_t,
    dev: *mut libc::dev_t,
) -> c_int {
    // SAFETY: `dev` is the caller's device number (read only if set).
    let number = if dev.is_null() { 0 } else { unsafe { *dev } };
    namespace::mknod_hook(dirfd, path, mode, number, "mknod")
        .unwrap_or_else(|| real!(__xmknodat)(version, dirfd, path, mode, dev))
}

pub(crate) unsafe fn sfs_lchmod(path: *const c_char, mode: mode_t) -> c_int {
    namespace::sfs_fchmodat(libc::AT_FDCWD, path, mode, libc::AT_SYMLINK_NOFOLLOW)
}

pub(crate) unsafe fn sfs_futimesat(
    dirfd: c_int,
    path: *const c_char,
    times: *const libc::timeval,
) -> c_int {
    match sfs_path(dirfd, path) {
        Some((_inside, p)) => run("futimesat", || {
            namespace::utimens_sfs(&p, namespace::times_from_timeval(times)?, true)
        }),
        None => real!(futimesat)(dirfd, path, times),
    }
}

// getwd(buf): buf holds PATH_MAX bytes (the reason it is deprecated).
pub(crate) unsafe fn sfs_getwd(buf: *mut c_char) -> *mut c_char {
    if buf.is_null() {
        return real!(getwd)(buf);
    }
    cwd::sfs_getcwd_chk(buf, libc::PATH_MAX as size_t, libc::PATH_MAX as size_t)
}

pub(crate) unsafe fn sfs_alias_getwd_chk(buf: *mut c_char, buflen: size_t) -> *mut c_char {
    if buflen < libc::PATH_MAX as size_t || buf.is_null() {
        return real!(__getwd_chk)(buf, buflen);
    }
    sfs_getwd(buf)
}

/// `pathconf` answers for SFS: the limits of docs/semantics.md.
fn pathconf_sfs(name: c_int) -> Result<c_long, c_int> {
    Ok(match name {
        libc::_PC_NAME_MAX => 255,
        libc::_PC_PATH_MAX => 4096,
        libc::_PC_LINK_MAX => c_long::from(sfs_global::metadata::LINK_MAX),
        libc::_PC_FILESIZEBITS => 64,
        libc::_PC_SYMLINK_MAX => 4095,
        libc::_PC_PIPE_BUF => 4096,
        // No limit / not applicable: -1 with errno untouched.
        libc::_PC_NO_TRUNC => 1,
        libc::_PC_CHOWN_RESTRICTED => 1,
        libc::_PC_MAX_CANON | libc::_PC_MAX_INPUT | libc::_PC_VDISABLE => return Err(0),
        libc::_PC_SYNC_IO | libc::_PC_ASYNC_IO | libc::_PC_PRIO_IO => return Err(0),
        libc::_PC_REC_INCR_XFER_SIZE
        | libc::_PC_REC_MAX_XFER_SIZE
        | libc::_PC_REC_MIN_XFER_SIZE
        | libc::_PC_REC_XFER_ALIGN
        | libc::_PC_ALLOC_SIZE_MIN => return Err(0),
        _ => return Err(libc::EINVAL),
    })
}

fn pathconf_result(name: c_int) -> c_long {
    match pathconf_sfs(name) {
        Ok(v) => v,
        Err(0) => -1,
        Err(errno) => {
            state::set_errno(errno);
            -1
        }
    }
}

pub(crate) unsafe fn sfs_pathconf(path: *const c_char, name: c_int) -> c_long {
    match sfs_path(libc::AT_FDCWD, path) {
        Some((_inside, p)) => match with_client(|c| c.stat(&p)) {
            Ok(_) => pathconf_result(name),
            Err(e) => run("pathconf", || Err::<c_long, _>(e)),
        },
        None => real!(pathconf)(path, name),
    }
}

pub(crate) unsafe fn sfs_fpathconf(fd: c_int, name: c_int) -> c_long {
    match sfs_fd(fd) {
        Some(_inside) => pathconf_result(name),
        None => real!(fpathconf)(fd, name),
    }
}

// A hint: SFS has no page cache to fill.
pub(crate) unsafe fn sfs_readahead(fd: c_int, offset: off_t, count: size_t) -> ssize_t {
    match sfs_fd(fd) {
        Some(_inside) => 0,
        None => real!(readahead)(fd, offset, count),
    }
}

// Durability of a range: SFS makes the whole file durable (fdatasync).
pub(crate) unsafe fn sfs_sync_file_range(
    fd: c_int,
    offset: off_t,
    count: off_t,
    flags: c_uint,
) -> c_int {
    match sfs_fd(fd) {
        Some(_inside) => run("sync_file_range", || {
            if offset < 0 || count < 0 {
                return Err(err(libc::EINVAL, "negative offset or length"));
            }
            with_client(|c| c.fdatasync(fd)).map(|()| 0)
        }),
        None => real!(sync_file_range)(fd, offset, count, flags),
    }
}

// File handles belong to kernel file systems: SFS has none.
pub(crate) unsafe fn sfs_name_to_handle_at(
    dirfd: c_int,
    path: *const c_char,
    handle: *mut c_void,
    mount_id: *mut c_int,
    flags: c_int,
) -> c_int {
    match sfs_path(dirfd, path) {
        Some((_inside, p)) => run("name_to_handle_at", || {
            with_client(|c| c.lstat(&p))?;
            Err::<c_int, _>(err(libc::EOPNOTSUPP, "SFS has no file handles"))
        }),
        None => real!(name_to_handle_at)(dirfd, path, handle, mount_id, flags),
    }
}

pub(crate) unsafe fn sfs_scandirat(
    dirfd: c_int,
    path: *const c_char,
    namelist: *mut *mut *mut dirent,
    filter: Filter,
    compare: Compare,
) -> c_int {
    match sfs_path(dirfd, path) {
        Some((_inside, p)) => run("scandirat", || {
            dir::scandir_sfs(&p, namelist, filter, compare)
        }),
        None => real!(scandirat)(dirfd, path, namelist, filter, compare),
    }
}

// execveat: with AT_EMPTY_PATH it is fexecve; an SFS path is execve of it;
// otherwise the kernel's, with SFS descriptors handed over as execve does.
pub(crate) unsafe fn sfs_execveat(
    dirfd: c_int,
    path: *const c_char,
    argv: *const *const c_char,
    envp: *const *const c_char,
    flags: c_int,
) -> c_int {
    let empty = !crate::paths::surely_invalid(path) && *path == 0;
    if empty && flags & libc::AT_EMPTY_PATH != 0 {
        return process::sfs_fexecve(dirfd, argv, envp);
    }
    let host = sfs_path(dirfd, path).and_then(|(_inside, p)| {
        let settings = state::settings()?;
        state::host_cpath(settings, &p)
    });
    if let Some(host) = host {
        return process::sfs_execve(host.as_ptr(), argv, envp);
    }
    let env = crate::exec::environment_for_exec(envp);
    let pointers = env.as_ref().map(|e| crate::exec::pointers(e));
    let envp = pointers.as_ref().map_or(envp, |p| p.as_ptr());
    real!(execveat)(dirfd, path, argv, envp, flags)
}

/// glob's alternative directory functions, pointing at the hooked
/// functions, so that a pattern under the mount is expanded over SFS
/// (glibc's glob otherwise reads directories with internal calls no hook
/// sees).
unsafe fn glob_over_hooks(pglob: *mut libc::glob_t) {
    // glibc's glob_t: after the five standard fields come gl_closedir,
    // gl_readdir, gl_opendir, gl_lstat and gl_stat (GNU extensions that
    // the libc crate does not name).
    #[repr(C)]
    struct GnuGlob {
        gl_pathc: size_t,
        gl_pathv: *mut *mut c_char,
        gl_offs: size_t,
        gl_flags: c_int,
        gl_closedir: unsafe extern "C" fn(*mut c_void),
        gl_readdir: unsafe extern "C" fn(*mut c_void) -> *mut c_void,
        gl_opendir: unsafe extern "C" fn(*const c_char) -> *mut c_void,
        gl_lstat: unsafe extern "C" fn(*const c_char, *mut libc::stat) -> c_int,
        gl_stat: unsafe extern "C" fn(*const c_char, *mut libc::stat) -> c_int,
    }
    const _: () = assert!(std::mem::size_of::<GnuGlob>() <= std::mem::size_of::<libc::glob_t>());
    unsafe extern "C" fn closedir(d: *mut c_void) {
        libc::closedir(d.cast());
    }
    unsafe extern "C" fn readdir(d: *mut c_void) -> *mut c_void {
        libc::readdir(d.cast()).cast()
    }
    unsafe extern "C" fn opendir(p: *const c_char) -> *mut c_void {
        libc::opendir(p).cast()
    }
    unsafe extern "C" fn lstat(p: *const c_char, s: *mut libc::stat) -> c_int {
        libc::lstat(p, s)
    }
    unsafe extern "C" fn stat(p: *const c_char, s: *mut libc::stat) -> c_int {
        libc::stat(p, s)
    }
    // SAFETY: `pglob` points to the caller's glob_t, whose layout starts
    // with GnuGlob's fields (glibc's <glob.h>; size asserted above).
    let g = unsafe { &mut *pglob.cast::<GnuGlob>() };
    g.gl_closedir = closedir;
    g.gl_readdir = readdir;
    g.gl_opendir = opendir;
    g.gl_lstat = lstat;
    g.gl_stat = stat;
}

/// True when a glob pattern could name something under the mount. The
/// shim is left before glob runs: its directory calls must reach the hooks.
unsafe fn pattern_touches_mount(pattern: *const c_char, flags: c_int) -> bool {
    if flags & GLOB_ALTDIRFUNC != 0 {
        // The caller brought its own directory functions.
        return false;
    }
    // SAFETY: `pattern` is a NUL-terminated string (checked non-NULL).
    unsafe { sfs_path(libc::AT_FDCWD, pattern) }.is_some()
}

pub(crate) type GlobErr = Option<unsafe extern "C" fn(*const c_char, c_int) -> c_int>;

pub(crate) unsafe fn sfs_glob(
    pattern: *const c_char,
    flags: c_int,
    errfunc: GlobErr,
    pglob: *mut libc::glob_t,
) -> c_int {
    if !pattern.is_null() && !pglob.is_null() && pattern_touches_mount(pattern, flags) {
        glob_over_hooks(pglob);
        return real!(glob)(pattern, flags | GLOB_ALTDIRFUNC, errfunc, pglob);
    }
    real!(glob)(pattern, flags, errfunc, pglob)
}

/// `GLOB_ALTDIRFUNC` of glibc's <glob.h>.
const GLOB_ALTDIRFUNC: c_int = 1 << 9;
