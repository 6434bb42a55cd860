//! The SFS LD_PRELOAD shim: `libsfs_shim.so` (crate `sfs_shim`).
//!
//! Loaded by the entry library `libsfs_preload.so` (`wrapper/preload`, what
//! `LD_PRELOAD` and `sfs exec` name) on the first call that touches the
//! mount, or preloaded itself, it interposes the libc
//! file API. A call on a path under the mount directory (`SFS_MOUNTDIR`), or
//! on a descriptor the shim handed out, goes to the SFS servers through
//! [`sfs_client`]; everything else goes to the real libc function untouched.
//!
//! How it holds together:
//!
//! - [`state`]: settings from the environment, the lazily created client,
//!   the re-entrancy guard, fork handling.
//! - [`descriptors`]: which numbers are SFS descriptors, their kernel
//!   placeholders, and the one record the shim keeps per SFS descriptor.
//! - [`paths`]: host path (+ dirfd, + the shim's working directory) → SFS path.
//! - [`hooks`]: the interposed functions, one file per family.
//! - [`stdio`]: `FILE*` streams on SFS files through `fopencookie`.
//! - [`environment`]: the C library's environment, never the program's own
//!   `getenv`/`setenv` (bash defines them).
//! - [`exec`]: passing open SFS descriptors and the working directory across
//!   `exec`.
//!
//! Rules every hook follows: a call made while the thread is already inside
//! the shim, or on a path/descriptor that is not SFS, goes to the real
//! function; an SFS call never panics across the FFI boundary (a panic
//! becomes EIO); nothing (no thread, no socket, no file) is created before
//! the first SFS path is seen. See docs/shim.md.

/// A system call by number that reaches the kernel as it is: through the
/// C library's `syscall()`, not the preload library's, which sends calls
/// naming a path or a descriptor into the hooks (wrapper/preload/entry.c,
/// "syscall(2)"). The shim's own system calls (on placeholders, on its
/// lock files) must not come back to it.
macro_rules! raw_syscall {
    ($($arg:expr),+ $(,)?) => {
        ($crate::raw::libc_syscall())($($arg),+)
    };
}

/// The next library's definition of the hooked function `name` (what the
/// program would have called without the shim), as `wrapper/hooks.table`
/// declares it.
macro_rules! real {
    ($name:ident) => {
        $crate::hooks::table::real::$name()
    };
}

pub mod raw;

pub mod descriptors;
pub mod environment;
pub mod exec;
pub mod hooks;
pub mod listing;
pub mod paths;
pub mod program;
pub mod route;
pub mod state;
pub mod stdio;

/// Runs when the library is loaded. Costs two environment look-ups unless
/// the process was exec'ed by a shim process that passed SFS descriptors or
/// a working directory inside the mount (see [`exec`]).
extern "C" fn on_load() {
    exec::restore_from_environment();
}

#[used]
#[link_section = ".init_array"]
static ON_LOAD: extern "C" fn() = on_load;
