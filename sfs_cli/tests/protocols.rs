//! The client speaks both metadata protocols (config `metadata_rpc`): the
//! same workload through the lean framing and through gRPC must give the
//! same results on the same kind of cluster.

mod common;

use common::Cluster;
use sfs_client::{Client, Errno, FileKind};
use sfs_global::config::MetadataRpc;

/// Creates, lists, renames, writes, reads and removes; returns what it saw
/// so the two protocols can be compared.
fn workload(client: &Client) -> Vec<String> {
    let mut seen = Vec::new();
    client.mkdir("/w", 0o755).unwrap();
    for i in 0..50 {
        let fd = client
            .open(
                &format!("/w/f{i:02}"),
                libc::O_WRONLY | libc::O_CREAT | libc::O_EXCL,
                0o640,
            )
            .unwrap();
        client.write(fd, format!("file {i}").as_bytes()).unwrap();
        client.close(fd).unwrap();
    }
    let mut names: Vec<String> = client
        .read_dir("/w")
        .unwrap()
        .map(|e| {
            let e = e.unwrap();
            format!("{} {}", e.name, e.metadata.size)
        })
        .collect();
    names.sort();
    seen.extend(names);
    client.rename("/w", "/moved").unwrap();
    let fd = client.open("/moved/f07", libc::O_RDONLY, 0).unwrap();
    let mut buf = [0u8; 64];
    let n = client.read(fd, &mut buf).unwrap();
    client.close(fd).unwrap();
    seen.push(String::from_utf8_lossy(&buf[..n]).into_owned());
    let errno = |r: sfs_client::SfsResult<i32>| r.unwrap_err().errno;
    assert_eq!(
        errno(client.open("/w/f00", libc::O_RDONLY, 0)),
        Errno::ENOENT
    );
    assert_eq!(
        errno(client.open("/nope/x", libc::O_CREAT | libc::O_WRONLY, 0o644)),
        Errno::ENOENT
    );
    assert_eq!(
        errno(client.open("/moved/f01/x", libc::O_CREAT | libc::O_WRONLY, 0o644)),
        Errno::ENOTDIR
    );
    client.symlink("moved", "/link").unwrap();
    seen.push(client.readlink("/link").unwrap());
    for i in 0..50 {
        client.unlink(&format!("/moved/f{i:02}")).unwrap();
    }
    client.rmdir("/moved").unwrap();
    client.unlink("/link").unwrap();
    assert_eq!(client.read_dir("/").unwrap().count(), 0);
    seen
}

#[test]
fn lean_and_grpc_clients_see_the_same_file_system() {
    let mut results = Vec::new();
    for protocol in [MetadataRpc::Lean, MetadataRpc::Grpc] {
        let cluster = Cluster::start_with(3, |c| {
            c.metadata_rpc = protocol;
            c.readdir_page_size = 7;
        });
        results.push(workload(&cluster.client()));
    }
    assert_eq!(results[0].len(), 52);
    assert_eq!(results[0][7], "f07 6");
    assert_eq!(results[0][50], "file 7");
    assert_eq!(results[0], results[1]);
}

#[test]
fn a_client_of_either_protocol_uses_servers_the_other_one_filled() {
    let cluster = Cluster::start(2);
    let lean = cluster.client();
    let mut config = cluster.config.clone();
    config.metadata_rpc = MetadataRpc::Grpc;
    let grpc = Client::new(config, cluster.hostfile.clone()).unwrap();
    lean.mkdir("/shared", 0o755).unwrap();
    let fd = grpc
        .open("/shared/g", libc::O_WRONLY | libc::O_CREAT, 0o644)
        .unwrap();
    grpc.write(fd, b"written over grpc").unwrap();
    grpc.close(fd).unwrap();
    assert_eq!(lean.stat("/shared/g").unwrap().size, 17);
    lean.unlink("/shared/g").unwrap();
    assert_eq!(grpc.stat("/shared/g").unwrap_err().errno, Errno::ENOENT);
}

#[test]
fn creating_under_a_symlinked_directory_takes_the_general_path() {
    // One server owns every entry, so creates go out with the server-side
    // parent check; a parent that is a symlink makes the server refuse to
    // decide, and the client resolves it itself.
    let cluster = Cluster::start(1);
    let client = cluster.client();
    client.mkdir("/real", 0o755).unwrap();
    client.symlink("real", "/alias").unwrap();
    let fd = client
        .open(
            "/alias/x",
            libc::O_WRONLY | libc::O_CREAT | libc::O_EXCL,
            0o644,
        )
        .unwrap();
    client.close(fd).unwrap();
    assert_eq!(client.lstat("/alias/x").unwrap().kind(), FileKind::File);
    client.symlink("gone", "/dangling").unwrap();
    let e = client
        .open("/dangling/x", libc::O_WRONLY | libc::O_CREAT, 0o644)
        .unwrap_err();
    assert_eq!(e.errno, Errno::ENOENT, "{e}");
    assert_eq!(
        client.lstat("/dangling/x").unwrap_err().errno,
        Errno::ENOENT
    );
}
