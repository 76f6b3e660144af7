//! Bad input against the real daemon: the right gRPC code, a message naming the problem,
//! and nothing left behind (records, task dirs, blobs, ingests, snapshot dirs).

use anyhow::{ensure, Result};
use berth_proto::containerd::services::containers::v1::{
    container::Runtime, containers_client::ContainersClient, Container, CreateContainerRequest,
    GetContainerRequest, ListContainersRequest,
};
use berth_proto::containerd::services::content::v1::{
    content_client::ContentClient, WriteAction, WriteContentRequest,
};
use berth_proto::containerd::services::images::v1::{images_client::ImagesClient, GetImageRequest};
use berth_proto::containerd::services::namespaces::v1::{
    namespaces_client::NamespacesClient, ListNamespacesRequest,
};
use berth_proto::containerd::services::snapshots::v1::{
    snapshots_client::SnapshotsClient, MountsRequest, PrepareSnapshotRequest,
};
use berth_proto::containerd::services::tasks::v1::{
    tasks_client::TasksClient, CheckpointTaskRequest, CreateTaskRequest, GetRequest,
};
use tonic::Code;

use crate::common::{req, skip_unless_root, Stack, NS, RUNTIME_NAME};

fn in_ns<T>(ns: &str, msg: T) -> tonic::Request<T> {
    berth_proto::with_namespace(msg, ns).expect("namespace")
}

fn expect(
    r: Result<impl std::fmt::Debug, tonic::Status>,
    code: Code,
    words: &[&str],
) -> Result<()> {
    let err = match r {
        Ok(v) => anyhow::bail!("expected {code:?}, got {v:?}"),
        Err(e) => e,
    };
    ensure!(err.code() == code, "expected {code:?}: {err:?}");
    for w in words {
        ensure!(err.message().contains(w), "message lacks {w:?}: {err:?}");
    }
    Ok(())
}

fn entries(dir: &std::path::Path) -> Vec<String> {
    std::fs::read_dir(dir)
        .into_iter()
        .flatten()
        .flatten()
        .map(|e| e.file_name().to_string_lossy().into_owned())
        .collect()
}

#[tokio::test(flavor = "multi_thread")]
async fn bad_input_is_refused_and_leaves_nothing() -> Result<()> {
    if skip_unless_root("bad_input_is_refused_and_leaves_nothing") {
        return Ok(());
    }
    let mut stack = Stack::new();
    let ch = stack.start().await?;
    let mut containers = ContainersClient::new(ch.clone());
    let mut tasks = TasksClient::new(ch.clone());

    // Invalid container id.
    let container = |id: &str, spec: Vec<u8>| Container {
        id: id.into(),
        runtime: Some(Runtime {
            name: RUNTIME_NAME.into(),
            options: None,
        }),
        spec: Some(berth_proto::any::pack_json(
            berth_proto::any::SPEC_TYPE_URL,
            spec,
        )),
        ..Container::default()
    };
    let bad = container("bad/id", stack.spec("x", &["true"]));
    let r = containers
        .create(req(CreateContainerRequest {
            container: Some(bad),
        }))
        .await;
    expect(r, Code::InvalidArgument, &["bad/id"])?;

    // Unknown namespace: NotFound, and asking does not create it.
    let r = containers
        .get(in_ns("nope", GetContainerRequest { id: "x".into() }))
        .await;
    expect(r, Code::NotFound, &["x"])?;
    let r = tasks
        .get(in_ns(
            "nope",
            GetRequest {
                container_id: "x".into(),
                exec_id: String::new(),
            },
        ))
        .await;
    expect(r, Code::NotFound, &["x"])?;
    let r = tasks
        .create(in_ns(
            "nope",
            CreateTaskRequest {
                container_id: "x".into(),
                ..Default::default()
            },
        ))
        .await;
    expect(r, Code::NotFound, &["x"])?;
    let names = NamespacesClient::new(ch.clone())
        .list(ListNamespacesRequest::default())
        .await?
        .into_inner()
        .namespaces;
    ensure!(!names.iter().any(|n| n.name == "nope"), "{names:?}");

    // Missing image and snapshots.
    let r = ImagesClient::new(ch.clone())
        .get(req(GetImageRequest {
            name: "docker.io/library/missing:latest".into(),
        }))
        .await;
    expect(r, Code::NotFound, &["missing"])?;
    let mut snaps = SnapshotsClient::new(ch.clone());
    let r = snaps
        .prepare(req(PrepareSnapshotRequest {
            snapshotter: "overlayfs".into(),
            key: "k1".into(),
            parent: "sha256:no-such-parent".into(),
            labels: Default::default(),
        }))
        .await;
    expect(r, Code::NotFound, &["no-such-parent"])?;
    let r = snaps
        .mounts(req(MountsRequest {
            snapshotter: "overlayfs".into(),
            key: "k1".into(),
        }))
        .await;
    expect(r, Code::NotFound, &["k1"])?;
    let snap_dirs = entries(&stack.root.join("snapshots/overlayfs"));
    ensure!(
        snap_dirs
            .iter()
            .all(|d| !d.chars().all(|c| c.is_ascii_digit())),
        "snapshot dirs left: {snap_dirs:?}"
    );

    // Digest mismatch on content write: no blob, no ingest.
    let data = b"some bytes".to_vec();
    let wrong = format!("sha256:{}", "0".repeat(64));
    let msgs = vec![
        WriteContentRequest {
            action: WriteAction::Write as i32,
            r#ref: "bad-digest".into(),
            data: data.clone(),
            total: data.len() as i64,
            ..Default::default()
        },
        WriteContentRequest {
            action: WriteAction::Commit as i32,
            r#ref: "bad-digest".into(),
            total: data.len() as i64,
            expected: wrong.clone(),
            ..Default::default()
        },
    ];
    let stream = berth_proto::with_namespace(tokio_stream::iter(msgs), NS)?;
    let r = async {
        let mut out = ContentClient::new(ch.clone())
            .write(stream)
            .await?
            .into_inner();
        while out.message().await?.is_some() {}
        Ok::<_, tonic::Status>(())
    }
    .await;
    expect(r, Code::FailedPrecondition, &[&wrong])?;
    ensure!(entries(&stack.root.join("content/blobs/sha256")).is_empty());
    ensure!(entries(&stack.root.join("content/ingest")).is_empty());

    // A spec the runtime rejects: its own error comes back, and no task is left.
    let mut spec: serde_json::Value = serde_json::from_slice(&stack.spec("r1", &["true"]))?;
    spec["linux"]["namespaces"]
        .as_array_mut()
        .unwrap()
        .push(serde_json::json!({"type": "bogus-ns"}));
    containers
        .create(req(CreateContainerRequest {
            container: Some(container("r1", serde_json::to_vec(&spec)?)),
        }))
        .await?;
    let r = tasks
        .create(req(CreateTaskRequest {
            container_id: "r1".into(),
            rootfs: stack.rootfs_mounts(),
            ..Default::default()
        }))
        .await;
    let err = r.as_ref().map(drop).unwrap_err().clone();
    // containerd answers Unknown too ("OCI runtime create failed: ...").
    ensure!(err.code() == Code::Unknown, "{err:?}");
    ensure!(
        err.message().contains("bogus-ns") && !err.message().contains("exit status"),
        "not the runtime's own message: {err:?}"
    );
    ensure!(
        !stack.state.join(NS).join("r1").exists(),
        "task dir left behind"
    );
    let r = tasks
        .get(req(GetRequest {
            container_id: "r1".into(),
            exec_id: String::new(),
        }))
        .await;
    expect(r, Code::NotFound, &["r1"])?;
    // Checkpoint/restore is not supported: said so, by name.
    let r = tasks
        .checkpoint(req(CheckpointTaskRequest {
            container_id: "r1".into(),
            ..Default::default()
        }))
        .await;
    expect(r, Code::Unimplemented, &["Checkpoint", "not implemented"])?;
    // Only the container that was created is there.
    let listed = containers
        .list(req(ListContainersRequest::default()))
        .await?
        .into_inner()
        .containers;
    ensure!(listed.len() == 1 && listed[0].id == "r1", "{listed:?}");
    Ok(())
}
