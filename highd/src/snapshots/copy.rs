//! File-tree helpers: metadata setters that never follow symlinks, disk usage, and the naive
//! tree copy behind the copying snapshotter (used where overlayfs is unavailable).

use std::collections::{HashMap, HashSet};
use std::os::unix::fs::{FileTypeExt, MetadataExt};
use std::path::Path;

use nix::fcntl::AT_FDCWD;
use nix::sys::stat::{mknod, utimensat, Mode, SFlag, UtimensatFlags};
use nix::sys::time::TimeSpec;
use nix::unistd::{fchownat, Gid, Uid};

use crate::db::StoreError;

/// Sets owner of `path` itself (a symlink is not followed).
pub(crate) fn lchown(path: &Path, uid: u32, gid: u32) -> Result<(), StoreError> {
    fchownat(
        AT_FDCWD,
        path,
        Some(Uid::from_raw(uid)),
        Some(Gid::from_raw(gid)),
        nix::fcntl::AtFlags::AT_SYMLINK_NOFOLLOW,
    )
    .map_err(StoreError::sys("chown", path))
}

/// Sets permission bits (including setuid/setgid/sticky) of a non-symlink.
pub(crate) fn chmod(path: &Path, mode: u32) -> Result<(), StoreError> {
    use std::os::unix::fs::PermissionsExt;
    std::fs::set_permissions(path, std::fs::Permissions::from_mode(mode & 0o7777))
        .map_err(StoreError::io("chmod", path))
}

/// Sets atime and mtime of `path` itself (a symlink is not followed).
pub(crate) fn set_times(
    path: &Path,
    atime: (i64, i64),
    mtime: (i64, i64),
) -> Result<(), StoreError> {
    utimensat(
        AT_FDCWD,
        path,
        &TimeSpec::new(atime.0, atime.1),
        &TimeSpec::new(mtime.0, mtime.1),
        UtimensatFlags::NoFollowSymlink,
    )
    .map_err(StoreError::sys("set times of", path))
}

/// Creates a device node or fifo.
pub(crate) fn make_node(path: &Path, kind: SFlag, mode: u32, dev: u64) -> Result<(), StoreError> {
    mknod(path, kind, Mode::from_bits_truncate(mode & 0o7777), dev)
        .map_err(StoreError::sys("mknod", path))
}

/// Copies all extended attributes of `src` to `dst` (neither followed if a symlink).
fn copy_xattrs(src: &Path, dst: &Path) -> Result<(), StoreError> {
    let names = match xattr::list(src) {
        Ok(n) => n,
        // Filesystems without xattr support have nothing to copy.
        Err(e) if e.raw_os_error() == Some(libc::EOPNOTSUPP) => return Ok(()),
        Err(e) => return Err(StoreError::io("list xattrs of", src)(e)),
    };
    for name in names {
        if let Some(value) = xattr::get(src, &name).map_err(StoreError::io("get xattr of", src))? {
            xattr::set(dst, &name, &value).map_err(StoreError::io("set xattr of", dst))?;
        }
    }
    Ok(())
}

fn copy_meta(src: &Path, dst: &Path, md: &std::fs::Metadata) -> Result<(), StoreError> {
    lchown(dst, md.uid(), md.gid())?;
    if !md.file_type().is_symlink() {
        chmod(dst, md.mode())?;
    }
    copy_xattrs(src, dst)?;
    set_times(
        dst,
        (md.atime(), md.atime_nsec()),
        (md.mtime(), md.mtime_nsec()),
    )
}

/// Copies the tree under `src` into the existing directory `dst`, preserving types, owners,
/// modes, times, xattrs and hardlinks. Only for trees Berth owns (snapshot dirs): symlinks
/// are copied as links, never followed.
pub(crate) fn copy_tree(src: &Path, dst: &Path) -> Result<(), StoreError> {
    let mut links = HashMap::new();
    copy_dir(src, dst, &mut links)?;
    let md = std::fs::symlink_metadata(src).map_err(StoreError::io("stat", src))?;
    copy_meta(src, dst, &md)
}

fn copy_dir(
    src: &Path,
    dst: &Path,
    links: &mut HashMap<(u64, u64), std::path::PathBuf>,
) -> Result<(), StoreError> {
    for entry in std::fs::read_dir(src).map_err(StoreError::io("read directory", src))? {
        let entry = entry.map_err(StoreError::io("read directory", src))?;
        let (s, d) = (entry.path(), dst.join(entry.file_name()));
        let md = std::fs::symlink_metadata(&s).map_err(StoreError::io("stat", &s))?;
        let ft = md.file_type();
        if ft.is_dir() {
            std::fs::create_dir(&d).map_err(StoreError::io("create directory", &d))?;
            copy_dir(&s, &d, links)?;
        } else if ft.is_symlink() {
            let target = std::fs::read_link(&s).map_err(StoreError::io("read link", &s))?;
            std::os::unix::fs::symlink(&target, &d).map_err(StoreError::io("symlink", &d))?;
        } else if md.nlink() > 1 && links.contains_key(&(md.dev(), md.ino())) {
            let first = &links[&(md.dev(), md.ino())];
            std::fs::hard_link(first, &d).map_err(StoreError::io("hard link", &d))?;
            continue;
        } else if ft.is_file() {
            std::fs::copy(&s, &d).map_err(StoreError::io("copy file to", &d))?;
            if md.nlink() > 1 {
                links.insert((md.dev(), md.ino()), d.clone());
            }
        } else {
            let kind = if ft.is_char_device() {
                SFlag::S_IFCHR
            } else if ft.is_block_device() {
                SFlag::S_IFBLK
            } else if ft.is_fifo() {
                SFlag::S_IFIFO
            } else {
                SFlag::S_IFSOCK
            };
            make_node(&d, kind, md.mode(), md.rdev())?;
        }
        copy_meta(&s, &d, &md)?;
    }
    Ok(())
}

/// containerd's usage: bytes allocated (st_blocks × 512) and distinct inodes under `root`.
pub(crate) fn disk_usage(root: &Path) -> Result<(i64, i64), StoreError> {
    let mut seen = HashSet::new();
    let mut size = 0i64;
    let mut stack = vec![root.to_path_buf()];
    while let Some(p) = stack.pop() {
        let md = std::fs::symlink_metadata(&p).map_err(StoreError::io("stat", &p))?;
        if seen.insert((md.dev(), md.ino())) {
            size = size.saturating_add(i64::try_from(md.blocks()).unwrap_or(i64::MAX) * 512);
        }
        if md.is_dir() {
            for e in std::fs::read_dir(&p).map_err(StoreError::io("read directory", &p))? {
                stack.push(e.map_err(StoreError::io("read directory", &p))?.path());
            }
        }
    }
    Ok((size, i64::try_from(seen.len()).unwrap_or(i64::MAX)))
}
