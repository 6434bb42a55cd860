//! An in-memory [`ChunkHandler`]: what the transport tests, the conformance
//! suite and transport benchmarks serve instead of a real chunk store.

use crate::{ChunkHandler, ChunkRef};
use sfs_global::{FileId, SfsError, SfsResult};
use std::collections::HashMap;
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::Mutex;

/// Chunks kept in a map; holes and absent chunks read short, as the real
/// store's do.
#[derive(Default)]
pub struct MemoryChunks {
    chunks: Mutex<HashMap<(FileId, u64), Vec<u8>>>,
    /// While set, every write fails with ENOSPC.
    pub full: AtomicBool,
}

impl ChunkHandler for MemoryChunks {
    fn write_chunk(&self, c: &ChunkRef, data: &[u8]) -> SfsResult<()> {
        if self.full.load(Ordering::SeqCst) {
            return Err(SfsError::no_space("chunk store full"));
        }
        let mut chunks = self.chunks.lock().expect("chunk map lock");
        let chunk = chunks.entry((c.id, c.index)).or_default();
        let end = (c.offset + c.len) as usize;
        if chunk.len() < end {
            chunk.resize(end, 0);
        }
        chunk[c.offset as usize..end].copy_from_slice(data);
        Ok(())
    }

    fn read_chunk(&self, c: &ChunkRef, buf: &mut [u8]) -> SfsResult<usize> {
        let chunks = self.chunks.lock().expect("chunk map lock");
        let Some(chunk) = chunks.get(&(c.id, c.index)) else {
            return Ok(0);
        };
        let start = (c.offset as usize).min(chunk.len());
        let n = (chunk.len() - start).min(buf.len());
        buf[..n].copy_from_slice(&chunk[start..start + n]);
        Ok(n)
    }
}
