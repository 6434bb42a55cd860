//! Micro-benchmarks of the code every I/O and metadata call runs through:
//! chunk splitting, the distributor, metadata encoding and the merge of size
//! updates, and the TCP data transport's header framing.
//!
//! `cargo bench -p sfs_bench --bench hot_paths`; `cargo test` only builds them.

use criterion::{criterion_group, criterion_main, BatchSize, Criterion, Throughput};
use sfs_global::chunk;
use sfs_global::distributor::Distributor;
use sfs_global::metadata::{self, MetaUpdate};
use sfs_global::{FileId, FileKind, Metadata};
use sfs_rdma::wire::{Op, RequestHeader, ResponseHeader};
use sfs_rdma::ChunkRef;
use std::hint::black_box;

const CHUNK: u64 = 512 * 1024;

fn chunk_split(c: &mut Criterion) {
    let mut group = c.benchmark_group("chunk::split");
    // IOR-easy: one 1 MiB transfer, aligned (2 pieces).
    group.bench_function("1MiB aligned", |b| {
        b.iter(|| chunk::split(black_box(7 << 20), black_box(1 << 20), CHUNK).count())
    });
    // IOR-hard: 47,008 bytes at a strided offset (1 or 2 pieces).
    group.bench_function("47008B strided", |b| {
        let mut i = 0u64;
        b.iter(|| {
            i += 1;
            chunk::split(black_box(i * 47_008 * 2), 47_008, CHUNK).count()
        })
    });
    // A large read: 64 MiB unaligned (129 pieces).
    group.throughput(Throughput::Elements(129));
    group.bench_function("64MiB unaligned", |b| {
        b.iter(|| {
            chunk::split(black_box(12_345), black_box(64 << 20), CHUNK)
                .map(|p| p.len)
                .sum::<u64>()
        })
    });
    group.finish();
}

fn distributor(c: &mut Criterion) {
    let mut group = c.benchmark_group("distributor");
    let d = Distributor::new(100);
    let paths: Vec<String> = (0..1024)
        .map(|i| format!("/mdtest/rank.{}/file.mdtest.{i}", i % 8))
        .collect();
    group.throughput(Throughput::Elements(paths.len() as u64));
    group.bench_function("metadata_server x1024", |b| {
        b.iter(|| {
            paths
                .iter()
                .map(|p| d.metadata_server(black_box(p)))
                .sum::<usize>()
        })
    });
    let id = FileId::from_parts(0x1234_5678, 0x9abc_def0);
    group.throughput(Throughput::Elements(1024));
    group.bench_function("chunk_server x1024", |b| {
        b.iter(|| {
            (0..1024u64)
                .map(|i| d.chunk_server(black_box(id), i))
                .sum::<usize>()
        })
    });
    group.finish();
}

fn metadata_encoding(c: &mut Criterion) {
    let mut group = c.benchmark_group("metadata");
    let md = Metadata::new(
        FileKind::File,
        0o644,
        FileId::from_parts(1, 2),
        1_700_000_000_000_000_000,
    );
    group.bench_function("encode", |b| b.iter(|| black_box(&md).encode()));
    let bytes = md.encode();
    group.bench_function("decode", |b| {
        b.iter(|| Metadata::decode(black_box(&bytes)).expect("valid entry"))
    });
    let updates: Vec<Vec<u8>> = (0..16)
        .map(|i| {
            MetaUpdate::GrowSize {
                end: i * 47_008,
                time_ns: i as i64,
            }
            .encode()
        })
        .collect();
    group.bench_function("combine 16 size updates", |b| {
        b.iter(|| metadata::combine_updates(updates.iter().map(|u| black_box(u.as_slice()))))
    });
    group.bench_function("entry_key", |b| {
        b.iter(|| metadata::entry_key(black_box("/mdtest/rank.3/file.mdtest.12345")))
    });
    group.finish();
}

fn wire_framing(c: &mut Criterion) {
    let mut group = c.benchmark_group("wire");
    let header = RequestHeader {
        op: Op::Write,
        request_id: 42,
        chunk: ChunkRef {
            id: FileId::from_parts(3, 4),
            index: 17,
            offset: 4096,
            len: 47_008,
        },
    };
    group.bench_function("request encode", |b| b.iter(|| black_box(&header).encode()));
    let encoded = header.encode();
    group.bench_function("request decode", |b| {
        b.iter(|| RequestHeader::decode(black_box(&encoded), CHUNK).expect("valid header"))
    });
    let response = ResponseHeader {
        status: 0,
        request_id: 42,
        len: 47_008,
    };
    let encoded = response.encode();
    group.bench_function("response round trip", |b| {
        b.iter(|| ResponseHeader::decode(&black_box(&response).encode()).expect("valid"))
    });
    group.bench_function("response decode", |b| {
        b.iter(|| ResponseHeader::decode(black_box(&encoded)).expect("valid header"))
    });
    // A whole 47,008-byte write frame assembled as the TCP client does: header then payload.
    let payload = vec![7u8; 47_008];
    group.throughput(Throughput::Bytes(payload.len() as u64));
    group.bench_function("frame 47008B write", |b| {
        b.iter_batched(
            || Vec::with_capacity(payload.len() + 56),
            |mut frame| {
                frame.extend_from_slice(&header.encode());
                frame.extend_from_slice(&payload);
                frame
            },
            BatchSize::SmallInput,
        )
    });
    group.finish();
}

criterion_group!(
    benches,
    chunk_split,
    distributor,
    metadata_encoding,
    wire_framing
);
criterion_main!(benches);
