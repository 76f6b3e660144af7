//! berth-highd: containerd's job in the Berth stack.
#![forbid(unsafe_code)]

pub mod config;
pub mod containers;
pub mod content;
pub mod db;
pub mod diff;
pub mod events;
pub mod gc;
pub mod images;
pub mod introspection;
pub mod leases;
pub mod namespaces;
pub mod server;
pub mod shims;
pub mod snapshots;
pub mod tasks;
pub mod version;

pub use config::{Config, ConfigError, Flags};
pub use server::{run, Options, ServerError};
