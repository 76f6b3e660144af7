//! `docker pause`/`unpause` (highd's task Pause/Resume: the cgroup freezer) and
//! `docker rename`.

use super::{Daemon, DaemonError, DaemonResult, InvalidParameter};
use crate::backend::Backend;
use crate::names;

impl<B: Backend> Daemon<B> {
    pub async fn pause_container(&self, reference: &str) -> DaemonResult<()> {
        let id = self.container(reference)?.id;
        let lock = self.lock_for(&id);
        let _guard = lock.lock().await;
        let rec = self.container(&id)?;
        if rec.state.restarting {
            return Err(DaemonError::Restarting { id });
        }
        if !rec.state.status.is_running() {
            return Err(DaemonError::NotRunning { id });
        }
        if rec.state.paused {
            return Err(DaemonError::AlreadyPaused { id });
        }
        self.backend.task_pause(&id, true).await?;
        self.store.update(&id, |r| r.state.paused = true)?;
        self.event_log.container("pause", &id, &[]);
        Ok(())
    }

    pub async fn unpause_container(&self, reference: &str) -> DaemonResult<()> {
        let id = self.container(reference)?.id;
        let lock = self.lock_for(&id);
        let _guard = lock.lock().await;
        let rec = self.container(&id)?;
        if !rec.state.status.is_running() || !rec.state.paused {
            return Err(DaemonError::NotPaused { id });
        }
        self.backend.task_pause(&id, false).await?;
        self.store.update(&id, |r| r.state.paused = false)?;
        self.event_log.container("unpause", &id, &[]);
        Ok(())
    }

    /// A signal to a frozen container only takes effect once it is thawed: after a stop or
    /// kill, dockerd unpauses it.
    pub(super) async fn thaw_after_signal(&self, id: &str) -> DaemonResult<()> {
        if !self.store.get(id).is_some_and(|r| r.state.paused) {
            return Ok(());
        }
        match self.backend.task_pause(id, false).await {
            Ok(()) => {}
            Err(e) if e.is_not_found() => {}
            Err(e) => return Err(e.into()),
        }
        self.store.update(id, |r| r.state.paused = false)?;
        self.event_log.container("unpause", id, &[]);
        Ok(())
    }

    /// `POST /containers/{id}/rename?name=`.
    pub async fn rename_container(&self, reference: &str, new_name: &str) -> DaemonResult<()> {
        let new_name = new_name.trim_start_matches('/');
        if reference.is_empty() || new_name.is_empty() {
            return Err(InvalidParameter::EmptyName.into());
        }
        let rec = self.container(reference)?;
        let lock = self.lock_for(&rec.id);
        let _guard = lock.lock().await;
        let rec = self.container(&rec.id)?;
        let old = rec.name.trim_start_matches('/').to_string();
        if !names::is_valid(new_name) {
            return Err(DaemonError::InvalidName {
                name: new_name.into(),
            });
        }
        if old == new_name {
            return Err(InvalidParameter::SameName.into());
        }
        self.store
            .reserve_name(new_name, &rec.id)
            .map_err(|holder| DaemonError::NameConflict {
                name: new_name.into(),
                id: holder,
            })?;
        if let Err(e) = self
            .store
            .update(&rec.id, |r| r.name = format!("/{new_name}"))
        {
            self.store.release_name(new_name, &rec.id);
            return Err(e.into());
        }
        self.store.release_name(&old, &rec.id);
        self.event_log
            .register_container(&rec.id, new_name, &rec.config.image, &rec.config.labels);
        self.event_log
            .container("rename", &rec.id, &[("oldName", format!("/{old}"))]);
        tracing::info!(id = %rec.id, %old, new = %new_name, "container renamed");
        Ok(())
    }
}
