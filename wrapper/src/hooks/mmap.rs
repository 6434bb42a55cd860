//! mmap of SFS files.
//!
//! The kernel cannot page SFS data, so a mapping of an SFS file is an
//! anonymous mapping filled with the file's bytes when it is made
//! (`MAP_PRIVATE`: a private copy, exactly its semantics; `MAP_SHARED`: an
//! anonymous shared mapping, so a forked child shares it). A writable
//! `MAP_SHARED` mapping is written back to the file (within its current
//! size) at `msync`, at `munmap` and at `exit`; writes are not visible to
//! other processes' mappings or reads before that. Only the bytes a program
//! stored are written back: the mapping keeps a snapshot of what it last
//! read or wrote (itself a shared anonymous mapping, so a forked child
//! shares it too), and a write-back compares the two and writes the runs
//! of bytes that differ — a `pwrite` to the file after the `mmap` survives
//! a write-back of a mapping that did not store over it. Bytes past the end
//! of the file read as zeros instead of raising SIGBUS.

use crate::descriptors::{sfs_fd, SFS_FDS};
use crate::hooks::io::{read_sfs, write_unlimited};
use crate::state::{self, err, run, with_client};
use libc::{c_int, c_void, off_t, size_t};
use sfs_global::SfsResult;
use std::sync::atomic::{AtomicUsize, Ordering};
use std::sync::{Mutex, Once};

/// A writable shared mapping of an SFS file, written back later.
struct Mapping {
    addr: usize,
    len: usize,
    /// The shim's own SFS descriptor of the file (the application may close
    /// its descriptor right after mmap).
    fd: c_int,
    offset: i64,
    /// Where the snapshot of `[addr, addr+len)` is: the same length, a
    /// shared anonymous mapping of the shim's.
    snapshot: usize,
}

static MAPPINGS: Mutex<Vec<Mapping>> = Mutex::new(Vec::new());
static MAPPINGS_COUNT: AtomicUsize = AtomicUsize::new(0);
static AT_EXIT: Once = Once::new();

fn page_size() -> usize {
    // SAFETY: sysconf has no memory effects.
    unsafe { libc::sysconf(libc::_SC_PAGESIZE) as usize }
}

/// A private SFS descriptor sharing `fd`'s file, on a reserved number.
fn own_descriptor(fd: c_int) -> SfsResult<c_int> {
    let own = crate::descriptors::reserve_fd(true, 0)?;
    match with_client(|c| c.dup_to(fd, own)) {
        Ok(()) => {
            SFS_FDS.insert(own);
            Ok(own)
        }
        Err(e) => {
            crate::descriptors::release_fd(own);
            Err(e)
        }
    }
}

/// Maps SFS descriptor `fd` as the program asked (see the module doc).
///
/// # Safety
/// `addr`, `len` and `flags` are as the program passed them to mmap(2):
/// with `MAP_FIXED`, whatever was mapped at `addr..addr + len` may be
/// replaced, which the program asked for (mmap's own contract).
unsafe fn mmap_sfs(
    addr: *mut c_void,
    len: size_t,
    prot: c_int,
    flags: c_int,
    fd: c_int,
    off: off_t,
) -> SfsResult<*mut c_void> {
    if len == 0 || off < 0 || !(off as usize).is_multiple_of(page_size()) {
        return Err(err(libc::EINVAL, "mmap: bad length or offset"));
    }
    let shared = flags & libc::MAP_SHARED != 0;
    let acc = with_client(|c| c.fd_flags(fd))? & libc::O_ACCMODE;
    if prot & libc::PROT_READ != 0 && acc == libc::O_WRONLY {
        return Err(err(libc::EACCES, "mmap: descriptor not open for reading"));
    }
    let write_back = shared && prot & libc::PROT_WRITE != 0;
    if write_back && acc != libc::O_RDWR {
        return Err(err(
            libc::EACCES,
            "mmap: shared writable mapping needs O_RDWR",
        ));
    }
    let kind = if shared {
        libc::MAP_SHARED
    } else {
        libc::MAP_PRIVATE
    };
    let keep = flags
        & (libc::MAP_FIXED
            | libc::MAP_FIXED_NOREPLACE
            | libc::MAP_POPULATE
            | libc::MAP_NORESERVE
            | libc::MAP_LOCKED);
    // SAFETY: an anonymous mapping where the program asked for its mapping
    // (`addr`, `len` and the placement flags as it passed them: this
    // function's contract); no memory of ours is involved.
    let map = unsafe {
        real!(mmap)(
            addr,
            len,
            libc::PROT_READ | libc::PROT_WRITE,
            kind | libc::MAP_ANONYMOUS | keep,
            -1,
            0,
        )
    };
    if map == libc::MAP_FAILED {
        return Err(err(state::errno(), "mmap"));
    }
    // SAFETY: `map` is a fresh readable and writable mapping of `len` bytes
    // (not MAP_FAILED, checked above) that nothing else refers to yet.
    let buf = unsafe { std::slice::from_raw_parts_mut(map.cast::<u8>(), len) };
    let mut done = 0;
    while done < len {
        let n = read_sfs(fd, &mut buf[done..], Some(off + done as i64)).inspect_err(|_| {
            // SAFETY: `map` is the mapping of `len` bytes made above, which
            // is given up here (`buf` is not used again).
            unsafe { real!(munmap)(map, len) };
        })?;
        if n == 0 {
            break;
        }
        done += n;
    }
    let snapshot = if write_back {
        // SAFETY: a new anonymous mapping where the kernel chooses (NULL
        // address, no MAP_FIXED): no existing memory is touched.
        let snapshot = unsafe {
            real!(mmap)(
                std::ptr::null_mut(),
                len,
                libc::PROT_READ | libc::PROT_WRITE,
                libc::MAP_SHARED | libc::MAP_ANONYMOUS,
                -1,
                0,
            )
        };
        if snapshot == libc::MAP_FAILED {
            let e = state::errno();
            // SAFETY: `map` is the mapping of `len` bytes made above, which
            // is given up here (`buf` is not used again).
            unsafe { real!(munmap)(map, len) };
            return Err(err(e, "mmap: the snapshot of a shared mapping"));
        }
        // SAFETY: both are fresh mappings of `len` bytes.
        unsafe { std::ptr::copy_nonoverlapping(map.cast::<u8>(), snapshot.cast::<u8>(), len) };
        snapshot as usize
    } else {
        0
    };
    if prot != libc::PROT_READ | libc::PROT_WRITE {
        // SAFETY: `map` is the mapping of `len` bytes made above; `buf` is
        // not used again, so no reference of ours needs the access it loses.
        unsafe { libc::mprotect(map, len, prot) };
    }
    if write_back {
        let own = own_descriptor(fd).inspect_err(|_| {
            // SAFETY: `map` and `snapshot` are the two mappings of `len`
            // bytes made above, given up here; nothing refers to them.
            unsafe {
                real!(munmap)(map, len);
                real!(munmap)(snapshot as *mut c_void, len);
            }
        })?;
        MAPPINGS
            .lock()
            .unwrap_or_else(|p| p.into_inner())
            .push(Mapping {
                addr: map as usize,
                len,
                fd: own,
                offset: off,
                snapshot,
            });
        MAPPINGS_COUNT.fetch_add(1, Ordering::AcqRel);
        AT_EXIT.call_once(|| {
            // SAFETY: `write_back_all` is an `extern "C" fn()` that stays
            // valid for the life of the process: nothing dlclose()s the shim
            // (the entry library keeps its handle, wrapper/preload/entry.c).
            unsafe { libc::atexit(write_back_all) };
        });
    }
    Ok(map)
}

/// Writes `[addr, addr+len)` of a mapping back, clipped to the file size.
fn write_back(m: &Mapping, addr: usize, len: usize) -> SfsResult<()> {
    let start = addr.max(m.addr);
    let end = (addr + len).min(m.addr + m.len);
    if start >= end {
        return Ok(());
    }
    let file_offset = m.offset + (start - m.addr) as i64;
    let size = with_client(|c| c.fstat(m.fd))?.size as i64;
    let end = end.min(m.addr + (size - m.offset).max(0) as usize);
    if start >= end {
        return Ok(());
    }
    // SAFETY: the range lies inside a live mapping this module created,
    // and its snapshot at the same offset inside the snapshot mapping.
    let (data, before) = unsafe {
        (
            std::slice::from_raw_parts(start as *const u8, end - start),
            std::slice::from_raw_parts_mut((m.snapshot + (start - m.addr)) as *mut u8, end - start),
        )
    };
    for (from, to) in changed_runs(data, before) {
        write_unlimited(m.fd, &data[from..to], Some(file_offset + from as i64))?;
        before[from..to].copy_from_slice(&data[from..to]);
    }
    Ok(())
}

/// The runs `[from, to)` where `now` differs from `before` (of one
/// length): equal pages are skipped with one comparison each, and inside a
/// page that differs every differing byte counts, next ones joining one run.
fn changed_runs(now: &[u8], before: &[u8]) -> Vec<(usize, usize)> {
    const STEP: usize = 4096;
    let mut runs: Vec<(usize, usize)> = Vec::new();
    let mut at = 0;
    while at < now.len() {
        let end = (at + STEP).min(now.len());
        if now[at..end] != before[at..end] {
            for i in at..end {
                if now[i] != before[i] {
                    match runs.last_mut() {
                        Some((_, to)) if *to == i => *to = i + 1,
                        _ => runs.push((i, i + 1)),
                    }
                }
            }
        }
        at = end;
    }
    runs
}

extern "C" fn write_back_all() {
    let Some(_inside) = state::enter() else {
        return;
    };
    let maps = MAPPINGS.lock().unwrap_or_else(|p| p.into_inner());
    for m in maps.iter() {
        let _ = write_back(m, m.addr, m.len);
    }
}

/// Writes back (and on munmap forgets) tracked mappings overlapping a range.
fn sync_range(addr: usize, len: usize, unmap: bool) -> SfsResult<()> {
    let mut maps = MAPPINGS.lock().unwrap_or_else(|p| p.into_inner());
    let mut result = Ok(());
    let mut kept = Vec::new();
    for m in maps.drain(..) {
        let overlaps = addr < m.addr + m.len && m.addr < addr + len;
        if !overlaps {
            kept.push(m);
            continue;
        }
        if let Err(e) = write_back(&m, addr, len) {
            result = Err(e);
        }
        if !unmap {
            kept.push(m);
            continue;
        }
        // What stays mapped keeps being tracked (before and after the hole).
        let (end, cut_end) = (m.addr + m.len, addr + len);
        let mut pieces = Vec::new();
        if m.addr < addr {
            pieces.push((m.addr, addr - m.addr, m.offset));
        }
        if cut_end < end {
            pieces.push((cut_end, end - cut_end, m.offset + (cut_end - m.addr) as i64));
        }
        let mut pieces = pieces.into_iter();
        // The snapshot of the unmapped part goes with it.
        let (cut_from, cut_to) = (addr.max(m.addr), cut_end.min(end));
        if cut_from < cut_to {
            // SAFETY: that part of the snapshot mapping is the shim's and
            // nothing refers to it any more.
            unsafe {
                real!(munmap)(
                    (m.snapshot + (cut_from - m.addr)) as *mut c_void,
                    cut_to - cut_from,
                )
            };
        }
        let snapshot_of = |a: usize| m.snapshot + (a - m.addr);
        match pieces.next() {
            None => {
                let _ = with_client(|c| {
                    c.forget_fd(m.fd);
                    Ok(())
                });
                SFS_FDS.remove(m.fd);
                crate::descriptors::release_fd(m.fd);
                MAPPINGS_COUNT.fetch_sub(1, Ordering::AcqRel);
            }
            Some((a, l, o)) => {
                kept.push(Mapping {
                    addr: a,
                    len: l,
                    fd: m.fd,
                    offset: o,
                    snapshot: snapshot_of(a),
                });
                if let Some((a, l, o)) = pieces.next() {
                    if let Ok(fd) = own_descriptor(m.fd) {
                        kept.push(Mapping {
                            addr: a,
                            len: l,
                            fd,
                            offset: o,
                            snapshot: snapshot_of(a),
                        });
                        MAPPINGS_COUNT.fetch_add(1, Ordering::AcqRel);
                    }
                }
            }
        }
    }
    *maps = kept;
    result
}

/// # Safety
/// `addr`, `len`, `prot`, `flags`, `fd` and `off` are as for mmap(2), whose
/// arguments these are, under its contract (with `MAP_FIXED`, what was
/// mapped at `addr..addr + len` may be replaced).
pub(crate) unsafe fn sfs_mmap(
    addr: *mut c_void,
    len: size_t,
    prot: c_int,
    flags: c_int,
    fd: c_int,
    off: off_t,
) -> *mut c_void {
    match sfs_fd(fd) {
        Some(_inside) if flags & libc::MAP_ANONYMOUS == 0 => {
            // SAFETY: the program's own mmap(2) arguments, as this function's
            // contract (that of mmap_sfs) has them.
            let r = run("mmap", || unsafe {
                mmap_sfs(addr, len, prot, flags, fd, off)
            });
            if r.is_null() {
                libc::MAP_FAILED
            } else {
                r
            }
        }
        // SAFETY: the caller's arguments go on unchanged to the next library's
        // `mmap`, under the contract this function was called with.
        _ => unsafe { real!(mmap)(addr, len, prot, flags, fd, off) },
    }
}

/// # Safety
/// `addr` and `len` are as for munmap(2), whose arguments these are: the
/// program gives up what is mapped there.
pub(crate) unsafe fn sfs_munmap(addr: *mut c_void, len: size_t) -> c_int {
    if MAPPINGS_COUNT.load(Ordering::Acquire) > 0 {
        if let Some(_inside) = state::enter() {
            let _ = sync_range(addr as usize, len, true);
        }
    }
    // SAFETY: the caller's arguments go on unchanged to the next library's
    // `munmap`, under the contract this function was called with.
    unsafe { real!(munmap)(addr, len) }
}

/// # Safety
/// None beyond msync(2)'s, whose arguments these are: the range is only
/// compared with the shim's own mappings and handed to the kernel.
pub(crate) unsafe fn sfs_msync(addr: *mut c_void, len: size_t, flags: c_int) -> c_int {
    if MAPPINGS_COUNT.load(Ordering::Acquire) > 0 {
        if let Some(_inside) = state::enter() {
            if let Err(e) = sync_range(addr as usize, len, false) {
                state::set_errno(e.errno.0);
                return -1;
            }
        }
    }
    // SAFETY: the caller's arguments go on unchanged to the next library's
    // `msync`, under the contract this function was called with.
    unsafe { real!(msync)(addr, len, flags) }
}
