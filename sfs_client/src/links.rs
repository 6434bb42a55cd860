//! Hard links: several names, one file.
//!
//! An entry normally holds its file's attributes under the file's one name.
//! The first `link` of a file moves them to its *shared entry*, a hidden
//! entry in the root at [`shared_path`] of the file's id (placed and stored
//! like any entry, never listed), and every name of the file becomes a
//! *name entry*: the type, the id and a copy of the attributes, with
//! `nlink` 0 ([`Metadata::is_name_of_shared`]). The shared entry counts the
//! names in `nlink`.
//!
//! - Reading: a lookup that finds a name entry asks the shared entry next
//!   ([`Client::shared_entry`]): one more round trip, only for hard-linked
//!   files. Clients remember which files are shared (a file never stops
//!   being shared), so an open descriptor goes straight to the shared entry.
//! - Changing: a server asked to change a name entry's attributes (size,
//!   mode, times) answers EREMCHG and the client makes the change at the
//!   shared entry instead ([`Client::on_attributes`]).
//! - Linking counts the new name *before* placing it, and an unlink removes
//!   the name before counting down, so a count is never too low: a failure
//!   between the steps leaves a file with one name too many (its data
//!   stays), never a name without data.
//!
//! docs/architecture.md ("Hard links") has the design and its costs.

use crate::Client;
use sfs_global::access::{check_access, MAY_EXEC, MAY_READ, MAY_WRITE};
use sfs_global::metadata::shared_path;
use sfs_global::{Errno, FileId, FileKind, Metadata, SfsError, SfsResult};
use sfs_rpc::pb;
use std::future::Future;
use std::time::Duration;

/// How long a link or unlink waits for a concurrent first link of the same
/// file to write the shared entry (tries × pause).
const SHARED_ENTRY_TRIES: u32 = 50;
const SHARED_ENTRY_PAUSE: Duration = Duration::from_millis(2);

impl Client {
    /// `link(2)` and `linkat(2)`: `new` becomes another name of the file at
    /// `old`; a final symlink of `old` is followed only with `follow`
    /// (`AT_SYMLINK_FOLLOW`), otherwise the symlink itself gets the name.
    /// EPERM for a directory, EEXIST when `new` exists, EMLINK past
    /// `LINK_MAX` names, EXDEV in cache mode (docs/staging.md). A caller
    /// other than root must own the file or be able to read and write it,
    /// which must be a regular file without set-id bits (Linux's
    /// `protected_hardlinks`).
    pub fn link(&self, old: &str, new: &str, follow: bool) -> SfsResult<()> {
        self.through_dirs2(old, new, |old, new| {
            self.block_on(self.link_normal(&old, &new, follow))
        })
    }

    async fn link_normal(&self, old: &str, new: &str, follow: bool) -> SfsResult<()> {
        let old = if follow {
            self.resolve(old).await?.0
        } else {
            old.to_string()
        };
        let (name, parent, there) = futures::join!(
            self.lookup_name(&old),
            self.parent_dir_really_at(new, MAY_WRITE | MAY_EXEC),
            self.stat_name(new)
        );
        let (name, _) = (name?, parent?);
        // As Linux: an existing new name first, then a directory.
        if there.is_ok() {
            return Err(SfsError::exists(new));
        }
        if name.is_dir() {
            return Err(SfsError::new(
                Errno::EPERM,
                format!("{old}: a directory cannot have hard links"),
            ));
        }
        if !self.options.caller.current().is_root() {
            let attrs = if name.is_name_of_shared() {
                self.shared_entry(&name, 0, None).await?
            } else {
                name.clone()
            };
            self.may_link(&old, &attrs)?;
        }
        let id = name.id;
        if !name.is_name_of_shared() {
            let was = self
                .owner(&old)
                .await?
                .rpc
                .share_entry(crate::calls::link_of(&old, id, 0))
                .await?;
            let was = Metadata::from(&was);
            if !was.is_name_of_shared() {
                // The first link: the shared entry takes the attributes,
                // with the one name the file had.
                let first = Metadata { nlink: 1, ..was };
                self.place_entry(&shared_path(id), &first, false, None, false)
                    .await?;
            }
        }
        self.remember_shared(id);
        let counted = match self.add_links(id, 1).await {
            Err(e) if e.errno == Errno::ENOENT => {
                // A first link cut short: its shared entry is made again
                // from the name's copy.
                let name = self.stat_name(&old).await?;
                self.restore_shared_entry(&name).await?;
                self.add_links(id, 1).await?
            }
            other => other?,
        };
        match self
            .place_entry(new, &counted.as_name_of_shared(), false, None, false)
            .await
        {
            Ok(_) => {
                self.changed_in_parent_of(new).await;
                Ok(())
            }
            Err(e) => {
                // A lost answer may hide a name that was placed: the count
                // is taken back only when the name is surely not there (a
                // count too high leaks; one too low would lose data).
                let absent = refused(&e)
                    || match self.stat_name(new).await {
                        Ok(there) => there.id != id,
                        Err(gone) => gone.errno == Errno::ENOENT,
                    };
                if absent {
                    if let Err(undo) = self.add_links(id, -1).await {
                        tracing::warn!(
                            "{new}: link failed and its count stays one too high: {undo}"
                        );
                    }
                }
                Err(e)
            }
        }
    }

    /// Linux's `protected_hardlinks`: who other than root may give a file
    /// another name.
    fn may_link(&self, path: &str, md: &Metadata) -> SfsResult<()> {
        let caller = self.options.caller.current();
        if caller.uid == md.uid {
            return Ok(());
        }
        let set_id = md.mode & libc::S_ISUID != 0
            || md.mode & (libc::S_ISGID | libc::S_IXGRP) == libc::S_ISGID | libc::S_IXGRP;
        let allowed = md.kind() == FileKind::File
            && !set_id
            && check_access(md, &caller, MAY_READ | MAY_WRITE, path).is_ok();
        if allowed {
            Ok(())
        } else {
            Err(SfsError::new(
                Errno::EPERM,
                format!("{path}: only its owner links a file it cannot read and write"),
            ))
        }
    }

    /// `AddLinks` on the shared entry of `id`, waiting briefly for a first
    /// link made at the same time to write it.
    pub(crate) async fn add_links(&self, id: FileId, delta: i32) -> SfsResult<Metadata> {
        let path = shared_path(id);
        let mut tries = 0;
        loop {
            let answer = self
                .owner(&path)
                .await?
                .rpc
                .add_links(crate::calls::link_of(&path, id, delta))
                .await;
            match answer {
                Err(e) if e.errno == Errno::ENOENT && tries < SHARED_ENTRY_TRIES => {
                    tries += 1;
                    tokio::time::sleep(SHARED_ENTRY_PAUSE).await;
                }
                other => return other.map(|e| Metadata::from(&e)),
            }
        }
    }

    /// The attributes of the hard-linked file whose name entry is `name`:
    /// its shared entry, with `access` and the sticky rule checked there.
    /// A shared entry that was never written (a first link cut short
    /// between its two steps) leaves the name's copy, the file's only name.
    pub(crate) async fn shared_entry(
        &self,
        name: &Metadata,
        access: u32,
        sticky_parent_uid: Option<u32>,
    ) -> SfsResult<Metadata> {
        self.remember_shared(name.id);
        let path = shared_path(name.id);
        let asked = pb::PathRequest {
            access,
            sticky_parent_uid,
            ..crate::calls::stat_of(&path, Some(name.id))
        };
        match self.owner(&path).await?.rpc.stat(asked).await {
            Ok(entry) => Ok(Metadata::from(&entry)),
            Err(e) if e.errno == Errno::ENOENT => {
                let only = Metadata {
                    nlink: 1,
                    ..name.clone()
                };
                check_access(&only, &self.options.caller.current(), access, &path)?;
                Ok(only)
            }
            Err(e) => Err(e),
        }
    }

    /// Makes the shared entry of the name entry `name` again from the
    /// name's copy of the attributes, with one name (what a first link cut
    /// short between its steps leaves). One made meanwhile wins.
    async fn restore_shared_entry(&self, name: &Metadata) -> SfsResult<()> {
        let entry = Metadata {
            nlink: 1,
            ..name.clone()
        };
        match self
            .place_entry(&shared_path(name.id), &entry, false, None, false)
            .await
        {
            Err(e) if e.errno != Errno::EEXIST => Err(e),
            _ => Ok(()),
        }
    }

    /// Records that file `id` is hard-linked: its attributes are at its
    /// shared entry from now on.
    pub(crate) fn remember_shared(&self, id: FileId) {
        let known = self.shared.read().expect("shared lock").contains(&id);
        if !known {
            self.shared.write().expect("shared lock").insert(id);
        }
    }

    /// Where the attributes of file `id`, opened at `path`, live.
    pub(crate) fn attributes_at(&self, path: &str, id: FileId) -> String {
        if self.shared.read().expect("shared lock").contains(&id) {
            shared_path(id)
        } else {
            path.to_string()
        }
    }

    /// Runs `call` with the path that holds the attributes of the entry at
    /// `path` (of file `id`, when known): `path` itself, or the shared
    /// entry when `path` names a hard-linked file (the owner of a name
    /// entry answers EREMCHG).
    pub(crate) async fn on_attributes<T, F, Fut>(
        &self,
        path: &str,
        id: Option<FileId>,
        call: F,
    ) -> SfsResult<T>
    where
        F: Fn(String) -> Fut,
        Fut: Future<Output = SfsResult<T>>,
    {
        let first = match id {
            Some(id) => self.attributes_at(path, id),
            None => path.to_string(),
        };
        match call(first).await {
            Err(e) if e.errno == Errno::EREMCHG => {
                let id = match id {
                    Some(id) => id,
                    None => self.stat_name(path).await?.id,
                };
                self.remember_shared(id);
                let mut tries = 0;
                loop {
                    match call(shared_path(id)).await {
                        // A first link being made, or one cut short.
                        Err(e) if e.errno == Errno::ENOENT && tries < SHARED_ENTRY_TRIES => {
                            tries += 1;
                            tokio::time::sleep(SHARED_ENTRY_PAUSE).await;
                        }
                        Err(e) if e.errno == Errno::ENOENT => {
                            let name = self.stat_name(path).await?;
                            if name.id != id || !name.is_name_of_shared() {
                                return Err(e);
                            }
                            self.restore_shared_entry(&name).await?;
                            return call(shared_path(id)).await;
                        }
                        other => return other,
                    }
                }
            }
            other => other,
        }
    }

    /// What follows the removal of the name entry `removed` (unlink, a
    /// rename over it, an orphan's last close): a file's data goes with
    /// its last name.
    pub(crate) async fn release_name(&self, removed: &Metadata) -> SfsResult<()> {
        if removed.is_name_of_shared() {
            let left = match self.add_links(removed.id, -1).await {
                Ok(left) => left,
                // No shared entry: a first link cut short (this was then
                // the only name) or one so slow that it is still being
                // made (and another name is coming). The data stays: a
                // leak rather than a name without data.
                Err(e) if e.errno == Errno::ENOENT => {
                    tracing::warn!(
                        "{}: no shared entry; the file's data is left in place",
                        shared_path(removed.id)
                    );
                    return Ok(());
                }
                Err(e) => return Err(e),
            };
            if left.nlink == 0 && left.kind() == FileKind::File && left.size > 0 {
                self.remove_chunks(removed.id).await?;
            }
        } else if removed.kind() == FileKind::File && removed.size > 0 {
            // An empty file has no chunks (truncation drops them), so its
            // removal is one round trip. The exception is a write racing
            // the unlink from another client: its chunks stay behind
            // unreferenced (docs/semantics.md).
            self.remove_chunks(removed.id).await?;
        }
        Ok(())
    }
}

/// A definite refusal of a `PutEntry`: nothing was placed.
fn refused(e: &SfsError) -> bool {
    matches!(
        e.errno,
        Errno::EEXIST
            | Errno::ENOENT
            | Errno::ENOTDIR
            | Errno::EISDIR
            | Errno::EACCES
            | Errno::EPERM
            | Errno::EINVAL
            | Errno::ENAMETOOLONG
    )
}
