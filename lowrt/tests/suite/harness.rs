//! Shared set-up: runtimes under test, busybox bundles, cleanup, polling.

use std::path::{Path, PathBuf};
use std::process::{Command, Output, Stdio};
use std::time::{Duration, Instant};

use serde_json::{json, Value};

/// A runtime binary speaking runc's command line.
#[derive(Debug, Clone)]
pub struct Runtime {
    pub name: &'static str,
    pub bin: PathBuf,
}

pub fn berth() -> Runtime {
    Runtime {
        name: "berth-lowrt",
        bin: PathBuf::from(env!("CARGO_BIN_EXE_berth-lowrt")),
    }
}

pub fn runc() -> Option<Runtime> {
    ["/usr/sbin/runc", "/usr/bin/runc"]
        .iter()
        .map(PathBuf::from)
        .find(|p| p.exists())
        .map(|bin| Runtime { name: "runc", bin })
}

/// Root-only tests call this first; it prints a visible skip line.
pub fn skip_unless_root(test: &str) -> bool {
    if nix::unistd::geteuid().is_root() {
        return false;
    }
    eprintln!("SKIPPED {test}: needs root (namespaces, mounts, cgroups)");
    true
}

/// Generates `<name>_berth` and `<name>_runc` tests from `fn name(rt: &Runtime)`.
macro_rules! both_runtimes {
    ($($name:ident),* $(,)?) => {
        mod berth_tests {
            $(
                #[test]
                fn $name() {
                    if crate::suite::harness::skip_unless_root(stringify!($name)) { return; }
                    super::$name(&crate::suite::harness::berth());
                }
            )*
        }
        mod runc_tests {
            $(
                #[test]
                fn $name() {
                    if crate::suite::harness::skip_unless_root(stringify!($name)) { return; }
                    match crate::suite::harness::runc() {
                        Some(rt) => super::$name(&rt),
                        None => eprintln!("SKIPPED {} against runc: runc not installed", stringify!($name)),
                    }
                }
            )*
        }
    };
}
pub(crate) use both_runtimes;

fn rand_suffix() -> String {
    let nanos = std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .unwrap()
        .subsec_nanos();
    format!(
        "{:x}{:x}",
        std::process::id(),
        nanos ^ (rand::random::<u32>())
    )
}

/// One isolated test environment.
pub struct Env {
    pub rt: Runtime,
    pub tmp: tempfile::TempDir,
    pub root: PathBuf,
    pub bundle: PathBuf,
    pub cgroup_parent: String,
}

impl Env {
    pub fn new(rt: &Runtime) -> Self {
        let tmp = tempfile::Builder::new()
            .prefix("lowrt-test-")
            .tempdir()
            .unwrap();
        // 0755 so a container root mapped to an unprivileged host uid can reach the rootfs.
        std::fs::set_permissions(
            tmp.path(),
            std::os::unix::fs::PermissionsExt::from_mode(0o755),
        )
        .unwrap();
        let root = tmp.path().join("state");
        let bundle = tmp.path().join("bundle");
        build_busybox_rootfs(&bundle.join("rootfs"));
        Env {
            rt: rt.clone(),
            root,
            bundle,
            cgroup_parent: format!("/berth-test-{}", rand_suffix()),
            tmp,
        }
    }

    /// A runc-like default config running `args`, no terminal, own cgroup path.
    pub fn config(&self, id: &str, args: &[&str]) -> Value {
        json!({
            "ociVersion": "1.0.2-dev",
            "process": {
                "terminal": false,
                "user": {"uid": 0, "gid": 0},
                "args": args,
                "env": ["PATH=/bin", "TERM=xterm"],
                "cwd": "/",
                "capabilities": {
                    "bounding": ["CAP_AUDIT_WRITE", "CAP_KILL", "CAP_NET_BIND_SERVICE", "CAP_SETUID", "CAP_SETGID"],
                    "effective": ["CAP_AUDIT_WRITE", "CAP_KILL", "CAP_NET_BIND_SERVICE", "CAP_SETUID", "CAP_SETGID"],
                    "permitted": ["CAP_AUDIT_WRITE", "CAP_KILL", "CAP_NET_BIND_SERVICE", "CAP_SETUID", "CAP_SETGID"]
                },
                "rlimits": [{"type": "RLIMIT_NOFILE", "hard": 1024, "soft": 1024}],
                "noNewPrivileges": true
            },
            "root": {"path": "rootfs", "readonly": true},
            "hostname": "berth-test",
            "mounts": [
                {"destination": "/proc", "type": "proc", "source": "proc"},
                {"destination": "/dev", "type": "tmpfs", "source": "tmpfs", "options": ["nosuid", "strictatime", "mode=755", "size=65536k"]},
                {"destination": "/dev/pts", "type": "devpts", "source": "devpts", "options": ["nosuid", "noexec", "newinstance", "ptmxmode=0666", "mode=0620", "gid=5"]},
                {"destination": "/dev/shm", "type": "tmpfs", "source": "shm", "options": ["nosuid", "noexec", "nodev", "mode=1777", "size=65536k"]},
                {"destination": "/dev/mqueue", "type": "mqueue", "source": "mqueue", "options": ["nosuid", "noexec", "nodev"]},
                {"destination": "/sys", "type": "sysfs", "source": "sysfs", "options": ["nosuid", "noexec", "nodev", "ro"]},
                {"destination": "/sys/fs/cgroup", "type": "cgroup", "source": "cgroup", "options": ["nosuid", "noexec", "nodev", "relatime", "ro"]},
                {"destination": "/tmp", "type": "tmpfs", "source": "tmpfs", "options": ["nosuid", "nodev"]}
            ],
            "linux": {
                "cgroupsPath": format!("{}/{id}", self.cgroup_parent),
                "namespaces": [{"type": "pid"}, {"type": "network"}, {"type": "ipc"}, {"type": "uts"}, {"type": "mount"}],
                "maskedPaths": ["/proc/kcore", "/proc/timer_list", "/sys/firmware", "/etc/secret"],
                "readonlyPaths": ["/proc/sys", "/proc/sysrq-trigger"]
            }
        })
    }

    pub fn write_config(&self, config: &Value) {
        std::fs::write(
            self.bundle.join("config.json"),
            serde_json::to_vec_pretty(config).unwrap(),
        )
        .unwrap();
    }

    pub fn cmd(&self, args: &[&str]) -> Command {
        let mut c = Command::new(&self.rt.bin);
        c.arg("--root")
            .arg(&self.root)
            .args(args)
            .current_dir(&self.bundle);
        c.stdin(Stdio::null());
        c
    }

    /// Runs a runtime command to completion (with a deadline) and returns its output.
    pub fn run(&self, args: &[&str]) -> Output {
        output_with_deadline(self.cmd(args), Duration::from_secs(30))
    }

    pub fn state(&self, id: &str) -> Option<Value> {
        let out = self.run(&["state", id]);
        out.status
            .success()
            .then(|| serde_json::from_slice(&out.stdout).unwrap())
    }

    pub fn status(&self, id: &str) -> Option<String> {
        self.state(id)
            .map(|s| s["status"].as_str().unwrap().to_owned())
    }

    pub fn wait_status(&self, id: &str, want: &str) {
        poll_until(
            Duration::from_secs(10),
            || self.status(id).as_deref() == Some(want),
            &format!("{id} to be {want}"),
        );
    }

    /// Directories of this test's cgroup parent in every hierarchy, existing or not.
    pub fn cgroup_dirs(&self) -> Vec<PathBuf> {
        cgroup_hierarchies()
            .into_iter()
            .map(|h| h.join(self.cgroup_parent.trim_start_matches('/')))
            .collect()
    }

    /// Whether the container `id` left anything behind: state dir, cgroup dirs, mounts.
    pub fn assert_nothing_left(&self, id: &str) {
        assert!(
            !self.root.join(id).exists(),
            "{}: state dir of {id} left behind",
            self.rt.name
        );
        for dir in self.cgroup_dirs() {
            assert!(
                !dir.join(id).exists(),
                "{}: cgroup {} left behind",
                self.rt.name,
                dir.join(id).display()
            );
        }
        let mountinfo = std::fs::read_to_string("/proc/self/mountinfo").unwrap();
        let rootfs = self.bundle.join("rootfs");
        assert!(
            !mountinfo.contains(rootfs.to_str().unwrap()),
            "{}: mount under {} left behind",
            self.rt.name,
            rootfs.display()
        );
    }
}

impl Drop for Env {
    fn drop(&mut self) {
        if let Ok(entries) = std::fs::read_dir(&self.root) {
            for e in entries.flatten() {
                let id = e.file_name().to_string_lossy().into_owned();
                let _ = self.run(&["delete", "--force", &id]);
            }
        }
        for dir in self.cgroup_dirs() {
            remove_cgroup_tree(&dir);
        }
    }
}

pub fn cgroup_hierarchies() -> Vec<PathBuf> {
    let mountinfo = std::fs::read_to_string("/proc/self/mountinfo").unwrap_or_default();
    mountinfo
        .lines()
        .filter_map(|l| {
            let (left, right) = l.split_once(" - ")?;
            let f: Vec<&str> = left.split(' ').collect();
            (right.starts_with("cgroup ") || right.starts_with("cgroup2 "))
                .then(|| PathBuf::from(f[4]))
        })
        .collect()
}

/// rmdir depth-first; a cgroup tree can only be removed from the leaves up.
pub fn remove_cgroup_tree(dir: &Path) {
    if let Ok(entries) = std::fs::read_dir(dir) {
        for e in entries.flatten() {
            if e.file_type().map(|t| t.is_dir()).unwrap_or(false) {
                remove_cgroup_tree(&e.path());
            }
        }
    }
    let deadline = Instant::now() + Duration::from_secs(5);
    while dir.exists() && std::fs::remove_dir(dir).is_err() && Instant::now() < deadline {
        std::thread::sleep(Duration::from_millis(10));
    }
}

pub fn poll_until(timeout: Duration, mut cond: impl FnMut() -> bool, what: &str) {
    let deadline = Instant::now() + timeout;
    let mut delay = Duration::from_millis(2);
    while !cond() {
        assert!(Instant::now() < deadline, "timed out waiting for {what}");
        std::thread::sleep(delay);
        delay = (delay * 2).min(Duration::from_millis(100));
    }
}

/// Runs a command, killing it if it outlives `timeout` (a hang is a test failure).
/// Output goes through temp files, not pipes: `create` leaves init holding its stdio, so
/// waiting for pipe EOF would wait for the container.
pub fn output_with_deadline(mut cmd: Command, timeout: Duration) -> Output {
    let out_file = tempfile::tempfile().unwrap();
    let err_file = tempfile::tempfile().unwrap();
    let mut child = cmd
        .stdout(out_file.try_clone().unwrap())
        .stderr(err_file.try_clone().unwrap())
        .spawn()
        .expect("spawn runtime");
    let deadline = Instant::now() + timeout;
    let mut delay = Duration::from_millis(1);
    let status = loop {
        if let Some(status) = child.try_wait().unwrap() {
            break status;
        }
        if Instant::now() > deadline {
            let _ = child.kill();
            let _ = child.wait();
            panic!("command {cmd:?} hung for more than {timeout:?}");
        }
        std::thread::sleep(delay);
        delay = (delay * 2).min(Duration::from_millis(20));
    };
    let read = |mut f: std::fs::File| {
        use std::io::{Read, Seek};
        let mut v = Vec::new();
        f.seek(std::io::SeekFrom::Start(0)).unwrap();
        f.read_to_end(&mut v).unwrap();
        v
    };
    Output {
        status,
        stdout: read(out_file),
        stderr: read(err_file),
    }
}

/// rootfs/bin/busybox from the host's static busybox plus one symlink per applet.
pub fn build_busybox_rootfs(rootfs: &Path) {
    let bin = rootfs.join("bin");
    std::fs::create_dir_all(&bin).unwrap();
    for d in ["proc", "sys", "dev", "etc", "tmp", "root"] {
        std::fs::create_dir_all(rootfs.join(d)).unwrap();
    }
    // Like real images: a world-writable sticky /tmp (a tmpfs mounted there takes this mode).
    std::fs::set_permissions(
        rootfs.join("tmp"),
        std::os::unix::fs::PermissionsExt::from_mode(0o1777),
    )
    .unwrap();
    std::fs::copy("/bin/busybox", bin.join("busybox")).unwrap();
    let list = Command::new("/bin/busybox").arg("--list").output().unwrap();
    for applet in String::from_utf8_lossy(&list.stdout).lines() {
        if applet != "busybox" && !applet.is_empty() {
            let _ = std::os::unix::fs::symlink("busybox", bin.join(applet));
        }
    }
    std::fs::write(
        rootfs.join("etc/passwd"),
        "root:x:0:0:root:/root:/bin/sh\nnobody:x:65534:65534:nobody:/nonexistent:/bin/false\n",
    )
    .unwrap();
    std::fs::write(rootfs.join("etc/group"), "root:x:0:\nnogroup:x:65534:\n").unwrap();
    std::fs::write(rootfs.join("etc/secret"), "s3cret\n").unwrap();
}

pub fn stdout(out: &Output) -> String {
    String::from_utf8_lossy(&out.stdout).into_owned()
}

pub fn stderr(out: &Output) -> String {
    String::from_utf8_lossy(&out.stderr).into_owned()
}
