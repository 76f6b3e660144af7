//! Volumes and mounts of containers: the mount points made at create (volumes created on
//! demand, bind sources checked or created, image content copied into new volumes) and
//! released at remove (`rm -v` and `--rm` remove anonymous volumes), plus the volume API
//! operations that need the container records.

use std::collections::BTreeMap;
use std::path::Path;

use serde_json::Value;

use super::images::ImageView;
use super::{Daemon, DaemonError, DaemonResult};
use crate::archive::{copy, rootfs::RootfsView, scope};
use crate::backend::{Backend, Mount};
use crate::record::ContainerRecord;
use crate::types::{ContainerConfig, HostConfig};
use crate::volumes::{
    parse, CreateOptions, MountError, MountKind, MountPoint, VolumeError, ANONYMOUS_LABEL,
};

/// The mounts of a container being created, and the volumes created for it (removed
/// again if the create fails).
pub struct PreparedMounts {
    pub points: Vec<MountPoint>,
    created: Vec<String>,
    /// Volumes new (or empty) now, to receive the image's content.
    fresh: Vec<String>,
}

impl<B: Backend> Daemon<B> {
    /// Registers the references of existing records (at start-up).
    pub(super) fn restore_volume_refs(&self) {
        for rec in self.store.list() {
            for mp in rec
                .mount_points
                .iter()
                .filter(|m| m.kind == MountKind::Volume)
            {
                if let Err(e) = self.volumes.add_ref(&mp.name, &rec.id) {
                    tracing::warn!(id = %rec.id, volume = %mp.name, error = %e, "volume of a container is unusable");
                }
            }
        }
    }

    /// Parses the request's mounts and makes them usable: volumes created (anonymous ones
    /// named and labelled) and referenced by `id`, bind sources checked.
    pub(super) fn prepare_mounts(
        &self,
        id: &str,
        config: &ContainerConfig,
        host: &HostConfig,
        image: &ImageView,
    ) -> DaemonResult<PreparedMounts> {
        let image_volumes = parse::volume_keys(image.runtime_config().extra.get("Volumes"));
        let config_volumes = parse::volume_keys(config.extra.get("Volumes"));
        let mounts: Vec<Value> = match host.extra.get("Mounts") {
            None | Some(Value::Null) => Vec::new(),
            Some(Value::Array(a)) => a.clone(),
            Some(other) => {
                return Err(MountError::Decode {
                    detail: format!("Mounts must be an array, got {other}"),
                }
                .into())
            }
        };
        let tmpfs: BTreeMap<String, String> = match host.extra.get("Tmpfs") {
            None | Some(Value::Null) => BTreeMap::new(),
            Some(v) => serde_json::from_value(v.clone()).map_err(|e| MountError::Decode {
                detail: format!("Tmpfs: {e}"),
            })?,
        };
        let points = parse::container_mounts(
            &image_volumes,
            &config_volumes,
            host.binds.as_deref().unwrap_or(&[]),
            &mounts,
            &tmpfs,
        )?;
        let mut prepared = PreparedMounts {
            points,
            created: Vec::new(),
            fresh: Vec::new(),
        };
        if let Err(e) = self.make_mounts_usable(id, &mut prepared) {
            self.undo_mounts(id, &prepared);
            return Err(e);
        }
        Ok(prepared)
    }

    fn make_mounts_usable(&self, id: &str, p: &mut PreparedMounts) -> DaemonResult<()> {
        for mp in &mut p.points {
            match mp.kind {
                MountKind::Bind => check_bind_source(mp)?,
                MountKind::Volume => {
                    let mut labels = mp.volume_labels.clone();
                    if mp.anonymous {
                        mp.name = crate::volumes::random_name();
                        labels.insert(ANONYMOUS_LABEL.into(), String::new());
                    }
                    let (v, created) = self.volumes.create(CreateOptions {
                        name: mp.name.clone(),
                        driver: String::new(),
                        driver_opts: Some(mp.volume_options.clone()),
                        labels: (!labels.is_empty()).then_some(labels),
                    })?;
                    if created {
                        p.created.push(v.name.clone());
                    }
                    self.volumes.add_ref(&v.name, id)?;
                    mp.source = self.volumes.data_path(&v.name).to_string_lossy().into();
                    let empty = std::fs::read_dir(&mp.source)
                        .map(|mut d| d.next().is_none())
                        .unwrap_or(false);
                    if mp.copy_data && empty {
                        p.fresh.push(v.name);
                    }
                }
                MountKind::Tmpfs => {}
            }
        }
        Ok(())
    }

    /// Undoes [`prepare_mounts`] after a failed create.
    pub(super) fn undo_mounts(&self, id: &str, p: &PreparedMounts) {
        for mp in p.points.iter().filter(|m| m.kind == MountKind::Volume) {
            self.volumes.remove_ref(&mp.name, id);
        }
        for name in &p.created {
            if let Err(e) = self.volumes.remove(name, true) {
                tracing::warn!(volume = %name, error = %e, "removing a volume of a failed create failed");
            }
        }
    }

    /// dockerd's copy-up: a new, empty volume mounted where the image has content gets
    /// that content (and the directory's owner and mode).
    pub(super) fn copy_up(&self, p: &PreparedMounts, snapshot: &[Mount]) -> DaemonResult<()> {
        let wanted: Vec<&MountPoint> = p
            .points
            .iter()
            .filter(|m| m.kind == MountKind::Volume && p.fresh.contains(&m.name))
            .collect();
        if wanted.is_empty() {
            return Ok(());
        }
        let view = RootfsView::mount(&self.archive_dir(), snapshot, &[], false)?;
        for mp in wanted {
            let src = scope::resolve(view.path(), &mp.destination, true).map_err(|source| {
                DaemonError::Io {
                    op: "resolve",
                    path: mp.destination.clone().into(),
                    source,
                }
            })?;
            if src.is_dir() {
                copy::copy_dir_contents(&src, Path::new(&mp.source))?;
            }
        }
        Ok(())
    }

    /// Where rootfs views are mounted: private to this engine's exec root.
    pub(crate) fn archive_dir(&self) -> std::path::PathBuf {
        self.config.exec_root.join("rootfs-views")
    }

    /// Drops a removed container's volume references; with `remove_anonymous` (`rm -v`,
    /// `--rm`) its anonymous volumes go too, unless another container uses them.
    pub(super) fn release_mounts(&self, rec: &ContainerRecord, remove_anonymous: bool) {
        for mp in rec
            .mount_points
            .iter()
            .filter(|m| m.kind == MountKind::Volume)
        {
            self.volumes.remove_ref(&mp.name, &rec.id);
            if remove_anonymous && mp.anonymous {
                match self.volumes.remove(&mp.name, true) {
                    Ok(()) => {}
                    Err(VolumeError::InUse { .. }) => {}
                    Err(e) => {
                        tracing::warn!(volume = %mp.name, error = %e, "removing an anonymous volume failed")
                    }
                }
            }
        }
    }
}

/// `-v` creates a missing bind source (as a directory, like dockerd); `--mount` refuses it.
fn check_bind_source(mp: &MountPoint) -> DaemonResult<()> {
    let src = Path::new(&mp.source);
    if src.exists() {
        return Ok(());
    }
    if !mp.create_source {
        return Err(MountError::Config {
            kind: "bind".into(),
            detail: format!("bind source path does not exist: {}", mp.source),
        }
        .into());
    }
    std::fs::create_dir_all(src).map_err(|source| DaemonError::Io {
        op: "create",
        path: src.to_path_buf(),
        source,
    })
}
