//! `docker push` details against Debian's `docker-registry` on loopback: `push -a` of
//! every tag, the errors for missing tags, cross-repository blob mounts, and a large
//! layer uploaded in PATCHed chunks. The registry's access log shows which requests came.

use std::io::{Read, Write};
use std::net::TcpListener;
use std::process::Command;
use std::sync::{Arc, Mutex};

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
        Spec {
            name: "registry::push_to_a_failing_registry_sends_no_manifest",
            needs: REGISTRY_NEEDS,
            run: failing_registry,
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
    // Pulled blobs are known in their repository too: pushing them elsewhere mounts them.
    reg.push_busybox(&s.busybox_tar()?, "latest", None)?;
    let pulled = format!("{}/busybox:latest", reg.host);
    s.docker(&["pull", &pulled])?.ok()?;
    let three = format!("{}/three:1", reg.host);
    s.docker(&["tag", &pulled, &three])?.ok()?;
    let out = s.docker(&["push", &three])?.ok()?;
    expect_contains(
        "push of a pulled image",
        &out.stdout,
        "Mounted from busybox",
    )?;
    Ok(())
}

/// A fake registry on loopback: blobs are missing, uploads open, and every blob PUT is
/// answered 500. Records the request lines it got.
fn failing_registry() -> Result<()> {
    let s = Stack::with_busybox()?;
    let listener = TcpListener::bind("127.0.0.1:0")?;
    let host = listener.local_addr()?.to_string();
    let seen = Arc::new(Mutex::new(Vec::<String>::new()));
    let log = seen.clone();
    listener.set_nonblocking(false)?;
    let server = std::thread::spawn(move || {
        for conn in listener.incoming() {
            let Ok(mut conn) = conn else { continue };
            let mut buf = [0u8; 65536];
            let Ok(n) = conn.read(&mut buf) else { continue };
            // The engine tries HTTPS first on loopback: a TLS hello gets the connection closed.
            if n == 0 || buf[0] == 0x16 {
                continue;
            }
            let line = String::from_utf8_lossy(&buf[..n])
                .lines()
                .next()
                .unwrap_or("")
                .to_string();
            // Reads the whole body first: closing on unread bytes would reset the
            // connection before the engine reads the answer.
            let head = String::from_utf8_lossy(&buf[..n]).to_ascii_lowercase();
            let length: usize = head
                .split("\r\ncontent-length:")
                .nth(1)
                .and_then(|r| r.split("\r\n").next())
                .and_then(|v| v.trim().parse().ok())
                .unwrap_or(0);
            let body_start = head.find("\r\n\r\n").map_or(n, |i| i + 4);
            let mut left = (length + body_start).saturating_sub(n);
            while left > 0 {
                match conn.read(&mut buf) {
                    Ok(0) | Err(_) => break,
                    Ok(k) => left = left.saturating_sub(k),
                }
            }

            if line.starts_with("STOP") {
                return;
            }
            let answer = if line.starts_with("HEAD ") {
                "HTTP/1.1 404 Not Found\r\nContent-Length: 0\r\n\r\n".to_string()
            } else if line.starts_with("POST ") {
                "HTTP/1.1 202 Accepted\r\nLocation: /v2/bad/blobs/uploads/u1\r\nContent-Length: 0\r\n\r\n".to_string()
            } else {
                "HTTP/1.1 500 Internal Server Error\r\nContent-Length: 7\r\n\r\ngarbage".to_string()
            };
            log.lock().unwrap().push(line);
            let _ = conn.write_all(answer.as_bytes());
        }
    });
    let image = format!("{host}/bad:1");
    s.docker(&["tag", "busybox", &image])?.ok()?;
    let out = s.docker(&["push", &image]);
    let _ = std::net::TcpStream::connect(&host).and_then(|mut c| c.write_all(b"STOP\r\n\r\n"));
    let _ = server.join();
    let out = out?.expect_code(1)?;
    expect_contains(
        "push to a failing registry",
        &out.stderr,
        "received unexpected HTTP status: 500 Internal Server Error",
    )?;
    let seen = seen.lock().unwrap();
    ensure!(
        !seen.iter().any(|l| l.contains("/manifests/")),
        "manifest sent although blobs failed: {seen:?}"
    );
    Ok(())
}
