//! Container records on disk (`<data-root>/containers/<id>/config.v2.json`, written
//! atomically) with the in-memory name and ID index used to resolve references.

use std::collections::HashMap;
use std::path::{Path, PathBuf};
use std::sync::Mutex;

use crate::record::{ContainerRecord, RECORD_VERSION};

/// Independent write locks (see `Store::writes`): enough that 8 parallel creates rarely
/// share one.
const WRITE_SHARDS: usize = 32;

#[derive(Debug, thiserror::Error)]
pub enum StoreError {
    #[error("read {path}: {source}")]
    Read {
        path: PathBuf,
        source: std::io::Error,
    },
    #[error("write {path}: {source}")]
    Write {
        path: PathBuf,
        source: std::io::Error,
    },
    #[error("decode {path}: {source}")]
    Decode {
        path: PathBuf,
        source: serde_json::Error,
    },
    #[error("container record {path} has version {found}, this engine reads {RECORD_VERSION}")]
    Version { path: PathBuf, found: u32 },
    #[error("no container record for {id}")]
    Missing { id: String },
}

// Durable writes are shared with highd and the shim (crash-safety rules in DESIGN.md).
pub use berth_fsutil::{create_dir_durable, write_atomic};

/// How a user's container reference resolved.
#[derive(Debug)]
pub enum Resolved {
    Found(Box<ContainerRecord>),
    Ambiguous,
    Missing,
}

#[derive(Default)]
struct Index {
    records: HashMap<String, ContainerRecord>,
    /// name without slash → id
    names: HashMap<String, String>,
}

pub struct Store {
    root: PathBuf,
    index: Mutex<Index>,
    /// Serializes file writes and removals of a record (never held by readers), so a slow
    /// fsync does not stall `ps` or `inspect`, and a write never resurrects a removed
    /// record. Sharded by ID: writes of different containers run side by side, and the
    /// filesystem commits their fsyncs together (parallel `docker run`s).
    writes: [Mutex<()>; WRITE_SHARDS],
}

impl Store {
    /// Loads every record under `<root>/containers`. Directories without a readable record
    /// (a crash between mkdir and the first write) are removed: nothing was acknowledged.
    pub fn open(root: &Path) -> Result<Self, StoreError> {
        let dir = root.join("containers");
        create_dir_durable(&dir).map_err(|source| StoreError::Write {
            path: dir.clone(),
            source,
        })?;
        let mut index = Index::default();
        let entries = std::fs::read_dir(&dir).map_err(|source| StoreError::Read {
            path: dir.clone(),
            source,
        })?;
        for entry in entries.flatten() {
            let path = entry.path().join("config.v2.json");
            match std::fs::read(&path) {
                Ok(data) => {
                    let rec: ContainerRecord =
                        serde_json::from_slice(&data).map_err(|source| StoreError::Decode {
                            path: path.clone(),
                            source,
                        })?;
                    if rec.record_version != RECORD_VERSION {
                        return Err(StoreError::Version {
                            path,
                            found: rec.record_version,
                        });
                    }
                    index
                        .names
                        .insert(rec.name.trim_start_matches('/').into(), rec.id.clone());
                    index.records.insert(rec.id.clone(), rec);
                }
                Err(e) if e.kind() == std::io::ErrorKind::NotFound => {
                    tracing::warn!(dir = %entry.path().display(), "removing container directory without a record");
                    let _ = std::fs::remove_dir_all(entry.path());
                }
                Err(source) => return Err(StoreError::Read { path, source }),
            }
        }
        Ok(Self {
            root: root.to_path_buf(),
            index: Mutex::new(index),
            writes: std::array::from_fn(|_| Mutex::new(())),
        })
    }

    pub fn container_dir(&self, id: &str) -> PathBuf {
        self.root.join("containers").join(id)
    }

    fn lock(&self) -> std::sync::MutexGuard<'_, Index> {
        // A panic while holding the lock leaves the index as consistent as the last
        // completed operation, so keep serving.
        self.index.lock().unwrap_or_else(|e| e.into_inner())
    }

    /// Reserves `name` for `id`; returns the holder's ID on conflict.
    pub fn reserve_name(&self, name: &str, id: &str) -> Result<(), String> {
        let mut idx = self.lock();
        if let Some(holder) = idx.names.get(name) {
            return Err(holder.clone());
        }
        idx.names.insert(name.into(), id.into());
        Ok(())
    }

    /// True while a create holds a name for `id` (its record may not be written yet).
    pub fn is_reserved(&self, id: &str) -> bool {
        self.lock().names.values().any(|v| v == id)
    }

    pub fn release_name(&self, name: &str, id: &str) {
        let mut idx = self.lock();
        if idx.names.get(name).is_some_and(|h| h == id) {
            idx.names.remove(name);
        }
    }

    /// Writes the record; true when this call created the record's directory (and so
    /// already fsynced `containers/`).
    fn persist(&self, rec: &ContainerRecord) -> Result<bool, StoreError> {
        let dir = self.container_dir(&rec.id);
        let path = dir.join("config.v2.json");
        let write_err = |source| StoreError::Write {
            path: path.clone(),
            source,
        };
        let created = !create_dir_durable(&dir).map_err(write_err)?.is_empty();
        // Serializing our own types cannot fail.
        let data = serde_json::to_vec_pretty(rec).unwrap_or_default();
        write_atomic(&path, &data).map_err(write_err)?;
        Ok(created)
    }

    /// Makes the `containers/<id>` entry itself durable. Needed once per container, on
    /// its first record write: create writes /etc files into the directory before the
    /// record, so `persist` may find the directory already there, created by a plain
    /// mkdir whose entry in `containers/` nobody fsynced.
    fn sync_containers_dir(&self) -> Result<(), StoreError> {
        let dir = self.root.join("containers");
        std::fs::File::open(&dir)
            .and_then(|d| d.sync_all())
            .map_err(|source| StoreError::Write { path: dir, source })
    }

    fn write_guard(&self, id: &str) -> std::sync::MutexGuard<'_, ()> {
        let shard = id.bytes().fold(0usize, |h, b| {
            h.wrapping_mul(31).wrapping_add(usize::from(b))
        });
        self.writes[shard % WRITE_SHARDS]
            .lock()
            .unwrap_or_else(|e| e.into_inner())
    }

    /// Persists a new record, then indexes it (its name must be reserved).
    pub fn insert(&self, rec: ContainerRecord) -> Result<(), StoreError> {
        let _w = self.write_guard(&rec.id);
        if !self.persist(&rec)? {
            self.sync_containers_dir()?;
        }
        self.lock().records.insert(rec.id.clone(), rec);
        Ok(())
    }

    /// Applies `f` to the in-memory record only; [`Store::sync`] makes it durable. For
    /// changes that others may see before they are on disk because a crash in between is
    /// repaired from highd (an exit: the task is deleted only after the sync).
    pub fn update_in_memory(
        &self,
        id: &str,
        f: impl FnOnce(&mut ContainerRecord),
    ) -> Result<ContainerRecord, StoreError> {
        let mut idx = self.lock();
        let rec = idx
            .records
            .get_mut(id)
            .ok_or_else(|| StoreError::Missing { id: id.into() })?;
        f(rec);
        Ok(rec.clone())
    }

    /// Writes the current in-memory record atomically. Always the latest version, so
    /// concurrent syncs cannot leave an older one on disk. A removed record stays removed.
    pub fn sync(&self, id: &str) -> Result<(), StoreError> {
        let _w = self.write_guard(id);
        match self.get(id) {
            Some(rec) => self.persist(&rec).map(drop),
            None => Ok(()),
        }
    }

    /// Applies `f` and makes it durable before returning.
    pub fn update(
        &self,
        id: &str,
        f: impl FnOnce(&mut ContainerRecord),
    ) -> Result<ContainerRecord, StoreError> {
        let rec = self.update_in_memory(id, f)?;
        self.sync(id)?;
        Ok(rec)
    }

    /// Removes the record and everything in its directory (logs, hosts, ...).
    pub fn remove(&self, id: &str) -> Result<(), StoreError> {
        let dir = self.container_dir(id);
        let _w = self.write_guard(id);
        let mut idx = self.lock();
        match std::fs::remove_dir_all(&dir) {
            Ok(()) => {}
            Err(e) if e.kind() == std::io::ErrorKind::NotFound => {}
            Err(source) => return Err(StoreError::Write { path: dir, source }),
        }
        if let Some(rec) = idx.records.remove(id) {
            let name = rec.name.trim_start_matches('/');
            if idx.names.get(name).is_some_and(|h| h == id) {
                idx.names.remove(name);
            }
        }
        Ok(())
    }

    pub fn get(&self, id: &str) -> Option<ContainerRecord> {
        self.lock().records.get(id).cloned()
    }

    pub fn list(&self) -> Vec<ContainerRecord> {
        self.lock().records.values().cloned().collect()
    }

    /// dockerd's order: full ID, then name, then a unique ID prefix.
    pub fn resolve(&self, reference: &str) -> Resolved {
        let idx = self.lock();
        if reference.is_empty() {
            return Resolved::Missing;
        }
        if let Some(r) = idx.records.get(reference) {
            return Resolved::Found(Box::new(r.clone()));
        }
        let name = reference.strip_prefix('/').unwrap_or(reference);
        if let Some(r) = idx.names.get(name).and_then(|id| idx.records.get(id)) {
            return Resolved::Found(Box::new(r.clone()));
        }
        let mut matches = idx.records.values().filter(|r| r.id.starts_with(reference));
        match (matches.next(), matches.next()) {
            (Some(r), None) => Resolved::Found(Box::new(r.clone())),
            (Some(_), Some(_)) => Resolved::Ambiguous,
            _ => Resolved::Missing,
        }
    }
}

#[cfg(test)]
#[path = "store_tests.rs"]
pub(crate) mod tests;
