//! Detached containers: ps, exec, stop, kill, rm, logs, inspect.

use anyhow::{ensure, Result};
use berth_integration::Stack;

use crate::common::{
    alive, cmdline, container_id, expect_contains, inspect, state_pid, wait_dead,
    wait_no_containers, wait_status, Spec, DOCKER,
};

pub fn tests() -> Vec<Spec> {
    vec![
        Spec {
            name: "docker_lifecycle::ps_exec_stop_kill_rm",
            needs: DOCKER,
            run: ps_exec_stop_kill_rm,
        },
        Spec {
            name: "docker_lifecycle::logs",
            needs: DOCKER,
            run: logs,
        },
        Spec {
            name: "docker_lifecycle::inspect",
            needs: DOCKER,
            run: inspect_fields,
        },
    ]
}

fn ps_exec_stop_kill_rm() -> Result<()> {
    let s = Stack::with_busybox()?;
    let x = container_id(
        &s.docker(&["run", "-d", "--name", "sleeper", "busybox", "sleep", "1000"])?
            .ok()?
            .stdout,
    )?;
    let ps = s.docker(&["ps"])?.ok()?;
    expect_contains("docker ps", &ps.stdout, &x[..12])?;
    expect_contains("docker ps", &ps.stdout, " sleeper\n")?;
    let q = s.docker(&["ps", "-q", "--no-trunc"])?.ok()?;
    ensure!(
        q.out() == x,
        "docker ps -q --no-trunc: {:?}, want {x}",
        q.out()
    );

    let hi = s.docker(&["exec", "sleeper", "echo", "hi"])?.ok()?;
    ensure!(hi.stdout == "hi\n", "docker exec stdout {:?}", hi.stdout);
    s.docker(&["exec", "sleeper", "sh", "-c", "exit 4"])?
        .expect_code(4)?;

    // sleep is pid 1 and ignores SIGTERM, so stop escalates to SIGKILL after 1 s.
    let pid = state_pid(&inspect(&s, "sleeper")?)?;
    s.docker(&["stop", "-t", "1", "sleeper"])?.ok()?;
    wait_dead(pid)?;
    let v = wait_status(&s, "sleeper", "exited")?;
    ensure!(
        v["State"]["ExitCode"] == 137,
        "ExitCode after stop: {}",
        v["State"]
    );
    let ps = s.docker(&["ps", "-q"])?.ok()?;
    ensure!(
        ps.out().is_empty(),
        "docker ps after stop lists {:?}",
        ps.out()
    );

    let y = container_id(
        &s.docker(&["run", "-d", "--name", "killme", "busybox", "sleep", "1000"])?
            .ok()?
            .stdout,
    )?;
    let pid = state_pid(&inspect(&s, &y)?)?;
    s.docker(&["kill", "killme"])?.ok()?;
    wait_dead(pid)?;
    let v = wait_status(&s, "killme", "exited")?;
    ensure!(
        v["State"]["ExitCode"] == 137,
        "ExitCode after kill: {}",
        v["State"]
    );

    let all = s.docker(&["ps", "-a"])?.ok()?;
    expect_contains("docker ps -a", &all.stdout, "Exited (137)")?;
    s.docker(&["rm", "sleeper", "killme"])?.ok()?;
    wait_no_containers(&s)
}

fn logs() -> Result<()> {
    let s = Stack::with_busybox()?;
    s.docker(&[
        "run",
        "-d",
        "--name",
        "logger",
        "busybox",
        "sh",
        "-c",
        "echo out; echo err >&2; echo more",
    ])?
    .ok()?;
    let code = s.docker(&["wait", "logger"])?.ok()?;
    ensure!(code.out() == "0", "docker wait printed {:?}", code.out());
    let out = s.docker(&["logs", "logger"])?.ok()?;
    ensure!(
        out.stdout == "out\nmore\n",
        "docker logs stdout {:?}",
        out.stdout
    );
    ensure!(out.stderr == "err\n", "docker logs stderr {:?}", out.stderr);

    // A foreground run's output lands in the log too. (--tail is checked on one stream
    // only: the order of stdout and stderr lines written back to back is not defined.)
    s.docker(&[
        "run",
        "--name",
        "fg",
        "busybox",
        "sh",
        "-c",
        "echo a; echo b; echo c",
    ])?
    .ok()?;
    let out = s.docker(&["logs", "fg"])?.ok()?;
    ensure!(
        out.stdout == "a\nb\nc\n",
        "docker logs fg stdout {:?}",
        out.stdout
    );
    let tail = s.docker(&["logs", "--tail", "2", "fg"])?.ok()?;
    ensure!(
        tail.stdout == "b\nc\n",
        "docker logs --tail 2 stdout {:?}",
        tail.stdout
    );
    s.docker(&["rm", "logger", "fg"])?.ok()?;
    wait_no_containers(&s)
}

fn inspect_fields() -> Result<()> {
    let s = Stack::with_busybox()?;
    let id = container_id(
        &s.docker(&[
            "run",
            "-d",
            "--name",
            "inspected",
            "busybox",
            "sleep",
            "1000",
        ])?
        .ok()?
        .stdout,
    )?;
    let v = inspect(&s, "inspected")?;
    ensure!(v["Id"] == id.as_str(), "Id {} want {id}", v["Id"]);
    ensure!(v["Name"] == "/inspected", "Name {}", v["Name"]);
    ensure!(
        v["State"]["Status"] == "running" && v["State"]["Running"] == true,
        "State {}",
        v["State"]
    );
    let pid = state_pid(&v)?;
    ensure!(alive(pid), "State.Pid {pid} is not a live process");
    ensure!(
        cmdline(pid) == "sleep 1000",
        "pid {pid} runs {:?}",
        cmdline(pid)
    );
    // Inspect by ID prefix finds the same container.
    let by_prefix = inspect(&s, &id[..8])?;
    ensure!(
        by_prefix["Id"] == id.as_str(),
        "inspect by prefix got {}",
        by_prefix["Id"]
    );

    s.docker(&["kill", "inspected"])?.ok()?;
    wait_dead(pid)?;
    let v = wait_status(&s, "inspected", "exited")?;
    ensure!(
        v["State"]["ExitCode"] == 137 && v["State"]["Pid"] == 0 && v["State"]["Running"] == false,
        "State after kill {}",
        v["State"]
    );

    s.docker(&["run", "--name", "exits5", "busybox", "sh", "-c", "exit 5"])?
        .expect_code(5)?;
    let v = inspect(&s, "exits5")?;
    ensure!(
        v["State"]["Status"] == "exited" && v["State"]["ExitCode"] == 5,
        "State of j {}",
        v["State"]
    );
    s.docker(&["rm", "inspected", "exits5"])?.ok()?;
    wait_no_containers(&s)
}
