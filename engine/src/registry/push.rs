//! `docker push`: the image's layers and config go up as blobs (skipped when the registry
//! already has them), then its manifest, byte for byte as highd stores it, so the pushed
//! digest is the local one.

use bytes::Bytes;
use http::{Method, StatusCode};
use serde_json::{json, Value};
use tokio::sync::mpsc;

use super::client::{Call, Client, Fetched};
use super::{Credentials, RegistryError};
use crate::backend::{Backend, Descriptor};
use crate::daemon::Daemon;
use crate::refs::Reference;

pub struct PushOptions {
    /// The local image name, which is also where it goes (`127.0.0.1:5000/busybox:1`).
    pub reference: Reference,
    pub creds: Option<Credentials>,
}

fn short(digest: &str) -> &str {
    let hex = digest.split_once(':').map_or(digest, |(_, h)| h);
    &hex[..hex.len().min(12)]
}

fn failed(f: &Fetched, what: &str) -> RegistryError {
    RegistryError::Status {
        url: what.into(),
        status: f.status.as_u16(),
        message: f.status.canonical_reason().unwrap_or("").into(),
    }
}

/// The path (and query) part of an upload `Location`, which may be absolute.
fn location_path(location: &str) -> &str {
    match location.split_once("://") {
        Some((_, rest)) => rest.find('/').map_or("/", |i| &rest[i..]),
        None => location,
    }
}

async fn upload(c: &mut Client, desc: &Descriptor, data: Bytes) -> Result<bool, RegistryError> {
    let repo = c.repo().to_string();
    let head = format!("/v2/{repo}/blobs/{}", desc.digest);
    let exists = c
        .call(Call {
            method: Method::HEAD,
            path: &head,
            accept: "",
            content_type: "",
            body: Bytes::new(),
            range_from: 0,
        })
        .await?;
    if exists.status.is_success() {
        return Ok(false);
    }
    let start = format!("/v2/{repo}/blobs/uploads/");
    let started = c
        .call(Call {
            method: Method::POST,
            path: &start,
            accept: "",
            content_type: "",
            body: Bytes::new(),
            range_from: 0,
        })
        .await?;
    if started.status != StatusCode::ACCEPTED {
        return Err(failed(&started, &format!("POST {start}")));
    }
    let location = started
        .headers
        .get(http::header::LOCATION)
        .and_then(|v| v.to_str().ok())
        .map(|l| location_path(l).to_string())
        .ok_or_else(|| failed(&started, "upload without Location"))?;
    let sep = if location.contains('?') { '&' } else { '?' };
    let put = format!("{location}{sep}digest={}", desc.digest);
    let done = c
        .call(Call {
            method: Method::PUT,
            path: &put,
            accept: "",
            content_type: "application/octet-stream",
            body: data,
            range_from: 0,
        })
        .await?;
    if done.status != StatusCode::CREATED {
        return Err(failed(&done, &format!("PUT blob {}", desc.digest)));
    }
    Ok(true)
}

/// Pushes `opts.reference`; progress lines go to `tx`. Returns the manifest digest.
pub async fn push<B: Backend>(
    d: &Daemon<B>,
    opts: PushOptions,
    tx: &mpsc::Sender<Value>,
) -> Result<String, RegistryError> {
    let r = &opts.reference;
    let tag = r.tag.clone().unwrap_or_else(|| "latest".into());
    let image = d.image(&r.to_string()).await?;
    let send = |v: Value| async move {
        // A client that went away stops reading; the push still completes.
        let _ = tx.send(v).await;
    };
    send(json!({"status": format!("The push refers to repository [{}]", r.name())})).await;
    let mut c = Client::new(&r.domain, &r.path, opts.creds)?.for_push();
    for l in image.layers.iter().rev() {
        send(json!({"status": "Preparing", "progressDetail": {}, "id": short(&l.digest)})).await;
    }
    for l in image.layers.iter().rev() {
        let id = short(&l.digest);
        let data = Bytes::from(d.backend.content_read(&l.digest).await?);
        send(json!({"status": "Pushing", "progressDetail": {"current": 0, "total": l.size}, "id": id}))
            .await;
        let status = if upload(&mut c, l, data).await? {
            "Pushed"
        } else {
            "Layer already exists"
        };
        send(json!({"status": status, "progressDetail": {}, "id": id})).await;
    }
    let config = Descriptor {
        media_type: String::new(),
        digest: image.id.clone(),
        size: 0,
        annotations: Default::default(),
    };
    let cfg = Bytes::from(d.backend.content_read(&image.id).await?);
    upload(&mut c, &config, cfg).await?;
    let manifest = Bytes::from(d.backend.content_read(&image.target.digest).await?);
    let size = manifest.len();
    let path = format!("/v2/{}/manifests/{tag}", r.path);
    let put = c
        .call(Call {
            method: Method::PUT,
            path: &path,
            accept: "",
            content_type: if image.target.media_type.is_empty() {
                super::manifest::DOCKER_MANIFEST
            } else {
                &image.target.media_type
            },
            body: manifest,
            range_from: 0,
        })
        .await?;
    if put.status != StatusCode::CREATED {
        return Err(failed(&put, &format!("PUT manifest {tag}")));
    }
    let digest = image.target.digest.clone();
    d.record_repo_digest(r, &digest, &image.target).await?;
    send(json!({"status": format!("{tag}: digest: {digest} size: {size}"), "progressDetail": {}}))
        .await;
    send(json!({"progressDetail": {}, "aux": {"Tag": tag, "Digest": digest, "Size": size}})).await;
    d.event_log.image("push", &r.familiar(), &r.familiar());
    Ok(digest)
}
