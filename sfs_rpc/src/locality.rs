//! Where the servers of a hostfile are, as seen from this machine: what a
//! host name resolves to, whether an address is this machine's, which
//! entries name one server twice. These ask the resolver and the kernel
//! (a lookup, a bind), so they live here, with the networking, and not in
//! `sfs_global`, which only parses; callers ask when they need the answer
//! (a client only once one of its calls waits on a server).

use sfs_global::hostfile::{HostEntry, Hostfile};
use std::net::{SocketAddr, ToSocketAddrs};

/// Resolves `entry` to a socket address (the first result).
pub fn socket_addr(entry: &HostEntry) -> std::io::Result<SocketAddr> {
    (entry.host.as_str(), entry.port)
        .to_socket_addrs()?
        .next()
        .ok_or_else(|| std::io::Error::other(format!("{}: no address", entry.host)))
}

/// Whether `entry`'s address belongs to this machine (it can be bound).
pub fn is_local(entry: &HostEntry) -> bool {
    match socket_addr(entry) {
        Ok(addr) => std::net::UdpSocket::bind(SocketAddr::new(addr.ip(), 0)).is_ok(),
        Err(_) => false,
    }
}

/// The entries of `hostfile` whose address is on this machine.
pub fn local_entries(hostfile: &Hostfile) -> Vec<&HostEntry> {
    hostfile.hosts.iter().filter(|h| is_local(h)).collect()
}

/// Entries that resolve to the same address and port although written
/// differently (`127.0.0.1:P` and `localhost:P`): one server would be
/// counted twice, and half of the placement would go to a server that
/// does not exist. Resolves every host name (so not part of parsing); an
/// entry that does not resolve from here is left out. Each finding names
/// both lines.
pub fn duplicate_addresses(hostfile: &Hostfile) -> Vec<String> {
    let resolved: Vec<(&HostEntry, Vec<SocketAddr>)> = hostfile
        .hosts
        .iter()
        .filter_map(|h| {
            let addrs: Vec<SocketAddr> =
                (h.host.as_str(), h.port).to_socket_addrs().ok()?.collect();
            Some((h, addrs))
        })
        .collect();
    let mut found = Vec::new();
    for (i, (a, a_addrs)) in resolved.iter().enumerate() {
        for (b, b_addrs) in &resolved[i + 1..] {
            if let Some(addr) = a_addrs.iter().find(|x| b_addrs.contains(x)) {
                found.push(format!(
                    "{}:{}: {} {} and line {}: {} {} are one address ({addr})",
                    hostfile.origin,
                    a.line,
                    a.name,
                    a.endpoint(),
                    b.line,
                    b.name,
                    b.endpoint()
                ));
            }
        }
    }
    found
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn one_server_written_two_ways_is_found() {
        let h = Hostfile::parse(
            "a 127.0.0.1:7001\nb localhost:7001\nc 127.0.0.1:7002\n",
            "hosts",
        )
        .unwrap();
        let found = duplicate_addresses(&h);
        assert_eq!(found.len(), 1, "{found:?}");
        assert!(
            found[0].starts_with("hosts:1: a 127.0.0.1:7001 and line 2: b localhost:7001"),
            "{found:?}"
        );
        let distinct = Hostfile::parse("a 127.0.0.1:7001\nb 127.0.0.2:7001\n", "h").unwrap();
        assert!(duplicate_addresses(&distinct).is_empty());
    }

    #[test]
    fn loopback_is_local() {
        let h = Hostfile::parse("a 127.0.0.1:7000\nb 192.0.2.1:7000\n", "h").unwrap();
        assert!(is_local(&h.hosts[0]));
        assert!(!is_local(&h.hosts[1]));
        assert_eq!(local_entries(&h).len(), 1);
        assert_eq!(
            socket_addr(&h.hosts[0]).unwrap(),
            "127.0.0.1:7000".parse().unwrap()
        );
    }
}
