//! The engine's logic (dockerd's `daemon` package): containers, images and execs on top
//! of a [`Backend`], with records in a [`Store`].

mod commit;
mod create;
pub(crate) mod etc;
mod events;
mod exec;
mod health;
mod health_monitor;
mod image_ops;
mod image_store;
mod images;
mod init;
mod inspect_defaults;
mod leased;
mod lifecycle;
mod manage;
mod repo_digests;
mod restart;
mod save_load;
mod stats;
mod stdin;
mod top;
mod tty;
mod update;
mod views;
mod volumes;

#[cfg(test)]
pub(crate) mod tests;

use std::collections::HashMap;
use std::path::PathBuf;
use std::sync::{Arc, Mutex};

use tokio::sync::broadcast;

use crate::backend::{Backend, BackendError};
use crate::record::ContainerRecord;
use crate::refs::ReferenceError;
use crate::spec::SpecError;
use crate::store::{Resolved, Store, StoreError};

pub use commit::{history_rows, now_rfc3339, runtime_from_container, target_name, CommitOptions};
pub use exec::{ExecRecord, ExecStream};
pub use health::{Health, HealthResult};
/// What the API layer needs of health checks.
pub mod health_api {
    pub use super::health::{drop_start_interval, filter_status, is_filter_value};
}
pub use image_ops::ImageDeleted;
pub use image_store::{cache_uses, sha256_digest, Stored, BUILD_CACHE_PREFIX};
pub use images::{chain_id, ImageView, ImportError, MEDIA_LAYER_TAR};
pub use init::{InitConfig, DEFAULT_INIT_PATH};
pub use lifecycle::WaitOutcome;
pub use restart::RestartPolicy;
pub use save_load::ArchiveError;
pub use stdin::StdinSink;
pub use top::{TopBody, TopError};
pub use tty::{console_size, parse_detach_keys, parse_dimension, DetachWatch};
pub use update::{discard_kernel_memory, RtBudget, UpdateError, UpdateRequest};
pub use views::{
    container_inspect, container_summary, human_duration, image_inspect, image_summary,
};

#[derive(Debug, thiserror::Error)]
pub enum DaemonError {
    #[error("No such container: {reference}")]
    NoSuchContainer { reference: String },
    #[error("No such image: {reference}")]
    NoSuchImage { reference: String },
    #[error("No such exec instance: {id}")]
    NoSuchExec { id: String },
    #[error("multiple IDs found with provided prefix: {prefix}")]
    AmbiguousPrefix { prefix: String },
    #[error("Invalid container name ({name}), only [a-zA-Z0-9][a-zA-Z0-9_.-] are allowed")]
    InvalidName { name: String },
    #[error("{what}")]
    InvalidParameter { what: InvalidParameter },
    #[error("Conflict. The container name \"/{name}\" is already in use by container \"{id}\". You have to remove (or rename) that container to be able to reuse that name.")]
    NameConflict { name: String, id: String },
    #[error("Container {id} is not running")]
    NotRunning { id: String },
    /// `docker exec` into a stopped container (dockerd's lowercase `errNotRunning`).
    #[error("container {id} is not running")]
    ExecNotRunning { id: String },
    /// `docker exec` into a paused container; `reference` is what the user gave.
    #[error("Container {reference} is paused, unpause the container before exec")]
    ExecPaused { reference: String },
    #[error("Container {id} is already paused")]
    AlreadyPaused { id: String },
    #[error("Container {id} is not paused")]
    NotPaused { id: String },
    #[error("Container {id} is restarting, wait until the container is running")]
    Restarting { id: String },
    #[error("tried to kill container {id}, but did not receive an exit event")]
    NoExitEvent { id: String },
    #[error("cannot remove container \"{name}\": container is {state}: stop the container before removing or force remove")]
    RemoveRunning { name: String, state: &'static str },
    /// dockerd's start failure shape; `message` is what highd/the runtime said.
    #[error("failed to create task for container: {message}")]
    StartFailed { message: String },
    #[error("{message}")]
    ExecFailed { message: String },
    #[error("conflict: {message}")]
    ImageConflict { message: String },
    /// A Dockerfile or `--change` problem, in dockerd's words.
    #[error("{message}")]
    Build { message: String },
    #[error("{what} is not implemented yet in berth-engine")]
    NotImplemented { what: String },
    #[error(transparent)]
    Reference(#[from] ReferenceError),
    #[error(transparent)]
    Spec(#[from] SpecError),
    #[error(transparent)]
    Network(#[from] crate::network::NetworkError),
    #[error(transparent)]
    Backend(#[from] BackendError),
    #[error(transparent)]
    Store(#[from] StoreError),
    #[error(transparent)]
    Import(#[from] ImportError),
    #[error(transparent)]
    Archive(#[from] ArchiveError),
    #[error(transparent)]
    User(#[from] crate::users::UserError),
    #[error(transparent)]
    Seccomp(#[from] crate::seccomp::SeccompError),
    #[error("init binary {path} for --init is not usable (set --init-path): {source}")]
    InitBinary {
        path: PathBuf,
        source: std::io::Error,
    },
    #[error(transparent)]
    Volume(#[from] crate::volumes::VolumeError),
    #[error(transparent)]
    Mount(#[from] crate::volumes::MountError),
    #[error(transparent)]
    Filesystem(#[from] crate::archive::ArchiveError),
    #[error(transparent)]
    Top(#[from] top::TopError),
    /// A create's resource limits refused (dockerd's messages, 400).
    #[error(transparent)]
    Resources(#[from] crate::resources::ResourceError),
    #[error(transparent)]
    Update(UpdateError),
    #[error("{op} {path}: {source}")]
    Io {
        op: &'static str,
        path: PathBuf,
        source: std::io::Error,
    },
}

/// Bad user input that is not about names or references.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum InvalidParameter {
    #[error("No command specified")]
    NoCommand,
    #[error("No exec command specified")]
    NoExecCommand,
    #[error("Invalid signal: {0}")]
    Signal(String),
    #[error("Invalid detach keys ({0}) provided")]
    DetachKeys(String),
    #[error("{0}")]
    RestartPolicy(String),
    #[error("Neither old nor new names may be empty")]
    EmptyName,
    #[error("Renaming a container with the same name as its current name")]
    SameName,
    #[error("{0}")]
    Healthcheck(String),
}

impl From<InvalidParameter> for DaemonError {
    fn from(what: InvalidParameter) -> Self {
        Self::InvalidParameter { what }
    }
}

pub type DaemonResult<T> = Result<T, DaemonError>;

#[derive(Debug, Clone)]
pub struct DaemonConfig {
    pub data_root: PathBuf,
    pub exec_root: PathBuf,
    pub cgroup_parent: String,
    pub init: InitConfig,
    /// `--cpu-rt-period`/`--cpu-rt-runtime`: the real-time budget given to the cgroup
    /// parent (and its ancestors) before a container asking for real-time CPU starts.
    pub rt_budget: RtBudget,
}

/// A container state change, broadcast to waiters (`wait`, `stop`, attach, logs).
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum ContainerEvent {
    Started { id: String },
    Exited { id: String, code: i64 },
    Removed { id: String, code: i64 },
}

impl ContainerEvent {
    pub fn id(&self) -> &str {
        match self {
            Self::Started { id } | Self::Exited { id, .. } | Self::Removed { id, .. } => id,
        }
    }
}

pub struct Daemon<B> {
    pub backend: Arc<B>,
    pub store: Store,
    pub config: DaemonConfig,
    events: broadcast::Sender<ContainerEvent>,
    /// Serializes state transitions of one container (start vs. its exit event vs. remove).
    locks: Mutex<HashMap<String, Arc<tokio::sync::Mutex<()>>>>,
    execs: Mutex<HashMap<String, ExecRecord>>,
    /// Set once at start-up when networking is enabled (see `crate::network`).
    pub network: std::sync::OnceLock<Arc<crate::network::Manager>>,
    /// The embedded DNS servers of user-defined networks, set with `network`.
    pub dns: std::sync::OnceLock<Arc<crate::network::dns_server::DnsServers>>,
    /// What `GET /events` serves.
    pub event_log: crate::events_api::EventLog,
    restarts: Mutex<HashMap<String, restart::RestartManager>>,
    restart_tx: tokio::sync::mpsc::UnboundedSender<restart::PendingRestart>,
    restart_rx: Mutex<Option<tokio::sync::mpsc::UnboundedReceiver<restart::PendingRestart>>>,
    /// Restart policies are applied once per engine start, at the first reconcile.
    booted: std::sync::atomic::AtomicBool,
    /// `<data-root>/volumes`.
    pub volumes: crate::volumes::VolumeStore,
    health: health_monitor::Monitors,
    image_cache: images::ImageCache,
}

impl<B: Backend> Daemon<B> {
    pub fn new(backend: Arc<B>, config: DaemonConfig) -> DaemonResult<Self> {
        let store = Store::open(&config.data_root)?;
        std::fs::create_dir_all(&config.exec_root).map_err(|source| DaemonError::Io {
            op: "create",
            path: config.exec_root.clone(),
            source,
        })?;
        let (restart_tx, restart_rx) = tokio::sync::mpsc::unbounded_channel();
        let volumes = crate::volumes::VolumeStore::open(&config.data_root.join("volumes"))?;
        let daemon = Self {
            backend,
            store,
            config,
            events: broadcast::channel(1024).0,
            locks: Mutex::new(HashMap::new()),
            execs: Mutex::new(HashMap::new()),
            network: std::sync::OnceLock::new(),
            dns: std::sync::OnceLock::new(),
            event_log: Default::default(),
            restarts: Mutex::new(HashMap::new()),
            restart_tx,
            restart_rx: Mutex::new(Some(restart_rx)),
            booted: Default::default(),
            volumes,
            health: Default::default(),
            image_cache: Default::default(),
        };
        daemon.restore_volume_refs();
        // Events of containers from before an engine restart carry their name and image
        // too (`docker events --filter container=NAME`).
        for rec in daemon.store.list() {
            daemon.event_log.register_container(
                &rec.id,
                &rec.name,
                &rec.config.image,
                &rec.config.labels,
            );
        }
        Ok(daemon)
    }

    pub fn subscribe(&self) -> broadcast::Receiver<ContainerEvent> {
        self.events.subscribe()
    }

    fn emit(&self, event: ContainerEvent) {
        crate::events_api::record_container_event(&self.event_log, &event);
        // No receivers is fine: nobody is waiting.
        let _ = self.events.send(event);
    }

    pub(crate) fn lock_for(&self, id: &str) -> Arc<tokio::sync::Mutex<()>> {
        let mut locks = self.locks.lock().unwrap_or_else(|e| e.into_inner());
        locks.entry(id.to_string()).or_default().clone()
    }

    fn forget_lock(&self, id: &str) {
        self.locks
            .lock()
            .unwrap_or_else(|e| e.into_inner())
            .remove(id);
    }

    /// Resolves a user's container reference (ID, name, or unique ID prefix).
    pub fn container(&self, reference: &str) -> DaemonResult<ContainerRecord> {
        match self.store.resolve(reference) {
            Resolved::Found(r) => Ok(*r),
            Resolved::Ambiguous => Err(DaemonError::AmbiguousPrefix {
                prefix: reference.into(),
            }),
            Resolved::Missing => Err(DaemonError::NoSuchContainer {
                reference: reference.into(),
            }),
        }
    }

    pub fn exec_dir(&self, container_id: &str) -> PathBuf {
        self.config.exec_root.join(container_id)
    }
}

/// Parses docker's signal spellings: `SIGKILL`, `KILL`, `kill`, `9`.
pub fn parse_signal(s: &str) -> DaemonResult<u32> {
    let bad = || DaemonError::from(InvalidParameter::Signal(s.into()));
    if let Ok(n) = s.parse::<u32>() {
        return if (1..=64).contains(&n) {
            Ok(n)
        } else {
            Err(bad())
        };
    }
    let up = s.to_ascii_uppercase();
    let name = if up.starts_with("SIG") {
        up
    } else {
        format!("SIG{up}")
    };
    name.parse::<nix::sys::signal::Signal>()
        .map(|sig| sig as u32)
        .map_err(|_| bad())
}

fn random_id() -> String {
    hex::encode(rand::random::<[u8; 32]>())
}
