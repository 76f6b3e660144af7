//! [`Backend`] over containerd's v1 gRPC services (highd, or a real containerd), every
//! call stamped with the engine's namespace.

use std::collections::HashMap;
use std::path::Path;

use berth_proto::containerd::services as svc;
use berth_proto::NamespaceInterceptor;
use chrono::{DateTime, Utc};
use futures::StreamExt;
use tonic::service::interceptor::InterceptedService;
use tonic::transport::Channel;

use svc::containers::v1::{container::Runtime, containers_client::ContainersClient, Container};
use svc::content::v1::{content_client::ContentClient, WriteAction, WriteContentRequest};
use svc::diff::v1::diff_client::DiffClient;
use svc::events::v1::events_client::EventsClient;
use svc::images::v1::images_client::ImagesClient;
use svc::snapshots::v1::snapshots_client::SnapshotsClient;
use svc::tasks::v1::tasks_client::TasksClient;

use super::*;

mod content;
mod convert;
mod lease;
use convert::{
    desc_from, desc_to, image_from, mount_from, mount_to, status_err, task_status, to_ts, ts,
};

type Svc = InterceptedService<Channel, lease::LeaseInterceptor>;

const SNAPSHOTTER: &str = "overlayfs";
const RUNTIME: &str = "io.containerd.runc.v2";
/// Content is streamed in chunks well under highd's 16 MiB message limit.
const CHUNK: usize = 1 << 20;

pub struct GrpcBackend {
    channel: Channel,
    interceptor: lease::LeaseInterceptor,
    namespace: String,
    address: String,
}

impl GrpcBackend {
    /// Connects lazily: the engine starts (and serves what it can from its records) while
    /// highd is still coming up, and reconnects after highd restarts.
    pub fn new(address: &Path, namespace: &str) -> Result<Self, BackendError> {
        let interceptor =
            lease::LeaseInterceptor(NamespaceInterceptor::new(namespace).map_err(|e| {
                BackendError::InvalidArgument {
                    message: format!("containerd namespace {namespace:?}: {e}"),
                }
            })?);
        Ok(Self {
            channel: berth_proto::transport::connect_unix_lazy(address),
            interceptor,
            namespace: namespace.into(),
            address: address.display().to_string(),
        })
    }

    fn err(&self, op: &'static str) -> impl Fn(tonic::Status) -> BackendError + '_ {
        move |s| status_err(op, &self.address, s)
    }

    fn content(&self) -> ContentClient<Svc> {
        ContentClient::with_interceptor(self.channel.clone(), self.interceptor.clone())
            .max_decoding_message_size(berth_proto::transport::MAX_MESSAGE_SIZE)
    }
    fn images(&self) -> ImagesClient<Svc> {
        ImagesClient::with_interceptor(self.channel.clone(), self.interceptor.clone())
    }
    fn snapshots(&self) -> SnapshotsClient<Svc> {
        SnapshotsClient::with_interceptor(self.channel.clone(), self.interceptor.clone())
    }
    fn diff(&self) -> DiffClient<Svc> {
        DiffClient::with_interceptor(self.channel.clone(), self.interceptor.clone())
    }
    fn containers(&self) -> ContainersClient<Svc> {
        ContainersClient::with_interceptor(self.channel.clone(), self.interceptor.clone())
    }
    fn tasks(&self) -> TasksClient<Svc> {
        TasksClient::with_interceptor(self.channel.clone(), self.interceptor.clone())
    }
    fn events(&self) -> EventsClient<Svc> {
        EventsClient::with_interceptor(self.channel.clone(), self.interceptor.clone())
    }
}

impl Backend for GrpcBackend {
    async fn content_write(
        &self,
        desc: &Descriptor,
        data: bytes::Bytes,
        labels: HashMap<String, String>,
    ) -> BackendResult<()> {
        use svc::content::v1::InfoRequest;
        match self
            .content()
            .info(InfoRequest {
                digest: desc.digest.clone(),
            })
            .await
        {
            Ok(_) => return Ok(()),
            Err(s) if s.code() == tonic::Code::NotFound => {}
            Err(s) => return Err(self.err("content info")(s)),
        }
        let reference = format!("berth-engine-{}", desc.digest);
        let total = data.len() as i64;
        let mut msgs = Vec::new();
        let mut offset = 0usize;
        for chunk in data.chunks(CHUNK) {
            msgs.push(WriteContentRequest {
                action: WriteAction::Write as i32,
                r#ref: reference.clone(),
                total,
                expected: desc.digest.clone(),
                offset: offset as i64,
                data: chunk.to_vec(),
                labels: HashMap::new(),
            });
            offset += chunk.len();
        }
        msgs.push(WriteContentRequest {
            action: WriteAction::Commit as i32,
            r#ref: reference,
            total,
            expected: desc.digest.clone(),
            offset: total,
            data: Vec::new(),
            labels,
        });
        let resp = self.content().write(tokio_stream::iter(msgs)).await;
        let mut stream = match resp {
            Ok(r) => r.into_inner(),
            Err(s) if s.code() == tonic::Code::AlreadyExists => return Ok(()),
            Err(s) => return Err(self.err("content write")(s)),
        };
        loop {
            match stream.message().await {
                Ok(Some(_)) => {}
                Ok(None) => return Ok(()),
                // Someone else committed the same blob first: same bytes, same digest.
                Err(s) if s.code() == tonic::Code::AlreadyExists => return Ok(()),
                Err(s) => return Err(self.err("content write")(s)),
            }
        }
    }

    async fn content_read(&self, digest: &str) -> BackendResult<Vec<u8>> {
        let mut chunks = self.read_stream(digest).await?;
        let mut out = Vec::new();
        while let Some(chunk) = chunks.next().await {
            out.extend_from_slice(&chunk?);
        }
        Ok(out)
    }

    async fn content_read_stream(&self, digest: &str) -> BackendResult<ChunkStream> {
        self.read_stream(digest).await
    }

    async fn content_write_stream(
        &self,
        total: i64,
        expected: &str,
        data: UploadStream,
        labels: HashMap<String, String>,
    ) -> BackendResult<()> {
        self.write_stream(total, expected, data, labels).await
    }

    async fn content_labels(&self, digest: &str) -> BackendResult<HashMap<String, String>> {
        self.info_labels(digest).await
    }

    async fn content_set_label(&self, digest: &str, key: &str, value: &str) -> BackendResult<()> {
        self.set_label(digest, key, value).await
    }

    async fn content_ingest_offset(&self, reference: &str) -> BackendResult<u64> {
        self.ingest_offset(reference).await
    }

    async fn content_ingest(
        &self,
        reference: &str,
        offset: u64,
        total: i64,
        expected: &str,
        data: UploadStream,
        labels: HashMap<String, String>,
    ) -> BackendResult<()> {
        let ingest = content::Ingest {
            reference: reference.into(),
            offset,
            resumable: true,
        };
        self.ingest(ingest, total, expected, data, labels).await
    }

    async fn image_get(&self, name: &str) -> BackendResult<Image> {
        use svc::images::v1::GetImageRequest;
        let resp = self
            .images()
            .get(GetImageRequest { name: name.into() })
            .await
            .map_err(self.err("image get"))?;
        resp.into_inner()
            .image
            .map(image_from)
            .ok_or_else(|| BackendError::NotFound {
                message: format!("image \"{name}\": not found"),
            })
    }

    async fn image_list(&self) -> BackendResult<Vec<Image>> {
        use svc::images::v1::ListImagesRequest;
        let resp = self
            .images()
            .list(ListImagesRequest { filters: vec![] })
            .await
            .map_err(self.err("image list"))?;
        Ok(resp
            .into_inner()
            .images
            .into_iter()
            .map(image_from)
            .collect())
    }

    async fn image_put(&self, image: Image) -> BackendResult<()> {
        use svc::images::v1::{CreateImageRequest, UpdateImageRequest};
        let pb_image = svc::images::v1::Image {
            name: image.name.clone(),
            labels: image.labels.clone(),
            target: Some(desc_to(&image.target)),
            created_at: to_ts(image.created_at),
            updated_at: to_ts(image.updated_at),
        };
        let req = CreateImageRequest {
            image: Some(pb_image.clone()),
            source_date_epoch: None,
        };
        match self.images().create(req).await {
            Ok(_) => Ok(()),
            Err(s) if s.code() == tonic::Code::AlreadyExists => {
                let req = UpdateImageRequest {
                    image: Some(pb_image),
                    update_mask: None,
                    source_date_epoch: None,
                };
                self.images()
                    .update(req)
                    .await
                    .map(|_| ())
                    .map_err(self.err("image update"))
            }
            Err(s) => Err(self.err("image create")(s)),
        }
    }

    async fn image_delete(&self, name: &str) -> BackendResult<()> {
        use svc::images::v1::DeleteImageRequest;
        let req = DeleteImageRequest {
            name: name.into(),
            sync: false,
            target: None,
        };
        self.images()
            .delete(req)
            .await
            .map(|_| ())
            .map_err(self.err("image delete"))
    }

    async fn snapshot_exists(&self, key: &str) -> BackendResult<bool> {
        use svc::snapshots::v1::StatSnapshotRequest;
        let req = StatSnapshotRequest {
            snapshotter: SNAPSHOTTER.into(),
            key: key.into(),
        };
        match self.snapshots().stat(req).await {
            Ok(_) => Ok(true),
            Err(s) if s.code() == tonic::Code::NotFound => Ok(false),
            Err(s) => Err(self.err("snapshot stat")(s)),
        }
    }

    async fn snapshot_prepare(
        &self,
        key: &str,
        parent: &str,
        labels: HashMap<String, String>,
    ) -> BackendResult<Vec<Mount>> {
        use svc::snapshots::v1::PrepareSnapshotRequest;
        let req = PrepareSnapshotRequest {
            snapshotter: SNAPSHOTTER.into(),
            key: key.into(),
            parent: parent.into(),
            labels,
        };
        let resp = self
            .snapshots()
            .prepare(req)
            .await
            .map_err(self.err("snapshot prepare"))?;
        Ok(resp
            .into_inner()
            .mounts
            .into_iter()
            .map(mount_from)
            .collect())
    }

    async fn snapshot_mounts(&self, key: &str) -> BackendResult<Vec<Mount>> {
        use svc::snapshots::v1::MountsRequest;
        let req = MountsRequest {
            snapshotter: SNAPSHOTTER.into(),
            key: key.into(),
        };
        let resp = self
            .snapshots()
            .mounts(req)
            .await
            .map_err(self.err("snapshot mounts"))?;
        Ok(resp
            .into_inner()
            .mounts
            .into_iter()
            .map(mount_from)
            .collect())
    }

    async fn snapshot_commit(
        &self,
        name: &str,
        key: &str,
        labels: HashMap<String, String>,
    ) -> BackendResult<()> {
        use svc::snapshots::v1::CommitSnapshotRequest;
        let req = CommitSnapshotRequest {
            snapshotter: SNAPSHOTTER.into(),
            name: name.into(),
            key: key.into(),
            labels,
        };
        self.snapshots()
            .commit(req)
            .await
            .map(|_| ())
            .map_err(self.err("snapshot commit"))
    }

    async fn snapshot_remove(&self, key: &str) -> BackendResult<()> {
        use svc::snapshots::v1::RemoveSnapshotRequest;
        let req = RemoveSnapshotRequest {
            snapshotter: SNAPSHOTTER.into(),
            key: key.into(),
        };
        self.snapshots()
            .remove(req)
            .await
            .map(|_| ())
            .map_err(self.err("snapshot remove"))
    }

    async fn diff_apply(
        &self,
        layer: &Descriptor,
        mounts: Vec<Mount>,
    ) -> BackendResult<Descriptor> {
        use svc::diff::v1::ApplyRequest;
        let req = ApplyRequest {
            diff: Some(desc_to(layer)),
            mounts: mounts.into_iter().map(mount_to).collect(),
            payloads: HashMap::new(),
            sync_fs: true,
        };
        let resp = self
            .diff()
            .apply(req)
            .await
            .map_err(self.err("diff apply"))?;
        Ok(resp.into_inner().applied.map(desc_from).unwrap_or_default())
    }

    async fn diff_create(
        &self,
        lower: Vec<Mount>,
        upper: Vec<Mount>,
        media_type: &str,
    ) -> BackendResult<Descriptor> {
        use svc::diff::v1::DiffRequest;
        let req = DiffRequest {
            left: lower.into_iter().map(mount_to).collect(),
            right: upper.into_iter().map(mount_to).collect(),
            media_type: media_type.into(),
            r#ref: String::new(),
            labels: HashMap::new(),
            source_date_epoch: None,
        };
        let resp = self.diff().diff(req).await.map_err(self.err("diff"))?;
        resp.into_inner()
            .diff
            .map(desc_from)
            .ok_or_else(|| BackendError::Decode {
                what: "diff response",
                message: "no descriptor".into(),
            })
    }

    async fn container_create(&self, c: NewContainer) -> BackendResult<()> {
        use svc::containers::v1::CreateContainerRequest;
        let container = Container {
            id: c.id,
            labels: c.labels,
            image: c.image,
            runtime: Some(Runtime {
                name: RUNTIME.into(),
                options: None,
            }),
            spec: Some(berth_proto::any::pack_json(
                berth_proto::any::SPEC_TYPE_URL,
                c.spec,
            )),
            snapshotter: SNAPSHOTTER.into(),
            snapshot_key: c.snapshot_key,
            ..Default::default()
        };
        let req = CreateContainerRequest {
            container: Some(container),
        };
        self.containers()
            .create(req)
            .await
            .map(|_| ())
            .map_err(self.err("container create"))
    }

    async fn container_delete(&self, id: &str) -> BackendResult<()> {
        use svc::containers::v1::DeleteContainerRequest;
        let req = DeleteContainerRequest { id: id.into() };
        self.containers()
            .delete(req)
            .await
            .map(|_| ())
            .map_err(self.err("container delete"))
    }

    async fn container_get_spec(&self, id: &str) -> BackendResult<Vec<u8>> {
        use svc::containers::v1::GetContainerRequest;
        let c = self
            .containers()
            .get(GetContainerRequest { id: id.into() })
            .await
            .map_err(self.err("container get"))?
            .into_inner()
            .container
            .ok_or_else(|| BackendError::Decode {
                what: "container",
                message: "empty GetContainerResponse".into(),
            })?;
        Ok(c.spec.map(|s| s.value).unwrap_or_default())
    }

    async fn container_set_spec(&self, id: &str, spec: Vec<u8>) -> BackendResult<()> {
        use svc::containers::v1::UpdateContainerRequest;
        let req = UpdateContainerRequest {
            container: Some(Container {
                id: id.into(),
                spec: Some(berth_proto::any::pack_json(
                    berth_proto::any::SPEC_TYPE_URL,
                    spec,
                )),
                ..Default::default()
            }),
            update_mask: Some(prost_types::FieldMask {
                paths: vec!["spec".into()],
            }),
        };
        self.containers()
            .update(req)
            .await
            .map(|_| ())
            .map_err(self.err("container update"))
    }

    async fn container_list(&self) -> BackendResult<Vec<(String, HashMap<String, String>)>> {
        use svc::containers::v1::ListContainersRequest;
        let resp = self
            .containers()
            .list(ListContainersRequest { filters: vec![] })
            .await
            .map_err(self.err("container list"))?;
        Ok(resp
            .into_inner()
            .containers
            .into_iter()
            .map(|c| (c.id, c.labels))
            .collect())
    }

    async fn task_create(&self, id: &str, rootfs: Vec<Mount>, stdio: Stdio) -> BackendResult<u32> {
        use svc::tasks::v1::CreateTaskRequest;
        let req = CreateTaskRequest {
            container_id: id.into(),
            rootfs: rootfs.into_iter().map(mount_to).collect(),
            stdin: stdio.stdin,
            stdout: stdio.stdout,
            stderr: stdio.stderr,
            terminal: stdio.terminal,
            ..Default::default()
        };
        let resp = self
            .tasks()
            .create(req)
            .await
            .map_err(self.err("task create"))?;
        Ok(resp.into_inner().pid)
    }

    async fn task_start(&self, id: &str, exec_id: &str) -> BackendResult<u32> {
        use svc::tasks::v1::StartRequest;
        let req = StartRequest {
            container_id: id.into(),
            exec_id: exec_id.into(),
        };
        let resp = self
            .tasks()
            .start(req)
            .await
            .map_err(self.err("task start"))?;
        Ok(resp.into_inner().pid)
    }

    async fn task_get(&self, id: &str) -> BackendResult<TaskInfo> {
        use svc::tasks::v1::GetRequest;
        let req = GetRequest {
            container_id: id.into(),
            exec_id: String::new(),
        };
        let resp = self.tasks().get(req).await.map_err(self.err("task get"))?;
        let p = resp
            .into_inner()
            .process
            .ok_or_else(|| BackendError::NotFound {
                message: format!("task {id}: not found"),
            })?;
        Ok(TaskInfo {
            pid: p.pid,
            status: task_status(p.status),
            exit_status: p.exit_status,
            exited_at: ts(p.exited_at),
        })
    }

    async fn task_kill(
        &self,
        id: &str,
        exec_id: &str,
        signal: u32,
        all: bool,
    ) -> BackendResult<()> {
        use svc::tasks::v1::KillRequest;
        let req = KillRequest {
            container_id: id.into(),
            exec_id: exec_id.into(),
            signal,
            all,
        };
        self.tasks()
            .kill(req)
            .await
            .map(|_| ())
            .map_err(self.err("task kill"))
    }

    async fn task_delete(&self, id: &str) -> BackendResult<TaskInfo> {
        use svc::tasks::v1::DeleteTaskRequest;
        let req = DeleteTaskRequest {
            container_id: id.into(),
        };
        let r = self
            .tasks()
            .delete(req)
            .await
            .map_err(self.err("task delete"))?
            .into_inner();
        Ok(TaskInfo {
            pid: r.pid,
            status: TaskStatus::Stopped,
            exit_status: r.exit_status,
            exited_at: ts(r.exited_at),
        })
    }

    async fn task_exec(
        &self,
        id: &str,
        exec_id: &str,
        process: Vec<u8>,
        stdio: Stdio,
    ) -> BackendResult<()> {
        use svc::tasks::v1::ExecProcessRequest;
        let req = ExecProcessRequest {
            container_id: id.into(),
            stdin: stdio.stdin,
            stdout: stdio.stdout,
            stderr: stdio.stderr,
            terminal: stdio.terminal,
            spec: Some(berth_proto::any::pack_json(
                berth_proto::any::PROCESS_TYPE_URL,
                process,
            )),
            exec_id: exec_id.into(),
        };
        self.tasks()
            .exec(req)
            .await
            .map(|_| ())
            .map_err(self.err("task exec"))
    }

    async fn task_wait(
        &self,
        id: &str,
        exec_id: &str,
    ) -> BackendResult<(u32, Option<DateTime<Utc>>)> {
        use svc::tasks::v1::WaitRequest;
        let req = WaitRequest {
            container_id: id.into(),
            exec_id: exec_id.into(),
        };
        let r = self
            .tasks()
            .wait(req)
            .await
            .map_err(self.err("task wait"))?
            .into_inner();
        Ok((r.exit_status, ts(r.exited_at)))
    }

    async fn task_delete_process(&self, id: &str, exec_id: &str) -> BackendResult<()> {
        use svc::tasks::v1::DeleteProcessRequest;
        let req = DeleteProcessRequest {
            container_id: id.into(),
            exec_id: exec_id.into(),
        };
        self.tasks()
            .delete_process(req)
            .await
            .map(|_| ())
            .map_err(self.err("task delete process"))
    }

    async fn task_close_stdin(&self, id: &str, exec_id: &str) -> BackendResult<()> {
        use svc::tasks::v1::CloseIoRequest;
        let req = CloseIoRequest {
            container_id: id.into(),
            exec_id: exec_id.into(),
            stdin: true,
        };
        self.tasks()
            .close_io(req)
            .await
            .map(|_| ())
            .map_err(self.err("task close io"))
    }

    async fn task_pause(&self, id: &str, pause: bool) -> BackendResult<()> {
        use svc::tasks::v1::{PauseTaskRequest, ResumeTaskRequest};
        let container_id = id.to_string();
        if pause {
            self.tasks()
                .pause(PauseTaskRequest { container_id })
                .await
                .map(|_| ())
                .map_err(self.err("task pause"))
        } else {
            self.tasks()
                .resume(ResumeTaskRequest { container_id })
                .await
                .map(|_| ())
                .map_err(self.err("task resume"))
        }
    }

    async fn task_resize_pty(
        &self,
        id: &str,
        exec_id: &str,
        width: u32,
        height: u32,
    ) -> BackendResult<()> {
        use svc::tasks::v1::ResizePtyRequest;
        let req = ResizePtyRequest {
            container_id: id.into(),
            exec_id: exec_id.into(),
            width,
            height,
        };
        self.tasks()
            .resize_pty(req)
            .await
            .map(|_| ())
            .map_err(self.err("task resize pty"))
    }

    async fn task_pids(&self, id: &str) -> BackendResult<Vec<u32>> {
        use svc::tasks::v1::ListPidsRequest;
        let req = ListPidsRequest {
            container_id: id.into(),
        };
        let r = self
            .tasks()
            .list_pids(req)
            .await
            .map_err(self.err("task list pids"))?
            .into_inner();
        Ok(r.processes.iter().map(|p| p.pid).collect())
    }

    async fn task_update(&self, id: &str, resources: Vec<u8>) -> BackendResult<()> {
        use svc::tasks::v1::UpdateTaskRequest;
        let req = UpdateTaskRequest {
            container_id: id.into(),
            resources: Some(berth_proto::any::pack_json(
                berth_proto::any::LINUX_RESOURCES_TYPE_URL,
                resources,
            )),
            ..Default::default()
        };
        self.tasks()
            .update(req)
            .await
            .map(|_| ())
            .map_err(self.err("task update"))
    }

    async fn task_metrics(&self, id: &str) -> BackendResult<CgroupMetrics> {
        use berth_proto::io::containerd::cgroups::{v1, v2};
        use svc::tasks::v1::MetricsRequest;
        let req = MetricsRequest {
            filters: vec![format!("id==\"{id}\"")],
        };
        let r = self
            .tasks()
            .metrics(req)
            .await
            .map_err(self.err("task metrics"))?
            .into_inner();
        let data = r
            .metrics
            .into_iter()
            .find(|m| m.id == id)
            .and_then(|m| m.data)
            .ok_or_else(|| BackendError::NotFound {
                message: format!("no metrics for task {id}"),
            })?;
        let decode = |e: berth_proto::ProtoError| BackendError::Decode {
            what: "cgroup metrics",
            message: e.to_string(),
        };
        if data.type_url.ends_with("cgroups.v2.Metrics") {
            berth_proto::any::unpack::<v2::Metrics>(&data)
                .map(|m| CgroupMetrics::V2(Box::new(m)))
                .map_err(decode)
        } else {
            berth_proto::any::unpack::<v1::Metrics>(&data)
                .map(|m| CgroupMetrics::V1(Box::new(m)))
                .map_err(decode)
        }
    }

    async fn subscribe_exits(&self) -> BackendResult<ExitStream> {
        use berth_proto::any::Event;
        use svc::events::v1::SubscribeRequest;
        let req = SubscribeRequest {
            filters: vec![format!("topic==\"{}\"", berth_proto::any::topic::TASK_EXIT)],
        };
        let stream = self
            .events()
            .subscribe(req)
            .await
            .map_err(self.err("events subscribe"))?
            .into_inner();
        let namespace = self.namespace.clone();
        let address = self.address.clone();
        Ok(Box::pin(stream.filter_map(move |item| {
            let namespace = namespace.clone();
            let address = address.clone();
            async move {
                let env = match item {
                    Ok(env) => env,
                    Err(s) => return Some(Err(status_err("events subscribe", &address, s))),
                };
                if env.namespace != namespace {
                    return None;
                }
                match Event::from_any(env.event.as_ref()?) {
                    Ok(Event::TaskExit(e)) => Some(Ok(ExitEvent {
                        container_id: e.container_id,
                        exec_id: e.id,
                        pid: e.pid,
                        exit_status: e.exit_status,
                        exited_at: ts(e.exited_at),
                    })),
                    Ok(_) => None,
                    Err(e) => Some(Err(BackendError::Decode {
                        what: "event",
                        message: e.to_string(),
                    })),
                }
            }
        })))
    }

    async fn lease_create(&self, id: &str, labels: HashMap<String, String>) -> BackendResult<()> {
        self.create_lease(id, labels).await
    }

    async fn lease_delete(&self, id: &str) -> BackendResult<()> {
        self.delete_lease(id).await
    }

    async fn lease_list(&self) -> BackendResult<Vec<(String, HashMap<String, String>)>> {
        self.list_leases().await
    }
}
