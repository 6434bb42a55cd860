//! The SFS RPC protocol: generated tonic/prost code for the `Metadata`,
//! `ChunkControl` and `Control` services, the [`lean`] framing that carries
//! the same services without HTTP/2, and the conversions between wire
//! messages and `sfs_global` types (entries, file ids, errors with errnos).
//! [`auth`] is the handshake that opens every connection (the job secret).
//! [`caller`] carries whose request it is (uid, gid, groups).
//! [`methods`] is the one table of RPC methods: the transport-neutral
//! handler traits a server implements, and the gRPC and lean front ends
//! and client calls made from it.
//! [`mux`] is the request bookkeeping of a multiplexed connection, shared by
//! the lean client and the data transports of `sfs_rdma`.
//!
//! Errors cross the wire as a gRPC status whose `sfs-errno` metadata header
//! holds the POSIX errno (the lean framing carries the errno itself), so an
//! application sees the errno the server chose.

#[allow(clippy::all)]
pub mod pb {
    tonic::include_proto!("sfs.v1");
}

pub mod accept;
pub mod auth;
pub mod caller;
pub mod lean;
pub mod limits;
pub mod locality;
pub mod methods;
pub mod mux;

use sfs_global::{Errno, FileId, Metadata, SfsError};

/// Name of the status metadata header that carries the errno.
pub const ERRNO_HEADER: &str = "sfs-errno";

/// Largest gRPC message either side accepts (readdir pages stay far below).
pub const MAX_MESSAGE_BYTES: usize = 16 << 20;

impl From<&Metadata> for pb::Entry {
    fn from(m: &Metadata) -> Self {
        pb::Entry {
            mode: m.mode,
            uid: m.uid,
            gid: m.gid,
            nlink: m.nlink,
            size: m.size,
            id_hi: m.id.hi(),
            id_lo: m.id.lo(),
            atime_ns: m.atime_ns,
            mtime_ns: m.mtime_ns,
            ctime_ns: m.ctime_ns,
            link_target: m.link_target.clone(),
            source: m.source.clone(),
            source_len: m.source_len,
            xattrs: if m.xattrs.is_empty() {
                Vec::new()
            } else {
                let mut out = Vec::new();
                sfs_global::metadata::encode_xattrs(&m.xattrs, &mut out);
                out
            },
        }
    }
}

impl From<&pb::Entry> for Metadata {
    fn from(e: &pb::Entry) -> Self {
        Metadata {
            mode: e.mode,
            uid: e.uid,
            gid: e.gid,
            nlink: e.nlink,
            size: e.size,
            id: FileId::from_parts(e.id_hi, e.id_lo),
            atime_ns: e.atime_ns,
            mtime_ns: e.mtime_ns,
            ctime_ns: e.ctime_ns,
            link_target: e.link_target.clone(),
            source: e.source.clone(),
            source_len: e.source_len,
            // Checked where an entry is taken in (a server's PutEntry:
            // `Entry::xattrs_are_valid`); a malformed list reads as none.
            xattrs: sfs_global::metadata::decode_xattrs(&e.xattrs).unwrap_or_default(),
        }
    }
}

impl pb::Entry {
    /// Whether `xattrs` is empty or a valid encoded list.
    pub fn xattrs_are_valid(&self) -> bool {
        self.xattrs.is_empty() || sfs_global::metadata::decode_xattrs(&self.xattrs).is_some()
    }

    pub fn file_id(&self) -> FileId {
        FileId::from_parts(self.id_hi, self.id_lo)
    }
}

/// Turns an error into a gRPC status carrying its errno.
pub fn status_from_error(e: &SfsError) -> tonic::Status {
    let code = match e.errno {
        Errno::ENOENT => tonic::Code::NotFound,
        Errno::EEXIST => tonic::Code::AlreadyExists,
        Errno::EINVAL | Errno::ENAMETOOLONG => tonic::Code::InvalidArgument,
        Errno::ENOSPC => tonic::Code::ResourceExhausted,
        Errno::EPERM | Errno::EACCES => tonic::Code::PermissionDenied,
        Errno::ETIMEDOUT => tonic::Code::DeadlineExceeded,
        Errno::ENOTSUP => tonic::Code::Unimplemented,
        Errno::ENOTEMPTY | Errno::ENOTDIR | Errno::EISDIR => tonic::Code::FailedPrecondition,
        _ => tonic::Code::Internal,
    };
    let mut status = tonic::Status::new(code, e.message.clone());
    if let Ok(v) = e.errno.0.to_string().parse() {
        status.metadata_mut().insert(ERRNO_HEADER, v);
    }
    status
}

/// Turns a gRPC status back into an error with a precise errno.
///
/// A status without the header did not come from an SFS handler (the
/// connection failed, the deadline passed, the server is gone): those map to
/// ETIMEDOUT for deadlines and EIO for everything else.
pub fn error_from_status(s: &tonic::Status) -> SfsError {
    if let Some(errno) = s
        .metadata()
        .get(ERRNO_HEADER)
        .and_then(|v| v.to_str().ok())
        .and_then(|v| v.parse::<i32>().ok())
    {
        return SfsError::new(Errno(errno), s.message().to_string());
    }
    let errno = match s.code() {
        tonic::Code::DeadlineExceeded | tonic::Code::Cancelled => Errno::ETIMEDOUT,
        tonic::Code::NotFound => Errno::ENOENT,
        tonic::Code::InvalidArgument => Errno::EINVAL,
        tonic::Code::Unimplemented => Errno::ENOTSUP,
        tonic::Code::ResourceExhausted => Errno::ENOSPC,
        _ => Errno::EIO,
    };
    SfsError::new(errno, format!("server: {} ({:?})", s.message(), s.code()))
}

#[cfg(test)]
mod tests {
    use super::*;
    use sfs_global::FileKind;

    #[test]
    fn entries_round_trip() {
        let mut m = Metadata::new(FileKind::File, 0o640, FileId::from_parts(3, 4), 17);
        m.size = 12345;
        let e = pb::Entry::from(&m);
        assert_eq!(Metadata::from(&e), m);
        assert_eq!(e.file_id(), m.id);
    }

    #[test]
    fn errno_crosses_the_wire() {
        for errno in [Errno::ENOENT, Errno::ENOTEMPTY, Errno::ENOSPC, Errno::EXDEV] {
            let s = status_from_error(&SfsError::new(errno, "x"));
            assert_eq!(error_from_status(&s).errno, errno);
        }
        let s = tonic::Status::deadline_exceeded("slow");
        assert_eq!(error_from_status(&s).errno, Errno::ETIMEDOUT);
        let s = tonic::Status::unavailable("gone");
        assert_eq!(error_from_status(&s).errno, Errno::EIO);
    }
}
