//! The cache-mode view against a real backing directory and RocksDB store.

use super::BackedStore;
use crate::meta_rocks::RocksMetadataStore;
use crate::meta_store::{MetadataStore, RemoveKind};
use sfs_global::distributor::Distributor;
use sfs_global::{Errno, FileId, FileKind, Metadata};
use std::os::unix::fs::PermissionsExt;
use std::sync::Arc;

/// A backing tree (`/in/a.txt` 0640 "alpha", `/in/sub/b`, `/link -> in`,
/// a FIFO) and the view of it by server `index` of `servers`.
fn view(index: usize, servers: usize) -> (tempfile::TempDir, BackedStore) {
    let dir = tempfile::tempdir().unwrap();
    let backing = dir.path().join("backing");
    std::fs::create_dir_all(backing.join("in/sub")).unwrap();
    std::fs::write(backing.join("in/a.txt"), "alpha").unwrap();
    std::fs::set_permissions(
        backing.join("in/a.txt"),
        std::fs::Permissions::from_mode(0o640),
    )
    .unwrap();
    std::fs::write(backing.join("in/sub/b"), "bee").unwrap();
    std::os::unix::fs::symlink("in", backing.join("link")).unwrap();
    let fifo = std::ffi::CString::new(backing.join("fifo").to_str().unwrap()).unwrap();
    // SAFETY: a NUL-terminated path.
    assert_eq!(unsafe { libc::mkfifo(fifo.as_ptr(), 0o644) }, 0);
    let inner = RocksMetadataStore::open(&dir.path().join("meta")).unwrap();
    let store = BackedStore::new(Arc::new(inner), &backing, index, servers);
    (dir, store)
}

fn names(store: &BackedStore, dir: &str) -> Vec<String> {
    let mut names: Vec<String> = store
        .children(dir, None, 100)
        .unwrap()
        .into_iter()
        .map(|(name, _)| name)
        .collect();
    names.sort();
    names
}

#[test]
fn backing_entries_are_taken_in_on_first_lookup_with_their_attributes() {
    let (_dir, store) = view(0, 1);
    let md = store.get("/in/a.txt").unwrap().expect("taken in");
    assert_eq!(md.kind(), FileKind::File);
    assert_eq!(md.mode & 0o7777, 0o640);
    assert_eq!((md.size, md.source_len), (5, 5));
    assert_eq!(md.source, "/in/a.txt");
    // Taken in once: the same id at the next look.
    assert_eq!(store.get("/in/a.txt").unwrap().unwrap().id, md.id);
    let link = store.get("/link").unwrap().unwrap();
    assert_eq!(
        (link.kind(), link.link_target.as_str()),
        (FileKind::Symlink, "in")
    );
    assert!(store.get("/in/sub").unwrap().unwrap().is_dir());
    assert_eq!(store.get("/nothing").unwrap(), None);
    assert_eq!(
        store.get("/fifo").unwrap(),
        None,
        "special files are not taken in"
    );
}

#[test]
fn listings_show_the_backing_names_and_removals_leave_them_removed() {
    let (_dir, store) = view(0, 1);
    assert_eq!(names(&store, "/"), ["in", "link"]);
    assert_eq!(names(&store, "/in"), ["a.txt", "sub"]);
    let file = |id| Metadata::new(FileKind::File, 0o644, FileId(id), 1);
    // An exclusive create of a backing name: it exists.
    let e = store.create("/in/a.txt", file(7), true).unwrap_err();
    assert_eq!(e.errno, Errno::EEXIST);
    store.create("/in/new", file(8), true).unwrap();
    store
        .remove("/in/a.txt", RemoveKind::NotDirectory, None)
        .unwrap();
    assert_eq!(store.get("/in/a.txt").unwrap(), None, "a whiteout hides it");
    assert_eq!(names(&store, "/in"), ["new", "sub"]);
    // Made again in SFS: an entry of its own, not the backing file.
    let (made, created) = store.create("/in/a.txt", file(9), true).unwrap();
    assert!(created && made.source.is_empty());
    // A backing directory is empty only once its backing children are gone,
    // and made again it starts empty.
    let e = store
        .remove("/in/sub", RemoveKind::Directory, None)
        .unwrap_err();
    assert_eq!(e.errno, Errno::ENOTEMPTY);
    store
        .remove("/in/sub/b", RemoveKind::NotDirectory, None)
        .unwrap();
    store
        .remove("/in/sub", RemoveKind::Directory, None)
        .unwrap();
    let d = Metadata::new(FileKind::Directory, 0o755, FileId(10), 1);
    store.create("/in/sub", d, true).unwrap();
    assert!(names(&store, "/in/sub").is_empty());
    assert_eq!(store.get("/in/sub/b").unwrap(), None);
}

#[test]
fn each_server_takes_in_only_the_names_it_owns() {
    let places = Distributor::new(2);
    let mut seen = Vec::new();
    for index in 0..2 {
        let (_dir, store) = view(index, 2);
        for name in names(&store, "/in") {
            let path = format!("/in/{name}");
            assert_eq!(places.metadata_server(&path), index, "{path}");
            seen.push(name);
        }
    }
    seen.sort();
    assert_eq!(seen, ["a.txt", "sub"]);
}

#[test]
fn nothing_is_taken_in_through_a_symlink_on_the_way() {
    let (dir, store) = view(0, 1);
    std::fs::create_dir(dir.path().join("outside")).unwrap();
    std::fs::write(dir.path().join("outside/secret"), "s").unwrap();
    std::os::unix::fs::symlink("../outside", dir.path().join("backing/out")).unwrap();
    // The symlinks themselves are entries; what lies behind them is SFS's
    // to follow, never taken in under a second name.
    assert_eq!(
        store.get("/out").unwrap().unwrap().kind(),
        FileKind::Symlink
    );
    assert_eq!(store.get("/out/secret").unwrap(), None);
    assert_eq!(store.get("/link/a.txt").unwrap(), None);
    assert!(names(&store, "/link").is_empty());
    assert!(store.get("/in/a.txt").unwrap().is_some());
}
