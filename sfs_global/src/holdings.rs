//! What a server holds of a file, as `sfs fsck` compares it with the
//! namespace and the object back end (the server reports it, the client
//! collects it).

use crate::metadata::FileId;

/// What one server holds of one file.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct Held {
    pub id: FileId,
    /// Chunks of it in the server's store.
    pub chunks: u64,
    /// Whether the server records that the back end holds its object.
    pub in_backend: bool,
}
