//! `sfs`: the command a job script and a person use to run SFS.
//!
//! `sfs start` / `sfs stop` / `sfs status` manage the servers of a hostfile
//! that live on this machine; `sfs ls/put/get/rm/mkdir/stat` work on the SFS
//! namespace through the client library; `sfs server` is the daemon itself
//! (what `sfs start` launches in the background); `sfs exec -- PROGRAM` runs
//! an unmodified program with the LD_PRELOAD shim.

mod bench;
mod exec;
mod files;
mod servers;

use anyhow::{Context, Result};
use clap::{Parser, Subcommand};
use sfs_global::config::Config;
use sfs_global::hostfile::Hostfile;
use std::path::PathBuf;

#[derive(Parser)]
#[command(
    name = "sfs",
    version,
    about = "SFS: a userspace parallel file system (burst buffer) for HPC jobs"
)]
struct Cli {
    /// Hostfile listing the servers (`name address[:port]` per line).
    #[arg(long, global = true, env = "SFS_HOSTFILE")]
    hostfile: Option<PathBuf>,
    /// Configuration file (config.json).
    #[arg(long, global = true, env = "SFS_CONFIG")]
    config: Option<PathBuf>,
    #[command(subcommand)]
    command: Command,
}

#[derive(Subcommand)]
enum Command {
    /// Start the hostfile's servers that live on this machine and wait until they are ready.
    Start,
    /// Stop the hostfile's servers that live on this machine (graceful: in-flight requests finish).
    Stop,
    /// Show every server: address, up, entries, bytes, capacity.
    Status,
    /// List a directory (or show one entry).
    Ls {
        /// Long listing: type, mode, size, time.
        #[arg(short = 'l')]
        long: bool,
        #[arg(default_value = "/")]
        path: String,
    },
    /// Copy a local file into SFS.
    Put { local: PathBuf, path: String },
    /// Copy a file out of SFS.
    Get { path: String, local: PathBuf },
    /// Remove files (and with -r, directories and their contents).
    Rm {
        #[arg(short = 'r', long = "recursive")]
        recursive: bool,
        #[arg(required = true)]
        paths: Vec<String>,
    },
    /// Create directories.
    Mkdir {
        /// Create parents as needed; no error if the directory exists.
        #[arg(short = 'p', long = "parents")]
        parents: bool,
        #[arg(required = true)]
        paths: Vec<String>,
    },
    /// Show the metadata of an entry.
    Stat { path: String },
    /// Measure throughput and metadata rates through the client library.
    #[command(subcommand)]
    Bench(BenchCommand),
    /// Run PROGRAM with the SFS shim preloaded: its file calls under the mount directory go to SFS.
    Exec {
        /// The shim library (default: libsfs_wrapper.so next to this `sfs` binary).
        #[arg(long, env = "SFS_PRELOAD")]
        preload: Option<PathBuf>,
        /// The program and its arguments (after `--`).
        #[arg(required = true, trailing_var_arg = true, allow_hyphen_values = true)]
        command: Vec<std::ffi::OsString>,
    },
    /// Print the default configuration (what config.example.json holds).
    ConfigExample,
    /// Run one server in the foreground (what `sfs start` launches).
    #[command(hide = true)]
    Server {
        /// Name of this server in the hostfile (default: the only local entry).
        #[arg(long)]
        id: Option<String>,
    },
}

#[derive(Subcommand)]
enum BenchCommand {
    /// Sequential write, fsync and verified read of one file.
    Data {
        /// File size in MiB.
        #[arg(long, default_value_t = 2048)]
        size_mib: u64,
        /// Request size in KiB.
        #[arg(long, default_value_t = 1024)]
        block_kib: usize,
    },
    /// Create, stat and remove empty files from one thread.
    Meta {
        #[arg(long, default_value_t = 20_000)]
        files: usize,
    },
}

/// The config and hostfile a command works with, after the defaults chain:
/// flag, then environment variable, then `./config.json` and `./hostfile`.
pub struct Setup {
    pub config: Config,
    pub config_path: PathBuf,
    pub hostfile: Hostfile,
    pub hostfile_path: PathBuf,
}

fn load(cli: &Cli) -> Result<Setup> {
    let config_path = cli
        .config
        .clone()
        .unwrap_or_else(|| PathBuf::from("config.json"));
    let config = if config_path.exists() || cli.config.is_some() {
        Config::load(&config_path)?
    } else {
        Config::default()
    };
    // Documented order (docs/configuration.md): flag/env, then ./hostfile,
    // then the config's `hosts_file` relative to the config file's directory.
    let hostfile_path = cli.hostfile.clone().unwrap_or_else(|| {
        let local = PathBuf::from("hostfile");
        if local.exists() || cli.config.is_none() {
            local
        } else {
            let base = config_path.parent().unwrap_or(std::path::Path::new("."));
            base.join(&config.hosts_file)
        }
    });
    let hostfile = Hostfile::load(&hostfile_path)?;
    Ok(Setup {
        config,
        config_path: std::path::absolute(&config_path).context("resolving the config path")?,
        hostfile,
        hostfile_path: std::path::absolute(&hostfile_path)
            .context("resolving the hostfile path")?,
    })
}

fn main() {
    let cli = Cli::parse();
    let result = match &cli.command {
        Command::ConfigExample => {
            print!("{}", Config::default().to_json_pretty());
            Ok(())
        }
        command => load(&cli).and_then(|setup| match command {
            Command::Start => servers::start(&setup),
            Command::Stop => servers::stop(&setup),
            Command::Status => servers::status(&setup),
            Command::Server { id } => servers::serve(setup, id.clone()),
            Command::Ls { long, path } => files::ls(&setup, path, *long),
            Command::Put { local, path } => files::put(&setup, local, path),
            Command::Get { path, local } => files::get(&setup, path, local),
            Command::Rm { recursive, paths } => files::rm(&setup, paths, *recursive),
            Command::Mkdir { parents, paths } => files::mkdir(&setup, paths, *parents),
            Command::Stat { path } => files::stat(&setup, path),
            Command::Exec { preload, command } => exec::run(&setup, preload.as_deref(), command),
            Command::Bench(BenchCommand::Data {
                size_mib,
                block_kib,
            }) => bench::data(&setup, *size_mib << 20, *block_kib << 10),
            Command::Bench(BenchCommand::Meta { files }) => bench::metadata(&setup, *files),
            Command::ConfigExample => unreachable!("handled above"),
        }),
    };
    if let Err(e) = result {
        eprintln!("sfs: {e:#}");
        std::process::exit(1);
    }
}
