//! Directory streams on SFS directories: opendir/fdopendir/readdir(64)/
//! readdir_r/closedir/rewinddir/telldir/seekdir/dirfd, scandir(64), and
//! getdents64 on an SFS directory descriptor.
//!
//! An SFS `DIR*` is a shim-owned object (glibc's `DIR` is opaque, so no
//! program looks inside), registered so that the hooks tell it apart from
//! glibc's streams. Its entries ([`Listing`]: `.` and `..` first, then the
//! directory's) are fetched a page at a time as readdir reaches them, so a
//! directory of millions of entries costs one page of memory; positions
//! (telldir/seekdir, getdents offsets) are entry indexes, and going back
//! before the page held lists the directory again from the start. The
//! returned `dirent` lives in the stream until the next readdir or
//! closedir.

use crate::descriptors::sfs_fd;
use crate::descriptors::Records;
use crate::hooks::fd::{close_inside, forget};
use crate::hooks::open::open_sfs;
use crate::listing::Listing;
use crate::paths::sfs_path;
use crate::state::{self, err, run, with_client};
use libc::{c_char, c_int, c_long, c_void, dirent, dirent64, size_t, ssize_t, DIR};
use sfs_global::SfsResult;
use std::collections::HashSet;
use std::sync::atomic::{AtomicUsize, Ordering};
use std::sync::Mutex;

const _: () = assert!(std::mem::size_of::<dirent>() == std::mem::size_of::<dirent64>());

struct ShimDir {
    fd: c_int,
    listing: Listing,
    pos: usize,
    current: dirent64,
}

static DIRS: Mutex<Option<HashSet<usize>>> = Mutex::new(None);
static DIRS_OPEN: AtomicUsize = AtomicUsize::new(0);

fn is_shim_dir(dir: *mut DIR) -> bool {
    if DIRS_OPEN.load(Ordering::Acquire) == 0 || dir.is_null() {
        return false;
    }
    DIRS.lock()
        .unwrap_or_else(|p| p.into_inner())
        .as_ref()
        .is_some_and(|s| s.contains(&(dir as usize)))
}

/// The shim's directory behind a registered `DIR*`.
///
/// # Safety
/// `dir` was returned by [`new_stream`] and not yet closed; the caller uses
/// it from one thread at a time (as POSIX requires of a DIR).
unsafe fn shim_dir<'a>(dir: *mut DIR) -> &'a mut ShimDir {
    // SAFETY: per the contract above.
    unsafe { &mut *dir.cast::<ShimDir>() }
}

/// A `DIR*` over SFS descriptor `fd` (which the stream then owns).
fn new_stream(fd: c_int) -> SfsResult<*mut DIR> {
    let path = with_client(|c| {
        if !c.fd_is_dir(fd)? {
            return Err(err(libc::ENOTDIR, "fdopendir of a non-directory"));
        }
        c.fd_path(fd)
    })?;
    let listing = Listing::open(&path)?;
    let dir = Box::into_raw(Box::new(ShimDir {
        fd,
        listing,
        pos: 0,
        // SAFETY: all-zero is a valid dirent64.
        current: unsafe { std::mem::zeroed() },
    }));
    DIRS.lock()
        .unwrap_or_else(|p| p.into_inner())
        .get_or_insert_with(HashSet::new)
        .insert(dir as usize);
    DIRS_OPEN.fetch_add(1, Ordering::AcqRel);
    Ok(dir.cast())
}

/// # Safety
/// `path` is NULL or a NUL-terminated string: the contract of opendir(3),
/// whose argument this is.
pub(crate) unsafe fn sfs_opendir(path: *const c_char) -> *mut DIR {
    // SAFETY: `path` is NULL or NUL-terminated (this function's contract).
    match unsafe { sfs_path(libc::AT_FDCWD, path) } {
        Some((_inside, p)) => run("opendir", || {
            let fd = open_sfs(&p, libc::O_RDONLY | libc::O_DIRECTORY | libc::O_CLOEXEC, 0)?;
            new_stream(fd).inspect_err(|_| close_inside(fd))
        }),
        // SAFETY: the caller's argument goes on unchanged to the next
        // library's `opendir`, under the contract this function was called
        // with.
        None => unsafe { real!(opendir)(path) },
    }
}

/// # Safety
/// None beyond fdopendir(3)'s: its argument is a plain integer.
pub(crate) unsafe fn sfs_fdopendir(fd: c_int) -> *mut DIR {
    match sfs_fd(fd) {
        Some(_inside) => run("fdopendir", || new_stream(fd)),
        // SAFETY: the caller's argument goes on unchanged to the next
        // library's `fdopendir`, under the contract this function was called
        // with.
        None => unsafe { real!(fdopendir)(fd) },
    }
}

/// The next entry of a shim stream, in its `dirent64` slot, or NULL (at
/// the end, or with errno set when the next page cannot be fetched).
///
/// # Safety
/// As [`shim_dir`]: `dir` is a shim stream ([`is_shim_dir`]) not yet
/// closed, used from one thread at a time.
unsafe fn next_entry(dir: *mut DIR) -> *mut dirent64 {
    // SAFETY: registered stream (checked by the caller).
    let d = unsafe { shim_dir(dir) };
    let Some(_inside) = state::enter() else {
        return std::ptr::null_mut();
    };
    // readdir leaves errno alone unless it fails (programs set it to 0 and
    // look at it after the NULL of the end); fetching a page may touch it.
    let saved_errno = state::errno();
    let fetched = d.listing.entry(d.pos);
    state::set_errno(saved_errno);
    let e = match fetched {
        Ok(Some(e)) => e,
        Ok(None) => return std::ptr::null_mut(),
        Err(e) => {
            state::set_errno(e.errno.0);
            return std::ptr::null_mut();
        }
    };
    d.pos += 1;
    let name = e.name.as_bytes_with_nul();
    let out = &mut d.current;
    out.d_ino = e.ino;
    out.d_off = d.pos as i64;
    out.d_type = e.kind;
    let n = name.len().min(out.d_name.len());
    for (dst, src) in out.d_name[..n].iter_mut().zip(name) {
        *dst = *src as c_char;
    }
    out.d_name[out.d_name.len() - 1] = 0;
    out.d_reclen = std::mem::size_of::<dirent64>() as u16;
    out
}

/// # Safety
/// `dir` is a stream opendir/fdopendir returned, not yet closed, and not
/// used by another thread during the call: the contract of readdir(3), whose
/// argument this is.
pub(crate) unsafe fn sfs_readdir(dir: *mut DIR) -> *mut dirent {
    if is_shim_dir(dir) {
        // SAFETY: `dir` is registered, so a shim stream not yet closed, and
        // the caller does not share it during the call (this function's
        // contract).
        unsafe { next_entry(dir) }.cast()
    } else {
        // SAFETY: the caller's argument goes on unchanged to the next
        // library's `readdir`, under the contract this function was called
        // with.
        unsafe { real!(readdir)(dir) }
    }
}

/// # Safety
/// `dir` is a stream opendir/fdopendir returned, not yet closed, and not
/// used by another thread during the call; `entry` is valid for writing a
/// `struct dirent` and `result` for writing a pointer: the contract of
/// readdir_r(3), whose arguments these are.
pub(crate) unsafe fn sfs_readdir_r(
    dir: *mut DIR,
    entry: *mut dirent,
    result: *mut *mut dirent,
) -> c_int {
    if !is_shim_dir(dir) {
        // SAFETY: the caller's arguments go on unchanged to the next
        // library's `readdir_r`, under the contract this function was called
        // with.
        return unsafe { real!(readdir_r)(dir, entry, result) };
    }
    // SAFETY: `dir` is registered, so a shim stream not yet closed, and the
    // caller does not share it during the call (this function's contract).
    let next = unsafe { next_entry(dir) };
    if next.is_null() {
        // SAFETY: `result` is valid for writing a pointer (this function's
        // contract).
        unsafe { *result = std::ptr::null_mut() };
    } else {
        // SAFETY: `next` is the stream's own `dirent64` slot (`dirent` has
        // its size and layout on LP64 Linux, asserted at the top), not the
        // caller's `entry`, which is valid for writing one entry, and
        // `result` for writing a pointer (this function's contract).
        unsafe {
            std::ptr::copy_nonoverlapping(next.cast::<dirent>(), entry, 1);
            *result = entry;
        }
    }
    0
}

/// # Safety
/// `dir` is a stream opendir/fdopendir returned, not yet closed, and not
/// used by another thread during or after the call: the contract of
/// closedir(3), whose argument this is.
pub(crate) unsafe fn sfs_closedir(dir: *mut DIR) -> c_int {
    if !is_shim_dir(dir) {
        // SAFETY: the caller's argument goes on unchanged to the next
        // library's `closedir`, under the contract this function was called
        // with.
        return unsafe { real!(closedir)(dir) };
    }
    DIRS.lock()
        .unwrap_or_else(|p| p.into_inner())
        .as_mut()
        .map(|s| s.remove(&(dir as usize)));
    DIRS_OPEN.fetch_sub(1, Ordering::AcqRel);
    // SAFETY: `dir` was registered, so it is the `Box<ShimDir>` new_stream
    // leaked, not yet freed (closedir unregisters before freeing, and the
    // caller closes a stream once and uses it no more: this function's
    // contract).
    let d = unsafe { Box::from_raw(dir.cast::<ShimDir>()) };
    if let Some(_inside) = sfs_fd(d.fd) {
        forget(d.fd);
    }
    crate::descriptors::release_fd(d.fd);
    0
}

/// # Safety
/// `dir` is a stream opendir/fdopendir returned, not yet closed, and not
/// used by another thread during the call: the contract of rewinddir(3),
/// whose argument this is.
pub(crate) unsafe fn sfs_rewinddir(dir: *mut DIR) {
    if !is_shim_dir(dir) {
        // SAFETY: the caller's argument goes on unchanged to the next
        // library's `rewinddir`, under the contract this function was called
        // with.
        return unsafe { real!(rewinddir)(dir) };
    }
    // SAFETY: `dir` is registered, so a shim stream not yet closed, and the
    // caller does not share it during the call (this function's contract).
    let d = unsafe { shim_dir(dir) };
    d.pos = 0;
    if let Some(_inside) = state::enter() {
        // Entries made or removed since are seen after a rewind.
        if let Ok(fresh) = Listing::open(&d.listing.path) {
            d.listing = fresh;
        }
    }
}

/// # Safety
/// `dir` is a stream opendir/fdopendir returned, not yet closed, and not
/// used by another thread during the call: the contract of telldir(3),
/// whose argument this is.
pub(crate) unsafe fn sfs_telldir(dir: *mut DIR) -> c_long {
    if is_shim_dir(dir) {
        // SAFETY: `dir` is registered, so a shim stream not yet closed, and
        // the caller does not share it during the call (this function's
        // contract).
        unsafe { shim_dir(dir) }.pos as c_long
    } else {
        // SAFETY: the caller's argument goes on unchanged to the next
        // library's `telldir`, under the contract this function was called
        // with.
        unsafe { real!(telldir)(dir) }
    }
}

/// # Safety
/// `dir` is a stream opendir/fdopendir returned, not yet closed, and not
/// used by another thread during the call: the contract of seekdir(3),
/// whose arguments these are.
pub(crate) unsafe fn sfs_seekdir(dir: *mut DIR, pos: c_long) {
    if is_shim_dir(dir) {
        // SAFETY: `dir` is registered, so a shim stream not yet closed, and
        // the caller does not share it during the call (this function's
        // contract).
        unsafe { shim_dir(dir) }.pos = pos.max(0) as usize
    } else {
        // SAFETY: the caller's arguments go on unchanged to the next
        // library's `seekdir`, under the contract this function was called
        // with.
        unsafe { real!(seekdir)(dir, pos) }
    }
}

/// # Safety
/// `dir` is a stream opendir/fdopendir returned, not yet closed, and not
/// used by another thread during the call: the contract of dirfd(3), whose
/// argument this is.
pub(crate) unsafe fn sfs_dirfd(dir: *mut DIR) -> c_int {
    if is_shim_dir(dir) {
        // SAFETY: `dir` is registered, so a shim stream not yet closed, and
        // the caller does not share it during the call (this function's
        // contract).
        unsafe { shim_dir(dir) }.fd
    } else {
        // SAFETY: the caller's argument goes on unchanged to the next
        // library's `dirfd`, under the contract this function was called
        // with.
        unsafe { real!(dirfd)(dir) }
    }
}

pub(crate) type Filter = Option<unsafe extern "C" fn(*const dirent) -> c_int>;
pub(crate) type Compare =
    Option<unsafe extern "C" fn(*mut *const dirent, *mut *const dirent) -> c_int>;

/// scandir(3) on an SFS directory: malloc'ed entries, as glibc's.
///
/// # Safety
/// `namelist` is valid for writing a pointer; `filter` and `compare`, when
/// set, are functions of scandir's types that may be called with the
/// entries (scandir(3)'s contract for them).
pub(crate) unsafe fn scandir_sfs(
    path: &str,
    namelist: *mut *mut *mut dirent,
    filter: Filter,
    compare: Compare,
) -> SfsResult<c_int> {
    let mut listing = Listing::open(path)?;
    let mut out: Vec<*mut dirent> = Vec::new();
    // What a failure half-way gives back.
    let free_all = |out: Vec<*mut dirent>| {
        for p in out {
            // SAFETY: each `p` is a calloc'ed entry not yet freed.
            unsafe { libc::free(p.cast()) };
        }
    };
    for index in 0.. {
        let e = match listing.entry(index) {
            Ok(Some(e)) => e,
            Ok(None) => break,
            Err(e) => {
                free_all(out);
                return Err(e);
            }
        };
        // SAFETY: calloc has no precondition; its NULL is checked below.
        let d = unsafe { libc::calloc(1, std::mem::size_of::<dirent>()) }.cast::<dirent>();
        if d.is_null() {
            free_all(out);
            return Err(err(libc::ENOMEM, "scandir"));
        }
        // SAFETY: `d` is a non-NULL, zeroed allocation of one `dirent`
        // (checked above).
        unsafe {
            (*d).d_ino = e.ino;
            (*d).d_type = e.kind;
            (*d).d_reclen = std::mem::size_of::<dirent>() as u16;
        }
        let name = e.name.as_bytes();
        let n = name.len().min(255);
        // SAFETY: `d` is a non-NULL allocation of one `dirent` (checked
        // above): at most 255 name bytes go into its 256-byte `d_name`,
        // whose last byte stays calloc's NUL; `name` is not in it.
        unsafe {
            std::ptr::copy_nonoverlapping(name.as_ptr(), (*d).d_name.as_mut_ptr().cast::<u8>(), n)
        };
        if let Some(f) = filter {
            // SAFETY: `f` is the caller's filter of scandir's type (this
            // function's contract), given a complete, NUL-terminated entry.
            if state::as_program(|| unsafe { f(d) }) == 0 {
                // SAFETY: `d` is calloc'ed, not yet freed, and not kept.
                unsafe { libc::free(d.cast()) };
                continue;
            }
        }
        out.push(d);
    }
    // SAFETY: malloc has no precondition; its NULL is checked below.
    let list = unsafe { libc::malloc(out.len().max(1) * std::mem::size_of::<*mut dirent>()) }
        .cast::<*mut dirent>();
    if list.is_null() {
        free_all(out);
        return Err(err(libc::ENOMEM, "scandir"));
    }
    // SAFETY: `list` is a non-NULL allocation with room for `out.len()`
    // pointers (at least one), distinct from `out`'s buffer.
    unsafe { std::ptr::copy_nonoverlapping(out.as_ptr(), list, out.len()) };
    if let Some(cmp) = compare {
        // SAFETY: qsort's comparator receives pointers to elements, which are
        // `*mut dirent`; scandir's comparator takes `const struct dirent **`.
        // Both are C functions of two pointers returning int: one ABI.
        let cmp: unsafe extern "C" fn(*const c_void, *const c_void) -> c_int =
            unsafe { std::mem::transmute(cmp) };
        // SAFETY: `list` holds `out.len()` initialized elements of the size
        // given; `cmp` compares two of them (pointers to entries), as the
        // caller's comparator takes them (this function's contract).
        state::as_program(|| unsafe {
            libc::qsort(
                list.cast(),
                out.len(),
                std::mem::size_of::<*mut dirent>(),
                Some(cmp),
            )
        });
    }
    // SAFETY: `namelist` is valid for writing a pointer (this function's
    // contract).
    unsafe { *namelist = list };
    Ok(out.len() as c_int)
}

/// # Safety
/// `path` is NULL or a NUL-terminated string, `namelist` is valid for
/// writing a pointer, and `filter` and `compare`, when set, are functions of
/// scandir's types that may be called with the entries: the contract of
/// scandir(3), whose arguments these are.
pub(crate) unsafe fn sfs_scandir(
    path: *const c_char,
    namelist: *mut *mut *mut dirent,
    filter: Filter,
    compare: Compare,
) -> c_int {
    // SAFETY: `path` is NULL or NUL-terminated (this function's contract).
    match unsafe { sfs_path(libc::AT_FDCWD, path) } {
        Some((_inside, p)) => run("scandir", || {
            // SAFETY: `namelist`, `filter` and `compare` are as scandir_sfs
            // requires (this function's contract).
            unsafe { scandir_sfs(&p, namelist, filter, compare) }
        }),
        // SAFETY: the caller's arguments go on unchanged to the next
        // library's `scandir`, under the contract this function was called
        // with.
        None => unsafe { real!(scandir)(path, namelist, filter, compare) },
    }
}

/// getdents64 of SFS directory descriptor `fd` into `buf`. The listing is
/// the descriptor's record's ([`Record::listing`]); the position is the
/// descriptor's file offset (an entry index), so `lseek(fd, 0, SEEK_SET)`
/// rewinds as on a local file system.
///
/// # Safety
/// `buf` is valid for writing `len` bytes.
unsafe fn getdents_sfs(fd: c_int, buf: *mut u8, len: usize) -> SfsResult<ssize_t> {
    let (pos, path) = with_client(|c| {
        if !c.fd_is_dir(fd)? {
            return Err(err(libc::ENOTDIR, "getdents on a non-directory"));
        }
        Ok((
            c.lseek(fd, 0, sfs_client::Whence::Current)? as usize,
            c.fd_path(fd)?,
        ))
    })?;
    let mut records = Records::lock();
    let record = records.of(fd);
    if pos == 0 || record.listing.is_none() {
        record.listing = Some(Listing::open(&path)?);
    }
    let listing = record.listing.as_mut().expect("set above");
    let header = std::mem::offset_of!(dirent64, d_name);
    let mut used = 0usize;
    let mut next = pos;
    while let Some(e) = listing.entry(next)? {
        let name = e.name.as_bytes_with_nul();
        let reclen = (header + name.len()).div_ceil(8) * 8;
        if used + reclen > len {
            if used == 0 {
                return Err(err(libc::EINVAL, "getdents buffer too small"));
            }
            break;
        }
        // SAFETY: `buf` is valid for `len` bytes (this function's contract)
        // and `used + reclen <= len`; records are written field by field
        // (unaligned-safe).
        unsafe {
            let rec = buf.add(used);
            std::ptr::write_bytes(rec, 0, reclen);
            std::ptr::write_unaligned(rec.cast::<u64>(), e.ino);
            std::ptr::write_unaligned(rec.add(8).cast::<i64>(), (next + 1) as i64);
            std::ptr::write_unaligned(rec.add(16).cast::<u16>(), reclen as u16);
            *rec.add(18) = e.kind;
            std::ptr::copy_nonoverlapping(name.as_ptr(), rec.add(header), name.len());
        }
        used += reclen;
        next += 1;
    }
    with_client(|c| c.lseek(fd, next as i64, sfs_client::Whence::Set))?;
    Ok(used as ssize_t)
}

/// # Safety
/// `buf` is valid for writing `len` bytes: the contract of getdents64(2),
/// whose arguments these are.
pub(crate) unsafe fn sfs_getdents64(fd: c_int, buf: *mut c_void, len: size_t) -> ssize_t {
    match sfs_fd(fd) {
        Some(_inside) => run("getdents64", || {
            // SAFETY: `buf` is valid for writing `len` bytes (this function's
            // contract).
            unsafe { getdents_sfs(fd, buf.cast(), len) }
        }),
        // SAFETY: the caller's arguments go on unchanged to the next
        // library's `getdents64`, under the contract this function was called
        // with.
        None => unsafe { real!(getdents64)(fd, buf, len) },
    }
}
