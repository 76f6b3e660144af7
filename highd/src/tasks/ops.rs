//! Operations on an existing task: each is one call to its shim.

use std::time::Duration;

use berth_proto::containerd::services::tasks::v1 as api;
use berth_proto::containerd::task::v2 as shim;
use berth_proto::containerd::v1::types::{Process, ProcessInfo};

use super::{Task, TaskError, TaskManager};
use crate::events::{simple, Fields, Filter};

/// State is answered from the shim's memory; a shim slower than this is stuck, and one
/// stuck shim must not hang tasks.List for everyone.
const STATE_TIMEOUT: Duration = Duration::from_secs(10);

fn check_exec_id(exec_id: &str) -> Result<(), TaskError> {
    berth_proto::namespace::validate_identifier(exec_id).map_err(|e| TaskError::InvalidArgument {
        what: "exec id",
        reason: e.to_string(),
    })
}

impl TaskManager {
    pub async fn start(&self, ns: &str, id: &str, exec_id: &str) -> Result<u32, TaskError> {
        let task = self.task(ns, id)?;
        let req = shim::StartRequest {
            id: id.to_string(),
            exec_id: exec_id.to_string(),
        };
        match self.client(&task)?.start(req).await {
            Ok(r) => Ok(r.into_inner().pid),
            Err(s) => Err(self.shim_failed(&task, s).await),
        }
    }

    /// The process as the shim sees it; a task whose shim is gone is reported stopped.
    pub async fn get(&self, ns: &str, id: &str, exec_id: &str) -> Result<Process, TaskError> {
        let task = self.task(ns, id)?;
        self.state(&task, exec_id).await
    }

    async fn state(&self, task: &Task, exec_id: &str) -> Result<Process, TaskError> {
        let Some(shim) = task.shim() else {
            return self.gone_process(task, exec_id);
        };
        let req = shim::StateRequest {
            id: task.id.clone(),
            exec_id: exec_id.to_string(),
        };
        let mut rpc = shim.rpc();
        let Ok(state) = tokio::time::timeout(STATE_TIMEOUT, rpc.state(req)).await else {
            return Err(TaskError::Unresponsive {
                id: task.id.clone(),
                seconds: STATE_TIMEOUT.as_secs(),
            });
        };
        match state {
            Ok(r) => {
                let s = r.into_inner();
                Ok(Process {
                    container_id: task.id.clone(),
                    id: if exec_id.is_empty() {
                        task.id.clone()
                    } else {
                        exec_id.to_string()
                    },
                    pid: s.pid,
                    status: s.status,
                    stdin: s.stdin,
                    stdout: s.stdout,
                    stderr: s.stderr,
                    terminal: s.terminal,
                    exit_status: s.exit_status,
                    exited_at: s.exited_at,
                })
            }
            Err(status) => match self.shim_failed(task, status).await {
                TaskError::ShimGone { .. } => self.gone_process(task, exec_id),
                e => Err(e),
            },
        }
    }

    fn gone_process(&self, task: &Task, exec_id: &str) -> Result<Process, TaskError> {
        if !exec_id.is_empty() {
            return Err(TaskError::ShimGone {
                id: task.id.clone(),
            });
        }
        let info = self.shim_gone(task);
        Ok(task.stopped_process(&info))
    }

    /// All tasks of the namespace, asking their shims concurrently (in id order).
    pub async fn list(&self, ns: &str) -> Result<Vec<Process>, TaskError> {
        let tasks = self.tasks_in(ns);
        let states = futures::future::join_all(tasks.iter().map(|t| self.state(t, ""))).await;
        let mut out = Vec::with_capacity(states.len());
        for (task, state) in tasks.iter().zip(states) {
            match state {
                Ok(p) => out.push(p),
                // One broken shim must not hide the other tasks.
                Err(e) => {
                    tracing::warn!(id = %task.id, error = %e, "cannot get task state for list")
                }
            }
        }
        Ok(out)
    }

    pub async fn kill(&self, ns: &str, req: api::KillRequest) -> Result<(), TaskError> {
        let task = self.task(ns, &req.container_id)?;
        let req = shim::KillRequest {
            id: req.container_id,
            exec_id: req.exec_id,
            signal: req.signal,
            all: req.all,
        };
        match self.client(&task)?.kill(req).await {
            Ok(_) => Ok(()),
            Err(s) => Err(self.shim_failed(&task, s).await),
        }
    }

    pub async fn exec(&self, ns: &str, req: api::ExecProcessRequest) -> Result<(), TaskError> {
        check_exec_id(&req.exec_id)?;
        if req.spec.is_none() {
            return Err(TaskError::InvalidArgument {
                what: "exec spec",
                reason: "must be set".to_string(),
            });
        }
        let task = self.task(ns, &req.container_id)?;
        let req = shim::ExecProcessRequest {
            id: req.container_id,
            exec_id: req.exec_id,
            terminal: req.terminal,
            stdin: req.stdin,
            stdout: req.stdout,
            stderr: req.stderr,
            spec: req.spec,
        };
        match self.client(&task)?.exec(req).await {
            Ok(_) => Ok(()),
            Err(s) => Err(self.shim_failed(&task, s).await),
        }
    }

    pub async fn resize_pty(&self, ns: &str, req: api::ResizePtyRequest) -> Result<(), TaskError> {
        let task = self.task(ns, &req.container_id)?;
        let req = shim::ResizePtyRequest {
            id: req.container_id,
            exec_id: req.exec_id,
            width: req.width,
            height: req.height,
        };
        match self.client(&task)?.resize_pty(req).await {
            Ok(_) => Ok(()),
            Err(s) => Err(self.shim_failed(&task, s).await),
        }
    }

    pub async fn close_io(&self, ns: &str, req: api::CloseIoRequest) -> Result<(), TaskError> {
        let task = self.task(ns, &req.container_id)?;
        let req = shim::CloseIoRequest {
            id: req.container_id,
            exec_id: req.exec_id,
            stdin: req.stdin,
        };
        match self.client(&task)?.close_io(req).await {
            Ok(_) => Ok(()),
            Err(s) => Err(self.shim_failed(&task, s).await),
        }
    }

    pub async fn pause(&self, ns: &str, id: &str) -> Result<(), TaskError> {
        let task = self.task(ns, id)?;
        match self
            .client(&task)?
            .pause(shim::PauseRequest { id: id.to_string() })
            .await
        {
            Ok(_) => Ok(()),
            Err(s) => Err(self.shim_failed(&task, s).await),
        }
    }

    pub async fn resume(&self, ns: &str, id: &str) -> Result<(), TaskError> {
        let task = self.task(ns, id)?;
        match self
            .client(&task)?
            .resume(shim::ResumeRequest { id: id.to_string() })
            .await
        {
            Ok(_) => Ok(()),
            Err(s) => Err(self.shim_failed(&task, s).await),
        }
    }

    pub async fn list_pids(&self, ns: &str, id: &str) -> Result<Vec<ProcessInfo>, TaskError> {
        let task = self.task(ns, id)?;
        match self
            .client(&task)?
            .pids(shim::PidsRequest { id: id.to_string() })
            .await
        {
            Ok(r) => Ok(r.into_inner().processes),
            Err(s) => Err(self.shim_failed(&task, s).await),
        }
    }

    /// Blocks until the process exits. If the shim dies meanwhile, the task's exit is
    /// what it recorded (or 255).
    pub async fn wait(
        &self,
        ns: &str,
        id: &str,
        exec_id: &str,
    ) -> Result<api::WaitResponse, TaskError> {
        let task = self.task(ns, id)?;
        let gone = |task: &Task| {
            if !exec_id.is_empty() {
                return Err(TaskError::ShimGone {
                    id: task.id.clone(),
                });
            }
            let info = self.shim_gone(task);
            Ok(api::WaitResponse {
                exit_status: info.status,
                exited_at: info.exited_at,
            })
        };
        let Some(client) = task.shim() else {
            return gone(&task);
        };
        let req = shim::WaitRequest {
            id: id.to_string(),
            exec_id: exec_id.to_string(),
        };
        match client.rpc().wait(req).await {
            Ok(r) => {
                let r = r.into_inner();
                Ok(api::WaitResponse {
                    exit_status: r.exit_status,
                    exited_at: r.exited_at,
                })
            }
            Err(status) => match self.shim_failed(&task, status).await {
                TaskError::ShimGone { .. } => gone(&task),
                e => Err(e),
            },
        }
    }

    pub async fn delete_process(
        &self,
        ns: &str,
        id: &str,
        exec_id: &str,
    ) -> Result<api::DeleteResponse, TaskError> {
        check_exec_id(exec_id)?;
        let task = self.task(ns, id)?;
        let req = shim::DeleteRequest {
            id: id.to_string(),
            exec_id: exec_id.to_string(),
        };
        match self.client(&task)?.delete(req).await {
            Ok(r) => {
                let r = r.into_inner();
                Ok(api::DeleteResponse {
                    id: exec_id.to_string(),
                    pid: r.pid,
                    exit_status: r.exit_status,
                    exited_at: r.exited_at,
                })
            }
            Err(s) => Err(self.shim_failed(&task, s).await),
        }
    }
}

impl TaskManager {
    /// Resource updates go to the shim, which runs the runtime's `update`.
    pub async fn update(&self, ns: &str, req: api::UpdateTaskRequest) -> Result<(), TaskError> {
        let task = self.task(ns, &req.container_id)?;
        let req = shim::UpdateTaskRequest {
            id: req.container_id,
            resources: req.resources,
            annotations: req.annotations,
        };
        match self.client(&task)?.update(req).await {
            Ok(_) => Ok(()),
            Err(s) => Err(self.shim_failed(&task, s).await),
        }
    }

    /// Stats of the namespace's tasks matching `filters` (`id`), one Metric each. Tasks
    /// whose shim is gone or fails are left out, as containerd does.
    pub async fn metrics(
        &self,
        ns: &str,
        filters: &[String],
    ) -> Result<Vec<berth_proto::containerd::types::Metric>, TaskError> {
        let filters = Filter::parse(filters).map_err(|e| TaskError::InvalidArgument {
            what: "metrics filter",
            reason: crate::shims::client::error_chain(&e),
        })?;
        let mut out = Vec::new();
        for task in self.tasks_in(ns) {
            let id = |path: &[String]| (simple(path)? == "id").then(|| task.id.clone());
            if !filters.matches(&Fields(id)) {
                continue;
            }
            let Some(shim) = task.shim() else { continue };
            let req = shim::StatsRequest {
                id: task.id.clone(),
            };
            match shim.rpc().stats(req).await {
                Ok(r) => out.push(berth_proto::containerd::types::Metric {
                    timestamp: Some(crate::containers::store::timestamp(chrono::Utc::now())),
                    id: task.id.clone(),
                    data: r.into_inner().stats,
                }),
                Err(s) => tracing::warn!(id = %task.id, error = %s.message(), "collecting metrics"),
            }
        }
        Ok(out)
    }
}
