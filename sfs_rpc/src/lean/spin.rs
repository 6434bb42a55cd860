//! Polling before sleeping: the adaptive spin both ends of a lean
//! connection use while they wait for the other.
//!
//! Sleeping in `epoll_wait` and being woken costs a context switch and, on
//! a virtual machine, an inter-processor interrupt and a halt exit. On the
//! 2-vCPU development VM a loopback round trip takes 21–29 µs between
//! sleeping threads and 12–16 µs when both ends poll (docs/performance.md).
//! Answers from a server on the same node or a fast network come within
//! tens of microseconds, so a waiter first polls for up to a budget
//! (yielding the CPU between polls, so that the thread it waits for can run
//! on the same CPU), then sleeps. When what it waits for keeps coming later
//! than the budget (a slow or remote peer, an idle client, an overloaded
//! machine), the budget halves towards zero, and is probed again now and
//! then, so an idle connection costs no CPU.

use std::sync::atomic::{AtomicU64, Ordering};
use std::time::{Duration, Instant};

/// Below this a budget is not worth a poll: it becomes zero.
const MIN_BUDGET_NS: u64 = 1000;

/// How often a budget that fell to zero is tried again (every Nth wait).
const PROBE_EVERY: u64 = 64;

/// The spin budget of one waiter (a connection's callers, or a server
/// connection waiting for its next request).
#[derive(Debug)]
pub struct Spin {
    max_ns: u64,
    current_ns: AtomicU64,
    waits: AtomicU64,
}

impl Spin {
    /// A budget of at most `max` (zero: never poll).
    pub fn new(max: Duration) -> Self {
        let max_ns = u64::try_from(max.as_nanos()).unwrap_or(u64::MAX);
        Spin {
            max_ns,
            current_ns: AtomicU64::new(max_ns),
            waits: AtomicU64::new(0),
        }
    }

    fn budget(&self) -> Duration {
        let current = self.current_ns.load(Ordering::Relaxed);
        if current == 0
            && self.max_ns > 0
            && self
                .waits
                .fetch_add(1, Ordering::Relaxed)
                .is_multiple_of(PROBE_EVERY)
        {
            return Duration::from_nanos((self.max_ns / 4).max(MIN_BUDGET_NS));
        }
        Duration::from_nanos(current)
    }

    fn record(&self, arrived: bool) {
        let next = if arrived {
            self.max_ns
        } else {
            let halved = self.current_ns.load(Ordering::Relaxed) / 2;
            if halved < MIN_BUDGET_NS {
                0
            } else {
                halved
            }
        };
        self.current_ns.store(next, Ordering::Relaxed);
    }

    /// Calls `poll` until it yields a value or the budget is spent; `None`
    /// then (the caller sleeps). Adapts the budget to the outcome.
    pub fn poll<T>(&self, mut poll: impl FnMut() -> Option<T>) -> Option<T> {
        let budget = self.budget();
        if budget.is_zero() {
            return None;
        }
        let start = Instant::now();
        let mut polls = 0u32;
        loop {
            if let Some(value) = poll() {
                self.record(true);
                return Some(value);
            }
            if start.elapsed() >= budget {
                self.record(false);
                return None;
            }
            polls = polls.wrapping_add(1);
            if polls.is_multiple_of(4) {
                std::thread::yield_now();
            } else {
                std::hint::spin_loop();
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_zero_budget_never_polls() {
        let spin = Spin::new(Duration::ZERO);
        for _ in 0..200 {
            assert_eq!(spin.poll(|| -> Option<()> { panic!("polled") }), None);
        }
    }

    #[test]
    fn misses_shrink_the_budget_to_zero_and_probes_come_back() {
        let spin = Spin::new(Duration::from_micros(40));
        let mut polled = 0;
        // 40 → 20 → 10 → 5 → 2.5 → 1.25 → 0 µs: six misses empty it.
        for _ in 0..6 {
            assert_eq!(
                spin.poll(|| {
                    polled += 1;
                    None::<()>
                }),
                None
            );
        }
        assert_eq!(spin.current_ns.load(Ordering::Relaxed), 0);
        let before = polled;
        // With the budget at zero only every PROBE_EVERY-th wait polls.
        for _ in 0..PROBE_EVERY {
            spin.poll(|| {
                polled += 1;
                None::<()>
            });
        }
        assert!(polled > before, "a probe polled");
        let probes_polled = polled - before;
        assert!(
            probes_polled < 1000,
            "probing is rare: {probes_polled} polls"
        );
    }

    #[test]
    fn a_hit_restores_the_whole_budget() {
        let spin = Spin::new(Duration::from_micros(40));
        spin.poll(|| None::<()>);
        assert!(spin.current_ns.load(Ordering::Relaxed) < 40_000);
        let mut n = 0;
        assert_eq!(
            spin.poll(|| {
                n += 1;
                (n == 3).then_some(7)
            }),
            Some(7)
        );
        assert_eq!(spin.current_ns.load(Ordering::Relaxed), 40_000);
    }
}
