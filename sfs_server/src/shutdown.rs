//! Graceful shutdown, announced to every task of the server at once.
//!
//! SIGTERM, SIGINT and the `Shutdown` RPC all end up in
//! [`Shutdown::trigger`]; the gRPC server, the data listener and the main
//! task each wait on [`Shutdown::wait`], stop accepting, let in-flight
//! requests finish, and return (the mini-redis pattern, on a `watch` channel
//! so a late subscriber still sees a trigger that already happened).

use std::future::Future;
use std::sync::Arc;
use tokio::sync::watch;

/// A cloneable handle that triggers or awaits the server's shutdown.
#[derive(Clone, Debug)]
pub struct Shutdown {
    sender: Arc<watch::Sender<bool>>,
}

impl Default for Shutdown {
    fn default() -> Self {
        Self::new()
    }
}

impl Shutdown {
    /// A handle that has not been triggered yet.
    pub fn new() -> Self {
        Shutdown {
            sender: Arc::new(watch::channel(false).0),
        }
    }

    /// Starts the shutdown; idempotent.
    pub fn trigger(&self) {
        self.sender.send_replace(true);
    }

    /// Whether shutdown has been triggered.
    pub fn is_triggered(&self) -> bool {
        *self.sender.borrow()
    }

    /// A future that resolves once shutdown has been triggered (at once if it
    /// already was). It owns what it needs, so it can be moved into a task.
    pub fn wait(&self) -> impl Future<Output = ()> + Send + 'static {
        let mut receiver = self.sender.subscribe();
        async move {
            // Err only if every sender is gone, which also means "stop".
            let _ = receiver.wait_for(|stopped| *stopped).await;
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[tokio::test]
    async fn waiters_see_triggers_before_and_after_they_subscribe() {
        let shutdown = Shutdown::new();
        let early = tokio::spawn(shutdown.wait());
        assert!(!shutdown.is_triggered());
        shutdown.clone().trigger();
        early.await.unwrap();
        shutdown.wait().await;
        assert!(shutdown.is_triggered());
    }
}
