//! The shim's process-wide state and the rules every hook relies on.
//!
//! - **Re-entrancy**: a thread-local flag marks a thread that is running shim
//!   code (an SFS call, or one of the client's runtime threads). Any libc
//!   call made from there (std, tokio, the allocator's helpers) goes straight
//!   to the real function.
//! - **Zero cost**: nothing here runs until a hook sees a path under the
//!   mount directory or a descriptor in [`SfsFds`]. The settings are read
//!   from the environment on that first look; the client (runtime threads,
//!   sockets) is created on the first SFS call.
//! - **Descriptors**: every SFS descriptor is a real kernel descriptor the
//!   shim reserves (an `O_RDONLY|O_DIRECTORY` descriptor of `/`), so the
//!   kernel never hands its number to anyone else while it is open. A program
//!   that reaches it without the shim (a static binary after `exec`) gets
//!   EBADF on write and EISDIR on read rather than silently wrong data.
//! - **fork**: the prepare handler waits until no SFS call is in flight
//!   (write lock on the client); the child marks the client stale, and the
//!   next SFS call in the child builds a new runtime and new connections
//!   around the same open-file table.

use sfs_client::embed::{OpenFdInfo, ThreadStart};
use sfs_client::Client;
use sfs_global::config::Config;
use sfs_global::hostfile::Hostfile;
use sfs_global::{Errno, SfsError, SfsResult};
use std::cell::{Cell, RefCell};
use std::panic::{catch_unwind, AssertUnwindSafe};
use std::path::PathBuf;
use std::sync::atomic::{AtomicBool, AtomicI32, AtomicU64, AtomicU8, Ordering};
use std::sync::{Arc, Mutex, OnceLock, RwLock, RwLockWriteGuard};

thread_local! {
    static INSIDE: Cell<bool> = const { Cell::new(false) };
    /// The answer of the current call, found while its path was resolved
    /// ([`fail_call`]); lives as long as the call's [`Inside`].
    static FAILED_CALL: RefCell<Option<SfsError>> = const { RefCell::new(None) };
}

/// Proof that this thread has entered the shim; leaving resets the flag.
pub struct Inside(());

impl Drop for Inside {
    fn drop(&mut self) {
        INSIDE.with(|i| i.set(false));
        let _ = FAILED_CALL.try_with(|p| p.borrow_mut().take());
    }
}

/// Makes the current call (the one whose [`Inside`] is held) fail with
/// `e` at its [`run`], without doing anything: its path turned out to be
/// wrong while it was resolved (a trailing `/` on a regular file, `..`
/// after a missing name).
pub fn fail_call(e: SfsError) {
    let _ = FAILED_CALL.try_with(|p| *p.borrow_mut() = Some(e));
}

/// Whether the current call already has its answer ([`fail_call`]).
pub fn call_failed() -> bool {
    FAILED_CALL
        .try_with(|p| p.borrow().is_some())
        .unwrap_or(false)
}

/// The current call's answer found while its path was resolved, if any
/// ([`fail_call`]), taken: for a hook that answers without [`run`].
pub fn take_failure() -> Option<SfsError> {
    FAILED_CALL
        .try_with(|p| p.borrow_mut().take())
        .ok()
        .flatten()
}

/// Enters the shim, or `None` if this thread is already inside (then the
/// caller must use the real function).
pub fn enter() -> Option<Inside> {
    INSIDE
        .try_with(|i| {
            if i.get() {
                None
            } else {
                i.set(true);
                Some(Inside(()))
            }
        })
        .ok()
        .flatten()
}

/// Runs `callback`, a function of the program's that the shim calls while
/// it handles a call (scandir's filter and comparator), as the program's
/// own code: the calls it makes are hooked like any other (a filter's
/// `stat` of an SFS entry goes to SFS, not to the kernel). The thread is
/// inside the shim again afterwards.
pub fn as_program<T>(callback: impl FnOnce() -> T) -> T {
    let was = INSIDE.try_with(|i| i.replace(false)).unwrap_or(true);
    let out = callback();
    let _ = INSIDE.try_with(|i| i.set(was));
    out
}

/// Marks the current thread as the shim's own for its whole life.
fn mark_thread_as_shim() {
    let _ = INSIDE.try_with(|i| i.set(true));
}

// ---------------------------------------------------------------------------
// Settings and logging

/// What the environment says about SFS.
pub struct Settings {
    /// The mount directory, normalised (`/a/b`, no trailing `/`).
    pub mount: String,
    pub config_path: Option<PathBuf>,
    pub hostfile_path: Option<PathBuf>,
}

const LOG_OFF: u8 = 0;
const LOG_WARN: u8 = 2;
const LOG_DEBUG: u8 = 4;
static LOG_LEVEL: AtomicU8 = AtomicU8::new(LOG_OFF);
/// `SFS_LOG=off`: not even the one line about unreachable servers.
static LOG_SILENCED: AtomicBool = AtomicBool::new(false);

static SETTINGS: OnceLock<Option<Settings>> = OnceLock::new();

/// The settings, read from the environment the first time; `None` when no
/// mount directory is configured (the shim then passes everything through).
/// Must be called inside the shim (it may read the config file).
pub fn settings() -> Option<&'static Settings> {
    SETTINGS.get_or_init(read_settings).as_ref()
}

fn read_settings() -> Option<Settings> {
    let env = crate::environment::var;
    if let Some(level) = crate::environment::var_text("SFS_LOG") {
        let level = level.to_ascii_lowercase();
        let value = if level.contains("trace") || level.contains("debug") {
            LOG_DEBUG
        } else if level.contains("off") || level.is_empty() {
            LOG_SILENCED.store(true, Ordering::Relaxed);
            LOG_OFF
        } else {
            LOG_WARN
        };
        LOG_LEVEL.store(value, Ordering::Relaxed);
    }
    let config_path = env("SFS_CONFIG").map(PathBuf::from);
    let hostfile_path = env("SFS_HOSTFILE").map(PathBuf::from);
    let mount = match crate::route::mount_from_environment() {
        Ok(mount) => mount?,
        Err(message) => {
            log(LOG_WARN, &message);
            return None;
        }
    };
    Some(Settings {
        mount,
        config_path,
        hostfile_path,
    })
}

/// Writes one line to stderr (with the real `write`) if `SFS_LOG` asks for
/// `level`. The shim prints nothing unless asked.
pub fn log(level: u8, message: &str) {
    if LOG_LEVEL.load(Ordering::Relaxed) < level {
        return;
    }
    let line = format!("sfs-shim[{}]: {message}\n", std::process::id());
    // SAFETY: the buffer is valid for its length; a raw system call cannot
    // re-enter the hooks.
    unsafe {
        raw_syscall!(libc::SYS_write, 2, line.as_ptr(), line.len());
    }
}

/// Says once per process, on stderr, that SFS is configured but a server
/// cannot be reached — whatever `SFS_LOG` says, except `off`: otherwise a
/// program under the shim only sees EIO and nobody knows why.
fn note_unreachable(e: &SfsError) {
    static SAID: AtomicBool = AtomicBool::new(false);
    let connection_level = matches!(e.errno.0, libc::EIO | libc::ETIMEDOUT)
        && (e.message.contains("connect") || e.message.contains("connection"));
    if !connection_level
        || LOG_SILENCED.load(Ordering::Relaxed)
        || SAID.swap(true, Ordering::Relaxed)
    {
        return;
    }
    let mount = SETTINGS
        .get()
        .and_then(|s| s.as_ref())
        .map_or("?", |s| s.mount.as_str());
    let line = format!(
        "sfs: SFS is configured (mount {mount}) but a server cannot be reached: {}; \
         calls under the mount fail with {} (SFS_LOG=off silences this line)\n",
        e.message,
        e.errno.name()
    );
    // SAFETY: the buffer is valid for its length; a raw system call cannot
    // re-enter the hooks.
    unsafe {
        raw_syscall!(libc::SYS_write, 2, line.as_ptr(), line.len());
    }
}

pub fn debug(message: impl FnOnce() -> String) {
    if LOG_LEVEL.load(Ordering::Relaxed) >= LOG_DEBUG {
        log(LOG_DEBUG, &message());
    }
}

// ---------------------------------------------------------------------------
// errno and results

pub fn set_errno(errno: i32) {
    // SAFETY: __errno_location returns this thread's errno slot.
    unsafe { *libc::__errno_location() = errno };
}

pub fn errno() -> i32 {
    // SAFETY: as in `set_errno`.
    unsafe { *libc::__errno_location() }
}

/// The value a C call returns on failure.
pub trait Failure {
    const FAILED: Self;
}
impl Failure for i32 {
    const FAILED: Self = -1;
}
impl Failure for i64 {
    const FAILED: Self = -1;
}
impl Failure for isize {
    const FAILED: Self = -1;
}
impl<T> Failure for *mut T {
    const FAILED: Self = std::ptr::null_mut();
}

/// Runs an SFS call: errors set errno and return the C failure value; a
/// panic never crosses the FFI boundary (it becomes EIO).
pub fn run<R: Failure>(what: &str, call: impl FnOnce() -> SfsResult<R>) -> R {
    let call = || match take_failure() {
        Some(e) => Err(e),
        None => call(),
    };
    match catch_unwind(AssertUnwindSafe(call)) {
        Ok(Ok(v)) => v,
        Ok(Err(e)) => {
            debug(|| format!("{what}: {} ({})", e.message, e.errno.name()));
            note_unreachable(&e);
            set_errno(e.errno.0);
            R::FAILED
        }
        Err(_) => {
            log(LOG_WARN, &format!("{what}: internal error (panic); EIO"));
            set_errno(libc::EIO);
            R::FAILED
        }
    }
}

/// As [`run`] for calls that return the error number instead of -1
/// (`posix_fadvise`, `posix_fallocate`).
pub fn run_errno(what: &str, call: impl FnOnce() -> SfsResult<()>) -> i32 {
    let call = || match take_failure() {
        Some(e) => Err(e),
        None => call(),
    };
    match catch_unwind(AssertUnwindSafe(call)) {
        Ok(Ok(())) => 0,
        Ok(Err(e)) => {
            debug(|| format!("{what}: {} ({})", e.message, e.errno.name()));
            note_unreachable(&e);
            e.errno.0
        }
        Err(_) => libc::EIO,
    }
}

pub fn err(errno: i32, message: impl Into<String>) -> SfsError {
    SfsError::new(Errno(errno), message)
}

// ---------------------------------------------------------------------------
// The descriptor set

/// Highest descriptor number (exclusive) the shim hands out.
pub const MAX_FDS: usize = 1 << 20;

/// One bit per descriptor number: set while it is an SFS descriptor. Read
/// without locks by every descriptor hook, so a program that never opened an
/// SFS file pays one load per call.
pub struct SfsFds {
    bits: [AtomicU64; MAX_FDS / 64],
}

pub static SFS_FDS: SfsFds = SfsFds {
    bits: [const { AtomicU64::new(0) }; MAX_FDS / 64],
};

impl SfsFds {
    pub fn contains(&self, fd: i32) -> bool {
        fd >= 0
            && (fd as usize) < MAX_FDS
            && self.bits[fd as usize / 64].load(Ordering::Acquire) & (1 << (fd % 64)) != 0
    }
    pub fn insert(&self, fd: i32) {
        if fd >= 0 && (fd as usize) < MAX_FDS {
            self.bits[fd as usize / 64].fetch_or(1 << (fd % 64), Ordering::AcqRel);
        }
    }
    /// The SFS descriptors in `lo..=hi`, lowest first.
    pub fn in_range(&self, lo: u32, hi: u32) -> Vec<i32> {
        let hi = (hi as usize).min(MAX_FDS - 1);
        let mut out = Vec::new();
        let mut fd = lo as usize;
        while fd <= hi {
            let word = self.bits[fd / 64].load(Ordering::Acquire);
            if word == 0 {
                fd = (fd / 64 + 1) * 64;
                continue;
            }
            if word & (1 << (fd % 64)) != 0 {
                out.push(fd as i32);
            }
            fd += 1;
        }
        out
    }

    pub fn remove(&self, fd: i32) {
        if fd >= 0 && (fd as usize) < MAX_FDS {
            self.bits[fd as usize / 64].fetch_and(!(1 << (fd % 64)), Ordering::AcqRel);
        }
    }
}

/// Enters the shim for an SFS descriptor, or `None` (use the real call).
pub fn sfs_fd(fd: i32) -> Option<Inside> {
    if SFS_FDS.contains(fd) {
        enter()
    } else {
        None
    }
}

/// Descriptors the shim itself uses (the client's sockets, epoll and event
/// descriptors): kept at high numbers, out of the application's way.
pub static INTERNAL_FDS: SfsFds = SfsFds {
    bits: [const { AtomicU64::new(0) }; MAX_FDS / 64],
};

/// True while this thread runs shim code.
pub fn inside_now() -> bool {
    INSIDE.try_with(|i| i.get()).unwrap_or(true)
}

/// Lowest number for the shim's own descriptors: programs pick low numbers
/// themselves (`exec 3>` in a shell, dup2 onto 3..9, bash's 255), so the
/// shim moves its descriptors up near the descriptor limit.
fn internal_base() -> i32 {
    static BASE: OnceLock<i32> = OnceLock::new();
    *BASE.get_or_init(|| {
        // SAFETY: `limit` is written by getrlimit.
        let soft = unsafe {
            let mut limit: libc::rlimit = std::mem::zeroed();
            if libc::getrlimit(libc::RLIMIT_NOFILE, &mut limit) == 0 {
                limit.rlim_cur.min(MAX_FDS as u64) as i32
            } else {
                1024
            }
        };
        if soft >= 2048 {
            soft - 1024
        } else if soft > 512 {
            soft - 256
        } else {
            soft / 2
        }
    })
}

/// Moves a descriptor the shim just created to a high number and records
/// it as internal. On failure (no free high number) the original stays.
pub fn relocate_internal(fd: i32) -> i32 {
    if fd < 0 {
        return fd;
    }
    let base = internal_base();
    let moved = if fd >= base {
        fd
    } else {
        // SAFETY: F_DUPFD_CLOEXEC and close have no memory effects.
        let high = unsafe { raw_syscall!(libc::SYS_fcntl, fd, libc::F_DUPFD_CLOEXEC, base) } as i32;
        if high < 0 {
            fd
        } else {
            release_fd(fd);
            high
        }
    };
    INTERNAL_FDS.insert(moved);
    moved
}

/// A descriptor of `/` (`O_RDONLY|O_DIRECTORY`) at a high number, which new
/// placeholders are opened relative to (`openat(template, ".")`: no walk
/// from the root or the working directory). -1 until first needed, and
/// again if the program closed it (`closefrom`).
static TEMPLATE_FD: AtomicI32 = AtomicI32::new(-1);

fn open_root(flags: i32) -> i64 {
    // SAFETY: the path is a NUL-terminated literal.
    unsafe { raw_syscall!(libc::SYS_openat, libc::AT_FDCWD, c"/".as_ptr(), flags, 0) }
}

/// The template descriptor, opened on first use.
fn template_fd() -> Option<i32> {
    let current = TEMPLATE_FD.load(Ordering::Acquire);
    if current >= 0 {
        return Some(current);
    }
    let fd = open_root(libc::O_RDONLY | libc::O_DIRECTORY | libc::O_CLOEXEC);
    if fd < 0 {
        return None;
    }
    let fd = relocate_internal(fd as i32);
    match TEMPLATE_FD.compare_exchange(-1, fd, Ordering::AcqRel, Ordering::Acquire) {
        Ok(_) => Some(fd),
        Err(theirs) => {
            // Another thread made one first.
            INTERNAL_FDS.remove(fd);
            release_fd(fd);
            Some(theirs)
        }
    }
}

/// Reserves a kernel descriptor for a new SFS descriptor: the lowest free
/// number, as `open` would give. Each one is a new open file description
/// of `/` (never a copy of another descriptor), because the description
/// keeps the SFS descriptor's offset and `O_APPEND` flag
/// ([`KernelOffsets`]); `status` may hold `O_APPEND` and `O_NONBLOCK`
/// (other bits are ignored). Raw system calls: they cannot re-enter the
/// hooks.
pub fn reserve_fd(cloexec: bool, status: i32) -> SfsResult<i32> {
    let flags = libc::O_RDONLY
        | libc::O_DIRECTORY
        | (status & KERNEL_STATUS_FLAGS)
        | if cloexec { libc::O_CLOEXEC } else { 0 };
    let opened = template_fd().map_or(-1, |template| {
        // SAFETY: the path is a NUL-terminated literal.
        let fd = unsafe { raw_syscall!(libc::SYS_openat, template, c".".as_ptr(), flags, 0) };
        if fd < 0 && errno() == libc::EBADF {
            // The program closed the template behind our back: make another
            // next time.
            INTERNAL_FDS.remove(template);
            let _ = TEMPLATE_FD.compare_exchange(template, -1, Ordering::AcqRel, Ordering::Acquire);
        }
        fd
    });
    let fd = if opened >= 0 {
        opened
    } else {
        open_root(flags)
    };
    if fd < 0 {
        return Err(err(errno(), "cannot reserve a descriptor"));
    }
    let fd = fd as i32;
    if fd as usize >= MAX_FDS {
        release_fd(fd);
        return Err(err(
            libc::EMFILE,
            "descriptor number beyond the shim's table",
        ));
    }
    Ok(fd)
}

/// The status flags an SFS descriptor's placeholder carries for it, shared
/// like its offset and changed with `fcntl(F_SETFL)`. (`O_NOATIME` is not
/// among them: only the owner of `/` may set it on the placeholder.)
pub const KERNEL_STATUS_FLAGS: i32 = libc::O_APPEND | libc::O_NONBLOCK;

/// SFS descriptor offsets (and `O_APPEND`) kept by the kernel: each SFS descriptor's
/// placeholder is an open file description of its own (see
/// [`reserve_fd`]), and its file position is the SFS offset. `fork`,
/// `exec`, `dup` and descriptor passing share a description, so they share
/// the offset exactly as for a kernel file, across processes, with no
/// bookkeeping in the shim. Raw `lseek` system calls (never the hook).
pub struct KernelOffsets;

fn kernel_seek(fd: i32, offset: i64, whence: i32) -> SfsResult<u64> {
    // SAFETY: lseek takes numbers only.
    let r = unsafe { raw_syscall!(libc::SYS_lseek, fd, offset, whence) };
    if r < 0 {
        return Err(err(errno(), "moving the descriptor's offset"));
    }
    Ok(r as u64)
}

fn offset_arg(value: u64) -> SfsResult<i64> {
    i64::try_from(value).map_err(|_| err(libc::EFBIG, format!("offset {value} is too large")))
}

impl sfs_client::DescriptorOffsets for KernelOffsets {
    fn get(&self, fd: i32) -> SfsResult<u64> {
        kernel_seek(fd, 0, libc::SEEK_CUR)
    }

    fn set(&self, fd: i32, offset: u64) -> SfsResult<()> {
        kernel_seek(fd, offset_arg(offset)?, libc::SEEK_SET).map(|_| ())
    }

    fn advance(&self, fd: i32, by: u64) -> SfsResult<u64> {
        let after = kernel_seek(fd, offset_arg(by)?, libc::SEEK_CUR).map_err(|e| {
            if e.errno.0 == libc::EINVAL {
                err(libc::EFBIG, "write past the largest file offset")
            } else {
                e
            }
        })?;
        Ok(after - by)
    }

    fn appends(&self, fd: i32) -> SfsResult<bool> {
        // SAFETY: F_GETFL takes numbers only.
        let flags = unsafe { raw_syscall!(libc::SYS_fcntl, fd, libc::F_GETFL) };
        if flags < 0 {
            return Err(err(errno(), "reading the descriptor's status flags"));
        }
        Ok(flags as i32 & libc::O_APPEND != 0)
    }
}

/// Closes a reserved kernel descriptor.
pub fn release_fd(fd: i32) {
    // SAFETY: closing a descriptor number has no memory effects.
    unsafe {
        raw_syscall!(libc::SYS_close, fd);
    }
}

// ---------------------------------------------------------------------------
// The client

static CLIENT: RwLock<Option<Client>> = RwLock::new(None);
static CLIENT_EXISTS: AtomicBool = AtomicBool::new(false);
static STALE_AFTER_FORK: AtomicBool = AtomicBool::new(false);
static ATFORK: OnceLock<()> = OnceLock::new();

/// Descriptors inherited through `exec`, opened again on the first SFS call.
pub static PENDING: Mutex<Vec<OpenFdInfo>> = Mutex::new(Vec::new());

fn thread_start() -> ThreadStart {
    Arc::new(|| {
        block_all_signals();
        mark_thread_as_shim();
    })
}

fn block_all_signals() -> libc::sigset_t {
    // SAFETY: sigset_t is plain data; sigfillset initialises it and
    // pthread_sigmask only reads/writes the two sets.
    unsafe {
        let mut all: libc::sigset_t = std::mem::zeroed();
        let mut old: libc::sigset_t = std::mem::zeroed();
        libc::sigfillset(&mut all);
        libc::pthread_sigmask(libc::SIG_BLOCK, &all, &mut old);
        old
    }
}

fn restore_signals(old: &libc::sigset_t) {
    // SAFETY: `old` came from pthread_sigmask.
    unsafe {
        libc::pthread_sigmask(libc::SIG_SETMASK, old, std::ptr::null_mut());
    }
}

fn create_client(settings: &Settings) -> SfsResult<Client> {
    let mut config = match &settings.config_path {
        Some(p) => Config::load(p).map_err(|e| SfsError::invalid(e.to_string()))?,
        None => Config::default(),
    };
    config.mountdir = settings.mount.clone();
    let hostfile_path = match (&settings.hostfile_path, &settings.config_path) {
        (Some(h), _) => h.clone(),
        (None, Some(c)) => c
            .parent()
            .unwrap_or(std::path::Path::new("."))
            .join(&config.hosts_file),
        (None, None) => PathBuf::from("hostfile"),
    };
    let hostfile = Hostfile::load(&hostfile_path).map_err(|e| SfsError::invalid(e.to_string()))?;
    // The environment as the C library keeps it, not through `getenv`
    // (see `crate::environment`).
    let (secret, _) =
        sfs_global::secret::for_client(&config, &hostfile, crate::environment::var_text)
            .map_err(|e| err(libc::EACCES, &e))?;
    // Runtime threads start with every signal blocked (and block them again
    // themselves, for threads spawned later from an application thread).
    let old = block_all_signals();
    let client = Client::new_embedded(
        config,
        hostfile,
        secret,
        thread_start(),
        Arc::new(KernelOffsets),
    );
    restore_signals(&old);
    client
}

fn initialise() -> SfsResult<()> {
    let settings = settings().ok_or_else(|| err(libc::ENOSYS, "SFS is not configured"))?;
    let mut slot = CLIENT.write().unwrap_or_else(|p| p.into_inner());
    match slot.as_mut() {
        None => {
            let client = create_client(settings).inspect_err(|e| {
                log(
                    LOG_WARN,
                    &format!("cannot start the SFS client: {}", e.message),
                );
            })?;
            ATFORK.get_or_init(|| {
                // SAFETY: the handlers are plain `extern "C" fn()`s that live
                // as long as the process.
                unsafe {
                    libc::pthread_atfork(Some(fork_prepare), Some(fork_parent), Some(fork_child));
                    libc::atexit(send_dir_times_at_exit);
                }
            });
            let pending = std::mem::take(&mut *PENDING.lock().unwrap_or_else(|p| p.into_inner()));
            for info in pending {
                restore_descriptor(&client, &info);
            }
            *slot = Some(client);
            CLIENT_EXISTS.store(true, Ordering::Release);
        }
        Some(client) => {
            if STALE_AFTER_FORK.load(Ordering::Acquire) {
                let old = block_all_signals();
                let r = client.reinit_after_fork(thread_start());
                restore_signals(&old);
                r?;
                STALE_AFTER_FORK.store(false, Ordering::Release);
            }
        }
    }
    Ok(())
}

/// At exit: the directory times this process changed and still holds
/// (sfs_client::dir_times) go to the servers.
extern "C" fn send_dir_times_at_exit() {
    send_waiting_dir_times();
}

/// Sends the directory times this process still holds (at exit, before
/// an exec replaces it).
pub fn send_waiting_dir_times() {
    if !CLIENT_EXISTS.load(Ordering::Acquire) || STALE_AFTER_FORK.load(Ordering::Acquire) {
        // A forked child that made no SFS call: what it inherited waiting
        // is its parent's to send.
        return;
    }
    let Some(_inside) = enter() else {
        return;
    };
    let _ = with_client(|client| {
        client.flush_dir_times();
        Ok(())
    });
}

/// Re-opens a descriptor inherited through `exec` at its number. Its
/// offset is already right: the kernel description the placeholder shares
/// with the process that exec'ed keeps it ([`KernelOffsets`]).
fn restore_descriptor(client: &Client, info: &OpenFdInfo) {
    let flags = info.flags & !(libc::O_CREAT | libc::O_EXCL | libc::O_TRUNC);
    if let Err(e) = client.open_at_fd(&info.path, flags, 0, info.fd) {
        // The number stays reserved; calls on it fail with EBADF.
        log(
            LOG_WARN,
            &format!(
                "inherited descriptor {} ({}): {}",
                info.fd, info.path, e.message
            ),
        );
    }
}

/// Runs `call` with the client, creating it on first use (and re-creating
/// its runtime after a fork).
pub fn with_client<R>(call: impl FnOnce(&Client) -> SfsResult<R>) -> SfsResult<R> {
    let mut call = Some(call);
    for _ in 0..2 {
        {
            let slot = CLIENT.read().unwrap_or_else(|p| p.into_inner());
            if let Some(client) = slot.as_ref() {
                if !STALE_AFTER_FORK.load(Ordering::Acquire) {
                    let call = call.take().expect("called once");
                    return if thread_locals_destroyed() {
                        on_helper_thread(client, call)
                    } else {
                        call(client)
                    };
                }
            }
        }
        initialise()?;
    }
    Err(err(libc::EIO, "the SFS client could not be initialised"))
}

/// True once this thread's thread-local destructors have run: at `exit`,
/// glibc destroys the main thread's thread locals (tokio's among them)
/// *before* the atexit handlers run, and those handlers flush stdio.
fn thread_locals_destroyed() -> bool {
    matches!(tokio::runtime::Handle::try_current(), Err(e) if e.is_thread_local_destroyed())
}

/// Moves a value to a helper thread and back. The calls it carries only
/// touch memory the calling thread keeps alive and does not use meanwhile
/// (it waits for the helper).
struct Carried<T>(T);
// SAFETY: see above: the calling thread blocks until the helper is done.
unsafe impl<T> Send for Carried<T> {}

/// Runs an SFS call on a short-lived helper thread (signals blocked,
/// marked as the shim's): for calls made where this thread can no longer
/// run the client (after its thread locals were destroyed).
fn on_helper_thread<R>(
    client: &Client,
    call: impl FnOnce(&Client) -> SfsResult<R>,
) -> SfsResult<R> {
    let carried = Carried((call, client));
    let old = block_all_signals();
    let result = std::thread::scope(|scope| {
        scope
            .spawn(move || {
                let carried = carried;
                mark_thread_as_shim();
                let (call, client) = carried.0;
                Carried(call(client))
            })
            .join()
    });
    restore_signals(&old);
    match result {
        Ok(r) => r.0,
        Err(_) => Err(err(libc::EIO, "SFS call failed on the exit path")),
    }
}

thread_local! {
    static FORK_LOCK: RefCell<Option<RwLockWriteGuard<'static, Option<Client>>>> =
        const { RefCell::new(None) };
}

/// Waits until no SFS call is in flight, so that no lock inside the client
/// is held by another thread when the address space is copied.
extern "C" fn fork_prepare() {
    if CLIENT_EXISTS.load(Ordering::Acquire) {
        let guard = CLIENT.write().unwrap_or_else(|p| p.into_inner());
        let _ = FORK_LOCK.try_with(|l| *l.borrow_mut() = Some(guard));
    }
}

extern "C" fn fork_parent() {
    let _ = FORK_LOCK.try_with(|l| l.borrow_mut().take());
}

extern "C" fn fork_child() {
    let _ = FORK_LOCK.try_with(|l| l.borrow_mut().take());
    if CLIENT_EXISTS.load(Ordering::Acquire) {
        STALE_AFTER_FORK.store(true, Ordering::Release);
    }
}

// ---------------------------------------------------------------------------
// The working directory inside the mount

static CWD_INSIDE: AtomicBool = AtomicBool::new(false);
static CWD: RwLock<Option<String>> = RwLock::new(None);

/// The shim's working directory (an SFS path) when it is inside the mount.
pub fn cwd() -> Option<String> {
    if !CWD_INSIDE.load(Ordering::Acquire) {
        return None;
    }
    CWD.read().unwrap_or_else(|p| p.into_inner()).clone()
}

pub fn set_cwd(path: Option<String>) {
    let mut slot = CWD.write().unwrap_or_else(|p| p.into_inner());
    CWD_INSIDE.store(path.is_some(), Ordering::Release);
    if *slot != path {
        crate::exec::publish_cwd(path.as_deref());
    }
    *slot = path;
}

/// The host path of an SFS path.
/// [`host_path`] as the program's bytes, for handing to a call that takes
/// a path argument (names not UTF-8 unescaped:
/// `sfs_global::path::unescape`).
pub fn host_cpath(settings: &Settings, sfs_path: &str) -> Option<std::ffi::CString> {
    let host = host_path(settings, sfs_path);
    std::ffi::CString::new(sfs_global::path::unescape(&host).into_owned()).ok()
}

pub fn host_path(settings: &Settings, sfs_path: &str) -> String {
    if sfs_path == "/" {
        settings.mount.clone()
    } else {
        format!("{}{}", settings.mount, sfs_path)
    }
}
