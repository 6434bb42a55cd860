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

use crate::descriptors::sfs_fd;
use crate::hooks::dir::{self, Compare, Filter};
use crate::hooks::{cwd, fd, io, misc, namespace, open, process};
use crate::paths::sfs_path;
use crate::state::{self, err, run, with_client};
use libc::{
    c_char, c_int, c_long, c_uint, c_ulong, c_void, dirent, mode_t, off_t, size_t, ssize_t,
};

/// # Safety
/// `buf` is valid for writing `count` bytes: the contract of read(2)
/// (`__read` is glibc's other name for it), whose arguments these are.
pub(crate) unsafe fn sfs_alias_read(fd: c_int, buf: *mut c_void, count: size_t) -> ssize_t {
    // SAFETY: the caller's arguments go on unchanged to `io::sfs_read`, which
    // has the contract of `read` this function was called with.
    unsafe { io::sfs_read(fd, buf, count) }
}

/// # Safety
/// `buf` is valid for reading `count` bytes: the contract of write(2)
/// (`__write` is glibc's other name for it), whose arguments these are.
pub(crate) unsafe fn sfs_alias_write(fd: c_int, buf: *const c_void, count: size_t) -> ssize_t {
    // SAFETY: the caller's arguments go on unchanged to `io::sfs_write`, which
    // has the contract of `write` this function was called with.
    unsafe { io::sfs_write(fd, buf, count) }
}

/// # Safety
/// `buf` is valid for writing `count` bytes: the contract of pread(2)
/// (`__pread64` is glibc's other name for it), whose arguments these are.
pub(crate) unsafe fn sfs_alias_pread64(
    fd: c_int,
    buf: *mut c_void,
    count: size_t,
    off: off_t,
) -> ssize_t {
    // SAFETY: the caller's arguments go on unchanged to `io::sfs_pread`, which
    // has the contract of `pread` this function was called with.
    unsafe { io::sfs_pread(fd, buf, count, off) }
}

/// # Safety
/// `buf` is valid for reading `count` bytes: the contract of pwrite(2)
/// (`__pwrite64` is glibc's other name for it), whose arguments these are.
pub(crate) unsafe fn sfs_alias_pwrite64(
    fd: c_int,
    buf: *const c_void,
    count: size_t,
    off: off_t,
) -> ssize_t {
    // SAFETY: the caller's arguments go on unchanged to `io::sfs_pwrite`, which
    // has the contract of `pwrite` this function was called with.
    unsafe { io::sfs_pwrite(fd, buf, count, off) }
}

/// # Safety
/// None beyond lseek(2)'s (`__lseek` is glibc's other name for it): its
/// arguments are plain integers.
pub(crate) unsafe fn sfs_alias_lseek(fd: c_int, off: off_t, whence: c_int) -> off_t {
    // SAFETY: the caller's arguments go on unchanged to `io::sfs_lseek`, which
    // has the contract of `lseek` this function was called with.
    unsafe { io::sfs_lseek(fd, off, whence) }
}

/// # Safety
/// `path` is NULL or a NUL-terminated string: the contract of open(2)
/// (`__open`/`__open64` are glibc's other names for it), whose arguments
/// these are.
pub(crate) unsafe fn sfs_alias_open(path: *const c_char, flags: c_int, mode: mode_t) -> c_int {
    // SAFETY: the caller's arguments go on unchanged to `open::sfs_open`, which
    // has the contract of `open` this function was called with.
    unsafe { open::sfs_open(path, flags, mode) }
}

/// # Safety
/// None beyond close(2)'s (`__close` is glibc's other name for it): its
/// argument is a plain integer.
pub(crate) unsafe fn sfs_alias_close(fd: c_int) -> c_int {
    // SAFETY: the caller's arguments go on unchanged to `fd::sfs_close`, which
    // has the contract of `close` this function was called with.
    unsafe { fd::sfs_close(fd) }
}

/// # Safety
/// None beyond dup2(2)'s (`__dup2` is glibc's other name for it): its
/// arguments are plain integers.
pub(crate) unsafe fn sfs_alias_dup2(oldfd: c_int, newfd: c_int) -> c_int {
    // SAFETY: the caller's arguments go on unchanged to `fd::sfs_dup2`, which
    // has the contract of `dup2` this function was called with.
    unsafe { fd::sfs_dup2(oldfd, newfd) }
}

/// # Safety
/// `arg` is what `cmd` requires (a pointer to the structure the command reads
/// or writes, for the commands that take one): the contract of fcntl(2)
/// (`__fcntl` is glibc's other name for it), whose arguments these are.
pub(crate) unsafe fn sfs_alias_fcntl(fd: c_int, cmd: c_int, arg: c_ulong) -> c_int {
    // SAFETY: the caller's arguments go on unchanged to `fd::sfs_fcntl`, which
    // has the contract of `fcntl` this function was called with.
    unsafe { fd::sfs_fcntl(fd, cmd, arg) }
}

/// # Safety
/// `path` is NULL or a NUL-terminated string and `buf` is NULL or valid for
/// writing a `struct statfs`: the contract of statfs(2) (`__statfs` is
/// glibc's other name for it), whose arguments these are.
pub(crate) unsafe fn sfs_alias_statfs(path: *const c_char, buf: *mut libc::statfs) -> c_int {
    // SAFETY: the caller's arguments go on unchanged to `misc::sfs_statfs`, which
    // has the contract of `statfs` this function was called with.
    unsafe { misc::sfs_statfs(path, buf) }
}

// `__xmknod(_MKNOD_VER, ...)`: what mknod compiled against glibc < 2.33 calls.
/// # Safety
/// `path` is NULL or a NUL-terminated string and `dev` is NULL or points to
/// a readable `dev_t`: the contract of `__xmknod` (mknod(2) of glibc <
/// 2.33), whose arguments these are.
pub(crate) unsafe fn sfs_alias_xmknod(
    version: c_int,
    path: *const c_char,
    mode: mode_t,
    dev: *mut libc::dev_t,
) -> c_int {
    // SAFETY: `dev` is the caller's device number (read only if set).
    let number = if dev.is_null() { 0 } else { unsafe { *dev } };
    // SAFETY: `path` is NULL or NUL-terminated (this function's contract),
    // as mknod_hook requires.
    unsafe { namespace::mknod_hook(libc::AT_FDCWD, path, mode, number, "mknod") }.unwrap_or_else(
        || {
            // SAFETY: the caller's arguments go on unchanged to the next
            // library's `__xmknod`, under the contract this function was
            // called with.
            unsafe { real!(__xmknod)(version, path, mode, dev) }
        },
    )
}

/// # Safety
/// `path` is NULL or a NUL-terminated string and `dev` is NULL or points to
/// a readable `dev_t`: the contract of `__xmknodat` (mknodat(2) of glibc <
/// 2.33), whose arguments these are.
pub(crate) unsafe fn sfs_alias_xmknodat(
    version: c_int,
    dirfd: c_int,
    path: *const c_char,
    mode: mode_t,
    dev: *mut libc::dev_t,
) -> c_int {
    // SAFETY: `dev` is the caller's device number (read only if set).
    let number = if dev.is_null() { 0 } else { unsafe { *dev } };
    // SAFETY: `path` is NULL or NUL-terminated (this function's contract),
    // as mknod_hook requires.
    unsafe { namespace::mknod_hook(dirfd, path, mode, number, "mknod") }.unwrap_or_else(|| {
        // SAFETY: the caller's arguments go on unchanged to the next
        // library's `__xmknodat`, under the contract this function was
        // called with.
        unsafe { real!(__xmknodat)(version, dirfd, path, mode, dev) }
    })
}

/// # Safety
/// `path` is NULL or a NUL-terminated string: the contract of lchmod(3),
/// whose arguments these are.
pub(crate) unsafe fn sfs_lchmod(path: *const c_char, mode: mode_t) -> c_int {
    // SAFETY: `path` is NULL or NUL-terminated (this function's contract),
    // which is fchmodat's contract for it.
    unsafe { namespace::sfs_fchmodat(libc::AT_FDCWD, path, mode, libc::AT_SYMLINK_NOFOLLOW) }
}

/// # Safety
/// `path` is NULL or a NUL-terminated string and `times` is NULL or valid
/// for reading two `struct timeval`: the contract of futimesat(2), whose
/// arguments these are.
pub(crate) unsafe fn sfs_futimesat(
    dirfd: c_int,
    path: *const c_char,
    times: *const libc::timeval,
) -> c_int {
    // SAFETY: `path` is NULL or NUL-terminated (this function's contract).
    match unsafe { sfs_path(dirfd, path) } {
        Some((_inside, p)) => run("futimesat", || {
            // SAFETY: `times` is NULL or valid for two timevals (this
            // function's contract), as times_from_timeval requires.
            namespace::utimens_sfs(&p, unsafe { namespace::times_from_timeval(times) }?, true)
        }),
        // SAFETY: the caller's arguments go on unchanged to the next
        // library's `futimesat`, under the contract this function was called
        // with.
        None => unsafe { real!(futimesat)(dirfd, path, times) },
    }
}

// getwd(buf): buf holds PATH_MAX bytes (the reason it is deprecated).
/// # Safety
/// `buf` is NULL or valid for writing `PATH_MAX` bytes: the contract of
/// getwd(3), whose argument this is.
pub(crate) unsafe fn sfs_getwd(buf: *mut c_char) -> *mut c_char {
    if buf.is_null() {
        // SAFETY: the caller's argument goes on unchanged to the next
        // library's `getwd`, under the contract this function was called
        // with.
        return unsafe { real!(getwd)(buf) };
    }
    // SAFETY: `buf` is non-NULL (checked above), so valid for writing
    // `PATH_MAX` bytes (this function's contract): a buffer of `buflen`
    // bytes with `size` <= `buflen`, as getcwd_chk requires.
    unsafe { cwd::sfs_getcwd_chk(buf, libc::PATH_MAX as size_t, libc::PATH_MAX as size_t) }
}

/// # Safety
/// `buf` is NULL or valid for writing `buflen` bytes: the contract of
/// `__getwd_chk` (getwd(3) under `_FORTIFY_SOURCE`), whose arguments these
/// are.
pub(crate) unsafe fn sfs_alias_getwd_chk(buf: *mut c_char, buflen: size_t) -> *mut c_char {
    if buflen < libc::PATH_MAX as size_t || buf.is_null() {
        // SAFETY: the caller's arguments go on unchanged to the next
        // library's `__getwd_chk`, under the contract this function was
        // called with.
        return unsafe { real!(__getwd_chk)(buf, buflen) };
    }
    // SAFETY: `buf` is non-NULL and valid for `buflen` >= `PATH_MAX` bytes
    // (checked above, and this function's contract), as getwd requires.
    unsafe { sfs_getwd(buf) }
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

/// # Safety
/// `path` is NULL or a NUL-terminated string: the contract of pathconf(3),
/// whose arguments these are.
pub(crate) unsafe fn sfs_pathconf(path: *const c_char, name: c_int) -> c_long {
    // SAFETY: `path` is NULL or NUL-terminated (this function's contract).
    match unsafe { sfs_path(libc::AT_FDCWD, path) } {
        Some((_inside, p)) => match with_client(|c| c.stat(&p)) {
            Ok(_) => pathconf_result(name),
            Err(e) => run("pathconf", || Err::<c_long, _>(e)),
        },
        // SAFETY: the caller's arguments go on unchanged to the next
        // library's `pathconf`, under the contract this function was called
        // with.
        None => unsafe { real!(pathconf)(path, name) },
    }
}

/// # Safety
/// None beyond fpathconf(3)'s: its arguments are plain integers.
pub(crate) unsafe fn sfs_fpathconf(fd: c_int, name: c_int) -> c_long {
    match sfs_fd(fd) {
        Some(_inside) => pathconf_result(name),
        // SAFETY: the caller's arguments go on unchanged to the next
        // library's `fpathconf`, under the contract this function was called
        // with.
        None => unsafe { real!(fpathconf)(fd, name) },
    }
}

// A hint: SFS has no page cache to fill.
/// # Safety
/// None beyond readahead(2)'s: its arguments are plain integers.
pub(crate) unsafe fn sfs_readahead(fd: c_int, offset: off_t, count: size_t) -> ssize_t {
    match sfs_fd(fd) {
        Some(_inside) => 0,
        // SAFETY: the caller's arguments go on unchanged to the next
        // library's `readahead`, under the contract this function was called
        // with.
        None => unsafe { real!(readahead)(fd, offset, count) },
    }
}

// Durability of a range: SFS makes the whole file durable (fdatasync).
/// # Safety
/// None beyond sync_file_range(2)'s: its arguments are plain integers.
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
        // SAFETY: the caller's arguments go on unchanged to the next
        // library's `sync_file_range`, under the contract this function was
        // called with.
        None => unsafe { real!(sync_file_range)(fd, offset, count, flags) },
    }
}

// File handles belong to kernel file systems: SFS has none.
/// # Safety
/// `path` is NULL or a NUL-terminated string, `handle` points to a `struct
/// file_handle` with room for its `handle_bytes` and `mount_id` is valid for
/// writing an `int`: the contract of name_to_handle_at(2), whose arguments
/// these are.
pub(crate) unsafe fn sfs_name_to_handle_at(
    dirfd: c_int,
    path: *const c_char,
    handle: *mut c_void,
    mount_id: *mut c_int,
    flags: c_int,
) -> c_int {
    // SAFETY: `path` is NULL or NUL-terminated (this function's contract).
    match unsafe { sfs_path(dirfd, path) } {
        Some((_inside, p)) => run("name_to_handle_at", || {
            with_client(|c| c.lstat(&p))?;
            Err::<c_int, _>(err(libc::EOPNOTSUPP, "SFS has no file handles"))
        }),
        // SAFETY: the caller's arguments go on unchanged to the next
        // library's `name_to_handle_at`, under the contract this function was
        // called with.
        None => unsafe { real!(name_to_handle_at)(dirfd, path, handle, mount_id, flags) },
    }
}

/// # Safety
/// `path` is NULL or a NUL-terminated string, `namelist` is valid for
/// writing a pointer, and `filter` and `compare`, when set, are functions of
/// scandir's types that may be called with the entries: the contract of
/// scandirat(3), whose arguments these are.
pub(crate) unsafe fn sfs_scandirat(
    dirfd: c_int,
    path: *const c_char,
    namelist: *mut *mut *mut dirent,
    filter: Filter,
    compare: Compare,
) -> c_int {
    // SAFETY: `path` is NULL or NUL-terminated (this function's contract).
    match unsafe { sfs_path(dirfd, path) } {
        Some((_inside, p)) => run("scandirat", || {
            // SAFETY: `namelist`, `filter` and `compare` are as scandir_sfs
            // requires (this function's contract, scandir's).
            unsafe { dir::scandir_sfs(&p, namelist, filter, compare) }
        }),
        // SAFETY: the caller's arguments go on unchanged to the next
        // library's `scandirat`, under the contract this function was called
        // with.
        None => unsafe { real!(scandirat)(dirfd, path, namelist, filter, compare) },
    }
}

// execveat: with AT_EMPTY_PATH it is fexecve; an SFS path is execve of it;
// otherwise the kernel's, with SFS descriptors handed over as execve does.
/// # Safety
/// `path` is NULL or a NUL-terminated string, and `argv` and `envp` are
/// NULL-terminated arrays of NUL-terminated strings: the contract of
/// execveat(2), whose arguments these are.
pub(crate) unsafe fn sfs_execveat(
    dirfd: c_int,
    path: *const c_char,
    argv: *const *const c_char,
    envp: *const *const c_char,
    flags: c_int,
) -> c_int {
    // SAFETY: `path` is not NULL nor surely invalid (checked first), so a
    // NUL-terminated string (this function's contract): its first byte is
    // readable.
    let empty = !crate::paths::surely_invalid(path) && unsafe { *path } == 0;
    if empty && flags & libc::AT_EMPTY_PATH != 0 {
        // SAFETY: `argv` and `envp` are as fexecve requires (this function's
        // contract, execve's).
        return unsafe { process::sfs_fexecve(dirfd, argv, envp) };
    }
    // SAFETY: `path` is NULL or NUL-terminated (this function's contract).
    let host = unsafe { sfs_path(dirfd, path) }.and_then(|(_inside, p)| {
        let settings = state::settings()?;
        state::host_cpath(settings, &p)
    });
    if let Some(host) = host {
        // SAFETY: `host` is a NUL-terminated CString alive for the call;
        // `argv` and `envp` are as execve requires (this function's
        // contract).
        return unsafe { process::sfs_execve(host.as_ptr(), argv, envp) };
    }
    // SAFETY: `envp` is a NULL-terminated array of NUL-terminated strings
    // (this function's contract), as environment_for_exec requires.
    let env = unsafe { crate::exec::environment_for_exec(envp) };
    let pointers = env.as_ref().map(|e| crate::exec::pointers(e));
    let envp = pointers.as_ref().map_or(envp, |p| p.as_ptr());
    // SAFETY: `dirfd`, `path`, `argv` and `flags` go on unchanged to the next
    // library's `execveat`, under the contract this function was called
    // with; `envp` is the caller's or `pointers`, a NULL-terminated array
    // over the CStrings of `env`, both alive until after the call.
    unsafe { real!(execveat)(dirfd, path, argv, envp, flags) }
}

/// glob's alternative directory functions, pointing at the hooked
/// functions, so that a pattern under the mount is expanded over SFS
/// (glibc's glob otherwise reads directories with internal calls no hook
/// sees).
///
/// # Safety
/// `pglob` is non-NULL, aligned, and valid for reading and writing a glibc
/// `glob_t`.
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
    /// # Safety
    /// `d` is a stream [`opendir`] returned, not yet closed: glob's use of
    /// `gl_closedir`.
    unsafe extern "C" fn closedir(d: *mut c_void) {
        // SAFETY: `d` is an open `DIR*` from opendir (this function's
        // contract), as closedir(3) requires.
        unsafe { libc::closedir(d.cast()) };
    }
    /// # Safety
    /// `d` is a stream [`opendir`] returned, not yet closed: glob's use of
    /// `gl_readdir`.
    unsafe extern "C" fn readdir(d: *mut c_void) -> *mut c_void {
        // SAFETY: `d` is an open `DIR*` from opendir (this function's
        // contract), as readdir(3) requires.
        unsafe { libc::readdir(d.cast()) }.cast()
    }
    /// # Safety
    /// `p` is a NUL-terminated string: glob's use of `gl_opendir`.
    unsafe extern "C" fn opendir(p: *const c_char) -> *mut c_void {
        // SAFETY: `p` is NUL-terminated (this function's contract), as
        // opendir(3) requires.
        unsafe { libc::opendir(p) }.cast()
    }
    /// # Safety
    /// `p` is a NUL-terminated string and `s` is valid for writing a `struct
    /// stat`: glob's use of `gl_lstat`, lstat(2)'s contract.
    unsafe extern "C" fn lstat(p: *const c_char, s: *mut libc::stat) -> c_int {
        // SAFETY: the arguments go on unchanged to lstat, under the
        // contract this function was called with.
        unsafe { libc::lstat(p, s) }
    }
    /// # Safety
    /// `p` is a NUL-terminated string and `s` is valid for writing a `struct
    /// stat`: glob's use of `gl_stat`, stat(2)'s contract.
    unsafe extern "C" fn stat(p: *const c_char, s: *mut libc::stat) -> c_int {
        // SAFETY: the arguments go on unchanged to stat, under the contract
        // this function was called with.
        unsafe { libc::stat(p, s) }
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
///
/// # Safety
/// `pattern` is a NUL-terminated string.
unsafe fn pattern_touches_mount(pattern: *const c_char, flags: c_int) -> bool {
    if flags & GLOB_ALTDIRFUNC != 0 {
        // The caller brought its own directory functions.
        return false;
    }
    // SAFETY: `pattern` is a NUL-terminated string (checked non-NULL).
    unsafe { sfs_path(libc::AT_FDCWD, pattern) }.is_some()
}

pub(crate) type GlobErr = Option<unsafe extern "C" fn(*const c_char, c_int) -> c_int>;

/// # Safety
/// `pattern` is a NUL-terminated string, `errfunc`, when set, is a function
/// of glob's error-callback type, and `pglob` is valid for reading and
/// writing a `glob_t`: the contract of glob(3), whose arguments these are.
pub(crate) unsafe fn sfs_glob(
    pattern: *const c_char,
    flags: c_int,
    errfunc: GlobErr,
    pglob: *mut libc::glob_t,
) -> c_int {
    // SAFETY: `pattern` is non-NULL (checked first), so NUL-terminated (this
    // function's contract).
    if !pattern.is_null() && !pglob.is_null() && unsafe { pattern_touches_mount(pattern, flags) } {
        // SAFETY: `pglob` is non-NULL (checked above), so a valid `glob_t`
        // (this function's contract).
        unsafe { glob_over_hooks(pglob) };
        // SAFETY: the caller's arguments go on to the next library's `glob`
        // under the contract this function was called with; the added
        // GLOB_ALTDIRFUNC makes it call the functions glob_over_hooks just
        // stored in `pglob`, which take what glob passes them.
        return unsafe { real!(glob)(pattern, flags | GLOB_ALTDIRFUNC, errfunc, pglob) };
    }
    // SAFETY: the caller's arguments go on unchanged to the next library's
    // `glob`, under the contract this function was called with.
    unsafe { real!(glob)(pattern, flags, errfunc, pglob) }
}

/// `GLOB_ALTDIRFUNC` of glibc's <glob.h>.
const GLOB_ALTDIRFUNC: c_int = 1 << 9;
