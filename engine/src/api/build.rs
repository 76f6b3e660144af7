//! `POST /build` (the legacy builder): the context tar in the body, dockerd's JSON
//! message stream out. Problems found before the first step (no Dockerfile, a parse
//! error, a bad tag) are HTTP errors, as with dockerd; later ones end the stream with an
//! `errorDetail` line.

use std::collections::{BTreeMap, HashMap};
use std::path::PathBuf;
use std::sync::Arc;

use http::{header, HeaderValue, Request, Response, StatusCode};
use http_body_util::BodyExt;
use hyper::body::Incoming;
use serde_json::json;
use tokio::sync::mpsc;

use super::images_api::Pairs;
use super::{channel_body, ApiError, Body};
use crate::backend::Backend;
use crate::build::dockerfile::{self, Instruction};
use crate::build::exec::{short, BuildOptions, Builder, Output};
use crate::build::{context, steps, BuildError};
use crate::daemon::{Daemon, Stored};
use crate::refs::Reference;

/// Contexts are held in memory while they are unpacked, like `docker import` bodies.
const CONTEXT_LIMIT: usize = 2 << 30;

#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct BuildQuery {
    pub tags: Vec<String>,
    pub dockerfile: String,
    pub build_args: Vec<(String, Option<String>)>,
    pub labels: Vec<(String, String)>,
    pub no_cache: bool,
    pub rm: bool,
    pub force_rm: bool,
    pub target: String,
    pub quiet: bool,
    pub network_mode: String,
}

impl BuildQuery {
    pub fn parse(q: &Pairs) -> Result<Self, ApiError> {
        if !q.get("remote").is_empty() {
            return Err(ApiError::new(
                StatusCode::NOT_IMPLEMENTED,
                "building from a remote context is not implemented yet in berth-engine",
            ));
        }
        if q.get("version") == "2" {
            return Err(ApiError::bad_request(
                "BuildKit (builder version 2) is not supported by berth-engine: use the legacy builder (DOCKER_BUILDKIT=0)",
            ));
        }
        let json_map = |key: &str| -> Result<HashMap<String, Option<String>>, ApiError> {
            let raw = q.get(key);
            if raw.is_empty() {
                return Ok(HashMap::new());
            }
            serde_json::from_str(&raw)
                .map_err(|e| ApiError::bad_request(format!("invalid {key} parameter: {e}")))
        };
        let mut build_args: Vec<_> = json_map("buildargs")?.into_iter().collect();
        build_args.sort();
        let mut labels: Vec<(String, String)> = json_map("labels")?
            .into_iter()
            .map(|(k, v)| (k, v.unwrap_or_default()))
            .collect();
        labels.sort();
        let force_rm = q.bool("forcerm");
        let rm = force_rm || q.get("rm").is_empty() || q.bool("rm");
        let dockerfile = match q.get("dockerfile") {
            d if d.is_empty() => "Dockerfile".to_string(),
            d => d,
        };
        Ok(Self {
            tags: q.all("t"),
            dockerfile,
            build_args,
            labels,
            no_cache: q.bool("nocache"),
            rm,
            force_rm,
            target: q.get("target"),
            quiet: q.bool("q"),
            network_mode: q.get("networkmode"),
        })
    }
}

/// What is known before the first step runs.
struct Prepared {
    root: PathBuf,
    ctx: PathBuf,
    global: Vec<Instruction>,
    stages: Vec<Vec<Instruction>>,
}

fn prepare(root: PathBuf, body: &[u8], q: &BuildQuery) -> Result<Prepared, BuildError> {
    let ctx = root.join("context");
    context::unpack(body, &ctx)?;
    let rel = context::clean(&q.dockerfile);
    let path = ctx.join(&rel);
    let text = std::fs::read_to_string(&path).map_err(|_| BuildError::Context {
        message: format!("Cannot locate specified Dockerfile: {}", q.dockerfile),
    })?;
    context::apply_ignore(&ctx, &rel)?;
    let instructions = dockerfile::parse(&text)?;
    let (global, mut stages) = steps::plan(instructions, &q.target)?;
    if !q.labels.is_empty() {
        let pairs: Vec<String> = q
            .labels
            .iter()
            .map(|(k, v)| format!("{}={}", json!(k), json!(v)))
            .collect();
        let label = dockerfile::instruction(0, &format!("LABEL {}", pairs.join(" ")))?;
        if let Some(last) = stages.last_mut() {
            last.push(label);
        }
    }
    Ok(Prepared {
        root,
        ctx,
        global,
        stages,
    })
}

fn status_of(e: &BuildError) -> StatusCode {
    match e {
        BuildError::Parse { .. } | BuildError::Invalid { .. } => StatusCode::BAD_REQUEST,
        BuildError::Daemon(d) => {
            ApiError::from(crate::daemon::DaemonError::Build {
                message: d.to_string(),
            })
            .status
        }
        _ => StatusCode::INTERNAL_SERVER_ERROR,
    }
}

pub async fn build<B: Backend>(
    d: Arc<Daemon<B>>,
    q: BuildQuery,
    req: Request<Incoming>,
) -> Result<Response<Body>, ApiError> {
    let body = http_body_util::Limited::new(req.into_body(), CONTEXT_LIMIT)
        .collect()
        .await
        .map(|c| c.to_bytes())
        .map_err(|e| ApiError::bad_request(format!("read the build context: {e}")))?;
    // Checked after the upload: an answer before it ends would break the client's pipe.
    let mut tags = Vec::new();
    for t in &q.tags {
        let r = Reference::parse(t).map_err(|e| ApiError::bad_request(e.to_string()))?;
        tags.push(r.with_default_tag());
    }
    let root = d
        .config
        .exec_root
        .join(format!("build-{}", hex::encode(rand::random::<[u8; 8]>())));
    let prep = {
        let (root, q) = (root.clone(), q.clone());
        tokio::task::spawn_blocking(move || prepare(root, &body, &q))
            .await
            .map_err(|e| ApiError::new(StatusCode::INTERNAL_SERVER_ERROR, e.to_string()))?
    };
    let prep = match prep {
        Ok(p) => p,
        Err(e) => {
            let _ = std::fs::remove_dir_all(&root);
            return Err(ApiError::new(status_of(&e), e.to_string()));
        }
    };
    let (tx, rx) = mpsc::channel(64);
    let out = Output { tx, quiet: q.quiet };
    let opts = BuildOptions {
        tags: tags.iter().map(|t| t.to_string()).collect(),
        dockerfile: q.dockerfile.clone(),
        build_args: q.build_args.iter().cloned().collect(),
        no_cache: q.no_cache,
        rm: q.rm,
        force_rm: q.force_rm,
        target: q.target.clone(),
        labels: q.labels.iter().cloned().collect::<BTreeMap<_, _>>(),
        quiet: q.quiet,
        network_mode: q.network_mode.clone(),
    };
    // The build runs on its own task: a client that hangs up does not leave half a step.
    tokio::spawn(async move {
        let familiar: Vec<String> = tags.iter().map(Reference::familiar).collect();
        let result = d
            .leased("build", run_build(&d, &opts, out.clone(), &prep))
            .await;
        let _ = tokio::task::spawn_blocking({
            let root = prep.root.clone();
            move || std::fs::remove_dir_all(root)
        })
        .await;
        match result {
            Ok(id) => {
                out.send(json!({"aux": {"ID": id}})).await;
                if out.quiet {
                    out.send(json!({"stream": format!("{id}\n")})).await;
                }
                out.stream(format!("Successfully built {}\n", short(&id)))
                    .await;
                for t in familiar {
                    out.stream(format!("Successfully tagged {t}\n")).await;
                }
            }
            Err(e) => out.send(steps::error_message(&e)).await,
        }
    });
    let mut r = Response::new(channel_body(rx));
    r.headers_mut().insert(
        header::CONTENT_TYPE,
        HeaderValue::from_static("application/json"),
    );
    Ok(r)
}

async fn run_build<B: Backend>(
    d: &Daemon<B>,
    opts: &BuildOptions,
    out: Output,
    prep: &Prepared,
) -> Result<String, BuildError> {
    let mut b = Builder {
        d,
        opts,
        out: out.clone(),
        root: prep.root.clone(),
        ctx: prep.ctx.clone(),
        global_args: Default::default(),
        done: Vec::new(),
        used_args: Default::default(),
        counter: 0,
    };
    let img = b.run(prep.global.clone(), prep.stages.clone()).await?;
    if let Some(w) = b.unused_args() {
        out.stream(w).await;
    }
    let manifest = img.manifest.clone().unwrap_or_default();
    if opts.tags.is_empty() {
        d.show_untagged(&manifest).await?;
    } else {
        let stored = Stored {
            id: img.id.clone(),
            manifest,
        };
        d.name_new_image(&stored, &opts.tags).await?;
    }
    Ok(img.id)
}
