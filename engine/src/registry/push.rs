//! `docker push`: one tag, or with no tag (`docker push -a`) every tag of the repository.
//! For each, the image's layers go up as blobs at most `max-concurrent-uploads` at a time
//! (see [`super::upload`]), then its config, then its manifest, byte for byte as highd
//! stores it, so the pushed digest is the local one. The manifest is only sent once every
//! blob it names is in the registry.

use std::sync::atomic::{AtomicUsize, Ordering};

use bytes::Bytes;
use http::{Method, StatusCode};
use serde_json::{json, Value};
use tokio::sync::{mpsc, Semaphore};

use super::client::{Call, Client};
use super::upload::{self, Blob, Outcome};
use super::{Credentials, RegistryError};
use crate::backend::Backend;
use crate::daemon::{Daemon, DaemonError, ImageView};
use crate::refs::Reference;

/// dockerd's default `max-concurrent-uploads`.
pub const DEFAULT_MAX_CONCURRENT_UPLOADS: usize = 5;

static MAX_UPLOADS: AtomicUsize = AtomicUsize::new(DEFAULT_MAX_CONCURRENT_UPLOADS);

/// Sets how many layers one push uploads at once (`--max-concurrent-uploads`).
pub fn set_max_concurrent_uploads(n: usize) {
    MAX_UPLOADS.store(n.max(1), Ordering::Relaxed);
}

pub struct PushOptions {
    /// Where the image goes (`127.0.0.1:5000/busybox:1`); no tag: every tag of the name.
    pub reference: Reference,
    pub creds: Option<Credentials>,
}

fn short(digest: &str) -> &str {
    let hex = digest.split_once(':').map_or(digest, |(_, h)| h);
    &hex[..hex.len().min(12)]
}

fn upstream(message: String) -> RegistryError {
    RegistryError::Upstream { message }
}

/// The tags to push and their images, in dockerd's (lexical) order.
async fn targets<B: Backend>(
    d: &Daemon<B>,
    r: &Reference,
) -> Result<Vec<(Reference, ImageView)>, RegistryError> {
    if r.digest.is_some() {
        return Err(upstream("cannot push a digest reference".into()));
    }
    let name = r.name();
    let mut tagged: Vec<Reference> = d
        .backend
        .image_list()
        .await?
        .into_iter()
        .filter_map(|i| Reference::parse(&i.name).ok())
        .filter(|t| t.name() == name && t.tag.is_some() && t.digest.is_none())
        .collect();
    tagged.sort_by(|a, b| a.tag.cmp(&b.tag));
    if tagged.is_empty() {
        return Err(upstream(format!(
            "An image does not exist locally with the tag: {}",
            Reference {
                tag: None,
                digest: None,
                ..r.clone()
            }
            .familiar()
        )));
    }
    if r.tag.is_some() {
        tagged.retain(|t| t.tag == r.tag);
        if tagged.is_empty() {
            return Err(upstream(format!("tag does not exist: {}", r.familiar())));
        }
    }
    let mut out = Vec::new();
    for t in tagged {
        match d.image(&t.to_string()).await {
            Ok(image) => out.push((t, image)),
            // Untagged meanwhile: dockerd pushes what its reference store held at the start,
            // and an image that went away can only be skipped.
            Err(DaemonError::NoSuchImage { .. }) => {}
            Err(e) => return Err(e.into()),
        }
    }
    Ok(out)
}

/// Pushes `opts.reference`; progress lines go to `tx`. Returns the last manifest digest.
pub async fn push<B: Backend>(
    d: &Daemon<B>,
    opts: PushOptions,
    tx: &mpsc::Sender<Value>,
) -> Result<String, RegistryError> {
    let r = &opts.reference;
    let _ = tx
        .send(json!({"status": format!("The push refers to repository [{}]", r.name())}))
        .await;
    let tags = targets(d, r).await?;
    let mut c = Client::new(&r.domain, &r.path, opts.creds)?.for_push();
    let mut digest = String::new();
    for (tagged, image) in tags {
        digest = push_tag(d, &mut c, &tagged, &image, tx).await?;
    }
    Ok(digest)
}

async fn push_tag<B: Backend>(
    d: &Daemon<B>,
    c: &mut Client,
    r: &Reference,
    image: &ImageView,
    tx: &mpsc::Sender<Value>,
) -> Result<String, RegistryError> {
    let tag = r.tag.clone().unwrap_or_else(|| "latest".into());
    let send = |v: Value| async move {
        // A client that went away stops reading; the push still completes.
        let _ = tx.send(v).await;
    };
    let root = d.config.data_root.as_path();
    // The first request authenticates, so the concurrent uploads share its token.
    let config = Blob {
        digest: &image.id,
        size: 0,
        id: "",
        tx,
    };
    upload::upload(c, &*d.backend, root, &config).await?;
    let layers: Vec<_> = image.layers.iter().rev().collect();
    for l in &layers {
        send(json!({"status": "Preparing", "progressDetail": {}, "id": short(&l.digest)})).await;
    }
    let slots = Semaphore::new(MAX_UPLOADS.load(Ordering::Relaxed));
    let uploads = layers.iter().map(|l| {
        let (slots, mut c) = (&slots, c.clone());
        async move {
            let id = short(&l.digest);
            let _slot = match slots.try_acquire() {
                Ok(s) => s,
                Err(_) => {
                    send(json!({"status": "Waiting", "progressDetail": {}, "id": id})).await;
                    slots.acquire().await.map_err(|e| upstream(e.to_string()))?
                }
            };
            let blob = Blob {
                digest: &l.digest,
                size: u64::try_from(l.size).unwrap_or(0),
                id,
                tx,
            };
            let status = match upload::upload(&mut c, &*d.backend, root, &blob).await? {
                Outcome::Exists => "Layer already exists".to_string(),
                Outcome::Pushed => "Pushed".to_string(),
                Outcome::Mounted(from) => format!("Mounted from {from}"),
            };
            send(json!({"status": status, "progressDetail": {}, "id": id})).await;
            Ok::<_, RegistryError>(())
        }
    });
    // Every upload runs to its end before the first error is returned, so none is cut
    // off mid-request; the manifest is sent only when all succeeded.
    let results = futures::future::join_all(uploads).await;
    results.into_iter().collect::<Result<Vec<()>, _>>()?;
    let manifest = Bytes::from(d.backend.content_read(&image.target.digest).await?);
    let size = manifest.len();
    let path = format!("/v2/{}/manifests/{tag}", r.path);
    let put = c
        .call(Call {
            method: Method::PUT,
            path: &path,
            content_type: if image.target.media_type.is_empty() {
                super::manifest::DOCKER_MANIFEST
            } else {
                &image.target.media_type
            },
            body: manifest,
            ..Default::default()
        })
        .await?;
    if put.status != StatusCode::CREATED {
        return Err(upload::unexpected(put).await);
    }
    let mut blobs: Vec<&str> = image.layers.iter().map(|l| l.digest.as_str()).collect();
    blobs.push(&image.id);
    super::sources::record(root, c.host(), &r.path, &blobs).await;
    let digest = image.target.digest.clone();
    d.record_repo_digest(r, &digest, &image.target).await?;
    send(json!({"status": format!("{tag}: digest: {digest} size: {size}"), "progressDetail": {}}))
        .await;
    send(json!({"progressDetail": {}, "aux": {"Tag": tag, "Digest": digest, "Size": size}})).await;
    d.event_log.image("push", &r.familiar(), &r.familiar());
    Ok(digest)
}
