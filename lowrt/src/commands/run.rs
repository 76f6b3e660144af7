//! `run`: create + start, then (foreground) wait and delete.

use super::create::{launch, CreateOptions};
use super::{lifecycle, Globals};
use crate::container::{block_wait_signals, destroy, wait_foreground, ContainerError};

pub fn run(g: &Globals, opts: &CreateOptions, detach: bool) -> Result<i32, ContainerError> {
    // Block SIGCHLD before init exists, so its exit cannot slip past the wait below.
    let signals = if detach {
        None
    } else {
        Some(block_wait_signals()?)
    };
    let launched = launch(g, opts)?;
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
    let code = wait_foreground(launched.pid, &signals)?;
    drop(launched.pidfd);
    destroy(&g.root, &launched.state)?;
    match exec_error {
        Some(text) => Err(ContainerError::Init(text)),
        None => Ok(code),
    }
}
