//! Errors through the API: unknown names, malformed bodies.

use anyhow::{ensure, Result};
use berth_integration::{http, Stack};

use crate::common::{expect_contains, wait_no_containers, Spec, DOCKER};

pub fn tests() -> Vec<Spec> {
    vec![
        Spec {
            name: "docker_errors::unknown_container",
            needs: DOCKER,
            run: unknown_container,
        },
        Spec {
            name: "docker_errors::malformed_body",
            needs: DOCKER,
            run: malformed_body,
        },
    ]
}

fn unknown_container() -> Result<()> {
    let s = Stack::start()?;
    for args in [
        &["rm", "nosuch"][..],
        &["stop", "nosuch"],
        &["logs", "nosuch"],
        &["exec", "nosuch", "true"],
    ] {
        let out = s.docker(args)?;
        ensure!(out.code != 0, "{out}");
        expect_contains(
            &format!("docker {}", args[0]),
            &out.stderr,
            "No such container: nosuch",
        )?;
    }
    Ok(())
}

fn malformed_body() -> Result<()> {
    let s = Stack::start()?;
    let sock = s.engine_sock();
    for body in [&b"{not json"[..], br#"{"Image": 5}"#] {
        let r = http::request(&sock, "POST", "/v1.50/containers/create", body)?;
        ensure!(
            r.status == 400,
            "status {} for body {:?}: {}",
            r.status,
            body,
            r.body
        );
        let v: serde_json::Value = serde_json::from_str(&r.body)
            .map_err(|e| anyhow::anyhow!("error body is not JSON ({e}): {}", r.body))?;
        ensure!(
            v["message"].as_str().is_some_and(|m| !m.is_empty()),
            "body {}",
            r.body
        );
    }
    // Nothing was created by the rejected requests.
    wait_no_containers(&s)
}
