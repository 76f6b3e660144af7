//! Volumes and mounts through the docker CLI: `docker volume` create/ls/inspect/rm/prune
//! with dockerd's errors, data kept in a named volume across containers and engine
//! restarts, copy-up of image content, anonymous volumes removed by `rm -v` and `--rm`,
//! `--mount` and `--tmpfs` as the container sees them, and no mount left behind.

use std::time::Duration;

use anyhow::{ensure, Context, Result};
use berth_integration::stack::Daemon;
use berth_integration::{cleanup, wait_until, Stack};
use nix::sys::signal::Signal;

use crate::common::{container_id, expect_contains, inspect, wait_no_containers, Spec, DOCKER};

pub fn tests() -> Vec<Spec> {
    vec![
        Spec {
            name: "volumes::lifecycle_in_use_and_restart",
            needs: DOCKER,
            run: lifecycle,
        },
        Spec {
            name: "volumes::anonymous_copy_up_and_removal",
            needs: DOCKER,
            run: anonymous,
        },
        Spec {
            name: "volumes::mount_tmpfs_and_bad_specs",
            needs: DOCKER,
            run: mounts,
        },
    ]
}

fn volume_names(s: &Stack, args: &[&str]) -> Result<Vec<String>> {
    let mut full = vec!["volume", "ls", "-q"];
    full.extend_from_slice(args);
    let out = s.docker(&full)?.ok()?;
    Ok(out.stdout.lines().map(str::to_string).collect())
}

/// Nothing mounted under the stack's dirs once every container is gone.
pub fn no_mounts_left(s: &Stack) -> Result<()> {
    wait_no_containers(s)?;
    let left = wait_until(
        "mounts under the stack to go",
        Duration::from_secs(20),
        || Ok(cleanup::mounts_under(&s.dir)?.is_empty().then_some(())),
    );
    ensure!(
        left.is_ok(),
        "mounts left: {:?}",
        cleanup::mounts_under(&s.dir)?
    );
    Ok(())
}

fn lifecycle() -> Result<()> {
    let mut s = Stack::with_busybox()?;
    let out = s
        .docker(&["volume", "create", "--label", "team=db", "data1"])?
        .ok()?;
    ensure!(
        out.out() == "data1",
        "volume create printed {:?}",
        out.out()
    );
    let v = s.docker(&["volume", "inspect", "data1"])?.ok()?;
    let v: serde_json::Value = serde_json::from_str(&v.stdout)?;
    let mountpoint = s.dir.join("e/volumes/data1/_data");
    ensure!(
        v[0]["Mountpoint"] == mountpoint.to_string_lossy().as_ref()
            && v[0]["Driver"] == "local"
            && v[0]["Scope"] == "local"
            && v[0]["Labels"]["team"] == "db"
            && v[0]["CreatedAt"].as_str().is_some_and(|t| t.ends_with('Z')),
        "volume inspect: {v}"
    );
    s.docker(&["volume", "create", "other"])?.ok()?;
    ensure!(volume_names(&s, &[])? == ["data1", "other"]);
    ensure!(volume_names(&s, &["-f", "label=team=db"])? == ["data1"]);
    ensure!(volume_names(&s, &["-f", "name=oth"])? == ["other"]);
    let fmt = s
        .docker(&["volume", "ls", "--format", "{{.Name}} {{.Driver}}"])?
        .ok()?;
    ensure!(
        fmt.stdout == "data1 local\nother local\n",
        "{:?}",
        fmt.stdout
    );

    // Data written by one container is read by the next; `:ro` refuses writes.
    s.docker(&[
        "run",
        "--name",
        "writer",
        "-v",
        "data1:/data",
        "busybox",
        "sh",
        "-c",
        "echo hello > /data/f",
    ])?
    .ok()?;
    ensure!(std::fs::read_to_string(mountpoint.join("f"))? == "hello\n");
    let out = s
        .docker(&[
            "run",
            "--rm",
            "-v",
            "data1:/data:ro",
            "busybox",
            "sh",
            "-c",
            "cat /data/f; touch /data/g",
        ])?
        .expect_code(1)?;
    ensure!(out.stdout == "hello\n", "reader saw {:?}", out.stdout);
    expect_contains(
        "write to a :ro volume",
        &out.stderr,
        "Read-only file system",
    )?;
    ensure!(volume_names(&s, &["-f", "dangling=true"])? == ["other"]);

    let m = inspect(&s, "writer")?;
    let mount = &m["Mounts"][0];
    ensure!(
        mount["Type"] == "volume"
            && mount["Name"] == "data1"
            && mount["Source"] == mountpoint.to_string_lossy().as_ref()
            && mount["Destination"] == "/data"
            && mount["Driver"] == "local"
            && mount["RW"] == true,
        "Mounts: {}",
        m["Mounts"]
    );
    let writer = m["Id"].as_str().context("Id")?.to_string();
    let out = s.docker(&["volume", "rm", "data1"])?.expect_code(1)?;
    expect_contains(
        "rm of a volume in use",
        &out.stderr,
        &format!("Error response from daemon: remove data1: volume is in use - [{writer}]"),
    )?;
    // Bad input, as dockerd words it.
    let out = s.docker(&["volume", "create", "a/b"])?.expect_code(1)?;
    expect_contains(
        "invalid volume name",
        &out.stderr,
        "\"a/b\" includes invalid characters for a local volume name, only \"[a-zA-Z0-9][a-zA-Z0-9_.-]\" are allowed",
    )?;
    let out = s
        .docker(&["volume", "create", "-o", "bogus=1", "xx"])?
        .expect_code(1)?;
    expect_contains("bad option", &out.stderr, "invalid option key: \"bogus\"")?;
    let out = s.docker(&["volume", "inspect", "nope"])?.expect_code(1)?;
    expect_contains("missing volume", &out.stderr, "no such volume")?;

    // Volumes and their references survive an engine restart.
    s.stop_daemon(Daemon::Engine, Signal::SIGTERM)?;
    s.start_daemon(Daemon::Engine)?;
    ensure!(volume_names(&s, &[])? == ["data1", "other"]);
    s.docker(&["volume", "rm", "data1"])?.expect_code(1)?;
    s.docker(&["rm", "writer"])?.ok()?;
    s.docker(&["volume", "rm", "data1", "other"])?.ok()?;
    ensure!(!mountpoint.exists(), "volume dir left");
    s.docker(&["volume", "rm", "-f", "data1"])?.ok()?;
    ensure!(volume_names(&s, &[])?.is_empty());

    // A tmpfs volume (local driver options) is mounted while used, and only then.
    s.docker(&[
        "volume",
        "create",
        "-o",
        "type=tmpfs",
        "-o",
        "device=tmpfs",
        "-o",
        "o=size=2m",
        "tv",
    ])?
    .ok()?;
    let out = s
        .docker(&["run", "--rm", "-v", "tv:/t", "busybox", "df", "-k", "/t"])?
        .ok()?;
    expect_contains("tmpfs volume size", &out.stdout, "2048")?;
    s.docker(&["volume", "rm", "tv"])?.ok()?;
    no_mounts_left(&s)
}

fn anonymous() -> Result<()> {
    let s = Stack::with_busybox()?;
    // `-v /etc` over image content: a new anonymous volume gets the image's /etc.
    let id = container_id(
        &s.docker(&["run", "-d", "-v", "/etc", "busybox", "sleep", "60"])?
            .ok()?
            .stdout,
    )?;
    let m = inspect(&s, &id)?;
    let name = m["Mounts"][0]["Name"].as_str().context("Mounts[0].Name")?;
    ensure!(
        name.len() == 64 && m["Mounts"][0]["Destination"] == "/etc",
        "Mounts: {}",
        m["Mounts"]
    );
    let data = s.dir.join(format!("e/volumes/{name}/_data"));
    ensure!(
        std::fs::read_to_string(data.join("passwd"))?.starts_with("root:"),
        "image content not copied up"
    );
    let v = s.docker(&["volume", "inspect", name])?.ok()?;
    expect_contains("anonymous label", &v.stdout, "com.docker.volume.anonymous")?;
    s.docker(&["rm", "-f", "-v", &id])?.ok()?;
    ensure!(volume_names(&s, &[])?.is_empty(), "rm -v left the volume");

    // A named volume is copied into too, and stays after --rm; an anonymous one goes.
    let out = s
        .docker(&[
            "run",
            "--rm",
            "-v",
            "etcvol:/etc",
            "-v",
            "/scratch",
            "busybox",
            "cat",
            "/etc/group",
        ])?
        .ok()?;
    expect_contains("copied /etc/group", &out.stdout, "nogroup")?;
    ensure!(
        wait_until(
            "--rm to remove the anonymous volume",
            Duration::from_secs(20),
            || { Ok((volume_names(&s, &[])? == ["etcvol"]).then_some(())) }
        )
        .is_ok(),
        "volumes: {:?}",
        volume_names(&s, &[])?
    );
    // nocopy leaves the new volume without the image's files (the runtime still makes
    // the mount points of /etc/hosts and friends in it, as with dockerd).
    let out = s
        .docker(&[
            "run",
            "--rm",
            "-v",
            "empty:/etc:nocopy",
            "busybox",
            "ls",
            "-A",
            "/etc",
        ])?
        .ok()?;
    ensure!(
        !out.stdout.contains("passwd"),
        "nocopy volume has {:?}",
        out.stdout
    );

    // prune: anonymous unused volumes only; -a all unused ones.
    s.docker(&["create", "--name", "keep", "-v", "/k", "busybox", "true"])?
        .ok()?;
    s.docker(&["volume", "create", "named"])?.ok()?;
    let anon = container_id(
        &s.docker(&["create", "-v", "/gone", "busybox", "true"])?
            .ok()?
            .stdout,
    )?;
    s.docker(&["rm", &anon])?.ok()?;
    let before = volume_names(&s, &[])?;
    ensure!(before.len() == 5, "volumes: {before:?}");
    s.docker(&["volume", "prune", "-f"])?.ok()?;
    ensure!(
        volume_names(&s, &[])?.len() == 4,
        "prune removed the wrong set"
    );
    s.docker(&["volume", "prune", "-af"])?.ok()?;
    let left = volume_names(&s, &[])?;
    ensure!(left.len() == 1, "prune -a left {left:?}");
    let df = s.docker(&["system", "df"])?.ok()?;
    expect_contains("system df", &df.stdout, "Local Volumes")?;
    s.docker(&["rm", "-v", "keep"])?.ok()?;
    ensure!(volume_names(&s, &[])?.is_empty());
    no_mounts_left(&s)
}

fn mounts() -> Result<()> {
    let s = Stack::with_busybox()?;
    let src = s.dir.join("bindsrc");
    std::fs::create_dir_all(&src)?;
    std::fs::write(src.join("hello"), "from host\n")?;
    let bind = format!("type=bind,src={},dst=/b,readonly", src.display());
    let out = s
        .docker(&[
            "run",
            "--rm",
            "--mount",
            &bind,
            "--mount",
            "type=tmpfs,dst=/t,tmpfs-size=1048576",
            "--tmpfs",
            "/x:size=2m",
            "busybox",
            "sh",
            "-c",
            "cat /b/hello; cat /proc/mounts",
        ])?
        .ok()?;
    expect_contains("bind content", &out.stdout, "from host")?;
    let line = |dst: &str| {
        out.stdout
            .lines()
            .find(|l| l.split(' ').nth(1) == Some(dst))
            .unwrap_or("")
            .to_string()
    };
    ensure!(line("/b").contains(" ro,"), "/b: {:?}", line("/b"));
    ensure!(
        line("/t").starts_with("tmpfs /t tmpfs") && line("/t").contains("size=1024k"),
        "/t: {:?}",
        line("/t")
    );
    ensure!(line("/x").contains("size=2048k"), "/x: {:?}", line("/x"));

    // -v creates a missing host path; --mount refuses it.
    let made = s.dir.join("made/by/v");
    s.docker(&[
        "run",
        "--rm",
        "-v",
        &format!("{}:/m", made.display()),
        "busybox",
        "true",
    ])?
    .ok()?;
    ensure!(made.is_dir(), "-v did not create {}", made.display());
    let missing = s.dir.join("missing");
    let out = s
        .docker(&[
            "run",
            "--rm",
            "--mount",
            &format!("type=bind,src={},dst=/m", missing.display()),
            "busybox",
            "true",
        ])?
        .expect_code(125)?;
    expect_contains(
        "missing bind source",
        &out.stderr,
        &format!(
            "invalid mount config for type \"bind\": bind source path does not exist: {}",
            missing.display()
        ),
    )?;
    let (a, c) = (
        s.dir.join("a").display().to_string(),
        s.dir.join("c").display().to_string(),
    );
    for (args, want) in [
        (
            vec![format!("-v"), format!("{a}:/b:xx")],
            "invalid mode: xx".to_string(),
        ),
        (
            vec![
                "-v".into(),
                format!("{a}:/b"),
                "-v".into(),
                format!("{c}:/b"),
            ],
            "Duplicate mount point: /b".into(),
        ),
        (
            vec!["--tmpfs".into(), "/t:bogus".into()],
            "invalid tmpfs option \"bogus\"".into(),
        ),
    ] {
        let mut full = vec!["run", "--rm"];
        full.extend(args.iter().map(String::as_str));
        full.extend(["busybox", "true"]);
        let out = s.docker(&full)?.expect_code(125)?;
        expect_contains(&format!("{args:?}"), &out.stderr, &want)?;
    }
    ensure!(
        !s.dir.join("a").exists(),
        "a refused create made its bind source"
    );
    ensure!(
        volume_names(&s, &[])?.is_empty(),
        "a failed create left volumes"
    );
    no_mounts_left(&s)
}
