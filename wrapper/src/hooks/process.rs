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
pub(crate) unsafe fn sfs_vfork() -> pid_t {
    libc::fork()
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
        return real!(execve)(path, argv, envp);
    }
    // What waits would be lost with this image.
    state::send_waiting_dir_times();
    // SAFETY: non-NULL, NUL-terminated per execve's contract.
    let path_c = unsafe { CStr::from_ptr(path) };
    // SAFETY: argv per execve's contract.
    match program::prepare(path_c, unsafe { program::collect_argv(argv) }) {
        None => real!(execve)(path, argv, envp),
        Some(Err(e)) => {
            state::set_errno(program::errno_of(&e));
            -1
        }
        Some(Ok(launch)) => {
            real!(execve)(launch.path.as_ptr(), launch.argv_pointers().as_ptr(), envp)
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
fn needs_own_search(file: *const c_char) -> bool {
    // SAFETY: NULL or NUL-terminated per the exec family's contract.
    !file.is_null()
        && (unsafe { CStr::from_ptr(file) }.to_bytes().contains(&b'/')
            || program::path_var_names_the_mount())
}

pub(crate) unsafe fn sfs_execve(
    path: *const c_char,
    argv: *const *const c_char,
    envp: *const *const c_char,
) -> c_int {
    match environment_for_exec(envp) {
        Some(env) => exec_one(path, argv, pointers(&env).as_ptr()),
        None => exec_one(path, argv, envp),
    }
}

pub(crate) unsafe fn sfs_execv(path: *const c_char, argv: *const *const c_char) -> c_int {
    match environment_for_exec(environ()) {
        Some(env) => exec_one(path, argv, pointers(&env).as_ptr()),
        None => exec_one(path, argv, environ()),
    }
}

pub(crate) unsafe fn sfs_execvp(file: *const c_char, argv: *const *const c_char) -> c_int {
    let env = environment_for_exec(environ());
    let envp = env.as_ref().map(|e| pointers(e));
    let envp = envp.as_ref().map_or(environ(), |p| p.as_ptr());
    if needs_own_search(file) {
        exec_search(file, argv, envp)
    } else {
        real!(execvpe)(file, argv, envp)
    }
}

pub(crate) unsafe fn sfs_execvpe(
    file: *const c_char,
    argv: *const *const c_char,
    envp: *const *const c_char,
) -> c_int {
    let env = environment_for_exec(envp);
    let pointers_of_env = env.as_ref().map(|e| pointers(e));
    let envp = pointers_of_env.as_ref().map_or(envp, |p| p.as_ptr());
    if needs_own_search(file) {
        exec_search(file, argv, envp)
    } else {
        real!(execvpe)(file, argv, envp)
    }
}

pub(crate) unsafe fn sfs_fexecve(
    fd: c_int,
    argv: *const *const c_char,
    envp: *const *const c_char,
) -> c_int {
    let env = environment_for_exec(envp);
    let pointers_of_env = env.as_ref().map(|e| pointers(e));
    let envp = pointers_of_env.as_ref().map_or(envp, |p| p.as_ptr());
    // An SFS descriptor's placeholder is a directory: exec the file it
    // stands for instead.
    let sfs_file = state::sfs_fd(fd).and_then(|_inside| {
        let settings = state::settings()?;
        let path = state::with_client(|c| c.fd_path(fd)).ok()?;
        state::host_cpath(settings, &path)
    });
    match sfs_file {
        Some(path) => exec_one(path.as_ptr(), argv, envp),
        None => real!(fexecve)(fd, argv, envp),
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
        return real!(posix_spawn)(pid, path, actions, attr, argv, envp);
    }
    // SAFETY: non-NULL, NUL-terminated per the contract.
    let path_c = unsafe { CStr::from_ptr(path) };
    // SAFETY: argv per the contract.
    match program::prepare(path_c, unsafe { program::collect_argv(argv.cast()) }) {
        None => real!(posix_spawn)(pid, path, actions, attr, argv, envp),
        Some(Err(e)) => program::errno_of(&e),
        // The memory file stays open in this process until the child has
        // exec'ed (posix_spawn returns after that).
        Some(Ok(launch)) => real!(posix_spawn)(
            pid,
            launch.path.as_ptr(),
            actions,
            attr,
            launch.argv_pointers().as_ptr().cast(),
            envp,
        ),
    }
}

pub(crate) unsafe fn sfs_posix_spawn(
    pid: *mut pid_t,
    path: *const c_char,
    actions: *const libc::posix_spawn_file_actions_t,
    attr: *const libc::posix_spawnattr_t,
    argv: *const *mut c_char,
    envp: *const *mut c_char,
) -> c_int {
    match environment_for_exec(envp.cast()) {
        Some(env) => spawn_one(
            pid,
            path,
            actions,
            attr,
            argv,
            pointers(&env).as_ptr().cast(),
        ),
        None => spawn_one(pid, path, actions, attr, argv, envp),
    }
}

pub(crate) unsafe fn sfs_posix_spawnp(
    pid: *mut pid_t,
    file: *const c_char,
    actions: *const libc::posix_spawn_file_actions_t,
    attr: *const libc::posix_spawnattr_t,
    argv: *const *mut c_char,
    envp: *const *mut c_char,
) -> c_int {
    let env = environment_for_exec(envp.cast());
    let pointers_of_env = env.as_ref().map(|e| pointers(e));
    let envp = pointers_of_env.as_ref().map_or(envp, |p| p.as_ptr().cast());
    if !needs_own_search(file) {
        return real!(posix_spawnp)(pid, file, actions, attr, argv, envp);
    }
    // SAFETY: NUL-terminated per the contract.
    program::search(CStr::from_ptr(file), |candidate| {
        spawn_one(pid, candidate.as_ptr(), actions, attr, argv, envp)
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
        pub(crate) unsafe fn $hook($($arg: $ty),*) -> $ret {
            let rc = real!($name)($($arg),*);
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
