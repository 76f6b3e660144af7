//! Mounting the task's rootfs (the snapshotter's mounts) at `<bundle>/rootfs`.

use std::path::{Path, PathBuf};

use nix::errno::Errno;
use nix::mount::{mount, umount2, MntFlags, MsFlags};

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
    mount(Some(m.source.as_str()), &target, fstype, base, data).map_err(err)?;
    if is_bind && base.intersects(!(MsFlags::MS_BIND | MsFlags::MS_REC)) {
        let remount = base | MsFlags::MS_REMOUNT | MsFlags::MS_BIND;
        if let Err(e) = mount(None::<&str>, &target, None::<&str>, remount, None::<&str>) {
            let _ = umount2(&target, MntFlags::MNT_DETACH);
            return Err(err(e));
        }
    }
    if flags.intersects(propagation) {
        let prop = flags & (propagation | MsFlags::MS_REC);
        mount(None::<&str>, &target, None::<&str>, prop, None::<&str>).map_err(err)?;
    }
    Ok(())
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
