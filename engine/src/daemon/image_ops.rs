//! `docker tag` and `docker rmi` over highd's image names.

use chrono::Utc;

use super::images::DANGLING_PREFIX;
use super::{Daemon, DaemonError, DaemonResult};
use crate::backend::{Backend, Image};
use crate::refs::Reference;

/// One line of dockerd's `DELETE /images/{name}` answer.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum ImageDeleted {
    Untagged(String),
    Deleted(String),
}

fn is_tag_name(name: &str) -> bool {
    !name.starts_with(DANGLING_PREFIX) && Reference::parse(name).is_ok_and(|r| r.tag.is_some())
}

fn short(id: &str) -> &str {
    let hex = id.strip_prefix("sha256:").unwrap_or(id);
    &hex[..hex.len().min(12)]
}

impl<B: Backend> Daemon<B> {
    /// `POST /images/{name}/tag?repo=&tag=`: another name for the same manifest.
    pub async fn tag_image(&self, source: &str, repo: &str, tag: &str) -> DaemonResult<()> {
        let img = self.image(source).await?;
        let target = Reference::parse(repo)?;
        let target = if tag.is_empty() {
            target
        } else {
            target.with_tag(tag)?
        };
        let now = Some(Utc::now());
        self.backend
            .image_put(Image {
                name: target.clone().with_default_tag().to_string(),
                target: img.target.clone(),
                labels: Default::default(),
                created_at: now,
                updated_at: now,
            })
            .await?;
        self.event_log
            .image("tag", &img.id, &target.with_default_tag().familiar());
        Ok(())
    }

    /// `DELETE /images/{name}?force=`: by name untags (and deletes with the last name);
    /// by ID deletes every name. Images used by containers need `force`, like dockerd.
    pub async fn remove_image(
        &self,
        reference: &str,
        force: bool,
    ) -> DaemonResult<Vec<ImageDeleted>> {
        // Resolution sees one name; the decision needs every name of this image ID.
        let img = self.image_with_names(reference).await?;
        let by_name = Reference::parse(reference)
            .map(|r| r.with_default_tag().to_string())
            .ok()
            .filter(|n| img.names.contains(n));
        let mut doomed: Vec<String> = match &by_name {
            Some(n) => vec![n.clone()],
            None => img.names.clone(),
        };
        // dockerd: untagging a repository's last tag also removes its digest references.
        if let Some(n) = by_name.as_ref().filter(|n| is_tag_name(n)) {
            let repo = Reference::parse(n).map(|r| r.name()).unwrap_or_default();
            let tags_left = img.names.iter().any(|o| {
                o != n && is_tag_name(o) && Reference::parse(o).is_ok_and(|r| r.name() == repo)
            });
            if !tags_left {
                doomed.extend(super::repo_digests::digest_names_of_repo(&img.names, n));
            }
        }
        if by_name.is_none() && img.names.len() > 1 && !force {
            return Err(DaemonError::ImageConflict {
                message: format!(
                    "unable to delete {} (must be forced) - image is referenced in multiple repositories",
                    short(&img.id)
                ),
            });
        }
        let last = doomed.len() == img.names.len();
        if last && !force {
            if let Some(c) = self.store.list().into_iter().find(|c| c.image == img.id) {
                return Err(DaemonError::ImageConflict {
                    message: format!(
                        "unable to remove repository reference \"{reference}\" (must force) - container {} is using its referenced image {}",
                        c.short_id(),
                        short(&img.id)
                    ),
                });
            }
        }
        let mut out = Vec::new();
        for name in doomed {
            self.backend.image_delete(&name).await?;
            if name.starts_with(DANGLING_PREFIX) {
                continue;
            }
            if let Ok(r) = Reference::parse(&name) {
                self.event_log.image("untag", &img.id, &r.familiar());
                out.push(ImageDeleted::Untagged(r.familiar()));
            }
        }
        if last {
            self.event_log.image("delete", &img.id, reference);
            out.push(ImageDeleted::Deleted(img.id.clone()));
        }
        Ok(out)
    }

    /// `POST /containers/prune`: removes every stopped container `select` accepts;
    /// returns their IDs.
    pub async fn prune_containers(
        &self,
        select: impl Fn(&crate::record::ContainerRecord) -> bool,
    ) -> DaemonResult<Vec<String>> {
        let mut removed = Vec::new();
        for rec in self.store.list() {
            // dockerd counts a container waiting for its restart policy as running.
            if rec.state.is_up() || !select(&rec) {
                continue;
            }
            self.remove_container_record(&rec.id, rec.state.exit_code)
                .await?;
            removed.push(rec.id);
        }
        Ok(removed)
    }
}
