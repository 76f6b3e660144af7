//! docker-compose (Debian's v1, built on docker-py) against the engine: `up -d`, `ps`,
//! `logs`, `exec`, published ports and `down` must behave as with dockerd. The compose
//! files live in integration/compose/.

use std::io::{Read, Write};
use std::net::{TcpListener, TcpStream};
use std::path::PathBuf;
use std::process::Command;
use std::time::Duration;

use anyhow::{Context, Result};
use berth_integration::prereq::Need;
use berth_integration::{cmd, wait_until, Stack};

use crate::common::{expect_contains, wait_no_containers, Spec};

const NEEDS: &[Need] = &[Need::Root, Need::Busybox, Need::Docker, Need::Compose];

pub fn tests() -> Vec<Spec> {
    vec![
        Spec {
            name: "compose::bridge_services_up_ps_logs_exec_down",
            needs: NEEDS,
            run: bridge_services,
        },
        Spec {
            name: "compose::project_network_service_discovery",
            needs: NEEDS,
            run: project_network,
        },
    ]
}

/// Runs docker-compose for project `project` with `file` against the stack.
pub fn compose(
    s: &Stack,
    project: &str,
    file: &str,
    env: &[(&str, &str)],
    args: &[&str],
) -> Result<cmd::Output> {
    let file = PathBuf::from(env!("CARGO_MANIFEST_DIR"))
        .join("compose")
        .join(file);
    let mut c = Command::new(berth_integration::prereq::COMPOSE);
    c.arg("--no-ansi")
        .arg("-p")
        .arg(project)
        .arg("-f")
        .arg(file)
        .args(args)
        .env("DOCKER_HOST", s.engine_host())
        .env("DOCKER_CONFIG", s.dir.join("dc"))
        .env("COMPOSE_INTERACTIVE_NO_CLI", "1")
        .env("PYTHONDONTWRITEBYTECODE", "1")
        .env_remove("DOCKER_API_VERSION")
        .env_remove("COMPOSE_FILE")
        .env_remove("COMPOSE_PROJECT_NAME");
    for (k, v) in env {
        c.env(k, v);
    }
    cmd::run(c, &s.dir, Duration::from_secs(120))
}

fn http_get(port: u16, path: &str) -> Result<String> {
    let mut conn = TcpStream::connect(("127.0.0.1", port))?;
    conn.set_read_timeout(Some(Duration::from_secs(5)))?;
    write!(conn, "GET {path} HTTP/1.0\r\nHost: x\r\n\r\n")?;
    let mut body = String::new();
    conn.read_to_string(&mut body)?;
    Ok(body)
}

fn bridge_services() -> Result<()> {
    let s = Stack::with_busybox()?;
    let port = TcpListener::bind("127.0.0.1:0")?
        .local_addr()?
        .port()
        .to_string();
    let env = [("WEB_PORT", port.as_str())];
    let p = "btcompose";
    compose(&s, p, "bridge.yml", &env, &["up", "-d"])?.ok()?;
    let port: u16 = port.parse()?;
    wait_until("the web service to serve", Duration::from_secs(20), || {
        Ok(http_get(port, "/index.html")
            .ok()
            .filter(|b| b.contains("compose-ok"))
            .map(drop))
    })?;
    // The one-shot job finishes on its own; compose reads its state and logs from the engine.
    wait_until("the job service to exit", Duration::from_secs(20), || {
        let out = compose(&s, p, "bridge.yml", &env, &["ps"])?.ok()?;
        Ok(out
            .stdout
            .lines()
            .any(|l| l.starts_with("btcompose_job_1") && l.contains("Exit 0"))
            .then_some(out))
    })
    .and_then(|out| expect_contains("compose ps", &out.stdout, "Up"))?;
    let logs = compose(&s, p, "bridge.yml", &env, &["logs", "--no-color", "job"])?.ok()?;
    expect_contains("compose logs job", &logs.stdout, "job says hi")?;
    let exec = compose(
        &s,
        p,
        "bridge.yml",
        &env,
        &[
            "exec",
            "-T",
            "web",
            "sh",
            "-c",
            "echo $GREETING; cat /www/index.html",
        ],
    )?
    .ok()?;
    anyhow::ensure!(
        exec.stdout == "hello\ncompose-ok\n",
        "compose exec stdout {:?}",
        exec.stdout
    );
    let labels = s.docker(&["inspect", "-f", "{{index .Config.Labels \"com.docker.compose.service\"}} {{index .Config.Labels \"suite\"}}", "btcompose_web_1"])?.ok()?;
    anyhow::ensure!(labels.out() == "web compose", "labels {:?}", labels.out());
    compose(&s, p, "bridge.yml", &env, &["down"])?
        .ok()
        .context("compose down")?;
    wait_no_containers(&s)
}

fn project_network() -> Result<()> {
    let s = Stack::with_busybox()?;
    let p = "btcomposenet";
    let bridge = format!("{}9", s.firewall_table);
    let env = [("NET_BRIDGE", bridge.as_str())];
    compose(&s, p, "network.yml", &env, &["up", "-d"])?.ok()?;
    let nets = s
        .docker(&["network", "ls", "--format", "{{.Name}}"])?
        .ok()?;
    expect_contains("network ls", &nets.stdout, "btcomposenet_default")?;
    // The client reaches the web service by its name and exits 0 with the page.
    wait_until(
        "the client service to exit",
        Duration::from_secs(40),
        || {
            let out = compose(&s, p, "network.yml", &env, &["ps"])?.ok()?;
            Ok(out
                .stdout
                .lines()
                .find(|l| l.starts_with("btcomposenet_client_1") && l.contains("Exit"))
                .map(str::to_string))
        },
    )
    .and_then(|line| {
        anyhow::ensure!(line.contains("Exit 0"), "client service: {line}");
        Ok(())
    })?;
    let logs = compose(
        &s,
        p,
        "network.yml",
        &env,
        &["logs", "--no-color", "client"],
    )?
    .ok()?;
    expect_contains("compose logs client", &logs.stdout, "compose-net-ok")?;
    compose(&s, p, "network.yml", &env, &["down"])?
        .ok()
        .context("compose down")?;
    wait_no_containers(&s)?;
    let nets = s
        .docker(&["network", "ls", "--format", "{{.Name}}"])?
        .ok()?;
    anyhow::ensure!(
        !nets.stdout.contains("btcomposenet_default"),
        "the project network outlived down: {}",
        nets.stdout
    );
    Ok(())
}
