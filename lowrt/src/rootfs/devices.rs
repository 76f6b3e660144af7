//! /dev inside the container: the default device nodes, spec devices, and the standard
//! symlinks. Nodes are made with mknod(2); where that is refused, the host node is
//! bind-mounted instead (runc's fallback, needed in user namespaces).

use std::ffi::OsString;
use std::os::fd::{AsFd, OwnedFd};
use std::os::unix::fs::PermissionsExt;
use std::path::Path;

use nix::errno::Errno;
use nix::fcntl::{openat, OFlag};
use nix::mount::MsFlags;
use nix::sys::stat::{makedev, Mode, SFlag};
use nix::unistd::{unlinkat, UnlinkatFlags};
use oci_spec::runtime::{LinuxDevice, LinuxDeviceType};

use super::inroot::{resolve_err, Kind, Root};
use super::{io_err, paths, RootfsError};
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
    root: &Root,
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
        create_node(sys, root, &node)?;
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
        create_node(sys, root, &node)?;
    }
    Ok(())
}

/// The node is made relative to an fd of its parent directory, itself resolved and
/// created inside the rootfs ([`Root`]): a symlink in the image (`/dev -> /host/dev`,
/// `/dev/null -> /proc/self/root/...`) can never place or chmod a node outside it. An
/// existing entry, a symlink included, is left alone (runc: EEXIST is success).
fn create_node(sys: &dyn Syscall, root: &Root, node: &Node<'_>) -> Result<(), RootfsError> {
    let (parent, name) = parent_and_name(root, node.path, "mknod")?;
    let dir = sys.fd_path(parent.as_fd());
    let dev = makedev(node.major, node.minor);
    match sys.mknod(
        &dir.join(&name),
        node.kind,
        Mode::from_bits_truncate(node.mode & 0o7777),
        dev,
    ) {
        Ok(()) => {}
        Err(e) if e.source == Errno::EEXIST => return Ok(()),
        Err(e) if e.source == Errno::EPERM => {
            // Bind the host's node over an empty file (made with O_NOFOLLOW, so an
            // existing symlink fails instead of being followed).
            let target = root.create(&paths::clean(node.path), Kind::File)?;
            let target = sys.fd_path(target.as_fd());
            sys.mount(
                Some(node.path),
                &target,
                Some("bind"),
                MsFlags::MS_BIND,
                None,
            )?;
            return Ok(());
        }
        Err(e) => return Err(e.into()),
    }
    // mknod's mode is filtered by the umask; set the exact mode afterwards, through an
    // O_PATH fd of the node just made (chmod/chown of /proc/self/fd/N act on that inode).
    let fd = openat(
        &parent,
        name.as_os_str(),
        OFlag::O_PATH | OFlag::O_NOFOLLOW | OFlag::O_CLOEXEC,
        Mode::empty(),
    )
    .map_err(|e| resolve_err(node.path, "open", e))?;
    let path = sys.fd_path(fd.as_fd());
    std::fs::set_permissions(&path, std::fs::Permissions::from_mode(node.mode & 0o7777))
        .map_err(io_err("chmod", node.path))?;
    sys.chown(&path, node.uid, node.gid)?;
    Ok(())
}

/// An fd of the (created) parent directory of `path` inside the root, and the last
/// component of the cleaned path. The root itself is refused (runc: "mknod over rootfs").
fn parent_and_name(
    root: &Root,
    path: &Path,
    op: &'static str,
) -> Result<(OwnedFd, OsString), RootfsError> {
    let clean = paths::clean(path);
    let (Some(parent), Some(name)) = (clean.parent(), clean.file_name()) else {
        return Err(RootfsError::Resolve {
            path: path.to_path_buf(),
            op,
            reason: "the path is the rootfs itself".into(),
            errno: None,
        });
    };
    Ok((root.create(parent, Kind::Dir)?, name.to_os_string()))
}

/// /dev/fd, stdio, ptmx (to the devpts instance) and core, as runc and docker expect;
/// each made relative to an fd of its directory inside the rootfs.
pub(super) fn create_symlinks(sys: &dyn Syscall, root: &Root) -> Result<(), RootfsError> {
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
        let (dir, name) = parent_and_name(root, Path::new(link), "symlink")?;
        let dest = sys.fd_path(dir.as_fd()).join(name);
        match sys.symlink(Path::new(target), &dest) {
            Err(e) if e.source != Errno::EEXIST => return Err(e.into()),
            _ => {}
        }
    }
    // A /dev/ptmx node from the image would point at the host's devpts instance.
    let ptmx = Path::new("/dev/ptmx");
    let (dir, name) = parent_and_name(root, ptmx, "symlink")?;
    match unlinkat(&dir, name.as_os_str(), UnlinkatFlags::NoRemoveDir) {
        Err(Errno::ENOENT) | Ok(()) => {}
        Err(e) => return Err(resolve_err(ptmx, "remove", e)),
    }
    sys.symlink(Path::new("pts/ptmx"), &sys.fd_path(dir.as_fd()).join(name))?;
    Ok(())
}
