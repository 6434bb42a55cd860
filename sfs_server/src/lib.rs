//! The SFS server daemon, as a library (the `sfs` binary calls [`run`]).
//!
//! One server holds the metadata entries whose paths hash to it (in
//! RocksDB, [`meta_rocks`]) and the data chunks that hash to it (as files
//! in a local directory, [`chunk_store`]). Clients reach it over gRPC
//! ([`service`]) for metadata and control, and over `sfs_rdma`'s data
//! transport for chunk bytes. [`server`] wires everything together and
//! owns start-up, readiness and graceful shutdown. [`backend`] is the
//! Motr-like object store interface the chunk store drains to, with its
//! implementations; [`tier`] makes the chunk store a write-back cache in
//! front of it (write-back, eviction, read-through); [`checkpoint`] writes
//! the namespace into it and reads it back (a namespace that outlives the
//! job); [`metrics`] counts requests and bytes and serves them to
//! Prometheus. [`in_process`] runs whole servers inside the calling
//! process (the client crate's tests).

pub mod backend;
pub mod backing;
pub mod checkpoint;
pub mod chunk_store;
pub mod grpc_budget;
pub mod in_process;
pub mod meta_rocks;
pub mod meta_store;
pub mod metrics;
pub mod rpc_listener;
pub mod server;
pub mod service;
pub mod shutdown;
pub mod tier;

pub use server::{run, run_blocking, run_until, PreBound, ServerOptions};
