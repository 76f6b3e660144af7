//! `docker save` (a docker-archive with manifest.json and repositories that is also an
//! OCI image layout with index.json, as dockerd 25+ writes) and `docker load` (either
//! format), plus `docker image prune`.

use std::collections::{BTreeMap, HashMap, HashSet};
use std::io::Read;

use bytes::Bytes;
use serde_json::{json, Value};

use super::image_ops::ImageDeleted;
use super::image_store::sha256_digest;
use super::images::MEDIA_LAYER_TAR;
use super::{Daemon, DaemonError, DaemonResult};
use crate::backend::{Backend, Descriptor};
use crate::refs::Reference;
use crate::types::ImageConfig;

#[derive(Debug, thiserror::Error)]
pub enum ArchiveError {
    #[error("invalid image archive: {message}")]
    Invalid { message: String },
    #[error("invalid image archive: {path} is missing")]
    Missing { path: String },
    #[error(
        "invalid image archive: layer {path} has diff ID {actual}, the config says {expected}"
    )]
    DiffId {
        path: String,
        actual: String,
        expected: String,
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

fn add_file(tar: &mut tar::Builder<Vec<u8>>, path: &str, data: &[u8]) -> DaemonResult<()> {
    let mut h = tar::Header::new_gnu();
    h.set_size(data.len() as u64);
    h.set_mode(0o644);
    h.set_mtime(0);
    h.set_entry_type(tar::EntryType::Regular);
    tar.append_data(&mut h, path, data)
        .map_err(|source| DaemonError::Archive(ArchiveError::Write { source }))
}

/// Uncompressed bytes of a layer blob (plain, gzip or zstd tar).
fn uncompressed(data: Vec<u8>, path: &str) -> DaemonResult<Vec<u8>> {
    let mut out = Vec::new();
    let read = if data.starts_with(&berth_fsutil::zstd::MAGIC) {
        berth_fsutil::zstd::ZstdReader::new(data.as_slice()).read_to_end(&mut out)
    } else if data.starts_with(&[0x1f, 0x8b]) {
        flate2::read::MultiGzDecoder::new(data.as_slice()).read_to_end(&mut out)
    } else {
        return Ok(data);
    };
    read.map_err(|e| invalid(format!("decompress {path}: {e}")))?;
    Ok(out)
}

impl<B: Backend> Daemon<B> {
    /// `GET /images/get?names=...`: the archive bytes.
    pub async fn save_images(&self, refs: &[String]) -> DaemonResult<Vec<u8>> {
        let mut tar = tar::Builder::new(Vec::new());
        let mut written: HashSet<String> = HashSet::new();
        let mut manifests = Vec::new();
        let mut index = Vec::new();
        let mut repositories: BTreeMap<String, BTreeMap<String, String>> = BTreeMap::new();
        for r in refs {
            let img = self.image(r).await?;
            // A name saves that tag; an ID saves the image without names, like dockerd.
            let tag = Reference::parse(r)
                .ok()
                .map(Reference::with_default_tag)
                .filter(|p| img.names.contains(&p.to_string()));
            let mut blobs = vec![img.target.digest.clone(), img.id.clone()];
            blobs.extend(img.layers.iter().map(|l| l.digest.clone()));
            for d in blobs {
                if written.insert(d.clone()) {
                    let data = self.backend.content_read(&d).await?;
                    add_file(&mut tar, &blob_path(&d), &data)?;
                }
            }
            let layers: Vec<String> = img.layers.iter().map(|l| blob_path(&l.digest)).collect();
            let repo_tags: Vec<String> = tag.iter().map(Reference::familiar).collect();
            manifests.push(json!({
                "Config": blob_path(&img.id),
                "RepoTags": repo_tags,
                "Layers": layers,
            }));
            let mut entry = json!({
                "mediaType": img.target.media_type,
                "digest": img.target.digest,
                "size": img.target.size,
            });
            if let Some(t) = &tag {
                entry["annotations"] = json!({
                    "io.containerd.image.name": t.to_string(),
                    "org.opencontainers.image.ref.name": t.tag.clone().unwrap_or_default(),
                });
                if let Some(top) = img.layers.last() {
                    let fam = t.familiar();
                    let repo = fam.rsplit_once(':').map_or(fam.as_str(), |(n, _)| n);
                    repositories.entry(repo.to_string()).or_default().insert(
                        t.tag.clone().unwrap_or_default(),
                        top.digest.trim_start_matches("sha256:").to_string(),
                    );
                }
            }
            index.push(entry);
        }
        add_file(&mut tar, "oci-layout", br#"{"imageLayoutVersion":"1.0.0"}"#)?;
        let index = json!({
            "schemaVersion": 2,
            "mediaType": "application/vnd.oci.image.index.v1+json",
            "manifests": index,
        });
        add_file(&mut tar, "index.json", index.to_string().as_bytes())?;
        add_file(
            &mut tar,
            "manifest.json",
            json!(manifests).to_string().as_bytes(),
        )?;
        if !repositories.is_empty() {
            add_file(
                &mut tar,
                "repositories",
                json!(repositories).to_string().as_bytes(),
            )?;
        }
        tar.into_inner()
            .map_err(|source| DaemonError::Archive(ArchiveError::Write { source }))
    }

    /// `POST /images/load`: returns dockerd's lines (`Loaded image: busybox:latest`).
    pub async fn load_images(&self, body: &[u8]) -> DaemonResult<Vec<String>> {
        self.leased("load", self.load_unleased(body)).await
    }

    async fn load_unleased(&self, body: &[u8]) -> DaemonResult<Vec<String>> {
        let files = read_archive(body)?;
        let get = |p: &str| -> DaemonResult<Vec<u8>> {
            files
                .get(p.trim_start_matches("./"))
                .cloned()
                .ok_or_else(|| DaemonError::Archive(ArchiveError::Missing { path: p.into() }))
        };
        // (config path, layer paths, names)
        let mut wanted: Vec<(String, Vec<String>, Vec<String>)> = Vec::new();
        if let Some(m) = files.get("manifest.json") {
            let list: Vec<Value> =
                serde_json::from_slice(m).map_err(|e| invalid(format!("manifest.json: {e}")))?;
            for e in list {
                let config = e["Config"].as_str().unwrap_or("").to_string();
                let strs = |v: &Value| -> Vec<String> {
                    v.as_array()
                        .map(|a| {
                            a.iter()
                                .filter_map(|x| x.as_str().map(String::from))
                                .collect()
                        })
                        .unwrap_or_default()
                };
                wanted.push((config, strs(&e["Layers"]), strs(&e["RepoTags"])));
            }
        } else if let Some(i) = files.get("index.json") {
            let index: Value =
                serde_json::from_slice(i).map_err(|e| invalid(format!("index.json: {e}")))?;
            let mut queue: Vec<Value> = index["manifests"].as_array().cloned().unwrap_or_default();
            while let Some(desc) = queue.pop() {
                let digest = desc["digest"].as_str().unwrap_or("");
                let m: Value = serde_json::from_slice(&get(&blob_path(digest))?)
                    .map_err(|e| invalid(format!("manifest {digest}: {e}")))?;
                if let Some(children) = m["manifests"].as_array() {
                    // An index: the entry for this platform (or the first).
                    let arch = crate::build::exec::Img::scratch().config.architecture;
                    let pick = children
                        .iter()
                        .find(|c| c["platform"]["architecture"] == arch.as_str())
                        .or_else(|| children.first());
                    if let Some(c) = pick {
                        let mut c = c.clone();
                        c["annotations"] = desc["annotations"].clone();
                        queue.push(c);
                    }
                    continue;
                }
                let name = desc["annotations"]["io.containerd.image.name"]
                    .as_str()
                    .or_else(|| desc["annotations"]["org.opencontainers.image.ref.name"].as_str())
                    .filter(|n| Reference::parse(n).is_ok())
                    .map(|n| vec![n.to_string()])
                    .unwrap_or_default();
                let layers = m["layers"]
                    .as_array()
                    .map(|a| {
                        a.iter()
                            .map(|l| blob_path(l["digest"].as_str().unwrap_or("")))
                            .collect()
                    })
                    .unwrap_or_default();
                let config = blob_path(m["config"]["digest"].as_str().unwrap_or(""));
                wanted.push((config, layers, name));
            }
        } else {
            return Err(invalid("neither manifest.json nor index.json found"));
        }
        let mut out = Vec::new();
        for (config_path, layer_paths, names) in wanted {
            let config_bytes = get(&config_path)?;
            let config: ImageConfig = serde_json::from_slice(&config_bytes)
                .map_err(|e| invalid(format!("{config_path}: {e}")))?;
            if config.rootfs.diff_ids.len() != layer_paths.len() {
                return Err(invalid(format!(
                    "{config_path} lists {} layers, the manifest {}",
                    config.rootfs.diff_ids.len(),
                    layer_paths.len()
                )));
            }
            let mut layers = Vec::new();
            for (path, expected) in layer_paths.iter().zip(&config.rootfs.diff_ids) {
                let data = uncompressed(get(path)?, path)?;
                let diff_id = sha256_digest(&data);
                if &diff_id != expected {
                    return Err(DaemonError::Archive(ArchiveError::DiffId {
                        path: path.clone(),
                        actual: diff_id,
                        expected: expected.clone(),
                    }));
                }
                let desc = Descriptor {
                    media_type: MEDIA_LAYER_TAR.into(),
                    digest: diff_id,
                    size: data.len() as i64,
                    annotations: HashMap::new(),
                };
                self.backend
                    .content_write(&desc, Bytes::from(data), HashMap::new())
                    .await?;
                layers.push(desc);
            }
            let diff_ids = config.rootfs.diff_ids.clone();
            let stored = self
                .write_image_raw(config_bytes, &diff_ids, &layers)
                .await?;
            let mut full = Vec::new();
            for n in &names {
                full.push(Reference::parse(n)?.with_default_tag());
            }
            let full_names: Vec<String> = full.iter().map(ToString::to_string).collect();
            self.name_new_image(&stored, &full_names).await?;
            if full.is_empty() {
                out.push(format!("Loaded image ID: {}", stored.id));
            }
            for r in full {
                self.event_log.image("load", &stored.id, &r.familiar());
                out.push(format!("Loaded image: {}", r.familiar()));
            }
        }
        Ok(out)
    }

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

/// Every regular file of the archive by its path (`./` stripped).
fn read_archive(body: &[u8]) -> DaemonResult<HashMap<String, Vec<u8>>> {
    let reader: Box<dyn Read> = if body.starts_with(&[0x1f, 0x8b]) {
        Box::new(flate2::read::MultiGzDecoder::new(body))
    } else {
        Box::new(body)
    };
    let mut archive = tar::Archive::new(reader);
    let mut files = HashMap::new();
    let entries = archive
        .entries()
        .map_err(|e| invalid(format!("not a tar archive: {e}")))?;
    for entry in entries {
        let mut entry = entry.map_err(|e| invalid(format!("not a tar archive: {e}")))?;
        if !entry.header().entry_type().is_file() {
            continue;
        }
        let path = entry
            .path()
            .map_err(|e| invalid(e.to_string()))?
            .to_string_lossy()
            .trim_start_matches("./")
            .to_string();
        let mut data = Vec::new();
        entry
            .read_to_end(&mut data)
            .map_err(|e| invalid(format!("read {path}: {e}")))?;
        files.insert(path, data);
    }
    Ok(files)
}
