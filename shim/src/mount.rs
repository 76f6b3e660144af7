//! Mounting the task's rootfs (the snapshotter's mounts) at `<bundle>/rootfs`.

use std::path::{Path, PathBuf};

use std::os::fd::{AsRawFd, OwnedFd};

use nix::errno::Errno;
use nix::fcntl::{open, openat2, OFlag, OpenHow, ResolveFlag};
use nix::mount::{mount, umount2, MntFlags, MsFlags};
use nix::sys::stat::Mode;

#[derive(Debug, thiserror::Error)]
pub enum MountError {
    #[error("cannot create mount point {path}")]
    MountPoint {
        path: PathBuf,
        #[source]
        source: std::io::Error,
    },
    #[error("mount target {target:?} escapes the rootfs")]
    Target { target: String },
    #[error("cannot resolve mount target {target:?} inside the rootfs {rootfs}")]
    Resolve {
        target: String,
        rootfs: PathBuf,
        #[source]
        source: Errno,
    },
    #[error("cannot mount {fstype} {source_path} at {target}")]
    Mount {
        fstype: String,
        source_path: String,
        target: PathBuf,
        #[source]
        source: Errno,
    },
    #[error("cannot unmount {target}")]
    Unmount {
        target: PathBuf,
        #[source]
        source: Errno,
    },
}

/// One entry of `CreateTaskRequest.rootfs` (containerd.types.Mount).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct RootfsMount {
    pub fstype: String,
    pub source: String,
    /// Relative to the rootfs; empty for the rootfs itself.
    pub target: String,
    pub options: Vec<String>,
}

/// Mounts every entry in order; on failure undoes the ones already mounted.
pub fn mount_all(mounts: &[RootfsMount], rootfs: &Path) -> Result<(), MountError> {
    std::fs::create_dir_all(rootfs).map_err(|source| MountError::MountPoint {
        path: rootfs.to_owned(),
        source,
    })?;
    for (done, m) in mounts.iter().enumerate() {
        if let Err(err) = mount_one(m, rootfs) {
            if done > 0 {
                let _ = unmount_all(rootfs);
            }
            return Err(err);
        }
    }
    Ok(())
}

fn mount_one(m: &RootfsMount, rootfs: &Path) -> Result<(), MountError> {
    let rel = Path::new(m.target.trim_start_matches('/'));
    if rel
        .components()
        .any(|c| matches!(c, std::path::Component::ParentDir))
    {
        return Err(MountError::Target {
            target: m.target.clone(),
        });
    }
    let target = rootfs.join(rel);
    let (flags, data) = parse_options(&m.options);
    let is_bind = flags.contains(MsFlags::MS_BIND);
    let err = |source| MountError::Mount {
        fstype: m.fstype.clone(),
        source_path: m.source.clone(),
        target: target.clone(),
        source,
    };
    let fstype = (!is_bind).then_some(m.fstype.as_str());
    let data = (!data.is_empty()).then_some(data.as_str());
    // Propagation flags must be applied by a separate call (mount(2): "Changing the
    // propagation type"), and bind mounts ignore all other flags until a remount.
    let propagation = MsFlags::MS_SHARED | MsFlags::MS_PRIVATE | MsFlags::MS_SLAVE;
    let base = flags - propagation;
    // The target is resolved inside the rootfs, and mounted on through the resolved
    // descriptor: the earlier mounts (the image's layers) may hold a symlink such as
    // `etc -> /`, which a plain path lookup would follow out onto the host.
    let at = resolve_in_rootfs(rootfs, rel, &m.target)?;
    mount(Some(m.source.as_str()), &at.proc_path(), fstype, base, data).map_err(err)?;
    // Resolved again: the first descriptor names the directory under the new mount,
    // and the remount and propagation change must reach the mount itself.
    let mounted = match resolve_in_rootfs(rootfs, rel, &m.target) {
        Ok(fd) => fd,
        Err(e) => {
            let _ = umount2(&at.proc_path(), MntFlags::MNT_DETACH);
            return Err(e);
        }
    };
    if is_bind && base.intersects(!(MsFlags::MS_BIND | MsFlags::MS_REC)) {
        let remount = base | MsFlags::MS_REMOUNT | MsFlags::MS_BIND;
        let path = mounted.proc_path();
        if let Err(e) = mount(None::<&str>, &path, None::<&str>, remount, None::<&str>) {
            let _ = umount2(&path, MntFlags::MNT_DETACH);
            return Err(err(e));
        }
    }
    if flags.intersects(propagation) {
        let prop = flags & (propagation | MsFlags::MS_REC);
        mount(
            None::<&str>,
            &mounted.proc_path(),
            None::<&str>,
            prop,
            None::<&str>,
        )
        .map_err(err)?;
    }
    Ok(())
}

/// An `O_PATH` descriptor of a mount target; mount(2) and umount2(2) reach the very
/// directory it names through its `/proc/self/fd` magic link (what runc does too).
struct Target(OwnedFd);

impl Target {
    fn proc_path(&self) -> PathBuf {
        PathBuf::from(format!("/proc/self/fd/{}", self.0.as_raw_fd()))
    }
}

/// Opens `rel` with the rootfs as its root (openat2(2) `RESOLVE_IN_ROOT`): absolute
/// symlinks and `..` are resolved as if the rootfs were `/`, so nothing on the way can
/// lead outside it; magic links (`/proc/PID/root`) are refused outright.
fn resolve_in_rootfs(rootfs: &Path, rel: &Path, target: &str) -> Result<Target, MountError> {
    let resolve_err = |source| MountError::Resolve {
        target: target.to_owned(),
        rootfs: rootfs.to_owned(),
        source,
    };
    let root = open(
        rootfs,
        OFlag::O_PATH | OFlag::O_DIRECTORY | OFlag::O_CLOEXEC,
        Mode::empty(),
    )
    .map_err(resolve_err)?;
    if rel.as_os_str().is_empty() {
        return Ok(Target(root));
    }
    let how = OpenHow::new()
        .flags(OFlag::O_PATH | OFlag::O_CLOEXEC)
        .resolve(ResolveFlag::RESOLVE_IN_ROOT | ResolveFlag::RESOLVE_NO_MAGICLINKS);
    openat2(&root, rel, how).map(Target).map_err(resolve_err)
}

/// Splits mount options into mount(2) flags and the filesystem's data string.
pub fn parse_options(options: &[String]) -> (MsFlags, String) {
    let mut flags = MsFlags::empty();
    let mut data = Vec::new();
    for opt in options {
        let (set, clear) = match opt.as_str() {
            "ro" => (MsFlags::MS_RDONLY, MsFlags::empty()),
            "rw" => (MsFlags::empty(), MsFlags::MS_RDONLY),
            "bind" => (MsFlags::MS_BIND, MsFlags::empty()),
            "rbind" => (MsFlags::MS_BIND | MsFlags::MS_REC, MsFlags::empty()),
            "nosuid" => (MsFlags::MS_NOSUID, MsFlags::empty()),
            "suid" => (MsFlags::empty(), MsFlags::MS_NOSUID),
            "nodev" => (MsFlags::MS_NODEV, MsFlags::empty()),
            "dev" => (MsFlags::empty(), MsFlags::MS_NODEV),
            "noexec" => (MsFlags::MS_NOEXEC, MsFlags::empty()),
            "exec" => (MsFlags::empty(), MsFlags::MS_NOEXEC),
            "sync" => (MsFlags::MS_SYNCHRONOUS, MsFlags::empty()),
            "async" => (MsFlags::empty(), MsFlags::MS_SYNCHRONOUS),
            "noatime" => (MsFlags::MS_NOATIME, MsFlags::empty()),
            "nodiratime" => (MsFlags::MS_NODIRATIME, MsFlags::empty()),
            "relatime" => (MsFlags::MS_RELATIME, MsFlags::empty()),
            "strictatime" => (MsFlags::MS_STRICTATIME, MsFlags::empty()),
            "private" => (MsFlags::MS_PRIVATE, MsFlags::empty()),
            "rprivate" => (MsFlags::MS_PRIVATE | MsFlags::MS_REC, MsFlags::empty()),
            "shared" => (MsFlags::MS_SHARED, MsFlags::empty()),
            "rshared" => (MsFlags::MS_SHARED | MsFlags::MS_REC, MsFlags::empty()),
            "slave" => (MsFlags::MS_SLAVE, MsFlags::empty()),
            "rslave" => (MsFlags::MS_SLAVE | MsFlags::MS_REC, MsFlags::empty()),
            "defaults" => (MsFlags::empty(), MsFlags::empty()),
            other => {
                data.push(other);
                continue;
            }
        };
        flags = (flags | set) - clear;
    }
    (flags, data.join(","))
}

/// Detaches everything stacked on `rootfs` at once, but keeps each detached mount alive
/// through a returned descriptor; dropping them (see [`release_in_background`]) frees
/// the mounts.
///
/// Why: the last reference to an overlay mount going away syncs the whole upper
/// filesystem (ovl_sync_fs → sync_filesystem of the disk under the snapshots), which on
/// a host with other writers takes 10-100+ ms. Nobody needs to wait for that sync: the
/// container is gone, and the path is a plain directory again as soon as the detach
/// returns, so highd can remove the task dir and the snapshot right away.
pub fn detach_all(rootfs: &Path) -> Result<Vec<OwnedFd>, MountError> {
    let mut held = Vec::new();
    for _ in 0..64 {
        // Holds the top mount at `rootfs` (an O_PATH open of a mount's root pins it).
        let pin = match open(
            rootfs,
            OFlag::O_PATH | OFlag::O_DIRECTORY | OFlag::O_CLOEXEC | OFlag::O_NOFOLLOW,
            Mode::empty(),
        ) {
            Ok(fd) => Some(fd),
            Err(Errno::ENOENT) => return Ok(held),
            Err(_) => None,
        };
        match umount2(rootfs, MntFlags::MNT_DETACH) {
            Ok(()) => held.extend(pin),
            Err(Errno::EINVAL) | Err(Errno::ENOENT) => return Ok(held),
            Err(source) => {
                return Err(MountError::Unmount {
                    target: rootfs.to_owned(),
                    source,
                })
            }
        }
    }
    Ok(held)
}

/// Drops the descriptors [`detach_all`] returned on a short-lived thread, so the sync of
/// the last unmount happens there and not on the reactor. The process's exit waits for
/// that thread, which is fine: nobody waits for a deleted task's shim to exit.
pub fn release_in_background(held: Vec<OwnedFd>) {
    if held.is_empty() {
        return;
    }
    let spawned = std::thread::Builder::new()
        .name("rootfs-release".into())
        .stack_size(64 * 1024)
        .spawn(move || drop(held));
    if let Err(e) = spawned {
        tracing::warn!(error = %e, "cannot start a thread to release the rootfs; releasing it here");
    }
}

/// Unmounts everything stacked on `rootfs` (nested mounts first, the kernel picks the
/// top one each time) until it is a plain directory again.
pub fn unmount_all(rootfs: &Path) -> Result<(), MountError> {
    for _ in 0..64 {
        match umount2(rootfs, MntFlags::empty()) {
            Ok(()) => continue,
            Err(Errno::EINVAL) | Err(Errno::ENOENT) => return Ok(()),
            Err(Errno::EBUSY) => {
                // Something still uses it (a stray process); detach it lazily rather
                // than leak the mount for the life of the host.
                umount2(rootfs, MntFlags::MNT_DETACH).map_err(|source| MountError::Unmount {
                    target: rootfs.to_owned(),
                    source,
                })?;
            }
            Err(source) => {
                return Err(MountError::Unmount {
                    target: rootfs.to_owned(),
                    source,
                })
            }
        }
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn options_split_into_flags_and_data() {
        let opts: Vec<String> = ["rbind", "ro", "nosuid", "lowerdir=/a:/b", "upperdir=/u"]
            .map(String::from)
            .to_vec();
        let (flags, data) = parse_options(&opts);
        assert_eq!(
            flags,
            MsFlags::MS_BIND | MsFlags::MS_REC | MsFlags::MS_RDONLY | MsFlags::MS_NOSUID
        );
        assert_eq!(data, "lowerdir=/a:/b,upperdir=/u");
        let (flags, _) = parse_options(&["ro".to_owned(), "rw".to_owned()]);
        assert!(flags.is_empty());
    }

    #[test]
    fn bind_mount_round_trip_leaves_nothing_mounted() {
        if !nix::unistd::geteuid().is_root() {
            eprintln!("SKIPPED bind_mount_round_trip_leaves_nothing_mounted: needs root");
            return;
        }
        let dir = tempfile::tempdir().expect("tempdir");
        let src = dir.path().join("src");
        std::fs::create_dir(&src).expect("mkdir");
        std::fs::write(src.join("marker"), b"x").expect("write");
        let rootfs = dir.path().join("rootfs");
        let m = RootfsMount {
            fstype: "bind".into(),
            source: src.display().to_string(),
            target: String::new(),
            options: vec!["rbind".into(), "ro".into()],
        };
        mount_all(&[m], &rootfs).expect("mount");
        assert!(rootfs.join("marker").exists());
        assert!(
            std::fs::write(rootfs.join("new"), b"y").is_err(),
            "not read-only"
        );
        unmount_all(&rootfs).expect("unmount");
        assert!(!rootfs.join("marker").exists());
        let mounts = std::fs::read_to_string("/proc/self/mountinfo").expect("mountinfo");
        assert!(!mounts.contains(&rootfs.display().to_string()));
    }

    #[test]
    fn overlay_mount_writes_to_upper_and_unmounts() {
        if !nix::unistd::geteuid().is_root() {
            eprintln!("SKIPPED overlay_mount_writes_to_upper_and_unmounts: needs root");
            return;
        }
        let dir = tempfile::tempdir().expect("tempdir");
        let [lower, upper, work] = ["lower", "upper", "work"].map(|d| dir.path().join(d));
        for d in [&lower, &upper, &work] {
            std::fs::create_dir(d).expect("mkdir");
        }
        std::fs::write(lower.join("from-lower"), b"l").expect("write");
        let rootfs = dir.path().join("rootfs");
        let m = RootfsMount {
            fstype: "overlay".into(),
            source: "overlay".into(),
            target: String::new(),
            options: vec![
                format!("lowerdir={}", lower.display()),
                format!("upperdir={}", upper.display()),
                format!("workdir={}", work.display()),
            ],
        };
        mount_all(&[m], &rootfs).expect("mount overlay");
        assert!(rootfs.join("from-lower").exists());
        std::fs::write(rootfs.join("new"), b"n").expect("write through overlay");
        unmount_all(&rootfs).expect("unmount");
        assert!(upper.join("new").exists(), "write did not land in upperdir");
        assert!(!rootfs.join("from-lower").exists());
    }

    #[test]
    fn a_symlink_to_slash_in_the_image_does_not_lead_the_mount_out() {
        if !nix::unistd::geteuid().is_root() {
            eprintln!(
                "SKIPPED a_symlink_to_slash_in_the_image_does_not_lead_the_mount_out: needs root"
            );
            return;
        }
        let dir = tempfile::tempdir().expect("tempdir");
        // The host has a directory at <dir>/victim; the image has `escape -> /` and the
        // same path below its own root. Followed on the host, `escape/<dir>/victim`
        // would be the host's victim.
        let host_victim = dir.path().join("victim");
        std::fs::create_dir(&host_victim).expect("mkdir");
        let image = dir.path().join("image");
        let rel_victim = host_victim.strip_prefix("/").expect("absolute");
        std::fs::create_dir_all(image.join(rel_victim)).expect("mkdir");
        std::os::unix::fs::symlink("/", image.join("escape")).expect("symlink");
        let data = dir.path().join("data");
        std::fs::create_dir(&data).expect("mkdir");
        std::fs::write(data.join("marker"), b"m").expect("write");
        let rootfs = dir.path().join("rootfs");
        let mounts = [
            RootfsMount {
                fstype: "bind".into(),
                source: image.display().to_string(),
                target: String::new(),
                options: vec!["rbind".into()],
            },
            RootfsMount {
                fstype: "bind".into(),
                source: data.display().to_string(),
                target: format!("escape/{}", rel_victim.display()),
                options: vec!["bind".into(), "ro".into()],
            },
        ];
        let result = mount_all(&mounts, &rootfs);
        let escaped = host_victim.join("marker").exists();
        let inside = rootfs.join(rel_victim).join("marker").exists();
        let _ = umount2(&host_victim, MntFlags::MNT_DETACH);
        let _ = unmount_all(&rootfs);
        result.expect("mount");
        assert!(
            !escaped,
            "the mount followed the image's symlink onto the host"
        );
        assert!(inside, "the mount did not land inside the rootfs");
        assert!(!rootfs
            .join("escape")
            .join(rel_victim)
            .join("marker")
            .exists());
    }

    #[test]
    fn a_missing_mount_target_is_an_error_naming_it() {
        if !nix::unistd::geteuid().is_root() {
            eprintln!("SKIPPED a_missing_mount_target_is_an_error_naming_it: needs root");
            return;
        }
        let dir = tempfile::tempdir().expect("tempdir");
        let image = dir.path().join("image");
        std::fs::create_dir(&image).expect("mkdir");
        let rootfs = dir.path().join("rootfs");
        let mounts = [
            RootfsMount {
                fstype: "bind".into(),
                source: image.display().to_string(),
                target: String::new(),
                options: vec!["rbind".into()],
            },
            RootfsMount {
                fstype: "tmpfs".into(),
                source: "tmpfs".into(),
                target: "no/such/dir".into(),
                options: vec![],
            },
        ];
        let err = mount_all(&mounts, &rootfs).expect_err("missing target");
        assert!(matches!(err, MountError::Resolve { .. }), "{err}");
        assert!(err.to_string().contains("no/such/dir"), "{err}");
        let table = std::fs::read_to_string("/proc/self/mountinfo").expect("mountinfo");
        assert!(
            !table.contains(&rootfs.display().to_string()),
            "rootfs left mounted"
        );
    }

    #[test]
    fn a_target_escaping_the_rootfs_is_refused() {
        let dir = tempfile::tempdir().expect("tempdir");
        let m = RootfsMount {
            fstype: "bind".into(),
            source: "/".into(),
            target: "../../etc".into(),
            options: vec!["rbind".into()],
        };
        let err = mount_all(&[m], &dir.path().join("rootfs")).expect_err("escape");
        assert!(matches!(err, MountError::Target { .. }), "{err}");
    }
}
