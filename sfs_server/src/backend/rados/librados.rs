//! The librados calls of the `rados` back end, made safe: a [`Pool`] owns a
//! cluster connection and an io context on one pool (and namespace), and
//! offers the handful of object operations the back end needs.
//!
//! The declarations come from the `ceph` crate (`ceph::rados`, the librados
//! C API, linked against Debian's librados 16.2). Its safe layer is not
//! used, for three reasons: `connect_to_ceph` connects before options can
//! be set, so the timeouts that keep a dead cluster from hanging a server
//! forever (`client_mount_timeout`, `rados_osd_op_timeout`, ...) could not
//! be applied; its `Rados` is not `Send`, though librados allows using a
//! cluster handle from any thread; and its read fills up to a `Vec`'s
//! capacity rather than its length. All `unsafe` of the back end is here.

use ceph::rados as sys;
use std::ffi::{CStr, CString};
use std::os::raw::c_char;
use std::os::unix::ffi::OsStrExt;
use std::path::Path;
use std::ptr;

/// The most bytes handed to one `rados_read`/`rados_write`: their counts
/// are C `int`s, and OSDs refuse a write over `osd_max_write_size` (90 MiB
/// by default).
const MAX_IO: usize = 16 << 20;

/// `LIBRADOS_CREATE_IDEMPOTENT` (librados.h): a create that succeeds on an
/// existing object, keeping its data.
const CREATE_IDEMPOTENT: libc::c_int = 0;

/// A positive errno from a librados call.
pub type RadosErrno = i32;

/// A negative librados return code as `Err(errno)`, a non-negative one as
/// `Ok`.
fn check(code: i32) -> Result<i32, RadosErrno> {
    if code < 0 {
        Err(-code)
    } else {
        Ok(code)
    }
}

/// `name` for C. Object names are hex digits and pool, user and option
/// names come from validated config, so an interior NUL is EINVAL.
fn c_string(name: impl Into<Vec<u8>>) -> Result<CString, RadosErrno> {
    CString::new(name).map_err(|_| libc::EINVAL)
}

/// Which step of [`Pool::connect`] failed, with librados' errno.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum ConnectError {
    /// `rados_create`: the user name was refused.
    Create(RadosErrno),
    /// `rados_conf_read_file`: the conf file could not be read or parsed.
    ReadConf(RadosErrno),
    /// `rados_conf_set` of the named option.
    SetOption(&'static str, RadosErrno),
    /// `rados_connect`: no monitor answered, or authentication failed.
    Connect(RadosErrno),
    /// `rados_ioctx_create`: the pool does not exist (ENOENT) or cannot be
    /// used.
    OpenPool(RadosErrno),
}

/// A cluster handle, shut down when dropped.
struct Cluster(sys::rados_t);

impl Drop for Cluster {
    fn drop(&mut self) {
        // SAFETY: `self.0` came from a successful `rados_create` and is shut
        // down exactly once, here; every io context made from it was
        // destroyed before (`Pool::drop` runs before its fields drop).
        unsafe { sys::rados_shutdown(self.0) }
    }
}

/// A write operation (several steps applied atomically to one object),
/// released when dropped.
struct WriteOp(sys::rados_write_op_t);

impl WriteOp {
    fn new() -> Result<WriteOp, RadosErrno> {
        // SAFETY: no arguments; a NULL result (out of memory) is checked.
        let op = unsafe { sys::rados_create_write_op() };
        if op.is_null() {
            Err(libc::ENOMEM)
        } else {
            Ok(WriteOp(op))
        }
    }
}

impl Drop for WriteOp {
    fn drop(&mut self) {
        // SAFETY: `self.0` came from `rados_create_write_op` and is released
        // exactly once, here.
        unsafe { sys::rados_release_write_op(self.0) }
    }
}

/// A connection to one pool (and namespace) of a cluster.
pub struct Pool {
    ioctx: sys::rados_ioctx_t,
    /// Dropped after `ioctx` is destroyed (in `Drop::drop`, which runs
    /// before fields drop): librados requires io contexts to go first.
    _cluster: Cluster,
}

// SAFETY: librados' handles may be used from any thread; librados.h warns
// only that *changing* an io context's settings (pool, snapshot, locator
// key, namespace) is not thread-safe. A `Pool` sets its namespace once, in
// `connect`, before it can be shared, and never changes a setting after; all
// its other calls are object I/O, which librados serialises internally.
// The cluster handle is touched only by `Drop`, which has exclusive access.
unsafe impl Send for Pool {}
// SAFETY: as for `Send`: the shared (`&self`) methods only do object I/O on
// an io context whose settings never change after `connect`.
unsafe impl Sync for Pool {}

impl Drop for Pool {
    fn drop(&mut self) {
        // SAFETY: `self.ioctx` came from a successful `rados_ioctx_create`,
        // is destroyed exactly once, here, and no call on it can run (we
        // have `&mut self`); its cluster is shut down after this returns.
        unsafe { sys::rados_ioctx_destroy(self.ioctx) }
    }
}

impl Pool {
    /// Connects as `client.<user>` to the cluster that `conf` describes,
    /// with `options` (name, value) set after reading `conf` and before
    /// connecting, and opens `pool`, restricted to `namespace` (empty: the
    /// default namespace). Blocks: up to `client_mount_timeout`.
    pub fn connect(
        conf: &Path,
        user: &str,
        options: &[(&'static str, String)],
        pool: &str,
        namespace: &str,
    ) -> Result<Pool, ConnectError> {
        let user = c_string(user).map_err(ConnectError::Create)?;
        let mut handle: sys::rados_t = ptr::null_mut();
        // SAFETY: `handle` is a valid out-pointer and `user` a NUL-terminated
        // string that outlives the call.
        check(unsafe { sys::rados_create(&mut handle, user.as_ptr()) })
            .map_err(ConnectError::Create)?;
        // From here every return shuts the handle down.
        let cluster = Cluster(handle);

        let conf = c_string(conf.as_os_str().as_bytes()).map_err(ConnectError::ReadConf)?;
        // SAFETY: `cluster.0` is a created, unconnected handle; `conf` is
        // NUL-terminated and outlives the call.
        check(unsafe { sys::rados_conf_read_file(cluster.0, conf.as_ptr()) })
            .map_err(ConnectError::ReadConf)?;
        for (name, value) in options {
            let set = |e| ConnectError::SetOption(name, e);
            let (c_name, c_value) = (
                c_string(*name).map_err(set)?,
                c_string(value.as_str()).map_err(set)?,
            );
            // SAFETY: as above, before `rados_connect`; both strings are
            // NUL-terminated and outlive the call.
            check(unsafe { sys::rados_conf_set(cluster.0, c_name.as_ptr(), c_value.as_ptr()) })
                .map_err(set)?;
        }
        // SAFETY: a configured handle, connected once.
        check(unsafe { sys::rados_connect(cluster.0) }).map_err(ConnectError::Connect)?;

        let pool = c_string(pool).map_err(ConnectError::OpenPool)?;
        let mut ioctx: sys::rados_ioctx_t = ptr::null_mut();
        // SAFETY: a connected handle; `pool` is NUL-terminated and outlives
        // the call; `ioctx` is a valid out-pointer.
        check(unsafe { sys::rados_ioctx_create(cluster.0, pool.as_ptr(), &mut ioctx) })
            .map_err(ConnectError::OpenPool)?;
        let pool = Pool {
            ioctx,
            _cluster: cluster,
        };
        let namespace = c_string(namespace).map_err(ConnectError::OpenPool)?;
        // SAFETY: the io context is not shared yet (this is the only
        // setting ever changed, see `unsafe impl Send`); librados copies
        // the string.
        unsafe { sys::rados_ioctx_set_namespace(pool.ioctx, namespace.as_ptr()) };
        Ok(pool)
    }

    /// Writes `data` at `offset` of object `name`, creating it if needed.
    pub fn write(&self, name: &str, data: &[u8], offset: u64) -> Result<(), RadosErrno> {
        let oid = c_string(name)?;
        let mut at = offset;
        for piece in data.chunks(MAX_IO) {
            // SAFETY: the io context lives as long as `self`; `oid` is
            // NUL-terminated; `piece` is `piece.len()` readable bytes that
            // librados only reads during the call.
            check(unsafe {
                sys::rados_write(
                    self.ioctx,
                    oid.as_ptr(),
                    piece.as_ptr().cast::<c_char>(),
                    piece.len(),
                    at,
                )
            })?;
            at += piece.len() as u64;
        }
        Ok(())
    }

    /// Reads into `buf` from `offset` of object `name`; returns the bytes
    /// read (fewer than `buf.len()` only at the object's end). ENOENT if
    /// the object does not exist.
    pub fn read(&self, name: &str, buf: &mut [u8], offset: u64) -> Result<usize, RadosErrno> {
        let oid = c_string(name)?;
        let mut filled = 0;
        while filled < buf.len() {
            let end = (filled + MAX_IO).min(buf.len());
            let piece = &mut buf[filled..end];
            // SAFETY: the io context lives as long as `self`; `oid` is
            // NUL-terminated; librados writes at most `piece.len()` bytes
            // into `piece`, which is exclusively borrowed for the call.
            let read = check(unsafe {
                sys::rados_read(
                    self.ioctx,
                    oid.as_ptr(),
                    piece.as_mut_ptr().cast::<c_char>(),
                    piece.len(),
                    offset + filled as u64,
                )
            })? as usize;
            filled += read;
            if read < piece.len() {
                break;
            }
        }
        Ok(filled)
    }

    /// The size of object `name`, or `None` if it does not exist.
    pub fn stat(&self, name: &str) -> Result<Option<u64>, RadosErrno> {
        let oid = c_string(name)?;
        let (mut size, mut mtime) = (0u64, 0 as libc::time_t);
        // SAFETY: the io context lives as long as `self`; `oid` is
        // NUL-terminated; both out-pointers are valid for the call.
        match check(unsafe { sys::rados_stat(self.ioctx, oid.as_ptr(), &mut size, &mut mtime) }) {
            Ok(_) => Ok(Some(size)),
            Err(libc::ENOENT) => Ok(None),
            Err(e) => Err(e),
        }
    }

    /// Removes object `name`; a missing object is not an error.
    pub fn remove(&self, name: &str) -> Result<(), RadosErrno> {
        let oid = c_string(name)?;
        // SAFETY: the io context lives as long as `self`; `oid` is
        // NUL-terminated.
        match check(unsafe { sys::rados_remove(self.ioctx, oid.as_ptr()) }) {
            Ok(_) | Err(libc::ENOENT) => Ok(()),
            Err(e) => Err(e),
        }
    }

    /// Creates object `name` empty if it does not exist (keeps it if it
    /// does).
    pub fn create(&self, name: &str) -> Result<(), RadosErrno> {
        let op = WriteOp::new()?;
        // SAFETY: `op` is a live write op; a NULL category is allowed
        // (librados ignores it).
        unsafe { sys::rados_write_op_create(op.0, CREATE_IDEMPOTENT, ptr::null()) };
        self.operate(&op, name)
    }

    /// Sets the size of object `name` if it exists, atomically with the
    /// check (a missing object stays missing); returns whether it existed.
    pub fn truncate_existing(&self, name: &str, size: u64) -> Result<bool, RadosErrno> {
        let op = WriteOp::new()?;
        // SAFETY: `op` is a live write op; steps run in the order added.
        unsafe {
            sys::rados_write_op_assert_exists(op.0);
            sys::rados_write_op_truncate(op.0, size);
        }
        match self.operate(&op, name) {
            Ok(()) => Ok(true),
            Err(libc::ENOENT) => Ok(false),
            Err(e) => Err(e),
        }
    }

    /// Applies `op` to object `name`.
    fn operate(&self, op: &WriteOp, name: &str) -> Result<(), RadosErrno> {
        let oid = c_string(name)?;
        // SAFETY: `op` is live, the io context lives as long as `self`,
        // `oid` is NUL-terminated; a NULL mtime means "now".
        check(unsafe {
            sys::rados_write_op_operate(op.0, self.ioctx, oid.as_ptr(), ptr::null_mut(), 0)
        })
        .map(drop)
    }

    /// The names of every object in the pool's namespace.
    pub fn list(&self) -> Result<Vec<String>, RadosErrno> {
        let mut listing: sys::rados_list_ctx_t = ptr::null_mut();
        // SAFETY: the io context lives as long as `self`; `listing` is a
        // valid out-pointer.
        check(unsafe { sys::rados_nobjects_list_open(self.ioctx, &mut listing) })?;
        let mut names = Vec::new();
        let result = loop {
            let mut entry: *const c_char = ptr::null();
            // SAFETY: `listing` is open. The C function takes `const char
            // **entry` (the `ceph` crate declares one pointer level more):
            // it stores one pointer into `entry`, valid until the next call
            // on `listing`; key and namespace are not wanted (NULL allowed).
            let code = unsafe {
                sys::rados_nobjects_list_next(
                    listing,
                    (&mut entry as *mut *const c_char).cast(),
                    ptr::null_mut(),
                    ptr::null_mut(),
                )
            };
            match check(code) {
                Ok(_) if !entry.is_null() => {
                    // SAFETY: a NUL-terminated name owned by `listing`,
                    // copied before the next call on it.
                    let name = unsafe { CStr::from_ptr(entry) };
                    names.push(name.to_string_lossy().into_owned());
                }
                Ok(_) => {}
                Err(libc::ENOENT) => break Ok(names),
                Err(e) => break Err(e),
            }
        };
        // SAFETY: `listing` is open and closed exactly once; no pointer
        // into it is kept.
        unsafe { sys::rados_nobjects_list_close(listing) };
        result
    }
}
