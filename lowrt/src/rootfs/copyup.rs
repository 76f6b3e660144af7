//! `tmpcopyup` (runc's extension): a tmpfs mounted over a directory of the image starts
//! with a copy of what that directory held. The source is an fd of the covered directory
//! opened before the mount, so the copy reads exactly the image's entries (never the new
//! tmpfs, never a path re-resolved later), and every step is relative to a directory fd
//! with O_NOFOLLOW: symlinks in the image are copied as symlinks, not followed.

use std::ffi::{CStr, CString};
use std::os::fd::{AsFd, BorrowedFd, OwnedFd};
use std::os::unix::ffi::OsStrExt;
use std::path::{Path, PathBuf};

use nix::dir::Dir;
use nix::errno::Errno;
use nix::fcntl::{openat, readlinkat, AtFlags, OFlag};
use nix::sys::stat::{
    fchmod, fchmodat, fstat, fstatat, futimens, mkdirat, mknodat, utimensat, FchmodatFlags,
    FileStat, Mode, SFlag, UtimensatFlags,
};
use nix::sys::time::TimeSpec;
use nix::unistd::{fchown, fchownat, symlinkat, Gid, Uid};

use super::RootfsError;

/// Copies the contents of directory `from` into the (empty) directory `to`: regular
/// files, directories, symlinks, device nodes, fifos and sockets, with owner, mode,
/// timestamps and (best effort) extended attributes. `dest` is the container path of the
/// mount, for error messages. Hard links become separate copies, as in runc.
pub fn copy_tree(from: BorrowedFd<'_>, to: BorrowedFd<'_>, dest: &Path) -> Result<(), RootfsError> {
    let (a, b) = (stat_fd(from, dest)?, stat_fd(to, dest)?);
    // Copying a directory into itself would truncate every file it holds.
    if (a.st_dev, a.st_ino) == (b.st_dev, b.st_ino) {
        return Err(err(dest, "copy into itself", Errno::EINVAL));
    }
    copy_dir(from, to, dest)
}

fn copy_dir(from: BorrowedFd<'_>, to: BorrowedFd<'_>, at: &Path) -> Result<(), RootfsError> {
    for name in entries(from, at)? {
        let path = at.join(std::ffi::OsStr::from_bytes(name.as_bytes()));
        let st = fstatat(from, name.as_c_str(), AtFlags::AT_SYMLINK_NOFOLLOW)
            .map_err(|e| err(&path, "stat", e))?;
        let kind = SFlag::from_bits_truncate(st.st_mode) & SFlag::S_IFMT;
        match kind {
            SFlag::S_IFDIR => {
                let src = open(from, &name, OFlag::O_RDONLY | OFlag::O_DIRECTORY, &path)?;
                mkdirat(to, name.as_c_str(), Mode::S_IRWXU).map_err(|e| err(&path, "mkdir", e))?;
                let dst = open(to, &name, OFlag::O_RDONLY | OFlag::O_DIRECTORY, &path)?;
                copy_dir(src.as_fd(), dst.as_fd(), &path)?;
                finish_fd(src.as_fd(), dst.as_fd(), &st, &path)?;
            }
            SFlag::S_IFREG => {
                let src = open(from, &name, OFlag::O_RDONLY | OFlag::O_NONBLOCK, &path)?;
                // Swapped for something else since the stat: not what we looked at.
                let now = stat_fd(src.as_fd(), &path)?;
                if (now.st_dev, now.st_ino) != (st.st_dev, st.st_ino) {
                    return Err(err(&path, "open", Errno::ESTALE));
                }
                let dst = nix::fcntl::openat(
                    to,
                    name.as_c_str(),
                    OFlag::O_WRONLY
                        | OFlag::O_CREAT
                        | OFlag::O_EXCL
                        | OFlag::O_NOFOLLOW
                        | OFlag::O_CLOEXEC,
                    Mode::S_IRUSR | Mode::S_IWUSR,
                )
                .map_err(|e| err(&path, "create", e))?;
                let mut r = std::fs::File::from(src);
                let mut w = std::fs::File::from(dst);
                std::io::copy(&mut r, &mut w).map_err(|e| RootfsError::CopyUp {
                    op: "copy",
                    path: path.clone(),
                    errno: Errno::from_raw(e.raw_os_error().unwrap_or(libc::EIO)),
                })?;
                finish_fd(r.as_fd(), w.as_fd(), &st, &path)?;
            }
            SFlag::S_IFLNK => {
                let target =
                    readlinkat(from, name.as_c_str()).map_err(|e| err(&path, "readlink", e))?;
                symlinkat(target.as_os_str(), to, name.as_c_str())
                    .map_err(|e| err(&path, "symlink", e))?;
                chown_at(to, &name, &st, &path, "lchown")?;
                times_at(to, &name, &st, &path)?;
            }
            _ => {
                // Device nodes, fifos, sockets: recreated, never opened (a fifo would block).
                let perm = Mode::from_bits_truncate(st.st_mode & 0o7777);
                mknodat(to, name.as_c_str(), kind, perm, st.st_rdev)
                    .map_err(|e| err(&path, "mknod", e))?;
                chown_at(to, &name, &st, &path, "chown")?;
                // mknod applied the umask; chown may have cleared set-id bits.
                fchmodat(to, name.as_c_str(), perm, FchmodatFlags::NoFollowSymlink)
                    .map_err(|e| err(&path, "chmod", e))?;
                times_at(to, &name, &st, &path)?;
            }
        }
    }
    Ok(())
}

/// Owner, then mode (chown clears set-id bits), xattrs, and last the times (every
/// change before would bump them).
fn finish_fd(
    src: BorrowedFd<'_>,
    dst: BorrowedFd<'_>,
    st: &FileStat,
    path: &Path,
) -> Result<(), RootfsError> {
    fchown(
        dst,
        Some(Uid::from_raw(st.st_uid)),
        Some(Gid::from_raw(st.st_gid)),
    )
    .map_err(|e| err(path, "chown", e))?;
    fchmod(dst, Mode::from_bits_truncate(st.st_mode & 0o7777))
        .map_err(|e| err(path, "chmod", e))?;
    copy_xattrs(src, dst);
    let (atime, mtime) = times(st);
    futimens(dst, &atime, &mtime).map_err(|e| err(path, "utimes", e))
}

/// Extended attributes where the kernel lets us: user.* always, security.* and trusted.*
/// only with the privilege for them, which a container in its own user namespace may lack;
/// those are skipped as `cp -a` skips them (with a warning in its case, a debug line here).
fn copy_xattrs(src: BorrowedFd<'_>, dst: BorrowedFd<'_>) {
    let Ok(names) = crate::sys::xattr::list(src) else {
        return;
    };
    for name in names {
        let value = crate::sys::xattr::get(src, &name);
        if let Err(e) = value.and_then(|v| crate::sys::xattr::set(dst, &name, &v)) {
            tracing::debug!(xattr = ?name, error = %e, "tmpcopyup: xattr not copied");
        }
    }
}

/// Names in directory `dir`, without `.` and `..`, read in one go so the stream's fd is
/// closed before we descend.
fn entries(dir: BorrowedFd<'_>, at: &Path) -> Result<Vec<CString>, RootfsError> {
    let fd = open(dir, c".", OFlag::O_RDONLY | OFlag::O_DIRECTORY, at)?;
    let mut d = Dir::from_fd(fd).map_err(|e| err(at, "opendir", e))?;
    let mut names = Vec::new();
    for entry in d.iter() {
        let entry = entry.map_err(|e| err(at, "readdir", e))?;
        let name = entry.file_name();
        if name != c"." && name != c".." {
            names.push(name.to_owned());
        }
    }
    Ok(names)
}

fn open(
    dir: BorrowedFd<'_>,
    name: &CStr,
    flags: OFlag,
    path: &Path,
) -> Result<OwnedFd, RootfsError> {
    openat(
        dir,
        name,
        flags | OFlag::O_NOFOLLOW | OFlag::O_CLOEXEC,
        Mode::empty(),
    )
    .map_err(|e| err(path, "open", e))
}

fn stat_fd(fd: BorrowedFd<'_>, path: &Path) -> Result<FileStat, RootfsError> {
    fstat(fd).map_err(|e| err(path, "stat", e))
}

/// The entry `name` in `to` (never followed) gets `st`'s owner; `op` names the step in
/// errors (lchown for symlinks).
fn chown_at(
    to: BorrowedFd<'_>,
    name: &CStr,
    st: &FileStat,
    path: &Path,
    op: &'static str,
) -> Result<(), RootfsError> {
    fchownat(
        to,
        name,
        Some(Uid::from_raw(st.st_uid)),
        Some(Gid::from_raw(st.st_gid)),
        AtFlags::AT_SYMLINK_NOFOLLOW,
    )
    .map_err(|e| err(path, op, e))
}

/// The entry `name` in `to` (never followed) gets `st`'s access and modification times.
fn times_at(
    to: BorrowedFd<'_>,
    name: &CStr,
    st: &FileStat,
    path: &Path,
) -> Result<(), RootfsError> {
    let (atime, mtime) = times(st);
    utimensat(to, name, &atime, &mtime, UtimensatFlags::NoFollowSymlink)
        .map_err(|e| err(path, "utimes", e))
}

fn times(st: &FileStat) -> (TimeSpec, TimeSpec) {
    (
        TimeSpec::new(st.st_atime, st.st_atime_nsec),
        TimeSpec::new(st.st_mtime, st.st_mtime_nsec),
    )
}

fn err(path: &Path, op: &'static str, errno: Errno) -> RootfsError {
    RootfsError::CopyUp {
        op,
        path: PathBuf::from(path),
        errno,
    }
}

#[cfg(test)]
mod tests {
    use std::os::unix::fs::{MetadataExt, PermissionsExt};

    use super::*;

    fn dir_fd(p: &Path) -> OwnedFd {
        nix::fcntl::open(p, OFlag::O_RDONLY | OFlag::O_DIRECTORY, Mode::empty()).unwrap()
    }

    #[test]
    fn copies_types_modes_times_and_user_xattrs() {
        let tmp = tempfile::tempdir().unwrap();
        let (src, dst) = (tmp.path().join("src"), tmp.path().join("dst"));
        std::fs::create_dir_all(src.join("d/e")).unwrap();
        std::fs::create_dir(&dst).unwrap();
        std::fs::write(src.join("d/f"), "content").unwrap();
        std::fs::set_permissions(src.join("d/f"), PermissionsExt::from_mode(0o4751)).unwrap();
        std::os::unix::fs::symlink("../../outside", src.join("d/link")).unwrap();
        nix::unistd::mkfifo(&src.join("fifo"), Mode::S_IRUSR).unwrap();
        std::fs::set_permissions(src.join("fifo"), PermissionsExt::from_mode(0o620)).unwrap();
        let f = std::fs::File::open(src.join("d/f")).unwrap();
        let has_xattr = crate::sys::xattr::set(f.as_fd(), c"user.berth", b"v").is_ok();
        let old = TimeSpec::new(1_000_000, 5);
        utimensat(
            nix::fcntl::AT_FDCWD,
            &src.join("d"),
            &old,
            &old,
            UtimensatFlags::NoFollowSymlink,
        )
        .unwrap();

        copy_tree(dir_fd(&src).as_fd(), dir_fd(&dst).as_fd(), Path::new("/x")).unwrap();

        assert_eq!(std::fs::read_to_string(dst.join("d/f")).unwrap(), "content");
        let meta = std::fs::metadata(dst.join("d/f")).unwrap();
        // Set-uid survives: the mode is applied after the chown.
        assert_eq!(meta.mode() & 0o7777, 0o4751);
        assert!(dst.join("d/e").is_dir());
        assert_eq!(
            std::fs::read_link(dst.join("d/link")).unwrap(),
            Path::new("../../outside")
        );
        let fifo = std::fs::symlink_metadata(dst.join("fifo")).unwrap();
        assert_eq!(fifo.mode() & 0o170000, libc::S_IFIFO);
        assert_eq!(fifo.mode() & 0o7777, 0o620);
        let d = std::fs::metadata(dst.join("d")).unwrap();
        assert_eq!((d.mtime(), d.mtime_nsec()), (1_000_000, 5));
        if has_xattr {
            let g = std::fs::File::open(dst.join("d/f")).unwrap();
            assert_eq!(
                crate::sys::xattr::get(g.as_fd(), c"user.berth").unwrap(),
                b"v"
            );
        }
    }

    #[test]
    fn refuses_to_copy_a_directory_into_itself() {
        let tmp = tempfile::tempdir().unwrap();
        std::fs::write(tmp.path().join("f"), "keep").unwrap();
        let fd = dir_fd(tmp.path());
        let e = copy_tree(fd.as_fd(), fd.as_fd(), Path::new("/run")).unwrap_err();
        assert!(e.to_string().contains("tmpcopyup"), "{e}");
        assert_eq!(
            std::fs::read_to_string(tmp.path().join("f")).unwrap(),
            "keep"
        );
    }
}
