//! Every decoder that reads bytes from the network or from files, under
//! the fuzzer of `sfs_testkit::fuzz` (docs/security.md, "Fuzzing"): no
//! panic, no input slower than a second, and no allocation above 1 MiB
//! for inputs of at most 4 KiB. `SFS_FUZZ_CASES` sets the inputs per
//! decoder (20,000 by default in the test suite; the figures in
//! docs/security.md come from a run with 1,000,000).
//!
//! The seeds (the corpus) are valid encodings made here with the
//! encoders, so every mutation starts from something the decoder accepts.

use sfs_global::access::Caller;
use sfs_global::checkpoint::{decode_dump, DumpWriter, Manifest};
use sfs_global::config::Config;
use sfs_global::hostfile::Hostfile;
use sfs_global::metadata::{apply_updates, combine_updates, MetaUpdate};
use sfs_global::{FileId, FileKind, Metadata};
use sfs_rdma::rdma::proto::{self, Descriptor, Hello, Payload, RdmaRequest, Region};
use sfs_rdma::wire::{self, Op};
use sfs_rdma::ChunkRef;
use sfs_rpc::{caller, lean};
use sfs_testkit::fuzz;
use std::alloc::{GlobalAlloc, Layout, System};
use std::sync::atomic::{AtomicUsize, Ordering};
use std::time::Duration;

/// The largest single allocation since the last reset.
static LARGEST: AtomicUsize = AtomicUsize::new(0);

struct Tracking;

// SAFETY: every call is passed to the system allocator unchanged; the
// counter is only observed.
unsafe impl GlobalAlloc for Tracking {
    unsafe fn alloc(&self, layout: Layout) -> *mut u8 {
        LARGEST.fetch_max(layout.size(), Ordering::Relaxed);
        // SAFETY: the caller's contract for `alloc` is System's.
        unsafe { System.alloc(layout) }
    }
    unsafe fn dealloc(&self, ptr: *mut u8, layout: Layout) {
        // SAFETY: `ptr` came from `System.alloc` with this layout.
        unsafe { System.dealloc(ptr, layout) }
    }
    unsafe fn realloc(&self, ptr: *mut u8, layout: Layout, new_size: usize) -> *mut u8 {
        LARGEST.fetch_max(new_size, Ordering::Relaxed);
        // SAFETY: as for `alloc` and `dealloc`.
        unsafe { System.realloc(ptr, layout, new_size) }
    }
}

#[global_allocator]
static ALLOCATOR: Tracking = Tracking;

const MAX_INPUT: usize = 4096;
const MAX_ALLOCATION: usize = 1 << 20;
const CHUNK: u64 = 512 * 1024;

/// Runs one decoder; checks the allocation bound per input.
fn check(name: &str, seeds: Vec<Vec<u8>>, target: impl Fn(&[u8]) -> bool) {
    let report = fuzz::run(
        name,
        &seeds,
        fuzz::cases(20_000),
        MAX_INPUT,
        Duration::from_secs(1),
        |input| {
            LARGEST.store(0, Ordering::Relaxed);
            let accepted = target(input);
            let largest = LARGEST.load(Ordering::Relaxed);
            assert!(
                largest <= MAX_ALLOCATION,
                "allocated {largest} bytes at once for a {}-byte input",
                input.len()
            );
            accepted
        },
    );
    eprintln!(
        "{name}: {} inputs, {} accepted, slowest {:?}, {:?} in all",
        report.inputs, report.accepted, report.slowest, report.elapsed
    );
    assert!(report.accepted > 0, "{name}: no input was accepted");
}

fn chunk(index: u64, offset: u64, len: u64) -> ChunkRef {
    ChunkRef {
        id: FileId(0x1234_5678_9abc_def0_1122_3344_5566_7788),
        index,
        offset,
        len,
    }
}

#[test]
fn lean_rpc_frame_headers() {
    let seeds = vec![
        lean::RequestHeader {
            method: 50,
            flags: 0,
            request_id: 1,
            body_len: 0,
        }
        .encode()
        .to_vec(),
        lean::RequestHeader {
            method: 2,
            flags: sfs_rpc::caller::FLAG_CALLER,
            request_id: 7,
            body_len: 30,
        }
        .encode()
        .to_vec(),
        lean::ResponseHeader {
            status: 2,
            request_id: 9,
            body_len: 12,
        }
        .encode()
        .to_vec(),
    ];
    check("lean headers", seeds, |b| {
        let Ok(h) = <&[u8; lean::HEADER_LEN]>::try_from(b) else {
            return false;
        };
        let request = lean::RequestHeader::decode(h).is_ok();
        let response = lean::ResponseHeader::decode(h).is_ok();
        request || response
    });
}

#[test]
fn caller_blocks_and_headers() {
    let callers = [
        Caller::root(),
        Caller {
            uid: 1000,
            gid: 100,
            groups: vec![4, 24, 27, 100],
        },
    ];
    let mut seeds = Vec::new();
    for c in &callers {
        let mut block = Vec::new();
        caller::encode_block(c, &mut block);
        block.extend_from_slice(b"\x0a\x02/a");
        seeds.push(block);
        seeds.push(caller::header_value(c).into_bytes());
    }
    check("caller blocks and headers", seeds, |b| {
        let block = caller::decode_block(b).is_ok();
        let header = std::str::from_utf8(b).is_ok_and(|s| caller::parse_header(s).is_ok());
        block || header
    });
}

#[test]
fn tcp_data_frame_headers() {
    let seeds = vec![
        wire::RequestHeader {
            op: Op::Write,
            request_id: 3,
            chunk: chunk(2, 100, 4096),
        }
        .encode()
        .to_vec(),
        wire::RequestHeader {
            op: Op::Read,
            request_id: u64::MAX,
            chunk: chunk(0, 0, CHUNK),
        }
        .encode()
        .to_vec(),
        wire::ResponseHeader {
            status: 0,
            request_id: 3,
            len: 4096,
        }
        .encode()
        .to_vec(),
    ];
    check("tcp data headers", seeds, |b| {
        let request = <&[u8; wire::REQUEST_HEADER_LEN]>::try_from(b)
            .is_ok_and(|h| wire::RequestHeader::decode(h, CHUNK).is_ok());
        let response = <&[u8; wire::RESPONSE_HEADER_LEN]>::try_from(b)
            .is_ok_and(|h| wire::ResponseHeader::decode(h).is_ok());
        request || response
    });
}

#[test]
fn rdma_messages_and_hello() {
    let eager = 4096u64;
    let mut seeds = Vec::new();
    let remote = RdmaRequest {
        header: wire::RequestHeader {
            op: Op::Write,
            request_id: 7,
            chunk: chunk(1, 0, CHUNK),
        },
        payload: Payload::Remote(Descriptor {
            addr: 0x7f00_0000_0000,
            len: CHUNK,
            rkey: 0x1234,
            access: proto::ACCESS_READ,
        }),
    };
    let mut msg = vec![0u8; proto::RDMA_REQUEST_LEN];
    remote.encode_into(&mut msg);
    seeds.push(msg);
    let eager_write = RdmaRequest {
        header: wire::RequestHeader {
            op: Op::Write,
            request_id: 8,
            chunk: chunk(0, 10, 16),
        },
        payload: Payload::Eager,
    };
    let mut msg = vec![0u8; proto::RDMA_REQUEST_LEN + 16];
    eager_write.encode_into(&mut msg);
    seeds.push(msg);
    seeds.push(
        wire::ResponseHeader {
            status: 0,
            request_id: 8,
            len: 0,
        }
        .encode()
        .to_vec(),
    );
    seeds.push(
        Hello {
            queue_depth: 16,
            eager_threshold: eager as u32,
            chunk_size: CHUNK,
            region: Region {
                addr: 0x7f00_0000_0000,
                len: 16 * CHUNK,
                rkey: 99,
            },
            nonce: [0x11; proto::CLIENT_NONCE_LEN],
        }
        .encode()
        .to_vec(),
    );
    seeds.push(
        proto::Accept {
            nonce: [0x22; proto::SERVER_NONCE_LEN],
            proof: [0x33; 32],
        }
        .encode()
        .to_vec(),
    );
    seeds.push(proto::ClientProof([0x44; 32]).encode().to_vec());
    check("rdma messages", seeds, |b| {
        let request = RdmaRequest::decode(b, CHUNK, eager).is_ok();
        let response = proto::decode_response(b).is_ok();
        let hello = Hello::decode(b).is_ok();
        let accept = proto::Accept::decode(b).is_ok();
        let proof = proto::ClientProof::decode(b).is_ok();
        if let Ok(d) = <&[u8; proto::DESCRIPTOR_LEN]>::try_from(b) {
            let _ = Descriptor::decode(d);
        }
        request || response || hello || accept || proof
    });
}

#[test]
fn metadata_entries_and_updates() {
    let mut file = Metadata::new(FileKind::File, 0o644, FileId(42), 1_000);
    file.size = 1 << 40;
    let mut link = Metadata::new(FileKind::Symlink, 0o777, FileId(43), 2_000);
    link.link_target = "/a/b/c".into();
    let updates = [
        MetaUpdate::GrowSize {
            end: 4096,
            time_ns: 5,
        },
        MetaUpdate::SetSize {
            size: 0,
            time_ns: 6,
        },
        MetaUpdate::SetAttr {
            mode: Some(0o600),
            uid: Some(1),
            gid: None,
            atime_ns: None,
            mtime_ns: Some(9),
            ctime_ns: 10,
        },
    ];
    let mut seeds = vec![file.encode(), link.encode()];
    seeds.extend(updates.iter().map(MetaUpdate::encode));
    let base = file.encode();
    check("metadata", seeds, |b| {
        let entry = Metadata::decode(b).is_ok();
        let update = MetaUpdate::decode(b).is_ok();
        // The merge operator sees stored bytes as base and operands.
        let _ = apply_updates(Some(b), [&base[..]]);
        let _ = apply_updates(Some(&base), [b]);
        let _ = combine_updates([b, b]);
        entry || update
    });
}

#[test]
fn hostfile_and_config_text() {
    let seeds = vec![
        b"s0 127.0.0.1:7000\ns1 node2:7000\n# comment\n\ns2 [::1]:7002\n".to_vec(),
        b"a 10.0.0.1\nb 10.0.0.2:8000 \n".to_vec(),
        Config::default().to_json_pretty().into_bytes(),
        br#"{"chunk_size": 1048576, "backend": {"kind": "dir", "writeback": "idle"}}"#.to_vec(),
    ];
    check("hostfile and config", seeds, |b| {
        let text = String::from_utf8_lossy(b);
        let hostfile = Hostfile::parse(&text, "fuzz").is_ok();
        let config = Config::parse(&text, "fuzz").is_ok();
        hostfile || config
    });
}

#[test]
fn namespace_checkpoint_dumps_and_manifests() {
    let mut dump = DumpWriter::new(7, 1, 3);
    let mut file = Metadata::new(FileKind::File, 0o644, FileId(1 << 70), 1_000);
    file.size = 12345;
    dump.push("/a/b", &file);
    let mut link = Metadata::new(FileKind::Symlink, 0o777, FileId(2 << 70), 2_000);
    link.link_target = "../b".into();
    dump.push("/a/l", &link);
    let manifest = Manifest {
        generation: 4,
        sequence: 7,
        servers: 3,
        entries: 2,
        files: 1,
        file_bytes: 12345,
        created_ns: 1_700_000_000_000_000_000,
    };
    // A mutated dump fails its checksum before any record is read; the
    // record parser is reached through inputs whose checksum is recomputed.
    let seeds = vec![dump.finish(), manifest.encode()];
    check("checkpoint dump and manifest", seeds, |b| {
        let as_is = decode_dump(b).is_ok() || Manifest::decode(b).is_ok();
        let resealed = b.len() >= 8 && {
            let mut sealed = b[..b.len() - 8].to_vec();
            let sum = xxhash_rust::xxh3::xxh3_64(&sealed);
            sealed.extend_from_slice(&sum.to_le_bytes());
            decode_dump(&sealed).is_ok()
        };
        as_is || resealed
    });
}
