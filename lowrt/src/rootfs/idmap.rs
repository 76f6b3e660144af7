//! Idmapped bind mounts (runtime-spec: mount options `idmap`/`ridmap`, a mount's
//! `uidMappings`/`gidMappings`). Setting MOUNT_ATTR_IDMAP needs CAP_SYS_ADMIN over the
//! source filesystem, i.e. in the host's user namespace, which container init in a new
//! user namespace no longer has. So, as runc 1.2 does, the runtime makes the detached
//! idmapped trees before clone (open_tree(OPEN_TREE_CLONE) + mount_setattr), init
//! inherits the fds and attaches each with move_mount onto its destination's fd.
//!
//! A file owned by `containerID + n` on disk shows as `hostID + n` on the mount: the
//! mapping is that of a user namespace whose uid_map is the mount's mappings. With no
//! mappings on the mount, the container's own user namespace mappings are used, so files
//! owned by 0 on disk are owned by the container's root.

use std::ffi::CString;
use std::os::fd::{AsFd, OwnedFd};
use std::os::unix::ffi::OsStrExt;
use std::path::{Path, PathBuf};

use nix::unistd::{pipe2, read, Pid};
use oci_spec::runtime::{LinuxIdMapping, Mount, Spec};

use super::options;
use crate::sys::{clone_process, Forked};

#[derive(Debug, thiserror::Error)]
pub enum IdmapError {
    #[error("mount {}: idmapped mounts are only supported for bind mounts", dest.display())]
    NotBind { dest: PathBuf },
    #[error(
        "mount {}: an idmapped mount needs uidMappings and gidMappings, on the mount or \
         for a new user namespace in linux", dest.display()
    )]
    NoMappings { dest: PathBuf },
    #[error("mount {}: uidMappings and gidMappings must be given together", dest.display())]
    HalfMappings { dest: PathBuf },
    #[error("mount {}: cannot make an idmapped mount of {}: {}", dest.display(), src.display(), crate::syscall::errno_text(*errno))]
    Kernel {
        dest: PathBuf,
        src: PathBuf,
        errno: nix::errno::Errno,
    },
    #[error("cannot create a user namespace for an idmapped mount: {op}: {}", crate::syscall::errno_text(*errno))]
    Userns {
        op: &'static str,
        errno: nix::errno::Errno,
    },
}

/// (uid mappings, gid mappings).
type Mappings = (Vec<LinuxIdMapping>, Vec<LinuxIdMapping>);

/// Whether `m` asks for an idmapped mount.
pub fn is_idmapped(m: &Mount) -> bool {
    let opts = m.options().as_deref().unwrap_or(&[]);
    m.uid_mappings().is_some()
        || m.gid_mappings().is_some()
        || opts.iter().any(|o| o == "idmap" || o == "ridmap")
}

/// One entry per spec mount: the detached idmapped tree to attach, or None.
pub fn prepare(spec: &Spec, bundle: &Path) -> Result<Vec<Option<OwnedFd>>, IdmapError> {
    let mounts = spec.mounts().as_deref().unwrap_or(&[]);
    if !mounts.iter().any(is_idmapped) {
        return Ok(Vec::new());
    }
    let linux = spec.linux().as_ref();
    let new_userns = linux.is_some_and(|l| {
        crate::namespaces::is_new_in(l, oci_spec::runtime::LinuxNamespaceType::User)
    });
    // One user namespace per distinct mapping.
    let mut userns: Vec<(Mappings, OwnedFd)> = Vec::new();
    let mut out = Vec::with_capacity(mounts.len());
    for m in mounts {
        if !is_idmapped(m) {
            out.push(None);
            continue;
        }
        let dest = m.destination().clone();
        let word_list = m.options().as_deref().unwrap_or(&[]);
        if !options::parse(word_list).is_bind() {
            return Err(IdmapError::NotBind { dest });
        }
        let maps = match (m.uid_mappings(), m.gid_mappings()) {
            (Some(u), Some(g)) => (u.clone(), g.clone()),
            (None, None) if new_userns => {
                let l = linux.expect("a new user namespace implies linux");
                (
                    l.uid_mappings().clone().unwrap_or_default(),
                    l.gid_mappings().clone().unwrap_or_default(),
                )
            }
            (None, None) => return Err(IdmapError::NoMappings { dest }),
            _ => return Err(IdmapError::HalfMappings { dest }),
        };
        if maps.0.is_empty() || maps.1.is_empty() {
            return Err(IdmapError::NoMappings { dest });
        }
        let ns = match userns.iter().position(|(k, _)| *k == maps) {
            Some(i) => i,
            None => {
                let fd = userns_with_maps(&maps.0, &maps.1)?;
                userns.push((maps, fd));
                userns.len() - 1
            }
        };
        let src = match m.source() {
            Some(s) if s.is_absolute() => s.clone(),
            Some(s) => bundle.join(s),
            None => PathBuf::new(),
        };
        let recursive = word_list.iter().any(|o| o == "rbind");
        let recursive_attr = word_list.iter().any(|o| o == "ridmap");
        let kernel = |errno| IdmapError::Kernel {
            dest: dest.clone(),
            src: src.clone(),
            errno,
        };
        let c_src = CString::new(src.as_os_str().as_bytes())
            .map_err(|_| kernel(nix::errno::Errno::EINVAL))?;
        let tree =
            crate::sys::idmapped_tree(&c_src, recursive, recursive_attr, userns[ns].1.as_fd())
                .map_err(kernel)?;
        out.push(Some(tree));
    }
    Ok(out)
}

/// A user namespace with these maps, held by its fd: a child unshares into a new one and
/// waits on a pipe while we (root in ours) write its maps and open its ns file, then the
/// pipe closes and it exits.
fn userns_with_maps(uid: &[LinuxIdMapping], gid: &[LinuxIdMapping]) -> Result<OwnedFd, IdmapError> {
    let err = |op| move |errno| IdmapError::Userns { op, errno };
    let (rd, wr) = pipe2(nix::fcntl::OFlag::O_CLOEXEC).map_err(err("pipe"))?;
    let flags = libc::CLONE_NEWUSER as libc::c_ulong;
    match clone_process(flags).map_err(err("clone"))? {
        Forked::Child => {
            drop(wr);
            let _ = read(&rd, &mut [0u8; 1]);
            crate::sys::exit_now(0)
        }
        Forked::Parent { pid, pidfd: _ } => {
            drop(rd);
            let result = write_maps_and_open(pid, uid, gid);
            drop(wr);
            let _ = nix::sys::wait::waitpid(pid, None);
            result
        }
    }
}

fn write_maps_and_open(
    pid: Pid,
    uid: &[LinuxIdMapping],
    gid: &[LinuxIdMapping],
) -> Result<OwnedFd, IdmapError> {
    let io = |op| {
        move |e: std::io::Error| IdmapError::Userns {
            op,
            errno: nix::errno::Errno::from_raw(e.raw_os_error().unwrap_or(libc::EIO)),
        }
    };
    std::fs::write(format!("/proc/{pid}/uid_map"), render(uid)).map_err(io("write uid_map"))?;
    std::fs::write(format!("/proc/{pid}/gid_map"), render(gid)).map_err(io("write gid_map"))?;
    let ns = std::fs::File::open(format!("/proc/{pid}/ns/user")).map_err(io("open ns"))?;
    Ok(ns.into())
}

/// uid_map/gid_map text: "inside outside count" per line.
pub fn render(maps: &[LinuxIdMapping]) -> String {
    maps.iter()
        .map(|m| format!("{} {} {}\n", m.container_id(), m.host_id(), m.size()))
        .collect()
}
