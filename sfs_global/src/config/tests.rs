//! Tests of config parsing and validation.

use super::*;

#[test]
fn lean_ends_poll_unless_local_servers_fill_the_cpus() {
    let config = Config::default();
    let configured = std::time::Duration::from_micros(config.rpc_spin_us);
    let cpus = std::thread::available_parallelism().unwrap().get();
    assert_eq!(config.rpc_spin(0), configured);
    assert_eq!(config.rpc_spin(cpus), std::time::Duration::ZERO);
    assert_eq!(config.rpc_spin(cpus + 3), std::time::Duration::ZERO);
    assert_eq!(config.rpc_spin(cpus - 1), configured);
}

#[test]
fn empty_object_is_all_defaults() {
    assert_eq!(Config::parse("{}", "t").unwrap(), Config::default());
}

#[test]
fn example_file_matches_the_struct() {
    let path = Path::new(env!("CARGO_MANIFEST_DIR")).join("../config.example.json");
    let text = std::fs::read_to_string(&path).expect("config.example.json exists");
    assert_eq!(
        text,
        Config::default().to_json_pretty(),
        "config.example.json is out of date: regenerate it with `sfs config-example > config.example.json`"
    );
}

#[test]
fn unknown_field_is_named() {
    let e = Config::parse(r#"{"chunk_sise": 4096}"#, "c.json").unwrap_err();
    assert!(e.to_string().contains("chunk_sise"), "{e}");
}

#[test]
fn wrong_type_names_the_field() {
    let e = Config::parse(r#"{"chunk_size": "big"}"#, "c.json").unwrap_err();
    assert!(e.to_string().contains("field `chunk_size`"), "{e}");
}

#[test]
fn bad_values_name_field_and_fix() {
    let e = Config::parse(r#"{"chunk_size": 1000}"#, "c").unwrap_err();
    assert_eq!(
        e.to_string(),
        "c: field `chunk_size` must be a power of two between 4096 and 67108864, got 1000"
    );
    for (json, field) in [
        (r#"{"mountdir": "rel"}"#, "mountdir"),
        (r#"{"transport": "udp"}"#, "transport"),
        (r#"{"listen": "nowhere"}"#, "listen"),
        (
            r#"{"tcp_connections_per_server": 0}"#,
            "tcp_connections_per_server",
        ),
        (r#"{"request_timeout_ms": 0}"#, "request_timeout_ms"),
        (r#"{"rpc_spin_us": 20000}"#, "rpc_spin_us"),
        (r#"{"inline_data_bytes": 2000000}"#, "inline_data_bytes"),
        (r#"{"readdir_page_size": 0}"#, "readdir_page_size"),
        (r#"{"rdma": {"queue_depth": 0}}"#, "rdma.queue_depth"),
        (r#"{"rdma": {"path_mtu": 1500}}"#, "rdma.path_mtu"),
        (r#"{"rdma": {"cq_size": 5}}"#, "rdma.cq_size"),
        (r#"{"rdma": {"retry_count": 8}}"#, "rdma.retry_count"),
        (r#"{"rdma": {"ack_timeout": 0}}"#, "rdma.ack_timeout"),
        (
            r#"{"chunk_size": 4096, "rdma": {"eager_threshold": 8192}}"#,
            "rdma.eager_threshold",
        ),
        (r#"{"rdma": {"queu_depth": 4}}"#, "queu_depth"),
        (r#"{"backend": {"kind": "tape"}}"#, "backend.kind"),
        (r#"{"backend": {"path": "rel/dir"}}"#, "backend.path"),
        (r#"{"backend": {"pth": "/x"}}"#, "pth"),
    ] {
        let e = Config::parse(json, "c").unwrap_err().to_string();
        assert!(e.contains(field), "{json}: {e}");
    }
}

#[test]
fn relative_hostfile_is_next_to_config() {
    let dir = tempfile::tempdir().unwrap();
    let file = dir.path().join("config.json");
    std::fs::write(&file, r#"{"hosts_file": "hosts"}"#).unwrap();
    let c = Config::load(&file).unwrap();
    assert_eq!(Path::new(&c.hosts_file), dir.path().join("hosts"));
    assert!(matches!(
        Config::load(&dir.path().join("missing.json")),
        Err(ConfigError::Unreadable { .. })
    ));
}

#[test]
fn per_server_directories_differ() {
    let c = Config::default();
    assert_ne!(c.chunk_dir("a"), c.chunk_dir("b"));
    assert_eq!(c.meta_dir("a"), Path::new("/tmp/sfs-root/a/meta"));
}

#[test]
fn non_object_config_is_refused_naming_the_file() {
    for (json, found) in [
        ("[]", "an array"),
        ("[1, 2]", "an array"),
        (" 42 ", "a number"),
        (r#""config""#, "a string"),
        ("null", "null"),
        ("true", "a boolean"),
    ] {
        let e = Config::parse(json, "/tmp/x/my.json").unwrap_err();
        assert_eq!(
            e.to_string(),
            format!("/tmp/x/my.json: expected a JSON object with SFS settings, found {found}"),
            "{json}"
        );
    }
}

#[test]
fn rdma_section_must_be_an_object() {
    // serde would read `[16]` positionally as `queue_depth` 16.
    for (json, found) in [
        (r#"{"rdma": []}"#, "an array"),
        (r#"{"rdma": [16]}"#, "an array"),
        (r#"{"rdma": null}"#, "null"),
    ] {
        let e = Config::parse(json, "my.json").unwrap_err();
        assert_eq!(
            e.to_string(),
            format!("my.json: field `rdma` must be a JSON object of RDMA settings, found {found}"),
            "{json}"
        );
    }
}

#[test]
fn load_errors_name_the_file_given() {
    let dir = tempfile::tempdir().unwrap();
    let file = dir.path().join("my.json");
    let path = file.display();
    for (json, message) in [
        (
            r#"{"chunk_size": 1000}"#,
            format!(
                "{path}: field `chunk_size` must be a power of two between 4096 and 67108864, got 1000"
            ),
        ),
        (
            r#"{"rdma": {"path_mtu": 1500}}"#,
            format!("{path}: field `rdma.path_mtu` must be 256, 512, 1024, 2048 or 4096, got 1500"),
        ),
        (
            "[]",
            format!("{path}: expected a JSON object with SFS settings, found an array"),
        ),
    ] {
        std::fs::write(&file, json).unwrap();
        assert_eq!(Config::load(&file).unwrap_err().to_string(), message);
    }
    std::fs::write(&file, r#"{"chunk_size": "big"}"#).unwrap();
    let e = Config::load(&file).unwrap_err().to_string();
    assert!(e.starts_with(&format!("{path}: field `chunk_size`")), "{e}");
    assert!(!e.contains("config.json"), "{e}");
}

#[test]
fn in_memory_config_errors_say_config() {
    let config = Config {
        chunk_size: 1000,
        ..Config::default()
    };
    assert_eq!(
        config.validate().unwrap_err().to_string(),
        "config: field `chunk_size` must be a power of two between 4096 and 67108864, got 1000"
    );
    let rdma = RdmaConfig {
        queue_depth: 0,
        ..RdmaConfig::default()
    };
    assert_eq!(
        rdma.validate(4096).unwrap_err().to_string(),
        "config: field `rdma.queue_depth` must be from 1 to 1024, got 0"
    );
}

#[test]
fn backend_section_must_be_an_object() {
    for (json, found) in [
        (r#"{"backend": "dir"}"#, "a string"),
        (r#"{"backend": ["dir"]}"#, "an array"),
        (r#"{"backend": null}"#, "null"),
    ] {
        let e = Config::parse(json, "my.json").unwrap_err();
        assert_eq!(
            e.to_string(),
            format!(
                "my.json: field `backend` must be a JSON object of object back end settings, found {found}"
            ),
            "{json}"
        );
    }
}

#[test]
fn backend_directory_defaults_under_the_rootdir() {
    let config = Config::parse(r#"{"rootdir": "/r"}"#, "c").unwrap();
    assert_eq!(config.backend.kind, BackendKind::Dir);
    assert_eq!(config.backend_dir(), Path::new("/r/backend"));
    let config = Config::parse(r#"{"backend": {"kind": "dir", "path": "/pfs/job"}}"#, "c").unwrap();
    assert_eq!(config.backend_dir(), Path::new("/pfs/job"));
    let e = Config::parse(r#"{"backend": {"path": "job"}}"#, "c").unwrap_err();
    assert_eq!(
        e.to_string(),
        "c: field `backend.path` must be an absolute directory, or empty for <rootdir>/backend, got \"job\""
    );
}

#[test]
fn launcher_settings_are_checked_naming_the_field() {
    let config = Config::parse("{}", "c").unwrap();
    assert_eq!(config.launcher.kind, LauncherKind::Ssh);
    for (json, message) in [
        (
            r#"{"launcher": {"ssh_command": []}}"#,
            "c: field `launcher.ssh_command` must name the ssh program, e.g. [\"ssh\"], got an empty list",
        ),
        (
            r#"{"launcher": {"ssh_command": [" ", "-F", "x"]}}"#,
            "c: field `launcher.ssh_command` must start with the ssh program, got \" \"",
        ),
        (
            r#"{"launcher": {"sfs_path": "bin/sfs"}}"#,
            "c: field `launcher.sfs_path` must be an absolute path, or empty for this sfs binary's path, got \"bin/sfs\"",
        ),
        (
            r#"{"launcher": {"fanout": 0}}"#,
            "c: field `launcher.fanout` must be from 1 to 4096, got 0",
        ),
        (
            r#"{"launcher": {"timeout_ms": 0}}"#,
            "c: field `launcher.timeout_ms` must be from 1 to 3600000, got 0",
        ),
    ] {
        assert_eq!(Config::parse(json, "c").unwrap_err().to_string(), message);
    }
    let e = Config::parse(r#"{"launcher": {"kind": "pdsh"}}"#, "c").unwrap_err();
    assert!(e.to_string().contains("launcher.kind"), "{e}");
    let e = Config::parse(r#"{"launcher": "ssh"}"#, "c").unwrap_err();
    assert!(
        e.to_string()
            .contains("field `launcher` must be a JSON object"),
        "{e}"
    );
}

#[test]
fn digest_follows_every_setting() {
    let a = Config::default();
    let mut b = Config::default();
    assert_eq!(a.digest(), b.digest());
    b.launcher.timeout_ms += 1;
    assert_ne!(a.digest(), b.digest());
}

#[test]
fn metrics_port_offset_must_differ_from_the_data_port_offset() {
    let e = Config::parse(
        r#"{"data_port_offset": 3, "metrics_port_offset": 3}"#,
        "c.json",
    )
    .unwrap_err();
    let message = e.to_string();
    assert!(message.contains("`metrics_port_offset`"), "{message}");
    assert!(message.contains("`data_port_offset` (3)"), "{message}");
    let config = Config::parse(r#"{"metrics_port_offset": 2}"#, "c.json").unwrap();
    assert_eq!(config.metrics_port_offset, 2);
    assert_eq!(Config::default().metrics_port_offset, 0, "off by default");
}

#[test]
fn data_transport_names_round_trip() {
    for t in [DataTransport::Tcp, DataTransport::Rdma, DataTransport::Shm] {
        assert_eq!(DataTransport::from_name(t.name()), Some(t));
        assert_eq!(t.to_string(), t.name());
    }
    assert_eq!(DataTransport::from_name("auto"), None);
    assert_eq!(DataTransport::from_name("TCP"), None);
}
