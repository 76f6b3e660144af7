//! `docker pause`/`unpause`, `rename` and `run --init`, with the real docker CLI.

use std::time::{Duration, Instant};

use anyhow::{ensure, Context, Result};
use berth_integration::{wait_until, Stack};

use crate::common::{
    container_id, expect_contains, inspect, state_pid, wait_no_containers, wait_status, Spec,
    DOCKER,
};

pub fn tests() -> Vec<Spec> {
    vec![
        Spec {
            name: "lifecycle_more::pause_unpause",
            needs: DOCKER,
            run: pause_unpause,
        },
        Spec {
            name: "lifecycle_more::rename",
            needs: DOCKER,
            run: rename,
        },
        Spec {
            name: "lifecycle_more::init_reaps_and_forwards_signals",
            needs: DOCKER,
            run: init,
        },
    ]
}

/// Whether the freezer holds `pid`'s cgroup frozen (cgroup v1 freezer, else v2).
fn frozen(pid: i32) -> Result<bool> {
    let cgroups = std::fs::read_to_string(format!("/proc/{pid}/cgroup"))?;
    for line in cgroups.lines() {
        let mut parts = line.splitn(3, ':');
        let (_, ctrls, path) = (parts.next(), parts.next(), parts.next());
        let (Some(ctrls), Some(path)) = (ctrls, path) else {
            continue;
        };
        if ctrls.split(',').any(|c| c == "freezer") {
            let state =
                std::fs::read_to_string(format!("/sys/fs/cgroup/freezer{path}/freezer.state"))?;
            return Ok(state.trim() == "FROZEN");
        }
    }
    for line in cgroups.lines() {
        if let Some(path) = line.strip_prefix("0::") {
            for root in ["/sys/fs/cgroup/unified", "/sys/fs/cgroup"] {
                if let Ok(v) = std::fs::read_to_string(format!("{root}{path}/cgroup.freeze")) {
                    return Ok(v.trim() == "1");
                }
            }
        }
    }
    anyhow::bail!("no freezer cgroup for pid {pid}:\n{cgroups}")
}

fn pause_unpause() -> Result<()> {
    let s = Stack::with_busybox()?;
    let id = container_id(
        &s.docker(&["run", "-d", "--name", "pz", "busybox", "sleep", "1000"])?
            .ok()?
            .stdout,
    )?;
    let pid = state_pid(&inspect(&s, &id)?)?;
    s.docker(&["pause", "pz"])?.ok()?;
    let v = inspect(&s, "pz")?;
    ensure!(
        v["State"]["Status"] == "paused" && v["State"]["Paused"] == true,
        "State after pause {}",
        v["State"]
    );
    ensure!(frozen(pid)?, "the container's cgroup is not frozen");
    let ps = s
        .docker(&[
            "ps",
            "--filter",
            "status=paused",
            "--format",
            "{{.Names}} {{.Status}}",
        ])?
        .ok()?;
    ensure!(
        ps.out().starts_with("pz Up ") && ps.out().ends_with("(Paused)"),
        "ps of a paused container: {:?}",
        ps.out()
    );
    let again = s.docker(&["pause", "pz"])?;
    expect_contains("second pause", &again.stderr, "is already paused")?;
    ensure!(again.code != 0, "second pause succeeded");
    let rm = s.docker(&["rm", "pz"])?;
    ensure!(rm.code != 0, "rm of a paused container succeeded: {rm}");

    s.docker(&["unpause", "pz"])?.ok()?;
    let v = inspect(&s, "pz")?;
    ensure!(
        v["State"]["Status"] == "running" && v["State"]["Paused"] == false,
        "State after unpause {}",
        v["State"]
    );
    ensure!(!frozen(pid)?, "the cgroup is still frozen after unpause");
    let hi = s.docker(&["exec", "pz", "echo", "hi"])?.ok()?;
    ensure!(hi.stdout == "hi\n", "exec after unpause: {:?}", hi.stdout);
    let again = s.docker(&["unpause", "pz"])?;
    expect_contains("second unpause", &again.stderr, "is not paused")?;

    // A paused container still stops (it is thawed after the signal).
    s.docker(&["pause", "pz"])?.ok()?;
    s.docker(&["stop", "-t", "1", "pz"])?.ok()?;
    let v = wait_status(&s, "pz", "exited")?;
    ensure!(v["State"]["Paused"] == false, "State {}", v["State"]);
    let events = s
        .docker(&[
            "events",
            "--since",
            "0",
            "--until",
            &now(),
            "--filter",
            "container=pz",
            "--filter",
            "event=pause",
            "--filter",
            "event=unpause",
            "--format",
            "{{.Action}}",
        ])?
        .ok()?;
    ensure!(
        events.stdout.lines().collect::<Vec<_>>() == ["pause", "unpause", "pause", "unpause"],
        "pause events {:?}",
        events.stdout
    );
    s.docker(&["rm", "pz"])?.ok()?;
    wait_no_containers(&s)
}

fn now() -> String {
    let d = std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .unwrap_or_default();
    format!("{}", d.as_secs() + 1)
}

fn rename() -> Result<()> {
    let s = Stack::with_busybox()?;
    s.docker(&["create", "--name", "old", "busybox", "true"])?
        .ok()?;
    s.docker(&["create", "--name", "other", "busybox", "true"])?
        .ok()?;
    s.docker(&["rename", "old", "new"])?.ok()?;
    let v = inspect(&s, "new")?;
    ensure!(v["Name"] == "/new", "Name {}", v["Name"]);
    let gone = s.docker(&["inspect", "old"])?;
    ensure!(gone.code != 0, "the old name still resolves");
    let taken = s.docker(&["rename", "new", "other"])?;
    expect_contains(
        "rename to a taken name",
        &taken.stderr,
        "The container name \"/other\" is already in use by container",
    )?;
    let same = s.docker(&["rename", "new", "new"])?;
    expect_contains(
        "rename to the same name",
        &same.stderr,
        "Renaming a container with the same name as its current name",
    )?;
    let bad = s.docker(&["rename", "new", "-bad"])?;
    ensure!(bad.code != 0, "rename to an invalid name succeeded: {bad}");
    // The old name is free again.
    s.docker(&["create", "--name", "old", "busybox", "true"])?
        .ok()?;
    let events = s
        .docker(&[
            "events",
            "--since",
            "0",
            "--until",
            &now(),
            "--filter",
            "event=rename",
            "--format",
            "{{.Actor.Attributes.name}} {{.Actor.Attributes.oldName}}",
        ])?
        .ok()?;
    ensure!(
        events.out() == "new /old",
        "rename events {:?}",
        events.stdout
    );
    s.docker(&["rm", "new", "other", "old"])?.ok()?;
    wait_no_containers(&s)
}

/// Zombie processes in the container, counted from inside with `docker exec`.
fn zombies(s: &Stack, name: &str) -> Result<usize> {
    let out = s
        .docker(&[
            "exec",
            name,
            "sh",
            "-c",
            "cat /proc/[0-9]*/stat 2>/dev/null | grep -c ') Z ' || true",
        ])?
        .ok()?;
    out.out().trim().parse().context("zombie count")
}

fn init() -> Result<()> {
    let s = Stack::with_busybox()?;
    let out = s
        .docker(&[
            "run",
            "--rm",
            "--init",
            "busybox",
            "sh",
            "-c",
            "tr '\\0' ' ' < /proc/1/cmdline",
        ])?
        .ok()?;
    ensure!(
        out.stdout.starts_with("/sbin/docker-init -- sh -c"),
        "PID 1 with --init: {:?}",
        out.stdout
    );
    // An orphan is reparented to PID 1: tini reaps it, `sleep` as PID 1 does not.
    let orphan = "sh -c 'sleep 1 &'; exec sleep 1000";
    for (name, with_init) in [("reaper", true), ("noreaper", false)] {
        let mut args = vec!["run", "-d", "--name", name];
        if with_init {
            args.push("--init");
        }
        args.extend_from_slice(&["busybox", "sh", "-c", orphan]);
        s.docker(&args)?.ok()?;
    }
    wait_until(
        "the orphan to become a zombie without an init",
        Duration::from_secs(15),
        || Ok((zombies(&s, "noreaper")? > 0).then_some(())),
    )?;
    ensure!(
        zombies(&s, "reaper")? == 0,
        "a zombie is left in the --init container"
    );
    // tini forwards docker stop's SIGTERM to `sleep`, which dies at once (143).
    let started = Instant::now();
    s.docker(&["stop", "-t", "30", "reaper"])?.ok()?;
    ensure!(
        started.elapsed() < Duration::from_secs(15),
        "docker stop of an --init container took {:?}",
        started.elapsed()
    );
    let v = wait_status(&s, "reaper", "exited")?;
    ensure!(v["State"]["ExitCode"] == 143, "State {}", v["State"]);
    ensure!(
        v["HostConfig"]["Init"] == true,
        "HostConfig.Init {}",
        v["HostConfig"]["Init"]
    );
    s.docker(&["rm", "-f", "reaper", "noreaper"])?.ok()?;
    wait_no_containers(&s)
}
