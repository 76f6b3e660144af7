//! Legacy links (`docker run --link target[:alias]`) on the default bridge, through the
//! docker CLI, against what dockerd 20.10 gives for the same commands: the `<ALIAS>_...`
//! variables, the /etc/hosts line, `HostConfig.Links`, the link's name in `docker ps`,
//! and dockerd's errors for a missing, stopped or off-bridge target and for `host` or
//! `container:` networking.

use anyhow::{ensure, Result};
use berth_integration::Stack;

use crate::common::{inspect, Spec, DOCKER};
use crate::network::{container_ip, expect_no_endpoints};

pub fn tests() -> Vec<Spec> {
    vec![
        Spec {
            name: "network_links::env_hosts_inspect_and_ps_names",
            needs: DOCKER,
            run: env_hosts_inspect_names,
        },
        Spec {
            name: "network_links::bad_links_as_dockerd_and_nothing_left",
            needs: DOCKER,
            run: bad_links,
        },
    ]
}

fn env_hosts_inspect_names() -> Result<()> {
    let s = Stack::with_busybox()?;
    s.docker(&[
        "run",
        "-d",
        "--name",
        "tgt",
        "-e",
        "FOO=bar",
        "-e",
        "HOME=/h",
        "--expose",
        "80",
        "--expose",
        "53/udp",
        "--expose",
        "8000-8002",
        "busybox",
        "sleep",
        "300",
    ])?
    .ok()?;
    let t = inspect(&s, "tgt")?;
    let ip = container_ip(&t)?;
    // The default hostname: the first 12 hex digits of the ID.
    let hostname: String = t["Id"]
        .as_str()
        .unwrap_or_default()
        .chars()
        .take(12)
        .collect();
    // dockerd stores it: inspect shows it in Config.Hostname.
    ensure!(
        t["Config"]["Hostname"] == hostname.as_str(),
        "Config.Hostname {} is not {hostname}",
        t["Config"]["Hostname"]
    );

    let out = s
        .docker(&[
            "run", "--rm", "--name", "web", "--link", "tgt:db-1", "busybox", "sh", "-c",
            "env | grep ^DB_1_ | sort; echo ---; grep -w db-1 /etc/hosts; ping -c1 -W2 db-1 >/dev/null && echo reached",
        ])?
        .ok()?;
    let (env, rest) = out.stdout.split_once("---\n").unwrap_or((&out.stdout, ""));
    let mut want: Vec<String> = [
        "DB_1_ENV_FOO=bar".to_string(),
        "DB_1_NAME=/web/db-1".into(),
        format!("DB_1_PORT=udp://{ip}:53"),
    ]
    .into_iter()
    .collect();
    for (port, proto) in [
        (53, "udp"),
        (80, "tcp"),
        (8000, "tcp"),
        (8001, "tcp"),
        (8002, "tcp"),
    ] {
        let key = format!("DB_1_PORT_{port}_{}", proto.to_uppercase());
        want.push(format!("{key}={proto}://{ip}:{port}"));
        want.push(format!("{key}_ADDR={ip}"));
        want.push(format!("{key}_PORT={port}"));
        want.push(format!("{key}_PROTO={proto}"));
    }
    // 8000-8002 is a run of three: dockerd adds the range variables.
    want.push(format!("DB_1_PORT_8000_TCP_START=tcp://{ip}:8000"));
    want.push(format!("DB_1_PORT_8000_TCP_END=tcp://{ip}:8002"));
    want.push("DB_1_PORT_8000_TCP_PORT_START=8000".into());
    want.push("DB_1_PORT_8000_TCP_PORT_END=8002".into());
    want.sort();
    let got: Vec<String> = env.lines().map(String::from).collect();
    ensure!(got == want, "link variables:\n{got:#?}\nwanted:\n{want:#?}");
    ensure!(
        rest.lines().next() == Some(&format!("{ip}\tdb-1 {hostname} tgt")),
        "hosts line for the link: {rest:?}"
    );
    ensure!(rest.contains("reached"), "db-1 not reachable: {out}");
    // The stored form, and the link's name listed for the target.
    s.docker(&[
        "run", "-d", "--name", "par", "--link", "tgt:al", "busybox", "sleep", "300",
    ])?
    .ok()?;
    let links = &inspect(&s, "par")?["HostConfig"]["Links"];
    ensure!(
        *links == serde_json::json!(["/tgt:/par/al"]),
        "HostConfig.Links {links}"
    );
    ensure!(
        inspect(&s, "tgt")?["HostConfig"]["Links"].is_null(),
        "the target has no links of its own"
    );
    let names = s
        .docker(&["ps", "--no-trunc", "--format", "{{.Names}}"])?
        .ok()?;
    ensure!(
        names.stdout.lines().any(|l| l == "par/al,tgt"),
        "ps names: {:?}",
        names.stdout
    );
    s.docker(&["rm", "-f", "par", "tgt"])?.ok()?;
    expect_no_endpoints(&s)
}

fn bad_links() -> Result<()> {
    let s = Stack::with_busybox()?;
    let refused = |args: &[&str], message: &str| -> Result<()> {
        let out = s.docker(args)?.expect_code(125)?;
        ensure!(
            out.stderr
                .contains(&format!("Error response from daemon: {message}")),
            "{args:?}: {out}"
        );
        Ok(())
    };
    refused(
        &["run", "--rm", "--link", "missing:m", "busybox", "true"],
        "could not get container for missing: No such container: missing",
    )?;
    s.docker(&["create", "--name", "stopped", "busybox", "true"])?
        .ok()?;
    refused(
        &[
            "run",
            "--rm",
            "--name",
            "rr",
            "--link",
            "stopped:s",
            "busybox",
            "true",
        ],
        "Cannot link to a non running container: /stopped AS /rr/s",
    )?;
    let kept = [
        "run",
        "--name",
        "kept",
        "--link",
        "stopped:s",
        "busybox",
        "true",
    ];
    refused(
        &kept,
        "Cannot link to a non running container: /stopped AS /kept/s",
    )?;
    let state = &inspect(&s, "kept")?["State"];
    ensure!(
        state["Status"] == "created" && state["ExitCode"] == 128,
        "state after the refused start: {state}"
    );
    s.docker(&["run", "-d", "--name", "up", "busybox", "sleep", "300"])?
        .ok()?;
    let conflict = |kind| {
        format!("conflicting options: {kind} can't be used with links. This would result in undefined behavior")
    };
    refused(
        &[
            "run",
            "--rm",
            "--network",
            "host",
            "--link",
            "up",
            "busybox",
            "true",
        ],
        &conflict("host type networking"),
    )?;
    refused(
        &[
            "run",
            "--rm",
            "--network",
            "container:up",
            "--link",
            "up",
            "busybox",
            "true",
        ],
        &conflict("container type network"),
    )?;
    s.docker(&[
        "run",
        "-d",
        "--name",
        "nonet",
        "--network",
        "none",
        "busybox",
        "sleep",
        "300",
    ])?
    .ok()?;
    refused(
        &["run", "--rm", "--link", "nonet", "busybox", "true"],
        "Cannot link to /nonet, as it does not belong to the default network",
    )?;
    // The refused --rm runs left nothing behind.
    let all = s.docker(&["ps", "-a", "--format", "{{.Names}}"])?.ok()?;
    let mut names: Vec<&str> = all.stdout.lines().collect();
    names.sort();
    ensure!(
        names == ["kept", "nonet", "stopped", "up"],
        "containers left: {names:?}"
    );
    s.docker(&["rm", "-f", "kept", "nonet", "stopped", "up"])?
        .ok()?;
    expect_no_endpoints(&s)
}
