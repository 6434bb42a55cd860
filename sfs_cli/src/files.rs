//! File tools on the SFS namespace through the client library: usable
//! before (and without) the LD_PRELOAD shim.

use crate::local_time::{self, LocalTime};
use crate::Setup;
use anyhow::{bail, Context, Result};
use sfs_client::{Client, FileKind, Metadata};
use std::io::{Read, Write};
use std::path::Path;

/// Transfer size of put/get: a few chunks, so every server is busy.
const COPY_BUFFER: usize = 8 << 20;

/// A client of the servers `setup` names.
pub(crate) fn client(setup: &Setup) -> Result<Client> {
    Ok(Client::new(setup.config.clone(), setup.hostfile.clone())?)
}

fn type_char(md: &Metadata) -> char {
    match md.kind() {
        FileKind::Directory => 'd',
        FileKind::Symlink => 'l',
        FileKind::File => '-',
        FileKind::Fifo => 'p',
        FileKind::Socket => 's',
        FileKind::CharDevice => 'c',
        FileKind::BlockDevice => 'b',
    }
}

/// `-rw-r--r--` as `ls -l` shows the mode, with the set-user-id, set-group-id
/// and sticky bits in the execute places (`s`/`S`, `t`/`T`).
fn mode_string(md: &Metadata) -> String {
    let mut s = String::with_capacity(10);
    s.push(type_char(md));
    let special = [
        (6, libc::S_ISUID, 's'),
        (3, libc::S_ISGID, 's'),
        (0, libc::S_ISVTX, 't'),
    ];
    for (shift, bit, mark) in special {
        let bits = (md.mode >> shift) & 7;
        s.push(if bits & 4 != 0 { 'r' } else { '-' });
        s.push(if bits & 2 != 0 { 'w' } else { '-' });
        s.push(match (bits & 1 != 0, md.mode & bit != 0) {
            (true, false) => 'x',
            (false, false) => '-',
            (true, true) => mark,
            (false, true) => mark.to_ascii_uppercase(),
        });
    }
    s
}

/// The modification time column of `ls -l`, in local time; `now` decides
/// between the time of day and the year.
fn ls_time(md: &Metadata, now: i64) -> String {
    let secs = md.mtime_ns.div_euclid(1_000_000_000);
    match LocalTime::from_epoch_secs(secs) {
        Some(t) => t.ls_format(local_time::is_recent(secs, now)),
        None => format!("{secs:>12}"),
    }
}

/// One line of `ls -ln`: mode, links, uid, gid, size, time, name.
fn long_line(name: &str, md: &Metadata, now: i64) -> String {
    let link = if md.kind() == FileKind::Symlink {
        format!(" -> {}", md.link_target)
    } else {
        String::new()
    };
    format!(
        "{} {:>3} {:>5} {:>5} {:>12} {} {name}{link}",
        mode_string(md),
        md.nlink,
        md.uid,
        md.gid,
        md.st_size(),
        ls_time(md, now)
    )
}

pub fn ls(setup: &Setup, path: &str, long: bool) -> Result<()> {
    let client = client(setup)?;
    let md = client.lstat(path).with_context(|| format!("ls {path}"))?;
    let now = local_time::now_secs();
    let out = std::io::stdout();
    let mut out = out.lock();
    if !md.is_dir() {
        writeln!(
            out,
            "{}",
            if long {
                long_line(path, &md, now)
            } else {
                path.to_string()
            }
        )?;
        return Ok(());
    }
    let mut entries: Vec<_> = client.read_dir(path)?.collect::<Result<_, _>>()?;
    entries.sort_by(|a, b| a.name.cmp(&b.name));
    for e in entries {
        writeln!(
            out,
            "{}",
            if long {
                long_line(&e.name, &e.metadata, now)
            } else {
                e.name
            }
        )?;
    }
    Ok(())
}

/// `sfs put LOCAL PATH`: the copy is written under a temporary name next to
/// `PATH`, fsync'ed, and renamed over `PATH` only when complete, so a put
/// that fails part-way (a full chunk store, a lost server) leaves `PATH` as
/// it was (absent, or its previous content) and removes what it wrote.
pub fn put(setup: &Setup, local: &Path, path: &str) -> Result<()> {
    let client = client(setup)?;
    let mut src =
        std::fs::File::open(local).with_context(|| format!("opening {}", local.display()))?;
    let path = sfs_global::path::normalize(path)?;
    let (parent, name) = sfs_global::path::split_parent(&path)
        .with_context(|| format!("{path}: cannot put onto the root directory"))?;
    let staging = format!(
        "{}/.{name}.sfs-put.{}",
        parent.trim_end_matches('/'),
        std::process::id()
    );
    let fd = client
        .open(
            &staging,
            libc::O_WRONLY | libc::O_CREAT | libc::O_EXCL,
            0o644,
        )
        .with_context(|| {
            format!("creating {staging} (the copy is renamed to {path} when complete)")
        })?;
    let mut buf = vec![0u8; COPY_BUFFER];
    let copied = (|| -> Result<()> {
        loop {
            let n = src.read(&mut buf)?;
            if n == 0 {
                break;
            }
            client.write(fd, &buf[..n])?;
        }
        client.fsync(fd)?;
        Ok(())
    })();
    let closed = client.close(fd);
    let done = copied
        .and_then(|()| Ok(closed?))
        .and_then(|()| Ok(client.rename(&staging, &path)?));
    if done.is_err() {
        // Best effort: a server that is gone may keep the staging name until
        // it is back (the name starts with a dot and says where it came from).
        let _ = client.unlink(&staging);
    }
    done.with_context(|| format!("copying {} to {path}", local.display()))
}

pub fn get(setup: &Setup, path: &str, local: &Path) -> Result<()> {
    let client = client(setup)?;
    let fd = client
        .open(path, libc::O_RDONLY, 0)
        .with_context(|| format!("opening {path}"))?;
    let mut dst =
        std::fs::File::create(local).with_context(|| format!("creating {}", local.display()))?;
    let mut buf = vec![0u8; COPY_BUFFER];
    let copied = (|| -> Result<()> {
        loop {
            let n = client.read(fd, &mut buf)?;
            if n == 0 {
                return Ok(());
            }
            dst.write_all(&buf[..n])?;
        }
    })();
    client.close(fd)?;
    copied.with_context(|| format!("copying {path} to {}", local.display()))
}

fn remove_tree(client: &Client, path: &str) -> Result<()> {
    let md = client.lstat(path)?;
    if md.is_dir() {
        let children: Vec<_> = client.read_dir(path)?.collect::<Result<_, _>>()?;
        for child in children {
            remove_tree(client, &sfs_global::path::join(path, &child.name))?;
        }
        client.rmdir(path)?;
    } else {
        client.unlink(path)?;
    }
    Ok(())
}

pub fn rm(setup: &Setup, paths: &[String], recursive: bool) -> Result<()> {
    let client = client(setup)?;
    for path in paths {
        let path = sfs_global::path::normalize(path)?;
        let md = client.lstat(&path).with_context(|| format!("rm {path}"))?;
        if md.is_dir() && !recursive {
            bail!("rm {path}: is a directory (use -r)");
        }
        remove_tree(&client, &path).with_context(|| format!("rm {path}"))?;
    }
    Ok(())
}

pub fn mkdir(setup: &Setup, paths: &[String], parents: bool) -> Result<()> {
    let client = client(setup)?;
    for path in paths {
        let path = sfs_global::path::normalize(path)?;
        if !parents {
            client
                .mkdir(&path, 0o755)
                .with_context(|| format!("mkdir {path}"))?;
            continue;
        }
        let mut current = String::new();
        for part in path.split('/').filter(|p| !p.is_empty()) {
            current.push('/');
            current.push_str(part);
            match client.mkdir(&current, 0o755) {
                Ok(()) => {}
                Err(e)
                    if e.errno == sfs_client::Errno::EEXIST && client.stat(&current)?.is_dir() => {}
                Err(e) => return Err(e).with_context(|| format!("mkdir -p {current}")),
            }
        }
    }
    Ok(())
}

pub fn stat(setup: &Setup, path: &str) -> Result<()> {
    let client = client(setup)?;
    let md = client.lstat(path).with_context(|| format!("stat {path}"))?;
    let kind = match md.kind() {
        FileKind::Directory => "directory",
        FileKind::Symlink => "symbolic link",
        FileKind::File => "regular file",
        FileKind::Fifo => "fifo",
        FileKind::Socket => "socket",
        FileKind::CharDevice => "character special file",
        FileKind::BlockDevice => "block special file",
    };
    outln!(
        "  File: {path}{}",
        if md.link_target.is_empty() {
            String::new()
        } else {
            format!(" -> {}", md.link_target)
        }
    )?;
    outln!("  Size: {:<12} Type: {kind}", md.st_size())?;
    outln!(
        "  Mode: {:04o}/{}  Uid: {}  Gid: {}  Links: {}",
        md.mode & 0o7777,
        mode_string(&md),
        md.uid,
        md.gid,
        md.nlink
    )?;
    outln!("    Id: {}", md.id)?;
    for (name, ns) in [
        ("Access", md.atime_ns),
        ("Modify", md.mtime_ns),
        ("Change", md.ctime_ns),
    ] {
        let (secs, nanos) = (ns.div_euclid(1_000_000_000), ns.rem_euclid(1_000_000_000));
        let nanos = u32::try_from(nanos).unwrap_or(0);
        let shown = LocalTime::from_epoch_secs(secs)
            .map(|t| t.stat_format(nanos))
            .unwrap_or_else(|| format!("{secs}.{nanos:09} (seconds since the epoch)"));
        outln!("{name}: {shown}")?;
    }
    Ok(())
}
