use std::collections::BTreeMap;
use std::io::Read;
use std::os::unix::fs::{FileTypeExt, MetadataExt};
use std::path::Path;

use super::*;
use crate::db::Db;
use crate::snapshots::{Mode, Snapshotter};

fn is_root() -> bool {
    let root = nix::unistd::geteuid().is_root();
    if !root {
        eprintln!("SKIP: this test needs root (chown, mknod, trusted xattrs)");
    }
    root
}

struct Env {
    _dir: tempfile::TempDir,
    content: ContentStore,
    snaps: Snapshotter,
    applier: Applier,
}

fn env(mode: Mode) -> anyhow::Result<Env> {
    let dir = tempfile::tempdir()?;
    let db = Db::open(dir.path())?;
    let content = ContentStore::open(dir.path(), db.clone())?;
    let snaps = Snapshotter::open(dir.path(), db, Some(mode))?;
    let applier = Applier::new(content.clone());
    Ok(Env {
        _dir: dir,
        content,
        snaps,
        applier,
    })
}

/// A tar entry with a raw (unchecked) path, so tests can build hostile archives.
enum E<'a> {
    Dir(&'a str, u32),
    File(&'a str, &'a str),
    Owned(&'a str, &'a str, u32, u64, u64),
    Link(&'a str, &'a str),
    Hard(&'a str, &'a str),
    Char(&'a str, u32, u32),
    Fifo(&'a str),
}

fn header(path: &str, kind: tar::EntryType, mode: u32, size: u64) -> tar::Header {
    let mut h = tar::Header::new_gnu();
    h.as_old_mut().name[..path.len()].copy_from_slice(path.as_bytes());
    h.set_entry_type(kind);
    h.set_mode(mode);
    h.set_size(size);
    h.set_mtime(1_600_000_000);
    h.set_uid(0);
    h.set_gid(0);
    h
}

fn layer(entries: &[E<'_>]) -> anyhow::Result<Vec<u8>> {
    let mut b = tar::Builder::new(Vec::new());
    for e in entries {
        let (mut h, data): (tar::Header, &[u8]) = match e {
            E::Dir(p, m) => (header(p, tar::EntryType::Directory, *m, 0), b""),
            E::File(p, d) => (
                header(p, tar::EntryType::Regular, 0o644, d.len() as u64),
                d.as_bytes(),
            ),
            E::Owned(p, d, m, uid, gid) => {
                let mut h = header(p, tar::EntryType::Regular, *m, d.len() as u64);
                h.set_uid(*uid);
                h.set_gid(*gid);
                (h, d.as_bytes())
            }
            E::Link(p, t) | E::Hard(p, t) => {
                let kind = if matches!(e, E::Link(..)) {
                    tar::EntryType::Symlink
                } else {
                    tar::EntryType::Link
                };
                let mut h = header(p, kind, 0o777, 0);
                h.as_old_mut().linkname[..t.len()].copy_from_slice(t.as_bytes());
                (h, b"")
            }
            E::Char(p, maj, min) => {
                let mut h = header(p, tar::EntryType::Char, 0o666, 0);
                h.set_device_major(*maj)?;
                h.set_device_minor(*min)?;
                (h, b"")
            }
            E::Fifo(p) => (header(p, tar::EntryType::Fifo, 0o600, 0), b""),
        };
        h.set_cksum();
        b.append(&h, data)?;
    }
    Ok(b.into_inner()?)
}

fn store(env: &Env, data: &[u8], media_type: &str) -> anyhow::Result<Descriptor> {
    let digest = sha(data);
    if env.content.info("ns", &digest).is_err() {
        let mut w = env.content.writer("ns", &digest, 0, &digest)?;
        w.write_at(0, data)?;
        w.commit(0, "", BTreeMap::new())?;
    }
    Ok(Descriptor {
        media_type: media_type.into(),
        digest,
        size: data.len() as i64,
        annotations: BTreeMap::new(),
    })
}

fn sha(data: &[u8]) -> String {
    format!("sha256:{}", hex::encode(Sha256::digest(data)))
}

fn gzip(data: &[u8]) -> anyhow::Result<Vec<u8>> {
    use std::io::Write;
    let mut enc = flate2::write::GzEncoder::new(Vec::new(), flate2::Compression::fast());
    enc.write_all(data)?;
    Ok(enc.finish()?)
}

fn zstd(data: &[u8]) -> Vec<u8> {
    ruzstd::encoding::compress_to_vec(data, ruzstd::encoding::CompressionLevel::Fastest)
}

fn fs(env: &Env, key: &str) -> anyhow::Result<std::path::PathBuf> {
    Ok(env.snaps.fs_path(env.snaps.record("ns", key)?.id))
}

#[test]
fn bind_apply_preserves_metadata_and_deletes_whiteouts() -> anyhow::Result<()> {
    if !is_root() {
        return Ok(());
    }
    let env = env(Mode::Copy)?;
    let base = layer(&[
        E::Dir("etc/", 0o755),
        E::File("etc/hosts", "old"),
        E::Dir("var/", 0o755),
        E::File("var/a", "a"),
        E::File("var/b", "b"),
        E::Owned("bin/su", "suid", 0o4755, 1000, 1001),
        E::Link("bin/sh", "/bin/busybox"),
        E::Hard("bin/su2", "bin/su"),
        E::Char("dev/null", 1, 3),
        E::Fifo("run/fifo"),
    ])?;
    let m = env.snaps.prepare("ns", "l1", "", BTreeMap::new())?;
    let desc = store(
        &env,
        &gzip(&base)?,
        "application/vnd.oci.image.layer.v1.tar+gzip",
    )?;
    let applied = env.applier.apply("ns", &desc, &m)?;
    assert_eq!(
        applied.digest,
        sha(&base),
        "diff ID is the uncompressed digest"
    );
    assert_eq!(applied.size, base.len() as i64);
    assert_eq!(applied.media_type, MEDIA_TYPE_LAYER);
    let root = fs(&env, "l1")?;
    let su = std::fs::metadata(root.join("bin/su"))?;
    assert_eq!(
        (su.mode() & 0o7777, su.uid(), su.gid(), su.nlink()),
        (0o4755, 1000, 1001, 2)
    );
    assert_eq!(su.mtime(), 1_600_000_000);
    assert_eq!(std::fs::metadata(root.join("etc"))?.mtime(), 1_600_000_000);
    assert_eq!(
        std::fs::read_link(root.join("bin/sh"))?,
        Path::new("/bin/busybox")
    );
    let null = std::fs::metadata(root.join("dev/null"))?;
    assert!(null.file_type().is_char_device());
    assert_eq!(null.rdev(), nix::sys::stat::makedev(1, 3));
    assert!(std::fs::metadata(root.join("run/fifo"))?
        .file_type()
        .is_fifo());

    env.snaps.commit("ns", "c1", "l1", BTreeMap::new())?;
    let m = env.snaps.prepare("ns", "l2", "c1", BTreeMap::new())?;
    let top = layer(&[
        E::File("etc/.wh.hosts", ""),
        E::Dir("var/", 0o755),
        E::File("var/.wh..wh..opq", ""),
        E::File("var/new", "n"),
    ])?;
    env.applier.apply(
        "ns",
        &store(&env, &top, "application/vnd.oci.image.layer.v1.tar")?,
        &m,
    )?;
    let root = fs(&env, "l2")?;
    assert!(!root.join("etc/hosts").exists());
    let var: Vec<_> = std::fs::read_dir(root.join("var"))?
        .map(|e| e.map(|e| e.file_name()))
        .collect::<Result<_, _>>()?;
    assert_eq!(var, ["new"]);
    Ok(())
}

#[test]
fn overlay_apply_writes_whiteouts_opaque_and_copies_up() -> anyhow::Result<()> {
    if !is_root() {
        return Ok(());
    }
    let env = env(Mode::Overlay { index_off: false })?;
    let m = env.snaps.prepare("ns", "l1", "", BTreeMap::new())?;
    let base = layer(&[
        E::Dir("usr/", 0o755),
        E::Dir("usr/lib/", 0o700),
        E::Link("lib", "usr/lib"),
        E::File("gone", "x"),
        E::Dir("opq/", 0o755),
        E::File("opq/old", "o"),
    ])?;
    env.applier.apply("ns", &store(&env, &base, "")?, &m)?;
    env.snaps.commit("ns", "c1", "l1", BTreeMap::new())?;
    let m = env.snaps.prepare("ns", "l2", "c1", BTreeMap::new())?;
    assert_eq!(m[0].kind, "overlay");
    let top = layer(&[
        E::File(".wh.gone", ""),
        E::Dir("opq/", 0o755),
        E::File("opq/.wh..wh..opq", ""),
        E::File("opq/new", "n"),
        E::File("lib/libx.so", "so"),
    ])?;
    env.applier.apply("ns", &store(&env, &top, "")?, &m)?;
    let upper = fs(&env, "l2")?;
    let wh = std::fs::symlink_metadata(upper.join("gone"))?;
    assert!(wh.file_type().is_char_device() && wh.rdev() == 0);
    assert_eq!(
        xattr::get(upper.join("opq"), "trusted.overlay.opaque")?,
        Some(b"y".to_vec())
    );
    // Written through the lower layer's symlink, into a copied-up usr/lib.
    assert_eq!(
        std::fs::read_to_string(upper.join("usr/lib/libx.so"))?,
        "so"
    );
    assert_eq!(
        std::fs::metadata(upper.join("usr/lib"))?.mode() & 0o7777,
        0o700
    );
    assert!(!upper.join("lib").exists());
    // The kernel agrees: mounted, the whiteout hides the file and the opaque dir its past.
    let target = env.snaps.fs_path(0).with_file_name("mnt-test");
    std::fs::create_dir_all(&target)?;
    let data = m[0].options.join(",");
    use nix::mount::{mount, umount2, MntFlags, MsFlags};
    mount(
        Some("overlay"),
        &target,
        Some("overlay"),
        MsFlags::empty(),
        Some(data.as_str()),
    )?;
    let seen = (|| -> anyhow::Result<_> {
        let opq: Vec<_> = std::fs::read_dir(target.join("opq"))?
            .map(|e| e.map(|e| e.file_name()))
            .collect::<Result<_, _>>()?;
        Ok((
            target.join("gone").exists(),
            opq,
            std::fs::read(target.join("lib/libx.so"))?,
        ))
    })();
    umount2(&target, MntFlags::MNT_DETACH)?;
    let (gone, opq, so) = seen?;
    assert!(!gone);
    assert_eq!(opq, ["new"]);
    assert_eq!(so, b"so");
    Ok(())
}

#[test]
fn path_traversal_is_refused_or_contained() -> anyhow::Result<()> {
    if !is_root() {
        return Ok(());
    }
    let env = env(Mode::Copy)?;
    let outside = tempfile::tempdir()?;
    let out = outside.path().display().to_string();
    let code = |r: Result<Descriptor, StoreError>| r.map(|_| ()).map_err(|e| e.code());
    for (i, bad) in [
        layer(&[E::File("../evil", "x")])?,
        layer(&[E::File("a/../../evil", "x")])?,
        layer(&[E::File("/abs", "x")])?,
        layer(&[E::File("f", "x"), E::Hard("h", "../../../etc/passwd")])?,
        layer(&[E::File("..wh", ""), E::File(".wh...", "")])?,
    ]
    .iter()
    .enumerate()
    {
        let key = format!("bad{i}");
        let m = env.snaps.prepare("ns", &key, "", BTreeMap::new())?;
        let desc = store(&env, bad, "")?;
        assert_eq!(
            code(env.applier.apply("ns", &desc, &m)),
            Err(tonic::Code::InvalidArgument),
            "{i}"
        );
    }
    // Symlinks pointing out are followed only within the root.
    let escape = format!("{out}/");
    let m = env.snaps.prepare("ns", "links", "", BTreeMap::new())?;
    let tricky = layer(&[
        E::Link("abs", &escape),
        E::File("abs/through-abs", "1"),
        E::Link("up", "../../../../../../.."),
        E::File("up/through-up", "2"),
    ])?;
    env.applier.apply("ns", &store(&env, &tricky, "")?, &m)?;
    let root = fs(&env, "links")?;
    assert_eq!(
        std::fs::read_dir(outside.path())?.count(),
        0,
        "nothing written outside"
    );
    assert!(root
        .join(out.trim_start_matches('/'))
        .join("through-abs")
        .exists());
    assert!(root.join("through-up").exists());
    // Read-only and unknown mounts are refused.
    let ro = vec![Mount {
        kind: "bind".into(),
        source: root.display().to_string(),
        target: String::new(),
        options: vec!["ro".into(), "rbind".into()],
    }];
    assert_eq!(
        code(env.applier.apply("ns", &store(&env, &tricky, "")?, &ro)),
        Err(tonic::Code::InvalidArgument)
    );
    Ok(())
}

fn tar_names(env: &Env, desc: &Descriptor) -> anyhow::Result<(Vec<String>, String)> {
    let raw = env.content.read_at("ns", &desc.digest, 0, 0)?;
    let plain = if raw.starts_with(GZIP_MAGIC) {
        let mut out = Vec::new();
        flate2::read::GzDecoder::new(raw.as_slice()).read_to_end(&mut out)?;
        out
    } else {
        raw
    };
    let mut names = Vec::new();
    for e in tar::Archive::new(plain.as_slice()).entries()? {
        names.push(e?.path()?.display().to_string());
    }
    Ok((names, sha(&plain)))
}

#[test]
fn overlay_diff_turns_the_upper_dir_into_a_layer() -> anyhow::Result<()> {
    if !is_root() {
        return Ok(());
    }
    let env = env(Mode::Overlay { index_off: false })?;
    let m = env.snaps.prepare("ns", "l1", "", BTreeMap::new())?;
    let base = layer(&[
        E::File("gone", "x"),
        E::Dir("opq/", 0o755),
        E::File("opq/old", "o"),
    ])?;
    env.applier.apply("ns", &store(&env, &base, "")?, &m)?;
    env.snaps.commit("ns", "c1", "l1", BTreeMap::new())?;
    let m = env.snaps.prepare("ns", "l2", "c1", BTreeMap::new())?;
    // Change it through a real overlay mount, as a container would.
    let target = env.snaps.fs_path(0).with_file_name("mnt-diff");
    std::fs::create_dir_all(&target)?;
    use nix::mount::{mount, umount2, MntFlags, MsFlags};
    let data = m[0].options.join(",");
    mount(
        Some("overlay"),
        &target,
        Some("overlay"),
        MsFlags::empty(),
        Some(data.as_str()),
    )?;
    let changed = (|| -> std::io::Result<()> {
        std::fs::write(target.join("new"), "n")?;
        std::fs::remove_file(target.join("gone"))?;
        std::fs::remove_dir_all(target.join("opq"))?;
        std::fs::create_dir(target.join("opq"))?;
        std::fs::write(target.join("opq/fresh"), "f")
    })();
    umount2(&target, MntFlags::MNT_DETACH)?;
    changed?;
    let view = env.snaps.view("ns", "v", "c1", BTreeMap::new())?;
    let desc = env.applier.diff("ns", &view, &m, "", "", BTreeMap::new())?;
    assert_eq!(desc.media_type, MEDIA_TYPE_LAYER_GZIP);
    let (names, diff_id) = tar_names(&env, &desc)?;
    assert!(names.contains(&".wh.gone".to_string()), "{names:?}");
    assert!(names.contains(&"new".to_string()) && names.contains(&"opq/fresh".to_string()));
    let info = env.content.info("ns", &desc.digest)?;
    assert_eq!(info.labels.get(UNCOMPRESSED_LABEL), Some(&diff_id));
    // The kernel may record the re-created dir as opaque or with per-entry whiteouts;
    // either way the old entry must not come back.
    let opaque = names.contains(&"opq/.wh..wh..opq".to_string());
    assert!(
        opaque || names.contains(&"opq/.wh.old".to_string()),
        "{names:?}"
    );
    Ok(())
}

#[test]
fn bind_diff_round_trips_through_apply() -> anyhow::Result<()> {
    if !is_root() {
        return Ok(());
    }
    let env = env(Mode::Copy)?;
    let m = env.snaps.prepare("ns", "l1", "", BTreeMap::new())?;
    let base = layer(&[
        E::File("keep", "same"),
        E::File("edit", "before"),
        E::File("gone", "x"),
        E::Dir("d/", 0o755),
        E::File("d/inner", "i"),
    ])?;
    env.applier.apply("ns", &store(&env, &base, "")?, &m)?;
    env.snaps.commit("ns", "c1", "l1", BTreeMap::new())?;
    let child = env.snaps.prepare("ns", "l2", "c1", BTreeMap::new())?;
    let root = fs(&env, "l2")?;
    std::fs::write(root.join("edit"), "after, longer")?;
    std::fs::remove_file(root.join("gone"))?;
    std::fs::remove_dir_all(root.join("d"))?;
    std::os::unix::fs::symlink("keep", root.join("link"))?;
    std::fs::hard_link(root.join("edit"), root.join("edit2"))?;
    let parent = env.snaps.view("ns", "v", "c1", BTreeMap::new())?;
    let tar_type = MEDIA_TYPE_LAYER;
    let desc = env
        .applier
        .diff("ns", &parent, &child, tar_type, "ref", BTreeMap::new())?;
    let (names, _) = tar_names(&env, &desc)?;
    assert!(
        !names.contains(&"keep".to_string()),
        "unchanged files stay out: {names:?}"
    );
    for want in [".wh.gone", ".wh.d", "edit", "edit2", "link"] {
        assert!(
            names.contains(&want.to_string()),
            "{want} missing from {names:?}"
        );
    }
    // Applying the diff to another child of the same parent gives the same tree.
    let again = env.snaps.prepare("ns", "l3", "c1", BTreeMap::new())?;
    env.applier.apply("ns", &desc, &again)?;
    env.applier.sync_fs(&again)?;
    let copy = fs(&env, "l3")?;
    assert_eq!(std::fs::read_to_string(copy.join("edit"))?, "after, longer");
    assert!(!copy.join("gone").exists() && !copy.join("d").exists());
    assert_eq!(std::fs::read_link(copy.join("link"))?, Path::new("keep"));
    assert_eq!(std::fs::metadata(copy.join("edit2"))?.nlink(), 2);
    // A second identical diff is the same blob.
    let twice = env
        .applier
        .diff("ns", &parent, &child, tar_type, "", BTreeMap::new())?;
    assert_eq!(twice.digest, desc.digest);
    Ok(())
}

#[test]
fn overlay_dir_recreated_after_its_whiteout_hides_the_old_one() -> anyhow::Result<()> {
    if !is_root() {
        return Ok(());
    }
    let env = env(Mode::Overlay { index_off: false })?;
    let m = env.snaps.prepare("ns", "l1", "", BTreeMap::new())?;
    let base = layer(&[
        E::Dir("d/", 0o755),
        E::File("d/old", "o"),
        E::File("e/old", "o"),
    ])?;
    env.applier.apply("ns", &store(&env, &base, "")?, &m)?;
    env.snaps.commit("ns", "c1", "l1", BTreeMap::new())?;
    let m = env.snaps.prepare("ns", "l2", "c1", BTreeMap::new())?;
    // "d" comes back with a directory entry, "e" only implied by its new child.
    let top = layer(&[
        E::File(".wh.d", ""),
        E::Dir("d/", 0o755),
        E::File("d/new", "n"),
        E::File(".wh.e", ""),
        E::File("e/new", "n"),
    ])?;
    env.applier.apply("ns", &store(&env, &top, "")?, &m)?;
    let target = env.snaps.fs_path(0).with_file_name("mnt-redo");
    std::fs::create_dir_all(&target)?;
    use nix::mount::{mount, umount2, MntFlags, MsFlags};
    let data = m[0].options.join(",");
    mount(
        Some("overlay"),
        &target,
        Some("overlay"),
        MsFlags::empty(),
        Some(data.as_str()),
    )?;
    let list = |d: &str| -> std::io::Result<Vec<std::ffi::OsString>> {
        std::fs::read_dir(target.join(d))?
            .map(|e| e.map(|e| e.file_name()))
            .collect()
    };
    let seen = (list("d"), list("e"));
    umount2(&target, MntFlags::MNT_DETACH)?;
    assert_eq!(seen.0?, ["new"]);
    assert_eq!(seen.1?, ["new"]);
    Ok(())
}

#[test]
fn zstd_layers_apply_and_a_wrong_media_type_is_refused() -> anyhow::Result<()> {
    if !is_root() {
        return Ok(());
    }
    let env = env(Mode::Copy)?;
    let base = layer(&[E::Dir("etc/", 0o755), E::File("etc/motd", "zstd")])?;
    let m = env.snaps.prepare("ns", "l1", "", BTreeMap::new())?;
    // Detected by magic even when the media type does not say so (docker-archive layers).
    for media_type in [
        "application/vnd.oci.image.layer.v1.tar+zstd",
        "application/vnd.oci.image.layer.v1.tar",
    ] {
        let desc = store(&env, &zstd(&base), media_type)?;
        let applied = env.applier.apply("ns", &desc, &m)?;
        assert_eq!(
            applied.digest,
            sha(&base),
            "diff ID is the uncompressed digest"
        );
    }
    assert_eq!(
        std::fs::read_to_string(fs(&env, "l1")?.join("etc/motd"))?,
        "zstd"
    );
    let desc = store(
        &env,
        &gzip(&base)?,
        "application/vnd.oci.image.layer.v1.tar+zstd",
    )?;
    let err = env.applier.apply("ns", &desc, &m).unwrap_err().to_string();
    assert!(err.contains("not zstd-compressed"), "{err}");
    Ok(())
}
