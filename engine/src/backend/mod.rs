//! The engine's view of highd: containerd's v1 services, reduced to the calls the engine
//! makes, in plain Rust types. [`grpc::GrpcBackend`] talks to a real highd (or containerd);
//! [`fake::FakeBackend`] keeps everything in memory for unit tests.

use std::collections::HashMap;
use std::future::Future;
use std::pin::Pin;

use chrono::{DateTime, Utc};
use futures::Stream;

#[cfg(test)]
pub mod fake;
pub mod grpc;
pub mod lease;

#[derive(Debug, thiserror::Error)]
pub enum BackendError {
    #[error("{message}")]
    NotFound { message: String },
    #[error("{message}")]
    AlreadyExists { message: String },
    #[error("{message}")]
    InvalidArgument { message: String },
    /// Any other failure highd reported; `message` is highd's, unchanged, because callers
    /// (task create) must show the runtime's own words.
    #[error("{op}: {message}")]
    Failed { op: &'static str, message: String },
    #[error("cannot connect to highd at {address}: {message}")]
    Connect { address: String, message: String },
    #[error("decode {what} from highd: {message}")]
    Decode { what: &'static str, message: String },
}

impl BackendError {
    pub fn is_not_found(&self) -> bool {
        matches!(self, Self::NotFound { .. })
    }
}

pub type BackendResult<T> = Result<T, BackendError>;

#[derive(Debug, Clone, Default, PartialEq, Eq, serde::Serialize, serde::Deserialize)]
pub struct Mount {
    #[serde(rename = "type")]
    pub kind: String,
    pub source: String,
    pub target: String,
    pub options: Vec<String>,
}

#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct Descriptor {
    pub media_type: String,
    pub digest: String,
    pub size: i64,
    pub annotations: HashMap<String, String>,
}

#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct Image {
    pub name: String,
    pub target: Descriptor,
    pub labels: HashMap<String, String>,
    pub created_at: Option<DateTime<Utc>>,
    pub updated_at: Option<DateTime<Utc>>,
}

#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct NewContainer {
    pub id: String,
    pub image: String,
    /// The OCI runtime spec as JSON; sent as an Any with containerd's spec type URL.
    pub spec: Vec<u8>,
    pub snapshot_key: String,
    pub labels: HashMap<String, String>,
}

/// Stdio strings as ARCHITECTURE.md defines them ("stdio strings").
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct Stdio {
    pub stdin: String,
    pub stdout: String,
    pub stderr: String,
    pub terminal: bool,
}

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum TaskStatus {
    Unknown,
    Created,
    Running,
    Stopped,
    Paused,
    Pausing,
}

#[derive(Debug, Clone, PartialEq, Eq)]
pub struct TaskInfo {
    pub pid: u32,
    pub status: TaskStatus,
    pub exit_status: u32,
    pub exited_at: Option<DateTime<Utc>>,
}

/// `/tasks/exit`: `exec_id` equals `container_id` for the init process, like containerd.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ExitEvent {
    pub container_id: String,
    pub exec_id: String,
    pub pid: u32,
    pub exit_status: u32,
    pub exited_at: Option<DateTime<Utc>>,
}

/// A task's cgroup statistics as the shim reads them (containerd's cgroups packages).
#[derive(Debug, Clone, PartialEq)]
pub enum CgroupMetrics {
    V1(Box<berth_proto::io::containerd::cgroups::v1::Metrics>),
    V2(Box<berth_proto::io::containerd::cgroups::v2::Metrics>),
}

/// A blob's bytes as highd streams them.
pub type ChunkStream = Pin<Box<dyn Stream<Item = BackendResult<bytes::Bytes>> + Send>>;
/// Bytes going into the content store; an `Err` item aborts the write.
pub type UploadStream = Pin<Box<dyn Stream<Item = std::io::Result<bytes::Bytes>> + Send>>;

pub type ExitStream = Pin<Box<dyn Stream<Item = BackendResult<ExitEvent>> + Send>>;

/// The containerd calls the engine makes. Every call is in the engine's namespace.
pub trait Backend: Send + Sync + 'static {
    /// Writes a blob and commits it under `desc.digest`, verified by highd. Writing a blob
    /// that already exists succeeds.
    fn content_write(
        &self,
        desc: &Descriptor,
        data: bytes::Bytes,
        labels: HashMap<String, String>,
    ) -> impl Future<Output = BackendResult<()>> + Send;
    fn content_read(&self, digest: &str) -> impl Future<Output = BackendResult<Vec<u8>>> + Send;
    /// Reads a blob as the chunks highd sends (Content.Read, a server stream), so a blob
    /// of any size passes through the engine in bounded memory. NotFound before the first
    /// chunk when the blob is not there.
    fn content_read_stream(
        &self,
        digest: &str,
    ) -> impl Future<Output = BackendResult<ChunkStream>> + Send;
    /// Writes a blob from a stream of chunks (Content.Write under a fresh ingest ref, each
    /// chunk at its offset) and commits it: verified against `expected` when it is not
    /// empty, and against `total` when it is not 0. An `Err` item, or a stream that ends
    /// short of `total`, aborts the ingest and commits nothing. With `expected` already in
    /// the store it returns at once, without reading `data`. Committing a blob that appeared
    /// meanwhile succeeds.
    fn content_write_stream(
        &self,
        total: i64,
        expected: &str,
        data: UploadStream,
        labels: HashMap<String, String>,
    ) -> impl Future<Output = BackendResult<()>> + Send;
    /// How many bytes the ingest `reference` holds (what an interrupted write left
    /// there, also across engine restarts); 0 when there is no such ingest.
    fn content_ingest_offset(
        &self,
        reference: &str,
    ) -> impl Future<Output = BackendResult<u64>> + Send;
    /// [`Backend::content_write_stream`] into the named, resumable ingest `reference`,
    /// the stream's first byte going at `offset` (0 starts the ingest over). A stream
    /// that fails or ends short keeps what highd received, for a resume from
    /// [`Backend::content_ingest_offset`]; a commit that fails verification aborts the
    /// ingest, so the next attempt starts from 0.
    fn content_ingest(
        &self,
        reference: &str,
        offset: u64,
        total: i64,
        expected: &str,
        data: UploadStream,
        labels: HashMap<String, String>,
    ) -> impl Future<Output = BackendResult<()>> + Send;

    /// A blob's labels (Content.Info); NotFound when the blob is not there.
    fn content_labels(
        &self,
        digest: &str,
    ) -> impl Future<Output = BackendResult<HashMap<String, String>>> + Send;
    /// Sets one label of a stored blob, leaving its others (Content.Update with the
    /// field path `labels.<key>`).
    fn content_set_label(
        &self,
        digest: &str,
        key: &str,
        value: &str,
    ) -> impl Future<Output = BackendResult<()>> + Send;

    fn image_get(&self, name: &str) -> impl Future<Output = BackendResult<Image>> + Send;
    fn image_list(&self) -> impl Future<Output = BackendResult<Vec<Image>>> + Send;
    /// Creates the image, or points an existing name at the new target (a re-import).
    fn image_put(&self, image: Image) -> impl Future<Output = BackendResult<()>> + Send;
    /// Deletes one name; highd's garbage collector reclaims what nothing references.
    fn image_delete(&self, name: &str) -> impl Future<Output = BackendResult<()>> + Send;

    fn snapshot_exists(&self, key: &str) -> impl Future<Output = BackendResult<bool>> + Send;
    fn snapshot_prepare(
        &self,
        key: &str,
        parent: &str,
        labels: HashMap<String, String>,
    ) -> impl Future<Output = BackendResult<Vec<Mount>>> + Send;
    fn snapshot_mounts(&self, key: &str) -> impl Future<Output = BackendResult<Vec<Mount>>> + Send;
    fn snapshot_commit(
        &self,
        name: &str,
        key: &str,
        labels: HashMap<String, String>,
    ) -> impl Future<Output = BackendResult<()>> + Send;
    fn snapshot_remove(&self, key: &str) -> impl Future<Output = BackendResult<()>> + Send;
    fn diff_apply(
        &self,
        layer: &Descriptor,
        mounts: Vec<Mount>,
    ) -> impl Future<Output = BackendResult<Descriptor>> + Send;
    /// containerd's Diff.Diff: the changes from `lower` to `upper` written as a layer blob
    /// of `media_type` into the content store; returns its descriptor.
    fn diff_create(
        &self,
        lower: Vec<Mount>,
        upper: Vec<Mount>,
        media_type: &str,
    ) -> impl Future<Output = BackendResult<Descriptor>> + Send;

    fn container_create(&self, c: NewContainer) -> impl Future<Output = BackendResult<()>> + Send;
    fn container_delete(&self, id: &str) -> impl Future<Output = BackendResult<()>> + Send;
    /// The container's OCI runtime spec (config.json bytes).
    fn container_get_spec(&self, id: &str) -> impl Future<Output = BackendResult<Vec<u8>>> + Send;
    /// Replaces the container's spec (Containers.Update, field mask `spec`); the next task
    /// created for it runs with the new one.
    fn container_set_spec(
        &self,
        id: &str,
        spec: Vec<u8>,
    ) -> impl Future<Output = BackendResult<()>> + Send;
    /// Every container in the namespace: `(id, labels)`.
    fn container_list(
        &self,
    ) -> impl Future<Output = BackendResult<Vec<(String, HashMap<String, String>)>>> + Send;

    /// Creates the init task; returns its pid.
    fn task_create(
        &self,
        id: &str,
        rootfs: Vec<Mount>,
        stdio: Stdio,
    ) -> impl Future<Output = BackendResult<u32>> + Send;
    /// Starts the init process (`exec_id` empty) or an exec process; returns its pid.
    fn task_start(
        &self,
        id: &str,
        exec_id: &str,
    ) -> impl Future<Output = BackendResult<u32>> + Send;
    fn task_get(&self, id: &str) -> impl Future<Output = BackendResult<TaskInfo>> + Send;
    fn task_kill(
        &self,
        id: &str,
        exec_id: &str,
        signal: u32,
        all: bool,
    ) -> impl Future<Output = BackendResult<()>> + Send;
    /// Deletes the init task; returns its exit status.
    fn task_delete(&self, id: &str) -> impl Future<Output = BackendResult<TaskInfo>> + Send;
    /// Adds an exec process; `process` is an OCI `Process` as JSON.
    fn task_exec(
        &self,
        id: &str,
        exec_id: &str,
        process: Vec<u8>,
        stdio: Stdio,
    ) -> impl Future<Output = BackendResult<()>> + Send;
    /// Waits for a process to exit: `(exit status, exited at)`.
    fn task_wait(
        &self,
        id: &str,
        exec_id: &str,
    ) -> impl Future<Output = BackendResult<(u32, Option<DateTime<Utc>>)>> + Send;
    fn task_delete_process(
        &self,
        id: &str,
        exec_id: &str,
    ) -> impl Future<Output = BackendResult<()>> + Send;

    /// Closes a process's stdin once what was written to its FIFO is forwarded (CloseIO).
    fn task_close_stdin(
        &self,
        id: &str,
        exec_id: &str,
    ) -> impl Future<Output = BackendResult<()>> + Send;

    /// Freezes (`pause`) or thaws (`resume`) every process of the task.
    fn task_pause(&self, id: &str, pause: bool) -> impl Future<Output = BackendResult<()>> + Send;

    /// Sets the window size of a terminal process (ResizePty).
    fn task_resize_pty(
        &self,
        id: &str,
        exec_id: &str,
        width: u32,
        height: u32,
    ) -> impl Future<Output = BackendResult<()>> + Send;

    /// The pids of every process in the task's cgroup (ListPids).
    fn task_pids(&self, id: &str) -> impl Future<Output = BackendResult<Vec<u32>>> + Send;

    /// New cgroup limits for a live task (Tasks.Update); `resources` is OCI
    /// `LinuxResources` as JSON.
    fn task_update(
        &self,
        id: &str,
        resources: Vec<u8>,
    ) -> impl Future<Output = BackendResult<()>> + Send;

    /// The task's cgroup statistics (Metrics filtered by id); NotFound without a task.
    fn task_metrics(&self, id: &str) -> impl Future<Output = BackendResult<CgroupMetrics>> + Send;

    /// Subscribes to `/tasks/exit` events from now on.
    fn subscribe_exits(&self) -> impl Future<Output = BackendResult<ExitStream>> + Send;

    /// Creates lease `id` (Leases.Create); see [`lease`].
    fn lease_create(
        &self,
        id: &str,
        labels: HashMap<String, String>,
    ) -> impl Future<Output = BackendResult<()>> + Send;
    /// Deletes lease `id`; what it held is left to the garbage collector.
    fn lease_delete(&self, id: &str) -> impl Future<Output = BackendResult<()>> + Send;
    /// Every lease of the namespace: `(id, labels)`.
    fn lease_list(
        &self,
    ) -> impl Future<Output = BackendResult<Vec<(String, HashMap<String, String>)>>> + Send;
}
