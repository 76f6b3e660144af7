//! berth-shim: the per-container supervisor (docs/shim.md).
//!
//! `berth-shim start` daemonizes ([`daemon`]); the daemon reaps ([`reaper`]), runs the
//! OCI runtime ([`runtime`]), copies stdio ([`stdio`]), records exits ([`state_files`])
//! and OOMs, reads the container's cgroup statistics ([`cgroup`]), and serves containerd's shim task API ([`service`] over [`task`]).

pub mod cgroup;
pub mod config;
pub mod console;
pub mod daemon;
pub mod error;
pub mod events;
mod exec;
mod exits;
pub mod idle;
pub mod log;
pub mod mount;
pub mod oom;
pub mod options;
pub mod process;
pub mod reaper;
pub mod runtime;
pub mod service;
pub mod state_files;
pub mod stdio;
mod sys;
pub mod task;
#[cfg(test)]
mod task_tests;

/// An error and its causes as one line, `a: b: c`.
pub fn error_chain(err: &dyn std::error::Error) -> String {
    let mut msg = err.to_string();
    let mut cause = err.source();
    while let Some(c) = cause {
        msg.push_str(": ");
        msg.push_str(&c.to_string());
        cause = c.source();
    }
    msg
}
