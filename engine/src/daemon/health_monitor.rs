//! dockerd's health monitor: one task per running container with a health check, which
//! runs the probe as an exec in the container every interval and records the results in
//! `State.Health`. Monitors follow the container events (start, exit, removal) and are
//! resumed for running containers after the engine (re)connects to highd.

use std::collections::HashMap;
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::{Arc, Mutex};
use std::time::Duration;

use chrono::{DateTime, Utc};
use tokio::sync::{broadcast, watch};

use super::health::{self, HealthConfig, HealthResult, LimitedOutput};
use super::{ContainerEvent, Daemon};
use crate::backend::Backend;
use crate::record::ContainerRecord;
use crate::types::{ExecConfig, StrSlice};

const SIGKILL: u32 = 9;
/// How long a probe killed at its timeout is given to go away before its result is
/// recorded anyway.
const KILL_GRACE: Duration = Duration::from_secs(10);

/// The running monitors, by container ID.
#[derive(Default)]
pub(crate) struct Monitors {
    running: Mutex<HashMap<String, watch::Sender<bool>>>,
    watching: AtomicBool,
}

impl Monitors {
    fn replace(&self, id: &str, stop: Option<watch::Sender<bool>>) {
        let mut map = self.running.lock().unwrap_or_else(|e| e.into_inner());
        let old = match stop {
            Some(s) => map.insert(id.to_string(), s),
            None => map.remove(id),
        };
        if let Some(old) = old {
            let _ = old.send(true);
        }
    }

    fn has(&self, id: &str) -> bool {
        self.running
            .lock()
            .unwrap_or_else(|e| e.into_inner())
            .get(id)
            .is_some_and(|s| !*s.borrow())
    }
}

/// The probe of a container's config, if it has one that runs (not `NONE`).
fn probe_of(rec: &ContainerRecord) -> Option<(HealthConfig, Vec<String>)> {
    let cfg = HealthConfig::from_extra(&rec.config.extra)?;
    let shell: Vec<String> = rec
        .config
        .extra
        .get("Shell")
        .and_then(|v| serde_json::from_value(v.clone()).ok())
        .unwrap_or_default();
    let cmd = cfg.probe_command(&shell)?;
    Some((cfg, cmd))
}

/// `State.Health` of a container that starts: `starting` if it has a probe (log kept),
/// what it was otherwise.
pub fn on_start(rec: &ContainerRecord) -> Option<health::Health> {
    match probe_of(rec) {
        Some(_) => Some(health::starting(rec.state.health.clone())),
        None => rec.state.health.clone(),
    }
}

/// A stopped monitor leaves `unhealthy` behind, as dockerd's does.
pub fn on_stop(state: &mut crate::record::State) {
    if let Some(h) = &mut state.health {
        h.status = health::UNHEALTHY.into();
    }
}

/// Collects a probe's stdout and stderr until its stream ends.
async fn drain(rx: &mut super::ExecStream, out: &mut LimitedOutput) {
    while let Some(chunk) = rx.recv().await {
        for (_, data) in crate::stdcopy::demux(&chunk).unwrap_or_default() {
            out.push(&data);
        }
    }
}

impl<B: Backend> Daemon<B> {
    /// Follows container starts and exits; started once, by the event loop.
    pub(super) fn spawn_health_watcher(self: &Arc<Self>) {
        if self.health.watching.swap(true, Ordering::SeqCst) {
            return;
        }
        let mut rx = self.subscribe();
        let this = Arc::clone(self);
        tokio::spawn(async move {
            loop {
                match rx.recv().await {
                    Ok(ContainerEvent::Started { id }) => this.start_health_monitor(&id, false),
                    Ok(ContainerEvent::Exited { id, .. } | ContainerEvent::Removed { id, .. }) => {
                        this.health.replace(&id, None)
                    }
                    Err(broadcast::error::RecvError::Lagged(_)) => this.resume_health_monitors(),
                    Err(broadcast::error::RecvError::Closed) => return,
                }
            }
        });
    }

    /// Starts monitors for running containers that have none (after the engine starts or
    /// reconnects), and stops those of containers no longer running.
    pub(super) fn resume_health_monitors(self: &Arc<Self>) {
        for rec in self.store.list() {
            if !rec.state.status.is_running() {
                self.health.replace(&rec.id, None);
            } else if !self.health.has(&rec.id) {
                self.start_health_monitor(&rec.id, true);
            }
        }
    }

    /// `reset`: a monitor resumed by a new engine starts over from `starting`, as
    /// dockerd's restore does (a container start has already reset it).
    fn start_health_monitor(self: &Arc<Self>, id: &str, reset: bool) {
        let Some(rec) = self.store.get(id) else {
            return;
        };
        let Some((cfg, cmd)) = probe_of(&rec) else {
            self.health.replace(id, None);
            return;
        };
        if !rec.state.status.is_running() {
            return;
        }
        if reset {
            let _ = self.store.update(id, |r| {
                r.state.health = Some(health::starting(r.state.health.take()))
            });
        }
        let (tx, rx) = watch::channel(false);
        self.health.replace(id, Some(tx));
        let this = Arc::clone(self);
        let started_at = rec.state.started_at;
        let id = id.to_string();
        tokio::spawn(async move { this.health_loop(id, started_at, cfg, cmd, rx).await });
    }

    async fn health_loop(
        self: Arc<Self>,
        id: String,
        started_at: Option<DateTime<Utc>>,
        cfg: HealthConfig,
        cmd: Vec<String>,
        mut stop: watch::Receiver<bool>,
    ) {
        loop {
            let wait = self.next_probe_in(&id, &cfg, started_at);
            tokio::select! {
                _ = stop.changed() => return,
                _ = tokio::time::sleep(wait) => {}
            }
            if *stop.borrow() {
                return;
            }
            let Some(rec) = self.store.get(&id) else {
                return;
            };
            if !rec.state.status.is_running() || rec.state.started_at != started_at {
                return;
            }
            // A frozen container cannot run a probe; its health waits for the unpause.
            if rec.state.paused {
                continue;
            }
            // The probe is bounded by its timeout; a stop meanwhile discards its result.
            let result = self.run_probe(&rec, &cmd, cfg.timeout()).await;
            if *stop.borrow() {
                return;
            }
            let mut changed = None;
            let updated = self.store.update_in_memory(&id, |r| {
                // Only for the run the probe was made in.
                if !r.state.status.is_running() || r.state.started_at != started_at {
                    return;
                }
                let h = r.state.health.get_or_insert_with(|| health::starting(None));
                changed = health::apply_result(h, &cfg, started_at, result);
            });
            if updated.is_err() {
                return;
            }
            // Saved after every probe, as dockerd checkpoints: the log survives a restart.
            if let Err(e) = self.store.sync(&id) {
                tracing::warn!(%id, error = %e, "saving the health log failed");
            }
            if let Some(status) = changed {
                tracing::info!(%id, %status, "health status changed");
                self.event_log
                    .container(&format!("health_status: {status}"), &id, &[]);
            }
        }
    }

    /// dockerd's `getInterval`: the start interval while starting within the start
    /// period, the interval otherwise.
    fn next_probe_in(
        &self,
        id: &str,
        cfg: &HealthConfig,
        started_at: Option<DateTime<Utc>>,
    ) -> Duration {
        let since = started_at
            .and_then(|s| (Utc::now() - s).to_std().ok())
            .unwrap_or_default();
        if since >= cfg.start_period() {
            return cfg.interval();
        }
        let starting = self
            .store
            .get(id)
            .and_then(|r| r.state.health)
            .is_some_and(|h| h.status == health::STARTING);
        if starting {
            cfg.start_interval()
        } else {
            cfg.interval()
        }
    }

    /// One probe: an exec of `cmd` with the container's user and working dir, output
    /// captured (capped), killed at `timeout`. Failures to run it are results with exit
    /// code -1, as in dockerd.
    async fn run_probe(
        self: &Arc<Self>,
        rec: &ContainerRecord,
        cmd: &[String],
        timeout: Duration,
    ) -> HealthResult {
        let start = Utc::now();
        let failed = |message: String| HealthResult {
            start,
            end: Utc::now(),
            exit_code: -1,
            output: message,
        };
        let config = ExecConfig {
            cmd: StrSlice(Some(cmd.to_vec())),
            attach_stdout: true,
            attach_stderr: true,
            ..ExecConfig::default()
        };
        let exec_id = match self.create_exec(&rec.id, config) {
            Ok(id) => id,
            Err(e) => return failed(e.to_string()),
        };
        let mut rx = match self.start_exec(&exec_id, false).await {
            Ok(Some((rx, _))) => rx,
            Ok(None) => {
                self.forget_exec(&exec_id);
                return failed("the probe's exec had no output stream".into());
            }
            Err(e) => {
                self.forget_exec(&exec_id);
                return failed(e.to_string());
            }
        };
        let mut out = LimitedOutput::default();
        let timed_out = tokio::time::timeout(timeout, drain(&mut rx, &mut out))
            .await
            .is_err();
        if timed_out {
            if let Err(e) = self
                .backend
                .task_kill(&rec.id, &exec_id, SIGKILL, false)
                .await
            {
                tracing::debug!(id = %rec.id, error = %e, "killing a timed-out probe failed");
            }
            // Wait for it to go, so dying probes do not pile up.
            let _ = tokio::time::timeout(KILL_GRACE, drain(&mut rx, &mut out)).await;
            self.forget_exec(&exec_id);
            let out = out.into_string();
            let limit = health::go_duration(timeout);
            return HealthResult {
                start,
                end: Utc::now(),
                exit_code: -1,
                output: if out.is_empty() {
                    format!("Health check exceeded timeout ({limit})")
                } else {
                    format!("Health check exceeded timeout ({limit}): {out}")
                },
            };
        }
        let exec = self.exec(&exec_id).ok();
        self.forget_exec(&exec_id);
        // A probe that could not be started (its binary missing) is dockerd's probe
        // error: exit code -1 and the runtime's message, not the exec's 126/127.
        if let Some(message) = exec.as_ref().and_then(|e| e.start_error.clone()) {
            return failed(message);
        }
        let exit_code = exec.and_then(|e| e.exit_code).unwrap_or(-1);
        HealthResult {
            start,
            end: Utc::now(),
            exit_code,
            output: out.into_string(),
        }
    }

    fn forget_exec(&self, exec_id: &str) {
        self.execs
            .lock()
            .unwrap_or_else(|e| e.into_inner())
            .remove(exec_id);
    }
}
