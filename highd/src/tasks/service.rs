//! containerd's Tasks service on top of [`TaskManager`].

use std::future::Future;
use std::sync::Arc;

use berth_proto::containerd::services::tasks::v1::tasks_server::Tasks;
use berth_proto::containerd::services::tasks::v1::*;
use tonic::{Request, Response, Status};

use berth_proto::containerd::v1::types::Status as ProcStatus;

use super::{TaskError, TaskManager};
use crate::events::{simple, Fields, Filter};
use crate::server::namespace;

pub struct TasksService {
    tasks: Arc<TaskManager>,
}

impl TasksService {
    pub fn new(tasks: Arc<TaskManager>) -> Self {
        TasksService { tasks }
    }
}

/// Runs a state-changing operation to completion even if the client goes away: a
/// cancelled Create would otherwise leave a reserved id, a task dir and maybe a shim.
async fn detached<T: Send + 'static>(
    op: impl Future<Output = Result<T, TaskError>> + Send + 'static,
) -> Result<T, Status> {
    match tokio::spawn(op).await {
        Ok(result) => result.map_err(Status::from),
        Err(e) => Err(Status::internal(format!("task operation failed: {e}"))),
    }
}

fn unimplemented(what: &'static str) -> Status {
    TaskError::Unimplemented { what }.into()
}

#[tonic::async_trait]
impl Tasks for TasksService {
    async fn create(
        &self,
        req: Request<CreateTaskRequest>,
    ) -> Result<Response<CreateTaskResponse>, Status> {
        let ns = namespace(&req)?;
        let req = req.into_inner();
        crate::containers::validate_id(&req.container_id)?;
        let tasks = self.tasks.clone();
        Ok(Response::new(
            detached(async move { tasks.create(&ns, req).await }).await?,
        ))
    }

    async fn start(&self, req: Request<StartRequest>) -> Result<Response<StartResponse>, Status> {
        let ns = namespace(&req)?;
        let r = req.into_inner();
        let tasks = self.tasks.clone();
        let pid =
            detached(async move { tasks.start(&ns, &r.container_id, &r.exec_id).await }).await?;
        Ok(Response::new(StartResponse { pid }))
    }

    async fn delete(
        &self,
        req: Request<DeleteTaskRequest>,
    ) -> Result<Response<DeleteResponse>, Status> {
        let ns = namespace(&req)?;
        let id = req.into_inner().container_id;
        let tasks = self.tasks.clone();
        Ok(Response::new(
            detached(async move { tasks.delete(&ns, &id).await }).await?,
        ))
    }

    async fn delete_process(
        &self,
        req: Request<DeleteProcessRequest>,
    ) -> Result<Response<DeleteResponse>, Status> {
        let ns = namespace(&req)?;
        let r = req.into_inner();
        let tasks = self.tasks.clone();
        Ok(Response::new(
            detached(async move { tasks.delete_process(&ns, &r.container_id, &r.exec_id).await })
                .await?,
        ))
    }

    async fn get(&self, req: Request<GetRequest>) -> Result<Response<GetResponse>, Status> {
        let ns = namespace(&req)?;
        let r = req.into_inner();
        let process = self.tasks.get(&ns, &r.container_id, &r.exec_id).await?;
        Ok(Response::new(GetResponse {
            process: Some(process),
        }))
    }

    async fn list(
        &self,
        req: Request<ListTasksRequest>,
    ) -> Result<Response<ListTasksResponse>, Status> {
        let ns = namespace(&req)?;
        // containerd ignores this field; we honour `id` and `status` (e.g. status==running).
        let filter = &req.get_ref().filter;
        let filters = Filter::parse(std::slice::from_ref(filter)).map_err(Status::from)?;
        let tasks = self
            .tasks
            .list(&ns)
            .await?
            .into_iter()
            .filter(|p| {
                let status = ProcStatus::try_from(p.status)
                    .unwrap_or(ProcStatus::Unknown)
                    .as_str_name()
                    .to_ascii_lowercase();
                filters.matches(&Fields(|path: &[String]| match simple(path)? {
                    "id" => Some(p.container_id.clone()),
                    "status" => Some(status.clone()),
                    _ => None,
                }))
            })
            .collect();
        Ok(Response::new(ListTasksResponse { tasks }))
    }

    async fn kill(&self, req: Request<KillRequest>) -> Result<Response<()>, Status> {
        let ns = namespace(&req)?;
        let (tasks, r) = (self.tasks.clone(), req.into_inner());
        detached(async move { tasks.kill(&ns, r).await }).await?;
        Ok(Response::new(()))
    }

    async fn exec(&self, req: Request<ExecProcessRequest>) -> Result<Response<()>, Status> {
        let ns = namespace(&req)?;
        let (tasks, r) = (self.tasks.clone(), req.into_inner());
        detached(async move { tasks.exec(&ns, r).await }).await?;
        Ok(Response::new(()))
    }

    async fn resize_pty(&self, req: Request<ResizePtyRequest>) -> Result<Response<()>, Status> {
        let ns = namespace(&req)?;
        self.tasks.resize_pty(&ns, req.into_inner()).await?;
        Ok(Response::new(()))
    }

    async fn close_io(&self, req: Request<CloseIoRequest>) -> Result<Response<()>, Status> {
        let ns = namespace(&req)?;
        self.tasks.close_io(&ns, req.into_inner()).await?;
        Ok(Response::new(()))
    }

    async fn pause(&self, req: Request<PauseTaskRequest>) -> Result<Response<()>, Status> {
        let ns = namespace(&req)?;
        self.tasks
            .pause(&ns, &req.into_inner().container_id)
            .await?;
        Ok(Response::new(()))
    }

    async fn resume(&self, req: Request<ResumeTaskRequest>) -> Result<Response<()>, Status> {
        let ns = namespace(&req)?;
        self.tasks
            .resume(&ns, &req.into_inner().container_id)
            .await?;
        Ok(Response::new(()))
    }

    async fn list_pids(
        &self,
        req: Request<ListPidsRequest>,
    ) -> Result<Response<ListPidsResponse>, Status> {
        let ns = namespace(&req)?;
        let processes = self
            .tasks
            .list_pids(&ns, &req.into_inner().container_id)
            .await?;
        Ok(Response::new(ListPidsResponse { processes }))
    }

    async fn checkpoint(
        &self,
        _req: Request<CheckpointTaskRequest>,
    ) -> Result<Response<CheckpointTaskResponse>, Status> {
        Err(unimplemented("Checkpoint"))
    }

    async fn update(&self, req: Request<UpdateTaskRequest>) -> Result<Response<()>, Status> {
        let ns = namespace(&req)?;
        self.tasks.update(&ns, req.into_inner()).await?;
        Ok(Response::new(()))
    }

    async fn metrics(
        &self,
        req: Request<MetricsRequest>,
    ) -> Result<Response<MetricsResponse>, Status> {
        let ns = namespace(&req)?;
        let metrics = self.tasks.metrics(&ns, &req.get_ref().filters).await?;
        Ok(Response::new(MetricsResponse { metrics }))
    }

    async fn wait(&self, req: Request<WaitRequest>) -> Result<Response<WaitResponse>, Status> {
        let ns = namespace(&req)?;
        let r = req.into_inner();
        Ok(Response::new(
            self.tasks.wait(&ns, &r.container_id, &r.exec_id).await?,
        ))
    }
}
