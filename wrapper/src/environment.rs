//! The process environment, read and written the way the C library keeps
//! it, whatever the program defines.
//!
//! Some programs define their own `getenv`/`setenv`/`unsetenv`, which the
//! dynamic linker then binds every library's calls to. bash is the one that
//! matters: before its `main` has imported the environment into its shell
//! variables, bash's `setenv` creates an empty variable table, and from then
//! on bash's `getenv` answers from that table only — every other variable
//! (`SFS_MOUNTDIR`, `SFS_CONFIG`, ...) reads as unset. A shim that called
//! `setenv` while loading (to publish its working directory) therefore found
//! no mount in a bash started inside the mount and turned itself off.
//!
//! So the shim never goes through the global symbols: it reads the C
//! library's `environ` array itself. Writing is different: a program with
//! its own environment functions also owns the `environ` array (bash points
//! it at its export array and edits that in place by index; a glibc
//! `unsetenv` shifting its entries made bash crash later in
//! `update_export_env_inplace`). So the shim writes — through glibc's own
//! `setenv`/`unsetenv`, looked up in libc's handle — only when the
//! program's `setenv` *is* glibc's; otherwise it leaves the environment to
//! the program. Writing matters only for children started by exec paths the
//! shim cannot see (`system`, `popen`, glibc's internal `posix_spawn`),
//! which take `environ` as it is; every exec the shim does see gets its
//! variables added by the exec hooks in any case.

use std::ffi::{c_char, c_int, CStr, OsString};
use std::os::unix::ffi::OsStrExt;
use std::sync::OnceLock;

extern "C" {
    static environ: *const *const c_char;
}

/// The value of `name` in the C library's `environ`, if set and not empty.
pub fn var(name: &str) -> Option<OsString> {
    let key = name.as_bytes();
    // SAFETY: `environ` is NULL or a NULL-terminated array of NUL-terminated
    // strings. Like getenv, this is not safe against a concurrent setenv in
    // another thread; the shim reads its settings once, early.
    unsafe {
        let mut p = environ;
        while !p.is_null() && !(*p).is_null() {
            let entry = CStr::from_ptr(*p).to_bytes();
            p = p.add(1);
            if entry.len() > key.len() && entry.starts_with(key) && entry[key.len()] == b'=' {
                let value = &entry[key.len() + 1..];
                return (!value.is_empty())
                    .then(|| std::ffi::OsStr::from_bytes(value).to_os_string());
            }
        }
    }
    None
}

/// As [`var`], as UTF-8 text (`None` when it is not).
pub fn var_text(name: &str) -> Option<String> {
    var(name).and_then(|v| v.into_string().ok())
}

type SetEnv = unsafe extern "C" fn(*const c_char, *const c_char, c_int) -> c_int;
type UnsetEnv = unsafe extern "C" fn(*const c_char) -> c_int;

/// glibc's own `setenv` and `unsetenv`, if the program uses them too
/// (`None` for a program with its own, such as bash: see the module
/// documentation).
fn libc_functions() -> Option<(SetEnv, UnsetEnv)> {
    static FUNCTIONS: OnceLock<Option<(SetEnv, UnsetEnv)>> = OnceLock::new();
    *FUNCTIONS.get_or_init(|| {
        // SAFETY: dlopen with RTLD_NOLOAD only returns a handle of the libc
        // the process already has; dlsym on that handle searches libc (and
        // its dependencies), never the program. The symbols have the C
        // signatures declared above.
        unsafe {
            let handle = libc::dlopen(c"libc.so.6".as_ptr(), libc::RTLD_NOW | libc::RTLD_NOLOAD);
            if handle.is_null() {
                return None;
            }
            let set = libc::dlsym(handle, c"setenv".as_ptr());
            let unset = libc::dlsym(handle, c"unsetenv".as_ptr());
            if set.is_null() || unset.is_null() {
                return None;
            }
            // The program's own definitions win in the global scope.
            if libc::dlsym(libc::RTLD_DEFAULT, c"setenv".as_ptr()) != set
                || libc::dlsym(libc::RTLD_DEFAULT, c"unsetenv".as_ptr()) != unset
            {
                return None;
            }
            Some((
                std::mem::transmute::<*mut libc::c_void, SetEnv>(set),
                std::mem::transmute::<*mut libc::c_void, UnsetEnv>(unset),
            ))
        }
    })
}

/// Sets `name` to `value` in `environ` (glibc's `setenv`), or removes it
/// when `value` is `None`. Does nothing in a program with its own
/// environment functions, or if glibc's cannot be found (then children
/// started behind the shim's back miss the value, nothing worse).
///
/// `setenv` is not safe against `getenv` in other threads; the shim calls
/// this rarely (a change of directory into or out of the mount).
pub fn set(name: &CStr, value: Option<&CStr>) {
    let Some((setenv, unsetenv)) = libc_functions() else {
        return;
    };
    // SAFETY: glibc's functions with valid C strings; see above for threads.
    unsafe {
        match value {
            Some(v) => setenv(name.as_ptr(), v.as_ptr(), 1),
            None => unsetenv(name.as_ptr()),
        };
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn reads_and_writes_the_c_library_environment() {
        set(c"SFS_ENVIRONMENT_TEST", Some(c"a=b"));
        assert_eq!(var_text("SFS_ENVIRONMENT_TEST").as_deref(), Some("a=b"));
        assert_eq!(var("SFS_ENVIRONMENT_TES"), None, "a prefix is not a name");
        set(c"SFS_ENVIRONMENT_TEST", Some(c""));
        assert_eq!(var("SFS_ENVIRONMENT_TEST"), None, "empty reads as unset");
        set(c"SFS_ENVIRONMENT_TEST", None);
        assert_eq!(var("SFS_ENVIRONMENT_TEST"), None);
    }
}
