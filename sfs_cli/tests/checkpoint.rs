//! A namespace that outlives the job: `sfs stop --flush` (and `sfs
//! checkpoint`) write every file and the namespace into the object back
//! end; servers started with `--restore` on fresh rootdirs — another
//! number of them, another chunk size — serve the same tree, byte for byte,
//! reading data back from the objects on first access. `sfs fsck` finds
//! what does not match between the back end, the servers and the names.

mod common;

use common::{pattern, write_at, Cluster};
use sfs_client::{Client, FileId, FileKind, Metadata};
use sfs_global::config::Config;
use sfs_server::backend::dir::DirBackend;
use sfs_server::backend::ObjectBackend;
use std::collections::BTreeMap;
use std::path::Path;

fn read_all(client: &Client, path: &str, size: u64) -> Vec<u8> {
    let mut buf = vec![0u8; size as usize + 10];
    let fd = client.open(path, libc::O_RDONLY, 0).unwrap();
    let mut done = 0;
    loop {
        let n = client.pread(fd, &mut buf[done..], done as u64).unwrap();
        if n == 0 {
            break;
        }
        done += n;
    }
    client.close(fd).unwrap();
    buf.truncate(done);
    buf
}

/// What a person would compare: kind, mode, owner, size, times, link
/// target, file id, and a regular file's bytes.
#[derive(Debug, PartialEq)]
struct Seen {
    kind: FileKind,
    mode: u32,
    uid: u32,
    gid: u32,
    size: u64,
    mtime_ns: i64,
    link_target: String,
    id: FileId,
    data: Option<Vec<u8>>,
}

fn seen(client: &Client, path: &str, md: Metadata) -> Seen {
    let data = (md.kind() == FileKind::File).then(|| read_all(client, path, md.size));
    Seen {
        kind: md.kind(),
        mode: md.mode,
        uid: md.uid,
        gid: md.gid,
        size: md.size,
        mtime_ns: md.mtime_ns,
        link_target: md.link_target.clone(),
        id: md.id,
        data,
    }
}

/// Every entry under `/`, by path.
fn tree(client: &Client) -> BTreeMap<String, Seen> {
    let mut out = BTreeMap::new();
    let mut dirs = vec!["/".to_string()];
    while let Some(dir) = dirs.pop() {
        let entries: Vec<_> = client
            .read_dir(&dir)
            .unwrap()
            .collect::<Result<_, _>>()
            .unwrap();
        for entry in entries {
            let path = sfs_global::path::join(&dir, &entry.name);
            let md = client.lstat(&path).unwrap();
            if md.is_dir() {
                dirs.push(path.clone());
            }
            out.insert(path.clone(), seen(client, &path, md));
        }
    }
    out
}

/// Servers on a fresh rootdir of their own, flushing to `backend`.
fn tuned(backend: &Path, chunk_size: u64) -> impl FnOnce(&mut Config) {
    let backend = backend.display().to_string();
    move |c: &mut Config| {
        c.chunk_size = chunk_size;
        c.backend.path = backend;
    }
}

/// Runs `call` on the `dir` back end at `root`, to its end.
fn on_backend<T>(root: &Path, call: impl AsyncFnOnce(&DirBackend) -> T) -> T {
    let runtime = tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .build()
        .unwrap();
    let backend = DirBackend::open(root).unwrap();
    runtime.block_on(call(&backend))
}

/// The reserved objects (manifests and dumps) in the back end.
fn reserved_objects(backend: &Path) -> Vec<FileId> {
    let mut ids: Vec<FileId> = on_backend(backend, async |b| b.list().await.unwrap())
        .into_iter()
        .filter(|id| id.is_reserved())
        .collect();
    ids.sort();
    ids
}

fn object_exists(backend: &Path, id: FileId) -> bool {
    on_backend(backend, async |b| b.stat(id).await.unwrap().is_some())
}

fn stop_all_by_command(cluster: &mut Cluster, args: &[&str]) -> String {
    let out = cluster.sfs_ok(args);
    for i in 0..cluster.hostfile.len() {
        assert!(cluster.wait_exit(i).success(), "server {i} failed to stop");
    }
    out
}

#[test]
fn a_namespace_outlives_its_job_on_other_server_counts_and_chunk_sizes() {
    let shared = tempfile::tempdir().unwrap();
    let backend = shared.path().join("backend");

    // Job 1: three servers, 64 KiB chunks.
    let mut job1 = Cluster::start_with(3, tuned(&backend, 64 << 10));
    let client = job1.client();
    client.mkdir("/d", 0o755).unwrap();
    client.mkdir("/d/e", 0o750).unwrap();
    client.mkdir("/d/empty-dir", 0o700).unwrap();
    write_at(&client, "/d/big", 0, &pattern(1, (1 << 20) + 123));
    write_at(&client, "/d/e/small", 0, &pattern(2, 100));
    write_at(&client, "/empty", 0, &[]);
    // A hole, then 10 bytes: the object holds only what was written.
    write_at(&client, "/sparse", 300 << 10, &pattern(3, 10));
    client.symlink("e/small", "/d/link").unwrap();
    client.chmod("/d/e/small", 0o600).unwrap();
    client
        .utimens(
            "/d/big",
            Some(1_000_000_000),
            Some(1_600_000_000_123_456_789),
        )
        .unwrap();
    let before = tree(&client);
    assert_eq!(before.len(), 8, "{before:#?}");
    drop(client);
    let out = stop_all_by_command(&mut job1, &["stop", "--flush"]);
    assert!(out.contains("committed"), "{out}");
    assert!(out.contains(": 9 entries"), "the root and 8 entries: {out}");
    drop(job1); // its rootdirs go with it: only the back end remains

    // Job 2: two servers, 128 KiB chunks, restored.
    let mut job2 = Cluster::try_start_with(2, &["--restore"], tuned(&backend, 128 << 10)).unwrap();
    let client = job2.client();
    assert_eq!(tree(&client), before, "the restored tree differs");
    let root = client.stat("/").unwrap();
    assert!(root.is_dir());
    // Restarted (without --restore), the servers still know that the
    // restored files live in the back end (their journals say so).
    drop(client);
    job2.stop_all();
    job2.restart_stopped();
    let client = job2.client();
    assert_eq!(tree(&client), before, "the tree differs after a restart");

    // Change it: a partial write into a chunk only the back end holds
    // (fetched first, so the rest of it keeps its bytes), a new file, an
    // unlink (its object goes), a truncate.
    let small_id = client.stat("/d/e/small").unwrap().id;
    write_at(&client, "/d/big", 70_000, b"CHANGED");
    write_at(&client, "/new", 0, &pattern(4, 200_000));
    client.unlink("/d/e/small").unwrap();
    client.truncate("/sparse", 5).unwrap();
    let mut expected_big = pattern(1, (1 << 20) + 123);
    expected_big[70_000..70_007].copy_from_slice(b"CHANGED");
    assert_eq!(
        read_all(&client, "/d/big", expected_big.len() as u64),
        expected_big
    );
    let changed = tree(&client);
    assert_eq!(changed.len(), 8);
    assert!(!changed.contains_key("/d/e/small"));
    assert!(
        !object_exists(&backend, small_id),
        "an unlinked restored file keeps its object"
    );
    drop(client);
    let out = job2.sfs_ok(&["checkpoint"]);
    assert!(out.contains("committed"), "{out}");
    job2.stop_all();
    // The first checkpoint's dumps are gone: its manifest slot may stay
    // (the other one is valid), plus two dumps of the second.
    let reserved = reserved_objects(&backend);
    assert!(
        (3..=4).contains(&reserved.len()),
        "manifests and the current dumps only: {reserved:?}"
    );
    drop(job2);

    // Job 3: four servers, the second checkpoint.
    let job3 = Cluster::try_start_with(4, &["--restore"], tuned(&backend, 64 << 10)).unwrap();
    let client = job3.client();
    let restored = tree(&client);
    assert_eq!(restored, changed, "the second restore differs");
    assert_eq!(
        restored["/d/big"].data.as_deref(),
        Some(expected_big.as_slice())
    );
    assert_eq!(
        restored["/sparse"].data.as_deref(),
        Some(&[0u8; 5][..]),
        "the truncate of a restored file"
    );
}

#[test]
fn a_restore_needs_a_checkpoint_and_a_fresh_rootdir() {
    let shared = tempfile::tempdir().unwrap();
    let backend = shared.path().join("backend");
    // Through `sfs start --restore`, as a job script runs it.
    let mut config = Config {
        rootdir: shared.path().join("root").display().to_string(),
        data_port_offset: 0,
        ..Config::default()
    };
    tuned(&backend, 64 << 10)(&mut config);
    let config_path = shared.path().join("config.json");
    std::fs::write(&config_path, config.to_json_pretty()).unwrap();
    let port = std::net::TcpListener::bind("127.0.0.1:0")
        .unwrap()
        .local_addr()
        .unwrap()
        .port();
    let hostfile_path = shared.path().join("hostfile");
    std::fs::write(&hostfile_path, format!("s0 127.0.0.1:{port}\n")).unwrap();
    let sfs = |args: &[&str]| {
        std::process::Command::new(common::SFS)
            .arg("--config")
            .arg(&config_path)
            .arg("--hostfile")
            .arg(&hostfile_path)
            .args(args)
            .output()
            .unwrap()
    };
    let out = sfs(&["start", "--restore"]);
    if out.status.success() {
        sfs(&["stop"]);
        panic!("a restore from an empty back end started");
    }
    let refused = String::from_utf8_lossy(&out.stderr);
    assert!(
        refused.contains("holds no checkpoint") && refused.contains("sfs stop --flush"),
        "{refused}"
    );

    let mut job = Cluster::start_with(1, tuned(&backend, 64 << 10));
    write_at(&job.client(), "/f", 0, b"data");
    job.sfs_ok(&["checkpoint"]);
    job.stop_all();
    // The same rootdir again, with --restore: its store is not empty.
    let config_path = job.config_path.clone();
    let hostfile_path = job.hostfile_path.clone();
    let mut server = std::process::Command::new(common::SFS)
        .arg("--config")
        .arg(&config_path)
        .arg("--hostfile")
        .arg(&hostfile_path)
        .args(["server", "--id", "s0", "--restore"])
        .stdout(std::process::Stdio::null())
        .stderr(std::process::Stdio::piped())
        .spawn()
        .unwrap();
    let deadline = std::time::Instant::now() + std::time::Duration::from_secs(60);
    let status = loop {
        if let Some(status) = server.try_wait().unwrap() {
            break status;
        }
        if std::time::Instant::now() > deadline {
            let _ = server.kill();
            panic!("a restore into a used rootdir started serving");
        }
        std::thread::sleep(std::time::Duration::from_millis(20));
    };
    assert!(!status.success());
    let mut log = String::new();
    std::io::Read::read_to_string(&mut server.stderr.take().unwrap(), &mut log).unwrap();
    assert!(
        log.contains("not empty") && log.contains("fresh rootdir"),
        "{log}"
    );
}

/// Writes `data` as object `id` of the `dir` back end at `backend`.
fn put_object(backend: &Path, id: FileId, data: &[u8]) {
    on_backend(backend, async |b| {
        b.write(id, 0, data).await.unwrap();
        b.persist(id).await.unwrap();
    })
}

fn delete_object(backend: &Path, id: FileId) {
    on_backend(backend, async |b| b.delete(id).await.unwrap())
}

#[test]
fn fsck_finds_orphans_and_missing_objects_and_repairs_what_it_can() {
    let shared = tempfile::tempdir().unwrap();
    let backend = shared.path().join("backend");
    let mut job = Cluster::start_with(2, tuned(&backend, 64 << 10));
    let client = job.client();
    for (i, name) in ["/a", "/b", "/c"].iter().enumerate() {
        write_at(&client, name, 0, &pattern(i as u64, 200_000));
    }
    job.sfs_ok(&["flush", "/a", "/b"]);
    job.sfs_ok(&["checkpoint"]);
    let out = job.sfs_ok(&["fsck"]);
    assert!(
        out.contains("4 entries (3 files)") && out.contains(": 0 problems"),
        "{out}"
    );

    // Damage of four kinds.
    let orphan_object = FileId::from_parts(0xdead, 1);
    put_object(&backend, orphan_object, b"nobody's bytes");
    let stale_dump = sfs_global::checkpoint::dump_object(12_345, 0);
    put_object(
        &backend,
        stale_dump,
        b"a dump of a checkpoint never committed",
    );
    let b = client.stat("/b").unwrap().id;
    delete_object(&backend, b);
    drop(client);
    job.stop(0);
    let orphan_chunks = FileId::from_parts(0xbeef, 2);
    let dir = job
        .config
        .chunk_dir(&job.hostfile.hosts[0].name)
        .join(orphan_chunks.to_hex());
    std::fs::create_dir_all(&dir).unwrap();
    std::fs::write(dir.join("0"), b"chunk of nothing").unwrap();
    std::fs::write(dir.join("3"), b"another").unwrap();
    job.restart_stopped();

    let out = job.sfs(&["fsck"]);
    let text = String::from_utf8_lossy(&out.stdout);
    assert!(!out.status.success(), "problems must fail fsck: {text}");
    for expected in [
        format!("orphan object {orphan_object}"),
        format!("stale checkpoint object {stale_dump}"),
        format!("orphan chunks: server s0 holds 2 chunks of {orphan_chunks}"),
        format!("missing object: /b (file {b})"),
        ": 4 problems (3 removable with --repair)".to_string(),
    ] {
        assert!(text.contains(&expected), "{expected:?} not in:\n{text}");
    }

    let out = job.sfs(&["fsck", "--repair"]);
    let text = String::from_utf8_lossy(&out.stdout);
    assert!(!out.status.success(), "the missing object remains: {text}");
    assert!(text.contains(": 4 problems, 3 repaired"), "{text}");
    assert!(!object_exists(&backend, orphan_object));
    assert!(!object_exists(&backend, stale_dump));
    assert!(!dir.exists(), "orphan chunks still on server 0");

    // The chunks of /b are still on the servers: a flush writes the object
    // again, and nothing is wrong any more.
    job.sfs_ok(&["flush", "/b"]);
    let out = job.sfs_ok(&["fsck"]);
    assert!(out.contains(": 0 problems"), "{out}");
}
