//! Pulls of a multi-layer image: layers download concurrently up to
//! `max-concurrent-downloads` (dockerd's default 3, or daemon.json's value), with
//! dockerd's per-layer progress lines, and Docker Hub references go to a configured
//! `registry-mirrors` entry first. A relaying proxy in front of the loopback registry
//! holds every blob answer a moment and counts how many are in flight at once.

use std::io::{Read, Write};
use std::net::{Shutdown, TcpListener, TcpStream};
use std::sync::atomic::{AtomicBool, AtomicUsize, Ordering};
use std::sync::Arc;
use std::time::Duration;

use anyhow::{ensure, Result};
use berth_integration::Stack;

use crate::common::{expect_contains, Spec};
use crate::registry::Registry;
use berth_integration::prereq::Need;

const NEEDS: &[Need] = &[Need::Root, Need::Busybox, Need::Docker, Need::Registry];

pub fn tests() -> Vec<Spec> {
    vec![
        Spec {
            name: "registry_pull::layers_download_concurrently_with_per_layer_progress",
            needs: NEEDS,
            run: concurrent_default,
        },
        Spec {
            name: "registry_pull::max_concurrent_downloads_from_daemon_json",
            needs: NEEDS,
            run: concurrent_one,
        },
        Spec {
            name: "registry_pull::docker_hub_reference_comes_from_the_mirror",
            needs: NEEDS,
            run: mirror,
        },
    ]
}

/// Relays to the registry; blob GETs wait `HOLD` before their answer is relayed, so
/// downloads that run concurrently overlap there.
struct Proxy {
    host: String,
    in_flight: Arc<AtomicUsize>,
    most: Arc<AtomicUsize>,
    stop: Arc<AtomicBool>,
}

const HOLD: Duration = Duration::from_millis(400);

impl Drop for Proxy {
    fn drop(&mut self) {
        self.stop.store(true, Ordering::SeqCst);
        // Wakes the accept loop so its thread ends.
        let _ = TcpStream::connect(&self.host);
    }
}

impl Proxy {
    fn start(upstream: &str) -> Result<Proxy> {
        let listener = TcpListener::bind("127.0.0.1:0")?;
        let proxy = Proxy {
            host: listener.local_addr()?.to_string(),
            in_flight: Arc::default(),
            most: Arc::default(),
            stop: Arc::default(),
        };
        let (in_flight, most, stop) = (
            proxy.in_flight.clone(),
            proxy.most.clone(),
            proxy.stop.clone(),
        );
        let upstream = upstream.to_string();
        std::thread::spawn(move || {
            for conn in listener.incoming() {
                if stop.load(Ordering::SeqCst) {
                    return;
                }
                let Ok(conn) = conn else { continue };
                let (upstream, in_flight, most) =
                    (upstream.clone(), in_flight.clone(), most.clone());
                std::thread::spawn(move || {
                    let _ = relay(conn, &upstream, &in_flight, &most);
                });
            }
        });
        Ok(proxy)
    }

    fn most(&self) -> usize {
        self.most.load(Ordering::SeqCst)
    }
}

/// Relays one request and its answer.
fn relay(
    mut client: TcpStream,
    upstream: &str,
    in_flight: &AtomicUsize,
    most: &AtomicUsize,
) -> Result<()> {
    let Some(mut head) = berth_integration::http::read_request_head(&mut client)? else {
        return Ok(());
    };
    let mut buf = [0u8; 8192];
    let line = String::from_utf8_lossy(&head)
        .lines()
        .next()
        .unwrap_or("")
        .to_string();
    let blob = line.starts_with("GET ") && line.contains("/blobs/sha256:");
    if blob {
        let now = in_flight.fetch_add(1, Ordering::SeqCst) + 1;
        most.fetch_max(now, Ordering::SeqCst);
        std::thread::sleep(HOLD);
    }
    // The registry closes the connection after this answer, so a download is in
    // flight until its last byte, not for as long as a kept-alive connection idles.
    let end = head.windows(4).position(|w| w == b"\r\n\r\n").unwrap_or(0) + 2;
    head.splice(end..end, b"Connection: close\r\n".iter().copied());
    let relayed = (|| -> Result<()> {
        let mut server = TcpStream::connect(upstream)?;
        server.write_all(&head)?;
        loop {
            let n = server.read(&mut buf)?;
            if n == 0 {
                return Ok(());
            }
            client.write_all(&buf[..n])?;
        }
    })();
    if blob {
        in_flight.fetch_sub(1, Ordering::SeqCst);
    }
    let _ = client.shutdown(Shutdown::Both);
    relayed
}

/// Builds a busybox image with three layers of its own in a stack of its own and
/// pushes it to `reg` as `<reg>/<repo>`, so a pull into another stack downloads those
/// three layers and finds busybox's already there.
fn push_three_layers(reg: &Registry, repo: &str) -> Result<()> {
    let s = Stack::with_busybox()?;
    let ctx = s.dir.join("ctx");
    std::fs::create_dir_all(&ctx)?;
    let mut dockerfile = String::from("FROM busybox\n");
    for f in ["a", "b", "c"] {
        dockerfile.push_str(&format!(
            "RUN dd if=/dev/urandom of=/{f} bs=1024 count=256 2>/dev/null\n"
        ));
    }
    std::fs::write(ctx.join("Dockerfile"), dockerfile)?;
    let image = format!("{}/{repo}", reg.host);
    s.docker(&["build", "-q", "-t", &image, &ctx.to_string_lossy()])?
        .ok()?;
    s.docker(&["push", &image])?.ok()?;
    Ok(())
}

/// Pulls `<proxy>/<repo>` and checks the result runs; returns the CLI's output.
fn pull_and_run(s: &Stack, proxy: &Proxy, repo: &str) -> Result<String> {
    let image = format!("{}/{repo}", proxy.host);
    let out = s.docker(&["pull", &image])?.ok()?;
    let ls = s
        .docker(&["run", "--rm", &image, "ls", "/a", "/b", "/c"])?
        .ok()?;
    ensure!(ls.stdout == "/a\n/b\n/c\n", "layers in the image: {ls}");
    Ok(out.stdout)
}

fn concurrent_default() -> Result<()> {
    let s = Stack::with_busybox()?;
    let reg = Registry::start(&s.dir, None)?;
    push_three_layers(&reg, "three")?;
    let proxy = Proxy::start(&reg.host)?;
    let out = pull_and_run(&s, &proxy, "three")?;
    for status in [
        "Already exists",
        "Pulling fs layer",
        "Verifying Checksum",
        "Download complete",
        "Pull complete",
        "Digest: sha256:",
        "Status: Downloaded newer image for",
    ] {
        expect_contains("pull output", &out, status)?;
    }
    ensure!(
        out.matches(": Pull complete").count() == 3,
        "three layers complete: {out}"
    );
    ensure!(
        !out.contains("Waiting"),
        "three layers wait for nothing under the default of 3: {out}"
    );
    ensure!(
        proxy.most() >= 2,
        "blob downloads never overlapped ({} at most)",
        proxy.most()
    );
    Ok(())
}

fn concurrent_one() -> Result<()> {
    let conf = tempfile::tempdir()?;
    let file = conf.path().join("daemon.json");
    std::fs::write(&file, r#"{"max-concurrent-downloads": 1}"#)?;
    let s = Stack::with_busybox_args(vec![
        "--config-file".into(),
        file.to_string_lossy().into_owned(),
    ])?;
    let reg = Registry::start(&s.dir, None)?;
    push_three_layers(&reg, "one")?;
    let proxy = Proxy::start(&reg.host)?;
    let out = pull_and_run(&s, &proxy, "one")?;
    ensure!(
        out.matches(": Waiting").count() == 2,
        "two layers wait for the first: {out}"
    );
    ensure!(
        proxy.most() == 1,
        "{} blob downloads at once with max-concurrent-downloads 1",
        proxy.most()
    );
    Ok(())
}

/// `registry-mirrors` on the proxy: `docker pull library/three` (a Docker Hub
/// reference) is served by the mirror; nothing goes to Docker Hub.
fn mirror() -> Result<()> {
    let conf = tempfile::tempdir()?;
    let reg = Registry::start(conf.path(), None)?;
    push_three_layers(&reg, "library/three")?;
    let proxy = Proxy::start(&reg.host)?;
    let file = conf.path().join("daemon.json");
    std::fs::write(
        &file,
        format!(r#"{{"registry-mirrors": ["http://{}"]}}"#, proxy.host),
    )?;
    let s = Stack::with_busybox_args(vec![
        "--config-file".into(),
        file.to_string_lossy().into_owned(),
    ])?;
    let out = s.docker(&["pull", "three"])?.ok()?;
    expect_contains("mirror pull", &out.stdout, "docker.io/library/three:latest")?;
    let ls = s
        .docker(&["run", "--rm", "three", "ls", "/a", "/b", "/c"])?
        .ok()?;
    ensure!(ls.stdout == "/a\n/b\n/c\n", "layers in the image: {ls}");
    ensure!(proxy.most() >= 1, "no blob came through the mirror");
    Ok(())
}
