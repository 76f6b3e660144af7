use std::os::unix::fs::{FileTypeExt, PermissionsExt};
use std::path::{Path, PathBuf};
use std::time::{Duration, Instant};

use berth_proto::containerd::services::version::v1::version_client::VersionClient;
use berth_proto::containerd::services::version::v1::version_server::{Version, VersionServer};
use berth_proto::containerd::services::version::v1::VersionResponse;
use berth_proto::transport::{
    bind_unix, connect_unix, connect_unix_lazy, serve_unix_with_shutdown, MAX_SOCKET_PATH,
};
use berth_proto::{namespace_from_request, NamespaceInterceptor, ProtoError};
use tokio::sync::oneshot;
use tonic::transport::Server;
use tonic::{Request, Response, Status};

/// Answers Version and echoes the caller's namespace in `revision`.
struct EchoVersion;

#[tonic::async_trait]
impl Version for EchoVersion {
    async fn version(&self, req: Request<()>) -> Result<Response<VersionResponse>, Status> {
        let ns = namespace_from_request(&req)?;
        Ok(Response::new(VersionResponse {
            version: "test".into(),
            revision: ns,
        }))
    }
}

/// A socket path of well over 108 bytes inside `root`.
fn long_socket_path(root: &Path) -> PathBuf {
    let mut dir = root.to_owned();
    while dir.as_os_str().len() <= MAX_SOCKET_PATH + 20 {
        dir.push("deeply-nested-directory");
    }
    std::fs::create_dir_all(&dir).unwrap();
    dir.join("version.sock")
}

struct Running {
    stop: Option<oneshot::Sender<()>>,
    task: tokio::task::JoinHandle<Result<(), ProtoError>>,
}

impl Running {
    async fn stop(mut self) {
        let _ = self.stop.take().unwrap().send(());
        self.task.await.unwrap().unwrap();
    }
}

fn serve(path: &Path) -> Running {
    let listener = bind_unix(path).unwrap();
    let (tx, rx) = oneshot::channel::<()>();
    let router = Server::builder().add_service(VersionServer::new(EchoVersion));
    let task = tokio::spawn(serve_unix_with_shutdown(router, listener, async {
        let _ = rx.await;
    }));
    Running {
        stop: Some(tx),
        task,
    }
}

#[tokio::test]
async fn version_over_long_unix_path() {
    let tmp = tempfile::tempdir().unwrap();
    let path = long_socket_path(tmp.path());
    assert!(path.as_os_str().len() > 108, "{}", path.display());

    let server = serve(&path);
    let meta = std::fs::symlink_metadata(&path).unwrap();
    assert!(meta.file_type().is_socket());
    assert_eq!(meta.permissions().mode() & 0o777, 0o660);

    let channel = connect_unix(&path).await.unwrap();
    let icp = NamespaceInterceptor::new("berth-test").unwrap();
    let mut client = VersionClient::with_interceptor(channel.clone(), icp);
    let resp = client.version(()).await.unwrap().into_inner();
    assert_eq!(resp.version, "test");
    assert_eq!(resp.revision, "berth-test");

    // Without the header the server answers like containerd.
    let err = VersionClient::new(channel).version(()).await.unwrap_err();
    assert_eq!(err.code(), tonic::Code::FailedPrecondition);
    assert_eq!(err.message(), "namespace is required");

    server.stop().await;
}

#[tokio::test]
async fn bind_refuses_live_socket_and_replaces_stale_one() {
    let tmp = tempfile::tempdir().unwrap();
    let path = long_socket_path(tmp.path());

    let server = serve(&path);
    match bind_unix(&path) {
        Err(ProtoError::SocketInUse { .. }) => {}
        other => panic!("expected SocketInUse, got {other:?}"),
    }
    server.stop().await;

    // The dead server's socket file is still there; a new server takes its place.
    assert!(path.exists());
    let server = serve(&path);
    let mut client = VersionClient::with_interceptor(
        connect_unix(&path).await.unwrap(),
        NamespaceInterceptor::new("default").unwrap(),
    );
    assert_eq!(
        client.version(()).await.unwrap().into_inner().revision,
        "default"
    );
    server.stop().await;
}

#[tokio::test]
async fn bind_refuses_to_clobber_a_regular_file() {
    let tmp = tempfile::tempdir().unwrap();
    let path = tmp.path().join("not-a-socket");
    std::fs::write(&path, b"keep me").unwrap();
    match bind_unix(&path) {
        Err(ProtoError::NotASocket { .. }) => {}
        other => panic!("expected NotASocket, got {other:?}"),
    }
    assert_eq!(std::fs::read(&path).unwrap(), b"keep me");
}

#[tokio::test]
async fn bind_in_missing_directory_fails_cleanly() {
    let tmp = tempfile::tempdir().unwrap();
    let short = tmp.path().join("missing/x.sock");
    assert!(matches!(bind_unix(&short), Err(ProtoError::Bind { .. })));
    let long = long_socket_path(tmp.path())
        .with_file_name("gone")
        .join("x.sock");
    assert!(matches!(bind_unix(&long), Err(ProtoError::OpenDir { .. })));
}

#[tokio::test]
async fn connect_to_missing_socket_is_an_error() {
    let tmp = tempfile::tempdir().unwrap();
    let path = long_socket_path(tmp.path());
    match connect_unix(&path).await {
        Err(ProtoError::Connect { path: p, .. }) => assert_eq!(p, path),
        other => panic!("expected Connect error, got {other:?}"),
    }
}

#[tokio::test]
async fn lazy_channel_reaches_a_server_started_later() {
    let tmp = tempfile::tempdir().unwrap();
    let path = long_socket_path(tmp.path());
    let mut client = VersionClient::with_interceptor(
        connect_unix_lazy(&path),
        NamespaceInterceptor::new("late").unwrap(),
    );
    assert!(client.version(()).await.is_err(), "nobody listens yet");

    let server = serve(&path);
    // The channel reconnects on its own; poll with a deadline.
    let deadline = Instant::now() + Duration::from_secs(10);
    let resp = loop {
        match client.version(()).await {
            Ok(r) => break r.into_inner(),
            Err(_) if Instant::now() < deadline => {
                tokio::time::sleep(Duration::from_millis(10)).await;
            }
            Err(e) => panic!("server never became reachable: {e}"),
        }
    };
    assert_eq!(resp.revision, "late");
    server.stop().await;
}

/// The socket is 0660 the moment it exists at its final path (it is staged in a private
/// directory, chmodded, then linked into place), and the staging directory is gone.
#[tokio::test]
async fn socket_appears_with_final_mode_and_no_staging_dir_is_left() {
    use std::os::unix::fs::{FileTypeExt, PermissionsExt};
    let tmp = tempfile::tempdir().unwrap();
    for path in [tmp.path().join("short.sock"), long_socket_path(tmp.path())] {
        let listener = bind_unix(&path).unwrap();
        let meta = std::fs::symlink_metadata(&path).unwrap();
        assert!(meta.file_type().is_socket());
        assert_eq!(
            meta.permissions().mode() & 0o7777,
            0o660,
            "{}",
            path.display()
        );
        let dir = path.parent().unwrap();
        let names: Vec<_> = std::fs::read_dir(dir)
            .unwrap()
            .map(|e| e.unwrap().file_name())
            .filter(|n| n.to_string_lossy().contains(".bind-"))
            .collect();
        assert!(names.is_empty(), "staging dirs left: {names:?}");
        // That it is still bound and serves under its final name: the other tests here.
        drop(listener);
    }
}

#[tokio::test]
async fn bind_removes_staging_dirs_of_dead_binders_only() {
    let tmp = tempfile::tempdir().unwrap();
    let mut child = std::process::Command::new("true").spawn().unwrap();
    let dead = child.id();
    child.wait().unwrap();
    let me = std::process::id();
    let stale = tmp.path().join(format!(".x.sock.bind-{dead}-0"));
    let ours = tmp.path().join(format!(".x.sock.bind-{me}-999"));
    let other_socket = tmp.path().join(format!(".y.sock.bind-{dead}-0"));
    let not_ours = tmp.path().join(".x.sock.bind-notapid");
    for dir in [&stale, &ours, &other_socket, &not_ours] {
        std::fs::create_dir(dir).unwrap();
    }
    // What a bind killed mid-way leaves: the staged socket inside.
    std::fs::write(stale.join("s"), b"").unwrap();
    let listener = berth_proto::transport::bind_unix(tmp.path().join("x.sock")).unwrap();
    assert!(!stale.exists(), "a dead binder's staging dir was kept");
    for kept in [&ours, &other_socket, &not_ours] {
        assert!(kept.exists(), "{} removed", kept.display());
    }
    drop(listener);
}
