//! Errors of the tasks service and their one mapping to gRPC codes.

use super::bundle::BundleError;
use crate::containers::ContainerError;
use crate::shims::ShimError;

#[derive(Debug, thiserror::Error)]
pub enum TaskError {
    #[error("no running task found: task {id} not found")]
    NotFound { id: String },
    #[error("task {id}: already exists")]
    AlreadyExists { id: String },
    #[error("container {id:?}: not found")]
    ContainerNotFound { id: String },
    #[error("container {id:?} has no spec")]
    NoSpec { id: String },
    #[error("runtime {name:?} is not configured (known: {known})")]
    UnknownRuntime { name: String, known: String },
    #[error("namespace {namespace:?} is reserved: its task directory would collide with the runtime state directory")]
    ReservedNamespace { namespace: String },
    #[error("invalid {what}: {reason}")]
    InvalidArgument { what: &'static str, reason: String },
    #[error("{what} is not implemented by berth-highd")]
    Unimplemented { what: &'static str },
    #[error("the shim of task {id} did not answer within {seconds}s")]
    Unresponsive { id: String, seconds: u64 },
    #[error("task {id}: a delete of this task is already in progress")]
    DeleteInProgress { id: String },
    #[error("task {id}: its shim still runs but does not answer; not cleaning it up")]
    ShimStillRunning { id: String },
    #[error("process already finished: the shim of task {id} is gone")]
    ShimGone { id: String },
    #[error("task {id}")]
    Bundle { id: String, source: BundleError },
    #[error("cannot create runtime root {path}")]
    RuntimeRoot {
        path: std::path::PathBuf,
        source: std::io::Error,
    },
    #[error("task {id}")]
    Shim { id: String, source: ShimError },
    /// The shim's own answer, passed through unchanged: it carries the runtime's error.
    #[error("{}", .0.message())]
    Rpc(tonic::Status),
    #[error(transparent)]
    Container(#[from] ContainerError),
}

impl From<TaskError> for tonic::Status {
    fn from(e: TaskError) -> tonic::Status {
        use tonic::Code;
        let e = match e {
            TaskError::Rpc(status) => return status,
            TaskError::Container(c) => return c.into(),
            other => other,
        };
        let code = match &e {
            TaskError::Rpc(_) | TaskError::Container(_) => Code::Internal,
            TaskError::NotFound { .. }
            | TaskError::ContainerNotFound { .. }
            | TaskError::ShimGone { .. } => Code::NotFound,
            TaskError::AlreadyExists { .. } => Code::AlreadyExists,
            TaskError::Bundle {
                source: BundleError::Io { source, .. },
                ..
            } if source.kind() == std::io::ErrorKind::AlreadyExists => Code::AlreadyExists,
            TaskError::NoSpec { .. }
            | TaskError::DeleteInProgress { .. }
            | TaskError::ShimStillRunning { .. } => Code::FailedPrecondition,
            TaskError::UnknownRuntime { .. }
            | TaskError::ReservedNamespace { .. }
            | TaskError::InvalidArgument { .. }
            | TaskError::Bundle {
                source: BundleError::SpecJson { .. } | BundleError::SpecNotObject,
                ..
            } => Code::InvalidArgument,
            TaskError::Unimplemented { .. } => Code::Unimplemented,
            TaskError::Unresponsive { .. } => Code::DeadlineExceeded,
            TaskError::Bundle { .. } | TaskError::RuntimeRoot { .. } | TaskError::Shim { .. } => {
                Code::Internal
            }
        };
        let message = crate::shims::client::error_chain(&e);
        if code == Code::Internal {
            tracing::error!(error = %message, "task operation failed");
        }
        tonic::Status::new(code, message)
    }
}
