//! containerd's own client against berth-highd (invariant 2): Debian's `ctr` (1.6).
//! Needs a `ctr` binary: `$BERTH_CTR`, else `ctr` in `$PATH`; skips visibly without one.

use std::path::PathBuf;
use std::process::{Command, Output};

use anyhow::{ensure, Result};

use crate::common::{skip_unless_root, Stack};

fn find_ctr() -> Option<PathBuf> {
    if let Some(p) = std::env::var_os("BERTH_CTR") {
        return Some(PathBuf::from(p));
    }
    let path = std::env::var_os("PATH")?;
    std::env::split_paths(&path)
        .map(|d| d.join("ctr"))
        .find(|p| p.is_file())
}

struct Ctr {
    bin: PathBuf,
    address: PathBuf,
}

impl Ctr {
    fn run(&self, args: &[&str]) -> Result<Output> {
        let out = Command::new(&self.bin)
            .arg("--address")
            .arg(&self.address)
            .args(["--namespace", "ctrtest"])
            .args(args)
            .output()?;
        Ok(out)
    }

    /// Runs and requires success; returns stdout.
    fn ok(&self, args: &[&str]) -> Result<String> {
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

#[tokio::test(flavor = "multi_thread")]
async fn ctr_runs_execs_and_kills() -> Result<()> {
    if skip_unless_root("ctr_runs_execs_and_kills") {
        return Ok(());
    }
    let Some(bin) = find_ctr() else {
        eprintln!("SKIPPED ctr_runs_execs_and_kills: no ctr (set BERTH_CTR or put ctr in PATH)");
        return Ok(());
    };
    let mut stack = Stack::new();
    stack.start().await?;
    let ctr = Ctr {
        bin,
        address: stack.address.clone(),
    };
    let rootfs = stack.rootfs().to_string_lossy().into_owned();
    let version = ctr.ok(&["version"])?;
    ensure!(version.contains(env!("CARGO_PKG_VERSION")), "{version}");

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
    let tasks = ctr.ok(&["tasks", "ls"])?;
    ensure!(
        tasks
            .lines()
            .any(|l| l.starts_with("c2") && l.contains("RUNNING")),
        "{tasks}"
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
    // The container cannot go while its task exists.
    let refused = ctr.run(&["containers", "rm", "c2"])?;
    ensure!(
        !refused.status.success(),
        "containers rm of a running task succeeded"
    );
    ctr.ok(&["tasks", "kill", "-s", "9", "c2"])?;
    crate::common::poll("c2 to stop", std::time::Duration::from_secs(10), || {
        ctr.ok(&["tasks", "ls"])
            .ok()
            .filter(|t| t.contains("STOPPED"))
            .map(|_| ())
    })
    .await?;
    ctr.ok(&["tasks", "rm", "c2"])?;
    ctr.ok(&["containers", "rm", "c1", "c2"])?;
    let left = ctr.ok(&["containers", "ls", "-q"])?;
    ensure!(left.trim().is_empty(), "{left}");
    Ok(())
}
