//! `docker events`: the engine's container events replayed with --since/--until and
//! filtered by container and event type; image tag/untag events.

use std::time::{SystemTime, UNIX_EPOCH};

use anyhow::{ensure, Result};
use berth_integration::Stack;

use crate::common::{Spec, DOCKER};

pub fn tests() -> Vec<Spec> {
    vec![
        Spec {
            name: "events::container_lifecycle_since_until_filters",
            needs: DOCKER,
            run: lifecycle,
        },
        Spec {
            name: "events::image_tag_and_untag",
            needs: DOCKER,
            run: image_events,
        },
    ]
}

pub fn now() -> Result<String> {
    let d = SystemTime::now().duration_since(UNIX_EPOCH)?;
    Ok(format!("{}.{:09}", d.as_secs(), d.subsec_nanos()))
}

fn lifecycle() -> Result<()> {
    let s = Stack::with_busybox()?;
    let since = now()?;
    s.docker(&[
        "run", "--rm", "--name", "ev1", "busybox", "sh", "-c", "exit 3",
    ])?
    .expect_code(3)?;
    s.docker(&["run", "--rm", "--name", "ev2", "busybox", "true"])?
        .ok()?;
    let until = now()?;
    let events = |filters: &[&str]| -> Result<Vec<String>> {
        let mut args = vec!["events", "--since", &since, "--until", &until];
        args.extend_from_slice(filters);
        args.extend_from_slice(&[
            "--format",
            "{{.Type}} {{.Action}} {{.Actor.Attributes.name}}",
        ]);
        let out = s.docker(&args)?.ok()?;
        Ok(out.stdout.lines().map(str::to_string).collect())
    };
    let got = events(&["--filter", "container=ev1"])?;
    let want = [
        "container create ev1",
        "container start ev1",
        "container die ev1",
        "container destroy ev1",
    ];
    ensure!(got == want, "ev1 events {got:?}, want {want:?}");
    let got = events(&["--filter", "event=die", "--filter", "type=container"])?;
    ensure!(
        got == ["container die ev1", "container die ev2"],
        "die events {got:?}"
    );
    let out = s
        .docker(&[
            "events",
            "--since",
            &since,
            "--until",
            &until,
            "--format",
            "{{json .}}",
            "--filter",
            "container=ev1",
            "--filter",
            "event=die",
        ])?
        .ok()?;
    let v: serde_json::Value = serde_json::from_str(out.stdout.trim())?;
    ensure!(v["Actor"]["Attributes"]["exitCode"] == "3", "die event {v}");
    ensure!(
        v["Actor"]["Attributes"]["image"] == "busybox",
        "die event {v}"
    );
    Ok(())
}

fn image_events() -> Result<()> {
    let s = Stack::with_busybox()?;
    let since = now()?;
    s.docker(&["tag", "busybox", "other:1"])?.ok()?;
    s.docker(&["rmi", "other:1"])?.ok()?;
    let until = now()?;
    let out = s
        .docker(&[
            "events",
            "--since",
            &since,
            "--until",
            &until,
            "--filter",
            "type=image",
            "--format",
            "{{.Action}} {{.Actor.Attributes.name}}",
        ])?
        .ok()?;
    let got: Vec<&str> = out.stdout.lines().collect();
    ensure!(
        got == ["tag other:1", "untag other:1"],
        "image events {got:?}"
    );
    Ok(())
}
