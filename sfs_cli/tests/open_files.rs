//! Open files that lose their name: unlink while open keeps the data until
//! the last close (in the client that unlinked), renames move the
//! descriptors along, and a rename over an open file leaves the open
//! descriptor on the old data.

mod common;

use common::Cluster;
use sfs_client::orphans::orphan_path;
use sfs_client::{Client, Errno, SfsResult};

fn write_file(client: &Client, path: &str, data: &[u8]) -> i32 {
    let fd = client
        .open(path, libc::O_RDWR | libc::O_CREAT | libc::O_TRUNC, 0o644)
        .unwrap();
    assert_eq!(client.write(fd, data).unwrap(), data.len());
    fd
}

fn read_all(client: &Client, fd: i32) -> Vec<u8> {
    let mut buf = vec![0u8; 1 << 20];
    let n = client.pread(fd, &mut buf, 0).unwrap();
    buf.truncate(n);
    buf
}

fn contents(client: &Client, path: &str) -> SfsResult<Vec<u8>> {
    let fd = client.open(path, libc::O_RDONLY, 0)?;
    let data = read_all(client, fd);
    client.close(fd)?;
    Ok(data)
}

fn names(client: &Client, dir: &str) -> Vec<String> {
    let mut names: Vec<String> = client
        .read_dir(dir)
        .unwrap()
        .map(|e| e.unwrap().name)
        .collect();
    names.sort();
    names
}

#[test]
fn an_unlinked_open_file_lives_until_its_last_close() {
    let cluster = Cluster::start(3);
    let client = cluster.client();
    let fd = write_file(&client, "/tmpfile", &vec![7u8; 700_000]);
    let id = client.fstat(fd).unwrap().id;
    let twin = client.dup(fd).unwrap();
    client.unlink("/tmpfile").unwrap();

    // The name is gone for everyone, the file is not.
    assert_eq!(client.stat("/tmpfile").unwrap_err().errno, Errno::ENOENT);
    assert!(names(&client, "/").is_empty(), "orphans are not listed");
    let md = client.fstat(fd).unwrap();
    assert_eq!((md.size, md.nlink), (700_000, 0));
    client.pwrite(fd, b"tail", 700_000).unwrap();
    assert_eq!(read_all(&client, twin).len(), 700_004);
    // A new file under the old name is another file.
    let other = write_file(&client, "/tmpfile", b"new");
    client.close(other).unwrap();
    assert_eq!(read_all(&client, fd)[..4], [7, 7, 7, 7]);

    client.close(fd).unwrap();
    assert!(
        client.lstat(&orphan_path(id)).is_ok(),
        "one descriptor left"
    );
    assert_eq!(read_all(&client, twin).len(), 700_004);
    client.close(twin).unwrap();
    assert_eq!(
        client.lstat(&orphan_path(id)).unwrap_err().errno,
        Errno::ENOENT,
        "the last close removes it"
    );
    assert_eq!(contents(&client, "/tmpfile").unwrap(), b"new");
    // Its chunks went too: only the 3-byte file is left in the stores.
    let used: u64 = client.statfs().unwrap().used_bytes;
    assert_eq!(used, 3);
}

#[test]
fn renames_move_this_clients_descriptors_along() {
    let cluster = Cluster::start(3);
    let client = cluster.client();
    client.mkdir("/d", 0o755).unwrap();
    let fd = write_file(&client, "/d/a", b"first");
    client.rename("/d/a", "/d/b").unwrap();
    client.pwrite(fd, b" second", 5).unwrap();
    assert_eq!(client.fstat(fd).unwrap().size, 12);
    client.rename("/d", "/e").unwrap();
    client.pwrite(fd, b"!", 12).unwrap();
    client.close(fd).unwrap();
    assert_eq!(contents(&client, "/e/b").unwrap(), b"first second!");
}

#[test]
fn a_rename_over_an_open_file_leaves_that_descriptor_on_the_old_data() {
    let cluster = Cluster::start(2);
    let client = cluster.client();
    let old = write_file(&client, "/config", b"old contents");
    let fresh = write_file(&client, "/config.tmp", b"new contents");
    client.close(fresh).unwrap();
    let old_id = client.fstat(old).unwrap().id;
    client.rename("/config.tmp", "/config").unwrap();
    assert_eq!(contents(&client, "/config").unwrap(), b"new contents");
    assert_eq!(read_all(&client, old), b"old contents");
    client.close(old).unwrap();
    assert_eq!(
        client.lstat(&orphan_path(old_id)).unwrap_err().errno,
        Errno::ENOENT
    );
    assert_eq!(names(&client, "/"), ["config"]);
    assert_eq!(contents(&client, "/config").unwrap(), b"new contents");
}

#[test]
fn another_clients_unlink_is_not_deferred() {
    // Servers keep no open counts: a file open in one client and unlinked
    // by another is gone for both (docs/semantics.md).
    let cluster = Cluster::start(2);
    let (holder, other) = (cluster.client(), cluster.client());
    let fd = write_file(&holder, "/shared", b"data");
    other.unlink("/shared").unwrap();
    assert_eq!(holder.fstat(fd).unwrap_err().errno, Errno::ENOENT);
    holder.close(fd).unwrap();
}
