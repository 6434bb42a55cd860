//! The metadata store of one server: the entries whose paths hash to it.
//!
//! The services talk to a [`MetadataStore`] trait rather than to RocksDB so
//! that the POSIX rules live in one readable place and the engine can be
//! swapped or faked (the TiKV `engine_traits` shape). The one engine today is
//! [`crate::meta_rocks::RocksMetadataStore`].
//!
//! Every method takes a *normalised* path (the services validate input before
//! calling) and reports failures as [`SfsError`]s with the errno the
//! application must see.

use sfs_global::metadata::{MetaUpdate, XattrSet};
use sfs_global::{FileId, Metadata, SfsResult};

/// Which kinds of entry a remove accepts (unlink vs rmdir).
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum RemoveKind {
    /// unlink(2): anything but a directory; EISDIR for a directory.
    NotDirectory,
    /// rmdir(2): only a directory; ENOTDIR for anything else.
    Directory,
}

/// Storage of metadata entries keyed by normalised path.
///
/// Methods are blocking (they may touch the disk): async callers run them on
/// a blocking thread.
pub trait MetadataStore: Send + Sync + 'static {
    /// The entry at `path`, if any.
    fn get(&self, path: &str) -> SfsResult<Option<Metadata>>;

    /// The entry at `path` as a permission check of an entry in it reads
    /// it (its kind, mode, owner and group): without its extended
    /// attributes, link target and source. A store may answer from a cache
    /// that its own writes keep exact; the default reads the entry.
    fn parent_entry(&self, path: &str) -> SfsResult<Option<Metadata>> {
        Ok(self.get(path)?.map(Metadata::without_contents))
    }

    /// Creates `path` with `entry` unless it exists. Returns the entry now at
    /// `path` and whether this call created it. With `exclusive` (O_EXCL) an
    /// existing entry is EEXIST. Atomic per path.
    fn create(&self, path: &str, entry: Metadata, exclusive: bool) -> SfsResult<(Metadata, bool)>;

    /// Removes `path` and returns the removed entry. ENOENT if absent (or if
    /// `if_id` is given and the entry has another id), EISDIR/ENOTDIR when the
    /// kind does not match, ENOTEMPTY when a directory has children here,
    /// EBUSY for the root.
    fn remove(&self, path: &str, kind: RemoveKind, if_id: Option<FileId>) -> SfsResult<Metadata>;

    /// Merges `update` into the existing entry without reading it back
    /// (ENOENT if absent). Concurrent updates never lose each other.
    /// With `if_id`, ESTALE unless the entry is that file. This, like
    /// every call below that changes an entry's attributes, answers
    /// EREMCHG for the name of a hard-linked file (they are changed at its
    /// shared entry).
    fn update(&self, path: &str, update: MetaUpdate, if_id: Option<FileId>) -> SfsResult<()>;

    /// Atomically reserves `len` bytes at the end of a file (O_APPEND): grows
    /// the size by `len` and returns the old size, the offset to write at.
    /// With `if_id`, ESTALE unless the entry is that file.
    fn reserve_append(
        &self,
        path: &str,
        len: u64,
        time_ns: i64,
        if_id: Option<FileId>,
    ) -> SfsResult<u64>;

    /// Sets the size of a file to exactly `size`; EISDIR on a directory.
    fn truncate(&self, path: &str, size: u64, time_ns: i64) -> SfsResult<Metadata>;

    /// Hard links (`sfs_global::metadata::SHARED_PREFIX`): turns the entry
    /// of the non-directory `path`, if it is still file `id`, into a name of
    /// a shared file and returns the entry it was (a name entry when it
    /// already was one). EPERM for a directory, ENOENT when `path` names
    /// another file or nothing.
    fn share(&self, path: &str, id: FileId) -> SfsResult<Metadata>;

    /// Adds `delta` (may be negative) to the link count of the shared entry
    /// at `path`, which must be file `id`, sets its ctime, and removes it when
    /// the count reaches 0. Returns the entry with its new count. EMLINK past
    /// `LINK_MAX`.
    fn add_links(&self, path: &str, id: FileId, delta: i32, time_ns: i64) -> SfsResult<Metadata>;

    /// Applies a [`MetaUpdate::SetAttr`] and returns the resulting entry.
    fn set_attr(&self, path: &str, update: MetaUpdate) -> SfsResult<Metadata>;

    /// setxattr(2) (`value` given) or removexattr(2) of extended attribute
    /// `name` (validated by the caller) of the entry at `path`, setting its
    /// ctime; returns the entry. EEXIST/ENODATA as `how` and removal of a
    /// missing name ask; ENOSPC when the entry's attributes would pass
    /// `XATTRS_MAX_TOTAL`.
    fn set_xattr(
        &self,
        path: &str,
        name: &[u8],
        value: Option<&[u8]>,
        how: XattrSet,
        time_ns: i64,
    ) -> SfsResult<Metadata>;

    /// Places `entry` at `path` (the target half of a rename) following
    /// rename(2)'s rules, and returns the entry it replaced.
    fn put_entry(&self, path: &str, entry: Metadata, replace: bool) -> SfsResult<Option<Metadata>>;

    /// Up to `limit` direct children of `dir` held here, in name order,
    /// starting after the name `start_after`.
    fn children(
        &self,
        dir: &str,
        start_after: Option<&str>,
        limit: usize,
    ) -> SfsResult<Vec<(String, Metadata)>>;

    /// Whether this store holds any direct child of `dir`.
    fn has_children(&self, dir: &str) -> SfsResult<bool>;

    /// Up to `limit` entries anywhere below `dir` (not `dir` itself) held
    /// here, in key order, starting after the entry at path `start_after`.
    fn subtree(
        &self,
        dir: &str,
        start_after: Option<&str>,
        limit: usize,
    ) -> SfsResult<Vec<(String, Metadata)>>;

    /// Cache mode: whether `path` is marked as removed from the backing
    /// directory's view (a whiteout: the backing entry of that name stays
    /// hidden). Whiteouts are kept apart from entries: no listing, scan or
    /// count of entries sees them.
    fn is_whiteout(&self, path: &str) -> SfsResult<bool>;

    /// Sets (`on`) or clears the whiteout of `path`.
    fn set_whiteout(&self, path: &str, on: bool) -> SfsResult<()>;

    /// Makes every acknowledged change durable.
    fn sync(&self) -> SfsResult<()>;

    /// Approximate number of entries held.
    fn entry_count(&self) -> SfsResult<u64>;
}

/// Now, in nanoseconds since the Unix epoch (the unit of entry times).
pub fn now_ns() -> i64 {
    match std::time::SystemTime::now().duration_since(std::time::UNIX_EPOCH) {
        Ok(d) => i64::try_from(d.as_nanos()).unwrap_or(i64::MAX),
        Err(_) => 0,
    }
}
