//! The one typed configuration of SFS, read from `config.json`.
//!
//! Every option has a default (so an empty `{}` is a valid config), unknown
//! fields are refused (a typo must not silently fall back to a default), and
//! [`Config::validate`] checks values and names the field and the fix when it
//! refuses one. `config.example.json` at the repository root is
//! `Config::default()` written out, and a test keeps the two equal.

use serde::{Deserialize, Serialize};
use std::path::{Path, PathBuf};

/// Which bulk-data transport the client and server use.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum TransportKind {
    /// RDMA when a device serves the server's address, TCP otherwise.
    Auto,
    /// TCP only.
    Tcp,
    /// RDMA only; refuse to start without a device.
    Rdma,
}

/// A refused configuration: the message names the field and the fix.
#[derive(Debug, thiserror::Error, PartialEq, Eq)]
pub enum ConfigError {
    #[error("{file}: cannot read: {reason}")]
    Unreadable { file: String, reason: String },
    #[error("{file}: {reason}")]
    Malformed { file: String, reason: String },
    #[error("config.json: field `{field}` {problem}")]
    BadValue {
        field: &'static str,
        problem: String,
    },
}

/// Settings of a whole SFS instance; servers and clients read the same file.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
#[serde(default, deny_unknown_fields)]
pub struct Config {
    /// Directory under which the shim redirects paths to SFS (clients only).
    pub mountdir: String,
    /// Root of a server's local state; each server uses `rootdir/<server name>/`
    /// for its chunk store, so several servers may share one config on one host.
    pub rootdir: String,
    /// Where a server keeps its RocksDB metadata (`metadir/<server name>/`);
    /// empty means `rootdir/<server name>/meta`.
    pub metadir: String,
    /// Hostfile to use when neither `--hostfile` nor `SFS_HOSTFILE` is given;
    /// a relative path is taken relative to the config file's directory.
    pub hosts_file: String,
    /// Address a server binds instead of its hostfile address (e.g. `0.0.0.0`);
    /// empty means exactly the hostfile address.
    pub listen: String,
    /// Size of a data chunk in bytes: a power of two from 4 KiB to 64 MiB.
    pub chunk_size: u64,
    /// Bytes a server's chunk store may hold; 0 means "what the device holds".
    pub chunk_store_capacity: u64,
    /// Bulk-data transport: "auto", "tcp" or "rdma".
    pub transport: TransportKind,
    /// The data port is the server's hostfile port plus this offset; 0 lets the
    /// system pick one (clients learn it from the server's handshake).
    pub data_port_offset: u16,
    /// TCP data connections a client keeps to each server (many requests are in
    /// flight on each).
    pub tcp_connections_per_server: u32,
    /// Time a client waits to connect to a server before EIO/ETIMEDOUT.
    pub connect_timeout_ms: u64,
    /// Time a client waits for any single request before ETIMEDOUT.
    pub request_timeout_ms: u64,
    /// Directory entries per message of a streamed directory listing.
    pub readdir_page_size: u32,
    /// Log filter of the servers (tracing `EnvFilter` syntax); `SFS_LOG` wins.
    pub log_level: String,
}

impl Default for Config {
    fn default() -> Self {
        Config {
            mountdir: "/tmp/sfs".into(),
            rootdir: "/tmp/sfs-root".into(),
            metadir: String::new(),
            hosts_file: "hostfile".into(),
            listen: String::new(),
            chunk_size: 512 * 1024,
            chunk_store_capacity: 0,
            transport: TransportKind::Auto,
            data_port_offset: 1,
            tcp_connections_per_server: 2,
            connect_timeout_ms: 3000,
            request_timeout_ms: 8000,
            readdir_page_size: 1024,
            log_level: "info".into(),
        }
    }
}

impl Config {
    /// Reads, parses and validates a config file.
    pub fn load(file: &Path) -> Result<Config, ConfigError> {
        let text = std::fs::read_to_string(file).map_err(|e| ConfigError::Unreadable {
            file: file.display().to_string(),
            reason: e.to_string(),
        })?;
        let mut config = Config::parse(&text, &file.display().to_string())?;
        // A relative hostfile is found next to the config, not in the cwd.
        let hosts = Path::new(&config.hosts_file);
        if hosts.is_relative() {
            if let Some(dir) = file.parent().filter(|d| !d.as_os_str().is_empty()) {
                config.hosts_file = dir.join(hosts).display().to_string();
            }
        }
        Ok(config)
    }

    /// Parses and validates config text; `origin` names it in messages.
    pub fn parse(text: &str, origin: &str) -> Result<Config, ConfigError> {
        let de = &mut serde_json::Deserializer::from_str(text);
        let config: Config =
            serde_path_to_error::deserialize(de).map_err(|e| ConfigError::Malformed {
                file: origin.to_string(),
                reason: if e.path().to_string() == "." {
                    e.inner().to_string()
                } else {
                    format!("field `{}`: {}", e.path(), e.inner())
                },
            })?;
        config.validate()?;
        Ok(config)
    }

    /// Checks every value; the first bad one is reported with its fix.
    pub fn validate(&self) -> Result<(), ConfigError> {
        let bad =
            |field: &'static str, problem: String| Err(ConfigError::BadValue { field, problem });
        if !self.chunk_size.is_power_of_two() || !(4096..=64 << 20).contains(&self.chunk_size) {
            return bad(
                "chunk_size",
                format!(
                    "must be a power of two between 4096 and 67108864, got {}",
                    self.chunk_size
                ),
            );
        }
        if !self.mountdir.starts_with('/') || self.mountdir.len() < 2 {
            return bad(
                "mountdir",
                format!(
                    "must be an absolute path other than `/`, got {:?}",
                    self.mountdir
                ),
            );
        }
        if self.rootdir.is_empty() {
            return bad(
                "rootdir",
                "must name a directory, got an empty string".into(),
            );
        }
        if self.hosts_file.is_empty() {
            return bad(
                "hosts_file",
                "must name a hostfile, got an empty string".into(),
            );
        }
        if !self.listen.is_empty() && self.listen.parse::<std::net::IpAddr>().is_err() {
            return bad(
                "listen",
                format!(
                    "must be an IP address such as 0.0.0.0 or empty, got {:?}",
                    self.listen
                ),
            );
        }
        if !(1..=64).contains(&self.tcp_connections_per_server) {
            return bad(
                "tcp_connections_per_server",
                format!(
                    "must be from 1 to 64, got {}",
                    self.tcp_connections_per_server
                ),
            );
        }
        if !(1..=600_000).contains(&self.connect_timeout_ms) {
            return bad(
                "connect_timeout_ms",
                format!("must be from 1 to 600000, got {}", self.connect_timeout_ms),
            );
        }
        if !(1..=3_600_000).contains(&self.request_timeout_ms) {
            return bad(
                "request_timeout_ms",
                format!("must be from 1 to 3600000, got {}", self.request_timeout_ms),
            );
        }
        if !(1..=100_000).contains(&self.readdir_page_size) {
            return bad(
                "readdir_page_size",
                format!("must be from 1 to 100000, got {}", self.readdir_page_size),
            );
        }
        Ok(())
    }

    /// Directory of one server's chunk store.
    pub fn chunk_dir(&self, server_name: &str) -> PathBuf {
        Path::new(&self.rootdir).join(server_name).join("chunks")
    }

    /// Directory of one server's RocksDB metadata.
    pub fn meta_dir(&self, server_name: &str) -> PathBuf {
        if self.metadir.is_empty() {
            Path::new(&self.rootdir).join(server_name).join("meta")
        } else {
            Path::new(&self.metadir).join(server_name)
        }
    }

    /// Directory holding one server's lock, ready and pid files.
    pub fn run_dir(&self, server_name: &str) -> PathBuf {
        Path::new(&self.rootdir).join(server_name)
    }

    /// The config as pretty JSON (what `config.example.json` holds).
    pub fn to_json_pretty(&self) -> String {
        let mut s = serde_json::to_string_pretty(self).expect("config serialises");
        s.push('\n');
        s
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn empty_object_is_all_defaults() {
        assert_eq!(Config::parse("{}", "t").unwrap(), Config::default());
    }

    #[test]
    fn example_file_matches_the_struct() {
        let path = Path::new(env!("CARGO_MANIFEST_DIR")).join("../config.example.json");
        let text = std::fs::read_to_string(&path).expect("config.example.json exists");
        assert_eq!(
            text,
            Config::default().to_json_pretty(),
            "config.example.json is out of date: regenerate it with `sfs config-example > config.example.json`"
        );
    }

    #[test]
    fn unknown_field_is_named() {
        let e = Config::parse(r#"{"chunk_sise": 4096}"#, "c.json").unwrap_err();
        assert!(e.to_string().contains("chunk_sise"), "{e}");
    }

    #[test]
    fn wrong_type_names_the_field() {
        let e = Config::parse(r#"{"chunk_size": "big"}"#, "c.json").unwrap_err();
        assert!(e.to_string().contains("field `chunk_size`"), "{e}");
    }

    #[test]
    fn bad_values_name_field_and_fix() {
        let e = Config::parse(r#"{"chunk_size": 1000}"#, "c").unwrap_err();
        assert_eq!(
            e.to_string(),
            "config.json: field `chunk_size` must be a power of two between 4096 and 67108864, got 1000"
        );
        for (json, field) in [
            (r#"{"mountdir": "rel"}"#, "mountdir"),
            (r#"{"transport": "udp"}"#, "transport"),
            (r#"{"listen": "nowhere"}"#, "listen"),
            (
                r#"{"tcp_connections_per_server": 0}"#,
                "tcp_connections_per_server",
            ),
            (r#"{"request_timeout_ms": 0}"#, "request_timeout_ms"),
            (r#"{"readdir_page_size": 0}"#, "readdir_page_size"),
        ] {
            let e = Config::parse(json, "c").unwrap_err().to_string();
            assert!(e.contains(field), "{json}: {e}");
        }
    }

    #[test]
    fn relative_hostfile_is_next_to_config() {
        let dir = tempfile::tempdir().unwrap();
        let file = dir.path().join("config.json");
        std::fs::write(&file, r#"{"hosts_file": "hosts"}"#).unwrap();
        let c = Config::load(&file).unwrap();
        assert_eq!(Path::new(&c.hosts_file), dir.path().join("hosts"));
        assert!(matches!(
            Config::load(&dir.path().join("missing.json")),
            Err(ConfigError::Unreadable { .. })
        ));
    }

    #[test]
    fn per_server_directories_differ() {
        let c = Config::default();
        assert_ne!(c.chunk_dir("a"), c.chunk_dir("b"));
        assert_eq!(c.meta_dir("a"), Path::new("/tmp/sfs-root/a/meta"));
    }
}
