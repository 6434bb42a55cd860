//! Namespace operations: stat, mkdir, rmdir, unlink, rename, symlinks,
//! attributes and truncate.
//!
//! The namespace is flat: each entry lives on the server that owns its path,
//! so most calls are one RPC to one owner. Calls that concern a directory's
//! contents (rmdir, directory rename) ask every server, and removing a file's
//! data asks every server to drop its chunks. Symlinks are followed at the
//! last component only (paths are otherwise taken lexically).

use crate::permissions::sticky_owner;
use crate::Client;
use sfs_global::access::{MAY_EXEC, MAY_WRITE};
use sfs_global::path::{is_within, normalize, split_parent, strip_mount};
use sfs_global::{Errno, FileKind, Metadata, SfsError, SfsResult};
use sfs_rpc::pb;

/// Symlinks followed in one lookup before ELOOP, as Linux's MAXSYMLINKS.
const MAX_SYMLINK_HOPS: usize = 40;

/// What [`Client::create_entry`] makes: a kind with permission bits, and
/// a symlink's target or a device's number.
#[derive(Clone, Copy)]
pub(crate) struct NewEntry<'a> {
    pub kind: FileKind,
    pub perm: u32,
    pub link_target: &'a str,
    pub rdev: u64,
}

impl NewEntry<'_> {
    pub fn of(kind: FileKind, perm: u32) -> Self {
        NewEntry {
            kind,
            perm,
            link_target: "",
            rdev: 0,
        }
    }
}

impl Client {
    /// The entry of a normalised path, not following a final symlink.
    pub(crate) async fn lookup(&self, path: &str) -> SfsResult<Metadata> {
        self.search_permitted(path).await?;
        let md = self.stat_entry(path, None).await?;
        self.saw_entry(path, &md);
        Ok(md)
    }

    /// [`Client::lookup`] without the search check of the directories
    /// above and without filling their cache (what the check itself asks).
    pub(crate) async fn lookup_uncached(&self, path: &str) -> SfsResult<Metadata> {
        self.stat_entry(path, None).await
    }

    /// The entry of an open file, by its path and checked against its id:
    /// ESTALE if the path now names another file (the open one was renamed
    /// away or replaced), rather than that other file's metadata.
    pub(crate) async fn lookup_open(
        &self,
        path: &str,
        id: sfs_global::FileId,
    ) -> SfsResult<Metadata> {
        self.stat_entry(path, Some(id)).await
    }

    async fn stat_entry(&self, path: &str, id: Option<sfs_global::FileId>) -> SfsResult<Metadata> {
        self.stat_request(crate::calls::stat_of(path, id)).await
    }

    /// `Stat` on the owner of `req.path`; for the name of a hard-linked
    /// file, the attributes of its shared entry (checked there:
    /// crate::links).
    pub(crate) async fn stat_request(&self, req: pb::PathRequest) -> SfsResult<Metadata> {
        let (access, sticky) = (req.access, req.sticky_parent_uid);
        let md = self.stat_name_request(req).await?;
        if md.is_name_of_shared() {
            return self.shared_entry(&md, access, sticky).await;
        }
        Ok(md)
    }

    /// `Stat` on the owner of `req.path`: the entry itself, a name entry
    /// for a hard-linked file.
    pub(crate) async fn stat_name_request(&self, req: pb::PathRequest) -> SfsResult<Metadata> {
        let entry = self.owner(&req.path).await?.rpc.stat(req).await?;
        Ok(Metadata::from(&entry))
    }

    /// The entry at the normalised `path` as stored: for a hard-linked
    /// file, the name entry (what a rename moves and a link copies).
    pub(crate) async fn stat_name(&self, path: &str) -> SfsResult<Metadata> {
        self.stat_name_request(pb::PathRequest {
            path: path.to_string(),
            ..Default::default()
        })
        .await
    }

    /// [`Client::lookup`] of the entry as stored ([`Client::stat_name`]).
    pub(crate) async fn lookup_name(&self, path: &str) -> SfsResult<Metadata> {
        self.search_permitted(path).await?;
        let md = self.stat_name(path).await?;
        self.saw_entry(path, &md);
        Ok(md)
    }

    /// The entry of a normalised path, not following a final symlink, if
    /// the caller has the `access` bits on it (`sfs_global::access`; the
    /// owner checks, EACCES; a symlink is never checked).
    pub(crate) async fn lookup_access(&self, path: &str, access: u32) -> SfsResult<Metadata> {
        self.search_permitted(path).await?;
        let md = self
            .stat_request(pb::PathRequest {
                path: path.to_string(),
                access,
                ..Default::default()
            })
            .await?;
        self.saw_entry(path, &md);
        Ok(md)
    }

    /// Resolves a final symlink chain: returns the path reached and its entry.
    pub(crate) async fn resolve(&self, path: &str) -> SfsResult<(String, Metadata)> {
        self.resolve_access(path, 0).await
    }

    /// The path a call on `path` acts on: after a final symlink chain when
    /// `follow`, `path` itself otherwise (the `l` forms of calls).
    pub(crate) async fn final_target(&self, path: String, follow: bool) -> SfsResult<String> {
        if follow {
            Ok(self.resolve(&path).await?.0)
        } else {
            Ok(path)
        }
    }

    /// [`Client::resolve`], checking `access` on the entry reached.
    pub(crate) async fn resolve_access(
        &self,
        path: &str,
        access: u32,
    ) -> SfsResult<(String, Metadata)> {
        let mut current = path.to_string();
        for hop in 0..MAX_SYMLINK_HOPS {
            let md = match self.lookup_access(&current, access).await {
                Ok(md) => md,
                // A symlink's destination may lead through symlinked
                // directories of its own (crate::walk); the path the
                // caller gave is retried by its caller.
                Err(e) if hop > 0 && matches!(e.errno, Errno::ENOENT | Errno::ENOTDIR) => {
                    match self.real_dirs(&current).await? {
                        Some(real) => {
                            current = real;
                            continue;
                        }
                        None => return Err(e),
                    }
                }
                Err(e) => return Err(e),
            };
            if md.kind() != FileKind::Symlink {
                return Ok((current, md));
            }
            current = self.link_destination(&current, &md.link_target)?;
        }
        Err(SfsError::new(
            Errno::ELOOP,
            format!("{path}: too many levels of symbolic links"),
        ))
    }

    /// Where a symlink at `link` pointing to `target` leads, as an SFS path.
    pub(crate) fn link_destination(&self, link: &str, target: &str) -> SfsResult<String> {
        if target.starts_with('/') {
            // Absolute targets are host paths (what `ln -s` through the shim writes).
            strip_mount(target, &self.config.mountdir).ok_or_else(|| {
                SfsError::new(
                    Errno::EXDEV,
                    format!("{link}: symlink leads outside the SFS mount ({target})"),
                )
            })
        } else {
            let parent = split_parent(link).map_or("/", |(p, _)| p);
            normalize(&format!("{parent}/{target}"))
        }
    }

    /// `stat(2)`: follows a final symlink.
    pub fn stat(&self, path: &str) -> SfsResult<Metadata> {
        self.through_dirs(path, |path| {
            self.block_on(async {
                self.settle_dir_times(&path).await;
                let (at, md) = self.resolve(&path).await?;
                if at != path && md.is_dir() && self.dir_times_wait_for(&at) {
                    // Reached through a symlink: its times go first.
                    self.settle_dir_times(&at).await;
                    return self.lookup(&at).await;
                }
                Ok(md)
            })
        })
    }

    /// `lstat(2)`: does not follow a final symlink.
    pub fn lstat(&self, path: &str) -> SfsResult<Metadata> {
        self.through_dirs(path, |path| {
            self.block_on(async {
                self.settle_dir_times(&path).await;
                self.lookup(&path).await
            })
        })
    }

    /// `access(2)` with F_OK: the path exists (after symlinks).
    pub fn exists(&self, path: &str) -> SfsResult<()> {
        self.stat(path).map(|_| ())
    }

    /// `access(2)`: EACCES unless the caller has the `mode` bits (R_OK,
    /// W_OK, X_OK; 0 for F_OK) on `path` (after symlinks), as the
    /// entry's owner decides, after search permission on the directories
    /// above it ([`Client::search_permitted`]).
    pub fn access(&self, path: &str, mode: u32) -> SfsResult<()> {
        self.through_dirs(path, |path| {
            self.block_on(self.resolve_access(&path, mode)).map(|_| ())
        })
    }

    /// Creates an entry (or, without `exclusive`, finds the one there):
    /// the caller needs write and search permission on the parent to
    /// create, search permission to find, and `access` (R_OK/W_OK bits,
    /// what an open asks for) on an entry found.
    pub(crate) async fn create_entry(
        &self,
        path: &str,
        new: NewEntry<'_>,
        exclusive: bool,
        access: u32,
    ) -> SfsResult<(Metadata, bool)> {
        let (md, created) = self.create_name(path, new, exclusive, access).await?;
        if created {
            self.changed_in_parent_of(path).await;
        }
        if md.is_name_of_shared() {
            // Found a hard-linked file: its attributes, checked there.
            return Ok((self.shared_entry(&md, access, None).await?, created));
        }
        Ok((md, created))
    }

    /// [`Client::create_entry`], answering an entry found as stored (a
    /// name entry for a hard-linked file).
    async fn create_name(
        &self,
        path: &str,
        new: NewEntry<'_>,
        exclusive: bool,
        access: u32,
    ) -> SfsResult<(Metadata, bool)> {
        let NewEntry {
            kind,
            perm,
            link_target,
            rdev,
        } = new;
        self.search_permitted(path).await?;
        let request = |check_parent| pb::CreateRequest {
            path: path.to_string(),
            mode: kind.type_bits() | (perm & 0o7777),
            exclusive,
            link_target: link_target.to_string(),
            check_parent,
            access,
            rdev,
        };
        let owner = self.distributor.metadata_server(path);
        let parent_owner = split_parent(path).map(|(p, _)| self.distributor.metadata_server(p));
        if parent_owner == Some(owner) {
            // The parent lives on the same server: it checks the parent and
            // creates in one call. Only a parent that is a symlink (which the
            // server does not follow) needs the general path below.
            let r = self.server(owner).await?.rpc.create(request(true)).await?;
            if !r.parent_is_symlink {
                return created_entry(r);
            }
        }
        // The parent check and the create go out together: a create costs one
        // round trip, not two. If the parent turns out to be missing or
        // closed to the caller, an entry this call made is taken back (only
        // that entry: `if_id`).
        let create = async {
            let r = self.server(owner).await?.rpc.create(request(false)).await?;
            created_entry(r)
        };
        // A parent that is a symlink answers ENOENT: the entry belongs where
        // it leads, so the one made here is taken back as for a missing
        // parent and the caller's walk (crate::walk) makes the call there.
        let (parent, created) = futures::join!(
            self.parent_dir_really_at(path, MAY_WRITE | MAY_EXEC),
            create
        );
        let parent = match parent {
            // A transient failure (timeout, lost connection) says nothing
            // about the parent: ask again, alone, before deciding anything.
            Err(e) if !parent_is_missing(&e) && e.errno != Errno::EACCES => {
                self.parent_dir_really_at(path, MAY_WRITE | MAY_EXEC).await
            }
            other => other,
        };
        match (parent, created) {
            (Ok(_), created) => created,
            (Err(e), Ok((md, true))) if parent_is_missing(&e) || e.errno == Errno::EACCES => {
                // The parent is definitely not there, or the caller may not
                // add to it: take back the entry this call made (by id:
                // never an entry another client made).
                let kind = if md.is_dir() {
                    pb::RemoveKind::RemoveDirectory
                } else {
                    pb::RemoveKind::RemoveNotDirectory
                };
                match self.remove_entry(path, kind, Some(md.id)).await {
                    Ok(removed) => {
                        // Another opener of the same O_CREAT may have
                        // written, or linked it, meanwhile.
                        let _ = self.release_name(&removed).await;
                    }
                    Err(undo) => tracing::warn!(
                        "{path}: cannot take back an entry made without a parent: {undo}"
                    ),
                }
                Err(e)
            }
            (Err(e), found) if e.errno == Errno::EACCES => {
                // Finding an existing entry (EEXIST, or an O_CREAT open of
                // it) needs only search permission on the parent, as in
                // POSIX: ask for that alone before answering.
                self.parent_dir(path, MAY_EXEC).await?;
                found
            }
            (Err(e), _) => Err(e),
        }
    }

    /// `mkdir(2)`.
    pub fn mkdir(&self, path: &str, mode: u32) -> SfsResult<()> {
        self.through_dirs(path, |path| {
            self.block_on(self.create_entry(
                &path,
                NewEntry::of(FileKind::Directory, mode),
                true,
                0,
            ))
            .map(|_| ())
        })
    }

    /// True if any server holds an entry below `dir`.
    async fn has_children(&self, dir: &str) -> SfsResult<bool> {
        let answers = self
            .on_all_servers(|h| {
                h.rpc.has_children(pb::PathRequest {
                    path: dir.to_string(),
                    ..Default::default()
                })
            })
            .await?;
        Ok(answers.into_iter().any(|r| r.has_children))
    }

    /// `rmdir(2)`: ENOTEMPTY if any server holds an entry in it.
    pub fn rmdir(&self, path: &str) -> SfsResult<()> {
        self.through_dirs(path, |path| {
            if path == "/" {
                return Err(SfsError::new(
                    Errno::EBUSY,
                    "/: cannot remove the root of the mount",
                ));
            }
            self.block_on(async {
                // Permission first (EACCES/EPERM before ENOTEMPTY, as Linux).
                let (md, parent) = futures::join!(
                    self.lookup(&path),
                    self.parent_dir_really_at(&path, MAY_WRITE | MAY_EXEC)
                );
                let (md, parent) = (md?, parent?);
                if !md.is_dir() {
                    return Err(SfsError::not_dir(&path));
                }
                if self.has_children(&path).await? {
                    return Err(SfsError::not_empty(&path));
                }
                self.remove_request(pb::RemoveRequest {
                    path: path.clone(),
                    kind: pb::RemoveKind::RemoveDirectory as i32,
                    sticky_parent_uid: sticky_owner(&parent),
                    ..Default::default()
                })
                .await?;
                self.changed_in_parent_of(&path).await;
                Ok(())
            })
        })
    }

    pub(crate) async fn remove_request(&self, req: pb::RemoveRequest) -> SfsResult<Metadata> {
        if req.kind != pb::RemoveKind::RemoveNotDirectory as i32 {
            // A directory may go (and come back as another one).
            self.parents.clear();
        }
        let removed = self.owner(&req.path).await?.rpc.remove(req).await?;
        Ok(Metadata::from(&removed))
    }

    pub(crate) async fn remove_entry(
        &self,
        path: &str,
        kind: pb::RemoveKind,
        if_id: Option<sfs_global::FileId>,
    ) -> SfsResult<Metadata> {
        self.remove_request(crate::calls::remove_of(path, kind, if_id))
            .await
    }

    /// Drops every chunk of a file on every server.
    pub(crate) async fn remove_chunks(&self, id: sfs_global::FileId) -> SfsResult<()> {
        self.on_all_servers(|h| h.remove_chunks(id))
            .await
            .map(|_| ())
    }

    /// `unlink(2)`: removes the entry, then the file's chunks.
    pub fn unlink(&self, path: &str) -> SfsResult<()> {
        self.through_dirs(path, |path| {
            self.block_on(async {
                // A file this client still has open keeps its data until the
                // last close (crate::orphans).
                if !self.orphan_if_open(&path).await? {
                    let removed = self
                        .remove_permitted(&path, pb::RemoveKind::RemoveNotDirectory)
                        .await?;
                    self.release_name(&removed).await?;
                }
                self.changed_in_parent_of(&path).await;
                Ok(())
            })
        })
    }

    /// `mknod(2)` and `mkfifo(3)`: a FIFO, socket, character or block device
    /// (`mode`'s type bits; none or `S_IFREG`: a regular file) with the
    /// permission bits of `mode` (the caller applies its umask) and, for a
    /// device, the number `rdev`. EEXIST when the name is taken, EINVAL
    /// for a directory or symlink type, EPERM for a device unless the
    /// caller is root. The entry has a type and a mode; it is never opened
    /// for I/O (ENXIO: docs/semantics.md).
    pub fn mknod(&self, path: &str, mode: u32, rdev: u64) -> SfsResult<()> {
        let kind = match mode & libc::S_IFMT {
            0 => FileKind::File,
            bits => FileKind::from_mode(bits)
                .filter(|k| *k == FileKind::File || k.is_special())
                .ok_or_else(|| {
                    SfsError::invalid(format!(
                        "mknod of mode {mode:#o}: not a file type mknod makes"
                    ))
                })?,
        };
        let rdev = if kind.is_device() { rdev } else { 0 };
        self.through_dirs(path, |path| {
            let new = NewEntry {
                rdev,
                ..NewEntry::of(kind, mode)
            };
            self.block_on(self.create_entry(&path, new, true, 0))
                .map(|_| ())
        })
    }

    /// `symlink(2)`: creates `linkpath` pointing to `target` (stored verbatim).
    pub fn symlink(&self, target: &str, linkpath: &str) -> SfsResult<()> {
        if target.is_empty() {
            return Err(SfsError::new(Errno::ENOENT, "symlink target is empty"));
        }
        self.through_dirs(linkpath, |path| {
            self.block_on(self.create_entry(
                &path,
                NewEntry {
                    link_target: target,
                    ..NewEntry::of(FileKind::Symlink, 0o777)
                },
                true,
                0,
            ))
            .map(|_| ())
        })
    }

    /// `readlink(2)`: EINVAL if the entry is not a symlink.
    pub fn readlink(&self, path: &str) -> SfsResult<String> {
        let md = self.lstat(path)?;
        if md.kind() != FileKind::Symlink {
            return Err(SfsError::invalid(format!("{path}: not a symbolic link")));
        }
        Ok(md.link_target)
    }

    pub(crate) async fn set_attr(
        &self,
        path: &str,
        req: pb::SetAttrRequest,
    ) -> SfsResult<Metadata> {
        // A directory's bits or owner may change: removals check afresh.
        self.parents.clear();
        // Times set explicitly come after the changes made in it before.
        self.settle_dir_times(path).await;
        self.on_attributes(path, None, |at| {
            let req = pb::SetAttrRequest {
                path: at.clone(),
                ..req.clone()
            };
            async move {
                let e = self.owner(&at).await?.rpc.set_attr(req).await?;
                Ok(Metadata::from(&e))
            }
        })
        .await
    }

    /// `chmod(2)` (follows symlinks).
    pub fn chmod(&self, path: &str, mode: u32) -> SfsResult<()> {
        let req = pb::SetAttrRequest {
            mode: Some(mode & 0o7777),
            ..Default::default()
        };
        self.change_attrs(path, true, req)
    }

    /// `chown(2)` (follows symlinks); `None` leaves an id unchanged.
    pub fn chown(&self, path: &str, uid: Option<u32>, gid: Option<u32>) -> SfsResult<()> {
        let req = pb::SetAttrRequest {
            uid,
            gid,
            ..Default::default()
        };
        self.change_attrs(path, true, req)
    }

    /// `utimensat(2)` with NULL times or two `UTIME_NOW` (follows symlinks
    /// when `follow`): both times to the server's current time, which the
    /// owner or anyone with write permission may set.
    pub fn touch(&self, path: &str, follow: bool) -> SfsResult<()> {
        let req = pb::SetAttrRequest {
            times_now: true,
            ..Default::default()
        };
        self.change_attrs(path, follow, req)
    }

    /// `utimensat(2)` (follows symlinks); `None` leaves a time unchanged.
    /// Explicit times are for the owner or root only ([`Client::touch`]
    /// sets the current time).
    pub fn utimens(
        &self,
        path: &str,
        atime_ns: Option<i64>,
        mtime_ns: Option<i64>,
    ) -> SfsResult<()> {
        let req = pb::SetAttrRequest {
            atime_ns,
            mtime_ns,
            ..Default::default()
        };
        self.change_attrs(path, true, req)
    }

    /// Sends `req` (its `path` filled in) to the owner of `path`, after a
    /// final symlink when `follow`: what chmod, chown, utimens and their
    /// `l` forms share.
    pub(crate) fn change_attrs(
        &self,
        path: &str,
        follow: bool,
        req: pb::SetAttrRequest,
    ) -> SfsResult<()> {
        self.through_dirs(path, |path| {
            self.block_on(async {
                let target = self.final_target(path, follow).await?;
                let req = pb::SetAttrRequest {
                    path: target.clone(),
                    ..req.clone()
                };
                self.set_attr(&target, req).await.map(|_| ())
            })
        })
    }

    /// Sets a resolved file's size on its owner, then trims chunks past it.
    /// The owner checks write permission unless `opened_for_write` (a
    /// descriptor's, checked at its open).
    pub(crate) async fn truncate_resolved(
        &self,
        path: &str,
        size: u64,
        opened_for_write: bool,
    ) -> SfsResult<()> {
        if size > sfs_global::chunk::MAX_FILE_SIZE {
            return Err(SfsError::new(
                Errno::EFBIG,
                format!("size {size} is beyond the largest file"),
            ));
        }
        let e = self
            .on_attributes(path, None, |at| async move {
                self.owner(&at)
                    .await?
                    .rpc
                    .truncate(pb::TruncateRequest {
                        path: at.clone(),
                        size,
                        opened_for_write,
                    })
                    .await
            })
            .await?;
        let id = e.file_id();
        self.on_all_servers(|h| h.truncate_chunks(id, size))
            .await
            .map(|_| ())
    }

    /// `truncate(2)` (follows symlinks).
    pub fn truncate(&self, path: &str, size: u64) -> SfsResult<()> {
        self.through_dirs(path, |path| {
            self.block_on(async {
                let (target, md) = self.resolve(&path).await?;
                if md.is_dir() {
                    return Err(SfsError::is_dir(&path));
                }
                self.truncate_resolved(&target, size, false).await
            })
        })
    }

    /// `rename(2)`: replaces an existing target under rename(2)'s type rules.
    /// A file moves as one entry; a directory moves entry by entry (see
    /// docs/semantics.md); data never moves.
    pub fn rename(&self, old: &str, new: &str) -> SfsResult<()> {
        self.through_dirs2(old, new, |old, new| {
            if old == "/" || new == "/" {
                return Err(SfsError::new(
                    Errno::EBUSY,
                    "cannot rename the root of the mount",
                ));
            }
            // Directories may move: removals check their parents afresh.
            self.parents.clear();
            self.block_on(async {
                // As stored: a hard-linked file's name entry moves.
                let md = self.lookup_name(&old).await?;
                if old == new {
                    return Ok(());
                }
                if md.is_name_of_shared() {
                    if let Ok(there) = self.stat_name(&new).await {
                        if there.id == md.id {
                            // Two names of one file: rename(2) does nothing.
                            return Ok(());
                        }
                    }
                }
                let new_parent = self.rename_permitted(&old, &new, &md).await?;
                let sticky = sticky_owner(&new_parent);
                if md.is_dir() {
                    if !md.source.is_empty() {
                        // Cache mode: its backing names not taken in yet
                        // would not follow; `mv` copies instead.
                        return Err(SfsError::new(
                            Errno::EXDEV,
                            format!(
                                "{old}: a directory of the backing directory is not renamed in SFS (cache mode)"
                            ),
                        ));
                    }
                    if is_within(&new, &old) {
                        return Err(SfsError::invalid(format!(
                            "cannot move {old} into itself ({new})"
                        )));
                    }
                    self.rename_directory(&old, &new, md.clone(), sticky)
                        .await?;
                } else {
                    self.put_entry(&new, &md, true, sticky, true).await?;
                    self.remove_entry(&old, pb::RemoveKind::RemoveNotDirectory, Some(md.id))
                        .await?;
                    if md.is_name_of_shared() {
                        // The ctime of a hard-linked file is its shared
                        // entry's; the rename is done whatever happens here.
                        if let Err(e) = self.add_links(md.id, 0).await {
                            tracing::debug!("{new}: ctime not updated: {e}");
                        }
                    }
                }
                self.changed_in_parent_of(&old).await;
                self.changed_in_parent_of(&new).await;
                // This client's descriptors follow the file (or everything
                // below the directory) to its new name.
                self.follow_rename(&old, &new, md.id, md.is_dir());
                Ok(())
            })
        })
    }

    /// Places `md` at `path` on its owner; drops the data of a replaced file.
    /// `sticky_parent_uid`: `path`'s parent is sticky and owned by that
    /// uid (its owner then refuses to replace another user's entry).
    /// `renamed`: `md` is what a rename moves, whose ctime the owner sets.
    pub(crate) async fn put_entry(
        &self,
        path: &str,
        md: &Metadata,
        replace: bool,
        sticky_parent_uid: Option<u32>,
        renamed: bool,
    ) -> SfsResult<()> {
        if replace && md.is_dir() {
            if let Ok(existing) = self.lookup(path).await {
                if existing.is_dir() && self.has_children(path).await? {
                    return Err(SfsError::not_empty(path));
                }
            }
        }
        if let Some(replaced) = self
            .place_entry(path, md, replace, sticky_parent_uid, renamed)
            .await?
        {
            if !replaced.is_dir()
                && replaced.id != md.id
                && !self.orphan_replaced(path, &replaced).await?
            {
                self.release_name(&replaced).await?;
            }
        }
        Ok(())
    }

    /// `PutEntry` on the owner of `path`: the entry it replaced, if any.
    /// `renamed` as for [`Client::put_entry`].
    pub(crate) async fn place_entry(
        &self,
        path: &str,
        md: &Metadata,
        replace: bool,
        sticky_parent_uid: Option<u32>,
        renamed: bool,
    ) -> SfsResult<Option<Metadata>> {
        let r = self
            .owner(path)
            .await?
            .rpc
            .put_entry(pb::PutEntryRequest {
                path: path.to_string(),
                entry: Some(md.into()),
                replace,
                sticky_parent_uid,
                renamed,
            })
            .await?;
        Ok(r.replaced.as_ref().map(Metadata::from))
    }

    async fn rename_directory(
        &self,
        old: &str,
        new: &str,
        md: Metadata,
        sticky_parent_uid: Option<u32>,
    ) -> SfsResult<()> {
        let mut subtree = self.list_subtree(old).await?;
        // Parents before children when placing, children first when removing.
        subtree.sort_by_key(|(p, _)| p.matches('/').count());
        self.put_entry(new, &md, true, sticky_parent_uid, true)
            .await?;
        for (path, entry) in &subtree {
            let moved = format!("{new}{}", &path[old.len()..]);
            self.put_entry(&moved, entry, false, None, false).await?;
        }
        for (path, entry) in subtree.iter().rev() {
            let kind = if entry.is_dir() {
                pb::RemoveKind::RemoveDirectory
            } else {
                pb::RemoveKind::RemoveNotDirectory
            };
            self.remove_entry(path, kind, Some(entry.id)).await?;
        }
        self.remove_entry(old, pb::RemoveKind::RemoveDirectory, Some(md.id))
            .await?;
        Ok(())
    }

    /// Every entry below `dir` on every server.
    pub(crate) async fn list_subtree(&self, dir: &str) -> SfsResult<Vec<(String, Metadata)>> {
        let mut all = Vec::new();
        for i in 0..self.servers.len() {
            let rpc = &self.server(i).await?.rpc;
            let mut after = String::new();
            loop {
                let page = rpc
                    .list_subtree_paged(pb::ReaddirPageRequest {
                        dir: dir.to_string(),
                        page_size: self.config.readdir_page_size,
                        after: std::mem::take(&mut after),
                    })
                    .await?;
                if page.more {
                    after = page
                        .entries
                        .last()
                        .map(|e| e.path.clone())
                        .unwrap_or_default();
                }
                for e in page.entries {
                    let md = e
                        .entry
                        .as_ref()
                        .map(Metadata::from)
                        .ok_or_else(|| SfsError::io("subtree entry without metadata"))?;
                    all.push((e.path, md));
                }
                if after.is_empty() {
                    break;
                }
            }
        }
        Ok(all)
    }
}

/// The entry a create answered and whether the call made it.
pub(crate) fn created_entry(r: pb::CreateResponse) -> SfsResult<(Metadata, bool)> {
    let entry = r
        .entry
        .ok_or_else(|| SfsError::io("server sent a create reply without an entry"))?;
    Ok((Metadata::from(&entry), r.created))
}

/// Whether a parent check failed because the parent is really absent (or not
/// a directory), as opposed to a server that could not answer.
fn parent_is_missing(e: &SfsError) -> bool {
    matches!(
        e.errno,
        Errno::ENOENT | Errno::ENOTDIR | Errno::ELOOP | Errno::EXDEV
    )
}
