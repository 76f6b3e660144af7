//! Tree copy that keeps what a container sees: modes, owners, times, symlinks, devices
//! and FIFOs (dockerd's `copyExistingContents` for new volumes).

use std::os::unix::fs::{MetadataExt, PermissionsExt};
use std::path::Path;

use nix::sys::stat::{Mode, SFlag};
use nix::sys::time::TimeSpec;

use super::ArchiveError;

fn io(op: &'static str, path: &Path) -> impl FnOnce(std::io::Error) -> ArchiveError {
    let path = path.to_path_buf();
    move |source| ArchiveError::Io { op, path, source }
}

fn errno(op: &'static str, path: &Path) -> impl FnOnce(nix::Error) -> ArchiveError {
    let path = path.to_path_buf();
    move |e| ArchiveError::Io {
        op,
        path,
        source: std::io::Error::from(e),
    }
}

/// Copies the contents of directory `src` into the existing directory `dst`, then gives
/// `dst` the owner and mode of `src`.
pub fn copy_dir_contents(src: &Path, dst: &Path) -> Result<(), ArchiveError> {
    for entry in std::fs::read_dir(src).map_err(io("read", src))? {
        let entry = entry.map_err(io("read", src))?;
        copy_entry(&entry.path(), &dst.join(entry.file_name()))?;
    }
    copy_attrs(
        src,
        dst,
        &std::fs::symlink_metadata(src).map_err(io("stat", src))?,
    )
}

fn copy_entry(src: &Path, dst: &Path) -> Result<(), ArchiveError> {
    let meta = std::fs::symlink_metadata(src).map_err(io("stat", src))?;
    let ft = meta.file_type();
    if ft.is_dir() {
        std::fs::create_dir(dst).map_err(io("mkdir", dst))?;
        for entry in std::fs::read_dir(src).map_err(io("read", src))? {
            let entry = entry.map_err(io("read", src))?;
            copy_entry(&entry.path(), &dst.join(entry.file_name()))?;
        }
    } else if ft.is_symlink() {
        let target = std::fs::read_link(src).map_err(io("readlink", src))?;
        std::os::unix::fs::symlink(&target, dst).map_err(io("symlink", dst))?;
        nix::unistd::fchownat(
            nix::fcntl::AT_FDCWD,
            dst,
            Some(meta.uid().into()),
            Some(meta.gid().into()),
            nix::fcntl::AtFlags::AT_SYMLINK_NOFOLLOW,
        )
        .map_err(errno("chown", dst))?;
        return Ok(());
    } else if ft.is_file() {
        std::fs::copy(src, dst).map_err(io("copy", dst))?;
    } else {
        let kind = SFlag::from_bits_truncate(meta.mode() & libc::S_IFMT);
        nix::sys::stat::mknod(
            dst,
            kind,
            Mode::from_bits_truncate(meta.mode() & 0o7777),
            meta.rdev(),
        )
        .map_err(errno("mknod", dst))?;
    }
    copy_attrs(src, dst, &meta)
}

fn copy_attrs(_src: &Path, dst: &Path, meta: &std::fs::Metadata) -> Result<(), ArchiveError> {
    nix::unistd::chown(dst, Some(meta.uid().into()), Some(meta.gid().into()))
        .map_err(errno("chown", dst))?;
    // After the chown, which clears setuid/setgid bits.
    std::fs::set_permissions(dst, std::fs::Permissions::from_mode(meta.mode() & 0o7777))
        .map_err(io("chmod", dst))?;
    let atime = TimeSpec::new(meta.atime(), meta.atime_nsec());
    let mtime = TimeSpec::new(meta.mtime(), meta.mtime_nsec());
    nix::sys::stat::utimensat(
        nix::fcntl::AT_FDCWD,
        dst,
        &atime,
        &mtime,
        nix::sys::stat::UtimensatFlags::NoFollowSymlink,
    )
    .map_err(errno("utimes", dst))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn copies_files_links_and_modes() {
        let dir = tempfile::tempdir().unwrap();
        let src = dir.path().join("src");
        let dst = dir.path().join("dst");
        std::fs::create_dir_all(src.join("sub")).unwrap();
        std::fs::create_dir(&dst).unwrap();
        std::fs::write(src.join("sub/f"), "hi").unwrap();
        std::fs::set_permissions(src.join("sub/f"), std::fs::Permissions::from_mode(0o640))
            .unwrap();
        std::os::unix::fs::symlink("sub/f", src.join("l")).unwrap();
        std::fs::set_permissions(&src, std::fs::Permissions::from_mode(0o750)).unwrap();
        copy_dir_contents(&src, &dst).unwrap();
        assert_eq!(std::fs::read_to_string(dst.join("sub/f")).unwrap(), "hi");
        let mode = |p: &Path| std::fs::metadata(p).unwrap().mode() & 0o7777;
        assert_eq!(mode(&dst.join("sub/f")), 0o640);
        assert_eq!(mode(&dst), 0o750);
        assert_eq!(
            std::fs::read_link(dst.join("l")).unwrap(),
            Path::new("sub/f")
        );
    }
}
