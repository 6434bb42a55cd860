//! Flush: copies the chunks this server holds of one file to the object
//! back end, making them "back-end-persistent".
//!
//! The object is named by the file id and laid out like the file: chunk
//! `i` lands at byte `i * chunk_size`. Chunks are placed by hash, so every
//! server holds some chunks of a large file and each writes its own,
//! disjoint, ranges of the same object; the back end's contract allows such
//! concurrent writes. Today only an explicit request (`FlushChunks`, from
//! `sfs flush` or `Client::flush`) starts a flush: nothing is written back
//! automatically, evicted, or read back through.

use crate::backend::ObjectBackend;
use crate::chunk_store::ChunkStore;
use futures::stream::{self, StreamExt, TryStreamExt};
use sfs_global::{FileId, SfsResult};
use sfs_rdma::{ChunkHandler, ChunkRef};
use std::sync::Arc;

/// Chunk bytes read from the store and not yet written to the back end, at
/// most: bounds a flush's memory whatever the chunk size (at least one
/// chunk is always in flight).
const FLUSH_BYTES_IN_FLIGHT: u64 = 8 << 20;

/// The most chunks in flight, so small chunks do not flood the back end.
const FLUSH_MAX_CHUNKS_IN_FLIGHT: u64 = 8;

/// What one server wrote to the back end for one file.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub struct Flushed {
    pub chunks: u64,
    pub bytes: u64,
}

/// Writes every chunk of `id` held in `chunks` to `backend` at its offset
/// in the file, then persists the object. A file without chunks here
/// writes nothing and creates no object.
pub async fn flush_file(
    chunks: &Arc<ChunkStore>,
    backend: &dyn ObjectBackend,
    id: FileId,
) -> SfsResult<Flushed> {
    let indexes = {
        let chunks = chunks.clone();
        blocking(move || chunks.chunk_indexes(id)).await?
    };
    if indexes.is_empty() {
        return Ok(Flushed::default());
    }
    let chunk_size = chunks.chunk_size();
    let in_flight = (FLUSH_BYTES_IN_FLIGHT / chunk_size).clamp(1, FLUSH_MAX_CHUNKS_IN_FLIGHT);
    let flushed = stream::iter(indexes)
        .map(|index| flush_chunk(chunks, backend, id, index, chunk_size))
        .buffer_unordered(in_flight as usize)
        .try_fold(Flushed::default(), |mut total, bytes| async move {
            if bytes > 0 {
                total.chunks += 1;
                total.bytes += bytes;
            }
            Ok(total)
        })
        .await?;
    // Every chunk may have gone (an unlink or truncate raced the flush).
    if flushed.chunks > 0 {
        backend.persist(id).await?;
    }
    tracing::debug!(
        "flushed {} chunks ({} bytes) of {id} to the {} back end",
        flushed.chunks,
        flushed.bytes,
        backend.kind()
    );
    Ok(flushed)
}

/// Copies chunk `index` of `id` to the back end; returns the bytes written
/// (0 when the chunk is gone or empty).
async fn flush_chunk(
    chunks: &Arc<ChunkStore>,
    backend: &dyn ObjectBackend,
    id: FileId,
    index: u64,
    chunk_size: u64,
) -> SfsResult<u64> {
    let store = chunks.clone();
    let data = blocking(move || {
        let chunk = ChunkRef {
            id,
            index,
            offset: 0,
            len: chunk_size,
        };
        let mut data = vec![0u8; chunk_size as usize];
        let held = store.read_chunk(&chunk, &mut data)?;
        data.truncate(held);
        Ok(data)
    })
    .await?;
    if data.is_empty() {
        return Ok(0);
    }
    backend.write(id, index * chunk_size, &data).await?;
    Ok(data.len() as u64)
}

/// Runs chunk store work off the async threads.
async fn blocking<T: Send + 'static>(
    work: impl FnOnce() -> SfsResult<T> + Send + 'static,
) -> SfsResult<T> {
    crate::backend::off_the_runtime("flush", work).await
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::backend::dir::DirBackend;

    #[tokio::test]
    async fn chunks_land_at_their_file_offsets() {
        const CHUNK: u64 = 4096;
        let dir = tempfile::tempdir().unwrap();
        let chunks = Arc::new(ChunkStore::open(&dir.path().join("chunks"), CHUNK, 0).unwrap());
        let backend = DirBackend::open(&dir.path().join("backend")).unwrap();
        let id = FileId(0x42);
        let at = |index, len| ChunkRef {
            id,
            index,
            offset: 0,
            len,
        };
        // Chunks 0 and 2 of a file whose chunk 1 lives on another server;
        // chunk 2 is the short last one.
        chunks
            .write_chunk(&at(0, CHUNK), &vec![1u8; CHUNK as usize])
            .unwrap();
        chunks.write_chunk(&at(2, 100), &[3u8; 100]).unwrap();
        let flushed = flush_file(&chunks, &backend, id).await.unwrap();
        assert_eq!(
            flushed,
            Flushed {
                chunks: 2,
                bytes: CHUNK + 100
            }
        );
        let object = backend.read(id, 0, 3 * CHUNK as usize).await.unwrap();
        assert_eq!(object.len() as u64, 2 * CHUNK + 100);
        assert!(object[..CHUNK as usize].iter().all(|&b| b == 1));
        assert!(object[CHUNK as usize..2 * CHUNK as usize]
            .iter()
            .all(|&b| b == 0));
        assert!(object[2 * CHUNK as usize..].iter().all(|&b| b == 3));
        // No chunks here: nothing written, no object created.
        let other = FileId(0x43);
        assert_eq!(
            flush_file(&chunks, &backend, other).await.unwrap(),
            Flushed::default()
        );
        assert_eq!(backend.stat(other).await.unwrap(), None);
    }
}
