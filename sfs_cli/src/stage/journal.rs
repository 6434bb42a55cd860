//! The stage journal: one JSON line per file that arrived whole (and, unless
//! `--no-verify`, verified), so that a stage run again after an
//! interruption skips it.
//!
//! A line is appended with one `write` on an `O_APPEND` descriptor when the
//! file is done, so a killed stage leaves every finished line behind (the
//! kernel has it); a torn last line (a crash of the machine mid-write) is
//! ignored on reading. A file counts as staged when the journal has it
//! with the same source, size and source version (mtime, or S3
//! last-modified) as now, and the destination still has a file of that
//! size.
//!
//! Where: `--journal FILE`, else `STATE/<direction>-<hash>.journal` where
//! STATE is `$SFS_STAGE_STATE_DIR`, `$XDG_STATE_HOME/sfs/stage` or
//! `~/.local/state/sfs/stage` and the hash covers every SRC → DST pair
//! of the command, so the same command finds its journal again.

use anyhow::{Context, Result};
use std::collections::HashMap;
use std::fs::{File, OpenOptions};
use std::io::Write;
use std::path::{Path, PathBuf};
use std::sync::Mutex;

/// One finished file.
#[derive(Clone, Debug, PartialEq, Eq, serde::Serialize, serde::Deserialize)]
pub struct Record {
    /// The source file, as `describe` names it.
    pub src: String,
    /// The destination file, as `describe` names it (the journal's key).
    pub dst: String,
    pub size: u64,
    /// The source's version when it was read (see `tree::Entry`).
    pub version: i64,
    /// xxh3-64 over the xxh3-128 of each range, hex.
    pub xxh3: String,
    /// Whether the destination was read back and compared.
    pub verified: bool,
}

/// The journal of one stage command.
pub struct Journal {
    path: PathBuf,
    done: HashMap<String, Record>,
    file: Mutex<File>,
}

/// The default journal file of a command whose pairs are `pairs`.
pub fn default_path(direction: &str, pairs: &[(String, String)]) -> Result<PathBuf> {
    let state = match std::env::var_os("SFS_STAGE_STATE_DIR") {
        Some(dir) => PathBuf::from(dir),
        None => match std::env::var_os("XDG_STATE_HOME") {
            Some(dir) => PathBuf::from(dir).join("sfs/stage"),
            None => {
                let home = std::env::var_os("HOME").context(
                    "no HOME to keep the stage journal under: set SFS_STAGE_STATE_DIR or --journal",
                )?;
                PathBuf::from(home).join(".local/state/sfs/stage")
            }
        },
    };
    let mut text = String::new();
    for (src, dst) in pairs {
        text.push_str(src);
        text.push('\0');
        text.push_str(dst);
        text.push('\n');
    }
    let hash = xxhash_rust::xxh3::xxh3_64(text.as_bytes());
    Ok(state.join(format!("{direction}-{hash:016x}.journal")))
}

impl Journal {
    /// Opens (creating) the journal at `path`; `restart` forgets what it
    /// holds.
    pub fn open(path: &Path, restart: bool) -> Result<Journal> {
        if let Some(dir) = path.parent() {
            std::fs::create_dir_all(dir)
                .with_context(|| format!("creating the journal directory {}", dir.display()))?;
        }
        let mut done = HashMap::new();
        let mut torn = false;
        if !restart {
            match std::fs::read_to_string(path) {
                Ok(text) => {
                    torn = !text.is_empty() && !text.ends_with('\n');
                    // A line that does not parse is a torn last write.
                    for record in text
                        .lines()
                        .filter_map(|l| serde_json::from_str::<Record>(l).ok())
                    {
                        done.insert(record.dst.clone(), record);
                    }
                }
                Err(e) if e.kind() == std::io::ErrorKind::NotFound => {}
                Err(e) => {
                    return Err(e).with_context(|| format!("reading journal {}", path.display()))
                }
            }
        }
        let file = OpenOptions::new()
            .create(true)
            .append(true)
            .truncate(false)
            .open(path)
            .with_context(|| format!("opening journal {}", path.display()))?;
        if restart {
            file.set_len(0)
                .with_context(|| format!("emptying journal {}", path.display()))?;
        }
        let journal = Journal {
            path: path.to_path_buf(),
            done,
            file: Mutex::new(file),
        };
        if torn {
            // End the torn line, so the next record starts on its own.
            journal.append("\n")?;
        }
        Ok(journal)
    }

    fn append(&self, text: &str) -> Result<()> {
        let mut file = self.file.lock().unwrap_or_else(|p| p.into_inner());
        file.write_all(text.as_bytes())
            .with_context(|| format!("writing journal {}", self.path.display()))
    }

    pub fn path(&self) -> &Path {
        &self.path
    }

    /// The record of destination `dst` from an earlier run.
    pub fn finished(&self, dst: &str) -> Option<&Record> {
        self.done.get(dst)
    }

    /// Appends `record` in one write.
    pub fn record(&self, record: &Record) -> Result<()> {
        let mut line = serde_json::to_string(record)?;
        line.push('\n');
        self.append(&line)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn record(dst: &str) -> Record {
        Record {
            src: format!("/src/{dst}"),
            dst: dst.to_string(),
            size: 10,
            version: 7,
            xxh3: "00ff".into(),
            verified: true,
        }
    }

    #[test]
    fn records_survive_reopening_and_a_torn_line_is_ignored() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("j/x.journal");
        let journal = Journal::open(&path, false).unwrap();
        journal.record(&record("a")).unwrap();
        journal.record(&record("b")).unwrap();
        drop(journal);
        let mut file = OpenOptions::new().append(true).open(&path).unwrap();
        file.write_all(b"{\"src\":\"/src/c\",\"dst\":\"c\",\"si")
            .unwrap();
        let journal = Journal::open(&path, false).unwrap();
        assert_eq!(journal.finished("a"), Some(&record("a")));
        assert_eq!(journal.finished("b"), Some(&record("b")));
        assert_eq!(journal.finished("c"), None);
        journal.record(&record("d")).unwrap();
        drop(journal);
        let journal = Journal::open(&path, false).unwrap();
        assert_eq!(
            journal.finished("d"),
            Some(&record("d")),
            "after a torn line"
        );
        let journal = Journal::open(&path, true).unwrap();
        assert_eq!(journal.finished("a"), None, "restart forgets");
        assert_eq!(std::fs::metadata(&path).unwrap().len(), 0);
    }

    #[test]
    fn the_default_path_depends_on_the_pairs() {
        std::env::set_var("SFS_STAGE_STATE_DIR", "/state");
        let one = default_path("in", &[("a".into(), "b".into())]).unwrap();
        let two = default_path("in", &[("a".into(), "c".into())]).unwrap();
        assert!(one.starts_with("/state"));
        assert_ne!(one, two);
        assert_eq!(
            one,
            default_path("in", &[("a".into(), "b".into())]).unwrap()
        );
    }
}
