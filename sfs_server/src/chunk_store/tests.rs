//! Tests of the chunk store: data, holes, capacity, truncate and remove.

use super::ChunkStore;
use sfs_global::{Errno, FileId};
use sfs_rdma::{ChunkHandler, ChunkRef};

const CHUNK: u64 = 4096;

fn at(id: u128, index: u64, offset: u64, len: u64) -> ChunkRef {
    ChunkRef {
        id: FileId(id),
        index,
        offset,
        len,
    }
}

fn read(store: &ChunkStore, chunk: ChunkRef) -> (usize, Vec<u8>) {
    let mut buf = vec![0xee; chunk.len as usize];
    let n = store.read_chunk(&chunk, &mut buf).unwrap();
    (n, buf)
}

#[test]
fn writes_read_back_with_holes() {
    let dir = tempfile::tempdir().unwrap();
    let store = ChunkStore::open(dir.path(), CHUNK, 0).unwrap();
    store.write_chunk(&at(1, 0, 100, 5), b"hello").unwrap();
    let (n, buf) = read(&store, at(1, 0, 0, 200));
    assert_eq!(n, 105);
    assert_eq!(&buf[100..105], b"hello");
    assert!(
        buf[..100].iter().all(|&b| b == 0),
        "the hole before the data reads as zeros"
    );
    assert_eq!(
        read(&store, at(1, 1, 0, 10)).0,
        0,
        "an absent chunk holds nothing"
    );
    assert_eq!(
        read(&store, at(2, 0, 0, 10)).0,
        0,
        "an absent file holds nothing"
    );
    assert_eq!(store.usage(), 105);
    store.write_chunk(&at(1, 0, 0, 3), b"abc").unwrap();
    assert_eq!(
        store.usage(),
        105,
        "overwriting inside a chunk does not grow it"
    );
    assert!(store.capacity() > 0 && store.free() > 0);
}

#[test]
fn refuses_ranges_outside_a_chunk() {
    let dir = tempfile::tempdir().unwrap();
    let store = ChunkStore::open(dir.path(), CHUNK, 0).unwrap();
    let big = vec![0u8; 2];
    assert_eq!(
        store
            .write_chunk(&at(1, 0, CHUNK - 1, 2), &big)
            .unwrap_err()
            .errno,
        Errno::EINVAL
    );
    assert_eq!(
        store
            .write_chunk(&at(1, 0, u64::MAX, 2), &big)
            .unwrap_err()
            .errno,
        Errno::EINVAL
    );
    assert_eq!(
        store.write_chunk(&at(1, 0, 0, 3), &big).unwrap_err().errno,
        Errno::EINVAL
    );
    let mut buf = vec![0u8; 2];
    assert_eq!(
        store
            .read_chunk(&at(1, 0, CHUNK, 2), &mut buf)
            .unwrap_err()
            .errno,
        Errno::EINVAL
    );
}

#[test]
fn capacity_is_enforced_before_writing() {
    let dir = tempfile::tempdir().unwrap();
    let store = ChunkStore::open(dir.path(), CHUNK, 10_000).unwrap();
    let data = vec![7u8; CHUNK as usize];
    store.write_chunk(&at(1, 0, 0, CHUNK), &data).unwrap();
    store.write_chunk(&at(1, 1, 0, CHUNK), &data).unwrap();
    let err = store.write_chunk(&at(1, 2, 0, CHUNK), &data).unwrap_err();
    assert_eq!(err.errno, Errno::ENOSPC);
    assert_eq!(read(&store, at(1, 2, 0, 10)).0, 0, "nothing was written");
    assert_eq!(store.usage(), 2 * CHUNK);
    assert_eq!(store.free(), 10_000 - 2 * CHUNK);
    store.write_chunk(&at(1, 0, 0, 10), &data[..10]).unwrap();
    store.remove_chunks(FileId(1)).unwrap();
    assert_eq!(store.usage(), 0);
    store.write_chunk(&at(1, 2, 0, CHUNK), &data).unwrap();
    // Usage is recounted from the files when the store is reopened.
    drop(store);
    let store = ChunkStore::open(dir.path(), CHUNK, 10_000).unwrap();
    assert_eq!(store.usage(), CHUNK);
}

#[test]
fn truncate_drops_and_shortens_chunks() {
    let dir = tempfile::tempdir().unwrap();
    let store = ChunkStore::open(dir.path(), CHUNK, 0).unwrap();
    let data = vec![1u8; CHUNK as usize];
    for index in 0..4 {
        store.write_chunk(&at(5, index, 0, CHUNK), &data).unwrap();
    }
    store.truncate_chunks(FileId(5), CHUNK + 100).unwrap();
    assert_eq!(read(&store, at(5, 0, 0, CHUNK)).0, CHUNK as usize);
    assert_eq!(read(&store, at(5, 1, 0, CHUNK)).0, 100);
    assert_eq!(read(&store, at(5, 2, 0, CHUNK)).0, 0);
    assert_eq!(read(&store, at(5, 3, 0, CHUNK)).0, 0);
    assert_eq!(store.usage(), CHUNK + 100);
    store.truncate_chunks(FileId(5), 10 * CHUNK).unwrap();
    assert_eq!(store.usage(), CHUNK + 100, "extending leaves chunks alone");
    store.sync_chunks(FileId(5)).unwrap();
    store.truncate_chunks(FileId(5), 0).unwrap();
    assert_eq!(store.usage(), 0);
    store.remove_chunks(FileId(5)).unwrap();
    store.remove_chunks(FileId(6)).unwrap();
    store.sync_chunks(FileId(6)).unwrap();
    assert!(!dir.path().join(FileId(5).to_hex()).exists());
}

#[test]
fn concurrent_writers_of_one_chunk_are_counted_once() {
    let dir = tempfile::tempdir().unwrap();
    let store = std::sync::Arc::new(ChunkStore::open(dir.path(), CHUNK, 0).unwrap());
    let threads: Vec<_> = (0..4u64)
        .map(|t| {
            let store = store.clone();
            std::thread::spawn(move || {
                for i in 0..64u64 {
                    let offset = (i * 4 + t) * 16;
                    store
                        .write_chunk(&at(9, 0, offset, 16), &[t as u8; 16])
                        .unwrap();
                }
            })
        })
        .collect();
    for t in threads {
        t.join().unwrap();
    }
    assert_eq!(store.usage(), CHUNK);
}

#[test]
fn chunk_indexes_lists_the_chunks_held_in_order() {
    let dir = tempfile::tempdir().unwrap();
    let store = ChunkStore::open(dir.path(), CHUNK, 0).unwrap();
    assert!(store.chunk_indexes(FileId(7)).unwrap().is_empty());
    for index in [12, 3, 100, 0] {
        store.write_chunk(&at(7, index, 10, 5), b"hello").unwrap();
    }
    store.write_chunk(&at(8, 4, 0, 1), b"x").unwrap();
    // A stray name in the file's directory is not a chunk.
    std::fs::write(dir.path().join(FileId(7).to_hex()).join("notes"), b"").unwrap();
    assert_eq!(store.chunk_indexes(FileId(7)).unwrap(), vec![0, 3, 12, 100]);
    assert_eq!(store.chunk_indexes(FileId(8)).unwrap(), vec![4]);
    store.remove_chunks(FileId(7)).unwrap();
    assert!(store.chunk_indexes(FileId(7)).unwrap().is_empty());
}

#[test]
fn a_removal_takes_the_cache_mode_records_and_the_directory() {
    let dir = tempfile::tempdir().unwrap();
    let store = ChunkStore::open(dir.path(), CHUNK, 0).unwrap();
    let source = dir.path().join("backing-file");
    // A file with chunks, a source and a written-chunk record; one with
    // the records only (nothing read or written yet); one with chunks only.
    store.write_chunk(&at(20, 1, 0, 5), b"hello").unwrap();
    store.set_source(FileId(20), &source, 3 * CHUNK).unwrap();
    store.add_written(FileId(20), 1).unwrap();
    store.set_source(FileId(21), &source, CHUNK).unwrap();
    store.add_written(FileId(21), 0).unwrap();
    store.write_chunk(&at(22, 0, 0, 1), b"x").unwrap();
    for id in [20, 21, 22] {
        assert!(dir.path().join(FileId(id).to_hex()).is_dir());
        store.remove_chunks(FileId(id)).unwrap();
        assert!(
            !dir.path().join(FileId(id).to_hex()).exists(),
            "file {id}: its directory is gone"
        );
        assert!(store.written(FileId(id)).unwrap().is_empty());
    }
    assert!(store.sources().unwrap().is_empty(), "no source left");
    assert_eq!(store.usage(), 0);
    // A file never held here: nothing to do, no error.
    store.remove_chunks(FileId(23)).unwrap();
}
