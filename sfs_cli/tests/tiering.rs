//! Tiering through real servers: `sfs flush` copies a file's chunks from
//! every server into the `dir` object back end, byte for byte, and nothing
//! reaches the back end without a flush (policy `explicit`); a store
//! smaller than the data drains, evicts and reads back through the shim;
//! dirty data left by servers killed mid-write-back reaches the back end
//! after a restart.

mod common;
mod shim_support;

use common::{pattern, write_at, Cluster};
use sfs_client::FileId;
use sfs_global::config::WritebackPolicy;
use sfs_server::backend::dir::DirBackend;
use sfs_server::backend::ObjectBackend;
use shim_support::{assert_ok, text, under_shim};
use std::path::{Path, PathBuf};
use std::time::{Duration, Instant};

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
    write_at(&client, "/f", 0, &data);
    write_at(&client, "/empty", 0, &[]);
    let f = client.stat("/f").unwrap().id;

    let out = cluster.sfs_ok(&["flush", "/f"]);
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
    write_at(&client, "/g", 0, &g_data);
    let g = client.stat("/g").unwrap().id;
    let patch = pattern(3, chunk);
    write_at(&client, "/f", chunk as u64 / 2, &patch);
    assert!(object(&backend, g).is_none());
    assert!(
        object(&backend, f).unwrap() == data,
        "unflushed write reached the back end"
    );

    let mut now = data.clone();
    now[chunk / 2..chunk / 2 + chunk].copy_from_slice(&patch);
    let run = cluster.sfs(&["flush", "-r", "/"]);
    assert!(run.status.success());
    let out = String::from_utf8_lossy(&run.stdout);
    assert!(
        out.contains(&format!("/g: {} bytes", g_data.len())),
        "{out}"
    );
    // The last progress line (stderr, not a terminal here): every file.
    let progress = String::from_utf8_lossy(&run.stderr);
    assert!(
        progress
            .lines()
            .last()
            .unwrap_or("")
            .starts_with("flush: 3/3 files"),
        "{progress}"
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

    // In slices of 1 MiB (8 chunks): 4 requests for /f, one line for it,
    // every chunk written once, the object whole.
    let patch = pattern(4, 3 * chunk);
    write_at(&client, "/f", (len - 3 * chunk) as u64, &patch);
    now[len - 3 * chunk..].copy_from_slice(&patch);
    let run = cluster.sfs(&["flush", "--slice-mib", "1", "/f"]);
    assert!(run.status.success(), "{run:?}");
    let out = String::from_utf8_lossy(&run.stdout);
    assert_eq!(out.matches("/f: ").count(), 1, "{out}");
    assert!(
        out.contains(&format!("total: 1 files, {len} bytes in 25 chunks")),
        "{out}"
    );
    assert!(
        object(&backend, f).unwrap() == now,
        "object differs from /f after a flush in slices"
    );
}

#[test]
fn flush_follows_symlinks_and_refuses_directories_without_r() {
    let cluster = Cluster::start(2);
    let client = cluster.client();
    write_at(&client, "/data", 0, b"through a link");
    client.symlink("data", "/link").unwrap();
    let out = cluster.sfs_ok(&["flush", "/link"]);
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

/// Each server's `tiering` object of `sfs status --json`.
fn tiering(cluster: &Cluster) -> Vec<serde_json::Value> {
    let out = cluster.sfs(&["status", "--json"]);
    assert!(
        out.status.success(),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
    let report: serde_json::Value = serde_json::from_slice(&out.stdout).unwrap();
    report["servers"]
        .as_array()
        .unwrap()
        .iter()
        .map(|s| {
            let mut t = s["tiering"].clone();
            t["chunk_bytes"] = s["chunk_bytes"].clone();
            t
        })
        .collect()
}

fn total(servers: &[serde_json::Value], field: &str) -> u64 {
    servers.iter().map(|s| s[field].as_u64().unwrap()).sum()
}

/// Three times the servers' combined chunk-store capacity, written and read
/// back through the shim with unmodified `cp` and `cmp`: writers wait for
/// the write-back and eviction instead of failing, and evicted chunks come
/// back from the object back end.
#[test]
fn three_times_the_capacity_goes_through_the_shim_byte_exact() {
    const CAPACITY: u64 = 2 << 20;
    let cluster = Cluster::start_with(2, |c| {
        c.chunk_size = 64 << 10;
        c.chunk_store_capacity = CAPACITY;
    });
    let script = r#"
set -euo pipefail
src=$(mktemp -d)
trap 'rm -rf "$src"' EXIT
for i in 1 2 3 4 5 6; do
  head -c $((2 * 1024 * 1024 + i * 1000)) /dev/urandom > "$src/f$i"
  cp "$src/f$i" "$1/f$i"
done
for i in 1 2 3 4 5 6; do cmp "$src/f$i" "$1/f$i"; done
# Once more, in the other order, after the last files pushed the first out.
for i in 6 5 4 3 2 1; do cmp "$src/f$i" "$1/f$i"; done
echo all-equal
"#;
    let out = under_shim(&cluster, script, &["/sfs"]);
    assert_ok("writing 3x the capacity", &out);
    assert!(text(&out.stdout).contains("all-equal"));
    let servers = tiering(&cluster);
    for s in &servers {
        assert!(s["chunk_bytes"].as_u64().unwrap() <= CAPACITY, "{s}");
        assert_eq!(s["writeback"], "explicit");
    }
    assert!(total(&servers, "evicted_bytes") >= 6 << 20, "{servers:?}");
    assert!(total(&servers, "fetched_bytes") > 0, "{servers:?}");
    assert_eq!(total(&servers, "writeback_errors"), 0);
}

/// Randomized crash trials: servers write back on their own (`idle`,
/// 20 ms) and are killed with SIGKILL at a random moment after a batch of
/// writes — before, during or after their write-back. After a restart every
/// byte is readable, and once no server reports dirty data, every file's
/// object in the back end equals the file.
#[test]
fn killed_servers_resume_their_write_back() {
    let mut cluster = Cluster::start_with(2, |c| {
        c.chunk_size = 16 << 10;
        c.backend.writeback = WritebackPolicy::Idle;
        c.backend.idle_ms = 20;
    });
    let backend = cluster.config.backend_dir();
    let mut seed = 0x5eed_u64;
    let mut random = move |below: u64| {
        // xorshift: reproducible trials without a dependency.
        seed ^= seed << 13;
        seed ^= seed >> 7;
        seed ^= seed << 17;
        seed % below
    };
    let mut files: Vec<(String, Vec<u8>)> = Vec::new();
    for trial in 0..20u64 {
        let client = cluster.client();
        for n in 0..3 {
            let path = format!("/t{trial}-{n}");
            let data = pattern(trial * 10 + n, 1 + random(200_000) as usize);
            write_at(&client, &path, 0, &data);
            files.push((path, data));
        }
        // Rewrite part of an earlier file: a chunk dirty again after its
        // write-back must reach the back end too.
        let which = random(files.len() as u64) as usize;
        let (path, data) = &mut files[which];
        if data.len() > 100 {
            let at = random(data.len() as u64 - 100) as usize;
            let patch = pattern(1000 + trial, 100);
            write_at(&client, path, at as u64, &patch);
            data[at..at + 100].copy_from_slice(&patch);
        }
        drop(client);
        std::thread::sleep(Duration::from_millis(random(60)));
        let victim = random(2) as usize;
        cluster.kill9(victim);
        cluster.restart_stopped();
    }
    let client = cluster.client();
    let deadline = Instant::now() + Duration::from_secs(60);
    while total(&tiering(&cluster), "dirty_files") > 0 {
        assert!(Instant::now() < deadline, "dirty data never written back");
        std::thread::sleep(Duration::from_millis(50));
    }
    for (path, data) in &files {
        let fd = client.open(path, libc::O_RDONLY, 0).unwrap();
        let mut back = vec![0u8; data.len()];
        assert_eq!(client.pread(fd, &mut back, 0).unwrap(), data.len());
        client.close(fd).unwrap();
        assert!(&back == data, "{path} differs after the restarts");
        let id = client.stat(path).unwrap().id;
        assert!(
            object(&backend, id).as_ref() == Some(data),
            "{path}: the back end's object differs from the file"
        );
    }
}

/// `backend.fsync_to_backend`: `fsync` returns once the back end holds the
/// file; without it, `fsync` leaves the back end alone (policy `explicit`).
#[test]
fn fsync_reaches_the_back_end_only_when_configured() {
    for to_backend in [false, true] {
        let cluster = Cluster::start_with(2, |c| {
            c.chunk_size = 64 << 10;
            c.backend.fsync_to_backend = to_backend;
        });
        let client = cluster.client();
        let data = pattern(9, 300_000);
        let fd = client
            .open("/synced", libc::O_WRONLY | libc::O_CREAT, 0o644)
            .unwrap();
        assert_eq!(client.pwrite(fd, &data, 0).unwrap(), data.len());
        client.fsync(fd).unwrap();
        let id = client.stat("/synced").unwrap().id;
        let object = object(&cluster.config.backend_dir(), id);
        if to_backend {
            assert!(
                object.as_ref() == Some(&data),
                "fsync did not reach the back end"
            );
        } else {
            assert!(
                object.is_none(),
                "fsync wrote back without being configured to"
            );
        }
        client.close(fd).unwrap();
    }
}

/// `close` policy: the last close of a descriptor that wrote makes every
/// server write the file back; a file still open stays in the chunk
/// stores (its idle time here is ten minutes).
#[test]
fn the_close_policy_writes_back_at_the_writers_last_close() {
    let mut backend = PathBuf::new();
    let cluster = Cluster::start_with(3, |c| {
        c.chunk_size = 64 << 10;
        c.backend.writeback = WritebackPolicy::Close;
        c.backend.idle_ms = 600_000;
        backend = PathBuf::from(&c.rootdir).with_file_name("backend");
        c.backend.path = backend.display().to_string();
    });
    let client = cluster.client();
    let data = pattern(9, 300_000);
    let open_flags = libc::O_WRONLY | libc::O_CREAT;
    let closed = client.open("/closed", open_flags, 0o644).unwrap();
    let twin = client.dup(closed).unwrap();
    let still_open = client.open("/open", open_flags, 0o644).unwrap();
    for fd in [closed, still_open] {
        assert_eq!(client.pwrite(fd, &data, 0).unwrap(), data.len());
    }
    let (closed_id, open_id) = (
        client.stat("/closed").unwrap().id,
        client.stat("/open").unwrap().id,
    );
    client.close(closed).unwrap();
    std::thread::sleep(Duration::from_millis(500));
    assert!(
        object(&backend, closed_id).is_none(),
        "written back while a duplicate descriptor was open"
    );
    client.close(twin).unwrap();
    let deadline = Instant::now() + Duration::from_secs(20);
    while object(&backend, closed_id).as_deref() != Some(&data[..]) {
        assert!(
            Instant::now() < deadline,
            "not written back after its close"
        );
        std::thread::sleep(Duration::from_millis(20));
    }
    assert!(
        object(&backend, open_id).is_none(),
        "an open file was written back"
    );
    client.close(still_open).unwrap();
}
