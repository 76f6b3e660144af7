//! One spec mount: pick the mount(2) calls for its type and options.

use std::os::fd::{AsFd, OwnedFd};
use std::os::unix::fs::PermissionsExt;
use std::path::{Path, PathBuf};

use nix::errno::Errno;
use nix::fcntl::OFlag;
use nix::mount::MsFlags;
use nix::sys::stat::Mode;
use oci_spec::runtime::Mount;

use super::inroot::{Kind, Root};
use super::options::{self, MountOptions};
use super::{io_err, RootfsError, RootfsPlan};
use crate::syscall::Syscall;

/// Mounts one spec entry. The destination is resolved and created inside the rootfs by
/// fd ([`Root`]) and every call targets that fd's `/proc/self/fd/N`; after the first mount
/// the destination is opened again, so remounts and propagation changes act on the new
/// mount and not on the directory under it.
pub(super) fn mount_entry(
    sys: &dyn Syscall,
    plan: &RootfsPlan<'_>,
    root: &Root,
    m: &Mount,
    idmapped: Option<&OwnedFd>,
) -> Result<(), RootfsError> {
    let opts = options::parse(m.options().as_deref().unwrap_or(&[]));
    let typ = m.typ().as_deref().unwrap_or("");
    // runc cleans the destination lexically first (filepath.Clean): `/missing/../x` is
    // `/x`, and no ".." is left for the in-root resolution to refuse.
    let dest = &super::paths::clean(m.destination());
    let target = if opts.is_bind() {
        bind(sys, plan, root, m, dest, &opts, idmapped)?
    } else {
        let fd = root.create(dest, Kind::Dir)?;
        let path = sys.fd_path(fd.as_fd());
        match typ {
            "cgroup" | "cgroup2" => cgroup(sys, plan, root, dest, &opts, &path)?,
            "sysfs" => sysfs(sys, plan, root, dest, &opts, &path)?,
            "tmpfs" => tmpfs(sys, root, m, dest, &opts, &path)?,
            _ => {
                let source = m.source().clone().unwrap_or_else(|| PathBuf::from(typ));
                let data = opts.data_string();
                sys.mount(Some(&source), &path, Some(typ), opts.flags, data.as_deref())?;
                root.open(dest)?
            }
        }
    };
    let path = sys.fd_path(target.as_fd());
    for flag in &opts.propagation {
        sys.mount(None, &path, None, *flag, None)?;
    }
    Ok(())
}

/// runc's order: mount read-write, copy the covered directory in (`tmpcopyup`), give
/// the tmpfs the mode of that directory (an image's 0755 /tmp stays 0755; images and
/// tests rely on it), and only then remount read-only if asked.
fn tmpfs(
    sys: &dyn Syscall,
    root: &Root,
    m: &Mount,
    dest: &Path,
    opts: &MountOptions,
    target: &Path,
) -> Result<OwnedFd, RootfsError> {
    let existing_mode = std::fs::metadata(target)
        .ok()
        .map(|m| m.permissions().mode() & 0o7777);
    // Opened before the mount hides it: the copy reads exactly the covered directory.
    let below = if opts.copy_up {
        Some(open_dir(target, dest)?)
    } else {
        None
    };
    let source = m.source().clone().unwrap_or_else(|| PathBuf::from("tmpfs"));
    let data = opts.data_string();
    let rw = opts.flags & !MsFlags::MS_RDONLY;
    sys.mount(Some(&source), target, Some("tmpfs"), rw, data.as_deref())?;
    let after = root.open(dest)?;
    let path = sys.fd_path(after.as_fd());
    if let Some(below) = below {
        let new = open_dir(&path, dest)?;
        sys.copy_up(below.as_fd(), new.as_fd(), dest)?;
    }
    if let Some(mode) = existing_mode {
        std::fs::set_permissions(&path, std::fs::Permissions::from_mode(mode))
            .map_err(io_err("chmod", dest))?;
    }
    if opts.flags.contains(MsFlags::MS_RDONLY) {
        sys.mount(None, &path, None, opts.flags | MsFlags::MS_REMOUNT, None)?;
    }
    Ok(after)
}

/// A readable fd of the directory at `path` (an fd path of something already resolved).
fn open_dir(path: &Path, dest: &Path) -> Result<OwnedFd, RootfsError> {
    nix::fcntl::open(
        path,
        OFlag::O_RDONLY | OFlag::O_DIRECTORY | OFlag::O_CLOEXEC,
        Mode::empty(),
    )
    .map_err(|e| super::inroot::resolve_err(dest, "open", e))
}

/// Returns an fd of the new mount.
fn bind(
    sys: &dyn Syscall,
    plan: &RootfsPlan<'_>,
    root: &Root,
    m: &Mount,
    dest: &Path,
    opts: &MountOptions,
    idmapped: Option<&OwnedFd>,
) -> Result<OwnedFd, RootfsError> {
    let source = match m.source() {
        Some(s) if s.is_absolute() => s.clone(),
        Some(s) => plan.bundle.join(s),
        None => {
            return Err(RootfsError::NoSource {
                typ: "bind".into(),
                dest: dest.to_path_buf(),
            })
        }
    };
    let meta = std::fs::metadata(&source).map_err(|e| RootfsError::BindSource {
        src: source.clone(),
        dest: dest.to_path_buf(),
        source: e,
    })?;
    let kind = if meta.is_dir() { Kind::Dir } else { Kind::File };
    let fd = root.create(dest, kind)?;
    match idmapped {
        Some(tree) => crate::sys::move_mount_to(tree.as_fd(), fd.as_fd()).map_err(|errno| {
            RootfsError::MoveMount {
                dest: dest.to_path_buf(),
                errno,
            }
        })?,
        None => sys.mount(
            Some(&source),
            &sys.fd_path(fd.as_fd()),
            Some("bind"),
            opts.flags & (MsFlags::MS_BIND | MsFlags::MS_REC),
            None,
        )?,
    }
    let after = root.open(dest)?;
    // A bind mount ignores ro/nosuid/... on the first call; they need a remount
    // (mount(2), "Creating a bind mount").
    let extra = opts.remount_flags();
    if !extra.is_empty() {
        let path = sys.fd_path(after.as_fd());
        sys.mount(
            Some(&path),
            &path,
            None,
            extra | sys.kept_mount_flags(&path) | MsFlags::MS_BIND | MsFlags::MS_REMOUNT,
            None,
        )?;
    }
    Ok(after)
}

/// sysfs can only be mounted by the owner of the network namespace; without a new netns
/// fall back to a recursive bind of the host's /sys, as runc does.
fn sysfs(
    sys: &dyn Syscall,
    plan: &RootfsPlan<'_>,
    root: &Root,
    dest: &Path,
    opts: &MountOptions,
    target: &Path,
) -> Result<OwnedFd, RootfsError> {
    match sys.mount(
        Some(Path::new("sysfs")),
        target,
        Some("sysfs"),
        opts.flags,
        None,
    ) {
        Err(e) if e.source == Errno::EPERM && !plan.new_netns => {
            sys.mount(
                Some(Path::new("/sys")),
                target,
                Some("bind"),
                MsFlags::MS_BIND | MsFlags::MS_REC,
                None,
            )?;
            let after = root.open(dest)?;
            if opts.flags.contains(MsFlags::MS_RDONLY) {
                let path = sys.fd_path(after.as_fd());
                let ro = sys.kept_mount_flags(&path)
                    | MsFlags::MS_BIND
                    | MsFlags::MS_REMOUNT
                    | MsFlags::MS_RDONLY;
                sys.mount(Some(&path), &path, None, ro, None)?;
            }
            Ok(after)
        }
        Err(e) => Err(e.into()),
        Ok(()) => root.open(dest),
    }
}

/// The container's view of its cgroups. v1: a tmpfs with one bind of the container's own
/// directory per hierarchy (and runc's symlinks for co-mounted controllers such as
/// cpu,cpuacct), made read-only afterwards if asked. v2: a fresh cgroup2 mount inside a
/// new cgroup namespace, else a bind of the container's directory.
fn cgroup(
    sys: &dyn Syscall,
    plan: &RootfsPlan<'_>,
    root: &Root,
    spec_dest: &Path,
    opts: &MountOptions,
    target: &Path,
) -> Result<OwnedFd, RootfsError> {
    let bind_flags = MsFlags::MS_BIND | MsFlags::MS_REC;
    let ro_remount = opts.remount_flags() | MsFlags::MS_BIND | MsFlags::MS_REMOUNT;
    if let [(name, dir)] = plan.cgroup_sources.as_slice() {
        if name.is_empty() {
            if plan.new_cgroupns {
                sys.mount(
                    Some(Path::new("cgroup2")),
                    target,
                    Some("cgroup2"),
                    opts.flags,
                    None,
                )?;
                return root.open(spec_dest);
            }
            sys.mount(Some(dir), target, Some("bind"), bind_flags, None)?;
            let after = root.open(spec_dest)?;
            let dest = sys.fd_path(after.as_fd());
            let keep = sys.kept_mount_flags(&dest);
            sys.mount(Some(&dest), &dest, None, ro_remount | keep, None)?;
            return Ok(after);
        }
    }
    let tmpfs_flags = MsFlags::MS_NOSUID | MsFlags::MS_NODEV | MsFlags::MS_NOEXEC;
    sys.mount(
        Some(Path::new("tmpfs")),
        target,
        Some("tmpfs"),
        tmpfs_flags,
        Some("mode=755"),
    )?;
    // Everything below lives on the tmpfs we just mounted, which the container cannot
    // have touched yet.
    let after = root.open(spec_dest)?;
    let dest = &sys.fd_path(after.as_fd());
    for (name, dir) in &plan.cgroup_sources {
        let sub = dest.join(name);
        std::fs::create_dir_all(&sub).map_err(io_err("mkdir", &sub))?;
        sys.mount(Some(dir), &sub, Some("bind"), bind_flags, None)?;
        let keep = sys.kept_mount_flags(&sub);
        sys.mount(Some(&sub), &sub, None, ro_remount | keep, None)?;
        if name.contains(',') {
            for alias in name.split(',') {
                sys.symlink(Path::new(name), &dest.join(alias))?;
            }
        }
    }
    if opts.flags.contains(MsFlags::MS_RDONLY) {
        sys.mount(
            Some(dest),
            dest,
            None,
            tmpfs_flags | MsFlags::MS_REMOUNT | MsFlags::MS_RDONLY,
            None,
        )?;
    }
    Ok(after)
}
