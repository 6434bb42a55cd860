//! Whole SFS servers inside the calling process: a cluster for tests (the
//! client crate's own tests run against it without starting processes) and
//! for embedding.
//!
//! Each server is [`run_until`] on a runtime of the cluster's own, on
//! 127.0.0.1 at a port the cluster bound (port 0: the system picks) and
//! hands over ([`PreBound`]), so no other process can take it, with its
//! `rootdir` under a directory the caller owns; the cluster is ready when
//! every server wrote its ready file, and stops every server (and waits
//! for each to finish cleanly) when stopped or dropped. What a server does
//! to its process applies to the caller's: it sets the umask to 077,
//! installs SIGTERM/SIGINT handlers (a signal stops the cluster's servers),
//! and tunes the allocator ([`crate::server`]). Stop or drop it outside any
//! tokio runtime (it waits for its servers).

use crate::server::{run_until, PreBound, ServerOptions};
use anyhow::{anyhow, bail, Context};
use sfs_global::config::Config;
use sfs_global::hostfile::Hostfile;
use sfs_global::secret::Secret;
use std::path::{Path, PathBuf};
use std::time::{Duration, Instant};

/// How long a cluster may take to become ready.
const READY_WITHIN: Duration = Duration::from_secs(30);

/// N servers running in this process (see the module documentation).
pub struct InProcessCluster {
    /// The configuration every server runs with (and a client should use).
    pub config: Config,
    /// The cluster's hostfile (`s0`, `s1`, ... on 127.0.0.1).
    pub hostfile: Hostfile,
    /// The job secret every connection proves.
    pub secret: Secret,
    runtime: Option<tokio::runtime::Runtime>,
    stops: Vec<tokio::sync::oneshot::Sender<()>>,
    servers: Vec<tokio::task::JoinHandle<anyhow::Result<()>>>,
}

impl InProcessCluster {
    /// Starts `n` servers with the default configuration, `rootdir` under
    /// `dir`, adjusted by `tune` (which must leave `rootdir` under `dir`
    /// or set another that the caller owns), and waits until all are
    /// ready.
    pub fn start(dir: &Path, n: usize, tune: impl FnOnce(&mut Config)) -> anyhow::Result<Self> {
        let secret = Secret::generate().context("a job secret")?;
        let mut config = Config {
            rootdir: dir.join("root").display().to_string(),
            data_port_offset: 0,
            ..Config::default()
        };
        tune(&mut config);
        let listeners = (0..n)
            .map(|_| std::net::TcpListener::bind("127.0.0.1:0").context("binding a loopback port"))
            .collect::<anyhow::Result<Vec<_>>>()?;
        let mut hosts = String::new();
        for (i, listener) in listeners.iter().enumerate() {
            hosts.push_str(&format!("s{i} {}\n", listener.local_addr()?));
        }
        let hostfile = Hostfile::parse(&hosts, "in-process cluster")?;
        let runtime = tokio::runtime::Builder::new_multi_thread()
            .worker_threads(2)
            .thread_name("sfs-in-process")
            .enable_all()
            .build()
            .context("the servers' runtime")?;
        let mut cluster = InProcessCluster {
            config,
            hostfile,
            secret,
            runtime: None,
            stops: Vec::new(),
            servers: Vec::new(),
        };
        for (host, listener) in cluster.hostfile.hosts.iter().zip(listeners) {
            let options = ServerOptions {
                config: cluster.config.clone(),
                hostfile: cluster.hostfile.clone(),
                server_name: Some(host.name.clone()),
                secret: Some(cluster.secret.clone()),
                restore: false,
                listener: Some(PreBound::new(listener)),
            };
            let (stop, stopped) = tokio::sync::oneshot::channel::<()>();
            cluster.stops.push(stop);
            cluster
                .servers
                .push(runtime.spawn(run_until(options, async {
                    let _ = stopped.await;
                })));
        }
        cluster.runtime = Some(runtime);
        // On failure `cluster` is dropped: the servers that did start stop.
        cluster.wait_ready()?;
        Ok(cluster)
    }

    /// The ready file of each server, where it announces that it serves.
    fn ready_files(&self) -> Vec<PathBuf> {
        self.hostfile
            .hosts
            .iter()
            .map(|h| sfs_global::ready::Ready::path(&self.config, &h.name))
            .collect()
    }

    fn wait_ready(&mut self) -> anyhow::Result<()> {
        let deadline = Instant::now() + READY_WITHIN;
        let files = self.ready_files();
        while !files.iter().all(|f| f.exists()) {
            if let Some(i) = self.servers.iter().position(|s| s.is_finished()) {
                let server = &mut self.servers[i];
                let ended = self
                    .runtime
                    .as_ref()
                    .expect("running until stopped")
                    .block_on(server);
                let name = &self.hostfile.hosts[i].name;
                return Err(match ended {
                    Ok(Ok(())) => anyhow!("server {name} stopped before it was ready"),
                    Ok(Err(e)) => e.context(format!("server {name} did not start")),
                    Err(e) => anyhow!("server {name} failed: {e}"),
                });
            }
            if Instant::now() > deadline {
                bail!("the servers were not ready within {READY_WITHIN:?}");
            }
            std::thread::sleep(Duration::from_millis(5));
        }
        Ok(())
    }

    /// Stops every server and waits for each; the first failure.
    pub fn stop(mut self) -> anyhow::Result<()> {
        self.stop_all()
    }

    fn stop_all(&mut self) -> anyhow::Result<()> {
        for stop in self.stops.drain(..) {
            let _ = stop.send(());
        }
        let Some(runtime) = self.runtime.take() else {
            return Ok(());
        };
        let mut first = Ok(());
        for (i, server) in self.servers.drain(..).enumerate() {
            let ended = match runtime.block_on(server) {
                Ok(result) => result,
                Err(e) => Err(anyhow!("its task failed: {e}")),
            };
            if let (Err(e), Ok(())) = (ended, &first) {
                first = Err(e.context(format!("server s{i}")));
            }
        }
        first
    }
}

impl Drop for InProcessCluster {
    fn drop(&mut self) {
        if let Err(e) = self.stop_all() {
            tracing::warn!("in-process cluster: {e:#}");
        }
    }
}
