//! The step executor: stages, the layer cache, and the output stream dockerd's legacy
//! builder sends ("Step 1/5 : ...", " ---> abc", "Successfully built ...").

use std::collections::{BTreeMap, HashMap, HashSet};
use std::path::{Path, PathBuf};

use bytes::Bytes;
use serde_json::{json, Value};
use tokio::sync::mpsc;

use super::dockerfile::{Args, Instruction};
use super::meta::MetaState;
use super::words::{self, Vars};
use super::BuildError;
use crate::backend::{Backend, Descriptor};
use crate::daemon::{Daemon, ImageView, BUILD_CACHE_PREFIX};
use crate::types::{ImageConfig, ImageRuntimeConfig, RootFs};

/// What `POST /build` asked for.
#[derive(Debug, Clone, Default)]
pub struct BuildOptions {
    /// Full image names (`docker.io/library/x:latest`).
    pub tags: Vec<String>,
    pub dockerfile: String,
    pub build_args: HashMap<String, Option<String>>,
    pub no_cache: bool,
    pub rm: bool,
    pub force_rm: bool,
    pub target: String,
    pub labels: BTreeMap<String, String>,
    pub quiet: bool,
    pub network_mode: String,
    /// `--pull`: pull base images even when present.
    pub pull: bool,
    /// Registry credentials from `X-Registry-Config`, by host.
    pub auth: HashMap<String, crate::registry::Credentials>,
}

/// The JSON message stream the CLI prints.
#[derive(Clone)]
pub struct Output {
    pub tx: mpsc::Sender<Bytes>,
    pub quiet: bool,
}

impl Output {
    pub async fn send(&self, v: Value) {
        let mut line = v.to_string();
        line.push('\n');
        // A client that hung up no longer reads; the build still finishes.
        let _ = self.tx.send(Bytes::from(line)).await;
    }
    pub async fn stream(&self, text: impl Into<String>) {
        if !self.quiet {
            self.send(json!({ "stream": text.into() })).await;
        }
    }
}

/// An image a step starts from or produced.
#[derive(Debug, Clone, Default)]
pub struct Img {
    pub id: String,
    pub config: ImageConfig,
    pub layers: Vec<Descriptor>,
    pub manifest: Option<Descriptor>,
}

impl Img {
    pub fn from_view(v: ImageView) -> Self {
        Self {
            id: v.id,
            config: v.config,
            layers: v.layers,
            manifest: Some(v.target),
        }
    }
    fn view(&self) -> ImageView {
        ImageView {
            names: Vec::new(),
            id: self.id.clone(),
            config: self.config.clone(),
            target: self.manifest.clone().unwrap_or_default(),
            layers: self.layers.clone(),
            // A stage's view is only a commit parent; nothing reads its size.
            layer_sizes: Vec::new(),
            created_at: None,
        }
    }
    pub fn runtime(&self) -> ImageRuntimeConfig {
        self.config.config.clone().unwrap_or_default()
    }
    pub fn scratch() -> Self {
        Self {
            config: ImageConfig {
                architecture: go_arch().into(),
                os: "linux".into(),
                rootfs: RootFs {
                    kind: "layers".into(),
                    diff_ids: Vec::new(),
                },
                config: Some(ImageRuntimeConfig::default()),
                ..Default::default()
            },
            ..Default::default()
        }
    }
}

fn go_arch() -> &'static str {
    match std::env::consts::ARCH {
        "x86_64" => "amd64",
        "aarch64" => "arm64",
        other => other,
    }
}

pub fn short(id: &str) -> &str {
    let hex = id.strip_prefix("sha256:").unwrap_or(id);
    &hex[..hex.len().min(12)]
}

/// One stage's state while it runs.
pub struct Stage {
    pub name: Option<String>,
    pub img: Img,
    pub meta: MetaState,
    /// Declared ARGs with their values (unset ones are absent).
    pub args: BTreeMap<String, String>,
}

impl Stage {
    pub fn vars(&self) -> Vars {
        let mut m: HashMap<String, String> = self.args.clone().into_iter().collect();
        for e in &self.img.runtime().env {
            if let Some((k, v)) = e.split_once('=') {
                m.insert(k.into(), v.into());
            }
        }
        Vars(m)
    }
}

/// Args every build accepts without an ARG line (dockerd's `BuiltinAllowedBuildArgs`).
const BUILTIN_ARGS: &[&str] = &[
    "HTTP_PROXY",
    "http_proxy",
    "HTTPS_PROXY",
    "https_proxy",
    "FTP_PROXY",
    "ftp_proxy",
    "NO_PROXY",
    "no_proxy",
    "ALL_PROXY",
    "all_proxy",
];

pub struct Builder<'a, B: Backend> {
    pub d: &'a Daemon<B>,
    pub opts: &'a BuildOptions,
    pub out: Output,
    /// The private build directory (context, mount points).
    pub root: PathBuf,
    pub ctx: PathBuf,
    pub global_args: BTreeMap<String, String>,
    pub done: Vec<(Option<String>, Img)>,
    pub used_args: HashSet<String>,
    pub counter: u32,
}

impl<B: Backend> Builder<'_, B> {
    pub fn scratch_dir(&mut self, what: &str) -> PathBuf {
        self.counter += 1;
        self.root.join(format!("{what}-{}", self.counter))
    }

    /// ARG: declares a variable, valued from `--build-arg` or its default.
    pub fn declare_arg(
        &mut self,
        i: &Instruction,
        vars: &Vars,
    ) -> Result<Vec<(String, Option<String>)>, BuildError> {
        let raw = match &i.args {
            Args::Shell(s) => s.clone(),
            Args::Json(v) => v.join(" "),
        };
        if raw.trim().is_empty() {
            return Err(BuildError::Invalid {
                message: "ARG requires at least one argument".into(),
            });
        }
        let mut out = Vec::new();
        for w in words::words(&raw, vars)? {
            let (k, default) = match w.split_once('=') {
                Some((k, v)) => (k.to_string(), Some(v.to_string())),
                None => (w.clone(), None),
            };
            self.used_args.insert(k.clone());
            let v = match self.opts.build_args.get(&k) {
                Some(Some(v)) => Some(v.clone()),
                _ => default,
            };
            out.push((k, v));
        }
        Ok(out)
    }

    /// The `[Warning]` line for `--build-arg`s no ARG consumed.
    pub fn unused_args(&self) -> Option<String> {
        let mut left: Vec<&String> = self
            .opts
            .build_args
            .keys()
            .filter(|k| !self.used_args.contains(*k) && !BUILTIN_ARGS.contains(&k.as_str()))
            .collect();
        if left.is_empty() {
            return None;
        }
        left.sort();
        let names: Vec<&str> = left.iter().map(|s| s.as_str()).collect();
        Some(format!(
            "[Warning] One or more build-args [{}] were not consumed\n",
            names.join(" ")
        ))
    }

    /// The cache key of a step: its parent image and everything the step depends on.
    pub fn cache_key(&self, stage: &Stage, what: &Value) -> String {
        let v = json!([stage.img.id, stage.args, what]);
        crate::daemon::sha256_digest(v.to_string().as_bytes())
    }

    /// A cached result for `key`, unless `--no-cache`.
    pub async fn cached(&self, key: &str) -> Result<Option<Img>, BuildError> {
        if self.opts.no_cache {
            return Ok(None);
        }
        Ok(self
            .d
            .stored_image(&format!("{BUILD_CACHE_PREFIX}{key}"))
            .await?
            .map(Img::from_view))
    }

    /// Stores a step's image under its cache key and makes it the stage's image.
    pub async fn commit_step(
        &self,
        stage: &mut Stage,
        config: ImageConfig,
        layers: Vec<Descriptor>,
        key: &str,
    ) -> Result<(), BuildError> {
        let stored = self.d.write_image(&config, &layers).await?;
        self.d.set_image_parent(&stored.id, &stage.img.id).await;
        self.d
            .name_image(&format!("{BUILD_CACHE_PREFIX}{key}"), &stored.manifest)
            .await?;
        stage.img = Img {
            id: stored.id,
            config,
            layers,
            manifest: Some(stored.manifest),
        };
        self.out
            .stream(format!(" ---> {}\n", short(&stage.img.id)))
            .await;
        Ok(())
    }

    /// Reuses a cached step when there is one; prints what dockerd prints for a hit.
    pub async fn try_cache(&self, stage: &mut Stage, key: &str) -> Result<bool, BuildError> {
        match self.cached(key).await? {
            Some(img) => {
                self.d
                    .mark_cache_used(&format!("{BUILD_CACHE_PREFIX}{key}"))
                    .await;
                self.out
                    .stream(format!(" ---> Using cache\n ---> {}\n", short(&img.id)))
                    .await;
                stage.img = img;
                Ok(true)
            }
            None => Ok(false),
        }
    }

    /// A new config for `stage`: its runtime config replaced, one history entry added.
    pub fn next_config(
        stage: &Stage,
        runtime: ImageRuntimeConfig,
        created_by: String,
        empty_layer: bool,
        diff_id: Option<String>,
    ) -> ImageConfig {
        let mut c = stage.img.config.clone();
        let now = crate::daemon::now_rfc3339();
        c.created = Some(now.clone());
        c.config = Some(runtime);
        let mut h = json!({"created": now, "created_by": created_by});
        if empty_layer {
            h["empty_layer"] = json!(true);
        }
        if let Some(a) = &stage.meta.author {
            h["author"] = json!(a);
            c.extra.insert("author".into(), json!(a));
        }
        c.history.push(h);
        c.extra
            .insert("docker_version".into(), json!(crate::ENGINE_VERSION));
        if let Some(d) = diff_id {
            c.rootfs.diff_ids.push(d);
        }
        c.rootfs.kind = "layers".into();
        c
    }

    /// Writes `stage`'s image if it has none yet (a RUN right after `FROM scratch`).
    pub async fn ensure_image(&self, stage: &mut Stage) -> Result<(), BuildError> {
        if stage.img.manifest.is_none() {
            let stored = self.d.write_image(&stage.img.config, &[]).await?;
            stage.img.id = stored.id;
            stage.img.manifest = Some(stored.manifest);
        }
        Ok(())
    }

    pub fn parent_view(stage: &Stage) -> ImageView {
        stage.img.view()
    }
}

/// Go's `%q` of a string slice, as history texts show CMD and ENTRYPOINT: `["a" "b"]`.
pub fn go_list(v: &[String]) -> String {
    let items: Vec<String> = v.iter().map(|s| format!("{s:?}")).collect();
    format!("[{}]", items.join(" "))
}

/// Whether `dest` (as written) names a directory.
pub fn names_dir(dest: &str) -> bool {
    dest.ends_with('/') || dest == "." || dest.ends_with("/.")
}

pub fn rel_display(p: &Path, root: &Path) -> String {
    p.strip_prefix(root)
        .unwrap_or(p)
        .to_string_lossy()
        .into_owned()
}
