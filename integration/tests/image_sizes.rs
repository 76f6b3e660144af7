//! Image sizes as dockerd reports them: a layer counts the unpacked size of its content
//! (the sum of its tar entries' sizes), so directories, symlinks and whiteouts count 0 and
//! `docker image inspect` and `docker history` agree with dockerd.

use anyhow::{ensure, Context, Result};
use berth_integration::Stack;

use crate::build::{context, nothing_left};
use crate::common::{Spec, DOCKER};

pub fn tests() -> Vec<Spec> {
    vec![Spec {
        name: "image_sizes::unpacked_layer_sizes_in_inspect_and_history",
        needs: DOCKER,
        run: unpacked_layer_sizes,
    }]
}

/// Sum of the regular files' sizes in a layer tar, computed here independently.
fn regular_bytes(tar_path: &std::path::Path) -> Result<i64> {
    let f = std::fs::File::open(tar_path)?;
    let mut total = 0i64;
    for e in tar::Archive::new(f).entries()? {
        let e = e?;
        if e.header().entry_type().is_file() {
            total += i64::try_from(e.size())?;
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
    // Newest first: ENV (no layer), the rm (a whiteout: 0), the RUN (its one file), the
    // COPY, the WORKDIR (a directory only: 0, where its tar is 1.5kB), then the base.
    let want = [0, 0, 2345, 1000, 0, base];
    let got = history_sizes(&s, "sized")?;
    ensure!(got == want, "history sizes: got {got:?}, want {want:?}");
    let total = base + 3345;
    let size = image_size(&s, "sized")?;
    ensure!(size == total, "sized .Size: got {size}, want {total}");

    s.docker(&["rmi", "sized"])?.ok()?;
    nothing_left(&s)
}
