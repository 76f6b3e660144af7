//! `docker pull` / `docker login` through Berth against Debian's `docker-registry`
//! (distribution 2.8), started by PID on 127.0.0.1:<free port> with its own config and
//! storage in the test's temp dir. The registry is filled with `skopeo copy` from an OCI
//! layout built from the busybox test image. Traffic only goes to 127.0.0.1.

use std::fs::File;
use std::net::{TcpListener, TcpStream};
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::time::Duration;

use anyhow::{bail, ensure, Context, Result};
use berth_integration::{wait_until, Stack};

use berth_integration::prereq::Need;

use crate::common::{expect_contains, Spec};

/// Missing registry tools make these tests a visible, counted skip.
pub(crate) const REGISTRY_NEEDS: &[Need] =
    &[Need::Root, Need::Busybox, Need::Docker, Need::Registry];

use berth_integration::prereq::REGISTRY_TOOLS;

const REGISTRY: &str = REGISTRY_TOOLS[0];
const SKOPEO: &str = REGISTRY_TOOLS[1];
const HTPASSWD: &str = REGISTRY_TOOLS[2];

pub fn tests() -> Vec<Spec> {
    vec![
        Spec {
            name: "registry::pull_run_and_pull_by_digest",
            needs: REGISTRY_NEEDS,
            run: pull_and_run,
        },
        Spec {
            name: "registry::push_then_pull_into_another_stack",
            needs: REGISTRY_NEEDS,
            run: push_then_pull,
        },
        Spec {
            name: "registry::basic_auth_login_then_pull",
            needs: REGISTRY_NEEDS,
            run: basic_auth,
        },
        Spec {
            name: "registry::corrupt_blob_fails_and_leaves_no_image",
            needs: REGISTRY_NEEDS,
            run: corrupt_blob,
        },
    ]
}

/// A registry process we started; killed by PID on drop.
pub(crate) struct Registry {
    child: Child,
    pub(crate) dir: PathBuf,
    pub(crate) host: String,
}

impl Drop for Registry {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

pub(crate) fn run(cmd: &mut Command) -> Result<String> {
    let out = cmd.output().with_context(|| format!("run {cmd:?}"))?;
    if !out.status.success() {
        bail!(
            "{cmd:?} failed: {}\n{}",
            out.status,
            String::from_utf8_lossy(&out.stderr)
        );
    }
    Ok(String::from_utf8_lossy(&out.stdout).into_owned())
}

impl Registry {
    /// Starts a registry under `dir`; with `auth`, htpasswd (bcrypt) `user:password`.
    pub(crate) fn start(dir: &Path, auth: Option<(&str, &str)>) -> Result<Registry> {
        Self::start_with(dir, auth, None)
    }

    /// Like [`Registry::start`]; with `tls` = (ip, certificate, key), HTTPS only, on
    /// that local address.
    pub(crate) fn start_with(
        dir: &Path,
        auth: Option<(&str, &str)>,
        tls: Option<(&str, &Path, &Path)>,
    ) -> Result<Registry> {
        let dir = dir.join("registry");
        std::fs::create_dir_all(dir.join("storage"))?;
        let ip = tls.map_or("127.0.0.1", |t| t.0);
        let port = TcpListener::bind((ip, 0))?.local_addr()?.port();
        let host = format!("{ip}:{port}");
        let mut config = format!(
            "version: 0.1\nlog:\n  level: info\nstorage:\n  filesystem:\n    rootdirectory: {}\n  delete:\n    enabled: true\nhttp:\n  addr: {host}\n",
            dir.join("storage").display()
        );
        if let Some((_, cert, key)) = tls {
            config.push_str(&format!(
                "  tls:\n    certificate: {}\n    key: {}\n",
                cert.display(),
                key.display()
            ));
        }
        if let Some((user, password)) = auth {
            let line = run(Command::new(HTPASSWD).args(["-Bbn", user, password]))?;
            std::fs::write(dir.join("htpasswd"), line)?;
            config.push_str(&format!(
                "auth:\n  htpasswd:\n    realm: berth-test\n    path: {}\n",
                dir.join("htpasswd").display()
            ));
        }
        std::fs::write(dir.join("config.yml"), config)?;
        let log = File::create(dir.join("registry.log"))?;
        let child = Command::new(REGISTRY)
            .arg("serve")
            .arg(dir.join("config.yml"))
            .stdin(Stdio::null())
            .stdout(log.try_clone()?)
            .stderr(log)
            .spawn()
            .context("start docker-registry")?;
        let reg = Registry { child, dir, host };
        wait_until("registry to listen", Duration::from_secs(20), || {
            Ok(TcpStream::connect(&reg.host).is_ok().then_some(()))
        })
        .with_context(|| reg.log())?;
        Ok(reg)
    }

    pub(crate) fn log(&self) -> String {
        std::fs::read_to_string(self.dir.join("registry.log")).unwrap_or_default()
    }

    /// Pushes the busybox rootfs tar as `<host>/busybox:<tag>` (an OCI image) with skopeo.
    pub(crate) fn push_busybox(&self, tar: &Path, tag: &str, creds: Option<&str>) -> Result<()> {
        self.push(tar, tag, creds, false)
    }

    /// With `multi`, the pushed tag is an OCI index: an arm64 image listed before the
    /// amd64 one, so only platform selection pulls the right one.
    fn push(&self, tar: &Path, tag: &str, creds: Option<&str>, multi: bool) -> Result<()> {
        let layout = self.dir.join(if multi { "oci-multi" } else { "oci" });
        write_oci_layout(tar, &layout, multi)?;
        let mut cmd = Command::new(SKOPEO);
        cmd.args(["--insecure-policy", "copy", "--dest-tls-verify=false"]);
        if multi {
            cmd.arg("--multi-arch=all");
        }
        if let Some(c) = creds {
            cmd.args(["--dest-creds", c]);
        }
        cmd.arg(format!("oci:{}:latest", layout.display()))
            .arg(format!("docker://{}/busybox:{tag}", self.host));
        run(&mut cmd).with_context(|| self.log())?;
        Ok(())
    }

    /// The registry's file for a blob (distribution's filesystem layout).
    /// The digest of the busybox layer the registry holds (from the pushed OCI layout).
    pub(crate) fn layer_digest(&self) -> Result<String> {
        let layout = self.dir.join("oci");
        let index: serde_json::Value =
            serde_json::from_slice(&std::fs::read(layout.join("index.json"))?)?;
        let man_digest = index["manifests"][0]["digest"].as_str().context("index")?;
        let man: serde_json::Value = serde_json::from_slice(&std::fs::read(
            layout
                .join("blobs/sha256")
                .join(man_digest.trim_start_matches("sha256:")),
        )?)?;
        Ok(man["layers"][0]["digest"]
            .as_str()
            .context("layer digest")?
            .to_string())
    }

    fn blob_path(&self, digest: &str) -> PathBuf {
        let hex = digest.trim_start_matches("sha256:");
        self.dir
            .join("storage/docker/registry/v2/blobs/sha256")
            .join(&hex[..2])
            .join(hex)
            .join("data")
    }
}

fn sha256_file(path: &Path) -> Result<String> {
    let out = run(Command::new("sha256sum").arg(path))?;
    let hex = out.split_whitespace().next().context("sha256sum output")?;
    Ok(format!("sha256:{hex}"))
}

fn write_blob(layout: &Path, data: &[u8]) -> Result<(String, usize)> {
    let tmp = layout.join("blob.tmp");
    std::fs::write(&tmp, data)?;
    let digest = sha256_file(&tmp)?;
    let dest = layout
        .join("blobs/sha256")
        .join(digest.trim_start_matches("sha256:"));
    std::fs::rename(&tmp, dest)?;
    Ok((digest, data.len()))
}

/// An OCI image layout: gzip layer, config, manifest, index with ref name `latest`
/// (with `multi`, `latest` names an image index of an arm64 and an amd64 image).
pub(crate) fn write_oci_layout(tar: &Path, layout: &Path, multi: bool) -> Result<()> {
    std::fs::create_dir_all(layout.join("blobs/sha256"))?;
    let diff_id = sha256_file(tar)?;
    let gz = Command::new("gzip")
        .args(["-n", "-c"])
        .arg(tar)
        .output()
        .context("gzip the layer")?;
    ensure!(gz.status.success(), "gzip failed");
    let (layer, layer_size) = write_blob(layout, &gz.stdout)?;
    let image = |arch: &str| -> Result<(String, usize)> {
        let config = serde_json::json!({
            "architecture": arch, "os": "linux",
            "config": {"Env": ["PATH=/usr/local/sbin:/usr/local/bin:/usr/sbin:/usr/bin:/sbin:/bin"], "Cmd": ["sh"]},
            "rootfs": {"type": "layers", "diff_ids": [diff_id]},
        });
        let (cfg, cfg_size) = write_blob(layout, config.to_string().as_bytes())?;
        let manifest = serde_json::json!({
            "schemaVersion": 2, "mediaType": "application/vnd.oci.image.manifest.v1+json",
            "config": {"mediaType": "application/vnd.oci.image.config.v1+json", "digest": cfg, "size": cfg_size},
            "layers": [{"mediaType": "application/vnd.oci.image.layer.v1.tar+gzip", "digest": layer, "size": layer_size}],
        });
        write_blob(layout, manifest.to_string().as_bytes())
    };
    let (man, man_size) = image("amd64")?;
    let mut top = serde_json::json!({"mediaType": "application/vnd.oci.image.manifest.v1+json",
                                     "digest": man, "size": man_size});
    if multi {
        let (arm, arm_size) = image("arm64")?;
        let list = serde_json::json!({
            "schemaVersion": 2, "mediaType": "application/vnd.oci.image.index.v1+json",
            "manifests": [
                {"mediaType": "application/vnd.oci.image.manifest.v1+json", "digest": arm, "size": arm_size,
                 "platform": {"architecture": "arm64", "os": "linux"}},
                {"mediaType": "application/vnd.oci.image.manifest.v1+json", "digest": man, "size": man_size,
                 "platform": {"architecture": "amd64", "os": "linux"}},
            ],
        });
        let (idx, idx_size) = write_blob(layout, list.to_string().as_bytes())?;
        top = serde_json::json!({"mediaType": "application/vnd.oci.image.index.v1+json",
                                 "digest": idx, "size": idx_size});
    }
    top["annotations"] = serde_json::json!({"org.opencontainers.image.ref.name": "latest"});
    let index = serde_json::json!({"schemaVersion": 2, "manifests": [top]});
    std::fs::write(layout.join("index.json"), index.to_string())?;
    std::fs::write(
        layout.join("oci-layout"),
        r#"{"imageLayoutVersion":"1.0.0"}"#,
    )?;
    Ok(())
}

/// `Digest: sha256:...` from docker pull's output.
fn pulled_digest(out: &str) -> Result<String> {
    out.lines()
        .find_map(|l| l.strip_prefix("Digest: "))
        .map(str::to_string)
        .with_context(|| format!("no Digest line in:\n{out}"))
}

fn pull_and_run() -> Result<()> {
    let s = Stack::start()?;
    let reg = Registry::start(&s.dir, None)?;
    reg.push_busybox(&s.busybox_tar()?, "latest", None)?;
    let image = format!("{}/busybox", reg.host);
    let out = s.docker(&["pull", &image])?.ok()?;
    expect_contains("pull", &out.stdout, "Pull complete")?;
    expect_contains(
        "pull",
        &out.stdout,
        &format!("Status: Downloaded newer image for {image}:latest"),
    )?;
    let digest = pulled_digest(&out.stdout)?;
    let out = s.docker(&["run", "--rm", &image, "echo", "pulled"])?.ok()?;
    ensure!(out.stdout == "pulled\n", "run stdout {:?}", out.stdout);
    let out = s.docker(&["pull", &image])?.ok()?;
    expect_contains("second pull", &out.stdout, "Image is up to date")?;
    let by_digest = format!("{image}@{digest}");
    s.docker(&["pull", &by_digest])?.ok()?;
    let out = s
        .docker(&["run", "--rm", &by_digest, "echo", "by digest"])?
        .ok()?;
    ensure!(out.stdout == "by digest\n", "run stdout {:?}", out.stdout);
    // An index: the amd64 entry is chosen although arm64 is listed first.
    reg.push(&s.busybox_tar()?, "multi", None, true)?;
    let multi = format!("{image}:multi");
    s.docker(&["pull", &multi])?.ok()?;
    let arch = s
        .docker(&["image", "inspect", "--format", "{{.Architecture}}", &multi])?
        .ok()?;
    ensure!(
        arch.out() == "amd64",
        "pulled architecture {:?}",
        arch.out()
    );
    let out = s.docker(&["run", "--rm", &multi, "echo", "multi"])?.ok()?;
    ensure!(out.stdout == "multi\n", "run stdout {:?}", out.stdout);
    let out = s.docker(&["pull", &format!("{image}:nope")])?;
    ensure!(out.code != 0, "pull of a missing tag succeeded: {out}");
    expect_contains("missing tag", &out.stderr, "not found")?;
    Ok(())
}

fn basic_auth() -> Result<()> {
    let s = Stack::start()?;
    let reg = Registry::start(&s.dir, Some(("berth", "s3cret")))?;
    reg.push_busybox(&s.busybox_tar()?, "latest", Some("berth:s3cret"))?;
    let image = format!("{}/busybox", reg.host);
    let out = s.docker(&["pull", &image])?;
    ensure!(out.code != 0, "anonymous pull succeeded: {out}");
    let out = s.docker(&["login", "-u", "berth", "-p", "wrong", &reg.host])?;
    ensure!(
        out.code != 0,
        "login with a wrong password succeeded: {out}"
    );
    expect_contains("bad login", &out.stderr, "401 Unauthorized")?;
    let out = s
        .docker(&["login", "-u", "berth", "-p", "s3cret", &reg.host])?
        .ok()?;
    expect_contains("login", &out.stdout, "Login Succeeded")?;
    s.docker(&["pull", &image])?.ok()?;
    let out = s.docker(&["run", "--rm", &image, "echo", "authed"])?.ok()?;
    ensure!(out.stdout == "authed\n", "run stdout {:?}", out.stdout);
    // Push with the stored login too.
    let mine = format!("{}/mine:authed", reg.host);
    s.docker(&["tag", &image, &mine])?.ok()?;
    let out = s.docker(&["push", &mine])?.ok()?;
    expect_contains("authed push", &out.stdout, "authed: digest: sha256:")?;
    Ok(())
}

fn corrupt_blob() -> Result<()> {
    let s = Stack::start()?;
    let reg = Registry::start(&s.dir, None)?;
    reg.push_busybox(&s.busybox_tar()?, "latest", None)?;
    // Flip bytes of the layer in the registry's storage: same size, other digest.
    let path = reg.blob_path(&reg.layer_digest()?);
    let mut data = std::fs::read(&path).with_context(|| format!("read {}", path.display()))?;
    let mid = data.len() / 2;
    data[mid] ^= 0xff;
    std::fs::write(&path, data)?;
    let image = format!("{}/busybox", reg.host);
    let out = s.docker(&["pull", &image])?;
    ensure!(out.code != 0, "pull of a corrupt layer succeeded: {out}");
    expect_contains("corrupt pull", &out.stderr, "digest mismatch")?;
    let images = s.docker(&["images", "-q"])?.ok()?;
    ensure!(
        images.stdout.trim().is_empty(),
        "a failed pull left an image: {}",
        images.stdout
    );
    Ok(())
}

fn push_then_pull() -> Result<()> {
    let s = Stack::with_busybox()?;
    let reg = Registry::start(&s.dir, None)?;
    let image = format!("{}/mine:1", reg.host);
    s.docker(&["tag", "busybox", &image])?.ok()?;
    let out = s.docker(&["push", &image])?.ok()?;
    expect_contains("push", &out.stdout, "Pushed")?;
    expect_contains("push", &out.stdout, "1: digest: sha256:")?;
    let out = s.docker(&["push", &image])?.ok()?;
    expect_contains("second push", &out.stdout, "Layer already exists")?;
    let other = Stack::start()?;
    other.docker(&["pull", &image])?.ok()?;
    let out = other
        .docker(&["run", "--rm", &image, "echo", "round trip"])?
        .ok()?;
    ensure!(out.stdout == "round trip\n", "run stdout {:?}", out.stdout);
    let local = s
        .docker(&["image", "inspect", "--format", "{{.Id}}", &image])?
        .ok()?;
    let pulled = other
        .docker(&["image", "inspect", "--format", "{{.Id}}", &image])?
        .ok()?;
    ensure!(
        local.out() == pulled.out(),
        "image ID changed: {} vs {}",
        local.out(),
        pulled.out()
    );
    Ok(())
}
