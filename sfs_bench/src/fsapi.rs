//! The two ways a worker reaches a file system.
//!
//! [`PosixFs`] makes plain `std::fs` calls on paths: under the LD_PRELOAD shim
//! those are the calls an unmodified application makes (open64, pread64,
//! statx, opendir/readdir64 ...), without it they hit the local kernel file
//! system of the baseline. [`LibFs`] calls `sfs_client` directly, so the
//! difference between the two SFS rows is the cost of the shim.

use anyhow::{bail, Context, Result};
use sfs_client::Client;
use std::fs::{File, OpenOptions};
use std::os::unix::fs::{FileExt, OpenOptionsExt};

/// An open file of either kind.
pub enum Handle {
    Posix(File),
    Lib(i32),
}

/// What `lstat` tells the workloads.
pub struct EntryInfo {
    pub is_dir: bool,
    pub is_file: bool,
    pub size: u64,
}

/// How a file is opened.
#[derive(Clone, Copy)]
pub enum OpenMode {
    /// O_WRONLY|O_CREAT|O_EXCL: mdtest's create.
    CreateExclusive,
    /// O_RDWR|O_CREAT: IOR's write phase (shared files are opened by every rank).
    CreateReadWrite,
    /// O_RDONLY.
    Read,
}

/// The file-system calls the workloads make.
pub trait FileSystem {
    fn open(&self, path: &str, mode: OpenMode) -> Result<Handle>;
    fn pwrite_all(&self, file: &Handle, buf: &[u8], offset: u64) -> Result<()>;
    /// Fails on a short read: every workload reads bytes it wrote.
    fn pread_exact(&self, file: &Handle, buf: &mut [u8], offset: u64) -> Result<()>;
    fn fsync(&self, file: &Handle) -> Result<()>;
    fn close(&self, file: Handle) -> Result<()>;
    fn lstat(&self, path: &str) -> Result<EntryInfo>;
    fn unlink(&self, path: &str) -> Result<()>;
    fn mkdir(&self, path: &str) -> Result<()>;
    fn rmdir(&self, path: &str) -> Result<()>;
    /// Names of the entries of a directory (without `.` and `..`).
    fn list(&self, path: &str) -> Result<Vec<String>>;
}

/// Plain POSIX calls through std (intercepted by the shim when preloaded).
pub struct PosixFs;

impl FileSystem for PosixFs {
    fn open(&self, path: &str, mode: OpenMode) -> Result<Handle> {
        let mut options = OpenOptions::new();
        match mode {
            OpenMode::CreateExclusive => options.write(true).create_new(true),
            OpenMode::CreateReadWrite => options.read(true).write(true).create(true),
            OpenMode::Read => options.read(true),
        };
        options.mode(0o644);
        Ok(Handle::Posix(
            options.open(path).with_context(|| format!("open {path}"))?,
        ))
    }

    fn pwrite_all(&self, file: &Handle, buf: &[u8], offset: u64) -> Result<()> {
        posix(file)?
            .write_all_at(buf, offset)
            .with_context(|| format!("pwrite of {} bytes at {offset}", buf.len()))
    }

    fn pread_exact(&self, file: &Handle, buf: &mut [u8], offset: u64) -> Result<()> {
        let len = buf.len();
        posix(file)?
            .read_exact_at(buf, offset)
            .with_context(|| format!("pread of {len} bytes at {offset}"))
    }

    fn fsync(&self, file: &Handle) -> Result<()> {
        posix(file)?.sync_all().context("fsync")
    }

    fn close(&self, file: Handle) -> Result<()> {
        drop(file);
        Ok(())
    }

    fn lstat(&self, path: &str) -> Result<EntryInfo> {
        let md = std::fs::symlink_metadata(path).with_context(|| format!("lstat {path}"))?;
        Ok(EntryInfo {
            is_dir: md.is_dir(),
            is_file: md.is_file(),
            size: md.len(),
        })
    }

    fn unlink(&self, path: &str) -> Result<()> {
        std::fs::remove_file(path).with_context(|| format!("unlink {path}"))
    }

    fn mkdir(&self, path: &str) -> Result<()> {
        std::fs::create_dir(path).with_context(|| format!("mkdir {path}"))
    }

    fn rmdir(&self, path: &str) -> Result<()> {
        std::fs::remove_dir(path).with_context(|| format!("rmdir {path}"))
    }

    fn list(&self, path: &str) -> Result<Vec<String>> {
        let mut names = Vec::new();
        for entry in std::fs::read_dir(path).with_context(|| format!("opendir {path}"))? {
            let entry = entry.with_context(|| format!("readdir {path}"))?;
            names.push(entry.file_name().to_string_lossy().into_owned());
        }
        Ok(names)
    }
}

fn posix(file: &Handle) -> Result<&File> {
    match file {
        Handle::Posix(f) => Ok(f),
        Handle::Lib(_) => bail!("a client-library handle passed to the POSIX file system"),
    }
}

/// The SFS client library, called directly.
pub struct LibFs {
    pub client: Client,
}

impl LibFs {
    fn fd(file: &Handle) -> Result<i32> {
        match file {
            Handle::Lib(fd) => Ok(*fd),
            Handle::Posix(_) => bail!("a POSIX handle passed to the client library"),
        }
    }
}

impl FileSystem for LibFs {
    fn open(&self, path: &str, mode: OpenMode) -> Result<Handle> {
        let flags = match mode {
            OpenMode::CreateExclusive => libc::O_WRONLY | libc::O_CREAT | libc::O_EXCL,
            OpenMode::CreateReadWrite => libc::O_RDWR | libc::O_CREAT,
            OpenMode::Read => libc::O_RDONLY,
        };
        let fd = self
            .client
            .open(path, flags, 0o644)
            .with_context(|| format!("open {path}"))?;
        Ok(Handle::Lib(fd))
    }

    fn pwrite_all(&self, file: &Handle, buf: &[u8], offset: u64) -> Result<()> {
        let fd = Self::fd(file)?;
        let mut done = 0;
        while done < buf.len() {
            let n = self
                .client
                .pwrite(fd, &buf[done..], offset + done as u64)
                .with_context(|| format!("pwrite of {} bytes at {offset}", buf.len()))?;
            if n == 0 {
                bail!("pwrite at {offset} wrote nothing");
            }
            done += n;
        }
        Ok(())
    }

    fn pread_exact(&self, file: &Handle, buf: &mut [u8], offset: u64) -> Result<()> {
        let fd = Self::fd(file)?;
        let mut done = 0;
        while done < buf.len() {
            let n = self
                .client
                .pread(fd, &mut buf[done..], offset + done as u64)
                .with_context(|| format!("pread of {} bytes at {offset}", buf.len()))?;
            if n == 0 {
                bail!(
                    "short read: {done} of {} bytes at offset {offset}",
                    buf.len()
                );
            }
            done += n;
        }
        Ok(())
    }

    fn fsync(&self, file: &Handle) -> Result<()> {
        Ok(self.client.fsync(Self::fd(file)?)?)
    }

    fn close(&self, file: Handle) -> Result<()> {
        Ok(self.client.close(Self::fd(&file)?)?)
    }

    fn lstat(&self, path: &str) -> Result<EntryInfo> {
        let md = self
            .client
            .lstat(path)
            .with_context(|| format!("lstat {path}"))?;
        let kind = md.mode & libc::S_IFMT;
        Ok(EntryInfo {
            is_dir: kind == libc::S_IFDIR,
            is_file: kind == libc::S_IFREG,
            size: md.size,
        })
    }

    fn unlink(&self, path: &str) -> Result<()> {
        self.client
            .unlink(path)
            .with_context(|| format!("unlink {path}"))
    }

    fn mkdir(&self, path: &str) -> Result<()> {
        self.client
            .mkdir(path, 0o755)
            .with_context(|| format!("mkdir {path}"))
    }

    fn rmdir(&self, path: &str) -> Result<()> {
        self.client
            .rmdir(path)
            .with_context(|| format!("rmdir {path}"))
    }

    fn list(&self, path: &str) -> Result<Vec<String>> {
        let mut names = Vec::new();
        for entry in self
            .client
            .read_dir(path)
            .with_context(|| format!("opendir {path}"))?
        {
            let entry = entry.with_context(|| format!("readdir {path}"))?;
            if entry.name != "." && entry.name != ".." {
                names.push(entry.name);
            }
        }
        Ok(names)
    }
}
