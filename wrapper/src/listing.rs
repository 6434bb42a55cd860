//! One SFS directory's entries as the directory hooks hand them out
//! (`hooks::dir`: readdir through a `DIR*`, getdents64 through a
//! descriptor): `.` and `..` first, then the directory's, fetched a page at
//! a time as the reader reaches them, so a directory of millions of entries
//! costs one page of memory. Positions are entry indexes; going back before
//! the page held lists the directory again from the start.

use crate::state::{err, with_client};
use sfs_client::dir::DirCursor;
use sfs_global::path::split_parent;
use sfs_global::{FileKind, Metadata, SfsResult};
use std::ffi::CString;

/// One entry as `readdir` and `getdents64` give it.
pub struct Entry {
    pub name: CString,
    pub ino: u64,
    pub kind: u8,
}

/// One directory's entries, held a page at a time: `.` and `..` at indexes
/// 0 and 1, then the listing's entries in order.
pub struct Listing {
    pub path: String,
    /// Index of `window[0]`.
    base: usize,
    window: Vec<Entry>,
    next: Option<DirCursor>,
}

impl Listing {
    /// A listing of SFS directory `path`, at its start.
    pub fn open(path: &str) -> SfsResult<Listing> {
        with_client(|c| {
            let this = c.stat(path)?;
            if !this.is_dir() {
                return Err(err(libc::ENOTDIR, format!("{path}: not a directory")));
            }
            let parent = split_parent(path).map_or(Ok(this.clone()), |(p, _)| c.stat(p))?;
            Ok(Listing {
                path: path.to_string(),
                base: 0,
                window: vec![
                    Entry {
                        name: c".".into(),
                        ino: ino(&this),
                        kind: libc::DT_DIR,
                    },
                    Entry {
                        name: c"..".into(),
                        ino: ino(&parent),
                        kind: libc::DT_DIR,
                    },
                ],
                next: Some(DirCursor::start()),
            })
        })
    }

    /// The entry at `index` (`None` past the end), fetching pages as
    /// needed; an index before the page held lists again from the start.
    pub fn entry(&mut self, index: usize) -> SfsResult<Option<&Entry>> {
        if index < self.base {
            *self = Listing::open(&self.path)?;
        }
        while index >= self.base + self.window.len() {
            let Some(cursor) = self.next.take() else {
                return Ok(None);
            };
            let (entries, next) = with_client(|c| c.read_dir_page(&self.path, &cursor))?;
            self.base += self.window.len();
            self.window = entries
                .into_iter()
                .filter_map(|e| {
                    Some(Entry {
                        name: CString::new(sfs_global::path::unescape(&e.name).into_owned())
                            .ok()?,
                        ino: ino(&e.metadata),
                        kind: d_type(e.metadata.kind()),
                    })
                })
                .collect();
            self.next = next;
        }
        Ok(self.window.get(index - self.base))
    }
}

fn d_type(kind: FileKind) -> u8 {
    match kind {
        FileKind::File => libc::DT_REG,
        FileKind::Directory => libc::DT_DIR,
        FileKind::Symlink => libc::DT_LNK,
        FileKind::Fifo => libc::DT_FIFO,
        FileKind::Socket => libc::DT_SOCK,
        FileKind::CharDevice => libc::DT_CHR,
        FileKind::BlockDevice => libc::DT_BLK,
    }
}

fn ino(md: &Metadata) -> u64 {
    md.id.lo() ^ md.id.hi()
}
