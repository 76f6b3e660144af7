//! `docker run` in the foreground: output, exit codes, --rm, start failures.

use anyhow::Result;
use berth_integration::Stack;

use crate::common::{expect_contains, inspect, wait_no_containers, Spec, DOCKER};

pub fn tests() -> Vec<Spec> {
    vec![
        Spec {
            name: "docker_run::echo_hello",
            needs: DOCKER,
            run: echo_hello,
        },
        Spec {
            name: "docker_run::exit_code_with_rm",
            needs: DOCKER,
            run: exit_code_with_rm,
        },
        Spec {
            name: "docker_run::nonexistent_command",
            needs: DOCKER,
            run: nonexistent_command,
        },
        Spec {
            name: "docker_run::missing_image",
            needs: DOCKER,
            run: missing_image,
        },
    ]
}

fn echo_hello() -> Result<()> {
    let s = Stack::with_busybox()?;
    let out = s
        .docker(&["run", "--rm", "busybox", "echo", "hello"])?
        .ok()?;
    anyhow::ensure!(
        out.stdout == "hello\n",
        "stdout {:?}, want \"hello\\n\"",
        out.stdout
    );
    let env_echo = "echo \"$GREETING\"";
    let out = s
        .docker(&[
            "run",
            "--rm",
            "-e",
            "GREETING=hi there",
            "busybox",
            "sh",
            "-c",
            env_echo,
        ])?
        .ok()?;
    anyhow::ensure!(out.stdout == "hi there\n", "run -e stdout {:?}", out.stdout);
    wait_no_containers(&s)
}

fn exit_code_with_rm() -> Result<()> {
    let s = Stack::with_busybox()?;
    s.docker(&["run", "--rm", "busybox", "sh", "-c", "exit 3"])?
        .expect_code(3)?;
    wait_no_containers(&s)
}

fn nonexistent_command() -> Result<()> {
    let s = Stack::with_busybox()?;
    let out = s
        .docker(&["run", "--rm", "busybox", "/nonexistent"])?
        .expect_code(127)?;
    // docker's wording: exec: "/nonexistent": stat /nonexistent: no such file or directory
    expect_contains(
        "docker run stderr",
        &out.stderr,
        "Error response from daemon",
    )?;
    expect_contains("docker run stderr", &out.stderr, "/nonexistent")?;
    expect_contains(
        "docker run stderr",
        &out.stderr,
        "no such file or directory",
    )?;
    wait_no_containers(&s)?;

    // Without --rm the container stays, never started, with the failure recorded.
    s.docker(&["run", "--name", "failed", "busybox", "/nonexistent"])?
        .expect_code(127)?;
    let v = inspect(&s, "failed")?;
    anyhow::ensure!(
        v["State"]["Running"] == false && v["State"]["ExitCode"] == 127,
        "State after failed start: {}",
        v["State"]
    );
    s.docker(&["rm", "failed"])?.ok()?;
    wait_no_containers(&s)
}

fn missing_image() -> Result<()> {
    let s = Stack::with_busybox()?;
    // --pull never: the tests must not reach for a registry.
    let out = s
        .docker(&["run", "--rm", "--pull", "never", "nosuchimage"])?
        .expect_code(125)?;
    expect_contains("docker run stderr", &out.stderr, "No such image")?;
    expect_contains("docker run stderr", &out.stderr, "nosuchimage")?;
    wait_no_containers(&s)
}
