//! Running image work (pull, load, import, build) under a highd lease, so the garbage
//! collector never takes content or snapshots that no image references yet.

use std::collections::HashMap;
use std::future::Future;

use super::Daemon;
use crate::backend::{lease, Backend, BackendError};

/// Label after which highd's GC drops a lease left behind (an engine killed mid-pull);
/// containerd's clients give their pull leases the same day.
const EXPIRE_LABEL: &str = "containerd.io/gc.expire";
const EXPIRE_AFTER: chrono::Duration = chrono::Duration::hours(24);
/// Label naming the engine process that took a lease, so the next one can tell the
/// leases a killed engine left behind from those of its own operations.
const BOOT_LABEL: &str = "berth.engine.boot";
const PREFIX: &str = "berth-engine-";

/// This engine process's boot id.
fn boot_id() -> &'static str {
    static ID: std::sync::OnceLock<String> = std::sync::OnceLock::new();
    ID.get_or_init(|| hex::encode(rand::random::<[u8; 8]>()))
}

impl<B: Backend> Daemon<B> {
    /// Runs `work` under a new lease named after `op`; the lease is deleted when `work`
    /// ends, whether it succeeded or not.
    pub async fn leased<T, E, F>(&self, op: &str, work: F) -> Result<T, E>
    where
        F: Future<Output = Result<T, E>>,
        E: From<BackendError>,
    {
        let id = format!("{PREFIX}{op}-{}", hex::encode(rand::random::<[u8; 8]>()));
        let expire =
            (chrono::Utc::now() + EXPIRE_AFTER).to_rfc3339_opts(chrono::SecondsFormat::Secs, true);
        let labels = HashMap::from([
            (EXPIRE_LABEL.to_string(), expire),
            (BOOT_LABEL.to_string(), boot_id().to_string()),
        ]);
        self.backend.lease_create(&id, labels).await?;
        let out = lease::scoped(id.clone(), work).await;
        if let Err(e) = self.backend.lease_delete(&id).await {
            // It expires on its own; the work's own result matters more.
            tracing::warn!(lease = %id, error = %e, "cannot delete lease");
        }
        out
    }

    /// Deletes the leases earlier engine processes took and never deleted (killed
    /// mid-pull), so GC can reclaim what those operations left half-made.
    pub async fn drop_stale_leases(&self) {
        let leases = match self.backend.lease_list().await {
            Ok(l) => l,
            Err(e) => {
                tracing::warn!(error = %e, "cannot list leases");
                return;
            }
        };
        for (id, labels) in leases {
            let ours = id.starts_with(PREFIX);
            if ours && labels.get(BOOT_LABEL).map(String::as_str) != Some(boot_id()) {
                match self.backend.lease_delete(&id).await {
                    Ok(()) => {
                        tracing::info!(lease = %id, "deleted a lease left by an earlier engine")
                    }
                    Err(e) => tracing::warn!(lease = %id, error = %e, "cannot delete stale lease"),
                }
            }
        }
    }
}
