//! `berth ps`, `rm`, `stop`, `logs`.

use serde::Deserialize;
use serde_json::Value;

use super::{enc, print_out, pump};
use crate::args::{LogsArgs, PsArgs, RmArgs, StopArgs};
use crate::client::{Client, Hijacked};
use crate::error::CliError;
use crate::format;

/// One entry of `GET /containers/json`.
#[derive(Debug, Deserialize)]
#[serde(rename_all = "PascalCase")]
pub struct Summary {
    pub id: String,
    #[serde(default)]
    pub names: Vec<String>,
    #[serde(default)]
    pub image: String,
    #[serde(default)]
    pub command: String,
    #[serde(default)]
    pub created: i64,
    #[serde(default)]
    pub status: String,
    #[serde(default)]
    pub ports: Vec<Port>,
}

#[derive(Debug, Deserialize)]
#[serde(rename_all = "PascalCase")]
pub struct Port {
    #[serde(default, rename = "IP")]
    pub ip: Option<String>,
    pub private_port: u16,
    #[serde(default)]
    pub public_port: Option<u16>,
    #[serde(default, rename = "Type")]
    pub kind: String,
}

pub async fn ps(client: &Client, args: &PsArgs) -> Result<i32, CliError> {
    let path = if args.all {
        "/containers/json?all=1"
    } else {
        "/containers/json"
    };
    let list: Vec<Summary> = client.get_json(path).await?;
    let now = chrono::Utc::now().timestamp();
    print_out(&render_ps(&list, args, now))?;
    Ok(0)
}

/// The `ps` output for `list` at time `now`.
pub fn render_ps(list: &[Summary], args: &PsArgs, now: i64) -> String {
    let id = |c: &Summary| {
        if args.no_trunc {
            c.id.clone()
        } else {
            format::short_id(&c.id)
        }
    };
    if args.quiet {
        return list.iter().map(|c| format!("{}\n", id(c))).collect();
    }
    let rows: Vec<Vec<String>> = list
        .iter()
        .map(|c| {
            vec![
                id(c),
                c.image.clone(),
                format::quoted_command(&c.command, args.no_trunc),
                format::ago(c.created, now),
                c.status.clone(),
                ports(&c.ports),
                names(&c.names),
            ]
        })
        .collect();
    format::table(
        &[
            "CONTAINER ID",
            "IMAGE",
            "COMMAND",
            "CREATED",
            "STATUS",
            "PORTS",
            "NAMES",
        ],
        &rows,
    )
}

fn names(names: &[String]) -> String {
    names
        .iter()
        .map(|n| n.trim_start_matches('/'))
        // Legacy link names (/a/b) are not shown by docker either.
        .filter(|n| !n.contains('/'))
        .collect::<Vec<_>>()
        .join(",")
}

fn ports(ports: &[Port]) -> String {
    ports
        .iter()
        .map(|p| match (p.public_port, &p.ip) {
            (Some(public), Some(ip)) => format!("{ip}:{public}->{}/{}", p.private_port, p.kind),
            (Some(public), None) => format!("{public}->{}/{}", p.private_port, p.kind),
            (None, _) => format!("{}/{}", p.private_port, p.kind),
        })
        .collect::<Vec<_>>()
        .join(", ")
}

/// Runs `op` for every container, printing its name on success and the error otherwise;
/// like docker, one failure does not stop the others, and the exit code is 1 if any failed.
async fn each<F, Fut>(containers: &[String], op: F) -> Result<i32, CliError>
where
    F: Fn(String) -> Fut,
    Fut: std::future::Future<Output = Result<(), CliError>>,
{
    let mut failed = false;
    for name in containers {
        match op(name.clone()).await {
            Ok(()) => print_out(&format!("{name}\n"))?,
            Err(e) => {
                eprintln!("{e}");
                failed = true;
            }
        }
    }
    Ok(if failed { 1 } else { 0 })
}

pub async fn rm(client: &Client, args: &RmArgs) -> Result<i32, CliError> {
    let force = if args.force { "?force=1" } else { "" };
    each(&args.containers, |name| async move {
        let path = format!("/containers/{}{force}", enc(&name));
        client
            .call(http::Method::DELETE, &path, None, None)
            .await
            .map(drop)
    })
    .await
}

pub async fn stop(client: &Client, args: &StopArgs) -> Result<i32, CliError> {
    let query = args.timeout.map(|t| format!("?t={t}")).unwrap_or_default();
    each(&args.containers, |name| {
        let query = query.clone();
        async move {
            let path = format!("/containers/{}/stop{query}", enc(&name));
            client.post_json(&path, None).await.map(drop)
        }
    })
    .await
}

pub async fn logs(client: &Client, args: &LogsArgs) -> Result<i32, CliError> {
    let name = enc(&args.container);
    // The framing depends on whether the container has a TTY, as docker's CLI decides it.
    let info: Value = client.get_json(&format!("/containers/{name}/json")).await?;
    let tty = info["Config"]["Tty"].as_bool().unwrap_or(false);
    let mut path = format!(
        "/containers/{name}/logs?stdout=1&stderr=1&tail={}",
        enc(&args.tail)
    );
    if args.follow {
        path.push_str("&follow=1");
    }
    if args.timestamps {
        path.push_str("&timestamps=1");
    }
    let resp = client.call(http::Method::GET, &path, None, None).await?;
    pump(Hijacked::Body(resp.into_body()), tty).await?;
    Ok(0)
}

#[cfg(test)]
mod tests {
    use super::*;

    fn summary(json: &str) -> Summary {
        serde_json::from_str(json).unwrap()
    }

    #[test]
    fn ps_table_and_quiet() {
        let c = summary(
            r#"{"Id":"0123456789abcdef0123","Names":["/web"],"Image":"busybox","Command":"sleep 1000",
                "Created":100,"Status":"Up 5 seconds","Ports":[{"IP":"0.0.0.0","PrivatePort":80,"PublicPort":8080,"Type":"tcp"}]}"#,
        );
        let args = PsArgs {
            all: false,
            quiet: false,
            no_trunc: false,
        };
        let out = render_ps(std::slice::from_ref(&c), &args, 105);
        let lines: Vec<&str> = out.lines().collect();
        assert!(
            lines[0].starts_with("CONTAINER ID   IMAGE     COMMAND        CREATED"),
            "{out}"
        );
        assert!(
            lines[1].starts_with(
                "0123456789ab   busybox   \"sleep 1000\"   5 seconds ago   Up 5 seconds"
            ),
            "{out}"
        );
        assert!(lines[1].ends_with("0.0.0.0:8080->80/tcp   web"), "{out}");
        let quiet = PsArgs {
            all: true,
            quiet: true,
            no_trunc: false,
        };
        assert_eq!(render_ps(&[c], &quiet, 0), "0123456789ab\n");
    }

    #[test]
    fn names_hide_slashes_and_links() {
        assert_eq!(names(&["/a".into(), "/b/link".into()]), "a");
    }
}
