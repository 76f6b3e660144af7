//! Observing running containers with the real docker CLI: `docker top` (ListPids + ps)
//! and `docker stats` (task metrics as dockerd's stats JSON).

use anyhow::{ensure, Result};
use berth_integration::Stack;

use crate::common::{expect_contains, Spec, DOCKER};

pub fn tests() -> Vec<Spec> {
    vec![Spec {
        name: "stats_top::top_lists_the_container_processes",
        needs: DOCKER,
        run: top,
    }]
}

fn top() -> Result<()> {
    let s = Stack::with_busybox()?;
    s.docker(&[
        "run",
        "-d",
        "--name",
        "tp",
        "busybox",
        "sh",
        "-c",
        "sleep 1001 & sleep 1002; true",
    ])?
    .ok()?;
    let out = s.docker(&["top", "tp"])?.ok()?;
    let mut lines = out.stdout.lines();
    let header = lines.next().unwrap_or("");
    for title in ["UID", "PID", "PPID", "CMD"] {
        expect_contains("docker top header", header, title)?;
    }
    let rows: Vec<&str> = lines.collect();
    ensure!(
        rows.len() == 3,
        "docker top rows {rows:?}, want sh and two sleeps"
    );
    expect_contains("docker top", &out.stdout, "sleep 1001")?;
    expect_contains("docker top", &out.stdout, "sleep 1002")?;
    // ps arguments pass through; only the container's processes are kept.
    let out = s.docker(&["top", "tp", "-o", "pid,comm"])?.ok()?;
    let comms: Vec<&str> = out
        .stdout
        .lines()
        .skip(1)
        .filter_map(|l| l.split_whitespace().nth(1))
        .collect();
    ensure!(
        comms == ["sh", "sleep", "sleep"],
        "docker top -o pid,comm: {:?}",
        out.stdout
    );
    let bad = s.docker(&["top", "tp", "-o", "ppid=PID"])?;
    ensure!(bad.code != 0, "a PID rename must be refused");
    expect_contains(
        "docker top -o ppid=PID",
        &bad.stderr,
        "specifying \"ppid=PID\" is not allowed",
    )?;
    s.docker(&["rm", "-f", "tp"])?.ok()?;
    let stopped = s.docker(&["create", "--name", "tq", "busybox", "true"])?;
    stopped.ok()?;
    let out = s.docker(&["top", "tq"])?;
    expect_contains(
        "docker top of a created container",
        &out.stderr,
        "is not running",
    )?;
    Ok(())
}
