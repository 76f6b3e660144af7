//! runc's command line (clap). Parsing only; [`crate::dispatch`] turns it into calls.

use std::path::PathBuf;

use clap::{Parser, Subcommand};

use crate::commands::ListFormat;
use crate::logging::LogFormat;

#[derive(Debug, Parser)]
#[command(
    name = "berth-lowrt",
    version,
    about = "Berth's OCI runtime (runc's command line)"
)]
pub struct Cli {
    /// Directory for container state.
    #[arg(long, global = true, default_value = "/run/berth/lowrt")]
    pub root: PathBuf,
    /// Log file (default: stderr).
    #[arg(long, global = true)]
    pub log: Option<PathBuf>,
    /// Log format: text or json (runc's JSON lines).
    #[arg(long, global = true, value_enum, default_value_t)]
    pub log_format: LogFormat,
    /// Debug logging.
    #[arg(long, global = true)]
    pub debug: bool,
    /// Use systemd for cgroups (accepted; systemd cgroup paths are refused for now).
    #[arg(long, global = true)]
    pub systemd_cgroup: bool,
    #[command(subcommand)]
    pub command: Command,
}

#[derive(Debug, Subcommand)]
pub enum Command {
    /// Create a container; it waits for `start`.
    Create {
        #[arg(long, short = 'b', default_value = ".")]
        bundle: PathBuf,
        #[arg(long)]
        pid_file: Option<PathBuf>,
        #[arg(long)]
        console_socket: Option<PathBuf>,
        #[arg(long, default_value_t = 0)]
        preserve_fds: u32,
        /// Accepted for compatibility: lowrt does not create session keyrings.
        #[arg(long)]
        no_new_keyring: bool,
        id: String,
    },
    /// Start a created container.
    Start { id: String },
    /// Print a container's state as JSON.
    State { id: String },
    /// Send a signal (default TERM) to a container's init, or to all its processes.
    Kill {
        #[arg(long, short = 'a')]
        all: bool,
        id: String,
        #[arg(default_value = "TERM")]
        signal: String,
    },
    /// Delete a container's resources.
    Delete {
        #[arg(long, short = 'f')]
        force: bool,
        id: String,
    },
    /// List containers.
    List {
        #[arg(long, short = 'q')]
        quiet: bool,
        #[arg(long, short = 'f', value_enum, default_value_t)]
        format: ListFormat,
    },
    /// Create and start a container; in the foreground wait for it and delete it.
    Run {
        #[arg(long, short = 'b', default_value = ".")]
        bundle: PathBuf,
        #[arg(long)]
        pid_file: Option<PathBuf>,
        #[arg(long, short = 'd')]
        detach: bool,
        #[arg(long)]
        console_socket: Option<PathBuf>,
        #[arg(long, default_value_t = 0)]
        preserve_fds: u32,
        #[arg(long)]
        no_new_keyring: bool,
        id: String,
    },
    /// Run a new process inside a container.
    Exec {
        #[arg(long, short = 'p')]
        process: Option<PathBuf>,
        #[arg(long, short = 'd')]
        detach: bool,
        #[arg(long)]
        pid_file: Option<PathBuf>,
        #[arg(long)]
        console_socket: Option<PathBuf>,
        #[arg(long, short = 't')]
        tty: bool,
        #[arg(long = "env", short = 'e')]
        env: Vec<String>,
        #[arg(long)]
        cwd: Option<PathBuf>,
        #[arg(long, short = 'u')]
        user: Option<String>,
        #[arg(long, default_value_t = 0)]
        preserve_fds: u32,
        id: String,
        #[arg(trailing_var_arg = true, allow_hyphen_values = true)]
        args: Vec<String>,
    },
    /// Write a default config.json.
    Spec {
        #[arg(long, short = 'b', default_value = ".")]
        bundle: PathBuf,
    },
    /// Print the features this runtime supports (runtime-spec features.md).
    Features,
    /// Apply new resource limits, from a JSON linux.resources file ("-" for stdin).
    Update {
        #[arg(long, short = 'r')]
        resources: std::path::PathBuf,
        id: String,
    },
    /// Freeze all processes of a container.
    Pause { id: String },
    /// Thaw a paused container.
    Resume { id: String },
    /// List the container's pids (JSON array with --format json).
    Ps {
        #[arg(long, short = 'f', default_value = "json")]
        format: String,
        id: String,
    },
}

impl Command {
    /// Commands whose processes become visible inside a container (CVE-2019-5736).
    pub fn enters_container(&self) -> bool {
        matches!(
            self,
            Command::Create { .. } | Command::Run { .. } | Command::Exec { .. }
        )
    }
}
