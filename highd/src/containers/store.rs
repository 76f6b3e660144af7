//! Container records in the metadata DB (table `containers`, key `(namespace, id)`).
//!
//! Records are versioned JSON (`"version": 1`); `Any` payloads keep their type URL and
//! carry their bytes hex-encoded, since a spec is JSON but runtime options are protobuf.

use std::collections::{BTreeMap, HashMap};

use chrono::{DateTime, Utc};
use serde::{Deserialize, Serialize};

use berth_proto::containerd::services::containers::v1::{container::Runtime, Container};

use super::ContainerError;
use crate::db::{table, Db, DbError, Table};
use crate::gc::ContainerRefs;

pub const CONTAINERS: Table = table("containers");
const RECORD_VERSION: u32 = 1;

#[derive(Debug, Clone, Serialize, Deserialize)]
pub struct AnyRecord {
    pub type_url: String,
    pub value_hex: String,
}

#[derive(Debug, Clone, Serialize, Deserialize)]
pub struct Record {
    pub version: u32,
    pub labels: BTreeMap<String, String>,
    pub image: String,
    pub runtime_name: String,
    pub runtime_options: Option<AnyRecord>,
    pub spec: Option<AnyRecord>,
    pub snapshotter: String,
    pub snapshot_key: String,
    pub created_at: DateTime<Utc>,
    pub updated_at: DateTime<Utc>,
    pub extensions: BTreeMap<String, AnyRecord>,
    pub sandbox: String,
}

fn any_to_record(a: &prost_types::Any) -> AnyRecord {
    AnyRecord {
        type_url: a.type_url.clone(),
        value_hex: hex::encode(&a.value),
    }
}

fn record_to_any(r: &AnyRecord) -> prost_types::Any {
    prost_types::Any {
        type_url: r.type_url.clone(),
        // Only we write records, so bad hex means a damaged DB; an empty value is the
        // least harmful reading of it and the spec check at task creation reports it.
        value: hex::decode(&r.value_hex).unwrap_or_default(),
    }
}

pub fn timestamp(t: DateTime<Utc>) -> prost_types::Timestamp {
    prost_types::Timestamp {
        seconds: t.timestamp(),
        nanos: t.timestamp_subsec_nanos() as i32,
    }
}

impl Record {
    pub fn from_proto(c: &Container, now: DateTime<Utc>) -> Record {
        let runtime = c.runtime.clone().unwrap_or_default();
        Record {
            version: RECORD_VERSION,
            labels: c
                .labels
                .iter()
                .map(|(k, v)| (k.clone(), v.clone()))
                .collect(),
            image: c.image.clone(),
            runtime_name: runtime.name,
            runtime_options: runtime.options.as_ref().map(any_to_record),
            spec: c.spec.as_ref().map(any_to_record),
            snapshotter: c.snapshotter.clone(),
            snapshot_key: c.snapshot_key.clone(),
            created_at: now,
            updated_at: now,
            extensions: c
                .extensions
                .iter()
                .map(|(k, v)| (k.clone(), any_to_record(v)))
                .collect(),
            sandbox: c.sandbox.clone(),
        }
    }

    pub fn to_proto(&self, id: &str) -> Container {
        Container {
            id: id.to_string(),
            labels: self.labels.clone().into_iter().collect::<HashMap<_, _>>(),
            image: self.image.clone(),
            runtime: Some(Runtime {
                name: self.runtime_name.clone(),
                options: self.runtime_options.as_ref().map(record_to_any),
            }),
            spec: self.spec.as_ref().map(record_to_any),
            snapshotter: self.snapshotter.clone(),
            snapshot_key: self.snapshot_key.clone(),
            created_at: Some(timestamp(self.created_at)),
            updated_at: Some(timestamp(self.updated_at)),
            extensions: self
                .extensions
                .iter()
                .map(|(k, v)| (k.clone(), record_to_any(v)))
                .collect(),
            sandbox: self.sandbox.clone(),
        }
    }
}

/// The containers table, shared by the containers and tasks services.
#[derive(Clone, Debug)]
pub struct ContainerStore {
    db: Db,
}

impl ContainerStore {
    pub fn new(db: Db) -> ContainerStore {
        ContainerStore { db }
    }

    pub fn get(&self, ns: &str, id: &str) -> Result<Option<Record>, ContainerError> {
        Ok(self.db.get(CONTAINERS, ns, id)?)
    }

    pub fn list(&self, ns: &str) -> Result<Vec<(String, Record)>, ContainerError> {
        Ok(self.db.list(CONTAINERS, ns)?)
    }

    /// Inserts a new record; fails with `AlreadyExists` inside the same transaction.
    /// Like every first write, it creates the namespace (containerd does the same).
    pub fn create(&self, ns: &str, id: &str, rec: &Record) -> Result<(), ContainerError> {
        self.db.update(|tx| {
            if tx.get::<Record>(CONTAINERS, ns, id)?.is_some() {
                return Err(ContainerError::AlreadyExists { id: id.to_string() });
            }
            crate::namespaces::ensure(tx, ns)?;
            tx.put(CONTAINERS, ns, id, rec)?;
            Ok(())
        })
    }

    /// Read-modify-write of one record in one transaction.
    pub fn update(
        &self,
        ns: &str,
        id: &str,
        f: impl FnOnce(&mut Record) -> Result<(), ContainerError>,
    ) -> Result<Record, ContainerError> {
        self.db.update(|tx| {
            let mut rec: Record = tx
                .get(CONTAINERS, ns, id)?
                .ok_or_else(|| ContainerError::NotFound { id: id.to_string() })?;
            f(&mut rec)?;
            tx.put(CONTAINERS, ns, id, &rec)?;
            Ok(rec)
        })
    }

    pub fn delete(&self, ns: &str, id: &str) -> Result<(), ContainerError> {
        self.db.update(|tx| {
            if !tx.delete(CONTAINERS, ns, id)? {
                return Err(ContainerError::NotFound { id: id.to_string() });
            }
            Ok(())
        })
    }
}

/// Containers keep their snapshots alive through garbage collection.
impl ContainerRefs for ContainerStore {
    fn snapshot_refs(&self, ns: &str) -> Result<Vec<(String, String)>, DbError> {
        Ok(self
            .db
            .list::<Record>(CONTAINERS, ns)?
            .into_iter()
            .filter(|(_, r)| !r.snapshot_key.is_empty())
            .map(|(_, r)| (r.snapshotter, r.snapshot_key))
            .collect())
    }
}
