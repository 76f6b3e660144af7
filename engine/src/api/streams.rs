//! Attach and logs output: the container's json log (written by the shim) turned into
//! docker's multiplexed frames (or, for a terminal container, the raw bytes: a terminal
//! has one stream), following the file until the container exits.

use std::sync::Arc;
use std::time::Duration;

use bytes::Bytes;
use chrono::{DateTime, SecondsFormat};
use tokio::sync::{broadcast, mpsc};

use super::route::{AttachOptions, LogOptions};
use crate::backend::Backend;
use crate::daemon::{ContainerEvent, Daemon};
use crate::jsonlog::{self, Follower, JsonLogError, LogEntry};
use crate::record::{ContainerRecord, Status};
use crate::stdcopy::{frame, StdStream};

/// How often a followed log file is re-read while the container runs.
const FOLLOW_INTERVAL: Duration = Duration::from_millis(50);

#[derive(Clone, Copy)]
struct Filter {
    stdout: bool,
    stderr: bool,
    timestamps: bool,
    /// A terminal container: no frames, as dockerd sends it.
    raw: bool,
}

fn encode(e: &LogEntry, f: Filter) -> Option<Bytes> {
    let wanted = match e.stream {
        StdStream::Stdout => f.stdout,
        StdStream::Stderr => f.stderr,
        StdStream::Stdin => false,
    };
    if !wanted {
        return None;
    }
    let text = if f.timestamps {
        // dockerd prints RFC3339Nano with a fixed 9-digit fraction.
        let ts = DateTime::parse_from_rfc3339(&e.time)
            .map(|t| t.to_utc().to_rfc3339_opts(SecondsFormat::Nanos, true))
            .unwrap_or_else(|_| e.time.clone());
        format!("{ts} {}", e.log)
    } else {
        e.log.clone()
    };
    if f.raw {
        return Some(Bytes::from(text));
    }
    Some(frame(e.stream, text.as_bytes()))
}

async fn send_all(tx: &mpsc::Sender<Bytes>, entries: &[LogEntry], f: Filter) -> bool {
    for e in entries {
        if let Some(b) = encode(e, f) {
            if tx.send(b).await.is_err() {
                return false;
            }
        }
    }
    true
}

/// Follows the log until `done` says the container's run is over, then drains it.
async fn follow<B: Backend>(
    daemon: &Daemon<B>,
    id: &str,
    mut follower: Follower,
    mut events: broadcast::Receiver<ContainerEvent>,
    tx: &mpsc::Sender<Bytes>,
    f: Filter,
    mut seen_running: bool,
) {
    loop {
        let entries = follower.poll().unwrap_or_default();
        if !send_all(tx, &entries, f).await {
            return;
        }
        let finished = match daemon.store.get(id) {
            None => true,
            Some(r) => seen_running && !r.state.status.is_running(),
        };
        if finished {
            // The shim flushes all output before the exit is published, so one more read
            // gets the rest.
            let rest = follower.poll().unwrap_or_default();
            send_all(tx, &rest, f).await;
            return;
        }
        match tokio::time::timeout(FOLLOW_INTERVAL, events.recv()).await {
            Ok(Ok(ContainerEvent::Started { id: e })) if e == id => seen_running = true,
            Ok(Ok(
                ContainerEvent::Exited { id: e, .. } | ContainerEvent::Removed { id: e, .. },
            )) if e == id => {
                seen_running = true;
            }
            Ok(Err(broadcast::error::RecvError::Closed)) => return,
            _ => {}
        }
        if tx.is_closed() {
            return;
        }
    }
}

/// `POST /containers/{id}/attach` output. Streaming attach ends after the container's
/// next exit (the CLI attaches before it starts the container). The log position is taken
/// before this returns, so output of a start that follows the response is never missed.
pub fn attach<B: Backend>(
    daemon: Arc<Daemon<B>>,
    rec: &ContainerRecord,
    opts: AttachOptions,
) -> Result<mpsc::Receiver<Bytes>, JsonLogError> {
    let (tx, rx) = mpsc::channel(64);
    let f = Filter {
        stdout: opts.stdout,
        stderr: opts.stderr,
        timestamps: false,
        raw: rec.config.tty,
    };
    let events = daemon.subscribe();
    let path = std::path::PathBuf::from(&rec.log_path);
    let (replay, follower) = if opts.logs {
        jsonlog::read_all(&path, None)?
    } else {
        (Vec::new(), Follower::from_end(&path)?)
    };
    let id = rec.id.clone();
    let running = rec.state.status.is_running();
    tokio::spawn(async move {
        if !send_all(&tx, &replay, f).await || !opts.stream {
            return;
        }
        follow(&daemon, &id, follower, events, &tx, f, running).await;
    });
    Ok(rx)
}

/// `GET /containers/{id}/logs` output.
pub fn logs<B: Backend>(
    daemon: Arc<Daemon<B>>,
    rec: &ContainerRecord,
    opts: LogOptions,
) -> Result<mpsc::Receiver<Bytes>, JsonLogError> {
    let (tx, rx) = mpsc::channel(64);
    let f = Filter {
        stdout: opts.stdout,
        stderr: opts.stderr,
        timestamps: opts.timestamps,
        raw: rec.config.tty,
    };
    let events = daemon.subscribe();
    let (mut entries, follower) =
        jsonlog::read_all(std::path::Path::new(&rec.log_path), opts.tail)?;
    let in_range = |e: &LogEntry| {
        let t = DateTime::parse_from_rfc3339(&e.time)
            .map(|t| t.to_utc())
            .ok();
        opts.since.is_none_or(|s| t.is_none_or(|t| t >= s))
            && opts.until.is_none_or(|u| t.is_none_or(|t| t <= u))
    };
    entries.retain(|e| in_range(e));
    let id = rec.id.clone();
    let follow_on = opts.follow && rec.state.status == Status::Running;
    tokio::spawn(async move {
        if !send_all(&tx, &entries, f).await {
            return;
        }
        if follow_on {
            follow(&daemon, &id, follower, events, &tx, f, true).await;
        }
    });
    Ok(rx)
}
