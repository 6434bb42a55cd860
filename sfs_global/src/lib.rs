//! Shared vocabulary of SFS: everything that both servers and clients must agree
//! on bit for bit, and nothing that knows about networks.
//!
//! - [`access`]: who asks ([`access::Caller`]) and the POSIX permission rules.
//! - [`config`]: the one typed `config.json`, with defaults and validation.
//! - [`hostfile`]: the list of servers of a job.
//! - [`path`]: normalisation of paths inside the mount.
//! - [`distributor`]: which server owns a path's metadata and which owns a chunk.
//! - [`chunk`]: splitting byte ranges into per-chunk pieces.
//! - [`metadata`]: the versioned metadata entry and its update operations.
//! - [`checkpoint`]: the namespace written into the object back end.
//! - [`holdings`]: what a server holds of a file (for fsck).
//! - [`secret`]: the job secret every connection proves it holds.
//! - [`error`]: the error type every layer converts into, and its errno.

pub mod access;
pub mod checkpoint;
pub mod chunk;
pub mod config;
pub mod distributor;
pub mod error;
pub mod holdings;
pub mod hostfile;
pub mod metadata;
pub mod path;
pub mod ready;
pub mod secret;

pub use error::{Errno, SfsError, SfsResult};
pub use metadata::{FileId, FileKind, Metadata};

/// Version of the SFS wire protocols; servers and clients refuse a mismatch.
pub const PROTOCOL_VERSION: u32 = 1;
