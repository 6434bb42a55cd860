//! The namespace checkpoint: how a job's metadata is written into the
//! object back end beside its data, so that a later job — with any number
//! of servers — starts with the same tree (`sfs stop --flush`, `sfs start
//! --restore`; docs/tiering.md, "A namespace that outlives the job").
//!
//! Three kinds of object, all with *reserved* ids (the upper 64 bits zero;
//! file ids never are, see [`FileId::is_reserved`]):
//!
//! - **Dumps**: every server writes the entries it owns, as one object
//!   [`dump_object`]`(sequence, server)`: a header, `(path, entry)` records
//!   in [`Metadata::encode`]'s encoding, and a trailer with the record count
//!   and an xxh3 of everything before it (a torn or foreign dump is refused,
//!   never half-restored).
//! - **Manifests**: two slots, [`MANIFEST_SLOTS`]. A checkpoint is complete
//!   once its manifest — a few lines of text naming the sequence number and
//!   the number of dumps, with a checksum line — is written and persisted
//!   into the slot the previous checkpoint does not use. A crash while a
//!   slot is written leaves the other slot, the previous checkpoint, valid:
//!   restore takes the valid manifest with the highest generation (one more
//!   than the manifest it replaced; sequence numbers are random).
//!
//! The data needs nothing of its own: a file's object already holds its
//! bytes at their file offsets, whatever chunk size or server count wrote
//! them.

use crate::error::{SfsError, SfsResult};
use crate::metadata::{FileId, Metadata};
use xxhash_rust::xxh3::xxh3_64;

/// The two manifest objects (see the module documentation).
pub const MANIFEST_SLOTS: [FileId; 2] = [FileId(1), FileId(2)];

/// The first reserved id a dump may take (ids below are manifests and room
/// for more fixed objects).
const FIRST_DUMP_ID: u32 = 16;

const DUMP_MAGIC: &[u8; 8] = b"SFSNSDMP";
const DUMP_END: &[u8; 8] = b"SFSNSEND";
const DUMP_VERSION: u32 = 1;
const MANIFEST_HEADER: &str = "sfs-checkpoint 1";

/// The object of server `server`'s dump of checkpoint `sequence`.
pub fn dump_object(sequence: u32, server: u32) -> FileId {
    FileId((u128::from(sequence) << 32) | u128::from(server.saturating_add(FIRST_DUMP_ID)))
}

/// The manifest slot the checkpoint of `generation` is written to: never
/// the one of the generation before it.
pub fn manifest_slot(generation: u64) -> FileId {
    MANIFEST_SLOTS[(generation % 2) as usize]
}

/// A committed checkpoint, as its manifest states it.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Manifest {
    /// One more than the checkpoint it replaced: the newest valid manifest
    /// is the one with the highest generation.
    pub generation: u64,
    /// Names the dumps; chosen anew (at random) for every checkpoint.
    pub sequence: u32,
    /// How many servers wrote a dump (dumps `0..servers`).
    pub servers: u32,
    /// Metadata entries in all dumps together.
    pub entries: u64,
    /// Regular files among them, and the sum of their sizes.
    pub files: u64,
    pub file_bytes: u64,
    /// When it was committed, nanoseconds since the Unix epoch.
    pub created_ns: i64,
}

impl Manifest {
    /// The manifest's text: `key value` lines and a last line with the
    /// xxh3 of the lines before it.
    pub fn encode(&self) -> Vec<u8> {
        let body = format!(
            "{MANIFEST_HEADER}\ngeneration {}\nsequence {}\nservers {}\nentries {}\nfiles {}\nfile_bytes {}\ncreated_ns {}\n",
            self.generation,
            self.sequence, self.servers, self.entries, self.files, self.file_bytes, self.created_ns
        );
        let sum = xxh3_64(body.as_bytes());
        format!("{body}checksum {sum:016x}\n").into_bytes()
    }

    /// Parses [`Manifest::encode`]'s output; anything else (a torn write, a
    /// foreign object) is EIO with the reason.
    pub fn decode(bytes: &[u8]) -> SfsResult<Manifest> {
        let bad = |why: &str| SfsError::io(format!("checkpoint manifest: {why}"));
        let text = std::str::from_utf8(bytes).map_err(|_| bad("not text"))?;
        let body_end = text
            .rfind("checksum ")
            .ok_or_else(|| bad("no checksum line"))?;
        let (body, sum_line) = text.split_at(body_end);
        let sum = sum_line
            .trim_end()
            .strip_prefix("checksum ")
            .and_then(|hex| u64::from_str_radix(hex, 16).ok())
            .ok_or_else(|| bad("unreadable checksum"))?;
        if sum != xxh3_64(body.as_bytes()) || !sum_line.ends_with('\n') {
            return Err(bad("checksum mismatch (torn or altered)"));
        }
        let mut lines = body.lines();
        if lines.next() != Some(MANIFEST_HEADER) {
            return Err(bad("unknown format"));
        }
        let mut field = |name: &str| -> SfsResult<i128> {
            let line = lines.next().ok_or_else(|| bad("too short"))?;
            line.strip_prefix(name)
                .and_then(|rest| rest.strip_prefix(' '))
                .and_then(|value| value.parse::<i128>().ok())
                .ok_or_else(|| bad(&format!("expected `{name} N`, got {line:?}")))
        };
        let number = |v: i128, name: &str| -> SfsResult<u64> {
            u64::try_from(v).map_err(|_| bad(&format!("{name} out of range")))
        };
        let generation = field("generation")?;
        let sequence = field("sequence")?;
        let servers = field("servers")?;
        let entries = field("entries")?;
        let files = field("files")?;
        let file_bytes = field("file_bytes")?;
        let created_ns = field("created_ns")?;
        Ok(Manifest {
            generation: number(generation, "generation")?,
            sequence: u32::try_from(sequence).map_err(|_| bad("sequence out of range"))?,
            servers: u32::try_from(servers).map_err(|_| bad("servers out of range"))?,
            entries: number(entries, "entries")?,
            files: number(files, "files")?,
            file_bytes: number(file_bytes, "file_bytes")?,
            created_ns: i64::try_from(created_ns).map_err(|_| bad("created_ns out of range"))?,
        })
    }
}

/// Builds one server's dump.
pub struct DumpWriter {
    out: Vec<u8>,
    records: u64,
}

impl DumpWriter {
    pub fn new(sequence: u32, server: u32, servers: u32) -> DumpWriter {
        let mut out = Vec::with_capacity(1 << 16);
        out.extend_from_slice(DUMP_MAGIC);
        for v in [DUMP_VERSION, sequence, server, servers] {
            out.extend_from_slice(&v.to_le_bytes());
        }
        DumpWriter { out, records: 0 }
    }

    /// Adds the entry at `path`.
    pub fn push(&mut self, path: &str, entry: &Metadata) {
        let encoded = entry.encode();
        self.out
            .extend_from_slice(&(path.len() as u32).to_le_bytes());
        self.out.extend_from_slice(path.as_bytes());
        self.out
            .extend_from_slice(&(encoded.len() as u32).to_le_bytes());
        self.out.extend_from_slice(&encoded);
        self.records += 1;
    }

    /// The finished dump: everything, then the trailer.
    pub fn finish(mut self) -> Vec<u8> {
        self.out.extend_from_slice(DUMP_END);
        self.out.extend_from_slice(&self.records.to_le_bytes());
        let sum = xxh3_64(&self.out);
        self.out.extend_from_slice(&sum.to_le_bytes());
        self.out
    }
}

/// What a dump's header says.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct DumpHeader {
    pub sequence: u32,
    pub server: u32,
    pub servers: u32,
}

const HEADER_LEN: usize = 8 + 4 * 4;
const TRAILER_LEN: usize = 8 + 8 + 8;

/// Checks a whole dump (checksum, trailer, every record) and returns its
/// header and records. Nothing of a dump that fails any check is returned.
pub fn decode_dump(bytes: &[u8]) -> SfsResult<(DumpHeader, Vec<(String, Metadata)>)> {
    let bad = |why: &str| SfsError::io(format!("checkpoint dump: {why}"));
    if bytes.len() < HEADER_LEN + TRAILER_LEN || &bytes[..8] != DUMP_MAGIC {
        return Err(bad("not a dump (too short or wrong magic)"));
    }
    let (content, sum) = bytes.split_at(bytes.len() - 8);
    if xxh3_64(content) != u64::from_le_bytes(sum.try_into().expect("8 bytes")) {
        return Err(bad("checksum mismatch (torn or altered)"));
    }
    let u32_at = |at: usize| u32::from_le_bytes(bytes[at..at + 4].try_into().expect("4 bytes"));
    if u32_at(8) != DUMP_VERSION {
        return Err(bad("unknown version"));
    }
    let header = DumpHeader {
        sequence: u32_at(12),
        server: u32_at(16),
        servers: u32_at(20),
    };
    let trailer = content.len() - 16;
    if &content[trailer..trailer + 8] != DUMP_END {
        return Err(bad("no trailer"));
    }
    let count = u64::from_le_bytes(content[trailer + 8..].try_into().expect("8 bytes"));
    let mut records = Vec::new();
    let mut pos = HEADER_LEN;
    let take = |pos: &mut usize| -> SfsResult<&[u8]> {
        let len_end = pos.checked_add(4).filter(|&e| e <= trailer);
        let len_end = len_end.ok_or_else(|| bad("record runs past the end"))?;
        let len = u32::from_le_bytes(content[*pos..len_end].try_into().expect("4 bytes")) as usize;
        let end = len_end
            .checked_add(len)
            .filter(|&e| e <= trailer)
            .ok_or_else(|| bad("record runs past the end"))?;
        *pos = end;
        Ok(&content[len_end..end])
    };
    while pos < trailer {
        let path = std::str::from_utf8(take(&mut pos)?)
            .map_err(|_| bad("a path is not UTF-8"))?
            .to_string();
        let entry = Metadata::decode(take(&mut pos)?)?;
        records.push((path, entry));
    }
    if records.len() as u64 != count {
        return Err(bad(&format!(
            "trailer counts {count} records, found {}",
            records.len()
        )));
    }
    Ok((header, records))
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::metadata::FileKind;

    fn entry(id: u128, size: u64) -> Metadata {
        let mut m = Metadata::new(FileKind::File, 0o640, FileId(id), 1234);
        m.size = size;
        m
    }

    #[test]
    fn reserved_ids_never_collide_with_each_other_or_with_file_ids() {
        let a = dump_object(7, 0);
        assert!(a.is_reserved());
        assert!(dump_object(u32::MAX, u32::MAX).is_reserved());
        assert_ne!(dump_object(7, 1), a);
        assert_ne!(dump_object(8, 0), a);
        for slot in MANIFEST_SLOTS {
            assert!(slot.is_reserved());
            assert_ne!(dump_object(0, 0), slot);
        }
        assert_ne!(manifest_slot(4), manifest_slot(5));
        assert!(!FileId::from_parts(1, 0).is_reserved());
    }

    #[test]
    fn manifest_round_trips_and_refuses_any_change() {
        let m = Manifest {
            generation: 3,
            sequence: 42,
            servers: 3,
            entries: 10,
            files: 7,
            file_bytes: 1 << 40,
            created_ns: 1_700_000_000_000_000_000,
        };
        let bytes = m.encode();
        assert_eq!(Manifest::decode(&bytes).unwrap(), m);
        for cut in 0..bytes.len() {
            assert!(Manifest::decode(&bytes[..cut]).is_err(), "cut at {cut}");
        }
        let mut altered = bytes.clone();
        altered[25] ^= 1;
        assert!(Manifest::decode(&altered).is_err());
    }

    #[test]
    fn dump_round_trips_and_refuses_torn_or_altered_bytes() {
        let mut w = DumpWriter::new(9, 1, 2);
        w.push(
            "/",
            &Metadata::new(FileKind::Directory, 0o755, FileId(5 << 64), 1),
        );
        w.push("/a/b", &entry(6 << 64, 1 << 20));
        let mut link = Metadata::new(FileKind::Symlink, 0o777, FileId(7 << 64), 1);
        link.link_target = "../x".into();
        w.push("/a/l", &link);
        let bytes = w.finish();
        let (header, records) = decode_dump(&bytes).unwrap();
        assert_eq!(
            header,
            DumpHeader {
                sequence: 9,
                server: 1,
                servers: 2
            }
        );
        assert_eq!(records.len(), 3);
        assert_eq!(records[1], ("/a/b".to_string(), entry(6 << 64, 1 << 20)));
        assert_eq!(records[2].1.link_target, "../x");
        for cut in 0..bytes.len() {
            assert!(decode_dump(&bytes[..cut]).is_err(), "cut at {cut}");
        }
        for i in (0..bytes.len()).step_by(7) {
            let mut altered = bytes.clone();
            altered[i] ^= 0x40;
            assert!(decode_dump(&altered).is_err(), "byte {i} altered");
        }
    }

    #[test]
    fn an_empty_dump_is_valid() {
        let bytes = DumpWriter::new(1, 0, 1).finish();
        let (header, records) = decode_dump(&bytes).unwrap();
        assert_eq!(header.servers, 1);
        assert!(records.is_empty());
    }
}
