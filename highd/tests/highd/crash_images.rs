//! highd SIGKILLed during `ctr images import`: while the layer is being written into the
//! content store, and while it is being unpacked into a snapshot. After the restart no
//! half-written blob, image or snapshot is visible and the import, retried, succeeds.

use std::path::{Path, PathBuf};
use std::time::Duration;

use anyhow::{ensure, Result};

use crate::common::{poll, Stack};
use crate::ctr::Ctr;
use crate::ctr_images::{docker_archive, docker_archive_gz};

/// The busybox rootfs plus `extra` (called with the new rootfs' path).
fn rootfs_with(stack: &Stack, name: &str, extra: impl Fn(&Path) -> Result<()>) -> Result<PathBuf> {
    let dir = stack.dir.path().join(name);
    let status = std::process::Command::new("cp")
        .arg("-a")
        .arg(stack.rootfs())
        .arg(&dir)
        .status()?;
    ensure!(status.success(), "cp -a rootfs");
    extra(&dir)?;
    Ok(dir)
}

fn lines(s: &str) -> Vec<&str> {
    s.lines().map(str::trim).filter(|l| !l.is_empty()).collect()
}

/// Files under `dir` (recursively) whose name is `name`.
fn any_named(dir: &Path, name: &str, depth: usize) -> bool {
    let Ok(entries) = std::fs::read_dir(dir) else {
        return false;
    };
    entries.flatten().any(|e| {
        e.file_name() == name
            || (depth > 0
                && e.file_type().is_ok_and(|t| t.is_dir())
                && any_named(&e.path(), name, depth - 1))
    })
}

/// Import, run and check that the image works; shared by both crash tests.
fn import_and_run(ctr: &Ctr, stack: &Stack, archive: &Path, image: &str, id: &str) -> Result<()> {
    ctr.ok(&["images", "import", &archive.to_string_lossy()])?;
    let cg = format!("{}/{id}", stack.cgroup_parent);
    let out = ctr.ok(&[
        "run",
        "--rm",
        "--cgroup",
        &cg,
        image,
        id,
        "/bin/echo",
        "ok-after-crash",
    ])?;
    ensure!(out.contains("ok-after-crash"), "{out}");
    Ok(())
}

#[tokio::test(flavor = "multi_thread")]
async fn sigkill_during_image_import() -> Result<()> {
    let mut stack = Stack::new();
    let Some(ctr) = Ctr::for_test("sigkill_during_image_import", &stack) else {
        return Ok(());
    };
    stack.start().await?;
    // A big layer, so the kill lands while its blob is being written.
    let rootfs = rootfs_with(&stack, "big", |dir| {
        let f = std::fs::File::create(dir.join("big"))?;
        f.set_len(384 << 20)?;
        Ok(())
    })?;
    let archive = docker_archive(&rootfs, stack.dir.path(), "bh-big:1")?;
    let image = "docker.io/library/bh-big:1";
    let mut import = std::process::Command::new(&ctr.bin)
        .arg("--address")
        .arg(&ctr.address)
        .args(["-n", "ctrtest", "images", "import"])
        .arg(&archive)
        .stdout(std::process::Stdio::null())
        .stderr(std::fs::File::create(stack.dir.path().join("import.err"))?)
        .spawn()?;
    let ingest = stack.root.join("content/ingest");
    poll(
        "the layer's ingest to grow",
        Duration::from_secs(30),
        || {
            std::fs::read_dir(&ingest)
                .ok()?
                .flatten()
                .filter_map(|e| std::fs::metadata(e.path().join("data")).ok())
                .any(|m| m.len() > 16 << 20)
                .then_some(())
        },
    )
    .await?;
    stack.kill();
    let _ = import.wait();

    stack.start().await?;
    let images = ctr.ok(&["images", "ls", "-q"])?;
    ensure!(
        !images.contains("bh-big"),
        "half-imported image visible: {images}"
    );
    let blobs = stack.root.join("content/blobs/sha256");
    let committed = std::fs::read_dir(&blobs).map(|d| d.count()).unwrap_or(0);
    let content = ctr.ok(&["content", "ls", "-q"])?;
    ensure!(
        lines(&content).len() == committed,
        "content records {content} vs {committed} blob files"
    );
    for blob in std::fs::read_dir(&blobs).into_iter().flatten().flatten() {
        let len = blob.metadata()?.len();
        ensure!(
            len < 384 << 20,
            "a blob of the unfinished layer was committed"
        );
    }

    import_and_run(&ctr, &stack, &archive, image, "big1")?;
    // The retry resumed or replaced the interrupted write: no ingest is left.
    let left: Vec<_> = std::fs::read_dir(&ingest)
        .into_iter()
        .flatten()
        .flatten()
        .map(|e| e.file_name())
        .collect();
    ensure!(left.is_empty(), "ingests left after the retry: {left:?}");
    Ok(())
}

#[tokio::test(flavor = "multi_thread")]
async fn sigkill_during_unpack() -> Result<()> {
    let mut stack = Stack::new();
    let Some(ctr) = Ctr::for_test("sigkill_during_unpack", &stack) else {
        return Ok(());
    };
    stack.start().await?;
    // Big files: the unpack takes long enough to be interrupted. Zeros in a gzip layer: the
    // archive, ctr's upload and the blob stay small (512 MiB of them made this test spend
    // its time writing, hashing and streaming the archive, not unpacking it).
    let rootfs = rootfs_with(&stack, "many", |dir| {
        for d in 0..8 {
            let sub = dir.join("many").join(format!("d{d}"));
            std::fs::create_dir_all(&sub)?;
            for f in 0..8 {
                std::fs::File::create(sub.join(format!("f{f}")))?.set_len(8 << 20)?;
            }
        }
        std::fs::write(dir.join("many/last"), b"last")?;
        Ok(())
    })?;
    let archive = docker_archive_gz(&rootfs, stack.dir.path(), "bh-many:1")?;
    let image = "docker.io/library/bh-many:1";
    let mut import = std::process::Command::new(&ctr.bin)
        .arg("--address")
        .arg(&ctr.address)
        .args(["-n", "ctrtest", "images", "import"])
        .arg(&archive)
        .stdout(std::process::Stdio::null())
        .stderr(std::process::Stdio::null())
        .spawn()?;
    let snapshots = stack.root.join("snapshots/overlayfs");
    poll("the unpack to start", Duration::from_secs(30), || {
        any_named(&snapshots, "d0", 4).then_some(())
    })
    .await?;
    stack.kill();
    ensure!(
        !import.wait()?.success(),
        "the import finished before the kill; nothing was tested"
    );

    stack.start().await?;
    // The layer's snapshot (named by its chain ID) must not exist half-filled.
    let snaps = ctr.ok(&["snapshots", "ls"])?;
    ensure!(
        !snaps
            .lines()
            .any(|l| l.starts_with("sha256:") && l.contains("Committed")),
        "a committed snapshot of an unfinished unpack: {snaps}"
    );
    import_and_run(&ctr, &stack, &archive, image, "many1")?;
    let cg = format!("{}/many2", stack.cgroup_parent);
    let out = ctr.ok(&[
        "run",
        "--rm",
        "--cgroup",
        &cg,
        image,
        "many2",
        "/bin/cat",
        "/many/last",
    ])?;
    ensure!(out.contains("last"), "unpacked layer incomplete: {out}");
    Ok(())
}
