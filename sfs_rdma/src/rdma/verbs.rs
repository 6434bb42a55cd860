//! The ibverbs half of the RDMA transport's FFI edge: owned wrappers around
//! one connection's verbs objects (protection domain, completion channel and
//! queue, RC queue pair, registered buffers), each destroyed exactly once in
//! the right order, with the completion channel driven by tokio's `AsyncFd`,
//! so no thread busy-polls a queue. The rdmacm half (event channel and ids)
//! is in `cm.rs`; the fd and errno helpers both halves use are here.
//!
//! Every `unsafe` block of the RDMA transport that calls into ibverbs or
//! rdmacm lives here and in `cm.rs`, apart from device discovery
//! (`rdma_devices` in `mod.rs`); the `unsafe` blocks of `client.rs` and
//! `server.rs` only take on the slot contract of [`Buffer::range_mut`] and
//! [`QueuePair::take_received`].

use super::cm::CmId;
use rdma_sys::*;
use sfs_global::config::RdmaConfig;
use sfs_global::{Errno, SfsError, SfsResult};
use std::os::fd::{AsRawFd, RawFd};
use std::ptr;
use tokio::io::unix::AsyncFd;
use tokio::io::Interest;

/// An fd owned by a C object; `AsyncFd` only watches it.
pub(super) struct BorrowedFd(pub(super) RawFd);

impl AsRawFd for BorrowedFd {
    fn as_raw_fd(&self) -> RawFd {
        self.0
    }
}

pub(super) fn set_nonblocking(fd: RawFd) -> std::io::Result<()> {
    // SAFETY: fcntl on an fd we own through its C object; no memory is passed.
    let flags = unsafe { libc::fcntl(fd, libc::F_GETFL) };
    if flags < 0 {
        return Err(std::io::Error::last_os_error());
    }
    // SAFETY: as above.
    if unsafe { libc::fcntl(fd, libc::F_SETFL, flags | libc::O_NONBLOCK) } < 0 {
        return Err(std::io::Error::last_os_error());
    }
    Ok(())
}

/// An errno-carrying error from a failed verbs/rdmacm call.
pub fn os_error(what: &str) -> SfsError {
    let e = std::io::Error::last_os_error();
    let errno = Errno(e.raw_os_error().unwrap_or(libc::EIO));
    SfsError::new(errno, format!("{what}: {e}"))
}

/// Maps a work completion status to the errno an application sees, with
/// the one mapping every transport follows (docs/architecture.md): a peer
/// that is gone or a connection that failed is EIO — retries exhausted,
/// requests flushed by a disconnect, access refused by a peer whose
/// registrations died with it — and a peer that breaks the protocol is
/// EPROTO. The status itself goes into the message.
pub fn wc_status_errno(status: u32) -> Errno {
    use rdma_sys::ibv_wc_status::*;
    match status {
        IBV_WC_SUCCESS => Errno(0),
        IBV_WC_REM_INV_REQ_ERR | IBV_WC_LOC_LEN_ERR | IBV_WC_REM_OP_ERR => Errno::EPROTO,
        _ => Errno::EIO,
    }
}

/// A registered, page-aligned buffer.
pub struct Buffer {
    ptr: *mut u8,
    len: usize,
    mr: *mut ibv_mr,
}

// SAFETY: the pointers are owned by the buffer and its memory region; the
// bytes are only touched under the slot discipline of `range_mut`.
unsafe impl Send for Buffer {}
// SAFETY: see above.
unsafe impl Sync for Buffer {}

impl Buffer {
    pub fn addr(&self) -> u64 {
        self.ptr as u64
    }
    pub fn len(&self) -> usize {
        self.len
    }
    pub fn is_empty(&self) -> bool {
        self.len == 0
    }
    pub fn lkey(&self) -> u32 {
        // SAFETY: the MR is valid while the buffer exists.
        unsafe { (*self.mr).lkey }
    }
    pub fn rkey(&self) -> u32 {
        // SAFETY: as above.
        unsafe { (*self.mr).rkey }
    }

    /// The bytes `[offset, offset + len)`.
    ///
    /// # Safety
    /// The caller has exclusive use of that range (it holds the slot that
    /// owns it) and the device is not writing it.
    #[allow(clippy::mut_from_ref)]
    pub unsafe fn range_mut(&self, offset: usize, len: usize) -> &mut [u8] {
        assert!(offset + len <= self.len, "range inside the buffer");
        // SAFETY: inside the allocation (checked above); exclusivity is the
        // caller's contract.
        unsafe { std::slice::from_raw_parts_mut(self.ptr.add(offset), len) }
    }
}

const PAGE: usize = 4096;

/// Queue-pair sizes derived from the tunables.
#[derive(Clone, Copy, Debug)]
pub struct QueueSizes {
    pub send: u32,
    pub recv: u32,
    pub cq: u32,
}

/// One connection's verbs objects: protection domain, completion channel,
/// completion queue, RC queue pair and registered buffers. The protection
/// domain is per connection, so an rkey a client learns is usable only on
/// its own connection.
pub struct QueuePair {
    pd: *mut ibv_pd,
    comp: *mut ibv_comp_channel,
    cq: *mut ibv_cq,
    qp: *mut ibv_qp,
    fd: Option<AsyncFd<BorrowedFd>>,
    buffers: Vec<Buffer>,
    /// RDMA READs in flight we allow and accept (negotiated with the peer).
    pub rd_atomic: u8,
    pub max_inline: u32,
    /// The largest message the port carries (`max_msg_sz`): bounds the
    /// eager threshold.
    pub max_message: u64,
    /// Time spent in `ibv_reg_mr` (pinning and mapping the buffers).
    pub registration_time: std::time::Duration,
}

// SAFETY: verbs objects are thread-safe (libibverbs serialises post and
// poll calls per queue internally); buffers are accessed under the slot
// discipline of `Buffer::range_mut`.
unsafe impl Send for QueuePair {}
// SAFETY: see above.
unsafe impl Sync for QueuePair {}

/// A work completion, copied out of the CQ.
#[derive(Clone, Copy, Debug)]
pub struct Completion {
    pub wr_id: u64,
    pub status: u32,
    pub byte_len: u32,
}

impl QueuePair {
    /// Creates the verbs objects on the device of `id` (whose address is
    /// resolved or which came from a connect request).
    pub fn new(id: &CmId, sizes: QueueSizes, cfg: &RdmaConfig) -> SfsResult<QueuePair> {
        let ctx = id.verbs();
        if ctx.is_null() {
            return Err(SfsError::new(
                Errno::ENOTSUP,
                "no RDMA device serves this address",
            ));
        }
        let mut this = QueuePair {
            pd: ptr::null_mut(),
            comp: ptr::null_mut(),
            cq: ptr::null_mut(),
            qp: ptr::null_mut(),
            fd: None,
            buffers: Vec::new(),
            rd_atomic: 1,
            max_inline: cfg.max_inline_data,
            max_message: u64::from(u32::MAX),
            registration_time: std::time::Duration::ZERO,
        };
        // SAFETY: ibv_device_attr is plain old data; the context is valid.
        let mut attr: ibv_device_attr = unsafe { std::mem::zeroed() };
        // SAFETY: valid context and out-pointer.
        if unsafe { ibv_query_device(ctx, &mut attr) } != 0 {
            return Err(os_error("ibv_query_device"));
        }
        let depth = attr
            .max_qp_rd_atom
            .min(attr.max_qp_init_rd_atom)
            .clamp(1, 16);
        this.rd_atomic = u8::try_from(depth).unwrap_or(1);
        // SAFETY: ibv_port_attr is plain old data.
        let mut port: ibv_port_attr = unsafe { std::mem::zeroed() };
        // SAFETY: valid context and out-pointer; `port_num` is the port rdmacm
        // bound this id to.
        if unsafe { ___ibv_query_port(ctx, id.port_num(), &mut port) } != 0 {
            return Err(os_error("ibv_query_port"));
        }
        this.max_message = u64::from(port.max_msg_sz);
        // SAFETY: valid context; the objects below are owned by `this` and
        // released in Drop, also when a later step fails.
        unsafe {
            this.pd = ibv_alloc_pd(ctx);
            if this.pd.is_null() {
                return Err(os_error("ibv_alloc_pd"));
            }
            this.comp = ibv_create_comp_channel(ctx);
            if this.comp.is_null() {
                return Err(os_error("ibv_create_comp_channel"));
            }
            this.cq = ibv_create_cq(
                ctx,
                i32::try_from(sizes.cq).unwrap_or(i32::MAX),
                ptr::null_mut(),
                this.comp,
                0,
            );
            if this.cq.is_null() {
                return Err(os_error("ibv_create_cq"));
            }
            let mut init: ibv_qp_init_attr = std::mem::zeroed();
            init.send_cq = this.cq;
            init.recv_cq = this.cq;
            init.qp_type = ibv_qp_type::IBV_QPT_RC;
            init.sq_sig_all = 0;
            init.cap.max_send_wr = sizes.send;
            init.cap.max_recv_wr = sizes.recv;
            init.cap.max_send_sge = cfg.max_sge;
            init.cap.max_recv_sge = cfg.max_sge;
            init.cap.max_inline_data = cfg.max_inline_data;
            this.qp = ibv_create_qp(this.pd, &mut init);
            if this.qp.is_null() {
                return Err(os_error(&format!(
                    "ibv_create_qp (send {} recv {} sge {} inline {})",
                    sizes.send, sizes.recv, cfg.max_sge, cfg.max_inline_data
                )));
            }
            this.max_inline = init.cap.max_inline_data;
        }
        // SAFETY: `comp` is valid until Drop.
        let raw = unsafe { (*this.comp).fd };
        set_nonblocking(raw).map_err(|e| SfsError::io(format!("completion channel: {e}")))?;
        // SAFETY: the fd belongs to the completion channel, destroyed in Drop
        // only after the AsyncFd is dropped.
        let fd = unsafe { AsyncFd::register_with_interest(BorrowedFd(raw), Interest::READABLE) };
        this.fd = Some(fd.map_err(|e| SfsError::io(format!("completion channel: {e}")))?);
        // SAFETY: valid CQ; arms the first notification.
        if unsafe { ibv_req_notify_cq(this.cq, 0) } != 0 {
            return Err(os_error("ibv_req_notify_cq"));
        }
        Ok(this)
    }

    pub fn qp_num(&self) -> u32 {
        // SAFETY: valid QP.
        unsafe { (*self.qp).qp_num }
    }

    /// Allocates and registers a zeroed buffer; returns its index.
    /// `remote` grants the peer RDMA READ and WRITE on it.
    pub fn register(&mut self, len: usize, remote: bool) -> SfsResult<usize> {
        let layout = std::alloc::Layout::from_size_align(len.max(1), PAGE)
            .map_err(|e| SfsError::new(Errno::EINVAL, format!("buffer layout: {e}")))?;
        // SAFETY: non-zero size layout.
        let ptr = unsafe { std::alloc::alloc_zeroed(layout) };
        if ptr.is_null() {
            return Err(SfsError::new(
                Errno(libc::ENOMEM),
                format!("cannot allocate {len} bytes"),
            ));
        }
        let mut access = ibv_access_flags::IBV_ACCESS_LOCAL_WRITE.0;
        if remote {
            access |= ibv_access_flags::IBV_ACCESS_REMOTE_READ.0
                | ibv_access_flags::IBV_ACCESS_REMOTE_WRITE.0;
        }
        let started = std::time::Instant::now();
        // SAFETY: `ptr` covers `len` bytes and lives until the MR is
        // deregistered in Drop.
        let mr = unsafe { ibv_reg_mr(self.pd, ptr.cast(), len, access as i32) };
        self.registration_time += started.elapsed();
        if mr.is_null() {
            let e = os_error(&format!("ibv_reg_mr of {len} bytes"));
            // SAFETY: allocated above with this layout, not registered.
            unsafe { std::alloc::dealloc(ptr, layout) };
            return Err(e);
        }
        self.buffers.push(Buffer { ptr, len, mr });
        Ok(self.buffers.len() - 1)
    }

    pub fn buffer(&self, index: usize) -> &Buffer {
        &self.buffers[index]
    }

    /// Moves the QP through INIT, RTR and RTS with the attributes rdmacm
    /// negotiated, capping the path MTU and setting the ACK timeout from the
    /// tunables (this is why the QP is ours, not rdmacm's).
    pub fn ready(&self, id: &CmId, cfg: &RdmaConfig) -> SfsResult<()> {
        for state in [
            ibv_qp_state::IBV_QPS_INIT,
            ibv_qp_state::IBV_QPS_RTR,
            ibv_qp_state::IBV_QPS_RTS,
        ] {
            self.modify(id, state, cfg)?;
        }
        Ok(())
    }

    /// INIT only (before the receives are posted on the active side).
    pub fn modify(&self, id: &CmId, state: u32, cfg: &RdmaConfig) -> SfsResult<()> {
        // SAFETY: ibv_qp_attr is plain old data.
        let mut attr: ibv_qp_attr = unsafe { std::mem::zeroed() };
        attr.qp_state = state;
        let mut mask: i32 = 0;
        // SAFETY: valid id and out-pointers.
        if unsafe { rdma_init_qp_attr(id.raw(), &mut attr, &mut mask) } != 0 {
            return Err(os_error(&format!("rdma_init_qp_attr (state {state})")));
        }
        match state {
            ibv_qp_state::IBV_QPS_INIT => {
                attr.qp_access_flags = ibv_access_flags::IBV_ACCESS_LOCAL_WRITE.0
                    | ibv_access_flags::IBV_ACCESS_REMOTE_READ.0
                    | ibv_access_flags::IBV_ACCESS_REMOTE_WRITE.0;
                mask |= ibv_qp_attr_mask::IBV_QP_ACCESS_FLAGS.0 as i32;
            }
            ibv_qp_state::IBV_QPS_RTR => {
                attr.path_mtu = attr.path_mtu.min(mtu_enum(cfg.path_mtu));
            }
            ibv_qp_state::IBV_QPS_RTS => {
                attr.timeout = cfg.ack_timeout;
                attr.retry_cnt = cfg.retry_count;
                attr.rnr_retry = cfg.rnr_retry_count;
                mask |= (ibv_qp_attr_mask::IBV_QP_TIMEOUT.0
                    | ibv_qp_attr_mask::IBV_QP_RETRY_CNT.0
                    | ibv_qp_attr_mask::IBV_QP_RNR_RETRY.0) as i32;
            }
            _ => {}
        }
        // SAFETY: valid QP and attributes.
        if unsafe { ibv_modify_qp(self.qp, &mut attr, mask) } != 0 {
            return Err(os_error(&format!("ibv_modify_qp (state {state})")));
        }
        Ok(())
    }

    /// Moves the QP to the error state: every posted request completes
    /// with a flush error, which wakes whoever waits for it.
    pub fn to_error(&self) {
        // SAFETY: plain old data.
        let mut attr: ibv_qp_attr = unsafe { std::mem::zeroed() };
        attr.qp_state = ibv_qp_state::IBV_QPS_ERR;
        // SAFETY: valid QP.
        unsafe { ibv_modify_qp(self.qp, &mut attr, ibv_qp_attr_mask::IBV_QP_STATE.0 as i32) };
    }

    /// Copies the first `len` bytes of receive slot `index` (slots of
    /// `slot_size` bytes in buffer `buf`) out, then posts the slot again
    /// under `wr_id`. EPROTO if `index` or `len` lie outside the slots.
    ///
    /// # Safety
    /// The device must have completed the receive posted into that slot and
    /// nothing else may be writing it (it is re-posted only after the copy).
    pub unsafe fn take_received(
        &self,
        buf: usize,
        wr_id: u64,
        index: usize,
        slots: usize,
        slot_size: usize,
        len: usize,
    ) -> SfsResult<Vec<u8>> {
        if index >= slots || len > slot_size {
            return Err(SfsError::new(Errno::EPROTO, "RDMA receive out of range"));
        }
        // SAFETY: the caller guarantees the slot is completed and idle.
        let msg = unsafe { self.buffers[buf].range_mut(index * slot_size, len) }.to_vec();
        self.post_recv(wr_id, buf, index * slot_size, slot_size)?;
        Ok(msg)
    }

    /// The scatter/gather entry of `[offset, offset + len)` of buffer `buf`
    /// (panics when the range is not inside the buffer).
    fn sge(&self, buf: usize, offset: usize, len: usize) -> ibv_sge {
        let b = &self.buffers[buf];
        assert!(offset + len <= b.len);
        ibv_sge {
            addr: b.addr() + offset as u64,
            length: len as u32,
            lkey: b.lkey(),
        }
    }

    /// Posts a receive into `[offset, offset + len)` of buffer `buf`.
    pub fn post_recv(&self, wr_id: u64, buf: usize, offset: usize, len: usize) -> SfsResult<()> {
        let mut sge = self.sge(buf, offset, len);
        let mut wr = ibv_recv_wr {
            wr_id,
            next: ptr::null_mut(),
            sg_list: &mut sge,
            num_sge: 1,
        };
        let mut bad = ptr::null_mut();
        // SAFETY: `wr` and `sge` are valid for the call; the range is inside
        // a buffer registered on this QP's PD that lives as long as the QP.
        let rc = unsafe { ibv_post_recv(self.qp, &mut wr, &mut bad) };
        if rc != 0 {
            return Err(SfsError::new(Errno(rc), "ibv_post_recv failed"));
        }
        Ok(())
    }

    /// Posts a send-queue request: SEND (`remote` None) or RDMA READ/WRITE
    /// of `[offset, offset + len)` of buffer `buf` from/to `remote`.
    #[allow(clippy::too_many_arguments)]
    pub fn post_send(
        &self,
        wr_id: u64,
        opcode: u32,
        buf: usize,
        offset: usize,
        len: usize,
        remote: Option<(u64, u32)>,
        signaled: bool,
    ) -> SfsResult<()> {
        let mut sge = self.sge(buf, offset, len);
        let mut flags = 0;
        if signaled {
            flags |= ibv_send_flags::IBV_SEND_SIGNALED.0;
        }
        if opcode == ibv_wr_opcode::IBV_WR_SEND && len as u32 <= self.max_inline {
            flags |= ibv_send_flags::IBV_SEND_INLINE.0;
        }
        // SAFETY: ibv_send_wr is plain old data (pointers may be null).
        let mut wr: ibv_send_wr = unsafe { std::mem::zeroed() };
        wr.wr_id = wr_id;
        wr.sg_list = &mut sge;
        wr.num_sge = 1;
        wr.opcode = opcode;
        wr.send_flags = flags;
        if let Some((addr, rkey)) = remote {
            wr.wr.rdma = rdma_t {
                remote_addr: addr,
                rkey,
            };
        }
        let mut bad = ptr::null_mut();
        // SAFETY: as in `post_recv`; the remote range was checked by the
        // caller against the peer's announced region.
        let rc = unsafe { ibv_post_send(self.qp, &mut wr, &mut bad) };
        if rc != 0 {
            return Err(SfsError::new(Errno(rc), "ibv_post_send failed"));
        }
        Ok(())
    }

    /// Waits until the CQ holds completions and appends them to `out`.
    pub async fn completions(&self, out: &mut Vec<Completion>) -> SfsResult<()> {
        let fd = self.fd.as_ref().expect("fd registered");
        loop {
            if self.poll(out) > 0 {
                return Ok(());
            }
            // Re-arm, then poll again: a completion that arrived between the
            // empty poll and the arming would otherwise raise no event.
            // SAFETY: valid CQ.
            unsafe { ibv_req_notify_cq(self.cq, 0) };
            if self.poll(out) > 0 {
                return Ok(());
            }
            let mut guard = fd
                .readable()
                .await
                .map_err(|e| SfsError::io(format!("completion channel: {e}")))?;
            let mut cq = ptr::null_mut();
            let mut ctx = ptr::null_mut();
            // SAFETY: valid channel; non-blocking, so EAGAIN when empty.
            if unsafe { ibv_get_cq_event(self.comp, &mut cq, &mut ctx) } == 0 {
                // SAFETY: acknowledges the one event just read on our CQ.
                unsafe { ibv_ack_cq_events(self.cq, 1) };
            } else {
                guard.clear_ready();
            }
        }
    }

    fn poll(&self, out: &mut Vec<Completion>) -> usize {
        const BATCH: usize = 32;
        // SAFETY: ibv_wc is plain old data.
        let mut wcs: [ibv_wc; BATCH] = unsafe { std::mem::zeroed() };
        // SAFETY: valid CQ; `wcs` holds BATCH entries.
        let n = unsafe { ibv_poll_cq(self.cq, BATCH as i32, wcs.as_mut_ptr()) };
        let n = usize::try_from(n).unwrap_or(0);
        out.extend(wcs[..n].iter().map(|wc| Completion {
            wr_id: wc.wr_id,
            status: wc.status,
            byte_len: wc.byte_len,
        }));
        n
    }
}

impl Drop for QueuePair {
    fn drop(&mut self) {
        // SAFETY: each object was created in `new`/`register` and is
        // destroyed once, QP first (no DMA after), then the memory regions,
        // the CQ (its events were all acknowledged), the channel, the PD.
        unsafe {
            if !self.qp.is_null() {
                ibv_destroy_qp(self.qp);
            }
            for b in self.buffers.drain(..) {
                ibv_dereg_mr(b.mr);
                std::alloc::dealloc(
                    b.ptr,
                    std::alloc::Layout::from_size_align(b.len.max(1), PAGE).expect("layout"),
                );
            }
            if !self.cq.is_null() {
                ibv_destroy_cq(self.cq);
            }
            drop(self.fd.take());
            if !self.comp.is_null() {
                ibv_destroy_comp_channel(self.comp);
            }
            if !self.pd.is_null() {
                ibv_dealloc_pd(self.pd);
            }
        }
    }
}

/// The verbs MTU enum for a byte count (validated by config).
pub fn mtu_enum(bytes: u32) -> u32 {
    match bytes {
        256 => ibv_mtu::IBV_MTU_256,
        512 => ibv_mtu::IBV_MTU_512,
        1024 => ibv_mtu::IBV_MTU_1024,
        2048 => ibv_mtu::IBV_MTU_2048,
        _ => ibv_mtu::IBV_MTU_4096,
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use rdma_sys::ibv_wc_status::*;

    #[test]
    fn completion_errors_map_to_precise_errnos() {
        assert_eq!(wc_status_errno(IBV_WC_SUCCESS), Errno(0));
        // A peer that is gone, however the hardware reports it: EIO.
        for status in [
            IBV_WC_RETRY_EXC_ERR,
            IBV_WC_RNR_RETRY_EXC_ERR,
            IBV_WC_RESP_TIMEOUT_ERR,
            IBV_WC_REM_ACCESS_ERR,
            IBV_WC_WR_FLUSH_ERR,
            IBV_WC_GENERAL_ERR,
        ] {
            assert_eq!(wc_status_errno(status), Errno::EIO, "status {status}");
        }
        assert_eq!(wc_status_errno(IBV_WC_REM_INV_REQ_ERR), Errno::EPROTO);
        assert_eq!(mtu_enum(1024), ibv_mtu::IBV_MTU_1024);
        assert_eq!(mtu_enum(4096), ibv_mtu::IBV_MTU_4096);
    }
}
