//! The API server on a real unix socket with the fake highd: raw HTTP for framing and
//! hijacking, and the real docker CLI where it is installed.

use std::path::{Path, PathBuf};
use std::sync::Arc;
use std::time::Duration;

use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::net::UnixStream;

use crate::backend::fake::FakeBackend;
use crate::daemon::tests::{env, eventually, req, Env};
use crate::daemon::Daemon;
use crate::stdcopy::demux;

struct Server {
    env: Env,
    sock: PathBuf,
}

async fn server() -> Server {
    let env = env().await;
    let sock = env.daemon.config.data_root.join("engine.sock");
    let listener = berth_proto::transport::bind_unix(&sock).unwrap();
    let d = Arc::clone(&env.daemon);
    tokio::spawn(async move { super::serve(listener, d).await });
    Server { env, sock }
}

/// Sends a raw HTTP/1.1 request and returns everything the server sent until it closed.
async fn raw(sock: &Path, request: &str) -> String {
    let mut s = UnixStream::connect(sock).await.unwrap();
    s.write_all(request.as_bytes()).await.unwrap();
    let mut out = Vec::new();
    tokio::time::timeout(Duration::from_secs(10), s.read_to_end(&mut out))
        .await
        .expect("server did not close the connection")
        .unwrap();
    String::from_utf8_lossy(&out).into_owned()
}

fn get(path: &str) -> String {
    format!("GET {path} HTTP/1.1\r\nHost: docker\r\nConnection: close\r\n\r\n")
}

/// Appends one json-file entry, as the shim would.
fn log_line(path: &str, stream: &str, text: &str) {
    use std::io::Write;
    let line =
        serde_json::json!({"log": text, "stream": stream, "time": chrono::Utc::now().to_rfc3339()});
    let mut f = std::fs::OpenOptions::new()
        .create(true)
        .append(true)
        .open(path)
        .unwrap();
    writeln!(f, "{line}").unwrap();
}

#[tokio::test]
async fn ping_version_prefixes_and_errors() {
    let s = server().await;
    let r = raw(&s.sock, &get("/_ping")).await;
    assert!(r.starts_with("HTTP/1.1 200 OK"), "{r}");
    assert!(r.to_ascii_lowercase().contains("api-version: 1.50"), "{r}");
    assert!(r.ends_with("OK"), "{r}");
    let r = raw(&s.sock, &get("/v1.51/_ping")).await;
    assert!(r.starts_with("HTTP/1.1 400"), "{r}");
    assert!(
        r.contains(
            r#"{"message":"client version 1.51 is too new. Maximum supported API version is 1.50"}"#
        ),
        "{r}"
    );
    let r = raw(&s.sock, &get("/v1.40/containers/nope/json")).await;
    assert!(r.starts_with("HTTP/1.1 404"), "{r}");
    assert!(
        r.contains(r#"{"message":"No such container: nope"}"#),
        "{r}"
    );
    let r = raw(&s.sock, &get("/v1.50/nothing")).await;
    assert!(r.contains(r#"{"message":"page not found"}"#), "{r}");
    let body = "{not json";
    let r = raw(
        &s.sock,
        &format!("POST /containers/create HTTP/1.1\r\nHost: d\r\nConnection: close\r\nContent-Type: application/json\r\nContent-Length: {}\r\n\r\n{body}", body.len()),
    )
    .await;
    assert!(r.starts_with("HTTP/1.1 400"), "{r}");
    assert!(r.contains("invalid JSON"), "{r}");
    let r = raw(
        &s.sock,
        "POST /containers/create HTTP/1.1\r\nHost: d\r\nConnection: close\r\nContent-Type: text/plain\r\nContent-Length: 2\r\n\r\n{}",
    )
    .await;
    assert!(
        r.contains("unsupported Content-Type header (text/plain): must be 'application/json'"),
        "{r}"
    );
}

#[tokio::test]
async fn attach_hijacks_and_multiplexes_until_exit() {
    let s = server().await;
    let d = &s.env.daemon;
    let id = d.create_container(None, req(&["sh"], false)).await.unwrap();
    let log = d.container(&id).unwrap().log_path;
    let mut conn = UnixStream::connect(&s.sock).await.unwrap();
    let request = format!(
        "POST /v1.50/containers/{id}/attach?stream=1&stdout=1&stderr=1 HTTP/1.1\r\nHost: d\r\nConnection: Upgrade\r\nUpgrade: tcp\r\n\r\n"
    );
    conn.write_all(request.as_bytes()).await.unwrap();
    let mut head = Vec::new();
    while !head.ends_with(b"\r\n\r\n") {
        let mut b = [0u8; 1];
        conn.read_exact(&mut b).await.unwrap();
        head.push(b[0]);
    }
    let head = String::from_utf8(head).unwrap();
    assert!(head.starts_with("HTTP/1.1 101"), "{head}");
    assert!(
        head.contains("application/vnd.docker.multiplexed-stream"),
        "{head}"
    );
    d.start_container(&id).await.unwrap();
    log_line(&log, "stdout", "out\n");
    log_line(&log, "stderr", "err\n");
    s.env.fake.exit(&id, "", 0);
    let mut out = Vec::new();
    tokio::time::timeout(Duration::from_secs(10), conn.read_to_end(&mut out))
        .await
        .expect("attach stream did not end after the exit")
        .unwrap();
    assert_eq!(
        demux(&out).unwrap(),
        vec![(1, b"out\n".to_vec()), (2, b"err\n".to_vec())]
    );
}

#[tokio::test]
async fn logs_tail_and_wait_body() {
    let s = server().await;
    let d = &s.env.daemon;
    let id = d
        .create_container(Some("lg"), req(&["sh"], false))
        .await
        .unwrap();
    d.start_container(&id).await.unwrap();
    let log = d.container(&id).unwrap().log_path;
    for i in 0..4 {
        log_line(&log, "stdout", &format!("{i}\n"));
    }
    s.env.fake.exit(&id, "", 5);
    let dd = Arc::clone(d);
    eventually("exit recorded", move || {
        !dd.container("lg").unwrap().state.status.is_running()
    })
    .await;
    let r = raw(&s.sock, &get("/containers/lg/logs?stdout=1&tail=2")).await;
    let body = &r.as_bytes()[r.find("\r\n\r\n").unwrap() + 4..];
    // Chunked encoding wraps the frames; the payloads must be there in order.
    let text = String::from_utf8_lossy(body);
    assert!(
        text.contains("2\n") && text.contains("3\n") && !text.contains("1\n"),
        "{text:?}"
    );
    let r = raw(
        &s.sock,
        "POST /containers/lg/wait HTTP/1.1\r\nHost: d\r\nConnection: close\r\nContent-Length: 0\r\n\r\n",
    )
    .await;
    assert!(
        r.contains(r#"{"Error":null,"StatusCode":5}"#)
            || r.contains(r#"{"StatusCode":5,"Error":null}"#),
        "{r}"
    );
}

/// Plays the container's process for the fake highd: for every started container,
/// writes its args to the log (like `echo`) and exits 0.
fn fake_echo(
    daemon: Arc<Daemon<FakeBackend>>,
    fake: Arc<FakeBackend>,
) -> tokio::task::JoinHandle<()> {
    tokio::spawn(async move {
        loop {
            for r in daemon.store.list() {
                if r.state.status.is_running() {
                    log_line(&r.log_path, "stdout", &format!("{}\n", r.args.join(" ")));
                    fake.exit(&r.id, "", 0);
                    let d = Arc::clone(&daemon);
                    let id = r.id.clone();
                    eventually("exit", move || {
                        d.store
                            .get(&id)
                            .is_none_or(|r| !r.state.status.is_running())
                    })
                    .await;
                }
            }
            tokio::time::sleep(Duration::from_millis(5)).await;
        }
    })
}

async fn docker(sock: &Path, config: &Path, args: &[&str]) -> std::process::Output {
    tokio::process::Command::new("/usr/local/bin/docker")
        .env("DOCKER_HOST", format!("unix://{}", sock.display()))
        .env("DOCKER_CONFIG", config)
        .args(args)
        .output()
        .await
        .unwrap()
}

#[tokio::test]
async fn docker_cli_runs_against_the_engine() {
    if !Path::new("/usr/local/bin/docker").exists() {
        eprintln!(
            "SKIPPED docker_cli_runs_against_the_engine: /usr/local/bin/docker not installed"
        );
        return;
    }
    let s = server().await;
    let cfg = s.env.daemon.config.data_root.join("docker-config");
    let echo = fake_echo(Arc::clone(&s.env.daemon), Arc::clone(&s.env.fake));
    let out = docker(
        &s.sock,
        &cfg,
        &["version", "--format", "{{.Server.APIVersion}}"],
    )
    .await;
    assert_eq!(
        String::from_utf8_lossy(&out.stdout).trim(),
        "1.50",
        "{out:?}"
    );

    let out = docker(&s.sock, &cfg, &["run", "--rm", "busybox", "echo", "hello"]).await;
    assert_eq!(String::from_utf8_lossy(&out.stdout), "hello\n", "{out:?}");
    assert!(out.status.success(), "{out:?}");
    assert!(
        s.env.daemon.store.list().is_empty(),
        "--rm removed the container"
    );

    let out = docker(
        &s.sock,
        &cfg,
        &["run", "--name", "keep", "busybox", "echo", "kept"],
    )
    .await;
    assert_eq!(String::from_utf8_lossy(&out.stdout), "kept\n", "{out:?}");
    let out = docker(
        &s.sock,
        &cfg,
        &["ps", "-a", "--format", "{{.Names}} {{.Status}}"],
    )
    .await;
    let ps = String::from_utf8_lossy(&out.stdout);
    assert!(ps.starts_with("keep Exited (0)"), "{ps:?} {out:?}");
    let out = docker(&s.sock, &cfg, &["logs", "keep"]).await;
    assert_eq!(String::from_utf8_lossy(&out.stdout), "kept\n", "{out:?}");
    let out = docker(
        &s.sock,
        &cfg,
        &["inspect", "--format", "{{.State.Status}} {{.Name}}", "keep"],
    )
    .await;
    assert_eq!(
        String::from_utf8_lossy(&out.stdout).trim(),
        "exited /keep",
        "{out:?}"
    );
    let out = docker(&s.sock, &cfg, &["rm", "keep"]).await;
    assert!(out.status.success(), "{out:?}");

    // exec needs a running container: stop the fake "echo" from ending it.
    echo.abort();
    let id = s
        .env
        .daemon
        .create_container(Some("ex"), req(&["sleep", "1000"], false))
        .await
        .unwrap();
    s.env.daemon.start_container(&id).await.unwrap();
    let out = docker(&s.sock, &cfg, &["exec", "ex", "echo", "hi", "there"]).await;
    assert_eq!(
        String::from_utf8_lossy(&out.stdout),
        "hi there\n",
        "{out:?}"
    );
    assert!(out.status.success(), "{out:?}");
    let mut child = tokio::process::Command::new("/usr/local/bin/docker")
        .env("DOCKER_HOST", format!("unix://{}", s.sock.display()))
        .env("DOCKER_CONFIG", &cfg)
        .args(["exec", "-i", "ex", "cat"])
        .stdin(std::process::Stdio::piped())
        .stdout(std::process::Stdio::piped())
        .spawn()
        .unwrap();
    let mut input = child.stdin.take().unwrap();
    input.write_all(b"piped in\n").await.unwrap();
    drop(input);
    let out = child.wait_with_output().await.unwrap();
    assert_eq!(
        String::from_utf8_lossy(&out.stdout),
        "piped in\n",
        "{out:?}"
    );
    let out = docker(&s.sock, &cfg, &["exec", "ex", "sh", "-c", "exit 4"]).await;
    assert_eq!(out.status.code(), Some(4), "{out:?}");
    let out = docker(&s.sock, &cfg, &["exec", "nosuch", "true"]).await;
    assert!(
        String::from_utf8_lossy(&out.stderr).contains("No such container: nosuch"),
        "{out:?}"
    );
    s.env.fake.exit(&id, "", 0);
    let out = docker(&s.sock, &cfg, &["wait", "ex"]).await;
    assert_eq!(String::from_utf8_lossy(&out.stdout).trim(), "0", "{out:?}");
    let out = docker(&s.sock, &cfg, &["rm", "ex"]).await;
    assert!(out.status.success(), "{out:?}");
    let echo = fake_echo(Arc::clone(&s.env.daemon), Arc::clone(&s.env.fake));

    let out = docker(&s.sock, &cfg, &["run", "--rm", "busybox:nope", "true"]).await;
    let err = String::from_utf8_lossy(&out.stderr);
    assert!(
        err.contains("Unable to find image 'busybox:nope' locally"),
        "{err}"
    );
    assert_eq!(out.status.code(), Some(125), "{out:?}");

    s.env
        .fake
        .fail_next_task_create("exec: \"nope\": executable file not found in $PATH");
    let out = docker(&s.sock, &cfg, &["run", "--rm", "busybox", "nope"]).await;
    let err = String::from_utf8_lossy(&out.stderr);
    assert!(err.contains("failed to create task for container: failed to create shim task: OCI runtime create failed"), "{err}");
    assert_eq!(out.status.code(), Some(127), "{out:?}");
    let out = docker(
        &s.sock,
        &cfg,
        &["images", "--format", "{{.Repository}}:{{.Tag}}"],
    )
    .await;
    assert_eq!(
        String::from_utf8_lossy(&out.stdout).trim(),
        "busybox:latest",
        "{out:?}"
    );
    echo.abort();
}
