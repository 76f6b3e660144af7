//! Streaming `docker save` / `docker load` through the real docker CLI: a multi-layer
//! image round trip loaded from stdin, gzip-, bzip2- and xz-compressed archives (made by
//! the real tools), a corrupted layer refused in dockerd's words with nothing left
//! behind, and a save whose reader goes away midway.

use std::io::{Read, Seek, SeekFrom, Write};
use std::process::Command;
use std::time::Duration;

use anyhow::{ensure, Context, Result};
use berth_integration::{wait_until, Stack};

use crate::build::nothing_left;
use crate::common::{expect_contains, Spec, DOCKER};

pub fn tests() -> Vec<Spec> {
    vec![
        Spec {
            name: "save_load_stream::multi_layer_round_trip_stdin_gzip_bzip2_xz_and_corrupt_layer",
            needs: DOCKER,
            run: round_trip,
        },
        Spec {
            name: "save_load_stream::save_cut_midway_leaves_the_engine_healthy",
            needs: DOCKER,
            run: save_cut_midway,
        },
    ]
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

/// Where `path` is in the manifest.json's layer list.
fn layer_index(tar: &std::path::Path, path: &str) -> Result<usize> {
    for e in tar::Archive::new(std::fs::File::open(tar)?).entries()? {
        let mut e = e?;
        if e.path()?.to_string_lossy() != "manifest.json" {
            continue;
        }
        let mut text = String::new();
        e.read_to_string(&mut text)?;
        let m: serde_json::Value = serde_json::from_str(&text)?;
        return m[0]["Layers"]
            .as_array()
            .and_then(|l| l.iter().position(|x| x == path))
            .with_context(|| format!("{path} is not a layer: {text}"));
    }
    anyhow::bail!("no manifest.json")
}

fn ctr(s: &Stack, args: &[&str]) -> Result<String> {
    let out = Command::new("ctr")
        .arg("--address")
        .arg(s.highd_sock())
        .args(["-n", "berth"])
        .args(args)
        .output()
        .context("run ctr")?;
    ensure!(
        out.status.success(),
        "ctr {args:?}: {}",
        String::from_utf8_lossy(&out.stderr)
    );
    Ok(String::from_utf8_lossy(&out.stdout).into_owned())
}

fn leases(s: &Stack) -> Result<Vec<String>> {
    Ok(ctr(s, &["leases", "ls", "-q"])?
        .lines()
        .map(str::to_string)
        .collect())
}

fn content_list(s: &Stack) -> Result<String> {
    ctr(s, &["content", "ls", "-q"])
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

    // Compressed by the real tools: load sniffs the magic, as dockerd does.
    for (tool, ext) in [("gzip", "gz"), ("bzip2", "bz2"), ("xz", "xz")] {
        let packed = s.dir.join(format!("ml.tar.{ext}"));
        let status = Command::new("sh")
            .arg("-c")
            .arg(format!(
                "{tool} -c '{}' > '{}'",
                archive.display(),
                packed.display()
            ))
            .status()?;
        ensure!(status.success(), "{tool} failed");
        s.docker(&["rmi", "ml:2"])?.ok()?;
        let out = s.docker(&["load", "-i", &packed.to_string_lossy()])?.ok()?;
        expect_contains(
            &format!("docker load ({tool})"),
            &out.stdout,
            "Loaded image: ml:2",
        )?;
        check_runs(&s, &format!("loaded from {tool}"))?;
    }

    // `docker import` of an xz-compressed rootfs, as dockerd takes it (stored as the tar).
    let rootfs = s.dir.join("rootfs.tar.xz");
    let status = Command::new("sh")
        .arg("-c")
        .arg(format!(
            "xz -c '{}' > '{}'",
            s.busybox_tar()?.display(),
            rootfs.display()
        ))
        .status()?;
    ensure!(status.success(), "xz failed");
    s.docker(&["import", &rootfs.to_string_lossy(), "imp:xz"])?
        .ok()?;
    let out = s
        .docker(&["run", "--rm", "imp:xz", "/bin/echo", "imported"])?
        .ok()?;
    ensure!(out.stdout == "imported\n", "xz import: {:?}", out.stdout);
    s.docker(&["rmi", "imp:xz"])?.ok()?;

    // One flipped byte in the biggest layer's file data: refused with dockerd's message,
    // and no image, blob or lease of this load stays behind.
    s.docker(&["rmi", "ml:2"])?.ok()?;
    let (path, offset, size) = biggest_file(&archive)?;
    let index = layer_index(&archive, &path)?;
    let bad = s.dir.join("bad.tar");
    std::fs::copy(&archive, &bad)?;
    let mut f = std::fs::OpenOptions::new()
        .read(true)
        .write(true)
        .open(&bad)?;
    let mut head = [0u8; 2];
    f.seek(SeekFrom::Start(offset))?;
    f.read_exact(&mut head)?;
    ensure!(
        head != [0x1f, 0x8b],
        "{path}: expected an uncompressed layer"
    );
    f.seek(SeekFrom::Start(offset + size / 2))?;
    let mut b = [0u8; 1];
    f.read_exact(&mut b)?;
    f.seek(SeekFrom::Start(offset + size / 2))?;
    f.write_all(&[b[0] ^ 0xff])?;
    drop(f);
    let before = content_list(&s)?;
    let out = s.docker(&["load", "-i", &bad.to_string_lossy()])?;
    ensure!(out.code != 0, "a corrupted archive loaded: {}", out.stdout);
    expect_contains(
        "corrupted archive",
        &out.stderr,
        &format!("invalid diffID for layer {index}: expected \"sha256:"),
    )?;
    let images = s.docker(&["images", "-a", "-q"])?.ok()?;
    let busybox = s.docker(&["images", "-q", "busybox"])?.ok()?;
    ensure!(
        images.out() == busybox.out(),
        "images left by a failed load: {}",
        images.stdout
    );
    ensure!(leases(&s)?.is_empty(), "leases left: {:?}", leases(&s)?);
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

/// `docker save | head -c 1M`: the CLI goes away with most of a 24 MB archive unread.
/// The engine stops streaming (nothing hangs, nothing is held), answers the next
/// requests, and the next save is whole and loads.
fn save_cut_midway() -> Result<()> {
    let s = Stack::with_busybox()?;
    s.docker(&[
        "run",
        "--name",
        "big",
        "busybox",
        "dd",
        "if=/dev/urandom",
        "of=/big",
        "bs=1M",
        "count=24",
    ])?
    .ok()?;
    s.docker(&["commit", "big", "big:1"])?.ok()?;
    s.docker(&["rm", "big"])?.ok()?;
    let before = content_list(&s)?;
    let cli = berth_integration::prereq::docker_cli().context("docker CLI")?;
    let cut = Command::new("sh")
        .arg("-c")
        .arg(format!(
            "'{}' save big:1 | head -c 1048576 | wc -c",
            cli.display()
        ))
        .env("DOCKER_HOST", s.engine_host())
        .env("DOCKER_CONFIG", s.dir.join("dc"))
        .output()?;
    let got = String::from_utf8_lossy(&cut.stdout).trim().to_string();
    ensure!(got == "1048576", "the cut save gave {got:?} bytes");
    s.docker(&["version"])?.ok()?;
    ensure!(leases(&s)?.is_empty(), "leases left: {:?}", leases(&s)?);
    ensure!(content_list(&s)? == before, "content changed by a save");

    let archive = s.dir.join("big.tar");
    s.docker(&["save", "-o", &archive.to_string_lossy(), "big:1"])?
        .ok()?;
    let len = std::fs::metadata(&archive)?.len();
    ensure!(len > 24 << 20, "the next save is {len} bytes");
    s.docker(&["rmi", "big:1"])?.ok()?;
    let out = s
        .docker(&["load", "-i", &archive.to_string_lossy()])?
        .ok()?;
    expect_contains("load after a cut save", &out.stdout, "Loaded image: big:1")?;
    let out = s
        .docker(&["run", "--rm", "big:1", "wc", "-c", "/big"])?
        .ok()?;
    expect_contains("the loaded layer", &out.stdout, "25165824")?;
    nothing_left(&s)
}
