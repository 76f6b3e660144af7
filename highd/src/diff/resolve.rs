//! Resolving layer paths inside the target root, never escaping it.
//!
//! Paths are resolved like the kernel would inside a chroot at the target root: absolute
//! symlinks restart at the root and `..` stops at the root. With overlayfs the target is the
//! upper dir of a snapshot whose lower dirs hold the parents, so a lookup sees the merged view
//! (upper first, then each lower; a whiteout hides what is below) and directories that exist
//! only below are "copied up" (created in the upper dir with the same owner, mode and times),
//! exactly as writing through the mounted overlay would.

use std::os::unix::fs::{FileTypeExt, MetadataExt};
use std::path::{Component, Path, PathBuf};

use crate::db::StoreError;
use crate::snapshots::{chmod, lchown, set_times};

/// Symlink hops allowed while resolving one path (Linux's MAXSYMLINKS is 40).
const MAX_LINKS: usize = 40;

/// Where a layer is applied.
#[derive(Debug, Clone)]
pub(crate) struct Layers {
    /// The writable directory (bind source or overlay upper dir).
    pub upper: PathBuf,
    /// Overlay lower dirs, nearest first (empty for a bind mount).
    pub lowers: Vec<PathBuf>,
    /// Whether whiteouts become overlay whiteouts (else deletions).
    pub overlay: bool,
}

/// Is this an overlay whiteout (a 0:0 character device)?
pub(crate) fn is_whiteout(md: &std::fs::Metadata) -> bool {
    md.file_type().is_char_device() && md.rdev() == 0
}

/// Marks an upper directory as hiding everything below it.
pub(crate) fn set_opaque(dir: &Path) -> Result<(), StoreError> {
    xattr::set(dir, "trusted.overlay.opaque", b"y")
        .map_err(StoreError::io("set opaque xattr on", dir))
}

/// Splits an archive path into normal components, rejecting `..` and absolute paths.
pub(crate) fn clean(entry: &Path) -> Result<Vec<String>, StoreError> {
    let shown = || entry.display().to_string();
    let mut out = Vec::new();
    for c in entry.components() {
        match c {
            Component::Normal(n) => out.push(
                n.to_str()
                    .ok_or_else(|| StoreError::UnsafeEntry {
                        entry: shown(),
                        reason: "path is not valid UTF-8",
                    })?
                    .to_string(),
            ),
            Component::CurDir => {}
            Component::ParentDir => {
                return Err(StoreError::UnsafeEntry {
                    entry: shown(),
                    reason: "path contains '..'",
                })
            }
            Component::RootDir | Component::Prefix(_) => {
                return Err(StoreError::UnsafeEntry {
                    entry: shown(),
                    reason: "path is absolute",
                })
            }
        }
    }
    Ok(out)
}

impl Layers {
    /// The topmost existing entry for `rel` in the merged view.
    pub(crate) fn lookup(&self, rel: &Path) -> Option<(PathBuf, std::fs::Metadata)> {
        for dir in std::iter::once(&self.upper).chain(self.lowers.iter()) {
            let p = dir.join(rel);
            if let Ok(md) = std::fs::symlink_metadata(&p) {
                if self.overlay && is_whiteout(&md) {
                    return None;
                }
                return Some((p, md));
            }
        }
        None
    }

    /// Resolves directory components `parts` to a real directory relative to the root,
    /// following symlinks within the root. With `create`, missing directories are created
    /// (0755, or copied up from a lower layer) in the upper dir; without, None is returned
    /// if a component is missing.
    pub(crate) fn resolve_dir(
        &self,
        entry: &str,
        parts: &[String],
        create: bool,
    ) -> Result<Option<PathBuf>, StoreError> {
        let unsafe_entry = |reason| StoreError::UnsafeEntry {
            entry: entry.to_string(),
            reason,
        };
        let mut todo: Vec<String> = parts.iter().rev().cloned().collect();
        let mut cur = PathBuf::new();
        let mut hops = 0;
        while let Some(name) = todo.pop() {
            if name == "." || name.is_empty() {
                continue;
            }
            if name == ".." {
                cur.pop();
                continue;
            }
            let next = cur.join(&name);
            match self.lookup(&next) {
                Some((p, md)) if md.file_type().is_symlink() => {
                    hops += 1;
                    if hops > MAX_LINKS {
                        return Err(unsafe_entry("too many levels of symbolic links"));
                    }
                    let target = std::fs::read_link(&p).map_err(StoreError::io("read link", &p))?;
                    if target.is_absolute() {
                        cur = PathBuf::new();
                    }
                    for c in target.components().rev() {
                        match c {
                            Component::Normal(n) => todo.push(n.to_string_lossy().into_owned()),
                            Component::ParentDir => todo.push("..".into()),
                            _ => {}
                        }
                    }
                }
                Some((p, md)) if md.is_dir() => {
                    if create && p != self.upper.join(&next) {
                        self.copy_up_dir(&next, &md)?;
                    }
                    cur = next;
                }
                Some(_) => return Err(unsafe_entry("a parent path is not a directory")),
                None if create => {
                    let p = self.upper.join(&next);
                    // Whatever hid the path (an overlay whiteout) gives way to the new dir,
                    // which must not show what the whiteout hid.
                    let hid = std::fs::symlink_metadata(&p).is_ok();
                    if hid {
                        std::fs::remove_file(&p).map_err(StoreError::io("remove", &p))?;
                    }
                    std::fs::create_dir(&p).map_err(StoreError::io("create directory", &p))?;
                    chmod(&p, 0o755)?;
                    if hid && self.overlay {
                        set_opaque(&p)?;
                    }
                    cur = next;
                }
                None => return Ok(None),
            }
        }
        Ok(Some(cur))
    }

    fn copy_up_dir(&self, rel: &Path, md: &std::fs::Metadata) -> Result<(), StoreError> {
        let p = self.upper.join(rel);
        if std::fs::symlink_metadata(&p).is_ok() {
            return Ok(());
        }
        std::fs::create_dir(&p).map_err(StoreError::io("create directory", &p))?;
        lchown(&p, md.uid(), md.gid())?;
        chmod(&p, md.mode())?;
        set_times(
            &p,
            (md.atime(), md.atime_nsec()),
            (md.mtime(), md.mtime_nsec()),
        )
    }
}
