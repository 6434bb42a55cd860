//! A tree on a local or parallel file system (anything the kernel mounts):
//! read with `pread` and `SEEK_DATA`/`SEEK_HOLE` (holes are not read and
//! stay holes), written with `pwrite`, leaving blocks of zeros unwritten so
//! that a sparse file arrives sparse.

use super::tree::{all_zero, EntryKind, FileSink, FileState, Tree};
use super::tree::{join_rel, Entry};
use anyhow::{bail, Context, Result};
use rustix::fs::{AtFlags, SeekFrom, Timespec, Timestamps, CWD, UTIME_OMIT};
use sfs_global::path::{escape_bytes, unescape};
use std::ffi::OsStr;
use std::fs::{File, OpenOptions};
use std::ops::Range;
use std::os::unix::ffi::OsStrExt;
use std::os::unix::fs::{FileExt, MetadataExt, OpenOptionsExt, PermissionsExt};
use std::path::{Path, PathBuf};

/// The unit in which zeros become holes: the page and block size of the
/// usual Linux file systems (a hole is never smaller).
const HOLE_GRANULE: usize = 4096;

/// A tree rooted at a local path.
pub struct LocalTree {
    base: PathBuf,
}

impl LocalTree {
    pub fn new(base: PathBuf) -> LocalTree {
        LocalTree { base }
    }

    /// The local path of `rel`: its name bytes are the ones SFS carries
    /// escaped when they are not UTF-8 (`sfs_global::path::escape_bytes`).
    fn path(&self, rel: &str) -> PathBuf {
        if rel.is_empty() {
            self.base.clone()
        } else {
            self.base.join(OsStr::from_bytes(&unescape(rel)))
        }
    }
}

fn kind_of(md: &std::fs::Metadata) -> Option<EntryKind> {
    let t = md.file_type();
    if t.is_file() {
        Some(EntryKind::File)
    } else if t.is_dir() {
        Some(EntryKind::Dir)
    } else if t.is_symlink() {
        Some(EntryKind::Symlink)
    } else {
        None
    }
}

fn mtime_ns(md: &std::fs::Metadata) -> i64 {
    md.mtime() * 1_000_000_000 + md.mtime_nsec()
}

/// The entry at `path` (named `rel` in its tree), a symlink not followed;
/// `None` for a kind a stage does not copy (FIFO, socket, device).
fn entry_at(path: &Path, rel: &str) -> std::io::Result<Option<Entry>> {
    let md = std::fs::symlink_metadata(path)?;
    let Some(kind) = kind_of(&md) else {
        return Ok(None);
    };
    let target = match kind {
        EntryKind::Symlink => {
            escape_bytes(std::fs::read_link(path)?.as_os_str().as_bytes()).into_owned()
        }
        _ => String::new(),
    };
    Ok(Some(Entry {
        rel: rel.to_string(),
        kind,
        mode: md.permissions().mode() & 0o7777,
        mtime_ns: mtime_ns(&md),
        size: if kind == EntryKind::File { md.len() } else { 0 },
        target,
        version: mtime_ns(&md),
    }))
}

/// Sets the mtime of `path` itself (not a symlink's target); atime stays.
fn set_mtime(path: &Path, mtime_ns: i64) -> Result<()> {
    let times = Timestamps {
        last_access: Timespec {
            tv_sec: 0,
            tv_nsec: UTIME_OMIT,
        },
        last_modification: Timespec {
            tv_sec: mtime_ns.div_euclid(1_000_000_000),
            tv_nsec: mtime_ns.rem_euclid(1_000_000_000),
        },
    };
    rustix::fs::utimensat(CWD, path, &times, AtFlags::SYMLINK_NOFOLLOW)
        .with_context(|| format!("setting the mtime of {}", path.display()))
}

/// Removes a file or symlink at `path` so that something else can take
/// its place; a directory there is an error naming the conflict.
fn clear_for(path: &Path, what: &str) -> Result<()> {
    match std::fs::symlink_metadata(path) {
        Ok(md) if md.is_dir() => {
            bail!(
                "{}: is a directory in the destination, the source has a {what} there",
                path.display()
            )
        }
        Ok(md) if md.file_type().is_symlink() || what != "file" => {
            std::fs::remove_file(path).with_context(|| format!("replacing {}", path.display()))
        }
        _ => Ok(()),
    }
}

impl Tree for LocalTree {
    fn describe(&self, rel: &str) -> String {
        self.path(rel).display().to_string()
    }

    fn root_kind(&self) -> Result<Option<EntryKind>> {
        match std::fs::symlink_metadata(&self.base) {
            Ok(md) => Ok(kind_of(&md)),
            Err(e) if e.kind() == std::io::ErrorKind::NotFound => Ok(None),
            Err(e) => Err(e).with_context(|| format!("{}", self.base.display())),
        }
    }

    fn walk(
        &self,
        prune: &dyn Fn(&str) -> bool,
        problems: &mut Vec<(String, String)>,
    ) -> Result<Vec<Entry>> {
        let mut entries = Vec::new();
        let mut pending = vec![String::new()];
        while let Some(rel) = pending.pop() {
            let path = self.path(&rel);
            let entry = match entry_at(&path, &rel) {
                Ok(Some(entry)) => entry,
                Ok(None) => {
                    problems.push((
                        path.display().to_string(),
                        "not a regular file, directory or symlink (not staged)".into(),
                    ));
                    continue;
                }
                Err(e) if rel.is_empty() => {
                    return Err(e).with_context(|| format!("{}", path.display()))
                }
                Err(e) => {
                    problems.push((path.display().to_string(), e.to_string()));
                    continue;
                }
            };
            let kind = entry.kind;
            entries.push(entry);
            if kind != EntryKind::Dir {
                continue;
            }
            let listing = match std::fs::read_dir(&path) {
                Ok(listing) => listing,
                Err(e) => {
                    problems.push((path.display().to_string(), e.to_string()));
                    continue;
                }
            };
            for child in listing {
                let name = match child {
                    Ok(child) => child.file_name(),
                    Err(e) => {
                        problems.push((path.display().to_string(), e.to_string()));
                        continue;
                    }
                };
                let child_rel = join_rel(&rel, &escape_bytes(name.as_bytes()));
                if !prune(&child_rel) {
                    pending.push(child_rel);
                }
            }
        }
        Ok(entries)
    }

    fn file_state(&self, rel: &str) -> Result<Option<FileState>> {
        match std::fs::symlink_metadata(self.path(rel)) {
            Ok(md) if md.is_file() => Ok(Some(FileState {
                size: md.len(),
                mtime_ns: mtime_ns(&md),
            })),
            Ok(_) => Ok(None),
            Err(e) if e.kind() == std::io::ErrorKind::NotFound => Ok(None),
            Err(e) => Err(e).with_context(|| self.describe(rel)),
        }
    }

    fn entry(&self, rel: &str) -> Result<Option<Entry>> {
        match entry_at(&self.path(rel), rel) {
            Err(e) if e.kind() == std::io::ErrorKind::NotFound => Ok(None),
            found => found.with_context(|| self.describe(rel)),
        }
    }

    fn read_at(&self, rel: &str, offset: u64, buf: &mut [u8]) -> Result<()> {
        let path = self.path(rel);
        let file = File::open(&path).with_context(|| format!("opening {}", path.display()))?;
        file.read_exact_at(buf, offset)
            .with_context(|| format!("reading {} at {offset}", path.display()))
    }

    fn data_in(&self, rel: &str, range: Range<u64>) -> Result<Vec<Range<u64>>> {
        let path = self.path(rel);
        let file = File::open(&path).with_context(|| format!("opening {}", path.display()))?;
        let mut extents = Vec::new();
        let mut at = range.start;
        while at < range.end {
            let data = match rustix::fs::seek(&file, SeekFrom::Data(at)) {
                Ok(data) => data,
                // ENXIO: no data at or after `at` (the rest is a hole).
                Err(rustix::io::Errno::NXIO) => break,
                // A file system without SEEK_DATA: all of it is data.
                Err(rustix::io::Errno::INVAL | rustix::io::Errno::OPNOTSUPP) => {
                    return Ok(vec![range])
                }
                Err(e) => return Err(e).with_context(|| format!("SEEK_DATA {}", path.display())),
            };
            if data >= range.end {
                break;
            }
            let hole = rustix::fs::seek(&file, SeekFrom::Hole(data))
                .with_context(|| format!("SEEK_HOLE {}", path.display()))?;
            extents.push(data..hole.min(range.end));
            at = hole;
        }
        Ok(extents)
    }

    fn make_dir(&self, rel: &str) -> Result<()> {
        let path = self.path(rel);
        match std::fs::symlink_metadata(&path) {
            Ok(md) if md.is_dir() => Ok(()),
            Ok(_) => bail!(
                "{}: exists in the destination and is not a directory",
                path.display()
            ),
            Err(_) => std::fs::create_dir_all(&path)
                .with_context(|| format!("creating directory {}", path.display())),
        }
    }

    fn make_symlink(&self, rel: &str, target: &str, mtime_ns: i64) -> Result<()> {
        let path = self.path(rel);
        clear_for(&path, "symlink")?;
        std::os::unix::fs::symlink(OsStr::from_bytes(&unescape(target)), &path)
            .with_context(|| format!("creating symlink {}", path.display()))?;
        set_mtime(&path, mtime_ns)
    }

    /// The file is written under a temporary name beside its place and
    /// renamed over it when complete: a reader never sees it half written,
    /// and the file it replaces stays whole until then — in cache mode SFS
    /// may still be reading that very file for chunks it has not read yet
    /// (docs/staging.md).
    fn create_file(&self, entry: &Entry, _ranges: usize) -> Result<Box<dyn FileSink>> {
        let path = self.path(&entry.rel);
        clear_for(&path, "file")?;
        let mut temporary_name = std::ffi::OsString::from(".");
        temporary_name.push(path.file_name().unwrap_or_default());
        temporary_name.push(format!(".sfs-stage.{}", std::process::id()));
        let temporary = path.with_file_name(temporary_name);
        let file = OpenOptions::new()
            .read(true)
            .write(true)
            .create(true)
            .truncate(true)
            .custom_flags(libc::O_NOFOLLOW)
            .mode(0o600)
            .open(&temporary)
            .with_context(|| format!("creating {}", temporary.display()))?;
        // The whole file is a hole at first; ranges fill in its data.
        file.set_len(entry.size)
            .with_context(|| format!("sizing {}", temporary.display()))?;
        Ok(Box::new(LocalSink {
            path,
            temporary,
            file,
            mode: entry.mode,
            mtime_ns: entry.mtime_ns,
            done: std::sync::atomic::AtomicBool::new(false),
        }))
    }

    fn set_dir_attrs(&self, rel: &str, mode: u32, mtime_ns: i64) -> Result<()> {
        let path = self.path(rel);
        std::fs::set_permissions(&path, std::fs::Permissions::from_mode(mode))
            .with_context(|| format!("chmod {}", path.display()))?;
        set_mtime(&path, mtime_ns)
    }

    fn read_link(&self, rel: &str) -> Result<Option<String>> {
        let path = self.path(rel);
        let target =
            std::fs::read_link(&path).with_context(|| format!("readlink {}", path.display()))?;
        Ok(Some(
            escape_bytes(target.as_os_str().as_bytes()).into_owned(),
        ))
    }
}

/// A local file being written by range.
struct LocalSink {
    path: PathBuf,
    /// Where it is written until complete.
    temporary: PathBuf,
    file: File,
    mode: u32,
    mtime_ns: i64,
    /// Renamed into place (nothing left to clean up).
    done: std::sync::atomic::AtomicBool,
}

impl Drop for LocalSink {
    fn drop(&mut self) {
        if !self.done.load(std::sync::atomic::Ordering::Acquire) {
            let _ = std::fs::remove_file(&self.temporary);
        }
    }
}

impl FileSink for LocalSink {
    fn write_range(&self, _index: usize, offset: u64, data: &[u8]) -> Result<()> {
        // Granules of zeros are skipped: the file was sized up front, so
        // they read as zeros and stay holes.
        let mut at = 0;
        while at < data.len() {
            let end = (at + HOLE_GRANULE).min(data.len());
            let mut run_end = end;
            if all_zero(&data[at..end]) {
                at = end;
                continue;
            }
            // Extend the run of data up to the next zero granule.
            while run_end < data.len() {
                let next = (run_end + HOLE_GRANULE).min(data.len());
                if all_zero(&data[run_end..next]) {
                    break;
                }
                run_end = next;
            }
            self.file
                .write_all_at(&data[at..run_end], offset + at as u64)
                .with_context(|| format!("writing {} at {offset}", self.path.display()))?;
            at = run_end;
        }
        Ok(())
    }

    fn complete(&self) -> Result<()> {
        self.file
            .set_permissions(std::fs::Permissions::from_mode(self.mode))
            .with_context(|| format!("chmod {}", self.temporary.display()))?;
        set_mtime(&self.temporary, self.mtime_ns)?;
        std::fs::rename(&self.temporary, &self.path)
            .with_context(|| format!("renaming {} into place", self.temporary.display()))?;
        self.done.store(true, std::sync::atomic::Ordering::Release);
        Ok(())
    }
}
