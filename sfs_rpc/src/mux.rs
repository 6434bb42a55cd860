//! The bookkeeping of one multiplexed connection, shared by every client
//! that runs many requests on one stream and matches answers by request id:
//! the lean RPC client ([`crate::lean::LeanClient`]) and the TCP,
//! shared-memory and RDMA data transports of `sfs_rdma`.
//!
//! Each of them once had its own copy of the same four things — request-id
//! allocation, the map from request id to the caller waiting for it, the
//! `broken` flag, and "fail every waiter" — and fixes had to be made once
//! per copy. [`Mux`] holds them once. What differs stays with the
//! transport: how it connects, frames and sends, its reader task, and what
//! a request that is given up leaves behind ([`OnCancel`]).
//!
//! A request goes: [`Mux::next_id`], [`Mux::register`] (refused once the
//! connection is broken), send the frame, [`Registration::answer`]. The
//! reader task hands each answer to its waiter with [`Mux::deliver`] (or
//! [`Mux::take`] when it must look at the request before reading the rest
//! of the answer), and on any failure calls [`Mux::fail_all`], which wakes
//! every waiter with the error at once — a dead server is noticed
//! immediately, not at each request's timeout.
//!
//! Per request: one map insertion and one removal, each under the one
//! `pending` lock, and no allocation beyond the oneshot channel (an
//! answered request's registration does not take the lock again).

use sfs_global::{SfsError, SfsResult};
use std::collections::HashMap;
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::sync::{Mutex, OnceLock};
use tokio::sync::oneshot;

/// What wakes a waiting request: with its answer, or with the error that
/// ended the connection.
pub type Waiter<T> = oneshot::Sender<SfsResult<T>>;

/// One connection's requests in flight.
///
/// `T` is what an answer carries to its caller; `X` is what a request
/// leaves with the connection until its answer arrives (the reader's
/// limit on the answer's size, a shared-memory slot the server may still
/// write, or nothing).
pub struct Mux<T, X = ()> {
    /// Requests sent (or about to be) and not answered: id → (attachment,
    /// waiter).
    pending: Mutex<HashMap<u64, (X, Waiter<T>)>>,
    /// Set once the connection is given up; never cleared (a transport
    /// replaces a broken connection, and its `Mux` with it).
    broken: AtomicBool,
    /// The error [`Mux::fail_all`] was first given: what a request refused
    /// afterwards reports (the cause, not just "broken").
    failure: OnceLock<SfsError>,
    next_id: AtomicU64,
}

/// [`Mux::register`] refused: the connection was given up.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct Broken;

/// What happens to a request's entry when its caller stops waiting
/// (timeout, cancelled future) before the answer arrived.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum OnCancel {
    /// The entry goes at once; the late answer finds no waiter and the
    /// reader drops it. For requests whose answer owns nothing of the
    /// caller's.
    Forget,
    /// The entry, and its attachment, stay until the answer arrives or the
    /// connection fails: for a request that lent the server something (a
    /// shared-memory slot) which must not be reused before the server is
    /// done with it. The reader may then treat an answer without an entry
    /// as a protocol error.
    Keep,
}

impl<T, X> Default for Mux<T, X> {
    fn default() -> Self {
        Self::new()
    }
}

impl<T, X> Mux<T, X> {
    /// A connection with nothing in flight; request ids start at 1.
    pub fn new() -> Self {
        Mux {
            pending: Mutex::new(HashMap::new()),
            broken: AtomicBool::new(false),
            failure: OnceLock::new(),
            next_id: AtomicU64::new(1),
        }
    }

    /// A request id never handed out before on this connection.
    pub fn next_id(&self) -> u64 {
        self.next_id.fetch_add(1, Ordering::Relaxed)
    }

    /// Makes request `id` (from [`Mux::next_id`]) answerable: its answer,
    /// or the connection's failure, will reach the returned registration.
    /// `attachment` stays with the connection until then. Refused once the
    /// connection is broken, so that no request waits on a connection
    /// nobody reads any more.
    pub fn register(
        &self,
        id: u64,
        attachment: X,
        on_cancel: OnCancel,
    ) -> Result<Registration<'_, T, X>, Broken> {
        let (waiter, receiver) = oneshot::channel();
        let mut pending = self.pending.lock().expect("pending lock");
        // Checked under the lock that `fail_all` drains under: a request
        // registered after the drain sees the flag, one before is drained.
        if self.is_broken() {
            return Err(Broken);
        }
        pending.insert(id, (attachment, waiter));
        drop(pending);
        Ok(Registration {
            mux: self,
            id,
            receiver,
            forget_on_drop: on_cancel == OnCancel::Forget,
        })
    }

    /// Takes request `id`'s entry out, for a reader that must see the
    /// attachment before it has the whole answer; `None` when no request
    /// waits under `id` (forgotten after a cancel, or never sent).
    pub fn take(&self, id: u64) -> Option<(X, Waiter<T>)> {
        self.pending.lock().expect("pending lock").remove(&id)
    }

    /// Hands request `id` the answer `answer` makes of its attachment;
    /// false when no request waits under `id`. A caller that stopped
    /// waiting ([`OnCancel::Keep`]) drops the answer, and the attachment
    /// with it.
    pub fn deliver(&self, id: u64, answer: impl FnOnce(X) -> SfsResult<T>) -> bool {
        match self.take(id) {
            Some((attachment, waiter)) => {
                let _ = waiter.send(answer(attachment));
                true
            }
            None => false,
        }
    }

    /// Gives the connection up: marks it broken and wakes every waiter with
    /// `error` (their attachments are dropped).
    pub fn fail_all(&self, error: SfsError) {
        // Before the flag: whoever sees the connection broken finds why.
        let _ = self.failure.set(error.clone());
        self.mark_broken();
        // Woken outside the lock: a waiter's attachment may take locks of
        // its own when it drops.
        let waiters: Vec<_> = self.pending.lock().expect("pending lock").drain().collect();
        for (_, (_, waiter)) in waiters {
            let _ = waiter.send(Err(error.clone()));
        }
    }

    /// Marks the connection broken without waking anyone: for a transport
    /// that must stop new requests before it fails the waiting ones, or
    /// whose stream can no longer carry frames (a send cut off half-way).
    pub fn mark_broken(&self) {
        self.broken.store(true, Ordering::SeqCst);
    }

    /// The error that first failed the connection ([`Mux::fail_all`]);
    /// `None` while it works, or when it was only marked broken.
    pub fn failure(&self) -> Option<SfsError> {
        self.failure.get().cloned()
    }

    /// Whether the connection was given up (it then takes no requests).
    pub fn is_broken(&self) -> bool {
        self.broken.load(Ordering::SeqCst)
    }

    /// The flag itself, for a sender that checks it while holding the
    /// writer (`sfs_rdma::nosignal::send_frame`).
    pub fn broken_flag(&self) -> &AtomicBool {
        &self.broken
    }

    /// Whether any request waits for its answer (a polling client skips
    /// reading an idle socket).
    pub fn has_pending(&self) -> bool {
        !self.pending.lock().expect("pending lock").is_empty()
    }
}

/// A registered request's claim on its answer. Dropped before the answer
/// arrived, it does what its [`OnCancel`] says.
#[must_use = "a dropped registration gives its request up"]
pub struct Registration<'a, T, X> {
    mux: &'a Mux<T, X>,
    id: u64,
    receiver: oneshot::Receiver<SfsResult<T>>,
    /// Whether dropping this removes the request's entry; cleared once
    /// the entry is gone (answered or failed), so that an answered request
    /// costs no second lock.
    forget_on_drop: bool,
}

impl<T, X> Registration<'_, T, X> {
    /// The request id this waits for.
    pub fn id(&self) -> u64 {
        self.id
    }

    /// Waits for the answer, or for the error that ended the connection;
    /// `None` when the entry went without either (the reader dropped it,
    /// e.g. on an answer it refused).
    pub async fn answer(mut self) -> Option<SfsResult<T>> {
        let answer = (&mut self.receiver).await.ok();
        // Whoever completed or dropped the waiter took the entry out.
        self.forget_on_drop = false;
        answer
    }
}

impl<T, X> Drop for Registration<'_, T, X> {
    fn drop(&mut self) {
        if self.forget_on_drop {
            // Bound first, so the entry drops after the lock is released.
            let entry = self.mux.take(self.id);
            drop(entry);
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use sfs_global::Errno;
    use std::collections::HashSet;
    use std::future::Future;
    use std::sync::Arc;

    type TestMux = Mux<&'static str, u32>;

    #[tokio::test]
    async fn an_answer_reaches_its_registration() {
        let mux = TestMux::new();
        let (first, second) = (mux.next_id(), mux.next_id());
        let a = mux.register(first, 10, OnCancel::Forget).unwrap();
        let b = mux.register(second, 20, OnCancel::Forget).unwrap();
        assert_eq!((a.id(), b.id()), (first, second));
        assert!(mux.has_pending());
        // Answers come back in any order, matched by id.
        assert!(mux.deliver(second, |x| {
            assert_eq!(x, 20);
            Ok("second")
        }));
        assert!(mux.deliver(first, |_| Ok("first")));
        assert!(!mux.has_pending());
        assert_eq!(b.answer().await, Some(Ok("second")));
        assert_eq!(a.answer().await, Some(Ok("first")));
        assert!(!mux.deliver(first, |_| Ok("twice")), "answered once only");
    }

    #[tokio::test]
    async fn take_hands_out_the_attachment_before_the_answer() {
        let mux = TestMux::new();
        let id = mux.next_id();
        let registration = mux.register(id, 7, OnCancel::Forget).unwrap();
        let (attachment, waiter) = mux.take(id).unwrap();
        assert_eq!(attachment, 7);
        assert!(!mux.has_pending());
        waiter.send(Ok("late")).unwrap();
        assert_eq!(registration.answer().await, Some(Ok("late")));
    }

    #[tokio::test]
    async fn an_entry_taken_without_an_answer_is_none() {
        let mux = TestMux::new();
        let id = mux.next_id();
        let registration = mux.register(id, 7, OnCancel::Forget).unwrap();
        drop(mux.take(id));
        assert_eq!(registration.answer().await, None);
    }

    #[test]
    fn a_forgotten_request_leaves_nothing_behind() {
        let mux = TestMux::new();
        let id = mux.next_id();
        drop(mux.register(id, 1, OnCancel::Forget).unwrap());
        assert!(!mux.has_pending());
        assert!(!mux.deliver(id, |_| Ok("late")), "late answer dropped");
    }

    #[test]
    fn a_cancelled_wait_forgets_the_request() {
        let mux = TestMux::new();
        let id = mux.next_id();
        let registration = mux.register(id, 1, OnCancel::Forget).unwrap();
        // A caller that times out drops the future waiting for the answer.
        let mut waiting = Box::pin(registration.answer());
        let waker = futures::task::noop_waker();
        let mut cx = std::task::Context::from_waker(&waker);
        assert!(waiting.as_mut().poll(&mut cx).is_pending());
        assert!(mux.has_pending());
        drop(waiting);
        assert!(!mux.has_pending());
    }

    #[test]
    fn a_kept_request_stays_until_its_answer() {
        let mux = TestMux::new();
        let id = mux.next_id();
        drop(mux.register(id, 5, OnCancel::Keep).unwrap());
        assert!(mux.has_pending(), "the attachment is still lent out");
        let mut returned = None;
        assert!(mux.deliver(id, |x| {
            returned = Some(x);
            Ok("late")
        }));
        assert_eq!(returned, Some(5));
        assert!(!mux.has_pending());
    }

    #[tokio::test]
    async fn fail_all_wakes_every_waiter_and_refuses_later_requests() {
        let mux = TestMux::new();
        let waiting: Vec<_> = (0..3)
            .map(|i| {
                let on_cancel = if i == 0 {
                    OnCancel::Keep
                } else {
                    OnCancel::Forget
                };
                mux.register(mux.next_id(), i, on_cancel).unwrap()
            })
            .collect();
        let error = SfsError::io("connection lost");
        mux.fail_all(error.clone());
        assert!(mux.is_broken());
        assert!(!mux.has_pending());
        for registration in waiting {
            assert_eq!(registration.answer().await, Some(Err(error.clone())));
        }
        let refused = mux.register(mux.next_id(), 9, OnCancel::Forget);
        assert_eq!(refused.err(), Some(Broken));
        assert!(!mux.has_pending());
        // The first cause is kept; a later failure does not replace it.
        mux.fail_all(SfsError::io("a later failure"));
        assert_eq!(mux.failure(), Some(error));
    }

    #[test]
    fn a_broken_mark_refuses_requests_and_wakes_nobody() {
        let mux = TestMux::new();
        let id = mux.next_id();
        let registration = mux.register(id, 1, OnCancel::Forget).unwrap();
        mux.mark_broken();
        assert!(mux.broken_flag().load(Ordering::SeqCst));
        assert_eq!(mux.failure(), None, "marked, not failed");
        assert_eq!(
            mux.register(mux.next_id(), 2, OnCancel::Forget).err(),
            Some(Broken)
        );
        // Requests already sent may still get their answers.
        assert!(mux.deliver(id, |_| Ok("still")));
        drop(registration);
    }

    #[test]
    fn ids_are_unique_under_concurrency() {
        let mux = Arc::new(TestMux::new());
        let threads: Vec<_> = (0..4)
            .map(|_| {
                let mux = mux.clone();
                std::thread::spawn(move || {
                    (0..10_000)
                        .map(|_| {
                            let id = mux.next_id();
                            // Registered and forgotten: the map stays small.
                            drop(mux.register(id, 0, OnCancel::Forget).unwrap());
                            id
                        })
                        .collect::<Vec<_>>()
                })
            })
            .collect();
        let mut seen = HashSet::new();
        for thread in threads {
            for id in thread.join().unwrap() {
                assert!(id > 0 && seen.insert(id), "id {id} handed out twice");
            }
        }
        assert_eq!(seen.len(), 40_000);
        assert!(!mux.has_pending());
    }

    #[tokio::test]
    async fn a_failure_racing_registrations_leaves_no_waiter_behind() {
        // Whatever the interleaving, every registration that succeeded is
        // woken by `fail_all`, and none waits forever.
        let mux = Arc::new(Mux::<(), ()>::new());
        let registering = {
            let mux = mux.clone();
            std::thread::spawn(move || {
                for _ in 0..10_000 {
                    // Kept: the entry stays for `fail_all` to find.
                    let Ok(registration) = mux.register(mux.next_id(), (), OnCancel::Keep) else {
                        break;
                    };
                    drop(registration);
                }
            })
        };
        mux.fail_all(SfsError::new(Errno::EIO, "gone"));
        registering.join().unwrap();
        assert!(mux.is_broken());
        assert!(!mux.has_pending(), "a registration outlived fail_all");
    }
}
