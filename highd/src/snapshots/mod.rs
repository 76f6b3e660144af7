//! The "overlayfs" snapshotter, with containerd's semantics.
//!
//! A snapshot is a DB record `(namespace, key) → {id, kind, parent, labels}` in the
//! `snapshots/overlayfs` table plus the directory `<root>/snapshots/overlayfs/<id>/{fs,work}`.
//! Keys (active and committed alike) are unique per namespace; committed snapshots are the
//! only valid parents; a snapshot with children cannot be removed.
//!
//! Crash safety: the directory is created before the record that names it, and the record is
//! deleted before the directory (which is first renamed to `trash-<id>`), so a record always
//! has its directory; [`Snapshotter::cleanup`] (run at start) removes directories without a
//! record.
//!
//! Where overlayfs cannot be mounted (probed once at start) the same records drive a copying
//! snapshotter: a new snapshot starts as a full copy of its parent and is used as a bind mount.

mod copy;
mod mounts;
mod service;

pub(crate) use copy::{chmod, disk_usage, lchown, make_node, set_times};
pub use mounts::Mount;
pub use service::SnapshotsService;

use std::collections::BTreeMap;
use std::path::{Path, PathBuf};

use chrono::{DateTime, Utc};
use serde::{Deserialize, Serialize};

use crate::content::update_labels;
use crate::db::filter::{self, Filter};
use crate::db::{Db, StoreError, WriteTxn, SNAPSHOTS};

/// Snapshotter-wide settings (namespace "", key "mode": which flavour made the snapshots).
const META: crate::db::Table = crate::db::table("snapshotter");

/// The snapshotter name clients use.
pub const SNAPSHOTTER: &str = "overlayfs";

/// How snapshots are materialized.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Mode {
    /// Real overlayfs; `index_off` adds containerd's `index=off` option.
    Overlay { index_off: bool },
    /// Full copies and bind mounts.
    Copy,
}

/// containerd's snapshot kinds (wire values VIEW=1, ACTIVE=2, COMMITTED=3).
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum Kind {
    View,
    Active,
    Committed,
}

impl Kind {
    pub fn as_str(self) -> &'static str {
        match self {
            Kind::View => "view",
            Kind::Active => "active",
            Kind::Committed => "committed",
        }
    }
}

/// The DB record of one snapshot.
#[derive(Debug, Clone, Serialize, Deserialize)]
pub struct SnapshotRecord {
    pub id: u64,
    pub kind: Kind,
    #[serde(default)]
    pub parent: String,
    #[serde(default)]
    pub labels: BTreeMap<String, String>,
    pub created_at: DateTime<Utc>,
    pub updated_at: DateTime<Utc>,
    /// Usage measured at commit (committed snapshots never change).
    #[serde(default)]
    pub size: i64,
    #[serde(default)]
    pub inodes: i64,
}

/// containerd's `snapshots.Info`.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Info {
    pub name: String,
    pub parent: String,
    pub kind: Kind,
    pub labels: BTreeMap<String, String>,
    pub created_at: DateTime<Utc>,
    pub updated_at: DateTime<Utc>,
}

impl Info {
    fn new(name: String, r: SnapshotRecord) -> Info {
        Info {
            name,
            parent: r.parent,
            kind: r.kind,
            labels: r.labels,
            created_at: r.created_at,
            updated_at: r.updated_at,
        }
    }
}

impl filter::Adaptor for Info {
    fn field(&self, path: &[String]) -> Option<String> {
        match path.first().map(String::as_str) {
            Some("name") => Some(self.name.clone()),
            Some("parent") => Some(self.parent.clone()),
            Some("kind") => Some(self.kind.as_str().to_string()),
            _ => filter::label(&self.labels, path),
        }
    }
}

/// containerd's `snapshots.Usage`.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Usage {
    pub size: i64,
    pub inodes: i64,
}

/// Handle to the snapshotter (cheap to clone).
#[derive(Debug, Clone)]
pub struct Snapshotter {
    root: PathBuf,
    db: Db,
    mode: Mode,
}

fn not_found(key: &str) -> StoreError {
    StoreError::not_found("snapshot", key)
}

impl Snapshotter {
    /// Opens the snapshotter under `<root>/snapshots/overlayfs`, probing overlayfs when
    /// `mode` is None, and removes leftovers of interrupted operations.
    pub fn open(root: &Path, db: Db, mode: Option<Mode>) -> Result<Snapshotter, StoreError> {
        let root = root.join("snapshots").join(SNAPSHOTTER);
        std::fs::create_dir_all(&root).map_err(StoreError::io("create directory", &root))?;
        let mode = match mode {
            Some(m) => m,
            None => Self::pick_mode(&db, &root)?,
        };
        db.update(|tx| tx.put(META, "", "mode", &Self::mode_name(mode)))?;
        tracing::info!(?mode, root = %root.display(), "snapshotter ready");
        let s = Snapshotter { root, db, mode };
        s.cleanup()?;
        Ok(s)
    }

    fn mode_name(mode: Mode) -> &'static str {
        match mode {
            Mode::Overlay { .. } => "overlay",
            Mode::Copy => "copy",
        }
    }

    /// Probes overlayfs, but keeps existing snapshots usable: their directories only make
    /// sense with the flavour that made them.
    fn pick_mode(db: &Db, root: &Path) -> Result<Mode, StoreError> {
        let probed = mounts::probe(root);
        let made_with: Option<String> = db.get(META, "", "mode")?;
        let any = db
            .view(|tx| tx.namespaces(SNAPSHOTS))?
            .into_iter()
            .next()
            .is_some();
        match (made_with.as_deref(), probed) {
            (Some("overlay"), Mode::Copy) if any => Err(StoreError::OverlayUnavailable {
                root: root.to_path_buf(),
            }),
            (Some("copy"), Mode::Overlay { .. }) if any => {
                tracing::info!("overlayfs works now, but existing snapshots are copies");
                Ok(Mode::Copy)
            }
            _ => Ok(probed),
        }
    }

    pub fn db(&self) -> &Db {
        &self.db
    }

    pub fn mode(&self) -> Mode {
        self.mode
    }

    /// Directory of a snapshot's files (the overlay upper dir).
    pub fn fs_path(&self, id: u64) -> PathBuf {
        mounts::fs_dir(&self.root, id)
    }

    /// Ids of the chain of parents of a snapshot, nearest first.
    fn parent_ids<'a>(
        records: &'a BTreeMap<String, SnapshotRecord>,
        mut parent: &'a str,
    ) -> Result<Vec<u64>, StoreError> {
        let mut ids = Vec::new();
        while !parent.is_empty() {
            let r = records
                .get(parent)
                .ok_or_else(|| StoreError::not_found("parent snapshot", parent))?;
            ids.push(r.id);
            parent = &r.parent;
        }
        Ok(ids)
    }

    /// containerd's Prepare: a new active (writable) snapshot on top of `parent`.
    pub fn prepare(
        &self,
        ns: &str,
        key: &str,
        parent: &str,
        labels: BTreeMap<String, String>,
    ) -> Result<Vec<Mount>, StoreError> {
        self.create(ns, Kind::Active, key, parent, labels, None)
    }

    /// [`Snapshotter::prepare`], adding the snapshot to `lease` in the same commit.
    pub fn prepare_leased(
        &self,
        ns: &str,
        key: &str,
        parent: &str,
        labels: BTreeMap<String, String>,
        lease: Option<&str>,
    ) -> Result<Vec<Mount>, StoreError> {
        self.create(ns, Kind::Active, key, parent, labels, lease)
    }

    /// containerd's View: a new read-only snapshot of `parent`.
    pub fn view(
        &self,
        ns: &str,
        key: &str,
        parent: &str,
        labels: BTreeMap<String, String>,
    ) -> Result<Vec<Mount>, StoreError> {
        self.create(ns, Kind::View, key, parent, labels, None)
    }

    /// [`Snapshotter::view`], adding the snapshot to `lease` in the same commit.
    pub fn view_leased(
        &self,
        ns: &str,
        key: &str,
        parent: &str,
        labels: BTreeMap<String, String>,
        lease: Option<&str>,
    ) -> Result<Vec<Mount>, StoreError> {
        self.create(ns, Kind::View, key, parent, labels, lease)
    }

    fn check_new(tx: &WriteTxn, ns: &str, key: &str, parent: &str) -> Result<(), StoreError> {
        if tx.get::<SnapshotRecord>(SNAPSHOTS, ns, key)?.is_some() {
            return Err(StoreError::exists("snapshot", key));
        }
        if !parent.is_empty() {
            let p: SnapshotRecord = tx
                .get(SNAPSHOTS, ns, parent)?
                .ok_or_else(|| StoreError::not_found("parent snapshot", parent))?;
            if p.kind != Kind::Committed {
                return Err(StoreError::ParentNotCommitted {
                    parent: parent.to_string(),
                });
            }
        }
        Ok(())
    }

    fn create(
        &self,
        ns: &str,
        kind: Kind,
        key: &str,
        parent: &str,
        labels: BTreeMap<String, String>,
        lease: Option<&str>,
    ) -> Result<Vec<Mount>, StoreError> {
        if key.is_empty() {
            return Err(StoreError::invalid(
                "snapshot key",
                key,
                "must not be empty",
            ));
        }
        // Validate and reserve an id first, so a bad request leaves no directory behind.
        // Not flushed: the record's commit below flushes it too, and if highd dies before
        // that, the start-up clean-up removes the directory no record names.
        let id = self.db.update_nondurable(|tx| {
            Self::check_new(tx, ns, key, parent)?;
            Ok::<_, StoreError>(tx.next_id("snapshot-ids")?)
        })?;
        let dir = self.root.join(id.to_string());
        let made = self.make_dir(ns, &dir, id, parent).and_then(|()| {
            let now = Utc::now();
            let rec = SnapshotRecord {
                id,
                kind,
                parent: parent.to_string(),
                labels,
                created_at: now,
                updated_at: now,
                size: 0,
                inodes: 0,
            };
            self.db.update(|tx| {
                // Re-checked: the parent may have gone while the directory was made.
                Self::check_new(tx, ns, key, parent)?;
                crate::namespaces::ensure(tx, ns)?;
                tx.put(SNAPSHOTS, ns, key, &rec)?;
                if let Some(lease) = lease {
                    let res = crate::leases::Resource {
                        id: key.to_string(),
                        kind: format!("snapshots/{SNAPSHOTTER}"),
                    };
                    crate::leases::change_resource_in(tx, ns, lease, res, true)?;
                }
                Ok(())
            })
        });
        if let Err(e) = made {
            if let Err(rm) = std::fs::remove_dir_all(&dir) {
                tracing::warn!(dir = %dir.display(), error = %rm, "cannot remove snapshot dir");
            }
            return Err(e);
        }
        self.mounts(ns, key)
    }

    fn make_dir(&self, ns: &str, dir: &Path, id: u64, parent: &str) -> Result<(), StoreError> {
        let fs = dir.join("fs");
        std::fs::create_dir_all(&fs).map_err(StoreError::io("create directory", &fs))?;
        // The root of a container's filesystem is 0755 whatever our umask is.
        chmod(&fs, 0o755)?;
        match self.mode {
            Mode::Overlay { .. } => {
                let work = dir.join("work");
                std::fs::create_dir_all(&work).map_err(StoreError::io("create directory", &work))
            }
            Mode::Copy if !parent.is_empty() => {
                let p: SnapshotRecord = self
                    .db
                    .get(SNAPSHOTS, ns, parent)?
                    .ok_or_else(|| StoreError::not_found("parent snapshot", parent))?;
                tracing::debug!(id, parent, "copying parent snapshot");
                copy::copy_tree(&self.fs_path(p.id), &fs)
            }
            Mode::Copy => Ok(()),
        }
    }

    /// The mounts of an existing snapshot.
    pub fn mounts(&self, ns: &str, key: &str) -> Result<Vec<Mount>, StoreError> {
        let records: BTreeMap<String, SnapshotRecord> =
            self.db.list(SNAPSHOTS, ns)?.into_iter().collect();
        let r = records.get(key).ok_or_else(|| not_found(key))?;
        let parents = Self::parent_ids(&records, &r.parent)?;
        Ok(mounts::mounts_for(
            &self.root, &self.mode, r.kind, r.id, &parents,
        ))
    }

    /// containerd's Commit: turns active snapshot `key` into committed snapshot `name`.
    pub fn commit(
        &self,
        ns: &str,
        name: &str,
        key: &str,
        labels: BTreeMap<String, String>,
    ) -> Result<(), StoreError> {
        if name.is_empty() {
            return Err(StoreError::invalid(
                "snapshot name",
                name,
                "must not be empty",
            ));
        }
        let r: SnapshotRecord = self
            .db
            .get(SNAPSHOTS, ns, key)?
            .ok_or_else(|| not_found(key))?;
        if r.kind != Kind::Active {
            return Err(StoreError::SnapshotNotActive {
                key: key.to_string(),
            });
        }
        let (size, inodes) = disk_usage(&self.fs_path(r.id))?;
        self.db.update(|tx| {
            let cur: SnapshotRecord = tx.get(SNAPSHOTS, ns, key)?.ok_or_else(|| not_found(key))?;
            if cur.kind != Kind::Active || cur.id != r.id {
                return Err(StoreError::SnapshotNotActive {
                    key: key.to_string(),
                });
            }
            if tx.get::<SnapshotRecord>(SNAPSHOTS, ns, name)?.is_some() {
                return Err(StoreError::exists("snapshot", name));
            }
            let now = Utc::now();
            let rec = SnapshotRecord {
                kind: Kind::Committed,
                labels,
                created_at: now,
                updated_at: now,
                size,
                inodes,
                ..cur
            };
            tx.delete(SNAPSHOTS, ns, key)?;
            tx.put(SNAPSHOTS, ns, name, &rec)?;
            Ok(())
        })
    }

    /// containerd's Remove; fails with FailedPrecondition while the snapshot has children.
    pub fn remove(&self, ns: &str, key: &str) -> Result<(), StoreError> {
        let id = self.db.update(|tx| {
            let r: SnapshotRecord = tx.get(SNAPSHOTS, ns, key)?.ok_or_else(|| not_found(key))?;
            let children = tx.list::<SnapshotRecord>(SNAPSHOTS, ns)?;
            if children.iter().any(|(_, c)| c.parent == key) {
                return Err(StoreError::SnapshotHasChildren {
                    key: key.to_string(),
                });
            }
            tx.delete(SNAPSHOTS, ns, key)?;
            Ok(r.id)
        })?;
        self.remove_dir(id)
    }

    fn remove_dir(&self, id: u64) -> Result<(), StoreError> {
        let dir = self.root.join(id.to_string());
        let trash = self.root.join(format!("trash-{id}"));
        match std::fs::rename(&dir, &trash) {
            Ok(()) => {}
            Err(e) if e.kind() == std::io::ErrorKind::NotFound => return Ok(()),
            Err(e) => return Err(StoreError::io("move to trash", &dir)(e)),
        }
        // The rename is the removal (the record is gone, the directory no longer has a
        // snapshot's name, the start-up clean-up finishes a trash dir). Deleting a
        // container's tree can take tens of ms, so off the caller's path when a runtime
        // can take it.
        match tokio::runtime::Handle::try_current() {
            Ok(rt) => {
                rt.spawn_blocking(move || {
                    if let Err(e) = std::fs::remove_dir_all(&trash) {
                        tracing::warn!(dir = %trash.display(), error = %e, "cannot remove snapshot trash");
                    }
                });
                Ok(())
            }
            Err(_) => std::fs::remove_dir_all(&trash).map_err(StoreError::io("remove", &trash)),
        }
    }

    pub fn stat(&self, ns: &str, key: &str) -> Result<Info, StoreError> {
        let r: SnapshotRecord = self
            .db
            .get(SNAPSHOTS, ns, key)?
            .ok_or_else(|| not_found(key))?;
        Ok(Info::new(key.to_string(), r))
    }

    /// containerd's Update: only labels may change.
    pub fn update(&self, ns: &str, info: &Info, paths: &[String]) -> Result<Info, StoreError> {
        self.db.update(|tx| {
            let mut r: SnapshotRecord = tx
                .get(SNAPSHOTS, ns, &info.name)?
                .ok_or_else(|| not_found(&info.name))?;
            update_labels(&mut r.labels, &info.labels, paths, &[])?;
            r.updated_at = Utc::now();
            tx.put(SNAPSHOTS, ns, &info.name, &r)?;
            Ok(Info::new(info.name.clone(), r))
        })
    }

    pub fn list(&self, ns: &str, filter: &Filter) -> Result<Vec<Info>, StoreError> {
        Ok(self
            .db
            .list::<SnapshotRecord>(SNAPSHOTS, ns)?
            .into_iter()
            .map(|(k, r)| Info::new(k, r))
            .filter(|i| filter.matches(i))
            .collect())
    }

    /// Disk usage of the snapshot's own layer.
    pub fn usage(&self, ns: &str, key: &str) -> Result<Usage, StoreError> {
        let r: SnapshotRecord = self
            .db
            .get(SNAPSHOTS, ns, key)?
            .ok_or_else(|| not_found(key))?;
        // As containerd: only active snapshots are measured live; views own nothing.
        if r.kind != Kind::Active {
            return Ok(Usage {
                size: r.size,
                inodes: r.inodes,
            });
        }
        let (size, inodes) = disk_usage(&self.fs_path(r.id))?;
        Ok(Usage { size, inodes })
    }

    /// The record of a snapshot (for diff and GC).
    pub fn record(&self, ns: &str, key: &str) -> Result<SnapshotRecord, StoreError> {
        self.db
            .get(SNAPSHOTS, ns, key)?
            .ok_or_else(|| not_found(key))
    }

    /// Removes directories no record names: trash of interrupted removals, dirs of
    /// interrupted creates, probe leftovers.
    pub fn cleanup(&self) -> Result<(), StoreError> {
        let live = self.db.view(|tx| -> Result<Vec<u64>, StoreError> {
            let mut ids = Vec::new();
            for ns in tx.namespaces(SNAPSHOTS)? {
                ids.extend(
                    tx.list::<SnapshotRecord>(SNAPSHOTS, &ns)?
                        .into_iter()
                        .map(|(_, r)| r.id),
                );
            }
            Ok(ids)
        })?;
        for e in
            std::fs::read_dir(&self.root).map_err(StoreError::io("read directory", &self.root))?
        {
            let e = e.map_err(StoreError::io("read directory", &self.root))?;
            let name = e.file_name().to_string_lossy().into_owned();
            let keep = name.parse::<u64>().is_ok_and(|id| live.contains(&id));
            if !keep {
                tracing::info!(dir = %e.path().display(), "removing orphan snapshot dir");
                std::fs::remove_dir_all(e.path()).map_err(StoreError::io("remove", e.path()))?;
            }
        }
        Ok(())
    }
}

#[cfg(test)]
mod tests;
