//! `PUT /containers/{id}/archive`: a tar extracted into a directory of the container the
//! way dockerd's `archive.Untar` does it inside its chroot. Every entry's parent is
//! resolved with [`scope::resolve`], so symlinks already in the container or created by
//! earlier entries are followed inside the container's root only, and names climbing
//! out of the destination are refused.

use std::io::{self, Read};
use std::os::unix::ffi::OsStrExt;
use std::os::unix::fs::{DirBuilderExt, MetadataExt, OpenOptionsExt, PermissionsExt};
use std::path::{Component, Path, PathBuf};

use nix::sys::stat::{Mode, SFlag};
use nix::sys::time::TimeSpec;

use super::{scope, ArchiveError};

#[derive(Debug, Clone, Default)]
pub struct UntarOptions {
    /// Refuse to replace a directory with a non-directory and vice versa.
    pub no_overwrite_dir_non_dir: bool,
    /// Owner for every entry (`copyUIDGID` with a container user); the archive's
    /// owners otherwise.
    pub chown: Option<(u32, u32)>,
}

/// Extracts `input` into `dest` (an absolute, already resolved container path of a
/// directory) of the container whose root is `root`.
pub fn untar(
    root: &Path,
    dest: &str,
    input: impl Read,
    opts: &UntarOptions,
) -> Result<(), ArchiveError> {
    let bad = |e: io::Error| ArchiveError::BadTar {
        message: e.to_string(),
    };
    let mut archive = tar::Archive::new(input);
    // Directory times are set last: the entries written into them change them.
    let mut dirs: Vec<(PathBuf, tar::Header)> = Vec::new();
    for entry in archive.entries().map_err(bad)? {
        let mut entry = entry.map_err(bad)?;
        let raw = entry.path_bytes().into_owned();
        let name = String::from_utf8_lossy(&raw).into_owned();
        let Some(rel) = clean(&name) else {
            return Err(ArchiveError::Breakout {
                name,
                dest: dest.into(),
            });
        };
        let kind = entry.header().entry_type();
        if matches!(
            kind,
            tar::EntryType::XGlobalHeader | tar::EntryType::XHeader
        ) {
            continue;
        }
        let target = if rel.as_os_str().is_empty() {
            scope::resolve(root, dest, true).map_err(|e| ArchiveError::io("resolve", dest, e))?
        } else {
            let parent = rel.parent().unwrap_or(Path::new(""));
            let parent_dir = ensure_dir(root, &join(dest, parent))?;
            parent_dir.join(rel.file_name().unwrap_or_default())
        };
        let existing = std::fs::symlink_metadata(&target).ok();
        let is_dir_entry = kind == tar::EntryType::Directory;
        if let Some(m) = &existing {
            let container_path = join(dest, &rel).to_string_lossy().into_owned();
            if opts.no_overwrite_dir_non_dir && m.is_dir() && !is_dir_entry {
                return Err(ArchiveError::Overwrite {
                    existing: "directory",
                    path: container_path,
                    new: "non-directory",
                    name,
                });
            }
            if opts.no_overwrite_dir_non_dir && !m.is_dir() && is_dir_entry {
                return Err(ArchiveError::Overwrite {
                    existing: "non-directory",
                    path: container_path,
                    new: "directory",
                    name,
                });
            }
            if !(m.is_dir() && is_dir_entry) {
                remove(&target)?;
            }
        } else if rel.as_os_str().is_empty() {
            return Err(ArchiveError::FileNotFound {
                path: dest.into(),
                container: String::new(),
            });
        }
        let attrs = match entry.pax_extensions() {
            Ok(Some(exts)) => super::xattrs::from_pax(
                exts.filter_map(Result::ok)
                    .map(|e| (e.key_bytes(), e.value_bytes())),
            ),
            _ => Vec::new(),
        };
        create(root, dest, &mut entry, &target, existing.is_some())?;
        let header = entry.header().clone();
        if kind == tar::EntryType::Link {
            continue;
        }
        set_owner(&target, &header, opts)?;
        // After the chown, which would clear file capabilities.
        super::xattrs::apply(&target, &attrs)
            .map_err(|e| ArchiveError::io("setxattr", &target, e))?;
        if is_dir_entry {
            dirs.push((target, header));
        } else {
            set_mode_and_times(&target, &header, kind == tar::EntryType::Symlink)?;
        }
    }
    for (path, header) in dirs.iter().rev() {
        set_mode_and_times(path, header, false)?;
    }
    Ok(())
}

/// The entry name as a relative path with `.` and `..` applied; `None` when it climbs
/// above the destination. Leading `/` and `./` are dropped, as dockerd's `Clean` does.
fn clean(name: &str) -> Option<PathBuf> {
    let mut parts: Vec<&std::ffi::OsStr> = Vec::new();
    for c in Path::new(name).components() {
        match c {
            Component::Normal(n) => parts.push(n),
            Component::ParentDir => {
                parts.pop()?;
            }
            _ => {}
        }
    }
    Some(parts.iter().collect())
}

fn join(dest: &str, rel: &Path) -> PathBuf {
    let mut p = PathBuf::from(dest);
    p.push(rel);
    p
}

/// Resolves a container directory, creating what is missing (mode 0755, as dockerd
/// creates an entry's missing parents). Symlinks are followed inside the root.
fn ensure_dir(root: &Path, container_dir: &Path) -> Result<PathBuf, ArchiveError> {
    let s = container_dir.to_string_lossy();
    let host = scope::resolve(root, &s, true).map_err(|e| ArchiveError::io("resolve", &*s, e))?;
    match std::fs::symlink_metadata(&host) {
        Ok(m) if m.is_dir() => Ok(host),
        Ok(_) => Err(ArchiveError::io(
            "mkdir",
            container_dir,
            io::Error::from_raw_os_error(libc::ENOTDIR),
        )),
        Err(_) => {
            std::fs::DirBuilder::new()
                .recursive(true)
                .mode(0o755)
                .create(&host)
                .map_err(|e| ArchiveError::io("mkdir", container_dir, e))?;
            Ok(host)
        }
    }
}

fn remove(path: &Path) -> Result<(), ArchiveError> {
    let r = match std::fs::symlink_metadata(path) {
        Ok(m) if m.is_dir() => std::fs::remove_dir_all(path),
        Ok(_) => std::fs::remove_file(path),
        Err(_) => Ok(()),
    };
    r.map_err(|e| ArchiveError::io("remove", path, e))
}

fn create<R: Read>(
    root: &Path,
    dest: &str,
    entry: &mut tar::Entry<R>,
    target: &Path,
    exists: bool,
) -> Result<(), ArchiveError> {
    let io_err = |op| move |e| ArchiveError::io(op, target, e);
    let mode = entry.header().mode().unwrap_or(0o644) & 0o7777;
    match entry.header().entry_type() {
        tar::EntryType::Directory => {
            if !exists {
                std::fs::DirBuilder::new()
                    .mode(mode)
                    .create(target)
                    .map_err(io_err("mkdir"))?;
            }
        }
        tar::EntryType::Regular | tar::EntryType::Continuous | tar::EntryType::GNUSparse => {
            let mut f = std::fs::OpenOptions::new()
                .write(true)
                .create_new(true)
                .custom_flags(libc::O_NOFOLLOW)
                .mode(0o600)
                .open(target)
                .map_err(io_err("create"))?;
            io::copy(entry, &mut f).map_err(io_err("write"))?;
        }
        tar::EntryType::Symlink => {
            let link = entry
                .link_name_bytes()
                .map(|l| l.into_owned())
                .unwrap_or_default();
            std::os::unix::fs::symlink(std::ffi::OsStr::from_bytes(&link), target)
                .map_err(io_err("symlink"))?;
        }
        tar::EntryType::Link => {
            let link = entry
                .link_name_bytes()
                .map(|l| String::from_utf8_lossy(&l).into_owned())
                .unwrap_or_default();
            let Some(rel) = clean(&link).filter(|r| !r.as_os_str().is_empty()) else {
                return Err(ArchiveError::Breakout {
                    name: link,
                    dest: dest.into(),
                });
            };
            let src = join(dest, &rel);
            let s = src.to_string_lossy();
            let host =
                scope::resolve(root, &s, false).map_err(|e| ArchiveError::io("resolve", &*s, e))?;
            std::fs::hard_link(&host, target).map_err(io_err("link"))?;
        }
        kind @ (tar::EntryType::Char | tar::EntryType::Block | tar::EntryType::Fifo) => {
            let sflag = match kind {
                tar::EntryType::Char => SFlag::S_IFCHR,
                tar::EntryType::Block => SFlag::S_IFBLK,
                _ => SFlag::S_IFIFO,
            };
            let h = entry.header();
            let dev = nix::sys::stat::makedev(
                h.device_major().ok().flatten().unwrap_or(0).into(),
                h.device_minor().ok().flatten().unwrap_or(0).into(),
            );
            nix::sys::stat::mknod(target, sflag, Mode::from_bits_truncate(mode), dev)
                .map_err(|e| ArchiveError::io("mknod", target, e.into()))?;
        }
        other => {
            return Err(ArchiveError::BadTar {
                message: format!(
                    "unhandled tar header type {:?} for {}",
                    other.as_byte() as char,
                    String::from_utf8_lossy(&entry.path_bytes())
                ),
            })
        }
    }
    Ok(())
}

fn set_owner(path: &Path, h: &tar::Header, opts: &UntarOptions) -> Result<(), ArchiveError> {
    let (uid, gid) = match opts.chown {
        Some(ids) => ids,
        None => (h.uid().unwrap_or(0) as u32, h.gid().unwrap_or(0) as u32),
    };
    nix::unistd::fchownat(
        nix::fcntl::AT_FDCWD,
        path,
        Some(uid.into()),
        Some(gid.into()),
        nix::fcntl::AtFlags::AT_SYMLINK_NOFOLLOW,
    )
    .map_err(|e| ArchiveError::io("chown", path, e.into()))
}

fn set_mode_and_times(path: &Path, h: &tar::Header, symlink: bool) -> Result<(), ArchiveError> {
    if !symlink {
        let mode = h.mode().unwrap_or(0o644) & 0o7777;
        std::fs::set_permissions(path, std::fs::Permissions::from_mode(mode))
            .map_err(|e| ArchiveError::io("chmod", path, e))?;
    }
    let mtime = TimeSpec::new(h.mtime().unwrap_or(0) as i64, 0);
    let atime = std::fs::symlink_metadata(path)
        .map(|m| TimeSpec::new(m.atime(), m.atime_nsec()))
        .unwrap_or(mtime);
    nix::sys::stat::utimensat(
        nix::fcntl::AT_FDCWD,
        path,
        &atime,
        &mtime,
        nix::sys::stat::UtimensatFlags::NoFollowSymlink,
    )
    .map_err(|e| ArchiveError::io("utimes", path, e.into()))
}

#[cfg(test)]
mod tests {
    use super::*;

    fn tar_of(entries: &[(&str, tar::EntryType, &str)]) -> Vec<u8> {
        let mut b = tar::Builder::new(Vec::new());
        for (name, kind, data) in entries {
            let mut h = tar::Header::new_gnu();
            h.set_entry_type(*kind);
            h.set_mode(0o644);
            h.as_gnu_mut().unwrap().name[..name.len()].copy_from_slice(name.as_bytes());
            if *kind == tar::EntryType::Symlink || *kind == tar::EntryType::Link {
                h.set_link_name(data).unwrap();
                h.set_size(0);
                h.set_cksum();
                b.append(&h, io::empty()).unwrap();
            } else {
                h.set_size(data.len() as u64);
                h.set_cksum();
                b.append(&h, data.as_bytes()).unwrap();
            }
        }
        b.into_inner().unwrap()
    }

    #[test]
    fn symlinks_in_the_archive_stay_inside_the_root() {
        let dir = tempfile::tempdir().unwrap();
        let root = dir.path().join("root");
        std::fs::create_dir_all(root.join("dst")).unwrap();
        let outside = dir.path().join("outside");
        std::fs::create_dir(&outside).unwrap();
        let data = tar_of(&[
            ("esc", tar::EntryType::Symlink, outside.to_str().unwrap()),
            ("esc/pwned", tar::EntryType::Regular, "x"),
            ("up", tar::EntryType::Symlink, "../../../.."),
            ("up/top", tar::EntryType::Regular, "y"),
            ("h", tar::EntryType::Link, "up/top"),
        ]);
        untar(&root, "/dst", data.as_slice(), &UntarOptions::default()).unwrap();
        assert!(std::fs::read_dir(&outside).unwrap().next().is_none());
        // The absolute link restarts at the container's root.
        let inside = root.join(outside.strip_prefix("/").unwrap()).join("pwned");
        assert_eq!(std::fs::read_to_string(inside).unwrap(), "x");
        assert_eq!(std::fs::read_to_string(root.join("top")).unwrap(), "y");
        assert_eq!(std::fs::read_to_string(root.join("dst/h")).unwrap(), "y");
        let err = untar(
            &root,
            "/dst",
            tar_of(&[("../../x", tar::EntryType::Regular, "z")]).as_slice(),
            &UntarOptions::default(),
        )
        .unwrap_err();
        assert!(matches!(err, ArchiveError::Breakout { .. }), "{err}");
    }

    #[test]
    fn no_overwrite_dir_non_dir() {
        let dir = tempfile::tempdir().unwrap();
        let root = dir.path();
        std::fs::create_dir_all(root.join("dst/sub")).unwrap();
        let opts = UntarOptions {
            no_overwrite_dir_non_dir: true,
            chown: None,
        };
        let data = tar_of(&[("sub", tar::EntryType::Regular, "x")]);
        let err = untar(root, "/dst", data.as_slice(), &opts).unwrap_err();
        assert_eq!(
            err.to_string(),
            "cannot overwrite directory \"/dst/sub\" with non-directory \"sub\""
        );
        untar(root, "/dst", data.as_slice(), &UntarOptions::default()).unwrap();
        assert!(root.join("dst/sub").is_file());
    }
}
