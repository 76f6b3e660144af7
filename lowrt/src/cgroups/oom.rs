//! Watching a container's cgroup for OOM, for `events`. v1: an eventfd registered on
//! memory.oom_control through cgroup.event_control (cgroup-v1 memory.txt, "OOM Control");
//! the kernel also signals it when the cgroup is removed. v2: inotify on memory.events,
//! whose `oom`/`oom_kill` counters grow on each OOM (cgroup-v2.rst).

use std::fs::File;
use std::os::fd::{AsFd, AsRawFd, BorrowedFd};
use std::path::PathBuf;

use nix::sys::eventfd::{EfdFlags, EventFd};
use nix::sys::inotify::{AddWatchFlags, InitFlags, Inotify};

use super::stats::parse_flat_keyed;
use super::{under, write_file, CgroupConfig, CgroupError};

/// What a wake-up of the watch fd meant.
#[derive(Debug, PartialEq, Eq)]
pub enum OomEvent {
    Oom,
    Nothing,
    /// The cgroup was removed: no more events can come.
    Gone,
}

pub struct OomWatch {
    kind: Kind,
}

enum Kind {
    V1 {
        efd: EventFd,
        _control: File,
        event_control: PathBuf,
    },
    V2 {
        inotify: Inotify,
        events: PathBuf,
        count: u64,
    },
}

fn sys_err<'a>(
    op: &'static str,
    path: &'a std::path::Path,
) -> impl FnOnce(nix::Error) -> CgroupError + 'a {
    move |e| CgroupError::Io {
        op,
        path: path.to_path_buf(),
        source: e.into(),
    }
}

impl CgroupConfig {
    /// Starts watching for OOM; `None` when the host has no memory controller for us.
    pub fn oom_watch(&self) -> Result<Option<OomWatch>, CgroupError> {
        if !self.layout.v1.is_empty() {
            let Some(dir) = self.v1_dir("memory") else {
                return Ok(None);
            };
            let oom_control = dir.join("memory.oom_control");
            let control = File::open(&oom_control).map_err(|source| CgroupError::Io {
                op: "open",
                path: oom_control.clone(),
                source,
            })?;
            let efd = EventFd::from_flags(EfdFlags::EFD_CLOEXEC)
                .map_err(sys_err("eventfd", &oom_control))?;
            let event_control = dir.join("cgroup.event_control");
            let line = format!("{} {}", efd.as_fd().as_raw_fd(), control.as_raw_fd());
            write_file(&event_control, &line)?;
            return Ok(Some(OomWatch {
                kind: Kind::V1 {
                    efd,
                    _control: control,
                    event_control,
                },
            }));
        }
        let Some(root) = &self.layout.v2 else {
            return Ok(None);
        };
        let events = under(root, &self.path).join("memory.events");
        if !events.exists() {
            return Ok(None);
        }
        let inotify = Inotify::init(InitFlags::IN_CLOEXEC | InitFlags::IN_NONBLOCK)
            .map_err(sys_err("inotify_init", &events))?;
        inotify
            .add_watch(&events, AddWatchFlags::IN_MODIFY)
            .map_err(sys_err("inotify_add_watch", &events))?;
        let count = oom_count(&events).unwrap_or(0);
        Ok(Some(OomWatch {
            kind: Kind::V2 {
                inotify,
                events,
                count,
            },
        }))
    }
}

fn oom_count(events: &std::path::Path) -> Option<u64> {
    let map = parse_flat_keyed(&std::fs::read_to_string(events).ok()?);
    Some(map.get("oom").copied().unwrap_or(0) + map.get("oom_kill").copied().unwrap_or(0))
}

impl OomWatch {
    /// The fd to poll for readability.
    pub fn fd(&self) -> BorrowedFd<'_> {
        match &self.kind {
            Kind::V1 { efd, .. } => efd.as_fd(),
            Kind::V2 { inotify, .. } => inotify.as_fd(),
        }
    }

    /// Called when [`OomWatch::fd`] is readable.
    pub fn read(&mut self) -> OomEvent {
        match &mut self.kind {
            Kind::V1 {
                efd, event_control, ..
            } => {
                if efd.read().is_err() {
                    return OomEvent::Nothing;
                }
                // The same eventfd fires when the cgroup goes away (runc checks the same).
                if event_control.exists() {
                    OomEvent::Oom
                } else {
                    OomEvent::Gone
                }
            }
            Kind::V2 {
                inotify,
                events,
                count,
            } => {
                let _ = inotify.read_events();
                match oom_count(events) {
                    None => OomEvent::Gone,
                    Some(n) if n > *count => {
                        *count = n;
                        OomEvent::Oom
                    }
                    Some(_) => OomEvent::Nothing,
                }
            }
        }
    }
}
