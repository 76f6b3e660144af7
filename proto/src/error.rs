use std::path::PathBuf;

/// Errors of this crate's helpers (transport, namespace, any). Generated gRPC code
/// reports through `tonic::Status` as usual.
#[derive(Debug, thiserror::Error)]
pub enum ProtoError {
    #[error("socket path {path:?} has no file name")]
    SocketPathNoName { path: PathBuf },

    #[error(
        "socket file name of {path:?} is too long ({len} bytes) even relative to its directory"
    )]
    SocketNameTooLong { path: PathBuf, len: usize },

    #[error("cannot open socket directory {dir:?}")]
    OpenDir {
        dir: PathBuf,
        #[source]
        source: std::io::Error,
    },

    #[error("{path:?} exists and is not a socket; refusing to replace it")]
    NotASocket { path: PathBuf },

    #[error("socket {path:?} is in use by a live server")]
    SocketInUse { path: PathBuf },

    #[error("cannot remove stale socket {path:?}")]
    RemoveStale {
        path: PathBuf,
        #[source]
        source: std::io::Error,
    },

    #[error("cannot bind unix socket {path:?}")]
    Bind {
        path: PathBuf,
        #[source]
        source: std::io::Error,
    },

    #[error("cannot set permissions of socket {path:?}")]
    Chmod {
        path: PathBuf,
        #[source]
        source: std::io::Error,
    },

    #[error("cannot connect to {path:?}")]
    Connect {
        path: PathBuf,
        #[source]
        source: tonic::transport::Error,
    },

    #[error("grpc server on unix socket failed")]
    Serve {
        #[source]
        source: tonic::transport::Error,
    },

    #[error("invalid identifier {identifier:?}: {reason}")]
    InvalidIdentifier {
        identifier: String,
        reason: &'static str,
    },

    #[error("any has type url {found:?}, expected {expected:?}")]
    TypeUrlMismatch { expected: String, found: String },

    #[error("cannot decode any of type {type_url:?}")]
    Decode {
        type_url: String,
        #[source]
        source: prost::DecodeError,
    },

    #[error("unknown event type url {type_url:?}")]
    UnknownEvent { type_url: String },
}

/// For servers that use these helpers on request data (identifiers, `Any` payloads):
/// bad input is InvalidArgument, an unreachable peer Unavailable, the rest Internal.
impl From<ProtoError> for tonic::Status {
    fn from(e: ProtoError) -> Self {
        let code = match &e {
            ProtoError::InvalidIdentifier { .. }
            | ProtoError::TypeUrlMismatch { .. }
            | ProtoError::Decode { .. }
            | ProtoError::UnknownEvent { .. } => tonic::Code::InvalidArgument,
            ProtoError::Connect { .. } => tonic::Code::Unavailable,
            _ => tonic::Code::Internal,
        };
        // The client only sees the message, so spell out the whole cause chain.
        let mut message = e.to_string();
        let mut source = std::error::Error::source(&e);
        while let Some(cause) = source {
            message.push_str(": ");
            message.push_str(&cause.to_string());
            source = cause.source();
        }
        tonic::Status::new(code, message)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn bad_input_maps_to_invalid_argument() {
        let status = tonic::Status::from(ProtoError::InvalidIdentifier {
            identifier: "a..b".into(),
            reason: "separators must sit between letters or digits",
        });
        assert_eq!(status.code(), tonic::Code::InvalidArgument);
        assert!(status.message().contains("a..b"));
    }

    #[test]
    fn status_message_carries_the_cause() {
        let status = tonic::Status::from(ProtoError::Bind {
            path: "/x/y.sock".into(),
            source: std::io::Error::from(std::io::ErrorKind::PermissionDenied),
        });
        assert_eq!(status.code(), tonic::Code::Internal);
        assert!(status.message().contains("/x/y.sock"));
        assert!(
            status.message().contains("permission denied"),
            "{}",
            status.message()
        );
    }
}
