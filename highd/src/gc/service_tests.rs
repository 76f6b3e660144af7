//! The storage services over a real unix-socket gRPC server, driven by the generated clients
//! (the engine's path: write blobs, create the image, unpack, delete, collect).

use std::collections::HashMap;
use std::path::Path;

use berth_proto::containerd::services::content::v1::{self as cpb, content_client::ContentClient};
use berth_proto::containerd::services::diff::v1::{self as dpb, diff_client::DiffClient};
use berth_proto::containerd::services::images::v1::{self as ipb, images_client::ImagesClient};
use berth_proto::containerd::services::namespaces::v1::{
    self as npb, namespaces_client::NamespacesClient,
};
use berth_proto::containerd::services::snapshots::v1::{
    self as spb, snapshots_client::SnapshotsClient,
};
use berth_proto::containerd::types::Descriptor;
use berth_proto::with_namespace;
use sha2::{Digest, Sha256};
use tonic::transport::Channel;

use super::*;
use crate::snapshots::Mode;

async fn serve(storage: &Storage, sock: &Path) -> anyhow::Result<Channel> {
    use berth_proto::containerd::services;
    let router = tonic::transport::Server::builder()
        .add_service(
            services::namespaces::v1::namespaces_server::NamespacesServer::new(
                storage.namespaces_service(),
            ),
        )
        .add_service(services::content::v1::content_server::ContentServer::new(
            storage.content_service(),
        ))
        .add_service(services::images::v1::images_server::ImagesServer::new(
            storage.images_service(),
        ))
        .add_service(
            services::snapshots::v1::snapshots_server::SnapshotsServer::new(
                storage.snapshots_service(),
            ),
        )
        .add_service(services::diff::v1::diff_server::DiffServer::new(
            storage.diff_service(),
        ))
        .add_service(services::leases::v1::leases_server::LeasesServer::new(
            storage.leases_service(),
        ));
    let listener = berth_proto::transport::bind_unix(sock)?;
    tokio::spawn(berth_proto::transport::serve_unix(router, listener));
    Ok(berth_proto::transport::connect_unix(sock).await?)
}

fn write_msgs(reference: &str, data: &[u8], expected: &str) -> Vec<cpb::WriteContentRequest> {
    let mut msgs = vec![cpb::WriteContentRequest {
        action: cpb::WriteAction::Stat as i32,
        r#ref: reference.into(),
        ..Default::default()
    }];
    for (i, chunk) in data.chunks(7).enumerate() {
        msgs.push(cpb::WriteContentRequest {
            action: cpb::WriteAction::Write as i32,
            r#ref: reference.into(),
            offset: (i * 7) as i64,
            data: chunk.to_vec(),
            total: data.len() as i64,
            ..Default::default()
        });
    }
    msgs.push(cpb::WriteContentRequest {
        action: cpb::WriteAction::Commit as i32,
        r#ref: reference.into(),
        total: data.len() as i64,
        expected: expected.into(),
        ..Default::default()
    });
    msgs
}

async fn write(
    c: &mut ContentClient<Channel>,
    data: &[u8],
    expected: &str,
) -> Result<String, tonic::Status> {
    let msgs = write_msgs(&format!("ref-{}", data.len()), data, expected);
    let req = with_namespace(tokio_stream::iter(msgs), "ns")
        .map_err(|e| tonic::Status::internal(e.to_string()))?;
    let mut out = c.write(req).await?.into_inner();
    let mut digest = String::new();
    while let Some(resp) = out.message().await? {
        digest = resp.digest;
    }
    Ok(digest)
}

fn sha(data: &[u8]) -> String {
    format!("sha256:{}", hex::encode(Sha256::digest(data)))
}

/// A container using snapshot "ctr".
struct OneContainer;

impl ContainerRefs for OneContainer {
    fn snapshot_refs(&self, _ns: &str) -> Result<Vec<(String, String)>, DbError> {
        Ok(vec![("overlayfs".into(), "ctr".into())])
    }
}

#[tokio::test]
async fn engine_flow_over_grpc() -> anyhow::Result<()> {
    if !nix::unistd::geteuid().is_root() {
        eprintln!("SKIP: needs root (chown while unpacking)");
        return Ok(());
    }
    let dir = tempfile::tempdir()?;
    let storage = Storage::open(
        dir.path(),
        Db::open(dir.path())?,
        Some(Mode::Overlay { index_off: false }),
    )?
    .with_gc_grace(std::time::Duration::ZERO);
    let exchange = crate::events::Exchange::new();
    let events = exchange.subscribe(crate::events::filter::Filters::parse_events(&[])?);
    let storage = storage.with_events(exchange);
    storage.gc.set_container_refs(Arc::new(OneContainer));
    let ch = serve(&storage, &dir.path().join("highd.sock")).await?;
    let mut content = ContentClient::new(ch.clone());

    // A layer, verified by digest; a wrong digest is refused naming both.
    let mut b = tar::Builder::new(Vec::new());
    let mut h = tar::Header::new_gnu();
    h.set_size(5);
    h.set_mode(0o644);
    h.set_cksum();
    b.append_data(&mut h, "etc/motd", &b"hello"[..])?;
    let layer = b.into_inner()?;
    let bad = write(&mut content, b"not the layer", &sha(&layer))
        .await
        .err();
    let bad = bad
        .map(|s| (s.code(), s.message().to_string()))
        .unwrap_or((tonic::Code::Ok, String::new()));
    assert_eq!(bad.0, tonic::Code::FailedPrecondition);
    assert!(
        bad.1.contains(&sha(&layer)) && bad.1.contains(&sha(b"not the layer")),
        "{}",
        bad.1
    );
    let l = write(&mut content, &layer, &sha(&layer)).await?;
    assert_eq!(l, sha(&layer));
    let again = write(&mut content, &layer, &sha(&layer))
        .await
        .err()
        .map(|s| s.code());
    assert_eq!(again, Some(tonic::Code::AlreadyExists));
    let mut read = content
        .read(with_namespace(
            cpb::ReadContentRequest {
                digest: l.clone(),
                offset: 2,
                size: 0,
            },
            "ns",
        )?)
        .await?
        .into_inner();
    let mut got = Vec::new();
    while let Some(chunk) = read.message().await? {
        got.extend(chunk.data);
    }
    assert_eq!(got, layer[2..]);

    let config = format!(r#"{{"rootfs":{{"type":"layers","diff_ids":["{l}"]}}}}"#);
    let c = write(&mut content, config.as_bytes(), "").await?;
    let manifest = format!(
        r#"{{"schemaVersion":2,"config":{{"digest":"{c}"}},"layers":[{{"digest":"{l}"}}]}}"#
    );
    let m = write(&mut content, manifest.as_bytes(), "").await?;
    let mut images = ImagesClient::new(ch.clone());
    let image = ipb::Image {
        name: "docker.io/library/busybox:latest".into(),
        target: Some(Descriptor {
            media_type: "application/vnd.oci.image.manifest.v1+json".into(),
            digest: m.clone(),
            size: manifest.len() as i64,
            annotations: HashMap::new(),
        }),
        ..Default::default()
    };
    images
        .create(with_namespace(
            ipb::CreateImageRequest {
                image: Some(image),
                ..Default::default()
            },
            "ns",
        )?)
        .await?;

    // Unpack: Prepare → Apply → Commit(chain ID).
    let mut snaps = SnapshotsClient::new(ch.clone());
    let prep = spb::PrepareSnapshotRequest {
        snapshotter: "overlayfs".into(),
        key: "extract-1".into(),
        ..Default::default()
    };
    let mounts = snaps
        .prepare(with_namespace(prep, "ns")?)
        .await?
        .into_inner()
        .mounts;
    assert_eq!(mounts[0].r#type, "bind");
    let diff = Descriptor {
        media_type: "application/vnd.oci.image.layer.v1.tar".into(),
        digest: l.clone(),
        size: layer.len() as i64,
        annotations: HashMap::new(),
    };
    let applied = DiffClient::new(ch.clone())
        .apply(with_namespace(
            dpb::ApplyRequest {
                diff: Some(diff),
                mounts,
                ..Default::default()
            },
            "ns",
        )?)
        .await?
        .into_inner()
        .applied
        .unwrap_or_default();
    assert_eq!(applied.digest, l, "uncompressed layer: diff ID = digest");
    let commit = spb::CommitSnapshotRequest {
        snapshotter: "overlayfs".into(),
        name: l.clone(),
        key: "extract-1".into(),
        ..Default::default()
    };
    snaps.commit(with_namespace(commit, "ns")?).await?;
    let prep = spb::PrepareSnapshotRequest {
        snapshotter: "overlayfs".into(),
        key: "ctr".into(),
        parent: l.clone(),
        ..Default::default()
    };
    let mounts = snaps
        .prepare(with_namespace(prep, "ns")?)
        .await?
        .into_inner()
        .mounts;
    assert_eq!(mounts[0].r#type, "overlay");
    let rm = spb::RemoveSnapshotRequest {
        snapshotter: "overlayfs".into(),
        key: l.clone(),
    };
    let err = snaps
        .remove(with_namespace(rm, "ns")?)
        .await
        .err()
        .map(|s| s.code());
    assert_eq!(err, Some(tonic::Code::FailedPrecondition));
    let bad = spb::StatSnapshotRequest {
        snapshotter: "btrfs".into(),
        key: "ctr".into(),
    };
    assert_eq!(
        snaps
            .stat(with_namespace(bad, "ns")?)
            .await
            .err()
            .map(|s| s.code()),
        Some(tonic::Code::InvalidArgument)
    );

    // The namespace exists implicitly and cannot be deleted while it holds things.
    let mut nss = NamespacesClient::new(ch.clone());
    let list = nss
        .list(npb::ListNamespacesRequest::default())
        .await?
        .into_inner();
    assert_eq!(
        list.namespaces
            .iter()
            .map(|n| n.name.as_str())
            .collect::<Vec<_>>(),
        ["ns"]
    );
    let err = nss
        .delete(npb::DeleteNamespaceRequest { name: "ns".into() })
        .await
        .err()
        .map(|s| s.code());
    assert_eq!(err, Some(tonic::Code::FailedPrecondition));

    // Deleting the image (sync) collects its blobs; the container's snapshot keeps its layer.
    let del = ipb::DeleteImageRequest {
        name: "docker.io/library/busybox:latest".into(),
        sync: true,
        ..Default::default()
    };
    images.delete(with_namespace(del, "ns")?).await?;
    let info = content
        .info(with_namespace(cpb::InfoRequest { digest: m }, "ns")?)
        .await
        .err()
        .map(|s| s.code());
    assert_eq!(info, Some(tonic::Code::NotFound));
    assert!(storage.content.blobs_on_disk()?.is_empty());
    assert_eq!(
        storage.snapshots.stat("ns", &l)?.kind,
        crate::snapshots::Kind::Committed
    );

    // Everything above was announced on the event exchange, in order.
    use tokio_stream::StreamExt;
    let mut events = Box::pin(events);
    let mut topics = Vec::new();
    while topics.last().map(String::as_str) != Some("/images/delete") {
        let ev = tokio::time::timeout(std::time::Duration::from_secs(5), events.next()).await?;
        let ev = ev.ok_or_else(|| anyhow::anyhow!("event stream ended"))?;
        assert_eq!(ev.namespace, "ns");
        topics.push(ev.topic.clone());
    }
    let want = [
        "/images/create",
        "/snapshot/prepare",
        "/snapshot/commit",
        "/snapshot/prepare",
        "/images/delete",
    ];
    assert_eq!(topics, want);
    Ok(())
}

#[tokio::test]
async fn resumed_writes_and_leases_over_grpc() -> anyhow::Result<()> {
    use berth_proto::containerd::services::leases::v1::{self as lpb, leases_client::LeasesClient};
    let dir = tempfile::tempdir()?;
    let storage = Storage::open(dir.path(), Db::open(dir.path())?, Some(Mode::Copy))?;
    let ch = serve(&storage, &dir.path().join("highd.sock")).await?;
    let mut content = ContentClient::new(ch.clone());
    let data = b"0123456789abcdefghij".to_vec();
    let part = |offset: usize, bytes: &[u8], action| cpb::WriteContentRequest {
        action: action as i32,
        r#ref: "resume".into(),
        offset: offset as i64,
        data: bytes.to_vec(),
        total: 20,
        ..Default::default()
    };
    // First connection writes 10 bytes and goes away.
    let first = vec![part(0, &data[..10], cpb::WriteAction::Write)];
    let mut out = content
        .write(with_namespace(tokio_stream::iter(first), "ns")?)
        .await?
        .into_inner();
    while out.message().await?.is_some() {}
    let status = |c: &mut ContentClient<Channel>| {
        let req = with_namespace(
            cpb::StatusRequest {
                r#ref: "resume".into(),
            },
            "ns",
        );
        let mut c = c.clone();
        async move {
            anyhow::Ok(
                c.status(req?)
                    .await?
                    .into_inner()
                    .status
                    .unwrap_or_default(),
            )
        }
    };
    // The ingest is released once the stream is gone; poll for it with a deadline.
    let deadline = std::time::Instant::now() + std::time::Duration::from_secs(5);
    while status(&mut content).await?.offset != 10 {
        anyhow::ensure!(
            std::time::Instant::now() < deadline,
            "ingest never reached offset 10"
        );
        tokio::task::yield_now().await;
    }
    // The second connection asks where to go on and finishes.
    let (tx, rx) = tokio::sync::mpsc::channel(4);
    let mut out = content
        .write(with_namespace(
            tokio_stream::wrappers::ReceiverStream::new(rx),
            "ns",
        )?)
        .await?
        .into_inner();
    tx.send(part(0, b"", cpb::WriteAction::Stat)).await?;
    let stat = out.message().await?.unwrap_or_default();
    assert_eq!((stat.offset, stat.total), (10, 20));
    let offset = usize::try_from(stat.offset)?;
    tx.send(part(offset, &data[offset..], cpb::WriteAction::Write))
        .await?;
    out.message().await?;
    let mut commit = part(20, b"", cpb::WriteAction::Commit);
    commit.expected = sha(&data);
    tx.send(commit).await?;
    assert_eq!(out.message().await?.unwrap_or_default().digest, sha(&data));
    let list = content
        .list_statuses(with_namespace(cpb::ListStatusesRequest::default(), "ns")?)
        .await?;
    assert!(list.into_inner().statuses.is_empty());
    let abort = content
        .abort(with_namespace(
            cpb::AbortRequest {
                r#ref: "resume".into(),
            },
            "ns",
        )?)
        .await;
    assert_eq!(abort.err().map(|s| s.code()), Some(tonic::Code::NotFound));

    // Work done under a lease is held by it; an unknown lease is refused before any work.
    let mut leases = LeasesClient::new(ch.clone());
    leases
        .create(with_namespace(
            lpb::CreateRequest {
                id: "pull".into(),
                ..Default::default()
            },
            "ns",
        )?)
        .await?;
    let mut req = with_namespace(
        tokio_stream::iter(write_msgs("leased", b"leased data", "")),
        "ns",
    )?;
    req.metadata_mut()
        .insert("containerd-lease", "pull".parse()?);
    let mut out = content.write(req).await?.into_inner();
    while out.message().await?.is_some() {}
    let res = leases
        .list_resources(with_namespace(
            lpb::ListResourcesRequest { id: "pull".into() },
            "ns",
        )?)
        .await?;
    let res: Vec<_> = res
        .into_inner()
        .resources
        .into_iter()
        .map(|r| (r.id, r.r#type))
        .collect();
    assert_eq!(res, [(sha(b"leased data"), "content".to_string())]);
    let mut snaps = SnapshotsClient::new(ch.clone());
    let prep = spb::PrepareSnapshotRequest {
        snapshotter: "overlayfs".into(),
        key: "k".into(),
        ..Default::default()
    };
    let mut req = with_namespace(prep, "ns")?;
    req.metadata_mut()
        .insert("containerd-lease", "nope".parse()?);
    assert_eq!(
        snaps.prepare(req).await.err().map(|s| s.code()),
        Some(tonic::Code::NotFound)
    );
    assert!(
        storage.snapshots.stat("ns", "k").is_err(),
        "nothing created"
    );
    Ok(())
}
