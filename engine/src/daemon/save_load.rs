//! `docker save` (a docker-archive with manifest.json and repositories that is also an
//! OCI image layout with index.json, as dockerd 25+ writes) and `docker load` (either
//! format), both streamed so an image of any size passes in bounded memory; plus
//! `docker image prune`.

use std::collections::HashSet;

use super::image_ops::ImageDeleted;
use super::{Daemon, DaemonError, DaemonResult};
use crate::backend::Backend;

pub(crate) mod import_layer;
mod load;
mod load_tar;
mod save;
pub(crate) mod stream_io;

#[derive(Debug, thiserror::Error)]
pub enum ArchiveError {
    #[error("invalid image archive: {message}")]
    Invalid { message: String },
    #[error("invalid image archive: {path} is missing")]
    Missing { path: String },
    /// dockerd's words (moby image/tarexport/load.go), as is its 500.
    #[error("invalid diffID for layer {index}: expected \"{expected}\", got \"{actual}\"")]
    DiffId {
        index: usize,
        actual: String,
        expected: String,
    },
    #[error("invalid manifest, layers length mismatch: expected {layers}, got {diff_ids}")]
    LayerCount { layers: usize, diff_ids: usize },
    #[error("invalid image archive: layer {path} is {compression}-compressed, which no layer media type allows")]
    LayerCompression {
        path: String,
        compression: &'static str,
    },
    #[error("write image archive: {source}")]
    Write { source: std::io::Error },
}

fn invalid(message: impl Into<String>) -> DaemonError {
    DaemonError::Archive(ArchiveError::Invalid {
        message: message.into(),
    })
}

fn blob_path(digest: &str) -> String {
    format!("blobs/sha256/{}", digest.trim_start_matches("sha256:"))
}

impl<B: Backend> Daemon<B> {
    /// `POST /images/prune`: unused dangling images, or every unused image with `all`.
    pub async fn prune_images(
        &self,
        all: bool,
        keep: impl Fn(&super::ImageView) -> bool,
    ) -> DaemonResult<(Vec<ImageDeleted>, i64)> {
        let used: HashSet<String> = self.store.list().into_iter().map(|c| c.image).collect();
        let mut deleted = Vec::new();
        let mut reclaimed = 0;
        for img in self.list_images().await? {
            let mut tags = img.repo_tags();
            // A digest reference (a pull by digest) keeps an image from being dangling.
            let digests = img.repo_digests();
            let dangling = tags.is_empty() && digests.is_empty();
            if used.contains(&img.id) || (!all && !dangling) || keep(&img) {
                continue;
            }
            tags.extend(digests);
            for name in &img.names {
                self.backend.image_delete(name).await?;
            }
            for t in tags {
                self.event_log.image("untag", &img.id, &t);
                deleted.push(ImageDeleted::Untagged(t));
            }
            self.event_log.image("delete", &img.id, "");
            reclaimed += img.size();
            deleted.push(ImageDeleted::Deleted(img.id));
        }
        Ok((deleted, reclaimed))
    }
}
