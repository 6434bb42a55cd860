//! The back-end conformance suite: the contract of [`ObjectBackend`]
//! (module documentation of [`super`]) as checks that run unchanged against
//! every implementation. Each back end's tests call [`run_all`] on a fresh,
//! empty store.

use super::ObjectBackend;
use sfs_global::{Errno, FileId};
use std::ops::Range;

/// Bytes that differ by position and seed, so misplaced data shows.
fn pattern(seed: u64, len: usize) -> Vec<u8> {
    (0..len as u64)
        .map(|i| (i.wrapping_mul(31).wrapping_add(seed.wrapping_mul(131)) % 251) as u8)
        .collect()
}

/// Runs every check; panics with the first failure, naming the back end.
pub async fn run_all(backend: &dyn ObjectBackend) {
    every_size_class_at_unaligned_offsets(backend).await;
    holes_read_as_zeros_and_extents_cover_the_data(backend).await;
    reads_are_short_at_the_end(backend).await;
    truncate_cuts_and_extends(backend).await;
    missing_objects(backend).await;
    create_is_idempotent_and_delete_removes(backend).await;
    overwrites_replace_bytes(backend).await;
    concurrent_disjoint_writes(backend).await;
    batches_of_pieces(backend).await;
    pieces_copied_from_files(backend).await;
    listing_names_every_object(backend).await;
}

async fn every_size_class_at_unaligned_offsets(b: &dyn ObjectBackend) {
    let sizes = [
        1usize,
        4095,
        4096,
        4097,
        65_537,
        512 << 10,
        (512 << 10) + 3,
        3 << 20,
    ];
    for (i, &len) in sizes.iter().enumerate() {
        let id = FileId(0x5100 + i as u128);
        let offset = (i as u64) * 7919;
        let data = pattern(i as u64, len);
        b.write(id, offset, &data).await.unwrap();
        let back = b.read(id, offset, len).await.unwrap();
        assert!(
            back == data,
            "{}: {len} bytes at {offset} read back differently",
            b.kind()
        );
        let size = b
            .stat(id)
            .await
            .unwrap()
            .expect("written object exists")
            .size;
        assert_eq!(
            size,
            offset + len as u64,
            "{}: size after one write",
            b.kind()
        );
        b.persist(id).await.unwrap();
        b.delete(id).await.unwrap();
    }
}

fn covers(extents: &[Range<u64>], range: &Range<u64>) -> bool {
    let mut at = range.start;
    for e in extents {
        if e.start <= at && at < e.end {
            at = e.end;
        }
        if at >= range.end {
            return true;
        }
    }
    at >= range.end
}

async fn holes_read_as_zeros_and_extents_cover_the_data(b: &dyn ObjectBackend) {
    let id = FileId(0x5200);
    let data = pattern(2, 100_000);
    let far = 8 << 20;
    b.write(id, far, &data).await.unwrap();
    b.write(id, 10, b"head").await.unwrap();
    let hole = b.read(id, 14, 1 << 20).await.unwrap();
    assert_eq!(
        hole.len(),
        1 << 20,
        "{}: read inside the size is full",
        b.kind()
    );
    assert!(
        hole.iter().all(|&x| x == 0),
        "{}: a hole reads as zeros",
        b.kind()
    );
    let extents = b.extents(id).await.unwrap();
    let size = far + data.len() as u64;
    assert!(
        extents.windows(2).all(|w| w[0].end <= w[1].start),
        "{}: extents sorted and disjoint: {extents:?}",
        b.kind()
    );
    assert!(
        extents.iter().all(|e| e.start < e.end && e.end <= size),
        "{}: extents inside the size: {extents:?}",
        b.kind()
    );
    for written in [10..14, far..size] {
        assert!(
            covers(&extents, &written),
            "{}: extents {extents:?} miss written bytes {written:?}",
            b.kind()
        );
    }
    b.delete(id).await.unwrap();
}

async fn truncate_cuts_and_extends(b: &dyn ObjectBackend) {
    let id = FileId(0x5400);
    b.write(id, 0, &pattern(4, 5000)).await.unwrap();
    b.truncate(id, 1000).await.unwrap();
    assert_eq!(
        b.stat(id).await.unwrap().map(|s| s.size),
        Some(1000),
        "{}",
        b.kind()
    );
    assert_eq!(b.read(id, 0, 5000).await.unwrap(), pattern(4, 5000)[..1000]);
    b.truncate(id, 3000).await.unwrap();
    let mut expected = pattern(4, 5000)[..1000].to_vec();
    expected.resize(3000, 0);
    assert_eq!(
        b.read(id, 0, 5000).await.unwrap(),
        expected,
        "{}: extended with zeros",
        b.kind()
    );
    b.delete(id).await.unwrap();
    let missing = FileId(0x5401);
    b.truncate(missing, 10).await.unwrap();
    assert_eq!(
        b.stat(missing).await.unwrap(),
        None,
        "{}: truncate creates nothing",
        b.kind()
    );
}

async fn reads_are_short_at_the_end(b: &dyn ObjectBackend) {
    let id = FileId(0x5300);
    b.write(id, 0, &pattern(3, 1000)).await.unwrap();
    assert_eq!(b.read(id, 900, 500).await.unwrap(), pattern(3, 1000)[900..]);
    assert!(
        b.read(id, 1000, 10).await.unwrap().is_empty(),
        "{}: at the end",
        b.kind()
    );
    assert!(
        b.read(id, 5000, 10).await.unwrap().is_empty(),
        "{}: past the end",
        b.kind()
    );
    // A store that reads on the calling thread reads the same bytes.
    let mut buf = vec![0xee; 500];
    if let Some(read) = b.read_now(id, 900, &mut buf) {
        assert_eq!(read.unwrap(), 100, "{}: read_now at the end", b.kind());
        assert_eq!(buf[..100], pattern(3, 1000)[900..]);
        assert_eq!(b.read_now(id, 0, &mut buf).unwrap().unwrap(), 500);
        assert_eq!(buf, pattern(3, 1000)[..500]);
        assert_eq!(b.read_now(id, 5000, &mut buf).unwrap().unwrap(), 0);
    }
    b.delete(id).await.unwrap();
}

async fn missing_objects(b: &dyn ObjectBackend) {
    let id = FileId(0x5400);
    assert_eq!(
        b.stat(id).await.unwrap(),
        None,
        "{}: stat of a missing object",
        b.kind()
    );
    for (what, errno) in [
        ("read", b.read(id, 0, 1).await.err().map(|e| e.errno)),
        ("extents", b.extents(id).await.err().map(|e| e.errno)),
        ("persist", b.persist(id).await.err().map(|e| e.errno)),
        (
            "read_now",
            b.read_now(id, 0, &mut [0u8; 4])
                .map_or(Some(Errno::ENOENT), |r| r.err().map(|e| e.errno)),
        ),
    ] {
        assert_eq!(
            errno,
            Some(Errno::ENOENT),
            "{}: {what} of a missing object",
            b.kind()
        );
    }
    b.delete(id)
        .await
        .expect("deleting a missing object succeeds");
}

async fn create_is_idempotent_and_delete_removes(b: &dyn ObjectBackend) {
    let id = FileId(0x5500);
    b.create(id).await.unwrap();
    b.create(id).await.unwrap();
    assert_eq!(
        b.stat(id).await.unwrap().map(|s| s.size),
        Some(0),
        "{}",
        b.kind()
    );
    assert!(b.read(id, 0, 10).await.unwrap().is_empty());
    b.write(id, 0, b"data").await.unwrap();
    b.create(id).await.unwrap();
    assert_eq!(
        b.read(id, 0, 10).await.unwrap(),
        b"data",
        "{}: create keeps data",
        b.kind()
    );
    b.delete(id).await.unwrap();
    assert_eq!(b.stat(id).await.unwrap(), None, "{}: deleted", b.kind());
    b.delete(id).await.unwrap();
}

async fn overwrites_replace_bytes(b: &dyn ObjectBackend) {
    let id = FileId(0x5600);
    b.write(id, 0, &[1; 10_000]).await.unwrap();
    b.write(id, 5_000, &[2; 100]).await.unwrap();
    let back = b.read(id, 0, 10_000).await.unwrap();
    assert!(back[..5_000].iter().all(|&x| x == 1), "{}", b.kind());
    assert!(back[5_000..5_100].iter().all(|&x| x == 2), "{}", b.kind());
    assert!(back[5_100..].iter().all(|&x| x == 1), "{}", b.kind());
    assert_eq!(
        b.stat(id).await.unwrap().unwrap().size,
        10_000,
        "{}",
        b.kind()
    );
    b.delete(id).await.unwrap();
}

async fn concurrent_disjoint_writes(b: &dyn ObjectBackend) {
    let id = FileId(0x5700);
    let piece = 64 << 10;
    let writes =
        (0..16u64).map(|i| async move { b.write(id, i * piece as u64, &pattern(i, piece)).await });
    for r in futures::future::join_all(writes).await {
        r.unwrap();
    }
    let back = b.read(id, 0, 16 * piece).await.unwrap();
    for i in 0..16 {
        assert!(
            back[i * piece..(i + 1) * piece] == pattern(i as u64, piece)[..],
            "{}: piece {i} of 16 concurrent writes",
            b.kind()
        );
    }
    b.delete(id).await.unwrap();
}

/// `write_pieces` as the write-back uses it: whole chunks out of order with
/// a hole between them, plus a short last piece, from pooled buffers.
async fn batches_of_pieces(b: &dyn ObjectBackend) {
    let id = FileId(0x5750);
    let chunk = 256 << 10;
    let pool = sfs_rdma::buffers::BufferPool::new(chunk, 4);
    let piece = |seed: u64, len: usize| {
        let mut buf = pool.take(len);
        buf.copy_from_slice(&pattern(seed, len));
        buf
    };
    let pieces = vec![
        (3 * chunk as u64, piece(3, 1000)),
        (0, piece(0, chunk)),
        (chunk as u64, piece(1, chunk)),
    ];
    b.write_pieces(id, pieces).await.unwrap();
    three_pieces_read_back(b, id, chunk, "a batch").await;
    b.delete(id).await.unwrap();
}

/// Checks object `id` after pieces of [`pattern`] seeds 0, 1 (whole
/// chunks at chunks 0 and 1) and 3 (1000 bytes at chunk 3) were written.
async fn three_pieces_read_back(b: &dyn ObjectBackend, id: FileId, chunk: usize, how: &str) {
    let back = b.read(id, 0, 4 * chunk).await.unwrap();
    let kind = b.kind();
    assert_eq!(back.len(), 3 * chunk + 1000, "{kind}: size after {how}");
    assert!(
        back[..chunk] == pattern(0, chunk)[..],
        "{kind}: {how}: piece 0"
    );
    assert!(
        back[chunk..2 * chunk] == pattern(1, chunk)[..],
        "{kind}: {how}: piece 1"
    );
    assert!(
        back[2 * chunk..3 * chunk].iter().all(|&x| x == 0),
        "{kind}: {how}: the hole between pieces"
    );
    assert!(
        back[3 * chunk..] == pattern(3, 1000)[..],
        "{kind}: {how}: piece 3"
    );
}

/// A file of `bytes` in `dir`, open for reading at its start.
fn file_of(dir: &std::path::Path, bytes: &[u8]) -> std::fs::File {
    use std::io::{Seek, Write};
    let mut file = tempfile::tempfile_in(dir).expect("temporary file");
    file.write_all(bytes).expect("writing a temporary file");
    file.rewind().expect("rewinding it");
    file
}

/// `write_from_files`, where a back end offers it: each file whole at its
/// offset, a longer one cut at `max_len`, from files on the store's file
/// system (the temporary directory) and, where there is one, on tmpfs.
async fn pieces_copied_from_files(b: &dyn ObjectBackend) {
    if !b.copies_from_files() {
        return;
    }
    let chunk = 64 << 10;
    let shm = std::path::Path::new("/dev/shm");
    let mut dirs = vec![std::env::temp_dir()];
    if shm.is_dir() {
        dirs.push(shm.to_path_buf());
    }
    for (n, dir) in dirs.iter().enumerate() {
        let id = FileId(0x5760 + n as u128);
        let pieces = vec![
            (3 * chunk as u64, file_of(dir, &pattern(3, 1000))),
            (0, file_of(dir, &pattern(0, chunk))),
            // Longer than a chunk: only `max_len` of it.
            (chunk as u64, file_of(dir, &pattern(1, chunk + 500))),
        ];
        // Blocking, on the test's thread (as on a write-back's blocking one).
        let copied = b
            .write_from_files(id, &pieces, chunk as u64)
            .unwrap_or_else(|e| panic!("{}: write_from_files from {dir:?}: {e}", b.kind()));
        assert_eq!(
            copied,
            vec![1000, chunk as u64, chunk as u64],
            "{}",
            b.kind()
        );
        // Piece 1 was cut at `max_len`.
        three_pieces_read_back(b, id, chunk, &format!("copies from {dir:?}")).await;
        b.delete(id).await.unwrap();
    }
}

async fn listing_names_every_object(b: &dyn ObjectBackend) {
    let ids: Vec<FileId> = (0..40u128)
        .map(|i| FileId((i << 120) | 0x5800 | i))
        .collect();
    for &id in &ids {
        b.write(id, 0, b"x").await.unwrap();
    }
    let mut listed = b.list().await.unwrap();
    listed.sort_by_key(|id| id.0);
    let mut expected = ids.clone();
    expected.sort_by_key(|id| id.0);
    assert_eq!(listed, expected, "{}: list after 40 writes", b.kind());
    for &id in &ids {
        b.delete(id).await.unwrap();
    }
    assert!(
        b.list().await.unwrap().is_empty(),
        "{}: list after deletes",
        b.kind()
    );
}
