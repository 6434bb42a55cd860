//! The handlers of the interposed libc functions, one file per family.
//! `wrapper/hooks.table` lists the functions and names each one's handler;
//! [`table`] is generated from it (docs/shim.md, "The hook table").
//!
//! Every handler has the same shape: decide whether the call is SFS (a path
//! under the mount, or a descriptor in the SFS set, and the thread not
//! already inside the shim); if so, run it through the client with
//! [`crate::state::run`] (errors become errno, panics become EIO); if not,
//! call the real function, `real!(name)` (found with `dlsym(RTLD_NEXT)` by
//! redhook).
//!
//! Variadic functions (`open`, `openat`, `fcntl`, `ioctl`) are declared with
//! their optional argument as a fixed one: on x86_64 and aarch64 Linux a
//! variadic integer or pointer argument travels in the same register as a
//! fixed one, and it is only read when the flags say it was passed.

/// The exported symbols: generated from `wrapper/hooks.table` by
/// `wrapper/build.rs`, each calling its handler in the modules below.
// redhook's `hook!` calls the handler, and the next library's function,
// inside its `unsafe extern "C" fn` without blocks of their own (the
// handlers' contracts are the C functions': each handler's `# Safety`),
// and keeps the next library's function in a `static mut`.
#[allow(non_snake_case, unsafe_op_in_unsafe_fn, static_mut_refs)]
pub(crate) mod table {
    include!(concat!(env!("OUT_DIR"), "/hook_table.rs"));
}

pub mod compat;
pub mod cwd;
pub mod dir;
pub mod fd;
pub mod io;
pub mod lock;
pub mod misc;
pub mod mmap;
pub mod namespace;
pub mod open;
pub mod process;
pub mod socket;
pub mod stat;
pub mod temp;
