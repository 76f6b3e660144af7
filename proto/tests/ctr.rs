//! Interoperability with containerd's own client: Debian's `ctr` (containerd 1.6) talks
//! to our generated servers. Needs a `ctr` binary: `$BERTH_CTR`, else `ctr` on `$PATH`.

use std::collections::BTreeMap;
use std::path::PathBuf;
use std::process::Output;
use std::sync::Mutex;

use berth_proto::any::{pack, topic};
use berth_proto::containerd::events::{ImageCreate, TaskExit, TaskOom};
use berth_proto::containerd::services::events::v1::events_server::{Events, EventsServer};
use berth_proto::containerd::services::events::v1::{
    Envelope, ForwardRequest, PublishRequest, SubscribeRequest,
};
use berth_proto::containerd::services::introspection::v1::introspection_server::{
    Introspection, IntrospectionServer,
};
use berth_proto::containerd::services::introspection::v1::{
    PluginInfoRequest, PluginInfoResponse, PluginsRequest, PluginsResponse, ServerResponse,
};
use berth_proto::containerd::services::namespaces::v1::namespaces_server::{
    Namespaces, NamespacesServer,
};
use berth_proto::containerd::services::namespaces::v1::*;
use berth_proto::containerd::services::version::v1::version_server::{Version, VersionServer};
use berth_proto::containerd::services::version::v1::VersionResponse;
use berth_proto::namespace_from_request;
use berth_proto::transport::{bind_unix, serve_unix_with_shutdown};
use tonic::transport::Server;
use tonic::{Request, Response, Status};

fn find_ctr() -> Option<PathBuf> {
    if let Some(p) = std::env::var_os("BERTH_CTR") {
        return Some(PathBuf::from(p));
    }
    let path = std::env::var_os("PATH")?;
    std::env::split_paths(&path)
        .map(|d| d.join("ctr"))
        .find(|p| p.is_file())
}

struct FixedVersion;

#[tonic::async_trait]
impl Version for FixedVersion {
    async fn version(&self, _req: Request<()>) -> Result<Response<VersionResponse>, Status> {
        Ok(Response::new(VersionResponse {
            version: "v9.9.9-berth".into(),
            revision: "cafebabe".into(),
        }))
    }
}

/// Subscribe replays a fixed set of events and ends the stream.
struct FixedEvents;

fn envelope(topic: &str, event: prost_types::Any) -> Envelope {
    Envelope {
        timestamp: Some(prost_types::Timestamp {
            seconds: 1_700_000_000,
            nanos: 0,
        }),
        namespace: "default".into(),
        topic: topic.into(),
        event: Some(event),
    }
}

#[tonic::async_trait]
impl Events for FixedEvents {
    async fn publish(&self, _req: Request<PublishRequest>) -> Result<Response<()>, Status> {
        Err(Status::unimplemented("publish is not part of this test"))
    }

    async fn forward(&self, _req: Request<ForwardRequest>) -> Result<Response<()>, Status> {
        Err(Status::unimplemented("forward is not part of this test"))
    }

    type SubscribeStream = tokio_stream::Iter<std::vec::IntoIter<Result<Envelope, Status>>>;

    async fn subscribe(
        &self,
        _req: Request<SubscribeRequest>,
    ) -> Result<Response<Self::SubscribeStream>, Status> {
        let exit = TaskExit {
            container_id: "c1".into(),
            id: "c1".into(),
            pid: 4242,
            exit_status: 137,
            exited_at: None,
        };
        let oom = TaskOom {
            container_id: "c2".into(),
        };
        let image = ImageCreate {
            name: "docker.io/library/busybox:latest".into(),
            labels: Default::default(),
        };
        let all = vec![
            Ok(envelope(topic::TASK_EXIT, pack(&exit))),
            Ok(envelope(topic::TASK_OOM, pack(&oom))),
            Ok(envelope(topic::IMAGE_CREATE, pack(&image))),
        ];
        Ok(Response::new(tokio_stream::iter(all)))
    }
}

/// `ctr version` also asks Introspection.Server for the daemon's UUID.
struct FixedIntrospection;

#[tonic::async_trait]
impl Introspection for FixedIntrospection {
    async fn plugins(
        &self,
        _req: Request<PluginsRequest>,
    ) -> Result<Response<PluginsResponse>, Status> {
        Ok(Response::new(PluginsResponse::default()))
    }

    async fn server(&self, _req: Request<()>) -> Result<Response<ServerResponse>, Status> {
        Ok(Response::new(ServerResponse {
            uuid: "0badf00d-berth".into(),
            pid: u64::from(std::process::id()),
            ..Default::default()
        }))
    }

    async fn plugin_info(
        &self,
        _req: Request<PluginInfoRequest>,
    ) -> Result<Response<PluginInfoResponse>, Status> {
        Err(Status::unimplemented(
            "plugin info is not part of this test",
        ))
    }
}

/// Just enough of a namespace store to see ctr's requests arrive intact.
#[derive(Default)]
struct MemNamespaces {
    all: Mutex<BTreeMap<String, BTreeMap<String, String>>>,
}

impl MemNamespaces {
    fn get_ns(&self, name: &str) -> Result<Namespace, Status> {
        let all = self.all.lock().unwrap();
        let labels = all
            .get(name)
            .ok_or_else(|| Status::not_found(format!("namespace {name} not found")))?;
        Ok(Namespace {
            name: name.to_owned(),
            labels: labels.clone().into_iter().collect(),
        })
    }
}

#[tonic::async_trait]
impl Namespaces for MemNamespaces {
    async fn get(
        &self,
        req: Request<GetNamespaceRequest>,
    ) -> Result<Response<GetNamespaceResponse>, Status> {
        let namespace = Some(self.get_ns(&req.get_ref().name)?);
        Ok(Response::new(GetNamespaceResponse { namespace }))
    }

    async fn list(
        &self,
        _req: Request<ListNamespacesRequest>,
    ) -> Result<Response<ListNamespacesResponse>, Status> {
        let names: Vec<String> = self.all.lock().unwrap().keys().cloned().collect();
        let namespaces = names
            .iter()
            .map(|n| self.get_ns(n))
            .collect::<Result<_, _>>()?;
        Ok(Response::new(ListNamespacesResponse { namespaces }))
    }

    async fn create(
        &self,
        req: Request<CreateNamespaceRequest>,
    ) -> Result<Response<CreateNamespaceResponse>, Status> {
        let ns = req
            .into_inner()
            .namespace
            .ok_or_else(|| Status::invalid_argument("namespace is missing"))?;
        let mut all = self.all.lock().unwrap();
        if all.contains_key(&ns.name) {
            return Err(Status::already_exists(format!("namespace {}", ns.name)));
        }
        all.insert(ns.name.clone(), ns.labels.clone().into_iter().collect());
        Ok(Response::new(CreateNamespaceResponse {
            namespace: Some(ns),
        }))
    }

    async fn update(
        &self,
        _req: Request<UpdateNamespaceRequest>,
    ) -> Result<Response<UpdateNamespaceResponse>, Status> {
        Err(Status::unimplemented("update is not part of this test"))
    }

    async fn delete(&self, req: Request<DeleteNamespaceRequest>) -> Result<Response<()>, Status> {
        // ctr sends the header even for namespace calls; check it arrives.
        namespace_from_request(&req)?;
        let name = &req.get_ref().name;
        match self.all.lock().unwrap().remove(name) {
            Some(_) => Ok(Response::new(())),
            None => Err(Status::not_found(format!("namespace {name} not found"))),
        }
    }
}

fn ctr(bin: &PathBuf, sock: &std::path::Path, args: &[&str]) -> Output {
    std::process::Command::new(bin)
        .arg("--address")
        .arg(sock)
        .arg("--timeout")
        .arg("10s")
        .args(args)
        .output()
        .expect("run ctr")
}

fn stdout_ok(out: &Output) -> String {
    assert!(
        out.status.success(),
        "ctr failed: {}\n{}",
        out.status,
        String::from_utf8_lossy(&out.stderr)
    );
    String::from_utf8_lossy(&out.stdout).into_owned()
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn ctr_talks_to_generated_servers() {
    let Some(bin) = find_ctr() else {
        // Straight to stderr: libtest captures eprintln! of passing tests.
        use std::io::Write;
        let _ = writeln!(
            std::io::stderr(),
            "SKIP ctr_talks_to_generated_servers: no ctr binary (set BERTH_CTR or put ctr on PATH)"
        );
        return;
    };
    let tmp = tempfile::tempdir().unwrap();
    // grpc-go cannot dial paths over 107 bytes, so keep this one short.
    let sock = tmp.path().join("d.sock");
    let listener = bind_unix(&sock).unwrap();
    let (stop, stopped) = tokio::sync::oneshot::channel::<()>();
    let router = Server::builder()
        .add_service(VersionServer::new(FixedVersion))
        .add_service(IntrospectionServer::new(FixedIntrospection))
        .add_service(EventsServer::new(FixedEvents))
        .add_service(NamespacesServer::new(MemNamespaces::default()));
    let server = tokio::spawn(serve_unix_with_shutdown(router, listener, async {
        let _ = stopped.await;
    }));

    let (bin2, sock2) = (bin.clone(), sock.clone());
    let version = tokio::task::spawn_blocking(move || ctr(&bin2, &sock2, &["version"]))
        .await
        .unwrap();
    let text = stdout_ok(&version);
    assert!(text.contains("v9.9.9-berth"), "{text}");
    assert!(text.contains("cafebabe"), "{text}");
    assert!(text.contains("0badf00d-berth"), "{text}");

    let (bin2, sock2) = (bin.clone(), sock.clone());
    let out = tokio::task::spawn_blocking(move || {
        let created = ctr(
            &bin2,
            &sock2,
            &["namespaces", "create", "berth-x", "team=infra"],
        );
        let listed = ctr(&bin2, &sock2, &["namespaces", "ls"]);
        let removed = ctr(&bin2, &sock2, &["namespaces", "rm", "berth-x"]);
        let listed_after = ctr(&bin2, &sock2, &["namespaces", "ls", "-q"]);
        (created, listed, removed, listed_after)
    })
    .await
    .unwrap();
    stdout_ok(&out.0);
    let listed = stdout_ok(&out.1);
    assert!(listed.contains("berth-x"), "{listed}");
    assert!(listed.contains("team=infra"), "{listed}");
    stdout_ok(&out.2);
    assert!(!stdout_ok(&out.3).contains("berth-x"));

    // ctr decodes each event by its type URL with containerd's own registry and prints
    // it as JSON; an event with a wrong URL would be skipped with a warning instead.
    let (bin2, sock2) = (bin.clone(), sock.clone());
    let events = tokio::task::spawn_blocking(move || ctr(&bin2, &sock2, &["events"]))
        .await
        .unwrap();
    let text = String::from_utf8_lossy(&events.stdout);
    let lines: Vec<&str> = text.lines().collect();
    assert_eq!(
        lines.len(),
        3,
        "stdout: {text}\nstderr: {}",
        String::from_utf8_lossy(&events.stderr)
    );
    assert!(lines[0].contains("/tasks/exit"), "{text}");
    assert!(lines[0].contains(r#""container_id":"c1""#), "{text}");
    assert!(lines[0].contains(r#""exit_status":137"#), "{text}");
    assert!(
        lines[1].contains("/tasks/oom") && lines[1].contains("c2"),
        "{text}"
    );
    assert!(
        lines[2].contains("/images/create") && lines[2].contains("busybox"),
        "{text}"
    );

    stop.send(()).unwrap();
    server.await.unwrap().unwrap();
}
