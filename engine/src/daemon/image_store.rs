//! Writing images: config and manifest blobs with containerd's gc labels, unpacking their
//! layers into snapshots, and naming them (a name moved off an image leaves it dangling,
//! as dockerd's containerd image store does).

use std::collections::HashMap;

use bytes::Bytes;
use chrono::Utc;
use serde_json::json;
use sha2::{Digest, Sha256};

use super::images::{chain_id, DANGLING_PREFIX, MEDIA_CONFIG, MEDIA_MANIFEST};
use super::{Daemon, DaemonResult};
use crate::backend::{Backend, Descriptor, Image};
use crate::types::ImageConfig;

/// Names of the builder's per-step images (the layer cache): `<prefix><cache key>`.
/// They are kept in highd so their content and snapshots survive its GC, and are hidden
/// from image listings like dockerd's intermediate images.
pub const BUILD_CACHE_PREFIX: &str = "berth-build-cache@";
const SNAPSHOTTER: &str = "overlayfs";
/// Content label on an image's config blob (so on its ID, whatever names it): the image
/// it was made from (a commit's container image, a build step's previous step), which
/// dockerd keeps as the image's parent and inspect shows as `Parent`.
const PARENT_LABEL: &str = "berth.image.parent";
/// Labels on a build cache name's record: when a build last reused it, and how often.
const CACHE_LAST_USED: &str = "berth.build.last-used";
const CACHE_REUSES: &str = "berth.build.reuses";

/// The last reuse and the number of reuses a cache record's labels say.
pub fn cache_uses(labels: &HashMap<String, String>) -> (Option<chrono::DateTime<Utc>>, u64) {
    let last = labels
        .get(CACHE_LAST_USED)
        .and_then(|t| chrono::DateTime::parse_from_rfc3339(t).ok())
        .map(|t| t.with_timezone(&Utc));
    let n = labels
        .get(CACHE_REUSES)
        .and_then(|n| n.parse().ok())
        .unwrap_or(0);
    (last, n)
}

pub fn sha256_digest(data: &[u8]) -> String {
    format!("sha256:{}", hex::encode(Sha256::digest(data)))
}

/// A stored image: its ID (config digest) and manifest descriptor.
#[derive(Debug, Clone)]
pub struct Stored {
    pub id: String,
    pub manifest: Descriptor,
}

impl<B: Backend> Daemon<B> {
    /// Writes `config` and a schema2 manifest over `layers` (already in the content
    /// store), unpacks the layers, and returns the stored image (not named yet).
    pub async fn write_image(
        &self,
        config: &ImageConfig,
        layers: &[Descriptor],
    ) -> DaemonResult<Stored> {
        // Serializing our own types cannot fail.
        let config_bytes = serde_json::to_vec(config).unwrap_or_default();
        self.write_image_raw(config_bytes, &config.rootfs.diff_ids, layers)
            .await
    }

    /// [`Self::write_image`] for a config blob kept byte for byte (a loaded image keeps
    /// its ID).
    pub async fn write_image_raw(
        &self,
        config_bytes: Vec<u8>,
        diff_ids: &[String],
        layers: &[Descriptor],
    ) -> DaemonResult<Stored> {
        let config_desc = Descriptor {
            media_type: MEDIA_CONFIG.into(),
            digest: sha256_digest(&config_bytes),
            size: config_bytes.len() as i64,
            annotations: HashMap::new(),
        };
        let layer_json: Vec<_> = layers
            .iter()
            .map(|l| json!({"mediaType": l.media_type, "size": l.size, "digest": l.digest}))
            .collect();
        let manifest = json!({
            "schemaVersion": 2,
            "mediaType": MEDIA_MANIFEST,
            "config": {"mediaType": MEDIA_CONFIG, "size": config_desc.size, "digest": config_desc.digest},
            "layers": layer_json,
        });
        let manifest_bytes = serde_json::to_vec(&manifest).unwrap_or_default();
        let manifest_desc = Descriptor {
            media_type: MEDIA_MANIFEST.into(),
            digest: sha256_digest(&manifest_bytes),
            size: manifest_bytes.len() as i64,
            annotations: HashMap::new(),
        };
        let mut cfg_labels = HashMap::new();
        if !diff_ids.is_empty() {
            cfg_labels.insert(
                format!("containerd.io/gc.ref.snapshot.{SNAPSHOTTER}"),
                chain_id(diff_ids),
            );
        }
        self.backend
            .content_write(&config_desc, Bytes::from(config_bytes), cfg_labels)
            .await?;
        let mut man_labels = HashMap::from([(
            "containerd.io/gc.ref.content.config".to_string(),
            config_desc.digest.clone(),
        )]);
        for (i, l) in layers.iter().enumerate() {
            man_labels.insert(
                format!("containerd.io/gc.ref.content.l.{i}"),
                l.digest.clone(),
            );
        }
        self.backend
            .content_write(&manifest_desc, Bytes::from(manifest_bytes), man_labels)
            .await?;
        self.unpack(layers, diff_ids).await?;
        Ok(Stored {
            id: config_desc.digest,
            manifest: manifest_desc,
        })
    }

    /// Points `name` (a full reference, a dangling or a cache name) at `manifest`. An image
    /// that loses its last name this way stays as a dangling image.
    pub async fn name_image(&self, name: &str, manifest: &Descriptor) -> DaemonResult<()> {
        let previous = match self.backend.image_get(name).await {
            Ok(img) => Some(img.target),
            Err(e) if e.is_not_found() => None,
            Err(e) => return Err(e.into()),
        };
        let now = Some(Utc::now());
        self.backend
            .image_put(Image {
                name: name.into(),
                target: manifest.clone(),
                labels: HashMap::new(),
                created_at: now,
                updated_at: now,
            })
            .await?;
        if let Some(old) = previous.filter(|old| old.digest != manifest.digest) {
            if name.starts_with(BUILD_CACHE_PREFIX) {
                return Ok(());
            }
            let still_named =
                self.backend.image_list().await?.iter().any(|i| {
                    i.target.digest == old.digest && !i.name.starts_with(BUILD_CACHE_PREFIX)
                });
            if !still_named {
                self.backend
                    .image_put(Image {
                        name: format!("{DANGLING_PREFIX}{}", old.digest),
                        target: old,
                        labels: HashMap::new(),
                        created_at: now,
                        updated_at: now,
                    })
                    .await?;
            }
        }
        Ok(())
    }

    /// Names a new image: every tag, or a dangling name when there is none. A dangling
    /// name of the same manifest is dropped once it has a real name.
    pub async fn name_new_image(&self, stored: &Stored, names: &[String]) -> DaemonResult<()> {
        let dangling = format!("{DANGLING_PREFIX}{}", stored.manifest.digest);
        if names.is_empty() {
            return self.name_image(&dangling, &stored.manifest).await;
        }
        for n in names {
            self.name_image(n, &stored.manifest).await?;
        }
        match self.backend.image_delete(&dangling).await {
            Err(e) if !e.is_not_found() => Err(e.into()),
            _ => Ok(()),
        }
    }

    /// Records `parent` as the parent of image `id` (best effort: a missing parent only
    /// shows as an empty `Parent`).
    pub async fn set_image_parent(&self, id: &str, parent: &str) {
        if parent.is_empty() {
            return;
        }
        if let Err(error) = self
            .backend
            .content_set_label(id, PARENT_LABEL, parent)
            .await
        {
            tracing::warn!(image = %id, %error, "cannot record the image's parent");
        }
    }

    /// The parent [`Self::set_image_parent`] recorded, or empty.
    pub async fn image_parent(&self, id: &str) -> String {
        match self.backend.content_labels(id).await {
            Ok(mut labels) => labels.remove(PARENT_LABEL).unwrap_or_default(),
            Err(_) => String::new(),
        }
    }

    /// Records that a build reused the cache entry `name` (`LastUsedAt`, `UsageCount` in
    /// `system df -v`). Best effort: a build does not fail over its statistics.
    pub async fn mark_cache_used(&self, name: &str) {
        let marked = async {
            let mut img = self.backend.image_get(name).await?;
            let (_, n) = cache_uses(&img.labels);
            let now = Utc::now();
            img.labels.insert(
                CACHE_LAST_USED.into(),
                now.to_rfc3339_opts(chrono::SecondsFormat::Nanos, true),
            );
            img.labels.insert(CACHE_REUSES.into(), (n + 1).to_string());
            img.updated_at = Some(now);
            self.backend.image_put(img).await
        }
        .await;
        if let Err(error) = marked {
            tracing::warn!(%name, %error, "cannot record a build cache reuse");
        }
    }

    /// Gives a built image without tags a dangling name unless something already names it.
    pub async fn show_untagged(&self, manifest: &Descriptor) -> DaemonResult<()> {
        let named =
            self.backend.image_list().await?.iter().any(|i| {
                i.target.digest == manifest.digest && !i.name.starts_with(BUILD_CACHE_PREFIX)
            });
        if named {
            return Ok(());
        }
        self.name_image(&format!("{DANGLING_PREFIX}{}", manifest.digest), manifest)
            .await
    }
}
