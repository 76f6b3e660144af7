//! Cgroup management behind one trait, with a v1 (per-controller hierarchies) and a v2
//! (unified) implementation. On a hybrid host (v1 controllers plus a controller-less
//! cgroup2 mount, like this project's CI) the container is placed in both: v1 enforces the
//! limits, v2 only tracks membership, as runc does.

pub mod devices_bpf;
mod layout;
mod oom;
pub mod stats;
mod usage;
mod v1;
mod v2;

use std::io;
use std::os::fd::{AsFd, OwnedFd};
use std::path::{Path, PathBuf};

use nix::unistd::Pid;
use oci_spec::runtime::LinuxResources;
use serde::{Deserialize, Serialize};

pub use layout::{detect_layout, unescape as unescape_mountinfo, CgroupLayout, V1Hierarchy};
pub use oom::{OomEvent, OomWatch};
pub use v1::V1Manager;
pub use v2::V2Manager;

#[derive(Debug, thiserror::Error)]
pub enum CgroupError {
    #[error("cgroup {op} {}: {source}", path.display())]
    Io {
        op: &'static str,
        path: PathBuf,
        source: io::Error,
    },
    #[error("cannot read /proc/self/mountinfo: {0}")]
    Mountinfo(#[source] io::Error),
    #[error("no cgroup hierarchy is mounted")]
    NoHierarchy,
    #[error("invalid cgroupsPath {0:?}: it must not contain \"..\"")]
    InvalidPath(PathBuf),
    #[error("systemd cgroup paths (\"{0}\", slice:prefix:name) are not supported yet; use a cgroupfs path like /berth/<id>")]
    Systemd(String),
    #[error("cgroup v2 controller {controller} is not available under {}; cannot apply {what}", root.display())]
    ControllerMissing {
        controller: String,
        root: PathBuf,
        what: &'static str,
    },
    #[error("cgroup {} still has processes after {waited_ms} ms", path.display())]
    Busy { path: PathBuf, waited_ms: u64 },
    #[error("cannot set real-time CPU limits: the kernel has no {file} (RT group scheduling, CONFIG_RT_GROUP_SCHED, is off)")]
    NoRtGroupSched { file: &'static str },
    #[error(
        "cannot set real-time CPU limits on cgroup v2: it has no RT group scheduling interface"
    )]
    V2Realtime,
    #[error("invalid device cgroup rule {rule:?}: {reason}")]
    DeviceRule { rule: String, reason: String },
    #[error("cgroup v2 device filter: {op} on {}: {source}", path.display())]
    Bpf {
        op: &'static str,
        path: PathBuf,
        source: nix::errno::Errno,
    },
    #[error("cgroup v2 device filter: the kernel refused the program ({source}): {log}")]
    BpfVerifier {
        source: nix::errno::Errno,
        log: String,
    },
}

/// What a container needs from a cgroup implementation.
pub trait CgroupManager {
    /// Creates the container's cgroup directories (and whatever their parents need).
    fn create(&self) -> Result<(), CgroupError>;
    /// Writes the limits of `linux.resources`.
    fn apply(&self, resources: &LinuxResources) -> Result<(), CgroupError>;
    /// Moves `pid` (0 = the calling process) into the container's cgroups.
    fn add_process(&self, pid: Pid) -> Result<(), CgroupError>;
    /// Every process currently in the container's cgroups.
    fn pids(&self) -> Result<Vec<Pid>, CgroupError>;
    /// Freezes or thaws the container.
    fn freeze(&self, frozen: bool) -> Result<(), CgroupError>;
    /// Whether the container is frozen (paused).
    fn frozen(&self) -> Result<bool, CgroupError>;
    /// Removes the container's cgroup directories (not its parents); missing is fine.
    fn destroy(&self) -> Result<(), CgroupError>;
    /// Host directories to show inside the container at a `cgroup` mount: (name, dir).
    fn mount_sources(&self) -> Vec<(String, PathBuf)>;
    /// Opens what a new process needs to enter the cgroups by itself (see [`Placement`]).
    fn placement(&self) -> Result<Placement, CgroupError>;
}

/// How a new process enters the container's cgroups without anyone writing its pid to a
/// cgroup.procs file. Such a write moves a whole thread group, which takes
/// cgroup_threadgroup_rwsem for writing: an RCU grace period per command, 5-25 ms on a
/// busy host and the longest step of `run`. Moving only the calling thread (v1 `tasks`,
/// pid 0) skips that lock, and a v2 cgroup can be entered at birth (clone3
/// CLONE_INTO_CGROUP). The files are opened by the runtime before clone: writes through
/// them are checked against the opener's credentials and cgroup namespace (kernel 5.16+),
/// so an init already in a new user namespace can use them.
#[derive(Debug, Default)]
pub struct Placement {
    /// The cgroup v2 directory, for CLONE_INTO_CGROUP.
    pub clone_into: Option<OwnedFd>,
    /// The v2 cgroup.procs, written with pid 0 when the clone could not place the child.
    v2_procs: Option<(PathBuf, OwnedFd)>,
    /// Every v1 hierarchy's `tasks`. Init and exec processes are single-threaded (a
    /// fork-like clone copies only the calling thread), so the thread is the process.
    v1_tasks: Vec<(PathBuf, OwnedFd)>,
}

impl Placement {
    /// Moves the calling (single-threaded) process into every cgroup it is not yet in;
    /// `cloned_into`: the clone already placed it in the v2 one.
    pub fn join_self(&self, cloned_into: bool) -> Result<(), CgroupError> {
        let v2 = self.v2_procs.iter().filter(|_| !cloned_into);
        for (path, fd) in self.v1_tasks.iter().chain(v2) {
            nix::unistd::write(fd.as_fd(), b"0").map_err(|e| CgroupError::Io {
                op: "join",
                path: path.clone(),
                source: e.into(),
            })?;
        }
        Ok(())
    }

    fn merge(mut self, other: Placement) -> Placement {
        self.clone_into = self.clone_into.or(other.clone_into);
        self.v2_procs = self.v2_procs.or(other.v2_procs);
        self.v1_tasks.extend(other.v1_tasks);
        self
    }
}

pub(crate) fn open_cgroup_file(
    path: PathBuf,
    directory: bool,
) -> Result<(PathBuf, OwnedFd), CgroupError> {
    use nix::fcntl::{open, OFlag};
    let flags = if directory {
        OFlag::O_RDONLY | OFlag::O_DIRECTORY
    } else {
        OFlag::O_WRONLY
    };
    match open(
        &path,
        flags | OFlag::O_CLOEXEC,
        nix::sys::stat::Mode::empty(),
    ) {
        Ok(fd) => Ok((path, fd)),
        Err(e) => Err(CgroupError::Io {
            op: "open",
            path,
            source: e.into(),
        }),
    }
}

/// The persisted description of a container's cgroups: enough to rebuild the manager in
/// later commands (delete, kill --all, exec) without re-reading the host layout.
#[derive(Debug, Clone, Serialize, Deserialize, PartialEq, Eq)]
pub struct CgroupConfig {
    /// The container's path below each hierarchy root, always absolute.
    pub path: PathBuf,
    pub layout: CgroupLayout,
}

impl CgroupConfig {
    /// Resolves the spec's `cgroupsPath` (default `/<id>`) against the host layout.
    pub fn resolve(
        cgroups_path: Option<&Path>,
        id: &str,
        systemd: bool,
        layout: CgroupLayout,
    ) -> Result<Self, CgroupError> {
        let raw = cgroups_path
            .map(Path::to_path_buf)
            .unwrap_or_else(|| PathBuf::from(id));
        let text = raw.to_string_lossy();
        // "slice:prefix:name" is the systemd driver's form; a plain path under
        // --systemd-cgroup is still managed through cgroupfs (documented).
        if text.contains(':') && (systemd || !text.starts_with('/')) {
            return Err(CgroupError::Systemd(text.into_owned()));
        }
        if raw
            .components()
            .any(|c| matches!(c, std::path::Component::ParentDir))
        {
            return Err(CgroupError::InvalidPath(raw));
        }
        // Relative paths are taken relative to the hierarchy roots (documented in
        // docs/lowrt.md); runc would nest them under its own cgroup instead.
        let path = Path::new("/").join(raw);
        Ok(Self { path, layout })
    }

    /// The manager for this configuration.
    pub fn manager(&self) -> Box<dyn CgroupManager> {
        let v1 = V1Manager::new(self.layout.v1.clone(), self.path.clone());
        match (&self.layout.v2, self.layout.v1.is_empty()) {
            (Some(root), true) => Box::new(V2Manager::new(root.clone(), self.path.clone(), true)),
            (Some(root), false) => Box::new(Hybrid {
                v1,
                v2: V2Manager::new(root.clone(), self.path.clone(), false),
            }),
            (None, _) => Box::new(v1),
        }
    }
}

/// v1 hierarchies plus a controller-less cgroup2 mount, used only for placement.
struct Hybrid {
    v1: V1Manager,
    v2: V2Manager,
}

impl CgroupManager for Hybrid {
    fn create(&self) -> Result<(), CgroupError> {
        self.v1.create()?;
        self.v2.create()
    }
    fn apply(&self, resources: &LinuxResources) -> Result<(), CgroupError> {
        self.v1.apply(resources)
    }
    fn add_process(&self, pid: Pid) -> Result<(), CgroupError> {
        self.v1.add_process(pid)?;
        self.v2.add_process(pid)
    }
    fn pids(&self) -> Result<Vec<Pid>, CgroupError> {
        self.v1.pids()
    }
    fn freeze(&self, frozen: bool) -> Result<(), CgroupError> {
        self.v1.freeze(frozen)
    }
    fn frozen(&self) -> Result<bool, CgroupError> {
        self.v1.frozen()
    }
    fn destroy(&self) -> Result<(), CgroupError> {
        let first = self.v1.destroy();
        self.v2.destroy()?;
        first
    }
    fn mount_sources(&self) -> Vec<(String, PathBuf)> {
        let mut all = self.v1.mount_sources();
        all.extend(
            self.v2
                .mount_sources()
                .into_iter()
                .map(|(_, dir)| ("unified".to_owned(), dir)),
        );
        all
    }
    fn placement(&self) -> Result<Placement, CgroupError> {
        Ok(self.v1.placement()?.merge(self.v2.placement()?))
    }
}

// Small filesystem helpers shared by both versions; each maps to CgroupError::Io.

pub(crate) fn write_file(path: &Path, value: &str) -> Result<(), CgroupError> {
    std::fs::write(path, value).map_err(|source| CgroupError::Io {
        op: "write",
        path: path.to_path_buf(),
        source,
    })
}

pub(crate) fn read_file(path: &Path) -> Result<String, CgroupError> {
    std::fs::read_to_string(path).map_err(|source| CgroupError::Io {
        op: "read",
        path: path.to_path_buf(),
        source,
    })
}

pub(crate) fn mkdir_all(path: &Path) -> Result<(), CgroupError> {
    std::fs::create_dir_all(path).map_err(|source| CgroupError::Io {
        op: "mkdir",
        path: path.to_path_buf(),
        source,
    })
}

pub(crate) fn read_pids(file: &Path) -> Result<Vec<Pid>, CgroupError> {
    match std::fs::read_to_string(file) {
        Ok(text) => Ok(text
            .lines()
            .filter_map(|l| l.trim().parse().ok())
            .map(Pid::from_raw)
            .collect()),
        Err(e) if e.kind() == io::ErrorKind::NotFound => Ok(Vec::new()),
        Err(source) => Err(CgroupError::Io {
            op: "read",
            path: file.to_path_buf(),
            source,
        }),
    }
}

/// rmdir that tolerates a missing directory and retries while the kernel still counts
/// exiting tasks (EBUSY), polling up to a deadline.
pub(crate) fn remove_dir(path: &Path) -> Result<(), CgroupError> {
    let start = std::time::Instant::now();
    let deadline = std::time::Duration::from_secs(5);
    let mut delay = std::time::Duration::from_millis(1);
    loop {
        match std::fs::remove_dir(path) {
            Ok(()) => return Ok(()),
            Err(e) if e.kind() == io::ErrorKind::NotFound => return Ok(()),
            Err(e) if e.raw_os_error() == Some(libc::EBUSY) && start.elapsed() < deadline => {
                std::thread::sleep(delay);
                delay = (delay * 2).min(std::time::Duration::from_millis(50));
            }
            Err(e) if e.raw_os_error() == Some(libc::EBUSY) => {
                return Err(CgroupError::Busy {
                    path: path.to_path_buf(),
                    waited_ms: deadline.as_millis() as u64,
                })
            }
            Err(source) => {
                return Err(CgroupError::Io {
                    op: "rmdir",
                    path: path.to_path_buf(),
                    source,
                })
            }
        }
    }
}

/// `path` (absolute cgroup path) below a hierarchy mounted at `root`.
pub(crate) fn under(root: &Path, path: &Path) -> PathBuf {
    root.join(path.strip_prefix("/").unwrap_or(path))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn cgroups_path_resolution() {
        let l = CgroupLayout::default();
        let c = CgroupConfig::resolve(Some(Path::new("/a/b")), "id", false, l.clone()).unwrap();
        assert_eq!(c.path, Path::new("/a/b"));
        let c = CgroupConfig::resolve(None, "id", true, l.clone()).unwrap();
        assert_eq!(c.path, Path::new("/id"));
        let err = CgroupConfig::resolve(
            Some(Path::new("system.slice:berth:id")),
            "id",
            true,
            l.clone(),
        );
        assert!(matches!(err, Err(CgroupError::Systemd(_))));
        let err = CgroupConfig::resolve(Some(Path::new("/a/../../etc")), "id", false, l);
        assert!(matches!(err, Err(CgroupError::InvalidPath(_))));
    }
}
