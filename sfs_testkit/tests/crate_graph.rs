//! docs/architecture.md's table of which SFS crate uses which, checked
//! against the manifests: a dependency added to a `Cargo.toml` and not to
//! the table (or the other way round) fails here, so the documented layers
//! stay the real ones. Only normal dependencies count (`[dependencies]`;
//! tests and build scripts may use more).

use std::collections::{BTreeMap, BTreeSet};
use std::path::{Path, PathBuf};

type Graph = BTreeMap<String, BTreeSet<String>>;

fn root() -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR"))
        .parent()
        .expect("the workspace holds sfs_testkit")
        .to_path_buf()
}

/// The value of `key = "..."` on `line`, if it is that line.
fn quoted<'a>(line: &'a str, key: &str) -> Option<&'a str> {
    let rest = line.strip_prefix(key)?.trim_start().strip_prefix('=')?;
    rest.trim().strip_prefix('"')?.split('"').next()
}

/// Every workspace member's package name and the members it depends on.
fn from_manifests() -> Graph {
    let root = root();
    let workspace = std::fs::read_to_string(root.join("Cargo.toml")).unwrap();
    let members: Vec<&str> = workspace
        .lines()
        .find_map(|l| l.trim().strip_prefix("members = ["))
        .expect("a members line")
        .trim_end_matches(']')
        .split(',')
        .map(|m| m.trim().trim_matches('"'))
        .filter(|m| !m.is_empty())
        .collect();
    let mut packages = Vec::new();
    for dir in &members {
        let text = std::fs::read_to_string(root.join(dir).join("Cargo.toml")).unwrap();
        let name = text
            .lines()
            .find_map(|l| quoted(l.trim(), "name"))
            .unwrap_or_else(|| panic!("{dir}/Cargo.toml names no package"))
            .to_string();
        packages.push((name, text));
    }
    let names: BTreeSet<String> = packages.iter().map(|(n, _)| n.clone()).collect();
    let mut graph = Graph::new();
    for (name, text) in &packages {
        let mut deps = BTreeSet::new();
        let mut section = "";
        for line in text.lines().map(str::trim) {
            if line.starts_with('[') {
                section = line;
                continue;
            }
            if section != "[dependencies]" {
                continue;
            }
            let key = line.split(['=', '.', ' ']).next().unwrap_or("");
            if names.contains(key) {
                deps.insert(key.to_string());
            }
        }
        graph.insert(name.clone(), deps);
    }
    graph
}

/// The table between the `crate-graph` markers of docs/architecture.md:
/// rows `| `crate` | `dep`, `dep` |` (`—` for none).
fn from_docs() -> Graph {
    let doc = std::fs::read_to_string(root().join("docs/architecture.md")).unwrap();
    let start = doc
        .find("<!-- crate-graph -->")
        .expect("docs/architecture.md has the crate-graph table");
    let end = doc[start..]
        .find("<!-- /crate-graph -->")
        .expect("the table ends")
        + start;
    let mut graph = Graph::new();
    for row in doc[start..end].lines().filter(|l| l.starts_with("| `")) {
        let cells: Vec<&str> = row.split('|').map(str::trim).collect();
        let name = cells[1].trim_matches('`').to_string();
        let deps = cells[2]
            .split(',')
            .map(|d| d.trim().trim_matches('`').to_string())
            .filter(|d| !d.is_empty() && d != "—")
            .collect();
        graph.insert(name, deps);
    }
    graph
}

#[test]
fn the_documented_crate_graph_is_the_manifests() {
    let (real, documented) = (from_manifests(), from_docs());
    assert!(real.len() >= 10, "{real:?}");
    for (name, deps) in &real {
        assert_eq!(
            documented.get(name),
            Some(deps),
            "crate {name}: its Cargo.toml uses {deps:?}; docs/architecture.md's crate-graph table says {:?}",
            documented.get(name)
        );
    }
    assert_eq!(
        documented.keys().collect::<Vec<_>>(),
        real.keys().collect::<Vec<_>>(),
        "the table names a crate that is not a workspace member"
    );
    // One way: sfs_global uses no SFS crate, and none uses the binaries'.
    assert!(real["sfs_global"].is_empty());
    for (name, deps) in &real {
        for top in ["sfs_cli", "sfs_bench", "sfs_shim", "sfs_preload"] {
            assert!(!deps.contains(top), "{name} uses {top}");
        }
    }
}
