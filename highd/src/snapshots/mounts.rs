//! The mounts a snapshot is used through, exactly as containerd's snapshotters return them,
//! and the overlayfs probe that picks the snapshotter flavour at start.

use std::path::Path;

use nix::mount::{mount, umount2, MntFlags, MsFlags};

use super::{Kind, Mode};
use crate::db::StoreError;

/// containerd's `types.Mount`.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Mount {
    pub kind: String,
    pub source: String,
    pub target: String,
    pub options: Vec<String>,
}

/// `fs` dir of snapshot `id` under the snapshotter root.
pub(crate) fn fs_dir(root: &Path, id: u64) -> std::path::PathBuf {
    root.join(id.to_string()).join("fs")
}

fn bind(root: &Path, id: u64, ro: bool) -> Vec<Mount> {
    vec![Mount {
        kind: "bind".into(),
        source: fs_dir(root, id).display().to_string(),
        target: String::new(),
        options: vec![if ro { "ro" } else { "rw" }.into(), "rbind".into()],
    }]
}

/// Mounts of a snapshot with id `id` whose parents (nearest first) have ids `parents`.
pub(crate) fn mounts_for(
    root: &Path,
    mode: &Mode,
    kind: Kind,
    id: u64,
    parents: &[u64],
) -> Vec<Mount> {
    let ro = kind == Kind::View;
    let index_off = match mode {
        // The copying snapshotter holds a full copy of its parents in its own fs.
        Mode::Copy => return bind(root, id, ro),
        Mode::Overlay { index_off } => *index_off,
    };
    // Overlay needs at least one lower dir: a snapshot without parents is its own fs.
    if parents.is_empty() {
        return bind(root, id, ro);
    }
    let mut options: Vec<String> = Vec::new();
    if index_off {
        options.push("index=off".into());
    }
    if kind == Kind::Active {
        options.push(format!(
            "workdir={}",
            root.join(id.to_string()).join("work").display()
        ));
        options.push(format!("upperdir={}", fs_dir(root, id).display()));
    } else if let [only] = parents {
        // A read-only view of a single layer is that layer.
        return bind(root, *only, true);
    }
    let lower: Vec<String> = parents
        .iter()
        .map(|p| fs_dir(root, *p).display().to_string())
        .collect();
    options.push(format!("lowerdir={}", lower.join(":")));
    vec![Mount {
        kind: "overlay".into(),
        source: "overlay".into(),
        target: String::new(),
        options,
    }]
}

/// Whether this kernel supports the overlay `index` option (containerd passes `index=off`
/// then, so snapshots can be moved and copied).
fn supports_index() -> bool {
    Path::new("/sys/module/overlay/parameters/index").exists()
}

/// Tries a real overlay mount in a scratch dir under `root` (the filesystem the snapshots
/// live on matters: overlay cannot use e.g. another overlay as upper).
pub(crate) fn probe(root: &Path) -> Mode {
    let dir = root.join(format!("probe-{}", std::process::id()));
    let result = try_overlay(&dir);
    if let Err(e) = std::fs::remove_dir_all(&dir) {
        tracing::warn!(dir = %dir.display(), error = %e, "cannot remove overlay probe dir");
    }
    match result {
        Ok(()) => Mode::Overlay {
            index_off: supports_index(),
        },
        Err(e) => {
            tracing::warn!(error = %e, "overlayfs not usable here, using the copying snapshotter");
            Mode::Copy
        }
    }
}

fn try_overlay(dir: &Path) -> Result<(), StoreError> {
    for d in ["lower", "upper", "work", "merged"] {
        let p = dir.join(d);
        std::fs::create_dir_all(&p).map_err(StoreError::io("create directory", &p))?;
    }
    let merged = dir.join("merged");
    let data = format!(
        "lowerdir={},upperdir={},workdir={}",
        dir.join("lower").display(),
        dir.join("upper").display(),
        dir.join("work").display()
    );
    mount(
        Some("overlay"),
        &merged,
        Some("overlay"),
        MsFlags::empty(),
        Some(data.as_str()),
    )
    .map_err(StoreError::sys("mount overlay on", &merged))?;
    umount2(&merged, MntFlags::MNT_DETACH).map_err(StoreError::sys("unmount", &merged))
}
