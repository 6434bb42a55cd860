//! The `rados` back end: objects of a Ceph RADOS pool, through librados.
//!
//! Object `id` is the RADOS object named by its 32 hex digits in the pool
//! `backend.rados_pool`, inside the namespace `backend.rados_namespace` (so
//! several jobs, or tests, share a pool without seeing each other's
//! objects). RADOS objects are sparse byte arrays written at offsets, so
//! the contract maps one to one: a write is `rados_write` at the offset, a
//! truncate is one atomic "exists? then truncate" operation (a missing
//! object stays missing), a create is an idempotent create.
//!
//! - **Persistent**: RADOS acknowledges a write only once every OSD of the
//!   object's placement group has committed it to its store (journal or
//!   BlueStore WAL), so a returned write already survives the loss of any
//!   machine the pool's replication (or erasure code) tolerates. `persist`
//!   therefore only checks that the object exists. (The test cluster's
//!   memstore OSD keeps data in memory: durable only as long as it runs.)
//! - **Extents**: RADOS does not report holes; the contract allows
//!   `[0, size)`.
//! - **Timeouts**: the connection is opened with `client_mount_timeout`,
//!   `rados_mon_op_timeout` and `rados_osd_op_timeout` set to
//!   `backend.timeout_ms`, so a cluster that is gone makes a server start
//!   or a write-back fail with EIO instead of hanging.
//!
//! librados calls block, so each runs on tokio's blocking pool
//! ([`super::off_the_runtime`]); the connection is shared by all of them
//! (librados is thread-safe for object I/O: see [`librados`]).

mod librados;

use super::{ObjectBackend, ObjectStat};
use async_trait::async_trait;
use librados::{ConnectError, Pool, RadosErrno};
use sfs_global::{Errno, FileId, SfsError, SfsResult};
use std::ops::Range;
use std::path::PathBuf;
use std::sync::Arc;
use std::time::Duration;

/// Where and how to connect (from `backend.rados_*` in config.json).
#[derive(Clone, Debug)]
pub struct RadosSettings {
    /// The cluster's ceph.conf.
    pub conf: PathBuf,
    /// The Ceph user, without `client.`.
    pub user: String,
    /// The pool holding the objects.
    pub pool: String,
    /// The namespace inside the pool (empty: the default one).
    pub namespace: String,
    /// Connecting, and each monitor or OSD request, fail after this long.
    pub timeout: Duration,
}

/// Objects in a RADOS pool (see the module documentation).
pub struct RadosBackend {
    pool: Arc<Pool>,
    /// "rados pool P" or "rados pool P namespace N", for messages.
    label: Arc<str>,
    timeout: Duration,
}

/// A name in the store that is not 32 hex digits is not one of ours.
fn parse_object_name(name: &str) -> Option<FileId> {
    (name.len() == 32)
        .then(|| u128::from_str_radix(name, 16).ok())
        .flatten()
        .map(FileId)
}

impl RadosBackend {
    /// Connects and checks that an OSD of the pool answers; blocks (at
    /// most about twice `settings.timeout`). Errors name the config field
    /// to fix.
    pub fn open(settings: &RadosSettings) -> SfsResult<RadosBackend> {
        let conf = &settings.conf;
        if !conf.is_file() {
            return Err(SfsError::new(
                Errno::ENOENT,
                format!(
                    "backend.rados_conf: {} is not a file (it must be the cluster's ceph.conf)",
                    conf.display()
                ),
            ));
        }
        // librados takes whole seconds; never 0 (which means "forever").
        let seconds = settings.timeout.as_secs_f64().ceil().max(1.0).to_string();
        let options = [
            ("client_mount_timeout", seconds.clone()),
            ("rados_mon_op_timeout", seconds.clone()),
            ("rados_osd_op_timeout", seconds),
        ];
        let pool = Pool::connect(
            conf,
            &settings.user,
            &options,
            &settings.pool,
            &settings.namespace,
        )
        .map_err(|e| connect_error(settings, e))?;
        let label: Arc<str> = if settings.namespace.is_empty() {
            format!("rados pool {}", settings.pool).into()
        } else {
            format!(
                "rados pool {} namespace {}",
                settings.pool, settings.namespace
            )
            .into()
        };
        // A monitor answering says little about the OSDs: a real request
        // does (ENOENT is the expected answer).
        pool.stat("sfs-probe").map_err(|e| {
            SfsError::new(
                Errno::EIO,
                format!(
                    "backend.rados_pool: {label} (cluster of {}): no OSD answered a probe: {}",
                    conf.display(),
                    describe(e, settings.timeout)
                ),
            )
        })?;
        Ok(RadosBackend {
            pool: Arc::new(pool),
            label,
            timeout: settings.timeout,
        })
    }

    /// An error of an operation on `id`, with EIO for a cluster that did
    /// not answer.
    fn failed(&self, what: &str, id: FileId, errno: RadosErrno) -> SfsError {
        self.error(&format!("{what} object {id}"), errno)
    }

    /// An error of `doing`, naming the pool.
    fn error(&self, doing: &str, errno: RadosErrno) -> SfsError {
        SfsError::new(
            Errno(to_errno(errno)),
            format!(
                "{} back end: {doing}: {}",
                self.label,
                describe(errno, self.timeout)
            ),
        )
    }

    /// Runs `work` on the connection off the async threads; a librados
    /// error becomes [`RadosBackend::failed`] naming `what` and `id`.
    async fn blocking<T: Send + 'static>(
        &self,
        what: &'static str,
        id: FileId,
        work: impl FnOnce(&Pool, &str) -> Result<T, RadosErrno> + Send + 'static,
    ) -> SfsResult<T> {
        let pool = self.pool.clone();
        let result =
            super::off_the_runtime("rados back end", move || Ok(work(&pool, &id.to_hex()))).await?;
        result.map_err(|e| self.failed(what, id, e))
    }
}

/// The errno an application sees: a cluster that does not answer is EIO.
fn to_errno(errno: RadosErrno) -> i32 {
    match errno {
        libc::ETIMEDOUT | libc::ENOTCONN | libc::ESHUTDOWN | libc::ECONNREFUSED => libc::EIO,
        e => e,
    }
}

/// librados' errno in words, explaining a timeout.
fn describe(errno: RadosErrno, timeout: Duration) -> String {
    let text = std::io::Error::from_raw_os_error(errno);
    if errno == libc::ETIMEDOUT {
        format!(
            "{text}: no answer within {} s (backend.timeout_ms): is the cluster up?",
            timeout.as_secs_f64()
        )
    } else {
        text.to_string()
    }
}

/// A failed connect as an error naming the config field to fix.
fn connect_error(settings: &RadosSettings, e: ConnectError) -> SfsError {
    let conf = settings.conf.display();
    let (errno, message) = match e {
        ConnectError::Create(e) => (
            e,
            format!(
                "backend.rados_user: librados refused user {:?}: {}",
                settings.user,
                describe(e, settings.timeout)
            ),
        ),
        ConnectError::ReadConf(e) => (
            e,
            format!(
                "backend.rados_conf: librados cannot read {conf}: {}",
                describe(e, settings.timeout)
            ),
        ),
        ConnectError::SetOption(name, e) => (
            e,
            format!("rados back end: librados refused option {name}: {e}"),
        ),
        ConnectError::Connect(e) if e == libc::ETIMEDOUT => (
            e,
            format!(
                "backend.rados_conf: no monitor named in {conf} answered within {} s \
                 (backend.timeout_ms): is the cluster up and `mon host` right?",
                settings.timeout.as_secs_f64()
            ),
        ),
        ConnectError::Connect(e) => (
            e,
            format!(
                "backend.rados_user: cannot connect to the cluster of {conf} as client.{}: {} \
                 (is its key in the keyring that {conf} names?)",
                settings.user,
                describe(e, settings.timeout)
            ),
        ),
        ConnectError::OpenPool(libc::ENOENT) => (
            libc::ENOENT,
            format!(
                "backend.rados_pool: pool {:?} does not exist in the cluster of {conf} \
                 (create it: ceph osd pool create {})",
                settings.pool, settings.pool
            ),
        ),
        ConnectError::OpenPool(e) => (
            e,
            format!(
                "backend.rados_pool: cannot open pool {:?} of the cluster of {conf}: {}",
                settings.pool,
                describe(e, settings.timeout)
            ),
        ),
    };
    SfsError::new(Errno(to_errno(errno)), message)
}

#[async_trait]
impl ObjectBackend for RadosBackend {
    fn kind(&self) -> &'static str {
        "rados"
    }

    async fn create(&self, id: FileId) -> SfsResult<()> {
        self.blocking("creating", id, |pool, name| pool.create(name))
            .await
    }

    async fn write(&self, id: FileId, offset: u64, data: &[u8]) -> SfsResult<()> {
        let data = data.to_vec();
        self.blocking("writing", id, move |pool, name| {
            if data.is_empty() {
                // Writing nothing still makes the object exist.
                return pool.create(name);
            }
            pool.write(name, &data, offset)
        })
        .await
    }

    async fn read(&self, id: FileId, offset: u64, len: usize) -> SfsResult<Vec<u8>> {
        self.blocking("reading", id, move |pool, name| {
            let mut buf = vec![0u8; len];
            let read = pool.read(name, &mut buf, offset)?;
            buf.truncate(read);
            Ok(buf)
        })
        .await
    }

    async fn persist(&self, id: FileId) -> SfsResult<()> {
        // A returned write is already committed on the placement group's
        // OSDs (module documentation): only the contract's ENOENT is left.
        self.blocking("persisting", id, |pool, name| match pool.stat(name)? {
            Some(_) => Ok(()),
            None => Err(libc::ENOENT),
        })
        .await
    }

    async fn truncate(&self, id: FileId, size: u64) -> SfsResult<()> {
        self.blocking("truncating", id, move |pool, name| {
            pool.truncate_existing(name, size).map(drop)
        })
        .await
    }

    async fn delete(&self, id: FileId) -> SfsResult<()> {
        self.blocking("deleting", id, |pool, name| pool.remove(name))
            .await
    }

    async fn stat(&self, id: FileId) -> SfsResult<Option<ObjectStat>> {
        self.blocking("stat of", id, |pool, name| {
            Ok(pool.stat(name)?.map(|size| ObjectStat { size }))
        })
        .await
    }

    async fn list(&self) -> SfsResult<Vec<FileId>> {
        let pool = self.pool.clone();
        let names = super::off_the_runtime("rados back end", move || Ok(pool.list()))
            .await?
            .map_err(|e| self.error("listing", e))?;
        Ok(names.iter().filter_map(|n| parse_object_name(n)).collect())
    }

    async fn extents(&self, id: FileId) -> SfsResult<Vec<Range<u64>>> {
        self.blocking("listing the extents of", id, |pool, name| {
            match pool.stat(name)? {
                Some(0) => Ok(Vec::new()),
                // One extent, the whole object: RADOS does not report holes.
                Some(size) => Ok(std::iter::once(0..size).collect()),
                None => Err(libc::ENOENT),
            }
        })
        .await
    }
}

#[cfg(test)]
mod tests;
