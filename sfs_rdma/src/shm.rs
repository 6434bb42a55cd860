//! The node-local data transport: chunk bytes in shared memory.
//!
//! For a server on the same machine as the client, TCP over loopback costs
//! more CPU than the chunk store itself: the client's copy into socket
//! buffers, the loopback stack, the server's copy out of them, and the
//! wake-ups in between (docs/performance.md, "Data path: node-local shared
//! memory"). Here the client owns a shared memory region (a sealed memfd)
//! that it hands to the server once, over a Unix socket in the server's run
//! directory (SCM_RIGHTS); the region is cut into `slots` slots of one
//! chunk each. A write copies the caller's bytes into a free slot and sends
//! a 64-byte request naming the slot; the server's chunk store writes
//! straight from the slot. A read names a slot the server fills; the client
//! copies out. The Unix socket carries only headers.
//!
//! ```text
//! hello    (client → server, the memfd attached): magic "SFSM" | version u32 |
//!          slots u32 | slot size u64 | name length u16 | server name
//! welcome  (server → client): magic "SFSM" | status i32 (0 or errno)
//! request  (64 bytes): the TCP request header (wire.rs) | slot u32 | 4 pad
//! response (24 bytes): the TCP response header; `len` = bytes placed (reads)
//! ```
//!
//! Safety of the sharing: the memfd is sealed against shrinking and growing
//! before it is handed over (the server refuses one that is not), so the
//! server's mapping can never lose its pages (no SIGBUS). A slot belongs to
//! one request from the moment the client picks it until the server's
//! answer arrives — also when the caller gave up waiting (timeout), so a
//! slot the server may still touch is never given to another request. A
//! client that writes into a slot while its request runs can only spoil its
//! own data. The server checks the client names the server it expects (a
//! stale socket of another server is refused), every slot number and every
//! chunk range.
//!
//! The client uses this path when the server's hello says it runs on the
//! same kernel (boot id) and the socket accepts the hello; otherwise TCP
//! (or RDMA) as before.

use crate::nosignal::{send_frame, FrameError};
use crate::wire::{
    answered, Op, RequestHeader, ResponseHeader, REQUEST_HEADER_LEN, RESPONSE_HEADER_LEN,
};
use crate::{ChunkHandler, ChunkRef, DataChannel};
use futures::future::BoxFuture;
use sfs_global::secret::Secret;
use sfs_global::{Errno, SfsError, SfsResult};
use sfs_rpc::accept;
use sfs_rpc::auth::{self, Purpose};
use sfs_rpc::limits::{self, ConnectionLimit};
use sfs_rpc::mux::{Mux, OnCancel};
use std::future::Future;
use std::mem::MaybeUninit;
use std::os::fd::{AsFd, AsRawFd, FromRawFd, OwnedFd};
use std::path::{Path, PathBuf};
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::{Arc, Mutex};
use std::time::Duration;
use tokio::io::{AsyncReadExt, AsyncWriteExt, Interest};
use tokio::net::unix::{OwnedReadHalf, OwnedWriteHalf};
use tokio::net::{UnixListener, UnixStream};
use tokio::sync::{mpsc, watch, OwnedSemaphorePermit, Semaphore};
use tokio::task::JoinSet;

pub const MAGIC: [u8; 4] = *b"SFSM";
pub const VERSION: u32 = 1;
pub const SHM_REQUEST_LEN: usize = REQUEST_HEADER_LEN + 8;
/// Bytes of the server's welcome.
pub const WELCOME_LEN: usize = 8;
const MAX_NAME: usize = 255;
const HELLO_FIXED: usize = 4 + 4 + 4 + 8 + 2;

/// Slots of one client's region: requests it has in flight to one server.
pub const SLOTS: u32 = 8;
/// The most slots a server accepts from one client (each is memory the
/// client's reads make the server touch).
const MAX_SLOTS: u32 = 16;
/// Time a new connection has to send its hello.
const HELLO_TIMEOUT: Duration = Duration::from_secs(5);

/// The socket a server listens on for node-local clients.
pub fn socket_path(run_dir: &Path) -> PathBuf {
    run_dir.join("data.sock")
}

/// The longest path a Unix socket address holds (sun_path, with its NUL).
pub const MAX_SOCKET_PATH: usize = 107;

/// What identifies this machine's kernel: clients and servers with the same
/// boot id share memory (and one file system namespace is checked by the
/// socket itself).
pub fn node_id() -> &'static str {
    static ID: std::sync::OnceLock<String> = std::sync::OnceLock::new();
    ID.get_or_init(|| {
        std::fs::read_to_string("/proc/sys/kernel/random/boot_id")
            .map(|s| s.trim().to_string())
            .unwrap_or_default()
    })
}

/// A shared mapping of a memfd.
struct Region {
    ptr: *mut u8,
    len: usize,
}

// SAFETY: the mapping is plain memory owned by this value until Drop; all
// access goes through `slot_ptr`, whose users keep to the slot ownership
// rules of the module documentation.
unsafe impl Send for Region {}
// SAFETY: as above: concurrent users touch disjoint slots.
unsafe impl Sync for Region {}

impl Region {
    /// Maps `len` bytes of `fd` shared, read and write.
    fn map(fd: &OwnedFd, len: usize) -> std::io::Result<Region> {
        // SAFETY: a fresh shared mapping of a descriptor we hold; the kernel
        // picks the address; failure is MAP_FAILED, checked below.
        let ptr = unsafe {
            libc::mmap(
                std::ptr::null_mut(),
                len,
                libc::PROT_READ | libc::PROT_WRITE,
                libc::MAP_SHARED,
                fd.as_raw_fd(),
                0,
            )
        };
        if ptr == libc::MAP_FAILED {
            return Err(std::io::Error::last_os_error());
        }
        Ok(Region {
            ptr: ptr.cast(),
            len,
        })
    }

    /// The start of `len` bytes at `offset`, inside the mapping.
    fn at(&self, offset: usize, len: usize) -> *mut u8 {
        assert!(offset.checked_add(len).is_some_and(|end| end <= self.len));
        // SAFETY: in bounds, checked above.
        unsafe { self.ptr.add(offset) }
    }
}

impl Drop for Region {
    fn drop(&mut self) {
        // SAFETY: unmaps exactly the mapping `map` made; no reference into
        // it outlives the Region (slices are only lent while it is held).
        unsafe {
            libc::munmap(self.ptr.cast(), self.len);
        }
    }
}

/// A memfd of `len` bytes, sealed so that it can neither shrink nor grow.
fn sealed_memfd(len: usize) -> std::io::Result<OwnedFd> {
    // Under an RLIMIT_FSIZE below the region (`ulimit -f`), sizing the
    // memfd would raise SIGXFSZ, which ends the process: refuse first, so
    // the caller uses TCP.
    let mut limit = libc::rlimit {
        rlim_cur: 0,
        rlim_max: 0,
    };
    // SAFETY: `limit` is a valid, writable rlimit.
    if unsafe { libc::getrlimit(libc::RLIMIT_FSIZE, &mut limit) } == 0
        && limit.rlim_cur != libc::RLIM_INFINITY
        && len as u64 > limit.rlim_cur
    {
        return Err(std::io::Error::from_raw_os_error(libc::EFBIG));
    }
    // SAFETY: the name is a NUL-terminated literal.
    let fd = unsafe {
        libc::memfd_create(
            c"sfs-chunk-slots".as_ptr(),
            libc::MFD_CLOEXEC | libc::MFD_ALLOW_SEALING,
        )
    };
    if fd < 0 {
        return Err(std::io::Error::last_os_error());
    }
    // SAFETY: memfd_create returned a new descriptor that nothing else owns.
    let fd = unsafe { OwnedFd::from_raw_fd(fd) };
    // SAFETY: plain system calls on the descriptor we own.
    unsafe {
        if libc::ftruncate(fd.as_raw_fd(), len as libc::off_t) != 0
            || libc::fcntl(
                fd.as_raw_fd(),
                libc::F_ADD_SEALS,
                libc::F_SEAL_SHRINK | libc::F_SEAL_GROW | libc::F_SEAL_SEAL,
            ) != 0
        {
            return Err(std::io::Error::last_os_error());
        }
    }
    Ok(fd)
}

/// Is `fd` a memfd sealed against shrinking, of at least `len` bytes?
fn check_sealed(fd: &OwnedFd, len: usize) -> Result<(), String> {
    // SAFETY: fcntl and fstat on a descriptor we own; `st` is written by
    // fstat before it is read.
    let (seals, size) = unsafe {
        let seals = libc::fcntl(fd.as_raw_fd(), libc::F_GET_SEALS);
        let mut st: libc::stat = std::mem::zeroed();
        if libc::fstat(fd.as_raw_fd(), &mut st) != 0 {
            return Err(format!("fstat: {}", std::io::Error::last_os_error()));
        }
        (seals, st.st_size)
    };
    if seals < 0 || seals & libc::F_SEAL_SHRINK == 0 {
        return Err("the region is not sealed against shrinking".into());
    }
    if (size as u64) < len as u64 {
        return Err(format!("the region has {size} bytes, {len} announced"));
    }
    Ok(())
}

fn proto(why: impl Into<String>) -> std::io::Error {
    std::io::Error::new(std::io::ErrorKind::InvalidData, why.into())
}

/// A data request naming `slot`.
pub fn encode_request(header: &RequestHeader, slot: u32) -> [u8; SHM_REQUEST_LEN] {
    let mut b = [0u8; SHM_REQUEST_LEN];
    b[..REQUEST_HEADER_LEN].copy_from_slice(&header.encode());
    b[REQUEST_HEADER_LEN..REQUEST_HEADER_LEN + 4].copy_from_slice(&slot.to_le_bytes());
    b
}

/// Decodes a data request of a connection whose region has `slots` slots
/// of `chunk_size` bytes: its header and slot.
pub fn decode_request(
    b: &[u8; SHM_REQUEST_LEN],
    chunk_size: u64,
    slots: u32,
) -> SfsResult<(RequestHeader, u32)> {
    let header = RequestHeader::decode(
        b[..REQUEST_HEADER_LEN].try_into().expect("56 bytes"),
        chunk_size,
    )?;
    let slot = u32::from_le_bytes(
        b[REQUEST_HEADER_LEN..REQUEST_HEADER_LEN + 4]
            .try_into()
            .expect("4 bytes"),
    );
    if slot >= slots {
        return Err(SfsError::new(
            Errno::EPROTO,
            format!("bad data request: slot {slot} of {slots}"),
        ));
    }
    Ok((header, slot))
}

// --- server ------------------------------------------------------------------

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

/// A client's hello asking server `server_name` for `slots` slots of
/// `slot_size` bytes (the memfd travels beside it). `server_name` must be at
/// most 255 bytes (the client checks).
pub fn encode_hello(slots: u32, slot_size: u64, server_name: &str) -> Vec<u8> {
    let name = server_name.as_bytes();
    let mut hello = Vec::with_capacity(HELLO_FIXED + name.len());
    hello.extend_from_slice(&MAGIC);
    hello.extend_from_slice(&VERSION.to_le_bytes());
    hello.extend_from_slice(&slots.to_le_bytes());
    hello.extend_from_slice(&slot_size.to_le_bytes());
    hello.extend_from_slice(&(name.len() as u16).to_le_bytes());
    hello.extend_from_slice(name);
    hello
}

/// Decodes and checks a hello's bytes (the memory attached to it is checked
/// apart): it must be for `server_name`, with 1 to 16 slots of `chunk_size`
/// bytes. The slot count on success, else the errno the welcome carries
/// and why.
pub fn decode_hello(
    bytes: &[u8],
    server_name: &str,
    chunk_size: u64,
) -> Result<u32, (Errno, String)> {
    let refuse = |errno, why: String| Err((errno, why));
    if bytes.len() < HELLO_FIXED || bytes[..4] != MAGIC {
        return refuse(Errno::EPROTO, "not an SFS node-local hello".into());
    }
    let u32_at = |i: usize| u32::from_le_bytes(bytes[i..i + 4].try_into().expect("4 bytes"));
    let (version, slots) = (u32_at(4), u32_at(8));
    let slot_size = u64::from_le_bytes(bytes[12..20].try_into().expect("8 bytes"));
    let name_len = u16::from_le_bytes(bytes[20..22].try_into().expect("2 bytes")) as usize;
    if version != VERSION {
        return refuse(
            Errno::EPROTO,
            format!("version {version}, server speaks {VERSION}"),
        );
    }
    if bytes.len() != HELLO_FIXED + name_len {
        return refuse(Errno::EPROTO, "hello of the wrong length".into());
    }
    let name = &bytes[HELLO_FIXED..];
    if name != server_name.as_bytes() {
        return refuse(
            Errno::EADDRNOTAVAIL,
            format!(
                "the client asked for server {:?}, this is {server_name}",
                String::from_utf8_lossy(name)
            ),
        );
    }
    if slots == 0 || slots > MAX_SLOTS || slot_size != chunk_size {
        return refuse(
            Errno::EINVAL,
            format!("{slots} slots of {slot_size} bytes (chunk size {chunk_size}, at most {MAX_SLOTS} slots)"),
        );
    }
    Ok(slots)
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

/// The server's answer to a hello: `status` 0 (accepted) or the errno.
pub fn encode_welcome(status: i32) -> [u8; WELCOME_LEN] {
    let mut welcome = [0u8; WELCOME_LEN];
    welcome[..4].copy_from_slice(&MAGIC);
    welcome[4..].copy_from_slice(&status.to_le_bytes());
    welcome
}

/// Decodes the server's welcome: `Ok` when it accepted the hello, else the
/// errno it sent (EPROTO for a welcome without the magic and no errno).
pub fn decode_welcome(welcome: &[u8; WELCOME_LEN]) -> Result<(), Errno> {
    let status = i32::from_le_bytes(welcome[4..].try_into().expect("4 bytes"));
    if welcome[..4] != MAGIC || status != 0 {
        return Err(if status != 0 {
            Errno(status)
        } else {
            Errno::EPROTO
        });
    }
    Ok(())
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

// --- client ------------------------------------------------------------------

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
    let why = loop {
        let mut raw = [0u8; RESPONSE_HEADER_LEN];
        if let Err(e) = reader.read_exact(&mut raw).await {
            break format!("node-local data connection to {server} lost: {e}");
        }
        let header = match ResponseHeader::decode(&raw) {
            Ok(h) => h,
            Err(e) => break format!("node-local data connection to {server}: {e}"),
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

#[cfg(test)]
mod tests;
