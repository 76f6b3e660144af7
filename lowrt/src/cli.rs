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
        /// Move the rootfs onto / and chroot instead of pivot_root (runc's flag; for a
        /// rootfs on a ramdisk, where pivot_root is refused; weaker isolation).
        #[arg(long)]
        no_pivot: bool,
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
        /// Move the rootfs onto / and chroot instead of pivot_root (runc's flag; for a
        /// rootfs on a ramdisk, where pivot_root is refused; weaker isolation).
        #[arg(long)]
        no_pivot: bool,
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
        /// A JSON `linux.resources` document (`-` for stdin); the flags below override it.
        #[arg(long, short = 'r')]
        resources: Option<std::path::PathBuf>,
        #[command(flatten)]
        flags: UpdateFlags,
        id: String,
    },
    /// Stream the container's events (stats every interval, OOMs) as JSON lines.
    Events {
        /// Print one stats event and exit.
        #[arg(long)]
        stats: bool,
        /// Time between stats events (Go duration: 5s, 500ms).
        #[arg(long, default_value = "5s")]
        interval: String,
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

/// `update`'s per-resource flags, with runc's names and units.
#[derive(Debug, Default, Clone, clap::Args)]
pub struct UpdateFlags {
    /// Relative block IO weight (10-1000).
    #[arg(long)]
    pub blkio_weight: Option<u16>,
    /// CPU CFS period in microseconds.
    #[arg(long)]
    pub cpu_period: Option<u64>,
    /// CPU CFS quota in microseconds (-1: none).
    #[arg(long, allow_negative_numbers = true)]
    pub cpu_quota: Option<i64>,
    /// Real-time CPU period in microseconds (cgroup v1 cpu.rt_period_us).
    #[arg(long)]
    pub cpu_rt_period: Option<u64>,
    /// Real-time CPU runtime in microseconds per period (cgroup v1 cpu.rt_runtime_us).
    #[arg(long, allow_negative_numbers = true)]
    pub cpu_rt_runtime: Option<i64>,
    /// Intel RDT L3 cache schema line (`L3:0=ff;1=ff`), written to the resctrl group's schemata.
    #[arg(long)]
    pub l3_cache_schema: Option<String>,
    /// Intel RDT memory bandwidth schema line (`MB:0=50;1=50`), written to the resctrl group's schemata.
    #[arg(long)]
    pub mem_bw_schema: Option<String>,
    /// CPU shares (relative weight).
    #[arg(long)]
    pub cpu_share: Option<u64>,
    /// CPUs allowed (0-3, 0,1).
    #[arg(long)]
    pub cpuset_cpus: Option<String>,
    /// Memory nodes allowed (0-3, 0,1).
    #[arg(long)]
    pub cpuset_mems: Option<String>,
    /// Memory limit in bytes (k, m, g suffixes accepted; -1: unlimited).
    #[arg(long, value_parser = parse_bytes, allow_negative_numbers = true)]
    pub memory: Option<i64>,
    /// Memory soft limit in bytes.
    #[arg(long, value_parser = parse_bytes, allow_negative_numbers = true)]
    pub memory_reservation: Option<i64>,
    /// Memory plus swap limit in bytes (-1: unlimited).
    #[arg(long, value_parser = parse_bytes, allow_negative_numbers = true)]
    pub memory_swap: Option<i64>,
    /// Maximum number of pids (0 or -1: unlimited).
    #[arg(long, allow_negative_numbers = true)]
    pub pids_limit: Option<i64>,
}

/// Bytes with docker's binary suffixes (`512k`, `64m`, `1g`, `1.5g` is refused); `-1` passes.
pub fn parse_bytes(text: &str) -> Result<i64, String> {
    let lower = text.trim().to_ascii_lowercase();
    let digits = lower.trim_end_matches(['b']);
    let (num, shift) = match digits.chars().last() {
        Some('k') => (&digits[..digits.len() - 1], 10),
        Some('m') => (&digits[..digits.len() - 1], 20),
        Some('g') => (&digits[..digits.len() - 1], 30),
        Some('t') => (&digits[..digits.len() - 1], 40),
        _ => (digits, 0),
    };
    let value: i64 = num
        .parse()
        .map_err(|_| format!("invalid size {text:?}: want bytes, optionally with k, m, g or t"))?;
    if value == -1 && shift == 0 {
        return Ok(-1);
    }
    value
        .checked_mul(1 << shift)
        .filter(|v| *v >= 0)
        .ok_or_else(|| format!("invalid size {text:?}: out of range"))
}
