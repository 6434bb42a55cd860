//! The chunk data path of open files: how a read or write becomes pieces on
//! the chunk servers and a size update or lookup on the metadata owner, as
//! a second `impl Client` block below the POSIX calls of `io.rs`.
//!
//! A write is split by chunk (`sfs_global::chunk::split`); every piece goes
//! to its chunk's owner and, at the same time, "size is at least my end" goes
//! to the metadata owner, which merges it. The write returns when both are
//! done, so a read after a completed write sees its data and size; a reader
//! running *during* a write may see the new size before the data (zeros).
//! `O_APPEND` first reserves its range atomically on the owner. A read asks
//! the owner for the size while it fetches the pieces in parallel; bytes no
//! chunk holds (holes) read as zeros.

use crate::calls::chunk_range;
use crate::files::OpenFile;
use crate::Client;
use futures::stream::{self, StreamExt, TryStreamExt};
use sfs_global::chunk::{split, ChunkPiece as Piece, MAX_FILE_SIZE};
use sfs_global::{Errno, FileId, Metadata, SfsError, SfsResult};
use sfs_rdma::ChunkRef;
use sfs_rpc::pb;
use std::sync::atomic::{AtomicBool, Ordering};

/// Chunk pieces of one call in flight at once (across all servers).
const PIECES_IN_FLIGHT: usize = 32;

impl Client {
    pub(crate) async fn reserve_append(&self, path: &str, id: FileId, len: u64) -> SfsResult<u64> {
        self.on_attributes(path, Some(id), |at| async move {
            self.owner(&at).await?.reserve_append(&at, id, len).await
        })
        .await
    }

    /// Places `buf` at `offset` on the chunk owners and (if `grow`) merges
    /// the new end into the size on the metadata owner, both at once.
    pub(crate) async fn write_data(
        &self,
        file: &OpenFile,
        offset: u64,
        buf: &[u8],
        grow: bool,
    ) -> SfsResult<usize> {
        if buf.is_empty() {
            return Ok(0);
        }
        file.written.store(true, Ordering::Relaxed);
        // Loaded first: every write reads it, only the first may clear it.
        if file.drop_privileges.load(Ordering::Relaxed)
            && file.drop_privileges.swap(false, Ordering::Relaxed)
        {
            let path = self.attributes_at(&file.path(), file.id);
            let req = pb::SetAttrRequest {
                path: path.clone(),
                drop_privileges: true,
                ..Default::default()
            };
            match self.set_attr(&path, req).await {
                // Write permission taken away since the open: the write
                // goes on (checked at open), the bits stay.
                Err(e) if e.errno == Errno::EACCES => {}
                other => {
                    other?;
                }
            }
        }
        let end = offset
            .checked_add(buf.len() as u64)
            .filter(|&e| e <= MAX_FILE_SIZE)
            .ok_or_else(|| {
                SfsError::new(
                    Errno::EFBIG,
                    format!("write past the largest file size at offset {offset}"),
                )
            })?;
        let chunk_size = self.config.chunk_size;
        let pieces: Vec<Piece> = split(offset, buf.len() as u64, chunk_size).collect();
        let grow_request =
            crate::calls::grow_of(&self.attributes_at(&file.path(), file.id), file.id, end);
        // A small piece whose chunk server also holds the file's entry can
        // carry the size update: then the write is one call to that server.
        let carrier = match grow {
            true => self.carrier(&grow_request.path, file, &pieces).await?,
            false => None,
        };
        let regrow = AtomicBool::new(false);
        let place = stream::iter(pieces.iter().enumerate())
            .map(|(i, piece)| {
                let grow_request = &grow_request;
                let regrow = &regrow;
                async move {
                    let server = self.distributor.chunk_server(file.id, piece.index);
                    let data =
                        &buf[piece.buf_offset as usize..(piece.buf_offset + piece.len) as usize];
                    let chunk = chunk_of(file.id, piece);
                    let handle = self.server(server).await?;
                    if carrier == Some(i) {
                        let carried = handle
                            .rpc
                            .write_chunk(pb::WriteChunkRequest {
                                range: Some(chunk_range(&chunk)),
                                data: data.to_vec(),
                                grow: Some(grow_request.clone()),
                            })
                            .await;
                        return match carried {
                            // The bytes are placed; the size is the shared
                            // entry's (linked by another client since).
                            Err(e) if e.errno == Errno::EREMCHG => {
                                regrow.store(true, Ordering::Relaxed);
                                Ok(())
                            }
                            other => other.map(|_| ()),
                        };
                    }
                    handle.data.write_chunk(chunk, data).await
                }
            })
            .buffer_unordered(PIECES_IN_FLIGHT)
            .try_collect::<Vec<()>>();
        // Otherwise the size update travels with the data instead of after
        // it: one round trip less per write. If placing the data fails the
        // size may still have grown; the range then reads as a hole (zeros)
        // and the caller gets the error (docs/semantics.md).
        let grow_size = async {
            if !grow || carrier.is_some() {
                return Ok(());
            }
            self.owner(&grow_request.path)
                .await?
                .rpc
                .grow_size(grow_request.clone())
                .await
                .map(|_| ())
        };
        let (placed, grown) = futures::join!(place, grow_size);
        let redirected =
            regrow.load(Ordering::Relaxed) || matches!(&grown, Err(e) if e.errno == Errno::EREMCHG);
        let grown = match redirected {
            // Linked by another client since: the size is the shared
            // entry's (the data is placed either way).
            true => {
                self.remember_shared(file.id);
                self.on_attributes(&file.path(), Some(file.id), |at| {
                    let request = pb::GrowSizeRequest {
                        path: at.clone(),
                        ..grow_request.clone()
                    };
                    async move { self.owner(&at).await?.rpc.grow_size(request).await }
                })
                .await
                .map(|_| ())
            }
            false => grown,
        };
        // A definite answer about the file (renamed away, replaced) matters
        // more than a transient failure placing data.
        match (placed, grown) {
            (_, Err(e)) if matches!(e.errno, Errno::ESTALE | Errno::ENOENT) => return Err(e),
            (Err(e), _) | (_, Err(e)) => return Err(e),
            _ => {}
        }
        file.size_hint.fetch_max(end, Ordering::Relaxed);
        Ok(buf.len())
    }

    /// Reads up to `buf.len()` bytes at `offset`, short at the end of file.
    ///
    /// The size lookup and the chunk reads go out together (one round trip,
    /// not two); bytes fetched past the end of file are not reported.
    pub(crate) async fn read_data(
        &self,
        file: &OpenFile,
        offset: u64,
        buf: &mut [u8],
    ) -> SfsResult<usize> {
        if buf.is_empty() {
            return Ok(0);
        }
        let want = (buf.len() as u64).min(MAX_FILE_SIZE.saturating_sub(offset));
        if want == 0 {
            return Ok(0);
        }
        // First round, together with the size lookup: up to the size last
        // seen (at least one byte), so a large buffer on a small file asks
        // for no chunk that cannot exist, and the caller's bytes past the
        // end of the file are left as they were (CPython's `readinto`
        // relies on it). A file that grew since costs a second round.
        let hint = file.size_hint.load(Ordering::Relaxed).max(offset + 1);
        let first_end = hint;
        let first_len = first_end.min(offset + want) - offset;
        let (head, tail) = buf[..want as usize].split_at_mut(first_len as usize);
        let (size, fetched) = self.first_round(file, offset, head).await;
        let size = size?.size;
        file.size_hint.store(size, Ordering::Relaxed);
        if offset >= size {
            return Ok(0);
        }
        let end = size.min(offset + want);
        // Only pieces holding bytes below the size count: a server that
        // holds nothing this read returns cannot fail it.
        if let Some(e) = first_error(fetched, end) {
            return Err(e);
        }
        if end > first_end {
            // The file grew beyond the size last seen: fetch the rest.
            let rest = &mut tail[..(end - first_end) as usize];
            if let Some(e) = first_error(self.fetch(file, first_end, rest).await, end) {
                return Err(e);
            }
        }
        Ok((end - offset) as usize)
    }

    /// The piece (an index into `pieces`) that can carry a call to the
    /// file's metadata server: small, held by that same server, and the
    /// lean RPC in use with it; `None` when none can.
    /// `at`: where the file's attributes live ([`Client::attributes_at`]).
    async fn carrier(
        &self,
        at: &str,
        file: &OpenFile,
        pieces: &[Piece],
    ) -> SfsResult<Option<usize>> {
        let owner = self.distributor.metadata_server(at);
        let limit = self.server(owner).await?.inline_limit;
        Ok(pieces.iter().position(|p| {
            p.len <= limit && self.distributor.chunk_server(file.id, p.index) == owner
        }))
    }

    /// The first round of a read: the file's current entry and the pieces
    /// of `buf` at `offset`, all at once. When the first piece's server
    /// also holds the entry (and takes small pieces over the lean RPC), the
    /// entry comes with that piece: one call instead of two.
    async fn first_round(
        &self,
        file: &OpenFile,
        offset: u64,
        buf: &mut [u8],
    ) -> (SfsResult<Metadata>, Vec<(u64, SfsResult<()>)>) {
        let path = self.attributes_at(&file.path(), file.id);
        let first = split(offset, buf.len() as u64, self.config.chunk_size).next();
        let carrier = match first {
            Some(piece) => {
                self.carrier(&path, file, std::slice::from_ref(&piece))
                    .await
            }
            None => Ok(None),
        };
        let (Ok(Some(_)), Some(piece)) = (carrier, first) else {
            return futures::join!(
                self.lookup_open(&path, file.id),
                self.fetch(file, offset, buf)
            );
        };
        let (head, rest) = buf.split_at_mut(piece.len as usize);
        let chunk = chunk_of(file.id, &piece);
        let combined = async {
            let handle = self.owner(&path).await?;
            let answer = handle
                .rpc
                .read_chunk(pb::ReadChunkRequest {
                    range: Some(chunk_range(&chunk)),
                    stat: Some(crate::calls::stat_of(&path, Some(file.id))),
                })
                .await?;
            let mut entry = answer
                .entry
                .as_ref()
                .map(Metadata::from)
                .ok_or_else(|| SfsError::io("server answered a read without the entry"))?;
            if entry.is_name_of_shared() {
                // Linked by another client since the open.
                entry = self.shared_entry(&entry, 0, None).await?;
            }
            let n = answer.data.len().min(head.len());
            head[..n].copy_from_slice(&answer.data[..n]);
            head[n..].fill(0);
            Ok::<_, SfsError>(entry)
        };
        let (entry, mut fetched) =
            futures::join!(combined, self.fetch(file, offset + piece.len, rest));
        let piece_result = entry.as_ref().map(|_| ()).map_err(Clone::clone);
        fetched.push((offset, piece_result));
        (entry, fetched)
    }

    /// Reads `buf.len()` bytes at `offset` from the chunk owners, in parallel,
    /// zero-filling holes; returns each piece's file range and outcome.
    async fn fetch(
        &self,
        file: &OpenFile,
        offset: u64,
        buf: &mut [u8],
    ) -> Vec<(u64, SfsResult<()>)> {
        let mut rest = buf;
        let mut jobs = Vec::new();
        for piece in split(offset, rest.len() as u64, self.config.chunk_size) {
            let (head, tail) = std::mem::take(&mut rest).split_at_mut(piece.len as usize);
            rest = tail;
            jobs.push((piece, head));
        }
        stream::iter(jobs)
            .map(|(piece, out)| async move {
                let server = self.distributor.chunk_server(file.id, piece.index);
                let chunk = ChunkRef {
                    id: file.id,
                    index: piece.index,
                    offset: piece.offset_in_chunk,
                    len: piece.len,
                };
                let result = async {
                    let held = self
                        .server(server)
                        .await?
                        .data
                        .read_chunk(chunk, out)
                        .await?;
                    out[held..].fill(0); // a hole, or a chunk shorter than the file
                    Ok(())
                }
                .await;
                (offset + piece.buf_offset, result)
            })
            .buffer_unordered(PIECES_IN_FLIGHT)
            .collect()
            .await
    }
}

/// The chunk range of a piece of file `id`.
fn chunk_of(id: FileId, piece: &Piece) -> ChunkRef {
    ChunkRef {
        id,
        index: piece.index,
        offset: piece.offset_in_chunk,
        len: piece.len,
    }
}

/// The first failure among fetched pieces that start below `end`.
fn first_error(pieces: Vec<(u64, SfsResult<()>)>, end: u64) -> Option<SfsError> {
    pieces
        .into_iter()
        .filter(|(start, _)| *start < end)
        .find_map(|(_, r)| r.err())
}
