//! Unpacking one layer tar into a [`Layers`] target.

use std::collections::HashSet;
use std::io::Read;
use std::path::{Path, PathBuf};

use nix::sys::stat::SFlag;

use super::resolve::{clean, is_whiteout, set_opaque, Layers};
use crate::db::StoreError;
use crate::snapshots::{chmod, lchown, make_node, set_times};

const WHITEOUT_PREFIX: &str = ".wh.";
const OPAQUE: &str = ".wh..wh..opq";

/// Applies the tar stream `reader` to `layers`. Directory mtimes are set last, since creating
/// their children changes them.
pub(crate) fn apply_tar(layers: &Layers, reader: impl Read) -> Result<(), StoreError> {
    let mut archive = tar::Archive::new(reader);
    let mut written: HashSet<PathBuf> = HashSet::new();
    let mut dir_times: Vec<(PathBuf, i64)> = Vec::new();
    let tar_err = |source| StoreError::Layer {
        digest: String::new(),
        source,
    };
    for entry in archive.entries().map_err(tar_err)? {
        let mut entry = entry.map_err(tar_err)?;
        let raw = entry.path().map_err(tar_err)?.into_owned();
        let shown = raw.display().to_string();
        let mut parts = clean(&raw)?;
        let Some(name) = parts.pop() else {
            // The root itself ("./"): its metadata belongs to the snapshot, not the layer.
            continue;
        };
        if name == OPAQUE {
            opaque(layers, &shown, &parts, &written)?;
            continue;
        }
        if let Some(hidden) = name.strip_prefix(WHITEOUT_PREFIX) {
            // Other ".wh..wh.*" names are aufs bookkeeping with no meaning here.
            if !hidden.starts_with(".wh.") {
                whiteout(layers, &shown, &parts, hidden)?;
            }
            continue;
        }
        let dir = layers
            .resolve_dir(&shown, &parts, true)?
            .unwrap_or_default();
        let rel = dir.join(&name);
        let path = layers.upper.join(&rel);
        let header = entry.header().clone();
        let kind = header.entry_type();
        let existing = std::fs::symlink_metadata(&path).ok();
        // A directory re-created where this layer put a whiteout hides the old contents.
        let over_whiteout = layers.overlay && existing.as_ref().is_some_and(is_whiteout);
        if let Some(md) = existing {
            // A directory over a directory merges; anything else replaces what was there.
            if !(kind.is_dir() && md.is_dir()) {
                remove_any(&path, &md)?;
            }
        }
        // Like Go's archive/tar (containerd), empty numeric fields read as zero.
        let mode = header.mode().unwrap_or(0o644);
        let (uid, gid) = (header.uid().unwrap_or(0), header.gid().unwrap_or(0));
        let mtime = i64::try_from(header.mtime().unwrap_or(0)).unwrap_or(0);
        let as_u32 = |v: u64| u32::try_from(v).unwrap_or(u32::MAX);
        if kind.is_file() || kind == tar::EntryType::Continuous || kind.is_gnu_sparse() {
            let mut f =
                std::fs::File::create_new(&path).map_err(StoreError::io("create", &path))?;
            std::io::copy(&mut entry, &mut f).map_err(StoreError::io("write", &path))?;
        } else if kind.is_dir() {
            if !path.is_dir() {
                std::fs::create_dir(&path).map_err(StoreError::io("create directory", &path))?;
            }
            if over_whiteout {
                set_opaque(&path)?;
            }
        } else if kind.is_symlink() {
            let target =
                entry
                    .link_name()
                    .map_err(tar_err)?
                    .ok_or_else(|| StoreError::UnsafeEntry {
                        entry: shown.clone(),
                        reason: "symlink without a target",
                    })?;
            // The target is stored as is: it is only ever followed inside the container's
            // root (or by resolve_dir, which keeps it inside the target root).
            std::os::unix::fs::symlink(&*target, &path)
                .map_err(StoreError::io("symlink", &path))?;
        } else if kind.is_hard_link() {
            hard_link(layers, &entry, &shown, &path)?;
            written.insert(rel);
            continue;
        } else if kind.is_character_special() || kind.is_block_special() || kind.is_fifo() {
            let flag = if kind.is_character_special() {
                SFlag::S_IFCHR
            } else if kind.is_block_special() {
                SFlag::S_IFBLK
            } else {
                SFlag::S_IFIFO
            };
            // Writers leave the device fields of fifos empty: not a number, just zero.
            let major = header.device_major().ok().flatten().unwrap_or(0);
            let minor = header.device_minor().ok().flatten().unwrap_or(0);
            let dev = nix::sys::stat::makedev(major.into(), minor.into());
            make_node(&path, flag, mode, dev)?;
        } else {
            tracing::debug!(entry = %shown, ?kind, "skipping unsupported tar entry type");
            continue;
        }
        lchown(&path, as_u32(uid), as_u32(gid))?;
        if !kind.is_symlink() {
            chmod(&path, mode)?;
        }
        set_xattrs(&mut entry, &path)?;
        if kind.is_dir() {
            dir_times.push((path, mtime));
        } else {
            set_times(&path, (mtime, 0), (mtime, 0))?;
        }
        written.insert(rel);
    }
    for (path, mtime) in dir_times.iter().rev() {
        set_times(path, (*mtime, 0), (*mtime, 0))?;
    }
    Ok(())
}

fn remove_any(path: &Path, md: &std::fs::Metadata) -> Result<(), StoreError> {
    if md.is_dir() {
        std::fs::remove_dir_all(path).map_err(StoreError::io("remove", path))
    } else {
        std::fs::remove_file(path).map_err(StoreError::io("remove", path))
    }
}

/// `.wh.NAME`: NAME is deleted (bind) or hidden by an overlay whiteout (0:0 char device).
fn whiteout(
    layers: &Layers,
    entry: &str,
    parts: &[String],
    hidden: &str,
) -> Result<(), StoreError> {
    if hidden.is_empty() || hidden == "." || hidden == ".." || hidden.contains('/') {
        return Err(StoreError::UnsafeEntry {
            entry: entry.to_string(),
            reason: "whiteout names no file",
        });
    }
    let Some(dir) = layers.resolve_dir(entry, parts, layers.overlay)? else {
        return Ok(());
    };
    let path = layers.upper.join(dir).join(hidden);
    if let Ok(md) = std::fs::symlink_metadata(&path) {
        remove_any(&path, &md)?;
    }
    if layers.overlay {
        make_node(&path, SFlag::S_IFCHR, 0, 0)?;
    }
    Ok(())
}

/// `.wh..wh..opq`: the directory hides everything below it (overlay: the opaque xattr; bind:
/// its old contents, i.e. everything this layer did not write, are deleted).
fn opaque(
    layers: &Layers,
    entry: &str,
    parts: &[String],
    written: &HashSet<PathBuf>,
) -> Result<(), StoreError> {
    let Some(dir) = layers.resolve_dir(entry, parts, true)? else {
        return Ok(());
    };
    let path = layers.upper.join(&dir);
    for e in std::fs::read_dir(&path).map_err(StoreError::io("read directory", &path))? {
        let e = e.map_err(StoreError::io("read directory", &path))?;
        if !written.contains(&dir.join(e.file_name())) {
            let md =
                std::fs::symlink_metadata(e.path()).map_err(StoreError::io("stat", e.path()))?;
            remove_any(&e.path(), &md)?;
        }
    }
    if layers.overlay {
        set_opaque(&path)?;
    }
    Ok(())
}

fn hard_link<R: Read>(
    layers: &Layers,
    entry: &tar::Entry<'_, R>,
    shown: &str,
    path: &Path,
) -> Result<(), StoreError> {
    let unsafe_entry = |reason| StoreError::UnsafeEntry {
        entry: shown.to_string(),
        reason,
    };
    let target = entry
        .link_name()
        .map_err(|source| StoreError::Layer {
            digest: String::new(),
            source,
        })?
        .ok_or_else(|| unsafe_entry("hard link without a target"))?;
    let mut parts = clean(&target)?;
    let name = parts
        .pop()
        .ok_or_else(|| unsafe_entry("hard link to the root"))?;
    let dir = layers
        .resolve_dir(shown, &parts, false)?
        .ok_or_else(|| unsafe_entry("hard link target does not exist"))?;
    let source = layers.upper.join(dir).join(name);
    // link(2) does not follow a symlink source, so the link cannot reach outside the root.
    std::fs::hard_link(&source, path).map_err(|e| match e.kind() {
        std::io::ErrorKind::NotFound => unsafe_entry("hard link target is not in this layer"),
        _ => StoreError::io("hard link", path)(e),
    })
}

/// PAX `SCHILY.xattr.*` records become extended attributes.
fn set_xattrs<R: Read>(entry: &mut tar::Entry<'_, R>, path: &Path) -> Result<(), StoreError> {
    let Some(exts) = entry.pax_extensions().map_err(|source| StoreError::Layer {
        digest: String::new(),
        source,
    })?
    else {
        return Ok(());
    };
    for ext in exts {
        let ext = ext.map_err(|source| StoreError::Layer {
            digest: String::new(),
            source,
        })?;
        if let Some(name) = ext.key().ok().and_then(|k| k.strip_prefix("SCHILY.xattr.")) {
            xattr::set(path, name, ext.value_bytes())
                .map_err(StoreError::io("set xattr on", path))?;
        }
    }
    Ok(())
}
