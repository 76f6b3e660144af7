//! A busybox bundle, a shim started on it, a fake highd events server, and cleanup.

use std::path::{Path, PathBuf};
use std::process::Command;
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use anyhow::{bail, Context, Result};
use berth_proto::any::Event;
use berth_proto::containerd::services::events::v1::events_server::{Events, EventsServer};
use berth_proto::containerd::services::events::v1::{
    Envelope, ForwardRequest, PublishRequest, SubscribeRequest,
};
use berth_proto::containerd::task::v2::task_client::TaskClient;
use berth_proto::containerd::task::v2::{CreateTaskRequest, DeleteRequest, ShutdownRequest};
use berth_proto::containerd::types::Mount;
use berth_proto::transport::{bind_unix, connect_unix, serve_unix};
use tonic::transport::Channel;
use tonic::{Request, Response, Status};

const BUILT_SHIM: &str = env!("CARGO_BIN_EXE_berth-shim");

/// The shim under test: `BERTH_TEST_SHIM` (e.g. a release build), else this build's.
pub fn shim() -> String {
    std::env::var("BERTH_TEST_SHIM").unwrap_or_else(|_| BUILT_SHIM.to_owned())
}

/// Prints a visible skip and returns true when the test cannot run here.
pub fn skip_unless_root(name: &str) -> bool {
    if nix::unistd::geteuid().is_root() {
        return false;
    }
    eprintln!("SKIPPED {name}: needs root");
    true
}

/// The runtime under test: `BERTH_TEST_RUNTIME` (e.g. berth-lowrt), else runc.
pub fn runtime() -> String {
    std::env::var("BERTH_TEST_RUNTIME").unwrap_or_else(|_| "runc".to_owned())
}

/// Polls `check` until it returns Some or `limit` passes.
pub async fn poll<T>(limit: Duration, mut check: impl FnMut() -> Option<T>) -> Option<T> {
    let deadline = Instant::now() + limit;
    loop {
        if let Some(v) = check() {
            return Some(v);
        }
        if Instant::now() > deadline {
            return None;
        }
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
}

/// Runs a test body with a deadline, so a hung call fails the test instead of hanging
/// it; the body's fixture is dropped either way, which cleans up.
pub async fn bounded(body: impl std::future::Future<Output = Result<()>>) -> Result<()> {
    match tokio::time::timeout(Duration::from_secs(120), body).await {
        Ok(result) => result,
        Err(_) => bail!("test did not finish within 120s"),
    }
}

pub fn pid_alive(pid: u32) -> bool {
    // A zombie has exited; only its parent's wait is missing.
    match std::fs::read_to_string(format!("/proc/{pid}/stat")) {
        Ok(stat) => !stat
            .rsplit(')')
            .next()
            .unwrap_or("")
            .trim_start()
            .starts_with('Z'),
        Err(_) => false,
    }
}

/// One test's world: temp dirs, bundle, cgroup parent, and the shim once started.
pub struct Fixture {
    pub dir: tempfile::TempDir,
    pub id: String,
    pub bundle: PathBuf,
    pub image: PathBuf,
    pub events_sock: PathBuf,
    pub runtime_root: PathBuf,
    pub cgroup_parent: String,
    /// `--cgroup` for the shim, when set (a path under `cgroup_parent`, removed with it).
    pub shim_cgroup: Option<String>,
    pub shim_pid: Option<u32>,
}

impl Fixture {
    /// A bundle whose init runs `args` (busybox applets) with no terminal.
    pub fn new(args: &[&str]) -> Result<Fixture> {
        Self::with_bundle_at(args, "bundle")
    }

    /// Like `new`, with the bundle so deep that `<bundle>/shim.sock` exceeds sun_path.
    pub fn deep(args: &[&str]) -> Result<Fixture> {
        let long = format!("{0}/{0}/bundle", "d".repeat(60));
        Self::with_bundle_at(args, &long)
    }

    fn with_bundle_at(args: &[&str], bundle_rel: &str) -> Result<Fixture> {
        let dir = tempfile::tempdir()?;
        let rand: u32 =
            std::process::id() ^ (Instant::now().elapsed().subsec_nanos() << 8) ^ rand_u32();
        let id = format!("t{rand:08x}");
        let bundle = dir.path().join(bundle_rel);
        std::fs::create_dir_all(&bundle)?;
        let image = dir.path().join("image");
        make_busybox_rootfs(&image)?;
        let cgroup_parent = format!("berth-test-{rand:08x}");
        let mut fx = Fixture {
            events_sock: dir.path().join("highd.sock"),
            runtime_root: dir.path().join("runtime"),
            dir,
            id,
            bundle,
            image,
            cgroup_parent,
            shim_cgroup: None,
            shim_pid: None,
        };
        fx.write_config(args, false)?;
        Ok(fx)
    }

    pub fn write_config(&mut self, args: &[&str], terminal: bool) -> Result<()> {
        let path = self.bundle.join("config.json");
        let _ = std::fs::remove_file(&path);
        let out = Command::new("runc")
            .args(["spec", "--bundle"])
            .arg(&self.bundle)
            .output()
            .context("runc spec")?;
        if !out.status.success() {
            bail!("runc spec: {}", String::from_utf8_lossy(&out.stderr));
        }
        let mut spec: serde_json::Value = serde_json::from_slice(&std::fs::read(&path)?)?;
        spec["process"]["terminal"] = terminal.into();
        spec["process"]["args"] = args.iter().map(|a| a.to_string()).collect();
        spec["root"]["readonly"] = false.into();
        spec["hostname"] = "berth-test".into();
        spec["linux"]["cgroupsPath"] = format!("/{}/{}", self.cgroup_parent, self.id).into();
        std::fs::write(&path, serde_json::to_vec_pretty(&spec)?)?;
        Ok(())
    }

    /// Limits the container's memory (and memory+swap) to `bytes`.
    pub fn set_memory_limit(&self, bytes: u64) -> Result<()> {
        let path = self.bundle.join("config.json");
        let mut spec: serde_json::Value = serde_json::from_slice(&std::fs::read(&path)?)?;
        spec["linux"]["resources"]["memory"] = serde_json::json!({"limit": bytes, "swap": bytes});
        std::fs::write(&path, serde_json::to_vec_pretty(&spec)?)?;
        Ok(())
    }

    pub fn path(&self, name: &str) -> PathBuf {
        self.dir.path().join(name)
    }

    pub fn start_command(&self) -> Command {
        self.start_command_with(&self.id, &runtime())
    }

    pub fn start_command_with(&self, id: &str, runtime: &str) -> Command {
        let mut cmd = Command::new(shim());
        cmd.arg("start")
            .args(["--namespace", "testns", "--id", id])
            .arg("--bundle")
            .arg(&self.bundle)
            .arg("--address")
            .arg(&self.events_sock)
            .args(["--runtime", runtime])
            .arg("--runtime-root")
            .arg(&self.runtime_root)
            .arg("--debug");
        if let Some(cgroup) = &self.shim_cgroup {
            cmd.args(["--cgroup", cgroup]);
        }
        cmd
    }

    /// Runs `berth-shim start` and connects to the socket it prints.
    pub async fn start_shim(&mut self) -> Result<TaskClient<Channel>> {
        let out = self.start_command().output().context("berth-shim start")?;
        if !out.status.success() {
            bail!(
                "berth-shim start failed: {}",
                String::from_utf8_lossy(&out.stderr)
            );
        }
        let socket = PathBuf::from(String::from_utf8(out.stdout)?.trim());
        assert_eq!(socket, self.bundle.join("shim.sock"));
        let pid: u32 = std::fs::read_to_string(self.bundle.join("shim.pid"))?
            .trim()
            .parse()?;
        self.shim_pid = Some(pid);
        let address = std::fs::read_to_string(self.bundle.join("address"))?;
        assert_eq!(Path::new(address.trim()), socket);
        Ok(TaskClient::new(connect_unix(&socket).await?))
    }

    pub fn create_request(&self, stdout: &str, stderr: &str) -> CreateTaskRequest {
        CreateTaskRequest {
            id: self.id.clone(),
            bundle: self.bundle.display().to_string(),
            rootfs: vec![Mount {
                r#type: "bind".into(),
                source: self.image.display().to_string(),
                target: String::new(),
                options: vec!["rbind".into(), "rw".into()],
            }],
            stdout: stdout.into(),
            stderr: stderr.into(),
            ..Default::default()
        }
    }

    pub fn rootfs_mounted(&self) -> bool {
        let rootfs = self.bundle.join("rootfs").display().to_string();
        std::fs::read_to_string("/proc/self/mountinfo")
            .unwrap_or_default()
            .lines()
            .any(|l| l.split(' ').nth(4) == Some(rootfs.as_str()))
    }

    /// Delete + Shutdown, then checks the shim is gone and left no mount or socket.
    pub async fn delete_and_shutdown(&mut self, client: &mut TaskClient<Channel>) -> Result<u32> {
        let deleted = client
            .delete(DeleteRequest {
                id: self.id.clone(),
                exec_id: String::new(),
            })
            .await?
            .into_inner();
        assert!(!self.rootfs_mounted(), "rootfs still mounted after Delete");
        client
            .shutdown(ShutdownRequest {
                id: self.id.clone(),
                now: false,
            })
            .await?;
        let pid = self.shim_pid.context("no shim")?;
        let gone = poll(Duration::from_secs(15), || (!pid_alive(pid)).then_some(())).await;
        assert!(gone.is_some(), "shim {pid} still running after Shutdown");
        assert!(
            !self.bundle.join("shim.sock").exists(),
            "socket left behind"
        );
        self.shim_pid = None;
        Ok(deleted.exit_status)
    }
}

impl Drop for Fixture {
    fn drop(&mut self) {
        if let Some(pid) = self.shim_pid.take() {
            let _ = Command::new(runtime())
                .arg("--root")
                .arg(&self.runtime_root)
                .args(["delete", "--force", &self.id])
                .output();
            let _ = nix::sys::signal::kill(
                nix::unistd::Pid::from_raw(pid as i32),
                nix::sys::signal::Signal::SIGKILL,
            );
            // Its cgroup can only be removed once it is gone.
            let deadline = Instant::now() + Duration::from_secs(5);
            while pid_alive(pid) && Instant::now() < deadline {
                std::thread::sleep(Duration::from_millis(10));
            }
        }
        let _ = nix::mount::umount2(
            &self.bundle.join("rootfs"),
            nix::mount::MntFlags::MNT_DETACH,
        );
        remove_cgroups(&self.cgroup_parent);
    }
}

fn rand_u32() -> u32 {
    let mut b = [0u8; 4];
    if let Ok(mut f) = std::fs::File::open("/dev/urandom") {
        use std::io::Read;
        let _ = f.read_exact(&mut b);
    }
    u32::from_ne_bytes(b)
}

fn make_busybox_rootfs(root: &Path) -> Result<()> {
    for d in ["bin", "proc", "dev", "sys", "tmp", "etc"] {
        std::fs::create_dir_all(root.join(d))?;
    }
    std::fs::copy("/bin/busybox", root.join("bin/busybox")).context("copy busybox")?;
    for applet in [
        "sh", "echo", "sleep", "cat", "true", "ls", "kill", "stty", "head", "tail",
    ] {
        std::os::unix::fs::symlink("busybox", root.join("bin").join(applet))?;
    }
    Ok(())
}

/// Removes `/sys/fs/cgroup/<ctrl>/<parent>` (and the cgroups under it) everywhere.
pub fn remove_cgroups(parent: &str) {
    let Ok(ctrls) = std::fs::read_dir("/sys/fs/cgroup") else {
        return;
    };
    for ctrl in ctrls.flatten() {
        let dir = ctrl.path().join(parent);
        if let Ok(children) = std::fs::read_dir(&dir) {
            for child in children.flatten() {
                if child.path().is_dir() {
                    let _ = std::fs::remove_dir(child.path());
                }
            }
        }
        let _ = std::fs::remove_dir(&dir);
    }
}

/// A stand-in for highd's Events service that records what it is sent.
#[derive(Clone, Default)]
pub struct FakeEvents {
    pub received: Arc<Mutex<Vec<(String, String, Event)>>>,
}

impl FakeEvents {
    /// Serves on `path` in the background.
    pub fn serve(&self, path: &Path) -> Result<()> {
        let listener = bind_unix(path)?;
        let router =
            tonic::transport::Server::builder().add_service(EventsServer::new(self.clone()));
        tokio::spawn(serve_unix(router, listener));
        Ok(())
    }

    /// Topics received so far, in order.
    pub fn topics(&self) -> Vec<String> {
        let got = self.received.lock().unwrap_or_else(|e| e.into_inner());
        got.iter().map(|(_, topic, _)| topic.clone()).collect()
    }

    pub fn events(&self) -> Vec<(String, String, Event)> {
        self.received
            .lock()
            .unwrap_or_else(|e| e.into_inner())
            .clone()
    }
}

#[tonic::async_trait]
impl Events for FakeEvents {
    async fn publish(&self, req: Request<PublishRequest>) -> Result<Response<()>, Status> {
        let ns = berth_proto::namespace_from_request(&req)?;
        let req = req.into_inner();
        let any = req
            .event
            .ok_or_else(|| Status::invalid_argument("no event"))?;
        let event = Event::from_any(&any).map_err(|e| Status::invalid_argument(e.to_string()))?;
        if event.topic() != req.topic {
            return Err(Status::invalid_argument("topic does not match event"));
        }
        self.received
            .lock()
            .unwrap_or_else(|e| e.into_inner())
            .push((ns, req.topic, event));
        Ok(Response::new(()))
    }

    async fn forward(&self, _: Request<ForwardRequest>) -> Result<Response<()>, Status> {
        Err(Status::unimplemented("forward"))
    }

    type SubscribeStream = tokio_stream::Empty<Result<Envelope, Status>>;

    async fn subscribe(
        &self,
        _: Request<SubscribeRequest>,
    ) -> Result<Response<Self::SubscribeStream>, Status> {
        Err(Status::unimplemented("subscribe"))
    }
}
