//! The RDMA transport (ibverbs + rdmacm through `rdma-sys`) and the choice
//! between it and TCP.
//!
//! - [`proto`]: messages and the 21-byte buffer descriptor;
//! - [`pool`]: queue-depth accounting over pre-registered buffers;
//! - [`cm`] and [`verbs`]: the FFI edge, rdmacm (`AsyncFd`-driven event
//!   channel, connection ids) and ibverbs (owned verbs objects,
//!   `AsyncFd`-driven completion channel);
//! - [`server`]: [`RdmaListener`], the server pulling writes (RDMA READ) and
//!   pushing reads (RDMA WRITE);
//! - [`client`]: [`RdmaChannel`], the [`crate::DataChannel`] over RDMA.
//!
//! `transport: "auto"` asks the verbs library for devices: with none, TCP;
//! with some, the server tries to listen on its data address with rdmacm and
//! uses RDMA when a device serves that address, TCP otherwise, and logs which.
//! `"rdma"` refuses to start instead of falling back. A server always serves
//! TCP as well, so a client without a device can still reach it.

pub mod client;
pub mod cm;
pub mod pool;
pub mod proto;
pub mod server;
pub mod verbs;

pub use client::RdmaChannel;
pub use server::RdmaListener;

use sfs_global::config::{DataTransport, TransportKind};
use sfs_global::{Errno, SfsError, SfsResult};
use std::ffi::CStr;

/// Names of the RDMA devices the verbs library reports; empty when there are
/// none or the kernel has no RDMA support (then `ibv_get_device_list` returns
/// NULL with ENOSYS, which is handled like an empty list).
pub fn rdma_devices() -> Vec<String> {
    let mut count: i32 = 0;
    // SAFETY: `ibv_get_device_list` only writes the count through the valid
    // pointer we pass; it returns NULL or an array of `count` device pointers
    // that stays valid until `ibv_free_device_list`, which we call exactly once.
    let list = unsafe { rdma_sys::ibv_get_device_list(&mut count) };
    if list.is_null() {
        return Vec::new();
    }
    let mut names = Vec::new();
    for i in 0..usize::try_from(count).unwrap_or(0) {
        // SAFETY: `i < count`, so the element is inside the array returned above.
        let device = unsafe { *list.add(i) };
        if device.is_null() {
            continue;
        }
        // SAFETY: `device` is a valid device pointer from the list; the name it
        // returns is a NUL-terminated string owned by the device, which we copy
        // before freeing the list.
        let name = unsafe { rdma_sys::ibv_get_device_name(device) };
        if !name.is_null() {
            // SAFETY: non-null, NUL-terminated, valid until the list is freed.
            names.push(
                unsafe { CStr::from_ptr(name) }
                    .to_string_lossy()
                    .into_owned(),
            );
        }
    }
    // SAFETY: `list` came from `ibv_get_device_list` and is freed only here.
    unsafe { rdma_sys::ibv_free_device_list(list) };
    names
}

/// The transport a server or client uses and the reason, for the log.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct TransportChoice {
    /// `Tcp` or `Rdma`.
    pub chosen: DataTransport,
    pub reason: String,
}

/// Chooses the data transport for a configured kind, given the RDMA devices
/// present; refuses `rdma` without a device, with a message naming the cause.
/// "rdma" here is a candidate: the server confirms that a device serves its
/// address ([`RdmaListener::bind`]) and falls back under "auto" if not.
pub fn choose_transport(kind: TransportKind, devices: &[String]) -> SfsResult<TransportChoice> {
    match kind {
        TransportKind::Tcp => Ok(TransportChoice {
            chosen: DataTransport::Tcp,
            reason: "config.json asks for transport \"tcp\"".into(),
        }),
        TransportKind::Auto if devices.is_empty() => Ok(TransportChoice {
            chosen: DataTransport::Tcp,
            reason: "no RDMA device found; using TCP".into(),
        }),
        TransportKind::Auto | TransportKind::Rdma if !devices.is_empty() => Ok(TransportChoice {
            chosen: DataTransport::Rdma,
            reason: format!("RDMA device(s) {} found", devices.join(", ")),
        }),
        _ => Err(SfsError::new(
            Errno::ENOTSUP,
            "config.json: field `transport` is \"rdma\" but no RDMA device was found; use \"auto\" or \"tcp\"",
        )),
    }
}

/// [`choose_transport`] with the devices of this machine.
pub fn select_transport(kind: TransportKind) -> SfsResult<TransportChoice> {
    let devices = if kind == TransportKind::Tcp {
        Vec::new()
    } else {
        rdma_devices()
    };
    choose_transport(kind, &devices)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn device_probe_does_not_crash_without_rdma() {
        // On a machine without RDMA support this is empty; either way it returns.
        let _ = rdma_devices();
    }

    #[test]
    fn auto_falls_back_to_tcp_and_rdma_is_refused_clearly() {
        let none: Vec<String> = Vec::new();
        let some = vec!["rxe0".to_string()];
        assert_eq!(
            choose_transport(TransportKind::Auto, &none).unwrap().chosen,
            DataTransport::Tcp
        );
        let auto = choose_transport(TransportKind::Auto, &some).unwrap();
        assert_eq!(auto.chosen, DataTransport::Rdma);
        assert!(auto.reason.contains("rxe0"));
        assert_eq!(
            choose_transport(TransportKind::Rdma, &some).unwrap().chosen,
            DataTransport::Rdma
        );
        assert_eq!(
            choose_transport(TransportKind::Tcp, &some).unwrap().chosen,
            DataTransport::Tcp
        );
        let e = choose_transport(TransportKind::Rdma, &none).unwrap_err();
        assert!(e.message.contains("transport"), "{e}");
        assert_eq!(e.errno, Errno::ENOTSUP);
    }
}
