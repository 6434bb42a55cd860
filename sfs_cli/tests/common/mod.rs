//! What the system tests share: the cluster launcher and helpers of the
//! test kit (`sfs_testkit::cluster`), the `sfs` binary cargo built for
//! these tests, and file-tree comparisons ([`tree`]).

#![allow(dead_code, unused_imports)]

pub mod tree;

pub use sfs_testkit::cluster::{describe, pattern, write_at, Cluster};

pub const SFS: &str = env!("CARGO_BIN_EXE_sfs");
