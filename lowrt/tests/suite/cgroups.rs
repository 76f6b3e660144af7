//! The cgroup managers against the host's real hierarchies.

use std::path::PathBuf;
use std::process::Command;

use berth_lowrt::cgroups::{detect_layout, CgroupManager, V2Manager};
use nix::unistd::Pid;

use super::harness::{poll_until, remove_cgroup_tree};

/// create / move / delete on the real cgroup2 mount (controller-less on this host).
#[test]
fn v2_manager_on_real_unified_mount() {
    if super::harness::skip_unless_root("v2_manager_on_real_unified_mount") {
        return;
    }
    let Some(root) = detect_layout().unwrap().v2 else {
        eprintln!("SKIPPED v2_manager_on_real_unified_mount: no cgroup2 mount");
        return;
    };
    let parent = format!("berth-test-{}", std::process::id());
    let path = PathBuf::from(format!("/{parent}/v2"));
    let mgr = V2Manager::new(root.clone(), path, true);
    mgr.create().unwrap();
    assert!(mgr.dir().is_dir());
    let mut child = Command::new("/bin/busybox")
        .args(["sleep", "30"])
        .spawn()
        .unwrap();
    let pid = Pid::from_raw(child.id() as i32);
    mgr.add_process(pid).unwrap();
    assert_eq!(mgr.pids().unwrap(), vec![pid]);
    let own = std::fs::read_to_string(format!("/proc/{pid}/cgroup")).unwrap();
    assert!(
        own.lines()
            .any(|l| l.starts_with("0::") && l.ends_with(&format!("/{parent}/v2"))),
        "{own}"
    );
    child.kill().unwrap();
    child.wait().unwrap();
    poll_until(
        std::time::Duration::from_secs(5),
        || mgr.pids().unwrap().is_empty(),
        "cgroup to empty",
    );
    mgr.destroy().unwrap();
    assert!(!mgr.dir().exists());
    remove_cgroup_tree(&root.join(&parent));
    assert!(!root.join(&parent).exists());
}

#[test]
fn host_layout_is_detected() {
    let layout = detect_layout().unwrap();
    assert!(!layout.v1.is_empty() || layout.v2.is_some());
    if layout.v1.iter().any(|h| h.has("memory")) {
        assert!(layout
            .v1
            .iter()
            .all(|h| h.mountpoint.starts_with("/sys/fs/cgroup")));
    }
}
