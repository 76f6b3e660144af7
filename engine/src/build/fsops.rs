//! File-system steps (COPY, ADD, WORKDIR): a snapshot's mounts mounted on a private
//! directory, paths resolved inside it without escaping through symlinks, files copied
//! with their modes and the requested owner.

use std::os::unix::fs::{MetadataExt, PermissionsExt};
use std::path::{Component, Path, PathBuf};

use nix::mount::{MntFlags, MsFlags};

use super::BuildError;
use crate::backend::Mount;

fn io<'a>(op: &'static str, path: &'a Path) -> impl FnOnce(std::io::Error) -> BuildError + 'a {
    move |source| BuildError::Io {
        op,
        path: path.to_path_buf(),
        source,
    }
}

/// A mounted snapshot; unmounted on drop (lazily if still busy) so no path leaves one
/// behind.
pub struct Mounted {
    target: PathBuf,
    active: bool,
}

impl Mounted {
    pub fn path(&self) -> &Path {
        &self.target
    }

    pub fn unmount(mut self) -> Result<(), BuildError> {
        self.active = false;
        nix::mount::umount2(&self.target, MntFlags::empty()).map_err(|e| BuildError::Io {
            op: "unmount",
            path: self.target.clone(),
            source: e.into(),
        })
    }
}

impl Drop for Mounted {
    fn drop(&mut self) {
        if self.active {
            let _ = nix::mount::umount2(&self.target, MntFlags::MNT_DETACH);
        }
    }
}

/// Mounts what highd returned for a snapshot (one overlay or one bind mount) on `target`.
pub fn mount(mounts: &[Mount], target: &Path) -> Result<Mounted, BuildError> {
    std::fs::create_dir_all(target).map_err(io("create", target))?;
    let [m] = mounts else {
        return Err(BuildError::Invalid {
            message: format!("unsupported snapshot mounts: {mounts:?}"),
        });
    };
    let err = |e: nix::Error| BuildError::Io {
        op: "mount",
        path: target.to_path_buf(),
        source: e.into(),
    };
    match m.kind.as_str() {
        "overlay" => {
            let data: Vec<&str> = m
                .options
                .iter()
                .map(String::as_str)
                .filter(|o| !matches!(*o, "rw" | "ro"))
                .collect();
            nix::mount::mount(
                Some("overlay"),
                target,
                Some("overlay"),
                MsFlags::empty(),
                Some(data.join(",").as_str()),
            )
            .map_err(err)?;
        }
        "bind" | "rbind" => {
            nix::mount::mount(
                Some(m.source.as_str()),
                target,
                None::<&str>,
                MsFlags::MS_BIND | MsFlags::MS_REC,
                None::<&str>,
            )
            .map_err(err)?;
        }
        other => {
            return Err(BuildError::Invalid {
                message: format!("unsupported snapshot mount type {other}"),
            })
        }
    }
    Ok(Mounted {
        target: target.to_path_buf(),
        active: true,
    })
}

/// `path` (absolute inside the image) resolved under `root`, following symlinks as the
/// image would see them, never leaving `root`.
pub fn resolve_in(root: &Path, path: &str) -> PathBuf {
    let mut parts: Vec<std::ffi::OsString> = Vec::new();
    let mut pending: Vec<std::ffi::OsString> = Path::new(path)
        .components()
        .rev()
        .filter_map(|c| match c {
            Component::Normal(s) => Some(s.to_os_string()),
            Component::ParentDir => Some("..".into()),
            _ => None,
        })
        .collect();
    let mut hops = 0;
    while let Some(next) = pending.pop() {
        if next == ".." {
            parts.pop();
            continue;
        }
        let candidate: PathBuf = std::iter::once(root.as_os_str().to_os_string())
            .chain(parts.iter().cloned())
            .chain(std::iter::once(next.clone()))
            .collect();
        match std::fs::read_link(&candidate) {
            Ok(target) if hops < 40 => {
                hops += 1;
                if target.is_absolute() {
                    parts.clear();
                }
                for c in target.components().rev() {
                    match c {
                        Component::Normal(s) => pending.push(s.to_os_string()),
                        Component::ParentDir => pending.push("..".into()),
                        _ => {}
                    }
                }
            }
            _ => parts.push(next),
        }
    }
    std::iter::once(root.as_os_str().to_os_string())
        .chain(parts)
        .collect()
}

/// Creates `dir` (and parents, 0755 root-owned like dockerd) inside the mounted root;
/// returns whether anything was created.
pub fn mkdir_in(root: &Path, dir: &str) -> Result<bool, BuildError> {
    let target = resolve_in(root, dir);
    if target.is_dir() {
        return Ok(false);
    }
    std::fs::create_dir_all(&target).map_err(io("create", &target))?;
    Ok(true)
}

/// Owner for copied files: `None` keeps root (0:0).
#[derive(Debug, Clone, Copy, Default)]
pub struct Owner {
    pub uid: u32,
    pub gid: u32,
}

/// Copies `src` (file, directory contents, or symlink) to `dest` under `root`.
pub fn copy_into(src: &Path, dest: &Path, owner: Owner) -> Result<(), BuildError> {
    let meta = std::fs::symlink_metadata(src).map_err(io("stat", src))?;
    if let Some(parent) = dest.parent() {
        std::fs::create_dir_all(parent).map_err(io("create", parent))?;
    }
    if meta.file_type().is_symlink() {
        let t = std::fs::read_link(src).map_err(io("readlink", src))?;
        let _ = std::fs::remove_file(dest);
        std::os::unix::fs::symlink(&t, dest).map_err(io("symlink", dest))?;
    } else if meta.is_dir() {
        if !dest.is_dir() {
            std::fs::create_dir_all(dest).map_err(io("create", dest))?;
        }
        std::fs::set_permissions(dest, std::fs::Permissions::from_mode(meta.mode() & 0o7777))
            .map_err(io("chmod", dest))?;
        let rd = std::fs::read_dir(src).map_err(io("read", src))?;
        for e in rd {
            let e = e.map_err(io("read", src))?;
            copy_into(&e.path(), &dest.join(e.file_name()), owner)?;
        }
    } else {
        if dest.is_dir() {
            return Err(BuildError::Invalid {
                message: format!("cannot copy to non-directory: {}", dest.display()),
            });
        }
        let _ = std::fs::remove_file(dest);
        std::fs::copy(src, dest).map_err(io("copy", dest))?;
        std::fs::set_permissions(dest, std::fs::Permissions::from_mode(meta.mode() & 0o7777))
            .map_err(io("chmod", dest))?;
    }
    std::os::unix::fs::lchown(dest, Some(owner.uid), Some(owner.gid)).map_err(io("chown", dest))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn resolve_stays_inside_root() {
        let d = tempfile::tempdir().unwrap();
        let root = d.path();
        std::fs::create_dir_all(root.join("real/dir")).unwrap();
        std::os::unix::fs::symlink("/real", root.join("abs")).unwrap();
        std::os::unix::fs::symlink("../../..", root.join("real/up")).unwrap();
        assert_eq!(resolve_in(root, "/abs/dir/f"), root.join("real/dir/f"));
        assert_eq!(resolve_in(root, "/real/up/etc"), root.join("etc"));
        assert_eq!(resolve_in(root, "../../x"), root.join("x"));
    }
}
