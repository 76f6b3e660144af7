//! One whole Berth stack (berth-highd + berth-engine) in its own temp dir and cgroup parent.
//!
//! Layout of the temp dir (kept short: unix socket paths must stay under 108 bytes):
//! `h/` highd root, `hs/` highd state (task dirs, shim pid files), `h.sock`,
//! `e/` engine data root, `ex/` engine exec root, `e.sock`, `dc/` docker CLI config,
//! `highd.log`, `engine.log`.

use std::cell::RefCell;
use std::fs::OpenOptions;
use std::os::unix::net::UnixStream;
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::time::Duration;

use anyhow::{bail, Context, Result};
use nix::sys::signal::{kill, Signal};
use nix::unistd::Pid;
use rand::Rng;

use crate::cleanup;
use crate::cmd::{self, Output};
use crate::image;
use crate::poll::wait_until;
use crate::prereq;

/// How long a daemon gets to open its socket.
const START_TIMEOUT: Duration = Duration::from_secs(30);
/// How long a client command may run before it counts as hung.
const CMD_TIMEOUT: Duration = Duration::from_secs(90);
/// The daemons' `--log-level` (an EnvFilter directive list).
const LOG_FILTER: &str = "debug,h2=info,hyper=info,hyper_util=info,tower=info,tonic=info";
/// Lines of each daemon log kept for the failure report.
const LOG_TAIL_LINES: usize = 60;

thread_local! {
    /// Tails of the daemon logs of the last stack dropped on this thread, so the test
    /// runner can print them when the test failed (the temp dir is gone by then).
    static LOG_TAILS: RefCell<String> = const { RefCell::new(String::new()) };
}

/// Takes the daemon log tails saved by the last stack dropped on this thread.
pub fn take_log_tails() -> String {
    LOG_TAILS.with(|t| std::mem::take(&mut *t.borrow_mut()))
}

/// Which daemon.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Daemon {
    Highd,
    Engine,
}

impl Daemon {
    fn binary(self) -> &'static str {
        match self {
            Daemon::Highd => "berth-highd",
            Daemon::Engine => "berth-engine",
        }
    }
    fn log(self) -> &'static str {
        match self {
            Daemon::Highd => "highd.log",
            Daemon::Engine => "engine.log",
        }
    }
}

pub struct Stack {
    /// The stack's temp dir, `/tmp/bt-XXXXXX`.
    pub dir: PathBuf,
    /// Where the workspace binaries are (target/debug).
    pub bins: PathBuf,
    /// The cgroup parent's name, `berth-test-<random>` (the engine gets `/` + this).
    pub cgroup_name: String,
    /// The engine's default bridge (`bt<random>0`) and nftables table (`bt<random>`):
    /// never berth0, so stacks never touch each other's or the host's networking.
    pub bridge: String,
    pub firewall_table: String,
    /// The bridge's `--bip`, a random 10.x.y.1/24 (the engine refuses a routed one).
    pub bip: String,
    /// Extra engine flags, used from the next engine start on.
    pub engine_args: Vec<String>,
    /// Extra engine environment variables (`SSL_CERT_FILE`), from the next start on.
    pub engine_env: Vec<(String, String)>,
    /// highd's `--config` file (`<dir>/highd.toml`), when the stack was given one.
    highd_config: Option<PathBuf>,
    highd: Option<Child>,
    engine: Option<Child>,
}

/// The target dir holding the workspace binaries: the test executable lives in
/// `target/<profile>/deps/`, the binaries one level up.
pub fn bin_dir() -> Result<PathBuf> {
    let exe = std::env::current_exe().context("current_exe")?;
    let dir = exe
        .parent()
        .and_then(Path::parent)
        .context("test executable has no grandparent dir")?
        .to_path_buf();
    for bin in [
        "berth-highd",
        "berth-engine",
        "berth-shim",
        "berth-lowrt",
        "berth",
    ] {
        if !dir.join(bin).is_file() {
            bail!(
                "{bin} not found in {}: build the binaries first (cargo build --workspace --bins)",
                dir.display()
            );
        }
    }
    Ok(dir)
}

impl Stack {
    /// Starts highd and the engine in a fresh temp dir and waits until both answer.
    pub fn start() -> Result<Stack> {
        Self::start_with(Vec::new())
    }

    /// `start` with extra engine flags.
    pub fn start_with(engine_args: Vec<String>) -> Result<Stack> {
        Self::start_opts(engine_args, None)
    }

    /// `with_busybox` whose highd reads `highd_toml` as its config file (e.g.
    /// `[snapshotter] mode = "copy"`).
    pub fn with_busybox_highd_config(highd_toml: &str) -> Result<Stack> {
        let stack = Self::start_opts(Vec::new(), Some(highd_toml))?;
        stack.import_busybox()?;
        Ok(stack)
    }

    fn start_opts(engine_args: Vec<String>, highd_toml: Option<&str>) -> Result<Stack> {
        let bins = bin_dir()?;
        let dir = tempfile::Builder::new()
            .prefix("bt-")
            .rand_bytes(6)
            .tempdir_in("/tmp")
            .context("create stack temp dir")?
            .keep();
        let suffix: String = rand::rng()
            .sample_iter(rand::distr::Alphanumeric)
            .take(8)
            .map(|c| char::from(c).to_ascii_lowercase())
            .collect();
        let mut stack = Stack {
            dir,
            bins,
            cgroup_name: format!("berth-test-{suffix}"),
            bridge: format!("bt{suffix}0"),
            firewall_table: format!("bt{suffix}"),
            bip: format!(
                "10.{}.{}.1/24",
                rand::rng().random_range(64..=254),
                rand::rng().random_range(0..=255)
            ),
            engine_args,
            engine_env: Vec::new(),
            highd_config: None,
            highd: None,
            engine: None,
        };
        std::fs::create_dir_all(stack.dir.join("dc"))?;
        if let Some(text) = highd_toml {
            let path = stack.dir.join("highd.toml");
            std::fs::write(&path, text)?;
            stack.highd_config = Some(path);
        }
        stack.start_daemon(Daemon::Highd)?;
        stack.start_daemon(Daemon::Engine)?;
        Ok(stack)
    }

    /// A started stack with the busybox image imported through the docker CLI.
    pub fn with_busybox() -> Result<Stack> {
        Self::with_busybox_args(Vec::new())
    }

    /// `with_busybox` with extra engine flags.
    pub fn with_busybox_args(engine_args: Vec<String>) -> Result<Stack> {
        let stack = Stack::start_with(engine_args)?;
        stack.import_busybox()?;
        Ok(stack)
    }

    fn import_busybox(&self) -> Result<()> {
        let tar = self.busybox_tar()?;
        self.docker(&["import", &tar.to_string_lossy(), "busybox"])?
            .ok()
            .context("docker import of the busybox image")?;
        Ok(())
    }

    /// A bridge name of this stack's own for a test's user-defined network
    /// (`com.docker.network.bridge.name`): `bt<random><n>`, removed at teardown.
    pub fn net_bridge(&self, n: u8) -> String {
        format!("{}{n}", self.firewall_table)
    }

    pub fn highd_sock(&self) -> PathBuf {
        self.dir.join("h.sock")
    }
    pub fn engine_sock(&self) -> PathBuf {
        self.dir.join("e.sock")
    }
    /// highd's `--state`: `<ns>/<id>/` task dirs live here.
    pub fn highd_state(&self) -> PathBuf {
        self.dir.join("hs")
    }
    pub fn engine_host(&self) -> String {
        format!("unix://{}", self.engine_sock().display())
    }

    /// Builds the busybox rootfs tar in the stack dir (once) and returns its path.
    pub fn busybox_tar(&self) -> Result<PathBuf> {
        let path = self.dir.join("busybox.tar");
        if !path.exists() {
            image::build_busybox_tar(&path)?;
        }
        Ok(path)
    }

    fn command_for(&self, which: Daemon) -> Command {
        let d = &self.dir;
        let mut cmd = Command::new(self.bins.join(which.binary()));
        match which {
            Daemon::Highd => cmd
                .arg("--root")
                .arg(d.join("h"))
                .arg("--state")
                .arg(d.join("hs"))
                .arg("--address")
                .arg(self.highd_sock())
                .args(
                    self.highd_config
                        .iter()
                        .flat_map(|c| [Path::new("--config"), c]),
                ),
            Daemon::Engine => cmd
                .arg("--data-root")
                .arg(d.join("e"))
                .arg("--exec-root")
                .arg(d.join("ex"))
                .arg("-H")
                .arg(self.engine_host())
                .arg("--containerd")
                .arg(self.highd_sock())
                .arg("--cgroup-parent")
                .arg(format!("/{}", self.cgroup_name))
                .args(["--bridge-name", &self.bridge, "--bip", &self.bip])
                .args(["--firewall-table", &self.firewall_table])
                .arg("--ip-forward=false")
                .args(&self.engine_args)
                .envs(self.engine_env.iter().map(|(k, v)| (k, v))),
        };
        // Debug for Berth's own crates; the gRPC/HTTP plumbing at debug drowns everything.
        cmd.arg("--log-level").arg(LOG_FILTER);
        cmd
    }

    fn slot(&mut self, which: Daemon) -> &mut Option<Child> {
        match which {
            Daemon::Highd => &mut self.highd,
            Daemon::Engine => &mut self.engine,
        }
    }

    /// PID of a running daemon.
    pub fn pid(&self, which: Daemon) -> Option<u32> {
        match which {
            Daemon::Highd => self.highd.as_ref().map(Child::id),
            Daemon::Engine => self.engine.as_ref().map(Child::id),
        }
    }

    /// Starts one daemon (its log appends to `<dir>/<name>.log`) and waits for its socket.
    pub fn start_daemon(&mut self, which: Daemon) -> Result<()> {
        if self.slot(which).is_some() {
            bail!("{} is already running", which.binary());
        }
        let log_path = self.dir.join(which.log());
        let log = OpenOptions::new()
            .create(true)
            .append(true)
            .open(&log_path)?;
        let mut cmd = self.command_for(which);
        cmd.stdin(Stdio::null())
            .stdout(log.try_clone()?)
            .stderr(log)
            .env("RUST_BACKTRACE", "1");
        let child = cmd
            .spawn()
            .with_context(|| format!("spawn {}", which.binary()))?;
        *self.slot(which) = Some(child);
        let sock = match which {
            Daemon::Highd => self.highd_sock(),
            Daemon::Engine => self.engine_sock(),
        };
        let name = which.binary();
        // Some(true): listening; Some(false): the daemon died, no point waiting further.
        let waited = wait_until(
            &format!("{name} to listen on {}", sock.display()),
            START_TIMEOUT,
            || {
                let exited = self
                    .slot(which)
                    .as_mut()
                    .is_none_or(|c| c.try_wait().ok().flatten().is_some());
                if exited {
                    return Ok(Some(false));
                }
                Ok(UnixStream::connect(&sock).is_ok().then_some(true))
            },
        )
        .and_then(|up| {
            if up {
                Ok(())
            } else {
                bail!("{name} exited during start-up")
            }
        });
        if let Err(e) = waited {
            let tail = tail(&log_path, LOG_TAIL_LINES);
            let _ = self.stop_daemon(which, Signal::SIGKILL);
            bail!("{e:#}\n--- {} ---\n{tail}", which.log());
        }
        Ok(())
    }

    /// Sends `sig` to the daemon (by its PID) and reaps it, escalating to SIGKILL if it
    /// has not exited within 10 s.
    pub fn stop_daemon(&mut self, which: Daemon, sig: Signal) -> Result<()> {
        let Some(mut child) = self.slot(which).take() else {
            return Ok(());
        };
        let pid = Pid::from_raw(child.id() as i32);
        // Still unreaped, so the PID cannot have been recycled.
        let _ = kill(pid, sig);
        let exited = wait_until(
            &format!("{} to exit", which.binary()),
            Duration::from_secs(10),
            || Ok(child.try_wait()?),
        );
        if exited.is_err() {
            let _ = kill(pid, Signal::SIGKILL);
            child.wait()?;
        }
        Ok(())
    }

    /// SIGKILLs a daemon, as a crash would.
    pub fn kill_daemon(&mut self, which: Daemon) -> Result<()> {
        self.stop_daemon(which, Signal::SIGKILL)
    }

    /// SIGKILLs both daemons (engine first, then highd).
    pub fn kill_daemons(&mut self) -> Result<()> {
        self.kill_daemon(Daemon::Engine)?;
        self.kill_daemon(Daemon::Highd)
    }

    /// Starts both daemons again (highd first: the engine reconciles against it).
    pub fn start_daemons(&mut self) -> Result<()> {
        self.start_daemon(Daemon::Highd)?;
        self.start_daemon(Daemon::Engine)
    }

    /// Runs the docker CLI against this stack.
    pub fn docker(&self, args: &[&str]) -> Result<Output> {
        self.docker_with_stdin(args, None)
    }

    /// Runs the docker CLI with stdin read from a file (`docker build - < ctx.tar`).
    pub fn docker_with_stdin(&self, args: &[&str], stdin: Option<&Path>) -> Result<Output> {
        let cli = prereq::docker_cli().context("docker CLI not found")?;
        let mut cmd = Command::new(cli);
        cmd.args(args)
            .env("DOCKER_HOST", self.engine_host())
            .env("DOCKER_CONFIG", self.dir.join("dc"))
            .env("DOCKER_CLI_HINTS", "false")
            .env_remove("DOCKER_CONTEXT")
            .env_remove("DOCKER_API_VERSION");
        cmd::run_with_stdin(cmd, stdin, &self.dir, CMD_TIMEOUT)
    }

    /// Runs the `berth` CLI against this stack (host given through `BERTH_HOST`).
    pub fn berth(&self, args: &[&str]) -> Result<Output> {
        self.berth_with_stdin(args, None)
    }

    /// Runs `berth` with stdin read from a file.
    pub fn berth_with_stdin(&self, args: &[&str], stdin: Option<&Path>) -> Result<Output> {
        let mut cmd = Command::new(self.bins.join("berth"));
        cmd.args(args)
            .env("BERTH_HOST", self.engine_host())
            .env_remove("DOCKER_HOST");
        cmd::run_with_stdin(cmd, stdin, &self.dir, CMD_TIMEOUT)
    }

    /// Tears everything down; also what `Drop` does. Returns what could not be cleaned.
    fn teardown(&mut self) -> Result<()> {
        let _ = self.stop_daemon(Daemon::Engine, Signal::SIGTERM);
        let _ = self.stop_daemon(Daemon::Highd, Signal::SIGTERM);
        let mut pids = cleanup::shim_pids(&self.highd_state());
        pids.extend(cleanup::processes_under(&self.dir));
        for pid in pids {
            let _ = kill(Pid::from_raw(pid), Signal::SIGKILL);
        }
        let cg = cleanup::remove_cgroups(&self.cgroup_name);
        // The engine removes its bridge and table on a clean stop with no containers;
        // after a failure they may remain. Both names are this stack's own.
        let _ = Command::new("ip")
            .args(["link", "delete", &self.bridge])
            .stderr(Stdio::null())
            .status();
        // User-defined networks of tests are named after the table (`bt<random>N`).
        let own: Vec<String> = std::fs::read_dir("/sys/class/net")
            .map(|d| {
                d.flatten()
                    .map(|e| e.file_name().to_string_lossy().into_owned())
                    .filter(|n| n.starts_with(&self.firewall_table) && *n != self.bridge)
                    .collect()
            })
            .unwrap_or_default();
        for name in own {
            let _ = Command::new("ip")
                .args(["link", "delete", &name])
                .stderr(Stdio::null())
                .status();
        }
        let _ = Command::new("nft")
            .args(["delete", "table", "ip", &self.firewall_table])
            .stderr(Stdio::null())
            .status();
        let mounts = cleanup::unmount_all(&self.dir);
        // Never recurse into a directory that may still have something mounted below it.
        mounts?;
        std::fs::remove_dir_all(&self.dir)
            .with_context(|| format!("remove {}", self.dir.display()))?;
        cg
    }
}

impl Drop for Stack {
    fn drop(&mut self) {
        let mut tails = String::new();
        for which in [Daemon::Highd, Daemon::Engine] {
            let path = self.dir.join(which.log());
            tails.push_str(&format!(
                "--- {} (last {LOG_TAIL_LINES} lines) ---\n",
                which.log()
            ));
            tails.push_str(&tail(&path, LOG_TAIL_LINES));
        }
        LOG_TAILS.with(|t| *t.borrow_mut() = tails);
        if let Err(e) = self.teardown() {
            use std::io::Write;
            let _ = writeln!(
                std::io::stderr(),
                "WARNING: stack cleanup of {} incomplete: {e:#}",
                self.dir.display()
            );
        }
    }
}

/// The last `n` lines of a file (empty if unreadable).
fn tail(path: &Path, n: usize) -> String {
    let Ok(text) = std::fs::read_to_string(path) else {
        return String::new();
    };
    let lines: Vec<&str> = text.lines().collect();
    let start = lines.len().saturating_sub(n);
    lines[start..].iter().map(|l| format!("{l}\n")).collect()
}
