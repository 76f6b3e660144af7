//! containerd's Containers service: metadata records only; running them is `tasks`.

pub mod service;
pub mod store;

pub use service::ContainersService;
pub use store::{ContainerStore, Record};

use crate::db::DbError;
use crate::db::StoreError;

#[derive(Debug, thiserror::Error)]
pub enum ContainerError {
    #[error("container {id:?}: not found")]
    NotFound { id: String },
    #[error("container {id:?}: already exists")]
    AlreadyExists { id: String },
    #[error("invalid container id: {reason}")]
    InvalidId { id: String, reason: String },
    #[error("container {id:?}: {what} must be set")]
    Missing { id: String, what: &'static str },
    #[error("container {id:?}: {field} is immutable")]
    Immutable { id: String, field: &'static str },
    #[error("cannot update {path:?} field of container {id:?}")]
    BadUpdatePath { id: String, path: String },
    #[error("invalid label {key:?}: {reason}")]
    InvalidLabel { key: String, reason: &'static str },
    #[error("cannot delete container {id:?}: it has a task (delete the task first)")]
    HasTask { id: String },
    #[error("invalid list filter")]
    Filter { source: StoreError },
    #[error("metadata database")]
    Db {
        #[from]
        source: DbError,
    },
}

impl From<ContainerError> for tonic::Status {
    fn from(e: ContainerError) -> tonic::Status {
        use tonic::Code;
        let code = match &e {
            ContainerError::NotFound { .. } => Code::NotFound,
            ContainerError::AlreadyExists { .. } => Code::AlreadyExists,
            ContainerError::InvalidId { .. }
            | ContainerError::Missing { .. }
            | ContainerError::Immutable { .. }
            | ContainerError::BadUpdatePath { .. }
            | ContainerError::InvalidLabel { .. }
            | ContainerError::Filter { .. } => Code::InvalidArgument,
            ContainerError::HasTask { .. } => Code::FailedPrecondition,
            ContainerError::Db { .. } => Code::Internal,
        };
        if code == Code::Internal {
            tracing::error!(error = %e, "containers service failed");
        }
        tonic::Status::new(code, crate::shims::client::error_chain(&e))
    }
}

/// containerd's identifier rule (pkg/identifiers), shared with namespaces.
pub fn validate_id(id: &str) -> Result<(), ContainerError> {
    berth_proto::namespace::validate_identifier(id).map_err(|e| ContainerError::InvalidId {
        id: id.to_string(),
        reason: e.to_string(),
    })
}

/// containerd's label limit: key and value together at most 4096 bytes.
pub fn validate_labels<'a>(
    labels: impl IntoIterator<Item = (&'a String, &'a String)>,
) -> Result<(), ContainerError> {
    for (k, v) in labels {
        if k.is_empty() {
            return Err(ContainerError::InvalidLabel {
                key: k.clone(),
                reason: "empty key",
            });
        }
        if k.len() + v.len() > 4096 {
            return Err(ContainerError::InvalidLabel {
                key: k.clone(),
                reason: "key and value longer than 4096 bytes",
            });
        }
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn ids() {
        for ok in ["a", "c1", "my-container_1.x", &"a".repeat(76)] {
            assert!(validate_id(ok).is_ok(), "{ok}");
        }
        for bad in ["", "-a", "a-", "a--b", "a/b", "a b", &"a".repeat(77), "é"] {
            assert!(validate_id(bad).is_err(), "{bad}");
        }
    }
}
