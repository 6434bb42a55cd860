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

/// Settings of the object back end (`"backend": {...}` in config.json).
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
#[serde(default, deny_unknown_fields)]
pub struct BackendConfig {
    /// The kind of store: "dir".
    pub kind: BackendKind,
    /// `dir`: the directory holding the objects, absolute; empty means
    /// `<rootdir>/backend` (node-local: shared only by servers on one machine).
    pub path: String,
}

impl Default for BackendConfig {
    fn default() -> Self {
        BackendConfig {
            kind: BackendKind::Dir,
            path: String::new(),
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
