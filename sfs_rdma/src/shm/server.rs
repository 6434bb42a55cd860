//! The server side of the node-local transport: the socket, the hello and
//! its checks, and the loop that serves one client's requests from its
//! shared memory.

use super::*;

/// Binds the node-local socket at `path` (a stale socket file of an earlier
/// run is replaced; the run directory's lock says no other server uses it).
pub fn bind(path: &Path) -> std::io::Result<UnixListener> {
    if path.as_os_str().len() > MAX_SOCKET_PATH {
        return Err(std::io::Error::new(
            std::io::ErrorKind::InvalidInput,
            format!(
                "socket path {} is longer than {MAX_SOCKET_PATH} bytes",
                path.display()
            ),
        ));
    }
    match std::fs::remove_file(path) {
        Err(e) if e.kind() != std::io::ErrorKind::NotFound => return Err(e),
        _ => {}
    }
    UnixListener::bind(path)
}

/// Whether the peer of a node-local connection runs as this server's user
/// or as root (`SO_PEERCRED`): the socket is for the job's own clients.
fn peer_allowed(stream: &UnixStream) -> Result<(), String> {
    let own = rustix::process::geteuid().as_raw();
    match stream.peer_cred() {
        Ok(cred) if cred.uid() == own || cred.uid() == 0 => Ok(()),
        Ok(cred) => Err(format!(
            "peer runs as uid {}, this server as uid {own}",
            cred.uid()
        )),
        Err(e) => Err(format!("no peer credentials: {e}")),
    }
}

/// Serves node-local clients on `listener` until `shutdown`; then lets every
/// connection finish the requests it has read. A client is served only if
/// it runs as the server's user (or root) and proves `secret`.
pub async fn serve(
    listener: UnixListener,
    server_name: String,
    handler: Arc<dyn ChunkHandler>,
    secret: Arc<Secret>,
    chunk_size: u64,
    places: ConnectionLimit,
    shutdown: impl Future<Output = ()> + Send + 'static,
) -> std::io::Result<()> {
    let name = Arc::new(server_name);
    let serve = move |mut stream: UnixStream, _, stop| {
        let (handler, name, secret) = (handler.clone(), name.clone(), secret.clone());
        let place = places.admit();
        async move {
            let Some(_place) =
                limits::placed_or_refused(place, &mut stream, "node-local data").await
            else {
                return;
            };
            if let Err(why) = peer_allowed(&stream) {
                tracing::info!("node-local data connection refused: {why}");
                auth::refuse(&mut stream, &why).await;
                return;
            }
            if let Err(refused) = auth::server(&mut stream, &secret, Purpose::SharedMemory).await {
                tracing::info!("node-local data connection refused: {refused}");
                return;
            }
            handler.connection_opened();
            if let Err(e) = serve_connection(stream, &name, handler.clone(), chunk_size, stop).await
            {
                tracing::debug!("node-local data connection ended: {e}");
            }
            handler.connection_closed();
        }
    };
    accept::serve_connections(
        listener,
        "node-local data",
        shutdown,
        serve,
        accept::AtStop::Finish,
    )
    .await;
    Ok(())
}

/// Receives the hello and its memfd.
async fn receive_hello(stream: &UnixStream) -> std::io::Result<(Vec<u8>, Option<OwnedFd>)> {
    let mut bytes = vec![0u8; HELLO_FIXED + MAX_NAME];
    let mut space = [MaybeUninit::uninit(); rustix::cmsg_space!(ScmRights(1))];
    loop {
        stream.readable().await?;
        let got = stream.try_io(Interest::READABLE, || {
            let mut control = rustix::net::RecvAncillaryBuffer::new(&mut space);
            let mut iov = [std::io::IoSliceMut::new(&mut bytes)];
            let msg = rustix::net::recvmsg(
                stream.as_fd(),
                &mut iov,
                &mut control,
                rustix::net::RecvFlags::CMSG_CLOEXEC,
            )?;
            let mut fd = None;
            for message in control.drain() {
                if let rustix::net::RecvAncillaryMessage::ScmRights(fds) = message {
                    // Extra descriptors are dropped (closed) here.
                    for f in fds {
                        fd.get_or_insert(f);
                    }
                }
            }
            Ok((msg.bytes, fd))
        });
        match got {
            Ok((n, fd)) => {
                bytes.truncate(n);
                return Ok((bytes, fd));
            }
            Err(e) if e.kind() == std::io::ErrorKind::WouldBlock => continue,
            Err(e) => return Err(e),
        }
    }
}

/// Checks a hello and the memory attached to it; the region's slot count
/// on success.
fn accept_hello(
    bytes: &[u8],
    fd: Option<&OwnedFd>,
    server_name: &str,
    chunk_size: u64,
) -> Result<u32, (Errno, String)> {
    let slots = decode_hello(bytes, server_name, chunk_size)?;
    let Some(fd) = fd else {
        return Err((Errno::EPROTO, "no shared memory attached".into()));
    };
    // The slot size is the chunk size (checked).
    check_sealed(fd, slots as usize * chunk_size as usize).map_err(|why| (Errno::EINVAL, why))?;
    Ok(slots)
}

async fn serve_connection(
    stream: UnixStream,
    server_name: &str,
    handler: Arc<dyn ChunkHandler>,
    chunk_size: u64,
    mut stop: watch::Receiver<bool>,
) -> std::io::Result<()> {
    let (hello, fd) = tokio::select! {
        got = tokio::time::timeout(HELLO_TIMEOUT, receive_hello(&stream)) => match got {
            Ok(got) => got?,
            Err(_) => return Err(proto("no hello within the time allowed")),
        },
        _ = stop.wait_for(|s| *s) => return Ok(()),
    };
    let accepted = accept_hello(&hello, fd.as_ref(), server_name, chunk_size).and_then(|slots| {
        let fd = fd.as_ref().expect("checked by accept_hello");
        Region::map(fd, slots as usize * chunk_size as usize)
            .map(|region| (slots, region))
            .map_err(|e| (SfsError::from(e).errno, "mapping the region".to_string()))
    });
    drop(fd);
    let (slots, region) = match accepted {
        Ok(ok) => ok,
        Err((errno, why)) => {
            let mut stream = stream;
            let _ = stream.write_all(&encode_welcome(errno.0)).await;
            return Err(proto(format!("refused a node-local client: {why}")));
        }
    };
    let region = Arc::new(region);
    // Slots with a request running: a second request naming one of them is
    // a protocol error (two requests must never share bytes).
    let busy: Arc<Vec<AtomicBool>> = Arc::new((0..slots).map(|_| AtomicBool::new(false)).collect());
    let (mut reader, writer) = stream.into_split();
    let (reply_tx, reply_rx) = mpsc::channel::<ResponseHeader>(slots as usize);
    let writer_task = tokio::spawn(write_replies(writer, encode_welcome(0), reply_rx));
    let mut in_flight = JoinSet::new();
    let result = loop {
        let mut raw = [0u8; SHM_REQUEST_LEN];
        tokio::select! {
            _ = stop.wait_for(|s| *s) => break Ok(()),
            read = reader.read_exact(&mut raw) => if read.is_err() { break Ok(()) },
        }
        let (header, slot) = match decode_request(&raw, chunk_size, slots) {
            Ok(ok) => ok,
            Err(e) => break Err(proto(e.message)),
        };
        if busy[slot as usize].swap(true, Ordering::AcqRel) {
            break Err(proto(format!("slot {slot} named by two requests at once")));
        }
        let (handler, region, reply_tx, busy) = (
            handler.clone(),
            region.clone(),
            reply_tx.clone(),
            busy.clone(),
        );
        in_flight.spawn(async move {
            let result = tokio::task::spawn_blocking(move || {
                let len = header.chunk.len as usize;
                let start = region.at(slot as usize * chunk_size as usize, len);
                match header.op {
                    Op::Write => {
                        // SAFETY: `start..start + len` lies in the mapping
                        // (`at` checks) which `region` keeps alive; no other
                        // request names the slot while this one runs
                        // (`busy`), the client does not touch it meanwhile
                        // (module documentation), and the bytes only reach
                        // the chunk store's pwrite.
                        let data = unsafe { std::slice::from_raw_parts(start, len) };
                        handler.write_chunk(&header.chunk, data).map(|()| 0)
                    }
                    Op::Read => {
                        // SAFETY: as above; the slot is this request's alone
                        // (`busy`) until it is answered.
                        let buf = unsafe { std::slice::from_raw_parts_mut(start, len) };
                        handler.read_chunk(&header.chunk, buf)
                    }
                }
            })
            .await
            .unwrap_or_else(|_| Err(SfsError::io("chunk I/O task failed")));
            busy[slot as usize].store(false, Ordering::Release);
            let _ = reply_tx
                .send(ResponseHeader::answering(header.request_id, result))
                .await;
        });
        while in_flight.try_join_next().is_some() {}
    };
    while in_flight.join_next().await.is_some() {}
    drop(reply_tx);
    let _ = writer_task.await;
    result
}

/// Sends the welcome, then every answer.
async fn write_replies(
    mut writer: OwnedWriteHalf,
    welcome: [u8; WELCOME_LEN],
    mut replies: mpsc::Receiver<ResponseHeader>,
) {
    if writer.write_all(&welcome).await.is_err() {
        return;
    }
    while let Some(header) = replies.recv().await {
        if writer.write_all(&header.encode()).await.is_err() {
            return;
        }
    }
    let _ = writer.shutdown().await;
}
