//! docker-py (Debian's python3-docker) against the engine: the client library most tools
//! are built on must work unchanged. The checks live in integration/py/.

use std::path::PathBuf;
use std::process::Command;
use std::time::Duration;

use anyhow::{ensure, Result};
use berth_integration::cmd;
use berth_integration::prereq::{Need, SYSTEM_PYTHON};
use berth_integration::Stack;

use crate::common::Spec;

const NEEDS: &[Need] = &[Need::Root, Need::Busybox, Need::Docker, Need::DockerPy];

pub fn tests() -> Vec<Spec> {
    vec![Spec {
        name: "docker_py::common_calls",
        needs: NEEDS,
        run: common_calls,
    }]
}

fn script(name: &str) -> PathBuf {
    PathBuf::from(env!("CARGO_MANIFEST_DIR"))
        .join("py")
        .join(name)
}

/// Runs one script against a stack with the busybox image; its output names each check.
fn run_script(s: &Stack, name: &str) -> Result<cmd::Output> {
    let mut c = Command::new(SYSTEM_PYTHON);
    c.arg(script(name))
        .env("DOCKER_HOST", s.engine_host())
        .env("PYTHONDONTWRITEBYTECODE", "1")
        .env_remove("DOCKER_API_VERSION")
        .env_remove("DOCKER_TLS_VERIFY")
        .env_remove("DOCKER_CERT_PATH");
    cmd::run(c, &s.dir, Duration::from_secs(180))
}

fn common_calls() -> Result<()> {
    let s = Stack::with_busybox()?;
    let out = run_script(&s, "docker_py_common.py")?.ok()?;
    ensure!(
        out.stdout.contains("all checks passed"),
        "docker-py script did not finish: {out}"
    );
    Ok(())
}
