//! The client's half of the permission checks: which server to ask about
//! what. Servers check the caller against the entries they own
//! (`sfs_global::access`, docs/semantics.md "Permissions"), but a call
//! often concerns two entries on two servers — the entry and its parent
//! directory — so the client asks the parent's owner first (or together
//! with a create, which can be taken back) and passes what it learned
//! (a sticky parent's owner) to the entry's owner.

use crate::Client;
use sfs_global::access::{check_access, MAY_EXEC, MAY_WRITE};
use sfs_global::path::split_parent;
use sfs_global::{Errno, Metadata, SfsError, SfsResult};
use sfs_rpc::pb;
use std::collections::HashMap;
use std::sync::Mutex;
use std::time::{Duration, Instant};

/// How long a removal reuses the attributes of a parent directory that
/// lives on another server than the entry (so `rm` of many files in one
/// directory asks the parent's server once, not once per file).
pub(crate) const PARENT_TTL: Duration = Duration::from_secs(1);

/// At most this many parents are remembered (then the cache starts over).
const PARENTS_KEPT: usize = 1024;

/// Parent directories' attributes seen by a removal's permission check,
/// each reused for [`PARENT_TTL`]; the current caller is checked against
/// them locally with the servers' rules (`sfs_global::access`). Cleared by
/// this client's own chmod/chown/utimens, rmdir and rename. Another
/// client's change of a directory's bits reaches this client's removals
/// within [`PARENT_TTL`] (docs/semantics.md, "Permissions").
#[derive(Default)]
pub(crate) struct ParentCache {
    seen: Mutex<HashMap<String, (Instant, Metadata)>>,
}

impl ParentCache {
    pub(crate) fn get(&self, path: &str) -> Option<Metadata> {
        let seen = self.seen.lock().unwrap_or_else(|p| p.into_inner());
        seen.get(path)
            .filter(|(at, _)| at.elapsed() < PARENT_TTL)
            .map(|(_, md)| md.clone())
    }

    pub(crate) fn put(&self, path: &str, md: &Metadata) {
        let mut seen = self.seen.lock().unwrap_or_else(|p| p.into_inner());
        if seen.len() >= PARENTS_KEPT {
            seen.clear();
        }
        seen.insert(path.to_string(), (Instant::now(), md.clone()));
    }

    /// Forgets every parent (a directory's attributes may have changed).
    pub(crate) fn clear(&self) {
        self.seen.lock().unwrap_or_else(|p| p.into_inner()).clear();
    }
}

impl Client {
    /// Search permission on every directory above `path` (from `/` down to
    /// its parent), for a call that names `path` (descriptor calls do not
    /// come here: POSIX checks the path at open). Root passes at once.
    /// Directory attributes come from the client's cache of directories
    /// ([`ParentCache`], 1 s, also filled by lookups that find a
    /// directory); the ones missing are asked of their owners all at once
    /// (one round trip, in parallel), and a cached directory that denies
    /// is asked again before the call is refused (EACCES). A missing
    /// ancestor, or one that is not a directory, ends the walk: the call
    /// itself then fails as it would have (ENOENT, ENOTDIR).
    pub(crate) async fn search_permitted(&self, path: &str) -> SfsResult<()> {
        if self.options.caller.is_root() {
            return Ok(());
        }
        let caller = self.options.caller.current();
        for (dir, md) in self.dirs_above(path, true).await {
            let md = match md {
                Ok(md) if md.is_dir() => md,
                // Missing or not a directory: the call fails on its own.
                _ => return Ok(()),
            };
            if check_access(&md, &caller, MAY_EXEC, dir).is_err() {
                // Perhaps opened up since it was cached: ask again.
                let fresh = match self.lookup_uncached(dir).await {
                    Ok(fresh) => fresh,
                    Err(_) => return Ok(()),
                };
                self.saw_entry(dir, &fresh);
                if fresh.is_dir() {
                    check_access(&fresh, &caller, MAY_EXEC, dir)?;
                }
            }
        }
        Ok(())
    }

    /// Remembers `md`, the entry of `path` just looked up, when it is a
    /// directory (for [`Client::search_permitted`] of the paths below it).
    pub(crate) fn saw_entry(&self, path: &str, md: &Metadata) {
        if md.is_dir() {
            self.parents.put(path, md);
        }
    }

    /// The entry of `path`'s parent directory (after symlinks), if the
    /// caller has the `access` bits on it (checked by its owner: EACCES);
    /// ENOENT/ENOTDIR unless it exists and is a directory.
    pub(crate) async fn parent_dir(&self, path: &str, access: u32) -> SfsResult<Metadata> {
        self.parent_dir_at(path, access).await.map(|(_, md)| md)
    }

    /// [`Client::parent_dir`] for a call that acts on `path` by its name
    /// (a removal, a rename): ENOENT when the parent is a symlink, so that
    /// the caller's walk (crate::walk) makes the call again at the path
    /// the symlink leads to, instead of acting on a name under the link.
    pub(crate) async fn parent_dir_really_at(
        &self,
        path: &str,
        access: u32,
    ) -> SfsResult<Metadata> {
        let (at, md) = self.parent_dir_at(path, access).await?;
        let lexical = split_parent(path).map_or("/", |(p, _)| p);
        if at != lexical {
            return Err(SfsError::not_found(format!(
                "{path}: {lexical} is a symbolic link"
            )));
        }
        Ok(md)
    }

    /// [`Client::parent_dir`], and the path the parent really is at (another
    /// one when the parent is a symlink).
    pub(crate) async fn parent_dir_at(
        &self,
        path: &str,
        access: u32,
    ) -> SfsResult<(String, Metadata)> {
        let Some((parent, _)) = split_parent(path) else {
            return Err(SfsError::exists(path));
        };
        let (at, md) = match self.resolve_access(parent, access).await {
            Ok(found) => found,
            // A parent that is not a directory is ENOTDIR whatever its
            // bits (one more look, only on this error path).
            Err(e) if e.errno == Errno::EACCES => match self.resolve(parent).await {
                Ok(found) if !found.1.is_dir() => found,
                _ => return Err(e),
            },
            Err(e) => return Err(e),
        };
        if md.is_dir() {
            Ok((at, md))
        } else {
            Err(SfsError::not_dir(parent))
        }
    }

    /// Removes the entry at `path` (not `/`) if the caller may: write and
    /// search permission on the parent and, in a sticky parent, owning the
    /// entry or the parent. One call when the parent lives on the entry's
    /// server (it checks both); otherwise the parent's owner checks first,
    /// then the entry's owner applies the sticky rule and removes.
    pub(crate) async fn remove_permitted(
        &self,
        path: &str,
        kind: pb::RemoveKind,
    ) -> SfsResult<Metadata> {
        self.search_permitted(path).await?;
        let parent_path = split_parent(path).map_or("/", |(p, _)| p);
        let owner = self.distributor.metadata_server(path);
        if self.distributor.metadata_server(parent_path) == owner {
            let here = self
                .remove_request(pb::RemoveRequest {
                    path: path.to_string(),
                    kind: kind as i32,
                    check_parent: true,
                    ..Default::default()
                })
                .await;
            // A parent that is a symlink (which that server does not
            // follow) answers ENOTDIR: the general path resolves it.
            match here {
                Err(e) if e.errno == Errno::ENOTDIR => {}
                other => return other,
            }
        }
        let parent = match self.parents.get(parent_path) {
            Some(parent) => {
                let caller = self.options.caller.current();
                check_access(&parent, &caller, MAY_WRITE | MAY_EXEC, parent_path)?;
                parent
            }
            None => {
                let parent = self
                    .parent_dir_really_at(path, MAY_WRITE | MAY_EXEC)
                    .await?;
                self.parents.put(parent_path, &parent);
                parent
            }
        };
        self.remove_request(pb::RemoveRequest {
            path: path.to_string(),
            kind: kind as i32,
            sticky_parent_uid: sticky_owner(&parent),
            ..Default::default()
        })
        .await
    }

    /// The checks of [`Client::remove_permitted`] without the removal,
    /// for an entry `md` at `path` that is moved away instead (an open
    /// file's unlink makes it an orphan).
    pub(crate) async fn check_removal(&self, path: &str, md: &Metadata) -> SfsResult<()> {
        let parent = self
            .parent_dir_really_at(path, MAY_WRITE | MAY_EXEC)
            .await?;
        if let Some(owner) = sticky_owner(&parent) {
            self.stat_request(pb::PathRequest {
                sticky_parent_uid: Some(owner),
                ..crate::calls::stat_of(path, Some(md.id))
            })
            .await?;
        }
        Ok(())
    }

    /// The permission checks of a rename of `md` from `old` to `new`:
    /// write and search permission on both parents (each checked by its
    /// owner, at once), then, where they apply, the sticky rule of the old
    /// parent and write permission on a directory that changes parent
    /// (its `..` changes), checked by the entry's owner. The new parent's
    /// entry comes back: its sticky rule applies to an entry the rename
    /// replaces (checked by the owner of `new` as it places the entry).
    pub(crate) async fn rename_permitted(
        &self,
        old: &str,
        new: &str,
        md: &Metadata,
    ) -> SfsResult<Metadata> {
        let (old_parent, new_parent) = futures::join!(
            self.parent_dir_really_at(old, MAY_WRITE | MAY_EXEC),
            self.parent_dir_really_at(new, MAY_WRITE | MAY_EXEC)
        );
        let (old_parent, new_parent) = (old_parent?, new_parent?);
        let moves_directory =
            md.is_dir() && split_parent(old).map(|p| p.0) != split_parent(new).map(|p| p.0);
        let sticky = sticky_owner(&old_parent);
        if sticky.is_some() || moves_directory {
            self.stat_request(pb::PathRequest {
                access: if moves_directory { MAY_WRITE } else { 0 },
                sticky_parent_uid: sticky,
                ..crate::calls::stat_of(old, Some(md.id))
            })
            .await?;
        }
        Ok(new_parent)
    }
}

/// The directories above the normalised `path`, from `/` down to its
/// parent (none for `/`).
pub(crate) fn ancestors(path: &str) -> Vec<&str> {
    let mut above = Vec::new();
    if path == "/" {
        return above;
    }
    above.push("/");
    for (i, b) in path.bytes().enumerate().skip(1) {
        if b == b'/' {
            above.push(&path[..i]);
        }
    }
    above
}

/// The uid a sticky directory's rule protects entries for (its owner), or
/// `None` when `dir` is not sticky.
pub(crate) fn sticky_owner(dir: &Metadata) -> Option<u32> {
    (dir.mode & libc::S_ISVTX != 0).then_some(dir.uid)
}

#[cfg(test)]
mod tests {
    use super::ancestors;

    #[test]
    fn ancestors_run_from_the_root_to_the_parent() {
        assert!(ancestors("/").is_empty());
        assert_eq!(ancestors("/a"), vec!["/"]);
        assert_eq!(ancestors("/a/b/c"), vec!["/", "/a", "/a/b"]);
    }
}
