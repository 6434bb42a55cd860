//! A minimal HTTP/1.1 responder for Prometheus scrapes: `GET /metrics`
//! answers the exposition text, any other path 404, any other method 405;
//! one request per connection (`Connection: close`). A scraper asks once
//! every few seconds, so nothing here needs a framework; what a client
//! sends is bounded (request head up to [`MAX_HEAD_BYTES`], read within
//! [`READ_TIMEOUT`]) so a silent or endless client costs nothing lasting.

use crate::shutdown::Shutdown;
use anyhow::Context;
use sfs_global::hostfile::HostEntry;
use std::future::Future;
use std::net::{IpAddr, SocketAddr};
use std::sync::Arc;
use std::time::Duration;
use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::net::{TcpListener, TcpStream};

/// The request line and headers a scrape may send.
const MAX_HEAD_BYTES: usize = 8 * 1024;

/// How long a connection may take to send its request.
const READ_TIMEOUT: Duration = Duration::from_secs(10);

/// The content type of the text exposition format 0.0.4.
pub const CONTENT_TYPE: &str = "text/plain; version=0.0.4; charset=utf-8";

/// Binds the metrics port of the server `entry` on `ip`: its hostfile port
/// plus `offset` (config `metrics_port_offset`); `None` when the offset is
/// 0 (metrics off).
pub async fn bind(
    offset: u16,
    entry: &HostEntry,
    ip: IpAddr,
) -> anyhow::Result<Option<TcpListener>> {
    let name = &entry.name;
    if offset == 0 {
        return Ok(None);
    }
    let Some(port) = entry.port.checked_add(offset) else {
        anyhow::bail!(
            "config: field `metrics_port_offset` {offset} plus port {} of server {name} exceeds 65535",
            entry.port
        );
    };
    let addr = SocketAddr::new(ip, port);
    let listener = TcpListener::bind(addr).await.with_context(|| {
        format!(
            "server {name}: cannot bind the metrics address {addr} (config `metrics_port_offset`)"
        )
    })?;
    tracing::info!("server {name}: Prometheus metrics on http://{addr}/metrics");
    Ok(Some(listener))
}

/// Answers scrapes on `listener` with what `body` produces, until
/// `shutdown`.
pub async fn serve<F, Fut>(listener: TcpListener, body: F, shutdown: Shutdown)
where
    F: Fn() -> Fut + Send + Sync + 'static,
    Fut: Future<Output = String> + Send,
{
    let body = Arc::new(body);
    let serve = move |stream: TcpStream, peer: std::net::SocketAddr, _| {
        let body = body.clone();
        async move {
            if let Err(e) = answer(stream, body.as_ref()).await {
                tracing::debug!(%peer, "metrics request failed: {e}");
            }
        }
    };
    sfs_rpc::accept::serve_connections(
        listener,
        "metrics",
        shutdown.wait(),
        serve,
        sfs_rpc::accept::AtStop::Abort,
    )
    .await;
}

/// Reads one request head and answers it.
async fn answer<F, Fut>(mut stream: TcpStream, body: &F) -> std::io::Result<()>
where
    F: Fn() -> Fut,
    Fut: Future<Output = String>,
{
    let head = tokio::time::timeout(READ_TIMEOUT, read_head(&mut stream))
        .await
        .map_err(|_| std::io::Error::new(std::io::ErrorKind::TimedOut, "no request in time"))??;
    let (status, content) = match route(&head) {
        Route::Metrics => ("200 OK", body().await),
        Route::NotFound => ("404 Not Found", "only /metrics is served here\n".into()),
        Route::BadMethod => ("405 Method Not Allowed", "only GET is served here\n".into()),
        Route::Malformed => ("400 Bad Request", "not an HTTP/1 request\n".into()),
    };
    let response = format!(
        "HTTP/1.1 {status}\r\nContent-Type: {CONTENT_TYPE}\r\nContent-Length: {}\r\nConnection: close\r\n\r\n{content}",
        content.len()
    );
    stream.write_all(response.as_bytes()).await?;
    stream.shutdown().await
}

/// Reads until the blank line that ends a request head.
async fn read_head(stream: &mut TcpStream) -> std::io::Result<String> {
    let mut head = Vec::with_capacity(512);
    let mut buf = [0u8; 1024];
    while !head.windows(4).any(|w| w == b"\r\n\r\n") {
        let n = stream.read(&mut buf).await?;
        if n == 0 {
            break; // what came is all there is
        }
        head.extend_from_slice(&buf[..n]);
        if head.len() > MAX_HEAD_BYTES {
            return Err(std::io::Error::new(
                std::io::ErrorKind::InvalidData,
                "request head too long",
            ));
        }
    }
    Ok(String::from_utf8_lossy(&head).into_owned())
}

#[derive(Debug, PartialEq, Eq)]
enum Route {
    Metrics,
    NotFound,
    BadMethod,
    Malformed,
}

/// What a request line asks for.
fn route(head: &str) -> Route {
    let line = head.lines().next().unwrap_or("");
    let mut parts = line.split(' ');
    let (Some(method), Some(target), Some(version)) = (parts.next(), parts.next(), parts.next())
    else {
        return Route::Malformed;
    };
    if !version.starts_with("HTTP/1.") {
        return Route::Malformed;
    }
    if method != "GET" {
        return Route::BadMethod;
    }
    // A query string (`?name[]=...`) is allowed and ignored.
    match target.split('?').next() {
        Some("/metrics") => Route::Metrics,
        _ => Route::NotFound,
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn request_lines_are_routed() {
        assert_eq!(
            route("GET /metrics HTTP/1.1\r\nHost: x\r\n\r\n"),
            Route::Metrics
        );
        assert_eq!(route("GET /metrics?x=1 HTTP/1.0\r\n\r\n"), Route::Metrics);
        assert_eq!(route("GET / HTTP/1.1\r\n\r\n"), Route::NotFound);
        assert_eq!(route("POST /metrics HTTP/1.1\r\n\r\n"), Route::BadMethod);
        assert_eq!(route("GET /metrics\r\n\r\n"), Route::Malformed);
        assert_eq!(route("PRI * HTTP/2.0\r\n\r\n"), Route::Malformed);
        assert_eq!(route(""), Route::Malformed);
    }
}
