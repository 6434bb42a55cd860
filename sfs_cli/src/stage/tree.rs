//! What a stage copies between: a tree of entries rooted somewhere (a local
//! directory, an SFS path, an S3 prefix), seen through one trait so that
//! the engine (`engine.rs`) moves data the same way in both directions.
//!
//! Paths inside a tree are *relative* (`a/b/c`, `/`-separated, `""` is the
//! root itself, which may be a file). Every tree can be a source (walk,
//! read) and a destination (create, write, set attributes, read back for
//! verification).

use anyhow::Result;
use std::ops::Range;

/// The kinds of entries a stage copies.
#[derive(Clone, Copy, Debug, PartialEq, Eq, serde::Serialize, serde::Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum EntryKind {
    File,
    Dir,
    Symlink,
}

/// One entry of a walked tree.
#[derive(Clone, Debug)]
pub struct Entry {
    /// Relative path (`""` for the root).
    pub rel: String,
    pub kind: EntryKind,
    /// Permission bits (`0o7777`).
    pub mode: u32,
    pub mtime_ns: i64,
    /// Bytes (files only).
    pub size: u64,
    /// Target (symlinks only).
    pub target: String,
    /// What says that a source file changed (files only): its mtime on a
    /// file system, its last-modified time in S3 (where `mtime_ns` comes
    /// from the sidecar).
    pub version: i64,
}

/// A file's size and modification time: what says "unchanged" when a
/// stage resumes or finishes reading it.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct FileState {
    pub size: u64,
    pub mtime_ns: i64,
}

/// A tree a stage reads from or writes to.
pub trait Tree: Send + Sync {
    /// `rel` as a person names it (`/data/x`, `sfs:/in/x`, `s3://b/p/x`).
    fn describe(&self, rel: &str) -> String;

    /// The kind of the root, `None` when it does not exist.
    fn root_kind(&self) -> Result<Option<EntryKind>>;

    /// Every entry at or below the root, without following symlinks;
    /// directories for which `prune` says true are neither listed nor
    /// entered. Entries that cannot be read go to `problems` (the walk
    /// goes on).
    fn walk(
        &self,
        prune: &dyn Fn(&str) -> bool,
        problems: &mut Vec<(String, String)>,
    ) -> Result<Vec<Entry>>;

    /// The entry at `rel` as [`Tree::walk`] would list it (a symlink not
    /// followed); `None` when there is none, or one of a kind a stage does
    /// not copy. What `stage-out --changed` compares a source entry with.
    fn entry(&self, rel: &str) -> Result<Option<Entry>>;

    /// Size and mtime of the file at `rel`; `None` when there is none.
    fn file_state(&self, rel: &str) -> Result<Option<FileState>>;

    /// Fills `buf` with the bytes at `offset` of the file at `rel`; bytes
    /// past its end are an error (the file shrank).
    fn read_at(&self, rel: &str, offset: u64, buf: &mut [u8]) -> Result<()>;

    /// The parts of `range` of file `rel` that may hold data; the rest
    /// reads as zeros (holes), so the reader need not fetch it. By default
    /// the whole range.
    fn data_in(&self, _rel: &str, range: Range<u64>) -> Result<Vec<Range<u64>>> {
        Ok(vec![range])
    }

    /// Creates directory `rel` (owner-writable until [`Tree::set_dir_attrs`]
    /// gives it its mode); an existing directory is fine.
    fn make_dir(&self, rel: &str) -> Result<()>;

    /// Creates symlink `rel` → `target`, replacing a file or symlink there.
    fn make_symlink(&self, rel: &str, target: &str, mtime_ns: i64) -> Result<()>;

    /// Starts writing `file` (its `rel`, size, mode and mtime) in `ranges`
    /// ranges, replacing a file or symlink there (a directory there is an
    /// error).
    fn create_file(&self, file: &Entry, ranges: usize) -> Result<Box<dyn FileSink>>;

    /// Gives directory `rel` its final mode and mtime (after its contents).
    fn set_dir_attrs(&self, rel: &str, mode: u32, mtime_ns: i64) -> Result<()>;

    /// The target of symlink `rel` (to verify it); `None` where symlinks
    /// are verified otherwise (S3: with the sidecar, at `finish`).
    fn read_link(&self, rel: &str) -> Result<Option<String>>;

    /// Called once after every entry of a stage into this tree is done
    /// with every entry of the stage (copied now or before): the S3 tree
    /// writes its sidecar of directories, symlinks, modes and mtimes.
    fn finish(&self, _entries: &[Entry]) -> Result<()> {
        Ok(())
    }

    /// Before this tree is written into the backing directory of cache
    /// mode: files of it whose unread bytes still come from a backing name
    /// other than their own (renamed in SFS) read them in and hold them, so
    /// that writing that name cannot change them. The SFS tree only, for
    /// the files its walk found; `(path, cause)` of each that failed.
    fn detach_moved(&self) -> Vec<(String, String)> {
        Vec::new()
    }
}

/// A file being written: its ranges arrive from several workers at once,
/// then [`FileSink::complete`] once.
pub trait FileSink: Send + Sync {
    /// Writes range number `index`, which starts at `offset`.
    fn write_range(&self, index: usize, offset: u64, data: &[u8]) -> Result<()>;

    /// Makes the file whole, with its mode and mtime.
    fn complete(&self) -> Result<()>;

    /// Gives up (a range failed): an S3 upload is aborted; a file already
    /// in place stays, incomplete, and is not in the journal.
    fn abort(&self) {}
}

/// True if every byte of `data` is zero (a hole to skip on the way in).
pub fn all_zero(data: &[u8]) -> bool {
    // 16 bytes at a time: this runs over every byte staged (and stops at
    // the first word of data, so real data costs next to nothing).
    let mut words = data.chunks_exact(16);
    let words_zero = words.all(|w| w.try_into().is_ok_and(|w| u128::from_ne_bytes(w) == 0));
    words_zero && words.remainder().iter().all(|&b| b == 0)
}

/// Whether `dst` already is what staging `src` would make of it, by the
/// quick check of `stage-out --changed` (rsync's, with the mode): a file
/// of the same size, permission bits and mtime, a symlink to the same
/// target with the same mtime, a directory of the same bits and mtime. No data is read: content changed with size
/// and mtime kept (or set back) is not seen.
pub fn unchanged(src: &Entry, dst: &Entry) -> bool {
    src.kind == dst.kind
        && same_mtime(src.mtime_ns, dst.mtime_ns)
        && match src.kind {
            EntryKind::File => src.size == dst.size && src.mode == dst.mode,
            EntryKind::Symlink => src.target == dst.target,
            // A directory's attributes are given again only where they
            // differ (a chmod of another user's directory would fail).
            EntryKind::Dir => src.mode == dst.mode,
        }
}

/// Whether the destination's mtime `kept` is `mtime` as the destination
/// keeps it. A stage sets the destination's mtime to the source's, to the
/// nanosecond; a file system with coarser timestamps (whole seconds on
/// some parallel file systems, microseconds on others) truncates it. Its
/// precision is read off `kept` itself, from its trailing decimal zeros:
/// `kept` must then equal `mtime` truncated to that precision. (A file
/// system that keeps nanoseconds shows whole seconds only by a 1 in 10⁹
/// chance, or for a timestamp someone set so; then a change within that
/// same second with the same size is not seen.)
fn same_mtime(mtime: i64, kept: i64) -> bool {
    let mut precision = 1i64;
    while precision < 1_000_000_000 && kept.rem_euclid(precision * 10) == 0 {
        precision *= 10;
    }
    mtime - mtime.rem_euclid(precision) == kept
}

/// `base` joined with relative `rel` by `/` (`rel` may be empty).
pub fn join_rel(base: &str, rel: &str) -> String {
    match (base.is_empty(), rel.is_empty()) {
        (_, true) => base.to_string(),
        (true, false) => rel.to_string(),
        (false, false) => format!("{}/{rel}", base.trim_end_matches('/')),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn all_zero_sees_one_set_byte_anywhere() {
        let mut data = vec![0u8; 4099];
        assert!(all_zero(&data));
        for at in [0, 1, 7, 8, 2048, 4095, 4098] {
            data[at] = 1;
            assert!(!all_zero(&data), "byte {at}");
            data[at] = 0;
        }
        assert!(all_zero(&data[3..]));
    }

    #[test]
    fn an_mtime_matches_to_the_precision_the_destination_keeps() {
        let second = 1_000_000_000i64;
        let mtime = 1_700_000_000 * second + 123_456_789;
        // Nanoseconds kept: only the same instant matches.
        assert!(same_mtime(mtime, mtime));
        assert!(!same_mtime(mtime, mtime + 1));
        assert!(!same_mtime(mtime, mtime - 10));
        assert!(!same_mtime(mtime, mtime + 11));
        // Whole seconds, microseconds, 100 ns (NTFS/CIFS): truncated.
        assert!(same_mtime(mtime, 1_700_000_000 * second));
        assert!(same_mtime(mtime, mtime - 789));
        assert!(same_mtime(mtime, mtime - 89));
        // Another second, or another microsecond, is a change.
        assert!(!same_mtime(mtime, 1_700_000_001 * second));
        assert!(!same_mtime(mtime, 1_699_999_999 * second));
        assert!(!same_mtime(mtime, mtime - 789 + 1000));
        // Before 1970 too (floor, as the kernel truncates).
        let early = -5 * second + 250;
        assert!(same_mtime(early, -5 * second));
        assert!(!same_mtime(early, -4 * second));
    }

    #[test]
    fn unchanged_compares_size_mode_mtime_and_link_target() {
        let file = Entry {
            rel: "a".into(),
            kind: EntryKind::File,
            mode: 0o644,
            mtime_ns: 1_000_000_007,
            size: 10,
            target: String::new(),
            version: 1_000_000_007,
        };
        assert!(unchanged(&file, &file.clone()));
        let differs = |change: fn(&mut Entry)| {
            let mut other = file.clone();
            change(&mut other);
            !unchanged(&file, &other)
        };
        assert!(differs(|e| e.size = 11));
        assert!(differs(|e| e.mode = 0o600));
        assert!(differs(|e| e.mtime_ns += 1));
        assert!(differs(|e| e.kind = EntryKind::Symlink));
        let link = Entry {
            kind: EntryKind::Symlink,
            target: "x".into(),
            size: 0,
            ..file.clone()
        };
        assert!(unchanged(
            &link,
            &Entry {
                mode: 0o777,
                ..link.clone()
            }
        ));
        assert!(!unchanged(
            &link,
            &Entry {
                target: "y".into(),
                ..link.clone()
            }
        ));
        let dir = Entry {
            kind: EntryKind::Dir,
            ..file.clone()
        };
        assert!(unchanged(&dir, &dir.clone()));
        assert!(!unchanged(
            &dir,
            &Entry {
                mode: 0o700,
                ..dir.clone()
            }
        ));
    }

    #[test]
    fn join_rel_keeps_one_separator() {
        assert_eq!(join_rel("/a/", "b"), "/a/b");
        assert_eq!(join_rel("/a", ""), "/a");
        assert_eq!(join_rel("", "b/c"), "b/c");
        assert_eq!(join_rel("/", "b"), "/b");
    }
}
