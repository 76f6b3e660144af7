//! containerd's own client against berth-highd (invariant 2): Debian's `ctr` (1.6).
//! Runs when `ctr` is in `$PATH` (or `$BERTH_CTR` names one); skips visibly otherwise.

use std::io::Read;
use std::path::PathBuf;
use std::process::{Child, Command, Output, Stdio};
use std::sync::{Arc, Mutex};
use std::time::Duration;

use anyhow::{ensure, Result};

use crate::common::{poll, skip_unless_root, Stack};

/// `$BERTH_CTR` if set, else `ctr` from `$PATH` (Debian's containerd package; CI installs it).
pub fn find_ctr() -> Option<PathBuf> {
    if let Some(p) = std::env::var_os("BERTH_CTR") {
        return Some(PathBuf::from(p));
    }
    std::env::split_paths(&std::env::var_os("PATH")?)
        .map(|d| d.join("ctr"))
        .find(|p| p.is_file())
}

pub struct Ctr {
    pub bin: PathBuf,
    pub address: PathBuf,
    /// Where ctr makes its stdio FIFOs (its default is /run/containerd/fifo).
    pub fifo_dir: PathBuf,
}

impl Ctr {
    pub fn run(&self, args: &[&str]) -> Result<Output> {
        // The commands that make FIFOs take --fifo-dir after the (sub)command.
        let split = match args {
            ["run", ..] => 1,
            ["tasks" | "t", "exec" | "start", ..] => 2,
            _ => 0,
        };
        let mut cmd = Command::new(&self.bin);
        cmd.arg("--address")
            .arg(&self.address)
            .args(["--namespace", "ctrtest"])
            .args(&args[..split]);
        if split > 0 {
            cmd.arg("--fifo-dir").arg(&self.fifo_dir);
        }
        let out = cmd.args(&args[split..]).output()?;
        Ok(out)
    }

    /// The `ctr` to drive `stack` with, or None after printing why the test is skipped.
    pub fn for_test(test: &str, stack: &Stack) -> Option<Ctr> {
        if skip_unless_root(test) {
            return None;
        }
        let Some(bin) = find_ctr() else {
            eprintln!("SKIPPED {test}: no ctr in $PATH (apt-get install containerd) or $BERTH_CTR");
            return None;
        };
        Some(Ctr {
            bin,
            address: stack.address.clone(),
            fifo_dir: stack.dir.path().join("fifo"),
        })
    }

    /// `ctr events` in the background; its output accumulates in the returned buffer.
    pub fn events(&self) -> Result<Events> {
        let mut child = Command::new(&self.bin)
            .arg("--address")
            .arg(&self.address)
            .arg("events")
            .stdout(Stdio::piped())
            .stderr(Stdio::null())
            .spawn()?;
        let out = Arc::new(Mutex::new(String::new()));
        let mut stdout = child.stdout.take().expect("piped");
        let sink = out.clone();
        std::thread::spawn(move || {
            let mut buf = [0u8; 4096];
            while let Ok(n @ 1..) = stdout.read(&mut buf) {
                sink.lock()
                    .unwrap()
                    .push_str(&String::from_utf8_lossy(&buf[..n]));
            }
        });
        Ok(Events { child, out })
    }

    /// Runs and requires success; returns stdout.
    pub fn ok(&self, args: &[&str]) -> Result<String> {
        let out = self.run(args)?;
        ensure!(
            out.status.success(),
            "ctr {args:?} failed: {}{}",
            String::from_utf8_lossy(&out.stdout),
            String::from_utf8_lossy(&out.stderr)
        );
        Ok(String::from_utf8_lossy(&out.stdout).into_owned())
    }
}

/// A running `ctr events`, killed (by its pid) when dropped.
pub struct Events {
    child: Child,
    out: Arc<Mutex<String>>,
}

impl Events {
    /// Waits until a line mentions both `topic` and `needle`.
    pub async fn wait_for(&self, topic: &str, needle: &str) -> Result<()> {
        poll(
            &format!("ctr events to show {topic} {needle}"),
            Duration::from_secs(10),
            || {
                let out = self.out.lock().unwrap();
                out.lines()
                    .any(|l| l.contains(topic) && l.contains(needle))
                    .then_some(())
            },
        )
        .await
    }
}

impl Drop for Events {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

/// `run --rootfs`, `run -d`, `tasks ls/ps/exec/pause/resume/kill/rm`,
/// `containers ls/info/rm` and `events`, all through ctr.
#[tokio::test(flavor = "multi_thread")]
async fn ctr_runs_execs_and_kills() -> Result<()> {
    let mut stack = Stack::new();
    let Some(ctr) = Ctr::for_test("ctr_runs_execs_and_kills", &stack) else {
        return Ok(());
    };
    stack.start().await?;
    let rootfs = stack.rootfs().to_string_lossy().into_owned();
    let version = ctr.ok(&["version"])?;
    ensure!(version.contains(env!("CARGO_PKG_VERSION")), "{version}");
    let events = ctr.events()?;

    // Foreground run: ctr creates the container, the task, waits and deletes.
    let cg1 = format!("{}/c1", stack.cgroup_parent);
    let out = ctr.ok(&[
        "run",
        "--rootfs",
        "--cgroup",
        &cg1,
        &rootfs,
        "c1",
        "/bin/echo",
        "hi-from-ctr",
    ])?;
    ensure!(out.contains("hi-from-ctr"), "{out}");
    events.wait_for("/tasks/exit", "c1").await?;
    events.wait_for("/tasks/delete", "c1").await?;

    let cg2 = format!("{}/c2", stack.cgroup_parent);
    ctr.ok(&[
        "run",
        "-d",
        "--rootfs",
        "--cgroup",
        &cg2,
        &rootfs,
        "c2",
        "/bin/sleep",
        "1000",
    ])?;
    events.wait_for("/tasks/start", "c2").await?;
    let status = |want: &str| -> Result<bool> {
        let tasks = ctr.ok(&["tasks", "ls"])?;
        Ok(tasks
            .lines()
            .any(|l| l.starts_with("c2") && l.contains(want)))
    };
    ensure!(status("RUNNING")?, "c2 not RUNNING");
    let pid = ctr
        .ok(&["tasks", "ls"])?
        .lines()
        .find(|l| l.starts_with("c2"))
        .and_then(|l| l.split_whitespace().nth(1).map(str::to_string))
        .unwrap_or_default();
    let ps = ctr.ok(&["tasks", "ps", "c2"])?;
    ensure!(
        ps.lines().any(|l| l.starts_with(&pid)),
        "pid {pid} not in: {ps}"
    );
    let out = ctr.ok(&[
        "tasks",
        "exec",
        "--exec-id",
        "e1",
        "c2",
        "/bin/echo",
        "exec-works",
    ])?;
    ensure!(out.contains("exec-works"), "{out}");
    events.wait_for("/tasks/exec-started", "e1").await?;

    ctr.ok(&["tasks", "pause", "c2"])?;
    ensure!(status("PAUSED")?, "c2 not PAUSED");
    events.wait_for("/tasks/paused", "c2").await?;
    ctr.ok(&["tasks", "resume", "c2"])?;
    ensure!(status("RUNNING")?, "c2 not RUNNING after resume");

    let listed = ctr.ok(&["containers", "ls", "-q"])?;
    ensure!(listed.lines().any(|l| l == "c2"), "{listed}");
    let info: serde_json::Value = serde_json::from_str(&ctr.ok(&["containers", "info", "c2"])?)?;
    ensure!(info["ID"] == "c2", "{info}");
    ensure!(info["Runtime"]["Name"] == "io.containerd.runc.v2", "{info}");
    ensure!(info["Spec"]["process"]["args"][0] == "/bin/sleep", "{info}");
    // The container cannot go while its task exists.
    let refused = ctr.run(&["containers", "rm", "c2"])?;
    ensure!(
        !refused.status.success(),
        "containers rm of a running task succeeded"
    );
    ctr.ok(&["tasks", "kill", "-s", "9", "c2"])?;
    poll("c2 to stop", Duration::from_secs(10), || {
        status("STOPPED").ok().filter(|s| *s)
    })
    .await?;
    events.wait_for("/tasks/exit", "c2").await?;
    ctr.ok(&["tasks", "rm", "c2"])?;
    ctr.ok(&["containers", "rm", "c1", "c2"])?;
    events.wait_for("/containers/delete", "c2").await?;
    let left = ctr.ok(&["containers", "ls", "-q"])?;
    ensure!(left.trim().is_empty(), "{left}");
    let left = ctr.ok(&["tasks", "ls", "-q"])?;
    ensure!(left.trim().is_empty(), "{left}");
    Ok(())
}
