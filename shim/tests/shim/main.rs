//! Daemon-level tests: the real berth-shim binary driving a real runtime (runc, or
//! `BERTH_TEST_RUNTIME`) on a busybox bundle. Every test has its own temp dir, runtime
//! root and cgroup parent, and cleans up on every path.

mod daemon;
mod harness;
mod lifecycle;
mod memory;
mod options;
mod process;
mod stats;
