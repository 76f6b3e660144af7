//! Assembling the daemon: open state, recover tasks, serve gRPC on the unix socket, and
//! shut down on SIGTERM/SIGINT without touching any shim (invariant 1).

use std::path::PathBuf;
use std::sync::Arc;

use berth_proto::containerd::services::containers::v1::containers_server::ContainersServer;
use berth_proto::containerd::services::content::v1::content_server::ContentServer;
use berth_proto::containerd::services::diff::v1::diff_server::DiffServer;
use berth_proto::containerd::services::events::v1::events_server::EventsServer;
use berth_proto::containerd::services::images::v1::images_server::ImagesServer;
use berth_proto::containerd::services::introspection::v1::introspection_server::IntrospectionServer;
use berth_proto::containerd::services::leases::v1::leases_server::LeasesServer;
use berth_proto::containerd::services::namespaces::v1::namespaces_server::NamespacesServer;
use berth_proto::containerd::services::snapshots::v1::snapshots_server::SnapshotsServer;
use berth_proto::containerd::services::tasks::v1::tasks_server::TasksServer;
use berth_proto::containerd::services::version::v1::version_server::VersionServer;
use berth_proto::transport::MAX_MESSAGE_SIZE;
use berth_proto::ProtoError;
use tokio::signal::unix::{signal, SignalKind};
use tonic::{Request, Status};

use crate::config::Config;
use crate::containers::{ContainerStore, ContainersService};
use crate::db::{Db, DbError, StoreError};
use crate::events::service::EventsService;
use crate::events::Exchange;
use crate::gc::Storage;
use crate::introspection::{
    IntrospectionError, IntrospectionService, PluginEntry, GRPC, RUNTIME, SNAPSHOTTER,
};
use crate::tasks::{TaskManager, TasksService};
use crate::version::VersionService;

#[derive(Debug, thiserror::Error)]
pub enum ServerError {
    #[error("cannot create directory {path}")]
    Dir {
        path: PathBuf,
        source: std::io::Error,
    },
    #[error("cannot open the metadata database")]
    Db(#[from] DbError),
    #[error(transparent)]
    Uuid(#[from] IntrospectionError),
    #[error("cannot open the {what}")]
    Store {
        what: &'static str,
        source: StoreError,
    },
    #[error("cannot listen on {path}")]
    Bind { path: PathBuf, source: ProtoError },
    #[error("grpc server failed")]
    Serve { source: ProtoError },
    #[error("cannot install signal handlers")]
    Signals { source: std::io::Error },
}

const SHUTDOWN_GRACE: std::time::Duration = std::time::Duration::from_secs(2);

/// Options that are not part of the configuration proper.
#[derive(Debug, Clone, Default)]
pub struct Options {
    /// Start shims with `--debug`.
    pub debug_shims: bool,
}

/// The `containerd-namespace` of a request, answered like containerd when missing.
pub fn namespace<T>(req: &Request<T>) -> Result<String, Status> {
    berth_proto::namespace_from_request(req)
}

fn mkdir(path: &std::path::Path, mode: u32) -> Result<(), ServerError> {
    use std::os::unix::fs::DirBuilderExt;
    std::fs::DirBuilder::new()
        .recursive(true)
        .mode(mode)
        .create(path)
        .map_err(|source| ServerError::Dir {
            path: path.to_path_buf(),
            source,
        })
}

/// The plugins we serve, for Introspection.
fn plugins() -> Vec<PluginEntry> {
    let grpc = |id| PluginEntry {
        kind: GRPC,
        id,
        platform: false,
    };
    vec![
        grpc("containers"),
        grpc("content"),
        grpc("diff"),
        grpc("events"),
        grpc("images"),
        grpc("introspection"),
        grpc("leases"),
        grpc("namespaces"),
        grpc("snapshots"),
        grpc("tasks"),
        grpc("version"),
        PluginEntry {
            kind: SNAPSHOTTER,
            id: crate::snapshots::SNAPSHOTTER,
            platform: true,
        },
        PluginEntry {
            kind: RUNTIME,
            id: "task",
            platform: true,
        },
    ]
}

/// Runs the daemon until SIGTERM or SIGINT.
pub async fn run(cfg: Config, opts: Options) -> Result<(), ServerError> {
    // Task dirs hold sockets and config.json: private to root and the berth group.
    mkdir(&cfg.root, 0o711)?;
    mkdir(&cfg.state, 0o711)?;
    if let Some(parent) = cfg.address.parent() {
        mkdir(parent, 0o755)?;
    }
    let cfg = Arc::new(cfg);
    let db = Db::open(&cfg.root)?;
    let uuid = crate::introspection::server_uuid(&cfg.root)?;
    let exchange = Exchange::new();
    let mut storage =
        Storage::open(&cfg.root, db.clone(), cfg.snapshot_mode).map_err(|source| {
            ServerError::Store {
                what: "content store and snapshotter",
                source,
            }
        })?;
    if let Some(grace) = cfg.gc_grace {
        storage = storage.with_gc_grace(grace);
    }
    let storage = storage.with_events(exchange.clone());
    let containers = ContainerStore::new(db.clone());
    storage.gc.set_container_refs(Arc::new(containers.clone()));
    let tasks = Arc::new(TaskManager::new(
        cfg.clone(),
        containers.clone(),
        exchange.clone(),
        opts.debug_shims,
    ));

    // Recover before listening, so no client sees a half-rebuilt task table. Shims
    // retry their events until we listen.
    tasks.recover().await;
    // The first round runs now, so leftovers of a crash (content and snapshots no record
    // or lease holds) go once their grace period is over.
    if let Some(every) = cfg.gc_interval {
        storage.gc.spawn_periodic(every);
    }

    let mut term =
        signal(SignalKind::terminate()).map_err(|source| ServerError::Signals { source })?;
    let mut int =
        signal(SignalKind::interrupt()).map_err(|source| ServerError::Signals { source })?;
    let listener =
        berth_proto::transport::bind_unix(&cfg.address).map_err(|source| ServerError::Bind {
            path: cfg.address.clone(),
            source,
        })?;

    // One span per call: with --log-level debug its close event carries the call's
    // duration (how docs/highd.md's latency profile was taken).
    let router = tonic::transport::Server::builder()
        .trace_fn(|req| tracing::debug_span!("grpc", method = %req.uri().path()))
        .add_service(VersionServer::new(VersionService))
        .add_service(IntrospectionServer::new(IntrospectionService::new(
            plugins(),
            uuid,
        )))
        .add_service(ContainersServer::new(ContainersService::new(
            containers,
            exchange.clone(),
            tasks.clone(),
        )))
        .add_service(TasksServer::new(TasksService::new(tasks.clone())))
        .add_service(NamespacesServer::new(storage.namespaces_service()))
        .add_service(
            ContentServer::new(storage.content_service())
                .max_decoding_message_size(MAX_MESSAGE_SIZE),
        )
        .add_service(ImagesServer::new(storage.images_service()))
        .add_service(SnapshotsServer::new(storage.snapshots_service()))
        .add_service(DiffServer::new(storage.diff_service()))
        .add_service(LeasesServer::new(storage.leases_service()))
        .add_service(EventsServer::new(EventsService::new(exchange, tasks)));

    tracing::info!(address = %cfg.address.display(), "serving");
    let stop = Arc::new(tokio::sync::Notify::new());
    let stopping = stop.clone();
    let shutdown = async move {
        tokio::select! {
            _ = term.recv() => tracing::info!("SIGTERM: shutting down, shims keep running"),
            _ = int.recv() => tracing::info!("SIGINT: shutting down, shims keep running"),
        }
        stopping.notify_one();
    };
    let serve = berth_proto::transport::serve_unix_with_shutdown(router, listener, shutdown);
    // Subscribe streams and Wait calls never finish by themselves; give in-flight calls
    // a moment, then go anyway (their clients see the connection drop and retry).
    let served = tokio::select! {
        r = serve => r,
        _ = async {
            stop.notified().await;
            tokio::time::sleep(SHUTDOWN_GRACE).await;
        } => {
            tracing::info!("long-running calls cut off at shutdown");
            Ok(())
        }
    };
    if let Err(e) = std::fs::remove_file(&cfg.address) {
        tracing::warn!(path = %cfg.address.display(), error = %e, "cannot remove socket");
    }
    served.map_err(|source| ServerError::Serve { source })
}
