//! Writing to sockets without SIGPIPE.
//!
//! The client library runs inside unmodified programs (the LD_PRELOAD
//! shim), whose SIGPIPE usually has its default action: a `write` or
//! `writev` to a data connection whose server just died would kill the
//! program instead of failing with EPIPE. Every client-side socket write of
//! the data transports goes through [`send_all`], a `sendmsg` with
//! `MSG_NOSIGNAL`.

use std::future::Future;
use std::io::{ErrorKind, IoSlice};
use std::os::fd::AsFd;
use tokio::io::Interest;

/// A tokio socket: readiness and non-blocking attempts.
pub trait Socket: AsFd {
    fn writable(&self) -> impl Future<Output = std::io::Result<()>> + Send;
    fn try_write_io<R>(&self, f: impl FnOnce() -> std::io::Result<R>) -> std::io::Result<R>;
}

impl Socket for tokio::net::TcpStream {
    fn writable(&self) -> impl Future<Output = std::io::Result<()>> + Send {
        tokio::net::TcpStream::writable(self)
    }
    fn try_write_io<R>(&self, f: impl FnOnce() -> std::io::Result<R>) -> std::io::Result<R> {
        self.try_io(Interest::WRITABLE, f)
    }
}

impl Socket for tokio::net::UnixStream {
    fn writable(&self) -> impl Future<Output = std::io::Result<()>> + Send {
        tokio::net::UnixStream::writable(self)
    }
    fn try_write_io<R>(&self, f: impl FnOnce() -> std::io::Result<R>) -> std::io::Result<R> {
        self.try_io(Interest::WRITABLE, f)
    }
}

/// Writes all of `parts`, in order, with as few `sendmsg(MSG_NOSIGNAL)`
/// calls as the socket allows.
pub async fn send_all<S: Socket>(socket: &S, parts: &[&[u8]]) -> std::io::Result<()> {
    let total: usize = parts.iter().map(|p| p.len()).sum();
    let mut written = 0;
    while written < total {
        // The slices still to send, the first one cut by what went out.
        let mut skip = written;
        let mut slices = Vec::with_capacity(parts.len());
        for part in parts {
            if skip >= part.len() {
                skip -= part.len();
                continue;
            }
            slices.push(IoSlice::new(&part[skip..]));
            skip = 0;
        }
        socket.writable().await?;
        let sent = socket.try_write_io(|| {
            let mut control = rustix::net::SendAncillaryBuffer::default();
            rustix::net::sendmsg(
                socket.as_fd(),
                &slices,
                &mut control,
                rustix::net::SendFlags::NOSIGNAL | rustix::net::SendFlags::DONTWAIT,
            )
            .map_err(std::io::Error::from)
        });
        match sent {
            Ok(0) => return Err(ErrorKind::WriteZero.into()),
            Ok(n) => written += n,
            Err(e) if e.kind() == ErrorKind::WouldBlock => {}
            Err(e) => return Err(e),
        }
    }
    Ok(())
}

/// Why [`send_frame`] sent nothing or not all.
pub enum FrameError {
    /// The connection was given up (or a cancelled send left a partial
    /// frame on it) before this frame's turn came.
    Broken,
    /// The socket failed; the caller gives the connection up.
    Io(std::io::Error),
}

/// Sends one frame on a connection many requests share: takes the writer,
/// refuses a connection already `broken` (never write after another
/// request's half-sent frame), runs `registered` (the request becomes
/// answerable) and writes. A send cancelled half-way marks the connection
/// `broken`.
pub async fn send_frame<W, S>(
    writer: &tokio::sync::Mutex<W>,
    broken: &std::sync::atomic::AtomicBool,
    registered: impl FnOnce(),
    parts: &[&[u8]],
) -> Result<(), FrameError>
where
    W: AsRef<S>,
    S: Socket,
{
    use std::sync::atomic::Ordering;
    let writer = writer.lock().await;
    if broken.load(Ordering::SeqCst) {
        return Err(FrameError::Broken);
    }
    registered();
    let poison = scopeguard::guard((), |()| broken.store(true, Ordering::SeqCst));
    let sent = send_all(writer.as_ref(), parts).await;
    scopeguard::ScopeGuard::into_inner(poison);
    sent.map_err(FrameError::Io)
}
