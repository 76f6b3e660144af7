//! Repo digests (`busybox@sha256:<manifest digest>`): recorded as highd image names of
//! their own on pull and push, like containerd's image store names a pull by digest, so
//! `docker run/pull/rmi image@sha256:...` resolve them as any other name.

use chrono::Utc;

use super::image_store::BUILD_CACHE_PREFIX;
use super::images::DANGLING_PREFIX;
use super::{Daemon, DaemonResult, ImageView};
use crate::backend::{Backend, Descriptor, Image};
use crate::refs::Reference;

impl ImageView {
    /// `RepoDigests` in familiar form (`busybox@sha256:...`), sorted.
    pub fn repo_digests(&self) -> Vec<String> {
        let mut out: Vec<String> = self
            .names
            .iter()
            .filter(|n| !n.starts_with(DANGLING_PREFIX) && !n.starts_with(BUILD_CACHE_PREFIX))
            .filter_map(|n| Reference::parse(n).ok())
            .filter(|r| r.tag.is_none() && r.digest.is_some())
            .map(|r| r.familiar())
            .collect();
        out.sort();
        out
    }
}

/// The digest names of `names` in the repository of `tag_name` (full names).
pub(super) fn digest_names_of_repo(names: &[String], tag_name: &str) -> Vec<String> {
    let Ok(tagged) = Reference::parse(tag_name) else {
        return Vec::new();
    };
    names
        .iter()
        .filter(|n| !n.starts_with(DANGLING_PREFIX) && !n.starts_with(BUILD_CACHE_PREFIX))
        .filter(|n| {
            Reference::parse(n)
                .is_ok_and(|r| r.tag.is_none() && r.digest.is_some() && r.name() == tagged.name())
        })
        .cloned()
        .collect()
}

impl<B: Backend> Daemon<B> {
    /// Resolves `reference` like [`Daemon::image`], with every name of that image ID
    /// (tags and repo digests), as inspect and rmi need them.
    pub async fn image_with_names(&self, reference: &str) -> DaemonResult<ImageView> {
        let mut img = self.image(reference).await?;
        if let Some(all) = self
            .list_images()
            .await?
            .into_iter()
            .find(|v| v.id == img.id)
        {
            img.names = all.names;
        }
        Ok(img)
    }

    /// Names `target` as `<repository>@<digest>` in highd: the digest the registry
    /// knows the image by (a pull's top manifest or index, a push's manifest).
    pub async fn record_repo_digest(
        &self,
        reference: &Reference,
        digest: &str,
        target: &Descriptor,
    ) -> DaemonResult<()> {
        let named = Reference {
            tag: None,
            digest: Some(digest.to_string()),
            ..reference.clone()
        };
        let now = Some(Utc::now());
        self.backend
            .image_put(Image {
                name: named.to_string(),
                target: target.clone(),
                labels: Default::default(),
                created_at: now,
                updated_at: now,
            })
            .await?;
        Ok(())
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn digest_names_by_repository() {
        let d = format!("sha256:{}", "a".repeat(64));
        let names = vec![
            "docker.io/library/busybox:latest".to_string(),
            format!("docker.io/library/busybox@{d}"),
            format!("localhost:5000/x@{d}"),
            format!("{DANGLING_PREFIX}{d}"),
        ];
        assert_eq!(
            digest_names_of_repo(&names, "docker.io/library/busybox:1"),
            [format!("docker.io/library/busybox@{d}")]
        );
        let view = ImageView {
            names,
            id: String::new(),
            config: Default::default(),
            target: Default::default(),
            layers: Vec::new(),
            layer_sizes: Vec::new(),
            created_at: None,
        };
        assert_eq!(
            view.repo_digests(),
            [format!("busybox@{d}"), format!("localhost:5000/x@{d}")]
        );
    }
}
