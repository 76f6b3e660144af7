//! Creating and deleting tasks: the two operations that start and end a shim.

use std::path::Path;
use std::sync::{Arc, Mutex};
use std::time::Duration;

use berth_proto::any::{pack, topic};
use berth_proto::containerd::events::TaskDelete;
use berth_proto::containerd::services::tasks::v1::{
    CreateTaskRequest, CreateTaskResponse, DeleteResponse,
};
use berth_proto::containerd::task::v2 as shim;

use super::options::TaskRuntime;
use super::{wait_gone, Bundle, ExitInfo, Task, TaskError, TaskManager};
use crate::shims::{self, ShimClient, ShimLaunch};

/// The one namespace name whose task dir would be `<state>/runtime`, the runtime roots.
const RESERVED_NAMESPACE: &str = "runtime";
/// How long a shim gets to exit after Shutdown before we stop waiting for it.
const SHIM_EXIT_GRACE: Duration = Duration::from_secs(3);

/// Undoes a half-done Create (also one found at start-up, see recovery.rs).
pub(super) struct Cleanup<'a> {
    pub bundle: &'a Bundle,
    pub shim: Option<ShimClient>,
    pub id: &'a str,
    pub runtime: &'a Path,
    pub runtime_root: &'a Path,
}

impl Cleanup<'_> {
    pub async fn run(self) {
        if let Some(client) = &self.shim {
            let mut rpc = client.rpc();
            let _ = rpc
                .delete(shim::DeleteRequest {
                    id: self.id.to_string(),
                    exec_id: String::new(),
                })
                .await;
            let _ = rpc
                .shutdown(shim::ShutdownRequest {
                    id: self.id.to_string(),
                    now: true,
                })
                .await;
        }
        shims::kill_from_pidfile(&self.bundle.dir);
        if let Some(pid) = read_pid(&self.bundle.dir.join("shim.pid")) {
            wait_gone(pid, SHIM_EXIT_GRACE).await;
        }
        // A shim killed half-way may leave a created container (init blocked before
        // exec) and the runtime's state behind.
        runtime_delete(self.runtime, self.runtime_root, self.id).await;
        if let Err(e) = self.bundle.remove() {
            tracing::error!(dir = %self.bundle.dir.display(), error = %crate::shims::client::error_chain(&e), "cannot remove task dir of failed create");
        }
    }
}

/// `RUNTIME --root R delete --force ID`, best effort: usually there is nothing to delete.
async fn runtime_delete(runtime: &Path, root: &Path, id: &str) {
    let out = tokio::process::Command::new(runtime)
        .arg("--root")
        .arg(root)
        .args(["delete", "--force", id])
        .stdin(std::process::Stdio::null())
        .output()
        .await;
    match out {
        Ok(o) if !o.status.success() => {
            tracing::debug!(id, stderr = %String::from_utf8_lossy(&o.stderr).trim(), "runtime delete")
        }
        Err(e) => {
            tracing::warn!(id, runtime = %runtime.display(), error = %e, "cannot run runtime delete")
        }
        Ok(_) => {}
    }
}

pub(super) fn read_pid(path: &std::path::Path) -> Option<i32> {
    std::fs::read_to_string(path)
        .ok()?
        .trim()
        .parse()
        .ok()
        .filter(|p| *p > 1)
}

impl TaskManager {
    pub async fn create(
        &self,
        ns: &str,
        req: CreateTaskRequest,
    ) -> Result<CreateTaskResponse, TaskError> {
        let id = req.container_id.clone();
        if ns == RESERVED_NAMESPACE {
            return Err(TaskError::ReservedNamespace {
                namespace: ns.to_string(),
            });
        }
        if req.checkpoint.is_some() {
            return Err(TaskError::Unimplemented {
                what: "restoring a task from a checkpoint",
            });
        }
        if !req.runtime_path.is_empty() {
            return Err(TaskError::Unimplemented {
                what: "runtime_path (configure runtimes in the config file)",
            });
        }
        let key = (ns.to_string(), id.clone());
        let container = {
            // Read the record under the registry lock: containers.Delete checks for a
            // task under the same lock, so the container cannot vanish in between.
            let mut reg = self.registry();
            let container = self
                .containers
                .get(ns, &id)?
                .ok_or_else(|| TaskError::ContainerNotFound { id: id.clone() })?;
            if reg.deleting.contains(&key) {
                return Err(TaskError::DeleteInProgress { id });
            }
            if reg.tasks.contains_key(&key) || !reg.creating.insert(key.clone()) {
                return Err(TaskError::AlreadyExists { id });
            }
            container
        };
        let result = async {
            let spec = container
                .spec
                .as_ref()
                .ok_or_else(|| TaskError::NoSpec { id: id.clone() })?;
            let spec =
                hex::decode(&spec.value_hex).map_err(|_| TaskError::NoSpec { id: id.clone() })?;
            let runtime = self
                .cfg
                .runtimes
                .get(&container.runtime_name)
                .ok_or_else(|| TaskError::UnknownRuntime {
                    name: container.runtime_name.clone(),
                    known: self
                        .cfg
                        .runtimes
                        .keys()
                        .cloned()
                        .collect::<Vec<_>>()
                        .join(", "),
                })?;
            // containerd: the task's options, else the container's runtime options.
            let options = req.options.clone().or_else(|| {
                container
                    .runtime_options
                    .as_ref()
                    .map(|o| prost_types::Any {
                        type_url: o.type_url.clone(),
                        value: hex::decode(&o.value_hex).unwrap_or_default(),
                    })
            });
            let task_runtime = TaskRuntime::resolve(&self.cfg, runtime, ns, options.as_ref())?;
            self.create_reserved(ns, &id, &spec, &runtime.shim, task_runtime, options, &req)
                .await
        }
        .await;
        let mut reg = self.registry();
        reg.creating.remove(&key);
        let task = result?;
        let pid = task.pid;
        reg.tasks.insert(key, task);
        Ok(CreateTaskResponse {
            container_id: id,
            pid,
        })
    }

    #[allow(clippy::too_many_arguments)]
    async fn create_reserved(
        &self,
        ns: &str,
        id: &str,
        spec: &[u8],
        shim_bin: &Path,
        task_runtime: TaskRuntime,
        options: Option<prost_types::Any>,
        req: &CreateTaskRequest,
    ) -> Result<Arc<Task>, TaskError> {
        let runtime_root = task_runtime.runtime_root.clone();
        let bundle = Bundle::at(&self.cfg.state, ns, id);
        bundle
            .create(spec, !req.rootfs.is_empty(), Some(&task_runtime))
            .map_err(|source| TaskError::Bundle {
                id: id.to_string(),
                source,
            })?;
        let mut cleanup = Cleanup {
            bundle: &bundle,
            shim: None,
            id,
            runtime: &task_runtime.runtime,
            runtime_root: &runtime_root,
        };
        let outcome = async {
            std::fs::create_dir_all(&runtime_root).map_err(|source| TaskError::RuntimeRoot {
                path: runtime_root.clone(),
                source,
            })?;
            let launch = ShimLaunch {
                shim: shim_bin,
                runtime: &task_runtime.runtime,
                runtime_root: &runtime_root,
                systemd_cgroup: task_runtime.systemd_cgroup,
                cgroup: task_runtime.shim_cgroup.as_deref(),
                namespace: ns,
                id,
                bundle: &bundle.dir,
                highd_address: &self.cfg.address,
                debug: self.debug_shims,
            };
            let shim_err = |source| TaskError::Shim {
                id: id.to_string(),
                source,
            };
            let address = shims::launch::start(&launch).await.map_err(shim_err)?;
            let client = ShimClient::connect(&address).await.map_err(shim_err)?;
            cleanup.shim = Some(client.clone());
            let resp = client
                .rpc()
                .create(shim::CreateTaskRequest {
                    id: id.to_string(),
                    bundle: bundle.dir.to_string_lossy().into_owned(),
                    rootfs: req.rootfs.clone(),
                    terminal: req.terminal,
                    stdin: req.stdin.clone(),
                    stdout: req.stdout.clone(),
                    stderr: req.stderr.clone(),
                    checkpoint: String::new(),
                    parent_checkpoint: String::new(),
                    options,
                })
                .await
                .map_err(TaskError::Rpc)?
                .into_inner();
            bundle.mark_created().map_err(|source| TaskError::Bundle {
                id: id.to_string(),
                source,
            })?;
            Ok(Arc::new(Task {
                namespace: ns.to_string(),
                id: id.to_string(),
                bundle: bundle.clone(),
                pid: resp.pid,
                runtime: task_runtime.runtime.clone(),
                runtime_root: runtime_root.clone(),
                shim: Mutex::new(Some(client)),
                exit: Mutex::new(None),
            }))
        }
        .await;
        match outcome {
            Ok(task) => {
                tracing::info!(namespace = ns, id, pid = task.pid, "task created");
                Ok(task)
            }
            Err(e) => {
                cleanup.run().await;
                Err(e)
            }
        }
    }

    /// Deletes a stopped task: shim Delete → Shutdown → remove the task dir.
    pub async fn delete(&self, ns: &str, id: &str) -> Result<DeleteResponse, TaskError> {
        let key = (ns.to_string(), id.to_string());
        let task = {
            // Claim the id under the registry lock: two Deletes must not both tear down
            // the shim, and a Create must not slip in before this one is done.
            let mut reg = self.registry();
            let task = reg
                .tasks
                .get(&key)
                .cloned()
                .ok_or_else(|| TaskError::NotFound { id: id.to_string() })?;
            if !reg.deleting.insert(key.clone()) {
                return Err(TaskError::DeleteInProgress { id: id.to_string() });
            }
            task
        };
        let _claim = DeleteClaim { mgr: self, key };
        let mut shim_was_gone = false;
        let info = match task.shim() {
            Some(client) => {
                let req = shim::DeleteRequest {
                    id: id.to_string(),
                    exec_id: String::new(),
                };
                match client.rpc().delete(req).await {
                    Ok(resp) => {
                        let resp = resp.into_inner();
                        let _ = client
                            .rpc()
                            .shutdown(shim::ShutdownRequest {
                                id: id.to_string(),
                                now: false,
                            })
                            .await;
                        ExitInfo {
                            pid: resp.pid,
                            status: resp.exit_status,
                            exited_at: resp.exited_at,
                        }
                    }
                    Err(status) => match self.shim_failed(&task, status).await {
                        TaskError::ShimGone { .. } => {
                            shim_was_gone = true;
                            self.cleanup_dead(&task).await?
                        }
                        e => return Err(e),
                    },
                }
            }
            None => {
                shim_was_gone = true;
                self.cleanup_dead(&task).await?
            }
        };
        // The shim's server waits for open connections to close before it exits; ours
        // would keep it waiting for its whole shutdown grace. Its exit is not awaited:
        // after Delete and Shutdown it touches nothing a new task of the same id uses
        // (it removes its socket only if the file still is its own), and its last work,
        // releasing the detached rootfs (a sync of the snapshots' disk), is nobody's
        // business. Our background wait reaps it.
        task.drop_shim();
        task.bundle.remove().map_err(|source| TaskError::Bundle {
            id: id.to_string(),
            source,
        })?;
        self.remove(&task);
        if shim_was_gone {
            // A dead shim cannot announce the delete; do it for it.
            let event = TaskDelete {
                container_id: id.to_string(),
                pid: info.pid,
                exit_status: info.status,
                exited_at: info.exited_at,
                id: String::new(),
            };
            self.events.emit(ns, topic::TASK_DELETE, pack(&event));
        }
        tracing::info!(namespace = ns, id, status = info.status, "task deleted");
        Ok(DeleteResponse {
            id: id.to_string(),
            pid: info.pid,
            exit_status: info.status,
            exited_at: info.exited_at,
        })
    }

    /// A task whose shim is gone: make sure the runtime forgets the container too.
    /// Refuses while the shim's process still runs: a shim we merely lost contact with
    /// still parents a live container, and killing it would kill the container.
    async fn cleanup_dead(&self, task: &Task) -> Result<ExitInfo, TaskError> {
        if shims::shim_running(&task.bundle.dir) {
            tracing::warn!(namespace = %task.namespace, id = %task.id, "shim process still runs; not cleaning up");
            return Err(TaskError::ShimStillRunning {
                id: task.id.clone(),
            });
        }
        let info = self.shim_gone(task);
        // Checks the pid still is this shim before signalling (pid reuse).
        shims::kill_from_pidfile(&task.bundle.dir);
        runtime_delete(&task.runtime, &task.runtime_root, &task.id).await;
        Ok(info)
    }
}

/// Releases a Delete's claim on its id however the Delete ends.
struct DeleteClaim<'a> {
    mgr: &'a TaskManager,
    key: super::Key,
}

impl Drop for DeleteClaim<'_> {
    fn drop(&mut self) {
        self.mgr.registry().deleting.remove(&self.key);
    }
}
