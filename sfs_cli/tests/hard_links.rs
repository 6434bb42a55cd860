//! Hard links through real servers: names sharing one file's data and
//! attributes, link counts, the last name taking the data with it, and
//! descriptors opened before a file got its second name.

mod common;

use common::Cluster;
use sfs_client::{Client, Errno, FileKind};

fn write_file(client: &Client, path: &str, data: &[u8]) {
    let fd = client
        .open(path, libc::O_WRONLY | libc::O_CREAT | libc::O_TRUNC, 0o644)
        .unwrap();
    assert_eq!(client.write(fd, data).unwrap(), data.len());
    client.close(fd).unwrap();
}

fn read_file(client: &Client, path: &str) -> Vec<u8> {
    let fd = client.open(path, libc::O_RDONLY, 0).unwrap();
    let mut out = vec![0u8; 1 << 20];
    let n = client.read(fd, &mut out).unwrap();
    client.close(fd).unwrap();
    out.truncate(n);
    out
}

fn errno<T: std::fmt::Debug>(r: sfs_client::SfsResult<T>) -> Errno {
    r.unwrap_err().errno
}

#[test]
fn names_share_data_and_attributes_and_the_last_takes_the_data() {
    let cluster = Cluster::start(3);
    let client = cluster.client();
    client.mkdir("/d", 0o755).unwrap();
    client.mkdir("/e", 0o755).unwrap();
    let empty = client.statfs().unwrap().used_bytes;
    write_file(&client, "/d/a", b"hello");
    client.link("/d/a", "/e/b", false).unwrap();
    let (a, b) = (client.stat("/d/a").unwrap(), client.stat("/e/b").unwrap());
    assert_eq!((a.nlink, b.nlink), (2, 2));
    assert_eq!(a.id, b.id);
    assert_eq!((a.size, b.size), (5, 5));

    // Data and attributes changed through one name show through the other.
    let fd = client
        .open("/e/b", libc::O_WRONLY | libc::O_APPEND, 0)
        .unwrap();
    client.write(fd, b" world").unwrap();
    client.close(fd).unwrap();
    assert_eq!(read_file(&client, "/d/a"), b"hello world");
    assert_eq!(client.stat("/d/a").unwrap().size, 11);
    let listed = client.read_dir("/e").unwrap().next().unwrap().unwrap();
    assert_eq!(
        (
            listed.name.as_str(),
            listed.metadata.nlink,
            listed.metadata.size
        ),
        ("b", 2, 11),
        "a listing shows the file's attributes, not the name's copy"
    );
    client.chmod("/d/a", 0o600).unwrap();
    assert_eq!(client.stat("/e/b").unwrap().mode & 0o7777, 0o600);
    client.truncate("/e/b", 4).unwrap();
    assert_eq!(read_file(&client, "/d/a"), b"hell");

    // A third name, listings show each name once and no hidden entry.
    client.link("/e/b", "/c", false).unwrap();
    assert_eq!(client.lstat("/c").unwrap().nlink, 3);
    let root: Vec<String> = client
        .read_dir("/")
        .unwrap()
        .map(|e| e.unwrap().name)
        .collect();
    assert_eq!(root, ["c", "d", "e"], "the shared entry is never listed");

    // Errors as Linux gives them.
    assert_eq!(errno(client.link("/d/a", "/c", false)), Errno::EEXIST);
    assert_eq!(errno(client.link("/d", "/d2", false)), Errno::EPERM);
    assert_eq!(errno(client.link("/none", "/x", false)), Errno::ENOENT);
    assert_eq!(errno(client.link("/d/a", "/none/x", false)), Errno::ENOENT);

    // rename between two names of one file does nothing; onto another
    // name of the same file neither.
    client.rename("/c", "/d/a").unwrap();
    assert!(client.lstat("/c").is_ok() && client.lstat("/d/a").is_ok());
    assert_eq!(client.stat("/c").unwrap().nlink, 3);

    // Renaming a plain file over a name drops one name of that file.
    write_file(&client, "/other", b"zz");
    client.rename("/other", "/c").unwrap();
    assert_eq!(read_file(&client, "/c"), b"zz");
    assert_eq!(client.stat("/d/a").unwrap().nlink, 2);

    // Unlinking names: the data stays while one is left.
    client.unlink("/d/a").unwrap();
    let left = client.stat("/e/b").unwrap();
    assert_eq!(left.nlink, 1);
    assert_eq!(read_file(&client, "/e/b"), b"hell");
    client.unlink("/e/b").unwrap();
    client.unlink("/c").unwrap();
    assert_eq!(
        client.statfs().unwrap().used_bytes,
        empty,
        "the last name took the chunks with it"
    );
}

#[test]
fn a_descriptor_opened_before_the_first_link_follows_the_shared_entry() {
    let cluster = Cluster::start(3);
    let client = cluster.client();
    let other = cluster.client();
    write_file(&client, "/f", b"12345");
    let fd = client.open("/f", libc::O_RDWR, 0).unwrap();
    // Another client links the file: its attributes move while fd is open.
    other.link("/f", "/g", false).unwrap();
    client.pwrite(fd, b"abcdefgh", 5).unwrap();
    assert_eq!(
        other.stat("/g").unwrap().size,
        13,
        "size grew at the shared entry"
    );
    assert_eq!(client.fstat(fd).unwrap().nlink, 2);
    client.ftruncate(fd, 7).unwrap();
    assert_eq!(other.stat("/g").unwrap().size, 7);
    assert_eq!(client.lseek(fd, 0, sfs_client::Whence::End).unwrap(), 7);
    let mut buf = [0u8; 32];
    assert_eq!(client.pread(fd, &mut buf, 0).unwrap(), 7);
    assert_eq!(&buf[..7], b"12345ab");
    // Unlinked while open (by the client holding it): the other name keeps
    // the file, the descriptor still works.
    client.unlink("/f").unwrap();
    assert_eq!(client.fstat(fd).unwrap().nlink, 1);
    client.pwrite(fd, b"Z", 0).unwrap();
    client.close(fd).unwrap();
    assert_eq!(read_file(&other, "/g"), b"Z2345ab");
    assert_eq!(other.stat("/g").unwrap().nlink, 1);
}

#[test]
fn symlinks_and_special_files_take_names_too() {
    let cluster = Cluster::start(2);
    let client = cluster.client();
    client.symlink("target", "/s").unwrap();
    client.link("/s", "/s2", false).unwrap();
    assert_eq!(client.readlink("/s2").unwrap(), "target");
    let md = client.lstat("/s2").unwrap();
    assert_eq!((md.kind(), md.nlink), (FileKind::Symlink, 2));
    // With AT_SYMLINK_FOLLOW the file the symlink leads to gets the name.
    write_file(&client, "/target", b"t");
    client.link("/s", "/t2", true).unwrap();
    assert_eq!(client.lstat("/t2").unwrap().kind(), FileKind::File);
    assert_eq!(client.stat("/target").unwrap().nlink, 2);
    client.mknod("/fifo", libc::S_IFIFO | 0o600, 0).unwrap();
    client.link("/fifo", "/fifo2", false).unwrap();
    assert_eq!(client.lstat("/fifo2").unwrap().kind(), FileKind::Fifo);
    assert_eq!(client.lstat("/fifo").unwrap().nlink, 2);
}

#[test]
fn two_open_names_of_one_file_unlinked_keep_the_data_until_the_last_close() {
    let cluster = Cluster::start(3);
    let client = cluster.client();
    let empty = client.statfs().unwrap().used_bytes;
    write_file(&client, "/a", b"both names");
    client.link("/a", "/b", false).unwrap();
    let fa = client.open("/a", libc::O_RDONLY, 0).unwrap();
    let fb = client.open("/b", libc::O_RDONLY, 0).unwrap();
    client.unlink("/a").unwrap();
    client.unlink("/b").unwrap();
    assert_eq!(errno(client.lstat("/b")), Errno::ENOENT);
    let mut buf = [0u8; 16];
    assert_eq!(client.pread(fb, &mut buf, 0).unwrap(), 10);
    assert_eq!(&buf[..10], b"both names");
    assert_eq!(client.fstat(fa).unwrap().nlink, 0);
    client.close(fa).unwrap();
    assert_eq!(client.pread(fb, &mut buf, 0).unwrap(), 10);
    client.close(fb).unwrap();
    assert_eq!(
        client.statfs().unwrap().used_bytes,
        empty,
        "gone at the last close"
    );
}

#[test]
fn the_shared_entry_is_not_a_name_programs_can_use() {
    let cluster = Cluster::start(2);
    let client = cluster.client();
    write_file(&client, "/a", b"kept");
    client.link("/a", "/b", false).unwrap();
    let shared = sfs_global::metadata::shared_path(client.stat("/a").unwrap().id);
    assert_eq!(errno(client.unlink(&shared)), Errno::ENOENT);
    assert_eq!(errno(client.stat(&shared)), Errno::ENOENT);
    assert_eq!(errno(client.rename("/a", &shared)), Errno::ENOENT);
    assert_eq!(read_file(&client, "/b"), b"kept");
}
