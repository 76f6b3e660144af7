//! /dev inside the container: the default device nodes, spec devices, and the standard
//! symlinks. Nodes are made with mknod(2); where that is refused, the host node is
//! bind-mounted instead (runc's fallback, needed in user namespaces).

use std::os::unix::fs::PermissionsExt;
use std::path::Path;

use nix::errno::Errno;
use nix::mount::MsFlags;
use nix::sys::stat::{makedev, Mode, SFlag};
use oci_spec::runtime::{LinuxDevice, LinuxDeviceType};

use super::mounts::create_mountpoint;
use super::paths::secure_join;
use super::{io_err, RootfsError};
use crate::syscall::Syscall;

/// Devices every container gets (runtime-spec "Default Devices"): (path, major, minor).
pub const DEFAULT_DEVICES: [(&str, u64, u64); 6] = [
    ("/dev/null", 1, 3),
    ("/dev/zero", 1, 5),
    ("/dev/full", 1, 7),
    ("/dev/random", 1, 8),
    ("/dev/urandom", 1, 9),
    ("/dev/tty", 5, 0),
];

struct Node<'a> {
    path: &'a Path,
    kind: SFlag,
    major: u64,
    minor: u64,
    mode: u32,
    uid: u32,
    gid: u32,
}

pub(super) fn create_devices(
    sys: &dyn Syscall,
    rootfs: &Path,
    spec: &[LinuxDevice],
) -> Result<(), RootfsError> {
    for (path, major, minor) in DEFAULT_DEVICES {
        let node = Node {
            path: Path::new(path),
            kind: SFlag::S_IFCHR,
            major,
            minor,
            mode: 0o666,
            uid: 0,
            gid: 0,
        };
        create_node(sys, rootfs, &node)?;
    }
    for d in spec {
        let kind = match d.typ() {
            LinuxDeviceType::B => SFlag::S_IFBLK,
            LinuxDeviceType::P => SFlag::S_IFIFO,
            _ => SFlag::S_IFCHR,
        };
        let node = Node {
            path: d.path(),
            kind,
            major: d.major() as u64,
            minor: d.minor() as u64,
            mode: d.file_mode().unwrap_or(0o666),
            uid: d.uid().unwrap_or(0),
            gid: d.gid().unwrap_or(0),
        };
        create_node(sys, rootfs, &node)?;
    }
    Ok(())
}

fn create_node(sys: &dyn Syscall, rootfs: &Path, node: &Node<'_>) -> Result<(), RootfsError> {
    let dest = secure_join(rootfs, node.path)?;
    if let Some(parent) = dest.parent() {
        std::fs::create_dir_all(parent).map_err(io_err("mkdir", parent))?;
    }
    let dev = makedev(node.major, node.minor);
    match sys.mknod(
        &dest,
        node.kind,
        Mode::from_bits_truncate(node.mode & 0o7777),
        dev,
    ) {
        Ok(()) => {}
        Err(e) if e.source == Errno::EEXIST => return Ok(()),
        Err(e) if e.source == Errno::EPERM => {
            create_mountpoint(&dest, false)?;
            sys.mount(Some(node.path), &dest, Some("bind"), MsFlags::MS_BIND, None)?;
            return Ok(());
        }
        Err(e) => return Err(e.into()),
    }
    // mknod's mode is filtered by the umask; set the exact mode afterwards.
    std::fs::set_permissions(&dest, std::fs::Permissions::from_mode(node.mode & 0o7777))
        .map_err(io_err("chmod", &dest))?;
    sys.chown(&dest, node.uid, node.gid)?;
    Ok(())
}

/// /dev/fd, stdio, ptmx (to the devpts instance) and core, as runc and docker expect.
pub(super) fn create_symlinks(sys: &dyn Syscall, rootfs: &Path) -> Result<(), RootfsError> {
    let mut links = vec![
        ("/proc/self/fd", "/dev/fd"),
        ("/proc/self/fd/0", "/dev/stdin"),
        ("/proc/self/fd/1", "/dev/stdout"),
        ("/proc/self/fd/2", "/dev/stderr"),
    ];
    if Path::new("/proc/kcore").exists() {
        links.push(("/proc/kcore", "/dev/core"));
    }
    for (target, link) in links {
        let dest = secure_join(rootfs, Path::new(link))?;
        match sys.symlink(Path::new(target), &dest) {
            Err(e) if e.source != Errno::EEXIST => return Err(e.into()),
            _ => {}
        }
    }
    // A /dev/ptmx node from the image would point at the host's devpts instance.
    let ptmx = secure_join(rootfs, Path::new("/dev/ptmx"))?;
    match std::fs::remove_file(&ptmx) {
        Err(e) if e.kind() != std::io::ErrorKind::NotFound => {
            return Err(io_err("remove", &ptmx)(e))
        }
        _ => {}
    }
    sys.symlink(Path::new("pts/ptmx"), &ptmx)?;
    Ok(())
}
