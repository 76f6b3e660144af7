//! `docker exec`: exec processes in a running container, with stdout/stderr over FIFOs
//! under `<exec-root>/<container id>/` (ARCHITECTURE.md, "stdio strings").

use std::path::{Path, PathBuf};
use std::sync::Arc;

use bytes::Bytes;
use tokio::io::AsyncReadExt;
use tokio::sync::mpsc;

use super::stdin::{mkfifo, StdinSink};
use super::tty::{parse_detach_keys, DetachWatch};
use super::{random_id, Daemon, DaemonError, DaemonResult, InvalidParameter};
use crate::backend::{Backend, BackendError, Stdio};
use crate::record::ContainerRecord;
use crate::spec::{self, SpecInput};
use crate::stdcopy::{frame, StdStream};
use crate::types::ExecConfig;

#[derive(Debug, Clone, PartialEq)]
pub struct ExecRecord {
    pub id: String,
    pub container_id: String,
    pub config: ExecConfig,
    pub running: bool,
    pub exit_code: Option<i64>,
    pub pid: u32,
    /// Why the process could not be started (a hijacked start reports it in the stream
    /// only; the health monitor records it as dockerd's probe error).
    pub start_error: Option<String>,
}

/// Multiplexed output of an exec; closes after the output is drained and the exit code is
/// recorded, so an inspect right after EOF sees the exit code.
pub type ExecStream = mpsc::Receiver<Bytes>;

/// dockerd's shape: `OCI runtime exec failed: <runtime message>: unknown`.
fn exec_failure_message(err: &BackendError) -> String {
    let mut m = match err {
        BackendError::Failed { message, .. }
        | BackendError::NotFound { message }
        | BackendError::AlreadyExists { message }
        | BackendError::InvalidArgument { message } => message.clone(),
        other => other.to_string(),
    };
    if !m.starts_with("OCI runtime exec failed") {
        m = format!("OCI runtime exec failed: {m}");
    }
    if !m.ends_with(": unknown") {
        m.push_str(": unknown");
    }
    m
}

/// Opens the read end of an exec output FIFO. This must happen before the shim opens the
/// write end: the shim opens it O_RDWR (so it never blocks), and output written and closed
/// before any reader exists dies with the pipe.
fn open_fifo_reader(path: &Path) -> DaemonResult<tokio::net::unix::pipe::Receiver> {
    // A receiver opened before any writer waits for one instead of reading EOF.
    tokio::net::unix::pipe::OpenOptions::new()
        .open_receiver(path)
        .map_err(|source| DaemonError::Io {
            op: "open",
            path: path.to_path_buf(),
            source,
        })
}

/// Copies one FIFO into chunks until the writer (the shim) closes it: framed for `stream`,
/// or as they are (`None`: a terminal's raw stream).
async fn pump(
    path: PathBuf,
    mut rx: tokio::net::unix::pipe::Receiver,
    stream: Option<StdStream>,
    tx: mpsc::Sender<Bytes>,
) {
    let mut buf = vec![0u8; 32 * 1024];
    loop {
        match rx.read(&mut buf).await {
            Ok(0) | Err(_) => break,
            Ok(n) => {
                let chunk = match stream {
                    Some(s) => frame(s, &buf[..n]),
                    None => Bytes::copy_from_slice(&buf[..n]),
                };
                if tx.send(chunk).await.is_err() {
                    // The client went away; keep draining so the process never blocks on a
                    // full pipe.
                    continue;
                }
            }
        }
    }
    let _ = std::fs::remove_file(&path);
}

/// dockerd's `getActiveContainer`: an exec needs a running, unpaused container that is
/// not between restarts; `reference` names it in the paused message, as the user said it.
fn exec_allowed(rec: &ContainerRecord, reference: &str) -> DaemonResult<()> {
    if rec.state.restarting {
        return Err(DaemonError::Restarting { id: rec.id.clone() });
    }
    if !rec.state.status.is_running() {
        return Err(DaemonError::ExecNotRunning { id: rec.id.clone() });
    }
    if rec.state.paused {
        return Err(DaemonError::ExecPaused {
            reference: reference.to_string(),
        });
    }
    Ok(())
}

impl<B: Backend> Daemon<B> {
    pub fn create_exec(&self, reference: &str, config: ExecConfig) -> DaemonResult<String> {
        let rec = self.container(reference)?;
        exec_allowed(&rec, reference)?;
        if config.cmd.as_slice().is_empty() {
            return Err(InvalidParameter::NoExecCommand.into());
        }
        parse_detach_keys(&config.detach_keys)?;
        let id = random_id();
        self.event_log.container(
            &format!("exec_create: {}", config.cmd.as_slice().join(" ")),
            &rec.id,
            &[("execID", id.clone())],
        );
        let exec = ExecRecord {
            id: id.clone(),
            container_id: rec.id,
            config,
            running: false,
            exit_code: None,
            pid: 0,
            start_error: None,
        };
        self.execs
            .lock()
            .unwrap_or_else(|e| e.into_inner())
            .insert(id.clone(), exec);
        Ok(id)
    }

    pub fn exec(&self, id: &str) -> DaemonResult<ExecRecord> {
        self.execs
            .lock()
            .unwrap_or_else(|e| e.into_inner())
            .get(id)
            .cloned()
            .ok_or_else(|| DaemonError::NoSuchExec { id: id.into() })
    }

    fn update_exec(&self, id: &str, f: impl FnOnce(&mut ExecRecord)) {
        if let Some(e) = self
            .execs
            .lock()
            .unwrap_or_else(|e| e.into_inner())
            .get_mut(id)
        {
            f(e);
        }
    }

    pub(super) fn forget_execs(&self, container_id: &str) {
        self.execs
            .lock()
            .unwrap_or_else(|e| e.into_inner())
            .retain(|_, e| e.container_id != container_id);
    }

    /// Starts an exec. Returns its output stream (and its stdin with `AttachStdin`) unless
    /// `detach`.
    /// What `start_exec` checks before doing anything, for callers that answer the client
    /// before starting (a hijacked exec start reports later errors only in the stream).
    pub fn exec_startable(&self, id: &str) -> DaemonResult<()> {
        let exec = self.exec(id)?;
        let rec = self.container(&exec.container_id)?;
        exec_allowed(&rec, &rec.id)
    }

    pub async fn start_exec(
        self: &Arc<Self>,
        id: &str,
        detach: bool,
    ) -> DaemonResult<Option<(ExecStream, Option<StdinSink>)>> {
        let exec = self.exec(id)?;
        let rec = self.container(&exec.container_id)?;
        exec_allowed(&rec, &rec.id)?;
        let cfg = &exec.config;
        let hostname = if rec.config.hostname.is_empty() {
            rec.short_id().to_string()
        } else {
            rec.config.hostname.clone()
        };
        let user = if cfg.user.is_empty() {
            rec.config.user.clone()
        } else {
            cfg.user.clone()
        };
        let layers = if crate::users::needs_files(&user) {
            self.image(&rec.image).await?.layers
        } else {
            Vec::new()
        };
        let exec_user = crate::users::for_image(&*self.backend, &layers, &user).await?;
        let input = SpecInput {
            id: &rec.id,
            args: cfg.cmd.as_slice().to_vec(),
            env: spec::merge_env(&rec.config.env, &cfg.env),
            cwd: if cfg.working_dir.is_empty() {
                rec.config.working_dir.clone()
            } else {
                cfg.working_dir.clone()
            },
            user: format!("{}:{}", exec_user.uid, exec_user.gid),
            tty: cfg.tty,
            hostname,
            cgroup_parent: &self.config.cgroup_parent,
            host_config: &rec.host_config,
            etc_files: Vec::new(),
        };
        let mut process = spec::process(&input)?;
        process["user"] = exec_user.to_json();
        if cfg.tty {
            let size = cfg.console_size.as_ref().map(|s| serde_json::json!(s));
            if let Some(size) = super::console_size(size.as_ref()) {
                process["consoleSize"] = size;
            }
        }
        let process = serde_json::to_vec(&process).unwrap_or_default();
        let dir = self.exec_dir(&rec.id);
        std::fs::create_dir_all(&dir).map_err(|source| DaemonError::Io {
            op: "create",
            path: dir.clone(),
            source,
        })?;
        let (tx, rx) = mpsc::channel(64);
        let mut stdio = Stdio {
            terminal: cfg.tty,
            ..Stdio::default()
        };
        let mut pumps = Vec::new();
        if !detach {
            for (wanted, stream, suffix) in [
                (cfg.attach_stdout, StdStream::Stdout, "stdout"),
                // A terminal has one output stream, carried as stdout.
                (cfg.attach_stderr && !cfg.tty, StdStream::Stderr, "stderr"),
            ] {
                if !wanted {
                    continue;
                }
                let path = dir.join(format!("{id}-{suffix}"));
                mkfifo(&path)?;
                let reader = match open_fifo_reader(&path) {
                    Ok(r) => r,
                    Err(e) => {
                        let _ = std::fs::remove_file(&path);
                        return Err(e);
                    }
                };
                let s = path.to_string_lossy().into_owned();
                match stream {
                    StdStream::Stdout => stdio.stdout = s,
                    _ => stdio.stderr = s,
                }
                let framing = (!cfg.tty).then_some(stream);
                pumps.push(tokio::spawn(pump(path, reader, framing, tx.clone())));
            }
        }
        let stdin_path = dir.join(format!("{id}-stdin"));
        let mut stdin = None;
        if !detach && cfg.attach_stdin {
            mkfifo(&stdin_path)?;
            stdio.stdin = stdin_path.to_string_lossy().into_owned();
            let watch = if cfg.tty {
                Some(DetachWatch::new(parse_detach_keys(&cfg.detach_keys)?))
            } else {
                None
            };
            stdin = Some(self.exec_stdin(&rec.id, id, &stdin_path, watch)?);
        }
        let started = async {
            self.backend.task_exec(&rec.id, id, process, stdio).await?;
            self.backend.task_start(&rec.id, id).await
        }
        .await;
        let pid = match started {
            Ok(pid) => pid,
            Err(e) => {
                for p in pumps {
                    p.abort();
                }
                let _ = std::fs::remove_file(dir.join(format!("{id}-stdout")));
                let _ = std::fs::remove_file(dir.join(format!("{id}-stderr")));
                let _ = std::fs::remove_file(&stdin_path);
                let _ = self.backend.task_delete_process(&rec.id, id).await;
                let message = exec_failure_message(&e);
                let code = if message.contains("executable file not found")
                    || message.contains("no such file or directory")
                {
                    127
                } else {
                    126
                };
                self.update_exec(id, |x| {
                    x.exit_code = Some(code);
                    x.start_error = Some(message.clone());
                });
                if detach {
                    return Err(DaemonError::ExecFailed { message });
                }
                // dockerd reports a failed exec inside the already hijacked stream (as
                // stdout text) and lets the client read the exit code from inspect.
                let (tx, rx) = mpsc::channel(1);
                let text = format!("{message}\r\n");
                let _ = tx.try_send(if cfg.tty {
                    Bytes::from(text)
                } else {
                    frame(StdStream::Stdout, text.as_bytes())
                });
                return Ok(Some((rx, None)));
            }
        };
        self.update_exec(id, |x| {
            x.running = true;
            x.pid = pid;
        });
        self.event_log.container(
            &format!("exec_start: {}", cfg.cmd.as_slice().join(" ")),
            &rec.id,
            &[("execID", id.to_string())],
        );
        let this = Arc::clone(self);
        let (cid, eid) = (rec.id.clone(), id.to_string());
        tokio::spawn(async move {
            let code = match this.backend.task_wait(&cid, &eid).await {
                Ok((status, _)) => i64::from(status),
                Err(e) => {
                    tracing::warn!(exec = %eid, error = %e, "waiting for exec failed");
                    -1
                }
            };
            // Output is complete once the FIFOs hit EOF; only then report the exit.
            for p in pumps {
                let _ = p.await;
            }
            this.update_exec(&eid, |x| {
                x.running = false;
                x.exit_code = Some(code);
            });
            this.event_log.container(
                "exec_die",
                &cid,
                &[("execID", eid.clone()), ("exitCode", code.to_string())],
            );
            let _ = std::fs::remove_file(&stdin_path);
            if let Err(e) = this.backend.task_delete_process(&cid, &eid).await {
                tracing::debug!(exec = %eid, error = %e, "deleting exec process failed");
            }
            drop(tx);
        });
        Ok((!detach).then_some((rx, stdin)))
    }
}

#[cfg(test)]
mod fifo_tests {
    use super::*;
    use std::io::Write;

    #[tokio::test]
    async fn pump_waits_for_the_writer_and_ends_at_its_close() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("x-stdout");
        mkfifo(&path).unwrap();
        let (tx, mut rx) = mpsc::channel(8);
        let reader = open_fifo_reader(&path).unwrap();
        let pumping = tokio::spawn(pump(path.clone(), reader, Some(StdStream::Stderr), tx));
        // No writer yet: the pump must wait rather than report EOF.
        tokio::task::yield_now().await;
        assert!(rx.try_recv().is_err());
        let writer_path = path.clone();
        tokio::task::spawn_blocking(move || {
            let mut w = std::fs::OpenOptions::new()
                .write(true)
                .open(writer_path)
                .unwrap();
            w.write_all(b"hi\n").unwrap();
        })
        .await
        .unwrap();
        let got = rx.recv().await.unwrap();
        assert_eq!(
            crate::stdcopy::demux(&got).unwrap(),
            vec![(2, b"hi\n".to_vec())]
        );
        assert!(
            rx.recv().await.is_none(),
            "the stream ends once the writer closed"
        );
        pumping.await.unwrap();
        assert!(!path.exists(), "the fifo is removed after use");
    }

    #[tokio::test]
    async fn output_of_a_writer_that_came_and_went_before_the_pump_ran_is_kept() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("y-stdout");
        mkfifo(&path).unwrap();
        let reader = open_fifo_reader(&path).unwrap();
        // The shim's way: O_RDWR, write everything, close, all before the pump runs.
        {
            let mut w = std::fs::OpenOptions::new()
                .read(true)
                .write(true)
                .open(&path)
                .unwrap();
            w.write_all(b"fast\n").unwrap();
        }
        let (tx, mut rx) = mpsc::channel(8);
        let pumping = tokio::spawn(pump(path.clone(), reader, Some(StdStream::Stdout), tx));
        let got = rx
            .recv()
            .await
            .expect("the early output reaches the stream");
        assert_eq!(
            crate::stdcopy::demux(&got).unwrap(),
            vec![(1, b"fast\n".to_vec())]
        );
        assert!(rx.recv().await.is_none());
        pumping.await.unwrap();
    }
}
