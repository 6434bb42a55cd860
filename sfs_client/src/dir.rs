//! Streamed directory listings.
//!
//! A directory's entries are spread over all servers (each entry lives with
//! its path's owner). [`ReadDir`] asks the servers one after another for
//! their children of the directory, each answering with a stream of pages,
//! and hands out entries as they arrive: a directory of millions of entries
//! never sits in one message or in the client's memory at once. `.` and `..`
//! are not listed (the shim adds them).

use crate::servers::rpc_error;
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
    next_server: usize,
    stream: Option<(String, tonic::Streaming<pb::ReaddirPage>)>,
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
            stream: None,
            buffered: VecDeque::new(),
        })
    }
}

impl ReadDir<'_> {
    fn fill(&mut self) -> SfsResult<bool> {
        let client = self.client;
        loop {
            if let Some((name, stream)) = self.stream.as_mut() {
                match client
                    .block_on(stream.message())
                    .map_err(|s| rpc_error(name, s))?
                {
                    Some(page) => {
                        for e in page.entries {
                            let metadata =
                                e.entry.as_ref().map(Metadata::from).ok_or_else(|| {
                                    SfsError::io("directory entry without metadata")
                                })?;
                            self.buffered.push_back(DirEntry {
                                name: e.name,
                                metadata,
                            });
                        }
                        if !self.buffered.is_empty() {
                            return Ok(true);
                        }
                        continue;
                    }
                    None => self.stream = None,
                }
            }
            if self.next_server >= client.server_count() {
                return Ok(false);
            }
            let index = self.next_server;
            self.next_server += 1;
            let request = pb::ReaddirRequest {
                dir: self.dir.clone(),
                page_size: client.config.readdir_page_size,
            };
            let stream = client.block_on(async {
                let mut h = client.server(index).await?.clone();
                h.meta
                    .readdir(request)
                    .await
                    .map(|r| (h.name.clone(), r.into_inner()))
                    .map_err(|s| rpc_error(&h.name, s))
            })?;
            self.stream = Some(stream);
        }
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
                    self.stream = None;
                    return Some(Err(e));
                }
            }
        }
        self.buffered.pop_front().map(Ok)
    }
}
