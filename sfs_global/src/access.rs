//! Who is asking, and what POSIX lets them do: the permission rules the
//! servers enforce on the entries they own.
//!
//! Every request carries its [`Caller`] (the effective uid and gid and the
//! supplementary groups of the calling process; `sfs_rpc::caller` moves it
//! across the wire). The connection proved the job secret, so the ids are
//! trusted as far as the job's clients are. The functions here are pure:
//! a server looks up the entry, asks one of them, and answers the errno
//! they give — EACCES when mode bits deny an access, EPERM when an
//! operation is reserved to the owner or to root, as POSIX says.
//! docs/semantics.md ("Permissions") says which operation checks what.

use crate::error::{Errno, SfsError, SfsResult};
use crate::metadata::{FileKind, Metadata, XattrNamespace, XATTR_NAME_MAX};

/// Read permission (the `r` bit), as `R_OK`.
pub const MAY_READ: u32 = 4;
/// Write permission (the `w` bit), as `W_OK`.
pub const MAY_WRITE: u32 = 2;
/// Execute permission of a file, search permission of a directory (the
/// `x` bit), as `X_OK`.
pub const MAY_EXEC: u32 = 1;

/// The user a request acts for.
#[derive(Clone, Debug, PartialEq, Eq, Hash)]
pub struct Caller {
    /// Effective (file system) user id.
    pub uid: u32,
    /// Effective (file system) group id.
    pub gid: u32,
    /// Supplementary groups (may or may not repeat `gid`).
    pub groups: Vec<u32>,
}

impl Caller {
    /// Most supplementary groups a caller may carry (Linux's NGROUPS_MAX
    /// is 65536; real processes have a few dozen at most).
    pub const MAX_GROUPS: usize = 1024;

    /// The superuser.
    pub fn root() -> Caller {
        Caller {
            uid: 0,
            gid: 0,
            groups: Vec::new(),
        }
    }

    /// Who a request that names no caller acts for: the kernel's overflow
    /// user and group (65534), which owns nothing and gets only the
    /// "other" bits.
    pub fn nobody() -> Caller {
        Caller {
            uid: 65534,
            gid: 65534,
            groups: Vec::new(),
        }
    }

    pub fn is_root(&self) -> bool {
        self.uid == 0
    }

    /// Whether `gid` is the caller's group or one of its supplementary ones.
    pub fn in_group(&self, gid: u32) -> bool {
        self.gid == gid || self.groups.contains(&gid)
    }

    /// Whether the caller owns `md` (or is root, who may act as any owner).
    pub fn owns(&self, md: &Metadata) -> bool {
        self.is_root() || self.uid == md.uid
    }
}

/// Bits of `want` (a mask of [`MAY_READ`], [`MAY_WRITE`], [`MAY_EXEC`]) the
/// caller lacks on `md`; 0 means allowed. POSIX's classes: the owner's
/// bits apply to the owner even when the group or other bits would allow
/// more, then the group's, then the others'. Root is granted everything,
/// except that executing a non-directory needs an `x` bit in some class.
/// A symlink's own bits are never checked (the caller follows it).
pub fn missing(md: &Metadata, caller: &Caller, want: u32) -> u32 {
    let want = want & (MAY_READ | MAY_WRITE | MAY_EXEC);
    if want == 0 || md.kind() == FileKind::Symlink {
        return 0;
    }
    if caller.is_root() {
        let executable = md.is_dir() || md.mode & 0o111 != 0;
        return if want & MAY_EXEC != 0 && !executable {
            MAY_EXEC
        } else {
            0
        };
    }
    let granted = if caller.uid == md.uid {
        (md.mode >> 6) & 7
    } else if caller.in_group(md.gid) {
        (md.mode >> 3) & 7
    } else {
        md.mode & 7
    };
    want & !granted
}

/// EACCES unless the caller has every access of `want` on `md` (the entry
/// at `path`).
pub fn check_access(md: &Metadata, caller: &Caller, want: u32, path: &str) -> SfsResult<()> {
    match missing(md, caller, want) {
        0 => Ok(()),
        lacking => Err(SfsError::new(
            Errno::EACCES,
            format!(
                "{path}: permission denied (uid {} lacks {} on mode {:o}, owner {}:{})",
                caller.uid,
                access_names(lacking, md.is_dir()),
                md.mode & 0o7777,
                md.uid,
                md.gid
            ),
        )),
    }
}

/// Linux's rules for extended attribute `name` of `md` (the entry at
/// `path`): whether `caller` may read it (`want` [`MAY_READ`]: getxattr)
/// or change it ([`MAY_WRITE`]: setxattr, removexattr). ERANGE for an
/// empty or too long name, EOPNOTSUPP outside the namespaces SFS keeps;
/// `trusted.*` is root's (others: EPERM to change, ENODATA to read);
/// `security.*` is read by anyone and changed by root; `user.*` exists
/// only on regular files and directories (EPERM to change, ENODATA to
/// read on others), is changed in a sticky directory only by its owner or
/// root (EPERM), and needs read or write permission of the entry (EACCES).
pub fn check_xattr(
    md: &Metadata,
    caller: &Caller,
    name: &[u8],
    want: u32,
    path: &str,
) -> SfsResult<()> {
    let shown = String::from_utf8_lossy(name);
    if name.is_empty() || name.len() > XATTR_NAME_MAX {
        return Err(SfsError::new(
            Errno::ERANGE,
            format!("extended attribute name of {} bytes", name.len()),
        ));
    }
    let write = want & MAY_WRITE != 0;
    let refused = |why: &str| {
        let errno = if write { Errno::EPERM } else { Errno::ENODATA };
        Err(SfsError::new(errno, format!("{path}: {shown}: {why}")))
    };
    match XattrNamespace::of(name) {
        None | Some(XattrNamespace::System) => Err(SfsError::new(
            Errno::ENOTSUP,
            format!("{path}: {shown}: SFS keeps only user.*, trusted.* and security.* attributes"),
        )),
        Some(XattrNamespace::Trusted) if !caller.is_root() => {
            refused("trusted.* attributes are root's")
        }
        Some(XattrNamespace::Security) if write && !caller.is_root() => {
            refused("security.* attributes are changed by root")
        }
        Some(XattrNamespace::Trusted | XattrNamespace::Security) => Ok(()),
        Some(XattrNamespace::User) => {
            if !matches!(md.kind(), FileKind::File | FileKind::Directory) {
                return refused("user.* attributes are kept only on files and directories");
            }
            if write && md.is_dir() && md.mode & libc::S_ISVTX != 0 && !caller.owns(md) {
                return refused("only the owner changes the attributes of a sticky directory");
            }
            check_access(md, caller, want, path)
        }
    }
}

/// Whether `caller` sees extended attribute `name` in a listing
/// (listxattr): `trusted.*` only root, as Linux.
pub fn lists_xattr(caller: &Caller, name: &[u8]) -> bool {
    caller.is_root() || XattrNamespace::of(name) != Some(XattrNamespace::Trusted)
}

/// The rule of a sticky directory: an entry in a directory with the
/// sticky bit (`S_ISVTX`, like /tmp) may be removed or renamed only by the
/// owner of the entry (uid `entry_uid`), the owner of the directory, or
/// root; EPERM otherwise. `parent_mode` and `parent_uid` are the
/// directory's mode and owner.
pub fn check_sticky(
    parent_mode: u32,
    parent_uid: u32,
    entry_uid: u32,
    caller: &Caller,
    path: &str,
) -> SfsResult<()> {
    if parent_mode & libc::S_ISVTX == 0
        || caller.is_root()
        || caller.uid == entry_uid
        || caller.uid == parent_uid
    {
        return Ok(());
    }
    Err(SfsError::new(
        Errno::EPERM,
        format!(
            "{path}: operation not permitted (the directory is sticky and uid {} owns \
             neither the entry, owned by {entry_uid}, nor the directory, owned by {parent_uid})",
            caller.uid
        ),
    ))
}

/// A change of attributes asked by chmod, chown or utimens (`None` leaves
/// a field as it is).
#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub struct AttrChange {
    pub mode: Option<u32>,
    pub uid: Option<u32>,
    pub gid: Option<u32>,
    pub atime_ns: Option<i64>,
    pub mtime_ns: Option<i64>,
    /// Both times to the current time (utimensat with NULL times or both
    /// `UTIME_NOW`): allowed with write permission, not only to the owner.
    pub times_now: bool,
}

/// Checks `change` against `md` (the entry at `path`) for `caller`, and
/// adjusts it as POSIX (and Linux) do: EPERM for a chmod or an explicit
/// utimens by anyone but the owner or root, for a change of owner by
/// anyone but root, and for a change of group by anyone but the owner (to
/// a group the owner is in) or root; EACCES for a utimens to "now" by
/// someone who is neither the owner nor has write permission.
///
/// The adjustments: a chmod by someone not in the file's group drops
/// `S_ISGID`; a chown of a non-directory clears `S_ISUID`, and `S_ISGID`
/// when the group may execute (whoever asks, as Linux does).
pub fn check_set_attr(
    md: &Metadata,
    caller: &Caller,
    change: &mut AttrChange,
    path: &str,
) -> SfsResult<()> {
    let not_permitted = |what: &str| {
        SfsError::new(
            Errno::EPERM,
            format!(
                "{path}: operation not permitted ({what}; uid {} does not own the entry, \
                 owned by {}:{})",
                caller.uid, md.uid, md.gid
            ),
        )
    };
    if let Some(mode) = change.mode.as_mut() {
        if !caller.owns(md) {
            return Err(not_permitted("chmod"));
        }
        if !caller.is_root() && !caller.in_group(md.gid) {
            *mode &= !libc::S_ISGID;
        }
    }
    if change.uid.is_some() || change.gid.is_some() {
        let new_uid = change.uid.unwrap_or(md.uid);
        let new_gid = change.gid.unwrap_or(md.gid);
        if !caller.is_root() {
            if caller.uid != md.uid {
                return Err(not_permitted("chown"));
            }
            if new_uid != md.uid {
                return Err(SfsError::new(
                    Errno::EPERM,
                    format!(
                        "{path}: operation not permitted (only root may give an entry \
                         to another user, here {new_uid})"
                    ),
                ));
            }
            if new_gid != md.gid && !caller.in_group(new_gid) {
                return Err(SfsError::new(
                    Errno::EPERM,
                    format!(
                        "{path}: operation not permitted (uid {} is not in group {new_gid})",
                        caller.uid
                    ),
                ));
            }
        }
        if md.kind() == FileKind::File {
            let base = change.mode.unwrap_or(md.mode & 0o7777);
            let cleared = without_privileges(base);
            if cleared != base {
                change.mode = Some(cleared);
            }
        }
    }
    if change.atime_ns.is_some() || change.mtime_ns.is_some() || change.times_now {
        if change.times_now {
            if !caller.owns(md) && missing(md, caller, MAY_WRITE) != 0 {
                return check_access(md, caller, MAY_WRITE, path);
            }
        } else if !caller.owns(md) {
            return Err(not_permitted("setting times other than now"));
        }
    }
    Ok(())
}

/// `mode` (permission bits) without what a change of the file's content
/// or owner takes away: `S_ISUID`, and `S_ISGID` when the group may
/// execute (without group execute, `S_ISGID` marks mandatory locking and
/// stays), as Linux's `should_remove_suid` does.
pub fn without_privileges(mode: u32) -> u32 {
    let mut cleared = mode & !libc::S_ISUID;
    if mode & 0o010 != 0 {
        cleared &= !libc::S_ISGID;
    }
    cleared
}

/// Whether a write or truncate of a regular file with `mode` changes it:
/// the privileges of [`without_privileges`] are set and the writer is not
/// root (root keeps them, as a caller with `CAP_FSETID` does).
pub fn write_drops_privileges(mode: u32, caller: &Caller) -> bool {
    let bits = mode & 0o7777;
    !caller.is_root() && without_privileges(bits) != bits
}

/// "read", "write", "execute"/"search" for the bits of `mask`.
fn access_names(mask: u32, directory: bool) -> String {
    let mut names = Vec::new();
    if mask & MAY_READ != 0 {
        names.push("read");
    }
    if mask & MAY_WRITE != 0 {
        names.push("write");
    }
    if mask & MAY_EXEC != 0 {
        names.push(if directory { "search" } else { "execute" });
    }
    names.join("+")
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::metadata::FileId;

    fn entry(kind: FileKind, perm: u32, uid: u32, gid: u32) -> Metadata {
        let mut md = Metadata::new(kind, perm, FileId::from_parts(1, 2), 0);
        md.uid = uid;
        md.gid = gid;
        md
    }

    fn user(uid: u32, gid: u32, groups: &[u32]) -> Caller {
        Caller {
            uid,
            gid,
            groups: groups.to_vec(),
        }
    }

    #[test]
    fn extended_attributes_follow_linux_rules_per_namespace() {
        let errno = |md: &Metadata, who: &Caller, name: &[u8], want: u32| {
            check_xattr(md, who, name, want, "/p")
                .err()
                .map(|e| e.errno)
        };
        let (alice, bob, root) = (user(1, 1, &[]), user(2, 2, &[]), Caller::root());
        let file = entry(FileKind::File, 0o644, 1, 1);
        assert_eq!(errno(&file, &bob, b"user.a", MAY_READ), None);
        assert_eq!(
            errno(&file, &bob, b"user.a", MAY_WRITE),
            Some(Errno::EACCES)
        );
        assert_eq!(errno(&file, &alice, b"user.a", MAY_WRITE), None);
        let sticky = entry(FileKind::Directory, 0o1777, 1, 1);
        assert_eq!(
            errno(&sticky, &bob, b"user.a", MAY_WRITE),
            Some(Errno::EPERM)
        );
        assert_eq!(errno(&sticky, &bob, b"user.a", MAY_READ), None);
        assert_eq!(errno(&sticky, &root, b"user.a", MAY_WRITE), None);
        let link = entry(FileKind::Symlink, 0o777, 1, 1);
        assert_eq!(
            errno(&link, &alice, b"user.a", MAY_WRITE),
            Some(Errno::EPERM)
        );
        assert_eq!(
            errno(&link, &alice, b"user.a", MAY_READ),
            Some(Errno::ENODATA)
        );
        assert_eq!(errno(&link, &root, b"trusted.a", MAY_WRITE), None);
        assert_eq!(
            errno(&file, &alice, b"trusted.a", MAY_READ),
            Some(Errno::ENODATA)
        );
        assert_eq!(errno(&file, &alice, b"security.a", MAY_READ), None);
        assert_eq!(
            errno(&file, &alice, b"security.a", MAY_WRITE),
            Some(Errno::EPERM)
        );
        for other in [&b"system.posix_acl_access"[..], b"user", b"os2.x"] {
            assert_eq!(errno(&file, &root, other, MAY_READ), Some(Errno::ENOTSUP));
        }
        assert_eq!(errno(&file, &root, b"", MAY_READ), Some(Errno::ERANGE));
        assert_eq!(
            errno(&file, &root, &[b'u'; 256], MAY_READ),
            Some(Errno::ERANGE)
        );
        assert!(lists_xattr(&root, b"trusted.a") && !lists_xattr(&alice, b"trusted.a"));
        assert!(lists_xattr(&alice, b"security.a") && lists_xattr(&alice, b"user.a"));
    }

    #[test]
    fn the_first_matching_class_decides() {
        let md = entry(FileKind::File, 0o604, 10, 20);
        // The owner's bits apply to the owner, even though "other" may read.
        assert_eq!(missing(&md, &user(10, 20, &[]), MAY_READ | MAY_WRITE), 0);
        assert_eq!(missing(&md, &user(10, 20, &[]), MAY_EXEC), MAY_EXEC);
        // The group has nothing, even though "other" may read.
        assert_eq!(missing(&md, &user(11, 20, &[]), MAY_READ), MAY_READ);
        assert_eq!(missing(&md, &user(11, 5, &[20]), MAY_READ), MAY_READ);
        assert_eq!(missing(&md, &user(11, 5, &[6]), MAY_READ), 0);
        assert_eq!(missing(&md, &user(11, 5, &[6]), MAY_WRITE), MAY_WRITE);
        let e = check_access(&md, &user(11, 20, &[]), MAY_READ, "/f").unwrap_err();
        assert_eq!(e.errno, Errno::EACCES);
        assert!(e.message.contains("/f"), "{}", e.message);
    }

    #[test]
    fn root_bypasses_but_needs_an_x_bit_to_execute() {
        let root = Caller::root();
        let file = entry(FileKind::File, 0o000, 10, 20);
        assert_eq!(missing(&file, &root, MAY_READ | MAY_WRITE), 0);
        assert_eq!(missing(&file, &root, MAY_EXEC), MAY_EXEC);
        let other_x = entry(FileKind::File, 0o001, 10, 20);
        assert_eq!(missing(&other_x, &root, MAY_EXEC), 0);
        let dir = entry(FileKind::Directory, 0o000, 10, 20);
        assert_eq!(missing(&dir, &root, MAY_EXEC | MAY_WRITE), 0);
    }

    #[test]
    fn symlinks_and_empty_masks_are_never_denied() {
        let link = entry(FileKind::Symlink, 0o000, 10, 20);
        assert_eq!(missing(&link, &Caller::nobody(), MAY_READ), 0);
        let file = entry(FileKind::File, 0o000, 10, 20);
        assert_eq!(missing(&file, &Caller::nobody(), 0), 0);
    }

    #[test]
    fn sticky_directories_protect_other_users_entries() {
        let sticky = libc::S_IFDIR | 0o1777;
        let caller = user(30, 30, &[]);
        check_sticky(sticky, 10, 30, &caller, "/t/a").unwrap(); // own entry
        check_sticky(sticky, 30, 20, &caller, "/t/a").unwrap(); // own directory
        check_sticky(sticky, 10, 20, &Caller::root(), "/t/a").unwrap();
        let e = check_sticky(sticky, 10, 20, &caller, "/t/a").unwrap_err();
        assert_eq!(e.errno, Errno::EPERM);
        check_sticky(libc::S_IFDIR | 0o777, 10, 20, &caller, "/t/a").unwrap();
    }

    #[test]
    fn a_write_by_anyone_but_root_drops_setuid_and_executable_setgid() {
        let other = user(11, 20, &[]);
        assert_eq!(without_privileges(0o6775), 0o775);
        assert_eq!(without_privileges(0o2745), 0o2745);
        assert_eq!(without_privileges(0o4755), 0o755);
        assert!(write_drops_privileges(libc::S_IFREG | 0o4755, &other));
        assert!(write_drops_privileges(0o2775, &other));
        assert!(!write_drops_privileges(0o2745, &other));
        assert!(!write_drops_privileges(0o755, &other));
        assert!(!write_drops_privileges(0o6775, &Caller::root()));
    }

    #[test]
    fn chmod_is_for_the_owner_and_drops_sgid_outside_the_group() {
        let md = entry(FileKind::File, 0o644, 10, 20);
        let mut change = AttrChange {
            mode: Some(0o777),
            ..Default::default()
        };
        let e = check_set_attr(&md, &user(11, 20, &[]), &mut change, "/f").unwrap_err();
        assert_eq!(e.errno, Errno::EPERM);
        let mut change = AttrChange {
            mode: Some(0o2755),
            ..Default::default()
        };
        check_set_attr(&md, &user(10, 5, &[]), &mut change, "/f").unwrap();
        assert_eq!(change.mode, Some(0o755));
        let mut change = AttrChange {
            mode: Some(0o2755),
            ..Default::default()
        };
        check_set_attr(&md, &user(10, 5, &[20]), &mut change, "/f").unwrap();
        assert_eq!(change.mode, Some(0o2755));
        let mut change = AttrChange {
            mode: Some(0o2755),
            ..Default::default()
        };
        check_set_attr(&md, &Caller::root(), &mut change, "/f").unwrap();
        assert_eq!(change.mode, Some(0o2755));
    }

    #[test]
    fn chown_rules() {
        let md = entry(FileKind::File, 0o6755, 10, 20);
        let owner = user(10, 20, &[21]);
        let eperm = |caller: &Caller, uid: Option<u32>, gid: Option<u32>| {
            let mut change = AttrChange {
                uid,
                gid,
                ..Default::default()
            };
            check_set_attr(&md, caller, &mut change, "/f").map(|()| change)
        };
        // Only root gives a file away.
        assert_eq!(
            eperm(&owner, Some(11), None).unwrap_err().errno,
            Errno::EPERM
        );
        // The owner may pick a group they are in, not another.
        let change = eperm(&owner, None, Some(21)).unwrap();
        assert_eq!(change.mode, Some(0o755), "SUID and SGID (g+x) cleared");
        assert_eq!(
            eperm(&owner, None, Some(22)).unwrap_err().errno,
            Errno::EPERM
        );
        // Naming the same owner is no change of owner.
        eperm(&owner, Some(10), Some(20)).unwrap();
        // Someone else may not even do that.
        assert_eq!(
            eperm(&user(11, 20, &[]), None, Some(20)).unwrap_err().errno,
            Errno::EPERM
        );
        let change = eperm(&Caller::root(), Some(11), Some(22)).unwrap();
        assert_eq!(change.mode, Some(0o755), "cleared for root too, as Linux");
        // SGID without group execute marks mandatory locking: it stays.
        let md = entry(FileKind::File, 0o2644, 10, 20);
        let mut change = AttrChange {
            gid: Some(21),
            ..Default::default()
        };
        check_set_attr(&md, &owner, &mut change, "/f").unwrap();
        assert_eq!(change.mode, None);
        // Directories keep their bits.
        let dir = entry(FileKind::Directory, 0o2755, 10, 20);
        let mut change = AttrChange {
            gid: Some(21),
            ..Default::default()
        };
        check_set_attr(&dir, &owner, &mut change, "/d").unwrap();
        assert_eq!(change.mode, None);
    }

    #[test]
    fn utimens_to_now_needs_write_permission_explicit_times_ownership() {
        let md = entry(FileKind::File, 0o646, 10, 20);
        let writer = user(11, 5, &[]);
        let mut now = AttrChange {
            times_now: true,
            ..Default::default()
        };
        check_set_attr(&md, &writer, &mut now, "/f").unwrap();
        let mut explicit = AttrChange {
            atime_ns: Some(1),
            mtime_ns: Some(2),
            ..Default::default()
        };
        let e = check_set_attr(&md, &writer, &mut explicit, "/f").unwrap_err();
        assert_eq!(e.errno, Errno::EPERM);
        let reader = user(11, 20, &[]);
        let e = check_set_attr(&md, &reader, &mut now, "/f").unwrap_err();
        assert_eq!(e.errno, Errno::EACCES);
        check_set_attr(&md, &user(10, 5, &[]), &mut explicit, "/f").unwrap();
        check_set_attr(&md, &Caller::root(), &mut explicit, "/f").unwrap();
    }
}
