//! A container's filesystem as the engine reaches it for `cp`, `export`, `diff` and the
//! copy-up of new volumes: highd's snapshot mounts mounted in a private temp dir under
//! the exec root (with the container's volumes and binds on top), unmounted and removed
//! when the view is dropped, on every path.

use std::path::{Path, PathBuf};

use super::{scope, ArchiveError};
use crate::backend::Mount;
use crate::volumes::{sys, MountKind, MountPoint};

pub struct RootfsView {
    dir: PathBuf,
}

impl RootfsView {
    /// Mounts `mounts` (a snapshot's) at a new dir under `base`. Read-only views of an
    /// overlay use its upper dir as the top lower dir, so no work dir is shared with a
    /// running container. `extra` mounts (volumes, binds) are bound at their
    /// destinations, resolved inside the view; missing destinations are skipped.
    pub fn mount(
        base: &Path,
        mounts: &[Mount],
        extra: &[MountPoint],
        writable: bool,
    ) -> Result<Self, ArchiveError> {
        let dir = base.join(format!("view-{}", hex::encode(rand::random::<[u8; 8]>())));
        std::fs::create_dir_all(&dir).map_err(|source| ArchiveError::Io {
            op: "create",
            path: dir.clone(),
            source,
        })?;
        let view = Self { dir };
        let [m] = mounts else {
            return Err(ArchiveError::Mount {
                message: format!("expected one snapshot mount, got {}", mounts.len()),
            });
        };
        let (options, ro) = if m.kind == "overlay" && !writable {
            (read_only_overlay(&m.options), true)
        } else {
            (m.options.clone(), !writable)
        };
        sys::mount(&m.kind, &m.source, &view.dir, &options, ro)
            .map_err(|message| ArchiveError::Mount { message })?;
        for mp in extra.iter().filter(|mp| mp.kind != MountKind::Tmpfs) {
            let Ok(dst) = scope::resolve(&view.dir, &mp.destination, true) else {
                continue;
            };
            if !dst.is_dir() && !dst.is_file() {
                continue;
            }
            sys::mount(
                "none",
                &mp.source,
                &dst,
                &["rbind".into()],
                !writable || !mp.rw,
            )
            .map_err(|message| ArchiveError::Mount { message })?;
        }
        Ok(view)
    }

    pub fn path(&self) -> &Path {
        &self.dir
    }
}

/// `upperdir=U,lowerdir=L1:L2,workdir=W` → `lowerdir=U:L1:L2`.
fn read_only_overlay(options: &[String]) -> Vec<String> {
    let mut upper = None;
    let mut lower = None;
    let mut rest = Vec::new();
    for o in options {
        if let Some(u) = o.strip_prefix("upperdir=") {
            upper = Some(u.to_string());
        } else if let Some(l) = o.strip_prefix("lowerdir=") {
            lower = Some(l.to_string());
        } else if o.starts_with("workdir=") || o == "rw" {
        } else {
            rest.push(o.clone());
        }
    }
    let lowers: Vec<String> = upper.into_iter().chain(lower).collect();
    rest.push(format!("lowerdir={}", lowers.join(":")));
    rest
}

impl Drop for RootfsView {
    fn drop(&mut self) {
        for m in sys::mounts_under(&self.dir) {
            if let Err(e) = sys::unmount(&m) {
                tracing::warn!(error = %e, "unmounting a rootfs view failed");
            }
        }
        if let Err(e) = std::fs::remove_dir(&self.dir) {
            tracing::warn!(path = %self.dir.display(), error = %e, "removing a rootfs view dir failed");
        }
    }
}

/// The upper (writable) dir and the lower dirs of a snapshot's overlay mount; a bind
/// mount (a snapshot without parent) has only an upper dir.
pub fn layers(mounts: &[Mount]) -> Option<(PathBuf, Vec<PathBuf>)> {
    let m = mounts.first()?;
    if m.kind != "overlay" {
        return Some((PathBuf::from(&m.source), Vec::new()));
    }
    let get = |k: &str| {
        m.options
            .iter()
            .find_map(|o| o.strip_prefix(k).map(str::to_string))
    };
    let upper = get("upperdir=")?;
    let lowers = get("lowerdir=")
        .map(|l| l.split(':').map(PathBuf::from).collect())
        .unwrap_or_default();
    Some((PathBuf::from(upper), lowers))
}
