//! The seam between the container set-up logic and the kernel. Rootfs, device and
//! namespace code call these methods instead of nix directly, so unit tests can run that
//! logic unprivileged against [`RecordingSyscall`] and check the exact calls and order.

mod linux;
mod recording;

use std::os::fd::BorrowedFd;
use std::path::{Path, PathBuf};

use nix::mount::{MntFlags, MsFlags};
use nix::sched::CloneFlags;
use nix::sys::stat::{Mode, SFlag};

pub use linux::LinuxSyscall;
pub use recording::{Call, RecordingSyscall};

/// A failed privileged call, with what was attempted.
#[derive(Debug, thiserror::Error)]
#[error("{op} {}: {}", target.display(), errno_text(*source))]
pub struct SyscallError {
    pub op: &'static str,
    pub target: PathBuf,
    #[source]
    pub source: nix::errno::Errno,
}

/// Go-style lowercase errno text ("no such file or directory"), the shape runc's
/// messages have and that docker matches on.
pub fn errno_text(errno: nix::errno::Errno) -> String {
    let desc = errno.desc();
    let mut chars = desc.chars();
    match chars.next() {
        Some(first) => first.to_lowercase().chain(chars).collect(),
        None => String::new(),
    }
}

pub type SysResult = Result<(), SyscallError>;

/// Privileged operations used while building the container.
pub trait Syscall {
    fn mount(
        &self,
        source: Option<&Path>,
        target: &Path,
        fstype: Option<&str>,
        flags: MsFlags,
        data: Option<&str>,
    ) -> SysResult;
    fn umount2(&self, target: &Path, flags: MntFlags) -> SysResult;
    fn pivot_root(&self, new_root: &Path, put_old: &Path) -> SysResult;
    fn chdir(&self, path: &Path) -> SysResult;
    fn chroot(&self, path: &Path) -> SysResult;
    fn mknod(&self, path: &Path, kind: SFlag, perm: Mode, dev: u64) -> SysResult;
    fn chown(&self, path: &Path, uid: u32, gid: u32) -> SysResult;
    fn symlink(&self, target: &Path, link: &Path) -> SysResult;
    fn sethostname(&self, name: &str) -> SysResult;
    fn setdomainname(&self, name: &str) -> SysResult;
    fn unshare(&self, flags: CloneFlags) -> SysResult;
    /// Per-mount flags of the mount holding `path` that a bind remount must keep
    /// (nosuid, nodev, noexec, atime): in a user namespace the kernel locks the flags of
    /// mounts inherited from the host (mount_namespaces(7)) and refuses to clear them.
    fn kept_mount_flags(&self, path: &Path) -> MsFlags;
    /// The path by which calls reach exactly the file `fd` is open on: `/proc/self/fd/N`
    /// (a magic link, so a symlink swapped in after the fd was resolved cannot redirect
    /// a mount). The fake answers the file's real path so recorded calls stay readable.
    fn fd_path(&self, fd: BorrowedFd<'_>) -> PathBuf;
    /// Whether `fd` is the null character device (1:3). Masking binds the container's
    /// /dev/null over files; anything else there (a symlink swapped in, a regular file)
    /// would expose what it names instead (runc's CVE-2025-31133 check).
    fn is_null_device(&self, fd: BorrowedFd<'_>) -> bool;
    /// tmpcopyup: copies the directory `from` (the one a tmpfs now covers) into `to` (the
    /// new tmpfs); `dest` is the container path, for messages.
    fn copy_up(
        &self,
        from: BorrowedFd<'_>,
        to: BorrowedFd<'_>,
        dest: &Path,
    ) -> Result<(), crate::rootfs::RootfsError>;
}
