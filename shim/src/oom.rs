//! OOM notifications for the task's memory cgroup, published as TaskOOM (docker's
//! `OOMKilled` comes from these).
//!
//! cgroup v1: an eventfd registered on `memory.oom_control` through
//! `cgroup.event_control` (kernel Documentation/admin-guide/cgroup-v1/memory.rst, "Memory
//! thresholds" and "OOM Control"). The kernel also signals the eventfd when the cgroup is
//! removed, which ends the watch.
//!
//! cgroup v2 (unified only): inotify on `memory.events`, which the kernel reports as
//! modified whenever a counter changes (Documentation/admin-guide/cgroup-v2.rst, "memory.events":
//! "a value change in this file generates a file modified event"); each rise of its
//! `oom_kill` counter is an OOM kill, as containerd's runc shim counts them. Removing the
//! cgroup removes the file, which ends the watch. The cgroup's directory comes from
//! [`crate::cgroup`].

use std::fs::File;
use std::os::fd::AsRawFd;
use std::path::{Path, PathBuf};

use nix::sys::eventfd::{EfdFlags, EventFd};
use nix::sys::inotify::{AddWatchFlags, InitFlags, Inotify};

use crate::cgroup::CgroupPaths;
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
    #[error("cannot watch {path} with inotify")]
    Inotify {
        path: PathBuf,
        #[source]
        source: std::io::Error,
    },
}

#[derive(Debug)]
pub struct OomWatcher {
    source: Source,
}

#[derive(Debug)]
enum Source {
    V1 {
        events: AsyncPipe,
        dir: PathBuf,
        /// Must stay open for the registration to live.
        _control: File,
    },
    V2 {
        inotify: AsyncPipe,
        events_file: PathBuf,
        /// `oom_kill` as last seen; only a rise is a new OOM kill.
        seen: u64,
    },
}

impl OomWatcher {
    /// Watches the container's memory cgroup, v1 or v2; `None` when it has no memory
    /// controller (or no OOM interface).
    pub fn for_cgroup(cgroup: &CgroupPaths) -> Result<Option<OomWatcher>, OomError> {
        match cgroup {
            CgroupPaths::V1(_) => match cgroup.v1_dir("memory") {
                Some(dir) => Self::for_dir(dir),
                None => Ok(None),
            },
            CgroupPaths::V2(dir) => Self::for_v2_dir(dir),
        }
    }

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
            source: Source::V1 {
                events,
                dir,
                _control: control,
            },
        }))
    }

    /// Watches the v2 cgroup at `dir`; `None` when it has no `memory.events` (the
    /// memory controller is not enabled for it).
    pub fn for_v2_dir(dir: &Path) -> Result<Option<OomWatcher>, OomError> {
        let events_file = dir.join("memory.events");
        if !events_file.exists() {
            return Ok(None);
        }
        let inotify_err = |e: nix::Error| OomError::Inotify {
            path: events_file.clone(),
            source: e.into(),
        };
        let inotify =
            Inotify::init(InitFlags::IN_CLOEXEC | InitFlags::IN_NONBLOCK).map_err(inotify_err)?;
        inotify
            .add_watch(&events_file, AddWatchFlags::IN_MODIFY)
            .map_err(inotify_err)?;
        // Counted from now: the watch starts before the container's process runs.
        let seen = oom_kill_count(&events_file).unwrap_or(0);
        let inotify = AsyncPipe::new(inotify.into()).map_err(|source| OomError::Inotify {
            path: events_file.clone(),
            source,
        })?;
        Ok(Some(OomWatcher {
            source: Source::V2 {
                inotify,
                events_file,
                seen,
            },
        }))
    }

    /// Waits for the next OOM in the cgroup; `None` once the cgroup is gone.
    pub async fn next(&mut self) -> Option<()> {
        match &mut self.source {
            Source::V1 { events, dir, .. } => {
                let mut count = [0u8; 8];
                match events.read(&mut count).await {
                    Ok(8) if dir.exists() => Some(()),
                    _ => None,
                }
            }
            Source::V2 {
                inotify,
                events_file,
                seen,
            } => loop {
                // Each event is 16 bytes (no name: the watch is on the file itself).
                let mut buf = [0u8; 256];
                let n = match inotify.read(&mut buf).await {
                    Ok(n @ 1..) => n,
                    _ => return None,
                };
                let removed = buf[..n].chunks(16).any(|ev| {
                    let mask = ev
                        .get(4..8)
                        .and_then(|b| b.try_into().ok())
                        .map_or(0, u32::from_ne_bytes);
                    mask & libc::IN_IGNORED != 0
                });
                match std::fs::read_to_string(&*events_file) {
                    Ok(text) => {
                        // A half-rewritten file (only fakes rewrite it) counts as unchanged.
                        if let Some(count) = parse_oom_kill(&text) {
                            if count > *seen {
                                *seen = count;
                                return Some(());
                            }
                        }
                    }
                    Err(_) => return None,
                }
                if removed {
                    return None;
                }
            },
        }
    }
}

fn oom_kill_count(events_file: &Path) -> Option<u64> {
    parse_oom_kill(&std::fs::read_to_string(events_file).ok()?)
}

/// The `oom_kill N` line of a v2 `memory.events` file.
fn parse_oom_kill(text: &str) -> Option<u64> {
    text.lines()
        .find_map(|line| line.strip_prefix("oom_kill "))
        .and_then(|n| n.trim().parse().ok())
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::time::Duration;

    fn events(oom_kill: u64) -> String {
        format!("low 0\nhigh 0\nmax 3\noom {oom_kill}\noom_kill {oom_kill}\noom_group_kill 0\n")
    }

    async fn next_within(w: &mut OomWatcher, ms: u64) -> Option<Option<()>> {
        tokio::time::timeout(Duration::from_millis(ms), w.next())
            .await
            .ok()
    }

    #[test]
    fn v2_oom_kills_are_reported_once_each_until_the_cgroup_goes() {
        let rt = tokio::runtime::Builder::new_current_thread()
            .enable_all()
            .build()
            .expect("runtime");
        rt.block_on(async {
            let dir = tempfile::tempdir().expect("tempdir");
            let cg = dir.path().join("ctr");
            std::fs::create_dir(&cg).expect("mkdir");
            std::fs::write(cg.join("memory.events"), events(2)).expect("write");
            let mut w = OomWatcher::for_cgroup(&CgroupPaths::V2(cg.clone()))
                .expect("watch")
                .expect("memory.events present");
            // Counters that do not rise (kills before the watch, other lines) are no OOM.
            std::fs::write(
                cg.join("memory.events"),
                events(2).replace("high 0", "high 9"),
            )
            .expect("write");
            assert_eq!(next_within(&mut w, 300).await, None, "no OOM yet");
            std::fs::write(cg.join("memory.events"), events(3)).expect("write");
            assert_eq!(next_within(&mut w, 5000).await, Some(Some(())));
            std::fs::write(cg.join("memory.events"), events(4)).expect("write");
            assert_eq!(next_within(&mut w, 5000).await, Some(Some(())));
            std::fs::remove_dir_all(&cg).expect("rm");
            assert_eq!(next_within(&mut w, 5000).await, Some(None), "watch ends");
        });
    }

    #[test]
    fn no_memory_controller_means_no_watcher() {
        let dir = tempfile::tempdir().expect("tempdir");
        let none = OomWatcher::for_cgroup(&CgroupPaths::V2(dir.path().to_owned()));
        assert!(matches!(none, Ok(None)));
        let v1 = CgroupPaths::V1(Default::default());
        assert!(matches!(OomWatcher::for_cgroup(&v1), Ok(None)));
        assert_eq!(parse_oom_kill(&events(7)), Some(7));
        assert_eq!(parse_oom_kill("oom 1\n"), None);
    }
}
