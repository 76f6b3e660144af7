//! `events [--stats] [--interval D] ID`: runc's event stream, one JSON object per line.
//! `{"type":"stats","id":…,"data":{…}}` every interval (once with --stats) and
//! `{"type":"oom","id":…}` on every OOM of the container's memory cgroup. The stream ends
//! when init exits (a pidfd in the same poll), so it never outlives the container.

use std::io::Write;
use std::os::fd::AsFd;
use std::time::{Duration, Instant};

use nix::poll::{poll, PollFd, PollFlags, PollTimeout};
use nix::unistd::Pid;
use serde::Serialize;

use super::Globals;
use crate::cgroups::{OomEvent, OomWatch};
use crate::container::{errno, ContainerError};
use crate::state::{State, Status};

#[derive(Serialize)]
struct Event<'a, T: Serialize> {
    #[serde(rename = "type")]
    typ: &'static str,
    id: &'a str,
    #[serde(skip_serializing_if = "Option::is_none")]
    data: Option<T>,
}

fn emit<T: Serialize>(typ: &'static str, id: &str, data: Option<T>) -> Result<(), ContainerError> {
    let line = serde_json::to_string(&Event { typ, id, data }).unwrap_or_default();
    let mut out = std::io::stdout().lock();
    // A closed stdout (the reader went away) ends the stream like runc's failed Encode.
    writeln!(out, "{line}")
        .and_then(|()| out.flush())
        .map_err(|source| ContainerError::Io {
            op: "write event to",
            path: "stdout".into(),
            source,
        })
}

pub fn events(
    g: &Globals,
    id: &str,
    stats_once: bool,
    interval: &str,
) -> Result<i32, ContainerError> {
    let interval =
        parse_duration(interval).ok_or_else(|| ContainerError::BadInterval(interval.into()))?;
    let state = State::load(&g.root, id)?;
    if state.status(&g.root) == Status::Stopped {
        return Err(ContainerError::EventsNotRunning(id.into()));
    }
    let cgroup = &state.cgroup;
    let stats = || -> Result<_, ContainerError> {
        let mut s = cgroup.stats()?;
        if let Some(rdt) = &state.intel_rdt {
            s.intel_rdt = rdt.stats()?;
        }
        Ok(s)
    };
    if stats_once {
        emit("stats", id, Some(stats()?))?;
        return Ok(0);
    }
    // Init gone between the status check and here: nothing more to report.
    let Ok(pidfd) = crate::sys::pidfd_open(Pid::from_raw(state.pid)) else {
        return Ok(0);
    };
    let mut oom: Option<OomWatch> = match cgroup.oom_watch() {
        Ok(w) => w,
        Err(e) => {
            tracing::warn!("no oom events: {e}");
            None
        }
    };
    let mut next = Instant::now() + interval;
    loop {
        let wait = next.saturating_duration_since(Instant::now());
        let (init_gone, oom_ready) = {
            let mut fds = vec![PollFd::new(pidfd.as_fd(), PollFlags::POLLIN)];
            if let Some(w) = &oom {
                fds.push(PollFd::new(w.fd(), PollFlags::POLLIN));
            }
            let ms = u16::try_from(wait.as_millis().max(1)).unwrap_or(u16::MAX);
            match poll(&mut fds, PollTimeout::from(ms)) {
                Err(nix::errno::Errno::EINTR) => continue,
                Err(e) => return Err(errno("poll")(e)),
                Ok(_) => {}
            }
            let ready = |f: &PollFd| f.revents().is_some_and(|r| !r.is_empty());
            (ready(&fds[0]), fds.get(1).is_some_and(ready))
        };
        // An OOM that killed init is reported before the stream ends.
        if oom_ready {
            match oom.as_mut().map(OomWatch::read) {
                Some(OomEvent::Oom) => emit::<()>("oom", id, None)?,
                Some(OomEvent::Gone) => oom = None,
                _ => {}
            }
        }
        if init_gone {
            return Ok(0);
        }
        if Instant::now() >= next {
            match stats() {
                Ok(s) => emit("stats", id, Some(s))?,
                // runc logs a failed read and keeps going.
                Err(e) => tracing::error!("{e}"),
            }
            next += interval;
        }
    }
}

/// Go's time.ParseDuration for what people pass: "5s", "100ms", "1m30s", "1.5s".
pub(crate) fn parse_duration(text: &str) -> Option<Duration> {
    let mut total = 0f64;
    let mut rest = text.trim();
    if rest.is_empty() {
        return None;
    }
    while !rest.is_empty() {
        let split = rest.find(|c: char| !(c.is_ascii_digit() || c == '.'))?;
        let (num, tail) = rest.split_at(split);
        let num: f64 = num.parse().ok()?;
        let unit_len = tail
            .find(|c: char| c.is_ascii_digit())
            .unwrap_or(tail.len());
        let (unit, tail) = tail.split_at(unit_len);
        let scale = match unit {
            "ns" => 1e-9,
            "us" | "µs" => 1e-6,
            "ms" => 1e-3,
            "s" => 1.0,
            "m" => 60.0,
            "h" => 3600.0,
            _ => return None,
        };
        total += num * scale;
        rest = tail;
    }
    (total > 0.0).then(|| Duration::from_secs_f64(total))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn durations_parse_like_go() {
        assert_eq!(parse_duration("5s"), Some(Duration::from_secs(5)));
        assert_eq!(parse_duration("100ms"), Some(Duration::from_millis(100)));
        assert_eq!(parse_duration("1m30s"), Some(Duration::from_secs(90)));
        assert_eq!(parse_duration("1.5s"), Some(Duration::from_millis(1500)));
        assert_eq!(parse_duration("5"), None);
        assert_eq!(parse_duration("0s"), None);
        assert_eq!(parse_duration("-1s"), None);
    }
}
