//! `run`: create + start, then (foreground) wait and delete.

use std::os::unix::net::UnixStream;

use super::create::{launch_with, CreateOptions};
use super::{lifecycle, Globals};
use crate::container::{block_wait_signals, destroy, errno, wait_foreground, ContainerError};

pub fn run(g: &Globals, opts: &CreateOptions, detach: bool) -> Result<i32, ContainerError> {
    // Block SIGCHLD before init exists, so its exit cannot slip past the wait below.
    let signals = if detach {
        None
    } else {
        Some(block_wait_signals()?)
    };
    // Foreground with a terminal and no console socket: keep the socket's other end and
    // proxy the pty ourselves, as runc does.
    let (ours, theirs) = if !detach && opts.console_socket.is_none() && wants_terminal(opts) {
        let (a, b) = UnixStream::pair().map_err(|e| ContainerError::ConsoleSocket {
            path: "socketpair".into(),
            source: e,
        })?;
        (Some(a), Some(b))
    } else {
        (None, None)
    };
    let launched = launch_with(g, opts, theirs)?;
    let master = match &ours {
        Some(sock) => {
            use std::os::fd::AsFd;
            crate::sys::recv_fd(sock.as_fd()).map_err(errno("receive pty master"))?
        }
        None => None,
    };
    if let Err(e) = lifecycle::start(g, &opts.id) {
        let _ = crate::sys::kill(launched.pid, libc::SIGKILL);
        let _ = nix::sys::wait::waitpid(launched.pid, None);
        let _ = destroy(&g.root, &launched.state);
        return Err(e);
    }
    // An execve failure after start (e.g. ENOEXEC) comes back on the sync channel; a
    // successful exec closes it (close-on-exec).
    let exec_error = match crate::channel::recv(&launched.sync) {
        Ok(Some(crate::channel::Message::Error(text))) => Some(text),
        _ => None,
    };
    let Some(signals) = signals else {
        return match exec_error {
            Some(text) => Err(ContainerError::Init(text)),
            None => Ok(0),
        };
    };
    let code = match master {
        Some(master) => super::tty::proxy(launched.pid, master, &signals)?,
        None => wait_foreground(launched.pid, &signals)?,
    };
    drop(launched.pidfd);
    destroy(&g.root, &launched.state)?;
    match exec_error {
        Some(text) => Err(ContainerError::Init(text)),
        None => Ok(code),
    }
}

/// Whether the bundle's process asks for a terminal (read again by launch; cheap).
fn wants_terminal(opts: &CreateOptions) -> bool {
    let bundle = std::path::absolute(&opts.bundle).unwrap_or_else(|_| opts.bundle.clone());
    crate::spec::load(&bundle)
        .ok()
        .and_then(|s| s.process().as_ref().and_then(|p| p.terminal()))
        .unwrap_or(false)
}
