//! `berth run`: create → attach → wait → start → stream output → exit with the code.
//! The attach and the wait are set up before start so no output or exit can be missed.

use serde::Deserialize;
use serde_json::{json, Value};

use super::{enc, print_out, pump};
use crate::args::RunArgs;
use crate::client::Client;
use crate::error::{CliError, EXIT_DAEMON};

#[derive(Debug, Deserialize)]
#[serde(rename_all = "PascalCase")]
struct Created {
    id: String,
    #[serde(default)]
    warnings: Option<Vec<String>>,
}

#[derive(Debug, Deserialize)]
#[serde(rename_all = "PascalCase")]
struct WaitResponse {
    status_code: i64,
    #[serde(default)]
    error: Option<WaitError>,
}

#[derive(Debug, Deserialize)]
#[serde(rename_all = "PascalCase")]
struct WaitError {
    #[serde(default)]
    message: String,
}

pub async fn run(client: &Client, args: &RunArgs) -> Result<i32, CliError> {
    let body = create_body(args, |k| std::env::var(k).ok())?;
    let path = match &args.name {
        Some(name) => format!("/containers/create?name={}", enc(name)),
        None => "/containers/create".to_string(),
    };
    let resp = client
        .post_json(&path, Some(&body))
        .await
        .map_err(CliError::for_run)?;
    let created: Created = client
        .decode(&path, resp)
        .await
        .map_err(CliError::for_run)?;
    for w in created.warnings.unwrap_or_default() {
        eprintln!("WARNING: {w}");
    }
    let id = created.id;
    let start = format!("/containers/{id}/start");

    if args.detach {
        client
            .post_json(&start, None)
            .await
            .map_err(CliError::for_run_start)?;
        print_out(&format!("{id}\n"))?;
        return Ok(0);
    }

    let attach = client
        .hijack(&format!(
            "/containers/{id}/attach?stream=1&stdout=1&stderr=1"
        ))
        .await
        .map_err(CliError::for_run)?;
    // With --rm the daemon removes the container; "removed" resolves only after that.
    let condition = if args.rm { "removed" } else { "next-exit" };
    let wait_path = format!("/containers/{id}/wait?condition={condition}");
    let wait = client
        .post_json(&wait_path, None)
        .await
        .map_err(CliError::for_run)?;
    client
        .post_json(&start, None)
        .await
        .map_err(CliError::for_run_start)?;

    pump(attach, false).await?;
    let status: WaitResponse = client
        .decode(&wait_path, wait)
        .await
        .map_err(CliError::for_run)?;
    if let Some(err) = status.error.filter(|e| !e.message.is_empty()) {
        return Err(CliError::Run {
            code: EXIT_DAEMON,
            inner: Box::new(CliError::Daemon {
                status: 200,
                message: err.message,
            }),
        });
    }
    Ok(i32::try_from(status.status_code).unwrap_or(EXIT_DAEMON))
}

/// The `containers/create` body. `lookup` reads the caller's environment for `-e K`.
fn create_body(args: &RunArgs, lookup: impl Fn(&str) -> Option<String>) -> Result<Value, CliError> {
    let mut env = Vec::new();
    for e in &args.env {
        let key = e.split_once('=').map_or(e.as_str(), |(k, _)| k);
        if key.is_empty() {
            return Err(CliError::InvalidArgument {
                flag: "--env",
                value: e.clone(),
                reason: "variable name is empty",
            }
            .for_run());
        }
        if e.contains('=') {
            env.push(e.clone());
        } else if let Some(v) = lookup(key) {
            // docker passes `-e K` through from the caller's environment, or drops it.
            env.push(format!("{key}={v}"));
        }
    }
    let attach = !args.detach;
    let cmd = if args.command().is_empty() {
        Value::Null
    } else {
        json!(args.command())
    };
    Ok(json!({
        "Image": args.image(),
        "Cmd": cmd,
        "Env": env,
        "AttachStdin": false,
        "AttachStdout": attach,
        "AttachStderr": attach,
        "OpenStdin": false,
        "Tty": false,
        "HostConfig": { "AutoRemove": args.rm },
    }))
}

#[cfg(test)]
mod tests {
    use clap::Parser;

    use super::*;
    use crate::args::{Cli, Command};

    fn run_args(args: &[&str]) -> RunArgs {
        let cli = Cli::try_parse_from(["berth", "run"].iter().chain(args)).unwrap();
        match cli.command {
            Command::Run(r) => r,
            other => panic!("parsed {other:?}"),
        }
    }

    #[test]
    fn body_carries_image_cmd_env_and_autoremove() {
        let args = run_args(&[
            "--rm", "-e", "A=1", "-e", "HOME_X", "-e", "UNSET", "busybox", "echo", "hi",
        ]);
        let lookup = |k: &str| (k == "HOME_X").then(|| "/h".to_string());
        let body = create_body(&args, lookup).unwrap();
        assert_eq!(body["Image"], "busybox");
        assert_eq!(body["Cmd"], json!(["echo", "hi"]));
        assert_eq!(body["Env"], json!(["A=1", "HOME_X=/h"]));
        assert_eq!(body["HostConfig"]["AutoRemove"], true);
        assert_eq!(body["AttachStdout"], true);
    }

    #[test]
    fn detached_without_command_uses_image_default() {
        let body = create_body(&run_args(&["-d", "busybox"]), |_| None).unwrap();
        assert!(body["Cmd"].is_null());
        assert_eq!(body["AttachStdout"], false);
        assert_eq!(body["HostConfig"]["AutoRemove"], false);
    }

    #[test]
    fn empty_env_name_is_rejected_with_125() {
        let err = create_body(&run_args(&["-e", "=x", "busybox"]), |_| None).unwrap_err();
        assert_eq!(err.exit_code(), 125);
        assert!(err.to_string().contains("--env"), "{err}");
    }
}
