//! What a client embedded in someone else's process needs beyond POSIX.
//!
//! The LD_PRELOAD shim (`wrapper/`) hands the application real kernel
//! descriptor numbers that it reserves itself, so it opens files at numbers
//! it chooses ([`Client::open_at_fd`], [`Client::dup_to`]). Its runtime
//! threads must not run the application's signal handlers and must be marked
//! as "inside the shim" ([`Client::new_embedded`]). And because a tokio
//! runtime does not survive `fork`, a forked child replaces the runtime and
//! the connections while keeping its open files ([`Client::reinit_after_fork`]).

use crate::servers::ServerSlot;
use crate::{Client, DescriptorOffsets};
use sfs_global::config::Config;
use sfs_global::hostfile::Hostfile;
use sfs_global::{FileKind, SfsError, SfsResult};
use std::sync::Arc;

/// Runs at the start of every runtime thread (before it runs any task).
pub type ThreadStart = Arc<dyn Fn() + Send + Sync + 'static>;

/// An open descriptor as the shim passes it across `exec`.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct OpenFdInfo {
    pub fd: i32,
    /// SFS path the descriptor refers to (after symlinks).
    pub path: String,
    /// `open(2)` flags it was opened with.
    pub flags: i32,
    /// Current file offset.
    pub offset: u64,
    pub is_dir: bool,
}

/// The shim's runtime: current-thread, so the client starts no thread of
/// its own (the calling thread drives the I/O inside `block_on`); threads of
/// its blocking pool, if any are ever needed, run `on_thread_start` first.
fn build_runtime(on_thread_start: &ThreadStart) -> SfsResult<tokio::runtime::Runtime> {
    let hook = on_thread_start.clone();
    tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .on_thread_start(move || hook())
        .build()
        .map_err(|e| SfsError::io(format!("cannot start the client runtime: {e}")))
}

impl Client {
    /// A client for a process that embeds it (the shim): a current-thread
    /// runtime whose helper threads run `on_thread_start` first, and the
    /// offsets of all its descriptors kept by `offsets`. The embedder
    /// finds the job secret (it may read the environment its own way).
    pub fn new_embedded(
        config: Config,
        hostfile: Hostfile,
        secret: sfs_global::secret::Secret,
        on_thread_start: ThreadStart,
        offsets: Arc<dyn DescriptorOffsets>,
    ) -> SfsResult<Client> {
        let mut client = Client::with_secret(config, hostfile, secret)?;
        client.descriptor_offsets = Some(offsets);
        client.replace_runtime(&on_thread_start, false)?;
        Ok(client)
    }

    /// In a forked child: a new runtime and new (lazy) connections; the open
    /// files and their offsets stay. The parent's runtime threads do not
    /// exist in the child, so the old runtime and connections are leaked
    /// rather than dropped (dropping could wait for those threads).
    pub fn reinit_after_fork(&mut self, on_thread_start: ThreadStart) -> SfsResult<()> {
        self.replace_runtime(&on_thread_start, true)?;
        // The directory times the parent holds back are the parent's to
        // send (a child sending them late could overtake its utimens).
        self.forget_dir_times();
        Ok(())
    }

    fn replace_runtime(&mut self, on_thread_start: &ThreadStart, leak_old: bool) -> SfsResult<()> {
        let runtime = build_runtime(on_thread_start)?;
        let servers = {
            let _guard = runtime.enter();
            self.servers
                .iter()
                .map(|s| ServerSlot::new(s.entry().clone(), &self.options))
                .collect::<SfsResult<Vec<_>>>()?
        };
        let old_servers = std::mem::replace(&mut self.servers, servers);
        let old_runtime = std::mem::replace(&mut self.runtime, runtime);
        if leak_old {
            std::mem::forget(old_servers);
            std::mem::forget(old_runtime);
        } else {
            drop(old_servers);
            drop(old_runtime);
        }
        Ok(())
    }

    /// `open(2)` placing the new descriptor at `fd`, a number the caller
    /// owns (the shim reserves it in the kernel first). Replaces any SFS
    /// descriptor already at `fd`.
    pub fn open_at_fd(&self, path: &str, flags: i32, mode: u32, fd: i32) -> SfsResult<()> {
        let file = self.open_file(path, flags, mode)?;
        self.files.insert_at(fd, file);
        Ok(())
    }

    /// `dup2(2)` inside the table: `newfd` shares `fd`'s open file (and
    /// offset), replacing any SFS descriptor at `newfd`.
    pub fn dup_to(&self, fd: i32, newfd: i32) -> SfsResult<()> {
        let file = self.files.get(fd)?;
        if fd != newfd {
            self.files.insert_at(newfd, file);
        }
        Ok(())
    }

    /// True if `fd` is an open SFS descriptor.
    pub fn is_open(&self, fd: i32) -> bool {
        self.files.get(fd).is_ok()
    }

    /// The `open(2)` flags of a descriptor (for `fcntl(F_GETFL)`).
    pub fn fd_flags(&self, fd: i32) -> SfsResult<i32> {
        Ok(self.files.get(fd)?.flags.0)
    }

    /// True if the descriptor refers to a directory.
    pub fn fd_is_dir(&self, fd: i32) -> SfsResult<bool> {
        Ok(self.files.get(fd)?.kind == FileKind::Directory)
    }

    /// The id of the file open at `fd` (no server asked).
    pub fn fd_id(&self, fd: i32) -> SfsResult<sfs_global::FileId> {
        Ok(self.files.get(fd)?.id)
    }

    /// One open descriptor's state, as [`OpenFdInfo`].
    pub fn fd_info(&self, fd: i32) -> SfsResult<OpenFdInfo> {
        let file = self.files.get(fd)?;
        Ok(OpenFdInfo {
            fd,
            path: file.path(),
            flags: file.flags.0,
            offset: self.offset_of(fd)?,
            is_dir: file.kind == FileKind::Directory,
        })
    }

    /// Every open descriptor (for passing them across `exec`).
    pub fn open_fds(&self) -> Vec<OpenFdInfo> {
        let mut all: Vec<OpenFdInfo> = self
            .files
            .snapshot()
            .into_iter()
            .map(|(fd, file)| OpenFdInfo {
                fd,
                path: file.path(),
                flags: file.flags.0,
                offset: self.offset_of(fd).unwrap_or(0),
                is_dir: file.kind == FileKind::Directory,
            })
            .collect();
        all.sort_by_key(|i| i.fd);
        all
    }

    /// Drops descriptor `fd` from the table if it is there (the shim calls
    /// this when the kernel closed the number under it, e.g. `dup2` onto it).
    pub fn forget_fd(&self, fd: i32) {
        let _ = self.close(fd);
    }

    /// `lchown(2)`: like `chown` but on a symlink itself.
    pub fn lchown(&self, path: &str, uid: Option<u32>, gid: Option<u32>) -> SfsResult<()> {
        let req = sfs_rpc::pb::SetAttrRequest {
            uid,
            gid,
            ..Default::default()
        };
        self.change_attrs(path, false, req)
    }

    /// `utimensat(2)` with `AT_SYMLINK_NOFOLLOW`: times of a symlink itself.
    pub fn lutimens(
        &self,
        path: &str,
        atime_ns: Option<i64>,
        mtime_ns: Option<i64>,
    ) -> SfsResult<()> {
        let req = sfs_rpc::pb::SetAttrRequest {
            atime_ns,
            mtime_ns,
            ..Default::default()
        };
        self.change_attrs(path, false, req)
    }

    /// Permission bits and mtime of `path` itself (a final symlink is not
    /// followed) in one call: what a copy tool sets on a file it has
    /// written, one round trip instead of chmod's and utimens's two each.
    pub fn lset_mode_and_mtime(&self, path: &str, mode: u32, mtime_ns: i64) -> SfsResult<()> {
        let req = sfs_rpc::pb::SetAttrRequest {
            mode: Some(mode & 0o7777),
            mtime_ns: Some(mtime_ns),
            ..Default::default()
        };
        self.change_attrs(path, false, req)
    }

    /// True if every server of the hostfile is on this machine: then all
    /// clients of the instance are too (a job on one node), and node-local
    /// advisory locks are locks for every client.
    pub fn all_servers_local(&self) -> bool {
        self.local_servers() == self.servers.len()
    }
}
