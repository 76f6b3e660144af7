//! Interoperability: Debian's dockerd (`--add-runtime berth=<berth-lowrt>`) runs containers
//! with `docker run --runtime berth`: run, run -d, exec, logs, stop. The same test runs
//! with dockerd's own runc to show the test is right.
//!
//! dockerd starts by pid with everything under the test's temp dir (data root, exec root,
//! socket, pid file), no bridge and no iptables, cgroups under `/berth-test-dock-…`, and
//! lets its own containerd run under the exec root. containerd 1.6 still puts shim sockets
//! under /run/containerd, so dockerd runs in a private mount namespace with a tmpfs over
//! /run. The image is a busybox rootfs tar brought in with `docker import`.

use std::path::{Path, PathBuf};
use std::process::{Child, Command, Output, Stdio};
use std::time::Duration;

use super::harness::{
    berth, build_busybox_rootfs, cgroup_hierarchies, output_with_deadline, poll_until,
    remove_cgroup_tree, skip_unless_root, stderr, stdout,
};

const DOCKERD: &str = "/usr/sbin/dockerd";
const DOCKER_CLIS: &[&str] = &["/usr/local/bin/docker", "/usr/bin/docker"];

struct Dockerd {
    child: Child,
    socket: PathBuf,
    cli: PathBuf,
}

impl Dockerd {
    fn start(dir: &Path, cli: PathBuf, cgroup_parent: &str) -> Self {
        let socket = dir.join("docker.sock");
        let log = std::fs::File::create(dir.join("dockerd.log")).unwrap();
        let script = "mount -t tmpfs tmpfs /run && exec dockerd --data-root \"$0/data\" \
            --exec-root \"$0/exec\" -H \"unix://$0/docker.sock\" --pidfile \"$0/dockerd.pid\" \
            --bridge=none --iptables=false --ip6tables=false --cgroup-parent \"$1\" \
            --add-runtime \"berth=$2\"";
        let child = Command::new("unshare")
            .args(["-m", "--propagation", "private", "sh", "-c", script])
            .arg(dir)
            .arg(format!("/{cgroup_parent}"))
            .arg(berth().bin)
            .stdin(Stdio::null())
            .stdout(log.try_clone().unwrap())
            .stderr(log)
            .spawn()
            .expect("spawn dockerd");
        let d = Dockerd { child, socket, cli };
        poll_until(
            Duration::from_secs(60),
            || d.socket.exists() && d.docker(&["version"]).status.success(),
            "dockerd to answer",
        );
        d
    }

    fn docker(&self, args: &[&str]) -> Output {
        let mut cmd = Command::new(&self.cli);
        cmd.arg("-H")
            .arg(format!("unix://{}", self.socket.display()))
            .args(args)
            .stdin(Stdio::null());
        output_with_deadline(cmd, Duration::from_secs(60))
    }
}

impl Drop for Dockerd {
    fn drop(&mut self) {
        let _ = self.docker(&["rm", "-f", "c1"]);
        let pid = nix::unistd::Pid::from_raw(self.child.id() as i32);
        let _ = nix::sys::signal::kill(pid, nix::sys::signal::Signal::SIGTERM);
        let deadline = std::time::Instant::now() + Duration::from_secs(20);
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
fn docker_run_exec_logs_stop_with_runtime_berth() {
    docker_test("docker_run_exec_logs_stop_with_runtime_berth", "berth");
}

#[test]
fn docker_run_exec_logs_stop_with_runtime_runc() {
    docker_test("docker_run_exec_logs_stop_with_runtime_runc", "runc");
}

fn docker_test(name: &str, runtime: &str) {
    if skip_unless_root(name) {
        return;
    }
    let Some(cli) = DOCKER_CLIS.iter().map(PathBuf::from).find(|p| p.exists()) else {
        eprintln!("SKIPPED {name}: no docker CLI");
        return;
    };
    if !Path::new(DOCKERD).exists() {
        eprintln!("SKIPPED {name}: {DOCKERD} not installed (apt-get install -y docker.io)");
        return;
    }
    let tmp = tempfile::Builder::new()
        .prefix("lowrt-docker-")
        .tempdir()
        .unwrap();
    let rootfs = tmp.path().join("rootfs");
    build_busybox_rootfs(&rootfs);
    let tar = tmp.path().join("busybox.tar");
    let out = Command::new("tar")
        .arg("-C")
        .arg(&rootfs)
        .arg("-cf")
        .arg(&tar)
        .arg(".")
        .output()
        .unwrap();
    assert!(out.status.success(), "tar: {}", stderr(&out));
    let cgroup_parent = format!("berth-test-dock-{}-{runtime}", std::process::id());
    let result = std::panic::catch_unwind(|| {
        let d = Dockerd::start(tmp.path(), cli, &cgroup_parent);
        drive(&d, &tar, runtime);
    });
    for h in cgroup_hierarchies() {
        remove_cgroup_tree(&h.join(&cgroup_parent));
    }
    if let Err(panic) = result {
        let log = std::fs::read_to_string(tmp.path().join("dockerd.log")).unwrap_or_default();
        let tail: Vec<&str> = log.lines().rev().take(40).collect();
        eprintln!(
            "dockerd log (last lines, newest first):\n{}",
            tail.join("\n")
        );
        std::panic::resume_unwind(panic);
    }
}

fn drive(d: &Dockerd, tar: &Path, runtime: &str) {
    let out = d.docker(&["import", tar.to_str().unwrap(), "bb:latest"]);
    assert!(out.status.success(), "docker import: {}", stderr(&out));

    let out = d.docker(&["run", "--rm", "--runtime", runtime, "bb", "echo", "hello"]);
    assert!(out.status.success(), "docker run: {}", stderr(&out));
    assert_eq!(stdout(&out), "hello\n");
    let out = d.docker(&[
        "run",
        "--rm",
        "--runtime",
        runtime,
        "bb",
        "sh",
        "-c",
        "exit 3",
    ]);
    assert_eq!(out.status.code(), Some(3), "{}", stderr(&out));

    let out = d.docker(&[
        "run",
        "-d",
        "--name",
        "c1",
        "--runtime",
        runtime,
        "bb",
        "sh",
        "-c",
        "echo up; sleep 60",
    ]);
    assert!(out.status.success(), "docker run -d: {}", stderr(&out));
    let out = d.docker(&["exec", "c1", "sh", "-c", "echo from-exec"]);
    assert!(out.status.success(), "docker exec: {}", stderr(&out));
    assert_eq!(stdout(&out), "from-exec\n");
    poll_until(
        Duration::from_secs(20),
        || stdout(&d.docker(&["logs", "c1"])) == "up\n",
        "docker logs c1 to show its output",
    );
    let out = d.docker(&["stop", "-t", "1", "c1"]);
    assert!(out.status.success(), "docker stop: {}", stderr(&out));
    let out = d.docker(&[
        "inspect",
        "-f",
        "{{.State.Status}} {{.State.ExitCode}}",
        "c1",
    ]);
    assert_eq!(stdout(&out).trim(), "exited 137", "{}", stderr(&out));
    let out = d.docker(&["rm", "c1"]);
    assert!(out.status.success(), "docker rm: {}", stderr(&out));
}
