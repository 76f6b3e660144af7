//! start, state, kill, delete, list, pause, resume, ps, spec.

use std::io::Write;
use std::os::fd::{AsFd, OwnedFd};
use std::path::Path;
use std::time::Duration;

use nix::fcntl::{open, OFlag};
use nix::poll::{poll, PollFd, PollFlags, PollTimeout};
use nix::sys::stat::Mode;
use nix::unistd::Pid;

use super::Globals;
use crate::container::{destroy, errno, io_err, parse_signal, wait_gone, ContainerError};
use crate::state::{OciState, State, StateError, Status, FIFO_FILE};

const KILL_WAIT: Duration = Duration::from_secs(10);

/// Releases init: opening exec.fifo for reading unblocks init's open for writing.
/// The open is non-blocking and we poll the fifo together with init's pidfd, so a dead
/// init is an error instead of a hang.
pub fn start(g: &Globals, id: &str) -> Result<i32, ContainerError> {
    let state = State::load(&g.root, id)?;
    match state.status(&g.root) {
        Status::Created => {}
        Status::Stopped => return Err(ContainerError::StartStopped),
        other => return Err(ContainerError::StartNotCreated(other)),
    }
    let fifo_path = State::dir(&g.root, id).join(FIFO_FILE);
    let fifo = open(
        &fifo_path,
        OFlag::O_RDONLY | OFlag::O_NONBLOCK | OFlag::O_CLOEXEC,
        Mode::empty(),
    )
    .map_err(errno("open exec.fifo"))?;
    // Opening the fifo is what releases init: from here on it may write its byte, exec,
    // finish and be reaped at any moment. A dead init is only an error when its byte
    // never arrived (a short-lived container such as `true` is done before we look).
    let pidfd = match crate::sys::pidfd_open(Pid::from_raw(state.pid)) {
        Ok(fd) => fd,
        Err(_) if fifo_byte(&fifo)? => return finish_start(id, &state, &fifo_path),
        Err(_) => return Err(ContainerError::InitDied { how: String::new() }),
    };
    loop {
        let mut fds = [
            PollFd::new(fifo.as_fd(), PollFlags::POLLIN),
            PollFd::new(pidfd.as_fd(), PollFlags::POLLIN),
        ];
        match poll(&mut fds, PollTimeout::NONE) {
            Err(nix::errno::Errno::EINTR) => continue,
            Err(e) => return Err(errno("poll exec.fifo")(e)),
            Ok(_) => {}
        }
        let fifo_ready = fds[0].revents().is_some_and(|r| !r.is_empty());
        let init_dead = fds[1].revents().is_some_and(|r| !r.is_empty());
        // poll samples the fds one after the other: init can write, exec and exit between
        // the two samples, so a dead init still gets its fifo read before we give up.
        if fifo_ready || init_dead {
            if fifo_byte(&fifo)? {
                break;
            }
            if init_dead {
                return Err(ContainerError::InitDied { how: String::new() });
            }
        }
    }
    finish_start(id, &state, &fifo_path)
}

/// Whether init's one byte is in the fifo (non-blocking read; nothing yet is `false`).
/// End-of-file without it means init opened the fifo and died before writing.
fn fifo_byte(fifo: &OwnedFd) -> Result<bool, ContainerError> {
    let mut byte = [0u8; 1];
    loop {
        return match nix::unistd::read(fifo, &mut byte) {
            Ok(1) => Ok(true),
            Ok(_) => Err(ContainerError::InitDied { how: String::new() }),
            Err(nix::errno::Errno::EAGAIN) => Ok(false),
            Err(nix::errno::Errno::EINTR) => continue,
            Err(e) => Err(errno("read exec.fifo")(e)),
        };
    }
}

/// After init has been released: the container is no longer `created`; poststart hooks.
fn finish_start(id: &str, state: &State, fifo_path: &Path) -> Result<i32, ContainerError> {
    std::fs::remove_file(fifo_path).map_err(io_err("remove", fifo_path))?;
    // runtime-spec: a failing poststart hook is logged; start still succeeds.
    let poststart = crate::hooks::at(&state.config, crate::hooks::Point::Poststart);
    if !poststart.is_empty() {
        let doc = crate::hooks::state_json(&state.config, id, "running", state.pid, &state.bundle);
        if let Err(e) = crate::hooks::run(crate::hooks::Point::Poststart, poststart, &doc) {
            tracing::warn!("{e}");
        }
    }
    Ok(0)
}

pub fn state(g: &Globals, id: &str) -> Result<i32, ContainerError> {
    let st = State::load(&g.root, id)?;
    let oci = st.to_oci(st.status(&g.root));
    let text = serde_json::to_string_pretty(&oci).map_err(|source| StateError::Corrupt {
        path: id.into(),
        source,
    })?;
    println!("{text}");
    Ok(0)
}

pub fn kill(g: &Globals, id: &str, signal: &str, all: bool) -> Result<i32, ContainerError> {
    let signo = parse_signal(signal)?;
    let st = State::load(&g.root, id)?;
    if !st.status(&g.root).can_kill() {
        return Err(ContainerError::NotRunning);
    }
    if all {
        for pid in st.cgroup.manager().pids()? {
            let _ = crate::sys::kill(pid, signo);
        }
        return Ok(0);
    }
    crate::sys::kill(Pid::from_raw(st.pid), signo).map_err(errno(format!("kill {}", st.pid)))?;
    Ok(0)
}

pub fn delete(g: &Globals, id: &str, force: bool) -> Result<i32, ContainerError> {
    let st = match State::load(&g.root, id) {
        Err(StateError::NotFound(_)) if force => {
            // A directory without state.json is debris of a create that died before its
            // first write; nothing else can be known about it.
            let dir = State::dir(&g.root, id);
            if dir.is_dir() && crate::spec::validate_id(id).is_ok() {
                std::fs::remove_dir_all(&dir).map_err(io_err("remove", &dir))?;
            }
            return Ok(0);
        }
        other => other?,
    };
    let status = st.status(&g.root);
    match status {
        Status::Stopped => {}
        // A created container never ran user code; runc deletes it without --force.
        Status::Created => kill_and_wait(&st)?,
        Status::Running | Status::Paused if force => {
            if status == Status::Paused {
                st.cgroup.manager().freeze(false)?;
            }
            kill_and_wait(&st)?;
        }
        _ => {
            return Err(ContainerError::DeleteNotStopped {
                id: id.to_owned(),
                status,
            })
        }
    }
    destroy(&g.root, &st)?;
    Ok(0)
}

fn kill_and_wait(st: &State) -> Result<(), ContainerError> {
    let pid = Pid::from_raw(st.pid);
    let _ = crate::sys::kill(pid, libc::SIGKILL);
    wait_gone(pid, KILL_WAIT)
}

/// `list --format`.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default, clap::ValueEnum)]
pub enum ListFormat {
    #[default]
    Table,
    Json,
}

pub fn list(g: &Globals, quiet: bool, format: ListFormat) -> Result<i32, ContainerError> {
    let mut states: Vec<OciState> = Vec::new();
    if let Ok(entries) = std::fs::read_dir(&g.root) {
        for entry in entries.flatten() {
            let id = entry.file_name().to_string_lossy().into_owned();
            if let Ok(st) = State::load(&g.root, &id) {
                states.push(st.to_oci(st.status(&g.root)));
            }
        }
    }
    states.sort_by(|a, b| a.id.cmp(&b.id));
    let mut out = std::io::stdout().lock();
    let res = if quiet {
        states.iter().try_for_each(|s| writeln!(out, "{}", s.id))
    } else if format == ListFormat::Json {
        let text = serde_json::to_string(&states).unwrap_or_else(|_| "[]".into());
        writeln!(out, "{text}")
    } else {
        let rows: Vec<[String; 6]> = std::iter::once(
            ["ID", "PID", "STATUS", "BUNDLE", "CREATED", "OWNER"].map(String::from),
        )
        .chain(states.iter().map(|s| {
            [
                s.id.clone(),
                s.pid.to_string(),
                s.status.to_string(),
                s.bundle.display().to_string(),
                s.created.clone(),
                s.owner.clone(),
            ]
        }))
        .collect();
        let widths: Vec<usize> = (0..6)
            .map(|c| rows.iter().map(|r| r[c].len()).max().unwrap_or(0))
            .collect();
        rows.iter().try_for_each(|r| {
            let line: Vec<String> = r
                .iter()
                .zip(&widths)
                .map(|(v, w)| format!("{v:<w$}"))
                .collect();
            writeln!(out, "{}", line.join("   ").trim_end())
        })
    };
    // A closed stdout (e.g. `| head`) is not an error of ours.
    let _ = res;
    Ok(0)
}

pub fn pause(g: &Globals, id: &str) -> Result<i32, ContainerError> {
    let st = State::load(&g.root, id)?;
    match st.status(&g.root) {
        Status::Running | Status::Created => st.cgroup.manager().freeze(true)?,
        other => return Err(ContainerError::BadTransition("pause", other)),
    }
    Ok(0)
}

pub fn resume(g: &Globals, id: &str) -> Result<i32, ContainerError> {
    let st = State::load(&g.root, id)?;
    match st.status(&g.root) {
        Status::Paused => st.cgroup.manager().freeze(false)?,
        other => return Err(ContainerError::BadTransition("resume", other)),
    }
    Ok(0)
}

/// `ps --format json`: the pids in the container's cgroup (what containerd asks for).
pub fn ps(g: &Globals, id: &str) -> Result<i32, ContainerError> {
    let st = State::load(&g.root, id)?;
    let pids: Vec<i32> = st
        .cgroup
        .manager()
        .pids()?
        .into_iter()
        .map(Pid::as_raw)
        .collect();
    println!(
        "{}",
        serde_json::to_string(&pids).unwrap_or_else(|_| "[]".into())
    );
    Ok(0)
}

pub fn spec(bundle: &Path) -> Result<i32, ContainerError> {
    let path = bundle.join("config.json");
    if path.exists() {
        return Err(ContainerError::SpecExists { path });
    }
    let text = serde_json::to_string_pretty(&crate::spec::default_spec()).map_err(|source| {
        StateError::Corrupt {
            path: path.clone(),
            source,
        }
    })?;
    std::fs::write(&path, text).map_err(io_err("write", &path))?;
    Ok(0)
}
