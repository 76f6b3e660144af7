//! `containerd.services.diff.v1.Diff`: Apply unpacks a layer, Diff creates one.

use berth_proto::containerd::services::diff::v1 as pb;
use pb::diff_server::Diff;
use tonic::{Request, Response, Status};

use super::Applier;
use crate::db::blocking;
use crate::images::{desc_from_pb, desc_to_pb};
use crate::snapshots::Mount;

/// The diff service.
#[derive(Clone, Debug)]
pub struct DiffService {
    applier: Applier,
}

impl DiffService {
    pub fn new(applier: Applier) -> DiffService {
        DiffService { applier }
    }
}

fn mounts_from_pb(m: Vec<berth_proto::containerd::types::Mount>) -> Vec<Mount> {
    m.into_iter()
        .map(|m| Mount {
            kind: m.r#type,
            source: m.source,
            target: m.target,
            options: m.options,
        })
        .collect()
}

#[tonic::async_trait]
impl Diff for DiffService {
    async fn apply(
        &self,
        req: Request<pb::ApplyRequest>,
    ) -> Result<Response<pb::ApplyResponse>, Status> {
        let ns = berth_proto::namespace_from_request(&req)?;
        let req = req.into_inner();
        let desc = desc_from_pb(req.diff);
        let mounts = mounts_from_pb(req.mounts);
        let applier = self.applier.clone();
        let sync = req.sync_fs;
        let applied = blocking(move || {
            let applied = applier.apply(&ns, &desc, &mounts)?;
            if sync {
                applier.sync_fs(&mounts)?;
            }
            Ok(applied)
        })
        .await?;
        Ok(Response::new(pb::ApplyResponse {
            applied: Some(desc_to_pb(applied)),
        }))
    }

    async fn diff(
        &self,
        req: Request<pb::DiffRequest>,
    ) -> Result<Response<pb::DiffResponse>, Status> {
        let ns = berth_proto::namespace_from_request(&req)?;
        let req = req.into_inner();
        let (left, right) = (mounts_from_pb(req.left), mounts_from_pb(req.right));
        let applier = self.applier.clone();
        let labels = req.labels.into_iter().collect();
        let desc =
            blocking(move || applier.diff(&ns, &left, &right, &req.media_type, &req.r#ref, labels))
                .await?;
        Ok(Response::new(pb::DiffResponse {
            diff: Some(desc_to_pb(desc)),
        }))
    }
}
