//! The container filesystem APIs: `docker cp` (`/containers/{id}/archive`), `docker
//! export`, `docker diff`, and the copy-up of image content into new volumes. Everything
//! goes through a [`rootfs::RootfsView`] (or `/proc/<pid>/root` of a running container)
//! and resolves paths with [`scope::resolve`].

pub mod copy;
pub mod rootfs;
pub mod scope;

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
}
