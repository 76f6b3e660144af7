//! Image routes beyond pull/push/import: `POST /commit`, `GET /images/{name}/history`,
//! `POST /build`, save/load and prune. Routed here before the main table so the shared
//! route file only needs one variant.

use std::sync::Arc;

use futures::StreamExt;

use http::{Method, Request, Response, StatusCode};
use hyper::body::Incoming;
use serde_json::json;

use super::filters::PruneFilters;
use super::handlers::run_to_end;
use super::image_filters::{self, ImageFilters};
use super::{json_response, typed_response, ApiError, Body};
use crate::backend::Backend;
use crate::daemon::{CommitOptions, Daemon, DaemonError};

/// A request body as the byte stream load and import read while it arrives.
pub fn upload(
    body: Incoming,
) -> impl futures::Stream<Item = std::io::Result<bytes::Bytes>> + Send + Unpin + 'static {
    http_body_util::BodyStream::new(body).filter_map(|f| {
        std::future::ready(match f {
            Ok(frame) => frame.into_data().ok().map(Ok),
            Err(e) => Some(Err(std::io::Error::other(format!(
                "read the request body: {e}"
            )))),
        })
    })
}

/// `docker import <url>`: the download lands in a temp file under `dir` (unlinked once
/// open), then streams from it like an upload.
pub async fn download_upload(
    url: &str,
    dir: &std::path::Path,
) -> Result<crate::backend::UploadStream, crate::build::BuildError> {
    let tmp = dir.join(format!(
        "download-{}",
        hex::encode(rand::random::<[u8; 8]>())
    ));
    let opened = async {
        crate::build::remote::download(url, &tmp).await?;
        tokio::fs::File::open(&tmp)
            .await
            .map_err(|source| crate::build::BuildError::Io {
                op: "open",
                path: tmp.clone(),
                source,
            })
    }
    .await;
    let _ = tokio::fs::remove_file(&tmp).await;
    let file = opened?;
    let chunks = futures::stream::unfold(Some(file), |file| async move {
        let mut file = file?;
        let mut buf = bytes::BytesMut::zeroed(1 << 20);
        match tokio::io::AsyncReadExt::read(&mut file, &mut buf).await {
            Ok(0) => None,
            Ok(n) => {
                buf.truncate(n);
                Some((Ok(buf.freeze()), Some(file)))
            }
            Err(e) => Some((Err(e), None)),
        }
    });
    Ok(Box::pin(chunks))
}

/// The routes this module serves.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum ImageRoute {
    Commit {
        container: String,
        opts: CommitQuery,
    },
    History {
        name: String,
    },
    Build(super::build::BuildQuery),
    List {
        filters: String,
    },
    Save {
        names: Vec<String>,
    },
    Load {
        quiet: bool,
    },
    Prune {
        filters: String,
    },
    /// `POST /build/prune` (`docker builder prune`).
    BuildPrune(crate::build::cache::PruneOptions),
}

#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct CommitQuery {
    pub repo: String,
    pub tag: String,
    pub comment: String,
    pub author: String,
    pub changes: Vec<String>,
    pub pause: bool,
}

/// Raw query pairs, repeated keys kept (`changes`, `t`, `buildargs`...).
#[derive(Debug, Clone, Default)]
pub struct Pairs(pub Vec<(String, String)>);

impl Pairs {
    pub fn new(raw: &str) -> Self {
        Self(
            url::form_urlencoded::parse(raw.as_bytes())
                .into_owned()
                .collect(),
        )
    }
    pub fn get(&self, k: &str) -> String {
        self.0
            .iter()
            .find(|(key, _)| key == k)
            .map(|(_, v)| v.clone())
            .unwrap_or_default()
    }
    pub fn all(&self, k: &str) -> Vec<String> {
        self.0
            .iter()
            .filter(|(key, _)| key == k)
            .map(|(_, v)| v.clone())
            .collect()
    }
    /// moby's `httputils.BoolValue`.
    pub fn bool(&self, k: &str) -> bool {
        let v = self.get(k).trim().to_ascii_lowercase();
        !matches!(v.as_str(), "" | "0" | "no" | "false" | "none")
    }
}

/// `Some(route)` for the paths this module owns.
pub fn route(method: &Method, segs: &[&str], query: &str) -> Result<Option<ImageRoute>, ApiError> {
    let q = Pairs::new(query);
    let r = match (method, segs) {
        (&Method::POST, ["commit"]) => ImageRoute::Commit {
            container: q.get("container"),
            opts: CommitQuery {
                repo: q.get("repo"),
                tag: q.get("tag"),
                comment: q.get("comment"),
                author: q.get("author"),
                changes: q.all("changes"),
                // dockerd: an absent `pause` means pause (API >= 1.13).
                pause: q.get("pause").is_empty() || q.bool("pause"),
            },
        },
        (&Method::GET, ["images", name @ .., "history"]) if !name.is_empty() => {
            ImageRoute::History {
                name: name.join("/"),
            }
        }
        (&Method::GET, ["images", "json"]) => ImageRoute::List {
            filters: q.get("filters"),
        },
        (&Method::GET, ["images", "get"]) => ImageRoute::Save {
            names: q.all("names"),
        },
        (&Method::GET, ["images", name @ .., "get"]) if !name.is_empty() => ImageRoute::Save {
            names: vec![name.join("/")],
        },
        (&Method::POST, ["images", "load"]) => ImageRoute::Load {
            quiet: q.bool("quiet"),
        },
        (&Method::POST, ["images", "prune"]) => ImageRoute::Prune {
            filters: q.get("filters"),
        },
        (&Method::POST, ["build", "prune"]) => {
            ImageRoute::BuildPrune(crate::build::cache::PruneOptions::parse(
                &q.get("filters"),
                q.bool("all"),
                &q.get("keep-storage"),
            )?)
        }
        (&Method::POST, ["build"]) => ImageRoute::Build(super::build::BuildQuery::parse(&q)?),
        _ => return Ok(None),
    };
    Ok(Some(r))
}

pub async fn dispatch<B: Backend>(
    d: Arc<Daemon<B>>,
    route: ImageRoute,
    req: Request<Incoming>,
) -> Result<Response<Body>, ApiError> {
    match route {
        ImageRoute::Commit { container, opts } => {
            let changes = crate::build::meta::parse_changes(&opts.changes)
                .map_err(|e| ApiError::bad_request(e.to_string()))?;
            let opts = CommitOptions {
                repo: opts.repo,
                tag: opts.tag,
                comment: opts.comment,
                author: opts.author,
                changes,
                pause: opts.pause,
            };
            // Like the other state changes: finish even if the client hangs up.
            let id = run_to_end(async move { d.commit_container(&container, opts).await })
                .await?
                .map_err(ApiError::from)?;
            Ok(json_response(StatusCode::CREATED, &json!({ "Id": id })))
        }
        ImageRoute::History { name } => {
            let rows = d.image_history(&name).await?;
            Ok(json_response(StatusCode::OK, &json!(rows)))
        }
        ImageRoute::Build(q) => super::build::build(d, q, req).await,
        ImageRoute::BuildPrune(opts) => {
            let (ids, space) =
                run_to_end(async move { crate::build::cache::prune(&d, &opts).await }).await??;
            Ok(json_response(
                StatusCode::OK,
                &json!({ "CachesDeleted": ids, "SpaceReclaimed": space }),
            ))
        }
        ImageRoute::Save { names } => {
            if names.is_empty() {
                return Err(ApiError::bad_request("no image names given"));
            }
            let plan = d.save_plan(&names).await?;
            let len = plan.len();
            let (tx, rx) = tokio::sync::mpsc::channel(8);
            tokio::spawn(async move {
                // The body then ends short of its Content-Length: hyper cuts the
                // connection, so the client cannot take a truncated tar for a whole one.
                if let Err(e) = d.save_stream(plan, tx).await {
                    tracing::warn!(error = %e, "docker save stopped");
                }
            });
            let mut r = typed_response(super::channel_body(rx), "application/x-tar");
            r.headers_mut()
                .insert(http::header::CONTENT_LENGTH, http::HeaderValue::from(len));
            Ok(r)
        }
        ImageRoute::Load { quiet } => {
            let body = upload(req.into_body());
            let lines = run_to_end(async move { d.load_stream(body).await }).await??;
            // dockerd answers JSON messages either way; quiet only drops progress bars.
            let _ = quiet;
            let mut text = String::new();
            for l in lines {
                text.push_str(&json!({ "stream": format!("{l}\n") }).to_string());
                text.push('\n');
            }
            Ok(typed_response(super::full(text), "application/json"))
        }
        ImageRoute::Prune { filters } => {
            let (prune, args) = PruneFilters::parse(
                &filters,
                &["dangling", "label", "label!", "until"],
                image_filters::check_dangling,
            )?;
            let all = ImageFilters(args).dangling() == Some(false);
            let (gone, space) = run_to_end(async move {
                d.prune_images(all, |img| {
                    let config = img.runtime_config();
                    !prune.selects(&config.labels, image_filters::created_at(img))
                })
                .await
            })
            .await??;
            let list: Vec<_> = gone
                .into_iter()
                .map(|g| match g {
                    crate::daemon::ImageDeleted::Untagged(n) => json!({ "Untagged": n }),
                    crate::daemon::ImageDeleted::Deleted(id) => json!({ "Deleted": id }),
                })
                .collect();
            let list = if list.is_empty() {
                json!(null)
            } else {
                json!(list)
            };
            Ok(json_response(
                StatusCode::OK,
                &json!({"ImagesDeleted": list, "SpaceReclaimed": space}),
            ))
        }
        ImageRoute::List { filters } => {
            let f = ImageFilters::parse(&filters)?;
            let mut before = Vec::new();
            for r in f.get("before") {
                before.push(d.image(r).await?);
            }
            let mut since = Vec::new();
            for r in f.get("since") {
                since.push(d.image(r).await?);
            }
            let images = d.list_images().await?;
            let list: Vec<_> = image_filters::apply(images, &f, &before, &since)
                .into_iter()
                .map(|(img, tags, digests)| {
                    let mut v = crate::daemon::image_summary(&img);
                    v["RepoTags"] = json!(tags);
                    v["RepoDigests"] = json!(digests);
                    v
                })
                .collect();
            Ok(json_response(StatusCode::OK, &json!(list)))
        }
    }
}

impl From<crate::build::BuildError> for ApiError {
    fn from(e: crate::build::BuildError) -> Self {
        ApiError::from(DaemonError::Build {
            message: e.to_string(),
        })
    }
}
