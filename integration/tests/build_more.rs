//! More of `docker build` (legacy builder) through the real docker CLI: base images pulled
//! from a loopback registry, ONBUILD triggers, SHELL, build args, `--target`, `--label`,
//! `-f` outside the context, contexts from stdin, and VOLUME copy-up at `docker run`.

use std::io::{BufRead, BufReader, Write};
use std::net::{TcpListener, TcpStream};
use std::path::{Path, PathBuf};
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::Arc;
use std::thread::JoinHandle;

use anyhow::{bail, ensure, Context, Result};
use berth_integration::stack::Daemon;
use berth_integration::Stack;
use nix::sys::signal::Signal;

use crate::build::{context, nothing_left};
use crate::common::{expect_contains, inspect, Spec, DOCKER};
use crate::registry::{Registry, REGISTRY_NEEDS};

pub fn tests() -> Vec<Spec> {
    vec![
        Spec {
            name: "build_more::from_pulls_missing_base_and_pull_flag",
            needs: REGISTRY_NEEDS,
            run: from_pulls_missing_base,
        },
        Spec {
            name: "build_more::onbuild_triggers",
            needs: DOCKER,
            run: onbuild_triggers,
        },
        Spec {
            name: "build_more::shell_args_target_label_outside_dockerfile",
            needs: DOCKER,
            run: shell_args_target_label,
        },
        Spec {
            name: "build_more::context_from_stdin",
            needs: DOCKER,
            run: context_from_stdin,
        },
        Spec {
            name: "build_more::remote_context_add_url_and_import_url",
            needs: DOCKER,
            run: remote_sources,
        },
        Spec {
            name: "build_more::layer_cache_survives_engine_restart",
            needs: DOCKER,
            run: cache_survives_restart,
        },
        Spec {
            name: "build_more::image_volume_copy_up_and_rm_v",
            needs: DOCKER,
            run: image_volume_copy_up,
        },
    ]
}

fn path(p: &Path) -> String {
    p.to_string_lossy().into_owned()
}

fn from_pulls_missing_base() -> Result<()> {
    let s = Stack::start()?;
    let reg = Registry::start(&s.dir, None)?;
    reg.push_busybox(&s.busybox_tar()?, "latest", None)?;
    let base = format!("{}/busybox", reg.host);
    let ctx = context(
        &s,
        "ctx-pull",
        &[("Dockerfile", &format!("FROM {base}\nRUN echo built > /b\n"))],
    )?;
    let out = s
        .docker(&["build", "-t", "pulled-child", &path(&ctx)])?
        .ok()?;
    for want in [
        &format!("Step 1/2 : FROM {base}\n"),
        "latest: Pulling from busybox",
        "Pull complete",
        &format!("Status: Downloaded newer image for {base}:latest"),
        "Successfully tagged pulled-child:latest",
    ] {
        expect_contains("build pulling its base", &out.stdout, want)?;
    }
    let run = s
        .docker(&["run", "--rm", "pulled-child", "cat", "/b"])?
        .ok()?;
    ensure!(
        run.stdout == "built\n",
        "run of the child: {:?}",
        run.stdout
    );
    // The base is kept like a `docker pull` would keep it.
    s.docker(&["image", "inspect", &base])?.ok()?;
    // Present now: no pull without --pull, a pull with it.
    let again = s
        .docker(&["build", "-t", "pulled-child", &path(&ctx)])?
        .ok()?;
    ensure!(
        !again.stdout.contains("Pulling from"),
        "a present base was pulled again:\n{}",
        again.stdout
    );
    let forced = s
        .docker(&["build", "--pull", "-t", "pulled-child", &path(&ctx)])?
        .ok()?;
    expect_contains(
        "build --pull",
        &forced.stdout,
        &format!("Status: Image is up to date for {base}:latest"),
    )?;
    // A base the registry does not have fails the build with the registry's answer.
    let missing = context(
        &s,
        "ctx-missing",
        &[("Dockerfile", &format!("FROM {}/nosuch\n", reg.host))],
    )?;
    let bad = s.docker(&["build", &path(&missing)])?;
    ensure!(bad.code != 0, "a build from a missing base succeeded");
    expect_contains("missing base", &bad.stderr, "nosuch")?;
    s.docker(&["rmi", "pulled-child", &base])?.ok()?;
    nothing_left(&s)
}

fn onbuild_triggers() -> Result<()> {
    let s = Stack::with_busybox()?;
    let parent = context(
        &s,
        "ctx-parent",
        &[(
            "Dockerfile",
            "FROM busybox\nONBUILD RUN echo triggered > /t\nONBUILD COPY f.txt /f.txt\n",
        )],
    )?;
    s.docker(&["build", "-t", "onparent", &path(&parent)])?
        .ok()?;
    let on = s
        .docker(&[
            "image",
            "inspect",
            "-f",
            "{{json .Config.OnBuild}}",
            "onparent",
        ])?
        .ok()?;
    ensure!(
        on.stdout.trim() == r#"["RUN echo triggered > /t","COPY f.txt /f.txt"]"#,
        "parent OnBuild: {}",
        on.stdout
    );
    let child = context(
        &s,
        "ctx-child",
        &[
            (
                "Dockerfile",
                "FROM onparent\nCMD [\"cat\", \"/t\", \"/f.txt\"]\n",
            ),
            ("f.txt", "from the child context\n"),
        ],
    )?;
    let out = s.docker(&["build", "-t", "onchild", &path(&child)])?.ok()?;
    // As in dockerd, the base image's ID is not printed when triggers run.
    expect_contains(
        "child build",
        &out.stdout,
        "Step 1/2 : FROM onparent\n# Executing 2 build triggers\n",
    )?;
    let run = s.docker(&["run", "--rm", "onchild"])?.ok()?;
    ensure!(
        run.stdout == "triggered\nfrom the child context\n",
        "child run: {:?}",
        run.stdout
    );
    // The triggers are consumed: the child does not pass them on.
    let on = s
        .docker(&[
            "image",
            "inspect",
            "-f",
            "{{json .Config.OnBuild}}",
            "onchild",
        ])?
        .ok()?;
    ensure!(
        matches!(on.stdout.trim(), "null" | "[]"),
        "child OnBuild: {}",
        on.stdout
    );
    for (name, dockerfile, want) in [
        (
            "ctx-onon",
            "FROM busybox\nONBUILD ONBUILD RUN true\n",
            "Chaining ONBUILD via `ONBUILD ONBUILD` isn't allowed",
        ),
        (
            "ctx-onfrom",
            "FROM busybox\nONBUILD FROM busybox\n",
            "FROM isn't allowed as an ONBUILD trigger",
        ),
        (
            "ctx-onmaint",
            "FROM busybox\nONBUILD MAINTAINER me\n",
            "MAINTAINER isn't allowed as an ONBUILD trigger",
        ),
    ] {
        let ctx = context(&s, name, &[("Dockerfile", dockerfile)])?;
        let bad = s.docker(&["build", &path(&ctx)])?.expect_code(1)?;
        expect_contains(name, &bad.stderr, want)?;
        ensure!(
            !bad.stdout.contains("Step 1/"),
            "{name}: the build started before the Dockerfile was refused"
        );
    }
    s.docker(&["rmi", "onchild", "onparent"])?.ok()?;
    nothing_left(&s)
}

fn shell_args_target_label() -> Result<()> {
    let s = Stack::with_busybox()?;
    let dockerfile = "FROM busybox AS first\n\
        ARG A=default-a\n\
        ARG B\n\
        SHELL [\"/bin/echo\", \"via-shell\"]\n\
        RUN hello\n\
        SHELL [\"/bin/sh\", \"-c\"]\n\
        RUN echo \"A=$A B=$B\" > /args\n\
        COPY --chown=nobody:nogroup owned.txt /owned.txt\n\
        FROM first\n\
        RUN echo second-stage-ran > /second\n";
    let ctx = context(&s, "ctx-bits", &[("owned.txt", "o")])?;
    // The Dockerfile lives outside the context (the CLI sends it along).
    let df = s.dir.join("outside.Dockerfile");
    std::fs::write(&df, dockerfile)?;
    let out = s
        .docker(&[
            "build",
            "-f",
            &path(&df),
            "--target",
            "first",
            "--build-arg",
            "B=bee",
            "--build-arg",
            "UNUSED=x",
            "--label",
            "org.example.built-by=test",
            "-t",
            "bits",
            &path(&ctx),
        ])?
        .ok()?;
    for want in [
        "via-shell hello",
        "[Warning] One or more build-args [UNUSED] were not consumed",
        "Successfully tagged bits:latest",
    ] {
        expect_contains("build with SHELL/ARG/--target", &out.stdout, want)?;
    }
    ensure!(
        !out.stdout.contains("second-stage-ran"),
        "the stage after --target ran:\n{}",
        out.stdout
    );
    let run = s
        .docker(&[
            "run",
            "--rm",
            "bits",
            "sh",
            "-c",
            "cat /args; stat -c %U:%G /owned.txt; test -e /second || echo no-second",
        ])?
        .ok()?;
    ensure!(
        run.stdout == "A=default-a B=bee\nnobody:nogroup\nno-second\n",
        "run of the target stage: {:?}",
        run.stdout
    );
    let v = inspect(&s, "bits")?;
    ensure!(
        v["Config"]["Labels"]["org.example.built-by"] == "test",
        "labels: {}",
        v["Config"]["Labels"]
    );
    ensure!(
        v["Config"]["Shell"] == serde_json::json!(["/bin/sh", "-c"]),
        "shell: {}",
        v["Config"]["Shell"]
    );
    let bad = s
        .docker(&["build", "-f", &path(&df), "--target", "nope", &path(&ctx)])?
        .expect_code(1)?;
    expect_contains(
        "unknown target",
        &bad.stderr,
        "failed to reach build target nope in Dockerfile",
    )?;
    s.docker(&["rmi", "bits"])?.ok()?;
    nothing_left(&s)
}

fn context_from_stdin() -> Result<()> {
    let s = Stack::with_busybox()?;
    // `docker build - < Dockerfile`: no context, the Dockerfile alone.
    let df = s.dir.join("stdin.Dockerfile");
    std::fs::write(&df, "FROM busybox\nRUN echo from-stdin > /s\n")?;
    s.docker_with_stdin(&["build", "-t", "stdin-df", "-"], Some(&df))?
        .ok()?;
    let run = s.docker(&["run", "--rm", "stdin-df", "cat", "/s"])?.ok()?;
    ensure!(
        run.stdout == "from-stdin\n",
        "stdin Dockerfile: {:?}",
        run.stdout
    );
    // `docker build - < ctx.tar`: a whole context.
    let tar_path = s.dir.join("ctx.tar");
    let mut b = tar::Builder::new(std::fs::File::create(&tar_path)?);
    for (name, data) in [
        ("Dockerfile", &b"FROM busybox\nCOPY in-tar.txt /\n"[..]),
        ("in-tar.txt", b"tar context\n"),
    ] {
        let mut h = tar::Header::new_gnu();
        h.set_size(data.len() as u64);
        h.set_mode(0o644);
        b.append_data(&mut h, name, data)?;
    }
    b.finish()?;
    drop(b);
    s.docker_with_stdin(&["build", "-t", "stdin-tar", "-"], Some(&tar_path))?
        .ok()?;
    let run = s
        .docker(&["run", "--rm", "stdin-tar", "cat", "/in-tar.txt"])?
        .ok()?;
    ensure!(run.stdout == "tar context\n", "stdin tar: {:?}", run.stdout);
    s.docker(&["rmi", "stdin-df", "stdin-tar"])?.ok()?;
    nothing_left(&s)
}

fn image_volume_copy_up() -> Result<()> {
    let s = Stack::with_busybox()?;
    let ctx = context(
        &s,
        "ctx-vol",
        &[(
            "Dockerfile",
            "FROM busybox\nRUN mkdir -p /data/sub && echo seeded > /data/sub/f && chown 65534:65534 /data\nVOLUME /data\n",
        )],
    )?;
    s.docker(&["build", "-t", "volimg", &path(&ctx)])?.ok()?;
    let out = s
        .docker(&[
            "run",
            "--name",
            "volc",
            "volimg",
            "sh",
            "-c",
            "cat /data/sub/f; stat -c %u /data; echo added > /data/new",
        ])?
        .ok()?;
    ensure!(
        out.stdout == "seeded\n65534\n",
        "the anonymous volume lacks the image's content: {:?}",
        out.stdout
    );
    let v = inspect(&s, "volc")?;
    let mounts = v["Mounts"].as_array().context("Mounts is an array")?;
    ensure!(mounts.len() == 1, "mounts: {mounts:?}");
    ensure!(
        mounts[0]["Type"] == "volume" && mounts[0]["Destination"] == "/data",
        "mount: {}",
        mounts[0]
    );
    let name = mounts[0]["Name"]
        .as_str()
        .context("volume name")?
        .to_string();
    let ls = s.docker(&["volume", "ls", "-q"])?.ok()?;
    ensure!(
        ls.stdout.lines().any(|l| l == name),
        "volume {name} not listed: {}",
        ls.stdout
    );
    // What the container wrote lives in the volume, beside the copied-up content.
    let vi = s
        .docker(&["volume", "inspect", "-f", "{{.Mountpoint}}", &name])?
        .ok()?;
    let mp = Path::new(vi.stdout.trim());
    ensure!(
        std::fs::read_to_string(mp.join("new"))? == "added\n"
            && std::fs::read_to_string(mp.join("sub/f"))? == "seeded\n",
        "volume content at {}",
        mp.display()
    );
    s.docker(&["rm", "-v", "volc"])?.ok()?;
    let ls = s.docker(&["volume", "ls", "-q"])?.ok()?;
    ensure!(
        !ls.stdout.lines().any(|l| l == name),
        "rm -v left the anonymous volume {name}"
    );
    s.docker(&["rmi", "volimg"])?.ok()?;
    nothing_left(&s)
}

/// A loopback HTTP server for one test: files under `dir` by name, `/redirect/<name>`
/// answers 302 to `/<name>`, anything else 404. Stopped (and joined) on drop.
struct FileServer {
    addr: String,
    stop: Arc<AtomicBool>,
    thread: Option<JoinHandle<()>>,
}

impl FileServer {
    fn start(dir: PathBuf) -> Result<FileServer> {
        let listener = TcpListener::bind("127.0.0.1:0")?;
        let addr = listener.local_addr()?.to_string();
        let stop = Arc::new(AtomicBool::new(false));
        let flag = stop.clone();
        let thread = std::thread::spawn(move || {
            for conn in listener.incoming() {
                if flag.load(Ordering::SeqCst) {
                    break;
                }
                if let Ok(c) = conn {
                    let _ = serve_one(c, &dir);
                }
            }
        });
        Ok(FileServer {
            addr,
            stop,
            thread: Some(thread),
        })
    }

    fn url(&self, path: &str) -> String {
        format!("http://{}/{path}", self.addr)
    }
}

impl Drop for FileServer {
    fn drop(&mut self) {
        self.stop.store(true, Ordering::SeqCst);
        // Wakes the accept loop so it sees the flag.
        let _ = TcpStream::connect(&self.addr);
        if let Some(t) = self.thread.take() {
            let _ = t.join();
        }
    }
}

fn serve_one(c: TcpStream, dir: &Path) -> Result<()> {
    let mut reader = BufReader::new(c.try_clone()?);
    let mut request = String::new();
    reader.read_line(&mut request)?;
    loop {
        let mut line = String::new();
        if reader.read_line(&mut line)? == 0 || line == "\r\n" {
            break;
        }
    }
    let path = request
        .split_whitespace()
        .nth(1)
        .unwrap_or("/")
        .trim_start_matches('/')
        .to_string();
    let mut c = c;
    if let Some(target) = path.strip_prefix("redirect/") {
        write!(
            c,
            "HTTP/1.1 302 Found\r\nLocation: /{target}\r\nContent-Length: 0\r\nConnection: close\r\n\r\n"
        )?;
        return Ok(());
    }
    match std::fs::read(dir.join(&path)) {
        Ok(data) if !path.is_empty() => {
            write!(
                c,
                "HTTP/1.1 200 OK\r\nContent-Length: {}\r\nLast-Modified: Tue, 14 Nov 2023 22:13:20 GMT\r\nConnection: close\r\n\r\n",
                data.len()
            )?;
            c.write_all(&data)?;
        }
        _ => {
            let body = "no such file\n";
            write!(
                c,
                "HTTP/1.1 404 Not Found\r\nContent-Length: {}\r\nConnection: close\r\n\r\n{body}",
                body.len()
            )?;
        }
    }
    Ok(())
}

fn tar_of(dest: &Path, files: &[(&str, &[u8])]) -> Result<()> {
    let mut b = tar::Builder::new(std::fs::File::create(dest)?);
    for (name, data) in files {
        let mut h = tar::Header::new_gnu();
        h.set_size(data.len() as u64);
        h.set_mode(0o644);
        b.append_data(&mut h, name, *data)?;
    }
    b.finish()?;
    Ok(())
}

fn remote_sources() -> Result<()> {
    let s = Stack::with_busybox()?;
    let served = s.dir.join("served");
    std::fs::create_dir_all(&served)?;
    std::fs::write(served.join("remote.txt"), "remote file\n")?;
    std::fs::write(
        served.join("Dockerfile.plain"),
        "FROM busybox\nRUN echo plain-remote > /p\n",
    )?;
    let srv = FileServer::start(served.clone())?;
    tar_of(
        &served.join("ctx.tar"),
        &[
            (
                "Dockerfile",
                format!(
                    "FROM busybox\nCOPY local.txt /\nADD {} /dl/\nADD {} /renamed.txt\n",
                    srv.url("remote.txt"),
                    srv.url("redirect/remote.txt")
                )
                .as_bytes(),
            ),
            ("local.txt", b"from the remote tar\n"),
        ],
    )?;
    // A context tar from a URL, with ADDs of URLs in it (one through a redirect).
    let out = s
        .docker(&["build", "-t", "remote-ctx", &srv.url("ctx.tar")])?
        .ok()?;
    expect_contains(
        "remote build",
        &out.stdout,
        "Successfully tagged remote-ctx",
    )?;
    let run = s
        .docker(&[
            "run",
            "--rm",
            "remote-ctx",
            "sh",
            "-c",
            "cat /local.txt /dl/remote.txt /renamed.txt; stat -c %a /dl/remote.txt",
        ])?
        .ok()?;
    ensure!(
        run.stdout == "from the remote tar\nremote file\nremote file\n600\n",
        "remote context build: {:?}",
        run.stdout
    );
    // A plain Dockerfile from a URL is the Dockerfile of an empty context.
    s.docker(&["build", "-t", "remote-df", &srv.url("Dockerfile.plain")])?
        .ok()?;
    let run = s.docker(&["run", "--rm", "remote-df", "cat", "/p"])?.ok()?;
    ensure!(
        run.stdout == "plain-remote\n",
        "remote Dockerfile: {:?}",
        run.stdout
    );
    // A missing URL: the build fails naming the status.
    let bad = s.docker(&["build", &srv.url("nope.tar")])?;
    ensure!(bad.code != 0, "a build from a 404 URL succeeded");
    expect_contains("404 context", &bad.stderr, "404 Not Found")?;
    let missing_add = context(
        &s,
        "ctx-add404",
        &[(
            "Dockerfile",
            &format!("FROM busybox\nADD {} /x\n", srv.url("gone.txt")),
        )],
    )?;
    let bad = s.docker(&["build", &path(&missing_add)])?;
    ensure!(bad.code != 0, "ADD of a 404 URL succeeded");
    expect_contains(
        "ADD 404",
        &format!("{}{}", bad.stdout, bad.stderr),
        "404 Not Found",
    )?;
    // `docker import <url>`.
    std::fs::copy(s.busybox_tar()?, served.join("rootfs.tar"))?;
    s.docker(&["import", &srv.url("rootfs.tar"), "imported:url"])?
        .ok()?;
    let run = s
        .docker(&[
            "run",
            "--rm",
            "imported:url",
            "/bin/sh",
            "-c",
            "echo imported-ok",
        ])?
        .ok()?;
    ensure!(
        run.stdout == "imported-ok\n",
        "imported image: {:?}",
        run.stdout
    );
    let bad = s.docker(&["import", &srv.url("nope.tar"), "imported:bad"])?;
    ensure!(bad.code != 0, "import of a 404 URL succeeded");
    if s.docker(&["image", "inspect", "imported:bad"])?.code == 0 {
        bail!("a failed import left an image");
    }
    s.docker(&["rmi", "remote-ctx", "remote-df", "imported:url"])?
        .ok()?;
    drop(srv);
    nothing_left(&s)
}

fn cache_survives_restart() -> Result<()> {
    let mut s = Stack::with_busybox()?;
    let ctx = context(
        &s,
        "ctx-cache",
        &[
            (
                "Dockerfile",
                "FROM busybox\nCOPY a.txt /\nRUN cat /a.txt > /b.txt\n",
            ),
            ("a.txt", "a\n"),
        ],
    )?;
    let first = s.docker(&["build", "-q", &path(&ctx)])?.ok()?;
    s.stop_daemon(Daemon::Engine, Signal::SIGTERM)?;
    s.start_daemon(Daemon::Engine)?;
    let out = s.docker(&["build", &path(&ctx)])?.ok()?;
    ensure!(
        out.stdout.matches(" ---> Using cache").count() == 2,
        "the cache did not survive the restart:\n{}",
        out.stdout
    );
    expect_contains(
        "cached rebuild",
        &out.stdout,
        first
            .stdout
            .trim()
            .trim_start_matches("sha256:")
            .get(..12)
            .unwrap_or("?"),
    )?;
    let fresh = s.docker(&["build", "--no-cache", &path(&ctx)])?.ok()?;
    ensure!(
        !fresh.stdout.contains("Using cache"),
        "--no-cache used the cache:\n{}",
        fresh.stdout
    );
    // `docker builder prune` drops the layer cache: the next build runs every step.
    let pruned = s.docker(&["builder", "prune", "-f"])?.ok()?;
    expect_contains("builder prune", &pruned.stdout, "Total reclaimed space:")?;
    let again = s.docker(&["build", &path(&ctx)])?.ok()?;
    ensure!(
        !again.stdout.contains("Using cache"),
        "the cache outlived builder prune:\n{}",
        again.stdout
    );
    nothing_left(&s)
}
