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
    answered, read_response_header, Op, RequestHeader, ResponseHeader, REQUEST_HEADER_LEN,
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

mod client;
mod server;

pub use client::ShmChannel;
pub use server::{bind, serve};
