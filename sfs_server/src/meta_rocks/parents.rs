//! Directory entries read for permission checks, kept in memory.
//!
//! A create or removal whose parent this server owns reads the parent's
//! entry to check write and search permission: one more RocksDB read per
//! call, most of what a create gained in server CPU with the permission
//! checks (docs/performance.md, "The parent check from memory"). The parents
//! of a job's files are few and change seldom, and this server is the only
//! writer of its entries (the run directory's lock), so a copy stays exact
//! when every write of a key drops it: [`ParentCache::forget`] runs after
//! each write, before the write returns. A read that missed keeps what it
//! read only if no write of a key of its shard ran meanwhile (the shard's
//! count of writes), so a value read before a write cannot be kept after
//! it.

use sfs_global::Metadata;
use std::collections::HashMap;
use std::sync::{Mutex, MutexGuard};
use xxhash_rust::xxh3::xxh3_64;

/// Shards of the cache: writes of keys in different shards do not wait
/// on each other, nor spoil each other's reads.
const SHARDS: usize = 64;

/// Entries a shard keeps; a full shard starts over (4,096 in all: the
/// directories of a job's working set, not a namespace).
const PER_SHARD: usize = 64;

#[derive(Default)]
struct Shard {
    /// Writes of this shard's keys so far.
    writes: u64,
    entries: HashMap<Vec<u8>, Metadata>,
}

/// Directory entries by key, each as [`Metadata::without_contents`] gives
/// it.
pub(super) struct ParentCache {
    shards: Box<[Mutex<Shard>]>,
}

/// What a lookup that missed must hand back to [`ParentCache::keep`].
pub(super) struct Miss {
    shard: usize,
    writes: u64,
}

impl ParentCache {
    pub(super) fn new() -> Self {
        ParentCache {
            shards: (0..SHARDS).map(|_| Mutex::default()).collect(),
        }
    }

    fn shard(&self, key: &[u8]) -> (usize, MutexGuard<'_, Shard>) {
        let index = (xxh3_64(key) % SHARDS as u64) as usize;
        // A panic elsewhere cannot leave a shard half-changed in a way that
        // matters: at worst an entry is missing.
        let guard = self.shards[index]
            .lock()
            .unwrap_or_else(|poisoned| poisoned.into_inner());
        (index, guard)
    }

    /// The kept entry at `key`, or what [`ParentCache::keep`] needs after
    /// the caller read it from the store.
    pub(super) fn lookup(&self, key: &[u8]) -> Result<Metadata, Miss> {
        let (shard, guard) = self.shard(key);
        match guard.entries.get(key) {
            Some(md) => Ok(md.clone()),
            None => Err(Miss {
                shard,
                writes: guard.writes,
            }),
        }
    }

    /// Keeps `md`, read from the store after `miss`, unless a key of its
    /// shard was written since (the value may predate that write).
    pub(super) fn keep(&self, key: &[u8], miss: Miss, md: &Metadata) {
        let mut shard = self.shards[miss.shard]
            .lock()
            .unwrap_or_else(|poisoned| poisoned.into_inner());
        if shard.writes != miss.writes {
            return;
        }
        if shard.entries.len() >= PER_SHARD {
            shard.entries.clear();
        }
        shard.entries.insert(key.to_vec(), md.clone());
    }

    /// `key` was written (put, merged or deleted): its copy goes, and reads
    /// under way in its shard keep nothing.
    pub(super) fn forget(&self, key: &[u8]) {
        let (_, mut shard) = self.shard(key);
        shard.writes += 1;
        if !shard.entries.is_empty() {
            shard.entries.remove(key);
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use sfs_global::{FileId, FileKind};

    fn dir(mode: u32) -> Metadata {
        Metadata::new(FileKind::Directory, mode, FileId(1), 1)
    }

    #[test]
    fn a_value_read_before_a_write_is_not_kept() {
        let cache = ParentCache::new();
        let Err(miss) = cache.lookup(b"k") else {
            panic!("an empty cache has nothing")
        };
        // The store is written (and the copy forgotten) between the read
        // of the old value and its keeping.
        cache.forget(b"k");
        cache.keep(b"k", miss, &dir(0o755));
        assert!(cache.lookup(b"k").is_err(), "the old value was kept");
        let Err(miss) = cache.lookup(b"k") else {
            unreachable!()
        };
        cache.keep(b"k", miss, &dir(0o700));
        assert_eq!(
            cache.lookup(b"k").ok().map(|md| md.mode & 0o777),
            Some(0o700)
        );
        cache.forget(b"k");
        assert!(cache.lookup(b"k").is_err(), "a write drops the copy");
    }

    #[test]
    fn a_shard_keeps_a_bounded_number() {
        let cache = ParentCache::new();
        for i in 0..(SHARDS * PER_SHARD * 4) {
            let key = i.to_string().into_bytes();
            if let Err(miss) = cache.lookup(&key) {
                cache.keep(&key, miss, &dir(0o755));
            }
        }
        let kept: usize = cache
            .shards
            .iter()
            .map(|s| s.lock().unwrap().entries.len())
            .sum();
        assert!(kept > 0 && kept <= SHARDS * PER_SHARD, "{kept}");
    }
}
