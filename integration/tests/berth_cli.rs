//! The `berth` client against a real stack: import, images, run, ps, logs, stop, rm.

use anyhow::{ensure, Result};
use std::process::Command;
use std::time::Duration;

use berth_integration::{cmd, Stack};

use crate::common::{container_id, expect_contains, Spec, BERTH};

pub fn tests() -> Vec<Spec> {
    vec![
        Spec {
            name: "berth_cli::import_images_run_ps",
            needs: BERTH,
            run: import_images_run_ps,
        },
        Spec {
            name: "berth_cli::detached_logs_stop_rm",
            needs: BERTH,
            run: detached_logs_stop_rm,
        },
    ]
}

/// Imports the busybox tar (from the file, or through stdin with `-`); returns the image ID.
fn import_with_berth(s: &Stack, via_stdin: bool) -> Result<String> {
    let tar = s.busybox_tar()?;
    let out = if via_stdin {
        s.berth_with_stdin(&["import", "-", "busybox"], Some(&tar))?
    } else {
        s.berth(&["import", &tar.to_string_lossy(), "busybox"])?
    }
    .ok()?;
    let id = out.out().lines().last().unwrap_or("").to_string();
    ensure!(
        id.starts_with("sha256:"),
        "berth import printed {:?}",
        out.out()
    );
    Ok(id)
}

fn import_images_run_ps() -> Result<()> {
    let s = Stack::start()?;
    host_selection(&s)?;
    let version = s.berth(&["version"])?.ok()?;
    expect_contains("berth version", &version.stdout, "Server")?;

    let image_id = import_with_berth(&s, false)?;
    let images = s.berth(&["images"])?.ok()?;
    expect_contains("berth images", &images.stdout, "REPOSITORY")?;
    expect_contains("berth images", &images.stdout, "busybox")?;
    expect_contains("berth images", &images.stdout, "latest")?;
    let q = s.berth(&["images", "-q"])?.ok()?;
    let hex = image_id.trim_start_matches("sha256:");
    ensure!(
        hex.len() >= 12 && q.out() == &hex[..12],
        "berth images -q printed {:?} for {image_id}",
        q.out()
    );

    let out = s
        .berth(&["run", "--rm", "busybox", "echo", "hello"])?
        .ok()?;
    ensure!(out.stdout == "hello\n", "berth run stdout {:?}", out.stdout);
    let out = s.berth(&["run", "--rm", "busybox", "sh", "-c", "echo err >&2; exit 3"])?;
    ensure!(out.code == 3 && out.stderr == "err\n", "{out}");
    let out = s
        .berth(&[
            "run",
            "--rm",
            "-e",
            "GREETING=hi there",
            "busybox",
            "sh",
            "-c",
            "echo $GREETING",
        ])?
        .ok()?;
    ensure!(
        out.stdout == "hi there\n",
        "berth run -e stdout {:?}",
        out.stdout
    );

    let out = s
        .berth(&["run", "--rm", "busybox", "/nonexistent"])?
        .expect_code(127)?;
    expect_contains(
        "berth run stderr",
        &out.stderr,
        "Error response from daemon",
    )?;
    let out = s.berth(&["run", "--rm", "nosuchimage"])?.expect_code(125)?;
    expect_contains("berth run stderr", &out.stderr, "No such image")?;

    let ps = s.berth(&["ps", "-a", "-q"])?.ok()?;
    ensure!(
        ps.out().is_empty(),
        "berth ps -a -q after --rm runs: {:?}",
        ps.out()
    );
    Ok(())
}

/// `-H` beats `BERTH_HOST`, which beats `DOCKER_HOST`.
fn host_selection(s: &Stack) -> Result<()> {
    let host = s.engine_host();
    let bogus = "unix:///nonexistent/berth.sock";
    let cases: [(&[&str], Option<&str>, Option<&str>); 3] = [
        (&["-H", &host, "ps"], Some(bogus), Some(bogus)),
        (&["ps"], Some(&host), Some(bogus)),
        (&["ps"], None, Some(&host)),
    ];
    for (args, berth_host, docker_host) in cases {
        let mut cmd = Command::new(s.bins.join("berth"));
        cmd.args(args)
            .env_remove("BERTH_HOST")
            .env_remove("DOCKER_HOST");
        if let Some(h) = berth_host {
            cmd.env("BERTH_HOST", h);
        }
        if let Some(h) = docker_host {
            cmd.env("DOCKER_HOST", h);
        }
        cmd::run(cmd, &s.dir, Duration::from_secs(30))?.ok()?;
    }
    let mut cmd = Command::new(s.bins.join("berth"));
    cmd.args(["ps"]).env("BERTH_HOST", bogus);
    let out = cmd::run(cmd, &s.dir, Duration::from_secs(30))?.expect_code(1)?;
    expect_contains(
        "berth ps stderr",
        &out.stderr,
        "Cannot connect to the Berth daemon",
    )?;
    Ok(())
}

fn detached_logs_stop_rm() -> Result<()> {
    let s = Stack::start()?;
    import_with_berth(&s, true)?;
    let id = container_id(
        &s.berth(&[
            "run",
            "-d",
            "--name",
            "bb",
            "busybox",
            "sh",
            "-c",
            "echo up; exec sleep 1000",
        ])?
        .ok()?
        .stdout,
    )?;
    let ps = s.berth(&["ps"])?.ok()?;
    expect_contains("berth ps", &ps.stdout, "CONTAINER ID")?;
    expect_contains("berth ps", &ps.stdout, &id[..12])?;
    expect_contains("berth ps", &ps.stdout, "Up ")?;
    let q = s.berth(&["ps", "-q"])?.ok()?;
    ensure!(q.out() == &id[..12], "berth ps -q printed {:?}", q.out());

    berth_integration::wait_until(
        "berth logs to show up",
        std::time::Duration::from_secs(20),
        || {
            let out = s.berth(&["logs", "bb"])?;
            Ok((out.code == 0 && out.stdout == "up\n").then_some(()))
        },
    )?;

    s.berth(&["stop", "-t", "1", "bb"])?.ok()?;
    let all = s.berth(&["ps", "-a"])?.ok()?;
    expect_contains("berth ps -a", &all.stdout, "Exited (137)")?;
    let out = s.berth(&["rm", "bb"])?.ok()?;
    ensure!(out.out() == "bb", "berth rm printed {:?}", out.out());
    let out = s.berth(&["rm", "bb"])?.expect_code(1)?;
    expect_contains(
        "berth rm stderr",
        &out.stderr,
        "Error response from daemon: No such container: b",
    )?;
    let ps = s.berth(&["ps", "-a", "-q"])?.ok()?;
    ensure!(
        ps.out().is_empty(),
        "berth ps -a -q after rm: {:?}",
        ps.out()
    );
    Ok(())
}
