//! The `"backend"` section of config.json: the object back end the servers
//! flush file data to (the durable tier behind the burst buffer).
//!
//! Every server of a job writes disjoint ranges of the same objects, so all
//! of them must reach the same store: the default `dir` back end under
//! `<rootdir>/backend` is only shared when every server runs on one machine;
//! on a cluster `path` must name a directory of a shared (parallel) file
//! system. A networked store is one more [`BackendKind`] variant with its
//! own settings next to `path`.

use super::{ConfigError, IN_MEMORY_ORIGIN};
use serde::{Deserialize, Serialize};
use std::path::{Path, PathBuf};

/// Which kind of store the servers flush to.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum BackendKind {
    /// Objects as sparse files under a directory (`path`).
    Dir,
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
    /// The kind of store: "dir".
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
    /// `fsync`/`fdatasync` of a file also writes it back and waits until
    /// the back end holds it (back-end-persistent), not only until the
    /// servers' devices do. Read by clients.
    pub fsync_to_backend: bool,
    /// A write that finds the chunk store full waits this long for
    /// write-back and eviction to make room before it fails with ENOSPC
    /// (0: at once); below `request_timeout_ms`, so the client sees the
    /// ENOSPC rather than a timeout.
    pub space_wait_ms: u64,
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
            fsync_to_backend: false,
            space_wait_ms: 5_000,
        }
    }
}

impl BackendConfig {
    /// Checks the settings; names the field.
    pub fn validate(&self) -> Result<(), ConfigError> {
        self.validate_in(IN_MEMORY_ORIGIN)
    }

    /// [`BackendConfig::validate`], naming `origin` (the config file).
    pub(super) fn validate_in(&self, origin: &str) -> Result<(), ConfigError> {
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
        match self.kind {
            // Servers are started from any working directory (by `sfs
            // start`, by a batch system): a relative path would name a
            // different directory on each.
            BackendKind::Dir if !self.path.is_empty() && !self.path.starts_with('/') => {
                Err(ConfigError::BadValue {
                    file: origin.to_string(),
                    field: "backend.path",
                    problem: format!(
                        "must be an absolute directory, or empty for <rootdir>/backend, got {:?}",
                        self.path
                    ),
                })
            }
            BackendKind::Dir => Ok(()),
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
        c.validate().unwrap();
        c.low_watermark_percent = 95;
        let e = c.validate().unwrap_err().to_string();
        assert!(e.contains("backend.low_watermark_percent"), "{e}");
        c = BackendConfig {
            high_watermark_percent: 101,
            ..BackendConfig::default()
        };
        assert!(c
            .validate()
            .unwrap_err()
            .to_string()
            .contains("high_watermark"));
        c = BackendConfig {
            idle_ms: 0,
            ..BackendConfig::default()
        };
        assert!(c
            .validate()
            .unwrap_err()
            .to_string()
            .contains("backend.idle_ms"));
        let parsed: BackendConfig =
            serde_json::from_str(r#"{"writeback": "io-aware", "idle_ms": 50}"#).unwrap();
        assert_eq!(parsed.writeback, WritebackPolicy::IoAware);
        assert!(serde_json::from_str::<BackendConfig>(r#"{"writeback": "sometimes"}"#).is_err());
    }
}
