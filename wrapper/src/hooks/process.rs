//! Process life: vfork (turned into fork), and the exec/posix_spawn family
//! (which pass SFS descriptors and the working directory on, see
//! [`crate::exec`], and run programs stored in SFS, see
//! [`crate::program`]). fork itself is handled by the pthread_atfork handlers
//! in [`crate::state`]. And the set*id family, after which the client
//! reads the caller's ids again.

use crate::exec::{environ, environment_for_exec, pointers};
use crate::{program, state};
use libc::{c_char, c_int, gid_t, pid_t, size_t, uid_t};
use std::ffi::CStr;

// A vfork child shares the parent's memory and runs the exec hooks,
// which allocate; a real fork makes that safe (and runs the atfork
// handlers). Programs may only exec or _exit after vfork, so the
// difference is cost, not behaviour.
/// # Safety
/// None: vfork(2) takes no arguments (the handler is `unsafe` by the hooks'
/// shape).
pub(crate) unsafe fn sfs_vfork() -> pid_t {
    // SAFETY: fork has no memory preconditions; the child of a program that
    // asked for vfork may only exec or _exit, which a forked child can do too
    // (see above).
    unsafe { libc::fork() }
}

/// `execve` as the hooks run it: SFS programs through [`program::prepare`],
/// everything else by the kernel; returns only on failure, with errno set.
///
/// # Safety
/// The arguments are what execve(2) takes.
unsafe fn exec_one(
    path: *const c_char,
    argv: *const *const c_char,
    envp: *const *const c_char,
) -> c_int {
    if path.is_null() {
        // SAFETY: the caller's arguments go on unchanged to the next library's
        // `execve`, under the contract this function was called with (it fails
        // with EFAULT on the NULL path).
        return unsafe { real!(execve)(path, argv, envp) };
    }
    // What waits would be lost with this image.
    state::send_waiting_dir_times();
    // SAFETY: non-NULL, NUL-terminated per execve's contract.
    let path_c = unsafe { CStr::from_ptr(path) };
    // SAFETY: argv per execve's contract.
    match program::prepare(path_c, unsafe { program::collect_argv(argv) }) {
        // SAFETY: the caller's arguments go on unchanged to the next library's
        // `execve`, under the contract this function was called with.
        None => unsafe { real!(execve)(path, argv, envp) },
        Some(Err(e)) => {
            state::set_errno(program::errno_of(&e));
            -1
        }
        Some(Ok(launch)) => {
            // SAFETY: `launch.path` is a C string and `argv_pointers` a
            // NULL-terminated vector over `launch.argv`, both alive until the
            // call returns; `envp` is the caller's (this function's contract).
            unsafe { real!(execve)(launch.path.as_ptr(), launch.argv_pointers().as_ptr(), envp) }
        }
    }
}

/// `execvpe` with a search that also sees programs in SFS (glibc's search
/// only asks the kernel); used when `file` has a `/` or `PATH` names the
/// mount. A candidate the kernel calls ENOEXEC (no `#!`, not a binary) is
/// run by /bin/sh, as glibc does.
///
/// # Safety
/// The arguments are what execvpe(3) takes.
unsafe fn exec_search(
    file: *const c_char,
    argv: *const *const c_char,
    envp: *const *const c_char,
) -> c_int {
    // SAFETY: NUL-terminated per the contract.
    let file = unsafe { CStr::from_ptr(file) };
    let errno = program::search(file, |candidate| {
        // SAFETY: candidate is a C string; argv and envp per the contract.
        if unsafe { exec_one(candidate.as_ptr(), argv, envp) } == 0 {
            return 0;
        }
        let e = state::errno();
        if e != libc::ENOEXEC {
            return e;
        }
        // SAFETY: argv per the contract.
        let rest = unsafe { program::collect_argv(argv) };
        let mut sh_argv = vec![c"/bin/sh".to_owned(), candidate.to_owned()];
        sh_argv.extend(rest.into_iter().skip(1));
        let pointers = pointers(&sh_argv);
        // SAFETY: C strings and a NULL-terminated vector that outlive the call.
        unsafe { exec_one(c"/bin/sh".as_ptr(), pointers.as_ptr(), envp) };
        state::errno()
    });
    state::set_errno(errno);
    -1
}

/// Whether an `execvp`-style call must search itself.
///
/// # Safety
/// `file` is NULL or a NUL-terminated string.
unsafe fn needs_own_search(file: *const c_char) -> bool {
    // SAFETY: not NULL (checked first), so NUL-terminated (this function's
    // contract).
    !file.is_null()
        && (unsafe { CStr::from_ptr(file) }.to_bytes().contains(&b'/')
            || program::path_var_names_the_mount())
}

/// # Safety
/// `path` is NULL or a NUL-terminated string, `argv` and `envp` NULL or
/// NULL-terminated arrays of NUL-terminated strings: the contract of execve(2),
/// whose arguments these are.
pub(crate) unsafe fn sfs_execve(
    path: *const c_char,
    argv: *const *const c_char,
    envp: *const *const c_char,
) -> c_int {
    // SAFETY: `envp` as this function's contract says, which is
    // `environment_for_exec`'s.
    match unsafe { environment_for_exec(envp) } {
        // SAFETY: `path` and `argv` as execve takes them (this function's
        // contract); the new environment is a NULL-terminated vector over
        // `env`'s C strings, both alive until the call returns.
        Some(env) => unsafe { exec_one(path, argv, pointers(&env).as_ptr()) },
        // SAFETY: the caller's arguments go on unchanged to `exec_one`, whose
        // contract (execve's) is this function's.
        None => unsafe { exec_one(path, argv, envp) },
    }
}

/// # Safety
/// `path` is NULL or a NUL-terminated string, `argv` NULL or a NULL-terminated
/// array of NUL-terminated strings: the contract of execv(3), whose arguments
/// these are.
pub(crate) unsafe fn sfs_execv(path: *const c_char, argv: *const *const c_char) -> c_int {
    // SAFETY: `environ` is NULL or the process's NULL-terminated array of C
    // strings.
    match unsafe { environment_for_exec(environ()) } {
        // SAFETY: `path` and `argv` as execve takes them (this function's
        // contract); the new environment is a NULL-terminated vector over
        // `env`'s C strings, both alive until the call returns.
        Some(env) => unsafe { exec_one(path, argv, pointers(&env).as_ptr()) },
        // SAFETY: `path` and `argv` as this function's contract says, with the
        // process's environment, as execv passes it.
        None => unsafe { exec_one(path, argv, environ()) },
    }
}

/// # Safety
/// `file` is NULL or a NUL-terminated string, `argv` NULL or a NULL-terminated
/// array of NUL-terminated strings: the contract of execvp(3), whose arguments
/// these are.
pub(crate) unsafe fn sfs_execvp(file: *const c_char, argv: *const *const c_char) -> c_int {
    // SAFETY: `environ` is NULL or the process's NULL-terminated array of C
    // strings.
    let env = unsafe { environment_for_exec(environ()) };
    let envp = env.as_ref().map(|e| pointers(e));
    let envp = envp.as_ref().map_or(environ(), |p| p.as_ptr());
    // SAFETY: `file` is NULL or NUL-terminated (this function's contract).
    if unsafe { needs_own_search(file) } {
        // SAFETY: `file` is not NULL (`needs_own_search`) and NUL-terminated,
        // `argv` as execvp takes it (this function's contract); `envp` is the
        // process's environment or a NULL-terminated vector over `env`, both
        // alive until the call returns.
        unsafe { exec_search(file, argv, envp) }
    } else {
        // SAFETY: the caller's `file` and `argv` go on unchanged to the next
        // library's `execvpe`, under the contract this function was called
        // with; `envp` is the process's environment or a NULL-terminated vector
        // over `env`, both alive until the call returns.
        unsafe { real!(execvpe)(file, argv, envp) }
    }
}

/// # Safety
/// `file` is NULL or a NUL-terminated string, `argv` and `envp` NULL or
/// NULL-terminated arrays of NUL-terminated strings: the contract of
/// execvpe(3), whose arguments these are.
pub(crate) unsafe fn sfs_execvpe(
    file: *const c_char,
    argv: *const *const c_char,
    envp: *const *const c_char,
) -> c_int {
    // SAFETY: `envp` as this function's contract says, which is
    // `environment_for_exec`'s.
    let env = unsafe { environment_for_exec(envp) };
    let pointers_of_env = env.as_ref().map(|e| pointers(e));
    let envp = pointers_of_env.as_ref().map_or(envp, |p| p.as_ptr());
    // SAFETY: `file` is NULL or NUL-terminated (this function's contract).
    if unsafe { needs_own_search(file) } {
        // SAFETY: `file` is not NULL (`needs_own_search`) and NUL-terminated,
        // `argv` as execvpe takes it (this function's contract); `envp` is the
        // caller's or a NULL-terminated vector over `env`, alive until the call
        // returns.
        unsafe { exec_search(file, argv, envp) }
    } else {
        // SAFETY: the caller's `file` and `argv` go on unchanged to the next
        // library's `execvpe`, under the contract this function was called
        // with; `envp` is the caller's or a NULL-terminated vector over `env`,
        // alive until the call returns.
        unsafe { real!(execvpe)(file, argv, envp) }
    }
}

/// # Safety
/// `argv` and `envp` are NULL or NULL-terminated arrays of NUL-terminated
/// strings: the contract of fexecve(3), whose arguments these are.
pub(crate) unsafe fn sfs_fexecve(
    fd: c_int,
    argv: *const *const c_char,
    envp: *const *const c_char,
) -> c_int {
    // SAFETY: `envp` as this function's contract says, which is
    // `environment_for_exec`'s.
    let env = unsafe { environment_for_exec(envp) };
    let pointers_of_env = env.as_ref().map(|e| pointers(e));
    let envp = pointers_of_env.as_ref().map_or(envp, |p| p.as_ptr());
    // An SFS descriptor's placeholder is a directory: exec the file it
    // stands for instead.
    let sfs_file = crate::descriptors::sfs_fd(fd).and_then(|_inside| {
        let settings = state::settings()?;
        let path = state::with_client(|c| c.fd_path(fd)).ok()?;
        state::host_cpath(settings, &path)
    });
    match sfs_file {
        // SAFETY: `path` is a C string alive until the call returns; `argv` as
        // this function's contract says; `envp` the caller's or a
        // NULL-terminated vector over `env`, alive until the call returns.
        Some(path) => unsafe { exec_one(path.as_ptr(), argv, envp) },
        // SAFETY: the caller's `fd` and `argv` go on unchanged to the next
        // library's `fexecve`, under the contract this function was called
        // with; `envp` is the caller's or a NULL-terminated vector over `env`,
        // alive until the call returns.
        None => unsafe { real!(fexecve)(fd, argv, envp) },
    }
}

/// `posix_spawn` of `path`, an SFS program made runnable first. Returns
/// the error number (0 on success), as posix_spawn does.
///
/// # Safety
/// The arguments are what posix_spawn(3) takes.
unsafe fn spawn_one(
    pid: *mut pid_t,
    path: *const c_char,
    actions: *const libc::posix_spawn_file_actions_t,
    attr: *const libc::posix_spawnattr_t,
    argv: *const *mut c_char,
    envp: *const *mut c_char,
) -> c_int {
    if path.is_null() {
        // SAFETY: the caller's arguments go on unchanged to the next library's
        // `posix_spawn`, under the contract this function was called with.
        return unsafe { real!(posix_spawn)(pid, path, actions, attr, argv, envp) };
    }
    // SAFETY: non-NULL, NUL-terminated per the contract.
    let path_c = unsafe { CStr::from_ptr(path) };
    // SAFETY: argv per the contract.
    match program::prepare(path_c, unsafe { program::collect_argv(argv.cast()) }) {
        // SAFETY: the caller's arguments go on unchanged to the next library's
        // `posix_spawn`, under the contract this function was called with.
        None => unsafe { real!(posix_spawn)(pid, path, actions, attr, argv, envp) },
        Some(Err(e)) => program::errno_of(&e),
        // The memory file stays open in this process until the child has
        // exec'ed (posix_spawn returns after that).
        // SAFETY: `launch.path` is a C string and `argv_pointers` a
        // NULL-terminated vector over `launch.argv`, both alive until the call
        // returns (posix_spawn does not keep them); `pid`, `actions`, `attr`
        // and `envp` are the caller's (this function's contract).
        Some(Ok(launch)) => unsafe {
            real!(posix_spawn)(
                pid,
                launch.path.as_ptr(),
                actions,
                attr,
                launch.argv_pointers().as_ptr().cast(),
                envp,
            )
        },
    }
}

/// # Safety
/// `pid` is NULL or valid for writing a `pid_t`, `path` NULL or a
/// NUL-terminated string, `actions` and `attr` NULL or initialised objects,
/// `argv` and `envp` NULL or NULL-terminated arrays of NUL-terminated strings:
/// the contract of posix_spawn(3), whose arguments these are.
pub(crate) unsafe fn sfs_posix_spawn(
    pid: *mut pid_t,
    path: *const c_char,
    actions: *const libc::posix_spawn_file_actions_t,
    attr: *const libc::posix_spawnattr_t,
    argv: *const *mut c_char,
    envp: *const *mut c_char,
) -> c_int {
    // SAFETY: `envp` as this function's contract says, which is
    // `environment_for_exec`'s.
    match unsafe { environment_for_exec(envp.cast()) } {
        // SAFETY: the caller's arguments as posix_spawn takes them (this
        // function's contract), but for the environment: a NULL-terminated
        // vector over `env`'s C strings, both alive until the call returns.
        Some(env) => unsafe {
            spawn_one(
                pid,
                path,
                actions,
                attr,
                argv,
                pointers(&env).as_ptr().cast(),
            )
        },
        // SAFETY: the caller's arguments go on unchanged to `spawn_one`, whose
        // contract (posix_spawn's) is this function's.
        None => unsafe { spawn_one(pid, path, actions, attr, argv, envp) },
    }
}

/// # Safety
/// `pid` is NULL or valid for writing a `pid_t`, `file` NULL or a
/// NUL-terminated string, `actions` and `attr` NULL or initialised objects,
/// `argv` and `envp` NULL or NULL-terminated arrays of NUL-terminated strings:
/// the contract of posix_spawnp(3), whose arguments these are.
pub(crate) unsafe fn sfs_posix_spawnp(
    pid: *mut pid_t,
    file: *const c_char,
    actions: *const libc::posix_spawn_file_actions_t,
    attr: *const libc::posix_spawnattr_t,
    argv: *const *mut c_char,
    envp: *const *mut c_char,
) -> c_int {
    // SAFETY: `envp` as this function's contract says, which is
    // `environment_for_exec`'s.
    let env = unsafe { environment_for_exec(envp.cast()) };
    let pointers_of_env = env.as_ref().map(|e| pointers(e));
    let envp = pointers_of_env.as_ref().map_or(envp, |p| p.as_ptr().cast());
    // SAFETY: `file` is NULL or NUL-terminated (this function's contract).
    if !unsafe { needs_own_search(file) } {
        // SAFETY: the caller's arguments go on unchanged to the next library's
        // `posix_spawnp`, under the contract this function was called with, but
        // for `envp`: the caller's or a NULL-terminated vector over `env`,
        // alive until the call returns.
        return unsafe { real!(posix_spawnp)(pid, file, actions, attr, argv, envp) };
    }
    // SAFETY: NUL-terminated per the contract (and not NULL:
    // `needs_own_search`).
    program::search(unsafe { CStr::from_ptr(file) }, |candidate| {
        // SAFETY: `candidate` is a C string alive through the call; the other
        // arguments as posix_spawn takes them (this function's contract),
        // `envp` the caller's or a NULL-terminated vector over `env`, alive
        // until the search returns.
        unsafe { spawn_one(pid, candidate.as_ptr(), actions, attr, argv, envp) }
    })
}

// The calls that change the process's ids: libc's, then the client library
// is told that the caller its requests carry may have changed (it keeps the
// ids it read, sfs_rpc::caller::CallerSource). glibc's own set*id functions
// call the system calls directly, so each one that can change an id SFS
// sends (effective uid and gid, supplementary groups) is hooked. Also after
// a failure: a needless re-read costs three system calls.
macro_rules! ids_hooks {
    ($($name:ident => $hook:ident ( $($arg:ident : $ty:ty),* ) -> $ret:ty, $changes:literal;)*) => {$(
        /// # Safety
        #[doc = concat!(
            "The arguments are what `", stringify!($name), "` takes (for ",
            "`setgroups`, `list` is valid for reading `size` ids; for ",
            "`initgroups`, `user` is a NUL-terminated string): the contract ",
            "of the libc function whose arguments these are."
        )]
        pub(crate) unsafe fn $hook($($arg: $ty),*) -> $ret {
            // SAFETY: the caller's arguments go on unchanged to the next
            // library's function of this name, under the contract this function
            // was called with.
            let rc = unsafe { real!($name)($($arg),*) };
            sfs_client::ids_changed();
            rc
        }
    )*};
}

ids_hooks! {
    setuid => sfs_setuid(uid: uid_t) -> c_int, "uids";
    seteuid => sfs_seteuid(uid: uid_t) -> c_int, "effective uid";
    setreuid => sfs_setreuid(ruid: uid_t, euid: uid_t) -> c_int, "uids";
    setresuid => sfs_setresuid(ruid: uid_t, euid: uid_t, suid: uid_t) -> c_int, "uids";
    setgid => sfs_setgid(gid: gid_t) -> c_int, "gids";
    setegid => sfs_setegid(gid: gid_t) -> c_int, "effective gid";
    setregid => sfs_setregid(rgid: gid_t, egid: gid_t) -> c_int, "gids";
    setresgid => sfs_setresgid(rgid: gid_t, egid: gid_t, sgid: gid_t) -> c_int, "gids";
    setgroups => sfs_setgroups(size: size_t, list: *const gid_t) -> c_int, "groups";
    // The user is a name, not a path: spelled so that the preload
    // library's generator does not take it for one (wrapper/preload/build.rs).
    initgroups => sfs_initgroups(user: *const libc::c_char, group: gid_t) -> c_int, "groups";
}
