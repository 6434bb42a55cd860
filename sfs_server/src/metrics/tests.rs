//! The exposition text and the histogram.

use super::*;
use std::collections::BTreeMap;

/// Parses exposition text into `name{labels}` -> value, checking every
/// line's shape and that each sample's family was declared by `# TYPE`
/// (a histogram's `_bucket`/`_sum`/`_count` belong to their family).
fn parse(text: &str) -> BTreeMap<String, f64> {
    let mut declared = std::collections::BTreeSet::new();
    let mut samples = BTreeMap::new();
    for line in text.lines() {
        if let Some(rest) = line.strip_prefix("# TYPE ") {
            let (name, kind) = rest.split_once(' ').expect("TYPE name kind");
            assert!(["counter", "gauge", "histogram"].contains(&kind), "{line}");
            assert!(declared.insert(name.to_string()), "declared twice: {line}");
            continue;
        }
        if line.starts_with("# HELP ") {
            continue;
        }
        let (series, value) = line.rsplit_once(' ').expect("sample and value");
        let value: f64 = value
            .parse()
            .unwrap_or_else(|_| panic!("bad value: {line}"));
        let name = series.split('{').next().unwrap();
        assert!(series.ends_with('}'), "labels closed: {line}");
        let family = ["_bucket", "_sum", "_count"]
            .iter()
            .find_map(|suffix| name.strip_suffix(suffix).filter(|f| declared.contains(*f)))
            .unwrap_or(name);
        assert!(declared.contains(family), "undeclared family: {line}");
        assert!(series.contains("server=\"s\\\"1\""), "server label: {line}");
        assert!(
            samples.insert(series.to_string(), value).is_none(),
            "repeated: {line}"
        );
    }
    samples
}

#[test]
fn histogram_buckets_are_cumulative_and_bounded() {
    let h = Histogram::default();
    h.observe(Duration::from_micros(10)); // first bucket
    h.observe(Duration::from_micros(50)); // on the bound: first bucket
    h.observe(Duration::from_millis(2)); // 2.5 ms
    h.observe(Duration::from_secs(60)); // +Inf
    assert_eq!(h.count(), 4);
    let mut out = String::new();
    h.render(&mut out, "x", "a=\"b\"");
    let lines: Vec<&str> = out.lines().collect();
    assert_eq!(lines[0], "x_bucket{a=\"b\",le=\"0.00005\"} 2");
    assert_eq!(lines[4], "x_bucket{a=\"b\",le=\"0.001\"} 2");
    assert_eq!(lines[5], "x_bucket{a=\"b\",le=\"0.0025\"} 3");
    assert_eq!(lines[9], "x_bucket{a=\"b\",le=\"10\"} 3");
    assert_eq!(lines[10], "x_bucket{a=\"b\",le=\"+Inf\"} 4");
    let sum: f64 = lines[11]
        .strip_prefix("x_sum{a=\"b\"} ")
        .unwrap()
        .parse()
        .unwrap();
    assert!((sum - 60.00206).abs() < 1e-9, "{sum}");
    assert_eq!(lines[12], "x_count{a=\"b\"} 4");
    assert_eq!(lines.len(), 13);
}

#[test]
fn exposition_names_every_figure_and_parses() {
    let metrics = Metrics::default();
    let create = sfs_rpc::methods::METHODS
        .iter()
        .find(|(_, name)| *name == "create")
        .unwrap()
        .0;
    metrics.rpc_done(create, Duration::from_micros(30), None);
    metrics.rpc_done(create, Duration::from_millis(3), Some(Errno::EEXIST));
    metrics.rpc_done(999, Duration::from_micros(1), Some(Errno(5000)));
    metrics.grpc_done("/sfs.Metadata/Stat", Duration::from_micros(80), None);
    metrics.grpc_done(
        "/sfs.Metadata/Stat",
        Duration::from_micros(90),
        Some(Errno::ENOENT),
    );
    metrics.grpc_done("/sfs.Nothing/Here", Duration::from_micros(1), None);
    let tcp = metrics.transport(Transport::Tcp);
    tcp.bytes_in.fetch_add(1 << 20, Ordering::Relaxed);
    tcp.connections.fetch_add(2, Ordering::Relaxed);
    tcp.write_latency.observe(Duration::from_micros(200));
    metrics.data_error(Errno::ENOSPC);
    let snapshot = Snapshot {
        requests: 10,
        uptime_seconds: 1.5,
        entries: 7,
        chunk_bytes: 4096,
        capacity_bytes: 1 << 30,
        free_bytes: (1 << 30) - 4096,
        tier: crate::tier::TierStatus {
            dirty_bytes: 4096,
            written_back_bytes: 8192,
            writeback_errors: 1,
            ..Default::default()
        },
    };
    let text = render("s\"1", &metrics, &snapshot);
    let samples = parse(&text);
    let get = |series: &str| {
        *samples
            .get(series)
            .unwrap_or_else(|| panic!("{series} missing from:\n{text}"))
    };
    let s = "server=\"s\\\"1\"";
    assert_eq!(
        get(&format!(
            "sfs_rpc_requests_total{{{s},protocol=\"lean\",method=\"create\"}}"
        )),
        2.0
    );
    assert_eq!(
        get(&format!(
            "sfs_rpc_requests_total{{{s},protocol=\"lean\",method=\"unknown\"}}"
        )),
        1.0
    );
    assert_eq!(
        get(&format!(
            "sfs_rpc_requests_total{{{s},protocol=\"grpc\",method=\"stat\"}}"
        )),
        2.0
    );
    assert_eq!(
        get(&format!(
            "sfs_rpc_requests_total{{{s},protocol=\"grpc\",method=\"unknown\"}}"
        )),
        1.0
    );
    assert_eq!(
        get(&format!(
            "sfs_rpc_requests_total{{{s},protocol=\"grpc\",method=\"create\"}}"
        )),
        0.0
    );
    assert_eq!(
        get(&format!(
            "sfs_rpc_request_duration_seconds_bucket{{{s},protocol=\"lean\",method=\"create\",le=\"0.0025\"}}"
        )),
        1.0
    );
    assert_eq!(
        get(&format!(
            "sfs_rpc_request_duration_seconds_count{{{s},protocol=\"lean\",method=\"create\"}}"
        )),
        2.0
    );
    assert_eq!(
        get(&format!(
            "sfs_rpc_request_duration_seconds_count{{{s},protocol=\"grpc\",method=\"stat\"}}"
        )),
        2.0
    );
    assert!(
        !text.contains("protocol=\"lean\",method=\"stat\",le="),
        "an unused method has no histogram"
    );
    assert_eq!(
        get(&format!(
            "sfs_data_bytes_total{{{s},transport=\"tcp\",direction=\"in\"}}"
        )),
        1048576.0
    );
    assert_eq!(
        get(&format!(
            "sfs_data_bytes_total{{{s},transport=\"shm\",direction=\"out\"}}"
        )),
        0.0
    );
    assert_eq!(
        get(&format!(
            "sfs_data_request_duration_seconds_count{{{s},transport=\"tcp\",op=\"write\"}}"
        )),
        1.0
    );
    assert_eq!(
        get(&format!(
            "sfs_errors_total{{{s},source=\"rpc\",errno=\"EEXIST\"}}"
        )),
        1.0
    );
    assert_eq!(
        get(&format!(
            "sfs_errors_total{{{s},source=\"rpc\",errno=\"other\"}}"
        )),
        1.0
    );
    assert_eq!(
        get(&format!(
            "sfs_errors_total{{{s},source=\"data\",errno=\"ENOSPC\"}}"
        )),
        1.0
    );
    assert_eq!(get(&format!("sfs_connections{{{s},kind=\"tcp\"}}")), 2.0);
    assert_eq!(get(&format!("sfs_metadata_entries{{{s}}}")), 7.0);
    assert_eq!(get(&format!("sfs_chunk_store_used_bytes{{{s}}}")), 4096.0);
    assert_eq!(
        get(&format!("sfs_chunk_store_capacity_bytes{{{s}}}")),
        1073741824.0
    );
    assert_eq!(get(&format!("sfs_tier_dirty_bytes{{{s}}}")), 4096.0);
    assert_eq!(
        get(&format!("sfs_tier_written_back_bytes_total{{{s}}}")),
        8192.0
    );
    assert_eq!(get(&format!("sfs_tier_writeback_errors_total{{{s}}}")), 1.0);
    assert_eq!(get(&format!("sfs_uptime_seconds{{{s}}}")), 1.5);
}
