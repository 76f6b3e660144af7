//! Health checks with the real docker CLI (`--health-*`, the image's HEALTHCHECK, `ps`
//! status and filter, `health_status` events), exec into paused and stopped containers,
//! and `docker commit` pausing a running container.

use std::time::Duration;

use anyhow::{ensure, Context, Result};
use berth_integration::prereq::Need;
use berth_integration::stack::Daemon;
use berth_integration::{wait_until, Stack};
use serde_json::Value;

use crate::common::{expect_contains, inspect, Spec, DOCKER};

pub fn tests() -> Vec<Spec> {
    vec![
        Spec {
            name: "health::healthy_probe_status_ps_and_events",
            needs: DOCKER,
            run: healthy,
        },
        Spec {
            name: "health::unhealthy_after_retries_and_timeout",
            needs: DOCKER,
            run: unhealthy,
        },
        Spec {
            name: "health::monitor_resumes_after_an_engine_restart",
            needs: DOCKER,
            run: resumes_after_engine_restart,
        },
        Spec {
            name: "health::missing_probe_binary_log_kept_and_labelled_events",
            needs: DOCKER,
            run: missing_probe_binary,
        },
        Spec {
            name: "health::image_healthcheck_merge_and_no_healthcheck",
            needs: DOCKER,
            run: image_healthcheck,
        },
        Spec {
            name: "health::compose_waits_for_a_healthy_service",
            needs: &[Need::Root, Need::Busybox, Need::Docker, Need::Compose],
            run: compose_waits,
        },
        Spec {
            name: "health::exec_into_paused_or_stopped_is_refused",
            needs: DOCKER,
            run: exec_refused,
        },
        Spec {
            name: "health::commit_pauses_a_running_container",
            needs: DOCKER,
            run: commit_pauses,
        },
    ]
}

/// `docker run -d --name NAME` of a sleeping busybox probed every second (`echo ok`
/// unless `opts` give another `--health-cmd`).
fn run_checked(s: &Stack, name: &str, opts: &[&str]) -> Result<()> {
    let mut args = vec!["run", "-d", "--name", name, "--health-interval", "1s"];
    if !opts.contains(&"--health-cmd") {
        args.extend_from_slice(&["--health-cmd", "echo ok"]);
    }
    args.extend_from_slice(opts);
    args.extend_from_slice(&["busybox", "sleep", "1000"]);
    s.docker(&args)?.ok()?;
    Ok(())
}

/// Polls inspect until `State.Health.Status` is `status`; returns the object.
fn wait_health(s: &Stack, name: &str, status: &str) -> Result<Value> {
    wait_until(
        &format!("{name} to be {status}"),
        Duration::from_secs(30),
        || {
            let v = inspect(s, name)?;
            Ok((v["State"]["Health"]["Status"] == status).then_some(v))
        },
    )
}

fn ps(s: &Stack, filters: &[&str]) -> Result<Vec<String>> {
    let mut args = vec!["ps", "-a", "--format", "{{.Names}} {{.Status}}"];
    for f in filters {
        args.extend_from_slice(&["--filter", f]);
    }
    let out = s.docker(&args)?.ok()?;
    Ok(out.stdout.lines().map(str::to_string).collect())
}

/// The container events so far, as "Action execID exitCode" lines.
fn events(s: &Stack, filters: &[&str]) -> Result<Vec<String>> {
    let until = crate::events::now()?;
    let mut args = vec!["events", "--since", "0", "--until", &until];
    for f in filters {
        args.extend_from_slice(&["--filter", f]);
    }
    args.extend_from_slice(&[
        "--format",
        "{{.Action}}|{{.Actor.Attributes.execID}}|{{.Actor.Attributes.exitCode}}",
    ]);
    let out = s.docker(&args)?.ok()?;
    Ok(out.stdout.lines().map(str::to_string).collect())
}

fn healthy() -> Result<()> {
    let s = Stack::with_busybox()?;
    run_checked(&s, "hok", &[])?;
    let v = inspect(&s, "hok")?;
    ensure!(
        v["Config"]["Healthcheck"]["Test"] == serde_json::json!(["CMD-SHELL", "echo ok"])
            && v["Config"]["Healthcheck"]["Interval"] == 1_000_000_000i64,
        "Config.Healthcheck: {}",
        v["Config"]["Healthcheck"]
    );
    // The first probe runs an interval after the start.
    let rows = ps(&s, &["health=starting"])?;
    ensure!(
        rows.len() == 1 && rows[0].starts_with("hok Up") && rows[0].ends_with("(health: starting)"),
        "ps while starting: {rows:?}"
    );
    let v = wait_health(&s, "hok", "healthy")?;
    let h = &v["State"]["Health"];
    ensure!(h["FailingStreak"] == 0, "FailingStreak: {h}");
    let log = h["Log"].as_array().context("Health.Log")?;
    ensure!(!log.is_empty() && log.len() <= 5, "Health.Log: {h}");
    ensure!(
        log[0]["ExitCode"] == 0 && log[0]["Output"] == "ok\n",
        "first result: {}",
        log[0]
    );
    ensure!(
        log[0]["Start"].is_string() && log[0]["End"].is_string(),
        "{h}"
    );
    let rows = ps(&s, &["health=healthy"])?;
    ensure!(
        rows.len() == 1 && rows[0].ends_with("(healthy)"),
        "ps health=healthy: {rows:?}"
    );
    ensure!(ps(&s, &["health=unhealthy"])?.is_empty());
    let bad = s.docker(&["ps", "--filter", "health=fine"])?;
    ensure!(bad.code != 0, "a bad health filter value must fail");
    expect_contains(
        "ps --filter health=fine",
        &bad.stderr,
        "Unrecognised filter value for health: fine",
    )?;
    let evs = events(&s, &["container=hok"])?;
    let action = |l: &String| l.split('|').next().unwrap_or_default().to_string();
    let actions: Vec<String> = evs.iter().map(action).collect();
    ensure!(
        actions.contains(&"health_status: healthy".to_string()),
        "events: {evs:?}"
    );
    let created = evs
        .iter()
        .find(|l| l.starts_with("exec_create: /bin/sh -c echo ok|"))
        .with_context(|| format!("no exec_create event for the probe: {evs:?}"))?;
    let exec_id = created.split('|').nth(1).unwrap_or_default();
    ensure!(!exec_id.is_empty(), "exec_create without execID: {created}");
    ensure!(
        evs.contains(&format!(
            "exec_start: /bin/sh -c echo ok|{exec_id}|<no value>"
        )),
        "no exec_start for {exec_id}: {evs:?}"
    );
    ensure!(
        evs.contains(&format!("exec_die|{exec_id}|0")),
        "no exec_die for {exec_id}: {evs:?}"
    );
    // `event=health_status` matches the action with its detail, as in dockerd.
    let only = events(&s, &["container=hok", "event=health_status"])?;
    ensure!(
        !only.is_empty() && only.iter().all(|l| l.starts_with("health_status: ")),
        "event=health_status: {only:?}"
    );
    // A stop ends the monitor (dockerd leaves `unhealthy`); a start begins again.
    s.docker(&["stop", "-t", "1", "hok"])?.ok()?;
    let v = inspect(&s, "hok")?;
    ensure!(
        v["State"]["Health"]["Status"] == "unhealthy",
        "after stop: {}",
        v["State"]["Health"]
    );
    s.docker(&["start", "hok"])?.ok()?;
    let v = inspect(&s, "hok")?;
    ensure!(
        v["State"]["Health"]["Status"] == "starting" && v["State"]["Health"]["FailingStreak"] == 0,
        "after start: {}",
        v["State"]["Health"]
    );
    wait_health(&s, "hok", "healthy")?;
    s.docker(&["rm", "-f", "hok"])?.ok()?;
    Ok(())
}

fn unhealthy() -> Result<()> {
    let s = Stack::with_busybox()?;
    run_checked(
        &s,
        "hbad",
        &[
            "--health-cmd",
            "echo failing; exit 3",
            "--health-retries",
            "2",
        ],
    )?;
    run_checked(
        &s,
        "hslow",
        &[
            "--health-cmd",
            "echo partial; sleep 30",
            "--health-timeout",
            "1s",
            "--health-retries",
            "1",
        ],
    )?;
    let v = wait_health(&s, "hbad", "unhealthy")?;
    let h = &v["State"]["Health"];
    ensure!(h["FailingStreak"].as_i64() >= Some(2), "FailingStreak: {h}");
    let last = h["Log"]
        .as_array()
        .and_then(|l| l.last())
        .context("Health.Log is empty")?;
    ensure!(
        last["ExitCode"] == 3 && last["Output"] == "failing\n",
        "last result: {last}"
    );
    let v = wait_health(&s, "hslow", "unhealthy")?;
    let last = v["State"]["Health"]["Log"]
        .as_array()
        .and_then(|l| l.last())
        .cloned()
        .context("Health.Log is empty")?;
    ensure!(last["ExitCode"] == -1, "timed-out result: {last}");
    let out = last["Output"].as_str().unwrap_or_default();
    ensure!(
        out.starts_with("Health check exceeded timeout (1s)"),
        "timed-out output: {out:?}"
    );
    // The probe was killed at its timeout, not waited for.
    let top = s.docker(&["top", "hslow"])?.ok()?;
    let sleeping = top.stdout.matches("sleep 30").count();
    ensure!(sleeping <= 1, "probes pile up: {}", top.stdout);
    let rows = ps(&s, &["health=unhealthy"])?;
    ensure!(
        rows.len() == 2 && rows.iter().all(|r| r.ends_with("(unhealthy)")),
        "ps health=unhealthy: {rows:?}"
    );
    let evs = events(&s, &["container=hbad", "event=health_status"])?;
    ensure!(
        evs.iter()
            .any(|l| l.starts_with("health_status: unhealthy|")),
        "events: {evs:?}"
    );
    // A paused container runs no probes.
    s.docker(&["pause", "hbad"])?.ok()?;
    let probes = |s: &Stack| -> Result<usize> {
        Ok(events(s, &["container=hbad", "event=exec_create"])?.len())
    };
    let before = probes(&s)?;
    let ran = wait_until("a probe while paused", Duration::from_secs(3), || {
        Ok((probes(&s)? > before).then_some(()))
    });
    ensure!(ran.is_err(), "a probe ran in a paused container");
    s.docker(&["unpause", "hbad"])?.ok()?;
    wait_until("probes after unpause", Duration::from_secs(10), || {
        Ok((probes(&s)? > before).then_some(()))
    })?;
    s.docker(&["rm", "-f", "hbad", "hslow"])?.ok()?;
    Ok(())
}

fn resumes_after_engine_restart() -> Result<()> {
    let mut s = Stack::with_busybox()?;
    run_checked(&s, "hre", &[])?;
    wait_health(&s, "hre", "healthy")?;
    s.kill_daemon(Daemon::Engine)?;
    s.start_daemon(Daemon::Engine)?;
    // The new engine's event log starts empty: a healthy event is from a resumed monitor.
    wait_until(
        "health_status after the restart",
        Duration::from_secs(30),
        || {
            let evs = events(&s, &["container=hre", "event=health_status"])?;
            Ok(evs
                .iter()
                .any(|l| l.starts_with("health_status: healthy|"))
                .then_some(()))
        },
    )?;
    let v = inspect(&s, "hre")?;
    ensure!(v["State"]["Running"] == true, "{}", v["State"]);
    // The result saved with the first status change survived the restart.
    let log = v["State"]["Health"]["Log"]
        .as_array()
        .context("Health.Log")?;
    ensure!(log.len() >= 2, "Health.Log after the restart: {log:?}");
    s.docker(&["rm", "-f", "hre"])?.ok()?;
    Ok(())
}

fn image_healthcheck() -> Result<()> {
    let s = Stack::with_busybox()?;
    let ctx = crate::build::context(
        &s,
        "hc",
        &[(
            "Dockerfile",
            "FROM busybox\nHEALTHCHECK --interval=1s --retries=4 CMD echo from-image\n",
        )],
    )?;
    s.docker(&["build", "-q", "-t", "hcimg", &ctx.to_string_lossy()])?
        .ok()?;
    s.docker(&["run", "-d", "--name", "img", "hcimg", "sleep", "1000"])?
        .ok()?;
    let v = wait_health(&s, "img", "healthy")?;
    ensure!(
        v["State"]["Health"]["Log"][0]["Output"] == "from-image\n",
        "{}",
        v["State"]["Health"]
    );
    // The container's settings override the image's field by field.
    s.docker(&[
        "create",
        "--name",
        "over",
        "--health-retries",
        "9",
        "hcimg",
        "sleep",
        "1000",
    ])?
    .ok()?;
    let hc = inspect(&s, "over")?["Config"]["Healthcheck"].clone();
    ensure!(
        hc["Test"] == serde_json::json!(["CMD-SHELL", "echo from-image"])
            && hc["Interval"] == 1_000_000_000i64
            && hc["Retries"] == 9,
        "merged Healthcheck: {hc}"
    );
    s.docker(&[
        "run",
        "-d",
        "--name",
        "off",
        "--no-healthcheck",
        "hcimg",
        "sleep",
        "1000",
    ])?
    .ok()?;
    let v = inspect(&s, "off")?;
    ensure!(
        v["Config"]["Healthcheck"]["Test"] == serde_json::json!(["NONE"]),
        "{}",
        v["Config"]["Healthcheck"]
    );
    ensure!(v["State"]["Health"].is_null(), "{}", v["State"]);
    let rows = ps(&s, &["health=none"])?;
    ensure!(
        rows.iter()
            .any(|r| r.starts_with("off Up") && !r.contains('(')),
        "ps health=none: {rows:?}"
    );
    // StartInterval exists from API 1.44 on; older clients' values are ignored.
    for (version, kept) in [("v1.43", false), ("v1.44", true)] {
        let body = serde_json::json!({
            "Image": "busybox",
            "Cmd": ["true"],
            "Healthcheck": {"Test": ["CMD", "true"], "StartInterval": 2_000_000_000i64},
        });
        let name = format!("si{}", &version[3..]);
        let r = berth_integration::http::request(
            &s.engine_sock(),
            "POST",
            &format!("/{version}/containers/create?name={name}"),
            body.to_string().as_bytes(),
        )?;
        ensure!(
            r.status == 201,
            "create at {version}: {} {}",
            r.status,
            r.body
        );
        let hc = inspect(&s, &name)?["Config"]["Healthcheck"].clone();
        ensure!(
            hc.get("StartInterval").is_some() == kept,
            "{version}: Healthcheck {hc}"
        );
        s.docker(&["rm", &name])?.ok()?;
    }
    let bad = s.docker(&[
        "run",
        "-d",
        "--health-cmd",
        "true",
        "--health-interval",
        "1us",
        "busybox",
        "true",
    ])?;
    ensure!(bad.code == 125, "interval below 1ms: {bad:?}");
    expect_contains(
        "interval below 1ms",
        &bad.stderr,
        "Interval in Healthcheck cannot be less than 1ms",
    )?;
    s.docker(&["rm", "-f", "img", "over", "off"])?.ok()?;
    Ok(())
}

fn compose_waits() -> Result<()> {
    let s = Stack::with_busybox()?;
    let up = |args: &[&str]| crate::compose::compose(&s, "bthealth", "health.yml", &[], args);
    up(&["up", "-d"])?.ok()?;
    // `up` started app only once db was healthy.
    let db = inspect(&s, "bthealth_db_1")?;
    let app = inspect(&s, "bthealth_app_1")?;
    ensure!(
        db["State"]["Health"]["Status"] == "healthy" && app["State"]["Running"] == true,
        "db {} app {}",
        db["State"],
        app["State"]
    );
    let healthy_at = db["State"]["Health"]["Log"]
        .as_array()
        .and_then(|l| l.iter().find(|r| r["ExitCode"] == 0))
        .and_then(|r| r["End"].as_str())
        .context("db has no passing probe")?
        .to_string();
    let app_started = app["State"]["StartedAt"].as_str().unwrap_or_default();
    // RFC 3339 UTC times with nanoseconds compare as strings.
    ensure!(
        app_started > healthy_at.as_str(),
        "app started at {app_started}, before db was healthy at {healthy_at}"
    );
    up(&["down", "-t", "1"])?.ok()?;
    crate::common::wait_no_containers(&s)
}

fn exec_refused() -> Result<()> {
    let s = Stack::with_busybox()?;
    s.docker(&["run", "-d", "--name", "px", "busybox", "sleep", "1000"])?
        .ok()?;
    s.docker(&["pause", "px"])?.ok()?;
    let out = s.docker(&["exec", "px", "true"])?;
    ensure!(out.code == 1, "exec into paused: {out:?}");
    expect_contains(
        "exec into paused",
        &out.stderr,
        "Error response from daemon: Container px is paused, unpause the container before exec",
    )?;
    s.docker(&["unpause", "px"])?.ok()?;
    s.docker(&["exec", "px", "true"])?.ok()?;
    let id = inspect(&s, "px")?["Id"].as_str().context("Id")?.to_string();
    s.docker(&["stop", "-t", "1", "px"])?.ok()?;
    let out = s.docker(&["exec", "px", "true"])?;
    ensure!(out.code == 1, "exec into stopped: {out:?}");
    expect_contains(
        "exec into stopped",
        &out.stderr,
        &format!("Error response from daemon: container {id} is not running"),
    )?;
    s.docker(&["rm", "px"])?.ok()?;
    Ok(())
}

fn commit_pauses() -> Result<()> {
    let s = Stack::with_busybox()?;
    s.docker(&[
        "run",
        "-d",
        "--name",
        "cm",
        "busybox",
        "sh",
        "-c",
        "echo hi > /made; sleep 1000",
    ])?
    .ok()?;
    wait_until("/made to exist", Duration::from_secs(10), || {
        Ok((s.docker(&["exec", "cm", "cat", "/made"])?.code == 0).then_some(()))
    })?;
    s.docker(&["commit", "cm", "cmimg:1"])?.ok()?;
    let v = inspect(&s, "cm")?;
    ensure!(
        v["State"]["Running"] == true && v["State"]["Paused"] == false,
        "after commit: {}",
        v["State"]
    );
    let out = s
        .docker(&["run", "--rm", "cmimg:1", "cat", "/made"])?
        .ok()?;
    ensure!(out.stdout == "hi\n", "committed file: {:?}", out.stdout);
    let pauses = |s: &Stack| -> Result<Vec<String>> {
        events(s, &["container=cm", "event=pause", "event=unpause"])
    };
    let evs = pauses(&s)?;
    ensure!(
        evs.len() == 2 && evs[0].starts_with("pause|") && evs[1].starts_with("unpause|"),
        "pause events of a commit: {evs:?}"
    );
    // A bad name is refused before any pause.
    let r = berth_integration::http::request(
        &s.engine_sock(),
        "POST",
        "/v1.50/commit?container=cm&repo=UPPER",
        b"",
    )?;
    ensure!(r.status == 400, "commit to UPPER: {} {}", r.status, r.body);
    ensure!(
        pauses(&s)?.len() == 2,
        "a refused commit paused the container"
    );
    s.docker(&["commit", "--pause=false", "cm", "cmimg:2"])?
        .ok()?;
    ensure!(pauses(&s)?.len() == 2, "--pause=false paused the container");
    ensure!(inspect(&s, "cm")?["State"]["Running"] == true);
    s.docker(&["rm", "-f", "cm"])?.ok()?;
    s.docker(&["rmi", "cmimg:1", "cmimg:2"])?.ok()?;
    Ok(())
}

/// A probe whose binary is missing is dockerd's probe error (exit -1, the runtime's
/// message); every probe's result is saved (the log after an engine restart has the last
/// ones, not only those up to the last status change); `health_status` events carry the
/// container's labels.
fn missing_probe_binary() -> Result<()> {
    let mut s = Stack::with_busybox()?;
    let ctx = crate::build::context(
        &s,
        "hcmiss",
        &[(
            "Dockerfile",
            "FROM busybox\nHEALTHCHECK --interval=1s --retries=2 CMD [\"/no-such-probe\"]\n",
        )],
    )?;
    s.docker(&["build", "-q", "-t", "hcmiss", &ctx.to_string_lossy()])?
        .ok()?;
    s.docker(&[
        "run",
        "-d",
        "--name",
        "miss",
        "--label",
        "team=blue",
        "hcmiss",
        "sleep",
        "1000",
    ])?
    .ok()?;
    let v = wait_health(&s, "miss", "unhealthy")?;
    let first = &v["State"]["Health"]["Log"][0];
    ensure!(
        first["ExitCode"] == -1
            && first["Output"]
                .as_str()
                .is_some_and(|o| o.starts_with("OCI runtime exec failed")
                    && o.contains("/no-such-probe: no such file or directory")),
        "probe result of a missing binary: {first}"
    );
    let until = crate::events::now()?;
    let out = s
        .docker(&[
            "events",
            "--since",
            "0",
            "--until",
            &until,
            "--filter",
            "container=miss",
            "--filter",
            "event=health_status",
            "--format",
            "{{.Action}}|{{.Actor.Attributes.team}}|{{.Actor.Attributes.name}}",
        ])?
        .ok()?;
    ensure!(
        out.stdout
            .lines()
            .any(|l| l == "health_status: unhealthy|blue|miss"),
        "health_status events: {}",
        out.stdout
    );
    // Probes after the last status change: the status stays unhealthy, the log moves on.
    let last_start = |v: &Value| {
        v["State"]["Health"]["Log"]
            .as_array()
            .and_then(|l| l.last())
            .map(|e| e["Start"].clone())
    };
    let changed_at = last_start(&v);
    let seen = wait_until("probes after unhealthy", Duration::from_secs(30), || {
        let v = inspect(&s, "miss")?;
        let n = v["State"]["Health"]["FailingStreak"].as_i64().unwrap_or(0);
        Ok((n >= 4).then(|| last_start(&v)).flatten())
    })?;
    ensure!(
        Some(&seen) != changed_at.as_ref(),
        "no probe after the change"
    );
    s.kill_daemon(Daemon::Engine)?;
    s.start_daemon(Daemon::Engine)?;
    let v = inspect(&s, "miss")?;
    let log = v["State"]["Health"]["Log"]
        .as_array()
        .context("Health.Log")?;
    ensure!(
        log.iter().any(|e| e["Start"] == seen),
        "the probe at {seen} is not in the log after the restart: {log:?}"
    );
    s.docker(&["rm", "-f", "miss"])?.ok()?;
    Ok(())
}
