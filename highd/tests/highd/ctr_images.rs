//! `ctr` image commands against berth-highd: `namespaces`, `images import` of OCI and
//! docker archives built here from the busybox rootfs, `images ls/rm`, `content ls`,
//! `snapshots ls`, `run --rm` of an imported image, and GC after `images rm --sync`.

use std::io::Write;
use std::path::{Path, PathBuf};

use anyhow::{ensure, Result};
use flate2::write::GzEncoder;
use flate2::Compression;
use sha2::{Digest, Sha256};

use crate::common::Stack;
use crate::ctr::Ctr;

fn sha256(b: &[u8]) -> String {
    hex::encode(Sha256::digest(b))
}

/// The one-layer image both archive formats carry: (layer tar, config JSON).
fn image_parts(rootfs: &Path) -> Result<(Vec<u8>, Vec<u8>)> {
    let layer = layer_tar(rootfs, Vec::new())?;
    let config = image_config(&sha256(&layer))?;
    Ok((layer, config))
}

/// The rootfs as a tar written to `out`.
fn layer_tar<W: Write>(rootfs: &Path, out: W) -> Result<W> {
    let mut layer = tar::Builder::new(out);
    layer.follow_symlinks(false);
    // Real bytes for holes too: the crash tests use big sparse files for big layers.
    layer.sparse(false);
    layer.append_dir_all(".", rootfs)?;
    Ok(layer.into_inner()?)
}

fn image_config(diff_id: &str) -> Result<Vec<u8>> {
    Ok(serde_json::to_vec(&serde_json::json!({
        "architecture": "amd64", "os": "linux",
        "config": {"Env": ["PATH=/bin"], "Cmd": ["/bin/sh"]},
        "rootfs": {"type": "layers", "diff_ids": [format!("sha256:{diff_id}")]}
    }))?)
}

/// Hashes the tar on its way into the gzip encoder: the config names the uncompressed
/// digest, and a big layer of zeros is never held uncompressed in memory.
struct HashingGz {
    hash: Sha256,
    gz: GzEncoder<Vec<u8>>,
}

impl Write for HashingGz {
    fn write(&mut self, buf: &[u8]) -> std::io::Result<usize> {
        let n = self.gz.write(buf)?;
        self.hash.update(&buf[..n]);
        Ok(n)
    }
    fn flush(&mut self) -> std::io::Result<()> {
        self.gz.flush()
    }
}

fn write_tar(path: &Path, files: &[(String, &[u8])]) -> Result<()> {
    let mut archive = tar::Builder::new(std::fs::File::create(path)?);
    for (name, data) in files {
        let mut header = tar::Header::new_gnu();
        header.set_size(data.len() as u64);
        header.set_mode(0o644);
        header.set_cksum();
        archive.append_data(&mut header, name, *data)?;
    }
    archive.finish()?;
    Ok(())
}

/// An OCI image layout archive naming the image `name` (containerd's annotation).
pub fn oci_archive(rootfs: &Path, dir: &Path, name: &str) -> Result<PathBuf> {
    let (layer, config) = image_parts(rootfs)?;
    let manifest = serde_json::to_vec(&serde_json::json!({
        "schemaVersion": 2,
        "mediaType": "application/vnd.oci.image.manifest.v1+json",
        "config": {"mediaType": "application/vnd.oci.image.config.v1+json",
                   "digest": format!("sha256:{}", sha256(&config)), "size": config.len()},
        "layers": [{"mediaType": "application/vnd.oci.image.layer.v1.tar",
                    "digest": format!("sha256:{}", sha256(&layer)), "size": layer.len()}]
    }))?;
    let index = serde_json::to_vec(&serde_json::json!({
        "schemaVersion": 2,
        "manifests": [{"mediaType": "application/vnd.oci.image.manifest.v1+json",
                       "digest": format!("sha256:{}", sha256(&manifest)), "size": manifest.len(),
                       "annotations": {"io.containerd.image.name": name}}]
    }))?;
    let path = dir.join("oci-image.tar");
    let mut files = vec![
        (
            "oci-layout".to_string(),
            &br#"{"imageLayoutVersion":"1.0.0"}"#[..],
        ),
        ("index.json".to_string(), &index[..]),
    ];
    for blob in [&layer, &config, &manifest] {
        files.push((format!("blobs/sha256/{}", sha256(blob)), &blob[..]));
    }
    write_tar(&path, &files)?;
    Ok(path)
}

/// A `docker save` archive (manifest.json + config + layer dirs) tagged `tag`.
pub fn docker_archive(rootfs: &Path, dir: &Path, tag: &str) -> Result<PathBuf> {
    let (layer, config) = image_parts(rootfs)?;
    write_docker_archive(&layer, &config, dir, tag)
}

/// [`docker_archive`] with the layer gzip-compressed (ctr detects it by its magic bytes):
/// a layer of many MiB of zeros is a small archive, a small blob to import and a long
/// unpack.
pub fn docker_archive_gz(rootfs: &Path, dir: &Path, tag: &str) -> Result<PathBuf> {
    let out = HashingGz {
        hash: Sha256::new(),
        gz: GzEncoder::new(Vec::new(), Compression::fast()),
    };
    let out = layer_tar(rootfs, out)?;
    let config = image_config(&hex::encode(out.hash.finalize()))?;
    write_docker_archive(&out.gz.finish()?, &config, dir, tag)
}

fn write_docker_archive(layer: &[u8], config: &[u8], dir: &Path, tag: &str) -> Result<PathBuf> {
    let config_name = format!("{}.json", sha256(config));
    let layer_name = format!("{}/layer.tar", sha256(layer));
    let manifest = serde_json::to_vec(&serde_json::json!([
        {"Config": config_name, "RepoTags": [tag], "Layers": [layer_name]}
    ]))?;
    let path = dir.join("docker-image.tar");
    write_tar(
        &path,
        &[
            ("manifest.json".to_string(), &manifest[..]),
            (config_name, config),
            (layer_name, layer),
        ],
    )?;
    Ok(path)
}

/// Digest of the one layer `image_parts` makes: also the image's chain ID.
fn layer_digest(rootfs: &Path) -> Result<String> {
    Ok(format!("sha256:{}", sha256(&image_parts(rootfs)?.0)))
}

#[tokio::test(flavor = "multi_thread")]
async fn ctr_imports_and_runs_an_image() -> Result<()> {
    let mut stack = Stack::new();
    let Some(ctr) = Ctr::for_test("ctr_imports_and_runs_an_image", &stack) else {
        return Ok(());
    };
    // Grace 0: `images rm --sync` must free everything at once.
    let config = stack.dir.path().join("config.toml");
    std::fs::write(&config, "[gc]\ngrace = 0\n")?;
    stack.extra_args = vec!["--config".into(), config.to_string_lossy().into_owned()];
    stack.start().await?;

    ctr.ok(&["namespaces", "create", "bh-extra", "team=a"])?;
    let listed = ctr.ok(&["namespaces", "ls"])?;
    ensure!(
        listed
            .lines()
            .any(|l| l.starts_with("bh-extra") && l.contains("team=a")),
        "{listed}"
    );
    ctr.ok(&["namespaces", "rm", "bh-extra"])?;
    let listed = ctr.ok(&["namespaces", "ls", "-q"])?;
    ensure!(!listed.lines().any(|l| l == "bh-extra"), "{listed}");

    let rootfs = stack.rootfs();
    let oci = "docker.io/library/bh-oci:latest";
    let docker = "docker.io/library/bh-docker:1";
    let oci_tar = oci_archive(&rootfs, stack.dir.path(), oci)?;
    let docker_tar = docker_archive(&rootfs, stack.dir.path(), "bh-docker:1")?;
    ctr.ok(&["images", "import", &oci_tar.to_string_lossy()])?;
    ctr.ok(&["images", "import", &docker_tar.to_string_lossy()])?;
    let images = ctr.ok(&["images", "ls", "-q"])?;
    ensure!(images.lines().any(|l| l == oci), "{images}");
    ensure!(images.lines().any(|l| l == docker), "{images}");
    let layer = layer_digest(&rootfs)?;
    let content = ctr.ok(&["content", "ls", "-q"])?;
    ensure!(
        content.lines().any(|l| l == layer),
        "{layer} not in {content}"
    );
    // Both imports unpack the same layer; its snapshot is named by its chain ID.
    let snaps = ctr.ok(&["snapshots", "ls"])?;
    ensure!(
        snaps
            .lines()
            .any(|l| l.starts_with(&layer) && l.contains("Committed")),
        "{snaps}"
    );

    // Content, snapshots (overlay or copy) and the task's rootfs mounts, end to end.
    for (image, id) in [(oci, "i1"), (docker, "i2")] {
        let cg = format!("{}/{id}", stack.cgroup_parent);
        let out = ctr.ok(&[
            "run",
            "--rm",
            "--cgroup",
            &cg,
            image,
            id,
            "/bin/sh",
            "-c",
            "echo from-image; ls /bin/busybox",
        ])?;
        ensure!(
            out.contains("from-image") && out.contains("/bin/busybox"),
            "{image}: {out}"
        );
    }
    // ctr's runc options pick the runtime binary and its root for one container.
    if std::process::Command::new("runc")
        .arg("--version")
        .output()
        .is_ok_and(|o| o.status.success())
    {
        let cg = format!("{}/i3", stack.cgroup_parent);
        let runc_root = stack.dir.path().join("ctr-runc");
        let runc_root_arg = runc_root.display().to_string();
        let out = ctr.ok(&[
            "run",
            "--rm",
            "--cgroup",
            &cg,
            "--runc-binary",
            "runc",
            "--runc-root",
            &runc_root_arg,
            oci,
            "i3",
            "/bin/echo",
            "via-runc",
        ])?;
        ensure!(out.contains("via-runc"), "{out}");
        // --runc-root reached the runtime: <root>/<namespace> was made (runc itself
        // running it is checked by runtime_options.rs).
        let ns_dirs = std::fs::read_dir(&runc_root)
            .map(|d| d.count())
            .unwrap_or(0);
        ensure!(ns_dirs == 1, "runc root {runc_root_arg} unused");
    }
    let left = ctr.ok(&["containers", "ls", "-q"])?;
    ensure!(left.trim().is_empty(), "run --rm left {left}");

    ctr.ok(&["images", "rm", "--sync", oci, docker])?;
    let images = ctr.ok(&["images", "ls", "-q"])?;
    ensure!(images.trim().is_empty(), "{images}");
    let content = ctr.ok(&["content", "ls", "-q"])?;
    ensure!(content.trim().is_empty(), "GC left content: {content}");
    let snaps = ctr.ok(&["snapshots", "ls"])?;
    ensure!(snaps.lines().count() <= 1, "GC left snapshots: {snaps}");
    Ok(())
}
