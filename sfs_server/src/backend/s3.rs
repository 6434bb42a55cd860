//! The `s3` back end: objects of an S3 bucket (AWS, radosgw, MinIO, ...),
//! through the `object_store` crate.
//!
//! S3 objects are written whole: there is no write at an offset. A sparse
//! SFS object is therefore cut into fixed-size **pieces** of `piece_size`
//! bytes (`backend.s3_piece_size`, by default `chunk_size`), each its own
//! S3 object:
//!
//! ```text
//! PREFIX/<32 hex digits of the id>/<piece index, decimal>   bytes [i*P, i*P + len)
//! PREFIX/<32 hex digits of the id>/created                  empty: the object exists
//! ```
//!
//! - A piece holds bytes from its start up to the furthest byte written
//!   into it (a piece is never longer than `piece_size`, may be shorter).
//!   A missing piece, and the bytes between a short piece's end and the next
//!   piece, are holes and read as zeros.
//! - **Size** is the end of the furthest piece, found by listing the
//!   object's keys. A truncate to a longer size writes the piece holding the
//!   new last byte, zero-filled up to it, so the size needs no record of
//!   its own. `created` makes an object with no piece (new, or truncated to
//!   0) exist; it is written by `create` and `truncate`.
//! - **Write**: a write covering a whole piece is one PUT; a partial one is
//!   a read-modify-write of the piece (GET, patch, PUT). The write-back
//!   writes whole chunks at chunk offsets, so with `piece_size` equal to
//!   `chunk_size` each written-back chunk is one PUT (the file's last chunk,
//!   if short, one GET and one PUT).
//! - **Concurrency**: read-modify-writes of one piece inside one back end
//!   are serialised by a per-piece lock ([`piece_locks`]), so concurrent
//!   disjoint writes into one piece all land. Across servers no lock is
//!   needed because no two servers write one piece: `piece_size` divides
//!   `chunk_size` (config validation), so a piece lies inside one chunk,
//!   every chunk belongs to one server, and a server writes back only its
//!   own chunks, whole, at their offsets (`tier/writeback.rs`,
//!   `copy_chunk`). A truncate may come from every server holding part of
//!   the file at once; each cuts to the same size, so they agree.
//! - **Persistent**: S3 acknowledges a PUT only once the object is stored
//!   durably (AWS: on several devices in several zones; radosgw: committed
//!   in RADOS), so a returned write is persistent: `persist` only checks
//!   that the object exists.
//! - **Extents**: the pieces present, merged where adjacent.
//! - **Errors**: a service that does not answer within `backend.timeout_ms`
//!   (a few retries included) is EIO; refused credentials are EACCES.
//!
//! Credentials come from the servers' environment (`AWS_ACCESS_KEY_ID`,
//! `AWS_SECRET_ACCESS_KEY`, optional `AWS_SESSION_TOKEN`), never from
//! config.json.

mod piece_locks;

use super::{ObjectBackend, ObjectStat};
use async_trait::async_trait;
use futures::{StreamExt, TryStreamExt};
use object_store::aws::{AmazonS3, AmazonS3Builder};
use object_store::path::Path as Key;
use object_store::{
    BackoffConfig, ClientOptions, ObjectMeta, ObjectStore, ObjectStoreExt, RetryConfig,
};
use piece_locks::PieceLocks;
use sfs_global::chunk::split;
use sfs_global::{Errno, FileId, SfsError, SfsResult};
use std::collections::BTreeMap;
use std::ops::Range;
use std::time::Duration;

/// Pieces one call moves at once (GETs or PUTs in flight).
const PIECES_IN_FLIGHT: usize = 4;

/// The name of the marker that makes an object exist.
const CREATED: &str = "created";

/// Where and how to reach the bucket (from `backend.s3_*` in config.json
/// and the environment).
#[derive(Clone, Debug)]
pub struct S3Settings {
    /// The service's URL; empty for AWS (found from `region`).
    pub endpoint: String,
    /// The bucket (must exist).
    pub bucket: String,
    /// Key prefix inside the bucket (may be empty).
    pub prefix: String,
    /// The region requests are signed for.
    pub region: String,
    /// The size of a piece, a power of two.
    pub piece_size: u64,
    /// Each request (with its retries) fails after this long.
    pub timeout: Duration,
    /// The access key id.
    pub access_key: String,
    /// The secret access key.
    pub secret_key: String,
    /// A session token, for temporary credentials.
    pub session_token: Option<String>,
}

impl S3Settings {
    /// Reads the credentials from the environment (`AWS_ACCESS_KEY_ID`,
    /// `AWS_SECRET_ACCESS_KEY`, `AWS_SESSION_TOKEN`) into `self`.
    pub fn with_credentials_from_env(mut self) -> SfsResult<S3Settings> {
        let var = |name: &str| std::env::var(name).ok().filter(|v| !v.is_empty());
        match (var("AWS_ACCESS_KEY_ID"), var("AWS_SECRET_ACCESS_KEY")) {
            (Some(access), Some(secret)) => {
                self.access_key = access;
                self.secret_key = secret;
                self.session_token = var("AWS_SESSION_TOKEN");
                Ok(self)
            }
            _ => Err(SfsError::new(
                Errno::EINVAL,
                "backend.kind \"s3\": set AWS_ACCESS_KEY_ID and AWS_SECRET_ACCESS_KEY in the \
                 servers' environment (credentials are never read from config.json)",
            )),
        }
    }
}

/// Objects as pieces in an S3 bucket (see the module documentation).
pub struct S3Backend {
    store: AmazonS3,
    /// `PREFIX` of the module documentation.
    root: Key,
    piece_size: u64,
    locks: PieceLocks,
    /// "s3 bucket B at URL", for messages.
    label: String,
}

/// What the listing of one object's keys says.
struct Listing {
    /// Any key of the object exists (a piece or `created`).
    exists: bool,
    /// Piece index to its length.
    pieces: BTreeMap<u64, u64>,
}

impl Listing {
    fn size(&self, piece_size: u64) -> u64 {
        self.pieces
            .iter()
            .map(|(&index, &len)| index * piece_size + len)
            .max()
            .unwrap_or(0)
    }
}

impl S3Backend {
    /// Connects and checks with a real request that the bucket exists and
    /// takes the credentials; errors name the setting to fix.
    pub async fn open(settings: S3Settings) -> SfsResult<S3Backend> {
        if !settings.piece_size.is_power_of_two() {
            return Err(SfsError::new(
                Errno::EINVAL,
                format!(
                    "backend.s3_piece_size: must be a power of two, got {}",
                    settings.piece_size
                ),
            ));
        }
        let timeout = settings.timeout;
        let client = ClientOptions::new()
            .with_allow_http(settings.endpoint.starts_with("http://"))
            .with_timeout(timeout)
            .with_connect_timeout(timeout);
        // A few quick retries, all within the timeout: a write-back retries
        // on its own (with back-off), a start must fail in bounded time.
        let retry = RetryConfig {
            backoff: BackoffConfig {
                init_backoff: Duration::from_millis(100),
                max_backoff: Duration::from_secs(2),
                base: 2.0,
            },
            max_retries: 3,
            retry_timeout: timeout,
        };
        let mut builder = AmazonS3Builder::new()
            .with_bucket_name(&settings.bucket)
            .with_region(&settings.region)
            .with_access_key_id(&settings.access_key)
            .with_secret_access_key(&settings.secret_key)
            .with_client_options(client)
            .with_retry(retry);
        if let Some(token) = &settings.session_token {
            builder = builder.with_token(token);
        }
        let where_ = if settings.endpoint.is_empty() {
            format!("AWS region {}", settings.region)
        } else {
            builder = builder.with_endpoint(&settings.endpoint);
            settings.endpoint.clone()
        };
        let store = builder.build().map_err(|e| {
            SfsError::new(
                Errno::EINVAL,
                format!("backend.s3_endpoint: cannot use {where_:?}: {e}"),
            )
        })?;
        let backend = S3Backend {
            store,
            root: Key::from(settings.prefix.as_str()),
            piece_size: settings.piece_size,
            locks: PieceLocks::default(),
            label: format!("s3 bucket {} at {where_}", settings.bucket),
        };
        // One page of the prefix: the bucket exists, the keys are right.
        let mut listing = backend.store.list(Some(&backend.root));
        let probe = tokio::time::timeout(timeout * 2, listing.next())
            .await
            .map_err(|_| {
                SfsError::new(
                    Errno::EIO,
                    format!(
                        "backend.s3_endpoint: {where_} did not answer within {} s \
                     (backend.timeout_ms)",
                        (timeout * 2).as_secs_f64()
                    ),
                )
            })?;
        if let Some(Err(e)) = probe {
            return Err(open_error(&settings, &where_, &e));
        }
        Ok(backend)
    }

    fn object_root(&self, id: FileId) -> Key {
        self.root.clone().join(id.to_hex())
    }

    fn piece_key(&self, id: FileId, index: u64) -> Key {
        self.object_root(id).join(index.to_string())
    }

    /// An error of an operation on `id`: ENOENT for a missing key, EACCES
    /// for refused credentials, EIO otherwise (unreachable, timed out).
    fn failed(&self, what: &str, id: FileId, e: &object_store::Error) -> SfsError {
        SfsError::new(
            errno_of(e),
            format!("{} back end: {what} object {id}: {e}", self.label),
        )
    }

    /// ENOENT for an operation on an object without any key.
    fn no_such_object(&self, what: &str, id: FileId) -> SfsError {
        SfsError::new(
            Errno::ENOENT,
            format!(
                "{} back end: {what} object {id}: no such object",
                self.label
            ),
        )
    }

    /// Every key of `id` (its pieces and `created`).
    async fn keys_of(&self, id: FileId) -> SfsResult<Vec<ObjectMeta>> {
        self.store
            .list(Some(&self.object_root(id)))
            .try_collect()
            .await
            .map_err(|e| self.failed("listing the pieces of", id, &e))
    }

    /// What the keys of `id` say.
    async fn listing(&self, id: FileId) -> SfsResult<Listing> {
        let metas = self.keys_of(id).await?;
        let pieces = metas
            .iter()
            .filter_map(|m| {
                let index = m.location.filename()?.parse::<u64>().ok()?;
                Some((index, m.size))
            })
            .collect();
        Ok(Listing {
            exists: !metas.is_empty(),
            pieces,
        })
    }

    /// The bytes of piece `index` of `id`, or `None` if it does not exist.
    async fn get_piece(&self, id: FileId, index: u64) -> SfsResult<Option<Vec<u8>>> {
        let key = self.piece_key(id, index);
        let fetched = match self.store.get(&key).await {
            Ok(result) => result.bytes().await,
            Err(e) => Err(e),
        };
        match fetched {
            Ok(bytes) => Ok(Some(bytes.to_vec())),
            Err(object_store::Error::NotFound { .. }) => Ok(None),
            Err(e) => Err(self.failed(&format!("reading piece {index} of"), id, &e)),
        }
    }

    async fn put(&self, what: &str, id: FileId, key: &Key, data: Vec<u8>) -> SfsResult<()> {
        self.store
            .put(key, data.into())
            .await
            .map(drop)
            .map_err(|e| self.failed(what, id, &e))
    }

    async fn put_piece(&self, id: FileId, index: u64, data: Vec<u8>) -> SfsResult<()> {
        let what = format!("writing piece {index} of");
        self.put(&what, id, &self.piece_key(id, index), data).await
    }

    async fn put_created(&self, id: FileId) -> SfsResult<()> {
        let key = self.object_root(id).join(CREATED);
        self.put("creating", id, &key, Vec::new()).await
    }

    /// Changes piece `index` of `id` under its lock: `change` gets the
    /// piece's bytes (empty if it is missing) and leaves what to store.
    async fn modify_piece(
        &self,
        id: FileId,
        index: u64,
        change: impl FnOnce(&mut Vec<u8>),
    ) -> SfsResult<()> {
        let _locked = self.locks.lock(id, index).await;
        let mut piece = self.get_piece(id, index).await?.unwrap_or_default();
        change(&mut piece);
        self.put_piece(id, index, piece).await
    }

    async fn delete_key(&self, id: FileId, key: &Key) -> SfsResult<()> {
        match self.store.delete(key).await {
            Ok(()) | Err(object_store::Error::NotFound { .. }) => Ok(()),
            Err(e) => Err(self.failed("deleting", id, &e)),
        }
    }
}

/// The HTTP status of a failed request. object_store types it for single
/// objects (`NotFound`, `PermissionDenied`) but reports a failed listing as
/// `Generic`, with the status only in its text ("... status code: 403
/// Forbidden ...").
fn http_status(e: &object_store::Error) -> Option<u16> {
    match e {
        object_store::Error::NotFound { .. } => Some(404),
        object_store::Error::PermissionDenied { .. } => Some(403),
        object_store::Error::Unauthenticated { .. } => Some(401),
        _ => {
            let text = e.to_string();
            let at = text.find("status code: ")? + "status code: ".len();
            text.get(at..at + 3)?.parse().ok()
        }
    }
}

/// The errno an application sees for `e`: a missing key is ENOENT,
/// refused credentials EACCES, anything else (no answer, a server error)
/// EIO.
fn errno_of(e: &object_store::Error) -> Errno {
    match http_status(e) {
        Some(404) => Errno::ENOENT,
        Some(401 | 403) => Errno::EACCES,
        _ => Errno::EIO,
    }
}

/// A failed probe at open as an error naming what to fix.
fn open_error(settings: &S3Settings, where_: &str, e: &object_store::Error) -> SfsError {
    let bucket = &settings.bucket;
    let errno = errno_of(e);
    let message = match errno {
        Errno::ENOENT => format!(
            "backend.s3_bucket: bucket {bucket:?} does not exist at {where_}: create it \
             (SFS does not create buckets): {e}"
        ),
        Errno::EACCES => format!(
            "{where_} refused access to bucket {bucket:?} (backend.s3_bucket) with the \
             credentials in AWS_ACCESS_KEY_ID and AWS_SECRET_ACCESS_KEY: check both: {e}"
        ),
        _ => format!("backend.s3_endpoint: cannot reach {where_} (bucket {bucket:?}): {e}"),
    };
    SfsError::new(errno, message)
}

#[async_trait]
impl ObjectBackend for S3Backend {
    fn kind(&self) -> &'static str {
        "s3"
    }

    async fn create(&self, id: FileId) -> SfsResult<()> {
        self.put_created(id).await
    }

    async fn write(&self, id: FileId, offset: u64, data: &[u8]) -> SfsResult<()> {
        if data.is_empty() {
            return self.create(id).await;
        }
        let piece_size = self.piece_size;
        futures::stream::iter(split(offset, data.len() as u64, piece_size))
            .map(|p| async move {
                let bytes = &data[p.buf_offset as usize..(p.buf_offset + p.len) as usize];
                if p.len == piece_size {
                    // The whole piece: no need to read it. Still under the
                    // lock, so it cannot be undone by a read-modify-write
                    // that read the piece before.
                    let _locked = self.locks.lock(id, p.index).await;
                    return self.put_piece(id, p.index, bytes.to_vec()).await;
                }
                let start = p.offset_in_chunk as usize;
                self.modify_piece(id, p.index, |piece| {
                    if piece.len() < start + bytes.len() {
                        piece.resize(start + bytes.len(), 0);
                    }
                    piece[start..start + bytes.len()].copy_from_slice(bytes);
                })
                .await
            })
            .buffer_unordered(PIECES_IN_FLIGHT)
            .try_collect::<()>()
            .await
    }

    async fn read(&self, id: FileId, offset: u64, len: usize) -> SfsResult<Vec<u8>> {
        let pieces: Vec<_> = split(offset, len as u64, self.piece_size).collect();
        let indexes: Vec<u64> = pieces.iter().map(|p| p.index).collect();
        let fetched: Vec<Option<Vec<u8>>> = futures::stream::iter(indexes)
            .map(|index| self.get_piece(id, index))
            .buffered(PIECES_IN_FLIGHT)
            .try_collect()
            .await?;
        // Every piece there and the last reaching the end of the range: the
        // object is at least that long, no listing needed (the common case,
        // a fetch of a whole chunk). Otherwise the size decides where zeros
        // stop.
        let reaches_the_end = pieces.last().zip(fetched.last()).is_none_or(|(p, bytes)| {
            bytes
                .as_ref()
                .is_some_and(|b| b.len() as u64 >= p.offset_in_chunk + p.len)
        });
        let end = if !pieces.is_empty() && fetched.iter().all(Option::is_some) && reaches_the_end {
            offset + len as u64
        } else {
            let listing = self.listing(id).await?;
            if !listing.exists {
                return Err(self.no_such_object("reading", id));
            }
            listing
                .size(self.piece_size)
                .clamp(offset, offset + len as u64)
        };
        let mut out = vec![0u8; (end - offset) as usize];
        for (p, bytes) in pieces.iter().zip(&fetched) {
            let (Some(bytes), Some(dest)) = (bytes, out.get_mut(p.buf_offset as usize..)) else {
                continue;
            };
            let from = (p.offset_in_chunk as usize).min(bytes.len());
            let to = ((p.offset_in_chunk + p.len) as usize).min(bytes.len());
            let n = (to - from).min(dest.len());
            dest[..n].copy_from_slice(&bytes[from..from + n]);
        }
        Ok(out)
    }

    async fn persist(&self, id: FileId) -> SfsResult<()> {
        // A returned PUT is durable (module documentation): only the
        // contract's ENOENT for a missing object is left to check.
        match self.store.list(Some(&self.object_root(id))).next().await {
            Some(Ok(_)) => Ok(()),
            Some(Err(e)) => Err(self.failed("persisting", id, &e)),
            None => Err(self.no_such_object("persisting", id)),
        }
    }

    async fn truncate(&self, id: FileId, size: u64) -> SfsResult<()> {
        let listing = self.listing(id).await?;
        if !listing.exists {
            return Ok(());
        }
        // Cutting every piece must not make the object vanish.
        self.put_created(id).await?;
        let piece_size = self.piece_size;
        let old_size = listing.size(piece_size);
        for &index in listing
            .pieces
            .range(size.div_ceil(piece_size)..)
            .map(|(i, _)| i)
        {
            let _locked = self.locks.lock(id, index).await;
            self.delete_key(id, &self.piece_key(id, index)).await?;
        }
        let keep_in_last = size % piece_size;
        let last = size / piece_size;
        if size < old_size {
            // The piece holding the new end, if it reaches past it.
            if keep_in_last != 0 && listing.pieces.get(&last).is_some_and(|&l| l > keep_in_last) {
                self.modify_piece(id, last, |piece| piece.truncate(keep_in_last as usize))
                    .await?;
            }
        } else if size > old_size {
            // The piece holding the new last byte reaches it, zero-filled.
            let last_byte = size - 1;
            let (index, len) = (last_byte / piece_size, last_byte % piece_size + 1);
            self.modify_piece(id, index, |piece| piece.resize(len as usize, 0))
                .await?;
        }
        Ok(())
    }

    async fn delete(&self, id: FileId) -> SfsResult<()> {
        let metas = self.keys_of(id).await?;
        futures::stream::iter(metas.into_iter().map(|m| m.location))
            .map(|key| async move { self.delete_key(id, &key).await })
            .buffer_unordered(PIECES_IN_FLIGHT)
            .try_collect::<()>()
            .await
    }

    async fn stat(&self, id: FileId) -> SfsResult<Option<ObjectStat>> {
        let listing = self.listing(id).await?;
        Ok(listing.exists.then(|| ObjectStat {
            size: listing.size(self.piece_size),
        }))
    }

    async fn list(&self) -> SfsResult<Vec<FileId>> {
        let listing = self
            .store
            .list_with_delimiter(Some(&self.root))
            .await
            .map_err(|e| {
                SfsError::new(
                    errno_of(&e),
                    format!("{} back end: listing: {e}", self.label),
                )
            })?;
        // Anything not named by 32 hex digits is not one of ours.
        Ok(listing
            .common_prefixes
            .iter()
            .filter_map(|p| p.filename())
            .filter(|name| name.len() == 32)
            .filter_map(|name| u128::from_str_radix(name, 16).ok())
            .map(FileId)
            .collect())
    }

    async fn extents(&self, id: FileId) -> SfsResult<Vec<Range<u64>>> {
        let listing = self.listing(id).await?;
        if !listing.exists {
            return Err(self.no_such_object("listing the extents of", id));
        }
        let mut extents: Vec<Range<u64>> = Vec::new();
        for (&index, &len) in listing.pieces.iter().filter(|(_, &len)| len > 0) {
            let range = index * self.piece_size..index * self.piece_size + len;
            match extents.last_mut() {
                Some(last) if last.end == range.start => last.end = range.end,
                _ => extents.push(range),
            }
        }
        Ok(extents)
    }
}

#[cfg(test)]
mod tests;
