//! Flush: makes a file's data back-end-persistent, the third durability
//! level after "acknowledged" (a write returned) and "local-persistent"
//! (`fsync`: on the servers' local disks).
//!
//! Every server copies the chunks it holds of the file to the object back
//! end (the object is named by the file id; chunk `i` lands at byte
//! `i * chunk_size`) and persists them there; the client asks all servers
//! at once and sums their answers. Servers also write back on their own,
//! by the configured policy (docs/tiering.md); this call is the explicit
//! way and waits for the back end.
//!
//! A checkpoint ([`Client::checkpoint`]) does the same for every file and
//! also writes the namespace into the back end, so that a later job starts
//! with the same tree (`sfs start --restore`).

use crate::Client;
use sfs_global::path::normalize;
use sfs_global::{SfsError, SfsResult};
use sfs_rpc::pb;

/// What a flush wrote to the object back end, summed over all servers.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub struct FlushStats {
    /// Chunks written.
    pub chunks: u64,
    /// Bytes written (holes at the end of a chunk are not counted).
    pub bytes: u64,
}

impl Client {
    /// Writes the file at `path` (following symlinks, as `open` does) to
    /// the object back end and makes it persistent there, and makes its
    /// metadata durable as `fsync` does. When it returns, every write that
    /// completed before the call is in the back end. EISDIR for a directory.
    pub fn flush(&self, path: &str) -> SfsResult<FlushStats> {
        self.flush_chunks(path, None)
    }

    /// [`Client::flush`] of the bytes `[offset, offset + len)` only (`len`
    /// 0: to the end of the file, as `sync_file_range`): every chunk that
    /// holds one of them is written back whole (iocatcher's `obj_flush(id,
    /// offset, size)`). A range past the end flushes nothing.
    pub fn flush_range(&self, path: &str, offset: u64, len: u64) -> SfsResult<FlushStats> {
        let chunk = self.config.chunk_size;
        let first = offset / chunk;
        let chunks = if len == 0 {
            first..u64::MAX
        } else {
            let last = offset
                .checked_add(len - 1)
                .ok_or_else(|| SfsError::invalid("flush range: offset + length overflows"))?
                / chunk;
            first..last + 1
        };
        self.flush_chunks(path, Some(chunks))
    }

    fn flush_chunks(
        &self,
        path: &str,
        chunks: Option<std::ops::Range<u64>>,
    ) -> SfsResult<FlushStats> {
        let path = normalize(path)?;
        self.block_on(async {
            let (target, md) = self.resolve(&path).await?;
            if md.is_dir() {
                return Err(SfsError::is_dir(&path));
            }
            let answers = self
                .on_all_servers(|h| h.flush_chunks(md.id, chunks.clone()))
                .await?;
            self.owner(&target).await?.sync_metadata().await?;
            Ok(answers
                .into_iter()
                .fold(FlushStats::default(), |total, answer| FlushStats {
                    chunks: total.chunks + answer.chunks,
                    bytes: total.bytes + answer.bytes,
                }))
        })
    }
}

/// What a checkpoint wrote, summed over all servers.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub struct CheckpointStats {
    /// The committed checkpoint's sequence number.
    pub sequence: u32,
    pub servers: u32,
    pub entries: u64,
    pub files: u64,
    /// The sum of the files' sizes.
    pub file_bytes: u64,
    /// Dirty bytes the servers wrote back first.
    pub written_back_bytes: u64,
    /// Bytes of the namespace dumps.
    pub dump_bytes: u64,
}

impl Client {
    /// Writes every dirty file on every server to the object back end and
    /// then the whole namespace beside it, and commits that as the back
    /// end's checkpoint (docs/tiering.md). When it returns, a server
    /// started with `restore` on a fresh rootdir — any number of them —
    /// sees every entry that existed when the call started, and every byte
    /// written before it. Writes that race the call may or may not be in
    /// it. On failure nothing is committed: the previous checkpoint stays.
    pub fn checkpoint(&self) -> SfsResult<CheckpointStats> {
        self.block_on(async {
            let mut attempt = 0;
            loop {
                attempt += 1;
                // A fresh number names this checkpoint's dumps, so they never
                // overwrite the committed checkpoint's (0 is reserved).
                let mut bytes = [0u8; 4];
                sfs_global::secret::random_bytes(&mut bytes)
                    .map_err(|e| SfsError::io(format!("checkpoint: no random number: {e}")))?;
                let sequence = u32::from_le_bytes(bytes).max(1);
                match self.checkpoint_as(sequence).await {
                    Err(e) if e.errno == sfs_global::Errno::EEXIST && attempt < 3 => continue,
                    other => return other,
                }
            }
        })
    }

    async fn checkpoint_as(&self, sequence: u32) -> SfsResult<CheckpointStats> {
        let dumps = self
            .on_all_servers(|h| h.rpc.checkpoint(pb::CheckpointRequest { sequence }))
            .await?;
        let mut stats = CheckpointStats {
            sequence,
            servers: dumps.len() as u32,
            ..CheckpointStats::default()
        };
        for d in &dumps {
            stats.entries += d.entries;
            stats.files += d.files;
            stats.file_bytes += d.file_bytes;
            stats.written_back_bytes += d.written_back_bytes;
            stats.dump_bytes += d.dump_bytes;
        }
        self.server(0)
            .await?
            .rpc
            .commit_checkpoint(pb::CommitCheckpointRequest {
                sequence,
                servers: stats.servers,
                entries: stats.entries,
                files: stats.files,
                file_bytes: stats.file_bytes,
            })
            .await?;
        Ok(stats)
    }
}
