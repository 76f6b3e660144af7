//! Start, stop, kill, remove, wait, and what happens when a task exits (events from highd
//! and reconciliation after a restart).

use std::time::Duration;

use chrono::Utc;
use tokio::sync::broadcast;

use super::{parse_signal, ContainerEvent, Daemon, DaemonError, DaemonResult};
use crate::api::route::WaitCondition;
use crate::backend::{Backend, BackendError, Stdio};
use crate::record::Status;

const SIGKILL: u32 = 9;
const SIGTERM: u32 = 15;
const DEFAULT_STOP_TIMEOUT: i64 = 10;
/// How long a SIGKILL is given to take effect before `kill` answers anyway.
const KILL_WAIT: Duration = Duration::from_secs(10);

/// What `wait` reports: dockerd's `{"StatusCode": N, "Error": null}`.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct WaitOutcome {
    pub status_code: i64,
}

/// dockerd's exit code for a process that could not be started, from the runtime's words.
fn start_failure_code(message: &str) -> i64 {
    if message.contains("executable file not found")
        || message.contains("no such file or directory")
    {
        127
    } else if message.contains("permission denied") {
        126
    } else {
        128
    }
}

/// Puts highd's task-create error into dockerd's shape:
/// `failed to create shim task: OCI runtime create failed: <runtime message>: unknown`.
fn shim_task_message(err: &BackendError) -> String {
    let raw = match err {
        BackendError::Failed { message, .. }
        | BackendError::NotFound { message }
        | BackendError::AlreadyExists { message }
        | BackendError::InvalidArgument { message } => message.clone(),
        other => other.to_string(),
    };
    let mut m = raw;
    if !m.starts_with("failed to create shim task") {
        if !m.starts_with("OCI runtime create failed") {
            m = format!("OCI runtime create failed: {m}");
        }
        m = format!("failed to create shim task: {m}");
    }
    if !m.ends_with(": unknown") {
        m.push_str(": unknown");
    }
    m
}

impl<B: Backend> Daemon<B> {
    /// Starts a container (a user's start: the restart policy starts over). `Ok(false)`
    /// means it was already running (HTTP 304).
    pub async fn start_container(&self, reference: &str) -> DaemonResult<bool> {
        let rec = self.container(reference)?;
        if !rec.state.status.is_running() {
            self.reset_restart(&rec.id);
        }
        self.start_inner(&rec.id, None).await
    }

    /// A start refused before highd was asked (a legacy link's target not running):
    /// recorded like a failed start, and a `--rm` container goes, as with dockerd.
    async fn links_refused_start(
        &self,
        rec: &crate::record::ContainerRecord,
        e: crate::network::NetworkError,
    ) -> DaemonError {
        let code = 128;
        let id = rec.id.clone();
        let _ = self.store.update(&id, |r| {
            r.state.error = e.to_string();
            r.state.exit_code = code;
            r.state.restarting = false;
        });
        if rec.host_config.auto_remove {
            if let Err(undo) = self.remove_container_record(&id, code).await {
                tracing::warn!(%id, error = %undo, "removing a container whose start was refused failed");
            }
        } else {
            self.emit(ContainerEvent::Exited { id, code });
        }
        e.into()
    }

    /// Starts a container; `by_policy` is the restart manager's generation when the
    /// restart policy starts it (the start is dropped if a stop or start came since).
    pub(super) async fn start_inner(&self, id: &str, by_policy: Option<u64>) -> DaemonResult<bool> {
        let lock = self.lock_for(id);
        let guard = lock.lock().await;
        let rec = self.container(id)?;
        if rec.state.status.is_running() {
            return Ok(false);
        }
        if let Some(generation) = by_policy {
            if !rec.state.restarting || !self.restart_generation_is(id, generation) {
                return Ok(false);
            }
        }
        if !rec.state.status.can_start() {
            return Err(DaemonError::NotRunning { id: rec.id });
        }
        let id = rec.id.clone();
        // A task left from an earlier run (exit recorded but delete failed) is stale.
        match self.backend.task_delete(&id).await {
            Ok(_) => {}
            Err(e) if e.is_not_found() => {}
            Err(e) => return Err(e.into()),
        }
        let log_uri = format!("jsonfile://{}", rec.log_path);
        let stdin = if rec.config.open_stdin {
            let path = self.init_stdin_path(&id);
            super::stdin::ensure_fifo(&path)?;
            path.to_string_lossy().into_owned()
        } else {
            String::new()
        };
        let stdio = Stdio {
            stdin,
            stdout: log_uri.clone(),
            stderr: log_uri,
            terminal: rec.config.tty,
        };
        if let Err(e) = self.check_links(&rec) {
            drop(guard);
            return Err(self.links_refused_start(&rec, e).await);
        }
        self.init_rt_budget(&rec)?;
        self.dns_start(&rec).await?;
        let started = async {
            let mounts = self.backend.snapshot_mounts(&rec.snapshot_key).await?;
            self.backend.task_create(&id, mounts, stdio).await?;
            match self.backend.task_start(&id, "").await {
                Ok(pid) => Ok(pid),
                Err(e) => {
                    let _ = self.backend.task_delete(&id).await;
                    Err(e)
                }
            }
        }
        .await;
        let pid = match started {
            Ok(pid) => pid,
            Err(e) => {
                self.dns_stop(&id);
                let message = shim_task_message(&e);
                let code = start_failure_code(&message);
                let auto_remove = rec.host_config.auto_remove;
                let failed = DaemonError::StartFailed {
                    message: message.clone(),
                };
                // Like dockerd: the status stays what it was ("created" for a container
                // that never ran); the error and exit code say what happened.
                self.store.update(&id, |r| {
                    r.state.error = failed.to_string();
                    r.state.exit_code = code;
                    r.state.restarting = false;
                })?;
                drop(guard);
                tracing::warn!(%id, error = %message, "container start failed");
                if auto_remove {
                    self.remove_container_record(&id, code).await?;
                } else {
                    self.emit(ContainerEvent::Exited { id, code });
                }
                return Err(failed);
            }
        };
        let health = super::health_monitor::on_start(&rec);
        self.store.update(&id, |r| {
            r.state.status = Status::Running;
            r.state.health = health;
            r.state.pid = pid;
            r.state.exit_code = 0;
            r.state.error.clear();
            r.state.started_at = Some(Utc::now());
            r.state.restarting = false;
            r.state.paused = false;
            if by_policy.is_none() {
                r.state.has_been_manually_stopped = false;
                r.restart_count = 0;
            }
        })?;
        self.emit(ContainerEvent::Started { id: id.clone() });
        tracing::info!(%id, pid, "container started");
        Ok(true)
    }

    /// Sends `signal` and waits up to `timeout` seconds (negative: forever) for the exit,
    /// then SIGKILLs. `Ok(false)` means it was not running (HTTP 304).
    pub async fn stop_container(
        &self,
        reference: &str,
        timeout: Option<i64>,
        signal: Option<&str>,
    ) -> DaemonResult<bool> {
        let mut rec = self.container(reference)?;
        if !rec.state.status.is_running() {
            // A container waiting to be restarted stops by not restarting.
            let (now, cancelled) = self.settle_restarting(&rec.id).await?;
            if cancelled {
                return Ok(true);
            }
            if !now.state.status.is_running() {
                return Ok(false);
            }
            rec = now;
        }
        let signal = match signal.or(rec.config.stop_signal.as_deref()) {
            Some(s) => parse_signal(s)?,
            None => SIGTERM,
        };
        self.cancel_restart(&rec.id)?;
        let timeout = timeout
            .or(rec.config.stop_timeout)
            .unwrap_or(DEFAULT_STOP_TIMEOUT);
        let mut events = self.subscribe();
        self.kill_task(&rec.id, signal).await?;
        let limit = u64::try_from(timeout).ok().map(Duration::from_secs);
        if self.wait_exit(&rec.id, &mut events, limit).await {
            return Ok(true);
        }
        tracing::info!(id = %rec.id, timeout, "container did not stop in time; killing it");
        self.kill_task(&rec.id, SIGKILL).await?;
        if !self.wait_exit(&rec.id, &mut events, Some(KILL_WAIT)).await {
            return Err(DaemonError::NoExitEvent { id: rec.id });
        }
        Ok(true)
    }

    /// `docker restart`: stop (if running), start, and the `restart` event.
    pub async fn restart_container(
        &self,
        reference: &str,
        timeout: Option<i64>,
        signal: Option<&str>,
    ) -> DaemonResult<()> {
        let id = self.container(reference)?.id;
        self.stop_container(&id, timeout, signal).await?;
        self.start_container(&id).await?;
        self.event_log.container("restart", &id, &[]);
        Ok(())
    }

    pub async fn kill_container(&self, reference: &str, signal: Option<&str>) -> DaemonResult<()> {
        let mut rec = self.container(reference)?;
        let signal = signal.map(parse_signal).transpose()?.unwrap_or(SIGKILL);
        if !rec.state.status.is_running() {
            let (now, cancelled) = self.settle_restarting(&rec.id).await?;
            if cancelled {
                return Ok(());
            }
            rec = now;
        }
        if !rec.state.status.is_running() {
            return Err(DaemonError::NotRunning { id: rec.id });
        }
        // dockerd: SIGKILL or the container's stop signal (any signal when it has none)
        // makes the exit final; every kill counts as a manual stop.
        let stop_signal = rec
            .config
            .stop_signal
            .as_deref()
            .map(parse_signal)
            .transpose()
            .ok()
            .flatten();
        if signal == SIGKILL || stop_signal.is_none_or(|s| s == signal) {
            self.cancel_restart(&rec.id)?;
        } else {
            self.store
                .update(&rec.id, |r| r.state.has_been_manually_stopped = true)?;
        }
        let mut events = self.subscribe();
        self.kill_task(&rec.id, signal).await?;
        if signal == SIGKILL {
            // dockerd's kill waits for a SIGKILLed container to be gone.
            self.wait_exit(&rec.id, &mut events, Some(KILL_WAIT)).await;
        }
        Ok(())
    }

    async fn kill_task(&self, id: &str, signal: u32) -> DaemonResult<()> {
        match self
            .backend
            .task_kill(id, "", signal, signal == SIGKILL)
            .await
        {
            Ok(()) => self.thaw_after_signal(id).await,
            // Gone already: its exit event is on the way.
            Err(e) if e.is_not_found() => Ok(()),
            Err(e) => Err(e.into()),
        }
    }

    /// Waits until the container is no longer running. Subscribe before the action whose
    /// effect is awaited so the event cannot be missed. Returns false on timeout.
    async fn wait_exit(
        &self,
        id: &str,
        events: &mut broadcast::Receiver<ContainerEvent>,
        limit: Option<Duration>,
    ) -> bool {
        let wait = async {
            loop {
                if !self
                    .store
                    .get(id)
                    .is_some_and(|r| r.state.status.is_running())
                {
                    return;
                }
                match events.recv().await {
                    Ok(_) | Err(broadcast::error::RecvError::Lagged(_)) => {}
                    Err(broadcast::error::RecvError::Closed) => return,
                }
            }
        };
        match limit {
            Some(d) => tokio::time::timeout(d, wait).await.is_ok(),
            None => {
                wait.await;
                true
            }
        }
    }

    /// `DELETE /containers/{id}?force=&v=`: `volumes` removes its anonymous volumes too.
    pub async fn remove_container(
        &self,
        reference: &str,
        force: bool,
        volumes: bool,
    ) -> DaemonResult<()> {
        let mut rec = self.container(reference)?;
        if rec.state.restarting {
            if !force {
                return Err(DaemonError::RemoveRunning {
                    name: rec.name.trim_start_matches('/').into(),
                    state: rec.state.status_str(),
                });
            }
            rec = self.settle_restarting(&rec.id).await?.0;
        }
        if rec.state.status.is_running() {
            if !force {
                return Err(DaemonError::RemoveRunning {
                    name: rec.name.trim_start_matches('/').into(),
                    state: rec.state.status_str(),
                });
            }
            self.cancel_restart(&rec.id)?;
            let mut events = self.subscribe();
            self.kill_task(&rec.id, SIGKILL).await?;
            if !self.wait_exit(&rec.id, &mut events, Some(KILL_WAIT)).await {
                return Err(DaemonError::NoExitEvent { id: rec.id });
            }
        }
        self.remove_container_with(&rec.id, rec.state.exit_code, Some(volumes), true)
            .await
    }

    /// Removes everything of a stopped container: task, highd container, snapshot, exec
    /// FIFOs, record and logs. Each step tolerates "already gone" so a removal interrupted
    /// by a crash can be finished later.
    /// `--rm` containers (`AutoRemove`) take their anonymous volumes with them.
    pub(super) async fn remove_container_record(&self, id: &str, code: i64) -> DaemonResult<()> {
        self.remove_container_with(id, code, None, true).await
    }

    /// `--rm` right after the exit, the record on disk still `running`: the `removing`
    /// mark stays in memory (two fsyncs less per `run --rm`). A crash before the record is
    /// gone needs no mark: reconcile finds a running record whose task is stopped or
    /// missing, handles the exit again and, the container being `--rm`, removes it.
    pub(super) async fn remove_after_exit(&self, id: &str, code: i64) -> DaemonResult<()> {
        self.remove_container_with(id, code, None, false).await
    }

    /// `volumes`: remove anonymous volumes; `None` means as `AutoRemove` says.
    /// `durable_mark`: `removing` is on disk before anything is removed, so a crash
    /// midway is finished at the next start.
    async fn remove_container_with(
        &self,
        id: &str,
        code: i64,
        volumes: Option<bool>,
        durable_mark: bool,
    ) -> DaemonResult<()> {
        let lock = self.lock_for(id);
        let _guard = lock.lock().await;
        let Some(rec) = self.store.get(id) else {
            return Ok(());
        };
        let code = if rec.state.status == Status::Exited {
            rec.state.exit_code
        } else {
            code
        };
        if durable_mark {
            self.store
                .update(id, |r| r.state.status = Status::Removing)?;
        } else {
            self.store
                .update_in_memory(id, |r| r.state.status = Status::Removing)?;
        }
        if let Err(e) = self.remove_parts(id, &rec.snapshot_key).await {
            // dockerd marks a container whose removal failed "dead"; `rm` tries again.
            tracing::warn!(%id, error = %e, "removal failed; marking the container dead");
            self.store.update(id, |r| {
                r.state.status = Status::Dead;
                r.state.error = format!("removal failed: {e}");
            })?;
            return Err(e);
        }
        self.store.remove(id)?;
        let volumes = volumes.unwrap_or(false) || rec.host_config.auto_remove;
        self.release_mounts(&rec, volumes);
        self.forget_execs(id);
        self.forget_restart(id);
        self.forget_lock(id);
        tracing::info!(%id, "container removed");
        self.emit(ContainerEvent::Removed {
            id: id.into(),
            code,
        });
        Ok(())
    }

    /// Deletes what highd and the exec root hold for a container; "already gone" is fine.
    async fn remove_parts(&self, id: &str, snapshot_key: &str) -> DaemonResult<()> {
        let ignore_missing = |r: Result<(), BackendError>| match r {
            Err(e) if !e.is_not_found() => Err(e),
            _ => Ok(()),
        };
        let highd = async {
            ignore_missing(self.backend.task_delete(id).await.map(|_| ()))?;
            ignore_missing(self.backend.container_delete(id).await)?;
            ignore_missing(self.backend.snapshot_remove(snapshot_key).await)
        };
        // The veth's deletion waits out an RCU grace period in the kernel (~15 ms): it
        // overlaps highd's deletes instead of following them. Neither needs the other.
        let (highd, network) = tokio::join!(highd, self.detach_network(id));
        highd?;
        network?;
        let exec_dir = self.exec_dir(id);
        match std::fs::remove_dir_all(&exec_dir) {
            Err(e) if e.kind() != std::io::ErrorKind::NotFound => Err(DaemonError::Io {
                op: "remove",
                path: exec_dir,
                source: e,
            }),
            _ => Ok(()),
        }
    }

    /// `POST /containers/{id}/wait`. Resolves the container now (404 before any body),
    /// then returns a future that completes when the condition holds.
    pub fn wait_container(
        &self,
        reference: &str,
        condition: WaitCondition,
    ) -> DaemonResult<impl std::future::Future<Output = WaitOutcome> + Send + '_> {
        let mut events = self.subscribe();
        let rec = self.container(reference)?;
        let id = rec.id.clone();
        Ok(async move {
            let mut last_code = rec.state.exit_code;
            if condition == WaitCondition::NotRunning && !rec.state.status.is_running() {
                return WaitOutcome {
                    status_code: last_code,
                };
            }
            loop {
                // Events already delivered come first: they carry the exit code of a
                // container that may be gone from the store by now.
                let event = match events.try_recv() {
                    Ok(ev) => Some(ev),
                    Err(broadcast::error::TryRecvError::Lagged(_)) => None,
                    Err(broadcast::error::TryRecvError::Closed) => {
                        return WaitOutcome {
                            status_code: last_code,
                        };
                    }
                    Err(broadcast::error::TryRecvError::Empty) => {
                        match (condition, self.store.get(&id)) {
                            (WaitCondition::Removed, None) => {
                                return WaitOutcome {
                                    status_code: last_code,
                                };
                            }
                            (WaitCondition::NotRunning, r)
                                if !r.as_ref().is_some_and(|r| r.state.status.is_running()) =>
                            {
                                return WaitOutcome {
                                    status_code: r.map_or(last_code, |r| r.state.exit_code),
                                };
                            }
                            _ => {}
                        }
                        match events.recv().await {
                            Ok(ev) => Some(ev),
                            Err(broadcast::error::RecvError::Lagged(_)) => None,
                            Err(broadcast::error::RecvError::Closed) => {
                                return WaitOutcome {
                                    status_code: last_code,
                                };
                            }
                        }
                    }
                };
                match event {
                    Some(ContainerEvent::Exited { id: e, code }) if e == id => {
                        last_code = code;
                        if condition != WaitCondition::Removed {
                            return WaitOutcome { status_code: code };
                        }
                    }
                    Some(ContainerEvent::Removed { id: e, code }) if e == id => {
                        return WaitOutcome { status_code: code };
                    }
                    _ => {}
                }
            }
        })
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn start_failure_messages_take_dockerds_shape() {
        let e = BackendError::Failed {
            op: "task create",
            message: "exec: \"nope\": executable file not found in $PATH".into(),
        };
        let m = shim_task_message(&e);
        assert_eq!(
            m,
            "failed to create shim task: OCI runtime create failed: exec: \"nope\": executable file not found in $PATH: unknown"
        );
        assert_eq!(start_failure_code(&m), 127);
        let e = BackendError::Failed {
            op: "task create",
            message: "failed to create shim task: OCI runtime create failed: x: permission denied: unknown".into(),
        };
        let m = shim_task_message(&e);
        assert!(!m.contains("unknown: unknown"));
        assert_eq!(start_failure_code(&m), 126);
    }
}
