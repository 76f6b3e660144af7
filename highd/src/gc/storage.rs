//! All of highd's storage in one bundle, for the server to wire up.

use std::path::Path;
use std::sync::Arc;

use super::Gc;
use crate::content::{ContentService, ContentStore};
use crate::db::{Db, Publisher, StoreError};
use crate::diff::{Applier, DiffService};
use crate::images::ImagesService;
use crate::leases::LeasesService;
use crate::namespaces::NamespacesService;
use crate::snapshots::{SnapshotsService, Snapshotter};

/// All of highd's storage, opened once at start: the stores, the collector spanning them,
/// and constructors for their gRPC services.
#[derive(Debug, Clone)]
pub struct Storage {
    pub db: Db,
    pub content: ContentStore,
    pub snapshots: Snapshotter,
    pub gc: Arc<Gc>,
    pub events: Publisher,
}

impl Storage {
    /// Opens content and snapshots under `root` (probing overlayfs and removing leftovers of
    /// interrupted operations). `mode` None probes; tests force a mode.
    pub fn open(
        root: &Path,
        db: Db,
        mode: Option<crate::snapshots::Mode>,
    ) -> Result<Storage, StoreError> {
        let content = ContentStore::open(root, db.clone())?;
        let snapshots = Snapshotter::open(root, db.clone(), mode)?;
        let gc = Arc::new(Gc::new(db.clone(), content.clone(), snapshots.clone()));
        Ok(Storage {
            db,
            content,
            snapshots,
            gc,
            events: Publisher::default(),
        })
    }

    /// Replaces the collector by one with another grace period (tests use zero). Call before
    /// building services or installing the containers hook.
    pub fn with_gc_grace(mut self, grace: std::time::Duration) -> Storage {
        let gc = Gc::new(
            self.db.clone(),
            self.content.clone(),
            self.snapshots.clone(),
        );
        self.gc = Arc::new(gc.with_grace(grace));
        self
    }

    /// Publishes the storage services' events on `exchange`.
    pub fn with_events(mut self, exchange: crate::events::Exchange) -> Storage {
        self.events = Publisher::new(exchange);
        self
    }

    pub fn namespaces_service(&self) -> NamespacesService {
        NamespacesService::new(self.db.clone(), self.events.clone())
    }

    pub fn content_service(&self) -> ContentService {
        ContentService::new(self.content.clone(), self.gc.clone(), self.events.clone())
    }

    pub fn images_service(&self) -> ImagesService {
        ImagesService::new(self.db.clone(), self.gc.clone(), self.events.clone())
    }

    pub fn snapshots_service(&self) -> SnapshotsService {
        SnapshotsService::new(self.snapshots.clone(), self.gc.clone(), self.events.clone())
    }

    pub fn diff_service(&self) -> DiffService {
        DiffService::new(Applier::new(self.content.clone()))
    }

    pub fn leases_service(&self) -> LeasesService {
        LeasesService::new(self.db.clone(), self.gc.clone())
    }
}
