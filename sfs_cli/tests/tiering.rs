//! Tiering through real servers: `sfs flush` copies a file's chunks from
//! every server into the `dir` object back end, byte for byte, and nothing
//! reaches the back end without a flush.

mod common;

use common::Cluster;
use sfs_client::{Client, FileId};
use sfs_server::backend::dir::DirBackend;
use sfs_server::backend::ObjectBackend;
use std::path::{Path, PathBuf};

/// Bytes that differ by position and seed, so a chunk at the wrong offset shows.
fn pattern(seed: u64, len: usize) -> Vec<u8> {
    (0..len as u64)
        .map(|i| (i.wrapping_mul(31).wrapping_add(seed.wrapping_mul(131)) % 251) as u8)
        .collect()
}

fn write_file(client: &Client, path: &str, offset: u64, data: &[u8]) {
    let fd = client
        .open(path, libc::O_WRONLY | libc::O_CREAT, 0o644)
        .unwrap();
    assert_eq!(client.pwrite(fd, data, offset).unwrap(), data.len());
    client.close(fd).unwrap();
}

/// The whole object `id` of the back end at `root`, or `None` if absent.
fn object(root: &Path, id: FileId) -> Option<Vec<u8>> {
    let runtime = tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .build()
        .unwrap();
    runtime.block_on(async {
        let backend = DirBackend::open(root).unwrap();
        let size = backend.stat(id).await.unwrap()?.size;
        Some(backend.read(id, 0, size as usize).await.unwrap())
    })
}

fn flush(cluster: &Cluster, args: &[&str]) -> String {
    let out = cluster.sfs(args);
    assert!(
        out.status.success(),
        "sfs {args:?}: {}",
        String::from_utf8_lossy(&out.stderr)
    );
    String::from_utf8(out.stdout).unwrap()
}

#[test]
fn flush_writes_every_servers_chunks_into_one_object() {
    let mut backend = PathBuf::new();
    let cluster = Cluster::start_with(3, |c| {
        c.chunk_size = 128 << 10;
        backend = PathBuf::from(&c.rootdir).with_file_name("backend");
        c.backend.path = backend.display().to_string();
    });
    let chunk = cluster.config.chunk_size as usize;
    let client = cluster.client();
    // 3 MiB and a piece: 25 chunks over 3 servers, the last one short.
    let len = (3 << 20) + 1000;
    let data = pattern(1, len);
    write_file(&client, "/f", 0, &data);
    write_file(&client, "/empty", 0, &[]);
    let f = client.stat("/f").unwrap().id;

    let out = flush(&cluster, &["flush", "/f"]);
    assert!(out.contains(&format!("/f: {len} bytes")), "{out}");
    assert!(
        out.contains(&format!("total: 1 files, {len} bytes in 25 chunks")),
        "{out}"
    );
    assert!(
        object(&backend, f).unwrap() == data,
        "object differs from /f"
    );

    // Written after the flush: not in the back end until flushed again.
    let g_data = pattern(2, 2 * chunk + 17);
    write_file(&client, "/g", 0, &g_data);
    let g = client.stat("/g").unwrap().id;
    let patch = pattern(3, chunk);
    write_file(&client, "/f", chunk as u64 / 2, &patch);
    assert!(object(&backend, g).is_none());
    assert!(
        object(&backend, f).unwrap() == data,
        "unflushed write reached the back end"
    );

    let mut now = data.clone();
    now[chunk / 2..chunk / 2 + chunk].copy_from_slice(&patch);
    let out = flush(&cluster, &["flush", "-r", "/"]);
    assert!(
        out.contains(&format!("/g: {} bytes", g_data.len())),
        "{out}"
    );
    assert!(out.contains("/empty: 0 bytes"), "{out}");
    assert!(out.contains("total: 3 files"), "{out}");
    assert!(
        object(&backend, f).unwrap() == now,
        "object differs from /f"
    );
    assert!(
        object(&backend, g).unwrap() == g_data,
        "object differs from /g"
    );
    // A file without data on any server creates no object.
    assert!(object(&backend, client.stat("/empty").unwrap().id).is_none());
}

#[test]
fn flush_follows_symlinks_and_refuses_directories_without_r() {
    let cluster = Cluster::start(2);
    let client = cluster.client();
    write_file(&client, "/data", 0, b"through a link");
    client.symlink("data", "/link").unwrap();
    let out = flush(&cluster, &["flush", "/link"]);
    assert!(out.contains("/link: 14 bytes"), "{out}");
    let object = object(
        &cluster.config.backend_dir(),
        client.stat("/data").unwrap().id,
    );
    assert_eq!(object.unwrap(), b"through a link");

    let out = cluster.sfs(&["flush", "/"]);
    assert!(!out.status.success());
    let err = String::from_utf8_lossy(&out.stderr);
    assert!(err.contains("is a directory (use -r)"), "{err}");
    let out = cluster.sfs(&["flush", "/missing"]);
    assert!(!out.status.success());
}
