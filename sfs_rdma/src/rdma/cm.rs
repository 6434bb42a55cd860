//! The rdmacm half of the RDMA transport's FFI edge: connection management.
//! The event channel, driven by tokio's `AsyncFd` so no thread busy-polls
//! it, and the ids (a listener or one connection's endpoint) that bind,
//! resolve, connect, accept, reject and disconnect, each destroyed exactly
//! once and before its channel. It lives apart from `verbs.rs`, which owns
//! the ibverbs objects a connection moves data with, so connecting reads
//! apart from the data path; the fd helpers both use stay in `verbs.rs`.
//!
//! With `verbs.rs`, this holds the transport's calls into rdmacm and
//! ibverbs (see that module's doc for the rest of its `unsafe`).

use super::verbs::{os_error, set_nonblocking, BorrowedFd, QueuePair};
use rdma_sys::*;
use sfs_global::config::RdmaConfig;
use sfs_global::{Errno, SfsError, SfsResult};
use std::net::SocketAddr;
use std::ptr;
use std::sync::Arc;
use tokio::io::unix::AsyncFd;
use tokio::io::Interest;

/// An rdmacm event, copied out before it is acknowledged.
pub struct CmEvent {
    pub kind: u32,
    pub status: i32,
    pub id: *mut rdma_cm_id,
    pub private_data: Vec<u8>,
}

/// An rdmacm event channel whose fd tokio watches.
pub struct EventChannel {
    channel: *mut rdma_event_channel,
    fd: Option<AsyncFd<BorrowedFd>>,
}

// SAFETY: rdmacm event channels may be used from any thread; we only read
// events from one task at a time (callers hold `&self` through one owner).
unsafe impl Send for EventChannel {}
// SAFETY: see above; `rdma_get_cm_event` is thread-safe in librdmacm.
unsafe impl Sync for EventChannel {}

impl EventChannel {
    pub fn new() -> SfsResult<Arc<EventChannel>> {
        // SAFETY: no arguments; returns NULL (errno set) or a channel we own.
        let channel = unsafe { rdma_create_event_channel() };
        if channel.is_null() {
            return Err(os_error("rdma_create_event_channel"));
        }
        // SAFETY: `channel` is non-null and valid until destroyed in Drop.
        let raw = unsafe { (*channel).fd };
        let mut this = EventChannel { channel, fd: None };
        set_nonblocking(raw).map_err(|e| SfsError::io(format!("rdmacm channel: {e}")))?;
        // SAFETY: the fd belongs to the channel, which stays open until Drop,
        // where the AsyncFd is dropped first.
        let fd = unsafe { AsyncFd::register_with_interest(BorrowedFd(raw), Interest::READABLE) };
        this.fd = Some(fd.map_err(|e| SfsError::io(format!("rdmacm channel: {e}")))?);
        Ok(Arc::new(this))
    }

    pub fn raw(&self) -> *mut rdma_event_channel {
        self.channel
    }

    /// The next event of any id on this channel.
    pub async fn next(&self) -> SfsResult<CmEvent> {
        let fd = self.fd.as_ref().expect("fd registered");
        loop {
            let mut guard = fd
                .readable()
                .await
                .map_err(|e| SfsError::io(format!("rdmacm channel: {e}")))?;
            let mut event: *mut rdma_cm_event = ptr::null_mut();
            // SAFETY: the channel is valid; on success `event` points to an
            // event we must acknowledge exactly once (below).
            let rc = unsafe { rdma_get_cm_event(self.channel, &mut event) };
            if rc != 0 {
                let e = std::io::Error::last_os_error();
                if e.kind() == std::io::ErrorKind::WouldBlock {
                    guard.clear_ready();
                    continue;
                }
                return Err(SfsError::io(format!("rdma_get_cm_event: {e}")));
            }
            // SAFETY: `event` is valid until acknowledged; for connection
            // events `param.conn` is the active union member and its private
            // data pointer covers `private_data_len` bytes.
            let copied = unsafe {
                let ev = &*event;
                let conn = ev.param.conn;
                let private_data = if conn.private_data.is_null() {
                    Vec::new()
                } else {
                    std::slice::from_raw_parts(
                        conn.private_data as *const u8,
                        usize::from(conn.private_data_len),
                    )
                    .to_vec()
                };
                CmEvent {
                    kind: ev.event,
                    status: ev.status,
                    id: ev.id,
                    private_data,
                }
            };
            // SAFETY: acknowledged exactly once, after copying what we need.
            unsafe { rdma_ack_cm_event(event) };
            return Ok(copied);
        }
    }

    /// Waits for an event of `kind` (anything else is an error naming it).
    pub async fn expect(&self, kind: u32, what: &str) -> SfsResult<CmEvent> {
        let event = self.next().await?;
        if event.kind != kind {
            return Err(SfsError::new(
                Errno::EIO,
                format!(
                    "{what}: {} (status {})",
                    cm_event_name(event.kind),
                    event.status
                ),
            ));
        }
        Ok(event)
    }
}

impl Drop for EventChannel {
    fn drop(&mut self) {
        // Stop watching before the fd is closed with the channel.
        drop(self.fd.take());
        // SAFETY: created in `new`, destroyed only here, after every id on it
        // (ids hold an `Arc` of their channel).
        unsafe { rdma_destroy_event_channel(self.channel) };
    }
}

pub fn cm_event_name(kind: u32) -> &'static str {
    use rdma_sys::rdma_cm_event_type::*;
    match kind {
        RDMA_CM_EVENT_ADDR_RESOLVED => "address resolved",
        RDMA_CM_EVENT_ADDR_ERROR => "address resolution failed",
        RDMA_CM_EVENT_ROUTE_RESOLVED => "route resolved",
        RDMA_CM_EVENT_ROUTE_ERROR => "route resolution failed",
        RDMA_CM_EVENT_CONNECT_REQUEST => "connect request",
        RDMA_CM_EVENT_CONNECT_RESPONSE => "connect response",
        RDMA_CM_EVENT_CONNECT_ERROR => "connect error",
        RDMA_CM_EVENT_UNREACHABLE => "peer unreachable",
        RDMA_CM_EVENT_REJECTED => "connection rejected",
        RDMA_CM_EVENT_ESTABLISHED => "established",
        RDMA_CM_EVENT_DISCONNECTED => "disconnected",
        RDMA_CM_EVENT_DEVICE_REMOVAL => "device removed",
        RDMA_CM_EVENT_TIMEWAIT_EXIT => "timewait exit",
        _ => "other rdmacm event",
    }
}

fn sockaddr_of(addr: SocketAddr) -> libc::sockaddr_storage {
    // SAFETY: sockaddr_storage is plain old data; all-zero is a valid value.
    let mut storage: libc::sockaddr_storage = unsafe { std::mem::zeroed() };
    match addr {
        SocketAddr::V4(a) => {
            let sin = libc::sockaddr_in {
                sin_family: libc::AF_INET as libc::sa_family_t,
                sin_port: a.port().to_be(),
                sin_addr: libc::in_addr {
                    s_addr: u32::from_ne_bytes(a.ip().octets()),
                },
                sin_zero: [0; 8],
            };
            // SAFETY: sockaddr_in fits in sockaddr_storage, which is aligned for it.
            unsafe { ptr::write(&mut storage as *mut _ as *mut libc::sockaddr_in, sin) };
        }
        SocketAddr::V6(a) => {
            let sin6 = libc::sockaddr_in6 {
                sin6_family: libc::AF_INET6 as libc::sa_family_t,
                sin6_port: a.port().to_be(),
                sin6_flowinfo: a.flowinfo(),
                sin6_addr: libc::in6_addr {
                    s6_addr: a.ip().octets(),
                },
                sin6_scope_id: a.scope_id(),
            };
            // SAFETY: as above for sockaddr_in6.
            unsafe { ptr::write(&mut storage as *mut _ as *mut libc::sockaddr_in6, sin6) };
        }
    }
    storage
}

/// Private data a reject carries on InfiniBand and RoCE (IB CM REJ: 148
/// bytes).
pub const REJECT_REASON_MAX: usize = 148;

/// The reason a server put into its reject, if the private data holds one
/// (the CM pads it with zeros; a reject by the kernel carries none).
pub fn reject_reason(private_data: &[u8]) -> Option<String> {
    let end = private_data
        .iter()
        .position(|&b| b == 0)
        .unwrap_or(private_data.len());
    let text = std::str::from_utf8(&private_data[..end]).ok()?;
    (!text.is_empty() && !text.chars().any(char::is_control)).then(|| text.to_string())
}

/// An rdmacm id (a listener or one connection's endpoint).
pub struct CmId {
    id: *mut rdma_cm_id,
    _channel: Arc<EventChannel>,
}

// SAFETY: rdmacm ids may be used from any thread; the calls we make on one
// id are serialised by its owner.
unsafe impl Send for CmId {}
// SAFETY: see above.
unsafe impl Sync for CmId {}

impl CmId {
    pub fn new(channel: &Arc<EventChannel>) -> SfsResult<CmId> {
        let mut id = ptr::null_mut();
        // SAFETY: the channel is valid; `id` receives an id we own.
        let rc = unsafe {
            rdma_create_id(
                channel.raw(),
                &mut id,
                ptr::null_mut(),
                rdma_port_space::RDMA_PS_TCP,
            )
        };
        if rc != 0 {
            return Err(os_error("rdma_create_id"));
        }
        Ok(CmId {
            id,
            _channel: channel.clone(),
        })
    }

    /// Takes ownership of an id that arrived in a connect request.
    pub fn adopt(id: *mut rdma_cm_id, channel: &Arc<EventChannel>) -> CmId {
        CmId {
            id,
            _channel: channel.clone(),
        }
    }

    pub fn raw(&self) -> *mut rdma_cm_id {
        self.id
    }

    /// The verbs context of the device serving this id (null before the
    /// address is bound or resolved, or when no RDMA device serves it).
    pub fn verbs(&self) -> *mut ibv_context {
        // SAFETY: `id` is valid for our lifetime.
        unsafe { (*self.id).verbs }
    }

    /// The device port this id is bound to (valid once `verbs` is set).
    pub fn port_num(&self) -> u8 {
        // SAFETY: `id` is valid for our lifetime.
        unsafe { (*self.id).port_num }
    }

    pub fn bind(&self, addr: SocketAddr) -> SfsResult<()> {
        let mut storage = sockaddr_of(addr);
        // SAFETY: `storage` holds a valid sockaddr for the call's duration.
        let rc = unsafe { rdma_bind_addr(self.id, &mut storage as *mut _ as *mut _) };
        if rc != 0 {
            return Err(os_error(&format!("rdma_bind_addr {addr}")));
        }
        Ok(())
    }

    pub fn listen(&self, backlog: i32) -> SfsResult<()> {
        // SAFETY: a bound id.
        if unsafe { rdma_listen(self.id, backlog) } != 0 {
            return Err(os_error("rdma_listen"));
        }
        Ok(())
    }

    pub fn resolve_addr(&self, addr: SocketAddr, timeout_ms: u64) -> SfsResult<()> {
        let mut storage = sockaddr_of(addr);
        let timeout = i32::try_from(timeout_ms).unwrap_or(i32::MAX);
        // SAFETY: `storage` is a valid destination sockaddr for the call.
        let rc = unsafe {
            rdma_resolve_addr(
                self.id,
                ptr::null_mut(),
                &mut storage as *mut _ as *mut _,
                timeout,
            )
        };
        if rc != 0 {
            return Err(os_error(&format!("rdma_resolve_addr {addr}")));
        }
        Ok(())
    }

    pub fn resolve_route(&self, timeout_ms: u64) -> SfsResult<()> {
        let timeout = i32::try_from(timeout_ms).unwrap_or(i32::MAX);
        // SAFETY: an id whose address is resolved.
        if unsafe { rdma_resolve_route(self.id, timeout) } != 0 {
            return Err(os_error("rdma_resolve_route"));
        }
        Ok(())
    }

    fn conn_param(qp_num: u32, depth: u8, cfg: &RdmaConfig, private: &[u8]) -> rdma_conn_param {
        rdma_conn_param {
            private_data: if private.is_empty() {
                ptr::null()
            } else {
                private.as_ptr().cast()
            },
            private_data_len: u8::try_from(private.len()).expect("private data fits"),
            responder_resources: depth,
            initiator_depth: depth,
            flow_control: 1,
            retry_count: cfg.retry_count,
            rnr_retry_count: cfg.rnr_retry_count,
            srq: 0,
            qp_num,
        }
    }

    pub fn connect(&self, qp: &QueuePair, cfg: &RdmaConfig, private: &[u8]) -> SfsResult<()> {
        let mut param = Self::conn_param(qp.qp_num(), qp.rd_atomic, cfg, private);
        // SAFETY: `param` and the private data it points to outlive the call.
        if unsafe { rdma_connect(self.id, &mut param) } != 0 {
            return Err(os_error("rdma_connect"));
        }
        Ok(())
    }

    pub fn accept(&self, qp: &QueuePair, cfg: &RdmaConfig, private: &[u8]) -> SfsResult<()> {
        let mut param = Self::conn_param(qp.qp_num(), qp.rd_atomic, cfg, private);
        // SAFETY: as in `connect`.
        if unsafe { rdma_accept(self.id, &mut param) } != 0 {
            return Err(os_error("rdma_accept"));
        }
        Ok(())
    }

    /// Rejects a pending connect request, telling the client why in the
    /// reject's private data (cut to [`REJECT_REASON_MAX`] bytes).
    pub fn reject(&self, reason: &str) {
        let mut end = reason.len().min(REJECT_REASON_MAX);
        while !reason.is_char_boundary(end) {
            end -= 1;
        }
        let bytes = &reason.as_bytes()[..end];
        // SAFETY: an id of a pending connect request; rdmacm copies the
        // `bytes.len()` bytes of private data before returning.
        unsafe { rdma_reject(self.id, bytes.as_ptr().cast(), bytes.len() as u8) };
    }

    pub fn establish(&self) -> SfsResult<()> {
        // SAFETY: an active id whose QP we moved to RTS ourselves.
        if unsafe { rdma_establish(self.id) } != 0 {
            return Err(os_error("rdma_establish"));
        }
        Ok(())
    }

    pub fn disconnect(&self) {
        // SAFETY: valid id; harmless on an id that is not connected.
        unsafe { rdma_disconnect(self.id) };
    }
}

impl Drop for CmId {
    fn drop(&mut self) {
        // SAFETY: destroyed exactly once; its events are acknowledged as
        // soon as they are read, so this does not block.
        unsafe { rdma_destroy_id(self.id) };
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn reject_reasons_are_read_back_and_noise_is_not() {
        let mut padded = b"client eager threshold 65536 above ours (4096)".to_vec();
        padded.resize(REJECT_REASON_MAX, 0);
        assert_eq!(
            reject_reason(&padded).as_deref(),
            Some("client eager threshold 65536 above ours (4096)")
        );
        assert_eq!(reject_reason(&[]), None);
        assert_eq!(reject_reason(&[0; 148]), None);
        assert_eq!(reject_reason(&[0xff, 0xfe, 1]), None);
        assert_eq!(reject_reason(b"\x01\x02"), None);
    }

    #[test]
    fn event_channel_without_kernel_support_is_an_error_not_a_crash() {
        // Here (no RDMA in the kernel) this fails with ENODEV; on a machine
        // with RDMA it succeeds. Either way it returns.
        let rt = tokio::runtime::Builder::new_current_thread()
            .enable_io()
            .build()
            .unwrap();
        let _guard = rt.enter();
        match EventChannel::new() {
            Ok(_) => {}
            Err(e) => assert_ne!(e.errno, Errno(0)),
        }
    }
}
