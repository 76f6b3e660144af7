//! `containerd.services.snapshots.v1.Snapshots` over the [`Snapshotter`].

use std::collections::BTreeMap;

use berth_proto::containerd::services::snapshots::v1 as pb;
use berth_proto::containerd::types::Mount as PbMount;
use pb::snapshots_server::Snapshots;
use tonic::{Request, Response, Status};

use std::sync::Arc;

use super::{Info, Kind, Mount, Snapshotter, SNAPSHOTTER};
use crate::db::filter::Filter;
use berth_proto::containerd::events as ev;

use crate::db::{self, blocking, StoreError};
use crate::gc::Gc;

/// The snapshots service (one snapshotter: "overlayfs").
#[derive(Clone, Debug)]
pub struct SnapshotsService {
    snapshotter: Snapshotter,
    gc: Arc<Gc>,
    events: db::Publisher,
}

impl SnapshotsService {
    pub fn new(snapshotter: Snapshotter, gc: Arc<Gc>, events: db::Publisher) -> SnapshotsService {
        SnapshotsService {
            snapshotter,
            gc,
            events,
        }
    }

    /// The snapshotter a request names, checked like containerd's "snapshotter not loaded".
    fn pick(&self, name: &str) -> Result<Snapshotter, StoreError> {
        if name.is_empty() || name == SNAPSHOTTER {
            Ok(self.snapshotter.clone())
        } else {
            Err(StoreError::invalid(
                "snapshotter",
                name,
                "not loaded (only overlayfs is served)",
            ))
        }
    }
}

fn mounts_to_pb(m: Vec<Mount>) -> Vec<PbMount> {
    m.into_iter()
        .map(|m| PbMount {
            r#type: m.kind,
            source: m.source,
            target: m.target,
            options: m.options,
        })
        .collect()
}

fn kind_to_pb(k: Kind) -> pb::Kind {
    match k {
        Kind::View => pb::Kind::View,
        Kind::Active => pb::Kind::Active,
        Kind::Committed => pb::Kind::Committed,
    }
}

fn info_to_pb(i: Info) -> pb::Info {
    pb::Info {
        name: i.name,
        parent: i.parent,
        kind: kind_to_pb(i.kind) as i32,
        created_at: Some(db::timestamp(i.created_at)),
        updated_at: Some(db::timestamp(i.updated_at)),
        labels: i.labels.into_iter().collect(),
    }
}

fn labels(l: std::collections::HashMap<String, String>) -> BTreeMap<String, String> {
    l.into_iter().collect()
}

/// Adds a snapshot a request created to the request's lease, if it names one.
fn attach<T>(s: &Snapshotter, req: &Request<T>, ns: &str, key: &str) -> Result<(), StoreError> {
    crate::leases::attach(s.db(), req, ns, &format!("snapshots/{SNAPSHOTTER}"), key)
}

#[tonic::async_trait]
impl Snapshots for SnapshotsService {
    async fn prepare(
        &self,
        req: Request<pb::PrepareSnapshotRequest>,
    ) -> Result<Response<pb::PrepareSnapshotResponse>, Status> {
        let ns = berth_proto::namespace_from_request(&req)?;
        let s = self.pick(&req.get_ref().snapshotter)?;
        if let Some(lease) = crate::leases::from_request(&req) {
            crate::leases::check(s.db(), &ns, &lease)?;
        }
        let r = req.get_ref().clone();
        let (s2, n2) = (s.clone(), ns.clone());
        let (key, parent) = (r.key.clone(), r.parent.clone());
        let lease = crate::leases::from_request(&req);
        let mounts = blocking(move || {
            s2.prepare_leased(&n2, &r.key, &r.parent, labels(r.labels), lease.as_deref())
        })
        .await?;
        let snapshotter = SNAPSHOTTER.to_string();
        self.events.emit(
            &ns,
            ev::SnapshotPrepare {
                key,
                parent,
                snapshotter,
            },
        );
        Ok(Response::new(pb::PrepareSnapshotResponse {
            mounts: mounts_to_pb(mounts),
        }))
    }

    async fn view(
        &self,
        req: Request<pb::ViewSnapshotRequest>,
    ) -> Result<Response<pb::ViewSnapshotResponse>, Status> {
        let ns = berth_proto::namespace_from_request(&req)?;
        let s = self.pick(&req.get_ref().snapshotter)?;
        if let Some(lease) = crate::leases::from_request(&req) {
            crate::leases::check(s.db(), &ns, &lease)?;
        }
        let r = req.get_ref().clone();
        let (s2, n2) = (s.clone(), ns.clone());
        let lease = crate::leases::from_request(&req);
        let mounts = blocking(move || {
            s2.view_leased(&n2, &r.key, &r.parent, labels(r.labels), lease.as_deref())
        })
        .await?;
        Ok(Response::new(pb::ViewSnapshotResponse {
            mounts: mounts_to_pb(mounts),
        }))
    }

    async fn mounts(
        &self,
        req: Request<pb::MountsRequest>,
    ) -> Result<Response<pb::MountsResponse>, Status> {
        let ns = berth_proto::namespace_from_request(&req)?;
        let req = req.into_inner();
        let mounts = self.pick(&req.snapshotter)?.mounts(&ns, &req.key)?;
        Ok(Response::new(pb::MountsResponse {
            mounts: mounts_to_pb(mounts),
        }))
    }

    async fn commit(
        &self,
        req: Request<pb::CommitSnapshotRequest>,
    ) -> Result<Response<()>, Status> {
        let ns = berth_proto::namespace_from_request(&req)?;
        let s = self.pick(&req.get_ref().snapshotter)?;
        if let Some(lease) = crate::leases::from_request(&req) {
            crate::leases::check(s.db(), &ns, &lease)?;
        }
        let r = req.get_ref().clone();
        let (s2, n2) = (s.clone(), ns.clone());
        let (key, name) = (r.key.clone(), r.name.clone());
        blocking(move || s2.commit(&n2, &r.name, &r.key, labels(r.labels))).await?;
        attach(&s, &req, &ns, &name)?;
        let snapshotter = SNAPSHOTTER.to_string();
        self.events.emit(
            &ns,
            ev::SnapshotCommit {
                key,
                name,
                snapshotter,
            },
        );
        Ok(Response::new(()))
    }

    async fn remove(
        &self,
        req: Request<pb::RemoveSnapshotRequest>,
    ) -> Result<Response<()>, Status> {
        let ns = berth_proto::namespace_from_request(&req)?;
        let req = req.into_inner();
        let s = self.pick(&req.snapshotter)?;
        let (n, key) = (ns.clone(), req.key.clone());
        blocking(move || s.remove(&n, &key)).await?;
        let snapshotter = SNAPSHOTTER.to_string();
        self.events.emit(
            &ns,
            ev::SnapshotRemove {
                key: req.key,
                snapshotter,
            },
        );
        // Parents only this snapshot kept alive may go now (containerd collects after
        // removals too).
        self.gc.after_delete(false).await?;
        Ok(Response::new(()))
    }

    async fn stat(
        &self,
        req: Request<pb::StatSnapshotRequest>,
    ) -> Result<Response<pb::StatSnapshotResponse>, Status> {
        let ns = berth_proto::namespace_from_request(&req)?;
        let req = req.into_inner();
        let info = self.pick(&req.snapshotter)?.stat(&ns, &req.key)?;
        Ok(Response::new(pb::StatSnapshotResponse {
            info: Some(info_to_pb(info)),
        }))
    }

    async fn update(
        &self,
        req: Request<pb::UpdateSnapshotRequest>,
    ) -> Result<Response<pb::UpdateSnapshotResponse>, Status> {
        let ns = berth_proto::namespace_from_request(&req)?;
        let req = req.into_inner();
        let s = self.pick(&req.snapshotter)?;
        let i = req.info.unwrap_or_default();
        let new = Info {
            name: i.name,
            parent: i.parent,
            kind: Kind::Active,
            labels: labels(i.labels),
            created_at: db::from_timestamp(None),
            updated_at: db::from_timestamp(None),
        };
        let info = s.update(&ns, &new, &db::mask_paths(req.update_mask))?;
        Ok(Response::new(pb::UpdateSnapshotResponse {
            info: Some(info_to_pb(info)),
        }))
    }

    type ListStream =
        tokio_stream::Iter<std::vec::IntoIter<Result<pb::ListSnapshotsResponse, Status>>>;

    async fn list(
        &self,
        req: Request<pb::ListSnapshotsRequest>,
    ) -> Result<Response<Self::ListStream>, Status> {
        let ns = berth_proto::namespace_from_request(&req)?;
        let req = req.into_inner();
        let filter = Filter::parse(&req.filters)?;
        let infos: Vec<pb::Info> = self
            .pick(&req.snapshotter)?
            .list(&ns, &filter)?
            .into_iter()
            .map(info_to_pb)
            .collect();
        let batches: Vec<_> = infos
            .chunks(100)
            .map(|c| Ok(pb::ListSnapshotsResponse { info: c.to_vec() }))
            .collect();
        Ok(Response::new(tokio_stream::iter(batches)))
    }

    async fn usage(
        &self,
        req: Request<pb::UsageRequest>,
    ) -> Result<Response<pb::UsageResponse>, Status> {
        let ns = berth_proto::namespace_from_request(&req)?;
        let req = req.into_inner();
        let s = self.pick(&req.snapshotter)?;
        let u = blocking(move || s.usage(&ns, &req.key)).await?;
        Ok(Response::new(pb::UsageResponse {
            size: u.size,
            inodes: u.inodes,
        }))
    }

    async fn cleanup(&self, req: Request<pb::CleanupRequest>) -> Result<Response<()>, Status> {
        berth_proto::namespace_from_request(&req)?;
        let s = self.pick(&req.into_inner().snapshotter)?;
        blocking(move || s.cleanup()).await?;
        Ok(Response::new(()))
    }
}
