//! A RUN container's `/etc/hostname`, `/etc/hosts` and `/etc/resolv.conf` are bind
//! mounts, so nothing a RUN writes there reaches the image; but when the image has no
//! such file the runtime creates an empty one as the mount point, in the container's
//! upper dir. dockerd keeps those in its init layer, outside the commit; Berth removes
//! them from the upper dir before the step is committed, so the step's layer holds only
//! what the command changed.

use std::path::{Path, PathBuf};

use super::exec::Builder;
use super::BuildError;
use crate::backend::Backend;
use crate::daemon::Stored;

const STUBS: &[&str] = &["hostname", "hosts", "resolv.conf"];

/// Removes the empty mount-point files the lower layers do not have, then `etc` itself
/// if that left it empty.
fn drop_stubs(upper: &Path, lowers: &[PathBuf]) -> std::io::Result<()> {
    let etc = upper.join("etc");
    for name in STUBS {
        let p = etc.join(name);
        let Ok(meta) = std::fs::symlink_metadata(&p) else {
            continue;
        };
        let in_image = lowers.iter().any(|l| l.join("etc").join(name).exists());
        if meta.is_file() && meta.len() == 0 && !in_image {
            std::fs::remove_file(&p)?;
        }
    }
    if std::fs::read_dir(&etc).is_ok_and(|mut d| d.next().is_none()) {
        std::fs::remove_dir(&etc)?;
    }
    Ok(())
}

/// The diff ID of an empty layer tar (1024 zero bytes): what a RUN that changed nothing
/// commits.
const EMPTY_TAR: &str = "sha256:5f70bf18a086007016e948b04aed3b82103a36bea41755b6cddfaf10ace3c6ef";

impl<B: Backend> Builder<'_, B> {
    /// dockerd records a RUN that changed nothing as an `empty_layer` history entry with
    /// no layer; rewrites the committed image `stored` so when its new top layer (above
    /// the parent's `parent_layers`) is empty.
    pub(super) async fn drop_empty_layer(
        &self,
        stored: Stored,
        parent_layers: usize,
    ) -> Result<Stored, BuildError> {
        let view = self.d.view_of(&stored.manifest).await?;
        let diff_ids = &view.config.rootfs.diff_ids;
        if diff_ids.len() != parent_layers + 1
            || diff_ids.last().map(String::as_str) != Some(EMPTY_TAR)
        {
            return Ok(stored);
        }
        let mut config = view.config.clone();
        config.rootfs.diff_ids.pop();
        if let Some(h) = config.history.last_mut() {
            h["empty_layer"] = serde_json::json!(true);
        }
        let mut layers = view.layers.clone();
        layers.pop();
        let rewritten = self.d.write_image(&config, &layers).await?;
        let parent = self.d.image_parent(&stored.id).await;
        self.d.set_image_parent(&rewritten.id, &parent).await;
        Ok(rewritten)
    }

    /// Drops the mount-point stubs from the finished RUN container `id`'s snapshot.
    pub(super) async fn drop_mount_stubs(&self, id: &str) {
        let mounts = match self.d.backend.snapshot_mounts(id).await {
            Ok(m) => m,
            Err(e) => {
                tracing::warn!(%id, error = %e, "cannot read a build container's mounts");
                return;
            }
        };
        let Some((upper, lowers)) = crate::archive::rootfs::layers(&mounts) else {
            return;
        };
        let done = tokio::task::spawn_blocking(move || drop_stubs(&upper, &lowers)).await;
        if let Ok(Err(e)) = done {
            tracing::warn!(%id, error = %e, "cannot remove mount-point stubs before commit");
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn only_empty_stubs_missing_from_the_image_go() {
        let d = tempfile::tempdir().unwrap();
        let (upper, lower) = (d.path().join("u"), d.path().join("l"));
        std::fs::create_dir_all(upper.join("etc")).unwrap();
        std::fs::create_dir_all(lower.join("etc")).unwrap();
        for f in STUBS {
            std::fs::write(upper.join("etc").join(f), "").unwrap();
        }
        std::fs::write(lower.join("etc/hosts"), "127.0.0.1 x\n").unwrap();
        drop_stubs(&upper, std::slice::from_ref(&lower)).unwrap();
        assert!(upper.join("etc/hosts").exists());
        assert!(!upper.join("etc/hostname").exists());
        std::fs::remove_file(upper.join("etc/hosts")).unwrap();
        std::fs::write(upper.join("etc/resolv.conf"), "").unwrap();
        std::fs::write(upper.join("etc/passwd"), "root").unwrap();
        drop_stubs(&upper, &[lower]).unwrap();
        assert!(upper.join("etc/passwd").exists() && !upper.join("etc/resolv.conf").exists());
        std::fs::remove_file(upper.join("etc/passwd")).unwrap();
        drop_stubs(&upper, &[]).unwrap();
        assert!(!upper.join("etc").exists());
    }
}
