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
    let Some(signals) = signals else { return Ok(0) };
    let code = wait_foreground(launched.pid, &signals)?;
    drop(launched.pidfd);
    destroy(&g.root, &launched.state)?;
    Ok(code)
}
