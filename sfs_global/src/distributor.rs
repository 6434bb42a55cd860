//! Which server owns what: a path's metadata entry and a file's data chunks.
//!
//! The placement must be identical in every process of a job, on every build
//! and machine, so it uses XXH3 (a fixed, specified hash) and never
//! `std::collections::hash_map::DefaultHasher` (whose output may change
//! between Rust releases). Servers are numbered by their hostfile line.

use crate::metadata::FileId;
use xxhash_rust::xxh3::xxh3_64_with_seed;

const PATH_SEED: u64 = 0x5346_535f_7061_7468; // "SFS_path"
const CHUNK_SEED: u64 = 0x5346_535f_6368_756e; // "SFS_chun"

/// Maps paths and chunks onto `servers` servers.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct Distributor {
    servers: u32,
}

impl Distributor {
    /// A distributor over `servers` servers (at least one).
    pub fn new(servers: usize) -> Self {
        assert!(servers > 0, "a distributor needs at least one server");
        Distributor {
            servers: u32::try_from(servers).expect("fewer than 2^32 servers"),
        }
    }

    pub fn servers(&self) -> usize {
        self.servers as usize
    }

    /// Server holding the metadata entry of a normalised path.
    pub fn metadata_server(&self, path: &str) -> usize {
        (xxh3_64_with_seed(path.as_bytes(), PATH_SEED) % u64::from(self.servers)) as usize
    }

    /// Server holding chunk `index` of file `id`.
    pub fn chunk_server(&self, id: FileId, index: u64) -> usize {
        let mut key = [0u8; 24];
        key[..16].copy_from_slice(&id.0.to_le_bytes());
        key[16..].copy_from_slice(&index.to_le_bytes());
        (xxh3_64_with_seed(&key, CHUNK_SEED) % u64::from(self.servers)) as usize
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    /// Pinned values: if these change, files written by an older build would
    /// be looked up on the wrong servers.
    #[test]
    fn placement_is_stable_across_builds() {
        let d = Distributor::new(7);
        let got: Vec<usize> = ["/", "/a", "/a/b", "/data/file.0001"]
            .iter()
            .map(|p| d.metadata_server(p))
            .collect();
        let chunks: Vec<usize> = (0..6)
            .map(|i| d.chunk_server(FileId(0x0123_4567_89ab_cdef_0011_2233_4455_6677), i))
            .collect();
        assert_eq!((got, chunks), (vec![6, 4, 0, 5], vec![0, 1, 3, 0, 3, 3]));
    }

    #[test]
    fn spreads_chunks_and_paths_evenly() {
        let d = Distributor::new(4);
        let mut counts = [0usize; 4];
        for i in 0..40_000u64 {
            counts[d.chunk_server(FileId(u128::from(i / 100)), i % 100)] += 1;
        }
        for c in counts {
            assert!((9_000..11_000).contains(&c), "{counts:?}");
        }
        let mut counts = [0usize; 4];
        for i in 0..40_000 {
            counts[d.metadata_server(&format!("/dir/file.{i}"))] += 1;
        }
        for c in counts {
            assert!((9_000..11_000).contains(&c), "{counts:?}");
        }
    }

    #[test]
    fn one_server_owns_everything() {
        let d = Distributor::new(1);
        assert_eq!(d.metadata_server("/x"), 0);
        assert_eq!(d.chunk_server(FileId(5), 9), 0);
    }
}
