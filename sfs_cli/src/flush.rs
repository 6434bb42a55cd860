//! `sfs flush PATH...`: makes files back-end-persistent (their data in the
//! object back end, see docs/semantics.md), one line per file and a total.

use crate::files::client;
use crate::Setup;
use anyhow::{bail, Context, Result};
use sfs_client::{Client, FileKind, FlushStats};

/// Flushes each path; a directory needs `recursive` and then every file
/// under it is flushed (symlinks inside the tree are not followed, so a
/// link cannot make the walk loop or leave the tree).
pub fn flush(setup: &Setup, paths: &[String], recursive: bool) -> Result<()> {
    let client = client(setup)?;
    let mut total = Total::default();
    for path in paths {
        let path = sfs_global::path::normalize(path)?;
        // As open: a symlink named on the command line is followed.
        let md = client
            .stat(&path)
            .with_context(|| format!("flush {path}"))?;
        if md.is_dir() {
            if !recursive {
                bail!("flush {path}: is a directory (use -r)");
            }
            flush_tree(&client, &path, &mut total)?;
        } else {
            flush_file(&client, &path, &mut total)?;
        }
    }
    outln!(
        "total: {} files, {} bytes in {} chunks",
        total.files,
        total.stats.bytes,
        total.stats.chunks
    )?;
    Ok(())
}

/// What the files flushed so far wrote.
#[derive(Default)]
struct Total {
    files: u64,
    stats: FlushStats,
}

fn flush_file(client: &Client, path: &str, total: &mut Total) -> Result<()> {
    let stats = client
        .flush(path)
        .with_context(|| format!("flush {path}"))?;
    outln!("{path}: {} bytes", stats.bytes)?;
    total.files += 1;
    total.stats.chunks += stats.chunks;
    total.stats.bytes += stats.bytes;
    Ok(())
}

fn flush_tree(client: &Client, dir: &str, total: &mut Total) -> Result<()> {
    let mut entries: Vec<_> = client
        .read_dir(dir)
        .and_then(|listing| listing.collect::<Result<_, _>>())
        .with_context(|| format!("flush: listing {dir}"))?;
    entries.sort_by(|a, b| a.name.cmp(&b.name));
    for entry in entries {
        let path = sfs_global::path::join(dir, &entry.name);
        match entry.metadata.kind() {
            FileKind::Directory => flush_tree(client, &path, total)?,
            FileKind::File => flush_file(client, &path, total)?,
            FileKind::Symlink => {}
        }
    }
    Ok(())
}
