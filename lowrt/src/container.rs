//! Errors of the container commands and the helpers several commands share: signal
//! parsing, waiting for a process to die, tearing a container down, and foreground waits.

use std::io;
use std::os::fd::AsFd;
use std::path::{Path, PathBuf};
use std::time::{Duration, Instant};

use nix::poll::{poll, PollFd, PollFlags, PollTimeout};
use nix::sys::signal::{SigSet, Signal};
use nix::sys::wait::{waitpid, WaitPidFlag, WaitStatus};
use nix::unistd::Pid;

use crate::state::{State, Status};

#[derive(Debug, thiserror::Error)]
pub enum ContainerError {
    #[error(transparent)]
    Spec(#[from] crate::spec::SpecError),
    #[error(transparent)]
    State(#[from] crate::state::StateError),
    #[error(transparent)]
    Cgroup(#[from] crate::cgroups::CgroupError),
    #[error(transparent)]
    Namespace(#[from] crate::namespaces::NamespaceError),
    #[error(transparent)]
    Channel(#[from] crate::channel::ChannelError),
    #[error(transparent)]
    ClonedBinary(#[from] crate::cloned_binary::ClonedBinaryError),
    #[error(transparent)]
    Hook(#[from] crate::hooks::HookError),
    #[error(transparent)]
    Idmap(#[from] crate::rootfs::idmap::IdmapError),
    #[error(transparent)]
    IntelRdt(#[from] crate::intelrdt::RdtError),
    /// The child's own report, printed as runc prints it.
    #[error("unable to start container process: {0}")]
    Init(String),
    #[error("container init exited before it was ready{how}")]
    InitDied {
        /// ": killed by signal …" or ": exit status …" when known, else empty.
        how: String,
    },
    #[error("update: no --resources and no resource flags: nothing to update")]
    NothingToUpdate,
    #[error("container with id exists: {0}")]
    Exists(String),
    #[error("{op} {}: {source}", path.display())]
    Io {
        op: &'static str,
        path: PathBuf,
        source: io::Error,
    },
    #[error("{what}: {}", crate::syscall::errno_text(*source))]
    Errno {
        what: String,
        source: nix::errno::Errno,
    },
    #[error("cannot start a container that has stopped")]
    StartStopped,
    #[error("cannot start an already {0} container")]
    StartNotCreated(Status),
    #[error("container not running")]
    NotRunning,
    #[error("container with id {0} is not running")]
    EventsNotRunning(String),
    #[error("invalid --interval {0:?}: want a positive duration such as 5s or 500ms")]
    BadInterval(String),
    #[error("cannot delete container {id} that is not stopped: {status}")]
    DeleteNotStopped { id: String, status: Status },
    #[error("cannot exec in a {0} container")]
    ExecNotRunning(Status),
    #[error("cannot {0} a container that is {1}")]
    BadTransition(&'static str, Status),
    #[error("unknown signal {0:?}")]
    BadSignal(String),
    #[error("process.terminal is set but no --console-socket was given (only a foreground `run` proxies the terminal itself)")]
    TerminalWithoutSocket,
    #[error(
        "--console-socket was given but the process has no terminal (process.terminal is false)"
    )]
    SocketWithoutTerminal,
    #[error("cannot connect to console socket {}: {source}", path.display())]
    ConsoleSocket { path: PathBuf, source: io::Error },
    #[error("File {} exists. Remove it first", path.display())]
    SpecExists { path: PathBuf },
    #[error("invalid process file {}: {source}", path.display())]
    ProcessFile {
        path: PathBuf,
        source: serde_json::Error,
    },
    #[error("invalid --user {0:?}: want UID[:GID]")]
    BadUser(String),
    #[error("exec needs a command: pass ARGS or --process")]
    NoExecArgs,
    #[error("process {pid} did not exit within {waited_ms} ms after SIGKILL")]
    KillTimeout { pid: i32, waited_ms: u64 },
}

pub(crate) fn io_err<'a>(
    op: &'static str,
    path: &'a Path,
) -> impl FnOnce(io::Error) -> ContainerError + 'a {
    move |source| ContainerError::Io {
        op,
        path: path.to_path_buf(),
        source,
    }
}

pub(crate) fn errno(what: impl Into<String>) -> impl FnOnce(nix::errno::Errno) -> ContainerError {
    let what = what.into();
    move |source| ContainerError::Errno { what, source }
}

/// `KILL`, `SIGKILL`, `9`, and `RTMIN+n` forms, as runc accepts.
pub fn parse_signal(text: &str) -> Result<i32, ContainerError> {
    let bad = || ContainerError::BadSignal(text.to_owned());
    if let Ok(n) = text.parse::<i32>() {
        return if (1..=libc::SIGRTMAX()).contains(&n) {
            Ok(n)
        } else {
            Err(bad())
        };
    }
    let upper = text.to_ascii_uppercase();
    let name = upper.strip_prefix("SIG").unwrap_or(&upper);
    if let Some(rest) = name.strip_prefix("RTMIN") {
        let off: i32 = if rest.is_empty() {
            0
        } else {
            rest.strip_prefix('+')
                .and_then(|n| n.parse().ok())
                .ok_or_else(bad)?
        };
        let n = libc::SIGRTMIN() + off;
        return if n <= libc::SIGRTMAX() {
            Ok(n)
        } else {
            Err(bad())
        };
    }
    format!("SIG{name}")
        .parse::<Signal>()
        .map(|s| s as i32)
        .map_err(|_| bad())
}

/// Waits until `pid` (not necessarily our child) has exited, via a pidfd.
pub fn wait_gone(pid: Pid, timeout: Duration) -> Result<(), ContainerError> {
    let pidfd = match crate::sys::pidfd_open(pid) {
        Ok(fd) => fd,
        Err(nix::errno::Errno::ESRCH) => return Ok(()),
        Err(e) => return Err(errno(format!("pidfd_open {pid}"))(e)),
    };
    let deadline = Instant::now() + timeout;
    loop {
        let left = deadline.saturating_duration_since(Instant::now());
        if left.is_zero() {
            return Err(ContainerError::KillTimeout {
                pid: pid.as_raw(),
                waited_ms: timeout.as_millis() as u64,
            });
        }
        let mut fds = [PollFd::new(pidfd.as_fd(), PollFlags::POLLIN)];
        let ms =
            PollTimeout::try_from(left.as_millis().min(60_000) as i32).unwrap_or(PollTimeout::MAX);
        match poll(&mut fds, ms) {
            Ok(n) if n > 0 => return Ok(()),
            Ok(_) | Err(nix::errno::Errno::EINTR) => {}
            Err(e) => return Err(errno("poll pidfd")(e)),
        }
    }
}

/// Kills what is left and removes the cgroups and the state directory.
pub fn destroy(root: &Path, state: &State) -> Result<(), ContainerError> {
    let cg = state.cgroup.manager();
    // Without a pid namespace, killing init does not take its children with it.
    let _ = cg.freeze(false);
    for pid in cg.pids().unwrap_or_default() {
        let _ = crate::sys::kill(pid, libc::SIGKILL);
    }
    cg.destroy()?;
    if let Some(rdt) = &state.intel_rdt {
        rdt.destroy()?;
    }
    let dir = State::dir(root, &state.id);
    match std::fs::remove_dir_all(&dir) {
        Err(e) if e.kind() != io::ErrorKind::NotFound => return Err(io_err("remove", &dir)(e)),
        _ => {}
    }
    // runtime-spec: a failing poststop hook is logged; delete still succeeds.
    let poststop = crate::hooks::at(&state.config, crate::hooks::Point::Poststop);
    if !poststop.is_empty() {
        let doc = crate::hooks::state_json(&state.config, &state.id, "stopped", 0, &state.bundle);
        if let Err(e) = crate::hooks::run(crate::hooks::Point::Poststop, poststop, &doc) {
            tracing::warn!("{e}");
        }
    }
    Ok(())
}

/// The signals a foreground `run`/`exec` forwards to the container.
pub fn forwarded_signals() -> SigSet {
    let mut set = SigSet::empty();
    for s in [
        Signal::SIGINT,
        Signal::SIGTERM,
        Signal::SIGHUP,
        Signal::SIGQUIT,
        Signal::SIGUSR1,
        Signal::SIGUSR2,
        Signal::SIGWINCH,
    ] {
        set.add(s);
    }
    set
}

/// Blocks SIGCHLD and the forwarded signals. Called *before* the child exists, so its
/// exit is queued as a pending SIGCHLD and can never be missed (the youki hang).
pub fn block_wait_signals() -> Result<SigSet, ContainerError> {
    let mut set = forwarded_signals();
    set.add(Signal::SIGCHLD);
    set.thread_block().map_err(errno("block signals"))?;
    Ok(set)
}

/// Waits for our child `pid`, forwarding signals to it; returns the shell-style status
/// (exit code, or 128+signal).
pub fn wait_foreground(pid: Pid, set: &SigSet) -> Result<i32, ContainerError> {
    loop {
        // Reap first: the SIGCHLD may already be pending from before we got here.
        match waitpid(pid, Some(WaitPidFlag::WNOHANG)) {
            Ok(WaitStatus::Exited(_, code)) => return Ok(code),
            Ok(WaitStatus::Signaled(_, sig, _)) => return Ok(128 + sig as i32),
            Ok(_) | Err(nix::errno::Errno::EINTR) => {}
            Err(e) => return Err(errno("wait for container process")(e)),
        }
        match set.wait() {
            Ok(Signal::SIGCHLD) | Err(_) => {}
            Ok(sig) => {
                let _ = crate::sys::kill(pid, sig as i32);
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn signals_parse_like_runc() {
        assert_eq!(parse_signal("KILL").unwrap(), 9);
        assert_eq!(parse_signal("SIGKILL").unwrap(), 9);
        assert_eq!(parse_signal("term").unwrap(), 15);
        assert_eq!(parse_signal("9").unwrap(), 9);
        assert_eq!(parse_signal("RTMIN+1").unwrap(), libc::SIGRTMIN() + 1);
        assert!(parse_signal("NOPE").is_err());
        assert!(parse_signal("0").is_err());
    }
}
