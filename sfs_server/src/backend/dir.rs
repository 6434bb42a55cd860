//! The `dir` back end: objects as sparse files under a directory.
//!
//! The embedded default: on a laptop a local directory, on a cluster a
//! path on the parallel file system the job's data must end up on. Object
//! `id` is the file `ROOT/objects/XX/<32 hex digits>`, where `XX` are the
//! id's first two hex digits (256 directories, so a million objects do not
//! share one directory). Writes are `pwrite`s, so holes stay holes; `persist`
//! is `fsync` of the file and of its directory (the entry of a new object
//! must survive too); extents come from `SEEK_DATA`/`SEEK_HOLE`.

use super::{ObjectBackend, ObjectStat};
use async_trait::async_trait;
use sfs_global::{Errno, FileId, SfsError, SfsResult};
use sfs_rdma::buffers::PooledBuffer;
use std::fs::{File, OpenOptions};
use std::ops::Range;
use std::os::unix::fs::FileExt;
use std::path::{Path, PathBuf};
use std::sync::Arc;

/// Objects as files under `root` (see the module documentation).
pub struct DirBackend {
    objects: Arc<PathBuf>,
}

impl DirBackend {
    /// A back end storing under `root` (created if missing).
    pub fn open(root: &Path) -> SfsResult<DirBackend> {
        let objects = root.join("objects");
        std::fs::create_dir_all(&objects).map_err(|e| {
            SfsError::new(
                Errno(e.raw_os_error().unwrap_or(libc::EIO)),
                format!("dir back end: cannot create {}: {e}", objects.display()),
            )
        })?;
        Ok(DirBackend {
            objects: Arc::new(objects),
        })
    }
}

fn object_path(objects: &Path, id: FileId) -> PathBuf {
    let hex = id.to_hex();
    objects.join(&hex[..2]).join(hex)
}

/// An I/O error with the back end and the object named.
fn failed(what: &str, id: FileId, e: std::io::Error) -> SfsError {
    SfsError::new(
        Errno(e.raw_os_error().unwrap_or(libc::EIO)),
        format!("dir back end: {what} object {id}: {e}"),
    )
}

/// Runs blocking file work off the async threads.
async fn blocking<T: Send + 'static>(
    work: impl FnOnce() -> SfsResult<T> + Send + 'static,
) -> SfsResult<T> {
    crate::backend::off_the_runtime("dir back end", work).await
}

/// Opens (creating if `create`) the object's file for reading and writing.
fn open_object(objects: &Path, id: FileId, create: bool) -> SfsResult<File> {
    let path = object_path(objects, id);
    let open = |path: &Path| {
        OpenOptions::new()
            .read(true)
            .write(true)
            .create(create)
            .open(path)
    };
    match open(&path) {
        Err(e) if create && e.kind() == std::io::ErrorKind::NotFound => {
            let parent = path.parent().expect("objects/XX/");
            std::fs::create_dir_all(parent)
                .map_err(|e| failed("creating the directory of", id, e))?;
            open(&path).map_err(|e| failed("creating", id, e))
        }
        other => other.map_err(|e| failed("opening", id, e)),
    }
}

/// Asks the kernel to start writing the pages of `ranges` (offset,
/// length) of `object` to the device now, without waiting: the
/// `persist` that ends a write-back then finds most of them written
/// instead of starting all of them at once, and the device works while the
/// next batch is copied. Only a hint: a failure changes nothing (`persist`
/// writes what is left).
fn start_writeback(object: &File, ranges: impl Iterator<Item = (u64, u64)>) {
    let (mut start, mut end) = (u64::MAX, 0);
    for (offset, len) in ranges.filter(|&(_, len)| len > 0) {
        start = start.min(offset);
        end = end.max(offset.saturating_add(len));
    }
    if start >= end {
        return;
    }
    let (Ok(offset), Ok(len)) = (i64::try_from(start), i64::try_from(end - start)) else {
        return;
    };
    // SAFETY: the descriptor is `object`'s, open for as long as the
    // borrow; the call reads no memory of ours.
    unsafe {
        libc::sync_file_range(
            std::os::fd::AsRawFd::as_raw_fd(object),
            offset,
            len,
            libc::SYNC_FILE_RANGE_WRITE,
        );
    }
}

/// Copies `source` from its byte 0 to its end (at most `max_len` bytes)
/// into `object` at `offset`, inside the kernel; returns the bytes copied.
/// `copy_file_range` first (one call between files of one file system);
/// between file systems, where it fails with EXDEV, `sendfile` (page to
/// page, still without a user-space buffer) into the object positioned at
/// `offset` (the handle is this call's own).
fn copy_into(source: &File, object: &File, offset: u64, max_len: u64) -> std::io::Result<u64> {
    use rustix::io::Errno;
    let mut from = 0u64;
    let mut to = offset;
    while from < max_len {
        let want = (max_len - from) as usize;
        match rustix::fs::copy_file_range(source, Some(&mut from), object, Some(&mut to), want) {
            Ok(0) => return Ok(from),
            Ok(_) => {}
            Err(Errno::INTR) => {}
            Err(Errno::XDEV | Errno::INVAL | Errno::NOSYS | Errno::OPNOTSUPP) if from == 0 => {
                return send_into(source, object, offset, max_len);
            }
            Err(e) => return Err(e.into()),
        }
    }
    Ok(from)
}

/// [`copy_into`] with `sendfile`, which writes at the object's position.
fn send_into(source: &File, object: &File, offset: u64, max_len: u64) -> std::io::Result<u64> {
    use rustix::fs::{seek, SeekFrom};
    seek(object, SeekFrom::Start(offset))?;
    let mut from = 0u64;
    while from < max_len {
        let want = (max_len - from) as usize;
        match rustix::fs::sendfile(object, source, Some(&mut from), want) {
            Ok(0) => break,
            Ok(_) => {}
            Err(rustix::io::Errno::INTR) => {}
            Err(e) => return Err(e.into()),
        }
    }
    Ok(from)
}

/// The data ranges of `file` of `size` bytes, from SEEK_DATA/SEEK_HOLE.
fn data_ranges(file: &File, size: u64) -> std::io::Result<Vec<Range<u64>>> {
    use rustix::fs::{seek, SeekFrom};
    let mut ranges = Vec::new();
    let mut at = 0;
    while at < size {
        let start = match seek(file, SeekFrom::Data(at)) {
            Ok(start) => start,
            // No data at or after `at`.
            Err(rustix::io::Errno::NXIO) => break,
            Err(e) => return Err(e.into()),
        };
        let end = seek(file, SeekFrom::Hole(start))?.min(size);
        if end > start {
            ranges.push(start..end);
        }
        at = end;
    }
    Ok(ranges)
}

#[async_trait]
impl ObjectBackend for DirBackend {
    fn kind(&self) -> &'static str {
        "dir"
    }

    async fn create(&self, id: FileId) -> SfsResult<()> {
        let objects = self.objects.clone();
        blocking(move || open_object(&objects, id, true).map(drop)).await
    }

    async fn write(&self, id: FileId, offset: u64, data: &[u8]) -> SfsResult<()> {
        let objects = self.objects.clone();
        let data = data.to_vec();
        blocking(move || {
            let file = open_object(&objects, id, true)?;
            file.write_all_at(&data, offset)
                .map_err(|e| failed("writing", id, e))
        })
        .await
    }

    async fn write_pieces(&self, id: FileId, pieces: Vec<(u64, PooledBuffer)>) -> SfsResult<()> {
        let objects = self.objects.clone();
        // One open and one trip to the blocking pool for the whole batch,
        // and no copy of the buffers.
        blocking(move || {
            let file = open_object(&objects, id, true)?;
            for (offset, data) in &pieces {
                file.write_all_at(data, *offset)
                    .map_err(|e| failed("writing", id, e))?;
            }
            start_writeback(&file, pieces.iter().map(|(o, d)| (*o, d.len() as u64)));
            Ok(())
        })
        .await
    }

    fn copies_from_files(&self) -> bool {
        true
    }

    fn write_from_files(
        &self,
        id: FileId,
        pieces: &[(u64, File)],
        max_len: u64,
    ) -> SfsResult<Vec<u64>> {
        let object = open_object(&self.objects, id, true)?;
        let copied = pieces
            .iter()
            .map(|(offset, source)| {
                copy_into(source, &object, *offset, max_len).map_err(|e| failed("writing", id, e))
            })
            .collect::<SfsResult<Vec<u64>>>()?;
        start_writeback(
            &object,
            pieces.iter().zip(&copied).map(|((o, _), n)| (*o, *n)),
        );
        Ok(copied)
    }

    async fn read(&self, id: FileId, offset: u64, len: usize) -> SfsResult<Vec<u8>> {
        let objects = self.objects.clone();
        blocking(move || {
            let file = open_object(&objects, id, false)?;
            let mut buf = vec![0u8; len];
            let filled =
                read_into(&file, offset, &mut buf).map_err(|e| failed("reading", id, e))?;
            buf.truncate(filled);
            Ok(buf)
        })
        .await
    }

    fn read_now(&self, id: FileId, offset: u64, buf: &mut [u8]) -> Option<SfsResult<usize>> {
        Some(
            open_object(&self.objects, id, false).and_then(|file| {
                read_into(&file, offset, buf).map_err(|e| failed("reading", id, e))
            }),
        )
    }

    async fn persist(&self, id: FileId) -> SfsResult<()> {
        let objects = self.objects.clone();
        blocking(move || {
            let file = open_object(&objects, id, false)?;
            file.sync_all().map_err(|e| failed("syncing", id, e))?;
            // The entry of a new object, and that of its directory.
            let path = object_path(&objects, id);
            let parent = path.parent().expect("objects/XX/");
            for dir in [parent, objects.as_path()] {
                File::open(dir)
                    .and_then(|d| d.sync_all())
                    .map_err(|e| failed("syncing the directory of", id, e))?;
            }
            Ok(())
        })
        .await
    }

    async fn truncate(&self, id: FileId, size: u64) -> SfsResult<()> {
        let objects = self.objects.clone();
        blocking(move || {
            let path = object_path(&objects, id);
            match std::fs::OpenOptions::new().write(true).open(&path) {
                Ok(file) => file.set_len(size).map_err(|e| failed("truncating", id, e)),
                Err(e) if e.kind() == std::io::ErrorKind::NotFound => Ok(()),
                Err(e) => Err(failed("opening", id, e)),
            }
        })
        .await
    }

    async fn delete(&self, id: FileId) -> SfsResult<()> {
        let objects = self.objects.clone();
        blocking(
            move || match std::fs::remove_file(object_path(&objects, id)) {
                Err(e) if e.kind() != std::io::ErrorKind::NotFound => {
                    Err(failed("deleting", id, e))
                }
                _ => Ok(()),
            },
        )
        .await
    }

    async fn stat(&self, id: FileId) -> SfsResult<Option<ObjectStat>> {
        let objects = self.objects.clone();
        blocking(move || match std::fs::metadata(object_path(&objects, id)) {
            Ok(md) => Ok(Some(ObjectStat { size: md.len() })),
            Err(e) if e.kind() == std::io::ErrorKind::NotFound => Ok(None),
            Err(e) => Err(failed("stat of", id, e)),
        })
        .await
    }

    async fn list(&self) -> SfsResult<Vec<FileId>> {
        let objects = self.objects.clone();
        blocking(move || {
            let listing = |dir: &Path| {
                std::fs::read_dir(dir).map_err(|e| {
                    SfsError::new(
                        Errno(e.raw_os_error().unwrap_or(libc::EIO)),
                        format!("dir back end: listing {}: {e}", dir.display()),
                    )
                })
            };
            let mut ids = Vec::new();
            for fan in listing(&objects)? {
                let fan = fan.map_err(|e| SfsError::io(format!("dir back end: listing: {e}")))?;
                for entry in listing(&fan.path())? {
                    let entry =
                        entry.map_err(|e| SfsError::io(format!("dir back end: listing: {e}")))?;
                    // Anything not named like an object is not one of ours.
                    let name = entry.file_name();
                    if let Some(id) = name
                        .to_str()
                        .filter(|n| n.len() == 32)
                        .and_then(|n| u128::from_str_radix(n, 16).ok())
                    {
                        ids.push(FileId(id));
                    }
                }
            }
            Ok(ids)
        })
        .await
    }

    async fn extents(&self, id: FileId) -> SfsResult<Vec<Range<u64>>> {
        let objects = self.objects.clone();
        blocking(move || {
            let file = open_object(&objects, id, false)?;
            let size = file.metadata().map_err(|e| failed("stat of", id, e))?.len();
            data_ranges(&file, size).map_err(|e| failed("listing the extents of", id, e))
        })
        .await
    }
}

/// Fills `buf` from `file` at `offset`; fewer bytes (the count returned)
/// only at the file's end.
pub(crate) fn read_into(
    file: &std::fs::File,
    offset: u64,
    buf: &mut [u8],
) -> std::io::Result<usize> {
    let mut filled = 0;
    while filled < buf.len() {
        match file.read_at(&mut buf[filled..], offset + filled as u64) {
            Ok(0) => break,
            Ok(n) => filled += n,
            Err(e) if e.kind() == std::io::ErrorKind::Interrupted => {}
            Err(e) => return Err(e),
        }
    }
    Ok(filled)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[tokio::test]
    async fn dir_back_end_passes_the_conformance_suite() {
        let root = tempfile::tempdir().unwrap();
        let backend = DirBackend::open(root.path()).unwrap();
        super::super::conformance::run_all(&backend).await;
    }

    #[test]
    fn both_kernel_copies_place_a_file_at_its_offset() {
        use std::io::Write;
        let dir = tempfile::tempdir().unwrap();
        let mut source = tempfile::tempfile_in(dir.path()).unwrap();
        let bytes: Vec<u8> = (0..70_000u32).map(|i| (i % 251) as u8).collect();
        source.write_all(&bytes).unwrap();
        for (name, copy) in [
            (
                "copy_file_range",
                copy_into as fn(&File, &File, u64, u64) -> _,
            ),
            ("sendfile", send_into),
        ] {
            let object = tempfile::tempfile_in(dir.path()).unwrap();
            // The whole file (past its end asked), then a part of it.
            assert_eq!(
                copy(&source, &object, 100, 1 << 20).unwrap(),
                70_000,
                "{name}"
            );
            assert_eq!(
                copy(&source, &object, 200_000, 1000).unwrap(),
                1000,
                "{name}"
            );
            let mut back = vec![0u8; 201_000];
            assert_eq!(read_into(&object, 0, &mut back).unwrap(), 201_000, "{name}");
            assert!(back[..100].iter().all(|&b| b == 0), "{name}: before");
            assert!(back[100..70_100] == bytes[..], "{name}: the file");
            assert!(
                back[200_000..] == bytes[..1000],
                "{name}: its first 1000 bytes"
            );
        }
    }

    #[tokio::test]
    async fn objects_live_in_a_fan_out_of_directories() {
        let root = tempfile::tempdir().unwrap();
        let backend = DirBackend::open(root.path()).unwrap();
        let id = FileId(0xab00_0000_0000_0000_0000_0000_0000_0001);
        backend.write(id, 0, b"x").await.unwrap();
        let path = root
            .path()
            .join("objects/ab/ab000000000000000000000000000001");
        assert_eq!(std::fs::read(path).unwrap(), b"x");
        // A stray file in the store is not listed as an object.
        std::fs::write(root.path().join("objects/ab/notes.txt"), b"").unwrap();
        assert_eq!(backend.list().await.unwrap(), vec![id]);
    }
}
