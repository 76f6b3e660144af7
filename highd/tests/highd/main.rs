//! berth-highd integration tests: the real daemon on temp dirs, driven over gRPC.
//!
//! Build the binaries first: `cargo build -p berth-highd -p berth-shim -p berth-lowrt`.
//! `BERTH_TEST_RUNTIME=/usr/sbin/runc` runs the task tests with runc instead of
//! berth-lowrt (to check the tests themselves against the reference runtime).

mod bad_input;
mod basics;
mod common;
mod crash;
mod crash_images;
mod ctr;
mod ctr_images;
mod restart;
mod runtime_options;
mod scale;
mod tasks;
