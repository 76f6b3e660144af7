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
