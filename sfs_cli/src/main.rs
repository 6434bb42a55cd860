//! `sfs`: the command a job script and a person use to run SFS.
//!
//! `sfs start` starts every server of a hostfile (this machine's directly,
//! the others' through the launcher: ssh), `sfs stop` and `sfs status`
//! reach every server over their control RPCs, `sfs clean` removes every
//! server's state, `sfs hostfile` writes a hostfile from the batch system's
//! node list; `sfs ls/put/get/rm/mkdir/stat` work on the SFS namespace
//! through the client library, `sfs stage-in/stage-out` copy trees in and
//! out in parallel (verified, resumable), and `sfs flush` copies files to
//! the object back end; `sfs server` is the daemon itself (what
//! `sfs start` launches in the background); `sfs exec -- PROGRAM` runs an
//! unmodified program with the LD_PRELOAD shim.

/// `println!` that returns the write's error instead of panicking, for all
/// command output: a reader that goes away (`sfs ls | head`) must end the
/// command quietly ([`exit_quietly_on_closed_stdout`]), not with a panic.
macro_rules! outln {
    ($($arg:tt)*) => {{
        use std::io::Write as _;
        writeln!(std::io::stdout().lock(), $($arg)*)
    }};
}

mod bench;
mod checkpoint;
mod clean;
mod exec;
mod files;
mod flush;
mod fsck;
mod launcher;
mod local_time;
mod make_hostfile;
mod node;
mod report;
mod servers;
mod setup;
mod stage;
mod status;

use anyhow::Context;
use clap::parser::ValueSource;
use clap::{CommandFactory, FromArgMatches, Parser, Subcommand};
use sfs_global::config::Config;
use std::path::PathBuf;

pub use setup::Setup;

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
    /// Start every server of the hostfile (other hosts' through the
    /// config's `launcher`, all at once) and wait until they are ready.
    Start {
        /// Start from the namespace checkpoint in the object back end
        /// (written by `sfs stop --flush` or `sfs checkpoint`, with any
        /// number of servers); every server's rootdir must be fresh.
        #[arg(long)]
        restore: bool,
        /// Start only the servers whose address is on this machine (for a
        /// launcher of your own, such as pdsh or a Slurm prolog).
        #[arg(long)]
        local_only: bool,
    },
    /// Stop every server of the hostfile, on this machine or not (graceful: in-flight requests finish).
    Stop {
        /// First write every file and the namespace to the object back end
        /// (`sfs checkpoint`); nothing is stopped if that fails.
        #[arg(long)]
        flush: bool,
        /// First write what changed back by name to the config's
        /// `backing_dir`, as `sfs stage-out --changed / BACKING_DIR` (before
        /// --flush); nothing is stopped if a path fails.
        #[arg(long)]
        write_back: bool,
    },
    /// Remove every server's state (its directory under `rootdir`, and
    /// under `metadir`) on every host; refused while a server runs. The
    /// object back end and the job secret stay.
    Clean,
    /// Write a hostfile for the job's nodes (standard output, or --output).
    #[command(group(clap::ArgGroup::new("nodes").required(true).args(["slurm", "from"])))]
    Hostfile {
        /// The nodes of this Slurm job (SLURM_JOB_NODELIST, expanded by
        /// `scontrol show hostnames`).
        #[arg(long)]
        slurm: bool,
        /// A file with one host a line (MPI machine file, PBS_NODEFILE); a
        /// host listed N times gets N servers.
        #[arg(long, value_name = "FILE")]
        from: Option<PathBuf>,
        /// RPC port of each node's first server; a node's further servers
        /// step past the data ports (port + data_port_offset).
        #[arg(long, default_value_t = sfs_global::hostfile::DEFAULT_PORT)]
        port: u16,
        /// The address a node's servers listen on: `{node}` is the node's
        /// name, `{number}` its place in the list from 1 (`{node}-ib`,
        /// `10.1.0.{number}`).
        #[arg(long, default_value = "{node}", value_name = "TEMPLATE")]
        address: String,
        /// Servers on each node.
        #[arg(long, default_value_t = 1)]
        servers_per_node: u32,
        /// Write the hostfile here (whole, or not at all) instead of to
        /// standard output.
        #[arg(long, short = 'o', value_name = "FILE")]
        output: Option<PathBuf>,
    },
    /// Check the object back end and every server's chunks against the
    /// namespace: orphan objects and chunks, missing objects, a broken
    /// checkpoint; exits non-zero while problems remain.
    Fsck {
        /// Remove orphan objects, orphan chunks and stale checkpoint objects.
        #[arg(long)]
        repair: bool,
    },
    /// Write every dirty file and the whole namespace to the object back end,
    /// so that `sfs start --restore` of a later job sees this tree.
    Checkpoint,
    /// Show every server: up, data path, entries (estimate), bytes, free space, requests, uptime.
    Status {
        /// One JSON object with every field of every server, for scripts.
        #[arg(long, conflicts_with = "watch")]
        json: bool,
        /// Redraw the table every SECONDS (default 2) with each server's
        /// requests/s and MB/s written and read since the last redraw;
        /// until interrupted, or --count redraws.
        #[arg(long, value_name = "SECONDS", num_args = 0..=1, default_missing_value = "2")]
        watch: Option<f64>,
        /// With --watch: stop after this many redraws.
        #[arg(long, value_name = "N", requires = "watch")]
        count: Option<u64>,
    },
    /// List a directory (or show one entry).
    Ls {
        /// Long listing as `ls -ln`: mode, links, uid, gid, size, modification time (local).
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
    /// Copy files, directories and S3 prefixes into SFS: in parallel,
    /// verified (xxh3), resumable (docs/staging.md).
    StageIn(stage::StageArgs),
    /// Copy SFS files and directories out to a local path or an S3
    /// prefix: in parallel, verified (xxh3), resumable (docs/staging.md).
    StageOut(stage::StageOutArgs),
    /// Write files to the object back end and make them persistent there
    /// (back-end-persistent); prints the bytes flushed per file and a total.
    Flush {
        /// Flush every file under each directory.
        #[arg(short = 'r', long = "recursive")]
        recursive: bool,
        /// Flush a file larger than this many MiB in slices of this size
        /// (whole chunks), one request each: progress within a huge file,
        /// and no request runs long.
        #[arg(long, default_value_t = 256, value_parser = clap::value_parser!(u64).range(1..))]
        slice_mib: u64,
        #[arg(required = true)]
        paths: Vec<String>,
    },
    /// Measure throughput and metadata rates through the client library.
    #[command(subcommand)]
    Bench(BenchCommand),
    /// Run PROGRAM with the SFS shim preloaded: its file calls under the mount directory go to SFS.
    Exec {
        /// The shim library (default: libsfs_preload.so next to this `sfs` binary).
        #[arg(long, env = "SFS_PRELOAD")]
        preload: Option<PathBuf>,
        /// Start the program without first asking every server whether it
        /// answers (for many ranks started at once; a program then learns
        /// of a server that is down from EIO and one line on stderr).
        #[arg(long)]
        no_check: bool,
        /// The program and its arguments (after `--`).
        #[arg(required = true, trailing_var_arg = true, allow_hyphen_values = true)]
        command: Vec<std::ffi::OsString>,
    },
    /// Print the default configuration (what config.example.json holds).
    ConfigExample,
    /// What the launcher runs on another host: start or clean the servers
    /// named there, with the job secret on standard input.
    #[command(hide = true)]
    Node {
        /// The digest of the launcher's hostfile (16 hex digits).
        #[arg(long)]
        hostfile_digest: String,
        /// The digest of the launcher's config (16 hex digits).
        #[arg(long)]
        config_digest: String,
        #[command(subcommand)]
        action: NodeCommand,
    },
    /// Run one server in the foreground (what `sfs start` launches).
    #[command(hide = true)]
    Server {
        /// Name of this server in the hostfile (default: the only local entry).
        #[arg(long)]
        id: Option<String>,
        /// Restore the namespace checkpoint before serving.
        #[arg(long)]
        restore: bool,
        /// Serve RPC on the listening TCP socket inherited as descriptor
        /// N, bound to this server's hostfile address by whoever started
        /// the server (a supervisor, a test kit binding port 0), instead
        /// of binding that address.
        #[arg(long, value_name = "N")]
        listen_fd: Option<i32>,
    },
}

#[derive(Subcommand)]
enum NodeCommand {
    /// Start these servers of this host and wait until they are ready.
    Start {
        #[arg(long)]
        restore: bool,
        #[arg(required = true)]
        servers: Vec<String>,
    },
    /// Remove these servers' state on this host.
    Clean {
        #[arg(required = true)]
        servers: Vec<String>,
    },
    /// A task of the srun launcher's step: start the servers of this
    /// node's slot (`NODE=s1,s2`), then stay until they exit.
    StepStart {
        #[arg(long)]
        restore: bool,
        #[arg(required = true)]
        slots: Vec<String>,
    },
    /// A task of `sfs clean`'s srun step.
    StepClean {
        #[arg(required = true)]
        slots: Vec<String>,
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

/// Exit status of a command whose standard output was closed by its
/// reader: what a shell reports for a process killed by SIGPIPE (128 + 13),
/// as `ls | head` gives with coreutils; Rust ignores SIGPIPE, so the write
/// fails with EPIPE instead and we end quietly with the same status.
const CLOSED_STDOUT_STATUS: i32 = 141;

/// Ends the process without a message when `error` is a broken pipe: the
/// reader of our output has all it wanted (`sfs ls | head`).
fn exit_quietly_on_closed_stdout(error: &anyhow::Error) {
    let broken_pipe = error.chain().any(|cause| {
        cause
            .downcast_ref::<std::io::Error>()
            .is_some_and(|e| e.kind() == std::io::ErrorKind::BrokenPipe)
    });
    if broken_pipe {
        std::process::exit(CLOSED_STDOUT_STATUS);
    }
}

/// The files named by flag or environment variable, and which of the two
/// named the hostfile (for the message when it cannot be read).
fn request(matches: &clap::ArgMatches, cli: &Cli) -> setup::Request {
    let named = match matches.value_source("hostfile") {
        Some(ValueSource::EnvVariable) => setup::Named::Environment,
        _ => setup::Named::Flag,
    };
    setup::Request {
        hostfile: cli.hostfile.clone().map(|path| (path, named)),
        config: cli.config.clone(),
    }
}

fn main() {
    let matches = Cli::command().get_matches();
    let cli = Cli::from_arg_matches(&matches).unwrap_or_else(|e| e.exit());
    let result = match &cli.command {
        Command::ConfigExample => {
            outln!("{}", Config::default().to_json_pretty().trim_end()).map_err(anyhow::Error::from)
        }
        Command::Hostfile {
            slurm,
            from,
            address,
            port,
            servers_per_node,
            output,
        } => setup::load_config(&request(&matches, &cli)).and_then(|(config, _)| {
            let source = match (slurm, from) {
                (true, _) => make_hostfile::Source::Slurm,
                (false, Some(file)) => make_hostfile::Source::File(file),
                (false, None) => unreachable!("clap requires --slurm or --from"),
            };
            make_hostfile::run(
                &config,
                &source,
                address,
                *port,
                *servers_per_node,
                output.as_deref(),
            )
        }),
        command => setup::load(&request(&matches, &cli)).and_then(|setup| match command {
            Command::Start {
                restore,
                local_only,
            } => servers::start(&setup, *restore, *local_only),
            Command::Clean => clean::clean(&setup),
            Command::Node {
                hostfile_digest,
                config_digest,
                action,
            } => {
                let expected = node::Expected {
                    hostfile_digest,
                    config_digest,
                };
                let action = match action {
                    NodeCommand::Start { restore, servers } => node::Action::Start {
                        restore: *restore,
                        servers,
                    },
                    NodeCommand::Clean { servers } => node::Action::Clean { servers },
                    NodeCommand::StepStart { restore, slots } => node::Action::StepStart {
                        restore: *restore,
                        slots,
                    },
                    NodeCommand::StepClean { slots } => node::Action::StepClean { slots },
                };
                node::run(&setup, &expected, &action)
            }
            Command::Stop { flush, write_back } => {
                if *write_back {
                    stage::write_back(&setup).context(
                        "nothing stopped (the servers keep running, so the data stays reachable in SFS)",
                    )?;
                }
                if *flush {
                    checkpoint::checkpoint(&setup)?;
                }
                servers::stop(&setup)
            }
            Command::Checkpoint => checkpoint::checkpoint(&setup),
            Command::Fsck { repair } => fsck::fsck(&setup, *repair),
            Command::Status {
                json, watch: None, ..
            } => status::status(&setup, *json),
            Command::Status {
                watch: Some(seconds),
                count,
                ..
            } => status::watch(&setup, *seconds, *count),
            Command::Server {
                id,
                restore,
                listen_fd,
            } => servers::serve(setup, id.clone(), *restore, *listen_fd),
            Command::Ls { long, path } => files::ls(&setup, path, *long),
            Command::Put { local, path } => files::put(&setup, local, path),
            Command::Get { path, local } => files::get(&setup, path, local),
            Command::Rm { recursive, paths } => files::rm(&setup, paths, *recursive),
            Command::Mkdir { parents, paths } => files::mkdir(&setup, paths, *parents),
            Command::Stat { path } => files::stat(&setup, path),
            Command::StageIn(args) => stage::stage_in(&setup, args),
            Command::StageOut(args) => stage::stage_out(&setup, args),
            Command::Flush {
                recursive,
                slice_mib,
                paths,
            } => flush::flush(&setup, paths, *recursive, *slice_mib << 20),
            Command::Exec {
                preload,
                no_check,
                command,
            } => exec::run(&setup, preload.as_deref(), !*no_check, command),
            Command::Bench(BenchCommand::Data {
                size_mib,
                block_kib,
            }) => bench::data(&setup, *size_mib << 20, *block_kib << 10),
            Command::Bench(BenchCommand::Meta { files }) => bench::metadata(&setup, *files),
            Command::ConfigExample | Command::Hostfile { .. } => unreachable!("handled above"),
        }),
    };
    if let Err(e) = result {
        exit_quietly_on_closed_stdout(&e);
        eprintln!("sfs: {e:#}");
        std::process::exit(1);
    }
}
