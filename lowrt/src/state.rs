//! The persisted container record (`<root>/<id>/state.json`, written atomically), its
//! status, and the JSON that `state` and `list` print (runc's shape).

use std::collections::HashMap;
use std::io;
use std::path::{Path, PathBuf};

use chrono::{DateTime, Utc};
use nix::unistd::Pid;
use oci_spec::runtime::Spec;
use serde::{Deserialize, Serialize};

use crate::cgroups::CgroupConfig;

pub const STATE_FILE: &str = "state.json";
pub const FIFO_FILE: &str = "exec.fifo";
const STATE_VERSION: u32 = 1;

#[derive(Debug, thiserror::Error)]
pub enum StateError {
    #[error("container \"{0}\" does not exist")]
    NotFound(String),
    #[error("{op} {}: {source}", path.display())]
    Io {
        op: &'static str,
        path: PathBuf,
        source: io::Error,
    },
    #[error("corrupt state file {}: {source}", path.display())]
    Corrupt {
        path: PathBuf,
        source: serde_json::Error,
    },
    #[error("state file {} has version {found}, this lowrt reads version {STATE_VERSION}", path.display())]
    Version { path: PathBuf, found: u32 },
}

fn io_err<'a>(op: &'static str, path: &'a Path) -> impl FnOnce(io::Error) -> StateError + 'a {
    move |source| StateError::Io {
        op,
        path: path.to_path_buf(),
        source,
    }
}

/// OCI runtime-spec container status.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum Status {
    Created,
    Running,
    Paused,
    Stopped,
}

impl Status {
    pub fn as_str(self) -> &'static str {
        match self {
            Status::Created => "created",
            Status::Running => "running",
            Status::Paused => "paused",
            Status::Stopped => "stopped",
        }
    }
    pub fn can_start(self) -> bool {
        self == Status::Created
    }
    pub fn can_kill(self) -> bool {
        self != Status::Stopped
    }
    pub fn can_delete(self) -> bool {
        matches!(self, Status::Created | Status::Stopped)
    }
    pub fn can_exec(self) -> bool {
        matches!(self, Status::Created | Status::Running)
    }
}

impl std::fmt::Display for Status {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str(self.as_str())
    }
}

/// What lowrt remembers about a container between commands.
#[derive(Debug, Clone, Serialize, Deserialize)]
pub struct State {
    pub version: u32,
    pub id: String,
    /// Init's pid in the runtime's pid namespace.
    pub pid: i32,
    /// Init's start time (field 22 of /proc/<pid>/stat), to tell it from a reused pid.
    pub pid_start: u64,
    pub bundle: PathBuf,
    pub rootfs: PathBuf,
    pub created: DateTime<Utc>,
    pub owner: String,
    pub cgroup: CgroupConfig,
    pub config: Spec,
    /// The resctrl group of `linux.intelRdt` (absent: none).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub intel_rdt: Option<crate::intelrdt::RdtGroup>,
}

/// runc's `state` output.
#[derive(Debug, Clone, Serialize, Deserialize)]
pub struct OciState {
    #[serde(rename = "ociVersion")]
    pub oci_version: String,
    pub id: String,
    pub pid: i32,
    pub status: Status,
    pub bundle: PathBuf,
    pub rootfs: PathBuf,
    pub created: String,
    pub owner: String,
    #[serde(skip_serializing_if = "HashMap::is_empty", default)]
    pub annotations: HashMap<String, String>,
}

/// Process state letter and start time from /proc/<pid>/stat (proc(5)); None if gone.
pub fn proc_stat(pid: Pid) -> Option<(char, u64)> {
    let text = std::fs::read_to_string(format!("/proc/{pid}/stat")).ok()?;
    // comm may contain spaces and parentheses; fields restart after the last ')'.
    let rest = &text[text.rfind(')')? + 2..];
    let mut fields = rest.split(' ');
    let state = fields.next()?.chars().next()?;
    let start = fields.nth(18)?.parse().ok()?;
    Some((state, start))
}

impl State {
    pub fn new(
        id: &str,
        pid: i32,
        pid_start: u64,
        bundle: PathBuf,
        cgroup: CgroupConfig,
        config: Spec,
    ) -> Self {
        let root = config
            .root()
            .as_ref()
            .map(|r| r.path().clone())
            .unwrap_or_default();
        let rootfs = if root.is_absolute() {
            root
        } else {
            bundle.join(root)
        };
        State {
            version: STATE_VERSION,
            id: id.to_owned(),
            pid,
            pid_start,
            bundle,
            rootfs,
            created: Utc::now(),
            owner: String::new(),
            cgroup,
            config,
            intel_rdt: None,
        }
    }

    pub fn dir(root: &Path, id: &str) -> PathBuf {
        root.join(id)
    }

    pub fn load(root: &Path, id: &str) -> Result<Self, StateError> {
        let path = Self::dir(root, id).join(STATE_FILE);
        let data = match std::fs::read(&path) {
            Ok(d) => d,
            Err(e) if e.kind() == io::ErrorKind::NotFound => {
                return Err(StateError::NotFound(id.to_owned()))
            }
            Err(e) => return Err(io_err("read", &path)(e)),
        };
        let state: State = serde_json::from_slice(&data).map_err(|source| StateError::Corrupt {
            path: path.clone(),
            source,
        })?;
        if state.version != STATE_VERSION {
            return Err(StateError::Version {
                path,
                found: state.version,
            });
        }
        Ok(state)
    }

    /// Atomic write (temp file + rename): another process, or this one killed midway,
    /// sees the old record or the new one, never a torn one. Not fsynced, as runc does
    /// not: state.json describes live processes and cgroups, which a machine crash takes
    /// with it, so after a power loss an old or missing record is as true as the new
    /// one; DESIGN invariant 3 asks durability only of state that must survive a crash.
    /// On a disk-backed --root the two fsyncs cost more than all the rest of `create`.
    pub fn save(&self, dir: &Path) -> Result<(), StateError> {
        let data = serde_json::to_vec(self).map_err(|source| StateError::Corrupt {
            path: dir.join(STATE_FILE),
            source,
        })?;
        write_atomic(&dir.join(STATE_FILE), &data)
    }

    /// Whether init is still the process we started.
    pub fn init_alive(&self) -> bool {
        matches!(proc_stat(Pid::from_raw(self.pid)), Some((s, start)) if start == self.pid_start && s != 'Z' && s != 'X')
    }

    pub fn status(&self, root: &Path) -> Status {
        if !self.init_alive() {
            return Status::Stopped;
        }
        if Self::dir(root, &self.id).join(FIFO_FILE).exists() {
            return Status::Created;
        }
        if self.cgroup.manager().frozen().unwrap_or(false) {
            return Status::Paused;
        }
        Status::Running
    }

    pub fn to_oci(&self, status: Status) -> OciState {
        OciState {
            oci_version: self.config.version().clone(),
            id: self.id.clone(),
            pid: if status == Status::Stopped {
                0
            } else {
                self.pid
            },
            status,
            bundle: self.bundle.clone(),
            rootfs: self.rootfs.clone(),
            created: self
                .created
                .to_rfc3339_opts(chrono::SecondsFormat::Nanos, true),
            owner: self.owner.clone(),
            annotations: self.config.annotations().clone().unwrap_or_default(),
        }
    }
}

/// Writes `data` to `path` atomically, without fsync (state.json and pid files: see
/// [`State::save`]; runc writes its pid file the same way), with the helper highd, the
/// shim and the engine share.
pub fn write_atomic(path: &Path, data: &[u8]) -> Result<(), StateError> {
    berth_fsutil::write_atomic_nosync(path, data).map_err(io_err("write", path))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn own_stat_parses_and_state_round_trips() {
        let (s, start) = proc_stat(nix::unistd::getpid()).unwrap();
        assert!(s == 'R' || s == 'S');
        assert!(start > 0);
        let tmp = tempfile::tempdir().unwrap();
        let cg = CgroupConfig {
            path: "/x".into(),
            layout: Default::default(),
        };
        let st = State::new(
            "c1",
            1,
            2,
            tmp.path().into(),
            cg,
            crate::spec::default_spec(),
        );
        std::fs::create_dir(tmp.path().join("c1")).unwrap();
        st.save(&tmp.path().join("c1")).unwrap();
        let back = State::load(tmp.path(), "c1").unwrap();
        assert_eq!(back.pid_start, 2);
        assert_eq!(back.rootfs, tmp.path().join("rootfs"));
        assert!(matches!(
            State::load(tmp.path(), "nope"),
            Err(StateError::NotFound(_))
        ));
    }
}
