//! A minimal Docker Engine API client: HTTP/1.1 over the engine's unix socket, one
//! connection per request, with API version negotiation and connection hijacking.

use bytes::Bytes;
use http::{header, Method, Request, Response, StatusCode};
use http_body_util::{BodyExt, Full};
use hyper::body::Incoming;
use hyper_util::rt::TokioIo;
use serde::de::DeserializeOwned;
use tokio::net::UnixStream;

use crate::error::CliError;
use crate::host::Host;

/// The newest API version this client speaks (docker 28's).
pub const MAX_API_VERSION: &str = "1.50";

pub struct Client {
    host: Host,
    /// Negotiated version, e.g. "1.50".
    version: String,
}

/// What a hijacked connection gives back: raw upgraded bytes, or (if the daemon refused to
/// upgrade and answered 200) the ordinary response body.
pub enum Hijacked {
    Upgraded(TokioIo<hyper::upgrade::Upgraded>),
    Body(Incoming),
}

impl Client {
    /// Connects and negotiates the API version via `/_ping`.
    pub async fn connect(host: Host) -> Result<Client, CliError> {
        let mut client = Client {
            host,
            version: MAX_API_VERSION.to_string(),
        };
        let req = client.request(Method::GET, "/_ping", Full::default(), None)?;
        let resp = client.send(req, false).await?;
        let server = resp
            .headers()
            .get("api-version")
            .and_then(|v| v.to_str().ok())
            .map(str::to_string);
        let resp = check(resp).await?;
        drop(resp);
        client.version = negotiate(server.as_deref());
        Ok(client)
    }

    pub fn version(&self) -> &str {
        &self.version
    }

    pub fn host(&self) -> &Host {
        &self.host
    }

    /// `/vX.YY/<path>`; `path` starts with `/` and may carry a query.
    fn versioned(&self, path: &str) -> String {
        format!("/v{}{path}", self.version)
    }

    fn request(
        &self,
        method: Method,
        uri: &str,
        body: Full<Bytes>,
        content_type: Option<&str>,
    ) -> Result<Request<Full<Bytes>>, CliError> {
        let mut b = Request::builder()
            .method(method)
            .uri(uri)
            .header(header::HOST, "berth")
            .header(
                header::USER_AGENT,
                concat!("berth-cli/", env!("CARGO_PKG_VERSION")),
            );
        if let Some(ct) = content_type {
            b = b.header(header::CONTENT_TYPE, ct);
        }
        b.body(body).map_err(|source| CliError::Request {
            path: uri.to_string(),
            source,
        })
    }

    async fn send(
        &self,
        req: Request<Full<Bytes>>,
        upgrades: bool,
    ) -> Result<Response<Incoming>, CliError> {
        let stream = UnixStream::connect(&self.host.socket)
            .await
            .map_err(|source| CliError::Connect {
                host: self.host.url.clone(),
                source,
            })?;
        let http_err = |source| CliError::Http {
            host: self.host.url.clone(),
            source,
        };
        let (mut sender, conn) = hyper::client::conn::http1::handshake(TokioIo::new(stream))
            .await
            .map_err(http_err)?;
        // The connection task ends when the response is done (or the upgrade taken).
        if upgrades {
            tokio::spawn(async move {
                if let Err(e) = conn.with_upgrades().await {
                    tracing::debug!(error = %e, "hijacked connection ended with an error");
                }
            });
        } else {
            tokio::spawn(async move {
                if let Err(e) = conn.await {
                    tracing::debug!(error = %e, "connection ended with an error");
                }
            });
        }
        sender.send_request(req).await.map_err(http_err)
    }

    /// Sends a request to `/vX.YY<path>` and fails on an error status.
    pub async fn call(
        &self,
        method: Method,
        path: &str,
        body: Option<Bytes>,
        content_type: Option<&str>,
    ) -> Result<Response<Incoming>, CliError> {
        let body = body.map(Full::new).unwrap_or_default();
        let req = self.request(method, &self.versioned(path), body, content_type)?;
        check(self.send(req, false).await?).await
    }

    /// POST with a JSON body (or none).
    pub async fn post_json(
        &self,
        path: &str,
        body: Option<&serde_json::Value>,
    ) -> Result<Response<Incoming>, CliError> {
        let bytes = body.map(|v| Bytes::from(v.to_string()));
        let ct = body.map(|_| "application/json");
        self.call(Method::POST, path, bytes, ct).await
    }

    /// GET and decode a JSON response.
    pub async fn get_json<T: DeserializeOwned>(&self, path: &str) -> Result<T, CliError> {
        let resp = self.call(Method::GET, path, None, None).await?;
        self.decode(path, resp).await
    }

    /// Reads a whole response body and decodes it as JSON.
    pub async fn decode<T: DeserializeOwned>(
        &self,
        what: &str,
        resp: Response<Incoming>,
    ) -> Result<T, CliError> {
        let bytes = read_body(&self.host, resp).await?;
        serde_json::from_slice(&bytes).map_err(|source| CliError::Decode {
            what: what.to_string(),
            source,
        })
    }

    /// Reads a whole response body.
    pub async fn body(&self, resp: Response<Incoming>) -> Result<Bytes, CliError> {
        read_body(&self.host, resp).await
    }

    /// POSTs to `path` asking for the connection to be hijacked (docker's attach).
    pub async fn hijack(&self, path: &str) -> Result<Hijacked, CliError> {
        let mut req = self.request(Method::POST, &self.versioned(path), Full::default(), None)?;
        let headers = req.headers_mut();
        headers.insert(
            header::CONNECTION,
            header::HeaderValue::from_static("Upgrade"),
        );
        headers.insert(header::UPGRADE, header::HeaderValue::from_static("tcp"));
        let resp = self.send(req, true).await?;
        if resp.status() == StatusCode::SWITCHING_PROTOCOLS {
            let upgraded = hyper::upgrade::on(resp)
                .await
                .map_err(|source| CliError::Http {
                    host: self.host.url.clone(),
                    source,
                })?;
            return Ok(Hijacked::Upgraded(TokioIo::new(upgraded)));
        }
        let resp = check(resp).await?;
        Ok(Hijacked::Body(resp.into_body()))
    }
}

/// The version to use given the daemon's `API-Version` header: the lower of the two.
pub fn negotiate(server: Option<&str>) -> String {
    let parse = |v: &str| -> Option<(u32, u32)> {
        let (a, b) = v.trim().split_once('.')?;
        Some((a.parse().ok()?, b.parse().ok()?))
    };
    match server.and_then(|s| Some((s, parse(s)?))) {
        Some((s, ours)) if Some(ours) < parse(MAX_API_VERSION) => s.trim().to_string(),
        _ => MAX_API_VERSION.to_string(),
    }
}

async fn read_body(host: &Host, resp: Response<Incoming>) -> Result<Bytes, CliError> {
    resp.into_body()
        .collect()
        .await
        .map(|c| c.to_bytes())
        .map_err(|source| CliError::Http {
            host: host.url.clone(),
            source,
        })
}

/// Turns an error status into `CliError::Daemon` with the daemon's `message`.
async fn check(resp: Response<Incoming>) -> Result<Response<Incoming>, CliError> {
    let status = resp.status();
    if !status.is_client_error() && !status.is_server_error() {
        return Ok(resp);
    }
    let bytes = resp
        .into_body()
        .collect()
        .await
        .map(|c| c.to_bytes())
        .unwrap_or_default();
    Err(CliError::Daemon {
        status: status.as_u16(),
        message: error_message(status, &bytes),
    })
}

/// The daemon's `{"message": ...}`, else the body text, else the status reason.
pub fn error_message(status: StatusCode, body: &[u8]) -> String {
    if let Ok(v) = serde_json::from_slice::<serde_json::Value>(body) {
        if let Some(m) = v.get("message").and_then(|m| m.as_str()) {
            return m.to_string();
        }
    }
    let text = String::from_utf8_lossy(body).trim().to_string();
    if text.is_empty() {
        status
            .canonical_reason()
            .unwrap_or("unknown error")
            .to_string()
    } else {
        text
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn negotiates_the_lower_version() {
        assert_eq!(negotiate(Some("1.43")), "1.43");
        assert_eq!(negotiate(Some("1.50")), "1.50");
        assert_eq!(negotiate(Some("1.51")), "1.50");
        assert_eq!(negotiate(Some("garbage")), "1.50");
        assert_eq!(negotiate(None), "1.50");
    }

    #[test]
    fn error_message_prefers_json_message() {
        let s = StatusCode::NOT_FOUND;
        assert_eq!(
            error_message(s, br#"{"message":"No such container: x"}"#),
            "No such container: x"
        );
        assert_eq!(error_message(s, b"plain text\n"), "plain text");
        assert_eq!(error_message(s, b""), "Not Found");
    }
}
