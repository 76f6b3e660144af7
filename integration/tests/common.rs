//! Test registration and helpers shared by the test modules.

use std::time::Duration;

use anyhow::{bail, Context, Result};
use berth_integration::prereq::Need;
use berth_integration::{stack, wait_until, Stack};
use serde_json::Value;

/// One test: its name, what it needs from the machine, and its body.
pub struct Spec {
    pub name: &'static str,
    pub needs: &'static [Need],
    pub run: fn() -> Result<()>,
}

/// Needs of a test driven by the docker CLI.
pub const DOCKER: &[Need] = &[Need::Root, Need::Busybox, Need::Docker];
/// Needs of a test driven by `berth` only.
pub const BERTH: &[Need] = &[Need::Root, Need::Busybox];

/// Runs a test body; on failure the report carries the tails of the daemon logs.
pub fn run_test(body: fn() -> Result<()>) -> Result<(), libtest_mimic::Failed> {
    body().map_err(|e| {
        let logs = stack::take_log_tails();
        format!("{e:#}\n{logs}").into()
    })
}

/// `docker inspect NAME` → the single object.
pub fn inspect(s: &Stack, name: &str) -> Result<Value> {
    let out = s.docker(&["inspect", name])?.ok()?;
    let v: Value = serde_json::from_str(&out.stdout)
        .with_context(|| format!("docker inspect output is not JSON: {}", out.stdout))?;
    v.get(0)
        .cloned()
        .context("docker inspect returned an empty array")
}

/// `State.Running` of the container, from `docker inspect`.
pub fn running(s: &Stack, name: &str) -> Result<bool> {
    Ok(inspect(s, name)?["State"]["Running"] == true)
}

/// Polls `docker inspect` until `State.Status` is `status`; returns the object.
pub fn wait_status(s: &Stack, name: &str, status: &str) -> Result<Value> {
    wait_until(
        &format!("container {name} to be {status}"),
        Duration::from_secs(30),
        || {
            let v = inspect(s, name)?;
            Ok((v["State"]["Status"] == status).then_some(v))
        },
    )
}

/// `State.Pid` as an i32, failing unless it is a positive number.
pub fn state_pid(v: &Value) -> Result<i32> {
    match v["State"]["Pid"].as_i64() {
        Some(p) if p > 0 => Ok(i32::try_from(p)?),
        other => bail!("State.Pid is {other:?}, expected a positive pid"),
    }
}

/// Whether `pid` is a live (non-zombie) process.
pub fn alive(pid: i32) -> bool {
    match std::fs::read_to_string(format!("/proc/{pid}/stat")) {
        // The state letter follows the parenthesised command name.
        Ok(stat) => stat
            .rsplit_once(") ")
            .is_some_and(|(_, rest)| !rest.starts_with('Z')),
        Err(_) => false,
    }
}

/// Waits until `pid` is gone (or a zombie).
pub fn wait_dead(pid: i32) -> Result<()> {
    wait_until(
        &format!("pid {pid} to exit"),
        Duration::from_secs(30),
        || Ok((!alive(pid)).then_some(())),
    )
}

/// The command line of `pid`, arguments joined by spaces.
pub fn cmdline(pid: i32) -> String {
    std::fs::read(format!("/proc/{pid}/cmdline"))
        .map(|raw| {
            String::from_utf8_lossy(&raw)
                .replace('\0', " ")
                .trim()
                .to_string()
        })
        .unwrap_or_default()
}

/// Fails unless `haystack` contains `needle`, showing both.
pub fn expect_contains(what: &str, haystack: &str, needle: &str) -> Result<()> {
    if !haystack.contains(needle) {
        bail!("{what}: expected to contain {needle:?}, got:\n{haystack}");
    }
    Ok(())
}

/// Polls until `docker ps -aq` lists nothing.
pub fn wait_no_containers(s: &Stack) -> Result<()> {
    wait_until("docker ps -a to be empty", Duration::from_secs(20), || {
        let out = s.docker(&["ps", "-aq"])?.ok()?;
        Ok(out.out().trim().is_empty().then_some(()))
    })
}

/// A full 64-hex container ID printed by `docker run -d`.
pub fn container_id(out: &str) -> Result<String> {
    let id = out.trim().lines().last().unwrap_or("").trim().to_string();
    if id.len() != 64 || !id.chars().all(|c| c.is_ascii_hexdigit()) {
        bail!("expected a 64-hex container id, got {out:?}");
    }
    Ok(id)
}
