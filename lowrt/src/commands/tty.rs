//! Foreground `run` of a terminal container without `--console-socket`: like runc, the
//! runtime takes the pty master itself and copies between it and its own stdio (stdin in
//! raw mode when it is a terminal) until the container exits. Signals are read from a
//! signalfd (SIGCHLD ends the loop, SIGWINCH resizes, others are forwarded).

use std::os::fd::{AsFd, AsRawFd, OwnedFd};

use nix::poll::{poll, PollFd, PollFlags, PollTimeout};
use nix::sys::signal::{SigSet, Signal};
use nix::sys::signalfd::{SfdFlags, SignalFd};
use nix::sys::termios::{cfmakeraw, tcgetattr, tcsetattr, SetArg, Termios};
use nix::sys::wait::{waitpid, WaitPidFlag, WaitStatus};
use nix::unistd::Pid;

use crate::container::{errno, ContainerError};

/// Restores the terminal mode on every path out.
struct RawMode {
    saved: Option<Termios>,
}

impl RawMode {
    fn enter() -> Self {
        let stdin = std::io::stdin();
        let Ok(saved) = tcgetattr(stdin.as_fd()) else {
            return RawMode { saved: None };
        };
        let mut raw = saved.clone();
        cfmakeraw(&mut raw);
        let _ = tcsetattr(stdin.as_fd(), SetArg::TCSANOW, &raw);
        RawMode { saved: Some(saved) }
    }
}

impl Drop for RawMode {
    fn drop(&mut self) {
        if let Some(saved) = &self.saved {
            let _ = tcsetattr(std::io::stdin().as_fd(), SetArg::TCSANOW, saved);
        }
    }
}

fn copy_window_size(master: &OwnedFd) {
    if let Ok(ws) = crate::sys::window_size(std::io::stdin().as_fd()) {
        let _ = crate::sys::set_window_size(master.as_fd(), &ws);
    }
}

fn exit_code(status: WaitStatus) -> Option<i32> {
    match status {
        WaitStatus::Exited(_, code) => Some(code),
        WaitStatus::Signaled(_, sig, _) => Some(128 + sig as i32),
        _ => None,
    }
}

/// Proxies until `pid` exits; returns its shell-style status. `set` must already be
/// blocked (it is, from before the clone).
pub fn proxy(pid: Pid, master: OwnedFd, set: &SigSet) -> Result<i32, ContainerError> {
    let sigfd = SignalFd::with_flags(set, SfdFlags::SFD_CLOEXEC).map_err(errno("signalfd"))?;
    let _raw = RawMode::enter();
    copy_window_size(&master);
    let stdin = std::io::stdin();
    let stdout = std::io::stdout();
    let mut stdin_open = true;
    let mut master_open = true;
    let mut buf = [0u8; 8192];
    loop {
        if let Ok(status) = waitpid(pid, Some(WaitPidFlag::WNOHANG)) {
            if let Some(code) = exit_code(status) {
                // Whatever the container wrote last is still in the pty.
                while master_open {
                    let mut fds = [PollFd::new(master.as_fd(), PollFlags::POLLIN)];
                    if !matches!(poll(&mut fds, PollTimeout::ZERO), Ok(n) if n > 0) {
                        break;
                    }
                    match nix::unistd::read(&master, &mut buf) {
                        Ok(n) if n > 0 => {
                            let _ = nix::unistd::write(&stdout, &buf[..n]);
                        }
                        _ => master_open = false,
                    }
                }
                return Ok(code);
            }
        }
        let mut fds = vec![PollFd::new(sigfd.as_fd(), PollFlags::POLLIN)];
        if master_open {
            fds.push(PollFd::new(master.as_fd(), PollFlags::POLLIN));
        }
        if stdin_open {
            fds.push(PollFd::new(stdin.as_fd(), PollFlags::POLLIN));
        }
        match poll(&mut fds, PollTimeout::NONE) {
            Err(nix::errno::Errno::EINTR) => continue,
            Err(e) => return Err(errno("poll terminal")(e)),
            Ok(_) => {}
        }
        let ready: Vec<(i32, bool)> = fds
            .iter()
            .map(|f| {
                (
                    f.as_fd().as_raw_fd(),
                    f.revents().is_some_and(|r| !r.is_empty()),
                )
            })
            .collect();
        for (fd, is_ready) in ready {
            if !is_ready {
                continue;
            }
            if fd == sigfd.as_fd().as_raw_fd() {
                if let Ok(Some(info)) = sigfd.read_signal() {
                    match Signal::try_from(info.ssi_signo as i32) {
                        Ok(Signal::SIGCHLD) => {}
                        Ok(Signal::SIGWINCH) => copy_window_size(&master),
                        Ok(sig) => {
                            let _ = crate::sys::kill(pid, sig as i32);
                        }
                        Err(_) => {}
                    }
                }
            } else if fd == master.as_raw_fd() {
                match nix::unistd::read(&master, &mut buf) {
                    Ok(n) if n > 0 => {
                        let _ = nix::unistd::write(&stdout, &buf[..n]);
                    }
                    // EIO: every slave fd is closed (the container is exiting).
                    _ => master_open = false,
                }
            } else {
                match nix::unistd::read(&stdin, &mut buf) {
                    Ok(n) if n > 0 => {
                        let _ = nix::unistd::write(&master, &buf[..n]);
                    }
                    _ => stdin_open = false,
                }
            }
        }
    }
}
