//! Counting wrappers around what serves requests: the chunk handler each
//! data transport calls ([`MeteredChunks`]) and the lean RPC dispatch
//! ([`MeteredDispatch`]). Each adds relaxed atomics and a histogram bucket
//! to a request, nothing else.

use super::{Metrics, Transport};
use bytes::Bytes;
use sfs_global::SfsResult;
use sfs_rdma::{ChunkHandler, ChunkRef};
use sfs_rpc::lean::Dispatch;
use std::future::Future;
use std::pin::Pin;
use std::sync::atomic::Ordering;
use std::sync::Arc;
use std::time::Instant;

/// The chunk store as one transport sees it: every read and write counted
/// under that transport.
pub struct MeteredChunks {
    inner: Arc<dyn ChunkHandler>,
    metrics: Arc<Metrics>,
    transport: Transport,
}

impl MeteredChunks {
    pub fn wrap(
        inner: Arc<dyn ChunkHandler>,
        metrics: Arc<Metrics>,
        transport: Transport,
    ) -> Arc<dyn ChunkHandler> {
        Arc::new(MeteredChunks {
            inner,
            metrics,
            transport,
        })
    }
}

/// Counts one chunk write of `len` bytes under `transport`.
pub fn count_write(
    metrics: &Metrics,
    transport: Transport,
    len: u64,
    started: Instant,
    result: &SfsResult<()>,
) {
    let counters = metrics.transport(transport);
    counters.writes.fetch_add(1, Ordering::Relaxed);
    counters.write_latency.observe(started.elapsed());
    match result {
        Ok(()) => {
            counters.bytes_in.fetch_add(len, Ordering::Relaxed);
        }
        Err(e) => metrics.data_error(e.errno),
    }
}

/// Counts one chunk read that answered `result` bytes under `transport`.
pub fn count_read(
    metrics: &Metrics,
    transport: Transport,
    started: Instant,
    result: &SfsResult<usize>,
) {
    let counters = metrics.transport(transport);
    counters.reads.fetch_add(1, Ordering::Relaxed);
    counters.read_latency.observe(started.elapsed());
    match result {
        Ok(n) => {
            counters.bytes_out.fetch_add(*n as u64, Ordering::Relaxed);
        }
        Err(e) => metrics.data_error(e.errno),
    }
}

/// One chunk request at debug level: which file, chunk and range, and how
/// it ended.
fn log_chunk(
    op: &str,
    transport: Transport,
    chunk: &ChunkRef,
    started: Instant,
    error: Option<&sfs_global::SfsError>,
) {
    tracing::debug!(
        target: "sfs_server::requests",
        protocol = ?transport,
        method = op,
        file = %chunk.id,
        chunk = chunk.index,
        offset = chunk.offset,
        len = chunk.len,
        result = %error.map_or("ok".to_string(), |e| e.errno.name()),
        micros = started.elapsed().as_micros() as u64,
        "chunk"
    );
}

impl ChunkHandler for MeteredChunks {
    fn write_chunk(&self, chunk: &ChunkRef, data: &[u8]) -> SfsResult<()> {
        let started = Instant::now();
        let result = self.inner.write_chunk(chunk, data);
        log_chunk(
            "write",
            self.transport,
            chunk,
            started,
            result.as_ref().err(),
        );
        count_write(
            &self.metrics,
            self.transport,
            data.len() as u64,
            started,
            &result,
        );
        result
    }

    fn read_chunk(&self, chunk: &ChunkRef, buf: &mut [u8]) -> SfsResult<usize> {
        let started = Instant::now();
        let result = self.inner.read_chunk(chunk, buf);
        log_chunk(
            "read",
            self.transport,
            chunk,
            started,
            result.as_ref().err(),
        );
        count_read(&self.metrics, self.transport, started, &result);
        result
    }

    fn connection_opened(&self) {
        let counters = self.metrics.transport(self.transport);
        counters.connections.fetch_add(1, Ordering::Relaxed);
    }

    fn connection_closed(&self) {
        let counters = self.metrics.transport(self.transport);
        counters.connections.fetch_sub(1, Ordering::Relaxed);
    }
}

/// The lean RPC dispatch with every request counted by method, timed, and
/// its failure counted by errno.
pub struct MeteredDispatch {
    inner: Arc<dyn Dispatch>,
    metrics: Arc<Metrics>,
}

impl MeteredDispatch {
    pub fn wrap(inner: Arc<dyn Dispatch>, metrics: Arc<Metrics>) -> Arc<dyn Dispatch> {
        Arc::new(MeteredDispatch { inner, metrics })
    }
}

impl Dispatch for MeteredDispatch {
    fn call(
        &self,
        method: u16,
        caller: Option<sfs_global::access::Caller>,
        body: Bytes,
    ) -> Pin<Box<dyn Future<Output = SfsResult<Vec<u8>>> + Send + '_>> {
        Box::pin(async move {
            let started = Instant::now();
            let uid = caller.as_ref().map(|c| c.uid);
            let bytes = body.len();
            let result = self.inner.call(method, caller, body).await;
            let errno = result.as_ref().err().map(|e| e.errno);
            let elapsed = started.elapsed();
            self.metrics.rpc_done(method, elapsed, errno);
            tracing::debug!(
                target: "sfs_server::requests",
                protocol = "lean",
                method = sfs_rpc::methods::method_name(method).unwrap_or("unknown"),
                uid = ?uid,
                request_bytes = bytes,
                result = %errno.map_or("ok".to_string(), |e| e.name()),
                micros = elapsed.as_micros() as u64,
                "request"
            );
            result
        })
    }
}
