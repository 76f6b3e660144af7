//! One blob going up to a registry (OCI distribution spec, "pushing blobs"): nothing when
//! the repository has it already; a cross-repository mount when another repository of the
//! same registry is known to hold it; else an upload session, filled with one monolithic
//! PUT for small blobs or with PATCHed chunks (each following the `Location` the last one
//! returned) and a closing `PUT ?digest=` for large ones, read from highd as a stream.

use std::path::Path;

use bytes::{Bytes, BytesMut};
use futures::StreamExt;
use http::{header, Method, StatusCode};
use serde_json::{json, Value};
use tokio::sync::mpsc;

use super::client::{Call, Client, Fetched};
use super::RegistryError;
use crate::backend::Backend;

/// Blobs larger than this go up in PATCHed chunks of this size (or of the registry's
/// `OCI-Chunk-Min-Length`, when larger); smaller ones in one PUT.
pub const CHUNK: u64 = 5 << 20;

/// How a blob came to be in the repository.
#[derive(Debug, PartialEq, Eq)]
pub enum Outcome {
    Exists,
    Pushed,
    Mounted(String),
}

/// The blob to push and where its progress lines go (`id` empty: none, as for the config).
pub struct Blob<'a> {
    pub digest: &'a str,
    pub size: u64,
    pub id: &'a str,
    pub tx: &'a mpsc::Sender<Value>,
}

impl Blob<'_> {
    async fn progress(&self, current: u64) {
        if self.id.is_empty() {
            return;
        }
        let line = json!({
            "status": "Pushing",
            "progressDetail": {"current": current, "total": self.size},
            "id": self.id,
        });
        // A client that went away stops reading; the push still completes.
        let _ = self.tx.send(line).await;
    }
}

/// The error a registry's unexpected answer means, worded as dockerd's distribution
/// client words it: `received unexpected HTTP status: 500 Internal Server Error` for
/// anything but a 4xx, the registry's own `errors` for a 4xx, and the body that could not
/// be parsed otherwise.
pub async fn unexpected(f: Fetched) -> RegistryError {
    let status = f.status;
    let message = if !status.is_client_error() {
        format!(
            "received unexpected HTTP status: {} {}",
            status.as_u16(),
            status.canonical_reason().unwrap_or("")
        )
    } else {
        let body = f.read_all(64 << 10, |_| {}).await.unwrap_or_default();
        registry_errors(status, &body)
    };
    RegistryError::Upstream { message }
}

fn registry_errors(status: StatusCode, body: &[u8]) -> String {
    #[derive(serde::Deserialize)]
    struct Errors {
        errors: Vec<Detail>,
    }
    #[derive(serde::Deserialize)]
    struct Detail {
        #[serde(default)]
        code: String,
        #[serde(default)]
        message: String,
    }
    let one = |d: &Detail| {
        let code = if d.code.is_empty() {
            "unknown"
        } else {
            &d.code
        };
        format!(
            "{}: {}",
            code.to_ascii_lowercase().replace('_', " "),
            d.message
        )
    };
    match serde_json::from_slice::<Errors>(body) {
        Ok(e) if e.errors.len() == 1 => one(&e.errors[0]),
        Ok(e) if !e.errors.is_empty() => {
            let lines: Vec<String> = e.errors.iter().map(one).collect();
            format!("errors:\n{}\n", lines.join("\n"))
        }
        Ok(_) => format!(
            "error parsing HTTP {} response body: no error details found in HTTP response body: {:?}",
            status.as_u16(),
            String::from_utf8_lossy(body)
        ),
        Err(e) => format!(
            "error parsing HTTP {} response body: {e}: {:?}",
            status.as_u16(),
            String::from_utf8_lossy(body)
        ),
    }
}

/// The path (and query) part of an upload `Location`, which may be absolute.
fn location_path(location: &str) -> &str {
    match location.split_once("://") {
        Some((_, rest)) => rest.find('/').map_or("/", |i| &rest[i..]),
        None => location,
    }
}

fn location(f: &Fetched) -> Result<String, RegistryError> {
    f.headers
        .get(header::LOCATION)
        .and_then(|v| v.to_str().ok())
        .map(|l| location_path(l).to_string())
        .ok_or_else(|| RegistryError::Upstream {
            message: "registry answered a blob upload without a Location".into(),
        })
}

fn with_query(location: &str, query: &str) -> String {
    let sep = if location.contains('?') { '&' } else { '?' };
    format!("{location}{sep}{query}")
}

async fn send(
    c: &mut Client,
    method: Method,
    path: &str,
    body: Bytes,
) -> Result<Fetched, RegistryError> {
    let content_type = if body.is_empty() {
        ""
    } else {
        "application/octet-stream"
    };
    c.call(Call {
        method,
        path,
        content_type,
        body,
        ..Default::default()
    })
    .await
}

/// Makes sure `blob` is in the client's repository.
pub async fn upload<B: Backend>(
    c: &mut Client,
    backend: &B,
    data_root: &Path,
    blob: &Blob<'_>,
) -> Result<Outcome, RegistryError> {
    let repo = c.repo().to_string();
    let head = format!("/v2/{repo}/blobs/{}", blob.digest);
    let exists = send(c, Method::HEAD, &head, Bytes::new()).await?;
    match exists.status {
        s if s.is_success() => return Ok(Outcome::Exists),
        StatusCode::NOT_FOUND => {}
        _ => return Err(unexpected(exists).await),
    }
    let start = format!("/v2/{repo}/blobs/uploads/");
    let host = c.host().to_string();
    let mut session = None;
    for from in super::sources::mount_candidates(data_root, &host, &repo, blob.digest).await {
        let mount = format!("{start}?mount={}&from={from}", blob.digest);
        let answer = send(c, Method::POST, &mount, Bytes::new()).await?;
        match answer.status {
            StatusCode::CREATED => return Ok(Outcome::Mounted(from)),
            // The registry could not mount it but opened an ordinary upload instead.
            StatusCode::ACCEPTED => {
                session = Some(answer);
                break;
            }
            s => tracing::debug!(%from, status = %s, "cross-repository mount refused"),
        }
    }
    let started = match session {
        Some(s) => s,
        None => send(c, Method::POST, &start, Bytes::new()).await?,
    };
    if started.status != StatusCode::ACCEPTED {
        return Err(unexpected(started).await);
    }
    let mut at = location(&started)?;
    let min_chunk = started
        .headers
        .get("OCI-Chunk-Min-Length")
        .and_then(|v| v.to_str().ok())
        .and_then(|v| v.parse::<u64>().ok())
        .unwrap_or(0);
    let chunk = CHUNK.max(min_chunk);
    blob.progress(0).await;
    let last = if blob.size <= chunk {
        Bytes::from(backend.content_read(blob.digest).await?)
    } else {
        at = patch_chunks(c, backend, blob, at, chunk).await?;
        Bytes::new()
    };
    let put = with_query(&at, &format!("digest={}", blob.digest));
    let done = send(c, Method::PUT, &put, last).await?;
    if done.status != StatusCode::CREATED {
        return Err(unexpected(done).await);
    }
    blob.progress(blob.size).await;
    Ok(Outcome::Pushed)
}

/// PATCHes the blob in `chunk`-sized pieces; returns the `Location` to close it at.
async fn patch_chunks<B: Backend>(
    c: &mut Client,
    backend: &B,
    blob: &Blob<'_>,
    mut at: String,
    chunk: u64,
) -> Result<String, RegistryError> {
    let mut stream = backend.content_read_stream(blob.digest).await?;
    let mut buf = BytesMut::new();
    let mut sent = 0u64;
    let mut ended = false;
    while !ended {
        while (buf.len() as u64) < chunk {
            match stream.next().await {
                Some(piece) => buf.extend_from_slice(&piece?),
                None => {
                    ended = true;
                    break;
                }
            }
        }
        let take = buf.len().min(chunk as usize);
        if take == 0 {
            break;
        }
        let body = buf.split_to(take).freeze();
        let len = body.len() as u64;
        let answer = c
            .call(Call {
                method: Method::PATCH,
                path: &at,
                content_type: "application/octet-stream",
                body,
                content_range: Some((sent, sent + len - 1)),
                ..Default::default()
            })
            .await?;
        if answer.status != StatusCode::ACCEPTED {
            return Err(unexpected(answer).await);
        }
        at = location(&answer)?;
        sent += len;
        blob.progress(sent).await;
    }
    Ok(at)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn registry_error_bodies_read_as_dockerd_words_them() {
        let body = br#"{"errors":[{"code":"BLOB_UPLOAD_UNKNOWN","message":"blob upload unknown to registry"}]}"#;
        assert_eq!(
            registry_errors(StatusCode::NOT_FOUND, body),
            "blob upload unknown: blob upload unknown to registry"
        );
        let garbage = registry_errors(StatusCode::BAD_REQUEST, b"garbage");
        assert!(
            garbage.starts_with("error parsing HTTP 400 response body: "),
            "{garbage}"
        );
        assert!(garbage.ends_with(": \"garbage\""), "{garbage}");
        assert_eq!(
            location_path("http://h:1/v2/a/blobs/uploads/x?s=1"),
            "/v2/a/blobs/uploads/x?s=1"
        );
        assert_eq!(with_query("/u?s=1", "digest=d"), "/u?s=1&digest=d");
        assert_eq!(with_query("/u", "digest=d"), "/u?digest=d");
    }
}
