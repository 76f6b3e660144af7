//! Images beyond plain gzip over HTTP: zstd-compressed layers (pulled from the test
//! registry and loaded from an OCI layout), registries behind HTTPS with a private CA,
//! and pulls that survive an engine restart or a connection cut mid-blob. The registry
//! is Debian's `docker-registry` on 127.0.0.1 (see registry.rs); skopeo recompresses.

use std::path::Path;
use std::process::Command;

use anyhow::{ensure, Context, Result};
use berth_integration::stack::Daemon;
use berth_integration::Stack;
use nix::sys::signal::Signal;

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
        Spec {
            name: "registry_more::https_registry_with_ca_from_certs_dir",
            needs: NEEDS,
            run: https_registry,
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

fn openssl(dir: &Path, args: &[&str]) -> Result<()> {
    run(Command::new("openssl").current_dir(dir).args(args))?;
    Ok(())
}

/// A CA and a server certificate for `ip` signed by it (`ca.crt`, `server.crt/key`).
fn make_certs(dir: &Path, ip: &str) -> Result<()> {
    std::fs::create_dir_all(dir)?;
    let ec = [
        "-newkey",
        "ec",
        "-pkeyopt",
        "ec_paramgen_curve:prime256v1",
        "-nodes",
    ];
    let mut ca = vec!["req", "-x509", "-days", "2", "-subj", "/CN=berth test CA"];
    ca.extend(ec);
    ca.extend(["-keyout", "ca.key", "-out", "ca.crt"]);
    openssl(dir, &ca)?;
    let mut req = vec!["req", "-subj", "/CN=berth test registry"];
    req.extend(ec);
    req.extend(["-keyout", "server.key", "-out", "server.csr"]);
    openssl(dir, &req)?;
    std::fs::write(dir.join("san.ext"), format!("subjectAltName=IP:{ip}\n"))?;
    openssl(
        dir,
        &[
            "x509",
            "-req",
            "-days",
            "2",
            "-in",
            "server.csr",
            "-CA",
            "ca.crt",
            "-CAkey",
            "ca.key",
            "-CAcreateserial",
            "-extfile",
            "san.ext",
            "-out",
            "server.crt",
        ],
    )
}

/// A registry behind HTTPS on the stack's bridge address (not loopback, which dockerd
/// and Berth treat as insecure): refused with Go's x509 text until its CA is in the
/// certs dir; then pull, run and push work. As an --insecure-registry it needs no CA.
fn https_registry() -> Result<()> {
    let certs_dir = tempfile::Builder::new()
        .prefix("bt-certs-")
        .tempdir_in("/tmp")?;
    let mut s = Stack::start_with(vec![
        "--certs-dir".into(),
        certs_dir.path().display().to_string(),
    ])?;
    let ip = s.bip.split('/').next().context("bip")?.to_string();
    let tls = s.dir.join("tls");
    make_certs(&tls, &ip)?;
    let reg = Registry::start_with(
        &s.dir,
        None,
        Some((&ip, &tls.join("server.crt"), &tls.join("server.key"))),
    )?;
    reg.push_busybox(&s.busybox_tar()?, "latest", None)?;
    let image = format!("{}/busybox", reg.host);
    let out = s.docker(&["pull", &image])?;
    ensure!(out.code != 0, "pull without the CA succeeded: {out}");
    expect_contains(
        "untrusted pull",
        &out.stderr,
        &format!("Get \"https://{}/v2/", reg.host),
    )?;
    expect_contains(
        "untrusted pull",
        &out.stderr,
        "tls: failed to verify certificate: x509: certificate signed by unknown authority",
    )?;
    let images = s.docker(&["images", "-q"])?.ok()?;
    ensure!(images.stdout.trim().is_empty(), "left: {}", images.stdout);

    let host_dir = certs_dir.path().join(&reg.host);
    std::fs::create_dir_all(&host_dir)?;
    std::fs::copy(tls.join("ca.crt"), host_dir.join("ca.crt"))?;
    s.docker(&["pull", &image])?.ok()?;
    let out = s.docker(&["run", "--rm", &image, "echo", "tls"])?.ok()?;
    ensure!(out.stdout == "tls\n", "run stdout {:?}", out.stdout);
    let mine = format!("{}/mine:tls", reg.host);
    s.docker(&["tag", &image, &mine])?.ok()?;
    let out = s.docker(&["push", &mine])?.ok()?;
    expect_contains("tls push", &out.stdout, "tls: digest: sha256:")?;

    // Insecure: HTTPS without verification, so no CA is needed.
    std::fs::remove_dir_all(&host_dir)?;
    s.docker(&["rmi", &image, &mine])?.ok()?;
    s.stop_daemon(Daemon::Engine, Signal::SIGTERM)?;
    s.engine_args
        .extend(["--insecure-registry".into(), reg.host.clone()]);
    s.start_daemon(Daemon::Engine)?;
    s.docker(&["pull", &mine])?.ok()?;
    Ok(())
}
