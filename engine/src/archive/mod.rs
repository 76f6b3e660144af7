//! The container filesystem APIs: `docker cp` (`/containers/{id}/archive`), `docker
//! export`, `docker diff`, and the copy-up of image content into new volumes. Everything
//! goes through a [`rootfs::RootfsView`] (or `/proc/<pid>/root` of a running container)
//! and resolves paths with [`scope::resolve`].

pub mod changes;
pub mod container_fs;
pub mod copy;
pub mod rootfs;
pub mod scope;
pub mod stat;
pub mod tar_out;
pub mod tree_changes;
pub mod untar;
pub mod xattrs;

use std::path::PathBuf;

#[derive(Debug, thiserror::Error)]
pub enum ArchiveError {
    #[error("mount rootfs: {message}")]
    Mount { message: String },
    #[error("{op} {path}: {source}")]
    Io {
        op: &'static str,
        path: PathBuf,
        source: std::io::Error,
    },
    /// dockerd's `containerFileNotFound` (404): `path` as the client gave it.
    #[error("Could not find the file {path} in container {container}")]
    FileNotFound { path: String, container: String },
    #[error("extraction point is not a directory")]
    NotADirectory,
    #[error("container rootfs is marked read-only")]
    ReadOnlyRootfs,
    #[error("mounted volume is marked read-only")]
    ReadOnlyVolume,
    /// `noOverwriteDirNonDir` refused an entry (dockerd's wording).
    #[error("cannot overwrite {existing} {path:?} with {new} {name:?}")]
    Overwrite {
        existing: &'static str,
        path: String,
        new: &'static str,
        name: String,
    },
    /// An archive entry that would land outside the extraction directory.
    #[error("{name:?} is outside of {dest:?}")]
    Breakout { name: String, dest: String },
    #[error("invalid tar archive: {message}")]
    BadTar { message: String },
    /// The container has no snapshot (or highd lost it).
    #[error("container {id} has no filesystem: {message}")]
    NoFilesystem { id: String, message: String },
    #[error("{what} is not supported by berth-engine")]
    Unsupported { what: String },
}

impl ArchiveError {
    /// The HTTP status dockerd answers for this error.
    pub fn status(&self) -> u16 {
        match self {
            Self::FileNotFound { .. } => 404,
            Self::NotADirectory | Self::ReadOnlyRootfs | Self::ReadOnlyVolume => 400,
            Self::BadTar { .. } => 400,
            Self::Unsupported { .. } => 501,
            _ => 500,
        }
    }

    pub(crate) fn io(op: &'static str, path: impl Into<PathBuf>, source: std::io::Error) -> Self {
        Self::Io {
            op,
            path: path.into(),
            source,
        }
    }
}
