//! How many connections a server holds open at once, over all its
//! listeners (lean RPC and gRPC on the hostfile port, TCP data, node-local
//! shared memory, RDMA): config `max_connections`. A connection takes its
//! place when it is accepted — before its handshake, so that clients
//! without the secret cannot exhaust the server either — and gives it back
//! when it closes. Past the limit a new connection is refused at once,
//! with the reason (the handshake's refusal on sockets, the connect's
//! reject on RDMA); the connections already open go on.

use std::sync::Arc;
use tokio::sync::{OwnedSemaphorePermit, Semaphore};

/// Open file descriptors a server keeps for itself (RocksDB, chunk files,
/// the listeners) when the limit is derived from the open-file limit.
const RESERVED_DESCRIPTORS: u64 = 1024;
/// The least limit [`ConnectionLimit::from_config`] derives.
const MIN_DERIVED: u64 = 64;

/// The server's connection places.
#[derive(Clone)]
pub struct ConnectionLimit {
    places: Arc<Semaphore>,
    limit: usize,
    server: Arc<str>,
}

/// One open connection's place, given back on drop.
pub struct Place(#[allow(dead_code)] OwnedSemaphorePermit);

impl ConnectionLimit {
    /// `limit` places for the server named `server`.
    pub fn new(limit: usize, server: &str) -> ConnectionLimit {
        let limit = limit.clamp(1, Semaphore::MAX_PERMITS);
        ConnectionLimit {
            places: Arc::new(Semaphore::new(limit)),
            limit,
            server: server.into(),
        }
    }

    /// The limit a config asks for: `max_connections`, or when it is 0
    /// half of what the open-file limit leaves after the server's own
    /// descriptors (each connection takes one socket, and some transports
    /// more), at least 64.
    pub fn from_config(max_connections: u64, open_files: u64, server: &str) -> ConnectionLimit {
        let limit = match max_connections {
            0 => (open_files.saturating_sub(RESERVED_DESCRIPTORS) / 2).max(MIN_DERIVED),
            n => n,
        };
        ConnectionLimit::new(usize::try_from(limit).unwrap_or(usize::MAX), server)
    }

    /// The number of places.
    pub fn limit(&self) -> usize {
        self.limit
    }

    /// A place for a connection just accepted, or why there is none (the
    /// message the refused client sees).
    pub fn admit(&self) -> Result<Place, String> {
        self.places
            .clone()
            .try_acquire_owned()
            .map(Place)
            .map_err(|_| {
                format!(
                    "server {} has {} connections open, its limit (config max_connections): \
                     try again later, or raise the limit",
                    self.server, self.limit
                )
            })
    }
}

/// The place a socket connection was given at accept, or — when it got
/// none — the refusal sent to it (the handshake's refusal, with the
/// reason) and `None`: the connection's task then ends. `what` names the
/// kind of connection in the server's log.
pub async fn placed_or_refused<S>(
    place: Result<Place, String>,
    stream: &mut S,
    what: &str,
) -> Option<Place>
where
    S: tokio::io::AsyncRead + tokio::io::AsyncWrite + Unpin,
{
    match place {
        Ok(place) => Some(place),
        Err(why) => {
            tracing::info!("{what} connection refused: {why}");
            crate::auth::refuse(stream, &why).await;
            None
        }
    }
}

/// Raises this process's soft open-file limit to its hard limit (servers
/// hold a socket per connection) and returns the soft limit then in force.
pub fn raise_open_file_limit() -> u64 {
    let limit = rustix::process::getrlimit(rustix::process::Resource::Nofile);
    if let Some(hard) = limit.maximum {
        if limit.current != Some(hard) {
            let raised = rustix::process::Rlimit {
                current: Some(hard),
                maximum: Some(hard),
            };
            if rustix::process::setrlimit(rustix::process::Resource::Nofile, raised).is_ok() {
                return hard;
            }
        }
    }
    limit.current.unwrap_or(u64::MAX)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn places_run_out_and_come_back() {
        let limit = ConnectionLimit::new(2, "s0");
        let a = limit.admit().unwrap();
        let _b = limit.admit().unwrap();
        let e = limit.admit().err().unwrap();
        assert!(
            e.contains("server s0 has 2 connections open") && e.contains("max_connections"),
            "{e}"
        );
        drop(a);
        assert!(limit.admit().is_ok());
    }

    #[test]
    fn zero_derives_the_limit_from_the_open_file_limit() {
        assert_eq!(
            ConnectionLimit::from_config(0, 1_048_576, "s").limit(),
            523_776
        );
        assert_eq!(ConnectionLimit::from_config(0, 1024, "s").limit(), 64);
        assert_eq!(ConnectionLimit::from_config(10, 1024, "s").limit(), 10);
        assert!(raise_open_file_limit() >= 64);
    }
}
