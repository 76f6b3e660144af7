//! The real implementation of [`Syscall`].

use std::os::fd::{AsRawFd, BorrowedFd};
use std::path::{Path, PathBuf};

use nix::mount::{MntFlags, MsFlags};
use nix::sched::CloneFlags;
use nix::sys::stat::{Mode, SFlag};
use nix::unistd::{Gid, Uid};

use super::{SysResult, Syscall, SyscallError};

/// Calls the kernel.
#[derive(Debug, Default, Clone, Copy)]
pub struct LinuxSyscall;

fn wrap(op: &'static str, target: &Path, res: nix::Result<()>) -> SysResult {
    res.map_err(|source| SyscallError {
        op,
        target: target.to_path_buf(),
        source,
    })
}

impl Syscall for LinuxSyscall {
    fn mount(
        &self,
        source: Option<&Path>,
        target: &Path,
        fstype: Option<&str>,
        flags: MsFlags,
        data: Option<&str>,
    ) -> SysResult {
        wrap(
            "mount",
            target,
            nix::mount::mount(source, target, fstype, flags, data),
        )
    }

    fn umount2(&self, target: &Path, flags: MntFlags) -> SysResult {
        wrap("umount", target, nix::mount::umount2(target, flags))
    }

    fn pivot_root(&self, new_root: &Path, put_old: &Path) -> SysResult {
        wrap(
            "pivot_root",
            new_root,
            nix::unistd::pivot_root(new_root, put_old),
        )
    }

    fn chdir(&self, path: &Path) -> SysResult {
        wrap("chdir", path, nix::unistd::chdir(path))
    }

    fn chroot(&self, path: &Path) -> SysResult {
        wrap("chroot", path, nix::unistd::chroot(path))
    }

    fn mknod(&self, path: &Path, kind: SFlag, perm: Mode, dev: u64) -> SysResult {
        wrap("mknod", path, nix::sys::stat::mknod(path, kind, perm, dev))
    }

    fn chown(&self, path: &Path, uid: u32, gid: u32) -> SysResult {
        let res = nix::unistd::chown(path, Some(Uid::from_raw(uid)), Some(Gid::from_raw(gid)));
        wrap("chown", path, res)
    }

    fn symlink(&self, target: &Path, link: &Path) -> SysResult {
        wrap(
            "symlink",
            link,
            nix::unistd::symlinkat(target, nix::fcntl::AT_FDCWD, link),
        )
    }

    fn sethostname(&self, name: &str) -> SysResult {
        wrap(
            "sethostname",
            Path::new(name),
            nix::unistd::sethostname(name),
        )
    }

    fn setdomainname(&self, name: &str) -> SysResult {
        wrap(
            "setdomainname",
            Path::new(name),
            crate::sys::set_domainname(name),
        )
    }

    fn unshare(&self, flags: CloneFlags) -> SysResult {
        wrap(
            "unshare",
            Path::new("namespaces"),
            nix::sched::unshare(flags),
        )
    }

    fn fd_path(&self, fd: BorrowedFd<'_>) -> PathBuf {
        PathBuf::from(format!("/proc/self/fd/{}", fd.as_raw_fd()))
    }

    fn is_null_device(&self, fd: BorrowedFd<'_>) -> bool {
        nix::sys::stat::fstat(fd).is_ok_and(|st| {
            SFlag::from_bits_truncate(st.st_mode) & SFlag::S_IFMT == SFlag::S_IFCHR
                && st.st_rdev == nix::sys::stat::makedev(1, 3)
        })
    }

    fn copy_up(
        &self,
        from: BorrowedFd<'_>,
        to: BorrowedFd<'_>,
        dest: &Path,
    ) -> Result<(), crate::rootfs::RootfsError> {
        crate::rootfs::copyup::copy_tree(from, to, dest)
    }

    fn kept_mount_flags(&self, path: &Path) -> MsFlags {
        use nix::sys::statvfs::{statvfs, FsFlags};
        let Ok(st) = statvfs(path) else {
            return MsFlags::empty();
        };
        let f = st.flags();
        let mut out = MsFlags::empty();
        for (fs, ms) in [
            (FsFlags::ST_NOSUID, MsFlags::MS_NOSUID),
            (FsFlags::ST_NODEV, MsFlags::MS_NODEV),
            (FsFlags::ST_NOEXEC, MsFlags::MS_NOEXEC),
            (FsFlags::ST_NOATIME, MsFlags::MS_NOATIME),
            (FsFlags::ST_NODIRATIME, MsFlags::MS_NODIRATIME),
            (FsFlags::ST_RELATIME, MsFlags::MS_RELATIME),
        ] {
            if f.contains(fs) {
                out |= ms;
            }
        }
        out
    }
}
