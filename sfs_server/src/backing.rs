//! Cache mode (config `backing_dir`, docs/staging.md): the namespace starts
//! as a view of a directory every server can read.
//!
//! [`BackedStore`] wraps a server's [`MetadataStore`]. An entry is *taken
//! in* — created in the store from the backing entry's `lstat` (type, mode,
//! owner, size, times; a symlink's target), with `source` naming it — the
//! first time a call of this server needs it: a lookup that finds nothing
//! here, a create or rename onto the name, a listing of its directory. Each
//! server takes in only the names it owns, so a listing stays one scan per
//! server. From then on the entry is an ordinary SFS entry: changes stay in
//! SFS until they are written back by name (`sfs stage-out --changed`,
//! `sfs stop --write-back`).
//!
//! A removal of a name the backing directory has leaves a *whiteout*
//! ([`MetadataStore::set_whiteout`]) so the backing entry is not taken in
//! again. A directory can only be removed once empty, and emptiness takes
//! its backing children in first, so every backing name below a removed
//! directory has its whiteout: a directory made again at that path starts
//! empty. The bytes of a file taken in stay in the backing file until read
//! (the data servers read them through by chunk: `TieredStore::set_source`).
//!
//! What the view does not follow: a backing entry that changes after it
//! was taken in (SFS keeps what it saw), and a backing directory listed by
//! this server once (its names added later are found by lookup, not by
//! listing).

use crate::meta_store::{MetadataStore, RemoveKind};
use crate::service::metadata::new_file_id;
use sfs_global::distributor::Distributor;
use sfs_global::metadata::{MetaUpdate, XattrSet};
use sfs_global::path::{escape_bytes, unescape};
use sfs_global::{Errno, FileId, FileKind, Metadata, SfsError, SfsResult};
use std::collections::HashSet;
use std::ffi::OsStr;
use std::os::unix::ffi::OsStrExt;
use std::os::unix::fs::MetadataExt;
use std::path::{Path, PathBuf};
use std::sync::{Arc, Mutex, MutexGuard};

fn lock_set(set: &Mutex<HashSet<String>>) -> MutexGuard<'_, HashSet<String>> {
    set.lock().unwrap_or_else(|poisoned| poisoned.into_inner())
}

/// Striped locks over paths: a take-in and a removal of one name never
/// interleave (a removal's whiteout could otherwise be overtaken by a
/// take-in that checked for it just before).
const STRIPES: usize = 256;

/// Plain directories remembered before the set starts over (a path of
/// about 100 bytes each: a few MiB at most).
const PLAIN_REMEMBERED: usize = 1 << 16;

/// A server's metadata store in cache mode.
pub struct BackedStore {
    inner: Arc<dyn MetadataStore>,
    root: PathBuf,
    /// `root` with every symlink resolved: a backing path is taken in only
    /// if its parent resolves to the same path below it (no symlink on the
    /// way, nothing outside).
    real_root: PathBuf,
    places: Distributor,
    index: usize,
    /// Directories whose backing children this server has taken in.
    listed: Mutex<HashSet<String>>,
    /// Directories [`BackedStore::dir_is_plain`] found plain (up to
    /// [`PLAIN_REMEMBERED`], then forgotten all at once): a backing
    /// directory that becomes a symlink later is not followed anyway.
    plain: Mutex<HashSet<String>>,
    stripes: Box<[Mutex<()>]>,
}

impl BackedStore {
    /// The view of `root` for server `index` of `servers`, over `inner`.
    pub fn new(inner: Arc<dyn MetadataStore>, root: &Path, index: usize, servers: usize) -> Self {
        BackedStore {
            inner,
            root: root.to_path_buf(),
            real_root: std::fs::canonicalize(root).unwrap_or_else(|_| root.to_path_buf()),
            places: Distributor::new(servers),
            index,
            listed: Mutex::new(HashSet::new()),
            plain: Mutex::new(HashSet::new()),
            stripes: (0..STRIPES).map(|_| Mutex::new(())).collect(),
        }
    }

    fn lock(&self, path: &str) -> MutexGuard<'_, ()> {
        let stripe = (xxhash_rust::xxh3::xxh3_64(path.as_bytes()) % STRIPES as u64) as usize;
        self.stripes[stripe]
            .lock()
            .unwrap_or_else(|poisoned| poisoned.into_inner())
    }

    /// Where `path` is in the backing directory.
    fn backing_path(&self, path: &str) -> PathBuf {
        // Names not UTF-8 are carried escaped (sfs_global::path::escape_bytes).
        self.root
            .join(OsStr::from_bytes(&unescape(path.trim_start_matches('/'))))
    }

    /// The entry the backing directory has at `path`, as SFS would take
    /// it in (a new id); `None` when it has none, or only something SFS
    /// does not store (a device, FIFO or socket).
    /// Taken in only where `path`'s parent is plain
    /// ([`BackedStore::dir_is_plain`]).
    fn backing_entry(&self, path: &str) -> SfsResult<Option<Metadata>> {
        let at = self.backing_path(path);
        let st = match std::fs::symlink_metadata(&at) {
            Ok(st) => st,
            Err(e)
                if matches!(
                    e.raw_os_error(),
                    Some(libc::ENOENT) | Some(libc::ENOTDIR) | Some(libc::ENAMETOOLONG)
                ) =>
            {
                return Ok(None)
            }
            Err(e) => {
                return Err(SfsError::new(
                    SfsError::from(std::io::Error::from(e.kind())).errno,
                    format!("cache mode: cannot look at {}: {e}", at.display()),
                ))
            }
        };
        // Devices, FIFOs and sockets of the backing directory are not taken
        // in (a view that could open them would reach the host's).
        let Some(kind) = FileKind::from_mode(st.mode()).filter(|k| !k.is_special()) else {
            return Ok(None);
        };
        let time = |s: i64, ns: i64| s.saturating_mul(1_000_000_000).saturating_add(ns);
        let mut md = Metadata::new(kind, st.mode() & 0o7777, new_file_id(), 0);
        md.uid = st.uid();
        md.gid = st.gid();
        md.atime_ns = time(st.atime(), st.atime_nsec());
        md.mtime_ns = time(st.mtime(), st.mtime_nsec());
        md.ctime_ns = time(st.ctime(), st.ctime_nsec());
        md.source = path.to_string();
        match kind {
            FileKind::File => {
                md.size = st.len();
                md.source_len = st.len();
            }
            FileKind::Symlink => {
                let target = std::fs::read_link(&at).map_err(SfsError::from)?;
                let target = target.as_os_str().as_bytes();
                md.link_target = escape_bytes(target).into_owned();
                md.size = target.len() as u64;
            }
            FileKind::Directory => {}
            FileKind::Fifo | FileKind::Socket | FileKind::CharDevice | FileKind::BlockDevice => {
                return Ok(None)
            }
        }
        Ok(Some(md))
    }

    /// Whether the backing directory's `dir` is that very directory: no
    /// symlink among its components (SFS follows those itself, through the
    /// symlink entries it took in), so nothing is taken in twice under two
    /// names or from outside the backing directory.
    fn dir_is_plain(&self, dir: &str) -> bool {
        if dir == "/" || lock_set(&self.plain).contains(dir) {
            return true;
        }
        let plain = std::fs::canonicalize(self.backing_path(dir)).is_ok_and(|real| {
            real == self
                .real_root
                .join(OsStr::from_bytes(&unescape(dir.trim_start_matches('/'))))
        });
        if plain {
            let mut known = lock_set(&self.plain);
            if known.len() >= PLAIN_REMEMBERED {
                known.clear();
            }
            known.insert(dir.to_string());
        }
        plain
    }

    /// Takes `path` in from the backing directory (after a miss here)
    /// unless it was removed in SFS (a whiteout), something is here
    /// already, or its parent is not plain; the entry now at `path`, if
    /// any. The backing directory is asked first: most misses (a name made
    /// in SFS, a lookup of a name nobody has) end with one `lstat`.
    fn take_in(&self, path: &str) -> SfsResult<Option<Metadata>> {
        let found = self.backing_entry(path);
        if matches!(found, Ok(None)) {
            return Ok(None);
        }
        match sfs_global::path::split_parent(path) {
            // An error too only counts where the name could be taken in.
            Some((parent, _)) if self.dir_is_plain(parent) => self.install(path, || found),
            _ => Ok(None),
        }
    }

    /// Takes in a name of a listed plain directory: looks here first (a
    /// listing meets mostly names taken in already).
    fn take_in_below_plain(&self, path: &str) -> SfsResult<Option<Metadata>> {
        self.install(path, || self.backing_entry(path))
    }

    /// Under `path`'s lock: the entry here if there is one; none if `path`
    /// has a whiteout; else `backing`'s entry, created here.
    fn install(
        &self,
        path: &str,
        backing: impl FnOnce() -> SfsResult<Option<Metadata>>,
    ) -> SfsResult<Option<Metadata>> {
        let _guard = self.lock(path);
        if let Some(md) = self.inner.get(path)? {
            return Ok(Some(md));
        }
        if self.inner.is_whiteout(path)? {
            return Ok(None);
        }
        match backing()? {
            Some(md) => Ok(Some(self.inner.create(path, md, false)?.0)),
            None => Ok(None),
        }
    }

    /// Takes in every name of the backing directory `dir` that this server
    /// owns (once per directory and run of this server).
    fn take_in_children(&self, dir: &str) -> SfsResult<()> {
        if self.listed.lock().expect("listed lock").contains(dir) {
            return Ok(());
        }
        let at = self.backing_path(dir);
        let listing = if self.dir_is_plain(dir) {
            std::fs::read_dir(&at)
        } else {
            Err(std::io::Error::from_raw_os_error(libc::ENOENT))
        };
        let entries = match listing {
            Ok(entries) => Some(entries),
            // Nothing there, or not a directory: nothing to take in.
            Err(e) if matches!(e.raw_os_error(), Some(libc::ENOENT) | Some(libc::ENOTDIR)) => None,
            // Anything else may pass: not marked as listed.
            Err(e) => {
                return Err(SfsError::new(
                    SfsError::from(std::io::Error::from(e.kind())).errno,
                    format!("cache mode: cannot list {}: {e}", at.display()),
                ))
            }
        };
        if let Some(entries) = entries {
            for entry in entries {
                let entry = entry.map_err(SfsError::from)?;
                let name = escape_bytes(entry.file_name().as_bytes()).into_owned();
                let child = if dir == "/" {
                    format!("/{name}")
                } else {
                    format!("{dir}/{name}")
                };
                if self.places.metadata_server(&child) == self.index {
                    self.take_in_below_plain(&child)?;
                }
            }
        }
        self.listed
            .lock()
            .expect("listed lock")
            .insert(dir.to_string());
        Ok(())
    }

    /// Runs `op`; if it found no entry at `path`, takes `path` in and runs
    /// it once more.
    fn with_entry<T>(&self, path: &str, op: impl Fn() -> SfsResult<T>) -> SfsResult<T> {
        match op() {
            Err(e) if e.errno == Errno::ENOENT => match self.take_in(path)? {
                Some(_) => op(),
                None => Err(e),
            },
            other => other,
        }
    }
}

impl MetadataStore for BackedStore {
    fn get(&self, path: &str) -> SfsResult<Option<Metadata>> {
        match self.inner.get(path)? {
            Some(md) => Ok(Some(md)),
            None => self.take_in(path),
        }
    }

    fn parent_entry(&self, path: &str) -> SfsResult<Option<Metadata>> {
        match self.inner.parent_entry(path)? {
            Some(md) => Ok(Some(md)),
            None => Ok(self.take_in(path)?.map(Metadata::without_contents)),
        }
    }

    fn create(&self, path: &str, entry: Metadata, exclusive: bool) -> SfsResult<(Metadata, bool)> {
        // A name the backing directory has exists already (EEXIST for an
        // exclusive create, found for any other).
        self.get(path)?;
        self.inner.create(path, entry, exclusive)
    }

    fn remove(&self, path: &str, kind: RemoveKind, if_id: Option<FileId>) -> SfsResult<Metadata> {
        self.get(path)?;
        if kind == RemoveKind::Directory {
            // Its backing children held here count for emptiness.
            self.take_in_children(path)?;
        }
        let _guard = self.lock(path);
        let removed = self.inner.remove(path, kind, if_id)?;
        if self.backing_path(path).symlink_metadata().is_ok() {
            self.inner.set_whiteout(path, true)?;
        }
        Ok(removed)
    }

    fn update(&self, path: &str, update: MetaUpdate, if_id: Option<FileId>) -> SfsResult<()> {
        self.with_entry(path, || self.inner.update(path, update.clone(), if_id))
    }

    fn reserve_append(
        &self,
        path: &str,
        len: u64,
        time_ns: i64,
        if_id: Option<FileId>,
    ) -> SfsResult<u64> {
        self.with_entry(path, || {
            self.inner.reserve_append(path, len, time_ns, if_id)
        })
    }

    fn truncate(&self, path: &str, size: u64, time_ns: i64) -> SfsResult<Metadata> {
        self.with_entry(path, || self.inner.truncate(path, size, time_ns))
    }

    fn set_attr(&self, path: &str, update: MetaUpdate) -> SfsResult<Metadata> {
        self.with_entry(path, || self.inner.set_attr(path, update.clone()))
    }

    fn set_xattr(
        &self,
        path: &str,
        name: &[u8],
        value: Option<&[u8]>,
        how: XattrSet,
        time_ns: i64,
    ) -> SfsResult<Metadata> {
        self.with_entry(path, || {
            self.inner.set_xattr(path, name, value, how, time_ns)
        })
    }

    /// Hard links are not made in the view of a backing directory: a
    /// write-back or stage-out would have to make them there too.
    fn share(&self, path: &str, _id: FileId) -> SfsResult<Metadata> {
        Err(SfsError::new(
            Errno::EXDEV,
            format!("{path}: hard links are not made in cache mode (docs/staging.md)"),
        ))
    }

    fn add_links(&self, path: &str, id: FileId, delta: i32, time_ns: i64) -> SfsResult<Metadata> {
        self.inner.add_links(path, id, delta, time_ns)
    }

    fn put_entry(&self, path: &str, entry: Metadata, replace: bool) -> SfsResult<Option<Metadata>> {
        // What a rename replaces is what the view shows there.
        if let Some(old) = self.get(path)? {
            if old.is_dir() && replace {
                self.take_in_children(path)?;
            }
        }
        self.inner.put_entry(path, entry, replace)
    }

    fn children(
        &self,
        dir: &str,
        start_after: Option<&str>,
        limit: usize,
    ) -> SfsResult<Vec<(String, Metadata)>> {
        self.take_in_children(dir)?;
        self.inner.children(dir, start_after, limit)
    }

    fn has_children(&self, dir: &str) -> SfsResult<bool> {
        self.take_in_children(dir)?;
        self.inner.has_children(dir)
    }

    /// What this server holds below `dir`, without taking anything in: a
    /// directory taken from the backing directory is not renamed
    /// (`rename(2)` of one is EXDEV, docs/staging.md), and a checkpoint
    /// saves what SFS holds.
    fn subtree(
        &self,
        dir: &str,
        start_after: Option<&str>,
        limit: usize,
    ) -> SfsResult<Vec<(String, Metadata)>> {
        self.inner.subtree(dir, start_after, limit)
    }

    fn is_whiteout(&self, path: &str) -> SfsResult<bool> {
        self.inner.is_whiteout(path)
    }

    fn set_whiteout(&self, path: &str, on: bool) -> SfsResult<()> {
        self.inner.set_whiteout(path, on)
    }

    fn sync(&self) -> SfsResult<()> {
        self.inner.sync()
    }

    fn entry_count(&self) -> SfsResult<u64> {
        self.inner.entry_count()
    }
}

#[cfg(test)]
mod tests;
