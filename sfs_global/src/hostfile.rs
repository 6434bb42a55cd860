//! The hostfile: one SFS server per line, `name address[:port]`.
//!
//! The order of lines is the server numbering that the distributor hashes
//! onto, so every client and server of a job must read the same file.
//! Comments (`#` to end of line) and blank lines are allowed; duplicates,
//! malformed addresses and empty files are refused with the line number.

use std::fmt;
use std::net::{IpAddr, SocketAddr, ToSocketAddrs};
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
}

impl HostEntry {
    /// Resolves the entry to a socket address (first result).
    pub fn socket_addr(&self) -> std::io::Result<SocketAddr> {
        (self.host.as_str(), self.port)
            .to_socket_addrs()?
            .next()
            .ok_or_else(|| std::io::Error::other(format!("{}: no address", self.host)))
    }

    /// True when the entry's address belongs to this machine (it can be bound).
    pub fn is_local(&self) -> bool {
        match self.socket_addr() {
            Ok(addr) => std::net::UdpSocket::bind(SocketAddr::new(addr.ip(), 0)).is_ok(),
            Err(_) => false,
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
    if text.parse::<IpAddr>().is_ok() {
        // A bare IPv6 literal (no port possible) or an IPv4 literal.
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
        Hostfile::parse(&text, &path.display().to_string())
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
            if let Some(prev) = hosts.iter().find(|h| h.host == host && h.port == port) {
                return Err(bad(format!(
                    "duplicate address {} (already used by server {:?})",
                    fields[1], prev.name
                )));
            }
            hosts.push(HostEntry {
                index: hosts.len(),
                name: name.to_string(),
                host,
                port,
            });
        }
        if hosts.is_empty() {
            return Err(HostfileError::Empty {
                file: origin.to_string(),
            });
        }
        Ok(Hostfile { hosts })
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

    /// Entries whose address is on this machine.
    pub fn local_entries(&self) -> Vec<&HostEntry> {
        self.hosts.iter().filter(|h| h.is_local()).collect()
    }
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

    #[test]
    fn loopback_is_local() {
        let h = Hostfile::parse("a 127.0.0.1:7000\nb 192.0.2.1:7000\n", "h").unwrap();
        assert!(h.hosts[0].is_local());
        assert!(!h.hosts[1].is_local());
        assert_eq!(h.local_entries().len(), 1);
    }
}
