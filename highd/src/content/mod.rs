//! The content store: immutable blobs addressed by digest.
//!
//! Blobs live once on disk at `<root>/content/blobs/sha256/<hex>` and are shared by all
//! namespaces; which namespace "has" a blob (with its own labels and timestamps) is a record
//! in the metadata DB. Writes go through `<root>/content/ingest/` (see [`writer`]) and become
//! visible only after their size and digest verified.

mod service;
mod writer;

pub use service::ContentService;
pub use writer::{IngestStatus, Writer};

use std::collections::{BTreeMap, HashSet};
use std::fs::File;
use std::io::{Read, Seek, SeekFrom};
use std::path::{Path, PathBuf};
use std::sync::{Arc, Mutex, RwLock};

use chrono::{DateTime, Utc};
use serde::{Deserialize, Serialize};

use crate::db::filter::{self, Filter};
use crate::db::{Db, StoreError, CONTENT};

/// The DB record of a blob in one namespace.
#[derive(Debug, Clone, Serialize, Deserialize)]
pub struct ContentRecord {
    pub size: u64,
    #[serde(default)]
    pub labels: BTreeMap<String, String>,
    pub created_at: DateTime<Utc>,
    pub updated_at: DateTime<Utc>,
}

/// containerd's `types.Descriptor`.
#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize, Deserialize)]
pub struct Descriptor {
    pub media_type: String,
    pub digest: String,
    pub size: i64,
    #[serde(default)]
    pub annotations: BTreeMap<String, String>,
}

/// What containerd's `content.Info` carries.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Info {
    pub digest: String,
    pub size: u64,
    pub labels: BTreeMap<String, String>,
    pub created_at: DateTime<Utc>,
    pub updated_at: DateTime<Utc>,
}

impl Info {
    fn from_record(digest: String, r: ContentRecord) -> Info {
        Info {
            digest,
            size: r.size,
            labels: r.labels,
            created_at: r.created_at,
            updated_at: r.updated_at,
        }
    }
}

impl filter::Adaptor for Info {
    fn field(&self, path: &[String]) -> Option<String> {
        match path.first().map(String::as_str) {
            Some("digest") => Some(self.digest.clone()),
            Some("size") => Some(self.size.to_string()),
            _ => filter::label(&self.labels, path),
        }
    }
}

/// Checks a digest is `sha256:<64 lowercase hex>` and returns the hex part.
pub fn digest_hex(digest: &str) -> Result<&str, StoreError> {
    let hex = digest.strip_prefix("sha256:").ok_or_else(|| {
        StoreError::invalid("digest", digest, "only sha256 digests are supported")
    })?;
    if hex.len() != 64
        || !hex
            .bytes()
            .all(|b| b.is_ascii_digit() || (b'a'..=b'f').contains(&b))
    {
        return Err(StoreError::invalid(
            "digest",
            digest,
            "expected 64 lowercase hex characters",
        ));
    }
    Ok(hex)
}

/// Applies containerd's label update rules: with no field paths (or "labels") the labels are
/// replaced; "labels.KEY" sets or removes one key. Other paths are rejected.
pub fn update_labels(
    labels: &mut BTreeMap<String, String>,
    new: &BTreeMap<String, String>,
    paths: &[String],
    allowed: &[&str],
) -> Result<(), StoreError> {
    if paths.is_empty() {
        labels.clone_from(new);
        return Ok(());
    }
    for p in paths {
        if p == "labels" {
            labels.clone_from(new);
        } else if let Some(key) = p.strip_prefix("labels.") {
            match new.get(key) {
                Some(v) => labels.insert(key.to_string(), v.clone()),
                None => labels.remove(key),
            };
        } else if !allowed.contains(&p.as_str()) {
            return Err(StoreError::invalid(
                "field path",
                p,
                "cannot update this field",
            ));
        }
    }
    Ok(())
}

/// Handle to the content store (cheap to clone).
#[derive(Clone, Debug)]
pub struct ContentStore {
    root: PathBuf,
    db: Db,
    /// Refs with a live writer, as "ns/ref": containerd allows one writer per ref.
    locks: Arc<Mutex<HashSet<String>>>,
    /// Commits hold it shared from rename to DB record; blob sweeps hold it exclusively, so
    /// a sweep never sees a renamed-in blob whose record is not written yet.
    blob_lock: Arc<RwLock<()>>,
}

impl ContentStore {
    /// Opens the store under `<root>/content`.
    pub fn open(root: &Path, db: Db) -> Result<ContentStore, StoreError> {
        let root = root.join("content");
        for d in ["blobs/sha256", "ingest"] {
            let p = root.join(d);
            std::fs::create_dir_all(&p).map_err(StoreError::io("create directory", &p))?;
        }
        let store = ContentStore {
            root,
            db,
            locks: Arc::default(),
            blob_lock: Arc::default(),
        };
        store.repair()?;
        Ok(store)
    }

    /// Removes what a crash can leave: a blob renamed in before its record was written, an
    /// ingest directory created but never given its data file.
    fn repair(&self) -> Result<(), StoreError> {
        let blobs = self.remove_unreferenced_blobs()?;
        let ingest = self.ingest_root();
        let mut ingests = 0;
        for e in std::fs::read_dir(&ingest).map_err(StoreError::io("read directory", &ingest))? {
            let dir = e.map_err(StoreError::io("read directory", &ingest))?.path();
            if !dir.join("data").is_file() || !dir.join("namespace").is_file() {
                std::fs::remove_dir_all(&dir).map_err(StoreError::io("remove", &dir))?;
                ingests += 1;
            }
        }
        if blobs + ingests > 0 {
            tracing::info!(blobs, ingests, "removed content leftovers");
        }
        Ok(())
    }

    pub fn db(&self) -> &Db {
        &self.db
    }

    /// Path of a verified blob (whether or not it exists).
    pub fn blob_path(&self, digest: &str) -> Result<PathBuf, StoreError> {
        Ok(self.root.join("blobs/sha256").join(digest_hex(digest)?))
    }

    fn record(&self, ns: &str, digest: &str) -> Result<ContentRecord, StoreError> {
        digest_hex(digest)?;
        self.db
            .get(CONTENT, ns, digest)?
            .ok_or_else(|| StoreError::not_found("content", digest))
    }

    pub fn info(&self, ns: &str, digest: &str) -> Result<Info, StoreError> {
        Ok(Info::from_record(
            digest.to_string(),
            self.record(ns, digest)?,
        ))
    }

    pub fn list(&self, ns: &str, filter: &Filter) -> Result<Vec<Info>, StoreError> {
        Ok(self
            .db
            .list::<ContentRecord>(CONTENT, ns)?
            .into_iter()
            .map(|(d, r)| Info::from_record(d, r))
            .filter(|i| filter.matches(i))
            .collect())
    }

    /// Updates the labels of a blob's record (containerd allows only labels to change).
    pub fn update(&self, ns: &str, info: &Info, paths: &[String]) -> Result<Info, StoreError> {
        digest_hex(&info.digest)?;
        self.db.update(|tx| {
            let mut r: ContentRecord = tx
                .get(CONTENT, ns, &info.digest)?
                .ok_or_else(|| StoreError::not_found("content", &info.digest))?;
            update_labels(&mut r.labels, &info.labels, paths, &[])?;
            r.updated_at = Utc::now();
            tx.put(CONTENT, ns, &info.digest, &r)?;
            Ok(Info::from_record(info.digest.clone(), r))
        })
    }

    /// Opens a blob for reading, checking the namespace has it.
    pub fn open_blob(&self, ns: &str, digest: &str) -> Result<(File, u64), StoreError> {
        let r = self.record(ns, digest)?;
        let path = self.blob_path(digest)?;
        let f = File::open(&path).map_err(|e| match e.kind() {
            std::io::ErrorKind::NotFound => StoreError::not_found("content blob", digest),
            _ => StoreError::Io {
                op: "open blob",
                path: path.clone(),
                source: e,
            },
        })?;
        Ok((f, r.size))
    }

    /// Reads `size` bytes (0: to the end) from `offset`.
    pub fn read_at(
        &self,
        ns: &str,
        digest: &str,
        offset: u64,
        size: u64,
    ) -> Result<Vec<u8>, StoreError> {
        let (mut f, total) = self.open_blob(ns, digest)?;
        if offset > total {
            return Err(StoreError::invalid(
                "read offset",
                offset.to_string(),
                "beyond the end of the blob",
            ));
        }
        let want = if size == 0 {
            total - offset
        } else {
            size.min(total - offset)
        };
        let path = self.blob_path(digest)?;
        f.seek(SeekFrom::Start(offset))
            .map_err(StoreError::io("seek blob", &path))?;
        let mut buf = Vec::with_capacity(usize::try_from(want).unwrap_or(0));
        f.take(want)
            .read_to_end(&mut buf)
            .map_err(StoreError::io("read blob", &path))?;
        Ok(buf)
    }

    /// Removes a blob from the namespace; the file goes once no namespace has it.
    pub fn delete(&self, ns: &str, digest: &str) -> Result<(), StoreError> {
        digest_hex(digest)?;
        let existed = self.db.update(|tx| tx.delete(CONTENT, ns, digest))?;
        if !existed {
            return Err(StoreError::not_found("content", digest));
        }
        self.remove_blob_if_unused(digest)
    }

    /// Deletes the blob file if no namespace has a record of it.
    pub fn remove_blob_if_unused(&self, digest: &str) -> Result<(), StoreError> {
        let _sweep = self.blob_lock.write().unwrap_or_else(|p| p.into_inner());
        if !self.recorded()?.contains(digest) {
            self.remove_blob(digest)?;
        }
        Ok(())
    }

    /// Deletes every blob file no namespace has a record of; returns how many.
    pub fn remove_unreferenced_blobs(&self) -> Result<usize, StoreError> {
        let _sweep = self.blob_lock.write().unwrap_or_else(|p| p.into_inner());
        let recorded = self.recorded()?;
        let mut n = 0;
        for d in self.blobs_on_disk()? {
            if !recorded.contains(&d) {
                self.remove_blob(&d)?;
                n += 1;
            }
        }
        Ok(n)
    }

    /// Digests some namespace has a record of.
    fn recorded(&self) -> Result<HashSet<String>, StoreError> {
        self.db.view(|tx| {
            let mut all = HashSet::new();
            for ns in tx.namespaces(CONTENT)? {
                all.extend(
                    tx.list::<ContentRecord>(CONTENT, &ns)?
                        .into_iter()
                        .map(|(d, _)| d),
                );
            }
            Ok(all)
        })
    }

    fn remove_blob(&self, digest: &str) -> Result<(), StoreError> {
        let path = self.blob_path(digest)?;
        match std::fs::remove_file(&path) {
            Ok(()) => {
                tracing::debug!(%digest, "removed unreferenced blob");
                Ok(())
            }
            Err(e) if e.kind() == std::io::ErrorKind::NotFound => Ok(()),
            Err(e) => Err(StoreError::io("remove blob", &path)(e)),
        }
    }

    /// Digests of all blobs on disk.
    pub fn blobs_on_disk(&self) -> Result<Vec<String>, StoreError> {
        let dir = self.root.join("blobs/sha256");
        let mut out = Vec::new();
        for e in std::fs::read_dir(&dir).map_err(StoreError::io("read directory", &dir))? {
            let e = e.map_err(StoreError::io("read directory", &dir))?;
            if let Some(name) = e.file_name().to_str() {
                let d = format!("sha256:{name}");
                if digest_hex(&d).is_ok() {
                    out.push(d);
                }
            }
        }
        Ok(out)
    }

    fn ingest_root(&self) -> PathBuf {
        self.root.join("ingest")
    }
}

#[cfg(test)]
mod tests;
