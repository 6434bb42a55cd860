//! Files that lose their name while this client holds them open.
//!
//! POSIX keeps an unlinked file's data until its last descriptor closes,
//! and programs rely on it: temporary files are created, unlinked and then
//! used (Python's `TemporaryFile`, sqlite's temporary databases), and an
//! editor's rename over a file another descriptor still reads must not
//! pull the data away. SFS servers keep no open counts, so the client that
//! unlinks (or renames over) a file it holds open keeps the file instead:
//! its entry moves to a hidden name in the root directory,
//! `/.sfs-orphan-<id as 32 hex digits>` (never listed), its descriptors
//! follow it there, and the client removes it, data and all, when its last
//! descriptor of the file closes. `fstat` on such a descriptor reports
//! `st_nlink` 0, as for an unlinked file.
//!
//! What this does not cover (docs/semantics.md): a file open in *another*
//! process is removed at once when this one unlinks it (that process's
//! descriptors then fail with ENOENT); an orphan is removed by the process
//! that orphaned it, so a forked child that outlives its parent's last
//! close loses it; an orphan whose process dies without closing stays
//! (invisible; `sfs rm /.sfs-orphan-...` removes it).
//!
//! Renames by this client also move its own descriptors of the renamed
//! file or directory to the new path, and `O_TMPFILE` files are born as
//! orphans.

use crate::files::{OpenFile, OpenFlags};
use crate::Client;
use sfs_global::access::{MAY_EXEC, MAY_WRITE};
use sfs_global::{FileId, FileKind, Metadata, SfsError, SfsResult};
use sfs_rpc::pb;
use std::collections::HashMap;
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{Arc, Mutex};

/// Names in the root directory that start with this are orphans: hidden
/// from listings.
pub const ORPHAN_PREFIX: &str = ".sfs-orphan-";

/// The hidden path an orphaned file of id `id` lives at.
pub fn orphan_path(id: FileId) -> String {
    format!("/{ORPHAN_PREFIX}{:032x}", id.0)
}

/// Orphans this client made, by file id.
#[derive(Default)]
pub(crate) struct Orphans {
    by_id: Mutex<HashMap<FileId, Orphan>>,
}

struct Orphan {
    path: String,
    /// The process that made it; only it removes it (a forked child shares
    /// the table but not the duty).
    pid: u32,
}

impl Orphans {
    pub(crate) fn contains(&self, id: FileId) -> bool {
        self.by_id.lock().expect("orphans").contains_key(&id)
    }
}

impl Client {
    /// `open(dir, O_TMPFILE)`: a new file with no name, in the hidden
    /// orphan space from the start, removed at its last close. `dir` must
    /// be a directory; the descriptor must be writable. `linkat` with
    /// `AT_EMPTY_PATH` gives it a name later ([`Client::link`] of its
    /// hidden path).
    pub(crate) fn open_unnamed(
        &self,
        dir: &str,
        flags: i32,
        mode: u32,
    ) -> SfsResult<Arc<OpenFile>> {
        let open_flags = OpenFlags(flags & !libc::O_TMPFILE);
        if !open_flags.writable() {
            return Err(SfsError::invalid("O_TMPFILE needs O_WRONLY or O_RDWR"));
        }
        self.block_on(async {
            // The caller must be allowed to create in `dir`, although the
            // file lives under a hidden name in the root.
            let (_, parent) = self.resolve_access(dir, MAY_WRITE | MAY_EXEC).await?;
            if !parent.is_dir() {
                return Err(SfsError::not_dir(dir));
            }
            // Unique per process and call; an exclusive create settles the
            // rest (another client with the same pid on another node).
            let (hidden, md) = loop {
                static NEXT: AtomicU64 = AtomicU64::new(0);
                let nanos = std::time::SystemTime::now()
                    .duration_since(std::time::UNIX_EPOCH)
                    .map_or(0, |d| d.as_nanos());
                let hidden = format!(
                    "/{ORPHAN_PREFIX}tmp-{:x}-{:x}-{nanos:x}",
                    std::process::id(),
                    NEXT.fetch_add(1, Ordering::Relaxed)
                );
                match self.create_hidden(&hidden, mode).await {
                    Ok(md) => break (hidden, md),
                    Err(e) if e.errno == sfs_global::Errno::EEXIST => continue,
                    Err(e) => return Err(e),
                }
            };
            self.orphans.by_id.lock().expect("orphans").insert(
                md.id,
                Orphan {
                    path: hidden.clone(),
                    pid: std::process::id(),
                },
            );
            Ok(OpenFile::new(hidden, &md, open_flags))
        })
    }

    /// Creates the hidden entry of an unnamed file (exclusive; the root
    /// always exists and the caller's right to create was checked on the
    /// directory it named, so the root's permissions do not apply).
    async fn create_hidden(&self, hidden: &str, mode: u32) -> SfsResult<Metadata> {
        let r = self
            .owner(hidden)
            .await?
            .rpc
            .create(pb::CreateRequest {
                path: hidden.to_string(),
                mode: FileKind::File.type_bits() | (mode & 0o7777),
                exclusive: true,
                ..Default::default()
            })
            .await?;
        crate::namespace::created_entry(r).map(|(md, _)| md)
    }

    /// This client's open files of `id` at `path`.
    fn open_files_at(&self, path: &str, id: FileId) -> Vec<Arc<OpenFile>> {
        if self.files.is_empty() {
            return Vec::new();
        }
        let mut found: Vec<Arc<OpenFile>> = Vec::new();
        for (_, file) in self.files.snapshot() {
            if file.id == id && file.path() == path && !found.iter().any(|f| Arc::ptr_eq(f, &file))
            {
                found.push(file);
            }
        }
        found
    }

    /// Moves a file this client holds open, whose entry at `path` is `md`,
    /// to its hidden orphan name and points the descriptors there. The
    /// entry at `path` must be gone afterwards: with `remove_old` this
    /// removes it (unlink); without, the caller already replaced it (rename
    /// over the file) and `md` is what it replaced.
    pub(crate) async fn orphan(
        &self,
        path: &str,
        md: &Metadata,
        open: Vec<Arc<OpenFile>>,
        remove_old: bool,
    ) -> SfsResult<()> {
        let hidden = orphan_path(md.id);
        let held = match md.is_name_of_shared() {
            true => self
                .orphans
                .by_id
                .lock()
                .expect("orphans")
                .get(&md.id)
                .map(|o| o.path.clone()),
            false => None,
        };
        if let Some(held) = held {
            // Another name of a hard-linked file this client already holds
            // as an orphan: the name goes, the orphan keeps the file.
            if remove_old {
                let removed = self
                    .remove_entry(path, pb::RemoveKind::RemoveNotDirectory, Some(md.id))
                    .await?;
                self.release_name(&removed).await?;
            } else {
                self.release_name(md).await?;
            }
            for file in open {
                file.set_path(held.clone());
            }
            return Ok(());
        }
        self.place_entry(&hidden, md, false, None, false).await?;
        if remove_old {
            self.remove_entry(path, pb::RemoveKind::RemoveNotDirectory, Some(md.id))
                .await?;
        }
        for file in open {
            file.set_path(hidden.clone());
        }
        self.orphans.by_id.lock().expect("orphans").insert(
            md.id,
            Orphan {
                path: hidden,
                pid: std::process::id(),
            },
        );
        Ok(())
    }

    /// unlink's first step: if this client holds the file at `path` open,
    /// orphan it instead of removing it and answer `true`.
    pub(crate) async fn orphan_if_open(&self, path: &str) -> SfsResult<bool> {
        if self.files.is_empty() {
            return Ok(false);
        }
        // As stored: a hard-linked file's name entry is what moves.
        let md = self.lookup_name(path).await?;
        if md.kind() != FileKind::File {
            return Ok(false);
        }
        let open = self.open_files_at(path, md.id);
        if open.is_empty() {
            return Ok(false);
        }
        // The unlink's own permission checks, before the file moves.
        self.check_removal(path, &md).await?;
        self.orphan(path, &md, open, true).await?;
        Ok(true)
    }

    /// A rename replaced `replaced` at `path`: if this client holds that
    /// file open, orphan it (its data stays) and answer `true`; else the
    /// caller drops its data.
    pub(crate) async fn orphan_replaced(&self, path: &str, replaced: &Metadata) -> SfsResult<bool> {
        let open = self.open_files_at(path, replaced.id);
        if open.is_empty() {
            return Ok(false);
        }
        self.orphan(path, replaced, open, false).await?;
        Ok(true)
    }

    /// After this client renamed `old` to `new`: its descriptors of the
    /// renamed file (`id`), or of anything below a renamed directory,
    /// follow.
    pub(crate) fn follow_rename(&self, old: &str, new: &str, id: FileId, is_dir: bool) {
        if self.files.is_empty() {
            return;
        }
        let below = format!("{old}/");
        for (_, file) in self.files.snapshot() {
            let path = file.path();
            if path == old && file.id == id {
                file.set_path(new.to_string());
            } else if is_dir && path.starts_with(&below) {
                file.set_path(format!("{new}/{}", &path[below.len()..]));
            }
        }
    }

    /// After a descriptor of `id` closed: removes the orphan of `id` once no
    /// descriptor of it is left in this process. Failures are logged: the
    /// descriptor is closed whatever happens (as close(2) closes it).
    pub(crate) fn release_orphan_if_last(&self, id: FileId) {
        let path = {
            let orphans = self.orphans.by_id.lock().expect("orphans");
            match orphans.get(&id) {
                Some(o) if o.pid == std::process::id() => o.path.clone(),
                _ => return,
            }
        };
        if self.files.snapshot().iter().any(|(_, f)| f.id == id) {
            return;
        }
        self.orphans.by_id.lock().expect("orphans").remove(&id);
        let removed = self.block_on(async {
            let removed = self
                .remove_entry(&path, pb::RemoveKind::RemoveNotDirectory, Some(id))
                .await?;
            if removed.is_name_of_shared() {
                // Its other names (hard links) keep the data.
                return self.release_name(&removed).await;
            }
            self.remove_chunks(id).await
        });
        if let Err(e) = removed {
            tracing::warn!("{path}: cannot remove the orphan of an unlinked file: {e}");
        }
    }
}
