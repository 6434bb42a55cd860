//! Namespace operations through real servers: many creates, a large
//! directory, renames, symlinks, attributes, errors with their errnos.

mod common;

use common::Cluster;
use sfs_client::{Errno, FileKind};

fn create(client: &sfs_client::Client, path: &str) {
    let fd = client
        .open(path, libc::O_WRONLY | libc::O_CREAT | libc::O_EXCL, 0o644)
        .unwrap();
    client.close(fd).unwrap();
}

#[test]
fn two_thousand_creates_stats_and_removes() {
    let cluster = Cluster::start(3);
    let client = cluster.client();
    client.mkdir("/d", 0o755).unwrap();
    for i in 0..2000 {
        create(&client, &format!("/d/f{i}"));
    }
    for i in 0..2000 {
        let md = client.stat(&format!("/d/f{i}")).unwrap();
        assert_eq!(md.kind(), FileKind::File);
        assert_eq!(md.mode & 0o777, 0o644);
    }
    assert_eq!(client.read_dir("/d").unwrap().count(), 2000);
    for i in 0..2000 {
        client.unlink(&format!("/d/f{i}")).unwrap();
    }
    assert_eq!(client.stat("/d/f7").unwrap_err().errno, Errno::ENOENT);
    client.rmdir("/d").unwrap();
}

#[test]
fn a_directory_of_50000_entries_lists_completely() {
    let cluster = Cluster::start_with(3, |c| c.readdir_page_size = 500);
    let client = std::sync::Arc::new(cluster.client());
    client.mkdir("/big", 0o755).unwrap();
    let threads: Vec<_> = (0..4)
        .map(|t| {
            let client = client.clone();
            std::thread::spawn(move || {
                for i in (t..50_000).step_by(4) {
                    client.mkdir(&format!("/big/e{i:05}"), 0o755).unwrap();
                }
            })
        })
        .collect();
    for t in threads {
        t.join().unwrap();
    }
    let mut names: Vec<String> = client
        .read_dir("/big")
        .unwrap()
        .map(|e| e.unwrap().name)
        .collect();
    assert_eq!(names.len(), 50_000);
    names.sort();
    names.dedup();
    assert_eq!(names.len(), 50_000, "no entry listed twice");
    assert_eq!(names[0], "e00000");
    assert_eq!(names[49_999], "e49999");
}

#[test]
fn errors_carry_posix_errnos() {
    let cluster = Cluster::start(2);
    let client = cluster.client();
    client.mkdir("/dir", 0o755).unwrap();
    create(&client, "/dir/file");
    let errno = |r: Result<(), sfs_client::SfsError>| r.unwrap_err().errno;
    assert_eq!(errno(client.mkdir("/dir", 0o755)), Errno::EEXIST);
    assert_eq!(
        client
            .open(
                "/dir/file",
                libc::O_CREAT | libc::O_EXCL | libc::O_WRONLY,
                0o644
            )
            .unwrap_err()
            .errno,
        Errno::EEXIST
    );
    assert_eq!(
        client
            .open("/nope/file", libc::O_CREAT | libc::O_WRONLY, 0o644)
            .unwrap_err()
            .errno,
        Errno::ENOENT
    );
    assert_eq!(
        client
            .open("/dir/file/x", libc::O_CREAT | libc::O_WRONLY, 0o644)
            .unwrap_err()
            .errno,
        Errno::ENOTDIR
    );
    assert_eq!(
        client
            .open("/missing", libc::O_RDONLY, 0)
            .unwrap_err()
            .errno,
        Errno::ENOENT
    );
    assert_eq!(
        client.open("/dir", libc::O_WRONLY, 0).unwrap_err().errno,
        Errno::EISDIR
    );
    assert_eq!(
        client
            .open("/dir/file", libc::O_RDONLY | libc::O_DIRECTORY, 0)
            .unwrap_err()
            .errno,
        Errno::ENOTDIR
    );
    assert_eq!(errno(client.rmdir("/dir")), Errno::ENOTEMPTY);
    assert_eq!(errno(client.rmdir("/dir/file")), Errno::ENOTDIR);
    assert_eq!(errno(client.unlink("/dir")), Errno::EISDIR);
    assert_eq!(errno(client.unlink("/dir/none")), Errno::ENOENT);
    assert_eq!(errno(client.mkdir("/../escape", 0o755)), Errno::EINVAL);
    assert_eq!(
        errno(client.mkdir(&format!("/{}", "n".repeat(300)), 0o755)),
        Errno::ENAMETOOLONG
    );
    let fd = client.open("/dir/file", libc::O_RDONLY, 0).unwrap();
    assert_eq!(client.write(fd, b"x").unwrap_err().errno, Errno::EBADF);
    assert_eq!(
        client.pwrite(99_999, b"x", 0).unwrap_err().errno,
        Errno::EBADF
    );
    assert_eq!(
        client
            .lseek(fd, -1, sfs_client::Whence::Set)
            .unwrap_err()
            .errno,
        Errno::EINVAL
    );
    let fd_w = client.open("/dir/file", libc::O_WRONLY, 0).unwrap();
    assert_eq!(
        client
            .pwrite(fd_w, b"x", i64::MAX as u64)
            .unwrap_err()
            .errno,
        Errno::EFBIG
    );
    client.close(fd).unwrap();
    assert_eq!(client.close(fd).unwrap_err().errno, Errno::EBADF);
}

#[test]
fn rename_replaces_files_and_moves_whole_directories() {
    let cluster = Cluster::start(3);
    let client = cluster.client();
    // File over an existing file: the target's old data is gone, the
    // source's data is reachable under the new name.
    let fd = client
        .open("/a", libc::O_WRONLY | libc::O_CREAT, 0o644)
        .unwrap();
    client.write(fd, b"new contents").unwrap();
    client.close(fd).unwrap();
    let fd = client
        .open("/b", libc::O_WRONLY | libc::O_CREAT, 0o644)
        .unwrap();
    client.write(fd, b"old").unwrap();
    client.close(fd).unwrap();
    client.rename("/a", "/b").unwrap();
    assert_eq!(client.stat("/a").unwrap_err().errno, Errno::ENOENT);
    let fd = client.open("/b", libc::O_RDONLY, 0).unwrap();
    let mut buf = [0u8; 64];
    let n = client.read(fd, &mut buf).unwrap();
    assert_eq!(&buf[..n], b"new contents");
    client.close(fd).unwrap();

    // A file held open while another client renames another file over its
    // path: calls through the descriptor fail with ESTALE instead of
    // touching the newcomer. (A rename by the holder itself keeps the
    // descriptor on the old data: tests/open_files.rs.)
    let held = client
        .open("/held", libc::O_RDWR | libc::O_CREAT, 0o644)
        .unwrap();
    client.write(held, b"held data").unwrap();
    cluster.client().rename("/b", "/held").unwrap();
    assert_eq!(client.write(held, b"x").unwrap_err().errno, Errno::ESTALE);
    assert_eq!(client.fstat(held).unwrap_err().errno, Errno::ESTALE);
    assert_eq!(
        client.read(held, &mut buf).unwrap_err().errno,
        Errno::ESTALE
    );
    client.close(held).unwrap();
    assert_eq!(client.stat("/held").unwrap().size, 12, "newcomer untouched");
    client.rename("/held", "/b").unwrap();

    // A non-empty directory tree, three levels deep, with data.
    client.mkdir("/src", 0o755).unwrap();
    client.mkdir("/src/sub", 0o700).unwrap();
    client.mkdir("/src/sub/deeper", 0o755).unwrap();
    for (i, p) in ["/src/f", "/src/sub/g", "/src/sub/deeper/h"]
        .iter()
        .enumerate()
    {
        let fd = client
            .open(p, libc::O_WRONLY | libc::O_CREAT, 0o644)
            .unwrap();
        client.write(fd, format!("file {i}").as_bytes()).unwrap();
        client.close(fd).unwrap();
    }
    client.symlink("sub/g", "/src/link").unwrap();
    client.mkdir("/dst", 0o755).unwrap(); // an empty directory may be replaced
    client.rename("/src", "/dst").unwrap();
    assert_eq!(client.stat("/src").unwrap_err().errno, Errno::ENOENT);
    assert_eq!(client.stat("/src/sub/g").unwrap_err().errno, Errno::ENOENT);
    for (i, p) in ["/dst/f", "/dst/sub/g", "/dst/sub/deeper/h"]
        .iter()
        .enumerate()
    {
        let fd = client.open(p, libc::O_RDONLY, 0).unwrap();
        let n = client.read(fd, &mut buf).unwrap();
        assert_eq!(&buf[..n], format!("file {i}").as_bytes(), "{p}");
        client.close(fd).unwrap();
    }
    assert_eq!(client.stat("/dst/sub").unwrap().mode & 0o777, 0o700);
    assert_eq!(client.readlink("/dst/link").unwrap(), "sub/g");
    assert_eq!(
        client.stat("/dst/link").unwrap().size,
        6,
        "relative link resolves in its new place"
    );
    let mut names: Vec<String> = client
        .read_dir("/dst")
        .unwrap()
        .map(|e| e.unwrap().name)
        .collect();
    names.sort();
    assert_eq!(names, ["f", "link", "sub"]);

    // rename(2)'s refusals.
    client.mkdir("/full", 0o755).unwrap();
    create(&client, "/full/x");
    create(&client, "/plain");
    assert_eq!(
        client.rename("/dst", "/full").unwrap_err().errno,
        Errno::ENOTEMPTY
    );
    assert_eq!(
        client.rename("/plain", "/full").unwrap_err().errno,
        Errno::EISDIR
    );
    assert_eq!(
        client.rename("/dst", "/plain").unwrap_err().errno,
        Errno::ENOTDIR
    );
    assert_eq!(
        client.rename("/dst", "/dst/sub/inside").unwrap_err().errno,
        Errno::EINVAL
    );
    assert_eq!(
        client.rename("/missing", "/x").unwrap_err().errno,
        Errno::ENOENT
    );
}

#[test]
fn symlinks_attributes_and_statfs() {
    let cluster = Cluster::start(2);
    let client = cluster.client();
    create(&client, "/target");
    client.symlink("/sfs/target", "/abs").unwrap();
    client.symlink("target", "/rel").unwrap();
    client.symlink("loop", "/loop").unwrap();
    assert_eq!(client.lstat("/abs").unwrap().kind(), FileKind::Symlink);
    assert_eq!(client.stat("/abs").unwrap().kind(), FileKind::File);
    assert_eq!(
        client.stat("/rel").unwrap().id,
        client.stat("/target").unwrap().id
    );
    assert_eq!(client.stat("/loop").unwrap_err().errno, Errno::ELOOP);
    assert_eq!(client.readlink("/target").unwrap_err().errno, Errno::EINVAL);
    assert_eq!(
        client
            .open("/rel", libc::O_RDONLY | libc::O_NOFOLLOW, 0)
            .unwrap_err()
            .errno,
        Errno::ELOOP
    );

    client.chmod("/rel", 0o600).unwrap();
    assert_eq!(client.stat("/target").unwrap().mode, libc::S_IFREG | 0o600);
    client.chown("/target", Some(1234), None).unwrap();
    client
        .utimens("/target", Some(1_000_000_000), Some(2_000_000_000))
        .unwrap();
    let md = client.stat("/target").unwrap();
    assert_eq!(
        (md.uid, md.atime_ns, md.mtime_ns),
        (1234, 1_000_000_000, 2_000_000_000)
    );
    assert!(md.ctime_ns > 2_000_000_000, "ctime maintained");

    let fs = client.statfs().unwrap();
    assert_eq!(fs.servers, 2);
    assert!(fs.capacity_bytes > 0 && fs.free_bytes <= fs.capacity_bytes);
    assert!(fs.entries >= 4);
}

/// A directory's new times reach the client that changed it at once, and
/// other clients once the batch is due and that client makes a call, or
/// when it is dropped (sfs_client::dir_times).
#[test]
fn directory_times_reach_other_clients_in_batches() {
    let cluster = Cluster::start(3);
    let (a, b) = (cluster.client(), cluster.client());
    a.mkdir("/d", 0o755).unwrap();
    let mtime = |c: &sfs_client::Client| c.stat("/d").unwrap().mtime_ns;
    let made = mtime(&b);
    std::thread::sleep(std::time::Duration::from_millis(5));
    create(&a, "/d/f");
    let seen_by_a = mtime(&a);
    assert!(seen_by_a > made, "the changing client sees its change");
    assert_eq!(mtime(&b), seen_by_a, "a's stat sent it");
    create(&a, "/d/g");
    std::thread::sleep(sfs_client::dir_times::WINDOW + std::time::Duration::from_millis(10));
    a.lstat("/").unwrap(); // any call once the batch is due
    assert!(
        mtime(&b) > seen_by_a,
        "sent with a's next call after the window"
    );
    let before_drop = mtime(&b);
    std::thread::sleep(std::time::Duration::from_millis(5));
    create(&a, "/d/h");
    drop(a);
    assert!(mtime(&b) > before_drop, "sent when a was dropped");
}
