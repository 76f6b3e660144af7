//! One layer's download, streamed from the registry into highd's content store under
//! an ingest ref named after the blob (`layer-sha256:...`, as containerd names its
//! ingests). A transfer that breaks leaves its bytes in that ingest, so the next
//! attempt, in this pull or in a later one after an engine restart, asks the registry
//! for the rest with a `Range` request. highd verifies size and digest at commit.

use std::collections::HashMap;
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use bytes::Bytes;
use http::StatusCode;
use http_body_util::BodyExt;
use serde_json::{json, Value};
use tokio::sync::mpsc;

use super::client::{Client, Fetched};
use super::manifest::Desc;
use super::RegistryError;
use crate::backend::{Backend, BackendError, UploadStream};

/// How often a blob download cut mid-body is resumed before the pull fails.
const RESUMES: u32 = 3;
/// How long to wait for another pull that is writing the same blob.
const LOCKED_WAIT: Duration = Duration::from_secs(600);
/// Progress lines at most this often per layer, as dockerd's progress reader.
const PROGRESS_EVERY: Duration = Duration::from_millis(100);

/// The first 12 hex digits of a digest: the id of a layer's progress lines.
pub fn short(digest: &str) -> &str {
    let hex = digest.split_once(':').map_or(digest, |(_, h)| h);
    &hex[..hex.len().min(12)]
}

/// The stable ingest ref of a blob.
pub fn ingest_ref(digest: &str) -> String {
    format!("layer-{digest}")
}

pub(super) fn status_error(f: &Fetched, url: String) -> RegistryError {
    RegistryError::Status {
        url,
        status: f.status.as_u16(),
        message: f.status.canonical_reason().unwrap_or("").into(),
    }
}

/// What the body stream saw, read after highd has answered.
#[derive(Default)]
struct Seen {
    /// The registry connection broke (message), as opposed to highd refusing.
    broken: Option<String>,
    bytes: u64,
}

/// Downloads `desc` into the content store, sending docker's per-layer progress
/// ("Downloading", "Verifying Checksum") to `tx`.
pub async fn download<B: Backend>(
    b: &B,
    mut c: Client,
    desc: &Desc,
    tx: &mpsc::Sender<Value>,
) -> Result<(), RegistryError> {
    let total = u64::try_from(desc.size).unwrap_or(0);
    let reference = ingest_ref(&desc.digest);
    let mut resumes = 0;
    let started = Instant::now();
    loop {
        let mut offset = b.content_ingest_offset(&reference).await?;
        if total > 0 && offset > total {
            offset = 0;
        }
        let (start, body) = if total > 0 && offset == total {
            // Everything arrived before; only the commit is left.
            (offset, None)
        } else {
            let f = c.get_from("blobs", &desc.digest, "", offset).await?;
            if !f.status.is_success() {
                let url = format!("{}/v2/{}/blobs/{}", c.base_url(), c.repo(), desc.digest);
                return Err(status_error(&f, url));
            }
            // A registry that ignores the Range sends the whole blob again.
            let start = if f.status == StatusCode::PARTIAL_CONTENT {
                offset
            } else {
                0
            };
            if start > 0 {
                tracing::info!(digest = %desc.digest, offset = start, "resuming blob download");
            }
            (start, Some(f))
        };
        let seen = Arc::new(Mutex::new(Seen {
            broken: None,
            bytes: start,
        }));
        let data = body_stream(body, start, total, short(&desc.digest), tx, seen.clone());
        let result = b
            .content_ingest(
                &reference,
                start,
                desc.size,
                &desc.digest,
                data,
                HashMap::new(),
            )
            .await;
        let seen = std::mem::take(&mut *seen.lock().unwrap_or_else(|e| e.into_inner()));
        let e = match result {
            Ok(()) => return Ok(()),
            Err(e) => e,
        };
        if let Some(message) = seen.broken {
            if resumes < RESUMES && seen.bytes > start {
                resumes += 1;
                tracing::info!(digest = %desc.digest, at = seen.bytes, error = %message, "blob download broke; resuming");
                continue;
            }
            return Err(RegistryError::Transfer { message });
        }
        let message = e.to_string();
        if message.contains("locked by another writer") && started.elapsed() < LOCKED_WAIT {
            // Another pull is writing this blob: once it commits, the next attempt
            // finds the blob there and returns at once.
            tokio::time::sleep(Duration::from_millis(200)).await;
            continue;
        }
        return Err(commit_error(e, desc));
    }
}

/// highd's verification failures, in the registry error's words.
fn commit_error(e: BackendError, desc: &Desc) -> RegistryError {
    if let BackendError::Failed { message, .. } = &e {
        if let Some(rest) = message.strip_prefix("unexpected commit digest ") {
            let actual = rest.split([',', ' ']).next().unwrap_or(rest);
            return RegistryError::DigestMismatch {
                expected: desc.digest.clone(),
                actual: actual.into(),
            };
        }
        if message.starts_with("unexpected commit size") {
            return RegistryError::SizeMismatch {
                digest: desc.digest.clone(),
                expected: desc.size,
                actual: 0,
            };
        }
    }
    e.into()
}

struct BodyState {
    body: Option<Fetched>,
    total: u64,
    id: String,
    tx: mpsc::Sender<Value>,
    seen: Arc<Mutex<Seen>>,
    last: Instant,
    done: bool,
}

/// The registry body as chunks for the ingest, with progress lines on the way and
/// "Verifying Checksum" once the last byte is in.
fn body_stream(
    body: Option<Fetched>,
    start: u64,
    total: u64,
    id: &str,
    tx: &mpsc::Sender<Value>,
    seen: Arc<Mutex<Seen>>,
) -> UploadStream {
    let state = BodyState {
        body,
        total,
        id: id.to_string(),
        tx: tx.clone(),
        seen,
        last: Instant::now() - PROGRESS_EVERY,
        done: false,
    };
    let _ = start;
    Box::pin(futures::stream::unfold(state, |mut st| async move {
        if st.done {
            return None;
        }
        let frame = match st.body.as_mut() {
            Some(f) => f.body.frame().await,
            None => None,
        };
        match frame {
            None => {
                st.done = true;
                send(&st.tx, &st.id, "Verifying Checksum").await;
                None
            }
            Some(Err(e)) => {
                st.done = true;
                let message = e.to_string();
                st.seen.lock().unwrap_or_else(|p| p.into_inner()).broken = Some(message.clone());
                Some((Err(std::io::Error::other(message)), st))
            }
            Some(Ok(frame)) => {
                let data = frame.into_data().unwrap_or_else(|_| Bytes::new());
                let n = {
                    let mut seen = st.seen.lock().unwrap_or_else(|p| p.into_inner());
                    seen.bytes += data.len() as u64;
                    seen.bytes
                };
                if st.last.elapsed() >= PROGRESS_EVERY || n == st.total {
                    st.last = Instant::now();
                    // A line that does not fit in the channel now is dropped rather
                    // than stalling the download.
                    let _ = st.tx.try_send(json!({"status": "Downloading",
                        "progressDetail": {"current": n, "total": st.total}, "id": st.id}));
                }
                Some((Ok(data), st))
            }
        }
    }))
}

pub(super) async fn send(tx: &mpsc::Sender<Value>, id: &str, status: &str) {
    // A client that went away stops reading; the pull still completes.
    let _ = tx
        .send(json!({"status": status, "progressDetail": {}, "id": id}))
        .await;
}
