//! Every decoder that reads bytes from the network or from files, under
//! the fuzzer of `sfs_testkit::fuzz` (docs/security.md, "Fuzzing"): no
//! panic, no input slower than a second, and no allocation above 1 MiB
//! for inputs of at most 4 KiB. `SFS_FUZZ_CASES` sets the inputs per
//! decoder (20,000 by default in the test suite; the figures in
//! docs/security.md come from a run with 1,000,000).
//!
//! The seeds (the corpus) are valid encodings made here with the
//! encoders, so every mutation starts from something the decoder accepts.
//! One test more, `rpc_bodies_at_the_message_limit`, measures what prost
//! allocates for bodies at the 16 MiB message limit, past the fuzzer's
//! input size.

use sfs_global::access::Caller;
use sfs_global::checkpoint::{decode_dump, DumpWriter, Manifest};
use sfs_global::config::Config;
use sfs_global::hostfile::Hostfile;
use sfs_global::metadata::{apply_updates, combine_updates, MetaUpdate};
use sfs_global::secret::Secret;
use sfs_global::{FileId, FileKind, Metadata};
use sfs_rdma::rdma::proto::{self, Descriptor, Hello, Payload, RdmaRequest, Region};
use sfs_rdma::shm;
use sfs_rdma::wire::{self, Op};
use sfs_rdma::ChunkRef;
use sfs_rpc::auth::{self, Answer, Malformed, Purpose, Step};
use sfs_rpc::{caller, lean, pb};
use sfs_server::tier::journal::{Record, Replayed};
use sfs_testkit::fuzz;
use std::alloc::{GlobalAlloc, Layout, System};
use std::cell::Cell;
use std::time::Duration;

thread_local! {
    /// The largest single allocation of this thread since the last reset:
    /// per thread, as the tests run in parallel and one test's allocations
    /// must not count against another's inputs. (A `const` `Cell` of a
    /// plain integer: using it never allocates, so the allocator may.)
    static LARGEST: Cell<usize> = const { Cell::new(0) };
}

/// Notes an allocation of `size` bytes.
fn note(size: usize) {
    // `try_with`: allocations while the thread is torn down go unnoted.
    let _ = LARGEST.try_with(|largest| largest.set(largest.get().max(size)));
}

/// The largest single allocation `f` made (on this thread).
fn largest_allocation(f: impl FnOnce()) -> usize {
    LARGEST.with(|largest| largest.set(0));
    f();
    LARGEST.with(Cell::get)
}

struct Tracking;

// SAFETY: every call is passed to the system allocator unchanged; the
// counter is only observed.
unsafe impl GlobalAlloc for Tracking {
    unsafe fn alloc(&self, layout: Layout) -> *mut u8 {
        note(layout.size());
        // SAFETY: the caller's contract for `alloc` is System's.
        unsafe { System.alloc(layout) }
    }
    unsafe fn dealloc(&self, ptr: *mut u8, layout: Layout) {
        // SAFETY: `ptr` came from `System.alloc` with this layout.
        unsafe { System.dealloc(ptr, layout) }
    }
    unsafe fn realloc(&self, ptr: *mut u8, layout: Layout, new_size: usize) -> *mut u8 {
        note(new_size);
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
            let mut accepted = false;
            let largest = largest_allocation(|| accepted = target(input));
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
    // Cache mode: an entry taken in from the backing directory (version 2).
    let mut sourced = file.clone();
    sourced.source = "/in/data.bin".into();
    sourced.source_len = 1 << 30;
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
    let mut seeds = vec![file.encode(), link.encode(), sourced.encode()];
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

/// Decodes `input` as the I/O code of `sfs_rpc::auth` reads a handshake
/// message: starting from nothing, each time the decoder says
/// [`Malformed::Short`] the next bytes up to the length it asks for are
/// added (as far as `input` has them). Checks that every `Short` asks for
/// more than it was given (the reader would stop otherwise), and that the
/// decision is the one the decoder makes on the whole input (bytes after a
/// message are not looked at).
fn stepwise<T: PartialEq + std::fmt::Debug>(
    input: &[u8],
    decode: impl Fn(&[u8]) -> Result<T, Malformed>,
) -> Result<T, Malformed> {
    let mut have = 0;
    loop {
        match decode(&input[..have]) {
            Err(Malformed::Short(need)) => {
                assert!(need > have, "asked for {need} bytes with {have} read");
                if need > input.len() {
                    assert_eq!(decode(input), Err(Malformed::Short(need)));
                    return Err(Malformed::Short(need));
                }
                have = need;
            }
            decided => {
                assert_eq!(decided, decode(input), "decided at {have} bytes");
                return decided;
            }
        }
    }
}

#[test]
fn connection_handshake_and_secret_text() {
    let secret = Secret::from_bytes([0x5a; 32]);
    let purposes = [Purpose::Rpc, Purpose::Data, Purpose::SharedMemory];
    let mut seeds: Vec<Vec<u8>> = purposes
        .iter()
        .map(|&p| auth::encode_hello(p, &[0x11; auth::NONCE]).to_vec())
        .collect();
    seeds.push(auth::encode_challenge(&[0x22; auth::NONCE], &[0x33; auth::PROOF]).to_vec());
    seeds.push(auth::encode_proof(&[0x44; auth::PROOF]).to_vec());
    seeds.push(auth::ACCEPT_MAGIC.to_vec());
    seeds.push(auth::encode_refusal(
        "wrong job secret: the client does not hold it",
    ));
    seeds.push(auth::encode_refusal(&"é".repeat(300)));
    // What a secret file and SFS_SECRET hold.
    seeds.push(format!("{}\n", secret.to_hex()).into_bytes());
    check("handshake and secret", seeds, |b| {
        let mut accepted = false;
        for purpose in purposes {
            accepted |= stepwise(b, |x| auth::decode_hello(x, purpose)).is_ok();
        }
        accepted |= stepwise(b, auth::decode_proof).is_ok();
        for step in [Step::Hello, Step::Proof] {
            let answer = stepwise(b, |x| auth::decode_answer(x, step));
            accepted |= matches!(answer, Ok(a) if !matches!(a, Answer::Unexpected(_)));
        }
        if let Ok(text) = std::str::from_utf8(b) {
            accepted |= Secret::from_hex(text).is_ok();
        }
        accepted
    });
}

#[test]
fn shared_memory_hello_welcome_and_requests() {
    const SERVERS: [&str; 2] = ["s0", "a-server-with-a-longer-name-0007"];
    let mut seeds = vec![
        shm::encode_hello(shm::SLOTS, CHUNK, SERVERS[0]),
        shm::encode_hello(16, CHUNK, SERVERS[1]),
        shm::encode_welcome(0).to_vec(),
        shm::encode_welcome(sfs_global::Errno::EINVAL.0).to_vec(),
    ];
    let header = wire::RequestHeader {
        op: Op::Read,
        request_id: 12,
        chunk: chunk(3, 0, CHUNK),
    };
    seeds.push(shm::encode_request(&header, shm::SLOTS - 1).to_vec());
    check("shared-memory hello", seeds, |b| {
        let hello = SERVERS
            .iter()
            .any(|name| shm::decode_hello(b, name, CHUNK).is_ok());
        let welcome = <&[u8; shm::WELCOME_LEN]>::try_from(b).is_ok_and(|w| {
            // The client's message names the errno: any i32 the server sends.
            shm::decode_welcome(w)
                .map_err(|errno| sfs_global::SfsError::new(errno, "refused").to_string())
                .is_ok()
        });
        let request = <&[u8; shm::SHM_REQUEST_LEN]>::try_from(b)
            .is_ok_and(|r| shm::decode_request(r, CHUNK, shm::SLOTS).is_ok());
        hello || welcome || request
    });
}

#[test]
fn tier_journal_records() {
    let ids = [
        FileId(1),
        FileId(0x0123_4567_89ab_cdef_0011_2233_4455_6677),
        FileId(u128::MAX),
    ];
    let records = [
        Record::Dirty(ids[0]),
        Record::InBackend(ids[1]),
        Record::Dirty(ids[2]),
        Record::Clean(ids[0]),
        Record::Gone(ids[2]),
        Record::InBackend(ids[2]),
    ];
    let journal =
        |rs: &[Record]| -> Vec<u8> { rs.iter().map(|r| r.line()).collect::<String>().into_bytes() };
    let mut torn = journal(&records);
    torn.extend_from_slice(&Record::Dirty(ids[1]).line().as_bytes()[..20]);
    let seeds = vec![journal(&records), journal(&records[..2]), torn];
    check("tier journal", seeds, |b| {
        let replayed = Replayed::replay(b);
        // What `Journal::open` rewrites (the facts alone) replays to the
        // same facts.
        let mut facts: Vec<Record> = replayed.dirty.iter().map(|&id| Record::Dirty(id)).collect();
        facts.extend(replayed.in_backend.iter().map(|&id| Record::InBackend(id)));
        assert_eq!(Replayed::replay(&journal(&facts)), replayed);
        !replayed.dirty.is_empty() || !replayed.in_backend.is_empty()
    });
}

/// Decodes `$input` (an expression giving a `prost::bytes::Buf`, evaluated
/// once per type) as each message type: how many took it. A message that
/// decodes encodes and decodes back to itself.
macro_rules! decode_as_each {
    ($input:expr; $($message:ty),* $(,)?) => {{
        let mut took = 0;
        $(
            if let Ok(m) = <$message as prost::Message>::decode($input) {
                let again = <$message as prost::Message>::decode(
                    prost::Message::encode_to_vec(&m).as_slice(),
                )
                .expect("a re-encoded message decodes");
                assert_eq!(again, m, "{} round trip", stringify!($message));
                took += 1;
            }
        )*
        took
    }};
}

fn entry() -> pb::Entry {
    let mut m = Metadata::new(
        FileKind::Symlink,
        0o777,
        FileId(1 << 100 | 77),
        1_700_000_000,
    );
    m.size = 5;
    m.link_target = "../target".into();
    pb::Entry::from(&m)
}

fn encode(m: &impl prost::Message) -> Vec<u8> {
    m.encode_to_vec()
}

/// The request bodies a server decodes (lean and gRPC: the same prost
/// messages), seeded with each type and with a lean caller block before
/// the metadata requests' bodies.
#[test]
fn rpc_request_bodies() {
    let range = pb::ChunkRange {
        id_hi: 1 << 60,
        id_lo: 42,
        index: 3,
        offset: 100,
        len: 3000,
    };
    let path = pb::PathRequest {
        path: "/data/run-07/output.h5".into(),
        check_id: true,
        id_hi: u64::MAX,
        id_lo: 9,
        access: 6,
        sticky_parent_uid: Some(1000),
    };
    let grow = pb::GrowSizeRequest {
        path: "/a/b".into(),
        end: 1 << 40,
        check_id: true,
        id_hi: 1,
        id_lo: 2,
    };
    let bodies = vec![
        encode(&pb::CreateRequest {
            path: "/a/new".into(),
            mode: 0o100644,
            exclusive: true,
            link_target: String::new(),
            check_parent: true,
            access: 2,
            rdev: 0,
        }),
        encode(&pb::CreateRequest {
            path: "/a/dev".into(),
            mode: 0o020600,
            rdev: 0x0103,
            ..Default::default()
        }),
        encode(&pb::CreateRequest {
            path: "/a/link".into(),
            mode: 0o120777,
            link_target: "../b/c".into(),
            ..Default::default()
        }),
        encode(&path),
        encode(&pb::RemoveRequest {
            path: "/a/old".into(),
            kind: pb::RemoveKind::RemoveDirectory as i32,
            if_id: true,
            id_hi: 3,
            id_lo: 4,
            check_parent: true,
            sticky_parent_uid: Some(0),
        }),
        encode(&grow),
        encode(&pb::ReserveAppendRequest {
            path: "/log".into(),
            len: 4096,
            check_id: false,
            id_hi: 0,
            id_lo: 0,
        }),
        encode(&pb::TruncateRequest {
            path: "/t".into(),
            size: 1 << 33,
            opened_for_write: true,
        }),
        encode(&pb::SetAttrRequest {
            path: "/s".into(),
            mode: Some(0o600),
            uid: Some(1000),
            gid: Some(100),
            atime_ns: Some(-1),
            mtime_ns: Some(i64::MAX),
            times_now: false,
            drop_privileges: true,
        }),
        encode(&pb::ReaddirRequest {
            dir: "/d".into(),
            page_size: 1024,
        }),
        encode(&pb::ReaddirPageRequest {
            dir: "/d".into(),
            page_size: 512,
            after: "name-0511".into(),
        }),
        encode(&pb::PutEntryRequest {
            path: "/moved".into(),
            entry: Some(entry()),
            replace: true,
            sticky_parent_uid: Some(7),
            renamed: true,
        }),
        encode(&pb::Empty {}),
        encode(&pb::FileRequest { id_hi: 5, id_lo: 6 }),
        encode(&pb::TruncateChunksRequest {
            id_hi: 5,
            id_lo: 6,
            size: 123_456,
        }),
        encode(&pb::WriteChunkRequest {
            range: Some(range),
            data: (0..3000u32).map(|i| i as u8).collect(),
            grow: Some(grow),
        }),
        encode(&pb::ReadChunkRequest {
            range: Some(range),
            stat: Some(path),
        }),
        encode(&pb::FlushChunksRequest {
            id_hi: 5,
            id_lo: 6,
            ranged: true,
            first_chunk: 10,
            chunk_count: 20,
        }),
        encode(&pb::HoldingsRequest {
            after_hi: 1,
            after_lo: 2,
            from_start: false,
            limit: 1000,
        }),
        encode(&pb::HelloRequest {
            protocol_version: 3,
        }),
        encode(&pb::CheckpointRequest { sequence: 9 }),
        encode(&pb::CommitCheckpointRequest {
            sequence: 9,
            servers: 4,
            entries: 1 << 20,
            files: 1 << 19,
            file_bytes: 1 << 40,
        }),
    ];
    // Cut to the fuzzer's 4 KiB, a write whose data field declares 64 KiB.
    let mut seeds = vec![encode(&pb::WriteChunkRequest {
        range: Some(range),
        data: vec![0x5a; 64 * 1024],
        grow: None,
    })];
    // Metadata calls come with the caller's block first.
    let mut with_caller = Vec::new();
    caller::encode_block(
        &Caller {
            uid: 1000,
            gid: 100,
            groups: vec![4, 27],
        },
        &mut with_caller,
    );
    seeds.extend(bodies.iter().cloned());
    for body in bodies.iter().take(11) {
        let mut seed = with_caller.clone();
        seed.extend_from_slice(body);
        seeds.push(seed);
    }
    check("rpc request bodies", seeds, |b| {
        let decode = |body: &[u8]| -> usize {
            // The lean server decodes from the frame's `Bytes`.
            let body = bytes::Bytes::copy_from_slice(body);
            decode_as_each!(body.clone();
                pb::CreateRequest, pb::PathRequest, pb::RemoveRequest,
                pb::GrowSizeRequest, pb::ReserveAppendRequest, pb::TruncateRequest,
                pb::SetAttrRequest, pb::ReaddirRequest, pb::ReaddirPageRequest,
                pb::PutEntryRequest, pb::Empty, pb::FileRequest,
                pb::TruncateChunksRequest, pb::WriteChunkRequest, pb::ReadChunkRequest,
                pb::FlushChunksRequest, pb::HoldingsRequest, pb::HelloRequest,
                pb::CheckpointRequest, pb::CommitCheckpointRequest,
            )
        };
        let mut took = decode(b);
        if let Ok((_, rest)) = caller::decode_block(b) {
            took += decode(rest);
        }
        took > 0
    });
}

/// The response bodies a client decodes.
#[test]
fn rpc_response_bodies() {
    let dir_entry = |name: &str| pb::DirEntry {
        name: name.into(),
        entry: Some(entry()),
    };
    let seeds = vec![
        encode(&pb::CreateResponse {
            entry: Some(entry()),
            created: true,
            parent_is_symlink: false,
        }),
        encode(&entry()),
        encode(&pb::ReserveAppendResponse { offset: 1 << 35 }),
        encode(&pb::ReaddirPage {
            entries: (0..20)
                .map(|i| dir_entry(&format!("file-{i:04}")))
                .collect(),
            more: true,
        }),
        encode(&pb::HasChildrenResponse { has_children: true }),
        encode(&pb::PutEntryResponse {
            replaced: Some(entry()),
        }),
        encode(&pb::SubtreePage {
            entries: (0..10)
                .map(|i| pb::SubtreeEntry {
                    path: format!("/a/b/{i}"),
                    entry: Some(entry()),
                })
                .collect(),
            more: false,
        }),
        encode(&pb::ReadChunkResponse {
            data: vec![0xab; 2000],
            entry: Some(entry()),
        }),
        encode(&pb::FlushChunksResponse {
            chunks: 7,
            bytes: 7 * CHUNK,
        }),
        encode(&pb::HoldingsResponse {
            files: (0..30)
                .map(|i| pb::HeldFile {
                    id_hi: i,
                    id_lo: !i,
                    chunks: i * 3,
                    in_backend: i % 2 == 0,
                })
                .collect(),
            more: true,
        }),
        encode(&pb::HelloResponse {
            protocol_version: 3,
            server_name: "s0".into(),
            server_index: 0,
            server_count: 4,
            chunk_size: CHUNK,
            data_transport: "tcp".into(),
            data_endpoint: "10.0.0.1:7001".into(),
            data_local_socket: "/run/sfs/s0/data.sock".into(),
            node_id: "2b4c1e0e-8b0f-4a4e-9d53-000000000000".into(),
            hostfile_digest: 0xdead_beef,
        }),
        encode(&pb::StatsResponse {
            server_name: "s0".into(),
            entries: 10,
            backend: "dir".into(),
            writeback: "idle".into(),
            backend_error: "no space".into(),
            data_bytes_in: u64::MAX,
            ..Default::default()
        }),
        encode(&pb::CheckpointResponse {
            entries: 1,
            files: 2,
            file_bytes: 3,
            written_back_bytes: 4,
            dump_bytes: 5,
        }),
    ];
    check("rpc response bodies", seeds, |b| {
        // The lean client decodes from a slice.
        let took = decode_as_each!(b;
            pb::CreateResponse, pb::Entry, pb::ReserveAppendResponse, pb::ReaddirPage,
            pb::HasChildrenResponse, pb::PutEntryResponse, pb::SubtreePage,
            pb::ReadChunkResponse, pb::FlushChunksResponse, pb::HoldingsResponse,
            pb::HelloResponse, pb::StatsResponse, pb::CheckpointResponse, pb::Empty,
        );
        took > 0
    });
}

/// prost at the message limit (16 MiB, `sfs_rpc::MAX_MESSAGE_BYTES`, for
/// lean bodies and gRPC messages alike), beyond the fuzzer's 4 KiB inputs.
/// Requests have no repeated fields: a server never allocates more at once
/// than the body's size — the most is a `WriteChunkRequest` whose data
/// fills the body, and a `bytes` field declaring more than the body holds
/// allocates nothing (prost checks the length against the bytes left
/// first). Responses with repeated entries do cost more than their size: a
/// client decoding a `ReaddirPage` or `SubtreePage` spends 168 bytes per
/// entry, and an empty entry takes 2 bytes of the body (docs/security.md,
/// "Fuzzing").
#[test]
fn rpc_bodies_at_the_message_limit() {
    use prost::Message;
    let limit = sfs_rpc::MAX_MESSAGE_BYTES;
    let write = pb::WriteChunkRequest {
        range: Some(pb::ChunkRange {
            id_hi: 1,
            id_lo: 2,
            index: 0,
            offset: 0,
            len: (limit - 64) as u64,
        }),
        data: vec![7; limit - 64],
        grow: None,
    }
    .encode_to_vec();
    assert!(write.len() <= limit);
    let body = bytes::Bytes::from(write.clone());
    let largest = largest_allocation(|| {
        pb::WriteChunkRequest::decode(body).unwrap();
    });
    assert!(largest <= limit, "{largest} bytes for a full write");

    let cut = bytes::Bytes::copy_from_slice(&write[..MAX_INPUT]);
    let largest = largest_allocation(|| {
        pb::WriteChunkRequest::decode(cut).unwrap_err();
    });
    assert!(largest <= MAX_INPUT, "{largest} bytes for a cut-off write");

    // 64 KiB of empty directory entries: 32,768 of them.
    let empty_entries: Vec<u8> = [0x0a, 0x00].repeat(32 * 1024);
    let page = bytes::Bytes::from(empty_entries);
    let per_entry = std::mem::size_of::<pb::DirEntry>();
    let largest = largest_allocation(|| {
        assert_eq!(
            pb::ReaddirPage::decode(page).unwrap().entries.len(),
            32 * 1024
        );
    });
    eprintln!(
        "a 64 KiB ReaddirPage of empty entries: {largest} bytes at once ({per_entry} per entry)"
    );
    assert!(
        per_entry <= 168 && largest <= 32 * 1024 * per_entry,
        "{largest} bytes, {per_entry} per entry: update docs/security.md"
    );
}
