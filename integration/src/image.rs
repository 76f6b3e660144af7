//! The test image: a rootfs tar built from the host's static busybox, imported with
//! `docker import` (or `berth import`) as `busybox`.

use std::path::Path;
use std::process::Command;

use anyhow::{bail, Context, Result};
use tar::{EntryType, Header};

use crate::prereq::BUSYBOX;

/// Fixed mtime so the tar (and the layer digest) is the same on every run.
const MTIME: u64 = 1_700_000_000;

const PASSWD: &str = "root:x:0:0:root:/root:/bin/sh\n\
                      nobody:x:65534:65534:nobody:/nonexistent:/bin/false\n";
const GROUP: &str = "root:x:0:\nnogroup:x:65534:\n";

/// Writes the busybox rootfs tar to `dest`.
pub fn build_busybox_tar(dest: &Path) -> Result<()> {
    let applets = applets()?;
    let binary = std::fs::read(BUSYBOX).with_context(|| format!("read {BUSYBOX}"))?;
    let file = std::fs::File::create(dest).with_context(|| format!("create {}", dest.display()))?;
    let mut tar = tar::Builder::new(file);
    // Mount points and scratch dirs the runtime and common commands expect to exist.
    for (dir, mode) in [
        ("bin", 0o755),
        ("dev", 0o755),
        ("etc", 0o755),
        ("proc", 0o555),
        ("root", 0o700),
        ("sys", 0o555),
        ("tmp", 0o1777),
        ("usr", 0o755),
        ("var", 0o755),
    ] {
        let mut h = header(EntryType::Directory, mode, 0);
        tar.append_data(&mut h, dir, std::io::empty())?;
    }
    let mut h = header(EntryType::Regular, 0o755, binary.len() as u64);
    tar.append_data(&mut h, "bin/busybox", binary.as_slice())?;
    for applet in applets.iter().filter(|a| a.as_str() != "busybox") {
        let mut h = header(EntryType::Symlink, 0o777, 0);
        tar.append_link(&mut h, format!("bin/{applet}"), "busybox")?;
    }
    for (path, text) in [("etc/passwd", PASSWD), ("etc/group", GROUP)] {
        let mut h = header(EntryType::Regular, 0o644, text.len() as u64);
        tar.append_data(&mut h, path, text.as_bytes())?;
    }
    tar.into_inner()?.sync_all()?;
    Ok(())
}

/// `busybox --list`, plus `sh`, which every test relies on.
fn applets() -> Result<Vec<String>> {
    let out = Command::new(BUSYBOX)
        .arg("--list")
        .output()
        .with_context(|| format!("run {BUSYBOX} --list"))?;
    if !out.status.success() {
        bail!(
            "{BUSYBOX} --list failed: {}",
            String::from_utf8_lossy(&out.stderr)
        );
    }
    let mut list: Vec<String> = String::from_utf8_lossy(&out.stdout)
        .lines()
        .map(str::trim)
        .filter(|l| !l.is_empty() && !l.contains('/'))
        .map(String::from)
        .collect();
    if !list.iter().any(|a| a == "sh") {
        list.push("sh".into());
    }
    Ok(list)
}

fn header(kind: EntryType, mode: u32, size: u64) -> Header {
    let mut h = Header::new_gnu();
    h.set_entry_type(kind);
    h.set_mode(mode);
    h.set_size(size);
    h.set_uid(0);
    h.set_gid(0);
    h.set_mtime(MTIME);
    h
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn tar_has_busybox_sh_and_passwd() {
        if !Path::new(BUSYBOX).is_file() {
            // Straight to stderr: the test harness captures println!, and a skip must show.
            use std::io::Write;
            let _ = writeln!(std::io::stderr(), "SKIP: {BUSYBOX} missing");
            return;
        }
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("bb.tar");
        build_busybox_tar(&path).unwrap();
        let mut ar = tar::Archive::new(std::fs::File::open(&path).unwrap());
        let mut names = Vec::new();
        for e in ar.entries().unwrap() {
            let e = e.unwrap();
            let name = e.path().unwrap().to_string_lossy().into_owned();
            if name == "bin/sh" {
                assert_eq!(e.link_name().unwrap().unwrap().to_str(), Some("busybox"));
            }
            names.push(name);
        }
        for want in [
            "bin/busybox",
            "bin/sh",
            "bin/echo",
            "etc/passwd",
            "etc/group",
            "tmp",
        ] {
            assert!(names.iter().any(|n| n == want), "{want} missing");
        }
    }
}
