//! Services that need no shim: version, introspection, containers, events, shutdown.

use std::time::Duration;

use berth_proto::any::{pack, unpack, SPEC_TYPE_URL};
use berth_proto::containerd::events::{ContainerCreate, ContainerDelete, TaskOom};
use berth_proto::containerd::services::containers::v1::{
    container::Runtime, containers_client::ContainersClient, Container, CreateContainerRequest,
    DeleteContainerRequest, GetContainerRequest, ListContainersRequest, UpdateContainerRequest,
};
use berth_proto::containerd::services::events::v1::{
    events_client::EventsClient, Envelope, ForwardRequest, PublishRequest, SubscribeRequest,
};
use berth_proto::containerd::services::introspection::v1::{
    introspection_client::IntrospectionClient, PluginsRequest,
};
use berth_proto::containerd::services::version::v1::version_client::VersionClient;
use tonic::Code;

use crate::common::{req, skip_unless_root, Stack, NS, RUNTIME_NAME};

#[tokio::test(flavor = "multi_thread")]
async fn version_introspection_and_graceful_shutdown() -> anyhow::Result<()> {
    if skip_unless_root("version_introspection_and_graceful_shutdown") {
        return Ok(());
    }
    let mut stack = Stack::new();
    let ch = stack.start().await?;
    let mode =
        std::os::unix::fs::PermissionsExt::mode(&std::fs::metadata(&stack.address)?.permissions());
    assert_eq!(mode & 0o777, 0o660, "socket must not be world-accessible");
    let v = VersionClient::new(ch.clone())
        .version(())
        .await?
        .into_inner();
    assert_eq!(v.version, env!("CARGO_PKG_VERSION"));
    let mut intro = IntrospectionClient::new(ch.clone());
    let server = intro.server(()).await?.into_inner();
    assert_eq!(server.pid, u64::from(stack.pid().unwrap()));
    let plugins = intro
        .plugins(PluginsRequest {
            filters: vec!["type==io.containerd.grpc.v1".into()],
        })
        .await?
        .into_inner()
        .plugins;
    let ids: Vec<_> = plugins.iter().map(|p| p.id.as_str()).collect();
    for want in ["containers", "tasks", "events", "version", "introspection"] {
        assert!(ids.contains(&want), "{want} missing from {ids:?}");
    }

    // SIGTERM: clean exit, socket removed; the uuid survives a restart.
    let status = stack.terminate().await?;
    assert!(status.success(), "{status}");
    assert!(!stack.address.exists(), "socket left behind");
    let ch = stack.start().await?;
    let again = IntrospectionClient::new(ch).server(()).await?.into_inner();
    assert_eq!(again.uuid, server.uuid);
    Ok(())
}

fn container(id: &str) -> Container {
    Container {
        id: id.into(),
        labels: [("role".to_string(), "test".to_string())].into(),
        image: "docker.io/library/busybox:latest".into(),
        runtime: Some(Runtime {
            name: RUNTIME_NAME.into(),
            options: None,
        }),
        spec: Some(berth_proto::any::pack_json(SPEC_TYPE_URL, b"{}".to_vec())),
        ..Container::default()
    }
}

#[tokio::test(flavor = "multi_thread")]
async fn containers_crud_with_events() -> anyhow::Result<()> {
    if skip_unless_root("containers_crud_with_events") {
        return Ok(());
    }
    let mut stack = Stack::new();
    let ch = stack.start().await?;
    let mut events = EventsClient::new(ch.clone())
        .subscribe(SubscribeRequest {
            filters: vec![r#"topic~="^/containers/""#.into()],
        })
        .await?
        .into_inner();
    let mut c = ContainersClient::new(ch.clone());

    let created = c
        .create(req(CreateContainerRequest {
            container: Some(container("c1")),
        }))
        .await?
        .into_inner();
    let created = created.container.unwrap();
    assert!(created.created_at.is_some());
    let err = c
        .create(req(CreateContainerRequest {
            container: Some(container("c1")),
        }))
        .await
        .unwrap_err();
    assert_eq!(err.code(), Code::AlreadyExists, "{err:?}");
    let err = c
        .create(req(CreateContainerRequest {
            container: Some(container("bad id")),
        }))
        .await
        .unwrap_err();
    assert_eq!(err.code(), Code::InvalidArgument, "{err:?}");
    let mut no_spec = container("c2");
    no_spec.spec = None;
    let err = c
        .create(req(CreateContainerRequest {
            container: Some(no_spec),
        }))
        .await
        .unwrap_err();
    assert_eq!(err.code(), Code::InvalidArgument);
    assert!(err.message().contains("spec"), "{}", err.message());
    let err = c
        .get(GetContainerRequest { id: "c1".into() })
        .await
        .unwrap_err();
    assert_eq!(
        err.code(),
        Code::FailedPrecondition,
        "namespace header is required"
    );

    c.create(req(CreateContainerRequest {
        container: Some(container("c2")),
    }))
    .await?;
    let got = c
        .get(req(GetContainerRequest { id: "c1".into() }))
        .await?
        .into_inner()
        .container
        .unwrap();
    assert_eq!(got.image, "docker.io/library/busybox:latest");
    assert_eq!(got.spec.unwrap().type_url, SPEC_TYPE_URL);
    let listed = c
        .list(req(ListContainersRequest {
            filters: vec!["id==c2".into()],
        }))
        .await?
        .into_inner()
        .containers;
    assert_eq!(
        listed.iter().map(|c| c.id.as_str()).collect::<Vec<_>>(),
        ["c2"]
    );
    let by_label = c
        .list(req(ListContainersRequest {
            filters: vec!["labels.role==test".into()],
        }))
        .await?
        .into_inner()
        .containers;
    assert_eq!(by_label.len(), 2);

    let mut update = container("c1");
    update.labels = [("role".to_string(), "changed".to_string())].into();
    let updated = c
        .update(req(UpdateContainerRequest {
            container: Some(update.clone()),
            update_mask: Some(prost_types::FieldMask {
                paths: vec!["labels".into()],
            }),
        }))
        .await?
        .into_inner()
        .container
        .unwrap();
    assert_eq!(updated.labels["role"], "changed");
    update.runtime = Some(Runtime {
        name: "other".into(),
        options: None,
    });
    let err = c
        .update(req(UpdateContainerRequest {
            container: Some(update),
            update_mask: None,
        }))
        .await
        .unwrap_err();
    assert_eq!(
        err.code(),
        Code::InvalidArgument,
        "runtime is immutable: {err:?}"
    );

    c.delete(req(DeleteContainerRequest { id: "c1".into() }))
        .await?;
    let err = c
        .get(req(GetContainerRequest { id: "c1".into() }))
        .await
        .unwrap_err();
    assert_eq!(err.code(), Code::NotFound);
    let err = c
        .delete(req(DeleteContainerRequest { id: "c1".into() }))
        .await
        .unwrap_err();
    assert_eq!(err.code(), Code::NotFound);

    let mut topics = Vec::new();
    for _ in 0..4 {
        let env = tokio::time::timeout(Duration::from_secs(5), events.message())
            .await??
            .unwrap();
        assert_eq!(env.namespace, NS);
        if topics.is_empty() {
            let ev: ContainerCreate = unpack(env.event.as_ref().unwrap())?;
            assert_eq!(
                (ev.id.as_str(), ev.runtime.unwrap().name.as_str()),
                ("c1", RUNTIME_NAME)
            );
        }
        if env.topic == "/containers/delete" {
            let ev: ContainerDelete = unpack(env.event.as_ref().unwrap())?;
            assert_eq!(ev.id, "c1");
        }
        topics.push(env.topic);
    }
    assert_eq!(
        topics,
        [
            "/containers/create",
            "/containers/create",
            "/containers/update",
            "/containers/delete"
        ]
    );

    // Records are durable across a crash.
    stack.kill();
    let ch = stack.start().await?;
    let got = ContainersClient::new(ch)
        .get(req(GetContainerRequest { id: "c2".into() }))
        .await?;
    assert_eq!(got.into_inner().container.unwrap().labels["role"], "test");
    Ok(())
}

#[tokio::test(flavor = "multi_thread")]
async fn publish_forward_and_filtered_subscribe() -> anyhow::Result<()> {
    if skip_unless_root("publish_forward_and_filtered_subscribe") {
        return Ok(());
    }
    let mut stack = Stack::new();
    let ch = stack.start().await?;
    let mut client = EventsClient::new(ch.clone());
    let mut oom_only = client
        .subscribe(SubscribeRequest {
            filters: vec![format!(r#"topic=="/tasks/oom",namespace=={NS}"#)],
        })
        .await?
        .into_inner();
    let mut everything = client
        .subscribe(SubscribeRequest::default())
        .await?
        .into_inner();

    let oom = TaskOom {
        container_id: "c9".into(),
    };
    client
        .publish(req(PublishRequest {
            topic: "/tasks/create".into(),
            event: Some(pack(&oom)),
        }))
        .await?;
    client
        .publish(req(PublishRequest {
            topic: "/tasks/oom".into(),
            event: Some(pack(&oom)),
        }))
        .await?;
    client
        .forward(ForwardRequest {
            envelope: Some(Envelope {
                timestamp: Some(prost_types::Timestamp {
                    seconds: 1_700_000_000,
                    nanos: 5,
                }),
                namespace: "other".into(),
                topic: "/tasks/oom".into(),
                event: Some(pack(&oom)),
            }),
        })
        .await?;
    let err = client
        .publish(req(PublishRequest {
            topic: "no-slash".into(),
            event: Some(pack(&oom)),
        }))
        .await
        .unwrap_err();
    assert_eq!(err.code(), Code::InvalidArgument);
    let err = client
        .subscribe(SubscribeRequest {
            filters: vec![r#"topic~="(""#.into()],
        })
        .await
        .unwrap_err();
    assert_eq!(err.code(), Code::InvalidArgument);

    let got = tokio::time::timeout(Duration::from_secs(5), oom_only.message())
        .await??
        .unwrap();
    assert_eq!(
        (got.topic.as_str(), got.namespace.as_str()),
        ("/tasks/oom", NS)
    );
    let ev: TaskOom = unpack(got.event.as_ref().unwrap())?;
    assert_eq!(ev.container_id, "c9");
    let mut all = Vec::new();
    for _ in 0..3 {
        let env = tokio::time::timeout(Duration::from_secs(5), everything.message())
            .await??
            .unwrap();
        all.push((env.namespace, env.topic, env.timestamp.unwrap().seconds));
    }
    assert_eq!(all[0].1, "/tasks/create");
    assert_eq!(
        all[2],
        ("other".to_string(), "/tasks/oom".to_string(), 1_700_000_000)
    );
    // The forwarded envelope went to another namespace: the filtered stream has nothing.
    assert!(
        tokio::time::timeout(Duration::from_millis(300), oom_only.message())
            .await
            .is_err()
    );
    Ok(())
}

#[tokio::test(flavor = "multi_thread")]
async fn storage_events_reach_subscribers() -> anyhow::Result<()> {
    use berth_proto::containerd::events::NamespaceCreate;
    use berth_proto::containerd::services::namespaces::v1::{
        namespaces_client::NamespacesClient, CreateNamespaceRequest, Namespace,
    };
    if skip_unless_root("storage_events_reach_subscribers") {
        return Ok(());
    }
    let mut stack = Stack::new();
    let ch = stack.start().await?;
    let mut events = EventsClient::new(ch.clone())
        .subscribe(SubscribeRequest {
            filters: vec![r#"topic=="/namespaces/create""#.into()],
        })
        .await?
        .into_inner();
    NamespacesClient::new(ch)
        .create(CreateNamespaceRequest {
            namespace: Some(Namespace {
                name: "fresh".into(),
                labels: Default::default(),
            }),
        })
        .await?;
    let env = tokio::time::timeout(Duration::from_secs(5), events.message())
        .await??
        .unwrap();
    let ev: NamespaceCreate = unpack(env.event.as_ref().unwrap())?;
    assert_eq!(ev.name, "fresh");
    Ok(())
}
