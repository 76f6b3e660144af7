//! Volumes of the `local` driver (dockerd's `volume/local`): one directory per volume
//! under `<data-root>/volumes/<name>/`, data in `_data`, metadata in `volume.json`
//! (written atomically; a volume exists once that file is on disk). Volumes with
//! `type`/`device`/`o` options are mounted on `_data` while containers use them.
//!
//! References (which containers use which volume) live in memory, rebuilt from the
//! container records at start; the in-use check and the removal hold the same lock, so a
//! volume can never be removed under a container being created with it.

pub mod parse;
pub mod sys;

use std::collections::{BTreeMap, BTreeSet, HashMap};
use std::path::{Path, PathBuf};
use std::sync::Mutex;

use chrono::{DateTime, SecondsFormat, Utc};
use serde::{Deserialize, Serialize};
use serde_json::{json, Value};

pub use parse::{MountError, MountKind, MountPoint};

/// Label dockerd (23+) puts on anonymous volumes; `volume prune` without `--all` removes
/// only volumes carrying it.
pub const ANONYMOUS_LABEL: &str = "com.docker.volume.anonymous";

const META: &str = "volume.json";
const DATA: &str = "_data";

#[derive(Debug, thiserror::Error)]
pub enum VolumeError {
    #[error("get {name}: no such volume")]
    NotFound { name: String },
    #[error("volume name is too short, names should be at least two alphanumeric characters")]
    NameTooShort,
    #[error("{name:?} includes invalid characters for a local volume name, only \"[a-zA-Z0-9][a-zA-Z0-9_.-]\" are allowed. If you intended to pass a host directory, use absolute path")]
    InvalidName { name: String },
    #[error("error looking up volume plugin {driver}: plugin \"{driver}\" not found")]
    NoDriver { driver: String },
    #[error("invalid option key: {key:?}")]
    InvalidOption { key: String },
    #[error("quota size requested but no quota support")]
    NoQuota,
    #[error("remove {name}: volume is in use - [{}]", ids.join(", "))]
    InUse { name: String, ids: Vec<String> },
    #[error("mount volume {name}: {message}")]
    Mount { name: String, message: String },
    #[error("{op} {path}: {source}")]
    Io {
        op: &'static str,
        path: PathBuf,
        source: std::io::Error,
    },
    #[error("decode {path}: {source}")]
    Decode {
        path: PathBuf,
        source: serde_json::Error,
    },
}

impl VolumeError {
    /// Whether the caller made a mistake (400) rather than the engine failing.
    pub fn is_bad_input(&self) -> bool {
        matches!(
            self,
            Self::NameTooShort | Self::InvalidName { .. } | Self::InvalidOption { .. }
        )
    }
}

pub type VolumeResult<T> = Result<T, VolumeError>;

fn io(op: &'static str, path: &Path) -> impl FnOnce(std::io::Error) -> VolumeError {
    let path = path.to_path_buf();
    move |source| VolumeError::Io { op, path, source }
}

/// What `volume.json` holds.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(rename_all = "PascalCase")]
pub struct Volume {
    pub name: String,
    pub created_at: DateTime<Utc>,
    /// `None` when created without labels (dockerd shows `null`).
    pub labels: Option<BTreeMap<String, String>>,
    pub options: Option<BTreeMap<String, String>>,
}

impl Volume {
    pub fn is_anonymous(&self) -> bool {
        self.labels
            .as_ref()
            .is_some_and(|l| l.contains_key(ANONYMOUS_LABEL))
    }

    fn needs_mount(&self) -> bool {
        self.options
            .as_ref()
            .is_some_and(|o| o.contains_key("type") || o.contains_key("device"))
    }
}

/// The request of `POST /volumes/create`.
#[derive(Debug, Clone, Default, Deserialize)]
#[serde(rename_all = "PascalCase", default)]
pub struct CreateOptions {
    pub name: String,
    pub driver: String,
    #[serde(deserialize_with = "nullable")]
    pub driver_opts: Option<BTreeMap<String, String>>,
    #[serde(deserialize_with = "nullable")]
    pub labels: Option<BTreeMap<String, String>>,
}

fn nullable<'de, D: serde::Deserializer<'de>, T: Deserialize<'de>>(
    d: D,
) -> Result<Option<T>, D::Error> {
    Option::<T>::deserialize(d)
}

/// dockerd's local-driver rule: `[a-zA-Z0-9][a-zA-Z0-9_.-]+`.
pub fn validate_name(name: &str) -> VolumeResult<()> {
    if name.len() == 1 {
        return Err(VolumeError::NameTooShort);
    }
    let mut chars = name.chars();
    let first_ok = chars.next().is_some_and(|c| c.is_ascii_alphanumeric());
    let rest_ok = chars.all(|c| c.is_ascii_alphanumeric() || matches!(c, '_' | '.' | '-'));
    if !first_ok || !rest_ok {
        return Err(VolumeError::InvalidName { name: name.into() });
    }
    Ok(())
}

fn validate_options(opts: &BTreeMap<String, String>) -> VolumeResult<()> {
    for key in opts.keys() {
        match key.as_str() {
            "type" | "device" | "o" => {}
            "size" => return Err(VolumeError::NoQuota),
            _ => return Err(VolumeError::InvalidOption { key: key.clone() }),
        }
    }
    Ok(())
}

pub fn random_name() -> String {
    hex::encode(rand::random::<[u8; 32]>())
}

#[derive(Default)]
struct Inner {
    volumes: BTreeMap<String, Volume>,
    /// volume name → IDs of the containers that reference it.
    refs: HashMap<String, BTreeSet<String>>,
    /// Volumes whose options are mounted on `_data` now.
    mounted: BTreeSet<String>,
}

pub struct VolumeStore {
    root: PathBuf,
    inner: Mutex<Inner>,
}

impl VolumeStore {
    /// Loads every volume under `root` (created if missing). Directories without a
    /// readable `volume.json` are leftovers of a create that crashed and are removed.
    pub fn open(root: &Path) -> VolumeResult<Self> {
        std::fs::create_dir_all(root).map_err(io("create", root))?;
        let mut inner = Inner::default();
        for entry in std::fs::read_dir(root).map_err(io("read", root))? {
            let entry = entry.map_err(io("read", root))?;
            let dir = entry.path();
            let meta = dir.join(META);
            match std::fs::read(&meta) {
                Ok(raw) => match serde_json::from_slice::<Volume>(&raw) {
                    Ok(v) => {
                        // A mount left by an engine that was killed stays in use; it is
                        // known as mounted so it is unmounted at removal.
                        if v.needs_mount() && sys::is_mounted(&dir.join(DATA)) {
                            inner.mounted.insert(v.name.clone());
                        }
                        inner.volumes.insert(v.name.clone(), v);
                    }
                    Err(e) => {
                        tracing::warn!(path = %meta.display(), error = %e, "unreadable volume metadata; volume skipped")
                    }
                },
                Err(e) if e.kind() == std::io::ErrorKind::NotFound => {
                    if !sys::is_mounted(&dir.join(DATA)) {
                        let _ = std::fs::remove_dir_all(&dir);
                    }
                }
                Err(e) => {
                    tracing::warn!(path = %meta.display(), error = %e, "volume metadata unreadable")
                }
            }
        }
        Ok(Self {
            root: root.to_path_buf(),
            inner: Mutex::new(inner),
        })
    }

    fn lock(&self) -> std::sync::MutexGuard<'_, Inner> {
        self.inner.lock().unwrap_or_else(|e| e.into_inner())
    }

    pub fn data_path(&self, name: &str) -> PathBuf {
        self.root.join(name).join(DATA)
    }

    /// `docker volume create`: an existing volume of that name is returned as it is, like
    /// dockerd does. Returns the volume and whether it was created now.
    pub fn create(&self, opts: CreateOptions) -> VolumeResult<(Volume, bool)> {
        if !opts.driver.is_empty() && opts.driver != "local" {
            return Err(VolumeError::NoDriver {
                driver: opts.driver,
            });
        }
        let name = if opts.name.is_empty() {
            random_name()
        } else {
            opts.name
        };
        validate_name(&name)?;
        let options = opts.driver_opts.filter(|o| !o.is_empty());
        if let Some(o) = &options {
            validate_options(o)?;
        }
        let mut inner = self.lock();
        if let Some(v) = inner.volumes.get(&name) {
            return Ok((v.clone(), false));
        }
        let v = Volume {
            name: name.clone(),
            created_at: Utc::now(),
            labels: opts.labels,
            options,
        };
        let dir = self.root.join(&name);
        let data = dir.join(DATA);
        let made = (|| {
            crate::store::create_dir_durable(&data).map_err(io("create", &data))?;
            let raw = serde_json::to_vec_pretty(&v).unwrap_or_default();
            let meta = dir.join(META);
            crate::store::write_atomic(&meta, &raw).map_err(io("write", &meta))
        })();
        if let Err(e) = made {
            let _ = std::fs::remove_dir_all(&dir);
            return Err(e);
        }
        inner.volumes.insert(name, v.clone());
        Ok((v, true))
    }

    pub fn get(&self, name: &str) -> VolumeResult<Volume> {
        self.lock()
            .volumes
            .get(name)
            .cloned()
            .ok_or_else(|| VolumeError::NotFound { name: name.into() })
    }

    pub fn list(&self) -> Vec<Volume> {
        self.lock().volumes.values().cloned().collect()
    }

    /// IDs of the containers using `name`.
    pub fn users(&self, name: &str) -> Vec<String> {
        self.lock()
            .refs
            .get(name)
            .map(|s| s.iter().cloned().collect())
            .unwrap_or_default()
    }

    /// Marks `name` used by `container` (mounting its options the first time); fails if
    /// the volume is gone.
    pub fn add_ref(&self, name: &str, container: &str) -> VolumeResult<()> {
        let mut inner = self.lock();
        let Some(v) = inner.volumes.get(name).cloned() else {
            return Err(VolumeError::NotFound { name: name.into() });
        };
        if v.needs_mount() && !inner.mounted.contains(name) {
            let opts = v.options.clone().unwrap_or_default();
            sys::mount_options(&opts, &self.data_path(name)).map_err(|message| {
                VolumeError::Mount {
                    name: name.into(),
                    message,
                }
            })?;
            inner.mounted.insert(name.into());
        }
        inner
            .refs
            .entry(name.into())
            .or_default()
            .insert(container.into());
        Ok(())
    }

    /// Forgets `container`'s use of `name`; the last user unmounts the volume's options.
    pub fn remove_ref(&self, name: &str, container: &str) {
        let mut inner = self.lock();
        let empty = inner.refs.get_mut(name).is_some_and(|s| {
            s.remove(container);
            s.is_empty()
        });
        if empty {
            inner.refs.remove(name);
            if inner.mounted.remove(name) {
                if let Err(e) = sys::unmount(&self.data_path(name)) {
                    tracing::warn!(volume = name, error = %e, "unmounting the volume failed");
                }
            }
        }
    }

    /// `docker volume rm`: refused while a container references the volume. With
    /// `force` a missing volume is not an error.
    pub fn remove(&self, name: &str, force: bool) -> VolumeResult<()> {
        let mut inner = self.lock();
        if !inner.volumes.contains_key(name) {
            return if force {
                Ok(())
            } else {
                Err(VolumeError::NotFound { name: name.into() })
            };
        }
        if let Some(ids) = inner.refs.get(name).filter(|s| !s.is_empty()) {
            return Err(VolumeError::InUse {
                name: name.into(),
                ids: ids.iter().cloned().collect(),
            });
        }
        self.remove_locked(&mut inner, name)
    }

    fn remove_locked(&self, inner: &mut Inner, name: &str) -> VolumeResult<()> {
        let dir = self.root.join(name);
        if inner.mounted.remove(name) || sys::is_mounted(&dir.join(DATA)) {
            sys::unmount(&dir.join(DATA)).map_err(|message| VolumeError::Mount {
                name: name.into(),
                message,
            })?;
        }
        // The metadata goes first: a crash after it leaves a directory that `open` removes.
        let meta = dir.join(META);
        match std::fs::remove_file(&meta) {
            Err(e) if e.kind() != std::io::ErrorKind::NotFound => {
                return Err(io("remove", &meta)(e))
            }
            _ => {}
        }
        inner.volumes.remove(name);
        inner.refs.remove(name);
        std::fs::remove_dir_all(&dir).map_err(io("remove", &dir))
    }

    /// `docker volume prune`: unused volumes accepted by `keep`; returns (names, bytes).
    pub fn prune(&self, select: impl Fn(&Volume) -> bool) -> (Vec<String>, u64) {
        let mut inner = self.lock();
        let names: Vec<String> = inner
            .volumes
            .values()
            .filter(|v| inner.refs.get(&v.name).is_none_or(|s| s.is_empty()) && select(v))
            .map(|v| v.name.clone())
            .collect();
        let mut gone = Vec::new();
        let mut space = 0;
        for name in names {
            let size = dir_size(&self.data_path(&name));
            match self.remove_locked(&mut inner, &name) {
                Ok(()) => {
                    gone.push(name);
                    space += size;
                }
                Err(e) => tracing::warn!(volume = %name, error = %e, "prune: removal failed"),
            }
        }
        (gone, space)
    }

    /// Whether `name` is referenced by any container.
    pub fn in_use(&self, name: &str) -> bool {
        self.lock().refs.get(name).is_some_and(|s| !s.is_empty())
    }

    /// dockerd's volume JSON (`GET /volumes/{name}`); `usage` adds `UsageData` (df).
    pub fn view(&self, v: &Volume, usage: bool) -> Value {
        let mut out = json!({
            "CreatedAt": v.created_at.to_rfc3339_opts(SecondsFormat::Secs, true),
            "Driver": "local",
            "Labels": v.labels,
            "Mountpoint": self.data_path(&v.name),
            "Name": v.name,
            "Options": v.options,
            "Scope": "local",
        });
        if usage {
            out["UsageData"] = json!({
                "Size": dir_size(&self.data_path(&v.name)),
                "RefCount": self.users(&v.name).len(),
            });
        }
        out
    }
}

/// Bytes used by the regular files under `dir` (not following symlinks).
pub fn dir_size(dir: &Path) -> u64 {
    let Ok(meta) = std::fs::symlink_metadata(dir) else {
        return 0;
    };
    if !meta.is_dir() {
        return meta.len();
    }
    let Ok(entries) = std::fs::read_dir(dir) else {
        return 0;
    };
    entries
        .flatten()
        .map(|e| {
            let p = e.path();
            match e.file_type() {
                Ok(t) if t.is_dir() => dir_size(&p),
                Ok(t) if t.is_file() => e.metadata().map_or(0, |m| m.len()),
                _ => 0,
            }
        })
        .sum()
}

#[cfg(test)]
mod tests;
