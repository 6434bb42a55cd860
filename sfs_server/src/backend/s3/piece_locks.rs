//! One lock per piece being changed, so that read-modify-writes of a piece
//! by one back end never interleave (two disjoint writes into one piece
//! would otherwise each put back the piece as they read it, and one
//! write's bytes would be lost). Only pieces in use have an entry.

use sfs_global::FileId;
use std::collections::HashMap;
use std::sync::{Arc, Mutex};
use tokio::sync::OwnedMutexGuard;

type Key = (FileId, u64);

/// The locks of the pieces in use, by (object, piece index).
#[derive(Default)]
pub struct PieceLocks {
    held: Mutex<HashMap<Key, Arc<tokio::sync::Mutex<()>>>>,
}

/// Holds piece `key` locked until dropped.
pub struct PieceGuard<'a> {
    // Declared first so it is released before `_entry` looks at the count.
    _guard: OwnedMutexGuard<()>,
    _entry: Entry<'a>,
}

/// A use of one entry of the map; the last use removes it.
struct Entry<'a> {
    locks: &'a PieceLocks,
    key: Key,
    mutex: Arc<tokio::sync::Mutex<()>>,
}

impl Drop for Entry<'_> {
    fn drop(&mut self) {
        let mut held = self.locks.held.lock().unwrap_or_else(|e| e.into_inner());
        // The map's reference and ours: nobody else holds or waits for it.
        // Counted under the map's lock, where every new user clones it.
        if Arc::strong_count(&self.mutex) == 2 {
            held.remove(&self.key);
        }
    }
}

impl PieceLocks {
    /// Waits for and takes the lock of piece `index` of `id`. Dropping the
    /// future while it waits leaves the map clean.
    pub async fn lock(&self, id: FileId, index: u64) -> PieceGuard<'_> {
        let key = (id, index);
        let mutex = {
            let mut held = self.held.lock().unwrap_or_else(|e| e.into_inner());
            held.entry(key).or_default().clone()
        };
        let entry = Entry {
            locks: self,
            key,
            mutex,
        };
        let guard = entry.mutex.clone().lock_owned().await;
        PieceGuard {
            _guard: guard,
            _entry: entry,
        }
    }

    /// Pieces with an entry (tests: none once every guard is gone).
    #[cfg(test)]
    pub fn in_use(&self) -> usize {
        self.held.lock().unwrap_or_else(|e| e.into_inner()).len()
    }
}
