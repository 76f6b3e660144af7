//! `containerd.task.v2.Task` over gRPC: request decoding and response encoding around
//! [`Task`]. Every error leaves through `From<TaskError> for Status` (error.rs).

use std::sync::Arc;

use berth_proto::any::{LINUX_RESOURCES_TYPE_URL, PROCESS_TYPE_URL};
use berth_proto::containerd::task::v2 as api;
use berth_proto::containerd::task::v2::task_server;
use berth_proto::containerd::v1::types::ProcessInfo;
use tonic::{Request, Response, Status};

use crate::error::TaskError;
use crate::mount::RootfsMount;
use crate::options::CreateOptions;
use crate::runtime::RuntimeCli;
use crate::stdio::IoSpec;
use crate::task::{timestamp, CreateRequest, Task};

pub struct TaskService<R> {
    task: Arc<Task<R>>,
}

impl<R: RuntimeCli> TaskService<R> {
    pub fn new(task: Arc<Task<R>>) -> Self {
        TaskService { task }
    }
}

type RpcResult<T> = Result<Response<T>, Status>;

fn ok<T>(value: T) -> RpcResult<T> {
    Ok(Response::new(value))
}

/// Runs a state-changing operation as its own task, so a client that cancels the call
/// (dropping this future) cannot leave a create, start or delete half done.
async fn detached<T: Send + 'static>(
    op: impl std::future::Future<Output = Result<T, TaskError>> + Send + 'static,
) -> Result<T, Status> {
    match tokio::spawn(op).await {
        Ok(result) => Ok(result?),
        Err(join) => Err(TaskError::Aborted(join).into()),
    }
}

fn unimplemented(what: &'static str) -> Status {
    TaskError::Unimplemented { what }.into()
}

#[tonic::async_trait]
impl<R: RuntimeCli> task_server::Task for TaskService<R> {
    async fn state(&self, req: Request<api::StateRequest>) -> RpcResult<api::StateResponse> {
        let req = req.into_inner();
        let process = self.task.process(&req.id, &req.exec_id)?;
        let state = process.state();
        let io = &process.io_spec;
        ok(api::StateResponse {
            id: req.id,
            bundle: self.task.cfg.bundle.display().to_string(),
            pid: state.pid,
            status: state.status as i32,
            stdin: io.stdin.clone(),
            stdout: io.stdout.clone(),
            stderr: io.stderr.clone(),
            terminal: io.terminal,
            exit_status: state.exit.map(|e| e.status).unwrap_or_default(),
            exited_at: state.exit.map(|e| timestamp(e.at)),
            exec_id: req.exec_id,
        })
    }

    async fn create(
        &self,
        req: Request<api::CreateTaskRequest>,
    ) -> RpcResult<api::CreateTaskResponse> {
        let req = req.into_inner();
        if !req.checkpoint.is_empty() || !req.parent_checkpoint.is_empty() {
            return Err(unimplemented("restoring a checkpoint"));
        }
        let options = CreateOptions::decode(req.options.as_ref())?;
        let create = CreateRequest {
            id: req.id,
            options,
            rootfs: req
                .rootfs
                .into_iter()
                .map(|m| RootfsMount {
                    fstype: m.r#type,
                    source: m.source,
                    target: m.target,
                    options: m.options,
                })
                .collect(),
            io: IoSpec {
                stdin: req.stdin,
                stdout: req.stdout,
                stderr: req.stderr,
                terminal: req.terminal,
            },
        };
        let task = Arc::clone(&self.task);
        let pid = detached(async move { task.create(create).await }).await?;
        ok(api::CreateTaskResponse { pid })
    }

    async fn start(&self, req: Request<api::StartRequest>) -> RpcResult<api::StartResponse> {
        let req = req.into_inner();
        self.task.check_id(&req.id)?;
        let task = Arc::clone(&self.task);
        let pid = detached(async move {
            if req.exec_id.is_empty() {
                task.start_init().await
            } else {
                task.start_exec(&req.exec_id).await
            }
        })
        .await?;
        ok(api::StartResponse { pid })
    }

    async fn delete(&self, req: Request<api::DeleteRequest>) -> RpcResult<api::DeleteResponse> {
        let req = req.into_inner();
        self.task.check_id(&req.id)?;
        let task = Arc::clone(&self.task);
        let (pid, exit) = detached(async move {
            if req.exec_id.is_empty() {
                task.delete_init().await
            } else {
                task.delete_exec(&req.exec_id)
            }
        })
        .await?;
        ok(api::DeleteResponse {
            pid,
            exit_status: exit.status,
            exited_at: Some(timestamp(exit.at)),
        })
    }

    async fn pids(&self, req: Request<api::PidsRequest>) -> RpcResult<api::PidsResponse> {
        self.task.check_id(&req.get_ref().id)?;
        let processes = self
            .task
            .pids()
            .await?
            .into_iter()
            .map(|pid| ProcessInfo { pid, info: None })
            .collect();
        ok(api::PidsResponse { processes })
    }

    async fn pause(&self, req: Request<api::PauseRequest>) -> RpcResult<()> {
        self.task.check_id(&req.get_ref().id)?;
        let task = Arc::clone(&self.task);
        detached(async move { task.pause().await }).await?;
        ok(())
    }

    async fn resume(&self, req: Request<api::ResumeRequest>) -> RpcResult<()> {
        self.task.check_id(&req.get_ref().id)?;
        let task = Arc::clone(&self.task);
        detached(async move { task.resume().await }).await?;
        ok(())
    }

    async fn checkpoint(&self, _: Request<api::CheckpointTaskRequest>) -> RpcResult<()> {
        Err(unimplemented("Checkpoint"))
    }

    async fn kill(&self, req: Request<api::KillRequest>) -> RpcResult<()> {
        let req = req.into_inner();
        self.task.check_id(&req.id)?;
        let task = Arc::clone(&self.task);
        detached(async move { task.kill(&req.exec_id, req.signal, req.all).await }).await?;
        ok(())
    }

    async fn exec(&self, req: Request<api::ExecProcessRequest>) -> RpcResult<()> {
        let req = req.into_inner();
        self.task.check_id(&req.id)?;
        let spec = req.spec.ok_or(TaskError::MissingSpec)?;
        // containerd's clients send the spec either with the OCI type URL or, from older
        // typeurl versions, with a google-style prefix; the value is JSON either way.
        if !spec.type_url.ends_with("runtime-spec/1/Process") {
            return Err(TaskError::SpecType {
                type_url: spec.type_url,
                want: PROCESS_TYPE_URL,
            }
            .into());
        }
        let io = IoSpec {
            stdin: req.stdin,
            stdout: req.stdout,
            stderr: req.stderr,
            terminal: req.terminal,
        };
        self.task.add_exec(&req.exec_id, io, spec.value)?;
        ok(())
    }

    async fn resize_pty(&self, req: Request<api::ResizePtyRequest>) -> RpcResult<()> {
        let req = req.into_inner();
        let process = self.task.process(&req.id, &req.exec_id)?;
        let io = process
            .io()
            .ok_or(crate::stdio::IoError::NoTerminal)
            .map_err(TaskError::from)?;
        io.resize(req.width, req.height).map_err(TaskError::from)?;
        ok(())
    }

    async fn close_io(&self, req: Request<api::CloseIoRequest>) -> RpcResult<()> {
        let req = req.into_inner();
        let process = self.task.process(&req.id, &req.exec_id)?;
        if req.stdin {
            if let Some(io) = process.io() {
                io.close_stdin();
            }
        }
        ok(())
    }

    async fn update(&self, req: Request<api::UpdateTaskRequest>) -> RpcResult<()> {
        let req = req.into_inner();
        self.task.check_id(&req.id)?;
        let resources = req.resources.ok_or(TaskError::MissingResources)?;
        if resources.type_url != LINUX_RESOURCES_TYPE_URL {
            return Err(TaskError::SpecType {
                type_url: resources.type_url,
                want: LINUX_RESOURCES_TYPE_URL,
            }
            .into());
        }
        let task = Arc::clone(&self.task);
        detached(async move { task.update(&resources.value).await }).await?;
        ok(())
    }

    async fn wait(&self, req: Request<api::WaitRequest>) -> RpcResult<api::WaitResponse> {
        let req = req.into_inner();
        let process = self.task.process(&req.id, &req.exec_id)?;
        let exit = process.wait().await;
        ok(api::WaitResponse {
            exit_status: exit.status,
            exited_at: Some(timestamp(exit.at)),
        })
    }

    async fn stats(&self, req: Request<api::StatsRequest>) -> RpcResult<api::StatsResponse> {
        self.task.check_id(&req.get_ref().id)?;
        ok(api::StatsResponse {
            stats: Some(self.task.stats()?),
        })
    }

    async fn connect(&self, req: Request<api::ConnectRequest>) -> RpcResult<api::ConnectResponse> {
        self.task.check_id(&req.get_ref().id)?;
        let task_pid = self
            .task
            .process(&req.get_ref().id, "")
            .map(|p| p.pid())
            .unwrap_or_default();
        ok(api::ConnectResponse {
            shim_pid: std::process::id(),
            task_pid,
            version: concat!("berth-shim ", env!("CARGO_PKG_VERSION")).to_owned(),
        })
    }

    async fn shutdown(&self, req: Request<api::ShutdownRequest>) -> RpcResult<()> {
        let req = req.into_inner();
        self.task.check_id(&req.id)?;
        self.task.shutdown(req.now)?;
        ok(())
    }
}
