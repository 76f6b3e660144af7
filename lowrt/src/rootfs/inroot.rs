//! Opening and creating mount destinations inside the rootfs by file descriptor, so that
//! what gets mounted on is exactly what was resolved. Resolving a path and then mounting
//! by that path lets a container process swap a symlink in between and redirect the
//! mount to the host (CVE-2021-30465); mounting onto `/proc/self/fd/N` of an O_PATH fd
//! taken with openat2(RESOLVE_IN_ROOT) cannot be redirected.
//!
//! Missing components are created one at a time relative to the fd of their parent
//! (mkdirat + openat(O_NOFOLLOW)), the idea of filepath-securejoin's MkdirAllInRoot. A
//! symlink met while creating (a dangling one: it resolved to nothing) is followed by
//! restarting the resolution with its target re-rooted at the rootfs, as runc 1.1's
//! SecureJoin did, so nothing is ever created outside the rootfs.

use std::ffi::OsString;
use std::os::fd::{AsFd, AsRawFd, OwnedFd};
use std::path::{Component, Path, PathBuf};

use nix::errno::Errno;
use nix::fcntl::{openat, OFlag};
use nix::sys::stat::{fstatat, mkdirat, Mode, SFlag};

use super::paths::secure_join;
use super::RootfsError;

const MAX_SYMLINKS: usize = 255;

/// What a missing destination is created as.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Kind {
    Dir,
    File,
}

/// The rootfs, held open: every destination is resolved relative to this fd.
#[derive(Debug)]
pub struct Root {
    path: PathBuf,
    fd: OwnedFd,
}

impl Root {
    pub fn new(path: &Path) -> Result<Self, RootfsError> {
        let fd = nix::fcntl::open(
            path,
            OFlag::O_PATH | OFlag::O_DIRECTORY | OFlag::O_CLOEXEC,
            Mode::empty(),
        )
        .map_err(|e| resolve_err(path, "open rootfs", e))?;
        Ok(Root {
            path: path.to_path_buf(),
            fd,
        })
    }

    pub fn path(&self) -> &Path {
        &self.path
    }

    /// An O_PATH fd of an existing `dest` (a container path), resolved inside the root.
    pub fn open(&self, dest: &Path) -> Result<OwnedFd, RootfsError> {
        let fd = open_in_root(self, dest).map_err(|e| resolve_err(dest, "open", e))?;
        self.check_inside(&fd, dest)?;
        Ok(fd)
    }

    /// Like [`Root::open`], creating what is missing (directories, and a final empty file
    /// for [`Kind::File`]) without ever following a symlink out of the root.
    pub fn create(&self, dest: &Path, kind: Kind) -> Result<OwnedFd, RootfsError> {
        let fd = self.create_inner(dest, kind)?;
        self.check_inside(&fd, dest)?;
        Ok(fd)
    }

    fn create_inner(&self, dest: &Path, kind: Kind) -> Result<OwnedFd, RootfsError> {
        let mut path = normal_components(dest);
        for _ in 0..MAX_SYMLINKS {
            match open_in_root(self, &join(&path)) {
                Ok(fd) => return Ok(fd),
                Err(Errno::ENOENT) => {}
                Err(e) => return Err(resolve_err(dest, "open", e)),
            }
            // The longest prefix that exists (at least the root itself).
            let mut split = path.len();
            let mut cur = loop {
                split -= 1;
                if split == 0 {
                    break self.fd.try_clone().map_err(|e| io(dest, "dup", e))?;
                }
                match open_in_root(self, &join(&path[..split])) {
                    Ok(fd) => break fd,
                    Err(Errno::ENOENT) => continue,
                    Err(e) => return Err(resolve_err(dest, "open", e)),
                }
            };
            let rest = &path[split..];
            if rest.iter().any(|c| c == "..") {
                return Err(RootfsError::Resolve {
                    path: dest.to_path_buf(),
                    op: "create",
                    reason: "a component to be created is followed by \"..\"".into(),
                    errno: None,
                });
            }
            let mut restart = None;
            for (i, name) in rest.iter().enumerate() {
                let last = i + 1 == rest.len();
                match make_one(&cur, name, last && kind == Kind::File) {
                    Ok(fd) => cur = fd,
                    Err(Errno::ELOOP) | Err(Errno::ENOTDIR) if is_symlink(&cur, name) => {
                        // A dangling symlink: resolve its target from its directory,
                        // re-rooted, then the rest of the path.
                        let target = nix::fcntl::readlinkat(&cur, name.as_os_str())
                            .map_err(|e| resolve_err(dest, "readlink", e))?;
                        let mut next: Vec<OsString> = if Path::new(&target).is_absolute() {
                            Vec::new()
                        } else {
                            path[..split + i].to_vec()
                        };
                        next.extend(normal_components(Path::new(&target)));
                        next.extend(rest[i + 1..].iter().cloned());
                        restart = Some(next);
                        break;
                    }
                    Err(e) => return Err(resolve_err(dest, "create", e)),
                }
            }
            match restart {
                Some(next) => path = next,
                None => return Ok(cur),
            }
        }
        Err(RootfsError::SymlinkLoop {
            path: dest.to_path_buf(),
        })
    }

    /// The fd must name something below the rootfs (what /proc/self/fd/N points to):
    /// a last guard in case resolution was subverted by a concurrent rename.
    fn check_inside(&self, fd: &OwnedFd, dest: &Path) -> Result<(), RootfsError> {
        let link = format!("/proc/self/fd/{}", fd.as_raw_fd());
        let real =
            nix::fcntl::readlink(link.as_str()).map_err(|e| resolve_err(dest, "readlink", e))?;
        if Path::new(&real).starts_with(&self.path) {
            return Ok(());
        }
        Err(RootfsError::Resolve {
            path: dest.to_path_buf(),
            op: "check",
            reason: format!(
                "resolved to {} outside the rootfs {}",
                Path::new(&real).display(),
                self.path.display()
            ),
            errno: None,
        })
    }
}

/// openat2(RESOLVE_IN_ROOT | RESOLVE_NO_MAGICLINKS): symlinks and ".." are resolved with
/// the rootfs as "/". Kernels before 5.6 lack openat2: fall back to our own resolver and
/// walk its symlink-free answer with O_NOFOLLOW, so a symlink swapped in meanwhile fails
/// the open instead of being followed.
fn open_in_root(root: &Root, path: &Path) -> Result<OwnedFd, Errno> {
    use nix::fcntl::{openat2, OpenHow, ResolveFlag};
    let how = OpenHow::new()
        .flags(OFlag::O_PATH | OFlag::O_CLOEXEC)
        .resolve(ResolveFlag::RESOLVE_IN_ROOT | ResolveFlag::RESOLVE_NO_MAGICLINKS);
    let rel = relative(path);
    match openat2(root.fd.as_fd(), &rel, how) {
        Err(Errno::ENOSYS) | Err(Errno::E2BIG) => open_nofollow_walk(root, path),
        // EAGAIN: a rename raced the lookup (openat2(2)); the kernel asks for a retry.
        Err(Errno::EAGAIN) => openat2(root.fd.as_fd(), &rel, how),
        other => other,
    }
}

/// The fallback of [`open_in_root`], public to the unit tests.
pub(super) fn open_nofollow_walk(root: &Root, path: &Path) -> Result<OwnedFd, Errno> {
    let joined = secure_join(&root.path, path).map_err(|_| Errno::ELOOP)?;
    let rel = joined.strip_prefix(&root.path).map_err(|_| Errno::EXDEV)?;
    let mut cur = root.fd.try_clone().map_err(|_| Errno::EMFILE)?;
    for comp in rel.components() {
        cur = openat(
            &cur,
            comp.as_os_str(),
            OFlag::O_PATH | OFlag::O_NOFOLLOW | OFlag::O_CLOEXEC,
            Mode::empty(),
        )?;
        // An O_PATH|O_NOFOLLOW open of a symlink succeeds and names the link itself.
        if SFlag::from_bits_truncate(nix::sys::stat::fstat(&cur)?.st_mode) & SFlag::S_IFMT
            == SFlag::S_IFLNK
        {
            return Err(Errno::ELOOP);
        }
    }
    Ok(cur)
}

/// mkdirat (or create the final file) and open the result without following symlinks.
fn make_one(dir: &OwnedFd, name: &OsString, file: bool) -> Result<OwnedFd, Errno> {
    let name = name.as_os_str();
    if file {
        // O_NOFOLLOW with O_CREAT fails with ELOOP on an existing symlink.
        let f = openat(
            dir,
            name,
            OFlag::O_CREAT | OFlag::O_WRONLY | OFlag::O_NOFOLLOW | OFlag::O_CLOEXEC,
            Mode::from_bits_truncate(0o644),
        )?;
        drop(f);
        return openat(
            dir,
            name,
            OFlag::O_PATH | OFlag::O_NOFOLLOW | OFlag::O_CLOEXEC,
            Mode::empty(),
        );
    }
    match mkdirat(dir, name, Mode::from_bits_truncate(0o755)) {
        Ok(()) | Err(Errno::EEXIST) => {}
        Err(e) => return Err(e),
    }
    openat(
        dir,
        name,
        OFlag::O_PATH | OFlag::O_NOFOLLOW | OFlag::O_DIRECTORY | OFlag::O_CLOEXEC,
        Mode::empty(),
    )
}

fn is_symlink(dir: &OwnedFd, name: &OsString) -> bool {
    fstatat(
        dir,
        name.as_os_str(),
        nix::fcntl::AtFlags::AT_SYMLINK_NOFOLLOW,
    )
    .map(|st| SFlag::from_bits_truncate(st.st_mode) & SFlag::S_IFMT == SFlag::S_IFLNK)
    .unwrap_or(false)
}

/// Components of a container path, "." and "/" dropped; ".." kept (resolution decides).
fn normal_components(path: &Path) -> Vec<OsString> {
    path.components()
        .filter_map(|c| match c {
            Component::Normal(n) => Some(n.to_os_string()),
            Component::ParentDir => Some("..".into()),
            _ => None,
        })
        .collect()
}

fn join(parts: &[OsString]) -> PathBuf {
    if parts.is_empty() {
        return PathBuf::from(".");
    }
    parts.iter().collect()
}

fn relative(path: &Path) -> PathBuf {
    join(&normal_components(path))
}

pub(super) fn resolve_err(path: &Path, op: &'static str, e: Errno) -> RootfsError {
    RootfsError::Resolve {
        path: path.to_path_buf(),
        op,
        reason: crate::syscall::errno_text(e),
        errno: Some(e),
    }
}

fn io(path: &Path, op: &'static str, e: std::io::Error) -> RootfsError {
    RootfsError::Io {
        op,
        path: path.to_path_buf(),
        source: e,
    }
}

#[cfg(test)]
#[path = "inroot_tests.rs"]
mod tests;
