//! Bytes from elsewhere, streamed to disk instead of held in memory: a request body
//! handed to blocking code as a `Read` (the build context is unpacked while it uploads),
//! and HTTP(S) downloads (`ADD <url>`, `docker build <url>`, `docker import <url>`).
//! HTTPS is verified against the system roots (registry/tls.rs `web_client_config`).

use std::io::{Read, Write};
use std::path::{Path, PathBuf};

use bytes::{Buf, Bytes};
use http::{header, Method, Request, StatusCode};
use http_body_util::{BodyExt, Empty};
use hyper::body::Incoming;
use hyper::client::conn::http1::SendRequest;
use hyper_util::rt::TokioIo;
use tokio::sync::mpsc;

use super::BuildError;

/// Redirects followed by a download, as Go's HTTP client does.
const MAX_REDIRECTS: usize = 10;

/// The receiving end of [`pump`], read on a blocking thread.
pub struct ChannelReader {
    rx: mpsc::Receiver<Bytes>,
    chunk: Bytes,
}

impl ChannelReader {
    pub fn new(rx: mpsc::Receiver<Bytes>) -> Self {
        Self {
            rx,
            chunk: Bytes::new(),
        }
    }
}

impl Read for ChannelReader {
    fn read(&mut self, buf: &mut [u8]) -> std::io::Result<usize> {
        while self.chunk.is_empty() {
            match self.rx.blocking_recv() {
                Some(c) => self.chunk = c,
                None => return Ok(0),
            }
        }
        let n = buf.len().min(self.chunk.len());
        buf[..n].copy_from_slice(&self.chunk[..n]);
        self.chunk.advance(n);
        Ok(n)
    }
}

/// Sends `body`'s frames to `tx` (a few in flight at a time). Once the reader is gone
/// (it finished early or failed) the rest is read and dropped, so the client can finish
/// sending and then see the answer. Returns the error reading the body, if any.
pub async fn pump(mut body: Incoming, tx: mpsc::Sender<Bytes>) -> Result<(), String> {
    let mut open = true;
    while let Some(frame) = body.frame().await {
        let frame = frame.map_err(|e| e.to_string())?;
        if let Ok(data) = frame.into_data() {
            if open && tx.send(data).await.is_err() {
                open = false;
            }
        }
    }
    Ok(())
}

/// What a download left on disk.
#[derive(Debug, Clone)]
pub struct Downloaded {
    pub path: PathBuf,
    /// The URL's last path segment (`ADD <url> /dir/` names the file after it).
    pub file_name: String,
    /// `Last-Modified`, as seconds since the epoch.
    pub modified: Option<i64>,
    pub size: u64,
}

/// A transport failure as Go's HTTP client words it: `Get "<url>": <why>`.
fn fail(url: &str, message: impl std::fmt::Display) -> BuildError {
    BuildError::Invalid {
        message: format!("Get {url:?}: {message}"),
    }
}

/// An OS error as Go words it: `connection refused`, not `Connection refused (os error
/// 111)`.
fn go_errno(e: &std::io::Error) -> String {
    let text = e.to_string();
    let text = match text.find(" (os error ") {
        Some(i) => &text[..i],
        None => &text,
    };
    let mut c = text.chars();
    match c.next() {
        Some(first) => first.to_lowercase().chain(c).collect(),
        None => String::new(),
    }
}

/// An HTTP/1.1 connection over `io` (TCP or TLS), driven on its own task.
async fn handshake<S>(io: S, url: &str) -> Result<SendRequest<Empty<Bytes>>, BuildError>
where
    S: tokio::io::AsyncRead + tokio::io::AsyncWrite + Unpin + Send + 'static,
{
    let (sender, conn) = hyper::client::conn::http1::handshake(TokioIo::new(io))
        .await
        .map_err(|e| fail(url, e))?;
    tokio::spawn(async move {
        let _ = conn.await;
    });
    Ok(sender)
}

/// Connects to the URL's host, over TLS for `https`.
async fn connect(parsed: &url::Url, url: &str) -> Result<SendRequest<Empty<Bytes>>, BuildError> {
    let https = match parsed.scheme() {
        "http" => false,
        "https" => true,
        other => return Err(fail(url, format!("unsupported protocol scheme {other:?}"))),
    };
    let host = parsed
        .host_str()
        .ok_or_else(|| fail(url, "no Host in request URL"))?;
    let bare = host.trim_start_matches('[').trim_end_matches(']');
    let port = parsed.port_or_known_default().unwrap_or(80);
    let stream = tokio::net::TcpStream::connect((bare, port))
        .await
        .map_err(|e| {
            fail(
                url,
                format!("dial tcp {bare}:{port}: connect: {}", go_errno(&e)),
            )
        })?;
    if !https {
        return handshake(stream, url).await;
    }
    let config = crate::registry::tls::web_client_config().map_err(|e| fail(url, e))?;
    let name = rustls_pki_types::ServerName::try_from(bare.to_string())
        .map_err(|e| fail(url, format!("invalid TLS server name: {e}")))?;
    let tls = tokio_rustls::TlsConnector::from(config)
        .connect(name, stream)
        .await
        .map_err(|e| {
            let why = crate::registry::tls::describe_tls_error(&e, bare);
            // dockerd 20.10 (Go 1.19) says just `x509: ...`.
            let why = why
                .strip_prefix("tls: failed to verify certificate: ")
                .unwrap_or(&why)
                .to_string();
            fail(url, why)
        })?;
    handshake(tls, url).await
}

/// GETs `url` (http or https) into the file `dest`, following redirects.
pub async fn download(url: &str, dest: &Path) -> Result<Downloaded, BuildError> {
    let mut current = url.to_string();
    for _ in 0..=MAX_REDIRECTS {
        let parsed = url::Url::parse(&current).map_err(|e| fail(url, e))?;
        let mut sender = connect(&parsed, &current).await?;
        let host = parsed.host_str().unwrap_or_default();
        let path = match parsed.query() {
            Some(q) => format!("{}?{q}", parsed.path()),
            None => parsed.path().to_string(),
        };
        let authority = match parsed.port() {
            Some(p) => format!("{host}:{p}"),
            None => host.to_string(),
        };
        let req = Request::builder()
            .method(Method::GET)
            .uri(path)
            .header(header::HOST, authority)
            .header(header::USER_AGENT, "berth-engine")
            .body(Empty::<Bytes>::new())
            .map_err(|e| fail(url, e))?;
        let resp = sender.send_request(req).await.map_err(|e| fail(url, e))?;
        let status = resp.status();
        if status.is_redirection() {
            let loc = resp
                .headers()
                .get(header::LOCATION)
                .and_then(|v| v.to_str().ok())
                .ok_or_else(|| fail(url, format!("{status} without a Location")))?;
            current = parsed.join(loc).map_err(|e| fail(url, e))?.to_string();
            continue;
        }
        if !status.is_success() {
            let body = resp
                .into_body()
                .collect()
                .await
                .map(|c| c.to_bytes())
                .unwrap_or_default();
            let text = String::from_utf8_lossy(&body[..body.len().min(512)]).into_owned();
            return Err(BuildError::Invalid {
                message: format!(
                    "failed to GET {url} with status {}: {text}",
                    status_text(status)
                ),
            });
        }
        let modified = resp
            .headers()
            .get(header::LAST_MODIFIED)
            .and_then(|v| v.to_str().ok())
            .and_then(|v| chrono::DateTime::parse_from_rfc2822(v).ok())
            .map(|t| t.timestamp());
        let file_name = parsed
            .path_segments()
            .and_then(|mut s| s.next_back().map(String::from))
            .filter(|s| !s.is_empty())
            .unwrap_or_default();
        let size = save_body(resp.into_body(), dest, url).await?;
        return Ok(Downloaded {
            path: dest.to_path_buf(),
            file_name,
            modified,
            size,
        });
    }
    Err(fail(
        url,
        format!("stopped after {MAX_REDIRECTS} redirects"),
    ))
}

fn status_text(s: StatusCode) -> String {
    match s.canonical_reason() {
        Some(r) => format!("{} {r}", s.as_u16()),
        None => s.as_u16().to_string(),
    }
}

/// Writes a body to `dest` frame by frame (a blocking writer thread keeps the runtime
/// free while the disk is slow).
async fn save_body(body: Incoming, dest: &Path, url: &str) -> Result<u64, BuildError> {
    let (tx, rx) = mpsc::channel::<Bytes>(16);
    let dest_owned = dest.to_path_buf();
    let writer = tokio::task::spawn_blocking(move || -> std::io::Result<u64> {
        let mut f = std::fs::File::create(&dest_owned)?;
        let n = std::io::copy(&mut ChannelReader::new(rx), &mut f)?;
        f.flush()?;
        Ok(n)
    });
    let pumped = pump(body, tx).await;
    let written = writer
        .await
        .map_err(|e| fail(url, e))?
        .map_err(|e| BuildError::Io {
            op: "write",
            path: dest.to_path_buf(),
            source: e,
        });
    pumped.map_err(|e| fail(url, e))?;
    written
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn os_errors_read_as_go_prints_them() {
        let e = std::io::Error::from_raw_os_error(111);
        assert_eq!(go_errno(&e), "connection refused");
    }

    #[test]
    fn channel_reader_reads_across_chunks() {
        let (tx, rx) = mpsc::channel(4);
        tx.try_send(Bytes::from_static(b"ab")).unwrap();
        tx.try_send(Bytes::new()).unwrap();
        tx.try_send(Bytes::from_static(b"cde")).unwrap();
        drop(tx);
        let mut s = String::new();
        ChannelReader::new(rx).read_to_string(&mut s).unwrap();
        assert_eq!(s, "abcde");
    }
}
