//! What happens when a task exits (highd's `/tasks/exit` events), and reconciliation
//! with highd after the engine (re)connects.

use std::sync::Arc;
use std::time::Duration;

use chrono::{DateTime, Utc};
use futures::StreamExt;

use super::{ContainerEvent, Daemon, DaemonResult};
use crate::backend::{Backend, BackendError, TaskStatus};
use crate::record::{ContainerRecord, Status};

/// How many containers are reconciled at once after a (re)connect.
const RECONCILE_PARALLELISM: usize = 8;

impl<B: Backend> Daemon<B> {
    /// Records an exit of the container's init process: state, task deletion, and
    /// `--rm`. Duplicate or stale events (container not running) are ignored.
    pub async fn handle_exit(
        &self,
        id: &str,
        exit_status: u32,
        exited_at: Option<DateTime<Utc>>,
    ) -> DaemonResult<()> {
        let lock = self.lock_for(id);
        let guard = lock.lock().await;
        let Some(rec) = self.store.get(id) else {
            return Ok(());
        };
        if !rec.state.status.is_running() {
            return Ok(());
        }
        let code = i64::from(exit_status);
        let at = exited_at.unwrap_or_else(Utc::now);
        let restart = self.restart_decision(&rec, code, at);
        self.store.update_in_memory(id, |r| {
            r.state.set_exited(code, at);
            super::health_monitor::on_stop(&mut r.state);
            if restart.is_some() {
                r.state.restarting = true;
                r.restart_count += 1;
            }
        })?;
        tracing::info!(%id, code, restart = restart.is_some(), "container exited");
        self.dns_stop(id);
        // Waiters (stop, wait, attach) hear of the exit before the fsync and the task
        // delete, both of which can be slow; the task is deleted only after the record is
        // durable, so a crash in between is repaired by reconcile.
        self.emit(ContainerEvent::Exited {
            id: id.into(),
            code,
        });
        if restart.is_none() && rec.host_config.auto_remove {
            // `--rm`: no `exited` write, the removal follows (and deletes the task). A
            // crash before it is done finds the record running and the task stopped or
            // gone, and handles the exit again.
            drop(guard);
            return self.remove_after_exit(id, code).await;
        }
        self.store.sync(id)?;
        match self.backend.task_delete(id).await {
            Ok(_) => {}
            Err(e) if e.is_not_found() => {}
            Err(e) => tracing::warn!(%id, error = %e, "deleting the exited task failed"),
        }
        drop(guard);
        if let Some(delay) = restart {
            self.schedule_restart(id, delay);
        }
        Ok(())
    }

    /// Brings records in line with highd: running tasks keep running with their pid,
    /// tasks that exited while the engine was away get their exit recorded, removals
    /// interrupted by a crash are finished. Never kills anything.
    pub async fn reconcile(&self) -> DaemonResult<()> {
        if let Err(e) = self.collect_orphans().await {
            tracing::warn!(error = %e, "collecting orphaned highd containers failed");
        }
        // Containers are independent: reconcile them side by side (task deletes are slow)
        // and let one failure not stop the others.
        let results: Vec<DaemonResult<()>> = futures::stream::iter(self.store.list())
            .map(|rec| async move {
                let id = rec.id.clone();
                let r = self.reconcile_one(rec).await;
                if let Err(e) = &r {
                    tracing::warn!(%id, error = %e, "reconciling container failed");
                }
                r
            })
            .buffer_unordered(RECONCILE_PARALLELISM)
            .collect()
            .await;
        results.into_iter().find(Result::is_err).unwrap_or(Ok(()))
    }

    async fn reconcile_one(&self, rec: ContainerRecord) -> DaemonResult<()> {
        let id = rec.id.clone();
        // Reconcile runs while the API serves (after every resubscribe), so it must not act
        // on a record another operation is changing: start_container holds this lock
        // between tasks.Create and tasks.Start, when the task looks `created`. The record
        // listed earlier may be stale, so it is read again under the lock.
        let lock = self.lock_for(&id);
        let guard = lock.lock().await;
        let Some(rec) = self.store.get(&id) else {
            return Ok(());
        };
        tracing::debug!(%id, status = rec.state.status.as_str(), "reconciling");
        match rec.state.status {
            Status::Removing => {
                // remove_container_record takes the lock itself.
                drop(guard);
                return self.remove_container_record(&id, rec.state.exit_code).await;
            }
            Status::Created => return self.adopt_started(&id, guard).await,
            Status::Exited if rec.host_config.auto_remove => {
                drop(guard);
                return self.remove_container_record(&id, rec.state.exit_code).await;
            }
            Status::Running => {}
            _ => return Ok(()),
        }
        // handle_exit takes the lock itself and re-checks that the record is running.
        match self.backend.task_get(&id).await {
            Ok(t) if t.status == TaskStatus::Stopped => {
                drop(guard);
                self.handle_exit(&id, t.exit_status, t.exited_at).await
            }
            Ok(t) => {
                if t.pid != rec.state.pid {
                    self.store.update(&id, |r| r.state.pid = t.pid)?;
                }
                // After an engine restart: its DNS sockets died with the old engine.
                if let Err(e) = self.dns_start(&rec).await {
                    tracing::warn!(%id, error = %e, "reopening the embedded DNS server failed");
                }
                Ok(())
            }
            Err(e) if e.is_not_found() => {
                tracing::warn!(%id, "highd has no task for a running container; marking it exited");
                self.store.update(&id, |r| {
                    r.state.error = "task not found in highd after restart".into()
                })?;
                drop(guard);
                self.handle_exit(&id, 255, None).await
            }
            Err(e) => Err(e.into()),
        }
    }

    /// A record still `created` may have a task: the engine died between `tasks.Start`
    /// and writing `running`. Adopt it as running (and record its exit if it is over).
    /// Called with the container's lock held (`guard`), the record read under it.
    async fn adopt_started(
        &self,
        id: &str,
        guard: tokio::sync::MutexGuard<'_, ()>,
    ) -> DaemonResult<()> {
        let task = match self.backend.task_get(id).await {
            Ok(t) => {
                tracing::debug!(%id, status = ?t.status, pid = t.pid, "highd has a task for a created container");
                t
            }
            Err(e) if e.is_not_found() => return Ok(()),
            Err(e) => return Err(e.into()),
        };
        match task.status {
            TaskStatus::Running
            | TaskStatus::Paused
            | TaskStatus::Pausing
            | TaskStatus::Stopped => {
                self.store.update(id, |r| {
                    r.state.status = Status::Running;
                    r.state.pid = task.pid;
                    r.state.started_at = Some(Utc::now());
                })?;
                if task.status == TaskStatus::Stopped {
                    drop(guard);
                    self.handle_exit(id, task.exit_status, task.exited_at)
                        .await?;
                }
            }
            // Created but never started, and no start is in flight (we hold the lock a
            // start holds from tasks.Create to tasks.Start): drop it, the next start makes
            // a fresh one.
            TaskStatus::Created | TaskStatus::Unknown => {
                if let Err(e) = self.backend.task_delete(id).await {
                    tracing::warn!(%id, error = %e, "deleting a never-started task failed");
                }
            }
        }
        Ok(())
    }

    /// Removes highd containers and snapshots the engine created but never recorded
    /// (it died between `containers.Create` and writing the record).
    async fn collect_orphans(&self) -> DaemonResult<()> {
        for (id, labels) in self.backend.container_list().await? {
            // A reserved name means a create is still in flight, not an orphan.
            if !labels.contains_key(super::create::ENGINE_LABEL) || self.store.is_reserved(&id) {
                continue;
            }
            tracing::info!(%id, "removing a highd container without an engine record");
            let _ = self.backend.task_delete(&id).await;
            let gone = |r: Result<(), BackendError>| match r {
                Err(e) if !e.is_not_found() => Err(e),
                _ => Ok(()),
            };
            gone(self.backend.container_delete(&id).await)?;
            gone(self.backend.snapshot_remove(&id).await)?;
        }
        Ok(())
    }

    /// Follows highd's `/tasks/exit` events forever, resubscribing (and reconciling, since
    /// events may have been missed) whenever the stream breaks.
    pub async fn run_event_loop(self: Arc<Self>) {
        self.spawn_restart_worker();
        self.spawn_health_watcher();
        let mut backoff = Duration::from_millis(100);
        let mut failures = 0u32;
        loop {
            // Subscribe first, then reconcile: an exit between the two is in the stream.
            let mut stream = match self.backend.subscribe_exits().await {
                Ok(s) => s,
                Err(e) => {
                    // Once is news; repeating it every few seconds while highd is down is not.
                    if failures == 0 {
                        tracing::warn!(error = %e, "subscribing to highd events failed; retrying");
                    } else {
                        tracing::debug!(error = %e, "subscribing to highd events failed again");
                    }
                    failures += 1;
                    tokio::time::sleep(backoff).await;
                    backoff = (backoff * 2).min(Duration::from_secs(5));
                    continue;
                }
            };
            backoff = Duration::from_millis(100);
            tracing::debug!("subscribed to task exits; reconciling");
            if failures > 0 {
                tracing::info!("subscribed to highd events");
                failures = 0;
            }
            if let Err(e) = self.reconcile().await {
                tracing::warn!(error = %e, "reconciling with highd failed");
            }
            self.resume_health_monitors();
            if !self.booted.swap(true, std::sync::atomic::Ordering::SeqCst) {
                self.drop_stale_leases().await;
                self.restart_at_boot().await;
            }
            while let Some(item) = stream.next().await {
                match item {
                    Ok(ev) if ev.exec_id == ev.container_id || ev.exec_id.is_empty() => {
                        tracing::debug!(id = %ev.container_id, status = ev.exit_status, "task exit event");
                        // Exits are handled side by side: deleting a task and removing a
                        // `--rm` container take a while, and one container must not hold
                        // up the next. The per-container lock keeps each one in order.
                        let this = Arc::clone(&self);
                        tokio::spawn(async move {
                            if let Err(e) = this
                                .handle_exit(&ev.container_id, ev.exit_status, ev.exited_at)
                                .await
                            {
                                tracing::warn!(id = %ev.container_id, error = %e, "handling task exit failed");
                            }
                        });
                    }
                    Ok(_) => {}
                    Err(e) => {
                        tracing::warn!(error = %e, "highd event stream failed; resubscribing");
                        break;
                    }
                }
            }
        }
    }
}
