//! Directory listings, a page at a time.
//!
//! A directory's entries are spread over all servers (each entry lives with
//! its path's owner). A listing asks the servers one after another for
//! their children of the directory, one page (`readdir_page_size` entries)
//! per call, resuming after the last name it got ([`DirCursor`]): a
//! directory of millions of entries never sits in one message or in the
//! client's memory at once. [`ReadDir`] iterates a whole listing;
//! [`Client::read_dir_page`] gives one page and the cursor of the next, for
//! callers that keep their own position (the shim's `DIR*` streams). `.` and
//! `..` are not listed (the shim adds them).

use crate::Client;
use sfs_global::{Metadata, SfsError, SfsResult};
use sfs_rpc::pb;
use std::collections::VecDeque;

/// One entry of a directory listing, with its full metadata.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct DirEntry {
    pub name: String,
    pub metadata: Metadata,
}

/// Where a listing goes on: the server being asked and the last name it
/// gave ("" at its start).
#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub struct DirCursor {
    server: usize,
    after: String,
}

impl DirCursor {
    /// The start of a listing.
    pub fn start() -> Self {
        Self::default()
    }
}

/// An open directory listing; iterate it to get the entries.
pub struct ReadDir<'a> {
    client: &'a Client,
    dir: String,
    cursor: Option<DirCursor>,
    buffered: VecDeque<DirEntry>,
}

impl Client {
    /// `opendir(3)`: ENOTDIR unless `path` (after symlinks) is a directory.
    pub fn read_dir(&self, path: &str) -> SfsResult<ReadDir<'_>> {
        self.through_dirs(path, |path| {
            // Listing needs read permission on the directory (its owner checks).
            let (dir, md) =
                self.block_on(self.resolve_access(&path, sfs_global::access::MAY_READ))?;
            if !md.is_dir() {
                return Err(SfsError::not_dir(&path));
            }
            Ok(ReadDir {
                client: self,
                dir,
                cursor: Some(DirCursor::start()),
                buffered: VecDeque::new(),
            })
        })
    }

    /// The next entries of the listing of directory `dir` (a normalised
    /// path, symlinks already resolved) from `cursor`: at least one entry
    /// unless the listing is over, and the cursor after them (`None` at the
    /// end).
    pub fn read_dir_page(
        &self,
        dir: &str,
        cursor: &DirCursor,
    ) -> SfsResult<(Vec<DirEntry>, Option<DirCursor>)> {
        let mut cursor = cursor.clone();
        while cursor.server < self.server_count() {
            let request = pb::ReaddirPageRequest {
                dir: dir.to_string(),
                page_size: self.config.readdir_page_size,
                after: cursor.after.clone(),
            };
            let index = cursor.server;
            let page = self
                .block_on(async { self.server(index).await?.rpc.readdir_paged(request).await })?;
            match page.entries.last() {
                Some(last) if page.more => cursor.after = last.name.clone(),
                _ => {
                    cursor.server += 1;
                    cursor.after.clear();
                }
            }
            let mut entries = Vec::with_capacity(page.entries.len());
            for e in page.entries {
                if dir == "/" && crate::hidden_in_root(&e.name) {
                    continue;
                }
                let metadata = e
                    .entry
                    .as_ref()
                    .map(Metadata::from)
                    .ok_or_else(|| SfsError::io("directory entry without metadata"))?;
                entries.push(DirEntry {
                    name: e.name,
                    metadata,
                });
            }
            self.resolve_names_of_shared(&mut entries)?;
            if !entries.is_empty() {
                let next = (cursor.server < self.server_count()).then_some(cursor);
                return Ok((entries, next));
            }
        }
        Ok((Vec::new(), None))
    }
}

impl Client {
    /// Gives the names of hard-linked files in `entries` their files'
    /// attributes (crate::links), asking for them all at once.
    fn resolve_names_of_shared(&self, entries: &mut [DirEntry]) -> SfsResult<()> {
        if !entries.iter().any(|e| e.metadata.is_name_of_shared()) {
            return Ok(());
        }
        self.block_on(async {
            let asked = entries
                .iter_mut()
                .filter(|e| e.metadata.is_name_of_shared())
                .map(|e| async move {
                    e.metadata = self.shared_entry(&e.metadata, 0, None).await?;
                    Ok::<_, SfsError>(())
                });
            futures::future::try_join_all(asked).await.map(|_| ())
        })
    }
}

impl Iterator for ReadDir<'_> {
    type Item = SfsResult<DirEntry>;

    fn next(&mut self) -> Option<Self::Item> {
        if self.buffered.is_empty() {
            let cursor = self.cursor.take()?;
            match self.client.read_dir_page(&self.dir, &cursor) {
                Ok((entries, next)) => {
                    self.buffered.extend(entries);
                    self.cursor = next;
                }
                Err(e) => return Some(Err(e)),
            }
        }
        self.buffered.pop_front().map(Ok)
    }
}
