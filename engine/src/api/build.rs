//! `POST /build` (the legacy builder): the context tar in the body, dockerd's JSON
//! message stream out. Problems found before the first step (no Dockerfile, a parse
//! error, a bad tag) are HTTP errors, as with dockerd; later ones end the stream with an
//! `errorDetail` line.

use std::collections::{BTreeMap, HashMap};
use std::path::PathBuf;
use std::sync::Arc;

use bytes::Bytes;
use http::{Request, Response, StatusCode};
use hyper::body::Incoming;
use serde_json::json;
use tokio::sync::mpsc;

use super::images_api::Pairs;
use super::{channel_body, typed_response, ApiError, Body};
use crate::backend::Backend;
use crate::build::dockerfile::{self, Instruction};
use crate::build::exec::{short, BuildOptions, Builder, Output};
use crate::build::{context, git, remote, steps, BuildError};
use crate::daemon::{Daemon, Stored};
use crate::refs::Reference;

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
    pub pull: bool,
    /// `remote`: a URL to a context tar or a Dockerfile.
    pub remote: String,
}

impl BuildQuery {
    pub fn parse(q: &Pairs) -> Result<Self, ApiError> {
        let remote = q.get("remote");
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
            pull: q.bool("pull"),
            remote,
        })
    }
}

/// Where the context comes from.
enum Source {
    /// The request body, unpacked as it arrives.
    Upload(mpsc::Receiver<Bytes>),
    /// A downloaded `remote` file.
    Remote(PathBuf),
    /// A git `remote` URL, fetched into the build dir.
    Git(String),
}

/// What is known before the first step runs.
struct Prepared {
    root: PathBuf,
    ctx: PathBuf,
    global: Vec<Instruction>,
    stages: Vec<Vec<Instruction>>,
}

fn prepare(root: PathBuf, source: Source, q: &BuildQuery) -> Result<Prepared, BuildError> {
    let mut ctx = root.join("context");
    match source {
        Source::Upload(rx) => context::unpack(remote::ChannelReader::new(rx), &ctx)?,
        Source::Remote(file) => context::from_download(&file, &ctx, &q.dockerfile)?,
        Source::Git(url) => ctx = git::fetch(&url, &root.join("git"))?,
    }
    let rel = context::clean(&q.dockerfile);
    let path = ctx.join(&rel);
    let text = std::fs::read_to_string(&path).map_err(|_| BuildError::Context {
        message: format!("Cannot locate specified Dockerfile: {}", q.dockerfile),
    })?;
    context::apply_ignore(&ctx, &rel)?;
    let instructions = dockerfile::parse(&text)?;
    for i in &instructions {
        crate::build::validate::check(i, &q.dockerfile)?;
    }
    // Like dockerd, bad triggers are found when the Dockerfile is read, not when run.
    for i in instructions.iter().filter(|i| i.keyword == "onbuild") {
        if let dockerfile::Args::Shell(t) = &i.args {
            crate::build::meta::check_onbuild(t)?;
        }
    }
    let (global, mut stages) = steps::plan(instructions, &q.target)?;
    // Like dockerd 20.10, each `--label` is a LABEL step of its own (sorted by key), shown
    // and recorded as `LABEL k=v`; the value is single-quoted so nothing in it expands.
    for (k, v) in &q.labels {
        let quoted = format!("'{}'", v.replace('\'', "'\\''"));
        let mut label = dockerfile::instruction(0, &format!("LABEL {}={quoted}", json!(k)))?;
        label.original = format!("LABEL {k}={v}");
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

/// Unpacks the context (the body as it uploads, or the `remote` download) and reads
/// the Dockerfile. Returns after the whole body was read: an answer before the upload
/// ends would break the client's pipe instead of showing it the error.
async fn receive_context(
    root: PathBuf,
    q: &BuildQuery,
    body: Incoming,
) -> Result<Prepared, BuildError> {
    let blocking = |source: Source| {
        let (root, q) = (root.clone(), q.clone());
        async move {
            tokio::task::spawn_blocking(move || prepare(root, source, &q))
                .await
                .map_err(|e| BuildError::Invalid {
                    message: format!("build context: {e}"),
                })?
        }
    };
    if git::is_git(&q.remote) {
        drop(body);
        return blocking(Source::Git(q.remote.clone())).await;
    }
    if !q.remote.is_empty() {
        drop(body);
        std::fs::create_dir_all(&root).map_err(|source| BuildError::Io {
            op: "create",
            path: root.clone(),
            source,
        })?;
        let file = root.join("remote-context");
        remote::download(&q.remote, &file)
            .await
            .map_err(|e| BuildError::Context {
                message: format!("error downloading remote context {}: {e}", q.remote),
            })?;
        return blocking(Source::Remote(file)).await;
    }
    let (tx, rx) = mpsc::channel(8);
    let pumping = tokio::spawn(remote::pump(body, tx));
    let prepared = blocking(Source::Upload(rx)).await;
    match pumping.await {
        Ok(Ok(())) => prepared,
        // A cut upload must not pass for a shorter context.
        Ok(Err(e)) => Err(BuildError::Context {
            message: format!("read the build context: {e}"),
        }),
        Err(e) => Err(BuildError::Context {
            message: format!("read the build context: {e}"),
        }),
    }
}

pub async fn build<B: Backend>(
    d: Arc<Daemon<B>>,
    q: BuildQuery,
    req: Request<Incoming>,
) -> Result<Response<Body>, ApiError> {
    let auth = req
        .headers()
        .get("X-Registry-Config")
        .and_then(|v| v.to_str().ok())
        .map(crate::build::base::registry_config)
        .unwrap_or_default();
    let root = d
        .config
        .exec_root
        .join(format!("build-{}", hex::encode(rand::random::<[u8; 8]>())));
    let prep = receive_context(root.clone(), &q, req.into_body()).await;
    let mut tags = Vec::new();
    for t in &q.tags {
        match Reference::parse(t) {
            Ok(r) => tags.push(r.with_default_tag()),
            Err(e) => {
                let _ = std::fs::remove_dir_all(&root);
                return Err(ApiError::bad_request(e.to_string()));
            }
        }
    }
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
        pull: q.pull,
        auth,
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
    Ok(typed_response(channel_body(rx), "application/json"))
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
