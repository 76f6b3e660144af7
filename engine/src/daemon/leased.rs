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

impl<B: Backend> Daemon<B> {
    /// Runs `work` under a new lease named after `op`; the lease is deleted when `work`
    /// ends, whether it succeeded or not.
    pub async fn leased<T, E, F>(&self, op: &str, work: F) -> Result<T, E>
    where
        F: Future<Output = Result<T, E>>,
        E: From<BackendError>,
    {
        let id = format!(
            "berth-engine-{op}-{}",
            hex::encode(rand::random::<[u8; 8]>())
        );
        let expire =
            (chrono::Utc::now() + EXPIRE_AFTER).to_rfc3339_opts(chrono::SecondsFormat::Secs, true);
        self.backend
            .lease_create(&id, HashMap::from([(EXPIRE_LABEL.to_string(), expire)]))
            .await?;
        let out = lease::scoped(id.clone(), work).await;
        if let Err(e) = self.backend.lease_delete(&id).await {
            // It expires on its own; the work's own result matters more.
            tracing::warn!(lease = %id, error = %e, "cannot delete lease");
        }
        out
    }
}
