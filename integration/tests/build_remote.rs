//! Remote build contexts: a git repository served by `git daemon` on 127.0.0.1, built
//! by the docker CLI (which clones it itself) and through `remote=git://...` (what API
//! clients such as docker-py send; the engine fetches it as dockerd does).

use std::net::{TcpListener, TcpStream};
use std::path::Path;
use std::process::{Child, Command, Stdio};
use std::time::Duration;

use anyhow::{ensure, Context, Result};
use berth_integration::{http, poll::wait_until, Stack};

use crate::build::nothing_left;
use crate::common::{expect_contains, Spec, DOCKER};

pub fn tests() -> Vec<Spec> {
    vec![Spec {
        name: "build_remote::git_context",
        needs: DOCKER,
        run: git_context,
    }]
}

/// A `git daemon` serving `base` on 127.0.0.1, killed (by PID) on drop.
struct GitDaemon {
    child: Child,
    port: u16,
}

impl GitDaemon {
    fn start(base: &Path) -> Result<Self> {
        let port = TcpListener::bind("127.0.0.1:0")?.local_addr()?.port();
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
        wait_until("git daemon to listen", Duration::from_secs(10), || {
            Ok(TcpStream::connect(("127.0.0.1", port)).ok().map(|_| ()))
        })?;
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
