//! Calls that change the namespace or attributes: mkdir, rmdir, unlink,
//! rename, truncate, chmod/chown, symlinks, hard links, times.

use crate::descriptors::sfs_fd;
use crate::hooks::open::umask_value;
use crate::paths::{
    c_bytes, c_str, resolve_argument, sfs_path, sfs_path_pair_tail, sfs_path_tail, surely_invalid,
    Side, Tail,
};
use crate::state;
use crate::state::{err, run, with_client};
use libc::{c_char, c_int, c_uint, gid_t, mode_t, off_t, size_t, ssize_t, uid_t};
use sfs_global::SfsResult;

fn ok(r: SfsResult<()>) -> SfsResult<c_int> {
    r.map(|()| 0)
}

/// `rmdir` as the kernel answers it for the last component: `.` EINVAL,
/// `..` ENOTEMPTY, a symlink named with a trailing `/` ENOTDIR (never the
/// directory it leads to).
fn rmdir_sfs(p: &str, tail: Tail) -> SfsResult<c_int> {
    match tail.dots {
        1 => return Err(err(libc::EINVAL, format!("{p}/.: cannot remove `.`"))),
        2 => return Err(err(libc::ENOTEMPTY, format!("{p}: `..` is not empty"))),
        _ => {}
    }
    if tail.slash && with_client(|c| c.lstat(p))?.kind() == sfs_global::FileKind::Symlink {
        return Err(err(
            libc::ENOTDIR,
            format!("{p}/: a symlink, not a directory"),
        ));
    }
    ok(with_client(|c| c.rmdir(p)))
}

/// `unlink`: a path that names a directory (trailing `/`, `.`, `..`) never
/// removes anything: EISDIR on a directory, ENOTDIR on anything else
/// (a symlink too: `unlink` does not follow it), ENOENT when missing.
fn unlink_sfs(p: &str, tail: Tail) -> SfsResult<c_int> {
    if tail.wants_dir() {
        let md = with_client(|c| c.lstat(p))?;
        let errno = if md.is_dir() {
            libc::EISDIR
        } else {
            libc::ENOTDIR
        };
        return Err(err(
            errno,
            format!("{p}/: unlink of a path that names a directory"),
        ));
    }
    ok(with_client(|c| c.unlink(p)))
}

/// A path that names a directory (trailing `/`, `.`, `..`) cannot be made
/// into anything else: EEXIST when something is there, ENOENT when not.
fn refuse_non_dir_at(p: &str, tail: Tail) -> SfsResult<()> {
    if !tail.wants_dir() {
        return Ok(());
    }
    match with_client(|c| c.lstat(p)) {
        Ok(_) => Err(err(libc::EEXIST, format!("{p}: exists"))),
        Err(_) => Err(err(
            libc::ENOENT,
            format!("{p}/: no directory to create it in"),
        )),
    }
}

/// # Safety
/// `path` NULL or NUL-terminated.
unsafe fn mkdir_hook(dirfd: c_int, path: *const c_char, mode: mode_t) -> Option<c_int> {
    // SAFETY: forwarded contract.
    let (_inside, p, tail) = unsafe { sfs_path_tail(dirfd, path) }?;
    let mode = mode & !umask_value() & 0o7777;
    // `new/` makes a directory; `d/.` or `d/..` name one that is there.
    let tail = Tail {
        slash: false,
        ..tail
    };
    Some(run("mkdir", || {
        refuse_non_dir_at(&p, tail)?;
        ok(with_client(|c| c.mkdir(&p, mode)))
    }))
}

/// # Safety
/// `path` is NULL or a NUL-terminated string: the contract of mkdir(2),
/// whose arguments these are.
pub(crate) unsafe fn sfs_mkdir(path: *const c_char, mode: mode_t) -> c_int {
    // SAFETY: `path` is NULL or NUL-terminated (this function's contract).
    unsafe { mkdir_hook(libc::AT_FDCWD, path, mode) }.unwrap_or_else(|| {
        // SAFETY: the caller's arguments go on unchanged to the next library's `mkdir`,
        // under the contract this function was called with.
        unsafe { real!(mkdir)(path, mode) }
    })
}

/// # Safety
/// `path` is NULL or a NUL-terminated string: the contract of mkdirat(2),
/// whose arguments these are.
pub(crate) unsafe fn sfs_mkdirat(dirfd: c_int, path: *const c_char, mode: mode_t) -> c_int {
    // SAFETY: `path` is NULL or NUL-terminated (this function's contract).
    unsafe { mkdir_hook(dirfd, path, mode) }.unwrap_or_else(|| {
        // SAFETY: the caller's arguments go on unchanged to the next library's `mkdirat`,
        // under the contract this function was called with.
        unsafe { real!(mkdirat)(dirfd, path, mode) }
    })
}

/// `mknod`/`mkfifo`: an entry with a type, the mode less the umask and,
/// for a device, its number.
///
/// # Safety
/// `path` NULL or NUL-terminated.
pub(crate) unsafe fn mknod_hook(
    dirfd: c_int,
    path: *const c_char,
    mode: mode_t,
    dev: libc::dev_t,
    what: &'static str,
) -> Option<c_int> {
    // SAFETY: forwarded contract.
    let (_inside, p, tail) = unsafe { sfs_path_tail(dirfd, path) }?;
    let mode = (mode & libc::S_IFMT) | (mode & !umask_value() & 0o7777);
    Some(run(what, || {
        refuse_non_dir_at(&p, tail)?;
        ok(with_client(|c| c.mknod(&p, mode, dev)))
    }))
}

/// # Safety
/// `path` is NULL or a NUL-terminated string: the contract of mknod(2),
/// whose arguments these are.
pub(crate) unsafe fn sfs_mknod(path: *const c_char, mode: mode_t, dev: libc::dev_t) -> c_int {
    // SAFETY: `path` is NULL or NUL-terminated (this function's contract).
    unsafe { mknod_hook(libc::AT_FDCWD, path, mode, dev, "mknod") }.unwrap_or_else(|| {
        // SAFETY: the caller's arguments go on unchanged to the next library's `mknod`,
        // under the contract this function was called with.
        unsafe { real!(mknod)(path, mode, dev) }
    })
}

/// # Safety
/// `path` is NULL or a NUL-terminated string: the contract of mknodat(2),
/// whose arguments these are.
pub(crate) unsafe fn sfs_mknodat(
    dirfd: c_int,
    path: *const c_char,
    mode: mode_t,
    dev: libc::dev_t,
) -> c_int {
    // SAFETY: `path` is NULL or NUL-terminated (this function's contract).
    unsafe { mknod_hook(dirfd, path, mode, dev, "mknod") }.unwrap_or_else(|| {
        // SAFETY: the caller's arguments go on unchanged to the next library's `mknodat`,
        // under the contract this function was called with.
        unsafe { real!(mknodat)(dirfd, path, mode, dev) }
    })
}

/// # Safety
/// `path` is NULL or a NUL-terminated string: the contract of mkfifo(3),
/// whose arguments these are.
pub(crate) unsafe fn sfs_mkfifo(path: *const c_char, mode: mode_t) -> c_int {
    // SAFETY: `path` is NULL or NUL-terminated (this function's contract).
    unsafe {
        mknod_hook(
            libc::AT_FDCWD,
            path,
            libc::S_IFIFO | (mode & 0o7777),
            0,
            "mkfifo",
        )
    }
    .unwrap_or_else(|| {
        // SAFETY: the caller's arguments go on unchanged to the next library's `mkfifo`,
        // under the contract this function was called with.
        unsafe { real!(mkfifo)(path, mode) }
    })
}

/// # Safety
/// `path` is NULL or a NUL-terminated string: the contract of mkfifoat(3),
/// whose arguments these are.
pub(crate) unsafe fn sfs_mkfifoat(dirfd: c_int, path: *const c_char, mode: mode_t) -> c_int {
    // SAFETY: `path` is NULL or NUL-terminated (this function's contract).
    unsafe { mknod_hook(dirfd, path, libc::S_IFIFO | (mode & 0o7777), 0, "mkfifo") }.unwrap_or_else(
        || {
            // SAFETY: the caller's arguments go on unchanged to the next library's `mkfifoat`,
            // under the contract this function was called with.
            unsafe { real!(mkfifoat)(dirfd, path, mode) }
        },
    )
}

/// # Safety
/// `path` is NULL or a NUL-terminated string: the contract of rmdir(2),
/// whose argument this is.
pub(crate) unsafe fn sfs_rmdir(path: *const c_char) -> c_int {
    // SAFETY: `path` is NULL or NUL-terminated (this function's contract).
    match unsafe { sfs_path_tail(libc::AT_FDCWD, path) } {
        Some((_inside, p, tail)) => run("rmdir", || rmdir_sfs(&p, tail)),
        // SAFETY: the caller's arguments go on unchanged to the next library's `rmdir`,
        // under the contract this function was called with.
        None => unsafe { real!(rmdir)(path) },
    }
}

/// # Safety
/// `path` is NULL or a NUL-terminated string: the contract of unlink(2),
/// whose argument this is.
pub(crate) unsafe fn sfs_unlink(path: *const c_char) -> c_int {
    // SAFETY: `path` is NULL or NUL-terminated (this function's contract).
    match unsafe { sfs_path_tail(libc::AT_FDCWD, path) } {
        Some((_inside, p, tail)) => run("unlink", || unlink_sfs(&p, tail)),
        // SAFETY: the caller's arguments go on unchanged to the next library's `unlink`,
        // under the contract this function was called with.
        None => unsafe { real!(unlink)(path) },
    }
}

// glibc's remove(3) calls its internal unlink/rmdir, which no hook sees.
/// # Safety
/// `path` is NULL or a NUL-terminated string: the contract of remove(3),
/// whose argument this is.
pub(crate) unsafe fn sfs_remove(path: *const c_char) -> c_int {
    // SAFETY: `path` is NULL or NUL-terminated (this function's contract).
    match unsafe { sfs_path_tail(libc::AT_FDCWD, path) } {
        Some((_inside, p, tail)) => run("remove", || match unlink_sfs(&p, tail) {
            Err(e) if e.errno.0 == libc::EISDIR => rmdir_sfs(&p, tail),
            other => other,
        }),
        // SAFETY: the caller's arguments go on unchanged to the next library's `remove`,
        // under the contract this function was called with.
        None => unsafe { real!(remove)(path) },
    }
}

/// # Safety
/// `path` is NULL or a NUL-terminated string: the contract of unlinkat(2),
/// whose arguments these are.
pub(crate) unsafe fn sfs_unlinkat(dirfd: c_int, path: *const c_char, flags: c_int) -> c_int {
    // SAFETY: `path` is NULL or NUL-terminated (this function's contract).
    match unsafe { sfs_path_tail(dirfd, path) } {
        Some((_inside, p, tail)) if flags & libc::AT_REMOVEDIR != 0 => {
            run("rmdir", || rmdir_sfs(&p, tail))
        }
        Some((_inside, p, tail)) => run("unlink", || unlink_sfs(&p, tail)),
        // SAFETY: the caller's arguments go on unchanged to the next library's `unlinkat`,
        // under the contract this function was called with.
        None => unsafe { real!(unlinkat)(dirfd, path, flags) },
    }
}

fn rename_sfs(
    old: Option<(String, Tail)>,
    new: Option<(String, Tail)>,
    flags: c_uint,
) -> SfsResult<c_int> {
    let (Some((old, old_tail)), Some((new, new_tail))) = (old, new) else {
        return Err(err(
            libc::EXDEV,
            "rename between SFS and another file system",
        ));
    };
    // As the kernel: `.` or `..` last is EBUSY; a trailing `/` on either
    // side is allowed only when what moves is a directory (not a symlink
    // to one).
    if old_tail.dots > 0 || new_tail.dots > 0 {
        return Err(err(
            libc::EBUSY,
            format!("rename of {old} to {new}: `.` or `..`"),
        ));
    }
    if (old_tail.slash || new_tail.slash) && !with_client(|c| c.lstat(&old))?.is_dir() {
        return Err(err(
            libc::ENOTDIR,
            format!("rename of {old} to {new}: a trailing `/` names a directory"),
        ));
    }
    if flags & libc::RENAME_EXCHANGE != 0 || flags & libc::RENAME_WHITEOUT != 0 {
        return Err(err(
            libc::EINVAL,
            "RENAME_EXCHANGE/RENAME_WHITEOUT are not supported on SFS",
        ));
    }
    with_client(|c| {
        if flags & libc::RENAME_NOREPLACE != 0 && c.lstat(&new).is_ok() {
            return Err(err(
                libc::EEXIST,
                format!("{new}: exists (RENAME_NOREPLACE)"),
            ));
        }
        c.rename(&old, &new)
    })
    .map(|()| 0)
}

/// # Safety
/// `old` and `new` are each NULL or a NUL-terminated string: the contract
/// of rename(2), whose arguments these are.
pub(crate) unsafe fn sfs_rename(old: *const c_char, new: *const c_char) -> c_int {
    if let Some(answer) =
        // SAFETY: `old` is NULL or NUL-terminated (this function's contract).
        unsafe { second_path_unreadable("rename", libc::AT_FDCWD, old, new, false) }
    {
        return answer;
    }
    // SAFETY: `old` and `new` are each NULL or NUL-terminated (this function's
    // contract).
    match unsafe { sfs_path_pair_tail(libc::AT_FDCWD, old, libc::AT_FDCWD, new) } {
        Some((_inside, a, b)) => run("rename", || rename_sfs(a, b, 0)),
        // SAFETY: the caller's arguments go on unchanged to the next library's `rename`,
        // under the contract this function was called with.
        None => unsafe { real!(rename)(old, new) },
    }
}

/// # Safety
/// `old` and `new` are each NULL or a NUL-terminated string: the contract
/// of renameat(2), whose arguments these are.
pub(crate) unsafe fn sfs_renameat(
    olddirfd: c_int,
    old: *const c_char,
    newdirfd: c_int,
    new: *const c_char,
) -> c_int {
    // SAFETY: `old` is NULL or NUL-terminated (this function's contract).
    if let Some(answer) = unsafe { second_path_unreadable("rename", olddirfd, old, new, false) } {
        return answer;
    }
    // SAFETY: `old` and `new` are each NULL or NUL-terminated (this function's
    // contract).
    match unsafe { sfs_path_pair_tail(olddirfd, old, newdirfd, new) } {
        Some((_inside, a, b)) => run("rename", || rename_sfs(a, b, 0)),
        // SAFETY: the caller's arguments go on unchanged to the next library's `renameat`,
        // under the contract this function was called with.
        None => unsafe { real!(renameat)(olddirfd, old, newdirfd, new) },
    }
}

/// # Safety
/// `old` and `new` are each NULL or a NUL-terminated string: the contract
/// of renameat2(2), whose arguments these are.
pub(crate) unsafe fn sfs_renameat2(
    olddirfd: c_int,
    old: *const c_char,
    newdirfd: c_int,
    new: *const c_char,
    flags: c_uint,
) -> c_int {
    // SAFETY: `old` is NULL or NUL-terminated (this function's contract).
    if let Some(answer) = unsafe { second_path_unreadable("rename", olddirfd, old, new, false) } {
        return answer;
    }
    // SAFETY: `old` and `new` are each NULL or NUL-terminated (this function's
    // contract).
    match unsafe { sfs_path_pair_tail(olddirfd, old, newdirfd, new) } {
        Some((_inside, a, b)) => run("rename", || rename_sfs(a, b, flags)),
        // SAFETY: the caller's arguments go on unchanged to the next library's `renameat2`,
        // under the contract this function was called with.
        None => unsafe { real!(renameat2)(olddirfd, old, newdirfd, new, flags) },
    }
}

/// `link`/`linkat` between two SFS paths; EXDEV when one side is not SFS.
fn link_sfs(old: Side, new: Side, follow: bool) -> SfsResult<c_int> {
    match (old, new) {
        (Some((old, old_tail)), Some((new, new_tail))) => {
            if new_tail.slash {
                // A new name with a trailing '/' would be a directory.
                return Err(match with_client(|c| c.lstat(&new)) {
                    Ok(_) => err(libc::EEXIST, format!("{new}/: exists")),
                    Err(_) => err(libc::ENOENT, format!("{new}/: not a directory name")),
                });
            }
            if old_tail.slash && !with_client(|c| c.stat(&old))?.is_dir() {
                return Err(err(libc::ENOTDIR, format!("{old}/: not a directory")));
            }
            ok(with_client(|c| c.link(&old, &new, follow)))
        }
        _ => Err(err(libc::EXDEV, "link between SFS and another file system")),
    }
}

/// A two-path call (link, rename) whose new path cannot be read (NULL,
/// say) and whose old path is in SFS. The kernel looks the old path up
/// before it reads the new one — all of it for link (`whole`), its parent
/// for rename — so a missing one is that error and otherwise EFAULT.
/// `None`: not such a call.
///
/// # Safety
/// `old` is NULL or NUL-terminated.
unsafe fn second_path_unreadable(
    what: &str,
    dirfd: c_int,
    old: *const c_char,
    new: *const c_char,
    whole: bool,
) -> Option<c_int> {
    if !surely_invalid(new) || surely_invalid(old) {
        return None;
    }
    // SAFETY: forwarded contract.
    let (_inside, old, _) = unsafe { sfs_path_tail(dirfd, old) }?;
    Some(run(what, || {
        if whole {
            with_client(|c| c.lstat(&old))?;
        } else {
            let parent = sfs_global::path::split_parent(&old).map_or("/", |(p, _)| p);
            with_client(|c| c.resolve_directory(parent))?;
        }
        Err::<c_int, _>(err(
            libc::EFAULT,
            format!("{what}: the new path is not in the process's memory"),
        ))
    }))
}

/// # Safety
/// `old` and `new` are each NULL or a NUL-terminated string: the contract
/// of link(2), whose arguments these are.
pub(crate) unsafe fn sfs_link(old: *const c_char, new: *const c_char) -> c_int {
    // SAFETY: `old` is NULL or NUL-terminated (this function's contract).
    if let Some(answer) = unsafe { second_path_unreadable("link", libc::AT_FDCWD, old, new, true) }
    {
        return answer;
    }
    // SAFETY: `old` and `new` are each NULL or NUL-terminated (this function's
    // contract).
    match unsafe { sfs_path_pair_tail(libc::AT_FDCWD, old, libc::AT_FDCWD, new) } {
        Some((_inside, a, b)) => run("link", || link_sfs(a, b, false)),
        // SAFETY: the caller's arguments go on unchanged to the next library's `link`,
        // under the contract this function was called with.
        None => unsafe { real!(link)(old, new) },
    }
}

/// # Safety
/// `old` and `new` are each NULL or a NUL-terminated string: the contract
/// of linkat(2), whose arguments these are.
pub(crate) unsafe fn sfs_linkat(
    olddirfd: c_int,
    old: *const c_char,
    newdirfd: c_int,
    new: *const c_char,
    flags: c_int,
) -> c_int {
    // SAFETY: `old` is NULL or NUL-terminated (this function's contract).
    if let Some(answer) = unsafe { second_path_unreadable("link", olddirfd, old, new, true) } {
        return answer;
    }
    let follow = flags & libc::AT_SYMLINK_FOLLOW != 0;
    // SAFETY: `old` is NULL or NUL-terminated (linkat's contract).
    let empty = unsafe { c_bytes(old) }.is_none_or(|b| b.is_empty());
    if empty && flags & libc::AT_EMPTY_PATH != 0 {
        if let Some(_inside) = sfs_fd(olddirfd) {
            // The file of an SFS descriptor (an O_TMPFILE file, say)
            // gets a name.
            // SAFETY: `new` is NULL or NUL-terminated (linkat's contract).
            let text = unsafe { c_str(new) };
            let b = text.and_then(|text| {
                let sfs = resolve_argument(state::settings()?, newdirfd, &text)?;
                Some((sfs, Tail::of(&text)))
            });
            return run("link", || {
                let a = with_client(|c| c.fd_path(olddirfd))?;
                link_sfs(Some((a, Tail::default())), b, false)
            });
        }
    }
    // SAFETY: `old` and `new` are each NULL or NUL-terminated (this function's
    // contract).
    match unsafe { sfs_path_pair_tail(olddirfd, old, newdirfd, new) } {
        Some((_inside, a, b)) => run("link", || link_sfs(a, b, follow)),
        // SAFETY: the caller's arguments go on unchanged to the next library's `linkat`,
        // under the contract this function was called with.
        None => unsafe { real!(linkat)(olddirfd, old, newdirfd, new, flags) },
    }
}

fn size_arg(len: off_t) -> SfsResult<u64> {
    u64::try_from(len).map_err(|_| err(libc::EINVAL, format!("negative length {len}")))
}

/// # Safety
/// `path` is NULL or a NUL-terminated string: the contract of truncate(2),
/// whose arguments these are.
pub(crate) unsafe fn sfs_truncate(path: *const c_char, len: off_t) -> c_int {
    // SAFETY: `path` is NULL or NUL-terminated (this function's contract).
    match unsafe { sfs_path(libc::AT_FDCWD, path) } {
        Some((_inside, p)) => run("truncate", || {
            let len = size_arg(len)?;
            crate::hooks::io::check_truncate_length(len)?;
            ok(with_client(|c| c.truncate(&p, len)))
        }),
        // SAFETY: the caller's arguments go on unchanged to the next library's `truncate`,
        // under the contract this function was called with.
        None => unsafe { real!(truncate)(path, len) },
    }
}

/// # Safety
/// `path` is NULL or a NUL-terminated string: the contract of chmod(2),
/// whose arguments these are.
pub(crate) unsafe fn sfs_chmod(path: *const c_char, mode: mode_t) -> c_int {
    // SAFETY: `path` is NULL or NUL-terminated (this function's contract).
    match unsafe { sfs_path(libc::AT_FDCWD, path) } {
        Some((_inside, p)) => run("chmod", || ok(with_client(|c| c.chmod(&p, mode)))),
        // SAFETY: the caller's arguments go on unchanged to the next library's `chmod`,
        // under the contract this function was called with.
        None => unsafe { real!(chmod)(path, mode) },
    }
}

/// # Safety
/// None beyond fchmod(2)'s, whose arguments these are: plain values, no
/// pointer.
pub(crate) unsafe fn sfs_fchmod(fd: c_int, mode: mode_t) -> c_int {
    match sfs_fd(fd) {
        Some(_inside) => run("fchmod", || {
            ok(with_client(|c| c.chmod(&c.fd_path(fd)?, mode)))
        }),
        // SAFETY: the caller's arguments go on unchanged to the next library's `fchmod`,
        // under the contract this function was called with.
        None => unsafe { real!(fchmod)(fd, mode) },
    }
}

/// # Safety
/// `path` is NULL or a NUL-terminated string: the contract of fchmodat(2),
/// whose arguments these are.
pub(crate) unsafe fn sfs_fchmodat(
    dirfd: c_int,
    path: *const c_char,
    mode: mode_t,
    flags: c_int,
) -> c_int {
    // SAFETY: `path` is NULL or NUL-terminated (this function's contract).
    match unsafe { sfs_path(dirfd, path) } {
        Some((_inside, p)) => run("chmod", || {
            if flags & libc::AT_SYMLINK_NOFOLLOW != 0 {
                let md = with_client(|c| c.lstat(&p))?;
                if md.kind() == sfs_global::FileKind::Symlink {
                    return Err(err(libc::EOPNOTSUPP, "chmod of a symlink itself"));
                }
            }
            ok(with_client(|c| c.chmod(&p, mode)))
        }),
        // SAFETY: the caller's arguments go on unchanged to the next library's `fchmodat`,
        // under the contract this function was called with.
        None => unsafe { real!(fchmodat)(dirfd, path, mode, flags) },
    }
}

fn id_arg(id: u32) -> Option<u32> {
    (id != u32::MAX).then_some(id)
}

fn chown_sfs(path: &str, uid: uid_t, gid: gid_t, follow: bool) -> SfsResult<c_int> {
    ok(with_client(|c| {
        if follow {
            c.chown(path, id_arg(uid), id_arg(gid))
        } else {
            c.lchown(path, id_arg(uid), id_arg(gid))
        }
    }))
}

/// # Safety
/// `path` is NULL or a NUL-terminated string: the contract of chown(2),
/// whose arguments these are.
pub(crate) unsafe fn sfs_chown(path: *const c_char, uid: uid_t, gid: gid_t) -> c_int {
    // SAFETY: `path` is NULL or NUL-terminated (this function's contract).
    match unsafe { sfs_path(libc::AT_FDCWD, path) } {
        Some((_inside, p)) => run("chown", || chown_sfs(&p, uid, gid, true)),
        // SAFETY: the caller's arguments go on unchanged to the next library's `chown`,
        // under the contract this function was called with.
        None => unsafe { real!(chown)(path, uid, gid) },
    }
}

/// # Safety
/// `path` is NULL or a NUL-terminated string: the contract of lchown(2),
/// whose arguments these are.
pub(crate) unsafe fn sfs_lchown(path: *const c_char, uid: uid_t, gid: gid_t) -> c_int {
    // SAFETY: `path` is NULL or NUL-terminated (this function's contract).
    match unsafe { sfs_path(libc::AT_FDCWD, path) } {
        Some((_inside, p)) => run("lchown", || chown_sfs(&p, uid, gid, false)),
        // SAFETY: the caller's arguments go on unchanged to the next library's `lchown`,
        // under the contract this function was called with.
        None => unsafe { real!(lchown)(path, uid, gid) },
    }
}

/// # Safety
/// None beyond fchown(2)'s, whose arguments these are: plain values, no
/// pointer.
pub(crate) unsafe fn sfs_fchown(fd: c_int, uid: uid_t, gid: gid_t) -> c_int {
    match sfs_fd(fd) {
        Some(_inside) => run("fchown", || {
            chown_sfs(&with_client(|c| c.fd_path(fd))?, uid, gid, true)
        }),
        // SAFETY: the caller's arguments go on unchanged to the next library's `fchown`,
        // under the contract this function was called with.
        None => unsafe { real!(fchown)(fd, uid, gid) },
    }
}

/// # Safety
/// `path` is NULL or a NUL-terminated string: the contract of fchownat(2),
/// whose arguments these are.
pub(crate) unsafe fn sfs_fchownat(
    dirfd: c_int,
    path: *const c_char,
    uid: uid_t,
    gid: gid_t,
    flags: c_int,
) -> c_int {
    // SAFETY: `path` is NULL or NUL-terminated (this function's contract).
    match unsafe { crate::hooks::stat::at_target(dirfd, path, flags) } {
        Some((_inside, crate::hooks::stat::Target::Path { path: p, follow })) => {
            run("chown", || chown_sfs(&p, uid, gid, follow))
        }
        Some((_inside, crate::hooks::stat::Target::Fd(fd))) => run("fchown", || {
            chown_sfs(&with_client(|c| c.fd_path(fd))?, uid, gid, true)
        }),
        // SAFETY: the caller's arguments go on unchanged to the next library's `fchownat`,
        // under the contract this function was called with.
        None => unsafe { real!(fchownat)(dirfd, path, uid, gid, flags) },
    }
}

/// # Safety
/// `target` NULL or NUL-terminated.
unsafe fn symlink_sfs(target: *const c_char, linkpath: &str) -> SfsResult<c_int> {
    if crate::paths::surely_invalid(target) {
        return Err(err(
            libc::EFAULT,
            "symlink target is not in the process's memory",
        ));
    }
    // SAFETY: forwarded contract.
    let target = unsafe { c_str(target) }.ok_or_else(|| {
        err(
            libc::EFAULT,
            "symlink target is not in the process's memory",
        )
    })?;
    ok(with_client(|c| c.symlink(&target, linkpath)))
}

/// # Safety
/// `target` and `linkpath` are each NULL or a NUL-terminated string: the
/// contract of symlink(2), whose arguments these are.
pub(crate) unsafe fn sfs_symlink(target: *const c_char, linkpath: *const c_char) -> c_int {
    // SAFETY: `linkpath` is NULL or NUL-terminated (this function's contract).
    match unsafe { sfs_path_tail(libc::AT_FDCWD, linkpath) } {
        Some((_inside, p, tail)) => run("symlink", || {
            refuse_non_dir_at(&p, tail)?;
            // SAFETY: `target` is NULL or NUL-terminated (this function's contract).
            unsafe { symlink_sfs(target, &p) }
        }),
        // SAFETY: the caller's arguments go on unchanged to the next library's `symlink`,
        // under the contract this function was called with.
        None => unsafe { real!(symlink)(target, linkpath) },
    }
}

/// # Safety
/// `target` and `linkpath` are each NULL or a NUL-terminated string: the
/// contract of symlinkat(2), whose arguments these are.
pub(crate) unsafe fn sfs_symlinkat(
    target: *const c_char,
    dirfd: c_int,
    linkpath: *const c_char,
) -> c_int {
    // SAFETY: `linkpath` is NULL or NUL-terminated (this function's contract).
    match unsafe { sfs_path_tail(dirfd, linkpath) } {
        Some((_inside, p, tail)) => run("symlink", || {
            refuse_non_dir_at(&p, tail)?;
            // SAFETY: `target` is NULL or NUL-terminated (this function's contract).
            unsafe { symlink_sfs(target, &p) }
        }),
        // SAFETY: the caller's arguments go on unchanged to the next library's `symlinkat`,
        // under the contract this function was called with.
        None => unsafe { real!(symlinkat)(target, dirfd, linkpath) },
    }
}

/// readlink(2): copies at most `len` bytes, no NUL.
///
/// # Safety
/// `buf` valid for `len` bytes.
unsafe fn readlink_sfs(path: &str, buf: *mut c_char, len: size_t) -> SfsResult<ssize_t> {
    let target = with_client(|c| c.readlink(path))?;
    let target = sfs_global::path::unescape(&target);
    let n = target.len().min(len);
    if n > 0 {
        // SAFETY: `buf` is valid for `len` >= `n` bytes.
        unsafe { std::ptr::copy_nonoverlapping(target.as_ptr(), buf.cast::<u8>(), n) };
    }
    Ok(n as ssize_t)
}

/// # Safety
/// `path` is NULL or a NUL-terminated string and `buf` is valid for writing
/// `len` bytes: the contract of readlink(2), whose arguments these are.
pub(crate) unsafe fn sfs_readlink(path: *const c_char, buf: *mut c_char, len: size_t) -> ssize_t {
    // SAFETY: `path` is NULL or NUL-terminated (this function's contract).
    match unsafe { sfs_path(libc::AT_FDCWD, path) } {
        Some((_inside, p)) => run("readlink", || {
            // SAFETY: `buf` is valid for writing `len` bytes (this function's contract).
            unsafe { readlink_sfs(&p, buf, len) }
        }),
        // SAFETY: the caller's arguments go on unchanged to the next library's `readlink`,
        // under the contract this function was called with.
        None => unsafe { real!(readlink)(path, buf, len) },
    }
}

/// # Safety
/// `path` is NULL or a NUL-terminated string and `buf` is valid for writing
/// `len` bytes: the contract of readlinkat(2), whose arguments these are.
pub(crate) unsafe fn sfs_readlinkat(
    dirfd: c_int,
    path: *const c_char,
    buf: *mut c_char,
    len: size_t,
) -> ssize_t {
    // SAFETY: `path` is NULL or NUL-terminated (this function's contract).
    match unsafe { sfs_path(dirfd, path) } {
        Some((_inside, p)) => run("readlink", || {
            // SAFETY: `buf` is valid for writing `len` bytes (this function's contract).
            unsafe { readlink_sfs(&p, buf, len) }
        }),
        // SAFETY: the caller's arguments go on unchanged to the next library's
        // `readlinkat`, under the contract this function was called with.
        None => unsafe { real!(readlinkat)(dirfd, path, buf, len) },
    }
}

// Fortified variants: a length beyond the caller's buffer goes to glibc's
// own, which aborts as it must.
/// # Safety
/// `path` is NULL or a NUL-terminated string and `buf` is valid for writing
/// `buflen` bytes (the size of the object it points to): the contract of
/// `__readlink_chk`, glibc's fortified readlink(2), whose arguments these are.
pub(crate) unsafe fn sfs_readlink_chk(
    path: *const c_char,
    buf: *mut c_char,
    len: size_t,
    buflen: size_t,
) -> ssize_t {
    if len > buflen {
        // SAFETY: the caller's arguments go on unchanged to the next library's
        // `__readlink_chk`, under the contract this function was called with.
        return unsafe { real!(__readlink_chk)(path, buf, len, buflen) };
    }
    // SAFETY: `path` is NULL or NUL-terminated (this function's contract).
    match unsafe { sfs_path(libc::AT_FDCWD, path) } {
        Some((_inside, p)) => run("readlink", || {
            // SAFETY: `buf` is valid for writing `buflen` bytes (this function's contract),
            // and `len <= buflen` (checked above).
            unsafe { readlink_sfs(&p, buf, len) }
        }),
        // SAFETY: the caller's arguments go on unchanged to the next library's
        // `__readlink_chk`, under the contract this function was called with.
        None => unsafe { real!(__readlink_chk)(path, buf, len, buflen) },
    }
}

/// # Safety
/// `path` is NULL or a NUL-terminated string and `buf` is valid for writing
/// `buflen` bytes (the size of the object it points to): the contract of
/// `__readlinkat_chk`, glibc's fortified readlinkat(2), whose arguments these
/// are.
pub(crate) unsafe fn sfs_readlinkat_chk(
    dirfd: c_int,
    path: *const c_char,
    buf: *mut c_char,
    len: size_t,
    buflen: size_t,
) -> ssize_t {
    if len > buflen {
        // SAFETY: the caller's arguments go on unchanged to the next library's
        // `__readlinkat_chk`, under the contract this function was called with.
        return unsafe { real!(__readlinkat_chk)(dirfd, path, buf, len, buflen) };
    }
    // SAFETY: `path` is NULL or NUL-terminated (this function's contract).
    match unsafe { sfs_path(dirfd, path) } {
        Some((_inside, p)) => run("readlink", || {
            // SAFETY: `buf` is valid for writing `buflen` bytes (this function's contract),
            // and `len <= buflen` (checked above).
            unsafe { readlink_sfs(&p, buf, len) }
        }),
        // SAFETY: the caller's arguments go on unchanged to the next library's
        // `__readlinkat_chk`, under the contract this function was called with.
        None => unsafe { real!(__readlinkat_chk)(dirfd, path, buf, len, buflen) },
    }
}

fn now_ns() -> i64 {
    std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .map_or(0, |d| d.as_nanos() as i64)
}

/// What a utimens-family call sets.
pub(crate) enum Times {
    /// Both times to the current time (NULL times, or two `UTIME_NOW`):
    /// the owner or anyone with write permission may (Client::touch).
    Now,
    /// (atime, mtime) in ns; `None` leaves one as it is. Owner or root.
    Set(Option<i64>, Option<i64>),
}

/// The times of a `timespec[2]` (NULL = both now).
///
/// # Safety
/// `times` NULL or valid for two timespecs.
unsafe fn times_from_timespec(times: *const libc::timespec) -> SfsResult<Times> {
    if times.is_null() {
        return Ok(Times::Now);
    }
    // SAFETY: per the contract above.
    let ts = unsafe { std::slice::from_raw_parts(times, 2) };
    if ts.iter().all(|t| t.tv_nsec == libc::UTIME_NOW) {
        return Ok(Times::Now);
    }
    let one = |t: &libc::timespec| -> SfsResult<Option<i64>> {
        match t.tv_nsec {
            libc::UTIME_OMIT => Ok(None),
            libc::UTIME_NOW => Ok(Some(now_ns())),
            ns if (0..1_000_000_000).contains(&ns) => Ok(Some(t.tv_sec * 1_000_000_000 + ns)),
            _ => Err(err(libc::EINVAL, "tv_nsec out of range")),
        }
    };
    Ok(Times::Set(one(&ts[0])?, one(&ts[1])?))
}

/// # Safety
/// `times` NULL or valid for two timevals.
pub(crate) unsafe fn times_from_timeval(times: *const libc::timeval) -> SfsResult<Times> {
    if times.is_null() {
        return Ok(Times::Now);
    }
    // SAFETY: per the contract above.
    let tv = unsafe { std::slice::from_raw_parts(times, 2) };
    let one = |t: &libc::timeval| Some(t.tv_sec * 1_000_000_000 + t.tv_usec * 1000);
    Ok(Times::Set(one(&tv[0]), one(&tv[1])))
}

pub(crate) fn utimens_sfs(path: &str, times: Times, follow: bool) -> SfsResult<c_int> {
    ok(with_client(|c| match times {
        Times::Now => c.touch(path, follow),
        Times::Set(atime, mtime) if follow => c.utimens(path, atime, mtime),
        Times::Set(atime, mtime) => c.lutimens(path, atime, mtime),
    }))
}

/// # Safety
/// `path` is NULL or a NUL-terminated string and `times` is NULL or valid
/// for reading two `struct timespec`: the contract of utimensat(2), whose
/// arguments these are.
pub(crate) unsafe fn sfs_utimensat(
    dirfd: c_int,
    path: *const c_char,
    times: *const libc::timespec,
    flags: c_int,
) -> c_int {
    // A NULL path means the descriptor itself (what futimens does).
    if path.is_null() && crate::descriptors::SFS_FDS.contains(dirfd) {
        if let Some(_inside) = sfs_fd(dirfd) {
            return run("futimens", || {
                utimens_sfs(
                    &with_client(|c| c.fd_path(dirfd))?,
                    // SAFETY: `times` is NULL or valid for reading two timespecs (this function's
                    // contract).
                    unsafe { times_from_timespec(times) }?,
                    true,
                )
            });
        }
    }
    // SAFETY: `path` is NULL or NUL-terminated (this function's contract).
    match unsafe { crate::hooks::stat::at_target(dirfd, path, flags) } {
        Some((_inside, crate::hooks::stat::Target::Path { path: p, follow })) => {
            run("utimensat", || {
                // SAFETY: `times` is NULL or valid for reading two timespecs (this function's
                // contract).
                utimens_sfs(&p, unsafe { times_from_timespec(times) }?, follow)
            })
        }
        Some((_inside, crate::hooks::stat::Target::Fd(fd))) => run("utimensat", || {
            utimens_sfs(
                &with_client(|c| c.fd_path(fd))?,
                // SAFETY: `times` is NULL or valid for reading two timespecs (this function's
                // contract).
                unsafe { times_from_timespec(times) }?,
                true,
            )
        }),
        // SAFETY: the caller's arguments go on unchanged to the next library's `utimensat`,
        // under the contract this function was called with.
        None => unsafe { real!(utimensat)(dirfd, path, times, flags) },
    }
}

/// # Safety
/// `times` is NULL or valid for reading two `struct timespec`: the contract
/// of futimens(3), whose arguments these are.
pub(crate) unsafe fn sfs_futimens(fd: c_int, times: *const libc::timespec) -> c_int {
    match sfs_fd(fd) {
        Some(_inside) => run("futimens", || {
            utimens_sfs(
                &with_client(|c| c.fd_path(fd))?,
                // SAFETY: `times` is NULL or valid for reading two timespecs (this function's
                // contract).
                unsafe { times_from_timespec(times) }?,
                true,
            )
        }),
        // SAFETY: the caller's arguments go on unchanged to the next library's `futimens`,
        // under the contract this function was called with.
        None => unsafe { real!(futimens)(fd, times) },
    }
}

/// # Safety
/// `path` is NULL or a NUL-terminated string and `times` is NULL or valid
/// for reading two `struct timeval`: the contract of utimes(2), whose
/// arguments these are.
pub(crate) unsafe fn sfs_utimes(path: *const c_char, times: *const libc::timeval) -> c_int {
    // SAFETY: `path` is NULL or NUL-terminated (this function's contract).
    match unsafe { sfs_path(libc::AT_FDCWD, path) } {
        Some((_inside, p)) => run("utimes", || {
            // SAFETY: `times` is NULL or valid for reading two timevals (this function's
            // contract).
            utimens_sfs(&p, unsafe { times_from_timeval(times) }?, true)
        }),
        // SAFETY: the caller's arguments go on unchanged to the next library's `utimes`,
        // under the contract this function was called with.
        None => unsafe { real!(utimes)(path, times) },
    }
}

/// # Safety
/// `path` is NULL or a NUL-terminated string and `times` is NULL or valid
/// for reading two `struct timeval`: the contract of lutimes(3), whose
/// arguments these are.
pub(crate) unsafe fn sfs_lutimes(path: *const c_char, times: *const libc::timeval) -> c_int {
    // SAFETY: `path` is NULL or NUL-terminated (this function's contract).
    match unsafe { sfs_path(libc::AT_FDCWD, path) } {
        Some((_inside, p)) => run("lutimes", || {
            // SAFETY: `times` is NULL or valid for reading two timevals (this function's
            // contract).
            utimens_sfs(&p, unsafe { times_from_timeval(times) }?, false)
        }),
        // SAFETY: the caller's arguments go on unchanged to the next library's `lutimes`,
        // under the contract this function was called with.
        None => unsafe { real!(lutimes)(path, times) },
    }
}

/// # Safety
/// `times` is NULL or valid for reading two `struct timeval`: the contract
/// of futimes(3), whose arguments these are.
pub(crate) unsafe fn sfs_futimes(fd: c_int, times: *const libc::timeval) -> c_int {
    match sfs_fd(fd) {
        Some(_inside) => run("futimes", || {
            utimens_sfs(
                &with_client(|c| c.fd_path(fd))?,
                // SAFETY: `times` is NULL or valid for reading two timevals (this function's
                // contract).
                unsafe { times_from_timeval(times) }?,
                true,
            )
        }),
        // SAFETY: the caller's arguments go on unchanged to the next library's `futimes`,
        // under the contract this function was called with.
        None => unsafe { real!(futimes)(fd, times) },
    }
}

/// # Safety
/// `path` is NULL or a NUL-terminated string and `times` is NULL or valid
/// for reading a `struct utimbuf`: the contract of utime(2), whose arguments
/// these are.
pub(crate) unsafe fn sfs_utime(path: *const c_char, times: *const libc::utimbuf) -> c_int {
    // SAFETY: `path` is NULL or NUL-terminated (this function's contract).
    match unsafe { sfs_path(libc::AT_FDCWD, path) } {
        Some((_inside, p)) => run("utime", || {
            let t = if times.is_null() {
                Times::Now
            } else {
                // SAFETY: `times` is not NULL (checked above), so valid for reading a
                // `struct utimbuf` (this function's contract).
                let t = unsafe { &*times };
                Times::Set(
                    Some(t.actime * 1_000_000_000),
                    Some(t.modtime * 1_000_000_000),
                )
            };
            utimens_sfs(&p, t, true)
        }),
        // SAFETY: the caller's arguments go on unchanged to the next library's `utime`,
        // under the contract this function was called with.
        None => unsafe { real!(utime)(path, times) },
    }
}
