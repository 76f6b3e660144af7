//! A small OCI distribution client over hyper: GET with `Accept`, the registry's
//! `WWW-Authenticate` challenge answered once (Bearer token from the realm, or Basic),
//! and blob bodies streamed so the caller can report progress. HTTPS or plain HTTP as
//! [`super::tls`] decides; an insecure registry whose HTTPS attempt fails is asked again
//! over HTTP, and the endpoint that answered is kept for the rest of the operation.

use base64::Engine as _;
use bytes::{Bytes, BytesMut};
use http::{header, HeaderValue, Method, Request, StatusCode};
use http_body_util::{BodyExt, Full};
use hyper::body::Incoming;
use hyper_util::rt::TokioIo;
use tokio::io::{AsyncRead, AsyncWrite};
use tokio::net::TcpStream;

use super::tls::{self, Endpoint};
use super::{Credentials, RegistryError};

/// One registry host (`127.0.0.1:5000`) and the repository path being pulled.
/// Cloned for concurrent downloads and uploads: the clones share the credentials and
/// the `Authorization` already won.
#[derive(Clone)]
pub struct Client {
    host: String,
    repo: String,
    creds: Option<Credentials>,
    /// `Authorization` value that the registry accepted (or the token we fetched).
    auth: Option<HeaderValue>,
    /// Token scope actions when the challenge names none (`pull`, or `pull,push`).
    actions: &'static str,
    /// Ways to reach the registry still to try, the one in use first.
    endpoints: Vec<Endpoint>,
}

/// A request to send (and resend once after authenticating).
#[derive(Default)]
pub struct Call<'a> {
    pub method: Method,
    /// Path and query on the registry (`/v2/...`).
    pub path: &'a str,
    pub accept: &'a str,
    pub content_type: &'a str,
    pub body: Bytes,
    /// Non-zero: `Range: bytes=<n>-`, to resume a blob download.
    pub range_from: u64,
    /// `Content-Range: <first>-<last>` of a chunk PATCHed into a blob upload.
    pub content_range: Option<(u64, u64)>,
}

/// A response whose body has not been read yet.
pub struct Fetched {
    pub status: StatusCode,
    pub headers: http::HeaderMap,
    pub body: Incoming,
}

impl Fetched {
    /// Reads the body, calling `progress` with the byte count so far.
    pub async fn read_all(
        self,
        limit: u64,
        progress: impl FnMut(u64),
    ) -> Result<Bytes, RegistryError> {
        let mut buf = BytesMut::new();
        self.read_into(&mut buf, limit, progress).await?;
        Ok(buf.freeze())
    }

    /// Appends the body to `buf` (which keeps what arrived if the transfer breaks).
    pub async fn read_into(
        mut self,
        buf: &mut BytesMut,
        limit: u64,
        mut progress: impl FnMut(u64),
    ) -> Result<(), RegistryError> {
        while let Some(frame) = self.body.frame().await {
            let frame = frame.map_err(|e| RegistryError::Transfer {
                message: e.to_string(),
            })?;
            if let Ok(data) = frame.into_data() {
                buf.extend_from_slice(&data);
                if buf.len() as u64 > limit {
                    return Err(RegistryError::TooLarge { limit });
                }
                progress(buf.len() as u64);
            }
        }
        Ok(())
    }
}

impl Client {
    pub fn new(host: &str, repo: &str, creds: Option<Credentials>) -> Result<Self, RegistryError> {
        // Docker Hub's registry API lives on its own host (dockerd's DefaultV2Registry).
        let host = if host == "docker.io" {
            "registry-1.docker.io"
        } else {
            host
        };
        Ok(Self {
            host: host.into(),
            repo: repo.into(),
            creds,
            auth: None,
            actions: "pull",
            endpoints: tls::endpoints(host)?,
        })
    }

    /// A `registry-mirrors` entry: plain HTTP for an `http://` mirror, else as
    /// [`Client::new`] reaches its host.
    pub fn mirror(
        m: &super::settings::Mirror,
        repo: &str,
        creds: Option<Credentials>,
    ) -> Result<Self, RegistryError> {
        let endpoints = if m.plain_http {
            vec![Endpoint::Http]
        } else {
            tls::endpoints(&m.host)?
        };
        Ok(Self {
            host: m.host.clone(),
            repo: repo.into(),
            creds,
            auth: None,
            actions: "pull",
            endpoints,
        })
    }

    /// `https://host` or `http://host`, for messages and absolute URLs.
    pub fn base_url(&self) -> String {
        let scheme = self.endpoints.first().map_or("https", Endpoint::scheme);
        format!("{scheme}://{}", self.host)
    }

    /// Sends on the endpoint in use; if that fails before any answer and another
    /// endpoint is left (HTTP after HTTPS for insecure registries), switches to it.
    async fn send_any(
        &mut self,
        call: &Call<'_>,
        auth: Option<HeaderValue>,
    ) -> Result<Fetched, RegistryError> {
        loop {
            let Some(endpoint) = self.endpoints.first() else {
                return Err(RegistryError::Connect {
                    host: self.host.clone(),
                    message: "no endpoint left".into(),
                });
            };
            match request(&self.host, endpoint, call, auth.clone()).await {
                Err(e) if self.endpoints.len() > 1 => {
                    tracing::debug!(host = %self.host, error = %e, "falling back to the next registry endpoint");
                    self.endpoints.remove(0);
                }
                other => return other,
            }
        }
    }

    /// Asks for push rights too when fetching tokens.
    pub fn for_push(mut self) -> Self {
        self.actions = "pull,push";
        self
    }

    pub fn repo(&self) -> &str {
        &self.repo
    }

    /// Sends `call`, authenticating on a 401 and sending it once more.
    pub async fn call(&mut self, call: Call<'_>) -> Result<Fetched, RegistryError> {
        let first = self.send_any(&call, self.auth.clone()).await?;
        if first.status != StatusCode::UNAUTHORIZED {
            return Ok(first);
        }
        let challenge = first
            .headers
            .get(header::WWW_AUTHENTICATE)
            .and_then(|v| v.to_str().ok())
            .unwrap_or("")
            .to_string();
        self.auth = Some(self.authorize(&challenge).await?);
        self.send_any(&call, self.auth.clone()).await
    }

    pub fn host(&self) -> &str {
        &self.host
    }

    /// GET `/v2/<repo>/<kind>/<reference>`, authenticating on a 401.
    pub async fn get(
        &mut self,
        kind: &str,
        reference: &str,
        accept: &str,
    ) -> Result<Fetched, RegistryError> {
        self.get_from(kind, reference, accept, 0).await
    }

    /// [`Client::get`] of the bytes from `offset` on (a `Range` request when non-zero).
    pub async fn get_from(
        &mut self,
        kind: &str,
        reference: &str,
        accept: &str,
        offset: u64,
    ) -> Result<Fetched, RegistryError> {
        let path = format!("/v2/{}/{kind}/{reference}", self.repo);
        self.call(Call {
            method: Method::GET,
            path: &path,
            accept,
            content_type: "",
            body: Bytes::new(),
            range_from: offset,
            content_range: None,
        })
        .await
    }

    /// Checks credentials the way `docker login` needs: `GET /v2/` must succeed.
    pub async fn ping(&mut self) -> Result<(), RegistryError> {
        let first = self.send("/v2/", "", None).await?;
        let status = if first.status == StatusCode::UNAUTHORIZED {
            let challenge = first
                .headers
                .get(header::WWW_AUTHENTICATE)
                .and_then(|v| v.to_str().ok())
                .unwrap_or("")
                .to_string();
            let auth = self.authorize(&challenge).await?;
            self.send("/v2/", "", Some(auth)).await?.status
        } else {
            first.status
        };
        match status {
            s if s.is_success() => Ok(()),
            StatusCode::UNAUTHORIZED => Err(RegistryError::Unauthorized {
                host: self.host.clone(),
            }),
            s => Err(RegistryError::Status {
                url: format!("{}/v2/", self.base_url()),
                status: s.as_u16(),
                message: String::new(),
            }),
        }
    }

    async fn authorize(&self, challenge: &str) -> Result<HeaderValue, RegistryError> {
        let (scheme, params) = parse_challenge(challenge);
        if scheme.eq_ignore_ascii_case("basic") {
            let c = self
                .creds
                .as_ref()
                .ok_or_else(|| RegistryError::Unauthorized {
                    host: self.host.clone(),
                })?;
            return Ok(basic(c));
        }
        if !scheme.eq_ignore_ascii_case("bearer") {
            return Err(RegistryError::Challenge {
                challenge: challenge.into(),
            });
        }
        let realm = params
            .iter()
            .find(|(k, _)| k == "realm")
            .map(|(_, v)| v.clone());
        let realm = realm.ok_or_else(|| RegistryError::Challenge {
            challenge: challenge.into(),
        })?;
        let mut url = url::Url::parse(&realm).map_err(|_| RegistryError::Challenge {
            challenge: challenge.into(),
        })?;
        {
            let mut q = url.query_pairs_mut();
            if let Some((_, s)) = params.iter().find(|(k, _)| k == "service") {
                q.append_pair("service", s);
            }
            let scope = params
                .iter()
                .find(|(k, _)| k == "scope")
                .map(|(_, v)| v.clone())
                .or_else(|| {
                    (!self.repo.is_empty())
                        .then(|| format!("repository:{}:{}", self.repo, self.actions))
                });
            if let Some(scope) = scope {
                q.append_pair("scope", &scope);
            }
        }
        let token_host = match (url.host_str(), url.port_or_known_default()) {
            (Some(h), Some(p)) => format!("{h}:{p}"),
            _ => {
                return Err(RegistryError::Challenge {
                    challenge: challenge.into(),
                })
            }
        };
        let endpoint = match url.scheme() {
            "http" => Endpoint::Http,
            "https" => tls::endpoints(&token_host)?.remove(0),
            _ => {
                return Err(RegistryError::Challenge {
                    challenge: challenge.into(),
                })
            }
        };
        let path = match url.query() {
            Some(q) => format!("{}?{q}", url.path()),
            None => url.path().to_string(),
        };
        let resp = request(
            &token_host,
            &endpoint,
            &get(&path),
            self.creds.as_ref().map(basic),
        )
        .await?;
        if !resp.status.is_success() {
            return Err(RegistryError::Unauthorized {
                host: self.host.clone(),
            });
        }
        let body = resp.read_all(1 << 20, |_| {}).await?;
        #[derive(serde::Deserialize)]
        struct Token {
            #[serde(default)]
            token: String,
            #[serde(default)]
            access_token: String,
        }
        let t: Token = serde_json::from_slice(&body).map_err(|e| RegistryError::Decode {
            what: "token response",
            message: e.to_string(),
        })?;
        let token = if t.token.is_empty() {
            t.access_token
        } else {
            t.token
        };
        HeaderValue::from_str(&format!("Bearer {token}")).map_err(|_| RegistryError::Challenge {
            challenge: challenge.into(),
        })
    }

    async fn send(
        &mut self,
        path: &str,
        accept: &str,
        auth: Option<HeaderValue>,
    ) -> Result<Fetched, RegistryError> {
        let mut c = get(path);
        c.accept = accept;
        self.send_any(&c, auth).await
    }
}

fn get(path: &str) -> Call<'_> {
    Call {
        method: Method::GET,
        path,
        accept: "",
        content_type: "",
        body: Bytes::new(),
        range_from: 0,
        content_range: None,
    }
}

fn basic(c: &Credentials) -> HeaderValue {
    let raw = format!("{}:{}", c.username, c.password);
    let enc = base64::engine::general_purpose::STANDARD.encode(raw);
    // Base64 output is always a valid header value.
    HeaderValue::from_str(&format!("Basic {enc}")).unwrap_or(HeaderValue::from_static(""))
}

/// Go's method names in error messages (`Get "https://..."`).
fn go_method(m: &Method) -> String {
    let s = m.as_str();
    let mut out = s[..1].to_string();
    out.push_str(&s[1..].to_ascii_lowercase());
    out
}

/// One request on a fresh connection; registries answer blobs with large bodies, so
/// connection reuse buys little here.
async fn request(
    host: &str,
    endpoint: &Endpoint,
    call: &Call<'_>,
    auth: Option<HeaderValue>,
) -> Result<Fetched, RegistryError> {
    let connect = |e: std::io::Error| RegistryError::Connect {
        host: host.into(),
        message: e.to_string(),
    };
    let has_port = host.rsplit_once(':').is_some_and(|(n, p)| {
        !n.is_empty() && !p.is_empty() && p.bytes().all(|b| b.is_ascii_digit())
    }) && !host.ends_with(']');
    let stream = if has_port {
        TcpStream::connect(host).await
    } else {
        let port = if matches!(endpoint, Endpoint::Http) {
            80
        } else {
            443
        };
        TcpStream::connect((tls::hostname(host), port)).await
    }
    .map_err(connect)?;
    match endpoint {
        Endpoint::Http => exchange(stream, host, call, auth).await,
        Endpoint::Https(config) => {
            let connector = tokio_rustls::TlsConnector::from(config.clone());
            let tls = connector
                .connect(tls::server_name(host)?, stream)
                .await
                .map_err(|e| RegistryError::Tls {
                    method: go_method(&call.method),
                    url: format!("https://{host}{}", call.path),
                    message: tls::describe_tls_error(&e, host),
                })?;
            exchange(tls, host, call, auth).await
        }
    }
}

async fn exchange<I>(
    io: I,
    host: &str,
    call: &Call<'_>,
    auth: Option<HeaderValue>,
) -> Result<Fetched, RegistryError>
where
    I: AsyncRead + AsyncWrite + Unpin + Send + 'static,
{
    let (mut sender, conn) = hyper::client::conn::http1::handshake(TokioIo::new(io))
        .await
        .map_err(|e| RegistryError::Transfer {
            message: e.to_string(),
        })?;
    tokio::spawn(async move {
        if let Err(e) = conn.await {
            tracing::debug!(error = %e, "registry connection ended");
        }
    });
    let mut req = Request::builder()
        .method(call.method.clone())
        .uri(call.path)
        .header(header::HOST, host)
        .header(header::USER_AGENT, "berth-engine");
    if !call.accept.is_empty() {
        req = req.header(header::ACCEPT, call.accept);
    }
    if !call.content_type.is_empty() {
        req = req.header(header::CONTENT_TYPE, call.content_type);
    }
    if call.range_from > 0 {
        req = req.header(header::RANGE, format!("bytes={}-", call.range_from));
    }
    if let Some((first, last)) = call.content_range {
        req = req.header(header::CONTENT_RANGE, format!("{first}-{last}"));
    }
    if let Some(a) = auth {
        req = req.header(header::AUTHORIZATION, a);
    }
    let req = req
        .body(Full::new(call.body.clone()))
        .map_err(|e| RegistryError::Transfer {
            message: e.to_string(),
        })?;
    let resp = sender
        .send_request(req)
        .await
        .map_err(|e| RegistryError::Transfer {
            message: e.to_string(),
        })?;
    let (parts, body) = resp.into_parts();
    Ok(Fetched {
        status: parts.status,
        headers: parts.headers,
        body,
    })
}

/// `Bearer realm="https://auth",service="registry",scope="repository:x:pull"`.
pub fn parse_challenge(s: &str) -> (String, Vec<(String, String)>) {
    let s = s.trim();
    let (scheme, rest) = s.split_once(' ').unwrap_or((s, ""));
    let mut params = Vec::new();
    let mut rest = rest.trim();
    while !rest.is_empty() {
        let Some((key, after)) = rest.split_once('=') else {
            break;
        };
        let key = key
            .trim()
            .trim_start_matches(',')
            .trim()
            .to_ascii_lowercase();
        let after = after.trim_start();
        let (value, remaining) = if let Some(quoted) = after.strip_prefix('"') {
            match quoted.find('"') {
                Some(end) => (&quoted[..end], &quoted[end + 1..]),
                None => (quoted, ""),
            }
        } else {
            match after.find(',') {
                Some(end) => (&after[..end], &after[end..]),
                None => (after, ""),
            }
        };
        params.push((key, value.to_string()));
        rest = remaining.trim_start_matches(',').trim();
    }
    (scheme.to_string(), params)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn parses_bearer_challenge() {
        let (scheme, p) = parse_challenge(
            r#"Bearer realm="http://127.0.0.1:1/token",service="reg",scope="repository:a/b:pull,push""#,
        );
        assert_eq!(scheme, "Bearer");
        assert_eq!(p[0], ("realm".into(), "http://127.0.0.1:1/token".into()));
        assert_eq!(p[1], ("service".into(), "reg".into()));
        assert_eq!(p[2], ("scope".into(), "repository:a/b:pull,push".into()));
        let (scheme, p) = parse_challenge(r#"Basic realm="basic-realm""#);
        assert_eq!(scheme, "Basic");
        assert_eq!(p, vec![("realm".into(), "basic-realm".into())]);
    }
}
