//! `docker push` details against Debian's `docker-registry` on loopback: `push -a` of
//! every tag, the errors for missing tags, cross-repository blob mounts, and a large
//! layer uploaded in PATCHed chunks. The registry's access log shows which requests came.

use std::process::Command;

use anyhow::{ensure, Result};
use berth_integration::Stack;

use crate::common::{expect_contains, Spec};
use crate::registry::{run, Registry, REGISTRY_NEEDS};

pub fn tests() -> Vec<Spec> {
    vec![
        Spec {
            name: "registry::push_all_tags_and_missing_tags",
            needs: REGISTRY_NEEDS,
            run: push_all_tags,
        },
        Spec {
            name: "registry::push_mounts_from_another_repo_and_chunks_large_layers",
            needs: REGISTRY_NEEDS,
            run: mount_and_chunks,
        },
    ]
}

fn push_all_tags() -> Result<()> {
    let s = Stack::with_busybox()?;
    let reg = Registry::start(&s.dir, None)?;
    let repo = format!("{}/one", reg.host);
    for tag in ["b", "a"] {
        s.docker(&["tag", "busybox", &format!("{repo}:{tag}")])?
            .ok()?;
    }
    let out = s.docker(&["push", "-a", &repo])?.ok()?;
    expect_contains(
        "push -a",
        &out.stdout,
        &format!("The push refers to repository [{repo}]"),
    )?;
    let (a, b) = (
        out.stdout.find("a: digest: sha256:"),
        out.stdout.find("b: digest: sha256:"),
    );
    ensure!(
        a.is_some() && a < b,
        "push -a pushes a then b:\n{}",
        out.stdout
    );
    // A bare name is `latest` (the CLI adds it), which this repository lacks.
    let out = s.docker(&["push", &repo])?.expect_code(1)?;
    expect_contains("bare push", &out.stdout, "Using default tag: latest")?;
    expect_contains(
        "bare push",
        &out.stderr,
        &format!("tag does not exist: {repo}:latest"),
    )?;
    let none = format!("{}/none", reg.host);
    let out = s.docker(&["push", "-a", &none])?.expect_code(1)?;
    expect_contains(
        "push -a of nothing",
        &out.stderr,
        &format!("An image does not exist locally with the tag: {none}"),
    )?;
    Ok(())
}

fn requests(reg: &Registry, what: &str) -> usize {
    reg.log().lines().filter(|l| l.contains(what)).count()
}

fn mount_and_chunks() -> Result<()> {
    let s = Stack::with_busybox()?;
    let reg = Registry::start(&s.dir, None)?;
    let one = format!("{}/one:1", reg.host);
    let two = format!("{}/two:1", reg.host);
    s.docker(&["tag", "busybox", &one])?.ok()?;
    s.docker(&["push", &one])?.ok()?;
    ensure!(
        requests(&reg, "mount=") == 0,
        "first push mounted:\n{}",
        reg.log()
    );
    s.docker(&["tag", "busybox", &two])?.ok()?;
    let out = s.docker(&["push", &two])?.ok()?;
    expect_contains("second repo push", &out.stdout, "Mounted from one")?;
    ensure!(
        requests(&reg, "mount=") > 0,
        "no mount request:\n{}",
        reg.log()
    );
    ensure!(
        requests(&reg, "\"PUT /v2/two/blobs/uploads") <= 1,
        "layer uploaded instead of mounted:\n{}",
        reg.log()
    );

    // 12 MiB that do not compress: over the 5 MiB chunk size, so three PATCHes.
    let root = s.dir.join("big");
    std::fs::create_dir_all(&root)?;
    run(Command::new("head")
        .args(["-c", "12582912", "/dev/urandom"])
        .stdout(std::fs::File::create(root.join("blob"))?))?;
    let tar = s.dir.join("big.tar");
    run(Command::new("tar")
        .arg("-cf")
        .arg(&tar)
        .arg("-C")
        .arg(&root)
        .arg("blob"))?;
    let big = format!("{}/big:1", reg.host);
    s.docker(&["import", &tar.to_string_lossy(), &big])?.ok()?;
    let id = s
        .docker(&["image", "inspect", "--format", "{{.Id}}", &big])?
        .ok()?;
    let out = s.docker(&["push", &big])?.ok()?;
    expect_contains("big push", &out.stdout, "1: digest: sha256:")?;
    let patches = requests(&reg, "\"PATCH /v2/big/blobs/uploads/");
    ensure!(
        patches >= 3,
        "{patches} PATCHes for a 12 MiB layer:\n{}",
        reg.log()
    );
    s.docker(&["rmi", &big])?.ok()?;
    s.docker(&["pull", &big])?.ok()?;
    let again = s
        .docker(&["image", "inspect", "--format", "{{.Id}}", &big])?
        .ok()?;
    ensure!(
        id.out() == again.out(),
        "image ID changed: {} vs {}",
        id.out(),
        again.out()
    );
    Ok(())
}
