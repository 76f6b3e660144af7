//! Unprivileged tests of the rootfs logic against the recording fake.

use std::path::{Path, PathBuf};

use nix::mount::{MntFlags, MsFlags};
use oci_spec::runtime::Mount;

use super::*;
use crate::syscall::{Call, RecordingSyscall};

fn mounts(json: &str) -> Vec<Mount> {
    serde_json::from_str(json).unwrap()
}

fn plan<'a>(rootfs: &'a Path, bundle: &'a Path, mounts: &'a [Mount]) -> RootfsPlan<'a> {
    RootfsPlan {
        rootfs,
        bundle,
        mounts,
        idmapped: &[],
        propagation: MsFlags::MS_SLAVE | MsFlags::MS_REC,
        devices: &[],
        cgroup_sources: vec![
            (
                "cpu,cpuacct".into(),
                PathBuf::from("/sys/fs/cgroup/cpu,cpuacct/t"),
            ),
            ("memory".into(), PathBuf::from("/sys/fs/cgroup/memory/t")),
        ],
        new_cgroupns: false,
        new_netns: true,
    }
}

#[test]
fn prepare_orders_calls_like_runc() {
    let tmp = tempfile::tempdir().unwrap();
    let rootfs = tmp.path().join("rootfs");
    std::fs::create_dir_all(rootfs.join("dev")).unwrap();
    std::fs::write(tmp.path().join("hosts"), "x").unwrap();
    let list = mounts(
        r#"[{"destination":"/proc","type":"proc","source":"proc"},
            {"destination":"/dev","type":"tmpfs","source":"tmpfs","options":["nosuid","strictatime","mode=755","size=65536k"]},
            {"destination":"/etc/hosts","type":"bind","source":"hosts","options":["rbind","ro","rprivate"]},
            {"destination":"/sys/fs/cgroup","type":"cgroup","source":"cgroup","options":["ro","nosuid"]}]"#,
    );
    let sys = RecordingSyscall::default();
    prepare(&sys, &plan(&rootfs, tmp.path(), &list)).unwrap();
    pivot_root(&sys, &rootfs).unwrap();
    let calls = sys.calls();
    // Propagation of / first, then the rootfs bind, then the spec mounts.
    assert!(
        matches!(&calls[0], Call::Mount { target, flags, .. } if target == Path::new("/") && *flags == MsFlags::MS_SLAVE | MsFlags::MS_REC)
    );
    assert!(
        matches!(&calls[1], Call::Mount { target, flags, .. } if *target == rootfs && flags.contains(MsFlags::MS_BIND | MsFlags::MS_REC))
    );
    let m = sys.mounts();
    assert!(m.contains(&(rootfs.join("proc"), Some("proc".into()), MsFlags::empty())));
    // The bind of a file: plain rbind, then a remount for ro, then rprivate.
    let hosts = rootfs.join("etc/hosts");
    assert!(hosts.is_file());
    let hosts_calls: Vec<MsFlags> = m
        .iter()
        .filter(|(t, ..)| *t == hosts)
        .map(|(_, _, f)| *f)
        .collect();
    assert_eq!(
        hosts_calls,
        [
            MsFlags::MS_BIND | MsFlags::MS_REC,
            MsFlags::MS_RDONLY | MsFlags::MS_BIND | MsFlags::MS_REMOUNT,
            MsFlags::MS_PRIVATE | MsFlags::MS_REC
        ]
    );
    // cgroup v1: tmpfs, one bind per hierarchy, symlinks for co-mounted controllers.
    let cg = rootfs.join("sys/fs/cgroup");
    assert!(m.contains(&(
        cg.join("memory"),
        Some("bind".into()),
        MsFlags::MS_BIND | MsFlags::MS_REC
    )));
    assert!(calls.contains(&Call::Symlink {
        target: "cpu,cpuacct".into(),
        link: cg.join("cpuacct")
    }));
    // Default devices and the ptmx symlink.
    assert!(calls
        .iter()
        .any(|c| matches!(c, Call::Mknod { path, .. } if *path == rootfs.join("dev/null"))));
    assert!(calls.contains(&Call::Symlink {
        target: "pts/ptmx".into(),
        link: rootfs.join("dev/ptmx")
    }));
    // pivot_root(".", ".") then detach the old root, last.
    let tail: Vec<&Call> = calls.iter().rev().take(4).collect();
    assert_eq!(*tail[0], Call::Chdir("/".into()));
    assert_eq!(
        *tail[1],
        Call::Umount {
            target: ".".into(),
            flags: MntFlags::MNT_DETACH
        }
    );
    assert!(matches!(tail[3], Call::PivotRoot { .. }));
}

#[test]
fn missing_bind_source_is_named() {
    let tmp = tempfile::tempdir().unwrap();
    let rootfs = tmp.path().join("rootfs");
    std::fs::create_dir_all(&rootfs).unwrap();
    let list = mounts(
        r#"[{"destination":"/data","type":"bind","source":"/nonexistent/src","options":["bind"]}]"#,
    );
    let err = prepare(
        &RecordingSyscall::default(),
        &plan(&rootfs, tmp.path(), &list),
    )
    .unwrap_err()
    .to_string();
    assert!(
        err.contains("/nonexistent/src") && err.contains("/data"),
        "{err}"
    );
}

#[test]
fn finalize_masks_files_and_dirs_and_skips_missing() {
    let tmp = tempfile::tempdir().unwrap();
    let root = tmp.path();
    std::fs::create_dir_all(root.join("proc/acpi")).unwrap();
    std::fs::write(root.join("proc/kcore"), "").unwrap();
    std::fs::create_dir_all(root.join("proc/sys")).unwrap();
    std::fs::create_dir_all(root.join("dev")).unwrap();
    std::fs::write(root.join("dev/null"), "").unwrap();
    let sys = RecordingSyscall::default();
    let ro = vec!["/proc/sys".to_owned()];
    let masked = vec![
        "/proc/kcore".to_owned(),
        "/proc/acpi".to_owned(),
        "/proc/missing".to_owned(),
    ];
    finalize(&sys, root, true, &ro, &masked).unwrap();
    let m = sys.mounts();
    assert_eq!(
        m[0],
        (
            root.to_path_buf(),
            None,
            MsFlags::MS_BIND | MsFlags::MS_REMOUNT | MsFlags::MS_RDONLY
        )
    );
    assert!(m.contains(&(root.join("proc/kcore"), None, MsFlags::MS_BIND)));
    assert!(m.contains(&(
        root.join("proc/acpi"),
        Some("tmpfs".into()),
        MsFlags::MS_RDONLY
    )));
    assert!(!m.iter().any(|(t, ..)| t.ends_with("missing")));
}

#[test]
fn move_root_detaches_then_moves_and_chroots() {
    let tmp = tempfile::tempdir().unwrap();
    let sys = RecordingSyscall::default();
    move_root(&sys, tmp.path()).unwrap();
    let calls = sys.calls();
    let tail: Vec<&Call> = calls.iter().rev().take(4).collect();
    assert_eq!(*tail[0], Call::Chdir("/".into()));
    assert_eq!(*tail[1], Call::Chroot(".".into()));
    assert!(
        matches!(tail[2], Call::Mount { target, flags, .. } if target == Path::new("/") && *flags == MsFlags::MS_MOVE)
    );
    assert_eq!(*tail[3], Call::Chdir(tmp.path().to_path_buf()));
    // This host's /proc is a full proc mount outside the rootfs: slaved, then detached.
    let proc_calls: Vec<&Call> = calls
        .iter()
        .filter(|c| match c {
            Call::Mount { target, .. } | Call::Umount { target, .. } => {
                target == Path::new("/proc")
            }
            _ => false,
        })
        .collect();
    assert_eq!(proc_calls.len(), 2, "{calls:?}");
}

/// tmpcopyup: the tmpfs is mounted read-write, filled, and remounted read-only after.
#[test]
fn tmpcopyup_mounts_rw_copies_then_remounts_ro() {
    let tmp = tempfile::tempdir().unwrap();
    let rootfs = tmp.path().join("rootfs");
    std::fs::create_dir_all(rootfs.join("run")).unwrap();
    let list = mounts(
        r#"[{"destination":"/run","type":"tmpfs","source":"tmpfs","options":["ro","nosuid","tmpcopyup","size=1m"]}]"#,
    );
    let sys = RecordingSyscall::default();
    prepare(&sys, &plan(&rootfs, tmp.path(), &list)).unwrap();
    let run = rootfs.join("run");
    let calls: Vec<Call> = sys
        .calls()
        .into_iter()
        .filter(|c| {
            matches!(c, Call::CopyUp(_))
                || matches!(c, Call::Mount { target, .. } if *target == run)
        })
        .collect();
    assert_eq!(
        calls,
        [
            Call::Mount {
                source: Some(PathBuf::from("tmpfs")),
                target: run.clone(),
                fstype: Some("tmpfs".into()),
                flags: MsFlags::MS_NOSUID,
                data: Some("size=1m".into()),
            },
            Call::CopyUp(PathBuf::from("/run")),
            Call::Mount {
                source: None,
                target: run,
                fstype: None,
                flags: MsFlags::MS_NOSUID | MsFlags::MS_RDONLY | MsFlags::MS_REMOUNT,
                data: None,
            },
        ]
    );
}
