//! The container's cgroup: where it is (from the init's /proc/PID/cgroup, or the spec's
//! `cgroupsPath`), its statistics for the Stats RPC (containerd's cgroups v1/v2 Metrics),
//! and the shim's own placement (`--cgroup`).
//!
//! Paths are resolved through the mount table rather than assumed under /sys/fs/cgroup,
//! so co-mounted controllers (`cpu,cpuacct`) and hybrid hosts work, and tests can point
//! everything at a fake tree.

mod files;
mod mounts;
pub mod place;
mod v1;
mod v2;

use std::collections::BTreeMap;
use std::path::{Path, PathBuf};

use prost_types::Any;

pub use mounts::{Hierarchies, Hierarchy};
pub use place::place_self;

#[derive(Debug, thiserror::Error)]
pub enum CgroupError {
    #[error("cannot read {path}")]
    Read {
        path: PathBuf,
        #[source]
        source: std::io::Error,
    },
    #[error("unexpected content {text:?} in {path}")]
    Parse { path: PathBuf, text: String },
    #[error("pid {pid} is in no cgroup mounted here")]
    NoCgroup { pid: u32 },
    #[error(
        "cgroupsPath {path:?} is not an absolute cgroupfs path (systemd-style paths are not supported)"
    )]
    SpecPath { path: String },
    #[error("the bundle's config.json has no linux.cgroupsPath")]
    NoSpecPath,
    #[error("cannot read {path}")]
    Spec {
        path: PathBuf,
        #[source]
        source: serde_json::Error,
    },
    #[error("no cgroup hierarchy is mounted")]
    NoHierarchy,
    #[error("cgroup {path} does not exist (any more)")]
    Gone { path: PathBuf },
    #[error("invalid shim cgroup {path:?}: want an absolute path without `.` or `..`")]
    BadPath { path: String },
    #[error("cannot create cgroup {path}")]
    Create {
        path: PathBuf,
        #[source]
        source: std::io::Error,
    },
    #[error("cannot write {path}")]
    Write {
        path: PathBuf,
        #[source]
        source: std::io::Error,
    },
}

/// Where one cgroup lives in each mounted hierarchy.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum CgroupPaths {
    /// v1 (or hybrid): the directory per controller name, e.g. `memory` → .../memory/c1.
    V1(BTreeMap<String, PathBuf>),
    /// Unified hierarchy only.
    V2(PathBuf),
}

impl CgroupPaths {
    /// The cgroup of a live process, as this host mounts it.
    pub fn for_pid(pid: u32) -> Result<CgroupPaths, CgroupError> {
        let path = PathBuf::from(format!("/proc/{pid}/cgroup"));
        let text =
            std::fs::read_to_string(&path).map_err(|source| CgroupError::Read { path, source })?;
        Hierarchies::current()?
            .resolve(&text)
            .ok_or(CgroupError::NoCgroup { pid })
    }

    /// The cgroup the bundle's `linux.cgroupsPath` names (for when the init is gone).
    pub fn from_bundle(bundle: &Path) -> Result<CgroupPaths, CgroupError> {
        let path = bundle.join("config.json");
        let text = std::fs::read(&path).map_err(|source| CgroupError::Read {
            path: path.clone(),
            source,
        })?;
        let spec: serde_json::Value =
            serde_json::from_slice(&text).map_err(|source| CgroupError::Spec { path, source })?;
        let cgroups_path = spec["linux"]["cgroupsPath"]
            .as_str()
            .ok_or(CgroupError::NoSpecPath)?;
        Hierarchies::current()?.from_cgroups_path(cgroups_path)
    }

    /// The v1 directory of `controller`, if that controller is mounted.
    pub fn v1_dir(&self, controller: &str) -> Option<&Path> {
        match self {
            CgroupPaths::V1(dirs) => dirs.get(controller).map(PathBuf::as_path),
            CgroupPaths::V2(_) => None,
        }
    }

    /// The cgroup's statistics packed as containerd does: an Any of
    /// `io.containerd.cgroups.v1.Metrics` or `io.containerd.cgroups.v2.Metrics`.
    pub fn metrics(&self) -> Result<Any, CgroupError> {
        self.metrics_with_devices(Path::new("/sys/dev/block"))
    }

    /// [`metrics`](Self::metrics) with block device names looked up under `sys_dev_block`.
    pub fn metrics_with_devices(&self, sys_dev_block: &Path) -> Result<Any, CgroupError> {
        match self {
            CgroupPaths::V1(dirs) => {
                // One existing directory is enough: a controller may be unmounted
                // meanwhile, but if none exists the container's cgroup is gone.
                if let Some(missing) = dirs.values().find(|d| !d.is_dir()) {
                    if dirs.values().all(|d| !d.is_dir()) {
                        return Err(CgroupError::Gone {
                            path: missing.clone(),
                        });
                    }
                }
                Ok(berth_proto::any::pack(&v1::metrics(dirs, sys_dev_block)?))
            }
            CgroupPaths::V2(dir) => {
                if !dir.is_dir() {
                    return Err(CgroupError::Gone { path: dir.clone() });
                }
                Ok(berth_proto::any::pack(&v2::metrics(dir)?))
            }
        }
    }
}

#[cfg(test)]
mod tests;
