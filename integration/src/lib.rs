//! Harness for Berth's end-to-end tests: starts whole stacks (berth-highd + berth-engine)
//! in short temp dirs, builds a busybox image from the host's static busybox, drives the
//! stack with the real docker CLI and with `berth`, and cleans up every process, mount,
//! cgroup and directory a stack left behind.

pub mod cleanup;
pub mod cmd;
pub mod http;
pub mod image;
pub mod poll;
pub mod prereq;
pub mod pty;
pub mod stack;

pub use cmd::Output;
pub use poll::wait_until;
pub use stack::Stack;
