//! Tests of the metadata rules, written against the [`MetadataStore`] trait.

use super::RocksMetadataStore;
use crate::meta_store::{MetadataStore, RemoveKind};
use sfs_global::metadata::{MetaUpdate, XattrSet, XATTRS_MAX_TOTAL};
use sfs_global::{Errno, FileId, FileKind, Metadata};
use std::sync::Arc;

fn open() -> (tempfile::TempDir, Arc<dyn MetadataStore>) {
    let dir = tempfile::tempdir().unwrap();
    let store = RocksMetadataStore::open(&dir.path().join("meta")).unwrap();
    (dir, Arc::new(store))
}

fn file(id: u128) -> Metadata {
    Metadata::new(FileKind::File, 0o644, FileId(id), 1)
}

fn dir_entry() -> Metadata {
    Metadata::new(FileKind::Directory, 0o755, FileId(0), 1)
}

#[test]
fn exclusive_create_has_exactly_one_winner() {
    let (_dir, store) = open();
    let threads: Vec<_> = (0..8u128)
        .map(|i| {
            let store = store.clone();
            std::thread::spawn(move || store.create("/race", file(i + 1), true))
        })
        .collect();
    let results: Vec<_> = threads.into_iter().map(|t| t.join().unwrap()).collect();
    let winners = results.iter().filter(|r| r.is_ok()).count();
    assert_eq!(winners, 1);
    for r in results.iter().filter_map(|r| r.as_ref().err()) {
        assert_eq!(r.errno, Errno::EEXIST);
    }
    let (existing, created) = store.create("/race", file(99), false).unwrap();
    assert!(!created);
    assert_ne!(existing.id, FileId(99));
}

#[test]
fn concurrent_size_updates_end_at_the_largest() {
    let (_dir, store) = open();
    store.create("/shared", file(1), true).unwrap();
    let threads: Vec<_> = (0..8u64)
        .map(|t| {
            let store = store.clone();
            std::thread::spawn(move || {
                for i in 0..200u64 {
                    let end = (i * 8 + t) * 4096;
                    store
                        .update("/shared", MetaUpdate::GrowSize { end, time_ns: 2 }, None)
                        .unwrap();
                }
            })
        })
        .collect();
    for t in threads {
        t.join().unwrap();
    }
    assert_eq!(
        store.get("/shared").unwrap().unwrap().size,
        (199 * 8 + 7) * 4096
    );
    assert_eq!(store.truncate("/shared", 10, 3).unwrap().size, 10);
    assert_eq!(store.reserve_append("/shared", 5, 4, None).unwrap(), 10);
    assert_eq!(store.reserve_append("/shared", 5, 4, None).unwrap(), 15);
    assert_eq!(store.get("/shared").unwrap().unwrap().size, 20);
}

#[test]
fn updates_racing_with_remove_leave_no_entry() {
    let (_dir, store) = open();
    for round in 0..20u128 {
        store.create("/victim", file(round + 1), true).unwrap();
        let writer = {
            let store = store.clone();
            std::thread::spawn(move || {
                for end in 0..500 {
                    // ENOENT once the remove wins: that is the expected outcome.
                    let _ = store.update("/victim", MetaUpdate::GrowSize { end, time_ns: 1 }, None);
                }
            })
        };
        store
            .remove("/victim", RemoveKind::NotDirectory, None)
            .unwrap();
        writer.join().unwrap();
        assert_eq!(store.get("/victim").unwrap(), None);
        assert!(!store.has_children("/").unwrap());
        let err = store
            .update("/victim", MetaUpdate::GrowSize { end: 1, time_ns: 1 }, None)
            .unwrap_err();
        assert_eq!(err.errno, Errno::ENOENT);
    }
    // A tombstone does not block re-creating the path.
    assert!(store.create("/victim", file(7), true).unwrap().1);
}

#[test]
fn remove_follows_unlink_and_rmdir_rules() {
    let (_dir, store) = open();
    store.create("/d", dir_entry(), true).unwrap();
    store.create("/d/f", file(5), true).unwrap();
    let e = |r: sfs_global::SfsResult<Metadata>| r.unwrap_err().errno;
    assert_eq!(
        e(store.remove("/d", RemoveKind::NotDirectory, None)),
        Errno::EISDIR
    );
    assert_eq!(
        e(store.remove("/d/f", RemoveKind::Directory, None)),
        Errno::ENOTDIR
    );
    assert_eq!(
        e(store.remove("/d", RemoveKind::Directory, None)),
        Errno::ENOTEMPTY
    );
    assert_eq!(
        e(store.remove("/missing", RemoveKind::NotDirectory, None)),
        Errno::ENOENT
    );
    assert_eq!(
        e(store.remove("/", RemoveKind::Directory, None)),
        Errno::EBUSY
    );
    assert_eq!(
        e(store.remove("/d/f", RemoveKind::NotDirectory, Some(FileId(6)))),
        Errno::ENOENT
    );
    assert_eq!(
        store
            .remove("/d/f", RemoveKind::NotDirectory, Some(FileId(5)))
            .unwrap()
            .id,
        FileId(5)
    );
    store.remove("/d", RemoveKind::Directory, None).unwrap();
    assert_eq!(store.get("/d").unwrap(), None);
    assert_eq!(e(store.truncate("/d", 0, 1)), Errno::ENOENT);
}

#[test]
fn children_page_through_ten_thousand_entries() {
    let (_dir, store) = open();
    store.create("/big", dir_entry(), true).unwrap();
    store.create("/big/sub", dir_entry(), true).unwrap();
    store.create("/big/sub/deep", file(1), true).unwrap();
    store.create("/bigger", file(2), true).unwrap();
    for i in 0..10_000u128 {
        store
            .create(&format!("/big/f{i:05}"), file(i + 10), true)
            .unwrap();
    }
    let mut names = Vec::new();
    let mut after: Option<String> = None;
    loop {
        let page = store.children("/big", after.as_deref(), 777).unwrap();
        assert!(page.len() <= 777);
        if page.is_empty() {
            break;
        }
        after = Some(page.last().unwrap().0.clone());
        names.extend(page.into_iter().map(|(n, _)| n));
    }
    assert_eq!(names.len(), 10_001);
    assert_eq!(names[0], "f00000");
    assert_eq!(names.last().unwrap(), "sub");
    assert!(names.windows(2).all(|w| w[0] < w[1]));
    assert!(store.has_children("/big").unwrap());
    assert!(!store.has_children("/big/sub/deep").unwrap());
    assert!(store.entry_count().unwrap() > 0);
}

#[test]
fn subtree_lists_everything_below_and_nothing_beside() {
    let (_dir, store) = open();
    for d in ["/", "/a", "/a/b", "/ab", "/a!"] {
        store.create(d, dir_entry(), true).unwrap();
    }
    for f in ["/a/x", "/a/b/y", "/a/b/z", "/ab/no", "/a!/no", "/top"] {
        store.create(f, file(1), true).unwrap();
    }
    let page_all = |dir: &str, limit: usize| {
        let mut all = Vec::new();
        let mut after: Option<String> = None;
        loop {
            let page = store.subtree(dir, after.as_deref(), limit).unwrap();
            if page.is_empty() {
                return all;
            }
            after = Some(page.last().unwrap().0.clone());
            all.extend(page.into_iter().map(|(p, _)| p));
        }
    };
    let mut below_a = page_all("/a", 1);
    below_a.sort();
    assert_eq!(below_a, ["/a/b", "/a/b/y", "/a/b/z", "/a/x"]);
    let mut everything = page_all("/", 2);
    everything.sort();
    assert_eq!(everything.len(), 10);
    assert!(!everything.contains(&"/".to_string()));
    assert!(page_all("/top", 5).is_empty());
}

#[test]
fn put_entry_follows_rename_rules() {
    let (_dir, store) = open();
    store.create("/d", dir_entry(), true).unwrap();
    store.create("/empty", dir_entry(), true).unwrap();
    store.create("/d/child", file(1), true).unwrap();
    store.create("/f", file(2), true).unwrap();
    let e = |r: sfs_global::SfsResult<Option<Metadata>>| r.unwrap_err().errno;
    assert_eq!(store.put_entry("/new", file(3), false).unwrap(), None);
    assert_eq!(e(store.put_entry("/new", file(4), false)), Errno::EEXIST);
    assert_eq!(
        store.put_entry("/new", file(4), true).unwrap().unwrap().id,
        FileId(3)
    );
    assert_eq!(e(store.put_entry("/d", file(5), true)), Errno::EISDIR);
    assert_eq!(e(store.put_entry("/f", dir_entry(), true)), Errno::ENOTDIR);
    assert_eq!(
        e(store.put_entry("/d", dir_entry(), true)),
        Errno::ENOTEMPTY
    );
    assert!(store
        .put_entry("/empty", dir_entry(), true)
        .unwrap()
        .unwrap()
        .is_dir());
    assert_eq!(e(store.put_entry("/", dir_entry(), true)), Errno::EBUSY);
    assert_eq!(store.get("/new").unwrap().unwrap().id, FileId(4));
}

#[test]
fn attributes_and_kinds() {
    let (_dir, store) = open();
    store.create("/d", dir_entry(), true).unwrap();
    store.create("/f", file(1), true).unwrap();
    assert_eq!(store.truncate("/d", 1, 1).unwrap_err().errno, Errno::EISDIR);
    assert_eq!(
        store.reserve_append("/d", 1, 1, None).unwrap_err().errno,
        Errno::EISDIR
    );
    let set = MetaUpdate::SetAttr {
        mode: Some(0o600),
        uid: Some(42),
        gid: None,
        atime_ns: None,
        mtime_ns: Some(77),
        ctime_ns: 88,
    };
    let md = store.set_attr("/f", set).unwrap();
    assert_eq!(
        (md.mode, md.uid, md.mtime_ns, md.ctime_ns),
        (libc::S_IFREG | 0o600, 42, 77, 88)
    );
    let grow = MetaUpdate::GrowSize { end: 1, time_ns: 1 };
    assert_eq!(store.set_attr("/f", grow).unwrap_err().errno, Errno::EINVAL);
    store
        .update(
            "/f",
            MetaUpdate::GrowSize {
                end: sfs_global::chunk::MAX_FILE_SIZE,
                time_ns: 1,
            },
            None,
        )
        .unwrap();
    assert_eq!(
        store.reserve_append("/f", 1, 1, None).unwrap_err().errno,
        Errno::EFBIG
    );
}

#[test]
fn data_survives_reopen() {
    let dir = tempfile::tempdir().unwrap();
    let path = dir.path().join("meta");
    {
        let store = RocksMetadataStore::open(&path).unwrap();
        store.create("/kept", file(9), true).unwrap();
        store
            .update(
                "/kept",
                MetaUpdate::GrowSize {
                    end: 1234,
                    time_ns: 5,
                },
                None,
            )
            .unwrap();
        store.sync().unwrap();
    }
    let store = RocksMetadataStore::open(&path).unwrap();
    let md = store.get("/kept").unwrap().unwrap();
    assert_eq!((md.id, md.size), (FileId(9), 1234));
}

#[test]
fn a_shared_name_sends_changes_to_its_shared_entry_and_counts_go_to_zero() {
    let (_dir, store) = open();
    let id = FileId(7);
    store.create("/a", file(7), true).unwrap();
    store
        .update(
            "/a",
            MetaUpdate::GrowSize {
                end: 10,
                time_ns: 2,
            },
            Some(id),
        )
        .unwrap();
    assert_eq!(
        store.share("/a", FileId(8)).unwrap_err().errno,
        Errno::ENOENT,
        "another file's id"
    );
    let was = store.share("/a", id).unwrap();
    assert_eq!((was.size, was.nlink), (10, 1), "the attributes it had");
    let name = store.get("/a").unwrap().unwrap();
    assert!(name.is_name_of_shared());
    assert_eq!(
        store.share("/a", id).unwrap(),
        name,
        "sharing again changes nothing"
    );
    // Every change of a name's attributes goes to the shared entry.
    let grow = MetaUpdate::GrowSize {
        end: 20,
        time_ns: 3,
    };
    let redirected = |e: sfs_global::SfsError| assert_eq!(e.errno, Errno::EREMCHG);
    redirected(store.update("/a", grow, Some(id)).unwrap_err());
    redirected(store.reserve_append("/a", 1, 3, Some(id)).unwrap_err());
    redirected(store.truncate("/a", 0, 3).unwrap_err());
    let chmod = MetaUpdate::SetAttr {
        mode: Some(0o600),
        uid: None,
        gid: None,
        atime_ns: None,
        mtime_ns: None,
        ctime_ns: 3,
    };
    redirected(store.set_attr("/a", chmod).unwrap_err());
    redirected(
        store
            .set_xattr("/a", b"user.x", Some(b"1"), XattrSet::Either, 3)
            .unwrap_err(),
    );
    assert_eq!(
        store.get("/a").unwrap().unwrap(),
        name,
        "the name did not change"
    );
    // The shared entry counts names and goes with the last.
    let shared = "/.sfs-inode-7";
    store
        .put_entry(shared, Metadata { nlink: 1, ..was }, false)
        .unwrap();
    assert_eq!(store.add_links(shared, id, 1, 5).unwrap().nlink, 2);
    assert_eq!(store.get(shared).unwrap().unwrap().ctime_ns, 5);
    assert_eq!(
        store.add_links(shared, FileId(8), 1, 5).unwrap_err().errno,
        Errno::ESTALE
    );
    assert_eq!(store.add_links(shared, id, -1, 6).unwrap().nlink, 1);
    assert_eq!(store.add_links(shared, id, -1, 7).unwrap().nlink, 0);
    assert!(
        store.get(shared).unwrap().is_none(),
        "gone with its last name"
    );
    assert!(store.add_links(shared, id, -1, 8).is_err());
    store.create("/d", dir_entry(), true).unwrap();
    assert_eq!(
        store.share("/d", FileId(0)).unwrap_err().errno,
        Errno::EPERM
    );
}

#[test]
fn extended_attributes_follow_their_flags_and_limits_and_keep_sizes_merged_meanwhile() {
    let (_dir, store) = open();
    store.create("/f", file(1), true).unwrap();
    let set = |name: &[u8], value: Option<&[u8]>, how| store.set_xattr("/f", name, value, how, 5);
    let errno = |r: sfs_global::SfsResult<Metadata>| r.unwrap_err().errno;
    assert_eq!(
        errno(set(b"user.a", None, XattrSet::Either)),
        Errno::ENODATA
    );
    assert_eq!(
        errno(set(b"user.a", Some(b"1"), XattrSet::Replace)),
        Errno::ENODATA
    );
    let md = set(b"user.a", Some(b"1"), XattrSet::Create).unwrap();
    assert_eq!((md.xattr(b"user.a"), md.ctime_ns), (Some(&b"1"[..]), 5));
    assert_eq!(
        errno(set(b"user.a", Some(b"2"), XattrSet::Create)),
        Errno::EEXIST
    );
    // A size merged (without the entry's lock) after the attribute is
    // kept, and so is the attribute.
    store
        .update(
            "/f",
            MetaUpdate::GrowSize {
                end: 4096,
                time_ns: 6,
            },
            None,
        )
        .unwrap();
    let md = set(b"user.a", Some(b"22"), XattrSet::Replace).unwrap();
    assert_eq!((md.size, md.xattr(b"user.a")), (4096, Some(&b"22"[..])));
    // The total: replacing a value counts only the difference.
    let big = vec![7u8; XATTRS_MAX_TOTAL - b"user.a".len() - 2 - b"user.b".len()];
    set(b"user.b", Some(&big), XattrSet::Either).unwrap();
    assert_eq!(
        errno(set(b"user.c", Some(b""), XattrSet::Either)),
        Errno::ENOSPC
    );
    assert_eq!(
        errno(set(b"user.a", Some(b"333"), XattrSet::Either)),
        Errno::ENOSPC
    );
    set(b"user.a", Some(b"1"), XattrSet::Either).unwrap();
    let md = set(b"user.b", None, XattrSet::Either).unwrap();
    assert_eq!(md.xattrs, vec![(b"user.a".to_vec(), b"1".to_vec())]);
    assert_eq!(md.size, 4096);
    // A rename (the entry placed elsewhere) takes them along.
    store.put_entry("/g", md.clone(), false).unwrap();
    assert_eq!(store.get("/g").unwrap().unwrap().xattrs, md.xattrs);
    assert_eq!(
        errno(store.set_xattr("/none", b"user.a", Some(b""), XattrSet::Either, 5)),
        Errno::ENOENT
    );
}

fn chmod(mode: u32, uid: u32, time_ns: i64) -> MetaUpdate {
    MetaUpdate::SetAttr {
        mode: Some(mode),
        uid: Some(uid),
        gid: None,
        atime_ns: None,
        mtime_ns: None,
        ctime_ns: time_ns,
    }
}

/// What `parent_entry` must answer: the entry as `get` reads it, without
/// its contents.
fn expected_parent(store: &dyn MetadataStore, path: &str) -> Option<Metadata> {
    store.get(path).unwrap().map(Metadata::without_contents)
}

/// The parent entry a permission check reads (kept in memory after the
/// first read) follows every change of the directory: chmod/chown, its
/// times, an extended attribute, its removal and a rename onto its name.
#[test]
fn a_parent_entry_follows_every_change_of_the_directory() {
    let (_dir, store) = open();
    store.create("/d", dir_entry(), true).unwrap();
    store
        .set_xattr("/d", b"user.big", Some(&[7; 1000]), XattrSet::Either, 2)
        .unwrap();
    let first = store.parent_entry("/d").unwrap().unwrap();
    assert!(first.xattrs.is_empty(), "kept without its attributes");
    assert_eq!(Some(first), expected_parent(&*store, "/d"));
    let check = |what: &str| {
        // Twice: the read that fills the cache, then the one it answers.
        for _ in 0..2 {
            assert_eq!(
                store.parent_entry("/d").unwrap(),
                expected_parent(&*store, "/d"),
                "after {what}"
            );
        }
    };
    store.set_attr("/d", chmod(0o700, 5, 3)).unwrap();
    check("chmod");
    assert_eq!(
        store.parent_entry("/d").unwrap().unwrap().mode & 0o7777,
        0o700
    );
    store
        .update("/d", MetaUpdate::GrowSize { end: 0, time_ns: 9 }, None)
        .unwrap();
    check("new times");
    store
        .set_xattr("/d", b"user.big", None, XattrSet::Either, 11)
        .unwrap();
    check("an attribute removed");
    store.remove("/d", RemoveKind::Directory, None).unwrap();
    assert_eq!(store.parent_entry("/d").unwrap(), None, "removed");
    let mut other = dir_entry();
    other.uid = 77;
    other.mode = libc::S_IFDIR | 0o1777;
    store.put_entry("/d", other, true).unwrap();
    check("a directory renamed onto it");
    assert_eq!(store.parent_entry("/d").unwrap().unwrap().uid, 77);
    // A file or a symlink there is answered, not kept.
    store.remove("/d", RemoveKind::Directory, None).unwrap();
    store.create("/d", file(3), true).unwrap();
    check("a file in its place");
}

/// Readers of a parent entry racing with its changes: once the changes
/// stop, every read answers the last one (a value read before a change
/// is never kept after it).
#[test]
fn parent_entries_read_during_changes_end_exact() {
    let (_dir, store) = open();
    store.create("/d", dir_entry(), true).unwrap();
    for round in 0..20u32 {
        let stop = Arc::new(std::sync::atomic::AtomicBool::new(false));
        let readers: Vec<_> = (0..3)
            .map(|_| {
                let (store, stop) = (store.clone(), stop.clone());
                std::thread::spawn(move || {
                    while !stop.load(std::sync::atomic::Ordering::Relaxed) {
                        store.parent_entry("/d").unwrap().unwrap();
                    }
                })
            })
            .collect();
        for i in 0..200u32 {
            let mode = 0o700 | ((round * 200 + i) % 0o100);
            store.set_attr("/d", chmod(mode, i, i64::from(i))).unwrap();
        }
        stop.store(true, std::sync::atomic::Ordering::Relaxed);
        for reader in readers {
            reader.join().unwrap();
        }
        assert_eq!(
            store.parent_entry("/d").unwrap(),
            expected_parent(&*store, "/d"),
            "round {round}"
        );
    }
}
