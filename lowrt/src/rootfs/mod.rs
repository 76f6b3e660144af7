//! Building the container's root filesystem inside its new mount namespace: propagation,
//! the rootfs bind, every spec mount, /dev, pivot_root; then, after the pivot, read-only
//! and masked paths and a read-only root. All kernel calls go through [`Syscall`].

pub mod copyup;
mod devices;
pub mod idmap;
pub mod inroot;
mod mounts;
pub mod options;
pub mod paths;

use std::io;
use std::os::fd::{AsFd, OwnedFd};
use std::path::{Path, PathBuf};

use nix::errno::Errno;
use nix::mount::{MntFlags, MsFlags};
use nix::sys::stat::SFlag;
use oci_spec::runtime::{LinuxDevice, Mount};

use crate::syscall::{Syscall, SyscallError};

pub use devices::DEFAULT_DEVICES;

#[derive(Debug, thiserror::Error)]
pub enum RootfsError {
    #[error(transparent)]
    Sys(#[from] SyscallError),
    #[error("{op} {}: {source}", path.display())]
    Io {
        op: &'static str,
        path: PathBuf,
        source: io::Error,
    },
    #[error("too many levels of symbolic links resolving {} in the rootfs", path.display())]
    SymlinkLoop { path: PathBuf },
    #[error("bind mount source {} of {}: {source}", src.display(), dest.display())]
    BindSource {
        src: PathBuf,
        dest: PathBuf,
        source: io::Error,
    },
    #[error("mount of type {typ:?} at {} needs a source", dest.display())]
    NoSource { typ: String, dest: PathBuf },
    #[error("attach the idmapped mount at {}: {}", dest.display(), crate::syscall::errno_text(*errno))]
    MoveMount { dest: PathBuf, errno: Errno },
    #[error("tmpcopyup: {op} {}: {}", path.display(), crate::syscall::errno_text(*errno))]
    CopyUp {
        op: &'static str,
        path: PathBuf,
        errno: Errno,
    },
    #[error("{op} {} inside the rootfs: {reason}", path.display())]
    Resolve {
        path: PathBuf,
        op: &'static str,
        reason: String,
        /// The kernel's answer, when the failure was one.
        errno: Option<Errno>,
    },
}

pub(crate) fn io_err<'a>(
    op: &'static str,
    path: &'a Path,
) -> impl FnOnce(io::Error) -> RootfsError + 'a {
    move |source| RootfsError::Io {
        op,
        path: path.to_path_buf(),
        source,
    }
}

/// Everything the rootfs phase needs, already validated.
pub struct RootfsPlan<'a> {
    /// The rootfs on the host, absolute.
    pub rootfs: &'a Path,
    /// Relative bind sources are relative to the bundle (runc does the same).
    pub bundle: &'a Path,
    pub mounts: &'a [Mount],
    /// Per mount (or empty): the detached idmapped tree the runtime made for it.
    pub idmapped: &'a [Option<OwnedFd>],
    /// rootfsPropagation, default rslave.
    pub propagation: MsFlags,
    pub devices: &'a [LinuxDevice],
    /// Host cgroup directories to expose at a `cgroup` mount: (name, dir).
    pub cgroup_sources: Vec<(String, PathBuf)>,
    pub new_cgroupns: bool,
    pub new_netns: bool,
}

/// Steps before pivot_root, in order. Each step's comment says why it is where it is.
pub fn prepare(sys: &dyn Syscall, plan: &RootfsPlan<'_>) -> Result<(), RootfsError> {
    // 1. Stop our mounts from propagating to the host (and vice versa unless asked for):
    //    everything below is done in a copy of the host's mount tree.
    sys.mount(None, Path::new("/"), None, plan.propagation, None)?;
    // 1b. With a shared propagation requested, the rootfs' parent mount may be shared,
    //     which pivot_root(2) refuses (EINVAL); make just that mount private, as runc does.
    if plan.propagation.contains(MsFlags::MS_SHARED) {
        if let Some(parent) = shared_parent_mount(plan.rootfs) {
            sys.mount(None, &parent, None, MsFlags::MS_PRIVATE, None)?;
        }
    }
    // 2. pivot_root(2) needs the new root to be a mount point; the rbind also gives us a
    //    mount whose flags are the container's own.
    sys.mount(
        Some(plan.rootfs),
        plan.rootfs,
        Some("bind"),
        MsFlags::MS_BIND | MsFlags::MS_REC,
        None,
    )?;
    // 3. Spec mounts in config order (later mounts may sit on earlier ones).
    //    Destinations are resolved by fd inside the rootfs (CVE-2021-30465).
    let root = inroot::Root::new(plan.rootfs)?;
    for (i, m) in plan.mounts.iter().enumerate() {
        let tree = plan.idmapped.get(i).and_then(Option::as_ref);
        mounts::mount_entry(sys, plan, &root, m, tree)?;
    }
    // 4. /dev contents, unless the user bind-mounted the host's /dev.
    let dev_is_bind = plan.mounts.iter().any(|m| {
        paths::clean(m.destination()) == Path::new("/dev")
            && options::parse(m.options().as_deref().unwrap_or(&[])).is_bind()
    });
    if !dev_is_bind {
        devices::create_devices(sys, &root, plan.devices)?;
        devices::create_symlinks(sys, &root)?;
    }
    // pivot_root is a separate init phase: hooks run between the two.
    Ok(())
}

/// The mount point holding `path` (longest prefix in /proc/self/mountinfo), if shared.
fn shared_parent_mount(path: &Path) -> Option<PathBuf> {
    let text = std::fs::read_to_string("/proc/self/mountinfo").ok()?;
    let mut best: Option<(PathBuf, bool)> = None;
    for line in text.lines() {
        let Some((left, _)) = line.split_once(" - ") else {
            continue;
        };
        let fields: Vec<&str> = left.split(' ').collect();
        if fields.len() < 6 {
            continue;
        }
        let mountpoint = PathBuf::from(fields[4]);
        let longer = best
            .as_ref()
            .is_none_or(|(b, _)| mountpoint.as_os_str().len() >= b.as_os_str().len());
        if path.starts_with(&mountpoint) && longer {
            let shared = fields[6..].iter().any(|f| f.starts_with("shared:"));
            best = Some((mountpoint, shared));
        }
    }
    best.filter(|(_, shared)| *shared).map(|(m, _)| m)
}

/// runc's pivot_root trick: pivot_root(".", ".") stacks the old root on top of the new
/// one, so no put_old directory is needed inside the container; the old root is then made
/// rslave (so our unmount does not propagate to the host) and lazily detached.
pub fn pivot_root(sys: &dyn Syscall, rootfs: &Path) -> Result<(), RootfsError> {
    sys.chdir(rootfs)?;
    sys.pivot_root(Path::new("."), Path::new("."))?;
    sys.mount(
        None,
        Path::new("."),
        None,
        MsFlags::MS_SLAVE | MsFlags::MS_REC,
        None,
    )?;
    sys.umount2(Path::new("."), MntFlags::MNT_DETACH)?;
    sys.chdir(Path::new("/"))?;
    Ok(())
}

/// `--no-pivot` (runc's msMoveRoot): for a rootfs where pivot_root(2) is refused (on the
/// initramfs). Full proc and sysfs mounts outside the rootfs are detached first (made
/// slave so nothing propagates back; covered with a tmpfs where detaching is refused):
/// they would stay reachable through a chroot escape and make the kernel's "fully
/// visible" check pass for a container that should not mount proc. Then the rootfs is
/// moved onto / and we chroot into it. Weaker than pivot_root: the old root is still
/// there under the moved mount.
pub fn move_root(sys: &dyn Syscall, rootfs: &Path) -> Result<(), RootfsError> {
    let text = std::fs::read_to_string("/proc/self/mountinfo")
        .map_err(io_err("read", Path::new("/proc/self/mountinfo")))?;
    let mut exposed = Vec::new();
    for line in text.lines() {
        let Some((left, right)) = line.split_once(" - ") else {
            continue;
        };
        let fields: Vec<&str> = left.split(' ').collect();
        let fstype = right.split(' ').next().unwrap_or("");
        if fields.len() < 5 || fields[3] != "/" || !matches!(fstype, "proc" | "sysfs") {
            continue;
        }
        let point = PathBuf::from(fields[4]);
        if !point.starts_with(rootfs) {
            exposed.push(point);
        }
    }
    // Deepest first, so a mount is never detached from under a later one.
    exposed.sort_by_key(|p| std::cmp::Reverse(p.components().count()));
    for p in exposed {
        sys.mount(None, &p, None, MsFlags::MS_SLAVE | MsFlags::MS_REC, None)?;
        match sys.umount2(&p, MntFlags::MNT_DETACH) {
            Err(e) if matches!(e.source, Errno::EINVAL | Errno::EPERM) => {
                sys.mount(
                    Some(Path::new("tmpfs")),
                    &p,
                    Some("tmpfs"),
                    MsFlags::empty(),
                    None,
                )?;
            }
            other => other?,
        }
    }
    sys.chdir(rootfs)?;
    sys.mount(Some(rootfs), Path::new("/"), None, MsFlags::MS_MOVE, None)?;
    sys.chroot(Path::new("."))?;
    sys.chdir(Path::new("/"))?;
    Ok(())
}

/// Steps after pivot_root (paths are container paths below `root`, "/" in production).
pub fn finalize(
    sys: &dyn Syscall,
    root: &Path,
    readonly_root: bool,
    readonly_paths: &[String],
    masked_paths: &[String],
) -> Result<(), RootfsError> {
    if readonly_root {
        let keep = sys.kept_mount_flags(root);
        let flags = keep | MsFlags::MS_BIND | MsFlags::MS_REMOUNT | MsFlags::MS_RDONLY;
        sys.mount(None, root, None, flags, None)?;
    }
    // Resolved by fd inside the root like mount destinations: a path that is (or runs
    // through) a symlink stays in the container, a magic link (/proc/N/root/...) is
    // refused rather than followed, and the mount targets exactly what was checked.
    let fs_root = inroot::Root::new(root)?;
    for p in readonly_paths {
        let Some(fd) = open_existing(&fs_root, p)? else {
            continue;
        };
        let path = sys.fd_path(fd.as_fd());
        sys.mount(
            Some(&path),
            &path,
            None,
            MsFlags::MS_BIND | MsFlags::MS_REC,
            None,
        )?;
        // The new mount, not the directory under it.
        let fd = fs_root.open(Path::new(p))?;
        let path = sys.fd_path(fd.as_fd());
        let ro = sys.kept_mount_flags(&path)
            | MsFlags::MS_BIND
            | MsFlags::MS_REMOUNT
            | MsFlags::MS_RDONLY
            | MsFlags::MS_REC;
        sys.mount(Some(&path), &path, None, ro, None)?;
    }
    // Masking comes last so a masked path under a read-only one is still masked.
    for p in masked_paths {
        let Some(fd) = open_existing(&fs_root, p)? else {
            continue;
        };
        let path = sys.fd_path(fd.as_fd());
        let is_dir = nix::sys::stat::fstat(&fd)
            .map(|st| SFlag::from_bits_truncate(st.st_mode) & SFlag::S_IFMT == SFlag::S_IFDIR)
            .map_err(|e| inroot::resolve_err(Path::new(p), "stat", e))?;
        if is_dir {
            sys.mount(
                Some(Path::new("tmpfs")),
                &path,
                Some("tmpfs"),
                MsFlags::MS_RDONLY,
                None,
            )?;
        } else {
            let null = fs_root.open(Path::new("/dev/null"))?;
            if !sys.is_null_device(null.as_fd()) {
                return Err(RootfsError::Resolve {
                    path: PathBuf::from(p),
                    op: "mask",
                    reason: "/dev/null in the container is not the null device".into(),
                    errno: None,
                });
            }
            let null = sys.fd_path(null.as_fd());
            sys.mount(Some(&null), &path, None, MsFlags::MS_BIND, None)?;
        }
    }
    Ok(())
}

/// An O_PATH fd of a read-only or masked path, or None when it does not exist (runc
/// skips those).
fn open_existing(root: &inroot::Root, p: &str) -> Result<Option<OwnedFd>, RootfsError> {
    match root.open(Path::new(p)) {
        Ok(fd) => Ok(Some(fd)),
        Err(RootfsError::Resolve {
            errno: Some(Errno::ENOENT),
            ..
        }) => Ok(None),
        Err(e) => Err(e),
    }
}

#[cfg(test)]
mod tests;
