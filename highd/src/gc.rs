//! Garbage collection of content and snapshots, run on demand (after image, lease and
//! content deletes).
//!
//! Per namespace, everything reachable from a root is kept: roots are image targets, lease
//! resources, objects labelled `containerd.io/gc.root`, the snapshots of containers (through
//! [`ContainerRefs`]) and, for clients that take no leases, anything younger than the grace
//! period.
//! From content, references are followed through containerd's `containerd.io/gc.ref.content*`
//! and `containerd.io/gc.ref.snapshot.overlayfs` labels and, for manifests, indexes and image
//! configs, through the JSON itself (a config's layer chain IDs name the committed snapshots
//! an unpack creates). Snapshots keep their parents. Unmarked content records and snapshots
//! are deleted (children first), then blobs no namespace records.

mod storage;

pub use storage::Storage;

use std::collections::{BTreeMap, BTreeSet};
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::{Arc, Mutex, RwLock};

use chrono::Utc;
use sha2::{Digest, Sha256};

use crate::content::{ContentRecord, ContentStore};
use crate::db::{Db, DbError, StoreError, CONTENT, IMAGES, LEASES, SNAPSHOTS};
use crate::images::ImageRecord;
use crate::leases::{LeaseRecord, EXPIRE_LABEL};
use crate::snapshots::{SnapshotRecord, Snapshotter, SNAPSHOTTER};

const ROOT_LABEL: &str = "containerd.io/gc.root";
const REF_CONTENT: &str = "containerd.io/gc.ref.content";
const REF_SNAPSHOT: &str = "containerd.io/gc.ref.snapshot.";
/// JSON documents larger than this are not parsed for references.
const MAX_JSON: u64 = 4 << 20;
/// Unreferenced content and snapshots younger than this are kept (and collected by a later
/// run): a client that takes no lease writes an image's blobs before the image record that
/// references them, or prepares a snapshot before the container that uses it, and a
/// collection in between must not eat them.
pub const DEFAULT_GRACE: std::time::Duration = std::time::Duration::from_secs(600);

/// Supplied by the containers service: the snapshots its containers use.
pub trait ContainerRefs: Send + Sync {
    /// `(snapshotter, key)` of every container of `ns`.
    fn snapshot_refs(&self, ns: &str) -> Result<Vec<(String, String)>, DbError>;
}

/// How long an abandoned write stays resumable: containerd's clients (ctr) lease their
/// work for 24 hours, after which containerd collects it too.
pub const INGEST_EXPIRY: std::time::Duration = std::time::Duration::from_secs(24 * 60 * 60);

/// What one collection removed.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct GcReport {
    pub content: usize,
    pub snapshots: usize,
    pub blobs: usize,
    pub leases: usize,
    /// Ingests untouched for [`INGEST_EXPIRY`].
    pub ingests: usize,
    /// Unreferenced objects kept because they are younger than the grace period.
    pub deferred: usize,
}

/// The collector (one per daemon, shared by the services).
pub struct Gc {
    db: Db,
    content: ContentStore,
    snapshots: Snapshotter,
    containers: RwLock<Option<Arc<dyn ContainerRefs>>>,
    running: Mutex<()>,
    grace: std::time::Duration,
    rerun_scheduled: AtomicBool,
}

impl std::fmt::Debug for Gc {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Gc").finish_non_exhaustive()
    }
}

/// containerd's ChainID of a layer stack from its diff IDs.
pub fn chain_ids(diff_ids: &[String]) -> Vec<String> {
    let mut out: Vec<String> = Vec::with_capacity(diff_ids.len());
    for d in diff_ids {
        let next = match out.last() {
            None => d.clone(),
            Some(prev) => format!(
                "sha256:{}",
                hex::encode(Sha256::digest(format!("{prev} {d}")))
            ),
        };
        out.push(next);
    }
    out
}

#[derive(Default)]
struct Marks {
    content: BTreeSet<String>,
    snapshots: BTreeSet<String>,
    todo: Vec<String>,
}

impl Gc {
    pub fn new(db: Db, content: ContentStore, snapshots: Snapshotter) -> Gc {
        Gc {
            db,
            content,
            snapshots,
            containers: RwLock::new(None),
            running: Mutex::new(()),
            grace: DEFAULT_GRACE,
            rerun_scheduled: AtomicBool::new(false),
        }
    }

    /// Sets the grace period of young unreferenced objects (tests use zero).
    pub fn with_grace(mut self, grace: std::time::Duration) -> Gc {
        self.grace = grace;
        self
    }

    /// Installs the containers service's hook.
    pub fn set_container_refs(&self, refs: Arc<dyn ContainerRefs>) {
        *self.containers.write().unwrap_or_else(|p| p.into_inner()) = Some(refs);
    }

    /// Runs a collection after a delete: waits for it when `sync`, else in the background.
    pub async fn after_delete(self: &Arc<Self>, sync: bool) -> Result<(), StoreError> {
        let gc = self.clone();
        let run = tokio::task::spawn_blocking(move || gc.collect());
        if sync {
            let report = run.await??;
            self.schedule_rerun(&report);
        } else {
            let gc = self.clone();
            tokio::spawn(async move {
                match run.await {
                    Ok(Ok(r)) => gc.schedule_rerun(&r),
                    Ok(Err(e)) => tracing::warn!(error = %e, "garbage collection failed"),
                    Err(e) => tracing::warn!(error = %e, "garbage collection panicked"),
                }
            });
        }
        Ok(())
    }

    /// Collects now and then every `every` in the background (call once, inside the
    /// runtime): crash leftovers and expired leases go without waiting for a delete.
    pub fn spawn_periodic(self: &Arc<Self>, every: std::time::Duration) {
        let gc = self.clone();
        tokio::spawn(async move {
            loop {
                if let Err(e) = gc.after_delete(true).await {
                    tracing::warn!(error = %e, "periodic garbage collection failed");
                }
                tokio::time::sleep(every).await;
            }
        });
    }

    /// Collects again once deferred objects are past their grace period.
    fn schedule_rerun(self: &Arc<Self>, report: &GcReport) {
        if report.deferred == 0 || self.rerun_scheduled.swap(true, Ordering::SeqCst) {
            return;
        }
        let gc = self.clone();
        tokio::spawn(async move {
            tokio::time::sleep(gc.grace + std::time::Duration::from_secs(1)).await;
            gc.rerun_scheduled.store(false, Ordering::SeqCst);
            if let Err(e) = gc.after_delete(false).await {
                tracing::warn!(error = %e, "deferred garbage collection failed");
            }
        });
    }

    /// One full mark-and-sweep.
    pub fn collect(&self) -> Result<GcReport, StoreError> {
        let _one_at_a_time = self.running.lock().unwrap_or_else(|p| p.into_inner());
        let mut report = GcReport {
            leases: self.expire_leases()?,
            ..GcReport::default()
        };
        let namespaces: BTreeSet<String> = self.db.view(|tx| -> Result<_, DbError> {
            let mut all = tx.namespaces(CONTENT)?;
            all.extend(tx.namespaces(SNAPSHOTS)?);
            Ok(all.into_iter().collect())
        })?;
        for ns in namespaces {
            let (c, s, d) = self.collect_namespace(&ns)?;
            report.content += c;
            report.snapshots += s;
            report.deferred += d;
        }
        report.blobs = self.content.remove_unreferenced_blobs()?;
        report.ingests = self.content.remove_stale_ingests(INGEST_EXPIRY)?;
        if report != GcReport::default() {
            tracing::info!(?report, "garbage collected");
        }
        Ok(report)
    }

    fn expire_leases(&self) -> Result<usize, StoreError> {
        let now = Utc::now();
        self.db.update(|tx| {
            let mut n = 0;
            for ns in tx.namespaces(LEASES)? {
                for (id, l) in tx.list::<LeaseRecord>(LEASES, &ns)? {
                    let expired = l
                        .labels
                        .get(EXPIRE_LABEL)
                        .and_then(|t| chrono::DateTime::parse_from_rfc3339(t).ok())
                        .is_some_and(|t| t < now);
                    if expired {
                        tx.delete(LEASES, &ns, &id)?;
                        n += 1;
                    }
                }
            }
            Ok(n)
        })
    }

    fn roots(
        &self,
        ns: &str,
        snaps: &BTreeMap<String, SnapshotRecord>,
    ) -> Result<Marks, StoreError> {
        let mut m = Marks::default();
        let snap_kind = format!("snapshots/{SNAPSHOTTER}");
        self.db.view(|tx| -> Result<(), DbError> {
            for (_, i) in tx.list::<ImageRecord>(IMAGES, ns)? {
                m.todo.push(i.target.digest);
            }
            for (_, l) in tx.list::<LeaseRecord>(LEASES, ns)? {
                for r in l.resources {
                    if r.kind == "content" {
                        m.todo.push(r.id);
                    } else if r.kind == snap_kind {
                        m.snapshots.insert(r.id);
                    }
                }
            }
            for (d, c) in tx.list::<ContentRecord>(CONTENT, ns)? {
                if c.labels.contains_key(ROOT_LABEL) {
                    m.todo.push(d);
                }
            }
            Ok(())
        })?;
        for (k, s) in snaps {
            if s.labels.contains_key(ROOT_LABEL) {
                m.snapshots.insert(k.clone());
            }
        }
        let hook = self
            .containers
            .read()
            .unwrap_or_else(|p| p.into_inner())
            .clone();
        if let Some(hook) = hook {
            for (snapshotter, key) in hook.snapshot_refs(ns)? {
                if snapshotter == SNAPSHOTTER || snapshotter.is_empty() {
                    m.snapshots.insert(key);
                }
            }
        }
        Ok(m)
    }

    /// Follows references out of one marked blob.
    fn follow(&self, ns: &str, digest: &str, rec: &ContentRecord, m: &mut Marks) {
        for (k, v) in &rec.labels {
            if k.starts_with(REF_CONTENT) {
                m.todo.push(v.clone());
            } else if let Some(s) = k.strip_prefix(REF_SNAPSHOT) {
                if s == SNAPSHOTTER || s.starts_with(&format!("{SNAPSHOTTER}/")) {
                    m.snapshots.insert(v.clone());
                }
            }
        }
        if rec.size > MAX_JSON {
            return;
        }
        let Ok(raw) = self.content.read_at(ns, digest, 0, 0) else {
            return;
        };
        if raw.first() != Some(&b'{') {
            return;
        }
        let Ok(doc) = serde_json::from_slice::<serde_json::Value>(&raw) else {
            return;
        };
        let digests = |v: &serde_json::Value| -> Vec<String> {
            v.as_array()
                .map(|a| {
                    a.iter()
                        .filter_map(|d| d.get("digest")?.as_str().map(str::to_string))
                        .collect()
                })
                .unwrap_or_default()
        };
        m.todo.extend(digests(&doc["manifests"]));
        m.todo.extend(digests(&doc["layers"]));
        if let Some(c) = doc["config"]["digest"].as_str() {
            m.todo.push(c.to_string());
        }
        if let Some(ids) = doc["rootfs"]["diff_ids"].as_array() {
            let ids: Vec<String> = ids
                .iter()
                .filter_map(|d| d.as_str().map(str::to_string))
                .collect();
            m.snapshots.extend(chain_ids(&ids));
        }
    }

    /// Marks everything reachable from `m`'s roots.
    fn mark(
        &self,
        ns: &str,
        content: &BTreeMap<String, ContentRecord>,
        snaps: &BTreeMap<String, SnapshotRecord>,
        m: &mut Marks,
    ) {
        while let Some(d) = m.todo.pop() {
            if !m.content.insert(d.clone()) {
                continue;
            }
            if let Some(rec) = content.get(&d) {
                self.follow(ns, &d, rec, m);
            }
        }
        // Parents of kept snapshots are kept.
        let mut todo: Vec<String> = m.snapshots.iter().cloned().collect();
        while let Some(k) = todo.pop() {
            if let Some(p) = snaps
                .get(&k)
                .map(|s| s.parent.clone())
                .filter(|p| !p.is_empty())
            {
                if m.snapshots.insert(p.clone()) {
                    todo.push(p);
                }
            }
        }
    }

    fn collect_namespace(&self, ns: &str) -> Result<(usize, usize, usize), StoreError> {
        let content: BTreeMap<String, ContentRecord> =
            self.db.list(CONTENT, ns)?.into_iter().collect();
        let snaps: BTreeMap<String, SnapshotRecord> =
            self.db.list(SNAPSHOTS, ns)?.into_iter().collect();
        let mut m = self.roots(ns, &snaps)?;
        self.mark(ns, &content, &snaps, &mut m);
        // Young unreferenced objects become roots for this run (with what they reference).
        let cutoff = Utc::now() - chrono::TimeDelta::from_std(self.grace).unwrap_or_default();
        let young_content: Vec<String> = content
            .iter()
            .filter(|(d, c)| !m.content.contains(*d) && c.created_at > cutoff)
            .map(|(d, _)| d.clone())
            .collect();
        let young_snaps: Vec<String> = snaps
            .iter()
            .filter(|(k, s)| !m.snapshots.contains(*k) && s.created_at > cutoff)
            .map(|(k, _)| k.clone())
            .collect();
        let deferred = young_content.len() + young_snaps.len();
        if deferred > 0 {
            m.todo.extend(young_content);
            m.snapshots.extend(young_snaps);
            self.mark(ns, &content, &snaps, &mut m);
        }
        let dead_content: Vec<&String> =
            content.keys().filter(|d| !m.content.contains(*d)).collect();
        let removed_content = self.db.update(|tx| -> Result<usize, DbError> {
            let mut n = 0;
            for d in &dead_content {
                // Re-read: the record may have been re-created since the mark.
                if tx
                    .get::<ContentRecord>(CONTENT, ns, d)?
                    .is_some_and(|c| !c.labels.contains_key(ROOT_LABEL))
                {
                    tx.delete(CONTENT, ns, d)?;
                    n += 1;
                }
            }
            Ok(n)
        })?;
        // Children before parents: repeatedly remove dead snapshots nothing depends on.
        let mut dead: BTreeSet<String> = snaps
            .keys()
            .filter(|k| !m.snapshots.contains(*k))
            .cloned()
            .collect();
        let mut removed = 0;
        loop {
            let leaves: Vec<String> = dead
                .iter()
                .filter(|k| {
                    !dead
                        .iter()
                        .any(|c| snaps.get(c).is_some_and(|s| &s.parent == *k))
                })
                .cloned()
                .collect();
            if leaves.is_empty() {
                break;
            }
            for k in leaves {
                dead.remove(&k);
                match self.snapshots.remove(ns, &k) {
                    Ok(()) => removed += 1,
                    // Something started to use it since the mark: keep it.
                    Err(e) => tracing::debug!(snapshot = %k, error = %e, "gc kept snapshot"),
                }
            }
        }
        Ok((removed_content, removed, deferred))
    }
}

#[cfg(test)]
mod service_tests;
#[cfg(test)]
mod tests;
