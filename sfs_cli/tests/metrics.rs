//! Prometheus metrics of real servers: a workload through the client
//! library, then every server's `/metrics` scraped with a plain TCP client
//! and its counters held against what the workload did.

mod common;

use common::{pattern, write_at, Cluster};
use std::collections::BTreeMap;
use std::io::{Read, Write};
use std::net::TcpStream;

/// The metrics port is the hostfile port plus this.
const OFFSET: u16 = 7;

/// One scrape: the status line, the headers and the body of `GET path`.
fn get(port: u16, path: &str) -> (String, String, String) {
    let mut stream = TcpStream::connect(("127.0.0.1", port)).expect("metrics port open");
    write!(stream, "GET {path} HTTP/1.1\r\nHost: 127.0.0.1\r\n\r\n").unwrap();
    let mut answer = String::new();
    stream.read_to_string(&mut answer).unwrap();
    let (head, body) = answer.split_once("\r\n\r\n").expect("a head and a body");
    let (status, headers) = head.split_once("\r\n").unwrap_or((head, ""));
    let length: usize = headers
        .lines()
        .find_map(|h| h.strip_prefix("Content-Length: "))
        .expect("Content-Length")
        .parse()
        .unwrap();
    assert_eq!(length, body.len(), "the whole body came");
    (status.to_string(), headers.to_string(), body.to_string())
}

/// Parses the text exposition into samples (`name{labels}` -> value),
/// checking that every sample belongs to a family declared by `# TYPE`
/// after its `# HELP`, and carries `server="<server>"`.
fn parse(text: &str, server: &str) -> BTreeMap<String, f64> {
    let mut helped = std::collections::BTreeSet::new();
    let mut declared = std::collections::BTreeSet::new();
    let mut samples = BTreeMap::new();
    for line in text.lines() {
        if let Some(rest) = line.strip_prefix("# HELP ") {
            let (name, help) = rest.split_once(' ').expect("HELP name text");
            assert!(!help.is_empty(), "{line}");
            helped.insert(name.to_string());
        } else if let Some(rest) = line.strip_prefix("# TYPE ") {
            let (name, kind) = rest.split_once(' ').expect("TYPE name kind");
            assert!(helped.contains(name), "TYPE before HELP: {line}");
            assert!(["counter", "gauge", "histogram"].contains(&kind), "{line}");
            declared.insert(name.to_string());
        } else {
            let (series, value) = line.rsplit_once(' ').expect("a sample and its value");
            let value: f64 = value.parse().unwrap_or_else(|_| panic!("value of {line}"));
            let (name, labels) = series.split_once('{').expect("labels");
            assert!(labels.ends_with('}'), "{line}");
            let family = ["_bucket", "_sum", "_count"]
                .iter()
                .find_map(|s| name.strip_suffix(s).filter(|f| declared.contains(*f)))
                .unwrap_or(name);
            assert!(declared.contains(family), "undeclared: {line}");
            assert!(
                labels.contains(&format!("server=\"{server}\"")),
                "server label: {line}"
            );
            assert!(
                samples.insert(series.to_string(), value).is_none(),
                "{line}"
            );
        }
    }
    samples
}

/// The sum over every server and every sample whose series starts with
/// `prefix` and contains all of `labels`.
fn total(scrapes: &[BTreeMap<String, f64>], prefix: &str, labels: &[&str]) -> f64 {
    scrapes
        .iter()
        .flat_map(|s| s.iter())
        .filter(|(series, _)| {
            series.starts_with(prefix) && labels.iter().all(|l| series.contains(l))
        })
        .map(|(_, v)| v)
        .sum()
}

fn scrape_all(cluster: &Cluster) -> Vec<BTreeMap<String, f64>> {
    cluster
        .hostfile
        .hosts
        .iter()
        .map(|host| {
            let (status, headers, body) = get(host.port + OFFSET, "/metrics");
            assert_eq!(status, "HTTP/1.1 200 OK");
            assert!(
                headers.contains("Content-Type: text/plain; version=0.0.4"),
                "{headers}"
            );
            parse(&body, &host.name)
        })
        .collect()
}

#[test]
fn counters_match_a_workload_on_every_server() {
    // TCP for the data path, so bytes go over the transport a multi-node
    // job uses; pieces up to 64 KiB travel inline on the RPC connection.
    let cluster = Cluster::start_with(3, |c| {
        c.metrics_port_offset = OFFSET;
        c.shared_memory_data = false;
    });
    let before = scrape_all(&cluster);
    let bytes_in =
        |s: &[BTreeMap<String, f64>]| total(s, "sfs_data_bytes_total{", &["direction=\"in\""]);
    assert_eq!(bytes_in(&before), 0.0);

    let client = cluster.client();
    let files = 12;
    let mut written = 0u64;
    for i in 0..files {
        // Small files inline on the RPC connection, 1.5 MiB ones in
        // whole chunks over TCP.
        let len = if i % 2 == 0 { 10_000 } else { 3 << 19 };
        write_at(&client, &format!("/f{i}"), 0, &pattern(i, len));
        written += len as u64;
    }
    let after_writes = scrape_all(&cluster);
    assert_eq!(
        bytes_in(&after_writes),
        written as f64,
        "every byte written is counted once, on the server that holds it"
    );
    let tcp_in = total(
        &after_writes,
        "sfs_data_bytes_total{",
        &["transport=\"tcp\"", "direction=\"in\""],
    );
    let rpc_in = total(
        &after_writes,
        "sfs_data_bytes_total{",
        &["transport=\"rpc\"", "direction=\"in\""],
    );
    assert_eq!(tcp_in, 6.0 * f64::from(3 << 19), "the large files over TCP");
    assert_eq!(rpc_in, 6.0 * 10_000.0, "the small files inline");
    let creates = total(
        &after_writes,
        "sfs_rpc_requests_total{",
        &["method=\"create\""],
    );
    assert!(
        creates >= files as f64,
        "{creates} creates for {files} files"
    );
    let create_latencies = total(
        &after_writes,
        "sfs_rpc_request_duration_seconds_count{",
        &["method=\"create\""],
    );
    assert_eq!(create_latencies, creates, "every create timed");
    let writes = total(&after_writes, "sfs_data_requests_total{", &["op=\"write\""]);
    let timed_writes = total(
        &after_writes,
        "sfs_data_request_duration_seconds_count{",
        &["op=\"write\""],
    );
    assert_eq!(
        writes,
        6.0 + 6.0 * 3.0,
        "one write per small file, one per chunk"
    );
    assert_eq!(timed_writes, writes);
    assert!(
        total(&after_writes, "sfs_connections{", &["kind=\"tcp\""]) >= 1.0,
        "the client's data connections are open"
    );
    assert!(total(&after_writes, "sfs_connections{", &["kind=\"lean\""]) >= 1.0);
    assert!(total(&after_writes, "sfs_metadata_entries{", &[]) >= files as f64);
    assert_eq!(
        total(&after_writes, "sfs_chunk_store_used_bytes{", &[]),
        written as f64
    );
    assert!(total(&after_writes, "sfs_chunk_store_capacity_bytes{", &[]) > 0.0);

    // Reads move the same bytes out; a missing file is an ENOENT error.
    for i in 0..files {
        let len = if i % 2 == 0 { 10_000 } else { 3 << 19 };
        let mut back = vec![0u8; len];
        assert_eq!(
            client
                .read_at_path(&format!("/f{i}"), 0, &mut back)
                .unwrap(),
            len
        );
        assert_eq!(back, pattern(i, len));
    }
    assert!(client.stat("/missing").is_err());
    let after_reads = scrape_all(&cluster);
    assert_eq!(
        total(
            &after_reads,
            "sfs_data_bytes_total{",
            &["direction=\"out\""]
        ),
        written as f64
    );
    assert!(
        total(
            &after_reads,
            "sfs_errors_total{",
            &["source=\"rpc\"", "errno=\"ENOENT\""]
        ) >= 1.0
    );
    // Counters never go back.
    for (before, after) in after_writes.iter().zip(&after_reads) {
        for (series, value) in before {
            if series.contains("_total{") {
                assert!(after[series] >= *value, "{series} went back");
            }
        }
    }

    // gRPC requests are counted by method too: a client speaking gRPC
    // stats every file once and one missing path.
    let mut config = cluster.config.clone();
    config.metadata_rpc = sfs_global::config::MetadataRpc::Grpc;
    let grpc_client = sfs_client::Client::new(config, cluster.hostfile.clone()).unwrap();
    let grpc_stats = |samples: &[BTreeMap<String, f64>]| {
        total(
            samples,
            "sfs_rpc_requests_total{",
            &["protocol=\"grpc\"", "method=\"stat\""],
        )
    };
    let before = grpc_stats(&after_reads);
    for i in 0..files {
        grpc_client.stat(&format!("/f{i}")).unwrap();
    }
    assert!(grpc_client.stat("/missing-too").is_err());
    let after_grpc = scrape_all(&cluster);
    assert_eq!(grpc_stats(&after_grpc) - before, files as f64 + 1.0);
    assert_eq!(
        total(
            &after_grpc,
            "sfs_rpc_request_duration_seconds_count{",
            &["protocol=\"grpc\"", "method=\"stat\""]
        ),
        grpc_stats(&after_grpc)
    );
    assert!(
        total(
            &after_grpc,
            "sfs_errors_total{",
            &["source=\"rpc\"", "errno=\"ENOENT\""]
        ) >= 2.0
    );
    drop(grpc_client);

    // Anything but GET /metrics is refused, and the server still answers.
    let port = cluster.hostfile.hosts[0].port + OFFSET;
    assert_eq!(get(port, "/").0, "HTTP/1.1 404 Not Found");
    assert_eq!(scrape_all(&cluster).len(), 3);
}

#[test]
fn metrics_are_off_by_default() {
    let cluster = Cluster::start(2);
    let client = cluster.client();
    write_at(&client, "/f", 0, b"data");
    for (i, host) in cluster.hostfile.hosts.iter().enumerate() {
        assert!(
            TcpStream::connect(("127.0.0.1", host.port + OFFSET)).is_err(),
            "{}: nothing listens on the port metrics would use",
            host.name
        );
        let log = std::fs::read_to_string(cluster.log_file(i)).unwrap();
        assert!(!log.contains("/metrics"), "{log}");
    }
}

#[test]
fn debug_logs_say_what_each_request_asked_and_how_it_ended() {
    let cluster = Cluster::start_with(1, |c| {
        c.log_level = "sfs_server::requests=debug,info".into();
    });
    let client = cluster.client();
    write_at(&client, "/logged", 0, &pattern(3, 3 << 19));
    assert!(client.stat("/not-there").is_err());
    let log = std::fs::read_to_string(cluster.log_file(0)).unwrap();
    let has = |parts: &[&str]| log.lines().any(|l| parts.iter().all(|p| l.contains(p)));
    assert!(
        has(&[
            "protocol=\"lean\"",
            "method=\"create\"",
            "result=ok",
            "micros="
        ]),
        "{log}"
    );
    assert!(
        has(&["method=\"stat\"", "result=ENOENT"]),
        "a failed request names its errno:\n{log}"
    );
    assert!(
        has(&["method=\"write\"", "chunk=2", "len=524288", "result=ok"]),
        "chunk requests name file, chunk and range:\n{log}"
    );
}

#[test]
fn status_watch_shows_the_rates_of_a_running_workload() {
    let cluster = Cluster::start(2);
    let stop = std::sync::atomic::AtomicBool::new(false);
    let output = std::thread::scope(|scope| {
        scope.spawn(|| {
            let client = cluster.client();
            let data = pattern(1, 1 << 20);
            let mut i = 0;
            while !stop.load(std::sync::atomic::Ordering::Relaxed) {
                write_at(&client, &format!("/w{}", i % 8), 0, &data);
                i += 1;
            }
        });
        let output = cluster.sfs_ok(&["status", "--watch", "0.3", "--count", "3"]);
        stop.store(true, std::sync::atomic::Ordering::Relaxed);
        output
    });
    let redraws: Vec<&str> = output.split("sfs status --watch").skip(1).collect();
    assert_eq!(redraws.len(), 3, "{output}");
    let total = |redraw: &str| -> Vec<String> {
        let line = redraw
            .lines()
            .find(|l| l.starts_with("TOTAL"))
            .unwrap_or_else(|| panic!("no TOTAL in {redraw}"))
            .to_string();
        line.split_whitespace().map(str::to_string).collect()
    };
    // The first redraw has nothing to compare with.
    assert_eq!(total(redraws[0])[5..8], ["-", "-", "-"], "{output}");
    for redraw in &redraws[1..] {
        let fields = total(redraw);
        // TOTAL, "2", "of", "2", "up", REQ/S, IN MB/s, OUT MB/s
        assert_eq!(fields[1..5], ["2", "of", "2", "up"], "{redraw}");
        let requests: f64 = fields[5].parse().unwrap();
        let mb_in: f64 = fields[6].parse().unwrap();
        assert!(requests > 0.0, "{redraw}");
        assert!(mb_in > 0.0, "writes of 1 MiB files show: {redraw}");
    }
}
