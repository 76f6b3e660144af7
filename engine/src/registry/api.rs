//! HTTP side of pulls and logins: `POST /images/create?fromImage=` streams docker's
//! progress JSON; `POST /auth` checks credentials against the registry.

use std::sync::Arc;

use bytes::Bytes;
use http::{header, HeaderMap, HeaderValue, Response, StatusCode};
use serde_json::{json, Value};
use tokio::sync::{mpsc, oneshot};

use super::client::Client;
use super::{pull, push, Credentials, PullOptions, PushOptions, RegistryError};
use crate::api::{channel_body, json_response, ApiError, Body};
use crate::backend::Backend;
use crate::daemon::Daemon;
use crate::refs::Reference;

impl From<RegistryError> for ApiError {
    fn from(e: RegistryError) -> Self {
        use RegistryError as E;
        let status = match e {
            E::Daemon(d) => return ApiError::from(d),
            E::NotFound { .. } | E::AccessDenied { .. } => StatusCode::NOT_FOUND,
            E::Unauthorized { .. } => StatusCode::UNAUTHORIZED,
            E::Reference(_) | E::AuthHeader { .. } => StatusCode::BAD_REQUEST,
            _ => StatusCode::INTERNAL_SERVER_ERROR,
        };
        ApiError::new(status, e.to_string())
    }
}

/// `fromImage` and `tag` as the docker CLI sends them: the tag may be a digest
/// (`image@sha256:...` pulls), and `fromImage` may carry its own tag (docker-py).
pub fn pull_reference(image: &str, tag: &str) -> Result<Reference, RegistryError> {
    let r = if tag.starts_with("sha256:") {
        Reference::parse(&format!("{image}@{tag}"))?
    } else if tag.is_empty() {
        Reference::parse(image)?
    } else {
        Reference::parse(image)?.with_tag(tag)?
    };
    Ok(r.with_default_tag())
}

fn line(v: &Value) -> Bytes {
    let mut s = v.to_string();
    s.push_str("\r\n");
    Bytes::from(s)
}

/// Starts the pull on its own task (it finishes even if the client hangs up). An error
/// before any progress is an ordinary HTTP error, as in dockerd; later ones end the
/// stream with docker's `errorDetail` line.
pub async fn pull_response<B: Backend>(
    d: Arc<Daemon<B>>,
    image: &str,
    tag: &str,
    headers: &HeaderMap,
) -> Result<Response<Body>, ApiError> {
    let reference = pull_reference(image, tag)?;
    let opts = PullOptions {
        reference,
        creds: header_creds(headers)?,
    };
    stream_op(move |tx| async move { d.leased("pull", pull::pull(&d, opts, &tx)).await }).await
}

fn header_creds(headers: &HeaderMap) -> Result<Option<Credentials>, RegistryError> {
    match headers.get("X-Registry-Auth").and_then(|v| v.to_str().ok()) {
        Some(v) => Credentials::from_header(v),
        None => Ok(None),
    }
}

/// `POST /images/{name}/push?tag=` (`docker push`), streamed like a pull.
pub async fn push_response<B: Backend>(
    d: Arc<Daemon<B>>,
    name: &str,
    tag: &str,
    headers: &HeaderMap,
) -> Result<Response<Body>, ApiError> {
    // No tag (`docker push -a`): every tag of the repository, as dockerd.
    let reference = if tag.is_empty() {
        Reference::parse(name).map_err(RegistryError::from)?
    } else {
        pull_reference(name, tag)?
    };
    let opts = PushOptions {
        reference,
        creds: header_creds(headers)?,
    };
    stream_op(move |tx| async move { push::push(&d, opts, &tx).await }).await
}

async fn stream_op<F, Fut>(op: F) -> Result<Response<Body>, ApiError>
where
    F: FnOnce(mpsc::Sender<Value>) -> Fut,
    Fut: std::future::Future<Output = Result<String, RegistryError>> + Send + 'static,
{
    let (tx, mut rx) = mpsc::channel::<Value>(64);
    let (done_tx, done_rx) = oneshot::channel();
    let fut = op(tx);
    tokio::spawn(async move {
        let result = fut.await;
        if let Err(e) = &result {
            tracing::info!(error = %e, "registry operation failed");
        }
        // The future owned the progress sender, so the channel is closed before the
        // result is sent: readers that see its end find the result ready.
        let _ = done_tx.send(result);
    });
    let Some(first) = rx.recv().await else {
        return match done_rx.await {
            Ok(Err(e)) => Err(e.into()),
            _ => Ok(json_response(StatusCode::OK, &json!({}))),
        };
    };
    let (out, body) = mpsc::channel::<Bytes>(64);
    tokio::spawn(async move {
        if out.send(line(&first)).await.is_err() {
            return;
        }
        while let Some(v) = rx.recv().await {
            if out.send(line(&v)).await.is_err() {
                return;
            }
        }
        if let Ok(Err(e)) = done_rx.await {
            let m = e.to_string();
            let _ = out
                .send(line(&json!({"errorDetail": {"message": m}, "error": m})))
                .await;
        }
    });
    let mut r = Response::new(channel_body(body));
    r.headers_mut().insert(
        header::CONTENT_TYPE,
        HeaderValue::from_static("application/json"),
    );
    Ok(r)
}

/// `POST /auth` (`docker login`): `GET /v2/` on the registry with the credentials.
pub async fn login(body: &[u8]) -> Result<Response<Body>, ApiError> {
    let creds: Credentials = serde_json::from_slice(body)
        .map_err(|e| ApiError::bad_request(format!("invalid JSON: {e}")))?;
    let mut host = registry_host(&creds.server_address);
    if host.is_empty() || host == "index.docker.io" {
        host = "docker.io".into();
    }
    let mut c = Client::new(&host, "", creds.normalized())?;
    let result = c.ping().await;
    let base = c.base_url();
    result.map_err(|e| match e {
        RegistryError::Unauthorized { .. } => ApiError::new(
            StatusCode::UNAUTHORIZED,
            format!("login attempt to {base}/v2/ failed with status: 401 Unauthorized"),
        ),
        other => other.into(),
    })?;
    Ok(json_response(
        StatusCode::OK,
        &json!({"Status": "Login Succeeded", "IdentityToken": ""}),
    ))
}

/// `http://host:5000/v2/` → `host:5000`; the docker CLI usually sends the bare host.
fn registry_host(address: &str) -> String {
    let s = address
        .strip_prefix("http://")
        .or_else(|| address.strip_prefix("https://"))
        .unwrap_or(address);
    let s = s.split('/').next().unwrap_or("");
    match s {
        "index.docker.io" | "registry-1.docker.io" => "docker.io".into(),
        other => other.into(),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn pull_reference_from_cli_query() {
        let r = pull_reference("127.0.0.1:5000/busybox", "").unwrap();
        assert_eq!(r.to_string(), "127.0.0.1:5000/busybox:latest");
        let r = pull_reference("127.0.0.1:5000/busybox", "1.36").unwrap();
        assert_eq!(r.to_string(), "127.0.0.1:5000/busybox:1.36");
        let dg = format!("sha256:{}", "a".repeat(64));
        let r = pull_reference("127.0.0.1:5000/busybox", &dg).unwrap();
        assert_eq!(r.digest.as_deref(), Some(dg.as_str()));
        assert_eq!(r.tag, None);
        assert!(pull_reference("127.0.0.1:5000/busybox", "sha256:12").is_err());
        assert!(pull_reference("Bad", "").is_err());
    }

    #[test]
    fn login_host_forms() {
        assert_eq!(registry_host("127.0.0.1:5000"), "127.0.0.1:5000");
        assert_eq!(registry_host("http://127.0.0.1:5000/v2/"), "127.0.0.1:5000");
        assert_eq!(registry_host("https://index.docker.io/v1/"), "docker.io");
    }
}
