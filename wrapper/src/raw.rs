//! The C library's `syscall()` (see `raw_syscall!` in lib.rs).

use libc::c_long;
use std::sync::OnceLock;

/// The type of `syscall(2)`.
pub type SyscallFn = unsafe extern "C" fn(c_long, ...) -> c_long;

/// The C library's `syscall()`, looked up once in libc itself. When it
/// cannot be found (no `libc.so.6` loaded under that name), the symbol the
/// dynamic linker binds, which is then the C library's too.
pub fn libc_syscall() -> SyscallFn {
    static FOUND: OnceLock<SyscallFn> = OnceLock::new();
    *FOUND.get_or_init(|| {
        // SAFETY: dlopen with RTLD_NOLOAD only returns a handle to a library
        // already loaded (the C library every process here has); dlsym
        // reads its symbol table. The symbol, when found, is `syscall` of
        // glibc, whose type is SyscallFn.
        unsafe {
            let handle = libc::dlopen(c"libc.so.6".as_ptr(), libc::RTLD_NOW | libc::RTLD_NOLOAD);
            let found = if handle.is_null() {
                std::ptr::null_mut()
            } else {
                libc::dlsym(handle, c"syscall".as_ptr())
            };
            if found.is_null() {
                libc::syscall as SyscallFn
            } else {
                std::mem::transmute::<*mut libc::c_void, SyscallFn>(found)
            }
        }
    })
}
