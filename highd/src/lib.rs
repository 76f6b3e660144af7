//! berth-highd: containerd's job in the Berth stack.
#![forbid(unsafe_code)]

pub mod content;
pub mod db;
pub mod snapshots;
