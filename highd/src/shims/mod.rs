//! Shim processes: starting them and talking to them.

pub mod client;
pub mod launch;

use std::path::PathBuf;

pub use client::shim_dead;
pub use client::ShimClient;
pub use launch::{kill_from_pidfile, shim_running, ShimLaunch};

#[derive(Debug, thiserror::Error)]
pub enum ShimError {
    #[error("cannot run shim {shim}")]
    Spawn {
        shim: PathBuf,
        source: std::io::Error,
    },
    #[error("shim {shim} start did not finish within {seconds}s")]
    StartTimeout { shim: PathBuf, seconds: u64 },
    #[error("shim start failed ({status}): {message}")]
    StartFailed { status: String, message: String },
    #[error("cannot connect to shim at {address}: {message}")]
    Connect { address: PathBuf, message: String },
}
