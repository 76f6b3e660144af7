//! Invariant 1: daemon restarts never kill containers, and exits that happen while the
//! daemons are down are not lost.

use std::time::Duration;

use anyhow::{ensure, Result};
use berth_integration::{wait_until, Stack};

use crate::common::{
    alive, container_id, inspect, state_pid, wait_dead, wait_no_containers, wait_status, Spec,
    DOCKER,
};

pub fn tests() -> Vec<Spec> {
    vec![
        Spec {
            name: "restart::container_survives_daemon_kill",
            needs: DOCKER,
            run: survives,
        },
        Spec {
            name: "restart::exit_while_daemons_down",
            needs: DOCKER,
            run: exit_while_down,
        },
    ]
}

fn survives() -> Result<()> {
    let mut s = Stack::with_busybox()?;
    let id = container_id(
        &s.docker(&["run", "-d", "busybox", "sleep", "1000"])?
            .ok()?
            .stdout,
    )?;
    let pid = state_pid(&inspect(&s, &id)?)?;

    s.kill_daemons()?;
    ensure!(alive(pid), "container pid {pid} died with the daemons");
    s.start_daemons()?;

    wait_until(
        "docker ps to list the container again",
        Duration::from_secs(30),
        || {
            let out = s.docker(&["ps", "-q", "--no-trunc"])?;
            Ok((out.code == 0 && out.out() == id).then_some(()))
        },
    )?;
    let v = inspect(&s, &id)?;
    ensure!(
        v["State"]["Status"] == "running",
        "State after restart {}",
        v["State"]
    );
    ensure!(
        state_pid(&v)? == pid,
        "State.Pid changed from {pid} to {}",
        v["State"]["Pid"]
    );

    let hi = s.docker(&["exec", &id, "echo", "hi"])?.ok()?;
    ensure!(
        hi.stdout == "hi\n",
        "docker exec after restart printed {:?}",
        hi.stdout
    );

    s.docker(&["stop", "-t", "1", &id])?.ok()?;
    wait_dead(pid)?;
    wait_status(&s, &id, "exited")?;
    s.docker(&["rm", &id])?.ok()?;
    wait_no_containers(&s)
}

fn exit_while_down() -> Result<()> {
    let mut s = Stack::with_busybox()?;
    let id = container_id(
        &s.docker(&[
            "run",
            "-d",
            "busybox",
            "sh",
            "-c",
            "sleep 2; echo out; exit 7",
        ])?
        .ok()?
        .stdout,
    )?;
    let pid = state_pid(&inspect(&s, &id)?)?;
    s.kill_daemons()?;
    ensure!(alive(pid), "container pid {pid} died with the daemons");
    // The container prints and exits while nobody but its shim is watching.
    wait_dead(pid)?;
    s.start_daemons()?;

    let v = wait_status(&s, &id, "exited")?;
    ensure!(
        v["State"]["ExitCode"] == 7,
        "State after restart {}",
        v["State"]
    );
    let logs = s.docker(&["logs", &id])?.ok()?;
    ensure!(
        logs.stdout == "out\n",
        "docker logs stdout {:?}",
        logs.stdout
    );
    s.docker(&["rm", &id])?.ok()?;
    wait_no_containers(&s)
}
