//! The task directory `<state>/<ns>/<id>/`: the OCI bundle we write, plus the files the
//! shim keeps there (docs/ARCHITECTURE.md, "Directories and sockets"). Everything highd
//! knows about a task can be rebuilt from this directory after a restart.

use std::path::{Path, PathBuf};

use chrono::{DateTime, Utc};
use serde::Deserialize;

use super::options::TaskRuntime;

#[derive(Debug, thiserror::Error)]
pub enum BundleError {
    #[error("cannot {action} {path}")]
    Io {
        action: &'static str,
        path: PathBuf,
        source: std::io::Error,
    },
    #[error("container spec is not valid JSON")]
    SpecJson { source: serde_json::Error },
    #[error("container spec must be a JSON object")]
    SpecNotObject,
    #[error("rootfs {path} is still mounted and could not be unmounted: {errno}")]
    StillMounted { path: PathBuf, errno: nix::Error },
}

/// The shim's record of the init process's exit.
#[derive(Debug, Clone, PartialEq, Eq, Deserialize)]
pub struct ExitRecord {
    #[serde(default)]
    pub pid: u32,
    pub exit_status: u32,
    pub exited_at: Option<DateTime<Utc>>,
}

/// The runtime binary, root and cgroup options the task was created with.
pub const RUNTIME_FILE: &str = "runtime.json";

/// Present in a task dir from its creation until the shim's Create succeeded.
pub const CREATING: &str = "creating";

#[derive(Debug, Clone)]
pub struct Bundle {
    pub dir: PathBuf,
}

fn io(action: &'static str, path: &Path) -> impl FnOnce(std::io::Error) -> BundleError {
    let path = path.to_path_buf();
    move |source| BundleError::Io {
        action,
        path,
        source,
    }
}

impl Bundle {
    pub fn at(state: &Path, namespace: &str, id: &str) -> Bundle {
        Bundle {
            dir: state.join(namespace).join(id),
        }
    }

    /// Creates the directory with `config.json` and an empty `rootfs/`. With rootfs
    /// mounts, `root.path` becomes "rootfs" since the shim mounts them there; without,
    /// an absolute `root.path` is kept (`ctr run --rootfs DIR`, as containerd does).
    /// Fails if the directory exists: a leftover belongs to a task we still track.
    pub fn create(
        &self,
        spec_json: &[u8],
        has_mounts: bool,
        runtime: Option<&TaskRuntime>,
    ) -> Result<(), BundleError> {
        let mut spec: serde_json::Value =
            serde_json::from_slice(spec_json).map_err(|source| BundleError::SpecJson { source })?;
        let obj = spec.as_object_mut().ok_or(BundleError::SpecNotObject)?;
        let root = obj.entry("root").or_insert_with(|| serde_json::json!({}));
        let absolute = root
            .get("path")
            .and_then(|p| p.as_str())
            .is_some_and(|p| p.starts_with('/'));
        if has_mounts || !absolute {
            match root.as_object_mut() {
                Some(root) => {
                    root.insert("path".into(), "rootfs".into());
                }
                None => *root = serde_json::json!({ "path": "rootfs" }),
            }
        }
        self.create_dir()?;
        let result = (|| {
            // First, so a crash at any later point of Create is recognised at start-up.
            let marker = self.dir.join(CREATING);
            std::fs::write(&marker, b"").map_err(io("write", &marker))?;
            let rootfs = self.dir.join("rootfs");
            std::fs::create_dir(&rootfs).map_err(io("create", &rootfs))?;
            let config = self.dir.join("config.json");
            let bytes = serde_json::to_vec_pretty(&spec)
                .map_err(|source| BundleError::SpecJson { source })?;
            // Durable (file and entry) before the shim, and through it the runtime,
            // reads it: a container must never run from a config.json that a power
            // loss could take back or leave torn (invariant 3).
            berth_fsutil::write_new_synced(&config, &bytes, 0o644).map_err(io("write", &config))?;
            if let Some(runtime) = runtime {
                // Not fsynced: only clean-up after a restart reads it, and an unreadable
                // one falls back to the runtime name's configuration.
                let path = self.dir.join(RUNTIME_FILE);
                let bytes = serde_json::to_vec(runtime)
                    .map_err(|source| BundleError::SpecJson { source })?;
                std::fs::write(&path, bytes).map_err(io("write", &path))?;
            }
            berth_fsutil::fsync_dir(&self.dir).map_err(io("sync", &self.dir))
        })();
        if result.is_err() {
            let _ = std::fs::remove_dir_all(&self.dir);
        }
        result
    }

    /// Creates the task directory (failing if it exists) and any missing `<ns>` and
    /// state dirs, and fsyncs the parent of each one it created, so the directory cannot
    /// vanish after a power loss once `mark_created` made its content durable
    /// (invariant 3). Returns the directories it fsynced.
    fn create_dir(&self) -> Result<Vec<PathBuf>, BundleError> {
        let parent = match self.dir.parent() {
            Some(p) if !p.as_os_str().is_empty() => p,
            _ => Path::new("."),
        };
        let mut synced = berth_fsutil::create_dir_durable(parent).map_err(io("create", parent))?;
        std::fs::create_dir(&self.dir).map_err(io("create", &self.dir))?;
        berth_fsutil::fsync_dir(parent).map_err(io("sync", parent))?;
        synced.insert(0, parent.to_path_buf());
        Ok(synced)
    }

    /// Create finished: the task is now one recovery keeps. Durable before the caller
    /// hears "ok" (invariant 3).
    pub fn mark_created(&self) -> Result<(), BundleError> {
        let marker = self.dir.join(CREATING);
        std::fs::remove_file(&marker).map_err(io("remove", &marker))?;
        berth_fsutil::fsync_dir(&self.dir).map_err(io("sync", &self.dir))
    }

    /// True when a Create of this task never finished (highd died in the middle), or
    /// died before even writing the marker (the directory is empty).
    pub fn is_unfinished(&self) -> bool {
        self.dir.join(CREATING).exists()
            || std::fs::read_dir(&self.dir).is_ok_and(|mut d| d.next().is_none())
    }

    /// The runtime this task was created with (`runtime.json`), if recorded.
    pub fn runtime(&self) -> Option<TaskRuntime> {
        let bytes = std::fs::read(self.dir.join(RUNTIME_FILE)).ok()?;
        serde_json::from_slice(&bytes).ok()
    }

    /// The socket path the shim recorded, if any.
    pub fn address(&self) -> Option<PathBuf> {
        let text = std::fs::read_to_string(self.dir.join("address")).ok()?;
        let text = text.trim();
        let text = text.strip_prefix("unix://").unwrap_or(text);
        (!text.is_empty()).then(|| PathBuf::from(text))
    }

    pub fn exit_record(&self) -> Option<ExitRecord> {
        let bytes = std::fs::read(self.dir.join("exit.json")).ok()?;
        match serde_json::from_slice(&bytes) {
            Ok(rec) => Some(rec),
            Err(e) => {
                tracing::warn!(dir = %self.dir.display(), error = %e, "unreadable exit.json");
                None
            }
        }
    }

    pub fn init_pid(&self) -> Option<u32> {
        std::fs::read_to_string(self.dir.join("init.pid"))
            .ok()?
            .trim()
            .parse()
            .ok()
    }

    /// Removes the directory. The rootfs is unmounted first: removing recursively
    /// through a live mount would delete the snapshot's files.
    pub fn remove(&self) -> Result<(), BundleError> {
        let rootfs = self.dir.join("rootfs");
        for _ in 0..16 {
            if !is_mount_point(&rootfs) {
                break;
            }
            if let Err(errno) = nix::mount::umount2(&rootfs, nix::mount::MntFlags::MNT_DETACH) {
                return Err(BundleError::StillMounted {
                    path: rootfs,
                    errno,
                });
            }
        }
        if is_mount_point(&rootfs) {
            return Err(BundleError::StillMounted {
                path: rootfs,
                errno: nix::Error::EBUSY,
            });
        }
        match std::fs::remove_dir_all(&self.dir) {
            Ok(()) => Ok(()),
            Err(e) if e.kind() == std::io::ErrorKind::NotFound => Ok(()),
            Err(e) => Err(io("remove", &self.dir)(e)),
        }
    }
}

/// True if `path` is the mount point of some entry in our mount table.
fn is_mount_point(path: &Path) -> bool {
    let Ok(table) = std::fs::read_to_string("/proc/self/mountinfo") else {
        return false;
    };
    let wanted = path.to_string_lossy();
    table.lines().any(|line| {
        line.split(' ')
            .nth(4)
            .map(unescape_mountinfo)
            .is_some_and(|mp| mp == wanted)
    })
}

/// mountinfo escapes space, tab, newline and backslash as `\ooo`.
fn unescape_mountinfo(field: &str) -> String {
    let bytes = field.as_bytes();
    let mut out = Vec::with_capacity(bytes.len());
    let mut i = 0;
    while i < bytes.len() {
        if bytes[i] == b'\\'
            && i + 3 < bytes.len()
            && bytes[i + 1..i + 4]
                .iter()
                .all(|b| (b'0'..=b'7').contains(b))
        {
            let s = std::str::from_utf8(&bytes[i + 1..i + 4]).unwrap_or("0");
            out.push(u8::from_str_radix(s, 8).unwrap_or(b'?'));
            i += 4;
        } else {
            out.push(bytes[i]);
            i += 1;
        }
    }
    String::from_utf8_lossy(&out).into_owned()
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn create_sets_rootfs_and_cleans_up_on_bad_spec() {
        let dir = tempfile::tempdir().unwrap();
        let b = Bundle::at(dir.path(), "ns", "c1");
        assert!(matches!(
            b.create(b"[1]", true, None),
            Err(BundleError::SpecNotObject)
        ));
        assert!(!b.dir.exists());
        b.create(
            br#"{"ociVersion":"1.0.2","root":{"path":"/elsewhere","readonly":true}}"#,
            true,
            None,
        )
        .unwrap();
        let spec: serde_json::Value =
            serde_json::from_slice(&std::fs::read(b.dir.join("config.json")).unwrap()).unwrap();
        assert_eq!(spec["root"]["path"], "rootfs");
        assert_eq!(spec["root"]["readonly"], true);
        assert!(b.dir.join("rootfs").is_dir());
        assert!(
            b.create(b"{}", true, None).is_err(),
            "existing dir must not be reused"
        );
        b.remove().unwrap();
        assert!(!b.dir.exists());
        b.create(br#"{"root":{"path":"/elsewhere"}}"#, false, None)
            .unwrap();
        let spec: serde_json::Value =
            serde_json::from_slice(&std::fs::read(b.dir.join("config.json")).unwrap()).unwrap();
        assert_eq!(
            spec["root"]["path"], "/elsewhere",
            "no mounts: keep the given root"
        );
        b.remove().unwrap();
    }

    #[test]
    fn reads_shim_files() {
        let dir = tempfile::tempdir().unwrap();
        let b = Bundle::at(dir.path(), "ns", "c2");
        b.create(b"{}", false, None).unwrap();
        assert_eq!(b.address(), None);
        assert_eq!(b.exit_record(), None);
        std::fs::write(b.dir.join("address"), "unix:///tmp/x.sock\n").unwrap();
        std::fs::write(
            b.dir.join("exit.json"),
            r#"{"pid":42,"exit_status":3,"exited_at":"2024-01-02T03:04:05.123456789Z"}"#,
        )
        .unwrap();
        std::fs::write(b.dir.join("init.pid"), "42").unwrap();
        assert_eq!(b.address(), Some(PathBuf::from("/tmp/x.sock")));
        let rec = b.exit_record().unwrap();
        assert_eq!((rec.pid, rec.exit_status), (42, 3));
        assert!(rec.exited_at.is_some());
        assert_eq!(b.init_pid(), Some(42));
        assert_eq!(b.runtime(), None);
        let b3 = Bundle::at(dir.path(), "ns", "c3");
        let rt = TaskRuntime {
            runtime: "runc".into(),
            runtime_root: "/run/x/ns".into(),
            systemd_cgroup: false,
            shim_cgroup: None,
        };
        b3.create(b"{}", false, Some(&rt)).unwrap();
        assert_eq!(b3.runtime(), Some(rt));
    }

    #[test]
    fn create_fsyncs_the_dirs_holding_new_entries() {
        let dir = tempfile::tempdir().unwrap();
        let state = dir.path().join("state");
        let b = Bundle::at(&state, "ns", "c1");
        // state/ and state/ns/ are new: their parents are synced too, deepest first.
        assert_eq!(
            b.create_dir().unwrap(),
            vec![state.join("ns"), state.clone(), dir.path().to_path_buf()]
        );
        // Only the task dir is new: just its namespace dir is synced.
        let b2 = Bundle::at(&state, "ns", "c2");
        assert_eq!(b2.create_dir().unwrap(), vec![state.join("ns")]);
        assert!(b2.create_dir().is_err(), "existing task dir is not reused");
    }

    #[test]
    fn mountinfo_unescape() {
        assert_eq!(unescape_mountinfo(r"/a\040b"), "/a b");
        assert_eq!(unescape_mountinfo("/plain"), "/plain");
    }
}
