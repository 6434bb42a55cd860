//! The tiering journal: what a server must remember across a crash about
//! its files' place between the chunk store and the object back end.
//!
//! Two facts per file, as one-line records appended to
//! `<server dir>/tier.journal`:
//! - `D <id>`: the file has chunks here that the back end does not hold yet
//!   (written *before* the data, so no acknowledged write is ever
//!   untracked); `C <id>`: all of them were written back.
//! - `B <id>`: the back end holds an object for the file, so a chunk missing
//!   here may have been evicted and is read back from there (fsync'ed
//!   before any chunk of the file can be evicted); `X <id>`: the file is
//!   gone (unlinked), object and all.
//!
//! Appends are single `write(2)`s to an `O_APPEND` file, so a killed server
//! loses none (the page cache keeps them); `sync` makes them durable
//! against a machine crash, which a client's `fsync` and every `B` record
//! ask for. At start-up the journal is replayed and rewritten with only the
//! current facts, and again while the server runs once the appends outgrow
//! the facts ([`Journal::append_all`]).

use sfs_global::{FileId, SfsError, SfsResult};
use std::collections::HashSet;
use std::fs::{File, OpenOptions};
use std::io::Write;
use std::path::{Path, PathBuf};

/// One fact about a file.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Record {
    Dirty(FileId),
    Clean(FileId),
    InBackend(FileId),
    Gone(FileId),
}

impl Record {
    /// The record as a journal line, newline included.
    pub fn line(self) -> String {
        let (tag, id) = match self {
            Record::Dirty(id) => ('D', id),
            Record::Clean(id) => ('C', id),
            Record::InBackend(id) => ('B', id),
            Record::Gone(id) => ('X', id),
        };
        format!("{tag} {}\n", id.to_hex())
    }

    /// Parses one journal line (without its newline); `None` for anything
    /// that is not a record, such as a line torn by a crash.
    pub fn parse(line: &str) -> Option<Record> {
        let (tag, hex) = line.split_once(' ')?;
        if hex.len() != 32 {
            return None;
        }
        let id = FileId(u128::from_str_radix(hex.trim(), 16).ok()?);
        match tag {
            "D" => Some(Record::Dirty(id)),
            "C" => Some(Record::Clean(id)),
            "B" => Some(Record::InBackend(id)),
            "X" => Some(Record::Gone(id)),
            _ => None,
        }
    }
}

/// What the journal says after replay.
#[derive(Debug, Default, PartialEq, Eq)]
pub struct Replayed {
    /// Files with chunks not yet in the back end.
    pub dirty: HashSet<FileId>,
    /// Files with an object in the back end.
    pub in_backend: HashSet<FileId>,
}

fn failed(what: &str, path: &Path, e: std::io::Error) -> SfsError {
    SfsError::io(format!(
        "tier journal: cannot {what} {}: {e}",
        path.display()
    ))
}

pub struct Journal {
    path: PathBuf,
    file: File,
    /// Records appended since the last sync.
    unsynced: bool,
    /// What the journal says now (what a rewrite writes).
    facts: Replayed,
    /// Bytes appended since the journal was last rewritten.
    appended: u64,
    /// Appended bytes past which a rewrite is considered.
    compact_after: u64,
}

/// Appends after which the journal is compacted (see
/// [`Journal::append_all`]).
const COMPACT_AFTER_BYTES: u64 = 64 << 20;

/// Bytes of one record line (`D <32 hex digits>\n`).
const LINE_BYTES: u64 = 35;

impl Replayed {
    /// What a journal's bytes say: its records applied in order, lines that
    /// are no record (a torn last line) skipped. Pure: the journal's decoder
    /// (fuzzed in sfs_testkit/tests/decoders.rs).
    pub fn replay(bytes: &[u8]) -> Replayed {
        let mut replayed = Replayed::default();
        for record in String::from_utf8_lossy(bytes)
            .lines()
            .filter_map(Record::parse)
        {
            replayed.apply(record);
        }
        replayed
    }

    fn apply(&mut self, record: Record) {
        match record {
            Record::Dirty(id) => {
                self.dirty.insert(id);
            }
            Record::Clean(id) => {
                self.dirty.remove(&id);
            }
            Record::InBackend(id) => {
                self.in_backend.insert(id);
            }
            Record::Gone(id) => {
                self.dirty.remove(&id);
                self.in_backend.remove(&id);
            }
        }
    }
}

/// Replaces the journal at `path` with one holding only `facts` (written
/// beside it, synced, renamed over it, directory synced) and opens it for
/// appending.
fn rewrite(path: &Path, facts: &Replayed) -> SfsResult<File> {
    let compacted = path.with_extension("journal.new");
    let mut lines = String::new();
    for &id in &facts.dirty {
        lines.push_str(&Record::Dirty(id).line());
    }
    for &id in &facts.in_backend {
        lines.push_str(&Record::InBackend(id).line());
    }
    let write = || -> std::io::Result<()> {
        let mut f = File::create(&compacted)?;
        f.write_all(lines.as_bytes())?;
        f.sync_all()?;
        std::fs::rename(&compacted, path)?;
        if let Some(dir) = path.parent() {
            File::open(dir)?.sync_all()?;
        }
        Ok(())
    };
    write().map_err(|e| failed("rewrite", path, e))?;
    OpenOptions::new()
        .append(true)
        .open(path)
        .map_err(|e| failed("open", path, e))
}

impl Journal {
    /// Replays the journal at `path` (a missing one is empty), rewrites it
    /// with only the current facts, and opens it for appending. A torn last
    /// line (a crash mid-append) is ignored: its write had not returned, so
    /// the data it announced was not written either.
    pub fn open(path: &Path) -> SfsResult<(Journal, Replayed)> {
        let replayed = match std::fs::read(path) {
            Ok(bytes) => Replayed::replay(&bytes),
            Err(e) if e.kind() == std::io::ErrorKind::NotFound => Replayed::default(),
            Err(e) => return Err(failed("read", path, e)),
        };
        let file = rewrite(path, &replayed)?;
        Ok((
            Journal {
                path: path.to_path_buf(),
                file,
                unsynced: false,
                facts: Replayed {
                    dirty: replayed.dirty.clone(),
                    in_backend: replayed.in_backend.clone(),
                },
                appended: 0,
                compact_after: COMPACT_AFTER_BYTES,
            },
            replayed,
        ))
    }

    /// Appends one record (one `write(2)`).
    pub fn append(&mut self, record: Record) -> SfsResult<()> {
        self.append_all([record])
    }

    /// Appends many records in one `write(2)` (a restore's thousands), and
    /// rewrites the journal with only the current facts once the appends
    /// since the last rewrite are both past the compaction threshold and
    /// four times what the facts take: a long job's dirty/clean cycles do
    /// not grow it without bound, and a rewrite costs at most a quarter of
    /// what was appended.
    pub fn append_all(&mut self, records: impl IntoIterator<Item = Record>) -> SfsResult<()> {
        let mut lines = String::new();
        for record in records {
            self.facts.apply(record);
            lines.push_str(&record.line());
        }
        if lines.is_empty() {
            return Ok(());
        }
        self.unsynced = true;
        self.file
            .write_all(lines.as_bytes())
            .map_err(|e| failed("append to", &self.path, e))?;
        self.appended += lines.len() as u64;
        let live = (self.facts.dirty.len() + self.facts.in_backend.len()) as u64 * LINE_BYTES;
        if self.appended > self.compact_after && self.appended > 4 * live {
            // Durable: the rewrite is synced before it replaces the old one.
            self.file = rewrite(&self.path, &self.facts)?;
            self.appended = 0;
            self.unsynced = false;
        }
        Ok(())
    }

    /// Makes every appended record durable (nothing to do when none came
    /// since the last sync).
    pub fn sync(&mut self) -> SfsResult<()> {
        if !self.unsynced {
            return Ok(());
        }
        self.file
            .sync_data()
            .map_err(|e| failed("sync", &self.path, e))?;
        self.unsynced = false;
        Ok(())
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn replay_keeps_the_last_fact_of_each_file_and_ignores_a_torn_line() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("tier.journal");
        let (a, b, c) = (FileId(1), FileId(2), FileId(3));
        {
            let (mut j, replayed) = Journal::open(&path).unwrap();
            assert_eq!(replayed, Replayed::default());
            for r in [
                Record::Dirty(a),
                Record::Dirty(b),
                Record::InBackend(b),
                Record::Clean(b),
                Record::Dirty(c),
                Record::InBackend(c),
                Record::Gone(c),
            ] {
                j.append(r).unwrap();
            }
        }
        // A crash in the middle of an append.
        let mut f = OpenOptions::new().append(true).open(&path).unwrap();
        f.write_all(b"D 00000000000000").unwrap();
        drop(f);
        let (_, replayed) = Journal::open(&path).unwrap();
        assert_eq!(replayed.dirty, HashSet::from([a]));
        assert_eq!(replayed.in_backend, HashSet::from([b]));
        // Rewritten with only those facts, and replays to the same.
        let text = std::fs::read_to_string(&path).unwrap();
        assert_eq!(text.lines().count(), 2, "{text}");
        let (_, again) = Journal::open(&path).unwrap();
        assert_eq!(again, replayed);
    }

    #[test]
    fn a_running_journal_is_compacted_without_losing_a_fact() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("tier.journal");
        let (mut j, _) = Journal::open(&path).unwrap();
        j.compact_after = 10 * LINE_BYTES;
        let kept = FileId(7);
        j.append(Record::InBackend(kept)).unwrap();
        j.append(Record::Dirty(FileId(8))).unwrap();
        let mut largest = 0;
        for i in 100..1100u128 {
            j.append(Record::Dirty(FileId(i))).unwrap();
            j.append(Record::Clean(FileId(i))).unwrap();
            largest = largest.max(std::fs::metadata(&path).unwrap().len());
        }
        assert!(
            largest < 40 * LINE_BYTES,
            "never compacted: {largest} bytes"
        );
        drop(j);
        let (_, replayed) = Journal::open(&path).unwrap();
        assert_eq!(replayed.dirty, HashSet::from([FileId(8)]));
        assert_eq!(replayed.in_backend, HashSet::from([kept]));
    }

    #[test]
    fn records_parse_back_and_replay_skips_what_is_no_record() {
        let id = FileId(0x0123_4567_89ab_cdef_0011_2233_4455_6677);
        for r in [
            Record::Dirty(id),
            Record::Clean(id),
            Record::InBackend(id),
            Record::Gone(id),
        ] {
            let line = r.line();
            assert_eq!(line.len() as u64, LINE_BYTES);
            assert_eq!(Record::parse(line.trim_end_matches('\n')), Some(r));
        }
        for bad in [
            "",
            "D",
            "D 12",
            "Q 00000000000000000000000000000001",
            "D0 0000000000000000000000000000001",
        ] {
            assert_eq!(Record::parse(bad), None, "{bad:?}");
        }
        let mut bytes = Record::Dirty(id).line().into_bytes();
        bytes.extend_from_slice(b"\xff\xfe garbage\n");
        bytes.extend_from_slice(Record::InBackend(FileId(9)).line().as_bytes());
        bytes.extend_from_slice(b"C 0123456789abcdef00112233445566");
        let replayed = Replayed::replay(&bytes);
        assert_eq!(replayed.dirty, HashSet::from([id]));
        assert_eq!(replayed.in_backend, HashSet::from([FileId(9)]));
    }
}
