//! `--include` / `--exclude` globs on the paths of a tree (relative to the
//! SRC they come from).
//!
//! A pattern with a `/` matches the whole relative path (`*` does not cross
//! a `/`, `**` does); one without matches the last component, at any depth
//! (`*.tmp`). An excluded directory is not entered. With includes, a file
//! or symlink is staged only if it matches one, and a directory only if
//! something below it is (so no empty directories are made for nothing).

use super::tree::{Entry, EntryKind};
use anyhow::{Context, Result};
use glob::{MatchOptions, Pattern};

const OPTIONS: MatchOptions = MatchOptions {
    case_sensitive: true,
    require_literal_separator: true,
    require_literal_leading_dot: false,
};

pub struct Filter {
    include: Vec<Pattern>,
    exclude: Vec<Pattern>,
}

fn compile(patterns: &[String], flag: &str) -> Result<Vec<Pattern>> {
    patterns
        .iter()
        .map(|p| Pattern::new(p).with_context(|| format!("{flag} {p:?}: not a glob pattern")))
        .collect()
}

fn matches(pattern: &Pattern, rel: &str) -> bool {
    if pattern.as_str().contains('/') {
        pattern.matches_with(rel, OPTIONS)
    } else {
        let name = rel.rsplit('/').next().unwrap_or(rel);
        pattern.matches_with(name, OPTIONS)
    }
}

impl Filter {
    pub fn new(include: &[String], exclude: &[String]) -> Result<Filter> {
        Ok(Filter {
            include: compile(include, "--include")?,
            exclude: compile(exclude, "--exclude")?,
        })
    }

    /// Whether the walk leaves `rel` (and all below it) out.
    pub fn excluded(&self, rel: &str) -> bool {
        !rel.is_empty() && self.exclude.iter().any(|p| matches(p, rel))
    }

    /// The walked `entries` that the includes keep (all without includes).
    pub fn keep_included(&self, entries: Vec<Entry>) -> Vec<Entry> {
        if self.include.is_empty() {
            return entries;
        }
        let kept: Vec<bool> = entries
            .iter()
            .map(|e| {
                e.rel.is_empty()
                    || (e.kind != EntryKind::Dir && self.include.iter().any(|p| matches(p, &e.rel)))
            })
            .collect();
        let mut needed: std::collections::HashSet<&str> = std::collections::HashSet::new();
        for (e, _) in entries.iter().zip(&kept).filter(|(_, k)| **k) {
            let mut rel = e.rel.as_str();
            while let Some((up, _)) = rel.rsplit_once('/') {
                needed.insert(up);
                rel = up;
            }
        }
        let keep: Vec<bool> = entries
            .iter()
            .zip(&kept)
            .map(|(e, k)| *k || (e.kind == EntryKind::Dir && needed.contains(e.rel.as_str())))
            .collect();
        entries
            .into_iter()
            .zip(keep)
            .filter_map(|(e, k)| k.then_some(e))
            .collect()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn entry(rel: &str, kind: EntryKind) -> Entry {
        Entry {
            rel: rel.into(),
            kind,
            mode: 0o644,
            mtime_ns: 0,
            size: 0,
            target: String::new(),
            version: 0,
        }
    }

    #[test]
    fn a_pattern_without_a_slash_matches_names_at_any_depth() {
        let f = Filter::new(&[], &["*.tmp".into(), "a/b/*.log".into()]).unwrap();
        assert!(f.excluded("x.tmp"));
        assert!(f.excluded("d/e/x.tmp"));
        assert!(f.excluded("a/b/c.log"));
        assert!(!f.excluded("a/b/c/d.log"), "* does not cross /");
        assert!(!f.excluded("a/b/c.txt"));
        assert!(!f.excluded(""), "the root is never excluded");
    }

    #[test]
    fn includes_keep_matching_files_and_the_directories_above_them() {
        let f = Filter::new(&["*.dat".into()], &[]).unwrap();
        let entries = vec![
            entry("", EntryKind::Dir),
            entry("a", EntryKind::Dir),
            entry("a/b", EntryKind::Dir),
            entry("a/b/x.dat", EntryKind::File),
            entry("a/y.txt", EntryKind::File),
            entry("empty", EntryKind::Dir),
        ];
        let kept: Vec<String> = f
            .keep_included(entries)
            .into_iter()
            .map(|e| e.rel)
            .collect();
        assert_eq!(kept, ["", "a", "a/b", "a/b/x.dat"]);
    }

    #[test]
    fn a_bad_pattern_is_named() {
        let e = Filter::new(&["[".into()], &[]).err().unwrap();
        assert!(format!("{e:#}").contains("--include \"[\""), "{e:#}");
    }
}
