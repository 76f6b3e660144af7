//! Resumable writes into the content store.
//!
//! A write in progress is a directory `<root>/content/ingest/<sha256(ns NUL ref)>/` holding
//! `data`, `ref`, `namespace`, `startedat`, `total` and `expected`. It survives restarts (a
//! client may resume at the recorded offset) and becomes a blob only on commit: the data is
//! fsynced, hashed, compared with the expected size and digest, and renamed into
//! `blobs/sha256/` (then the directory is fsynced) before the DB record is written. A crash
//! after the rename leaves an unrecorded blob that the GC removes.

use std::collections::BTreeMap;
use std::fs::{File, OpenOptions};
use std::io::{Read, Write};
use std::path::{Path, PathBuf};

use chrono::{DateTime, Utc};
use sha2::{Digest, Sha256};

use super::{digest_hex, ContentRecord, ContentStore};
use crate::db::filter::{self, Filter};
use crate::db::{StoreError, CONTENT};

/// containerd's `content.Status` of an ingest.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct IngestStatus {
    pub reference: String,
    pub offset: u64,
    pub total: u64,
    pub expected: String,
    pub started_at: DateTime<Utc>,
    pub updated_at: DateTime<Utc>,
}

impl filter::Adaptor for IngestStatus {
    fn field(&self, path: &[String]) -> Option<String> {
        match path.first().map(String::as_str) {
            Some("ref") => Some(self.reference.clone()),
            _ => None,
        }
    }
}

/// An open, locked ingest. Dropping it keeps the data for a later resume.
#[derive(Debug)]
pub struct Writer {
    store: ContentStore,
    ns: String,
    reference: String,
    dir: PathBuf,
    file: File,
    offset: u64,
    total: u64,
    expected: String,
    started_at: DateTime<Utc>,
    lock_key: String,
    /// Running hash of `data` when this writer saw every byte of it (a fresh or restarted
    /// ingest); a resumed ingest is hashed from the file at commit instead.
    running: Option<Sha256>,
}

fn read_small(dir: &Path, name: &str) -> Option<String> {
    std::fs::read_to_string(dir.join(name)).ok()
}

fn write_small(dir: &Path, name: &str, value: &str) -> Result<(), StoreError> {
    let p = dir.join(name);
    std::fs::write(&p, value).map_err(StoreError::io("write ingest file", &p))
}

fn sha256_file(path: &Path) -> Result<String, StoreError> {
    let mut f = File::open(path).map_err(StoreError::io("open ingest data", path))?;
    let mut h = Sha256::new();
    let mut buf = vec![0u8; 1 << 20];
    loop {
        let n = f
            .read(&mut buf)
            .map_err(StoreError::io("read ingest data", path))?;
        if n == 0 {
            break;
        }
        h.update(&buf[..n]);
    }
    Ok(format!("sha256:{}", hex::encode(h.finalize())))
}

fn fsync_dir(dir: &Path) -> Result<(), StoreError> {
    berth_fsutil::fsync_dir(dir).map_err(StoreError::io("fsync directory", dir))
}

impl ContentStore {
    pub(crate) fn ingest_dir(&self, ns: &str, reference: &str) -> PathBuf {
        let mut h = Sha256::new();
        h.update(ns.as_bytes());
        h.update([0]);
        h.update(reference.as_bytes());
        self.ingest_root().join(hex::encode(h.finalize()))
    }

    fn read_status(&self, dir: &Path) -> Result<IngestStatus, StoreError> {
        let reference = read_small(dir, "ref").unwrap_or_default();
        let data = dir.join("data");
        let meta = std::fs::metadata(&data).map_err(StoreError::io("stat ingest data", &data))?;
        let started_at = read_small(dir, "startedat")
            .and_then(|s| DateTime::parse_from_rfc3339(s.trim()).ok())
            .map(|t| t.with_timezone(&Utc))
            .unwrap_or_else(Utc::now);
        let updated_at = meta
            .modified()
            .map(DateTime::<Utc>::from)
            .unwrap_or(started_at);
        Ok(IngestStatus {
            reference,
            offset: meta.len(),
            total: read_small(dir, "total")
                .and_then(|s| s.trim().parse().ok())
                .unwrap_or(0),
            expected: read_small(dir, "expected").unwrap_or_default(),
            started_at,
            updated_at,
        })
    }

    /// Status of the ingest `reference` in `ns`.
    pub fn status(&self, ns: &str, reference: &str) -> Result<IngestStatus, StoreError> {
        let dir = self.ingest_dir(ns, reference);
        if !dir.join("data").exists() {
            return Err(StoreError::not_found("ingest ref", reference));
        }
        self.read_status(&dir)
    }

    /// All ingests of `ns` that pass `filter`.
    pub fn list_statuses(
        &self,
        ns: &str,
        filter: &Filter,
    ) -> Result<Vec<IngestStatus>, StoreError> {
        let root = self.ingest_root();
        let mut out = Vec::new();
        for e in std::fs::read_dir(&root).map_err(StoreError::io("read directory", &root))? {
            let dir = e.map_err(StoreError::io("read directory", &root))?.path();
            if read_small(&dir, "namespace").as_deref() != Some(ns) {
                continue;
            }
            match self.read_status(&dir) {
                Ok(s) if filter.matches(&s) => out.push(s),
                Ok(_) => {}
                // An ingest being aborted concurrently is simply gone.
                Err(e) => tracing::debug!(error = %e, "skipping unreadable ingest"),
            }
        }
        out.sort_by(|a, b| a.reference.cmp(&b.reference));
        Ok(out)
    }

    /// Removes ingests nobody wrote to for `max_age` (a client that died mid-write and never
    /// came back), skipping those a writer holds. Returns how many went.
    pub fn remove_stale_ingests(&self, max_age: std::time::Duration) -> Result<usize, StoreError> {
        let root = self.ingest_root();
        let entries = match std::fs::read_dir(&root) {
            Ok(e) => e,
            Err(e) if e.kind() == std::io::ErrorKind::NotFound => return Ok(0),
            Err(e) => return Err(StoreError::io("read directory", &root)(e)),
        };
        let mut removed = 0;
        for e in entries.flatten() {
            let dir = e.path();
            let ns = read_small(&dir, "namespace").unwrap_or_default();
            let reference = read_small(&dir, "ref").unwrap_or_default();
            let key = format!("{ns}/{reference}");
            let mut locks = self.locks.lock().unwrap_or_else(|p| p.into_inner());
            if locks.contains(&key) {
                continue;
            }
            let touched = std::fs::metadata(dir.join("data"))
                .or_else(|_| std::fs::metadata(&dir))
                .and_then(|m| m.modified());
            let stale = touched
                .ok()
                .and_then(|t| t.elapsed().ok())
                .is_some_and(|age| age > max_age);
            if stale {
                // Held across the removal so no writer can open the ref meanwhile.
                locks.insert(key.clone());
                let result = std::fs::remove_dir_all(&dir);
                locks.remove(&key);
                result.map_err(StoreError::io("remove ingest", &dir))?;
                tracing::info!(reference, namespace = ns, "removed stale ingest");
                removed += 1;
            }
        }
        Ok(removed)
    }

    /// Removes the ingest `reference` and its data.
    pub fn abort(&self, ns: &str, reference: &str) -> Result<(), StoreError> {
        let dir = self.ingest_dir(ns, reference);
        match std::fs::remove_dir_all(&dir) {
            Ok(()) => Ok(()),
            Err(e) if e.kind() == std::io::ErrorKind::NotFound => {
                Err(StoreError::not_found("ingest ref", reference))
            }
            Err(e) => Err(StoreError::io("remove ingest", &dir)(e)),
        }
    }

    /// Opens (or resumes) the ingest `reference`. Fails with AlreadyExists when the namespace
    /// already has the `expected` blob, and with Unavailable while another writer holds the ref.
    pub fn writer(
        &self,
        ns: &str,
        reference: &str,
        total: u64,
        expected: &str,
    ) -> Result<Writer, StoreError> {
        if reference.is_empty() {
            return Err(StoreError::invalid("ref", reference, "must not be empty"));
        }
        if !expected.is_empty() {
            digest_hex(expected)?;
            if self
                .db
                .get::<ContentRecord>(CONTENT, ns, expected)?
                .is_some()
            {
                return Err(StoreError::exists("content", expected));
            }
        }
        let lock_key = format!("{ns}/{reference}");
        {
            let mut locks = self.locks.lock().unwrap_or_else(|p| p.into_inner());
            if !locks.insert(lock_key.clone()) {
                return Err(StoreError::Locked {
                    reference: reference.to_string(),
                });
            }
        }
        // From here on the lock is released by Writer's Drop, or right here on error.
        self.open_ingest(ns, reference, total, expected, lock_key.clone())
            .inspect_err(|_| self.unlock(&lock_key))
    }

    fn open_ingest(
        &self,
        ns: &str,
        reference: &str,
        total: u64,
        expected: &str,
        lock_key: String,
    ) -> Result<Writer, StoreError> {
        let dir = self.ingest_dir(ns, reference);
        let fresh = !dir.join("data").exists();
        if fresh {
            std::fs::create_dir_all(&dir).map_err(StoreError::io("create ingest", &dir))?;
            write_small(&dir, "ref", reference)?;
            write_small(&dir, "namespace", ns)?;
            write_small(&dir, "startedat", &Utc::now().to_rfc3339())?;
        }
        if total > 0 {
            write_small(&dir, "total", &total.to_string())?;
        }
        if !expected.is_empty() {
            write_small(&dir, "expected", expected)?;
        }
        let data = dir.join("data");
        let file = OpenOptions::new()
            .create(true)
            .append(true)
            .open(&data)
            .map_err(StoreError::io("open ingest data", &data))?;
        let st = self.read_status(&dir)?;
        Ok(Writer {
            store: self.clone(),
            ns: ns.to_string(),
            reference: reference.to_string(),
            dir,
            file,
            offset: st.offset,
            total: st.total,
            expected: st.expected,
            started_at: st.started_at,
            lock_key,
            running: (st.offset == 0).then(Sha256::new),
        })
    }
}

impl ContentStore {
    fn unlock(&self, lock_key: &str) {
        self.locks
            .lock()
            .unwrap_or_else(|p| p.into_inner())
            .remove(lock_key);
    }
}

impl Drop for Writer {
    fn drop(&mut self) {
        self.store.unlock(&self.lock_key);
    }
}

impl Writer {
    pub fn offset(&self) -> u64 {
        self.offset
    }

    pub fn status(&self) -> Result<IngestStatus, StoreError> {
        let mut st = self.store.read_status(&self.dir)?;
        st.reference.clone_from(&self.reference);
        st.started_at = self.started_at;
        Ok(st)
    }

    /// Records the expected total size (0: unknown).
    pub fn set_total(&mut self, total: u64) -> Result<(), StoreError> {
        if total > 0 && total != self.total {
            write_small(&self.dir, "total", &total.to_string())?;
            self.total = total;
        }
        Ok(())
    }

    /// Records the expected digest ("" leaves it unchanged).
    pub fn set_expected(&mut self, expected: &str) -> Result<(), StoreError> {
        if !expected.is_empty() && expected != self.expected {
            digest_hex(expected)?;
            write_small(&self.dir, "expected", expected)?;
            self.expected = expected.to_string();
        }
        Ok(())
    }

    /// Discards everything written after `size` bytes (a client restarting from 0).
    pub fn truncate(&mut self, size: u64) -> Result<(), StoreError> {
        let data = self.dir.join("data");
        self.file
            .set_len(size)
            .map_err(StoreError::io("truncate ingest data", &data))?;
        self.offset = size;
        self.running = (size == 0).then(Sha256::new);
        Ok(())
    }

    /// Writes `data` at `offset`, which must be the current offset, except that offset 0
    /// restarts the write (containerd's rule for resumable writes).
    pub fn write_at(&mut self, offset: u64, data: &[u8]) -> Result<(), StoreError> {
        if offset == 0 && self.offset > 0 {
            self.truncate(0)?;
        } else if offset != self.offset {
            return Err(StoreError::OffsetMismatch {
                reference: self.reference.clone(),
                offset,
                current: self.offset,
            });
        }
        let path = self.dir.join("data");
        self.file
            .write_all(data)
            .map_err(StoreError::io("write ingest data", &path))?;
        self.offset += data.len() as u64;
        if let Some(h) = &mut self.running {
            h.update(data);
        }
        Ok(())
    }

    /// Verifies and publishes the data as a blob of this namespace; returns its digest.
    /// `size` 0 and `expected` "" fall back to what the writer was opened with.
    pub fn commit(
        self,
        size: u64,
        expected: &str,
        labels: BTreeMap<String, String>,
    ) -> Result<String, StoreError> {
        let data = self.dir.join("data");
        self.file
            .sync_all()
            .map_err(StoreError::io("fsync ingest data", &data))?;
        let size = if size > 0 { size } else { self.total };
        if size > 0 && size != self.offset {
            return Err(StoreError::SizeMismatch {
                reference: self.reference.clone(),
                expected: size,
                actual: self.offset,
            });
        }
        let actual = match &self.running {
            Some(h) => format!("sha256:{}", hex::encode(h.clone().finalize())),
            None => sha256_file(&data)?,
        };
        let expected = if expected.is_empty() {
            self.expected.as_str()
        } else {
            expected
        };
        let store = self.store.clone();
        if !expected.is_empty() && expected != actual {
            // A corrupt upload cannot be resumed into the right blob: start over.
            if let Err(e) = std::fs::remove_dir_all(&self.dir) {
                tracing::warn!(dir = %self.dir.display(), error = %e, "cannot remove ingest");
            }
            return Err(StoreError::DigestMismatch {
                expected: expected.to_string(),
                actual,
            });
        }
        let blob = store.blob_path(&actual)?;
        let _publishing = store.blob_lock.read().unwrap_or_else(|p| p.into_inner());
        let exists_here = store
            .db
            .get::<ContentRecord>(CONTENT, &self.ns, &actual)?
            .is_some();
        if blob.exists() {
            std::fs::remove_dir_all(&self.dir)
                .map_err(StoreError::io("remove ingest", &self.dir))?;
            if exists_here {
                return Err(StoreError::exists("content", actual));
            }
        } else {
            let mut perms = self
                .file
                .metadata()
                .map_err(StoreError::io("stat", &data))?
                .permissions();
            std::os::unix::fs::PermissionsExt::set_mode(&mut perms, 0o444);
            std::fs::set_permissions(&data, perms).map_err(StoreError::io("chmod", &data))?;
            std::fs::rename(&data, &blob).map_err(StoreError::io("rename ingest to", &blob))?;
            let parent = blob.parent().unwrap_or(&blob);
            fsync_dir(parent)?;
            std::fs::remove_dir_all(&self.dir)
                .map_err(StoreError::io("remove ingest", &self.dir))?;
        }
        let now = Utc::now();
        let rec = ContentRecord {
            size: self.offset,
            labels,
            created_at: now,
            updated_at: now,
        };
        store.db.update(|tx| {
            if tx
                .get::<ContentRecord>(CONTENT, &self.ns, &actual)?
                .is_some()
            {
                return Err(StoreError::exists("content", &actual));
            }
            crate::namespaces::ensure(tx, &self.ns)?;
            tx.put(CONTENT, &self.ns, &actual, &rec)?;
            Ok(())
        })?;
        Ok(actual)
    }
}
