//! `docker save` / `docker load` (docker-archive and OCI layout), `docker image prune`,
//! `docker images --filter` and the build cache's use counts through the real docker CLI.

use std::io::Read;

use anyhow::{ensure, Context, Result};
use berth_integration::Stack;

use crate::build::{context, nothing_left};
use crate::common::{expect_contains, Spec, DOCKER};

pub fn tests() -> Vec<Spec> {
    vec![
        Spec {
            name: "images_more::save_rmi_load_round_trip",
            needs: DOCKER,
            run: save_rmi_load_round_trip,
        },
        Spec {
            name: "images_more::import_with_changes",
            needs: DOCKER,
            run: import_with_changes,
        },
        Spec {
            name: "images_more::prune_and_filters",
            needs: DOCKER,
            run: prune_and_filters,
        },
        Spec {
            name: "images_more::build_cache_last_used_and_usage_count",
            needs: DOCKER,
            run: build_cache_usage,
        },
        Spec {
            name: "images_more::inspect_parent_and_docker_version",
            needs: DOCKER,
            run: parent_and_docker_version,
        },
    ]
}

fn image_id(s: &Stack, name: &str) -> Result<String> {
    Ok(s.docker(&["inspect", "-f", "{{.Id}}", name])?
        .ok()?
        .out()
        .to_string())
}

/// Rewrites a tar keeping only the entries `keep` accepts.
fn filter_tar(
    src: &std::path::Path,
    dest: &std::path::Path,
    keep: impl Fn(&str) -> bool,
) -> Result<()> {
    let mut input = tar::Archive::new(std::fs::File::open(src)?);
    let mut out = tar::Builder::new(std::fs::File::create(dest)?);
    for e in input.entries()? {
        let mut e = e?;
        let path = e.path()?.to_string_lossy().into_owned();
        if !keep(&path) {
            continue;
        }
        let mut data = Vec::new();
        e.read_to_end(&mut data)?;
        let mut h = e.header().clone();
        out.append_data(&mut h, &path, data.as_slice())?;
    }
    out.finish()?;
    Ok(())
}

fn save_rmi_load_round_trip() -> Result<()> {
    let s = Stack::with_busybox()?;
    s.docker(&[
        "run",
        "--name",
        "wr",
        "busybox",
        "sh",
        "-c",
        "echo saved > /f",
    ])?
    .ok()?;
    s.docker(&["commit", "wr", "keep:1"])?.ok()?;
    s.docker(&["rm", "wr"])?.ok()?;
    let id = image_id(&s, "keep:1")?;
    let archive = s.dir.join("keep.tar");
    s.docker(&["save", "-o", &archive.to_string_lossy(), "keep:1"])?
        .ok()?;
    let mut names = Vec::new();
    for e in tar::Archive::new(std::fs::File::open(&archive)?).entries()? {
        names.push(e?.path()?.to_string_lossy().into_owned());
    }
    for want in ["manifest.json", "index.json", "oci-layout", "repositories"] {
        ensure!(
            names.iter().any(|n| n == want),
            "{want} missing from the archive: {names:?}"
        );
    }
    s.docker(&["rmi", "keep:1"])?.ok()?;
    let loaded = s
        .docker(&["load", "-i", &archive.to_string_lossy()])?
        .ok()?;
    expect_contains("docker load", &loaded.stdout, "Loaded image: keep:1")?;
    ensure!(
        image_id(&s, "keep:1")? == id,
        "the image ID changed over save/load"
    );
    let run = s.docker(&["run", "--rm", "keep:1", "cat", "/f"])?.ok()?;
    ensure!(
        run.stdout == "saved\n",
        "loaded image output: {:?}",
        run.stdout
    );

    // The same archive as a bare OCI layout (no manifest.json) loads too, from stdin.
    s.docker(&["rmi", "keep:1"])?.ok()?;
    let oci = s.dir.join("keep-oci.tar");
    filter_tar(&archive, &oci, |p| {
        p != "manifest.json" && p != "repositories"
    })?;
    let loaded = s
        .docker(&["load", "-q", "-i", &oci.to_string_lossy()])?
        .ok()?;
    expect_contains(
        "docker load (OCI layout)",
        &loaded.stdout,
        "Loaded image: keep:1",
    )?;
    let run = s.docker(&["run", "--rm", "keep:1", "cat", "/f"])?.ok()?;
    ensure!(
        run.stdout == "saved\n",
        "OCI-loaded image output: {:?}",
        run.stdout
    );

    let bad = s.dir.join("bad.tar");
    filter_tar(&archive, &bad, |p| p == "oci-layout")?;
    let out = s.docker(&["load", "-i", &bad.to_string_lossy()])?;
    ensure!(
        out.code != 0,
        "loading an archive without manifests succeeded"
    );
    expect_contains("bad archive", &out.stderr, "invalid image archive")?;
    s.docker(&["rmi", "keep:1"])?.ok()?;
    nothing_left(&s)
}

fn prune_and_filters() -> Result<()> {
    let s = Stack::with_busybox()?;
    let ctx = context(
        &s,
        "ctxp",
        &[(
            "Dockerfile",
            "FROM busybox\nLABEL purpose=test\nRUN echo v1 > /v\n",
        )],
    )?;
    let ctx_s = ctx.to_string_lossy().into_owned();
    s.docker(&["build", "-t", "pr:1", &ctx_s])?.ok()?;
    // Rebuilding the tag with a change leaves the old image dangling.
    std::fs::write(
        ctx.join("Dockerfile"),
        "FROM busybox\nLABEL purpose=test\nRUN echo v2 > /v\n",
    )?;
    s.docker(&["build", "-t", "pr:1", &ctx_s])?.ok()?;
    let dangling = s
        .docker(&["images", "-q", "--filter", "dangling=true"])?
        .ok()?;
    ensure!(
        dangling.out().lines().count() == 1,
        "dangling images: {:?}",
        dangling.stdout
    );
    let labelled = s
        .docker(&[
            "images",
            "--format",
            "{{.Repository}}:{{.Tag}}",
            "--filter",
            "label=purpose=test",
        ])?
        .ok()?;
    ensure!(
        labelled.out().lines().collect::<Vec<_>>() == ["pr:1", "<none>:<none>"],
        "label filter: {:?}",
        labelled.stdout
    );
    let since = s
        .docker(&[
            "images",
            "--format",
            "{{.Repository}}",
            "--filter",
            "since=busybox",
        ])?
        .ok()?;
    ensure!(
        !since.stdout.contains("busybox"),
        "since=busybox lists busybox: {:?}",
        since.stdout
    );
    expect_contains("since filter", &since.stdout, "pr")?;
    let before = s
        .docker(&[
            "images",
            "--format",
            "{{.Repository}}",
            "--filter",
            "before=pr:1",
        ])?
        .ok()?;
    expect_contains("before filter", &before.stdout, "busybox")?;
    let bad = s.docker(&["images", "--filter", "nope=1"])?;
    ensure!(bad.code != 0, "an unknown filter was accepted");
    expect_contains("unknown filter", &bad.stderr, "invalid filter 'nope'")?;

    let pruned = s.docker(&["image", "prune", "-f"])?.ok()?;
    expect_contains("image prune", &pruned.stdout, "deleted: sha256:")?;
    let dangling = s
        .docker(&["images", "-q", "--filter", "dangling=true"])?
        .ok()?;
    ensure!(
        dangling.out().is_empty(),
        "dangling after prune: {:?}",
        dangling.stdout
    );
    // -a keeps what a container uses.
    s.docker(&["create", "--name", "holder", "busybox", "true"])?
        .ok()?;
    let pruned = s.docker(&["image", "prune", "-a", "-f"])?.ok()?;
    expect_contains("image prune -a", &pruned.stdout, "untagged: pr:1")?;
    let left = s.docker(&["images", "--format", "{{.Repository}}"])?.ok()?;
    ensure!(
        left.out() == "busybox",
        "images after prune -a: {:?}",
        left.stdout
    );
    s.docker(&["rm", "holder"])?.ok()?;
    let id = image_id(&s, "busybox").context("busybox is still there")?;
    ensure!(id.starts_with("sha256:"), "busybox id {id}");
    nothing_left(&s)
}

fn import_with_changes() -> Result<()> {
    let s = Stack::start()?;
    let tar = s.busybox_tar()?;
    let tar = tar.to_string_lossy().into_owned();
    s.docker(&[
        "import",
        "-m",
        "from a tarball",
        "-c",
        "ENV GREETING=imported",
        "-c",
        r#"CMD ["sh", "-c", "echo $GREETING"]"#,
        &tar,
        "imp:1",
    ])?
    .ok()?;
    let run = s.docker(&["run", "--rm", "imp:1"])?.ok()?;
    ensure!(
        run.stdout == "imported\n",
        "imported image output: {:?}",
        run.stdout
    );
    let hist = s
        .docker(&["history", "--format", "{{.Comment}}", "imp:1"])?
        .ok()?;
    ensure!(
        hist.out() == "from a tarball",
        "import comment: {:?}",
        hist.stdout
    );
    let bad = s.docker(&["import", "-c", "RUN true", &tar, "imp:2"])?;
    ensure!(bad.code != 0, "import --change RUN succeeded");
    expect_contains(
        "import --change RUN",
        &bad.stderr,
        "RUN is not a valid change command",
    )?;
    s.docker(&["rmi", "imp:1"])?.ok()?;
    nothing_left(&s)
}

/// The build cache rows of `docker system df -v` as the CLI renders them.
fn cache_rows(s: &Stack) -> Result<Vec<serde_json::Value>> {
    let out = s
        .docker(&["system", "df", "-v", "--format", "{{json .}}"])?
        .ok()?;
    let v: serde_json::Value = serde_json::from_str(out.out())
        .with_context(|| format!("system df -v json: {}", out.stdout))?;
    Ok(v["BuildCache"].as_array().cloned().unwrap_or_default())
}

/// Each cache entry is used once when made; a rebuild that reuses it counts a use and
/// moves its LAST USED, as BuildKit's records do in `system df -v`.
fn build_cache_usage() -> Result<()> {
    let s = Stack::with_busybox()?;
    let ctx = context(
        &s,
        "ctx-usage",
        &[("Dockerfile", "FROM busybox\nRUN echo a > /a\nENV X=1\n")],
    )?;
    s.docker(&["build", "-t", "used", &ctx.to_string_lossy()])?
        .ok()?;
    let rows = cache_rows(&s)?;
    ensure!(rows.len() == 2, "cache rows after one build: {rows:?}");
    for r in &rows {
        ensure!(
            r["UsageCount"] == "1"
                && r["LastUsedSince"]
                    .as_str()
                    .is_some_and(|t| t.ends_with(" ago")),
            "a new entry: {r}"
        );
    }
    let again = s
        .docker(&["build", "-t", "used", &ctx.to_string_lossy()])?
        .ok()?;
    expect_contains("rebuild", &again.stdout, "Using cache")?;
    let rows = cache_rows(&s)?;
    ensure!(rows.len() == 2, "cache rows after a rebuild: {rows:?}");
    for r in &rows {
        ensure!(r["UsageCount"] == "2", "a reused entry: {r}");
    }
    s.docker(&["rmi", "used"])?.ok()?;
    s.docker(&["builder", "prune", "-af"])?.ok()?;
    nothing_left(&s)
}

fn inspect_field(s: &Stack, name: &str, field: &str) -> Result<String> {
    Ok(s.docker(&["image", "inspect", "-f", field, name])?
        .ok()?
        .out()
        .to_string())
}

/// A committed image's Parent is its container's image, a built image's the previous
/// step's; both carry the engine's DockerVersion, as dockerd records for commits and
/// legacy builds. An imported image has neither.
fn parent_and_docker_version() -> Result<()> {
    let s = Stack::with_busybox()?;
    let server = s
        .docker(&["version", "-f", "{{.Server.Version}}"])?
        .ok()?
        .out()
        .to_string();
    let busybox = image_id(&s, "busybox")?;
    ensure!(
        inspect_field(&s, "busybox", "{{.Parent}}|{{.DockerVersion}}")? == "|",
        "imported busybox has a parent or version"
    );
    s.docker(&["run", "--name", "pv", "busybox", "touch", "/x"])?
        .ok()?;
    s.docker(&["commit", "pv", "pv:1"])?.ok()?;
    s.docker(&["rm", "pv"])?.ok()?;
    let got = inspect_field(&s, "pv:1", "{{.Parent}}|{{.DockerVersion}}")?;
    ensure!(got == format!("{busybox}|{server}"), "committed: {got}");

    let ctx = context(
        &s,
        "ctx-parent",
        &[("Dockerfile", "FROM busybox\nRUN touch /y\nENV Y=1\n")],
    )?;
    let out = s
        .docker(&["build", "-t", "pv:2", &ctx.to_string_lossy()])?
        .ok()?;
    // ` ---> <id>` after each step: the RUN's image is the ENV image's parent.
    let ids: Vec<&str> = out
        .stdout
        .lines()
        .filter_map(|l| l.strip_prefix(" ---> "))
        .filter(|l| !l.contains(' '))
        .collect();
    ensure!(ids.len() == 3, "step images: {ids:?} in\n{}", out.stdout);
    let got = inspect_field(&s, "pv:2", "{{.Parent}}|{{.DockerVersion}}")?;
    let (parent, version) = got.split_once('|').unwrap_or_default();
    ensure!(
        parent.trim_start_matches("sha256:").starts_with(ids[1]) && version == server,
        "built: {got}, steps {ids:?}"
    );
    let run_parent = inspect_field(&s, parent, "{{.Parent}}")?;
    ensure!(run_parent == busybox, "the RUN step's parent: {run_parent}");
    s.docker(&["rmi", "pv:1", "pv:2"])?.ok()?;
    nothing_left(&s)
}
