//! The one mapping from engine errors to Docker's `{"message": ...}` responses.

use http::StatusCode;

use crate::backend::BackendError;
use crate::daemon::{DaemonError, ImportError};
use crate::users::UserError;
use crate::volumes::VolumeError;

/// An error as the Docker API reports it: an HTTP status and a message.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[error("{message}")]
pub struct ApiError {
    pub status: StatusCode,
    pub message: String,
}

impl ApiError {
    pub fn new(status: StatusCode, message: impl Into<String>) -> Self {
        Self {
            status,
            message: message.into(),
        }
    }

    pub fn bad_request(message: impl Into<String>) -> Self {
        Self::new(StatusCode::BAD_REQUEST, message)
    }

    pub fn page_not_found() -> Self {
        Self::new(StatusCode::NOT_FOUND, "page not found")
    }

    /// The JSON body dockerd sends with every error.
    pub fn body(&self) -> String {
        serde_json::json!({ "message": self.message }).to_string()
    }
}

impl From<DaemonError> for ApiError {
    fn from(err: DaemonError) -> Self {
        use DaemonError as E;
        let status = match &err {
            E::NoSuchContainer { .. } | E::NoSuchImage { .. } | E::NoSuchExec { .. } => {
                StatusCode::NOT_FOUND
            }
            E::AmbiguousPrefix { .. }
            | E::InvalidName { .. }
            | E::InvalidParameter { .. }
            | E::Build { .. }
            | E::Archive(crate::daemon::ArchiveError::Invalid { .. })
            | E::Archive(crate::daemon::ArchiveError::Missing { .. })
            | E::Archive(crate::daemon::ArchiveError::LayerCompression { .. })
            | E::StartFailed { .. }
            | E::ExecFailed { .. }
            | E::Spec(_)
            | E::Import(ImportError::NotTar { .. } | ImportError::Decompress { .. })
            | E::Reference(_) => StatusCode::BAD_REQUEST,
            E::NameConflict { .. }
            | E::NotRunning { .. }
            | E::ExecNotRunning { .. }
            | E::ExecPaused { .. }
            | E::AlreadyPaused { .. }
            | E::NotPaused { .. }
            | E::Restarting { .. }
            | E::RemoveRunning { .. }
            | E::ImageConflict { .. } => StatusCode::CONFLICT,
            E::NotImplemented { .. } => StatusCode::NOT_IMPLEMENTED,
            E::Network(n) => {
                StatusCode::from_u16(n.status()).unwrap_or(StatusCode::INTERNAL_SERVER_ERROR)
            }
            E::User(UserError::NoUser { .. } | UserError::NoGroup { .. }) => {
                StatusCode::BAD_REQUEST
            }
            E::User(_) => StatusCode::INTERNAL_SERVER_ERROR,
            E::Seccomp(_) => StatusCode::BAD_REQUEST,
            E::Mount(_) => StatusCode::BAD_REQUEST,
            E::Volume(v) if v.is_bad_input() => StatusCode::BAD_REQUEST,
            E::Volume(VolumeError::NotFound { .. } | VolumeError::NoDriver { .. }) => {
                StatusCode::NOT_FOUND
            }
            E::Volume(VolumeError::InUse { .. }) => StatusCode::CONFLICT,
            E::Volume(VolumeError::NoQuota) => StatusCode::BAD_REQUEST,
            E::Filesystem(f) => {
                StatusCode::from_u16(f.status()).unwrap_or(StatusCode::INTERNAL_SERVER_ERROR)
            }
            E::Volume(_) => StatusCode::INTERNAL_SERVER_ERROR,
            E::Top(crate::daemon::TopError::BadArgs(_)) => StatusCode::BAD_REQUEST,
            E::Resources(_) | E::Update(crate::daemon::UpdateError::Invalid(_)) => {
                StatusCode::BAD_REQUEST
            }
            E::Update(crate::daemon::UpdateError::Conflict { .. }) => StatusCode::CONFLICT,
            E::Update(_) => StatusCode::INTERNAL_SERVER_ERROR,
            E::Top(_) => StatusCode::INTERNAL_SERVER_ERROR,
            E::Backend(BackendError::NotFound { .. }) => StatusCode::NOT_FOUND,
            E::Backend(BackendError::AlreadyExists { .. }) => StatusCode::CONFLICT,
            E::Backend(BackendError::InvalidArgument { .. }) => StatusCode::BAD_REQUEST,
            E::Backend(_)
            | E::NoExitEvent { .. }
            | E::InitBinary { .. }
            | E::Store(_)
            | E::Io { .. }
            | E::Import(_)
            | E::Archive(_) => StatusCode::INTERNAL_SERVER_ERROR,
        };
        Self::new(status, err.to_string())
    }
}
