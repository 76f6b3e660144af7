//! cgroup v2 device programs on this host's real cgroup2 mount: a child moved into a cgroup
//! with a program can open what the program allows and gets EPERM for the rest.

use std::io::Write;
use std::os::fd::AsFd;
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};

use berth_lowrt::cgroups::devices_bpf::{device_filter, effective_rules};
use berth_lowrt::cgroups::{detect_layout, CgroupManager, V2Manager};
use berth_lowrt::sys::bpf;
use nix::fcntl::{open, OFlag};
use nix::sys::stat::Mode;
use oci_spec::runtime::{LinuxDeviceCgroup, LinuxResources};

use super::harness::{remove_cgroup_tree, skip_unless_root};

/// Removes the test's cgroup tree (and kills a child still in it) on every path.
struct Cleanup {
    tree: PathBuf,
    child: Option<Child>,
}

impl Drop for Cleanup {
    fn drop(&mut self) {
        if let Some(mut child) = self.child.take() {
            let _ = child.kill();
            let _ = child.wait();
        }
        remove_cgroup_tree(&self.tree);
    }
}

fn unified_root(test: &str) -> Option<PathBuf> {
    if skip_unless_root(test) {
        return None;
    }
    let root = detect_layout().unwrap().v2;
    if root.is_none() {
        eprintln!("SKIPPED {test}: no cgroup2 mount");
    }
    root
}

/// Starts a shell gated on stdin, moves it into `dir`, lets it open each device and returns
/// what it printed (the shell's own "can't open" messages included).
fn open_devices_in(cleanup: &mut Cleanup, dir: &Path, devices: &[&str]) -> String {
    let script = format!(
        "read go; for d in {}; do : < $d && echo \"$d ok\"; done 2>&1",
        devices.join(" ")
    );
    let mut child = Command::new("/bin/busybox")
        .args(["sh", "-c", &script])
        .stdin(Stdio::piped())
        .stdout(Stdio::piped())
        .spawn()
        .unwrap();
    let pid = child.id();
    let mut stdin = child.stdin.take().unwrap();
    cleanup.child = Some(child);
    std::fs::write(dir.join("cgroup.procs"), pid.to_string()).unwrap();
    stdin.write_all(b"go\n").unwrap();
    drop(stdin);
    let out = cleanup.child.take().unwrap().wait_with_output().unwrap();
    String::from_utf8_lossy(&out.stdout).into_owned()
}

fn rules(json: &str) -> Vec<LinuxDeviceCgroup> {
    serde_json::from_str(json).unwrap()
}

/// The generated program loaded and attached by hand: /dev/null allowed, /dev/zero denied.
#[test]
fn v2_device_program_allows_null_and_denies_zero() {
    let Some(root) = unified_root("v2_device_program_allows_null_and_denies_zero") else {
        return;
    };
    let parent = format!("berth-test-{}-bpf", std::process::id());
    let dir = root.join(&parent).join("ctr");
    let mut cleanup = Cleanup {
        tree: root.join(&parent),
        child: None,
    };
    std::fs::create_dir_all(&dir).unwrap();
    let prog = device_filter(&rules(
        r#"[{"allow":false,"access":"rwm"},{"allow":true,"type":"c","major":1,"minor":3,"access":"rwm"}]"#,
    ))
    .unwrap();
    let fd = bpf::load_device_program(&prog).unwrap_or_else(|(e, log)| panic!("{e}: {log}"));
    let cgroup = open(&dir, OFlag::O_RDONLY | OFlag::O_DIRECTORY, Mode::empty()).unwrap();
    bpf::attach_device_program(cgroup.as_fd(), fd.as_fd()).unwrap();
    assert_eq!(bpf::query_device_programs(cgroup.as_fd()).unwrap().len(), 1);

    let out = open_devices_in(&mut cleanup, &dir, &["/dev/null", "/dev/zero"]);
    assert!(out.contains("/dev/null ok"), "{out}");
    assert!(
        out.contains("can't open /dev/zero: Operation not permitted"),
        "{out}"
    );
    assert!(!out.contains("/dev/zero ok"), "{out}");

    bpf::detach_device_program(cgroup.as_fd(), fd.as_fd()).unwrap();
    assert!(bpf::query_device_programs(cgroup.as_fd())
        .unwrap()
        .is_empty());
    let out = open_devices_in(&mut cleanup, &dir, &["/dev/zero"]);
    assert!(out.contains("/dev/zero ok"), "after detach: {out}");
    drop(cleanup);
    assert!(!root.join(&parent).exists());
}

/// The v2 manager: `apply` attaches docker-like rules (deny all + runc's always-allowed
/// devices), and a later `apply` (what `update` does) replaces the program.
#[test]
fn v2_manager_device_rules_apply_and_update() {
    let Some(root) = unified_root("v2_manager_device_rules_apply_and_update") else {
        return;
    };
    let parent = format!("berth-test-{}-bpfmgr", std::process::id());
    let mut cleanup = Cleanup {
        tree: root.join(&parent),
        child: None,
    };
    let mgr = V2Manager::new(root.clone(), PathBuf::from(format!("/{parent}/ctr")), true);
    mgr.create().unwrap();
    let deny_all: LinuxResources =
        serde_json::from_str(r#"{"devices":[{"allow":false,"access":"rwm"}]}"#).unwrap();
    mgr.apply(&deny_all).unwrap();
    // /dev/null (1:3) is always allowed; /dev/kmsg (1:11) is not.
    let out = open_devices_in(&mut cleanup, &mgr.dir(), &["/dev/null", "/dev/kmsg"]);
    assert!(out.contains("/dev/null ok"), "{out}");
    assert!(
        out.contains("can't open /dev/kmsg: Operation not permitted"),
        "{out}"
    );

    let allow_kmsg: LinuxResources = serde_json::from_str(
        r#"{"devices":[{"allow":false,"access":"rwm"},{"allow":true,"type":"c","major":1,"minor":11,"access":"r"}]}"#,
    )
    .unwrap();
    mgr.apply(&allow_kmsg).unwrap();
    let cgroup = open(
        &mgr.dir(),
        OFlag::O_RDONLY | OFlag::O_DIRECTORY,
        Mode::empty(),
    )
    .unwrap();
    assert_eq!(
        bpf::query_device_programs(cgroup.as_fd()).unwrap().len(),
        1,
        "the old program is detached"
    );
    let out = open_devices_in(&mut cleanup, &mgr.dir(), &["/dev/kmsg"]);
    assert!(out.contains("/dev/kmsg ok"), "{out}");
    drop(cgroup);

    assert!(mgr.pids().unwrap().is_empty());
    mgr.destroy().unwrap();
    drop(cleanup);
    assert!(!root.join(&parent).exists());
    // effective_rules is what apply used: the spec's rules first, runc's list after.
    assert_eq!(
        effective_rules(&deny_all.devices().clone().unwrap())
            .unwrap()
            .len(),
        13
    );
}
