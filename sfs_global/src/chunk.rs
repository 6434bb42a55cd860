//! Chunk arithmetic: how a byte range of a file maps onto fixed-size chunks.
//!
//! Data of a file is stored as chunks `(file id, index)` of `chunk_size`
//! bytes; chunk `i` covers file bytes `[i*chunk_size, (i+1)*chunk_size)`.
//! Every I/O is split here, in one place, and each piece goes to its owner.

/// One piece of an I/O that falls inside a single chunk.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct ChunkPiece {
    /// Chunk index within the file.
    pub index: u64,
    /// Offset of the piece inside the chunk.
    pub offset_in_chunk: u64,
    /// Length of the piece in bytes (never 0).
    pub len: u64,
    /// Offset of the piece inside the caller's buffer.
    pub buf_offset: u64,
}

/// Largest file offset SFS accepts (the end of any I/O): 2^63 - 1, as off_t.
pub const MAX_FILE_SIZE: u64 = i64::MAX as u64;

/// Splits the file range `[offset, offset + len)` into per-chunk pieces, in
/// file order. `chunk_size` must be a power of two (the config guarantees it).
pub fn split(offset: u64, len: u64, chunk_size: u64) -> impl Iterator<Item = ChunkPiece> {
    debug_assert!(chunk_size.is_power_of_two());
    let end = offset.saturating_add(len);
    let mut pos = offset;
    std::iter::from_fn(move || {
        if pos >= end {
            return None;
        }
        let index = pos / chunk_size;
        let offset_in_chunk = pos % chunk_size;
        let piece_len = (chunk_size - offset_in_chunk).min(end - pos);
        let piece = ChunkPiece {
            index,
            offset_in_chunk,
            len: piece_len,
            buf_offset: pos - offset,
        };
        pos += piece_len;
        Some(piece)
    })
}

/// Number of chunks needed to hold `size` bytes.
pub fn chunk_count(size: u64, chunk_size: u64) -> u64 {
    size.div_ceil(chunk_size)
}

/// For a file truncated to `size`: the first chunk index that must be removed
/// entirely, and, if the last kept chunk is partial, its index and new length.
pub fn truncation_point(size: u64, chunk_size: u64) -> (u64, Option<(u64, u64)>) {
    let first_removed = chunk_count(size, chunk_size);
    let rem = size % chunk_size;
    let partial = (rem != 0).then(|| (size / chunk_size, rem));
    (first_removed, partial)
}

#[cfg(test)]
mod tests {
    use super::*;
    use proptest::prelude::*;

    #[test]
    fn splits_across_boundaries() {
        let pieces: Vec<_> = split(100, 300, 128).collect();
        assert_eq!(
            pieces,
            vec![
                ChunkPiece {
                    index: 0,
                    offset_in_chunk: 100,
                    len: 28,
                    buf_offset: 0
                },
                ChunkPiece {
                    index: 1,
                    offset_in_chunk: 0,
                    len: 128,
                    buf_offset: 28
                },
                ChunkPiece {
                    index: 2,
                    offset_in_chunk: 0,
                    len: 128,
                    buf_offset: 156
                },
                ChunkPiece {
                    index: 3,
                    offset_in_chunk: 0,
                    len: 16,
                    buf_offset: 284
                },
            ]
        );
        assert_eq!(split(5, 0, 128).count(), 0);
        assert_eq!(truncation_point(0, 128), (0, None));
        assert_eq!(truncation_point(128, 128), (1, None));
        assert_eq!(truncation_point(130, 128), (2, Some((1, 2))));
    }

    proptest! {
        /// Pieces tile the range exactly: contiguous, in order, each inside
        /// one chunk, lengths summing to the range.
        #[test]
        fn pieces_tile_the_range(offset in 0u64..(1 << 40), len in 0u64..(1 << 24), shift in 12u32..24) {
            let cs = 1u64 << shift;
            let mut next_file = offset;
            let mut next_buf = 0;
            for p in split(offset, len, cs) {
                prop_assert!(p.len > 0);
                prop_assert!(p.offset_in_chunk + p.len <= cs);
                prop_assert_eq!(p.index * cs + p.offset_in_chunk, next_file);
                prop_assert_eq!(p.buf_offset, next_buf);
                next_file += p.len;
                next_buf += p.len;
            }
            prop_assert_eq!(next_buf, len);
        }

        #[test]
        fn truncation_keeps_exactly_size_bytes(size in 0u64..(1 << 40), shift in 12u32..24) {
            let cs = 1u64 << shift;
            let (first_removed, partial) = truncation_point(size, cs);
            let kept: u64 = match partial {
                Some((idx, len)) => { prop_assert_eq!(idx + 1, first_removed); idx * cs + len }
                None => first_removed * cs,
            };
            prop_assert_eq!(kept, size);
        }
    }
}
