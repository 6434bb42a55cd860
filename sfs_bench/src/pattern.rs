//! The data every workload writes and the check that reads it back.
//!
//! Content is a function of the file offset: a 512-byte periodic base derived
//! from the run's seed, and at every 512-byte boundary a stamp derived from
//! the offset and the file's own seed. So data at the wrong offset, in the
//! wrong file, or missing (zeros, stale data) fails the check, while a writer
//! whose transfers all start at the same offset modulo 512 fills its buffer
//! once and only rewrites the stamps (2,048 words per MiB): generating the
//! data must not cost a noticeable share of a tmpfs baseline's time. The
//! stamps can also be computed ahead ([`Pattern::stamps`]) and only copied in
//! during the timed phase ([`Pattern::apply_stamps`]).

const SECTOR: u64 = 512;

fn mix(x: u64) -> u64 {
    let x = (x ^ (x >> 31)).wrapping_mul(0x9e37_79b9_7f4a_7c15);
    (x ^ (x >> 29)).wrapping_mul(0xbf58_476d_1ce4_e5b9) ^ (x >> 32)
}

/// Where the stamps of file bytes `[file_offset, +len)` go: (index in the
/// buffer, file offset of the 512-byte boundary).
fn stamp_positions(file_offset: u64, len: usize) -> impl Iterator<Item = (usize, u64)> {
    let end = file_offset + len as u64;
    (file_offset.div_ceil(SECTOR)..end.div_ceil(SECTOR)).map(move |k| {
        let sector = k * SECTOR;
        ((sector - file_offset) as usize, sector)
    })
}

/// The run's data pattern.
pub struct Pattern {
    /// The periodic base, long enough for the largest transfer plus one period.
    periodic: Vec<u8>,
}

impl Pattern {
    pub fn new(seed: u64, max_len: usize) -> Pattern {
        let len = (max_len + SECTOR as usize).div_ceil(8) * 8;
        let mut periodic = vec![0u8; len];
        for (i, word) in periodic.chunks_mut(8).enumerate() {
            let value = mix(seed ^ (i as u64 % (SECTOR / 8)));
            word.copy_from_slice(&value.to_le_bytes());
        }
        Pattern { periodic }
    }

    fn stamp_value(sector_offset: u64, file_seed: u64) -> [u8; 8] {
        mix(sector_offset.rotate_left(17) ^ file_seed ^ 0x5346_5342_454e_4348).to_le_bytes()
    }

    /// Fills `buf` with the content of file bytes `[file_offset, +buf.len())`.
    /// `file_offset` must be a multiple of 8.
    pub fn fill(&self, buf: &mut [u8], file_offset: u64, file_seed: u64) {
        debug_assert_eq!(file_offset % 8, 0);
        let start = (file_offset % SECTOR) as usize;
        buf.copy_from_slice(&self.periodic[start..start + buf.len()]);
        self.restamp(buf, file_offset, file_seed);
    }

    /// Rewrites only the stamps of a buffer that [`Pattern::fill`] filled for
    /// an offset congruent to `file_offset` modulo 512.
    pub fn restamp(&self, buf: &mut [u8], file_offset: u64, file_seed: u64) {
        for (at, sector) in stamp_positions(file_offset, buf.len()) {
            let n = (buf.len() - at).min(8);
            buf[at..at + n].copy_from_slice(&Self::stamp_value(sector, file_seed)[..n]);
        }
    }

    /// The stamps of file bytes `[file_offset, +len)` in order, for
    /// [`Pattern::apply_stamps`]: computing them is the part of the data that
    /// costs CPU, so a writer computes them before its timed phase.
    pub fn stamps(file_offset: u64, len: usize, file_seed: u64) -> impl Iterator<Item = [u8; 8]> {
        stamp_positions(file_offset, len)
            .map(move |(_, sector)| Self::stamp_value(sector, file_seed))
    }

    /// Copies `stamps` (from [`Pattern::stamps`] for `file_offset` and this
    /// length) into a buffer that [`Pattern::fill`] filled for an offset
    /// congruent to `file_offset` modulo 512: the result equals a fresh fill.
    pub fn apply_stamps(buf: &mut [u8], file_offset: u64, stamps: &[[u8; 8]]) {
        for ((at, _), stamp) in stamp_positions(file_offset, buf.len()).zip(stamps) {
            let n = (buf.len() - at).min(8);
            buf[at..at + n].copy_from_slice(&stamp[..n]);
        }
    }

    /// Checks `buf` against the content of `[file_offset, +buf.len())`;
    /// returns the file offset of the first wrong byte.
    pub fn check(&self, buf: &[u8], file_offset: u64, file_seed: u64) -> Result<(), u64> {
        let mut expect = vec![0u8; buf.len()];
        self.fill(&mut expect, file_offset, file_seed);
        match buf.iter().zip(&expect).position(|(a, b)| a != b) {
            None => Ok(()),
            Some(i) => Err(file_offset + i as u64),
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn fill_then_check_round_trips_and_detects_misplaced_data() {
        let pattern = Pattern::new(7, 1 << 20);
        let mut buf = vec![0u8; 47_008];
        pattern.fill(&mut buf, 47_008 * 3, 1);
        assert_eq!(pattern.check(&buf, 47_008 * 3, 1), Ok(()));
        assert!(pattern.check(&buf, 47_008 * 4, 1).is_err(), "wrong offset");
        assert!(pattern.check(&buf, 47_008 * 3, 2).is_err(), "wrong file");
        buf[100] ^= 1;
        assert_eq!(pattern.check(&buf, 47_008 * 3, 1), Err(47_008 * 3 + 100));
        assert!(pattern.check(&[0u8; 4096], 0, 1).is_err(), "zeros");
    }

    #[test]
    fn restamp_equals_fill_for_aligned_offsets() {
        let pattern = Pattern::new(3, 1 << 20);
        let mut reused = vec![0u8; 1 << 20];
        pattern.fill(&mut reused, 0, 9);
        pattern.restamp(&mut reused, 5 << 20, 9);
        let mut fresh = vec![0u8; 1 << 20];
        pattern.fill(&mut fresh, 5 << 20, 9);
        assert_eq!(reused, fresh);
        // The same transfer at another offset differs (stamps move with it).
        pattern.fill(&mut fresh, 6 << 20, 9);
        assert_ne!(reused, fresh);
    }

    #[test]
    fn stamps_computed_ahead_equal_fill() {
        let pattern = Pattern::new(8, 1 << 16);
        // IOR-hard's transfer size: stamps fall at a different place in every
        // residue modulo 512, and the last one may be cut by the buffer's end.
        for offset in [0u64, 47_008, 47_008 * 7, 3 * 47_008 * 2 + 416] {
            let mut base = vec![0u8; 47_008];
            pattern.fill(&mut base, offset % 512, 1);
            let stamps: Vec<[u8; 8]> = Pattern::stamps(offset, base.len(), 6).collect();
            Pattern::apply_stamps(&mut base, offset, &stamps);
            let mut fresh = vec![0u8; 47_008];
            pattern.fill(&mut fresh, offset, 6);
            assert_eq!(base, fresh, "offset {offset}");
        }
        let mut tail = vec![0u8; 3901];
        pattern.fill(&mut tail, 504, 2);
        let stamps: Vec<[u8; 8]> = Pattern::stamps(504, tail.len(), 2).collect();
        Pattern::apply_stamps(&mut tail, 504, &stamps);
        assert_eq!(pattern.check(&tail, 504, 2), Ok(()));
    }

    #[test]
    fn reading_with_other_boundaries_checks_the_same_bytes() {
        let pattern = Pattern::new(5, 1 << 16);
        let mut whole = vec![0u8; 3 * 4096];
        pattern.fill(&mut whole, 4096, 4);
        for (i, block) in whole.chunks(4096).enumerate() {
            assert_eq!(pattern.check(block, 4096 * (i as u64 + 1), 4), Ok(()));
        }
        let mut odd = vec![0u8; 3901];
        pattern.fill(&mut odd, 0, 11);
        assert_eq!(pattern.check(&odd, 0, 11), Ok(()));
    }
}
