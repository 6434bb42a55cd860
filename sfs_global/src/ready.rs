//! A server's ready file (`rootdir/NAME/ready`): written once the server
//! serves, removed when it stops; what `sfs start` waits for, what `sfs
//! stop` and `sfs status` read the server's pid from, and what tools and
//! tests read it from. One type, written and read here only.

use serde::{Deserialize, Serialize};
use std::path::{Path, PathBuf};

/// What a running server says about itself.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct Ready {
    pub pid: u32,
    /// The server's hostfile name.
    pub name: String,
    /// Its RPC `host:port`.
    pub address: String,
    /// `tcp` or `rdma` (`config::DataTransport::name`).
    pub data_transport: String,
    /// The data path's `host:port`.
    pub data_endpoint: String,
}

impl Ready {
    /// Where server `name` of `config` keeps its ready file.
    pub fn path(config: &crate::config::Config, name: &str) -> PathBuf {
        config.run_dir(name).join("ready")
    }

    /// Writes `path` atomically (a temporary file, then a rename), so a
    /// reader never sees half of it.
    pub fn write(&self, path: &Path) -> std::io::Result<()> {
        let tmp = path.with_extension("tmp");
        let body = serde_json::to_string(self).map_err(std::io::Error::other)?;
        std::fs::write(&tmp, format!("{body}\n"))?;
        std::fs::rename(&tmp, path)
    }

    /// The ready file at `path`, or `None` when there is none (the server
    /// is not up) or it does not parse.
    pub fn read(path: &Path) -> Option<Ready> {
        let text = std::fs::read_to_string(path).ok()?;
        serde_json::from_str(&text).ok()
    }

    /// The pid as `kill(2)` takes it.
    pub fn pid(&self) -> Option<i32> {
        i32::try_from(self.pid).ok()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_ready_file_round_trips_and_garbage_reads_as_none() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("ready");
        assert_eq!(Ready::read(&path), None);
        let ready = Ready {
            pid: 4242,
            name: "s0".into(),
            address: "127.0.0.1:7000".into(),
            data_transport: "tcp".into(),
            data_endpoint: "127.0.0.1:7001".into(),
        };
        ready.write(&path).unwrap();
        assert_eq!(Ready::read(&path), Some(ready));
        assert!(!path.with_extension("tmp").exists());
        std::fs::write(&path, "{\"pid\": ").unwrap();
        assert_eq!(Ready::read(&path), None);
    }
}
