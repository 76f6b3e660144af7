//! Test harness: a real berth-highd on temp dirs, with a busybox rootfs and cleanup of
//! everything it may leave behind (shims, containers, mounts, cgroups).

use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::time::{Duration, Instant};

use anyhow::{bail, Context, Result};
use berth_proto::containerd::services::containers::v1::{
    container::Runtime, containers_client::ContainersClient, Container, CreateContainerRequest,
};
use berth_proto::containerd::services::tasks::v1::{tasks_client::TasksClient, CreateTaskRequest};
use berth_proto::containerd::types::Mount;
use tonic::transport::Channel;

pub const NS: &str = "berth-test";
pub const RUNTIME_NAME: &str = "io.containerd.runc.v2";

pub fn is_root() -> bool {
    nix::unistd::geteuid().is_root()
}

/// Returns true (after printing a visible notice) when the test cannot run here.
pub fn skip_unless_root(test: &str) -> bool {
    if is_root() {
        return false;
    }
    eprintln!("SKIPPED {test}: needs root (namespaces, mounts, cgroups)");
    true
}

/// target/debug, where cargo put berth-highd, berth-shim and berth-lowrt.
pub fn bin_dir() -> PathBuf {
    let exe = std::env::current_exe().expect("current_exe");
    exe.parent()
        .and_then(Path::parent)
        .expect("target dir")
        .to_path_buf()
}

pub fn bin(name: &str) -> PathBuf {
    bin_dir().join(name)
}

/// Polls `f` until it returns Some, or fails after `timeout`.
pub async fn poll<T>(what: &str, timeout: Duration, mut f: impl FnMut() -> Option<T>) -> Result<T> {
    let until = Instant::now() + timeout;
    loop {
        if let Some(v) = f() {
            return Ok(v);
        }
        if Instant::now() > until {
            bail!("timed out after {timeout:?} waiting for {what}");
        }
        tokio::time::sleep(Duration::from_millis(25)).await;
    }
}

pub fn req<T>(msg: T) -> tonic::Request<T> {
    berth_proto::with_namespace(msg, NS).expect("namespace")
}

pub struct Stack {
    pub dir: tempfile::TempDir,
    pub root: PathBuf,
    pub state: PathBuf,
    pub address: PathBuf,
    pub extra_args: Vec<String>,
    /// The cgroup parent containers are put under, e.g. `/berth-test-bh-Ab12Cd`.
    pub cgroup_parent: String,
    child: Option<Child>,
}

impl Stack {
    pub fn new() -> Stack {
        let dir = tempfile::Builder::new()
            .prefix("bh-")
            .tempdir_in("/tmp")
            .expect("tempdir");
        let name = dir
            .path()
            .file_name()
            .unwrap()
            .to_string_lossy()
            .into_owned();
        Stack {
            root: dir.path().join("root"),
            state: dir.path().join("state"),
            address: dir.path().join("highd.sock"),
            cgroup_parent: format!("/berth-test-{name}"),
            extra_args: Vec::new(),
            dir,
            child: None,
        }
    }

    /// Starts berth-highd and waits until its socket accepts gRPC.
    pub async fn start(&mut self) -> Result<Channel> {
        let mut cmd = Command::new(bin("berth-highd"));
        cmd.arg("--root")
            .arg(&self.root)
            .arg("--state")
            .arg(&self.state)
            .arg("--address")
            .arg(&self.address)
            .arg("--log-level")
            .arg("debug")
            .args(&self.extra_args);
        if let Some(rt) = std::env::var_os("BERTH_TEST_RUNTIME") {
            cmd.arg("--runtime").arg(rt);
        }
        let log = std::fs::OpenOptions::new()
            .create(true)
            .append(true)
            .open(self.dir.path().join("highd.log"))?;
        cmd.stdin(Stdio::null())
            .stdout(log.try_clone()?)
            .stderr(log);
        self.child = Some(cmd.spawn().context("spawn berth-highd")?);
        let until = Instant::now() + Duration::from_secs(20);
        loop {
            if let Some(status) = self.child.as_mut().unwrap().try_wait()? {
                bail!("berth-highd exited early ({status}); log:\n{}", self.log());
            }
            if let Ok(ch) = berth_proto::transport::connect_unix(&self.address).await {
                return Ok(ch);
            }
            if Instant::now() > until {
                bail!("berth-highd did not listen in time; log:\n{}", self.log());
            }
            tokio::time::sleep(Duration::from_millis(25)).await;
        }
    }

    pub fn log(&self) -> String {
        std::fs::read_to_string(self.dir.path().join("highd.log")).unwrap_or_default()
    }

    pub fn pid(&self) -> Option<u32> {
        self.child.as_ref().map(Child::id)
    }

    /// SIGKILL, as a crash would.
    pub fn kill(&mut self) {
        if let Some(mut c) = self.child.take() {
            let _ = c.kill();
            let _ = c.wait();
        }
    }

    /// SIGTERM and wait for a graceful exit.
    pub async fn terminate(&mut self) -> Result<std::process::ExitStatus> {
        let mut c = self.child.take().context("not running")?;
        let pid = nix::unistd::Pid::from_raw(c.id() as i32);
        nix::sys::signal::kill(pid, nix::sys::signal::Signal::SIGTERM)?;
        let status = poll(
            "highd to exit after SIGTERM",
            Duration::from_secs(10),
            || c.try_wait().ok().flatten(),
        )
        .await;
        if status.is_err() {
            let _ = c.kill();
            let _ = c.wait();
        }
        status
    }

    /// A rootfs with static busybox and its applets as symlinks.
    pub fn rootfs(&self) -> PathBuf {
        let rootfs = self.dir.path().join("rootfs");
        if rootfs.join("bin/busybox").exists() {
            return rootfs;
        }
        for d in ["bin", "proc", "dev", "sys", "tmp", "etc", "root"] {
            std::fs::create_dir_all(rootfs.join(d)).unwrap();
        }
        std::fs::copy("/bin/busybox", rootfs.join("bin/busybox"))
            .expect("copy /bin/busybox (apt-get install busybox-static)");
        for applet in [
            "sh", "echo", "sleep", "cat", "true", "false", "ls", "touch", "test", "[",
        ] {
            std::os::unix::fs::symlink("busybox", rootfs.join("bin").join(applet)).unwrap();
        }
        rootfs
    }

    pub fn rootfs_mounts(&self) -> Vec<Mount> {
        vec![Mount {
            r#type: "bind".into(),
            source: self.rootfs().to_string_lossy().into_owned(),
            target: String::new(),
            options: vec!["rbind".into(), "rw".into()],
        }]
    }

    /// An OCI spec like `runc spec`'s, without a terminal, running `args`.
    pub fn spec(&self, id: &str, args: &[&str]) -> Vec<u8> {
        let spec = serde_json::json!({
            "ociVersion": "1.0.2",
            "process": {
                "terminal": false,
                "user": {"uid": 0, "gid": 0},
                "args": args,
                "env": ["PATH=/bin", "HOME=/root"],
                "cwd": "/",
                "capabilities": {
                    "bounding": ["CAP_AUDIT_WRITE", "CAP_KILL", "CAP_NET_BIND_SERVICE"],
                    "effective": ["CAP_AUDIT_WRITE", "CAP_KILL", "CAP_NET_BIND_SERVICE"],
                    "permitted": ["CAP_AUDIT_WRITE", "CAP_KILL", "CAP_NET_BIND_SERVICE"]
                },
                "noNewPrivileges": true
            },
            "root": {"path": "rootfs", "readonly": false},
            "hostname": id,
            "mounts": [
                {"destination": "/proc", "type": "proc", "source": "proc"},
                {"destination": "/dev", "type": "tmpfs", "source": "tmpfs",
                 "options": ["nosuid", "strictatime", "mode=755", "size=65536k"]},
                {"destination": "/dev/pts", "type": "devpts", "source": "devpts",
                 "options": ["nosuid", "noexec", "newinstance", "ptmxmode=0666", "mode=0620"]},
                {"destination": "/sys", "type": "sysfs", "source": "sysfs",
                 "options": ["nosuid", "noexec", "nodev", "ro"]}
            ],
            "linux": {
                "cgroupsPath": format!("{}/{id}", self.cgroup_parent),
                "resources": {"devices": [{"allow": false, "access": "rwm"}]},
                "namespaces": [
                    {"type": "pid"}, {"type": "network"}, {"type": "ipc"},
                    {"type": "uts"}, {"type": "mount"}
                ]
            }
        });
        serde_json::to_vec(&spec).unwrap()
    }

    pub async fn create_container(&self, ch: &Channel, id: &str, args: &[&str]) -> Result<()> {
        let container = Container {
            id: id.into(),
            runtime: Some(Runtime {
                name: RUNTIME_NAME.into(),
                options: None,
            }),
            spec: Some(berth_proto::any::pack_json(
                berth_proto::any::SPEC_TYPE_URL,
                self.spec(id, args),
            )),
            ..Container::default()
        };
        ContainersClient::new(ch.clone())
            .create(req(CreateContainerRequest {
                container: Some(container),
            }))
            .await?;
        Ok(())
    }

    /// Container + task with stdout/stderr to `stdout` (a stdio string); returns the pid.
    pub async fn create_task(
        &self,
        ch: &Channel,
        id: &str,
        args: &[&str],
        stdout: &str,
    ) -> Result<u32> {
        self.create_container(ch, id, args).await?;
        let resp = TasksClient::new(ch.clone())
            .create(req(CreateTaskRequest {
                container_id: id.into(),
                rootfs: self.rootfs_mounts(),
                stdout: stdout.into(),
                stderr: stdout.into(),
                ..CreateTaskRequest::default()
            }))
            .await?;
        Ok(resp.into_inner().pid)
    }

    /// Kills whatever the tests started and removes mounts and cgroups.
    fn cleanup(&mut self) {
        self.kill();
        let pids = |name: &str| -> Vec<i32> {
            let mut out = Vec::new();
            for ns in std::fs::read_dir(&self.state)
                .into_iter()
                .flatten()
                .flatten()
            {
                for task in std::fs::read_dir(ns.path()).into_iter().flatten().flatten() {
                    if let Ok(s) = std::fs::read_to_string(task.path().join(name)) {
                        out.extend(s.trim().parse::<i32>().ok().filter(|p| *p > 1));
                    }
                }
            }
            out
        };
        for pid in pids("init.pid").into_iter().chain(pids("shim.pid")) {
            let _ = nix::sys::signal::kill(
                nix::unistd::Pid::from_raw(pid),
                nix::sys::signal::Signal::SIGKILL,
            );
        }
        // Unmount anything left under our temp dir, deepest first.
        let prefix = self.dir.path().to_string_lossy().into_owned();
        let mut mounts: Vec<String> = std::fs::read_to_string("/proc/self/mountinfo")
            .unwrap_or_default()
            .lines()
            .filter_map(|l| l.split(' ').nth(4).map(str::to_string))
            .filter(|m| m.starts_with(&prefix))
            .collect();
        mounts.sort_by_key(|m| std::cmp::Reverse(m.len()));
        for m in mounts {
            let _ = nix::mount::umount2(m.as_str(), nix::mount::MntFlags::MNT_DETACH);
        }
        remove_cgroups(&self.cgroup_parent);
    }
}

impl Drop for Stack {
    fn drop(&mut self) {
        self.cleanup();
    }
}

/// Removes `/sys/fs/cgroup/<hierarchy><parent>` trees we created (v1 and the v2 mount).
fn remove_cgroups(parent: &str) {
    let Ok(hierarchies) = std::fs::read_dir("/sys/fs/cgroup") else {
        return;
    };
    for h in hierarchies.flatten() {
        let top = h.path().join(parent.trim_start_matches('/'));
        if !top.is_dir() {
            continue;
        }
        // Processes may take a moment to leave after SIGKILL; retry briefly.
        let until = Instant::now() + Duration::from_secs(5);
        while rmdir_tree(&top).is_err() && Instant::now() < until {
            std::thread::sleep(Duration::from_millis(50));
        }
    }
}

fn rmdir_tree(dir: &Path) -> std::io::Result<()> {
    for e in std::fs::read_dir(dir)?.flatten() {
        if e.file_type()?.is_dir() {
            rmdir_tree(&e.path())?;
        }
    }
    std::fs::remove_dir(dir)
}
