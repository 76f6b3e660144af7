//! Errors of the metadata DB and of the storage services built on it, and their one mapping
//! to gRPC status codes.

use std::path::PathBuf;

/// A failure of the metadata database itself.
#[derive(Debug, thiserror::Error)]
pub enum DbError {
    #[error("create database root {path}")]
    CreateRoot {
        path: PathBuf,
        source: std::io::Error,
    },
    #[error("open metadata database {path}")]
    Open {
        path: PathBuf,
        source: Box<redb::DatabaseError>,
    },
    #[error("begin transaction")]
    Transaction(#[from] Box<redb::TransactionError>),
    #[error("open table")]
    Table(#[from] Box<redb::TableError>),
    #[error("database storage")]
    Storage(#[from] Box<redb::StorageError>),
    #[error("commit transaction")]
    Commit(#[from] Box<redb::CommitError>),
    #[error("set transaction durability")]
    Durability(#[from] redb::SetDurabilityError),
    #[error("decode record {key} of table {table}")]
    Decode {
        table: String,
        key: String,
        source: serde_json::Error,
    },
    #[error("encode record {key} of table {table}")]
    Encode {
        table: String,
        key: String,
        source: serde_json::Error,
    },
}

macro_rules! boxed_from {
    ($($t:ty),*) => {$(
        impl From<$t> for DbError {
            fn from(e: $t) -> Self {
                Box::new(e).into()
            }
        }
    )*};
}
boxed_from!(
    redb::TransactionError,
    redb::TableError,
    redb::StorageError,
    redb::CommitError
);

/// A failure of a storage operation (namespaces, content, images, snapshots, diff, leases, GC).
#[derive(Debug, thiserror::Error)]
pub enum StoreError {
    #[error("{kind} {name:?} not found")]
    NotFound { kind: &'static str, name: String },
    #[error("{kind} {name:?} already exists")]
    AlreadyExists { kind: &'static str, name: String },
    #[error("invalid {what} {value:?}: {reason}")]
    InvalidArgument {
        what: &'static str,
        value: String,
        reason: &'static str,
    },
    #[error("namespace {name:?} must be empty, but it still has {kinds}")]
    NamespaceNotEmpty { name: String, kinds: String },
    #[error("cannot remove snapshot {key:?}: it has children")]
    SnapshotHasChildren { key: String },
    #[error("snapshots under {root} were made with overlayfs, which cannot be mounted here")]
    OverlayUnavailable { root: PathBuf },
    #[error("snapshot {key:?} is not active")]
    SnapshotNotActive { key: String },
    /// containerd answers NotFound ("parent snapshot does not exist") for a parent that is
    /// not committed; so do we, with a clearer message.
    #[error("parent snapshot {parent:?} does not exist as a committed snapshot")]
    ParentNotCommitted { parent: String },
    #[error("unexpected commit digest {actual}, expected {expected}")]
    DigestMismatch { expected: String, actual: String },
    #[error("unexpected commit size {actual}, expected {expected} (ref {reference:?})")]
    SizeMismatch {
        reference: String,
        expected: u64,
        actual: u64,
    },
    #[error("ref {reference:?} is locked by another writer")]
    Locked { reference: String },
    #[error(
        "write to ref {reference:?} at offset {offset} must occur at current offset {current}"
    )]
    OffsetMismatch {
        reference: String,
        offset: u64,
        current: u64,
    },
    #[error("unsafe layer entry {entry:?}: {reason}")]
    UnsafeEntry { entry: String, reason: &'static str },
    #[error("{what} is not implemented")]
    Unimplemented { what: &'static str },
    #[error("{op} {path}")]
    Io {
        op: &'static str,
        path: PathBuf,
        source: std::io::Error,
    },
    #[error("{op} {path}")]
    Sys {
        op: &'static str,
        path: PathBuf,
        source: nix::Error,
    },
    #[error("read layer {digest}")]
    Layer {
        digest: String,
        source: std::io::Error,
    },
    #[error("metadata database")]
    Db(#[from] DbError),
    #[error("storage worker failed")]
    Worker(#[from] tokio::task::JoinError),
}

impl StoreError {
    /// Helper for the common `Io` case.
    pub fn io(op: &'static str, path: impl Into<PathBuf>) -> impl FnOnce(std::io::Error) -> Self {
        let path = path.into();
        move |source| StoreError::Io { op, path, source }
    }

    /// Helper for the common `Sys` case.
    pub fn sys(op: &'static str, path: impl Into<PathBuf>) -> impl FnOnce(nix::Error) -> Self {
        let path = path.into();
        move |source| StoreError::Sys { op, path, source }
    }

    pub fn not_found(kind: &'static str, name: impl Into<String>) -> Self {
        StoreError::NotFound {
            kind,
            name: name.into(),
        }
    }

    pub fn exists(kind: &'static str, name: impl Into<String>) -> Self {
        StoreError::AlreadyExists {
            kind,
            name: name.into(),
        }
    }

    pub fn invalid(what: &'static str, value: impl Into<String>, reason: &'static str) -> Self {
        StoreError::InvalidArgument {
            what,
            value: value.into(),
            reason,
        }
    }

    /// The gRPC code containerd returns for this kind of failure.
    pub fn code(&self) -> tonic::Code {
        use tonic::Code;
        match self {
            StoreError::NotFound { .. } | StoreError::ParentNotCommitted { .. } => Code::NotFound,
            StoreError::AlreadyExists { .. } => Code::AlreadyExists,
            StoreError::InvalidArgument { .. } | StoreError::UnsafeEntry { .. } => {
                Code::InvalidArgument
            }
            StoreError::NamespaceNotEmpty { .. }
            | StoreError::OverlayUnavailable { .. }
            | StoreError::SnapshotHasChildren { .. }
            | StoreError::SnapshotNotActive { .. }
            | StoreError::DigestMismatch { .. }
            | StoreError::SizeMismatch { .. } => Code::FailedPrecondition,
            StoreError::Locked { .. } => Code::Unavailable,
            StoreError::OffsetMismatch { .. } => Code::OutOfRange,
            StoreError::Unimplemented { .. } => Code::Unimplemented,
            StoreError::Io { source, .. } | StoreError::Layer { source, .. }
                if source.kind() == std::io::ErrorKind::InvalidData =>
            {
                Code::InvalidArgument
            }
            StoreError::Io { .. }
            | StoreError::Sys { .. }
            | StoreError::Layer { .. }
            | StoreError::Db(_)
            | StoreError::Worker(_) => Code::Internal,
        }
    }
}

/// The full cause chain, so the client sees e.g. "open /x: permission denied".
fn chain(e: &dyn std::error::Error) -> String {
    let mut msg = e.to_string();
    let mut cur = e.source();
    while let Some(s) = cur {
        msg.push_str(": ");
        msg.push_str(&s.to_string());
        cur = s.source();
    }
    msg
}

impl From<StoreError> for tonic::Status {
    fn from(e: StoreError) -> Self {
        if e.code() == tonic::Code::Internal {
            tracing::error!(error = %chain(&e), "storage operation failed");
        }
        tonic::Status::new(e.code(), chain(&e))
    }
}
