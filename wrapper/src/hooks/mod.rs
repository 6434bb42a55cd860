//! The interposed libc functions, one file per family.
//!
//! Every hook has the same shape: decide whether the call is SFS (a path
//! under the mount, or a descriptor in the SFS set, and the thread not
//! already inside the shim); if so, run it through the client with
//! [`crate::state::run`] (errors become errno, panics become EIO); if not,
//! call the real function, found with `dlsym(RTLD_NEXT)` by redhook.
//!
//! Variadic functions (`open`, `openat`, `fcntl`, `ioctl`) are declared with
//! their optional argument as a fixed one: on x86_64 and aarch64 Linux a
//! variadic integer or pointer argument travels in the same register as a
//! fixed one, and it is only read when the flags say it was passed.

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
