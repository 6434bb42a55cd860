//! `sfs checkpoint` (and the first half of `sfs stop --flush`): every
//! server writes back its dirty files and the namespace into the object
//! back end, so that `sfs start --restore` of a later job sees this tree.

use crate::Setup;
use anyhow::{Context, Result};
use sfs_client::Client;
use std::time::Instant;

/// How long one server may take to write back and dump (the longest
/// request timeout a config may set): a checkpoint moves every dirty byte
/// of the job, far beyond a request's usual timeout.
const CHECKPOINT_TIMEOUT_MS: u64 = 3600 * 1000;

pub fn checkpoint(setup: &Setup) -> Result<()> {
    let mut config = setup.config.clone();
    config.request_timeout_ms = config.request_timeout_ms.max(CHECKPOINT_TIMEOUT_MS);
    let client = Client::new(config, setup.hostfile.clone())?;
    let started = Instant::now();
    let stats = client
        .checkpoint()
        .context("checkpoint failed; nothing was committed (the previous checkpoint, if any, stays the one a restore reads)")?;
    outln!(
        "checkpoint {} committed in {:.1} s: {} entries ({} files, {} bytes) from {} servers; {} dirty bytes written back, {} bytes of namespace",
        stats.sequence,
        started.elapsed().as_secs_f64(),
        stats.entries,
        stats.files,
        stats.file_bytes,
        stats.servers,
        stats.written_back_bytes,
        stats.dump_bytes
    )?;
    Ok(())
}
