//! [`MetadataStore`] on RocksDB: the one storage engine of SFS metadata.
//!
//! Keys are [`entry_key`]s (`parent \0 name`), so the children of a directory
//! are one contiguous key range and a listing is a prefix scan. Values are
//! [`Metadata::encode`]d entries. Size and attribute changes are RocksDB
//! *merges* folded by [`apply_updates`]: N writers of one file each merge
//! "size is at least my end" with no lock and no read-modify-write. A merge
//! that lands after a remove folds into the empty value, a tombstone that
//! every reader treats as "no entry", so a late size update cannot resurrect
//! a removed file.
//!
//! Operations that must check and then write atomically (O_EXCL create,
//! remove, rename's put, append reservation) hold one of [`LOCK_STRIPES`]
//! in-process mutexes chosen by the key's hash: the store is owned by exactly
//! one server process (the run-directory lock guarantees it), so an
//! in-process lock is a per-path lock.
//!
//! Writes go to the WAL without syncing it; [`MetadataStore::sync`] syncs it
//! when a client asks for durability (fsync).

use crate::meta_store::{MetadataStore, RemoveKind};
use rocksdb::{Direction, IteratorMode, MergeOperands, Options, ReadOptions, DB};
use sfs_global::chunk::MAX_FILE_SIZE;
use sfs_global::metadata::{
    apply_updates, children_prefix, combine_updates, deep_descendants_prefix, entry_key,
    MetaUpdate, XattrSet, LINK_MAX, XATTRS_MAX_TOTAL,
};
use sfs_global::{Errno, FileId, Metadata, SfsError, SfsResult};
use std::path::Path;
use std::sync::{Mutex, MutexGuard};
use xxhash_rust::xxh3::xxh3_64;

/// Number of striped per-path locks; enough that unrelated paths rarely wait.
pub const LOCK_STRIPES: usize = 1024;

/// Name under which the merge operator is registered; RocksDB refuses to open
/// a database written with a differently named operator, which is what we
/// want if the update encoding ever changes incompatibly.
const MERGE_OPERATOR_NAME: &str = "sfs_metadata_update_v1";

/// The RocksDB-backed metadata store of one server.
pub struct RocksMetadataStore {
    db: DB,
    stripes: Box<[Mutex<()>]>,
    /// Directory entries permission checks read ([`parents`]); every
    /// write of an entry key below goes through [`Self::put`],
    /// [`Self::merge`] or [`Self::delete`], which drop its copy.
    parents: parents::ParentCache,
}

fn db_error(what: &str, e: rocksdb::Error) -> SfsError {
    SfsError::io(format!("metadata store: {what}: {e}"))
}

/// The full merge: fold operands into the stored entry (or into nothing).
fn full_merge(_key: &[u8], existing: Option<&[u8]>, operands: &MergeOperands) -> Option<Vec<u8>> {
    Some(apply_updates(existing, operands))
}

/// The partial merge: combine runs of size growths; anything else is kept
/// for the full merge (returning `None` tells RocksDB "cannot combine").
fn partial_merge(
    _key: &[u8],
    _existing: Option<&[u8]>,
    operands: &MergeOperands,
) -> Option<Vec<u8>> {
    combine_updates(operands)
}

/// The smallest key greater than every key starting with `prefix`, or `None`
/// when no such key exists (the prefix is all 0xff).
fn prefix_end(prefix: &[u8]) -> Option<Vec<u8>> {
    let mut end = prefix.to_vec();
    while let Some(last) = end.pop() {
        if last < u8::MAX {
            end.push(last + 1);
            return Some(end);
        }
    }
    None
}

impl RocksMetadataStore {
    /// Opens (creating if needed) the database in `dir`.
    pub fn open(dir: &Path) -> SfsResult<Self> {
        std::fs::create_dir_all(dir).map_err(|e| {
            SfsError::new(
                SfsError::from(e).errno,
                format!("cannot create metadata directory {}", dir.display()),
            )
        })?;
        let mut opts = Options::default();
        opts.create_if_missing(true);
        opts.set_merge_operator(MERGE_OPERATOR_NAME, full_merge, partial_merge);
        // Fold size updates into one value as they arrive instead of keeping
        // every operand until a flush: a shared file written in small pieces
        // would otherwise make each read of its entry merge thousands.
        opts.set_max_successive_merges(64);
        let db = DB::open(&opts, dir).map_err(|e| {
            SfsError::io(format!(
                "cannot open metadata database {}: {e}",
                dir.display()
            ))
        })?;
        let stripes = (0..LOCK_STRIPES).map(|_| Mutex::new(())).collect();
        Ok(RocksMetadataStore {
            db,
            stripes,
            parents: parents::ParentCache::new(),
        })
    }

    /// Locks the stripe of `key`. The guarded data is `()`, so a poisoned
    /// lock (a panic elsewhere) carries no broken state and is taken anyway.
    fn lock(&self, key: &[u8]) -> MutexGuard<'_, ()> {
        let stripe = (xxh3_64(key) % LOCK_STRIPES as u64) as usize;
        self.stripes[stripe]
            .lock()
            .unwrap_or_else(|poisoned| poisoned.into_inner())
    }

    fn get_key(&self, key: &[u8], path: &str) -> SfsResult<Option<Metadata>> {
        match self.db.get_pinned(key).map_err(|e| db_error(path, e))? {
            Some(v) if !v.is_empty() => Metadata::decode(&v)
                .map(Some)
                .map_err(|e| SfsError::io(format!("{path}: {}", e.message))),
            _ => Ok(None),
        }
    }

    fn existing(&self, key: &[u8], path: &str) -> SfsResult<Metadata> {
        self.get_key(key, path)?
            .ok_or_else(|| SfsError::not_found(path))
    }

    /// The entry at `key`; with `if_id`, ESTALE unless it is that file.
    fn existing_as(&self, key: &[u8], path: &str, if_id: Option<FileId>) -> SfsResult<Metadata> {
        let md = self.existing(key, path)?;
        match if_id {
            Some(id) if md.id != id => Err(stale(path, id)),
            _ => Ok(md),
        }
    }

    /// [`RocksMetadataStore::existing_as`] of an entry whose attributes are
    /// about to change: EREMCHG for the name of a hard-linked file.
    fn changing(&self, key: &[u8], path: &str, if_id: Option<FileId>) -> SfsResult<Metadata> {
        let md = self.existing_as(key, path, if_id)?;
        if md.is_name_of_shared() {
            return Err(shared_elsewhere(path, md.id));
        }
        Ok(md)
    }

    fn put(&self, key: &[u8], entry: &Metadata, path: &str) -> SfsResult<()> {
        let written = self.db.put(key, entry.encode());
        self.parents.forget(key);
        written.map_err(|e| db_error(path, e))
    }

    fn merge(&self, key: &[u8], update: &MetaUpdate, path: &str) -> SfsResult<()> {
        let written = self.db.merge(key, update.encode());
        self.parents.forget(key);
        written.map_err(|e| db_error(path, e))
    }

    fn delete(&self, key: &[u8], path: &str) -> SfsResult<()> {
        let written = self.db.delete(key);
        self.parents.forget(key);
        written.map_err(|e| db_error(path, e))
    }

    /// Appends to `out` the live entries whose keys start with `prefix`,
    /// after key `start_after`, until `out` holds `limit` entries.
    fn scan(
        &self,
        prefix: &[u8],
        start_after: Option<&[u8]>,
        limit: usize,
        out: &mut Vec<(Vec<u8>, Metadata)>,
    ) -> SfsResult<()> {
        if out.len() >= limit {
            return Ok(());
        }
        let mut opts = ReadOptions::default();
        if let Some(end) = prefix_end(prefix) {
            opts.set_iterate_upper_bound(end);
        }
        let start = match start_after {
            Some(after) if after >= prefix => after,
            _ => prefix,
        };
        for item in self
            .db
            .iterator_opt(IteratorMode::From(start, Direction::Forward), opts)
        {
            let (key, value) = item.map_err(|e| db_error("listing", e))?;
            if !key.starts_with(prefix) {
                break;
            }
            if Some(&*key) == start_after || value.is_empty() {
                continue;
            }
            match Metadata::decode(&value) {
                Ok(md) => out.push((key.into_vec(), md)),
                Err(e) => {
                    tracing::warn!(key = ?String::from_utf8_lossy(&key), "skipping entry: {e}")
                }
            }
            if out.len() >= limit {
                break;
            }
        }
        Ok(())
    }
}

impl MetadataStore for RocksMetadataStore {
    fn get(&self, path: &str) -> SfsResult<Option<Metadata>> {
        self.get_key(&entry_key(path), path)
    }

    fn parent_entry(&self, path: &str) -> SfsResult<Option<Metadata>> {
        let key = entry_key(path);
        let miss = match self.parents.lookup(&key) {
            Ok(kept) => return Ok(Some(kept)),
            Err(miss) => miss,
        };
        let found = self.get_key(&key, path)?.map(Metadata::without_contents);
        if let Some(md) = found.as_ref().filter(|md| md.is_dir()) {
            self.parents.keep(&key, miss, md);
        }
        Ok(found)
    }

    fn create(&self, path: &str, entry: Metadata, exclusive: bool) -> SfsResult<(Metadata, bool)> {
        let key = entry_key(path);
        let _guard = self.lock(&key);
        match self.get_key(&key, path)? {
            Some(_) if exclusive => Err(SfsError::exists(path)),
            Some(old) => Ok((old, false)),
            None => {
                self.put(&key, &entry, path)?;
                Ok((entry, true))
            }
        }
    }

    fn remove(&self, path: &str, kind: RemoveKind, if_id: Option<FileId>) -> SfsResult<Metadata> {
        if path == "/" {
            return Err(SfsError::new(
                Errno::EBUSY,
                "/: the root of the file system cannot be removed",
            ));
        }
        let key = entry_key(path);
        let _guard = self.lock(&key);
        let old = self.existing(&key, path)?;
        if let Some(id) = if_id {
            if old.id != id {
                return Err(SfsError::new(
                    Errno::ENOENT,
                    format!("{path}: entry was replaced (id {} is no longer there)", id),
                ));
            }
        }
        match kind {
            RemoveKind::NotDirectory if old.is_dir() => return Err(SfsError::is_dir(path)),
            RemoveKind::Directory if !old.is_dir() => return Err(SfsError::not_dir(path)),
            RemoveKind::Directory if self.has_children(path)? => {
                return Err(SfsError::not_empty(path))
            }
            _ => {}
        }
        self.delete(&key, path)?;
        Ok(old)
    }

    fn update(&self, path: &str, update: MetaUpdate, if_id: Option<FileId>) -> SfsResult<()> {
        let key = entry_key(path);
        // An id check must hold until the merge lands: under the entry's lock,
        // so no remove + re-create can slip between. Without one, a cheap
        // existence check reports ENOENT for a stray update, and no lock is
        // taken (concurrent writers of one file never wait on each other); a
        // remove that wins the race after it turns the merge into a tombstone.
        let guard = if_id.map(|_| self.lock(&key));
        let md = self.changing(&key, path, if_id)?;
        if md.is_dir() {
            // A directory's times (sfs_client::dir_times): written whole
            // under the entry's lock, so that no merge operands pile up on
            // an entry that every create in the directory reads.
            let _guard = guard.unwrap_or_else(|| self.lock(&key));
            let mut md = self.changing(&key, path, if_id)?;
            update.apply(&mut md);
            return self.put(&key, &md, path);
        }
        self.merge(&key, &update, path)
    }

    fn reserve_append(
        &self,
        path: &str,
        len: u64,
        time_ns: i64,
        if_id: Option<FileId>,
    ) -> SfsResult<u64> {
        let key = entry_key(path);
        let _guard = self.lock(&key);
        let md = self.changing(&key, path, if_id)?;
        if md.is_dir() {
            return Err(SfsError::is_dir(path));
        }
        let end = md
            .size
            .checked_add(len)
            .filter(|&end| end <= MAX_FILE_SIZE)
            .ok_or_else(|| {
                SfsError::new(
                    Errno::EFBIG,
                    format!("{path}: appending {len} bytes exceeds the largest file size"),
                )
            })?;
        self.merge(&key, &MetaUpdate::GrowSize { end, time_ns }, path)?;
        Ok(md.size)
    }

    fn truncate(&self, path: &str, size: u64, time_ns: i64) -> SfsResult<Metadata> {
        let key = entry_key(path);
        let _guard = self.lock(&key);
        let md = self.changing(&key, path, None)?;
        if md.is_dir() {
            return Err(SfsError::is_dir(path));
        }
        if md.kind() != sfs_global::FileKind::File {
            return Err(SfsError::invalid(format!("{path}: not a regular file")));
        }
        self.merge(&key, &MetaUpdate::SetSize { size, time_ns }, path)?;
        self.existing(&key, path)
    }

    fn set_attr(&self, path: &str, update: MetaUpdate) -> SfsResult<Metadata> {
        if !matches!(update, MetaUpdate::SetAttr { .. }) {
            return Err(SfsError::invalid(format!(
                "{path}: set_attr needs an attribute update"
            )));
        }
        let key = entry_key(path);
        let _guard = self.lock(&key);
        self.changing(&key, path, None)?;
        self.merge(&key, &update, path)?;
        self.existing(&key, path)
    }

    fn set_xattr(
        &self,
        path: &str,
        name: &[u8],
        value: Option<&[u8]>,
        how: XattrSet,
        time_ns: i64,
    ) -> SfsResult<Metadata> {
        let key = entry_key(path);
        let _guard = self.lock(&key);
        let md = self.changing(&key, path, None)?;
        let shown = String::from_utf8_lossy(name);
        let old = md.xattr(name);
        match (old, value, how) {
            (Some(_), Some(_), XattrSet::Create) => {
                return Err(SfsError::new(
                    Errno::EEXIST,
                    format!("{path}: extended attribute {shown} exists"),
                ))
            }
            (None, None, _) | (None, _, XattrSet::Replace) => {
                return Err(SfsError::new(
                    Errno::ENODATA,
                    format!("{path}: no extended attribute {shown}"),
                ))
            }
            _ => {}
        }
        if let Some(value) = value {
            let now = md.xattrs_size() - old.map_or(0, |v| name.len() + v.len());
            if now + name.len() + value.len() > XATTRS_MAX_TOTAL {
                return Err(SfsError::new(
                    Errno::ENOSPC,
                    format!("{path}: extended attributes would pass {XATTRS_MAX_TOTAL} bytes"),
                ));
            }
        }
        // A merge (not a put): size updates merged meanwhile without the
        // lock are kept.
        let update = MetaUpdate::SetXattr {
            name: name.to_vec(),
            value: value.map(<[u8]>::to_vec),
            ctime_ns: time_ns,
        };
        self.merge(&key, &update, path)?;
        self.existing(&key, path)
    }

    fn share(&self, path: &str, id: FileId) -> SfsResult<Metadata> {
        let key = entry_key(path);
        let _guard = self.lock(&key);
        let md = self
            .get_key(&key, path)?
            .filter(|md| md.id == id)
            .ok_or_else(|| {
                SfsError::new(Errno::ENOENT, format!("{path}: no longer names file {id}"))
            })?;
        if md.is_dir() {
            return Err(SfsError::new(
                Errno::EPERM,
                format!("{path}: a directory cannot have hard links"),
            ));
        }
        if !md.is_name_of_shared() {
            self.put(&key, &md.as_name_of_shared(), path)?;
        }
        Ok(md)
    }

    fn add_links(&self, path: &str, id: FileId, delta: i32, time_ns: i64) -> SfsResult<Metadata> {
        let key = entry_key(path);
        let _guard = self.lock(&key);
        let mut md = self.changing(&key, path, Some(id))?;
        if md.is_dir() {
            return Err(SfsError::is_dir(path));
        }
        let count = i64::from(md.nlink) + i64::from(delta);
        if count > i64::from(LINK_MAX) {
            return Err(SfsError::new(
                Errno::EMLINK,
                format!("{path}: the file has {} names already", md.nlink),
            ));
        }
        md.nlink = u32::try_from(count.max(0)).unwrap_or(0);
        md.ctime_ns = md.ctime_ns.max(time_ns);
        if md.nlink == 0 {
            self.delete(&key, path)?;
        } else {
            self.put(&key, &md, path)?;
        }
        Ok(md)
    }

    fn put_entry(&self, path: &str, entry: Metadata, replace: bool) -> SfsResult<Option<Metadata>> {
        if path == "/" {
            return Err(SfsError::new(
                Errno::EBUSY,
                "/: the root of the file system cannot be replaced",
            ));
        }
        let key = entry_key(path);
        let _guard = self.lock(&key);
        let old = self.get_key(&key, path)?;
        if let Some(old) = &old {
            if !replace {
                return Err(SfsError::exists(path));
            }
            match (old.is_dir(), entry.is_dir()) {
                (true, false) => return Err(SfsError::is_dir(path)),
                (false, true) => return Err(SfsError::not_dir(path)),
                (true, true) if self.has_children(path)? => return Err(SfsError::not_empty(path)),
                _ => {}
            }
        }
        self.put(&key, &entry, path)?;
        Ok(old)
    }

    fn children(
        &self,
        dir: &str,
        start_after: Option<&str>,
        limit: usize,
    ) -> SfsResult<Vec<(String, Metadata)>> {
        let prefix = children_prefix(dir);
        let after = start_after.map(|name| [prefix.as_slice(), name.as_bytes()].concat());
        let mut found = Vec::new();
        self.scan(&prefix, after.as_deref(), limit, &mut found)?;
        Ok(found
            .into_iter()
            .filter_map(|(key, md)| {
                let name = std::str::from_utf8(&key[prefix.len()..]).ok()?;
                Some((name.to_string(), md))
            })
            .collect())
    }

    fn has_children(&self, dir: &str) -> SfsResult<bool> {
        let mut found = Vec::new();
        self.scan(&children_prefix(dir), None, 1, &mut found)?;
        Ok(!found.is_empty())
    }

    fn subtree(
        &self,
        dir: &str,
        start_after: Option<&str>,
        limit: usize,
    ) -> SfsResult<Vec<(String, Metadata)>> {
        // Below the root every key but the root's own starts with `/`; below
        // any other directory, direct children (`dir\0`) sort before deeper
        // entries (`dir/`), so the two ranges are scanned in that order.
        let ranges = if dir == "/" {
            vec![deep_descendants_prefix(dir)]
        } else {
            vec![children_prefix(dir), deep_descendants_prefix(dir)]
        };
        let after = start_after.map(entry_key);
        let mut found = Vec::new();
        for prefix in &ranges {
            self.scan(prefix, after.as_deref(), limit, &mut found)?;
        }
        Ok(found
            .into_iter()
            .filter_map(|(key, md)| Some((sfs_global::metadata::path_of_key(&key)?, md)))
            .collect())
    }

    fn is_whiteout(&self, path: &str) -> SfsResult<bool> {
        let found = self
            .db
            .get_pinned(whiteout_key(path))
            .map_err(|e| db_error(path, e))?;
        Ok(found.is_some())
    }

    fn set_whiteout(&self, path: &str, on: bool) -> SfsResult<()> {
        let key = whiteout_key(path);
        if on {
            self.db.put(key, [])
        } else {
            self.db.delete(key)
        }
        .map_err(|e| db_error(path, e))
    }

    fn sync(&self) -> SfsResult<()> {
        self.db
            .flush_wal(true)
            .map_err(|e| db_error("syncing the write-ahead log", e))
    }

    fn entry_count(&self) -> SfsResult<u64> {
        self.db
            .property_int_value("rocksdb.estimate-num-keys")
            .map(|n| n.unwrap_or(0))
            .map_err(|e| db_error("counting entries", e))
    }
}

mod parents;
#[cfg(test)]
mod tests;

/// Key of the whiteout of `path`: byte 1 and the path. Entry keys start
/// with `/` (or are the root's `[0]`), so no entry scan meets one.
fn whiteout_key(path: &str) -> Vec<u8> {
    let mut key = Vec::with_capacity(path.len() + 1);
    key.push(1);
    key.extend_from_slice(path.as_bytes());
    key
}

/// The error for an open file whose path now names another file.
/// The answer to a change of `path`, a name of the hard-linked file `id`:
/// the client makes it at the file's shared entry.
pub(crate) fn shared_elsewhere(path: &str, id: FileId) -> SfsError {
    SfsError::new(
        Errno::EREMCHG,
        format!(
            "{path}: a name of a hard-linked file; its attributes are at {}",
            sfs_global::metadata::shared_path(id)
        ),
    )
}

pub(crate) fn stale(path: &str, id: FileId) -> SfsError {
    SfsError::new(
        Errno::ESTALE,
        format!("{path}: the open file (id {id}) was renamed away or replaced"),
    )
}
