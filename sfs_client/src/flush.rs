//! Flush: makes a file's data back-end-persistent, the third durability
//! level after "acknowledged" (a write returned) and "local-persistent"
//! (`fsync`: on the servers' local disks).
//!
//! Every server copies the chunks it holds of the file to the object back
//! end (the object is named by the file id; chunk `i` lands at byte
//! `i * chunk_size`) and persists them there; the client asks all servers
//! at once and sums their answers. Nothing is written back automatically:
//! data reaches the back end only through this call (`sfs flush`).

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
        let path = normalize(path)?;
        self.block_on(async {
            let (target, md) = self.resolve(&path).await?;
            if md.is_dir() {
                return Err(SfsError::is_dir(&path));
            }
            let request = pb::FileRequest {
                id_hi: md.id.hi(),
                id_lo: md.id.lo(),
            };
            let answers = self.on_all_servers(|h| h.rpc.flush_chunks(request)).await?;
            self.owner(&target)
                .await?
                .rpc
                .sync_metadata(pb::Empty {})
                .await?;
            Ok(answers
                .iter()
                .fold(FlushStats::default(), |total, answer| FlushStats {
                    chunks: total.chunks + answer.chunks,
                    bytes: total.bytes + answer.bytes,
                }))
        })
    }
}
