//! Images beyond plain gzip over HTTP: zstd-compressed layers (pulled from the test
//! registry and loaded from an OCI layout), registries behind HTTPS with a private CA,
//! and pulls that survive an engine restart or a connection cut mid-blob. The registry
//! is Debian's `docker-registry` on 127.0.0.1 (see registry.rs); skopeo recompresses.

use std::io::{Read, Write};
use std::net::{Shutdown, TcpListener, TcpStream};
use std::path::Path;
use std::process::{Child, Command, Stdio};
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::Arc;
use std::time::Duration;

use anyhow::{ensure, Context, Result};
use berth_integration::stack::Daemon;
use berth_integration::{wait_until, Stack};
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
        Spec {
            name: "registry_more::engine_killed_mid_pull_leaves_nothing_and_retry_works",
            needs: NEEDS,
            run: killed_mid_pull,
        },
        Spec {
            name: "registry_more::blob_download_cut_midway_resumes_with_range",
            needs: NEEDS,
            run: resumed_download,
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
pub fn make_certs(dir: &Path, ip: &str) -> Result<()> {
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

    // The same from daemon.json's "insecure-registries"; with the flag too, the engine
    // refuses to start, as dockerd does.
    s.docker(&["rmi", &mine])?.ok()?;
    s.stop_daemon(Daemon::Engine, Signal::SIGTERM)?;
    let file = s.dir.join("daemon.json");
    std::fs::write(
        &file,
        serde_json::json!({ "insecure-registries": [reg.host] }).to_string(),
    )?;
    let both = Command::new(berth_integration::stack::bin_dir()?.join("berth-engine"))
        .args(["--config-file".as_ref(), file.as_os_str()])
        .args(["--insecure-registry", &reg.host])
        .output()?;
    ensure!(!both.status.success(), "engine started with flag and file");
    expect_contains(
        "flag and file",
        &String::from_utf8_lossy(&both.stderr),
        "the following directives are specified both as a flag and in the configuration file: insecure-registries",
    )?;
    let n = s.engine_args.len();
    s.engine_args.truncate(n - 2);
    s.engine_args
        .extend(["--config-file".into(), file.display().to_string()]);
    s.start_daemon(Daemon::Engine)?;
    s.docker(&["pull", &mine])?.ok()?;
    Ok(())
}

/// A loopback proxy in front of the registry that, while `stall` is set, forwards the
/// first 64 KiB of the answer for one blob and then holds the connection (with `cut`,
/// closes it instead, once). `ranged` tells whether a Range request for it came.
struct Proxy {
    host: String,
    stall: Arc<AtomicBool>,
    stalled: Arc<AtomicBool>,
    ranged: Arc<AtomicBool>,
    stop: Arc<AtomicBool>,
}

struct Flags {
    stall: Arc<AtomicBool>,
    stalled: Arc<AtomicBool>,
    ranged: Arc<AtomicBool>,
    stop: Arc<AtomicBool>,
    cut: bool,
}

impl Drop for Proxy {
    fn drop(&mut self) {
        self.stop.store(true, Ordering::SeqCst);
        self.stall.store(false, Ordering::SeqCst);
        // Wakes the accept loop so its thread ends.
        let _ = TcpStream::connect(&self.host);
    }
}

impl Proxy {
    fn start(upstream: &str, blob: &str, cut: bool) -> Result<Proxy> {
        let listener = TcpListener::bind("127.0.0.1:0")?;
        let proxy = Proxy {
            host: listener.local_addr()?.to_string(),
            stall: Arc::new(AtomicBool::new(true)),
            stalled: Arc::new(AtomicBool::new(false)),
            ranged: Arc::new(AtomicBool::new(false)),
            stop: Arc::new(AtomicBool::new(false)),
        };
        let (upstream, blob) = (upstream.to_string(), blob.to_string());
        let flags = || Flags {
            stall: proxy.stall.clone(),
            stalled: proxy.stalled.clone(),
            ranged: proxy.ranged.clone(),
            stop: proxy.stop.clone(),
            cut,
        };
        let shared = Arc::new(flags());
        std::thread::spawn(move || {
            for conn in listener.incoming() {
                if shared.stop.load(Ordering::SeqCst) {
                    return;
                }
                let Ok(conn) = conn else { continue };
                let (upstream, blob, f) = (upstream.clone(), blob.clone(), shared.clone());
                std::thread::spawn(move || {
                    let _ = relay(conn, &upstream, &blob, &f);
                });
            }
        });
        Ok(proxy)
    }
}

fn relay(mut client: TcpStream, upstream: &str, blob: &str, f: &Flags) -> Result<()> {
    let (stall, stalled, stop) = (&*f.stall, &*f.stalled, &*f.stop);
    let Some(head) = berth_integration::http::read_request_head(&mut client)? else {
        return Ok(());
    };
    let mut buf = [0u8; 8192];
    let text = String::from_utf8_lossy(&head).to_ascii_lowercase();
    let line = text.lines().next().unwrap_or("").to_string();
    if line.contains(blob) && text.contains("\r\nrange: bytes=") {
        f.ranged.store(true, Ordering::SeqCst);
    }
    let held = line.contains(blob) && stall.load(Ordering::SeqCst);
    let mut server = TcpStream::connect(upstream)?;
    server.write_all(&head)?;
    let mut sent = 0usize;
    loop {
        let n = server.read(&mut buf)?;
        if n == 0 {
            break;
        }
        client.write_all(&buf[..n])?;
        sent += n;
        if held && sent >= 64 << 10 {
            stalled.store(true, Ordering::SeqCst);
            if f.cut {
                stall.store(false, Ordering::SeqCst);
            }
            while stall.load(Ordering::SeqCst) && !stop.load(Ordering::SeqCst) {
                std::thread::sleep(Duration::from_millis(20));
            }
            break;
        }
    }
    let _ = client.shutdown(Shutdown::Both);
    Ok(())
}

/// `docker pull` in the background, killed by PID if still running when dropped.
struct Background(Child);

impl Drop for Background {
    fn drop(&mut self) {
        let _ = self.0.kill();
        let _ = self.0.wait();
    }
}

fn leases(s: &Stack) -> Result<Vec<String>> {
    let out = run(Command::new("ctr")
        .arg("--address")
        .arg(s.highd_sock())
        .args(["--namespace", "berth", "leases", "ls", "-q"]))?;
    Ok(out.lines().map(str::to_string).collect())
}

/// The pull's lease keeps what it wrote from highd's GC; an engine killed mid-pull
/// leaves no image; the retry (and a failing pull) delete their leases at the end.
fn killed_mid_pull() -> Result<()> {
    let mut s = Stack::start()?;
    let reg = Registry::start(&s.dir, None)?;
    reg.push_busybox(&s.busybox_tar()?, "latest", None)?;
    let layer = &reg.layer_digest()?;
    let proxy = Proxy::start(&reg.host, layer, false)?;
    let image = format!("{}/busybox", proxy.host);
    let cli = berth_integration::prereq::docker_cli().context("docker CLI")?;
    let pull = Background(
        Command::new(cli)
            .args(["pull", &image])
            .env("DOCKER_HOST", s.engine_host())
            .env("DOCKER_CONFIG", s.dir.join("dc"))
            .stdout(Stdio::null())
            .stderr(Stdio::null())
            .spawn()?,
    );
    wait_until(
        "the layer download to stall",
        Duration::from_secs(30),
        || Ok(proxy.stalled.load(Ordering::SeqCst).then_some(())),
    )?;
    let held = leases(&s)?;
    ensure!(
        held.len() == 1 && held[0].starts_with("berth-engine-pull-"),
        "leases during the pull: {held:?}"
    );
    s.kill_daemon(Daemon::Engine)?;
    drop(pull);
    s.start_daemon(Daemon::Engine)?;
    // The new engine deletes the lease the killed one left.
    wait_until("the stale lease to go", Duration::from_secs(20), || {
        Ok(leases(&s)?.is_empty().then_some(()))
    })?;
    let images = s.docker(&["images", "-q"])?.ok()?;
    ensure!(
        images.stdout.trim().is_empty(),
        "half-pulled image: {}",
        images.stdout
    );

    proxy.stall.store(false, Ordering::SeqCst);
    s.docker(&["pull", &image])?.ok()?;
    // What highd's ingest kept of the killed engine's download is not fetched again.
    ensure!(
        proxy.ranged.load(Ordering::SeqCst),
        "the retry after the restart did not resume with a Range request"
    );
    let out = s
        .docker(&["run", "--rm", &image, "echo", "resumed"])?
        .ok()?;
    ensure!(out.stdout == "resumed\n", "run stdout {:?}", out.stdout);
    let out = s.docker(&["pull", &format!("{image}:nope")])?;
    ensure!(out.code != 0, "pull of a missing tag succeeded: {out}");
    let left = leases(&s)?;
    ensure!(left.is_empty(), "leases after the retry: {left:?}");
    Ok(())
}

/// The registry connection dies mid-blob once: the download resumes with a Range
/// request from where it broke, and the pull succeeds.
fn resumed_download() -> Result<()> {
    let s = Stack::start()?;
    let reg = Registry::start(&s.dir, None)?;
    reg.push_busybox(&s.busybox_tar()?, "latest", None)?;
    let proxy = Proxy::start(&reg.host, &reg.layer_digest()?, true)?;
    let image = format!("{}/busybox", proxy.host);
    let out = s.docker(&["pull", &image])?.ok()?;
    expect_contains("resumed pull", &out.stdout, "Pull complete")?;
    ensure!(
        proxy.stalled.load(Ordering::SeqCst),
        "the proxy never cut the blob"
    );
    ensure!(
        proxy.ranged.load(Ordering::SeqCst),
        "the retry was not a Range request"
    );
    let out = s
        .docker(&["run", "--rm", &image, "echo", "resumed"])?
        .ok()?;
    ensure!(out.stdout == "resumed\n", "run stdout {:?}", out.stdout);
    Ok(())
}
