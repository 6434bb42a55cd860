//! The caller's credentials on the wire: every metadata request says whose
//! it is, and the server's handlers read it as a typed [`Caller`]
//! ([`caller_of`]).
//!
//! - Lean RPC: the request header's flag [`FLAG_CALLER`] says the body
//!   starts with a caller block ([`encode_block`]: uid u32 | gid u32 |
//!   group count u16 | groups u32 each, little-endian), then the prost
//!   message.
//! - gRPC: the `sfs-caller` metadata header, `uid:gid` or
//!   `uid:gid:g1,g2,...` in decimal, turned into a request extension by
//!   [`grpc_interceptor`].
//!
//! Both travel in *each request*, not once per connection: a client's
//! connections are shared by every thread of a process and outlive a
//! `setuid`/`setgroups`, so a per-connection credential would be wrong as
//! soon as the process changes its ids (a daemon dropping privileges, `su`
//! run under the shim). The price is 10 bytes plus 4 per supplementary
//! group on each metadata request; the client reads its ids once and keeps
//! them until they may have changed ([`CallerSource`]). The ids are trusted because the
//! connection proved the job secret (`crate::auth`): a client of the job
//! could claim any uid, as NFS's AUTH_SYS lets any client host do.

use sfs_global::access::Caller;
use sfs_global::{Errno, SfsError, SfsResult};
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{Arc, RwLock};
use std::time::{Duration, Instant};

/// Lean request header flag: the body starts with a caller block.
pub const FLAG_CALLER: u16 = 1;

/// gRPC metadata header carrying the caller.
pub const CALLER_HEADER: &str = "sfs-caller";

/// Fixed part of a caller block (uid, gid, group count).
const BLOCK_FIXED: usize = 10;

/// Bytes [`encode_block`] writes for `caller`.
pub fn block_len(caller: &Caller) -> usize {
    BLOCK_FIXED + 4 * caller.groups.len().min(Caller::MAX_GROUPS)
}

/// Appends `caller` as a lean caller block. Groups past
/// [`Caller::MAX_GROUPS`] are left out (the caller then gets less access,
/// never more).
pub fn encode_block(caller: &Caller, out: &mut Vec<u8>) {
    let groups = &caller.groups[..caller.groups.len().min(Caller::MAX_GROUPS)];
    out.extend_from_slice(&caller.uid.to_le_bytes());
    out.extend_from_slice(&caller.gid.to_le_bytes());
    out.extend_from_slice(&(groups.len() as u16).to_le_bytes());
    for g in groups {
        out.extend_from_slice(&g.to_le_bytes());
    }
}

/// Splits a lean body into its caller block and the rest (the prost
/// message); EPROTO when the block is cut short or names too many groups.
pub fn decode_block(body: &[u8]) -> SfsResult<(Caller, &[u8])> {
    let bad = |why: &str| SfsError::new(Errno::EPROTO, format!("lean RPC caller block: {why}"));
    if body.len() < BLOCK_FIXED {
        return Err(bad("shorter than its fixed part"));
    }
    let u32_at = |at: usize| u32::from_le_bytes(body[at..at + 4].try_into().expect("4 bytes"));
    let count = u16::from_le_bytes([body[8], body[9]]) as usize;
    if count > Caller::MAX_GROUPS {
        return Err(bad(&format!(
            "{count} groups, more than {}",
            Caller::MAX_GROUPS
        )));
    }
    let end = BLOCK_FIXED + 4 * count;
    if body.len() < end {
        return Err(bad("its groups are cut short"));
    }
    let caller = Caller {
        uid: u32_at(0),
        gid: u32_at(4),
        groups: (0..count).map(|i| u32_at(BLOCK_FIXED + 4 * i)).collect(),
    };
    Ok((caller, &body[end..]))
}

/// `caller` as the value of the gRPC header.
pub fn header_value(caller: &Caller) -> String {
    let mut value = format!("{}:{}", caller.uid, caller.gid);
    let groups = &caller.groups[..caller.groups.len().min(Caller::MAX_GROUPS)];
    for (i, g) in groups.iter().enumerate() {
        value.push(if i == 0 { ':' } else { ',' });
        value.push_str(&g.to_string());
    }
    value
}

/// Parses the gRPC header's value; EPROTO when malformed.
pub fn parse_header(value: &str) -> SfsResult<Caller> {
    let bad = || {
        SfsError::new(
            Errno::EPROTO,
            format!("malformed {CALLER_HEADER} header {value:?}"),
        )
    };
    let mut parts = value.splitn(3, ':');
    let id = |s: Option<&str>| s.and_then(|s| s.parse::<u32>().ok()).ok_or_else(bad);
    let uid = id(parts.next())?;
    let gid = id(parts.next())?;
    let groups = match parts.next() {
        None => Vec::new(),
        Some(list) => list
            .split(',')
            .map(|g| g.parse::<u32>().map_err(|_| bad()))
            .collect::<SfsResult<Vec<_>>>()?,
    };
    if groups.len() > Caller::MAX_GROUPS {
        return Err(bad());
    }
    Ok(Caller { uid, gid, groups })
}

/// The gRPC server side: moves the `sfs-caller` header into the request's
/// extensions, where [`caller_of`] finds it (as the lean server puts it).
#[allow(clippy::result_large_err)]
pub fn grpc_interceptor(
    mut request: tonic::Request<()>,
) -> Result<tonic::Request<()>, tonic::Status> {
    let Some(value) = request.metadata().get(CALLER_HEADER) else {
        return Ok(request);
    };
    let caller = value
        .to_str()
        .map_err(|_| SfsError::new(Errno::EPROTO, format!("{CALLER_HEADER} is not ASCII")))
        .and_then(parse_header)
        .map_err(|e| crate::status_from_error(&e))?;
    request.extensions_mut().insert(caller);
    Ok(request)
}

/// Whom a request acts for: the caller it carried, or
/// [`Caller::nobody`] when it carried none.
pub fn caller_of<T>(request: &tonic::Request<T>) -> Caller {
    request
        .extensions()
        .get::<Caller>()
        .cloned()
        .unwrap_or_else(Caller::nobody)
}

/// The credentials of this process now: effective uid and gid and the
/// supplementary groups (what the kernel checks local files against;
/// `setfsuid` is not followed).
pub fn of_process() -> Caller {
    Caller {
        uid: rustix::process::geteuid().as_raw(),
        gid: rustix::process::getegid().as_raw(),
        groups: process_groups(),
    }
}

/// The process's supplementary groups: one `getgroups` call into a buffer
/// that holds the usual handful (two calls and an allocation only for a
/// process in more than 32 groups).
fn process_groups() -> Vec<u32> {
    let mut buf = [0 as libc::gid_t; 32];
    // SAFETY: `buf` has room for `buf.len()` ids, the size passed.
    let n = unsafe { libc::getgroups(buf.len() as libc::c_int, buf.as_mut_ptr()) };
    match usize::try_from(n) {
        Ok(n) => buf[..n].to_vec(),
        // EINVAL: more groups than the buffer holds.
        Err(_) => rustix::process::getgroups()
            .map(|groups| groups.into_iter().map(|g| g.as_raw()).collect())
            .unwrap_or_default(),
    }
}

/// How long [`CallerSource`] trusts the process's ids it read without
/// anything saying they changed: a process that changes its ids with a raw
/// system call (not through the libc functions the shim hooks, which call
/// [`ids_changed`]) is seen with its new ids after at most this long.
pub const IDS_REREAD: Duration = Duration::from_secs(1);

/// Bumped by [`ids_changed`]: a cached read of the process's ids taken at
/// another count is stale.
static IDS_GENERATION: AtomicU64 = AtomicU64::new(0);

/// Says that the process's ids may just have changed (the shim's hooks of
/// `setuid`, `setgroups` and the rest call it after libc's function): every
/// [`CallerSource`] reads them again for its next request.
pub fn ids_changed() {
    IDS_GENERATION.fetch_add(1, Ordering::SeqCst);
}

/// The process's ids as last read, and when.
struct ReadIds {
    caller: Arc<Caller>,
    generation: u64,
    at: Instant,
}

/// Where a client takes the caller of each request from: the process's
/// credentials (the default), or fixed ones ([`CallerSource::set`]: a tool
/// acting for a user, tests).
///
/// The process's credentials are read with three system calls (`geteuid`,
/// `getegid`, `getgroups`), which measured about 5 % of a create's time
/// when made for every request; they are kept until [`ids_changed`] is
/// called or for [`IDS_REREAD`], whichever comes first.
pub struct CallerSource {
    fixed: RwLock<Option<Arc<Caller>>>,
    read: RwLock<Option<ReadIds>>,
    /// Reads the process's ids ([`of_process`]; another function in tests).
    reader: fn() -> Caller,
}

impl Default for CallerSource {
    fn default() -> Self {
        CallerSource::reading(of_process)
    }
}

impl std::fmt::Debug for CallerSource {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("CallerSource")
            .field("fixed", &*self.fixed.read().expect("caller lock"))
            .finish_non_exhaustive()
    }
}

impl CallerSource {
    fn reading(reader: fn() -> Caller) -> Self {
        CallerSource {
            fixed: RwLock::new(None),
            read: RwLock::new(None),
            reader,
        }
    }

    /// The caller a request sent now carries.
    pub fn current(&self) -> Arc<Caller> {
        if let Some(caller) = &*self.fixed.read().expect("caller lock") {
            return caller.clone();
        }
        // The count is taken before the ids are read: a change that lands
        // during the read bumps it afterwards, so what is stored here is
        // read again next time.
        let generation = IDS_GENERATION.load(Ordering::SeqCst);
        if let Some(ids) = &*self.read.read().expect("caller lock") {
            if ids.generation == generation && ids.at.elapsed() < IDS_REREAD {
                return ids.caller.clone();
            }
        }
        let caller = Arc::new((self.reader)());
        *self.read.write().expect("caller lock") = Some(ReadIds {
            caller: caller.clone(),
            generation,
            at: Instant::now(),
        });
        caller
    }

    /// Whether a request sent now would carry root's uid.
    pub fn is_root(&self) -> bool {
        self.current().is_root()
    }

    /// Fixes the caller of every later request (`None`: the process's
    /// credentials again).
    pub fn set(&self, caller: Option<Caller>) {
        *self.fixed.write().expect("caller lock") = caller.map(Arc::new);
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn blocks_round_trip_and_keep_the_rest() {
        let caller = Caller {
            uid: 1000,
            gid: 100,
            groups: vec![4, 27, u32::MAX],
        };
        let mut body = Vec::new();
        encode_block(&caller, &mut body);
        assert_eq!(body.len(), block_len(&caller));
        body.extend_from_slice(b"prost");
        let (back, rest) = decode_block(&body).unwrap();
        assert_eq!(back, caller);
        assert_eq!(rest, b"prost");
    }

    #[test]
    fn hostile_blocks_are_refused() {
        assert_eq!(decode_block(&[0; 9]).unwrap_err().errno, Errno::EPROTO);
        let mut block = vec![0u8; 10];
        block[8..10].copy_from_slice(&2u16.to_le_bytes());
        block.extend_from_slice(&[0; 7]); // one group and a half
        assert_eq!(decode_block(&block).unwrap_err().errno, Errno::EPROTO);
        let mut many = vec![0u8; 10];
        many[8..10].copy_from_slice(&u16::MAX.to_le_bytes());
        assert_eq!(decode_block(&many).unwrap_err().errno, Errno::EPROTO);
    }

    #[test]
    fn headers_round_trip_and_garbage_is_refused() {
        for caller in [
            Caller::root(),
            Caller {
                uid: 7,
                gid: 8,
                groups: vec![9, 10],
            },
        ] {
            assert_eq!(parse_header(&header_value(&caller)).unwrap(), caller);
        }
        for bad in ["", "1", "x:1", "1:2:", "1:2:a", "-1:2", "1:2:3,,4"] {
            assert!(parse_header(bad).is_err(), "{bad:?}");
        }
    }

    #[test]
    fn the_process_groups_are_read_in_one_call_as_in_two() {
        let two: Vec<u32> = rustix::process::getgroups()
            .unwrap()
            .into_iter()
            .map(|g| g.as_raw())
            .collect();
        assert_eq!(process_groups(), two);
        let source = CallerSource::default();
        assert_eq!(source.is_root(), of_process().is_root());
        source.set(Some(Caller::nobody()));
        assert!(!source.is_root());
        source.set(Some(Caller::root()));
        assert!(source.is_root());
    }

    #[test]
    fn a_request_without_a_caller_acts_for_nobody() {
        let request = tonic::Request::new(());
        assert_eq!(caller_of(&request), Caller::nobody());
        let mut request = tonic::Request::new(());
        request
            .metadata_mut()
            .insert(CALLER_HEADER, "5:6:7".parse().unwrap());
        let request = grpc_interceptor(request).unwrap();
        assert_eq!(
            caller_of(&request),
            Caller {
                uid: 5,
                gid: 6,
                groups: vec![7]
            }
        );
        let mut bad = tonic::Request::new(());
        bad.metadata_mut()
            .insert(CALLER_HEADER, "five".parse().unwrap());
        assert!(grpc_interceptor(bad).is_err());
    }

    #[test]
    fn the_source_follows_the_process_unless_fixed() {
        let source = CallerSource::default();
        assert_eq!(*source.current(), of_process());
        source.set(Some(Caller::nobody()));
        assert_eq!(*source.current(), Caller::nobody());
        source.set(None);
        assert_eq!(source.current().uid, of_process().uid);
    }

    #[test]
    fn the_process_ids_are_read_again_only_when_they_may_have_changed() {
        static READS: AtomicU64 = AtomicU64::new(0);
        fn counting() -> Caller {
            let n = READS.fetch_add(1, Ordering::SeqCst);
            Caller {
                uid: n as u32,
                gid: 0,
                groups: Vec::new(),
            }
        }
        let source = CallerSource::reading(counting);
        let first = source.current();
        for _ in 0..1000 {
            assert_eq!(source.current(), first, "kept while nothing changed");
        }
        ids_changed();
        let second = source.current();
        assert_ne!(second, first, "read again after ids_changed");
        assert_eq!(source.current(), second);
        std::thread::sleep(IDS_REREAD + Duration::from_millis(50));
        assert_ne!(source.current(), second, "read again after IDS_REREAD");
        // Fixed ids are not read at all.
        let reads = READS.load(Ordering::SeqCst);
        source.set(Some(Caller::nobody()));
        assert_eq!(*source.current(), Caller::nobody());
        assert_eq!(READS.load(Ordering::SeqCst), reads);
    }
}
