//! One spec mount: pick the mount(2) calls for its type and options.

use std::os::unix::fs::PermissionsExt;
use std::path::{Path, PathBuf};

use nix::errno::Errno;
use nix::mount::MsFlags;
use oci_spec::runtime::Mount;

use super::options::{self, MountOptions};
use super::paths::secure_join;
use super::{io_err, RootfsError, RootfsPlan};
use crate::syscall::Syscall;

pub(super) fn mount_entry(
    sys: &dyn Syscall,
    plan: &RootfsPlan<'_>,
    m: &Mount,
) -> Result<(), RootfsError> {
    let opts = options::parse(m.options().as_deref().unwrap_or(&[]));
    let typ = m.typ().as_deref().unwrap_or("");
    let dest = secure_join(plan.rootfs, m.destination())?;
    if opts.is_bind() {
        bind(sys, plan, m, &opts, &dest)?;
    } else {
        let existing_mode = std::fs::metadata(&dest)
            .ok()
            .map(|m| m.permissions().mode() & 0o7777);
        std::fs::create_dir_all(&dest).map_err(io_err("mkdir", &dest))?;
        match typ {
            "cgroup" | "cgroup2" => cgroup(sys, plan, &opts, &dest)?,
            "sysfs" => sysfs(sys, plan, &opts, &dest)?,
            _ => {
                let source = m.source().clone().unwrap_or_else(|| PathBuf::from(typ));
                let data = opts.data_string();
                sys.mount(Some(&source), &dest, Some(typ), opts.flags, data.as_deref())?;
                // runc gives a tmpfs the mode of the directory it covers (an image's
                // 0755 /tmp stays 0755); images and tests rely on that.
                if let (Some(mode), "tmpfs") = (existing_mode, typ) {
                    match std::fs::set_permissions(&dest, std::fs::Permissions::from_mode(mode)) {
                        Err(e) if e.raw_os_error() != Some(libc::EROFS) => {
                            return Err(io_err("chmod", &dest)(e))
                        }
                        _ => {}
                    }
                }
            }
        }
    }
    for flag in &opts.propagation {
        sys.mount(None, &dest, None, *flag, None)?;
    }
    Ok(())
}

fn bind(
    sys: &dyn Syscall,
    plan: &RootfsPlan<'_>,
    m: &Mount,
    opts: &MountOptions,
    dest: &Path,
) -> Result<(), RootfsError> {
    let source = match m.source() {
        Some(s) if s.is_absolute() => s.clone(),
        Some(s) => plan.bundle.join(s),
        None => {
            return Err(RootfsError::NoSource {
                typ: "bind".into(),
                dest: m.destination().clone(),
            })
        }
    };
    let meta = std::fs::metadata(&source).map_err(|e| RootfsError::BindSource {
        src: source.clone(),
        dest: m.destination().clone(),
        source: e,
    })?;
    create_mountpoint(dest, meta.is_dir())?;
    sys.mount(
        Some(&source),
        dest,
        Some("bind"),
        opts.flags & (MsFlags::MS_BIND | MsFlags::MS_REC),
        None,
    )?;
    // A bind mount ignores ro/nosuid/... on the first call; they need a remount
    // (mount(2), "Creating a bind mount").
    let extra = opts.remount_flags();
    if !extra.is_empty() {
        sys.mount(
            Some(dest),
            dest,
            None,
            extra | sys.kept_mount_flags(dest) | MsFlags::MS_BIND | MsFlags::MS_REMOUNT,
            None,
        )?;
    }
    Ok(())
}

/// sysfs can only be mounted by the owner of the network namespace; without a new netns
/// fall back to a recursive bind of the host's /sys, as runc does.
fn sysfs(
    sys: &dyn Syscall,
    plan: &RootfsPlan<'_>,
    opts: &MountOptions,
    dest: &Path,
) -> Result<(), RootfsError> {
    match sys.mount(
        Some(Path::new("sysfs")),
        dest,
        Some("sysfs"),
        opts.flags,
        None,
    ) {
        Err(e) if e.source == Errno::EPERM && !plan.new_netns => {
            sys.mount(
                Some(Path::new("/sys")),
                dest,
                Some("bind"),
                MsFlags::MS_BIND | MsFlags::MS_REC,
                None,
            )?;
            if opts.flags.contains(MsFlags::MS_RDONLY) {
                let ro = sys.kept_mount_flags(dest)
                    | MsFlags::MS_BIND
                    | MsFlags::MS_REMOUNT
                    | MsFlags::MS_RDONLY;
                sys.mount(Some(dest), dest, None, ro, None)?;
            }
            Ok(())
        }
        other => Ok(other?),
    }
}

/// The container's view of its cgroups. v1: a tmpfs with one bind of the container's own
/// directory per hierarchy (and runc's symlinks for co-mounted controllers such as
/// cpu,cpuacct), made read-only afterwards if asked. v2: a fresh cgroup2 mount inside a
/// new cgroup namespace, else a bind of the container's directory.
fn cgroup(
    sys: &dyn Syscall,
    plan: &RootfsPlan<'_>,
    opts: &MountOptions,
    dest: &Path,
) -> Result<(), RootfsError> {
    let bind_flags = MsFlags::MS_BIND | MsFlags::MS_REC;
    let ro_remount = opts.remount_flags() | MsFlags::MS_BIND | MsFlags::MS_REMOUNT;
    if let [(name, dir)] = plan.cgroup_sources.as_slice() {
        if name.is_empty() {
            if plan.new_cgroupns {
                sys.mount(
                    Some(Path::new("cgroup2")),
                    dest,
                    Some("cgroup2"),
                    opts.flags,
                    None,
                )?;
            } else {
                sys.mount(Some(dir), dest, Some("bind"), bind_flags, None)?;
                let keep = sys.kept_mount_flags(dest);
                sys.mount(Some(dest), dest, None, ro_remount | keep, None)?;
            }
            return Ok(());
        }
    }
    let tmpfs_flags = MsFlags::MS_NOSUID | MsFlags::MS_NODEV | MsFlags::MS_NOEXEC;
    sys.mount(
        Some(Path::new("tmpfs")),
        dest,
        Some("tmpfs"),
        tmpfs_flags,
        Some("mode=755"),
    )?;
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
    Ok(())
}

/// A bind target must exist and match the source's kind (dir or file).
pub(super) fn create_mountpoint(dest: &Path, dir: bool) -> Result<(), RootfsError> {
    if dir {
        return std::fs::create_dir_all(dest).map_err(io_err("mkdir", dest));
    }
    if let Some(parent) = dest.parent() {
        std::fs::create_dir_all(parent).map_err(io_err("mkdir", parent))?;
    }
    if !dest.exists() {
        std::fs::File::create(dest).map_err(io_err("create", dest))?;
    }
    Ok(())
}
