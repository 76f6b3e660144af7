//! Interoperability: Debian's containerd drives berth-lowrt through its own
//! containerd-shim-runc-v2 (`ctr run --runc-binary`), with `ctr tasks exec` and `kill`.
//!
//! containerd 1.6 keeps shim sockets and ctr's stdio fifos under /run/containerd whatever
//! its config says, so containerd runs in a private mount namespace with a tmpfs over /run
//! and every ctr call enters that namespace (nsenter): nothing outside the test's temp dir
//! and its cgroup `/berth-test-<rand>` is touched. Skips visibly when a tool is missing.

use std::path::{Path, PathBuf};
use std::process::{Child, Command, Output, Stdio};
use std::time::Duration;

use super::harness::{
    berth, build_busybox_rootfs, cgroup_hierarchies, output_with_deadline, poll_until,
    remove_cgroup_tree, runc, skip_unless_root, stderr, stdout, Runtime,
};

const TOOLS: &[&str] = &[
    "/usr/bin/containerd",
    "/usr/bin/containerd-shim-runc-v2",
    "/usr/bin/ctr",
    "/usr/bin/unshare",
    "/usr/bin/nsenter",
];

/// containerd started by pid in its own mount namespace; SIGTERM, then SIGKILL, on drop.
struct Containerd {
    child: Child,
    socket: PathBuf,
}

impl Containerd {
    fn start(dir: &Path) -> Self {
        let socket = dir.join("containerd.sock");
        let config = dir.join("config.toml");
        std::fs::write(
            &config,
            format!(
                "version = 2\nroot = {:?}\nstate = {:?}\n\
                 disabled_plugins = [\"io.containerd.grpc.v1.cri\"]\n\
                 [grpc]\n  address = {:?}\n[ttrpc]\n  address = \"{}.ttrpc\"\n",
                dir.join("root"),
                dir.join("state"),
                socket,
                socket.display()
            ),
        )
        .unwrap();
        let log = std::fs::File::create(dir.join("containerd.log")).unwrap();
        let child = Command::new("unshare")
            .args(["-m", "--propagation", "private", "sh", "-c"])
            .arg("mount -t tmpfs tmpfs /run && exec containerd --config \"$0\"")
            .arg(&config)
            .stdin(Stdio::null())
            .stdout(log.try_clone().unwrap())
            .stderr(log)
            .spawn()
            .expect("spawn containerd");
        let d = Containerd { child, socket };
        poll_until(
            Duration::from_secs(20),
            || d.socket.exists(),
            "containerd's socket",
        );
        d
    }

    /// `ctr` inside containerd's mount namespace, where its fifos and shims live.
    fn ctr(&self, args: &[&str]) -> Output {
        let mut cmd = Command::new("nsenter");
        cmd.arg(format!("--mount=/proc/{}/ns/mnt", self.child.id()))
            .args(["--", "ctr", "--address"])
            .arg(&self.socket)
            .args(["-n", "berth-test"])
            .args(args)
            .stdin(Stdio::null());
        output_with_deadline(cmd, Duration::from_secs(60))
    }

    fn task_line(&self, id: &str) -> Option<String> {
        let out = self.ctr(&["tasks", "ls"]);
        stdout(&out)
            .lines()
            .find(|l| l.split_whitespace().next() == Some(id))
            .map(str::to_owned)
    }
}

impl Drop for Containerd {
    fn drop(&mut self) {
        // Best effort: a failed test may have left the task running; its shim goes with it.
        let _ = self.ctr(&["tasks", "kill", "-s", "KILL", "c1"]);
        let _ = self.ctr(&["tasks", "delete", "-f", "c1"]);
        let _ = self.ctr(&["containers", "delete", "c1"]);
        let pid = nix::unistd::Pid::from_raw(self.child.id() as i32);
        let _ = nix::sys::signal::kill(pid, nix::sys::signal::Signal::SIGTERM);
        let deadline = std::time::Instant::now() + Duration::from_secs(10);
        while self.child.try_wait().ok().flatten().is_none() {
            if std::time::Instant::now() > deadline {
                let _ = self.child.kill();
                let _ = self.child.wait();
                break;
            }
            std::thread::sleep(Duration::from_millis(20));
        }
    }
}

#[test]
fn containerd_shim_runc_v2_runs_execs_and_kills_with_berth_lowrt() {
    containerd_test(
        "containerd_shim_runc_v2_runs_execs_and_kills_with_berth_lowrt",
        Some(berth()),
    );
}

/// The same test with runc, to show the test itself is right.
#[test]
fn containerd_shim_runc_v2_runs_execs_and_kills_with_runc() {
    containerd_test(
        "containerd_shim_runc_v2_runs_execs_and_kills_with_runc",
        runc(),
    );
}

fn containerd_test(name: &str, rt: Option<Runtime>) {
    if skip_unless_root(name) {
        return;
    }
    let Some(rt) = rt else {
        eprintln!("SKIPPED {name}: runtime not installed");
        return;
    };
    if let Some(missing) = TOOLS.iter().find(|t| !Path::new(t).exists()) {
        eprintln!("SKIPPED {name}: {missing} not installed (apt-get install -y containerd)");
        return;
    }
    let tmp = tempfile::Builder::new()
        .prefix("lowrt-containerd-")
        .tempdir()
        .unwrap();
    let rootfs = tmp.path().join("rootfs");
    build_busybox_rootfs(&rootfs);
    let cgroup_parent = format!("berth-test-ctr-{}-{}", std::process::id(), rt.name);
    let result = std::panic::catch_unwind(|| {
        let cd = Containerd::start(tmp.path());
        drive(&cd, &rt.bin, &rootfs, &cgroup_parent);
    });
    for h in cgroup_hierarchies() {
        remove_cgroup_tree(&h.join(&cgroup_parent));
    }
    if let Err(panic) = result {
        let log = std::fs::read_to_string(tmp.path().join("containerd.log")).unwrap_or_default();
        eprintln!("containerd log:\n{log}");
        std::panic::resume_unwind(panic);
    }
}

fn drive(cd: &Containerd, bin: &Path, rootfs: &Path, cgroup_parent: &str) {
    let cgroup = format!("/{cgroup_parent}/c1");
    let out = cd.ctr(&[
        "run",
        "-d",
        "--rootfs",
        "--runc-binary",
        bin.to_str().unwrap(),
        "--cgroup",
        &cgroup,
        rootfs.to_str().unwrap(),
        "c1",
        "/bin/sh",
        "-c",
        "echo hi; sleep 60",
    ]);
    assert!(out.status.success(), "ctr run: {}", stderr(&out));
    poll_until(
        Duration::from_secs(20),
        || cd.task_line("c1").is_some_and(|l| l.contains("RUNNING")),
        "task c1 RUNNING",
    );
    let line = cd.task_line("c1").unwrap();
    let pid: i32 = line.split_whitespace().nth(1).unwrap().parse().unwrap();
    // The container's init is in the cgroup berth-lowrt made, under the test's parent.
    let cgroups = std::fs::read_to_string(format!("/proc/{pid}/cgroup")).unwrap();
    assert!(cgroups.contains(&cgroup), "{cgroups}");

    let out = cd.ctr(&[
        "tasks",
        "exec",
        "--exec-id",
        "e1",
        "c1",
        "/bin/sh",
        "-c",
        "echo from-exec $$",
    ]);
    assert!(out.status.success(), "ctr tasks exec: {}", stderr(&out));
    assert!(stdout(&out).starts_with("from-exec "), "{}", stdout(&out));
    let out = cd.ctr(&[
        "tasks",
        "exec",
        "--exec-id",
        "e2",
        "c1",
        "/bin/sh",
        "-c",
        "exit 7",
    ]);
    assert_eq!(
        out.status.code(),
        Some(7),
        "exec exit code: {}",
        stderr(&out)
    );

    let out = cd.ctr(&["tasks", "kill", "-s", "KILL", "c1"]);
    assert!(out.status.success(), "ctr tasks kill: {}", stderr(&out));
    poll_until(
        Duration::from_secs(20),
        || cd.task_line("c1").is_some_and(|l| l.contains("STOPPED")),
        "task c1 STOPPED",
    );
    let out = cd.ctr(&["tasks", "delete", "c1"]);
    assert!(out.status.success(), "ctr tasks delete: {}", stderr(&out));
    let out = cd.ctr(&["containers", "delete", "c1"]);
    assert!(
        out.status.success(),
        "ctr containers delete: {}",
        stderr(&out)
    );
    for h in cgroup_hierarchies() {
        assert!(
            !h.join(cgroup.trim_start_matches('/')).exists(),
            "cgroup {cgroup} left in {}",
            h.display()
        );
    }
}
