//! The build loop: stages in order, one handler per instruction kind.

use std::collections::{BTreeMap, HashSet};
use std::time::Duration;

use serde_json::{json, Value};

use super::dockerfile::{Args, Instruction};
use super::exec::{go_list, names_dir, short, Builder, Img, Stage};
use super::fsops::{self, Owner};
use super::meta::{self, MetaState};
use super::words;
use super::{archive, context, remote, BuildError};
use crate::api::route::WaitCondition;
use crate::backend::{Backend, Descriptor};
use crate::daemon::MEDIA_LAYER_TAR;
use crate::jsonlog::Follower;
use crate::stdcopy::StdStream;
use crate::types::{ContainerConfig, CreateRequest, HostConfig, StrSlice};

fn is_url(s: &str) -> bool {
    s.starts_with("http://") || s.starts_with("https://")
}

/// The last path segment of a URL (what dockerd names an ADDed download).
fn url_file_name(u: &str) -> String {
    url::Url::parse(u)
        .ok()
        .and_then(|p| {
            p.path_segments()
                .and_then(|mut s| s.next_back().map(String::from))
        })
        .unwrap_or_default()
}

/// Instructions split into global ARGs and stages (each starting with its FROM), cut
/// after the `--target` stage.
pub fn plan(
    instructions: Vec<Instruction>,
    target: &str,
) -> Result<(Vec<Instruction>, Vec<Vec<Instruction>>), BuildError> {
    let mut global = Vec::new();
    let mut stages: Vec<Vec<Instruction>> = Vec::new();
    for i in instructions {
        if i.keyword == "from" {
            stages.push(vec![i]);
        } else if let Some(s) = stages.last_mut() {
            s.push(i);
        } else if i.keyword == "arg" {
            global.push(i);
        } else {
            return Err(BuildError::Invalid {
                message: "Please provide a source image with `from` prior to commit".into(),
            });
        }
    }
    if stages.is_empty() {
        return Err(BuildError::Invalid {
            message: "No image was generated. Is your Dockerfile empty?".into(),
        });
    }
    if !target.is_empty() {
        let pos = stages
            .iter()
            .position(|s| stage_name(&s[0]).is_some_and(|n| n.eq_ignore_ascii_case(target)))
            .ok_or_else(|| BuildError::Invalid {
                message: format!("failed to reach build target {target} in Dockerfile"),
            })?;
        stages.truncate(pos + 1);
    }
    Ok((global, stages))
}

/// `FROM image AS name` → `name`.
fn stage_name(from: &Instruction) -> Option<String> {
    let Args::Shell(s) = &from.args else {
        return None;
    };
    let w: Vec<&str> = s.split_whitespace().collect();
    match w.as_slice() {
        [_, kw, name] if kw.eq_ignore_ascii_case("as") => Some(name.to_ascii_lowercase()),
        _ => None,
    }
}

impl<B: Backend> Builder<'_, B> {
    /// Runs every step; returns the final image.
    pub async fn run(
        &mut self,
        global: Vec<Instruction>,
        stages: Vec<Vec<Instruction>>,
    ) -> Result<Img, BuildError> {
        let total = global.len() + stages.iter().map(Vec::len).sum::<usize>();
        let mut n = 0;
        for i in &global {
            n += 1;
            self.out
                .stream(format!("Step {n}/{total} : {}\n", i.original))
                .await;
            let vars = words::Vars(self.global_args.clone().into_iter().collect());
            for (k, v) in self.declare_arg(i, &vars)? {
                if let Some(v) = v {
                    self.global_args.insert(k, v);
                }
            }
        }
        let mut last: Option<Stage> = None;
        for steps in stages {
            if let Some(prev) = last.take() {
                self.done.push((prev.name, prev.img));
            }
            if let Some(name) = steps.first().and_then(stage_name) {
                if self
                    .done
                    .iter()
                    .any(|(n, _)| n.as_deref() == Some(name.as_str()))
                {
                    return Err(BuildError::Invalid {
                        message: format!("{name} stage name already used"),
                    });
                }
            }
            let mut stage: Option<Stage> = None;
            for i in steps {
                n += 1;
                self.out
                    .stream(format!("Step {n}/{total} : {}\n", i.original))
                    .await;
                match stage.as_mut() {
                    None => stage = Some(self.from(&i).await?),
                    Some(s) => self.step(s, &i).await?,
                }
            }
            last = stage;
        }
        let last = last.ok_or_else(|| BuildError::Invalid {
            message: "No image was generated. Is your Dockerfile empty?".into(),
        })?;
        if last.img.manifest.is_none() {
            return Err(BuildError::Invalid {
                message: "No image was generated. Is your Dockerfile empty?".into(),
            });
        }
        Ok(last.img)
    }

    async fn from(&mut self, i: &Instruction) -> Result<Stage, BuildError> {
        let vars = words::Vars(self.global_args.clone().into_iter().collect());
        let raw = match &i.args {
            Args::Shell(s) => s.clone(),
            Args::Json(v) => v.join(" "),
        };
        let w = words::words(&raw, &vars)?;
        let (base, name) = match w.as_slice() {
            [b] => (b.clone(), None),
            [b, kw, n] if kw.eq_ignore_ascii_case("as") => {
                (b.clone(), Some(n.to_ascii_lowercase()))
            }
            _ => {
                return Err(BuildError::Invalid {
                    message: "FROM requires either one or three arguments".into(),
                })
            }
        };
        let img = if base.eq_ignore_ascii_case("scratch") {
            Img::scratch()
        } else if let Some((_, img)) = self
            .done
            .iter()
            .rev()
            .find(|(n, _)| n.as_deref() == Some(&base.to_ascii_lowercase()))
        {
            img.clone()
        } else {
            self.base_image(&base).await?
        };
        // dockerd names the base image unless triggers run first (their steps follow).
        let has_triggers = img
            .config
            .config
            .as_ref()
            .and_then(|c| c.extra.get("OnBuild"))
            .and_then(|t| t.as_array())
            .is_some_and(|t| !t.is_empty());
        if img.manifest.is_some() && !has_triggers {
            self.out.stream(format!(" ---> {}\n", short(&img.id))).await;
        }
        let mut stage = Stage {
            name,
            img,
            meta: MetaState::default(),
            args: BTreeMap::new(),
        };
        self.run_triggers(&mut stage).await?;
        Ok(stage)
    }

    pub(super) async fn step(&mut self, s: &mut Stage, i: &Instruction) -> Result<(), BuildError> {
        match i.keyword.as_str() {
            "run" => self.run_step(s, i).await,
            "copy" | "add" => self.copy_step(s, i).await,
            "workdir" => self.workdir_step(s, i).await,
            "arg" => {
                let vars = s.vars();
                let mut text = Vec::new();
                for (k, v) in self.declare_arg(i, &vars)? {
                    // A global ARG redeclared without a value takes the global value.
                    let v = v.or_else(|| self.global_args.get(&k).cloned());
                    text.push(match &v {
                        Some(v) => format!("{k}={v}"),
                        None => k.clone(),
                    });
                    if let Some(v) = v {
                        s.args.insert(k, v);
                    }
                }
                self.meta_commit(s, i, format!("ARG {}", text.join(" ")), s.img.runtime())
                    .await
            }
            _ => {
                let mut runtime = s.img.runtime();
                let vars = s.vars();
                if !meta::apply(i, &mut runtime, &mut s.meta, &vars)? {
                    return Err(BuildError::Invalid {
                        message: format!(
                            "{} is not supported in this position",
                            i.keyword.to_uppercase()
                        ),
                    });
                }
                let text = match i.keyword.as_str() {
                    "cmd" => format!("CMD {}", go_list(runtime.cmd.as_slice())),
                    "entrypoint" => {
                        format!("ENTRYPOINT {}", go_list(runtime.entrypoint.as_slice()))
                    }
                    _ => i.original.clone(),
                };
                self.meta_commit(s, i, text, runtime).await
            }
        }
    }

    /// A config-only step: cached by its text, committed with an empty layer.
    async fn meta_commit(
        &self,
        s: &mut Stage,
        i: &Instruction,
        text: String,
        runtime: crate::types::ImageRuntimeConfig,
    ) -> Result<(), BuildError> {
        let key = self.cache_key(s, &json!(["meta", i.original, text]));
        if self.try_cache(s, &key).await? {
            return Ok(());
        }
        let cmd = super::probe::nop_command(&runtime, &text, false);
        self.probe(s, &runtime, cmd).await?;
        let by = format!("/bin/sh -c #(nop)  {text}");
        let config = Self::next_config(s, runtime, by, true, None);
        let layers = s.img.layers.clone();
        self.commit_step(s, config, layers, &key).await
    }

    async fn workdir_step(&mut self, s: &mut Stage, i: &Instruction) -> Result<(), BuildError> {
        let mut runtime = s.img.runtime();
        let vars = s.vars();
        meta::apply(i, &mut runtime, &mut s.meta, &vars)?;
        let key = self.cache_key(s, &json!(["workdir", runtime.working_dir]));
        if self.try_cache(s, &key).await? {
            return Ok(());
        }
        let text = format!("WORKDIR {}", runtime.working_dir);
        self.probe(
            s,
            &runtime,
            super::probe::nop_command(&runtime, &text, true),
        )
        .await?;
        let dir = runtime.working_dir.clone();
        let layer = self
            .fs_step(s, move |root| fsops::mkdir_in(root, &dir))
            .await?;
        let by = format!("/bin/sh -c #(nop) WORKDIR {}", runtime.working_dir);
        let mut layers = s.img.layers.clone();
        let diff_id = layer.as_ref().map(|l| l.digest.clone());
        let config = Self::next_config(s, runtime, by, layer.is_none(), diff_id);
        layers.extend(layer);
        self.commit_step(s, config, layers, &key).await
    }

    /// Mounts a new snapshot over the stage's image, lets `f` change it, and returns the
    /// changes as a layer (`None` when `f` changed nothing). The snapshot is removed.
    async fn fs_step<F>(&mut self, s: &mut Stage, f: F) -> Result<Option<Descriptor>, BuildError>
    where
        F: FnOnce(&std::path::Path) -> Result<bool, BuildError> + Send + 'static,
    {
        let key = format!("build-{}", hex::encode(rand::random::<[u8; 12]>()));
        let parent = crate::daemon::chain_id(&s.img.config.rootfs.diff_ids);
        let mounts = self
            .d
            .backend
            .snapshot_prepare(&key, &parent, Default::default())
            .await?;
        let target = self.scratch_dir("rootfs");
        let result = async {
            let m = mounts.clone();
            let changed = tokio::task::spawn_blocking(move || {
                let mounted = fsops::mount(&m, &target)?;
                let changed = f(mounted.path());
                mounted.unmount()?;
                let _ = std::fs::remove_dir(&target);
                changed
            })
            .await
            .map_err(|e| BuildError::Invalid {
                message: format!("file step aborted: {e}"),
            })??;
            if !changed {
                return Ok(None);
            }
            let layer = self
                .d
                .backend
                .diff_create(Vec::new(), mounts, MEDIA_LAYER_TAR)
                .await?;
            Ok(Some(layer))
        }
        .await;
        if let Err(e) = self.d.backend.snapshot_remove(&key).await {
            tracing::warn!(%key, error = %e, "removing a build snapshot failed");
        }
        result
    }

    async fn copy_step(&mut self, s: &mut Stage, i: &Instruction) -> Result<(), BuildError> {
        let add = i.keyword == "add";
        let kw = i.keyword.to_uppercase();
        let vars = s.vars();
        let mut list = match &i.args {
            Args::Json(v) => v.clone(),
            Args::Shell(sh) => words::words(sh, &vars)?,
        };
        if list.len() < 2 {
            return Err(BuildError::Invalid {
                message: format!("{kw} requires at least two arguments, but only one was provided. Destination could not be determined."),
            });
        }
        let dest_raw = list.pop().unwrap_or_default();
        for (k, _) in &i.flags {
            if !matches!(k.as_str(), "from" | "chown" | "chmod") || (add && k == "from") {
                return Err(BuildError::Invalid {
                    message: format!("Unknown flag: {k}"),
                });
            }
        }
        if i.flag("chmod").is_some() {
            // dockerd 20.10's legacy builder refuses it at the step, in these words.
            return Err(BuildError::Invalid {
                message: "the --chmod option requires BuildKit. Refer to https://docs.docker.com/go/buildkit/ to learn how to build images with BuildKit enabled".into(),
            });
        }
        if add && list.iter().any(|s| is_url(s)) {
            if i.flag("from").is_some() {
                return Err(BuildError::Invalid {
                    message: "ADD --from with a URL source is not valid".into(),
                });
            }
            let dir = self.download_sources(&list).await?;
            let names = list.iter().map(|u| url_file_name(u)).collect();
            // Downloads are copied as they are: ADD unpacks local archives only.
            return self
                .copy_from(s, i, &dir, names, dest_raw, false, &kw)
                .await;
        }
        // The source tree: the context, or another stage's / image's file system.
        let mut from_snapshot: Option<(String, fsops::Mounted)> = None;
        let src_root = match i.flag("from") {
            None => self.ctx.clone(),
            Some(f) => {
                let f = words::expand(f, &vars)?;
                let img = self.copy_source(&f).await?;
                let key = format!("build-from-{}", hex::encode(rand::random::<[u8; 12]>()));
                let parent = crate::daemon::chain_id(&img.config.rootfs.diff_ids);
                let mounts = self
                    .d
                    .backend
                    .snapshot_prepare(&key, &parent, Default::default())
                    .await?;
                let target = self.scratch_dir("from");
                match fsops::mount(&mounts, &target) {
                    Ok(m) => {
                        let p = m.path().to_path_buf();
                        from_snapshot = Some((key, m));
                        p
                    }
                    Err(e) => {
                        let _ = self.d.backend.snapshot_remove(&key).await;
                        return Err(e);
                    }
                }
            }
        };
        let result = self
            .copy_from(s, i, &src_root, list, dest_raw, add, &kw)
            .await;
        if let Some((key, m)) = from_snapshot {
            let _ = m.unmount();
            let _ = self.d.backend.snapshot_remove(&key).await;
        }
        result
    }

    #[allow(clippy::too_many_arguments)]
    async fn copy_from(
        &mut self,
        s: &mut Stage,
        i: &Instruction,
        src_root: &std::path::Path,
        srcs: Vec<String>,
        dest_raw: String,
        add: bool,
        kw: &str,
    ) -> Result<(), BuildError> {
        let mut paths = Vec::new();
        let from_image = i.flag("from").is_some();
        for src in &srcs {
            let found = context::sources(src_root, src).map_err(|e| match e {
                BuildError::Invalid { message } => {
                    let mut message = message.replacen("COPY failed", &format!("{kw} failed"), 1);
                    // A stage or image is not the build context: dockerd says just `stat`.
                    if from_image {
                        message = message.replacen(
                            "file not found in build context or excluded by .dockerignore: ",
                            "",
                            1,
                        );
                    }
                    BuildError::Invalid { message }
                }
                e => e,
            })?;
            paths.extend(found);
        }
        let sum = context::checksum(&paths, src_root)?;
        let owner = match i.flag("chown") {
            None => None,
            Some(u) => {
                let u = words::expand(u, &s.vars())?;
                let eu = crate::users::for_image(&*self.d.backend, &s.img.layers, &u)
                    .await
                    .map_err(crate::daemon::DaemonError::from)?;
                Some(Owner {
                    uid: eu.uid,
                    gid: eu.gid,
                })
            }
        };
        let runtime = s.img.runtime();
        let dest_abs = meta::join_workdir(&runtime.working_dir, &dest_raw);
        let key = self.cache_key(
            s,
            &json!([
                kw,
                sum,
                dest_abs,
                names_dir(&dest_raw),
                owner.map(|o| (o.uid, o.gid)),
                srcs
            ]),
        );
        if self.try_cache(s, &key).await? {
            return Ok(());
        }
        let kind = if paths.len() > 1 {
            "multi"
        } else if paths[0].is_dir() {
            "dir"
        } else {
            "file"
        };
        let as_dir = names_dir(&dest_raw) || paths.len() > 1;
        let layer = self
            .fs_step(s, move |root| {
                let dest = fsops::resolve_in(root, &dest_abs);
                let dir_dest = as_dir || dest.is_dir();
                for p in &paths {
                    let o = owner.unwrap_or_default();
                    if p.is_dir() {
                        fsops::copy_into(p, &dest, o)?;
                    } else if add && archive::is_archive(p)? {
                        archive::extract_into(p, &dest, owner)?;
                    } else if dir_dest {
                        let name = p.file_name().unwrap_or_default();
                        std::fs::create_dir_all(&dest).map_err(|source| BuildError::Io {
                            op: "create",
                            path: dest.clone(),
                            source,
                        })?;
                        fsops::copy_into(p, &dest.join(name), o)?;
                    } else {
                        fsops::copy_into(p, &dest, o)?;
                    }
                }
                Ok(true)
            })
            .await?;
        let by = format!("/bin/sh -c #(nop) {kw} {kind}:{sum} in {dest_raw} ");
        let mut layers = s.img.layers.clone();
        let diff_id = layer.as_ref().map(|l| l.digest.clone());
        let config = Self::next_config(s, runtime, by, layer.is_none(), diff_id);
        layers.extend(layer);
        self.commit_step(s, config, layers, &key).await
    }

    /// Downloads ADD's URL sources into a scratch dir, each named after its URL, mode
    /// 0600 and dated by `Last-Modified` as dockerd does.
    async fn download_sources(
        &mut self,
        urls: &[String],
    ) -> Result<std::path::PathBuf, BuildError> {
        if !urls.iter().all(|u| is_url(u)) {
            return Err(BuildError::Invalid {
                message:
                    "ADD of URLs together with context files is not implemented yet in berth-engine"
                        .into(),
            });
        }
        let dir = self.scratch_dir("url");
        let io = |op: &'static str, path: &std::path::Path| {
            let path = path.to_path_buf();
            move |source| BuildError::Io { op, path, source }
        };
        std::fs::create_dir_all(&dir).map_err(io("create", &dir))?;
        for u in urls {
            let name = url_file_name(u);
            if name.is_empty() {
                return Err(BuildError::Invalid {
                    message: format!("cannot determine filename from url: {u}"),
                });
            }
            let dest = dir.join(&name);
            // dockerd wraps every source failure in `ADD failed: `.
            let got = remote::download(u, &dest).await.map_err(|e| match e {
                BuildError::Invalid { message } => BuildError::Invalid {
                    message: format!("ADD failed: {message}"),
                },
                other => other,
            })?;
            use std::os::unix::fs::PermissionsExt;
            std::fs::set_permissions(&dest, std::fs::Permissions::from_mode(0o600))
                .map_err(io("chmod", &dest))?;
            if let Some(t) = got.modified.and_then(|t| u64::try_from(t).ok()) {
                let when = std::time::UNIX_EPOCH + Duration::from_secs(t);
                std::fs::File::options()
                    .write(true)
                    .open(&dest)
                    .and_then(|f| f.set_modified(when))
                    .map_err(io("set the time of", &dest))?;
            }
        }
        Ok(dir)
    }

    /// `COPY --from=`: a finished stage by name or index, else a local image.
    async fn copy_source(&self, f: &str) -> Result<Img, BuildError> {
        if let Ok(n) = f.parse::<usize>() {
            return self.done.get(n).map(|(_, img)| img.clone()).ok_or_else(|| {
                BuildError::Invalid {
                    message: format!(
                        "invalid from flag value {f}: refers to current build stage or a later one"
                    ),
                }
            });
        }
        let lower = f.to_ascii_lowercase();
        if let Some((_, img)) = self
            .done
            .iter()
            .rev()
            .find(|(n, _)| n.as_deref() == Some(&lower))
        {
            return Ok(img.clone());
        }
        self.base_image(f).await
    }

    async fn run_step(&mut self, s: &mut Stage, i: &Instruction) -> Result<(), BuildError> {
        let runtime = s.img.runtime();
        let mut cmd = meta::command(i, &runtime);
        // A bare `RUN` runs the shell with no command, which fails as in dockerd.
        if matches!(&i.args, Args::Shell(t) if t.trim().is_empty()) {
            cmd.pop();
        }
        if cmd.is_empty() {
            return Err(BuildError::Invalid {
                message: "RUN requires at least one argument".into(),
            });
        }
        if let Some((flag, _)) = i.flags.first() {
            // dockerd 20.10's legacy builder refuses RUN's BuildKit flags at the step.
            return Err(BuildError::Invalid {
                message: format!("the --{flag} option requires BuildKit. Refer to https://docs.docker.com/go/buildkit/ to learn how to build images with BuildKit enabled"),
            });
        }
        // ARG values reach the command's environment but not the image (unless an ENV
        // of the same name overrides them).
        let env_keys: HashSet<&str> = runtime
            .env
            .iter()
            .filter_map(|e| e.split_once('=').map(|(k, _)| k))
            .collect();
        let arg_env: Vec<String> = s
            .args
            .iter()
            .filter(|(k, _)| !env_keys.contains(k.as_str()))
            .map(|(k, v)| format!("{k}={v}"))
            .collect();
        let key = self.cache_key(s, &json!(["run", cmd, arg_env]));
        if self.try_cache(s, &key).await? {
            return Ok(());
        }
        self.ensure_image(s).await?;
        let req = CreateRequest {
            config: ContainerConfig {
                image: s.img.id.clone(),
                cmd: StrSlice(Some(cmd.clone())),
                entrypoint: StrSlice(Some(Vec::new())),
                env: arg_env.clone(),
                user: runtime.user.clone(),
                working_dir: runtime.working_dir.clone(),
                ..Default::default()
            },
            host_config: HostConfig {
                network_mode: if self.opts.network_mode.is_empty() {
                    "default".into()
                } else {
                    self.opts.network_mode.clone()
                },
                ..Default::default()
            },
            networking_config: None,
        };
        let id = self.d.create_container(None, req).await?;
        self.out
            .stream(format!(" ---> Running in {}\n", short(&id)))
            .await;
        let outcome = self.run_container(&id).await;
        let code = match outcome {
            Ok(c) => c,
            Err(e) => {
                self.remove_intermediate(&id, false).await;
                return Err(e);
            }
        };
        if code != 0 {
            if self.opts.force_rm {
                self.remove_intermediate(&id, true).await;
            }
            return Err(BuildError::RunFailed {
                command: cmd.join(" "),
                code,
            });
        }
        let mut by = cmd.join(" ");
        if !arg_env.is_empty() {
            by = format!("|{} {} {by}", arg_env.len(), arg_env.join(" "));
        }
        self.drop_mount_stubs(&id).await;
        let author = s.meta.author.clone().unwrap_or_default();
        let view = Self::parent_view(s);
        let committed = self
            .d
            .commit_snapshot(
                &id,
                &view,
                runtime.clone(),
                "",
                |h| h["created_by"] = json!(by),
                &author,
            )
            .await;
        if self.opts.rm || self.opts.force_rm {
            self.remove_intermediate(&id, true).await;
        }
        let stored = self
            .drop_empty_layer(committed?, s.img.config.rootfs.diff_ids.len())
            .await?;
        let view = self.d.view_of(&stored.manifest).await?;
        self.d
            .name_image(
                &format!("{}{key}", crate::daemon::BUILD_CACHE_PREFIX),
                &stored.manifest,
            )
            .await?;
        s.img = Img::from_view(view);
        self.out
            .stream(format!(" ---> {}\n", short(&s.img.id)))
            .await;
        Ok(())
    }

    async fn remove_intermediate(&self, id: &str, say: bool) {
        if say {
            self.out
                .stream(format!("Removing intermediate container {}\n", short(id)))
                .await;
        }
        if let Err(e) = self.d.remove_container(id, true, true).await {
            tracing::warn!(%id, error = %e, "removing an intermediate build container failed");
        }
    }

    /// Starts the step's container, forwards its output (stderr in red, like dockerd),
    /// and returns its exit code.
    async fn run_container(&self, id: &str) -> Result<i64, BuildError> {
        let rec = self.d.container(id)?;
        let mut follower = Follower::from_start(std::path::Path::new(&rec.log_path));
        let wait = self.d.wait_container(id, WaitCondition::NextExit)?;
        self.d.start_container(id).await?;
        tokio::pin!(wait);
        let mut tick = tokio::time::interval(Duration::from_millis(50));
        let code = loop {
            tokio::select! {
                outcome = &mut wait => break outcome.status_code,
                _ = tick.tick() => self.forward(&mut follower).await,
            }
        };
        self.forward(&mut follower).await;
        Ok(code)
    }

    async fn forward(&self, follower: &mut Follower) {
        let Ok(entries) = follower.poll() else {
            return;
        };
        for e in entries {
            let text = match e.stream {
                StdStream::Stderr => format!("\u{1b}[91m{}\u{1b}[0m", e.log),
                _ => e.log,
            };
            self.out.stream(text).await;
        }
    }
}

/// dockerd's stream error line.
pub fn error_message(e: &BuildError) -> Value {
    let msg = e.to_string();
    match e {
        BuildError::RunFailed { code, .. } => {
            json!({"errorDetail": {"code": code, "message": msg}, "error": msg})
        }
        _ => json!({"errorDetail": {"message": msg}, "error": msg}),
    }
}
