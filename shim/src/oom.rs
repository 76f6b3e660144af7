//! OOM notifications for the task's memory cgroup, published as TaskOOM (docker's
//! `OOMKilled` comes from these).
//!
//! cgroup v1 only: an eventfd registered on `memory.oom_control` through
//! `cgroup.event_control` (kernel Documentation/admin-guide/cgroup-v1/memory.rst, "Memory
//! thresholds" and "OOM Control"). The kernel also signals the eventfd when the cgroup is
//! removed, which ends the watch. On a cgroup-v2-only host there is no watcher. The
//! cgroup's directory comes from [`crate::cgroup`].

use std::fs::File;
use std::os::fd::AsRawFd;
use std::path::{Path, PathBuf};

use nix::sys::eventfd::{EfdFlags, EventFd};

use crate::stdio::AsyncPipe;

#[derive(Debug, thiserror::Error)]
pub enum OomError {
    #[error("cannot open {path}")]
    Open {
        path: PathBuf,
        #[source]
        source: std::io::Error,
    },
    #[error("cannot create an eventfd")]
    EventFd(#[source] std::io::Error),
    #[error("cannot register for OOM events in {path}")]
    Register {
        path: PathBuf,
        #[source]
        source: std::io::Error,
    },
}

#[derive(Debug)]
pub struct OomWatcher {
    events: AsyncPipe,
    dir: PathBuf,
    /// Must stay open for the registration to live.
    _control: File,
}

impl OomWatcher {
    /// Watches the v1 memory cgroup at `dir`; `None` when it has no OOM control.
    pub fn for_dir(dir: &Path) -> Result<Option<OomWatcher>, OomError> {
        let dir = dir.to_owned();
        let control_path = dir.join("memory.oom_control");
        if !control_path.exists() {
            return Ok(None);
        }
        let control = File::open(&control_path).map_err(|source| OomError::Open {
            path: control_path,
            source,
        })?;
        let efd = EventFd::from_flags(EfdFlags::EFD_CLOEXEC | EfdFlags::EFD_NONBLOCK)
            .map_err(|e| OomError::EventFd(e.into()))?;
        let register = dir.join("cgroup.event_control");
        let line = format!("{} {}", efd.as_raw_fd(), control.as_raw_fd());
        std::fs::write(&register, line).map_err(|source| OomError::Register {
            path: register,
            source,
        })?;
        let events = AsyncPipe::new(efd.into()).map_err(OomError::EventFd)?;
        Ok(Some(OomWatcher {
            events,
            dir,
            _control: control,
        }))
    }

    /// Waits for the next OOM in the cgroup; `None` once the cgroup is gone.
    pub async fn next(&self) -> Option<()> {
        let mut count = [0u8; 8];
        match self.events.read(&mut count).await {
            Ok(8) if self.dir.exists() => Some(()),
            _ => None,
        }
    }
}
