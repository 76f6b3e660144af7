//! The client's one error type and its mapping to docker's exit codes.

use std::path::PathBuf;

/// docker's exit code when the daemon reports an error (or cannot be reached) for `run`.
pub const EXIT_DAEMON: i32 = 125;
/// docker's exit code when the container command exists but cannot be invoked.
pub const EXIT_CANNOT_INVOKE: i32 = 126;
/// docker's exit code when the container command was not found.
pub const EXIT_NOT_FOUND: i32 = 127;
/// Exit code of every other failing command, as docker uses.
pub const EXIT_FAILURE: i32 = 1;

#[derive(Debug, thiserror::Error)]
pub enum CliError {
    #[error("invalid host {host:?}: {reason}")]
    InvalidHost { host: String, reason: &'static str },
    #[error("Cannot connect to the Berth daemon at {host}. Is berth-engine running?")]
    Connect {
        host: String,
        #[source]
        source: std::io::Error,
    },
    #[error("talking to the daemon at {host}")]
    Http {
        host: String,
        #[source]
        source: hyper::Error,
    },
    #[error("building request for {path}")]
    Request {
        path: String,
        #[source]
        source: http::Error,
    },
    #[error("Error response from daemon: {message}")]
    Daemon { status: u16, message: String },
    #[error("unexpected response from daemon for {what}: {reason}")]
    Protocol { what: String, reason: String },
    #[error("invalid JSON from daemon for {what}")]
    Decode {
        what: String,
        #[source]
        source: serde_json::Error,
    },
    #[error("reading {path}")]
    ReadInput {
        path: PathBuf,
        #[source]
        source: std::io::Error,
    },
    #[error("reading the container's output stream")]
    Stream {
        #[source]
        source: std::io::Error,
    },
    #[error("malformed output stream from daemon: {reason}")]
    Demux { reason: String },
    #[error("writing output")]
    Output {
        #[source]
        source: std::io::Error,
    },
    #[error("invalid value {value:?} for {flag}: {reason}")]
    InvalidArgument {
        flag: &'static str,
        value: String,
        reason: &'static str,
    },
    /// A `run` failure, carrying the exit code docker would use for it.
    #[error("{inner}")]
    Run { code: i32, inner: Box<CliError> },
}

impl CliError {
    /// The process exit code for this error.
    pub fn exit_code(&self) -> i32 {
        match self {
            CliError::Run { code, .. } => *code,
            _ => EXIT_FAILURE,
        }
    }

    /// Wraps an error from creating a `run` container: docker exits 125.
    pub fn for_run(self) -> CliError {
        match self {
            e @ CliError::Run { .. } => e,
            e => CliError::Run {
                code: EXIT_DAEMON,
                inner: Box::new(e),
            },
        }
    }

    /// Wraps an error from starting a `run` container with docker's classification:
    /// 127 when the command does not exist, 126 when it cannot be executed, else 125.
    pub fn for_run_start(self) -> CliError {
        let code = start_failure_code(&self.to_string());
        CliError::Run {
            code,
            inner: Box::new(self),
        }
    }
}

/// docker's exit code for a start failure, judged by the daemon's message.
pub fn start_failure_code(message: &str) -> i32 {
    if message.contains("executable file not found")
        || message.contains("no such file or directory")
        || message.contains("command not found")
    {
        EXIT_NOT_FOUND
    } else if message.contains("permission denied") || message.contains("is a directory") {
        EXIT_CANNOT_INVOKE
    } else {
        EXIT_DAEMON
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn start_failures_map_to_docker_codes() {
        let not_found = "exec: \"/nonexistent\": stat /nonexistent: no such file or directory";
        assert_eq!(start_failure_code(not_found), 127);
        assert_eq!(
            start_failure_code("exec: \"x\": executable file not found in $PATH"),
            127
        );
        assert_eq!(start_failure_code("exec: \"/etc\": permission denied"), 126);
        assert_eq!(start_failure_code("cgroup setup failed"), 125);
    }

    #[test]
    fn run_errors_keep_their_code_and_message() {
        let e = CliError::Daemon {
            status: 404,
            message: "No such image: x:latest".into(),
        }
        .for_run();
        assert_eq!(e.exit_code(), 125);
        assert_eq!(
            e.to_string(),
            "Error response from daemon: No such image: x:latest"
        );
        let e = CliError::Daemon {
            status: 400,
            message: "no such file or directory".into(),
        }
        .for_run_start();
        assert_eq!(e.exit_code(), 127);
        assert_eq!(e.for_run().exit_code(), 127);
    }
}
