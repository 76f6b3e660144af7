//! Image sizes as dockerd (overlay2) reports them: a layer counts the size of its
//! unpacked directory (files' bytes and symlink targets' lengths; directories and
//! whiteouts 0), so `docker image inspect` and `docker history` agree with dockerd. Sizes are stored on the
//! layer blobs when an image is created, so an engine restart reads no layer blob.

use std::process::Command;

use anyhow::{ensure, Context, Result};
use berth_integration::stack::Daemon;
use berth_integration::Stack;
use nix::sys::signal::Signal;

use crate::build::{context, nothing_left};
use crate::common::{Spec, DOCKER};

pub fn tests() -> Vec<Spec> {
    vec![
        Spec {
            name: "image_sizes::unpacked_layer_sizes_in_inspect_and_history",
            needs: DOCKER,
            run: unpacked_layer_sizes,
        },
        Spec {
            name: "image_sizes::stored_at_creation_and_read_without_the_blob_after_restart",
            needs: DOCKER,
            run: stored_sizes,
        },
    ]
}

/// A layer tar's size as dockerd's overlay2 reports it, computed here independently:
/// regular files' bytes plus symlink targets' lengths (checked against dockerd 20.10 on
/// the same busybox tar: 1876 bytes of `busybox` targets).
fn regular_bytes(tar_path: &std::path::Path) -> Result<i64> {
    let f = std::fs::File::open(tar_path)?;
    let mut total = 0i64;
    for e in tar::Archive::new(f).entries()? {
        let e = e?;
        let kind = e.header().entry_type();
        if kind.is_file() {
            total += i64::try_from(e.size())?;
        } else if kind.is_symlink() {
            total += e.link_name_bytes().map_or(0, |l| l.len() as i64);
        }
    }
    Ok(total)
}

fn image_size(s: &Stack, image: &str) -> Result<i64> {
    let out = s
        .docker(&["image", "inspect", "-f", "{{.Size}}", image])?
        .ok()?;
    out.stdout
        .trim()
        .parse()
        .with_context(|| format!("inspect .Size of {image}: {:?}", out.stdout))
}

fn history_sizes(s: &Stack, image: &str) -> Result<Vec<i64>> {
    let out = s
        .docker(&["history", "--human=false", "--format", "{{.Size}}", image])?
        .ok()?;
    out.stdout
        .lines()
        .map(|l| {
            l.trim()
                .parse()
                .with_context(|| format!("history size {l:?}"))
        })
        .collect()
}

fn unpacked_layer_sizes() -> Result<()> {
    let s = Stack::with_busybox()?;
    let base = regular_bytes(&s.busybox_tar()?)?;
    ensure!(base > 0, "busybox tar has no regular files");
    ensure!(
        image_size(&s, "busybox")? == base,
        "busybox .Size is not the sum of its files ({base})"
    );
    ensure!(
        history_sizes(&s, "busybox")? == [base],
        "busybox history sizes"
    );

    let a = "x".repeat(1000);
    let ctx = context(
        &s,
        "ctx-sizes",
        &[
            (
                "Dockerfile",
                "FROM busybox\nWORKDIR /work\nCOPY a.txt /work/a.txt\n\
                 RUN head -c 2345 /dev/zero > /work/b && mkdir /work/d && ln -s b /work/l\n\
                 RUN rm /work/a.txt\nENV X=1\n",
            ),
            ("a.txt", &a),
        ],
    )?;
    s.docker(&["build", "-t", "sized", &ctx.to_string_lossy()])?
        .ok()?;
    // Newest first: ENV (no layer), the rm (a whiteout: 0), the RUN (its file and the
    // symlink's one-byte target), the
    // COPY, the WORKDIR (a directory only: 0, where its tar is 1.5kB), then the base.
    let want = [0, 0, 2345 + 1, 1000, 0, base];
    let got = history_sizes(&s, "sized")?;
    ensure!(got == want, "history sizes: got {got:?}, want {want:?}");
    let total = base + 3346;
    let size = image_size(&s, "sized")?;
    ensure!(size == total, "sized .Size: got {size}, want {total}");

    s.docker(&["rmi", "sized"])?.ok()?;
    nothing_left(&s)
}

/// The engine's debug line for each layer blob it reads to size a layer.
const SIZING: &str = "sizing layer from its blob";
const LABEL: &str = "berth.layer.unpacked-size";

fn sizing_reads(s: &Stack) -> Result<usize> {
    let log = std::fs::read_to_string(s.dir.join("engine.log"))?;
    Ok(log.matches(SIZING).count())
}

fn restart_engine(s: &mut Stack) -> Result<()> {
    s.stop_daemon(Daemon::Engine, Signal::SIGTERM)?;
    s.start_daemon(Daemon::Engine)
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

/// Every image's size and history, as the CLI shows them.
fn all_sizes(s: &Stack, images: &[&str]) -> Result<Vec<(i64, Vec<i64>)>> {
    s.docker(&["images"])?.ok()?;
    images
        .iter()
        .map(|i| Ok((image_size(s, i)?, history_sizes(s, i)?)))
        .collect()
}

/// Sizes are stored on each layer blob when an image is made (import, build, commit,
/// load), so after an engine restart listings read labels, not blobs; a layer stored
/// without the label (older engines) is read once and labelled.
fn stored_sizes() -> Result<()> {
    let mut s = Stack::with_busybox()?;
    let base = regular_bytes(&s.busybox_tar()?)?;
    let ctx = context(
        &s,
        "ctx-stored",
        &[(
            "Dockerfile",
            "FROM busybox\nRUN head -c 2345 /dev/zero > /b\n",
        )],
    )?;
    s.docker(&["build", "-t", "built", &ctx.to_string_lossy()])?
        .ok()?;
    s.docker(&[
        "run",
        "--name",
        "cm",
        "busybox",
        "sh",
        "-c",
        "head -c 777 /dev/zero > /c",
    ])?
    .ok()?;
    s.docker(&["commit", "cm", "committed"])?.ok()?;
    s.docker(&["rm", "cm"])?.ok()?;
    let archive = s.dir.join("committed.tar");
    s.docker(&["save", "-o", &archive.to_string_lossy(), "committed"])?
        .ok()?;
    s.docker(&["rmi", "committed"])?.ok()?;
    s.docker(&["load", "-i", &archive.to_string_lossy()])?
        .ok()?;
    let images = ["busybox", "built", "committed"];
    let before = all_sizes(&s, &images)?;
    ensure!(
        before[1].0 == base + 2345 && before[2].0 == base + 777,
        "sizes: {before:?} (busybox {base})"
    );

    restart_engine(&mut s)?;
    let reads = sizing_reads(&s)?;
    let after = all_sizes(&s, &images)?;
    ensure!(
        after == before,
        "sizes after a restart: {after:?}, before {before:?}"
    );
    let new = sizing_reads(&s)? - reads;
    ensure!(
        new == 0,
        "{new} layer blobs read to size layers after a restart"
    );

    // A layer stored before sizes were: read once, labelled, and not read again.
    let listing = ctr(&s, &["content", "ls"])?;
    let base_label = format!("{LABEL}={base}");
    let digest = listing
        .lines()
        .find(|l| l.contains(&base_label))
        .and_then(|l| l.split_whitespace().next())
        .with_context(|| format!("no blob labelled {base_label} in\n{listing}"))?
        .to_string();
    ctr(&s, &["content", "label", &digest, LABEL])?;
    ensure!(
        !ctr(&s, &["content", "ls"])?.contains(&base_label),
        "the label stayed"
    );
    restart_engine(&mut s)?;
    let reads = sizing_reads(&s)?;
    ensure!(all_sizes(&s, &images)? == before, "sizes without the label");
    let new = sizing_reads(&s)? - reads;
    ensure!(new == 1, "{new} blob reads for the one unlabelled layer");
    ensure!(
        ctr(&s, &["content", "ls"])?.contains(&base_label),
        "the label was not stored again"
    );
    restart_engine(&mut s)?;
    let reads = sizing_reads(&s)?;
    ensure!(all_sizes(&s, &images)? == before, "sizes after relabelling");
    ensure!(
        sizing_reads(&s)? == reads,
        "the relabelled layer was read again"
    );

    s.docker(&["rmi", "built", "committed"])?.ok()?;
    nothing_left(&s)
}
