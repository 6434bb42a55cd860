//! Streamed directory listings.
//!
//! A directory's entries are spread over all servers (each entry lives with
//! its path's owner). [`ReadDir`] asks the servers one after another for
//! their children of the directory, one page (`readdir_page_size` entries)
//! per call, and hands out entries as they arrive: a directory of millions
//! of entries never sits in one message or in the client's memory at once. `.` and `..`
//! are not listed (the shim adds them).

use crate::Client;
use sfs_global::path::normalize;
use sfs_global::{Metadata, SfsError, SfsResult};
use sfs_rpc::pb;
use std::collections::VecDeque;

/// One entry of a directory listing, with its full metadata.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct DirEntry {
    pub name: String,
    pub metadata: Metadata,
}

/// An open directory listing; iterate it to get the entries.
pub struct ReadDir<'a> {
    client: &'a Client,
    dir: String,
    /// The server being listed, and the last name it gave ("" at its start).
    next_server: usize,
    after: String,
    buffered: VecDeque<DirEntry>,
}

impl Client {
    /// `opendir(3)`: ENOTDIR unless `path` (after symlinks) is a directory.
    pub fn read_dir(&self, path: &str) -> SfsResult<ReadDir<'_>> {
        let path = normalize(path)?;
        let (dir, md) = self.block_on(self.resolve(&path))?;
        if !md.is_dir() {
            return Err(SfsError::not_dir(&path));
        }
        Ok(ReadDir {
            client: self,
            dir,
            next_server: 0,
            after: String::new(),
            buffered: VecDeque::new(),
        })
    }
}

impl ReadDir<'_> {
    /// Fetches the next non-empty page; false at the end of the listing.
    fn fill(&mut self) -> SfsResult<bool> {
        let client = self.client;
        while self.next_server < client.server_count() {
            let request = pb::ReaddirPageRequest {
                dir: self.dir.clone(),
                page_size: client.config.readdir_page_size,
                after: self.after.clone(),
            };
            let index = self.next_server;
            let page = client
                .block_on(async { client.server(index).await?.rpc.readdir_paged(request).await })?;
            if page.more {
                if let Some(last) = page.entries.last() {
                    self.after = last.name.clone();
                }
            } else {
                self.next_server += 1;
                self.after.clear();
            }
            for e in page.entries {
                if self.dir == "/" && e.name.starts_with(crate::orphans::ORPHAN_PREFIX) {
                    continue; // a file unlinked while open (crate::orphans)
                }
                let metadata = e
                    .entry
                    .as_ref()
                    .map(Metadata::from)
                    .ok_or_else(|| SfsError::io("directory entry without metadata"))?;
                self.buffered.push_back(DirEntry {
                    name: e.name,
                    metadata,
                });
            }
            if !self.buffered.is_empty() {
                return Ok(true);
            }
        }
        Ok(false)
    }
}

impl Iterator for ReadDir<'_> {
    type Item = SfsResult<DirEntry>;

    fn next(&mut self) -> Option<Self::Item> {
        if self.buffered.is_empty() {
            match self.fill() {
                Ok(true) => {}
                Ok(false) => return None,
                Err(e) => {
                    self.next_server = usize::MAX;
                    return Some(Err(e));
                }
            }
        }
        self.buffered.pop_front().map(Ok)
    }
}
