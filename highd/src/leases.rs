//! Leases: named groups of resources (content, snapshots, ingests) protected from GC.
//!
//! As in containerd, a request carrying the `containerd-lease` metadata header adds what it
//! creates (committed content, prepared or committed snapshots) to that lease.

use std::collections::BTreeMap;
use std::sync::Arc;

use berth_proto::containerd::services::leases::v1 as pb;
use chrono::{DateTime, Utc};
use pb::leases_server::Leases;
use serde::{Deserialize, Serialize};
use tonic::{Request, Response, Status};

use crate::content::digest_hex;
use crate::db::filter::{self, Filter};
use crate::db::{self, Db, StoreError, LEASES};
use crate::gc::Gc;

/// gRPC metadata key naming the lease of a request.
pub const LEASE_HEADER: &str = "containerd-lease";
/// Label holding the time after which GC deletes the lease (RFC3339).
pub const EXPIRE_LABEL: &str = "containerd.io/gc.expire";

/// A resource held by a lease: type "content", "snapshots/<snapshotter>" or "ingests".
#[derive(Debug, Clone, PartialEq, Eq, PartialOrd, Ord, Serialize, Deserialize)]
pub struct Resource {
    pub id: String,
    pub kind: String,
}

/// The DB record of a lease.
#[derive(Debug, Clone, Serialize, Deserialize)]
pub struct LeaseRecord {
    #[serde(default)]
    pub labels: BTreeMap<String, String>,
    pub created_at: DateTime<Utc>,
    #[serde(default)]
    pub resources: Vec<Resource>,
}

struct Named<'a>(&'a str, &'a LeaseRecord);

impl filter::Adaptor for Named<'_> {
    fn field(&self, path: &[String]) -> Option<String> {
        match path.first().map(String::as_str) {
            Some("id") => Some(self.0.to_string()),
            _ => filter::label(&self.1.labels, path),
        }
    }
}

/// The lease named by a request's metadata, if any.
pub fn from_request<T>(req: &Request<T>) -> Option<String> {
    req.metadata()
        .get(LEASE_HEADER)
        .and_then(|v| v.to_str().ok())
        .filter(|v| !v.is_empty())
        .map(str::to_string)
}

fn check_resource(r: &Resource) -> Result<(), StoreError> {
    match r.kind.as_str() {
        "content" => digest_hex(&r.id).map(drop),
        "ingests" => Ok(()),
        k if k.strip_prefix("snapshots/").is_some_and(|s| !s.is_empty()) => Ok(()),
        _ => Err(StoreError::invalid(
            "lease resource type",
            &r.kind,
            "expected content, ingests or snapshots/<snapshotter>",
        )),
    }
}

pub fn create(
    db: &Db,
    ns: &str,
    id: &str,
    labels: BTreeMap<String, String>,
) -> Result<LeaseRecord, StoreError> {
    // containerd only requires a non-empty lease id: ctr's own ids
    // (`<nanos>-<base64url>`, e.g. `483955030--_q8`) are not identifiers.
    if id.is_empty() {
        return Err(StoreError::invalid("lease id", id, "must not be empty"));
    }
    let rec = LeaseRecord {
        labels,
        created_at: Utc::now(),
        resources: Vec::new(),
    };
    db.update(|tx| {
        if tx.get::<LeaseRecord>(LEASES, ns, id)?.is_some() {
            return Err(StoreError::exists("lease", id));
        }
        crate::namespaces::ensure(tx, ns)?;
        tx.put(LEASES, ns, id, &rec)?;
        Ok(())
    })?;
    Ok(rec)
}

pub fn delete(db: &Db, ns: &str, id: &str) -> Result<(), StoreError> {
    if !db.update(|tx| tx.delete(LEASES, ns, id))? {
        return Err(StoreError::not_found("lease", id));
    }
    Ok(())
}

pub fn list(db: &Db, ns: &str, filter: &Filter) -> Result<Vec<(String, LeaseRecord)>, StoreError> {
    Ok(db
        .list::<LeaseRecord>(LEASES, ns)?
        .into_iter()
        .filter(|(id, r)| filter.matches(&Named(id, r)))
        .collect())
}

/// Adds (`add`) or removes a resource of a lease.
pub fn change_resource(
    db: &Db,
    ns: &str,
    id: &str,
    res: Resource,
    add: bool,
) -> Result<(), StoreError> {
    check_resource(&res)?;
    db.update(|tx| change_resource_in(tx, ns, id, res, add))
}

/// [`change_resource`] inside the caller's transaction, so that a resource and its lease
/// entry are committed together (one commit, and no moment when GC sees it unleased).
pub fn change_resource_in(
    tx: &mut db::WriteTxn,
    ns: &str,
    id: &str,
    res: Resource,
    add: bool,
) -> Result<(), StoreError> {
    let mut r: LeaseRecord = tx
        .get(LEASES, ns, id)?
        .ok_or_else(|| StoreError::not_found("lease", id))?;
    r.resources.retain(|x| *x != res);
    if add {
        r.resources.push(res);
        r.resources.sort();
    }
    tx.put(LEASES, ns, id, &r)?;
    Ok(())
}

pub fn resources(db: &Db, ns: &str, id: &str) -> Result<Vec<Resource>, StoreError> {
    let r: LeaseRecord = db
        .get(LEASES, ns, id)?
        .ok_or_else(|| StoreError::not_found("lease", id))?;
    Ok(r.resources)
}

/// Fails with NotFound unless lease `id` exists (checked before work that would be leased).
pub fn check(db: &Db, ns: &str, id: &str) -> Result<(), StoreError> {
    match db.get::<LeaseRecord>(LEASES, ns, id)? {
        Some(_) => Ok(()),
        None => Err(StoreError::not_found("lease", id)),
    }
}

/// Adds what a request created to the request's lease, if it names one.
pub fn attach<T>(
    db: &Db,
    req: &Request<T>,
    ns: &str,
    kind: &str,
    id: &str,
) -> Result<(), StoreError> {
    match from_request(req) {
        Some(lease) => change_resource(
            db,
            ns,
            &lease,
            Resource {
                id: id.to_string(),
                kind: kind.to_string(),
            },
            true,
        ),
        None => Ok(()),
    }
}

/// `containerd.services.leases.v1.Leases`.
#[derive(Clone)]
pub struct LeasesService {
    db: Db,
    gc: Arc<Gc>,
}

impl LeasesService {
    pub fn new(db: Db, gc: Arc<Gc>) -> LeasesService {
        LeasesService { db, gc }
    }
}

fn to_pb(id: String, r: LeaseRecord) -> pb::Lease {
    pb::Lease {
        id,
        created_at: Some(db::timestamp(r.created_at)),
        labels: r.labels.into_iter().collect(),
    }
}

fn res_from_pb(r: Option<pb::Resource>) -> Resource {
    let r = r.unwrap_or_default();
    Resource {
        id: r.id,
        kind: r.r#type,
    }
}

#[tonic::async_trait]
impl Leases for LeasesService {
    async fn create(
        &self,
        req: Request<pb::CreateRequest>,
    ) -> Result<Response<pb::CreateResponse>, Status> {
        let ns = berth_proto::namespace_from_request(&req)?;
        let req = req.into_inner();
        let rec = create(&self.db, &ns, &req.id, req.labels.into_iter().collect())?;
        Ok(Response::new(pb::CreateResponse {
            lease: Some(to_pb(req.id, rec)),
        }))
    }

    async fn delete(&self, req: Request<pb::DeleteRequest>) -> Result<Response<()>, Status> {
        let ns = berth_proto::namespace_from_request(&req)?;
        let req = req.into_inner();
        delete(&self.db, &ns, &req.id)?;
        self.gc.after_delete(req.sync).await?;
        Ok(Response::new(()))
    }

    async fn list(
        &self,
        req: Request<pb::ListRequest>,
    ) -> Result<Response<pb::ListResponse>, Status> {
        let ns = berth_proto::namespace_from_request(&req)?;
        let filter = Filter::parse(&req.into_inner().filters)?;
        let leases = list(&self.db, &ns, &filter)?;
        Ok(Response::new(pb::ListResponse {
            leases: leases.into_iter().map(|(id, r)| to_pb(id, r)).collect(),
        }))
    }

    async fn add_resource(
        &self,
        req: Request<pb::AddResourceRequest>,
    ) -> Result<Response<()>, Status> {
        let ns = berth_proto::namespace_from_request(&req)?;
        let req = req.into_inner();
        change_resource(&self.db, &ns, &req.id, res_from_pb(req.resource), true)?;
        Ok(Response::new(()))
    }

    async fn delete_resource(
        &self,
        req: Request<pb::DeleteResourceRequest>,
    ) -> Result<Response<()>, Status> {
        let ns = berth_proto::namespace_from_request(&req)?;
        let req = req.into_inner();
        change_resource(&self.db, &ns, &req.id, res_from_pb(req.resource), false)?;
        Ok(Response::new(()))
    }

    async fn list_resources(
        &self,
        req: Request<pb::ListResourcesRequest>,
    ) -> Result<Response<pb::ListResourcesResponse>, Status> {
        let ns = berth_proto::namespace_from_request(&req)?;
        let list = resources(&self.db, &ns, &req.into_inner().id)?;
        Ok(Response::new(pb::ListResourcesResponse {
            resources: list
                .into_iter()
                .map(|r| pb::Resource {
                    id: r.id,
                    r#type: r.kind,
                })
                .collect(),
        }))
    }
}
