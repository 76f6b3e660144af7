//! A fake [`Syscall`] that records every call and succeeds, for unprivileged unit tests.
//! Calls that would change the filesystem tree the logic later inspects (symlink, mknod)
//! are mirrored with plain files so follow-up path resolution behaves like the real thing.

use std::cell::RefCell;
use std::os::fd::{AsRawFd, BorrowedFd};
use std::path::{Path, PathBuf};

use nix::mount::{MntFlags, MsFlags};
use nix::sched::CloneFlags;
use nix::sys::stat::{Mode, SFlag};

use super::{SysResult, Syscall};

/// One recorded call.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Call {
    Mount {
        source: Option<PathBuf>,
        target: PathBuf,
        fstype: Option<String>,
        flags: MsFlags,
        data: Option<String>,
    },
    Umount {
        target: PathBuf,
        flags: MntFlags,
    },
    PivotRoot {
        new_root: PathBuf,
        put_old: PathBuf,
    },
    Chdir(PathBuf),
    Chroot(PathBuf),
    Mknod {
        path: PathBuf,
        kind: SFlag,
        dev: u64,
    },
    Chown {
        path: PathBuf,
        uid: u32,
        gid: u32,
    },
    Symlink {
        target: PathBuf,
        link: PathBuf,
    },
    Hostname(String),
    Domainname(String),
    Unshare(CloneFlags),
    /// tmpcopyup of the mount at this container path.
    CopyUp(PathBuf),
}

/// Records calls in order.
#[derive(Debug, Default)]
pub struct RecordingSyscall {
    calls: RefCell<Vec<Call>>,
}

impl RecordingSyscall {
    pub fn calls(&self) -> Vec<Call> {
        self.calls.borrow().clone()
    }

    /// Just the mounts, as (target, fstype, flags).
    pub fn mounts(&self) -> Vec<(PathBuf, Option<String>, MsFlags)> {
        self.calls
            .borrow()
            .iter()
            .filter_map(|c| match c {
                Call::Mount {
                    target,
                    fstype,
                    flags,
                    ..
                } => Some((target.clone(), fstype.clone(), *flags)),
                _ => None,
            })
            .collect()
    }

    fn push(&self, call: Call) -> SysResult {
        self.calls.borrow_mut().push(call);
        Ok(())
    }
}

impl Syscall for RecordingSyscall {
    fn mount(
        &self,
        source: Option<&Path>,
        target: &Path,
        fstype: Option<&str>,
        flags: MsFlags,
        data: Option<&str>,
    ) -> SysResult {
        self.push(Call::Mount {
            source: source.map(Path::to_path_buf),
            target: target.to_path_buf(),
            fstype: fstype.map(str::to_owned),
            flags,
            data: data.map(str::to_owned),
        })
    }

    fn umount2(&self, target: &Path, flags: MntFlags) -> SysResult {
        self.push(Call::Umount {
            target: target.to_path_buf(),
            flags,
        })
    }

    fn pivot_root(&self, new_root: &Path, put_old: &Path) -> SysResult {
        self.push(Call::PivotRoot {
            new_root: new_root.to_path_buf(),
            put_old: put_old.to_path_buf(),
        })
    }

    fn chdir(&self, path: &Path) -> SysResult {
        self.push(Call::Chdir(path.to_path_buf()))
    }

    fn chroot(&self, path: &Path) -> SysResult {
        self.push(Call::Chroot(path.to_path_buf()))
    }

    fn mknod(&self, path: &Path, kind: SFlag, _perm: Mode, dev: u64) -> SysResult {
        let _ = std::fs::File::create(path);
        self.push(Call::Mknod {
            path: path.to_path_buf(),
            kind,
            dev,
        })
    }

    fn chown(&self, path: &Path, uid: u32, gid: u32) -> SysResult {
        self.push(Call::Chown {
            path: path.to_path_buf(),
            uid,
            gid,
        })
    }

    fn symlink(&self, target: &Path, link: &Path) -> SysResult {
        let _ = std::os::unix::fs::symlink(target, link);
        self.push(Call::Symlink {
            target: target.to_path_buf(),
            link: link.to_path_buf(),
        })
    }

    fn sethostname(&self, name: &str) -> SysResult {
        self.push(Call::Hostname(name.to_owned()))
    }

    fn setdomainname(&self, name: &str) -> SysResult {
        self.push(Call::Domainname(name.to_owned()))
    }

    fn unshare(&self, flags: CloneFlags) -> SysResult {
        self.push(Call::Unshare(flags))
    }

    fn kept_mount_flags(&self, _path: &Path) -> MsFlags {
        MsFlags::empty()
    }

    /// The fake's /dev/null is the plain file its mknod made.
    fn is_null_device(&self, _fd: BorrowedFd<'_>) -> bool {
        true
    }

    /// Nothing is mounted here, so the source and the target are the same directory.
    fn copy_up(
        &self,
        _from: BorrowedFd<'_>,
        _to: BorrowedFd<'_>,
        dest: &Path,
    ) -> Result<(), crate::rootfs::RootfsError> {
        Ok(self.push(Call::CopyUp(dest.to_path_buf()))?)
    }

    fn fd_path(&self, fd: BorrowedFd<'_>) -> PathBuf {
        let link = format!("/proc/self/fd/{}", fd.as_raw_fd());
        std::fs::read_link(&link).unwrap_or_else(|_| PathBuf::from(link))
    }
}
