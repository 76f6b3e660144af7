//! Restart policies (`--restart no|always|on-failure[:N]|unless-stopped`), as dockerd's
//! restart manager applies them: after an exit, with a back-off of 100 ms doubling up to
//! a minute (reset once a run lasted 10 s), and once when the engine starts.

use std::sync::Arc;
use std::time::Duration;

use chrono::{DateTime, Utc};
use serde::{Deserialize, Serialize};

use super::{Daemon, DaemonResult, InvalidParameter};
use crate::backend::Backend;
use crate::record::{ContainerRecord, Status};

const FIRST_DELAY: Duration = Duration::from_millis(100);
const MAX_DELAY: Duration = Duration::from_secs(60);
/// A run at least this long resets the back-off.
const RESET_AFTER: Duration = Duration::from_secs(10);

/// `HostConfig.RestartPolicy`.
#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "PascalCase", default)]
pub struct RestartPolicy {
    pub name: String,
    pub maximum_retry_count: i64,
}

impl RestartPolicy {
    pub fn is_none(&self) -> bool {
        self.name.is_empty() || self.name == "no"
    }

    /// moby's `ValidateRestartPolicy`, with its messages.
    pub fn validate(&self) -> Result<(), InvalidParameter> {
        let bad = |m: String| Err(InvalidParameter::RestartPolicy(m));
        match self.name.as_str() {
            "always" | "unless-stopped" | "no" => {
                if self.maximum_retry_count != 0 {
                    let mut m = "invalid restart policy: maximum retry count can only be used with 'on-failure'".to_string();
                    if self.maximum_retry_count < 0 {
                        m.push_str(" and cannot be negative");
                    }
                    return bad(m);
                }
                Ok(())
            }
            "on-failure" if self.maximum_retry_count < 0 => {
                bad("invalid restart policy: maximum retry count cannot be negative".into())
            }
            "on-failure" | "" => Ok(()),
            other => bad(format!(
                "invalid restart policy: unknown policy '{other}'; use one of 'no', 'always', 'on-failure', or 'unless-stopped'"
            )),
        }
    }

    /// The policy's verdict on an exit (dockerd's `ShouldRestart` without the back-off).
    /// `restart_count` counts the restarts already made by this policy.
    pub fn wants_restart(
        &self,
        exit_code: i64,
        manually_stopped: bool,
        restart_count: u32,
    ) -> bool {
        match self.name.as_str() {
            "always" => true,
            "unless-stopped" => !manually_stopped,
            "on-failure" => {
                let max = self.maximum_retry_count;
                exit_code != 0 && (max == 0 || i64::from(restart_count) < max)
            }
            _ => false,
        }
    }
}

/// Checks a create's policy (and normalizes `""` to `"no"`, as dockerd stores it).
pub fn check_create(host: &mut crate::types::HostConfig) -> DaemonResult<()> {
    host.restart_policy.validate()?;
    if host.restart_policy.name.is_empty() {
        host.restart_policy.name = "no".into();
    }
    if host.auto_remove && !host.restart_policy.is_none() {
        return Err(InvalidParameter::RestartPolicy(
            "can't create 'AutoRemove' container with restart policy".into(),
        )
        .into());
    }
    Ok(())
}

/// A restart waiting for its back-off.
#[derive(Debug)]
pub struct PendingRestart {
    id: String,
    delay: Duration,
    generation: u64,
}

/// dockerd's per-container restart manager; lives in memory only (the count is in the
/// record).
#[derive(Debug, Default, Clone)]
pub(super) struct RestartManager {
    delay: Duration,
    /// Set by stop/kill: the next exit is not restarted (dockerd's `ExitOnNext`).
    exit_on_next: bool,
    /// Bumped whenever a pending restart is cancelled or replaced.
    generation: u64,
}

impl<B: Backend> Daemon<B> {
    fn with_restart<T>(&self, id: &str, f: impl FnOnce(&mut RestartManager) -> T) -> T {
        let mut map = self.restarts.lock().unwrap_or_else(|e| e.into_inner());
        f(map.entry(id.to_string()).or_default())
    }

    pub(super) fn restart_generation_is(&self, id: &str, generation: u64) -> bool {
        self.with_restart(id, |m| m.generation == generation)
    }

    pub(super) fn forget_restart(&self, id: &str) {
        self.restarts
            .lock()
            .unwrap_or_else(|e| e.into_inner())
            .remove(id);
    }

    /// A user's stop or kill: the exit it causes is final, and a pending restart is
    /// cancelled (the record leaves `restarting`). Returns whether one was pending.
    pub(super) fn cancel_restart(&self, id: &str) -> DaemonResult<bool> {
        self.with_restart(id, |m| {
            m.exit_on_next = true;
            m.generation += 1;
        });
        let rec = self.store.update(id, |r| {
            r.state.has_been_manually_stopped = true;
        })?;
        if rec.state.restarting {
            self.store.update(id, |r| r.state.restarting = false)?;
            return Ok(true);
        }
        Ok(false)
    }

    /// For a stop, kill or removal of a container that is not running: cancels a pending
    /// restart under the container's lock (so a policy start cannot slip in between) and
    /// returns the record as it is now.
    pub(super) async fn settle_restarting(
        &self,
        id: &str,
    ) -> DaemonResult<(ContainerRecord, bool)> {
        let lock = self.lock_for(id);
        let _guard = lock.lock().await;
        let rec = self.container(id)?;
        if rec.state.restarting {
            self.cancel_restart(id)?;
            return Ok((self.container(id)?, true));
        }
        Ok((rec, false))
    }

    /// A user's start: the restart manager and count start over (dockerd's
    /// `ResetRestartManager(true)`).
    pub(super) fn reset_restart(&self, id: &str) {
        self.with_restart(id, |m| {
            *m = RestartManager {
                generation: m.generation + 1,
                ..RestartManager::default()
            }
        });
    }

    /// Decides, for an exit being recorded, whether the policy restarts the container;
    /// returns the delay when it does. Called under the container's lock.
    pub(super) fn restart_decision(
        &self,
        rec: &ContainerRecord,
        code: i64,
        exited_at: DateTime<Utc>,
    ) -> Option<Duration> {
        let policy = &rec.host_config.restart_policy;
        if policy.is_none() || rec.host_config.auto_remove {
            return None;
        }
        let ran = rec
            .state
            .started_at
            .map(|s| (exited_at - s).to_std().unwrap_or_default())
            .unwrap_or_default();
        self.with_restart(&rec.id, |m| {
            if m.exit_on_next {
                m.exit_on_next = false;
                return None;
            }
            if !policy.wants_restart(code, rec.state.has_been_manually_stopped, rec.restart_count) {
                return None;
            }
            if ran >= RESET_AFTER {
                m.delay = Duration::ZERO;
            }
            m.delay = if m.delay.is_zero() {
                FIRST_DELAY
            } else {
                (m.delay * 2).min(MAX_DELAY)
            };
            Some(m.delay)
        })
    }

    /// Asks for a restart after `delay` (the exit path has no `Arc` of the daemon; the
    /// event loop's restart worker runs it).
    pub(super) fn schedule_restart(&self, id: &str, delay: Duration) {
        let generation = self.with_restart(id, |m| m.generation);
        let _ = self.restart_tx.send(PendingRestart {
            id: id.to_string(),
            delay,
            generation,
        });
    }

    /// Runs the restarts `schedule_restart` asked for, each after its delay unless a stop,
    /// kill, start or removal came first. Started once, by the event loop.
    pub(super) fn spawn_restart_worker(self: &Arc<Self>) {
        let Some(mut rx) = self
            .restart_rx
            .lock()
            .unwrap_or_else(|e| e.into_inner())
            .take()
        else {
            return;
        };
        let this = Arc::clone(self);
        tokio::spawn(async move {
            while let Some(p) = rx.recv().await {
                let this = Arc::clone(&this);
                tokio::spawn(async move {
                    tokio::time::sleep(p.delay).await;
                    if this.with_restart(&p.id, |m| m.generation) != p.generation {
                        return;
                    }
                    if let Err(e) = this.start_by_policy(&p.id, p.generation).await {
                        tracing::warn!(id = %p.id, error = %e, "restart by policy failed");
                        let _ = this.store.update(&p.id, |r| r.state.restarting = false);
                    }
                });
            }
        });
    }

    async fn start_by_policy(&self, id: &str, generation: u64) -> DaemonResult<()> {
        let Some(rec) = self.store.get(id) else {
            return Ok(());
        };
        if !rec.state.restarting || rec.state.status != Status::Exited {
            return Ok(());
        }
        tracing::info!(%id, count = rec.restart_count, "restarting container by policy");
        self.start_inner(id, Some(generation)).await.map(drop)
    }

    /// At engine start: containers whose policy says so are started again (dockerd's
    /// restore: `always` even when the user stopped them, `unless-stopped` only when not,
    /// `on-failure` after a failure within the count). A container left `restarting` by
    /// the previous engine is restarted too.
    pub async fn restart_at_boot(&self) {
        for rec in self.store.list() {
            if rec.state.status != Status::Exited || rec.state.started_at.is_none() {
                continue;
            }
            let policy = &rec.host_config.restart_policy;
            let wanted = rec.state.restarting
                || policy.wants_restart(
                    rec.state.exit_code,
                    rec.state.has_been_manually_stopped,
                    rec.restart_count,
                );
            if policy.is_none() || rec.host_config.auto_remove || !wanted {
                continue;
            }
            tracing::info!(id = %rec.id, policy = %policy.name, "starting container by its restart policy");
            if let Err(e) = self.start_container(&rec.id).await {
                tracing::warn!(id = %rec.id, error = %e, "restart at engine start failed");
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn p(name: &str, max: i64) -> RestartPolicy {
        RestartPolicy {
            name: name.into(),
            maximum_retry_count: max,
        }
    }

    #[test]
    fn validation_messages_are_dockerds() {
        assert!(p("always", 0).validate().is_ok());
        assert!(p("on-failure", 3).validate().is_ok());
        assert!(p("", 0).validate().is_ok());
        assert_eq!(
            p("always", 2).validate().unwrap_err().to_string(),
            "invalid restart policy: maximum retry count can only be used with 'on-failure'"
        );
        assert_eq!(
            p("on-failure", -1).validate().unwrap_err().to_string(),
            "invalid restart policy: maximum retry count cannot be negative"
        );
        assert_eq!(
            p("sometimes", 0).validate().unwrap_err().to_string(),
            "invalid restart policy: unknown policy 'sometimes'; use one of 'no', 'always', 'on-failure', or 'unless-stopped'"
        );
    }

    #[test]
    fn verdicts() {
        assert!(p("always", 0).wants_restart(0, true, 5));
        assert!(!p("unless-stopped", 0).wants_restart(1, true, 0));
        assert!(p("unless-stopped", 0).wants_restart(0, false, 0));
        assert!(!p("on-failure", 0).wants_restart(0, false, 0));
        assert!(p("on-failure", 2).wants_restart(1, false, 1));
        assert!(!p("on-failure", 2).wants_restart(1, false, 2));
        assert!(p("on-failure", 0).wants_restart(1, false, 100));
        assert!(!p("no", 0).wants_restart(1, false, 0));
    }

    #[test]
    fn auto_remove_conflicts_with_a_policy() {
        let mut h = crate::types::HostConfig {
            auto_remove: true,
            restart_policy: p("always", 0),
            ..Default::default()
        };
        assert_eq!(
            check_create(&mut h).unwrap_err().to_string(),
            "can't create 'AutoRemove' container with restart policy"
        );
        let mut h = crate::types::HostConfig::default();
        check_create(&mut h).unwrap();
        assert_eq!(h.restart_policy.name, "no");
    }
}
