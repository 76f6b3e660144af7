//! Images: `docker import` (blob, config and manifest into highd's content store, then
//! unpack into snapshots), listing, inspect and reference resolution.

use std::collections::{BTreeMap, HashMap};

use bytes::Bytes;
use chrono::{DateTime, SecondsFormat, Utc};
use serde_json::json;
use sha2::{Digest, Sha256};

use super::image_store::BUILD_CACHE_PREFIX;
use super::{DaemonError, DaemonResult};
use crate::backend::{Backend, Descriptor, Image};
use crate::refs::Reference;
use crate::spec::DEFAULT_PATH;
use crate::types::{ImageConfig, ImageRuntimeConfig, RootFs};

pub const MEDIA_LAYER_TAR: &str = "application/vnd.docker.image.rootfs.diff.tar";
pub const MEDIA_CONFIG: &str = "application/vnd.docker.container.image.v1+json";
pub const MEDIA_MANIFEST: &str = "application/vnd.docker.distribution.manifest.v2+json";
const MEDIA_OCI_MANIFEST: &str = "application/vnd.oci.image.manifest.v1+json";
/// dockerd's containerd image store names untagged images this way.
pub(super) const DANGLING_PREFIX: &str = "moby-dangling@";

#[derive(Debug, thiserror::Error)]
pub enum ImportError {
    #[error("decompress the imported archive: {source}")]
    Decompress { source: std::io::Error },
    #[error("the imported archive is not a tar file: {source}")]
    NotTar { source: std::io::Error },
    #[error("image {digest}: unsupported manifest media type {media_type}")]
    ManifestType { digest: String, media_type: String },
    #[error("image {digest}: decode {what}: {source}")]
    Decode {
        digest: String,
        what: &'static str,
        source: serde_json::Error,
    },
}

/// What a manifest and its config say about an image.
#[derive(Debug, Clone)]
pub(super) struct ParsedImage {
    id: String,
    config: ImageConfig,
    layers: Vec<Descriptor>,
    layer_sizes: Vec<i64>,
}

/// Parsed images by manifest digest. Content is immutable under its digest, so an entry
/// never goes stale; it saves `docker images` two content reads per image (the list is
/// then one highd call).
#[derive(Debug, Default)]
pub struct ImageCache {
    images: std::sync::Mutex<HashMap<String, ParsedImage>>,
    /// Unpacked sizes by layer blob digest: images share layers, and reading a blob
    /// to size it costs a full content read.
    layer_sizes: std::sync::Mutex<HashMap<String, i64>>,
}

/// Bounds the cache; past it the cache starts over.
const IMAGE_CACHE_MAX: usize = 4096;

impl ImageCache {
    fn get(&self, digest: &str) -> Option<ParsedImage> {
        self.images
            .lock()
            .unwrap_or_else(|e| e.into_inner())
            .get(digest)
            .cloned()
    }

    fn put(&self, digest: &str, image: ParsedImage) {
        let mut m = self.images.lock().unwrap_or_else(|e| e.into_inner());
        if m.len() >= IMAGE_CACHE_MAX {
            m.clear();
        }
        m.insert(digest.to_string(), image);
    }

    fn layer_size(&self, digest: &str) -> Option<i64> {
        let m = self.layer_sizes.lock().unwrap_or_else(|e| e.into_inner());
        m.get(digest).copied()
    }

    fn put_layer_size(&self, digest: &str, size: i64) {
        let mut m = self.layer_sizes.lock().unwrap_or_else(|e| e.into_inner());
        if m.len() >= IMAGE_CACHE_MAX {
            m.clear();
        }
        m.insert(digest.to_string(), size);
    }
}

/// An image as the engine sees it: names, ID (config digest), config and unpacked top.
#[derive(Debug, Clone)]
pub struct ImageView {
    pub names: Vec<String>,
    pub id: String,
    pub config: ImageConfig,
    pub target: Descriptor,
    pub layers: Vec<Descriptor>,
    /// Each layer's unpacked size (see [`unpacked_size`]), in `layers` order.
    pub layer_sizes: Vec<i64>,
    pub created_at: Option<DateTime<Utc>>,
}

impl ImageView {
    pub fn chain_id(&self) -> String {
        chain_id(&self.config.rootfs.diff_ids)
    }

    /// dockerd's image Size: the unpacked sizes of its layers, not their blob sizes.
    pub fn size(&self) -> i64 {
        self.layer_sizes.iter().sum()
    }

    /// Familiar tags (`busybox:latest`), dangling names excluded.
    pub fn repo_tags(&self) -> Vec<String> {
        let mut tags: Vec<String> = self
            .names
            .iter()
            .filter_map(|n| Reference::parse(n).ok())
            .filter(|r| r.tag.is_some())
            .map(|r| r.familiar())
            .collect();
        tags.sort();
        tags
    }

    pub fn runtime_config(&self) -> ImageRuntimeConfig {
        self.config.config.clone().unwrap_or_default()
    }
}

fn sha256(data: &[u8]) -> String {
    format!("sha256:{}", hex::encode(Sha256::digest(data)))
}

/// The snapshot name of a layer stack (OCI image spec "ChainID").
pub fn chain_id(diff_ids: &[String]) -> String {
    let mut iter = diff_ids.iter();
    let Some(first) = iter.next() else {
        return String::new();
    };
    iter.fold(first.clone(), |acc, d| {
        sha256(format!("{acc} {d}").as_bytes())
    })
}

fn go_arch() -> &'static str {
    match std::env::consts::ARCH {
        "x86_64" => "amd64",
        "aarch64" => "arm64",
        other => other,
    }
}

/// A layer's size as dockerd's overlay2 layer store records it (see [`tar_size`]): a
/// layer holding only a directory is 0B where its tar is 1.5kB. Plain and compressed
/// blobs are read.
///
/// [`tar_size`]: super::save_load::stream_io::tar_size
pub fn unpacked_size<R: std::io::Read>(blob: R) -> std::io::Result<i64> {
    use super::save_load::stream_io::{decompressed, sniff, tar_size};
    let mut raw = std::io::BufReader::with_capacity(64 << 10, blob);
    let compression = sniff(&mut raw)?;
    tar_size(decompressed(raw, compression))
}

/// Content label of a layer blob: its unpacked size in bytes, set when an image with the
/// layer is created (or, for layers stored before the label existed, when the layer is
/// first sized), so listings after an engine restart read a label, not the blob.
pub const LAYER_SIZE_LABEL: &str = "berth.layer.unpacked-size";

impl<B: Backend> super::Daemon<B> {
    /// `docker import`: returns the image ID (`sha256:<config digest>`).
    pub async fn import_image(&self, repo: &str, tag: &str, body: &[u8]) -> DaemonResult<String> {
        let body = futures::stream::iter([Ok(Bytes::copy_from_slice(body))]);
        self.import_image_with(repo, tag, body, "", &[]).await
    }

    /// `docker import -m MESSAGE --change ...`: the comment goes into the history entry,
    /// the (already validated) changes into the config. `body` streams into highd as
    /// it arrives.
    pub async fn import_image_with<S>(
        &self,
        repo: &str,
        tag: &str,
        body: S,
        message: &str,
        changes: &[crate::build::dockerfile::Instruction],
    ) -> DaemonResult<String>
    where
        S: futures::Stream<Item = std::io::Result<Bytes>> + Send + Unpin + 'static,
    {
        let work = self.import_unleased(repo, tag, body, message, changes);
        self.leased("import", work).await
    }

    async fn import_unleased<S>(
        &self,
        repo: &str,
        tag: &str,
        body: S,
        message: &str,
        changes: &[crate::build::dockerfile::Instruction],
    ) -> DaemonResult<String>
    where
        S: futures::Stream<Item = std::io::Result<Bytes>> + Send + Unpin + 'static,
    {
        let name = (|| -> DaemonResult<Option<String>> {
            if repo.is_empty() {
                return Ok(None);
            }
            let parsed = Reference::parse(repo)?;
            let parsed = if tag.is_empty() {
                parsed
            } else {
                parsed.with_tag(tag)?
            };
            Ok(Some(parsed.with_default_tag().to_string()))
        })();
        let name = match name {
            Ok(n) => n,
            Err(e) => {
                // The client gets the error, not a broken pipe, once its upload is read.
                let mut body = body;
                while let Some(Ok(_)) = futures::StreamExt::next(&mut body).await {}
                return Err(e);
            }
        };
        let layer = self.import_layer(body).await?;
        self.record_layer_size(&layer.digest, layer.unpacked).await;
        let diff_id = layer.diff_id.clone();
        let now = Utc::now().to_rfc3339_opts(SecondsFormat::Nanos, true);
        let config = ImageConfig {
            created: Some(now.clone()),
            architecture: go_arch().into(),
            os: "linux".into(),
            config: Some(ImageRuntimeConfig {
                env: vec![DEFAULT_PATH.into()],
                ..Default::default()
            }),
            rootfs: RootFs {
                kind: "layers".into(),
                diff_ids: vec![diff_id.clone()],
            },
            history: vec![json!({
                "created": now,
                "created_by": "",
                "comment": if message.is_empty() { "Imported from -" } else { message },
            })],
            extra: Default::default(),
        };
        let mut config = config;
        if !changes.is_empty() {
            let mut runtime = config.config.take().unwrap_or_default();
            let mut st = crate::build::meta::MetaState::default();
            let vars = crate::build::words::Vars(
                runtime
                    .env
                    .iter()
                    .filter_map(|e| e.split_once('='))
                    .map(|(k, v)| (k.to_string(), v.to_string()))
                    .collect(),
            );
            for c in changes {
                crate::build::meta::apply(c, &mut runtime, &mut st, &vars).map_err(|e| {
                    DaemonError::Build {
                        message: e.to_string(),
                    }
                })?;
            }
            config.config = Some(runtime);
        }
        // import_layer stores bzip2 and xz uploads decompressed: the layer has a type.
        let media_type = layer
            .compression
            .layer_media_type()
            .unwrap_or(MEDIA_LAYER_TAR);
        let layer_desc = Descriptor {
            media_type: media_type.into(),
            digest: layer.digest,
            size: layer.size as i64,
            annotations: HashMap::new(),
        };
        let stored = self.write_image(&config, &[layer_desc]).await?;
        let names: Vec<String> = name.into_iter().collect();
        self.name_new_image(&stored, &names).await?;
        self.event_log.image("import", &stored.id, repo.trim());
        Ok(stored.id)
    }

    /// Applies each layer on its parent and commits it under its chain ID, skipping
    /// layers that are already unpacked. Every layer's unpacked size is stored on its
    /// blob on the way (read beside the apply for a layer not sized yet).
    pub(crate) async fn unpack(
        &self,
        layers: &[Descriptor],
        diff_ids: &[String],
    ) -> DaemonResult<()> {
        let mut parent = String::new();
        for i in 0..layers.len() {
            let chain = chain_id(&diff_ids[..=i]);
            self.unpack_layer(&layers[i], &parent, &chain).await?;
            parent = chain;
        }
        Ok(())
    }

    /// Applies one layer on the snapshot `parent` and commits it as `chain`, unless
    /// that snapshot exists already.
    pub(crate) async fn unpack_layer(
        &self,
        layer: &Descriptor,
        parent: &str,
        chain: &str,
    ) -> DaemonResult<()> {
        if self.backend.snapshot_exists(chain).await? {
            self.layer_unpacked_size(layer).await;
            return Ok(());
        }
        let key = format!(
            "extract-{}-{chain}",
            Utc::now().timestamp_nanos_opt().unwrap_or(0)
        );
        let mounts = self
            .backend
            .snapshot_prepare(&key, parent, HashMap::new())
            .await?;
        let apply = async {
            self.backend.diff_apply(layer, mounts).await?;
            self.backend
                .snapshot_commit(chain, &key, HashMap::new())
                .await
        };
        // The stored size (a blob label) is counted beside the apply, not after it.
        let (applied, _) = tokio::join!(apply, self.layer_unpacked_size(layer));
        if let Err(e) = applied {
            // Leave nothing behind: the half-applied snapshot is useless.
            let _ = self.backend.snapshot_remove(&key).await;
            return Err(e.into());
        }
        Ok(())
    }

    async fn load_image(&self, image: &Image) -> DaemonResult<ImageView> {
        let digest = &image.target.digest;
        let view = |c: ParsedImage| ImageView {
            names: vec![image.name.clone()],
            id: c.id,
            config: c.config,
            target: image.target.clone(),
            layers: c.layers,
            layer_sizes: c.layer_sizes,
            created_at: image.created_at,
        };
        if let Some(c) = self.image_cache.get(digest) {
            return Ok(view(c));
        }
        let data = self.backend.content_read(digest).await?;
        #[derive(serde::Deserialize)]
        #[serde(rename_all = "camelCase")]
        struct Manifest {
            config: Desc,
            #[serde(default)]
            layers: Vec<Desc>,
        }
        #[derive(serde::Deserialize)]
        #[serde(rename_all = "camelCase")]
        struct Desc {
            media_type: String,
            digest: String,
            size: i64,
        }
        let mt = if image.target.media_type.is_empty() {
            MEDIA_MANIFEST
        } else {
            &image.target.media_type
        };
        if mt != MEDIA_MANIFEST && mt != MEDIA_OCI_MANIFEST {
            return Err(ImportError::ManifestType {
                digest: digest.clone(),
                media_type: mt.into(),
            }
            .into());
        }
        let decode = |what, source| ImportError::Decode {
            digest: digest.clone(),
            what,
            source,
        };
        let m: Manifest = serde_json::from_slice(&data).map_err(|e| decode("manifest", e))?;
        let cfg = self.backend.content_read(&m.config.digest).await?;
        let config: ImageConfig = serde_json::from_slice(&cfg).map_err(|e| decode("config", e))?;
        let desc = |d: Desc| Descriptor {
            media_type: d.media_type,
            digest: d.digest,
            size: d.size,
            annotations: HashMap::new(),
        };
        let layers: Vec<Descriptor> = m.layers.into_iter().map(desc).collect();
        let mut layer_sizes = Vec::with_capacity(layers.len());
        for l in &layers {
            layer_sizes.push(self.layer_unpacked_size(l).await);
        }
        let parsed = ParsedImage {
            id: m.config.digest.clone(),
            config,
            layers,
            layer_sizes,
        };
        self.image_cache.put(digest, parsed.clone());
        Ok(view(parsed))
    }

    /// Remembers a layer's unpacked size, found while its blob streamed in (load,
    /// import), and stores it on the blob.
    pub(crate) async fn record_layer_size(&self, digest: &str, size: i64) {
        self.image_cache.put_layer_size(digest, size);
        let stored = self
            .backend
            .content_set_label(digest, LAYER_SIZE_LABEL, &size.to_string())
            .await;
        if let Err(error) = stored {
            // The next engine reads the blob again; this one remembers the size.
            tracing::warn!(layer = %digest, %error, "cannot store the layer's size");
        }
    }

    /// The layer's unpacked size: remembered, or the blob's label, or (a layer stored
    /// without one) read from the blob once and then stored. A blob that cannot be read
    /// or parsed is logged and counted at its blob size, so one bad layer does not hide
    /// the image from listings.
    async fn layer_unpacked_size(&self, layer: &Descriptor) -> i64 {
        if let Some(size) = self.image_cache.layer_size(&layer.digest) {
            return size;
        }
        let labelled = match self.backend.content_labels(&layer.digest).await {
            Ok(labels) => labels
                .get(LAYER_SIZE_LABEL)
                .and_then(|v| v.parse::<i64>().ok()),
            Err(error) => {
                tracing::warn!(layer = %layer.digest, %error, "cannot size layer; using its blob size");
                return layer.size;
            }
        };
        if let Some(size) = labelled {
            self.image_cache.put_layer_size(&layer.digest, size);
            return size;
        }
        // Streamed: a layer may be gigabytes, and sizing must not hold it in memory.
        // Logged, so tests can tell a listing that read no blob.
        tracing::debug!(layer = %layer.digest, "sizing layer from its blob");
        let sized = match self.backend.content_read_stream(&layer.digest).await {
            Ok(chunks) => {
                let chunks = futures::StreamExt::map(chunks, |c| c.map_err(std::io::Error::other));
                let reader = super::save_load::stream_io::ChannelReader::spawn(chunks);
                match tokio::task::spawn_blocking(move || unpacked_size(reader)).await {
                    Ok(r) => r.map_err(|e| e.to_string()),
                    Err(e) => Err(e.to_string()),
                }
            }
            Err(e) => Err(e.to_string()),
        };
        match sized {
            Ok(size) => {
                self.record_layer_size(&layer.digest, size).await;
                size
            }
            Err(error) => {
                tracing::warn!(layer = %layer.digest, %error, "cannot size layer; using its blob size");
                layer.size
            }
        }
    }

    /// The image a manifest describes (no names).
    pub async fn view_of(&self, manifest: &Descriptor) -> DaemonResult<ImageView> {
        let mut v = self
            .load_image(&Image {
                target: manifest.clone(),
                ..Default::default()
            })
            .await?;
        v.names.clear();
        Ok(v)
    }

    /// The image highd stores under exactly `name` (a cache or dangling name), if any.
    pub async fn stored_image(&self, name: &str) -> DaemonResult<Option<ImageView>> {
        match self.backend.image_get(name).await {
            Ok(image) => self.load_image(&image).await.map(Some),
            Err(e) if e.is_not_found() => Ok(None),
            Err(e) => Err(e.into()),
        }
    }

    /// All images, one entry per image ID with every name pointing at it; the builder's
    /// cache images are left out.
    pub async fn list_images(&self) -> DaemonResult<Vec<ImageView>> {
        self.images_with(false).await
    }

    pub(crate) async fn images_with(&self, build_cache: bool) -> DaemonResult<Vec<ImageView>> {
        let mut by_id: BTreeMap<String, ImageView> = BTreeMap::new();
        for image in self.backend.image_list().await? {
            if !build_cache && image.name.starts_with(BUILD_CACHE_PREFIX) {
                continue;
            }
            let view = match self.load_image(&image).await {
                Ok(v) => v,
                Err(e) => {
                    tracing::warn!(image = %image.name, error = %e, "skipping unreadable image");
                    continue;
                }
            };
            by_id
                .entry(view.id.clone())
                .and_modify(|v| v.names.push(image.name.clone()))
                .or_insert(view);
        }
        Ok(by_id.into_values().collect())
    }

    /// Resolves a name (`busybox`, `busybox:1`, full name) or an image ID / ID prefix.
    pub async fn image(&self, reference: &str) -> DaemonResult<ImageView> {
        let parsed = Reference::parse(reference).map(Reference::with_default_tag);
        if let Ok(r) = &parsed {
            match self.backend.image_get(&r.to_string()).await {
                Ok(image) => return self.load_image(&image).await,
                Err(e) if e.is_not_found() => {}
                Err(e) => return Err(e.into()),
            }
        }
        let hex_part = reference.strip_prefix("sha256:").unwrap_or(reference);
        if !hex_part.is_empty() && hex_part.bytes().all(|b| b.is_ascii_hexdigit()) {
            let mut matches: Vec<ImageView> = self
                .images_with(true)
                .await?
                .into_iter()
                .filter(|v| v.id["sha256:".len()..].starts_with(hex_part))
                .collect();
            if matches.len() == 1 {
                return Ok(matches.remove(0));
            }
        }
        Err(DaemonError::NoSuchImage {
            reference: parsed
                .map(|r| r.familiar())
                .unwrap_or_else(|_| reference.into()),
        })
    }
}

#[cfg(test)]
mod size_tests {
    use std::io::Write;

    use super::unpacked_size;

    fn layer() -> Vec<u8> {
        let mut b = tar::Builder::new(Vec::new());
        let mut h = tar::Header::new_gnu();
        h.set_entry_type(tar::EntryType::Directory);
        h.set_size(0);
        h.set_mode(0o755);
        b.append_data(&mut h, "d", std::io::empty()).unwrap();
        for (name, len) in [("d/a", 1000usize), ("d/.wh.gone", 0)] {
            let mut h = tar::Header::new_gnu();
            h.set_size(len as u64);
            h.set_mode(0o644);
            b.append_data(&mut h, name, vec![b'x'; len].as_slice())
                .unwrap();
        }
        let mut h = tar::Header::new_gnu();
        h.set_entry_type(tar::EntryType::Symlink);
        h.set_size(0);
        b.append_link(&mut h, "d/l", "a").unwrap();
        b.into_inner().unwrap()
    }

    #[test]
    fn counts_file_bytes_and_symlink_targets_not_tar_bytes() {
        let tar = layer();
        assert!(tar.len() > 3000);
        // The file's 1000 bytes and the symlink's one-byte target.
        assert_eq!(unpacked_size(&tar[..]).unwrap(), 1001);
        let mut gz = flate2::write::GzEncoder::new(Vec::new(), flate2::Compression::fast());
        gz.write_all(&tar).unwrap();
        assert_eq!(unpacked_size(&gz.finish().unwrap()[..]).unwrap(), 1001);
        assert_eq!(unpacked_size(&[][..]).unwrap(), 0);
        assert!(unpacked_size(&[1u8; 600][..]).is_err());
    }
}
