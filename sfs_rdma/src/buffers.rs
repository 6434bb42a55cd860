//! Reusable chunk-sized buffers for the TCP data path.
//!
//! Every request of the TCP transport needs a buffer of up to one chunk
//! (512 KiB by default) on the server, and every read answer one on the
//! client. A fresh `vec![0; len]` of that size is an `mmap`, zeroing and a
//! page fault per page, then an `munmap`: on the development VM the server
//! spent ~4 % of a sequential write in `memset` and ~3 % more in page faults
//! (docs/performance.md). A [`BufferPool`] keeps a bounded number of
//! initialised buffers and hands them out again.

use std::ops::{Deref, DerefMut};
use std::sync::{Arc, Mutex};

/// A bounded pool of initialised byte buffers of one size.
pub struct BufferPool {
    size: usize,
    keep: usize,
    free: Mutex<Vec<Vec<u8>>>,
}

impl BufferPool {
    /// A pool of buffers of `size` bytes that keeps at most `keep` of them
    /// when they are returned (more may be out at once; the extra ones are
    /// freed when they come back).
    pub fn new(size: usize, keep: usize) -> Arc<Self> {
        Arc::new(BufferPool {
            size,
            keep,
            free: Mutex::new(Vec::new()),
        })
    }

    /// A buffer of `len` bytes; its contents are whatever a previous user
    /// left (callers overwrite what they use). A `len` above the pool's
    /// size gets a buffer of its own, freed when dropped.
    pub fn take(self: &Arc<Self>, len: usize) -> PooledBuffer {
        let buf = if len > self.size {
            vec![0; len]
        } else {
            self.free
                .lock()
                .expect("buffer pool")
                .pop()
                .unwrap_or_else(|| vec![0; self.size])
        };
        PooledBuffer {
            buf,
            len,
            pool: self.clone(),
        }
    }

    /// The size of the pool's buffers.
    pub fn size(&self) -> usize {
        self.size
    }

    /// Buffers waiting in the pool.
    pub fn idle(&self) -> usize {
        self.free.lock().expect("buffer pool").len()
    }
}

/// A buffer from a [`BufferPool`], `len` bytes long; back to the pool on drop.
pub struct PooledBuffer {
    buf: Vec<u8>,
    len: usize,
    pool: Arc<BufferPool>,
}

impl PooledBuffer {
    /// Shortens the buffer to `len` bytes (never lengthens it).
    pub fn truncate(&mut self, len: usize) {
        self.len = self.len.min(len);
    }
}

impl Deref for PooledBuffer {
    type Target = [u8];
    fn deref(&self) -> &[u8] {
        &self.buf[..self.len]
    }
}

impl DerefMut for PooledBuffer {
    fn deref_mut(&mut self) -> &mut [u8] {
        &mut self.buf[..self.len]
    }
}

impl Drop for PooledBuffer {
    fn drop(&mut self) {
        if self.buf.len() != self.pool.size {
            return;
        }
        let mut free = self.pool.free.lock().expect("buffer pool");
        if free.len() < self.pool.keep {
            free.push(std::mem::take(&mut self.buf));
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn buffers_come_back_and_the_pool_stays_bounded() {
        let pool = BufferPool::new(64, 2);
        let mut a = pool.take(10);
        assert_eq!(a.len(), 10);
        a.copy_from_slice(b"0123456789");
        let b = pool.take(64);
        let c = pool.take(1);
        assert_eq!(pool.idle(), 0);
        drop((a, b, c));
        assert_eq!(pool.idle(), 2, "keeps at most two");
        let mut again = pool.take(5);
        again.truncate(3);
        assert_eq!(again.len(), 3);
        again.truncate(9);
        assert_eq!(again.len(), 3, "truncate never lengthens");
    }

    #[test]
    fn a_buffer_larger_than_the_pool_size_is_not_kept() {
        let pool = BufferPool::new(8, 4);
        let big = pool.take(9);
        assert_eq!(big.len(), 9);
        drop(big);
        assert_eq!(pool.idle(), 0);
    }
}
