//! `sfs hostfile`: writes the hostfile of a job from what the batch system
//! says about its nodes, so a job script need not write one by hand.
//!
//! - `--slurm`: the nodes of `SLURM_JOB_NODELIST`, expanded by `scontrol
//!   show hostnames` (or, where `scontrol` is not installed, by
//!   [`expand_nodelist`], which reads the same compressed syntax:
//!   `n[01-03,7],gpu4`).
//! - `--from FILE`: one host a line, as MPI machine files and
//!   `PBS_NODEFILE` list them; a host listed several times gets that many
//!   servers.
//!
//! A server listens on its node's name, or on the address `--address`
//! makes of it (`{node}-ib`, `10.1.0.{number}`: the node's name and its
//! place in the list from 1), and is named after the node either way, so
//! that the srun launcher knows which node runs it.
//!
//! Each node gets `--servers-per-node` servers (times its count in a
//! `--from` file). A node's first server listens on `--port`; the next
//! ones step past the data ports (`port + data_port_offset`) so that no
//! two ports meet. A server is named after its node (`n01`), with `-I`
//! appended when the node has several (`n01-0`, `n01-1`). The text is
//! parsed and checked against the config as every hostfile is before it is
//! written, so what `sfs hostfile` writes `sfs start` accepts.

use anyhow::{anyhow, bail, Context, Result};
use sfs_global::config::Config;
use sfs_global::hostfile::Hostfile;
use std::path::Path;
use std::process::Command;

/// Where the node list comes from.
pub enum Source<'a> {
    Slurm,
    File(&'a Path),
}

/// The variables of a Slurm job that hold its node list, in order.
const NODELIST_VARS: [&str; 2] = ["SLURM_JOB_NODELIST", "SLURM_NODELIST"];

/// `sfs hostfile`: the text on standard output, or into `output`
/// (written whole under a temporary name, then renamed).
pub fn run(
    config: &Config,
    source: &Source<'_>,
    address: &str,
    port: u16,
    servers_per_node: u32,
    output: Option<&Path>,
) -> Result<()> {
    if servers_per_node == 0 {
        bail!("--servers-per-node must be at least 1");
    }
    let nodes = match source {
        Source::Slurm => slurm_nodes()?,
        Source::File(path) => {
            let text = std::fs::read_to_string(path)
                .with_context(|| format!("cannot read the host list {}", path.display()))?;
            count_hosts(&text, &path.display().to_string()).map_err(|e| anyhow!(e))?
        }
    };
    let nodes: Vec<(String, u32)> = nodes
        .into_iter()
        .map(|(host, count)| (host, count.saturating_mul(servers_per_node)))
        .collect();
    let text =
        hostfile_text(&nodes, address, port, config.data_port_offset).map_err(|e| anyhow!(e))?;
    let origin = "the generated hostfile";
    let hostfile = Hostfile::parse(&text, origin)?;
    sfs_global::hostfile::validate_with_config(config, &hostfile)?;
    match output {
        None => outln!("{}", text.trim_end())?,
        Some(path) => {
            let mut staged = path.as_os_str().to_owned();
            staged.push(format!(".{}.new", std::process::id()));
            std::fs::write(&staged, &text)
                .with_context(|| format!("cannot write {}", Path::new(&staged).display()))?;
            std::fs::rename(&staged, path)
                .with_context(|| format!("cannot write {}", path.display()))?;
        }
    }
    Ok(())
}

/// The nodes of this Slurm job, each once.
pub fn slurm_nodes() -> Result<Vec<(String, u32)>> {
    let (var, list) = NODELIST_VARS
        .iter()
        .find_map(|var| {
            std::env::var(var)
                .ok()
                .filter(|v| !v.is_empty())
                .map(|v| (*var, v))
        })
        .ok_or_else(|| {
            anyhow!(
                "--slurm: not inside a Slurm allocation ({} not set); \
                 run it in a job script, or use --from FILE",
                NODELIST_VARS.join(" and ")
            )
        })?;
    let hosts = match Command::new("scontrol")
        .args(["show", "hostnames", &list])
        .output()
    {
        Ok(out) if out.status.success() => String::from_utf8_lossy(&out.stdout)
            .split_whitespace()
            .map(str::to_string)
            .collect(),
        Ok(out) => bail!(
            "`scontrol show hostnames {list}` (from {var}) failed ({}): {}",
            out.status,
            String::from_utf8_lossy(&out.stderr).trim()
        ),
        Err(e) if e.kind() == std::io::ErrorKind::NotFound => {
            expand_nodelist(&list).map_err(|e| anyhow!("{var}={list:?}: {e}"))?
        }
        Err(e) => bail!("cannot run scontrol: {e}"),
    };
    Ok(hosts.into_iter().map(|h| (h, 1)).collect())
}

/// Hosts of a machine file: one per line, `#` comments and blank lines
/// ignored; each host once, in order of first appearance, with the number
/// of lines naming it.
pub fn count_hosts(text: &str, origin: &str) -> Result<Vec<(String, u32)>, String> {
    let mut hosts: Vec<(String, u32)> = Vec::new();
    for (n, raw) in text.lines().enumerate() {
        let line = raw.split('#').next().unwrap_or("").trim();
        let fields: Vec<&str> = line.split_whitespace().collect();
        match fields[..] {
            [] => continue,
            [host] => match hosts.iter_mut().find(|(h, _)| h == host) {
                Some((_, count)) => *count += 1,
                None => hosts.push((host.to_string(), 1)),
            },
            _ => {
                return Err(format!(
                    "{origin}:{}: expected one host name per line (list a host \
                     once per server), got {line:?}",
                    n + 1
                ))
            }
        }
    }
    if hosts.is_empty() {
        return Err(format!("{origin}: no hosts listed"));
    }
    Ok(hosts)
}

/// Expands a Slurm host list: comma-separated names, each with any number
/// of bracketed ranges (`n[1-3,7]`, `r[1-2]n[01-02]`, their product);
/// numbers keep the width of a range's first bound (`[08-10]`: 08 09 10).
pub fn expand_nodelist(list: &str) -> Result<Vec<String>, String> {
    let mut names = Vec::new();
    let mut depth = 0;
    let mut start = 0;
    for (i, c) in list.char_indices() {
        match c {
            '[' if depth == 0 => depth = 1,
            ']' if depth == 1 => depth = 0,
            '[' | ']' => return Err(format!("unbalanced brackets at position {i}")),
            ',' if depth == 0 => {
                names.extend(expand_name(&list[start..i])?);
                start = i + 1;
            }
            _ => {}
        }
    }
    if depth != 0 {
        return Err("a `[` is never closed".into());
    }
    names.extend(expand_name(&list[start..])?);
    Ok(names)
}

/// One name of a host list with its bracketed ranges.
fn expand_name(pattern: &str) -> Result<Vec<String>, String> {
    let pattern = pattern.trim();
    if pattern.is_empty() {
        return Err("an empty name in the list".into());
    }
    let Some(open) = pattern.find('[') else {
        return Ok(vec![pattern.to_string()]);
    };
    let close = open + pattern[open..].find(']').ok_or("a `[` is never closed")?;
    let (prefix, ranges, rest) = (
        &pattern[..open],
        &pattern[open + 1..close],
        &pattern[close + 1..],
    );
    let tails = match rest.is_empty() {
        true => vec![String::new()],
        false => expand_name(rest)?,
    };
    let mut names = Vec::new();
    for range in ranges.split(',') {
        let (low, high) = range.split_once('-').unwrap_or((range, range));
        let parse = |n: &str| {
            n.parse::<u64>()
                .map_err(|_| format!("bad range {range:?} in {pattern:?}"))
        };
        let (from, to) = (parse(low)?, parse(high)?);
        if to < from || to - from > 100_000 {
            return Err(format!("bad range {range:?} in {pattern:?}"));
        }
        for n in from..=to {
            for tail in &tails {
                names.push(format!("{prefix}{n:0width$}{tail}", width = low.len()));
            }
        }
    }
    Ok(names)
}

/// The address the servers of the `number`-th node (from 1) listen on:
/// `template` with `{node}` and `{number}` replaced (`{node}-ib` for an
/// InfiniBand interface's name, `10.1.0.{number}`).
pub fn node_address(template: &str, node: &str, number: usize) -> String {
    template
        .replace("{node}", node)
        .replace("{number}", &number.to_string())
}

/// The hostfile lines for `nodes` (each host with its number of servers),
/// servers named after their node and listening on the address `template`
/// makes of it ([`node_address`]).
pub fn hostfile_text(
    nodes: &[(String, u32)],
    template: &str,
    port: u16,
    data_port_offset: u16,
) -> Result<String, String> {
    // With a data port per server, the next server's RPC port comes after it.
    let step = u32::from(data_port_offset) + 1;
    let mut text = String::new();
    for (number, (node, count)) in nodes.iter().enumerate() {
        let name = node.replace(
            |c: char| !(c.is_ascii_alphanumeric() || "-_.".contains(c)),
            "_",
        );
        let host = node_address(template, node, number + 1);
        let address = match host.contains(':') {
            true => format!("[{host}]"),
            false => host.clone(),
        };
        for i in 0..*count {
            let server_port = u32::from(port) + i * step;
            if server_port > u32::from(u16::MAX) {
                return Err(format!(
                    "{count} servers on {host} from port {port}, {step} apart, pass port 65535: \
                     use a lower --port or fewer --servers-per-node"
                ));
            }
            let server = match count {
                1 => name.clone(),
                _ => format!("{name}-{i}"),
            };
            text.push_str(&format!("{server} {address}:{server_port}\n"));
        }
    }
    Ok(text)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn slurm_host_lists_expand_as_scontrol_does() {
        assert_eq!(expand_nodelist("n1").unwrap(), ["n1"]);
        assert_eq!(
            expand_nodelist("n[1-3,7],gpu4").unwrap(),
            ["n1", "n2", "n3", "n7", "gpu4"]
        );
        assert_eq!(expand_nodelist("c[08-10]").unwrap(), ["c08", "c09", "c10"]);
        assert_eq!(
            expand_nodelist("r[1-2]n[01-02]-ib").unwrap(),
            ["r1n01-ib", "r1n02-ib", "r2n01-ib", "r2n02-ib"]
        );
        for bad in ["n[1-", "n[3-1]", "n[a-b]", "n1,,n2", "n]1["] {
            assert!(expand_nodelist(bad).is_err(), "{bad} accepted");
        }
    }

    #[test]
    fn machine_files_count_repeated_hosts() {
        let text = "# PBS_NODEFILE\nn1\nn2\nn1\n\nn3  # spare\n";
        assert_eq!(
            count_hosts(text, "f").unwrap(),
            [
                ("n1".to_string(), 2),
                ("n2".to_string(), 1),
                ("n3".to_string(), 1)
            ]
        );
        let e = count_hosts("n1 slots=4\n", "f").unwrap_err();
        assert!(e.starts_with("f:1: expected one host name per line"), "{e}");
        assert_eq!(
            count_hosts("# none\n", "f").unwrap_err(),
            "f: no hosts listed"
        );
    }

    #[test]
    fn generated_hostfiles_parse_and_keep_ports_apart() {
        let nodes = [("n1".to_string(), 2), ("10.0.0.7".to_string(), 1)];
        let text = hostfile_text(&nodes, "{node}", 7700, 1).unwrap();
        assert_eq!(text, "n1-0 n1:7700\nn1-1 n1:7702\n10.0.0.7 10.0.0.7:7700\n");
        let hostfile = Hostfile::parse(&text, "generated").unwrap();
        let config = Config::default();
        sfs_global::hostfile::validate_with_config(&config, &hostfile).unwrap();
        let text = hostfile_text(&[("::1".to_string(), 2)], "{node}", 9000, 0).unwrap();
        assert_eq!(text, "__1-0 [::1]:9000\n__1-1 [::1]:9001\n");
        Hostfile::parse(&text, "generated").unwrap();
        let e = hostfile_text(&[("n".to_string(), 3)], "{node}", 65533, 1).unwrap_err();
        assert!(e.contains("pass port 65535"), "{e}");
    }

    #[test]
    fn an_address_template_keeps_servers_named_after_their_node() {
        let nodes = [("n1".to_string(), 1), ("n2".to_string(), 2)];
        let text = hostfile_text(&nodes, "127.0.0.{number}", 7700, 1).unwrap();
        assert_eq!(
            text,
            "n1 127.0.0.1:7700\nn2-0 127.0.0.2:7700\nn2-1 127.0.0.2:7702\n"
        );
        assert_eq!(node_address("{node}-ib", "c07", 3), "c07-ib");
    }
}
