//! The task API's errors and their one mapping to gRPC status codes.

use std::path::PathBuf;

use tonic::{Code, Status};

use crate::console::ConsoleError;
use crate::mount::MountError;
use crate::runtime::RuntimeError;
use crate::state_files::StateFileError;
use crate::stdio::IoError;

#[derive(Debug, thiserror::Error)]
pub enum TaskError {
    #[error("this shim serves task {expected:?}, not {got:?}")]
    WrongTask { expected: String, got: String },
    #[error("task {id} not found")]
    NotFound { id: String },
    #[error("exec {exec_id} not found")]
    ExecNotFound { exec_id: String },
    #[error("task {id} already exists")]
    AlreadyExists { id: String },
    #[error("exec {exec_id} already exists")]
    ExecExists { exec_id: String },
    #[error("invalid exec id {exec_id:?}: {reason}")]
    BadExecId { exec_id: String, reason: String },
    #[error("process {process} is {state:?}: cannot {action}")]
    WrongState {
        process: String,
        state: &'static str,
        action: &'static str,
    },
    #[error("process already finished")]
    Finished,
    #[error("exec request has no process spec")]
    MissingSpec,
    #[error("update request has no resources")]
    MissingResources,
    #[error("request payload has type {type_url:?}, want {want:?}")]
    SpecType {
        type_url: String,
        want: &'static str,
    },
    #[error("cannot decode create options {type_url}: {reason}")]
    BadOptions { type_url: String, reason: String },
    #[error("invalid signal {signal}")]
    BadSignal { signal: u32 },
    #[error("cannot signal pid {pid}")]
    Signal {
        pid: u32,
        #[source]
        source: nix::errno::Errno,
    },
    #[error("cannot write {path}")]
    WriteFile {
        path: PathBuf,
        #[source]
        source: std::io::Error,
    },
    #[error("the runtime did not send a pty master in time")]
    ConsoleTimeout,
    #[error("the operation failed inside the shim")]
    Aborted(#[source] tokio::task::JoinError),
    #[error("the task's cgroup is unknown (see shim.log): no statistics")]
    NoCgroup,
    #[error("cgroup statistics")]
    Cgroup(#[from] crate::cgroup::CgroupError),
    #[error("{what} is not implemented by berth-shim")]
    Unimplemented { what: &'static str },
    #[error(transparent)]
    Runtime(#[from] RuntimeError),
    #[error("stdio")]
    Io(#[from] IoError),
    #[error("rootfs")]
    Mount(#[from] MountError),
    #[error("console socket")]
    Console(#[from] ConsoleError),
    #[error("state file")]
    StateFile(#[from] StateFileError),
}

impl From<TaskError> for Status {
    fn from(err: TaskError) -> Status {
        let code = match &err {
            TaskError::NotFound { .. } | TaskError::ExecNotFound { .. } | TaskError::Finished => {
                Code::NotFound
            }
            TaskError::AlreadyExists { .. } | TaskError::ExecExists { .. } => Code::AlreadyExists,
            TaskError::WrongTask { .. }
            | TaskError::BadExecId { .. }
            | TaskError::MissingSpec
            | TaskError::MissingResources
            | TaskError::SpecType { .. }
            | TaskError::BadSignal { .. }
            | TaskError::BadOptions { .. }
            | TaskError::Io(IoError::Target { .. } | IoError::JsonStdin)
            | TaskError::Mount(MountError::Target { .. } | MountError::Resolve { .. }) => {
                Code::InvalidArgument
            }
            TaskError::Io(IoError::NoTerminal)
            | TaskError::WrongState { .. }
            | TaskError::NoCgroup
            | TaskError::Cgroup(crate::cgroup::CgroupError::Gone { .. }) => {
                Code::FailedPrecondition
            }
            TaskError::Unimplemented { .. } => Code::Unimplemented,
            TaskError::Runtime(_) => Code::Unknown,
            _ => Code::Internal,
        };
        Status::new(code, crate::error_chain(&err))
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn runtime_failure_reads_as_the_runtime_line() {
        let err = TaskError::Runtime(RuntimeError::Failed {
            command: "create",
            message: "container with id exists: c1".into(),
        });
        let status = Status::from(err);
        assert_eq!(status.code(), Code::Unknown);
        assert_eq!(status.message(), "container with id exists: c1");
    }

    #[test]
    fn causes_are_chained_and_codes_mapped() {
        let err = TaskError::Io(IoError::Target {
            stream: "stdout",
            source: crate::stdio::TargetError::NotAbsolute { value: "x".into() },
        });
        let status = Status::from(err);
        assert_eq!(status.code(), Code::InvalidArgument);
        assert_eq!(
            status.message(),
            "stdio: invalid stdout stdio: stdio path \"x\" is not absolute"
        );
        assert_eq!(Status::from(TaskError::Finished).code(), Code::NotFound);
    }
}
