//! Symlinks and non-directories in the middle of a path.
//!
//! The namespace is flat: a path is one key on the server its hash names,
//! and the servers know nothing of the directories above it. A call is
//! first made with the path as it is, which costs nothing extra when every
//! directory on the way is a real directory (the common case). Only when
//! it answers ENOENT or ENOTDIR does the client walk the directories above
//! the path: it looks up those it has not seen as directories in the last
//! second (all at once: one round trip, in parallel), and
//!
//! - a directory that is a symlink is replaced by where it leads and the
//!   call is made again on the path reached (`latest/out.h5` with
//!   `latest -> run42` is `run42/out.h5`), up to 40 symlinks (ELOOP);
//! - a directory that is a regular file (or any other non-directory)
//!   makes the call fail with ENOTDIR, as the kernel's lookup does;
//! - a missing one makes it fail with ENOENT naming that directory;
//! - when all are directories the call's own answer stands.

use crate::permissions::ancestors;
use crate::Client;
use sfs_global::path::{normalize, split_parent};
use sfs_global::{Errno, FileKind, Metadata, SfsError, SfsResult};

/// Symlinks followed among the directories of one path before ELOOP, as
/// Linux's MAXSYMLINKS.
const MAX_DIRECTORY_SYMLINKS: usize = 40;

impl Client {
    /// Runs `op` on `path` (made absolute and normal: [`normalize`]), and
    /// again on the path its directories really lead to when `op` answered
    /// ENOENT or ENOTDIR because a directory above it is a symlink (see
    /// the module's documentation).
    pub(crate) fn through_dirs<T>(
        &self,
        path: &str,
        op: impl Fn(String) -> SfsResult<T>,
    ) -> SfsResult<T> {
        let path = normalize(path)?;
        refuse_shared_entry(&path)?;
        match op(path.clone()) {
            Err(e) if retry_after(&e) => match self.block_on(self.real_dirs(&path))? {
                Some(real) => op(real),
                None => Err(e),
            },
            other => other,
        }
    }

    /// `path` with the symlinks among the directories above it followed
    /// (the last component as it is): what `realpath(3)` needs. ENOENT,
    /// ENOTDIR or ELOOP as [`Client::real_dirs`].
    pub fn resolve_directories(&self, path: &str) -> SfsResult<String> {
        let path = normalize(path)?;
        Ok(self.block_on(self.real_dirs(&path))?.unwrap_or(path))
    }

    /// `dir` resolved as a directory in the middle of a path resolves:
    /// every symlink on the way and at its end followed; ENOENT when it is
    /// missing, ENOTDIR when it is not a directory, ELOOP as
    /// [`Client::real_dirs`]. One lookup at most (directories seen in the
    /// last second are cached). What the shim needs for `..` and a trailing
    /// `/`.
    pub fn resolve_directory(&self, dir: &str) -> SfsResult<String> {
        let dir = normalize(dir)?;
        // The directories above a name inside `dir` are `dir`'s own and
        // `dir` itself.
        let inside = sfs_global::path::join(&dir, "x");
        let real = self.resolve_directories(&inside)?;
        Ok(split_parent(&real).map_or_else(|| "/".to_string(), |(parent, _)| parent.to_string()))
    }

    /// [`Client::through_dirs`] for calls with two paths (rename).
    pub(crate) fn through_dirs2<T>(
        &self,
        a: &str,
        b: &str,
        op: impl Fn(String, String) -> SfsResult<T>,
    ) -> SfsResult<T> {
        let (a, b) = (normalize(a)?, normalize(b)?);
        refuse_shared_entry(&a)?;
        refuse_shared_entry(&b)?;
        match op(a.clone(), b.clone()) {
            Err(e) if retry_after(&e) => {
                let (real_a, real_b) =
                    self.block_on(async { futures::join!(self.real_dirs(&a), self.real_dirs(&b)) });
                let (real_a, real_b) = (real_a?, real_b?);
                if real_a.is_none() && real_b.is_none() {
                    return Err(e);
                }
                op(real_a.unwrap_or(a), real_b.unwrap_or(b))
            }
            other => other,
        }
    }

    /// The entries of the directories above the normalised `path`, from `/`
    /// down to its parent, in order: those seen as directories in the last
    /// second from the cache of directories, the others looked up at once
    /// (in parallel, one round trip); the directories found are cached.
    /// Without `with_root`, `/` (always a directory) is left out. What
    /// [`Client::real_dirs`] and [`Client::search_permitted`] walk.
    pub(crate) async fn dirs_above<'p>(
        &self,
        path: &'p str,
        with_root: bool,
    ) -> Vec<(&'p str, SfsResult<Metadata>)> {
        let mut above = ancestors(path);
        if !with_root && !above.is_empty() {
            above.remove(0);
        }
        let cached: Vec<Option<Metadata>> = above
            .iter()
            .map(|dir| self.parents.get(dir).filter(Metadata::is_dir))
            .collect();
        let looked = futures::future::join_all(
            above
                .iter()
                .zip(&cached)
                .filter(|(_, known)| known.is_none())
                .map(|(dir, _)| self.lookup_uncached(dir)),
        )
        .await;
        let mut looked = looked.into_iter();
        above
            .into_iter()
            .zip(cached)
            .map(|(dir, known)| {
                let md = match known {
                    Some(md) => Ok(md),
                    None => looked
                        .next()
                        .unwrap_or_else(|| Err(SfsError::not_found(dir))),
                };
                if let Ok(md) = &md {
                    self.saw_entry(dir, md);
                }
                (dir, md)
            })
            .collect()
    }

    /// `path` with the symlinks among the directories above it replaced by
    /// where they lead: `None` when all of them are directories; ENOTDIR
    /// when one is something else, ENOENT when one is missing, ELOOP past
    /// [`MAX_DIRECTORY_SYMLINKS`].
    pub(crate) async fn real_dirs(&self, path: &str) -> SfsResult<Option<String>> {
        let mut current = path.to_string();
        let mut followed = 0;
        'walk: loop {
            for (dir, md) in self.dirs_above(&current, false).await {
                let md = match md {
                    Ok(md) => md,
                    Err(e) if e.errno == Errno::ENOENT => return Err(SfsError::not_found(dir)),
                    Err(e) => return Err(e),
                };
                match md.kind() {
                    FileKind::Directory => {}
                    FileKind::Symlink => {
                        followed += 1;
                        if followed > MAX_DIRECTORY_SYMLINKS {
                            return Err(SfsError::new(
                                Errno::ELOOP,
                                format!("{path}: too many levels of symbolic links"),
                            ));
                        }
                        let leads_to = self.link_destination(dir, &md.link_target)?;
                        let rest = &current[dir.len() + 1..];
                        current = normalize(&format!("{leads_to}/{rest}"))?;
                        continue 'walk;
                    }
                    _ => return Err(SfsError::not_dir(dir)),
                }
            }
            return Ok((current != path).then_some(current));
        }
    }
}

/// Whether a call's error may come from a directory above its path that is
/// not a real directory.
/// The shared entries of hard-linked files (crate::links) are not names
/// a program may use: unlinking one would drop the data of its names.
fn refuse_shared_entry(path: &str) -> SfsResult<()> {
    let first = path.trim_start_matches('/').split('/').next().unwrap_or("");
    if first.starts_with(sfs_global::metadata::SHARED_PREFIX) {
        return Err(SfsError::not_found(path));
    }
    Ok(())
}

fn retry_after(e: &SfsError) -> bool {
    e.errno == Errno::ENOENT || e.errno == Errno::ENOTDIR
}
