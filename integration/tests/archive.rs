//! `docker cp` (the archive API), `docker export` and `docker diff` through the real
//! docker CLI: copies both ways with a running and a stopped container, `dir/.`,
//! `-a`, `-L`, volumes seen as the container sees them, symlinks that try to leave the
//! container's root, dockerd's errors, and no rootfs view mount left behind.

use std::path::Path;

use anyhow::{ensure, Context, Result};
use berth_integration::{http, Stack};

use crate::common::{expect_contains, Spec, DOCKER};

pub fn tests() -> Vec<Spec> {
    vec![
        Spec {
            name: "archive::cp_both_ways_running_and_stopped",
            needs: DOCKER,
            run: cp_both_ways,
        },
        Spec {
            name: "archive::cp_errors_symlinks_and_read_only",
            needs: DOCKER,
            run: cp_errors,
        },
        Spec {
            name: "archive::cp_and_export_keep_file_capabilities",
            needs: DOCKER,
            run: file_capabilities,
        },
        Spec {
            name: "archive::export_and_diff",
            needs: DOCKER,
            run: export_and_diff,
        },
    ]
}

fn exec(s: &Stack, name: &str, script: &str) -> Result<String> {
    Ok(s.docker(&["exec", name, "sh", "-c", script])?.ok()?.stdout)
}

fn p(path: &Path) -> String {
    path.to_string_lossy().into_owned()
}

/// No rootfs view is mounted or left as a directory once the copies are done.
fn no_views_left(s: &Stack) -> Result<()> {
    let views = s.dir.join("ex/rootfs-views");
    let left: Vec<_> = std::fs::read_dir(&views)
        .map(|d| d.filter_map(|e| e.ok().map(|e| e.path())).collect())
        .unwrap_or_default();
    ensure!(left.is_empty(), "rootfs views left: {left:?}");
    let mounts = berth_integration::cleanup::mounts_under(&views)?;
    ensure!(mounts.is_empty(), "view mounts left: {mounts:?}");
    Ok(())
}

fn cp_both_ways() -> Result<()> {
    let s = Stack::with_busybox()?;
    let local = s.dir.join("local");
    std::fs::create_dir_all(local.join("dir/sub"))?;
    std::fs::write(local.join("f.txt"), "hello file\n")?;
    std::fs::write(local.join("dir/a"), "a\n")?;
    std::fs::write(local.join("dir/sub/b"), "b\n")?;
    s.docker(&[
        "run",
        "-d",
        "--name",
        "web",
        "-v",
        "vol:/data",
        "busybox",
        "sleep",
        "1000",
    ])?
    .ok()?;

    // Into the running container, read back with exec.
    s.docker(&["cp", &p(&local.join("f.txt")), "web:/tmp/"])?
        .ok()?;
    ensure!(exec(&s, "web", "cat /tmp/f.txt")? == "hello file\n");
    s.docker(&["cp", &p(&local.join("dir")), "web:/newdir"])?
        .ok()?;
    ensure!(exec(&s, "web", "cat /newdir/a /newdir/sub/b")? == "a\nb\n");
    s.docker(&["cp", &p(&local.join("dir")), "web:/tmp"])?
        .ok()?;
    s.docker(&["cp", &format!("{}/.", p(&local.join("dir"))), "web:/root"])?
        .ok()?;
    let out = exec(&s, "web", "ls /tmp/dir /root")?;
    ensure!(
        out == "/root:\na\nsub\n\n/tmp/dir:\na\nsub\n",
        "dir and dir/. copies: {out:?}"
    );
    // A volume is written as the container sees it.
    s.docker(&["cp", &p(&local.join("f.txt")), "web:/data/"])?
        .ok()?;
    let vol = s.dir.join("e/volumes/vol/_data/f.txt");
    ensure!(std::fs::read_to_string(&vol).ok().as_deref() == Some("hello file\n"));

    // Out of the running container: a file, a directory, dir/. and a volume file.
    let out = s.dir.join("out");
    std::fs::create_dir_all(out.join("existing"))?;
    exec(&s, "web", "echo made inside > /made; ln -s /made /link")?;
    s.docker(&["cp", "web:/made", &p(&out.join("made"))])?
        .ok()?;
    ensure!(std::fs::read_to_string(out.join("made"))? == "made inside\n");
    s.docker(&["cp", "web:/newdir", &p(&out.join("nd"))])?
        .ok()?;
    ensure!(std::fs::read_to_string(out.join("nd/sub/b"))? == "b\n");
    s.docker(&["cp", "web:/newdir/.", &p(&out.join("existing"))])?
        .ok()?;
    ensure!(std::fs::read_to_string(out.join("existing/a"))? == "a\n");
    s.docker(&["cp", "web:/data/f.txt", &p(&out.join("fromvol"))])?
        .ok()?;
    ensure!(std::fs::read_to_string(out.join("fromvol"))? == "hello file\n");
    // Without -L the link itself is copied, with -L its target.
    s.docker(&["cp", "web:/link", &p(&out.join("l1"))])?.ok()?;
    ensure!(std::fs::read_link(out.join("l1"))? == Path::new("/made"));
    s.docker(&["cp", "-L", "web:/link", &p(&out.join("l2"))])?
        .ok()?;
    ensure!(std::fs::read_to_string(out.join("l2"))? == "made inside\n");

    // Stopped: out of and into the mounted rootfs view, volume included.
    s.docker(&["stop", "-t", "1", "web"])?.ok()?;
    s.docker(&["cp", "web:/tmp/f.txt", &p(&out.join("stopped"))])?
        .ok()?;
    ensure!(std::fs::read_to_string(out.join("stopped"))? == "hello file\n");
    s.docker(&["cp", "web:/data/f.txt", &p(&out.join("stoppedvol"))])?
        .ok()?;
    ensure!(std::fs::read_to_string(out.join("stoppedvol"))? == "hello file\n");
    s.docker(&["cp", &p(&local.join("dir")), "web:/data/d2"])?
        .ok()?;
    ensure!(s.dir.join("e/volumes/vol/_data/d2/sub/b").is_file());
    s.docker(&["cp", &p(&local.join("f.txt")), "web:/stopped.txt"])?
        .ok()?;
    no_views_left(&s)?;
    s.docker(&["start", "web"])?.ok()?;
    ensure!(exec(&s, "web", "cat /stopped.txt")? == "hello file\n");

    // -a: the container user's uid/gid; without it the archive's (root here).
    s.docker(&[
        "run",
        "-d",
        "--name",
        "user",
        "-u",
        "1234:5678",
        "busybox",
        "sleep",
        "1000",
    ])?
    .ok()?;
    s.docker(&["cp", "-a", &p(&local.join("f.txt")), "user:/tmp/a.txt"])?
        .ok()?;
    s.docker(&["cp", &p(&local.join("f.txt")), "user:/tmp/b.txt"])?
        .ok()?;
    let owners = exec(&s, "user", "stat -c %u:%g /tmp/a.txt /tmp/b.txt")?;
    ensure!(owners == "1234:5678\n0:0\n", "owners: {owners:?}");

    s.docker(&["rm", "-f", "web", "user"])?.ok()?;
    no_views_left(&s)?;
    crate::volumes::no_mounts_left(&s)
}

/// A tar with a symlink to `/` and a file written through it.
fn escaping_tar(marker: &str) -> Result<Vec<u8>> {
    let mut b = tar::Builder::new(Vec::new());
    let mut h = tar::Header::new_gnu();
    h.set_entry_type(tar::EntryType::Symlink);
    h.set_mode(0o777);
    h.set_size(0);
    b.append_link(&mut h, "evil", "/")?;
    let mut h = tar::Header::new_gnu();
    h.set_entry_type(tar::EntryType::Regular);
    h.set_mode(0o644);
    h.set_size(3);
    b.append_data(&mut h, format!("evil/tmp/{marker}"), &b"in\n"[..])?;
    Ok(b.into_inner()?)
}

fn cp_errors() -> Result<()> {
    let s = Stack::with_busybox()?;
    let local = s.dir.join("local");
    std::fs::create_dir_all(local.join("dir"))?;
    std::fs::write(local.join("f.txt"), "x\n")?;
    s.docker(&["run", "-d", "--name", "c1", "busybox", "sleep", "1000"])?
        .ok()?;

    let out = s.docker(&["cp", "c1:/nope", &p(&s.dir)])?.expect_code(1)?;
    expect_contains(
        "cp of a missing path",
        &out.stderr,
        "Could not find the file /nope in container c1",
    )?;
    let out = s
        .docker(&["cp", &p(&local.join("f.txt")), "c1:/nope/deeper/x"])?
        .expect_code(1)?;
    expect_contains(
        "cp into a missing dir",
        &out.stderr,
        "Could not find the file /nope/deeper in container c1",
    )?;
    let r = http::request(
        &s.engine_sock(),
        "PUT",
        "/containers/c1/archive?path=/etc/passwd",
        &escaping_tar("x")?,
    )?;
    ensure!(
        r.status == 400 && r.body.contains("extraction point is not a directory"),
        "PUT onto a file: {r:?}"
    );
    let out = s
        .docker(&["cp", &p(&local.join("dir")), "c1:/etc/passwd"])?
        .expect_code(1)?;
    expect_contains(
        "directory onto a file",
        &out.stderr,
        "cannot copy directory",
    )?;

    // Symlinks never leave the container's root: not when extracting a tar that
    // writes through its own link to "/", not when following links in the container.
    let marker = format!("berth-archive-{}", std::process::id());
    let r = http::request(
        &s.engine_sock(),
        "PUT",
        "/containers/c1/archive?path=/",
        &escaping_tar(&marker)?,
    )?;
    ensure!(r.status == 200, "PUT of the escaping tar: {r:?}");
    ensure!(
        !Path::new("/tmp").join(&marker).exists(),
        "wrote on the host"
    );
    ensure!(exec(&s, "c1", &format!("cat /tmp/{marker}"))? == "in\n");
    exec(&s, "c1", "ln -s ../../../../../../../../etc /up")?;
    s.docker(&["stop", "-t", "1", "c1"])?.ok()?;
    s.docker(&["cp", &p(&local.join("f.txt")), &format!("c1:/up/{marker}")])?
        .ok()?;
    ensure!(
        !Path::new("/etc").join(&marker).exists(),
        "wrote into host /etc"
    );
    let got = s.dir.join("got");
    s.docker(&["cp", &format!("c1:/up/{marker}"), &p(&got)])?
        .ok()?;
    ensure!(std::fs::read_to_string(&got)? == "x\n");
    let out = s
        .docker(&["cp", "c1:/up/../../../../etc/shadow", &p(&s.dir)])?
        .expect_code(1)?;
    expect_contains(
        "a path climbing out of the root",
        &out.stderr,
        "Could not find the file",
    )?;

    // --read-only refuses writes outside volumes; a :ro volume refuses too.
    s.docker(&[
        "run",
        "-d",
        "--name",
        "ro",
        "--read-only",
        "-v",
        "rw1:/rw",
        "-v",
        "ro1:/rov:ro",
        "busybox",
        "sleep",
        "1000",
    ])?
    .ok()?;
    let out = s
        .docker(&["cp", &p(&local.join("f.txt")), "ro:/tmp/"])?
        .expect_code(1)?;
    expect_contains(
        "cp into --read-only",
        &out.stderr,
        "container rootfs is marked read-only",
    )?;
    let out = s
        .docker(&["cp", &p(&local.join("f.txt")), "ro:/rov/"])?
        .expect_code(1)?;
    expect_contains(
        "cp into a :ro volume",
        &out.stderr,
        "mounted volume is marked read-only",
    )?;
    s.docker(&["cp", &p(&local.join("f.txt")), "ro:/rw/"])?
        .ok()?;
    ensure!(exec(&s, "ro", "cat /rw/f.txt")? == "x\n");

    s.docker(&["rm", "-f", "c1", "ro"])?.ok()?;
    no_views_left(&s)?;
    crate::volumes::no_mounts_left(&s)
}

fn tar_names(data: &[u8]) -> Result<Vec<String>> {
    let mut a = tar::Archive::new(data);
    let mut names = Vec::new();
    for e in a.entries()? {
        names.push(
            e?.path()?
                .to_string_lossy()
                .trim_end_matches('/')
                .to_string(),
        );
    }
    Ok(names)
}

fn export_and_diff() -> Result<()> {
    let s = Stack::with_busybox()?;
    s.docker(&[
        "run",
        "--name",
        "ex1",
        "-v",
        "vol:/data",
        "busybox",
        "sh",
        "-c",
        "echo hi > /created; echo v > /data/inside; rm /bin/ls; mkdir -p /var/x; \
         echo 2 >> /etc/passwd; rm -r /usr; mkdir /usr",
    ])?
    .ok()?;
    let tar = s.dir.join("e.tar");
    s.docker(&["export", "-o", &p(&tar), "ex1"])?.ok()?;
    let names = tar_names(&std::fs::read(&tar)?)?;
    ensure!(names.iter().any(|n| n == "created"), "export: {names:?}");
    ensure!(
        names.iter().any(|n| n == "bin/busybox"),
        "export: {names:?}"
    );
    ensure!(names.iter().any(|n| n == "data"), "export: {names:?}");
    ensure!(!names.iter().any(|n| n == "data/inside"), "volume exported");
    ensure!(
        !names.iter().any(|n| n == "bin/ls"),
        "deleted file exported"
    );

    let out = s.docker(&["diff", "ex1"])?.ok()?;
    let lines: Vec<&str> = out.stdout.lines().collect();
    let want = [
        "C /bin",
        "D /bin/ls",
        "A /created",
        "A /data",
        "C /etc",
        "C /etc/passwd",
        "C /usr",
        "C /var",
        "A /var/x",
    ];
    ensure!(lines == want, "docker diff printed {:?}", out.stdout);
    // Nothing changed: nothing printed (the runtime's mountpoints are not changes).
    s.docker(&["run", "--name", "quiet", "busybox", "true"])?
        .ok()?;
    let out = s.docker(&["diff", "quiet"])?.ok()?;
    ensure!(
        out.stdout.is_empty(),
        "diff of an idle container: {:?}",
        out.stdout
    );
    s.docker(&["create", "--name", "fresh", "busybox", "true"])?
        .ok()?;
    let out = s.docker(&["diff", "fresh"])?.ok()?;
    ensure!(
        out.stdout.is_empty(),
        "diff of a created container: {:?}",
        out.stdout
    );

    // A running container exports too (its upper dir read through a read-only view).
    s.docker(&[
        "run",
        "-d",
        "--name",
        "live",
        "busybox",
        "sh",
        "-c",
        "echo l > /live; sleep 1000",
    ])?
    .ok()?;
    berth_integration::wait_until(
        "/live to be written",
        std::time::Duration::from_secs(20),
        || {
            Ok(exec(&s, "live", "cat /live 2>/dev/null || true")?
                .eq("l\n")
                .then_some(()))
        },
    )?;
    let tar = s.dir.join("live.tar");
    s.docker(&["export", "-o", &p(&tar), "live"])?.ok()?;
    let names = tar_names(&std::fs::read(&tar)?)?;
    ensure!(
        names.iter().any(|n| n == "live"),
        "export of a running container: {names:?}"
    );
    s.docker(&["rm", "-f", "live"])?.ok()?;

    let out = s.docker(&["diff", "nope"])?.expect_code(1)?;
    expect_contains(
        "diff of a missing container",
        &out.stderr,
        "No such container: nope",
    )?;
    s.docker(&["rm", "ex1", "quiet", "fresh"])?.ok()?;
    no_views_left(&s)?;
    crate::volumes::no_mounts_left(&s).context("after export")
}

fn getcap(path: &Path) -> Result<String> {
    let out = std::process::Command::new("getcap").arg(path).output()?;
    ensure!(out.status.success(), "getcap {}: {out:?}", path.display());
    Ok(String::from_utf8_lossy(&out.stdout).trim().to_string())
}

/// File capabilities (`security.capability`) travel as dockerd's tar carries them, a PAX
/// `SCHILY.xattr.` record: into a container with `cp`, back out with `cp`, and in `export`.
fn file_capabilities() -> Result<()> {
    let s = Stack::with_busybox()?;
    let local = s.dir.join("caps");
    std::fs::create_dir_all(local.join("out"))?;
    let file = local.join("pinger");
    std::fs::write(&file, "#!/bin/sh\n")?;
    let set = std::process::Command::new("setcap")
        .args(["cap_net_raw+ep", &p(&file)])
        .output()?;
    ensure!(set.status.success(), "setcap: {set:?}");
    s.docker(&["create", "--name", "cap1", "busybox", "true"])?
        .ok()?;
    s.docker(&["cp", &p(&file), "cap1:/bin/pinger"])?.ok()?;
    s.docker(&["cp", "cap1:/bin/pinger", &p(&local.join("out"))])?
        .ok()?;
    let got = getcap(&local.join("out/pinger"))?;
    ensure!(
        got.ends_with("cap_net_raw=ep"),
        "getcap after cp both ways: {got}"
    );
    let tar = local.join("e.tar");
    s.docker(&["export", "-o", &p(&tar), "cap1"])?.ok()?;
    let data = std::fs::read(&tar)?;
    let mut a = tar::Archive::new(data.as_slice());
    let mut found = None;
    for e in a.entries()? {
        let mut e = e?;
        if e.path()?.to_string_lossy() != "bin/pinger" {
            continue;
        }
        if let Some(exts) = e.pax_extensions()? {
            for x in exts {
                let x = x?;
                if x.key_bytes() == b"SCHILY.xattr.security.capability" {
                    found = Some(x.value_bytes().to_vec());
                }
            }
        }
    }
    let cap = found.context("no SCHILY.xattr.security.capability for bin/pinger in export")?;
    // VFS_CAP_REVISION_2 (0x02000000 little-endian, effective bit), 20 bytes, with
    // CAP_NET_RAW (13) permitted.
    ensure!(
        cap.len() == 20 && cap[3] == 2 && cap[4..8] == (1u32 << 13).to_le_bytes(),
        "capability record: {cap:?}"
    );
    s.docker(&["rm", "cap1"])?.ok()?;
    no_views_left(&s)
}
