//! `docker commit` (the container's snapshot diff as a new layer over its image) and
//! `docker history` (the image config's history with layer sizes).

use chrono::{DateTime, SecondsFormat, Utc};
use serde_json::{json, Value};

use super::images::{ImageView, MEDIA_LAYER_TAR};
use super::{Daemon, DaemonResult};
use crate::backend::Backend;
use crate::build::dockerfile::Instruction;
use crate::build::meta::{self, MetaState};
use crate::build::words::Vars;
use crate::refs::Reference;
use crate::types::{ContainerConfig, ImageConfig, ImageRuntimeConfig};

/// What `POST /commit` asks for besides the container.
#[derive(Debug, Clone, Default)]
pub struct CommitOptions {
    pub repo: String,
    pub tag: String,
    pub comment: String,
    pub author: String,
    /// Parsed `--change` instructions (validated by the caller).
    pub changes: Vec<Instruction>,
    /// Freeze a running container while its filesystem is read (dockerd's default).
    pub pause: bool,
}

/// The image-config subset of a container config (what dockerd keeps on commit).
pub fn runtime_from_container(c: &ContainerConfig) -> ImageRuntimeConfig {
    let mut r = ImageRuntimeConfig {
        user: c.user.clone(),
        env: c.env.clone(),
        entrypoint: c.entrypoint.clone(),
        cmd: c.cmd.clone(),
        working_dir: c.working_dir.clone(),
        labels: c.labels.clone(),
        stop_signal: c.stop_signal.clone(),
        extra: Default::default(),
    };
    for k in [
        "ExposedPorts",
        "Volumes",
        "Healthcheck",
        "OnBuild",
        "Shell",
        "ArgsEscaped",
    ] {
        if let Some(v) = c.extra.get(k).filter(|v| !v.is_null()) {
            r.extra.insert(k.into(), v.clone());
        }
    }
    r
}

pub fn now_rfc3339() -> String {
    Utc::now().to_rfc3339_opts(SecondsFormat::Nanos, true)
}

/// The full image name for `repo` + `tag` (`None` without a repo: a dangling image).
pub fn target_name(repo: &str, tag: &str) -> DaemonResult<Option<String>> {
    if repo.is_empty() {
        return Ok(None);
    }
    let r = Reference::parse(repo)?;
    let r = if tag.is_empty() { r } else { r.with_tag(tag)? };
    Ok(Some(r.with_default_tag().to_string()))
}

impl<B: Backend> Daemon<B> {
    /// `POST /commit`: returns the new image ID.
    pub async fn commit_container(
        &self,
        reference: &str,
        opts: CommitOptions,
    ) -> DaemonResult<String> {
        let rec = self.container(reference)?;
        // A bad name is refused before anything is paused, as dockerd's router does.
        let name = target_name(&opts.repo, &opts.tag)?;
        let pause = opts.pause
            && rec.state.status.is_running()
            && !rec.state.paused
            && !rec.state.restarting;
        // Like dockerd: a failed pause does not stop the commit, and the container is
        // thawed again whatever the commit's outcome.
        let paused = pause && {
            match self.pause_container(&rec.id).await {
                Ok(()) => true,
                Err(e) => {
                    tracing::warn!(id = %rec.id, error = %e, "pausing for commit failed");
                    false
                }
            }
        };
        let result = self.commit_record(&rec, name, opts).await;
        if paused {
            if let Err(e) = self.unpause_container(&rec.id).await {
                tracing::warn!(id = %rec.id, error = %e, "unpausing after commit failed");
            }
        }
        result
    }

    async fn commit_record(
        &self,
        rec: &crate::record::ContainerRecord,
        name: Option<String>,
        opts: CommitOptions,
    ) -> DaemonResult<String> {
        let parent = self.image(&rec.image).await?;
        let mut runtime = runtime_from_container(&rec.config);
        let mut st = MetaState::default();
        let vars = Vars(
            runtime
                .env
                .iter()
                .filter_map(|e| e.split_once('='))
                .map(|(k, v)| (k.to_string(), v.to_string()))
                .collect(),
        );
        for c in &opts.changes {
            // Validated by the caller: only metadata instructions get here.
            if let Err(e) = meta::apply(c, &mut runtime, &mut st, &vars) {
                return Err(super::DaemonError::Build {
                    message: e.to_string(),
                });
            }
        }
        let created_by = rec.config.cmd.as_slice().join(" ");
        let stored = self
            .commit_snapshot(
                &rec.snapshot_key,
                &parent,
                runtime,
                &opts.comment,
                |h| {
                    h["created_by"] = json!(created_by);
                    if !opts.comment.is_empty() {
                        h["comment"] = json!(opts.comment);
                    }
                    if !opts.author.is_empty() {
                        h["author"] = json!(opts.author);
                    }
                },
                &opts.author,
            )
            .await?;
        let names: Vec<String> = name.into_iter().collect();
        self.name_new_image(&stored, &names).await?;
        self.event_log.image(
            "commit",
            &stored.id,
            &names.first().cloned().unwrap_or_default(),
        );
        Ok(stored.id)
    }

    /// A temporary snapshot holding the tree of image layers `chain_id`, for comparing a
    /// snapshot of the copying snapshotter with (`docker diff`, commit); `None` for an
    /// image without layers (an empty tree). Removed with [`Self::drop_image_copy`].
    pub(crate) async fn image_copy(
        &self,
        for_key: &str,
        chain_id: &str,
    ) -> DaemonResult<Option<(String, Vec<crate::backend::Mount>)>> {
        if chain_id.is_empty() {
            return Ok(None);
        }
        let key = format!("diff-{for_key}-{}", rand::random::<u32>());
        let mounts = self
            .backend
            .snapshot_prepare(&key, chain_id, Default::default())
            .await?;
        Ok(Some((key, mounts)))
    }

    pub(crate) async fn drop_image_copy(&self, key: &str) {
        if let Err(e) = self.backend.snapshot_remove(key).await {
            tracing::warn!(%key, error = %e, "removing a temporary image copy failed");
        }
    }

    /// The changes in snapshot `key` as a new layer over `parent`, with `runtime` as the
    /// new config and one history entry (shaped by `history`).
    pub(crate) async fn commit_snapshot(
        &self,
        key: &str,
        parent: &ImageView,
        runtime: ImageRuntimeConfig,
        comment: &str,
        history: impl FnOnce(&mut Value),
        author: &str,
    ) -> DaemonResult<super::image_store::Stored> {
        let upper = self.backend.snapshot_mounts(key).await?;
        // An overlay upper dir is the change itself; a copying snapshotter's tree is whole,
        // so it is compared with a copy of the parent's (or deletions would be lost).
        let copy = match upper.first() {
            Some(m) if m.kind != "overlay" => self.image_copy(key, &parent.chain_id()).await?,
            _ => None,
        };
        let lower = copy.as_ref().map(|(_, m)| m.clone()).unwrap_or_default();
        let layer = self
            .backend
            .diff_create(lower, upper, MEDIA_LAYER_TAR)
            .await;
        if let Some((copy_key, _)) = &copy {
            self.drop_image_copy(copy_key).await;
        }
        let layer = layer?;
        let mut config = parent.config.clone();
        let now = now_rfc3339();
        config.created = Some(now.clone());
        config.config = Some(runtime);
        config.rootfs.kind = "layers".into();
        // An uncompressed tar's digest is its diff ID.
        config.rootfs.diff_ids.push(layer.digest.clone());
        let mut h = json!({ "created": now });
        history(&mut h);
        config.history.push(h);
        // moby's V1Image `comment` and `author`, shown by inspect.
        if comment.is_empty() {
            config.extra.remove("comment");
        } else {
            config.extra.insert("comment".into(), json!(comment));
        }
        if author.is_empty() {
            config.extra.remove("author");
        } else {
            config.extra.insert("author".into(), json!(author));
        }
        // moby's V1Image `docker_version`: dockerd records its own on commits and
        // legacy builds (inspect's DockerVersion).
        config
            .extra
            .insert("docker_version".into(), json!(crate::ENGINE_VERSION));
        let mut layers = parent.layers.clone();
        layers.push(layer);
        let stored = self.write_image(&config, &layers).await?;
        self.set_image_parent(&stored.id, &parent.id).await;
        Ok(stored)
    }

    /// `GET /images/{name}/history`: newest first, like dockerd.
    pub async fn image_history(&self, reference: &str) -> DaemonResult<Vec<Value>> {
        let img = self.image(reference).await?;
        let all = self.list_images().await?;
        let tags = all
            .iter()
            .find(|v| v.id == img.id)
            .map(ImageView::repo_tags)
            .unwrap_or_default();
        Ok(history_rows(&img.config, &img.layer_sizes, &img.id, tags))
    }
}

/// History entries paired with their layers' unpacked sizes (entries marked `empty_layer`
/// have no layer).
pub fn history_rows(
    config: &ImageConfig,
    layer_sizes: &[i64],
    id: &str,
    tags: Vec<String>,
) -> Vec<Value> {
    let mut layer_iter = layer_sizes.iter();
    let mut rows: Vec<Value> = config
        .history
        .iter()
        .map(|h| {
            let empty = h["empty_layer"].as_bool().unwrap_or(false);
            let size = if empty {
                0
            } else {
                layer_iter.next().copied().unwrap_or(0)
            };
            let created = h["created"]
                .as_str()
                .and_then(|c| DateTime::parse_from_rfc3339(c).ok())
                .map_or(0, |t| t.timestamp());
            json!({
                "Id": "<missing>",
                "Created": created,
                "CreatedBy": h["created_by"].as_str().unwrap_or(""),
                "Tags": null,
                "Size": size,
                "Comment": h["comment"].as_str().unwrap_or(""),
            })
        })
        .collect();
    rows.reverse();
    if let Some(top) = rows.first_mut() {
        top["Id"] = json!(id);
        top["Tags"] = json!(tags);
    }
    rows
}
