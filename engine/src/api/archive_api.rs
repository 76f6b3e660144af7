//! The container filesystem routes: `HEAD|GET|PUT /containers/{id}/archive` (docker
//! cp), `GET /containers/{id}/export` and `GET /containers/{id}/changes` (docker diff).
//! Routed before the main table, like `images_api`, so the shared route file only
//! needs one variant. The work is in `crate::archive::container_fs`.

use std::io::Read;
use std::sync::Arc;

use bytes::{Buf, Bytes};
use http::{HeaderValue, Method, Request, Response, StatusCode};
use http_body_util::BodyExt;
use hyper::body::Incoming;
use serde_json::json;

use super::handlers::run_to_end;
use super::images_api::Pairs;
use super::{channel_body, empty, json_response, typed_response, ApiError, Body};
use crate::archive::{container_fs as cfs, stat};
use crate::backend::Backend;
use crate::daemon::{Daemon, DaemonError};

/// How long a refused upload is read on so its client sees the error.
const DRAIN_TIMEOUT: std::time::Duration = std::time::Duration::from_secs(30);

#[derive(Debug, Clone, PartialEq, Eq)]
pub enum ArchiveRoute {
    Stat {
        id: String,
        path: String,
    },
    Get {
        id: String,
        path: String,
    },
    Put {
        id: String,
        path: String,
        copy_uid_gid: bool,
        no_overwrite_dir_non_dir: bool,
    },
    Export {
        id: String,
    },
    Changes {
        id: String,
    },
}

/// `Some(route)` for the paths this module owns.
pub fn route(
    method: &Method,
    segs: &[&str],
    query: &str,
) -> Result<Option<ArchiveRoute>, ApiError> {
    let q = Pairs::new(query);
    let path = || {
        let p = q.get("path");
        if p.is_empty() {
            Err(ApiError::bad_request("bad parameter: pathcannot be empty"))
        } else {
            Ok(p)
        }
    };
    let r = match (method, segs) {
        (&Method::HEAD, ["containers", id, "archive"]) => ArchiveRoute::Stat {
            id: id.to_string(),
            path: path()?,
        },
        (&Method::GET, ["containers", id, "archive"]) => ArchiveRoute::Get {
            id: id.to_string(),
            path: path()?,
        },
        (&Method::PUT, ["containers", id, "archive"]) => ArchiveRoute::Put {
            id: id.to_string(),
            path: path()?,
            copy_uid_gid: q.bool("copyUIDGID"),
            no_overwrite_dir_non_dir: q.bool("noOverwriteDirNonDir"),
        },
        (&Method::GET, ["containers", id, "export"]) => ArchiveRoute::Export { id: id.to_string() },
        (&Method::GET, ["containers", id, "changes"]) => {
            ArchiveRoute::Changes { id: id.to_string() }
        }
        _ => return Ok(None),
    };
    Ok(Some(r))
}

fn fs_error(e: crate::archive::ArchiveError) -> ApiError {
    ApiError::from(DaemonError::Filesystem(e))
}

fn tar_response(rx: tokio::sync::mpsc::Receiver<Bytes>) -> Response<Body> {
    typed_response(channel_body(rx), "application/x-tar")
}

fn with_stat(mut r: Response<Body>, s: &stat::PathStat) -> Response<Body> {
    if let Ok(v) = HeaderValue::from_str(&s.header_value()) {
        r.headers_mut().insert(stat::HEADER, v);
    }
    r
}

pub async fn dispatch<B: Backend>(
    d: Arc<Daemon<B>>,
    route: ArchiveRoute,
    req: Request<Incoming>,
) -> Result<Response<Body>, ApiError> {
    match route {
        ArchiveRoute::Stat { id, path } => {
            let rec = d.container(&id)?;
            let s = cfs::stat_path(&d, &rec, &id, &path)
                .await
                .map_err(fs_error)?;
            Ok(with_stat(Response::new(empty()), &s))
        }
        ArchiveRoute::Get { id, path } => {
            let rec = d.container(&id)?;
            let (s, rx) = cfs::archive_path(&d, &rec, &id, &path)
                .await
                .map_err(fs_error)?;
            d.event_log.container("archive-path", &rec.id, &[]);
            Ok(with_stat(tar_response(rx), &s))
        }
        ArchiveRoute::Put {
            id,
            path,
            copy_uid_gid,
            no_overwrite_dir_non_dir,
        } => {
            let rec = d.container(&id)?;
            let (input, drained) = BodyReader::spawn(req.into_body());
            // Finished even if the client hangs up: a half-extracted tar is what the
            // client sent so far, but the view must be unmounted either way.
            let d2 = Arc::clone(&d);
            let result = run_to_end(async move {
                cfs::extract(
                    &d2,
                    &rec,
                    &id,
                    &path,
                    copy_uid_gid,
                    no_overwrite_dir_non_dir,
                    input,
                )
                .await
                .map(|()| d2.event_log.container("extract-to-dir", &rec.id, &[]))
            })
            .await?;
            if result.is_err() {
                // The CLI writes the whole tar before it reads the answer: the rest of
                // the body is read (and dropped) so it sees the error, not a broken pipe.
                let _ = tokio::time::timeout(DRAIN_TIMEOUT, drained).await;
            }
            result.map_err(fs_error)?;
            Ok(Response::new(empty()))
        }
        ArchiveRoute::Export { id } => {
            let rec = d.container(&id)?;
            let rx = cfs::export(&d, &rec).await.map_err(fs_error)?;
            d.event_log.container("export", &rec.id, &[]);
            Ok(tar_response(rx))
        }
        ArchiveRoute::Changes { id } => {
            let rec = d.container(&id)?;
            let list = cfs::container_changes(&d, &rec).await.map_err(fs_error)?;
            // dockerd's nil slice: `null` when nothing changed.
            let body = if list.is_empty() {
                json!(null)
            } else {
                json!(list)
            };
            Ok(json_response(StatusCode::OK, &body))
        }
    }
}

/// The request body as a blocking `Read` for the extraction thread.
struct BodyReader {
    rx: tokio::sync::mpsc::Receiver<Result<Bytes, String>>,
    cur: Bytes,
}

impl BodyReader {
    /// The reader, and a task that ends when the body has been read to its end (the
    /// part the reader did not take is dropped).
    fn spawn(mut body: Incoming) -> (Self, tokio::task::JoinHandle<()>) {
        let (tx, rx) = tokio::sync::mpsc::channel(8);
        let task = tokio::spawn(async move {
            let mut reader_gone = false;
            while let Some(frame) = body.frame().await {
                let msg = match frame {
                    Ok(f) => match f.into_data() {
                        Ok(b) => Ok(b),
                        Err(_) => continue,
                    },
                    Err(e) => Err(e.to_string()),
                };
                let stop = msg.is_err();
                if !reader_gone {
                    reader_gone = tx.send(msg).await.is_err();
                }
                if stop {
                    break;
                }
            }
        });
        let reader = Self {
            rx,
            cur: Bytes::new(),
        };
        (reader, task)
    }
}

impl Read for BodyReader {
    fn read(&mut self, buf: &mut [u8]) -> std::io::Result<usize> {
        while self.cur.is_empty() {
            match self.rx.blocking_recv() {
                Some(Ok(b)) => self.cur = b,
                Some(Err(e)) => return Err(std::io::Error::other(e)),
                None => return Ok(0),
            }
        }
        let n = buf.len().min(self.cur.len());
        buf[..n].copy_from_slice(&self.cur[..n]);
        self.cur.advance(n);
        Ok(n)
    }
}

#[cfg(test)]
mod tests {
    use super::super::route::{parse, Route};
    use super::*;

    #[test]
    fn routes_and_query_flags() {
        let r = parse(
            &Method::PUT,
            "/v1.50/containers/web/archive",
            Some("path=%2Ftmp&noOverwriteDirNonDir=true&copyUIDGID=1"),
        )
        .unwrap();
        assert_eq!(
            r.route,
            Route::Archive(ArchiveRoute::Put {
                id: "web".into(),
                path: "/tmp".into(),
                copy_uid_gid: true,
                no_overwrite_dir_non_dir: true,
            })
        );
        let r = parse(&Method::HEAD, "/containers/c/archive", Some("path=/x")).unwrap();
        assert!(matches!(r.route, Route::Archive(ArchiveRoute::Stat { .. })));
        let r = parse(&Method::GET, "/containers/c/changes", None).unwrap();
        assert!(matches!(
            r.route,
            Route::Archive(ArchiveRoute::Changes { .. })
        ));
        let r = parse(&Method::GET, "/containers/c/export", None).unwrap();
        assert!(matches!(
            r.route,
            Route::Archive(ArchiveRoute::Export { .. })
        ));
        let e = parse(&Method::GET, "/containers/c/archive", None).unwrap_err();
        assert_eq!(
            (e.status.as_u16(), e.message.as_str()),
            (400, "bad parameter: pathcannot be empty")
        );
    }
}
