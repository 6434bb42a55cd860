//! The client library against whole servers running in this test's process
//! (`sfs_server::in_process`): its own rules — placement of entries and
//! chunks over the servers, POSIX namespace semantics across servers, the
//! permission walk — checked without starting a process. The system tests
//! (sfs_cli/tests) run the same library through the `sfs` binary and the
//! shim.

use sfs_client::Client;
use sfs_global::access::Caller;
use sfs_global::config::Config;
use sfs_global::Errno;
use sfs_server::in_process::InProcessCluster;

/// A small chunk, so one file spans every server.
const CHUNK: u64 = 4096;

fn cluster(dir: &tempfile::TempDir, servers: usize) -> InProcessCluster {
    InProcessCluster::start(dir.path(), servers, |config: &mut Config| {
        config.chunk_size = CHUNK;
        config.inline_data_bytes = 0;
    })
    .expect("in-process cluster")
}

fn client(cluster: &InProcessCluster) -> Client {
    Client::with_secret(
        cluster.config.clone(),
        cluster.hostfile.clone(),
        cluster.secret.clone(),
    )
    .expect("client")
}

/// Chunk files each server's store holds.
fn chunks_per_server(cluster: &InProcessCluster) -> Vec<usize> {
    cluster
        .hostfile
        .hosts
        .iter()
        .map(|h| {
            let dir = cluster.config.chunk_dir(&h.name);
            walk_files(&dir)
        })
        .collect()
}

fn walk_files(dir: &std::path::Path) -> usize {
    let Ok(entries) = std::fs::read_dir(dir) else {
        return 0;
    };
    entries
        .flatten()
        .map(|e| match e.file_type() {
            Ok(t) if t.is_dir() => walk_files(&e.path()),
            Ok(t) if t.is_file() && e.file_name().to_string_lossy().parse::<u64>().is_ok() => 1,
            _ => 0,
        })
        .sum()
}

#[test]
fn a_files_chunks_go_to_every_server_and_read_back_whole() {
    let dir = tempfile::tempdir().unwrap();
    let cluster = cluster(&dir, 3);
    let client = client(&cluster);
    // 24 chunks and a piece, written at an unaligned offset in two calls.
    let data: Vec<u8> = (0..24 * CHUNK + 100).map(|i| (i * 7 % 251) as u8).collect();
    let fd = client
        .open("/spread", libc::O_CREAT | libc::O_RDWR, 0o644)
        .unwrap();
    let half = data.len() / 2 + 17;
    assert_eq!(client.pwrite(fd, &data[..half], 0).unwrap(), half);
    assert_eq!(
        client.pwrite(fd, &data[half..], half as u64).unwrap(),
        data.len() - half
    );
    let mut back = vec![0u8; data.len() + 10];
    assert_eq!(client.pread(fd, &mut back, 0).unwrap(), data.len());
    assert!(back[..data.len()] == data[..], "read back whole");
    client.close(fd).unwrap();
    assert_eq!(client.stat("/spread").unwrap().size, data.len() as u64);
    let held = chunks_per_server(&cluster);
    assert_eq!(
        held.iter().sum::<usize>(),
        25,
        "one file per chunk: {held:?}"
    );
    assert!(
        held.iter().all(|&n| n > 0),
        "every server holds some of the chunks: {held:?}"
    );
    // Removing the file removes its chunks on every server.
    client.unlink("/spread").unwrap();
    assert_eq!(chunks_per_server(&cluster), vec![0, 0, 0]);
    drop(client);
    cluster.stop().unwrap();
}

#[test]
fn names_move_between_servers_as_posix_says() {
    let dir = tempfile::tempdir().unwrap();
    let cluster = cluster(&dir, 3);
    let client = client(&cluster);
    client.mkdir("/a", 0o755).unwrap();
    client.mkdir("/b", 0o755).unwrap();
    let names: Vec<String> = (0..40).map(|i| format!("/a/f{i}")).collect();
    for name in &names {
        let fd = client
            .open(name, libc::O_CREAT | libc::O_EXCL | libc::O_WRONLY, 0o640)
            .unwrap();
        client.close(fd).unwrap();
    }
    // A listing gathers the names from every server, each once.
    let mut listed: Vec<String> = client
        .read_dir("/a")
        .unwrap()
        .map(|e| e.unwrap().name)
        .collect();
    listed.sort();
    let mut expected: Vec<String> = (0..40).map(|i| format!("f{i}")).collect();
    expected.sort();
    assert_eq!(listed, expected);
    // Renames keep the file (its id) whichever servers the names live on.
    for i in 0..10 {
        let (old, new) = (format!("/a/f{i}"), format!("/b/g{i}"));
        let id = client.stat(&old).unwrap().id;
        client.rename(&old, &new).unwrap();
        assert_eq!(client.stat(&old).unwrap_err().errno, Errno::ENOENT);
        assert_eq!(client.stat(&new).unwrap().id, id, "{old} -> {new}");
    }
    assert_eq!(client.read_dir("/b").unwrap().count(), 10);
    assert_eq!(client.rmdir("/b").unwrap_err().errno, Errno::ENOTEMPTY);
    assert_eq!(
        client
            .open(
                "/a/f20",
                libc::O_CREAT | libc::O_EXCL | libc::O_WRONLY,
                0o640
            )
            .unwrap_err()
            .errno,
        Errno::EEXIST
    );
    assert_eq!(
        client
            .open("/nowhere/x", libc::O_CREAT | libc::O_WRONLY, 0o640)
            .unwrap_err()
            .errno,
        Errno::ENOENT
    );
    drop(client);
    cluster.stop().unwrap();
}

#[test]
fn another_user_is_held_to_the_mode_bits() {
    let dir = tempfile::tempdir().unwrap();
    let cluster = cluster(&dir, 2);
    let client = client(&cluster);
    client.mkdir("/private", 0o700).unwrap();
    client.mkdir("/shared", 0o777).unwrap();
    let fd = client
        .open("/private/secret", libc::O_CREAT | libc::O_WRONLY, 0o600)
        .unwrap();
    client.close(fd).unwrap();
    let user = Caller {
        uid: 4242,
        gid: 4242,
        groups: vec![],
    };
    client.set_caller(Some(user));
    for (what, errno) in [
        (client.stat("/private/secret").map(drop), Errno::EACCES),
        (
            client
                .open("/private/new", libc::O_CREAT | libc::O_WRONLY, 0o644)
                .map(drop),
            Errno::EACCES,
        ),
        (client.unlink("/private/secret"), Errno::EACCES),
        (client.chmod("/private", 0o777), Errno::EPERM),
    ] {
        assert_eq!(what.unwrap_err().errno, errno);
    }
    // Where the bits allow it, the user works, and owns what it makes.
    let fd = client
        .open("/shared/mine", libc::O_CREAT | libc::O_WRONLY, 0o600)
        .unwrap();
    client.close(fd).unwrap();
    let md = client.stat("/shared/mine").unwrap();
    assert_eq!((md.uid, md.gid), (4242, 4242));
    client.set_caller(None);
    assert!(client.stat("/private/secret").is_ok(), "root passes");
    drop(client);
    cluster.stop().unwrap();
}

/// Bytes `offset..offset + len` of `path`, as read through a descriptor.
fn read_range(client: &Client, path: &str, offset: u64, len: usize) -> Vec<u8> {
    let fd = client.open(path, libc::O_RDONLY, 0).unwrap();
    let mut buf = vec![0xEEu8; len];
    let n = client.pread(fd, &mut buf, offset).unwrap();
    client.close(fd).unwrap();
    buf.truncate(n);
    buf
}

#[test]
fn holes_and_truncation_span_the_chunk_servers() {
    let dir = tempfile::tempdir().unwrap();
    let cluster = cluster(&dir, 3);
    let client = client(&cluster);
    // Two bytes far apart: the size is the far end, the gap reads zeros,
    // and only the two chunks written are stored anywhere.
    let fd = client
        .open("/sparse", libc::O_CREAT | libc::O_RDWR, 0o644)
        .unwrap();
    client.pwrite(fd, b"a", 10).unwrap();
    client.pwrite(fd, b"z", 20 * CHUNK + 5).unwrap();
    client.close(fd).unwrap();
    assert_eq!(client.stat("/sparse").unwrap().size, 20 * CHUNK + 6);
    let all = read_range(&client, "/sparse", 0, 21 * CHUNK as usize);
    assert_eq!(all.len() as u64, 20 * CHUNK + 6, "short at the end");
    assert_eq!((all[10], all[20 * CHUNK as usize + 5]), (b'a', b'z'));
    let zeros = all.iter().filter(|&&b| b == 0).count();
    assert_eq!(zeros, all.len() - 2, "the rest reads as zeros");
    assert_eq!(chunks_per_server(&cluster).iter().sum::<usize>(), 2);
    // Filled, then cut inside chunk 3: chunks past the cut are gone from
    // every server, the cut chunk keeps its head, a regrown tail is zeros.
    let full: Vec<u8> = (0..8 * CHUNK).map(|i| (i % 13 + 1) as u8).collect();
    let fd = client
        .open("/cut", libc::O_CREAT | libc::O_RDWR, 0o644)
        .unwrap();
    client.pwrite(fd, &full, 0).unwrap();
    client.close(fd).unwrap();
    let cut = 3 * CHUNK + 100;
    client.truncate("/cut", cut).unwrap();
    assert_eq!(client.stat("/cut").unwrap().size, cut);
    assert_eq!(chunks_per_server(&cluster).iter().sum::<usize>(), 2 + 4);
    client.truncate("/cut", 6 * CHUNK).unwrap();
    let back = read_range(&client, "/cut", 0, 8 * CHUNK as usize);
    assert_eq!(back.len() as u64, 6 * CHUNK);
    assert!(
        back[..cut as usize] == full[..cut as usize],
        "the head stays"
    );
    assert!(
        back[cut as usize..].iter().all(|&b| b == 0),
        "past the old cut: zeros, not the bytes that were there"
    );
    drop(client);
    cluster.stop().unwrap();
}

#[test]
fn links_symlinks_and_attributes_follow_their_files() {
    let dir = tempfile::tempdir().unwrap();
    let cluster = cluster(&dir, 3);
    let client = client(&cluster);
    client.mkdir("/d", 0o755).unwrap();
    let fd = client
        .open("/d/file", libc::O_CREAT | libc::O_WRONLY, 0o644)
        .unwrap();
    client.pwrite(fd, b"linked bytes", 0).unwrap();
    client.close(fd).unwrap();
    // A hard link is the same file under a second name, on any server.
    client.link("/d/file", "/other", false).unwrap();
    let (a, b) = (
        client.stat("/d/file").unwrap(),
        client.stat("/other").unwrap(),
    );
    assert_eq!((a.id, a.nlink, b.nlink), (b.id, 2, 2));
    client.unlink("/d/file").unwrap();
    assert_eq!(client.stat("/other").unwrap().nlink, 1);
    assert_eq!(read_range(&client, "/other", 0, 64), b"linked bytes");
    // A relative symlink resolves from its own directory; lstat sees it.
    client.symlink("../other", "/d/rel").unwrap();
    assert_eq!(client.readlink("/d/rel").unwrap(), "../other");
    assert_eq!(client.stat("/d/rel").unwrap().id, b.id);
    assert_ne!(client.lstat("/d/rel").unwrap().id, b.id);
    assert_eq!(read_range(&client, "/d/rel", 7, 64), b"bytes");
    // Extended attributes go with the file, not the name.
    client
        .set_xattr("/other", b"user.tag", Some(b"v1"), 0, true)
        .unwrap();
    assert_eq!(
        client.get_xattr("/d/rel", b"user.tag", true).unwrap(),
        b"v1"
    );
    assert_eq!(
        client.list_xattrs("/other", true).unwrap(),
        vec![b"user.tag".to_vec()]
    );
    client
        .set_xattr("/other", b"user.tag", None, 0, true)
        .unwrap();
    assert_eq!(
        client
            .get_xattr("/other", b"user.tag", true)
            .unwrap_err()
            .errno,
        Errno::ENODATA
    );
    drop(client);
    cluster.stop().unwrap();
}
