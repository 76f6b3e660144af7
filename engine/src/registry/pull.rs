//! `docker pull`: resolve the manifest (through an index for this platform, and for
//! Docker Hub references through the configured mirrors first), download up to
//! `max-concurrent-downloads` layers at once into highd's content store (`download.rs`)
//! while the ones already there are applied in order, then name the image.
//! It runs under a highd lease (`Daemon::leased`), so GC cannot take blobs before the
//! image names them. The image name is written last, so a failed pull leaves no image
//! behind; blobs it already wrote are unreferenced once the lease is gone, and highd's
//! garbage collector reclaims them.

use std::collections::HashMap;

use bytes::Bytes;
use chrono::Utc;
use futures::StreamExt;
use http::StatusCode;
use serde_json::{json, Value};
use tokio::sync::mpsc;

use super::client::Client;
use super::download::{self, short, status_error};
use super::manifest::{self, Desc, Document};
use super::{settings, Credentials, RegistryError};
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
        download::send(self.0, id, status).await;
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

/// Reads a small blob (the image config) and checks its size and digest.
async fn fetch_small(c: &mut Client, desc: &Desc) -> Result<Bytes, RegistryError> {
    let f = c.get("blobs", &desc.digest, "").await?;
    if !f.status.is_success() {
        let url = format!("{}/v2/{}/blobs/{}", c.base_url(), c.repo(), desc.digest);
        return Err(status_error(&f, url));
    }
    let data = f.read_all(DOC_LIMIT, |_| {}).await?;
    if data.len() as i64 != desc.size {
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

/// The client and manifest of the first endpoint that has the reference: for Docker
/// Hub references each `registry-mirrors` entry in turn, then Docker Hub itself, as
/// dockerd falls back from a mirror that fails.
async fn resolve(
    r: &Reference,
    creds: Option<Credentials>,
    wanted: &str,
) -> Result<(Client, Bytes, String, String), RegistryError> {
    if r.domain == "docker.io" {
        for m in &settings::get().mirrors {
            let mirror = Client::mirror(m, &r.path, creds.clone());
            let attempt = match mirror {
                Ok(mut c) => fetch_manifest(&mut c, r, wanted).await.map(|m| (c, m)),
                Err(e) => Err(e),
            };
            match attempt {
                Ok((c, (data, digest, ct))) => return Ok((c, data, digest, ct)),
                Err(e) => {
                    tracing::info!(mirror = %m.host, error = %e, "mirror failed; trying the next endpoint")
                }
            }
        }
    }
    let mut c = Client::new(&r.domain, &r.path, creds)?;
    let (data, digest, ct) = fetch_manifest(&mut c, r, wanted).await?;
    Ok((c, data, digest, ct))
}

/// Pulls `opts.reference`, sending progress lines to `tx`; returns the manifest digest.
pub async fn pull<B: Backend>(
    d: &Daemon<B>,
    opts: PullOptions,
    tx: &mpsc::Sender<Value>,
) -> Result<String, RegistryError> {
    let r = &opts.reference;
    let p = Progress(tx);
    let wanted = r
        .digest
        .clone()
        .or_else(|| r.tag.clone())
        .unwrap_or_else(|| "latest".into());
    let (mut c, data, top_digest, ct) = resolve(r, opts.creds, &wanted).await?;
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
    let config_bytes = fetch_small(&mut c, &config).await?;
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
    fetch_and_unpack(d, &c, &layers, &diff_ids, &present, tx).await?;
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

/// Downloads the layers not `present`, up to `max-concurrent-downloads` at once (the
/// rest announced as "Waiting"), and applies each layer as soon as it and all below it
/// are in, in order. All of it runs on the pull's task, so every highd call carries
/// the pull's lease.
async fn fetch_and_unpack<B: Backend>(
    d: &Daemon<B>,
    c: &Client,
    layers: &[Desc],
    diff_ids: &[String],
    present: &[bool],
    tx: &mpsc::Sender<Value>,
) -> Result<(), RegistryError> {
    let max = settings::get().max_concurrent_downloads.max(1);
    let needed: Vec<usize> = (0..layers.len()).filter(|&i| !present[i]).collect();
    for &i in needed.iter().skip(max) {
        download::send(tx, short(&layers[i].digest), "Waiting").await;
    }
    let (done_tx, mut done_rx) = mpsc::unbounded_channel::<usize>();
    let producer = async move {
        let mut downloads = futures::stream::iter(needed)
            .map(|i| async move {
                let l = &layers[i];
                download::download(&*d.backend, c.clone(), l, tx).await?;
                download::send(tx, short(&l.digest), "Download complete").await;
                Ok::<_, RegistryError>(i)
            })
            .buffer_unordered(max);
        while let Some(i) = downloads.next().await {
            // The consumer only stops early on an error, which ends the pull anyway.
            let _ = done_tx.send(i?);
        }
        Ok::<_, RegistryError>(())
    };
    let consumer = async {
        let mut ready = vec![false; layers.len()];
        let mut parent = String::new();
        for (i, l) in layers.iter().enumerate() {
            let chain = chain_id(&diff_ids[..=i]);
            if !present[i] {
                while !ready[i] {
                    let j = done_rx.recv().await.ok_or(RegistryError::Transfer {
                        message: format!("the download of {} ended without a result", l.digest),
                    })?;
                    ready[j] = true;
                }
                let id = short(&l.digest);
                let size = l.size;
                let extracting = |current: i64| {
                    json!({"status": "Extracting",
                        "progressDetail": {"current": current, "total": size}, "id": id})
                };
                let _ = tx.send(extracting(0)).await;
                d.unpack_layer(&descriptor(l), &parent, &chain).await?;
                let _ = tx.send(extracting(size)).await;
                download::send(tx, id, "Pull complete").await;
            }
            parent = chain;
        }
        Ok::<_, RegistryError>(())
    };
    tokio::try_join!(producer, consumer)?;
    Ok(())
}

#[cfg(test)]
#[path = "pull_tests.rs"]
mod tests;
