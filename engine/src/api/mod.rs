//! The Docker Engine API over HTTP/1.1 on a unix socket (hyper 1, with upgrades for
//! attach and exec).

mod archive_api;
mod build;
pub mod error;
pub(crate) mod filters;
mod handlers;
mod image_filters;
pub mod images_api;
pub mod networks;
pub mod route;
mod streams;
mod system;
mod system_df;
pub mod version;
mod volumes;

use std::convert::Infallible;
use std::sync::Arc;

use bytes::Bytes;
use http::{header, HeaderValue, Response, StatusCode};
use http_body_util::{combinators::BoxBody, BodyExt, Full, StreamBody};
use hyper::body::Frame;
use hyper_util::rt::TokioIo;
use tokio::net::UnixListener;
use tokio::sync::mpsc;
use tokio_stream::wrappers::ReceiverStream;
use tokio_stream::StreamExt;

use crate::backend::Backend;
use crate::daemon::Daemon;
pub use error::ApiError;

pub type Body = BoxBody<Bytes, Infallible>;

pub fn full(data: impl Into<Bytes>) -> Body {
    Full::new(data.into()).boxed()
}

pub fn empty() -> Body {
    full(Bytes::new())
}

/// A body that yields whatever the channel carries until its senders are gone.
pub fn channel_body(rx: mpsc::Receiver<Bytes>) -> Body {
    StreamBody::new(ReceiverStream::new(rx).map(|b| Ok::<_, Infallible>(Frame::data(b)))).boxed()
}

pub fn json_response(status: StatusCode, value: &serde_json::Value) -> Response<Body> {
    let mut body = value.to_string();
    body.push('\n');
    let mut r = typed_response(full(body), "application/json");
    *r.status_mut() = status;
    r
}

/// A 200 response whose body is of the given media type; the one place handlers set
/// Content-Type.
pub fn typed_response(body: Body, content_type: &'static str) -> Response<Body> {
    let mut r = Response::new(body);
    r.headers_mut()
        .insert(header::CONTENT_TYPE, HeaderValue::from_static(content_type));
    r
}

pub fn error_response(err: &ApiError) -> Response<Body> {
    let mut r = typed_response(full(err.body()), "application/json");
    *r.status_mut() = err.status;
    r
}

/// Accepts connections until the listener fails; each connection is served on its own
/// task.
pub async fn serve<B: Backend>(
    listener: UnixListener,
    daemon: Arc<Daemon<B>>,
) -> std::io::Result<()> {
    loop {
        let (stream, _) = listener.accept().await?;
        let daemon = Arc::clone(&daemon);
        tokio::spawn(async move {
            let svc = hyper::service::service_fn(move |req| {
                let daemon = Arc::clone(&daemon);
                async move { Ok::<_, Infallible>(handlers::handle(daemon, req).await) }
            });
            let conn = hyper::server::conn::http1::Builder::new()
                .serve_connection(TokioIo::new(stream), svc)
                .with_upgrades();
            if let Err(e) = conn.await {
                tracing::debug!(error = %e, "connection ended with an error");
            }
        });
    }
}

#[cfg(test)]
mod tests;
