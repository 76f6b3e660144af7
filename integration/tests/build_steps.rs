//! `docker build` as dockerd 20.10's legacy builder shows it: the step lines, the
//! intermediate containers (`--rm`, `--rm=false`, `--force-rm`) in `docker ps -a`, and
//! what it refuses (`--chmod`).

use anyhow::{ensure, Result};
use berth_integration::Stack;

use crate::build::{context, nothing_left};
use crate::common::{expect_contains, inspect, Spec, DOCKER};

pub fn tests() -> Vec<Spec> {
    vec![
        Spec {
            name: "build_steps::output_as_dockerd",
            needs: DOCKER,
            run: output_as_dockerd,
        },
        Spec {
            name: "build_steps::intermediate_containers",
            needs: DOCKER,
            run: intermediate_containers,
        },
        Spec {
            name: "build_steps::dockerd_errors",
            needs: DOCKER,
            run: dockerd_errors,
        },
        Spec {
            name: "build_steps::add_compressed_archives",
            needs: DOCKER,
            run: add_compressed_archives,
        },
        Spec {
            name: "build_steps::cache_in_df_and_prune_filters",
            needs: DOCKER,
            run: cache_in_df_and_prune_filters,
        },
    ]
}

/// The output from the first step on, every 12-hex ID replaced by `<id>`.
fn normalized(stdout: &str) -> String {
    let from = stdout.find("Step 1/").unwrap_or(0);
    stdout[from..]
        .split_inclusive(['\n', ' '])
        .map(|w| {
            let t = w.trim_end();
            if t.len() == 12 && t.chars().all(|c| c.is_ascii_hexdigit()) {
                format!("<id>{}", &w[t.len()..])
            } else {
                w.to_string()
            }
        })
        .collect()
}

/// The entry paths of each layer of `image`, bottom first (from `docker save`).
fn layer_entries(s: &Stack, image: &str) -> Result<Vec<Vec<String>>> {
    let file = s.dir.join("saved.tar");
    s.docker(&["save", "-o", &file.to_string_lossy(), image])?
        .ok()?;
    let mut files = std::collections::HashMap::new();
    let mut archive = tar::Archive::new(std::fs::File::open(&file)?);
    for entry in archive.entries()? {
        let mut entry = entry?;
        let path = entry.path()?.to_string_lossy().into_owned();
        let mut data = Vec::new();
        std::io::Read::read_to_end(&mut entry, &mut data)?;
        files.insert(path, data);
    }
    std::fs::remove_file(&file)?;
    let manifest: serde_json::Value = serde_json::from_slice(
        files
            .get("manifest.json")
            .map(Vec::as_slice)
            .unwrap_or_default(),
    )?;
    let mut out = Vec::new();
    for layer in manifest[0]["Layers"].as_array().into_iter().flatten() {
        let data = files
            .get(layer.as_str().unwrap_or_default())
            .cloned()
            .unwrap_or_default();
        let mut names = Vec::new();
        for entry in tar::Archive::new(data.as_slice()).entries()? {
            names.push(
                entry?
                    .path()?
                    .to_string_lossy()
                    .trim_end_matches('/')
                    .to_string(),
            );
        }
        out.push(names);
    }
    Ok(out)
}

/// `docker ps -a` as `ID STATUS COMMAND` lines.
fn ps_all(s: &Stack) -> Result<Vec<String>> {
    let out = s
        .docker(&[
            "ps",
            "-a",
            "--no-trunc",
            "--format",
            "{{.ID}} {{.Status}} {{.Command}}",
        ])?
        .ok()?;
    Ok(out.stdout.lines().map(String::from).collect())
}

/// The IDs of `Running in <id>` lines, in order.
fn running_ids(stdout: &str) -> Vec<String> {
    stdout
        .lines()
        .filter_map(|l| l.strip_prefix(" ---> Running in "))
        .map(|id| id.trim().to_string())
        .collect()
}

fn output_as_dockerd() -> Result<()> {
    let s = Stack::with_busybox()?;
    let ctx = context(
        &s,
        "out",
        &[
            (
                "Dockerfile",
                "FROM busybox\nENV A=1\nRUN echo hi\nCOPY f.txt /f.txt\nWORKDIR /w\nCMD [\"cat\",\"/f.txt\"]\n",
            ),
            ("f.txt", "hello\n"),
        ],
    )?;
    let ctx = ctx.to_string_lossy().into_owned();
    let out = s.docker(&["build", "-t", "out:1", &ctx])?.ok()?;
    // What dockerd 20.10 prints for this Dockerfile, IDs aside: config-only steps get a
    // (never started) container too, COPY does not.
    let want = "Step 1/6 : FROM busybox\n ---> <id>\n\
        Step 2/6 : ENV A=1\n ---> Running in <id>\nRemoving intermediate container <id>\n ---> <id>\n\
        Step 3/6 : RUN echo hi\n ---> Running in <id>\nhi\nRemoving intermediate container <id>\n ---> <id>\n\
        Step 4/6 : COPY f.txt /f.txt\n ---> <id>\n\
        Step 5/6 : WORKDIR /w\n ---> Running in <id>\nRemoving intermediate container <id>\n ---> <id>\n\
        Step 6/6 : CMD [\"cat\",\"/f.txt\"]\n ---> Running in <id>\nRemoving intermediate container <id>\n ---> <id>\n\
        Successfully built <id>\nSuccessfully tagged out:1\n";
    ensure!(
        normalized(&out.stdout) == want,
        "build output differs from dockerd's:\n{}\nwanted:\n{want}",
        out.stdout
    );
    let again = s.docker(&["build", "-t", "out:1", &ctx])?.ok()?;
    let want = "Step 1/6 : FROM busybox\n ---> <id>\n\
        Step 2/6 : ENV A=1\n ---> Using cache\n ---> <id>\n\
        Step 3/6 : RUN echo hi\n ---> Using cache\n ---> <id>\n\
        Step 4/6 : COPY f.txt /f.txt\n ---> Using cache\n ---> <id>\n\
        Step 5/6 : WORKDIR /w\n ---> Using cache\n ---> <id>\n\
        Step 6/6 : CMD [\"cat\",\"/f.txt\"]\n ---> Using cache\n ---> <id>\n\
        Successfully built <id>\nSuccessfully tagged out:1\n";
    ensure!(
        normalized(&again.stdout) == want,
        "cached build output differs from dockerd's:\n{}\nwanted:\n{want}",
        again.stdout
    );
    let run = s.docker(&["run", "--rm", "out:1"])?.ok()?;
    ensure!(
        run.stdout == "hello\n",
        "built image runs: {:?}",
        run.stdout
    );
    // The RUN changed nothing: not even the empty /etc/hosts, /etc/hostname and
    // /etc/resolv.conf mount points (busybox has none of them) make a layer, so, as in
    // dockerd, it has no layer (an `empty_layer` history entry): busybox, COPY, WORKDIR.
    let layers = layer_entries(&s, "out:1")?;
    ensure!(
        layers.len() == 3 && layers[1] == ["f.txt"] && layers[2] == ["w"],
        "layers of out:1: {:?}",
        &layers[1..]
    );
    // Each --label is a step of its own, sorted by key, its value taken literally.
    let labelled = s
        .docker(&[
            "build", "--label", "x=a b", "--label", "q=$HOME", "-t", "out:2", &ctx,
        ])?
        .ok()?;
    for want in [
        "Step 7/8 : LABEL q=$HOME\n ---> Running in ",
        "Step 8/8 : LABEL x=a b\n ---> Running in ",
    ] {
        expect_contains("--label steps", &labelled.stdout, want)?;
    }
    let labels = &inspect(&s, "out:2")?["Config"]["Labels"];
    ensure!(
        labels["q"] == "$HOME" && labels["x"] == "a b",
        "labels: {labels}"
    );
    let history = s
        .docker(&[
            "history",
            "--no-trunc",
            "--format",
            "{{.CreatedBy}}",
            "out:2",
        ])?
        .ok()?;
    expect_contains(
        "history",
        &history.stdout,
        "/bin/sh -c #(nop)  LABEL x=a b\n",
    )?;
    s.docker(&["rmi", "out:2"])?.ok()?;

    // --chmod needs BuildKit in dockerd 20.10: refused at its step, in its words.
    for kw in ["COPY", "ADD"] {
        std::fs::write(
            s.dir.join("out/Dockerfile"),
            format!("FROM busybox\n{kw} --chmod=644 f.txt /\n"),
        )?;
        let bad = s.docker(&["build", &ctx])?.expect_code(1)?;
        expect_contains(
            "--chmod",
            &bad.stdout,
            &format!("Step 2/2 : {kw} --chmod=644 f.txt /\n"),
        )?;
        expect_contains(
            "--chmod",
            &bad.stderr,
            "the --chmod option requires BuildKit. Refer to https://docs.docker.com/go/buildkit/ to learn how to build images with BuildKit enabled",
        )?;
    }
    s.docker(&["rmi", "out:1"])?.ok()?;
    nothing_left(&s)
}

fn intermediate_containers() -> Result<()> {
    let s = Stack::with_busybox()?;
    let ctx = context(
        &s,
        "rm",
        &[(
            "Dockerfile",
            "FROM busybox\nENV B=2\nRUN echo x > /x\nWORKDIR /w\n",
        )],
    )?;
    let ctx = ctx.to_string_lossy().into_owned();
    // --rm=false keeps every step's container: the RUN's exited, the others created.
    let kept = s
        .docker(&["build", "--rm=false", "-t", "kept", &ctx])?
        .ok()?;
    ensure!(
        !kept.stdout.contains("Removing intermediate container"),
        "--rm=false removed containers:\n{}",
        kept.stdout
    );
    let ids = running_ids(&kept.stdout);
    ensure!(ids.len() == 3, "three steps ran in containers: {ids:?}");
    let ps = ps_all(&s)?;
    ensure!(ps.len() == 3, "docker ps -a after --rm=false: {ps:?}");
    let row = |id: &str| ps.iter().find(|r| r.starts_with(id)).cloned();
    let env = row(&ids[0]).unwrap_or_default();
    ensure!(
        env.contains(" Created ") && env.ends_with("\"/bin/sh -c '#(nop) ' 'ENV B=2'\""),
        "ENV step's container: {env:?} in {ps:?}"
    );
    let run = row(&ids[1]).unwrap_or_default();
    ensure!(
        run.contains(" Exited (0) ") && run.ends_with("\"/bin/sh -c 'echo x > /x'\""),
        "RUN step's container: {run:?} in {ps:?}"
    );
    let wd = row(&ids[2]).unwrap_or_default();
    ensure!(
        wd.contains(" Created ") && wd.ends_with("\"/bin/sh -c '#(nop) WORKDIR /w'\""),
        "WORKDIR step's container: {wd:?} in {ps:?}"
    );
    let mut rm = vec!["rm"];
    rm.extend(ids.iter().map(String::as_str));
    s.docker(&rm)?.ok()?;

    // The default (--rm) removes them after successful steps, but keeps a failed one.
    std::fs::write(
        s.dir.join("rm/Dockerfile"),
        "FROM busybox\nENV B=2\nRUN exit 3\n",
    )?;
    let failed = s.docker(&["build", "--no-cache", &ctx])?.expect_code(3)?;
    let ids = running_ids(&failed.stdout);
    ensure!(ids.len() == 2, "two steps ran in containers: {ids:?}");
    let ps = ps_all(&s)?;
    ensure!(
        ps.len() == 1 && ps[0].starts_with(&ids[1]) && ps[0].contains(" Exited (3) "),
        "only the failed RUN's container stays: {ps:?}"
    );
    expect_contains(
        "failed build",
        &failed.stderr,
        "The command '/bin/sh -c exit 3' returned a non-zero code: 3",
    )?;
    s.docker(&["rm", &ids[1]])?.ok()?;

    // --force-rm removes the failed step's container too, and says so.
    let forced = s
        .docker(&["build", "--force-rm", "--no-cache", &ctx])?
        .expect_code(3)?;
    let ids = running_ids(&forced.stdout);
    ensure!(ids.len() == 2, "two steps ran in containers: {ids:?}");
    expect_contains(
        "--force-rm",
        &forced.stdout,
        &format!("Removing intermediate container {}\n", ids[1]),
    )?;
    let ps = ps_all(&s)?;
    ensure!(ps.is_empty(), "--force-rm left containers: {ps:?}");
    s.docker(&["rmi", "kept"])?.ok()?;
    nothing_left(&s)
}

/// `docker system df`'s `Build Cache` row as (total, size).
fn df_cache(s: &Stack) -> Result<(String, String)> {
    let out = s.docker(&["system", "df"])?.ok()?;
    let row = out
        .stdout
        .lines()
        .find(|l| l.starts_with("Build Cache"))
        .unwrap_or_default()
        .to_string();
    let w: Vec<&str> = row.split_whitespace().collect();
    ensure!(w.len() == 6, "Build Cache row: {row:?} in\n{}", out.stdout);
    Ok((w[2].to_string(), w[4].to_string()))
}

fn cache_in_df_and_prune_filters() -> Result<()> {
    let s = Stack::with_busybox()?;
    let ctx = context(
        &s,
        "cache",
        &[(
            "Dockerfile",
            "FROM busybox\nRUN head -c 5000 /dev/zero > /a\nLABEL k=v\n",
        )],
    )?;
    let ctx = ctx.to_string_lossy().into_owned();
    s.docker(&["build", "-t", "c:1", &ctx])?.ok()?;
    // While c:1 uses the layers they are shared: counted, but 0B of their own.
    ensure!(
        df_cache(&s)? == ("2".into(), "0B".into()),
        "{:?}",
        df_cache(&s)?
    );
    s.docker(&["rmi", "c:1"])?.ok()?;
    let (n, size) = df_cache(&s)?;
    ensure!(n == "2" && size != "0B", "cache after rmi: {n} {size}");
    let verbose = s.docker(&["system", "df", "-v"])?.ok()?;
    expect_contains("df -v", &verbose.stdout, "CACHE ID")?;
    expect_contains("df -v", &verbose.stdout, " regular ")?;

    let prune = |args: &[&str]| -> Result<berth_integration::cmd::Output> {
        let mut a = vec!["builder", "prune", "-f"];
        a.extend_from_slice(args);
        s.docker(&a)
    };
    // Too young for until=24h, and no entry matches the label but the LABEL step's.
    let out = prune(&["--filter", "until=24h"])?.ok()?;
    expect_contains("until=24h", &out.stdout, "Total reclaimed space: 0B")?;
    ensure!(df_cache(&s)?.0 == "2", "until=24h pruned young entries");
    prune(&["--filter", "label=k=v"])?.ok()?;
    ensure!(df_cache(&s)?.0 == "1", "label=k=v: {:?}", df_cache(&s)?);
    // --keep-storage above the cache's size keeps it.
    prune(&["--all", "--keep-storage", "1000000000"])?.ok()?;
    ensure!(df_cache(&s)?.0 == "1", "--keep-storage pruned");
    for (filter, err) in [
        ("foo=bar", "failed to prune build cache: Invalid filter 'foo'"),
        (
            "until=1d",
            "failed to prune build cache: \"until\" filter expects a duration (e.g., '24h'): time: unknown unit \"d\" in duration \"1d\"",
        ),
    ] {
        let bad = prune(&["--filter", filter])?.expect_code(1)?;
        expect_contains(filter, &bad.stderr, err)?;
    }
    let out = prune(&["--all"])?.ok()?;
    expect_contains("prune --all", &out.stdout, "Deleted build cache objects:")?;
    ensure!(
        !out.stdout.contains("Total reclaimed space: 0B"),
        "the RUN layer was reclaimed: {}",
        out.stdout
    );
    ensure!(df_cache(&s)? == ("0".into(), "0B".into()), "cache left");
    nothing_left(&s)
}

/// Compresses `file` in place with `prog` (`bzip2 -k`, `xz -k`), keeping the original.
fn compress(prog: &str, file: &std::path::Path) -> Result<()> {
    let st = std::process::Command::new(prog)
        .args(["-k", "-f"])
        .arg(file)
        .status()?;
    ensure!(st.success(), "{prog} {} failed", file.display());
    Ok(())
}

/// ADD unpacks tars compressed with gzip, bzip2 or xz, told by content (a .tar.bz2 with
/// another name too), and copies a zstd file as it is: what dockerd 20.10 does.
fn add_compressed_archives() -> Result<()> {
    let s = Stack::with_busybox()?;
    let ctx = context(&s, "arch", &[("d/f", "inner\n")])?;
    let tar = ctx.join("a.tar");
    let st = std::process::Command::new("tar")
        .arg("-C")
        .arg(&ctx)
        .arg("-cf")
        .arg(&tar)
        .arg("d")
        .status()?;
    ensure!(st.success(), "tar failed");
    std::fs::remove_dir_all(ctx.join("d"))?;
    compress("bzip2", &tar)?;
    compress("xz", &tar)?;
    compress("gzip", &tar)?;
    std::fs::copy(ctx.join("a.tar.bz2"), ctx.join("plainname"))?;
    // A zstd frame header: not one of the legacy builder's formats.
    std::fs::write(ctx.join("a.tar.zst"), [0x28, 0xb5, 0x2f, 0xfd, 0, 0, 0, 0])?;
    std::fs::write(
        ctx.join("Dockerfile"),
        "FROM busybox\nADD a.tar.bz2 /bz/\nADD a.tar.xz /xz/\nADD a.tar.gz /gz/\n\
         ADD plainname /pn/\nADD a.tar.zst /zs/\nCMD find /bz /xz /gz /pn /zs\n",
    )?;
    let ctx = ctx.to_string_lossy().into_owned();
    s.docker(&["build", "-t", "arch", &ctx])?.ok()?;
    let out = s.docker(&["run", "--rm", "arch"])?.ok()?;
    let mut got: Vec<&str> = out.stdout.lines().collect();
    got.sort_unstable();
    let want = [
        "/bz",
        "/bz/d",
        "/bz/d/f",
        "/gz",
        "/gz/d",
        "/gz/d/f",
        "/pn",
        "/pn/d",
        "/pn/d/f",
        "/xz",
        "/xz/d",
        "/xz/d/f",
        "/zs",
        "/zs/a.tar.zst",
    ];
    ensure!(got == want, "unpacked: {got:?}");
    s.docker(&["rmi", "arch"])?.ok()?;
    nothing_left(&s)
}

/// Errors as dockerd 20.10 reports them: the ones its parser finds before any step (no
/// `Step` line, exit 1), and the ones found when a step runs.
fn dockerd_errors() -> Result<()> {
    let s = Stack::with_busybox()?;
    let ctx = context(&s, "errs", &[("Dockerfile", "")])?;
    let df = ctx.join("Dockerfile");
    let ctx = ctx.to_string_lossy().into_owned();
    let before_steps = [
        (
            "COPY a\n",
            "dockerfile parse error line 2: COPY requires at least two arguments, but only one was provided. Destination could not be determined",
        ),
        ("WORKDIR\n", "dockerfile parse error line 2: WORKDIR requires exactly one argument"),
        ("COPY --bogus=1 a b\n", "dockerfile parse error line 2: Unknown flag: bogus"),
        ("ENV A\n", "failed to parse Dockerfile: ENV must have two arguments"),
        (
            "LABEL a=1 b\n",
            "failed to parse Dockerfile: Syntax error - can't find = in \"b\". Must be of the form: name=value",
        ),
        (
            "HEALTHCHECK --interval=x CMD true\n",
            "dockerfile parse error line 2: time: invalid duration \"x\"",
        ),
        (
            "SHELL sh -c\n",
            "dockerfile parse error line 2: SHELL requires the arguments to be in JSON form",
        ),
        (
            "FROM busybox AS 1a\n",
            "dockerfile parse error line 2: invalid name for build stage: \"1a\", name can't start with a number or contain symbols",
        ),
    ];
    for (line, want) in before_steps {
        std::fs::write(&df, format!("FROM busybox\n{line}"))?;
        let bad = s.docker(&["build", &ctx])?.expect_code(1)?;
        expect_contains(line, &bad.stderr, want)?;
        ensure!(
            !bad.stdout.contains("Step 1/"),
            "{line:?} ran steps:\n{}",
            bad.stdout
        );
    }
    let at_step = [
        (
            "RUN --mount=type=cache,target=/x true\n",
            "the --mount option requires BuildKit. Refer to https://docs.docker.com/go/buildkit/ to learn how to build images with BuildKit enabled",
        ),
        ("EXPOSE 80/xyz\n", "Invalid proto: xyz"),
        ("FROM busybox AS zz\nFROM busybox AS zz\n", "zz stage name already used"),
        (
            "COPY --from=busybox /nope /x\n",
            "COPY failed: stat nope: file does not exist",
        ),
        (
            "ADD http://127.0.0.1:1/x /x\n",
            "ADD failed: Get \"http://127.0.0.1:1/x\": dial tcp 127.0.0.1:1: connect: connection refused",
        ),
    ];
    for (line, want) in at_step {
        std::fs::write(&df, format!("FROM busybox\n{line}"))?;
        let bad = s.docker(&["build", &ctx])?.expect_code(1)?;
        expect_contains(line, &bad.stderr, want)?;
        expect_contains(line, &bad.stdout, "Step 2/")?;
    }
    // A bare RUN runs the shell without a command, as dockerd does.
    std::fs::write(&df, "FROM busybox\nRUN\n")?;
    let bad = s.docker(&["build", "--force-rm", &ctx])?.expect_code(2)?;
    expect_contains(
        "RUN",
        &bad.stderr,
        "The command '/bin/sh -c' returned a non-zero code: 2",
    )?;
    nothing_left(&s)
}
