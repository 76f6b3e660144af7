//! An in-memory highd for unit tests: content, images, snapshots, containers and tasks are
//! maps; processes never run, tests end them with [`FakeBackend::exit`].

use std::collections::HashMap;
use std::sync::{Arc, Mutex};

use chrono::Utc;
use futures::StreamExt;
use tokio::sync::broadcast;
use tokio_stream::wrappers::BroadcastStream;

use super::*;

#[derive(Debug, Clone)]
struct FakeTask {
    pid: u32,
    status: TaskStatus,
    exit_status: u32,
    stdio: Stdio,
    execs: HashMap<String, (TaskStatus, u32)>,
    exec_io: HashMap<String, (Vec<String>, Stdio)>,
}

#[derive(Default)]
struct State {
    content: HashMap<String, Vec<u8>>,
    content_labels: HashMap<String, HashMap<String, String>>,
    /// Named ingests: the bytes a resumable write kept.
    ingests: HashMap<String, Vec<u8>>,
    images: HashMap<String, Image>,
    /// key → (parent, committed)
    snapshots: HashMap<String, (String, bool)>,
    containers: HashMap<String, NewContainer>,
    tasks: HashMap<String, FakeTask>,
    next_pid: u32,
    fail_task_create: Option<String>,
    fail_container_delete: Option<String>,
    kills: Vec<(String, String, u32)>,
    closed_stdin: Vec<(String, String)>,
    task_updates: Vec<(String, Vec<u8>)>,
}

/// Runs inside the next `container_create`, after the container exists.
type CreateHook = Box<dyn FnOnce(&NewContainer) + Send>;

pub struct FakeBackend {
    state: Arc<Mutex<State>>,
    exits: broadcast::Sender<ExitEvent>,
    /// Errors ending every open exit stream, as highd's DataLoss does after a lag.
    stream_errors: broadcast::Sender<String>,
    after_container_create: Mutex<Option<CreateHook>>,
}

impl Default for FakeBackend {
    fn default() -> Self {
        Self {
            state: Arc::new(Mutex::new(State {
                next_pid: 1000,
                ..Default::default()
            })),
            exits: broadcast::channel(64).0,
            stream_errors: broadcast::channel(4).0,
            after_container_create: Mutex::new(None),
        }
    }
}

/// Marks a process exited and publishes `/tasks/exit`, as the shim would.
fn exit_in(
    state: &Mutex<State>,
    exits: &broadcast::Sender<ExitEvent>,
    id: &str,
    exec_id: &str,
    status: u32,
) {
    let pid = {
        let mut s = state.lock().expect("fake state poisoned");
        let t = s.tasks.get_mut(id).expect("exit of unknown task");
        if exec_id.is_empty() || exec_id == id {
            t.status = TaskStatus::Stopped;
            t.exit_status = status;
            t.pid
        } else {
            let e = t.execs.get_mut(exec_id).expect("exit of unknown exec");
            *e = (TaskStatus::Stopped, status);
            t.pid + 1
        }
    };
    let _ = exits.send(ExitEvent {
        container_id: id.to_string(),
        exec_id: if exec_id.is_empty() { id } else { exec_id }.to_string(),
        pid,
        exit_status: status,
        exited_at: Some(Utc::now()),
    });
}

/// Plays an exec process like a shim would: writes its args (like `echo`) to its stdout
/// FIFO, closes it, and exits with N for `sh -c "exit N"`, else 0.
fn run_exec(
    state: Arc<Mutex<State>>,
    exits: broadcast::Sender<ExitEvent>,
    id: String,
    exec_id: String,
    args: Vec<String>,
    stdio: Stdio,
) {
    // Like the shim, hold the stdin FIFO open before the start returns, so input written
    // (and closed) by the engine right away is not lost.
    let stdin = (!stdio.stdin.is_empty())
        .then(|| {
            use std::os::unix::fs::OpenOptionsExt;
            let f = std::fs::OpenOptions::new()
                .read(true)
                .custom_flags(libc::O_NONBLOCK)
                .open(&stdio.stdin)
                .ok()?;
            nix::fcntl::fcntl(
                &f,
                nix::fcntl::FcntlArg::F_SETFL(nix::fcntl::OFlag::empty()),
            )
            .ok()?;
            Some(f)
        })
        .flatten();
    std::thread::spawn(move || {
        use std::io::Write;
        if !stdio.stdout.is_empty() {
            if let Ok(mut w) = std::fs::OpenOptions::new().write(true).open(&stdio.stdout) {
                if let (true, Some(mut r)) = (args.first().is_some_and(|a| a == "cat"), stdin) {
                    // `cat`: stdin to stdout until the engine closes its end.
                    let _ = std::io::copy(&mut r, &mut w);
                } else {
                    let _ = writeln!(w, "{}", args.get(1..).unwrap_or(&[]).join(" "));
                }
            }
        }
        if !stdio.stderr.is_empty() {
            // Opening and closing the writer ends the reader's stream.
            let _ = std::fs::OpenOptions::new().write(true).open(&stdio.stderr);
        }
        let code = match args.as_slice() {
            [sh, c, cmd] if sh == "sh" && c == "-c" => cmd
                .strip_prefix("exit ")
                .and_then(|n| n.parse().ok())
                .unwrap_or(0),
            _ => 0,
        };
        exit_in(&state, &exits, &id, &exec_id, code);
    });
}

fn not_found(what: &str) -> BackendError {
    BackendError::NotFound {
        message: format!("{what}: not found"),
    }
}

impl FakeBackend {
    fn with<T>(&self, f: impl FnOnce(&mut State) -> T) -> T {
        f(&mut self.state.lock().expect("fake state poisoned"))
    }

    /// Ends a process as if it exited with `status` and publishes `/tasks/exit`.
    pub fn exit(&self, id: &str, exec_id: &str, status: u32) {
        exit_in(&self.state, &self.exits, id, exec_id, status);
    }

    /// Ends a task's init like [`FakeBackend::exit`] but without publishing the event,
    /// as if the engine's subscription lost it.
    pub fn exit_unannounced(&self, id: &str, status: u32) {
        self.with(|s| {
            let t = s.tasks.get_mut(id).expect("exit of unknown task");
            t.status = TaskStatus::Stopped;
            t.exit_status = status;
        });
    }

    /// Ends every open exit stream with an error, as highd does for a lagging subscriber.
    pub fn break_exit_streams(&self, message: &str) {
        let _ = self.stream_errors.send(message.to_string());
    }

    /// Runs `hook` inside the next `container_create`, once the container exists.
    pub fn after_next_container_create(&self, hook: impl FnOnce(&NewContainer) + Send + 'static) {
        *self
            .after_container_create
            .lock()
            .expect("fake hook poisoned") = Some(Box::new(hook));
    }

    pub fn fail_next_task_create(&self, message: &str) {
        self.with(|s| s.fail_task_create = Some(message.to_string()));
    }

    pub fn fail_next_container_delete(&self, message: &str) {
        self.with(|s| s.fail_container_delete = Some(message.to_string()));
    }

    pub fn has_container(&self, id: &str) -> bool {
        self.with(|s| s.containers.contains_key(id))
    }

    pub fn has_snapshot(&self, key: &str) -> bool {
        self.with(|s| s.snapshots.contains_key(key))
    }

    pub fn has_task(&self, id: &str) -> bool {
        self.with(|s| s.tasks.contains_key(id))
    }

    pub fn container_spec(&self, id: &str) -> Option<Vec<u8>> {
        self.with(|s| s.containers.get(id).map(|c| c.spec.clone()))
    }

    pub fn task_stdio(&self, id: &str) -> Option<Stdio> {
        self.with(|s| s.tasks.get(id).map(|t| t.stdio.clone()))
    }

    pub fn kills(&self) -> Vec<(String, String, u32)> {
        self.with(|s| s.kills.clone())
    }

    /// Every task update so far: `(id, LinuxResources JSON)`.
    pub fn task_updates(&self) -> Vec<(String, Vec<u8>)> {
        self.with(|s| s.task_updates.clone())
    }

    /// Drops a task as if highd lost it (for reconcile tests).
    pub fn forget_task(&self, id: &str) {
        self.with(|s| s.tasks.remove(id));
    }
}

impl Backend for FakeBackend {
    async fn content_write(
        &self,
        desc: &Descriptor,
        data: bytes::Bytes,
        _labels: HashMap<String, String>,
    ) -> BackendResult<()> {
        use sha2::Digest;
        let actual = format!("sha256:{}", hex::encode(sha2::Sha256::digest(&data)));
        if actual != desc.digest {
            return Err(BackendError::Failed {
                op: "content write",
                message: format!(
                    "unexpected commit digest {actual}, expected {}",
                    desc.digest
                ),
            });
        }
        self.with(|s| s.content.insert(actual, data.to_vec()));
        Ok(())
    }

    async fn content_read(&self, digest: &str) -> BackendResult<Vec<u8>> {
        self.with(|s| s.content.get(digest).cloned())
            .ok_or_else(|| not_found(&format!("content digest {digest}")))
    }

    async fn content_read_stream(&self, digest: &str) -> BackendResult<ChunkStream> {
        let data = self.content_read(digest).await?;
        // Small chunks, so callers see a blob arrive in pieces as from highd.
        let chunks: Vec<BackendResult<bytes::Bytes>> = data
            .chunks(7)
            .map(|c| Ok(bytes::Bytes::copy_from_slice(c)))
            .collect();
        Ok(Box::pin(futures::stream::iter(chunks)))
    }

    async fn content_write_stream(
        &self,
        total: i64,
        expected: &str,
        mut data: UploadStream,
        labels: HashMap<String, String>,
    ) -> BackendResult<()> {
        use sha2::Digest;
        if !expected.is_empty() && self.with(|s| s.content.contains_key(expected)) {
            return Ok(());
        }
        let mut buf = Vec::new();
        while let Some(chunk) = data.next().await {
            let chunk = chunk.map_err(|e| BackendError::Failed {
                op: "content write",
                message: e.to_string(),
            })?;
            buf.extend_from_slice(&chunk);
        }
        if total > 0 && buf.len() as i64 != total {
            return Err(BackendError::Failed {
                op: "content write",
                message: format!("the data ended after {} of {total} bytes", buf.len()),
            });
        }
        let actual = format!("sha256:{}", hex::encode(sha2::Sha256::digest(&buf)));
        let desc = Descriptor {
            digest: if expected.is_empty() {
                actual
            } else {
                expected.into()
            },
            ..Default::default()
        };
        self.content_write(&desc, buf.into(), labels).await
    }

    async fn content_labels(&self, digest: &str) -> BackendResult<HashMap<String, String>> {
        self.with(|s| {
            s.content
                .contains_key(digest)
                .then(|| s.content_labels.get(digest).cloned().unwrap_or_default())
        })
        .ok_or_else(|| not_found(&format!("content digest {digest}")))
    }

    async fn content_set_label(&self, digest: &str, key: &str, value: &str) -> BackendResult<()> {
        self.with(|s| {
            s.content.contains_key(digest).then(|| {
                s.content_labels
                    .entry(digest.to_string())
                    .or_default()
                    .insert(key.to_string(), value.to_string());
            })
        })
        .ok_or_else(|| not_found(&format!("content digest {digest}")))
    }

    async fn content_ingest_offset(&self, reference: &str) -> BackendResult<u64> {
        Ok(self.with(|s| s.ingests.get(reference).map_or(0, |b| b.len() as u64)))
    }

    async fn content_ingest(
        &self,
        reference: &str,
        offset: u64,
        total: i64,
        expected: &str,
        mut data: UploadStream,
        labels: HashMap<String, String>,
    ) -> BackendResult<()> {
        if !expected.is_empty() && self.with(|s| s.content.contains_key(expected)) {
            return Ok(());
        }
        let mut buf = self.with(|s| s.ingests.remove(reference).unwrap_or_default());
        if buf.len() as u64 != offset {
            if offset != 0 {
                let current = buf.len();
                self.with(|s| s.ingests.insert(reference.into(), buf));
                return Err(BackendError::Failed {
                    op: "content write",
                    message: format!("write to ref {reference:?} at offset {offset} must occur at current offset {current}"),
                });
            }
            buf.clear();
        }
        while let Some(chunk) = data.next().await {
            match chunk {
                Ok(c) => buf.extend_from_slice(&c),
                Err(e) => {
                    self.with(|s| s.ingests.insert(reference.into(), buf));
                    return Err(BackendError::Failed {
                        op: "content write",
                        message: e.to_string(),
                    });
                }
            }
        }
        if total > 0 && buf.len() as i64 != total {
            let message = format!("the data ended after {} of {total} bytes", buf.len());
            self.with(|s| s.ingests.insert(reference.into(), buf));
            return Err(BackendError::Failed {
                op: "content write",
                message,
            });
        }
        let desc = Descriptor {
            digest: expected.into(),
            ..Default::default()
        };
        self.content_write(&desc, buf.into(), labels).await
    }

    async fn image_get(&self, name: &str) -> BackendResult<Image> {
        self.with(|s| s.images.get(name).cloned())
            .ok_or_else(|| not_found(&format!("image \"{name}\"")))
    }

    async fn image_list(&self) -> BackendResult<Vec<Image>> {
        Ok(self.with(|s| s.images.values().cloned().collect()))
    }

    async fn image_put(&self, image: Image) -> BackendResult<()> {
        self.with(|s| s.images.insert(image.name.clone(), image));
        Ok(())
    }

    async fn image_delete(&self, name: &str) -> BackendResult<()> {
        self.with(|s| s.images.remove(name))
            .map(|_| ())
            .ok_or_else(|| not_found(&format!("image \"{name}\"")))
    }

    async fn snapshot_exists(&self, key: &str) -> BackendResult<bool> {
        Ok(self.has_snapshot(key))
    }

    async fn snapshot_prepare(
        &self,
        key: &str,
        parent: &str,
        _labels: HashMap<String, String>,
    ) -> BackendResult<Vec<Mount>> {
        self.with(|s| {
            if s.snapshots.contains_key(key) {
                return Err(BackendError::AlreadyExists {
                    message: format!("snapshot {key}: already exists"),
                });
            }
            if !parent.is_empty() && !s.snapshots.get(parent).is_some_and(|p| p.1) {
                return Err(not_found(&format!("parent snapshot {parent}")));
            }
            s.snapshots.insert(key.into(), (parent.into(), false));
            Ok(vec![Mount {
                kind: "bind".into(),
                source: format!("/fake/{key}"),
                target: String::new(),
                options: vec!["rbind".into(), "rw".into()],
            }])
        })
    }

    async fn snapshot_mounts(&self, key: &str) -> BackendResult<Vec<Mount>> {
        if !self.has_snapshot(key) {
            return Err(not_found(&format!("snapshot {key}")));
        }
        Ok(vec![Mount {
            kind: "bind".into(),
            source: format!("/fake/{key}"),
            target: String::new(),
            options: vec!["rbind".into(), "rw".into()],
        }])
    }

    async fn snapshot_commit(
        &self,
        name: &str,
        key: &str,
        _labels: HashMap<String, String>,
    ) -> BackendResult<()> {
        self.with(|s| {
            let (parent, _) = s
                .snapshots
                .remove(key)
                .ok_or_else(|| not_found(&format!("snapshot {key}")))?;
            s.snapshots.insert(name.into(), (parent, true));
            Ok(())
        })
    }

    async fn snapshot_remove(&self, key: &str) -> BackendResult<()> {
        self.with(|s| s.snapshots.remove(key))
            .map(|_| ())
            .ok_or_else(|| not_found(&format!("snapshot {key}")))
    }

    async fn diff_apply(
        &self,
        layer: &Descriptor,
        _mounts: Vec<Mount>,
    ) -> BackendResult<Descriptor> {
        if !self.with(|s| s.content.contains_key(&layer.digest)) {
            return Err(not_found(&format!("content digest {}", layer.digest)));
        }
        Ok(layer.clone())
    }

    /// The fake has no file trees: every diff is an empty tar (two zero blocks).
    async fn diff_create(
        &self,
        _lower: Vec<Mount>,
        _upper: Vec<Mount>,
        media_type: &str,
    ) -> BackendResult<Descriptor> {
        use sha2::Digest;
        let data = vec![0u8; 1024];
        let digest = format!("sha256:{}", hex::encode(sha2::Sha256::digest(&data)));
        self.with(|s| s.content.insert(digest.clone(), data));
        Ok(Descriptor {
            media_type: media_type.into(),
            digest,
            size: 1024,
            annotations: HashMap::new(),
        })
    }

    async fn container_create(&self, c: NewContainer) -> BackendResult<()> {
        self.with(|s| {
            if s.containers.contains_key(&c.id) {
                return Err(BackendError::AlreadyExists {
                    message: format!("container \"{}\": already exists", c.id),
                });
            }
            s.containers.insert(c.id.clone(), c.clone());
            Ok(())
        })?;
        let hook = self
            .after_container_create
            .lock()
            .expect("fake hook poisoned")
            .take();
        if let Some(hook) = hook {
            hook(&c);
        }
        Ok(())
    }

    async fn container_delete(&self, id: &str) -> BackendResult<()> {
        if let Some(message) = self.with(|s| s.fail_container_delete.take()) {
            return Err(BackendError::Failed {
                op: "container delete",
                message,
            });
        }
        self.with(|s| s.containers.remove(id))
            .map(|_| ())
            .ok_or_else(|| not_found(&format!("container \"{id}\"")))
    }

    async fn container_get_spec(&self, id: &str) -> BackendResult<Vec<u8>> {
        self.with(|s| s.containers.get(id).map(|c| c.spec.clone()))
            .ok_or_else(|| not_found(&format!("container \"{id}\"")))
    }

    async fn container_set_spec(&self, id: &str, spec: Vec<u8>) -> BackendResult<()> {
        self.with(|s| s.containers.get_mut(id).map(|c| c.spec = spec))
            .ok_or_else(|| not_found(&format!("container \"{id}\"")))
    }

    async fn container_list(&self) -> BackendResult<Vec<(String, HashMap<String, String>)>> {
        Ok(self.with(|s| {
            s.containers
                .values()
                .map(|c| (c.id.clone(), c.labels.clone()))
                .collect()
        }))
    }

    async fn task_create(&self, id: &str, _rootfs: Vec<Mount>, stdio: Stdio) -> BackendResult<u32> {
        self.with(|s| {
            if let Some(message) = s.fail_task_create.take() {
                return Err(BackendError::Failed {
                    op: "task create",
                    message,
                });
            }
            if !s.containers.contains_key(id) {
                return Err(not_found(&format!("container \"{id}\"")));
            }
            s.next_pid += 2;
            let pid = s.next_pid;
            s.tasks.insert(
                id.into(),
                FakeTask {
                    pid,
                    status: TaskStatus::Created,
                    exit_status: 0,
                    stdio,
                    execs: HashMap::new(),
                    exec_io: HashMap::new(),
                },
            );
            Ok(pid)
        })
    }

    async fn task_start(&self, id: &str, exec_id: &str) -> BackendResult<u32> {
        self.with(|s| {
            let t = s
                .tasks
                .get_mut(id)
                .ok_or_else(|| not_found(&format!("task {id}")))?;
            if exec_id.is_empty() {
                t.status = TaskStatus::Running;
                return Ok((t.pid, None));
            }
            let e = t
                .execs
                .get_mut(exec_id)
                .ok_or_else(|| not_found(&format!("process {exec_id}")))?;
            e.0 = TaskStatus::Running;
            let io = t.exec_io.remove(exec_id);
            Ok((t.pid + 1, io))
        })
        .map(|(pid, io)| {
            if let Some((args, stdio)) = io {
                if !stdio.stdout.is_empty() || !stdio.stderr.is_empty() {
                    run_exec(
                        Arc::clone(&self.state),
                        self.exits.clone(),
                        id.into(),
                        exec_id.into(),
                        args,
                        stdio,
                    );
                }
            }
            pid
        })
    }

    async fn task_get(&self, id: &str) -> BackendResult<TaskInfo> {
        self.with(|s| {
            s.tasks.get(id).map(|t| TaskInfo {
                pid: t.pid,
                status: t.status,
                exit_status: t.exit_status,
                exited_at: None,
            })
        })
        .ok_or_else(|| not_found(&format!("task {id}")))
    }

    async fn task_kill(
        &self,
        id: &str,
        exec_id: &str,
        signal: u32,
        _all: bool,
    ) -> BackendResult<()> {
        if !self.has_task(id) {
            return Err(not_found(&format!("task {id}")));
        }
        self.with(|s| s.kills.push((id.into(), exec_id.into(), signal)));
        Ok(())
    }

    async fn task_delete(&self, id: &str) -> BackendResult<TaskInfo> {
        let info = self.task_get(id).await?;
        self.with(|s| s.tasks.remove(id));
        Ok(info)
    }

    async fn task_exec(
        &self,
        id: &str,
        exec_id: &str,
        process: Vec<u8>,
        stdio: Stdio,
    ) -> BackendResult<()> {
        let p: serde_json::Value =
            serde_json::from_slice(&process).map_err(|e| BackendError::InvalidArgument {
                message: format!("process spec: {e}"),
            })?;
        let args: Vec<String> = serde_json::from_value(p["args"].clone()).unwrap_or_default();
        self.with(|s| {
            let t = s
                .tasks
                .get_mut(id)
                .ok_or_else(|| not_found(&format!("task {id}")))?;
            t.execs.insert(exec_id.into(), (TaskStatus::Created, 0));
            t.exec_io.insert(exec_id.into(), (args, stdio));
            Ok(())
        })
    }

    async fn task_wait(
        &self,
        id: &str,
        exec_id: &str,
    ) -> BackendResult<(u32, Option<chrono::DateTime<Utc>>)> {
        let mut rx = self.exits.subscribe();
        loop {
            let done = self.with(|s| {
                let t = s.tasks.get(id)?;
                let (status, code) = if exec_id.is_empty() {
                    (t.status, t.exit_status)
                } else {
                    *t.execs.get(exec_id)?
                };
                (status == TaskStatus::Stopped).then_some(code)
            });
            if let Some(code) = done {
                return Ok((code, Some(Utc::now())));
            }
            if rx.recv().await.is_err() {
                return Err(not_found(&format!("task {id}")));
            }
        }
    }

    async fn task_delete_process(&self, id: &str, exec_id: &str) -> BackendResult<()> {
        self.with(|s| {
            s.tasks
                .get_mut(id)
                .and_then(|t| t.execs.remove(exec_id))
                .map(|_| ())
                .ok_or_else(|| not_found(&format!("process {exec_id}")))
        })
    }

    async fn task_close_stdin(&self, id: &str, exec_id: &str) -> BackendResult<()> {
        if !self.has_task(id) {
            return Err(not_found(&format!("task {id}")));
        }
        self.with(|s| s.closed_stdin.push((id.into(), exec_id.into())));
        Ok(())
    }

    async fn task_pause(&self, id: &str, pause: bool) -> BackendResult<()> {
        if !self.has_task(id) {
            return Err(not_found(&format!("task {id}")));
        }
        let _ = pause;
        Ok(())
    }

    async fn task_resize_pty(
        &self,
        id: &str,
        _exec_id: &str,
        _width: u32,
        _height: u32,
    ) -> BackendResult<()> {
        if !self.has_task(id) {
            return Err(not_found(&format!("task {id}")));
        }
        Ok(())
    }

    async fn task_pids(&self, id: &str) -> BackendResult<Vec<u32>> {
        if !self.has_task(id) {
            return Err(not_found(&format!("task {id}")));
        }
        Ok(Vec::new())
    }

    async fn task_update(&self, id: &str, resources: Vec<u8>) -> BackendResult<()> {
        if !self.has_task(id) {
            return Err(not_found(&format!("task {id}")));
        }
        self.with(|s| s.task_updates.push((id.to_string(), resources)));
        Ok(())
    }

    async fn task_metrics(&self, id: &str) -> BackendResult<CgroupMetrics> {
        if !self.has_task(id) {
            return Err(not_found(&format!("task {id}")));
        }
        Ok(CgroupMetrics::V1(Default::default()))
    }

    async fn subscribe_exits(&self) -> BackendResult<ExitStream> {
        let rx = self.exits.subscribe();
        let exits = BroadcastStream::new(rx).filter_map(|r| async move { r.ok().map(Ok) });
        let errors =
            BroadcastStream::new(self.stream_errors.subscribe()).filter_map(|r| async move {
                r.ok().map(|message| {
                    Err(BackendError::Failed {
                        op: "events subscribe",
                        message,
                    })
                })
            });
        Ok(Box::pin(futures::stream::select(exits, errors)))
    }

    async fn lease_create(&self, _id: &str, _labels: HashMap<String, String>) -> BackendResult<()> {
        // Nothing here is ever garbage-collected, so there is nothing to hold.
        Ok(())
    }

    async fn lease_delete(&self, _id: &str) -> BackendResult<()> {
        Ok(())
    }

    async fn lease_list(&self) -> BackendResult<Vec<(String, HashMap<String, String>)>> {
        Ok(Vec::new())
    }
}
