//! The metadata entry of a file, directory or symlink, its on-disk encoding,
//! its key, and the update operations that servers merge into it.
//!
//! Updates are *merge operands* rather than read-modify-write: concurrent
//! writers of one file each send "size is at least my end" and the owner
//! folds them with [`apply_updates`] (a RocksDB merge operator on the
//! server), so N-to-1 writes need no lock and size never goes backwards
//! except through an explicit truncate. Every encoding starts with a version
//! byte so that it can evolve.

use crate::error::{SfsError, SfsResult};
use std::fmt;

/// Stable 128-bit identity of a file (two u64 halves, like a Motr object id).
/// Data chunks are keyed by it, so renames never move data.
#[derive(Clone, Copy, PartialEq, Eq, Hash, PartialOrd, Ord, Default)]
pub struct FileId(pub u128);

impl FileId {
    pub fn from_parts(hi: u64, lo: u64) -> Self {
        FileId((u128::from(hi) << 64) | u128::from(lo))
    }
    pub fn hi(self) -> u64 {
        (self.0 >> 64) as u64
    }
    pub fn lo(self) -> u64 {
        self.0 as u64
    }
    /// Ids whose upper 64 bits are zero name SFS's own objects in the back
    /// end (the namespace checkpoint, [`crate::checkpoint`]); no file is
    /// ever given one.
    pub fn is_reserved(self) -> bool {
        self.hi() == 0
    }
    /// Fixed-width hex, used for chunk directory and object names.
    pub fn to_hex(self) -> String {
        format!("{:032x}", self.0)
    }
}

impl fmt::Debug for FileId {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "{:016x}:{:016x}", self.hi(), self.lo())
    }
}

impl fmt::Display for FileId {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        fmt::Debug::fmt(self, f)
    }
}

/// Type of an entry.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum FileKind {
    File,
    Directory,
    Symlink,
    /// Special files (`mknod`, `mkfifo`, a socket's `bind`): entries with a
    /// type and a mode, never opened for I/O (docs/semantics.md). A
    /// device's number is kept in the entry's `size` ([`Metadata::rdev`]).
    Fifo,
    Socket,
    CharDevice,
    BlockDevice,
}

impl FileKind {
    /// The `S_IFMT` bits of this kind.
    pub fn type_bits(self) -> u32 {
        match self {
            FileKind::File => libc::S_IFREG,
            FileKind::Directory => libc::S_IFDIR,
            FileKind::Symlink => libc::S_IFLNK,
            FileKind::Fifo => libc::S_IFIFO,
            FileKind::Socket => libc::S_IFSOCK,
            FileKind::CharDevice => libc::S_IFCHR,
            FileKind::BlockDevice => libc::S_IFBLK,
        }
    }
    pub fn from_mode(mode: u32) -> Option<FileKind> {
        match mode & libc::S_IFMT {
            libc::S_IFREG => Some(FileKind::File),
            libc::S_IFDIR => Some(FileKind::Directory),
            libc::S_IFLNK => Some(FileKind::Symlink),
            libc::S_IFIFO => Some(FileKind::Fifo),
            libc::S_IFSOCK => Some(FileKind::Socket),
            libc::S_IFCHR => Some(FileKind::CharDevice),
            libc::S_IFBLK => Some(FileKind::BlockDevice),
            _ => None,
        }
    }

    /// A FIFO, socket or device: no bytes, never opened for I/O by SFS.
    pub fn is_special(self) -> bool {
        matches!(
            self,
            FileKind::Fifo | FileKind::Socket | FileKind::CharDevice | FileKind::BlockDevice
        )
    }

    /// A device, whose entry keeps its number ([`Metadata::rdev`]).
    pub fn is_device(self) -> bool {
        matches!(self, FileKind::CharDevice | FileKind::BlockDevice)
    }
}

/// A metadata entry. Times are nanoseconds since the Unix epoch.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Metadata {
    /// Full `st_mode`: type bits and permission bits.
    pub mode: u32,
    pub uid: u32,
    pub gid: u32,
    pub nlink: u32,
    pub size: u64,
    pub id: FileId,
    pub atime_ns: i64,
    pub mtime_ns: i64,
    pub ctime_ns: i64,
    /// Target of a symlink; empty otherwise.
    pub link_target: String,
    /// Cache mode (docs/staging.md): the path under `backing_dir` whose
    /// bytes this file started with, for offsets below `source_len`
    /// (read through by the data servers on first access); empty for a
    /// file SFS made. Kept across renames.
    pub source: String,
    /// Bytes of `source` that are this file's: its size when it was taken
    /// into SFS, lowered by every truncate below it.
    pub source_len: u64,
    /// Extended attributes (`user.*`, `trusted.*`, `security.*`; see
    /// [`XattrNamespace`]): full names and values, sorted by name, each
    /// name once. They live in the entry, so a rename moves them and a
    /// hard-linked file keeps them in its shared entry.
    pub xattrs: Vec<(Vec<u8>, Vec<u8>)>,
}

/// The longest extended attribute name (ERANGE beyond), as Linux's
/// `XATTR_NAME_MAX`.
pub const XATTR_NAME_MAX: usize = 255;
/// The largest extended attribute value (E2BIG beyond), as Linux's
/// `XATTR_SIZE_MAX`.
pub const XATTR_SIZE_MAX: usize = 65_536;
/// The most bytes of names and values one entry holds (ENOSPC beyond):
/// they travel with every stat of the entry, so they stay small (ext4
/// holds one 4 KiB block of them without `ea_inode`).
pub const XATTRS_MAX_TOTAL: usize = 65_536;

/// The namespaces of extended attribute names, as Linux divides them.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum XattrNamespace {
    /// `user.*`: regular files and directories only; read and write
    /// permission of the file decide.
    User,
    /// `trusted.*`: root only (`CAP_SYS_ADMIN`); hidden from others.
    Trusted,
    /// `security.*`: anyone reads, root writes (`CAP_SYS_ADMIN`, as Linux
    /// without a security module that claims the name).
    Security,
    /// `system.*` (POSIX ACLs and the like): not kept by SFS (EOPNOTSUPP).
    System,
}

impl XattrNamespace {
    /// The namespace of `name`; `None` for a name in none of them
    /// (EOPNOTSUPP, as Linux).
    pub fn of(name: &[u8]) -> Option<XattrNamespace> {
        [
            (&b"user."[..], XattrNamespace::User),
            (b"trusted.", XattrNamespace::Trusted),
            (b"security.", XattrNamespace::Security),
            (b"system.", XattrNamespace::System),
        ]
        .into_iter()
        .find(|(prefix, _)| name.starts_with(prefix))
        .map(|(_, ns)| ns)
    }
}

/// setxattr(2)'s flags, as the protocol carries them
/// (`SetXattrRequest.flags`).
pub const XATTR_CREATE: u32 = 1;
pub const XATTR_REPLACE: u32 = 2;

/// What `setxattr(2)`'s flags ask of an existing (or missing) attribute.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum XattrSet {
    /// No flag: create or replace.
    Either,
    /// `XATTR_CREATE`: EEXIST when the name exists.
    Create,
    /// `XATTR_REPLACE`: ENODATA when it does not.
    Replace,
}

impl XattrSet {
    /// The request of setxattr(2)'s `flags`; `None` for any other value
    /// (EINVAL).
    pub fn from_flags(flags: u32) -> Option<XattrSet> {
        match flags {
            0 => Some(XattrSet::Either),
            XATTR_CREATE => Some(XattrSet::Create),
            XATTR_REPLACE => Some(XattrSet::Replace),
            _ => None,
        }
    }
}

/// Hard links (docs/architecture.md, "Hard links"). A file with one name
/// keeps its attributes in the entry of that name, as every entry does. Its
/// first `link` moves them to a *shared entry* at [`shared_path`] of its
/// id, a hidden name in the root that is placed, stored and updated like
/// any other entry, and turns each name into a *name entry*: a copy of the
/// attributes at the time it was made, with `nlink` 0, which is what marks
/// it ([`Metadata::is_name_of_shared`]). Readers that find a name entry
/// read the shared one; a server asked to change a name entry answers
/// [`crate::Errno::EREMCHG`] so that the change goes there. The shared
/// entry counts the names in `nlink` and goes with the last one.
pub const SHARED_PREFIX: &str = ".sfs-inode-";

/// Where the attributes of the hard-linked file `id` live.
pub fn shared_path(id: FileId) -> String {
    format!("/{SHARED_PREFIX}{:032x}", id.0)
}

/// The most names a file can have (`link` beyond it: EMLINK), as ext4.
pub const LINK_MAX: u32 = 65_000;

const ENCODING_V1: u8 = 1;
/// Version 1 followed by `source_len` (u64) and `source` (u32 length and
/// bytes); written only for an entry with a source, so every other entry
/// keeps its version 1 bytes.
const ENCODING_V2: u8 = 2;
/// Version 2's fields (the source section always, perhaps empty) followed
/// by the extended attributes: a u32 count, then per attribute a u8 name
/// length, the name, a u32 value length and the value. Written only for an
/// entry with attributes.
const ENCODING_V3: u8 = 3;
const FIXED_V1: usize = 1 + 4 * 4 + 8 + 16 + 8 * 3 + 4;

impl Metadata {
    /// A new entry of `kind` with permission bits `perm`, all times `now_ns`.
    pub fn new(kind: FileKind, perm: u32, id: FileId, now_ns: i64) -> Self {
        Metadata {
            mode: kind.type_bits() | (perm & 0o7777),
            uid: 0,
            gid: 0,
            nlink: if kind == FileKind::Directory { 2 } else { 1 },
            size: 0,
            id,
            atime_ns: now_ns,
            mtime_ns: now_ns,
            ctime_ns: now_ns,
            link_target: String::new(),
            source: String::new(),
            source_len: 0,
            xattrs: Vec::new(),
        }
    }

    /// This entry without its extended attributes, link target and
    /// source: what a permission check of an entry below it needs, small
    /// enough to keep many of.
    pub fn without_contents(self) -> Self {
        Metadata {
            link_target: String::new(),
            source: String::new(),
            xattrs: Vec::new(),
            ..self
        }
    }

    /// The value of extended attribute `name`, if set.
    pub fn xattr(&self, name: &[u8]) -> Option<&[u8]> {
        self.xattrs
            .binary_search_by(|(n, _)| n.as_slice().cmp(name))
            .ok()
            .map(|i| self.xattrs[i].1.as_slice())
    }

    /// Bytes of names and values of the extended attributes (what
    /// [`XATTRS_MAX_TOTAL`] bounds).
    pub fn xattrs_size(&self) -> usize {
        self.xattrs.iter().map(|(n, v)| n.len() + v.len()).sum()
    }

    /// Sets (`Some`) or removes (`None`) extended attribute `name`,
    /// keeping the list sorted.
    pub fn put_xattr(&mut self, name: &[u8], value: Option<&[u8]>) {
        let at = self
            .xattrs
            .binary_search_by(|(n, _)| n.as_slice().cmp(name));
        match (at, value) {
            (Ok(i), Some(v)) => self.xattrs[i].1 = v.to_vec(),
            (Ok(i), None) => {
                self.xattrs.remove(i);
            }
            (Err(i), Some(v)) => self.xattrs.insert(i, (name.to_vec(), v.to_vec())),
            (Err(_), None) => {}
        }
    }

    pub fn kind(&self) -> FileKind {
        FileKind::from_mode(self.mode).unwrap_or(FileKind::File)
    }
    pub fn is_dir(&self) -> bool {
        self.kind() == FileKind::Directory
    }

    /// A name of a hard-linked file: its attributes (beyond the type and
    /// id) are those of the shared entry at [`shared_path`] of its id, not
    /// these ([`SHARED_PREFIX`]).
    pub fn is_name_of_shared(&self) -> bool {
        self.nlink == 0 && !self.is_dir()
    }

    /// The name entry of this (non-directory) entry once it is shared: the
    /// same type, id and attributes, `nlink` 0.
    pub fn as_name_of_shared(&self) -> Metadata {
        Metadata {
            nlink: 0,
            ..self.clone()
        }
    }

    /// `st_rdev`: a device's number, kept in `size` (a device has no
    /// bytes); 0 for every other kind.
    pub fn rdev(&self) -> u64 {
        if self.kind().is_device() {
            self.size
        } else {
            0
        }
    }

    /// `st_size`: 0 for a device (whose `size` holds its number).
    pub fn st_size(&self) -> u64 {
        if self.kind().is_device() {
            0
        } else {
            self.size
        }
    }

    /// Versioned little-endian encoding (what RocksDB stores).
    pub fn encode(&self) -> Vec<u8> {
        let mut out = Vec::with_capacity(FIXED_V1 + self.link_target.len());
        out.push(if !self.xattrs.is_empty() {
            ENCODING_V3
        } else if !self.source.is_empty() {
            ENCODING_V2
        } else {
            ENCODING_V1
        });
        for v in [self.mode, self.uid, self.gid, self.nlink] {
            out.extend_from_slice(&v.to_le_bytes());
        }
        out.extend_from_slice(&self.size.to_le_bytes());
        out.extend_from_slice(&self.id.0.to_le_bytes());
        for t in [self.atime_ns, self.mtime_ns, self.ctime_ns] {
            out.extend_from_slice(&t.to_le_bytes());
        }
        out.extend_from_slice(&(self.link_target.len() as u32).to_le_bytes());
        out.extend_from_slice(self.link_target.as_bytes());
        if !self.source.is_empty() || !self.xattrs.is_empty() {
            out.extend_from_slice(&self.source_len.to_le_bytes());
            out.extend_from_slice(&(self.source.len() as u32).to_le_bytes());
            out.extend_from_slice(self.source.as_bytes());
        }
        if !self.xattrs.is_empty() {
            encode_xattrs(&self.xattrs, &mut out);
        }
        out
    }

    /// Decodes [`Metadata::encode`]'s output; refuses anything else with EIO.
    pub fn decode(bytes: &[u8]) -> SfsResult<Metadata> {
        let corrupt = |why: &str| SfsError::io(format!("corrupt metadata entry: {why}"));
        let version = bytes.first().copied().unwrap_or(0);
        if !(ENCODING_V1..=ENCODING_V3).contains(&version) {
            return Err(corrupt("unknown encoding version"));
        }
        if bytes.len() < FIXED_V1 {
            return Err(corrupt("too short"));
        }
        let mut r = Reader { bytes, pos: 1 };
        let mode = r.u32();
        let uid = r.u32();
        let gid = r.u32();
        let nlink = r.u32();
        let size = r.u64();
        let id = FileId(r.u128());
        let atime_ns = r.u64() as i64;
        let mtime_ns = r.u64() as i64;
        let ctime_ns = r.u64() as i64;
        let target_len = r.u32() as usize;
        let link_target = r
            .bytes(target_len)
            .and_then(|b| String::from_utf8(b.to_vec()).ok())
            .ok_or_else(|| corrupt("link target cut short or not UTF-8"))?;
        let (mut source, mut source_len) = (String::new(), 0);
        if version >= ENCODING_V2 {
            source_len = r.checked_u64().ok_or_else(|| corrupt("source cut short"))?;
            let len = r.checked_u32().ok_or_else(|| corrupt("source cut short"))? as usize;
            if len == 0 && version == ENCODING_V2 {
                return Err(corrupt("empty source"));
            }
            source = r
                .bytes(len)
                .and_then(|b| String::from_utf8(b.to_vec()).ok())
                .ok_or_else(|| corrupt("source cut short or not UTF-8"))?;
        }
        let mut xattrs = Vec::new();
        if version == ENCODING_V3 {
            xattrs = decode_xattrs(&bytes[r.pos..])
                .ok_or_else(|| corrupt("extended attributes cut short or out of order"))?;
        } else if r.pos != bytes.len() {
            return Err(corrupt("bytes left over"));
        }
        Ok(Metadata {
            mode,
            uid,
            gid,
            nlink,
            size,
            id,
            atime_ns,
            mtime_ns,
            ctime_ns,
            link_target,
            source,
            source_len,
            xattrs,
        })
    }
}

/// Appends the encoding of extended attributes (sorted, names of
/// 1..=[`XATTR_NAME_MAX`] bytes): a u32 count, then per attribute a u8 name
/// length, the name, a u32 value length and the value. What version 3 of
/// an entry ends with, and what the protocol's `Entry.xattrs` carries (one
/// `bytes` field, so that decoding a request costs no more memory than its
/// size allows: docs/security.md, "Fuzzing").
pub fn encode_xattrs(xattrs: &[(Vec<u8>, Vec<u8>)], out: &mut Vec<u8>) {
    out.extend_from_slice(&(xattrs.len() as u32).to_le_bytes());
    for (name, value) in xattrs {
        let name = &name[..name.len().min(XATTR_NAME_MAX)];
        out.push(name.len() as u8);
        out.extend_from_slice(name);
        out.extend_from_slice(&(value.len() as u32).to_le_bytes());
        out.extend_from_slice(value);
    }
}

/// [`encode_xattrs`]'s output, all of `bytes`, back; `None` for anything
/// else: cut short, bytes left over, names empty or out of order, or
/// names and values past [`XATTRS_MAX_TOTAL`].
pub fn decode_xattrs(bytes: &[u8]) -> Option<Vec<(Vec<u8>, Vec<u8>)>> {
    let mut r = Reader { bytes, pos: 0 };
    let count = r.checked_u32()?;
    let mut xattrs: Vec<(Vec<u8>, Vec<u8>)> = Vec::new();
    let mut total = 0usize;
    for _ in 0..count {
        let name_len = usize::from(*r.bytes(1)?.first()?);
        let name = r.bytes(name_len)?;
        let value_len = r.checked_u32()? as usize;
        let value = r.bytes(value_len)?;
        total += name.len() + value.len();
        let ordered = xattrs.last().is_none_or(|(last, _)| last.as_slice() < name);
        if name.is_empty() || !ordered || total > XATTRS_MAX_TOTAL {
            return None;
        }
        xattrs.push((name.to_vec(), value.to_vec()));
    }
    (r.pos == bytes.len()).then_some(xattrs)
}

struct Reader<'a> {
    bytes: &'a [u8],
    pos: usize,
}

impl<'a> Reader<'a> {
    fn take<const N: usize>(&mut self) -> [u8; N] {
        let mut a = [0u8; N];
        a.copy_from_slice(&self.bytes[self.pos..self.pos + N]);
        self.pos += N;
        a
    }
    fn u32(&mut self) -> u32 {
        u32::from_le_bytes(self.take())
    }
    fn u64(&mut self) -> u64 {
        u64::from_le_bytes(self.take())
    }
    fn u128(&mut self) -> u128 {
        u128::from_le_bytes(self.take())
    }
    /// The next `len` bytes, if there are that many.
    fn bytes(&mut self, len: usize) -> Option<&'a [u8]> {
        let end = self
            .pos
            .checked_add(len)
            .filter(|&e| e <= self.bytes.len())?;
        let out = &self.bytes[self.pos..end];
        self.pos = end;
        Some(out)
    }
    fn checked_u32(&mut self) -> Option<u32> {
        Some(u32::from_le_bytes(self.bytes(4)?.try_into().ok()?))
    }
    fn checked_u64(&mut self) -> Option<u64> {
        Some(u64::from_le_bytes(self.bytes(8)?.try_into().ok()?))
    }
}

/// A change to an existing entry, merged on the entry's owner.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum MetaUpdate {
    /// A write ended at `end`: size = max(size, end); mtime/ctime advance.
    GrowSize { end: u64, time_ns: i64 },
    /// Truncate (or extend) to exactly `size`.
    SetSize { size: u64, time_ns: i64 },
    /// chmod/chown/utimens; `None` fields stay. ctime becomes `ctime_ns`.
    SetAttr {
        mode: Option<u32>,
        uid: Option<u32>,
        gid: Option<u32>,
        atime_ns: Option<i64>,
        mtime_ns: Option<i64>,
        ctime_ns: i64,
    },
    /// setxattr/removexattr: extended attribute `name` becomes `value`
    /// (`None`: removed); ctime becomes `ctime_ns`. The server checks the
    /// flags and limits under the entry's lock before it merges this.
    SetXattr {
        name: Vec<u8>,
        value: Option<Vec<u8>>,
        ctime_ns: i64,
    },
}

const TAG_GROW: u8 = 1;
const TAG_SET_SIZE: u8 = 2;
const TAG_SET_ATTR: u8 = 3;
const TAG_SET_XATTR: u8 = 4;

impl MetaUpdate {
    pub fn encode(&self) -> Vec<u8> {
        let mut out = Vec::with_capacity(48);
        match self {
            MetaUpdate::GrowSize { end, time_ns } => {
                out.push(TAG_GROW);
                out.extend_from_slice(&end.to_le_bytes());
                out.extend_from_slice(&time_ns.to_le_bytes());
            }
            MetaUpdate::SetSize { size, time_ns } => {
                out.push(TAG_SET_SIZE);
                out.extend_from_slice(&size.to_le_bytes());
                out.extend_from_slice(&time_ns.to_le_bytes());
            }
            MetaUpdate::SetAttr {
                mode,
                uid,
                gid,
                atime_ns,
                mtime_ns,
                ctime_ns,
            } => {
                out.push(TAG_SET_ATTR);
                let present = u8::from(mode.is_some())
                    | u8::from(uid.is_some()) << 1
                    | u8::from(gid.is_some()) << 2
                    | u8::from(atime_ns.is_some()) << 3
                    | u8::from(mtime_ns.is_some()) << 4;
                out.push(present);
                for v in [mode.unwrap_or(0), uid.unwrap_or(0), gid.unwrap_or(0)] {
                    out.extend_from_slice(&v.to_le_bytes());
                }
                for t in [atime_ns.unwrap_or(0), mtime_ns.unwrap_or(0), *ctime_ns] {
                    out.extend_from_slice(&t.to_le_bytes());
                }
            }
            MetaUpdate::SetXattr {
                name,
                value,
                ctime_ns,
            } => {
                out.push(TAG_SET_XATTR);
                out.extend_from_slice(&ctime_ns.to_le_bytes());
                out.push(name.len().min(XATTR_NAME_MAX) as u8);
                out.extend_from_slice(&name[..name.len().min(XATTR_NAME_MAX)]);
                if let Some(value) = value {
                    out.extend_from_slice(&(value.len() as u32).to_le_bytes());
                    out.extend_from_slice(value);
                }
            }
        }
        out
    }

    pub fn decode(bytes: &[u8]) -> SfsResult<MetaUpdate> {
        let corrupt = || SfsError::io("corrupt metadata update");
        let (&tag, rest) = bytes.split_first().ok_or_else(corrupt)?;
        let mut r = Reader {
            bytes: rest,
            pos: 0,
        };
        match tag {
            TAG_GROW | TAG_SET_SIZE if rest.len() == 16 => {
                let a = r.u64();
                let t = r.u64() as i64;
                Ok(if tag == TAG_GROW {
                    MetaUpdate::GrowSize { end: a, time_ns: t }
                } else {
                    MetaUpdate::SetSize {
                        size: a,
                        time_ns: t,
                    }
                })
            }
            TAG_SET_ATTR if rest.len() == 1 + 12 + 24 => {
                let present = rest[0];
                r.pos = 1;
                let (mode, uid, gid) = (r.u32(), r.u32(), r.u32());
                let (at, mt, ct) = (r.u64() as i64, r.u64() as i64, r.u64() as i64);
                let has = |bit: u8| present & (1 << bit) != 0;
                Ok(MetaUpdate::SetAttr {
                    mode: has(0).then_some(mode),
                    uid: has(1).then_some(uid),
                    gid: has(2).then_some(gid),
                    atime_ns: has(3).then_some(at),
                    mtime_ns: has(4).then_some(mt),
                    ctime_ns: ct,
                })
            }
            TAG_SET_XATTR => (|| {
                let ctime_ns = r.checked_u64()? as i64;
                let name_len = usize::from(*r.bytes(1)?.first()?);
                let name = r.bytes(name_len)?.to_vec();
                let value = if r.pos == rest.len() {
                    None
                } else {
                    let len = r.checked_u32()? as usize;
                    Some(r.bytes(len)?.to_vec())
                };
                (r.pos == rest.len() && !name.is_empty()).then_some(MetaUpdate::SetXattr {
                    name,
                    value,
                    ctime_ns,
                })
            })()
            .ok_or_else(corrupt),
            _ => Err(corrupt()),
        }
    }

    /// Applies this update to an entry.
    pub fn apply(&self, md: &mut Metadata) {
        match *self {
            MetaUpdate::GrowSize { end, time_ns } => {
                md.size = md.size.max(end);
                md.mtime_ns = md.mtime_ns.max(time_ns);
                md.ctime_ns = md.ctime_ns.max(time_ns);
            }
            MetaUpdate::SetSize { size, time_ns } => {
                md.size = size;
                // Bytes cut off are not the source's any more, also after
                // the file grows again.
                md.source_len = md.source_len.min(size);
                md.mtime_ns = time_ns;
                md.ctime_ns = time_ns;
            }
            MetaUpdate::SetAttr {
                mode,
                uid,
                gid,
                atime_ns,
                mtime_ns,
                ctime_ns,
            } => {
                if let Some(m) = mode {
                    md.mode = (md.mode & libc::S_IFMT) | (m & 0o7777);
                }
                if let Some(u) = uid {
                    md.uid = u;
                }
                if let Some(g) = gid {
                    md.gid = g;
                }
                if let Some(t) = atime_ns {
                    md.atime_ns = t;
                }
                if let Some(t) = mtime_ns {
                    md.mtime_ns = t;
                }
                md.ctime_ns = ctime_ns;
            }
            MetaUpdate::SetXattr {
                ref name,
                ref value,
                ctime_ns,
            } => {
                md.put_xattr(name, value.as_deref());
                md.ctime_ns = ctime_ns;
            }
        }
    }
}

/// Folds encoded updates into an encoded entry (the server's full merge).
///
/// An absent or empty base means the entry was removed while updates were in
/// flight: the result is the empty value, which readers treat as "no entry",
/// so a late size update can never resurrect a removed file. Undecodable
/// operands are skipped (they cannot come from a valid client; the server
/// validates updates before merging).
pub fn apply_updates<'a>(
    base: Option<&[u8]>,
    operands: impl IntoIterator<Item = &'a [u8]>,
) -> Vec<u8> {
    let Some(base) = base.filter(|b| !b.is_empty()) else {
        return Vec::new();
    };
    let Ok(mut md) = Metadata::decode(base) else {
        return base.to_vec();
    };
    for op in operands {
        if let Ok(update) = MetaUpdate::decode(op) {
            update.apply(&mut md);
        }
    }
    md.encode()
}

/// Combines a run of operands into one when all are size growths (the
/// common N-to-1 case); `None` when they cannot be combined.
pub fn combine_updates<'a>(operands: impl IntoIterator<Item = &'a [u8]>) -> Option<Vec<u8>> {
    let mut end = 0u64;
    let mut time = i64::MIN;
    for op in operands {
        match MetaUpdate::decode(op).ok()? {
            MetaUpdate::GrowSize { end: e, time_ns } => {
                end = end.max(e);
                time = time.max(time_ns);
            }
            _ => return None,
        }
    }
    Some(MetaUpdate::GrowSize { end, time_ns: time }.encode())
}

/// Key of a path's entry: `parent \0 name`, so the children of a directory
/// are exactly the keys with prefix [`children_prefix`]. The root's key is `\0`.
pub fn entry_key(path: &str) -> Vec<u8> {
    match crate::path::split_parent(path) {
        None => vec![0],
        Some((parent, name)) => {
            let mut k = Vec::with_capacity(path.len() + 1);
            k.extend_from_slice(parent.as_bytes());
            k.push(0);
            k.extend_from_slice(name.as_bytes());
            k
        }
    }
}

/// Prefix shared by the keys of the direct children of `dir`.
pub fn children_prefix(dir: &str) -> Vec<u8> {
    let mut k = dir.as_bytes().to_vec();
    k.push(0);
    k
}

/// Prefix shared by the keys of entries two or more levels below `dir`
/// (their parent path starts with `dir/`). For the root this is `/`.
pub fn deep_descendants_prefix(dir: &str) -> Vec<u8> {
    if dir == "/" {
        b"/".to_vec()
    } else {
        let mut k = dir.as_bytes().to_vec();
        k.push(b'/');
        k
    }
}

/// The path a key names (inverse of [`entry_key`]); `None` if malformed.
pub fn path_of_key(key: &[u8]) -> Option<String> {
    if key == [0] {
        return Some("/".to_string());
    }
    let sep = key.iter().position(|&b| b == 0)?;
    let parent = std::str::from_utf8(&key[..sep]).ok()?;
    let name = std::str::from_utf8(&key[sep + 1..]).ok()?;
    Some(crate::path::join(parent, name))
}

#[cfg(test)]
mod tests {
    use super::*;
    use proptest::prelude::*;

    fn sample() -> Metadata {
        let mut m = Metadata::new(FileKind::Symlink, 0o777, FileId::from_parts(1, 2), 99);
        m.link_target = "../target".into();
        m.size = 9;
        m
    }

    #[test]
    fn encoding_round_trips_and_refuses_garbage() {
        let m = sample();
        assert_eq!(Metadata::decode(&m.encode()).unwrap(), m);
        assert!(Metadata::decode(&[]).is_err());
        assert!(Metadata::decode(&[2, 0, 0]).is_err());
        let mut truncated = m.encode();
        truncated.pop();
        assert!(Metadata::decode(&truncated).is_err());
        assert_eq!(m.kind(), FileKind::Symlink);
        assert_eq!(
            FileId::from_parts(1, 2).to_hex(),
            format!("{:016x}{:016x}", 1, 2)
        );
    }

    #[test]
    fn extended_attributes_are_encoded_only_when_there_are_some() {
        let mut m = Metadata::new(FileKind::File, 0o644, FileId(7), 5);
        let v1 = m.encode();
        MetaUpdate::SetXattr {
            name: b"user.b".to_vec(),
            value: Some(b"2".to_vec()),
            ctime_ns: 6,
        }
        .apply(&mut m);
        m.put_xattr(b"user.a", Some(b""));
        m.put_xattr(b"user.c", Some(&[0, 255, 10]));
        assert_eq!(m.ctime_ns, 6);
        let names: Vec<&[u8]> = m.xattrs.iter().map(|(n, _)| n.as_slice()).collect();
        assert_eq!(names, [&b"user.a"[..], b"user.b", b"user.c"], "kept sorted");
        assert_eq!(m.xattr(b"user.c"), Some(&[0u8, 255, 10][..]));
        assert_eq!(m.xattr(b"user.d"), None);
        assert_eq!(m.xattrs_size(), 18 + 4);
        let v3 = m.encode();
        assert_eq!(v3[0], ENCODING_V3);
        assert_eq!(Metadata::decode(&v3).unwrap(), m);
        for cut in 1..v3.len() - v1.len() {
            assert!(
                Metadata::decode(&v3[..v3.len() - cut]).is_err(),
                "cut {cut}"
            );
        }
        m.source = "/in/x".into();
        m.source_len = 3;
        assert_eq!(Metadata::decode(&m.encode()).unwrap(), m, "with a source");
        // The protocol's form: the same list, refused when out of order or
        // past the bound.
        let mut list = Vec::new();
        encode_xattrs(&m.xattrs, &mut list);
        assert_eq!(decode_xattrs(&list).unwrap(), m.xattrs);
        let mut swapped = Vec::new();
        encode_xattrs(&[m.xattrs[1].clone(), m.xattrs[0].clone()], &mut swapped);
        assert_eq!(decode_xattrs(&swapped), None);
        let mut big = Vec::new();
        let huge = vec![0u8; XATTRS_MAX_TOTAL];
        encode_xattrs(&[(b"user.a".to_vec(), huge)], &mut big);
        assert_eq!(decode_xattrs(&big), None);
        assert_eq!(decode_xattrs(&list[..list.len() - 1]), None);
        m.source.clear();
        m.source_len = 0;
        MetaUpdate::SetXattr {
            name: b"user.b".to_vec(),
            value: None,
            ctime_ns: 7,
        }
        .apply(&mut m);
        m.put_xattr(b"user.a", None);
        m.put_xattr(b"user.c", None);
        assert_eq!(
            m.encode(),
            {
                let mut back = v1.clone();
                back[1 + 4 * 4 + 8 + 16 + 8 * 2..][..8].copy_from_slice(&7i64.to_le_bytes());
                back
            },
            "without attributes: version 1 again"
        );
    }

    #[test]
    fn a_source_is_encoded_only_when_there_is_one_and_truncates_lower_it() {
        let mut m = Metadata::new(FileKind::File, 0o644, FileId(7), 5);
        m.size = 100;
        let v1 = m.encode();
        assert_eq!(
            v1[0], ENCODING_V1,
            "entries without a source keep version 1"
        );
        m.source = "/in/data.bin".into();
        m.source_len = 100;
        let v2 = m.encode();
        assert_eq!(v2[0], ENCODING_V2);
        assert_eq!(Metadata::decode(&v2).unwrap(), m);
        for cut in 1..v2.len() - v1.len() {
            assert!(
                Metadata::decode(&v2[..v2.len() - cut]).is_err(),
                "cut {cut}"
            );
        }
        let mut longer = v2.clone();
        longer.push(b'x');
        assert!(Metadata::decode(&longer).is_err());
        MetaUpdate::SetSize {
            size: 40,
            time_ns: 9,
        }
        .apply(&mut m);
        assert_eq!(m.source_len, 40);
        MetaUpdate::GrowSize {
            end: 80,
            time_ns: 10,
        }
        .apply(&mut m);
        assert_eq!(
            (m.size, m.source_len),
            (80, 40),
            "growth adds no source bytes"
        );
    }

    #[test]
    fn keys_group_children() {
        assert_eq!(entry_key("/"), vec![0]);
        assert_eq!(entry_key("/a"), b"/\0a".to_vec());
        assert_eq!(entry_key("/a/b"), b"/a\0b".to_vec());
        assert!(entry_key("/a/b").starts_with(&children_prefix("/a")));
        assert!(!entry_key("/a/b/c").starts_with(&children_prefix("/a")));
        assert!(entry_key("/a/b/c").starts_with(&deep_descendants_prefix("/a")));
        assert!(!entry_key("/ab/c").starts_with(&deep_descendants_prefix("/a")));
        for p in ["/", "/a", "/a/b/c"] {
            assert_eq!(path_of_key(&entry_key(p)).unwrap(), p);
        }
    }

    #[test]
    fn removed_entries_stay_removed() {
        let grow = MetaUpdate::GrowSize { end: 5, time_ns: 1 }.encode();
        assert!(apply_updates(None, [grow.as_slice()]).is_empty());
        assert!(apply_updates(Some(&[]), [grow.as_slice()]).is_empty());
    }

    #[test]
    fn attrs_keep_the_type() {
        let mut m = Metadata::new(FileKind::File, 0o644, FileId(1), 0);
        MetaUpdate::SetAttr {
            mode: Some(0o100_700 | libc::S_IFDIR),
            uid: Some(7),
            gid: None,
            atime_ns: None,
            mtime_ns: Some(5),
            ctime_ns: 6,
        }
        .apply(&mut m);
        assert_eq!(m.mode, libc::S_IFREG | 0o700);
        assert_eq!((m.uid, m.gid, m.mtime_ns, m.ctime_ns), (7, 0, 5, 6));
    }

    fn update() -> impl Strategy<Value = MetaUpdate> {
        prop_oneof![
            (0u64..1 << 40, 0i64..1000)
                .prop_map(|(end, time_ns)| MetaUpdate::GrowSize { end, time_ns }),
            (0u64..1 << 40, 0i64..1000)
                .prop_map(|(size, time_ns)| MetaUpdate::SetSize { size, time_ns }),
            (
                proptest::option::of(0u32..0o7777),
                proptest::option::of(0u32..10),
                0i64..1000
            )
                .prop_map(|(mode, uid, c)| MetaUpdate::SetAttr {
                    mode,
                    uid,
                    gid: None,
                    atime_ns: None,
                    mtime_ns: None,
                    ctime_ns: c
                }),
            (
                proptest::collection::vec(any::<u8>(), 1..XATTR_NAME_MAX),
                proptest::option::of(proptest::collection::vec(any::<u8>(), 0..40)),
                0i64..1000
            )
                .prop_map(|(name, value, ctime_ns)| MetaUpdate::SetXattr {
                    name,
                    value,
                    ctime_ns
                }),
        ]
    }

    proptest! {
        /// Concurrent writers: whatever order their size updates arrive in,
        /// and however RocksDB groups them, the size is the largest end.
        #[test]
        fn size_merge_is_order_independent(ends in proptest::collection::vec(0u64..1 << 40, 1..20), split_at in 0usize..20) {
            let base = Metadata::new(FileKind::File, 0o644, FileId(1), 0).encode();
            let ops: Vec<Vec<u8>> = ends.iter().map(|&end| MetaUpdate::GrowSize { end, time_ns: 1 }.encode()).collect();
            let forward = apply_updates(Some(&base), ops.iter().map(Vec::as_slice));
            let backward = apply_updates(Some(&base), ops.iter().rev().map(Vec::as_slice));
            let k = split_at.min(ops.len());
            let combined = combine_updates(ops[..k].iter().map(Vec::as_slice));
            let grouped: Vec<Vec<u8>> = combined.into_iter().chain(ops[k..].iter().cloned()).collect();
            let grouped = apply_updates(Some(&base), grouped.iter().map(Vec::as_slice));
            let want = *ends.iter().max().unwrap();
            for result in [forward, backward, grouped] {
                prop_assert_eq!(Metadata::decode(&result).unwrap().size, want);
            }
        }

        #[test]
        fn updates_round_trip(u in update()) {
            prop_assert_eq!(MetaUpdate::decode(&u.encode()).unwrap(), u);
        }

        #[test]
        fn garbage_never_panics(bytes in proptest::collection::vec(any::<u8>(), 0..80)) {
            let _ = Metadata::decode(&bytes);
            let _ = MetaUpdate::decode(&bytes);
            let _ = path_of_key(&bytes);
            let _ = apply_updates(Some(&bytes), [bytes.as_slice()]);
        }
    }
}
