//! Process life: vfork (turned into fork), and the exec/posix_spawn family
//! (which pass SFS descriptors and the working directory on, see
//! [`crate::exec`]). fork itself is handled by the pthread_atfork handlers
//! in [`crate::state`].

use crate::exec::{environ, environment_for_exec, pointers};
use libc::{c_char, c_int, pid_t};
use redhook::{hook, real};

hook! {
    // A vfork child shares the parent's memory and runs the exec hooks,
    // which allocate; a real fork makes that safe (and runs the atfork
    // handlers). Programs may only exec or _exit after vfork, so the
    // difference is cost, not behaviour.
    unsafe fn vfork() -> pid_t => sfs_vfork {
        libc::fork()
    }
}

hook! {
    unsafe fn execve(path: *const c_char, argv: *const *const c_char, envp: *const *const c_char) -> c_int => sfs_execve {
        match environment_for_exec(envp) {
            Some(env) => real!(execve)(path, argv, pointers(&env).as_ptr()),
            None => real!(execve)(path, argv, envp),
        }
    }
}

hook! {
    unsafe fn execv(path: *const c_char, argv: *const *const c_char) -> c_int => sfs_execv {
        match environment_for_exec(environ()) {
            Some(env) => real!(execve)(path, argv, pointers(&env).as_ptr()),
            None => real!(execv)(path, argv),
        }
    }
}

hook! {
    unsafe fn execvp(file: *const c_char, argv: *const *const c_char) -> c_int => sfs_execvp {
        match environment_for_exec(environ()) {
            Some(env) => real!(execvpe)(file, argv, pointers(&env).as_ptr()),
            None => real!(execvp)(file, argv),
        }
    }
}

hook! {
    unsafe fn execvpe(file: *const c_char, argv: *const *const c_char, envp: *const *const c_char) -> c_int => sfs_execvpe {
        match environment_for_exec(envp) {
            Some(env) => real!(execvpe)(file, argv, pointers(&env).as_ptr()),
            None => real!(execvpe)(file, argv, envp),
        }
    }
}

hook! {
    unsafe fn fexecve(fd: c_int, argv: *const *const c_char, envp: *const *const c_char) -> c_int => sfs_fexecve {
        match environment_for_exec(envp) {
            Some(env) => real!(fexecve)(fd, argv, pointers(&env).as_ptr()),
            None => real!(fexecve)(fd, argv, envp),
        }
    }
}

hook! {
    unsafe fn posix_spawn(pid: *mut pid_t, path: *const c_char, actions: *const libc::posix_spawn_file_actions_t, attr: *const libc::posix_spawnattr_t, argv: *const *mut c_char, envp: *const *mut c_char) -> c_int => sfs_posix_spawn {
        match environment_for_exec(envp.cast()) {
            Some(env) => real!(posix_spawn)(pid, path, actions, attr, argv, pointers(&env).as_ptr().cast()),
            None => real!(posix_spawn)(pid, path, actions, attr, argv, envp),
        }
    }
}

hook! {
    unsafe fn posix_spawnp(pid: *mut pid_t, file: *const c_char, actions: *const libc::posix_spawn_file_actions_t, attr: *const libc::posix_spawnattr_t, argv: *const *mut c_char, envp: *const *mut c_char) -> c_int => sfs_posix_spawnp {
        match environment_for_exec(envp.cast()) {
            Some(env) => real!(posix_spawnp)(pid, file, actions, attr, argv, pointers(&env).as_ptr().cast()),
            None => real!(posix_spawnp)(pid, file, actions, attr, argv, envp),
        }
    }
}
