//! Buffers and write data prepared before a phase's barrier, so that the
//! timed phase makes the file-system calls and little else — what `fio`
//! does, which the local baselines are checked against (see `fio.rs`).
//!
//! Two things fio does that a naive loop does not: its buffers are page
//! aligned (a `Vec` of 1 MiB comes from glibc's `mmap` path 16 bytes past a
//! page boundary, so every kernel copy to or from the page cache runs
//! misaligned), and they are touched before the clock starts (no page
//! faults in the first transfers). And the data of every write is ready but
//! for its per-write stamps, which are computed here and only copied in by
//! the timed loop (one 8-byte copy per 512 bytes, the same kind of work as
//! fio's default `scramble_buffers`, which stores the offset into every
//! 512-byte block of every write).

use crate::pattern::Pattern;
use std::ops::Range;

/// Alignment of every I/O buffer: a page, as fio aligns its buffers.
const ALIGN: usize = 4096;

/// A page-aligned buffer whose pages are all mapped.
#[derive(Default)]
pub struct AlignedBuf {
    storage: Vec<u8>,
    start: usize,
    len: usize,
}

impl AlignedBuf {
    pub fn new(len: usize) -> AlignedBuf {
        // Not zeros: a zeroed allocation would come from calloc and map its
        // pages at the first store, inside the timed phase.
        let storage = vec![0xa5u8; len + ALIGN];
        let start = storage.as_ptr().align_offset(ALIGN);
        AlignedBuf {
            storage,
            start,
            len,
        }
    }

    pub fn as_mut_slice(&mut self) -> &mut [u8] {
        &mut self.storage[self.start..self.start + self.len]
    }
}

/// One write a phase will make.
#[derive(Clone, Copy, Debug)]
pub struct PlannedWrite {
    pub offset: u64,
    pub len: usize,
    /// The seed of the file written (see [`Pattern`]).
    pub file_seed: u64,
}

/// The data of a phase's writes, in the order they are made.
///
/// Writes that start at the same offset modulo 512 and have the same length
/// differ only in their stamps, so one filled, page-aligned buffer serves
/// all of them (IOR-easy: one; IOR-hard's 47,008-byte strides: 16), and the
/// stamps of all writes are computed up front: 8 bytes per 512 written,
/// 8 MiB for a process that writes 512 MiB.
#[derive(Default)]
pub struct StagedWrites {
    /// (offset modulo 512, length, buffer filled for them).
    bases: Vec<(u64, usize, AlignedBuf)>,
    writes: Vec<StagedWrite>,
    stamps: Vec<[u8; 8]>,
}

struct StagedWrite {
    offset: u64,
    base: usize,
    stamps: Range<usize>,
}

impl StagedWrites {
    /// Prepares `planned` with the run's pattern seed.
    pub fn new(seed: u64, planned: &[PlannedWrite]) -> StagedWrites {
        let max_len = planned.iter().map(|w| w.len).max().unwrap_or(0);
        let pattern = Pattern::new(seed, max_len);
        let mut staged = StagedWrites::default();
        for write in planned {
            let residue = write.offset % 512;
            let base = match staged
                .bases
                .iter()
                .position(|(r, len, _)| *r == residue && *len == write.len)
            {
                Some(base) => base,
                None => {
                    let mut buf = AlignedBuf::new(write.len);
                    pattern.fill(buf.as_mut_slice(), write.offset, write.file_seed);
                    staged.bases.push((residue, write.len, buf));
                    staged.bases.len() - 1
                }
            };
            let first = staged.stamps.len();
            staged
                .stamps
                .extend(Pattern::stamps(write.offset, write.len, write.file_seed));
            staged.writes.push(StagedWrite {
                offset: write.offset,
                base,
                stamps: first..staged.stamps.len(),
            });
        }
        staged
    }

    pub fn len(&self) -> usize {
        self.writes.len()
    }

    /// The offset and the data of write `i` (its stamps copied into its
    /// base buffer: the only work left for the timed loop).
    pub fn data(&mut self, i: usize) -> (u64, &[u8]) {
        let write = &self.writes[i];
        let buf = self.bases[write.base].2.as_mut_slice();
        Pattern::apply_stamps(buf, write.offset, &self.stamps[write.stamps.clone()]);
        (write.offset, buf)
    }
}

/// Writes `bytes` into a new file in `dir` and removes it, untimed: the
/// memory warm-up before the first phase. In a VM the first touch of a guest
/// page is a fault on the host (measured here: 1.85 GB/s for the first tmpfs
/// IOR-easy write of a run against 3.3 GB/s once the memory had been used),
/// and whichever target runs first would pay it. Returns a line for the
/// report with the rate this first touch ran at.
pub fn warm_memory(dir: &std::path::Path, bytes: u64, pid: u32) -> anyhow::Result<String> {
    use anyhow::Context;
    use std::io::Write;
    let path = dir.join(format!("sfs_bench.{pid}.warm-up"));
    let started = std::time::Instant::now();
    let block = vec![0x5au8; 1 << 20];
    let result = (|| -> std::io::Result<()> {
        let mut file = std::fs::File::create(&path)?;
        let mut left = bytes;
        while left > 0 {
            let n = left.min(block.len() as u64) as usize;
            file.write_all(&block[..n])?;
            left -= n as u64;
        }
        Ok(())
    })();
    let _ = std::fs::remove_file(&path);
    result.with_context(|| format!("warming memory with {}", path.display()))?;
    let seconds = started.elapsed().as_secs_f64();
    Ok(format!(
        "{}: {} MiB written and removed before the first phase ({:.0} MB/s)",
        dir.display(),
        bytes >> 20,
        bytes as f64 / seconds.max(1e-9) / 1e6
    ))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn buffers_are_page_aligned() {
        for len in [1, 3901, 47_008, 1 << 20] {
            let mut buf = AlignedBuf::new(len);
            let slice = buf.as_mut_slice();
            assert_eq!(slice.len(), len);
            assert_eq!(slice.as_ptr() as usize % ALIGN, 0, "{len}");
        }
    }

    #[test]
    fn staged_writes_hold_what_the_pattern_says() {
        let pattern = Pattern::new(42, 1 << 16);
        // IOR-hard-like strides (several residues modulo 512), a short last
        // write, and two files sharing a base buffer.
        let mut planned: Vec<PlannedWrite> = (0..40)
            .map(|i| PlannedWrite {
                offset: i * 47_008,
                len: 47_008,
                file_seed: 7,
            })
            .collect();
        planned.push(PlannedWrite {
            offset: 1 << 20,
            len: 100,
            file_seed: 7,
        });
        planned.push(PlannedWrite {
            offset: 0,
            len: 47_008,
            file_seed: 8,
        });
        let mut staged = StagedWrites::new(42, &planned);
        assert_eq!(staged.len(), planned.len());
        assert!(staged.bases.len() <= 18, "{}", staged.bases.len());
        // Out of order too: a base buffer must not keep stamps of another write.
        for i in (0..planned.len()).rev().chain(0..planned.len()) {
            let w = planned[i];
            let (offset, data) = staged.data(i);
            assert_eq!((offset, data.len()), (w.offset, w.len));
            assert_eq!(pattern.check(data, w.offset, w.file_seed), Ok(()), "{i}");
        }
    }
}
