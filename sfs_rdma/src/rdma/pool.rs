//! Queue-depth accounting: a fixed set of slots, each owning one
//! pre-registered buffer (and one request id) for the life of a request.
//!
//! A request first takes a slot (waiting when `queue_depth` requests are in
//! flight), which bounds the work requests posted on the queue pair and the
//! receive buffers the peer may consume; dropping the [`Slot`] returns it.
//! Buffers are registered once per connection, never per call.

use std::sync::{Arc, Mutex};
use tokio::sync::{OwnedSemaphorePermit, Semaphore};

/// A pool of `count` slot indices.
pub struct SlotPool {
    permits: Arc<Semaphore>,
    free: Mutex<Vec<usize>>,
    count: usize,
}

/// One slot, held for the duration of a request.
pub struct Slot {
    pool: Arc<SlotPool>,
    index: usize,
    _permit: OwnedSemaphorePermit,
}

impl Slot {
    pub fn index(&self) -> usize {
        self.index
    }
}

impl Drop for Slot {
    fn drop(&mut self) {
        // The index goes back before the permit (dropped after this body),
        // so a woken waiter always finds a free index.
        self.pool.free.lock().expect("slot pool").push(self.index);
    }
}

impl SlotPool {
    pub fn new(count: usize) -> SlotPool {
        SlotPool {
            permits: Arc::new(Semaphore::new(count)),
            free: Mutex::new((0..count).rev().collect()),
            count,
        }
    }

    /// Waits for a free slot. Errors only after [`SlotPool::close`].
    pub async fn acquire(self: &Arc<Self>) -> Option<Slot> {
        let permit = self.permits.clone().acquire_owned().await.ok()?;
        let index = self
            .free
            .lock()
            .expect("slot pool")
            .pop()
            .expect("a permit always has a free index");
        Some(Slot {
            pool: self.clone(),
            index,
            _permit: permit,
        })
    }

    /// A slot if one is free now, without waiting.
    pub fn try_acquire(self: &Arc<Self>) -> Option<Slot> {
        let permit = self.permits.clone().try_acquire_owned().ok()?;
        let index = self.free.lock().expect("slot pool").pop()?;
        Some(Slot {
            pool: self.clone(),
            index,
            _permit: permit,
        })
    }

    /// Slots currently held.
    pub fn in_flight(&self) -> usize {
        self.count - self.permits.available_permits()
    }

    pub fn capacity(&self) -> usize {
        self.count
    }

    /// Wakes every waiter with `None` (the connection is gone).
    pub fn close(&self) {
        self.permits.close();
    }
}

/// The server's count of a client's unanswered requests: received, their
/// response not yet posted. A client sends on a slot only after the answer
/// to that slot's previous request arrived, so an honest client never has
/// more than its announced queue depth unanswered, however late the server
/// learns that its responses went out (the SEND completions) and however
/// late it reaps finished request tasks. Counting those instead (once the
/// length of the task set) cut off honest clients under load.
pub struct Unanswered {
    count: std::sync::atomic::AtomicUsize,
    limit: usize,
}

impl Unanswered {
    pub fn new(limit: usize) -> Unanswered {
        Unanswered {
            count: std::sync::atomic::AtomicUsize::new(0),
            limit,
        }
    }

    /// A request arrived; false when the client exceeds its queue depth.
    pub fn received(&self) -> bool {
        self.count.fetch_add(1, std::sync::atomic::Ordering::SeqCst) < self.limit
    }

    /// The response is about to be posted (call before posting it: the
    /// client may send its next request as soon as the response lands).
    pub fn answering(&self) {
        self.count.fetch_sub(1, std::sync::atomic::Ordering::SeqCst);
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::collections::HashSet;
    use std::sync::atomic::{AtomicUsize, Ordering};

    #[tokio::test(flavor = "multi_thread", worker_threads = 2)]
    async fn never_more_than_queue_depth_in_flight_and_indices_unique() {
        let pool = Arc::new(SlotPool::new(4));
        let busy = Arc::new(AtomicUsize::new(0));
        let peak = Arc::new(AtomicUsize::new(0));
        let held = Arc::new(Mutex::new(HashSet::new()));
        let mut tasks = Vec::new();
        for _ in 0..64 {
            let (pool, busy, peak, held) = (pool.clone(), busy.clone(), peak.clone(), held.clone());
            tasks.push(tokio::spawn(async move {
                let slot = pool.acquire().await.unwrap();
                assert!(
                    held.lock().unwrap().insert(slot.index()),
                    "index in use twice"
                );
                let now = busy.fetch_add(1, Ordering::SeqCst) + 1;
                peak.fetch_max(now, Ordering::SeqCst);
                assert!(slot.index() < 4);
                tokio::task::yield_now().await;
                busy.fetch_sub(1, Ordering::SeqCst);
                held.lock().unwrap().remove(&slot.index());
            }));
        }
        for t in tasks {
            t.await.unwrap();
        }
        assert!(peak.load(Ordering::SeqCst) <= 4);
        assert_eq!(pool.in_flight(), 0);
    }

    #[test]
    fn unanswered_allows_the_queue_depth_and_no_more() {
        let u = Unanswered::new(3);
        assert!(u.received() && u.received() && u.received());
        // Answers posted, but nothing else known about them yet (SEND
        // completions and task ends still pending): the client may reuse
        // those slots at once and must not be refused.
        for _ in 0..100 {
            u.answering();
            assert!(u.received(), "an honest client is refused");
        }
        assert!(!u.received(), "a fourth unanswered request is refused");
    }

    #[tokio::test]
    async fn try_acquire_refuses_when_full_and_close_wakes_waiters() {
        let pool = Arc::new(SlotPool::new(2));
        let a = pool.try_acquire().unwrap();
        let _b = pool.try_acquire().unwrap();
        assert!(pool.try_acquire().is_none());
        assert_eq!(pool.in_flight(), 2);
        drop(a);
        assert_eq!(pool.in_flight(), 1);
        let _c = pool.try_acquire().unwrap();
        let waiter = {
            let pool = pool.clone();
            tokio::spawn(async move { pool.acquire().await.is_none() })
        };
        tokio::task::yield_now().await;
        pool.close();
        assert!(waiter.await.unwrap(), "a closed pool answers None");
    }
}
