//! Trees on a local file system as the stage tests compare them: every
//! entry with what a stage must keep (content hash, mode, mtime, link
//! target), and the helpers that set and measure those.

use sfs_global::path::{escape_bytes, unescape};
use std::collections::BTreeMap;
use std::ffi::OsStr;
use std::os::unix::ffi::OsStrExt;
use std::os::unix::fs::{MetadataExt, PermissionsExt};
use std::path::Path;

/// What a tree entry must keep through a stage.
#[derive(Debug, PartialEq, Eq)]
pub enum Node {
    File {
        mode: u32,
        mtime_ns: i64,
        size: u64,
        xxh3: u128,
    },
    Dir {
        mode: u32,
        mtime_ns: i64,
    },
    Link {
        target: String,
        mtime_ns: i64,
    },
}

pub fn mtime_ns(md: &std::fs::Metadata) -> i64 {
    md.mtime() * 1_000_000_000 + md.mtime_nsec()
}

/// Every entry under `root` (relative paths; `""` is the root). Names and
/// targets that are not UTF-8 are kept as SFS carries them
/// (`sfs_global::path::escape_bytes`), so one tree compares with another
/// and with what SFS holds.
pub fn snapshot(root: &Path) -> BTreeMap<String, Node> {
    let mut nodes = BTreeMap::new();
    let mut pending = vec![String::new()];
    while let Some(rel) = pending.pop() {
        let path = if rel.is_empty() {
            root.to_path_buf()
        } else {
            root.join(OsStr::from_bytes(&unescape(&rel)))
        };
        let md = std::fs::symlink_metadata(&path).unwrap();
        let mode = md.permissions().mode() & 0o7777;
        let node = if md.file_type().is_symlink() {
            Node::Link {
                target: escape_bytes(std::fs::read_link(&path).unwrap().as_os_str().as_bytes())
                    .into_owned(),
                mtime_ns: mtime_ns(&md),
            }
        } else if md.is_dir() {
            for child in std::fs::read_dir(&path).unwrap() {
                let name = escape_bytes(child.unwrap().file_name().as_bytes()).into_owned();
                pending.push(if rel.is_empty() {
                    name
                } else {
                    format!("{rel}/{name}")
                });
            }
            Node::Dir {
                mode,
                mtime_ns: mtime_ns(&md),
            }
        } else {
            Node::File {
                mode,
                mtime_ns: mtime_ns(&md),
                size: md.len(),
                xxh3: xxhash_rust::xxh3::xxh3_128(&std::fs::read(&path).unwrap()),
            }
        };
        nodes.insert(rel, node);
    }
    nodes
}

/// Asserts that two snapshots are equal, naming the first difference.
pub fn assert_same(expected: &BTreeMap<String, Node>, got: &BTreeMap<String, Node>) {
    for (rel, node) in expected {
        assert_eq!(Some(node), got.get(rel), "entry {rel:?}");
    }
    for rel in got.keys() {
        assert!(expected.contains_key(rel), "extra entry {rel:?}");
    }
}

pub fn set_mtime(path: &Path, secs: i64, nanos: i64) {
    let times = rustix::fs::Timestamps {
        last_access: rustix::fs::Timespec {
            tv_sec: secs,
            tv_nsec: 0,
        },
        last_modification: rustix::fs::Timespec {
            tv_sec: secs,
            tv_nsec: nanos,
        },
    };
    rustix::fs::utimensat(
        rustix::fs::CWD,
        path,
        &times,
        rustix::fs::AtFlags::SYMLINK_NOFOLLOW,
    )
    .unwrap();
}

/// Blocks the file system holds for `path` (less than its size: sparse).
pub fn allocated(path: &Path) -> u64 {
    std::fs::metadata(path).unwrap().blocks() * 512
}
