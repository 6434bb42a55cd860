//! The gRPC side of the request metrics: a tower layer around tonic's
//! router that counts every gRPC request by method (the last segment of its
//! path, `/sfs.Metadata/GrowSize`, which names the lean method `grow_size`),
//! times it, counts its failure by errno, and logs it at debug level — as
//! [`super::metered::MeteredDispatch`] does for the lean protocol.

use super::Metrics;
use http_types::{HeaderMap, Request, Response};
use sfs_global::Errno;
use std::future::Future;
use std::pin::Pin;
use std::sync::Arc;
use std::task::{Context, Poll};
use std::time::Instant;

/// Wraps tonic's router in [`GrpcMetered`].
#[derive(Clone)]
pub struct GrpcMetricsLayer {
    metrics: Arc<Metrics>,
}

impl GrpcMetricsLayer {
    pub fn new(metrics: Arc<Metrics>) -> Self {
        GrpcMetricsLayer { metrics }
    }
}

impl<S> tower::Layer<S> for GrpcMetricsLayer {
    type Service = GrpcMetered<S>;

    fn layer(&self, inner: S) -> Self::Service {
        GrpcMetered {
            inner,
            metrics: self.metrics.clone(),
        }
    }
}

/// Every gRPC request counted when its response (headers) is ready.
#[derive(Clone)]
pub struct GrpcMetered<S> {
    inner: S,
    metrics: Arc<Metrics>,
}

/// The errno of a failed gRPC answer: tonic sends a handler's error as a
/// trailers-only response, its status (and SFS's errno header) in the
/// headers; a success carries its status in the trailers, after the body.
fn failure(headers: &HeaderMap) -> Option<Errno> {
    let status = headers.get("grpc-status")?.to_str().ok()?;
    if status == "0" {
        return None;
    }
    let errno = headers
        .get(sfs_rpc::ERRNO_HEADER)
        .and_then(|v| v.to_str().ok())
        .and_then(|v| v.parse::<i32>().ok())
        .map_or(Errno::EIO, Errno);
    Some(errno)
}

impl<S, B, R> tower::Service<Request<B>> for GrpcMetered<S>
where
    S: tower::Service<Request<B>, Response = Response<R>>,
    S::Future: Send + 'static,
    S::Error: 'static,
    R: 'static,
{
    type Response = Response<R>;
    type Error = S::Error;
    type Future = Pin<Box<dyn Future<Output = Result<Response<R>, S::Error>> + Send>>;

    fn poll_ready(&mut self, cx: &mut Context<'_>) -> Poll<Result<(), Self::Error>> {
        self.inner.poll_ready(cx)
    }

    fn call(&mut self, request: Request<B>) -> Self::Future {
        let path = request.uri().path().to_string();
        let metrics = self.metrics.clone();
        let started = Instant::now();
        let answer = self.inner.call(request);
        Box::pin(async move {
            let result = answer.await;
            let errno = match &result {
                Ok(response) => failure(response.headers()),
                Err(_) => Some(Errno::EIO),
            };
            let elapsed = started.elapsed();
            metrics.grpc_done(&path, elapsed, errno);
            tracing::debug!(
                target: "sfs_server::requests",
                protocol = "grpc",
                method = %path,
                result = %errno.map_or("ok".to_string(), |e| e.name()),
                micros = elapsed.as_micros() as u64,
                "request"
            );
            result
        })
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_trailers_only_failure_gives_its_errno() {
        let mut headers = HeaderMap::new();
        assert_eq!(failure(&headers), None);
        headers.insert("grpc-status", "0".parse().unwrap());
        assert_eq!(failure(&headers), None);
        headers.insert("grpc-status", "5".parse().unwrap());
        assert_eq!(failure(&headers), Some(Errno::EIO));
        headers.insert(sfs_rpc::ERRNO_HEADER, "2".parse().unwrap());
        assert_eq!(failure(&headers), Some(Errno::ENOENT));
    }

    #[test]
    fn grpc_paths_name_lean_methods() {
        use super::super::grpc_method;
        assert_eq!(grpc_method("/sfs.Metadata/GrowSize"), Some(4));
        assert_eq!(grpc_method("/sfs.Metadata/Stat"), Some(2));
        assert_eq!(grpc_method("/sfs.ChunkControl/ReadChunk"), Some(36));
        assert_eq!(grpc_method("/sfs.Metadata/NoSuchThing"), None);
    }
}
