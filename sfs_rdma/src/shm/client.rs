//! The client side of the node-local transport: the region, its slots
//! (each owned by one request until the server answered it), and
//! [`ShmChannel`], the `DataChannel` over them.

use super::*;

/// A slot of a connection's region, owned by one request until the server
/// answered it; returns to the free list when dropped.
struct Slot {
    conn: Arc<ShmConnection>,
    index: u32,
    _permit: OwnedSemaphorePermit,
}

impl Slot {
    fn ptr(&self, len: usize) -> *mut u8 {
        assert!(len <= self.conn.slot_size, "{len} bytes in a slot");
        self.conn
            .region
            .at(self.index as usize * self.conn.slot_size, len)
    }
}

impl Drop for Slot {
    fn drop(&mut self) {
        // A slot of a connection given up is never used again: the server
        // may still be working on it (its answer will not be read).
        if !self.conn.mux.is_broken() {
            self.conn
                .free
                .lock()
                .expect("free slots lock")
                .push(self.index);
        }
    }
}

struct ShmConnection {
    region: Region,
    slot_size: usize,
    free: Mutex<Vec<u32>>,
    slots: Arc<Semaphore>,
    writer: tokio::sync::Mutex<OwnedWriteHalf>,
    /// The socket's descriptor (owned by `writer` and the reader task's
    /// half), to shut it down when the connection is given up.
    socket: std::os::fd::RawFd,
    /// Requests sent and not answered, each holding its slot until the
    /// server's answer hands it back to the caller.
    mux: Mux<(ResponseHeader, Slot), Slot>,
}

impl ShmConnection {
    /// Gives the connection up: every waiter fails, and the socket is shut
    /// down so that the reader task ends (it and the pending slots hold the
    /// connection: nothing else would free it).
    fn fail_all(&self, why: &str) {
        // Broken before anything else: no slot given back from here on
        // returns to the free list.
        self.mux.mark_broken();
        self.slots.close();
        // SAFETY: `socket` is the descriptor `writer` owns, open for as long
        // as `self` lives; shutdown does not close it.
        let _ = rustix::net::shutdown(
            unsafe { std::os::fd::BorrowedFd::borrow_raw(self.socket) },
            rustix::net::Shutdown::Both,
        );
        self.mux.fail_all(SfsError::io(why));
    }

    async fn take_slot(self: &Arc<Self>) -> SfsResult<Slot> {
        let permit = self
            .slots
            .clone()
            .acquire_owned()
            .await
            .map_err(|_| SfsError::io("node-local data connection closed"))?;
        let closed = || SfsError::io("node-local data connection closed");
        if self.mux.is_broken() {
            return Err(closed());
        }
        // Empty only when the connection was given up meanwhile.
        let index = self
            .free
            .lock()
            .expect("free slots lock")
            .pop()
            .ok_or_else(closed)?;
        Ok(Slot {
            conn: self.clone(),
            index,
            _permit: permit,
        })
    }
}

async fn read_answers(conn: Arc<ShmConnection>, mut reader: OwnedReadHalf, server: String) {
    let connection = format!("node-local data connection to {server}");
    let why = loop {
        let header = match read_response_header(&mut reader, &connection).await {
            Ok(h) => h,
            Err(why) => break why,
        };
        // A waiter that gave up drops the answer, and the slot with it.
        if !conn
            .mux
            .deliver(header.request_id, |slot| Ok((header, slot)))
        {
            break format!("node-local data connection to {server}: unexpected answer");
        }
    };
    tracing::debug!("{why}");
    conn.fail_all(&why);
}

/// Client side of the node-local transport to one server.
pub struct ShmChannel {
    path: PathBuf,
    server: String,
    slot_size: usize,
    conn: tokio::sync::Mutex<Option<Arc<ShmConnection>>>,
    connect_timeout: Duration,
    request_timeout: Duration,
    /// Proved to the server on every connect.
    secret: Arc<Secret>,
}

impl ShmChannel {
    /// A channel to server `server` at `path` (its run directory's socket)
    /// that connects on first use, and again after the connection broke,
    /// handing the server a fresh region of [`SLOTS`] chunks each time.
    pub fn new(
        path: &Path,
        server: &str,
        secret: Arc<Secret>,
        chunk_size: u64,
        connect_timeout: Duration,
        request_timeout: Duration,
    ) -> ShmChannel {
        ShmChannel {
            secret,
            path: path.to_path_buf(),
            server: server.to_string(),
            slot_size: chunk_size as usize,
            conn: tokio::sync::Mutex::new(None),
            connect_timeout,
            request_timeout,
        }
    }

    /// [`ShmChannel::new`], connected now. Fails when the socket is not
    /// there or not that server's: the caller then uses TCP.
    pub async fn connect(
        path: &Path,
        server: &str,
        secret: Arc<Secret>,
        chunk_size: u64,
        connect_timeout: Duration,
        request_timeout: Duration,
    ) -> SfsResult<ShmChannel> {
        let channel = Self::new(
            path,
            server,
            secret,
            chunk_size,
            connect_timeout,
            request_timeout,
        );
        channel.connection().await?;
        Ok(channel)
    }

    async fn open(&self) -> SfsResult<Arc<ShmConnection>> {
        let fail = |what: &str, e: std::io::Error| {
            SfsError::new(
                Errno::EIO,
                format!(
                    "node-local data path to {} ({}): {what}: {e}",
                    self.server,
                    self.path.display()
                ),
            )
        };
        let mut stream = UnixStream::connect(&self.path)
            .await
            .map_err(|e| fail("connect", e))?;
        let label = format!(
            "node-local data path to {} ({})",
            self.server,
            self.path.display()
        );
        auth::client(&mut stream, &self.secret, Purpose::SharedMemory, &label).await?;
        let len = SLOTS as usize * self.slot_size;
        let memfd = sealed_memfd(len).map_err(|e| fail("shared memory", e))?;
        let region = Region::map(&memfd, len).map_err(|e| fail("mapping", e))?;
        if self.server.len() > MAX_NAME {
            return Err(SfsError::invalid(format!(
                "server name {} is longer than {MAX_NAME} bytes",
                self.server
            )));
        }
        let hello = encode_hello(SLOTS, self.slot_size as u64, &self.server);
        let mut space = [MaybeUninit::uninit(); rustix::cmsg_space!(ScmRights(1))];
        loop {
            stream.writable().await.map_err(|e| fail("hello", e))?;
            let sent = stream.try_io(Interest::WRITABLE, || {
                let fds = [memfd.as_fd()];
                let mut control = rustix::net::SendAncillaryBuffer::new(&mut space);
                control.push(rustix::net::SendAncillaryMessage::ScmRights(&fds));
                let n = rustix::net::sendmsg(
                    stream.as_fd(),
                    &[std::io::IoSlice::new(&hello)],
                    &mut control,
                    rustix::net::SendFlags::NOSIGNAL,
                )?;
                Ok(n)
            });
            match sent {
                Ok(n) if n == hello.len() => break,
                Ok(_) => return Err(fail("hello", proto("sent in part"))),
                Err(e) if e.kind() == std::io::ErrorKind::WouldBlock => continue,
                Err(e) => return Err(fail("hello", e)),
            }
        }
        drop(memfd);
        let mut welcome = [0u8; WELCOME_LEN];
        stream
            .read_exact(&mut welcome)
            .await
            .map_err(|e| fail("welcome", e))?;
        if let Err(errno) = decode_welcome(&welcome) {
            return Err(SfsError::new(
                errno,
                format!(
                    "node-local data path to {} ({}): refused",
                    self.server,
                    self.path.display()
                ),
            ));
        }
        let socket = stream.as_raw_fd();
        let (reader, writer) = stream.into_split();
        let conn = Arc::new(ShmConnection {
            region,
            slot_size: self.slot_size,
            socket,
            free: Mutex::new((0..SLOTS).rev().collect()),
            slots: Arc::new(Semaphore::new(SLOTS as usize)),
            writer: tokio::sync::Mutex::new(writer),
            mux: Mux::new(),
        });
        tokio::spawn(read_answers(conn.clone(), reader, self.server.clone()));
        Ok(conn)
    }

    async fn connection(&self) -> SfsResult<Arc<ShmConnection>> {
        let mut current = self.conn.lock().await;
        if let Some(conn) = current.take() {
            if !conn.mux.is_broken() {
                *current = Some(conn.clone());
                return Ok(conn);
            }
            conn.fail_all("replaced after it broke");
        }
        let conn = tokio::time::timeout(self.connect_timeout, self.open())
            .await
            .map_err(|_| {
                SfsError::timed_out(format!(
                    "connecting to the node-local data path of {} timed out after {:?}",
                    self.server, self.connect_timeout
                ))
            })??;
        *current = Some(conn.clone());
        Ok(conn)
    }

    /// Runs one request: `fill` puts a write's bytes into the slot first;
    /// the answer comes with the slot (a read's bytes are in it).
    async fn call(
        &self,
        op: Op,
        chunk: ChunkRef,
        fill: impl FnOnce(*mut u8),
    ) -> SfsResult<(ResponseHeader, Slot)> {
        // The range must fit one slot (a chunk): `fill` and the reads copy
        // `chunk.len` bytes.
        chunk.check(self.slot_size as u64)?;
        let conn = self.connection().await?;
        let exchange = async {
            let slot = conn.take_slot().await?;
            fill(slot.ptr(chunk.len as usize));
            let id = conn.mux.next_id();
            let frame = encode_request(
                &RequestHeader {
                    op,
                    request_id: id,
                    chunk,
                },
                slot.index,
            );
            let lost = || {
                SfsError::io(format!(
                    "node-local data connection to {} lost",
                    self.server
                ))
            };
            // The writer first: a call cancelled while it waits for the
            // writer still owns its slot (dropped, so freed) and sent
            // nothing. Once registered, the slot is the request's until
            // the server answers or the connection is given up, however
            // this call ends.
            let mut registration = None;
            let register = || registration = Some(conn.mux.register(id, slot, OnCancel::Keep));
            match send_frame(&conn.writer, conn.mux.broken_flag(), register, &[&frame]).await {
                Ok(()) => {}
                Err(FrameError::Broken) => return Err(lost()),
                Err(FrameError::Io(e)) => conn.fail_all(&format!(
                    "node-local data connection to {} lost: {e}",
                    self.server
                )),
            }
            match registration {
                Some(Ok(registration)) => {
                    registration.answer().await.unwrap_or_else(|| Err(lost()))
                }
                // Given up (by the reader) between the writer's check and
                // registering: the slot went with the refused registration.
                _ => Err(lost()),
            }
        };
        answered(&self.server, self.request_timeout, &chunk, exchange).await
    }
}

impl Drop for ShmChannel {
    fn drop(&mut self) {
        if let Some(conn) = self.conn.get_mut().take() {
            conn.fail_all("channel closed");
        }
    }
}

impl DataChannel for ShmChannel {
    fn transport(&self) -> sfs_global::config::DataTransport {
        sfs_global::config::DataTransport::Shm
    }

    fn write_chunk<'a>(&'a self, chunk: ChunkRef, data: &'a [u8]) -> BoxFuture<'a, SfsResult<()>> {
        Box::pin(async move {
            if data.len() as u64 != chunk.len {
                return Err(SfsError::invalid(format!(
                    "{} bytes for a chunk range of {}",
                    data.len(),
                    chunk.len
                )));
            }
            self.call(Op::Write, chunk, |dst| {
                // SAFETY: `dst` starts `chunk.len` bytes of a slot this call
                // owns (no request on it is in flight); `data` is as long
                // and is the caller's memory, not the region.
                unsafe { std::ptr::copy_nonoverlapping(data.as_ptr(), dst, data.len()) }
            })
            .await
            .map(|_| ())
        })
    }

    fn read_chunk<'a>(
        &'a self,
        chunk: ChunkRef,
        buf: &'a mut [u8],
    ) -> BoxFuture<'a, SfsResult<usize>> {
        Box::pin(async move {
            let (header, slot) = self.call(Op::Read, chunk, |_| {}).await?;
            let n = (header.len as usize).min(buf.len()).min(chunk.len as usize);
            // SAFETY: the server answered, so the slot is this call's alone
            // again, and `n` is within the request's length.
            unsafe { std::ptr::copy_nonoverlapping(slot.ptr(n), buf.as_mut_ptr(), n) };
            Ok(n)
        })
    }
}

// The tests reach into a connection (its slots, its writer): they live
// below the client.
#[cfg(test)]
#[path = "tests.rs"]
mod tests;
