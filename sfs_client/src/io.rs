//! The POSIX calls on open files: open (through symlinks for `O_CREAT`,
//! telling the servers a cache-mode file's source), close, dup, read,
//! write, pread, pwrite, lseek, fstat, ftruncate, fsync and sync. Each
//! finds its descriptor in the open-file table (`files.rs`) and moves bytes
//! through the chunk data path (`data.rs`); this file holds the POSIX rules
//! between the two.

use crate::files::{OpenFile, OpenFlags, Whence};
use crate::namespace::NewEntry;
use crate::Client;
use sfs_global::config::WritebackPolicy;
use sfs_global::{Errno, FileKind, Metadata, SfsError, SfsResult};
use std::sync::atomic::Ordering;
use std::sync::Arc;

/// Symlinks an `open(O_CREAT)` follows before ELOOP, as Linux's MAXSYMLINKS.
const MAX_CREATE_HOPS: usize = 40;

impl Client {
    /// `open(2)`: returns an SFS descriptor. Honours O_CREAT, O_EXCL, O_TRUNC,
    /// O_APPEND, O_DIRECTORY and O_NOFOLLOW; a directory opens read-only.
    pub fn open(&self, path: &str, flags: i32, mode: u32) -> SfsResult<i32> {
        let file = self.open_file(path, flags, mode)?;
        self.files.insert(file)
    }

    /// The open file description `open` would create, not yet in the table.
    pub(crate) fn open_file(&self, path: &str, flags: i32, mode: u32) -> SfsResult<Arc<OpenFile>> {
        self.through_dirs(path, |path| self.open_normal(path, flags, mode))
    }

    /// [`Client::open_file`] of a normalised path.
    fn open_normal(&self, path: String, flags: i32, mode: u32) -> SfsResult<Arc<OpenFile>> {
        if flags & libc::O_TMPFILE == libc::O_TMPFILE {
            return self.open_unnamed(&path, flags, mode);
        }
        let flags = OpenFlags(flags);
        let (path, md) = self.block_on(async {
            let (path, md) = self.open_entry(&path, flags, mode).await?;
            self.tell_source(&md).await?;
            Ok::<_, SfsError>((path, md))
        })?;
        // As Linux: a directory opens only to read, and not with O_CREAT
        // (even one that exists) or O_TRUNC.
        if md.is_dir() && (flags.writable() || flags.has(libc::O_CREAT) || flags.has(libc::O_TRUNC))
        {
            return Err(SfsError::is_dir(&path));
        }
        if md.kind().is_special() {
            // FIFOs, sockets and devices are names with a type and a mode:
            // nothing behind them to read or write (docs/semantics.md).
            return Err(SfsError::new(
                Errno::ENXIO,
                format!("{path}: a FIFO, socket or device on SFS cannot be opened"),
            ));
        }
        if flags.has(libc::O_DIRECTORY) && !md.is_dir() {
            return Err(SfsError::not_dir(&path));
        }
        if flags.has(libc::O_TRUNC)
            && flags.writable()
            && md.kind() == FileKind::File
            && md.size > 0
        {
            // The open checked write permission (or made the file).
            let at = self.attributes_at(&path, md.id);
            self.block_on(self.truncate_resolved(&at, 0, true))?;
        }
        Ok(OpenFile::new(path, &md, flags))
    }

    /// Cache mode: tells the servers that hold chunks of `md`, a file
    /// taken from the backing directory, where its bytes come from (they
    /// read them through by chunk); once per file and client, before the
    /// first read or write through any descriptor of it.
    pub(crate) async fn tell_source(&self, md: &Metadata) -> SfsResult<()> {
        if md.source.is_empty() || md.kind() != FileKind::File || md.source_len == 0 {
            return Ok(());
        }
        if self.sourced.lock().expect("sourced lock").contains(&md.id) {
            return Ok(());
        }
        // The servers of its chunks below source_len: every server soon for
        // a large file, one for a file of one chunk.
        let chunks = md.source_len.div_ceil(self.config.chunk_size);
        let mut servers = std::collections::BTreeSet::new();
        for index in 0..chunks {
            servers.insert(self.distributor.chunk_server(md.id, index));
            if servers.len() == self.distributor.servers() {
                break;
            }
        }
        let told = servers.into_iter().map(|server| async move {
            self.server(server)
                .await?
                .set_source(md.id, &md.source, md.source_len)
                .await
        });
        futures::future::try_join_all(told).await?;
        self.sourced.lock().expect("sourced lock").insert(md.id);
        Ok(())
    }

    async fn open_entry(
        &self,
        path: &str,
        flags: OpenFlags,
        mode: u32,
    ) -> SfsResult<(String, Metadata)> {
        let access = flags.access_mask();
        if flags.has(libc::O_CREAT) {
            let exclusive = flags.has(libc::O_EXCL);
            match self
                .create_entry(path, NewEntry::of(FileKind::File, mode), exclusive, access)
                .await
            {
                Ok((md, _)) if md.kind() != FileKind::Symlink => return Ok((path.to_string(), md)),
                Ok(_) if flags.has(libc::O_NOFOLLOW) => {
                    return Err(SfsError::new(
                        Errno::ELOOP,
                        format!("{path}: is a symbolic link (O_NOFOLLOW)"),
                    ))
                }
                Ok((link, _)) => return self.create_through(path, link, mode, access).await,
                Err(e) => return Err(e),
            }
        }
        let md = self.lookup_access(path, access).await?;
        if md.kind() == FileKind::Symlink {
            if flags.has(libc::O_NOFOLLOW) {
                return Err(SfsError::new(
                    Errno::ELOOP,
                    format!("{path}: is a symbolic link (O_NOFOLLOW)"),
                ));
            }
            return self.resolve_access(path, access).await;
        }
        Ok((path.to_string(), md))
    }

    /// `open(O_CREAT)` (without `O_EXCL`) that found the symlink `link` at
    /// `path`: opens what the chain of symlinks leads to, creating a
    /// regular file where it ends at a missing name (Linux creates the
    /// target of a dangling symlink); ELOOP past 40 links.
    async fn create_through(
        &self,
        path: &str,
        link: Metadata,
        mode: u32,
        access: u32,
    ) -> SfsResult<(String, Metadata)> {
        let (mut at, mut md) = (path.to_string(), link);
        for _ in 0..MAX_CREATE_HOPS {
            let leads_to = self.link_destination(&at, &md.link_target)?;
            let (found, _) = self
                .create_entry(&leads_to, NewEntry::of(FileKind::File, mode), false, access)
                .await?;
            if found.kind() != FileKind::Symlink {
                return Ok((leads_to, found));
            }
            (at, md) = (leads_to, found);
        }
        Err(SfsError::new(
            Errno::ELOOP,
            format!("{path}: too many levels of symbolic links"),
        ))
    }

    /// Reads up to `buf.len()` bytes at `offset` of the file at `path`
    /// (following symlinks) without a descriptor: what the LD_PRELOAD shim
    /// uses to load a program stored in SFS for `exec`. EISDIR for a
    /// directory.
    pub fn read_at_path(&self, path: &str, offset: u64, buf: &mut [u8]) -> SfsResult<usize> {
        let file = self.open_file(path, libc::O_RDONLY, 0)?;
        if file.kind == FileKind::Directory {
            return Err(SfsError::is_dir(file.path()));
        }
        self.block_on(self.read_data(&file, offset, buf))
    }

    /// `close(2)`. The last close of a file this client orphaned (unlinked
    /// while open) removes it.
    pub fn close(&self, fd: i32) -> SfsResult<()> {
        let file = self.files.remove(fd)?;
        if self.orphans.contains(file.id) {
            self.release_orphan_if_last(file.id);
        } else if self.config.backend.writeback == WritebackPolicy::Close
            && file.written.load(Ordering::Relaxed)
            && Arc::strong_count(&file) == 1
        {
            // The last descriptor of a description that wrote: the servers
            // write the file back now (docs/tiering.md). A hint: close
            // itself succeeded whatever the servers answer.
            let hinted = self.block_on(self.on_all_servers(|h| h.write_back_soon(file.id)));
            if let Err(e) = hinted {
                tracing::debug!("close of {}: write-back hint failed: {e}", file.path());
            }
        }
        Ok(())
    }

    /// `dup(2)`: a new descriptor sharing the open file and its offset.
    pub fn dup(&self, fd: i32) -> SfsResult<i32> {
        let file = self.files.get(fd)?;
        self.files.insert(file)
    }

    /// The SFS path an open descriptor was opened with.
    pub fn fd_path(&self, fd: i32) -> SfsResult<String> {
        Ok(self.files.get(fd)?.path())
    }

    /// `write(2)` at the descriptor's offset (or at the end with O_APPEND).
    pub fn write(&self, fd: i32, buf: &[u8]) -> SfsResult<usize> {
        let file = self.writable_file(fd)?;
        let mut position = self.position(fd, &file);
        let len = buf.len() as u64;
        let appends = match self.descriptor_offsets.as_deref() {
            Some(outside) => outside.appends(fd)?,
            None => file.flags.has(libc::O_APPEND),
        };
        if appends {
            let at = self.block_on(self.reserve_append(&file.path(), file.id, len))?;
            let n = self.block_on(self.write_data(&file, at, buf, false))?;
            position.set(at + n as u64)?;
            return Ok(n);
        }
        // Reserved before the data moves, so that processes writing through
        // one shared description (a shell and its children on one `>` file)
        // get consecutive ranges, as from the kernel.
        let at = position.reserve(len)?;
        match self.block_on(self.write_data(&file, at, buf, true)) {
            Ok(n) => Ok(n),
            Err(e) => {
                position.give_back(at, len)?;
                Err(e)
            }
        }
    }

    /// `pwrite(2)`.
    pub fn pwrite(&self, fd: i32, buf: &[u8], offset: u64) -> SfsResult<usize> {
        let file = self.writable_file(fd)?;
        self.block_on(self.write_data(&file, offset, buf, true))
    }

    /// `read(2)` at the descriptor's offset.
    pub fn read(&self, fd: i32, buf: &mut [u8]) -> SfsResult<usize> {
        let file = self.readable_file(fd)?;
        let mut position = self.position(fd, &file);
        let at = position.get()?;
        let n = self.block_on(self.read_data(&file, at, buf))?;
        position.set(at + n as u64)?;
        Ok(n)
    }

    /// `pread(2)`.
    pub fn pread(&self, fd: i32, buf: &mut [u8], offset: u64) -> SfsResult<usize> {
        let file = self.readable_file(fd)?;
        self.block_on(self.read_data(&file, offset, buf))
    }

    /// `lseek(2)`.
    pub fn lseek(&self, fd: i32, offset: i64, whence: Whence) -> SfsResult<u64> {
        let file = self.files.get(fd)?;
        let mut position = self.position(fd, &file);
        let size = || -> SfsResult<i64> {
            let at = self.attributes_at(&file.path(), file.id);
            Ok(self.block_on(self.lookup_open(&at, file.id))?.size as i64)
        };
        let target = match whence {
            Whence::Set => Some(offset),
            Whence::Current => (position.get()? as i64).checked_add(offset),
            Whence::End => size()?.checked_add(offset),
            Whence::Data | Whence::Hole => {
                let size = size()?;
                if offset < 0 || offset >= size {
                    return Err(SfsError::new(
                        Errno(libc::ENXIO),
                        format!("lseek: offset {offset} is past the end"),
                    ));
                }
                Some(if whence == Whence::Data { offset } else { size })
            }
        };
        match target {
            Some(t) if t >= 0 => {
                position.set(t as u64)?;
                Ok(t as u64)
            }
            _ => Err(SfsError::invalid(format!(
                "lseek: resulting offset is negative or overflows ({offset})"
            ))),
        }
    }

    /// The current offset of descriptor `fd`.
    pub(crate) fn offset_of(&self, fd: i32) -> SfsResult<u64> {
        let file = self.files.get(fd)?;
        let position = self.position(fd, &file);
        position.get()
    }

    /// `fstat(2)`; `st_nlink` is 0 for a file unlinked while open.
    pub fn fstat(&self, fd: i32) -> SfsResult<Metadata> {
        let file = self.files.get(fd)?;
        let at = self.attributes_at(&file.path(), file.id);
        let mut md = self.block_on(async {
            if file.kind == FileKind::Directory {
                self.settle_dir_times(&at).await;
            }
            self.lookup_open(&at, file.id).await
        })?;
        if self.orphans.contains(file.id) {
            // Its hidden name is not one of its names.
            md.nlink = md.nlink.saturating_sub(1);
        }
        Ok(md)
    }

    /// `ftruncate(2)`: EINVAL unless open for writing.
    pub fn ftruncate(&self, fd: i32, size: u64) -> SfsResult<()> {
        let file = self.files.get(fd)?;
        if !file.flags.writable() || file.kind != FileKind::File {
            return Err(SfsError::invalid(format!(
                "ftruncate: descriptor {fd} is not open for writing a file"
            )));
        }
        let at = self.attributes_at(&file.path(), file.id);
        self.block_on(self.truncate_resolved(&at, size, true))
    }

    /// `fsync(2)`: when it returns, the file's chunks on every server and the
    /// metadata on its owner are durable; with `backend.fsync_to_backend`,
    /// the object back end also holds the file (as after [`Client::flush`]).
    pub fn fsync(&self, fd: i32) -> SfsResult<()> {
        let file = self.files.get(fd)?;
        self.block_on(async {
            let id = file.id;
            if file.kind == FileKind::File {
                self.on_all_servers(|h| h.sync_chunks(id)).await?;
                if self.config.backend.fsync_to_backend {
                    // Back-end-persistent too (config backend.fsync_to_backend).
                    self.on_all_servers(|h| h.flush_chunks(id, None)).await?;
                }
            }
            let (path, at) = (file.path(), self.attributes_at(&file.path(), file.id));
            let owners = [&path, &at].map(|p| self.distributor.metadata_server(p));
            self.server(owners[0]).await?.sync_metadata().await?;
            if owners[1] != owners[0] {
                // A hard-linked file's attributes live elsewhere.
                self.server(owners[1]).await?.sync_metadata().await?;
            }
            Ok(())
        })
    }

    /// `fdatasync(2)`: as [`Client::fsync`] (SFS has no cheaper subset).
    pub fn fdatasync(&self, fd: i32) -> SfsResult<()> {
        self.fsync(fd)
    }

    /// `sync(2)` for SFS: every server makes all its metadata durable.
    pub fn sync_all(&self) -> SfsResult<()> {
        self.block_on(async { self.on_all_servers(|h| h.sync_metadata()).await.map(|_| ()) })
    }

    fn writable_file(&self, fd: i32) -> SfsResult<Arc<OpenFile>> {
        let file = self.files.get(fd)?;
        if !file.flags.writable() {
            return Err(SfsError::bad_fd(fd.into()));
        }
        if file.kind == FileKind::Directory {
            return Err(SfsError::is_dir(file.path()));
        }
        Ok(file)
    }

    fn readable_file(&self, fd: i32) -> SfsResult<Arc<OpenFile>> {
        let file = self.files.get(fd)?;
        if !file.flags.readable() {
            return Err(SfsError::bad_fd(fd.into()));
        }
        if file.kind == FileKind::Directory {
            return Err(SfsError::is_dir(file.path()));
        }
        Ok(file)
    }
}
