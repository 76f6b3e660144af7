//! The legacy builder (`POST /build`, what `DOCKER_BUILDKIT=0 docker build` uses):
//! Dockerfile parsing, the build context, and the step executor with its layer cache.

pub mod archive;
pub mod base;
pub mod cache;
pub mod context;
pub mod dockerfile;
pub mod exec;
pub mod fsops;
pub mod git;
pub mod meta;
pub mod probe;
pub mod remote;
pub mod steps;
pub mod stubs;
pub mod validate;
pub mod words;

use std::path::PathBuf;

use crate::backend::BackendError;
use crate::daemon::DaemonError;

/// A build failure, worded as dockerd's legacy builder words it.
#[derive(Debug, thiserror::Error)]
pub enum BuildError {
    #[error("{}", parse_message(*line, message))]
    Parse { line: usize, message: String },
    #[error("{message}")]
    Invalid { message: String },
    #[error("{message}")]
    Context { message: String },
    #[error("The command '{command}' returned a non-zero code: {code}")]
    RunFailed { command: String, code: i64 },
    #[error("{op} {path}: {source}")]
    Io {
        op: &'static str,
        path: PathBuf,
        source: std::io::Error,
    },
    #[error(transparent)]
    Daemon(#[from] DaemonError),
    #[error(transparent)]
    Backend(#[from] BackendError),
}

fn parse_message(line: usize, message: &str) -> String {
    if line == 0 {
        message.to_string()
    } else {
        format!("dockerfile parse error line {line}: {message}")
    }
}
