//! Advisory locks (fcntl F_SETLK/F_SETLKW/F_GETLK and the OFD variants,
//! flock, lockf) on SFS files.
//!
//! SFS has no distributed lock service. When every server of the hostfile is
//! on this machine (a one-node job, where every client is on this machine
//! too), a lock on an SFS file is a kernel lock on a node-local lock file
//! named after the file's id under `/dev/shm/sfs-locks` (or `$TMPDIR`): real
//! locks between all processes of the job. Otherwise lock calls fail with
//! ENOLCK — never a silent success. `SFS_LOCKS=local` forces node-local locks
//! (the user promises all clients share this node), `SFS_LOCKS=off` refuses.

use crate::descriptors::{InternalFd, Records};
use crate::state::{self, err, with_client};
use libc::{c_int, off_t};
use sfs_global::SfsResult;
use std::collections::HashMap;
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::{Arc, Mutex, OnceLock};

/// Lock-file descriptor per file id (one per process, as POSIX locks are).
static LOCK_FILES: Mutex<Option<HashMap<u64, c_int>>> = Mutex::new(None);
static ENABLED: OnceLock<bool> = OnceLock::new();
/// Set once this process took a record lock (it has a lock file open).
static RECORD_LOCKS_USED: AtomicBool = AtomicBool::new(false);

fn enabled() -> SfsResult<()> {
    let on = *ENABLED.get_or_init(
        || match crate::environment::var_text("SFS_LOCKS").as_deref() {
            Some("local") => true,
            Some("off") => false,
            _ => with_client(|c| Ok(c.all_servers_local())).unwrap_or(false),
        },
    );
    if on {
        Ok(())
    } else {
        Err(err(
            libc::ENOLCK,
            "SFS has no locks across nodes (set SFS_LOCKS=local if all clients share this node)",
        ))
    }
}

fn lock_dir() -> String {
    let shm = std::path::Path::new("/dev/shm");
    let base = if shm.is_dir() {
        "/dev/shm".to_string()
    } else {
        crate::environment::var_text("TMPDIR").unwrap_or_else(|| "/tmp".into())
    };
    format!("{base}/sfs-locks")
}

/// The key of an SFS descriptor's file (its inode number, from the id the
/// open file holds: no server asked).
fn file_key(fd: c_int) -> SfsResult<u64> {
    with_client(|c| c.fd_id(fd)).map(key_of)
}

fn key_of(id: sfs_global::FileId) -> u64 {
    id.lo() ^ id.hi()
}

/// The key of the file open at SFS descriptor `fd` when this process holds
/// a lock file for it (it took record locks on it): POSIX drops a
/// process's record locks on a file when *any* of its descriptors of the
/// file closes. Asks no server; nothing at all until the process took a
/// record lock.
pub fn locked_key(client: &sfs_client::Client, fd: c_int) -> Option<u64> {
    if !RECORD_LOCKS_USED.load(Ordering::Acquire) {
        return None;
    }
    let key = key_of(client.fd_id(fd).ok()?);
    let files = LOCK_FILES.lock().unwrap_or_else(|p| p.into_inner());
    files.as_ref()?.contains_key(&key).then_some(key)
}

/// This process's lock-file descriptor for `key`, opened on first use
/// (record locks: one per process, as POSIX keeps them).
fn lock_file(key: u64) -> SfsResult<c_int> {
    let mut files = LOCK_FILES.lock().unwrap_or_else(|p| p.into_inner());
    let files = files.get_or_insert_with(HashMap::new);
    if let Some(&fd) = files.get(&key) {
        return Ok(fd);
    }
    let fd = open_lock_file(key)?;
    files.insert(key, fd);
    RECORD_LOCKS_USED.store(true, Ordering::Release);
    Ok(fd)
}

/// A new open file description of the lock file of `key`.
fn open_lock_file(key: u64) -> SfsResult<c_int> {
    let dir = lock_dir();
    let _ = std::fs::create_dir_all(&dir);
    {
        use std::os::unix::fs::PermissionsExt;
        let _ = std::fs::set_permissions(&dir, std::fs::Permissions::from_mode(0o1777));
    }
    let path = std::ffi::CString::new(format!("{dir}/{key:016x}"))
        .map_err(|_| err(libc::EINVAL, "lock file name"))?;
    // SAFETY: `path` is NUL-terminated; a raw system call cannot re-enter.
    let fd = unsafe {
        raw_syscall!(
            libc::SYS_openat,
            libc::AT_FDCWD,
            path.as_ptr(),
            libc::O_RDWR | libc::O_CREAT | libc::O_CLOEXEC,
            0o666,
        )
    };
    if fd < 0 {
        return Err(err(
            libc::ENOLCK,
            format!("cannot open the lock file {path:?}"),
        ));
    }
    Ok(fd as c_int)
}

/// On close of an SFS descriptor of the file of `key`, which this process
/// took record locks on ([`locked_key`]): POSIX drops all of them when any
/// of its descriptors of the file closes.
pub fn on_close(key: u64) {
    let files = LOCK_FILES.lock().unwrap_or_else(|p| p.into_inner());
    if let Some(&lock_fd) = files.as_ref().and_then(|f| f.get(&key)) {
        let mut unlock: libc::flock = unsafe_zeroed_flock();
        unlock.l_type = libc::F_UNLCK as i16;
        unlock.l_whence = libc::SEEK_SET as i16;
        // SAFETY: `unlock` is a valid flock for the call.
        unsafe {
            raw_syscall!(
                libc::SYS_fcntl,
                lock_fd,
                libc::F_SETLK,
                &mut unlock as *mut libc::flock,
            );
        }
    }
}

fn unsafe_zeroed_flock() -> libc::flock {
    // SAFETY: all-zero is a valid `struct flock`.
    unsafe { std::mem::zeroed() }
}

/// Makes a lock range absolute (SEEK_SET): the lock file's offset and size
/// mean nothing for the SFS file.
fn absolute(fd: c_int, lock: &mut libc::flock) -> SfsResult<()> {
    let base = match lock.l_whence as c_int {
        libc::SEEK_SET => 0,
        libc::SEEK_CUR => with_client(|c| c.lseek(fd, 0, sfs_client::Whence::Current))? as i64,
        libc::SEEK_END => with_client(|c| c.fstat(fd))?.size as i64,
        _ => return Err(err(libc::EINVAL, "bad l_whence")),
    };
    lock.l_start = lock
        .l_start
        .checked_add(base)
        .filter(|s| *s >= 0)
        .ok_or_else(|| err(libc::EINVAL, "lock range starts before the file"))?;
    lock.l_whence = libc::SEEK_SET as i16;
    Ok(())
}

fn kernel(r: c_int, what: &str) -> SfsResult<c_int> {
    if r < 0 {
        Err(err(state::errno(), what.to_string()))
    } else {
        Ok(r)
    }
}

/// fcntl lock commands.
///
/// # Safety
/// `lock` is NULL or a valid `struct flock`.
pub unsafe fn fcntl_lock(fd: c_int, cmd: c_int, lock: *mut libc::flock) -> SfsResult<c_int> {
    if lock.is_null() {
        return Err(err(libc::EFAULT, "NULL struct flock"));
    }
    enabled()?;
    let key = file_key(fd)?;
    let lock_fd = lock_file(key)?;
    // SAFETY: checked non-NULL; valid per the contract.
    let mut local = unsafe { *lock };
    absolute(fd, &mut local)?;
    // SAFETY: `local` is a valid flock for the call.
    let r = unsafe {
        raw_syscall!(
            libc::SYS_fcntl,
            lock_fd,
            cmd,
            &mut local as *mut libc::flock,
        )
    } as c_int;
    let r = kernel(r, "lock")?;
    if cmd == libc::F_GETLK || cmd == libc::F_OFD_GETLK {
        // SAFETY: as above.
        unsafe { *lock = local };
    }
    Ok(r)
}

/// `flock` on SFS descriptor `fd`: on the lock-file descriptor of its
/// record (`descriptors::Record::flock`, opened on first use), so the lock
/// belongs to the SFS open file description and goes with its last close.
pub fn flock(fd: c_int, op: c_int) -> SfsResult<c_int> {
    enabled()?;
    let lock_fd = {
        let mut records = Records::lock();
        let record = records.of(fd);
        match &record.flock {
            Some(lock_fd) => lock_fd.clone(),
            None => {
                let key = file_key(fd)?;
                let lock_fd = Arc::new(InternalFd::adopt(open_lock_file(key)?));
                record.flock = Some(lock_fd.clone());
                lock_fd
            }
        }
    };
    // SAFETY: flock has no memory effects.
    kernel(
        unsafe { raw_syscall!(libc::SYS_flock, lock_fd.raw(), op) } as c_int,
        "flock",
    )
}

pub fn lockf(fd: c_int, cmd: c_int, len: off_t) -> SfsResult<c_int> {
    let mut lock = unsafe_zeroed_flock();
    lock.l_whence = libc::SEEK_CUR as i16;
    lock.l_start = 0;
    lock.l_len = len;
    let command = match cmd {
        libc::F_LOCK => {
            lock.l_type = libc::F_WRLCK as i16;
            libc::F_SETLKW
        }
        libc::F_TLOCK => {
            lock.l_type = libc::F_WRLCK as i16;
            libc::F_SETLK
        }
        libc::F_ULOCK => {
            lock.l_type = libc::F_UNLCK as i16;
            libc::F_SETLK
        }
        libc::F_TEST => {
            lock.l_type = libc::F_WRLCK as i16;
            // SAFETY: `lock` is a valid flock.
            unsafe { fcntl_lock(fd, libc::F_GETLK, &mut lock) }?;
            // SAFETY: getpid has no memory effects.
            let me = unsafe { libc::getpid() };
            return if lock.l_type == libc::F_UNLCK as i16 || lock.l_pid == me {
                Ok(0)
            } else {
                Err(err(libc::EACCES, "locked by another process"))
            };
        }
        _ => return Err(err(libc::EINVAL, "bad lockf command")),
    };
    // SAFETY: `lock` is a valid flock.
    unsafe { fcntl_lock(fd, command, &mut lock) }
}
