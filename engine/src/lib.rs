//! berth-engine: the Docker Engine API (dockerd's job) on top of highd's containerd API.

#![forbid(unsafe_code)]
// The /info answer is one large json! literal.
#![recursion_limit = "256"]

pub mod api;
pub mod archive;
pub mod backend;
pub mod build;
pub mod config;
pub mod daemon;
pub mod events_api;
pub mod jsonlog;
pub mod names;
pub mod network;
pub mod record;
pub mod refs;
pub mod registry;
pub mod resources;
pub mod seccomp;
pub mod spec;
pub mod stdcopy;
pub mod store;
pub mod types;
pub mod users;
pub mod volumes;

pub use config::{run, Config, EngineError};

/// The engine's version, as `docker version` shows it and as images it commits record
/// (`docker_version`, inspect's `DockerVersion`).
pub const ENGINE_VERSION: &str = "28.0.0-berth";
