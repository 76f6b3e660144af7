//! `docker pull`: resolve the manifest (through an index for this platform), download
//! and verify config and layers into highd's content store, unpack, then name the image.
//! It runs under a highd lease (`Daemon::leased`), so GC cannot take blobs before the
//! image names them. The image name is written last, so a failed pull leaves no image
//! behind; blobs it already wrote are unreferenced once the lease is gone, and highd's
//! garbage collector reclaims them.

use std::collections::HashMap;

use bytes::{Bytes, BytesMut};
use chrono::Utc;
use http::StatusCode;
use serde_json::{json, Value};
use tokio::sync::mpsc;

use super::client::{Client, Fetched};
use super::manifest::{self, Desc, Document};
use super::{Credentials, RegistryError};
use crate::backend::{Backend, Descriptor, Image};
use crate::daemon::{chain_id, Daemon};
use crate::refs::Reference;
use crate::types::ImageConfig;

const SNAPSHOTTER: &str = "overlayfs";
/// Manifests and configs are small; anything bigger is not one.
const DOC_LIMIT: u64 = 8 << 20;

pub struct PullOptions {
    pub reference: Reference,
    pub creds: Option<Credentials>,
}

/// Progress lines as docker's `jsonmessage` renders them.
struct Progress<'a>(&'a mpsc::Sender<Value>);

impl Progress<'_> {
    async fn send(&self, v: Value) {
        // A client that went away stops reading; the pull still completes.
        let _ = self.0.send(v).await;
    }
    async fn status(&self, status: &str) {
        self.send(json!({ "status": status })).await;
    }
    async fn layer(&self, id: &str, status: &str) {
        self.send(json!({"status": status, "progressDetail": {}, "id": id}))
            .await;
    }
}

fn short(digest: &str) -> &str {
    let hex = digest.split_once(':').map_or(digest, |(_, h)| h);
    &hex[..hex.len().min(12)]
}

fn status_error(f: &Fetched, url: String) -> RegistryError {
    RegistryError::Status {
        url,
        status: f.status.as_u16(),
        message: f.status.canonical_reason().unwrap_or("").into(),
    }
}

/// Fetches a manifest by tag or digest; returns its bytes, digest and content type.
async fn fetch_manifest(
    c: &mut Client,
    r: &Reference,
    reference: &str,
) -> Result<(Bytes, String, String), RegistryError> {
    // A 401 must not reach the docker CLI as one: it would prompt for a login.
    let f = match c.get("manifests", reference, manifest::ACCEPT).await {
        Err(RegistryError::Unauthorized { .. }) => {
            return Err(RegistryError::AccessDenied { repo: r.name() })
        }
        other => other?,
    };
    match f.status {
        s if s.is_success() => {}
        StatusCode::NOT_FOUND => {
            return Err(RegistryError::NotFound {
                reference: r.familiar(),
            })
        }
        StatusCode::UNAUTHORIZED | StatusCode::FORBIDDEN => {
            return Err(RegistryError::AccessDenied { repo: r.name() })
        }
        _ => {
            let url = format!("{}/v2/{}/manifests/{reference}", c.base_url(), r.path);
            return Err(status_error(&f, url));
        }
    }
    let ct = f
        .headers
        .get(http::header::CONTENT_TYPE)
        .and_then(|v| v.to_str().ok())
        .unwrap_or("")
        .to_string();
    // By tag, the registry's own digest header is what the bytes must match.
    let announced = f
        .headers
        .get("Docker-Content-Digest")
        .and_then(|v| v.to_str().ok())
        .map(str::to_string);
    let data = f.read_all(DOC_LIMIT, |_| {}).await?;
    let digest = if reference.starts_with("sha256:") {
        manifest::verify(reference, &data)?;
        reference.to_string()
    } else if let Some(announced) = announced.filter(|a| a.starts_with("sha256:")) {
        manifest::verify(&announced, &data)?;
        announced
    } else {
        manifest::sha256(&data)
    };
    Ok((data, digest, ct))
}

/// How often a blob download cut mid-body is resumed before the pull fails.
const RESUMES: u32 = 3;

/// Downloads one blob and checks its size and digest before anyone sees it. A transfer
/// that breaks after some bytes arrived is resumed with a `Range` request from there
/// (a registry that answers 200 instead of 206 sends the whole blob again).
async fn fetch_blob(
    c: &mut Client,
    desc: &Desc,
    progress: Option<&Progress<'_>>,
) -> Result<Bytes, RegistryError> {
    let total = u64::try_from(desc.size).unwrap_or(0);
    let id = short(&desc.digest).to_string();
    let mut last = 0u64;
    let mut buf = BytesMut::new();
    let mut resumes = 0;
    loop {
        let offset = buf.len() as u64;
        let f = c.get_from("blobs", &desc.digest, "", offset).await?;
        if !f.status.is_success() {
            let url = format!("{}/v2/{}/blobs/{}", c.base_url(), c.repo(), desc.digest);
            return Err(status_error(&f, url));
        }
        if offset > 0 && f.status != StatusCode::PARTIAL_CONTENT {
            buf.clear();
        }
        let read = f
            .read_into(&mut buf, total, |n| {
                // About every 512 KiB, not every frame; a progress line that does not
                // fit in the channel right now is dropped rather than stalling the pull.
                if let Some(p) = progress.filter(|_| n.saturating_sub(last) >= 512 << 10) {
                    last = n;
                    let _ = p.0.try_send(json!({"status": "Downloading",
                        "progressDetail": {"current": n, "total": total}, "id": id}));
                }
            })
            .await;
        match read {
            Ok(()) => break,
            Err(RegistryError::Transfer { message })
                if resumes < RESUMES && buf.len() as u64 > offset =>
            {
                resumes += 1;
                tracing::info!(digest = %desc.digest, at = buf.len(), error = %message, "blob download broke; resuming");
            }
            Err(e) => return Err(e),
        }
    }
    let data = buf.freeze();
    if let Some(p) = progress {
        p.layer(&id, "Verifying Checksum").await;
    }
    if data.len() as u64 != total {
        return Err(RegistryError::SizeMismatch {
            digest: desc.digest.clone(),
            expected: desc.size,
            actual: data.len() as u64,
        });
    }
    manifest::verify(&desc.digest, &data)?;
    Ok(data)
}

fn descriptor(d: &Desc) -> Descriptor {
    Descriptor {
        media_type: d.media_type.clone(),
        digest: d.digest.clone(),
        size: d.size,
        annotations: HashMap::new(),
    }
}

/// Pulls `opts.reference`, sending progress lines to `tx`; returns the manifest digest.
pub async fn pull<B: Backend>(
    d: &Daemon<B>,
    opts: PullOptions,
    tx: &mpsc::Sender<Value>,
) -> Result<String, RegistryError> {
    let r = &opts.reference;
    let p = Progress(tx);
    let mut c = Client::new(&r.domain, &r.path, opts.creds)?;
    let wanted = r
        .digest
        .clone()
        .or_else(|| r.tag.clone())
        .unwrap_or_else(|| "latest".into());
    let (data, top_digest, ct) = fetch_manifest(&mut c, r, &wanted).await?;
    let (os, arch) = manifest::host_platform();
    let (data, digest, doc) = match manifest::parse(&data, &ct)? {
        Document::Index { manifests } => {
            let chosen = manifest::select(&manifests, os, arch).ok_or_else(|| {
                RegistryError::NoPlatform {
                    platform: format!("{os}/{arch}"),
                }
            })?;
            let (data, digest, ct) = fetch_manifest(&mut c, r, &chosen.digest).await?;
            let doc = manifest::parse(&data, &ct)?;
            (data, digest, doc)
        }
        doc => (data, top_digest.clone(), doc),
    };
    let Document::Image {
        media_type,
        config,
        layers,
    } = doc
    else {
        return Err(RegistryError::UnsupportedManifest {
            media_type: "an index inside an index".into(),
        });
    };
    p.send(json!({"status": format!("Pulling from {}", r.path), "id": wanted}))
        .await;
    let config_bytes = fetch_blob(&mut c, &config, None).await?;
    let image_config: ImageConfig =
        serde_json::from_slice(&config_bytes).map_err(|e| RegistryError::Decode {
            what: "image config",
            message: e.to_string(),
        })?;
    let diff_ids = image_config.rootfs.diff_ids.clone();
    if diff_ids.len() != layers.len() {
        return Err(RegistryError::LayerCount {
            diff_ids: diff_ids.len(),
            layers: layers.len(),
        });
    }
    let b = &d.backend;
    let mut present = Vec::with_capacity(layers.len());
    for (i, l) in layers.iter().enumerate() {
        let unpacked = b.snapshot_exists(&chain_id(&diff_ids[..=i])).await?;
        present.push(unpacked);
        let status = if unpacked {
            "Already exists"
        } else {
            "Pulling fs layer"
        };
        p.layer(short(&l.digest), status).await;
    }
    for (l, unpacked) in layers.iter().zip(&present) {
        if *unpacked {
            continue;
        }
        let blob = fetch_blob(&mut c, l, Some(&p)).await?;
        p.layer(short(&l.digest), "Download complete").await;
        b.content_write(&descriptor(l), blob, HashMap::new())
            .await?;
    }
    let top_chain = chain_id(&diff_ids);
    let cfg_labels = HashMap::from([(
        format!("containerd.io/gc.ref.snapshot.{SNAPSHOTTER}"),
        top_chain,
    )]);
    b.content_write(&descriptor(&config), config_bytes, cfg_labels)
        .await?;
    let mut man_labels = HashMap::from([(
        "containerd.io/gc.ref.content.config".to_string(),
        config.digest.clone(),
    )]);
    for (i, l) in layers.iter().enumerate() {
        man_labels.insert(
            format!("containerd.io/gc.ref.content.l.{i}"),
            l.digest.clone(),
        );
    }
    let manifest_desc = Descriptor {
        media_type: media_type.clone(),
        digest: digest.clone(),
        size: data.len() as i64,
        annotations: HashMap::new(),
    };
    b.content_write(&manifest_desc, data, man_labels).await?;
    let layer_descs: Vec<Descriptor> = layers.iter().map(descriptor).collect();
    for (l, unpacked) in layers.iter().zip(&present) {
        if !*unpacked {
            p.layer(short(&l.digest), "Extracting").await;
        }
    }
    d.unpack(&layer_descs, &diff_ids).await?;
    for (l, unpacked) in layers.iter().zip(&present) {
        if !*unpacked {
            p.layer(short(&l.digest), "Pull complete").await;
        }
    }
    let name = r.to_string();
    let up_to_date = match b.image_get(&name).await {
        Ok(old) => old.target.digest == manifest_desc.digest,
        Err(e) if e.is_not_found() => false,
        Err(e) => return Err(e.into()),
    };
    let now = Some(Utc::now());
    b.image_put(Image {
        name,
        target: manifest_desc.clone(),
        labels: HashMap::new(),
        created_at: now,
        updated_at: now,
    })
    .await?;
    d.record_repo_digest(r, &top_digest, &manifest_desc).await?;
    // So a later push to another repository of this registry can mount the blobs.
    let mut blobs: Vec<&str> = layers.iter().map(|l| l.digest.as_str()).collect();
    blobs.push(&config.digest);
    super::sources::record(&d.config.data_root, c.host(), &r.path, &blobs).await;
    d.event_log.image("pull", &r.familiar(), &r.familiar());
    p.status(&format!("Digest: {top_digest}")).await;
    let verb = if up_to_date {
        "Image is up to date for"
    } else {
        "Downloaded newer image for"
    };
    p.status(&format!("Status: {verb} {}", r.familiar())).await;
    Ok(top_digest)
}

#[cfg(test)]
#[path = "pull_tests.rs"]
mod tests;
