//! `docker build` (the legacy builder), `docker commit` and `docker history` through the
//! real docker CLI.

use std::path::{Path, PathBuf};
use std::process::Command;

use anyhow::{ensure, Context, Result};
use berth_integration::{cleanup, Stack};

use crate::common::{expect_contains, wait_no_containers, Spec, DOCKER};

pub fn tests() -> Vec<Spec> {
    vec![
        Spec {
            name: "build::multi_step_run_and_cache",
            needs: DOCKER,
            run: multi_step_run_and_cache,
        },
        Spec {
            name: "build::multi_stage_and_dockerignore",
            needs: DOCKER,
            run: multi_stage_and_dockerignore,
        },
        Spec {
            name: "build::add_archive_and_chown",
            needs: DOCKER,
            run: add_archive_and_chown,
        },
        Spec {
            name: "build::errors",
            needs: DOCKER,
            run: errors,
        },
        Spec {
            name: "build::commit_and_history",
            needs: DOCKER,
            run: commit_and_history,
        },
    ]
}

/// A build context dir inside the stack's temp dir with these files.
pub fn context(s: &Stack, name: &str, files: &[(&str, &str)]) -> Result<PathBuf> {
    let dir = s.dir.join(name);
    for (path, content) in files {
        let p = dir.join(path);
        std::fs::create_dir_all(p.parent().context("file has a parent")?)?;
        std::fs::write(&p, content)?;
    }
    Ok(dir)
}

fn ctx_arg(p: &Path) -> String {
    p.to_string_lossy().into_owned()
}

/// Nothing of a build is left: no container, no mount under the stack, no active
/// snapshot in highd, no build dir in the engine's exec root.
pub fn nothing_left(s: &Stack) -> Result<()> {
    wait_no_containers(s)?;
    let mounts = cleanup::mounts_under(&s.dir)?;
    ensure!(mounts.is_empty(), "mounts left: {mounts:?}");
    let builds: Vec<_> = std::fs::read_dir(s.dir.join("ex"))?
        .flatten()
        .filter(|e| e.file_name().to_string_lossy().starts_with("build-"))
        .map(|e| e.path())
        .collect();
    ensure!(builds.is_empty(), "build dirs left: {builds:?}");
    if let Ok(out) = Command::new("ctr")
        .arg("--address")
        .arg(s.highd_sock())
        .args(["-n", "berth", "snapshots", "ls"])
        .output()
    {
        let text = String::from_utf8_lossy(&out.stdout);
        let active: Vec<&str> = text.lines().filter(|l| l.contains("Active")).collect();
        ensure!(active.is_empty(), "active snapshots left: {active:?}");
    }
    Ok(())
}

fn multi_step_run_and_cache() -> Result<()> {
    let s = Stack::with_busybox()?;
    let dockerfile = "# a comment\n\
        FROM busybox\n\
        ARG GREETING=hello\n\
        ENV APP_DIR=/app \\\n    MODE=\"test mode\"\n\
        RUN echo \"$GREETING from run\" > /greeting && echo to-stderr >&2\n\
        WORKDIR $APP_DIR\n\
        COPY data.txt sub/ ./\n\
        COPY [\"data.txt\", \"/opt/renamed.txt\"]\n\
        LABEL org.example.k=v\n\
        EXPOSE 8080\n\
        CMD [\"sh\", \"-c\", \"cat /greeting data.txt x.txt /opt/renamed.txt; pwd; echo $MODE\"]\n";
    let ctx = context(
        &s,
        "ctx1",
        &[
            ("Dockerfile", dockerfile),
            ("data.txt", "data\n"),
            ("sub/x.txt", "x\n"),
        ],
    )?;
    let out = s
        .docker(&[
            "build",
            "--build-arg",
            "GREETING=hi",
            "-t",
            "app:v1",
            &ctx_arg(&ctx),
        ])?
        .ok()?;
    for want in [
        "Step 1/10 : FROM busybox\n",
        "Step 4/10 : RUN echo",
        " ---> Running in ",
        "to-stderr",
        "Removing intermediate container ",
        "Successfully built ",
        "Successfully tagged app:v1\n",
    ] {
        expect_contains("docker build", &out.stdout, want)?;
    }
    let run = s.docker(&["run", "--rm", "app:v1"])?.ok()?;
    ensure!(
        run.stdout == "hi from run\ndata\nx\ndata\n/app\ntest mode\n",
        "docker run of the built image: {:?}",
        run.stdout
    );
    let cfg = s
        .docker(&[
            "inspect",
            "-f",
            "{{json .Config.Labels}} {{json .Config.ExposedPorts}} {{.Config.WorkingDir}}",
            "app:v1",
        ])?
        .ok()?;
    ensure!(
        cfg.out() == r#"{"org.example.k":"v"} {"8080/tcp":{}} /app"#,
        "inspect: {}",
        cfg.out()
    );

    // The same build again: every step after FROM comes from the cache, same image.
    let again = s
        .docker(&[
            "build",
            "--build-arg",
            "GREETING=hi",
            "-t",
            "app:v2",
            &ctx_arg(&ctx),
        ])?
        .ok()?;
    let hits = again.stdout.matches(" ---> Using cache\n").count();
    ensure!(hits == 9, "cache hits on rebuild: {hits}\n{}", again.stdout);
    let ids = s
        .docker(&[
            "images",
            "--format",
            "{{.ID}}",
            "--filter",
            "reference=app:v[12]",
        ])?
        .ok()?;
    let ids: Vec<&str> = ids.out().lines().collect();
    ensure!(
        ids.len() == 2 && ids[0] == ids[1],
        "app:v1 and app:v2 IDs: {ids:?}"
    );
    // A changed file invalidates its COPY and everything after it.
    std::fs::write(ctx.join("data.txt"), "changed\n")?;
    let changed = s
        .docker(&[
            "build",
            "--build-arg",
            "GREETING=hi",
            "-t",
            "app:v3",
            &ctx_arg(&ctx),
        ])?
        .ok()?;
    let hits = changed.stdout.matches(" ---> Using cache\n").count();
    ensure!(
        hits == 4,
        "cache hits after a change: {hits}\n{}",
        changed.stdout
    );
    let nocache = s
        .docker(&["build", "--no-cache", "-q", &ctx_arg(&ctx)])?
        .ok()?;
    ensure!(
        nocache.out().starts_with("sha256:"),
        "docker build -q: {:?}",
        nocache.stdout
    );

    let hist = s
        .docker(&["history", "--format", "{{.CreatedBy}}|{{.Size}}", "app:v1"])?
        .ok()?;
    let rows: Vec<&str> = hist.out().lines().collect();
    ensure!(rows.len() == 10, "history rows: {rows:?}");
    expect_contains("history", rows[0], "CMD [\"sh\" \"-c\"")?;
    expect_contains("history", rows[6], "|1 GREETING=hi /bin/sh -c echo")?;
    ensure!(
        rows[3].contains("COPY file:") && !rows[3].ends_with("|0B"),
        "COPY row {}",
        rows[3]
    );
    s.docker(&["rmi", "app:v1", "app:v2", "app:v3"])?.ok()?;
    nothing_left(&s)
}

fn multi_stage_and_dockerignore() -> Result<()> {
    let s = Stack::with_busybox()?;
    let dockerfile = "FROM busybox AS builder\n\
        RUN mkdir /out && echo built > /out/artifact\n\
        FROM busybox AS unused\n\
        RUN echo never-used\n\
        FROM scratch\n\
        COPY --from=builder /out/artifact /artifact\n\
        COPY --from=busybox /bin/busybox /bin/busybox\n\
        COPY . /ctx/\n\
        CMD [\"/bin/busybox\", \"sh\", \"-c\", \"cat /artifact; /bin/busybox ls /ctx\"]\n";
    let ctx = context(
        &s,
        "ctx2",
        &[
            ("Dockerfile", dockerfile),
            (".dockerignore", "*.secret\nignored/\n"),
            ("keep.txt", "k"),
            ("a.secret", "s"),
            ("ignored/file", "i"),
        ],
    )?;
    let out = s.docker(&["build", "-t", "ms", &ctx_arg(&ctx)])?.ok()?;
    expect_contains("docker build", &out.stdout, "Successfully tagged ms:latest")?;
    let run = s.docker(&["run", "--rm", "ms"])?.ok()?;
    ensure!(
        run.stdout == "built\nDockerfile\nkeep.txt\n",
        "multi-stage image output: {:?}",
        run.stdout
    );
    // --target stops at a stage.
    let t = s
        .docker(&["build", "--target", "builder", "-t", "b1", &ctx_arg(&ctx)])?
        .ok()?;
    expect_contains("docker build --target", &t.stdout, "Step 2/2 : RUN")?;
    let run = s
        .docker(&["run", "--rm", "b1", "cat", "/out/artifact"])?
        .ok()?;
    ensure!(run.stdout == "built\n", "--target image: {:?}", run.stdout);
    nothing_left(&s)
}

fn errors() -> Result<()> {
    let s = Stack::with_busybox()?;
    let ctx = context(
        &s,
        "ctx3",
        &[("Dockerfile", "FROM busybox\nRUN echo before && exit 3\n")],
    )?;
    // The CLI exits with the code the failing step's errorDetail carries.
    let out = s
        .docker(&["build", "--force-rm", &ctx_arg(&ctx)])?
        .expect_code(3)?;
    expect_contains("failing RUN", &out.stdout, "before\n")?;
    expect_contains(
        "failing RUN",
        &out.stderr,
        "The command '/bin/sh -c echo before && exit 3' returned a non-zero code: 3",
    )?;
    std::fs::write(ctx.join("Dockerfile"), "FROM busybox\nFOO bar\n")?;
    let out = s.docker(&["build", &ctx_arg(&ctx)])?.expect_code(1)?;
    expect_contains(
        "unknown instruction",
        &out.stderr,
        "dockerfile parse error line 2: unknown instruction: FOO",
    )?;
    let out = s
        .docker(&["build", "-f", "nope", &ctx_arg(&ctx)])?
        .expect_code(1)?;
    expect_contains("missing Dockerfile", &out.stderr, "nope")?;
    std::fs::write(ctx.join("Dockerfile"), "FROM busybox\nCOPY missing.txt /\n")?;
    let out = s.docker(&["build", &ctx_arg(&ctx)])?.expect_code(1)?;
    expect_contains("missing source", &out.stderr, "missing.txt")?;
    nothing_left(&s)
}

fn commit_and_history() -> Result<()> {
    let s = Stack::with_busybox()?;
    s.docker(&[
        "run",
        "--name",
        "src",
        "busybox",
        "sh",
        "-c",
        "echo committed > /state",
    ])?
    .ok()?;
    let id = s
        .docker(&[
            "commit",
            "-m",
            "my message",
            "-a",
            "me",
            "-c",
            "ENV Z=1",
            "-c",
            "CMD [\"cat\", \"/state\"]",
            "src",
            "snap:1",
        ])?
        .ok()?;
    ensure!(
        id.out().starts_with("sha256:"),
        "docker commit: {:?}",
        id.stdout
    );
    s.docker(&["rm", "src"])?.ok()?;
    let run = s.docker(&["run", "--rm", "snap:1"])?.ok()?;
    ensure!(
        run.stdout == "committed\n",
        "committed image output: {:?}",
        run.stdout
    );
    let env = s
        .docker(&["run", "--rm", "snap:1", "sh", "-c", "echo $Z"])?
        .ok()?;
    ensure!(env.stdout == "1\n", "ENV from --change: {:?}", env.stdout);
    let hist = s
        .docker(&[
            "history",
            "--format",
            "{{.ID}}|{{.CreatedBy}}|{{.Comment}}",
            "snap:1",
        ])?
        .ok()?;
    let rows: Vec<&str> = hist.out().lines().collect();
    ensure!(rows.len() == 2, "history rows: {rows:?}");
    ensure!(
        rows[0].ends_with("|sh -c echo committed > /state|my message"),
        "top history row: {}",
        rows[0]
    );
    ensure!(rows[1].starts_with("<missing>|"), "base row: {}", rows[1]);
    let author = s
        .docker(&["inspect", "-f", "{{.Author}}", "snap:1"])?
        .ok()?;
    ensure!(author.out() == "me", "Author: {:?}", author.out());
    let bad = s.docker(&["commit", "-c", "RUN true", "nope-container"])?;
    ensure!(bad.code != 0, "commit of a missing container succeeded");
    let bad = s.docker(&["history", "no-such-image"])?.expect_code(1)?;
    expect_contains("history of a missing image", &bad.stderr, "No such image")?;
    s.docker(&["rmi", "snap:1"])?.ok()?;
    nothing_left(&s)
}

fn add_archive_and_chown() -> Result<()> {
    let s = Stack::with_busybox()?;
    let ctx = context(
        &s,
        "ctx4",
        &[
            (
                "Dockerfile",
                "FROM busybox\nADD files.tar /unpacked/\nCOPY --chown=12:34 owned.txt /owned.txt\n",
            ),
            ("owned.txt", "o"),
        ],
    )?;
    let mut b = tar::Builder::new(std::fs::File::create(ctx.join("files.tar"))?);
    let mut h = tar::Header::new_gnu();
    h.set_size(3);
    h.set_mode(0o640);
    h.set_uid(7);
    h.set_gid(8);
    b.append_data(&mut h, "inner/file", &b"abc"[..])?;
    b.finish()?;
    drop(b);
    s.docker(&["build", "-t", "addc", &ctx_arg(&ctx)])?.ok()?;
    let out = s
        .docker(&[
            "run",
            "--rm",
            "addc",
            "sh",
            "-c",
            "cat /unpacked/inner/file; stat -c '%u:%g' /owned.txt /unpacked/inner/file",
        ])?
        .ok()?;
    ensure!(
        out.stdout == "abc12:34\n7:8\n",
        "ADD/COPY --chown result: {:?}",
        out.stdout
    );
    s.docker(&["rmi", "addc"])?.ok()?;
    nothing_left(&s)
}
