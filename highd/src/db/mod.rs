//! The metadata database: one redb file at `<root>/meta.redb`.
//!
//! Every record kind lives in its own redb table keyed by `(namespace, key)` and holds a JSON
//! value, so a namespace's records of one kind are one contiguous range. Records that are not
//! namespaced (the namespaces themselves, counters) use the empty namespace `""`.
//!
//! Other highd modules (e.g. the containers service) open their own table with
//! [`table`]`("containers")` and use the same [`Db::update`]/[`Db::view`] helpers, so all
//! metadata changes are ACID transactions in the one file.

mod error;
pub mod filter;

pub use error::{DbError, StoreError};

use std::path::{Path, PathBuf};
use std::sync::Arc;

use redb::{ReadableDatabase, ReadableTable, TableDefinition};
use serde::de::DeserializeOwned;
use serde::Serialize;

/// A table of namespaced JSON records keyed by `(namespace, key)`.
pub type Table = TableDefinition<'static, (&'static str, &'static str), &'static [u8]>;

/// The table of record kind `name` (the name is the redb table name).
pub const fn table(name: &'static str) -> Table {
    TableDefinition::new(name)
}

/// Namespaces (namespace `""`, key = namespace name).
pub const NAMESPACES: Table = table("namespaces");
/// Content records (labels, timestamps); the blobs themselves are shared on disk.
pub const CONTENT: Table = table("content");
/// Images (name → target descriptor).
pub const IMAGES: Table = table("images");
/// Snapshots of the overlayfs snapshotter (key → id, kind, parent).
pub const SNAPSHOTS: Table = table("snapshots/overlayfs");
/// Leases and the resources they hold.
pub const LEASES: Table = table("leases");
/// Counters (namespace `""`).
const COUNTERS: Table = table("counters");

/// Cheap-to-clone handle to the metadata database.
#[derive(Clone)]
pub struct Db {
    inner: Arc<redb::Database>,
    path: PathBuf,
}

impl std::fmt::Debug for Db {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Db").field("path", &self.path).finish()
    }
}

impl Db {
    /// Opens (or creates) `<root>/meta.redb`.
    pub fn open(root: &Path) -> Result<Db, DbError> {
        std::fs::create_dir_all(root).map_err(|source| DbError::CreateRoot {
            path: root.to_path_buf(),
            source,
        })?;
        let path = root.join("meta.redb");
        let db = redb::Database::create(&path).map_err(|source| DbError::Open {
            path: path.clone(),
            source: Box::new(source),
        })?;
        Ok(Db {
            inner: Arc::new(db),
            path,
        })
    }

    /// The underlying redb database, for callers that need their own table layout.
    pub fn raw(&self) -> &redb::Database {
        &self.inner
    }

    /// Runs `f` in a write transaction and commits (durably) only if it returns `Ok`.
    pub fn update<R, E: From<DbError>>(
        &self,
        f: impl FnOnce(&mut WriteTxn) -> Result<R, E>,
    ) -> Result<R, E> {
        let tx = self.inner.begin_write().map_err(DbError::from)?;
        let mut txn = WriteTxn { tx };
        let out = f(&mut txn)?;
        txn.tx.commit().map_err(DbError::from)?;
        Ok(out)
    }

    /// Like [`Db::update`], but the commit is not flushed to disk: a crash may undo it,
    /// and the next durable commit (of anyone) makes it durable too, never out of order.
    /// Only for changes whose loss a restart repairs by itself (an id reservation whose
    /// directory the start-up clean-up removes); each saved fsync is ~16 ms on a loaded
    /// disk.
    pub fn update_nondurable<R, E: From<DbError>>(
        &self,
        f: impl FnOnce(&mut WriteTxn) -> Result<R, E>,
    ) -> Result<R, E> {
        let mut tx = self.inner.begin_write().map_err(DbError::from)?;
        tx.set_durability(redb::Durability::None)
            .map_err(DbError::from)?;
        let mut txn = WriteTxn { tx };
        let out = f(&mut txn)?;
        txn.tx.commit().map_err(DbError::from)?;
        Ok(out)
    }

    /// Runs `f` on a consistent read-only snapshot of the database.
    pub fn view<R, E: From<DbError>>(
        &self,
        f: impl FnOnce(&ReadTxn) -> Result<R, E>,
    ) -> Result<R, E> {
        let tx = self.inner.begin_read().map_err(DbError::from)?;
        f(&ReadTxn { tx })
    }

    /// Reads one record.
    pub fn get<T: DeserializeOwned>(
        &self,
        t: Table,
        ns: &str,
        key: &str,
    ) -> Result<Option<T>, DbError> {
        self.view(|tx| tx.get(t, ns, key))
    }

    /// Lists the records of one namespace in key order.
    pub fn list<T: DeserializeOwned>(
        &self,
        t: Table,
        ns: &str,
    ) -> Result<Vec<(String, T)>, DbError> {
        self.view(|tx| tx.list(t, ns))
    }
}

type Key = (&'static str, &'static str);
type RoTable = redb::ReadOnlyTable<Key, &'static [u8]>;

/// A read-only transaction.
pub struct ReadTxn {
    tx: redb::ReadTransaction,
}

/// A write transaction; see [`Db::update`].
pub struct WriteTxn {
    tx: redb::WriteTransaction,
}

fn decode<T: DeserializeOwned>(t: Table, ns: &str, key: &str, raw: &[u8]) -> Result<T, DbError> {
    serde_json::from_slice(raw).map_err(|source| DbError::Decode {
        table: t.to_string(),
        key: format!("{ns}/{key}"),
        source,
    })
}

fn get_in<T: DeserializeOwned>(
    tbl: &impl ReadableTable<(&'static str, &'static str), &'static [u8]>,
    t: Table,
    ns: &str,
    key: &str,
) -> Result<Option<T>, DbError> {
    match tbl.get((ns, key))? {
        Some(v) => decode(t, ns, key, v.value()).map(Some),
        None => Ok(None),
    }
}

fn list_in<T: DeserializeOwned>(
    tbl: &impl ReadableTable<(&'static str, &'static str), &'static [u8]>,
    t: Table,
    ns: &str,
) -> Result<Vec<(String, T)>, DbError> {
    let mut out = Vec::new();
    for item in tbl.range((ns, "")..)? {
        let (k, v) = item?;
        let (kns, key) = k.value();
        if kns != ns {
            break;
        }
        out.push((key.to_string(), decode(t, ns, key, v.value())?));
    }
    Ok(out)
}

fn namespaces_in(
    tbl: &impl ReadableTable<(&'static str, &'static str), &'static [u8]>,
) -> Result<Vec<String>, DbError> {
    let mut out: Vec<String> = Vec::new();
    for item in tbl.iter()? {
        let (k, _) = item?;
        let ns = k.value().0;
        if out.last().map(String::as_str) != Some(ns) {
            out.push(ns.to_string());
        }
    }
    Ok(out)
}

impl ReadTxn {
    fn open(&self, t: Table) -> Result<Option<RoTable>, DbError> {
        match self.tx.open_table(t) {
            Ok(tbl) => Ok(Some(tbl)),
            // A table that was never written to is simply empty.
            Err(redb::TableError::TableDoesNotExist(_)) => Ok(None),
            Err(e) => Err(e.into()),
        }
    }

    /// Reads one record.
    pub fn get<T: DeserializeOwned>(
        &self,
        t: Table,
        ns: &str,
        key: &str,
    ) -> Result<Option<T>, DbError> {
        match self.open(t)? {
            Some(tbl) => get_in(&tbl, t, ns, key),
            None => Ok(None),
        }
    }

    /// Lists the records of one namespace in key order.
    pub fn list<T: DeserializeOwned>(
        &self,
        t: Table,
        ns: &str,
    ) -> Result<Vec<(String, T)>, DbError> {
        match self.open(t)? {
            Some(tbl) => list_in(&tbl, t, ns),
            None => Ok(Vec::new()),
        }
    }

    /// The namespaces that have at least one record in `t`.
    pub fn namespaces(&self, t: Table) -> Result<Vec<String>, DbError> {
        match self.open(t)? {
            Some(tbl) => namespaces_in(&tbl),
            None => Ok(Vec::new()),
        }
    }
}

impl WriteTxn {
    /// The underlying redb transaction, to open tables of a custom layout.
    pub fn raw(&self) -> &redb::WriteTransaction {
        &self.tx
    }

    /// Reads one record (seeing this transaction's own writes).
    pub fn get<T: DeserializeOwned>(
        &self,
        t: Table,
        ns: &str,
        key: &str,
    ) -> Result<Option<T>, DbError> {
        get_in(&self.tx.open_table(t)?, t, ns, key)
    }

    /// Lists the records of one namespace in key order.
    pub fn list<T: DeserializeOwned>(
        &self,
        t: Table,
        ns: &str,
    ) -> Result<Vec<(String, T)>, DbError> {
        list_in(&self.tx.open_table(t)?, t, ns)
    }

    /// The namespaces that have at least one record in `t`.
    pub fn namespaces(&self, t: Table) -> Result<Vec<String>, DbError> {
        namespaces_in(&self.tx.open_table(t)?)
    }

    /// Inserts or replaces one record.
    pub fn put<T: Serialize>(
        &mut self,
        t: Table,
        ns: &str,
        key: &str,
        value: &T,
    ) -> Result<(), DbError> {
        let raw = serde_json::to_vec(value).map_err(|source| DbError::Encode {
            table: t.to_string(),
            key: format!("{ns}/{key}"),
            source,
        })?;
        self.tx.open_table(t)?.insert((ns, key), raw.as_slice())?;
        Ok(())
    }

    /// Removes one record; returns whether it existed.
    pub fn delete(&mut self, t: Table, ns: &str, key: &str) -> Result<bool, DbError> {
        Ok(self.tx.open_table(t)?.remove((ns, key))?.is_some())
    }

    /// Returns the next value of the named counter (starting at 1).
    pub fn next_id(&mut self, counter: &str) -> Result<u64, DbError> {
        let next = self.get::<u64>(COUNTERS, "", counter)?.unwrap_or(0) + 1;
        self.put(COUNTERS, "", counter, &next)?;
        Ok(next)
    }
}

/// Publishes storage events (`/images/create`, `/snapshot/commit`, ...) on highd's event
/// exchange, when the server gave one.
#[derive(Clone, Default)]
pub struct Publisher(Option<crate::events::Exchange>);

impl std::fmt::Debug for Publisher {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_tuple("Publisher").field(&self.0.is_some()).finish()
    }
}

impl Publisher {
    pub fn new(exchange: crate::events::Exchange) -> Publisher {
        Publisher(Some(exchange))
    }

    pub fn emit(&self, ns: &str, event: impl Into<berth_proto::any::Event>) {
        if let Some(x) = &self.0 {
            let e = event.into();
            x.emit(ns, e.topic(), e.to_any());
        }
    }
}

/// Runs blocking storage work (DB commits, file I/O) off the async runtime.
pub async fn blocking<T: Send + 'static>(
    f: impl FnOnce() -> Result<T, StoreError> + Send + 'static,
) -> Result<T, StoreError> {
    tokio::task::spawn_blocking(f).await?
}

/// A protobuf timestamp of `t`.
pub fn timestamp(t: chrono::DateTime<chrono::Utc>) -> prost_types::Timestamp {
    prost_types::Timestamp {
        seconds: t.timestamp(),
        nanos: i32::try_from(t.timestamp_subsec_nanos()).unwrap_or(0),
    }
}

/// A time from an optional protobuf timestamp (unset or invalid: now).
pub fn from_timestamp(t: Option<&prost_types::Timestamp>) -> chrono::DateTime<chrono::Utc> {
    t.and_then(|t| chrono::DateTime::from_timestamp(t.seconds, u32::try_from(t.nanos).ok()?))
        .unwrap_or_else(chrono::Utc::now)
}

/// The paths of an optional field mask.
pub fn mask_paths(mask: Option<prost_types::FieldMask>) -> Vec<String> {
    mask.map(|m| m.paths).unwrap_or_default()
}

#[cfg(test)]
mod tests;
