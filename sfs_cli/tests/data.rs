//! Data path through real servers: random I/O against a shadow copy,
//! concurrent writers of one file, O_APPEND from several threads.

mod common;

use common::Cluster;
use rand::{Rng, SeedableRng};
use sfs_global::config::DataTransport;
use std::sync::Arc;

const O_RDWR_CREAT: i32 = libc::O_RDWR | libc::O_CREAT;

#[test]
fn random_writes_of_200_mib_read_back_exactly() {
    // Small pieces travel on the RPC connection, large ones through shared
    // memory (the servers run on this machine).
    random_writes_read_back(Cluster::start(3), 200 << 20, DataTransport::Shm);
}

#[test]
fn random_writes_read_back_exactly_with_every_piece_on_the_data_transport() {
    random_writes_read_back(
        Cluster::start_with(3, |c| c.inline_data_bytes = 0),
        40 << 20,
        DataTransport::Shm,
    );
}

#[test]
fn random_writes_read_back_exactly_over_tcp() {
    random_writes_read_back(
        Cluster::start_with(3, |c| c.shared_memory_data = false),
        40 << 20,
        DataTransport::Tcp,
    );
}

/// Random overlapping writes of 1 B to 3 MiB until twice `size` has been
/// written, checked against a shadow copy by random reads; every server's
/// data went over `transport`.
fn random_writes_read_back(cluster: Cluster, size: usize, transport: DataTransport) {
    let client = cluster.client();
    let mut rng = rand::rngs::StdRng::seed_from_u64(0x5f5);
    let mut shadow = vec![0u8; size];
    let fd = client.open("/big", O_RDWR_CREAT, 0o644).unwrap();
    let mut written = 0usize;
    // Random offsets and sizes (1 B to 3 MiB), overlapping, leaving holes,
    // until twice the file size has been written; the last write ends the file.
    while written < 2 * size {
        let len = rng.gen_range(1..=3 << 20);
        let offset = rng.gen_range(0..size - len);
        let data: Vec<u8> = (0..len).map(|_| rng.gen()).collect();
        assert_eq!(client.pwrite(fd, &data, offset as u64).unwrap(), len);
        shadow[offset..offset + len].copy_from_slice(&data);
        written += len;
    }
    let tail = vec![0xabu8; 4096];
    client.pwrite(fd, &tail, (size - 4096) as u64).unwrap();
    shadow[size - 4096..].copy_from_slice(&tail);
    assert_eq!(client.fstat(fd).unwrap().size, size as u64);

    // Read back in random pieces, and once past the end.
    let mut offset = 0usize;
    while offset < size {
        let len = rng.gen_range(1..=5 << 20).min(size - offset);
        let mut buf = vec![0x55u8; len];
        assert_eq!(client.pread(fd, &mut buf, offset as u64).unwrap(), len);
        assert!(
            buf == shadow[offset..offset + len],
            "mismatch in [{offset}, {})",
            offset + len
        );
        offset += len;
    }
    let mut buf = vec![0u8; 100];
    assert_eq!(
        client.pread(fd, &mut buf, size as u64 - 10).unwrap(),
        10,
        "short read at end of file"
    );
    assert_eq!(client.pread(fd, &mut buf, size as u64 + 10).unwrap(), 0);
    client.close(fd).unwrap();
    assert_eq!(
        client.data_transports(),
        vec![Some(transport); cluster.hostfile.hosts.len()]
    );
}

#[test]
fn a_reader_sees_what_another_client_appended_since_it_opened() {
    let cluster = Cluster::start(3);
    let reader = cluster.client();
    let writer = cluster.client();
    // The reader opens an empty file: it last saw size 0.
    let rfd = reader.open("/grown", O_RDWR_CREAT, 0o644).unwrap();
    let data: Vec<u8> = (0..3_300_000u32).map(|i| (i % 251) as u8).collect();
    let wfd = writer.open("/grown", libc::O_WRONLY, 0).unwrap();
    assert_eq!(writer.write(wfd, &data).unwrap(), data.len());
    // One large read returns every byte the other client wrote (more than
    // the chunks the reader would fetch before it learns the new size) and
    // nothing past the end.
    let mut buf = vec![0x77u8; 8 << 20];
    assert_eq!(reader.pread(rfd, &mut buf, 0).unwrap(), data.len());
    assert!(buf[..data.len()] == data[..], "bytes differ");
    // From the middle of a chunk, and at the end.
    assert_eq!(reader.pread(rfd, &mut buf, 1_000_000).unwrap(), 2_300_000);
    assert!(buf[..2_300_000] == data[1_000_000..], "bytes differ");
    assert_eq!(reader.pread(rfd, &mut buf, data.len() as u64).unwrap(), 0);
    // After a truncation by the writer, the reader's larger hint does not
    // leak bytes past the new end.
    writer.ftruncate(wfd, 10).unwrap();
    assert_eq!(reader.pread(rfd, &mut buf, 0).unwrap(), 10);
    assert_eq!(&buf[..10], &data[..10]);
}

#[test]
fn holes_read_as_zeros_and_truncate_drops_data() {
    let cluster = Cluster::start(2);
    let client = cluster.client();
    let fd = client.open("/sparse", O_RDWR_CREAT, 0o644).unwrap();
    client.pwrite(fd, b"end", 5 << 20).unwrap();
    let mut buf = vec![1u8; 4096];
    assert_eq!(client.pread(fd, &mut buf, 1 << 20).unwrap(), 4096);
    assert!(buf.iter().all(|&b| b == 0));
    // Shrink below the data, then grow again: the old bytes must not return.
    client.ftruncate(fd, 10).unwrap();
    client.ftruncate(fd, 6 << 20).unwrap();
    let mut buf = vec![1u8; 3];
    assert_eq!(client.pread(fd, &mut buf, 5 << 20).unwrap(), 3);
    assert_eq!(buf, [0, 0, 0]);
    // SEEK_END and sequential read/write through the descriptor offset.
    assert_eq!(
        client.lseek(fd, 0, sfs_client::Whence::End).unwrap(),
        6 << 20
    );
    client.write(fd, b"xyz").unwrap();
    assert_eq!(
        client.lseek(fd, -3, sfs_client::Whence::Current).unwrap(),
        6 << 20
    );
    let mut buf = [0u8; 3];
    assert_eq!(client.read(fd, &mut buf).unwrap(), 3);
    assert_eq!(&buf, b"xyz");
    assert_eq!(client.read(fd, &mut buf).unwrap(), 0);
    client.close(fd).unwrap();
}

#[test]
fn eight_threads_write_disjoint_ranges_of_one_file() {
    let cluster = Cluster::start(3);
    let client = Arc::new(cluster.client());
    const PER_THREAD: usize = 3 << 20; // not a multiple of the chunk size
    const PIECE: usize = 100_000;
    let fd = client.open("/shared", O_RDWR_CREAT, 0o644).unwrap();
    let threads: Vec<_> = (0..8u8)
        .map(|t| {
            let client = client.clone();
            std::thread::spawn(move || {
                // Each thread opens its own descriptor, as N-to-1 ranks do.
                let fd = client.open("/shared", libc::O_WRONLY, 0).unwrap();
                let base = t as usize * PER_THREAD;
                let mut offset = 0;
                while offset < PER_THREAD {
                    let len = PIECE.min(PER_THREAD - offset);
                    let data = vec![t + 1; len];
                    client.pwrite(fd, &data, (base + offset) as u64).unwrap();
                    offset += len;
                }
                client.close(fd).unwrap();
            })
        })
        .collect();
    for t in threads {
        t.join().unwrap();
    }
    assert_eq!(client.fstat(fd).unwrap().size, 8 * PER_THREAD as u64);
    let mut buf = vec![0u8; 8 * PER_THREAD];
    assert_eq!(client.pread(fd, &mut buf, 0).unwrap(), buf.len());
    for t in 0..8 {
        assert!(
            buf[t * PER_THREAD..(t + 1) * PER_THREAD]
                .iter()
                .all(|&b| b == t as u8 + 1),
            "range of thread {t}"
        );
    }
}

#[test]
fn four_threads_appending_lose_and_tear_nothing() {
    let cluster = Cluster::start(3);
    let client = Arc::new(cluster.client());
    const RECORDS: usize = 300;
    let threads: Vec<_> = (0..4usize)
        .map(|t| {
            let client = client.clone();
            std::thread::spawn(move || {
                let fd = client
                    .open(
                        "/log",
                        libc::O_WRONLY | libc::O_CREAT | libc::O_APPEND,
                        0o644,
                    )
                    .unwrap();
                for i in 0..RECORDS {
                    // Records of varying length so that tearing would show.
                    let len = 20 + (i * 7919 + t * 104729) % 3000;
                    let mut record = format!("<{t}:{i}:{len}:").into_bytes();
                    record.resize(len - 1, b'a' + t as u8);
                    record.push(b'>');
                    assert_eq!(client.write(fd, &record).unwrap(), len);
                }
                client.close(fd).unwrap();
            })
        })
        .collect();
    for t in threads {
        t.join().unwrap();
    }
    let md = client.stat("/log").unwrap();
    let fd = client.open("/log", libc::O_RDONLY, 0).unwrap();
    let mut all = vec![0u8; md.size as usize];
    assert_eq!(client.pread(fd, &mut all, 0).unwrap(), all.len());
    let mut seen = std::collections::HashSet::new();
    let mut pos = 0;
    while pos < all.len() {
        assert_eq!(all[pos], b'<', "record boundary at {pos}");
        let header_end = pos + all[pos..].iter().position(|&b| b == b':').unwrap();
        let rest = std::str::from_utf8(&all[pos + 1..pos + 40.min(all.len() - pos)]).unwrap_or("");
        let fields: Vec<&str> = rest.splitn(4, ':').collect();
        let (t, i, len): (usize, usize, usize) = (
            fields[0].parse().unwrap(),
            fields[1].parse().unwrap(),
            fields[2].parse().unwrap(),
        );
        assert!(header_end > pos);
        let record = &all[pos..pos + len];
        assert_eq!(record[len - 1], b'>', "record {t}:{i} torn");
        assert!(record[..len - 1]
            .iter()
            .rev()
            .take_while(|&&b| b != b':')
            .all(|&b| b == b'a' + t as u8));
        assert!(seen.insert((t, i)), "record {t}:{i} twice");
        pos += len;
    }
    assert_eq!(seen.len(), 4 * RECORDS, "every record present");
}
