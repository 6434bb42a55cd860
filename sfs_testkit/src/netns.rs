//! Simulated nodes for tests of what spans machines (the launcher, `sfs
//! stop` from another node): Linux network namespaces joined by a bridge
//! that lives in a namespace of its own, each "node" with its own address
//! and, if asked, its own `sshd` (own host key, a client key made by the
//! test, a private config; FACTS.md, "sshd in network namespaces").
//!
//! Traffic stays inside: the addresses exist only in these namespaces, and
//! every program that uses them must run in one too ([`Network::command`]);
//! the root namespace has no route to them (it would send such traffic off
//! the machine). Everything made here is undone on drop — sshd processes
//! killed, namespaces (and with them their links) deleted — also when the
//! test panics.

use std::path::{Path, PathBuf};
use std::process::{Child, Command, Output, Stdio};
use std::time::{Duration, Instant};

/// Why the simulated nodes cannot be built here, or `None` when they can:
/// they need root (namespaces, the bridge, sshd) and the `ip`, `sshd`,
/// `ssh` and `ssh-keygen` programs (`scripts/setup.sh` installs them).
pub fn missing_prerequisites() -> Option<String> {
    if !crate::is_root() {
        return Some("not root: network namespaces and sshd need root".into());
    }
    for (program, package) in [
        ("ip", "iproute2"),
        (SSHD, "openssh-server"),
        ("ssh", "openssh-client"),
        ("ssh-keygen", "openssh-client"),
    ] {
        let found = match program.starts_with('/') {
            true => Path::new(program).is_file(),
            false => Command::new(program)
                .arg("-V")
                .stdout(Stdio::null())
                .stderr(Stdio::null())
                .status()
                .is_ok(),
        };
        if !found {
            return Some(format!(
                "{program} not found (package {package}; scripts/setup.sh installs it)"
            ));
        }
    }
    None
}

/// Where Debian installs sshd (it must be run by its absolute path).
pub const SSHD: &str = "/usr/sbin/sshd";

/// Runs `command`, panicking with its output if it fails.
pub fn run_ok(command: &mut Command) -> Output {
    crate::run_checked(command, String::new)
}

fn ip(args: &[&str]) {
    run_ok(Command::new("ip").args(args));
}

/// A bridge in its own namespace and the namespaces attached to it.
pub struct Network {
    /// Prefix of every namespace's name (unique per process).
    prefix: String,
    bridge: String,
    /// The first three octets of the /24 the nodes live in.
    subnet: String,
    /// Node namespaces made so far (deleted on drop, before the bridge's).
    nodes: Vec<String>,
}

impl Network {
    /// The bridge namespace; `tag` (a few letters) and the process id
    /// name every namespace, so parallel tests do not meet. `subnet` is
    /// the first three octets of an IPv4 /24 (it exists only in these
    /// namespaces).
    pub fn create(tag: &str, subnet: &str) -> Network {
        let prefix = format!("sfs{tag}{}", std::process::id());
        let bridge = format!("{prefix}-br");
        ip(&["netns", "add", &bridge]);
        let network = Network {
            prefix,
            bridge,
            subnet: subnet.to_string(),
            nodes: Vec::new(),
        };
        ip(&["-n", &network.bridge, "link", "set", "lo", "up"]);
        ip(&[
            "-n",
            &network.bridge,
            "link",
            "add",
            "br0",
            "type",
            "bridge",
        ]);
        ip(&["-n", &network.bridge, "link", "set", "br0", "up"]);
        network
    }

    /// A node namespace `name` with address `subnet.host` on the bridge;
    /// returns the namespace's name and the address.
    pub fn add_node(&mut self, name: &str, host: u8) -> (String, String) {
        let namespace = format!("{}-{name}", self.prefix);
        ip(&["netns", "add", &namespace]);
        self.nodes.push(namespace.clone());
        // The veth pair is made inside the node's namespace with its peer
        // put straight into the bridge's: it never exists in the root one.
        let port = format!("p{host}");
        ip(&[
            "-n",
            &namespace,
            "link",
            "add",
            "eth0",
            "type",
            "veth",
            "peer",
            "name",
            &port,
            "netns",
            &self.bridge,
        ]);
        ip(&[
            "-n",
            &self.bridge,
            "link",
            "set",
            &port,
            "master",
            "br0",
            "up",
        ]);
        let address = format!("{}.{host}", self.subnet);
        ip(&[
            "-n",
            &namespace,
            "addr",
            "add",
            &format!("{address}/24"),
            "dev",
            "eth0",
        ]);
        ip(&["-n", &namespace, "link", "set", "eth0", "up"]);
        ip(&["-n", &namespace, "link", "set", "lo", "up"]);
        (namespace, address)
    }

    /// `program` run inside `namespace` (`ip netns exec`, which execs it:
    /// the child is the program itself).
    pub fn command(namespace: &str, program: impl AsRef<std::ffi::OsStr>) -> Command {
        let mut command = Command::new("ip");
        command.args(["netns", "exec", namespace]).arg(program);
        command
    }
}

impl Drop for Network {
    fn drop(&mut self) {
        for namespace in self.nodes.iter().chain([&self.bridge]) {
            let _ = Command::new("ip")
                .args(["netns", "del", namespace])
                .stderr(Stdio::null())
                .status();
        }
    }
}

/// Keys and configs for logins between the simulated nodes: a host key per
/// node, one client key authorised on all, a client config that trusts
/// exactly those host keys and nothing else.
pub struct Ssh {
    dir: PathBuf,
    /// The client config: pass `ssh -F` this.
    pub client_config: PathBuf,
}

fn keygen(path: &Path) {
    run_ok(
        Command::new("ssh-keygen")
            .args(["-q", "-t", "ed25519", "-N", "", "-C", "sfs-test", "-f"])
            .arg(path),
    );
}

impl Ssh {
    /// Makes the client key and its config under `dir` (which must exist).
    pub fn new(dir: &Path) -> Ssh {
        let dir = dir.to_path_buf();
        keygen(&dir.join("id"));
        std::fs::copy(dir.join("id.pub"), dir.join("authorized_keys")).unwrap();
        std::fs::write(dir.join("known_hosts"), "").unwrap();
        let client_config = dir.join("config");
        std::fs::write(
            &client_config,
            format!(
                "Host *\n  User root\n  IdentityFile {id}\n  IdentitiesOnly yes\n  \
                 UserKnownHostsFile {known}\n  GlobalKnownHostsFile /dev/null\n  \
                 StrictHostKeyChecking yes\n  LogLevel ERROR\n",
                id = dir.join("id").display(),
                known = dir.join("known_hosts").display()
            ),
        )
        .unwrap();
        Ssh { dir, client_config }
    }

    /// Starts an sshd for `address` inside `namespace` with a host key of
    /// its own (added to the client's known hosts), and waits until it
    /// listens.
    pub fn start_sshd(&self, namespace: &str, address: &str) -> Sshd {
        let key = self.dir.join(format!("host-{address}"));
        keygen(&key);
        let public = std::fs::read_to_string(format!("{}.pub", key.display())).unwrap();
        let mut known = std::fs::read_to_string(self.dir.join("known_hosts")).unwrap();
        known.push_str(&format!("{address} {public}"));
        std::fs::write(self.dir.join("known_hosts"), known).unwrap();
        let config = self.dir.join(format!("sshd-{address}.conf"));
        std::fs::write(
            &config,
            format!(
                "ListenAddress {address}:22\nHostKey {key}\nAuthorizedKeysFile {auth}\n\
                 PidFile none\nStrictModes no\nUsePAM no\nPermitRootLogin yes\n\
                 PasswordAuthentication no\nKbdInteractiveAuthentication no\n\
                 PubkeyAuthentication yes\nLogLevel INFO\n",
                key = key.display(),
                auth = self.dir.join("authorized_keys").display()
            ),
        )
        .unwrap();
        // sshd's privilege-separation directory (Debian's service makes it).
        std::fs::create_dir_all("/run/sshd").unwrap();
        let log = self.dir.join(format!("sshd-{address}.log"));
        let log_file = std::fs::File::create(&log).unwrap();
        let child = Network::command(namespace, SSHD)
            .args(["-D", "-e", "-f"])
            .arg(&config)
            .stdin(Stdio::null())
            .stdout(Stdio::null())
            .stderr(log_file)
            .spawn()
            .expect("starting sshd");
        let mut sshd = Sshd {
            child: Some(child),
            log,
        };
        sshd.wait_listening(address);
        sshd
    }
}

/// One running sshd; killed on drop.
pub struct Sshd {
    child: Option<Child>,
    log: PathBuf,
}

impl Sshd {
    /// Waits for sshd's own "Server listening" line, or panics with its log
    /// when it exits or a minute passes.
    fn wait_listening(&mut self, address: &str) {
        let deadline = Instant::now() + Duration::from_secs(60);
        let child = self.child.as_mut().expect("sshd started");
        loop {
            let log = std::fs::read_to_string(&self.log).unwrap_or_default();
            if log.contains(&format!("Server listening on {address} port 22")) {
                return;
            }
            if let Ok(Some(status)) = child.try_wait() {
                panic!("sshd for {address} exited ({status}):\n{log}");
            }
            assert!(
                Instant::now() < deadline,
                "sshd for {address} not listening after a minute:\n{log}"
            );
            std::thread::sleep(Duration::from_millis(20));
        }
    }

    /// Stops it now (the node then refuses logins).
    pub fn kill(&mut self) {
        if let Some(mut child) = self.child.take() {
            let _ = child.kill();
            let _ = child.wait();
        }
    }
}

impl Drop for Sshd {
    fn drop(&mut self) {
        self.kill();
    }
}
