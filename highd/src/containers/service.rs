//! The gRPC face of the containers table, with containerd's semantics and events.

use std::pin::Pin;
use std::sync::Arc;

use chrono::Utc;
use futures::Stream;
use tonic::{Request, Response, Status};

use berth_proto::containerd::events::{
    container_create, ContainerCreate, ContainerDelete, ContainerUpdate,
};
use berth_proto::containerd::services::containers::v1::containers_server::Containers;
use berth_proto::containerd::services::containers::v1::{
    Container, CreateContainerRequest, CreateContainerResponse, DeleteContainerRequest,
    GetContainerRequest, GetContainerResponse, ListContainerMessage, ListContainersRequest,
    ListContainersResponse, UpdateContainerRequest, UpdateContainerResponse,
};

use super::{validate_id, validate_labels, ContainerError, ContainerStore, Record};
use berth_proto::any::pack;

use crate::db::filter::label;
use crate::events::{Exchange, Fields, Filter};
use crate::server::namespace;
use crate::tasks::TaskManager;

pub struct ContainersService {
    store: ContainerStore,
    events: Exchange,
    tasks: Arc<TaskManager>,
}

impl ContainersService {
    pub fn new(store: ContainerStore, events: Exchange, tasks: Arc<TaskManager>) -> Self {
        ContainersService {
            store,
            events,
            tasks,
        }
    }

    fn list_matching(
        &self,
        ns: &str,
        filters: &[String],
    ) -> Result<Vec<Container>, ContainerError> {
        let filters = Filter::parse(filters).map_err(|source| ContainerError::Filter { source })?;
        Ok(self
            .store
            .list(ns)?
            .into_iter()
            .filter(|(id, rec)| {
                filters.matches(&Fields(|path: &[String]| {
                    let one = |v: &str| Some(v.to_string());
                    match path {
                        [f] if f == "id" => one(id),
                        [f] if f == "image" => one(&rec.image),
                        [f] if f == "snapshotter" => one(&rec.snapshotter),
                        [f] if f == "snapshot_key" => one(&rec.snapshot_key),
                        [f] if f == "runtime" => one(&rec.runtime_name),
                        [f, n] if f == "runtime" && n == "name" => one(&rec.runtime_name),
                        _ => label(&rec.labels, path),
                    }
                }))
            })
            .map(|(id, rec)| rec.to_proto(&id))
            .collect())
    }
}

fn check_new(c: &Container) -> Result<(), ContainerError> {
    validate_id(&c.id)?;
    let missing = |what| ContainerError::Missing {
        id: c.id.clone(),
        what,
    };
    if c.runtime.as_ref().is_none_or(|r| r.name.is_empty()) {
        return Err(missing("runtime.name"));
    }
    if c.spec.is_none() {
        return Err(missing("spec"));
    }
    if !c.snapshot_key.is_empty() && c.snapshotter.is_empty() {
        return Err(missing("snapshotter (snapshot_key is set)"));
    }
    validate_labels(&c.labels)
}

/// Applies containerd's field-mask rules (metadata/containers.go) to `rec`.
fn apply_update(rec: &mut Record, new: &Container, paths: &[String]) -> Result<(), ContainerError> {
    let id = new.id.clone();
    let paths: Vec<String> = if paths.is_empty() {
        let new_runtime = new.runtime.as_ref().map(|r| r.name.as_str()).unwrap_or("");
        if new_runtime != rec.runtime_name {
            return Err(ContainerError::Immutable {
                id,
                field: "runtime.name",
            });
        }
        if new.snapshotter != rec.snapshotter {
            return Err(ContainerError::Immutable {
                id,
                field: "snapshotter",
            });
        }
        ["labels", "spec", "extensions", "image", "snapshotkey"]
            .map(String::from)
            .to_vec()
    } else {
        paths.to_vec()
    };
    let fresh = Record::from_proto(new, rec.created_at);
    for path in &paths {
        if let Some(key) = path.strip_prefix("labels.") {
            match new.labels.get(key) {
                Some(v) if !v.is_empty() => {
                    rec.labels.insert(key.to_string(), v.clone());
                }
                _ => {
                    rec.labels.remove(key);
                }
            }
            continue;
        }
        if let Some(key) = path.strip_prefix("extensions.") {
            match fresh.extensions.get(key) {
                Some(v) => {
                    rec.extensions.insert(key.to_string(), v.clone());
                }
                None => {
                    rec.extensions.remove(key);
                }
            }
            continue;
        }
        match path.as_str() {
            "labels" => rec.labels = fresh.labels.clone(),
            "spec" => rec.spec = fresh.spec.clone(),
            "extensions" => rec.extensions = fresh.extensions.clone(),
            "image" => rec.image = fresh.image.clone(),
            "snapshotkey" | "snapshot_key" => rec.snapshot_key = fresh.snapshot_key.clone(),
            other => {
                return Err(ContainerError::BadUpdatePath {
                    id,
                    path: other.to_string(),
                })
            }
        }
    }
    if rec.spec.is_none() {
        return Err(ContainerError::Missing { id, what: "spec" });
    }
    validate_labels(&rec.labels)?;
    rec.updated_at = Utc::now();
    Ok(())
}

type ListStream = Pin<Box<dyn Stream<Item = Result<ListContainerMessage, Status>> + Send>>;

#[tonic::async_trait]
impl Containers for ContainersService {
    async fn get(
        &self,
        req: Request<GetContainerRequest>,
    ) -> Result<Response<GetContainerResponse>, Status> {
        let ns = namespace(&req)?;
        let id = &req.get_ref().id;
        validate_id(id)?;
        let rec = self
            .store
            .get(&ns, id)?
            .ok_or_else(|| ContainerError::NotFound { id: id.clone() })?;
        Ok(Response::new(GetContainerResponse {
            container: Some(rec.to_proto(id)),
        }))
    }

    async fn list(
        &self,
        req: Request<ListContainersRequest>,
    ) -> Result<Response<ListContainersResponse>, Status> {
        let ns = namespace(&req)?;
        let containers = self.list_matching(&ns, &req.get_ref().filters)?;
        Ok(Response::new(ListContainersResponse { containers }))
    }

    type ListStreamStream = ListStream;

    async fn list_stream(
        &self,
        req: Request<ListContainersRequest>,
    ) -> Result<Response<ListStream>, Status> {
        let ns = namespace(&req)?;
        let containers = self.list_matching(&ns, &req.get_ref().filters)?;
        let items = containers
            .into_iter()
            .map(|c| Ok(ListContainerMessage { container: Some(c) }));
        Ok(Response::new(Box::pin(futures::stream::iter(items))))
    }

    async fn create(
        &self,
        req: Request<CreateContainerRequest>,
    ) -> Result<Response<CreateContainerResponse>, Status> {
        let ns = namespace(&req)?;
        let c = req
            .into_inner()
            .container
            .ok_or_else(|| Status::invalid_argument("container must be set"))?;
        check_new(&c)?;
        let rec = Record::from_proto(&c, Utc::now());
        self.store.create(&ns, &c.id, &rec)?;
        let runtime = c.runtime.clone().unwrap_or_default();
        let event = ContainerCreate {
            id: c.id.clone(),
            image: c.image.clone(),
            runtime: Some(container_create::Runtime {
                name: runtime.name,
                options: runtime.options,
            }),
        };
        self.events.emit(&ns, "/containers/create", pack(&event));
        Ok(Response::new(CreateContainerResponse {
            container: Some(rec.to_proto(&c.id)),
        }))
    }

    async fn update(
        &self,
        req: Request<UpdateContainerRequest>,
    ) -> Result<Response<UpdateContainerResponse>, Status> {
        let ns = namespace(&req)?;
        let req = req.into_inner();
        let c = req
            .container
            .ok_or_else(|| Status::invalid_argument("container must be set"))?;
        validate_id(&c.id)?;
        let paths = req.update_mask.map(|m| m.paths).unwrap_or_default();
        let rec = self
            .store
            .update(&ns, &c.id, |rec| apply_update(rec, &c, &paths))?;
        let event = ContainerUpdate {
            id: c.id.clone(),
            image: rec.image.clone(),
            labels: rec.labels.clone().into_iter().collect(),
            snapshot_key: rec.snapshot_key.clone(),
        };
        self.events.emit(&ns, "/containers/update", pack(&event));
        Ok(Response::new(UpdateContainerResponse {
            container: Some(rec.to_proto(&c.id)),
        }))
    }

    async fn delete(&self, req: Request<DeleteContainerRequest>) -> Result<Response<()>, Status> {
        let ns = namespace(&req)?;
        let id = req.into_inner().id;
        validate_id(&id)?;
        self.tasks
            .unless_task(&ns, &id, || self.store.delete(&ns, &id))
            .ok_or_else(|| ContainerError::HasTask { id: id.clone() })??;
        self.events
            .emit(&ns, "/containers/delete", pack(&ContainerDelete { id }));
        Ok(Response::new(()))
    }
}
