//! The `"backend"` section of config.json: the object back end the servers
//! flush file data to (the durable tier behind the burst buffer).
//!
//! Every server of a job writes disjoint ranges of the same objects, so all
//! of them must reach the same store: the default `dir` back end under
//! `<rootdir>/backend` is only shared when every server runs on one machine;
//! on a cluster `path` must name a directory of a shared (parallel) file
//! system. The networked stores, `rados` (a Ceph pool through librados) and
//! `s3` (a bucket of an S3 service), are shared by construction; their
//! settings are prefixed with the kind's name (`rados_pool`, `s3_bucket`).
//! Secrets never live here: S3 keys come from the servers' environment
//! (`AWS_ACCESS_KEY_ID`, `AWS_SECRET_ACCESS_KEY`), a Ceph key from the
//! keyring that `rados_conf` names.

use super::{ConfigError, IN_MEMORY_ORIGIN};
use serde::{Deserialize, Serialize};
use std::path::{Path, PathBuf};

/// Which kind of store the servers flush to.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum BackendKind {
    /// Objects as sparse files under a directory (`path`).
    Dir,
    /// Objects of a Ceph RADOS pool (`rados_conf`, `rados_pool`).
    Rados,
    /// Objects of an S3 bucket, each file cut into pieces (`s3_bucket`).
    S3,
}

/// When a server writes dirty chunks back to the object back end on its own
/// (an explicit `sfs flush` works under every policy).
#[derive(Clone, Copy, Debug, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "kebab-case")]
pub enum WritebackPolicy {
    /// Only on request (`sfs flush`), and when the chunk store passes its
    /// high watermark (capacity pressure always drains).
    Explicit,
    /// A file is written back once this server saw no write to it for
    /// `idle_ms`.
    Idle,
    /// Like `idle`, but write-back also pauses while this server takes in
    /// more than `busy_mb_per_s` of new data (the job's I/O comes first).
    IoAware,
    /// A file is written back as soon as the last descriptor that wrote
    /// it is closed (the client tells every server), and otherwise once
    /// idle as under `idle` (so a program killed before its close still
    /// drains).
    Close,
}

/// Settings of the object back end (`"backend": {...}` in config.json).
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
#[serde(default, deny_unknown_fields)]
pub struct BackendConfig {
    /// The kind of store: "dir", "rados" or "s3".
    pub kind: BackendKind,
    /// `dir`: the directory holding the objects, absolute; empty means
    /// `<rootdir>/backend` (node-local: shared only by servers on one machine).
    pub path: String,
    /// When dirty data goes to the back end without being asked.
    pub writeback: WritebackPolicy,
    /// `idle`, `io-aware` and `close`: a file is due once unwritten for
    /// this long.
    pub idle_ms: u64,
    /// `io-aware`: write-back pauses while this server takes in more new
    /// data than this (MB/s, over the last 200 ms).
    pub busy_mb_per_s: u64,
    /// With `chunk_store_capacity` set: past this percentage of it, the
    /// server writes back everything dirty and evicts clean chunks
    /// (least recently used first) ...
    pub high_watermark_percent: u8,
    /// ... until usage is below this percentage.
    pub low_watermark_percent: u8,
    /// Files one server writes back at once.
    pub flush_files_in_flight: u32,
    /// How many nice steps (0-19) below the server's own priority the
    /// threads run that write back on their own (`idle`, `io-aware`,
    /// `close`; at most nice 19): above 0 they yield the CPU to the job's
    /// I/O, which the server's data path serves at its own priority; 0
    /// runs them beside the data path. A write-back
    /// asked for (`sfs flush`, `fsync_to_backend`, a checkpoint) or forced
    /// by a full store runs at the server's priority whatever this says.
    pub writeback_nice: u8,
    /// `fsync`/`fdatasync` of a file also writes it back and waits until
    /// the back end holds it (back-end-persistent), not only until the
    /// servers' devices do. Read by clients.
    pub fsync_to_backend: bool,
    /// A write that finds the chunk store full waits this long for
    /// write-back and eviction to make room before it fails with ENOSPC
    /// (0: at once); below `request_timeout_ms`, so the client sees the
    /// ENOSPC rather than a timeout.
    pub space_wait_ms: u64,
    /// `rados`: the cluster's ceph.conf (monitors, keyring), absolute.
    pub rados_conf: String,
    /// `rados`: the pool holding the objects (must exist).
    pub rados_pool: String,
    /// `rados`: the Ceph user the servers connect as (`admin` is
    /// `client.admin`); its key comes from the keyring in `rados_conf`.
    pub rados_user: String,
    /// `rados`: the namespace inside the pool, so several jobs (or tests)
    /// can share one pool; empty is the pool's default namespace.
    pub rados_namespace: String,
    /// `s3`: the service's URL (`http://host:port` for radosgw, MinIO, ...);
    /// empty means AWS itself, found from `s3_region`.
    pub s3_endpoint: String,
    /// `s3`: the bucket holding the objects (must exist).
    pub s3_bucket: String,
    /// `s3`: a key prefix inside the bucket, so several jobs can share it.
    pub s3_prefix: String,
    /// `s3`: the region requests are signed for.
    pub s3_region: String,
    /// `s3`: the size of the S3 objects a file is cut into; 0 means
    /// `chunk_size`, and it must divide `chunk_size` (one server per piece).
    pub s3_piece_size: u64,
    /// `rados` and `s3`: how long connecting, and each request, may take
    /// before it fails with EIO (a server start, a write-back).
    pub timeout_ms: u64,
}

impl Default for BackendConfig {
    fn default() -> Self {
        BackendConfig {
            kind: BackendKind::Dir,
            path: String::new(),
            writeback: WritebackPolicy::Explicit,
            idle_ms: 2000,
            busy_mb_per_s: 200,
            high_watermark_percent: 90,
            low_watermark_percent: 70,
            flush_files_in_flight: 4,
            writeback_nice: 10,
            fsync_to_backend: false,
            space_wait_ms: 5_000,
            rados_conf: "/etc/ceph/ceph.conf".into(),
            rados_pool: String::new(),
            rados_user: "admin".into(),
            rados_namespace: String::new(),
            s3_endpoint: String::new(),
            s3_bucket: String::new(),
            s3_prefix: String::new(),
            s3_region: "us-east-1".into(),
            s3_piece_size: 0,
            timeout_ms: 30_000,
        }
    }
}

impl BackendConfig {
    /// Checks the settings for chunks of `chunk_size`; names the field.
    pub fn validate(&self, chunk_size: u64) -> Result<(), ConfigError> {
        self.validate_in(chunk_size, IN_MEMORY_ORIGIN)
    }

    /// [`BackendConfig::validate`], naming `origin` (the config file).
    pub(super) fn validate_in(&self, chunk_size: u64, origin: &str) -> Result<(), ConfigError> {
        let bad = |field: &'static str, problem: String| ConfigError::BadValue {
            file: origin.to_string(),
            field,
            problem,
        };
        if self.idle_ms == 0 {
            return Err(bad("backend.idle_ms", "must be at least 1".into()));
        }
        if !(1..=100).contains(&self.high_watermark_percent) {
            return Err(bad(
                "backend.high_watermark_percent",
                format!("must be 1 to 100, got {}", self.high_watermark_percent),
            ));
        }
        if self.low_watermark_percent >= self.high_watermark_percent {
            return Err(bad(
                "backend.low_watermark_percent",
                format!(
                    "must be below high_watermark_percent ({}), got {}",
                    self.high_watermark_percent, self.low_watermark_percent
                ),
            ));
        }
        if self.flush_files_in_flight == 0 {
            return Err(bad(
                "backend.flush_files_in_flight",
                "must be at least 1".into(),
            ));
        }
        if self.writeback_nice > 19 {
            return Err(bad(
                "backend.writeback_nice",
                format!("must be 0 to 19, got {}", self.writeback_nice),
            ));
        }
        if !(1..=3_600_000).contains(&self.timeout_ms) {
            return Err(bad(
                "backend.timeout_ms",
                format!("must be from 1 to 3600000, got {}", self.timeout_ms),
            ));
        }
        match self.kind {
            // Servers are started from any working directory (by `sfs
            // start`, by a batch system): a relative path would name a
            // different directory on each.
            BackendKind::Dir if !self.path.is_empty() && !self.path.starts_with('/') => Err(bad(
                "backend.path",
                format!(
                    "must be an absolute directory, or empty for <rootdir>/backend, got {:?}",
                    self.path
                ),
            )),
            BackendKind::Dir => Ok(()),
            BackendKind::Rados => {
                if !self.rados_conf.starts_with('/') {
                    return Err(bad(
                        "backend.rados_conf",
                        format!(
                            "must be the absolute path of the cluster's ceph.conf, got {:?}",
                            self.rados_conf
                        ),
                    ));
                }
                for (field, value) in [
                    ("backend.rados_pool", &self.rados_pool),
                    ("backend.rados_user", &self.rados_user),
                ] {
                    if value.is_empty() {
                        return Err(bad(field, "must be set for kind \"rados\"".into()));
                    }
                }
                Ok(())
            }
            BackendKind::S3 => self.validate_s3(chunk_size, &bad),
        }
    }

    /// The `s3` settings (see [`BackendConfig::validate`]).
    fn validate_s3(
        &self,
        chunk_size: u64,
        bad: &dyn Fn(&'static str, String) -> ConfigError,
    ) -> Result<(), ConfigError> {
        if self.s3_bucket.is_empty() {
            return Err(bad(
                "backend.s3_bucket",
                "must name an existing bucket for kind \"s3\"".into(),
            ));
        }
        if !self.s3_endpoint.is_empty()
            && !self.s3_endpoint.starts_with("http://")
            && !self.s3_endpoint.starts_with("https://")
        {
            return Err(bad(
                "backend.s3_endpoint",
                format!(
                    "must be an http:// or https:// URL, or empty for AWS, got {:?}",
                    self.s3_endpoint
                ),
            ));
        }
        if self.s3_region.is_empty() {
            return Err(bad(
                "backend.s3_region",
                "must be set for kind \"s3\"".into(),
            ));
        }
        // A piece inside one chunk has one writer, the chunk's server; a
        // piece spanning chunks of two servers would be rewritten by both
        // at once (read-modify-write) and lose one's bytes.
        let piece = self.s3_piece_size;
        if piece != 0
            && (piece < 4096 || !piece.is_power_of_two() || !chunk_size.is_multiple_of(piece))
        {
            return Err(bad(
                "backend.s3_piece_size",
                format!(
                    "must be 0 (chunk_size) or a power of two from 4096 that divides \
                     chunk_size ({chunk_size}), got {piece}"
                ),
            ));
        }
        Ok(())
    }

    /// The `s3` back end's piece size: `s3_piece_size`, or `chunk_size`.
    pub fn s3_piece_size(&self, chunk_size: u64) -> u64 {
        if self.s3_piece_size == 0 {
            chunk_size
        } else {
            self.s3_piece_size
        }
    }

    /// The `dir` back end's directory: `path`, or `<rootdir>/backend`.
    pub fn dir(&self, rootdir: &str) -> PathBuf {
        if self.path.is_empty() {
            Path::new(rootdir).join("backend")
        } else {
            PathBuf::from(&self.path)
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn watermarks_and_policy_are_checked_naming_the_field() {
        let mut c = BackendConfig::default();
        c.validate(512 << 10).unwrap();
        c.low_watermark_percent = 95;
        let e = c.validate(512 << 10).unwrap_err().to_string();
        assert!(e.contains("backend.low_watermark_percent"), "{e}");
        c = BackendConfig {
            high_watermark_percent: 101,
            ..BackendConfig::default()
        };
        assert!(c
            .validate(512 << 10)
            .unwrap_err()
            .to_string()
            .contains("high_watermark"));
        c = BackendConfig {
            idle_ms: 0,
            ..BackendConfig::default()
        };
        assert!(c
            .validate(512 << 10)
            .unwrap_err()
            .to_string()
            .contains("backend.idle_ms"));
        let parsed: BackendConfig =
            serde_json::from_str(r#"{"writeback": "io-aware", "idle_ms": 50}"#).unwrap();
        assert_eq!(parsed.writeback, WritebackPolicy::IoAware);
        assert!(serde_json::from_str::<BackendConfig>(r#"{"writeback": "sometimes"}"#).is_err());
    }

    /// The message of validating `json` (a `backend` section) with 512 KiB
    /// chunks, or "ok".
    fn verdict(json: &str) -> String {
        let c: BackendConfig = serde_json::from_str(json).unwrap();
        c.validate(512 << 10)
            .map_or_else(|e| e.to_string(), |()| "ok".into())
    }

    #[test]
    fn networked_stores_need_their_settings_named_by_field() {
        for (json, field) in [
            (r#"{"kind": "rados"}"#, "backend.rados_pool"),
            (
                r#"{"kind": "rados", "rados_pool": "p", "rados_conf": "ceph.conf"}"#,
                "backend.rados_conf",
            ),
            (
                r#"{"kind": "rados", "rados_pool": "p", "rados_user": ""}"#,
                "backend.rados_user",
            ),
            (r#"{"kind": "s3"}"#, "backend.s3_bucket"),
            (
                r#"{"kind": "s3", "s3_bucket": "b", "s3_endpoint": "localhost:80"}"#,
                "backend.s3_endpoint",
            ),
            (
                r#"{"kind": "s3", "s3_bucket": "b", "s3_region": ""}"#,
                "backend.s3_region",
            ),
            // A piece that spans chunks, one not dividing them, a tiny one.
            (
                r#"{"kind": "s3", "s3_bucket": "b", "s3_piece_size": 1048576}"#,
                "backend.s3_piece_size",
            ),
            (
                r#"{"kind": "s3", "s3_bucket": "b", "s3_piece_size": 100000}"#,
                "backend.s3_piece_size",
            ),
            (
                r#"{"kind": "s3", "s3_bucket": "b", "s3_piece_size": 1024}"#,
                "backend.s3_piece_size",
            ),
            (r#"{"timeout_ms": 0}"#, "backend.timeout_ms"),
            (r#"{"writeback_nice": 20}"#, "backend.writeback_nice"),
        ] {
            let verdict = verdict(json);
            assert!(verdict.contains(field), "{json}: {verdict}");
        }
        assert_eq!(verdict(r#"{"kind": "rados", "rados_pool": "sfs"}"#), "ok");
        assert_eq!(
            verdict(
                r#"{"kind": "s3", "s3_bucket": "b", "s3_endpoint": "http://127.0.0.1:8000",
                    "s3_piece_size": 131072}"#
            ),
            "ok"
        );
        let c = BackendConfig::default();
        assert_eq!(c.s3_piece_size(1 << 20), 1 << 20, "0 means chunk_size");
    }
}
