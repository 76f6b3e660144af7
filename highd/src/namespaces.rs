//! Namespaces: containerd's namespaces service and the implicit creation of a namespace on
//! its first write.

use std::collections::BTreeMap;

use berth_proto::containerd::events as ev;
use berth_proto::containerd::services::namespaces::v1 as pb;
use pb::namespaces_server::Namespaces;
use serde::{Deserialize, Serialize};
use tonic::{Request, Response, Status};

use crate::content::update_labels;
use crate::db::{self, table, Db, DbError, StoreError, Table, WriteTxn, NAMESPACES};

/// The record of one namespace (namespace "" of the `namespaces` table, key = name).
#[derive(Debug, Clone, Default, Serialize, Deserialize)]
pub struct NamespaceRecord {
    #[serde(default)]
    pub labels: BTreeMap<String, String>,
}

/// The tables a namespace must be empty of before it can be deleted, with containerd's
/// words for them. `containers` belongs to the containers service.
const CONTENTS: [(Table, &str); 5] = [
    (db::IMAGES, "images"),
    (db::CONTENT, "blobs"),
    (table("containers"), "containers"),
    (db::LEASES, "leases"),
    (db::SNAPSHOTS, "snapshots on \"overlayfs\" snapshotter"),
];

/// Checks a namespace name like containerd's identifiers.Validate.
pub fn validate(name: &str) -> Result<(), StoreError> {
    berth_proto::namespace::validate_identifier(name).map_err(|_| {
        StoreError::invalid(
            "namespace",
            name,
            "must match ^[A-Za-z0-9]+(?:[._-][A-Za-z0-9]+)*$ and be at most 76 characters",
        )
    })
}

/// Records `ns` as existing (containerd creates a namespace on its first write). Call it in
/// every transaction that writes namespaced records.
pub fn ensure(tx: &mut WriteTxn, ns: &str) -> Result<(), DbError> {
    if tx.get::<NamespaceRecord>(NAMESPACES, "", ns)?.is_none() {
        tx.put(NAMESPACES, "", ns, &NamespaceRecord::default())?;
    }
    Ok(())
}

fn get(db: &Db, name: &str) -> Result<NamespaceRecord, StoreError> {
    db.get(NAMESPACES, "", name)?
        .ok_or_else(|| StoreError::not_found("namespace", name))
}

fn create(db: &Db, name: &str, labels: BTreeMap<String, String>) -> Result<(), StoreError> {
    validate(name)?;
    db.update(|tx| {
        if tx.get::<NamespaceRecord>(NAMESPACES, "", name)?.is_some() {
            return Err(StoreError::exists("namespace", name));
        }
        tx.put(NAMESPACES, "", name, &NamespaceRecord { labels })?;
        Ok(())
    })
}

fn update(
    db: &Db,
    name: &str,
    labels: &BTreeMap<String, String>,
    paths: &[String],
) -> Result<NamespaceRecord, StoreError> {
    db.update(|tx| {
        let mut r: NamespaceRecord = tx
            .get(NAMESPACES, "", name)?
            .ok_or_else(|| StoreError::not_found("namespace", name))?;
        update_labels(&mut r.labels, labels, paths, &[])?;
        tx.put(NAMESPACES, "", name, &r)?;
        Ok(r)
    })
}

/// Deletes an empty namespace; FailedPrecondition naming what is left otherwise.
pub fn delete(db: &Db, name: &str) -> Result<(), StoreError> {
    db.update(|tx| {
        if tx.get::<NamespaceRecord>(NAMESPACES, "", name)?.is_none() {
            return Err(StoreError::not_found("namespace", name));
        }
        let mut left = Vec::new();
        for (t, what) in CONTENTS {
            if !tx.list::<serde_json::Value>(t, name)?.is_empty() {
                left.push(what);
            }
        }
        if !left.is_empty() {
            return Err(StoreError::NamespaceNotEmpty {
                name: name.to_string(),
                kinds: left.join(", "),
            });
        }
        tx.delete(NAMESPACES, "", name)?;
        Ok(())
    })
}

/// `containerd.services.namespaces.v1.Namespaces`.
#[derive(Debug, Clone)]
pub struct NamespacesService {
    db: Db,
    events: db::Publisher,
}

impl NamespacesService {
    pub fn new(db: Db, events: db::Publisher) -> NamespacesService {
        NamespacesService { db, events }
    }
}

fn to_pb(name: String, r: NamespaceRecord) -> pb::Namespace {
    pb::Namespace {
        name,
        labels: r.labels.into_iter().collect(),
    }
}

#[tonic::async_trait]
impl Namespaces for NamespacesService {
    async fn get(
        &self,
        req: Request<pb::GetNamespaceRequest>,
    ) -> Result<Response<pb::GetNamespaceResponse>, Status> {
        let name = req.into_inner().name;
        let r = get(&self.db, &name)?;
        Ok(Response::new(pb::GetNamespaceResponse {
            namespace: Some(to_pb(name, r)),
        }))
    }

    async fn list(
        &self,
        _req: Request<pb::ListNamespacesRequest>,
    ) -> Result<Response<pb::ListNamespacesResponse>, Status> {
        let all = self
            .db
            .list::<NamespaceRecord>(NAMESPACES, "")
            .map_err(StoreError::from)?;
        Ok(Response::new(pb::ListNamespacesResponse {
            namespaces: all.into_iter().map(|(n, r)| to_pb(n, r)).collect(),
        }))
    }

    async fn create(
        &self,
        req: Request<pb::CreateNamespaceRequest>,
    ) -> Result<Response<pb::CreateNamespaceResponse>, Status> {
        let ns = req.into_inner().namespace.unwrap_or_default();
        let labels: BTreeMap<_, _> = ns.labels.into_iter().collect();
        create(&self.db, &ns.name, labels.clone())?;
        self.events.emit(
            &ns.name,
            ev::NamespaceCreate {
                name: ns.name.clone(),
                labels: labels.clone().into_iter().collect(),
            },
        );
        Ok(Response::new(pb::CreateNamespaceResponse {
            namespace: Some(to_pb(ns.name, NamespaceRecord { labels })),
        }))
    }

    async fn update(
        &self,
        req: Request<pb::UpdateNamespaceRequest>,
    ) -> Result<Response<pb::UpdateNamespaceResponse>, Status> {
        let req = req.into_inner();
        let ns = req.namespace.unwrap_or_default();
        let labels: BTreeMap<_, _> = ns.labels.into_iter().collect();
        let r = update(
            &self.db,
            &ns.name,
            &labels,
            &db::mask_paths(req.update_mask),
        )?;
        self.events.emit(
            &ns.name,
            ev::NamespaceUpdate {
                name: ns.name.clone(),
                labels: r.labels.clone().into_iter().collect(),
            },
        );
        Ok(Response::new(pb::UpdateNamespaceResponse {
            namespace: Some(to_pb(ns.name, r)),
        }))
    }

    async fn delete(
        &self,
        req: Request<pb::DeleteNamespaceRequest>,
    ) -> Result<Response<()>, Status> {
        let name = req.into_inner().name;
        delete(&self.db, &name)?;
        self.events
            .emit(&name, ev::NamespaceDelete { name: name.clone() });
        Ok(Response::new(()))
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn lifecycle_validation_and_non_empty_delete() -> anyhow::Result<()> {
        let dir = tempfile::tempdir()?;
        let db = Db::open(dir.path())?;
        create(&db, "berth", [("a".into(), "1".into())].into())?;
        let code = |r: Result<(), StoreError>| r.map_err(|e| e.code());
        assert_eq!(
            code(create(&db, "berth", BTreeMap::new())),
            Err(tonic::Code::AlreadyExists)
        );
        for bad in ["", "-x", "a..b", "a/b", &"x".repeat(77)] {
            let err = create(&db, bad, BTreeMap::new()).map_err(|e| (e.code(), e.to_string()));
            let (code, msg) = err.err().unwrap_or((tonic::Code::Ok, String::new()));
            assert_eq!(code, tonic::Code::InvalidArgument, "{bad:?}");
            assert!(msg.contains(&format!("{bad:?}")), "{msg}");
        }
        let r = update(
            &db,
            "berth",
            &[("b".into(), "2".into())].into(),
            &["labels.b".into()],
        )?;
        assert_eq!(r.labels.len(), 2);
        db.update(|tx| {
            ensure(tx, "other")?;
            tx.put(db::IMAGES, "berth", "img", &1)
        })?;
        assert_eq!(db.list::<NamespaceRecord>(NAMESPACES, "")?.len(), 2);
        let err = delete(&db, "berth").map_err(|e| (e.code(), e.to_string()));
        let (code, msg) = err.err().unwrap_or((tonic::Code::Ok, String::new()));
        assert_eq!(code, tonic::Code::FailedPrecondition);
        assert!(msg.contains("images"), "{msg}");
        delete(&db, "other")?;
        assert_eq!(
            get(&db, "other").map(|_| ()).map_err(|e| e.code()),
            Err(tonic::Code::NotFound)
        );
        Ok(())
    }
}
