//! The hostfile: one SFS server per line, `name address[:port]`.
//!
//! The order of lines is the server numbering that the distributor hashes
//! onto, so every client and server of a job must read the same file.
//! Comments (`#` to end of line) and blank lines are allowed; duplicates,
//! malformed addresses and empty files are refused with the line number.
//!
//! The address forms accepted, the port being the RPC port ([`DEFAULT_PORT`]
//! when omitted):
//!
//! - `10.0.0.4`, `10.0.0.4:7700`: IPv4;
//! - `node-7.cluster`, `node-7.cluster:7700`: a host name (RFC 1123 labels);
//! - `[2001:db8::1]`, `[2001:db8::1]:7700`: IPv6 in brackets, with or
//!   without a port;
//! - `2001:db8::1`, `::1`: IPv6 without brackets, then without a port, and
//!   only where no port can be read into it. `::1:8390` is a valid IPv6
//!   address but also reads as `::1` port 8390; such text is refused, with
//!   the two bracketed spellings that say which was meant (`[::1]:8390` or
//!   `[::1:8390]`), rather than guessed.
//!
//! [`validate_ports`] checks the hostfile together with the config: the
//! data port of every server (RPC port + `data_port_offset`) must not be
//! another server's port on the same address.

use crate::config::Config;
use std::fmt;
use std::net::{IpAddr, Ipv6Addr};
use std::path::Path;

/// Port used when a hostfile line gives none.
pub const DEFAULT_PORT: u16 = 7700;

/// One server of the job.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct HostEntry {
    /// Position in the hostfile: the server's number for the distributor.
    pub index: usize,
    /// Unique name (also names its directories under `rootdir`).
    pub name: String,
    /// Host name or IP literal, as written.
    pub host: String,
    /// Control (gRPC) port.
    pub port: u16,
    /// Line of the hostfile the entry is on (from 1), for messages.
    pub line: usize,
}

impl HostEntry {
    /// The port a server's bulk-data listener binds: the RPC port plus
    /// `data_port_offset`, 0 (the system picks) when the offset is 0, `None`
    /// when the sum passes 65535. The one place this sum is made, so the
    /// server and [`validate_ports`] agree.
    pub fn data_port(&self, data_port_offset: u16) -> Option<u16> {
        match data_port_offset {
            0 => Some(0),
            offset => self.port.checked_add(offset),
        }
    }

    /// True when both entries name the same address as written: IP
    /// literals compared as addresses (`::1` is `0::1`), host names without
    /// regard to case. Names are not resolved (`localhost` is not
    /// `127.0.0.1`): parsing a hostfile must not wait on DNS.
    pub fn same_host(&self, other: &HostEntry) -> bool {
        match (self.host.parse::<IpAddr>(), other.host.parse::<IpAddr>()) {
            (Ok(a), Ok(b)) => a == b,
            _ => self.host.eq_ignore_ascii_case(&other.host),
        }
    }

    /// `host:port` with IPv6 literals bracketed, for URLs and messages.
    pub fn endpoint(&self) -> String {
        if self.host.contains(':') {
            format!("[{}]:{}", self.host, self.port)
        } else {
            format!("{}:{}", self.host, self.port)
        }
    }
}

/// A refused hostfile; the message names the file, the line and the fix.
#[derive(Debug, thiserror::Error, PartialEq, Eq)]
pub enum HostfileError {
    #[error("{file}: cannot read: {reason}")]
    Unreadable { file: String, reason: String },
    #[error("{file}:{line}: {problem}")]
    BadLine {
        file: String,
        line: usize,
        problem: String,
    },
    #[error("{file}: no servers listed (expected lines of `name address[:port]`)")]
    Empty { file: String },
}

/// The parsed hostfile: the servers of the job, in order.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Hostfile {
    pub hosts: Vec<HostEntry>,
    /// The file's path (or what named the text), for messages.
    pub origin: String,
    /// The file it was read from (`None` for parsed text): the job secret
    /// is looked for beside it (`crate::secret`).
    pub path: Option<std::path::PathBuf>,
}

impl fmt::Display for Hostfile {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        for h in &self.hosts {
            writeln!(f, "{} {}", h.name, h.endpoint())?;
        }
        Ok(())
    }
}

fn valid_hostname(h: &str) -> bool {
    !h.is_empty()
        && h.len() <= 253
        && h.split('.').all(|label| {
            !label.is_empty()
                && label.len() <= 63
                && !label.starts_with('-')
                && !label.ends_with('-')
                && label.chars().all(|c| c.is_ascii_alphanumeric() || c == '-')
        })
}

fn parse_address(text: &str) -> Result<(String, u16), String> {
    let bad_port = |p: &str| format!("bad port {p:?}: expected a number from 1 to 65535");
    let port_of = |p: &str| match p.parse::<u16>() {
        Ok(0) | Err(_) => Err(bad_port(p)),
        Ok(n) => Ok(n),
    };
    if let Some(rest) = text.strip_prefix('[') {
        let (ip, after) = rest
            .split_once(']')
            .ok_or_else(|| format!("bad address {text:?}: missing `]`"))?;
        ip.parse::<std::net::Ipv6Addr>()
            .map_err(|_| format!("bad IPv6 address {ip:?}"))?;
        let port = match after.strip_prefix(':') {
            Some(p) => port_of(p)?,
            None if after.is_empty() => DEFAULT_PORT,
            None => return Err(format!("bad address {text:?}")),
        };
        return Ok((ip.to_string(), port));
    }
    if let Ok(ip) = text.parse::<IpAddr>() {
        // Without brackets a trailing `:digits` may be the last group of the
        // address or a port: `::1:8390` is both ::1:8390 and ::1 port 8390.
        if let (IpAddr::V6(_), Some((head, tail))) = (ip, text.rsplit_once(':')) {
            let tail_is_port = !tail.is_empty() && tail.chars().all(|c| c.is_ascii_digit());
            if tail_is_port && head.parse::<Ipv6Addr>().is_ok() {
                return Err(format!(
                    "ambiguous address {text:?}: an IPv6 address with a port is written \
                     in brackets, `[{head}]:{tail}`; for the address {text} on the default \
                     port write `[{text}]`"
                ));
            }
        }
        // An IPv4 literal, or an IPv6 literal without a port.
        return Ok((text.to_string(), DEFAULT_PORT));
    }
    let (host, port) = match text.rsplit_once(':') {
        Some((h, p)) => (h, port_of(p)?),
        None => (text, DEFAULT_PORT),
    };
    let looks_numeric = host
        .split('.')
        .all(|l| l.chars().all(|c| c.is_ascii_digit()));
    if looks_numeric && host.parse::<std::net::Ipv4Addr>().is_err() {
        return Err(format!("bad IPv4 address {host:?}"));
    }
    if !valid_hostname(host) {
        return Err(format!("bad host name {host:?}"));
    }
    Ok((host.to_string(), port))
}

impl Hostfile {
    /// Reads and parses a hostfile.
    pub fn load(path: &Path) -> Result<Hostfile, HostfileError> {
        let text = std::fs::read_to_string(path).map_err(|e| HostfileError::Unreadable {
            file: path.display().to_string(),
            reason: e.to_string(),
        })?;
        let mut hostfile = Hostfile::parse(&text, &path.display().to_string())?;
        hostfile.path = Some(path.to_path_buf());
        Ok(hostfile)
    }

    /// Parses hostfile text; `origin` names it in messages.
    pub fn parse(text: &str, origin: &str) -> Result<Hostfile, HostfileError> {
        let mut hosts: Vec<HostEntry> = Vec::new();
        for (n, raw) in text.lines().enumerate() {
            let line_no = n + 1;
            let bad = |problem: String| HostfileError::BadLine {
                file: origin.to_string(),
                line: line_no,
                problem,
            };
            let line = raw.split('#').next().unwrap_or("").trim();
            if line.is_empty() {
                continue;
            }
            let fields: Vec<&str> = line.split_whitespace().collect();
            if fields.len() != 2 {
                return Err(bad(format!(
                    "expected `name address[:port]`, got {} field(s): {line:?}",
                    fields.len()
                )));
            }
            let name = fields[0];
            if !name
                .chars()
                .all(|c| c.is_ascii_alphanumeric() || "-_.".contains(c))
                || name.starts_with('.')
            {
                return Err(bad(format!(
                    "bad server name {name:?}: use letters, digits, `-`, `_` and `.`"
                )));
            }
            let (host, port) = parse_address(fields[1]).map_err(bad)?;
            if let Some(prev) = hosts.iter().find(|h| h.name == name) {
                return Err(bad(format!(
                    "duplicate server name {name:?} (first on the line of server #{})",
                    prev.index
                )));
            }
            let entry = HostEntry {
                index: hosts.len(),
                name: name.to_string(),
                host,
                port,
                line: line_no,
            };
            if let Some(prev) = hosts.iter().find(|h| h.same_host(&entry) && h.port == port) {
                return Err(bad(format!(
                    "duplicate address {} (already used by server {:?})",
                    fields[1], prev.name
                )));
            }
            hosts.push(entry);
        }
        if hosts.is_empty() {
            return Err(HostfileError::Empty {
                file: origin.to_string(),
            });
        }
        Ok(Hostfile {
            hosts,
            origin: origin.to_string(),
            path: None,
        })
    }

    /// A digest of the servers in order (name, host and port of each line):
    /// two processes place paths and chunks alike only if their digests
    /// agree. Servers report it in `Hello` and clients compare.
    pub fn digest(&self) -> u64 {
        xxhash_rust::xxh3::xxh3_64(self.to_string().as_bytes())
    }

    pub fn len(&self) -> usize {
        self.hosts.len()
    }

    pub fn is_empty(&self) -> bool {
        self.hosts.is_empty()
    }

    pub fn by_name(&self, name: &str) -> Option<&HostEntry> {
        self.hosts.iter().find(|h| h.name == name)
    }
}

/// Everything about a hostfile that depends on the config:
/// [`validate_ports`], and that no server's own directory
/// (`rootdir/NAME`) holds the `dir` back end or lies inside it (with the
/// default `backend.path`, a server named `backend` would share
/// `rootdir/backend` with every server's flushed objects). The networked
/// back ends (`rados`, `s3`) have no directory to overlap.
pub fn validate_with_config(config: &Config, hostfile: &Hostfile) -> Result<(), HostfileError> {
    validate_ports(config, hostfile)?;
    if config.backend.kind != crate::config::BackendKind::Dir {
        return Ok(());
    }
    let backend = config.backend_dir();
    for entry in &hostfile.hosts {
        let own = config.run_dir(&entry.name);
        if backend.starts_with(&own) || own.starts_with(&backend) {
            return Err(HostfileError::BadLine {
                file: hostfile.origin.clone(),
                line: entry.line,
                problem: format!(
                    "server {}'s directory {} overlaps the back end's directory {} \
                     (config field `backend.path`): rename the server or set `backend.path`",
                    entry.name,
                    own.display(),
                    backend.display()
                ),
            });
        }
    }
    Ok(())
}

/// Refuses a hostfile whose servers could not all bind their ports under
/// `config`: a data port (RPC port + `data_port_offset`) or metrics port
/// (RPC port + `metrics_port_offset`) past 65535, or equal to another
/// port of a server on the same address (its RPC, data or metrics port).
/// Otherwise whichever of the two servers starts second fails its bind, so
/// the job breaks in a way that depends on start order. With
/// `data_port_offset` 0 the system picks data ports, and with
/// `metrics_port_offset` 0 no metrics port exists, so only RPC ports remain
/// (checked by [`Hostfile::parse`]).
///
/// Addresses are compared as written ([`HostEntry::same_host`]); servers
/// that share a machine under different addresses, or that bind
/// `config.listen` instead, are found out at bind time.
pub fn validate_ports(config: &Config, hostfile: &Hostfile) -> Result<(), HostfileError> {
    let derived = [
        ("data", "data_port_offset", config.data_port_offset),
        ("metrics", "metrics_port_offset", config.metrics_port_offset),
    ];
    let file = &hostfile.origin;
    let bad = |entry: &HostEntry, problem: String| HostfileError::BadLine {
        file: file.clone(),
        line: entry.line,
        problem,
    };
    // The fixed ports of a server other than its RPC port, by kind.
    let ports_of = |entry: &HostEntry| {
        derived
            .iter()
            .filter(|(_, _, offset)| *offset != 0)
            .filter_map(|(kind, _, offset)| Some((*kind, entry.port.checked_add(*offset)?)))
            .collect::<Vec<_>>()
    };
    for entry in &hostfile.hosts {
        for (kind, field, offset) in derived.iter().filter(|(_, _, offset)| *offset != 0) {
            let port = entry.port.checked_add(*offset).ok_or_else(|| {
                bad(
                    entry,
                    format!(
                        "{}'s {kind} port, port {} + `{field}` {offset}, is past 65535; \
                         give the server a lower port or lower `{field}`",
                        entry.name, entry.port
                    ),
                )
            })?;
            for other in hostfile.hosts.iter().filter(|o| o.same_host(entry)) {
                let clash = if other.port == port {
                    "RPC"
                } else if let Some((other_kind, _)) =
                    ports_of(other)
                        .into_iter()
                        .find(|(other_kind, other_port)| {
                            *other_port == port
                                && (other.index != entry.index || other_kind != kind)
                        })
                {
                    other_kind
                } else {
                    continue;
                };
                let advice = if *kind == "data" {
                    ", or set it to 0 to let the system pick data ports"
                } else {
                    ""
                };
                return Err(bad(
                    entry,
                    format!(
                        "{}'s {kind} port {port} is {}'s {clash} port ({file}:{}); the {kind} port \
                         is the port + `{field}` {offset}: space the servers' ports \
                         further apart or change `{field}`{advice}",
                        entry.name, other.name, other.line
                    ),
                ));
            }
        }
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn parses_names_addresses_ports_and_comments() {
        let h = Hostfile::parse(
            "# servers\n\ns0 127.0.0.1:7001\ns1 127.0.0.2  # second\ns2 [::1]:9\ns3 node-7.cluster:80\ns4 ::1\n",
            "h",
        )
        .unwrap();
        assert_eq!(h.len(), 5);
        assert_eq!(h.hosts[0].endpoint(), "127.0.0.1:7001");
        assert_eq!(h.hosts[1].port, DEFAULT_PORT);
        assert_eq!(h.hosts[2].endpoint(), "[::1]:9");
        assert_eq!(h.hosts[3].host, "node-7.cluster");
        assert_eq!(h.hosts[4].endpoint(), "[::1]:7700");
        assert_eq!(h.hosts[2].index, 2);
        assert_eq!(h.hosts[0].line, 3);
        assert_eq!(h.hosts[4].line, 7);
        assert_eq!(h.origin, "h");
    }

    #[test]
    fn bare_ipv6_with_a_port_like_tail_is_refused() {
        for (text, line, address, fixes) in [
            (
                "s0 ::1:8390\n",
                1,
                "::1:8390",
                ["`[::1]:8390`", "`[::1:8390]`"],
            ),
            (
                "a 127.0.0.1\n# b\nb fe80::1:2\n",
                3,
                "fe80::1:2",
                ["`[fe80::1]:2`", "`[fe80::1:2]`"],
            ),
            (
                "a 2001:db8::7:7700\n",
                1,
                "2001:db8::7:7700",
                ["`[2001:db8::7]:7700`", "`[2001:db8::7:7700]`"],
            ),
        ] {
            let e = Hostfile::parse(text, "/etc/sfs/hosts").unwrap_err();
            let message = e.to_string();
            assert!(
                message.starts_with(&format!(
                    "/etc/sfs/hosts:{line}: ambiguous address {address:?}"
                )),
                "{text:?}: {message}"
            );
            for fix in fixes {
                assert!(message.contains(fix), "{text:?}: {message}");
            }
        }
    }

    #[test]
    fn unambiguous_ipv6_forms_are_read_as_written() {
        let h = Hostfile::parse(
            "a ::1\nb [::1:8390]\nc [::1]:8390\nd fe80::abcd\ne 2001:db8::\nf ::ffff:1.2.3.4\n",
            "h",
        )
        .unwrap();
        let read: Vec<(&str, u16)> = h.hosts.iter().map(|e| (e.host.as_str(), e.port)).collect();
        assert_eq!(
            read,
            [
                ("::1", DEFAULT_PORT),
                ("::1:8390", DEFAULT_PORT),
                ("::1", 8390),
                ("fe80::abcd", DEFAULT_PORT),
                ("2001:db8::", DEFAULT_PORT),
                ("::ffff:1.2.3.4", DEFAULT_PORT),
            ]
        );
    }

    #[test]
    fn equal_ipv6_spellings_are_one_address() {
        let e = Hostfile::parse("a [::1]:7000\nb [0:0::1]:7000\n", "h").unwrap_err();
        assert!(e.to_string().starts_with("h:2: duplicate address"), "{e}");
        let e = Hostfile::parse("a Node1:7000\nb node1:7000\n", "h").unwrap_err();
        assert!(e.to_string().starts_with("h:2: duplicate address"), "{e}");
    }

    fn offset(data_port_offset: u16) -> Config {
        Config {
            data_port_offset,
            ..Config::default()
        }
    }

    #[test]
    fn data_port_on_another_servers_port_is_refused() {
        let h = Hostfile::parse(
            "s0 127.0.0.2:7701\ns1 127.0.0.1:7701\ns2 127.0.0.1:7700\n",
            "hostfile",
        )
        .unwrap();
        let message = validate_ports(&offset(1), &h).unwrap_err().to_string();
        assert!(
            message.starts_with("hostfile:3: s2's data port 7701 is s1's RPC port (hostfile:2);"),
            "{message}"
        );
        assert!(message.contains("`data_port_offset` 1"), "{message}");
        // The system picks data ports: nothing to clash.
        validate_ports(&offset(0), &h).unwrap();
        // Data ports 7703 and 7702 are free.
        validate_ports(&offset(2), &h).unwrap();
        // The earlier line's data port on the later line's port.
        let h = Hostfile::parse("a [::1]:7000\nb [0::1]:7010\n", "/h").unwrap();
        let message = validate_ports(&offset(10), &h).unwrap_err().to_string();
        assert!(
            message.starts_with("/h:1: a's data port 7010 is b's RPC port (/h:2);"),
            "{message}"
        );
    }

    #[test]
    fn data_port_clashing_with_a_data_port_is_refused() {
        // Only a hostfile built in memory can repeat a port on an address.
        let entry = |index: usize, name: &str| HostEntry {
            index,
            name: name.into(),
            host: "127.0.0.1".into(),
            port: 7000,
            line: index + 1,
        };
        let h = Hostfile {
            hosts: vec![entry(0, "a"), entry(1, "b")],
            origin: "mem".into(),
            path: None,
        };
        let message = validate_ports(&offset(1), &h).unwrap_err().to_string();
        assert!(
            message.starts_with("mem:1: a's data port 7001 is b's data port (mem:2);"),
            "{message}"
        );
    }

    #[test]
    fn data_port_past_65535_is_refused() {
        let h = Hostfile::parse("a 127.0.0.1:7000\nb 127.0.0.1:65535\n", "hf").unwrap();
        let message = validate_ports(&offset(1), &h).unwrap_err().to_string();
        assert!(
            message.starts_with(
                "hf:2: b's data port, port 65535 + `data_port_offset` 1, is past 65535;"
            ),
            "{message}"
        );
        assert_eq!(h.hosts[1].data_port(0), Some(0));
        assert_eq!(h.hosts[0].data_port(3), Some(7003));
    }

    #[test]
    fn a_server_directory_on_the_back_end_is_refused() {
        let h = Hostfile::parse("s0 127.0.0.1:7000\nbackend 127.0.0.1:7010\n", "hosts").unwrap();
        let config = Config::default();
        let message = validate_with_config(&config, &h).unwrap_err().to_string();
        assert!(
            message.starts_with("hosts:2: server backend's directory"),
            "{message}"
        );
        assert!(message.contains("`backend.path`"), "{message}");
        let elsewhere = Config {
            backend: crate::config::BackendConfig {
                path: "/srv/objects".into(),
                ..Default::default()
            },
            ..Config::default()
        };
        validate_with_config(&elsewhere, &h).unwrap();
        let inside = Config {
            backend: crate::config::BackendConfig {
                path: format!("{}/s0/objects", Config::default().rootdir),
                ..Default::default()
            },
            ..Config::default()
        };
        let message = validate_with_config(&inside, &h).unwrap_err().to_string();
        assert!(message.starts_with("hosts:1: server s0's"), "{message}");
        let networked = Config {
            backend: crate::config::BackendConfig {
                kind: crate::config::BackendKind::Rados,
                rados_pool: "sfs".into(),
                ..Default::default()
            },
            ..Config::default()
        };
        validate_with_config(&networked, &h).expect("no directory to overlap");
    }

    proptest::proptest! {
        /// Accepted exactly when every RPC, data and metrics endpoint is
        /// distinct and every derived port fits in 16 bits.
        #[test]
        fn validate_ports_accepts_exactly_distinct_endpoints(
            servers in proptest::collection::btree_set(
                (0u8..2, proptest::prop_oneof![7000u16..7008, 65528u16..=65535]),
                1..6,
            ),
            data_port_offset in 0u16..10,
            metrics_port_offset in 0u16..10,
        ) {
            let text: String = servers
                .iter()
                .enumerate()
                .map(|(i, (host, port))| format!("s{i} 127.0.0.{}:{port}\n", host + 1))
                .collect();
            let h = Hostfile::parse(&text, "h").unwrap();
            let mut endpoints = std::collections::BTreeSet::new();
            let mut fits = true;
            for (host, port) in &servers {
                endpoints.insert((*host, u32::from(*port)));
            }
            let mut distinct = true;
            for offset in [data_port_offset, metrics_port_offset] {
                if offset != 0 {
                    for (host, port) in &servers {
                        let derived = u32::from(*port) + u32::from(offset);
                        fits &= derived <= 65535;
                        distinct &= endpoints.insert((*host, derived));
                    }
                }
            }
            let config = Config {
                metrics_port_offset,
                ..offset(data_port_offset)
            };
            let result = validate_ports(&config, &h);
            proptest::prop_assert_eq!(result.is_ok(), fits && distinct, "{:?}", result);
        }
    }

    #[test]
    fn metrics_port_on_another_port_is_refused() {
        let h = Hostfile::parse(
            "s0 127.0.0.1:7000
s1 127.0.0.1:7010
",
            "hf",
        )
        .unwrap();
        let config = |metrics_port_offset| Config {
            metrics_port_offset,
            ..offset(1)
        };
        let message = validate_ports(&config(10), &h).unwrap_err().to_string();
        assert!(
            message.starts_with("hf:1: s0's metrics port 7010 is s1's RPC port (hf:2);"),
            "{message}"
        );
        assert!(message.contains("`metrics_port_offset` 10"), "{message}");
        let message = validate_ports(&config(11), &h).unwrap_err().to_string();
        assert!(
            message.starts_with("hf:1: s0's metrics port 7011 is s1's data port (hf:2);"),
            "{message}"
        );
        validate_ports(&config(2), &h).unwrap();
        let h = Hostfile::parse(
            "a 127.0.0.1:65534
",
            "hf",
        )
        .unwrap();
        let message = validate_ports(&config(2), &h).unwrap_err().to_string();
        assert!(
            message.starts_with(
                "hf:1: a's metrics port, port 65534 + `metrics_port_offset` 2, is past 65535;"
            ),
            "{message}"
        );
    }

    #[test]
    fn refuses_with_line_numbers() {
        let cases = [
            ("a 1.2.3.4\na 1.2.3.5\n", 2, "duplicate server name"),
            ("a 1.2.3.4:5\nb 1.2.3.4:5\n", 2, "duplicate address"),
            ("\n\na 1.2.3.400\n", 3, "bad IPv4"),
            ("a 1.2.3.4:0\n", 1, "bad port"),
            ("a 1.2.3.4:99999\n", 1, "bad port"),
            ("a bad_host!\n", 1, "bad host name"),
            ("a\n", 1, "expected"),
            ("a b c\n", 1, "expected"),
            ("a/b 1.2.3.4\n", 1, "bad server name"),
            ("a [::1\n", 1, "missing"),
        ];
        for (text, line, what) in cases {
            match Hostfile::parse(text, "hf") {
                Err(HostfileError::BadLine {
                    line: l, problem, ..
                }) => {
                    assert_eq!(l, line, "{text:?}");
                    assert!(problem.contains(what), "{text:?}: {problem}");
                }
                other => panic!("{text:?}: {other:?}"),
            }
        }
    }

    #[test]
    fn refuses_empty_and_missing() {
        assert!(matches!(
            Hostfile::parse("# nothing\n\n", "hf"),
            Err(HostfileError::Empty { .. })
        ));
        let e = Hostfile::load(Path::new("/nonexistent/hostfile")).unwrap_err();
        assert!(e
            .to_string()
            .starts_with("/nonexistent/hostfile: cannot read"));
    }
}
