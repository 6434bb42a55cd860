//! The SFS side of a stage, through the client library.
//!
//! Several [`Client`]s (one per worker, up to [`MAX_CLIENTS`]) so that
//! workers do not queue behind one client's runtime. A file's ranges are
//! chunk-aligned (`engine.rs`), so every chunk is written whole by one
//! worker to its one server; chunks that are all zeros are not written at
//! all (they stay holes, which SFS reads as zeros and does not store).

use super::tree::{all_zero, join_rel, Entry, EntryKind, FileSink, FileState, Tree};
use anyhow::{bail, Context, Result};
use sfs_client::{Client, Errno, FileKind, Metadata};
use std::sync::atomic::{AtomicU64, AtomicUsize, Ordering};
use std::sync::Arc;

/// Clients a stage opens at most (each connects to every server).
pub const MAX_CLIENTS: usize = 16;

/// A tree rooted at an SFS path.
pub struct SfsTree {
    clients: Arc<Vec<Client>>,
    next: AtomicUsize,
    base: String,
    chunk_size: u64,
    /// Files the walk found reading from a backing name not their own:
    /// (path, bytes that come from it, mtime) ([`Tree::detach_moved`]).
    moved: std::sync::Mutex<Vec<(String, u64, i64)>>,
}

impl SfsTree {
    pub fn new(clients: Arc<Vec<Client>>, base: String) -> SfsTree {
        let chunk_size = clients[0].config().chunk_size;
        SfsTree {
            clients,
            next: AtomicUsize::new(0),
            base,
            chunk_size,
            moved: std::sync::Mutex::new(Vec::new()),
        }
    }

    /// Notes a file of the walk that reads unread bytes from another
    /// backing name than its own.
    fn note_if_moved(&self, path: &str, md: &Metadata) {
        if md.kind() == FileKind::File
            && md.source_len > 0
            && !md.source.is_empty()
            && md.source != path
        {
            self.moved.lock().unwrap_or_else(|p| p.into_inner()).push((
                path.to_string(),
                md.source_len,
                md.mtime_ns,
            ));
        }
    }

    /// Reads the first `len` bytes of `path` and writes them back where
    /// they are, so that SFS holds them as written (not read through from
    /// the backing name any more); its mtime is put back.
    fn hold(&self, path: &str, len: u64, mtime_ns: i64) -> Result<()> {
        let client = self.client();
        let fd = client
            .open(path, libc::O_RDWR, 0)
            .with_context(|| format!("opening sfs:{path}"))?;
        let copied = (|| -> Result<()> {
            let mut buf = vec![0u8; (self.chunk_size * 16) as usize];
            let mut offset = 0;
            while offset < len {
                let want = (len - offset).min(buf.len() as u64) as usize;
                let n = client.pread(fd, &mut buf[..want], offset)?;
                if n == 0 {
                    break; // cut shorter meanwhile
                }
                client.pwrite(fd, &buf[..n], offset)?;
                offset += n as u64;
            }
            Ok(())
        })();
        let closed = client.close(fd);
        copied.with_context(|| format!("reading in sfs:{path}"))?;
        closed.with_context(|| format!("closing sfs:{path}"))?;
        client
            .utimens(path, None, Some(mtime_ns))
            .with_context(|| format!("putting back the mtime of sfs:{path}"))
    }

    /// The client for one operation (round robin).
    fn client(&self) -> &Client {
        let i = self.next.fetch_add(1, Ordering::Relaxed);
        &self.clients[i % self.clients.len()]
    }

    fn path(&self, rel: &str) -> String {
        join_rel(&self.base, rel)
    }

    fn lstat(&self, client: &Client, path: &str) -> Result<Option<Metadata>> {
        match client.lstat(path) {
            Ok(md) => Ok(Some(md)),
            Err(e) if e.errno == Errno::ENOENT => Ok(None),
            Err(e) => Err(e).with_context(|| format!("sfs:{path}")),
        }
    }

    /// `mkdir -p`: creates `path` and any missing parent.
    fn mkdir_parents(&self, client: &Client, path: &str) -> Result<()> {
        let mut missing = vec![path.to_string()];
        while let Some(dir) = missing.last().cloned() {
            match client.mkdir(&dir, 0o755) {
                Ok(()) => {
                    missing.pop();
                }
                Err(e) if e.errno == Errno::EEXIST => {
                    if !client.stat(&dir)?.is_dir() {
                        bail!("sfs:{dir}: exists in the destination and is not a directory");
                    }
                    missing.pop();
                }
                Err(e) if e.errno == Errno::ENOENT => {
                    let Some((parent, _)) = sfs_global::path::split_parent(&dir) else {
                        return Err(e).with_context(|| format!("mkdir sfs:{dir}"));
                    };
                    missing.push(parent.to_string());
                }
                Err(e) => return Err(e).with_context(|| format!("mkdir sfs:{dir}")),
            }
        }
        Ok(())
    }

    /// Makes room for a new entry at `path`: a file or symlink there is
    /// removed; a directory is an error. True if nothing was there.
    fn clear_for(&self, client: &Client, path: &str, what: &str) -> Result<bool> {
        match self.lstat(client, path)? {
            None => Ok(true),
            Some(md) if md.is_dir() => bail!(
                "sfs:{path}: is a directory in the destination, the source has a {what} there"
            ),
            Some(md) if md.kind() == FileKind::Symlink || what != "file" => {
                client
                    .unlink(path)
                    .with_context(|| format!("replacing sfs:{path}"))?;
                Ok(true)
            }
            Some(_) => Ok(false),
        }
    }
}

/// The stage's entry for `md`; `None` for a FIFO, socket or device (not
/// staged, as in a local tree).
fn entry_of(rel: String, md: &Metadata) -> Option<Entry> {
    let kind = match md.kind() {
        FileKind::File => EntryKind::File,
        FileKind::Directory => EntryKind::Dir,
        FileKind::Symlink => EntryKind::Symlink,
        FileKind::Fifo | FileKind::Socket | FileKind::CharDevice | FileKind::BlockDevice => {
            return None
        }
    };
    Some(Entry {
        rel,
        kind,
        mode: md.mode & 0o7777,
        mtime_ns: md.mtime_ns,
        size: if kind == EntryKind::File { md.size } else { 0 },
        target: md.link_target.clone(),
        version: md.mtime_ns,
    })
}

/// [`entry_of`], or the problem a walk reports for an entry it cannot stage.
fn staged_entry(rel: String, md: &Metadata, path: &str) -> Result<Entry, (String, String)> {
    entry_of(rel, md).ok_or_else(|| {
        (
            format!("sfs:{path}"),
            "not a regular file, directory or symlink (not staged)".to_string(),
        )
    })
}

impl Tree for SfsTree {
    fn describe(&self, rel: &str) -> String {
        format!("sfs:{}", self.path(rel))
    }

    fn detach_moved(&self) -> Vec<(String, String)> {
        let moved = std::mem::take(&mut *self.moved.lock().unwrap_or_else(|p| p.into_inner()));
        moved
            .into_iter()
            .filter_map(|(path, len, mtime_ns)| {
                self.hold(&path, len, mtime_ns)
                    .err()
                    .map(|e| (format!("sfs:{path}"), format!("{e:#}")))
            })
            .collect()
    }

    fn root_kind(&self) -> Result<Option<EntryKind>> {
        let client = self.client();
        Ok(self
            .lstat(client, &self.base)?
            .and_then(|md| entry_of(String::new(), &md))
            .map(|e| e.kind))
    }

    fn walk(
        &self,
        prune: &dyn Fn(&str) -> bool,
        problems: &mut Vec<(String, String)>,
    ) -> Result<Vec<Entry>> {
        let client = self.client();
        let root = client
            .lstat(&self.base)
            .with_context(|| format!("sfs:{}", self.base))?;
        self.note_if_moved(&self.base, &root);
        let mut entries = vec![staged_entry(String::new(), &root, &self.base)
            .map_err(|(path, why)| anyhow::anyhow!("{path}: {why}"))?];
        let mut pending = match root.is_dir() {
            true => vec![String::new()],
            false => vec![],
        };
        while let Some(rel) = pending.pop() {
            let dir = self.path(&rel);
            let listing = client
                .read_dir(&dir)
                .and_then(|listing| listing.collect::<Result<Vec<_>, _>>());
            let listing = match listing {
                Ok(listing) => listing,
                Err(e) => {
                    problems.push((format!("sfs:{dir}"), e.to_string()));
                    continue;
                }
            };
            for child in listing {
                let child_rel = join_rel(&rel, &child.name);
                if prune(&child_rel) {
                    continue;
                }
                if child.metadata.is_dir() {
                    pending.push(child_rel.clone());
                }
                let path = self.path(&child_rel);
                self.note_if_moved(&path, &child.metadata);
                match staged_entry(child_rel, &child.metadata, &path) {
                    Ok(entry) => entries.push(entry),
                    // A FIFO, socket or device in SFS (a socket left by a
                    // program that bound one in the mount) has nothing to
                    // copy: said, not a failure, so it cannot hold up a
                    // write-back.
                    Err((path, why)) => eprintln!("skipped {path}: {why}"),
                }
            }
        }
        Ok(entries)
    }

    fn entry(&self, rel: &str) -> Result<Option<Entry>> {
        let client = self.client();
        Ok(self
            .lstat(client, &self.path(rel))?
            .and_then(|md| entry_of(rel.to_string(), &md)))
    }

    fn file_state(&self, rel: &str) -> Result<Option<FileState>> {
        let client = self.client();
        Ok(self
            .lstat(client, &self.path(rel))?
            .filter(|md| md.kind() == FileKind::File)
            .map(|md| FileState {
                size: md.size,
                mtime_ns: md.mtime_ns,
            }))
    }

    fn read_at(&self, rel: &str, offset: u64, buf: &mut [u8]) -> Result<()> {
        let client = self.client();
        let path = self.path(rel);
        let fd = client
            .open(&path, libc::O_RDONLY | libc::O_NOFOLLOW, 0)
            .with_context(|| format!("opening sfs:{path}"))?;
        let read = (|| -> Result<()> {
            let mut done = 0;
            while done < buf.len() {
                let n = client.pread(fd, &mut buf[done..], offset + done as u64)?;
                if n == 0 {
                    bail!("ends before byte {} (it shrank)", offset + buf.len() as u64);
                }
                done += n;
            }
            Ok(())
        })();
        let closed = client.close(fd).map_err(anyhow::Error::from);
        read.and(closed)
            .with_context(|| format!("reading sfs:{path} at {offset}"))
    }

    fn make_dir(&self, rel: &str) -> Result<()> {
        self.mkdir_parents(self.client(), &self.path(rel))
    }

    fn make_symlink(&self, rel: &str, target: &str, mtime_ns: i64) -> Result<()> {
        let client = self.client();
        let path = self.path(rel);
        self.clear_for(client, &path, "symlink")?;
        client
            .symlink(target, &path)
            .with_context(|| format!("creating symlink sfs:{path}"))?;
        client
            .lutimens(&path, None, Some(mtime_ns))
            .with_context(|| format!("setting the mtime of sfs:{path}"))
    }

    fn create_file(&self, entry: &Entry, _ranges: usize) -> Result<Box<dyn FileSink>> {
        let i = self.next.fetch_add(1, Ordering::Relaxed) % self.clients.len();
        let client = &self.clients[i];
        let path = self.path(&entry.rel);
        // Owner-only until `complete` gives it its mode: an incomplete
        // file is not mistaken for a staged one by its permissions. The
        // common case, nothing there yet, costs one call.
        let exclusive = libc::O_WRONLY | libc::O_CREAT | libc::O_EXCL | libc::O_NOFOLLOW;
        let fd = match client.open(&path, exclusive, 0o600) {
            Err(e) if e.errno == Errno::EEXIST => {
                let fresh = self.clear_for(client, &path, "file")?;
                let flags = libc::O_WRONLY
                    | libc::O_CREAT
                    | libc::O_NOFOLLOW
                    | if fresh { libc::O_EXCL } else { libc::O_TRUNC };
                client.open(&path, flags, 0o600)
            }
            opened => opened,
        }
        .with_context(|| format!("creating sfs:{path}"))?;
        Ok(Box::new(SfsSink {
            clients: Arc::clone(&self.clients),
            client: i,
            fd,
            path,
            size: entry.size,
            mode: entry.mode,
            mtime_ns: entry.mtime_ns,
            chunk_size: self.chunk_size,
            written_end: AtomicU64::new(0),
        }))
    }

    fn set_dir_attrs(&self, rel: &str, mode: u32, mtime_ns: i64) -> Result<()> {
        let path = self.path(rel);
        // The times of directories the copies changed, which every client
        // holds back a moment (sfs_client::dir_times), go first: the
        // mtime set here is the last word.
        for client in self.clients.iter() {
            client.flush_dir_times();
        }
        self.client()
            .lset_mode_and_mtime(&path, mode, mtime_ns)
            .with_context(|| format!("setting the mode and mtime of sfs:{path}"))
    }

    fn read_link(&self, rel: &str) -> Result<Option<String>> {
        let path = self.path(rel);
        let target = self
            .client()
            .readlink(&path)
            .with_context(|| format!("readlink sfs:{path}"))?;
        Ok(Some(target))
    }
}

/// An SFS file being written by range through one descriptor.
struct SfsSink {
    clients: Arc<Vec<Client>>,
    /// The client that holds `fd`.
    client: usize,
    fd: i32,
    path: String,
    size: u64,
    mode: u32,
    mtime_ns: i64,
    chunk_size: u64,
    /// The end of the furthest byte written: if short of `size` (the file
    /// ends in a hole), `complete` sets the size.
    written_end: AtomicU64,
}

impl SfsSink {
    fn client(&self) -> &Client {
        &self.clients[self.client]
    }
}

impl FileSink for SfsSink {
    fn write_range(&self, _index: usize, offset: u64, data: &[u8]) -> Result<()> {
        // Runs of chunks holding data, each one write (its pieces go to
        // their servers in parallel); chunks of zeros stay holes.
        let chunk = self.chunk_size as usize;
        let first = chunk - (offset % self.chunk_size) as usize;
        let mut bounds = vec![0];
        let mut at = first.min(data.len());
        while at < data.len() {
            bounds.push(at);
            at += chunk;
        }
        bounds.push(data.len());
        let mut run: Option<usize> = None;
        for pair in bounds.windows(2) {
            let (start, end) = (pair[0], pair[1]);
            let zero = all_zero(&data[start..end]);
            match (run, zero) {
                (None, false) => run = Some(start),
                (Some(from), true) => {
                    self.write(offset, from, &data[from..start])?;
                    run = None;
                }
                _ => {}
            }
        }
        if let Some(from) = run {
            self.write(offset, from, &data[from..])?;
        }
        Ok(())
    }

    fn complete(&self) -> Result<()> {
        let (mode, mtime_ns) = (self.mode, self.mtime_ns);
        let client = self.client();
        let path = &self.path;
        let sized = match self.written_end.load(Ordering::Relaxed) < self.size {
            true => client.ftruncate(self.fd, self.size),
            false => Ok(()),
        };
        let closed = client.close(self.fd);
        sized.with_context(|| format!("setting the size of sfs:{path}"))?;
        closed.with_context(|| format!("closing sfs:{path}"))?;
        client
            .lset_mode_and_mtime(path, mode, mtime_ns)
            .with_context(|| format!("setting the mode and mtime of sfs:{path}"))
    }

    fn abort(&self) {
        let _ = self.client().close(self.fd);
    }
}

impl SfsSink {
    fn write(&self, range_offset: u64, from: usize, data: &[u8]) -> Result<()> {
        let at = range_offset + from as u64;
        let n = self
            .client()
            .pwrite(self.fd, data, at)
            .with_context(|| format!("writing sfs:{} at {at}", self.path))?;
        if n != data.len() {
            bail!("short write to sfs:{} at {at}", self.path);
        }
        self.written_end
            .fetch_max(at + data.len() as u64, Ordering::Relaxed);
        Ok(())
    }
}
