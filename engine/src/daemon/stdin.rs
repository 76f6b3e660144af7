//! Stdin of containers (`docker run -i`) and execs (`docker exec -i`): a FIFO under
//! `<exec-root>/<container id>/` that the shim reads, written by the engine from the
//! hijacked connection.

use std::path::{Path, PathBuf};
use std::sync::Arc;

use futures::future::BoxFuture;
use tokio::net::unix::pipe;
use tokio::sync::broadcast;

use super::tty::DetachWatch;
use super::{ContainerEvent, Daemon, DaemonError, DaemonResult};
use crate::backend::Backend;

/// The engine's end of a stdin FIFO, and what to do when the client's input ends.
///
/// The shim holds the FIFO open for writing itself, so the engine's writer coming and
/// going (attach, detach, an engine restart) is never an end of input: only CloseIO is.
pub struct StdinSink {
    pub fifo: pipe::Sender,
    /// Called at the client's end of input: closes the process's stdin (CloseIO) once
    /// everything written so far is forwarded. `None` (a container without `StdinOnce`,
    /// as `docker run -di` creates it): the end of input ends the attach instead and the
    /// process's stdin stays open for the next one, as dockerd does.
    pub close: Option<Box<dyn FnOnce() -> BoxFuture<'static, ()> + Send>>,
    /// Terminal input: watched for the detach keys. Its end (EOF, hang-up or detach)
    /// ends the whole attach and leaves the process's stdin open, as dockerd does; `close`
    /// is then not called.
    pub detach: Option<DetachWatch>,
}

pub(super) fn mkfifo(path: &Path) -> DaemonResult<()> {
    nix::unistd::mkfifo(path, nix::sys::stat::Mode::from_bits_truncate(0o600)).map_err(|e| {
        DaemonError::Io {
            op: "mkfifo",
            path: path.to_path_buf(),
            source: e.into(),
        }
    })
}

/// Creates the FIFO unless it is there already (the exec root may be a tmpfs that was
/// emptied by a reboot, so it is checked before every use).
pub(super) fn ensure_fifo(path: &Path) -> DaemonResult<()> {
    if let Some(dir) = path.parent() {
        std::fs::create_dir_all(dir).map_err(|source| DaemonError::Io {
            op: "create",
            path: dir.to_path_buf(),
            source,
        })?;
    }
    match mkfifo(path) {
        Err(DaemonError::Io { source, .. })
            if source.kind() == std::io::ErrorKind::AlreadyExists =>
        {
            Ok(())
        }
        r => r,
    }
}

/// Opens the writing end read-write: it never blocks or fails for want of a reader, and
/// what is written before the shim opens its end waits in the pipe.
pub(super) fn open_writer(path: &Path) -> DaemonResult<pipe::Sender> {
    pipe::OpenOptions::new()
        .read_write(true)
        .open_sender(path)
        .map_err(|source| DaemonError::Io {
            op: "open",
            path: path.to_path_buf(),
            source,
        })
}

impl<B: Backend> Daemon<B> {
    pub(super) fn init_stdin_path(&self, id: &str) -> PathBuf {
        self.exec_dir(id).join("init-stdin")
    }

    /// The stdin of a container created with `OpenStdin`, for an attach; `detach` for a
    /// terminal container. `stdin_once`: the client's end of input closes the
    /// container's stdin.
    pub fn attach_stdin(
        self: &Arc<Self>,
        id: &str,
        stdin_once: bool,
        detach: Option<DetachWatch>,
    ) -> DaemonResult<StdinSink> {
        let path = self.init_stdin_path(id);
        ensure_fifo(&path)?;
        let fifo = open_writer(&path)?;
        let (this, id) = (Arc::clone(self), id.to_string());
        let events = self.subscribe();
        let close: Box<dyn FnOnce() -> BoxFuture<'static, ()> + Send> =
            Box::new(move || Box::pin(async move { this.close_init_stdin(&id, events).await }));
        Ok(StdinSink {
            fifo,
            close: stdin_once.then_some(close),
            detach,
        })
    }

    /// The CLI attaches (and may send all its input) before it starts the container, so
    /// wait for the start before closing stdin; a container that is gone needs nothing.
    async fn close_init_stdin(&self, id: &str, mut events: broadcast::Receiver<ContainerEvent>) {
        loop {
            match self.store.get(id) {
                None => return,
                Some(r) if r.state.status.is_running() => break,
                Some(_) => {}
            }
            match events.recv().await {
                Ok(
                    ContainerEvent::Exited { id: e, .. } | ContainerEvent::Removed { id: e, .. },
                ) if e == id => return,
                Ok(_) | Err(broadcast::error::RecvError::Lagged(_)) => {}
                Err(broadcast::error::RecvError::Closed) => return,
            }
        }
        if let Err(e) = self.backend.task_close_stdin(id, "").await {
            tracing::debug!(%id, error = %e, "closing container stdin failed");
        }
    }

    pub(super) fn exec_stdin(
        self: &Arc<Self>,
        container_id: &str,
        exec_id: &str,
        path: &Path,
        detach: Option<DetachWatch>,
    ) -> DaemonResult<StdinSink> {
        let fifo = open_writer(path)?;
        let (this, cid, eid) = (
            Arc::clone(self),
            container_id.to_string(),
            exec_id.to_string(),
        );
        Ok(StdinSink {
            fifo,
            close: Some(Box::new(move || {
                Box::pin(async move {
                    if let Err(e) = this.backend.task_close_stdin(&cid, &eid).await {
                        tracing::debug!(exec = %eid, error = %e, "closing exec stdin failed");
                    }
                })
            })),
            detach,
        })
    }
}
