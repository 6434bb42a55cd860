//! `sfs bench`: quick throughput and metadata-rate figures through the
//! client library against running servers (the core benchmark of
//! docs/performance.md). Every run checks what it reads back, so a fast
//! wrong answer cannot pass as a result.

use crate::Setup;
use anyhow::{bail, Result};
use sfs_client::Client;
use std::time::Instant;

fn client(setup: &Setup) -> Result<Client> {
    Ok(Client::new(setup.config.clone(), setup.hostfile.clone())?)
}

/// Deterministic block content: every block differs, and so does each run's file.
fn fill(block: &mut [u8], index: u64) {
    let mut x = index.wrapping_mul(0x9e37_79b9_7f4a_7c15) | 1;
    for word in block.chunks_mut(8) {
        x ^= x << 13;
        x ^= x >> 7;
        x ^= x << 17;
        let bytes = x.to_le_bytes();
        word.copy_from_slice(&bytes[..word.len()]);
    }
}

fn rate(bytes: u64, secs: f64) -> String {
    format!("{:.0} MB/s", bytes as f64 / secs / 1e6)
}

/// Sequential write then read of one file of `size` bytes in `block`-byte requests.
pub fn data(setup: &Setup, size: u64, block: usize) -> Result<()> {
    let client = client(setup)?;
    let path = "/.sfs-bench-data";
    let blocks = size.div_ceil(block as u64);
    let mut buf = vec![0u8; block];
    let fd = client.open(path, libc::O_RDWR | libc::O_CREAT | libc::O_TRUNC, 0o644)?;
    let started = Instant::now();
    for i in 0..blocks {
        fill(&mut buf, i);
        client.write(fd, &buf)?;
    }
    let write_secs = started.elapsed().as_secs_f64();
    let started = Instant::now();
    client.fsync(fd)?;
    let sync_secs = started.elapsed().as_secs_f64();
    let mut expect = vec![0u8; block];
    client.lseek(fd, 0, sfs_client::Whence::Set)?;
    let started = Instant::now();
    for i in 0..blocks {
        let n = client.read(fd, &mut buf)?;
        fill(&mut expect, i);
        if n != block || buf != expect {
            bail!("verification failed at block {i}");
        }
    }
    let read_secs = started.elapsed().as_secs_f64();
    client.close(fd)?;
    client.unlink(path)?;
    let total = blocks * block as u64;
    outln!(
        "data: {} MiB in {} KiB requests, {} server(s)",
        total >> 20,
        block >> 10,
        client.server_count()
    )?;
    outln!(
        "  write  {:>10}  ({write_secs:.2} s; fsync afterwards {sync_secs:.2} s)",
        rate(total, write_secs)
    )?;
    outln!(
        "  read   {:>10}  ({read_secs:.2} s, verified)",
        rate(total, read_secs)
    )?;
    Ok(())
}

/// Create, stat and remove `files` empty files from one thread.
pub fn metadata(setup: &Setup, files: usize) -> Result<()> {
    let client = client(setup)?;
    let dir = "/.sfs-bench-meta";
    let _ = client.mkdir(dir, 0o755);
    let names: Vec<String> = (0..files).map(|i| format!("{dir}/f{i}")).collect();
    let mut phases = Vec::new();
    let started = Instant::now();
    for n in &names {
        let fd = client.open(n, libc::O_WRONLY | libc::O_CREAT | libc::O_EXCL, 0o644)?;
        client.close(fd)?;
    }
    phases.push(("create", started.elapsed().as_secs_f64()));
    let started = Instant::now();
    for n in &names {
        if client.stat(n)?.mode & libc::S_IFMT != libc::S_IFREG {
            bail!("{n}: not a regular file");
        }
    }
    phases.push(("stat", started.elapsed().as_secs_f64()));
    let started = Instant::now();
    for n in &names {
        client.unlink(n)?;
    }
    phases.push(("remove", started.elapsed().as_secs_f64()));
    client.rmdir(dir)?;
    outln!(
        "metadata: {files} files, one thread, {} server(s)",
        client.server_count()
    )?;
    for (phase, secs) in phases {
        outln!(
            "  {phase:<7} {:>9.0} ops/s  ({secs:.2} s)",
            files as f64 / secs
        )?;
    }
    Ok(())
}
