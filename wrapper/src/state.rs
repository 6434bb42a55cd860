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
use std::sync::atomic::{AtomicBool, AtomicU8, Ordering};
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

/// True while this thread runs shim code.
pub fn inside_now() -> bool {
    INSIDE.try_with(|i| i.get()).unwrap_or(true)
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
        Arc::new(crate::descriptors::KernelOffsets),
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
