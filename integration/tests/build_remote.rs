//! Remote build contexts: a git repository served by `git daemon` on 127.0.0.1, built
//! by the docker CLI (which clones it itself) and through `remote=git://...` (what API
//! clients such as docker-py send; the engine fetches it as dockerd does).

use std::net::{TcpListener, TcpStream};
use std::path::Path;
use std::process::{Child, Command, Stdio};
use std::time::Duration;

use anyhow::{ensure, Context, Result};
use berth_integration::stack::Daemon;
use berth_integration::{http, poll::wait_until, Stack};
use nix::sys::signal::Signal;

use crate::build::{context, nothing_left};
use crate::common::{expect_contains, Spec, DOCKER};

pub fn tests() -> Vec<Spec> {
    vec![
        Spec {
            name: "build_remote::git_context",
            needs: DOCKER,
            run: git_context,
        },
        Spec {
            name: "build_remote::https_add_context_and_import",
            needs: DOCKER,
            run: https_add_context_and_import,
        },
    ]
}

/// A `git daemon` serving `base` on 127.0.0.1, killed (by PID) on drop.
struct GitDaemon {
    child: Child,
    port: u16,
}

/// A free loopback port (another process may take it before ours binds; tests retry
/// nothing, so this is only for daemons that cannot bind port 0 themselves).
fn free_port() -> Result<u16> {
    Ok(TcpListener::bind("127.0.0.1:0")?.local_addr()?.port())
}

fn wait_listening(what: &str, port: u16) -> Result<()> {
    wait_until(what, Duration::from_secs(10), || {
        Ok(TcpStream::connect(("127.0.0.1", port)).ok().map(|_| ()))
    })
}

/// `openssl s_server -WWW` serving the files of `dir` over HTTPS on 127.0.0.1 with
/// `cert`/`key`; killed (by PID) on drop.
struct HttpsServer {
    child: Child,
    port: u16,
}

impl HttpsServer {
    fn start(dir: &Path, cert: &Path, key: &Path) -> Result<Self> {
        let port = free_port()?;
        let child = Command::new("openssl")
            .args(["s_server", "-quiet", "-WWW", "-accept"])
            .arg(format!("127.0.0.1:{port}"))
            .arg("-cert")
            .arg(cert)
            .arg("-key")
            .arg(key)
            .current_dir(dir)
            .stdin(Stdio::null())
            .stdout(Stdio::null())
            .stderr(Stdio::null())
            .spawn()
            .context("start openssl s_server")?;
        let srv = HttpsServer { child, port };
        wait_listening("openssl s_server to listen", port)?;
        Ok(srv)
    }

    fn url(&self, file: &str) -> String {
        format!("https://127.0.0.1:{}/{file}", self.port)
    }
}

impl Drop for HttpsServer {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

impl GitDaemon {
    fn start(base: &Path) -> Result<Self> {
        let port = free_port()?;
        let child = Command::new("git")
            .arg("daemon")
            .arg("--reuseaddr")
            .arg("--export-all")
            .arg("--listen=127.0.0.1")
            .arg(format!("--port={port}"))
            .arg(format!("--base-path={}", base.display()))
            .arg(base)
            .stdin(Stdio::null())
            .stdout(Stdio::null())
            .stderr(Stdio::null())
            .spawn()
            .context("start git daemon (is git installed?)")?;
        let d = GitDaemon { child, port };
        wait_listening("git daemon to listen", port)?;
        Ok(d)
    }
}

impl Drop for GitDaemon {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

fn git(dir: &Path, args: &[&str]) -> Result<()> {
    let out = Command::new("git")
        .args([
            "-c",
            "user.name=t",
            "-c",
            "user.email=t@t",
            "-c",
            "init.defaultBranch=main",
        ])
        .args(args)
        .current_dir(dir)
        .output()
        .context("run git")?;
    ensure!(
        out.status.success(),
        "git {args:?}: {}",
        String::from_utf8_lossy(&out.stderr)
    );
    Ok(())
}

/// Percent-encodes a query value.
fn encode(v: &str) -> String {
    v.bytes()
        .map(|b| match b {
            b'A'..=b'Z' | b'a'..=b'z' | b'0'..=b'9' | b'-' | b'_' | b'.' | b'~' => {
                (b as char).to_string()
            }
            _ => format!("%{b:02X}"),
        })
        .collect()
}

fn git_context() -> Result<()> {
    let s = Stack::with_busybox()?;
    // A repository whose `feature` branch has the Dockerfile in sub/.
    let src = s.dir.join("git-src");
    std::fs::create_dir_all(src.join("sub"))?;
    std::fs::write(
        src.join("sub/Dockerfile"),
        "FROM busybox\nCOPY hello.txt /\nCMD [\"cat\", \"/hello.txt\"]\n",
    )?;
    std::fs::write(src.join("sub/hello.txt"), "from-git\n")?;
    git(&src, &["init", "-q"])?;
    git(&src, &["add", "."])?;
    git(&src, &["commit", "-qm", "init"])?;
    git(&src, &["branch", "feature"])?;
    let srv = s.dir.join("git-srv");
    std::fs::create_dir_all(&srv)?;
    git(
        &srv,
        &["clone", "-q", "--bare", &src.to_string_lossy(), "repo.git"],
    )?;
    let daemon = GitDaemon::start(&srv)?;
    let base = format!("git://127.0.0.1:{}/repo.git", daemon.port);

    // The CLI clones it and uploads the subdirectory.
    s.docker(&["build", "-t", "g:cli", &format!("{base}#feature:sub")])?
        .ok()?;
    let run = s.docker(&["run", "--rm", "g:cli"])?.ok()?;
    ensure!(run.stdout == "from-git\n", "g:cli runs: {:?}", run.stdout);

    // An API client sends the URL; the engine fetches it.
    let build = |remote: &str| {
        http::request(
            &s.engine_sock(),
            "POST",
            &format!("/v1.41/build?t=g:api&remote={}", encode(remote)),
            b"",
        )
    };
    let ok = build(&format!("{base}#feature:sub"))?;
    ensure!(ok.status == 200, "remote git build: {ok:?}");
    expect_contains("remote git build", &ok.body, "Successfully tagged g:api")?;
    let run = s.docker(&["run", "--rm", "g:api"])?.ok()?;
    ensure!(run.stdout == "from-git\n", "g:api runs: {:?}", run.stdout);

    // dockerd's answers (500) for a missing ref, the default ref `master`, a missing
    // subdirectory and a file as the subdirectory.
    for (fragment, want) in [
        (
            "#nosuch",
            "error fetching: fatal: couldn't find remote ref nosuch\\n: exit status 128",
        ),
        (
            "",
            "error fetching: fatal: couldn't find remote ref master\\n: exit status 128",
        ),
        ("#main:nodir", "/nodir: no such file or directory"),
        (
            "#main:sub/hello.txt",
            "error setting git context, not a directory: ",
        ),
        ("#main", "Cannot locate specified Dockerfile: Dockerfile"),
    ] {
        let bad = build(&format!("{base}{fragment}"))?;
        ensure!(bad.status == 500, "{fragment}: {bad:?}");
        expect_contains(fragment, &bad.body, want)?;
    }
    drop(daemon);
    s.docker(&["rmi", "g:cli", "g:api"])?.ok()?;
    nothing_left(&s)
}

/// `ADD https://...`, an https `remote` context and `docker import https://...`: with a
/// private CA the engine does not trust they fail with dockerd 20.10's x509 words; with
/// the CA as the engine's `SSL_CERT_FILE` (read like Go's) they work.
fn https_add_context_and_import() -> Result<()> {
    let mut s = Stack::with_busybox()?;
    let certs = s.dir.join("certs");
    crate::registry_more::make_certs(&certs, "127.0.0.1")?;
    let www = s.dir.join("www");
    std::fs::create_dir_all(&www)?;
    std::fs::write(www.join("f.txt"), "via-https\n")?;
    std::fs::write(
        www.join("Dockerfile"),
        "FROM busybox\nRUN echo remote-df > /r\n",
    )?;
    std::fs::copy(s.busybox_tar()?, www.join("rootfs.tar"))?;
    let srv = HttpsServer::start(&www, &certs.join("server.crt"), &certs.join("server.key"))?;
    let ctx = context(
        &s,
        "https-add",
        &[(
            "Dockerfile",
            &format!("FROM busybox\nADD {} /dl/\n", srv.url("f.txt")),
        )],
    )?;
    let ctx = ctx.to_string_lossy().into_owned();
    let api_build = |s: &Stack, url: &str| {
        http::request(
            &s.engine_sock(),
            "POST",
            &format!("/v1.41/build?t=https-ctx&remote={}", encode(url)),
            b"",
        )
    };

    let x509 = "x509: certificate signed by unknown authority";
    let bad = s.docker(&["build", &ctx])?.expect_code(1)?;
    expect_contains(
        "untrusted ADD",
        &bad.stderr,
        &format!("ADD failed: Get \"{}\": {x509}", srv.url("f.txt")),
    )?;
    let bad = api_build(&s, &srv.url("Dockerfile"))?;
    ensure!(bad.status == 500, "untrusted remote context: {bad:?}");
    expect_contains(
        "untrusted remote context",
        &bad.body,
        &format!(
            "error downloading remote context {0}: Get \\\"{0}\\\": {x509}",
            srv.url("Dockerfile")
        ),
    )?;
    let bad = s
        .docker(&["import", &srv.url("rootfs.tar"), "imp:https"])?
        .expect_code(1)?;
    expect_contains(
        "untrusted import",
        &bad.stderr,
        &format!("Get \"{}\": {x509}", srv.url("rootfs.tar")),
    )?;

    // Trusting the CA (as the only root) makes all three work.
    s.stop_daemon(Daemon::Engine, Signal::SIGTERM)?;
    s.engine_env = vec![(
        "SSL_CERT_FILE".into(),
        certs.join("ca.crt").display().to_string(),
    )];
    s.start_daemon(Daemon::Engine)?;
    s.docker(&["build", "-t", "https-add", &ctx])?.ok()?;
    let run = s
        .docker(&[
            "run",
            "--rm",
            "https-add",
            "sh",
            "-c",
            "cat /dl/f.txt; stat -c %a /dl/f.txt",
        ])?
        .ok()?;
    ensure!(
        run.stdout == "via-https\n600\n",
        "ADD https: {:?}",
        run.stdout
    );
    let ok = api_build(&s, &srv.url("Dockerfile"))?;
    ensure!(ok.status == 200, "https remote context: {ok:?}");
    expect_contains(
        "https remote context",
        &ok.body,
        "Successfully tagged https-ctx",
    )?;
    s.docker(&["import", &srv.url("rootfs.tar"), "imp:https"])?
        .ok()?;
    let run = s
        .docker(&["run", "--rm", "imp:https", "/bin/sh", "-c", "echo imported"])?
        .ok()?;
    ensure!(run.stdout == "imported\n", "import https: {:?}", run.stdout);
    drop(srv);
    s.docker(&["rmi", "https-add", "https-ctx", "imp:https"])?
        .ok()?;
    nothing_left(&s)
}
