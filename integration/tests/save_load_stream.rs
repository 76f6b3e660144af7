//! Streaming `docker save` / `docker load` through the real docker CLI: a multi-layer
//! image round trip loaded from stdin, gzip and docker-archive-only variants, and a
//! corrupted blob refused with nothing left behind.

use std::io::{Read, Seek, SeekFrom, Write};
use std::process::Command;
use std::time::Duration;

use anyhow::{ensure, Context, Result};
use berth_integration::{wait_until, Stack};

use crate::build::nothing_left;
use crate::common::{expect_contains, Spec, DOCKER};

pub fn tests() -> Vec<Spec> {
    vec![Spec {
        name: "save_load_stream::multi_layer_round_trip_stdin_gzip_and_corrupt_blob",
        needs: DOCKER,
        run: round_trip,
    }]
}

fn commit_layer(s: &Stack, from: &str, file: &str, to: &str) -> Result<()> {
    let cmd = format!("echo {file} > /{file}");
    s.docker(&["run", "--name", "ml", from, "sh", "-c", &cmd])?
        .ok()?;
    s.docker(&["commit", "ml", to])?.ok()?;
    s.docker(&["rm", "ml"])?.ok()?;
    Ok(())
}

fn check_runs(s: &Stack, what: &str) -> Result<()> {
    let out = s
        .docker(&["run", "--rm", "ml:2", "cat", "/one", "/two"])?
        .ok()?;
    ensure!(out.stdout == "one\ntwo\n", "{what}: {:?}", out.stdout);
    Ok(())
}

/// The offset and size of the biggest regular file's data in a tar.
fn biggest_file(tar: &std::path::Path) -> Result<(String, u64, u64)> {
    let mut best = (String::new(), 0, 0);
    for e in tar::Archive::new(std::fs::File::open(tar)?).entries()? {
        let e = e?;
        if e.size() > best.2 {
            best = (
                e.path()?.to_string_lossy().into_owned(),
                e.raw_file_position(),
                e.size(),
            );
        }
    }
    Ok(best)
}

fn content_list(s: &Stack) -> Result<String> {
    let out = Command::new("ctr")
        .arg("--address")
        .arg(s.highd_sock())
        .args(["-n", "berth", "content", "ls", "-q"])
        .output()
        .context("run ctr")?;
    Ok(String::from_utf8_lossy(&out.stdout).into_owned())
}

fn round_trip() -> Result<()> {
    let s = Stack::with_busybox()?;
    commit_layer(&s, "busybox", "one", "ml:1")?;
    commit_layer(&s, "ml:1", "two", "ml:2")?;
    let id = s
        .docker(&["inspect", "-f", "{{.Id}}", "ml:2"])?
        .ok()?
        .out()
        .to_string();
    let archive = s.dir.join("ml.tar");
    s.docker(&["save", "-o", &archive.to_string_lossy(), "ml:2"])?
        .ok()?;
    s.docker(&["rmi", "ml:2", "ml:1"])?.ok()?;

    // From stdin, as `docker save | docker load` does.
    let out = s.docker_with_stdin(&["load"], Some(&archive))?.ok()?;
    expect_contains("docker load < archive", &out.stdout, "Loaded image: ml:2")?;
    let again = s
        .docker(&["inspect", "-f", "{{.Id}}", "ml:2"])?
        .ok()?
        .out()
        .to_string();
    ensure!(
        again == id,
        "image ID changed over save/load: {id} -> {again}"
    );
    check_runs(&s, "loaded from stdin")?;

    // gzip-compressed, and a docker-archive without the OCI layout's files.
    let gz = s.dir.join("ml.tar.gz");
    let status = Command::new("sh")
        .arg("-c")
        .arg(format!(
            "gzip -c '{}' > '{}'",
            archive.display(),
            gz.display()
        ))
        .status()?;
    ensure!(status.success(), "gzip failed");
    s.docker(&["rmi", "ml:2"])?.ok()?;
    let out = s.docker(&["load", "-i", &gz.to_string_lossy()])?.ok()?;
    expect_contains("docker load (gzip)", &out.stdout, "Loaded image: ml:2")?;
    check_runs(&s, "loaded from gzip")?;

    // One flipped byte in the biggest blob: refused, and no image or blob of this load
    // stays behind.
    s.docker(&["rmi", "ml:2"])?.ok()?;
    let (path, offset, size) = biggest_file(&archive)?;
    let bad = s.dir.join("bad.tar");
    std::fs::copy(&archive, &bad)?;
    let mut f = std::fs::OpenOptions::new()
        .read(true)
        .write(true)
        .open(&bad)?;
    f.seek(SeekFrom::Start(offset + size / 2))?;
    let mut b = [0u8; 1];
    f.read_exact(&mut b)?;
    f.seek(SeekFrom::Start(offset + size / 2))?;
    f.write_all(&[b[0] ^ 0xff])?;
    drop(f);
    let before = content_list(&s)?;
    let out = s.docker(&["load", "-i", &bad.to_string_lossy()])?;
    ensure!(out.code != 0, "a corrupted archive loaded: {}", out.stdout);
    expect_contains("corrupted archive", &out.stderr, "invalid image archive")?;
    expect_contains("corrupted archive", &out.stderr, &path)?;
    let images = s.docker(&["images", "-a", "-q"])?.ok()?;
    let busybox = s.docker(&["images", "-q", "busybox"])?.ok()?;
    ensure!(
        images.out() == busybox.out(),
        "images left by a failed load: {}",
        images.stdout
    );
    wait_until(
        "the failed load's blobs collected",
        Duration::from_secs(10),
        || {
            let now = content_list(&s)?;
            let extra: Vec<&str> = now.lines().filter(|l| !before.contains(l)).collect();
            Ok(extra.is_empty().then_some(()))
        },
    )?;
    nothing_left(&s)
}
