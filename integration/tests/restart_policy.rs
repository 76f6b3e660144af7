//! Restart policies (`docker run --restart ...`) against dockerd's rules: restarts after
//! exits with RestartCount, none after a user's stop, and the engine-start pass.

use std::time::Duration;

use anyhow::{ensure, Result};
use berth_integration::{http, wait_until, Stack};
use serde_json::Value;

use crate::common::{
    alive, container_id, expect_contains, inspect, state_pid, wait_no_containers, wait_status,
    Spec, DOCKER,
};

pub fn tests() -> Vec<Spec> {
    vec![
        Spec {
            name: "restart_policy::on_failure_max_retries",
            needs: DOCKER,
            run: on_failure_max,
        },
        Spec {
            name: "restart_policy::always_restarts_and_survives_engine_restart",
            needs: DOCKER,
            run: always_survives,
        },
        Spec {
            name: "restart_policy::engine_start_applies_policies",
            needs: DOCKER,
            run: engine_start,
        },
        Spec {
            name: "restart_policy::restarting_state_and_stop",
            needs: DOCKER,
            run: restarting_state,
        },
        Spec {
            name: "restart_policy::bad_policies_refused",
            needs: DOCKER,
            run: bad_policies,
        },
    ]
}

fn restart_count(v: &Value) -> i64 {
    v["RestartCount"].as_i64().unwrap_or(-1)
}

/// The container's `start`/`die` events so far, in order.
fn start_die_events(s: &Stack, id: &str) -> Result<Vec<String>> {
    let out = s
        .docker(&[
            "events",
            "--since",
            "0",
            "--until",
            &format!("{}", chrono_now_secs() + 1),
            "--filter",
            &format!("container={id}"),
            "--format",
            "{{.Action}}",
        ])?
        .ok()?;
    Ok(out
        .stdout
        .lines()
        .filter(|l| l.starts_with("start") || l.starts_with("die"))
        .map(str::to_string)
        .collect())
}

fn chrono_now_secs() -> u64 {
    std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .map(|d| d.as_secs())
        .unwrap_or(0)
}

fn on_failure_max() -> Result<()> {
    let s = Stack::with_busybox()?;
    let id = container_id(
        &s.docker(&[
            "run",
            "-d",
            "--restart",
            "on-failure:2",
            "busybox",
            "sh",
            "-c",
            "exit 3",
        ])?
        .ok()?
        .stdout,
    )?;
    let v = wait_until(
        "on-failure:2 to give up after two restarts",
        Duration::from_secs(30),
        || {
            let v = inspect(&s, &id)?;
            let done = v["State"]["Status"] == "exited"
                && v["State"]["Restarting"] == false
                && restart_count(&v) == 2;
            Ok(done.then_some(v))
        },
    )?;
    ensure!(
        v["HostConfig"]["RestartPolicy"]["Name"] == "on-failure"
            && v["HostConfig"]["RestartPolicy"]["MaximumRetryCount"] == 2,
        "HostConfig.RestartPolicy {}",
        v["HostConfig"]["RestartPolicy"]
    );
    ensure!(v["State"]["ExitCode"] == 3, "State {}", v["State"]);
    // The third exit was final: three runs, three deaths, nothing after.
    let events = start_die_events(&s, &id)?;
    ensure!(
        events == ["start", "die", "start", "die", "start", "die"],
        "events {events:?}"
    );
    let v = inspect(&s, &id)?;
    ensure!(restart_count(&v) == 2, "RestartCount {}", v["RestartCount"]);
    s.docker(&["rm", &id])?.ok()?;
    wait_no_containers(&s)
}

/// Kills the container's process from outside (not a user's stop) and waits for the
/// policy to start a new one; returns the new pid.
fn kill_and_wait_restart(s: &Stack, id: &str, count: i64) -> Result<i32> {
    let pid = state_pid(&inspect(s, id)?)?;
    nix::sys::signal::kill(
        nix::unistd::Pid::from_raw(pid),
        nix::sys::signal::Signal::SIGKILL,
    )?;
    wait_until(
        &format!("the policy to restart {id} (count {count})"),
        Duration::from_secs(30),
        || {
            let v = inspect(s, id)?;
            let p = v["State"]["Pid"].as_i64().unwrap_or(0);
            let up = v["State"]["Status"] == "running" && p > 0 && p != i64::from(pid);
            Ok((up && restart_count(&v) == count).then(|| i32::try_from(p).unwrap_or(0)))
        },
    )
}

fn always_survives() -> Result<()> {
    let mut s = Stack::with_busybox()?;
    let id = container_id(
        &s.docker(&[
            "run",
            "-d",
            "--restart",
            "always",
            "busybox",
            "sleep",
            "1000",
        ])?
        .ok()?
        .stdout,
    )?;
    let pid = kill_and_wait_restart(&s, &id, 1)?;

    s.kill_daemons()?;
    ensure!(alive(pid), "the restarted container died with the daemons");
    s.start_daemons()?;
    wait_until(
        "the container to be listed running again",
        Duration::from_secs(30),
        || {
            let out = s.docker(&["ps", "-q", "--no-trunc"])?;
            Ok((out.code == 0 && out.out() == id).then_some(()))
        },
    )?;
    let v = inspect(&s, &id)?;
    ensure!(
        state_pid(&v)? == pid && restart_count(&v) == 1,
        "after the engine restart: State {} RestartCount {}",
        v["State"],
        v["RestartCount"]
    );
    // The policy still works under the new engine.
    kill_and_wait_restart(&s, &id, 2)?;

    // A user's stop is final.
    s.docker(&["stop", "-t", "1", &id])?.ok()?;
    let v = wait_status(&s, &id, "exited")?;
    ensure!(
        v["State"]["Restarting"] == false && restart_count(&v) == 2,
        "after docker stop: State {} RestartCount {}",
        v["State"],
        v["RestartCount"]
    );
    // A user's start resets the count, as dockerd's does.
    s.docker(&["start", &id])?.ok()?;
    let v = wait_status(&s, &id, "running")?;
    ensure!(restart_count(&v) == 0, "RestartCount {}", v["RestartCount"]);
    s.docker(&["rm", "-f", &id])?.ok()?;
    wait_no_containers(&s)
}

fn engine_start() -> Result<()> {
    let mut s = Stack::with_busybox()?;
    let mut ids = Vec::new();
    for policy in ["always", "unless-stopped", "no"] {
        let out = s.docker(&[
            "run",
            "-d",
            "--name",
            policy,
            "--restart",
            policy,
            "busybox",
            "sleep",
            "1000",
        ])?;
        ids.push(container_id(&out.ok()?.stdout)?);
    }
    let running_unless = s.docker(&[
        "run",
        "-d",
        "--name",
        "up",
        "--restart",
        "unless-stopped",
        "busybox",
        "sleep",
        "1000",
    ])?;
    let up = container_id(&running_unless.ok()?.stdout)?;
    for id in &ids {
        s.docker(&["stop", "-t", "1", id])?.ok()?;
        wait_status(&s, id, "exited")?;
    }
    s.kill_daemons()?;
    s.start_daemons()?;
    // dockerd starts `always` containers at start-up even after a user's stop.
    wait_status(&s, "always", "running")?;
    for name in ["unless-stopped", "no"] {
        let v = inspect(&s, name)?;
        ensure!(
            v["State"]["Status"] == "exited",
            "{name} after the engine restart: State {}",
            v["State"]
        );
    }
    let v = inspect(&s, &up)?;
    ensure!(
        v["State"]["Status"] == "running",
        "a running unless-stopped container: State {}",
        v["State"]
    );
    s.docker(&["rm", "-f", "always", "unless-stopped", "no", "up"])?
        .ok()?;
    wait_no_containers(&s)
}

fn restarting_state() -> Result<()> {
    let s = Stack::with_busybox()?;
    let id = container_id(
        &s.docker(&[
            "run",
            "-d",
            "--restart",
            "always",
            "busybox",
            "sh",
            "-c",
            "exit 1",
        ])?
        .ok()?
        .stdout,
    )?;
    // The back-off doubles from 100 ms, so the gaps soon last long enough to be seen.
    let status = wait_until(
        "docker ps to show the container restarting",
        Duration::from_secs(30),
        || {
            let out = s
                .docker(&[
                    "ps",
                    "--filter",
                    "status=restarting",
                    "--format",
                    "{{.Status}}",
                ])?
                .ok()?;
            let line = out.out().to_string();
            Ok(line.starts_with("Restarting (1) ").then_some(line))
        },
    )?;
    expect_contains("ps status", &status, " ago")?;
    let v = inspect(&s, &id)?;
    ensure!(
        restart_count(&v) >= 1 && v["State"]["ExitCode"] == 1,
        "State {} RestartCount {}",
        v["State"],
        v["RestartCount"]
    );
    let rm = s.docker(&["rm", &id])?;
    ensure!(rm.code != 0, "rm of a restarting container succeeded: {rm}");
    s.docker(&["container", "prune", "-f"])?.ok()?;
    inspect(&s, &id)?;
    s.docker(&["stop", &id])?.ok()?;
    let v = wait_until(
        "the stopped container to stay exited",
        Duration::from_secs(10),
        || {
            let v = inspect(&s, &id)?;
            Ok(
                (v["State"]["Status"] == "exited" && v["State"]["Restarting"] == false)
                    .then_some(v),
            )
        },
    )?;
    ensure!(v["State"]["Running"] == false, "State {}", v["State"]);
    s.docker(&["rm", &id])?.ok()?;
    wait_no_containers(&s)
}

fn bad_policies() -> Result<()> {
    let s = Stack::with_busybox()?;
    let out = s.docker(&["run", "--rm", "--restart", "always", "busybox", "true"])?;
    ensure!(out.code == 125, "--rm with --restart: {out}");
    let sock = s.engine_sock();
    for (body, want) in [
        (
            r#"{"Image":"busybox","Cmd":["true"],"HostConfig":{"AutoRemove":true,"RestartPolicy":{"Name":"always"}}}"#,
            "can't create 'AutoRemove' container with restart policy",
        ),
        (
            r#"{"Image":"busybox","Cmd":["true"],"HostConfig":{"RestartPolicy":{"Name":"sometimes"}}}"#,
            "invalid restart policy: unknown policy 'sometimes'; use one of 'no', 'always', 'on-failure', or 'unless-stopped'",
        ),
        (
            r#"{"Image":"busybox","Cmd":["true"],"HostConfig":{"RestartPolicy":{"Name":"always","MaximumRetryCount":3}}}"#,
            "invalid restart policy: maximum retry count can only be used with 'on-failure'",
        ),
    ] {
        let r = http::request(&sock, "POST", "/v1.50/containers/create", body.as_bytes())?;
        ensure!(
            r.status == 400 && r.body.contains(want),
            "create {body}: {} {}",
            r.status,
            r.body
        );
    }
    wait_no_containers(&s)
}
